"""scripts/soak.py: a short run against the production setup ends with a balanced ledger,
memory figures of both processes and no error, so the script cannot rot."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "soak.py"
LEDGER = re.compile(
    r"PASS  ledger: received (\d+) = applied (\d+) \+ pending (\d+) \+ ignored (\d+)"
)


@pytest.mark.integration
@pytest.mark.long
@pytest.mark.timeout(300)
def test_a_twenty_second_soak_exits_0_with_a_balanced_ledger(tmp_path: Path) -> None:
    """Twenty seconds of mixed load: exit status 0, the ledger line balanced (with deliveries
    the sync applied and the script's own ignored ones), RSS at the start and the end."""
    figures_path = tmp_path / "soak.json"
    command = [sys.executable, str(SCRIPT), "--seconds", "20", "--persons", "400"]
    command += ["--sample", "10", "--resync-every", "8", "--json", str(figures_path)]
    run = subprocess.run(command, capture_output=True, text=True, timeout=280)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output

    match = LEDGER.search(run.stdout)
    assert match is not None, output
    received, applied, pending, ignored = map(int, match.groups())
    assert received == applied + pending + ignored, output
    assert applied > 0 and ignored > 0, output
    figures = json.loads(figures_path.read_text())
    assert figures["balanced"] is True
    assert (figures["received"], figures["applied"]) == (received, applied)
    assert figures["errors"] == [] and figures["list_problems"] == {}
    assert figures["operations"].get("resync", 0) >= 1, figures["operations"]
    assert figures["resync_jobs"] >= 1, figures["operations"]
    labels = [s["label"] for s in figures["samples"]]
    assert labels[0] == "start" and labels[-1] == "end", labels
    assert all(s["web_mb"] > 0 and s["worker_mb"] > 0 for s in figures["samples"])
    assert "growth" in run.stdout
