"""Test configuration shared by the whole suite.

- float64 (``jax_enable_x64``) so that equation tests can compare to 1e-12; float32 paths are
  exercised by passing float32 arrays explicitly.
- Implicit rank promotion raises: every broadcast in the library is spelled out (``b[:, None]``
  for the paper's ``b 1ᵀ``).
- Nothing is downloaded: Hugging Face runs offline.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
