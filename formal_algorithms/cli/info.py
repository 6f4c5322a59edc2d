"""``formal-algorithms info CHECKPOINT``: what a checkpoint holds, without running the model.

The algorithm (which of the paper's architectures, and the algorithms that trained it and run
it), its hyperparameters, the tokenizer, the parameter count, the training state (steps taken of
those planned, held-out loss, the best evaluation, status), the corpus or task, and the file's
size and SHA-256. The file is read through :func:`~formal_algorithms.practice.checkpoint.
load_checkpoint` (by :func:`.common.read_checkpoint`, as every command reads one), so a corrupted
or truncated file is reported as such, named as typed.
"""

from __future__ import annotations

import hashlib
import pathlib

from .common import n_params, read_checkpoint, say

ALGORITHMS = {
    "DTransformer": "DTransformer (Algorithm 10), trained with Algorithm 13's loss, sampled with "
    "Algorithm 14",
    "ETransformer": "ETransformer (Algorithm 9), trained with Algorithm 12's loss",
    "EDTransformer": "EDTransformer (Algorithm 8), trained with Algorithm 11's loss, decoded with "
    "Algorithm 15",
}


def describe_tokenizer(tokenizer: dict | None, N_V: int) -> str:
    """One line about a checkpoint's tokenizer metadata (``None``: none stored)."""
    specials = f"mask, bos, eos = {N_V - 3}, {N_V - 2}, {N_V - 1}"
    if not tokenizer:
        return f"none stored; N_V = {N_V} ({specials})"
    kind = tokenizer.get("kind") or tokenizer.get("type") or "?"
    return f"{kind}, N_V = {N_V} ({specials})"


def file_sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def info_lines(path) -> list[str]:
    """The lines ``info`` prints for the checkpoint at ``path``."""
    checkpoint = read_checkpoint(path, f"checkpoint {str(path)!r}")  # the file as typed
    path = pathlib.Path(path)
    hp, extra = checkpoint.hyperparameters, checkpoint.extra
    lines = [
        f"file        {path} ({path.stat().st_size:,} bytes, SHA-256 {file_sha256(path)})",
        f"algorithm   {ALGORITHMS.get(checkpoint.architecture, checkpoint.architecture)}",
        "hyperparams " + ", ".join(f"{k} = {v}" for k, v in hp.items()),
        f"tokenizer   {describe_tokenizer(checkpoint.tokenizer, hp['N_V'])}",
        f"parameters  {n_params(checkpoint.theta):,}",
    ]
    try:
        return lines + _run_lines(extra)
    except (TypeError, ValueError, KeyError, AttributeError) as error:  # written by hand
        return lines + [
            f"metadata    not the record this library's commands write ({type(error).__name__}: "
            f"{error}); its fields: {', '.join(sorted(map(str, extra)))}"
        ]


def _run_lines(extra) -> list[str]:
    """What a command recorded about the run: family, corpus, task, training state, results."""
    lines = []
    if "family" in extra:
        lines.append(f"made by     {extra['family']}")
    if "corpus" in extra:
        lines.append(f"corpus      {extra['corpus']}")
    if "task" in extra:
        lines.append(f"task        {extra['task']}")
    config = extra.get("config") or {}
    step, planned = extra.get("step"), config.get("steps")
    if step is not None or planned is not None:
        state = f"step {step if step is not None else planned}"
        if planned is not None and step is not None:
            state += f" of {planned}"
        if extra.get("status"):
            state += f", {extra['status']}"
        state += (
            "; resumable (optimizer state stored)"
            if extra.get("opt_state_saved")
            else "; no optimizer state"
        )
        lines.append(f"training    {state}")
    if extra.get("held_out_loss") is not None:
        line = f"held-out    loss {extra['held_out_loss']:.4f}"
        if extra.get("unigram_entropy") is not None:
            line += f" (unigram entropy {extra['unigram_entropy']:.4f})"
        evals = [e for e in extra.get("evals") or [] if _is_evaluation(e)]
        if evals:
            best = min(evals, key=lambda e: e["held_out_loss"])
            line += f"; {len(evals)} evaluations, best {best['held_out_loss']:.4f} at step {best['step']}"
        lines.append(line)
    for name, label in (("accuracy", "accuracy"), ("baseline", "baseline")):
        if extra.get(name) is not None:
            lines.append(f"{label:<11} {extra[name]:.1%}")
    if config:
        lines.append("settings    " + ", ".join(f"{k} = {v}" for k, v in config.items()))
    return lines


def _is_evaluation(e) -> bool:
    """An evaluation as the runs record it (others, written by hand, are left out)."""
    return isinstance(e, dict) and isinstance(e.get("held_out_loss"), (int, float)) and "step" in e


def run(args) -> int:
    for line in info_lines(args.checkpoint):
        say(line)
    return 0


def register(sub) -> None:
    """Add the ``info`` command to the parser's subcommands."""
    p = sub.add_parser(
        "info",
        help="what a checkpoint holds: algorithm, sizes, tokenizer, training state, hash",
        description="Print a checkpoint's algorithm, hyperparameters, tokenizer, parameter count, "
        "training state (steps, held-out loss, best evaluation) and the file's SHA-256, without "
        "running the model.",
    )
    p.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help="a .safetensors file written by train, seq2seq or mlm",
    )
    p.set_defaults(run=run)
