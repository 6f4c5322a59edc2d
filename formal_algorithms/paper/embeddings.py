"""Paper §5, embeddings: Algorithm 1 (token), Algorithm 2 (positional), eq. 1, Algorithm 7 (unembedding).

Indices are 0-based: the paper's token v ∈ [N_V] is ``v - 1`` here, its position t ∈ [ℓ_max] is
``t - 1``. A sequence of ℓ embeddings is a matrix ``X`` of shape ``(d_e, ℓ)``, one token per column.
"""

import jax.numpy as jnp
import numpy as np

from .checks import as_tokens, check_index, check_sizes, check_tokens, fail
from .functions import softmax
from .initialisation import Normal, float_dtype, materialise
from .shapes import Arr, Float, Int


def token_embedding(v: int | Int[Arr, ""], W_e: Float[Arr, "d_e N_V"]) -> Float[Arr, " d_e"]:
    """Algorithm 1: ``e = W_e[:, v]``. ``W_e``: ``(d_e, N_V)``; ``v``: a 0-based token id."""
    _check_matrix("token_embedding (Algorithm 1)", "W_e", W_e)
    check_index("token_embedding (Algorithm 1)", "v", v, W_e.shape[1])
    return W_e[:, v]  # line 1


def positional_embedding(
    t: int | Int[Arr, ""], W_p: Float[Arr, "d_e ell_max"]
) -> Float[Arr, " d_e"]:
    """Algorithm 2: ``e_p = W_p[:, t]``. ``W_p``: ``(d_e, ℓ_max)``; ``t``: a 0-based position."""
    _check_matrix("positional_embedding (Algorithm 2)", "W_p", W_p)
    check_index("positional_embedding (Algorithm 2)", "t", t, W_p.shape[1])
    return W_p[:, t]  # line 1


def embed(
    x: Int[Arr, " ell"], W_e: Float[Arr, "d_e N_V"], W_p: Float[Arr, "d_e ell_max"]
) -> Float[Arr, "d_e ell"]:
    """Eq. 1 for a whole sequence: ``X[:, t] = W_e[:, x[t]] + W_p[:, t]`` for t < ℓ; ``X``: ``(d_e, ℓ)``.

    This is lines 1-3 of Algorithms 8, 9 and 10 (lines 10-12 of Algorithm 8 for x). Token ids
    outside ``[0, N_V)`` and sequences longer than ℓ_max raise ``ValueError`` on concrete input,
    because the gather below would silently clamp them.
    """
    x = as_tokens(x)
    _check_matrix("embed (eq. 1)", "W_e", W_e)
    _check_matrix("embed (eq. 1)", "W_p", W_p)
    if W_e.shape[0] != W_p.shape[0]:
        fail("embed (eq. 1)", "W_p", f"has d_e = {W_p.shape[0]} rows but W_e has {W_e.shape[0]}")
    check_tokens("embed (eq. 1)", "x", x, N_V=W_e.shape[1], ell_max=W_p.shape[1])
    ell = x.shape[0]
    return W_e[:, x] + W_p[:, :ell]  # line 1, for every t at once: the columns of X


def unembedding(e: Float[Arr, "d_e *ell"], W_u: Float[Arr, "N_V d_e"]) -> Float[Arr, "N_V *ell"]:  # noqa: F821 (variadic jaxtyping dimension)
    """Algorithm 7: ``p = softmax(W_u e)``; ``W_u``: ``(N_V, d_e)``.

    ``e`` may be one vector ``(d_e,)`` or a matrix ``(d_e, ℓ)`` (applied to each column, as line 21
    of Algorithm 8). The tied form of the paper's prose is ``unembedding(e, W_e.T)``: the same array,
    so gradients through both uses add up.
    """
    _check_matrix("unembedding (Algorithm 7)", "W_u", W_u)
    if jnp.ndim(e) not in (1, 2):
        fail(
            "unembedding (Algorithm 7)",
            "e",
            f"must be (d_e,) or (d_e, ℓ), got shape {jnp.shape(e)}",
        )
    if e.shape[0] != W_u.shape[1]:
        fail(
            "unembedding (Algorithm 7)",
            "e",
            f"has shape {e.shape}, expected d_e = {W_u.shape[1]} "
            f"rows to match W_u of shape {W_u.shape} (N_V, d_e)",
        )
    return softmax(W_u @ e)  # line 1


def paper_sinusoidal_W_p(d_e: int, ell_max: int, dtype=None):
    """The hard-coded ``W_p`` exactly as the paper prints it (§5), in 1-based indices:

    ``W_p[2i−1, t] = sin(t / ℓ_max^{2i/d_e})`` and ``W_p[2i, t] = cos(t / ℓ_max^{2i/d_e})``
    for ``0 < i ≤ d_e/2`` and ``t ∈ [ℓ_max]``. Note the base ℓ_max and that i and t start at 1;
    Vaswani et al.'s original is :func:`vaswani_sinusoidal_W_p`.
    """
    _check_even("paper_sinusoidal_W_p", d_e)
    check_sizes("paper_sinusoidal_W_p", ell_max=ell_max)
    dtype = float_dtype(dtype, "paper_sinusoidal_W_p")
    i = np.arange(1, d_e // 2 + 1, dtype=np.float64)[:, None]  # 1-based pair index
    t = np.arange(1, ell_max + 1, dtype=np.float64)[None, :]  # 1-based position
    return _interleave(t / float(ell_max) ** (2 * i / d_e), dtype)


def vaswani_sinusoidal_W_p(d_e: int, ell_max: int, base: float = 10000.0, dtype=None):
    """The original Transformer's sinusoid (Vaswani et al. 2017), 0-based pos and i:

    ``PE[pos, 2i] = sin(pos / 10000^{2i/d_e})``, ``PE[pos, 2i+1] = cos(pos / 10000^{2i/d_e})``,
    returned in the paper's orientation ``W_p[:, pos]``.
    """
    _check_even("vaswani_sinusoidal_W_p", d_e)
    check_sizes("vaswani_sinusoidal_W_p", ell_max=ell_max)
    real = isinstance(base, (int, float, np.integer, np.floating)) and not isinstance(base, bool)
    if not (real and np.isfinite(base) and base > 0):
        fail("vaswani_sinusoidal_W_p", "base", f"= {base!r} must be a finite number > 0 (e.g. 1e4)")
    dtype = float_dtype(dtype, "vaswani_sinusoidal_W_p")
    i = np.arange(d_e // 2, dtype=np.float64)[:, None]
    pos = np.arange(ell_max, dtype=np.float64)[None, :]
    return _interleave(pos / base ** (2 * i / d_e), dtype)


def _interleave(angles, dtype):
    """Rows 0, 2, 4, … get sin, rows 1, 3, 5, … get cos, one row pair per frequency."""
    W_p = np.empty((2 * angles.shape[0], angles.shape[1]))
    W_p[0::2], W_p[1::2] = np.sin(angles), np.cos(angles)
    return jnp.asarray(W_p, float_dtype(dtype))


def _check_matrix(algorithm, name, W):
    """A matrix of real numbers: an integer or boolean one would embed ids as ids."""
    if jnp.ndim(W) != 2:
        fail(algorithm, name, f"must be a matrix, got shape {jnp.shape(W)}")
    if not jnp.issubdtype(jnp.result_type(W), jnp.floating):
        fail(
            algorithm,
            name,
            f"must hold floating-point numbers, got dtype {jnp.result_type(W)}",
            TypeError,
        )


def _check_even(name, d_e):
    check_sizes(name, d_e=d_e)
    if d_e % 2:
        fail(name, "d_e", f"= {d_e} must be even: the sinusoids come in sin/cos row pairs")


def embeddings_spec(N_V: int, d_e: int, ell_max: int):
    """Learned ``W_e`` ``(d_e, N_V)`` and ``W_p`` ``(d_e, ℓ_max)``, entries from N(0, 0.02²).

    The paper gives no initialisation; 0.02 is GPT-2's choice and keeps the tied unembedding's
    initial logits small.
    """
    return Normal((d_e, N_V), 0.02), Normal((d_e, ell_max), 0.02)


def init_embeddings(key, N_V: int, d_e: int, ell_max: int, dtype=None):
    """``(W_e, W_p)`` drawn as :func:`embeddings_spec` describes."""
    check_sizes("init_embeddings", N_V=N_V, d_e=d_e, ell_max=ell_max)
    return materialise(key, embeddings_spec(N_V, d_e, ell_max), dtype, "init_embeddings")
