"""Contract validation for the fakes and the clients.

- ``specs``: the vendored OpenAPI documents, loaded once per process, with the ERRATA overlay.
- ``compiled``: each spec compiled once per process (routes, openapi-core validators).
- ``validator``: ``ContractValidator`` checks a recorded ``Exchange`` against them.
- ``keys``: ``undeclared_keys``, the "send and return only declared fields" policy.
- ``messages``: readable lines for openapi-core and jsonschema errors.
- ``ledger``: ``ContractLedger``, a recording sink that validates and counts coverage.
- ``shapes``: ``compare_shapes`` of a webhook payload with a real example.
"""

from sandbox.contract.compiled import OperationRef
from sandbox.contract.keys import undeclared_keys
from sandbox.contract.ledger import ClientOperation, ContractLedger, Coverage
from sandbox.contract.shapes import compare_shapes, example_names, json_kind, load_example
from sandbox.contract.specs import (
    CORRECTIONS,
    OVERLAY,
    SPEC_NAMES,
    Correction,
    Edit,
    OverlayError,
    SpecName,
    apply_overlay,
    load_raw_spec,
    load_spec,
)
from sandbox.contract.validator import ContractValidator, Violation

__all__ = [
    "CORRECTIONS",
    "OVERLAY",
    "SPEC_NAMES",
    "ClientOperation",
    "ContractLedger",
    "ContractValidator",
    "Correction",
    "Coverage",
    "Edit",
    "OperationRef",
    "OverlayError",
    "SpecName",
    "Violation",
    "apply_overlay",
    "compare_shapes",
    "example_names",
    "json_kind",
    "load_example",
    "load_raw_spec",
    "load_spec",
    "undeclared_keys",
]
