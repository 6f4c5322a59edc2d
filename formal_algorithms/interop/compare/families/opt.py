"""Hugging Face ``OPTForCausalLM`` (Pre-LN, ``do_layer_norm_before``) against Algorithm 10 with
OPT's substitutions (:mod:`formal_algorithms.families.opt`: ReLU in line 8, positions offset by 2
in ``W_p``'s rows): θ is Algorithm 10's own, so the paper's run is ``d_transformer`` with ReLU.
A Post-LN OPT (350m) is refused by name: its line 10 is dropped and its norms read other lines'
values, which this table does not describe."""

from __future__ import annotations

import jax.numpy as jnp

from ....paper.checks import fail
from .base import (
    PreLNDecoder,
    Tap,
    decoder_extras,
    decoder_table,
    float_state,
    heads,
)
from .llama import float32_softmax

NAME = "compare"
L_ = "model.decoder.layers.{i}"
A_ = f"{L_}.self_attn"

TABLE = decoder_table(
    Tap(3, 10, 3, "model.decoder.layers.0", "in"),
    f"{L_}.self_attn_layer_norm",
    [Tap(6, 4, n + 1, f"{A_}.{m}_proj", "out", heads()) for n, m in enumerate("qkv")],
    A_,
    f"{A_}.out_proj",
    Tap(6, 10, 6, f"{L_}.final_layer_norm", "in"),
    f"{L_}.final_layer_norm",
    L_,
    "model.decoder.final_layer_norm",
)

EXTRAS = decoder_extras(
    f"{L_}.self_attn_layer_norm",
    f"{L_}.final_layer_norm",
    "model.decoder.final_layer_norm",
    f"{A_}.q_proj",
    f"{L_}.fc1",
    f"{L_}.activation_fn",
    "lm_head",
)


class Opt(PreLNDecoder):
    name = "Algorithm 10 with OPT's substitutions (families.opt)"
    table, extras = TABLE, EXTRAS
    modeling = "transformers.models.opt.modeling_opt"  # its eager attention kernel
    hf_name = "OPT"

    def __init__(self, model):
        from ....families.opt import opt_config, opt_from_state_dict, paper_theta
        from ....paper.functions import relu

        config = model.config
        if not config.do_layer_norm_before:
            fail(
                NAME,
                "model.config.do_layer_norm_before",
                "is False (Post-LN OPT); compare has OPT's Pre-LN table only",
            )
        self.model = model
        tied = model.lm_head.weight is model.model.decoder.embed_tokens.weight
        state = float_state(model, "lm_head.weight" if tied else None)
        theta = opt_from_state_dict(state, **opt_config(config.to_dict()))
        self.theta = paper_theta(theta)
        self.kwargs = {"activation": relu, "eps": theta.config.eps}
        self.H, self.L = config.num_attention_heads, config.num_hidden_layers

    def attention_kernel(self):
        return float32_softmax(self) if self.float64 else super().attention_kernel()

    def paper(self):
        from ....paper.architectures import d_transformer

        return d_transformer, (jnp.asarray(self.x), self.theta), self.kwargs
