"""``formal-algorithms benchmark``: the benchmark against PyTorch / Hugging Face
(:mod:`formal_algorithms.benchmark`)."""

from __future__ import annotations

from .options import integer


def run(args) -> int:
    from .. import benchmark  # needs the train and interop extras (optax, torch, transformers)

    benchmark.main(args)
    return 0


def register(sub) -> None:
    """Add the ``benchmark`` command to the parser's subcommands."""
    p = sub.add_parser(
        "benchmark",
        help="benchmark: ours vs PyTorch / Hugging Face, side by side",
        description="Forward and AdamW training-step throughput against GPT2LMHeadModel and "
        "torch.nn.Transformer, cached vs literal Algorithm 14 vs transformers' generate, and "
        "GFLOP/s against the measured matmul peak, in one run (see docs/performance.md).",
    )
    from ..benchmark import add_arguments  # argparse only; the heavy imports happen in run()

    add_arguments(p, count=integer(1))
    p.set_defaults(run=run)
