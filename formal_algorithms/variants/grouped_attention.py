"""Grouped-query and multi-query attention (Ainslie et al. 2023; Shazeer 2019) as Algorithm 5
with fewer key/value parameter sets.

What changes in the paper's text: eq. 4's ``W`` holds H query sets ``W_q^h, b_q^h`` but only G
key/value sets ``W_k^g, b_k^g, W_v^g, b_v^g`` (G divides H); Algorithm 5's line 2 runs head h with
the query set h and the key/value set ``g(h) = ⌊h / (H/G)⌋``, so each key/value set serves a group
of H/G consecutive heads. G = H is the paper's Algorithm 5; G = 1 is multi-query attention. Lines
3-4 (concatenation, ``W_o``) are unchanged.

The parameters are the paper's :class:`~formal_algorithms.MHAttentionParams` with G instead of H
on the leading axis of ``W_k, b_k, W_v, b_v``; any bias may be ``None`` (a bias-free projection:
the term ``b 1ᵀ`` is dropped). With ``rope_base`` set, each head is :func:`.rope.rope_attention`
(Algorithm 4 with rotary positions), otherwise the paper's Algorithm 4.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..paper.attention import AttentionParams, MHAttentionParams
from ..paper.checks import check_sizes, fail
from .checks import check_heads, check_mask, check_matrix
from .rope import affine, check_base, rope_attention

GQA = "grouped_attention (Algorithm 5 with G key/value sets)"


def key_value_groups(W: MHAttentionParams):
    """``(H, G)``: query heads and key/value sets of ``W``; G must divide H."""
    H, G = W.W_q.shape[0], W.W_k.shape[0]
    if W.W_v.shape[0] != G or G == 0 or H % G:
        fail(
            GQA,
            "W",
            f"has {H} query heads and {G} key / {W.W_v.shape[0]} value sets: the key "
            "and value sets must be equally many and divide the query heads",
        )
    return H, G


def head_group(H: int, G: int):
    """``g(h) = ⌊h / (H/G)⌋`` for h = 0 … H−1: the key/value set of each query head (H and G
    integers ≥ 1, G dividing H)."""
    check_sizes("head_group", H=H, G=G)
    if H % G:
        fail("head_group", "G", f"= {G} must divide H = {H}: each key/value set serves H/G heads")
    return jnp.arange(H) // (H // G)


def grouped_attention(X, Z, W: MHAttentionParams, Mask=None, *, rope_base=None, t_x=None, t_z=None):
    """Algorithm 5 with G ≤ H key/value sets: ``Ṽ`` of shape ``(d_out, ℓ_x)``.

    ``rope_base``: ``None`` for the paper's Algorithm 4 per head, or RoPE's base (e.g. 1e4) for
    rotary positions ``t_x``, ``t_z`` (default ``0 … ℓ − 1``).
    """
    check_matrix(GQA, "X", X)
    check_matrix(GQA, "Z", Z)
    check_heads(GQA, W, np.shape(X)[0], np.shape(Z)[0])
    check_mask(GQA, Mask, np.shape(Z)[1], np.shape(X)[1])
    H, G = key_value_groups(W)
    if rope_base is not None:
        check_base(GQA, "rope_base", rope_base)
    g = head_group(H, G)
    heads = AttentionParams(
        W.W_q,
        W.b_q,
        W.W_k[g],
        None if W.b_k is None else W.b_k[g],
        W.W_v[g],
        None if W.b_v is None else W.b_v[g],
    )  # head h's W_qkv^h: its own query set, its group's key/value set

    def one_head(X, Z, W_h, Mask):  # Algorithm 4 (with RoPE after lines 1-2 if rope_base)
        return rope_attention(X, Z, W_h, Mask, t_x=t_x, t_z=t_z, base=rope_base)

    Y = jax.vmap(one_head, in_axes=(None, None, 0, None))(X, Z, heads, Mask)  # lines 1-2
    Y = Y.reshape(-1, X.shape[1])  # line 3: Y = [Y^1; …; Y^H]
    V_tilde = affine(W.W_o, W.b_o, Y)  # line 4
    return V_tilde


def expand_groups(W: MHAttentionParams) -> MHAttentionParams:
    """The same attention with every key/value set repeated for each head of its group: G = H,
    i.e. the paper's eq. 4 ``W`` (what a grouped model is equal to, at G/H of the parameters)."""
    H, G = key_value_groups(W)
    g = head_group(H, G)
    return W._replace(
        W_k=W.W_k[g],
        b_k=None if W.b_k is None else W.b_k[g],
        W_v=W.W_v[g],
        b_v=None if W.b_v is None else W.b_v[g],
    )
