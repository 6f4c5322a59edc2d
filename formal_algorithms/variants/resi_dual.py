"""ResiDual (Xie et al. 2023, arXiv 2304.14802): a Transformer with dual residual streams.

ResiDual runs two streams through the same sub-layers ``f_k`` (k counts sub-layers: attention and
MLP of each layer are two of them, so k = 1 … 2L):

- ``x_a``, the Post-LN stream:      ``x_a^{k+1} = LN(x_a^k + f_k(x_a^k))``;
- ``x_d``, the Pre-LN-like stream:   ``x_d^{k+1} = x_d^k + f_k(x_a^k)``, the running sum of the raw
  branch outputs (it is never normalised and never read by a branch);
- both start from the embeddings, ``x_a^1 = x_d^1 = x``, and the output is
  ``y = x_a^{2L+1} + LN(x_d^{2L+1})``.

Every branch reads ``x_a`` (Post-LN, so representations stay diverse), and the gradient reaches
every branch through ``x_d`` along an un-normalised identity path (Pre-LN, so it does not vanish).
This follows the paper's equations and its released code (microsoft/ResiDual, where the output
scale ``α`` and the ``x_d`` input scale default to 1, as here).

Decisions:

- Decoder-only (Algorithm 10's inputs and mask; GELU). θ is exactly
  :class:`~formal_algorithms.paper.parameters.DTransformerParams`: layer l's ``γ_l^1, β_l^1`` are the
  norm after its attention, ``γ_l^2, β_l^2`` after its MLP (as in Post-LN); the final ``γ, β``
  (Algorithm 10, line 10) are the ``LN`` applied to ``x_d``. No leaf is added or unused.
- ε = 1e-5 in every norm (the released code uses 1e-7 for the final one; ``eps=`` sets all).
"""

from __future__ import annotations

from ..paper.architectures import mlp, unembedding_matrix
from ..paper.attention import mh_attention, unidirectional_mask
from ..paper.embeddings import embed
from ..paper.functions import gelu, softmax
from ..paper.normalisation import EPS, layer_norm_columns
from ..paper.parameters import DTransformerParams
from .checks import check_inputs

RESIDUAL = "ResiDual DTransformer (Algorithm 10 with dual residual streams)"


def resi_dual_d_transformer_logits(x, theta: DTransformerParams, *, activation=gelu, eps=EPS):
    """ResiDual DTransformer: ``W_u y`` with ``y = x_a + LN(x_d)``, shape ``(N_V, ℓ)``."""
    check_inputs(RESIDUAL, theta, DTransformerParams, x=x)
    X_a = X_d = embed(x, theta.W_e, theta.W_p)  # Alg 10 lines 1-3; x_a^1 = x_d^1 = x
    Mask = unidirectional_mask(X_a.shape[1])
    for l in theta.layers:  # Alg 10 line 4
        F = mh_attention(X_a, X_a, l.W, Mask)  # f_{2l-1}(x_a): causal self-attention reads x_a
        X_a = layer_norm_columns(X_a + F, l.gamma1, l.beta1, eps)  # x_a ← LN(x_a + f(x_a))
        X_d = X_d + F  # x_d ← x_d + f(x_a)
        F = mlp(X_a, l.W_mlp1, l.b_mlp1, l.W_mlp2, l.b_mlp2, activation)  # f_{2l}(x_a): the MLP
        X_a = layer_norm_columns(X_a + F, l.gamma2, l.beta2, eps)  # x_a ← LN(x_a + f(x_a))
        X_d = X_d + F  # x_d ← x_d + f(x_a)
    Y = X_a + layer_norm_columns(X_d, theta.gamma, theta.beta, eps)  # y = x_a + LN(x_d)
    return unembedding_matrix(theta) @ Y  # Alg 10 line 11 (part: logits)


def resi_dual_d_transformer(x, theta: DTransformerParams, *, activation=gelu, eps=EPS):
    """``P = softmax(W_u y)`` of :func:`resi_dual_d_transformer_logits`."""
    return softmax(resi_dual_d_transformer_logits(x, theta, activation=activation, eps=eps))
