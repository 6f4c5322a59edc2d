"""θ of Algorithms 8, 9 and 10 (paper §6): the parameter classes, whose fields carry the paper's
symbols, their specs (the shape and initial distribution of every leaf, :mod:`.initialisation`)
and the init functions that draw them.

``W_u = None`` in θ means the tied unembedding ``W_u = W_eᵀ`` (paper §5).
"""

import functools
import inspect
from typing import NamedTuple

import jax

from .attention import MHAttentionParams, mh_attention_spec
from .checks import check_sizes, fail
from .embeddings import embeddings_spec
from .initialisation import materialise, ones, weight, zeros


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


# ------------------------------------------------------------------------------ initialisation
# Each θ is first described as a tree of leaf specs (see :mod:`.initialisation`); the init
# functions draw it on the caller's key, and check_params compares against the same specs.


def norm_spec(d_e):
    """A layer norm's ``γ = 1`` and ``β = 0``."""
    return ones(d_e), zeros(d_e)


def mlp_spec(d_e, d_mlp):
    """The MLP of a layer: ``W_mlp1`` ``(d_mlp, d_e)``, ``b_mlp1``, ``W_mlp2`` ``(d_e, d_mlp)``,
    ``b_mlp2``; weights N(0, 1/fan_in), biases 0."""
    return weight(d_mlp, d_e), zeros(d_mlp), weight(d_e, d_mlp), zeros(d_e)


def layer_spec(H, d_e, d_mlp, d_attn, d_mid) -> Layer:
    attention = mh_attention_spec(H, d_e, d_e, d_attn, d_mid, d_e)
    return Layer(attention, *norm_spec(d_e), *norm_spec(d_e), *mlp_spec(d_e, d_mlp))


def decoder_layer_spec(H, d_e, d_mlp, d_attn, d_mid) -> DecoderLayer:
    self_attention = mh_attention_spec(H, d_e, d_e, d_attn, d_mid, d_e)
    cross_attention = mh_attention_spec(H, d_e, d_e, d_attn, d_mid, d_e)
    norms = (*norm_spec(d_e), *norm_spec(d_e), *norm_spec(d_e))
    return DecoderLayer(self_attention, cross_attention, *norms, *mlp_spec(d_e, d_mlp))


def _sizes(algorithm, N_V, ell_max, H, d_e, d_attn, d_mid, **sizes) -> tuple[int, int]:
    """Every size a positive integer, N_V leaving room for the paper's three special tokens;
    returns (d_attn, d_mid), each d_e / H unless given (H must then divide d_e)."""
    check_sizes(algorithm, 0, N_V=N_V)
    if N_V < 3:
        fail(
            algorithm,
            "N_V",
            f"= {N_V} must be at least 3: the special tokens mask, bos, eos "
            "are the ids N_V - 3, N_V - 2, N_V - 1",
        )
    check_sizes(algorithm, ell_max=ell_max, H=H, d_e=d_e, **sizes, d_attn=d_attn, d_mid=d_mid)
    if (d_attn is None or d_mid is None) and d_e % H:
        fail(algorithm, "H", f"= {H} does not divide d_e = {d_e}; pass d_attn and d_mid")
    return (d_e // H if d_attn is None else d_attn), (d_e // H if d_mid is None else d_mid)


def ed_transformer_spec(
    *, N_V, ell_max, L_enc, L_dec, H, d_e, d_mlp, d_attn=None, d_mid=None, tied=False
) -> EDTransformerParams:
    name = "init_ed_transformer (Algorithm 8)"
    check_sizes(name, 0, L_enc=L_enc, L_dec=L_dec)
    if L_enc == L_dec == 0:
        fail(name, "L_enc", "and L_dec are both 0; give at least one layer")
    d_attn, d_mid = _sizes(name, N_V, ell_max, H, d_e, d_attn, d_mid, d_mlp=d_mlp)
    return EDTransformerParams(
        *embeddings_spec(N_V, d_e, ell_max),
        tuple(layer_spec(H, d_e, d_mlp, d_attn, d_mid) for _ in range(L_enc)),
        tuple(decoder_layer_spec(H, d_e, d_mlp, d_attn, d_mid) for _ in range(L_dec)),
        None if tied else weight(N_V, d_e),
    )


def e_transformer_spec(
    *, N_V, ell_max, L, H, d_e, d_mlp, d_f=None, d_attn=None, d_mid=None, tied=False
) -> ETransformerParams:
    name = "init_e_transformer (Algorithm 9)"
    d_attn, d_mid = _sizes(name, N_V, ell_max, H, d_e, d_attn, d_mid, L=L, d_mlp=d_mlp, d_f=d_f)
    d_f = d_e if d_f is None else d_f
    if tied and d_f != d_e:
        fail(name, "tied", f"needs d_f = d_e, got {d_f} != {d_e}")
    return ETransformerParams(
        *embeddings_spec(N_V, d_e, ell_max),
        tuple(layer_spec(H, d_e, d_mlp, d_attn, d_mid) for _ in range(L)),
        weight(d_f, d_e),
        zeros(d_f),
        ones(d_f),
        zeros(d_f),
        None if tied else weight(N_V, d_f),
    )


def d_transformer_spec(
    *, N_V, ell_max, L, H, d_e, d_mlp, d_attn=None, d_mid=None, tied=False
) -> DTransformerParams:
    name = "init_d_transformer (Algorithm 10)"
    d_attn, d_mid = _sizes(name, N_V, ell_max, H, d_e, d_attn, d_mid, L=L, d_mlp=d_mlp)
    return DTransformerParams(
        *embeddings_spec(N_V, d_e, ell_max),
        tuple(layer_spec(H, d_e, d_mlp, d_attn, d_mid) for _ in range(L)),
        ones(d_e),
        zeros(d_e),
        None if tied else weight(N_V, d_e),
    )


def _jit_init(init):
    """Compile an init once per hyperparameter set: everything but the key is static."""
    static = [name for name in inspect.signature(init).parameters if name != "key"]
    return functools.wraps(init)(jax.jit(init, static_argnames=static))


def _draw(key, spec_fn, args, name):
    """θ drawn on ``key`` from ``spec_fn``'s spec for the arguments (``locals()``) of the init
    function ``name``."""
    hp = {k: v for k, v in args.items() if k not in ("key", "dtype")}
    return materialise(key, spec_fn(**hp), args["dtype"], name)


@_jit_init
def init_ed_transformer(
    key,
    *,
    N_V,
    ell_max,
    L_enc,
    L_dec,
    H,
    d_e,
    d_mlp,
    d_attn=None,
    d_mid=None,
    tied=False,
    dtype=None,
) -> EDTransformerParams:
    """θ of Algorithm 8. ``d_attn`` and ``d_mid`` default to ``d_e / H`` (as in Vaswani et al.).

    Initialisation (the paper gives none): embeddings N(0, 0.02²); weight matrices N(0, 1/fan_in);
    biases 0; γ = 1, β = 0. ``tied=True`` sets ``W_u = None`` (``W_u = W_eᵀ``).
    """
    return _draw(key, ed_transformer_spec, locals(), "init_ed_transformer (Algorithm 8)")


@_jit_init
def init_e_transformer(
    key,
    *,
    N_V,
    ell_max,
    L,
    H,
    d_e,
    d_mlp,
    d_f=None,
    d_attn=None,
    d_mid=None,
    tied=False,
    dtype=None,
) -> ETransformerParams:
    """θ of Algorithm 9; ``d_f`` defaults to ``d_e`` (as in BERT), ``W_u`` is ``(N_V, d_f)``."""
    return _draw(key, e_transformer_spec, locals(), "init_e_transformer (Algorithm 9)")


@_jit_init
def init_d_transformer(
    key, *, N_V, ell_max, L, H, d_e, d_mlp, d_attn=None, d_mid=None, tied=False, dtype=None
) -> DTransformerParams:
    """θ of Algorithm 10 (initialisation as :func:`init_ed_transformer`)."""
    return _draw(key, d_transformer_spec, locals(), "init_d_transformer (Algorithm 10)")
