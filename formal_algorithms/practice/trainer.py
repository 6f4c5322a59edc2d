"""Paper §8, practical training: a minibatch trainer over the losses of Algorithms 11, 12 and 13.

The paper's training algorithms are per-sequence SGD; §8 names what is used in practice instead:
minibatches, better optimisers (Adam), learning-rate schedules, weight decay. This module adds
exactly those and nothing else; the loss of every sequence is still the paper's sum
(:mod:`formal_algorithms.training`), computed on sequences padded to a bucket with a validity mask.

- Which algorithm is trained follows from θ: ``DTransformerParams`` → Algorithm 13 (next token),
  ``ETransformerParams`` → Algorithm 12 (masked tokens), ``EDTransformerParams`` → Algorithm 11.
- A batch is ``batch_size`` sequences padded to one bucket (:func:`~.training.bucket_length` of
  the longest); a last, short batch is filled with empty rows (all invalid, weight 0), so every
  step has the same shape and :func:`train_step` compiles once per bucket. The batch's losses come
  from ``jax.vmap`` of the per-sequence padded losses.
- ``reduction="mean"`` (default): the loss is the batch's summed loss divided by its number of
  predicted tokens, i.e. the mean negative log-likelihood per token, so the learning rate does
  not depend on sequence length or batch size. ``reduction="sum"``: the paper's sum over the
  batch; with ``batch_size=1``, ``shuffle=False`` and ``optax.sgd(η)`` this is Algorithm 11, 12
  or 13 exactly.
- Randomness: ``key`` is split into a shuffling key and a masking key. Epoch i shuffles with
  ``fold_in(k_shuffle, i)``; Algorithm 12's masks use the keys of :func:`~.training.e_training`
  with ``k_mask`` (sequence n of epoch i: ``split(fold_in(k_mask, i), N_data)[n]``), so a run is
  deterministic given ``key``.

This module imports ``optax`` (the ``train`` extra); the core package does not.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..paper.checks import check_count, check_key, fail
from ..paper.functions import gelu, relu
from ..paper.normalisation import EPS
from ..paper.parameters import DTransformerParams, EDTransformerParams, ETransformerParams
from ..paper.training import (
    ALG11,
    ALG12,
    ALG13,
    TokenStats,
    bucket_length,
    check_data,
    check_p_mask,
    check_sequence,
    d_loss_padded,
    e_loss_padded,
    ed_loss_padded,
    mask_tokens,
    pad,
)
from ..paper.validation import check_params
from .fast import train_step_fast
from .update import optimizer_step

_ALGORITHM = {
    DTransformerParams: ALG13,
    ETransformerParams: ALG12,
    EDTransformerParams: ALG11,
}


def make_optimizer(
    learning_rate: float = 1e-3,
    *,
    N_steps: int | None = None,
    warmup_steps: int = 0,
    decay: str | None = "cosine",
    end_fraction: float = 0.1,
    weight_decay: float = 0.01,
    clip_norm: float | None = 1.0,
    b1: float = 0.9,
    b2: float = 0.99,
) -> optax.GradientTransformation:
    """AdamW with linear warmup, cosine or linear decay, and global-norm gradient clipping.

    The learning rate rises linearly from 0 to ``learning_rate`` over ``warmup_steps``, then decays
    (``"cosine"`` or ``"linear"``; ``None``: stays constant) to ``end_fraction · learning_rate`` at
    step ``N_steps``. Weight decay applies to matrices only (not to biases, γ, β). ``clip_norm``:
    the gradient's global norm is clipped to it first (``None``: no clipping).
    """
    _check_real("make_optimizer", "learning_rate", learning_rate, low=0, strict=True)
    _check_real("make_optimizer", "weight_decay", weight_decay, low=0)
    _check_real("make_optimizer", "end_fraction", end_fraction, low=0)
    _check_real("make_optimizer", "b1", b1, low=0, high=1)
    _check_real("make_optimizer", "b2", b2, low=0, high=1)
    if clip_norm is not None:
        _check_real("make_optimizer", "clip_norm", clip_norm, low=0, strict=True)
    check_count("make_optimizer", "warmup_steps", warmup_steps)
    if N_steps is not None:
        check_count("make_optimizer", "N_steps", N_steps, 1)
    if decay not in ("cosine", "linear", None):
        fail("make_optimizer", "decay", f"must be 'cosine', 'linear' or None, got {decay!r}")
    if decay is not None and (N_steps is None or N_steps <= warmup_steps):
        fail("make_optimizer", "N_steps", f"must exceed warmup_steps for a decay, got {N_steps}")
    end = end_fraction * learning_rate
    if decay == "cosine":
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, learning_rate, warmup_steps, N_steps, end
        )
    else:
        after = (
            optax.constant_schedule(learning_rate)
            if decay is None
            else optax.linear_schedule(learning_rate, end, N_steps - warmup_steps)
        )
        schedule = (
            optax.join_schedules(
                [optax.linear_schedule(0.0, learning_rate, warmup_steps), after], [warmup_steps]
            )
            if warmup_steps
            else after
        )
    adamw = optax.adamw(
        schedule,
        b1=b1,
        b2=b2,
        weight_decay=weight_decay,
        mask=lambda params: jax.tree.map(lambda a: a.ndim >= 2, params),
    )
    return adamw if clip_norm is None else optax.chain(optax.clip_by_global_norm(clip_norm), adamw)


# --------------------------------------------------------------------------------- one batch


def batch_stats(theta, batch: dict, p_mask=0.15, *, activation=None, eps=EPS) -> TokenStats:
    """The padded losses of a batch, summed over its rows (``jax.vmap`` of the per-sequence ones).

    ``batch`` (built by :func:`make_batch`): ``x``, ``valid`` of shape ``(B, ℓ)`` for Algorithms
    12 and 13, plus ``key`` ``(B,)`` for Algorithm 12's masks; ``z``, ``z_valid``, ``x``,
    ``x_valid`` for Algorithm 11.
    """
    activation = default_activation(theta, activation)
    kw = dict(activation=activation, eps=eps)
    if isinstance(theta, DTransformerParams):
        per_row = jax.vmap(lambda x, v: d_loss_padded(theta, x, v, **kw))(
            batch["x"], batch["valid"]
        )
    elif isinstance(theta, ETransformerParams):

        def row(key, x, valid):  # Algorithm 12, lines 4-9
            x_tilde = mask_tokens(key, x, theta, p_mask=p_mask, valid=valid)
            return e_loss_padded(theta, x_tilde, x, valid, **kw)

        per_row = jax.vmap(row)(batch["key"], batch["x"], batch["valid"])
    else:
        per_row = jax.vmap(lambda z, zv, x, xv: ed_loss_padded(theta, z, zv, x, xv, **kw))(
            batch["z"], batch["z_valid"], batch["x"], batch["x_valid"]
        )
    return TokenStats(*(jnp.sum(s) for s in per_row))


def _check_real(algorithm, name, value, *, low, high=None, strict=False):
    """A finite real number > low (``strict``) or >= low, and < high if given."""
    if isinstance(value, (bool, np.bool_, str, bytes)) or np.ndim(value) != 0:
        fail(algorithm, name, f"must be a real number, got {value!r}", TypeError)
    try:
        v = float(value)
    except (TypeError, ValueError):
        fail(algorithm, name, f"must be a real number, got {value!r}", TypeError)
    bad = (
        not math.isfinite(v) or v < low or (strict and v == low) or (high is not None and v >= high)
    )
    if bad:
        bounds = f"{'>' if strict else '>='} {low}" + ("" if high is None else f" and < {high}")
        fail(algorithm, name, f"must be a finite number {bounds}, got {value!r}")
    return v


class NonFiniteError(FloatingPointError):
    """The loss or a gradient became non-finite. ``step`` is the 1-based step at which it did;
    ``theta`` and ``opt_state`` are the last good ones: normally those before that step, or those
    one step earlier when the update before it already made θ non-finite (a NaN learning rate);
    ``completed`` is the number of steps in them (resume with ``start_step=completed``);
    ``history`` the losses of those steps."""

    def __init__(self, message, *, step, theta, opt_state, history, completed=None):
        super().__init__(message)
        self.step, self.theta, self.opt_state, self.history = step, theta, opt_state, history
        self.completed = step - 1 if completed is None else completed


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during training: ``theta`` and ``opt_state`` after the last completed step,
    ``completed`` its number (resume with ``start_step=completed``), ``history`` the losses.
    A ``KeyboardInterrupt``, so code that catches that still does."""

    def __init__(self, message, *, completed, theta, opt_state, history):
        super().__init__(message)
        self.completed, self.theta, self.opt_state = completed, theta, opt_state
        self.history = history


def all_finite(tree) -> bool:
    """Whether every leaf of ``tree`` is free of NaN and ±∞ (one host transfer per leaf)."""
    return all(
        np.isfinite(np.asarray(leaf)).all()
        for leaf in jax.tree_util.tree_leaves(tree)
        if np.issubdtype(np.asarray(leaf).dtype, np.inexact)
    )


@functools.partial(jax.jit, static_argnames=("optimizer", "reduction", "activation", "eps"))
def train_step(
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
    """One optimiser step on one batch: ``(θ, opt_state, loss, stats)``, ``stats`` a
    :class:`~.update.StepStats`. Jitted; it compiles once per batch shape (bucket) and optimiser."""

    def stats_of(th):
        return batch_stats(th, batch, p_mask, activation=activation, eps=eps)

    return optimizer_step(stats_of, theta, opt_state, optimizer, reduction)


@functools.partial(jax.jit, static_argnames=("activation", "eps"))
def _eval_step(theta, batch, p_mask, *, activation, eps):
    return batch_stats(theta, batch, p_mask, activation=activation, eps=eps)


def make_batch(theta, examples, rows, batch_size: int, keys=None) -> dict:
    """Pad ``examples[rows]`` to one bucket and fill up to ``batch_size`` with empty rows.

    ``examples``: int32 arrays (Algorithms 12, 13) or pairs ``(z, x)`` (Algorithm 11);
    ``keys``: one masking key per example (Algorithm 12).
    """
    ell_max = theta.W_p.shape[1]
    rows = list(rows)
    real = np.arange(batch_size) < len(rows)
    rows = rows + rows[:1] * (batch_size - len(rows))  # filler rows, made invalid below

    def padded(seqs):
        ell_pad = bucket_length(max(len(s) for s in seqs), ell_max)
        x, valid = (np.stack(a) for a in zip(*(pad(s, ell_pad) for s in seqs), strict=True))
        return x, valid & real[:, None]

    if isinstance(theta, EDTransformerParams):
        z, z_valid = padded([examples[r][0] for r in rows])
        x, x_valid = padded([examples[r][1] for r in rows])
        return dict(z=z, z_valid=z_valid, x=x, x_valid=x_valid)
    x, valid = padded([examples[r] for r in rows])
    batch = dict(x=x, valid=valid)
    if isinstance(theta, ETransformerParams):
        batch["key"] = keys[np.asarray(rows)]
    return batch


# ------------------------------------------------------------------------------ train, evaluate


def check_options(algorithm, optimizer, N_epochs, N_steps, batch_size, reduction, key, p_mask):
    """:func:`train`'s options (and every loop's built on it), each refused by name; returns
    p_mask as a float."""
    if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        fail(
            algorithm,
            "optimizer",
            f"must be an optax GradientTransformation (e.g. "
            f"make_optimizer(1e-3, N_steps=...)), got {optimizer!r}",
            TypeError,
        )
    check_run_length(algorithm, N_epochs, N_steps)
    check_batching(algorithm, batch_size, reduction)
    check_key(algorithm, key)
    return check_p_mask(algorithm, p_mask)


def train(
    theta,
    data,
    key,
    *,
    optimizer,
    N_epochs: int | None = None,
    N_steps: int | None = None,
    batch_size: int = 32,
    reduction: str = "mean",
    p_mask: float = 0.15,
    shuffle: bool = True,
    activation=None,
    eps=EPS,
    callback=None,
    opt_state=None,
    start_step: int = 0,
    return_opt_state: bool = False,
    fast: bool = False,
):
    """Minibatch training of θ on ``data`` with an optax ``optimizer`` (paper §8).

    ``data``: token sequences (Algorithms 12, 13) or pairs ``(z, x)`` (Algorithm 11), each at most
    ℓ_max long. Runs ``N_epochs`` passes, or ``N_steps`` optimiser steps (passes repeat as
    needed): exactly one of them, an integer >= 1. ``callback(step, loss, stats)`` is called after
    every step (e.g. a progress bar). Returns ``(θ, history)``, ``history`` the numpy array of the
    per-step losses (before each update), or ``(θ, history, opt_state)`` with
    ``return_opt_state=True``. Deterministic given ``key``.

    Resuming: ``train(θ_k, …, opt_state=opt_state_k, start_step=k)`` with the θ and optimizer state
    saved after step k skips the first k steps of the same data order and masks, so it ends with
    exactly the parameters of an uninterrupted run of the same ``N_steps``/``N_epochs``.

    If the loss or the gradient of step n becomes non-finite, raises :class:`NonFiniteError`
    naming n and carrying the last good θ and optimizer state.

    ``fast=True`` runs each step with :func:`.fast.train_step_fast` (the batch as columns of one
    matrix): the same batches, masks and mathematics, equal up to floating-point summation order
    (~1.4-1.6× faster on the GPT-2-like benchmark, docs/performance.md).
    """
    algorithm = check_theta(theta, "train")
    p_mask = check_options(
        algorithm, optimizer, N_epochs, N_steps, batch_size, reduction, key, p_mask
    )
    kw = dict(optimizer=optimizer, reduction=reduction, eps=eps)
    kw["activation"] = default_activation(theta, activation)
    step_fn = functools.partial(train_step_fast if fast else train_step, **kw)
    opt_state = optimizer.init(theta) if opt_state is None else opt_state
    examples = as_examples(algorithm, data, theta)
    loop = dict(N_epochs=N_epochs, N_steps=N_steps, batch_size=batch_size, shuffle=shuffle)
    loop.update(callback=callback, start_step=start_step)
    theta, opt_state, history = run_steps(
        algorithm, step_fn, theta, opt_state, examples, key, p_mask, **loop
    )
    return (theta, history, opt_state) if return_opt_state else (theta, history)


def check_run_length(algorithm, N_epochs, N_steps):
    """Exactly one of ``N_epochs`` and ``N_steps``, an integer >= 1 (a run of no step is a
    mistake; a resumed run that is done is ``start_step = N_steps``, not ``N_steps = 0``)."""
    if N_epochs is None and N_steps is None:
        fail(algorithm, "N_epochs", "and N_steps are both None; give one of them")
    if N_epochs is not None and N_steps is not None:
        fail(
            algorithm,
            "N_epochs",
            f"= {N_epochs!r} and argument 'N_steps' = {N_steps!r} are both given; give one of "
            "them (N_epochs passes over the data, or N_steps steps)",
        )
    for name, value in (("N_epochs", N_epochs), ("N_steps", N_steps)):
        if value is not None:
            check_count(algorithm, name, value, 1)


def _schedule(theta, N, key, N_epochs, N_steps, batch_size, shuffle, start_step):
    """``(step, rows, mask keys of the epoch)`` for every step after ``start_step``: epoch e
    visits the N examples in the order ``permutation(fold_in(k_shuffle, e))`` (or in order),
    the steps ≤ ``start_step`` skipped (their updates are in θ already)."""
    k_shuffle, k_mask = jax.random.split(key)
    step = epoch = 0
    while (N_epochs is None or epoch < N_epochs) and (N_steps is None or step < N_steps):
        fold = jax.random.fold_in(k_shuffle, epoch)
        order = np.asarray(jax.random.permutation(fold, N)) if shuffle else np.arange(N)
        keys = _mask_keys(theta, k_mask, epoch, N)  # masking keys (Algorithm 12), else None
        for start in range(0, N, batch_size):
            step += 1
            if step > start_step:
                yield step, order[start : start + batch_size], keys
            if N_steps is not None and step >= N_steps:
                return
        epoch += 1


def _diverged(algorithm, step, loss, stats, good, earlier, history, start_step):
    """The :class:`NonFiniteError` of a step with a non-finite loss or gradient. θ before this
    step is the last good one, unless the update before made it non-finite without a non-finite
    loss (a NaN learning rate): then the one before that."""
    last = good if good is earlier or all_finite(good[0]) else earlier
    return NonFiniteError(
        f"{algorithm}: step {step} gave loss {float(loss)} and gradient norm "
        f"{float(stats.grad_norm)}; the last good parameters (after step "
        f"{last[2]}) are attached (.theta, .opt_state)",
        step=step,
        theta=last[0],
        opt_state=last[1],
        completed=last[2],
        history=np.asarray(history[: last[2] - start_step]),
    )


def run_steps(
    algorithm,
    step_fn,
    theta,
    opt_state,
    examples,
    key,
    p_mask,
    *,
    N_epochs,
    N_steps,
    batch_size,
    shuffle=True,
    callback=None,
    start_step=0,
    place_batch=None,
):
    """The minibatch loop of :func:`train`, for any compiled step (e.g. a data-parallel one).

    ``step_fn(θ, opt_state, batch, p_mask) -> (θ, opt_state, loss, stats)`` as
    :func:`train_step`; ``place_batch(batch)`` puts each host batch where the step wants it
    (default: as is). Epoch e visits ``examples`` in the order ``permutation(fold_in(k_shuffle,
    e))`` (or in order without ``shuffle``), masking keys from ``k_mask``; steps ≤ ``start_step``
    are skipped (resuming). Returns ``(θ, opt_state, history)``; raises :class:`NonFiniteError`,
    and :class:`TrainingInterrupted` (with the last completed step's state) on Ctrl-C.
    """
    if len(examples) == 0:
        fail(algorithm, "data", "is empty")
    history = []
    # (θ, state, steps in them) after the last completed step and after the one before: each
    # written in one assignment, so that Ctrl-C between two statements never mixes two steps.
    good = earlier = (theta, opt_state, start_step)
    steps = _schedule(theta, len(examples), key, N_epochs, N_steps, batch_size, shuffle, start_step)
    try:
        for step, rows, keys in steps:
            batch = make_batch(theta, examples, rows, batch_size, keys)
            if place_batch is not None:
                batch = place_batch(batch)
            new_theta, new_opt_state, loss, stats = step_fn(theta, opt_state, batch, p_mask)
            if not (np.isfinite(loss) and np.isfinite(stats.grad_norm)):
                raise _diverged(algorithm, step, loss, stats, good, earlier, history, start_step)
            earlier, good = good, (new_theta, new_opt_state, step)
            theta, opt_state = new_theta, new_opt_state
            history.append(loss)
            if callback is not None:
                callback(step, loss, stats)
    except KeyboardInterrupt:
        theta, opt_state, completed = good
        raise TrainingInterrupted(
            f"{algorithm}: interrupted after step {completed}",
            completed=completed,
            theta=theta,
            opt_state=opt_state,
            history=np.asarray(jax.device_get(history[: completed - start_step])),
        ) from None
    history = np.asarray(jax.device_get(history)) if history else np.zeros(0)
    return theta, opt_state, history


class Evaluation(NamedTuple):
    """Held-out results: ``loss`` per predicted token (nats), ``accuracy`` (argmax = target),
    ``n_targets`` (the number of predicted tokens)."""

    loss: float
    accuracy: float
    n_targets: int


def evaluate(
    theta,
    data,
    key=None,
    *,
    batch_size: int = 64,
    p_mask: float = 0.15,
    activation=None,
    eps=EPS,
) -> Evaluation:
    """Mean held-out loss per predicted token (and argmax accuracy) of θ on ``data``.

    The predicted tokens are those of the algorithm's loss: every next token (Algorithms 11, 13),
    the masked tokens (Algorithm 12, which needs ``key``: sequence n is masked with
    ``split(key, N)[n]``).
    """
    algorithm = check_theta(theta, "evaluate")
    check_batching(algorithm, batch_size, "mean")
    if not len(data):
        fail(algorithm, "data", "is empty; there is nothing to evaluate")
    p_mask = check_p_mask(algorithm, p_mask)
    activation = default_activation(theta, activation)
    examples = as_examples(algorithm, data, theta)
    keys = None
    if isinstance(theta, ETransformerParams):
        if key is None:
            fail(algorithm, "key", "is required to draw the masks of Algorithm 12", TypeError)
        check_key(algorithm, key)
        keys = jax.random.split(key, len(examples))
    total = np.zeros(3)
    for start in range(0, len(examples), batch_size):
        rows = range(start, min(start + batch_size, len(examples)))
        batch = make_batch(theta, examples, rows, batch_size, keys)
        stats = _eval_step(theta, batch, p_mask, activation=activation, eps=eps)
        total += np.asarray(stats, dtype=np.float64)
    loss, n, correct = total
    return Evaluation(loss / max(n, 1), correct / max(n, 1), int(n))


# ------------------------------------------------------------------------------------ helpers


def check_theta(theta, name):
    algorithm = _ALGORITHM.get(type(theta))
    if algorithm is None:
        raise TypeError(
            f"{name}: argument 'theta' must be the parameters of Algorithm 8, 9 or 10, "
            f"got {type(theta)}"
        )
    check_params(theta, algorithm)
    return f"{name} ({algorithm})"


def check_batching(algorithm, batch_size, reduction):
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or batch_size < 1
    ):
        fail(algorithm, "batch_size", f"must be an integer >= 1, got {batch_size!r}")
    if reduction not in ("mean", "sum"):
        fail(algorithm, "reduction", f"must be 'mean' or 'sum', got {reduction!r}")


def default_activation(theta, activation):
    """The paper's activation unless overridden: ReLU for Algorithm 8, GELU for 9 and 10."""
    if activation is not None:
        return activation
    return relu if isinstance(theta, EDTransformerParams) else gelu


def as_examples(algorithm, data, theta):
    examples = []
    mask_token = theta.W_e.shape[1] - 3
    for n, item in enumerate(check_data(algorithm, data)):
        if isinstance(theta, EDTransformerParams):
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                fail(algorithm, f"data[{n}]", "must be a pair (z_n, x_n) of token sequences")
            examples.append(
                (
                    check_sequence(algorithm, f"data[{n}][0] (z_n)", item[0], theta),
                    check_sequence(algorithm, f"data[{n}][1] (x_n)", item[1], theta),
                )
            )
            continue
        x = check_sequence(algorithm, f"data[{n}]", item, theta)
        if isinstance(theta, ETransformerParams) and np.any(x == mask_token):
            fail(
                algorithm, f"data[{n}]", f"contains mask_token = {mask_token}, reserved for masking"
            )
        examples.append(x)
    return examples


def _mask_keys(theta, k_mask, epoch, N):
    if not isinstance(theta, ETransformerParams):
        return None
    return jax.random.split(jax.random.fold_in(k_mask, epoch), N)
