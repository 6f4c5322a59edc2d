"""The Phi family (formal_algorithms.families.phi) against transformers' PhiForCausalLM.

- Random float64 weights (norms, biases and embeddings drawn away from their inits), with
  transformers' float32 RoPE angles replaced by float64 ones (test_families_more's helper), in two
  configurations (untied, d_rot = d_attn / 2; tied, d_rot = d_attn / 4): logits within 1e-10
  relative, and so are ``phi_decoder``'s logits computed in two blocks over its cache; 8 greedy
  tokens of Algorithm 14 equal ``generate``'s, uncached and cached (untied).
- The conformance battery passes on it; ``trace`` records it, uncached and cached, without a
  mislabelled record.
- What is not written is refused by name: qk_layernorm, RoPE scaling, grouped key/value heads,
  another activation, a tensor the family does not use, a sequential block, a contradicting keyword.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import transformers
from test_families_more import (
    X,
    _close,
    _float64_internals,
    _greedy,
    _greedy_ours,
    _hf_logits,
    _randomise,
    _state,
    _two_blocks,
)

from formal_algorithms.families.gpt_neox import GPTNeoXConfig as OwnConfig
from formal_algorithms.families.phi import (
    phi,
    phi_config,
    phi_decoder,
    phi_from_state_dict,
    phi_logits,
)
from formal_algorithms.testing import adapters as A
from formal_algorithms.testing import conformance as C

CONFIGS = {  # (hidden, heads, partial_rotary_factor, tied) -> d_rot
    "untied": (dict(hidden_size=32, num_attention_heads=4, partial_rotary_factor=0.5), False, 4),
    "tied": (dict(hidden_size=24, num_attention_heads=3, partial_rotary_factor=0.25), True, 2),
}


def _config(hidden_size, num_attention_heads, partial_rotary_factor, tied):
    rope = {
        "rope_type": "default",
        "rope_theta": 1e4,
        "partial_rotary_factor": partial_rotary_factor,
    }
    return transformers.PhiConfig(
        vocab_size=40, hidden_size=hidden_size, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=num_attention_heads, max_position_embeddings=64,
        rope_parameters=rope, layer_norm_eps=1e-5, tie_word_embeddings=tied,
        attn_implementation="sdpa",
    )  # fmt: skip


@functools.cache
def _load(name):
    sizes, tied, d_rot = CONFIGS[name]
    config = _config(**sizes, tied=tied)
    model = _randomise(transformers.PhiForCausalLM(config), seed=40 + tied)
    _float64_internals(model, model.model.rotary_emb, d_rot, 1e4)
    kw = phi_config(config.to_dict())
    theta = phi_from_state_dict(_state(model, tied), **kw)
    return model, theta, kw, tied, d_rot


@pytest.fixture(scope="module", params=list(CONFIGS))
def loaded(request):
    return _load(request.param)


def test_phi_equals_transformers_random_float64(loaded):
    model, theta, kw, tied, d_rot = loaded
    assert kw["config"] == OwnConfig(d_rot=d_rot, rope_base=1e4, eps=1e-5, activation="gelu_tanh")
    assert (theta.W_u is None) == tied and theta.b_u.shape == (40,)
    expected = _hf_logits(model, X)
    ours = np.asarray(phi_logits(X, theta))
    _close(ours, expected)
    np.testing.assert_allclose(np.asarray(phi(X, theta)).sum(0), 1, atol=1e-12)
    # b_u and the tanh GELU each matter: changed, the logits move
    for changed in (
        theta._replace(b_u=0 * theta.b_u),
        theta._replace(config=dataclasses.replace(theta.config, activation="gelu")),
    ):
        assert np.abs(np.asarray(phi_logits(X, changed)) - expected).max() > 1e-6
    # the cached form's logits, in two blocks, are the full forward's
    _close(_two_blocks(phi_decoder(theta)), ours)


def test_phi_greedy_equals_generate_uncached_and_cached():
    model, theta, *_ = _load("untied")
    greedy = _greedy(model, X[:3], 8)
    assert _greedy_ours(phi_logits, theta) == greedy
    assert phi_decoder(theta).generate(X[:3], max_new=8) == greedy


def test_the_battery_passes_on_phi():
    import jax

    _, theta, *_ = _load("untied")
    model = A.from_paper(jax.jit(lambda x: phi_logits(x, theta)), N_V=40, name="phi")
    report = C.run_battery(model, checks=["causality", "batch", "distributions", "determinism"],
                           lengths=[8])  # fmt: skip
    assert report.ok, str(report)


def test_phi_refuses_what_it_does_not_write():
    model, theta, kw, *_ = _load("untied")
    d = _config(hidden_size=16, num_attention_heads=2, partial_rotary_factor=0.5, tied=False)
    d = d.to_dict()
    with pytest.raises(ValueError, match=r"phi_config: .*qk_layernorm = True"):
        phi_config({**d, "qk_layernorm": True})
    with pytest.raises(ValueError, match=r"phi_config: .*RoPE scaling 'linear'"):
        phi_config({**d, "rope_parameters": {"rope_type": "linear", "factor": 2.0}})
    with pytest.raises(ValueError, match=r"phi_config: .*num_key_value_heads = 1"):
        phi_config({**d, "num_key_value_heads": 1})
    with pytest.raises(ValueError, match=r"phi_config: .*hidden_act = 'gelu'"):
        phi_config({**d, "hidden_act": "gelu"})
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"phi_from_state_dict: .*does not use: \['extra'\]"):
        phi_from_state_dict({**state, "extra": np.zeros(1)}, **kw)
    with pytest.raises(ValueError, match=r"phi_logits .*'eps' = 0.001 contradicts θ's own"):
        phi_logits(X, theta, eps=1e-3)
    sequential = theta._replace(config=dataclasses.replace(theta.config, parallel=False))
    with pytest.raises(ValueError, match=r"phi_decoder .*parallel=False"):
        phi_decoder(sequential)
    with pytest.raises(ValueError, match=r"phi_logits .*'theta.b_u' has shape \(3,\)"):
        phi_logits(X, theta._replace(b_u=theta.b_u[:3]))


def test_the_trace_records_phi_uncached_and_cached():
    """``trace`` on Phi's forward and on its cached form: every record is the value its paper line
    names (trace.semantics), and each of Algorithm 10's lines 5-11 is recorded."""
    from formal_algorithms.trace import trace
    from formal_algorithms.trace.semantics import problems

    config = _config(hidden_size=8, num_attention_heads=2, partial_rotary_factor=0.5, tied=False)
    model = transformers.PhiForCausalLM(config.__class__(**{**config.to_dict(),
                                                            "num_hidden_layers": 1}))  # fmt: skip
    theta = phi_from_state_dict(_state(model.double(), False), **phi_config(model.config.to_dict()))
    x = X[:4]
    decoder = phi_decoder(theta)
    runs = {
        "uncached": (phi_logits, x, theta),
        "cached": (lambda t: phi_decoder(t).logits(x, 0, decoder.init_cache(8)), theta),
    }
    for name, (fn, *args) in runs.items():
        records = trace(fn, *args).records
        assert problems(records) == [], name
        lines = {r.line for r in records if r.algorithm == 10}
        assert {5, 6, 7, 8, 10, 11} <= lines, (name, sorted(lines))
