"""The Llama family's loaders: θ from Hugging Face ``LlamaForCausalLM`` names and the keywords
from a transformers configuration (:func:`llama_config`), and the configuration helpers the other
families' loaders share (:func:`rope_base_of`, :func:`require`). What is not written is refused by
name; every tensor of a state dict is read or refused.
"""

from __future__ import annotations

import numpy as np

from ..paper.attention import MHAttentionParams
from ..paper.checks import check_sizes, fail
from .core import StateDict, check_config, check_config_dict
from .llama import LlamaConfig, LlamaLayer, LlamaParams


def rope_base_of(caller: str, config: dict) -> float:
    """RoPE's base from a transformers configuration (``config.to_dict()``); any RoPE scaling
    other than none ("default") is refused by name: it is not written here."""
    params = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    for written in (params.get("rope_type"), scaling.get("rope_type"), scaling.get("type")):
        if written not in (None, "default"):
            message = f"asks for RoPE scaling {written!r}; only unscaled RoPE is written"
            fail(caller, "config", message)
    return float(params.get("rope_theta", config.get("rope_theta", 10000.0)))


def require(caller: str, config: dict, key: str, allowed) -> None:
    """``config[key]`` is one of ``allowed`` (what the family writes), else refused by name."""
    if config.get(key, allowed[0]) not in allowed:
        fail(caller, "config", f"has {key} = {config[key]!r}; this family writes {allowed[0]!r}")


def llama_config(
    config: dict, caller: str = "llama_config", *, window=None, model_type="llama"
) -> dict:
    """The keywords of :func:`llama_from_state_dict` from a transformers configuration
    (``config.to_dict()``), θ's :class:`LlamaConfig` among them (``window``: a family's sliding
    window); what is not written here is refused by name."""
    needed = ("num_attention_heads", "hidden_size", "rms_norm_eps", "num_hidden_layers")
    check_config_dict(caller, config, needed, model_type)
    require(caller, config, "hidden_act", ("silu",))
    H = config["num_attention_heads"]
    if config.get("head_dim") not in (None, config["hidden_size"] // H):
        fail(caller, "config", f"has head_dim = {config['head_dim']}, not hidden_size / heads")
    own = LlamaConfig(rope_base_of(caller, config), float(config["rms_norm_eps"]), window)
    n_kv = config.get("num_key_value_heads") or H
    return dict(n_layers=config["num_hidden_layers"], n_heads=H, n_kv_heads=n_kv, config=own)


def llama_from_state_dict(
    state: dict,
    *,
    n_layers: int,
    n_heads: int,
    n_kv_heads: int,
    config: LlamaConfig,
    dtype=None,
    caller="llama_from_state_dict",
    biases: bool = False,
) -> LlamaParams:
    """θ from Hugging Face ``LlamaForCausalLM`` names (arrays as numpy, ``nn.Linear`` weights are
    ``(d_out, d_in)``, the paper's orientation), carrying ``config`` (:func:`llama_config` reads
    it from a transformers configuration). ``lm_head.weight`` absent means tied. ``biases``: the
    ``q_proj, k_proj, v_proj`` biases are read too (Qwen2's ``b_q, b_k, b_v``). Every tensor of
    ``state`` is read or refused by name."""
    check_config(caller, config, LlamaConfig)
    check_sizes(caller, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv_heads)
    if n_heads % n_kv_heads:
        fail(caller, "n_kv_heads", f"= {n_kv_heads} must divide n_heads = {n_heads}")
    sd = StateDict(state, caller, dtype)
    sd.check_layers(n_layers, "model.layers.")
    N_V, d_e = _shape(sd, "model.embed_tokens.weight", 2)
    d_attn = _shape(sd, "model.layers.0.self_attn.q_proj.weight", 2)[0] // n_heads
    d_mlp = _shape(sd, "model.layers.0.mlp.gate_proj.weight", 2)[0]

    def heads(name, n):  # (n · d, d_in) → (n, d, d_in): the rows of head h are block h
        W = sd(name + ".weight", (n * d_attn, d_e))
        b = sd(name + ".bias", (n * d_attn,)).reshape(n, -1) if biases else None
        return W.reshape(n, -1, W.shape[-1]), b

    layers = []
    for l in range(n_layers):
        p = f"model.layers.{l}."
        W = MHAttentionParams(
            *heads(p + "self_attn.q_proj", n_heads),
            *heads(p + "self_attn.k_proj", n_kv_heads),
            *heads(p + "self_attn.v_proj", n_kv_heads),
            sd(p + "self_attn.o_proj.weight", (d_e, n_heads * d_attn)),
            None,
        )
        mlp = [sd(p + f"mlp.{m}_proj.weight", (d_mlp, d_e)) for m in ("gate", "up")]
        mlp.append(sd(p + "mlp.down_proj.weight", (d_e, d_mlp)))
        norms = [sd(p + f"{m}_layernorm.weight", (d_e,)) for m in ("input", "post_attention")]
        layers.append(LlamaLayer(W, *norms, *mlp))
    E = sd("model.embed_tokens.weight").T
    W_u = sd("lm_head.weight", (N_V, d_e)) if "lm_head.weight" in state else None
    theta = LlamaParams(E, tuple(layers), sd("model.norm.weight", (d_e,)), W_u, config)
    sd.refuse_unused()
    return theta


def _shape(sd: StateDict, name: str, ndim: int) -> tuple:
    """The shape of tensor ``name`` (which must exist and have ``ndim`` axes), without reading it."""
    if name not in sd.arrays:
        fail(sd.where, sd.argument, f"has no tensor {name!r}")
    shape = np.shape(sd.arrays[name])
    if len(shape) != ndim:
        fail(sd.where, sd.argument, f"tensor {name!r} has shape {shape}, expected {ndim} axes")
    return shape


def family_loader(caller: str, model: str, *, biases: bool = False):
    """The loader of a family whose checkpoint has Llama's names (``model``: its transformers
    class): :func:`llama_from_state_dict` under the family's name, with ``biases`` as it has."""

    def load(state: dict, *, config: LlamaConfig, dtype=None, **shapes) -> LlamaParams:
        """``shapes``: ``n_layers``, ``n_heads``, ``n_kv_heads`` (:func:`llama_config`'s)."""
        return llama_from_state_dict(
            state, **shapes, config=config, dtype=dtype, caller=caller, biases=biases
        )

    load.__name__ = load.__qualname__ = caller
    extra = " and the biases of ``q_proj, k_proj, v_proj``" if biases else ""
    load.__doc__ = (
        f"θ from Hugging Face ``{model}`` names: Llama's (:func:`llama_from_state_dict`){extra}; "
        "every tensor of ``state`` is used or refused by name; ``lm_head.weight`` absent: tied."
    )
    return load
