"""ALiBi, attention with linear biases (Press et al. 2022), as a substitution in Algorithms 4
and 10.

What changes in the paper's text:

- Algorithm 10 line 3, ``e ← W_e[:, x[t]] + W_p[:, t]``: the ``W_p[:, t]`` term is dropped.
- Algorithm 4 line 4, ``S ← KᵀQ``: head h adds a fixed, position-dependent bias to the scaled
  scores, ``S[t_z, t_x] ← S[t_z, t_x] / √d_attn − m_h · (t_x − t_z)`` (so a key is penalised in
  proportion to its distance behind the query); line 5 masks and line 6 normalises as before. The
  scaling ``1/√d_attn`` moves into line 4 so that the bias is not scaled with the scores.

The slopes are the geometric sequence ``m_h = 2^{−8(h+1)/H}``, h = 0 … H−1 (Press et al.'s
choice for H a power of two; for other H they interleave two such sequences, which is not
implemented: H must be a power of two here). ALiBi is meant for causal attention (Mask ⊆ the
unidirectional mask); with a bidirectional mask the bias grows with |t_x − t_z| on one side only.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from ..paper.attention import AttentionParams, MHAttentionParams
from ..paper.checks import check_count, concrete, fail
from ..paper.functions import compute_dtype, softmax
from .checks import (
    check_heads,
    check_input_width,
    check_linear,
    check_mask,
    check_matrix,
    check_positions,
)

ALIBI = "alibi_mh_attention (Algorithm 5 with ALiBi at Algorithm 4 line 4)"
ALIBI_HEAD = "alibi_attention (Algorithm 4 with ALiBi at line 4)"


def check_power_of_two(algorithm: str, argument: str, H) -> None:
    """The number of heads for Press et al.'s geometric slopes: an integer power of two."""
    H = check_count(algorithm, argument, H, 1)
    if H & (H - 1):
        fail(algorithm, argument, f"= {H} must be a power of two (Press et al.'s geometric slopes)")


def alibi_slopes(H: int, dtype=jnp.float32):
    """``m_h = 2^{−8(h+1)/H}`` for h = 0 … H−1; H must be a power of two."""
    check_power_of_two("alibi_slopes", "H", H)
    return jnp.asarray([2.0 ** (-8.0 * (h + 1) / H) for h in range(H)], dtype)


def alibi_attention(X, Z, W: AttentionParams, m, Mask=None, *, t_x=None, t_z=None):
    """Algorithm 4 with ALiBi's bias ``−m (t_x − t_z)`` added to line 4's scaled scores.
    ``m``: the head's slope, a finite number (checked when concrete)."""
    check_matrix(ALIBI_HEAD, "X", X)
    check_matrix(ALIBI_HEAD, "Z", Z)
    check_input_width(ALIBI_HEAD, "Z", np.shape(Z)[0], W)
    d_attn = check_linear(ALIBI_HEAD, "W.W_q", W.W_q, W.b_q, np.shape(X)[0])
    check_linear(ALIBI_HEAD, "W.W_k", W.W_k, W.b_k, np.shape(Z)[0], d_attn)
    check_linear(ALIBI_HEAD, "W.W_v", W.W_v, W.b_v, np.shape(Z)[0])
    slope = concrete(m)
    if slope is not None and (slope.shape != () or not np.isfinite(slope.astype(float))):
        fail(ALIBI_HEAD, "m", f"(the head's slope) must be one finite number, got {m!r}")
    t_x = jnp.arange(X.shape[1]) if t_x is None else t_x
    t_z = jnp.arange(Z.shape[1]) if t_z is None else t_z
    Q = W.W_q @ X + W.b_q[:, None]  # line 1
    K = W.W_k @ Z + W.b_k[:, None]  # line 2
    V = W.W_v @ Z + W.b_v[:, None]  # line 3
    c = compute_dtype(V.dtype)
    distance = (t_x[None, :] - t_z[:, None]).astype(c)  # [t_z, t_x]: t_x − t_z
    S = K.astype(c).T @ Q.astype(c) / math.sqrt(Q.shape[0]) - m * distance  # line 4, biased
    Mask = None if Mask is None else jnp.asarray(Mask).astype(bool)
    A = softmax(S, Mask)  # line 5 (masking) inside the softmax of line 6
    V_tilde = (V.astype(c) @ A).astype(V.dtype)  # line 6
    return V_tilde


def alibi_mh_attention(X, Z, W: MHAttentionParams, Mask=None, *, t_x=None, t_z=None):
    """Algorithm 5 whose heads are :func:`alibi_attention` with slopes :func:`alibi_slopes`."""
    check_matrix(ALIBI, "X", X)
    check_matrix(ALIBI, "Z", Z)
    H, G = check_heads(ALIBI, W, np.shape(X)[0], np.shape(Z)[0])
    if G != H:
        fail(
            ALIBI,
            "W.W_k",
            f"holds {G} key sets for {H} heads; ALiBi here is Algorithm 5's, "
            "one key/value set per head",
        )
    check_mask(ALIBI, Mask, np.shape(Z)[1], np.shape(X)[1])
    check_positions(ALIBI, "t_x", t_x, np.shape(X)[1])
    check_positions(ALIBI, "t_z", t_z, np.shape(Z)[1])
    check_power_of_two(ALIBI, "W.W_q", H)  # its leading axis: the number of heads H
    m = alibi_slopes(H, compute_dtype(X.dtype))
    heads = AttentionParams(*W[:6])

    def one_head(W_h, m_h):
        return alibi_attention(X, Z, W_h, m_h, Mask, t_x=t_x, t_z=t_z)

    Y = jax.vmap(one_head)(heads, m)  # lines 1-2
    Y = Y.reshape(-1, X.shape[1])  # line 3
    V_tilde = W.W_o @ Y + W.b_o[:, None]  # line 4
    return V_tilde
