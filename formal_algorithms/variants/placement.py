"""Where the layer norm goes: Post-LN and Pre-LN forms of Algorithms 8, 9 and 10.

The paper prints Algorithms 8 and 9 Post-LN (``X ← layer_norm(X + f(X))``, as in Vaswani et al.'s
text and BERT) and Algorithm 10 Pre-LN (``X ← X + f(layer_norm(X))``, as in GPT-2 and the released
code of the original Transformer). Here each architecture is written in both forms, from the same
primitives, as straight-line code: ``post_ln_*`` and ``pre_ln_*`` differ only in the layer they
call (:func:`~formal_algorithms.architectures.post_ln_layer` or
:func:`~formal_algorithms.architectures.pre_ln_layer`; for Algorithm 8's decoder
:func:`~formal_algorithms.architectures.ed_decoder_layer` or :func:`pre_ln_ed_decoder_layer`) and
in the final norm a Pre-LN stack needs.

Decisions (recorded in docs/variants.md):

- Only the layers change (lines 5-8 of Alg 8, 9, 10 and 14-19 of Alg 8); every other line and its
  parameters stay as printed. The paper form of each architecture here is the paper's algorithm
  bit for bit (tested against :mod:`formal_algorithms.architectures`).
- A Pre-LN stack ends with a final layer norm, because its residual stream is never normalised:
  Algorithm 10's line 10, and one per stack in the released Pre-LN code (tensor2tensor's
  ``layer_preprocess``, fairseq's ``normalize_before``, Xiong et al. 2020). So the Pre-LN forms of
  Algorithms 8 and 9 carry extra leaves ``gamma_enc, beta_enc`` (and ``gamma_dec, beta_dec`` for 8):
  :class:`PreLNEDTransformerParams`, :class:`PreLNETransformerParams`. In Algorithm 9 the encoder's
  final norm comes before the head (lines 10-11), which is unchanged.
- A Post-LN stack adds no norm (its last layer already ends with one) and removes none the paper
  prints: the Post-LN form of Algorithm 10 keeps line 10, so its θ is exactly
  :class:`~formal_algorithms.paper.parameters.DTransformerParams` and the same θ runs in both forms.
  At initialisation (γ = 1, β = 0) that final norm acts on already normalised columns and is the
  identity up to ε. (The original Post-LN decoder of Vaswani et al. has no final norm.)
- In the Pre-LN form of Algorithm 8 the decoder's cross-attention reads the encoder's output after
  the encoder's final norm, as in the released code; ``Z`` is not normalised again.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..paper import parameters
from ..paper.architectures import (
    ed_decoder_layer,
    mlp,
    post_ln_layer,
    pre_ln_layer,
    unembedding_matrix,
)
from ..paper.attention import mh_attention, unidirectional_mask
from ..paper.checks import check_activation, check_eps, fail
from ..paper.embeddings import embed
from ..paper.functions import gelu, relu, softmax
from ..paper.normalisation import EPS, layer_norm_columns
from .checks import check_inputs

ALG8_PRE = "Pre-LN EDTransformer (Algorithm 8, Pre-LN form)"
ALG8_POST = "Post-LN EDTransformer (Algorithm 8)"
ALG9_PRE = "Pre-LN ETransformer (Algorithm 9, Pre-LN form)"
ALG9_POST = "Post-LN ETransformer (Algorithm 9)"
ALG10_PRE = "Pre-LN DTransformer (Algorithm 10)"
ALG10_POST = "Post-LN DTransformer (Algorithm 10, Post-LN form)"
_FINAL_NORMS_ED = ("gamma_enc", "beta_enc", "gamma_dec", "beta_dec")
_FINAL_NORMS_E = ("gamma_enc", "beta_enc")


class PreLNEDTransformerParams(NamedTuple):
    """θ of Algorithm 8 in Pre-LN form: Algorithm 8's θ plus a final norm per stack."""

    W_e: jax.Array  # (d_e, N_V)
    W_p: jax.Array  # (d_e, ℓ_max)
    enc: tuple[parameters.Layer, ...]  # L_enc layers
    dec: tuple[parameters.DecoderLayer, ...]  # L_dec layers
    gamma_enc: jax.Array  # (d_e,) the encoder's final norm
    beta_enc: jax.Array  # (d_e,)
    gamma_dec: jax.Array  # (d_e,) the decoder's final norm
    beta_dec: jax.Array  # (d_e,)
    W_u: jax.Array | None  # (N_V, d_e), or None: tied to W_eᵀ


class PreLNETransformerParams(NamedTuple):
    """θ of Algorithm 9 in Pre-LN form: Algorithm 9's θ plus the encoder's final norm."""

    W_e: jax.Array  # (d_e, N_V)
    W_p: jax.Array  # (d_e, ℓ_max)
    layers: tuple[parameters.Layer, ...]  # L layers
    gamma_enc: jax.Array  # (d_e,) the encoder's final norm, before the head
    beta_enc: jax.Array  # (d_e,)
    W_f: jax.Array  # (d_f, d_e)
    b_f: jax.Array  # (d_f,)
    gamma: jax.Array  # (d_f,) line 11
    beta: jax.Array  # (d_f,)
    W_u: jax.Array | None  # (N_V, d_f), or None: tied to W_eᵀ (needs d_f = d_e)


# ------------------------------------------------------------------------------ building blocks


def pre_ln_ed_decoder_layer(X, Z, layer: parameters.DecoderLayer, Mask, activation=relu, eps=EPS):
    """Lines 14-19 of Algorithm 8 in Pre-LN form: each branch reads a normalised copy X̃ of the
    stream; the stream X itself is never normalised (the counterpart of ``ed_decoder_layer``)."""
    X_tilde = layer_norm_columns(X, layer.gamma3, layer.beta3, eps)  # line 15, moved before 14
    X = X + mh_attention(X_tilde, X_tilde, layer.W_dec, Mask)  # line 14
    X_tilde = layer_norm_columns(X, layer.gamma4, layer.beta4, eps)  # line 17, moved before 16
    X = X + mh_attention(X_tilde, Z, layer.W_ed, None)  # line 16: Mask ≡ 1
    X_tilde = layer_norm_columns(X, layer.gamma5, layer.beta5, eps)  # line 19, moved before 18
    return X + mlp(X_tilde, layer.W_mlp3, layer.b_mlp3, layer.W_mlp4, layer.b_mlp4, activation)


def check_stack(name: str, layers) -> None:
    """``layers``: a sequence of the paper's layers (one per layer), not one layer alone."""
    kinds = (parameters.Layer, parameters.DecoderLayer)
    if isinstance(layers, kinds) or not all(isinstance(layer, kinds) for layer in layers):
        got = "one layer" if isinstance(layers, kinds) else type(layers).__name__
        fail(name, "layers", f"must be a sequence of Layer (one per layer), got {got}")


def post_ln_stack(X, layers, Mask, activation, eps=EPS):
    """``for l: X ← post_ln_layer(X)``: a Post-LN stack, which ends normalised by its last layer."""
    check_stack("post_ln_stack", layers)
    for layer in layers:  # line 4
        X = post_ln_layer(X, layer, Mask, activation, eps)  # lines 5-8
    return X


def pre_ln_stack(X, layers, Mask, activation, gamma, beta, eps=EPS):
    """``for l: X ← pre_ln_layer(X)``, then the stack's final norm (Algorithm 10, lines 4-10)."""
    check_stack("pre_ln_stack", layers)
    for layer in layers:  # line 4
        X = pre_ln_layer(X, layer, Mask, activation, eps)  # lines 5-8
    return layer_norm_columns(X, gamma, beta, eps)


def e_head(X, theta, activation, eps=EPS):
    """Lines 10-12 of Algorithm 9 up to the softmax: ``W_u layer_norm(σ(W_f X + b_f 1ᵀ))``."""
    X = activation(theta.W_f @ X + theta.b_f[:, None])  # line 10
    X = layer_norm_columns(X, theta.gamma, theta.beta, eps)  # line 11
    return unembedding_matrix(theta) @ X  # line 12 (part: logits): before the softmax


# --------------------------------------------------------------------------------- Algorithm 8


def post_ln_ed_transformer_logits(z, x, theta: parameters.EDTransformerParams, *, eps=EPS):
    """Algorithm 8 as printed (Post-LN), composed from the building blocks: ``W_u X``, ``(N_V, ℓ_x)``.

    Equal to :func:`formal_algorithms.ed_transformer_logits` bit for bit.
    """
    check_inputs(ALG8_POST, theta, parameters.EDTransformerParams, z=z, x=x)
    check_eps(ALG8_POST, eps)
    Z = embed(z, theta.W_e, theta.W_p)  # lines 1-3
    Z = post_ln_stack(Z, theta.enc, None, relu, eps)  # lines 4-9, Mask ≡ 1
    X = embed(x, theta.W_e, theta.W_p)  # lines 10-12
    Mask = unidirectional_mask(X.shape[1])
    for layer in theta.dec:  # line 13
        X = ed_decoder_layer(X, Z, layer, Mask, relu, eps)  # lines 14-19
    return unembedding_matrix(theta) @ X  # line 21 (part: logits): before the softmax


def pre_ln_ed_transformer_logits(z, x, theta: PreLNEDTransformerParams, *, eps=EPS):
    """Algorithm 8 in Pre-LN form, with a final norm after each stack: ``W_u X``, ``(N_V, ℓ_x)``."""
    check_inputs(ALG8_PRE, theta, PreLNEDTransformerParams, _ed_view, _FINAL_NORMS_ED, z=z, x=x)
    check_eps(ALG8_PRE, eps)
    Z = embed(z, theta.W_e, theta.W_p)  # lines 1-3
    Z = pre_ln_stack(Z, theta.enc, None, relu, theta.gamma_enc, theta.beta_enc, eps)  # 4-9 + norm
    X = embed(x, theta.W_e, theta.W_p)  # lines 10-12
    Mask = unidirectional_mask(X.shape[1])
    for layer in theta.dec:  # line 13
        X = pre_ln_ed_decoder_layer(X, Z, layer, Mask, relu, eps)  # lines 14-19, Pre-LN
    X = layer_norm_columns(X, theta.gamma_dec, theta.beta_dec, eps)  # the decoder's final norm
    return unembedding_matrix(theta) @ X  # line 21 (part: logits): before the softmax


def pre_ln_ed_transformer(z, x, theta: PreLNEDTransformerParams, *, eps=EPS):
    """``P = softmax(W_u X)`` of :func:`pre_ln_ed_transformer_logits`."""
    return softmax(pre_ln_ed_transformer_logits(z, x, theta, eps=eps))


# --------------------------------------------------------------------------------- Algorithm 9


def post_ln_e_transformer_logits(
    x, theta: parameters.ETransformerParams, *, activation=gelu, eps=EPS
):
    """Algorithm 9 as printed (Post-LN), composed from the building blocks: ``W_u X``, ``(N_V, ℓ)``.

    Equal to :func:`formal_algorithms.e_transformer_logits` bit for bit.
    """
    check_inputs(ALG9_POST, theta, parameters.ETransformerParams, x=x)
    check_activation(ALG9_POST, activation, eps)
    X = embed(x, theta.W_e, theta.W_p)  # lines 1-3
    X = post_ln_stack(X, theta.layers, None, activation, eps)  # lines 4-9, Mask ≡ 1
    return e_head(X, theta, activation, eps)  # lines 10-12 (part: logits)


def pre_ln_e_transformer_logits(x, theta: PreLNETransformerParams, *, activation=gelu, eps=EPS):
    """Algorithm 9 in Pre-LN form, the encoder's final norm before the head: ``(N_V, ℓ)``."""
    check_inputs(ALG9_PRE, theta, PreLNETransformerParams, _e_view, _FINAL_NORMS_E, x=x)
    check_activation(ALG9_PRE, activation, eps)
    X = embed(x, theta.W_e, theta.W_p)  # lines 1-3
    X = pre_ln_stack(
        X, theta.layers, None, activation, theta.gamma_enc, theta.beta_enc, eps
    )  # lines 4-9
    return e_head(X, theta, activation, eps)  # lines 10-12 (part: logits)


def pre_ln_e_transformer(x, theta: PreLNETransformerParams, *, activation=gelu, eps=EPS):
    """``P = softmax(W_u X)`` of :func:`pre_ln_e_transformer_logits`."""
    return softmax(pre_ln_e_transformer_logits(x, theta, activation=activation, eps=eps))


# -------------------------------------------------------------------------------- Algorithm 10


def pre_ln_d_transformer_logits(
    x, theta: parameters.DTransformerParams, *, activation=gelu, eps=EPS
):
    """Algorithm 10 as printed (Pre-LN), composed from the building blocks: ``W_u X``, ``(N_V, ℓ)``.

    Equal to :func:`formal_algorithms.d_transformer_logits` bit for bit.
    """
    check_inputs(ALG10_PRE, theta, parameters.DTransformerParams, x=x)
    check_activation(ALG10_PRE, activation, eps)
    X = embed(x, theta.W_e, theta.W_p)  # lines 1-3
    Mask = unidirectional_mask(X.shape[1])
    X = pre_ln_stack(X, theta.layers, Mask, activation, theta.gamma, theta.beta, eps)  # lines 4-10
    return unembedding_matrix(theta) @ X  # line 11 (part: logits): before the softmax


def post_ln_d_transformer_logits(
    x, theta: parameters.DTransformerParams, *, activation=gelu, eps=EPS
):
    """Algorithm 10 in Post-LN form: lines 5-8 become ``post_ln_layer``; line 10 is kept, so θ is
    exactly Algorithm 10's. Returns ``W_u X``, ``(N_V, ℓ)``."""
    check_inputs(ALG10_POST, theta, parameters.DTransformerParams, x=x)
    check_activation(ALG10_POST, activation, eps)
    X = embed(x, theta.W_e, theta.W_p)  # lines 1-3
    Mask = unidirectional_mask(X.shape[1])
    X = post_ln_stack(X, theta.layers, Mask, activation, eps)  # lines 4-9, Post-LN
    X = layer_norm_columns(X, theta.gamma, theta.beta, eps)  # line 10, kept
    return unembedding_matrix(theta) @ X  # line 11 (part: logits): before the softmax


def post_ln_d_transformer(x, theta: parameters.DTransformerParams, *, activation=gelu, eps=EPS):
    """``P = softmax(W_u X)`` of :func:`post_ln_d_transformer_logits`."""
    return softmax(post_ln_d_transformer_logits(x, theta, activation=activation, eps=eps))


#: Every form by architecture and placement; the paper's form of each is marked in the docstring.
FORMS = {
    "ed": {"post": post_ln_ed_transformer_logits, "pre": pre_ln_ed_transformer_logits},
    "e": {"post": post_ln_e_transformer_logits, "pre": pre_ln_e_transformer_logits},
    "d": {"post": post_ln_d_transformer_logits, "pre": pre_ln_d_transformer_logits},
}
PAPER_PLACEMENT = {"ed": "post", "e": "post", "d": "pre"}


# ------------------------------------------------------------------------------- parameters


def with_final_norms(theta):
    """The Pre-LN θ that shares every leaf of a paper θ (Algorithm 8 or 9), its final norms set to
    the identity-at-init γ = 1, β = 0: the same weights, run in the other form."""
    d_e, dtype = theta.W_e.shape[0], theta.W_e.dtype
    ones, zeros = jnp.ones(d_e, dtype), jnp.zeros(d_e, dtype)
    if isinstance(theta, parameters.EDTransformerParams):
        return PreLNEDTransformerParams(
            theta.W_e, theta.W_p, theta.enc, theta.dec, ones, zeros, ones, zeros, theta.W_u
        )
    if isinstance(theta, parameters.ETransformerParams):
        return PreLNETransformerParams(
            theta.W_e,
            theta.W_p,
            theta.layers,
            ones,
            zeros,
            theta.W_f,
            theta.b_f,
            theta.gamma,
            theta.beta,
            theta.W_u,
        )
    raise TypeError(f"with_final_norms: expected θ of Algorithm 8 or 9, got {type(theta).__name__}")


_SIZES = ("N_V", "ell_max", "H", "d_e", "d_mlp")
_OPTIONAL = ("d_attn", "d_mid", "tied", "dtype")


def _check_hyperparameters(name: str, given: dict, layers: tuple, optional=_OPTIONAL) -> None:
    """The init's keywords, before Python's own error names the inner ``init_*``."""
    for key in given:
        if key not in (*_SIZES, *layers, *optional):
            fail(
                name, key, f"is not a hyperparameter; give {', '.join(_SIZES + layers)}", TypeError
            )
    missing = [key for key in (*_SIZES, *layers) if key not in given]
    if missing:
        fail(name, missing[0], f"is missing: give {', '.join(missing)}", TypeError)


def init_pre_ln_ed_transformer(key, *, dtype=None, **hyperparameters) -> PreLNEDTransformerParams:
    """θ of Algorithm 8's Pre-LN form: :func:`formal_algorithms.init_ed_transformer` (same
    hyperparameters, same draws) plus final norms γ = 1, β = 0."""
    _check_hyperparameters("init_pre_ln_ed_transformer", hyperparameters, ("L_enc", "L_dec"))
    kw = {} if dtype is None else {"dtype": dtype}
    return with_final_norms(parameters.init_ed_transformer(key, **hyperparameters, **kw))


def init_pre_ln_e_transformer(key, *, dtype=None, **hyperparameters) -> PreLNETransformerParams:
    """θ of Algorithm 9's Pre-LN form: :func:`formal_algorithms.init_e_transformer` plus the
    encoder's final norm γ = 1, β = 0."""
    _check_hyperparameters(
        "init_pre_ln_e_transformer", hyperparameters, ("L",), (*_OPTIONAL, "d_f")
    )
    kw = {} if dtype is None else {"dtype": dtype}
    return with_final_norms(parameters.init_e_transformer(key, **hyperparameters, **kw))


def init_post_ln_d_transformer(key, **hyperparameters) -> parameters.DTransformerParams:
    """θ of Algorithm 10's Post-LN form: exactly :func:`formal_algorithms.init_d_transformer`."""
    _check_hyperparameters("init_post_ln_d_transformer", hyperparameters, ("L",))
    return parameters.init_d_transformer(key, **hyperparameters)


def _ed_view(theta):
    return parameters.EDTransformerParams(theta.W_e, theta.W_p, theta.enc, theta.dec, theta.W_u)


def _e_view(theta):
    return parameters.ETransformerParams(
        theta.W_e, theta.W_p, theta.layers, theta.W_f, theta.b_f, theta.gamma, theta.beta, theta.W_u
    )
