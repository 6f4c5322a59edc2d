"""The one training loop (``practice.fit``): fitting in segments with evaluations equals one
uninterrupted trainer run bit for bit, resuming from any evaluation equals not stopping, early
stopping counts evaluations without improvement, divergence or Ctrl-C hand back the run's last
good state with its whole loss history, and a given trainer (``train=``) fits the segments."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import formal_algorithms as fa
from formal_algorithms.practice import distributed, parallel, trainer
from formal_algorithms.practice.fit import fit, no_improvement

theta0 = fa.init_d_transformer(
    jax.random.key(0), N_V=12, ell_max=8, L=1, H=2, d_e=8, d_mlp=16, dtype=jnp.float32
)
rng = np.random.default_rng(1)
data = [jnp.asarray(rng.integers(0, 9, n)) for n in (8, 5, 7, 8, 3, 6, 8, 4, 8, 2)]
held = [jnp.asarray(rng.integers(0, 9, n)) for n in (8, 6, 7)]
key = jax.random.key(7)
opt = trainer.make_optimizer(3e-3, N_steps=7, warmup_steps=2, clip_norm=1.0)
KW = dict(optimizer=opt, N_steps=7, batch_size=3)


def leaves_equal(a, b):
    return all(
        np.array_equal(x, y)
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


def held_out(theta):
    return trainer.evaluate(theta, held, batch_size=3)


@pytest.fixture(scope="module")
def fitted():
    seen = []
    result = fit(theta0, data, key, **KW, evaluate=held_out, eval_every=3,
                 on_evaluation=seen.append)  # fmt: skip
    return result, seen


def test_fitting_in_segments_equals_one_trainer_run(fitted):
    result, seen = fitted
    full, full_history = trainer.train(theta0, data, key, **KW)
    assert leaves_equal(result.theta, full)  # bit-exact: the segments are the trainer's resumption
    np.testing.assert_array_equal(result.history, full_history)
    assert [e["step"] for e in result.evals] == [3, 6, 7] and result.step == 7
    assert [s.status for s in seen] == ["in progress", "in progress", "finished"]
    assert not result.stopped
    # each evaluation is the trainer's evaluation of the θ it was given, and its mean loss
    last = trainer.evaluate(full, held, batch_size=3)
    assert result.evals[-1]["held_out_loss"] == pytest.approx(float(last.loss), rel=1e-6)
    assert result.evals[-1]["train_loss"] == pytest.approx(float(full_history[6:].mean()))
    assert result.evals[0]["train_loss"] == pytest.approx(float(full_history[:3].mean()))
    losses = [e["held_out_loss"] for e in result.evals]
    assert [s.best for s in seen] == [h <= min(losses[: i + 1]) for i, h in enumerate(losses)]


def test_resuming_from_an_evaluation_equals_not_stopping(fitted):
    result, seen = fitted
    at3 = seen[0]
    resumed = fit(at3.theta, data, key, **KW, evaluate=held_out, eval_every=3,
                  opt_state=at3.opt_state, start_step=3, history=at3.history,
                  evals=at3.evals[:1])  # fmt: skip
    assert leaves_equal(resumed.theta, result.theta)
    np.testing.assert_array_equal(resumed.history, result.history)
    assert [e["step"] for e in resumed.evals] == [3, 6, 7]


def test_early_stopping_counts_evaluations_without_improvement():
    losses = iter([3.0, 2.0, 2.5, 2.6, 1.0])

    def scripted(theta):
        return trainer.Evaluation(next(losses), 0.5, 10)

    result = fit(theta0, data, key, optimizer=opt, N_steps=7, batch_size=3, evaluate=scripted,
                 eval_every=1, patience=2)  # fmt: skip
    assert result.stopped and result.step == 4 and len(result.history) == 4
    evals = [dict(held_out_loss=h) for h in (3.0, 2.0, 2.5)]
    assert not no_improvement(evals, 2) and no_improvement([*evals, {"held_out_loss": 2.6}], 2)
    assert not no_improvement([*evals, {"held_out_loss": 2.6}], None)


def test_ctrl_c_during_an_evaluation_hands_back_the_state_after_the_segment():
    calls = []

    def interrupted(theta):
        calls.append(theta)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return held_out(theta)

    with pytest.raises(trainer.TrainingInterrupted) as info:
        fit(theta0, data, key, **KW, evaluate=interrupted, eval_every=2)
    error = info.value
    assert error.completed == 4 and len(error.history) == 4
    assert leaves_equal(error.theta, calls[1])
    assert isinstance(error, KeyboardInterrupt)  # code that catches Ctrl-C still does


def test_divergence_carries_the_whole_history():
    with pytest.raises(trainer.NonFiniteError) as info:
        fit(theta0, data, key, optimizer=optax.sgd(1e30), N_steps=5, batch_size=3,
            evaluate=held_out, eval_every=1)  # fmt: skip
    error = info.value  # step 1 evaluated fine, step 2's loss is NaN: the history is step 1's
    assert error.step == 2 and error.completed == 1 and len(error.history) == 1


@pytest.mark.parametrize(
    "kw, pattern",
    [
        (dict(eval_every=0), r"fit: argument 'eval_every' must be an integer >= 1, got 0"),
        (dict(start_step=7), r"'start_step' = 7 leaves no step of N_steps = 7"),
        (dict(patience=0), r"'patience' must be None or an integer >= 1, got 0"),
        (dict(evaluate=None), r"'evaluate' must be a function of θ, got NoneType"),
        (dict(train=3), r"fit: argument 'train' must be None or a trainer, got int"),
    ],
)
def test_bad_arguments_name_fit_and_the_argument(kw, pattern):
    args = dict(evaluate=held_out, eval_every=3, **KW)
    args.update(kw)
    with pytest.raises((ValueError, TypeError), match=pattern):
        fit(theta0, data, key, **args)


def test_a_given_trainer_fits_every_segment():
    """``train=``: here the data-parallel trainer (one device) with its results gathered to the
    host (practice.distributed.gathered), as the command line's runs of several processes use it;
    ``fast`` goes through to it. Equal to the one-device fast trainer up to summation order."""
    segments = []
    data_parallel = distributed.gathered(
        functools.partial(parallel.data_parallel_train, mesh=parallel.data_mesh())
    )

    def recorded(*args, **kw):
        segments.append((kw["start_step"], kw["N_steps"], kw["fast"]))
        return data_parallel(*args, **kw)

    result = fit(theta0, data, key, **KW, evaluate=held_out, eval_every=3, train=recorded,
                 fast=True)  # fmt: skip
    assert segments == [(0, 3, True), (3, 6, True), (6, 7, True)]
    assert all(isinstance(a, np.ndarray) for a in jax.tree.leaves(result.theta))  # host copies
    full, full_history = trainer.train(theta0, data, key, **KW, fast=True)
    for a, b in zip(jax.tree.leaves(result.theta), jax.tree.leaves(full), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    np.testing.assert_allclose(result.history, full_history, atol=1e-6)
    # every segment got the same jitted step (the same mesh, options and shapes): compiled once
    mesh, state = parallel.data_mesh(), opt.init(theta0)
    step = parallel.data_parallel_step(mesh, theta0, state, optimizer=opt, fast=True)
    assert step is parallel.data_parallel_step(mesh, result.theta, state, optimizer=opt, fast=True)
    assert step is not parallel.data_parallel_step(mesh, theta0, state, optimizer=opt)


def test_ctrl_c_inside_a_gathered_segment_keeps_the_last_gathered_state(fitted):
    """Processes may stop at different steps of a segment, so ``gathered`` hands Ctrl-C back as a
    plain KeyboardInterrupt and fit keeps the state of the segment before (all processes agree)."""
    result, seen = fitted

    def interrupted_in_segment_2(theta, data, key, **kw):
        if kw["start_step"] == 3:
            raise trainer.TrainingInterrupted("in a segment", completed=4, theta=None,
                                              opt_state=None, history=np.zeros(1))  # fmt: skip
        return trainer.train(theta, data, key, **kw)

    with pytest.raises(trainer.TrainingInterrupted) as info:
        fit(theta0, data, key, **KW, evaluate=held_out, eval_every=3,
            train=distributed.gathered(interrupted_in_segment_2))  # fmt: skip
    error = info.value
    assert error.completed == 3 and len(error.history) == 3
    assert leaves_equal(error.theta, seen[0].theta)
