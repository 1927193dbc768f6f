"""The fake Pipedrive API: filters, persons, deals and webhooks as the official specs
describe them, seeded demo data, its own filter evaluation, real-format webhook
deliveries, token budgets and burst limits, and a control API under ``/_sandbox``.
See README.md in this directory."""

from sandbox.pipedrive.app import create_app
from sandbox.pipedrive.conditions import Members, filter_members
from sandbox.pipedrive.config import PipedriveFakeConfig
from sandbox.pipedrive.state import PipedriveState

__all__ = ["Members", "PipedriveFakeConfig", "PipedriveState", "create_app", "filter_members"]
