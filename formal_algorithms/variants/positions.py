"""Hard-coded sinusoids as a drop-in ``W_p`` for any architecture (paper §5).

Every θ in the library (Algorithms 8, 9, 10 and every variant here) carries ``W_p`` of shape
``(d_e, ℓ_max)`` and uses it only through eq. 1, ``X[:, t] = W_e[:, x[t]] + W_p[:, t]``. So fixing
the positions is a change of that one leaf's values, never of the forward code:

- ``with_fixed_positions(θ, "paper")``: the formula as the paper prints it (base ℓ_max, 1-based
  i and t), :func:`formal_algorithms.paper_sinusoidal_W_p`;
- ``with_fixed_positions(θ, "vaswani")``: the original Transformer's (base 10000, 0-based),
  :func:`formal_algorithms.vaswani_sinusoidal_W_p`.

Decision: ``W_p`` stays a leaf of θ (the pytree keeps its structure, so every forward, loss,
checkpoint and interop path works unchanged). Keeping it fixed during training is the loss's
business: :func:`frozen_positions` wraps a loss so that ``∂loss/∂W_p`` is exactly 0, and
Algorithms 11-13's update ``θ ← θ − η ∇loss`` then leaves ``W_p`` bit-for-bit unchanged. (An
optimiser with decoupled weight decay, such as AdamW, would still shrink a zero-gradient leaf:
exclude ``W_p`` from its decay mask as well.)
"""

from __future__ import annotations

import jax

from ..paper.checks import fail
from ..paper.embeddings import paper_sinusoidal_W_p, vaswani_sinusoidal_W_p

SINUSOIDS = {"paper": paper_sinusoidal_W_p, "vaswani": vaswani_sinusoidal_W_p}


def with_fixed_positions(theta, kind: str = "vaswani"):
    """θ with ``W_p`` replaced by the hard-coded sinusoid ``kind`` (``"paper"`` or ``"vaswani"``),
    of the same shape ``(d_e, ℓ_max)`` and dtype."""
    if kind not in SINUSOIDS:
        fail("with_fixed_positions", "kind", f"= {kind!r} must be one of {sorted(SINUSOIDS)}")
    d_e, ell_max = theta.W_p.shape
    return theta._replace(W_p=SINUSOIDS[kind](d_e, ell_max, dtype=theta.W_p.dtype))


def frozen_positions(loss_fn):
    """Wrap ``loss_fn(θ, …)`` so that ``W_p`` is a constant to ``jax.grad``: its gradient is 0.

    The forward value is unchanged; only the gradient path through ``W_p`` is cut.
    """

    def loss(theta, *args, **kwargs):
        return loss_fn(theta._replace(W_p=jax.lax.stop_gradient(theta.W_p)), *args, **kwargs)

    return loss
