"""The GPT-NeoX family (Black et al. 2022; Pythia, Biderman et al. 2023) as Algorithm 10 with
documented substitutions.

Algorithm 10, line by line, and what GPT-NeoX puts there:

- lines 1-3, ``e ← W_e[:, x[t]] + W_p[:, t]``: no ``W_p``, ``e ← W_e[:, x[t]]`` (rotary instead);
- line 6: Algorithm 5 with the paper's biases, the first ``d_rot`` rows of each head's queries and
  keys rotated after Algorithm 4's lines 1-2 (:mod:`..variants.partial_rope`; Pythia:
  ``d_rot = d_attn / 4``);
- lines 7-8, with ``parallel=True`` (the parallel residual): line 7 normalises X as it was before
  line 6's sum, ``X̃ ← layer_norm(X_{l−1} | γ_l^2, β_l^2)``, so that line 8 is
  ``X ← X_{l−1} + MHAttention(…) + MLP(X̃)``: the two branches read the same X. With
  ``parallel=False`` lines 5-8 are the paper's (:func:`formal_algorithms.architectures`'s
  ``pre_ln_layer`` with the attention above);
- the MLP of line 8 (``W_mlp1``, ``b_mlp1``, exact GELU, ``W_mlp2``, ``b_mlp2``), the layer norms
  with γ and β (lines 5, 7, 10) and line 11 are the paper's; ``W_u`` is untied unless ``None``.

θ is the paper's θ without ``W_p``: :class:`GPTNeoXParams`, whose layers are the paper's
:class:`~formal_algorithms.paper.architectures.Layer`, and which carries what its forward needs
beyond the arrays (:class:`GPTNeoXConfig`: ``d_rot``, RoPE's base, ε, the parallel residual), set
by the loader and the init function. Keywords given to the forward must agree with it.

The cached form (:func:`gpt_neox_decoder`) is :func:`parallel_layer` (or ``pre_ln_layer``) itself
with its attention over a key/value cache (:func:`.decoding.cached_layer`, the projection
:func:`rotary_projection`).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..paper.architectures import mlp, pre_ln_layer
from ..paper.attention import MHAttentionParams, unidirectional_mask
from ..paper.checks import check_tokens, fail
from ..paper.functions import gelu, gelu_tanh, softmax
from ..paper.normalisation import layer_norm_columns
from ..paper.parameters import DTransformerParams, Layer
from ..paper.validation import check_params
from ..practice.kv_attention import project
from ..variants.partial_rope import partial_rope, partial_rope_attention
from .core import (
    StateDict,
    check_config,
    check_config_dict,
    check_config_fields,
    check_head_sizes,
    family_config,
)
from .decoding import CachedDecoder, PaperHead, cached_layer, paper_decoder, paper_form
from .llama import forward_config
from .llama_loading import require

ACTIVATIONS = {"gelu": gelu, "gelu_tanh": gelu_tanh}  # line 8's σ: GPT-NeoX's, Phi's gelu_new
GPT_NEOX = "gpt_neox_logits (Algorithm 10 with GPT-NeoX's substitutions)"
#: Algorithm 10's lines that GPT-NeoX replaces (docs/families.md's atlas); the rest as printed.
ALGORITHM_10 = {
    2: "`e_t ← W_e[:, x[t]]`: no `W_p` (rotary in line 6)",
    6: "the first `d_rot` rows of Q, K rotated ([partial_rope](../formal_algorithms/variants/partial_rope.py))",
    7: "`parallel=True`: of X before line 6's sum, so line 8 adds both branches to the same X",
    11: "`W_u = W_eᵀ` when tied",
}


@family_config  # frozen, static under jit: part of θ's structure
class GPTNeoXConfig:
    """What θ's forward needs beyond its arrays: ``d_rot`` (the rotated rows of each head's
    queries and keys), RoPE's base, the layer norms' ε, the parallel residual, and line 8's
    activation (Phi's θ carries one too)."""

    d_rot: int | None = None  # None: not known (a θ built by hand must be given d_rot)
    rope_base: float = 10000.0
    eps: float = 1e-5
    parallel: bool = True
    activation: str = "gelu"  # line 8's σ: "gelu" (exact), or "gelu_tanh" (Phi's gelu_new)

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            message = f"must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}"
            fail("GPTNeoXConfig", "activation", message)
        d = self.d_rot
        if d is not None and (isinstance(d, bool) or not isinstance(d, int) or d < 0 or d % 2):
            fail("GPTNeoXConfig", "d_rot", f"must be an even integer ≥ 0, got {d!r}")
        check_config_fields(
            "GPTNeoXConfig", self, positive=("rope_base", "eps"), flags=("parallel",)
        )


class GPTNeoXParams(NamedTuple):
    """θ of the GPT-NeoX family: Algorithm 10's θ without ``W_p``, and its
    :class:`GPTNeoXConfig` (None only for a θ built by hand)."""

    W_e: jax.Array  # (d_e, N_V)
    layers: tuple[Layer, ...]
    gamma: jax.Array  # (d_e,) final layer norm (line 10)
    beta: jax.Array  # (d_e,)
    W_u: jax.Array | None  # (N_V, d_e), or None: tied to W_eᵀ
    config: GPTNeoXConfig | None = None


def check_gpt_neox(theta: GPTNeoXParams, algorithm: str = GPT_NEOX) -> int:
    """θ's shapes, checked as the paper's Algorithm 10 θ (with a one-column ``W_p``); returns N_V.
    ``algorithm``: the caller's name in errors (Phi checks its θ through this one)."""
    if not isinstance(theta, GPTNeoXParams):
        fail(algorithm, "theta", f"must be GPTNeoXParams, got {type(theta).__name__}", TypeError)
    d_e = np.shape(theta.W_e)[0]
    W_p = jax.ShapeDtypeStruct((d_e, 1), theta.W_e.dtype)
    paper_theta = DTransformerParams(
        theta.W_e, W_p, theta.layers, theta.gamma, theta.beta, theta.W_u
    )
    check_params(paper_theta, algorithm, DTransformerParams)
    return np.shape(theta.W_e)[1]


def parallel_layer(X, layer: Layer, Mask, activation, eps, *, attention):
    """Lines 5-8 of Algorithm 10 with the parallel residual: both branches read X."""
    X_tilde = layer_norm_columns(X, layer.gamma1, layer.beta1, eps)  # line 5
    A = attention(X_tilde, X_tilde, layer.W, Mask)  # line 6 (part: attention): its branch
    X_tilde = layer_norm_columns(X, layer.gamma2, layer.beta2, eps)  # line 7, of X before line 6
    X = (
        X + A + mlp(X_tilde, layer.W_mlp1, layer.b_mlp1, layer.W_mlp2, layer.b_mlp2, activation)
    )  # line 8, with line 6's sum
    return X


def rotary_columns(x, theta: GPTNeoXParams, N_V, algorithm, config: GPTNeoXConfig):
    """Lines 1-10 of Algorithm 10 with GPT-NeoX's substitutions (and Phi's, on its θ seen as
    GPT-NeoX's) on a checked θ, run with ``config``: X after the final norm, ``(d_e, ℓ)``."""
    check_tokens(algorithm, "x", x, N_V, None)
    x = jnp.asarray(x)
    X = theta.W_e[:, x]  # lines 1-3: e ← W_e[:, x[t]], no W_p (rotary in attention instead)
    Mask = unidirectional_mask(x.shape[0])
    base, d_rot, eps = config.rope_base, config.d_rot, config.eps
    d_head = np.shape(theta.layers[0].W.W_q)[-2] if theta.layers else d_rot
    if d_rot > d_head:
        fail(algorithm, "d_rot", f"= {d_rot} exceeds the {d_head} rows of each head's Q and K")
    attention = functools.partial(partial_rope_attention, base=base, d_rot=d_rot)
    layer_form = parallel_layer if config.parallel else pre_ln_layer
    activation = ACTIVATIONS[config.activation]
    for layer in theta.layers:  # line 4
        X = layer_form(X, layer, Mask, activation, eps, attention=attention)  # lines 5-8
    X = layer_norm_columns(X, theta.gamma, theta.beta, eps)  # line 10
    return X


def gpt_neox_logits(
    x, theta: GPTNeoXParams, *, d_rot=None, rope_base=None, eps=None, parallel=None
):
    """Algorithm 10 with GPT-NeoX's substitutions, without the final softmax: ``(N_V, ℓ)``; θ runs
    with ``θ.config`` (keywords must agree with it)."""
    N_V = check_gpt_neox(theta)
    given = dict(d_rot=d_rot, rope_base=rope_base, eps=eps, parallel=parallel)
    config = forward_config(GPT_NEOX, theta, GPTNeoXConfig(), **given)
    if config.d_rot is None:
        fail(GPT_NEOX, "d_rot", "is not known: θ.config has none; give d_rot=")
    X = rotary_columns(x, theta, N_V, GPT_NEOX, config)
    W_u = theta.W_e.T if theta.W_u is None else theta.W_u
    logits = W_u @ X  # line 11 (part: logits)
    return logits


def gpt_neox(x, theta: GPTNeoXParams, **kw):
    """Algorithm 10 with GPT-NeoX's substitutions: ``P = softmax(W_u X)``."""
    return softmax(gpt_neox_logits(x, theta, **kw))  # line 11


def init_gpt_neox(key, *, N_V, L, H, d_e, d_mlp, tied=False, dtype=jnp.float32, config=None):
    """A random θ (weights ~ N(0, 1/fan_in), biases and embeddings N(0, 0.02²), γ = 1, β = 0)
    carrying ``config`` (default: Pythia's ``d_rot = d_attn / 4``, base 1e4, ε = 1e-5, parallel)."""
    d = check_head_sizes("init_gpt_neox", N_V=N_V, L=L, H=H, d_e=d_e, d_mlp=d_mlp)
    if config is None:
        config = GPTNeoXConfig(d_rot=2 * (d // 8))
    if not isinstance(config, GPTNeoXConfig):
        fail("init_gpt_neox", "config", f"must be a GPTNeoXConfig, got {config!r}", TypeError)
    keys = iter(jax.random.split(key, 12 * L + 2))

    def w(*shape):
        return jax.random.normal(next(keys), shape, dtype) / math.sqrt(shape[-1])

    def b(*shape):
        return 0.02 * jax.random.normal(next(keys), shape, dtype)

    def layer():
        W = MHAttentionParams(
            w(H, d, d_e), b(H, d), w(H, d, d_e), b(H, d), w(H, d, d_e), b(H, d), w(d_e, d_e), b(d_e)
        )
        one, zero = jnp.ones(d_e, dtype), jnp.zeros(d_e, dtype)
        return Layer(W, one, zero, one, zero, w(d_mlp, d_e), b(d_mlp), w(d_e, d_mlp), b(d_e))

    layers = tuple(layer() for _ in range(L))
    W_e = 0.02 * jax.random.normal(next(keys), (d_e, N_V), dtype)
    W_u = None if tied else w(N_V, d_e)
    gamma, beta = jnp.ones(d_e, dtype), jnp.zeros(d_e, dtype)
    return GPTNeoXParams(W_e, layers, gamma, beta, W_u, config)


# ---------------------------------------------------------------- Algorithm 14, with a cache

GPT_NEOX_DECODER = "gpt_neox_decoder (Algorithm 14 on GPT-NeoX, cached)"


def rotary_projection(W: MHAttentionParams, *, base: float, d_rot: int):
    """Algorithm 4's lines 1-3 for every head, then the first ``d_rot`` rows of each query and
    key rotated (:func:`..variants.partial_rope.partial_rope`): the projection of
    :func:`..practice.kv_attention.cached_attention` for the partial-rotary families."""
    rot = jax.vmap(partial_rope, in_axes=(0, None, None, None))  # every head's (d_attn, n) block

    def qkv(X, positions):
        Q, K, V = project(W, X)  # Alg 4 lines 1-3 [h, :, :]
        return rot(Q, positions, base, d_rot), rot(K, positions, base, d_rot), V

    return qkv


def _cached_layer(X, positions, layer: Layer, kv, config: GPTNeoXConfig):
    """Lines 5-8 of Algorithm 10 with GPT-NeoX's substitutions over the cache: the uncached layer
    (:func:`parallel_layer`, or the paper's ``pre_ln_layer``) with its attention cached."""
    layer_form = parallel_layer if config.parallel else pre_ln_layer
    projection = functools.partial(rotary_projection, base=config.rope_base, d_rot=config.d_rot)
    activation = ACTIVATIONS[config.activation]
    return cached_layer(layer_form, projection, X, layer, positions, kv, activation, config.eps)


#: GPT-NeoX's cached form: the paper's embedding (no W_p) and final norm, its own layer.
GPT_NEOX_FORM = paper_form(_cached_layer)


def gpt_neox_decoder(theta: GPTNeoXParams, *, context=None) -> CachedDecoder:
    """θ ready for cached decoding (:class:`.decoding.CachedDecoder`: ``generate``, ``stream``,
    ``logits``), run with ``θ.config``; ``context``: the model's context, or None."""
    check_gpt_neox(theta)
    config = theta.config
    if config is None or config.d_rot is None:
        fail(GPT_NEOX_DECODER, "theta.config", "has no d_rot: give θ a GPTNeoXConfig")
    W_u = theta.W_e.T if theta.W_u is None else theta.W_u
    head = PaperHead(theta.W_e, None, theta.gamma, theta.beta, W_u)
    return paper_decoder(GPT_NEOX_FORM, theta, head, config, context=context, name=GPT_NEOX_DECODER)


# ------------------------------------------------------------------------ loading

LOAD = "gpt_neox_from_state_dict"


def gpt_neox_config(config: dict) -> dict:
    """The keywords of :func:`gpt_neox_from_state_dict` from a transformers ``GPTNeoXConfig``'s
    ``to_dict()`` (θ's :class:`GPTNeoXConfig` among them); what is not written is refused by
    name."""
    caller = "gpt_neox_config"
    needed = ("num_attention_heads", "hidden_size", "num_hidden_layers", "layer_norm_eps")
    check_config_dict(caller, config, needed, "gpt_neox")
    require(caller, config, "hidden_act", ("gelu",))
    require(caller, config, "attention_bias", (True,))
    params = config.get("rope_parameters") or {}
    kind = params.get("rope_type", "default")
    if kind != "default" or config.get("rope_scaling"):
        kind = kind if kind != "default" else config["rope_scaling"].get("type")
        fail(caller, "config", f"asks for RoPE scaling {kind!r}; only unscaled RoPE is written")
    H = config["num_attention_heads"]
    d = config["hidden_size"] // H
    factor = params.get("partial_rotary_factor", config.get("rotary_pct", 0.25))
    if not 0 <= factor <= 1:
        fail(
            caller,
            "config",
            f"has partial_rotary_factor (rotary_pct) = {factor}; it must be in [0, 1]",
        )
    own = GPTNeoXConfig(
        d_rot=int(d * factor),
        rope_base=float(params.get("rope_theta", config.get("rotary_emb_base", 10000.0))),
        eps=float(config["layer_norm_eps"]),
        parallel=bool(config.get("use_parallel_residual", True)),
    )
    return dict(n_layers=config["num_hidden_layers"], n_heads=H, config=own)


def gpt_neox_from_state_dict(
    state: dict, *, n_layers: int, n_heads: int, config: GPTNeoXConfig, dtype=None
) -> GPTNeoXParams:
    """θ from Hugging Face ``GPTNeoXForCausalLM`` names (numpy arrays), carrying ``config``.
    ``query_key_value`` holds, for each head h, its query, key and value rows one after another;
    ``lm_head.weight`` absent means tied. Every tensor of ``state`` must be used."""
    check_config(LOAD, config, GPTNeoXConfig)
    sd = StateDict(state, LOAD, dtype)

    def read_layer(p):
        qkv = sd(p + "attention.query_key_value.weight")
        if qkv.ndim != 2 or qkv.shape[0] % (3 * n_heads):
            fail(
                LOAD,
                "n_heads",
                f"= {n_heads} does not split {p}attention.query_key_value's "
                f"{qkv.shape[:1]} rows into a query, key and value per head",
            )
        W_qkv = qkv.reshape(n_heads, 3, -1, qkv.shape[1])  # head h: [q rows; k rows; v rows]
        b_qkv = sd(p + "attention.query_key_value.bias").reshape(n_heads, 3, -1)
        W_b = [a for i in range(3) for a in (W_qkv[:, i], b_qkv[:, i])]
        W = MHAttentionParams(*W_b, *sd.linear(p + "attention.dense"))
        norms = (*sd.norm(p + "input_layernorm"), *sd.norm(p + "post_attention_layernorm"))
        mlp_ = (*sd.linear(p + "mlp.dense_h_to_4h"), *sd.linear(p + "mlp.dense_4h_to_h"))
        return Layer(W, *norms, *mlp_)

    layers = sd.layers(n_layers, "gpt_neox.layers.", read_layer)
    final = sd.norm("gpt_neox.final_layer_norm")
    W_e = sd("gpt_neox.embed_in.weight").T
    theta = GPTNeoXParams(W_e, layers, *final, sd.untied("lm_head"), config)
    sd.refuse_unused()
    return theta
