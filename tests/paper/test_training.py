"""Algorithms 11-13 (training) and the minibatch trainer: losses against the spec's sums, the SGD
update against θ − η∇loss and finite differences, target alignment, Alg 12's masking, padding,
compile counts, and the trainer's exact agreement with the literal algorithms.

Compilation dominates the run time of these tests, so the sequences are chosen to share shapes
(length 7, bucket 8) and every jitted function is compiled as few times as possible: the
references are module-level jitted functions, and all training calls of one architecture share one
counting activation (numerically the paper's GELU/ReLU), which also serves the trace-count tests.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from params import perturbed

from formal_algorithms import (
    d_transformer,
    e_transformer,
    ed_transformer,
    gelu,
    init_d_transformer,
    init_e_transformer,
    init_ed_transformer,
    relu,
)
from formal_algorithms.paper.training import (
    bucket_length,
    d_loss,
    d_loss_padded,
    d_training,
    draw_mask,
    e_loss,
    e_loss_padded,
    e_training,
    ed_loss,
    ed_loss_padded,
    ed_training,
    mask_tokens,
    pad,
)
from formal_algorithms.practice.trainer import evaluate, make_optimizer, train

N_V, ELL_MAX = 11, 16  # mask_token = 8, bos = 9, eos = 10
MASK = N_V - 3
# θ only fixes the mask token and ℓ_max of mask_tokens: any Algorithm 9 θ of these sizes
THETA_SHAPE = init_e_transformer(
    jax.random.key(0), N_V=N_V, ell_max=ELL_MAX, L=1, H=2, d_e=8, d_mlp=8
)
DIMS = dict(N_V=N_V, ell_max=ELL_MAX, H=2, d_e=8, d_mlp=12, dtype=jnp.float64)


def _init(init, key, **kw):
    """θ with non-zero biases, γ ≠ 1, β ≠ 0 (params.perturbed): no term of the loss vanishes."""
    return perturbed(jax.jit(functools.partial(init, **kw, **DIMS))(jax.random.key(key)), key)


@pytest.fixture(scope="module")
def theta_d():
    return _init(init_d_transformer, 1, L=1, tied=True)


@pytest.fixture(scope="module")
def theta_e():
    return _init(init_e_transformer, 2, L=1)


@pytest.fixture(scope="module")
def theta_ed():
    return _init(init_ed_transformer, 3, L_enc=1, L_dec=1)


def seq(*tokens):
    return np.asarray(tokens, np.int32)


X = seq(9, 3, 1, 4, 1, 5, 10)  # length 7, bucket 8
Z = seq(2, 7, 1, 7, 2)
Z8 = seq(2, 7, 1, 7, 2, 6, 3, 0)
X_TILDE = seq(3, MASK, 4, MASK, 5, 9, MASK)  # masks at t = 1, 3, 6 (0-based)
X_ORIG = seq(3, 1, 4, 1, 5, 9, 2)

# References, jitted (op-by-op evaluation of a transformer compiles every primitive separately).
j_d_vg, j_e_vg, j_ed_vg = (jax.jit(jax.value_and_grad(f)) for f in (d_loss, e_loss, ed_loss))
j_d_transformer, j_e_transformer = jax.jit(d_transformer), jax.jit(e_transformer)
j_ed_transformer = jax.jit(ed_transformer)


def counting(activation):
    """``activation`` that records each call: it is called once per layer per trace."""
    calls = []

    def f(x):
        calls.append(None)
        return activation(x)

    return f, calls


# One activation per architecture for every training call in this module: shared compilations.
ACT_D, CALLS_D = counting(gelu)
ACT_E, CALLS_E = counting(gelu)
ACT_ED, CALLS_ED = counting(relu)


def tree_allclose(a, b, rtol=1e-12, atol=1e-13):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for u, v in zip(la, lb, strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol)


def tree_vdot(a, b):
    return sum(
        float(jnp.vdot(u, v)) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def sgd_step(theta, grad, eta):
    return jax.tree.map(lambda p, g: p - eta * g, theta, grad)


# ------------------------------------------------------------------- losses equal the spec's sums


def test_d_loss_is_the_spec_sum(theta_d):
    P = np.asarray(j_d_transformer(X, theta_d))
    ell = len(X)
    # Paper, 1-based: − Σ_{t=1}^{ℓ−1} log P[x[t+1], t]; the arrays here are 0-based.
    expected = -sum(math.log(P[X[t + 1 - 1], t - 1]) for t in range(1, ell))
    np.testing.assert_allclose(float(j_d_vg(theta_d, X)[0]), expected, rtol=1e-12)


def test_ed_loss_is_the_spec_sum(theta_ed):
    P = np.asarray(j_ed_transformer(Z, X, theta_ed))
    expected = -sum(math.log(P[X[t + 1 - 1], t - 1]) for t in range(1, len(X)))
    np.testing.assert_allclose(float(j_ed_vg(theta_ed, Z, X)[0]), expected, rtol=1e-12)


def test_e_loss_is_the_spec_sum_over_masked_positions(theta_e):
    P = np.asarray(j_e_transformer(X_TILDE, theta_e))
    T_tilde = [t for t in range(1, len(X_TILDE) + 1) if X_TILDE[t - 1] == MASK]  # line 7
    assert T_tilde == [2, 4, 7]
    expected = -sum(math.log(P[X_ORIG[t - 1], t - 1]) for t in T_tilde)
    np.testing.assert_allclose(float(j_e_vg(theta_e, X_TILDE, X_ORIG)[0]), expected, rtol=1e-12)


def test_e_loss_ignores_unmasked_targets(theta_e):
    reference = float(j_e_vg(theta_e, X_TILDE, X_ORIG)[0])
    other = X_ORIG.copy()
    other[[0, 2, 4, 5]] = 0  # unmasked positions: not in T̃
    assert float(j_e_vg(theta_e, X_TILDE, other)[0]) == reference
    changed = X_ORIG.copy()
    changed[1] = 0  # a masked position: in T̃
    assert float(j_e_vg(theta_e, X_TILDE, changed)[0]) != reference
    assert float(j_e_vg(theta_e, X_ORIG, X_ORIG)[0]) == 0.0  # nothing masked: the empty sum


# --------------------------------------------------- gradient: finite differences, one SGD step


LOSSES = {
    "D": (j_d_vg, (X,), "theta_d"),
    "E": (j_e_vg, (X_TILDE, X_ORIG), "theta_e"),
    "ED": (j_ed_vg, (Z, X), "theta_ed"),
}


@pytest.mark.parametrize("kind", LOSSES)
def test_gradient_matches_central_finite_difference(kind, request):
    vg, args, name = LOSSES[kind]
    theta = request.getfixturevalue(name)
    _, g = vg(theta, *args)
    leaves, treedef = jax.tree.flatten(theta)
    keys = jax.random.split(jax.random.key(7), len(leaves))
    v = jax.tree.unflatten(
        treedef, [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
    )
    h = 1e-6  # float64: truncation ~h² (curved with γ ≠ 1, β ≠ 0), rounding ~1e-16/h
    plus = vg(jax.tree.map(lambda p, d: p + h * d, theta, v), *args)[0]
    minus = vg(jax.tree.map(lambda p, d: p - h * d, theta, v), *args)[0]
    fd = (float(plus) - float(minus)) / (2 * h)  # float64 central difference along v
    assert abs(tree_vdot(g, v) - fd) <= 1e-6 * max(1.0, abs(fd))


def test_one_step_of_d_training_is_theta_minus_eta_grad(theta_d):
    eta = 0.05
    expected = sgd_step(theta_d, j_d_vg(theta_d, X)[1], eta)
    tree_allclose(d_training([X], theta_d, N_epochs=1, eta=eta, activation=ACT_D), expected)
    as_list = [[int(t) for t in X]]  # a sequence may be a Python list, as for every algorithm
    tree_allclose(d_training(as_list, theta_d, N_epochs=1, eta=eta, activation=ACT_D), expected)


def test_one_step_of_ed_training_is_theta_minus_eta_grad(theta_ed):
    eta = 0.05
    expected = sgd_step(theta_ed, j_ed_vg(theta_ed, Z, X)[1], eta)
    out = ed_training([(Z, X)], theta_ed, N_epochs=1, eta=eta, activation=ACT_ED)
    tree_allclose(out, expected)
    as_lists = [([int(t) for t in Z], [int(t) for t in X])]
    tree_allclose(ed_training(as_lists, theta_ed, N_epochs=1, eta=eta, activation=ACT_ED), expected)


def test_one_step_of_e_training_masks_with_the_documented_key(theta_e):
    eta, p_mask, key = 0.05, 0.4, jax.random.key(11)
    x = X_ORIG
    # Epoch 0's key is fold_in(key, 0), split into one key per sequence; position t uses draw t
    # of ℓ_max Bernoulli(p_mask) draws.
    k = jax.random.split(jax.random.fold_in(key, 0), 1)[0]
    masked = np.asarray(jax.random.bernoulli(k, p_mask, (ELL_MAX,)))[: len(x)]
    assert masked.any()
    expected = sgd_step(
        theta_e, j_e_vg(theta_e, np.where(masked, MASK, x).astype(np.int32), x)[1], eta
    )
    out = e_training([x], theta_e, key, N_epochs=1, eta=eta, p_mask=p_mask, activation=ACT_E)
    tree_allclose(out, expected)


def test_d_training_loops_epochs_then_sequences(theta_d):
    data = [X, X[::-1], seq(9, 2, 2, 5, 5, 6, 10)]
    eta, theta = 0.03, theta_d
    for _ in range(2):  # line 1
        for x in data:  # line 2
            theta = sgd_step(theta, j_d_vg(theta, x)[1], eta)  # lines 3-6
    out = d_training(data, theta_d, N_epochs=2, eta=eta, activation=ACT_D)
    tree_allclose(out, theta, rtol=1e-11, atol=1e-12)
    assert d_training(data, theta_d, N_epochs=0, eta=eta) is theta_d


# -------------------------------------------------------------- targets are shifted exactly once


def test_training_on_one_sequence_drives_next_token_probability_to_one(theta_d):
    x = seq(9, 4, 0, 7, 2, 6, 10)  # distinct tokens: every target is unambiguous
    theta = d_training([x], theta_d, N_epochs=150, eta=0.1, activation=ACT_D)
    P = np.asarray(j_d_transformer(x, theta))
    ell = len(x)
    p_next = [P[x[t + 1], t] for t in range(ell - 1)]  # column t predicts x[t+1]
    p_same = [P[x[t], t] for t in range(ell - 1)]  # a missing shift would learn this
    p_skip = [P[x[t + 2], t] for t in range(ell - 2)]  # a double shift would learn this
    assert min(p_next) > 0.9
    assert max(p_same) < 0.05 and max(p_skip) < 0.05


# -------------------------------------------------------------------------- Algorithm 12 masks


def test_masking_frequency_is_p_mask():
    p_mask, n_keys = 0.15, 2000
    keys = jax.random.split(jax.random.key(0), n_keys)
    masks = np.asarray(jax.vmap(lambda k: draw_mask(k, ELL_MAX, p_mask, ELL_MAX))(keys))
    assert masks.shape == (n_keys, ELL_MAX)
    n = masks.size
    assert abs(masks.mean() - p_mask) < 5 * math.sqrt(p_mask * (1 - p_mask) / n)
    per_position = masks.mean(axis=0)  # every position is masked at the same rate
    assert np.all(np.abs(per_position - p_mask) < 5 * math.sqrt(p_mask * (1 - p_mask) / n_keys))
    # Positions are independent: two positions are masked together at rate p_mask².
    joint = (masks[:, 0] & masks[:, 1]).mean()
    assert abs(joint - p_mask**2) < 5 * math.sqrt(p_mask**2 / n_keys)


def test_mask_tokens_is_deterministic_per_key_and_respects_padding():
    def mask(seed, x, valid=None):
        return np.asarray(
            mask_tokens(jax.random.key(seed), jnp.asarray(x), THETA_SHAPE, p_mask=0.5, valid=valid)
        )

    a = mask(4, X_ORIG)
    np.testing.assert_array_equal(a, mask(4, X_ORIG))  # same key, same masks
    assert len({mask(s, X_ORIG).tobytes() for s in range(5)}) > 1  # other keys, other masks
    masked = np.asarray(draw_mask(jax.random.key(4), len(X_ORIG), 0.5, ELL_MAX))
    np.testing.assert_array_equal(a, np.where(masked, MASK, X_ORIG))
    # A padded copy gets the same masks on its real positions and none on its padding.
    xp, valid = pad(X_ORIG, 12)
    ap = mask(4, xp, valid)
    np.testing.assert_array_equal(ap[: len(X_ORIG)], a)
    assert not np.any(ap[len(X_ORIG) :] == MASK)


# ------------------------------------------------------------------------------------- padding


def test_bucket_length():
    assert [bucket_length(n, 16) for n in (1, 2, 3, 4, 5, 8, 9, 16)] == [1, 2, 4, 4, 8, 8, 16, 16]
    assert bucket_length(9, 12) == 12  # capped at ℓ_max


def padded_vg(loss):
    """``jit(value_and_grad)`` of a padded loss's sum; returns ``(value, n_targets), grad``."""

    def f(theta, *args):
        stats = loss(theta, *args)
        return stats.loss, stats.n_targets

    return jax.jit(jax.value_and_grad(f, has_aux=True))


def test_padding_does_not_change_d_loss_or_gradient(theta_d):
    reference, g_ref = j_d_vg(theta_d, X)
    vg = padded_vg(d_loss_padded)
    for fill in (3, 10):  # the padding's content does not matter either
        xp, valid = pad(X, 16, fill)
        (value, n_targets), g = vg(theta_d, xp, valid)
        np.testing.assert_allclose(float(value), float(reference), rtol=1e-12)
        tree_allclose(g, g_ref)
        assert int(n_targets) == len(X) - 1


def test_padding_does_not_change_e_loss_or_gradient(theta_e):
    reference, g_ref = j_e_vg(theta_e, X_TILDE, X_ORIG)
    vg = padded_vg(e_loss_padded)
    for fill in (5, MASK):  # padded mask tokens must not become targets
        xtp, valid = pad(X_TILDE, 16, fill)
        xp, _ = pad(X_ORIG, 16, fill)
        (value, n_targets), g = vg(theta_e, xtp, xp, valid)
        np.testing.assert_allclose(float(value), float(reference), rtol=1e-12)
        tree_allclose(g, g_ref)
        assert int(n_targets) == 3
    # Bidirectional attention: without the key-padding mask the padding would change the loss.
    xtp, valid = pad(X_TILDE, 16, 5)  # (no padded mask tokens: the same targets)
    (leaky, _), _ = vg(theta_e, xtp, xp, np.ones_like(valid))
    assert abs(float(leaky) - float(reference)) > 1e-3
    assert_empty_row_contributes_nothing(vg(theta_e, xtp, xp, np.zeros_like(valid)))


def assert_empty_row_contributes_nothing(value_grad):
    """A filler row (nothing valid: every attention column fully masked) adds exactly 0 to the
    loss and to the gradient, with no NaN (bug classes 1 and 2)."""
    (value, n_targets), g = value_grad
    assert float(value) == 0.0 and int(n_targets) == 0
    for leaf in jax.tree.leaves(g):
        assert np.all(np.asarray(leaf) == 0)


def test_padding_does_not_change_ed_loss_or_gradient(theta_ed):
    reference, g_ref = j_ed_vg(theta_ed, Z, X)
    vg = padded_vg(ed_loss_padded)
    for fill in (0, 4):
        zp, z_valid = pad(Z, 16, fill)
        xp, x_valid = pad(X, 16, fill)
        (value, n_targets), g = vg(theta_ed, zp, z_valid, xp, x_valid)
        np.testing.assert_allclose(float(value), float(reference), rtol=1e-12)
        tree_allclose(g, g_ref)
        assert int(n_targets) == len(X) - 1
    # Padded z must be masked in the encoder and in cross-attention; unmasked, it leaks into x.
    (leaky, _), _ = vg(theta_ed, zp, np.ones_like(z_valid), xp, x_valid)
    assert abs(float(leaky) - float(reference)) > 1e-3
    empty = vg(theta_ed, zp, np.zeros_like(z_valid), xp, np.zeros_like(x_valid))
    assert_empty_row_contributes_nothing(empty)


def test_padding_must_be_at_the_end(theta_d):
    xp, valid = pad(X, 8)
    with pytest.raises(ValueError, match="padding at the end"):
        d_loss_padded(theta_d, xp, valid[::-1].copy())
    # valid is a boolean (or 0/1) vector of x's length, named as x_valid
    with pytest.raises(TypeError, match=r"argument 'x_valid' must be boolean or 0/1"):
        d_loss_padded(theta_d, xp, valid * 0.5)
    with pytest.raises(ValueError, match=r"argument 'x_valid' has shape \(7,\), expected \(8,\)"):
        d_loss_padded(theta_d, xp, valid[:7])


# ------------------------------------------------------------------------------ compile counts


def test_d_training_compiles_once_per_bucket(theta_d):
    d_training([X[:5]], theta_d, N_epochs=1, eta=0.01, activation=ACT_D)  # bucket 8 compiled
    before = len(CALLS_D)
    # Lengths 5, 6, 7 and 8 share bucket 8: no new trace, however many sequences and epochs.
    data = [X[:5], X[:6], X, seq(1, 2, 3, 4, 5, 6, 7, 8)]
    d_training(data, theta_d, N_epochs=2, eta=0.02, activation=ACT_D)
    assert len(CALLS_D) == before
    # Lengths 9-16 are bucket 16: traced once (L = 1 activation call), then never again.
    d_training([seq(*range(9))], theta_d, N_epochs=1, eta=0.01, activation=ACT_D)
    assert len(CALLS_D) == before + 1
    data = [seq(*range(10)), np.arange(12, dtype=np.int32) % 10]
    d_training(data, theta_d, N_epochs=2, eta=0.01, activation=ACT_D)
    d_training([np.zeros(16, np.int32)], theta_d, N_epochs=1, eta=0.01, activation=ACT_D)
    assert len(CALLS_D) == before + 1


def test_e_and_ed_training_compile_once_per_bucket(theta_e, theta_ed):
    e_training(
        [X_ORIG], theta_e, jax.random.key(0), N_epochs=1, eta=0.01, p_mask=0.3, activation=ACT_E
    )
    before = len(CALLS_E)
    e_training(
        [X_ORIG[:6], X_ORIG, X_ORIG[:5]],
        theta_e,
        jax.random.key(1),
        N_epochs=2,
        eta=0.02,
        p_mask=0.5,
        activation=ACT_E,
    )
    assert len(CALLS_E) == before
    ed_training([(Z, X)], theta_ed, N_epochs=1, eta=0.01, activation=ACT_ED)  # buckets (8, 8)
    before = len(CALLS_ED)
    data = [(Z8[:6], X), (Z8, X[:6]), (Z8[:7], seq(1, 2, 3, 4, 5, 6, 7, 8))]  # all (8, 8)
    ed_training(data, theta_ed, N_epochs=2, eta=0.02, activation=ACT_ED)
    assert len(CALLS_ED) == before


# ------------------------------------------------------------------------------ input checking


@pytest.mark.parametrize("eta", [0, -0.1, float("nan"), float("inf"), True])
def test_bad_eta_is_rejected(theta_d, eta):
    with pytest.raises(ValueError, match=r"DTraining \(Algorithm 13\): argument 'eta'"):
        d_training([X], theta_d, N_epochs=1, eta=eta)


@pytest.mark.parametrize("N_epochs", [-1, 1.5, True, None])
def test_bad_N_epochs_is_rejected(theta_d, N_epochs):
    with pytest.raises(ValueError, match="argument 'N_epochs'"):
        d_training([X], theta_d, N_epochs=N_epochs, eta=0.1)


@pytest.mark.parametrize("p_mask", [0, 1, 1.5, -0.2])
def test_bad_p_mask_is_rejected(theta_e, p_mask):
    with pytest.raises(ValueError, match=r"ETraining \(Algorithm 12\): argument 'p_mask'"):
        e_training([X_ORIG], theta_e, jax.random.key(0), N_epochs=1, eta=0.1, p_mask=p_mask)


def test_bad_data_and_keys_are_rejected(theta_d, theta_e, theta_ed):
    with pytest.raises(ValueError, match=r"argument 'data\[1\]' holds token ids \[11\]"):
        d_training([X, seq(1, 11)], theta_d, N_epochs=1, eta=0.1)
    with pytest.raises(ValueError, match=r"'data\[0\]' has length 17 > ell_max"):
        d_training([np.zeros(17, np.int32)], theta_d, N_epochs=1, eta=0.1)
    with pytest.raises(ValueError, match="mask_token"):
        e_training([seq(1, MASK)], theta_e, jax.random.key(0), N_epochs=1, eta=0.1, p_mask=0.2)
    with pytest.raises(TypeError, match="argument 'key'"):
        e_training([X_ORIG], theta_e, 0, N_epochs=1, eta=0.1, p_mask=0.2)
    with pytest.raises(ValueError, match=r"'data\[0\]' must be a pair"):
        ed_training([X], theta_ed, N_epochs=1, eta=0.1)
    with pytest.raises(TypeError, match="argument 'data'"):
        d_training("abc", theta_d, N_epochs=1, eta=0.1)


# ---------------------------------------------------------------------- the minibatch trainer


# Bucket 8 (and (8, 8)) throughout, so that each test compiles its step at most once.
D_DATA = [X, X[::-1], seq(9, 2, 2, 5, 5, 6, 10), seq(9, 1, 2, 3, 4, 5, 6, 10)]
ED_DATA = [(Z, X), (Z8, X[1:]), (Z8[:6], seq(9, 2, 7, 1, 10))]
E_DATA = [X_ORIG, X_ORIG[:5], seq(0, 1, 2, 3, 4, 5, 6, 7)]
SGD = optax.sgd(0.05)  # one optimiser object: train_step's compilations are shared across tests


def test_trainer_with_batch_one_and_sgd_is_d_training(theta_d):
    literal = d_training(D_DATA, theta_d, N_epochs=2, eta=0.05, activation=ACT_D)
    trained, history = train(
        theta_d,
        D_DATA,
        jax.random.key(0),
        optimizer=SGD,
        N_epochs=2,
        batch_size=1,
        reduction="sum",
        shuffle=False,
        activation=ACT_D,
    )
    tree_allclose(trained, literal, rtol=1e-11, atol=1e-12)
    assert history.shape == (2 * len(D_DATA),)
    np.testing.assert_allclose(history[0], float(j_d_vg(theta_d, D_DATA[0])[0]), rtol=1e-12)


def test_trainer_with_batch_one_and_sgd_is_ed_training(theta_ed):
    literal = ed_training(ED_DATA, theta_ed, N_epochs=2, eta=0.05, activation=ACT_ED)
    trained, _ = train(
        theta_ed,
        ED_DATA,
        jax.random.key(0),
        optimizer=SGD,
        N_epochs=2,
        batch_size=1,
        reduction="sum",
        shuffle=False,
        activation=ACT_ED,
    )
    tree_allclose(trained, literal, rtol=1e-11, atol=1e-12)


def test_trainer_with_batch_one_and_sgd_is_e_training(theta_e):
    p_mask, key = 0.4, jax.random.key(3)
    _, k_mask = jax.random.split(key)  # the trainer's documented masking key
    literal = e_training(
        E_DATA, theta_e, k_mask, N_epochs=2, eta=0.05, p_mask=p_mask, activation=ACT_E
    )
    trained, _ = train(
        theta_e,
        E_DATA,
        key,
        optimizer=SGD,
        N_epochs=2,
        batch_size=1,
        reduction="sum",
        shuffle=False,
        p_mask=p_mask,
        activation=ACT_E,
    )
    tree_allclose(trained, literal, rtol=1e-11, atol=1e-12)


def test_mean_reduction_is_loss_per_predicted_token(theta_d):
    data = D_DATA[:3]
    _, history = train(
        theta_d,
        data,
        jax.random.key(0),
        optimizer=SGD,
        N_steps=1,
        batch_size=2,
        shuffle=False,
        activation=ACT_D,
    )
    losses = [float(j_d_vg(theta_d, x)[0]) for x in data]
    counts = [len(x) - 1 for x in data]
    np.testing.assert_allclose(history[0], sum(losses[:2]) / sum(counts[:2]), rtol=1e-12)
    # Batches of 2 over 3 sequences: the last batch holds one sequence and one empty row.
    result = evaluate(theta_d, data, batch_size=2, activation=ACT_D)
    np.testing.assert_allclose(result.loss, sum(losses) / sum(counts), rtol=1e-12)
    assert result.n_targets == sum(counts)
    correct = sum(
        int(np.sum(np.argmax(np.asarray(j_d_transformer(x, theta_d))[:, :-1], axis=0) == x[1:]))
        for x in data
    )
    np.testing.assert_allclose(result.accuracy, correct / sum(counts), rtol=1e-12)


def test_trainer_is_deterministic_and_compiles_once_per_bucket(theta_d):
    def run(seed):
        return train(
            theta_d,
            D_DATA,
            jax.random.key(seed),
            optimizer=SGD,
            N_steps=6,
            batch_size=2,
            activation=ACT_D,
        )

    a, ha = run(0)
    before = len(CALLS_D)  # (2, 8) batches are compiled now
    (b, hb), (_, hc) = run(0), run(1)
    tree_allclose(a, b, rtol=0, atol=0)
    np.testing.assert_array_equal(ha, hb)
    assert len(ha) == 6 and not np.array_equal(ha, hc)  # another key shuffles differently
    assert len(CALLS_D) == before  # other batches of the same bucket: no new trace


def test_make_optimizer_warmup_and_decoupled_weight_decay():
    params = {"W": jnp.ones((2, 2)), "b": jnp.ones(2)}
    zero = jax.tree.map(jnp.zeros_like, params)
    opt = make_optimizer(0.1, N_steps=10, warmup_steps=3, weight_decay=0.5, clip_norm=None)
    updates, _ = jax.jit(opt.update)(zero, opt.init(params), params)
    assert all(float(jnp.max(jnp.abs(u))) == 0 for u in jax.tree.leaves(updates))  # lr(0) = 0
    opt = make_optimizer(0.1, decay=None, weight_decay=0.5, clip_norm=1.0)
    updates, _ = jax.jit(opt.update)(zero, opt.init(params), params)
    np.testing.assert_allclose(updates["W"], -0.1 * 0.5 * params["W"])  # matrices decay
    np.testing.assert_array_equal(updates["b"], 0.0)  # biases, γ, β do not
    with pytest.raises(ValueError, match="decay"):
        make_optimizer(0.1, decay="step")
    with pytest.raises(ValueError, match="N_steps"):
        make_optimizer(0.1, N_steps=None)


def test_trainer_rejects_bad_arguments(theta_d, theta_e):
    opt = optax.sgd(0.1)
    with pytest.raises(ValueError, match="N_steps"):
        train(theta_d, D_DATA, jax.random.key(0), optimizer=opt)
    with pytest.raises(ValueError, match="reduction"):
        train(theta_d, D_DATA, jax.random.key(0), optimizer=opt, N_epochs=1, reduction="avg")
    with pytest.raises(ValueError, match="batch_size"):
        train(theta_d, D_DATA, jax.random.key(0), optimizer=opt, N_epochs=1, batch_size=0)
    with pytest.raises(TypeError, match="key"):
        evaluate(theta_e, [X_ORIG])
    with pytest.raises(TypeError, match="Algorithm 8, 9 or 10"):
        train({"W": 1}, D_DATA, jax.random.key(0), optimizer=opt, N_epochs=1)
