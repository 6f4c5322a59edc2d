"""Exact conversions between the paper's architectures and the implementations the world runs.

- :mod:`.torch_transformer`: Algorithm 8 ⇄ ``torch.nn.Transformer`` (needs torch).
- :mod:`.gpt2`: Algorithm 10 ⇄ Hugging Face ``GPT2LMHeadModel`` (needs torch and transformers).
- :mod:`.bert`: Algorithm 9 ⇄ Hugging Face ``BertForMaskedLM``, through a BERT variant of
  Algorithm 9 built from the same primitives (needs torch and transformers).
- :func:`compare` (the package :mod:`.compare`): where a GPT-2, BERT, Llama or ``nn.Transformer``
  departs from the paper, line by line, through the trace (one table per family in
  :mod:`.compare.families`); :mod:`.departures`: deliberate departures to inject.

An optional extra (``pip install formal_algorithms[interop]``): ``formal_algorithms`` itself never
imports this package. The names below load their submodule on first use, so that
``formal_algorithms.interop.torch_transformer`` works without transformers installed.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "torch_transformer": (
        "ed_transformer_from_torch",
        "ed_transformer_to_torch",
        "torch_ed_transformer_logits",
    ),
    "gpt2": (
        "d_transformer_from_gpt2",
        "d_transformer_to_gpt2",
        "d_transformer_kwargs_from_gpt2",
    ),
    "bert": (
        "BertParams",
        "bert_logits",
        "bert_from_e_transformer",
        "bert_from_hf",
        "bert_to_hf",
        "bert_kwargs_from_hf",
    ),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted([*_WHERE, "compare"])


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)


# Bound eagerly: after `import formal_algorithms.interop.compare` the subpackage of the same name
# would otherwise take the place of the function. It imports torch (as every converter does) and
# nothing of transformers until it is called.
from .compare import compare  # noqa: E402
