"""The patches of the catalogue for Llama (RoPE, key/value grouping, the cache, SwiGLU, RMSnorm)
and the padded-batch one for GPT-2."""

from __future__ import annotations

import math

import torch


def _rope_frequencies(model, factor=None, base=None):
    rotary = model.model.rotary_emb
    d = 2 * rotary.inv_freq.shape[0]
    if base is not None:
        inv = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    else:
        inv = rotary.inv_freq.double() / factor  # positions divided by the factor
    rotary.inv_freq = inv.to(rotary.inv_freq.dtype)


def rope_base(model, family):
    _rope_frequencies(model, base=5e5)


def rope_scaled(model, family):
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


def rope_offset(model, family):
    _llama_attention(model, model.model.layers[0].self_attn, q_shift=1)


def kv_tiled(model, family):
    _llama_attention(model, model.model.layers[0].self_attn, tiled=True)


def cache_before_rope(model, family):
    _llama_attention(model, model.model.layers[0].self_attn, cache_before_rope=True)


def padding_on_queries(model, family):
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


def gate_up_swapped(model, family):
    mlp = model.model.layers[0].mlp
    mlp.forward = lambda x: mlp.down_proj(mlp.act_fn(mlp.up_proj(x)) * mlp.gate_proj(x))


def _rms_norm(norm, *, plus_one=False, centred=False):
    def forward(x):
        if centred:  # a layer norm's mean subtracted
            x = x - x.mean(-1, keepdim=True)
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
        return (1.0 + norm.weight if plus_one else norm.weight) * y

    norm.forward = forward


def rms_plus_one(model, family):
    _rms_norm(model.model.layers[0].input_layernorm, plus_one=True)


def rms_centred(model, family):
    _rms_norm(model.model.layers[0].post_attention_layernorm, centred=True)
