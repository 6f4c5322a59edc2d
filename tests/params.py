"""Parameters for equality tests, drawn so that no term can cancel or vanish.

The library's inits set every bias to 0, γ = 1 and β = 0 (as GPT-2 and BERT do). A test that
compares two evaluation orders on such θ cannot see a bias added with the wrong sign, at the wrong
place or not at all, nor a γ/β applied to the wrong tensor: the term is 0 (or 1) either way. Every
fixture that builds parameters for an equality test moves them with :func:`perturbed` first.
"""

import jax
import numpy as np

# The leaves that the inits fill with a constant: biases (b_q, b_k, b_v, b_o, b_mlp1, ..., b_f),
# the layer-norm gains γ (gamma, gamma1, ...) and offsets β (beta, beta1, ...).
CONSTANT_LEAVES = ("b_", "gamma", "beta")


def _name(path) -> str:
    return getattr(path[-1], "name", "")


def perturbed(theta, key, scale: float = 0.2):
    """θ with ``scale · N(0, 1)`` added to every bias, γ and β (the random weights are kept), so
    that every bias is non-zero, γ ≠ 1 and β ≠ 0 in every entry. ``key``: a ``jax.random`` key or
    an int seed."""
    key = jax.random.key(key) if isinstance(key, int) else key
    leaves, tree = jax.tree_util.tree_flatten_with_path(theta)
    keys = jax.random.split(key, len(leaves))
    out = []
    for (path, a), k in zip(leaves, keys, strict=True):
        if _name(path).startswith(CONSTANT_LEAVES):
            a = a + scale * jax.random.normal(k, a.shape, a.dtype)
        out.append(a)
    return jax.tree_util.tree_unflatten(tree, out)


def assert_no_vanishing_terms(theta) -> None:
    """Every bias is non-zero, every γ ≠ 1, every β ≠ 0, entry by entry."""
    for path, a in jax.tree_util.tree_flatten_with_path(theta)[0]:
        name = _name(path)
        a = np.asarray(a)
        if name.startswith(("b_", "beta")):
            assert np.all(a != 0), f"{jax.tree_util.keystr(path)} has zero entries"
        elif name.startswith("gamma"):
            assert np.all(a != 1), f"{jax.tree_util.keystr(path)} has entries equal to 1"
