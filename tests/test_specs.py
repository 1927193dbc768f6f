"""The copies of the official specifications are the files their READMEs name."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

SPECS = Path(__file__).resolve().parent.parent / "specs"
COPIES = [
    ("pipedrive", "openapi.yaml"),
    ("pipedrive", "openapi-v2.yaml"),
    ("brevo", "swagger_definition_v3.yml"),
]


def listed_sha256(folder: str, name: str) -> str:
    for line in (SPECS / folder / "README.md").read_text().splitlines():
        if line.startswith(f"| `{name}`"):
            digest: str = re.findall(r"`([0-9a-f]{64})`", line)[-1]
            return digest
    raise AssertionError(f"{name} is not listed in {folder}/README.md")


@pytest.mark.parametrize(("folder", "name"), COPIES)
def test_each_copy_has_the_published_sha256(folder: str, name: str) -> None:
    digest = hashlib.sha256((SPECS / folder / name).read_bytes()).hexdigest()
    assert digest == listed_sha256(folder, name)
