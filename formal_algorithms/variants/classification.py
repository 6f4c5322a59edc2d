"""Sequence classification on the paper's architectures: an extension beyond the paper.

The paper's §3 names classification (sentiment, spam) as a task of the encoder-only ETransformer
but gives no algorithm for it. This module adds the smallest one, in the style of §6-§7:

- **Head.** A classifier's θ is ``ClassifierParams(θ_body, W_c, b_c)``: the paper's θ of
  Algorithm 9 or 10 (the body), and ``W_c`` ``(N_C, d)``, ``b_c`` ``(N_C,)`` for N_C classes.
  On Algorithm 9 (BERT) the head reads the body's output column of the first token (``bos``, the
  position BERT calls [CLS]) after lines 1-11, i.e. Algorithm 9 without line 12's unembedding;
  on Algorithm 10 (GPT) it reads the column of the last token after lines 1-10 (the only column
  that has seen the whole sequence under the causal mask), i.e. Algorithm 10 without line 11:
  ``P̂(c | x) = softmax(W_c X[:, t*] + b_c)``, ``t* = 0`` (Algorithm 9) or ``ℓ − 1`` (Algorithm 10).
- **Loss.** ``loss(θ) = − log P̂(c | x)``: one term per sequence (:func:`c_loss`), the
  classification counterpart of Algorithm 13's line 5.
- **Training.** :func:`c_training` is Algorithms 11-13's loop for labelled pairs ``(x_n, c_n)``:
  for each epoch, for each pair, ``θ ← θ − η ∇loss(θ)`` (one jitted update per padded sequence).
  :func:`c_train` is the §8 form: minibatches, AdamW (:func:`~..practice.trainer.make_optimizer`),
  the mean loss over the batch, padded sequences in one bucket, the same shuffling convention as
  the practice trainer (epoch i visits ``permutation(fold_in(key, i), N)``).
- **Pretrain, then fine-tune** (Howard & Ruder 2018, ULMFiT; BERT, GPT): train the body as a
  language model first (Algorithm 13 or 12 on unlabelled text), then put a fresh head on it with
  ``init_classifier(key, θ̂, N_C)`` and train everything with :func:`c_train`. The command
  ``formal-algorithms finetune`` measures what that buys (docs/variants.md).

Padding: as in :mod:`..paper.training`, a sequence padded at its end with a validity mask gives
the logits of the unpadded sequence: Algorithm 9 masks padded keys in every attention and reads
column 0; Algorithm 10 is causal and reads the last *real* column.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..paper.architectures import key_padding_mask, post_ln_layer, pre_ln_layer
from ..paper.attention import unidirectional_mask
from ..paper.checks import check_key, check_tokens, check_valid, fail
from ..paper.embeddings import embed
from ..paper.functions import gelu, log_softmax
from ..paper.normalisation import EPS, layer_norm_columns
from ..paper.parameters import DTransformerParams, ETransformerParams
from ..paper.training import bucket_length, check_sequence, pad
from ..paper.validation import check_params

ALG = "Classification (an extension of Algorithms 9, 10 and 11-13)"


class ClassifierParams(NamedTuple):
    """θ of a classifier: the body (θ of Algorithm 9 or 10) and the head ``W_c``, ``b_c``."""

    theta: ETransformerParams | DTransformerParams
    W_c: jax.Array  # (N_C, d): d = d_f (Algorithm 9) or d_e (Algorithm 10)
    b_c: jax.Array  # (N_C,)


def init_classifier(key, theta, N_C: int) -> ClassifierParams:
    """A fresh head on the body θ: ``W_c ~ N(0, 1/d)`` (the library's weight init), ``b_c = 0``,
    in θ's dtype. θ may be freshly initialised (training from scratch) or pretrained."""
    _check_body(theta)
    if isinstance(N_C, bool) or not isinstance(N_C, (int, np.integer)) or N_C < 2:
        fail(ALG, "N_C", f"(number of classes) must be an integer >= 2, got {N_C!r}")
    d = theta.W_f.shape[0] if isinstance(theta, ETransformerParams) else theta.W_e.shape[0]
    dtype = theta.W_e.dtype
    W_c = jax.random.normal(key, (int(N_C), d), dtype) / jnp.sqrt(jnp.asarray(d, dtype))
    return ClassifierParams(theta, W_c, jnp.zeros(int(N_C), dtype))


# ------------------------------------------------------------------------------ the bodies


def e_features(x, theta: ETransformerParams, *, activation=gelu, eps=EPS, valid=None):
    """Lines 1-11 of Algorithm 9: the columns ``X`` ``(d_f, ℓ)`` that line 12 would unembed."""
    X = embed(x, theta.W_e, theta.W_p)  # lines 1-3
    Mask = key_padding_mask(valid, X.shape[1])
    for layer in theta.layers:  # line 4
        X = post_ln_layer(X, layer, Mask, activation, eps)  # lines 5-8
    X = activation(theta.W_f @ X + theta.b_f[:, None])  # line 10
    return layer_norm_columns(X, theta.gamma, theta.beta, eps)  # line 11


def d_features(x, theta: DTransformerParams, *, activation=gelu, eps=EPS):
    """Lines 1-10 of Algorithm 10: the columns ``X`` ``(d_e, ℓ)`` that line 11 would unembed."""
    X = embed(x, theta.W_e, theta.W_p)  # lines 1-3
    Mask = unidirectional_mask(X.shape[1])
    for layer in theta.layers:  # line 4
        X = pre_ln_layer(X, layer, Mask, activation, eps)  # lines 5-8
    return layer_norm_columns(X, theta.gamma, theta.beta, eps)  # line 10


# ------------------------------------------------------------------------------ head and loss


POOLINGS = ("token", "mean")


def classifier_logits(
    x, params: ClassifierParams, *, activation=gelu, eps=EPS, valid=None, pooling="token"
):
    """``W_c X[:, t*] + b_c`` ``(N_C,)``: the class logits of token sequence ``x``.

    ``pooling="token"``: Algorithm 9 body: ``t* = 0`` (the bos column); Algorithm 10 body: ``t*``
    the last real token (``ℓ − 1``, or the last True of ``valid`` for an x padded at its end).
    ``pooling="mean"``: the mean of the real columns instead of one column (the mean-pool part of
    ULMFiT's "concat pooling").
    """
    if pooling not in POOLINGS:
        fail(ALG, "pooling", f"must be one of {POOLINGS}, got {pooling!r}")
    _check_params(params)
    theta = params.theta
    check_tokens(ALG, "x", x, theta.W_e.shape[1], theta.W_p.shape[1])
    ell = x.shape[0]
    check_valid(ALG, "valid", valid, ell)
    if isinstance(theta, ETransformerParams):
        X = e_features(x, theta, activation=activation, eps=eps, valid=valid)
        t_star = 0
    else:
        X = d_features(x, theta, activation=activation, eps=eps)
        t_star = ell - 1 if valid is None else jnp.sum(valid) - 1
    if pooling == "token":
        h = X[:, t_star]
    else:
        weights = jnp.ones(ell, X.dtype) if valid is None else valid.astype(X.dtype)
        h = X @ weights / jnp.sum(weights)
    return params.W_c @ h + params.b_c


def c_loss(
    params: ClassifierParams, x, c, *, activation=gelu, eps=EPS, valid=None, pooling="token"
):
    """``loss(θ) = − log P̂(c | x) = − log softmax(W_c X[:, t*] + b_c)[c]`` for one sequence.

    ``c``: the class, an integer in ``[0, N_C)``; checked when concrete (JAX's indexing would
    clamp an id out of range into a finite, wrong loss)."""
    _check_params(params)
    check_class(c, params.W_c.shape[0])
    logits = classifier_logits(
        x, params, activation=activation, eps=eps, valid=valid, pooling=pooling
    )
    return -log_softmax(logits)[c]


def check_class(c, N_C: int, argument: str = "c") -> None:
    """A concrete class label is an integer in ``[0, N_C)`` (traced labels are the caller's)."""
    if isinstance(c, jax.core.Tracer):
        return
    value = np.asarray(c)
    if value.ndim != 0 or not np.issubdtype(value.dtype, np.integer) or value.dtype == bool:
        fail(ALG, argument, f"must be one integer class in [0, {N_C}), got {c!r}", TypeError)
    if not 0 <= int(value) < N_C:
        fail(
            ALG,
            argument,
            f"= {int(value)} is not a class: the head has N_C = {N_C} classes (0 … {N_C - 1})",
        )


# ------------------------------------------------------------------ per-sequence training (SGD)


@functools.partial(jax.jit, static_argnames=("activation", "eps", "pooling"))
def _c_update(params, x, valid, c, eta, *, activation, eps, pooling):
    def loss(p):
        return c_loss(p, x, c, activation=activation, eps=eps, valid=valid, pooling=pooling)

    grad = jax.grad(loss)(params)
    return jax.tree.map(lambda p, g: p - (eta * g).astype(p.dtype), params, grad)  # θ ← θ − η∇


def c_training(
    data,
    params: ClassifierParams,
    *,
    N_epochs: int,
    eta: float,
    activation=gelu,
    eps=EPS,
    pooling="token",
) -> ClassifierParams:
    """``θ̂ ← CTraining({(x_n, c_n)}_{n=1}^{N_data}, θ)``: per-sequence SGD, as Algorithms 11-13.

    ``data``: pairs ``(x_n, c_n)`` of a token sequence and a class in ``[0, N_C)``.
    ``for i = 1..N_epochs: for n = 1..N_data: θ ← θ − η ∇(− log P̂(c_n | x_n; θ))``.
    Each update is one jitted call on the sequence padded to its bucket.
    """
    _check_params(params)
    if isinstance(N_epochs, bool) or not isinstance(N_epochs, (int, np.integer)) or N_epochs < 0:
        fail(ALG, "N_epochs", f"must be an integer >= 0, got {N_epochs!r}")
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 < eta < float("inf"):
        fail(ALG, "eta", f"(η) must be a finite number > 0, got {eta!r}")
    examples = _labelled(data, params)
    ell_max = params.theta.W_p.shape[1]
    padded = [(*pad(x, bucket_length(len(x), ell_max)), c) for x, c in examples]
    for _i in range(N_epochs):  # line 1
        for x, valid, c in padded:  # line 2
            params = _c_update(
                params, x, valid, c, float(eta), activation=activation, eps=eps, pooling=pooling
            )
    return params


# ----------------------------------------------------------------------- minibatch training (§8)


def _batch_stats(params, x, valid, c, real, activation, eps, pooling):
    logits = jax.vmap(
        lambda x, v: classifier_logits(
            x, params, activation=activation, eps=eps, valid=v, pooling=pooling
        )
    )(x, valid)  # (B, N_C)
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits, axis=1), c[:, None], axis=1)[:, 0]
    correct = jnp.argmax(logits, axis=1) == c
    return jnp.sum(jnp.where(real, nll, 0)), jnp.sum(real), jnp.sum(real & correct)


@functools.partial(jax.jit, static_argnames=("optimizer", "activation", "eps", "pooling"))
def c_train_step(
    params, opt_state, batch: dict, *, optimizer, activation=gelu, eps=EPS, pooling="token"
):
    """One optimiser step on the batch's mean loss: ``(θ, opt_state, loss, n_correct)``."""
    import optax  # the train extra (as the practice trainer); the core package does not need it

    def loss(p):
        total, n, correct = _batch_stats(
            p, batch["x"], batch["valid"], batch["c"], batch["real"], activation, eps, pooling
        )
        return total / jnp.maximum(n, 1), correct

    (value, correct), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, value, correct


def _check_rows(examples, rows, batch_size) -> list:
    """``rows``: 1 to ``batch_size`` indices of ``examples`` (a bad one would be Python's
    IndexError, or a negative one a silent row from the end)."""
    name = "make_labelled_batch"
    if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)):
        fail(name, "batch_size", f"must be an integer >= 1, got {batch_size!r}", TypeError)
    if batch_size < 1:
        fail(name, "batch_size", f"must be an integer >= 1, got {batch_size!r}")
    rows = list(rows)
    index = np.asarray(rows)
    if index.ndim != 1 or index.size == 0 or not np.issubdtype(index.dtype, np.integer):
        fail(name, "rows", f"must be 1 or more integer indices of examples, got {rows!r}")
    bad = index[(index < 0) | (index >= len(examples))]
    if bad.size:
        fail(name, "rows", f"holds {bad[:5].tolist()}, outside [0, {len(examples)}) (the examples)")
    if len(rows) > batch_size:
        fail(name, "rows", f"has {len(rows)} rows, more than batch_size = {batch_size}")
    return [int(r) for r in rows]


def make_labelled_batch(examples, rows, batch_size: int, ell_max: int) -> dict:
    """``examples[rows]`` padded to one bucket, filled up to ``batch_size`` with rows marked not
    ``real`` (weight 0), so every step of a run has one shape."""
    rows = _check_rows(examples, rows, batch_size)
    real = np.arange(batch_size) < len(rows)
    rows = rows + rows[:1] * (batch_size - len(rows))
    ell_pad = bucket_length(max(len(examples[r][0]) for r in rows), ell_max)
    x, valid = (
        np.stack(a) for a in zip(*(pad(examples[r][0], ell_pad) for r in rows), strict=True)
    )
    c = np.asarray([examples[r][1] for r in rows], np.int32)
    return dict(x=x, valid=valid, c=c, real=real)


def c_train(
    params: ClassifierParams,
    data,
    key,
    *,
    optimizer,
    N_steps: int,
    batch_size: int = 32,
    activation=gelu,
    eps=EPS,
    pooling="token",
    callback=None,
):
    """Minibatch fine-tuning (paper §8's practice) of a classifier on pairs ``(x_n, c_n)``.

    ``optimizer``: an optax transformation, e.g. ``practice.trainer.make_optimizer(...)``. Runs
    ``N_steps`` steps; epoch i visits the data in the order ``permutation(fold_in(key, i), N)``.
    Returns ``(θ, history)``, history the per-step mean losses. Raises ``FloatingPointError``
    naming the step whose loss is not finite.
    """
    _check_params(params)
    check_key(ALG, key)
    for name, value in (("N_steps", N_steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            fail(ALG, name, f"must be an integer >= 1, got {value!r}")
    examples = _labelled(data, params)
    ell_max = params.theta.W_p.shape[1]
    opt_state = optimizer.init(params)
    history, step, epoch = [], 0, 0
    while step < N_steps:
        order = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), len(examples)))
        for start in range(0, len(examples), batch_size):
            batch = make_labelled_batch(
                examples, order[start : start + batch_size], batch_size, ell_max
            )
            params, opt_state, loss, _ = c_train_step(
                params,
                opt_state,
                batch,
                optimizer=optimizer,
                activation=activation,
                eps=eps,
                pooling=pooling,
            )
            step += 1
            if not np.isfinite(loss):
                raise FloatingPointError(f"{ALG}: step {step} gave loss {float(loss)}")
            history.append(loss)
            if callback is not None:
                callback(step, loss)
            if step >= N_steps:
                break
        epoch += 1
    return params, np.asarray(jax.device_get(history))


@functools.partial(jax.jit, static_argnames=("activation", "eps", "pooling"))
def _eval_batch(params, batch, *, activation, eps, pooling):
    return _batch_stats(
        params, batch["x"], batch["valid"], batch["c"], batch["real"], activation, eps, pooling
    )


def c_evaluate(
    params: ClassifierParams,
    data,
    *,
    batch_size: int = 64,
    activation=gelu,
    eps=EPS,
    pooling="token",
) -> tuple[float, float]:
    """``(mean loss, accuracy)`` of the classifier on labelled pairs ``(x_n, c_n)``."""
    _check_params(params)
    examples = _labelled(data, params)
    ell_max = params.theta.W_p.shape[1]
    total = np.zeros(3)
    for start in range(0, len(examples), batch_size):
        rows = range(start, min(start + batch_size, len(examples)))
        batch = make_labelled_batch(examples, rows, batch_size, ell_max)
        stats = _eval_batch(params, batch, activation=activation, eps=eps, pooling=pooling)
        total += np.asarray(stats, np.float64)
    loss, n, correct = total
    return loss / max(n, 1), correct / max(n, 1)


# ------------------------------------------------------------------------------ input checks


def _check_body(theta):
    if not isinstance(theta, (ETransformerParams, DTransformerParams)):
        fail(
            ALG,
            "theta",
            f"must be the θ of Algorithm 9 or 10, got {type(theta).__name__}",
            TypeError,
        )
    check_params(theta, ALG)


def _check_params(params):
    if not isinstance(params, ClassifierParams):
        fail(ALG, "params", f"must be ClassifierParams, got {type(params).__name__}", TypeError)
    _check_body(params.theta)
    d = params.theta.W_f if isinstance(params.theta, ETransformerParams) else params.theta.W_e
    d = d.shape[0]
    N_C = np.shape(params.b_c)[0] if np.ndim(params.b_c) == 1 else None
    if N_C is None or np.shape(params.W_c) != (N_C, d):
        fail(
            ALG,
            "params.W_c",
            f"has shape {np.shape(params.W_c)} and params.b_c "
            f"{np.shape(params.b_c)}; expected (N_C, {d}) and (N_C,)",
        )


def _labelled(data, params):
    if isinstance(data, (str, bytes)) or not hasattr(data, "__len__") or len(data) == 0:
        fail(ALG, "data", "must be a non-empty list of pairs (x_n, c_n)")
    N_C = params.b_c.shape[0]
    out = []
    for n, item in enumerate(data):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            fail(ALG, f"data[{n}]", "must be a pair (x_n, c_n) of a token sequence and a class")
        x = check_sequence(ALG, f"data[{n}][0] (x_n)", item[0], params.theta)
        c = item[1]
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or not 0 <= c < N_C:
            fail(ALG, f"data[{n}][1] (c_n)", f"must be a class in [0, N_C = {N_C}), got {c!r}")
        out.append((x, int(c)))
    return out
