"""``formal-algorithms trace``: the walk through Algorithm 10 for a prompt, line by line.

Runs ``P ← DTransformer(x | θ)`` on the prompt's tokens under :func:`formal_algorithms.trace.trace`
and prints one row per executed paper line (path | pseudocode | shape | value), optionally only the
rows of one algorithm, line, layer ``l`` or head ``h``; ``--html FILE`` writes the same records as
one self-contained page (:mod:`formal_algorithms.trace.html`). Without ``--checkpoint``, the model
is a tiny random DTransformer over a fixed alphabet (printable ASCII and the prompt's characters).
"""

from __future__ import annotations

import os
import string
import sys

from .common import load_lm, say

#: The random model's sizes (no --checkpoint): small enough to read every value.
TINY = dict(L=2, H=2, d_e=16, d_mlp=32)

#: The random model's characters: printable ASCII without the vertical whitespace.
ALPHABET = string.printable[:-5] + "\n"


def parse_algorithm(text: str | None):
    """``"10"`` -> 10, ``"eq. 1"`` / ``"eq1"`` -> ``"eq. 1"``: a key of the paper's pseudocode."""
    from ..paper import pseudocode

    if text is None:
        return None
    raw = text.strip().lower()
    key = int(raw) if raw.isdigit() else "eq. " + raw.removeprefix("eq").strip(" .")
    if key not in pseudocode.PSEUDOCODE:
        names = ", ".join(str(k) for k in pseudocode.PSEUDOCODE)
        raise ValueError(f"--algorithm {text!r} is not one of the paper's: {names}")
    return key


def model(args):
    """``(θ, tokenizer, activation, eps, description)`` of --checkpoint, or the tiny random one."""
    import jax

    from ..paper.architectures import init_d_transformer
    from ..paper.functions import gelu
    from ..paper.normalisation import EPS
    from ..paper.tokenization import CharTokenizer

    if args.checkpoint is not None:
        checkpoint, tokenizer, activation, eps = load_lm(args.checkpoint)
        hp = checkpoint.hyperparameters
        about = f"{args.checkpoint} (L = {hp['L']}, H = {hp['H']}, d_e = {hp['d_e']})"
        return checkpoint.theta, tokenizer, activation, eps, about
    tokenizer = CharTokenizer.from_text(ALPHABET + args.prompt)
    ell_max = max(16, len(args.prompt) + 1)
    theta = init_d_transformer(jax.random.key(args.seed), N_V=tokenizer.N_V, ell_max=ell_max,
                               **TINY)  # fmt: skip
    about = (
        f"a random DTransformer (no --checkpoint; seed {args.seed}, L = {TINY['L']}, "
        f"H = {TINY['H']}, d_e = {TINY['d_e']}, d_mlp = {TINY['d_mlp']}, N_V = {tokenizer.N_V})"
    )
    return theta, tokenizer, gelu, EPS, about


def run(args) -> int:
    import functools

    import jax.numpy as jnp

    from ..paper.architectures import d_transformer, hyperparameters
    from ..trace import Trace, trace

    algorithm = parse_algorithm(args.algorithm)
    for option in ("line", "layer", "head"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise ValueError(
                f"--{option} must be at least 1 (the paper counts from 1), got {value}"
            )
    if args.line is not None and algorithm is not None:
        from ..paper import pseudocode

        if args.line not in pseudocode.PSEUDOCODE[algorithm]:
            raise ValueError(
                f"--line {args.line}: {pseudocode.label(algorithm)} has lines 1-"
                f"{max(pseudocode.PSEUDOCODE[algorithm])}"
            )
    theta, tokenizer, activation, eps, about = model(args)
    hp = hyperparameters(theta)
    for option, key in (("layer", "L"), ("head", "H")):
        value = getattr(args, option)
        if value is not None and value > hp[key]:
            raise ValueError(f"--{option} {value}: the model has {key} = {hp[key]}")
    x = tokenizer.encode(args.prompt, bos=True)
    if len(x) > hp["ell_max"]:
        raise ValueError(
            f"--prompt is {len(x)} tokens with bos, more than the model's ell_max = {hp['ell_max']}"
        )
    forward = functools.partial(d_transformer, activation=activation, eps=eps)
    tr = trace(forward, jnp.asarray(x), theta)
    indices = {k: v for k, v in (("l", args.layer), ("h", args.head)) if v is not None}
    records = tr.find(algorithm, args.line, **indices)
    if not records:
        chosen = " ".join(
            f"--{o} {v}"
            for o, v in (("algorithm", args.algorithm), ("line", args.line),
                         ("layer", args.layer), ("head", args.head))
            if v is not None
        )  # fmt: skip
        have = ", ".join(dict.fromkeys(str(r.algorithm) for r in tr.records))
        raise ValueError(f"no traced line matches {chosen} (the trace has algorithms {have})")
    try:
        say(f"Algorithm 10 on {args.prompt!r}: {len(x)} tokens with bos; {about}")
        say(tr.table(algorithm, args.line, **indices))
    except BrokenPipeError:  # `formal-algorithms trace | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if args.html:
        labels = [tokenizer.decode([t], special="show") for t in x.tolist()]
        from ..trace.html import write_html

        path = write_html(Trace(tr.result, records), args.html, tokens=labels,
                          title=f"Algorithm 10 on {args.prompt!r}")  # fmt: skip
        say(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB, {len(records)} records)")
    return 0


def register(sub) -> None:
    """Add the ``trace`` command to the parser's subcommands."""
    p = sub.add_parser(
        "trace", help="print what every line of Algorithm 10 computes for a prompt",
        description="Run Algorithm 10 (DTransformer) on --prompt and print one row per executed "
        "paper line: path | pseudocode | shape | value. Without --checkpoint, a tiny random "
        "model. Filter the rows with --algorithm, --line, --layer and --head (1-based, as in the "
        "paper); --html writes the same rows as one self-contained page with heatmaps.",
    )  # fmt: skip
    p.add_argument("--checkpoint", metavar="PATH", default=None,
                   help="checkpoint written by 'train' (default: a tiny random model)")  # fmt: skip
    p.add_argument("--prompt", default="The object", help="text to run (default %(default)r)")
    p.add_argument("--algorithm", metavar="A", default=None,
                   help="only the lines of this algorithm (4, 5, 6, 10, or 'eq. 1')")  # fmt: skip
    p.add_argument("--line", type=int, default=None, help="only this line of the algorithm")
    p.add_argument("--layer", type=int, default=None, help="only layer l (1-based)")
    p.add_argument("--head", type=int, default=None, help="only head h (1-based)")
    p.add_argument("--html", metavar="FILE", default=None,
                   help="also write the page of the (filtered) trace here")  # fmt: skip
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random model (default %(default)s)")  # fmt: skip
    p.set_defaults(run=run)
