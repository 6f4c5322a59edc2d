"""Faster evaluation orders of Algorithm 10 for training: a batch as one matrix of columns, and
the layer loop (line 4) as ``lax.scan``.

Same math, the library's building blocks (Algorithm 6's :func:`~.normalisation.layer_norm_columns`,
eq. 2's :func:`~.functions.softmax`, :func:`~.architectures.mlp`); only the evaluation order
changes:

- **The batch joins the columns.** The paper processes one sequence, a ``(d_e, ℓ)`` matrix whose
  columns are tokens; everything but attention acts on each column alone (eq. 1, layer norm, the
  projections ``W_q X``, ``W_o Y``, the MLP, ``W_u X``). So B sequences are one ``(d_e, B·ℓ)``
  matrix, column ``b·ℓ + t`` being token t of sequence b, and each of those steps is *one* matrix
  product over all ``B·ℓ`` columns; only Algorithm 4's lines 4-6 (scores, mask, softmax, weighted
  values) run per sequence, on the ``(·, B, ℓ)`` view of the same columns. ``vmap`` over the batch
  (what the literal functions get) computes the same numbers, but XLA's CPU backend turns the
  vmapped products into batched ones with transposes around them; measured on the GPT-2-like
  benchmark this order makes the training step ~1.6× faster (docs/performance.md).
- **The layer loop is a scan** over the layers stacked on a leading axis. Unrolled, XLA's CPU
  backend fuses the backward pass's residual-stream sums of *all* layers into a few huge
  element-wise fusions (80+ operands) and recomputes them inside every consumer; the scan's
  iteration boundary materialises the residual stream once per layer (~15 % faster).
- **One product for the queries, keys and values** of all heads: ``[W_q; W_k; W_v] X`` (~5 %).

Verified equal to :func:`~.architectures.d_transformer_logits` (vmapped) and to
:func:`~.trainer.train_step` in tests/test_fast.py (float64, 1e-12). Not for generation (use
:mod:`.cache`), and not a replacement for the literal form: the literal functions remain the
definition.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import check_tokens, fail
from .architectures import (
    DTransformerParams,
    _check_inputs,
    check_params,
    mlp,
    unembedding_matrix,
)
from .attention import MHAttentionParams, unidirectional_mask
from .functions import gelu, softmax
from .normalisation import EPS, layer_norm_columns
from .training import TokenStats, _token_stats

ALG10 = "DTransformer (Algorithm 10)"


def stack_layers(layers):
    """The L layers of θ as one ``Layer`` whose every array has a leading axis of length L."""
    return jax.tree.map(lambda *a: jnp.stack(a), *layers)


def d_transformer_logits_scan(x, theta: DTransformerParams, *, activation=gelu, eps=EPS):
    """Algorithm 10 up to its softmax, lines 1-11, for one sequence, with line 4's loop as
    ``lax.scan`` (the batch form below with B = 1). Equal to
    :func:`~.architectures.d_transformer_logits` (``(N_V, ℓ)``)."""
    _check_inputs(theta, ALG10, x=x)
    return _d_logits_columns(x[None], theta, activation, eps)[:, 0]


# ------------------------------------------------------------------ a batch as one matrix


def embed_columns(xs, W_e, W_p):
    """Eq. 1 for B sequences ``xs`` (B, ℓ) at once: ``X[:, b·ℓ + t] = W_e[:, xs[b, t]] + W_p[:, t]``,
    shape ``(d_e, B·ℓ)``."""
    B, ell = xs.shape
    return W_e[:, xs.reshape(-1)] + jnp.tile(W_p[:, :ell], (1, B))


def mh_attention_columns(X, W: MHAttentionParams, Mask, B: int):
    """Algorithm 5 (self-attention) on each sequence's block of columns of ``X`` (d_x, B·ℓ).

    Lines 1-3 of Algorithm 4 (``Q = W_q X + b_q 1ᵀ``, K, V) for all heads together are one
    product over all columns, and so is Algorithm 5's ``W_o Y``; lines 4-6 (``S = KᵀQ``, the
    mask, the column softmax, ``V A``) run on the ``(·, B, ℓ)`` view, per head and sequence, with
    ``Mask[t_z, t_x]`` (ℓ, ℓ) shared by all.
    """
    ell = X.shape[1] // B
    H, d_attn, d_x = W.W_q.shape
    # Lines 1-3 for every head as one product: [W_q; W_k; W_v] X + [b_q; b_k; b_v] 1ᵀ.
    W_qkv = jnp.concatenate([M.reshape(-1, d_x) for M in (W.W_q, W.W_k, W.W_v)])
    b_qkv = jnp.concatenate([b.reshape(-1) for b in (W.b_q, W.b_k, W.b_v)])
    QKV = W_qkv @ X + b_qkv[:, None]
    Q, K, V = jnp.split(QKV, [H * d_attn, 2 * H * d_attn])  # (H·d_attn | H·d_mid, B·ℓ)
    Q, K, V = (M.reshape(H, -1, B, ell) for M in (Q, K, V))
    S = jnp.einsum("hdbz,hdbx->hbzx", K, Q)  # line 4: S = KᵀQ per head and sequence
    A = jax.vmap(jax.vmap(softmax, (0, None)), (0, None))(S / math.sqrt(d_attn), Mask)  # line 5
    Y = jnp.einsum("hmbz,hbzx->hmbx", V, A)  # line 6: V A
    return W.W_o @ Y.reshape(-1, X.shape[1]) + W.b_o[:, None]  # Alg 5 lines 3-4


def pre_ln_layer_columns(X, layer, Mask, B: int, activation, eps=EPS):
    """Algorithm 10's lines 5-8 for one layer, on the ``(d_e, B·ℓ)`` matrix of B sequences."""
    X_tilde = layer_norm_columns(X, layer.gamma1, layer.beta1, eps)  # line 5
    X = X + mh_attention_columns(X_tilde, layer.W, Mask, B)  # line 6
    X_tilde = layer_norm_columns(X, layer.gamma2, layer.beta2, eps)  # line 7
    return X + mlp(
        X_tilde, layer.W_mlp1, layer.b_mlp1, layer.W_mlp2, layer.b_mlp2, activation
    )  # line 8


def _d_logits_columns(xs, theta: DTransformerParams, activation, eps):
    """Algorithm 10's lines 1-11 for the rows of ``xs`` (B, ℓ): logits of shape ``(N_V, B, ℓ)``."""
    B, ell = xs.shape
    X = embed_columns(xs, theta.W_e, theta.W_p)  # lines 1-3
    Mask = unidirectional_mask(ell)

    def layer(X, params):  # lines 5-8 for one l
        return pre_ln_layer_columns(X, params, Mask, B, activation, eps), None

    X, _ = jax.lax.scan(layer, X, stack_layers(theta.layers))  # line 4: for l = 1..L
    X = layer_norm_columns(X, theta.gamma, theta.beta, eps)  # line 10
    return (unembedding_matrix(theta) @ X).reshape(-1, B, ell)  # line 11, before the softmax


def d_transformer_logits_batch(xs, theta: DTransformerParams, *, activation=gelu, eps=EPS):
    """Algorithm 10 up to its softmax for a batch ``xs`` (B, ℓ), the batch as columns and the
    layer loop scanned: equal to ``vmap(d_transformer_logits)(xs, θ)``, shape ``(B, N_V, ℓ)``."""
    if np.ndim(xs) != 2:
        fail(ALG10, "xs", f"must be a (B, ℓ) batch of token sequences, got shape {np.shape(xs)}")
    check_params(theta, ALG10)
    check_tokens(ALG10, "xs", jnp.reshape(xs, -1), theta.W_e.shape[1])
    if xs.shape[1] > theta.W_p.shape[1]:
        fail(ALG10, "xs", f"has length {xs.shape[1]} > ell_max = {theta.W_p.shape[1]}")
    return jnp.moveaxis(_d_logits_columns(xs, theta, activation, eps), 1, 0)


def d_batch_stats_columns(theta, xs, valid, *, activation=gelu, eps=EPS) -> TokenStats:
    """The padded Algorithm 13 loss (:func:`~.training.d_loss_padded`) summed over the rows of a
    batch, computed with the batch as columns."""
    logits = _d_logits_columns(xs, theta, activation, eps)  # (N_V, B, ℓ)
    rows = jax.vmap(_token_stats, in_axes=(1, 0, 0))(logits[:, :, :-1], xs[:, 1:], valid[:, 1:])
    return TokenStats(*(jnp.sum(s) for s in rows))


@functools.partial(jax.jit, static_argnames=("optimizer", "reduction", "activation", "eps"))
def d_train_step_fast(
    theta: DTransformerParams, opt_state, batch: dict, *, optimizer, reduction="mean",
    activation=gelu, eps=EPS,
):  # fmt: skip
    """:func:`~.trainer.train_step` for Algorithm 10 (``batch`` with ``x``, ``valid`` from
    :func:`~.trainer.make_batch`), the forward with the batch as columns and the layer loop
    scanned. Returns ``(θ, opt_state, loss, stats)``, ``stats`` a :class:`~.trainer.StepStats`."""
    import optax  # the train extra, as in trainer

    from .trainer import StepStats

    def loss(th):
        stats = d_batch_stats_columns(
            th, batch["x"], batch["valid"], activation=activation, eps=eps
        )
        value = stats.loss / jnp.maximum(stats.n_targets, 1) if reduction == "mean" else stats.loss
        return value, stats

    (value, stats), grads = jax.value_and_grad(loss, has_aux=True)(theta)
    updates, opt_state = optimizer.update(grads, opt_state, theta)
    stats = StepStats(*stats, optax.tree.norm(grads))
    return optax.apply_updates(theta, updates), opt_state, value, stats
