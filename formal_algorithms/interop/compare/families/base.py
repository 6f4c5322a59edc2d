"""What every family table is made of, and the one mechanism that reads the tables.

A family is a table of :class:`Tap` rows (paper key ← a submodule's input or output, and how to
turn it into the paper's orientation) and of :class:`Extra` rows (values the evidence reads),
plus its conversion (θ and the paper's function). Adding a family is adding a table.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ..alignment import key
from ..capture import captured, cols, eager_attention, softmax_cols

__all__ = [
    "Tap",
    "Extra",
    "Family",
    "COLS",
    "SUM",
    "block",
    "heads",
    "kv_sets",
    "WEIGHTS",
    "SOFTMAX",
    "MINUS_LOGIT_BIAS",
]


# ----------------------------------------------------------------------------- transforms
# take(values, family) -> [(extra indices, array, where)]: the captured values (one per module
# of the tap) turned into the paper's orientation.


def COLS(values, family):
    return [({}, cols(values[0]), "")]


def SUM(values, family):
    return [({}, cols(sum(values)), "")]


def SOFTMAX(values, family):
    return [({}, softmax_cols(cols(values[0])), ", softmax")]


def MINUS_LOGIT_BIAS(values, family):
    b = family.logit_bias()
    b = 0.0 if b is None else np.asarray(b, np.float64)[:, None]
    return [({}, cols(values[0]) - b, " − its bias b_u")]


def block(k, n):
    """Rows block ``k`` of ``n`` (q, k, v of a fused projection)."""

    def take(values, family):
        a = cols(values[0])
        d = a.shape[0] // n
        return [({}, a[k * d : (k + 1) * d], f", block {k + 1} of {n}")]

    return take


def heads(k=0, n=1):
    """Head h: rows (h−1)·d … h·d − 1 (of block ``k`` of ``n``)."""

    def take(values, family):
        a = cols(values[0])
        a = a[k * (a.shape[0] // n) : (k + 1) * (a.shape[0] // n)]
        d = a.shape[0] // family.H
        return [({"h": h}, a[(h - 1) * d : h * d], f", head {h}") for h in range(1, family.H + 1)]

    return take


def kv_sets(values, family):
    """Key/value set g of G, read by query head h whose set is ``family.group(h)``."""
    a = cols(values[0])
    d = a.shape[0] // family.G
    out = []
    for h in range(1, family.H + 1):
        g = family.group(h)
        out.append(({"h": h}, a[g * d : (g + 1) * d], f", set {g + 1}"))
    return out


def WEIGHTS(values, family):
    """Attention probabilities (1, H, ℓ_x, ℓ_z) → the paper's A[t_z, t_x] per head."""
    A = values[0]
    A = A[0] if A.ndim == 4 else A
    return [({"h": h}, A[h - 1].T, f", head {h}") for h in range(1, A.shape[0] + 1)]


# ---------------------------------------------------------------------------------- tables


class Tap(NamedTuple):
    """Paper key (site, algorithm, line, part) ← ``module`` (a path; ``{i}`` is the layer index
    from 0, ``{e}``/``{d}`` an encoder/decoder layer's) ``io`` ("in", "out", or "out1", "out2":
    item 1, 2 of the output), turned by ``take``. A tuple of modules hands ``take`` all their
    values."""

    site: int
    algorithm: int
    line: int
    module: str | tuple
    io: str = "out"
    take: Callable = COLS
    part: str = ""


class Extra(NamedTuple):
    """A value the evidence reads: ``name`` at the top line ``site`` of layer l (its input and
    output), e.g. ("norm", 5, "transformer.h.{i}.ln_1")."""

    name: str
    site: int | None
    module: str


#: what each top line of Algorithm 10 is (pre-LN: line 5 normalises, 6 adds attention, ...)
ALGORITHM_10_KINDS = {
    3: "embedding",
    5: "norm",
    6: "attention residual",
    7: "norm",
    8: "mlp residual",
    10: "final norm",
    11: "output",
}


def decoder_parts(
    embedding: Tap,
    norm1,
    qkv,
    attention,
    out,
    line6: Tap,
    norm2,
    layer,
    final_norm,
    *,
    attention_input,
    mlp,
    activation,
    logits="lm_head",
):
    """An Algorithm 10 decoder's table and the values its evidence reads, by its modules' names,
    each named once: ``embedding`` (line 3's tap), ``norm1``, ``norm2``, ``final_norm`` (lines 5, 7
    and 10), ``qkv`` (Algorithm 4's lines 1-3), ``attention`` (its weights, item 1 of its output),
    ``out`` (the output projection: Ṽ and Y its input, Algorithm 5's line 4 its output), ``line6``
    (line 6's tap: the residual sum, or a parallel block's attention branch), ``layer`` (line 8's
    output); the evidence reads ``attention_input``, ``mlp``'s input and ``activation``.
    Returns ``(table, extras)``."""
    table = (
        embedding,
        Tap(5, 10, 5, norm1),
        *qkv,
        Tap(6, 4, 6, attention, "out1", WEIGHTS, "A"),
        Tap(6, 4, 6, out, "in", heads()),  # Ṽ of every head
        Tap(6, 5, 2, out, "in", heads()),  # Y^h
        Tap(6, 5, 3, out, "in"),
        Tap(6, 5, 4, out),
        line6,
        Tap(7, 10, 7, norm2),
        Tap(8, 10, 8, layer),
        Tap(10, 10, 10, final_norm),
        Tap(11, 10, 11, logits, "out", COLS, "logits"),
    )
    extras = (
        Extra("norm", 5, norm1),
        Extra("norm", 7, norm2),
        Extra("norm", 10, final_norm),
        Extra("attention input", 6, attention_input),
        Extra("mlp input", 8, mlp),
        Extra("activation", 8, activation),
        Extra("logits", 11, logits),
    )
    return table, extras


def float_state(model, tied_name=None) -> dict:
    """The model's state dict as numpy arrays, float64 kept and every other dtype as float32;
    ``tied_name`` (an output matrix tied to the embedding) left out."""
    import torch

    return {
        k: v.detach().cpu().to(torch.float64 if v.dtype == torch.float64 else torch.float32).numpy()
        for k, v in model.state_dict().items()
        if k != tied_name
    }


_SLOT = re.compile(r"\{(\w)\}")


class Family:
    """The mechanism shared by every table; a family sets the class attributes and converts."""

    name = ""
    algorithm = 10
    final_line = 11
    table: tuple = ()
    extras: tuple = ()
    kinds: dict = {}  # top line -> kind of line
    causal_sites: tuple = ()  # top lines whose attention is causal
    weights_kwargs: tuple = ()  # module templates whose call must ask for the weights
    rms = False  # the norms are RMSnorm
    G = None  # key/value sets (grouped-query attention)
    # the algorithm whose printed layer the paper's run calls for ``layer_lines`` (a Post-LN
    # decoder runs Algorithm 9's layer; the trace records those lines under it)
    layer_algorithm, layer_lines = None, ()
    float64 = False  # set by compare(): the run is in float64
    x = z = None  # set by compare(): the tokens

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls)
        self.known_found = []  # sentences of the known departures met in this run
        return self

    # ---------------------------------------------------------------- the model's side
    def stacks(self) -> dict:
        return {"i": self.L}

    def expand(self, template):
        """[(path, l)]: a template per layer, or the path itself (l None)."""
        slot = _SLOT.search(template)
        if slot is None:
            return [(template, None)]
        n = self.stacks()[slot.group(1)]
        return [(template.replace(slot.group(0), str(i)), i + 1) for i in range(n)]

    def watch(self):
        watch = {}
        for tap in self.table:
            for template in tap.module if isinstance(tap.module, tuple) else (tap.module,):
                for path, _ in self.expand(template):
                    watch[path] = watch.get(path, False) or tap.io == "in"
        for extra in self.extras:
            for path, _ in self.expand(extra.module):
                watch[path] = True
        hooks = {p: _ask_for_weights for t in self.weights_kwargs for p, _ in self.expand(t)}
        return watch, hooks

    def run(self):
        """Run the model under the hooks; returns (exposed: Key → (value, source), extra)."""
        return self.read(*self.capture())

    def capture(self):
        """(what the hooks kept, the model's output) of one run of :meth:`call`."""
        watch, hooks = self.watch()
        with contextlib.ExitStack() as stack:
            for context in self.contexts():
                stack.enter_context(context)
            stack.enter_context(self.attention_kernel())
            store = stack.enter_context(captured(self.model, watch, hooks))
            output = self.call()
        return store, output

    def read(self, store, output):
        """The table read from ``store``: (exposed, extra)."""
        exposed = {}
        for tap in self.table:
            self._read(tap, store, exposed)
        extra = {}
        for e in self.extras:
            for path, l in self.expand(e.module):
                extra[(e.name, e.site, l)] = (
                    _cols_or_raw(e, store.get(path, "in")),
                    _cols_or_raw(e, store.get(path, "out")),
                )
        self.after_run(output, exposed, extra, store)
        return exposed, extra

    def _read(self, tap, store, exposed):
        modules = tap.module if isinstance(tap.module, tuple) else (tap.module,)
        per = [self.expand(m) for m in modules]
        item = int(tap.io[3:]) if tap.io[:3] == "out" and tap.io[3:] else 0
        which = "out" if item else tap.io
        for paths in zip(*per, strict=True):
            values = [store.get(p, which, item) for p, _ in paths]
            if any(v is None for v in values):
                continue
            l = paths[0][1]
            what = {"in": "input", "out": "output"}[which] + (f"[{item}]" if item else "")
            where = " + ".join(f"{p} {what}" for p, _ in paths)
            for indices, value, suffix in tap.take(values, self):
                k = key(
                    self.algorithm,
                    tap.site,
                    tap.algorithm,
                    tap.line,
                    tap.part,
                    **({} if l is None else {"l": l}),
                    **indices,
                )
                exposed[k] = (np.asarray(value, np.float64), where + suffix)

    def contexts(self):
        """Context managers around the model's run (a known departure neutralised)."""
        return []

    def attention_kernel(self):
        """Hugging Face returns the weights only from its eager kernel: use it for the run."""
        return eager_attention(self.model)

    def call(self):
        import torch

        return self.model(torch.as_tensor(self.x)[None])

    def after_run(self, output, exposed, extra, store):
        """Values computed from the model's output rather than read from a module."""

    # ---------------------------------------------------------------- the paper's side
    def kind(self, k) -> str:
        if k.algorithm == 4:
            return "projection" if k.line in (1, 2, 3) else "attention"
        if k.algorithm == 5:
            return "heads" if k.line in (2, 3) else "attention output"
        return self.kinds.get(k.line, "other")

    def mask(self, k, shape):
        """The paper's Mask[t_z, t_x] at the key's site, or None (no mask)."""
        if k.site in self.causal_sites:  # the last shape[1] queries of ℓ_z (all of them, or
            n = shape[0]  # the one step of a cached run)
            return np.triu(np.ones((n, n), bool))[:, n - shape[1] :]
        return None

    def group(self, h):
        """The key/value set (from 0) query head h reads."""
        G = self.G or self.H
        return (h - 1) // (self.H // G)

    def size(self):
        """(d_e, L): the width and the number of layers, which set the tolerance."""
        layers = getattr(self.theta, "layers", None)
        L = len(layers) if layers is not None else len(self.theta.enc) + len(self.theta.dec)
        return int(self.theta.W_e.shape[0]), L

    def logit_bias(self):
        return None

    def layer_list(self, site):
        return self.theta.layers

    #: paper line -> (γ's field, β's field or None for an RMS norm) in θ (a layer's, or θ's own
    #: for the final norm)
    norm_params: dict = {}

    def norm_of(self, k):
        """(γ, β, paper key of the norm's input, ε) for a norm line, or None."""
        own = self.layer_algorithm if k.line in self.layer_lines else self.algorithm
        if k.algorithm != own or k.line not in self.norm_params:
            return None
        owner = self.theta if k.l is None else self.theta.layers[k.l - 1]
        g, b = self.norm_params[k.line]
        gamma = getattr(owner, g)
        beta = np.zeros(np.shape(gamma)) if b is None else getattr(owner, b, None)
        return gamma, beta, self.norm_input(k.line, k.l), self.kwargs["eps"]

    def norm_input(self, line, l):
        """The paper key of the input of the norm of ``line`` (default: the line before's X)."""
        return paper_key(self, line - 1, line - 1, **({} if l is None else {"l": l}))

    def attention_input(self, site, l, paper):
        return None

    def mlp_input(self, site, l, paper):
        return None

    def activation_name(self):
        from ....paper.functions import gelu, gelu_tanh, relu

        f = self.kwargs.get("activation")
        names = {gelu: "the exact (erf) GELU", gelu_tanh: "the tanh GELU (gelu_new)", relu: "ReLU"}
        return names.get(f, getattr(f, "__name__", repr(f)))

    def biases(self, k):
        """(name, vector) of the biases a departing line may have dropped."""
        l, h = k.l, k.h
        layers = self.layer_list(k.site)
        if l is None or l > len(layers):
            return []
        layer = layers[l - 1]
        W = getattr(layer, "W", None)
        if W is None:  # Algorithm 8's decoder: the self- or the cross-attention
            W = layer.W_ed if k.site == 16 else layer.W_dec
        if k.algorithm == 4 and h is not None:
            return [(f"b_{n}^{h} of layer {l}", getattr(W, f"b_{n}")[h - 1]) for n in "qkv"]
        out = [(f"b_o of layer {l}", W.b_o)]
        for name in ("b_mlp1", "b_mlp2"):
            if hasattr(layer, name):
                out.append((f"{name} of layer {l}", getattr(layer, name)))
        return out


def _cols_or_raw(extra, value):
    if value is None or extra.name == "activation":
        return value
    return cols(value)


def _ask_for_weights(kwargs):
    """``nn.MultiheadAttention``: return every head's weights (the layers ask for none)."""
    kwargs["need_weights"] = True
    kwargs["average_attn_weights"] = False
    return kwargs


def paper_key(family, site, line, **indices):
    """A key of the top algorithm's own line (of its layer's algorithm for ``layer_lines``)."""
    algorithm = family.layer_algorithm if line in family.layer_lines else family.algorithm
    return key(family.algorithm, site, algorithm, line, **indices)


class PreLNDecoder(Family):
    """A family that is Algorithm 10's Pre-LN decoder: each norm reads the residual stream X
    before its branch (line 5: line 3's X or the layer before's line 8; line 7: line 6's; line
    10: the last layer's line 8), attention and the MLP read the normalised X̃ of lines 5 and 7."""

    algorithm, final_line = 10, 11
    kinds, causal_sites = ALGORITHM_10_KINDS, (6,)
    norm_params = {5: ("gamma1", "beta1"), 7: ("gamma2", "beta2"), 10: ("gamma", "beta")}

    def norm_input(self, line, l):
        if line == 5:
            return paper_key(self, 3, 3) if l == 1 else paper_key(self, 8, 8, l=l - 1)
        if line == 7:
            return paper_key(self, 6, 6, l=l)
        return paper_key(self, 8, 8, l=self.L)

    def attention_input(self, site, l, paper):
        return "X̃ of line 5", paper.get(paper_key(self, 5, 5, l=l))

    def mlp_input(self, site, l, paper):
        return "X̃ of line 7", paper.get(paper_key(self, 7, 7, l=l))
