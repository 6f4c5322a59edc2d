"""Deliberate departures from the paper, injected into a model's code: what :func:`.compare.compare`
must find, and a way to see what a departure looks like (``formal-algorithms compare --inject``).

Each departure patches one model *instance* (its submodules' ``forward`` or attributes), never
its weights or its configuration: the converters still read the model as before, so the paper's
run is unchanged and only the model's computation departs. These are the bugs that the trackers
of transformer libraries keep reporting (an ε, the GELU form, the attention scale, layer-norm
placement, a position offset, the mask orientation, the head split, a bias, the final norm, the
unembedding); each entry says where the comparison must find it.

``inject(model, name)`` applies one to a Hugging Face ``GPT2LMHeadModel``, ``BertForMaskedLM``,
``LlamaForCausalLM`` (and ``Qwen2ForCausalLM`` and ``MistralForCausalLM``, which have Llama's
modules: the "llama" entries apply to them) or to a ``torch.nn.Transformer`` and returns the
model; :data:`DEPARTURES` lists them and where each applies.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from ...paper.checks import fail
from .llama import (
    cache_before_rope,
    gate_up_swapped,
    kv_tiled,
    padding_on_queries,
    rms_centred,
    rms_plus_one,
    rope_base,
    rope_offset,
    rope_scaled,
)
from .patches import (
    bias_dropped,
    causal_where_none,
    embedding_scaled,
    eps,
    final_norm_missing,
    gelu_form,
    heads_strided,
    mask_future,
    mask_transposed,
    output_bias_doubled,
    positions,
    post_ln,
    pre_ln,
    qk_swapped,
    relu_layer,
    scale_d,
    softmax_axis,
    temperature,
    unbiased_variance,
    untied,
)

__all__ = ["DEPARTURES", "Departure", "inject"]


#: the Hugging Face classes the "llama" departures patch (the same module tree and RMSnorm formula)
LLAMA_LAYOUT = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM")


def family_of_type(model_type: str) -> str:
    """The family whose departures apply to a configuration's ``model_type``."""
    return "llama" if model_type in ("qwen2", "mistral") else model_type


class Departure(NamedTuple):
    """One departure: what it does, the families it applies to, and the paper line where the
    comparison finds it (for each family)."""

    description: str
    where: dict  # family ("gpt2", "bert", "torch") -> the paper line it departs at
    apply: object  # apply(model, family) patches the model in place


def _family(model) -> str:
    from transformers import BertForMaskedLM, GPT2LMHeadModel

    if isinstance(model, GPT2LMHeadModel):
        return "gpt2"
    if isinstance(model, BertForMaskedLM):
        return "bert"
    if isinstance(model, nn.Transformer):
        return "torch"
    if type(model).__name__ in LLAMA_LAYOUT:
        return "llama"  # Qwen2 and Mistral: Llama's modules, names and RMSnorm
    fail(
        "inject",
        "model",
        f"must be a GPT2LMHeadModel, BertForMaskedLM, {', '.join(LLAMA_LAYOUT)} or "
        f"torch.nn.Transformer, got {type(model).__name__}",
        TypeError,
    )


DEPARTURES = {
    "eps": Departure(
        "the last layer's second layer norm computes with ε = 1e-3, whatever the config says",
        {
            "gpt2": "Algorithm 10, line 7 (l=L)",
            "bert": "Algorithm 9, line 8 (l=L)",
            "torch": "Algorithm 8, line 8 (encoder, l=L_enc)",
            "llama": "Algorithm 10, line 7 (l=L)",
        },
        eps,
    ),  # fmt: skip
    "gelu-form": Departure(
        "layer 1's MLP uses the other GELU form (tanh where erf is configured, or the reverse); "
        "nn.Transformer: the exact GELU instead of ReLU in encoder layer 1",
        {
            "gpt2": "Algorithm 10, line 8 (l=1)",
            "bert": "Algorithm 9, line 7 (l=1)",
            "torch": "Algorithm 8, line 7 (l=1)",
        },
        gelu_form,
    ),  # fmt: skip
    "scale-d": Departure(
        "layer 1's scores are divided by d_attn instead of √d_attn",
        {
            "gpt2": "Algorithm 4, lines 5-6 (weights) of line 6 (l=1)",
            "bert": "Algorithm 4, lines 5-6 (weights) of line 5 (l=1)",
            "llama": "Algorithm 4, lines 5-6 (weights) of line 6 (l=1)",
        },
        scale_d,
    ),  # fmt: skip
    "post-ln": Departure(
        "every GPT-2 block normalises after the residual sums (Post-LN) instead of the branch "
        "inputs (Pre-LN)",
        {"gpt2": "Algorithm 10, line 5 (l=1)"},
        post_ln,
    ),  # fmt: skip
    "pre-ln": Departure(
        "every BERT layer normalises the branch inputs (Pre-LN) instead of after the residual "
        "sums (Post-LN)",
        {"bert": "Algorithm 4, line 1 of line 5 (l=1)"},
        pre_ln,
    ),  # fmt: skip
    "positions+1": Departure(
        "position t reads W_p[:, t + 1] (positions counted from 1)",
        {"gpt2": "Algorithm 10, lines 1-3", "bert": "Algorithm 9, lines 1-3"},
        positions,
    ),  # fmt: skip
    "mask-transposed": Departure(
        "the causal mask of the first (decoder) layer's self-attention is transposed",
        {
            "gpt2": "Algorithm 4, lines 5-6 (weights) of line 6 (l=1)",
            "torch": "Algorithm 4, lines 5-6 (weights) of line 14 (l=1)",
            "llama": "Algorithm 4, lines 5-6 (weights) of line 6 (l=1)",
        },
        mask_transposed,
    ),  # fmt: skip
    "heads-strided": Departure(
        "the last layer splits its heads strided (view(…, d_attn, H)): head h takes every H-th "
        "column",
        {"gpt2": "Algorithm 4, lines 5-6 (weights) of line 6 (l=L)"},
        heads_strided,
    ),  # fmt: skip
    "bias-dropped": Departure(
        "layer 1 drops a bias: GPT-2 its q/k/v biases, BERT b_q, nn.Transformer b_mlp2",
        {
            "gpt2": "Algorithm 4, line 1 of line 6 (l=1)",
            "bert": "Algorithm 4, line 1 of line 5 (l=1)",
            "torch": "Algorithm 8, line 7 (l=1)",
        },
        bias_dropped,
    ),  # fmt: skip
    "final-norm-missing": Departure(
        "the final layer norm (GPT-2: line 10; BERT: the head's, line 11) returns its input",
        {
            "gpt2": "Algorithm 10, line 10",
            "bert": "Algorithm 9, line 11",
            "llama": "Algorithm 10, line 10",
        },
        final_norm_missing,
    ),  # fmt: skip
    "untied": Departure(
        "the logits come from another matrix than the weights say (untied where tied, or W_e "
        "where a separate W_u is stored)",
        {
            "gpt2": "Algorithm 10, line 11",
            "bert": "Algorithm 9, line 12",
            "llama": "Algorithm 10, line 11",
        },
        untied,
    ),  # fmt: skip
    "embedding-scaled": Departure(
        "the token embedding is multiplied by √d_e (as Gemma and T5 do)",
        {"gpt2": "Algorithm 10, lines 1-3", "llama": "Algorithm 10, lines 1-3"},
        embedding_scaled,
    ),  # fmt: skip
    "output-bias-doubled": Departure(
        "layer 1's attention output projection adds its bias b_o twice",
        {"gpt2": "Algorithm 5, line 4 of line 6 (l=1)"},
        output_bias_doubled,
    ),  # fmt: skip
    "temperature": Departure(
        "the logits are divided by a temperature τ = 2 inside the model",
        {
            "gpt2": "Algorithm 10, line 11",
            "bert": "Algorithm 9, line 12",
            "llama": "Algorithm 10, line 11",
        },
        temperature,
    ),  # fmt: skip
    "softmax-axis": Departure(
        "layer 1's softmax normalises over the queries instead of the keys",
        {"gpt2": "Algorithm 4, line 6 (weights) of line 6 (l=1)"},
        softmax_axis,
    ),  # fmt: skip
    "mask-future": Departure(
        "layer 1's causal mask lets each token see one token ahead",
        {"gpt2": "Algorithm 4, line 6 (weights) of line 6 (l=1)"},
        mask_future,
    ),  # fmt: skip
    "qk-swapped": Departure(
        "layer 1's scores are Qᵀ K (queries and keys swapped)",
        {"gpt2": "Algorithm 4, line 6 (weights) of line 6 (l=1)"},
        qk_swapped,
    ),  # fmt: skip
    "causal-where-none": Departure(
        "a causal mask where the paper has none: BERT's layer 1, nn.Transformer's cross-attention",
        {
            "bert": "Algorithm 4, line 6 (weights) of line 5 (l=1)",
            "torch": "Algorithm 4, line 6 (weights) of line 16 (l=1)",
        },
        causal_where_none,
    ),  # fmt: skip
    "relu-layer": Departure(
        "the last layer's MLP applies ReLU instead of the configured GELU",
        {"gpt2": "Algorithm 10, line 8 (l=L)"},
        relu_layer,
    ),  # fmt: skip
    "unbiased-variance": Departure(
        "layer 1's first layer norm divides its variance by d_e − 1",
        {"gpt2": "Algorithm 10, line 5 (l=1)"},
        unbiased_variance,
    ),  # fmt: skip
    "rope-base": Departure(
        "RoPE's frequencies from base 500000 whatever the configuration's rope_theta says",
        {"llama": "Algorithm 4, line 6 (weights) of line 6 (l=1)"},
        rope_base,
    ),  # fmt: skip
    "rope-scaled": Departure(
        "RoPE's positions divided by 2 (linear scaling the configuration does not have)",
        {"llama": "Algorithm 4, line 6 (weights) of line 6 (l=1)"},
        rope_scaled,
    ),  # fmt: skip
    "rope-offset": Departure(
        "layer 1's queries rotated one position ahead of its keys",
        {"llama": "Algorithm 4, line 6 (weights) of line 6 (l=1)"},
        rope_offset,
    ),  # fmt: skip
    "kv-tiled": Departure(
        "layer 1's key/value sets tiled (query head h reads set (h − 1) mod G) instead of "
        "repeated per group",
        {"llama": "Algorithm 4, line 6 (weights) of line 6 (l=1)"},
        kv_tiled,
    ),  # fmt: skip
    "cache-before-rope": Departure(
        "layer 1 caches its keys before RoPE and rotates every cached key by the current step's "
        "position (shows only in incremental decoding: compare_cached)",
        {"llama": "Algorithm 4, line 6 (weights) of line 6 (l=1), the cached step"},
        cache_before_rope,
    ),  # fmt: skip
    "padding-on-queries": Departure(
        "GPT-2's attention masks padding over the queries instead of the keys (shows only in a "
        "left-padded batch: compare_batch)",
        {"gpt2": "Algorithm 4, line 6 (weights) of line 6 (l=1), a padded sequence"},
        padding_on_queries,
    ),  # fmt: skip
    "gate-up-swapped": Departure(
        "layer 1's SwiGLU applies silu to the up projection instead of the gate",
        {"llama": "Algorithm 10, line 8 (l=1)"},
        gate_up_swapped,
    ),  # fmt: skip
    "rms-plus-one": Departure(
        "layer 1's first RMSnorm scales by (1 + γ) (Gemma's convention)",
        {"llama": "Algorithm 10, line 5 (l=1)"},
        rms_plus_one,
    ),  # fmt: skip
    "rms-centred": Departure(
        "layer 1's second RMSnorm subtracts the mean (a layer norm without β)",
        {"llama": "Algorithm 10, line 7 (l=1)"},
        rms_centred,
    ),  # fmt: skip
}


def inject(model, name: str):
    """Apply the departure ``name`` of :data:`DEPARTURES` to ``model`` (in place); returns it."""
    if name not in DEPARTURES:
        fail("inject", "name", f"= {name!r} is not one of {', '.join(DEPARTURES)}")
    family = _family(model)
    departure = DEPARTURES[name]
    if family not in departure.where:
        fail(
            "inject",
            "name",
            f"= {name!r} does not apply to this model ({family}); it applies "
            f"to {', '.join(departure.where)}",
        )
    departure.apply(model, family)
    return model
