"""The paper's symbols as array shapes, for the annotations of every public signature.

With jaxtyping installed (the ``test`` extra), ``Float[Arr, "d_x ell_x"]`` is a real jaxtyping
annotation that ``jaxtyping.jaxtyped`` checks at run time (tests/test_annotations.py does);
without it the names fall back to plain ``jax.Array``, so the core needs only jax and numpy.

Glossary (paper §3 and §5; ``ell`` is ℓ):

| Symbol | Meaning |
|---|---|
| ``N_V`` | vocabulary size (special tokens included) |
| ``ell``, ``ell_x``, ``ell_z`` | sequence lengths: of x, of the primary and of the context sequence |
| ``ell_max`` | maximal length, number of columns of ``W_p`` |
| ``d_e`` | embedding (residual stream) width |
| ``d_x``, ``d_z`` | widths of the primary and context token representations |
| ``d_attn`` | query/key width of one head; ``d_mid`` value width of one head |
| ``d_out`` | output width of attention |
| ``d_mlp`` | MLP hidden width; ``d_f`` final projection width (Algorithm 9) |
| ``H`` | number of heads; ``L``, ``L_enc``, ``L_dec`` number of layers |
| ``T`` | number of context tokens of Algorithm 3 |
"""

from __future__ import annotations

import jax
import numpy as np

Arr = jax.Array | np.ndarray

try:
    from jaxtyping import Bool, Float, Int, Shaped
except ImportError:  # annotations only

    class _Plain:
        def __class_getitem__(cls, item):
            return Arr

    Bool = Float = Int = Shaped = _Plain

__all__ = ["Arr", "Bool", "Float", "Int", "Shaped"]
