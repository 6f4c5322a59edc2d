"""Algorithm 10 (``d_transformer``) equals Hugging Face GPT-2, and the converters are exact.

The reference is ``transformers.GPT2LMHeadModel`` built here from a ``GPT2Config`` with a fixed
torch seed and every weight, bias and LayerNorm γ/β re-randomised (HF initialises biases and β to
0 and γ to 1, which would hide a missing norm or a swapped bias). Nothing is downloaded.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from torch_reference import randomise
from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

import formal_algorithms as fa
from formal_algorithms.interop.gpt2 import (
    d_transformer_from_gpt2,
    d_transformer_kwargs_from_gpt2,
    d_transformer_to_gpt2,
)

# name: (GPT2Config fields, ℓ); every config has ℓ < n_positions except "full" (ℓ = n_positions).
CONFIGS = {
    "gelu_new-tied": (dict(vocab_size=40, n_positions=16, n_embd=16, n_layer=2, n_head=2), 9),
    "gelu-untied": (
        dict(
            vocab_size=33,
            n_positions=12,
            n_embd=24,
            n_layer=1,
            n_head=3,
            n_inner=40,
            activation_function="gelu",
            tie_word_embeddings=False,
            layer_norm_epsilon=1e-6,
        ),
        12,
    ),  # fmt: skip
    "pytorch_tanh-H4": (
        dict(
            vocab_size=47,
            n_positions=20,
            n_embd=32,
            n_layer=3,
            n_head=4,
            n_inner=48,
            activation_function="gelu_pytorch_tanh",
        ),
        7,
    ),  # fmt: skip
}
# (config, dtype) pairs; each costs one XLA compilation of the jitted Algorithm 10.
CASES = [("gelu_new-tied", torch.float32), ("gelu_new-tied", torch.float64),
         ("gelu-untied", torch.float64), ("pytorch_tanh-H4", torch.float32)]  # fmt: skip
TOL = {torch.float32: 2e-5, torch.float64: 1e-10}
_logits = jax.jit(fa.d_transformer_logits, static_argnames="activation")
# No dropout; no bos/eos ids (GPT2Config's default 50256 lies outside these small vocabularies).
_NO_DROPOUT = dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None,
                   eos_token_id=None)  # fmt: skip


def _conv1d_fan_in(name, p):
    """GPT-2's Conv1D weights are (in, out); its untied lm_head is an nn.Linear (out, in)."""
    return p.shape[1] if name.endswith("lm_head.weight") else p.shape[0]


def _reference(name, dtype=torch.float32, seed=0, **overrides):
    fields, ell = CONFIGS[name]
    config = GPT2Config(**{**fields, **_NO_DROPOUT, "attn_implementation": "eager", **overrides})
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config)
    g = torch.Generator().manual_seed(seed)
    randomise(model, g, _conv1d_fan_in)
    x = torch.randint(0, config.vocab_size, (ell,), generator=g)
    return model.to(dtype).eval(), x


def _hf_logits(model, x):
    with torch.no_grad():
        return model(x[None]).logits[0].T.numpy()  # (ℓ, N_V) → the paper's (N_V, ℓ)


def _ours(theta, x, activation, eps):
    return np.asarray(_logits(jnp.asarray(x.numpy()), theta, activation=activation, eps=eps))


def _leaves_identical(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for u, v in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        assert u.dtype == v.dtype and u.shape == v.shape
        assert np.array_equal(np.asarray(u), np.asarray(v))


def _state_dicts_identical(a, b):
    a, b = a.state_dict(), b.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("name, dtype", CASES)
def test_algorithm_10_equals_gpt2(name, dtype):
    model, x = _reference(name, dtype)
    theta = d_transformer_from_gpt2(model)
    kwargs = d_transformer_kwargs_from_gpt2(model)
    act = CONFIGS[name][0].get("activation_function", "gelu_new")
    assert kwargs["activation"] is (fa.gelu if act == "gelu" else fa.gelu_tanh)
    assert kwargs["eps"] == CONFIGS[name][0].get("layer_norm_epsilon", 1e-5)
    assert (theta.W_u is None) == CONFIGS[name][0].get("tie_word_embeddings", True)
    expected = _hf_logits(model, x)
    assert expected.shape == (model.config.vocab_size, len(x))
    np.testing.assert_allclose(_ours(theta, x, **kwargs), expected, rtol=0, atol=TOL[dtype])


def test_gelu_flavour_matters():
    """GPT-2's default gelu_new is the tanh approximation; the paper's exact GELU misses it by far
    more than the tolerance, so the test above can tell the two apart."""
    model, x = _reference("gelu_new-tied", torch.float64)
    theta = d_transformer_from_gpt2(model)
    wrong = _ours(theta, x, activation=fa.gelu, eps=1e-5)
    assert np.abs(wrong - _hf_logits(model, x)).max() > 1e-4


@pytest.mark.parametrize(
    "overrides",
    [
        dict(reorder_and_upcast_attn=True),  # only changes float16 rounding of the scores
        dict(attn_implementation="sdpa"),  # torch's fused attention kernel, same function
        dict(resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1),  # eval mode applies no dropout
    ],
)
def test_equivalent_configs_convert(overrides):
    model, x = _reference("gelu_new-tied", torch.float32, seed=1, **overrides)
    theta = d_transformer_from_gpt2(model)
    np.testing.assert_allclose(_ours(theta, x, **d_transformer_kwargs_from_gpt2(model)),
                               _hf_logits(model, x), rtol=0, atol=TOL[torch.float32])  # fmt: skip


@pytest.mark.parametrize("name, dtype", CASES[1:3])
def test_ours_to_gpt2_matches_and_round_trips(name, dtype):
    fields, ell = CONFIGS[name]
    as_jax = {torch.float32: jnp.float32, torch.float64: jnp.float64}[dtype]
    shapes = jax.eval_shape(lambda: fa.init_d_transformer(
        jax.random.key(0), N_V=fields["vocab_size"], ell_max=fields["n_positions"],
        L=fields["n_layer"], H=fields["n_head"], d_e=fields["n_embd"],
        d_mlp=fields.get("n_inner") or 4 * fields["n_embd"],
        tied=fields.get("tie_word_embeddings", True), dtype=as_jax))  # fmt: skip
    rng = np.random.default_rng(3)  # every entry random: no γ = 1, no zero bias or β
    theta = jax.tree_util.tree_map(
        lambda s: jnp.asarray(rng.normal(1.0 if len(s.shape) == 1 else 0.0, 0.4, s.shape), as_jax),
        shapes,
    )
    activation = fa.gelu if fields.get("activation_function") == "gelu" else fa.gelu_tanh
    eps = fields.get("layer_norm_epsilon", 1e-5)
    state = torch.get_rng_state()
    model = d_transformer_to_gpt2(theta, activation=activation, eps=eps)
    assert torch.equal(torch.get_rng_state(), state)  # the global torch RNG was not used
    assert not model.training and next(model.parameters()).dtype == dtype
    assert d_transformer_kwargs_from_gpt2(model) == {"activation": activation, "eps": eps}
    assert (model.lm_head.weight is model.transformer.wte.weight) == (theta.W_u is None)
    x = torch.from_numpy(np.random.default_rng(4).integers(0, fields["vocab_size"], ell))
    np.testing.assert_allclose(_ours(theta, x, activation, eps), _hf_logits(model, x),
                               rtol=0, atol=TOL[dtype])  # fmt: skip
    _leaves_identical(d_transformer_from_gpt2(model), theta)  # ours -> HF -> ours


@pytest.mark.parametrize("name", list(CONFIGS))
def test_gpt2_to_ours_to_gpt2_state_dict_identical(name):
    model, _ = _reference(name, torch.float64, seed=2)
    back = d_transformer_to_gpt2(d_transformer_from_gpt2(model),
                                 **d_transformer_kwargs_from_gpt2(model))  # fmt: skip
    _state_dicts_identical(model, back)
    assert back.config.activation_function in ("gelu", "gelu_new")  # gelu_pytorch_tanh → gelu_new


@pytest.mark.parametrize(
    "overrides, argument",
    [
        (dict(add_cross_attention=True), "model.config.add_cross_attention"),
        (
            dict(scale_attn_by_inverse_layer_idx=True),
            "model.config.scale_attn_by_inverse_layer_idx",
        ),
        (dict(scale_attn_weights=False), "model.config.scale_attn_weights"),
        (dict(activation_function="gelu_fast"), "model.config.activation_function"),
        (dict(activation_function="quick_gelu"), "model.config.activation_function"),
    ],
)
def test_from_gpt2_refuses_what_algorithm_10_cannot_express(overrides, argument):
    model, _ = _reference("gelu_new-tied", seed=5, **overrides)
    with pytest.raises(ValueError, match=rf"d_transformer_from_gpt2: argument '{argument}'"):
        d_transformer_from_gpt2(model)


def test_from_gpt2_refuses_dropout_in_training_mode_and_other_models():
    model, _ = _reference("gelu_new-tied", seed=6, resid_pdrop=0.1)
    model.train()
    with pytest.raises(ValueError, match=r"d_transformer_from_gpt2: argument 'model\..*dropout"):
        d_transformer_from_gpt2(model)
    bert = BertForMaskedLM(BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=8))  # fmt: skip
    with pytest.raises(TypeError, match=r"d_transformer_from_gpt2: argument 'model'"):
        d_transformer_from_gpt2(bert)


def test_to_gpt2_refuses_what_gpt2_cannot_express():
    kw = dict(N_V=20, ell_max=8, L=1, H=2, d_e=16, d_mlp=16)
    shapes = jax.eval_shape(lambda: fa.init_d_transformer(jax.random.key(0), d_attn=4, **kw))
    theta = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    with pytest.raises(ValueError, match=r"d_transformer_to_gpt2: argument 'theta'.*d_e / H"):
        d_transformer_to_gpt2(theta)
    shapes = jax.eval_shape(lambda: fa.init_d_transformer(jax.random.key(0), **kw))
    theta = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    with pytest.raises(ValueError, match=r"d_transformer_to_gpt2: argument 'activation'"):
        d_transformer_to_gpt2(theta, activation=jax.nn.gelu)  # jax's default is the tanh form
    with pytest.raises(ValueError, match=r"d_transformer_to_gpt2: argument 'theta.W_p'"):
        d_transformer_to_gpt2(theta._replace(W_p=theta.W_p.T))
