"""Causal linear attention (Katharopoulos et al. 2020) and its recurrent fast-weight form
(Schlag, Irie & Schmidhuber 2021, "Linear Transformers Are Secretly Fast Weight Programmers").

Algorithm 4 weighs value ``v_{t_z}`` for query ``t_x`` by ``exp(k_{t_z}ᵀ q_{t_x} / √d_attn)``,
normalised over the allowed context. Linear attention replaces the exponential by a kernel
``φ(k)ᵀ φ(q)`` with a positive feature map φ (here ``φ(x) = elu(x) + 1``, element-wise):

    ``Ṽ[:, t_x] = Σ_{t_z ≤ t_x} v_{t_z} φ(k_{t_z})ᵀ φ(q_{t_x}) / Σ_{t_z ≤ t_x} φ(k_{t_z})ᵀ φ(q_{t_x})``.

The same numbers come out of two computations:

- **parallel** (:func:`causal_linear_attention`): the paper's orientation, scores
  ``S = φ(K)ᵀ φ(Q)`` of shape ``(ℓ_z, ℓ_x)``, ``S[t_z, t_x] ← 0`` where ``Mask[t_z, t_x]`` is
  False, each column divided by its sum, ``Ṽ = V S``. Cost O(ℓ² (d_attn + d_out)) time and an
  ℓ × ℓ score matrix in memory: quadratic in ℓ, like Algorithm 4.
- **recurrent** (:func:`fast_weight_attention`, a ``jax.lax.scan`` over tokens): because the sum
  over ``t_z ≤ t_x`` factorises, keep a fast weight matrix and a normaliser,
  ``W_t = W_{t−1} + v_t φ(k_t)ᵀ`` (d_out × d_attn) and ``z_t = z_{t−1} + φ(k_t)`` (d_attn), and read
  ``Ṽ[:, t] = W_t φ(q_t) / (z_tᵀ φ(q_t))``. Cost O(ℓ d_attn d_out) time, O(d_attn d_out) state:
  linear in ℓ, constant memory per generated token (no key/value cache that grows with ℓ).

Decisions: no ``1/√d_attn`` (the kernel replaces the exponential, as in Katharopoulos et al.);
only the causal mask (eq. 3, unidirectional), where the two forms coincide; the denominator is
positive because φ > 0, so no guard is needed. The multi-head forms stack heads and project with
``W_o`` exactly as Algorithm 5 does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..paper.attention import AttentionParams, MHAttentionParams, unidirectional_mask
from .checks import (
    check_function,
    check_input_width,
    check_linear,
    check_matrix,
    check_stacked_heads,
)

CAUSAL_LINEAR = "causal_linear_attention (Algorithm 4, exp replaced by a kernel)"
FAST_WEIGHT = "fast_weight_attention (Algorithm 4 as causal linear attention, recurrent)"


def elu_plus_one(x):
    """``φ(x) = elu(x) + 1``: positive, smooth, the feature map of Katharopoulos et al. 2020."""
    return jax.nn.elu(x) + 1


def _qkv(algorithm, X, W: AttentionParams, phi):
    """Lines 1-3, after checking X against W's input width and that φ is a function."""
    check_matrix(algorithm, "X", X)
    check_input_width(algorithm, "X", np.shape(X)[0], W, ("W_q", "W_k", "W_v"))
    for name in ("W_q", "W_k", "W_v"):
        check_linear(
            algorithm,
            f"W.{name}",
            getattr(W, name),
            getattr(W, name.replace("W", "b")),
            np.shape(X)[0],
        )
    check_function(algorithm, "phi", phi, "elu_plus_one")
    Q = W.W_q @ X + W.b_q[:, None]  # Algorithm 4, line 1
    K = W.W_k @ X + W.b_k[:, None]  # line 2
    V = W.W_v @ X + W.b_v[:, None]  # line 3
    return Q, K, V


def causal_linear_attention(X, W: AttentionParams, phi=elu_plus_one):
    """Algorithm 4 as causal linear attention, parallel form: ``(d_out, ℓ)`` from ``X`` ``(d_x, ℓ)``.

    Algorithm 4 with ``exp(kᵀq / √d_attn)`` replaced by ``φ(k)ᵀφ(q)``. O(ℓ²) time and memory.
    """
    Q, K, V = _qkv(CAUSAL_LINEAR, X, W, phi)  # lines 1-3
    S = phi(K).T @ phi(Q)  # line 4: S[t_z, t_x] = φ(k_{t_z})ᵀ φ(q_{t_x})
    S = jnp.where(unidirectional_mask(X.shape[1]), S, 0)  # line 5: masked pairs weigh 0
    return V @ (S / jnp.sum(S, axis=0, keepdims=True))  # line 6: normalise each column, mix values


def fast_weight_attention(X, W: AttentionParams, phi=elu_plus_one):
    """Algorithm 4 as causal linear attention, recurrent fast-weight form (a scan over the ℓ tokens).

    ``W_t = W_{t−1} + v_t φ(k_t)ᵀ``, ``z_t = z_{t−1} + φ(k_t)``, ``out_t = W_t φ(q_t) / (z_tᵀ φ(q_t))``
    with ``W_0 = 0``, ``z_0 = 0``. Equal to :func:`causal_linear_attention`; O(ℓ d_attn d_out)
    time and O(d_attn d_out) state.
    """
    Q, K, V = _qkv(FAST_WEIGHT, X, W, phi)  # lines 1-3

    def step(state, token):
        W_fast, z = state
        phi_q, phi_k, v = token
        W_fast = W_fast + jnp.outer(v, phi_k)  # W_t = W_{t−1} + v_t φ(k_t)ᵀ
        z = z + phi_k  # z_t = z_{t−1} + φ(k_t)
        return (W_fast, z), W_fast @ phi_q / (z @ phi_q)  # out_t

    phi_Q, phi_K = phi(Q), phi(K)  # (m, ℓ); m = d_attn for an element-wise φ, any m for FAVOR+
    state = (jnp.zeros((V.shape[0], phi_K.shape[0]), V.dtype), jnp.zeros(phi_K.shape[0], K.dtype))
    _, out = jax.lax.scan(step, state, (phi_Q.T, phi_K.T, V.T))  # one token (column) per step
    return out.T  # (d_out, ℓ): tokens back to columns


def _multi_head(where, single_head, X, W: MHAttentionParams, phi):
    """Algorithm 5 around any single-head attention: heads stacked ``[Y^1; …; Y^H]``, then ``W_o``."""
    check_stacked_heads(where, W, X, X)  # self-attention: Z is X
    heads = AttentionParams(*W[:6])
    Y = jax.vmap(single_head, in_axes=(None, 0, None))(X, heads, phi)  # lines 1-2
    H, d_mid, ell = Y.shape
    return W.W_o @ Y.reshape(H * d_mid, ell) + W.b_o[:, None]  # lines 3-4


def mh_causal_linear_attention(X, W: MHAttentionParams, phi=elu_plus_one):
    """Algorithm 5 with :func:`causal_linear_attention` heads (parallel form)."""
    return _multi_head("mh_causal_linear_attention", causal_linear_attention, X, W, phi)


def mh_fast_weight_attention(X, W: MHAttentionParams, phi=elu_plus_one):
    """Algorithm 5 with :func:`fast_weight_attention` heads (recurrent form)."""
    return _multi_head("mh_fast_weight_attention", fast_weight_attention, X, W, phi)
