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

from ..paper.embeddings import vaswani_sinusoidal_W_p
from ..paper.functions import log_softmax
from ..paper.initialisation import Normal, is_spec, materialise
from ..paper.parameters import d_transformer_spec


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


# --------------------------------------------------------------------- Xiong et al.'s setting


def xavier_std(shape: tuple) -> float:
    """Glorot & Bengio's normal std ``√(2 / (fan_in + fan_out))`` for a weight ``(…, d_out, d_in)``.
    Heads stacked on a leading axis count as one projection: ``W_q`` of shape ``(H, d_attn, d_x)``
    is one ``(H·d_attn, d_x)`` matrix, as in implementations that project all heads at once."""
    fan_out = int(np.prod(shape[:-1]))
    return float(np.sqrt(2.0 / (shape[-1] + fan_out)))


def xiong_init_d_transformer(key, **hp):
    """θ of Algorithm 10 initialised as in Xiong et al.'s experiments (the fairseq Transformer):
    every weight matrix of a layer Xavier-normal (:func:`xavier_std`); token embeddings of unit
    scale, ``W_e`` ~ N(0, 1) (fairseq draws N(0, 1/d_e) and multiplies by √d_e in the forward);
    ``W_p`` the original Transformer's sinusoid (:func:`~formal_algorithms.vaswani_sinusoidal_W_p`);
    biases 0, γ = 1, β = 0, and ``W_u`` as the library's N(0, 1/d_e). ``hp`` as
    :func:`~formal_algorithms.init_d_transformer`'s (float32).

    Why not the library's init: with ``W_e``, ``W_p`` ~ N(0, 0.02²) the residual stream starts near
    0 and grows ~l-fold over l layers, so Pre-LN's layer norms shrink later layers' gradients
    several-fold (see ``benchmarks/ln_gradients.py --init library``). Xiong et al.'s roughly flat
    Pre-LN profile needs a stream that starts at unit scale, as theirs did.
    """

    def xavier(path, s):
        name = jax.tree_util.keystr(path)
        if isinstance(s, Normal) and len(s.shape) >= 2 and not name.endswith(("W_e", "W_p", "W_u")):
            return s._replace(std=xavier_std(s.shape))
        return s

    spec = jax.tree_util.tree_map_with_path(xavier, d_transformer_spec(**hp), is_leaf=is_spec)
    spec = spec._replace(W_e=Normal(spec.W_e.shape, 1.0))
    theta = materialise(key, spec)
    return theta._replace(W_p=vaswani_sinusoidal_W_p(hp["d_e"], hp["ell_max"]))
