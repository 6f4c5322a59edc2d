"""Eq. 2 (column softmax), GELU, ReLU, and Algorithm 6 (layer_norm) with RMSnorm."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import formal_algorithms as fa

rng = np.random.default_rng(1)


def test_softmax_normalises_columns():  # eq. 2
    A = rng.normal(size=(4, 3))
    S = np.asarray(fa.softmax(jnp.asarray(A)))
    for t_x in range(3):
        Z = sum(math.exp(A[t, t_x]) for t in range(4))
        for t_z in range(4):
            np.testing.assert_allclose(S[t_z, t_x], math.exp(A[t_z, t_x]) / Z, atol=1e-15)


def test_softmax_closed_form_two_keys():
    """Scores 0 and 1: weights 1/(1+e) and e/(1+e)."""
    S = fa.softmax(jnp.asarray([[0.0], [1.0]]))
    np.testing.assert_allclose(S[:, 0], [1 / (1 + math.e), math.e / (1 + math.e)], atol=1e-15)


def test_masked_softmax_zero_weight_and_zero_gradient():  # bug classes 1, 2
    A = jnp.asarray(rng.normal(size=(4, 3)))
    mask = jnp.asarray([[1, 0, 0], [1, 1, 0], [0, 1, 0], [1, 1, 0]], bool)  # column 2 fully masked
    S = fa.softmax(A, mask)
    np.testing.assert_array_equal(np.asarray(S)[~np.asarray(mask)], 0.0)
    np.testing.assert_allclose(S[:, :2].sum(0), 1.0, atol=1e-15)
    np.testing.assert_array_equal(S[:, 2], 0.0)  # documented result for 0/0: zeros
    g = jax.grad(lambda A: jnp.sum(fa.softmax(A, mask) * jnp.arange(12.0).reshape(4, 3)))(A)
    assert np.isfinite(g).all()
    np.testing.assert_array_equal(np.asarray(g)[~np.asarray(mask)], 0.0)
    # Huge masked scores change nothing (they are never read).
    A_big = A.at[0, 1].set(1e30)
    np.testing.assert_array_equal(fa.softmax(A_big, mask), S)


def test_softmax_extreme_scores_float32():
    A = jnp.asarray([[1e4], [-1e4], [0.0]], jnp.float32)
    S = fa.softmax(A)
    assert S.dtype == jnp.float32 and np.isfinite(S).all()
    np.testing.assert_allclose(S[:, 0], [1, 0, 0], atol=1e-6)


def test_gelu_exact_and_tanh():
    for x in [-3.0, -0.5, 0.0, 0.7, 2.5]:
        Phi = 0.5 * (1 + math.erf(x / math.sqrt(2)))  # P[X < x], X ~ N(0, 1)
        np.testing.assert_allclose(fa.gelu(jnp.asarray(x)), x * Phi, atol=1e-15)
        tanh = 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
        np.testing.assert_allclose(fa.gelu_tanh(jnp.asarray(x)), tanh, atol=1e-15)
    assert abs(float(fa.gelu(jnp.asarray(1.0)) - fa.gelu_tanh(jnp.asarray(1.0)))) > 1e-5
    np.testing.assert_array_equal(fa.relu(jnp.asarray([-1.0, 0.0, 2.0])), [0.0, 0.0, 2.0])


# ---------------------------------------------------------------------------------- Algorithm 6


def numpy_layer_norm(e, gamma, beta, eps):
    d = len(e)
    m = sum(e[i] for i in range(d)) / d  # line 1
    v = sum((e[i] - m) ** 2 for i in range(d)) / d  # line 2
    return np.array([(e[i] - m) / math.sqrt(v + eps) * gamma[i] + beta[i] for i in range(d)])


@pytest.mark.parametrize("eps", [0.0, 1e-5])
def test_layer_norm_lines(eps):
    e, gamma, beta = rng.normal(size=(3, 7))
    out = fa.layer_norm(jnp.asarray(e), jnp.asarray(gamma), jnp.asarray(beta), eps=eps)
    np.testing.assert_allclose(out, numpy_layer_norm(e, gamma, beta, eps), atol=1e-14)


def test_layer_norm_mean_zero_biased_variance_one():
    e = rng.normal(size=9) * 5 + 3
    out = np.asarray(fa.layer_norm(jnp.asarray(e), jnp.ones(9), jnp.zeros(9), eps=0.0))
    np.testing.assert_allclose(out.mean(), 0.0, atol=1e-14)
    np.testing.assert_allclose(out.var(ddof=0), 1.0, atol=1e-13)  # biased, ÷ d_e
    assert abs(out.var(ddof=1) - 1.0) > 0.05  # the unbiased variance would differ visibly


def test_layer_norm_constant_vector_is_finite():
    out = fa.layer_norm(jnp.full(5, 3.0), jnp.ones(5), jnp.full(5, 0.5))
    np.testing.assert_array_equal(out, 0.5)  # (e − m) = 0, ε keeps the ratio 0/√ε = 0
    g = jax.grad(lambda e: fa.layer_norm(e, jnp.ones(5), jnp.zeros(5))[0])(jnp.full(5, 3.0))
    assert np.isfinite(g).all()


def test_layer_norm_large_mean_small_spread_float32():  # bug class 6: no E[e²] − m² cancellation
    spread = np.array([-1e-2, 0.0, 1e-2, 2e-2], np.float32)
    e = jnp.asarray(1e4 + spread, jnp.float32)
    out = fa.layer_norm(e, jnp.ones(4, jnp.float32), jnp.zeros(4, jnp.float32), eps=0.0)
    exact = numpy_layer_norm(np.asarray(e, np.float64), np.ones(4), np.zeros(4), 0.0)
    np.testing.assert_allclose(out, exact, atol=1e-3)


def test_layer_norm_columns_normalises_each_column():
    X = rng.normal(size=(5, 4))
    gamma, beta = rng.normal(size=(2, 5))
    out = fa.layer_norm_columns(jnp.asarray(X), jnp.asarray(gamma), jnp.asarray(beta))
    for t in range(4):
        np.testing.assert_allclose(
            out[:, t], numpy_layer_norm(X[:, t], gamma, beta, 1e-5), atol=1e-14
        )


def test_rms_norm_is_layer_norm_with_m_and_beta_zero():
    e, gamma = rng.normal(size=(2, 6))
    rms = math.sqrt(sum(a * a for a in e) / 6 + 1e-5)
    np.testing.assert_allclose(fa.rms_norm(jnp.asarray(e), jnp.asarray(gamma)), e / rms * gamma)
    X = rng.normal(size=(6, 3))
    out = fa.rms_norm_columns(jnp.asarray(X), jnp.asarray(gamma))
    np.testing.assert_allclose(out[:, 1], fa.rms_norm(jnp.asarray(X[:, 1]), jnp.asarray(gamma)))


def test_layer_norm_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"layer_norm \(Algorithm 6\): argument 'e'"):
        fa.layer_norm(jnp.ones(4), jnp.ones(5), jnp.zeros(5))


def test_layer_norm_jit_grad_vmap():
    X = jnp.asarray(rng.normal(size=(3, 5)))
    g, b = jnp.ones(5), jnp.zeros(5)
    batched = jax.vmap(fa.layer_norm, (0, None, None))(X, g, b)
    for i in range(3):
        np.testing.assert_allclose(batched[i], fa.layer_norm(X[i], g, b), atol=1e-15)
    np.testing.assert_allclose(jax.jit(fa.layer_norm)(X[0], g, b), fa.layer_norm(X[0], g, b))
    # The output has mean zero whatever e is, so the gradient of its sum is zero.
    np.testing.assert_allclose(
        jax.grad(lambda e: fa.layer_norm(e, g, b).sum())(X[0]), 0, atol=1e-14
    )
