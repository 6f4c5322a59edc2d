"""Checkpoints: θ, its hyperparameters, the tokenizer and the optimizer state in one safetensors
file. No pickle anywhere: tensors are raw little-endian arrays, everything else is JSON metadata.

- Bit-exact round trips (every leaf's dtype and bytes are kept).
- Atomic writes: the file is written beside its destination, flushed, fsynced and renamed over
  it, so a crash mid-save leaves the previous checkpoint intact.
- Nothing is loaded partially: a truncated or corrupted file, a file of another architecture or
  other sizes, a missing or unexpected tensor, each raises ``ValueError`` naming the file and what
  is wrong before anything is returned. The SHA-256 in the metadata covers the tensors and every
  other metadata field (tokenizer, hyperparameters, ε, …), so a changed byte anywhere is refused.
- Reproducible bytes: the file is written here, not by safetensors' writer (whose metadata order
  varies between runs): tensors in name order, JSON with sorted keys, so two identical runs write
  identical files and the SHA-256 that ``info`` prints confirms a reproduction. Files of the
  previous format (``/1``, whose digest covers the tensors only) are still read.

Layout: θ's leaves are stored under ``theta`` + their pytree path (``theta.layers[0].W.W_q``), the
optimizer state's under ``opt_state`` + path, extra arrays under ``extra.<name>``.
"""

import hashlib
import json
import os
import pathlib
from typing import Any, NamedTuple

import jax
import ml_dtypes
import numpy as np

from ..paper.checks import fail
from ..paper.initialisation import is_spec
from ..paper.parameters import (
    DTransformerParams,
    EDTransformerParams,
    ETransformerParams,
    d_transformer_spec,
    e_transformer_spec,
    ed_transformer_spec,
)
from ..paper.validation import check_params, hyperparameters

FORMAT = "formal_algorithms.checkpoint/2"
_FORMAT_1 = "formal_algorithms.checkpoint/1"  # read: its SHA-256 covers the tensors only
ARCHITECTURES = {
    "EDTransformer": (EDTransformerParams, ed_transformer_spec),
    "ETransformer": (ETransformerParams, e_transformer_spec),
    "DTransformer": (DTransformerParams, d_transformer_spec),
}
_NAME = {cls: name for name, (cls, _) in ARCHITECTURES.items()}


class Checkpoint(NamedTuple):
    theta: Any
    architecture: str
    hyperparameters: dict
    tokenizer: dict | None
    opt_state: Any
    extra: dict  # JSON metadata
    arrays: dict  # extra arrays (numpy)


def save_checkpoint(
    path,
    theta,
    *,
    tokenizer: dict | None = None,
    opt_state=None,
    extra: dict | None = None,
    arrays: dict | None = None,
) -> pathlib.Path:
    """Write θ (an Algorithm 8, 9 or 10 parameter tree), and optionally the tokenizer (as its
    ``to_dict()``), an optimizer state, JSON-able ``extra`` metadata and named numpy ``arrays``,
    to ``path`` atomically. Returns the path."""
    name = "save_checkpoint"
    path = as_path(name, path)
    if path.is_dir():
        raise IsADirectoryError(
            f"{name}: argument 'path' {str(path)!r} is a directory; give a "
            "file name such as model.safetensors"
        )
    if type(theta) not in _NAME:
        raise TypeError(
            f"{name}: argument 'theta' must be θ of Algorithm 8, 9 or 10, got {type(theta)}"
        )
    check_params(theta, name)
    tensors = {**_flatten("theta", theta)}
    if opt_state is not None:
        tensors.update(_flatten("opt_state", opt_state))
    for key, value in _table(name, "arrays", arrays).items():
        tensors[f"extra.{key}"] = np.ascontiguousarray(np.asarray(value))
    for key, value in tensors.items():
        if value.dtype not in _STORABLE:
            argument = "arrays" if key.startswith("extra.") else key.split(".")[0].split("[")[0]
            raise TypeError(
                f"{name}: argument {argument!r}: {key.removeprefix('extra.')!r} has dtype "
                f"{value.dtype}, which safetensors cannot store (give numeric arrays)"
            )
    if tokenizer is not None:
        _table(name, "tokenizer", tokenizer)
    metadata = {
        "format": FORMAT,
        "architecture": _NAME[type(theta)],
        "hyperparameters": json.dumps(hyperparameters(theta)),
        "tokenizer": _json(name, "tokenizer", tokenizer),
        "has_opt_state": json.dumps(opt_state is not None),
        "extra": _json(name, "extra", _table(name, "extra", extra)),
    }
    metadata["sha256"] = _digest(tensors, metadata)
    return _atomic_write(pathlib.Path(path), _serialise(tensors, metadata))


def _read_verified(where, path: pathlib.Path):
    """``(tensors, metadata)`` of a checkpoint file whose format, digest and architecture field
    are checked: any failure is one error naming the file."""
    from safetensors import SafetensorError

    if path.is_dir():
        raise IsADirectoryError(f"{where} is a directory; give the .safetensors file in it")
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{where} does not exist") from None
    except OSError as error:
        raise OSError(f"{where} cannot be read ({error.strerror or error})") from None
    try:
        tensors = _load_tensors(where, blob)
        header = json.loads(blob[8 : 8 + int.from_bytes(blob[:8], "little")])
    except (SafetensorError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{where} is truncated or not a safetensors file ({error})") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or metadata.get("format") not in (FORMAT, _FORMAT_1):
        found = "no metadata" if not metadata else f"format {metadata.get('format')!r}"
        raise ValueError(
            f"{where} is a safetensors file but not a formal_algorithms checkpoint ({found}; "
            f"written by another tool?); expected format {FORMAT!r}"
        )
    covered = {k: v for k, v in metadata.items() if k != "sha256"}
    if metadata["format"] == _FORMAT_1:
        covered = None  # the old format's digest covers the tensors only
    if _digest(tensors, covered) != _field(where, metadata, "sha256", json_value=False):
        raise ValueError(
            f"{where} is corrupted: its tensors and metadata do not match their SHA-256 (a byte "
            f"changed after it was written)"
        )
    kind = _field(where, metadata, "architecture", json_value=False)
    if kind not in ARCHITECTURES:
        raise ValueError(
            f"{where}: metadata field 'architecture' is {kind!r}, expected one of "
            f"{sorted(ARCHITECTURES)}"
        )
    return tensors, metadata


def load_checkpoint(
    path, *, opt_state_template=None, architecture: str | None = None, **expected_hp
) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    ``opt_state_template`` (e.g. ``optimizer.init(theta)``) gives the optimizer state's structure;
    without it the state is not restored; a template whose leaves are not the stored state's (by
    name, shape and dtype: another optimizer) is refused naming ``opt_state_template``.
    ``architecture`` (one of :data:`ARCHITECTURES`' names: ``"DTransformer"``, ``"ETransformer"``,
    ``"EDTransformer"``) and keyword hyperparameters (``d_e=64``) assert what the file must hold.
    Every check passes before anything is returned.
    """
    _check_architecture(architecture)
    path = as_path("load_checkpoint", path)
    file = path_argument(path)
    where = f"load_checkpoint: {file}"
    tensors, metadata = _read_verified(where, pathlib.Path(path))
    kind = metadata["architecture"]
    hp = _field(where, metadata, "hyperparameters")
    _check_expected(file, kind, hp, architecture, expected_hp)
    cls, spec_fn = ARCHITECTURES[kind]
    try:
        spec = spec_fn(**hp)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{where}: metadata field 'hyperparameters' does not describe a {kind} ({error})"
        ) from None
    theta, used = _unflatten(where, "theta", spec, tensors, is_leaf=is_spec)
    opt_state = None
    if opt_state_template is not None:
        if not _field(where, metadata, "has_opt_state"):
            raise ValueError(f"{where} has no optimizer state")
        opt_state, used_opt = _unflatten(
            _check_template(where, opt_state_template, tensors),
            "opt_state",
            opt_state_template,
            tensors,
            strict_dtype=True,
        )
        used |= used_opt
    else:  # the optimizer state is there but not asked for
        used |= {k for k in tensors if k.startswith("opt_state")}
    arrays = {k.removeprefix("extra."): v for k, v in tensors.items() if k.startswith("extra.")}
    unexpected = set(tensors) - used - {f"extra.{k}" for k in arrays}
    if unexpected:
        raise ValueError(f"{where} has tensors that fit no leaf: {sorted(unexpected)[:3]}")
    return Checkpoint(
        theta,
        kind,
        hp,
        _field(where, metadata, "tokenizer"),
        opt_state,
        _extra(where, metadata),
        arrays,
    )


# ------------------------------------------------------------------------------------ helpers


def _check_architecture(architecture) -> None:
    """``load_checkpoint``'s ``architecture``: ``None`` or one of :data:`ARCHITECTURES`' names,
    checked before the file is read."""
    if architecture is None or (isinstance(architecture, str) and architecture in ARCHITECTURES):
        return
    names = ", ".join(repr(a) for a in sorted(ARCHITECTURES))
    if isinstance(architecture, str):
        raise ValueError(
            f"load_checkpoint: argument 'architecture' = {architecture!r:.80} is not an "
            f"architecture; give one of {names} or None"
        )
    raise TypeError(
        f"load_checkpoint: argument 'architecture' must be an architecture's name ({names}) "
        f"or None, got {type(architecture).__name__} {architecture!r:.80}"
    )


def _check_expected(file, kind, hp, architecture, expected_hp) -> None:
    """What ``load_checkpoint``'s caller asserts the file holds: its ``architecture`` and the
    hyperparameters ``expected_hp``."""
    if architecture is not None and kind != architecture:
        raise ValueError(
            f"load_checkpoint: argument 'architecture' = {architecture!r} does not match: "
            f"{file} holds a {kind}, expected a {architecture}"
        )
    where = f"load_checkpoint: {file}"
    for k in expected_hp:
        if k not in hp:
            raise TypeError(f"{where}: argument {k!r} is not a hyperparameter of its {kind} "
                            f"({', '.join(sorted(hp))})")  # fmt: skip
    wrong = {k: (hp.get(k), v) for k, v in expected_hp.items() if hp.get(k) != v}
    if wrong:
        detail = ", ".join(f"{k} = {a} (expected {b})" for k, (a, b) in wrong.items())
        raise ValueError(f"{where} holds a {kind} with {detail}")


def path_argument(path) -> str:
    """How ``load_checkpoint``'s messages name the file: ``argument 'path' = 'PATH'`` (the command
    line puts the option as typed in its place)."""
    return f"argument 'path' = {str(pathlib.Path(path))!r}"


def as_path(where, path) -> pathlib.Path:
    """A file name (``str`` or ``os.PathLike``) as a path; anything else refused by name."""
    if not isinstance(path, (str, os.PathLike)):
        got = f"{type(path).__name__} {path!r:.60}"
        fail(where, "path", f"must be a file name (str or pathlib.Path), got {got}", TypeError)
    return pathlib.Path(path)


def _flatten(prefix, tree) -> dict:
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        array = np.asarray(leaf)
        if array.dtype == object:
            raise TypeError(
                f"save_checkpoint: leaf {prefix}{jax.tree_util.keystr(path)} is not an array"
            )
        out[prefix + jax.tree_util.keystr(path)] = np.ascontiguousarray(array)
    return out


def _unflatten(where, prefix, template, tensors, *, is_leaf=None, strict_dtype=False):
    leaves, tree = jax.tree_util.tree_flatten_with_path(template, is_leaf=is_leaf)
    out, used = [], set()
    for path, spec in leaves:
        key = prefix + jax.tree_util.keystr(path)
        if key not in tensors:
            raise ValueError(f"{where} is missing tensor {key!r}")
        value = tensors[key]
        shape = tuple(spec.shape)
        if shape == () and value.shape == (1,):  # safetensors reads a 0-d tensor back as (1,)
            value = value.reshape(())
        if value.shape != shape:
            raise ValueError(f"{where}: tensor {key!r} has shape {value.shape}, expected {shape}")
        if strict_dtype and value.dtype != np.dtype(spec.dtype):
            raise ValueError(
                f"{where}: tensor {key!r} has dtype {value.dtype}, expected {spec.dtype}"
            )
        out.append(jax.device_put(value))  # jnp.asarray would compile a copy per shape
        used.add(key)
    return jax.tree_util.tree_unflatten(tree, out), used


def _check_template(where, template, tensors) -> str:
    """The leaves of ``opt_state_template`` are the stored optimizer state's, by name; returns
    the ``where`` of the template's shape and dtype errors (the template is blamed, the file's
    digest is verified)."""
    file = where.split(" = ", 1)[1]  # the file's name, as load_checkpoint's messages give it
    blame = (
        "load_checkpoint: argument 'opt_state_template' does not fit the optimizer state in " + file
    )
    paths = jax.tree_util.tree_flatten_with_path(template)[0]
    wanted = {"opt_state" + jax.tree_util.keystr(path) for path, _ in paths}
    stored = {k for k in tensors if k.startswith("opt_state")}
    if wanted != stored:
        raise ValueError(
            f"{blame}: its leaves {sorted(wanted)[:3]} (of {len(wanted)}) are not the stored "
            f"optimizer state's {sorted(stored)[:3]} (of {len(stored)}); build it with the "
            f"optimizer the run used (optimizer.init(theta))"
        )
    return blame


def _digest(tensors: dict, metadata: dict | None) -> str:
    """SHA-256 of the tensors (name, dtype, shape, bytes, in name order) and of the metadata
    fields (name and value, in name order; ``None``: the tensors only, the format /1 digest)."""
    h = hashlib.sha256()
    for key in sorted(tensors):
        value = np.ascontiguousarray(tensors[key])
        h.update(f"{key}|{value.dtype.str}|{value.shape}|".encode())
        h.update(value.tobytes())
    for key in sorted(metadata or {}):
        h.update(f"{key}={metadata[key]}\n".encode())
    return h.hexdigest()


def _serialise(tensors: dict, metadata: dict) -> bytes:
    """The safetensors bytes of ``tensors`` and ``metadata``, the same for the same input: the
    header (8-byte little-endian length, then JSON with sorted keys, padded with spaces to a
    multiple of 8) and the tensors' little-endian bytes in name order."""
    header, chunks, offset = {"__metadata__": metadata}, [], 0
    names = {np.dtype(t): n for n, t in _DTYPES.items()}
    for key in sorted(tensors):
        value = np.ascontiguousarray(tensors[key])
        data = value.astype(value.dtype.newbyteorder("<"), copy=False).tobytes()
        header[key] = {
            "dtype": names[value.dtype], "shape": list(value.shape),
            "data_offsets": [offset, offset + len(data)],
        }  # fmt: skip
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)


# safetensors' names of the dtypes it stores; numpy has no bfloat16 or float8, ml_dtypes (a
# dependency of JAX) has them, so that every dtype save_checkpoint writes is read back bit-exact.
_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "F8_E4M3": ml_dtypes.float8_e4m3fn, "F8_E5M2": ml_dtypes.float8_e5m2,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8,
    "BOOL": np.bool_, "C64": np.complex64,
}  # fmt: skip
_STORABLE = {np.dtype(t) for t in _DTYPES.values()}


def _load_tensors(where, blob: bytes) -> dict:
    """The tensors of a safetensors blob as numpy arrays, every dtype of :data:`_DTYPES`."""
    from safetensors import deserialize

    out = {}
    for name, view in deserialize(blob):
        dtype = _DTYPES.get(view["dtype"])
        if dtype is None:
            raise ValueError(f"tensor {name!r} has dtype {view['dtype']}, which is not read here")
        array = np.frombuffer(bytes(view["data"]), np.dtype(dtype).newbyteorder("<"))
        out[name] = array.astype(dtype, copy=False).reshape(view["shape"])
    return out


def _table(name, argument, value) -> dict:
    """``value`` is a table (``None``: empty): ``extra`` and ``tokenizer`` so that readers can
    look fields up, ``arrays`` so that each array has a name."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(
            f"{name}: argument {argument!r} must be a dict or None, got {type(value).__name__} "
            f"{value!r:.60}"
        )
    return value


def _json(name, argument, value) -> str:
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name}: argument {argument!r} must be JSON-able ({error})") from None


def _extra(where, metadata: dict) -> dict:
    extra = _field(where, metadata, "extra")
    if not isinstance(extra, dict):
        raise ValueError(
            f"{where}: metadata field 'extra' must be a JSON object, got "
            f"{type(extra).__name__}; the file is damaged"
        )
    return extra


def _field(where, metadata: dict, name: str, *, json_value=True):
    """Metadata field ``name`` (decoded from JSON unless ``json_value=False``), or a ValueError
    naming the file and the field."""
    if name not in metadata:
        raise ValueError(f"{where}: metadata has no field {name!r}; the file is damaged")
    if not json_value:
        return metadata[name]
    try:
        return json.loads(metadata[name])
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{where}: metadata field {name!r} is not valid JSON ({error.msg} at character "
            f"{error.pos}); the file is damaged"
        ) from None


def _atomic_write(path: pathlib.Path, data: bytes) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return path
