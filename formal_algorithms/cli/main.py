"""The command-line program ``formal-algorithms`` (also ``python -m formal_algorithms``).

Subcommands, one per thing the paper's algorithms do:

- ``train``: tokenize a corpus (default: Python's own ``pydoc_data`` help texts, nothing to
  download), train a DTransformer (Algorithm 10) on next-token prediction with the minibatch
  trainer (Algorithm 13's loss, AdamW), report held-out loss next to the unigram entropy, write a
  safetensors checkpoint and a loss-curve PNG, and print a sample (Algorithm 14, cached).
- ``sample``: continue a prompt from a checkpoint with Algorithm 14, streaming tokens as they come.
- ``attention``: draw every head's attention pattern (Algorithm 10, line 6) for a prompt.
- ``seq2seq``: train an EDTransformer (Algorithms 8, 11) on sequence reversal and report exact-match
  accuracy of greedy Algorithm 15 (cached) on held-out sequences.
- ``mlm``: train an ETransformer (Algorithms 9, 12) on masked characters and report recovery
  accuracy next to the most-frequent-character baseline.
- ``check``: run the conformance battery of :mod:`formal_algorithms.testing.conformance` on a
  local Hugging Face model directory (``--hf DIR``); exit status 1 on a violated invariant.

Streaming (``sample``) is :func:`stream_d_inference`: Algorithm 14 one token at a time, from the
public per-position step of :mod:`formal_algorithms.cache` (prefill once, then one jitted column
per token); its tokens equal ``d_inference`` and ``d_inference_cached`` for the same key while the
sequence fits the context. The CLI reads at most ℓ_max − 1 tokens per step: Algorithm 13 trains
no prediction at position ℓ_max − 1 (the last column of a length-ℓ_max sequence has no target,
and W_p's last column gets no gradient at all), so sampling from that column is sampling from an
untrained model. Longer samples continue with a sliding window that keeps the prompt's first token
(``bos``) at position 0 and the latest tokens after it, so that every step looks like a training
sequence, which always starts with ``bos``.

Errors the user can cause (a missing or empty file, a checkpoint of another model, a corrupted
checkpoint, a character the tokenizer does not know) end the program with one line on stderr,
``formal-algorithms: error: …``, and exit status 1; set ``FORMAL_ALGORITHMS_TRACEBACK=1`` to see
the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import (
    attention,
    benchmark,
    chat,
    check,
    compare,
    compile_cache,
    finetune,
    info,
    mlm,
    sample,
    seq2seq,
    trace,
    train,
)
from .common import PROG
from .errors import explain
from .options import OneLineParser, validate_options

# The commands, in the order --help lists them: each module has register(sub) and run(args).
COMMANDS = [
    train,
    sample,
    attention,
    trace,
    compare,
    seq2seq,
    mlm,
    finetune,
    info,
    benchmark,
    check,
    chat,
]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG,
        description="The algorithms of 'Formal Algorithms for Transformers' (Phuong & Hutter, "
        "2022), run for real. Start with: formal-algorithms train",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    for command_parser in sub.choices.values():
        compile_cache.add_option(command_parser)  # --no-compile-cache on every command
        # an abbreviation (--temp) would slip past the checks that read the options as typed
        # (--temperature without --generate), so every option is spelt out
        command_parser.allow_abbrev = False
    return parser


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def main(argv=None) -> int:
    """Entry point of ``formal-algorithms``; returns the exit status."""
    real = argv is None  # the real entry point, not a test calling main([...])
    argv = sys.argv[1:] if real else list(argv)
    args = build_parser().parse_args(argv)
    # the options typed (not their defaults): --resume refuses a setting that contradicts the run
    args.given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    args.argv = argv  # what --processes starts again in every process
    if real:  # JAX's persistent compilation cache, unless off
        compile_cache.setup(args)
    # The guard (issue 18): no traceback, ever; one line naming the option or file, non-zero exit.
    try:
        validate_options(args)  # every option, before any work
        return args.run(args)
    except KeyboardInterrupt as error:  # Ctrl-C; a training run has saved its state (stop_run)
        message = " ".join(str(error).split())
        print(f"{PROG}: {message or 'interrupted'}", file=sys.stderr, flush=True)
        return 130
    except Exception as error:
        if os.environ.get("FORMAL_ALGORITHMS_TRACEBACK"):
            raise
        # one of several processes (runs.join) says which: "process 1 of 2: ..."
        where = f"{args.process_label}: " if getattr(args, "process_label", None) else ""
        print(f"{PROG}: error: {where}{explain(error, args.command)}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":  # python -m formal_algorithms.cli.main: the same program
    raise SystemExit(main())
