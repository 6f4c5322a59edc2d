"""Hugging Face ``LlamaForCausalLM`` against Algorithm 10 with Llama's substitutions
(:func:`formal_algorithms.families.llama.llama_logits`: RMSnorm, RoPE, grouped-query attention,
SwiGLU, no biases): the table, and its known departure (the float32 RMSnorm)."""

from __future__ import annotations

import contextlib
import importlib
import inspect

import jax.numpy as jnp
import torch

from ....paper.checks import fail
from ..capture import eager_attention
from .base import (
    PreLNDecoder,
    Tap,
    decoder_parts,
    float_state,
    heads,
    kv_sets,
)

L_ = "model.layers.{i}"
A_ = f"{L_}.self_attn"

TABLE, EXTRAS = decoder_parts(
    Tap(3, 10, 3, "model.embed_tokens"),
    f"{L_}.input_layernorm",
    [
        Tap(6, 4, 1, f"{A_}.q_proj", "out", heads()),  # before RoPE: the trace's first Q record
        Tap(6, 4, 2, f"{A_}.k_proj", "out", kv_sets),
        Tap(6, 4, 3, f"{A_}.v_proj", "out", kv_sets),
    ],
    A_,
    f"{A_}.o_proj",
    Tap(6, 10, 6, f"{L_}.post_attention_layernorm", "in"),
    f"{L_}.post_attention_layernorm",
    L_,
    "model.norm",
    attention_input=f"{A_}.q_proj",
    mlp=f"{L_}.mlp",
    activation=f"{L_}.mlp.act_fn",
)


def _rope(config) -> dict:
    """The configuration's RoPE parameters (transformers ≥ 4.56: ``rope_parameters``)."""
    return getattr(config, "rope_parameters", None) or {
        "rope_theta": getattr(config, "rope_theta", 10000.0)
    }


class Llama(PreLNDecoder):
    name = "Algorithm 10 with Llama's substitutions (families.llama)"
    table, extras, rms = TABLE, EXTRAS, True
    norm_params = {5: ("gamma1", None), 7: ("gamma2", None), 10: ("gamma", None)}
    rope = True

    rms_classes = ("LlamaRMSNorm",)  # Hugging Face's RMSnorm classes run in float32
    norm_offset = 0.0  # their γ as stored is the norm's γ (Gemma's is γ − 1)
    modeling = "transformers.models.llama.modeling_llama"  # its eager attention kernel
    hf_name = "Llama"

    def __init__(self, model):
        self.check(model.config)
        self.model = model
        config = model.config
        tied = model.lm_head.weight is model.model.embed_tokens.weight
        state = float_state(model, "lm_head.weight" if tied else None)
        self.H, self.G = config.num_attention_heads, config.num_key_value_heads
        self.L = config.num_hidden_layers
        self.theta = self.load(config, state)
        own = self.theta.config
        self.kwargs = {"rope_base": own.rope_base, "eps": own.eps}

    def check(self, config):
        """Refuse what the Llama family does not write, by the configuration's name."""
        rope = _rope(config)
        where = "model.config"
        if rope.get("rope_type", "default") != "default":
            fail(
                "compare",
                f"{where}.rope_parameters",
                f"has rope_type {rope['rope_type']!r}; the "
                "Llama family here has the original RoPE only",
            )
        if config.attention_bias or getattr(config, "mlp_bias", False):
            fail("compare", where, "has attention or MLP biases; Llama's projections are bias-free")
        if config.hidden_act != "silu":
            fail("compare", f"{where}.hidden_act", f"= {config.hidden_act!r}; SwiGLU uses silu")

    def load(self, config, state):
        """θ from the state dict (the family's loader and its configuration reader)."""
        from ....families.llama import LlamaConfig
        from ....families.llama_loading import llama_from_state_dict

        rope = _rope(config)
        own = LlamaConfig(rope_base=float(rope["rope_theta"]), eps=config.rms_norm_eps)
        return llama_from_state_dict(
            state, n_layers=self.L, n_heads=self.H, n_kv_heads=self.G, config=own
        )

    def paper(self):
        from ....families.llama import llama_logits

        return llama_logits, (jnp.asarray(self.x), self.theta), self.kwargs

    def activation_name(self):
        return "SiLU"

    def rotary_module(self):
        """Hugging Face's rotary embedding module (its frequencies and its float32 forward)."""
        return self.model.model.rotary_emb

    def biases(self, k):
        return []

    def contexts(self):
        return [float32_rms_norm(self), float32_rope(self)] if self.float64 else []

    def attention_kernel(self):
        return float32_softmax(self) if self.float64 else super().attention_kernel()


# ------------------------------------------------------------------- the known departure


def _stock_rms_norm(module, classes) -> bool:
    """A Hugging Face RMSnorm (of ``classes``) running its class's own forward, which casts to
    float32 (``.to(torch.float32)``, or Gemma's ``.float()``)."""
    if type(module).__name__ not in classes or "forward" in vars(module):
        return False
    try:
        source = inspect.getsource(type(module).forward)
    except (OSError, TypeError):
        return False
    return "torch.float32" in source or ".float()" in source


def _float32_cast(module) -> str:
    """The cast to float32 in a stock RMSnorm's forward, as its source writes it."""
    source = inspect.getsource(type(module).forward)
    return ".to(torch.float32)" if "torch.float32" in source else ".float()"


def _rms_norm_in_input_dtype(module, offset: float = 0.0):
    eps = getattr(module, "variance_epsilon", None) or module.eps

    def forward(hidden_states):  # the stock formula without its float32 cast
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        gamma = module.weight + offset if offset else module.weight  # Gemma stores γ − 1
        return gamma * (hidden_states * torch.rsqrt(variance + eps))

    return forward


@contextlib.contextmanager
def float32_rms_norm(family):
    """The known departure: Hugging Face's ``LlamaRMSNorm`` computes in float32 whatever the
    model's dtype (its forward casts with ``.to(torch.float32)``). In a float64 run the stock
    modules run the same formula in float64 for the comparison, so that the lines after them are
    compared at float64's resolution; the size of the cast is measured on layer 1's first norm
    and reported. A module whose forward was replaced is left as it is."""
    stock = [m for m in family.model.modules() if _stock_rms_norm(m, family.rms_classes)]
    if not stock:
        yield
        return
    probe = torch.randn(
        1,
        3,
        stock[0].weight.shape[0],
        generator=torch.Generator().manual_seed(0),
        dtype=stock[0].weight.dtype,
    )
    with torch.no_grad():
        cast, exact = stock[0](probe), _rms_norm_in_input_dtype(stock[0], family.norm_offset)(probe)
    size = float((cast - exact).abs().max() / exact.abs().max())
    family.known_found.append(
        f"Hugging Face's {type(stock[0]).__name__} casts its input to float32 whatever the model's dtype "
        f"(documented in its forward: {_float32_cast(stock[0])}); measured on a random input, its "
        f"output differs from the float64 formula by {size:.2g} of its scale. compare ran the "
        f"{len(stock)} stock RMSnorm modules in float64 for this run, so every line is compared "
        "at float64's resolution; the model as shipped carries that float32 rounding"
    )
    for m in stock:
        m.forward = _rms_norm_in_input_dtype(m, family.norm_offset)
    try:
        yield
    finally:
        for m in stock:
            del m.forward


KERNEL = "formal_algorithms_eager_in_query_dtype"


def _eager_in_query_dtype(module, query, key, value, attention_mask, scaling, dropout=0.0, **kw):
    """Hugging Face's eager Llama (or OPT) attention with its softmax in the query's dtype (no
    float32 cast); Llama's own ``repeat_kv`` (the grouping order stays the model's)."""
    from transformers.models.llama.modeling_llama import repeat_kv

    groups = getattr(module, "num_key_value_groups", 1)  # OPT's attention has one set per head
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = torch.softmax(weights, dim=-1)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


@contextlib.contextmanager
def float32_softmax(family):
    """The second known departure: Hugging Face's eager Llama attention (the kernel that returns
    the weights) takes its softmax in float32 whatever the model's dtype. In a float64 run the
    model uses that kernel with the softmax in float64 (registered under :data:`KERNEL`); a
    model whose attention does not call the kernel is unaffected."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    model = family.model
    before = model.config._attn_implementation
    modeling = importlib.import_module(family.modeling)
    source = inspect.getsource(modeling.eager_attention_forward)
    if "dtype=torch.float32" not in source:
        with eager_attention(model):
            yield
        return
    AttentionInterface.register(KERNEL, _eager_in_query_dtype)
    AttentionMaskInterface.register(KERNEL, eager_mask)  # the eager kernel's additive mask
    family.known_found.append(
        f"Hugging Face's eager {family.hf_name} attention takes its softmax in float32 whatever "
        "the model's dtype (documented in eager_attention_forward: softmax(…, dtype=torch.float32)); compare "
        "ran that kernel with the softmax in float64 for this run"
    )
    model.set_attn_implementation(KERNEL)
    try:
        yield
    finally:
        model.set_attn_implementation(before)


@contextlib.contextmanager
def float32_rope(family):
    """The third: Hugging Face's Llama rotary embedding computes its angles in float32 (its
    ``inv_freq`` is made in float32, its forward calls ``.float()``). If the module is stock and
    its frequencies are the configured base's (to float32's resolution), the run uses the same
    frequencies in float64; frequencies of another base are a departure and stay as they are."""
    rotary = family.rotary_module()
    try:
        stock = "forward" not in vars(rotary) and ".float()" in inspect.getsource(
            type(rotary).forward
        )
    except (OSError, TypeError):
        stock = False
    d = 2 * rotary.inv_freq.shape[0]
    base = family.theta.config.rope_base
    exact = 1.0 / (base ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    if not stock or not torch.allclose(rotary.inv_freq.double(), exact, rtol=1e-6, atol=0):
        yield
        return
    scaling = float(getattr(rotary, "attention_scaling", 1.0))

    def forward(x, position_ids):
        angles = position_ids[..., None].to(torch.float64) * exact
        emb = torch.cat((angles, angles), dim=-1)
        return (emb.cos() * scaling).to(x.dtype), (emb.sin() * scaling).to(x.dtype)

    family.known_found.append(
        f"Hugging Face's {family.hf_name} rotary embedding computes its angles in float32 (inv_freq made in "
        "float32, position_ids.float() in its forward); its frequencies here are the configured "
        f"base's ({base:g}) to float32's resolution, and compare computed them in float64 for "
        "this run"
    )
    rotary.forward = forward
    try:
        yield
    finally:
        del rotary.forward
