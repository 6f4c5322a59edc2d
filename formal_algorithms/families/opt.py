"""The OPT family (Zhang et al. 2022) as Algorithm 10 with documented substitutions.

Algorithm 10, line by line, and what OPT puts there:

- lines 1-3, ``e ← W_e[:, x[t]] + W_p[:, t]``: as printed; transformers stores ``W_p`` with two
  extra leading rows (its positions are offset by 2), and ``W_p[:, t]`` is row ``t + 2``;
- line 8: the MLP with ReLU in place of GELU (the paper's own §6 choice for Algorithm 8);
- Pre-LN (``pre_ln=True``, OPT-125m, 1.3B and up): lines 5-11 as printed;
- Post-LN (``pre_ln=False``, OPT-350m's placement): lines 5-8 are a Post-LN layer (the norm after
  each residual sum, :func:`formal_algorithms.paper.architectures.post_ln_layer`) and line 10 is
  dropped (OPT-350m has no final norm); θ's ``gamma``, ``beta`` are None.

θ is :class:`OPTParams`: Algorithm 10's θ field for field, and its :class:`OPTConfig`
(``pre_ln``, ε). A projection between a narrower embedding and the layers (OPT-350m's
``word_embed_proj_dim``) is not written and is refused by name.

The cached form (:func:`opt_decoder`, Pre-LN and Post-LN) is the paper's layer function with its
attention over a key/value cache (:func:`.decoding.cached_layer`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..paper.architectures import (
    d_transformer_logits,
    post_ln_layer,
    pre_ln_layer,
    unembedding_matrix,
)
from ..paper.attention import unidirectional_mask
from ..paper.checks import fail
from ..paper.embeddings import embed
from ..paper.functions import relu, softmax
from ..paper.parameters import DTransformerParams, Layer
from ..paper.validation import check_inputs, check_params
from ..practice.kv_attention import paper_projection
from .core import StateDict, check_config, check_config_dict, check_config_fields, family_config
from .decoding import CachedDecoder, PaperHead, cached_layer, paper_decoder, paper_form
from .llama import forward_config
from .llama_loading import require

OPT = "opt_logits (Algorithm 10 with OPT's substitutions)"
LOAD = "opt_from_state_dict"
OFFSET = 2  # transformers' OPT reads W_p's column t from row t + 2

#: Algorithm 10's lines that OPT replaces (docs/families.md's atlas); the rest as printed.
ALGORITHM_10 = {
    2: "as printed; transformers' `W_p` has 2 leading rows more (column t is its row t + 2)",
    5: "`pre_ln=False`: Post-LN, the norm after line 6's sum",
    7: "`pre_ln=False`: Post-LN, the norm after line 8's sum",
    8: "ReLU in place of GELU",
    10: "`pre_ln=False`: dropped (no final norm)",
    11: "`W_u = W_eᵀ` when tied",
}


@family_config  # frozen, static under jit: part of θ's structure
class OPTConfig:
    """What θ's forward needs beyond its arrays: the layer-norm placement and ε."""

    pre_ln: bool = True
    eps: float = 1e-5

    def __post_init__(self):
        check_config_fields("OPTConfig", self, positive=("eps",), flags=("pre_ln",))


class OPTParams(NamedTuple):
    """θ of the OPT family: Algorithm 10's fields (``gamma``, ``beta`` None when Post-LN) and its
    :class:`OPTConfig`."""

    W_e: jax.Array  # (d_e, N_V)
    W_p: jax.Array  # (d_e, ℓ_max): transformers' rows 2 … ℓ_max + 1
    layers: tuple[Layer, ...]
    gamma: jax.Array | None  # (d_e,) final norm (line 10), None when Post-LN
    beta: jax.Array | None
    W_u: jax.Array | None  # (N_V, d_e), or None: tied to W_eᵀ
    config: OPTConfig = OPTConfig()


def paper_theta(theta: OPTParams) -> DTransformerParams:
    """Algorithm 10's θ with the same arrays (a Post-LN θ gets γ = 1, β = 0 to pass its checks;
    the Post-LN forward never reads them)."""
    if not isinstance(theta, OPTParams):
        fail(OPT, "theta", f"must be OPTParams, got {type(theta).__name__}", TypeError)
    d_e = np.shape(theta.W_e)[0]
    gamma = jnp.ones(d_e, theta.W_e.dtype) if theta.gamma is None else theta.gamma
    beta = jnp.zeros(d_e, theta.W_e.dtype) if theta.beta is None else theta.beta
    return DTransformerParams(theta.W_e, theta.W_p, theta.layers, gamma, beta, theta.W_u)


def check_final_norm(caller: str, theta: OPTParams, config: OPTConfig) -> None:
    """A Pre-LN θ has line 10's γ and β."""
    if config.pre_ln and (theta.gamma is None or theta.beta is None):
        fail(caller, "theta.gamma", "is None, but a Pre-LN θ has a final norm (line 10)")


def opt_logits(x, theta: OPTParams, *, pre_ln=None, eps=None):
    """Algorithm 10 with OPT's substitutions, without the final softmax: ``(N_V, ℓ)``; θ runs
    with ``θ.config`` (keywords must agree with it)."""
    paper = paper_theta(theta)
    config = forward_config(OPT, theta, OPTConfig(), pre_ln=pre_ln, eps=eps)
    check_final_norm(OPT, theta, config)
    (x,) = check_inputs(paper, OPT, DTransformerParams, x=x)
    if config.pre_ln:
        return d_transformer_logits(x, paper, activation=relu, eps=config.eps)  # the paper's own
    X = embed(x, theta.W_e, theta.W_p)  # lines 1-3
    Mask = unidirectional_mask(X.shape[1])
    for layer in theta.layers:  # line 4
        X = post_ln_layer(X, layer, Mask, relu, config.eps)  # lines 5-8, Post-LN
    return unembedding_matrix(paper) @ X  # line 11 (part: logits); line 10 dropped


def opt(x, theta: OPTParams, **kw):
    """Algorithm 10 with OPT's substitutions: ``P = softmax(W_u X)``."""
    return softmax(opt_logits(x, theta, **kw))  # line 11


# ---------------------------------------------------------------- Algorithm 14, with a cache

OPT_DECODER = "opt_decoder (Algorithm 14 on OPT, cached)"


def _cached_layer(X, positions, layer: Layer, kv, config: OPTConfig):
    """Lines 5-8 of Algorithm 10 with OPT's substitutions over the cache: the paper's uncached
    Pre-LN or Post-LN layer with its attention cached (ReLU in the MLP)."""
    layer_form = pre_ln_layer if config.pre_ln else post_ln_layer
    return cached_layer(layer_form, paper_projection, X, layer, positions, kv, relu, config.eps)


#: OPT's cached form: the paper's embedding (W_p at the true positions) and final norm (dropped
#: when Post-LN: θ's γ is None), the paper's layers.
OPT_FORM = paper_form(_cached_layer)


def opt_decoder(theta: OPTParams) -> CachedDecoder:
    """θ ready for cached decoding (:class:`.decoding.CachedDecoder`: ``generate``, ``stream``,
    ``logits``), Pre-LN or Post-LN as ``θ.config`` says; its context is ``W_p``'s ℓ_max."""
    paper = paper_theta(theta)
    check_params(paper, OPT_DECODER, DTransformerParams)
    check_final_norm(OPT_DECODER, theta, theta.config)
    W_u = unembedding_matrix(paper)
    head = PaperHead(theta.W_e, theta.W_p, theta.gamma, theta.beta, W_u)
    ell_max = np.shape(theta.W_p)[1]
    return paper_decoder(OPT_FORM, theta, head, theta.config, context=ell_max, name=OPT_DECODER)


# ------------------------------------------------------------------------ loading


def opt_config(config: dict) -> dict:
    """The keywords of :func:`opt_from_state_dict` from a transformers ``OPTConfig.to_dict()``
    (θ's :class:`OPTConfig` among them); what is not written is refused by name."""
    caller = "opt_config"
    needed = ("num_attention_heads", "hidden_size", "num_hidden_layers")
    check_config_dict(caller, config, needed, "opt")
    require(caller, config, "activation_function", ("relu",))
    require(caller, config, "enable_bias", (True,))
    require(caller, config, "layer_norm_elementwise_affine", (True,))
    if config.get("word_embed_proj_dim", config["hidden_size"]) != config["hidden_size"]:
        fail(
            caller, "config", "has word_embed_proj_dim ≠ hidden_size: the projection is not written"
        )
    pre_ln = bool(config.get("do_layer_norm_before", True))
    if pre_ln and config.get("_remove_final_layer_norm", False):
        fail(caller, "config", "removes the final norm of a Pre-LN OPT: not written")
    own = OPTConfig(pre_ln=pre_ln, eps=1e-5)  # transformers' nn.LayerNorm default
    return dict(
        n_layers=config["num_hidden_layers"], n_heads=config["num_attention_heads"], config=own
    )


def opt_from_state_dict(
    state: dict, *, n_layers: int, n_heads: int, config: OPTConfig, dtype=None
) -> OPTParams:
    """θ from Hugging Face ``OPTForCausalLM`` names (numpy arrays), carrying ``config``;
    ``lm_head.weight`` absent means tied. Every tensor of ``state`` must be used."""
    check_config(LOAD, config, OPTConfig)
    sd = StateDict(state, LOAD, dtype)

    def read_layer(p):
        W = sd.attention(p + "self_attn.", n_heads)
        norms = (*sd.norm(p + "self_attn_layer_norm"), *sd.norm(p + "final_layer_norm"))
        return Layer(W, *norms, *sd.linear(p + "fc1"), *sd.linear(p + "fc2"))

    layers = sd.layers(n_layers, "model.decoder.layers.", read_layer)
    d = "model.decoder."
    gamma, beta = sd.norm(d + "final_layer_norm") if config.pre_ln else (None, None)
    W_e = sd(d + "embed_tokens.weight").T
    positions = d + "embed_positions.weight"
    n_rows = len(state[positions]) if positions in state else 0
    W_p = sd(positions, (n_rows, W_e.shape[0]))[OFFSET:].T  # rows 0, 1: the offset's
    theta = OPTParams(W_e, W_p, layers, gamma, beta, sd.untied("lm_head"), config)
    sd.refuse_unused()
    return theta
