"""Partial rotary position embeddings (GPT-NeoX / Pythia, Phi): RoPE on the first ``d_rot`` rows
of each query and key only.

What changes in the paper's text, against :mod:`.rope` (full RoPE): after Algorithm 4's lines 1-2,
only rows ``0 … d_rot − 1`` of ``Q[:, t]`` and ``K[:, t]`` are rotated, by ``R_{d_rot}(t)`` (the
half-split pairs ``(i, i + d_rot/2)``, ``θ_i = base^{−2i/d_rot}``); rows ``d_rot … d_attn − 1``
pass unrotated. ``d_rot = d_attn`` is :func:`.rope.rope`. Lines 3-6 are the paper's, and Algorithm
5 runs it per head (H query, key and value sets, with the paper's biases).

Each head is :func:`.rope.rope_attention` with ``d_rot``: the rotation of :func:`.rope.rope` on
the first ``d_rot`` rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..paper.attention import AttentionParams, MHAttentionParams
from ..paper.checks import fail
from .checks import check_heads, check_mask, check_matrix
from .rope import affine, check_base, check_rotation, rope, rope_attention

PARTIAL_ROPE = "partial_rope"
MH_PARTIAL = "partial_rope_attention (Algorithm 5, RoPE on d_rot rows after Alg 4 lines 1-2)"


def partial_rope(X, positions, base: float = 10000.0, d_rot: int | None = None):
    """``X[:d_rot, t] ← R_{d_rot}(positions[t]) X[:d_rot, t]``; rows from ``d_rot`` unchanged."""
    check_matrix(PARTIAL_ROPE, "X", X)
    d = np.shape(X)[0]
    d_rot = check_rotation(PARTIAL_ROPE, "d_rot", d if d_rot is None else d_rot, d)
    check_base(PARTIAL_ROPE, "base", base)
    return rope(X, positions, base, d_rot)


def partial_rope_attention(
    X, Z, W: MHAttentionParams, Mask=None, *, t_x=None, t_z=None, base=10000.0, d_rot=None
):
    """Algorithm 5 whose heads rotate the first ``d_rot`` rows of Q and K: ``(d_out, ℓ_x)``."""
    check_matrix(MH_PARTIAL, "X", X)
    check_matrix(MH_PARTIAL, "Z", Z)
    H, G = check_heads(MH_PARTIAL, W, np.shape(X)[0], np.shape(Z)[0])
    if G != H:
        fail(MH_PARTIAL, "W", f"has {G} key/value sets for {H} heads; this form has one per head")
    check_mask(MH_PARTIAL, Mask, np.shape(Z)[1], np.shape(X)[1])
    d_attn = np.shape(W.W_q)[1]
    d_rot = check_rotation(MH_PARTIAL, "d_rot", d_attn if d_rot is None else d_rot, d_attn)
    check_base(MH_PARTIAL, "base", base)
    t_x = jnp.arange(X.shape[1]) if t_x is None else jnp.asarray(t_x)
    t_z = jnp.arange(Z.shape[1]) if t_z is None else jnp.asarray(t_z)

    def one_head(W_h):
        return rope_attention(X, Z, W_h, Mask, t_x=t_x, t_z=t_z, base=base, d_rot=d_rot)

    heads = AttentionParams(W.W_q, W.b_q, W.W_k, W.b_k, W.W_v, W.b_v)
    Y = jax.vmap(one_head)(heads)  # Algorithm 5 lines 1-2: Y^h for every head h
    Y = Y.reshape(-1, X.shape[1])  # line 3: Y = [Y^1; …; Y^H]
    return affine(W.W_o, W.b_o, Y)  # line 4
