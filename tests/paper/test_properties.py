"""Property-based invariants of Algorithms 1-10 with the public toolkit (formal_algorithms.testing).

Profiles (tests/conftest.py): "ci" by default; FA_HYPOTHESIS_PROFILE=thorough for many more
examples. Shapes come from small fixed sets so that JAX compiles a handful of programs."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import formal_algorithms as fa
from formal_algorithms import testing as T

N_V, ell_max = 11, 6
D_HP = dict(N_V=N_V, ell_max=ell_max, L=2, H=2, d_e=6, d_mlp=8)
E_HP = dict(N_V=N_V, ell_max=ell_max, L=1, H=2, d_e=6, d_mlp=8, d_f=4)
ED_HP = dict(N_V=N_V, ell_max=ell_max, L_enc=1, L_dec=2, H=2, d_e=6, d_mlp=8)
lengths = (2, 5)
# One compiled program per (function, shape): eager JAX would compile each primitive separately.
d_transformer = jax.jit(fa.d_transformer)
e_transformer = jax.jit(fa.e_transformer)
ed_transformer = jax.jit(fa.ed_transformer)


def normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape))


# --------------------------------------------------------------------------- Algorithms 1, 2


@given(T.token_sequences(N_V, lengths, specials=False), T.seeds())
def test_embed_is_eq_1_for_any_sequence(x, seed):
    W_e, W_p = normal(seed, (5, N_V)), normal(seed + 1, (5, ell_max + 2))
    X = fa.embed(x, W_e, W_p)
    T.check_shape_contract(lambda x: fa.embed(x, W_e, W_p), (x,), (5, len(x)))
    for t in range(len(x)):
        np.testing.assert_array_equal(
            X[:, t], fa.token_embedding(x[t], W_e) + fa.positional_embedding(t, W_p)
        )


# ------------------------------------------------------------------------ Algorithms 3, 4, 5


@st.composite
def attention_case(draw, kind="any"):
    # Two shape sets, all dimensions distinct within each: few programs to compile.
    d_x, d_z, d_attn, d_mid, ell_x, ell_z = draw(
        st.sampled_from([(5, 7, 3, 4, 3, 6), (2, 3, 6, 1, 1, 2)])
    )
    seed = draw(T.seeds())
    W = draw(
        T.params(lambda key, dtype: fa.init_mh_attention(key, 2, d_x, d_z, d_attn, d_mid, 3, dtype))
    )
    X, Z = normal(seed, (d_x, ell_x)), normal(seed + 1, (d_z, ell_z))
    return W, X, Z, draw(T.masks(ell_z, ell_x, kind))


@given(attention_case())
def test_attention_reductions_hold(case):
    W, X, Z, Mask = case
    T.check_attention_reductions(W=W, X=X, Z=Z, Mask=Mask)


@given(attention_case("padding"))
def test_padding_masks_are_respected(case):
    W, X, Z, Mask = case
    T.check_mask_respect(lambda X, Z, M: fa.mh_attention(X, Z, W, M), X, Z, Mask)


@given(attention_case("bidirectional"))
def test_cross_attention_ignores_context_order(case):
    W, X, Z, _ = case
    T.check_context_order_invariance(lambda X, Z: fa.mh_attention(X, Z, W), X, Z)


@given(T.seeds(), T.dims())
def test_bidirectional_self_attention_is_permutation_equivariant(seed, d):
    W = fa.init_mh_attention(jax.random.key(seed), 2, d, d, 3, 2, d, jnp.float64)
    T.check_permutation_equivariance(
        lambda X: fa.mh_attention(X, X, W), normal(seed, (d, 5)), seed=seed
    )


@given(T.seeds(), T.dims())
def test_unidirectional_self_attention_is_causal(seed, d):
    W = fa.init_mh_attention(jax.random.key(seed), 2, d, d, 3, 2, d, jnp.float64)
    T.check_causal_jacobian(
        lambda X: fa.mh_attention(X, X, W, fa.unidirectional_mask(4)), normal(seed, (d, 4))
    )


# ------------------------------------------------------------------------------ Algorithm 6


@given(T.seeds(), T.dims((2, 5, 8)), st.sampled_from([1e-3, 1.0, 1e3]))
def test_layer_norm_normalises(seed, d, scale):
    T.check_layer_norm(fa.layer_norm, scale * normal(seed, (d,)) + seed % 7)
    T.check_layer_norm_columns(fa.layer_norm_columns, normal(seed, (d, 3)))


# ----------------------------------------------------------------------- Algorithms 7 - 10


@given(T.params(fa.init_d_transformer, **D_HP), T.token_sequences(N_V, lengths))
def test_d_transformer_invariants(theta, x):
    P = d_transformer(x, theta)
    T.check_column_stochastic(P)
    T.check_causal_tokens(lambda x: d_transformer(x, theta), x, N_V)


@given(T.params(fa.init_e_transformer, **E_HP), T.token_sequences(N_V, lengths))
def test_e_transformer_invariants(theta, x):
    T.check_column_stochastic(e_transformer(x, theta))
    T.check_column_stochastic(fa.unembedding(fa.embed(x, theta.W_e, theta.W_p), theta.W_e.T))


@given(
    T.params(fa.init_ed_transformer, **ED_HP),
    T.token_sequences(N_V, (3,)),
    T.token_sequences(N_V, lengths),
)
def test_ed_transformer_invariants(theta, z, x):
    T.check_column_stochastic(ed_transformer(z, x, theta))
    T.check_causal_tokens(lambda x: ed_transformer(z, x, theta), x, N_V)
    no_positions = theta._replace(W_p=jnp.zeros_like(theta.W_p))
    T.check_context_permutation_invariance(lambda z, x: ed_transformer(z, x, no_positions), z, x)


@given(T.params(fa.init_d_transformer, **D_HP), st.sampled_from(lengths))
def test_batching_and_jit(theta, ell):
    xs = jax.random.randint(jax.random.key(ell), (3, ell), 0, N_V)
    T.check_vmap(lambda x: d_transformer(x, theta), (xs,))
    T.check_jit(fa.d_transformer, xs[0], theta)
    T.check_shape_contract(lambda x: d_transformer(x, theta), (xs[0],), (N_V, ell))


# ---------------------------------------------------------------------- Algorithms 11 - 15


@given(T.params(fa.init_d_transformer, **D_HP), T.token_sequences(N_V, lengths))
def test_d_training_loss_is_the_next_token_loss(theta, x):  # Algorithm 13, line 5
    T.check_next_token_loss(fa.d_loss, fa.d_transformer_logits, theta, x)


@given(
    T.params(fa.init_ed_transformer, **ED_HP),
    T.token_sequences(N_V, (3,)),
    T.token_sequences(N_V, lengths),
)
def test_ed_training_loss_is_the_next_token_loss(theta, z, x):  # Algorithm 11, line 5
    T.check_next_token_loss(
        lambda th, x: fa.ed_loss(th, z, x),
        lambda x, th: fa.ed_transformer_logits(z, x, th),
        theta,
        x,
    )


@given(T.params(fa.init_d_transformer, **D_HP), T.token_sequences(N_V, (5,)))
def test_cached_decoding_matches_the_full_forward(theta, x):  # Algorithm 14's cache
    from formal_algorithms.practice.cache import d_cached_logits, init_kv_cache

    def prefill_then_steps(x):  # both paths: a bias slip in one of them does not cancel
        logits, cache = d_cached_logits(x[:2], 0, theta, init_kv_cache(theta))
        columns = [logits[:, 0], logits[:, 1]]
        for t in range(2, x.shape[0]):
            logits, cache = d_cached_logits(x[t : t + 1], t, theta, cache)
            columns.append(logits[:, 0])
        return jnp.stack(columns, axis=1)

    full = lambda x: fa.d_transformer_logits(x, theta)  # noqa: E731
    T.check_incremental_matches_full(prefill_then_steps, full, x)


@given(T.params(fa.init_d_transformer, **D_HP), T.token_sequences(N_V, (3,)), T.seeds())
def test_sampled_continuations_are_valid_tokens_and_cached_equals_literal(theta, x, seed):  # Alg 14
    key = jax.random.key(seed)
    literal = fa.d_inference(x, theta, key, ell_gen=3, tau=1.0)
    cached = fa.d_inference_cached(x, theta, key, ell_gen=3, tau=1.0)
    assert (
        literal.shape == (3,) and ((0 <= np.asarray(literal)) & (np.asarray(literal) < N_V)).all()
    )
    np.testing.assert_array_equal(literal, cached)
