"""``torch.nn.Transformer`` (with its embeddings around it) against Algorithm 8
(EDTransformer): the table. Its encoder layers are ``{e}``, its decoder layers ``{d}``."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import torch
from torch import nn

from ..alignment import key
from ..capture import softmax_cols
from .base import WEIGHTS, Extra, Family, Tap, paper_key

E_, D_ = "encoder.layers.{e}", "decoder.layers.{d}"


def norm_taps(layer, norms):
    """Each Post-LN norm of ``layer``: its input is line n's X, its output line n + 1's."""
    for sub, line in norms:
        yield Tap(line, 8, line, f"{layer}.{sub}", "in")
        yield Tap(line + 1, 8, line + 1, f"{layer}.{sub}")


def ed_parts(E_, D_, first, cross, norms, mlp):
    """Algorithm 8's table and the values its evidence reads, by module names: ``E_``, ``D_`` the
    layer templates, ``first`` the first encoder and decoder layers (their inputs are lines 3 and
    12), ``cross`` the decoder's cross-attention, ``norms`` the encoder's and the decoder's
    ``(norm, line)`` pairs, ``mlp`` the MLP's two linear maps. Returns ``(table, extras)``."""
    enc_norms, dec_norms = norms
    table = (
        Tap(3, 8, 3, first[0], "in"),
        Tap(12, 8, 12, first[1], "in"),
        Tap(5, 4, 6, f"{E_}.self_attn", "out1", WEIGHTS, "A"),
        Tap(5, 5, 4, f"{E_}.self_attn"),
        Tap(14, 4, 6, f"{D_}.self_attn", "out1", WEIGHTS, "A"),
        Tap(14, 5, 4, f"{D_}.self_attn"),
        Tap(16, 4, 6, f"{D_}.{cross}", "out1", WEIGHTS, "A"),
        Tap(16, 5, 4, f"{D_}.{cross}"),
        *norm_taps(E_, enc_norms),
        *norm_taps(D_, dec_norms),
    )
    extras = (
        *(Extra("norm", line + 1, f"{E_}.{sub}") for sub, line in enc_norms),
        *(Extra("norm", line + 1, f"{D_}.{sub}") for sub, line in dec_norms),
        Extra("attention input", 5, f"{E_}.self_attn"),
        Extra("attention input", 14, f"{D_}.self_attn"),
        Extra("attention input", 16, f"{D_}.{cross}"),
        Extra("mlp input", 7, f"{E_}.{mlp[0]}"),
        Extra("mlp input", 18, f"{D_}.{mlp[0]}"),
        Extra("mlp hidden", 7, f"{E_}.{mlp[1]}"),
        Extra("mlp hidden", 18, f"{D_}.{mlp[1]}"),
    )
    return table, extras


TABLE, EXTRAS = ed_parts(
    E_,
    D_,
    ("encoder.layers.0", "decoder.layers.0"),
    "multihead_attn",
    ((("norm1", 5), ("norm2", 7)), (("norm1", 14), ("norm2", 16), ("norm3", 18))),
    ("linear1", "linear2"),
)

KINDS = {3: "embedding", 5: "attention residual", 6: "norm", 7: "mlp residual", 8: "norm",
         12: "embedding", 14: "attention residual", 15: "norm", 16: "attention residual",
         17: "norm", 18: "mlp residual", 19: "norm", 21: "output"}  # fmt: skip

NORMS = {6: ("enc", "gamma1", "beta1"), 8: ("enc", "gamma2", "beta2"),
         15: ("dec", "gamma3", "beta3"), 17: ("dec", "gamma4", "beta4"),
         19: ("dec", "gamma5", "beta5")}  # fmt: skip


class TorchTransformer(Family):
    name, algorithm, final_line = "Algorithm 8 (EDTransformer)", 8, 21
    table, extras, kinds, causal_sites = TABLE, EXTRAS, KINDS, (14,)
    weights_kwargs = (f"{E_}.self_attn", f"{D_}.self_attn", f"{D_}.multihead_attn")

    def __init__(self, model, W_e, W_p, W_u, eps):
        from ....paper.functions import relu
        from ...torch_transformer import ed_transformer_from_torch

        self.model = model
        dtype = next(model.parameters()).dtype
        self.embeddings = [None if w is None else _as_tensor(w, dtype) for w in (W_e, W_p, W_u)]
        if eps is None:
            first = (list(model.encoder.layers) + list(model.decoder.layers))[0]
            eps = first.norm1.eps
        self.theta = ed_transformer_from_torch(model, *self.embeddings, eps=eps)
        self.kwargs = {"eps": eps, "activation": relu}
        first = (list(model.encoder.layers) or list(model.decoder.layers))[0]
        self.H = first.self_attn.num_heads

    def stacks(self):
        return {"e": len(self.model.encoder.layers), "d": len(self.model.decoder.layers)}

    def paper(self):
        from ....paper.architectures import ed_transformer

        args = (jnp.asarray(self.z), jnp.asarray(self.x), self.theta)
        return ed_transformer, args, {"eps": self.kwargs["eps"]}

    def call(self):
        W_e, W_p, _ = self.embeddings
        z, x = torch.as_tensor(self.z), torch.as_tensor(self.x)
        src = (W_e[:, z] + W_p[:, : len(z)]).T  # lines 1-3, in torch's (ℓ, d_e)
        tgt = (W_e[:, x] + W_p[:, : len(x)]).T  # lines 10-12
        causal = nn.Transformer.generate_square_subsequent_mask(len(x), dtype=src.dtype)
        return self.model(src, tgt, tgt_mask=causal, tgt_is_causal=True)

    def after_run(self, output, exposed, extra, store):
        """The logits: W_u (outside nn.Transformer) times the model's output; the MLP's
        activation: linear1's output → linear2's input."""
        W_e, _, W_u = self.embeddings
        X = output.detach().to(torch.float64).numpy().T
        W = (W_e.T if W_u is None else W_u).detach().to(torch.float64).numpy()
        source = "W_u @ (the model's output), the unembedding outside nn.Transformer"
        exposed[key(8, 21, 8, 21, "logits")] = (W @ X, source)
        exposed[key(8, 21, 8, 21, "P")] = (softmax_cols(W @ X), "softmax of " + source)
        extra[("logits", 21, None)] = (X, W @ X)
        self.mlp_activations(extra)

    def mlp_activations(self, extra):
        """Each MLP's activation, as its first linear's output → its second's input."""
        for site in (7, 18):
            for l in range(1, self.stacks()["e" if site == 7 else "d"] + 1):
                a_in = extra.get(("mlp input", site, l), (None, None))[1]
                hidden = extra.get(("mlp hidden", site, l), (None, None))[0]
                if a_in is not None and hidden is not None:
                    extra[("activation", site, l)] = (a_in.T, hidden.T)

    def layer_list(self, site):
        return self.theta.enc if site <= 9 else self.theta.dec

    def norm_of(self, k):
        if k.algorithm != 8 or k.line not in NORMS:
            return None
        stack, g, b = NORMS[k.line]
        layer = getattr(self.theta, stack)[k.l - 1]
        previous = paper_key(self, k.line - 1, k.line - 1, l=k.l)
        return getattr(layer, g), getattr(layer, b), previous, self.kwargs["eps"]

    def attention_input(self, site, l, paper):
        if site == 16:
            return "X of line 15", paper.get(paper_key(self, 15, 15, l=l))
        first, last = (3, 8) if site == 5 else (12, 19)
        if l == 1:
            return f"X of line {first}", paper.get(paper_key(self, first, first))
        return f"X of line {last} (l={l - 1})", paper.get(paper_key(self, last, last, l=l - 1))

    def mlp_input(self, site, l, paper):
        line = 6 if site == 7 else 17
        return f"X of line {line}", paper.get(paper_key(self, line, line, l=l))


def _as_tensor(w, dtype):
    if isinstance(w, torch.Tensor):
        return w.detach().to(dtype)
    return torch.from_numpy(np.array(w, dtype=np.float64)).to(dtype)
