"""``formal-algorithms sample``: continue a prompt from a checkpoint with Algorithm 14, streaming."""

from __future__ import annotations

import jax

from ..paper.inference import check_tau
from .common import CHECKPOINT_NAME, DEFAULT_OUT, check_positive, load_lm
from .stream import stream_sample


def run(args) -> int:
    check_positive(args, "length")
    tau = check_tau("--temperature", args.temperature)
    checkpoint, tokenizer, activation, eps = load_lm(args.checkpoint)
    stream_sample(checkpoint.theta, tokenizer, args.prompt, jax.random.key(args.seed),
                   args.length, tau, activation, eps)  # fmt: skip
    return 0


def register(sub) -> None:
    """Add the ``sample`` command to the parser's subcommands."""
    p = sub.add_parser(
        "sample", help="continue a prompt with a trained checkpoint (Algorithm 14), streaming",
        description="Load a checkpoint written by 'train' and continue --prompt with Algorithm 14 "
        "(key/value cache; then a window of bos and the latest tokens), printing tokens as they "
        "are generated.",
    )  # fmt: skip
    p.add_argument("--checkpoint", metavar="PATH", default=str(DEFAULT_OUT / CHECKPOINT_NAME),
                   help="checkpoint (default %(default)s)")  # fmt: skip
    p.add_argument("--prompt", default="", help="text to continue (default: none)")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="sampling temperature τ (default %(default)s; 0 = argmax)")  # fmt: skip
    p.add_argument(
        "--length", type=int, default=256, help="tokens to generate (default %(default)s)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    p.set_defaults(run=run)
