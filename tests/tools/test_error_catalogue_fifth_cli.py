"""Bad command lines that the fifth held-back catalogue found unclear (issue 29), each now refused
with one line naming the option as the user typed it, before any expensive work: a checkpoint
that is garbage, truncated, foreign or of another architecture (every command reads one through
``cli.common.read_checkpoint``), an mlm prompt's unknown character, ``chat --max-tokens`` beyond
the model's context (before its weights are read), and a sampling filter with ``--temperature
0``. The catalogue and its score are in algorithms.md's "Errors"."""

from __future__ import annotations

import re

import gguf
import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from formal_algorithms import cli
from formal_algorithms.cli import mlm, seq2seq
from formal_algorithms.interop import gguf as interop_gguf
from formal_algorithms.paper.parameters import (
    init_d_transformer,
    init_e_transformer,
    init_ed_transformer,
)
from formal_algorithms.paper.tokenization import CharTokenizer
from formal_algorithms.practice.checkpoint import save_checkpoint

CHARS = CharTokenizer(tuple("abc _"))
SIZES = dict(ell_max=16, H=2, d_e=8, d_mlp=16)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny checkpoints as train, mlm and seq2seq write them, and files that are none."""
    d = tmp_path_factory.mktemp("checkpoints")
    key = jax.random.key(0)
    N_V = CHARS.N_V
    train = save_checkpoint(
        d / "run" / "model.safetensors",
        init_d_transformer(key, N_V=N_V, L=1, **SIZES),
        tokenizer=CHARS.to_dict(),
        extra={"activation": "gelu"},
    )
    masked = save_checkpoint(
        d / "mlm" / "model.safetensors",
        init_e_transformer(key, N_V=N_V, L=1, **SIZES),
        tokenizer=CHARS.to_dict(),
        extra={"family": mlm.FAMILY, "activation": "gelu"},
    )
    s2s = save_checkpoint(
        d / "s2s" / "model.safetensors",
        init_ed_transformer(key, N_V=13, L_enc=1, L_dec=1, **SIZES),
        extra={"family": seq2seq.FAMILY},
    )
    garbage = d / "garbage.safetensors"
    garbage.write_bytes(b"this is not a checkpoint at all")
    truncated = d / "truncated.safetensors"
    truncated.write_bytes(train.read_bytes()[:200])
    foreign = d / "foreign.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(foreign), metadata={"format": "pt"})
    broken_run = d / "broken"
    broken_run.mkdir()
    (broken_run / "model.safetensors").write_bytes(train.read_bytes()[:200])
    return dict(run=train, mlm=masked, s2s=s2s, garbage=garbage, truncated=truncated,
                foreign=foreign, broken_run=broken_run)  # fmt: skip


TRUNCATED = r"is truncated or not a safetensors file \(.+\)$"

# name: (argv with {file} placeholders, regex on the one error line)
COMMAND_LINE = {
    # 1. "load_checkpoint: argument 'path' = 'x' is truncated ...": the option, as typed, for every command
    "sample-garbage-checkpoint": (
        ["sample", "--checkpoint", "{garbage}"],
        rf"^--checkpoint '\S+/garbage\.safetensors' {TRUNCATED}",
    ),
    "trace-truncated-checkpoint": (
        ["trace", "--checkpoint", "{truncated}"],
        rf"^--checkpoint '\S+/truncated\.safetensors' {TRUNCATED}",
    ),
    "attention-foreign-checkpoint": (
        ["attention", "--checkpoint", "{foreign}"],
        r"^--checkpoint '\S+/foreign\.safetensors' is a safetensors file but not a "
        r"formal_algorithms checkpoint \(format 'pt'",
    ),
    "info-garbage-checkpoint": (
        ["info", "{garbage}"],
        rf"^checkpoint '\S+/garbage\.safetensors' {TRUNCATED}",
    ),
    "train-resume-truncated-checkpoint": (
        ["train", "--resume", "{broken_run}"],
        rf"^--resume '\S+/broken' \(model\.safetensors\) {TRUNCATED}",
    ),
    # 2. another architecture: --checkpoint named, and the command that writes the right one
    "attention-seq2seq-checkpoint": (
        ["attention", "--checkpoint", "{s2s}"],
        r"^--checkpoint '\S+/s2s/model\.safetensors' holds an EDTransformer, not a DTransformer "
        r"\(Algorithm 10\); use a checkpoint written by 'formal-algorithms train'$",
    ),
    "attention-mlm-checkpoint": (
        ["attention", "--checkpoint", "{mlm}"],
        r"^--checkpoint '\S+/mlm/model\.safetensors' holds an ETransformer, not a DTransformer",
    ),
    # 3. the mlm prompt goes through the same encoding as train's: --prompt, its index as typed
    "sample-mlm-prompt-unknown-character": (
        ["sample", "--checkpoint", "{mlm}", "--prompt", "€_"],
        r"^--prompt '€_' contains the character '€' \(U\+20AC\) at index 0, which is not in "
        r"the vocabulary$",
    ),
    "sample-mlm-prompt-unknown-character-after-a-mask": (
        ["sample", "--checkpoint", "{mlm}", "--prompt", "a_b€"],
        r"^--prompt 'a_b€' contains the character '€' \(U\+20AC\) at index 3",
    ),
    "trace-mlm-prompt-unknown-character-after-a-mask": (
        ["trace", "--checkpoint", "{mlm}", "--prompt", "a[MASK]€"],
        r"^--prompt 'a\[MASK\]€' contains the character '€' \(U\+20AC\) at index 7",
    ),
    # 5. a filter of the draws with --temperature 0 (the argmax) used to be ignored, exit 0
    "sample-top-p-with-temperature-0": (
        [
            "sample",
            "--checkpoint",
            "{run}",
            "--length",
            "3",
            "--temperature",
            "0",
            "--top-p",
            "0.5",
        ],
        r"^--top-p 0\.5 filters the tokens a sample draws from, but --temperature 0 draws none",
    ),  # fmt: skip
    "sample-top-k-with-temperature-0": (
        ["sample", "--checkpoint", "{run}", "--length", "3", "--temperature", "0", "--top-k", "2"],
        r"^--top-k 2 filters the tokens a sample draws from, but --temperature 0 draws none",
    ),
    "sample-seq2seq-top-k-with-temperature-0": (
        [
            "sample",
            "--checkpoint",
            "{s2s}",
            "--prompt",
            "1 2",
            "--temperature",
            "0",
            "--top-k",
            "2",
        ],
        r"^--top-k 2 filters .* --temperature 0",
    ),  # fmt: skip
    # options that shape a language model's sample were ignored by seq2seq and mlm checkpoints
    "sample-seq2seq-length": (
        ["sample", "--checkpoint", "{s2s}", "--prompt", "1 2", "--length", "3"],
        r"^--length applies to a checkpoint of 'train'; --checkpoint '\S+/s2s/model\.safetensors' "
        r"is not one: a seq2seq checkpoint's output ends at its <eos>$",
    ),
    "sample-mlm-stop": (
        ["sample", "--checkpoint", "{mlm}", "--prompt", "a_", "--stop", "b"],
        r"^--stop applies to a checkpoint of 'train'; .* each _ filled$",
    ),
}


def _one_error_line(argv, capsys) -> str:
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("formal-algorithms: error: "), err
    return lines[0].removeprefix("formal-algorithms: error: ")


@pytest.mark.parametrize("name", list(COMMAND_LINE))
def test_the_fifth_catalogues_command_lines_are_refused_by_option(name, files, capsys):
    argv, pattern = COMMAND_LINE[name]
    message = _one_error_line([a.format(**files) for a in argv], capsys)
    assert re.search(pattern, message), message
    assert "load_checkpoint" not in message and "argument '" not in message, message


# ----------------------------------------------------------------------------- 4. chat's context


@pytest.fixture
def no_weights(monkeypatch):
    """Reading a GGUF's weights fails the test: the refusal must come before it."""

    def read_llama_gguf(path, dtype=None):
        raise AssertionError(f"the weights of {path} were read")

    monkeypatch.setattr(interop_gguf, "read_llama_gguf", read_llama_gguf)


def test_chat_max_tokens_beyond_the_context_is_refused_before_anything_loads(
    no_weights, monkeypatch, capsys
):
    def gguf_tokenizer(path):
        raise AssertionError(f"the tokenizer of {path} was built")

    monkeypatch.setattr(interop_gguf, "gguf_tokenizer", gguf_tokenizer)
    message = _one_error_line(["chat", "--max-tokens", "100000", "--prompt", "hi"], capsys)
    assert message == (
        "--max-tokens 100000 does not fit the model's context of 8192 positions "
        "(SmolLM2-135M-Instruct), which holds the prompt too; give --max-tokens at most 8191"
    )
    # trace --gguf --generate: the same context, read from the file's header
    message = _one_error_line(["trace", "--gguf", "--generate", "10000"], capsys)
    assert re.match(r"--generate 10000 is more than the model's context of 8192 positions", message)


def test_chat_max_tokens_and_the_prompt_are_checked_before_the_weights(no_weights, capsys):
    """The tokenizer (seconds) is built before the weights (many more): --max-tokens with the
    prompt's tokens under the chat template must fit the context."""
    argv = ["chat", "--max-tokens", "8180", "--prompt", "what is the capital of France?"]
    message = _one_error_line(argv, capsys)
    match = re.match(
        r"--max-tokens 8180 after --prompt of (\d+) tokens \(with the chat template\) needs "
        r"(\d+) positions, more than the model's context of 8192 \(SmolLM2-135M-Instruct\); "
        r"give --max-tokens at most (\d+) or a shorter --prompt$",
        message,
    )
    assert match, message
    n = int(match.group(1))
    assert int(match.group(2)) == n + 8180 > 8192 and int(match.group(3)) == 8192 - n
    assert "max_new" not in message


def test_a_gguf_header_gives_the_context_without_the_tensors(tmp_path, no_weights, capsys):
    """A Llama GGUF of context 16 whose metadata holds an array of strings before the context
    (the header is walked, not searched): --gguf's own context, named with --max-tokens."""
    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_array("general.languages", ["en", "fr"])
    writer.add_block_count(0)
    writer.add_context_length(16)
    writer.add_head_count(1)
    writer.add_tensor("token_embd.weight", np.ones((5, 4), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    message = _one_error_line(["chat", "--gguf", path, "--max-tokens", "16"], capsys)
    assert message == (
        "--max-tokens 16 does not fit the model's context of 16 positions (tiny.gguf), which "
        "holds the prompt too; give --max-tokens at most 15"
    )


def test_an_abbreviated_option_is_refused_by_the_parser(capsys):
    """argparse took ``--temp`` for ``--temperature``, past the checks that read the options as
    typed (``trace --temperature`` without ``--generate``); every option is now spelt out."""
    with pytest.raises(SystemExit, match="2"):
        cli.main(["trace", "--prompt", "hi", "--temp", "1"])
    assert "unrecognized arguments: --temp 1" in capsys.readouterr().err
