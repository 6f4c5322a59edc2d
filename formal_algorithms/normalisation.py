"""Paper §5, normalisation: Algorithm 6 (layer_norm) and RMSnorm (its m = β = 0 variant).

Departure from the paper: ``ê = (e − m) / √(v + ε) ⊙ γ + β`` with ``ε = 1e-5`` by default (the
PyTorch and GPT-2 value), inside the square root. The paper has no ε, and a constant vector then
divides 0 by 0; ``eps=0`` gives the paper's formula exactly. The variance is the biased one (÷ d_e)
as printed, computed as the mean of squared deviations (never E[e²] − m², which cancels badly for
vectors with a large mean). Low-precision inputs are normalised in float32 and cast back.
"""

import jax
import jax.numpy as jnp

from ._checks import check_shape
from .functions import compute_dtype
from .shapes import Arr, Float

EPS = 1e-5


def layer_norm(
    e: Float[Arr, " d_e"], gamma: Float[Arr, " d_e"], beta: Float[Arr, " d_e"], eps: float = EPS
) -> Float[Arr, " d_e"]:
    """Algorithm 6, ``ê ← layer_norm(e | γ, β)`` for one vector ``e`` of shape ``(d_e,)``."""
    check_shape("layer_norm (Algorithm 6)", "e", e, gamma.shape)
    dtype = e.dtype
    e = e.astype(compute_dtype(dtype))
    m = jnp.mean(e)  # line 1: Σ_i e[i] / d_e
    v = jnp.mean((e - m) ** 2)  # line 2: Σ_i (e[i] − m)² / d_e
    return ((e - m) / jnp.sqrt(v + eps) * gamma + beta).astype(dtype)  # line 3


def layer_norm_columns(
    X: Float[Arr, "d_e ell"], gamma: Float[Arr, " d_e"], beta: Float[Arr, " d_e"], eps: float = EPS
) -> Float[Arr, "d_e ell"]:
    """``for t ∈ [ℓ]: X[:, t] ← layer_norm(X[:, t] | γ, β)``: Algorithm 6 on every column of ``X``."""
    return jax.vmap(layer_norm, in_axes=(1, None, None, None), out_axes=1)(X, gamma, beta, eps)


def rms_norm(
    e: Float[Arr, " d_e"], gamma: Float[Arr, " d_e"], eps: float = EPS
) -> Float[Arr, " d_e"]:
    """RMSnorm (paper §5): layer_norm with ``m = β = 0``, i.e. ``ê = e / √(Σ_i e[i]² / d_e + ε) ⊙ γ``."""
    check_shape("rms_norm", "e", e, gamma.shape)
    dtype = e.dtype
    e = e.astype(compute_dtype(dtype))
    return (e / jnp.sqrt(jnp.mean(e**2) + eps) * gamma).astype(dtype)


def rms_norm_columns(
    X: Float[Arr, "d_e ell"], gamma: Float[Arr, " d_e"], eps: float = EPS
) -> Float[Arr, "d_e ell"]:
    """RMSnorm on every column of ``X``."""
    return jax.vmap(rms_norm, in_axes=(1, None, None), out_axes=1)(X, gamma, eps)


def init_layer_norm(d_e: int, dtype=jnp.float32):
    """``γ = 1``, ``β = 0``: layer_norm starts as pure normalisation."""
    return jnp.ones(d_e, dtype), jnp.zeros(d_e, dtype)
