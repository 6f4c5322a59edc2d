"""What the commands share: constants, corpus and tokenizer set-up, the training run with its
progress bar, loading a language-model checkpoint, and the model options of the parser."""

from __future__ import annotations

import argparse
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
    """The trainer's run with a progress bar. A run that diverges or is interrupted saves its last
    good state (θ, optimizer state, step) in ``--out``/interrupted.safetensors first."""
    from ..practice.trainer import NonFiniteError, TrainingInterrupted, make_optimizer, train

    optimizer = make_optimizer(
        args.lr, N_steps=args.steps, warmup_steps=min(args.warmup, args.steps // 2),
        weight_decay=args.weight_decay, clip_norm=1.0,
    )  # fmt: skip
    bar, callback = progress_callback(args.steps, desc)
    try:
        theta, history = train(theta, data, key, optimizer=optimizer, N_steps=args.steps,
                               batch_size=args.batch_size, callback=callback, fast=True, **kw)  # fmt: skip
    except (NonFiniteError, TrainingInterrupted) as error:
        out = pathlib.Path(getattr(args, "out", None) or pathlib.Path("runs") / desc)
        status = "interrupted" if isinstance(error, KeyboardInterrupt) else "diverged"

        def save(theta, opt_state, completed, history):
            from ..practice.checkpoint import save_checkpoint

            config = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str))}
            return save_checkpoint(out / PARTIAL_NAME, theta, opt_state=opt_state,
                                   extra={"step": completed, "config": config,
                                          "status": status},
                                   arrays={"loss_history": np.asarray(history, np.float32)})  # fmt: skip

        raise stop_run(error, save, "with the optimizer state and the step, for the trainer's "
                       "opt_state= and start_step=") from None  # fmt: skip
    finally:
        bar.close()
    return theta, history


PARTIAL_NAME = "interrupted.safetensors"


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


def run_options(p, default_out) -> None:
    """``--out DIR`` and ``--force``, the same for every command that writes a checkpoint."""
    p.add_argument("--out", metavar="DIR", default=str(default_out),
                   help="output directory of the checkpoint (default %(default)s)")  # fmt: skip
    p.add_argument("--force", action="store_true",
                   help="replace the run in --out (default: a new directory --out-2, -3, ...)")  # fmt: skip


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
    prints sample 0, so ``sample --seed s`` repeats the sample that ``train --seed s`` printed.
    One jitted program (six eager key operations would compile six at start-up)."""
    if not (0 <= seed < 2**31 and 0 <= j < 2**31):  # outside int32: the eager operations
        return jax.random.fold_in(jax.random.split(jax.random.key(seed), 3)[2], j)
    return _sample_key(np.int32(seed), np.int32(j))


@jax.jit
def _sample_key(seed, j):
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


# ================================================================ validation and failures (issue 18)
# Every option is checked before any work starts (validate_options, called by main for every
# command); main's guard turns every error into one line; a training run that diverges or is
# interrupted saves its last good state first (stop_run).

#: integer options and their smallest value; an option a command does not have is skipped.
INTEGER_MINIMUM = {
    "steps": 1, "batch_size": 1, "d_e": 1, "layers": 1, "heads": 1, "d_mlp": 1,
    "sample_length": 1, "length": 1, "num_samples": 1, "symbols": 1, "max_len": 1,
    "train_size": 1, "test_size": 1, "examples": 0, "warmup": 0, "seed": 0, "ell_max": 2,
    "eval_every": 1, "early_stop": 1, "vocab_size": 1, "top_k": 0, "repeats": 1,
    "max_tokens": 1,
}  # fmt: skip
#: file options that must name an existing file, per command.
INPUT_FILES = {"train": ("text",), "mlm": ("text",), "sample": ("checkpoint",),
               "attention": ("checkpoint",), "trace": ("checkpoint",)}  # fmt: skip
#: output options: a directory to write into (DIR) or a file to write (FILE), per command.
OUTPUTS = {"train": ("out", "DIR"), "seq2seq": ("out", "DIR"), "mlm": ("out", "DIR"),
           "attention": ("out", "FILE"), "trace": ("html", "FILE")}  # fmt: skip
BYTES_PER_FLOAT = 4


def option(name: str) -> str:
    return "--" + name.replace("_", "-")


def validate_options(args) -> None:
    """Check every option of ``args`` before any work: integers against :data:`INTEGER_MINIMUM`,
    ``--lr`` finite and > 0, ``--weight-decay`` finite and >= 0, ``--p-mask`` in (0, 1),
    ``--temperature`` in [0, inf], ``--heads`` dividing ``--d-e``, a model that fits in memory,
    input files that exist, and output paths that can be written. Raises ``ValueError`` (or
    ``FileNotFoundError``/``PermissionError``) naming the option."""
    import math

    for name, minimum in INTEGER_MINIMUM.items():
        value = getattr(args, name, None)
        if value is not None and value < minimum:
            raise ValueError(f"{option(name)} must be at least {minimum}, got {value}")
    for name, low, strict in (("lr", 0.0, True), ("weight_decay", 0.0, False)):
        value = getattr(args, name, None)
        if value is not None and not (math.isfinite(value) and (value > low or not strict and
                                                                 value == low)):  # fmt: skip
            bound = "> 0" if strict else ">= 0"
            raise ValueError(f"{option(name)} must be a finite number {bound}, got {value}")
    p_mask = getattr(args, "p_mask", None)
    if p_mask is not None and not 0 < p_mask < 1:
        raise ValueError(f"--p-mask must be in the open interval (0, 1), got {p_mask}")
    if getattr(args, "temperature", None) is not None:
        from ..paper.inference import check_tau

        check_tau("--temperature", args.temperature)
    if getattr(args, "tokenizer", None) == "bpe" and args.vocab_size < 259:
        raise ValueError(f"--vocab-size must be at least 259 with --tokenizer bpe (256 bytes and "
                         f"mask, bos, eos), got {args.vocab_size}")  # fmt: skip
    d_e, heads = getattr(args, "d_e", None), getattr(args, "heads", None)
    if d_e and heads and d_e % heads:
        raise ValueError(f"--heads {heads} does not divide --d-e {d_e} (each head gets d_e / H)")
    check_memory(args)
    command = getattr(args, "command", None)
    for name in INPUT_FILES.get(command, ()):
        path = getattr(args, name, None)
        if path is not None:
            check_input_file(option(name), path)
    if command in OUTPUTS and getattr(args, "resume", None) is None:
        name, kind = OUTPUTS[command]
        path = getattr(args, name, None)
        if path is not None:
            (check_out_dir if kind == "DIR" else check_out_file)(option(name), path)


def check_input_file(name: str, path) -> None:
    p = pathlib.Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{name} file {str(path)!r} does not exist")
    if p.is_dir():
        raise IsADirectoryError(f"{name} {str(path)!r} is a directory; give a file")


def check_out_dir(name: str, path) -> pathlib.Path:
    """``path`` is a directory that exists or can be created, and a file can be written in it:
    it is created (with its parents) and a probe file is written and removed."""
    import tempfile

    p = pathlib.Path(path)
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(f"{name} {str(path)!r} is a file, not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=p):
            pass
    except OSError as error:
        raise PermissionError(
            f"{name} {str(path)!r} is not a writable directory ({error.strerror or error})"
        ) from None
    return p


def check_out_file(name: str, path) -> pathlib.Path:
    """``path`` is not a directory and its directory can be written (created if missing)."""
    p = pathlib.Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"{name} {str(path)!r} is a directory; give a file name")
    check_out_dir(f"{name} {str(path)!r}: its directory", p.parent if str(p.parent) else ".")
    return p


def check_memory(args) -> None:
    """Refuse sizes whose parameters, gradients, Adam moments and activations cannot fit in this
    machine's memory (an estimate; the alternative is an XLA out-of-memory error or the kernel
    killing the process)."""
    import os

    d_e, L = getattr(args, "d_e", None), getattr(args, "layers", None)
    if not d_e or not L:
        return
    d_mlp = getattr(args, "d_mlp", None) or 4 * d_e
    ell = getattr(args, "ell_max", None) or 2 * (getattr(args, "max_len", None) or 8)
    N_V = getattr(args, "vocab_size", None) or 512
    B, H = getattr(args, "batch_size", None) or 1, getattr(args, "heads", None) or 1
    params = L * (4 * d_e * d_e + 2 * d_e * d_mlp) * (2 if args.command == "seq2seq" else 1)
    params += d_e * (ell + 2 * N_V)
    activations = B * L * ell * (12 * d_e + 2 * d_mlp + 3 * H * ell)
    need = BYTES_PER_FLOAT * (4 * params + 2 * activations)
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > have:
        raise ValueError(
            f"--d-e {d_e}, --layers {L}, --batch-size {B}: training needs about "
            f"{need / 2**30:,.0f} GiB of memory, more than this machine's {have / 2**30:,.0f} GiB;"
            " choose smaller sizes"
        )


def check_prompt(tokenizer, prompt: str, name: str = "--prompt") -> None:
    """The prompt encodes with the model's tokenizer (a character tokenizer knows only the
    characters of its corpus)."""
    try:
        tokenizer.encode(prompt)
    except ValueError as error:
        raise ValueError(f"{name} {prompt[:40]!r} cannot be encoded: {error}") from None


class OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors (an unknown option, ``--lr abc``) on one line, naming the
    option and pointing to ``--help``, exit status 2. Subcommand parsers inherit the class."""

    def error(self, message):
        self.exit(2, f"{PROG}: error: {' '.join(message.split())} (see: {self.prog} --help)\n")


class Diverged(FloatingPointError):
    """Training stopped on a non-finite loss; the message says where its last good state is."""


class Interrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C; the message says where its last good state is."""


def stop_run(error, save, resume: str | None = None) -> BaseException:
    """The one-line error for a run that diverged (:class:`~.trainer.NonFiniteError`) or was
    interrupted (:class:`~.trainer.TrainingInterrupted`), after ``save(θ, opt_state, completed,
    history)`` wrote the last good state (unless it is not finite). ``resume``: how to continue."""
    from ..practice.trainer import all_finite

    k = error.completed
    if all_finite(error.theta):
        path = save(error.theta, error.opt_state, k, error.history)
        where = f"the parameters after step {k} are saved in {path}" + (
            f" ({resume})" if resume else ""
        )
    else:
        where = "no step left finite parameters, so nothing was saved"
    if isinstance(error, KeyboardInterrupt):
        return Interrupted(f"interrupted after step {k}; {where}")
    return Diverged(
        f"training diverged at step {error.step} (the loss or its gradient became NaN or "
        f"infinite); {where}; lower --lr or --weight-decay and train again"
    )


def explain(error: BaseException, command: str | None = None) -> str:
    """One line for any error a command ends with: known errors as they are, a missing optional
    dependency with the extra that brings it, out of memory with what to reduce, anything else
    with its type and a pointer to the traceback switch."""
    text = " ".join(str(error).split()) or type(error).__name__
    if len(text) > 400:
        text = text[:400] + " …"
    if isinstance(error, ImportError):
        extra = "interop" if error.name and error.name.split(".")[0] in (
            "torch", "transformers") else "train"  # fmt: skip
        return (
            f"'{command or PROG}' needs the optional package {error.name or text!r}: install "
            f"it with pip install 'formal_algorithms[{extra}]'"
        )
    if (
        isinstance(error, MemoryError)
        or "RESOURCE_EXHAUSTED" in text
        or "out of memory" in (text.lower())
    ):
        return (
            f"out of memory ({text[:120]}); choose smaller --d-e, --layers, --batch-size or "
            "--ell-max"
        )
    if isinstance(error, (ValueError, TypeError, OSError, FloatingPointError)):
        return text
    return (
        f"unexpected {type(error).__name__}: {text} (set FORMAL_ALGORITHMS_TRACEBACK=1 to see the"
        " traceback, and please report it)"
    )
