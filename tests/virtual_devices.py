"""Run a script in a fresh Python with N virtual CPU devices (the device count is fixed when JAX
starts its backend, and the rest of the suite runs on one device)."""

import json
import os
import subprocess
import sys

from formal_algorithms.practice import distributed


def run_alone(script: str, *args: str, devices: int = 4, timeout: int = 300) -> dict:
    """``python -c script *args`` as one process (none of the ``FA_*`` variables, so no
    ``jax.distributed``) with ``devices`` CPU devices; the JSON of its last output line."""
    env = distributed.child_environment(dict(os.environ), "", 1, 0, devices)
    for name in distributed.VARIABLES:
        del env[name]
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
