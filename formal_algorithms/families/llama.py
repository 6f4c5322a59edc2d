"""The Llama family (Touvron et al. 2023; SmolLM2, Mistral-style models without sliding windows)
as Algorithm 10 with documented substitutions, and its cached Algorithm 14.

Algorithm 10, line by line, and what Llama puts there (docs/variants.md has the table):

- lines 1-3, ``e ← W_e[:, x[t]] + W_p[:, t]``: no ``W_p``, ``e ← W_e[:, x[t]]`` (RoPE instead);
- line 5, ``X̃ ← layer_norm(X | γ_l^1, β_l^1)``: RMSnorm, ``X̃ ← rms_norm(X | γ_l^1)`` (no β);
- line 6, ``X ← X + MHAttention(X̃, X̃ | W_l, Mask)``: Algorithm 5 with G ≤ H key/value sets
  (:mod:`..variants.grouped_attention`), bias-free projections, and RoPE after Algorithm 4's
  lines 1-2 (:mod:`..variants.rope`);
- line 7: RMSnorm with ``γ_l^2``;
- line 8, the MLP: SwiGLU, ``X ← X + W_down (SiLU(W_gate X̃) ⊙ W_up X̃)`` (:mod:`..variants.gated_mlp`);
- line 10: RMSnorm with ``γ``;
- line 11: unchanged, ``P ← softmax(W_u X)``; ``W_u = None`` ties it to ``W_eᵀ`` as in the library.

The hyperparameters that are not shapes travel with θ, in ``θ.config`` (a :class:`LlamaConfig`:
``rope_base``, RoPE's base, Llama 2: 1e4, SmolLM2: 1e5; ``eps``, RMSnorm's ε inside the square
root, as HF's; ``window``, Mistral's sliding window), set by every loader and init function, so a
loaded model runs with its own settings and never another family's defaults. A keyword given to a
forward must agree with ``θ.config`` (else it is refused by name); only a θ built by hand with
``config=None`` takes the keywords, or the family's defaults.

The cached form (:func:`llama_cached_logits`, :meth:`Decoder.generate`, :meth:`Decoder.stream`)
is the Llama family's :class:`.decoding.CachedForm` (:data:`LLAMA_FORM`, Gemma's substitutions
included as θ's config says) run by :mod:`.decoding`: keys and values of every position are
written into a per-layer cache once (after RoPE, at their true positions) and each step computes
one new column. Decision: the cached layer stacks the rows of ``W_q, W_k, W_v`` (and of
``W_gate, W_up``) into one product each (:class:`FusedLayer`; on CPU each XLA operation has a
fixed cost); the literal :func:`llama_logits` loops over the tuple of layers in Python.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..paper.architectures import unembedding_matrix
from ..paper.attention import MHAttentionParams, unidirectional_mask
from ..paper.checks import check_sizes, check_tokens, fail
from ..paper.functions import gelu_tanh, softmax
from ..paper.normalisation import rms_norm_columns
from ..practice.fast import stack_layers
from ..practice.kv_attention import KV, cached_attention
from ..variants.gated_mlp import gated_mlp, silu
from ..variants.grouped_attention import grouped_attention
from ..variants.rope import affine, rope
from ..variants.sliding_window import sliding_window_mask
from .core import check_config, check_config_fields, check_head_sizes, family_config
from .decoding import (
    CachedDecoder,
    CachedForm,
    DecoderCache,
    cached_block,
    check_start,
    init_decoder_cache,
)

LLAMA = "llama_logits (Algorithm 10 with Llama's substitutions)"
LLAMA_CACHED = "llama_cached_logits"
LLAMA_DECODER = "Decoder (Algorithm 14 on Llama, cached)"
ACTIVATIONS = {"silu": silu, "gelu_tanh": gelu_tanh}  # the gated MLP's (SwiGLU, GeGLU)

#: Algorithm 10's lines that Llama replaces, as docs/families.md's atlas prints them (links are
#: relative to docs/); every other line is as printed.
ALGORITHM_10 = {
    2: "`e_t ← W_e[:, x[t]]`: no `W_p` (RoPE in line 6)",
    5: "`rms_norm(X[:, t] | γ_l^1)` (no β)",
    6: "no biases; RoPE on Q, K ([rope](../formal_algorithms/variants/rope.py)); G ≤ H key/value sets "
    "([grouped_attention](../formal_algorithms/variants/grouped_attention.py))",
    7: "`rms_norm(X[:, t] | γ_l^2)` (no β)",
    8: "`W_down (SiLU(W_gate X̃) ⊙ W_up X̃)`, no biases ([gated_mlp](../formal_algorithms/variants/gated_mlp.py))",
    10: "`rms_norm(X[:, t] | γ)` (no β)",
    11: "`W_u = W_eᵀ` when tied",
}


class LlamaLayer(NamedTuple):
    """Layer l of Algorithm 10 with Llama's substitutions (no β, no biases, a gated MLP)."""

    W: MHAttentionParams  # W_q (H, d_attn, d_e); W_k, W_v (G, ·, d_e); W_o (d_e, H d_mid); b = None
    gamma1: jax.Array  # (d_e,) RMSnorm of line 5
    gamma2: jax.Array  # (d_e,) RMSnorm of line 7
    W_gate: jax.Array  # (d_mlp, d_e)
    W_up: jax.Array  # (d_mlp, d_e)
    W_down: jax.Array  # (d_e, d_mlp)


@family_config  # frozen, static under jit: part of θ's structure
class LlamaConfig:
    """What θ's forward needs beyond its arrays: RoPE's base, RMSnorm's ε, the sliding window
    (None: none; Mistral's w), and Gemma's substitutions: the embedding scaled by √d_e
    (``embed_scale``), RMSnorm's γ read as ``norm_offset + γ`` (Gemma: 1), the gated MLP's
    ``activation`` (``"silu"``, or ``"gelu_tanh"``: GeGLU with tanh GELU)."""

    rope_base: float = 10000.0
    eps: float = 1e-5
    window: int | None = None
    embed_scale: bool = False
    norm_offset: float = 0.0
    activation: str = "silu"

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            fail(
                "LlamaConfig",
                "activation",
                f"must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}",
            )
        check_config_fields(
            "LlamaConfig", self, positive=("rope_base", "eps"), flags=("embed_scale",)
        )
        if self.norm_offset not in (0.0, 1.0):
            fail("LlamaConfig", "norm_offset", f"must be 0 or 1, got {self.norm_offset!r}")
        w = self.window
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
            fail("LlamaConfig", "window", f"must be None or an integer ≥ 1, got {w!r}")


class LlamaParams(NamedTuple):
    """θ of the Llama family: Algorithm 10's θ without ``W_p`` and without any β, and its
    :class:`LlamaConfig` (None only for a θ built by hand)."""

    W_e: jax.Array  # (d_e, N_V)
    layers: tuple[LlamaLayer, ...]
    gamma: jax.Array  # (d_e,) final RMSnorm (line 10)
    W_u: jax.Array | None  # (N_V, d_e), or None: tied to W_eᵀ
    config: LlamaConfig | None = None


def forward_config(caller: str, theta: LlamaParams, defaults: LlamaConfig, **given) -> LlamaConfig:
    """The configuration θ runs with: ``θ.config``, which every keyword given (not None) must
    agree with; for a θ without one, the keywords over the family's ``defaults``."""
    given = {k: v for k, v in given.items() if v is not None}
    if theta.config is None:
        return dataclasses.replace(defaults, **given)
    for name, value in given.items():
        own = getattr(theta.config, name)
        if value != own:
            fail(
                caller,
                name,
                f"= {value!r} contradicts θ's own {name} = {own!r} (theta.config); to run θ "
                "otherwise, give it another config (theta._replace(config=…))",
            )
    return theta.config


def llama_hyperparameters(theta: LlamaParams, caller: str = LLAMA) -> dict:
    """The shape hyperparameters of θ: N_V, d_e, L, H, G, d_attn, d_mid, d_mlp, tied."""
    if not isinstance(theta, LlamaParams):
        fail(caller, "theta", f"must be LlamaParams, got {type(theta).__name__}", TypeError)
    if not theta.layers:
        fail(caller, "theta.layers", "is empty; L must be at least 1")
    for l, layer in enumerate(theta.layers):
        for name in ("W_q", "W_k", "W_v", "W_o"):
            if getattr(layer.W, name) is None:
                fail(caller, f"theta.layers[{l}].W.{name}", "is None; Llama's layer needs it")
        for name in LlamaLayer._fields[1:]:
            if getattr(layer, name) is None:
                fail(caller, f"theta.layers[{l}].{name}", "is None; Llama's layer needs it")
    d_e, N_V = np.shape(theta.W_e)
    W = theta.layers[0].W
    H, d_attn, _ = np.shape(W.W_q)
    G, d_mid = np.shape(W.W_v)[:2]
    hp = dict(
        N_V=N_V,
        d_e=d_e,
        L=len(theta.layers),
        H=H,
        G=G,
        d_attn=d_attn,
        d_mid=d_mid,
        d_mlp=np.shape(theta.layers[0].W_gate)[0],
        tied=theta.W_u is None,
    )
    _check_shapes(theta, hp, caller)
    return hp


def _check_shapes(theta, hp, caller=LLAMA):
    d_e, H, G, d_attn, d_mid, d_mlp = (hp[k] for k in ("d_e", "H", "G", "d_attn", "d_mid", "d_mlp"))
    if G < 1 or H % G:
        fail(
            caller,
            "theta.layers[0].W",
            f"has {H} query heads and {G} key/value sets; G must divide H",
        )
    expected = LlamaLayer(
        MHAttentionParams(
            (H, d_attn, d_e),
            None,
            (G, d_attn, d_e),
            None,
            (G, d_mid, d_e),
            None,
            (d_e, H * d_mid),
            None,
        ),
        (d_e,),
        (d_e,),
        (d_mlp, d_e),
        (d_mlp, d_e),
        (d_e, d_mlp),
    )
    for l, layer in enumerate(theta.layers):
        for (path, shape), (_, leaf) in zip(
            jax.tree_util.tree_leaves_with_path(
                expected,
                is_leaf=lambda s: isinstance(s, tuple) and all(isinstance(i, int) for i in s),
            ),
            jax.tree_util.tree_leaves_with_path(layer),
            strict=False,
        ):
            if np.shape(leaf) != shape:
                name = f"theta.layers[{l}]" + jax.tree_util.keystr(path)
                fail(caller, name, f"has shape {np.shape(leaf)}, expected {shape} for {hp}")
        if any(b is not None for b in (layer.W.b_q, layer.W.b_k, layer.W.b_v, layer.W.b_o)):
            fail(caller, f"theta.layers[{l}].W", "has biases; Llama's projections are bias-free")
    if np.shape(theta.gamma) != (d_e,):
        fail(caller, "theta.gamma", f"has shape {np.shape(theta.gamma)}, expected ({d_e},)")
    if theta.W_u is not None and np.shape(theta.W_u) != (hp["N_V"], d_e):
        fail(caller, "theta.W_u", f"has shape {np.shape(theta.W_u)}, expected ({hp['N_V']}, {d_e})")


# ------------------------------------------------------------------ Algorithm 10, substituted


def llama_layer(X, layer: LlamaLayer, Mask, t, config: LlamaConfig):
    """Lines 5-8 of Algorithm 10 with Llama's substitutions (Gemma's, as ``config`` says);
    ``t``: the columns' positions."""
    o, eps, base, f = (
        config.norm_offset,
        config.eps,
        config.rope_base,
        ACTIVATIONS[config.activation],
    )
    X_tilde = rms_norm_columns(X, o + layer.gamma1, eps)  # line 5: RMSnorm
    # line 6: grouped-query attention with RoPE, bias-free
    X = X + grouped_attention(X_tilde, X_tilde, layer.W, Mask, rope_base=base, t_x=t, t_z=t)
    X_tilde = rms_norm_columns(X, o + layer.gamma2, eps)  # line 7: RMSnorm
    # line 8: SwiGLU (GeGLU with tanh GELU for Gemma)
    X = X + gated_mlp(X_tilde, layer.W_gate, None, layer.W_up, None, layer.W_down, None, f)
    return X


def llama_logits(x, theta: LlamaParams, *, rope_base=None, eps=None):
    """Algorithm 10 with Llama's substitutions, without the final softmax: ``W_u X`` ``(N_V, ℓ)``.

    ``x``: ``(ℓ,)`` token ids. Column t is the logits of ``P̂(x[t+1] | x[:t+1])``. θ runs with
    ``θ.config`` (its window too, if it has one); keywords must agree with it.
    """
    hp = llama_hyperparameters(theta)
    config = forward_config(LLAMA, theta, LlamaConfig(), rope_base=rope_base, eps=eps)
    return rope_decoder_logits(x, theta, hp["N_V"], LLAMA, config)


def scaled_embedding(X, config: LlamaConfig):
    """Gemma's ``e ← √d_e · W_e[:, x[t]]`` when ``config.embed_scale`` (√d_e rounded to float32,
    as transformers keeps it), else X as it is."""
    if not config.embed_scale:
        return X
    return X * jnp.asarray(np.float32(math.sqrt(X.shape[0])), X.dtype)


def rope_decoder_logits(x, theta: LlamaParams, N_V, algorithm, config: LlamaConfig):
    """Algorithm 10 with Llama's substitutions (and a family's: Q/K/V biases, a sliding window)
    on a θ whose shapes the caller has checked, run with ``config``: ``W_u X`` ``(N_V, ℓ)``."""
    window = config.window
    check_tokens(algorithm, "x", x, N_V, None)
    x = jnp.asarray(x)
    # e ← W_e[:, x[t]] (Gemma: · √d_e), no W_p (RoPE in attention instead)
    X = scaled_embedding(theta.W_e[:, x], config)  # lines 1-3
    t = jnp.arange(x.shape[0])
    ell = x.shape[0]
    Mask = unidirectional_mask(ell) if window is None else sliding_window_mask(ell, window)
    for layer in theta.layers:  # line 4
        X = llama_layer(X, layer, Mask, t, config)  # lines 5-8
    X = rms_norm_columns(X, config.norm_offset + theta.gamma, config.eps)  # line 10: RMSnorm
    logits = unembedding_matrix(theta) @ X  # line 11 (part: logits)
    return logits


def llama(x, theta: LlamaParams, *, rope_base=None, eps=None):
    """Algorithm 10 with Llama's substitutions: ``P = softmax(W_u X)``."""
    return softmax(llama_logits(x, theta, rope_base=rope_base, eps=eps))  # line 11


def init_llama(
    key,
    *,
    N_V,
    L,
    H,
    G,
    d_e,
    d_mlp,
    d_attn=None,
    tied=False,
    dtype=jnp.float32,
    config=None,
):
    """A random θ (weights ~ N(0, 1/fan_in), embeddings N(0, 0.02²), γ = 1) carrying
    ``config`` (None: Llama's defaults, ``LlamaConfig()``), for tests."""
    config = LlamaConfig() if config is None else config
    d_attn = check_head_sizes(
        "init_llama", N_V=N_V, L=L, H=H, G=G, d_e=d_e, d_mlp=d_mlp, d_attn=d_attn
    )
    if H % G:
        fail("init_llama", "G", f"= {G} must divide H = {H}")
    keys = iter(jax.random.split(key, 7 * L + 2))

    def w(*shape):
        return jax.random.normal(next(keys), shape, dtype) / math.sqrt(shape[-1])

    def layer():
        W = MHAttentionParams(
            w(H, d_attn, d_e),
            None,
            w(G, d_attn, d_e),
            None,
            w(G, d_attn, d_e),
            None,
            w(d_e, H * d_attn),
            None,
        )
        ones = jnp.ones(d_e, dtype)
        return LlamaLayer(W, ones, ones, w(d_mlp, d_e), w(d_mlp, d_e), w(d_e, d_mlp))

    layers = tuple(layer() for _ in range(L))
    W_e = 0.02 * jax.random.normal(next(keys), (d_e, N_V), dtype)
    W_u = None if tied else w(N_V, d_e)
    return LlamaParams(
        W_e, layers, jnp.ones(d_e, dtype), W_u, check_config("init_llama", config, LlamaConfig)
    )


# ---------------------------------------------------------------- Algorithm 14, with a cache

#: Keys (after RoPE) and values of every layer: ``K[l, g, t]`` is key set g's ``k_t``.
LlamaCache = DecoderCache


def init_llama_cache(theta: LlamaParams, T: int, dtype=None, *, hp=None) -> LlamaCache:
    """An empty cache of T positions (T bounds the prompt plus the generated tokens); ``hp``:
    θ's hyperparameters if the caller has read them (a family's own check)."""
    check_sizes("init_llama_cache", T=T)
    hp = llama_hyperparameters(theta) if hp is None else hp
    dtype = theta.W_e.dtype if dtype is None else dtype
    return init_decoder_cache(hp["L"], hp["G"], hp["d_attn"], hp["d_mid"], T, dtype)


class FusedLayer(NamedTuple):
    """A :class:`LlamaLayer` for the cached forms: the rows of ``W_q, W_k, W_v`` stacked into one
    matrix, and those of ``W_gate, W_up`` into another (fewer, larger products: on CPU each XLA
    operation has a fixed cost). The same numbers, rearranged."""

    W_qkv: jax.Array  # (H d_attn + G d_attn + G d_mid, d_e)
    b_qkv: jax.Array | None  # the biases of lines 1-3 stacked the same way (Qwen2), or None
    gamma1: jax.Array
    W_o: jax.Array  # (d_e, H d_mid)
    gamma2: jax.Array
    W_gu: jax.Array  # (2 d_mlp, d_e)
    W_down: jax.Array


class LlamaHead(NamedTuple):
    """θ's arrays outside the layers, as the cached form reads them: ``E = W_eᵀ`` (N_V, d_e), whose
    row v is ``W_e[:, v]`` (a contiguous read); ``W_u`` is ``E`` itself when tied."""

    E: jax.Array
    gamma: jax.Array
    W_u: jax.Array


def fuse_layer(layer: LlamaLayer) -> FusedLayer:
    """The stacked form of one layer (see :class:`FusedLayer`)."""
    W = layer.W
    d_e = W.W_q.shape[2]
    W_qkv = jnp.concatenate([w.reshape(-1, d_e) for w in (W.W_q, W.W_k, W.W_v)])
    biases = (W.b_q, W.b_k, W.b_v)
    b_qkv = None if W.b_q is None else jnp.concatenate([b.reshape(-1) for b in biases])
    W_gu = jnp.concatenate([layer.W_gate, layer.W_up])
    return FusedLayer(W_qkv, b_qkv, layer.gamma1, W.W_o, layer.gamma2, W_gu, layer.W_down)


def fused_layers(theta: LlamaParams) -> tuple[FusedLayer, ...]:
    """Every layer of θ in its :class:`FusedLayer` form."""
    return tuple(fuse_layer(layer) for layer in theta.layers)


def llama_head(theta: LlamaParams) -> LlamaHead:
    """θ's :class:`LlamaHead` (``W_eᵀ`` materialised once)."""
    E = jnp.asarray(np.asarray(theta.W_e).T)
    return LlamaHead(E, theta.gamma, E if theta.W_u is None else theta.W_u)


def _embed_columns(tokens, positions, head: LlamaHead, config: LlamaConfig):
    """Lines 1-3 for the new columns: ``X[:, t] = W_e[:, x[t]]`` (no W_p; √d_e for Gemma)."""
    return scaled_embedding(head.E[tokens].T, config)


def _fused_layer(X, positions, layer: FusedLayer, kv: KV, config: LlamaConfig):
    """Lines 5-8 of Algorithm 10 with Llama's substitutions (Gemma's, as ``config`` says) for the
    columns X at ``positions``, their keys and values joining the store ``kv``
    (:mod:`..practice.kv_attention`)."""
    G, _, d_attn = kv.K.shape
    d_mid = kv.V.shape[2]
    H = layer.W_o.shape[1] // d_mid
    rot = jax.vmap(rope, in_axes=(0, None, None))  # RoPE for every head's (d_attn, n) block
    o, base = config.norm_offset, config.rope_base

    def qkv(X_tilde, positions):  # Algorithm 4's lines 1-3, every head and set in one product
        QKV = affine(layer.W_qkv, layer.b_qkv, X_tilde)
        Q, K, V = jnp.split(QKV, [H * d_attn, (H + G) * d_attn])
        Q = rot(Q.reshape(H, d_attn, -1), positions, base)  # Alg 4 line 1 [h, :, :], rotated
        return Q, rot(K.reshape(G, d_attn, -1), positions, base), V.reshape(G, d_mid, -1)

    X_tilde = rms_norm_columns(X, o + layer.gamma1, config.eps)  # line 5
    A, kv = cached_attention(qkv, layer.W_o, None, X_tilde, positions, kv, window=config.window)
    X = X + A  # line 6
    X_tilde = rms_norm_columns(X, o + layer.gamma2, config.eps)  # line 7
    GU = layer.W_gu @ X_tilde  # W_gate X̃ and W_up X̃ at once
    d_mlp = GU.shape[0] // 2
    f = ACTIVATIONS[config.activation]
    X = X + layer.W_down @ (f(GU[:d_mlp]) * GU[d_mlp:])  # line 8
    return X, kv


def _final_columns(X, head: LlamaHead, config: LlamaConfig):
    """Lines 10-11 up to the logits: RMSnorm, then ``W_u X``."""
    X = rms_norm_columns(X, config.norm_offset + head.gamma, config.eps)  # line 10
    logits = head.W_u @ X  # line 11 (part: logits)
    return logits


#: The Llama family's cached form (Gemma's, Qwen2's and Mistral's too, as θ's config says).
LLAMA_FORM = CachedForm(_embed_columns, _fused_layer, _final_columns)


def llama_cached_logits(
    tokens, start, theta: LlamaParams, cache: LlamaCache, *, rope_base=None, eps=None
):
    """``W_u X`` for the columns at positions start … start+n−1, given a cache holding positions
    < start; returns ``(logits (N_V, n), new cache)``. Column j equals column start + j of
    :func:`llama_logits` on the whole sequence."""
    hp = llama_hyperparameters(theta)
    tokens = jnp.asarray(tokens)
    check_tokens(LLAMA_CACHED, "tokens", tokens, hp["N_V"], None)
    sizes = (hp["L"], hp["G"], hp["d_attn"], hp["d_mid"])
    check_start(LLAMA_CACHED, start, tokens.shape[0], cache, sizes)
    layers = stack_layers(fused_layers(theta))
    config = forward_config(LLAMA_CACHED, theta, LlamaConfig(), rope_base=rope_base, eps=eps)
    head = llama_head(theta)
    return cached_block(tokens, jnp.asarray(start), layers, head, cache, LLAMA_FORM, config)


class Decoder(CachedDecoder):
    """A loaded θ of the Llama family (Qwen2's, Mistral's, Gemma's) ready for cached decoding
    (:class:`.decoding.CachedDecoder` with :data:`LLAMA_FORM`)."""

    def __init__(
        self,
        theta: LlamaParams,
        *,
        rope_base=None,
        eps=None,
        context=None,
        window=None,
        hyperparameters=llama_hyperparameters,
    ):
        """θ runs with ``θ.config`` (keywords must agree with it; a θ without one takes them over
        Llama's defaults); ``window``: a sliding window of w positions (Mistral);
        ``hyperparameters``: the family's shape check (:func:`.qwen2.qwen2_hyperparameters`
        admits Q/K/V biases)."""
        hp = hyperparameters(theta)
        given = dict(rope_base=rope_base, eps=eps, window=window)
        config = forward_config(LLAMA_DECODER, theta, LlamaConfig(), **given)
        kv_shape = (hp["L"], hp["G"], hp["d_attn"], hp["d_mid"])
        super().__init__(
            LLAMA_FORM,
            fused_layers(theta),
            llama_head(theta),
            config,
            N_V=hp["N_V"],
            kv_shape=kv_shape,
            dtype=theta.W_e.dtype,
            context=context,
            name=LLAMA_DECODER,
        )
