"""One training loop for every run: paper §8's minibatch training (:func:`.trainer.train`) in
segments, a held-out evaluation after each, the best state marked, early stopping, resuming, and
the last good state handed back when the loss diverges or the user presses Ctrl-C.

:func:`fit` adds only what a managed run needs around the trainer: the steps are the trainer's,
resumed with its ``start_step``, so a run fitted in pieces ends with the parameters of one fitted
without stopping, bit for bit. What a run does with an evaluation (write checkpoints, print) is
its ``on_evaluation`` callback's business; the loop itself prints and writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ..paper.checks import fail
from . import trainer
from .trainer import NonFiniteError, TrainingInterrupted

NAME = "fit"


class Evaluated(NamedTuple):
    """What ``on_evaluation`` sees after each evaluation: θ and the optimizer state after ``step``
    steps, the per-step training losses so far (``history``), every evaluation so far (dicts with
    ``step``, ``train_loss`` the mean since the one before, ``held_out_loss``, ``accuracy``,
    ``n_targets``), whether this one is the best yet, and the run's status ("in progress",
    "finished" or "stopped early")."""

    theta: object
    opt_state: object
    step: int
    history: np.ndarray
    evals: list
    best: bool
    status: str


class Fitted(NamedTuple):
    """The end of :func:`fit`: θ, optimizer state, per-step losses, steps done, the evaluations,
    and whether early stopping ended it."""

    theta: object
    opt_state: object
    history: np.ndarray
    step: int
    evals: list
    stopped: bool


def no_improvement(evals, patience: int | None) -> bool:
    """Early stopping: the last ``patience`` evaluations all failed to improve on the best held-out
    loss before them (``None``: never stop)."""
    if not patience or len(evals) <= patience:
        return False
    best_before = min(e["held_out_loss"] for e in evals[:-patience])
    return all(e["held_out_loss"] >= best_before for e in evals[-patience:])


def _record(step, losses, result) -> dict:
    """An evaluation after ``step``: the mean training loss since the one before, and ``result``."""
    if not all(hasattr(result, field) for field in trainer.Evaluation._fields):
        fail(
            NAME,
            "evaluate",
            f"must return a trainer.Evaluation (loss, accuracy, n_targets), e.g. "
            f"trainer.evaluate(θ, held_out), got {type(result).__name__}",
            TypeError,
        )
    return dict(
        step=step,
        train_loss=float(np.mean(losses)),
        held_out_loss=float(result.loss),
        accuracy=float(result.accuracy),
        n_targets=int(result.n_targets),
    )


def _check_training(theta, data, key, optimizer, N_steps, batch_size, train, train_kw) -> None:
    """The trainer's own arguments, checked here so that a bad one is refused under ``fit``'s
    name: the options for every trainer, θ and the data for the default one (another trainer,
    e.g. one process's share of a data-parallel run, checks its own)."""
    reduction, p_mask = train_kw.get("reduction", "mean"), train_kw.get("p_mask", 0.15)
    if train is None:
        algorithm = trainer.check_theta(theta, NAME)
        if not trainer.as_examples(algorithm, data, theta):
            fail(algorithm, "data", "is empty; there is nothing to train on")
    else:
        algorithm = NAME
    trainer.check_options(algorithm, optimizer, None, N_steps, batch_size, reduction, key, p_mask)


def _check(N_steps, start_step, eval_every, patience, evaluate, train) -> None:
    for name, value, low in (
        ("N_steps", N_steps, 1),
        ("eval_every", eval_every, 1),
        ("start_step", start_step, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            fail(NAME, name, f"must be an integer >= {low}, got {value!r}")
    if start_step >= N_steps:
        fail(NAME, "start_step", f"= {start_step} leaves no step of N_steps = {N_steps} to run")
    if patience is not None and (not isinstance(patience, (int, np.integer)) or patience < 1):
        fail(NAME, "patience", f"must be None or an integer >= 1, got {patience!r}")
    if not callable(evaluate):
        fail(NAME, "evaluate", f"must be a function of θ, got {type(evaluate).__name__}", TypeError)
    if train is not None and not callable(train):
        fail(NAME, "train", f"must be None or a trainer, got {type(train).__name__}", TypeError)


def fit(
    theta,
    data,
    key,
    *,
    optimizer,
    N_steps: int,
    batch_size: int,
    evaluate: Callable,
    eval_every: int,
    patience: int | None = None,
    opt_state=None,
    start_step: int = 0,
    history=(),
    evals=(),
    on_evaluation: Callable | None = None,
    train: Callable | None = None,
    **train_kw,
) -> Fitted:
    """Train θ on ``data`` for steps ``start_step + 1 … N_steps``, evaluating every ``eval_every``
    steps and at the end: ``evaluate(θ)`` returns a :class:`.trainer.Evaluation` (lower loss is
    better), then ``on_evaluation(Evaluated(...))`` writes checkpoints and reports. ``patience``:
    stop once that many evaluations in a row fail to improve the best held-out loss. Resume with
    the θ, ``opt_state``, ``history`` and ``evals`` of step ``start_step``. ``train_kw`` go to
    ``train``, the trainer of each segment (default :func:`.trainer.train`; any function with its
    arguments and resumption, e.g. :func:`.parallel.data_parallel_train` with its mesh, wrapped
    in :func:`.distributed.gathered` across processes): ``callback``, ``fast``, ``p_mask``, ...

    A non-finite loss or gradient (:class:`.trainer.NonFiniteError`) or Ctrl-C, even between
    steps (:class:`.trainer.TrainingInterrupted`), raises an error carrying the last good θ and
    optimizer state, ``completed`` their steps and ``history`` all the run's per-step losses.
    """
    _check(N_steps, start_step, eval_every, patience, evaluate, train)
    _check_training(theta, data, key, optimizer, N_steps, batch_size, train, train_kw)
    opt_state = optimizer.init(theta) if opt_state is None else opt_state
    train = trainer.train if train is None else train
    history, evals = np.asarray(history, np.float32), list(evals)
    step, stopped = start_step, False
    loop = dict(optimizer=optimizer, batch_size=batch_size, return_opt_state=True, **train_kw)
    try:
        while step < N_steps and not stopped:
            end = min(N_steps, (step // eval_every + 1) * eval_every)
            segment = dict(N_steps=end, opt_state=opt_state, start_step=step, **loop)
            theta, losses, opt_state = train(theta, data, key, **segment)
            history, step = np.concatenate([history, np.asarray(losses, np.float32)]), end
            evals.append(_record(step, losses, evaluate(theta)))
            best = evals[-1]["held_out_loss"] <= min(e["held_out_loss"] for e in evals)
            stopped = no_improvement(evals, patience)
            status = "stopped early" if stopped else "in progress"
            status = "finished" if step >= N_steps else status
            if on_evaluation is not None:
                on_evaluation(Evaluated(theta, opt_state, step, history, evals, best, status))
    except (NonFiniteError, TrainingInterrupted) as error:  # inside a segment: the run's history
        error.history = np.concatenate([history, np.asarray(error.history, np.float32)])
        raise
    except KeyboardInterrupt:  # between segments: the state after the last one
        state = dict(completed=step, theta=theta, opt_state=opt_state, history=history)
        raise TrainingInterrupted(f"{NAME}: interrupted after step {step}", **state) from None
    return Fitted(theta, opt_state, history, step, evals, stopped)
