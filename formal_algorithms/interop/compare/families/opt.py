"""Hugging Face ``OPTForCausalLM`` against Algorithm 10 with OPT's substitutions
(:mod:`formal_algorithms.families.opt`: ReLU in line 8, positions offset by 2 in ``W_p``'s rows).

Pre-LN (``do_layer_norm_before``, OPT-125m, 1.3B and up): θ is Algorithm 10's own, so the paper's
run is ``d_transformer`` with ReLU (:class:`Opt`). Post-LN (``do_layer_norm_before=False``,
OPT-350m's placement): the paper's run is the family's ``opt_logits`` with ``pre_ln=False``, whose
layers are the paper's Post-LN layer (``paper.architectures.post_ln_layer``) and whose line 10 is
dropped (:class:`PostLNOpt`). That layer's statements carry the line numbers of the Post-LN
Algorithms 8 and 9 (line 5: ``X ← X + MHAttention(X)``, 6: its norm, 7: ``X ← X + MLP(X)``, 8:
its norm), and the trace records them under Algorithm 10, so the Post-LN rows are keyed so: line
5 the attention's residual sum, 6 the norm after it (``self_attn_layer_norm``), 7 the MLP's sum, 8
the norm after it (``final_layer_norm``, the layer's output); the pseudocode a row shows is
Algorithm 10's text of that line number. No row is line 10 (OPT-350m has no final norm).
OPT-350m itself (``word_embed_proj_dim`` ≠ ``hidden_size``: ``project_in``, ``project_out``) is
refused by name: the family does not write the projection."""

from __future__ import annotations

import jax.numpy as jnp

from ....paper.checks import fail
from .base import (
    WEIGHTS,
    Extra,
    Family,
    PreLNDecoder,
    Tap,
    decoder_parts,
    float_state,
    heads,
    paper_key,
)
from .llama import float32_softmax

L_ = "model.decoder.layers.{i}"
A_ = f"{L_}.self_attn"

TABLE, EXTRAS = decoder_parts(
    Tap(3, 10, 3, "model.decoder.layers.0", "in"),
    f"{L_}.self_attn_layer_norm",
    [Tap(6, 4, n + 1, f"{A_}.{m}_proj", "out", heads()) for n, m in enumerate("qkv")],
    A_,
    f"{A_}.out_proj",
    Tap(6, 10, 6, f"{L_}.final_layer_norm", "in"),
    f"{L_}.final_layer_norm",
    L_,
    "model.decoder.final_layer_norm",
    attention_input=f"{A_}.q_proj",
    mlp=f"{L_}.fc1",
    activation=f"{L_}.activation_fn",
)


# Post-LN: each norm after its residual sum (the line numbers of the paper's Post-LN layer)
POST_LN_TABLE = (
    Tap(3, 10, 3, "model.decoder.layers.0", "in"),
    *(Tap(5, 4, n + 1, f"{A_}.{m}_proj", "out", heads()) for n, m in enumerate("qkv")),
    Tap(5, 4, 6, A_, "out1", WEIGHTS, "A"),
    Tap(5, 4, 6, f"{A_}.out_proj", "in", heads()),  # Ṽ of every head
    Tap(5, 5, 2, f"{A_}.out_proj", "in", heads()),  # Y^h
    Tap(5, 5, 3, f"{A_}.out_proj", "in"),
    Tap(5, 5, 4, f"{A_}.out_proj"),
    Tap(5, 9, 5, f"{L_}.self_attn_layer_norm", "in"),  # X + MHAttention(X)
    Tap(6, 9, 6, f"{L_}.self_attn_layer_norm"),
    Tap(7, 9, 7, f"{L_}.final_layer_norm", "in"),  # X + MLP(X)
    Tap(8, 10, 8, L_),  # final_layer_norm's output, the layer's (lines 5-8 of Algorithm 10)
    Tap(11, 10, 11, "lm_head", "out", part="logits"),
)

POST_LN_EXTRAS = (
    Extra("norm", 6, f"{L_}.self_attn_layer_norm"),
    Extra("norm", 8, f"{L_}.final_layer_norm"),
    Extra("attention input", 5, f"{A_}.q_proj"),
    Extra("mlp input", 7, f"{L_}.fc1"),
    Extra("activation", 7, f"{L_}.activation_fn"),
    Extra("logits", 11, "lm_head"),
)


def load(model):
    """(θ of the OPT family, its configuration) from the model's state dict; what the family
    does not write is refused by name."""
    from ....families.opt import opt_config, opt_from_state_dict

    config = model.config
    width = getattr(config, "word_embed_proj_dim", None) or config.hidden_size
    if width != config.hidden_size:
        fail(
            "compare",
            "model.config.word_embed_proj_dim",
            f"= {width} ≠ hidden_size {config.hidden_size} (OPT-350m's project_in and "
            "project_out around the layers): the OPT family does not write the projection",
        )
    tied = model.lm_head.weight is model.model.decoder.embed_tokens.weight
    state = float_state(model, "lm_head.weight" if tied else None)
    return opt_from_state_dict(state, **opt_config(config.to_dict())), config


class Opt(PreLNDecoder):
    name = "Algorithm 10 with OPT's substitutions (families.opt)"
    table, extras = TABLE, EXTRAS
    modeling = "transformers.models.opt.modeling_opt"  # its eager attention kernel
    hf_name = "OPT"

    def __new__(cls, model=None):
        if cls is Opt and model is not None and not model.config.do_layer_norm_before:
            return PostLNOpt(model)  # the Post-LN table (not an Opt: its __init__ runs once)
        return super().__new__(cls)

    def __init__(self, model):
        from ....families.opt import paper_theta
        from ....paper.functions import relu

        self.model = model
        theta, config = load(model)
        self.theta = paper_theta(theta)
        self.kwargs = {"activation": relu, "eps": theta.config.eps}
        self.H, self.L = config.num_attention_heads, config.num_hidden_layers

    def attention_kernel(self):
        return float32_softmax(self) if self.float64 else super().attention_kernel()

    def paper(self):
        from ....paper.architectures import d_transformer

        return d_transformer, (jnp.asarray(self.x), self.theta), self.kwargs


class PostLNOpt(Family):
    """A Post-LN OPT (``do_layer_norm_before=False``): lines 5-8 are the paper's Post-LN layer
    (5: the attention's sum, 6: its norm, 7: the MLP's sum, 8: its norm), no line 10; θ is the
    family's :class:`~formal_algorithms.families.opt.OPTParams` and the paper's run ``opt_logits``."""

    name = "Algorithm 10 with OPT's substitutions, Post-LN (families.opt, pre_ln=False)"
    algorithm, final_line = 10, 11
    layer_algorithm, layer_lines = 9, (5, 6, 7)
    table, extras = POST_LN_TABLE, POST_LN_EXTRAS
    kinds = {3: "embedding", 5: "attention residual", 6: "norm", 7: "mlp residual", 8: "norm",
             11: "output"}  # fmt: skip
    causal_sites = (5,)
    norm_params = {6: ("gamma1", "beta1"), 8: ("gamma2", "beta2")}  # input: line 5's, 7's X
    modeling, hf_name = Opt.modeling, Opt.hf_name

    def __init__(self, model):
        from ....paper.functions import relu

        self.model = model
        self.theta, config = load(model)
        self.kwargs = {"activation": relu, "eps": self.theta.config.eps}
        self.H, self.L = config.num_attention_heads, config.num_hidden_layers

    def attention_kernel(self):
        return float32_softmax(self) if self.float64 else super().attention_kernel()

    def paper(self):
        from ....families.opt import opt_logits

        return opt_logits, (jnp.asarray(self.x), self.theta), {}

    def attention_input(self, site, l, paper):
        """Layer l's attention reads the stream as it stands: line 3's X, or line 8's (l − 1)."""
        if l == 1:
            return "X of line 3", paper.get(paper_key(self, 3, 3))
        return f"X of line 8 (l={l - 1})", paper.get(paper_key(self, 8, 8, l=l - 1))

    def mlp_input(self, site, l, paper):
        return "X of line 6", paper.get(paper_key(self, 6, 6, l=l))
