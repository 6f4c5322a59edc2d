"""Rotary position embeddings (RoPE, Su et al. 2021) as a substitution in Algorithms 4 and 10.

What changes in the paper's text:

- Algorithm 10 (and 8, 9) line 3, ``e ← W_e[:, x[t]] + W_p[:, t]``: the ``W_p[:, t]`` term is
  dropped, ``e ← W_e[:, x[t]]``; positions enter through attention instead.
- Algorithm 4 lines 1-2: after ``Q ← W_q X + b_q 1ᵀ`` and ``K ← W_k Z + b_k 1ᵀ``, every column is
  rotated by its position: ``Q[:, t] ← R(t_x[t]) Q[:, t]``, ``K[:, t] ← R(t_z[t]) K[:, t]``. Line 3
  (V) and lines 4-6 are unchanged, so line 4's score ``k_{t_z}ᵀ q_{t_x}`` becomes
  ``kᵀ R(t_x − t_z) q``: it depends on the positions only through their difference.

``R(t)`` is block-diagonal with one 2×2 rotation by the angle ``t θ_i`` per pair of rows,
``θ_i = base^{−2i/d_attn}`` for ``i = 0 … d_attn/2 − 1``. Decision (the pairing): row i is paired
with row ``i + d_attn/2`` (the "half-split" layout of GPT-NeoX and Hugging Face's Llama), not with
row ``i + 1`` (the interleaved layout of the RoPE paper and llama.cpp); the two are the same
rotation after permuting the rows of ``W_q`` and ``W_k`` (:func:`interleaved_to_half_split`).
The angles are computed in the dtype of X (float64 in float64, exactly); Hugging Face computes
them in float32 whatever the model's dtype.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..paper.attention import AttentionParams
from ..paper.checks import check_count, fail
from ..paper.functions import compute_dtype, softmax
from .checks import (
    check_input_width,
    check_linear,
    check_mask,
    check_matrix,
    check_positions,
)

ROPE = "rope"
FREQUENCIES = "rope_frequencies"
ROPE_ATTENTION = "rope_attention (Algorithm 4 with RoPE after lines 1-2)"


def check_base(algorithm: str, argument: str, base) -> None:
    """RoPE's base: a finite real number > 0 (a traced base is not checked)."""
    if isinstance(base, jax.core.Tracer):
        return
    if isinstance(base, (bool, np.bool_, str, bytes)) or np.ndim(base) != 0:
        fail(algorithm, argument, f"must be a real number > 0 (e.g. 1e4), got {base!r}", TypeError)
    if not (np.isfinite(float(base)) and float(base) > 0):
        fail(algorithm, argument, f"= {base!r} must be a finite number > 0 (e.g. 1e4)")


def check_rotation(algorithm: str, argument: str, d_rot, d: int) -> int:
    """The rotated rows ``d_rot`` of ``d``: an even integer in ``[0, d]`` (RoPE rotates pairs)."""
    d_rot = check_count(algorithm, argument, d_rot, 0)
    if d_rot > d:
        fail(algorithm, argument, f"= {d_rot} exceeds the {d} rows there are to rotate")
    if d_rot % 2:
        fail(algorithm, argument, f"= {d_rot} must be even: RoPE rotates pairs of rows")
    return d_rot


def rope_frequencies(d: int, base: float = 10000.0, dtype=jnp.float32):
    """``θ_i = base^{−2i/d}`` for ``i = 0 … d/2 − 1``, shape ``(d/2,)``, computed in float64;
    ``d`` an even integer ≥ 2, ``base`` a finite number > 0."""
    check_count(FREQUENCIES, "d", d, 2)
    check_rotation(FREQUENCIES, "d", d, d)
    check_base(FREQUENCIES, "base", base)
    return jnp.asarray(base ** (-np.arange(0, d, 2, dtype=np.float64) / d), dtype)


def rope(X, positions, base: float = 10000.0, d_rot: int | None = None):
    """``X[:, t] ← R(positions[t]) X[:, t]`` for every column of ``X`` ``(d, n)`` (half-split pairs).

    ``positions`` ``(n,)``: the 0-based position of each column (need not start at 0: a cached
    decoding step rotates its one column by its true position). ``d_rot``: rotate only rows
    ``0 … d_rot − 1`` (partial rotary, :mod:`.partial_rope`; even, at most d); default all d,
    which must then be even.
    """
    check_matrix(ROPE, "X", X)
    X = jnp.asarray(X)  # a nested list is a matrix too
    d, n = X.shape
    positions = jnp.asarray(positions)
    if positions.shape != (n,):
        fail(ROPE, "positions", f"has shape {positions.shape}, expected ({n},): one per column")
    if d_rot is None and d % 2:
        fail(ROPE, "X", f"has {d} rows, an odd number: RoPE rotates pairs of rows")
    d_rot = check_rotation(ROPE, "d_rot", d if d_rot is None else d_rot, d)
    check_base(ROPE, "base", base)
    if d_rot == 0:
        return X
    theta = rope_frequencies(d_rot, base, X.dtype)
    angle = theta[:, None] * positions[None, :].astype(X.dtype)  # (d_rot/2, n): t θ_i
    cos, sin = jnp.cos(angle), jnp.sin(angle)
    x1, x2 = X[: d_rot // 2], X[d_rot // 2 : d_rot]  # row i pairs with row i + d_rot/2
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin, X[d_rot:]], axis=0)


def interleaved_to_half_split(W, n_heads: int):
    """Permute the rows of a stacked ``(n_heads · d_attn, d)`` query or key weight from the
    interleaved RoPE layout (pairs ``(2i, 2i+1)``, llama.cpp's GGUF) to the half-split one
    (pairs ``(i, i + d_attn/2)``, used here). Inverse of llama.cpp's conversion permutation."""
    W = np.asarray(W)
    rows = W.shape[0]
    if rows % (2 * n_heads):
        fail("interleaved_to_half_split", "W", f"has {rows} rows, not a multiple of 2 x {n_heads}")
    half = rows // n_heads // 2
    return W.reshape(n_heads, half, 2, *W.shape[1:]).swapaxes(1, 2).reshape(W.shape)


def affine(W, b, X):
    """``W X + b 1ᵀ``, or ``W X`` for a bias-free projection (``b is None``)."""
    Y = W @ X
    return Y if b is None else Y + b[:, None]


def rope_attention(
    X, Z, W: AttentionParams, Mask=None, *, t_x=None, t_z=None, base=10000.0, d_rot=None
):
    """Algorithm 4 with RoPE after lines 1-2 (and bias-free projections where ``b is None``).
    ``base=None`` skips the rotation: the paper's Algorithm 4 with optional biases; ``d_rot``
    rotates the first d_rot rows of Q and K only (:mod:`.partial_rope`).

    ``t_x`` ``(ℓ_x,)``, ``t_z`` ``(ℓ_z,)``: the positions of the columns of X and Z (default
    ``0 … ℓ − 1``). Shapes and ``Mask`` as :func:`formal_algorithms.attention`.
    """
    check_matrix(ROPE_ATTENTION, "X", X)
    check_matrix(ROPE_ATTENTION, "Z", Z)
    d_attn = check_linear(ROPE_ATTENTION, "W.W_q", W.W_q, W.b_q, np.shape(X)[0])
    check_input_width(ROPE_ATTENTION, "Z", np.shape(Z)[0], W)
    check_linear(ROPE_ATTENTION, "W.W_k", W.W_k, W.b_k, np.shape(Z)[0], d_attn)
    check_linear(ROPE_ATTENTION, "W.W_v", W.W_v, W.b_v, np.shape(Z)[0])
    check_positions(ROPE_ATTENTION, "t_x", t_x, np.shape(X)[1])
    check_positions(ROPE_ATTENTION, "t_z", t_z, np.shape(Z)[1])
    check_mask(ROPE_ATTENTION, Mask, np.shape(Z)[1], np.shape(X)[1])
    if base is not None:
        check_base(ROPE_ATTENTION, "base", base)
        if d_rot is None and d_attn % 2:
            fail(ROPE_ATTENTION, "W.W_q", f"has d_attn = {d_attn} rows: RoPE rotates pairs")
        check_rotation(ROPE_ATTENTION, "d_rot", d_attn if d_rot is None else d_rot, d_attn)
    X, Z = jnp.asarray(X), jnp.asarray(Z)  # a nested list is a matrix too
    t_x = jnp.arange(X.shape[1]) if t_x is None else t_x
    t_z = jnp.arange(Z.shape[1]) if t_z is None else t_z
    Q = affine(W.W_q, W.b_q, X)  # line 1
    K = affine(W.W_k, W.b_k, Z)  # line 2
    if base is not None:
        Q = rope(Q, t_x, base, d_rot)  # line 1, then Q[:, t] ← R(t_x[t]) Q[:, t]
        K = rope(K, t_z, base, d_rot)  # line 2, then K[:, t] ← R(t_z[t]) K[:, t]
    V = affine(W.W_v, W.b_v, Z)  # line 3
    c = compute_dtype(V.dtype)
    S = K.astype(c).T @ Q.astype(c)  # line 4
    S = S if Mask is None else jnp.where(jnp.asarray(Mask, bool), S, -jnp.inf)  # line 5
    A = softmax(S / math.sqrt(Q.shape[0]))  # line 6 (part: A): the weights
    V_tilde = (V.astype(c) @ A).astype(V.dtype)  # line 6
    return V_tilde
