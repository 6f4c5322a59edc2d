"""Checkpoints: θ, its hyperparameters, the tokenizer and the optimizer state in one safetensors
file. No pickle anywhere: tensors are raw little-endian arrays, everything else is JSON metadata.

- Bit-exact round trips (every leaf's dtype and bytes are kept).
- Atomic writes: the file is written beside its destination, flushed, fsynced and renamed over
  it, so a crash mid-save leaves the previous checkpoint intact.
- Nothing is loaded partially: a truncated or corrupted file (the tensors carry a SHA-256 in the
  metadata), a file of another architecture or other sizes, a missing or unexpected tensor, each
  raises ``ValueError`` naming the file and what is wrong before anything is returned.

Layout: θ's leaves are stored under ``theta`` + their pytree path (``theta.layers[0].W.W_q``), the
optimizer state's under ``opt_state`` + path, extra arrays under ``extra.<name>``.
"""

import hashlib
import json
import os
import pathlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..paper.architectures import (
    DTransformerParams,
    EDTransformerParams,
    ETransformerParams,
    check_params,
    d_transformer_spec,
    e_transformer_spec,
    ed_transformer_spec,
    hyperparameters,
)
from ..paper.initialisation import is_spec

FORMAT = "formal_algorithms.checkpoint/1"
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
    path, theta, *, tokenizer: dict | None = None, opt_state=None, extra: dict | None = None,
    arrays: dict | None = None,
) -> pathlib.Path:  # fmt: skip
    """Write θ (an Algorithm 8, 9 or 10 parameter tree), and optionally the tokenizer (as its
    ``to_dict()``), an optimizer state, JSON-able ``extra`` metadata and named numpy ``arrays``,
    to ``path`` atomically. Returns the path."""
    from safetensors.numpy import save

    name = "save_checkpoint"
    if type(theta) not in _NAME:
        raise TypeError(
            f"{name}: argument 'theta' must be θ of Algorithm 8, 9 or 10, got {type(theta)}"
        )
    check_params(theta, name)
    tensors = {**_flatten("theta", theta)}
    if opt_state is not None:
        tensors.update(_flatten("opt_state", opt_state))
    for key, value in (arrays or {}).items():
        tensors[f"extra.{key}"] = np.ascontiguousarray(np.asarray(value))
    metadata = {
        "format": FORMAT,
        "architecture": _NAME[type(theta)],
        "hyperparameters": json.dumps(hyperparameters(theta)),
        "tokenizer": json.dumps(tokenizer),
        "has_opt_state": json.dumps(opt_state is not None),
        "extra": json.dumps(extra or {}),
        "sha256": _digest(tensors),
    }
    return _atomic_write(pathlib.Path(path), save(tensors, metadata=metadata))


def load_checkpoint(
    path, *, opt_state_template=None, architecture: str | None = None, **expected_hp
) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    ``opt_state_template`` (e.g. ``optimizer.init(theta)``) gives the optimizer state's structure;
    without it the state is not restored. ``architecture`` and keyword hyperparameters (``d_e=64``)
    assert what the file must hold. Every check passes before anything is returned.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load

    path = pathlib.Path(path)
    where = f"load_checkpoint: checkpoint {str(path)!r}"
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{where} does not exist") from None
    try:
        tensors = load(blob)
        metadata = _metadata(blob)
    except (SafetensorError, ValueError, json.JSONDecodeError) as error:
        raise ValueError(f"{where} is truncated or not a safetensors file ({error})") from None
    if metadata.get("format") != FORMAT:
        raise ValueError(
            f"{where} is not a formal_algorithms checkpoint (format {metadata.get('format')!r})"
        )
    if _digest(tensors) != metadata["sha256"]:
        raise ValueError(f"{where} is corrupted: its tensors do not match their SHA-256")
    kind = metadata["architecture"]
    hp = json.loads(metadata["hyperparameters"])
    if architecture is not None and kind != architecture:
        raise ValueError(f"{where} holds a {kind}, expected a {architecture}")
    wrong = {k: (hp.get(k), v) for k, v in expected_hp.items() if hp.get(k) != v}
    if wrong:
        detail = ", ".join(f"{k} = {a} (expected {b})" for k, (a, b) in wrong.items())
        raise ValueError(f"{where} holds a {kind} with {detail}")
    cls, spec_fn = ARCHITECTURES[kind]
    spec = spec_fn(**hp)
    theta, used = _unflatten(where, "theta", spec, tensors, is_leaf=is_spec)
    opt_state = None
    if opt_state_template is not None:
        if not json.loads(metadata["has_opt_state"]):
            raise ValueError(f"{where} has no optimizer state")
        opt_state, used_opt = _unflatten(
            where, "opt_state", opt_state_template, tensors, strict_dtype=True
        )
        used |= used_opt
    else:  # the optimizer state is there but not asked for
        used |= {k for k in tensors if k.startswith("opt_state")}
    arrays = {k.removeprefix("extra."): v for k, v in tensors.items() if k.startswith("extra.")}
    unexpected = set(tensors) - used - {f"extra.{k}" for k in arrays}
    if unexpected:
        raise ValueError(f"{where} has tensors that fit no leaf: {sorted(unexpected)[:3]}")
    return Checkpoint(
        theta, kind, hp, json.loads(metadata["tokenizer"]), opt_state,
        json.loads(metadata["extra"]), arrays,
    )  # fmt: skip


# ------------------------------------------------------------------------------------ helpers


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
        out.append(jnp.asarray(value))
        used.add(key)
    return jax.tree_util.tree_unflatten(tree, out), used


def _digest(tensors: dict) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        value = np.ascontiguousarray(tensors[key])
        h.update(f"{key}|{value.dtype.str}|{value.shape}|".encode())
        h.update(value.tobytes())
    return h.hexdigest()


def _metadata(blob: bytes) -> dict:
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8 : 8 + n])["__metadata__"]


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
