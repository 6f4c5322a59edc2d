"""The fast path (formal_algorithms.practice.fast: the batch as columns; a scanned layer loop) equals the
literal Algorithms 10, 9 and 8 (vmapped over the batch) and the trainer.

The expectation is the literal code (architectures.d_transformer_logits,
training.e_transformer_logits_padded, training.ed_transformer_logits_padded, trainer.train_step),
an independent evaluation order of the same math; float64, 1e-12.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from params import perturbed

import formal_algorithms as fa
from formal_algorithms.practice import fast, trainer

HP = dict(N_V=11, ell_max=8, L=3, H=2, d_e=6, d_mlp=10)


@pytest.fixture(scope="module")
def theta():
    return perturbed(fa.init_d_transformer(jax.random.key(0), **HP, dtype=jnp.float64), 1)


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
            rtol=1e-12,
            atol=1e-12,
        )


def test_batch_as_columns_equals_vmapped_literal(theta):
    xs = jnp.array([[3, 1, 4, 1, 5, 9, 2], [10, 0, 0, 7, 7, 3, 1], [2, 7, 1, 8, 2, 8, 1]])
    for activation in (fa.gelu, fa.relu):
        fast_form = partial(fast.d_transformer_logits_batch, activation=activation)
        literal = jax.vmap(partial(fa.d_transformer_logits, activation=activation), (0, None))
        np.testing.assert_allclose(
            jax.jit(fast_form)(xs, theta), jax.jit(literal)(xs, theta), rtol=1e-12, atol=1e-12
        )


def test_batch_columns_are_independent_sequences(theta):
    """Changing one sequence of the batch leaves the other rows' logits bit-for-bit unchanged
    (attention stays within each sequence's block of columns)."""
    xs = jnp.array([[3, 1, 4, 1], [5, 9, 2, 6]])
    a = jax.jit(fast.d_transformer_logits_batch)(xs, theta)
    b = jax.jit(fast.d_transformer_logits_batch)(xs.at[1].set(jnp.array([0, 0, 0, 0])), theta)
    np.testing.assert_array_equal(a[0], b[0])
    assert np.all(np.abs(a[1] - b[1]) > 0)


def test_fast_train_step_equals_trainer(theta):
    rng = np.random.default_rng(0)
    data = [rng.integers(0, 8, n) for n in (5, 8, 3)]
    batch = trainer.make_batch(theta, data, range(3), 4)  # one empty filler row
    # SGD with momentum: θ and the optimiser state are linear in the gradient, so they agree to
    # rounding. (Adam's first step is η·g/(|g| + ε): for an entry whose gradient cancels to
    # ~1e-17, another summation order moves it by O(η); observed 3e-11 here.)
    opt = optax.sgd(1e-1, momentum=0.9)
    state = opt.init(theta)
    a = trainer.train_step(theta, state, batch, optimizer=opt)
    b = fast.train_step_fast(theta, state, batch, optimizer=opt)
    np.testing.assert_allclose(a[2], b[2], rtol=1e-12)  # loss
    for s, t in zip(a[3], b[3], strict=True):  # loss sum, n_targets, n_correct, grad_norm
        np.testing.assert_allclose(s, t, rtol=1e-12)
    for u, v in zip(jax.tree.leaves(a[:2]), jax.tree.leaves(b[:2]), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-12)  # θ and Adam's moments
    assert float(jnp.max(jnp.abs(a[0].W_e - theta.W_e))) > 1e-3  # the step moved θ


def test_fast_paths_reject_bad_input(theta):
    with pytest.raises(ValueError, match="Algorithm 10"):
        fast.d_transformer_logits_scan(jnp.array([0, 11]), theta)
    with pytest.raises(ValueError, match="Algorithm 10.*'xs'.*batch"):
        fast.d_transformer_logits_batch(jnp.array([0, 1]), theta)
    with pytest.raises(ValueError, match="Algorithm 10.*'xs'"):
        fast.d_transformer_logits_batch(jnp.array([[0, 11]]), theta)  # N_V = 11
    with pytest.raises(ValueError, match="Algorithm 10.*'xs'.*ell_max"):
        fast.d_transformer_logits_batch(jnp.zeros((2, 9), int), theta)  # ℓ_max = 8


def assert_fast_train_equals_train(theta, data, **kw):
    """``trainer.train(fast=True)``: the same batches, keys (and masks), the fast step; SGD,
    float64: the same loss history and final θ."""
    kw = dict(optimizer=optax.sgd(0.1), batch_size=2, **kw)
    a, history_a = trainer.train(theta, data, jax.random.key(0), **kw)
    b, history_b = trainer.train(theta, data, jax.random.key(0), fast=True, **kw)
    np.testing.assert_allclose(history_a, history_b, rtol=1e-12)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-11, atol=1e-12)


def test_train_with_fast_steps_equals_train(theta):
    rng = np.random.default_rng(1)
    data = [rng.integers(0, 11, n) for n in (7, 8, 5, 6, 6)]  # one length bucket: 2 compiles
    assert_fast_train_equals_train(theta, data, N_steps=3)


@pytest.fixture(scope="module")
def ed_theta():
    hp = dict(N_V=11, ell_max=8, L_enc=2, L_dec=2, H=2, d_e=6, d_mlp=10)
    return perturbed(fa.init_ed_transformer(jax.random.key(2), **hp, dtype=jnp.float64), 3)


def test_ed_batch_as_columns_equals_vmapped_literal(ed_theta):
    """Algorithm 8 with padded contexts (key-padding masks differ per sequence) and ℓ_z ≠ ℓ_x."""
    zs = jnp.array([[3, 1, 4, 1, 5, 0], [2, 7, 1, 0, 0, 0], [9, 2, 6, 5, 3, 5]])
    z_valid = jnp.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
    xs = jnp.array([[10, 0, 4, 2], [10, 5, 5, 1], [10, 8, 9, 7]])
    literal = jax.vmap(fa.training.ed_transformer_logits_padded, (0, 0, 0, None))
    np.testing.assert_allclose(
        jax.jit(fast.ed_transformer_logits_batch)(zs, xs, ed_theta, z_valid=z_valid),
        jax.jit(literal)(zs, z_valid, xs, ed_theta),
        rtol=1e-12,
        atol=1e-12,
    )
    with pytest.raises(ValueError, match="Algorithm 8.*'z_valid'"):
        fast.ed_transformer_logits_batch(zs, xs, ed_theta, z_valid=z_valid[:, :3])


def test_ed_train_with_fast_steps_equals_train(ed_theta):
    rng = np.random.default_rng(2)
    data = [
        (rng.integers(0, 11, m), rng.integers(0, 11, n))
        for m, n in ((5, 6), (8, 7), (6, 8), (7, 5))
    ]
    assert_fast_train_equals_train(ed_theta, data, N_steps=2)


@pytest.fixture(scope="module")
def e_theta():
    return perturbed(fa.init_e_transformer(jax.random.key(4), **HP, d_f=5, dtype=jnp.float64), 5)


def test_e_batch_as_columns_equals_vmapped_literal(e_theta):
    """Algorithm 9 with padded rows (key-padding masks differ per sequence), and without padding."""
    xs = jnp.array([[3, 1, 4, 1, 5, 0], [2, 7, 1, 0, 0, 0], [9, 2, 6, 5, 3, 5]])
    valid = jnp.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], bool)
    padded = jax.vmap(fa.training.e_transformer_logits_padded, (0, 0, None))
    np.testing.assert_allclose(
        jax.jit(fast.e_transformer_logits_batch)(xs, e_theta, valid=valid),
        jax.jit(padded)(xs, valid, e_theta),
        rtol=1e-12,
        atol=1e-12,
    )
    for activation in (fa.gelu, fa.relu):
        literal = jax.vmap(partial(fa.e_transformer_logits, activation=activation), (0, None))
        np.testing.assert_allclose(
            jax.jit(partial(fast.e_transformer_logits_batch, activation=activation))(xs, e_theta),
            jax.jit(literal)(xs, e_theta),
            rtol=1e-12,
            atol=1e-12,
        )
    with pytest.raises(ValueError, match="Algorithm 9.*'valid'"):
        fast.e_transformer_logits_batch(xs, e_theta, valid=valid[:, :3])
    with pytest.raises(ValueError, match="Algorithm 9.*'xs'"):
        fast.e_transformer_logits_batch(xs.at[0, 0].set(11), e_theta)  # N_V = 11


def test_e_fast_train_step_equals_trainer(e_theta):
    """The same masks (lines 4-6 from the batch's keys), the same loss, gradient and step."""
    rng = np.random.default_rng(3)
    data = [rng.integers(0, 8, n) for n in (5, 8, 6)]
    keys = jax.random.split(jax.random.key(6), 3)
    batch = trainer.make_batch(e_theta, data, range(3), 4, keys=keys)  # one empty filler row
    opt = optax.sgd(1e-1, momentum=0.9)  # linear in the gradient: see the Algorithm 10 test
    state = opt.init(e_theta)
    a = trainer.train_step(e_theta, state, batch, 0.4, optimizer=opt)
    b = fast.train_step_fast(e_theta, state, batch, 0.4, optimizer=opt)
    assert int(a[3].n_targets) > 0  # some tokens were masked
    for s, t in zip(a[2:4], b[2:4], strict=True):  # loss; loss sum, n_targets, n_correct, grad norm
        np.testing.assert_allclose(s, t, rtol=1e-12)
    for u, v in zip(jax.tree.leaves(a[:2]), jax.tree.leaves(b[:2]), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-12)
    c = fast.train_step_fast(e_theta, state, batch, 0.05, optimizer=opt)  # p_mask reaches the masks
    assert int(c[3].n_targets) < int(b[3].n_targets)


def test_e_train_with_fast_steps_equals_train(e_theta):
    rng = np.random.default_rng(4)
    data = [rng.integers(0, 8, n) for n in (5, 8, 6, 7)]
    assert_fast_train_equals_train(e_theta, data, N_steps=2, p_mask=0.3)
