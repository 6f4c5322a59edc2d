"""``formal-algorithms compare --hf DIR``: where does a Hugging Face model depart from the paper?

Loads a local model directory (``config.json`` and weights; nothing is downloaded), runs it and
the paper's algorithm on the same tokens and prints, line by line, path | pseudocode | max abs
error | max rel error, then the verdict: EQUAL, or the first line beyond tolerance and its first
departing token position, the likely causes and the evidence
(:mod:`formal_algorithms.interop.compare`). ``--all`` lists every departing row; ``--json`` prints
the report as JSON; ``--model-class module:Class`` loads the directory with a class of the user's
own. An encoder-decoder model (BART, T5: Algorithm 8) reads two sequences: ``--context`` is the
encoder's (the paper's z), ``--tokens`` (or ``--length``) the decoder's (x); without
``--context`` it is refused, and so are ``--text``, ``--cached`` and a batch, which read one
sequence. Every option and the directory are checked before the model is loaded. Exit status: 0
equal, 3 the model departs, 1 an error.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from .common import say
from .options import integer, positive

DEPARTS = 3  # the exit status of a model that departs from the paper

# interop.compare.TABLES and interop.departures.DEPARTURES, named here so that building the
# parser and checking the options import no torch (the command line's start-up time); a test
# keeps them equal.
TABLES = {
    "bart": "BartForConditionalGeneration",
    "bert": "BertForMaskedLM",
    "gemma": "GemmaForCausalLM",
    "gpt2": "GPT2LMHeadModel",
    "gpt_neox": "GPTNeoXForCausalLM",
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "opt": "OPTForCausalLM",
    "phi": "PhiForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "t5": "T5ForConditionalGeneration",
}
#: interop.compare's CONTEXT: the tables of Algorithm 8, which read a context z (--context)
ENCODER_DECODER = {"bart": "BART", "t5": "T5"}
INJECTABLE = (
    "eps",
    "gelu-form",
    "scale-d",
    "post-ln",
    "pre-ln",
    "positions+1",
    "mask-transposed",
    "heads-strided",
    "bias-dropped",
    "final-norm-missing",
    "untied",
    "embedding-scaled",
    "output-bias-doubled",
    "temperature",
    "softmax-axis",
    "mask-future",
    "qk-swapped",
    "causal-where-none",
    "relu-layer",
    "unbiased-variance",
    "rope-base",
    "rope-scaled",
    "rope-offset",
    "kv-tiled",
    "cache-before-rope",
    "padding-on-queries",
    "gate-up-swapped",
    "rms-plus-one",
    "rms-centred",
)


def _config(directory: str) -> dict:
    """config.json of ``--hf``, its model type checked against the tables; the weights there."""
    from ..interop.hf_models import read_folder

    return read_folder(directory, "--hf", TABLES, "compare has a table for")


def _limits(config: dict):
    """N_V and ℓ_max (None: no learned positions, as T5's relative ones)."""
    positions = config.get("n_positions", config.get("max_position_embeddings"))
    return int(config["vocab_size"]), None if positions is None else int(positions)


def _check_numbers(args) -> None:
    """The options that need nothing else, before the directory is read."""
    if args.length < 1:
        raise ValueError(f"--length must be at least 1, got {args.length}")
    one = args.tokens is None or ";" not in args.tokens
    if one and "--padding" in getattr(args, "given", ()):
        raise ValueError(
            "--padding applies to a batch (--tokens 'a b; c'); one sequence is not padded"
        )


def _check_context(args, kind) -> None:
    """An encoder-decoder model needs ``--context`` and reads one decoder sequence; any other
    model has no context."""
    if kind not in ENCODER_DECODER:
        if args.context is not None:
            raise ValueError(
                f"--context is the context z of an encoder-decoder model "
                f"({', '.join(ENCODER_DECODER)}); --hf {args.hf!r} holds a {kind!r} model, "
                "which reads --tokens alone"
            )
        return
    name = ENCODER_DECODER[kind]
    if args.context is None:
        raise ValueError(
            f"--hf {args.hf!r} holds a {name} model, which reads a context z besides the tokens: "
            "give z with --context IDS (the encoder's tokens; --tokens are the decoder's), or "
            "compare it from Python: formal_algorithms.interop.compare(model, x, z=z)"
        )
    one = "compare reads one context (--context) and one decoder sequence (--tokens)"
    if args.text is not None:
        raise ValueError(f"--text does not apply to a {name} model: {one}")
    if args.cached:
        raise ValueError(f"--cached does not apply to a {name} model: {one}")
    if args.tokens is not None and ";" in args.tokens:
        raise ValueError(f"--tokens gives a batch, which a {name} model is not compared on: {one}")


def _check_options(args, config) -> None:
    """Every option that needs the directory's configuration, before the model is loaded."""
    _check_context(args, config["model_type"])
    for name in args.inject or ():
        from ..interop.departures import DEPARTURES, family_of_type

        if family_of_type(config["model_type"]) not in DEPARTURES[name].where:
            raise ValueError(
                f"--inject {name} does not apply to this model "
                f"({config['model_type']}); it applies to "
                f"{', '.join(DEPARTURES[name].where)}"
            )
    if args.text is not None:
        from ..interop.hf_models import TOKENIZER, has_tokenizer

        if not has_tokenizer(args.hf):
            raise ValueError(
                f"--text needs the model's tokenizer, and --hf {args.hf!r} has none "
                f"({', '.join(TOKENIZER)}); give --tokens instead"
            )


def _tokens(args, config):
    """The token sequences: one, or several from ``--tokens 'a b; c d'`` (a padded batch)."""
    N_V, ell_max = _limits(config)
    if args.tokens is not None:
        try:
            xs = [
                np.array([int(t) for t in part.replace(",", " ").split()], np.int64)
                for part in args.tokens.split(";")
            ]
        except ValueError:
            raise ValueError(f"--tokens {args.tokens!r} must be integers") from None
        where = "--tokens"
    elif args.text is not None:
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(args.hf, local_files_only=True)
            xs = [np.asarray(tokenizer(args.text)["input_ids"], np.int64)]
        except (OSError, ValueError, TypeError) as error:
            raise ValueError(
                f"--text: the tokenizer in --hf {args.hf!r} cannot be read ({error})"
            ) from None
        where = "--text"
    else:
        xs = [np.random.default_rng(args.seed).integers(0, N_V, args.length)]
        where = "--length"
    for x in xs:
        _check_ids(where, x, N_V, ell_max, len(xs) > 1)
    if args.cached and (len(xs) > 1 or xs[0].size < 2):
        raise ValueError(
            "--cached needs one sequence of at least 2 tokens (a prefix to cache "
            "and the step read through it)"
        )
    return xs


def _check_ids(where, x, N_V, ell_max, several=False) -> None:
    if x.size == 0:
        raise ValueError(
            f"{where} gives no tokens"
            + (" in one of its ';'-separated sequences" if several else "")
        )
    if x.min() < 0 or x.max() >= N_V:
        raise ValueError(f"{where} holds token ids outside [0, {N_V}) (the model's vocabulary)")
    if ell_max is not None and x.size > ell_max:
        raise ValueError(
            f"{where} gives {x.size} tokens, more than the model's {ell_max} positions"
        )


def _context(args, config):
    """The context z of ``--context`` (an encoder-decoder model's), or None."""
    if args.context is None:
        return None
    try:
        z = np.array([int(t) for t in args.context.replace(",", " ").split()], np.int64)
    except ValueError:
        raise ValueError(f"--context {args.context!r} must be integers") from None
    _check_ids("--context", z, *_limits(config))
    return z


def _model_class(spec: str):
    """``module:Class`` or ``path/to/file.py:Class``: the class, importable and loadable."""
    import importlib
    import importlib.util

    module_name, _, name = spec.rpartition(":")
    if not module_name or not name.isidentifier():
        raise ValueError(
            f"--model-class {spec!r} must be module:Class (e.g. mypkg.models:MyGPT2"
            " or path/to/models.py:MyGPT2)"
        )
    try:
        if module_name.endswith(".py"):
            file = pathlib.Path(module_name)
            if not file.is_file():
                raise ValueError(f"--model-class {spec!r}: the file {module_name!r} does not exist")
            loader = importlib.util.spec_from_file_location(file.stem, file)
            module = importlib.util.module_from_spec(loader)
            loader.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"--model-class {spec!r}: cannot import {module_name!r} ({error})"
        ) from None
    cls = getattr(module, name, None)
    if not isinstance(cls, type) or not hasattr(cls, "from_pretrained"):
        raise ValueError(
            f"--model-class {spec!r}: {module_name!r} has no model class {name!r} "
            "with from_pretrained (a transformers PreTrainedModel)"
        )
    return cls


def _load(args, config):
    import transformers
    from transformers.utils import logging

    kind = config["model_type"]
    if args.model_class is None:
        cls = getattr(transformers, TABLES[kind])
    else:
        cls = _model_class(args.model_class)
    logging.disable_progress_bar()  # the report is the output
    try:
        hf_config = transformers.AutoConfig.from_pretrained(args.hf, local_files_only=True)
        model = cls.from_pretrained(args.hf, config=hf_config, local_files_only=True)
    except Exception as error:  # a damaged or foreign file: one line naming the directory
        text = " ".join(str(error).split())[:300]
        raise ValueError(
            f"--hf {args.hf!r}: {cls.__name__} cannot load it ({type(error).__name__}: {text})"
        ) from None
    return model.eval()


def run(args) -> int:
    _check_numbers(args)
    config = _config(args.hf)
    _check_options(args, config)
    xs = _tokens(args, config)
    z = _context(args, config)
    if args.model_class is not None:
        _model_class(args.model_class)  # importable, before the weights are read
    from ..interop.compare import compare, compare_batch, compare_cached
    from ..interop.departures import inject

    model = _load(args, config)
    for name in args.inject or ():
        inject(model, name)
    options = {"float64": args.float64, "tolerance": args.tolerance}
    if len(xs) > 1:
        reports = compare_batch(model, xs, padding=args.padding, **options)
    elif args.cached:
        reports = [compare_cached(model, xs[0], **options)]
    else:
        reports = [compare(model, xs[0], **({} if z is None else {"z": z}), **options)]
    if args.json:
        data = [r.to_dict() for r in reports]
        say(json.dumps(data[0] if len(data) == 1 else data, indent=1, ensure_ascii=False))
    for report in reports if not args.json else ():
        say(
            f"{args.hf}: {report.model} against {report.algorithm}, {report.dtype}, "
            f"{len(report.tokens)} tokens {report.tokens}"
            + ("" if z is None else f", context z {z.tolist()}")
        )
        text = report.table(all_rows=False, departing=args.all)
        say(
            text.replace("(departing=True lists them)", "(--all lists them)").replace(
                "needs a float64 run.", "needs --float64."
            )
        )
    return DEPARTS if any(r.departs for r in reports) else 0


def register(sub) -> None:
    """Add the ``compare`` command to the parser's subcommands."""
    p = sub.add_parser(
        "compare",
        help="find where a Hugging Face model departs from the paper, line by line",
        description="Run a local Hugging Face model of one of compare's tables "
        f"({', '.join(TABLES)}) and the paper's algorithm (Algorithm 10, 9 or 8 with the "
        "family's substitutions) on the same tokens, compare every line the model exposes, "
        "and name the first line beyond tolerance, "
        "its first departing token position, its likely causes and the evidence. Exit status 0: "
        f"equal; {DEPARTS}: the model departs; 1: error.",
    )
    p.add_argument(
        "--hf",
        metavar="DIR",
        required=True,
        help="a local model directory (config.json and weights); nothing is downloaded",
    )
    _token_options(p.add_argument_group("the tokens"))
    _comparison_options(p.add_argument_group("the comparison"))
    p.set_defaults(run=run)


def _token_options(g) -> None:
    """The tokens both sides read."""
    source = g.add_mutually_exclusive_group()
    source.add_argument(
        "--tokens",
        metavar="IDS",
        help="token ids, e.g. '464 3290 318'; "
        "several sequences separated by ';' are compared as one padded batch",
    )
    source.add_argument("--text", help="text, encoded with the directory's own tokenizer")
    g.add_argument(
        "--length",
        type=integer(1),
        default=8,
        help="without --tokens/--text: this many random token ids (default %(default)s)",
    )
    g.add_argument("--seed", type=integer(0), default=0, help="seed of the random tokens")
    g.add_argument(
        "--context",
        metavar="IDS",
        help="an encoder-decoder model's (BART, T5) context z: the encoder's token ids; "
        "--tokens (or --length) are then the decoder's x",
    )
    g.add_argument(
        "--padding",
        choices=("left", "right"),
        default="right",
        help="the side a batch of --tokens 'a b; c' is padded on (default %(default)s)",
    )
    g.add_argument(
        "--cached",
        action="store_true",
        help="compare the last token read through the model's own KV cache (the "
        "model run on the others first) with the paper's last column",
    )


def _comparison_options(g) -> None:
    """How the two sides are compared and reported, and what model class is loaded."""
    g.add_argument(
        "--float64",
        action="store_true",
        help="run both sides in float64 (a tight tolerance: finds departures below "
        "float32's resolution)",
    )
    g.add_argument(
        "--tolerance",
        type=positive,
        default=None,
        help="bound on max|model − paper| / max(1, max|paper|) per line, a finite "
        "number > 0 (default: 2e-5 · √(d_e · L / 32) in float32, 1e-10 · √(d_e · L / "
        "32) in float64)",
    )
    g.add_argument(
        "--all",
        action="store_true",
        help="list every departing row, in execution order (default: the rows up to "
        "a few past the first departure)",
    )
    g.add_argument("--json", action="store_true", help="print the report as JSON")
    g.add_argument(
        "--model-class",
        metavar="MODULE:CLASS",
        help="load --hf with a model class of your own (module:Class or "
        "path/to/file.py:Class), e.g. a modified GPT2LMHeadModel that save_pretrained "
        "does not carry; its submodules must keep the architecture's names",
    )
    g.add_argument(
        "--inject",
        action="append",
        choices=INJECTABLE,
        metavar="NAME",
        help="inject a deliberate departure into the loaded model first, to see what "
        f"one looks like: {', '.join(INJECTABLE)} (docs/compare.md)",
    )
