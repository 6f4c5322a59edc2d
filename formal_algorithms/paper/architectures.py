"""Paper §6, architectures: Algorithm 8 (EDTransformer), 9 (ETransformer), 10 (DTransformer).

Each algorithm is a pure function of a token sequence and a parameter pytree θ whose fields carry
the paper's symbols. ``*_logits`` returns ``W_u X`` (what training and interop need); the function
named after the algorithm returns ``P = softmax(W_u X)`` exactly as its last line. The
hyperparameters ℓ_max, L, H, d_e, d_mlp, d_f, d_attn, d_mid are read off the shapes of θ
(:func:`.validation.hyperparameters`); θ's classes, specs and init functions are in
:mod:`.parameters`, its checks in :mod:`.validation`.

``W_u = None`` in θ means the tied unembedding ``W_u = W_eᵀ`` (paper §5): one array, two uses, so
the gradient of ``W_e`` is the sum over both paths.
"""

import jax.numpy as jnp
import numpy as np

from .attention import mh_attention, unidirectional_mask
from .checks import check_activation, check_mask, check_shape, check_valid, fail
from .embeddings import embed
from .functions import gelu, relu, softmax
from .normalisation import EPS, layer_norm_columns
from .parameters import (
    DecoderLayer,
    DTransformerParams,
    EDTransformerParams,
    ETransformerParams,
    Layer,
)
from .shapes import Arr, Bool, Float, Int
from .validation import check_inputs

# ------------------------------------------------------------------------------ building blocks


MLP = "mlp (the MLP of Algorithms 8-10)"
ALG8, ALG9 = "EDTransformer (Algorithm 8)", "ETransformer (Algorithm 9)"


def mlp(
    X: Float[Arr, "d_e ell"],
    W_1: Float[Arr, "d_mlp d_e"],
    b_1: Float[Arr, " d_mlp"],
    W_2: Float[Arr, "d_e d_mlp"],
    b_2: Float[Arr, " d_e"],
    activation,
) -> Float[Arr, "d_e ell"]:
    """``W_2 σ(W_1 X + b_1 1ᵀ) + b_2 1ᵀ``: the position-wise MLP of lines 7 (Alg 8, 9) and 8 (Alg 10)."""
    _check_mlp(X, W_1, b_1, W_2, b_2, activation)
    return W_2 @ activation(W_1 @ X + b_1[:, None]) + b_2[:, None]


def _check_mlp(X, W_1, b_1, W_2, b_2, activation):
    """Shapes agree (static, so this costs nothing under jit) and σ is a function."""
    check_shape(MLP, "X", X, (None, None))
    check_shape(MLP, "W_1", W_1, (None, np.shape(X)[0]))
    check_shape(MLP, "b_1", b_1, (np.shape(W_1)[0],))
    check_shape(MLP, "W_2", W_2, (None, np.shape(W_1)[0]))
    check_shape(MLP, "b_2", b_2, (np.shape(W_2)[0],))
    if not callable(activation):
        fail(
            MLP,
            "activation",
            f"must be a function such as formal_algorithms.gelu, got {activation!r}",
            TypeError,
        )


POST_LN = "post_ln_layer (lines 5-8 of Algorithm 9)"
PRE_LN = "pre_ln_layer (lines 5-8 of Algorithm 10)"
ED_LAYER = "ed_decoder_layer (lines 14-19 of Algorithm 8)"


def check_layer(where, X, layer, Mask, attention, expected=Layer, Z=None, cross_Mask=None):
    """A layer's own arguments, so that a wrong one is named here rather than by the inner
    algorithm it reaches first: ``layer`` a ``Layer`` (``DecoderLayer``), ``X`` (and ``Z``) with
    d_e rows, and, for Algorithm 5 itself (other ``attention`` forms take other masks), the masks
    ``(ℓ, ℓ)`` and ``(ℓ_z, ℓ)``. Shapes and types: nothing that costs a pass over values."""
    if not isinstance(layer, expected):
        got = type(layer).__name__
        fail(
            where, "layer", f"must be one {expected.__name__} (θ's layers[l]), got {got}", TypeError
        )
    d_e = np.shape(layer.gamma1 if expected is Layer else layer.gamma3)[0]
    check_shape(where, "X", X, (d_e, None))
    if attention is not mh_attention:  # e.g. a cache stands for Z
        return
    if Z is not None:
        check_shape(where, "Z", Z, (d_e, None))
    if Mask is not None:
        check_mask(where, Mask, X.shape[1], X.shape[1])
    if cross_Mask is not None:
        check_mask(where, cross_Mask, Z.shape[1], X.shape[1], "cross_Mask")


def post_ln_layer(X, layer: Layer, Mask, activation, eps=EPS, *, attention=mh_attention):
    """Lines 5-8 of Algorithms 9 and 8 (encoder): a Post-LN layer, the norm after each residual sum.

    ``attention``: Algorithm 5 (``attention(X, Z, W, Mask)``), or another evaluation of it (the
    batch-as-columns one of :mod:`.fast`)."""
    check_layer(POST_LN, X, layer, Mask, attention)
    X = X + attention(X, X, layer.W, Mask)  # line 5
    X = layer_norm_columns(X, layer.gamma1, layer.beta1, eps)  # line 6
    X = X + mlp(X, layer.W_mlp1, layer.b_mlp1, layer.W_mlp2, layer.b_mlp2, activation)  # line 7
    return layer_norm_columns(X, layer.gamma2, layer.beta2, eps)  # line 8


def pre_ln_layer(X, layer: Layer, Mask, activation, eps=EPS, *, attention=mh_attention):
    """Lines 5-8 of Algorithm 10: a Pre-LN layer; only the branch input X̃ is normalised, never X.
    ``attention`` as in :func:`post_ln_layer`."""
    check_layer(PRE_LN, X, layer, Mask, attention)
    X_tilde = layer_norm_columns(X, layer.gamma1, layer.beta1, eps)  # line 5
    X = X + attention(X_tilde, X_tilde, layer.W, Mask)  # line 6
    X_tilde = layer_norm_columns(X, layer.gamma2, layer.beta2, eps)  # line 7
    X = X + mlp(
        X_tilde, layer.W_mlp1, layer.b_mlp1, layer.W_mlp2, layer.b_mlp2, activation
    )  # line 8
    return X


def ed_decoder_layer(
    X,
    Z,
    layer: DecoderLayer,
    Mask,
    activation=relu,
    eps=EPS,
    cross_Mask=None,
    *,
    attention=mh_attention,
):
    """Lines 14-19 of Algorithm 8: causal self-attention, cross-attention to Z, MLP, each Post-LN.

    ``cross_Mask`` (default ``None``: the paper's ``Mask ≡ 1``) masks padded context tokens;
    ``attention`` as in :func:`post_ln_layer`.
    """
    check_layer(ED_LAYER, X, layer, Mask, attention, DecoderLayer, Z, cross_Mask)
    X = X + attention(X, X, layer.W_dec, Mask)  # line 14
    X = layer_norm_columns(X, layer.gamma3, layer.beta3, eps)  # line 15
    X = X + attention(X, Z, layer.W_ed, cross_Mask)  # line 16: Mask ≡ 1
    X = layer_norm_columns(X, layer.gamma4, layer.beta4, eps)  # line 17
    X = X + mlp(X, layer.W_mlp3, layer.b_mlp3, layer.W_mlp4, layer.b_mlp4, activation)  # line 18
    return layer_norm_columns(X, layer.gamma5, layer.beta5, eps)  # line 19


def key_padding_mask(valid, ell_x: int):
    """``Mask[t_z, t_x] = valid[t_z]``, shape ``(ℓ_z, ℓ_x)``: every query attends to real keys only.

    ``None`` for ``valid=None``, i.e. the paper's ``Mask ≡ 1``. Padding is not in the paper (it has
    no batches); the training and inference code pad sequences to shared lengths with it.
    """
    if valid is None:
        return None
    if jnp.ndim(valid) != 1:
        fail(
            "key_padding_mask",
            "valid",
            f"must be a 1-D boolean (ℓ_z,), got shape {jnp.shape(valid)}",
        )
    return jnp.broadcast_to(valid[:, None], (valid.shape[0], ell_x))


def unembedding_matrix(theta):
    """``W_u``, or ``W_eᵀ`` when θ ties them (``W_u is None``)."""
    return theta.W_e.T if theta.W_u is None else theta.W_u


# --------------------------------------------------------------------------------- Algorithm 8


def ed_encode(
    z: Int[Arr, " ell_z"],
    theta: EDTransformerParams,
    *,
    activation=relu,
    eps=EPS,
    valid: Bool[Arr, " ell_z"] | None = None,
) -> Float[Arr, "d_e ell_z"]:
    """Lines 1-9 of Algorithm 8: the encoded context ``Z`` of shape ``(d_e, ℓ_z)``.

    ``valid`` (optional, ``(ℓ_z,)`` bool): z is padded at its end and only the True positions are
    real; their keys alone are attended to (:func:`key_padding_mask`), so the real columns equal
    those of the unpadded z.
    """
    (z,) = check_inputs(theta, ALG8, EDTransformerParams, z=z)
    check_activation(ALG8, activation, eps)
    check_valid(ALG8, "valid", valid, z.shape[0])
    Z = embed(z, theta.W_e, theta.W_p)  # lines 1-3
    Mask = key_padding_mask(valid, Z.shape[1])
    for layer in theta.enc:  # line 4
        Z = post_ln_layer(Z, layer, Mask, activation, eps)  # lines 5-8, Mask ≡ 1
    return Z


def ed_decode_logits(
    x: Int[Arr, " ell_x"],
    Z: Float[Arr, "d_e ell_z"],
    theta: EDTransformerParams,
    *,
    activation=relu,
    eps=EPS,
    z_valid: Bool[Arr, " ell_z"] | None = None,
) -> Float[Arr, "N_V ell_x"]:
    """Lines 10-21 of Algorithm 8 up to the softmax: ``W_u X`` of shape ``(N_V, ℓ_x)``.

    ``z_valid`` masks the padded columns of ``Z`` in cross-attention (see :func:`ed_encode`).
    """
    (x,) = check_inputs(theta, ALG8, EDTransformerParams, x=x)
    check_activation(ALG8, activation, eps)
    check_shape(ALG8, "Z", Z, (theta.W_e.shape[0], None))
    check_valid(ALG8, "z_valid", z_valid, np.shape(Z)[1])
    X = embed(x, theta.W_e, theta.W_p)  # lines 10-12
    Mask = unidirectional_mask(X.shape[1])
    cross_Mask = key_padding_mask(z_valid, X.shape[1])
    for layer in theta.dec:  # line 13 (erratum: printed "for i", the body uses l)
        X = ed_decoder_layer(X, Z, layer, Mask, activation, eps, cross_Mask)  # lines 14-19
    return unembedding_matrix(theta) @ X  # line 21 (part: logits): before the softmax


def ed_transformer_logits(
    z: Int[Arr, " ell_z"],
    x: Int[Arr, " ell_x"],
    theta: EDTransformerParams,
    *,
    activation=relu,
    eps=EPS,
    z_valid: Bool[Arr, " ell_z"] | None = None,
) -> Float[Arr, "N_V ell_x"]:
    """Algorithm 8 without its final softmax: ``W_u X``, shape ``(N_V, ℓ_x)``.

    ``activation`` is the paper's ReLU; ``z_valid`` marks the real tokens of a z padded at its end.
    """
    if np.ndim(z) == 1:  # (a wrong z is named by ed_encode)
        check_valid(ALG8, "z_valid", z_valid, np.shape(z)[0])
    Z = ed_encode(z, theta, activation=activation, eps=eps, valid=z_valid)
    return ed_decode_logits(x, Z, theta, activation=activation, eps=eps, z_valid=z_valid)


def ed_transformer(
    z: Int[Arr, " ell_z"],
    x: Int[Arr, " ell_x"],
    theta: EDTransformerParams,
    *,
    activation=relu,
    eps=EPS,
) -> Float[Arr, "N_V ell_x"]:
    """Algorithm 8, ``P ← EDTransformer(z, x | θ)``: encoder-decoder, Post-LN, ReLU.

    ``z``: context tokens ``(ℓ_z,)``; ``x``: primary tokens ``(ℓ_x,)``; both 0-based ids, at most
    ℓ_max long. Returns ``P`` of shape ``(N_V, ℓ_x)``; column t is ``P̂(x[t+1] | x[:t+1], z)``.
    Lines 1-9 are :func:`ed_encode`, lines 10-20 :func:`ed_decode_logits`, line 21 the softmax.
    ``activation`` is the paper's ReLU unless given (as for Algorithms 9 and 10).
    """
    return softmax(ed_transformer_logits(z, x, theta, activation=activation, eps=eps))  # line 21


# --------------------------------------------------------------------------------- Algorithm 9


def e_transformer_logits(
    x: Int[Arr, " ell"],
    theta: ETransformerParams,
    *,
    activation=gelu,
    eps=EPS,
    valid: Bool[Arr, " ell"] | None = None,
) -> Float[Arr, "N_V ell"]:
    """Algorithm 9 without its final softmax: ``W_u X``, shape ``(N_V, ℓ)``.

    ``valid`` (optional): x is padded at its end; padded keys are masked in every attention, so the
    real columns equal those of the unpadded x (the padded columns are meaningless).
    """
    (x,) = check_inputs(theta, ALG9, ETransformerParams, x=x)
    check_activation(ALG9, activation, eps)
    check_valid(ALG9, "valid", valid, x.shape[0])
    X = embed(x, theta.W_e, theta.W_p)  # lines 1-3
    Mask = key_padding_mask(valid, X.shape[1])
    for layer in theta.layers:  # line 4
        X = post_ln_layer(X, layer, Mask, activation, eps)  # lines 5-8, Mask ≡ 1
    X = activation(theta.W_f @ X + theta.b_f[:, None])  # line 10
    X = layer_norm_columns(X, theta.gamma, theta.beta, eps)  # line 11
    return unembedding_matrix(theta) @ X  # line 12 (part: logits): before the softmax


def e_transformer(
    x: Int[Arr, " ell"], theta: ETransformerParams, *, activation=gelu, eps=EPS
) -> Float[Arr, "N_V ell"]:
    """Algorithm 9, ``P ← ETransformer(x | θ)``: encoder-only (BERT), Post-LN, GELU.

    ``x``: ``(ℓ,)`` token ids. Returns ``P`` ``(N_V, ℓ)``, each column a distribution over V.
    ``activation`` defaults to the exact GELU of the paper.
    """
    return softmax(e_transformer_logits(x, theta, activation=activation, eps=eps))  # line 12


# -------------------------------------------------------------------------------- Algorithm 10


def d_transformer_logits(
    x: Int[Arr, " ell"], theta: DTransformerParams, *, activation=gelu, eps=EPS
) -> Float[Arr, "N_V ell"]:
    """Algorithm 10 without its final softmax: ``W_u X``, shape ``(N_V, ℓ)``."""
    (x,) = check_inputs(theta, "DTransformer (Algorithm 10)", DTransformerParams, x=x)
    check_activation("DTransformer (Algorithm 10)", activation, eps)
    X = embed(x, theta.W_e, theta.W_p)  # lines 1-3
    Mask = unidirectional_mask(X.shape[1])
    for layer in theta.layers:  # line 4
        X = pre_ln_layer(X, layer, Mask, activation, eps)  # lines 5-8
    X = layer_norm_columns(X, theta.gamma, theta.beta, eps)  # line 10
    return unembedding_matrix(theta) @ X  # line 11 (part: logits): before the softmax


def d_transformer(
    x: Int[Arr, " ell"], theta: DTransformerParams, *, activation=gelu, eps=EPS
) -> Float[Arr, "N_V ell"]:
    """Algorithm 10, ``P ← DTransformer(x | θ)``: decoder-only (GPT-2), Pre-LN, GELU, final LN.

    ``x``: ``(ℓ,)`` token ids. Returns ``P`` ``(N_V, ℓ)``; column t is ``P̂(x[t+1] | x[:t+1])``.
    ``activation=gelu_tanh`` gives GPT-2's default ``gelu_new``.
    """
    return softmax(d_transformer_logits(x, theta, activation=activation, eps=eps))  # line 11
