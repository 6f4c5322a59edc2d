"""What the encoder families share: Algorithm 9's lines 1-9 with BERT's embedding extras.

Algorithm 9 lines 1-3 embed, ``X[:, t] ← W_e[:, x[t]] + W_p[:, t]``; BERT and ALBERT add a
token-type (segment) column ``W_tt[:, s[t]]`` and normalise each embedding column
(``layer_norm(· | γ_emb, β_emb)``) before line 4. Lines 4-8 are the paper's Post-LN layers
(:func:`formal_algorithms.paper.architectures.post_ln_layer`), unchanged.

Arrays are read from checkpoints with Hugging Face's names by :func:`linear`, :func:`norm` and
:func:`heads`: an ``nn.Linear`` weight is ``(d_out, d_in)``, the paper's ``W`` as it is, and the
rows of a query/key/value projection are the heads in order.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np

from ..paper.attention import MHAttentionParams
from ..paper.checks import check_sizes, check_tokens, fail
from ..paper.embeddings import embed
from ..paper.normalisation import layer_norm_columns
from ..paper.parameters import Layer


def embed_with_segments(x, W_e, W_p, W_tt, gamma_emb, beta_emb, eps, token_type_ids=None):
    """Lines 1-3 of Algorithm 9 plus BERT's extras: ``LN(W_e[:, x] + W_p[:, :ℓ] + W_tt[:, s])``."""
    X = embed(x, W_e, W_p)  # lines 1-3
    s = jnp.zeros(x.shape[0], jnp.int32) if token_type_ids is None else jnp.asarray(token_type_ids)
    X = X + W_tt[:, s]  # BERT: the segment embedding of each token
    X = layer_norm_columns(X, gamma_emb, beta_emb, eps)  # BERT: LayerNorm of the embeddings
    return X


def check_segments(algorithm, params, ell: int, token_type_ids) -> None:
    """BERT's embedding extras fit ``W_e`` ``(d, N_V)``: ``W_tt`` ``(d, n_types)``, ``gamma_emb``
    and ``beta_emb`` ``(d,)``; ``token_type_ids`` ``(ℓ,)`` integers in ``[0, n_types)`` when
    concrete (JAX's indexing would clamp an id out of range into another segment's vector)."""
    d = np.shape(params.W_e)[0]
    if np.ndim(params.W_tt) != 2 or np.shape(params.W_tt)[0] != d:
        fail(
            algorithm, "params.W_tt", f"has shape {np.shape(params.W_tt)}, expected ({d}, n_types)"
        )
    for name in ("gamma_emb", "beta_emb"):
        value = getattr(params, name)
        if value is None or np.shape(value) != (d,):
            got = "None" if value is None else f"shape {np.shape(value)}"
            fail(algorithm, f"params.{name}", f"is {got}, expected shape ({d},)")
    if token_type_ids is None:
        return
    s = np.asarray(token_type_ids) if not isinstance(token_type_ids, jax.core.Tracer) else None
    shape = np.shape(token_type_ids)
    if shape != (ell,):
        fail(algorithm, "token_type_ids", f"has shape {shape}, expected ({ell},): one per token")
    if s is not None:
        n_types = np.shape(params.W_tt)[1]
        if not np.issubdtype(s.dtype, np.integer) or s.dtype == bool:
            fail(algorithm, "token_type_ids", f"must be integers, got dtype {s.dtype}", TypeError)
        if s.size and (s.min() < 0 or s.max() >= n_types):
            fail(
                algorithm,
                "token_type_ids",
                f"holds {int(s.min() if s.min() < 0 else s.max())}, "
                f"not a segment: W_tt has {n_types} (0 … {n_types - 1})",
            )


def check_sequence(algorithm, x, N_V, ell_max):
    """A token sequence for an encoder: 1-D integer ids in [0, N_V), at most ℓ_max long."""
    check_tokens(algorithm, "x", x, N_V, ell_max)
    return jnp.asarray(x)


def refuse_unused(caller: str, state: dict, used) -> None:
    """A loader reads every tensor of ``state``: any name it does not use is refused by name."""
    extra = sorted(set(state) - set(used))
    if extra:
        more = f" and {len(extra) - 3} more" if len(extra) > 3 else ""
        fail(caller, "state", f"holds tensors this family does not use: {extra[:3]}{more}")


def family_config(cls):
    """A family's configuration class: a frozen dataclass of hyperparameters that θ carries,
    registered static (no arrays: part of θ's structure, static under jit)."""
    return jax.tree_util.register_static(dataclasses.dataclass(frozen=True)(cls))


def check_config_dict(caller: str, config, needed, model_type: str | None = None) -> None:
    """A transformers configuration's ``to_dict()`` (or config.json): a dict holding ``needed``,
    of the family's ``model_type`` when it names one (another family's is refused by name)."""
    if not isinstance(config, dict):
        fail(caller, "config", f"must be a dict, got {type(config).__name__}", TypeError)
    if model_type is not None and config.get("model_type", model_type) != model_type:
        got = config["model_type"]
        fail(
            caller,
            "config",
            f"is a {got!r} configuration (model_type); this family is {model_type!r}",
        )
    missing = [key for key in needed if key not in config]
    if missing:
        fail(caller, "config", f"lacks {', '.join(missing)}")


def check_config_fields(owner: str, config, *, positive=(), flags=()) -> None:
    """A family configuration's fields: each of ``positive`` a number > 0 (not a bool), each of
    ``flags`` True or False; else refused by name (``owner``: the configuration's class)."""
    for name in positive:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            fail(owner, name, f"must be a number > 0, got {value!r}")
    for name in flags:
        value = getattr(config, name)
        if not isinstance(value, bool):
            fail(owner, name, f"must be True or False, got {value!r}")


def check_head_sizes(caller: str, *, H, d_e, d_attn=None, **sizes) -> int:
    """A family's init sizes: each a positive integer, and H dividing d_e when d_attn is not
    given (each head then has d_e / H rows); returns d_attn."""
    check_sizes(caller, H=H, d_e=d_e, d_attn=d_attn, **sizes)
    if d_attn is None and d_e % H:
        fail(caller, "H", f"= {H} must divide d_e = {d_e} (each head has d_e / H rows)")
    return d_e // H if d_attn is None else d_attn


def check_config(caller: str, config, cls):
    """``config`` is a ``cls`` (the family's configuration class), else refused by name."""
    if not isinstance(config, cls):
        fail(caller, "config", f"must be a {cls.__name__}, got {type(config).__name__}", TypeError)
    return config


class StateDict:
    """Arrays by Hugging Face name, converted to the paper's orientation on request; it records
    the names read, for :meth:`refuse_unused`. ``dtype`` None keeps each array's own."""

    def __init__(self, arrays: dict, where: str, dtype=jnp.float32, argument: str = "state"):
        self.arrays, self.where, self.dtype, self.used = arrays, where, dtype, set()
        self.argument = argument  # the caller's argument that holds the arrays, for errors

    def __call__(self, name, shape=None):
        """The array ``name``; ``shape`` (when given): the shape the configuration implies, else
        refused naming the tensor."""
        if name not in self.arrays:
            fail(self.where, self.argument, f"has no tensor {name!r}")
        self.used.add(name)
        if shape is not None and np.shape(self.arrays[name]) != tuple(shape):
            got = np.shape(self.arrays[name])
            fail(
                self.where,
                self.argument,
                f"tensor {name!r} has shape {got}, expected {tuple(shape)}",
            )
        return jnp.asarray(np.asarray(self.arrays[name]), self.dtype)

    def refuse_unused(self) -> None:
        """Every tensor was read, or the first unread ones are refused by name."""
        refuse_unused(self.where, self.arrays, self.used)

    def attention(self, prefix: str, H: int, out: str = "out_proj") -> MHAttentionParams:
        """Algorithm 5's ``W`` from ``{prefix}q_proj``, ``k_proj``, ``v_proj`` (each split into H
        heads) and the output projection ``{prefix}{out}``, all with biases."""
        qkv = [a for m in "qkv" for a in self.heads(f"{prefix}{m}_proj", H)]
        return MHAttentionParams(*qkv, *self.linear(prefix + out))

    def layers(self, n_layers: int, prefix: str, read_layer) -> tuple:
        """``read_layer(p)`` for each layer's prefix ``p = f"{prefix}{l}."``, l = 0 … L − 1."""
        self.check_layers(n_layers, prefix)
        return tuple(read_layer(f"{prefix}{l}.") for l in range(n_layers))

    def check_layers(self, n_layers: int, prefix: str, argument: str = "n_layers") -> None:
        """The arrays hold layers ``{prefix}0.`` … of exactly ``n_layers``, else ``argument`` is
        refused by name (not a missing tensor of the last layer)."""
        held = {k[len(prefix) :].split(".")[0] for k in self.arrays if k.startswith(prefix)}
        count = len([i for i in held if i.isdigit()])
        if held and count != n_layers:
            fail(
                self.where,
                argument,
                f"= {n_layers}, but {self.argument!r} holds {count} layers "
                f"({prefix}0 … {prefix}{count - 1})",
            )

    def untied(self, prefix):
        """``W_u`` of an output ``nn.Linear`` (``prefix.weight``), or None when absent (tied)."""
        name = prefix + ".weight"
        return self(name) if name in self.arrays else None

    def linear(self, prefix):
        """``(W, b)`` of an ``nn.Linear``: W is ``(d_out, d_in)``, the paper's orientation."""
        return self(prefix + ".weight"), self(prefix + ".bias")

    def norm(self, prefix):
        """``(γ, β)`` of an ``nn.LayerNorm``."""
        return self(prefix + ".weight"), self(prefix + ".bias")

    def heads(self, prefix, H):
        """``(W, b)`` of a query/key/value ``nn.Linear`` split into H heads: ``(H, d, d_in)``."""
        W, b = self.linear(prefix)
        if W.ndim != 2 or W.shape[0] % H or np.shape(b) != W.shape[:1]:
            message = f"tensors {prefix!r} have shapes {W.shape} and {b.shape}: not {H} heads"
            fail(self.where, self.argument, message + " of (d, d_in) with a bias")
        return W.reshape(H, -1, W.shape[1]), b.reshape(H, -1)


# The submodules of one Post-LN layer, as each BERT-style checkpoint names them below the layer's
# prefix: (query/key/value parent, attention output, its norm, MLP in, MLP out, its norm).
BERT_LAYER_NAMES = {
    "bert": ("attention.self", "attention.output.dense", "attention.output.LayerNorm",
             "intermediate.dense", "output.dense", "output.LayerNorm"),
    "albert": ("attention", "attention.dense", "attention.LayerNorm",
               "ffn", "ffn_output", "full_layer_layer_norm"),
}  # fmt: skip


def bert_layer(sd: StateDict, p: str, H: int, family: str) -> Layer:
    """One Post-LN :class:`~formal_algorithms.Layer` from a BERT-style checkpoint: ``p`` is the
    layer's prefix, ``family`` the row of :data:`BERT_LAYER_NAMES` that names its submodules."""
    attention, output, norm1, ffn, ffn_out, norm2 = BERT_LAYER_NAMES[family]
    W = MHAttentionParams(
        *sd.heads(f"{p}{attention}.query", H),
        *sd.heads(f"{p}{attention}.key", H),
        *sd.heads(f"{p}{attention}.value", H),
        *sd.linear(p + output),
    )
    return Layer(
        W, *sd.norm(p + norm1), *sd.norm(p + norm2), *sd.linear(p + ffn), *sd.linear(p + ffn_out)
    )


def installed_file(module: str, name: str, missing: str) -> str:
    """The path of the file ``name`` inside the installed package ``module``, found by its import
    spec and never imported (weights packages run nothing); ``missing`` says how to install it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(missing)
    return os.path.join(list(spec.submodule_search_locations)[0], name)
