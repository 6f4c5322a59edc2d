"""The options of the commands, checked before any work in one message style.

A single option's range is its parser type (:func:`integer`, :func:`positive`, ...): argparse
refuses a bad value while it parses, and :class:`OneLineParser` prints it as one line,
"--steps must be at least 1, got 0", exit status 2. What depends on several options or on the file
system (``--heads`` dividing ``--d-e``, a model that fits in memory, files that exist, outputs that
can be written) is :func:`validate_options`, which ``main`` calls for every command before it runs.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import re

from .common import PROG

# ---------------------------------------------------------------------------- parser types


def integer(minimum: int):
    """The parser type of an integer option of at least ``minimum``."""

    def parse(text: str) -> int:
        value = int(text)  # a ValueError: argparse's "invalid int value: '1.5'"
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


def real(test, bounds: str):
    """The parser type of a real option whose value passes ``test`` (``bounds`` says how)."""

    def parse(text: str) -> float:
        value = float(text)
        if not test(value):
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value

    parse.__name__ = "float"
    return parse


positive = real(lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
non_negative = real(lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
probability = real(lambda v: 0 < v < 1, "in the open interval (0, 1)")
temperature = real(lambda v: v >= 0, "in [0, inf] (0: argmax, inf: uniform)")  # NaN fails too
unit_interval = real(lambda v: 0 < v <= 1, "in (0, 1]")


def png_file(text: str) -> str:
    """The parser type of a picture's path: the pictures are PNG, so the name says so."""
    if not text.lower().endswith(".png"):
        raise argparse.ArgumentTypeError(
            f"must name a .png file (the picture is a PNG), got {text!r}"
        )
    return text


class OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors (an unknown option, ``--lr abc``, ``--steps 0``) on one line,
    naming the option and pointing to ``--help``, exit status 2. Subcommand parsers inherit the
    class. A range error of :func:`integer` or :func:`real` reads "--steps must be at least 1"."""

    def error(self, message):
        message = re.sub(
            r"^argument (--[\w-]+)(?:/\S+)?: must ", r"\1 must ", " ".join(message.split())
        )
        self.exit(2, f"{PROG}: error: {message} (see: {self.prog} --help)\n")


# ----------------------------------------------------------------------------- option groups


#: the layouts of θ ``--shard`` offers (practice.parallel's param_sharding)
SHARDS = ("replicated", "fsdp")
#: the settings :func:`model_options` registers, recorded by every run (``--resume`` restores them)
MODEL_KEYS = tuple("steps batch_size d_e layers heads d_mlp lr warmup weight_decay seed".split())


def model_options(p, *, d_e, layers, heads, steps, batch_size, lr, warmup, weight_decay):
    """The model's sizes and the optimiser's settings, the same for every training command.
    ``--steps`` is parsed as ``None`` when not given, so that ``--resume`` can tell "the run's own"
    from a new number; :func:`.runs.start` puts in the default ``steps``."""
    p.add_argument(
        "--d-e", type=integer(1), default=d_e, help="embedding width d_e (default %(default)s)"
    )
    p.add_argument(
        "--layers", type=integer(1), default=layers, help="layers L (default %(default)s)"
    )
    p.add_argument("--heads", type=integer(1), default=heads, help="heads H (default %(default)s)")
    p.add_argument("--d-mlp", type=integer(1), default=None, help="MLP width d_mlp (default 4 d_e)")
    p.add_argument(
        "--steps",
        type=integer(1),
        default=None,
        help=f"optimiser steps (default "
        f"{steps}; with --resume: the run's own, a larger number trains it longer)",
    )
    p.set_defaults(default_steps=steps)
    p.add_argument(
        "--batch-size",
        type=integer(1),
        default=batch_size,
        help="sequences per step (default %(default)s)",
    )
    p.add_argument(
        "--lr", type=positive, default=lr, help="peak learning rate (default %(default)s)"
    )
    p.add_argument(
        "--warmup",
        type=integer(0),
        default=warmup,
        help="linear warmup steps (default %(default)s)",
    )
    p.add_argument(
        "--weight-decay",
        type=non_negative,
        default=weight_decay,
        help="AdamW weight decay of the matrices (default %(default)s)",
    )
    p.add_argument("--seed", type=integer(0), default=0, help="random seed (default %(default)s)")


def run_options(p, default_out, *, what: str = "--steps") -> None:
    """A managed training run's options, the same for ``train``, ``mlm`` and ``seq2seq``: where it
    writes, how often it is evaluated, early stopping, and resuming."""
    p.add_argument(
        "--out",
        metavar="DIR",
        default=str(default_out),
        help="output directory of the checkpoints (default %(default)s)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace the run in --out (default: a new directory --out-2, -3, ...)",
    )
    p.add_argument(
        "--eval-every",
        type=integer(1),
        default=None,
        metavar="N",
        help="evaluate on the held-out data every N steps and write a checkpoint "
        f"(default: a tenth of {what}, between 50 and 250)",
    )
    p.add_argument(
        "--early-stop",
        type=integer(1),
        default=None,
        metavar="N",
        help="stop when N evaluations in a row do not improve the best held-out loss "
        "(default: never)",
    )
    p.add_argument(
        "--resume",
        metavar="DIR",
        default=None,
        help="continue the run in DIR (its model.safetensors) with its own settings",
    )


def process_options(p) -> None:
    """Training as several processes joined by JAX's distributed runtime (practice.distributed):
    how many, how many devices each, and how θ is laid out over the devices."""
    p.add_argument(
        "--processes",
        type=integer(1),
        default=None,
        metavar="N",
        help="train as N processes on this machine, joined by jax.distributed, every step "
        "data-parallel over all their devices (default: this process alone)",
    )
    p.add_argument(
        "--devices-per-process",
        type=integer(1),
        default=None,
        metavar="K",
        help="CPU devices of each of the --processes (default 1)",
    )
    p.add_argument(
        "--shard",
        choices=SHARDS,
        default="replicated",
        help="θ and the optimiser state in a run of several processes: a whole copy on every "
        "device (replicated, the default) or the larger arrays split over the devices (fsdp)",
    )


# ------------------------------------------------------------------------- across options

#: file options that must name an existing file, per command.
INPUT_FILES = {
    "train": ("text",),
    "mlm": ("text",),
    "sample": ("checkpoint",),
    "attention": ("checkpoint",),
    "trace": ("checkpoint",),
}
#: output options: directories to write into (DIR) or files to write (FILE), per command.
OUTPUTS = {
    "train": (("out", "DIR"),),
    "seq2seq": (("out", "DIR"),),
    "mlm": (("out", "DIR"),),
    "finetune": (("out", "DIR"),),
    "attention": (("out", "FILE"),),
    "trace": (("html", "FILE"),),
    "benchmark": (("json", "FILE"), ("png", "FILE")),
}
BYTES_PER_FLOAT = 4


def option(name: str) -> str:
    return "--" + name.replace("_", "-")


def validate_options(args) -> None:
    """What the parser types cannot see, before any work: ``--heads`` dividing ``--d-e``, a BPE
    vocabulary that holds the bytes, the command's own ``check_input(args)`` if it sets one
    (``train``: an ``--ell-max`` the text can fill), a model that fits in memory, input files
    that exist and output paths that can be written (not checked with ``--resume``: the run's
    own). Raises ``ValueError`` (or ``FileNotFoundError``/``PermissionError``) naming the option."""
    if getattr(args, "tokenizer", None) == "bpe" and args.vocab_size < 259:
        raise ValueError(
            f"--vocab-size must be at least 259 with --tokenizer bpe (256 bytes and "
            f"mask, bos, eos), got {args.vocab_size}"
        )
    given = getattr(args, "given", ())
    fresh = getattr(args, "resume", None) is None
    if fresh and getattr(args, "tokenizer", None) == "char" and "--vocab-size" in given:
        raise ValueError(
            "--vocab-size applies to --tokenizer bpe; the character tokenizer's N_V is the "
            "text's own characters (and mask, bos, eos)"
        )
    if fresh:  # a resumed run has its own sizes
        d_e, heads = getattr(args, "d_e", None), getattr(args, "heads", None)
        if d_e and heads and d_e % heads:
            raise ValueError(
                f"--heads {heads} does not divide --d-e {d_e} (each head gets d_e / H)"
            )
        check_input = getattr(args, "check_input", None)
        if check_input is not None:  # the command's options against its input, e.g. the text
            check_input(args)
        check_memory(args)
    check_processes(args)
    command = getattr(args, "command", None)
    for name in INPUT_FILES.get(command, ()):
        path = getattr(args, name, None)
        if path is not None:
            check_input_file(option(name), path)
    for name, kind in OUTPUTS.get(command, ()) if getattr(args, "resume", None) is None else ():
        path = getattr(args, name, None)
        if path is not None:
            (check_out_dir if kind == "DIR" else check_out_file)(option(name), path)


def check_processes(args) -> None:
    """``--devices-per-process`` and ``--shard`` need several processes (``--processes``, or the
    ``FA_*`` variables of a scheduler); ``--batch-size`` splits evenly over their devices (a
    resumed run's own batch size is checked when it is read: :func:`check_split`)."""
    processes = getattr(args, "processes", None)
    if processes is None and getattr(args, "devices_per_process", None) is not None:
        raise ValueError("--devices-per-process needs --processes N")
    if processes is None and getattr(args, "shard", "replicated") != "replicated":
        from ..practice.distributed import described

        if not described():
            raise ValueError(
                f"--shard {args.shard} needs --processes N (or the FA_* variables of a run of "
                "several processes)"
            )
    if processes is not None and getattr(args, "resume", None) is None:
        devices = processes * (args.devices_per_process or 1)
        check_split(args.batch_size, devices, f"--processes {processes} × {devices // processes}")


def check_split(batch_size: int, devices: int, how: str) -> None:
    """Each step splits its ``batch_size`` sequences evenly over the run's ``devices``."""
    if batch_size % devices:
        raise ValueError(
            f"--batch-size {batch_size} is not a multiple of the {devices} devices of {how}: "
            "every step splits its sequences evenly over them"
        )


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
    ell, context = context_length(args)
    N_V = getattr(args, "vocab_size", None) or 512
    B, H = getattr(args, "batch_size", None) or 1, getattr(args, "heads", None) or 1
    params = L * (4 * d_e * d_e + 2 * d_e * d_mlp) * (2 if args.command == "seq2seq" else 1)
    params += d_e * (ell + 2 * N_V)
    scores = B * L * 3 * H * ell * ell  # the attention scores: quadratic in the context
    activations = B * L * ell * (12 * d_e + 2 * d_mlp) + scores
    need = BYTES_PER_FLOAT * (4 * params + 2 * activations)
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > have:
        sizes = f"--d-e {d_e}, --layers {L}, --heads {H}, --batch-size {B}"
        share = 2 * BYTES_PER_FLOAT * scores / need
        why = (
            f" ({share:.0%} of it the attention scores, which grow as the square of {context})"
            if context and share >= 0.5
            else ""
        )
        raise ValueError(
            f"{sizes}{', ' + context if context else ''}: training needs about "
            f"{need / 2**30:,.0f} GiB of memory{why}, more than this machine's "
            f"{have / 2**30:,.0f} GiB; choose smaller sizes"
        )


def context_length(args) -> tuple[int, str]:
    """``(ℓ, option)``: the context length of the memory estimate and the option it comes from
    as typed (``--ell-max N``; seq2seq's ``--max-len N``, whose sequences are up to 2N long), or
    ``""`` for a command with neither (then ℓ = 16)."""
    if getattr(args, "ell_max", None):
        return args.ell_max, f"--ell-max {args.ell_max}"
    if getattr(args, "max_len", None):
        return 2 * args.max_len, f"--max-len {args.max_len}"
    return 16, ""
