"""Test configuration shared by the whole suite.

- float64 (``jax_enable_x64``) so that equation tests can compare to 1e-12; float32 paths are
  exercised by passing float32 arrays explicitly.
- Implicit rank promotion raises: every broadcast in the library is spelled out (``b[:, None]``
  for the paper's ``b 1ᵀ``).
- Nothing is downloaded: Hugging Face runs offline.
- XLA compiles without backend optimisation and with its older (non-MLIR) CPU fusion emitter:
  the test programs are tiny, so compiling them dominates the suite's time (~5,800 compilations),
  and optimising them buys nothing. Measured per compilation: eager op 60 -> 31 ms, small jitted
  function 120 -> 65 ms; the suite 6 min 46 s -> 4 min 8 s. Set before JAX starts its backend;
  subprocesses (and pytest-xdist's workers) inherit it; benchmarks do not use this file. XLA
  aborts the process on a flag it does not know, and the emitter flag is recent, so it is used
  only if a probe process with this jaxlib accepts it (once per run: the probe's answer is
  passed to the workers in the environment).
"""

import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The command line's persistent compilation cache stays out of the user's cache directory
# (tests/tools/test_cli_startup.py turns it on in a temporary one).
os.environ.setdefault("FA_NO_COMPILE_CACHE", "1")


def _xla_accepts(flag: str) -> bool:
    """Whether this jaxlib starts with ``flag`` in XLA_FLAGS (an unknown flag is fatal)."""
    probe = "import jax, jax.numpy as jnp; jnp.zeros(1).block_until_ready()"
    env = dict(os.environ, XLA_FLAGS=flag, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True).returncode == 0  # fmt: skip


_EMITTER_FLAG = "--xla_cpu_use_fusion_emitters=false"
if "FA_TESTS_EMITTER_FLAG" not in os.environ:  # the first process of the run probes
    os.environ["FA_TESTS_EMITTER_FLAG"] = _EMITTER_FLAG if _xla_accepts(_EMITTER_FLAG) else ""
_flags = os.environ.get("XLA_FLAGS", "").split()
for _flag in ("--xla_backend_optimization_level=0", os.environ["FA_TESTS_EMITTER_FLAG"]):
    if _flag and _flag not in _flags:  # idempotent: workers inherit the controller's flags
        _flags.append(_flag)
os.environ["XLA_FLAGS"] = " ".join(_flags)

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")

# Hypothesis profiles: "ci" (default) keeps the suite fast; "thorough" runs many more examples:
#   FA_HYPOTHESIS_PROFILE=thorough python -m pytest tests/test_properties.py
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci", max_examples=6, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)  # fmt: skip
settings.register_profile(
    "thorough", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("FA_HYPOTHESIS_PROFILE", "ci"))
