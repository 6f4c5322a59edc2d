"""Hugging Face ``BertForMaskedLM`` against Algorithm 9 with BERT's extras
(:func:`formal_algorithms.interop.bert.bert_logits`): the table."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .base import MINUS_LOGIT_BIAS, SUM, WEIGHTS, Extra, Family, Tap, heads, paper_key

L_ = "bert.encoder.layer.{i}"
E_ = "bert.embeddings"
T_ = "cls.predictions.transform"

TABLE = (
    Tap(3, 9, 3, (f"{E_}.word_embeddings", f"{E_}.position_embeddings"), "out", SUM),
    *(
        Tap(5, 4, n, f"{L_}.attention.self.{part}", "out", heads())
        for n, part in ((1, "query"), (2, "key"), (3, "value"))
    ),  # fmt: skip
    Tap(5, 4, 6, f"{L_}.attention.self", "out1", WEIGHTS, "A"),
    Tap(5, 4, 6, f"{L_}.attention.output.dense", "in", heads()),
    Tap(5, 5, 2, f"{L_}.attention.output.dense", "in", heads()),
    Tap(5, 5, 3, f"{L_}.attention.output.dense", "in"),
    Tap(5, 5, 4, f"{L_}.attention.output.dense"),
    Tap(5, 9, 5, f"{L_}.attention.output.LayerNorm", "in"),
    Tap(6, 9, 6, f"{L_}.attention.output.LayerNorm"),
    Tap(7, 9, 7, f"{L_}.output.LayerNorm", "in"),
    Tap(8, 9, 8, f"{L_}.output.LayerNorm"),
    Tap(10, 9, 10, f"{T_}.LayerNorm", "in"),
    Tap(11, 9, 11, f"{T_}.LayerNorm"),
    Tap(12, 9, 12, "cls.predictions.decoder", "out", MINUS_LOGIT_BIAS, "logits"),
)

EXTRAS = (
    Extra("norm", 6, f"{L_}.attention.output.LayerNorm"),
    Extra("norm", 8, f"{L_}.output.LayerNorm"),
    Extra("norm", 11, f"{T_}.LayerNorm"),
    Extra("attention input", 5, f"{L_}.attention.self.query"),
    Extra("mlp input", 7, f"{L_}.intermediate.dense"),
    Extra("activation", 7, f"{L_}.intermediate.intermediate_act_fn"),
    Extra("mlp input", 10, f"{T_}.dense"),
    Extra("activation", 10, f"{T_}.transform_act_fn"),
    Extra("logits", 12, "cls.predictions.decoder"),
)

KINDS = {
    3: "embedding",
    5: "attention residual",
    6: "norm",
    7: "mlp residual",
    8: "norm",
    10: "head",
    11: "final norm",
    12: "output",
}


class Bert(Family):
    name, algorithm, final_line = "Algorithm 9 (ETransformer) with BERT's extras", 9, 12
    table, extras, kinds = TABLE, EXTRAS, KINDS
    norm_params = {6: ("gamma1", "beta1"), 8: ("gamma2", "beta2"), 11: ("gamma", "beta")}

    def __init__(self, model):
        from ...bert import bert_from_hf, bert_kwargs_from_hf

        self.model = model
        self.params = bert_from_hf(model)
        self.theta = self.params.theta
        self.kwargs = bert_kwargs_from_hf(model)
        self.H, self.L = model.config.num_attention_heads, model.config.num_hidden_layers

    def paper(self):
        from ...bert import bert_logits

        return bert_logits, (jnp.asarray(self.x), self.params), self.kwargs

    def attention_input(self, site, l, paper):
        if l == 1:
            return "X of line 3 with BERT's extras", self.extras_x(paper)
        return f"X of line 8 (l={l - 1})", paper.get(paper_key(self, 8, 8, l=l - 1))

    def mlp_input(self, site, l, paper):
        if l is None:
            return "X of line 8 (l=L)", paper.get(paper_key(self, 8, 8, l=self.L))
        return "X of line 6", paper.get(paper_key(self, 6, 6, l=l))

    def logit_bias(self):
        return self.params.b_u

    def extras_x(self, paper):
        """The X that layer 1 reads: line 3's X with BERT's extras (token type 0, the embedding
        layer norm), in float64 numpy, for the evidence."""
        from ..evidence.norm import layer_norm

        X = paper.get(paper_key(self, 3, 3))
        p = self.params
        if X is None:
            return None
        if p.W_tt is not None:
            X = X + np.asarray(p.W_tt, np.float64)[:, :1]
        if p.gamma_emb is not None:
            gamma, beta = (np.asarray(a, np.float64) for a in (p.gamma_emb, p.beta_emb))
            X = layer_norm(X, gamma, beta, self.kwargs["eps"])
        return X
