"""Paper §5, attention: masks (eq. 3), Algorithm 3, Algorithm 4, Algorithm 5 (parameters: eq. 4).

Orientation as in the paper: the primary sequence ``X`` is ``(d_x, ℓ_x)``, the context ``Z`` is
``(d_z, ℓ_z)``, scores and masks are ``(ℓ_z, ℓ_x)`` indexed ``[t_z, t_x]``, and the softmax runs
over each column (over the context). Masks are boolean: True means "may attend".
"""

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .checks import check_mask, check_shape, check_sizes, fail
from .functions import compute_dtype, softmax
from .initialisation import materialise, weight, zeros
from .shapes import Arr, Bool, Float, Int, Shaped


class AttentionParams(NamedTuple):
    """``W_qkv`` of Algorithms 3 and 4: one head."""

    W_q: jax.Array  # (d_attn, d_x)
    b_q: jax.Array  # (d_attn,)
    W_k: jax.Array  # (d_attn, d_z)
    b_k: jax.Array  # (d_attn,)
    W_v: jax.Array  # (d_out, d_z)
    b_v: jax.Array  # (d_out,)


class MHAttentionParams(NamedTuple):
    """``W`` of eq. 4 and Algorithm 5, the H heads stacked on a leading axis (head h is ``[h]``)."""

    W_q: jax.Array  # (H, d_attn, d_x)
    b_q: jax.Array  # (H, d_attn)
    W_k: jax.Array  # (H, d_attn, d_z)
    b_k: jax.Array  # (H, d_attn)
    W_v: jax.Array  # (H, d_mid, d_z)
    b_v: jax.Array  # (H, d_mid)
    W_o: jax.Array  # (d_out, H * d_mid)
    b_o: jax.Array  # (d_out,)

    def head(self, h: int) -> AttentionParams:
        """``W_qkv^h``: the parameters of head h (0-based) as an Algorithm 4 parameter set."""
        return AttentionParams(*(w[h] for w in self[:6]))


# ---------------------------------------------------------------------------------------- eq. 3


def bidirectional_mask(ell_z: int, ell_x: int) -> Bool[Arr, "ell_z ell_x"]:
    """Eq. 3, bidirectional: ``Mask ≡ 1`` of shape ``(ℓ_z, ℓ_x)``."""
    check_sizes("bidirectional_mask (eq. 3)", 0, ell_z=ell_z, ell_x=ell_x)
    return jnp.ones((ell_z, ell_x), bool)


def unidirectional_mask(ell: int, ell_x: int | None = None) -> Bool[Arr, "ell ell_x"]:
    """Eq. 3, unidirectional (causal) self-attention: ``Mask[t_z, t_x] = [[t_z ≤ t_x]]``.

    Upper-triangular, diagonal included, in the paper's ``[t_z, t_x]`` orientation; ``(ℓ, ℓ)``.
    With ``ell_x`` (≤ ℓ) the mask is ``(ℓ, ℓ_x)`` for ℓ_x queries that are the *last* ℓ_x of the
    ℓ positions (new tokens against a cache of earlier keys): ``[[t_z ≤ t_x + ℓ − ℓ_x]]``, i.e.
    :func:`causal_mask` of the positions ``0…ℓ−1`` and ``ℓ−ℓ_x…ℓ−1``.
    """
    check_sizes("unidirectional_mask (eq. 3)", 0, ell=ell)
    t = jnp.arange(ell)
    if ell_x is None:
        return causal_mask(t, t)
    check_sizes("unidirectional_mask (eq. 3)", 0, ell_x=ell_x)
    if ell_x > ell:
        fail(
            "unidirectional_mask (eq. 3)",
            "ell_x",
            f"= {ell_x} exceeds ell = {ell}: the queries are the last ell_x of the ell positions",
        )
    return causal_mask(t, t[ell - ell_x :])


def causal_mask(t_z: Int[Arr, " ell_z"], t_x: Int[Arr, " ell_x"]) -> Bool[Arr, "ell_z ell_x"]:
    """``Mask[i, j] = [[t_z[i] ≤ t_x[j]]]`` from the positions of context and primary tokens.

    Needed when the primary tokens are not the first ℓ_x positions (one new query against a cache
    of earlier keys): building the mask from positions, not from a top-left-aligned triangle,
    keeps the newest query able to see every earlier key.
    """
    for name, t in (("t_z", t_z), ("t_x", t_x)):
        if jnp.ndim(t) != 1:
            fail("causal_mask (eq. 3)", name, f"must be 1-D positions, got shape {jnp.shape(t)}")
        if not jnp.issubdtype(jnp.result_type(t), jnp.integer):
            fail(
                "causal_mask (eq. 3)",
                name,
                f"must hold integer positions, got dtype {jnp.result_type(t)}",
                TypeError,
            )
    return t_z[:, None] <= t_x[None, :]


# ---------------------------------------------------------------------------------- Algorithm 3


def single_query_attention(
    e: Float[Arr, " d_in"], e_ctx: Float[Arr, "d_in T"], W: AttentionParams
) -> Float[Arr, " d_out"]:
    """Algorithm 3, basic single-query attention: ``ṽ = Σ_t α_t v_t``.

    ``e``: the current token ``(d_in,)``; ``e_ctx``: the context tokens ``e_t`` as the columns of a
    ``(d_in, T)`` matrix. Returns ``ṽ`` of shape ``(d_out,)``.
    """
    algorithm = "single_query_attention (Algorithm 3)"
    _check_W(algorithm, W, AttentionParams)
    check_shape(algorithm, "e", e, (W.W_q.shape[1],))
    if jnp.ndim(e_ctx) != 2:
        fail(
            algorithm,
            "e_ctx",
            f"must be a matrix (d_in, T) of context columns, got shape {jnp.shape(e_ctx)}",
        )
    check_shape(algorithm, "e_ctx", e_ctx, (W.W_k.shape[1], None))
    q = W.W_q @ e + W.b_q  # line 1
    K = W.W_k @ e_ctx + W.b_k[:, None]  # line 2: k_t = K[:, t]
    V = W.W_v @ e_ctx + W.b_v[:, None]  # line 3: v_t = V[:, t]
    alpha = softmax(q @ K / math.sqrt(q.shape[0]))  # line 4: α_t ∝ exp(qᵀk_t / √d_attn)
    return V @ alpha  # line 5


# ---------------------------------------------------------------------------------- Algorithm 4


def attention(
    X: Float[Arr, "d_x ell_x"],
    Z: Float[Arr, "d_z ell_z"],
    W: AttentionParams,
    Mask: Shaped[Arr, "ell_z ell_x"] | None = None,
) -> Float[Arr, "d_out ell_x"]:
    """Algorithm 4, ``Ṽ ← Attention(X, Z | W_qkv, Mask)``: one masked self- or cross-attention head.

    ``X``: primary ``(d_x, ℓ_x)``; ``Z``: context ``(d_z, ℓ_z)``; ``Mask``: ``(ℓ_z, ℓ_x)`` boolean,
    ``None`` meaning bidirectional (``Mask ≡ 1``). Returns ``Ṽ`` of shape ``(d_out, ℓ_x)``.
    Self-attention is ``attention(X, X, W, Mask)``. A column ``t_x`` with no allowed context
    (possible only with user masks such as padding) returns a zero column: see :func:`softmax`.
    """
    _check_W("attention (Algorithm 4)", W, AttentionParams)
    _check_attention_inputs("attention (Algorithm 4)", X, Z, W.W_q, W.W_k, Mask)
    Q = W.W_q @ X + W.b_q[:, None]  # line 1: (d_attn, ℓ_x)
    K = W.W_k @ Z + W.b_k[:, None]  # line 2: (d_attn, ℓ_z)
    V = W.W_v @ Z + W.b_v[:, None]  # line 3: (d_out, ℓ_z)
    # Lines 4-6 run in at least float32 (float16/bfloat16 scores overflow and lose weights).
    c = compute_dtype(V.dtype)
    S = K.astype(c).T @ Q.astype(c)  # line 4: (ℓ_z, ℓ_x)
    S = S if Mask is None else jnp.where(jnp.asarray(Mask, bool), S, -jnp.inf)  # line 5
    # softmax reads −∞ as masked: weight exactly 0, zero gradient, a zero column if all are.
    A = softmax(S / math.sqrt(Q.shape[0]))  # line 6 (part: A): the weights, columns sum to 1
    return (V.astype(c) @ A).astype(V.dtype)  # line 6


# ---------------------------------------------------------------------------------- Algorithm 5


def mh_attention(
    X: Float[Arr, "d_x ell_x"],
    Z: Float[Arr, "d_z ell_z"],
    W: MHAttentionParams,
    Mask: Shaped[Arr, "ell_z ell_x"] | None = None,
) -> Float[Arr, "d_out ell_x"]:
    """Algorithm 5, ``Ṽ ← MHAttention(X, Z | W, Mask)``: H heads, concatenated and projected.

    Shapes as :func:`attention`; returns ``(d_out, ℓ_x)``. Lines 1-2 run Algorithm 4 once per head;
    ``vmap`` over the stacked head axis is that loop, evaluated in parallel.
    """
    _check_W("mh_attention (Algorithm 5)", W, MHAttentionParams)
    _check_attention_inputs("mh_attention (Algorithm 5)", X, Z, W.W_q[0], W.W_k[0], Mask)
    heads = AttentionParams(*W[:6])
    Y = jax.vmap(attention, in_axes=(None, None, 0, None))(X, Z, heads, Mask)  # lines 1-2
    H, d_mid, ell_x = Y.shape
    Y = Y.reshape(H * d_mid, ell_x)  # line 3: Y = [Y^1; Y^2; …; Y^H]
    return W.W_o @ Y + W.b_o[:, None]  # line 4


def _check_W(algorithm, W, cls):
    """``W`` of the right parameter class, each field an array with the right number of axes."""
    if type(W) is not cls:
        got = type(W).__name__ if hasattr(W, "_fields") else f"a {type(W).__name__}"
        hint = " (one head; H stacked heads go to mh_attention)" if cls is AttentionParams else ""
        fail(algorithm, "W", f"must be {cls.__name__}{hint}, got {got}", TypeError)
    template = attention_spec(1, 1, 1, 1) if cls is AttentionParams else _MH_TEMPLATE
    for name, w, t in zip(cls._fields, W, template, strict=True):
        if not hasattr(w, "shape") or len(w.shape) != len(t.shape):
            fail(
                algorithm,
                f"W.{name}",
                f"must be an array with {len(t.shape)} dimensions, got "
                f"shape {getattr(w, 'shape', None)}",
                TypeError,
            )


def _check_attention_inputs(algorithm, X, Z, W_q, W_k, Mask):
    if jnp.ndim(X) != 2 or jnp.ndim(Z) != 2:
        fail(
            algorithm, "X" if X.ndim != 2 else "Z", "must be a matrix (d, ℓ) with tokens as columns"
        )
    for name, A in (("X", X), ("Z", Z)):
        if not jnp.issubdtype(jnp.result_type(A), jnp.floating):
            fail(
                algorithm,
                name,
                f"must hold floats (embeddings), got dtype {jnp.result_type(A)}",
                TypeError,
            )
    check_shape(algorithm, "X", X, (W_q.shape[-1], None))
    check_shape(algorithm, "Z", Z, (W_k.shape[-1], None))
    if Mask is not None:
        check_mask(algorithm, Mask, Z.shape[1], X.shape[1])


def attention_spec(d_x, d_z, d_attn, d_out) -> AttentionParams:
    """Shapes and initial distributions of one head (see :mod:`.initialisation`)."""
    return AttentionParams(
        weight(d_attn, d_x),
        zeros(d_attn),
        weight(d_attn, d_z),
        zeros(d_attn),
        weight(d_out, d_z),
        zeros(d_out),
    )


def mh_attention_spec(H, d_x, d_z, d_attn, d_mid, d_out) -> MHAttentionParams:
    """Shapes and initial distributions of eq. 4's ``W`` with H stacked heads."""
    lead = (H,)
    return MHAttentionParams(
        weight(d_attn, d_x, lead=lead),
        zeros(H, d_attn),
        weight(d_attn, d_z, lead=lead),
        zeros(H, d_attn),
        weight(d_mid, d_z, lead=lead),
        zeros(H, d_mid),
        weight(d_out, H * d_mid),
        zeros(d_out),
    )


def init_attention(key, d_x, d_z, d_attn, d_out, dtype=None) -> AttentionParams:
    """One head (Algorithm 4): weights ~ N(0, 1/fan_in), biases 0 (the paper gives no init)."""
    check_sizes("init_attention", d_x=d_x, d_z=d_z, d_attn=d_attn, d_out=d_out)
    return materialise(key, attention_spec(d_x, d_z, d_attn, d_out), dtype, "init_attention")


def init_mh_attention(key, H, d_x, d_z, d_attn, d_mid, d_out, dtype=None):
    """Eq. 4's parameter set ``W`` with H heads: weights ~ N(0, 1/fan_in), biases 0."""
    check_sizes("init_mh_attention", H=H, d_x=d_x, d_z=d_z, d_attn=d_attn, d_mid=d_mid, d_out=d_out)
    spec = mh_attention_spec(H, d_x, d_z, d_attn, d_mid, d_out)
    return materialise(key, spec, dtype, "init_mh_attention")


_MH_TEMPLATE = mh_attention_spec(1, 1, 1, 1, 1, 1)
