"""RMSnorm and a Gopher-style DTransformer (paper §5 and §6).

The paper (§5) defines RMSnorm as layer_norm with ``m = β = 0``:
``ê = e / √(Σ_i e[i]² / d_e + ε) ⊙ γ`` (:func:`formal_algorithms.rms_norm`), and says (§6) that
Gopher is Algorithm 10 with RMSnorm in place of the layer norms of lines 5, 7 and 10.

Decisions:

- θ is a dedicated :class:`GopherDTransformerParams` whose layers (:class:`RMSLayer`) have no β:
  with ``m = β = 0`` a β leaf would be dead (zero gradient forever), which the toolkit's
  ``check_every_parameter_matters`` rightly flags.
- Positions: Gopher uses relative positional encodings, which the paper leaves unspecified; here
  ``W_p`` stays the learned (or hard-coded, see :mod:`.positions`) absolute embedding of eq. 1, so
  the only change from Algorithm 10 is the norm.
- ε is inside the square root, default 1e-5, as for layer_norm; the activation defaults to the
  paper's exact GELU.
"""

from __future__ import annotations

from typing import NamedTuple

import jax

from ..paper.architectures import mlp, unembedding_matrix
from ..paper.attention import MHAttentionParams, mh_attention, unidirectional_mask
from ..paper.checks import check_activation
from ..paper.embeddings import embed
from ..paper.functions import gelu, softmax
from ..paper.normalisation import EPS, rms_norm_columns
from ..paper.parameters import DTransformerParams, Layer, init_d_transformer
from .checks import check_inputs

ALG10_RMS = "Gopher DTransformer (Algorithm 10 with RMSnorm)"


class RMSLayer(NamedTuple):
    """One layer l of the Gopher-style DTransformer: Algorithm 10's layer without ``β_l^1, β_l^2``."""

    W: MHAttentionParams
    gamma1: jax.Array  # (d_e,)
    gamma2: jax.Array  # (d_e,)
    W_mlp1: jax.Array  # (d_mlp, d_e)
    b_mlp1: jax.Array  # (d_mlp,)
    W_mlp2: jax.Array  # (d_e, d_mlp)
    b_mlp2: jax.Array  # (d_e,)


class GopherDTransformerParams(NamedTuple):
    """θ of the Gopher-style DTransformer: Algorithm 10's θ without any β."""

    W_e: jax.Array  # (d_e, N_V)
    W_p: jax.Array  # (d_e, ℓ_max)
    layers: tuple[RMSLayer, ...]
    gamma: jax.Array  # (d_e,) final RMSnorm
    W_u: jax.Array | None  # (N_V, d_e), or None: tied to W_eᵀ


def rms_pre_ln_layer(X, layer: RMSLayer, Mask, activation=gelu, eps=EPS):
    """Lines 5-8 of Algorithm 10 with RMSnorm at lines 5 and 7 (Pre-LN: X itself is never normalised)."""
    X_tilde = rms_norm_columns(X, layer.gamma1, eps)  # line 5, RMSnorm
    X = X + mh_attention(X_tilde, X_tilde, layer.W, Mask)  # line 6
    X_tilde = rms_norm_columns(X, layer.gamma2, eps)  # line 7, RMSnorm
    return X + mlp(
        X_tilde, layer.W_mlp1, layer.b_mlp1, layer.W_mlp2, layer.b_mlp2, activation
    )  # line 8


def gopher_d_transformer_logits(x, theta: GopherDTransformerParams, *, activation=gelu, eps=EPS):
    """Algorithm 10 with RMSnorm at lines 5, 7 and 10 (paper §6, Gopher): ``W_u X``, ``(N_V, ℓ)``."""
    check_inputs(ALG10_RMS, theta, GopherDTransformerParams, _paper_view, x=x)
    check_activation(ALG10_RMS, activation, eps)
    X = embed(x, theta.W_e, theta.W_p)  # lines 1-3
    Mask = unidirectional_mask(X.shape[1])
    for layer in theta.layers:  # line 4
        X = rms_pre_ln_layer(X, layer, Mask, activation, eps)  # lines 5-8
    X = rms_norm_columns(X, theta.gamma, eps)  # line 10, RMSnorm
    return unembedding_matrix(theta) @ X  # line 11 (part: logits): before the softmax


def gopher_d_transformer(x, theta: GopherDTransformerParams, *, activation=gelu, eps=EPS):
    """``P = softmax(W_u X)`` of :func:`gopher_d_transformer_logits`."""
    return softmax(gopher_d_transformer_logits(x, theta, activation=activation, eps=eps))


def gopher_params(theta: DTransformerParams) -> GopherDTransformerParams:
    """Algorithm 10's θ with every β dropped (the other leaves shared)."""
    layers = tuple(
        RMSLayer(l.W, l.gamma1, l.gamma2, l.W_mlp1, l.b_mlp1, l.W_mlp2, l.b_mlp2)
        for l in theta.layers
    )
    return GopherDTransformerParams(theta.W_e, theta.W_p, layers, theta.gamma, theta.W_u)


def init_gopher_d_transformer(key, **hyperparameters) -> GopherDTransformerParams:
    """θ from :func:`formal_algorithms.init_d_transformer` (same hyperparameters, same draws),
    without the β leaves."""
    return gopher_params(init_d_transformer(key, **hyperparameters))


def _paper_view(theta: GopherDTransformerParams) -> DTransformerParams:
    """θ seen as Algorithm 10's for the shape check: each β slot holds the matching γ, which must
    have the same shape ``(d_e,)``."""
    layers = tuple(
        Layer(l.W, l.gamma1, l.gamma1, l.gamma2, l.gamma2, l.W_mlp1, l.b_mlp1, l.W_mlp2, l.b_mlp2)
        for l in theta.layers
    )
    return DTransformerParams(theta.W_e, theta.W_p, layers, theta.gamma, theta.gamma, theta.W_u)
