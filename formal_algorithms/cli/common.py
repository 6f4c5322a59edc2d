"""What the commands share: constants, corpus and tokenizer set-up, the training run with its
progress bar, loading a language-model checkpoint, and the model options of the parser."""

from __future__ import annotations

import pathlib
import sys
import time

import jax
import numpy as np

from ..paper.functions import gelu, gelu_tanh, relu
from ..paper.normalisation import EPS
from ..paper.tokenization import CharTokenizer, chunk_text, pydoc_topics_text
from ..practice.checkpoint import load_checkpoint

PROG = "formal-algorithms"

ACTIVATIONS = {"gelu": gelu, "gelu_tanh": gelu_tanh, "relu": relu}

DEFAULT_OUT = pathlib.Path("runs") / "dtransformer"

CHECKPOINT_NAME = "model.safetensors"


def say(*parts, file=None):
    print(*parts, file=file or sys.stdout, flush=True)


def read_text(path: str | None) -> tuple[str, str]:
    """``(text, description)``: the ``--text`` file, or the default corpus."""
    if path is None:
        return pydoc_topics_text(), "Python's pydoc_data/topics help texts"
    p = pathlib.Path(path)
    if not p.exists():
        raise FileNotFoundError(f"--text file {path!r} does not exist")
    if p.is_dir():
        raise ValueError(f"--text {path!r} is a directory; give a text file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"--text file {path!r} is not UTF-8 text (byte {error.start}: {error.reason})"
        ) from None
    if not text.strip():
        raise ValueError(f"--text file {path!r} is empty")
    return text, f"{path} ({p.stat().st_size:,} bytes)"


def make_tokenizer(kind: str, text: str, train_text: str, vocab_size: int):
    """Character level (the vocabulary of the whole text, so that the held-out part encodes) or
    byte-level BPE trained on the training part only (it encodes any text)."""
    if kind == "char":
        return CharTokenizer.from_text(text)
    from ..practice.bpe import BPETokenizer

    return BPETokenizer.train(train_text, vocab_size)


def chunks(text, tokenizer, ell_max, what):
    """Paper §3's chunking to ℓ_max (:func:`~.tokenization.chunk_text`); only full-length chunks
    are kept when there are any, so every batch has one shape and the step compiles once."""
    chunks = chunk_text(text, tokenizer, ell_max)
    full = [c for c in chunks if len(c) == ell_max]
    chunks = full or chunks
    if not chunks or max(len(c) for c in chunks) < 2:
        raise ValueError(f"the {what} text is too short to make a training sequence")
    return chunks


def unigram_entropy(sequences) -> float:
    """Entropy (nats) of the token frequencies of the predicted tokens (all but each ``bos``)."""
    counts = np.bincount(np.concatenate([s[1:] for s in sequences]))
    p = counts[counts > 0] / counts.sum()
    return float(-np.sum(p * np.log(p)))


def n_params(theta) -> int:
    return sum(int(np.prod(np.shape(a))) for a in jax.tree_util.tree_leaves(theta))


def duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"


def progress_callback(total: int, desc: str, initial: int = 0):
    """A tqdm bar for trainer.train's ``callback(step, loss, stats)``: loss, tokens/s, ETA.

    Tokens/s and the ETA leave out the first step (which compiles): the ETA is the remaining
    steps times the mean time per step since then (evaluations left out), so it is not absurd
    at the first step; ``callback.exclude(seconds)`` leaves out time spent between steps (an
    evaluation). ``initial``: steps already done (a resumed run). The bar goes to stderr,
    so stdout holds only results.
    """
    from tqdm import tqdm

    bar = tqdm(total=total, initial=initial, desc=desc, unit="step", file=sys.stderr,
               dynamic_ncols=True, mininterval=0.5,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]")  # fmt: skip
    state = {"t0": None, "tokens": 0.0, "steps": 0, "excluded": 0.0}

    def callback(step, loss, stats):
        loss = float(loss)  # waits for the step: the rate is honest
        now = time.perf_counter()
        if state["t0"] is None:
            state["t0"] = now  # after the first (compiling) step
        else:
            state["tokens"] += float(stats.n_targets)
            state["steps"] += 1
        elapsed = now - state["t0"] - state["excluded"]
        rate = state["tokens"] / elapsed if elapsed > 0 else 0.0
        eta = (
            f"ETA {duration((total - step) * elapsed / state['steps'])}"
            if state["steps"]
            else "ETA after the first step (it compiles)"
        )
        bar.set_postfix_str(f"{eta}, loss {loss:.3f}, {rate:,.0f} tok/s", refresh=False)
        bar.update(1)

    def exclude(seconds):  # time spent between steps (an evaluation) is not training time
        if state["t0"] is not None:
            state["excluded"] += seconds

    callback.exclude = exclude
    return bar, callback


def train_with_progress(theta, data, key, args, desc, **kw):
    from ..practice.trainer import make_optimizer, train

    optimizer = make_optimizer(
        args.lr, N_steps=args.steps, warmup_steps=min(args.warmup, args.steps // 2),
        weight_decay=args.weight_decay, clip_norm=1.0,
    )  # fmt: skip
    bar, callback = progress_callback(args.steps, desc)
    try:
        theta, history = train(theta, data, key, optimizer=optimizer, N_steps=args.steps,
                               batch_size=args.batch_size, callback=callback, fast=True, **kw)  # fmt: skip
    finally:
        bar.close()
    return theta, history


def check_positive(args, *names):
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def load_lm(path):
    """θ, tokenizer, activation and eps of a ``train`` checkpoint, or a one-line error."""
    from ..practice.bpe import tokenizer_from_dict

    checkpoint = load_checkpoint(path)
    if checkpoint.architecture != "DTransformer":
        raise ValueError(
            f"checkpoint {str(path)!r} holds an {checkpoint.architecture}, not a DTransformer "
            f"(Algorithm 10); use a checkpoint written by '{PROG} train'"
        )
    if checkpoint.tokenizer is None:
        raise ValueError(f"checkpoint {str(path)!r} has no tokenizer in its metadata")
    tokenizer = tokenizer_from_dict(checkpoint.tokenizer)
    if tokenizer.N_V != checkpoint.hyperparameters["N_V"]:
        raise ValueError(
            f"checkpoint {str(path)!r}: its tokenizer has N_V = {tokenizer.N_V} but θ has "
            f"N_V = {checkpoint.hyperparameters['N_V']}"
        )
    name = checkpoint.extra.get("activation", "gelu")
    if name not in ACTIVATIONS:
        raise ValueError(f"checkpoint {str(path)!r} names an unknown activation {name!r}")
    return checkpoint, tokenizer, ACTIVATIONS[name], float(checkpoint.extra.get("eps", EPS))


def model_options(p, *, d_e, layers, heads, steps, batch_size, lr, warmup, weight_decay,
                  steps_help="optimiser steps (default %(default)s)"):  # fmt: skip
    p.add_argument("--d-e", type=int, default=d_e, help="embedding width d_e (default %(default)s)")
    p.add_argument("--layers", type=int, default=layers, help="layers L (default %(default)s)")
    p.add_argument("--heads", type=int, default=heads, help="heads H (default %(default)s)")
    p.add_argument("--d-mlp", type=int, default=None, help="MLP width d_mlp (default 4 d_e)")
    p.add_argument("--steps", type=int, default=steps, help=steps_help)
    p.add_argument("--batch-size", type=int, default=batch_size,
                   help="sequences per step (default %(default)s)")  # fmt: skip
    p.add_argument("--lr", type=float, default=lr, help="peak learning rate (default %(default)s)")
    p.add_argument("--warmup", type=int, default=warmup,
                   help="linear warmup steps (default %(default)s)")  # fmt: skip
    p.add_argument("--weight-decay", type=float, default=weight_decay,
                   help="AdamW weight decay of the matrices (default %(default)s)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")


def sample_key(seed: int, j: int = 0):
    """The key of sample ``j`` (0-based) for ``--seed``: ``fold_in(k_sample, j)`` with ``k_sample``
    the third of ``split(key(seed), 3)`` (the first two initialise and train the model). ``train``
    prints sample 0, so ``sample --seed s`` repeats the sample that ``train --seed s`` printed."""
    return jax.random.fold_in(jax.random.split(jax.random.key(seed), 3)[2], j)


def unescape(text: str) -> str:
    r"""``\n``, ``\t`` and ``\\`` typed on the command line as the characters they name."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "nt\\":
            out.append({"n": "\n", "t": "\t", "\\": "\\"}[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)
