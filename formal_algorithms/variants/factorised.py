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

from ..paper.embeddings import embed


def factorised_embed(x, W_e, W_p, W_proj, b_proj):
    """Lines 1-3 with factorised embeddings: ``W_proj (W_e[:, x] + W_p[:, :ℓ]) + b_proj 1ᵀ``,
    shape ``(d_e, ℓ)``."""
    E = embed(x, W_e, W_p)  # lines 1-3 in the small width d_emb
    X = W_proj @ E + b_proj[:, None]  # the projection to d_e
    return X


def shared_layers(layer, L: int) -> tuple:
    """The paper's ``(W_1, …, W_L)`` when every layer shares one parameter set: L references."""
    return (layer,) * L
