"""``formal-algorithms check --hf DIR``: the conformance battery of
:mod:`formal_algorithms.testing.conformance` (causality, padding left and right, batched equals one
at a time, cached equals uncached decoding and generation, permutation, distributions,
determinism) on a Hugging Face model saved in a local directory. Nothing is downloaded.

Prints one line per precondition and check (``--json``: the report as JSON) and exits with status
0 when the model conforms (the preconditions hold, at least one check passed, none failed), 1 when
a precondition or an invariant is violated or a check could not run, and 3 when nothing was
verified (every check asked for was skipped as not applicable).
"""

from __future__ import annotations

from .common import say
from .options import integer, positive

UNVERIFIED = 3  # the exit status when no check passed and none failed


def run(args) -> int:
    from ..testing.conformance import CHECKS, run_battery

    checks = None
    if args.checks is not None:
        checks = [c.strip() for c in args.checks.split(",") if c.strip()]
        if not checks:
            raise ValueError(
                f"--checks {args.checks!r} names no check; choose from {', '.join(CHECKS)}"
            )
        unknown = [c for c in checks if c not in CHECKS]
        if unknown:
            raise ValueError(f"--checks: unknown {unknown}; choose from {', '.join(CHECKS)}")
    model = _load(args.hf, args.kind)
    if model.max_length is not None and args.length > model.max_length:
        raise ValueError(
            f"--length {args.length} is more than the model's {model.max_length} positions"
        )
    if not args.json:
        say(f"checking {model.name} ({model.kind}) from {args.hf}")
    report = run_battery(model, checks=checks, seed=args.seed, length=args.length, atol=args.atol)
    say(report.to_json(indent=2) if args.json else str(report))
    return {"conforms": 0, "violates": 1, "unverified": UNVERIFIED}[report.verdict]


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
    if kind is not None:
        _check_kind(directory, kind)
    try:
        return from_hf(directory, kind=kind)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"--hf {directory!r} is not a directory with a config.json"
        ) from None
    except OSError as error:
        raise OSError(f"--hf {directory!r}: {error}") from None
    except Exception as error:  # transformers raises many kinds for a directory it cannot read
        raise ValueError(f"--hf {directory!r}: cannot load the model: {error}") from None


def _check_kind(directory, kind) -> None:
    """``--kind`` against the model types transformers builds for it (its Auto classes' tables)."""
    import json
    import pathlib

    from transformers.models.auto import modeling_auto as auto

    tables = {
        "causal": auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        "masked": auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES,
        "seq2seq": auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES,
    }
    try:
        model_type = json.loads((pathlib.Path(directory) / "config.json").read_text())["model_type"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # the loader names what is wrong with the folder
    if model_type not in tables[kind]:
        fits = [k for k, table in tables.items() if model_type in table]
        raise ValueError(
            f"--kind {kind}: transformers builds no {kind} model of the {model_type!r} in "
            f"--hf {directory!r} (it builds: {', '.join(fits) or 'none of the three'})"
        )


def register(sub) -> None:
    """Add the ``check`` command to the parser's subcommands."""
    p = sub.add_parser(
        "check",
        help="test a Hugging Face model directory against the paper's invariants",
        description="Run the conformance battery (causality, padding invariance left and right, "
        "batched = one at a time, cached = uncached decoding and generate, permutation, "
        "distributions, determinism, bidirectionality of encoders) on a local Hugging Face model "
        "directory, after its preconditions (finite, deterministic outputs). Exit status 1 if an "
        "invariant or a precondition is violated, 3 if no check passed.",
    )
    p.add_argument(
        "--hf",
        metavar="DIR",
        required=True,
        help="a directory saved by save_pretrained (config.json and weights)",
    )
    p.add_argument(
        "--kind",
        choices=("causal", "masked", "seq2seq"),
        default=None,
        help="what the model is (default: from its config)",
    )
    p.add_argument(
        "--checks",
        metavar="NAME,…",
        default=None,
        help="only these checks (comma-separated; default all)",
    )
    p.add_argument("--seed", type=integer(0), default=0, help="seed of the inputs and of sampling")
    p.add_argument(
        "--length", type=integer(2), default=8, help="tokens per test sequence (default 8)"
    )
    p.add_argument(
        "--atol",
        type=positive,
        default=1e-4,
        help="tolerance relative to the largest |logit| (default %(default)g)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(run=run)
