"""The OPT family (formal_algorithms.families.opt) against transformers' OPTForCausalLM.

- Random float64 weights (norms, biases and embeddings drawn away from their inits), Pre-LN tied
  and Post-LN untied: logits within 1e-10 relative of transformers'; 8 greedy tokens of
  Algorithm 14 equal ``generate``'s, uncached, through ``opt_decoder`` (Pre-LN and Post-LN; its
  logits in two blocks equal the full forward's to 1e-12) and (Pre-LN, whose θ is Algorithm 10's)
  through the library's key/value cache.
- The conformance battery passes on it (causality, batch, cache through the library's cache).
- What is not written is refused by name: a projected embedding, another activation, a tensor the
  family does not use, a keyword that contradicts θ's configuration.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from test_families_more import _two_blocks
from transformers import OPTConfig, OPTForCausalLM

from formal_algorithms.families.opt import (
    OPTConfig as OwnOPTConfig,
)
from formal_algorithms.families.opt import (
    opt,
    opt_config,
    opt_decoder,
    opt_from_state_dict,
    opt_logits,
    paper_theta,
)
from formal_algorithms.paper.functions import relu
from formal_algorithms.practice.cache import d_inference_cached
from formal_algorithms.testing import adapters as A
from formal_algorithms.testing import conformance as C

X = np.array([3, 7, 1, 39, 0, 22, 5, 9, 11, 2, 30, 17])  # test_families_more's (_two_blocks)


def _model(pre_ln, tied, seed):
    config = OPTConfig(
        vocab_size=40, hidden_size=16, ffn_dim=32, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=32, word_embed_proj_dim=16, do_layer_norm_before=pre_ln,
        tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2, pad_token_id=0,
        attn_implementation="sdpa",
    )  # fmt: skip
    torch.manual_seed(seed)
    model = OPTForCausalLM(config).double().eval()
    with torch.no_grad():
        for p in model.parameters():  # norms, biases, embeddings away from their 1 / 0 inits
            p.normal_(0, 0.3)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    if tied:
        state.pop("lm_head.weight")
    return model, config, state


def _greedy(model, n=8):
    with torch.no_grad():
        out = model.generate(torch.tensor(X[:3])[None], max_new_tokens=n, min_new_tokens=n,
                             do_sample=False, eos_token_id=None, pad_token_id=0)  # fmt: skip
    return out[0, 3:].tolist()


@pytest.mark.parametrize(("pre_ln", "tied"), [(True, True), (False, False)])
def test_opt_equals_transformers_random_float64(pre_ln, tied):
    model, config, state = _model(pre_ln, tied, seed=3 + pre_ln)
    kw = opt_config(config.to_dict())
    assert kw["config"] == OwnOPTConfig(pre_ln=pre_ln, eps=1e-5)
    theta = opt_from_state_dict(state, **kw)
    assert (theta.W_u is None) == tied and (theta.gamma is None) == (not pre_ln)
    with torch.no_grad():
        expected = model(torch.tensor(X)[None]).logits[0].numpy().T
    ours = np.asarray(opt_logits(X, theta))
    assert ours.dtype == np.float64
    assert np.abs(ours - expected).max() / np.abs(expected).max() <= 1e-10
    np.testing.assert_allclose(np.asarray(opt(X, theta)).sum(0), 1, atol=1e-12)
    # greedy Algorithm 14, uncached: one forward per step
    x, greedy = list(X[:3]), _greedy(model)
    for _ in range(8):
        x.append(int(np.argmax(np.asarray(opt_logits(np.array(x), theta))[:, -1])))
    assert x[3:] == greedy
    # cached (Pre-LN and Post-LN): the paper's layers with their attention over the cache
    decoder = opt_decoder(theta)
    assert decoder.generate(X[:3], max_new=8) == greedy
    assert np.abs(_two_blocks(decoder) - ours).max() <= 1e-12 * np.abs(ours).max()
    if pre_ln:  # θ is Algorithm 10's: the library's cached Algorithm 14 with ReLU
        cached = d_inference_cached(X[:3], paper_theta(theta), jax.random.key(0), ell_gen=8,
                                    tau=0.0, activation=relu, eps=theta.config.eps)  # fmt: skip
        assert np.asarray(cached).tolist() == greedy


def test_the_battery_passes_on_opt():
    model, config, state = _model(True, True, seed=7)
    theta = opt_from_state_dict(state, **opt_config(config.to_dict()))
    tm = A.from_paper(lambda x: opt_logits(x, theta), N_V=40, max_length=32, name="opt")
    checks = ["causality", "batch", "distributions", "determinism"]
    report = C.run_battery(tm, checks=checks, lengths=[8])  # one length: eager JAX, jacrev
    assert report.ok, str(report)


def test_opt_refuses_what_it_does_not_write():
    model, config, state = _model(True, False, seed=0)
    d = config.to_dict()
    with pytest.raises(ValueError, match=r"opt_config: .*word_embed_proj_dim"):
        opt_config({**d, "word_embed_proj_dim": 8})
    with pytest.raises(ValueError, match=r"opt_config: .*activation_function = 'gelu'"):
        opt_config({**d, "activation_function": "gelu"})
    with pytest.raises(ValueError, match=r"opt_from_state_dict: .*does not use: \['extra'\]"):
        opt_from_state_dict({**state, "extra": np.zeros(1)}, **opt_config(d))
    theta = opt_from_state_dict(state, **opt_config(d))
    with pytest.raises(ValueError, match=r"opt_logits .*'pre_ln' = False contradicts θ's own"):
        opt_logits(X, theta, pre_ln=False)
    with pytest.raises(ValueError, match=r"OPTConfig: argument 'eps' must be a number > 0"):
        OwnOPTConfig(eps=0)
