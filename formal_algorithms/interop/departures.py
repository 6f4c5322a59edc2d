"""Deliberate departures from the paper, injected into a model's code: what :func:`.compare.compare`
must find, and a way to see what a departure looks like (``formal-algorithms compare --inject``).

Each departure patches one model *instance* (its submodules' ``forward`` or attributes), never
its weights or its configuration: the converters still read the model as before, so the paper's
run is unchanged and only the model's computation departs. These are the bugs that the trackers
of transformer libraries keep reporting (an ε, the GELU form, the attention scale, layer-norm
placement, a position offset, the mask orientation, the head split, a bias, the final norm, the
unembedding); each entry says where the comparison must find it.

``inject(model, name)`` applies one to a Hugging Face ``GPT2LMHeadModel``, ``BertForMaskedLM`` or
``LlamaForCausalLM`` or to a ``torch.nn.Transformer`` and returns the model; :data:`DEPARTURES`
lists them and where each applies.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from ..paper.checks import fail

__all__ = ["DEPARTURES", "Departure", "inject"]


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
    if type(model).__name__ == "LlamaForCausalLM":
        return "llama"
    fail("inject", "model", f"must be a GPT2LMHeadModel, BertForMaskedLM, LlamaForCausalLM or "
         f"torch.nn.Transformer, got {type(model).__name__}", TypeError)  # fmt: skip


# ----------------------------------------------------------------------------- the patches


def _hard_coded_eps(norm: nn.LayerNorm, eps: float):
    """The norm computes with ``eps`` whatever its ``eps`` attribute (and the config) says."""

    def forward(x):
        return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, eps)

    norm.forward = forward


def _eps(model, family):
    if family == "llama":  # LlamaRMSNorm reads its ε from an attribute the converter ignores
        model.model.layers[-1].post_attention_layernorm.variance_epsilon = 1e-3
        return
    norm = {
        "gpt2": lambda: model.transformer.h[-1].ln_2,
        "bert": lambda: model.bert.encoder.layer[-1].output.LayerNorm,
        "torch": lambda: model.encoder.layers[-1].norm2,
    }[family]()
    _hard_coded_eps(norm, 1e-3 if norm.eps < 1e-4 else norm.eps * 1e-3)


class _OtherGelu(nn.Module):
    def __init__(self, approximate):
        super().__init__()
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, approximate=self.approximate)


class _GeluAsRelu(nn.ReLU):
    """Passes for ReLU (``isinstance``), computes the exact GELU."""

    def forward(self, x):
        return F.gelu(x)


def _gelu_form(model, family):
    if family == "torch":
        model.encoder.layers[0].activation = _GeluAsRelu()
        return
    config = model.config
    name = config.activation_function if family == "gpt2" else config.hidden_act
    other = "none" if name in ("gelu_new", "gelu_pytorch_tanh") else "tanh"
    if family == "gpt2":
        model.transformer.h[0].mlp.act = _OtherGelu(other)
    else:
        model.bert.encoder.layer[0].intermediate.intermediate_act_fn = _OtherGelu(other)


def _scale_d(model, family):
    attention = {
        "gpt2": lambda: model.transformer.h[0].attn,
        "bert": lambda: model.bert.encoder.layer[0].attention.self,
        "llama": lambda: model.model.layers[0].self_attn,
    }[family]()
    d_attn = attention.attention_head_size if family == "bert" else attention.head_dim
    attention.scaling = 1.0 / d_attn  # scores / d_attn instead of / √d_attn


def _post_ln(model, family):
    import inspect

    for block in model.transformer.h:
        signature = inspect.signature(type(block).forward)

        def forward(*args, block=block, signature=signature, **kwargs):
            bound = signature.bind(block, *args, **kwargs)  # the causal mask arrives as it may
            call = dict(bound.arguments)
            call.pop("self")
            hidden_states = call.pop("hidden_states")
            call.update(call.pop("kwargs", {}))
            call.pop("encoder_hidden_states", None), call.pop("encoder_attention_mask", None)
            a, _ = block.attn(hidden_states, **call)
            X = block.ln_1(hidden_states + a)  # the norm after the residual sum
            return block.ln_2(X + block.mlp(X))

        block.forward = forward


def _pre_ln(model, family):
    for layer in model.bert.encoder.layer:

        def forward(hidden_states, attention_mask=None, *args, layer=layer, **kwargs):
            attention = layer.attention
            context, _ = attention.self(attention.output.LayerNorm(hidden_states),
                                        attention_mask=attention_mask)  # fmt: skip
            X = hidden_states + attention.output.dense(context)
            hidden = layer.intermediate(layer.output.LayerNorm(X))
            return X + layer.output.dense(hidden)

        layer.forward = forward


def _positions(model, family):
    wpe = model.transformer.wpe if family == "gpt2" else model.bert.embeddings.position_embeddings

    def forward(ids):
        return F.embedding(ids + 1, wpe.weight)  # position t reads W_p[:, t + 1]

    wpe.forward = forward


def _transpose_mask(module, args, kwargs):
    name = "attention_mask" if "attention_mask" in kwargs else "attn_mask"
    mask = kwargs.get(name)
    if mask is None:  # a kernel that builds its causal mask itself: hand it the transposed one
        fail("inject", "model", "passes no attention mask to its attention (an sdpa kernel?)")
    kwargs[name] = mask.transpose(-1, -2)
    return args, kwargs


def _mask_transposed(model, family):
    if family in ("gpt2", "llama"):
        model.set_attn_implementation("eager")  # an explicit mask, as in hand-written attention
        first = model.transformer.h[0].attn if family == "gpt2" else model.model.layers[0].self_attn
        first.register_forward_pre_hook(_transpose_mask, with_kwargs=True)
    else:
        layer = model.decoder.layers[0]
        layer.self_attn.register_forward_pre_hook(_transpose_mask, with_kwargs=True)


def _heads_strided(model, family):
    attention = model.transformer.h[-1].attn

    def forward(hidden_states, *args, attention_mask=None, **kwargs):
        q, k, v = attention.c_attn(hidden_states).split(attention.split_size, dim=2)
        B, T, D = q.shape
        H = attention.num_heads

        def split(t):  # (B, T, D) -> (B, H, T, D/H), head h = columns h, h + H, ...
            return t.view(B, T, D // H, H).permute(0, 3, 1, 2)

        q, k, v = split(q), split(k), split(v)
        causal = torch.full((T, T), -math.inf, dtype=q.dtype).triu(1)
        weights = torch.softmax(q @ k.transpose(-1, -2) * attention.scaling + causal, dim=-1)
        out = (weights @ v).permute(0, 2, 3, 1).reshape(B, T, D)
        return attention.c_proj(out), weights

    attention.forward = forward


def _bias_dropped(model, family):
    if family == "gpt2":
        linear = model.transformer.h[0].attn.c_attn

        def forward(x):
            return x @ linear.weight  # Conv1D without its bias: b_q, b_k, b_v dropped

    elif family == "bert":
        linear = model.bert.encoder.layer[0].attention.self.query

        def forward(x):
            return x @ linear.weight.T  # b_q dropped

    else:
        linear = model.encoder.layers[0].linear2

        def forward(x):
            return x @ linear.weight.T  # b_mlp2 dropped

    linear.forward = forward


def _final_norm_missing(model, family):
    norm = {
        "gpt2": lambda: model.transformer.ln_f,
        "bert": lambda: model.cls.predictions.transform.LayerNorm,
        "llama": lambda: model.model.norm,
    }[family]()
    norm.forward = lambda x: x


def _untied(model, family):
    head = model.cls.predictions.decoder if family == "bert" else model.lm_head
    embedding = {
        "gpt2": lambda: model.transformer.wte,
        "bert": lambda: model.bert.embeddings.word_embeddings,
        "llama": lambda: model.model.embed_tokens,
    }[family]().weight
    generator = torch.Generator().manual_seed(20220719)  # not a seed a reference model uses
    other = torch.randn(head.weight.shape, generator=generator) / math.sqrt(head.weight.shape[1])
    head.register_buffer("other_weight", other.to(head.weight.dtype))  # moves with .to(dtype)
    if head.weight is not embedding:
        head.forward = lambda x: F.linear(x, embedding, head.bias)  # tied where untied
    else:
        head.forward = lambda x: F.linear(x, head.other_weight, head.bias)  # untied where tied


def _embedding_scaled(model, family):
    table = model.transformer.wte if family == "gpt2" else model.model.embed_tokens
    scale = math.sqrt(table.weight.shape[1])

    def forward(ids):
        return F.embedding(ids, table.weight) * scale  # √d_e · W_e[:, x[t]] (Gemma, T5)

    table.forward = forward


def _output_bias_doubled(model, family):
    projection = model.transformer.h[0].attn.c_proj

    def forward(x):
        return torch.addmm(2 * projection.bias, x.view(-1, x.shape[-1]), projection.weight).view(
            *x.shape[:-1], -1
        )  # b_o added twice

    projection.forward = forward


DEPARTURES = {
    "eps": Departure(
        "the last layer's second layer norm computes with ε = 1e-3, whatever the config says",
        {
            "gpt2": "Algorithm 10, line 7 (l=L)",
            "bert": "Algorithm 9, line 8 (l=L)",
            "torch": "Algorithm 8, line 8 (encoder, l=L_enc)",
            "llama": "Algorithm 10, line 7 (l=L)",
        },
        _eps,
    ),  # fmt: skip
    "gelu-form": Departure(
        "layer 1's MLP uses the other GELU form (tanh where erf is configured, or the reverse); "
        "nn.Transformer: the exact GELU instead of ReLU in encoder layer 1",
        {
            "gpt2": "Algorithm 10, line 8 (l=1)",
            "bert": "Algorithm 9, line 7 (l=1)",
            "torch": "Algorithm 8, line 7 (l=1)",
        },
        _gelu_form,
    ),  # fmt: skip
    "scale-d": Departure(
        "layer 1's scores are divided by d_attn instead of √d_attn",
        {
            "gpt2": "Algorithm 4, lines 5-6 (weights) of line 6 (l=1)",
            "bert": "Algorithm 4, lines 5-6 (weights) of line 5 (l=1)",
            "llama": "Algorithm 4, lines 5-6 (weights) of line 6 (l=1)",
        },
        _scale_d,
    ),  # fmt: skip
    "post-ln": Departure(
        "every GPT-2 block normalises after the residual sums (Post-LN) instead of the branch "
        "inputs (Pre-LN)",
        {"gpt2": "Algorithm 10, line 5 (l=1)"},
        _post_ln,
    ),  # fmt: skip
    "pre-ln": Departure(
        "every BERT layer normalises the branch inputs (Pre-LN) instead of after the residual "
        "sums (Post-LN)",
        {"bert": "Algorithm 4, line 1 of line 5 (l=1)"},
        _pre_ln,
    ),  # fmt: skip
    "positions+1": Departure(
        "position t reads W_p[:, t + 1] (positions counted from 1)",
        {"gpt2": "Algorithm 10, lines 1-3", "bert": "Algorithm 9, lines 1-3"},
        _positions,
    ),  # fmt: skip
    "mask-transposed": Departure(
        "the causal mask of the first (decoder) layer's self-attention is transposed",
        {
            "gpt2": "Algorithm 4, lines 5-6 (weights) of line 6 (l=1)",
            "torch": "Algorithm 4, lines 5-6 (weights) of line 14 (l=1)",
            "llama": "Algorithm 4, lines 5-6 (weights) of line 6 (l=1)",
        },
        _mask_transposed,
    ),  # fmt: skip
    "heads-strided": Departure(
        "the last layer splits its heads strided (view(…, d_attn, H)): head h takes every H-th "
        "column",
        {"gpt2": "Algorithm 4, lines 5-6 (weights) of line 6 (l=L)"},
        _heads_strided,
    ),  # fmt: skip
    "bias-dropped": Departure(
        "layer 1 drops a bias: GPT-2 its q/k/v biases, BERT b_q, nn.Transformer b_mlp2",
        {
            "gpt2": "Algorithm 4, line 1 of line 6 (l=1)",
            "bert": "Algorithm 4, line 1 of line 5 (l=1)",
            "torch": "Algorithm 8, line 7 (l=1)",
        },
        _bias_dropped,
    ),  # fmt: skip
    "final-norm-missing": Departure(
        "the final layer norm (GPT-2: line 10; BERT: the head's, line 11) returns its input",
        {
            "gpt2": "Algorithm 10, line 10",
            "bert": "Algorithm 9, line 11",
            "llama": "Algorithm 10, line 10",
        },
        _final_norm_missing,
    ),  # fmt: skip
    "untied": Departure(
        "the logits come from another matrix than the weights say (untied where tied, or W_e "
        "where a separate W_u is stored)",
        {
            "gpt2": "Algorithm 10, line 11",
            "bert": "Algorithm 9, line 12",
            "llama": "Algorithm 10, line 11",
        },
        _untied,
    ),  # fmt: skip
    "embedding-scaled": Departure(
        "the token embedding is multiplied by √d_e (as Gemma and T5 do)",
        {"gpt2": "Algorithm 10, lines 1-3", "llama": "Algorithm 10, lines 1-3"},
        _embedding_scaled,
    ),  # fmt: skip
    "output-bias-doubled": Departure(
        "layer 1's attention output projection adds its bias b_o twice",
        {"gpt2": "Algorithm 5, line 4 of line 6 (l=1)"},
        _output_bias_doubled,
    ),  # fmt: skip
}


def inject(model, name: str):
    """Apply the departure ``name`` of :data:`DEPARTURES` to ``model`` (in place); returns it."""
    if name not in DEPARTURES:
        fail("inject", "name", f"= {name!r} is not one of {', '.join(DEPARTURES)}")
    family = _family(model)
    departure = DEPARTURES[name]
    if family not in departure.where:
        fail("inject", "name", f"= {name!r} does not apply to this model ({family}); it applies "
             f"to {', '.join(departure.where)}")  # fmt: skip
    departure.apply(model, family)
    return model
