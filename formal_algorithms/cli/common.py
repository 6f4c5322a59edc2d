"""What the commands share: their name and file names, printing, sizes and durations, loading a
language-model checkpoint, the key of a sample, and a prompt's check. The rest lives by what it
does: options (:mod:`.options`), corpus (:mod:`.corpus`), training runs (:mod:`.runs`), errors
(:mod:`.errors`)."""

from __future__ import annotations

import pathlib
import re
import sys

import jax
import numpy as np

from ..paper.functions import gelu, gelu_tanh, relu
from ..paper.normalisation import EPS
from ..practice.checkpoint import load_checkpoint

PROG = "formal-algorithms"

ACTIVATIONS = {"gelu": gelu, "gelu_tanh": gelu_tanh, "relu": relu}

DEFAULT_OUT = pathlib.Path("runs") / "dtransformer"

CHECKPOINT_NAME = "model.safetensors"


def say(*parts, file=None):
    print(*parts, file=file or sys.stdout, flush=True)


def n_params(theta) -> int:
    return sum(int(np.prod(np.shape(a))) for a in jax.tree_util.tree_leaves(theta))


def duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"


def load_lm(path):
    """θ, tokenizer, activation and eps of a ``train`` checkpoint, or a one-line error."""
    from ..practice.bpe import tokenizer_from_dict

    checkpoint = load_checkpoint(path)
    if checkpoint.architecture != "DTransformer":
        raise ValueError(
            f"checkpoint {str(path)!r} holds an {checkpoint.architecture}, not a DTransformer "
            f"(Algorithm 10); use a checkpoint written by '{PROG} train'"
        )
    if checkpoint.tokenizer is None:
        raise ValueError(f"checkpoint {str(path)!r} has no tokenizer in its metadata")
    tokenizer = tokenizer_from_dict(checkpoint.tokenizer)
    if tokenizer.N_V != checkpoint.hyperparameters["N_V"]:
        raise ValueError(
            f"checkpoint {str(path)!r}: its tokenizer has N_V = {tokenizer.N_V} but θ has "
            f"N_V = {checkpoint.hyperparameters['N_V']}"
        )
    name = checkpoint.extra.get("activation", "gelu")
    if name not in ACTIVATIONS:
        raise ValueError(f"checkpoint {str(path)!r} names an unknown activation {name!r}")
    return checkpoint, tokenizer, ACTIVATIONS[name], float(checkpoint.extra.get("eps", EPS))


def load_gguf(path):
    """``--gguf``'s model and tokenizer, the model read first (its reader names what is wrong with
    the file); an error says ``--gguf PATH`` as typed before the reader's own sentence."""
    from ..interop.gguf import gguf_tokenizer, read_llama_gguf

    try:
        return read_llama_gguf(path), gguf_tokenizer(path)
    except (ValueError, TypeError, OSError) as error:
        raise type(error)(f"--gguf {path}: {error}") from None


def sample_key(seed: int, j: int = 0):
    """The key of sample ``j`` (0-based) for ``--seed``: ``fold_in(k_sample, j)`` with ``k_sample``
    the third of ``split(key(seed), 3)`` (the first two initialise and train the model). ``train``
    prints sample 0, so ``sample --seed s`` repeats the sample that ``train --seed s`` printed.
    One jitted program (six eager key operations would compile six at start-up)."""
    if not (0 <= seed < 2**31 and 0 <= j < 2**31):  # outside int32: the eager operations
        return jax.random.fold_in(jax.random.split(jax.random.key(seed), 3)[2], j)
    return _sample_key(np.int32(seed), np.int32(j))


@jax.jit
def _sample_key(seed, j):
    return jax.random.fold_in(jax.random.split(jax.random.key(seed), 3)[2], j)


def unescape(text: str) -> str:
    r"""``\n``, ``\t`` and ``\\`` typed on the command line as the characters they name."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "nt\\":
            out.append({"n": "\n", "t": "\t", "\\": "\\"}[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def encode_option(tokenizer, text: str, option: str = "--prompt", *, bos: bool = False):
    """``text``'s token ids, or an error naming the option as the user typed it (a character
    tokenizer knows only the characters of its corpus)."""
    try:
        return tokenizer.encode(text, bos=bos)
    except ValueError as error:
        why = re.sub(r"^\S+: argument 'text' ", "", str(error))  # the tokenizer's own argument
        raise ValueError(f"{option} {text[:40]!r} {why}") from None


def check_prompt(tokenizer, prompt: str, name: str = "--prompt") -> None:
    """The prompt encodes with the model's tokenizer (before any long work)."""
    encode_option(tokenizer, prompt, name)
