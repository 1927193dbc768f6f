"""A fake of the Brevo API v3 (folders, lists, membership, contacts, imports, processes)
faithful to ``specs/brevo/swagger_definition_v3.yml``, with Brevo's rate limits, error
bodies and a control API; see ``sandbox/brevo/README.md``."""

from sandbox.brevo.app import create_app
from sandbox.brevo.config import BrevoFakeConfig
from sandbox.brevo.state import BrevoFake

__all__ = ["BrevoFake", "BrevoFakeConfig", "create_app"]
