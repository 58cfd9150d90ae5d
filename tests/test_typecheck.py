"""mypy over the checked set ([tool.mypy] in pyproject.toml: model/, data/, the run directory, the runtime, the schemas)
reports nothing. Slow from a cold cache (mypy reads torch's stubs); deselect with -m "not typecheck"."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import ROOT


@pytest.mark.slow
@pytest.mark.typecheck
def test_mypy_is_clean_on_the_checked_set():
    pytest.importorskip("mypy", reason="mypy comes with the dev extra: pip install -e '.[dev]'")
    r = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert r.stdout.startswith("Success: no issues found")
