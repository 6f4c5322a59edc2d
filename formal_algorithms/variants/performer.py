"""Performer attention (Choromanski et al. 2020, "Rethinking Attention with Performers"): FAVOR+.

Algorithm 4 weighs value ``v_{t_z}`` for query ``t_x`` by ``exp(k_{t_z}ᵀ q_{t_x} / √d_attn)``,
normalised over the context the mask allows. FAVOR+ ("fast attention via positive orthogonal
random features") keeps that kernel but estimates it without bias by a product of positive
random features of d_attn-vectors,

    ``φ(x) = exp(Ω x̄ − ‖x̄‖²/2) / √m``,   ``x̄ = x / d_attn^{1/4}``,   ``E_Ω[φ(k)ᵀφ(q)] = exp(kᵀq/√d_attn)``,

where the m rows ``ω_i`` of ``Ω`` (m × d_attn) are standard normal, drawn in orthogonal blocks
(:func:`draw_features`). The exponential is applied to the whole column ``Ω x̄ − ‖x̄‖²/2`` at
once, so the features are positive and the estimate of a weight can never be negative (the
"+" of FAVOR+; sin/cos features can). Because the estimated weight factorises into a feature of
the key times a feature of the query, lines 4-6 of Algorithm 4 can be evaluated in O(ℓ m d)
time instead of O(ℓ² d):

=========  ==========================================  ============================================
line       Algorithm 4                                 FAVOR+ (bidirectional, Mask ≡ 1)
=========  ==========================================  ============================================
4          ``S ← Kᵀ Q``                                ``Q' ← φ(Q)``, ``K' ← φ(K)`` (m × ℓ each)
5          ``S[t_z, t_x] ← −∞`` where masked           ``C ← V K'ᵀ`` (d_out × m), ``z ← K' 1``
6          ``Ṽ ← V · softmax(S / √d_attn)``            ``Ṽ[:, t] ← C Q'[:, t] / (zᵀ Q'[:, t])``
=========  ==========================================  ============================================

For the causal mask (eq. 3, unidirectional), ``C`` and ``z`` become prefix sums over the
tokens, ``C_t = Σ_{t_z ≤ t} v_{t_z} φ(k_{t_z})ᵀ``, ``z_t = Σ_{t_z ≤ t} φ(k_{t_z})``
(``jnp.cumsum``), and ``Ṽ[:, t] = C_t φ(q_t) / (z_tᵀ φ(q_t))``: the Performer paper's
prefix-sum form. It is :mod:`.linear_attention`'s fast-weight recurrence written as a cumulative
sum, and ``φ`` of :func:`favor_feature_map` plugs into that module's forms unchanged
(``causal_linear_attention(X, W, favor_feature_map(Ω))`` is the quadratic parallel form,
``fast_weight_attention`` the scan).

Decisions: one Ω for all heads and layers (the Performer code shares its projection matrix);
Ω is an argument, drawn from an explicit key, and redrawn by drawing again
(:func:`redrawn_features`); no numerical stabiliser (the released code subtracts a maximum
before the exponential; for a key feature the maximum must be global, which would make
the causal form depend numerically on later tokens; the log-features ``ωᵀx̄ − ‖x̄‖²/2`` are at most
``‖ω‖²/2``, so they cannot overflow, and underflow needs ``‖x̄‖`` far beyond the scale of
normalised inputs).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from ..paper.architectures import post_ln_layer, pre_ln_layer, unembedding_matrix
from ..paper.attention import AttentionParams, MHAttentionParams
from ..paper.checks import check_key, check_valid, fail
from ..paper.embeddings import embed
from ..paper.functions import gelu
from ..paper.normalisation import EPS, layer_norm_columns
from ..paper.parameters import DTransformerParams, ETransformerParams
from ..paper.validation import check_inputs
from .checks import check_stacked_heads

ALG = "FAVOR+ attention (Algorithm 4, lines 4-6 substituted)"
MH_ALG = "mh_favor_attention (Algorithm 5 with FAVOR+ heads)"


def _fail(argument, message, error=ValueError):
    fail(ALG, argument, message, error)


# ------------------------------------------------------------------------------ random features


def draw_features(key, m: int, d_attn: int, *, orthogonal: bool = True, dtype=jnp.float32):
    """``Ω`` of shape ``(m, d_attn)``: m random feature directions for :func:`favor_features`.

    ``orthogonal=True`` (FAVOR+'s "O"): the rows come in blocks of d_attn that are exactly
    orthogonal to each other (the Q factor of a Gaussian matrix), each row then given the length
    of an independent standard normal d_attn-vector (a χ_{d_attn} draw), so every row is still
    marginally ``N(0, I)`` and the estimator stays unbiased, with lower variance than i.i.d. rows.
    The last block is cut to ``m mod d_attn`` rows. ``orthogonal=False``: i.i.d. ``N(0, I)`` rows.
    """
    check_key(ALG, key)
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        _fail("m", f"(number of features) must be an integer >= 1, got {m!r}")
    if isinstance(d_attn, bool) or not isinstance(d_attn, (int, np.integer)) or d_attn < 1:
        _fail("d_attn", f"must be an integer >= 1, got {d_attn!r}")
    if not orthogonal:
        return jax.random.normal(key, (m, d_attn), dtype)
    n_blocks = -(-m // d_attn)
    k_blocks, k_norms = jax.random.split(key)
    G = jax.random.normal(k_blocks, (n_blocks, d_attn, d_attn), dtype)
    Q, R = jnp.linalg.qr(G)  # columns of each Q orthonormal
    Q = Q * jnp.sign(jnp.diagonal(R, axis1=1, axis2=2))[:, None, :]  # Haar: Q's signs fixed by R
    rows = jnp.swapaxes(Q, 1, 2).reshape(n_blocks * d_attn, d_attn)[:m]  # unit rows, ⟂ in a block
    norms = jnp.linalg.norm(jax.random.normal(k_norms, (m, d_attn), dtype), axis=1)  # χ_{d_attn}
    return rows * norms[:, None]


def redrawn_features(
    key, step: int, m: int, d_attn: int, *, every: int, orthogonal=True, dtype=jnp.float32
):
    """Ω for training step ``step``: redrawn every ``every`` steps (Performer's feature redrawing),
    the draw of period ``step // every`` being ``draw_features(fold_in(key, step // every), …)``."""
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        _fail("every", f"must be an integer >= 1, got {every!r}")
    return draw_features(
        jax.random.fold_in(key, step // every), m, d_attn, orthogonal=orthogonal, dtype=dtype
    )


def favor_features(X, Omega):
    """``φ(X)`` of shape ``(m, ℓ)`` for the columns of ``X`` ``(d_attn, ℓ)``:
    ``exp(Ω X̄ − ½ ‖X̄[:, t]‖²) / √m`` with ``X̄ = X / d_attn^{1/4}``.

    ``φ(k)ᵀφ(q)`` is an unbiased estimate of ``exp(kᵀq / √d_attn)`` (Algorithm 4's weight before
    normalisation) whenever the rows of Ω are marginally ``N(0, I)``.
    """
    d_attn = X.shape[0]
    if Omega.ndim != 2 or Omega.shape[1] != d_attn:
        _fail("Omega", f"has shape {Omega.shape}, expected (m, d_attn = {d_attn})")
    m = Omega.shape[0]
    X_bar = X / d_attn**0.25  # the 1/√d_attn of line 6, split between key and query
    log_phi = Omega @ X_bar - 0.5 * jnp.sum(X_bar**2, axis=0)[None, :]
    return jnp.exp(log_phi) / math.sqrt(m)


def favor_feature_map(Omega):
    """``φ`` as a function of a ``(d_attn, ℓ)`` matrix, for :mod:`.linear_attention`'s ``phi``."""
    return lambda X: favor_features(X, Omega)


# ------------------------------------------------------------------------------ single head


def _qkv(X, Z, W: AttentionParams):
    Q = W.W_q @ X + W.b_q[:, None]  # Algorithm 4, line 1
    K = W.W_k @ Z + W.b_k[:, None]  # line 2
    V = W.W_v @ Z + W.b_v[:, None]  # line 3
    return Q, K, V


def favor_attention_parallel(X, Z, W: AttentionParams, Omega, Mask=None):
    """FAVOR+ weights in Algorithm 4's quadratic layout: ``S = φ(K)ᵀφ(Q)`` ``(ℓ_z, ℓ_x)``, masked
    pairs set to 0, each column normalised, ``Ṽ = V S``. Any ``Mask[t_z, t_x]``; O(ℓ_z ℓ_x) memory.
    The reference for the linear-time forms, not a fast path.
    """
    Q, K, V = _qkv(X, Z, W)  # lines 1-3
    S = favor_features(K, Omega).T @ favor_features(Q, Omega)  # line 4: estimates exp(kᵀq/√d)
    if Mask is not None:
        S = jnp.where(Mask, S, 0)  # line 5: masked pairs weigh 0 (exp(−∞) = 0)
    return V @ (S / jnp.sum(S, axis=0, keepdims=True))  # line 6


def favor_attention(X, Z, W: AttentionParams, Omega, *, causal=False, valid=None):
    """Algorithm 4 with FAVOR+ for lines 4-6, linear in ℓ: ``Ṽ`` ``(d_out, ℓ_x)``.

    ``causal=False``: bidirectional (``Mask ≡ 1``), ``valid`` (optional ``(ℓ_z,)`` bool) masks
    padded context tokens by zeroing their features. ``causal=True``: self-attention with the
    causal mask by prefix sums (``Z`` must be ``X``'s length; ``valid`` is not needed: a causal
    model's padding at the end never reaches a real token).
    """
    check_valid(ALG, "valid", valid, np.shape(Z)[1])
    Q, K, V = _qkv(X, Z, W)  # lines 1-3
    Q_f, K_f = favor_features(Q, Omega), favor_features(K, Omega)  # FAVOR+: φ(Q), φ(K), (m, ℓ)
    if not causal:
        if valid is not None:
            K_f = jnp.where(valid[None, :], K_f, 0)  # masked keys weigh 0
        C, z = V @ K_f.T, jnp.sum(K_f, axis=1)  # Σ_tz v φ(k)ᵀ (d_out, m), Σ_tz φ(k) (m,)
        return (C @ Q_f) / (z @ Q_f)[None, :]  # line 6
    if Q.shape[1] != K.shape[1]:
        _fail("Z", f"has {K.shape[1]} tokens but X has {Q.shape[1]}: causal=True is self-attention")
    C = jnp.cumsum(V.T[:, :, None] * K_f.T[:, None, :], axis=0)  # C_t, (ℓ, d_out, m)
    z = jnp.cumsum(K_f.T, axis=0)  # z_t, (ℓ, m)
    numerator = jnp.einsum("tom,mt->ot", C, Q_f)  # C_t φ(q_t)
    return numerator / jnp.einsum("tm,mt->t", z, Q_f)[None, :]  # line 6


def mh_favor_attention(X, Z, W: MHAttentionParams, Omega, *, causal=False, valid=None):
    """Algorithm 5 with :func:`favor_attention` heads (one Ω for all heads): heads stacked, ``W_o``."""
    check_stacked_heads(MH_ALG, W, X, Z)
    heads = AttentionParams(*W[:6])
    attend = functools.partial(favor_attention, X, Z, Omega=Omega, causal=causal, valid=valid)
    Y = jax.vmap(attend)(heads)  # lines 1-2
    H, d_mid, ell = Y.shape
    return W.W_o @ Y.reshape(H * d_mid, ell) + W.b_o[:, None]  # lines 3-4


# ------------------------------------------------------------------------------ architectures


def performer_e_transformer_logits(
    x, theta: ETransformerParams, Omega, *, activation=gelu, eps=EPS, valid=None
):
    """Algorithm 9 with FAVOR+ in every layer's attention (line 5, bidirectional): ``W_u X``.

    ``valid`` (optional ``(ℓ,)`` bool) marks the real tokens of an x padded at its end.
    """
    (x,) = check_inputs(theta, "Performer ETransformer (Algorithm 9)", ETransformerParams, x=x)

    def attention(X, Z, W, Mask):  # Algorithm 5 with FAVOR+ heads; Mask ≡ 1 (or key padding)
        return mh_favor_attention(X, Z, W, Omega, valid=valid)

    X = embed(x, theta.W_e, theta.W_p)  # lines 1-3
    for layer in theta.layers:  # line 4
        X = post_ln_layer(X, layer, None, activation, eps, attention=attention)  # lines 5-8
    X = activation(theta.W_f @ X + theta.b_f[:, None])  # line 10
    X = layer_norm_columns(X, theta.gamma, theta.beta, eps)  # line 11
    return unembedding_matrix(theta) @ X  # line 12 (part: logits): before the softmax


def performer_d_transformer_logits(
    x, theta: DTransformerParams, Omega, *, activation=gelu, eps=EPS
):
    """Algorithm 10 with causal FAVOR+ (prefix sums) in every layer's attention: ``W_u X``."""
    (x,) = check_inputs(theta, "Performer DTransformer (Algorithm 10)", DTransformerParams, x=x)

    def attention(X, Z, W, Mask):  # the causal mask of line 6, as prefix sums
        return mh_favor_attention(X, Z, W, Omega, causal=True)

    X = embed(x, theta.W_e, theta.W_p)  # lines 1-3
    for layer in theta.layers:  # line 4
        X = pre_ln_layer(X, layer, None, activation, eps, attention=attention)  # lines 5-8
    X = layer_norm_columns(X, theta.gamma, theta.beta, eps)  # line 10
    return unembedding_matrix(theta) @ X  # line 11 (part: logits): before the softmax
