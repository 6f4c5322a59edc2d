"""ALBERT's two parameter savings (Lan et al. 2020) as substitutions in Algorithm 9.

- **Factorised embeddings.** Lines 1-3 embed into a small width ``d_emb`` and project:
  ``e ← W_proj (W_e[:, x[t]] + W_p[:, t]) + b_proj`` with ``W_e`` ``(d_emb, N_V)``, ``W_p``
  ``(d_emb, ℓ_max)``, ``W_proj`` ``(d_e, d_emb)``: ``N_V d_emb + d_e d_emb`` parameters instead of
  ``N_V d_e``. (Real ALBERT also normalises the small embedding before projecting; see
  :mod:`formal_algorithms.families.albert`.)
- **Cross-layer parameter sharing.** Line 4's loop ``for l = 1 … L`` runs the same layer
  parameters every time: ``θ`` holds one :class:`~formal_algorithms.Layer` and a count L
  (a hyperparameter), and line 5-8's ``W_l, γ_l, β_l, W_mlp…_l`` are that one layer for every l.
  :func:`shared_layers` writes it as the paper's θ: a tuple of L references to one pytree, so
  every algorithm of the library runs on it unchanged (and ``jax.grad`` sums the L uses).
"""

from __future__ import annotations

import numpy as np

from ..paper.checks import as_tokens, check_tokens, fail
from ..paper.embeddings import embed
from .checks import check_linear

FACTORISED = "factorised_embed (Algorithm 9 lines 1-3, ALBERT's factorised embedding)"


def factorised_embed(x, W_e, W_p, W_proj, b_proj):
    """Lines 1-3 with factorised embeddings: ``W_proj (W_e[:, x] + W_p[:, :ℓ]) + b_proj 1ᵀ``,
    shape ``(d_e, ℓ)``."""
    d_emb = np.shape(W_e)[0] if np.ndim(W_e) == 2 else None
    if d_emb is None or np.ndim(W_p) != 2 or np.shape(W_p)[0] != d_emb:
        fail(
            FACTORISED,
            "W_e" if d_emb is None else "W_p",
            f"W_e must be (d_emb, N_V) and W_p "
            f"(d_emb, ℓ_max), got {np.shape(W_e)} and {np.shape(W_p)}",
        )
    check_linear(FACTORISED, "W_proj", W_proj, b_proj, d_emb)
    if b_proj is None:
        fail(FACTORISED, "b_proj", "is missing: ALBERT's projection has a bias")
    x = as_tokens(x)
    check_tokens(FACTORISED, "x", x, N_V=np.shape(W_e)[1], ell_max=np.shape(W_p)[1])
    E = embed(x, W_e, W_p)  # lines 1-3 in the small width d_emb
    X = W_proj @ E + b_proj[:, None]  # the projection to d_e
    return X


def shared_layers(layer, L: int) -> tuple:
    """The paper's ``(W_1, …, W_L)`` when every layer shares one parameter set: L references.
    ``layer`` is one layer's parameters (a :class:`~formal_algorithms.Layer`), not a tuple of them."""
    if isinstance(layer, (tuple, list)) and not hasattr(layer, "_fields"):
        fail(
            "shared_layers (ALBERT's sharing)",
            "layer",
            f"must be one layer's parameters (a Layer), got a {type(layer).__name__} of "
            f"{len(layer)}; pass theta.layers[0] to share the first layer",
            TypeError,
        )
    if not hasattr(layer, "_fields"):
        fail(
            "shared_layers (ALBERT's sharing)",
            "layer",
            f"must be one layer's parameters (a Layer), got {type(layer).__name__}",
            TypeError,
        )
    if isinstance(L, bool) or not isinstance(L, (int, np.integer)) or L < 1:
        fail(
            "shared_layers (ALBERT's sharing)",
            "L",
            f"(number of layers) must be an integer >= 1, got {L!r}",
        )
    return (layer,) * int(L)
