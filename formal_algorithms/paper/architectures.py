"""Paper §6, architectures: Algorithm 8 (EDTransformer), 9 (ETransformer), 10 (DTransformer).

Each algorithm is a pure function of a token sequence and a parameter pytree θ whose fields carry
the paper's symbols. ``*_logits`` returns ``W_u X`` (what training and interop need); the function
named after the algorithm returns ``P = softmax(W_u X)`` exactly as its last line. The
hyperparameters ℓ_max, L, H, d_e, d_mlp, d_f, d_attn, d_mid are read off the shapes of θ
(:func:`hyperparameters`); the init functions take them as arguments.

``W_u = None`` in θ means the tied unembedding ``W_u = W_eᵀ`` (paper §5): one array, two uses, so
the gradient of ``W_e`` is the sum over both paths.
"""

import functools
import inspect
import re
from typing import NamedTuple

import jax
import jax.numpy as jnp

from .attention import MHAttentionParams, mh_attention, mh_attention_spec, unidirectional_mask
from .checks import as_tokens, check_activation, check_sizes, check_tokens, fail
from .embeddings import embed, embeddings_spec
from .functions import gelu, relu, softmax
from .initialisation import is_spec, materialise, ones, weight, zeros
from .normalisation import EPS, layer_norm_columns
from .shapes import Arr, Bool, Float, Int


class Layer(NamedTuple):
    """One layer l of Algorithms 8 (encoder), 9 and 10: ``W_l``, ``γ_l^1, β_l^1, γ_l^2, β_l^2``, MLP."""

    W: MHAttentionParams  # self-attention, d_x = d_z = d_out = d_e
    gamma1: jax.Array  # (d_e,)
    beta1: jax.Array  # (d_e,)
    gamma2: jax.Array  # (d_e,)
    beta2: jax.Array  # (d_e,)
    W_mlp1: jax.Array  # (d_mlp, d_e)
    b_mlp1: jax.Array  # (d_mlp,)
    W_mlp2: jax.Array  # (d_e, d_mlp)
    b_mlp2: jax.Array  # (d_e,)


class DecoderLayer(NamedTuple):
    """One decoder layer l of Algorithm 8: ``W_l^dec``, ``W_l^{e/d}``, ``γ_l^{3,4,5}``, ``β_l^{3,4,5}``, MLP."""

    W_dec: MHAttentionParams  # causal self-attention
    W_ed: MHAttentionParams  # cross-attention to the encoder's Z
    gamma3: jax.Array
    beta3: jax.Array
    gamma4: jax.Array
    beta4: jax.Array
    gamma5: jax.Array
    beta5: jax.Array
    W_mlp3: jax.Array  # (d_mlp, d_e)
    b_mlp3: jax.Array  # (d_mlp,)
    W_mlp4: jax.Array  # (d_e, d_mlp)
    b_mlp4: jax.Array  # (d_e,)


class EDTransformerParams(NamedTuple):
    """θ of Algorithm 8. ``W_e``, ``W_p`` are shared by encoder and decoder."""

    W_e: jax.Array  # (d_e, N_V)
    W_p: jax.Array  # (d_e, ℓ_max)
    enc: tuple[Layer, ...]  # L_enc layers
    dec: tuple[DecoderLayer, ...]  # L_dec layers
    W_u: jax.Array | None  # (N_V, d_e), or None: tied to W_eᵀ


class ETransformerParams(NamedTuple):
    """θ of Algorithm 9 (with the erratum fixed: ``W_u`` is ``(N_V, d_f)``)."""

    W_e: jax.Array  # (d_e, N_V)
    W_p: jax.Array  # (d_e, ℓ_max)
    layers: tuple[Layer, ...]  # L layers
    W_f: jax.Array  # (d_f, d_e)
    b_f: jax.Array  # (d_f,)
    gamma: jax.Array  # (d_f,)
    beta: jax.Array  # (d_f,)
    W_u: jax.Array | None  # (N_V, d_f), or None: tied to W_eᵀ (needs d_f = d_e)


class DTransformerParams(NamedTuple):
    """θ of Algorithm 10."""

    W_e: jax.Array  # (d_e, N_V)
    W_p: jax.Array  # (d_e, ℓ_max)
    layers: tuple[Layer, ...]  # L layers
    gamma: jax.Array  # (d_e,) final layer norm
    beta: jax.Array  # (d_e,)
    W_u: jax.Array | None  # (N_V, d_e), or None: tied to W_eᵀ


# ------------------------------------------------------------------------------ building blocks


def mlp(
    X: Float[Arr, "d_e ell"],
    W_1: Float[Arr, "d_mlp d_e"],
    b_1: Float[Arr, " d_mlp"],
    W_2: Float[Arr, "d_e d_mlp"],
    b_2: Float[Arr, " d_e"],
    activation,
) -> Float[Arr, "d_e ell"]:
    """``W_2 σ(W_1 X + b_1 1ᵀ) + b_2 1ᵀ``: the position-wise MLP of lines 7 (Alg 8, 9) and 8 (Alg 10)."""
    return W_2 @ activation(W_1 @ X + b_1[:, None]) + b_2[:, None]


def post_ln_layer(X, layer: Layer, Mask, activation, eps=EPS, *, attention=mh_attention):
    """Lines 5-8 of Algorithms 8 (encoder) and 9: a Post-LN layer, the norm after each residual sum.

    ``attention``: Algorithm 5 (``attention(X, Z, W, Mask)``), or another evaluation of it (the
    batch-as-columns one of :mod:`.fast`)."""
    X = X + attention(X, X, layer.W, Mask)  # line 5
    X = layer_norm_columns(X, layer.gamma1, layer.beta1, eps)  # line 6
    X = X + mlp(X, layer.W_mlp1, layer.b_mlp1, layer.W_mlp2, layer.b_mlp2, activation)  # line 7
    return layer_norm_columns(X, layer.gamma2, layer.beta2, eps)  # line 8


def pre_ln_layer(X, layer: Layer, Mask, activation, eps=EPS, *, attention=mh_attention):
    """Lines 5-8 of Algorithm 10: a Pre-LN layer; only the branch input X̃ is normalised, never X.
    ``attention`` as in :func:`post_ln_layer`."""
    X_tilde = layer_norm_columns(X, layer.gamma1, layer.beta1, eps)  # line 5
    X = X + attention(X_tilde, X_tilde, layer.W, Mask)  # line 6
    X_tilde = layer_norm_columns(X, layer.gamma2, layer.beta2, eps)  # line 7
    X = X + mlp(
        X_tilde, layer.W_mlp1, layer.b_mlp1, layer.W_mlp2, layer.b_mlp2, activation
    )  # line 8
    return X


def ed_decoder_layer(
    X, Z, layer: DecoderLayer, Mask, activation=relu, eps=EPS, cross_Mask=None, *,
    attention=mh_attention,
):  # fmt: skip
    """Lines 14-19 of Algorithm 8: causal self-attention, cross-attention to Z, MLP, each Post-LN.

    ``cross_Mask`` (default ``None``: the paper's ``Mask ≡ 1``) masks padded context tokens;
    ``attention`` as in :func:`post_ln_layer`.
    """
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
    (z,) = check_inputs(theta, "EDTransformer (Algorithm 8)", z=z)
    check_activation("EDTransformer (Algorithm 8)", activation, eps)
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
    (x,) = check_inputs(theta, "EDTransformer (Algorithm 8)", x=x)
    check_activation("EDTransformer (Algorithm 8)", activation, eps)
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
    (x,) = check_inputs(theta, "ETransformer (Algorithm 9)", x=x)
    check_activation("ETransformer (Algorithm 9)", activation, eps)
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
    (x,) = check_inputs(theta, "DTransformer (Algorithm 10)", x=x)
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


# ------------------------------------------------------------------------------ initialisation
# Each θ is first described as a tree of leaf specs (see :mod:`.initialisation`); the init
# functions draw it on the caller's key, and check_params compares against the same specs.


def layer_spec(H, d_e, d_mlp, d_attn, d_mid) -> Layer:
    return Layer(
        mh_attention_spec(H, d_e, d_e, d_attn, d_mid, d_e),
        ones(d_e), zeros(d_e), ones(d_e), zeros(d_e),
        weight(d_mlp, d_e), zeros(d_mlp), weight(d_e, d_mlp), zeros(d_e),
    )  # fmt: skip


def decoder_layer_spec(H, d_e, d_mlp, d_attn, d_mid) -> DecoderLayer:
    return DecoderLayer(
        mh_attention_spec(H, d_e, d_e, d_attn, d_mid, d_e),
        mh_attention_spec(H, d_e, d_e, d_attn, d_mid, d_e),
        ones(d_e), zeros(d_e), ones(d_e), zeros(d_e), ones(d_e), zeros(d_e),
        weight(d_mlp, d_e), zeros(d_mlp), weight(d_e, d_mlp), zeros(d_e),
    )  # fmt: skip


def _check_sizes(algorithm, N_V, ell_max, **sizes):
    """Every size a positive integer; N_V leaves room for the paper's three special tokens."""
    check_sizes(algorithm, 0, N_V=N_V)
    if N_V < 3:
        fail(algorithm, "N_V", f"= {N_V} must be at least 3: the special tokens mask, bos, eos "
             "are the ids N_V - 3, N_V - 2, N_V - 1")  # fmt: skip
    check_sizes(algorithm, ell_max=ell_max, **sizes)


def _head_dims(H, d_e, d_attn, d_mid):
    if d_attn is None or d_mid is None:
        if d_e % H:
            fail("init", "H", f"= {H} does not divide d_e = {d_e}; pass d_attn and d_mid")
    return (d_e // H if d_attn is None else d_attn), (d_e // H if d_mid is None else d_mid)


def ed_transformer_spec(
    *, N_V, ell_max, L_enc, L_dec, H, d_e, d_mlp, d_attn=None, d_mid=None, tied=False
) -> EDTransformerParams:
    name = "init_ed_transformer (Algorithm 8)"
    check_sizes(name, 0, L_enc=L_enc, L_dec=L_dec)
    if L_enc == L_dec == 0:
        fail(name, "L_enc", "and L_dec are both 0; give at least one layer")
    _check_sizes(name, N_V, ell_max, H=H, d_e=d_e, d_mlp=d_mlp, d_attn=d_attn, d_mid=d_mid)
    d_attn, d_mid = _head_dims(H, d_e, d_attn, d_mid)
    return EDTransformerParams(
        *embeddings_spec(N_V, d_e, ell_max),
        tuple(layer_spec(H, d_e, d_mlp, d_attn, d_mid) for _ in range(L_enc)),
        tuple(decoder_layer_spec(H, d_e, d_mlp, d_attn, d_mid) for _ in range(L_dec)),
        None if tied else weight(N_V, d_e),
    )


def e_transformer_spec(
    *, N_V, ell_max, L, H, d_e, d_mlp, d_f=None, d_attn=None, d_mid=None, tied=False
) -> ETransformerParams:
    _check_sizes("init_e_transformer (Algorithm 9)", N_V, ell_max, L=L, H=H, d_e=d_e,
                 d_mlp=d_mlp, d_f=d_f, d_attn=d_attn, d_mid=d_mid)  # fmt: skip
    d_attn, d_mid = _head_dims(H, d_e, d_attn, d_mid)
    d_f = d_e if d_f is None else d_f
    if tied and d_f != d_e:
        fail("init_e_transformer (Algorithm 9)", "tied", f"needs d_f = d_e, got {d_f} != {d_e}")
    return ETransformerParams(
        *embeddings_spec(N_V, d_e, ell_max),
        tuple(layer_spec(H, d_e, d_mlp, d_attn, d_mid) for _ in range(L)),
        weight(d_f, d_e), zeros(d_f), ones(d_f), zeros(d_f),
        None if tied else weight(N_V, d_f),
    )  # fmt: skip


def d_transformer_spec(
    *, N_V, ell_max, L, H, d_e, d_mlp, d_attn=None, d_mid=None, tied=False
) -> DTransformerParams:
    _check_sizes("init_d_transformer (Algorithm 10)", N_V, ell_max, L=L, H=H, d_e=d_e,
                 d_mlp=d_mlp, d_attn=d_attn, d_mid=d_mid)  # fmt: skip
    d_attn, d_mid = _head_dims(H, d_e, d_attn, d_mid)
    return DTransformerParams(
        *embeddings_spec(N_V, d_e, ell_max),
        tuple(layer_spec(H, d_e, d_mlp, d_attn, d_mid) for _ in range(L)),
        ones(d_e), zeros(d_e),
        None if tied else weight(N_V, d_e),
    )  # fmt: skip


def _jit_init(init):
    """Compile an init once per hyperparameter set: everything but the key is static."""
    static = [name for name in inspect.signature(init).parameters if name != "key"]
    return functools.wraps(init)(jax.jit(init, static_argnames=static))


@_jit_init
def init_ed_transformer(
    key, *, N_V, ell_max, L_enc, L_dec, H, d_e, d_mlp, d_attn=None, d_mid=None, tied=False,
    dtype=None,
) -> EDTransformerParams:  # fmt: skip
    """θ of Algorithm 8. ``d_attn`` and ``d_mid`` default to ``d_e / H`` (as in Vaswani et al.).

    Initialisation (the paper gives none): embeddings N(0, 0.02²); weight matrices N(0, 1/fan_in);
    biases 0; γ = 1, β = 0. ``tied=True`` sets ``W_u = None`` (``W_u = W_eᵀ``).
    """
    spec = ed_transformer_spec(
        N_V=N_V, ell_max=ell_max, L_enc=L_enc, L_dec=L_dec, H=H, d_e=d_e, d_mlp=d_mlp,
        d_attn=d_attn, d_mid=d_mid, tied=tied,
    )  # fmt: skip
    return materialise(key, spec, dtype)


@_jit_init
def init_e_transformer(
    key, *, N_V, ell_max, L, H, d_e, d_mlp, d_f=None, d_attn=None, d_mid=None, tied=False,
    dtype=None,
) -> ETransformerParams:  # fmt: skip
    """θ of Algorithm 9; ``d_f`` defaults to ``d_e`` (as in BERT), ``W_u`` is ``(N_V, d_f)``."""
    spec = e_transformer_spec(
        N_V=N_V, ell_max=ell_max, L=L, H=H, d_e=d_e, d_mlp=d_mlp, d_f=d_f, d_attn=d_attn,
        d_mid=d_mid, tied=tied,
    )  # fmt: skip
    return materialise(key, spec, dtype)


@_jit_init
def init_d_transformer(
    key, *, N_V, ell_max, L, H, d_e, d_mlp, d_attn=None, d_mid=None, tied=False,
    dtype=None,
) -> DTransformerParams:  # fmt: skip
    """θ of Algorithm 10 (initialisation as :func:`init_ed_transformer`)."""
    spec = d_transformer_spec(
        N_V=N_V, ell_max=ell_max, L=L, H=H, d_e=d_e, d_mlp=d_mlp, d_attn=d_attn, d_mid=d_mid,
        tied=tied,
    )  # fmt: skip
    return materialise(key, spec, dtype)


# ----------------------------------------------------------------------- hyperparameters, checks


def hyperparameters(theta) -> dict:
    """The hyperparameters of θ (Algorithm 8, 9 or 10), read off its shapes."""
    if type(theta) not in _ALGORITHM_OF:
        fail("hyperparameters", "theta", f"must be θ of Algorithm 8, 9 or 10, got {_describe(theta)}",
             TypeError)  # fmt: skip
    d_e, N_V = theta.W_e.shape
    hp = dict(N_V=N_V, ell_max=theta.W_p.shape[1], d_e=d_e, tied=theta.W_u is None)
    if isinstance(theta, EDTransformerParams):
        if not (theta.enc or theta.dec):
            fail("EDTransformerParams", "theta", "has no encoder and no decoder layers")
        first = (theta.enc or theta.dec)[0]
        W = first.W if isinstance(first, Layer) else first.W_dec
        W_mlp = first.W_mlp1 if isinstance(first, Layer) else first.W_mlp3
        hp.update(L_enc=len(theta.enc), L_dec=len(theta.dec))
    elif isinstance(theta, (ETransformerParams, DTransformerParams)):
        if not theta.layers:
            fail(type(theta).__name__, "theta.layers", "is empty; L must be at least 1")
        W, W_mlp = theta.layers[0].W, theta.layers[0].W_mlp1
        hp.update(L=len(theta.layers))
        if isinstance(theta, ETransformerParams):
            hp.update(d_f=theta.W_f.shape[0])
    else:
        raise TypeError(f"hyperparameters: expected θ of Algorithm 8, 9 or 10, got {type(theta)}")
    H, d_attn, _ = W.W_q.shape
    hp.update(H=H, d_mlp=W_mlp.shape[0], d_attn=d_attn, d_mid=W.W_v.shape[1])
    return hp


_SPEC = {
    EDTransformerParams: ed_transformer_spec,
    ETransformerParams: e_transformer_spec,
    DTransformerParams: d_transformer_spec,
}


@functools.lru_cache(maxsize=64)
def _expected_shapes(kind, hp_items):
    spec = _SPEC[kind](**dict(hp_items))
    return jax.tree_util.tree_flatten_with_path(spec, is_leaf=is_spec)


_EXPECTED = {
    8: EDTransformerParams, 11: EDTransformerParams, 15: EDTransformerParams,
    9: ETransformerParams, 12: ETransformerParams,
    10: DTransformerParams, 13: DTransformerParams, 14: DTransformerParams,
}  # fmt: skip
_ALGORITHM_OF = {EDTransformerParams: 8, ETransformerParams: 9, DTransformerParams: 10}


def _describe(value, expected=None) -> str:
    """A short description of a wrong argument (never a tree dump)."""
    if isinstance(value, type):  # an expected class
        n = _ALGORITHM_OF.get(value)
        return f"{value.__name__} (θ of Algorithm {n})" if n else value.__name__
    if isinstance(value, dict):
        text = f"a plain dict with keys {sorted(map(str, value))[:8]}"
        if expected is not None and hasattr(expected, "_fields"):
            missing = [f for f in expected._fields if f not in value]
            text += f" (missing {missing})" if missing else ""
            text += f"; build it with {expected.__name__}(**theta)"
        return text
    if type(value) in _ALGORITHM_OF:
        return _describe(type(value))
    if hasattr(value, "_fields"):
        return type(value).__name__
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)} items"
    if value is None:
        return "None"
    return f"{type(value).__name__} {str(value)[:40]!r}"


@functools.lru_cache(maxsize=8)
def _template(kind):
    """θ's structure with one layer of every kind, all sizes 1: the expected type and number of
    dimensions of every field."""
    hp = dict(N_V=3, ell_max=1, H=1, d_e=1, d_mlp=1)
    hp.update(dict(L_enc=1, L_dec=1) if kind is EDTransformerParams else dict(L=1))
    return _SPEC[kind](**hp)


def _check_node(algorithm, path, node, template):
    """Field by field against ``template``: the first wrong field is named by its path."""
    cls = type(template)
    if type(node) is not cls:
        fail(algorithm, path, f"must be a {cls.__name__}, got {_describe(node, cls)}", TypeError)
    for name, value, t in zip(cls._fields, node, template, strict=True):
        where = f"{path}.{name}"
        if isinstance(t, tuple) and not hasattr(t, "_fields"):  # the layers
            if type(value) is not tuple:
                fail(algorithm, where, f"must be a tuple of {type(t[0]).__name__} (one per "
                     f"layer), got {_describe(value)}", TypeError)  # fmt: skip
            for i, layer in enumerate(value):
                _check_node(algorithm, f"{where}[{i}]", layer, t[0])
        elif not is_spec(t):  # a nested parameter set (MHAttentionParams)
            _check_node(algorithm, where, value, t)
        elif value is None and name == "W_u":  # tied to W_eᵀ
            continue
        elif not (hasattr(value, "shape") and hasattr(value, "dtype")):
            fail(algorithm, where, f"must be an array with {len(t.shape)} dimensions, got "
                 f"{_describe(value)}", TypeError)  # fmt: skip
        elif len(value.shape) != len(t.shape):
            fail(algorithm, where, f"has shape {tuple(value.shape)}, expected "
                 f"{len(t.shape)} dimensions")  # fmt: skip


def check_params(theta, algorithm: str | None = None, *, expected=None, **hp) -> None:
    """Raise ``TypeError``/``ValueError`` naming the first field of θ that is wrong: θ of another
    algorithm, a plain dict or tuple, a list where a tuple of layers belongs, a missing array, or
    a leaf whose shape does not fit the hyperparameters.

    ``expected``: the parameter class the algorithm needs; by default read off ``algorithm``
    ("… (Algorithm 10)" needs :class:`DTransformerParams`, 13 and 14 too; 9 and 12
    :class:`ETransformerParams`; 8, 11 and 15 :class:`EDTransformerParams`).
    The hyperparameters are read off θ (:func:`hyperparameters`) and may be overridden by keyword
    (``check_params(theta, d_e=64)`` asserts d_e too). Cheap: compares types and shapes only.
    """
    kind = type(theta)
    if expected is None and algorithm is not None:
        match = re.search(r"\(Algorithm (\d+)\)", algorithm)  # "DInference (Algorithm 14)"
        expected = _EXPECTED.get(match and int(match.group(1)))
    if expected is not None and kind is not expected:
        fail(algorithm or "check_params", "theta", f"must be {_describe(expected)}, got "
             f"{_describe(theta, expected)}", TypeError)  # fmt: skip
    if kind not in _SPEC:
        fail(algorithm or "check_params", "theta", "must be θ of Algorithm 8, 9 or 10 "
             f"(EDTransformerParams, ETransformerParams, DTransformerParams), got "
             f"{_describe(theta)}", TypeError)  # fmt: skip
    algorithm = algorithm or kind.__name__
    _check_node(algorithm, "theta", theta, _template(kind))
    try:
        read = hyperparameters(theta)
    except (AttributeError, TypeError, ValueError) as error:  # a field missing or not an array
        fail(algorithm, "theta", f"has structure {jax.tree_util.tree_structure(theta)}, which "
             f"is not a complete {kind.__name__} ({error})")  # fmt: skip
    expected_hp = {**read, **hp}
    if expected_hp["tied"] and expected_hp.get("d_f", expected_hp["d_e"]) != expected_hp["d_e"]:
        fail(algorithm, "theta.W_u", "is None (tied to W_eᵀ), which needs d_f = d_e")
    expected, expected_tree = _expected_shapes(kind, tuple(sorted(expected_hp.items())))
    actual, actual_tree = jax.tree_util.tree_flatten_with_path(theta)
    if expected_tree != actual_tree:
        fail(
            algorithm,
            "theta",
            f"has structure {actual_tree}, expected {expected_tree} for {expected_hp}",
        )
    for (path, a), (_, e) in zip(actual, expected, strict=True):
        name = "theta" + jax.tree_util.keystr(path)
        if not jnp.issubdtype(jnp.result_type(a), jnp.floating):
            fail(
                algorithm,
                name,
                f"has dtype {jnp.result_type(a)}, expected a float dtype",
                TypeError,
            )
        if jnp.shape(a) != e.shape:
            fail(algorithm, name, f"has shape {jnp.shape(a)}, expected {e.shape} for {expected_hp}")


def check_inputs(theta, algorithm, **sequences):
    """:func:`check_params`, then each token sequence (a list or tuple is taken as an array);
    returns the sequences as arrays, in order."""
    check_params(theta, algorithm)
    N_V, ell_max = theta.W_e.shape[1], theta.W_p.shape[1]
    out = []
    for name, x in sequences.items():
        x = as_tokens(x)
        check_tokens(algorithm, name, x, N_V, ell_max)
        out.append(x)
    return out
