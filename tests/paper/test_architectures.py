"""Algorithms 8, 9, 10 against the independent numpy transcription, plus the invariants the
paper's lines imply: causality, permutation invariance, column-stochastic P, batching."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from paper_numpy import d_transformer as np_d_transformer
from paper_numpy import e_transformer as np_e_transformer
from paper_numpy import ed_transformer as np_ed_transformer

import formal_algorithms as fa

N_V, ell_max = 13, 9

# Compiled once per shape: eager JAX compiles every primitive separately, which is slow.
d_transformer = jax.jit(fa.d_transformer)
e_transformer = jax.jit(fa.e_transformer)
ed_transformer = jax.jit(fa.ed_transformer)


def perturb(theta, seed, scale=0.3):
    """Every leaf moved off its init (γ ≠ 1, β ≠ 0, biases ≠ 0), so a missing norm or bias shows."""
    r = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda w: w + scale * jnp.asarray(r.normal(size=w.shape), w.dtype), theta
    )


def make_d(tied=False, seed=0, **kw):
    hp = dict(N_V=N_V, ell_max=ell_max, L=2, H=2, d_e=8, d_mlp=12, d_attn=3, d_mid=5) | kw
    return perturb(
        fa.init_d_transformer(jax.random.key(seed), tied=tied, dtype=jnp.float64, **hp), seed
    )


def make_e(tied=False, seed=0, **kw):
    hp = dict(N_V=N_V, ell_max=ell_max, L=2, H=3, d_e=9, d_mlp=10, d_f=7) | kw
    return perturb(
        fa.init_e_transformer(jax.random.key(seed), tied=tied, dtype=jnp.float64, **hp), seed
    )


def make_ed(tied=False, seed=0, **kw):
    hp = dict(N_V=N_V, ell_max=ell_max, L_enc=2, L_dec=3, H=2, d_e=8, d_mlp=11) | kw
    return perturb(
        fa.init_ed_transformer(jax.random.key(seed), tied=tied, dtype=jnp.float64, **hp), seed
    )


rng = np.random.default_rng(3)
x = jnp.asarray(rng.integers(0, N_V, 6))
z = jnp.asarray(rng.integers(0, N_V, 4))


@pytest.mark.parametrize("tied", [False, True])
def test_d_transformer_equals_paper_lines(tied):  # Algorithm 10
    theta = make_d(tied)
    P = d_transformer(x, theta)
    assert P.shape == (N_V, len(x))
    np.testing.assert_allclose(P, np_d_transformer(np.asarray(x), theta), atol=1e-12)
    np.testing.assert_allclose(
        jax.nn.softmax(fa.d_transformer_logits(x, theta), axis=0), P, atol=1e-14
    )


def test_e_transformer_equals_paper_lines():  # Algorithm 9, W_u is N_V × d_f (erratum)
    theta = make_e()
    assert theta.W_u.shape == (N_V, 7)
    P = e_transformer(x, theta)
    assert P.shape == (N_V, len(x))
    np.testing.assert_allclose(P, np_e_transformer(np.asarray(x), theta), atol=1e-12)


def test_e_transformer_tied_needs_d_f_equal_d_e():
    theta = make_e(tied=True, d_f=9)
    np.testing.assert_allclose(
        e_transformer(x, theta), np_e_transformer(np.asarray(x), theta), atol=1e-12
    )
    with pytest.raises(ValueError, match="'tied' needs d_f = d_e"):
        make_e(tied=True, d_f=7)


@pytest.mark.parametrize("tied", [False, True])
def test_ed_transformer_equals_paper_lines(tied):  # Algorithm 8, L_enc ≠ L_dec, ℓ_z ≠ ℓ_x
    theta = make_ed(tied)
    P = ed_transformer(z, x, theta)
    assert P.shape == (N_V, len(x))
    np.testing.assert_allclose(
        P, np_ed_transformer(np.asarray(z), np.asarray(x), theta), atol=1e-12
    )


def test_every_column_of_P_is_a_distribution():
    for P in (
        d_transformer(x, make_d()),
        e_transformer(x, make_e()),
        ed_transformer(z, x, make_ed()),
    ):
        assert (np.asarray(P) > 0).all()
        np.testing.assert_allclose(P.sum(axis=0), 1.0, atol=1e-13)


def later_positions_influence(logits_of_W_p, W_p, ell):
    """|∂ logits[:, t] / ∂ X[:, t']| summed, via W_p: X[:, t'] = W_e[:, x[t']] + W_p[:, t']."""
    J = jax.jit(jax.jacobian(logits_of_W_p))(W_p)  # (N_V, ℓ, d_e, ℓ_max)
    return np.abs(np.asarray(J)).sum(axis=(0, 2))[:, :ell]  # [t, t']


def test_d_transformer_is_causal():  # P[:, :t] ignores x[t:]; Jacobian to later inputs exactly 0
    theta = make_d()
    for t in range(1, len(x)):
        x2 = x.at[t:].set((x[t:] + 1 + t) % N_V)
        np.testing.assert_array_equal(
            d_transformer(x2, theta)[:, :t], d_transformer(x, theta)[:, :t]
        )
        assert not np.allclose(d_transformer(x2, theta)[:, t], d_transformer(x, theta)[:, t])
    influence = later_positions_influence(
        lambda W_p: fa.d_transformer_logits(x, theta._replace(W_p=W_p)), theta.W_p, len(x)
    )
    for t in range(len(x)):
        assert (influence[t, t + 1 :] == 0).all() and (influence[t, : t + 1] > 0).all()


def test_ed_transformer_decoder_is_causal():
    theta = make_ed()
    for t in range(1, len(x)):
        x2 = x.at[t:].set((x[t:] + 2) % N_V)
        np.testing.assert_array_equal(
            ed_transformer(z, x2, theta)[:, :t], ed_transformer(z, x, theta)[:, :t]
        )
    Z = fa.ed_encode(z, theta)  # fixed context, so W_p reaches the output only through x
    influence = later_positions_influence(
        lambda W_p: fa.ed_decode_logits(x, Z, theta._replace(W_p=W_p)), theta.W_p, len(x)
    )
    for t in range(len(x)):
        assert (influence[t, t + 1 :] == 0).all() and (influence[t, : t + 1] > 0).all()


def test_e_transformer_is_bidirectional():
    theta = make_e()
    influence = later_positions_influence(
        lambda W_p: fa.e_transformer_logits(x, theta._replace(W_p=W_p)), theta.W_p, len(x)
    )
    assert (influence > 0).all()


def test_ed_transformer_without_positions_is_invariant_to_permuting_z():
    theta = make_ed()
    theta = theta._replace(W_p=jnp.zeros_like(theta.W_p))
    perm = jnp.asarray(rng.permutation(len(z)))
    np.testing.assert_allclose(
        ed_transformer(z[perm], x, theta), ed_transformer(z, x, theta), atol=1e-13
    )
    with_positions = make_ed()
    assert not np.allclose(
        ed_transformer(z[perm], x, with_positions), ed_transformer(z, x, with_positions)
    )


def test_vmap_over_a_batch_equals_per_example_and_jit_equals_eager():
    xs = jnp.asarray(rng.integers(0, N_V, (3, 5)))
    zs = jnp.asarray(rng.integers(0, N_V, (3, 7)))
    cases = [
        (fa.d_transformer, make_d(), (xs,)),
        (fa.e_transformer, make_e(), (xs,)),
        (fa.ed_transformer, make_ed(), (zs, xs)),
    ]
    for f, theta, args in cases:
        batched = jax.jit(jax.vmap(lambda *a, f=f, theta=theta: f(*a, theta)))(*args)
        jitted = jax.jit(f)
        for b in range(3):
            np.testing.assert_allclose(batched[b], jitted(*(a[b] for a in args), theta), atol=1e-14)
        eager = f(*(a[0] for a in args), theta)
        np.testing.assert_allclose(jitted(*(a[0] for a in args), theta), eager, atol=1e-14)


def test_gradients_are_finite_and_reach_every_leaf():
    theta = make_ed()
    g = jax.jit(jax.grad(lambda th: jnp.sum(jnp.log(fa.ed_transformer(z, x, th)))))(theta)
    for leaf in jax.tree_util.tree_leaves(g):
        assert np.isfinite(leaf).all() and np.abs(np.asarray(leaf)).sum() > 0


def test_hyperparameters_and_check_params():
    theta = make_d()
    assert fa.hyperparameters(theta) == dict(
        N_V=N_V, ell_max=ell_max, d_e=8, tied=False, L=2, H=2, d_mlp=12, d_attn=3, d_mid=5
    )
    fa.check_params(theta, d_e=8)
    with pytest.raises(ValueError, match=r"'theta.W_e' has shape \(8, 13\), expected \(16, 13\)"):
        fa.check_params(theta, d_e=16)
    bad = theta._replace(layers=(theta.layers[0], theta.layers[1]._replace(b_mlp1=jnp.zeros(7))))
    with pytest.raises(
        ValueError,
        match=r"DTransformer \(Algorithm 10\): argument 'theta.layers\[1\].b_mlp1' has shape \(7,\)",
    ):
        fa.d_transformer(x, bad)
    with pytest.raises(ValueError, match=r"EDTransformer \(Algorithm 8\): argument 'theta"):
        th = make_ed()
        fa.ed_transformer(
            z, x, th._replace(dec=(th.dec[0]._replace(gamma4=jnp.ones(3)),) + th.dec[1:])
        )


@pytest.mark.parametrize(
    "call, argument",
    [
        (
            lambda: fa.d_transformer(jnp.asarray([1, N_V]), make_d()),
            r"DTransformer \(Algorithm 10\): argument 'x'.*outside",
        ),
        (
            lambda: fa.d_transformer(jnp.zeros(ell_max + 1, int), make_d()),
            r"Algorithm 10\): argument 'x' has length 10 > ell_max",
        ),
        (
            lambda: fa.e_transformer(jnp.asarray([-1]), make_e()),
            r"ETransformer \(Algorithm 9\): argument 'x'.*outside",
        ),
        (
            lambda: fa.ed_transformer(jnp.asarray([N_V + 3]), x, make_ed()),
            r"EDTransformer \(Algorithm 8\): argument 'z'.*outside",
        ),
        (
            lambda: fa.ed_transformer(z, jnp.zeros(ell_max + 2, int), make_ed()),
            r"Algorithm 8\): argument 'x' has length",
        ),
        (
            lambda: fa.ed_transformer(z, jnp.zeros(0, int), make_ed()),
            r"Algorithm 8\): argument 'x' is empty",
        ),
    ],
)
def test_bad_tokens_raise_naming_algorithm_and_argument(call, argument):
    with pytest.raises(ValueError, match=argument):
        call()


def test_degenerate_parameter_trees_are_named():
    th = make_ed()
    with pytest.raises(ValueError, match="has no encoder and no decoder layers"):
        fa.hyperparameters(th._replace(enc=(), dec=()))
    with pytest.raises(
        ValueError,
        match=r"ETransformer \(Algorithm 9\): argument 'theta.W_u' is None .* needs d_f = d_e",
    ):
        fa.e_transformer(x, make_e()._replace(W_u=None))
