"""The README's main-job example runs as a user would run it, in a fresh interpreter."""

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_quickstart_runs_and_prints_shapes():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    assert "X: (12, 6)  MHAttention(X | W, causal): (12, 6)" in out
    assert "P: (16, 6)" in out


def test_readme_python_blocks_run():
    """Every ```python block of the README runs as printed."""
    text = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_the_core_imports_only_jax_and_numpy():
    code = (
        "import sys, formal_algorithms; "
        "print(sorted(m for m in ('torch', 'transformers', 'optax', 'safetensors', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
