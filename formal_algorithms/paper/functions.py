"""Element-wise and column-wise functions of the paper's §3 and §5: softmax (eq. 2), GELU, ReLU.

Dtype policy: softmax accumulates in at least float32 (float16/bfloat16 inputs are upcast, the
result is cast back), so that exponentials and sums neither overflow nor lose the small terms.
"""

import math

import jax
import jax.numpy as jnp

from .checks import fail
from .shapes import Arr, Float, Shaped


def compute_dtype(dtype):
    """The dtype a reduction runs in: the input's, but never narrower than float32."""
    return jnp.promote_types(dtype, jnp.float32)


def _check_scores(algorithm, A) -> None:
    """``A`` a float vector or matrix (a column, or columns, of scores)."""
    if not hasattr(A, "dtype") or not jnp.issubdtype(A.dtype, jnp.floating) or not 1 <= A.ndim <= 2:
        fail(
            algorithm,
            "A",
            "must be a float vector or matrix, got "
            f"{getattr(A, 'dtype', type(A).__name__)} of shape {jnp.shape(A)}",
            TypeError,
        )


def softmax(
    A: Float[Arr, "ell_z *ell_x"],  # noqa: F821 ("*ell_x": zero or one jaxtyping dimension)
    mask: Shaped[Arr, "ell_z *ell_x"] | None = None,  # noqa: F821
) -> Float[Arr, "ell_z *ell_x"]:  # noqa: F821
    """Column-wise softmax, paper eq. 2: ``softmax(A)[t_z, t_x] = exp A[t_z, t_x] / Σ_t exp A[t, t_x]``.

    ``A`` has shape ``(ℓ_z, ℓ_x)`` (a vector is one column). With a boolean ``mask`` of the same
    shape, entries where ``mask`` is False are treated as ``-∞`` (Algorithm 4, line 5): they get
    weight exactly 0 and exactly zero gradient. A column whose entries are all masked has no
    distribution to return (the paper's 0/0); this function returns a column of zeros there, with
    zero gradient. An entry of ``A`` that is ``-∞`` counts as masked, so an all-``-∞`` column is
    zeros too. No ``inf`` or ``nan`` is ever formed from finite or ``-∞`` input, in any dtype
    (a NaN in ``A`` stays NaN in its column). ``A`` must be a float vector or matrix and ``mask``
    exactly ``A``'s shape (no broadcasting): checked on shapes, so also under ``jit``.
    """
    _check_scores("softmax (eq. 2)", A)
    if mask is not None and jnp.shape(mask) != A.shape:
        fail("softmax (eq. 2)", "mask", f"has shape {jnp.shape(mask)}, expected A's {A.shape}")
    dtype = A.dtype
    A = A.astype(compute_dtype(dtype))
    allowed = ~jnp.isneginf(A)  # exp(-∞) = 0: a -∞ score is a masked one
    mask = allowed if mask is None else allowed & jnp.asarray(mask, bool)
    # The column maximum over allowed entries only; it cancels in the ratio, so no gradient.
    low = jnp.finfo(A.dtype).min
    m = jnp.max(jnp.where(mask, A, low), axis=0, keepdims=True)
    m = jax.lax.stop_gradient(jnp.where(jnp.any(mask, axis=0, keepdims=True), m, 0))
    # Double `where`: masked entries never reach exp, so neither their value nor their gradient
    # can be inf or nan (bug class 2).
    E = jnp.where(mask, jnp.exp(jnp.where(mask, A - m, 0)), 0)
    Z = jnp.sum(E, axis=0, keepdims=True)
    return (E / jnp.where(Z > 0, Z, 1)).astype(dtype)


def log_softmax(A: Float[Arr, "ell_z *ell_x"]) -> Float[Arr, "ell_z *ell_x"]:  # noqa: F821 (variadic jaxtyping dimension)
    """``log softmax(A)`` column-wise (eq. 2), computed stably; used by the training losses.
    ``A`` must be a float vector or matrix, as for :func:`softmax`."""
    _check_scores("log_softmax (eq. 2)", A)
    dtype = A.dtype
    A = A.astype(compute_dtype(dtype))
    return jax.nn.log_softmax(A, axis=0).astype(dtype)


def gelu(x: Float[Arr, "*shape"]) -> Float[Arr, "*shape"]:
    """Exact GELU (paper §3): ``GELU(x) = x · P[X < x]`` for ``X ~ N(0, 1)``, i.e. ``x Φ(x)``."""
    return x * 0.5 * (1 + jax.scipy.special.erf(x / math.sqrt(2)))


def gelu_tanh(x: Float[Arr, "*shape"]) -> Float[Arr, "*shape"]:
    """The tanh approximation of GELU used by GPT-2 (``gelu_new``); not the paper's GELU."""
    return 0.5 * x * (1 + jnp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def relu(x: Float[Arr, "*shape"]) -> Float[Arr, "*shape"]:
    """``ReLU(x) = max(0, x)``, element-wise (Algorithm 8)."""
    return jnp.maximum(x, 0)
