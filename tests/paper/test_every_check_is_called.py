"""Every entry point calls every check it documents, and every default is the documented one.

Written against the kinds of gap that mutants survived on a fresh sample (issue 26): a check
present in one algorithm but not exercised in another, a default nobody asserted, an entry of
the θ-class table nobody used, the padded encoder path with ℓ_z = d_e (where rows and columns
cannot be told apart). Each case runs every algorithm, not the one a mutant happened to hit.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import formal_algorithms as fa
from formal_algorithms.paper import architectures, training
from formal_algorithms.practice import cache

SIZES = dict(N_V=9, ell_max=8, H=2, d_e=6, d_mlp=10)


@pytest.fixture(scope="module")
def thetas():
    key = jax.random.key(3)
    return {
        "ed": fa.init_ed_transformer(key, L_enc=1, L_dec=1, **SIZES),
        "e": fa.init_e_transformer(key, L=1, **SIZES),
        "d": fa.init_d_transformer(key, L=1, **SIZES),
    }


X = jnp.asarray([1, 2, 3, 4])

# (name, needs θ of, call(θ, **kw)): every algorithm of §6-7 that takes an activation and ε
FORWARDS = [
    ("EDTransformer (Algorithm 8)", "ed", lambda t, **kw: fa.ed_transformer(X, X, t, **kw)),
    ("EDTransformer (Algorithm 8)", "ed", lambda t, **kw: fa.ed_transformer_logits(X, X, t, **kw)),
    ("EDTransformer (Algorithm 8)", "ed", lambda t, **kw: architectures.ed_encode(X, t, **kw)),
    ("ETransformer (Algorithm 9)", "e", lambda t, **kw: fa.e_transformer(X, t, **kw)),
    ("ETransformer (Algorithm 9)", "e", lambda t, **kw: fa.e_transformer_logits(X, t, **kw)),
    ("DTransformer (Algorithm 10)", "d", lambda t, **kw: fa.d_transformer(X, t, **kw)),
    ("DTransformer (Algorithm 10)", "d", lambda t, **kw: fa.d_transformer_logits(X, t, **kw)),
]


@pytest.mark.parametrize("algorithm, kind, call", FORWARDS)
def test_every_forward_checks_its_activation_and_eps(thetas, algorithm, kind, call):
    theta = thetas[kind]
    with pytest.raises(
        TypeError, match=rf"{re.escape(algorithm)}.*'activation' must be a function"
    ):
        call(theta, activation="gelu")
    for eps in (-1.0, float("nan")):
        with pytest.raises(ValueError, match=rf"{re.escape(algorithm)}.*'eps'"):
            call(theta, eps=eps)


# Every algorithm that takes θ, called with θ of each other class: the table of which class each
# algorithm needs is exercised row by row (8, 9, 10, 11, 12, 13, 14, 15, and the cached forms).
KEY = jax.random.key(0)
ENTRIES = [
    ("EDTransformer (Algorithm 8)", "ed", lambda t: fa.ed_transformer(X, X, t)),
    ("ETransformer (Algorithm 9)", "e", lambda t: fa.e_transformer(X, t)),
    ("DTransformer (Algorithm 10)", "d", lambda t: fa.d_transformer(X, t)),
    ("Algorithm 11", "ed", lambda t: training.ed_loss(t, X, X)),
    ("Algorithm 11", "ed", lambda t: fa.ed_training([(X, X)], t, N_epochs=1, eta=0.1)),
    ("Algorithm 12", "e", lambda t: training.e_loss(t, X, X)),
    ("Algorithm 12", "e", lambda t: fa.e_training([X], t, KEY, N_epochs=1, eta=0.1, p_mask=0.5)),
    ("Algorithm 13", "d", lambda t: training.d_loss(t, X)),
    ("Algorithm 13", "d", lambda t: fa.d_training([X], t, N_epochs=1, eta=0.1)),
    ("Algorithm 14", "d", lambda t: fa.d_inference(X, t, KEY, ell_gen=1)),
    ("Algorithm 14", "d", lambda t: fa.d_inference_cached(X, t, KEY, ell_gen=1)),
    ("Algorithm 15", "ed", lambda t: fa.ed_inference(X, t, KEY, max_length=3)),
    ("Algorithm 15", "ed", lambda t: fa.ed_inference_cached(X, t, KEY, max_length=3)),
]
CLASSES = {"ed": "EDTransformerParams", "e": "ETransformerParams", "d": "DTransformerParams"}


@pytest.mark.parametrize("algorithm, kind, call", ENTRIES)
def test_every_algorithm_refuses_theta_of_the_other_classes(thetas, algorithm, kind, call):
    for other in set(CLASSES) - {kind}:
        with pytest.raises(
            TypeError, match=rf"{re.escape(algorithm)}.*'theta' must be {CLASSES[kind]}"
        ):
            call(thetas[other])
    call(thetas[kind])  # and accepts its own


@pytest.mark.parametrize(
    "algorithm, call",
    [
        ("Algorithm 11", lambda t: training.ed_loss(t["ed"], X, jnp.asarray([1, 99]))),
        ("Algorithm 12", lambda t: training.e_loss(t["e"], X, jnp.asarray([1, 2, 3, 99]))),
        ("Algorithm 12", lambda t: training.e_loss(t["e"], jnp.asarray([1, 2, 3, 99]), X)),
        ("Algorithm 13", lambda t: training.d_loss(t["d"], jnp.asarray([1, 99]))),
    ],
)
def test_every_loss_checks_its_tokens(thetas, algorithm, call):
    with pytest.raises(ValueError, match=rf"{re.escape(algorithm)}.*token ids \[99\] outside"):
        call(thetas)


@pytest.mark.parametrize(
    "init, kw",
    [
        (fa.init_ed_transformer, dict(L_enc=1, L_dec=1)),
        (fa.init_e_transformer, dict(L=1)),
        (fa.init_d_transformer, dict(L=1)),
    ],
)
def test_every_init_defaults_to_an_untied_unembedding_and_heads_of_d_e_over_H(init, kw):
    theta = init(jax.random.key(0), **kw, **SIZES)
    assert theta.W_u is not None  # tied=False unless asked
    W = jax.tree.leaves(theta.enc[0].W if hasattr(theta, "enc") else theta.layers[0].W)
    assert W[0].shape == (2, 3, 6)  # W_q: H = 2 heads of d_attn = d_e / H = 3
    assert init(jax.random.key(0), **kw, **SIZES, tied=True).W_u is None


def test_the_padded_encoder_path_with_d_e_unequal_to_ell_z(thetas):
    """ed_encode with ``valid``: the real columns equal the unpadded z's, for ℓ_z ≠ d_e (a mask
    built from the wrong axis of Z is then a wrong shape, not a silent equality)."""
    theta = thetas["ed"]
    z = jnp.asarray([1, 2, 3])
    padded = jnp.asarray([1, 2, 3, 0, 0])  # ℓ_z = 5 ≠ d_e = 6
    valid = jnp.asarray([True, True, True, False, False])
    Z = architectures.ed_encode(padded, theta, valid=valid)
    assert Z.shape == (6, 5)
    np.testing.assert_allclose(Z[:, :3], architectures.ed_encode(z, theta), atol=1e-12)


@pytest.mark.parametrize("bad", [-1, 2.5, True])
def test_unidirectional_mask_refuses_a_size_that_is_not_a_positive_integer(bad):
    with pytest.raises((TypeError, ValueError), match=r"unidirectional_mask \(eq. 3\).*'ell'"):
        fa.unidirectional_mask(bad)
    with pytest.raises((TypeError, ValueError), match=r"unidirectional_mask \(eq. 3\).*'ell_x'"):
        fa.unidirectional_mask(4, bad)


@pytest.mark.parametrize(
    "keys", [[0, 1], np.zeros((2, 3), np.uint32), np.zeros((2, 2), np.int32), "keys"]
)
def test_the_batched_cached_forms_refuse_keys_that_are_not_keys(thetas, keys):
    prompts = [X[:2], X[:3]]
    with pytest.raises(TypeError, match=r"Algorithm 14.*'keys' must hold one key per sequence"):
        cache.d_inference_cached_batch(prompts, thetas["d"], keys, ell_gen=1)
    with pytest.raises(TypeError, match=r"Algorithm 15.*'keys' must hold one key per sequence"):
        cache.ed_inference_cached_batch(prompts, thetas["ed"], keys, max_length=3)


def test_bidirectional_mask_refuses_a_negative_size():
    with pytest.raises(ValueError, match=r"bidirectional_mask \(eq. 3\).*'ell_z'"):
        fa.bidirectional_mask(-1, 2)
    with pytest.raises(ValueError, match=r"bidirectional_mask \(eq. 3\).*'ell_x'"):
        fa.bidirectional_mask(2, -1)


def test_embed_takes_a_list_of_token_ids_as_an_array(thetas):
    theta = thetas["d"]
    np.testing.assert_array_equal(
        fa.embed([1, 2, 3], theta.W_e, theta.W_p), fa.embed(X[:3], theta.W_e, theta.W_p)
    )


def test_the_literal_inference_names_a_step_without_a_distribution(thetas):
    """A NaN in θ gives logits with no distribution: Algorithm 14 names θ's leaf, not a token."""
    theta = thetas["d"]._replace(gamma=thetas["d"].gamma.at[0].set(jnp.nan))
    with pytest.raises(ValueError, match=r"Algorithm 14.*theta\.gamma is not finite"):
        fa.d_inference(X, theta, KEY, ell_gen=2)


def test_a_plain_dict_theta_is_told_how_to_build_the_class(thetas):
    plain = dict(thetas["d"]._asdict())
    with pytest.raises(
        TypeError, match=r"plain dict .*build it with DTransformerParams\(\*\*theta\)"
    ):
        fa.d_transformer(X, plain)
    del plain["W_u"]
    with pytest.raises(TypeError, match=r"missing \['W_u'\]"):
        fa.d_transformer(X, plain)


def test_softmax_of_bfloat16_scores_is_computed_in_float32():
    """Eq. 2 on 1,000 bfloat16 scores: within half a bfloat16 unit (2⁻⁹) of the float64 softmax of
    the same numbers, which only a float32 computation rounded once at the end achieves
    (computed in bfloat16 throughout, the error is about 3.6e-3)."""
    A = jnp.asarray(np.random.default_rng(0).normal(size=1000) * 3, jnp.bfloat16)
    a = np.asarray(A, np.float64)
    expected = np.exp(a - a.max()) / np.exp(a - a.max()).sum()
    got = np.asarray(fa.softmax(A), np.float64)
    assert fa.softmax(A).dtype == jnp.bfloat16
    assert np.abs(got - expected).max() / expected.max() < 2**-9


# ------------------------------------------------------------- fresh seed 505 (issue 26)

V = jnp.ones(4, bool)
BAD = jnp.asarray([1, 2, 99, 4])


@pytest.mark.parametrize(
    "algorithm, name, call",
    [
        ("Algorithm 12", "x", lambda t: training.e_transformer_logits_padded(BAD, V, t["e"])),
        ("Algorithm 11", "z", lambda t: training.ed_transformer_logits_padded(BAD, V, X, t["ed"])),
        ("Algorithm 11", "x", lambda t: training.ed_transformer_logits_padded(X, V, BAD, t["ed"])),
        ("Algorithm 13", "x", lambda t: training.d_loss_padded(t["d"], BAD, V)),
        ("Algorithm 12", "x", lambda t: training.e_loss_padded(t["e"], X, BAD, V)),
        ("Algorithm 11", "x", lambda t: training.ed_loss_padded(t["ed"], X, V, BAD, V)),
    ],
)
def test_every_padded_form_checks_its_tokens(thetas, algorithm, name, call):
    """The padded forms check their own tokens, under their own names (a mutant that dropped
    the check was caught only by the unpadded algorithm's message); Algorithm 12's padded loss
    checks its targets too (they were not checked: JAX clamped an id of 99 silently)."""
    with pytest.raises(
        ValueError, match=rf"{algorithm}\): argument '{name}' holds token ids \[99\]"
    ):
        call(thetas)


def test_every_training_loop_checks_each_sequence_by_its_index(thetas):
    """Algorithms 11-13 name the sequence of ``data`` that holds a bad token."""
    bad = [X, BAD]
    for algorithm, call in (
        ("Algorithm 12", lambda: training.e_training(bad, thetas["e"], jax.random.key(0), N_epochs=1, eta=0.1, p_mask=0.5)),
        ("Algorithm 13", lambda: training.d_training(bad, thetas["d"], N_epochs=1, eta=0.1)),
        ("Algorithm 11", lambda: training.ed_training([(X, X), (X, BAD)], thetas["ed"], N_epochs=1, eta=0.1)),
    ):  # fmt: skip
        with pytest.raises(ValueError, match=rf"{algorithm}\): argument 'data\[1\]"):
            call()


def test_special_tokens_needs_three_ids_and_three_are_enough():
    assert fa.special_tokens(3) == dict(mask_token=0, bos_token=1, eos_token=2)
    with pytest.raises(ValueError, match=r"special_tokens: argument 'N_V' = 2 must be at least 3"):
        fa.special_tokens(2)


@pytest.mark.parametrize("norm", [fa.layer_norm, fa.layer_norm_columns])
def test_a_norm_names_the_one_parameter_of_the_wrong_length(norm):
    X4 = jnp.ones(4) if norm is fa.layer_norm else jnp.ones((4, 2))
    with pytest.raises(ValueError, match=r"argument 'gamma' has shape \(3,\), expected \(4,\)"):
        norm(X4, jnp.ones(3), jnp.zeros(4))
    with pytest.raises(ValueError, match=r"argument 'beta' has shape \(5,\), expected \(4,\)"):
        norm(X4, jnp.ones(4), jnp.zeros(5))
