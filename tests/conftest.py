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
  subprocesses inherit it; benchmarks do not use this file.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
_FAST_COMPILE = " --xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + _FAST_COMPILE
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

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
