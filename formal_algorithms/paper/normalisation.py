"""Paper §5, normalisation: Algorithm 6 (layer_norm) and RMSnorm (its m = β = 0 variant).

Departure from the paper: ``ê = (e − m) / √(v + ε) ⊙ γ + β`` with ``ε = 1e-5`` by default (the
PyTorch and GPT-2 value), inside the square root. The paper has no ε, and a constant vector then
divides 0 by 0; ``eps=0`` gives the paper's formula exactly. The variance is the biased one (÷ d_e)
as printed, computed as the mean of squared deviations (never E[e²] − m², which cancels badly for
vectors with a large mean). Low-precision inputs are normalised in float32 and cast back.
"""

import jax
import jax.numpy as jnp

from .checks import check_eps, check_sizes, fail
from .functions import compute_dtype
from .initialisation import float_dtype
from .shapes import Arr, Float

EPS = 1e-5


def _layer_norm_axis0(E, gamma, beta, eps):
    """Algorithm 6's lines 1-3 for every column of ``E``, ``(d_e,)`` or ``(d_e, ℓ)``, reducing over
    axis 0 (the paper's index i), in at least float32."""
    dtype = E.dtype
    E = E.astype(compute_dtype(dtype))
    m = jnp.mean(E, axis=0, keepdims=True)  # line 1: Σ_i e[i] / d_e
    v = jnp.mean((E - m) ** 2, axis=0, keepdims=True)  # line 2: Σ_i (e[i] − m)² / d_e
    gamma, beta = (p.reshape(p.shape + (1,) * (E.ndim - 1)) for p in (gamma, beta))
    # line 3, with one reciprocal square root per column and products (cheaper than divisions)
    return ((E - m) * jax.lax.rsqrt(v + eps) * gamma + beta).astype(dtype)


def layer_norm(
    e: Float[Arr, " d_e"], gamma: Float[Arr, " d_e"], beta: Float[Arr, " d_e"], eps: float = EPS
) -> Float[Arr, " d_e"]:
    """Algorithm 6, ``ê ← layer_norm(e | γ, β)`` for one vector ``e`` of shape ``(d_e,)``."""
    _check_norm("layer_norm (Algorithm 6)", "e", e, 1, gamma, beta, eps=eps)
    return _layer_norm_axis0(e, gamma, beta, eps)


def layer_norm_columns(
    X: Float[Arr, "d_e ell"], gamma: Float[Arr, " d_e"], beta: Float[Arr, " d_e"], eps: float = EPS
) -> Float[Arr, "d_e ell"]:
    """``for t ∈ [ℓ]: X[:, t] ← layer_norm(X[:, t] | γ, β)``: Algorithm 6 on every column of ``X``.

    Computed on the matrix at once (reductions over axis 0), not as ``vmap`` over columns: the
    same arithmetic per column, but ``vmap`` over axis 1 transposes X there and back, which costs
    ~10 % of a training step on CPU.
    """
    _check_norm("layer_norm (Algorithm 6)", "X", X, 2, gamma, beta, eps=eps)
    return _layer_norm_axis0(X, gamma, beta, eps)


def rms_norm(
    e: Float[Arr, " d_e"], gamma: Float[Arr, " d_e"], eps: float = EPS
) -> Float[Arr, " d_e"]:
    """RMSnorm (paper §5): layer_norm with ``m = β = 0``, i.e. ``ê = e / √(Σ_i e[i]² / d_e + ε) ⊙ γ``."""
    _check_norm("rms_norm", "e", e, 1, gamma, eps=eps)
    dtype = e.dtype
    e = e.astype(compute_dtype(dtype))
    return (e / jnp.sqrt(jnp.mean(e**2) + eps) * gamma).astype(dtype)


def rms_norm_columns(
    X: Float[Arr, "d_e ell"], gamma: Float[Arr, " d_e"], eps: float = EPS
) -> Float[Arr, "d_e ell"]:
    """RMSnorm on every column of ``X``."""
    _check_norm("rms_norm", "X", X, 2, gamma, eps=eps)
    return jax.vmap(rms_norm, in_axes=(1, None, None), out_axes=1)(X, gamma, eps)


NO_BETA = object()  # RMSnorm has no β (``None`` for layer norm's β is a mistake, refused)


def _check_norm(algorithm, name, x, ndim, gamma, beta=NO_BETA, *, eps):
    """``x`` a vector (d_e,) or a matrix (d_e, ℓ); γ and β vectors of x's d_e (no broadcasting);
    ε finite and >= 0. A mismatch blames the odd one out: x when γ and β agree with each other,
    else γ or β."""
    check_eps(algorithm, eps)
    if not hasattr(x, "dtype") or not jnp.issubdtype(x.dtype, jnp.floating):
        fail(
            algorithm,
            name,
            f"must be a float array, got {getattr(x, 'dtype', type(x).__name__)}",
            TypeError,
        )
    if jnp.ndim(x) != ndim:
        what = "a vector (d_e,)" if ndim == 1 else "a matrix (d_e, ℓ) with tokens as columns"
        fail(algorithm, name, f"must be {what}, got shape {jnp.shape(x)}")
    params = [("gamma", gamma)] + ([] if beta is NO_BETA else [("beta", beta)])
    for n, p in params:
        if not hasattr(p, "shape"):
            fail(algorithm, n, f"must be a vector (d_e,), got {type(p).__name__}", TypeError)
        if jnp.ndim(p) != 1:
            fail(algorithm, n, f"must be a vector (d_e,), got shape {jnp.shape(p)}")
    d_e = jnp.shape(x)[0]
    bad = [(n, p) for n, p in params if jnp.shape(p)[0] != d_e]
    if len(bad) == 2 and jnp.shape(gamma) == jnp.shape(beta):
        expected = f"({gamma.shape[0]},)" if ndim == 1 else f"({gamma.shape[0]}, *)"
        fail(
            algorithm,
            name,
            f"has shape {jnp.shape(x)}, expected {expected} to match gamma and beta",
        )
    if bad:
        n, p = bad[0]
        fail(algorithm, n, f"has shape {jnp.shape(p)}, expected ({d_e},): the d_e of {name}")


def init_layer_norm(d_e: int, dtype=None):
    """``γ = 1``, ``β = 0``: layer_norm starts as pure normalisation (JAX's default float dtype
    unless ``dtype`` is given)."""
    check_sizes("init_layer_norm", d_e=d_e)
    dtype = float_dtype(dtype, "init_layer_norm")
    return jnp.ones(d_e, dtype), jnp.zeros(d_e, dtype)
