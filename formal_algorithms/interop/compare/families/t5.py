"""Hugging Face ``T5ForConditionalGeneration`` against Algorithm 8 with T5's substitutions
(:mod:`formal_algorithms.families.t5`): Pre-LN RMS norms without β, no ``W_p`` (a relative
position bias in the self-attentions), no biases, no ``1/√d_attn``, the gated-GELU MLP of v1.1 or
the original's ReLU MLP, a final norm after each stack (lines 9 and 20). The context ``z`` is the
encoder's ``input_ids``, ``x`` the decoder's ``decoder_input_ids``; Algorithm 8's encoder layers
are ``{e}``, its decoder layers ``{d}``.

What the rows are: Algorithm 4's Q per head, K and V of every head at once (as the paper's run
records them), the weights A and Ṽ per head, Algorithm 5's Y and output W_o Y of each attention
(lines 5, 14, 16); the norms before the MLPs (lines 8 and 19) and the MLPs' residual sums (lines 7
and 18); each stack's final norm (lines 9 and 20); line 21's logits. The norms before the
attentions (lines 6, 15, 17) are folded into the attentions' statements and have no row: a
departure there shows at Algorithm 4's Q (and K, V) of that attention. The attentions' residual
sums (lines 5, 14, 16) are the outputs of the layer's ``layer.0`` (``layer.1``) sublayers."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import torch

from ..alignment import key
from ..capture import cols
from .base import WEIGHTS, Extra, Family, Tap, float_state, heads, paper_key
from .llama import float32_rms_norm

E_, D_ = "encoder.block.{e}.layer", "decoder.block.{d}.layer"


def every_head(values, family):
    """K or V of every head at once, as the paper's run records them: (H, d_attn, ℓ)."""
    a = cols(values[0])
    return [({}, a.reshape(family.H, a.shape[0] // family.H, a.shape[1]), ", every head")]


def attention_taps(site, attention):
    """Algorithm 4 and 5's rows of one attention module (``…SelfAttention`` or
    ``…EncDecAttention``): its q, k, v and o, and its weights (item 2 of its output)."""
    return (
        Tap(site, 4, 1, f"{attention}.q", "out", heads()),
        Tap(site, 4, 2, f"{attention}.k", "out", every_head),
        Tap(site, 4, 3, f"{attention}.v", "out", every_head),
        Tap(site, 4, 6, attention, "out2", WEIGHTS, "A"),
        Tap(site, 4, 6, f"{attention}.o", "in", heads()),  # Ṽ of every head
        Tap(site, 5, 3, f"{attention}.o", "in"),
        Tap(site, 5, 4, f"{attention}.o"),
    )


TABLE = (
    Tap(3, 8, 3, "encoder.block.0", "in"),
    *attention_taps(5, f"{E_}.0.SelfAttention"),
    Tap(5, 8, 5, f"{E_}.0"),  # X + attention: the residual sum
    Tap(8, 8, 8, f"{E_}.1.layer_norm"),
    Tap(7, 8, 7, f"{E_}.1"),
    Tap(9, 8, 9, "encoder.final_layer_norm"),
    Tap(12, 8, 12, "decoder.block.0", "in"),
    *attention_taps(14, f"{D_}.0.SelfAttention"),
    Tap(14, 8, 14, f"{D_}.0"),
    *attention_taps(16, f"{D_}.1.EncDecAttention"),
    Tap(16, 8, 16, f"{D_}.1"),
    Tap(19, 8, 19, f"{D_}.2.layer_norm"),
    Tap(18, 8, 18, f"{D_}.2"),
    Tap(20, 8, 20, "decoder.final_layer_norm"),
    Tap(21, 8, 21, "lm_head", "out", part="logits"),
)

EXTRAS = (
    Extra("norm", 8, f"{E_}.1.layer_norm"),
    Extra("norm", 19, f"{D_}.2.layer_norm"),
    Extra("norm", 9, "encoder.final_layer_norm"),
    Extra("norm", 20, "decoder.final_layer_norm"),
    Extra("attention input", 5, f"{E_}.0.SelfAttention"),
    Extra("attention input", 14, f"{D_}.0.SelfAttention"),
    Extra("attention input", 16, f"{D_}.1.EncDecAttention"),
    Extra("mlp input", 7, f"{E_}.1.DenseReluDense"),
    Extra("mlp input", 18, f"{D_}.2.DenseReluDense"),
    Extra("activation", 7, f"{E_}.1.DenseReluDense.act"),
    Extra("activation", 18, f"{D_}.2.DenseReluDense.act"),
    Extra("logits", 21, "lm_head"),  # its input: X after line 20 (and the original's 1/√d_e)
)

KINDS = {3: "embedding", 5: "attention residual", 7: "mlp residual", 8: "norm", 9: "final norm",
         12: "embedding", 14: "attention residual", 16: "attention residual",
         18: "mlp residual", 19: "norm", 20: "final norm", 21: "output"}  # fmt: skip

#: paper line -> (stack, γ's field, the line whose X it normalises); stack None: θ's own γ
NORMS = {8: ("enc", "gamma2", 5), 19: ("dec", "gamma5", 16), 9: (None, "gamma_enc", 7),
         20: (None, "gamma_dec", 18)}  # fmt: skip


class T5(Family):
    name = "Algorithm 8 with T5's substitutions (families.t5)"
    algorithm, final_line = 8, 21
    table, extras, kinds, causal_sites = TABLE, EXTRAS, KINDS, (14,)
    rms = True
    rms_classes = ("T5LayerNorm",)  # float32 variance, whatever the model's dtype
    norm_offset = 0.0
    hf_name = "T5"

    def __init__(self, model):
        from ....families.t5 import FEED_FORWARD, t5_config, t5_from_state_dict

        self.model = model
        config = model.config
        self.theta = t5_from_state_dict(float_state(model), **t5_config(config.to_dict()))
        own = self.theta.config
        self.kwargs = {"eps": own.eps, "activation": FEED_FORWARD[own.feed_forward_proj][0]}
        self.H = config.num_heads

    def stacks(self):
        return {"e": len(self.model.encoder.block), "d": len(self.model.decoder.block)}

    def paper(self):
        from ....families.t5 import t5_logits

        return t5_logits, (jnp.asarray(self.z), jnp.asarray(self.x), self.theta), {}

    def call(self):
        z, x = torch.as_tensor(self.z)[None], torch.as_tensor(self.x)[None]
        return self.model(input_ids=z, decoder_input_ids=x)

    def contexts(self):
        return [float32_rms_norm(self)] if self.float64 else []

    def after_run(self, output, exposed, extra, store):
        """Line 21: the model's logits (the original T5 scales X by 1/√d_e outside a module, so
        its lm_head's input is the scaled X)."""
        logits = output.logits[0].detach().to(torch.float64).numpy().T
        exposed[key(8, 21, 8, 21, "logits")] = (logits, "the model's logits (lm_head output)")

    def layer_list(self, site):
        return self.theta.enc if site <= 9 else self.theta.dec

    def biases(self, k):
        return []  # T5 has none

    def norm_of(self, k):
        if k.algorithm != 8 or k.line not in NORMS:
            return None
        stack, g, before = NORMS[k.line]
        if stack is None:
            L = len(self.theta.enc if before == 7 else self.theta.dec)
            gamma, previous = getattr(self.theta, g), paper_key(self, before, before, l=L)
        else:
            gamma = getattr(getattr(self.theta, stack)[k.l - 1], g)
            previous = paper_key(self, before, before, l=k.l)
        return gamma, np.zeros(np.shape(gamma)), previous, self.kwargs["eps"]

    def attention_input(self, site, l, paper):
        return None  # rms_norm(X) before lines 5, 14 and 16 is folded into their rows

    def mlp_input(self, site, l, paper):
        line = 8 if site == 7 else 19
        return f"X̃ of line {line}", paper.get(paper_key(self, line, line, l=l))
