"""Paper §7, training: Algorithm 11 (EDTraining), 12 (ETraining), 13 (DTraining).

Three layers, from the paper's text to what runs fast:

1. Per-sequence losses as pure functions of θ, exactly line 5 (Alg 11, 13) and line 9 (Alg 12):
   :func:`ed_loss`, :func:`e_loss`, :func:`d_loss`. ``log P`` is computed as ``log_softmax`` of the
   architecture's logits ``W_u X``, which equals the paper's ``log softmax(W_u X)`` but never takes
   the log of an underflowed probability.
2. Their padded forms :func:`ed_loss_padded`, :func:`e_loss_padded`, :func:`d_loss_padded`: the same
   sums for a sequence padded at its end to a bucket length, with a boolean validity mask. They
   equal the unpadded losses (values and gradients) up to floating-point summation order:
   - Algorithm 10 (decoder, causal): a real position never attends to a later one, so padding at
     the end cannot reach it; only the padded targets are excluded from the sum.
   - Algorithm 9 (bidirectional): padding would change every attention context, so every attention
     gets ``Mask[t_z, t_x] = valid[t_z]`` (padded keys masked), see :func:`e_transformer_logits_padded`.
   - Algorithm 8: padded ``z`` keys are masked in encoder self-attention and in cross-attention,
     see :func:`ed_transformer_logits_padded`; ``x`` is decoded causally as in Algorithm 10.
3. The literal algorithms :func:`ed_training`, :func:`e_training`, :func:`d_training`: the paper's
   loops over epochs and sequences with ``θ ← θ − η ∇loss(θ)``, where each update is one jitted
   function of the padded sequence. Sequences are padded to :func:`bucket_length` (the next power of
   two, capped at ℓ_max), so the update compiles once per bucket, not once per sequence length.

Algorithm 12's coin flips (lines 4-6) use an explicit ``jax.random`` key: the key of epoch i
(0-based) is ``fold_in(key, i)``, split into one key per sequence; sequence n's key draws
``bernoulli(p_mask)`` for each of the ℓ_max positions of the model's context and position t uses
draw t (:func:`draw_mask`), so a sequence's mask does not depend on its padding or bucket.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .architectures import d_transformer_logits, e_transformer_logits, ed_transformer_logits
from .checks import (
    as_tokens,
    check_count,
    check_key,
    check_sizes,
    check_tokens,
    check_valid,
    concrete,
    fail,
)
from .functions import gelu, log_softmax, relu
from .normalisation import EPS
from .parameters import DTransformerParams, EDTransformerParams, ETransformerParams
from .validation import check_inputs, check_params

ALG11 = "EDTraining (Algorithm 11)"
ALG12 = "ETraining (Algorithm 12)"
ALG13 = "DTraining (Algorithm 13)"


# ------------------------------------------------------------------ per-sequence losses (line 5)


def ed_loss(theta: EDTransformerParams, z, x, *, eps=EPS):
    """Algorithm 11, lines 3-5: ``loss(θ) = − Σ_{t=1}^{ℓ−1} log P(θ)[x[t+1], t]``.

    0-based: ``− Σ_{t=0}^{ℓ−2} log P[x[t+1], t]`` with ``P = EDTransformer(z, x | θ)``: column t
    predicts the next token ``x[t+1]``. A pure function of θ; ``jax.grad`` gives line 6's gradient.
    """
    z, x = check_inputs(theta, ALG11, EDTransformerParams, z=z, x=x)
    check_has_next(ALG11, "x", x)
    ell = x.shape[0]  # line 3
    log_P = log_softmax(ed_transformer_logits(z, x, theta, eps=eps))  # line 4 (part: log_P)
    P = jnp.exp(log_P)  # line 4: P(θ), for the trace (the loss reads log P)  # noqa: F841
    return -jnp.sum(log_P[x[1:], jnp.arange(ell - 1)])  # line 5


def e_loss(theta: ETransformerParams, x_tilde, x, *, activation=gelu, eps=EPS):
    """Algorithm 12, lines 7-9: ``loss(θ) = − Σ_{t ∈ T̃} log P(θ)[x[t], t]``.

    ``x_tilde``: the masked sequence x̃ (line 5); ``x``: the original. ``T̃ = {t : x̃[t] = mask_token}``
    (line 7) with ``mask_token = N_V − 3``; ``P = ETransformer(x̃ | θ)`` (line 8).
    """
    x_tilde, x = check_inputs(theta, ALG12, ETransformerParams, x_tilde=x_tilde, x=x)
    N_V = theta.W_e.shape[1]
    if x.shape != x_tilde.shape:
        fail(ALG12, "x", f"has shape {x.shape} but x_tilde has {x_tilde.shape}")
    ell = x.shape[0]  # line 3
    T_tilde = x_tilde == N_V - 3  # line 7
    logits = e_transformer_logits(x_tilde, theta, activation=activation, eps=eps)
    log_P = log_softmax(logits)  # line 8 (part: log_P)
    P = jnp.exp(log_P)  # line 8: P(θ), for the trace (the loss reads log P)  # noqa: F841
    return -jnp.sum(jnp.where(T_tilde, log_P[x, jnp.arange(ell)], 0))  # line 9


def d_loss(theta: DTransformerParams, x, *, activation=gelu, eps=EPS):
    """Algorithm 13, lines 3-5: ``loss(θ) = − Σ_{t=1}^{ℓ−1} log P(θ)[x[t+1], t]``.

    0-based: ``− Σ_{t=0}^{ℓ−2} log P[x[t+1], t]`` with ``P = DTransformer(x | θ)``.
    """
    (x,) = check_inputs(theta, ALG13, DTransformerParams, x=x)
    check_has_next(ALG13, "x", x)
    ell = x.shape[0]  # line 3
    logits = d_transformer_logits(x, theta, activation=activation, eps=eps)
    log_P = log_softmax(logits)  # line 4 (part: log_P)
    P = jnp.exp(log_P)  # line 4: P(θ), for the trace (the loss reads log P)  # noqa: F841
    return -jnp.sum(log_P[x[1:], jnp.arange(ell - 1)])  # line 5


# ------------------------------------------------------------------------------ padded losses


class TokenStats(NamedTuple):
    """A padded loss: ``loss`` (the paper's sum), ``n_targets`` (its number of terms), ``n_correct``
    (terms whose target is the argmax of its column)."""

    loss: jax.Array
    n_targets: jax.Array
    n_correct: jax.Array


def token_stats(logits, targets, weights):
    """``− Σ_j weights[j] · log softmax(logits)[targets[j], j]`` and counts, column j predicting
    ``targets[j]``. Excluded terms go through ``where`` (not a multiplication by 0), so they
    contribute exactly 0 to the value and to the gradient."""
    log_P = log_softmax(logits)
    log_p = log_P[targets, jnp.arange(targets.shape[0])]
    correct = jnp.argmax(logits, axis=0) == targets
    return TokenStats(
        jnp.sum(jnp.where(weights, -log_p, 0)),
        jnp.sum(weights),
        jnp.sum(weights & correct),
    )


def e_transformer_logits_padded(x, valid, theta: ETransformerParams, *, activation=gelu, eps=EPS):
    """Algorithm 9 up to its softmax, for ``x`` padded at the end; ``valid[t]`` is True for real t.

    Lines 5-8 run with ``Mask = key_padding_mask(valid)`` instead of ``Mask ≡ 1``, so the columns of
    real tokens equal those of the unpadded ``e_transformer_logits(x[valid])``. Columns at padded
    positions are computed but meaningless.
    """
    _check_padded(ALG12, ETransformerParams, theta, x=(x, valid))
    return e_transformer_logits(x, theta, activation=activation, eps=eps, valid=valid)


def ed_transformer_logits_padded(
    z, z_valid, x, theta: EDTransformerParams, *, activation=relu, eps=EPS
):
    """Algorithm 8 up to its softmax, for ``z`` and ``x`` padded at their ends.

    Padded keys of ``z`` are masked in encoder self-attention (line 5) and in cross-attention
    (line 16); ``x`` needs no mask beyond line 14's causal one. Columns of real ``x`` tokens equal
    those of the unpadded ``ed_transformer_logits``. ``activation`` is the paper's ReLU by default.
    """
    _check_padded(ALG11, EDTransformerParams, theta, z=(z, z_valid), x=(x, None))
    return ed_transformer_logits(z, x, theta, activation=activation, eps=eps, z_valid=z_valid)


def d_loss_padded(theta: DTransformerParams, x, valid, *, activation=gelu, eps=EPS) -> TokenStats:
    """:func:`d_loss` for ``x`` padded at its end: the terms ``t`` with ``valid[t+1]`` only.

    Algorithm 10 is causal, so the forward pass needs no padding mask: padding at the end never
    reaches a real position.
    """
    _check_padded(ALG13, DTransformerParams, theta, x=(x, valid))
    logits = d_transformer_logits(x, theta, activation=activation, eps=eps)
    return token_stats(logits[:, :-1], x[1:], valid[1:])


def e_loss_padded(
    theta: ETransformerParams, x_tilde, x, valid, *, activation=gelu, eps=EPS
) -> TokenStats:
    """Algorithm 12, lines 7-9 (:func:`e_loss`) for ``x̃``, ``x`` padded at their ends: ``T̃``
    restricted to real positions."""
    _check_padded(ALG12, ETransformerParams, theta, x=(x, valid))  # the targets
    logits = e_transformer_logits_padded(x_tilde, valid, theta, activation=activation, eps=eps)
    return token_stats(logits, x, masked_positions(theta, x_tilde, valid))  # sum and count


def masked_positions(theta: ETransformerParams, x_tilde, valid):
    """Algorithm 12, line 7: ``T̃``, the real positions of ``x̃`` that hold the mask token."""
    return (x_tilde == theta.W_e.shape[1] - 3) & valid


def ed_loss_padded(
    theta: EDTransformerParams, z, z_valid, x, x_valid, *, activation=relu, eps=EPS
) -> TokenStats:
    """:func:`ed_loss` for ``z`` and ``x`` padded at their ends."""
    _check_padded(ALG11, EDTransformerParams, theta, x=(x, x_valid))  # the targets' padding
    logits = ed_transformer_logits_padded(z, z_valid, x, theta, activation=activation, eps=eps)
    return token_stats(logits[:, :-1], x[1:], x_valid[1:])


# ------------------------------------------------------------------------ padding and buckets


def bucket_length(ell: int, ell_max: int) -> int:
    """The padded length of a sequence of length ℓ: the next power of two ≥ ℓ, at most ℓ_max."""
    return min(1 << max(ell - 1, 0).bit_length(), ell_max)


def pad(x, ell_pad: int, fill: int = 0):
    """``(x_padded, valid)``: ``x`` followed by ``fill`` up to length ``ell_pad``, numpy int32/bool.

    ``fill`` must be a valid token id (its value never matters; tests check that).
    """
    x = np.asarray(x, np.int32)
    ell = x.shape[0]
    if ell > ell_pad:
        raise ValueError(f"pad: argument 'x' has length {ell} > ell_pad = {ell_pad}")
    valid = np.arange(ell_pad) < ell
    return np.concatenate([x, np.full(ell_pad - ell, fill, np.int32)]), valid


def draw_mask(key, ell: int, p_mask, ell_max: int):
    """Algorithm 12, lines 4-6's coin flips: ``masked[t]`` is True with probability ``p_mask``.

    One Bernoulli draw per position of the model's context (ℓ_max of them) from ``key``; the first
    ℓ are used. So position t's draw depends only on the key and t, never on the padding.
    """
    check_key(ALG12, key)
    check_sizes(ALG12, ell_max=ell_max)
    check_count(ALG12, "ell", ell, minimum=1)
    if ell > ell_max:
        fail(ALG12, "ell", f"= {ell} > ell_max = {ell_max}: one coin per position of the context")
    if not isinstance(p_mask, jax.core.Tracer):  # a traced p_mask was checked by its caller
        check_p_mask(ALG12, p_mask)
    return jax.random.bernoulli(key, p_mask, (ell_max,))[:ell]


def mask_tokens(key, x, theta: ETransformerParams, *, p_mask, valid=None):
    """Algorithm 12, lines 4-6: ``x̃[t] ← mask_token`` with probability ``p_mask``, else ``x[t]``.

    θ's model fixes the mask token (id N_V − 3, as :func:`e_loss` reads it) and ℓ_max (one coin
    per context position, :func:`draw_mask`). ``valid`` (padded input): padded positions are never
    masked.
    """
    x = as_tokens(x)
    _check_padded(ALG12, ETransformerParams, theta, x=(x, valid))
    N_V, ell_max = theta.W_e.shape[1], theta.W_p.shape[1]
    mask_token = N_V - 3
    masked = draw_mask(key, x.shape[0], p_mask, ell_max)
    if valid is not None:
        masked = masked & valid
    return jnp.where(masked, mask_token, x)


# ------------------------------------------------------------------------- jitted SGD updates


def _sgd(theta, grad, eta):
    """Line 6 / line 10: ``θ ← θ − η · ∇loss(θ)``, leaf by leaf, in each leaf's own dtype."""
    return jax.tree.map(lambda p, g: p - (eta * g).astype(p.dtype), theta, grad)


@functools.partial(jax.jit, static_argnames=("activation", "eps"))
def _ed_update(theta, z, z_valid, x, x_valid, eta, *, activation, eps):
    """Algorithm 11, lines 3-6 for one (padded) sequence: one SGD step."""

    def loss(th):  # lines 3-5
        return ed_loss_padded(th, z, z_valid, x, x_valid, activation=activation, eps=eps).loss

    return _sgd(theta, jax.grad(loss)(theta), eta)  # line 6


@functools.partial(jax.jit, static_argnames=("activation", "eps"))
def _e_update(theta, key, x, valid, eta, p_mask, *, activation, eps):
    """Algorithm 12, lines 4-10 for one (padded) sequence: one SGD step."""

    x_tilde = mask_tokens(key, x, theta, p_mask=p_mask, valid=valid)  # lines 4-6

    def loss(th):  # lines 7-9
        return e_loss_padded(th, x_tilde, x, valid, activation=activation, eps=eps).loss

    return _sgd(theta, jax.grad(loss)(theta), eta)  # line 10


@functools.partial(jax.jit, static_argnames=("activation", "eps"))
def _d_update(theta, x, valid, eta, *, activation, eps):
    """Algorithm 13, lines 3-6 for one (padded) sequence: one SGD step."""

    def loss(th):  # lines 3-5
        return d_loss_padded(th, x, valid, activation=activation, eps=eps).loss

    return _sgd(theta, jax.grad(loss)(theta), eta)  # line 6


# ------------------------------------------------------------------------ the literal algorithms


def ed_training(
    data, theta: EDTransformerParams, *, N_epochs: int, eta: float, eps=EPS, activation=relu
):
    """Algorithm 11, ``θ̂ ← EDTraining({(z_n, x_n)}_{n=1}^{N_data}, θ)``: per-sequence SGD.

    ``data``: a sequence of pairs ``(z_n, x_n)`` of 1-D token-id arrays (each at most ℓ_max long).
    Hyperparameters ``N_epochs`` (integer ≥ 0) and ``η`` (``eta`` > 0). Returns θ̂. Each update
    (lines 3-6) is one jitted call on the pair padded to its buckets (:func:`ed_loss_padded`).
    ``activation`` (an extension; Algorithm 8 fixes ReLU) and ``eps`` (layer norm) are passed on.
    """
    check_params(theta, ALG11, EDTransformerParams)
    N_epochs, eta = _check_hyperparameters(ALG11, N_epochs, eta)
    pairs = []
    for n, pair in enumerate(check_data(ALG11, data)):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            fail(ALG11, f"data[{n}]", "must be a pair (z_n, x_n) of token sequences")
        z = check_sequence(ALG11, f"data[{n}][0] (z_n)", pair[0], theta)
        x = check_sequence(ALG11, f"data[{n}][1] (x_n)", pair[1], theta, predicts_next=True)
        pairs.append((*_bucketed(z, theta), *_bucketed(x, theta)))
    for _i in range(N_epochs):  # line 1
        for z, z_valid, x, x_valid in pairs:  # line 2
            theta = _ed_update(
                theta, z, z_valid, x, x_valid, eta, activation=activation, eps=eps
            )  # lines 3-6
    return theta  # line 9


def e_training(
    data,
    theta: ETransformerParams,
    key,
    *,
    N_epochs: int,
    eta: float,
    p_mask: float,
    activation=gelu,
    eps=EPS,
):
    """Algorithm 12, ``θ̂ ← ETraining({x_n}_{n=1}^{N_data}, θ)``: masked language modelling.

    ``key``: a ``jax.random`` key for line 5's draws; epoch i uses ``fold_in(key, i)``, split into
    one key per sequence (:func:`draw_mask`). Hyperparameters ``N_epochs``, ``η`` (``eta`` > 0) and
    ``p_mask`` ∈ (0, 1). The sequences must not contain ``mask_token`` (it is reserved for line 5).
    A draw that masks nothing gives an empty sum, a zero gradient and no change (as printed).
    """
    check_params(theta, ALG12, ETransformerParams)
    N_epochs, eta = _check_hyperparameters(ALG12, N_epochs, eta)
    p_mask = check_p_mask(ALG12, p_mask)
    check_key(ALG12, key)
    mask_token = theta.W_e.shape[1] - 3
    seqs = []
    for n, x in enumerate(check_data(ALG12, data)):
        x = check_sequence(ALG12, f"data[{n}]", x, theta)
        if np.any(x == mask_token):
            fail(ALG12, f"data[{n}]", f"contains mask_token = {mask_token}, reserved for masking")
        seqs.append(_bucketed(x, theta))
    for i in range(N_epochs):  # line 1
        keys = jax.random.split(jax.random.fold_in(key, i), len(seqs)) if seqs else []
        for k, (x, valid) in zip(keys, seqs, strict=True):  # line 2
            theta = _e_update(
                theta, k, x, valid, eta, p_mask, activation=activation, eps=eps
            )  # lines 3-10
    return theta  # line 13


def d_training(
    data, theta: DTransformerParams, *, N_epochs: int, eta: float, activation=gelu, eps=EPS
):
    """Algorithm 13, ``θ̂ ← DTraining({x_n}_{n=1}^{N_data}, θ)``: next-token prediction by SGD.

    ``data``: a sequence of 1-D token-id arrays (each at most ℓ_max long). Hyperparameters
    ``N_epochs`` (integer ≥ 0) and ``η`` (``eta`` > 0). Returns θ̂. ``activation`` (default the
    paper's GELU) and ``eps`` are passed to Algorithm 10. Each update (lines 3-6) is one jitted
    call on the sequence padded to its bucket (:func:`d_loss_padded`).
    """
    check_params(theta, ALG13, DTransformerParams)
    N_epochs, eta = _check_hyperparameters(ALG13, N_epochs, eta)
    seqs = [
        _bucketed(check_sequence(ALG13, f"data[{n}]", x, theta, predicts_next=True), theta)
        for n, x in enumerate(check_data(ALG13, data))
    ]
    for _i in range(N_epochs):  # line 1
        for x, valid in seqs:  # line 2
            theta = _d_update(theta, x, valid, eta, activation=activation, eps=eps)  # lines 3-6
    return theta  # line 9


# ---------------------------------------------------------------------------------- input checks


def _check_hyperparameters(algorithm, N_epochs, eta):
    if isinstance(N_epochs, bool) or not isinstance(N_epochs, (int, np.integer)) or N_epochs < 0:
        fail(algorithm, "N_epochs", f"must be an integer >= 0, got {N_epochs!r}")
    try:
        eta_f = float(eta)
    except (TypeError, ValueError):
        fail(algorithm, "eta", f"must be a number, got {eta!r}", TypeError)
    if isinstance(eta, bool) or not math.isfinite(eta_f) or eta_f <= 0:
        fail(algorithm, "eta", f"(η) must be a finite number > 0, got {eta!r}")
    # A Python float is weakly typed under jit: θ keeps its dtype and η never retraces.
    return int(N_epochs), eta_f


def check_p_mask(algorithm, p_mask):
    try:
        p = float(p_mask)
    except (TypeError, ValueError):
        fail(algorithm, "p_mask", f"must be a number, got {p_mask!r}", TypeError)
    if isinstance(p_mask, bool) or not 0 < p < 1:
        fail(algorithm, "p_mask", f"must be in the open interval (0, 1), got {p_mask!r}")
    return p


def check_data(algorithm, data):
    if isinstance(data, (str, bytes)) or not hasattr(data, "__len__"):
        fail(
            algorithm, "data", f"must be a list of training sequences, got {type(data)}", TypeError
        )
    if len(data) == 0:
        fail(algorithm, "data", "is empty; training needs at least one sequence (N_data >= 1)")
    return data


def check_sequence(algorithm, name, x, theta, *, predicts_next=False):
    """A training sequence; ``predicts_next`` where the loss predicts each next token
    (Algorithms 11, 13: :func:`check_has_next`)."""
    x = np.asarray(x)
    check_tokens(algorithm, name, x, theta.W_e.shape[1], theta.W_p.shape[1])
    if predicts_next:
        check_has_next(algorithm, name, x)
    return x.astype(np.int32)


def check_has_next(algorithm, name, x):
    """A sequence whose loss predicts ``x[t+1]`` from ``x[:t+1]`` has at least 2 tokens: one
    token has nothing to predict, so its loss would be an empty sum (a guard beyond the paper)."""
    if np.shape(x)[0] < 2:
        message = "the loss predicts x[t+1] from x[:t+1], so it needs at least 2 tokens"
        fail(algorithm, name, f"has length {np.shape(x)[0]}; {message}")


def _bucketed(x, theta):
    return pad(x, bucket_length(x.shape[0], theta.W_p.shape[1]))


def _check_padded(algorithm, expected, theta, **sequences):
    """Token checks for padded input, and (on concrete input) that padding is at the end only."""
    check_params(theta, algorithm, expected)
    N_V, ell_max = theta.W_e.shape[1], theta.W_p.shape[1]
    for name, (x, valid) in sequences.items():
        check_tokens(algorithm, name, x, N_V, ell_max)
        if valid is None:
            continue
        check_valid(algorithm, f"{name}_valid", valid, x.shape[0])
        v = concrete(valid)
        if v is not None and np.any(v[1:] & ~v[:-1]):
            fail(algorithm, f"{name}_valid", "must be True…True False…False (padding at the end)")
