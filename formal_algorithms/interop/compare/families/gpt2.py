"""Hugging Face ``GPT2LMHeadModel`` against Algorithm 10 (DTransformer): the table."""

from __future__ import annotations

import jax.numpy as jnp

from .base import (
    SOFTMAX,
    PreLNDecoder,
    Tap,
    decoder_parts,
    heads,
)

H_ = "transformer.h.{i}"

TABLE, EXTRAS = decoder_parts(
    Tap(3, 10, 3, "transformer.h.0", "in"),
    f"{H_}.ln_1",
    [Tap(6, 4, n, f"{H_}.attn.c_attn", "out", heads(n - 1, 3)) for n in (1, 2, 3)],
    f"{H_}.attn",
    f"{H_}.attn.c_proj",
    Tap(6, 10, 6, f"{H_}.ln_2", "in"),
    f"{H_}.ln_2",
    H_,
    "transformer.ln_f",
    attention_input=f"{H_}.attn.c_attn",
    mlp=f"{H_}.mlp",
    activation=f"{H_}.mlp.act",
)
TABLE = (*TABLE, Tap(11, 10, 11, "lm_head", "out", SOFTMAX, "P"))


class Gpt2(PreLNDecoder):
    name = "Algorithm 10 (DTransformer)"
    table, extras = TABLE, EXTRAS

    def __init__(self, model):
        from ...gpt2 import d_transformer_from_gpt2, d_transformer_kwargs_from_gpt2

        self.model = model
        self.theta = d_transformer_from_gpt2(model)
        self.kwargs = d_transformer_kwargs_from_gpt2(model)
        self.H, self.L = model.config.n_head, model.config.n_layer

    def paper(self):
        from ....paper.architectures import d_transformer

        return d_transformer, (jnp.asarray(self.x), self.theta), self.kwargs
