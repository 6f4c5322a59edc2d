"""Bad inputs of the trainer, checkpoints, chunking and ``train`` that the fourth held-back
catalogue found silent or unclear (issue 29), each now refused naming the function (or the option
as typed) and the argument. The catalogue and its score are in algorithms.md's "Errors"."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import formal_algorithms as fa
from formal_algorithms import cli
from formal_algorithms.paper.tokenization import (
    CharTokenizer,
    chunk,
    chunk_text,
    pydoc_topics_text,
)
from formal_algorithms.practice import trainer
from formal_algorithms.practice.checkpoint import load_checkpoint, save_checkpoint

THETA = fa.init_d_transformer(jax.random.key(0), N_V=9, ell_max=8, L=1, H=2, d_e=8, d_mlp=12)
X = jnp.asarray([1, 2, 3, 4])
KEY = jax.random.key(1)
OPT = optax.sgd(0.1)
TRAIN = r"^train \(DTraining \(Algorithm 13\)\): "


def _train(**run):
    return trainer.train(THETA, [X], KEY, optimizer=OPT, **run)


def _checkpoint(d):
    return save_checkpoint(d / "m.safetensors", THETA)


# name: (call of the fixture directory, exception type, regex on the message)
CASES = {
    # returned θ unchanged without a word (practice.fit refused the same N_steps)
    "train-N_steps-0": (
        lambda d: _train(N_steps=0),
        ValueError,
        TRAIN + r"argument 'N_steps' = 0 must be at least 1",
    ),
    "train-N_epochs-0": (
        lambda d: _train(N_epochs=0),
        ValueError,
        TRAIN + r"argument 'N_epochs' = 0 must be at least 1",
    ),
    "train-N_steps-float": (
        lambda d: _train(N_steps=2.0),
        TypeError,
        TRAIN + r"argument 'N_steps' must be an integer, got 2.0",
    ),
    "train-N_epochs-bool": (
        lambda d: _train(N_epochs=True),
        TypeError,
        TRAIN + r"argument 'N_epochs' must be an integer, got True",
    ),
    # both given: N_steps silently won
    "train-both-run-lengths": (
        lambda d: _train(N_epochs=1, N_steps=1),
        ValueError,
        TRAIN + r"argument 'N_epochs' = 1 and argument 'N_steps' = 1 are both given; give one",
    ),
    # "holds a DTransformer, expected a ETransformer" without naming the argument
    "load_checkpoint-other-architecture": (
        lambda d: load_checkpoint(_checkpoint(d), architecture="ETransformer"),
        ValueError,
        r"^load_checkpoint: argument 'architecture' = 'ETransformer' does not match: "
        r"argument 'path' = '.*m\.safetensors' holds a DTransformer",
    ),
    # an unknown name was compared with the file's, as if it could match
    "load_checkpoint-unknown-architecture": (
        lambda d: load_checkpoint(_checkpoint(d), architecture="e_transformer"),
        ValueError,
        r"^load_checkpoint: argument 'architecture' = 'e_transformer' is not an architecture; "
        r"give one of 'DTransformer', 'EDTransformer', 'ETransformer' or None",
    ),
    "load_checkpoint-architecture-not-a-name": (
        lambda d: load_checkpoint(_checkpoint(d), architecture=fa.DTransformerParams),
        TypeError,
        r"^load_checkpoint: argument 'architecture' must be an architecture's name \('DTransformer'"
        r", 'EDTransformer', 'ETransformer'\) or None, got type <class .*DTransformerParams'>$",
    ),
    # named the inner chunk
    "chunk_text-ell_max": (
        lambda d: chunk_text("hello", CharTokenizer.from_text("hello"), -1),
        ValueError,
        r"^chunk_text: argument 'ell_max' must be an integer >= 2, got -1",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_fourth_catalogues_practice_cases_are_refused_by_name(name, tmp_path):
    call, error, message = CASES[name]
    with pytest.raises(error, match=message):
        call(tmp_path)


def test_what_the_refusals_leave_working(tmp_path):
    """One run length trains; a resumed run at its last step (``start_step = N_steps``) still has
    no step left and returns θ as it is; the right architecture loads; chunk still names chunk."""
    theta, history = _train(N_epochs=1)
    assert history.shape == (1,) and not np.array_equal(theta.W_e, THETA.W_e)
    theta, history = _train(N_steps=2, start_step=2)
    assert history.shape == (0,) and theta is THETA
    assert load_checkpoint(_checkpoint(tmp_path), architecture="DTransformer").architecture == (
        "DTransformer"
    )
    with pytest.raises(ValueError, match=r"^chunk: argument 'ell_max'"):
        chunk([1, 2], 1, bos_token=7, eos_token=8)


# ---------------------------------------------------------------------------- the command line

TINY = ["--d-e", "8", "--layers", "1", "--heads", "2", "--steps", "2", "--batch-size", "2"]


def _text(d, n_chars):
    path = d / f"text{n_chars}.txt"
    path.write_text(pydoc_topics_text()[:n_chars], encoding="utf-8")
    return path


# name: (argv of the fixture directory, regex on the one error line)
COMMAND_LINE = {
    # blamed --d-e, --layers, --batch-size for ~894 GiB of memory, not --ell-max
    "train-ell-max-beyond-the-text": (
        lambda d: ["--text", _text(d, 10_000), "--ell-max", "100000"],
        r"--ell-max 100000 is longer than the text: the first 90% of .*text10000\.txt .* is "
        r"9,000 characters, 9,002 tokens with bos and eos, .* give --ell-max at most 9002$",
    ),
    "train-ell-max-beyond-the-text-bpe": (
        lambda d: ["--text", _text(d, 10_000), "--ell-max", "100000", "--tokenizer", "bpe"],
        r"--ell-max 100000 is longer than the text: .* is [\d,]+ bytes, at most [\d,]+ tokens "
        r"with bos and eos, .* give --ell-max at most \d+$",
    ),
    # a text long enough for the context, a context too long for memory: --ell-max is named
    "train-ell-max-in-the-memory-estimate": (
        lambda d: ["--text", _text(d, 250_000), "--ell-max", "220000"],
        r"--d-e 8, --layers 1, --heads 2, --batch-size 2, --ell-max 220000: training needs "
        r"about [\d,]+ GiB of memory \(\d+% of it the attention scores, which grow as the "
        r"square of --ell-max 220000\)",
    ),
    # trained (exit 0) on batches of mostly empty rows
    "train-batch-size-beyond-the-data": (
        lambda d: ["--text", _text(d, 10_000), "--ell-max", "16", "--batch-size", "100000"],
        r"--batch-size 100000 is larger than the 600 training sequences \(of --ell-max 16 "
        r"tokens\) in the first 90% of .*; give --batch-size at most 600",
    ),
}
# mlm trains on the same kind of text and shares the checks
for _case in ("ell-max-beyond-the-text", "batch-size-beyond-the-data"):
    COMMAND_LINE[f"mlm-{_case}"] = COMMAND_LINE[f"train-{_case}"]


@pytest.mark.parametrize("name", list(COMMAND_LINE))
def test_the_fourth_catalogues_train_options_are_refused_by_name(name, tmp_path, capsys):
    out = tmp_path / "run"
    argv = [name.split("-")[0], *TINY, "--out", out, *COMMAND_LINE[name][0](tmp_path)]
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("formal-algorithms: error: "), err
    assert re.search(COMMAND_LINE[name][1], lines[0]), lines[0]
    assert not (out / "model.safetensors").exists()  # refused before any training step
