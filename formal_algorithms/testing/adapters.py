"""Adapters: anyone's transformer as a :class:`TokenModel`, the one interface that the conformance
checks of :mod:`formal_algorithms.testing.conformance` take.

A :class:`TokenModel` maps token ids to logits. Inputs are batch-first integer arrays ``(B, ℓ)``
(what every framework takes); outputs are float64 numpy arrays in the paper's orientation,
``(B, N_V, ℓ)``: example b's column t is the output at position t (``P[:, t]`` of Algorithms 8-10,
before or after the softmax; see ``output``).

- :func:`from_torch`: any ``torch.nn.Module`` whose ``forward`` follows Hugging Face's calling
  convention (``input_ids``, optionally ``attention_mask``, ``position_ids``, a cache under
  ``cache``/``past_key_values`` with ``use_cache``; encoder-decoders take ``decoder_input_ids``).
  It returns a tensor, a tuple whose first item is the logits, or an object with ``.logits``.
- :func:`from_hf`: a Hugging Face causal LM, masked LM or encoder-decoder (a model or a local
  directory; nothing is downloaded); ``generate`` is the model's own.
- :func:`from_jax`, :func:`from_equinox`, :func:`from_flax`: JAX callables and modules.
- :func:`from_callable`: any function from token ids to logits (numpy, JAX, anything).
- :func:`from_paper`: a function of this library's orientation, ``x (ℓ,) ↦ logits (N_V, ℓ)``.

Frameworks are imported lazily: this module needs only numpy and JAX until you pass it a torch
model. Gradient-based checks use the framework's own autograd (``torch.autograd``, ``jax.jacrev``);
a plain callable gets the documented finite-difference fallback (:meth:`TokenModel.influence`).
"""

from __future__ import annotations

from .function_adapters import from_callable, from_equinox, from_flax, from_jax, from_paper
from .token_model import KINDS, OUTPUTS, NotSupported, TokenModel
from .torch_adapters import from_hf, from_torch

__all__ = [
    "KINDS",
    "OUTPUTS",
    "NotSupported",
    "TokenModel",
    "from_callable",
    "from_equinox",
    "from_flax",
    "from_hf",
    "from_jax",
    "from_paper",
    "from_torch",
]
