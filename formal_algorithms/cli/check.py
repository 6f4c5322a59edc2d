"""``formal-algorithms check --hf DIR``: the conformance battery of
:mod:`formal_algorithms.testing.conformance` (causality, padding left and right, batched equals one
at a time, cached equals uncached decoding and generation, permutation, distributions,
determinism) on a Hugging Face model saved in a local directory. Nothing is downloaded.

Prints one line per check (``--json``: the report as JSON) and exits with status 0 when every
invariant holds (or does not apply), 1 when one is violated or a check could not run.
"""

from __future__ import annotations

from .common import say


def _positive(name, value):
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


def run(args) -> int:
    from ..testing.conformance import CHECKS, run_battery

    _positive("--atol", args.atol)
    if args.length < 2:
        raise ValueError(f"--length must be at least 2, got {args.length}")
    checks = None
    if args.checks:
        checks = [c.strip() for c in args.checks.split(",") if c.strip()]
        unknown = [c for c in checks if c not in CHECKS]
        if unknown:
            raise ValueError(f"--checks: unknown {unknown}; choose from {', '.join(CHECKS)}")
    model = _load(args.hf, args.kind)
    if not args.json:
        say(f"checking {model.name} ({model.kind}) from {args.hf}")
    report = run_battery(model, checks=checks, seed=args.seed, length=args.length, atol=args.atol)
    say(report.to_json(indent=2) if args.json else str(report))
    return 0 if report.ok else 1


def _load(directory, kind):
    """The model in ``directory`` as a TokenModel; errors as one-line ``ValueError``/``OSError``."""
    try:
        import torch  # noqa: F401
        import transformers
    except ImportError as error:
        raise ValueError(
            f"--hf needs torch and transformers ({error.name} is missing): "
            "pip install 'formal_algorithms[interop]'"
        ) from None
    from ..testing.adapters import from_hf

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        return from_hf(directory, kind=kind)
    except OSError:
        raise
    except Exception as error:  # transformers raises many kinds for a directory it cannot read
        raise ValueError(f"--hf {directory!r}: cannot load the model: {error}") from None


def register(sub) -> None:
    """Add the ``check`` command to the parser's subcommands."""
    p = sub.add_parser(
        "check", help="test a Hugging Face model directory against the paper's invariants",
        description="Run the conformance battery (causality, padding invariance left and right, "
        "batched = one at a time, cached = uncached decoding and generate, permutation, "
        "distributions, determinism) on a local Hugging Face model directory. Exit status 1 "
        "if an invariant is violated.",
    )  # fmt: skip
    p.add_argument("--hf", metavar="DIR", required=True,
                   help="a directory saved by save_pretrained (config.json and weights)")  # fmt: skip
    p.add_argument("--kind", choices=("causal", "masked", "seq2seq"), default=None,
                   help="what the model is (default: from its config)")  # fmt: skip
    p.add_argument("--checks", metavar="NAME,…", default=None,
                   help="only these checks (comma-separated; default all)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the inputs and of sampling")
    p.add_argument("--length", type=int, default=8, help="tokens per test sequence (default 8)")
    p.add_argument("--atol", type=float, default=1e-4,
                   help="tolerance relative to the largest |logit| (default %(default)g)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run)
