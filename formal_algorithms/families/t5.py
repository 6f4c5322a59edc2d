"""The T5 family (Raffel et al. 2020; T5 v1.1, Flan-T5) as Algorithm 8 with documented line
substitutions, and Algorithm 15's greedy form with the encoder run once and the decoder cached.

Algorithm 8, line by line, and what T5 puts there (:data:`ALGORITHM_8`):

- lines 2 and 11, ``e ← W_e[:, z[t]] + W_p[:, t]``: no ``W_p``, ``e ← W_e[:, z[t]]``; positions
  enter as T5's relative position bias (:mod:`..variants.relative_bias`);
- lines 5, 14, 16, ``MHAttention``: no biases, no ``1/√d_attn``; in the self-attentions (5, 14) head
  h adds ``R[h, bucket(t_z − t_x)]`` to its scores, bidirectional buckets in the encoder and
  unidirectional ones in the decoder, one ``R`` per stack (T5's first layer's, used by all);
  cross-attention (16) has no bias; the head dimension ``d_attn`` (T5's ``d_kv``) is its own;
- lines 6, 8, 15, 17, 19, ``layer_norm``: Pre-LN: each norm normalises the input of the residual
  branch that follows it, not the sum; and it is an RMS norm without the mean and without β,
  ``X̃ ← rms_norm(X | γ)``;
- lines 7 and 18, the MLP: no biases; T5 v1.1's ``feed_forward_proj = "gated-gelu"`` is a GeGLU
  with tanh GELU, ``W_mlp2 (GELU_tanh(W_mlp1 X̃) ⊙ W_up X̃)`` (:mod:`..variants.gated_mlp`), the
  original T5's ``"relu"`` the paper's ReLU MLP without biases;
- lines 9 and 20, the end of each stack: a final ``rms_norm(· | γ_enc)`` (``γ_dec``);
- line 21: ``W_u = W_eᵀ`` when tied; the original T5 scales ``X`` by ``d_e^{−1/2}`` before ``W_u``
  (``output_scale``, transformers' ``scale_decoder_outputs``).

θ is :class:`T5Params`, carrying its :class:`T5Config` (ε, the buckets, the MLP, the scale): a
loaded θ runs with its own settings. Shapes (d_e, H, d_attn, d_mlp, L_enc, L_dec) are read off
θ's arrays, as everywhere in the library.

The cached greedy decoder (:func:`t5_decoder`, :func:`t5_generate`): z is encoded once, the
cross-attention keys and values of ``Z`` are computed once per decoder layer
(:func:`..practice.cache.ed_cross_cache`), and the decoder runs as a
:class:`.decoding.CachedDecoder` whose layers carry those keys and values; each step computes one
new column, its self-attention keys and values written into the store
(:mod:`..practice.kv_attention`). Decoding starts from ``decoder_start_token_id`` (0 for T5).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..paper.architectures import unembedding_matrix
from ..paper.attention import MHAttentionParams, unidirectional_mask
from ..paper.checks import check_count, check_index, check_sizes, check_tokens, concrete, fail
from ..paper.functions import gelu_tanh, relu, softmax
from ..paper.normalisation import rms_norm_columns
from ..practice.cache import ed_cross_cache
from ..practice.kv_attention import KV, heads_affine, output, position_mask, project, write
from ..variants.gated_mlp import gated_mlp
from ..variants.relative_bias import (
    biased_attend,
    check_buckets,
    relative_bias,
    relative_mh_attention,
)
from .core import StateDict, check_config, check_config_dict, check_config_fields, family_config
from .decoding import CachedDecoder, CachedForm

T5 = "t5_logits (Algorithm 8 with T5's substitutions)"
T5_DECODER = "t5_decoder (Algorithm 15 on T5, cached)"
T5_GENERATE = "t5_generate (Algorithm 15 on T5, greedy)"
LOAD = "t5_from_state_dict"
#: transformers' ``feed_forward_proj`` → (activation, gated) as written here
FEED_FORWARD = {"gated-gelu": (gelu_tanh, True), "relu": (relu, False)}

#: Algorithm 8's lines that T5 replaces (docs/families.md's atlas); the rest as printed.
ALGORITHM_8 = {
    2: "`e_t ← W_e[:, z[t]]`: no `W_p` (relative position bias in line 5)",
    5: "Pre-LN: `Z + MHAttention(rms_norm(Z | γ_l^1))`; no biases, no `1/√d_attn`; scores plus "
    "`R_enc[h, bucket(t_z − t_x)]`, bidirectional "
    "([relative_bias](../formal_algorithms/variants/relative_bias.py)); `d_attn` its own",
    6: "moved before line 5 (Pre-LN); `rms_norm(· | γ_l^1)`: no mean, no β",
    7: "Pre-LN: `Z + MLP(rms_norm(Z | γ_l^2))`, no biases; v1.1: `W_mlp2 (GELU_tanh(W_mlp1 Z̃) ⊙ "
    "W_up Z̃)` ([gated_mlp](../formal_algorithms/variants/gated_mlp.py)); original: ReLU",
    8: "moved before line 7 (Pre-LN); `rms_norm(· | γ_l^2)`",
    9: "`end`, then `Z ← rms_norm(Z | γ_enc)`",
    11: "`e_t ← W_e[:, x[t]]`: no `W_p` (relative position bias in line 14)",
    14: "Pre-LN: `X + MHAttention(rms_norm(X | γ_l^3))`; no biases, no `1/√d_attn`; scores plus "
    "`R_dec[h, bucket(t_z − t_x)]`, unidirectional",
    15: "moved before line 14 (Pre-LN); `rms_norm(· | γ_l^3)`",
    16: "Pre-LN: `X + MHAttention(rms_norm(X | γ_l^4), Z)`; no biases, no `1/√d_attn`, no "
    "position bias",
    17: "moved before line 16 (Pre-LN); `rms_norm(· | γ_l^4)`",
    18: "as line 7, with `W_mlp3`, `W_mlp4` (and `W_up`)",
    19: "moved before line 18 (Pre-LN); `rms_norm(· | γ_l^5)`",
    20: "`end`, then `X ← rms_norm(X | γ_dec)`",
    21: "`W_u = W_eᵀ` when tied; original T5: `softmax(W_u X / √d_e)`",
}


@family_config  # frozen, static under jit: part of θ's structure
class T5Config:
    """What θ's forward needs beyond its arrays: the RMS norms' ε, the relative buckets
    (``n_buckets``, ``max_distance``), the MLP (``feed_forward_proj``: ``"gated-gelu"``, v1.1, or
    ``"relu"``, the original) and ``output_scale`` (``X / √d_e`` before ``W_u``, the original's)."""

    eps: float = 1e-6
    n_buckets: int = 32
    max_distance: int = 128
    feed_forward_proj: str = "gated-gelu"
    output_scale: bool = False

    def __post_init__(self):
        if self.feed_forward_proj not in FEED_FORWARD:
            written = sorted(FEED_FORWARD)
            message = f"must be one of {written}, got {self.feed_forward_proj!r}"
            fail("T5Config", "feed_forward_proj", message)
        check_config_fields("T5Config", self, positive=("eps",), flags=("output_scale",))
        check_buckets("T5Config", self.n_buckets, self.max_distance, True)


class T5EncoderLayer(NamedTuple):
    """Encoder layer l of Algorithm 8 with T5's substitutions (no β, no biases)."""

    W: MHAttentionParams  # W_q, W_k, W_v (H, d_attn, d_e); W_o (d_e, H d_attn); biases None
    gamma1: jax.Array  # (d_e,) RMS norm of line 6, before line 5
    gamma2: jax.Array  # (d_e,) RMS norm of line 8, before line 7
    W_mlp1: jax.Array  # (d_mlp, d_e): wi, or the gate wi_0
    W_mlp2: jax.Array  # (d_e, d_mlp): wo
    W_up: jax.Array | None  # (d_mlp, d_e): wi_1 (gated), or None (ReLU)


class T5DecoderLayer(NamedTuple):
    """Decoder layer l of Algorithm 8 with T5's substitutions (no β, no biases)."""

    W_dec: MHAttentionParams  # causal self-attention, biases None
    W_ed: MHAttentionParams  # cross-attention to Z, biases None
    gamma3: jax.Array  # (d_e,) before line 14
    gamma4: jax.Array  # (d_e,) before line 16
    gamma5: jax.Array  # (d_e,) before line 18
    W_mlp3: jax.Array  # (d_mlp, d_e)
    W_mlp4: jax.Array  # (d_e, d_mlp)
    W_up: jax.Array | None  # (d_mlp, d_e) or None


class T5Params(NamedTuple):
    """θ of the T5 family: Algorithm 8's θ without ``W_p`` and without any β or bias, plus each
    stack's relative bias ``R`` and final γ, and its :class:`T5Config`."""

    W_e: jax.Array  # (d_e, N_V), shared by encoder, decoder (and W_u when tied)
    R_enc: jax.Array  # (H, n_buckets): the encoder's relative position bias
    enc: tuple[T5EncoderLayer, ...]
    gamma_enc: jax.Array  # (d_e,) the encoder's final RMS norm
    R_dec: jax.Array  # (H, n_buckets)
    dec: tuple[T5DecoderLayer, ...]
    gamma_dec: jax.Array  # (d_e,)
    W_u: jax.Array | None  # (N_V, d_e), or None: tied to W_eᵀ
    config: T5Config = T5Config()


def check_theta(caller: str, theta) -> dict:
    """θ is a :class:`T5Params` with its config, non-empty stacks, an MLP as its config says and
    the vectors and ``R`` of the right shapes; returns ``N_V``, ``d_e``, ``H``."""
    if not isinstance(theta, T5Params):
        fail(caller, "theta", f"must be T5Params, got {type(theta).__name__}", TypeError)
    check_config(caller, theta.config, T5Config)
    if np.ndim(theta.W_e) != 2:
        fail(caller, "theta.W_e", f"must be (d_e, N_V), got shape {np.shape(theta.W_e)}")
    d_e, N_V = np.shape(theta.W_e)
    gated = FEED_FORWARD[theta.config.feed_forward_proj][1]
    for stack in ("enc", "dec"):
        if not getattr(theta, stack):
            fail(caller, f"theta.{stack}", "is empty; a stack needs at least one layer")
        for l, layer in enumerate(getattr(theta, stack)):
            if (layer.W_up is not None) != gated:
                has = "has" if layer.W_up is not None else "lacks"
                message = (
                    f"{has} W_up, but θ's feed_forward_proj is {theta.config.feed_forward_proj!r}"
                )
                fail(caller, f"theta.{stack}[{l}].W_up", message)
    H = np.shape(theta.enc[0].W.W_q)[0]
    for name, shape in (
        ("R_enc", (H, theta.config.n_buckets)),
        ("R_dec", (H, theta.config.n_buckets)),
        ("gamma_enc", (d_e,)),
        ("gamma_dec", (d_e,)),
    ):
        if np.shape(getattr(theta, name)) != shape:
            got = np.shape(getattr(theta, name))
            fail(caller, f"theta.{name}", f"has shape {got}, expected {shape} (θ's config and W_q)")
    if theta.W_u is not None and np.shape(theta.W_u) != (N_V, d_e):
        fail(caller, "theta.W_u", f"has shape {np.shape(theta.W_u)}, expected ({N_V}, {d_e})")
    return dict(N_V=N_V, d_e=d_e, H=H)


# ------------------------------------------------------------------ Algorithm 8, substituted


def t5_mlp(X_tilde, W_1, W_2, W_up, config: T5Config):
    """Lines 7 and 18's branch without biases: ``W_2 (GELU_tanh(W_1 X̃) ⊙ W_up X̃)`` (gated-gelu)
    or ``W_2 ReLU(W_1 X̃)`` (relu)."""
    activation, gated = FEED_FORWARD[config.feed_forward_proj]
    if gated:
        return gated_mlp(X_tilde, W_1, None, W_up, None, W_2, None, activation)
    return W_2 @ activation(W_1 @ X_tilde)


def t5_encoder_layer(Z, layer: T5EncoderLayer, attention, config: T5Config):
    """Lines 5-8 of Algorithm 8 with T5's substitutions; ``attention(Z̃, W)``: line 5's attention
    (with the stack's bias and mask)."""
    Z = Z + attention(rms_norm_columns(Z, layer.gamma1, config.eps), layer.W)  # lines 6, 5
    Z_tilde = rms_norm_columns(Z, layer.gamma2, config.eps)  # line 8, before line 7
    return Z + t5_mlp(Z_tilde, layer.W_mlp1, layer.W_mlp2, layer.W_up, config)  # line 7


def t5_decoder_layer(X, layer: T5DecoderLayer, self_attention, cross_attention, config):
    """Lines 14-19 of Algorithm 8 with T5's substitutions; ``self_attention(X̃, W)`` (line 14, the
    stack's bias and causal mask, or a cache) and ``cross_attention(X̃, W)`` (line 16, to Z)."""
    eps = config.eps
    X = X + self_attention(rms_norm_columns(X, layer.gamma3, eps), layer.W_dec)  # lines 15, 14
    X = X + cross_attention(rms_norm_columns(X, layer.gamma4, eps), layer.W_ed)  # lines 17, 16
    X_tilde = rms_norm_columns(X, layer.gamma5, eps)  # line 19, before line 18
    return X + t5_mlp(X_tilde, layer.W_mlp3, layer.W_mlp4, layer.W_up, config)  # line 18


def check_z_valid(caller: str, z_valid, ell_z: int) -> None:
    """``z_valid`` is None or a boolean ``(ℓ_z,)``: True at the real tokens of a padded z."""
    if z_valid is None:
        return
    dtype = np.asarray(z_valid).dtype if not hasattr(z_valid, "dtype") else z_valid.dtype
    if np.shape(z_valid) != (ell_z,) or dtype != np.bool_:
        got = f"shape {np.shape(z_valid)} and dtype {dtype}"
        fail(caller, "z_valid", f"must be a boolean ({ell_z},), one per token of z, got {got}")
    values = concrete(z_valid)
    if values is not None and not values.any():
        fail(caller, "z_valid", "marks no token of z as real: there is no context to attend to")


def check_source(caller: str, z, z_valid, N_V: int):
    """z: token ids in [0, N_V); ``z_valid``: None or a boolean (ℓ_z,), True at the real tokens."""
    check_tokens(caller, "z", z, N_V, None)
    check_z_valid(caller, z_valid, np.shape(z)[0])
    return jnp.asarray(z), None if z_valid is None else jnp.asarray(z_valid).astype(bool)


def t5_encode(z, theta: T5Params, *, z_valid=None):
    """Lines 1-9 of Algorithm 8 with T5's substitutions and the final norm: ``Z`` ``(d_e, ℓ_z)``.
    ``z_valid`` (ℓ_z,) marks the real tokens of a z padded at its end (padding is never a key)."""
    hp = check_theta(T5, theta)
    z, valid = check_source(T5, z, z_valid, hp["N_V"])
    config = theta.config
    Z = theta.W_e[:, z]  # lines 1-3: no W_p
    t = jnp.arange(z.shape[0])
    B = relative_bias(theta.R_enc, t, t, bidirectional=True, max_distance=config.max_distance)
    Mask = None if valid is None else jnp.broadcast_to(valid[:, None], (z.shape[0],) * 2)

    # (comments, not `# line` tags: a tag on a def would record its return as the residual sum)
    def attention(Z_tilde, W):  # the attention of line 5: Mask ≡ 1 on the real tokens
        return relative_mh_attention(Z_tilde, Z_tilde, W, B, Mask)

    for layer in theta.enc:  # line 4
        Z = t5_encoder_layer(Z, layer, attention, config)  # lines 5-8
    return rms_norm_columns(Z, theta.gamma_enc, config.eps)  # line 9: T5's final norm


def t5_unembed(X, gamma, W_u, config: T5Config):
    """Line 20's final norm and line 21 up to the logits: ``W_u rms_norm(X | γ_dec)``, X scaled by
    ``d_e^{−1/2}`` first when ``config.output_scale``."""
    X = rms_norm_columns(X, gamma, config.eps)  # line 20: T5's final norm
    if config.output_scale:
        X = X * (X.shape[0] ** -0.5)  # the original T5's tied head
    return W_u @ X  # line 21 (part: logits)


def t5_decode_logits(x, Z, theta: T5Params, *, z_valid=None):
    """Lines 10-21 of Algorithm 8 with T5's substitutions up to the softmax: ``(N_V, ℓ_x)``;
    ``Z`` from :func:`t5_encode`, ``z_valid`` its real columns (None: all)."""
    hp = check_theta(T5, theta)
    check_tokens(T5, "x", x, hp["N_V"], None)
    if np.ndim(Z) != 2 or np.shape(Z)[0] != hp["d_e"]:
        fail(T5, "Z", f"must be the encoded (d_e = {hp['d_e']}, ℓ_z), got shape {np.shape(Z)}")
    check_z_valid(T5, z_valid, np.shape(Z)[1])
    x, config = jnp.asarray(x), theta.config
    X = theta.W_e[:, x]  # lines 10-12: no W_p
    t = jnp.arange(x.shape[0])
    B = relative_bias(theta.R_dec, t, t, bidirectional=False, max_distance=config.max_distance)
    Mask = unidirectional_mask(x.shape[0])
    cross_Mask = None
    if z_valid is not None:
        cross_Mask = jnp.broadcast_to(
            jnp.asarray(z_valid).astype(bool)[:, None], (Z.shape[1], x.shape[0])
        )

    def self_attention(X_tilde, W):  # the attention of line 14
        return relative_mh_attention(X_tilde, X_tilde, W, B, Mask)

    def cross_attention(X_tilde, W):  # the attention of line 16: no position bias
        return relative_mh_attention(X_tilde, Z, W, None, cross_Mask)

    for layer in theta.dec:  # line 13
        X = t5_decoder_layer(X, layer, self_attention, cross_attention, config)  # lines 14-19
    # t5_unembed records line 20 and line 21's logits; t5() records line 21's P
    return t5_unembed(X, theta.gamma_dec, unembedding_matrix(theta), config)


def t5_logits(z, x, theta: T5Params, *, z_valid=None):
    """Algorithm 8 with T5's substitutions, without the final softmax: ``W_u X`` ``(N_V, ℓ_x)``.

    ``z``: the source (encoder) tokens; ``x``: the target (decoder) tokens, starting with
    ``decoder_start_token_id`` (0); column t is the logits of ``P̂(x[t+1] | x[:t+1], z)``.
    ``z_valid`` (ℓ_z,) bool: z is padded at its end and only the True positions are real."""
    Z = t5_encode(z, theta, z_valid=z_valid)
    return t5_decode_logits(x, Z, theta, z_valid=z_valid)


def t5(z, x, theta: T5Params, *, z_valid=None):
    """Algorithm 8 with T5's substitutions: ``P = softmax(W_u X)``, shape ``(N_V, ℓ_x)``."""
    return softmax(t5_logits(z, x, theta, z_valid=z_valid))  # line 21


# -------------------------------------------------------- Algorithm 15, encoder once, cached


class T5CachedLayer(NamedTuple):
    """A decoder layer as the cached form reads it: the layer, the stack's ``R_dec`` (T5 adds it
    in every layer), and the cross-attention keys and values of ``Z`` (rows, as the store)."""

    layer: T5DecoderLayer
    R: jax.Array  # (H, n_buckets)
    K_z: jax.Array  # (H, ℓ_z, d_attn)
    V_z: jax.Array  # (H, ℓ_z, d_mid)
    valid: jax.Array  # (ℓ_z,) bool: the real positions of z


class T5Head(NamedTuple):
    """θ's arrays outside the decoder layers: ``E = W_eᵀ`` (row v is ``W_e[:, v]``), γ_dec, W_u."""

    E: jax.Array
    gamma_dec: jax.Array
    W_u: jax.Array


def _embed_columns(tokens, positions, head: T5Head, config: T5Config):
    """Lines 10-12 for the new columns: ``X[:, t] = W_e[:, x[t]]`` (no W_p)."""
    return head.E[tokens].T


def _cached_layer(X, positions, entry: T5CachedLayer, kv: KV, config: T5Config):
    """Lines 14-19 for the columns X at ``positions``: line 14's keys and values join the store
    ``kv`` and each query attends to the stored positions ≤ its own, with the bias of their
    distance; line 16 attends to the stored keys and values of Z."""
    written = []

    def self_attention(X_tilde, W):  # the attention of line 14, over the store
        Q, K, V = project(W, X_tilde)  # Algorithm 4 lines 1-3 of the new columns
        store = write(kv, K, V, positions[0])
        T = store.K.shape[1]
        B = relative_bias(
            entry.R, jnp.arange(T), positions, bidirectional=False, max_distance=config.max_distance
        )
        written.append(store)
        return output(
            W.W_o, W.b_o, biased_attend(Q, store.K, store.V, B, position_mask(T, positions))
        )

    def cross_attention(X_tilde, W):  # the attention of line 16: Z's keys, values stored once
        Mask = jnp.broadcast_to(entry.valid[:, None], (entry.K_z.shape[1], X_tilde.shape[1]))
        Q = heads_affine(W.W_q, W.b_q, X_tilde)  # Algorithm 4 line 1
        return output(W.W_o, W.b_o, biased_attend(Q, entry.K_z, entry.V_z, None, Mask))

    X = t5_decoder_layer(X, entry.layer, self_attention, cross_attention, config)
    (kv,) = written
    return X, kv


def _final_columns(X, head: T5Head, config: T5Config):
    """Lines 20-21 up to the logits."""
    return t5_unembed(X, head.gamma_dec, head.W_u, config)


#: T5's decoder as a :class:`.decoding.CachedForm`.
T5_FORM = CachedForm(_embed_columns, _cached_layer, _final_columns)


def t5_decoder(theta: T5Params, z, *, z_valid=None) -> CachedDecoder:
    """θ's decoder for the source z, ready for cached decoding (:class:`.decoding.CachedDecoder`:
    ``generate``, ``stream``, ``logits``): z is encoded once (lines 1-9) and the cross-attention
    keys and values of Z computed once per decoder layer."""
    hp = check_theta(T5_DECODER, theta)
    z, valid = check_source(T5_DECODER, z, z_valid, hp["N_V"])
    Z = t5_encode(z, theta, z_valid=valid)
    valid = jnp.ones(z.shape[0], bool) if valid is None else valid
    cross = ed_cross_cache(Z, theta, valid)  # K, V of Z for each decoder layer (line 16)
    layers = [
        T5CachedLayer(layer, theta.R_dec, K, V, valid)
        for layer, K, V in zip(theta.dec, cross.K, cross.V, strict=True)
    ]
    E = jnp.asarray(np.asarray(theta.W_e).T)
    head = T5Head(E, theta.gamma_dec, E if theta.W_u is None else theta.W_u)
    W = theta.dec[0].W_dec
    kv_shape = (len(theta.dec), hp["H"], np.shape(W.W_k)[1], np.shape(W.W_v)[1])
    return CachedDecoder(
        T5_FORM,
        layers,
        head,
        theta.config,
        N_V=hp["N_V"],
        kv_shape=kv_shape,
        dtype=theta.W_e.dtype,
        context=None,
        name=T5_DECODER,
    )


def t5_generate(
    z, theta: T5Params, *, max_new: int, start: int = 0, eos: int | None = 1, z_valid=None
) -> list[int]:
    """Greedy decoding (Algorithm 15 with τ = 0), cached: the tokens after ``start``
    (``decoder_start_token_id``, 0 for T5), up to ``max_new`` of them, the last one ``eos`` if it
    came (None: never stop early)."""
    N_V = check_theta(T5_GENERATE, theta)["N_V"]
    check_count(T5_GENERATE, "max_new", max_new)
    check_index(T5_GENERATE, "start", start, N_V)
    if eos is not None:
        check_index(T5_GENERATE, "eos", eos, N_V)
    stop = () if eos is None else (eos,)
    return t5_decoder(theta, z, z_valid=z_valid).generate([start], max_new=max_new, stop=stop)


# ------------------------------------------------------------------------ loading


def t5_config(config: dict) -> dict:
    """The keywords of :func:`t5_from_state_dict` from a transformers ``T5Config.to_dict()`` (or a
    checkpoint's config.json), θ's :class:`T5Config` among them; what is not written is refused by
    name."""
    caller = "t5_config"
    check_config_dict(caller, config, ("d_model", "d_kv", "num_heads", "num_layers"), "t5")
    proj = config.get("feed_forward_proj", "relu")
    if proj not in FEED_FORWARD:
        message = f"has feed_forward_proj = {proj!r}; T5 here writes {sorted(FEED_FORWARD)}"
        fail(caller, "config", message)
    # transformers ≥ 5 keeps the original's scaling as scale_decoder_outputs; a config.json says
    # it as tie_word_embeddings (absent: True, the original T5; v1.1: False)
    scale = config.get(
        "scale_decoder_outputs", config.get("tie_word_embeddings", True) is not False
    )
    own = T5Config(
        eps=float(config.get("layer_norm_epsilon", 1e-6)),
        n_buckets=config.get("relative_attention_num_buckets", 32),
        max_distance=config.get("relative_attention_max_distance", 128),
        feed_forward_proj=proj,
        output_scale=bool(scale),
    )
    n_dec = config.get("num_decoder_layers") or config["num_layers"]
    return dict(
        n_layers=config["num_layers"],
        n_decoder_layers=n_dec,
        n_heads=config["num_heads"],
        d_kv=config["d_kv"],
        config=own,
    )


#: A tensor of early T5 checkpoints that transformers ignores on load (T5's cross-attention has
#: no position bias); read and dropped here, by name, as transformers does.
IGNORED = "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"


def _shared_embedding(sd: StateDict, state: dict):
    """``W_e`` from ``shared.weight``; the stacks' ``embed_tokens`` are the same array or refused."""
    shared = np.asarray(state.get("shared.weight"))
    if shared.ndim != 2:
        fail(LOAD, "state", f"tensor 'shared.weight' has shape {shared.shape}, expected (N_V, d_e)")
    for copy in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
        if copy in state:
            if not np.array_equal(np.asarray(state[copy]), shared):
                fail(LOAD, "state", f"tensor {copy!r} differs from 'shared.weight': not written")
            sd(copy)
    return sd("shared.weight").T


class _Reader:
    """Reads T5's layers from transformers' names, each tensor checked against the shape the
    configuration implies (``sd``'s, which records what was read)."""

    def __init__(self, sd: StateDict, *, d_e, n_heads, d_kv, d_mlp, gated):
        self.sd, self.d_e, self.H, self.d_kv = sd, d_e, n_heads, d_kv
        self.d_mlp, self.gated = d_mlp, gated

    def attention(self, p):  # Algorithm 5's W from q, k, v (rows: the heads in order) and o
        inner, d_e = self.H * self.d_kv, self.d_e
        q, k, v = (
            self.sd(f"{p}{m}.weight", (inner, d_e)).reshape(self.H, self.d_kv, d_e) for m in "qkv"
        )
        return MHAttentionParams(
            q, None, k, None, v, None, self.sd(p + "o.weight", (d_e, inner)), None
        )

    def mlp(self, p):  # (W_mlp1, W_mlp2, W_up)
        shape = (self.d_mlp, self.d_e)
        first = self.sd(p + ("wi_0" if self.gated else "wi") + ".weight", shape)
        up = self.sd(p + "wi_1.weight", shape) if self.gated else None
        return first, self.sd(p + "wo.weight", (self.d_e, self.d_mlp)), up

    def norm(self, name):
        return self.sd(name, (self.d_e,))

    def encoder_layer(self, l):
        p = f"encoder.block.{l}.layer."
        W = self.attention(p + "0.SelfAttention.")
        norms = self.norm(p + "0.layer_norm.weight"), self.norm(p + "1.layer_norm.weight")
        return T5EncoderLayer(W, *norms, *self.mlp(p + "1.DenseReluDense."))

    def decoder_layer(self, l):
        p = f"decoder.block.{l}.layer."
        Ws = self.attention(p + "0.SelfAttention."), self.attention(p + "1.EncDecAttention.")
        gammas = [self.norm(f"{p}{i}.layer_norm.weight") for i in range(3)]
        return T5DecoderLayer(*Ws, *gammas, *self.mlp(p + "2.DenseReluDense."))

    def bias(self, stack, n_buckets):  # the first layer's (n_buckets, H) table, as (H, n_buckets)
        name = f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        return self.sd(name, (n_buckets, self.H)).T


def _output_matrix(sd: StateDict, state: dict, N_V: int, d_e: int):
    """``W_u``: ``lm_head.weight``, or None (tied) when it is absent or equals ``shared.weight``."""
    if "lm_head.weight" not in state:
        return None
    W_u = sd("lm_head.weight", (N_V, d_e))
    same = np.array_equal(np.asarray(state["lm_head.weight"]), np.asarray(state["shared.weight"]))
    return None if same else W_u


def t5_from_state_dict(
    state: dict,
    *,
    n_layers: int,
    n_decoder_layers: int,
    n_heads: int,
    d_kv: int,
    config: T5Config,
    dtype=None,
) -> T5Params:
    """θ from Hugging Face ``T5ForConditionalGeneration`` names (numpy arrays), carrying
    ``config`` (:func:`t5_config` reads the keywords from a transformers configuration).
    ``lm_head.weight`` absent or equal to ``shared.weight`` means tied (``W_u`` None). Every
    tensor of ``state`` is read or refused by name."""
    check_config(LOAD, config, T5Config)
    check_sizes(
        LOAD, n_layers=n_layers, n_decoder_layers=n_decoder_layers, n_heads=n_heads, d_kv=d_kv
    )
    sd = StateDict(state, LOAD, dtype)
    W_e = _shared_embedding(sd, state)
    d_e, N_V = W_e.shape
    wo = np.shape(state.get("encoder.block.0.layer.1.DenseReluDense.wo.weight", ()))
    d_mlp = wo[1] if len(wo) == 2 else None  # checked against every layer's wo
    gated = FEED_FORWARD[config.feed_forward_proj][1]
    name = "encoder.block.0.layer.0.SelfAttention.q.weight"
    q = np.shape(state.get(name, ()))
    if len(q) == 2 and q[0] != n_heads * d_kv:
        fail(
            LOAD,
            "d_kv",
            f"= {d_kv} with n_heads = {n_heads}: tensor {name!r} has shape {q}, "
            f"expected ({n_heads * d_kv}, {d_e}) (n_heads × d_kv rows)",
        )
    read = _Reader(sd, d_e=d_e, n_heads=n_heads, d_kv=d_kv, d_mlp=d_mlp, gated=gated)
    enc = tuple(read.encoder_layer(l) for l in range(n_layers))
    dec = tuple(read.decoder_layer(l) for l in range(n_decoder_layers))
    W_u = _output_matrix(sd, state, N_V, d_e)
    if IGNORED in state:
        sd(IGNORED)
    gamma_enc = read.norm("encoder.final_layer_norm.weight")
    gamma_dec = read.norm("decoder.final_layer_norm.weight")
    R_enc, R_dec = read.bias("encoder", config.n_buckets), read.bias("decoder", config.n_buckets)
    theta = T5Params(W_e, R_enc, enc, gamma_enc, R_dec, dec, gamma_dec, W_u, config)
    sd.refuse_unused()
    return theta
