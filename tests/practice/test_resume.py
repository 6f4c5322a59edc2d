"""Resuming training from a checkpoint gives exactly the parameters of an uninterrupted run, and a
non-finite loss or gradient stops training with a clear error carrying the last good θ."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import formal_algorithms as fa
from formal_algorithms.practice import trainer
from formal_algorithms.practice.checkpoint import load_checkpoint, save_checkpoint

# float32, as users train: a learning rate of 1e30 overflows it within a step (float64 would not)
theta0 = fa.init_d_transformer(
    jax.random.key(0), N_V=12, ell_max=8, L=1, H=2, d_e=8, d_mlp=16, dtype=jnp.float32
)
rng = np.random.default_rng(0)
data = [jnp.asarray(rng.integers(0, 9, n)) for n in (8, 5, 7, 8, 3, 6, 8, 4, 8, 2)]
key = jax.random.key(42)
opt = trainer.make_optimizer(3e-3, N_steps=9, warmup_steps=2, clip_norm=1.0)


def leaves_equal(a, b):
    return all(
        np.array_equal(x, y)
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


def test_resume_from_a_checkpoint_equals_the_uninterrupted_run(tmp_path):
    kw = dict(optimizer=opt, N_steps=9, batch_size=3)  # 4 batches an epoch: resume mid-epoch
    full, full_history = trainer.train(theta0, data, key, **kw)
    theta_k, history_k, state_k = trainer.train(
        theta0, data, key, **{**kw, "N_steps": 5}, return_opt_state=True
    )
    path = save_checkpoint(
        tmp_path / "ck.safetensors", theta_k, opt_state=state_k, extra={"step": 5}
    )
    ck = load_checkpoint(path, opt_state_template=opt.init(theta0))
    resumed, history_rest = trainer.train(
        ck.theta, data, key, **kw, opt_state=ck.opt_state, start_step=ck.extra["step"]
    )
    assert leaves_equal(resumed, full)  # bit-exact
    np.testing.assert_array_equal(np.concatenate([history_k, history_rest]), full_history)
    assert not leaves_equal(theta_k, full)


def test_non_finite_loss_stops_with_the_step_and_the_last_good_parameters():
    seen = []
    # A learning rate of 1e30 makes the parameters overflow after the first update.
    with pytest.raises(
        trainer.NonFiniteError, match=r"train \(DTraining \(Algorithm 13\)\): step 2 gave loss nan"
    ) as info:
        trainer.train(
            theta0,
            data,
            key,
            optimizer=optax.sgd(1e30),
            N_steps=5,
            batch_size=3,
            callback=lambda step, loss, stats: seen.append(step),
        )
    error = info.value
    assert error.step == 2 and seen == [1] and len(error.history) == 1
    assert all(np.isfinite(leaf).all() for leaf in jax.tree_util.tree_leaves(error.theta))
    assert not leaves_equal(error.theta, theta0)  # step 1's update is in it
    assert np.isfinite(error.history).all()
