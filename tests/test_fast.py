"""The scanned fast path (formal_algorithms.fast) equals the literal Algorithm 10 and the trainer.

The expectation is the literal code (architectures.d_transformer_logits, trainer.train_step), an
independent evaluation order of the same math; float64, 1e-12.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import formal_algorithms as fa
from formal_algorithms import fast, trainer

HP = dict(N_V=11, ell_max=8, L=3, H=2, d_e=6, d_mlp=10)


@pytest.fixture(scope="module")
def theta():
    th = fa.init_d_transformer(jax.random.key(0), **HP, dtype=jnp.float64)
    # non-trivial γ, β and biases, so that every parameter matters
    leaves, tree = jax.tree.flatten(th)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    return jax.tree.unflatten(
        tree,
        [
            a + 0.1 * jax.random.normal(k, a.shape, a.dtype)
            for a, k in zip(leaves, keys, strict=True)
        ],
    )


def test_scan_logits_equal_literal(theta):
    x = jnp.array([3, 1, 4, 1, 5, 9, 2])
    for activation in (fa.gelu, fa.gelu_tanh):
        np.testing.assert_allclose(
            jax.jit(fast.d_transformer_logits_scan, static_argnames="activation")(
                x, theta, activation=activation
            ),
            jax.jit(fa.d_transformer_logits, static_argnames="activation")(
                x, theta, activation=activation
            ),
            rtol=1e-12, atol=1e-12,
        )  # fmt: skip


def test_scan_train_step_equals_trainer(theta):
    rng = np.random.default_rng(0)
    data = [rng.integers(0, 8, n) for n in (5, 8, 3)]
    batch = trainer.make_batch(theta, data, range(3), 4)  # one empty filler row
    opt = optax.adamw(1e-2)
    state = opt.init(theta)
    a = trainer.train_step(theta, state, batch, optimizer=opt)
    b = fast.d_train_step_scan(theta, state, batch, optimizer=opt)
    np.testing.assert_allclose(a[2], b[2], rtol=1e-12)  # loss
    for s, t in zip(a[3], b[3], strict=True):  # loss sum, n_targets, n_correct, grad_norm
        np.testing.assert_allclose(s, t, rtol=1e-12)
    for u, v in zip(jax.tree.leaves(a[:2]), jax.tree.leaves(b[:2]), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-12)  # θ and Adam's moments
    assert float(jnp.max(jnp.abs(a[0].W_e - theta.W_e))) > 1e-3  # the step moved θ


def test_scan_rejects_bad_tokens(theta):
    with pytest.raises(ValueError, match="Algorithm 10"):
        fast.d_transformer_logits_scan(jnp.array([0, 11]), theta)
