"""The command-line program: its outputs exist and load, a checkpoint written by ``train`` is read
back by ``sample`` and ``attention``, seq2seq and mlm run, streaming equals Algorithm 14, both
tokenizers round-trip exactly, and every user error is one line without a traceback.

The end-to-end run goes through subprocesses (``python -m formal_algorithms``), as a user would;
the other commands call :func:`formal_algorithms.cli.main` in-process, which is the same code
behind the entry point and saves a JAX start-up per command.
"""

import json
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from formal_algorithms import cli
from formal_algorithms.paper.architectures import d_transformer_logits, e_transformer_logits
from formal_algorithms.paper.inference import d_inference, ed_inference, sample_token, step_key
from formal_algorithms.paper.parameters import init_d_transformer, init_ed_transformer
from formal_algorithms.paper.tokenization import CharTokenizer, pydoc_topics_text
from formal_algorithms.paper.training import d_loss
from formal_algorithms.practice.bpe import BPETokenizer, stream_text, tokenizer_from_dict
from formal_algorithms.practice.cache import d_inference_cached
from formal_algorithms.practice.checkpoint import load_checkpoint, save_checkpoint

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY = ["--d-e", "16", "--layers", "1", "--heads", "2", "--batch-size", "4", "--steps", "3"]


def run_cli(*args, cwd=None):
    """``python -m formal_algorithms ARGS`` in a subprocess (the test process's environment)."""
    return subprocess.run(
        [sys.executable, "-m", "formal_algorithms", *map(str, args)],
        capture_output=True, text=True, timeout=300, cwd=cwd,
    )  # fmt: skip


def assert_one_line_error(returncode, stderr, pattern):
    assert returncode != 0
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("formal-algorithms: error: "), lines[0]
    assert re.search(pattern, lines[0]), lines[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text(pydoc_topics_text()[:6000], encoding="utf-8")
    return path


# ----------------------------------------------------------------------- in-process commands


def main(capsys, *args):
    try:
        code = cli.main([str(a) for a in args])
    except SystemExit as exit:  # a parser error: an option out of its range
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_bpe_train_sample_round_trip(corpus, tmp_path, capsys):
    code, out, err = main(capsys, "train", "--text", corpus, "--out", tmp_path, *TINY,
                          "--ell-max", "16", "--tokenizer", "bpe", "--vocab-size", "300",
                          "--sample-length", "5")  # fmt: skip
    assert code == 0, err
    checkpoint = load_checkpoint(tmp_path / "model.safetensors")
    tokenizer = tokenizer_from_dict(checkpoint.tokenizer)
    assert (
        isinstance(tokenizer, BPETokenizer) and tokenizer.N_V == checkpoint.hyperparameters["N_V"]
    )
    code, out, err = main(capsys, "sample", "--checkpoint", tmp_path / "model.safetensors",
                          "--prompt", "naïve 日本 ", "--length", "6")  # fmt: skip
    assert code == 0, err
    assert out.startswith("naïve 日本 ")  # BPE encodes every character


def test_seq2seq_reports_exact_match_accuracy(capsys, tmp_path):
    code, out, err = main(capsys, "seq2seq", "--out", tmp_path, *TINY, "--max-len", "4",
                          "--train-size", "40", "--test-size", "8", "--examples", "2")  # fmt: skip
    assert code == 0, err
    match = re.search(r"exact-match accuracy ([\d.]+)% \((\d+)/8\)", out)
    assert match and 0 <= float(match.group(1)) <= 100
    assert out.count(" → x̂ = <bos>") == 2
    # its checkpoint (issue 19): info reads it, sample runs Algorithm 15 on symbols
    path = tmp_path / "model.safetensors"
    checkpoint = load_checkpoint(path)
    assert checkpoint.extra["accuracy"] == int(match.group(2)) / 8
    code, out, err = main(capsys, "info", path)
    assert code == 0 and "EDTransformer (Algorithm 8)" in out and "step 3 of 3" in out, err
    code, out, err = main(capsys, "sample", "--checkpoint", path, "--prompt", "3 1 4",
                          "--temperature", "0")  # fmt: skip
    x_hat = ed_inference(jnp.asarray([3, 1, 4]), checkpoint.theta, jax.random.key(0), tau=0)
    names = {11: "<bos>", 12: "<eos>"}
    assert code == 0 and out == " ".join(names.get(int(t), str(int(t))) for t in x_hat) + "\n"


def test_mlm_reports_recovery_accuracy_and_baseline(corpus, capsys, tmp_path):
    code, out, err = main(capsys, "mlm", "--out", tmp_path, "--text", corpus, *TINY,
                          "--ell-max", "16", "--test-size", "8")  # fmt: skip
    assert code == 0, err
    assert re.search(
        r"recovery accuracy [\d.]+% on \d+ masked characters; baseline .* [\d.]+%", out
    )
    assert "  masked " in out and "  filled " in out
    # its checkpoint (issue 19): sample fills each _ with Algorithm 9's most likely character
    path = tmp_path / "model.safetensors"
    checkpoint = load_checkpoint(path)
    tokenizer = tokenizer_from_dict(checkpoint.tokenizer)
    code, out, err = main(capsys, "sample", "--checkpoint", path, "--prompt", "t_e _",
                          "--temperature", "0")  # fmt: skip
    x = [tokenizer.bos_token, *tokenizer.encode("t"), tokenizer.mask_token, *tokenizer.encode("e "),
         tokenizer.mask_token]  # fmt: skip
    guess = np.argmax(np.asarray(e_transformer_logits(jnp.asarray(x), checkpoint.theta)), axis=0)
    assert code == 0, err
    fill = [tokenizer.decode([guess[t]], special="show") for t in (2, 5)]
    assert out == f"t{fill[0]}e {fill[1]}\n"


# ------------------------------------------------------------------------------ user errors


def test_user_errors_are_one_line(corpus, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00abc")
    ed = tmp_path / "ed.safetensors"
    theta = init_ed_transformer(jax.random.key(0), N_V=8, ell_max=6, L_enc=1, L_dec=1, H=1,
                                d_e=4, d_mlp=8)  # fmt: skip
    save_checkpoint(ed, theta)
    checkpoint = tmp_path / "char.safetensors"
    theta = init_d_transformer(jax.random.key(0), N_V=8, ell_max=32, L=1, H=1, d_e=4, d_mlp=8)
    tokenizer = CharTokenizer(tuple("abcde"))
    save_checkpoint(checkpoint, theta, tokenizer=tokenizer.to_dict(), extra={"activation": "gelu"})
    good = checkpoint.read_bytes()
    corrupted = tmp_path / "corrupted.safetensors"
    blob = bytearray(good)
    blob[-5] ^= 0xFF  # a tensor byte: the SHA-256 no longer matches
    corrupted.write_bytes(bytes(blob))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good[: len(good) // 2])
    cases = [
        (("train", "--text", empty), r"--text file .* is empty"),
        (("train", "--text", binary), r"is not UTF-8 text"),
        (("train", "--text", corpus, "--steps", "0"), r"--steps must be at least 1"),
        (("sample", "--checkpoint", ed), r"holds an EDTransformer, not a DTransformer"),
        (("sample", "--checkpoint", corrupted), r"is corrupted"),
        (("sample", "--checkpoint", truncated), r"truncated or not a safetensors file"),
        (("sample", "--checkpoint", tmp_path / "none.safetensors"), r"does not exist"),
        (("sample", "--checkpoint", checkpoint, "--prompt", "日本"), r"character '日'.*not in the vocabulary"),
        (("sample", "--checkpoint", checkpoint, "--temperature", "-1"), r"--temperature must be in \[0, inf\]"),
        (("attention", "--checkpoint", ed), r"not a DTransformer"),
        (("attention", "--checkpoint", checkpoint, "--prompt", "a" * 40), r"ell_max = 32"),
    ]  # fmt: skip
    for args, pattern in cases:
        code, _, err = main(capsys, *args)
        assert_one_line_error(code, err, pattern)


# --------------------------------------------------------------------- streaming Algorithm 14


@pytest.fixture(scope="module")
def small_theta():
    theta = init_d_transformer(jax.random.key(5), N_V=9, ell_max=6, L=1, H=2, d_e=8, d_mlp=16,
                               dtype=jnp.float64)  # fmt: skip
    # Larger logits than at initialisation, so that the draws depend on the model.
    return theta._replace(W_u=3.0 * theta.W_u)


def test_streaming_equals_the_literal_and_the_cached_algorithm(small_theta):
    cases = [(1.0, 1, [7, 1, 2]), (0.6, 2, list(range(6))), (0.0, 3, [1, 2] * 4)]
    for tau, seed, prompt in cases:
        key = jax.random.key(seed)
        x = jnp.asarray(prompt, jnp.int32)
        streamed = list(cli.stream_d_inference(x, small_theta, key, ell_gen=10, tau=tau))
        literal = d_inference(x, small_theta, key, ell_gen=10, tau=tau, window=True)
        assert streamed == np.asarray(literal).tolist()
        n_fit = 6 - len(prompt) + 1  # tokens generated before the context is full
        if n_fit > 0:
            cached = d_inference_cached(x, small_theta, key, ell_gen=n_fit, tau=tau)
            assert streamed[:n_fit] == np.asarray(cached).tolist()


def reference_window_sampling(x, theta, key, *, ell_gen, tau, context, anchor):
    """The CLI's sampling written naively: every step runs Algorithm 10 on the whole sequence,
    or on ``[x[:anchor], x[-(context - anchor):]]`` once it is longer than ``context``."""
    x, out = [int(v) for v in x], []
    forward = jax.jit(d_transformer_logits)
    for i in range(ell_gen):
        window = x if len(x) <= context else x[:anchor] + x[len(x) - (context - anchor) :]
        logits = forward(jnp.asarray(window, jnp.int32), theta)[:, -1]
        y = int(sample_token(step_key(key, i), logits, tau))
        out.append(y)
        x.append(y)
    return out


def test_streaming_with_the_cli_window_equals_the_naive_loop(small_theta):
    # the CLI's setting: at most ℓ_max − 1 = 5 tokens per step, the first (bos) kept
    for tau, seed, prompt in [(1.0, 4, [8, 3]), (0.6, 5, [8, 1, 2, 3, 4, 5, 6])]:
        key = jax.random.key(seed)
        streamed = list(cli.stream_d_inference(np.asarray(prompt), small_theta, key, ell_gen=9,
                                               tau=tau, context=5, anchor=1))  # fmt: skip
        expected = reference_window_sampling(prompt, small_theta, key, ell_gen=9, tau=tau,
                                             context=5, anchor=1)  # fmt: skip
        assert streamed == expected


def test_streaming_is_lazy_and_the_prefix_of_a_longer_run(small_theta):
    key = jax.random.key(11)
    x = jnp.asarray([3, 4], jnp.int32)
    long = list(cli.stream_d_inference(x, small_theta, key, ell_gen=10, tau=1.0))
    stream = cli.stream_d_inference(x, small_theta, key, ell_gen=10, tau=1.0)
    assert [next(stream) for _ in range(4)] == long[:4]
    assert list(cli.stream_d_inference(x, small_theta, key, ell_gen=0)) == []
    with pytest.raises(ValueError, match="context"):
        next(cli.stream_d_inference(x, small_theta, key, ell_gen=3, context=7))


def test_the_last_position_is_never_trained(small_theta):
    """Why the CLI reads at most ℓ_max − 1 tokens: Algorithm 13's loss on a sequence of length
    ℓ_max has no term at column ℓ_max − 1, so W_p's last column gets exactly zero gradient."""
    x = jnp.asarray([8, 1, 2, 3, 4, 5], jnp.int32)  # ℓ = ℓ_max = 6
    grad = jax.jit(jax.grad(d_loss))(small_theta, x)
    assert np.all(np.asarray(grad.W_p[:, -1]) == 0)
    assert np.all(np.abs(np.asarray(grad.W_p[:, :-1])).max(axis=0) > 0)


# ----------------------------------------------------------------------------- tokenizers


def test_char_tokenizer_round_trips_with_the_paper_special_tokens():
    text = "def f(x):\n\treturn  x  # ünïcode\n"
    tokenizer = CharTokenizer.from_text(text)
    ids = tokenizer.encode(text, bos=True, eos=True)
    assert ids[0] == tokenizer.N_V - 2 and ids[-1] == tokenizer.N_V - 1
    assert tokenizer.mask_token == tokenizer.N_V - 3 and ids[1:-1].max() < tokenizer.N_V - 3
    assert tokenizer.decode(ids) == text
    again = tokenizer_from_dict(json.loads(json.dumps(tokenizer.to_dict())))
    assert again.decode(again.encode(text)) == text


def test_bpe_round_trips_exactly_with_specials_last():
    corpus = pydoc_topics_text()[:20000]
    tokenizer = BPETokenizer.train(corpus, 300)
    N_V = tokenizer.N_V
    assert N_V == 300
    assert (tokenizer.mask_token, tokenizer.bos_token, tokenizer.eos_token) == (
        N_V - 3,
        N_V - 2,
        N_V - 1,
    )
    samples = [
        corpus[:500],
        "naïve café — 日本語 🎉\u00a0end",
        "  leading, trailing   \t\t tabs\n\n\n  and runs   ",
        "<eos> and <bos> are text here, not special tokens",
        "\r\n\x00\u200b",
        "",
    ]
    for text in samples:
        ids = tokenizer.encode(text)
        assert ids.dtype == np.int32 and (ids.size == 0 or ids.max() < N_V - 3)
        assert tokenizer.decode(ids) == text
        assert "".join(stream_text(tokenizer, ids)) == text
        wrapped = tokenizer.encode(text, bos=True, eos=True)
        assert wrapped[0] == N_V - 2 and wrapped[-1] == N_V - 1
        assert tokenizer.decode(wrapped) == text
        assert tokenizer.decode(wrapped, special="show") == f"<bos>{text}<eos>"
    restored = tokenizer_from_dict(json.loads(json.dumps(tokenizer.to_dict())))
    assert np.array_equal(restored.encode(samples[0]), tokenizer.encode(samples[0]))
    with pytest.raises(ValueError, match="outside"):
        tokenizer.decode([N_V])
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer.train(corpus, 100)


def test_stream_text_holds_back_split_characters():
    tokenizer = BPETokenizer.train("ab " * 50, 259)  # no merges: one token per byte
    text = "a🎉b"  # the emoji is four bytes, four tokens
    ids = tokenizer.encode(text)
    assert len(ids) == 6
    pieces = list(stream_text(tokenizer, ids))
    assert pieces == ["a", "🎉", "b"]


# ------------------------------------------------------------------------------- end to end
# One test function, so that the chain runs once even when pytest-xdist spreads the tests.


def test_train_then_sample_and_attention_in_subprocesses(corpus, tmp_path):
    out = tmp_path / "run"
    proc = run_cli("train", "--text", corpus, "--out", out, *TINY, "--ell-max", "32",
                   "--sample-length", "20", "--prompt", "The ")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    checkpoint_path = out / "model.safetensors"
    checkpoint = load_checkpoint(checkpoint_path)
    assert checkpoint.architecture == "DTransformer"
    hp = checkpoint.hyperparameters
    assert (hp["d_e"], hp["L"], hp["H"], hp["ell_max"]) == (16, 1, 2, 32)
    tokenizer = tokenizer_from_dict(checkpoint.tokenizer)
    assert isinstance(tokenizer, CharTokenizer) and tokenizer.N_V == hp["N_V"]
    assert checkpoint.extra["activation"] == "gelu" and checkpoint.extra["eps"] == 1e-5
    assert checkpoint.extra["config"]["steps"] == 3
    assert checkpoint.arrays["loss_history"].shape == (3,)
    assert (out / "loss.png").read_bytes()[:8] == PNG_MAGIC
    assert re.search(r"held-out +loss [\d.]+ nats/token.*unigram entropy [\d.]+", proc.stdout)
    assert "\nThe " in proc.stdout  # the sample starts with its prompt
    assert "step" in proc.stderr  # the progress bar goes to stderr
    # safetensors, no pickle: every tensor is a plain numeric array
    blob = checkpoint_path.read_bytes()
    header = json.loads(blob[8 : 8 + int.from_bytes(blob[:8], "little")])
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} <= {"F32", "I32"}

    proc = run_cli("sample", "--checkpoint", checkpoint_path, "--prompt", "The ", "--length",
                   "40", "--seed", "3", "--temperature", "0.5")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout.rstrip("\n")
    assert text.startswith("The ") and len(text) > len("The ")

    png = tmp_path / "attention.png"
    proc = run_cli("attention", "--checkpoint", checkpoint_path, "--prompt", "The if", "--out",
                   png)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert "1 layers × 2 heads, 7 tokens" in proc.stdout


def test_a_user_error_in_the_real_process_is_one_line(tmp_path):
    proc = run_cli("train", "--text", tmp_path / "missing.txt")
    assert_one_line_error(
        proc.returncode, proc.stderr, r"--text file .*missing\.txt.* does not exist"
    )


def test_the_benchmarks_own_contenders_run():
    """Our contenders of ``benchmark.run`` on the quick sizes, one call each (the full run is
    measured in docs/performance.md; this pins that its code runs: its imports broke once)."""
    from formal_algorithms.benchmark import common, ours

    rng = np.random.default_rng(0)
    for fast_path in (False, True):
        d_forward, d_step, flops = ours.ours_d(common.QUICK_D, rng, fast_path=fast_path)
        ed_forward, ed_step = ours.ours_ed(common.QUICK_ED, rng, fast_path=fast_path)
        for fn in (d_forward, d_step, ed_forward, ed_step):
            fn()
        assert flops > 0


def test_benchmark_command_runs_the_benchmark_with_its_options(monkeypatch, tmp_path, capsys):
    """``formal-algorithms benchmark`` is ``benchmarks/run.py``: the same options reach
    ``benchmark.run`` and ``benchmark.write`` (both replaced here: the real run takes minutes and
    is measured in docs/performance.md, not in the suite)."""
    from formal_algorithms import benchmark

    calls = {}
    monkeypatch.setattr(benchmark, "run", lambda **kw: calls.setdefault("run", kw) and {"r": 1})
    monkeypatch.setattr(benchmark, "write", lambda r, j, p: calls.setdefault("write", (r, j, p)))
    out = tmp_path / "r.json"
    assert cli.main(["benchmark", "--quick", "--repeats", "2", "--json", str(out)]) == 0
    assert calls["run"] == dict(quick=True, repeats=2, skip_generation=False)
    assert calls["write"] == ({"r": 1}, str(out), None)
    with pytest.raises(SystemExit, match="2"):  # the parser refuses it
        cli.main(["benchmark", "--repeats", "0"])
    assert "--repeats must be at least 1, got 0" in capsys.readouterr().err


def test_the_module_form_of_the_entry_point_runs_the_program():
    """Issue 29: ``python -m formal_algorithms.cli.main`` used to import the module and exit 0
    without doing anything; it is the same program as ``python -m formal_algorithms``."""
    result = subprocess.run(
        [sys.executable, "-m", "formal_algorithms.cli.main", "train", "--steps", "0"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    # Python's runpy warns first that the package imported the module before running it
    assert result.returncode == 2 and "Traceback" not in result.stderr, result
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("formal-algorithms: error: --steps must be at least 1, got 0"), last
