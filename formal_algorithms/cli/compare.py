"""``formal-algorithms compare --hf DIR``: where does a Hugging Face model depart from the paper?

Loads a local model directory (``config.json`` and weights; nothing is downloaded), runs it and
the paper's algorithm on the same tokens and prints, line by line, path | pseudocode | max abs
error | max rel error, then the verdict: EQUAL, or the first line beyond tolerance with the likely
causes and the evidence (:mod:`formal_algorithms.interop.compare`). ``--json`` prints the report
as JSON. Exit status: 0 equal, 3 the model departs, 1 an error (a missing directory, a model
the converters refuse, tokens out of range).
"""

from __future__ import annotations

import pathlib

import numpy as np

from .common import say

DEPARTS = 3  # the exit status of a model that departs from the paper


def _load(directory: str):
    path = pathlib.Path(directory)
    if not (path / "config.json").is_file():
        what = "does not exist" if not path.exists() else "has no config.json"
        raise FileNotFoundError(f"--hf directory {directory!r} {what}")
    from transformers import AutoConfig, BertForMaskedLM, GPT2LMHeadModel, LlamaForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()  # the report is the output
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    classes = {"gpt2": GPT2LMHeadModel, "bert": BertForMaskedLM, "llama": LlamaForCausalLM}
    if config.model_type not in classes:
        raise ValueError(f"--hf {directory!r} holds a {config.model_type!r} model; compare "
                         f"knows {', '.join(sorted(classes))}")  # fmt: skip
    model = classes[config.model_type].from_pretrained(path, local_files_only=True)
    return model.eval()


def _limits(model):
    config = model.config
    if config.model_type == "gpt2":
        return config.vocab_size, config.n_positions
    return config.vocab_size, config.max_position_embeddings  # BERT, Llama


def _tokens(args, model, directory):
    N_V, ell_max = _limits(model)
    if args.tokens is not None:
        try:
            x = np.array([int(t) for t in args.tokens.replace(",", " ").split()], np.int64)
        except ValueError:
            raise ValueError(f"--tokens {args.tokens!r} must be integers") from None
        if x.size == 0:
            raise ValueError("--tokens is empty")
        where = "--tokens"
    elif args.text is not None:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        except (OSError, ValueError) as error:
            raise ValueError(f"--text needs a tokenizer in --hf {directory!r}: {error}") from None
        x = np.asarray(tokenizer(args.text)["input_ids"], np.int64)
        where = "--text"
    else:
        if args.length < 1:
            raise ValueError(f"--length must be at least 1, got {args.length}")
        x = np.random.default_rng(args.seed).integers(0, N_V, min(args.length, ell_max))
        where = "--length"
    if x.min() < 0 or x.max() >= N_V:
        raise ValueError(f"{where} holds token ids outside [0, {N_V}) (the model's vocabulary)")
    if x.size > ell_max:
        raise ValueError(
            f"{where} gives {x.size} tokens, more than the model's {ell_max} positions"
        )
    return x


def run(args) -> int:
    from ..interop.compare import compare
    from ..interop.departures import inject

    model = _load(args.hf)
    x = _tokens(args, model, args.hf)
    for name in args.inject or ():
        try:
            inject(model, name)
        except ValueError as error:
            reason = str(error).split(f"= {name!r} ", 1)[-1]
            raise ValueError(f"--inject {name} {reason}") from None
    report = compare(model, x, float64=args.float64, tolerance=args.tolerance)
    if args.json:
        say(report.to_json())
    else:
        say(f"{args.hf}: {report.model} against {report.algorithm}, {report.dtype}, "
            f"{len(x)} tokens {x.tolist()}")  # fmt: skip
        say(report.table(all_rows=args.all))
    return DEPARTS if report.departs else 0


# interop.departures.DEPARTURES, named here so that building the parser imports no torch (the
# command line's start-up time); a test keeps the two equal.
INJECTABLE = ("eps", "gelu-form", "scale-d", "post-ln", "pre-ln", "positions+1", "mask-transposed",
              "heads-strided", "bias-dropped", "final-norm-missing", "untied",
              "embedding-scaled", "output-bias-doubled", "temperature", "softmax-axis",
              "mask-future", "qk-swapped", "causal-where-none", "relu-layer", "unbiased-variance",
              "rope-base", "rope-scaled", "rope-offset", "kv-tiled", "gate-up-swapped",
              "rms-plus-one", "rms-centred")  # fmt: skip


def register(sub) -> None:
    """Add the ``compare`` command to the parser's subcommands."""
    p = sub.add_parser(
        "compare", help="find where a Hugging Face model departs from the paper, line by line",
        description="Run a local Hugging Face GPT-2 (Algorithm 10), BERT (Algorithm 9) or Llama "
        "(Algorithm 10 with Llama's substitutions) model and the paper's algorithm on the same "
        "tokens, compare every line the model exposes, and name the first line beyond tolerance "
        "with its likely causes. Exit status 0: equal; "
        f"{DEPARTS}: the model departs; 1: error.",
    )  # fmt: skip
    p.add_argument("--hf", metavar="DIR", required=True,
                   help="a local model directory (config.json and weights); nothing is downloaded")  # fmt: skip
    source = p.add_mutually_exclusive_group()
    source.add_argument("--tokens", metavar="IDS", help="token ids, e.g. '464 3290 318'")
    source.add_argument("--text", help="text, encoded with the directory's own tokenizer")
    p.add_argument("--length", type=int, default=8,
                   help="without --tokens/--text: this many random token ids (default %(default)s)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="seed of the random tokens")
    p.add_argument("--float64", action="store_true",
                   help="run both sides in float64 (a tight tolerance: finds departures below "
                   "float32's resolution)")  # fmt: skip
    p.add_argument("--tolerance", type=float, default=None,
                   help="bound on max|model − paper| / max(1, max|paper|) per line (default: "
                   "2e-5 · √(d_e · L / 32) in float32, 1e-10 · √(d_e · L / 32) in float64)")  # fmt: skip
    p.add_argument(
        "--all",
        action="store_true",
        help="print every row (default: up to a few rows past the first departure)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--inject", action="append", choices=INJECTABLE, metavar="NAME",
                   help="inject a deliberate departure into the loaded model first, to see what "
                   f"one looks like: {', '.join(INJECTABLE)} (docs/compare.md)")  # fmt: skip
    p.set_defaults(run=run)
