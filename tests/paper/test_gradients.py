"""jax.test_util.check_grads (order 2, float64) for every differentiable algorithm: JAX's
derivatives agree with finite differences, first and second order, forward and reverse."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import formal_algorithms as fa

rng = np.random.default_rng(11)


def a(*shape):
    return jnp.asarray(rng.normal(size=shape))


def perturbed(theta, scale=0.3):
    return jax.tree_util.tree_map(
        lambda w: w + scale * jnp.asarray(rng.normal(size=w.shape)), theta
    )


@functools.cache
def cases():
    """The functions and their arguments, built on first use (not while pytest collects)."""
    W1 = perturbed(fa.init_attention(jax.random.key(0), 3, 4, 2, 3, jnp.float64))
    W5 = perturbed(fa.init_mh_attention(jax.random.key(1), 2, 3, 4, 2, 3, 5, jnp.float64))
    mask = jnp.asarray([[1, 1, 0], [0, 1, 1], [1, 0, 0], [1, 1, 0]], bool)
    x = jnp.asarray([1, 3, 0, 2])
    tiny = dict(
        N_V=5, ell_max=4, H=1, d_e=4, d_mlp=3
    )  # d_e = 2 makes layer norm ±1: too curved for differences
    D = perturbed(fa.init_d_transformer(jax.random.key(2), L=1, dtype=jnp.float64, **tiny))
    E = perturbed(fa.init_e_transformer(jax.random.key(3), L=1, dtype=jnp.float64, **tiny))
    ED = perturbed(
        fa.init_ed_transformer(jax.random.key(4), L_enc=1, L_dec=1, dtype=jnp.float64, **tiny)
    )

    CASES = {
        "eq. 2 softmax (masked)": (lambda A: fa.softmax(A, mask), (a(4, 3),)),
        "GELU": (fa.gelu, (a(5),)),
        "eq. 1 embed": (lambda W_e, W_p: fa.embed(x, W_e, W_p), (a(3, 5), a(3, 4))),
        "Algorithm 3": (
            lambda e, E, W: fa.single_query_attention(e, E, W),
            (a(3), a(3, 4), W1._replace(W_k=a(2, 3), W_v=a(3, 3))),
        ),
        "Algorithm 4": (lambda X, Z, W: fa.attention(X, Z, W, mask), (a(3, 3), a(4, 4), W1)),
        "Algorithm 5": (lambda X, Z, W: fa.mh_attention(X, Z, W, mask), (a(3, 3), a(4, 4), W5)),
        "Algorithm 6": (fa.layer_norm, (a(4), a(4), a(4))),
        "Algorithm 7": (fa.unembedding, (a(3), a(5, 3))),
        "Algorithm 8": (lambda th: fa.ed_transformer_logits(x[:3], x, th), (ED,)),
        "Algorithm 9": (lambda th: fa.e_transformer_logits(x, th), (E,)),
        "Algorithm 10": (lambda th: fa.d_transformer_logits(x, th), (D,)),
        "Algorithm 11 loss": (lambda th: fa.ed_loss(th, x[:3], x), (ED,)),
        "Algorithm 12 loss": (lambda th: fa.e_loss(th, x.at[1].set(5 - 3), x), (E,)),
        "Algorithm 13 loss": (lambda th: fa.d_loss(th, x), (D,)),
    }
    return CASES


NAMES = ["eq. 2 softmax (masked)", "GELU", "eq. 1 embed"] + [f"Algorithm {i}" for i in range(3, 11)]
NAMES += [f"Algorithm {i} loss" for i in (11, 12, 13)]


@pytest.mark.parametrize("name", NAMES)
def test_check_grads_order_2(name):
    f, args = cases()[name]
    # Reverse mode only for Algorithm 8 and the scalar losses (training differentiates them in
    # reverse mode; forward mode through the same layers is checked with Algorithms 3-7, 9, 10):
    # forward-over-reverse of the encoder-decoder triples this file's time.
    modes = ["rev"] if name.startswith("Algorithm 8") or name.endswith("loss") else ["fwd", "rev"]
    check_grads(jax.jit(f), args, order=2, modes=modes, atol=1e-5, rtol=1e-5, eps=1e-5)


def test_every_case_is_checked():
    assert sorted(NAMES) == sorted(cases())
