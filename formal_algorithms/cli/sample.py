"""``formal-algorithms sample``: continue a prompt from a checkpoint with Algorithm 14, streaming."""

from __future__ import annotations

from ..paper.inference import check_tau
from ..practice.sampling import check_top_k, check_top_p
from .common import (
    CHECKPOINT_NAME,
    DEFAULT_OUT,
    check_positive,
    load_lm,
    sample_key,
    say,
    unescape,
)
from .stream import stream_sample


def run(args) -> int:
    check_positive(args, "length", "num_samples")
    tau = check_tau("--temperature", args.temperature)
    top_k = check_top_k("--top-k", args.top_k)
    top_p = check_top_p("--top-p", args.top_p)
    stop = unescape(args.stop) if args.stop else None
    checkpoint, tokenizer, activation, eps = load_lm(args.checkpoint)
    for j in range(args.num_samples):
        if args.num_samples > 1:
            say(f"--- sample {j + 1} of {args.num_samples} (seed {args.seed}, key {j})")
        stream_sample(checkpoint.theta, tokenizer, args.prompt, sample_key(args.seed, j),
                      args.length, tau, activation, eps, top_k=top_k, top_p=top_p,
                      stop=stop)  # fmt: skip
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
    p.add_argument("--seed", type=int, default=0,
                   help="random seed (default %(default)s); the same seed as 'train --seed' "
                   "repeats the sample train printed")  # fmt: skip
    p.add_argument("--top-k", type=int, default=0,
                   help="draw only from the k most likely tokens (default 0: off; an extension "
                   "beyond the paper)")  # fmt: skip
    p.add_argument("--top-p", type=float, default=1.0,
                   help="nucleus sampling: draw from the most likely tokens whose probability "
                   "reaches p (default 1: off; an extension beyond the paper)")  # fmt: skip
    p.add_argument("--num-samples", type=int, default=1,
                   help="independent samples, keys 0, 1, ... of the seed (default %(default)s)")  # fmt: skip
    p.add_argument("--stop", metavar="STRING", default=None,
                   help="end each sample before this string (not printed); \\n is a newline, "
                   "e.g. --stop '\\n\\n' (default: none)")  # fmt: skip
    p.set_defaults(run=run)
