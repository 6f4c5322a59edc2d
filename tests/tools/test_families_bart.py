"""The BART family (formal_algorithms.families.bart) against transformers'
BartForConditionalGeneration.

- Random float64 weights, every parameter drawn from N(0, 0.3²) (each norm's γ from
  1 + N(0, 0.3²): with γ near 0 the random decoder repeats one token, which tests the cache's
  positions weakly), ``final_logits_bias`` too; encoder and decoder with different H, d_mlp and L.
  Two configurations: tied, GELU, no embedding scale; untied, ReLU, embedding scaled by √d_e.
  Logits within 1e-10 relative of transformers', without and with a source padding mask.
- The cached decoder: its logits in two blocks equal the uncached forward's to 1e-12; cached
  greedy generation equals ``generate(do_sample=False, num_beams=1)`` token for token (12 new
  tokens), and with forced bos/eos tokens configured.
- The conformance battery passes on it as a seq2seq model (its cache through ``bart_decoder``).
- What is not written is refused by name: another activation, mBART's Pre-LN, a tensor the family
  does not use, a tensor of the wrong shape, a tied copy that differs, a wrong padding mask.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from transformers import BartConfig, BartForConditionalGeneration

from formal_algorithms.families.bart import (
    ALGORITHM_8,
    bart,
    bart_config,
    bart_decoder,
    bart_from_state_dict,
    bart_generate,
    bart_logits,
)
from formal_algorithms.families.bart import BartConfig as OwnBartConfig
from formal_algorithms.paper.pseudocode import PSEUDOCODE
from formal_algorithms.testing import adapters as A
from formal_algorithms.testing import conformance as C

Z = np.array([3, 7, 1, 39, 0, 22, 5, 9, 11, 2, 30])  # source tokens
X = np.array([2, 17, 4, 8, 33, 6, 12, 19, 25, 1])  # decoder tokens (from the start token 2)
TIED = dict(tie_word_embeddings=True, activation_function="gelu", scale_embedding=False)
UNTIED = dict(tie_word_embeddings=False, activation_function="relu", scale_embedding=True)


def _model(seed, **options):
    config = BartConfig(
        vocab_size=40, d_model=16, encoder_layers=2, decoder_layers=3, encoder_attention_heads=4,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=24,
        max_position_embeddings=32, forced_eos_token_id=None, attn_implementation="eager",
        **options,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = BartForConditionalGeneration(config).double().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0, 0.3)
            if "norm" in name and name.endswith("weight"):
                p.add_(1)
        model.final_logits_bias.normal_(0, 0.3)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return model, config, state


def _reference(model, z, x, mask=None):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(z)[None], decoder_input_ids=torch.tensor(x)[None],
                    attention_mask=None if mask is None else torch.tensor(mask)[None])  # fmt: skip
    return out.logits[0].numpy().T


def _generate(model, z, n):
    with torch.no_grad():
        out = model.generate(torch.tensor(z)[None], do_sample=False, num_beams=1, max_new_tokens=n)
    return out[0].tolist()


def _relative(ours, expected):
    ours = np.asarray(ours)
    assert ours.dtype == np.float64
    return np.abs(ours - expected).max() / np.abs(expected).max()


@pytest.mark.parametrize(("options", "seed"), [(TIED, 3), (UNTIED, 6)], ids=["tied", "untied"])
def test_bart_equals_transformers_random_float64(options, seed):
    model, config, state = _model(seed, **options)
    kw = bart_config(config.to_dict())
    assert kw["config"] == OwnBartConfig(activation=options["activation_function"],
                                         scale_embedding=options["scale_embedding"])  # fmt: skip
    theta = bart_from_state_dict(state, **kw)
    tied = options["tie_word_embeddings"]
    assert (theta.W_u is None) == tied and (theta.W_e_dec is None) == tied
    ours = np.asarray(bart_logits(Z, X, theta))
    assert _relative(ours, _reference(model, Z, X)) <= 1e-10
    np.testing.assert_allclose(np.asarray(bart(Z, X, theta)).sum(0), 1, atol=1e-12)
    mask = np.array([1] * 8 + [0] * 3)  # a source padded at its end
    masked = np.asarray(bart_logits(Z, X, theta, z_valid=mask))
    assert _relative(masked, _reference(model, Z, X, mask)) <= 1e-10
    assert np.abs(masked - ours).max() > 1e-3  # the mask matters
    # cached: the decoder's logits in two blocks (positions 0-5, then 6-9) equal the full forward's
    decoder = bart_decoder(Z, theta)
    first, cache = decoder.logits(X[:6], 0, decoder.init_cache(16))
    rest, _ = decoder.logits(X[6:], 6, cache)
    assert _relative(np.concatenate([first, rest], 1), ours) <= 1e-12
    # cached greedy generation equals transformers' generate token for token
    expected = _generate(model, Z, 12)
    assert len(expected) == 13 and len(set(expected)) >= 3  # 12 new tokens, not all one token
    assert bart_generate(Z, theta, max_new=12) == expected


def test_bart_generation_with_forced_tokens_and_eos():
    model, config, state = _model(6, **UNTIED)
    forced = dict(forced_bos_token_id=0, forced_eos_token_id=2)  # as bart-large's config.json
    for key, value in forced.items():  # generate reads its generation config
        setattr(model.generation_config, key, value)
    theta = bart_from_state_dict(state, **bart_config({**config.to_dict(), **forced}))
    assert _generate(model, Z, 1) == bart_generate(Z, theta, max_new=1) == [2, 2]  # eos wins
    expected = _generate(model, Z, 8)
    assert expected[:2] == [2, 0] and expected[-1] == 2 and len(expected) == 9
    assert bart_generate(Z, theta, max_new=8) == expected
    # an eos the model draws ends x̂ early: the first new token unlike the first, as eos
    model.generation_config.forced_bos_token_id = None
    model.generation_config.forced_eos_token_id = None
    free = _generate(model, Z, 12)
    i = next(i for i, y in enumerate(free) if i > 1 and y != free[1])
    eos = free[i]
    assert 2 < i < 12 and eos not in free[:i]
    with torch.no_grad():
        out = model.generate(torch.tensor(Z)[None], do_sample=False, num_beams=1,
                             max_new_tokens=12, eos_token_id=eos)[0].tolist()  # fmt: skip
    assert out == free[: i + 1]
    own = theta._replace(config=OwnBartConfig(activation="relu", scale_embedding=True,
                                              eos_token_id=eos))  # fmt: skip
    assert bart_generate(Z, own, max_new=12) == out


def test_the_battery_passes_on_bart():
    model, config, state = _model(3, **TIED)
    theta = bart_from_state_dict(state, **bart_config(config.to_dict()))

    forward = jax.jit(bart_logits)  # θ a pytree, its config static: one compilation, as

    def logits(x, z, z_mask=None, attention_mask=None):  # x, z right-padded to 32, z's masked
        if attention_mask is not None:  # a padded decoder input: not written
            raise A.NotSupported("bart_logits takes no decoder padding mask")
        valid = np.arange(32) < len(z)
        if z_mask is not None:
            valid[: len(z)] &= np.asarray(z_mask, bool)
        pad = [np.pad(np.asarray(s), (0, 32 - len(s))) for s in (z, x)]
        return forward(*pad, theta, z_valid=valid)[:, : len(x)]  # x's later columns: causal

    def cached(new, state, z):
        decoder, cache, start = state or (bart_decoder(z, theta), None, 0)
        cache = decoder.init_cache(32) if cache is None else cache
        out, cache = decoder.logits(new, start, cache)
        return out, (decoder, cache, start + len(new))

    tm = A.from_paper(logits, N_V=40, kind="seq2seq", max_length=32, cached=cached, name="bart")
    checks = ["causality", "padding_right", "batch", "cache", "distributions", "determinism"]
    report = C.run_battery(tm, checks=checks, lengths=[8])
    assert report.ok, str(report)
    assert all(report[name].status == "pass" for name in checks), str(report)


def test_algorithm_8_substitutions_name_its_lines():
    assert set(ALGORITHM_8) <= set(PSEUDOCODE[8])
    assert {2, 3, 7, 11, 12, 18, 21} <= set(ALGORITHM_8)


def test_bart_refuses_what_it_does_not_write():
    model, config, state = _model(0, **TIED)
    d = config.to_dict()
    kw = bart_config(d)
    with pytest.raises(ValueError, match=r"bart_config: .*activation_function = 'silu'"):
        bart_config({**d, "activation_function": "silu"})
    with pytest.raises(ValueError, match=r"bart_config: .*normalize_before = True"):
        bart_config({**d, "normalize_before": True})
    with pytest.raises(ValueError, match=r"BartConfig: argument 'activation' = 'gelu_new'"):
        OwnBartConfig(activation="gelu_new")
    with pytest.raises(ValueError, match=r"bart_from_state_dict: .*does not use: \['extra'\]"):
        bart_from_state_dict({**state, "extra": np.zeros(1)}, **kw)
    bad = {**state, "final_logits_bias": np.zeros((1, 41))}
    with pytest.raises(ValueError, match=r"bart_from_state_dict: argument 'state' .*final_logits"):
        bart_from_state_dict(bad, **kw)
    bad = {**state, "lm_head.weight": state["lm_head.weight"] + 1}
    with pytest.raises(ValueError, match=r"bart_from_state_dict: .*'lm_head.weight' differs"):
        bart_from_state_dict(bad, **kw)
    theta = bart_from_state_dict(state, **kw)
    with pytest.raises(ValueError, match=r"bart_logits .*argument 'z_valid' has shape \(3,\)"):
        bart_logits(Z, X, theta, z_valid=np.ones(3))
    with pytest.raises(ValueError, match=r"bart_logits .*argument 'theta.b_u' has shape"):
        bart_logits(Z, X, theta._replace(b_u=theta.b_u[:-1]))
    with pytest.raises(ValueError, match=r"bart_generate .*argument 'max_new' = 40 exceeds"):
        bart_generate(Z, theta, max_new=40)
