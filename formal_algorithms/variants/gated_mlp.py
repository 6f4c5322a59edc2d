"""Gated MLPs (Shazeer 2020: SwiGLU, GeGLU) as a substitution of Algorithm 10's line 8
(Algorithm 9's line 7, Algorithm 8's lines 7 and 18).

The paper's line 8 is ``X ← X + W_mlp2 σ(W_mlp1 X̃ + b_mlp1 1ᵀ) + b_mlp2 1ᵀ``. The gated form
has two input projections, one of them passed through the activation and multiplied element-wise
with the other:

``X ← X + W_down (σ(W_gate X̃ + b_gate 1ᵀ) ⊙ (W_up X̃ + b_up 1ᵀ)) + b_down 1ᵀ``

with ``W_gate, W_up`` ``(d_mlp, d_e)`` and ``W_down`` ``(d_e, d_mlp)``. σ = SiLU gives SwiGLU
(Llama), σ = GELU gives GeGLU. Each bias may be ``None`` (bias-free, as in Llama).
"""

from __future__ import annotations

import jax
import numpy as np

from .checks import agreed_size, check_function, check_linear, check_matrix
from .rope import affine

GATED_MLP = "gated_mlp (Algorithm 10 line 8's MLP substituted: GLU)"


def silu(x):
    """``SiLU(x) = x · sigmoid(x)`` (the "swish" of SwiGLU), element-wise."""
    return x * jax.nn.sigmoid(x)


def gated_mlp(X, W_gate, b_gate, W_up, b_up, W_down, b_down, activation=silu):
    """``W_down (σ(W_gate X + b_gate 1ᵀ) ⊙ (W_up X + b_up 1ᵀ)) + b_down 1ᵀ``, shape ``(d_e, ℓ)``:
    the substitute of the paper's MLP at line 8 of Algorithm 10. ``None`` biases are absent.
    ``activation`` a function (σ); a wrong shape is blamed on the leaf that disagrees with the
    others about d_mlp, and ``W_down`` must map back to X's d_e (the residual sum)."""
    check_matrix(GATED_MLP, "X", X)
    check_function(GATED_MLP, "activation", activation, "silu or formal_algorithms.gelu")
    d_e = np.shape(X)[0]
    widths = [np.shape(W_gate)[:1], np.shape(W_up)[:1], np.shape(W_down)[1:2]]
    widths += [np.shape(b)[:1] for b in (b_gate, b_up) if b is not None]
    d_mlp = (agreed_size(*widths) or (None,))[0]
    check_linear(GATED_MLP, "W_gate", W_gate, b_gate, d_e, d_mlp)
    check_linear(GATED_MLP, "W_up", W_up, b_up, d_e, d_mlp)
    check_linear(GATED_MLP, "W_down", W_down, b_down, d_mlp, d_e)
    G = activation(affine(W_gate, b_gate, X))  # the gate: σ(W_gate X̃ + b_gate 1ᵀ)
    U = affine(W_up, b_up, X)  # the value: W_up X̃ + b_up 1ᵀ
    return affine(W_down, b_down, G * U)  # the line-8 branch, before the residual sum
