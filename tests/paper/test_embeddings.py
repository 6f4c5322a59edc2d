"""Algorithms 1, 2, 7 and eq. 1; the two sinusoidal W_p. Expectations are numpy over the paper's indices."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import formal_algorithms as fa

rng = np.random.default_rng(0)
d_e, N_V, ell_max = 6, 9, 7
W_e = rng.normal(size=(d_e, N_V))
W_p = rng.normal(size=(d_e, ell_max))
W_u = rng.normal(size=(N_V, d_e))


def test_token_embedding_is_column_v():  # Algorithm 1, line 1
    for v in range(N_V):
        np.testing.assert_array_equal(
            fa.token_embedding(jnp.asarray(v), jnp.asarray(W_e)), W_e[:, v]
        )


def test_positional_embedding_is_column_t():  # Algorithm 2, line 1
    for t in range(ell_max):
        np.testing.assert_array_equal(fa.positional_embedding(t, jnp.asarray(W_p)), W_p[:, t])


def test_embed_follows_eq_1_column_by_column():
    x = np.array([3, 0, 8, 3, 5])
    expected = np.empty((d_e, len(x)))
    for t in range(len(x)):  # e_t = W_e[:, x[t]] + W_p[:, t]
        for i in range(d_e):
            expected[i, t] = W_e[i, x[t]] + W_p[i, t]
    X = fa.embed(jnp.asarray(x), jnp.asarray(W_e), jnp.asarray(W_p))
    assert X.shape == (d_e, len(x))
    np.testing.assert_allclose(X, expected, rtol=0, atol=1e-15)


def test_embed_first_and_last_position():  # bug class 7: positions off by one
    x = np.zeros(ell_max, int)
    X = np.asarray(fa.embed(jnp.asarray(x), jnp.asarray(W_e), jnp.asarray(W_p)))
    np.testing.assert_allclose(X[:, 0], W_e[:, 0] + W_p[:, 0], atol=1e-15)
    np.testing.assert_allclose(X[:, -1], W_e[:, 0] + W_p[:, ell_max - 1], atol=1e-15)


@pytest.mark.parametrize(
    "x, message",
    [
        ([1, N_V], "outside [0, N_V = 9)"),
        ([-1, 2], "outside [0, N_V = 9)"),
        ([0] * (ell_max + 1), "ell_max = 7"),
        ([], "empty"),
    ],
)
def test_embed_rejects_what_a_gather_would_clamp(x, message):
    with pytest.raises(ValueError, match=r"embed \(eq. 1\): argument 'x'") as info:
        fa.embed(jnp.asarray(x, int), jnp.asarray(W_e), jnp.asarray(W_p))
    assert message in str(info.value)


def test_embed_rejects_float_tokens_and_bad_indices():
    with pytest.raises(TypeError, match="integer token ids"):
        fa.embed(jnp.asarray([1.0, 2.0]), jnp.asarray(W_e), jnp.asarray(W_p))
    with pytest.raises(ValueError, match=r"Algorithm 1.*'v'"):
        fa.token_embedding(jnp.asarray(N_V), jnp.asarray(W_e))
    with pytest.raises(ValueError, match=r"Algorithm 2.*'t'"):
        fa.positional_embedding(ell_max, jnp.asarray(W_p))


def test_unembedding_is_softmax_of_W_u_e():  # Algorithm 7, line 1
    e = rng.normal(size=d_e)
    logits = [sum(W_u[v, i] * e[i] for i in range(d_e)) for v in range(N_V)]
    Z = sum(math.exp(a) for a in logits)
    expected = [math.exp(a) / Z for a in logits]
    np.testing.assert_allclose(
        fa.unembedding(jnp.asarray(e), jnp.asarray(W_u)), expected, atol=1e-15
    )
    # Applied to a matrix, each column separately (line 21 of Algorithm 8).
    E = rng.normal(size=(d_e, 3))
    P = fa.unembedding(jnp.asarray(E), jnp.asarray(W_u))
    for t in range(3):
        np.testing.assert_allclose(P[:, t], fa.unembedding(jnp.asarray(E[:, t]), jnp.asarray(W_u)))


def test_tied_unembedding_gradient_sums_both_paths():  # bug class 12
    x = jnp.asarray([1, 4, 2])

    def f(W_e, W_u):
        X = fa.embed(x, W_e, jnp.asarray(W_p))
        return jnp.sum(jnp.log(fa.unembedding(X, W_u))[0])

    g_e, g_u = jax.grad(f, argnums=(0, 1))(jnp.asarray(W_e), jnp.asarray(W_e.T))
    g_tied = jax.grad(lambda W: f(W, W.T))(jnp.asarray(W_e))
    np.testing.assert_allclose(g_tied, g_e + g_u.T, atol=1e-13)
    assert np.abs(np.asarray(g_u)).sum() > 0 and np.abs(np.asarray(g_e)).sum() > 0


def test_paper_sinusoid_by_hand():
    """Paper §5, 1-based: W_p[2i−1, t] = sin(t / ℓ_max^{2i/d_e}), W_p[2i, t] = cos(·)."""
    d, L = 4, 10
    W = np.asarray(fa.paper_sinusoidal_W_p(d, L, dtype=jnp.float64))
    assert W.shape == (d, L)
    # paper row 1 (i = 1), position t = 1: sin(1 / 10^{2/4}); row 2: cos of the same.
    np.testing.assert_allclose(W[0, 0], math.sin(1 / 10**0.5), atol=1e-15)
    np.testing.assert_allclose(W[1, 0], math.cos(1 / 10**0.5), atol=1e-15)
    # paper rows 3, 4 (i = 2): frequency 1 / 10^{4/4}; position t = 3 is column 2.
    np.testing.assert_allclose(W[2, 2], math.sin(3 / 10), atol=1e-15)
    np.testing.assert_allclose(W[3, 2], math.cos(3 / 10), atol=1e-15)
    # last position t = ℓ_max: the highest pair has angle t / ℓ_max = 1.
    np.testing.assert_allclose(W[2, L - 1], math.sin(1.0), atol=1e-15)
    for i in range(1, d // 2 + 1):
        for t in range(1, L + 1):
            angle = t / L ** (2 * i / d)
            np.testing.assert_allclose(W[2 * i - 2, t - 1], math.sin(angle), atol=1e-15)
            np.testing.assert_allclose(W[2 * i - 1, t - 1], math.cos(angle), atol=1e-15)


def test_vaswani_sinusoid_by_hand():
    """Vaswani et al., 0-based: PE[pos, 2i] = sin(pos / 10000^{2i/d}), PE[pos, 2i+1] = cos(·)."""
    d, L = 6, 5
    W = np.asarray(fa.vaswani_sinusoidal_W_p(d, L, dtype=jnp.float64))
    np.testing.assert_array_equal(W[0::2, 0], 0.0)  # position 0: sin 0
    np.testing.assert_array_equal(W[1::2, 0], 1.0)  # and cos 0
    np.testing.assert_allclose(W[0, 1], math.sin(1.0), atol=1e-15)  # i = 0: frequency 1
    np.testing.assert_allclose(W[3, 2], math.cos(2 / 10000 ** (2 / 6)), atol=1e-15)
    np.testing.assert_allclose(W[4, 4], math.sin(4 / 10000 ** (4 / 6)), atol=1e-15)
    # The two formulas differ (base and 1- vs 0-based), which is the paper's erratum.
    assert not np.allclose(W, np.asarray(fa.paper_sinusoidal_W_p(d, L, dtype=jnp.float64)))


def test_sinusoid_needs_even_d_e():
    with pytest.raises(ValueError, match="'d_e'.*even"):
        fa.paper_sinusoidal_W_p(5, 3)
    with pytest.raises(ValueError, match="'d_e'.*even"):
        fa.vaswani_sinusoidal_W_p(5, 3)


def test_embed_under_jit_grad_vmap():
    x = jnp.asarray([[1, 2, 3], [4, 5, 6]])
    Xs = jax.vmap(fa.embed, (0, None, None))(x, jnp.asarray(W_e), jnp.asarray(W_p))
    for b in range(2):
        np.testing.assert_array_equal(Xs[b], fa.embed(x[b], jnp.asarray(W_e), jnp.asarray(W_p)))
    np.testing.assert_array_equal(
        jax.jit(fa.embed)(x[0], jnp.asarray(W_e), jnp.asarray(W_p)),
        fa.embed(x[0], jnp.asarray(W_e), jnp.asarray(W_p)),
    )
    g = jax.grad(lambda W: fa.embed(x[0], W, jnp.asarray(W_p)).sum())(jnp.asarray(W_e))
    expected = np.zeros_like(W_e)
    expected[:, [1, 2, 3]] = 1.0  # each used column gets one unit per row
    np.testing.assert_array_equal(g, expected)
