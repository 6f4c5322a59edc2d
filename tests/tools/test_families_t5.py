"""The T5 family (formal_algorithms.families.t5) against transformers' T5ForConditionalGeneration.

- Random float64 weights (every parameter drawn N(0, 0.3²), away from its init), two
  configurations: v1.1 (gated-gelu, untied, unscaled head, d_kv·H ≠ d_model, L_dec ≠ L_enc) and
  the original (relu, tied, the head's d_model^−1/2): logits within 1e-10 relative of
  transformers', a right-padded source with its mask too. transformers computes T5's RMS norm in
  float32 even in a float64 model (relative 1e-7 against it as shipped); :func:`_model` replaces
  that one cast by the module's own formula in float64 (observed ~1e-15).
- The relative position buckets equal transformers' ``T5Attention._relative_position_bucket`` on
  distances −300 … 300 for several bucket counts and maximum distances, both directions.
- Cached greedy decoding (encoder once, decoder cache) equals ``generate(do_sample=False,
  num_beams=1)`` token for token for 10 tokens, and stops at eos as it does; the cached logits in
  two blocks equal the uncached ones to 1e-12.
- The conformance battery passes on it as a seq2seq model (causality, batch, the cache).
- What is not written is refused by name.
"""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration
from transformers.models.t5.modeling_t5 import T5Attention

from formal_algorithms.families.t5 import T5Config as OwnT5Config
from formal_algorithms.families.t5 import (
    t5_config,
    t5_decoder,
    t5_from_state_dict,
    t5_generate,
    t5_logits,
)
from formal_algorithms.testing import adapters as A
from formal_algorithms.testing import conformance as C
from formal_algorithms.variants.relative_bias import relative_position_bucket

Z = np.array(
    [3, 7, 1, 39, 0, 22, 5, 9, 11, 2, 30, 17, 4, 8, 12, 13, 14, 15, 16, 18, 19, 20, 21, 23]
)
X = np.array([0, 5, 9, 11, 2, 30, 17, 3, 7, 33, 25, 26, 27, 28, 6, 10])
V11 = dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False, d_kv=6, num_layers=2,
           num_decoder_layers=3, relative_attention_num_buckets=8,
           relative_attention_max_distance=20)  # fmt: skip
ORIGINAL = dict(feed_forward_proj="relu", tie_word_embeddings=True, d_kv=4, num_layers=2,
                num_decoder_layers=2, relative_attention_num_buckets=10,
                relative_attention_max_distance=12)  # fmt: skip
forward = jax.jit(lambda z, x, theta, valid: t5_logits(z, x, theta, z_valid=valid))


def _float64_norm(m):
    """T5's RMS norm in float64 (transformers casts the variance to float32)."""

    def forward(h):
        return m.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + m.variance_epsilon))

    return forward


@functools.cache
def _model(name, seed):
    config = T5Config(vocab_size=40, d_model=16, d_ff=24, num_heads=4, decoder_start_token_id=0,
                      pad_token_id=0, eos_token_id=1, dropout_rate=0.0,
                      **{"v1.1": V11, "original": ORIGINAL}[name])  # fmt: skip
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config).double().eval()
    if not config.scale_decoder_outputs:  # v1.1: lm_head its own array (transformers ties it)
        model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.shared.weight))
    with torch.no_grad():
        for p in model.parameters():  # norms, biases, embeddings away from their inits
            p.normal_(0, 0.3)
    for m in model.modules():
        if type(m).__name__ == "T5LayerNorm":
            m.forward = _float64_norm(m)
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return model, config, state


def _theta(name, seed):
    _, config, state = _model(name, seed)
    return t5_from_state_dict(state, **t5_config(config.to_dict()))


def _hf_logits(model, z, x, mask=None):
    mask = None if mask is None else torch.tensor(mask, dtype=torch.long)[None]
    with torch.no_grad():
        out = model(input_ids=torch.tensor(z)[None], attention_mask=mask,
                    decoder_input_ids=torch.tensor(x)[None])  # fmt: skip
    return out.logits[0].numpy().T


def _relative(ours, expected):
    return np.abs(np.asarray(ours) - expected).max() / np.abs(expected).max()


@pytest.mark.parametrize(("name", "tied"), [("v1.1", False), ("original", True)])
def test_t5_equals_transformers_random_float64(name, tied):
    model, config, state = _model(name, seed=1)
    kw = t5_config(config.to_dict())
    assert kw["config"].output_scale == tied and kw["d_kv"] == config.d_kv
    theta = t5_from_state_dict(state, **kw)
    assert (theta.W_u is None) == tied and len(theta.dec) == config.num_decoder_layers
    expected = _hf_logits(model, Z, X)
    ours = forward(Z, X, theta, None)
    assert ours.dtype == np.float64 and ours.shape == (40, len(X))
    assert _relative(ours, expected) <= 1e-10
    # a source right-padded by 5 tokens, with its mask: transformers' and the unpadded logits
    padded, valid = np.concatenate([Z[:19], [0] * 5]), np.arange(24) < 19
    expected = _hf_logits(model, padded, X, valid.astype(int))
    assert _relative(forward(padded, X, theta, valid), expected) <= 1e-10
    assert _relative(forward(Z[:19], X, theta, None), expected) <= 1e-10


@pytest.mark.parametrize("bidirectional", [True, False])
def test_buckets_equal_transformers(bidirectional):
    relative = np.arange(-300, 301)
    for n_buckets, max_distance in [(32, 128), (16, 40), (8, 20), (10, 12), (4, 3), (6, 4)]:
        expected = T5Attention._relative_position_bucket(
            torch.tensor(relative), bidirectional=bidirectional, num_buckets=n_buckets,
            max_distance=max_distance,
        ).numpy()  # fmt: skip
        ours = relative_position_bucket(relative, bidirectional=bidirectional,
                                        n_buckets=n_buckets, max_distance=max_distance)  # fmt: skip
        np.testing.assert_array_equal(np.asarray(ours), expected)


def _generate(model, z, n, eos=None, use_cache=True):
    with torch.no_grad():
        out = model.generate(torch.tensor(z)[None], max_new_tokens=n, min_new_tokens=0 if eos else n,
                             do_sample=False, num_beams=1, eos_token_id=eos, use_cache=use_cache)  # fmt: skip
    assert out[0, 0] == 0  # decoder_start_token_id
    return out[0, 1:].tolist()


@pytest.mark.parametrize(("name", "seed"), [("v1.1", 9), ("original", 2)])
def test_cached_greedy_equals_generate(name, seed):
    model, config, _ = _model(name, seed)
    theta = _theta(name, seed)
    z = Z
    # transformers' own cache sizes itself by num_layers, not num_decoder_layers: uncached there
    greedy = _generate(model, z, 10, use_cache=config.num_layers == config.num_decoder_layers)
    assert len(set(greedy)) >= 3  # not one token repeated
    decoder = t5_decoder(theta, z)
    assert decoder.generate([0], max_new=10) == greedy
    # eos: the 4th token (T5's own eos, 1, for v1.1's seed); both stop after its first occurrence
    eos = greedy[3]
    stopped = _generate(model, z, 10, eos=eos, use_cache=False)
    assert stopped == greedy[: greedy.index(eos) + 1]
    assert t5_generate(z, theta, max_new=10, eos=eos) == stopped
    # the cached logits in two blocks equal the uncached forward's
    uncached = np.asarray(forward(z, X, theta, None))
    cache = decoder.init_cache(16)  # generate's: one compiled block for both halves
    first, cache = decoder.logits(X[:8], 0, cache)
    second, cache = decoder.logits(X[8:], 8, cache)
    assert _relative(np.concatenate([first, second], 1), uncached) <= 1e-12


def test_the_battery_passes_on_t5():
    theta = _theta("v1.1", seed=1)

    def cached(new, state, z):  # (decoder for z, its cache, the positions so far)
        if state is None:
            decoder = t5_decoder(theta, z)
            state = (decoder, decoder.init_cache(32), 0)
        decoder, cache, start = state
        logits, cache = decoder.logits(new, start, cache)
        return logits, (decoder, cache, start + len(new))

    def logits(x, z):  # x padded to 16 (causal: columns < ℓ never see the padding), one compile
        padded = np.zeros(16, int)
        padded[: len(x)] = x
        return forward(z, padded, theta, None)[:, : len(x)]

    model = A.from_paper(logits, N_V=40, kind="seq2seq", name="t5", cached=cached)
    checks = ["causality", "batch", "cache", "distributions", "determinism"]
    report = C.run_battery(model, checks=checks, lengths=[8])
    assert report.ok, str(report)


def test_t5_refuses_what_it_does_not_write():
    _, config, state = _model("v1.1", seed=1)
    d = config.to_dict()
    with pytest.raises(ValueError, match=r"t5_config: .*feed_forward_proj = 'gated-silu'"):
        t5_config({**d, "feed_forward_proj": "gated-silu"})
    kw = t5_config(d)
    with pytest.raises(ValueError, match=r"t5_from_state_dict: .*does not use: \['extra'\]"):
        t5_from_state_dict({**state, "extra": np.zeros(1)}, **kw)
    with pytest.raises(ValueError, match=r"t5_from_state_dict: .*'encoder.block.0.layer.0.Self"
                       r"Attention.q.weight' has shape \(24, 16\), expected \(20, 16\)"):  # fmt: skip
        t5_from_state_dict(state, **{**kw, "d_kv": 5})
    bad = {**state, "encoder.embed_tokens.weight": state["shared.weight"] + 1}
    with pytest.raises(
        ValueError, match=r"t5_from_state_dict: .*'encoder.embed_tokens.weight' differs"
    ):
        t5_from_state_dict(bad, **kw)
    relu = {**kw, "config": OwnT5Config(feed_forward_proj="relu")}
    with pytest.raises(
        ValueError, match=r"t5_from_state_dict: .*has no tensor .*DenseReluDense.wi.weight"
    ):
        t5_from_state_dict(state, **relu)
    with pytest.raises(ValueError, match=r"T5Config: argument 'feed_forward_proj' must be one of"):
        OwnT5Config(feed_forward_proj="gelu")
    with pytest.raises(ValueError, match=r"T5Config: argument 'max_distance' = 2 must exceed"):
        OwnT5Config(n_buckets=32, max_distance=2)
    theta = t5_from_state_dict(state, **kw)
    with pytest.raises(ValueError, match=r"t5_logits .*argument 'theta.enc\[0\].W_up' lacks W_up"):
        t5_logits(Z, X, theta._replace(enc=(theta.enc[0]._replace(W_up=None), *theta.enc[1:])))
    with pytest.raises(ValueError, match=r"t5_logits .*argument 'z_valid'"):
        t5_logits(Z, X, theta, z_valid=np.ones(3, bool))
    with pytest.raises(ValueError, match=r"t5_logits .*argument 'x'"):
        t5_logits(Z, np.array([40]), theta)
