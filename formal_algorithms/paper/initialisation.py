"""Parameter initialisation (the paper gives none; paper §8 lists it among the practical tricks).

An init function first describes θ as a tree of leaf specs (shape and distribution), then draws
every random leaf from one ``jax.random.normal`` call on the caller's key. One draw keeps the
compiled init small (one threefry kernel instead of one per leaf), and the spec tree doubles as
the expected shapes that :func:`formal_algorithms.paper.validation.check_params` compares against.

The choices, documented in algorithms.md: embeddings ``W_e``, ``W_p`` ~ N(0, 0.02²) (GPT-2);
weight matrices ~ N(0, 1/fan_in) (variance-preserving); biases 0; layer-norm γ = 1, β = 0.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .checks import check_key


class Normal(NamedTuple):
    """A leaf drawn from N(0, std²)."""

    shape: tuple
    std: float


class Constant(NamedTuple):
    """A leaf filled with ``value`` (0 for biases and β, 1 for γ)."""

    shape: tuple
    value: float


def weight(d_out: int, d_in: int, *, lead: tuple = ()) -> Normal:
    """A weight matrix ``(…, d_out, d_in)`` ~ N(0, 1/d_in)."""
    return Normal((*lead, d_out, d_in), 1 / math.sqrt(d_in))


def zeros(*shape: int) -> Constant:
    return Constant(shape, 0.0)


def ones(*shape: int) -> Constant:
    return Constant(shape, 1.0)


def is_spec(leaf) -> bool:
    return isinstance(leaf, (Normal, Constant))


def float_dtype(dtype=None, name: str | None = None):
    """``dtype``, or JAX's default float dtype when it is ``None``: float64 with
    ``jax_enable_x64`` on, float32 otherwise (what ``jnp.asarray(1.0)`` gives). Given ``name``
    (the function that asks), a dtype that is not a float is refused by that name."""
    dtype = jnp.dtype(jnp.result_type(float) if dtype is None else dtype)
    if name is not None and not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name}: argument 'dtype' must be a float dtype, got {dtype}")
    return dtype


def materialise(key, spec, dtype=None, name: str = "materialise"):
    """Turn a tree of leaf specs into arrays; all normal leaves come from one draw on ``key``.
    ``dtype=None``: JAX's default float dtype (:func:`float_dtype`); ``name``: the init that asks,
    named by its errors."""
    dtype = float_dtype(dtype, name)
    check_key(name, key)
    specs, tree = jax.tree_util.tree_flatten(spec, is_leaf=is_spec)
    sizes = [int(np.prod(s.shape)) if isinstance(s, Normal) else 0 for s in specs]
    flat = jax.random.normal(key, (sum(sizes),), dtype)
    leaves, offset = [], 0
    for s, size in zip(specs, sizes, strict=True):
        if isinstance(s, Normal):
            leaves.append(s.std * flat[offset : offset + size].reshape(s.shape))
        else:
            leaves.append(jnp.full(s.shape, s.value, dtype))
        offset += size
    return jax.tree_util.tree_unflatten(tree, leaves)
