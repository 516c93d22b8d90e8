"""`ruff check .` over the whole repository reports nothing (issue #16: ruff clean).

The rules are ruff's defaults with pyproject's ``[tool.ruff]`` settings; ruff comes with the
test extra, pinned to the minor version the code is clean for (its default rule set changes
between minor versions)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_reports_nothing():
    pytest.importorskip("ruff")
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache",
                           "--output-format", "concise", "."],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
