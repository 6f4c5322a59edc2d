"""The Phi family (Microsoft's phi-1, phi-1.5, phi-2; transformers' ``PhiForCausalLM``) as
Algorithm 10 with documented substitutions: GPT-NeoX's parallel block with one shared layer norm.

Algorithm 10, line by line, and what Phi puts there:

- lines 1-3, ``e ← W_e[:, x[t]] + W_p[:, t]``: no ``W_p``, ``e ← W_e[:, x[t]]`` (rotary instead);
- line 5: as printed, ``X̃ ← layer_norm(X | γ_l, β_l)``;
- line 6: Algorithm 5 with the paper's biases (dense ``W_q, W_k, W_v`` with ``b_q, b_k, b_v``,
  ``W_o`` with ``b_o``), the first ``d_rot`` rows of each head's queries and keys rotated after
  Algorithm 4's lines 1-2 (:mod:`..variants.partial_rope`; phi-2: ``d_rot = d_attn / 2``); its
  output is a branch, not yet added to X;
- line 7: dropped: the MLP reads line 5's X̃ (one norm per layer, no ``γ_l^2, β_l^2``);
- line 8: ``X ← X + MHAttention(X̃) + MLP(X̃)``, both branches added to the X the layer received
  (the parallel residual of :func:`.gpt_neox.parallel_layer`), the MLP with GELU's tanh
  approximation (``gelu_new``) in place of the exact GELU;
- line 10: as printed; line 11: ``W_u X + b_u 1ᵀ`` (the unembedding has a bias).

θ is :class:`PhiParams`, whose layers are the paper's
:class:`~formal_algorithms.paper.parameters.Layer` with ``gamma2 = beta2 = None``; its forward *is* GPT-NeoX's (:func:`.gpt_neox.rotary_columns`) on θ seen
as GPT-NeoX's θ (:func:`gpt_neox_view`: each layer's one norm in both of line 5's and line 7's
places, which makes :func:`.gpt_neox.parallel_layer`'s line 7 the same X̃ as line 5's), then line
11 with ``b_u``. θ carries a :class:`.gpt_neox.GPTNeoXConfig` (``d_rot``, RoPE's base, ε,
``parallel=True``, ``activation="gelu_tanh"``). The cached form (:func:`phi_decoder`) is
GPT-NeoX's on the same view. Not written, and refused by name: ``qk_layernorm``, RoPE scaling,
fewer key/value heads than query heads, a head dimension other than ``d_e / H``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from ..paper.checks import fail
from ..paper.functions import softmax
from ..paper.parameters import Layer
from .core import StateDict, check_config, check_config_dict
from .decoding import CachedDecoder, PaperHead, paper_decoder
from .gpt_neox import (
    GPT_NEOX_FORM,
    GPTNeoXConfig,
    GPTNeoXParams,
    check_gpt_neox,
    rotary_columns,
)
from .llama import forward_config
from .llama_loading import require, rope_base_of

PHI = "phi_logits (Algorithm 10 with Phi's substitutions)"
PHI_DECODER = "phi_decoder (Algorithm 14 on Phi, cached)"
LOAD = "phi_from_state_dict"
PHI_DEFAULTS = GPTNeoXConfig(d_rot=None, parallel=True, activation="gelu_tanh")

#: Algorithm 10's lines that Phi replaces (docs/families.md's atlas); the rest as printed.
ALGORITHM_10 = {
    2: "`e_t ← W_e[:, x[t]]`: no `W_p` (rotary in line 6)",
    6: "the first `d_rot` rows of Q, K rotated ([partial_rope](../formal_algorithms/variants/partial_rope.py)); "
    "a branch, added in line 8",
    7: "dropped: line 8's MLP reads line 5's X̃ (one norm per layer)",
    8: "`X ← X + MHAttention(X̃) + MLP(X̃)` (parallel, as GPT-NeoX's), GELU's tanh form",
    11: "`W_u X + b_u 1ᵀ`; `W_u = W_eᵀ` when tied",
}


class PhiParams(NamedTuple):
    """θ of the Phi family: Algorithm 10's θ without ``W_p``, one norm per layer, ``b_u``, and its
    :class:`.gpt_neox.GPTNeoXConfig`."""

    W_e: jax.Array  # (d_e, N_V)
    layers: tuple[Layer, ...]  # the paper's, γ_l^2 and β_l^2 None (line 7 dropped)
    gamma: jax.Array  # (d_e,) final layer norm (line 10)
    beta: jax.Array  # (d_e,)
    W_u: jax.Array | None  # (N_V, d_e), or None: tied to W_eᵀ
    b_u: jax.Array  # (N_V,)
    config: GPTNeoXConfig | None = None


def shared_norm_layer(layer: Layer) -> Layer:
    """A Phi layer (``gamma2``, ``beta2`` None) with its one norm in line 7's place too (the same
    arrays), as GPT-NeoX's parallel layer reads it."""
    if layer.gamma2 is not None or layer.beta2 is not None:
        fail(PHI, "theta.layers", "hold a second norm (gamma2, beta2); Phi has one per layer")
    return layer._replace(gamma2=layer.gamma1, beta2=layer.beta1)


def gpt_neox_view(theta: PhiParams, algorithm: str = PHI) -> GPTNeoXParams:
    """θ seen as GPT-NeoX's (:func:`shared_norm_layer` for every layer), its shapes checked, and
    ``b_u`` ``(N_V,)``; the view carries θ's config."""
    if not isinstance(theta, PhiParams):
        fail(algorithm, "theta", f"must be PhiParams, got {type(theta).__name__}", TypeError)
    layers = tuple(shared_norm_layer(layer) for layer in theta.layers)
    view = GPTNeoXParams(theta.W_e, layers, theta.gamma, theta.beta, theta.W_u, theta.config)
    N_V = check_gpt_neox(view, algorithm)
    if np.shape(theta.b_u) != (N_V,):
        fail(algorithm, "theta.b_u", f"has shape {np.shape(theta.b_u)}, expected ({N_V},)")
    return view


def phi_run_config(caller: str, theta: PhiParams, **given) -> GPTNeoXConfig:
    """The configuration θ runs with (:func:`.llama.forward_config`): parallel, with ``d_rot``."""
    config = forward_config(caller, theta, PHI_DEFAULTS, **given)
    if config.d_rot is None:
        fail(caller, "d_rot", "is not known: θ.config has none; give d_rot=")
    if not config.parallel:
        fail(caller, "theta.config", "has parallel=False; Phi's block is parallel")
    return config


def phi_logits(x, theta: PhiParams, *, d_rot=None, rope_base=None, eps=None):
    """Algorithm 10 with Phi's substitutions, without the final softmax: ``(N_V, ℓ)``; θ runs with
    ``θ.config`` (keywords must agree with it)."""
    view = gpt_neox_view(theta)
    config = phi_run_config(PHI, theta, d_rot=d_rot, rope_base=rope_base, eps=eps)
    X = rotary_columns(x, view, np.shape(theta.W_e)[1], PHI, config)
    W_u = theta.W_e.T if theta.W_u is None else theta.W_u
    logits = W_u @ X + theta.b_u[:, None]  # line 11 (part: logits)
    return logits


def phi(x, theta: PhiParams, **kw):
    """Algorithm 10 with Phi's substitutions: ``P = softmax(W_u X + b_u 1ᵀ)``."""
    return softmax(phi_logits(x, theta, **kw))  # line 11


def phi_decoder(theta: PhiParams, *, context=None) -> CachedDecoder:
    """θ ready for cached decoding (:class:`.decoding.CachedDecoder`: ``generate``, ``stream``,
    ``logits``): GPT-NeoX's cached form on :func:`gpt_neox_view`, with ``b_u``."""
    view = gpt_neox_view(theta, PHI_DECODER)
    config = phi_run_config(PHI_DECODER, theta)
    W_u = theta.W_e.T if theta.W_u is None else theta.W_u
    head = PaperHead(theta.W_e, None, theta.gamma, theta.beta, W_u, theta.b_u)
    return paper_decoder(GPT_NEOX_FORM, view, head, config, context=context, name=PHI_DECODER)


# ------------------------------------------------------------------------ loading


def phi_config(config: dict) -> dict:
    """The keywords of :func:`phi_from_state_dict` from a transformers ``PhiConfig.to_dict()``
    (θ's :class:`.gpt_neox.GPTNeoXConfig` among them); what is not written is refused by name."""
    caller = "phi_config"
    needed = ("num_attention_heads", "hidden_size", "num_hidden_layers", "layer_norm_eps")
    check_config_dict(caller, config, needed, "phi")
    require(caller, config, "hidden_act", ("gelu_new",))
    require(caller, config, "qk_layernorm", (False,))
    H, d_e = config["num_attention_heads"], config["hidden_size"]
    if (config.get("num_key_value_heads") or H) != H:
        fail(
            caller,
            "config",
            f"has num_key_value_heads = {config['num_key_value_heads']} ≠ "
            f"{H} heads; this family writes one key/value set per head",
        )
    if config.get("head_dim") not in (None, d_e // H):
        fail(caller, "config", f"has head_dim = {config['head_dim']}, not hidden_size / heads")
    params = config.get("rope_parameters") or {}
    factor = params.get("partial_rotary_factor", config.get("partial_rotary_factor", 0.5))
    if not 0 <= factor <= 1:
        fail(caller, "config", f"has partial_rotary_factor = {factor}; it must be in [0, 1]")
    own = GPTNeoXConfig(
        d_rot=int(d_e // H * factor),
        rope_base=rope_base_of(caller, config),
        eps=float(config["layer_norm_eps"]),
        parallel=True,
        activation="gelu_tanh",
    )
    return dict(n_layers=config["num_hidden_layers"], n_heads=H, config=own)


def phi_from_state_dict(
    state: dict, *, n_layers: int, n_heads: int, config: GPTNeoXConfig, dtype=None
) -> PhiParams:
    """θ from Hugging Face ``PhiForCausalLM`` names (numpy arrays), carrying ``config``;
    ``lm_head.weight`` absent means tied (``lm_head.bias`` is read either way). Every tensor of
    ``state`` must be used."""
    check_config(LOAD, config, GPTNeoXConfig)
    sd = StateDict(state, LOAD, dtype)

    def read_layer(p):
        W = sd.attention(p + "self_attn.", n_heads, out="dense")
        mlp = (*sd.linear(p + "mlp.fc1"), *sd.linear(p + "mlp.fc2"))
        return Layer(W, *sd.norm(p + "input_layernorm"), None, None, *mlp)

    layers = sd.layers(n_layers, "model.layers.", read_layer)
    W_e = sd("model.embed_tokens.weight").T
    final = sd.norm("model.final_layernorm")
    theta = PhiParams(W_e, layers, *final, sd.untied("lm_head"), sd("lm_head.bias"), config)
    sd.refuse_unused()
    return theta
