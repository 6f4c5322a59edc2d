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
from ..practice.checkpoint import load_checkpoint, path_argument

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


#: each architecture's checkpoints: the command that writes them and the paper's algorithm
WRITTEN_BY = {
    "DTransformer": ("train", "Algorithm 10"),
    "ETransformer": ("mlm", "Algorithm 9"),
    "EDTransformer": ("seq2seq", "Algorithm 8"),
}


def _a(name: str) -> str:
    return f"{'an' if name[0] in 'AEIOU' else 'a'} {name}"


def read_checkpoint(path, typed: str | None = None, *, architecture: str | None = None, **kw):
    """:func:`load_checkpoint` for a command, the one place the commands read a checkpoint: an
    error says what the user typed, ``typed`` (default ``--checkpoint 'PATH'``), where the
    library says ``load_checkpoint: argument 'path' = 'PATH'``, then the library's reason;
    ``architecture``: the one the command reads, another refused with the command that writes
    it. ``kw``: ``load_checkpoint``'s (``opt_state_template``)."""
    typed = f"--checkpoint {str(path)!r}" if typed is None else typed
    try:
        checkpoint = load_checkpoint(path, **kw)
    except (ValueError, TypeError, OSError) as error:
        raise type(error)(typed + checkpoint_reason(error, path)) from None
    kind = checkpoint.architecture
    if architecture is not None and kind != architecture:
        command, algorithm = WRITTEN_BY[architecture]
        raise ValueError(
            f"{typed} holds {_a(kind)}, not {_a(architecture)} ({algorithm}); use a checkpoint "
            f"written by '{PROG} {command}'"
        )
    return checkpoint


def checkpoint_reason(error: BaseException, path) -> str:
    """The library's reason a checkpoint was not read, as it follows the file's name (" is
    truncated ...", ": metadata field ..."), without the library's function and argument names."""
    text = str(error)
    file = path_argument(path)
    if text.startswith(f"load_checkpoint: {file}"):
        return text.removeprefix(f"load_checkpoint: {file}")
    if text.startswith("load_checkpoint: argument 'opt_state_template'"):  # --resume's
        detail = text.partition(": its leaves ")[2].split(";")[0]
        return f": its optimizer state does not fit this command's optimizer, whose leaves {detail}"
    return ": " + text.removeprefix("load_checkpoint: ")


def load_lm(path, typed: str | None = None):
    """θ, tokenizer, activation and eps of a ``train`` checkpoint, or a one-line error naming
    ``typed`` (default ``--checkpoint 'PATH'``)."""
    from ..practice.bpe import tokenizer_from_dict

    typed = f"--checkpoint {str(path)!r}" if typed is None else typed
    checkpoint = read_checkpoint(path, typed, architecture="DTransformer")
    if checkpoint.tokenizer is None:
        raise ValueError(f"{typed}: the file has no tokenizer in its metadata")
    tokenizer = tokenizer_from_dict(checkpoint.tokenizer)
    if tokenizer.N_V != checkpoint.hyperparameters["N_V"]:
        raise ValueError(
            f"{typed}: its tokenizer has N_V = {tokenizer.N_V} but θ has "
            f"N_V = {checkpoint.hyperparameters['N_V']}"
        )
    name = checkpoint.extra.get("activation", "gelu")
    if name not in ACTIVATIONS:
        raise ValueError(f"{typed}: the file names an unknown activation {name!r}")
    return checkpoint, tokenizer, ACTIVATIONS[name], float(checkpoint.extra.get("eps", EPS))


def load_gguf(path, check=None):
    """``--gguf``'s model and tokenizer. ``check(tokenizer, context)``, when given, runs before
    the weights are read (the tokenizer takes seconds, the weights many more), with the context
    the file's header declares (:func:`gguf_context`). A file whose header does not read so is
    read whole first, its reader naming what is wrong with it. An error says ``--gguf PATH`` as
    typed before the reader's own sentence."""
    from ..interop.gguf import gguf_context, gguf_tokenizer, read_llama_gguf

    context = gguf_context(path) if check is not None else None
    if context is not None:
        tokenizer = _gguf_read(gguf_tokenizer, path)
        check(tokenizer, context)
        return _gguf_read(read_llama_gguf, path), tokenizer
    model, tokenizer = _gguf_read(read_llama_gguf, path), _gguf_read(gguf_tokenizer, path)
    if check is not None:
        check(tokenizer, model.context)
    return model, tokenizer


def _gguf_read(read, path):
    """``read(path)``; an error says ``--gguf 'PATH'`` and the reader's reason, without the
    reader's function and argument names (the library's words, not the command's)."""
    try:
        return read(path)
    except (ValueError, TypeError, OSError) as error:
        reason, quoted = re.sub(r"^[\w.]+: argument 'path':? ", "", str(error)), repr(str(path))
        typed = f"--gguf {reason}" if reason.startswith(quoted) else f"--gguf {quoted}: {reason}"
        raise type(error)(typed) from None


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
    return encode_typed(tokenizer, text, option, text, 0, bos=bos)


def encode_typed(tokenizer, piece: str, option: str, typed: str, at: int, *, bos=False):
    """The ids of ``piece``, the part of the option's value ``typed`` that starts at index
    ``at``; an unknown character is named with ``typed`` and its index in it."""
    try:
        return tokenizer.encode(piece, bos=bos)
    except ValueError as error:
        why = re.sub(r"^\S+: argument 'text' ", "", str(error))  # the tokenizer's own argument
        why = re.sub(r"at index (\d+)", lambda m: f"at index {int(m.group(1)) + at}", why)
        raise ValueError(f"{option} {typed[:40]!r} {why}") from None


def encode_masked(tokenizer, text: str, mask: str, option: str = "--prompt") -> list[int]:
    """The ids of ``text`` with every ``mask`` in it the tokenizer's mask token (an ``mlm``
    checkpoint's prompt), each piece between them checked as :func:`encode_option` does."""
    ids, at = [], 0
    for k, piece in enumerate(text.split(mask)):
        if k:
            ids.append(tokenizer.mask_token)
        ids += [int(t) for t in encode_typed(tokenizer, piece, option, text, at)]
        at += len(piece) + len(mask)
    return ids


def check_prompt(tokenizer, prompt: str, name: str = "--prompt") -> None:
    """The prompt encodes with the model's tokenizer (before any long work)."""
    encode_option(tokenizer, prompt, name)
