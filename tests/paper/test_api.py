"""One API that behaves the same everywhere (issue 14): each test pins one surprise a new user met.

The suite runs with ``jax_enable_x64`` on (tests/conftest.py), as the user of point 1 did.
"""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import formal_algorithms as fa
from formal_algorithms.practice import cache, fast

SIZES = dict(N_V=11, ell_max=8, H=2, d_e=8, d_mlp=8)


def test_1_dtypes_follow_jax_default_float_unless_given():
    key = jax.random.key(0)
    made = [
        fa.init_d_transformer(key, L=1, **SIZES),
        fa.init_e_transformer(key, L=1, **SIZES),
        fa.init_ed_transformer(key, L_enc=1, L_dec=1, **SIZES),
        fa.init_embeddings(key, N_V=11, d_e=8, ell_max=8),
        fa.init_attention(key, d_x=8, d_z=8, d_attn=4, d_out=8),
        fa.init_mh_attention(key, H=2, d_x=8, d_z=8, d_attn=4, d_mid=4, d_out=8),
        fa.init_layer_norm(8),
        fa.paper_sinusoidal_W_p(8, 8),
        fa.vaswani_sinusoidal_W_p(8, 8),
    ]
    for tree in made:
        assert {a.dtype for a in jax.tree.leaves(tree)} == {jnp.dtype(jnp.float64)}
    # the positional part of eq. 1 is float64-accurate: compare with the sinusoid in numpy
    W_p = fa.paper_sinusoidal_W_p(8, 8)
    assert float(W_p[0, 0]) == np.sin(1 / 8 ** (2 / 8))
    assert fa.init_d_transformer(key, L=1, dtype=jnp.float32, **SIZES).W_e.dtype == jnp.float32
    assert fa.vaswani_sinusoidal_W_p(8, 8, dtype=jnp.float32).dtype == jnp.float32


@pytest.fixture(scope="module")
def ed_theta():
    return fa.init_ed_transformer(jax.random.key(1), L_enc=1, L_dec=1, **SIZES)


def test_2_activation_is_an_option_of_every_algorithm_8_form(ed_theta):
    for fn in (
        fa.ed_transformer,
        fa.ed_inference,
        fa.ed_inference_cached,
        fa.ed_inference_cached_batch,
    ):
        assert inspect.signature(fn).parameters["activation"].default is fa.relu
    z, x = jnp.asarray([1, 2, 3]), jnp.asarray([9, 4])
    P_gelu = fa.ed_transformer(z, x, ed_theta, activation=fa.gelu)
    np.testing.assert_allclose(
        P_gelu, fa.softmax(fa.ed_transformer_logits(z, x, ed_theta, activation=fa.gelu))
    )
    assert not np.allclose(P_gelu, fa.ed_transformer(z, x, ed_theta))
    key = jax.random.key(2)
    for act in (fa.relu, fa.gelu):  # literal and cached agree for either activation
        literal = fa.ed_inference(z, ed_theta, key, tau=0, activation=act)
        np.testing.assert_array_equal(
            fa.ed_inference_cached(z, ed_theta, key, tau=0, activation=act), literal
        )


def test_3_vmap_of_algorithm_15_over_keys_is_refused_with_the_batched_form_named(ed_theta):
    keys = jax.random.split(jax.random.key(3), 2)
    with pytest.raises(
        TypeError, match=r"EDInference \(Algorithm 15\): argument 'key'.*ed_inference_cached_batch"
    ):
        jax.vmap(lambda k: fa.ed_inference(jnp.asarray([1, 2]), ed_theta, k))(keys)
    # what the message recommends works: one x̂ per key
    assert len(fa.ed_inference_cached_batch([jnp.asarray([1, 2])] * 2, ed_theta, keys)) == 2
    # Algorithm 14 can be vmapped over keys (fixed ℓ_gen): the contrast the issue names
    d = fa.init_d_transformer(jax.random.key(0), L=1, **SIZES)
    ys = jax.vmap(lambda k: fa.d_inference(jnp.asarray([1, 2]), d, k, ell_gen=2))(keys)
    assert ys.shape == (2, 2)


def test_4_argument_order_theta_first_in_losses_last_in_algorithms():
    """algorithms.md ("Argument order"): the losses take θ first because jax.grad differentiates
    the first argument; every other algorithm takes its sequences first and θ after them."""
    for fn in (fa.d_loss, fa.e_loss, fa.ed_loss):
        assert next(iter(inspect.signature(fn).parameters)) == "theta", fn.__name__
    for fn in (
        fa.d_transformer,
        fa.e_transformer,
        fa.ed_transformer,
        fa.d_training,
        fa.e_training,
        fa.ed_training,
        fa.d_inference,
        fa.ed_inference,
        fa.d_inference_cached,
        fa.ed_inference_cached,
    ):
        names = list(inspect.signature(fn).parameters)
        assert "theta" in names and names.index("theta") in (1, 2), fn.__name__
        assert all(names.index("theta") > names.index(s) for s in ("x", "z", "data") if s in names)


def test_5_batch_forms_take_masks_as_optional_keywords(ed_theta):
    for fn, name in (
        (fast.e_transformer_logits_batch, "valid"),
        (fast.ed_transformer_logits_batch, "z_valid"),
    ):
        p = inspect.signature(fn).parameters[name]
        assert p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is None
    zs, xs = jnp.asarray([[1, 2, 3], [4, 5, 6]]), jnp.asarray([[9, 1], [9, 2]])
    np.testing.assert_array_equal(
        fast.ed_transformer_logits_batch(zs, xs, ed_theta),
        fast.ed_transformer_logits_batch(zs, xs, ed_theta, z_valid=jnp.ones((2, 3), bool)),
    )


def test_6_masking_helpers_are_exported_and_read_the_mask_token_from_theta():
    assert fa.mask_tokens is not None and fa.draw_mask is not None
    theta = fa.init_e_transformer(jax.random.key(0), L=1, **SIZES)
    x = jnp.asarray([1, 2, 3, 4, 5, 6])
    key = jax.random.key(5)
    x_tilde = np.asarray(fa.mask_tokens(key, x, theta, p_mask=0.5))
    coins = np.asarray(fa.draw_mask(key, 6, 0.5, SIZES["ell_max"]))
    np.testing.assert_array_equal(x_tilde, np.where(coins, SIZES["N_V"] - 3, x))
    assert 0 < coins.sum() < 6  # the key chosen masks some but not all: both branches seen


def test_7_batched_inference_returns_a_list_in_both_forms_and_masks_may_be_rectangular(ed_theta):
    d = fa.init_d_transformer(jax.random.key(0), L=1, **SIZES)
    keys = jax.random.split(jax.random.key(6), 2)
    prompts = [jnp.asarray([1, 2, 3]), jnp.asarray([4])]
    ys = cache.d_inference_cached_batch(prompts, d, keys, ell_gen=2)
    xs = cache.ed_inference_cached_batch(prompts, ed_theta, keys)
    assert isinstance(ys, list) and isinstance(xs, list) and len(ys) == len(xs) == 2
    for b in range(2):
        np.testing.assert_array_equal(
            ys[b], fa.d_inference_cached(prompts[b], d, keys[b], ell_gen=2)
        )
    # a rectangular causal mask: 2 new queries (positions 3, 4) against 5 keys
    expected = np.array([[t_z <= t_x for t_x in (3, 4)] for t_z in range(5)])
    np.testing.assert_array_equal(fa.unidirectional_mask(5, 2), expected)
    np.testing.assert_array_equal(fa.unidirectional_mask(4, 4), fa.unidirectional_mask(4))
    with pytest.raises(ValueError, match="unidirectional_mask.*'ell_x'"):
        fa.unidirectional_mask(2, 3)
