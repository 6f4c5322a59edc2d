"""One table per model family (:mod:`.gpt2`, :mod:`.bert`, :mod:`.llama`, :mod:`.llama_kin`
(Qwen2, Mistral, Gemma), :mod:`.opt` (Pre-LN and Post-LN), :mod:`.gpt_neox` (GPT-NeoX, Phi),
:mod:`.bart`, :mod:`.t5`, :mod:`.torch_transformer`), read by one mechanism (:mod:`.base`).
:data:`TABLES` maps a Hugging Face ``model_type`` to its family; :func:`family_for` picks the
family of a model."""

from __future__ import annotations

from torch import nn

from ....paper.checks import fail
from .bart import Bart
from .base import Family
from .bert import Bert
from .gpt2 import Gpt2
from .gpt_neox import GptNeoX, Phi
from .llama import Llama
from .llama_kin import Gemma, Mistral, Qwen2
from .opt import Opt
from .t5 import T5
from .torch_transformer import TorchTransformer

__all__ = ["TABLES", "CLASSES", "CONTEXT", "Family", "family_for"]

# model_type (config.json) -> the family; a Hugging Face model of another type has no table.
TABLES = {
    "gpt2": Gpt2,
    "bert": Bert,
    "llama": Llama,
    "qwen2": Qwen2,
    "mistral": Mistral,
    "gemma": Gemma,
    "opt": Opt,
    "gpt_neox": GptNeoX,
    "phi": Phi,
    "bart": Bart,
    "t5": T5,
}

# the Hugging Face class each table reads (its module paths are that class's)
CLASSES = {
    "gpt2": "GPT2LMHeadModel",
    "bert": "BertForMaskedLM",
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "mistral": "MistralForCausalLM",
    "gemma": "GemmaForCausalLM",
    "opt": "OPTForCausalLM",
    "gpt_neox": "GPTNeoXForCausalLM",
    "phi": "PhiForCausalLM",
    "bart": "BartForConditionalGeneration",
    "t5": "T5ForConditionalGeneration",
}

#: the model types whose table is Algorithm 8 with the embeddings inside the model (it reads the
#: context z alone) -> the name compare's messages give them
CONTEXT = {kind: family.hf_name for kind, family in TABLES.items() if family.algorithm == 8}


def model_type(model) -> str | None:
    """The table a model is read with: its class (or a base class) of Hugging Face's, else its
    configuration's ``model_type`` (a user's own class of that architecture)."""
    names = {c.__name__ for c in type(model).__mro__}
    for name, cls in CLASSES.items():
        if cls in names:
            return name
    config = getattr(model, "config", None)
    kind = getattr(config, "model_type", None)
    return kind if kind in TABLES else None


def family_for(model, W_e, W_p, W_u, eps, z) -> Family:
    if isinstance(model, nn.Transformer):
        for name, value in (("z", z), ("W_e", W_e), ("W_p", W_p)):
            if value is None:
                fail(
                    "compare",
                    name,
                    "is needed for a torch.nn.Transformer: Algorithm 8 embeds the "
                    "context z and the tokens x outside the model (W_e, W_p)",
                )
        return TorchTransformer(model, W_e, W_p, W_u, eps)
    kind = model_type(model)
    if kind is None:
        config = getattr(model, "config", None)
        have = getattr(config, "model_type", None)
        fail(
            "compare",
            "model",
            f"must be a {', '.join(CLASSES.values())} or torch.nn.Transformer (compare has "
            f"tables for {', '.join(sorted(TABLES))} and nn.Transformer), got "
            f"{type(model).__name__}" + (f" of model_type {have!r}" if have else ""),
            TypeError,
        )
    try:
        return TABLES[kind](model)
    except AttributeError as error:  # a class of the user's own, its modules renamed
        fail(
            "compare",
            "model",
            f"cannot be read as {CLASSES[kind]} ({error}): a model class of your "
            "own must keep the architecture's module names",
        )
