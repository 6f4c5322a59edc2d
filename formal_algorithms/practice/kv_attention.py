"""Algorithm 4 over stored keys and values, written once: the cached layer derived from an
uncached one.

Every attention layer here (the paper's Algorithm 5, Llama's grouped attention with RoPE, a fused
decoding step, a training batch as columns) is the same three steps:

1. lines 1-3 of Algorithm 4 for every head: ``Q ← W_q X + b_q 1ᵀ``, ``K ← W_k Z + b_k 1ᵀ``,
   ``V ← W_v Z + b_v 1ᵀ``, with the family's substitutions (RoPE after lines 1-2, G ≤ H
   key/value sets, no biases, one fused product): the layer's *projection*;
2. lines 4-6: ``S ← KᵀQ``, masked, ``Ṽ ← V softmax(S/√d_attn)``: :func:`attend`, here only;
3. Algorithm 5 lines 3-4: ``W_o [Ṽ^1; …; Ṽ^H] + b_o 1ᵀ``: :func:`output`.

Caching changes only where step 2's K and V come from: the new columns' keys and values are
written into a per-layer store of rows at their true positions (:func:`write`) and step 2 reads
the whole store with a mask built from positions (:func:`position_mask`: ``[[t_z ≤ t_x]]``, never
a top-left triangle, bug class 3; a sliding window bounds it from below). :func:`cached_attention`
is that composition for any projection, so the cached form of a layer is its uncached projection
plus this module, as penzai builds ``KVCachingAttention.from_uncached``.

Layout: a layer's store is :class:`KV` with ``K`` ``(G, T, d_attn)`` and ``V`` ``(G, T, d_mid)``:
row t of set g is ``k_t``, ``v_t`` (the cache holds Kᵀ and Vᵀ of Algorithm 4, one contiguous row
per write). Head h reads set ``h // (H/G)`` (:mod:`..variants.grouped_attention`); G = H is the
paper's eq. 4. Lines 4-6 run in at least float32, as Algorithm 4 does.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..paper.attention import MHAttentionParams
from ..paper.functions import compute_dtype, softmax


class KV(NamedTuple):
    """One layer's stored keys and values: row t of set g is ``k_t`` (``v_t``) of position t."""

    K: jax.Array  # (G, T, d_attn)
    V: jax.Array  # (G, T, d_mid)


def project(W: MHAttentionParams, X, Z=None):
    """Algorithm 4 lines 1-3 for every head (the paper's projection; a ``None`` bias is dropped):
    ``Q`` (H, d_attn, n) from X, ``K`` (G, d_attn, m) and ``V`` (G, d_mid, m) from Z (default X).
    """
    Z = X if Z is None else Z
    Q = heads_affine(W.W_q, W.b_q, X)  # line 1 [h, :, :]
    # K and V (lines 2-3) of Z's columns; in a cached layer, line 2-3's K and V are the store
    return Q, heads_affine(W.W_k, W.b_k, Z), heads_affine(W.W_v, W.b_v, Z)


def heads_affine(W, b, X):
    """``W^h X + b^h 1ᵀ`` for every leading index h of ``W`` (n, d_in): shape (n, d_out, ℓ)."""
    Y = jnp.einsum("hod,dl->hol", W, X)
    return Y if b is None else Y + b[:, :, None]


def write(kv: KV, K, V, start) -> KV:
    """The columns ``K`` (G, d_attn, n), ``V`` (G, d_mid, n) of positions start … start+n−1
    written as rows start … start+n−1 of the store."""
    Kt = K.transpose(0, 2, 1).astype(kv.K.dtype)
    Vt = V.transpose(0, 2, 1).astype(kv.V.dtype)
    return KV(
        jax.lax.dynamic_update_slice_in_dim(kv.K, Kt, start, axis=1),
        jax.lax.dynamic_update_slice_in_dim(kv.V, Vt, start, axis=1),
    )


def position_mask(T: int, positions, window: int | None = None):
    """``Mask[t_z, j] = [[t_z ≤ positions[j]]]`` over the T stored rows, shape (T, n); with a
    ``window`` w also ``[[positions[j] − t_z < w]]`` (a query sees its w most recent positions)."""
    t_z = jnp.arange(T)[:, None]
    Mask = t_z <= positions[None, :]
    return Mask if window is None else Mask & (positions[None, :] - t_z < window)


def attend(Q, K, V, Mask):
    """Algorithm 4 lines 4-6 for every head h over stored rows: ``Ṽ^h = V^h softmax(S^h/√d_attn)``.

    ``Q`` (H, d_attn, n); ``K`` (G, T, d_attn) and ``V`` (G, T, d_mid) as rows (Kᵀ, Vᵀ), head h
    reading set ``h // (H/G)``; ``Mask`` (T, n) boolean or ``None`` (``Mask ≡ 1``). Returns
    ``Ṽ`` (H, d_mid, n). A column with no allowed row is zero (see :func:`~.functions.softmax`).
    """
    H, d_attn, n = Q.shape
    G, T, d_mid = V.shape
    c = compute_dtype(V.dtype)
    Q_g = Q.astype(c).reshape(G, H // G, d_attn, n)  # head h = g · H/G + r
    S = jnp.einsum("gta,gran->grtn", K.astype(c), Q_g).reshape(H, T, n)  # line 4 [h, :, :]
    if Mask is not None:
        S = jnp.where(Mask, S, -jnp.inf)  # line 5 [h, :, :]
    A = jax.vmap(softmax)(S / math.sqrt(d_attn))  # line 6 (part: A) [h, :, :]
    A_g = A.reshape(G, H // G, T, n)
    V_tilde = jnp.einsum("gtm,grtn->grmn", V.astype(c), A_g).reshape(
        H, d_mid, n
    )  # line 6 [h, :, :]
    return V_tilde.astype(V.dtype)


def output(W_o, b_o, V_tilde):
    """Algorithm 5 lines 3-4: ``W_o [Ṽ^1; …; Ṽ^H] + b_o 1ᵀ`` (``b_o = None``: bias-free)."""
    H, d_mid, n = V_tilde.shape
    Y = V_tilde.reshape(H * d_mid, n)  # line 3: Y = [Y^1; …; Y^H]
    V_out = W_o @ Y if b_o is None else W_o @ Y + b_o[:, None]  # line 4
    return V_out


#: A layer's projection for :func:`cached_attention`: ``(X (d, n), positions (n,)) -> (Q, K, V)``
#: as :func:`project` returns them, the layer's substitutions (RoPE, fused products) included.
Projection = Callable[[jax.Array, jax.Array], tuple]


def cached_attention(qkv: Projection, W_o, b_o, X, positions, kv: KV, *, window=None):
    """Self-attention of the columns ``X`` (d, n) at ``positions`` (consecutive, from
    ``positions[0]``) over the store: their keys and values are written first, then each query
    attends to the stored rows at positions ≤ its own. Returns ``(W_o Y + b_o 1ᵀ, new store)``."""
    Q, K, V = qkv(X, positions)  # Algorithm 4's lines 1-3 as the layer computes them
    kv = write(kv, K, V, positions[0])
    Mask = position_mask(kv.K.shape[1], positions, window)
    return output(W_o, b_o, attend(Q, kv.K, kv.V, Mask)), kv


def paper_projection(W: MHAttentionParams) -> Projection:
    """The paper's Algorithm 4 lines 1-3 (positions unused: positions enter through ``W_p``)."""
    return lambda X, positions: project(W, X)


def stored_attention(W: MHAttentionParams, X, kv: KV, Mask):
    """Algorithm 5 of the columns ``X`` over keys and values stored once (Algorithm 8's line 16
    over Z's): line 1 of Algorithm 4 for the queries, lines 4-6 over the store, the output."""
    return output(W.W_o, W.b_o, attend(heads_affine(W.W_q, W.b_q, X), kv.K, kv.V, Mask))


def cached_decoder_attention(positions, kv: KV):
    """The ``attention`` of :func:`~formal_algorithms.paper.architectures.ed_decoder_layer` in a
    cached decoder, and the list its new self-attention store is appended to: line 14 (``Z`` is
    ``X``) runs :func:`cached_attention` over ``kv``; line 16, given the context's stored
    :class:`KV` as ``Z``, runs :func:`stored_attention` (the paper's projections, Algorithm 4)."""
    written = []

    def attention(X, Z, W, Mask):
        # (not `# line` tags: ed_decoder_layer's lines 14 and 16 record the residual sums)
        if isinstance(Z, KV):  # cross-attention over Z's keys and values, computed once per z
            return stored_attention(W, X, Z, Mask)
        A, new = cached_attention(paper_projection(W), W.W_o, W.b_o, X, positions, kv)  # cache
        written.append(new)
        return A

    return attention, written
