"""Algorithm 9 (``e_transformer``) and Hugging Face BERT: ``bert_logits`` (Algorithm 9 plus BERT's
extras, from the same primitives) equals ``BertForMaskedLM``; without the extras it is Algorithm 9;
the converters are exact.

The reference is ``transformers.BertForMaskedLM`` built here from a ``BertConfig`` with a fixed
torch seed and every weight, bias and LayerNorm γ/β re-randomised (HF initialises biases, β and
the output bias to 0 and γ to 1, which would hide a missing norm or bias). Nothing is downloaded.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch_reference import randomise
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

import formal_algorithms as fa
from formal_algorithms.interop.bert import (
    BertParams,
    bert_from_e_transformer,
    bert_from_hf,
    bert_kwargs_from_hf,
    bert_logits,
    bert_to_hf,
)

# name: (BertConfig fields, ℓ)
CONFIGS = {
    "tied": (
        dict(
            vocab_size=40,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=16,
        ),
        9,
    ),  # fmt: skip
    "untied-3-types": (
        dict(
            vocab_size=33,
            hidden_size=24,
            num_hidden_layers=1,
            num_attention_heads=3,
            intermediate_size=40,
            max_position_embeddings=12,
            type_vocab_size=3,
            tie_word_embeddings=False,
            layer_norm_eps=1e-6,
        ),
        12,
    ),  # ℓ = max_position_embeddings  # fmt: skip
    "gelu_new-H4": (
        dict(
            vocab_size=47,
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=4,
            intermediate_size=48,
            max_position_embeddings=20,
            hidden_act="gelu_new",
        ),
        7,
    ),  # fmt: skip
}
# (config, dtype) pairs; each costs one XLA compilation of the jitted logits.
CASES = [("tied", torch.float32), ("tied", torch.float64), ("untied-3-types", torch.float64),
         ("gelu_new-H4", torch.float32)]  # fmt: skip
TOL = {torch.float32: 2e-5, torch.float64: 1e-10}
_NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
_bert = jax.jit(bert_logits, static_argnames="activation")
_alg9 = jax.jit(fa.e_transformer_logits, static_argnames="activation")


def _randomise(model, generator):
    """:func:`torch_reference.randomise`, then the head's two biases made equal: untied, HF keeps
    a spare ``cls.predictions.bias`` next to the ``decoder.bias`` it uses; the tied model (where
    they are one Parameter) has them equal."""
    randomise(model, generator)
    with torch.no_grad():
        head = model.cls.predictions
        head.bias.copy_(head.decoder.bias)


def _reference(name, dtype=torch.float32, seed=0, **overrides):
    fields, ell = CONFIGS[name]
    config = BertConfig(**{**fields, **_NO_DROPOUT, "attn_implementation": "eager", **overrides})
    torch.manual_seed(seed)
    model = BertForMaskedLM(config)
    g = torch.Generator().manual_seed(seed)
    _randomise(model, g)
    x = torch.randint(0, config.vocab_size, (ell,), generator=g)
    token_types = torch.randint(0, config.type_vocab_size, (ell,), generator=g)
    return model.to(dtype).eval(), x, token_types


def _hf_logits(model, x, token_types=None):
    tt = None if token_types is None else token_types[None]
    with torch.no_grad():
        out = model(x[None], attention_mask=torch.ones_like(x[None]), token_type_ids=tt)
    return out.logits[0].T.numpy()  # (ℓ, N_V) → the paper's (N_V, ℓ)


def _ours(params, x, token_types, activation, eps):
    tt = None if token_types is None else jnp.asarray(token_types.numpy())
    return np.asarray(_bert(jnp.asarray(x.numpy()), params, tt, activation=activation, eps=eps))


def _random_bert_params(seed, dtype, *, N_V, ell_max, L, H, d_e, d_mlp, tied, n_types):
    """Random BertParams (every entry random, no γ = 1, no zero bias) drawn by numpy."""
    shapes = jax.eval_shape(lambda: fa.init_e_transformer(
        jax.random.key(0), N_V=N_V, ell_max=ell_max, L=L, H=H, d_e=d_e, d_mlp=d_mlp, tied=tied,
        dtype=dtype))  # fmt: skip
    rng = np.random.default_rng(seed)

    def draw(shape):
        return jnp.asarray(rng.normal(1.0 if len(shape) == 1 else 0.0, 0.4, shape), dtype)

    theta = jax.tree_util.tree_map(lambda s: draw(s.shape), shapes)
    return BertParams(theta, draw((d_e, n_types)), draw((d_e,)), draw((d_e,)), draw((N_V,)))


def _leaves_identical(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        assert u.dtype == v.dtype and u.shape == v.shape
        assert np.array_equal(np.asarray(u), np.asarray(v))


@pytest.mark.parametrize("name, dtype", CASES)
def test_bert_logits_equal_hf_bert(name, dtype):
    model, x, token_types = _reference(name, dtype)
    params = bert_from_hf(model)
    kwargs = bert_kwargs_from_hf(model)
    act = CONFIGS[name][0].get("hidden_act", "gelu")
    assert kwargs["activation"] is (fa.gelu if act == "gelu" else fa.gelu_tanh)
    assert kwargs["eps"] == CONFIGS[name][0].get("layer_norm_eps", 1e-12)
    assert (params.theta.W_u is None) == CONFIGS[name][0].get("tie_word_embeddings", True)
    expected = _hf_logits(model, x, token_types)
    assert expected.shape == (model.config.vocab_size, len(x))
    np.testing.assert_allclose(_ours(params, x, token_types, **kwargs), expected,
                               rtol=0, atol=TOL[dtype])  # fmt: skip


def test_default_token_types_are_zero():
    model, x, _ = _reference("tied", torch.float64, seed=1)
    params = bert_from_hf(model)
    np.testing.assert_allclose(_ours(params, x, torch.zeros_like(x), **bert_kwargs_from_hf(model)),
                               _hf_logits(model, x), rtol=0, atol=1e-10)  # fmt: skip


def test_every_extra_shows():
    """Each of BERT's extras moves the logits far beyond the tolerance, so the comparison with HF
    would catch a missing one; W_tt and b_u are zeroed (same pytree), the embedding LN removed."""
    model, x, token_types = _reference("tied", torch.float64, seed=2)
    params = bert_from_hf(model)
    kwargs = bert_kwargs_from_hf(model)
    expected = _hf_logits(model, x, token_types)
    for changed in (
        params._replace(W_tt=jnp.zeros_like(params.W_tt)),
        params._replace(b_u=jnp.zeros_like(params.b_u)),
        params._replace(gamma_emb=None, beta_emb=None),
    ):
        assert np.abs(_ours(changed, x, token_types, **kwargs) - expected).max() > 1e-2


def test_without_extras_bert_is_algorithm_9():
    """No embedding LayerNorm, no token types, no output bias: bert_logits is Algorithm 9."""
    params = _random_bert_params(7, jnp.float64, N_V=40, ell_max=16, L=2, H=2, d_e=16, d_mlp=32,
                                 tied=True, n_types=2)  # fmt: skip
    x = jnp.asarray(np.random.default_rng(8).integers(0, 40, 9))
    bare = bert_from_e_transformer(params.theta)
    assert bare == BertParams(params.theta, None, None, None, None)
    expected = np.asarray(_alg9(x, params.theta, activation=fa.gelu, eps=1e-5))
    got = _bert(x, bare, None, activation=fa.gelu, eps=1e-5)
    np.testing.assert_array_equal(np.asarray(got), expected)
    # The neutral values of the extras: a zero token-type column, a zero output bias.
    zeros = bare._replace(W_tt=jnp.zeros((16, 2)), b_u=jnp.zeros(40))
    got = _bert(x, zeros, jnp.zeros(9, int), activation=fa.gelu, eps=1e-5)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name, dtype", CASES[1:3])
def test_ours_to_hf_matches_and_round_trips(name, dtype):
    fields, ell = CONFIGS[name]
    as_jax = {torch.float32: jnp.float32, torch.float64: jnp.float64}[dtype]
    params = _random_bert_params(
        3, as_jax, N_V=fields["vocab_size"], ell_max=fields["max_position_embeddings"],
        L=fields["num_hidden_layers"], H=fields["num_attention_heads"], d_e=fields["hidden_size"],
        d_mlp=fields["intermediate_size"], tied=fields.get("tie_word_embeddings", True),
        n_types=fields.get("type_vocab_size", 2),
    )  # fmt: skip
    activation = fa.gelu_tanh if fields.get("hidden_act") == "gelu_new" else fa.gelu
    eps = fields.get("layer_norm_eps", 1e-12)
    state = torch.get_rng_state()
    model = bert_to_hf(params, activation=activation, eps=eps)
    assert torch.equal(torch.get_rng_state(), state)  # the global torch RNG was not used
    assert not model.training and next(model.parameters()).dtype == dtype
    assert bert_kwargs_from_hf(model) == {"activation": activation, "eps": eps}
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, fields["vocab_size"], (ell,), generator=g)
    token_types = torch.randint(0, fields.get("type_vocab_size", 2), (ell,), generator=g)
    expected = _hf_logits(model, x, token_types)
    got = _ours(params, x, token_types, activation, eps)
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL[dtype])
    _leaves_identical(bert_from_hf(model), params)  # ours -> HF -> ours


@pytest.mark.parametrize("name", list(CONFIGS))
def test_hf_to_ours_to_hf_state_dict_identical(name):
    model, _, _ = _reference(name, torch.float64, seed=5)
    back = bert_to_hf(bert_from_hf(model), **bert_kwargs_from_hf(model))
    a, b = model.state_dict(), back.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_to_hf_fills_absent_extras_with_neutral_values():
    params = _random_bert_params(9, jnp.float64, N_V=40, ell_max=16, L=2, H=2, d_e=16, d_mlp=32,
                                 tied=True, n_types=2)  # fmt: skip
    params = params._replace(W_tt=None, b_u=None)
    model = bert_to_hf(params)
    assert model.config.type_vocab_size == 1
    assert not model.bert.embeddings.token_type_embeddings.weight.any()
    assert not model.cls.predictions.decoder.bias.any()
    # Back in our form they are explicit zeros, which are neutral (see the Algorithm 9 test).
    back = bert_from_hf(model)
    _leaves_identical(back.theta, params.theta)
    assert back.W_tt.shape == (16, 1) and not np.any(back.W_tt) and not np.any(back.b_u)


@pytest.mark.parametrize(
    "overrides, argument",
    [
        (dict(is_decoder=True), "model.config.is_decoder"),
        (dict(is_decoder=True, add_cross_attention=True), "model.config.add_cross_attention"),
        (dict(hidden_act="gelu_fast"), "model.config.hidden_act"),
        (dict(hidden_act="silu"), "model.config.hidden_act"),
    ],
)
def test_from_hf_refuses_what_algorithm_9_cannot_express(overrides, argument):
    model, _, _ = _reference("tied", seed=6, **overrides)
    with pytest.raises(ValueError, match=rf"bert_from_hf: argument '{argument}'"):
        bert_from_hf(model)


def test_dropout_is_refused_in_training_mode_only():
    model, x, token_types = _reference("tied", torch.float32, seed=7, hidden_dropout_prob=0.1)
    model.train()
    with pytest.raises(ValueError, match=r"bert_from_hf: argument 'model\..*dropout"):
        bert_from_hf(model)
    model.eval()
    np.testing.assert_allclose(
        _ours(bert_from_hf(model), x, token_types, **bert_kwargs_from_hf(model)),
        _hf_logits(model, x, token_types), rtol=0, atol=TOL[torch.float32],
    )  # fmt: skip
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2,
                                      bos_token_id=None, eos_token_id=None))  # fmt: skip
    with pytest.raises(TypeError, match=r"bert_from_hf: argument 'model'"):
        bert_from_hf(gpt2)


def test_to_hf_and_bert_logits_refuse_bad_arguments():
    params = _random_bert_params(11, jnp.float64, N_V=20, ell_max=8, L=1, H=2, d_e=8, d_mlp=8,
                                 tied=False, n_types=2)  # fmt: skip
    with pytest.raises(ValueError, match=r"bert_to_hf: argument 'params.gamma_emb'"):
        bert_to_hf(params._replace(gamma_emb=None, beta_emb=None))
    wide_f = params._replace(theta=params.theta._replace(
        W_f=jnp.zeros((12, 8)), b_f=jnp.zeros(12), gamma=jnp.ones(12), beta=jnp.zeros(12),
        W_u=jnp.zeros((20, 12))))  # fmt: skip
    with pytest.raises(ValueError, match=r"bert_to_hf: argument 'params.theta.W_f'"):
        bert_to_hf(wide_f)
    with pytest.raises(ValueError, match=r"bert_to_hf: argument 'activation'"):
        bert_to_hf(params, activation=jax.nn.relu)
    x = jnp.arange(5)
    with pytest.raises(ValueError, match=r"bert_logits .*argument 'token_type_ids' holds"):
        bert_logits(x, params, jnp.array([0, 1, 2, 0, 0]))  # only 2 token types
    with pytest.raises(ValueError, match=r"bert_logits .*argument 'token_type_ids' was given"):
        bert_logits(x, params._replace(W_tt=None), jnp.zeros(5, int))
    with pytest.raises(ValueError, match=r"bert_logits .*argument 'params.b_u'"):
        bert_logits(x, params._replace(b_u=jnp.zeros(19)))
    with pytest.raises(ValueError, match=r"bert_logits .*argument 'params.gamma_emb'"):
        bert_logits(x, params._replace(beta_emb=None))
    with pytest.raises(TypeError, match=r"bert_logits .*argument 'params'"):
        bert_logits(x, params.theta)
