"""The README's main-job example runs as a user would run it, in a fresh interpreter."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_quickstart_runs_and_prints_shapes():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    assert "X: (12, 6)  MHAttention(X | W, causal): (12, 6)" in out
    assert "P: (16, 6)" in out
