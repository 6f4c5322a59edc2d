"""Faster evaluation orders of Algorithms 10, 9 and 8 for training: a batch as one matrix of
columns.

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
- **The layer loops stay Python loops** (unrolled into one program). A ``lax.scan`` over the
  stacked layers (:func:`d_transformer_logits_scan`) keeps compile time flat in L, but for the
  benchmark's 4-layer GPT-2-like step it measured 10-18 % slower: the scan zero-fills and then
  writes stacked per-layer buffers of everything the backward pass needs (docs/performance.md).
- **One product for the queries, keys and values** of all heads: ``[W_q; W_k; W_v] X`` (~5 %).

Verified equal to :func:`~.architectures.d_transformer_logits`,
:func:`~.training.e_transformer_logits_padded` and :func:`~.training.ed_transformer_logits_padded`
(vmapped) and to :func:`~.trainer.train_step` in tests/test_fast.py (float64, 1e-12). Not for
generation (use :mod:`.cache`), and not a replacement for the literal form: the literal functions
remain the definition.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..paper.architectures import ed_decoder_layer, post_ln_layer, pre_ln_layer, unembedding_matrix
from ..paper.attention import MHAttentionParams, unidirectional_mask
from ..paper.checks import check_tokens, fail
from ..paper.functions import gelu, relu
from ..paper.normalisation import EPS, layer_norm_columns
from ..paper.parameters import DTransformerParams, EDTransformerParams, ETransformerParams
from ..paper.training import TokenStats, mask_tokens, masked_positions, token_stats
from ..paper.validation import check_inputs, check_params
from .kv_attention import attend, output
from .update import optimizer_step

ALG10 = "DTransformer (Algorithm 10)"
ALG8 = "EDTransformer (Algorithm 8)"
ALG9 = "ETransformer (Algorithm 9)"


def stack_layers(layers):
    """The L layers of θ as one ``Layer`` whose every array has a leading axis of length L."""
    return jax.tree.map(lambda *a: jnp.stack(a), *layers)


def d_transformer_logits_scan(x, theta: DTransformerParams, *, activation=gelu, eps=EPS):
    """Algorithm 10 up to its softmax, lines 1-11, for one sequence, with line 4's loop as
    ``lax.scan`` over the stacked layers: one compiled layer body whatever L (for deep models).
    Equal to :func:`~.architectures.d_transformer_logits` (``(N_V, ℓ)``)."""
    check_inputs(theta, ALG10, DTransformerParams, x=x)
    return _d_logits_columns(x[None], theta, activation, eps, scan=True)[:, 0]


# ------------------------------------------------------------------ a batch as one matrix


def embed_columns(xs, W_e, W_p):
    """Eq. 1 for B sequences ``xs`` (B, ℓ) at once: ``X[:, b·ℓ + t] = W_e[:, xs[b, t]] + W_p[:, t]``,
    shape ``(d_e, B·ℓ)``."""
    B, ell = xs.shape
    return W_e[:, xs.reshape(-1)] + jnp.tile(W_p[:, :ell], (1, B))


def mh_attention_columns(X, Z, W: MHAttentionParams, Mask, B: int):
    """Algorithm 5 on each sequence's block of columns: ``X`` (d_x, B·ℓ_x) attends to ``Z``
    (d_z, B·ℓ_z), sequence b's queries to sequence b's context only.

    Lines 1-3 of Algorithm 4 (``Q = W_q X + b_q 1ᵀ``, K, V) for all heads together are one
    product over all columns (for self-attention, ``Z is X``, one ``[W_q; W_k; W_v] X``), and so is
    Algorithm 5's ``W_o Y``; lines 4-6 (``S = KᵀQ``, the mask, the column softmax, ``V A``) run on
    the ``(·, B, ℓ)`` views, per head and sequence. ``Mask[t_z, t_x]``: ``(ℓ_z, ℓ_x)`` shared by
    every sequence, ``(B, ℓ_z, ℓ_x)`` one per sequence, or ``None`` (the paper's ``Mask ≡ 1``).
    """
    ell_x, ell_z = X.shape[1] // B, Z.shape[1] // B
    H, d_attn, d_x = W.W_q.shape
    flat = lambda *Ms: jnp.concatenate([M.reshape(M.shape[0] * M.shape[1], -1) for M in Ms])  # noqa: E731
    if Z is X:  # Lines 1-3 as one product: [W_q; W_k; W_v] X + [b_q; b_k; b_v] 1ᵀ
        QKV = flat(W.W_q, W.W_k, W.W_v) @ X + flat(W.b_q, W.b_k, W.b_v)
        Q, K, V = jnp.split(QKV, [H * d_attn, 2 * H * d_attn])
    else:  # Line 1 on X; lines 2-3 as one product on Z
        Q = flat(W.W_q) @ X + flat(W.b_q)
        K, V = jnp.split(flat(W.W_k, W.W_v) @ Z + flat(W.b_k, W.b_v), [H * d_attn])
    Q = Q.reshape(H, d_attn, B, ell_x)  # Alg 4 line 1 [h, :, b, :]
    K, V = (M.reshape(H, -1, B, ell_z).transpose(2, 0, 3, 1) for M in (K, V))  # Kᵀ, Vᵀ per b
    Mask = None if Mask is None else jnp.asarray(Mask, bool)
    per_sequence = (None if Mask is None or Mask.ndim == 2 else 0,)
    # Algorithm 4's lines 4-6 for each sequence b over its own keys and values
    Y = jax.vmap(attend, in_axes=(2, 0, 0, *per_sequence), out_axes=2)(Q, K, V, Mask)
    return output(W.W_o, W.b_o, Y.reshape(H, -1, X.shape[1]))


def _d_logits_columns(xs, theta: DTransformerParams, activation, eps, scan=False):
    """Algorithm 10's lines 1-11 for the rows of ``xs`` (B, ℓ): logits of shape ``(N_V, B, ℓ)``;
    line 4 a Python loop, or with ``scan`` a ``lax.scan`` over the stacked layers."""
    B, ell = xs.shape
    X = embed_columns(xs, theta.W_e, theta.W_p)  # lines 1-3
    Mask = unidirectional_mask(ell)
    attend = functools.partial(mh_attention_columns, B=B)  # Algorithm 5 per sequence block

    def layer(X, params):  # lines 5-8 for one l
        return pre_ln_layer(X, params, Mask, activation, eps, attention=attend), None

    if scan:
        X = jax.lax.scan(layer, X, stack_layers(theta.layers))[0]  # lines 4-9, scanned over l
    else:
        for params in theta.layers:  # line 4
            X, _ = layer(X, params)
    X = layer_norm_columns(X, theta.gamma, theta.beta, eps)  # line 10
    return (unembedding_matrix(theta) @ X).reshape(-1, B, ell)  # line 11 (part: logits) [:, b, :]


def _check_batches(algorithm, expected, theta, **batches):
    """θ, and each batch a (B, ℓ) integer array of ids in [0, N_V), ℓ ≤ ℓ_max, all with one B."""
    check_params(theta, algorithm, expected)
    N_V, ell_max = theta.W_e.shape[1], theta.W_p.shape[1]
    B = np.shape(next(iter(batches.values())))[:1]  # the first batch's row count
    for name, a in batches.items():
        if np.ndim(a) != 2 or np.shape(a)[:1] != B:
            fail(
                algorithm,
                name,
                f"must be a (B, ℓ) batch of token sequences, got shape {np.shape(a)}",
            )
        check_tokens(algorithm, name, jnp.reshape(a, -1), N_V)
        if a.shape[1] > ell_max:
            fail(algorithm, name, f"has length {a.shape[1]} > ell_max = {ell_max}")


def d_transformer_logits_batch(xs, theta: DTransformerParams, *, activation=gelu, eps=EPS):
    """Algorithm 10 up to its softmax for a batch ``xs`` (B, ℓ), the batch as columns: equal to
    ``vmap(d_transformer_logits)(xs, θ)``, shape ``(B, N_V, ℓ)``."""
    _check_batches(ALG10, DTransformerParams, theta, xs=xs)
    return jnp.moveaxis(_d_logits_columns(xs, theta, activation, eps), 1, 0)


def d_batch_stats_columns(theta, xs, valid, *, activation=gelu, eps=EPS) -> TokenStats:
    """The padded Algorithm 13 loss (:func:`~.training.d_loss_padded`) summed over the rows of a
    batch, computed with the batch as columns."""
    logits = _d_logits_columns(xs, theta, activation, eps)  # (N_V, B, ℓ)
    rows = jax.vmap(token_stats, in_axes=(1, 0, 0))(logits[:, :, :-1], xs[:, 1:], valid[:, 1:])
    return TokenStats(*(jnp.sum(s) for s in rows))


# ------------------------------------------------------------------ Algorithm 9, batch as columns


def _e_logits_columns(xs, valid, theta: ETransformerParams, activation, eps):
    """Algorithm 9's lines 1-12 for the rows of ``xs`` (B, ℓ), padded where ``valid`` is False
    (``None``: no padding): logits ``(N_V, B, ℓ)``. Padded keys are masked in every attention, as
    :func:`~.training.e_transformer_logits_padded`."""
    B, ell = xs.shape
    X = embed_columns(xs, theta.W_e, theta.W_p)  # lines 1-3
    attend = functools.partial(mh_attention_columns, B=B)  # Algorithm 5 per sequence block
    Mask = None if valid is None else jnp.broadcast_to(valid[:, :, None], (B, ell, ell))
    # Line 4 a Python loop, as for Algorithm 10 (a BERT-sized step: 1.18-1.31× the literal one
    # unrolled, 0.93-1.02× scanned).
    for layer in theta.layers:  # line 4
        X = post_ln_layer(X, layer, Mask, activation, eps, attention=attend)  # lines 5-8
    X = activation(theta.W_f @ X + theta.b_f[:, None])  # line 10
    X = layer_norm_columns(X, theta.gamma, theta.beta, eps)  # line 11
    return (unembedding_matrix(theta) @ X).reshape(-1, B, ell)  # line 12 (part: logits) [:, b, :]


def e_transformer_logits_batch(
    xs, theta: ETransformerParams, *, valid=None, activation=gelu, eps=EPS
):
    """Algorithm 9 up to its softmax for a batch ``xs`` (B, ℓ), the batch as columns: equal to
    ``vmap(e_transformer_logits_padded)(xs, valid, θ)`` (``valid`` (B, ℓ) bool marks the real
    tokens, padded at the end; ``None``: every token is real), shape ``(B, N_V, ℓ)``."""
    _check_batches(ALG9, ETransformerParams, theta, xs=xs)
    if valid is not None and np.shape(valid) != np.shape(xs):
        fail(ALG9, "valid", f"must have the shape of xs {np.shape(xs)}, got {np.shape(valid)}")
    return jnp.moveaxis(_e_logits_columns(xs, valid, theta, activation, eps), 1, 0)


def e_batch_stats_columns(theta, batch, p_mask, *, activation=gelu, eps=EPS) -> TokenStats:
    """The padded Algorithm 12 loss (:func:`~.training.e_loss_padded`) summed over the rows of a
    batch (``x``, ``valid``, ``key``: one masking key per row), computed with the batch as columns.
    Each row is masked exactly as the literal step masks it (lines 4-6, the same keys)."""
    xs, valid = batch["x"], batch["valid"]

    def mask(key, x, valid):
        return mask_tokens(key, x, theta, p_mask=p_mask, valid=valid)

    x_tilde = jax.vmap(mask)(batch["key"], xs, valid)
    logits = _e_logits_columns(x_tilde, valid, theta, activation, eps)
    T_tilde = jax.vmap(masked_positions, (None, 0, 0))(theta, x_tilde, valid)  # line 7
    rows = jax.vmap(token_stats, in_axes=(1, 0, 0))(logits, xs, T_tilde)
    return TokenStats(*(jnp.sum(s) for s in rows))


# ------------------------------------------------------------------ Algorithm 8, batch as columns


def _ed_logits_columns(zs, z_valid, xs, theta: EDTransformerParams, activation, eps):
    """Algorithm 8's lines 1-20 for the rows of ``zs`` (B, ℓ_z), padded where ``z_valid`` is
    False, and ``xs`` (B, ℓ_x): logits ``(N_V, B, ℓ_x)``. The padded keys of each z are masked in
    encoder self-attention and in cross-attention, as :func:`~.training.ed_transformer_logits_padded`."""
    B, ell_z = zs.shape
    ell_x = xs.shape[1]
    Z = embed_columns(zs, theta.W_e, theta.W_p)  # lines 1-3
    attend = functools.partial(mh_attention_columns, B=B)  # Algorithm 5 per sequence block
    Mask_z = jnp.broadcast_to(z_valid[:, :, None], (B, ell_z, ell_z))  # key padding, per sequence

    # Lines 4 and 13: Python loops, as for Algorithm 10.
    for layer in theta.enc:  # line 4
        Z = post_ln_layer(Z, layer, Mask_z, activation, eps, attention=attend)  # lines 5-8
    X = embed_columns(xs, theta.W_e, theta.W_p)  # lines 10-12
    Mask, cross_Mask = (
        unidirectional_mask(ell_x),
        jnp.broadcast_to(z_valid[:, :, None], (B, ell_z, ell_x)),
    )

    for layer in theta.dec:  # line 13
        X = ed_decoder_layer(X, Z, layer, Mask, activation, eps, cross_Mask, attention=attend)
    return (unembedding_matrix(theta) @ X).reshape(-1, B, ell_x)  # line 21 (part: logits) [:, b, :]


def ed_transformer_logits_batch(
    zs, xs, theta: EDTransformerParams, *, z_valid=None, activation=relu, eps=EPS
):
    """Algorithm 8 up to its softmax for a batch, the batch as columns: equal to ``vmap(ed_transformer_logits_padded)(zs, z_valid, xs, θ)``, shape ``(B, N_V, ℓ_x)``.

    ``z_valid`` (optional, (B, ℓ_z) bool) marks the real tokens of each z, padded at its end;
    ``None``: every token is real (as ``valid`` of :func:`e_transformer_logits_batch`)."""
    _check_batches(ALG8, EDTransformerParams, theta, zs=zs, xs=xs)
    if z_valid is None:
        z_valid = jnp.ones(np.shape(zs), bool)
    if np.shape(z_valid) != np.shape(zs):
        fail(ALG8, "z_valid", f"must have the shape of zs {np.shape(zs)}, got {np.shape(z_valid)}")
    return jnp.moveaxis(_ed_logits_columns(zs, z_valid, xs, theta, activation, eps), 1, 0)


def ed_batch_stats_columns(theta, batch, *, activation=relu, eps=EPS) -> TokenStats:
    """The padded Algorithm 11 loss (:func:`~.training.ed_loss_padded`) summed over the rows of a
    batch (``z``, ``z_valid``, ``x``, ``x_valid``), computed with the batch as columns."""
    xs = batch["x"]
    logits = _ed_logits_columns(batch["z"], batch["z_valid"], xs, theta, activation, eps)
    rows = jax.vmap(token_stats, in_axes=(1, 0, 0))(
        logits[:, :, :-1], xs[:, 1:], batch["x_valid"][:, 1:]
    )
    return TokenStats(*(jnp.sum(s) for s in rows))


@functools.partial(jax.jit, static_argnames=("optimizer", "reduction", "activation", "eps"))
def train_step_fast(
    theta,
    opt_state,
    batch: dict,
    p_mask=0.15,
    *,
    optimizer,
    reduction="mean",
    activation=None,
    eps=EPS,
):
    """:func:`~.trainer.train_step` for Algorithm 10 (``batch`` with ``x``, ``valid``), Algorithm 9
    (``x``, ``valid``, ``key``; masked with probability ``p_mask``) or Algorithm 8 (``z``,
    ``z_valid``, ``x``, ``x_valid``), from :func:`~.trainer.make_batch`, the forward with the batch
    as columns. ``activation`` defaults to the algorithm's (GELU, GELU, ReLU). Returns
    ``(θ, opt_state, loss, stats)``, ``stats`` a :class:`~.update.StepStats`."""
    is_ed = isinstance(theta, EDTransformerParams)
    activation = activation or (relu if is_ed else gelu)

    def stats_of(th):
        if isinstance(th, DTransformerParams):
            return d_batch_stats_columns(
                th, batch["x"], batch["valid"], activation=activation, eps=eps
            )
        if isinstance(th, ETransformerParams):
            return e_batch_stats_columns(th, batch, p_mask, activation=activation, eps=eps)
        return ed_batch_stats_columns(th, batch, activation=activation, eps=eps)

    return optimizer_step(stats_of, theta, opt_state, optimizer, reduction)
