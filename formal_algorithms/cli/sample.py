"""``formal-algorithms sample``: continue a prompt from a checkpoint with Algorithm 14, streaming
(with the options of :mod:`~formal_algorithms.practice.sampling`: top-k, top-p, a stop string);
a ``seq2seq`` checkpoint runs Algorithm 15 on the prompt's symbols, an ``mlm`` checkpoint fills
the prompt's ``_`` with Algorithm 9's prediction."""

from __future__ import annotations

import json

import jax
import numpy as np

from . import mlm, seq2seq
from .common import (
    CHECKPOINT_NAME,
    DEFAULT_OUT,
    check_prompt,
    encode_masked,
    load_lm,
    read_checkpoint,
    sample_key,
    say,
    unescape,
)
from .options import integer, temperature, unit_interval
from .stream import stream_sample


def checkpoint_family(path) -> str | None:
    """The ``family`` a command wrote into a checkpoint's metadata, read from the safetensors
    header alone (``None`` when there is none or the file is unreadable: the full load then
    reports what is wrong)."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n)) if 0 < n < 1 << 24 else {}
        return json.loads(header["__metadata__"]["extra"]).get("family")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


#: what a seq2seq or mlm checkpoint prints instead of --length tokens, cut by no --stop
OUTPUTS = {
    seq2seq.FAMILY: "a seq2seq checkpoint's output ends at its <eos>",
    mlm.FAMILY: "an mlm checkpoint's output is the prompt with each _ filled",
}


def check_options(args) -> None:
    """The options that contradict each other, before the checkpoint is read: a filter of the
    draws (--top-k, --top-p) with --temperature 0, which draws nothing (the most likely token;
    the filter would be ignored). A filter set to off (--top-k 0, --top-p 1) is no filter."""
    if args.stop == "":
        raise ValueError("--stop is empty: give the text to stop before")
    if args.temperature == 0:
        for name, value, off in (("--top-k", args.top_k, 0), ("--top-p", args.top_p, 1.0)):
            if value != off:
                raise ValueError(
                    f"{name} {value:g} filters the tokens a sample draws from, but --temperature "
                    f"0 draws none (it takes the most likely token): give {name} with a "
                    f"temperature above 0, or drop it"
                )


def check_family(args, family) -> None:
    """--length and --stop shape a language model's sample; another checkpoint refuses them."""
    for name in ("--length", "--stop"):
        if name in getattr(args, "given", ()):
            raise ValueError(
                f"{name} applies to a checkpoint of 'train'; --checkpoint {args.checkpoint!r} "
                f"is not one: {OUTPUTS[family]}"
            )


def run(args) -> int:
    check_options(args)
    tau, top_k, top_p = args.temperature, args.top_k, args.top_p
    stop = unescape(args.stop) if args.stop is not None else None
    family = checkpoint_family(args.checkpoint)
    if family in (seq2seq.FAMILY, mlm.FAMILY):
        check_family(args, family)
        fill = reverse_sequence if family == seq2seq.FAMILY else fill_masks
        for j in range(args.num_samples):
            say(fill(args.checkpoint, args.prompt, sample_key(args.seed, j), tau, top_k, top_p))
        return 0
    checkpoint, tokenizer, activation, eps = load_lm(args.checkpoint)
    check_prompt(tokenizer, args.prompt)
    for j in range(args.num_samples):
        if args.num_samples > 1:
            say(f"--- sample {j + 1} of {args.num_samples} (seed {args.seed}, key {j})")
        stream_sample(
            checkpoint.theta,
            tokenizer,
            args.prompt,
            sample_key(args.seed, j),
            args.length,
            tau,
            activation,
            eps,
            top_k=top_k,
            top_p=top_p,
            stop=stop,
        )
    return 0


def reverse_sequence(path, prompt, key, tau, top_k, top_p) -> str:
    """A ``seq2seq`` checkpoint: Algorithm 15 on the symbols of ``prompt`` ("3 1 4")."""
    from ..paper.inference import ed_inference

    checkpoint = read_checkpoint(path, architecture="EDTransformer")
    N_V = checkpoint.hyperparameters["N_V"]
    try:
        z = [int(v) for v in prompt.replace(",", " ").split()]
    except ValueError:
        z = None
    if not z or min(z) < 0 or max(z) >= N_V - 3:
        raise ValueError(
            f"--prompt {prompt!r}: a seq2seq checkpoint reads symbols 0-{N_V - 4} separated by "
            "spaces, e.g. --prompt '3 1 4'"
        )
    ell_max = checkpoint.hyperparameters["ell_max"]
    if len(z) > ell_max:
        raise ValueError(f"--prompt has {len(z)} symbols; this model reads at most {ell_max}")
    if top_k or top_p < 1:
        raise ValueError("--top-k and --top-p apply to language-model checkpoints only")
    x_hat = ed_inference(np.asarray(z, np.int32), checkpoint.theta, key, tau=tau)  # Algorithm 15
    names = {N_V - 3: "<mask>", N_V - 2: "<bos>", N_V - 1: "<eos>"}
    return " ".join(names.get(int(t), str(int(t))) for t in np.asarray(x_hat))


def fill_masks(path, prompt, key, tau, top_k, top_p) -> str:
    """An ``mlm`` checkpoint: every ``_`` of ``prompt`` is a masked character; Algorithm 9's
    output at its position gives the character (each drawn with the sampling options)."""
    from ..paper.architectures import e_transformer_logits
    from ..paper.inference import step_key
    from ..practice.bpe import tokenizer_from_dict
    from ..practice.sampling import sample_token_filtered

    checkpoint = read_checkpoint(path, architecture="ETransformer")
    if checkpoint.tokenizer is None:
        raise ValueError(f"--checkpoint {str(path)!r}: the file has no tokenizer in its metadata")
    tokenizer = tokenizer_from_dict(checkpoint.tokenizer)
    if "_" not in prompt:
        raise ValueError(f"--prompt {prompt!r}: mark the characters to fill with _, e.g. 'th_ c_t'")
    ell_max = checkpoint.hyperparameters["ell_max"]
    if len(prompt) + 1 > ell_max:
        raise ValueError(
            f"--prompt is {len(prompt)} characters; this model reads at most {ell_max - 1}"
        )
    x = [tokenizer.bos_token, *encode_masked(tokenizer, prompt, "_")]  # as train's: --prompt
    logits = np.asarray(jax.jit(e_transformer_logits)(np.asarray(x, np.int32), checkpoint.theta))
    out = []
    for t, c in enumerate(prompt, start=1):
        if c != "_":
            out.append(c)
            continue
        y = sample_token_filtered(step_key(key, t), logits[:, t], tau, top_k, top_p)
        out.append(tokenizer.decode([int(y)], special="show"))
    return "".join(out)


def register(sub) -> None:
    """Add the ``sample`` command to the parser's subcommands."""
    p = sub.add_parser(
        "sample",
        help="continue a prompt with a trained checkpoint (Algorithm 14), streaming",
        description="Load a checkpoint written by 'train' and continue --prompt with Algorithm 14 "
        "(key/value cache; then a window of bos and the latest tokens), printing tokens as they "
        "are generated.",
    )
    p.add_argument(
        "--checkpoint",
        metavar="PATH",
        default=str(DEFAULT_OUT / CHECKPOINT_NAME),
        help="checkpoint (default %(default)s)",
    )
    p.add_argument("--prompt", default="", help="text to continue (default: none)")
    p.add_argument(
        "--temperature",
        type=temperature,
        default=0.8,
        help="sampling temperature τ (default %(default)s; 0 = argmax)",
    )
    p.add_argument(
        "--length", type=integer(1), default=256, help="tokens to generate (default %(default)s)"
    )
    p.add_argument(
        "--seed",
        type=integer(0),
        default=0,
        help="random seed (default %(default)s); the same seed as 'train --seed' "
        "repeats the sample train printed",
    )
    p.add_argument(
        "--top-k",
        type=integer(0),
        default=0,
        help="draw only from the k most likely tokens (default 0: off; an extension "
        "beyond the paper)",
    )
    p.add_argument(
        "--top-p",
        type=unit_interval,
        default=1.0,
        help="nucleus sampling: draw from the most likely tokens whose probability "
        "reaches p (default 1: off; an extension beyond the paper)",
    )
    p.add_argument(
        "--num-samples",
        type=integer(1),
        default=1,
        help="independent samples, keys 0, 1, ... of the seed (default %(default)s)",
    )
    p.add_argument(
        "--stop",
        metavar="STRING",
        default=None,
        help="end each sample before this string (not printed); \\n is a newline, "
        "e.g. --stop '\\n\\n' (default: none)",
    )
    p.set_defaults(run=run)
