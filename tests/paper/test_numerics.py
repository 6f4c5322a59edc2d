"""Numerics in low precision and at extremes: softmax, attention and layer norm compute in
float32 internally, so float16/bfloat16 inputs give finite outputs close to the float32 result,
and masking never produces NaN or inf in any dtype (bug classes 1, 2, 13)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import formal_algorithms as fa

LOW = [jnp.float16, jnp.bfloat16]
TOL = {jnp.float16: 2e-2, jnp.bfloat16: 8e-2}
rng = np.random.default_rng(5)


def cast(tree, dtype):
    return jax.tree_util.tree_map(lambda a: a.astype(dtype), tree)


W = fa.init_mh_attention(jax.random.key(0), 2, 8, 8, 4, 4, 8)
X = jnp.asarray(rng.normal(size=(8, 5)), jnp.float32)
mask = fa.unidirectional_mask(5).at[:, 2].set(False)  # column 2 fully masked (padding)


@pytest.mark.parametrize("dtype", LOW)
def test_attention_low_precision_close_to_float32_and_finite(dtype):
    ref = fa.mh_attention(X, X, W, mask)
    out = fa.mh_attention(X.astype(dtype), X.astype(dtype), cast(W, dtype), mask)
    assert out.dtype == dtype and np.isfinite(np.asarray(out, np.float32)).all()
    np.testing.assert_array_equal(
        np.asarray(out[:, 2], np.float32), np.asarray(W.b_o.astype(dtype), np.float32)
    )
    np.testing.assert_allclose(
        np.asarray(out, np.float32), ref, atol=TOL[dtype] * 4, rtol=TOL[dtype]
    )
    g = jax.grad(
        lambda X: jnp.sum(fa.mh_attention(X, X, cast(W, dtype), mask).astype(jnp.float32))
    )(X.astype(dtype))
    assert np.isfinite(np.asarray(g, np.float32)).all()


@pytest.mark.parametrize("dtype", [*LOW, jnp.float32])
def test_softmax_of_extreme_scores_is_finite_in_every_dtype(dtype):
    big = float(jnp.finfo(dtype).max) / 2
    A = jnp.asarray([[big, 0.0], [-big, 0.0], [0.0, 0.0]], dtype)
    m = jnp.asarray([[True, False], [True, False], [True, False]])
    S = np.asarray(fa.softmax(A, m), np.float32)
    assert np.isfinite(S).all()
    np.testing.assert_allclose(S[:, 0], [1, 0, 0], atol=1e-3)
    np.testing.assert_array_equal(S[:, 1], 0.0)


@pytest.mark.parametrize("dtype", LOW)
def test_layer_norm_low_precision(dtype):
    e = jnp.asarray(rng.normal(size=16) * 3 + 2, jnp.float32)
    ref = fa.layer_norm(e, jnp.ones(16), jnp.zeros(16))
    out = fa.layer_norm(e.astype(dtype), jnp.ones(16, dtype), jnp.zeros(16, dtype))
    assert out.dtype == dtype
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=TOL[dtype] * 2)
    const = fa.layer_norm(jnp.full(16, 7.0, dtype), jnp.ones(16, dtype), jnp.zeros(16, dtype))
    np.testing.assert_array_equal(np.asarray(const, np.float32), 0.0)


def test_layer_norm_large_mean_tiny_spread_in_float32_and_bfloat16():
    e = 1e4 + jnp.asarray([-1.0, 0.0, 1.0, 2.0], jnp.float32)
    out = fa.layer_norm(e, jnp.ones(4), jnp.zeros(4), eps=0.0)
    exact = (np.array([-1, 0, 1, 2.0]) - 0.5) / np.sqrt(1.25)
    np.testing.assert_allclose(out, exact, atol=1e-3)


@pytest.mark.parametrize("dtype", LOW)
def test_d_transformer_low_precision(dtype):
    theta = fa.init_d_transformer(jax.random.key(1), N_V=11, ell_max=8, L=2, H=2, d_e=8, d_mlp=16)
    x = jnp.asarray([1, 2, 3, 4, 5])
    ref = jax.jit(fa.d_transformer)(x, theta)
    P = jax.jit(fa.d_transformer)(x, cast(theta, dtype))
    assert P.dtype == dtype and np.isfinite(np.asarray(P, np.float32)).all()
    np.testing.assert_allclose(np.asarray(P, np.float32), ref, atol=TOL[dtype])
