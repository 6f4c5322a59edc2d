"""Qwen2, Mistral and GPT-NeoX (Pythia) as Algorithm 10 with documented line substitutions,
against transformers' own models with random weights in float64 (issue 30).

Tolerances: transformers computes the RoPE angles (and RMSnorm) in float32 even in a float64
model; :func:`_float64_internals` replaces those two with the modules' own formulas in float64
(everything else stays transformers'), after which the agreement is float64's: relative 1e-10
asserted (observed ~1e-14).
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import (
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from formal_algorithms.families.gpt_neox import GPTNeoXConfig as OwnNeoXConfig
from formal_algorithms.families.gpt_neox import (
    gpt_neox,
    gpt_neox_config,
    gpt_neox_decoder,
    gpt_neox_from_state_dict,
    gpt_neox_logits,
    init_gpt_neox,
)
from formal_algorithms.families.llama import Decoder, LlamaConfig, init_llama, llama_logits
from formal_algorithms.families.mistral import (
    mistral_config,
    mistral_from_state_dict,
    mistral_logits,
)
from formal_algorithms.families.qwen2 import (
    init_qwen2,
    qwen2,
    qwen2_config,
    qwen2_from_state_dict,
    qwen2_hyperparameters,
    qwen2_logits,
)
from formal_algorithms.variants.partial_rope import partial_rope
from formal_algorithms.variants.sliding_window import sliding_window_mask

X = np.array([3, 7, 1, 39, 0, 22, 5, 9, 11, 2, 30, 17])


def _randomise(model, seed):
    torch.manual_seed(seed)
    model = model.double().eval()
    with torch.no_grad():
        for p in model.parameters():  # norms, biases, embeddings away from their 1 / 0 inits
            p.normal_(0, 0.3)
    return model


def _float64_internals(model, rotary, d_rot, base):
    """RMSnorm and the RoPE angles in float64 (transformers casts both to float32)."""

    def rms(m):
        eps = getattr(m, "variance_epsilon", getattr(m, "eps", None))

        def forward(h):
            return m.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps))

        return forward

    for m in model.modules():
        if type(m).__name__.endswith("RMSNorm"):
            m.forward = rms(m)
    inv_freq = 1.0 / (base ** (torch.arange(0, d_rot, 2, dtype=torch.float64) / d_rot))

    def angles(x, position_ids):
        freqs = position_ids[..., None].double() * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

    rotary.forward = angles


def _state(model, tied):
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    if tied:
        state.pop("lm_head.weight")
    return state


def _hf_logits(model, x):
    with torch.no_grad():
        return model(torch.tensor(x)[None]).logits[0].numpy().T


def _greedy(model, prompt, n):
    with torch.no_grad():
        out = model.generate(torch.tensor(prompt)[None], max_new_tokens=n, min_new_tokens=n,
                             do_sample=False, eos_token_id=None, pad_token_id=0)  # fmt: skip
    return out[0, len(prompt) :].tolist()


def _greedy_ours(logits, theta, kw=None, prompt=X[:3], n=8):
    """Algorithm 14 with τ = 0, uncached, on one padded length for every step (column t sees
    positions ≤ t only, so the padding never enters): the eager forward compiles once."""
    x = np.zeros(len(prompt) + n, int)
    x[: len(prompt)] = prompt
    for t in range(len(prompt), len(x)):
        x[t] = int(jnp.argmax(logits(x, theta, **(kw or {}))[:, t - 1]))
    return x[len(prompt) :].tolist()


def _two_blocks(decoder):
    """The cached decoder's logits of X computed as two blocks (positions 0-5, then 6-11: one
    compiled block)."""
    first, cache = decoder.logits(X[:6], 0, decoder.init_cache(16))
    rest, _ = decoder.logits(X[6:], 6, cache)
    return np.concatenate([first, rest], 1)


def _close(ours, expected):
    ours = np.asarray(ours)
    assert ours.dtype == np.float64
    err = np.abs(ours - expected).max() / np.abs(expected).max()
    assert err <= 1e-10, err


# ------------------------------------------------------------------------------ Qwen2


@pytest.mark.parametrize(("G", "tied"), [(2, True), (4, False)])
def test_qwen2_equals_transformers_random_float64(G, tied):
    config = Qwen2Config(
        vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=G, max_position_embeddings=64,
        rope_theta=1e5, rms_norm_eps=1e-6, tie_word_embeddings=tied, attn_implementation="sdpa",
    )  # fmt: skip
    model = _randomise(Qwen2ForCausalLM(config), seed=G + 10 * tied)
    kw = qwen2_config(config.to_dict())
    assert kw["config"] == LlamaConfig(rope_base=1e5, eps=1e-6)
    theta = qwen2_from_state_dict(_state(model, tied), **kw)
    assert theta.config == kw["config"]  # θ carries it: no keyword below
    assert (theta.W_u is None) == tied and theta.layers[1].W.b_k.shape == (G, 8)
    _float64_internals(model, model.model.rotary_emb, 8, 1e5)
    _close(qwen2_logits(X, theta), _hf_logits(model, X))
    P = np.asarray(qwen2(X, theta))
    np.testing.assert_allclose(P.sum(0), 1, atol=1e-12)

    # greedy Algorithm 14, uncached and cached (the Llama decoder with Qwen2's biases)
    expected = _greedy(model, X[:3], 8)
    assert _greedy_ours(qwen2_logits, theta) == expected
    decoder = Decoder(theta, hyperparameters=qwen2_hyperparameters)
    assert decoder.generate(X[:3], max_new=8) == expected


def test_qwen2_refuses_what_it_does_not_write():
    theta = init_qwen2(jax.random.key(0), N_V=9, L=1, H=4, G=2, d_e=8, d_mlp=6)
    with pytest.raises(ValueError, match=r"qwen2_logits .*.theta.layers\[0\].W.b_v' is None"):
        qwen2_logits(np.array([1]), theta._replace(layers=(theta.layers[0]._replace(
            W=theta.layers[0].W._replace(b_v=None)),)))  # fmt: skip
    config = Qwen2Config(vocab_size=9, hidden_size=8, num_attention_heads=4,
                         num_key_value_heads=2, num_hidden_layers=1).to_dict()  # fmt: skip
    state = {"model.layers.0.self_attn.o_proj.bias": np.zeros(8)}
    with pytest.raises(ValueError, match=r"qwen2_from_state_dict: .*does not use: \['model.lay"):
        model = Qwen2ForCausalLM(Qwen2Config(**config))
        full = {k: v.detach().numpy() for k, v in model.state_dict().items()}
        qwen2_from_state_dict({**full, **state}, **qwen2_config(config))
    scaled = {**config, "rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4}}
    with pytest.raises(ValueError, match="qwen2_config: .*RoPE scaling 'yarn'"):
        qwen2_config(scaled)
    with pytest.raises(ValueError, match="use_sliding_window = True"):
        qwen2_config({**config, "use_sliding_window": True})


# ---------------------------------------------------------------------------- Mistral


@pytest.mark.parametrize(("ell", "window"), [(1, 1), (5, 2), (7, 3), (6, 6), (4, 9)])
def test_sliding_window_mask_equals_the_index_loop(ell, window):
    expected = np.zeros((ell, ell), bool)
    for t_z in range(ell):
        for t_x in range(ell):
            expected[t_z, t_x] = t_x - window < t_z <= t_x
    np.testing.assert_array_equal(np.asarray(sliding_window_mask(ell, window)), expected)


def test_sliding_window_mask_refuses_bad_sizes():
    with pytest.raises(ValueError, match="sliding_window_mask .*'window'"):
        sliding_window_mask(4, 0)


@pytest.mark.parametrize(("G", "tied"), [(1, False), (2, True)])
def test_mistral_equals_transformers_random_float64(G, tied):
    config = MistralConfig(
        vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=G, max_position_embeddings=64,
        rope_theta=1e4, rms_norm_eps=1e-5, tie_word_embeddings=tied, sliding_window=4,
        attn_implementation="sdpa",
    )  # fmt: skip
    model = _randomise(MistralForCausalLM(config), seed=5 + G + 10 * tied)
    kw = mistral_config(config.to_dict())
    assert kw["config"] == LlamaConfig(rope_base=1e4, eps=1e-5, window=4)
    theta = mistral_from_state_dict(_state(model, tied), **kw)
    assert (theta.W_u is None) == tied
    _float64_internals(model, model.model.rotary_emb, 8, 1e4)
    expected = _hf_logits(model, X)
    _close(mistral_logits(X, theta), expected)
    _close(llama_logits(X, theta), expected)  # the Llama forward applies θ's window too
    with pytest.raises(ValueError, match=r"mistral_logits .*'window' = 5 contradicts θ's own"):
        mistral_logits(X, theta, window=5)
    # the window matters: the unidirectional mask gives other logits after position w
    wide = theta._replace(config=dataclasses.replace(theta.config, window=len(X)))
    full = np.asarray(mistral_logits(X, wide))
    assert np.abs(full[:, 4:] - expected[:, 4:]).min() > 0
    np.testing.assert_allclose(full[:, :4], expected[:, :4], rtol=0, atol=1e-10)
    # greedy Algorithm 14 past the window (3 + 8 tokens, w = 4) equals generate's (cached)
    # tokens, uncached and with the Llama decoder's cache bounded by the window
    expected = _greedy(model, X[:3], 8)
    assert _greedy_ours(mistral_logits, theta) == expected
    assert Decoder(theta).generate(X[:3], max_new=8) == expected


def test_mistral_refuses_what_it_does_not_write():
    config = MistralConfig(vocab_size=9, hidden_size=8, num_attention_heads=4,
                           num_key_value_heads=2, num_hidden_layers=1).to_dict()  # fmt: skip
    with pytest.raises(ValueError, match="mistral_config: .*hidden_act = 'gelu'"):
        mistral_config({**config, "hidden_act": "gelu"})
    with pytest.raises(ValueError, match="mistral_config: .*RoPE scaling 'linear'"):
        mistral_config({**config, "rope_parameters": {"rope_type": "linear", "factor": 2.0}})
    state = {k: v.detach().numpy() for k, v in MistralForCausalLM(MistralConfig(**config))
             .state_dict().items()}  # fmt: skip
    state["model.layers.0.self_attn.q_proj.bias"] = np.zeros(8)
    with pytest.raises(ValueError, match="mistral_from_state_dict: .*q_proj.bias"):
        mistral_from_state_dict(state, **mistral_config(config))


# --------------------------------------------------------------------------- GPT-NeoX


def test_partial_rope_equals_the_index_loop():
    rng = np.random.default_rng(0)
    d, n, d_rot, base = 6, 5, 4, 100.0
    X = rng.normal(size=(d, n))
    positions = np.array([0, 3, 1, 7, 2])
    expected = X.copy()
    for t in range(n):
        for i in range(d_rot // 2):
            angle = positions[t] * base ** (-2 * i / d_rot)
            a, b = X[i, t], X[i + d_rot // 2, t]
            expected[i, t] = a * np.cos(angle) - b * np.sin(angle)
            expected[i + d_rot // 2, t] = b * np.cos(angle) + a * np.sin(angle)
    got = np.asarray(partial_rope(jnp.asarray(X), jnp.asarray(positions), base, d_rot))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-14)
    with pytest.raises(ValueError, match="partial_rope: argument 'd_rot' = 8 exceeds"):
        partial_rope(jnp.asarray(X), jnp.asarray(positions), base, 8)


@pytest.mark.parametrize(("parallel", "tied"), [(True, False), (False, True)])
def test_gpt_neox_equals_transformers_random_float64(parallel, tied):
    config = GPTNeoXConfig(
        vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=64, rotary_pct=0.5, rotary_emb_base=1e4,
        layer_norm_eps=1e-5, use_parallel_residual=parallel, tie_word_embeddings=tied,
        attn_implementation="sdpa",
    )  # fmt: skip
    model = _randomise(GPTNeoXForCausalLM(config), seed=20 + parallel + 10 * tied)
    kw = gpt_neox_config(config.to_dict())
    assert kw["config"] == OwnNeoXConfig(d_rot=4, rope_base=1e4, eps=1e-5, parallel=parallel)
    theta = gpt_neox_from_state_dict(_state(model, tied), **kw)
    assert (theta.W_u is None) == tied
    _float64_internals(model, model.gpt_neox.rotary_emb, 4, 1e4)
    expected = _hf_logits(model, X)
    _close(gpt_neox_logits(X, theta), expected)
    with pytest.raises(ValueError, match=r"gpt_neox_logits .*'parallel' = .* contradicts θ's own"):
        gpt_neox_logits(X, theta, parallel=not parallel)
    flipped = dataclasses.replace(theta.config, parallel=not parallel)
    other = np.asarray(gpt_neox_logits(X, theta._replace(config=flipped)))
    assert np.abs(other - expected).max() > 1e-3 * np.abs(expected).max()
    P = np.asarray(gpt_neox(X, theta))
    np.testing.assert_allclose(P.sum(0), 1, atol=1e-12)
    greedy = _greedy(model, X[:3], 8)
    assert _greedy_ours(gpt_neox_logits, theta) == greedy
    # cached: the uncached layer with its attention over the cache; logits in two blocks
    decoder = gpt_neox_decoder(theta)
    assert decoder.generate(X[:3], max_new=8) == greedy
    _close(_two_blocks(decoder), np.asarray(gpt_neox_logits(X, theta)))


def test_gpt_neox_refuses_what_it_does_not_write():
    config = GPTNeoXConfig(vocab_size=9, hidden_size=8, num_attention_heads=2, rotary_pct=0.5,
                           intermediate_size=12, num_hidden_layers=1).to_dict()  # fmt: skip
    with pytest.raises(ValueError, match=r"GPTNeoXConfig: argument 'd_rot' must be an even"):
        rope = {**config["rope_parameters"], "partial_rotary_factor": 0.25}
        gpt_neox_config({**config, "rope_parameters": rope})  # d_rot = 1: rotary pairs need 2
    with pytest.raises(ValueError, match="gpt_neox_config: .*hidden_act = 'relu'"):
        gpt_neox_config({**config, "hidden_act": "relu"})
    with pytest.raises(ValueError, match="gpt_neox_config: .*RoPE scaling 'dynamic'"):
        gpt_neox_config({**config, "rope_parameters": {"rope_type": "dynamic", "factor": 2.0}})
    state = {k: v.detach().numpy() for k, v in GPTNeoXForCausalLM(GPTNeoXConfig(**config))
             .state_dict().items()}  # fmt: skip
    state["gpt_neox.layers.0.attention.masked_bias"] = np.zeros(())
    with pytest.raises(ValueError, match="gpt_neox_from_state_dict: .*masked_bias"):
        gpt_neox_from_state_dict(state, **gpt_neox_config(config))
    theta = init_gpt_neox(jax.random.key(0), N_V=9, L=1, H=2, d_e=8, d_mlp=12)
    with pytest.raises(ValueError, match=r"gpt_neox_logits .*'x' holds token ids \[9\]"):
        gpt_neox_logits(np.array([1, 9]), theta)


def test_the_examples_of_docs_families_run():
    """Every Python block of docs/families.md runs and gives the logits its comment states."""
    text = (pathlib.Path(__file__).parents[2] / "docs" / "families.md").read_text()
    text = text.split("## Trained weights in Python")[0]  # run with the models' own tests
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 3
    for block in blocks:
        namespace = {}
        exec(block, namespace)
        stated = re.search(r"# \((\d+), (\d+)\)", block)
        N_V, ell = namespace["logits"].shape
        assert stated is None or (N_V, ell) == tuple(map(int, stated.groups()))
        assert N_V == 40 and np.isfinite(np.asarray(namespace["logits"])).all()


@pytest.mark.parametrize("section", ["## T5", "## BART"])
def test_the_encoder_decoder_examples_of_docs_families_run(section):
    """The T5 and BART sections' Python blocks run on a random transformers model: logits
    (N_V, ℓ_x) = (40, 3), finite, and greedy tokens of the vocabulary."""
    text = (pathlib.Path(__file__).parents[2] / "docs" / "families.md").read_text()
    part = text.split(section)[1].split("\n## ")[0]
    (block,) = re.findall(r"```python\n(.*?)```", part, re.S)
    namespace = {}
    exec(block, namespace)
    logits = np.asarray(namespace["logits"])
    assert logits.shape == (40, 3) and np.isfinite(logits).all()
    tokens = np.asarray(namespace["tokens"])
    assert tokens.ndim == 1 and len(tokens) >= 1 and ((0 <= tokens) & (tokens < 40)).all()


def test_the_families_generation_benchmark_runs_and_the_tokens_agree():
    """The benchmark's quick size: every family's cached decoder gives generate's greedy tokens
    (what its speed-up is measured on); the timings themselves are the benchmark's, not a test's."""
    from formal_algorithms.benchmark import families

    result = families.run(n=4, repeats=1, size=families.QUICK)
    names = {"llama", "qwen2", "mistral", "gemma", "gpt_neox", "opt_post_ln", "phi"}
    assert set(result["families"]) == names
    for name, r in result["families"].items():
        assert r["same_tokens"], name
        assert set(r["tokens_per_s"]) == {"ours", "transformers", "transformers_1_thread"}


def test_the_atlas_of_docs_families_is_generated_from_the_code():
    """docs/families.md's atlas is what the families' ALGORITHM_10 tables and the paper's
    pseudocode give (regenerate: python -m formal_algorithms.families.atlas --write); a family
    naming a line Algorithm 10 lacks is refused."""
    from formal_algorithms.families import atlas

    page = atlas.PAGE.read_text()
    assert atlas.page_with_atlas(page) == page, "stale: run the atlas with --write"
    table = atlas.atlas()
    assert table.count("\n") == 1 + 11  # header, rule, Algorithm 10's 11 lines
    assert "| 6 | `X ← X + MHAttention(X̃ \\| W_l" in table and "sliding_window" in table
    table_8 = atlas.atlas(8)
    assert table_8.count("\n") == 1 + 21 and table_8 in page  # Algorithm 8's 21 lines
    assert "| T5 | BART |" in table_8 and "relative_bias" in table_8
    atlas.FAMILIES["broken"] = {12: "a line the paper does not have"}
    try:
        with pytest.raises(ValueError, match=r"atlas: broken replaces lines \[12\]"):
            atlas.atlas()
    finally:
        del atlas.FAMILIES["broken"]
    atlas.ED_FAMILIES["broken"] = {22: "a line the paper does not have"}
    try:
        with pytest.raises(ValueError, match=r"broken replaces lines \[22\] that Algorithm 8"):
            atlas.atlas(8)
    finally:
        del atlas.ED_FAMILIES["broken"]


@pytest.mark.parametrize("family", ["qwen2", "mistral", "gpt_neox"])
def test_the_battery_passes_on_the_families(family):
    """This library's Qwen2, Mistral (window 4, probed at 8 tokens) and GPT-NeoX through
    ``from_paper`` (jitted; no embedding split, so causality by perturbation alone): causal,
    batch-independent, finite, deterministic."""
    from formal_algorithms.testing import adapters as A
    from formal_algorithms.testing import conformance as C

    key, shapes = jax.random.key(1), dict(N_V=40, L=2, H=4, d_e=16, d_mlp=24)
    theta, forward = {
        "qwen2": (lambda: init_qwen2(key, G=2, **shapes), qwen2_logits),
        "mistral": (lambda: init_llama(key, G=1, config=LlamaConfig(window=4), **shapes),
                    mistral_logits),
        "gpt_neox": (lambda: init_gpt_neox(key, config=OwnNeoXConfig(d_rot=2), **shapes),
                     gpt_neox_logits),
    }[family]  # fmt: skip
    theta = theta()
    model = A.from_paper(jax.jit(lambda x: forward(x, theta)), N_V=40, name=family)
    checks = ["causality", "batch", "distributions", "determinism"]
    report = C.run_battery(model, checks=checks, lengths=[8])
    assert report.ok, str(report)


def test_cached_decoding_names_the_step_and_leaf_without_a_distribution():
    """The cached decoders draw each token on the device (one round trip per token): logits
    with NaN give -1 there, and the host names the step and θ's first non-finite leaf."""
    theta = init_gpt_neox(jax.random.key(0), N_V=9, L=1, H=2, d_e=8, d_mlp=12,
                          config=OwnNeoXConfig(d_rot=2))  # fmt: skip
    decoder = gpt_neox_decoder(theta)
    tokens = decoder.generate(np.array([1, 2, 3]), max_new=4)  # finite θ: four tokens of 9
    assert len(tokens) == 4 and all(0 <= y < 9 for y in tokens)
    bad = gpt_neox_decoder(theta._replace(gamma=theta.gamma.at[0].set(np.nan)))
    with pytest.raises(
        ValueError,
        match=r"^gpt_neox_decoder\(θ\)\.generate .*at step 1, .*theta\.head\.gamma is not finite",
    ):
        bad.generate(np.array([1, 2, 3]), max_new=4)
