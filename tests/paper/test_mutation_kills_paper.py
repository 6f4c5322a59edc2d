"""Behaviours of the paper's algorithms and their input checks that a sampled mutation run found
unpinned (docs/mutation.md, tools/mutate.py): each test fails on a one-token change of the code
that the rest of the suite let pass.

- Algorithm 14's and 15's default temperature is 1;
- H need not divide d_e when d_attn and d_mid are both given (what the error message advises);
  giving only one of them is refused; the specs' default is an untied W_u;
- ``check_params`` without an algorithm names θ's class, and Algorithm 4 names a non-matrix X or Z;
- Algorithm 14 compiles its step once per length, whatever the prompt's integer dtype (the tokens
  are cast to int32 on the host), and Algorithm 15 its encoder once per length of z;
- (seed 707) every init and sinusoid refuses each size below its minimum, a float or a bool by
  name, and defaults to JAX's float, honours a float dtype and refuses an integer one; every
  branch of every helper of ``paper/checks.py`` (``check_key``'s raw key needs uint32 *and*
  shape (2,)); every padded form checks the shape and order of each ``valid`` it takes;
- (seed 909) every mask builder of eq. 3 is its definition for every size, the unidirectional
  mask's ``ell_x`` form (the last ℓ_x queries) included.
"""

import contextlib
import logging
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from params import perturbed

import formal_algorithms as fa
from formal_algorithms.paper import checks, inference, parameters, training

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


# ------------------------------------------------------------- fresh seed 707 (issue 26)

KEY = jax.random.key(0)
TINY = dict(N_V=5, ell_max=3, H=2, d_e=4, d_mlp=3)
# Each function that takes sizes, the name its errors give, valid sizes, and each size's minimum
# (1 unless listed: θ's N_V leaves room for the three special tokens, an encoder-decoder may
# lack one stack).
SIZED = [
    ("init_embeddings", lambda **kw: fa.init_embeddings(KEY, **kw), dict(N_V=5, d_e=4, ell_max=3), {}),
    ("init_layer_norm", fa.init_layer_norm, dict(d_e=4), {}),
    ("init_attention", lambda **kw: fa.init_attention(KEY, **kw), dict(d_x=3, d_z=2, d_attn=2, d_out=3), {}),
    ("init_mh_attention", lambda **kw: fa.init_mh_attention(KEY, **kw), dict(H=2, d_x=3, d_z=2, d_attn=2, d_mid=2, d_out=3), {}),
    ("paper_sinusoidal_W_p", fa.paper_sinusoidal_W_p, dict(d_e=4, ell_max=3), {}),
    ("vaswani_sinusoidal_W_p", fa.vaswani_sinusoidal_W_p, dict(d_e=4, ell_max=3), {}),
    ("init_d_transformer (Algorithm 10)", lambda **kw: fa.init_d_transformer(KEY, **kw), dict(TINY, L=1, d_attn=2, d_mid=2), dict(N_V=3)),
    ("init_e_transformer (Algorithm 9)", lambda **kw: fa.init_e_transformer(KEY, **kw), dict(TINY, L=1, d_f=4, d_attn=2, d_mid=2), dict(N_V=3)),
    ("init_ed_transformer (Algorithm 8)", lambda **kw: fa.init_ed_transformer(KEY, **kw), dict(TINY, L_enc=1, L_dec=1, d_attn=2, d_mid=2), dict(N_V=3, L_enc=0, L_dec=0)),
]  # fmt: skip
SIZE_CASES = [
    pytest.param(name, call, sizes, argument, minimum.get(argument, 1), id=f"{name.split()[0]}-{argument}")
    for name, call, sizes, minimum in SIZED
    for argument in sizes
]  # fmt: skip


@pytest.mark.parametrize("name, call, sizes, argument, minimum", SIZE_CASES)
def test_every_sized_function_refuses_a_size_that_is_not_an_integer_at_least_its_minimum(
    name, call, sizes, argument, minimum
):
    """Every init (and the sinusoids) names each size argument that is below its minimum, a
    float or a bool; JAX would build empty arrays for 0 and fail on its own terms for -1.
    (``init_layer_norm`` checked neither its size nor its dtype; it does now.)"""
    prefix = re.escape(f"{name}: argument '{argument}'")
    low = minimum - 1
    with pytest.raises(ValueError, match=rf"^{prefix} = {low} must be at least {minimum}"):
        call(**{**sizes, argument: low})
    for bad in (2.5, True):
        with pytest.raises(TypeError, match=rf"^{prefix} must be an integer, got {bad!r}"):
            call(**{**sizes, argument: bad})


X64 = bool(jax.config.jax_enable_x64)
DEFAULT_FLOAT = np.dtype(np.float64 if X64 else np.float32)  # what jnp.asarray(1.0) gives
TYPED = [(name, call, sizes) for name, call, sizes, _ in SIZED]


@pytest.mark.parametrize("name, call, sizes", TYPED, ids=[t[0].split()[0] for t in TYPED])
def test_every_function_that_takes_a_dtype_defaults_to_jax_s_float_and_honours_a_float_one(
    name, call, sizes
):
    """``dtype`` left out gives JAX's default float (float64 here, with x64 on) in every leaf; a
    float dtype given is the dtype of every leaf; an integer dtype is refused by name."""
    for dtype, expected in (
        (None, DEFAULT_FLOAT),
        (jnp.float32, np.float32),
        (jnp.bfloat16, jnp.bfloat16),
    ):
        kw = {} if dtype is None else dict(dtype=dtype)
        leaves = jax.tree.leaves(call(**sizes, **kw))
        assert leaves and all(leaf.dtype == np.dtype(expected) for leaf in leaves), (dtype, name)
    with pytest.raises(TypeError, match=rf"^{re.escape(name)}: argument 'dtype' must be a float"):
        call(**sizes, dtype=jnp.int32)


def _key_cases():
    typed, raw = jax.random.key(0), jax.random.PRNGKey(0)
    refused = {
        "two typed keys": jax.random.split(typed, 2),
        "uint32 (3,)": jnp.zeros(3, jnp.uint32),
        "uint32 ()": jnp.zeros((), jnp.uint32),
        "int32 (2,)": jnp.zeros(2, jnp.int32),
        "float32 (2,)": jnp.zeros(2, jnp.float32),
        "int": 3,
    }
    accepted = {"typed ()": typed, "raw uint32 (2,)": raw}
    return refused, accepted


def test_check_key_accepts_exactly_one_typed_key_or_one_raw_uint32_pair():
    """A typed key of shape () or a raw key (uint32, shape (2,)): both conditions of the raw form
    matter, a uint32 array of another shape or another dtype of shape (2,) is refused by name."""
    refused, accepted = _key_cases()
    for label, key in refused.items():
        with pytest.raises(TypeError, match=r"^alg: argument 'key' must be one jax\.random key"):
            checks.check_key("alg", key)
            pytest.fail(label)
    for key in accepted.values():
        assert checks.check_key("alg", key) is None
    for bad in (None, {}):
        with pytest.raises(
            TypeError, match=rf"^alg: argument 'key' .*, got {re.escape(repr(bad))}$"
        ):
            checks.check_key("alg", bad)


def _raises(error, message):
    return (error, message)


OK = (None, None)
# Every branch of every helper of paper/checks.py: a refusal (its error and message) and the
# accepted case at the boundary beside it.
CHECK_BRANCHES = {
    "shape: rank": (lambda: checks.check_shape("a", "X", np.ones(2), (2, 3)), _raises(ValueError, r"'X' has shape \(2,\), expected \(2, 3\)")),
    "shape: a fixed dim": (lambda: checks.check_shape("a", "X", np.ones((2, 4)), (2, 3)), _raises(ValueError, r"'X' has shape \(2, 4\), expected \(2, 3\)")),
    "shape: a free dim": (lambda: checks.check_shape("a", "X", np.ones((2, 4)), (None, 3)), _raises(ValueError, r"'X' has shape \(2, 4\), expected \(\*, 3\)")),
    "shape: ok": (lambda: checks.check_shape("a", "X", np.ones((5, 3)), (None, 3)), OK),
    "tokens: 2-D": (lambda: checks.check_tokens("a", "x", np.ones((1, 2), int), 5), _raises(ValueError, r"'x' must be a 1-D token sequence, got shape \(1, 2\)")),
    "tokens: empty": (lambda: checks.check_tokens("a", "x", np.ones(0, int), 5), _raises(ValueError, r"'x' is empty")),
    "tokens: floats": (lambda: checks.check_tokens("a", "x", np.ones(2), 5), _raises(TypeError, r"'x' must hold integer token ids, got dtype float64")),
    "tokens: too long": (lambda: checks.check_tokens("a", "x", np.ones(4, int), 5, 3), _raises(ValueError, r"'x' has length 4 > ell_max = 3")),
    "tokens: negative": (lambda: checks.check_tokens("a", "x", np.asarray([0, -1]), 5), _raises(ValueError, r"'x' holds token ids \[-1\] outside \[0, N_V = 5\)")),
    "tokens: N_V": (lambda: checks.check_tokens("a", "x", np.asarray([5, 4, 6]), 5), _raises(ValueError, r"'x' holds token ids \[5, 6\] outside \[0, N_V = 5\)")),
    "tokens: ok": (lambda: checks.check_tokens("a", "x", np.asarray([0, 4, 4]), 5, 3), OK),
    "tokens: no ell_max": (lambda: checks.check_tokens("a", "x", np.zeros(50, int), 5), OK),
    "index: float": (lambda: checks.check_index("a", "i", 1.0, 3), _raises(TypeError, r"'i' must be an integer index, got dtype float64")),
    "index: negative": (lambda: checks.check_index("a", "i", -1, 3), _raises(ValueError, r"'i' = -1 is outside \[0, 3\)")),
    "index: size": (lambda: checks.check_index("a", "i", np.asarray([0, 3]), 3), _raises(ValueError, r"'i' = \[0, 3\] is outside \[0, 3\)")),
    "index: ok": (lambda: checks.check_index("a", "i", np.asarray([0, 2]), 3), OK),
    "mask: shape": (lambda: checks.check_mask("a", np.ones((2, 3), bool), 3, 2), _raises(ValueError, r"'Mask' has shape \(2, 3\), expected \(3, 2\)")),
    "mask: not 0/1": (lambda: checks.check_mask("a", np.full((3, 2), 2), 3, 2), _raises(TypeError, r"'Mask' must be boolean or 0/1, got dtype int64")),
    "mask: 0/1": (lambda: checks.check_mask("a", np.eye(3, 2, dtype=int), 3, 2), OK),
    "mask: bool": (lambda: checks.check_mask("a", np.ones((3, 2), bool), 3, 2), OK),
    "count: bool": (lambda: checks.check_count("a", "n", np.True_), _raises(TypeError, r"'n' must be an integer, got (np\.)?True_?")),
    "count: float": (lambda: checks.check_count("a", "n", 1.0), _raises(TypeError, r"'n' must be an integer, got 1\.0")),
    "count: below": (lambda: checks.check_count("a", "n", 1, 2), _raises(ValueError, r"'n' = 1 must be at least 2")),
    "token dtype: too narrow": (lambda: checks.check_token_dtype("a", "x", np.zeros(1, np.uint8), 257), _raises(TypeError, r"'x' has dtype uint8, which cannot hold .* up to N_V - 1 = 256")),
    "token dtype: just wide enough": (lambda: checks.check_token_dtype("a", "x", np.zeros(1, np.uint8), 256), OK),
    "eps: bool": (lambda: checks.check_eps("a", True), _raises(TypeError, r"'eps' must be a real number >= 0, got True")),
    "eps: str": (lambda: checks.check_eps("a", "1e-5"), _raises(TypeError, r"'eps' must be a real number")),
    "eps: a vector": (lambda: checks.check_eps("a", np.ones(1)), _raises(TypeError, r"'eps' must be a real number")),
    "eps: nan": (lambda: checks.check_eps("a", float("nan")), _raises(ValueError, r"'eps' must be a finite number >= 0, got nan")),
    "eps: inf": (lambda: checks.check_eps("a", float("inf")), _raises(ValueError, r"'eps' must be a finite number >= 0, got inf")),
    "eps: negative": (lambda: checks.check_eps("a", -1e-9), _raises(ValueError, r"'eps' must be a finite number >= 0, got -1e-09")),
    "eps: 0": (lambda: checks.check_eps("a", 0), OK),
    "activation: a name": (lambda: checks.check_activation("a", "gelu", 1e-5), _raises(TypeError, r"'activation' must be a function .*, got 'gelu'")),
    "activation: then eps": (lambda: checks.check_activation("a", fa.gelu, -1.0), _raises(ValueError, r"'eps' must be a finite number >= 0")),
    "activation: ok": (lambda: checks.check_activation("a", fa.gelu, 0.0), OK),
    "sizes: below the minimum": (lambda: checks.check_sizes("a", 2, n=None, m=1), _raises(ValueError, r"'m' = 1 must be at least 2")),
    "sizes: None skipped": (lambda: checks.check_sizes("a", n=None, m=1), OK),
}  # fmt: skip


@pytest.mark.parametrize("call, outcome", CHECK_BRANCHES.values(), ids=CHECK_BRANCHES.keys())
def test_every_branch_of_every_check_helper(call, outcome):
    error, message = outcome
    if error is None:
        assert call() is None
    else:
        with pytest.raises(error, match=rf"^a: argument {message}"):
            call()


def test_check_count_returns_a_plain_int_and_the_small_helpers_convert():
    for n in (2, np.int64(2), np.uint8(2)):
        assert type(checks.check_count("a", "n", n, 2)) is int
    assert checks.check_count("a", "n", 0) == 0  # the default minimum is 0
    for x in ([1, 2], (1, 2)):
        np.testing.assert_array_equal(checks.as_tokens(x), np.asarray([1, 2]))
        assert isinstance(checks.as_tokens(x), jax.Array)
    array = jnp.asarray([1, 2])
    assert checks.as_tokens(array) is array
    np.testing.assert_array_equal(checks.concrete(array), [1, 2])
    seen = []
    jax.jit(lambda x: seen.append(checks.concrete(x)) or x)(array)
    assert seen == [None]


def test_char_tokenizer_decode_refuses_an_unknown_special_mode_by_name():
    tokenizer = fa.CharTokenizer.from_text("ab")
    with pytest.raises(ValueError, match=r"^CharTokenizer\.decode: argument 'special' must be 'skip', 'show' or 'raise', got 'hide'$"):  # fmt: skip
        tokenizer.decode([0, 1], special="hide")
    assert tokenizer.decode([0, 1], special="show") == "ab"


T4 = jnp.asarray([1, 2, 3, 4])
# Every padded form and each of its ``valid`` arguments: (algorithm, argument, call(θs, valid)).
PADDED = [
    ("ETraining (Algorithm 12)", "x_valid", lambda t, v: training.e_transformer_logits_padded(T4, v, t["e"])),
    ("EDTraining (Algorithm 11)", "z_valid", lambda t, v: training.ed_transformer_logits_padded(T4, v, T4, t["ed"])),
    ("DTraining (Algorithm 13)", "x_valid", lambda t, v: training.d_loss_padded(t["d"], T4, v)),
    ("ETraining (Algorithm 12)", "x_valid", lambda t, v: training.e_loss_padded(t["e"], T4, T4, v)),
    ("EDTraining (Algorithm 11)", "z_valid", lambda t, v: training.ed_loss_padded(t["ed"], T4, v, T4, jnp.ones(4, bool))),
    ("EDTraining (Algorithm 11)", "x_valid", lambda t, v: training.ed_loss_padded(t["ed"], T4, jnp.ones(4, bool), T4, v)),
    ("ETraining (Algorithm 12)", "x_valid", lambda t, v: fa.mask_tokens(KEY, T4, t["e"], p_mask=0.5, valid=v)),
]  # fmt: skip
PADDED_IDS = ["e_logits", "ed_logits", "d_loss", "e_loss", "ed_loss-z", "ed_loss-x", "mask_tokens"]


@pytest.mark.parametrize("algorithm, argument, call", PADDED, ids=PADDED_IDS)
def test_every_padded_form_checks_the_shape_and_order_of_each_valid(
    d_theta, ed_theta, algorithm, argument, call
):
    """A ``valid`` of another shape than its tokens (one flag too many or too few, or a single
    flag that would broadcast) and one with padding before a real token are refused by the
    padded form's algorithm, naming the argument. (``ed_loss_padded`` checked neither for
    ``x_valid``; it does now.)"""
    thetas = dict(d=d_theta, ed=ed_theta, e=fa.init_e_transformer(KEY, **{**D_HP, "L": 1}))
    prefix = re.escape(f"{algorithm}: argument '{argument}'")
    for valid, shape in ((jnp.ones(5, bool), "(5,)"), (jnp.ones(1, bool), "(1,)"), (jnp.ones((1, 4), bool), "(1, 4)")):  # fmt: skip
        with pytest.raises(ValueError, match=rf"^{prefix} has shape {re.escape(shape)}, expected \(4,\)$"):  # fmt: skip
            call(thetas, valid)
    with pytest.raises(ValueError, match=rf"^{prefix} must be True…True False…False \(padding at the end\)$"):  # fmt: skip
        call(thetas, jnp.asarray([True, False, True, True]))


# ---------------------------------------------------------------------------------- seed 808
# Every function of Algorithms 1-7 and eq. 1-3 given a bad array argument: (function, argument,
# call). The refusal must name that function and that argument, not a function it calls later
# (deleting a function's own check must show even when a later check would still refuse).
F = lambda *shape: jnp.ones(shape)  # noqa: E731
I = lambda *shape: jnp.ones(shape, jnp.int32)  # noqa: E731
A1 = fa.init_attention(KEY, 4, 5, 3, 2)  # d_x = 4, d_z = 5, d_attn = 3, d_out = 2
MH = fa.init_mh_attention(KEY, 2, 4, 5, 3, 3, 2)
G, B = jnp.ones(4), jnp.zeros(4)
OWN_ARGUMENTS = {
    "token_embedding W_e vector": ("token_embedding (Algorithm 1)", "W_e", lambda: fa.token_embedding(1, F(4))),
    "positional_embedding W_p vector": ("positional_embedding (Algorithm 2)", "W_p", lambda: fa.positional_embedding(1, F(4))),
    "embed x matrix": ("embed (eq. 1)", "x", lambda: fa.embed(I(1, 1), F(4, 9), F(4, 5))),
    "embed W_p rows": ("embed (eq. 1)", "W_p", lambda: fa.embed(I(1), F(4, 9), F(3, 5))),
    "alg3 e matrix": ("single_query_attention (Algorithm 3)", "e", lambda: fa.single_query_attention(F(4, 1), F(5, 2), A1)),
    "alg3 e_ctx vector": ("single_query_attention (Algorithm 3)", "e_ctx", lambda: fa.single_query_attention(F(4), F(5), A1)),
    "alg3 e_ctx rows": ("single_query_attention (Algorithm 3)", "e_ctx", lambda: fa.single_query_attention(F(4), F(4, 2), A1)),
    "alg4 X rows": ("attention (Algorithm 4)", "X", lambda: fa.attention(F(3, 2), F(5, 2), A1)),
    "alg4 Z rows": ("attention (Algorithm 4)", "Z", lambda: fa.attention(F(4, 2), F(4, 2), A1)),
    "alg4 Mask": ("attention (Algorithm 4)", "Mask", lambda: fa.attention(F(4, 2), F(5, 3), A1, jnp.ones((2, 3), bool))),
    "alg5 X rows": ("mh_attention (Algorithm 5)", "X", lambda: fa.mh_attention(F(3, 2), F(5, 2), MH)),
    "alg5 Z rows": ("mh_attention (Algorithm 5)", "Z", lambda: fa.mh_attention(F(4, 2), F(4, 2), MH)),
    "alg5 Mask": ("mh_attention (Algorithm 5)", "Mask", lambda: fa.mh_attention(F(4, 2), F(5, 3), MH, jnp.ones((2, 3), bool))),
    "layer_norm e matrix": ("layer_norm (Algorithm 6)", "e", lambda: fa.layer_norm(F(4, 2), G, B)),
    "layer_norm_columns X vector": ("layer_norm (Algorithm 6)", "X", lambda: fa.layer_norm_columns(F(4), G, B)),
    "layer_norm_columns X 3-D": ("layer_norm (Algorithm 6)", "X", lambda: fa.layer_norm_columns(F(4, 2, 1), G, B)),
    "layer_norm_columns X int": ("layer_norm (Algorithm 6)", "X", lambda: fa.layer_norm_columns(I(4, 2), G, B)),
    "rms_norm e matrix": ("rms_norm", "e", lambda: fa.rms_norm(F(4, 2), G)),
    "rms_norm_columns X vector": ("rms_norm", "X", lambda: fa.rms_norm_columns(F(4), G)),
    "rms_norm_columns X 3-D": ("rms_norm", "X", lambda: fa.rms_norm_columns(F(4, 2, 1), G)),
    "rms_norm_columns X int": ("rms_norm", "X", lambda: fa.rms_norm_columns(I(4, 2), G)),
    "unembedding e rows": ("unembedding (Algorithm 7)", "e", lambda: fa.unembedding(F(3, 2), F(9, 4))),
    "unembedding W_u vector": ("unembedding (Algorithm 7)", "W_u", lambda: fa.unembedding(F(4, 2), F(4))),
    "softmax A int": ("softmax (eq. 2)", "A", lambda: fa.softmax(I(3, 2))),
    "softmax mask": ("softmax (eq. 2)", "mask", lambda: fa.softmax(F(3, 2), jnp.ones((2, 3), bool))),
    "log_softmax A int": ("log_softmax (eq. 2)", "A", lambda: fa.log_softmax(I(3, 2))),
    "log_softmax A 3-D": ("log_softmax (eq. 2)", "A", lambda: fa.log_softmax(F(3, 2, 1))),
    "causal_mask t_z matrix": ("causal_mask (eq. 3)", "t_z", lambda: fa.causal_mask(I(2, 2), jnp.arange(3))),
    "causal_mask t_x float": ("causal_mask (eq. 3)", "t_x", lambda: fa.causal_mask(jnp.arange(3), F(3))),
    "key_padding_mask valid matrix": ("key_padding_mask", "valid", lambda: fa.key_padding_mask(jnp.ones((2, 2), bool), 3)),
    "sample_token logits matrix": ("sample_token", "logits", lambda: fa.sample_token(KEY, F(3, 2), 1.0)),
}  # fmt: skip


@pytest.mark.parametrize(
    "algorithm, argument, call", OWN_ARGUMENTS.values(), ids=OWN_ARGUMENTS.keys()
)
def test_every_layer_level_function_names_its_own_bad_argument(algorithm, argument, call):
    """Seed 808: deleting ``single_query_attention``'s row check on ``e_ctx`` (a raw matmul
    error followed) or ``rms_norm_columns``' own check (``rms_norm`` then refused the column
    under the name ``e``) went unseen. Writing this table found three functions that checked
    nothing: ``log_softmax`` cast the log-probabilities of integer scores back to integers,
    ``causal_mask`` broadcast a matrix of positions into a 3-D mask (or failed in JAX), and
    ``mask_tokens`` (below). They check now. (``mlp`` still raises JAX's own error.)"""
    with pytest.raises((TypeError, ValueError), match=rf"^{re.escape(algorithm)}.*: argument {re.escape(repr(argument))} "):  # fmt: skip
        call()


def test_causal_mask_and_log_softmax_still_take_what_they_took():
    """Mask[i, j] = [[t_z[i] ≤ t_x[j]]], and log softmax by columns (numpy's, in float64)."""
    mask = fa.causal_mask(jnp.asarray([0, 2, 3]), jnp.asarray([1, 2]))
    np.testing.assert_array_equal(mask, [[True, True], [False, True], [False, False]])
    A = np.asarray([[0.0, 1.0], [2.0, -1.0], [0.5, 0.5]])
    expected = A - np.log(np.exp(A).sum(axis=0, keepdims=True))
    np.testing.assert_allclose(fa.log_softmax(jnp.asarray(A)), expected, rtol=1e-12)
    np.testing.assert_allclose(fa.log_softmax(jnp.asarray(A[:, 0])), expected[:, 0], rtol=1e-12)


def test_mask_tokens_and_draw_mask_name_each_bad_argument():
    """Algorithm 12, lines 4-6 as functions of their own checked nothing: a Python list raised
    ``AttributeError``, an id of 99, a θ of Algorithm 10 and p_mask = 2 were used silently. They
    are checked under Algorithm 12's name, like the padded loss they feed."""
    e = fa.init_e_transformer(KEY, **{**D_HP, "L": 1})
    alg12 = re.escape("ETraining (Algorithm 12): argument ")
    mask = lambda x, theta=e, **kw: fa.mask_tokens(KEY, x, theta, **{"p_mask": 0.5, **kw})  # noqa: E731
    cases = [
        (lambda: mask(jnp.asarray([[1, 2]])), "'x' must be a 1-D token sequence"),
        (lambda: mask(jnp.asarray([1, 99])), "'x' holds token ids [99]"),
        (lambda: mask(jnp.arange(6)), "'x' has length 6 > ell_max = 5"),
        (
            lambda: mask(T4, fa.init_d_transformer(KEY, **D_HP)),
            "'theta' must be ETransformerParams",
        ),
        (lambda: mask(T4, p_mask=2.0), "'p_mask' must be in the open interval (0, 1), got 2.0"),
        (lambda: mask(T4, p_mask=float("nan")), "'p_mask' must be in the open interval (0, 1)"),
        (lambda: fa.mask_tokens(3, T4, e, p_mask=0.5), "'key' must be one jax.random key"),
        (lambda: fa.draw_mask(KEY, 6, 0.5, 5), "'ell' = 6 > ell_max = 5"),
        (lambda: fa.draw_mask(KEY, 0, 0.5, 5), "'ell' = 0 must be at least 1"),
        (lambda: fa.draw_mask(KEY, 2, 0.5, 0), "'ell_max' = 0 must be at least 1"),
        (lambda: fa.draw_mask(KEY, 2, 1.5, 5), "'p_mask' must be in the open interval (0, 1)"),
    ]
    for call, message in cases:
        with pytest.raises((TypeError, ValueError), match=f"^{alg12}{re.escape(message)}"):
            call()
    np.testing.assert_array_equal(mask([1, 2, 3, 4]), mask(T4))  # a list is an array
    coins = np.asarray(fa.draw_mask(KEY, 4, 0.5, 5))
    np.testing.assert_array_equal(mask(T4), np.where(coins, D_HP["N_V"] - 3, T4))
    traced = jax.jit(lambda p: fa.mask_tokens(KEY, T4, e, p_mask=p))(0.5)  # a traced p_mask
    np.testing.assert_array_equal(traced, mask(T4))


# Every function of the package's API that takes token ids, called with a Python list and with
# the array: the same. (The padded forms of ``paper.training`` take the arrays of ``pad``.)
Z3, X3 = [4, 5, 6], [1, 2, 3]
TAKE_LISTS = {
    "d_transformer": lambda t, a: fa.d_transformer(a, t["d"]),
    "d_transformer_logits": lambda t, a: fa.d_transformer_logits(a, t["d"]),
    "e_transformer": lambda t, a: fa.e_transformer(a, t["e"]),
    "e_transformer_logits": lambda t, a: fa.e_transformer_logits(a, t["e"]),
    "ed_transformer": lambda t, a: fa.ed_transformer(a, a, t["ed"]),
    "ed_transformer_logits": lambda t, a: fa.ed_transformer_logits(a, a, t["ed"]),
    "ed_decode_logits": lambda t, a: fa.ed_decode_logits(a, fa.ed_encode(jnp.asarray(Z3), t["ed"]), t["ed"]),
    "ed_encode": lambda t, a: fa.ed_encode(a, t["ed"]),
    "embed": lambda t, a: fa.embed(a, t["d"].W_e, t["d"].W_p),
    "d_loss": lambda t, a: fa.d_loss(t["d"], a),
    "e_loss": lambda t, a: fa.e_loss(t["e"], a, a),
    "ed_loss": lambda t, a: fa.ed_loss(t["ed"], a, a),
    "mask_tokens": lambda t, a: fa.mask_tokens(KEY, a, t["e"], p_mask=0.5),
    "d_inference": lambda t, a: fa.d_inference(a, t["d"], KEY, ell_gen=2),
    "d_inference window": lambda t, a: fa.d_inference(a, t["d"], KEY, ell_gen=4, window=True),
    "ed_inference": lambda t, a: fa.ed_inference(a, t["ed"], KEY, max_length=4),
}  # fmt: skip


@pytest.mark.parametrize("call", TAKE_LISTS.values(), ids=TAKE_LISTS.keys())
def test_every_function_that_takes_token_ids_takes_a_python_list(d_theta, ed_theta, call):
    """Seed 808: deleting ``ed_inference``'s ``z = jnp.asarray(z)`` went unseen (a list then
    failed at the end, on ``z.dtype``). Each function gives a list what it gives the array, and
    the inferences return an array in the array's dtype."""
    thetas = dict(d=d_theta, ed=ed_theta, e=fa.init_e_transformer(KEY, **{**D_HP, "L": 1}))
    from_list, from_array = call(thetas, X3), call(thetas, jnp.asarray(X3))
    for a, b in zip(jax.tree.leaves(from_list), jax.tree.leaves(from_array), strict=True):
        assert isinstance(a, jax.Array) and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("tau", [0.0, 1.0, math.inf])
def test_sampling_at_every_temperature_forms_no_nan_even_in_a_discarded_branch(tau):
    """Seed 808: ``_log_q``'s guard ``where(τ = 0, 1, τ)`` made ``where(τ = 1, 1, τ)`` went unseen:
    at τ = 0 the sample is the argmax either way, but log q became 0/0 = NaN in the branch the
    argmax discards, which JAX's NaN check reports and which made the gradient of the tempered
    distribution NaN. The same bug class as the masked softmax's double ``where``: no NaN is
    formed from finite logits, at τ = 0, 1 or ∞, in the value or in the gradient."""
    logits = jnp.asarray([0.5, 2.0, -1.0, 2.0])
    with jax.debug_nans(True):
        y = fa.sample_token(KEY, logits, tau)
        q = inference.tempered_distribution(logits, tau)
        jac = jax.jacrev(lambda l: inference.tempered_distribution(l, tau))(logits)
        masked = jax.grad(lambda A: fa.softmax(A, jnp.asarray([[True], [False]]))[0, 0])(F(2, 1))
    assert 0 <= int(y) < 4 and np.isclose(float(jnp.sum(q)), 1.0)
    assert np.all(np.isfinite(jac)) and np.all(np.isfinite(masked))
    if tau == 0.0:
        assert int(y) == 1 and np.array_equal(q, [0, 1, 0, 0]) and not np.any(jac)


def _mask_reference(t_z, t_x):
    """Eq. 3 by its definition, entry by entry in plain Python: ``[[t_z[i] ≤ t_x[j]]]``."""
    return np.asarray([[bool(a <= b) for b in t_x] for a in t_z], dtype=bool).reshape(
        len(t_z), len(t_x)
    )


def test_every_mask_of_eq_3_is_its_definition_for_every_size():
    """Seed 909: ``unidirectional_mask(ℓ, ℓ_x)`` built from ``t[ℓ + ℓ_x:]`` instead of
    ``t[ℓ − ℓ_x:]`` (an (ℓ, 0) mask) went unseen: the tests of its ``ell_x`` form are not in the
    map of its module. Every mask builder of ``paper`` against eq. 3 entry by entry: the
    bidirectional (all ones), the unidirectional for every ℓ ≤ 5 and every ℓ_x ≤ ℓ (the queries
    are the last ℓ_x positions; ℓ_x = ℓ + 1 is refused by name, where the slice would silently
    wrap around), ``causal_mask`` of positions out of order, ``key_padding_mask``
    (``Mask[t_z, t_x] = valid[t_z]``) and its ``None`` (the paper's Mask ≡ 1)."""
    for ell_z in range(4):
        for ell_x in range(4):
            mask = fa.bidirectional_mask(ell_z, ell_x)
            assert mask.dtype == jnp.bool_
            np.testing.assert_array_equal(mask, np.ones((ell_z, ell_x), bool))
    for ell in range(6):
        t = list(range(ell))
        full = fa.unidirectional_mask(ell)
        assert full.dtype == jnp.bool_ and full.shape == (ell, ell)
        np.testing.assert_array_equal(full, _mask_reference(t, t))
        for ell_x in range(ell + 1):
            part = fa.unidirectional_mask(ell, ell_x)
            assert part.dtype == jnp.bool_ and part.shape == (ell, ell_x)
            np.testing.assert_array_equal(part, _mask_reference(t, t[ell - ell_x :]))
        np.testing.assert_array_equal(fa.unidirectional_mask(ell, ell), full)
        message = (
            rf"^unidirectional_mask \(eq. 3\): argument 'ell_x' = {ell + 1} exceeds ell = {ell}: "
        )
        with pytest.raises(ValueError, match=message):  # t[ℓ − ℓ_x:] would wrap around
            fa.unidirectional_mask(ell, ell + 1)
    t_z, t_x = [3, 0, 2, 5], [4, 1, 3]
    mask = fa.causal_mask(jnp.asarray(t_z), jnp.asarray(t_x))
    np.testing.assert_array_equal(mask, _mask_reference(t_z, t_x))
    valid = [True, False, True]
    for ell_x in (1, 2, 4):
        expected = np.asarray([[v] * ell_x for v in valid], bool)
        np.testing.assert_array_equal(fa.key_padding_mask(jnp.asarray(valid), ell_x), expected)
    assert fa.key_padding_mask(None, 3) is None


# --------------------------------------------------------------------------------- seed 1111
@pytest.mark.parametrize(
    "call, expected",
    [
        (lambda: fa.layer_norm(F(4, 2), G, B), "a vector (d_e,), got shape (4, 2)"),
        (lambda: fa.rms_norm(F(4, 2), G), "a vector (d_e,), got shape (4, 2)"),
        (lambda: fa.layer_norm_columns(F(4), G, B), "a matrix (d_e, ℓ) with tokens as columns"),
        (lambda: fa.rms_norm_columns(F(4), G), "a matrix (d_e, ℓ) with tokens as columns"),
        (lambda: fa.layer_norm(F(4), F(4, 1), B), "'gamma' must be a vector (d_e,), got shape"),
        (lambda: fa.rms_norm(F(4), None), "'gamma' must be a vector (d_e,), got NoneType"),
        (lambda: fa.layer_norm(F(3), G, B), "'e' has shape (3,), expected (4,) to match gamma"),
        (lambda: fa.layer_norm_columns(F(3, 2), G, B), "shape (3, 2), expected (4, *) to match"),
    ],
)
def test_a_norm_s_refusal_says_what_it_expected(call, expected):
    """Seed 1111 (``normalisation-ac45c3``): the refusal of a matrix where a vector belongs said
    "must be a matrix" when its ``ndim == 1`` test was changed, and no test read past the name.
    For every norm form, the message states the form it expects, and a missing γ is named."""
    with pytest.raises((TypeError, ValueError), match=re.escape(expected)):
        call()


@pytest.mark.parametrize("eps", [-1.0, float("nan"), float("inf"), "1e-5"])
@pytest.mark.parametrize(
    "algorithm, call",
    [
        ("layer_norm (Algorithm 6)", lambda eps: fa.layer_norm(F(4), G, B, eps)),
        ("layer_norm (Algorithm 6)", lambda eps: fa.layer_norm_columns(F(4, 2), G, B, eps)),
        ("rms_norm", lambda eps: fa.rms_norm(F(4), G, eps)),
        ("rms_norm", lambda eps: fa.rms_norm_columns(F(4, 2), G, eps)),
    ],
)
def test_every_norm_form_refuses_a_bad_epsilon_itself(algorithm, call, eps):
    """Seed 1111 (``normalisation-e4af22``): deleting the norms' own ε check went unseen, since
    the architectures check ε before they reach a norm. Called directly, each norm form refuses
    a negative, NaN, infinite or string ε naming itself and ``eps``."""
    with pytest.raises((TypeError, ValueError), match=rf"^{re.escape(algorithm)}: argument 'eps'"):
        call(eps)
