"""Behaviours of the paper's algorithms and their input checks that a sampled mutation run found
unpinned (docs/mutation.md, tools/mutate.py): each test fails on a one-token change of the code
that the rest of the suite let pass.

- Algorithm 14's and 15's default temperature is 1;
- H need not divide d_e when d_attn and d_mid are both given (what the error message advises);
  giving only one of them is refused; the specs' default is an untied W_u;
- ``check_params`` without an algorithm names θ's class, and Algorithm 4 names a non-matrix X or Z;
- Algorithm 14 compiles its step once per length, whatever the prompt's integer dtype (the tokens
  are cast to int32 on the host), and Algorithm 15 its encoder once per length of z.
"""

import contextlib
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from params import perturbed

import formal_algorithms as fa
from formal_algorithms.paper import parameters

# Shapes of their own, so that no other test has compiled these executables before.
D_HP = dict(N_V=9, ell_max=5, L=1, H=2, d_e=4, d_mlp=6)
ED_HP = dict(N_V=9, ell_max=5, L_enc=1, L_dec=1, H=2, d_e=4, d_mlp=6)


@pytest.fixture(scope="module")
def d_theta():
    theta = fa.init_d_transformer(jax.random.key(0), **D_HP, dtype=jnp.float64)
    return perturbed(theta._replace(W_e=30 * theta.W_e, W_p=30 * theta.W_p), 1)


@pytest.fixture(scope="module")
def ed_theta():
    theta = fa.init_ed_transformer(jax.random.key(2), **ED_HP, dtype=jnp.float64)
    return perturbed(theta._replace(W_e=30 * theta.W_e, W_p=30 * theta.W_p), 3)


def test_the_default_temperature_is_one(d_theta, ed_theta):
    """τ left out samples as τ = 1, and τ = 2 gives other tokens for some key (so a default
    other than 1 would show)."""
    keys = jax.random.split(jax.random.key(5), 5)
    x, z = jnp.asarray([1, 2]), jnp.asarray([3, 4])
    d = lambda key, **kw: np.asarray(fa.d_inference(x, d_theta, key, ell_gen=3, **kw))  # noqa: E731
    ed = lambda key, **kw: np.asarray(fa.ed_inference(z, ed_theta, key, **kw))  # noqa: E731
    for f in (d, ed):
        for key in keys:
            np.testing.assert_array_equal(f(key), f(key, tau=1.0))
        assert any(not np.array_equal(f(k, tau=1.0), f(k, tau=2.0)) for k in keys)


SMALL = dict(N_V=7, ell_max=4, H=3, d_e=8, d_mlp=5)
INITS = [
    (fa.init_d_transformer, dict(L=1)),
    (fa.init_e_transformer, dict(L=1)),
    (fa.init_ed_transformer, dict(L_enc=1, L_dec=1)),
]


@pytest.mark.parametrize("init, depth", INITS, ids=["D", "E", "ED"])
def test_heads_need_not_divide_d_e_given_d_attn_and_d_mid(init, depth):
    """H = 3 does not divide d_e = 8: with d_attn = 2 and d_mid = 5 the model is built with those
    head sizes (W_o is d_e × H·d_mid); with only one of them it is refused."""
    theta = init(jax.random.key(0), **SMALL, **depth, d_attn=2, d_mid=5)
    hp = fa.hyperparameters(theta)
    assert (hp["H"], hp["d_attn"], hp["d_mid"]) == (3, 2, 5)
    first = theta.layers[0].W if hasattr(theta, "layers") else theta.dec[0].W_ed
    assert first.W_q.shape == (3, 2, 8) and first.W_v.shape == (3, 5, 8)
    assert first.W_o.shape == (8, 15)
    fa.check_params(theta)
    for one in (dict(d_attn=2), dict(d_mid=5)):
        with pytest.raises(ValueError, match=r"'H' = 3 does not divide d_e = 8"):
            init(jax.random.key(0), **SMALL, **depth, **one)


def test_the_specs_default_is_an_untied_W_u():
    common = dict(N_V=7, ell_max=4, H=2, d_e=4, d_mlp=5)
    specs = [
        parameters.d_transformer_spec(**common, L=1),
        parameters.e_transformer_spec(**common, L=1),
        parameters.ed_transformer_spec(**common, L_enc=1, L_dec=1),
    ]
    for spec in specs:
        assert spec.W_u is not None and spec.W_u.shape == (7, 4)


def test_check_params_without_an_algorithm_names_the_class(d_theta):
    bad = d_theta._replace(gamma=jnp.ones(3))
    with pytest.raises(ValueError, match=r"^DTransformerParams: argument 'theta\.gamma' has shape"):
        fa.check_params(bad)


def test_attention_names_a_non_matrix_X_or_Z():
    W = fa.init_attention(jax.random.key(0), 3, 3, 2, 3)
    X = jnp.ones((3, 2), jnp.float32)
    for f in (
        fa.attention,
        lambda X, Z, W: fa.mh_attention(
            X, Z, fa.init_mh_attention(jax.random.key(0), 1, 3, 3, 2, 3, 3)
        ),
    ):
        with pytest.raises(ValueError, match=r"\(Algorithm [45]\): argument 'Z' must be a matrix"):
            f(X, jnp.ones(3, jnp.float32), W)
        with pytest.raises(ValueError, match=r"\(Algorithm [45]\): argument 'X' must be a matrix"):
            f(jnp.ones(3, jnp.float32), X, W)


@contextlib.contextmanager
def compilations(name):
    """Collect the names of the functions JAX compiles that contain ``name``."""
    seen = []

    class Handler(logging.Handler):
        def emit(self, record):
            message = record.getMessage()
            if message.startswith("Compiling") and name in message.split(" with ")[0]:
                seen.append(message.split(" with ")[0])

    handler, logger = Handler(), logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles():
            yield seen
    finally:
        logger.removeHandler(handler)


def test_algorithm_14_compiles_once_per_length_whatever_the_token_dtype(d_theta):
    key = jax.random.key(0)
    first = fa.d_inference(jnp.asarray([1, 2], jnp.int32), d_theta, key, ell_gen=2)
    with compilations("d_step") as seen:
        for dtype in (jnp.int64, jnp.int16, jnp.uint8):
            again = fa.d_inference(jnp.asarray([1, 2], dtype), d_theta, key, ell_gen=2)
            np.testing.assert_array_equal(again, first)
            assert again.dtype == dtype
    assert seen == []


def test_algorithm_15_compiles_once_per_length_whatever_the_token_dtype(ed_theta):
    key = jax.random.key(0)
    first = fa.ed_inference(jnp.asarray([1, 2, 3], jnp.int32), ed_theta, key, max_length=3)
    with compilations("ed_encode") as seen:
        for dtype in (jnp.int64, jnp.int16):
            again = fa.ed_inference(jnp.asarray([1, 2, 3], dtype), ed_theta, key, max_length=3)
            np.testing.assert_array_equal(again, first)
    assert seen == []


def test_key_padding_mask_takes_one_flag_per_context_token():
    np.testing.assert_array_equal(
        fa.key_padding_mask(jnp.asarray([True, False]), 3), [[True] * 3, [False] * 3]
    )
    with pytest.raises(ValueError, match=r"key_padding_mask: argument 'valid' must be a 1-D"):
        fa.key_padding_mask(jnp.ones((2, 3), bool), 3)


def test_a_padded_context_leaves_the_decoder_unchanged(ed_theta):
    """Algorithm 8 with z padded at its end and ``z_valid``: the cross-attention mask is
    (ℓ_z, ℓ_x) (here ℓ_x = 3 ≠ d_e = 4) and the logits equal those of the unpadded z."""
    z, x = jnp.asarray([3, 4]), jnp.asarray([7, 1, 2])
    padded, valid = jnp.asarray([3, 4, 0, 0]), jnp.asarray([True, True, False, False])
    np.testing.assert_allclose(
        fa.ed_transformer_logits(padded, x, ed_theta, z_valid=valid),
        fa.ed_transformer_logits(z, x, ed_theta),
        rtol=0,
        atol=1e-12,
    )


def test_an_encoder_decoder_may_lack_one_stack():
    """Algorithm 8 with L_enc = 0 (Z is the embedded z) or L_dec = 0 is a valid θ."""
    for L_enc, L_dec in ((0, 1), (1, 0)):
        theta = fa.init_ed_transformer(
            jax.random.key(0), **{**ED_HP, "L_enc": L_enc, "L_dec": L_dec}
        )
        hp = fa.hyperparameters(theta)
        assert (hp["L_enc"], hp["L_dec"], hp["H"], hp["d_mlp"]) == (L_enc, L_dec, 2, 6)
        fa.check_params(theta)


def test_a_theta_of_another_algorithm_is_named(d_theta, ed_theta):
    z = jnp.asarray([1, 2])
    with pytest.raises(
        TypeError,
        match=r"8\): argument 'theta' must be EDTransformerParams \(θ of Algorithm 8\), got DTransformerParams \(θ of Algorithm 10\)",
    ):
        fa.ed_transformer(z, z, d_theta)
    with pytest.raises(
        TypeError,
        match=r"10\): argument 'theta' must be DTransformerParams \(θ of Algorithm 10\), got EDTransformerParams \(θ of Algorithm 8\)",
    ):
        fa.d_transformer(z, ed_theta)


def test_embeddings_are_drawn_with_std_0_02():
    """W_e and W_p ~ N(0, 0.02²) (GPT-2's choice, algorithms.md): 32,000 draws each put the
    sample standard deviation within 2 % of 0.02."""
    W_e, W_p = fa.init_embeddings(jax.random.key(0), N_V=500, d_e=64, ell_max=500)
    for W in (W_e, W_p):
        assert abs(float(jnp.std(W)) - 0.02) < 0.0004 and abs(float(jnp.mean(W))) < 0.0004


def test_the_losses_take_a_python_list(d_theta):
    np.testing.assert_allclose(
        fa.d_loss(d_theta, [1, 2, 3]), fa.d_loss(d_theta, jnp.asarray([1, 2, 3])), rtol=1e-15
    )


def _wrong_first(layers, field):
    first = layers[0]
    return (first._replace(**{field: jnp.ones(getattr(first, field).shape[0] + 1)}), *layers[1:])


def test_malformed_theta_is_named_by_the_training_algorithms(d_theta, ed_theta):
    """θ is checked first, before η (here invalid too) and the data."""
    x = jnp.asarray([1, 2, 3])
    bad_ed = ed_theta._replace(dec=_wrong_first(ed_theta.dec, "gamma3"))
    with pytest.raises(ValueError, match=r"EDTraining \(Algorithm 11\): argument 'theta\.dec\[0\]"):
        fa.ed_training([(x, x)], bad_ed, N_epochs=1, eta=-1.0)
    bad_d = d_theta._replace(layers=_wrong_first(d_theta.layers, "gamma1"))
    with pytest.raises(ValueError, match=r"DTraining \(Algorithm 13\): argument 'theta\.layers"):
        fa.d_training([x], bad_d, N_epochs=1, eta=-1.0)
    e_theta = fa.init_e_transformer(jax.random.key(0), **{**D_HP, "L": 1})
    bad_e = e_theta._replace(layers=_wrong_first(e_theta.layers, "gamma1"))
    with pytest.raises(ValueError, match=r"ETraining \(Algorithm 12\): argument 'theta\.layers"):
        fa.e_training([x], bad_e, jax.random.key(0), N_epochs=1, eta=-1.0, p_mask=0.5)


def test_a_missing_leaf_is_named_as_none(d_theta):
    with pytest.raises(TypeError, match=r"'theta\.gamma' must be an array .*, got None$"):
        fa.check_params(d_theta._replace(gamma=None))
