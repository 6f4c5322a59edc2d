"""The Llama family's loaders: θ from Hugging Face ``LlamaForCausalLM`` names and the keywords
from a transformers configuration (:func:`llama_config`), and the configuration helpers the other
families' loaders share (:func:`rope_base_of`, :func:`require`). What is not written is refused by
name; every tensor of a state dict is read or refused.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..paper.attention import MHAttentionParams
from ..paper.checks import fail
from .core import refuse_unused
from .llama import LlamaConfig, LlamaLayer, LlamaParams, check_config


def llama_tensor_names(n_layers: int) -> list[str]:
    """The names :func:`llama_from_state_dict` reads (``lm_head.weight`` if untied)."""
    names = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    for l in range(n_layers):
        p = f"model.layers.{l}."
        names += [p + f"self_attn.{m}_proj.weight" for m in "qkvo"]
        names += [p + f"mlp.{m}_proj.weight" for m in ("gate", "up", "down")]
        names += [p + "input_layernorm.weight", p + "post_attention_layernorm.weight"]
    return names


def rope_base_of(caller: str, config: dict) -> float:
    """RoPE's base from a transformers configuration (``config.to_dict()``); any RoPE scaling
    other than none ("default") is refused by name: it is not written here."""
    params = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    kind = params.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
    if kind != "default":
        fail(caller, "config", f"asks for RoPE scaling {kind!r}; only unscaled RoPE is written")
    return float(params.get("rope_theta", config.get("rope_theta", 10000.0)))


def require(caller: str, config: dict, key: str, allowed) -> None:
    """``config[key]`` is one of ``allowed`` (what the family writes), else refused by name."""
    if config.get(key, allowed[0]) not in allowed:
        fail(caller, "config", f"has {key} = {config[key]!r}; this family writes {allowed[0]!r}")


def llama_config(config: dict, caller: str = "llama_config", *, window=None) -> dict:
    """The keywords of :func:`llama_from_state_dict` from a transformers configuration
    (``config.to_dict()``), θ's :class:`LlamaConfig` among them (``window``: a family's sliding
    window); what is not written here is refused by name."""
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
) -> LlamaParams:
    """θ from Hugging Face ``LlamaForCausalLM`` names (arrays as numpy, ``nn.Linear`` weights are
    ``(d_out, d_in)``, the paper's orientation), carrying ``config`` (:func:`llama_config` reads
    it from a transformers configuration). ``lm_head.weight`` absent means tied."""
    check_config(caller, config)

    def get(name):
        if name not in state:
            fail("llama_from_state_dict", "state", f"has no {name!r}")
        a = np.asarray(state[name])
        return jnp.asarray(a if dtype is None else a.astype(dtype))

    def heads(W, n):  # (n · d, d_in) → (n, d, d_in): the rows of head h are block h
        return W.reshape(n, -1, W.shape[-1])

    layers = []
    for l in range(n_layers):
        p = f"model.layers.{l}."
        W = MHAttentionParams(
            heads(get(p + "self_attn.q_proj.weight"), n_heads),
            None,
            heads(get(p + "self_attn.k_proj.weight"), n_kv_heads),
            None,
            heads(get(p + "self_attn.v_proj.weight"), n_kv_heads),
            None,
            get(p + "self_attn.o_proj.weight"),
            None,
        )
        layers.append(
            LlamaLayer(
                W,
                get(p + "input_layernorm.weight"),
                get(p + "post_attention_layernorm.weight"),
                get(p + "mlp.gate_proj.weight"),
                get(p + "mlp.up_proj.weight"),
                get(p + "mlp.down_proj.weight"),
            )
        )
    refuse_unused(caller, state, llama_tensor_names(n_layers))
    W_u = get("lm_head.weight") if "lm_head.weight" in state else None
    E = get("model.embed_tokens.weight").T
    return LlamaParams(E, tuple(layers), get("model.norm.weight"), W_u, config)
