"""The BART family (Lewis et al. 2020) as Algorithm 8 with documented substitutions.

Algorithm 8 is Post-LN as printed (each layer norm after its residual sum, lines 6, 8, 15, 17,
19), and so is BART (transformers' ``BartEncoderLayer`` and ``BartDecoderLayer``): lines 4-9 and
13-20 are the paper's :func:`~formal_algorithms.paper.architectures.post_ln_layer` and
:func:`~formal_algorithms.paper.architectures.ed_decoder_layer`, unchanged but for the activation.
What BART puts elsewhere (:data:`ALGORITHM_8`, line by line):

- lines 2 and 11: ``e_t ← s W_e[:, z[t]] + W_p[:, t]`` with ``s = √d_e`` when ``scale_embedding``
  (else 1); the encoder and the decoder each have their own ``W_p`` (transformers stores each with
  2 leading rows more: column t is row t + 2, as OPT's) and, untied, their own ``W_e``;
- lines 3 and 12: each embedding column normalised (``layernorm_embedding``: ``γ_emb``, ``β_emb``
  of the encoder, of the decoder) before line 4 (line 13);
- lines 7 and 18: GELU (``activation_function="gelu"``, the exact erf form) in place of ReLU;
  ``"relu"`` is the paper's own; any other activation is refused by name;
- line 21: ``W_u X + b_u 1ᵀ`` (``final_logits_bias``); ``W_u = W_eᵀ`` when tied (unscaled).

θ is :class:`BartParams` and carries its :class:`BartConfig` (ε, activation, the embedding scale,
the decoder's start and end tokens), so it runs only as loaded. A source padding mask ``z_valid``
keeps padded context tokens out of the encoder's and the cross-attention's keys, as the paper's
:func:`~formal_algorithms.paper.architectures.ed_encode` does. mBART's Pre-LN layers are not
written.

Greedy generation (Algorithm 15 at τ = 0, :func:`bart_generate`) encodes z once, stores each
decoder layer's cross-attention keys and values of Z once, and runs the decoder one column at a
time over a self-attention key/value cache (:func:`bart_decoder`, a
:class:`~.decoding.CachedDecoder`): the paper's decoder layer with its two attentions evaluated
over stored keys and values (:mod:`..practice.kv_attention`). Line 1 of Algorithm 15 becomes
``x̂ ← [decoder_start_token_id]`` (BART: 2, its eos); transformers' ``forced_bos_token_id`` and
``forced_eos_token_id`` are applied when configured.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..paper.architectures import ed_decoder_layer, key_padding_mask, post_ln_layer
from ..paper.attention import unidirectional_mask
from ..paper.checks import check_count, check_tokens, fail
from ..paper.functions import gelu, relu, softmax
from ..paper.normalisation import layer_norm_columns
from ..paper.parameters import DecoderLayer, EDTransformerParams, Layer
from ..paper.validation import check_params
from ..practice.cache import ed_cross_cache, length_bucket
from ..practice.kv_attention import KV, cached_decoder_attention
from .core import StateDict, check_config, check_config_dict, check_config_fields, family_config
from .decoding import CachedDecoder, CachedForm
from .opt import OFFSET  # transformers' learned positions: W_p's column t is row t + 2

BART = "bart_logits (Algorithm 8 with BART's substitutions)"
BART_DECODER = "bart_decoder (Algorithm 15 on BART, cached)"
GENERATE = "bart_generate (Algorithm 15 on BART, greedy, cached)"
LOAD = "bart_from_state_dict"

#: The activations written (transformers' ``activation_function`` names): GELU is the exact erf
#: form of ``ACT2FN["gelu"]``; ReLU is the paper's own for Algorithm 8.
ACTIVATIONS = {"gelu": gelu, "relu": relu}

#: Algorithm 8's lines that BART replaces (docs/families.md); the rest as printed.
ALGORITHM_8 = {
    2: "`s W_e[:, z[t]] + W_p[:, t]`, s = √d_e if `scale_embedding` else 1; transformers' `W_p` "
    "has 2 leading rows more (column t is its row t + 2)",
    3: "each column normalised: `layer_norm(· | γ_emb^enc, β_emb^enc)` (`layernorm_embedding`)",
    5: "`Mask[t_z, t_x] = z_valid[t_z]` when a source padding mask is given",
    7: "GELU in place of ReLU (`activation_function`)",
    11: "`s W_e^dec[:, x[t]] + W_p^dec[:, t]`: the decoder's own positions (offset 2); "
    "`W_e^dec = W_e` when tied",
    12: "each column normalised: `layer_norm(· | γ_emb^dec, β_emb^dec)` (`layernorm_embedding`)",
    16: "`Mask[t_z, t_x] = z_valid[t_z]` when a source padding mask is given",
    18: "GELU in place of ReLU (`activation_function`)",
    21: "`softmax(W_u X + b_u 1ᵀ)` (`final_logits_bias`); `W_u = W_eᵀ` when tied",
}


@family_config  # frozen, static under jit: part of θ's structure
class BartConfig:
    """What θ's forward and generation need beyond its arrays: ε, the activation's name, the
    embedding scale, and the decoder's start, end and forced tokens (None: not forced)."""

    eps: float = 1e-5
    activation: str = "gelu"
    scale_embedding: bool = False
    decoder_start_token_id: int = 2
    eos_token_id: int = 2
    forced_bos_token_id: int | None = None
    forced_eos_token_id: int | None = None

    def __post_init__(self):
        check_config_fields("BartConfig", self, positive=("eps",), flags=("scale_embedding",))
        if self.activation not in ACTIVATIONS:
            fail(
                "BartConfig",
                "activation",
                f"= {self.activation!r} is not written; one of {sorted(ACTIVATIONS)}",
            )
        for name in ("decoder_start_token_id", "eos_token_id"):
            _check_token_id(name, getattr(self, name), optional=False)
        for name in ("forced_bos_token_id", "forced_eos_token_id"):
            _check_token_id(name, getattr(self, name), optional=True)


def _check_token_id(name: str, value, *, optional: bool) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        fail("BartConfig", name, f"must be a token id (an integer ≥ 0), got {value!r}")


class BartParams(NamedTuple):
    """θ of the BART family: Algorithm 8's fields with the encoder's and decoder's own positions
    and embedding norms, the logits' bias, and its :class:`BartConfig`."""

    W_e: jax.Array  # (d_e, N_V): the encoder's token embedding (the shared one when tied)
    W_p: jax.Array  # (d_e, ℓ_max): the encoder's positions (transformers' rows 2 … ℓ_max + 1)
    gamma_emb_enc: jax.Array  # (d_e,) the encoder's embedding norm (line 3)
    beta_emb_enc: jax.Array
    enc: tuple[Layer, ...]
    W_e_dec: jax.Array | None  # (d_e, N_V), or None: tied to W_e
    W_p_dec: jax.Array  # (d_e, ℓ_max): the decoder's positions
    gamma_emb_dec: jax.Array  # (d_e,) the decoder's embedding norm (line 12)
    beta_emb_dec: jax.Array
    dec: tuple[DecoderLayer, ...]
    W_u: jax.Array | None  # (N_V, d_e), or None: tied to W_eᵀ
    b_u: jax.Array  # (N_V,) final_logits_bias
    config: BartConfig = BartConfig()


def paper_theta(theta: BartParams) -> EDTransformerParams:
    """Algorithm 8's θ with the same arrays (the encoder's ``W_e`` and ``W_p``)."""
    return EDTransformerParams(theta.W_e, theta.W_p, theta.enc, theta.dec, theta.W_u)


def check_theta(caller: str, theta) -> None:
    """θ is :class:`BartParams` whose arrays fit together, else refused naming the field."""
    if not isinstance(theta, BartParams):
        fail(caller, "theta", f"must be BartParams, got {type(theta).__name__}", TypeError)
    check_config(caller, theta.config, BartConfig)
    # the encoder and the decoder each as Algorithm 8's θ: BART lets their H and d_mlp differ
    check_params(paper_theta(theta)._replace(dec=()), caller, EDTransformerParams)
    check_params(paper_theta(theta)._replace(enc=()), caller, EDTransformerParams)
    d_e, N_V = np.shape(theta.W_e)
    expected = dict(
        gamma_emb_enc=(d_e,),
        beta_emb_enc=(d_e,),
        gamma_emb_dec=(d_e,),
        beta_emb_dec=(d_e,),
        b_u=(N_V,),
    )
    if theta.W_e_dec is not None:
        expected["W_e_dec"] = (d_e, N_V)
    for name, shape in expected.items():
        if np.shape(getattr(theta, name)) != shape:
            got = np.shape(getattr(theta, name))
            fail(caller, f"theta.{name}", f"has shape {got}, expected {shape}")
    if np.ndim(theta.W_p_dec) != 2 or np.shape(theta.W_p_dec)[0] != d_e:
        got = np.shape(theta.W_p_dec)
        fail(caller, "theta.W_p_dec", f"has shape {got}, expected ({d_e}, ℓ_max)")


def decoder_embedding(theta: BartParams):
    """``W_e^dec``: the decoder's token embedding (``W_e`` when tied)."""
    return theta.W_e if theta.W_e_dec is None else theta.W_e_dec


def unembedding(theta: BartParams):
    """``W_u`` (``W_eᵀ`` when tied)."""
    return theta.W_e.T if theta.W_u is None else theta.W_u


def bart_embed(tokens, positions, W_e, W_p, gamma, beta, config: BartConfig):
    """Lines 1-3 (encoder) or 10-12 (decoder) with BART's substitutions, for tokens at
    ``positions``: ``layer_norm(s W_e[:, x[t]] + W_p[:, t] | γ_emb, β_emb)``."""
    s = math.sqrt(np.shape(W_e)[0]) if config.scale_embedding else 1.0
    E = s * W_e[:, tokens] + W_p[:, positions]  # e_t, s = √d_e if scaled
    return layer_norm_columns(E, gamma, beta, config.eps)  # BART's embedding norm


def bart_unembed(X, W_u, b_u):
    """Line 21 up to the softmax: ``W_u X + b_u 1ᵀ`` (BART's ``final_logits_bias``)."""
    return W_u @ X + b_u[:, None]  # line 21 (part: logits)


def _check_z_valid(caller: str, z_valid, ell_z: int):
    """``z_valid``: None (every token real) or ``(ℓ_z,)`` booleans or 0/1 (transformers'
    ``attention_mask``), returned as booleans."""
    if z_valid is None:
        return None
    if np.shape(z_valid) != (ell_z,):
        fail(caller, "z_valid", f"has shape {np.shape(z_valid)}, expected ({ell_z},): one per z")
    v = z_valid if isinstance(z_valid, jax.core.Tracer) else np.asarray(z_valid)
    if not isinstance(v, jax.core.Tracer) and not (v.dtype == bool or np.isin(v, (0, 1)).all()):
        fail(caller, "z_valid", "must hold booleans or 0/1 (1: a real token, 0: padding)")
    if not isinstance(v, jax.core.Tracer) and not v.any():
        fail(caller, "z_valid", "marks no token of z as real: there is no context to attend to")
    return jnp.asarray(v).astype(bool)


def bart_encode(z, theta: BartParams, *, z_valid=None):
    """Lines 1-9 of Algorithm 8 with BART's substitutions: ``Z`` ``(d_e, ℓ_z)``; ``z_valid``
    marks the real tokens of a padded z (transformers' ``attention_mask``)."""
    check_theta(BART, theta)
    check_tokens(BART, "z", z, np.shape(theta.W_e)[1], np.shape(theta.W_p)[1])
    z = jnp.asarray(z)
    valid = _check_z_valid(BART, z_valid, z.shape[0])
    config = theta.config
    W = theta.W_e, theta.W_p, theta.gamma_emb_enc, theta.beta_emb_enc
    Z = bart_embed(z, jnp.arange(z.shape[0]), *W, config)  # lines 1-3
    Mask = key_padding_mask(valid, Z.shape[1])  # Mask ≡ 1 unless z is padded
    for layer in theta.enc:  # line 4
        Z = post_ln_layer(Z, layer, Mask, ACTIVATIONS[config.activation], config.eps)  # lines 5-8
    return Z


def bart_decode_logits(x, Z, theta: BartParams, *, z_valid=None):
    """Lines 10-21 of Algorithm 8 with BART's substitutions, up to the softmax: ``(N_V, ℓ_x)``;
    ``Z`` from :func:`bart_encode` (``z_valid`` as given to it)."""
    check_theta(BART, theta)
    check_tokens(BART, "x", x, np.shape(theta.W_e)[1], np.shape(theta.W_p_dec)[1])
    x = jnp.asarray(x)
    valid = _check_z_valid(BART, z_valid, np.shape(Z)[1])
    config = theta.config
    W = decoder_embedding(theta), theta.W_p_dec, theta.gamma_emb_dec, theta.beta_emb_dec
    X = bart_embed(x, jnp.arange(x.shape[0]), *W, config)  # lines 10-12
    Mask = unidirectional_mask(X.shape[1])
    cross_Mask = key_padding_mask(valid, X.shape[1])  # line 16's Mask ≡ 1 unless z is padded
    activation = ACTIVATIONS[config.activation]
    for layer in theta.dec:  # line 13
        X = ed_decoder_layer(X, Z, layer, Mask, activation, config.eps, cross_Mask)  # lines 14-19
    return bart_unembed(X, unembedding(theta), theta.b_u)  # line 21 (part: logits)


def bart_logits(z, x, theta: BartParams, *, z_valid=None):
    """Algorithm 8 with BART's substitutions, without the final softmax: the encoder on the
    source tokens z, the decoder on the target tokens x; ``W_u X + b_u 1ᵀ`` ``(N_V, ℓ_x)``."""
    Z = bart_encode(z, theta, z_valid=z_valid)
    return bart_decode_logits(x, Z, theta, z_valid=z_valid)


def bart(z, x, theta: BartParams, *, z_valid=None):
    """Algorithm 8 with BART's substitutions: ``P = softmax(W_u X + b_u 1ᵀ)`` (line 21)."""
    return softmax(bart_logits(z, x, theta, z_valid=z_valid))  # line 21


# ------------------------------------------------------- Algorithm 8's decoder, with a cache


class BartHead(NamedTuple):
    """The decoder's arrays outside its layers: lines 10-12's and line 21's."""

    W_e: jax.Array  # W_e^dec
    W_p: jax.Array  # W_p^dec
    gamma: jax.Array  # γ_emb^dec
    beta: jax.Array
    W_u: jax.Array
    b_u: jax.Array


class BartCachedLayer(NamedTuple):
    """One decoder layer with its cross-attention keys and values of Z stored (line 16's K, V):
    ``cross.K`` ``(H, ℓ_z, d_attn)``, ``cross.V`` ``(H, ℓ_z, d_mid)``, ``valid`` ``(ℓ_z,)``."""

    layer: DecoderLayer
    cross: KV
    valid: jax.Array


def _cached_embed(tokens, positions, head: BartHead, config):
    return bart_embed(tokens, positions, head.W_e, head.W_p, head.gamma, head.beta, config)


def _cached_layer(X, positions, cached: BartCachedLayer, kv: KV, config):
    """Lines 14-19: the paper's decoder layer, its self-attention over the cache ``kv`` (the new
    columns' keys and values written at ``positions``) and its cross-attention over Z's stored
    keys and values (given in place of Z)."""
    attention, written = cached_decoder_attention(positions, kv)
    cross_Mask = key_padding_mask(cached.valid, X.shape[1])
    activation = ACTIVATIONS[config.activation]
    X = ed_decoder_layer(
        X, cached.cross, cached.layer, None, activation, config.eps, cross_Mask, attention=attention
    )
    (kv,) = written
    return X, kv


def _cached_final(X, head: BartHead, config):
    return bart_unembed(X, head.W_u, head.b_u)  # line 21 (part: logits)


#: BART's decoder at the new columns (:class:`.decoding.CachedForm`).
BART_FORM = CachedForm(_cached_embed, _cached_layer, _cached_final)


def bart_decoder(z, theta: BartParams, *, z_valid=None) -> CachedDecoder:
    """The decoder of θ ready for cached decoding given the source tokens z (a
    :class:`.decoding.CachedDecoder`: ``logits(tokens, start, cache)``, ``init_cache``): z is
    encoded once (right-padded to a length bucket, the padding masked) and each decoder layer's
    cross-attention keys and values of Z are stored once; its context is ``W_p^dec``'s ℓ_max."""
    check_theta(BART_DECODER, theta)
    N_V, ell_max = np.shape(theta.W_e)[1], np.shape(theta.W_p)[1]
    check_tokens(BART_DECODER, "z", z, N_V, ell_max)
    ell_z = np.shape(z)[0]
    real = _check_z_valid(BART_DECODER, z_valid, ell_z)
    bucket = length_bucket(ell_z, ell_max)
    padded = np.zeros(bucket, np.int32)
    padded[:ell_z] = np.asarray(z)
    valid = np.arange(bucket) < ell_z
    if real is not None:
        valid[:ell_z] &= np.asarray(real)
    Z = bart_encode(padded, theta, z_valid=valid)  # lines 1-9, once
    cross = ed_cross_cache(Z, paper_theta(theta), jnp.asarray(valid))  # line 16's K, V, once
    layers = [
        BartCachedLayer(layer, KV(K, V), cross.valid)
        for layer, K, V in zip(theta.dec, cross.K, cross.V, strict=True)
    ]
    W_e = decoder_embedding(theta)
    head = BartHead(
        W_e, theta.W_p_dec, theta.gamma_emb_dec, theta.beta_emb_dec, unembedding(theta), theta.b_u
    )
    W = theta.dec[0].W_dec
    H, d_attn, _ = np.shape(W.W_k)
    kv_shape = (len(theta.dec), H, d_attn, np.shape(W.W_v)[1])
    return CachedDecoder(
        BART_FORM,
        layers,
        head,
        theta.config,
        N_V=N_V,
        kv_shape=kv_shape,
        dtype=W_e.dtype,
        context=np.shape(theta.W_p_dec)[1],
        name=BART_DECODER,
    )


def bart_generate(z, theta: BartParams, *, max_new: int, z_valid=None) -> list[int]:
    """Algorithm 15 at τ = 0 (greedy) on BART, cached: ``x̂`` from ``decoder_start_token_id``
    (line 1), each step the argmax of the last column (``forced_bos_token_id`` first and
    ``forced_eos_token_id`` at the last of ``max_new`` steps when θ's config sets them, as
    transformers' ``generate``), until ``eos_token_id`` or ``max_new`` new tokens. Returns x̂
    with its start token: ``model.generate(do_sample=False, num_beams=1, max_new_tokens=…)``.
    Plain greedy: transformers' other generation options (``no_repeat_ngram_size``,
    ``min_length``, beams: bart-large-cnn's generation configuration) are not applied."""
    check_theta(GENERATE, theta)  # named as called, before bart_decoder checks it again
    max_new = check_count(GENERATE, "max_new", max_new)
    decoder = bart_decoder(z, theta, z_valid=z_valid)
    if max_new > decoder.context:
        fail(
            GENERATE,
            "max_new",
            f"= {max_new} exceeds the decoder's context of {decoder.context} positions",
        )
    config = theta.config
    x_hat = [config.decoder_start_token_id]  # line 1
    if max_new == 0:
        return x_hat
    cache = decoder.init_cache(length_bucket(max_new, decoder.context))
    logits, cache = decoder.logits(np.asarray(x_hat, np.int32), 0, cache)
    for i in range(max_new):  # line 2: while the last token is not eos
        y = int(np.argmax(np.asarray(logits[:, -1])))  # lines 4-6 at τ = 0
        if config.forced_eos_token_id is not None and i == max_new - 1:  # transformers: eos
            y = config.forced_eos_token_id  # overrides bos when both fall on one step
        elif config.forced_bos_token_id is not None and i == 0:
            y = config.forced_bos_token_id
        x_hat.append(y)  # line 7
        if y == config.eos_token_id or i == max_new - 1:
            return x_hat
        logits, cache = decoder.logits(np.asarray([y], np.int32), i + 1, cache)
    return x_hat


# ------------------------------------------------------------------------------- loading


def bart_config(config: dict) -> dict:
    """The keywords of :func:`bart_from_state_dict` from a transformers ``BartConfig.to_dict()``
    (θ's :class:`BartConfig` among them); what is not written is refused by name."""
    caller = "bart_config"
    heads = ("encoder_attention_heads", "decoder_attention_heads")
    check_config_dict(caller, config, ("encoder_layers", "decoder_layers", *heads), "bart")
    activation = config.get("activation_function", "gelu")
    if activation not in ACTIVATIONS:
        fail(
            caller,
            "config",
            f"has activation_function = {activation!r}; this family writes {sorted(ACTIVATIONS)}",
        )
    for key in ("normalize_before", "add_final_layer_norm"):  # mBART's Pre-LN layers
        if config.get(key):
            fail(caller, "config", f"has {key} = True (mBART's Pre-LN): not written")
    tokens = {}
    for key in (
        "decoder_start_token_id",
        "eos_token_id",
        "forced_bos_token_id",
        "forced_eos_token_id",
    ):
        value = config.get(key)
        if isinstance(value, list | tuple):
            fail(caller, "config", f"has {key} = {value!r}; one token id is written")
        if value is not None:
            tokens[key] = value
    scale = bool(config.get("scale_embedding", False))
    eps = 1e-5  # transformers' nn.LayerNorm default
    own = BartConfig(eps=eps, activation=activation, scale_embedding=scale, **tokens)
    return dict(
        n_enc_layers=config["encoder_layers"],
        n_dec_layers=config["decoder_layers"],
        n_enc_heads=config["encoder_attention_heads"],
        n_dec_heads=config["decoder_attention_heads"],
        tied=bool(config.get("tie_word_embeddings", True)),
        config=own,
    )


def _read_embeddings(sd: StateDict, tied: bool):
    """``(W_e, W_e^dec, W_u)`` (the last two None when tied). Tied, the copies transformers'
    state dict holds (``model.shared.weight``, each side's ``embed_tokens``, ``lm_head``) must be
    equal; untied, ``model.shared.weight`` is never read by transformers' forward and is passed
    over, each side reads its own."""
    shared = "model.shared.weight"
    names = (
        "model.encoder.embed_tokens.weight",
        "model.decoder.embed_tokens.weight",
        "lm_head.weight",
    )
    if not tied:
        if shared in sd.arrays:
            sd.used.add(shared)  # untied: unused by transformers' forward
        W_e = sd(names[0])
        W_e_dec, W_u = (sd(name, W_e.shape) for name in names[1:])
        return W_e.T, W_e_dec.T, W_u
    present = [name for name in (shared, *names) if name in sd.arrays]
    if not present:
        fail(LOAD, "state", f"has no tensor {shared!r}")
    W_e = sd(present[0])
    for name in present[1:]:
        if not np.array_equal(sd(name, W_e.shape), W_e):
            fail(
                LOAD,
                "state",
                f"tensor {name!r} differs from {present[0]!r}, but the config "
                "ties them (tie_word_embeddings=True)",
            )
    return W_e.T, None, None


# A layer's attentions and norms in θ's field order, and its class (fc1, fc2 follow the norms)
ENCODER_LAYER = (("self_attn",), ("self_attn_layer_norm", "final_layer_norm"), Layer)
DECODER_LAYER = (
    ("self_attn", "encoder_attn"),
    ("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"),
    DecoderLayer,
)


def _read_layer(sd: StateDict, p: str, H: int, attentions, norms, cls):
    """One encoder or decoder layer of θ under the prefix ``p``."""
    Ws = [sd.attention(f"{p}{a}.", H) for a in attentions]
    gammas_betas = [x for n in norms for x in sd.norm(p + n)]
    return cls(*Ws, *gammas_betas, *sd.linear(p + "fc1"), *sd.linear(p + "fc2"))


def bart_from_state_dict(
    state: dict,
    *,
    n_enc_layers: int,
    n_dec_layers: int,
    n_enc_heads: int,
    n_dec_heads: int,
    tied: bool,
    config: BartConfig,
    dtype=None,
) -> BartParams:
    """θ from Hugging Face ``BartForConditionalGeneration`` names (numpy arrays), carrying
    ``config``. Every tensor of ``state`` must be used (untied: ``model.shared.weight`` aside,
    which transformers' untied forward never reads)."""
    check_config(LOAD, config, BartConfig)
    sd = StateDict(state, LOAD, dtype)
    norms = sd.norm
    W_e, W_e_dec, W_u = _read_embeddings(sd, tied)
    d_e, N_V = W_e.shape
    W_p, W_p_dec = (
        sd(f"model.{part}.embed_positions.weight")[OFFSET:].T for part in ("encoder", "decoder")
    )
    enc = sd.layers(
        n_enc_layers,
        "model.encoder.layers.",
        lambda p: _read_layer(sd, p, n_enc_heads, *ENCODER_LAYER),
    )
    dec = sd.layers(
        n_dec_layers,
        "model.decoder.layers.",
        lambda p: _read_layer(sd, p, n_dec_heads, *DECODER_LAYER),
    )
    b_u = sd("final_logits_bias", (1, N_V))[0]
    theta = BartParams(
        W_e,
        W_p,
        *norms("model.encoder.layernorm_embedding"),
        enc,
        W_e_dec,
        W_p_dec,
        *norms("model.decoder.layernorm_embedding"),
        dec,
        W_u,
        b_u,
        config,
    )
    sd.refuse_unused()
    check_theta(LOAD, theta)
    return theta
