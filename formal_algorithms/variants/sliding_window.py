"""Sliding-window attention (Child et al. 2019; Beltagy et al. 2020; Mistral) as a variant of the
paper's eq. 3.

What changes in the paper's text: eq. 3's unidirectional mask ``Mask[t_z, t_x] = [[t_z ≤ t_x]]``
becomes ``Mask[t_z, t_x] = [[t_x − w < t_z ≤ t_x]]``: each token attends to itself and the w − 1
tokens before it (a window of w positions, Hugging Face's ``sliding_window = w``). Algorithm 4
line 5 applies it unchanged. For ``w ≥ ℓ`` it is the unidirectional mask.
"""

from __future__ import annotations

import jax.numpy as jnp

from ..paper.checks import check_sizes

SLIDING_WINDOW = "sliding_window_mask (eq. 3 with a window)"


def sliding_window_mask(ell: int, window: int):
    """``Mask[t_z, t_x] = [[t_x − window < t_z ≤ t_x]]``, ``(ℓ, ℓ)`` in the paper's orientation."""
    check_sizes(SLIDING_WINDOW, 0, ell=ell)
    check_sizes(SLIDING_WINDOW, 1, window=window)
    t = jnp.arange(ell)
    t_z, t_x = t[:, None], t[None, :]
    return (t_x - window < t_z) & (t_z <= t_x)
