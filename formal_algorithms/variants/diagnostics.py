"""Per-layer gradient norms at initialisation, to compare Post-LN and Pre-LN (Xiong et al. 2020).

Xiong et al. (arXiv 2002.04745) show that at initialisation the gradient of the parameters near
the output is large for Post-LN and does not shrink with depth, while for Pre-LN it is scaled by
about ``1/√L`` and roughly the same in every layer. :func:`layer_gradient_norms` measures exactly
that for any decoder-only logits function with Algorithm 10's θ layout (``theta.layers``), on the
next-token loss of Algorithm 13 (line 5) averaged over a batch of sequences.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ..functions import log_softmax


def next_token_loss(logits_fn):
    """Algorithm 13, line 5 for any logits function: ``loss(θ, x) = −Σ_{t<ℓ−1} log P[x[t+1], t]``."""

    def loss(theta, x):
        log_P = log_softmax(logits_fn(x, theta))
        return -jnp.sum(log_P[x[1:], jnp.arange(x.shape[0] - 1)])

    return loss


@functools.partial(jax.jit, static_argnums=0)  # compiled once per logits function and shape
def _mean_loss_grad(logits_fn, theta, xs):
    loss = next_token_loss(logits_fn)
    return jax.grad(lambda th: jnp.mean(jax.vmap(loss, in_axes=(None, 0))(th, xs)))(theta)


def _frobenius(tree):
    return jnp.sqrt(sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(tree)))


def layer_gradient_norms(logits_fn, theta, xs) -> dict:
    """Frobenius norms of ``∇ mean_n loss(θ, x_n)`` per layer: ``{"W_o": (L,), "W_mlp2": (L,),
    "layer": (L,)}`` (the attention's output projection, the MLP's output weight, and every leaf of
    the layer together). ``xs``: ``(N, ℓ)`` token sequences; ``logits_fn(x, θ)`` as Algorithm 10's."""
    g = _mean_loss_grad(logits_fn, theta, xs)
    return {
        "W_o": np.array([float(_frobenius(l.W.W_o)) for l in g.layers]),
        "W_mlp2": np.array([float(_frobenius(l.W_mlp2)) for l in g.layers]),
        "layer": np.array([float(_frobenius(l)) for l in g.layers]),
    }
