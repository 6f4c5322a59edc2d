"""The patches of the catalogue for GPT-2, BERT and nn.Transformer (and those every family
shares): each changes one model instance's code, never its weights or configuration."""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn
from torch.nn import functional as F

from ...paper.checks import fail


def _hard_coded_eps(norm: nn.LayerNorm, eps: float):
    """The norm computes with ``eps`` whatever its ``eps`` attribute (and the config) says."""

    def forward(x):
        return F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, eps)

    norm.forward = forward


def eps(model, family):
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


def gelu_form(model, family):
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


def scale_d(model, family):
    attention = {
        "gpt2": lambda: model.transformer.h[0].attn,
        "bert": lambda: model.bert.encoder.layer[0].attention.self,
        "llama": lambda: model.model.layers[0].self_attn,
    }[family]()
    d_attn = attention.attention_head_size if family == "bert" else attention.head_dim
    attention.scaling = 1.0 / d_attn  # scores / d_attn instead of / √d_attn


def post_ln(model, family):

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


def pre_ln(model, family):
    for layer in model.bert.encoder.layer:

        def forward(hidden_states, attention_mask=None, *args, layer=layer, **kwargs):
            attention = layer.attention
            context, _ = attention.self(
                attention.output.LayerNorm(hidden_states), attention_mask=attention_mask
            )
            X = hidden_states + attention.output.dense(context)
            hidden = layer.intermediate(layer.output.LayerNorm(X))
            return X + layer.output.dense(hidden)

        layer.forward = forward


def positions(model, family):
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


def mask_transposed(model, family):
    if family in ("gpt2", "llama"):
        model.set_attn_implementation("eager")  # an explicit mask, as in hand-written attention
        first = model.transformer.h[0].attn if family == "gpt2" else model.model.layers[0].self_attn
        first.register_forward_pre_hook(_transpose_mask, with_kwargs=True)
    else:
        layer = model.decoder.layers[0]
        layer.self_attn.register_forward_pre_hook(_transpose_mask, with_kwargs=True)


def _gpt2_attention(attention, *, strided=False, future=0, axis=-1, swapped=False):
    """A hand-written GPT-2 attention (the code a user writes), with one departure at a time:
    heads split strided, a mask that sees ``future`` tokens ahead, the softmax over ``axis``
    (−2: over the queries), the scores' queries and keys swapped."""

    def forward(hidden_states, *args, **kwargs):
        q, k, v = attention.c_attn(hidden_states).split(attention.split_size, dim=2)
        B, T, D = q.shape
        H = attention.num_heads

        def split(t):  # (B, T, D) -> (B, H, T, D/H)
            if strided:  # head h = columns h, h + H, ...
                return t.view(B, T, D // H, H).permute(0, 3, 1, 2)
            return t.view(B, T, H, D // H).transpose(1, 2)

        q, k, v = split(q), split(k), split(v)
        scores = (k @ q.transpose(-1, -2)) if swapped else (q @ k.transpose(-1, -2))
        causal = torch.full((T, T), -math.inf, dtype=q.dtype).triu(1 + future)
        weights = torch.softmax(scores * attention.scaling + causal, dim=axis)
        out = weights @ v
        out = out.permute(0, 2, 3, 1) if strided else out.transpose(1, 2)
        return attention.c_proj(out.reshape(B, T, D)), weights

    attention.forward = forward


def heads_strided(model, family):
    _gpt2_attention(model.transformer.h[-1].attn, strided=True)


def softmax_axis(model, family):
    _gpt2_attention(model.transformer.h[0].attn, axis=-2)


def mask_future(model, family):
    _gpt2_attention(model.transformer.h[0].attn, future=1)


def qk_swapped(model, family):
    _gpt2_attention(model.transformer.h[0].attn, swapped=True)


def bias_dropped(model, family):
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


def final_norm_missing(model, family):
    norm = {
        "gpt2": lambda: model.transformer.ln_f,
        "bert": lambda: model.cls.predictions.transform.LayerNorm,
        "llama": lambda: model.model.norm,
    }[family]()
    norm.forward = lambda x: x


def untied(model, family):
    head = model.cls.predictions.decoder if family == "bert" else model.lm_head
    embedding = {
        "gpt2": lambda: model.transformer.wte,
        "bert": lambda: model.bert.embeddings.word_embeddings,
        "llama": lambda: model.model.embed_tokens,
    }[family]().weight
    generator = torch.Generator().manual_seed(20220719)  # not a seed a reference model uses
    other = torch.randn(head.weight.shape, generator=generator) / math.sqrt(head.weight.shape[1])
    head.register_buffer(
        "other_weight", other.to(head.weight.dtype), persistent=False
    )  # .to(dtype)
    if head.weight is not embedding:
        head.forward = lambda x: F.linear(x, embedding, head.bias)  # tied where untied
    else:
        head.forward = lambda x: F.linear(x, head.other_weight, head.bias)  # untied where tied


def embedding_scaled(model, family):
    table = model.transformer.wte if family == "gpt2" else model.model.embed_tokens
    scale = math.sqrt(table.weight.shape[1])

    def forward(ids):
        return F.embedding(ids, table.weight) * scale  # √d_e · W_e[:, x[t]] (Gemma, T5)

    table.forward = forward


def output_bias_doubled(model, family):
    projection = model.transformer.h[0].attn.c_proj

    def forward(x):
        return torch.addmm(2 * projection.bias, x.view(-1, x.shape[-1]), projection.weight).view(
            *x.shape[:-1], -1
        )  # b_o added twice

    projection.forward = forward


def temperature(model, family):
    head = model.cls.predictions.decoder if family == "bert" else model.lm_head
    linear = head.forward
    head.forward = lambda x: linear(x) / 2.0  # logits / τ with τ = 2 inside the model


def _causal_mask(module, args, kwargs):
    """A pre-hook: the attention gets a causal mask (−∞ where t_z > t_x) whatever it was given."""
    name = "attention_mask" if "attention_mask" in kwargs or not args else "attn_mask"
    hidden = kwargs.get("hidden_states", args[0] if args else None)
    queries = kwargs.get("query", hidden).shape[-2]
    keys = kwargs.get("key", args[1] if len(args) > 1 else hidden).shape[-2]
    mask = torch.full((queries, keys), -math.inf, dtype=hidden.dtype).triu(1)
    kwargs[name] = mask if name == "attn_mask" else mask[None, None]
    if name == "attn_mask":
        kwargs.pop("is_causal", None)
    return args, kwargs


def causal_where_none(model, family):
    if family == "bert":
        attention = model.bert.encoder.layer[0].attention.self
    else:
        attention = model.decoder.layers[0].multihead_attn
    attention.register_forward_pre_hook(_causal_mask, with_kwargs=True)


def relu_layer(model, family):
    model.transformer.h[-1].mlp.act = nn.ReLU()


def unbiased_variance(model, family):
    norm = model.transformer.h[0].ln_1

    def forward(x):
        m = x.mean(-1, keepdim=True)
        v = x.var(-1, keepdim=True, unbiased=True)  # ÷ (d_e − 1)
        return (x - m) / torch.sqrt(v + norm.eps) * norm.weight + norm.bias

    norm.forward = forward
