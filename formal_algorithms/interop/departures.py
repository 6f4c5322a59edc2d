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


def _heads_strided(model, family):
    _gpt2_attention(model.transformer.h[-1].attn, strided=True)


def _softmax_axis(model, family):
    _gpt2_attention(model.transformer.h[0].attn, axis=-2)


def _mask_future(model, family):
    _gpt2_attention(model.transformer.h[0].attn, future=1)


def _qk_swapped(model, family):
    _gpt2_attention(model.transformer.h[0].attn, swapped=True)


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


def _temperature(model, family):
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


def _causal_where_none(model, family):
    if family == "bert":
        attention = model.bert.encoder.layer[0].attention.self
    else:
        attention = model.decoder.layers[0].multihead_attn
    attention.register_forward_pre_hook(_causal_mask, with_kwargs=True)


def _relu_layer(model, family):
    model.transformer.h[-1].mlp.act = nn.ReLU()


def _unbiased_variance(model, family):
    norm = model.transformer.h[0].ln_1

    def forward(x):
        m = x.mean(-1, keepdim=True)
        v = x.var(-1, keepdim=True, unbiased=True)  # ÷ (d_e − 1)
        return (x - m) / torch.sqrt(v + norm.eps) * norm.weight + norm.bias

    norm.forward = forward


# ------------------------------------------------------------------------ Llama's departures


def _rope_frequencies(model, factor=None, base=None):
    rotary = model.model.rotary_emb
    d = 2 * rotary.inv_freq.shape[0]
    if base is not None:
        inv = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    else:
        inv = rotary.inv_freq.double() / factor  # positions divided by the factor
    rotary.inv_freq = inv.to(rotary.inv_freq.dtype)


def _rope_base(model, family):
    _rope_frequencies(model, base=5e5)


def _rope_scaled(model, family):
    _rope_frequencies(model, factor=2.0)


def _llama_attention(model, attention, *, q_shift=0, tiled=False, cache_before_rope=False):
    """A hand-written Llama attention: the queries rotated ``q_shift`` positions ahead of the
    keys, the key/value sets tiled (torch ``repeat``) instead of repeated per group, or keys
    cached before RoPE (every cached key then rotated by the current step's position)."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    rotary = model.model.rotary_emb

    def forward(hidden_states, position_embeddings=None, attention_mask=None, cache=None, **kw):
        B, T, _ = hidden_states.shape
        d = attention.head_dim
        q = attention.q_proj(hidden_states).view(B, T, -1, d).transpose(1, 2)
        k = attention.k_proj(hidden_states).view(B, T, -1, d).transpose(1, 2)
        v = attention.v_proj(hidden_states).view(B, T, -1, d).transpose(1, 2)
        cos, sin = position_embeddings
        if q_shift:
            cos_q, sin_q = rotary(hidden_states, torch.arange(T)[None] + q_shift)
            q, _ = apply_rotary_pos_emb(q, q, cos_q, sin_q)
        else:
            q, _ = apply_rotary_pos_emb(q, q, cos, sin)
        if cache is not None and cache_before_rope:  # the bug: rotated after the cache
            k, v = cache.update(k, v, attention.layer_idx)
            _, k = apply_rotary_pos_emb(k, k, cos, sin)  # every key by the step's position
        else:
            _, k = apply_rotary_pos_emb(k, k, cos, sin)
            if cache is not None:
                k, v = cache.update(k, v, attention.layer_idx)
        n = q.shape[1] // k.shape[1]
        if tiled:  # head h reads set (h − 1) mod G
            k, v = k.repeat(1, n, 1, 1), v.repeat(1, n, 1, 1)
        else:
            k, v = k.repeat_interleave(n, dim=1), v.repeat_interleave(n, dim=1)
        T_k = k.shape[2]
        causal = torch.full((T, T_k), -math.inf, dtype=q.dtype).triu(1 + T_k - T)
        weights = torch.softmax(q @ k.transpose(-1, -2) * attention.scaling + causal, dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(B, T, -1)
        return attention.o_proj(out), weights

    attention.forward = forward


def _rope_offset(model, family):
    _llama_attention(model, model.model.layers[0].self_attn, q_shift=1)


def _kv_tiled(model, family):
    _llama_attention(model, model.model.layers[0].self_attn, tiled=True)


def _cache_before_rope(model, family):
    _llama_attention(model, model.model.layers[0].self_attn, cache_before_rope=True)


def _padding_on_queries(model, family):
    """GPT-2's attention masks padding over the queries t_x instead of the keys t_z."""
    model.set_attn_implementation("eager")
    state, inner = {}, model.transformer.forward

    def forward(*args, attention_mask=None, **kwargs):
        state["pad"] = attention_mask
        return inner(*args, attention_mask=None, **kwargs)

    def pre(module, args, kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        B, T = hidden.shape[:2]
        mask = torch.full((T, T), -math.inf, dtype=hidden.dtype).triu(1).expand(B, 1, T, T)
        pad = state.get("pad")
        if pad is not None:  # the bug: a padded query is masked, a padded key is not
            mask = mask.masked_fill(pad[:, None, :, None] == 0, -math.inf)
            mask = torch.where(torch.isinf(mask).all(-1, keepdim=True), 0.0, mask)
        kwargs["attention_mask"] = mask
        return args, kwargs

    model.transformer.forward = forward
    for block in model.transformer.h:
        block.attn.register_forward_pre_hook(pre, with_kwargs=True)


def _gate_up_swapped(model, family):
    mlp = model.model.layers[0].mlp
    mlp.forward = lambda x: mlp.down_proj(mlp.act_fn(mlp.up_proj(x)) * mlp.gate_proj(x))


def _rms_norm(norm, *, plus_one=False, centred=False):
    def forward(x):
        if centred:  # a layer norm's mean subtracted
            x = x - x.mean(-1, keepdim=True)
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
        return (1.0 + norm.weight if plus_one else norm.weight) * y

    norm.forward = forward


def _rms_plus_one(model, family):
    _rms_norm(model.model.layers[0].input_layernorm, plus_one=True)


def _rms_centred(model, family):
    _rms_norm(model.model.layers[0].post_attention_layernorm, centred=True)


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
    "temperature": Departure(
        "the logits are divided by a temperature τ = 2 inside the model",
        {
            "gpt2": "Algorithm 10, line 11",
            "bert": "Algorithm 9, line 12",
            "llama": "Algorithm 10, line 11",
        },
        _temperature,
    ),  # fmt: skip
    "softmax-axis": Departure(
        "layer 1's softmax normalises over the queries instead of the keys",
        {"gpt2": "Algorithm 4, line 6 (weights) of line 6 (l=1)"},
        _softmax_axis,
    ),  # fmt: skip
    "mask-future": Departure(
        "layer 1's causal mask lets each token see one token ahead",
        {"gpt2": "Algorithm 4, line 6 (weights) of line 6 (l=1)"},
        _mask_future,
    ),  # fmt: skip
    "qk-swapped": Departure(
        "layer 1's scores are Qᵀ K (queries and keys swapped)",
        {"gpt2": "Algorithm 4, line 6 (weights) of line 6 (l=1)"},
        _qk_swapped,
    ),  # fmt: skip
    "causal-where-none": Departure(
        "a causal mask where the paper has none: BERT's layer 1, nn.Transformer's cross-attention",
        {
            "bert": "Algorithm 4, line 6 (weights) of line 5 (l=1)",
            "torch": "Algorithm 4, line 6 (weights) of line 16 (l=1)",
        },
        _causal_where_none,
    ),  # fmt: skip
    "relu-layer": Departure(
        "the last layer's MLP applies ReLU instead of the configured GELU",
        {"gpt2": "Algorithm 10, line 8 (l=L)"},
        _relu_layer,
    ),  # fmt: skip
    "unbiased-variance": Departure(
        "layer 1's first layer norm divides its variance by d_e − 1",
        {"gpt2": "Algorithm 10, line 5 (l=1)"},
        _unbiased_variance,
    ),  # fmt: skip
    "rope-base": Departure(
        "RoPE's frequencies from base 500000 whatever the configuration's rope_theta says",
        {"llama": "Algorithm 4, line 6 (weights) of line 6 (l=1)"},
        _rope_base,
    ),  # fmt: skip
    "rope-scaled": Departure(
        "RoPE's positions divided by 2 (linear scaling the configuration does not have)",
        {"llama": "Algorithm 4, line 6 (weights) of line 6 (l=1)"},
        _rope_scaled,
    ),  # fmt: skip
    "rope-offset": Departure(
        "layer 1's queries rotated one position ahead of its keys",
        {"llama": "Algorithm 4, line 6 (weights) of line 6 (l=1)"},
        _rope_offset,
    ),  # fmt: skip
    "kv-tiled": Departure(
        "layer 1's key/value sets tiled (query head h reads set (h − 1) mod G) instead of "
        "repeated per group",
        {"llama": "Algorithm 4, line 6 (weights) of line 6 (l=1)"},
        _kv_tiled,
    ),  # fmt: skip
    "cache-before-rope": Departure(
        "layer 1 caches its keys before RoPE and rotates every cached key by the current step's "
        "position (shows only in incremental decoding: compare_cached)",
        {"llama": "Algorithm 4, line 6 (weights) of line 6 (l=1), the cached step"},
        _cache_before_rope,
    ),  # fmt: skip
    "padding-on-queries": Departure(
        "GPT-2's attention masks padding over the queries instead of the keys (shows only in a "
        "left-padded batch: compare_batch)",
        {"gpt2": "Algorithm 4, line 6 (weights) of line 6 (l=1), a padded sequence"},
        _padding_on_queries,
    ),  # fmt: skip
    "gate-up-swapped": Departure(
        "layer 1's SwiGLU applies silu to the up projection instead of the gate",
        {"llama": "Algorithm 10, line 8 (l=1)"},
        _gate_up_swapped,
    ),  # fmt: skip
    "rms-plus-one": Departure(
        "layer 1's first RMSnorm scales by (1 + γ) (Gemma's convention)",
        {"llama": "Algorithm 10, line 5 (l=1)"},
        _rms_plus_one,
    ),  # fmt: skip
    "rms-centred": Departure(
        "layer 1's second RMSnorm subtracts the mean (a layer norm without β)",
        {"llama": "Algorithm 10, line 7 (l=1)"},
        _rms_centred,
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
