"""Where does a model depart from the paper? A line-by-line comparison (issue 16).

:func:`compare` takes a Hugging Face ``GPT2LMHeadModel``, ``BertForMaskedLM`` or
``LlamaForCausalLM``, or a ``torch.nn.Transformer`` with the embeddings wrapped around it, and a
token sequence, and

1. converts the model with this package's exact converters (:mod:`.gpt2`, :mod:`.bert`,
   :mod:`.torch_transformer`, ``families.llama.llama_from_state_dict``), which read its weights
   and its configuration (ε, activation, RoPE's base);
2. runs the paper's algorithm on the converted θ under :func:`formal_algorithms.trace`, which records
   the value of every executed line (Algorithm 10 for GPT-2, Algorithm 9 with BERT's extras for
   BERT, Algorithm 10 with Llama's substitutions for Llama, Algorithm 8 for ``nn.Transformer``);
3. runs the model itself on the same tokens with forward hooks on its submodules (inputs and
   outputs of every layer norm, attention, projection and block; the attention probabilities),
   each value turned into the paper's orientation (tokens as columns; scores ``[t_z, t_x]``);
4. aligns every value the model exposes with the trace record of the paper line that computes it,
   and reports one row per line: path | pseudocode | max abs error | max rel error;
5. names the first line beyond tolerance, the likely causes for that kind of line, and the
   evidence (checks run on the captured values) that tells those causes apart: the ε a layer norm
   really used, the scale of the scores, where the weights break the mask, how the heads are
   split, which activation the MLP applies, a constant per-token offset (a bias), a position
   offset, which matrix the logits come from.

A model equal to its conversion (every model the converters produce, every stock GPT-2/BERT/
Llama/``nn.Transformer`` they accept) has every row within tolerance. A model whose *code* departs from
what its weights and configuration say (a hand-written attention with another scale, a
hard-coded ε, a shifted position index, ...) departs at the first line that code touches.

Errors: ``max abs`` is ``max |model − paper|`` over the line's entries, ``max rel`` that divided by
the largest ``|paper|`` entry of the line. A line is within tolerance when
``max abs ≤ tol · max(1, max |paper|)``: see :func:`tolerance_for` for the values and why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import torch
from torch import nn

from ..paper.checks import fail

__all__ = ["compare", "Report", "Row", "TOLERANCES", "tolerance_for", "tolerance_note"]

NAME = "compare"

# Per dtype: the bound on max|model − paper| relative to max(1, the line's largest |entry|), for
# a model of d_e · L = 32 (width times layers); it grows like √(d_e · L / 32) with the model, as
# rounding does through L layers of width d_e (see tolerance_for()).
TOLERANCES = {"float32": 2e-5, "float64": 1e-10}


def tolerance_for(dtype: str, d_e: int, L: int) -> float:
    """The bound for a model of width ``d_e`` and ``L`` layers: ``TOLERANCES[dtype] · √(d_e L / 32)``
    (never below ``TOLERANCES[dtype]``). Measured largest errors, float32: 6e-7 of a line's scale
    on the test models (d_e L = 32, bound 2e-5) and 1.1e-5 on SmolLM2-135M (d_e = 576, L = 30,
    bound 4.6e-4): ~30-40× room on both."""
    return TOLERANCES.get(dtype, 1e-2) * max(1.0, math.sqrt(d_e * L / 32))


def tolerance_note(dtype: str, tol: float) -> str:
    """Why the tolerance is what it is, for the report."""
    if dtype == "float64":
        return (
            f"float64 (unit roundoff 1.1e-16): both sides compute the same function, summing in "
            f"different orders; rounding stays near 1e-15 of each line's scale on the test "
            f"models, so {tol:.2g} leaves ~10^5 of room and finds departures far below float32's "
            "resolution. A line off by ~1e-7 of its scale here is computed in float32 inside "
            "the model."
        )
    return (
        f"{dtype} (unit roundoff 6e-8): the model and the paper's algorithm sum in different "
        f"orders (fused kernels, another matmul blocking), so each line carries rounding that "
        f"grows with the width d_e and the depth L; the bound is 2e-5 · √(d_e · L / 32) = "
        f"{tol:.2g} here, ~30× the largest error measured (6e-7 on the test models, 1.1e-5 on "
        "SmolLM2-135M). A smaller departure (a hard-coded ε = 1e-6 where the configuration says "
        "1e-5) needs float64=True (CLI: --float64)."
    )


# ======================================================================================= report


@dataclasses.dataclass
class Row:
    """One paper line whose value the model exposes."""

    path: str  # the trace's path, e.g. "Algorithm 10 › line 6 (l=1) › Algorithm 5 › line 4"
    pseudocode: str
    algorithm: int | str
    line: int | str
    indices: dict
    shape: tuple
    max_abs: float
    max_rel: float
    bound: float  # max_abs must not exceed this
    source: str  # where the model's value was read: module and hook
    kind: str  # the kind of line, which selects the likely causes
    top_line: int = 0  # the line of the top algorithm (10, 9 or 8) the record is inside
    tag: str = ""  # "A": Algorithm 4's attention weights; "logits": W_u X before the softmax
    key: tuple = dataclasses.field(default=(), repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.max_abs <= self.bound


@dataclasses.dataclass
class Report:
    """The result of :func:`compare`: :meth:`table`, :meth:`to_dict`, :meth:`to_json`."""

    model: str
    algorithm: str
    dtype: str
    tokens: list
    tolerance: float
    tolerance_note: str
    rows: list
    not_exposed: list  # paper lines the model's modules do not expose (no row)
    causes: list
    evidence: list

    @property
    def first(self) -> Row | None:
        """The first row beyond tolerance, in the paper's execution order, or ``None``."""
        return next((row for row in self.rows if not row.ok), None)

    @property
    def departs(self) -> bool:
        return self.first is not None

    def table(self, *, all_rows: bool = True) -> str:
        """The rows as text (``all_rows=False``: only up to the first departing row and a few
        after it), then the verdict, the likely causes and the evidence."""
        rows = self.rows
        if not all_rows:
            rows = [] if self.first is None else rows[: rows.index(self.first) + 4]
        width = max([len(r.path) for r in rows] + [4])
        code_width = 44
        lines = []
        if rows:
            lines.append(f"{'path':<{width}}  {'pseudocode':<{code_width}}  {'max abs err':>11}  "
                         f"{'max rel err':>11}")  # fmt: skip
        for r in rows:
            code = r.pseudocode if len(r.pseudocode) <= code_width else r.pseudocode[:41] + "..."
            mark = "" if r.ok else "  <-- beyond tolerance"
            lines.append(
                f"{r.path:<{width}}  {code:<{code_width}}  {r.max_abs:11.3e}  {r.max_rel:11.3e}"
                f"{mark}"
            )
        if not rows:
            lines.append(f"({len(self.rows)} rows, all within tolerance: all_rows=True, CLI "
                         "--all, prints them)")  # fmt: skip
        if self.not_exposed:
            lines.append(f"({len(self.not_exposed)} traced values have no counterpart among the "
                         "model's modules, e.g. Algorithm 4's S: report.not_exposed)")  # fmt: skip
        elif len(rows) < len(self.rows):
            lines.append(f"... {len(self.rows) - len(rows)} more rows (all_rows=True, CLI --all)")
        if rows:
            lines.append("")
        note = (
            f"tolerance: {self.tolerance:.2g} × max(1, max |paper|) per line; "
            + self.tolerance_note
        )
        lines += textwrap.wrap(note, 100)
        first = self.first
        if first is None:
            worst = max(self.rows, key=lambda r: r.max_rel, default=None)
            lines += textwrap.wrap(
                f"EQUAL: all {len(self.rows)} lines the model exposes agree with {self.algorithm} "
                "within tolerance"
                + (f" (largest max rel err {worst.max_rel:.2e}, at {worst.path})." if worst else "."),
                100, subsequent_indent="  ",
            )  # fmt: skip
        else:
            lines += textwrap.wrap(
                f"DEPARTS at {first.path}: {first.pseudocode}  (max abs err {first.max_abs:.3e}, "
                f"tolerance {first.bound:.3e}; model value from {first.source})",
                100, subsequent_indent="  ",
            )  # fmt: skip
            lines.append("likely causes for this kind of line:")
            for c in self.causes:
                lines += textwrap.wrap(c, 100, initial_indent="  - ", subsequent_indent="    ")
            if self.evidence:
                lines.append("evidence:")
                for e in self.evidence:
                    lines += textwrap.wrap(e, 100, initial_indent="  * ", subsequent_indent="    ")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        first = self.first
        return {
            "model": self.model,
            "algorithm": self.algorithm,
            "dtype": self.dtype,
            "tokens": list(self.tokens),
            "tolerance": self.tolerance,
            "tolerance_note": self.tolerance_note,
            "departs": self.departs,
            "first_departure": None if first is None else _row_dict(first),
            "causes": list(self.causes),
            "evidence": list(self.evidence),
            "rows": [_row_dict(r) for r in self.rows],
            "not_exposed": list(self.not_exposed),
        }

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **{"indent": 1, "ensure_ascii": False, **kwargs})

    def __str__(self) -> str:
        return self.table()


def _row_dict(r: Row) -> dict:
    return {
        "path": r.path, "pseudocode": r.pseudocode, "algorithm": r.algorithm, "line": r.line,
        "indices": dict(r.indices), "shape": list(r.shape), "max_abs_err": _num(r.max_abs),
        "max_rel_err": _num(r.max_rel), "bound": r.bound, "ok": r.ok, "kind": r.kind,
        "top_line": r.top_line, "tag": r.tag,
        "model_value_from": r.source,
    }  # fmt: skip


def _num(v: float):
    return v if math.isfinite(v) else str(v)


# ============================================================================ likely causes

CAUSES = {
    "embedding": [
        "a position offset: positions counted from 1 (or 2, as OPT) instead of 0, or W_p[:, t + k]",
        "no positional embedding, or a sinusoid where W_p is learned (or the other way round)",
        "a scaled token embedding (√d_e · W_e[:, x[t]], as Gemma/T5) or extra embeddings "
        "(token types, an embedding layer norm)",
        "token ids mapped differently (another vocabulary, W_e read transposed)",
    ],
    "norm": [
        "ε: another value than the configuration says (1e-5, 1e-6, 1e-12), or ε outside the √",
        "layer-norm placement: Post-LN where Pre-LN belongs or the reverse (the norm reads "
        "another input)",
        "another normalisation: RMSnorm (m = β = 0), an unbiased variance (÷ (d_e − 1))",
        "γ and β swapped, or one of them missing",
    ],
    "final norm": [
        "the final layer norm missing, applied twice, or placed before the last layer's MLP",
        "ε: another value than the configuration says",
        "another normalisation: RMSnorm, an unbiased variance",
    ],
    "projection": [
        "a bias dropped or added (b_q, b_k, b_v)",
        "q, k, v unpacked in another order from a fused projection, or a weight read transposed",
        "the projection reads another input: layer-norm placement (Pre-LN/Post-LN)",
    ],
    "attention": [
        "the attention scale: scores divided by d_attn (or not at all) instead of √d_attn",
        "the mask orientation: Mask[t_z, t_x] transposed (queries see the future, or only it)",
        "heads split in another order (strided instead of contiguous blocks of d_attn rows)",
        "softmax over the wrong axis (rows instead of columns)",
    ],
    "heads": [
        "heads concatenated in another order (line 3: Y = [Y^1; …; Y^H])",
        "the attention weights applied to the wrong values (V, or Vᵀ)",
    ],
    "attention output": [
        "W_o or b_o: the output projection's bias dropped, its weight transposed",
        "heads concatenated in another order",
    ],
    "attention residual": [
        "the residual adds the normalised X̃ instead of X (or nothing)",
        "layer-norm placement: the norm applied after the residual sum (Post-LN) in a Pre-LN "
        "model, or the reverse",
        "the attention branch itself (see the Algorithm 4/5 rows above it)",
    ],
    "mlp residual": [
        "the GELU form: the tanh approximation (gelu_new) instead of the exact erf GELU, or the "
        "reverse; another activation (ReLU, SiLU)",
        "an MLP bias dropped (b_mlp1, b_mlp2)",
        "the MLP reads another input: layer-norm placement (Pre-LN/Post-LN)",
    ],
    "head": [
        "the GELU form of the head (W_f, b_f, then GELU)",
        "a bias dropped (b_f)",
    ],
    "output": [
        "the unembedding tied where it is untied (W_eᵀ instead of W_u) or the reverse",
        "a bias on the logits, or scaled or soft-capped logits",
        "the final layer norm (line before) missing or different",
    ],
}


# ========================================================================= the model's side
# Each family knows which submodule of the model computes which paper line. Keys are
# (top algorithm, its line, algorithm, line, indices, tag): the line of the top algorithm that
# contains the record tells apart, e.g., Algorithm 8's encoder self-attention (line 5), decoder
# self-attention (line 14) and cross-attention (line 16); the tag tells apart two values of one
# line (Algorithm 4's weights "A" and its output; the logits W_u X and P of the last line).


class _Hooks:
    """Forward hooks that keep the first tensor input and the output of named submodules; a
    ``kwargs_hook`` may change the keyword arguments of a call (to ask for attention weights)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.raw: dict[tuple[str, str], object] = {}
        self._handles = []

    def watch(self, path: str, *, inputs=False, kwargs_hook=None):
        module = self.model.get_submodule(path)
        if inputs or kwargs_hook is not None:

            def pre(m, args, kwargs, path=path):
                if inputs:
                    tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
                    self.raw[(path, "in")] = tensors[0].detach().clone()
                return None if kwargs_hook is None else (args, kwargs_hook(dict(kwargs)))

            self._handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))

        def post(m, args, output, path=path):
            self.raw[(path, "out")] = output

        self._handles.append(module.register_forward_hook(post))

    def get(self, path, which="out", item=0):
        value = self.raw.get((path, which))
        if isinstance(value, tuple | list):
            value = value[item] if item < len(value) else None
        elif item:
            value = None
        return None if value is None else value.detach().to(torch.float64).cpu().numpy()

    def close(self):
        for handle in self._handles:
            handle.remove()


def _key(top, top_line, alg, line, tag="", **indices):
    return (top, top_line, alg, line, tuple(sorted(indices.items())), tag)


def _cols(a):
    """(1, ℓ, d) or (ℓ, d), token-major → the paper's (d, ℓ), tokens as columns."""
    if a is None:
        return None
    a = np.asarray(a)
    return (a[0] if a.ndim == 3 else a).T


def _softmax_cols(logits):
    e = np.exp(logits - logits.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


class _Values:
    """What the model exposes: key → (value, where it was read); extras for the evidence."""

    def __init__(self):
        self.values: dict = {}
        self.extra: dict = {}

    def put(self, key, value, source):
        if value is not None:
            self.values[key] = (np.asarray(value, np.float64), source)

    def heads(self, top, top_line, l, H, which, matrix, source):
        """A (H·d_head, ℓ) matrix split into the paper's heads, head h being rows
        (h−1)·d_head … h·d_head − 1, stored as line ``which`` of Algorithm 4 (1: Q, 2: K, 3: V;
        6: Ṽ, then also Algorithm 5's line 2, Y^h)."""
        if matrix is None:
            return
        d = matrix.shape[0] // H
        for h in range(1, H + 1):
            part = matrix[(h - 1) * d : h * d]
            self.put(_key(top, top_line, 4, which, l=l, h=h), part, f"{source}, head {h}")
            if which == 6:
                self.put(_key(top, top_line, 5, 2, l=l, h=h), part, f"{source}, head {h}")

    def weights(self, top, top_line, l, A, source):
        """Attention probabilities (H, ℓ_x, ℓ_z) → the paper's A[t_z, t_x] per head."""
        if A is None:
            return
        A = A[0] if A.ndim == 4 else A
        for h in range(1, A.shape[0] + 1):
            self.put(_key(top, top_line, 4, 6, "A", l=l, h=h), A[h - 1].T, f"{source}, head {h}")


def _kwargs_for_weights(kwargs):
    """``nn.MultiheadAttention``: return every head's weights (the layers ask for none)."""
    kwargs["need_weights"] = True
    kwargs["average_attn_weights"] = False
    return kwargs


class _Family:
    """What the comparison and the evidence need to know of one kind of model."""

    algorithm: int
    name: str
    causal_lines: tuple = ()  # lines of the top algorithm whose attention is causal
    default_site: dict = {}  # algorithm -> the top line a call without `# line N` belongs to
    rms = False  # the norms are RMSnorm (m = β = 0)
    norms: tuple = ()  # the layer-norm lines of the top algorithm
    kinds: dict = {}

    def kind(self, key):
        top, top_line, alg, line, _, tag = key
        if alg == 4:
            return "projection" if line in (1, 2, 3) else "attention"
        if alg == 5:
            return "heads" if line in (2, 3) else "attention output"
        return self.kinds.get(line, "other")

    def mask(self, key, shape):
        if key[1] in self.causal_lines:
            return np.triu(np.ones(shape, bool))  # Mask[t_z, t_x] = [[t_z ≤ t_x]]
        return None

    def norm_of(self, key):
        """(γ, β, paper key of the norm's input, ε) for a layer-norm line, or None."""
        top, _, alg, line, idx, _ = key
        if alg != top or line not in self.norms:
            return None
        l = dict(idx).get("l")
        gamma, beta = self.norm_params(line, l)
        return gamma, beta, self.norm_input(line, l), self.kwargs["eps"]

    def attention_input(self, top_line, l, paper):
        """(what the paper's attention of ``top_line`` reads, its value) or None."""
        return None

    def mlp_input(self, top_line, l, paper):
        return None

    def activation_name(self):
        return _activation_name(self.kwargs["activation"])

    def logit_bias(self):
        return None

    def biases(self, key):
        return _biases(self.layer_list(key[1]), key)

    def layer_list(self, top_line):
        return self.theta.layers

    def size(self):
        """(d_e, L): the width and the number of layers, which set the tolerance."""
        layers = getattr(self.theta, "layers", None)
        L = len(layers) if layers is not None else len(self.theta.enc) + len(self.theta.dec)
        return int(self.theta.W_e.shape[0]), L


def _activation_name(f):
    from ..paper.functions import gelu, gelu_tanh, relu

    names = {gelu: "the exact (erf) GELU", gelu_tanh: "the tanh GELU (gelu_new)", relu: "ReLU"}
    return names.get(f, getattr(f, "__name__", repr(f)))


def _biases(layers, key):
    """(name, vector) of the biases a departing line may have dropped."""
    _, top_line, alg, line, idx, _ = key
    idx = dict(idx)
    l, h = idx.get("l"), idx.get("h")
    if l is None or l > len(layers):
        return []
    layer = layers[l - 1]
    W = getattr(layer, "W", None)
    if W is None:  # Algorithm 8's decoder: the self- or the cross-attention
        W = layer.W_ed if top_line == 16 else layer.W_dec
    if alg == 4 and h is not None:
        return [(f"b_{n}^{h} of layer {l}", getattr(W, f"b_{n}")[h - 1]) for n in "qkv"]
    out = [(f"b_o of layer {l}", W.b_o)]
    for name in ("b_mlp1", "b_mlp2", "b_mlp3", "b_mlp4"):
        if hasattr(layer, name):
            out.append((f"{name} of layer {l}", getattr(layer, name)))
    return out


# ------------------------------------------------------------------------------------ GPT-2


class _Gpt2(_Family):
    algorithm, causal_lines, norms = 10, (6,), (5, 7, 10)
    name, final_line = "Algorithm 10 (DTransformer)", 11
    kinds = {3: "embedding", 5: "norm", 6: "attention residual", 7: "norm", 8: "mlp residual",
             10: "final norm", 11: "output"}  # fmt: skip

    def __init__(self, model):
        from .gpt2 import d_transformer_from_gpt2, d_transformer_kwargs_from_gpt2

        self.model = model
        self.theta = d_transformer_from_gpt2(model)
        self.kwargs = d_transformer_kwargs_from_gpt2(model)
        self.H, self.L = model.config.n_head, model.config.n_layer

    def paper(self):
        from ..paper.architectures import d_transformer

        return d_transformer, (jnp.asarray(self.x), self.theta), self.kwargs

    def norm_params(self, line, l):
        if line == 10:
            return self.theta.gamma, self.theta.beta
        layer = self.theta.layers[l - 1]
        return (layer.gamma1, layer.beta1) if line == 5 else (layer.gamma2, layer.beta2)

    def norm_input(self, line, l):
        A = 10
        if line == 5:
            return _key(A, 3, A, 3) if l == 1 else _key(A, 8, A, 8, l=l - 1)
        if line == 7:
            return _key(A, 6, A, 6, l=l)
        return _key(A, 8, A, 8, l=self.L)

    def attention_input(self, top_line, l, paper):
        return "X̃ of line 5", paper.get(_key(10, 5, 10, 5, l=l))

    def mlp_input(self, top_line, l, paper):
        return "X̃ of line 7", paper.get(_key(10, 7, 10, 7, l=l))

    def run(self):
        hooks = _Hooks(self.model)
        for i in range(self.L):
            b = f"transformer.h.{i}"
            hooks.watch(b, inputs=True)
            for sub in ("ln_1", "ln_2", "attn.c_attn", "attn.c_proj", "mlp", "mlp.act"):
                hooks.watch(f"{b}.{sub}", inputs=True)
            hooks.watch(f"{b}.attn")
        hooks.watch("transformer.ln_f", inputs=True)
        hooks.watch("lm_head", inputs=True)
        try:
            with _eager_attention(self.model), torch.no_grad():
                self.model(torch.as_tensor(self.x)[None])
        finally:
            hooks.close()
        vals, g, A = _Values(), hooks.get, 10
        vals.put(_key(A, 3, A, 3), _cols(g("transformer.h.0", "in")), "transformer.h[0] input")
        for i in range(self.L):
            l, b, s = i + 1, f"transformer.h.{i}", f"transformer.h[{i}]"
            vals.put(_key(A, 5, A, 5, l=l), _cols(g(f"{b}.ln_1")), f"{s}.ln_1 output")
            qkv = _cols(g(f"{b}.attn.c_attn"))
            if qkv is not None:
                d = qkv.shape[0] // 3
                for which, part in ((1, "query"), (2, "key"), (3, "value")):
                    vals.heads(A, 6, l, self.H, which, qkv[(which - 1) * d : which * d],
                               f"{s}.attn.c_attn output, {part} block")  # fmt: skip
            vals.weights(A, 6, l, g(f"{b}.attn", item=1), f"{s}.attn attention probabilities")
            Y = _cols(g(f"{b}.attn.c_proj", "in"))
            vals.heads(A, 6, l, self.H, 6, Y, f"{s}.attn.c_proj input")
            vals.put(_key(A, 6, 5, 3, l=l), Y, f"{s}.attn.c_proj input")
            vals.put(_key(A, 6, 5, 4, l=l), _cols(g(f"{b}.attn.c_proj")), f"{s}.attn.c_proj output")
            vals.put(_key(A, 6, A, 6, l=l), _cols(g(f"{b}.ln_2", "in")), f"{s}.ln_2 input")
            vals.put(_key(A, 7, A, 7, l=l), _cols(g(f"{b}.ln_2")), f"{s}.ln_2 output")
            vals.put(_key(A, 8, A, 8, l=l), _cols(g(b)), f"{s} output")
            for line, sub in ((5, "ln_1"), (7, "ln_2")):
                vals.extra[("norm", line, l)] = (
                    _cols(g(f"{b}.{sub}", "in")),
                    _cols(g(f"{b}.{sub}")),
                )
            vals.extra[("attention input", 6, l)] = _cols(g(f"{b}.attn.c_attn", "in"))
            vals.extra[("mlp input", 8, l)] = _cols(g(f"{b}.mlp", "in"))
            vals.extra[("activation", 8, l)] = (g(f"{b}.mlp.act", "in"), g(f"{b}.mlp.act"))
        vals.put(_key(A, 10, A, 10), _cols(g("transformer.ln_f")), "transformer.ln_f output")
        vals.extra[("norm", 10, None)] = (_cols(g("transformer.ln_f", "in")),
                                          _cols(g("transformer.ln_f")))  # fmt: skip
        logits = _cols(g("lm_head"))
        vals.put(_key(A, 11, A, 11, "logits"), logits, "lm_head output")
        vals.put(_key(A, 11, A, 11, "P"), _softmax_cols(logits), "softmax of lm_head output")
        vals.extra["logits"] = (_cols(g("lm_head", "in")), logits)
        return vals


@contextlib.contextmanager
def _eager_attention(model):
    """Hugging Face returns attention probabilities only from its eager kernel: use it for the
    run (the same function as sdpa; the interop tests prove both equal to Algorithm 4)."""
    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    switch = before not in (None, "eager") and hasattr(model, "set_attn_implementation")
    if switch:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(before)


# ------------------------------------------------------------------------------------- BERT


class _Bert(_Family):
    algorithm, norms = 9, (6, 8, 11)
    name, final_line = "Algorithm 9 (ETransformer) with BERT's extras", 12
    kinds = {3: "embedding", 5: "attention residual", 6: "norm", 7: "mlp residual", 8: "norm",
             10: "head", 11: "final norm", 12: "output"}  # fmt: skip

    def __init__(self, model):
        from .bert import bert_from_hf, bert_kwargs_from_hf

        self.model = model
        self.params = bert_from_hf(model)
        self.theta = self.params.theta
        self.kwargs = bert_kwargs_from_hf(model)
        self.H, self.L = model.config.num_attention_heads, model.config.num_hidden_layers

    def paper(self):
        from .bert import bert_logits

        return bert_logits, (jnp.asarray(self.x), self.params), self.kwargs

    def norm_params(self, line, l):
        if line == 11:
            return self.theta.gamma, self.theta.beta
        layer = self.theta.layers[l - 1]
        return (layer.gamma1, layer.beta1) if line == 6 else (layer.gamma2, layer.beta2)

    def norm_input(self, line, l):
        return _key(9, line - 1, 9, line - 1, **({} if line == 11 else {"l": l}))

    def attention_input(self, top_line, l, paper):
        if l == 1:
            return "X of line 3 with BERT's extras", self.extras_x(paper)
        return f"X of line 8 (l={l - 1})", paper.get(_key(9, 8, 9, 8, l=l - 1))

    def mlp_input(self, top_line, l, paper):
        if l is None:
            return "X of line 8 (l=L)", paper.get(_key(9, 8, 9, 8, l=self.L))
        return "X of line 6", paper.get(_key(9, 6, 9, 6, l=l))

    def logit_bias(self):
        return self.params.b_u

    def extras_x(self, paper):
        """The X that layer 1 reads: line 3's X with BERT's extras (token type 0, the embedding
        layer norm), in float64 numpy, for the evidence."""
        X = paper.get(_key(9, 3, 9, 3))
        p = self.params
        if X is None:
            return None
        if p.W_tt is not None:
            X = X + np.asarray(p.W_tt, np.float64)[:, :1]
        if p.gamma_emb is not None:
            X = _layer_norm(X, _np(p.gamma_emb), _np(p.beta_emb), self.kwargs["eps"])
        return X

    def run(self):
        hooks = _Hooks(self.model)
        e = "bert.embeddings"
        hooks.watch(f"{e}.word_embeddings")
        hooks.watch(f"{e}.position_embeddings")
        for i in range(self.L):
            b = f"bert.encoder.layer.{i}"
            for sub in ("attention.self.query", "attention.self.key", "attention.self.value",
                        "attention.output.dense", "attention.output.LayerNorm", "output.LayerNorm",
                        "intermediate.dense", "intermediate.intermediate_act_fn"):  # fmt: skip
                hooks.watch(f"{b}.{sub}", inputs=True)
            hooks.watch(f"{b}.attention.self")
        t = "cls.predictions.transform"
        for sub in (f"{t}.dense", f"{t}.transform_act_fn", f"{t}.LayerNorm",
                    "cls.predictions.decoder"):  # fmt: skip
            hooks.watch(sub, inputs=True)
        try:
            with _eager_attention(self.model), torch.no_grad():
                self.model(torch.as_tensor(self.x)[None])
        finally:
            hooks.close()
        vals, g, A = _Values(), hooks.get, 9
        word, position = g(f"{e}.word_embeddings"), g(f"{e}.position_embeddings")
        if word is not None and position is not None:
            vals.put(_key(A, 3, A, 3), _cols(word + position),
                     "bert.embeddings: word_embeddings + position_embeddings outputs")  # fmt: skip
        for i in range(self.L):
            l, b, s = i + 1, f"bert.encoder.layer.{i}", f"bert.encoder.layer[{i}]"
            for which, part in ((1, "query"), (2, "key"), (3, "value")):
                vals.heads(A, 5, l, self.H, which, _cols(g(f"{b}.attention.self.{part}")),
                           f"{s}.attention.self.{part} output")  # fmt: skip
            vals.weights(A, 5, l, g(f"{b}.attention.self", item=1),
                         f"{s}.attention.self attention probabilities")  # fmt: skip
            Y = _cols(g(f"{b}.attention.output.dense", "in"))
            vals.heads(A, 5, l, self.H, 6, Y, f"{s}.attention.output.dense input")
            vals.put(_key(A, 5, 5, 3, l=l), Y, f"{s}.attention.output.dense input")
            vals.put(_key(A, 5, 5, 4, l=l), _cols(g(f"{b}.attention.output.dense")),
                     f"{s}.attention.output.dense output")  # fmt: skip
            for line, sub in ((5, "attention.output.LayerNorm"), (7, "output.LayerNorm")):
                x_in, y_out = _cols(g(f"{b}.{sub}", "in")), _cols(g(f"{b}.{sub}"))
                vals.put(_key(A, line, A, line, l=l), x_in, f"{s}.{sub} input")
                vals.put(_key(A, line + 1, A, line + 1, l=l), y_out, f"{s}.{sub} output")
                vals.extra[("norm", line + 1, l)] = (x_in, y_out)
            vals.extra[("attention input", 5, l)] = _cols(g(f"{b}.attention.self.query", "in"))
            vals.extra[("mlp input", 7, l)] = _cols(g(f"{b}.intermediate.dense", "in"))
            act = f"{b}.intermediate.intermediate_act_fn"
            vals.extra[("activation", 7, l)] = (g(act, "in"), g(act))
        x_in, y_out = _cols(g(f"{t}.LayerNorm", "in")), _cols(g(f"{t}.LayerNorm"))
        vals.put(_key(A, 10, A, 10), x_in, f"{t}.LayerNorm input")
        vals.put(_key(A, 11, A, 11), y_out, f"{t}.LayerNorm output")
        vals.extra[("norm", 11, None)] = (x_in, y_out)
        vals.extra[("mlp input", 10, None)] = _cols(g(f"{t}.dense", "in"))
        vals.extra[("activation", 10, None)] = (g(f"{t}.transform_act_fn", "in"),
                                                g(f"{t}.transform_act_fn"))  # fmt: skip
        logits = _cols(g("cls.predictions.decoder"))
        if logits is not None:
            b_u = 0.0 if self.params.b_u is None else _np(self.params.b_u)[:, None]
            vals.put(_key(A, 12, A, 12, "logits"), logits - b_u,
                     "cls.predictions.decoder output − its bias b_u (a BERT extra)")  # fmt: skip
        vals.extra["logits"] = (_cols(g("cls.predictions.decoder", "in")), logits)
        return vals


# ------------------------------------------------------------------------------------ Llama


class _Llama(_Family):
    """Hugging Face ``LlamaForCausalLM`` against Algorithm 10 with Llama's substitutions
    (:func:`formal_algorithms.families.llama.llama_logits`: RMSnorm, RoPE, grouped-query
    attention, SwiGLU, no biases)."""

    algorithm, causal_lines, norms, rms = 10, (6,), (5, 7, 10), True
    name, final_line = "Algorithm 10 with Llama's substitutions (families.llama)", 11
    default_site = {4: 6, 5: 6}  # llama_layer calls grouped_attention before its `# line 6`
    kinds = _Gpt2.kinds

    def __init__(self, model):
        from ..families.llama import llama_from_state_dict

        config = model.config
        rope = getattr(config, "rope_parameters", None) or {
            "rope_theta": getattr(config, "rope_theta", 10000.0)
        }
        where = "model.config"
        if rope.get("rope_type", "default") != "default":
            fail(NAME, f"{where}.rope_parameters", f"has rope_type {rope['rope_type']!r}; the "
                 "Llama family here has the original RoPE only")  # fmt: skip
        if config.attention_bias or getattr(config, "mlp_bias", False):
            fail(NAME, where, "has attention or MLP biases; Llama's projections are bias-free")
        if config.hidden_act != "silu":
            fail(NAME, f"{where}.hidden_act", f"= {config.hidden_act!r}; SwiGLU uses silu")
        self.model = model
        tied = model.lm_head.weight is model.model.embed_tokens.weight
        state = {k: v.detach().cpu().to(torch.float64 if v.dtype == torch.float64
                                        else torch.float32).numpy()
                 for k, v in model.state_dict().items()
                 if not (tied and k == "lm_head.weight")}  # fmt: skip
        self.H, self.G = config.num_attention_heads, config.num_key_value_heads
        self.L = config.num_hidden_layers
        self.theta = llama_from_state_dict(state, n_layers=self.L, n_heads=self.H,
                                           n_kv_heads=self.G)  # fmt: skip
        self.kwargs = {"rope_base": float(rope["rope_theta"]), "eps": config.rms_norm_eps}

    def paper(self):
        from ..families.llama import llama_logits

        return llama_logits, (jnp.asarray(self.x), self.theta), self.kwargs

    def norm_params(self, line, l):
        gamma = self.theta.gamma if line == 10 else (
            self.theta.layers[l - 1].gamma1 if line == 5 else self.theta.layers[l - 1].gamma2)  # fmt: skip
        return gamma, np.zeros(np.shape(gamma))

    norm_input = _Gpt2.norm_input
    attention_input = _Gpt2.attention_input
    mlp_input = _Gpt2.mlp_input

    def activation_name(self):
        return "SiLU"

    def biases(self, key):
        return []

    def run(self):
        hooks = _Hooks(self.model)
        hooks.watch("model.embed_tokens")
        for i in range(self.L):
            b = f"model.layers.{i}"
            hooks.watch(b)
            for sub in ("input_layernorm", "post_attention_layernorm", "self_attn.q_proj",
                        "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp",
                        "mlp.act_fn"):  # fmt: skip
                hooks.watch(f"{b}.{sub}", inputs=True)
            hooks.watch(f"{b}.self_attn")
        hooks.watch("model.norm", inputs=True)
        hooks.watch("lm_head", inputs=True)
        try:
            with _eager_attention(self.model), torch.no_grad():
                self.model(torch.as_tensor(self.x)[None])
        finally:
            hooks.close()
        vals, g, A, H, G = _Values(), hooks.get, 10, self.H, self.G
        vals.put(_key(A, 3, A, 3), _cols(g("model.embed_tokens")), "model.embed_tokens output")
        for i in range(self.L):
            l, b, s = i + 1, f"model.layers.{i}", f"model.layers[{i}]"
            vals.put(_key(A, 5, A, 5, l=l), _cols(g(f"{b}.input_layernorm")),
                     f"{s}.input_layernorm output")  # fmt: skip
            vals.heads(A, 6, l, H, 1, _cols(g(f"{b}.self_attn.q_proj")),
                       f"{s}.self_attn.q_proj output (before RoPE)")  # fmt: skip
            for which, part in ((2, "k_proj"), (3, "v_proj")):
                sets = _cols(g(f"{b}.self_attn.{part}"))
                if sets is None:
                    continue
                d = sets.shape[0] // G
                for h in range(1, H + 1):  # query head h reads key/value set ⌊(h − 1) G / H⌋
                    group = (h - 1) // (H // G)
                    vals.put(_key(A, 6, 4, which, l=l, h=h), sets[group * d : (group + 1) * d],
                             f"{s}.self_attn.{part} output, set {group + 1}"
                             + (" (before RoPE)" if which == 2 else ""))  # fmt: skip
            vals.weights(A, 6, l, g(f"{b}.self_attn", item=1),
                         f"{s}.self_attn attention probabilities")  # fmt: skip
            Y = _cols(g(f"{b}.self_attn.o_proj", "in"))
            vals.heads(A, 6, l, H, 6, Y, f"{s}.self_attn.o_proj input")
            vals.put(_key(A, 6, 5, 3, l=l), Y, f"{s}.self_attn.o_proj input")
            vals.put(_key(A, 6, 5, 4, l=l), _cols(g(f"{b}.self_attn.o_proj")),
                     f"{s}.self_attn.o_proj output")  # fmt: skip
            post = f"{b}.post_attention_layernorm"
            vals.put(
                _key(A, 6, A, 6, l=l), _cols(g(post, "in")), f"{s}.post_attention_layernorm input"
            )
            vals.put(_key(A, 7, A, 7, l=l), _cols(g(post)), f"{s}.post_attention_layernorm output")
            vals.put(_key(A, 8, A, 8, l=l), _cols(g(b)), f"{s} output")
            vals.extra[("norm", 5, l)] = (_cols(g(f"{b}.input_layernorm", "in")),
                                          _cols(g(f"{b}.input_layernorm")))  # fmt: skip
            vals.extra[("norm", 7, l)] = (_cols(g(post, "in")), _cols(g(post)))
            vals.extra[("attention input", 6, l)] = _cols(g(f"{b}.self_attn.q_proj", "in"))
            vals.extra[("mlp input", 8, l)] = _cols(g(f"{b}.mlp", "in"))
            vals.extra[("activation", 8, l)] = (g(f"{b}.mlp.act_fn", "in"), g(f"{b}.mlp.act_fn"))
        vals.put(_key(A, 10, A, 10), _cols(g("model.norm")), "model.norm output")
        vals.extra[("norm", 10, None)] = (_cols(g("model.norm", "in")), _cols(g("model.norm")))
        logits = _cols(g("lm_head"))
        vals.put(_key(A, 11, A, 11, "logits"), logits, "lm_head output")
        vals.extra["logits"] = (_cols(g("lm_head", "in")), logits)
        return vals


# --------------------------------------------------------------------------- nn.Transformer


class _Torch(_Family):
    algorithm, causal_lines, norms = 8, (14,), (6, 8, 15, 17, 19)
    name, final_line = "Algorithm 8 (EDTransformer)", 21
    kinds = {3: "embedding", 5: "attention residual", 6: "norm", 7: "mlp residual", 8: "norm",
             12: "embedding", 14: "attention residual", 15: "norm", 16: "attention residual",
             17: "norm", 18: "mlp residual", 19: "norm", 21: "output"}  # fmt: skip

    def __init__(self, model, W_e, W_p, W_u, eps):
        from ..paper.functions import relu
        from .torch_transformer import ed_transformer_from_torch

        self.model = model
        dtype = next(model.parameters()).dtype
        self.embeddings = [None if w is None else _as_tensor(w, dtype) for w in (W_e, W_p, W_u)]
        if eps is None:
            first = (list(model.encoder.layers) + list(model.decoder.layers))[0]
            eps = first.norm1.eps
        self.theta = ed_transformer_from_torch(model, *self.embeddings, eps=eps)
        self.kwargs = {"eps": eps, "activation": relu}
        self.H = model.encoder.layers[0].self_attn.num_heads if len(model.encoder.layers) else \
            model.decoder.layers[0].self_attn.num_heads  # fmt: skip

    def paper(self):
        from ..paper.architectures import ed_transformer

        args = (jnp.asarray(self.z), jnp.asarray(self.x), self.theta)
        return ed_transformer, args, {"eps": self.kwargs["eps"]}

    def layer_list(self, top_line):
        return self.theta.enc if top_line <= 9 else self.theta.dec

    def norm_params(self, line, l):
        if line in (6, 8):
            layer = self.theta.enc[l - 1]
            return (layer.gamma1, layer.beta1) if line == 6 else (layer.gamma2, layer.beta2)
        layer = self.theta.dec[l - 1]
        return {15: (layer.gamma3, layer.beta3), 17: (layer.gamma4, layer.beta4),
                19: (layer.gamma5, layer.beta5)}[line]  # fmt: skip

    def norm_input(self, line, l):
        return _key(8, line - 1, 8, line - 1, l=l)

    def attention_input(self, top_line, l, paper):
        if top_line == 16:
            return "X of line 15", paper.get(_key(8, 15, 8, 15, l=l))
        first, last = (3, 8) if top_line == 5 else (12, 19)
        if l == 1:
            return f"X of line {first}", paper.get(_key(8, first, 8, first))
        return f"X of line {last} (l={l - 1})", paper.get(_key(8, last, 8, last, l=l - 1))

    def mlp_input(self, top_line, l, paper):
        line = 6 if top_line == 7 else 17
        return f"X of line {line}", paper.get(_key(8, line, 8, line, l=l))

    def run(self):
        model = self.model
        W_e, W_p, W_u = self.embeddings
        hooks = _Hooks(model)
        n_enc, n_dec = len(model.encoder.layers), len(model.decoder.layers)
        for i in range(n_enc):
            b = f"encoder.layers.{i}"
            hooks.watch(b, inputs=True)
            hooks.watch(f"{b}.self_attn", inputs=True, kwargs_hook=_kwargs_for_weights)
            for sub in ("norm1", "norm2", "linear1", "linear2"):
                hooks.watch(f"{b}.{sub}", inputs=True)
        for i in range(n_dec):
            b = f"decoder.layers.{i}"
            hooks.watch(b, inputs=True)
            for sub in ("self_attn", "multihead_attn"):
                hooks.watch(f"{b}.{sub}", inputs=True, kwargs_hook=_kwargs_for_weights)
            for sub in ("norm1", "norm2", "norm3", "linear1", "linear2"):
                hooks.watch(f"{b}.{sub}", inputs=True)
        z, x = torch.as_tensor(self.z), torch.as_tensor(self.x)
        src = (W_e[:, z] + W_p[:, : len(z)]).T  # lines 1-3, in torch's (ℓ, d_e)
        tgt = (W_e[:, x] + W_p[:, : len(x)]).T  # lines 10-12
        causal = nn.Transformer.generate_square_subsequent_mask(len(x), dtype=src.dtype)
        try:
            with torch.no_grad():
                out = model(src, tgt, tgt_mask=causal, tgt_is_causal=True)
        finally:
            hooks.close()
        vals, g, A = _Values(), hooks.get, 8
        if n_enc:
            vals.put(
                _key(A, 3, A, 3), _cols(g("encoder.layers.0", "in")), "encoder.layers[0] input"
            )
        if n_dec:
            vals.put(
                _key(A, 12, A, 12), _cols(g("decoder.layers.0", "in")), "decoder.layers[0] input"
            )
        for stack, n, attn in (("encoder", n_enc, ((5, "self_attn"),)),
                               ("decoder", n_dec, ((14, "self_attn"), (16, "multihead_attn")))):  # fmt: skip
            for i in range(n):
                l, b = i + 1, f"{stack}.layers.{i}"
                s = f"{stack}.layers[{i}]"
                for line, sub in attn:
                    vals.weights(A, line, l, g(f"{b}.{sub}", item=1),
                                 f"{s}.{sub} attention probabilities")  # fmt: skip
                    vals.put(_key(A, line, 5, 4, l=l), _cols(g(f"{b}.{sub}")), f"{s}.{sub} output")
                    vals.extra[("attention input", line, l)] = _cols(g(f"{b}.{sub}", "in"))
                norms = (("norm1", 5), ("norm2", 7)) if stack == "encoder" else \
                    (("norm1", 14), ("norm2", 16), ("norm3", 18))  # fmt: skip
                for sub, line in norms:
                    x_in, y_out = _cols(g(f"{b}.{sub}", "in")), _cols(g(f"{b}.{sub}"))
                    vals.put(_key(A, line, A, line, l=l), x_in, f"{s}.{sub} input")
                    vals.put(_key(A, line + 1, A, line + 1, l=l), y_out, f"{s}.{sub} output")
                    vals.extra[("norm", line + 1, l)] = (x_in, y_out)
                mlp = 7 if stack == "encoder" else 18
                vals.extra[("mlp input", mlp, l)] = _cols(g(f"{b}.linear1", "in"))
                vals.extra[("activation", mlp, l)] = (g(f"{b}.linear1"), g(f"{b}.linear2", "in"))
        X = out.detach().to(torch.float64).numpy().T
        W = (W_e.T if W_u is None else W_u).detach().to(torch.float64).numpy()
        vals.put(_key(A, 21, A, 21, "logits"), W @ X,
                 "W_u @ (the model's output), the unembedding outside nn.Transformer")  # fmt: skip
        vals.put(_key(A, 21, A, 21, "P"), _softmax_cols(W @ X), "softmax of the above")
        return vals


def _as_tensor(w, dtype):
    if isinstance(w, torch.Tensor):
        return w.detach().to(dtype)
    return torch.from_numpy(np.array(w, dtype=np.float64)).to(dtype)


# ==================================================================================== compare


def compare(
    model,
    x,
    *,
    z=None,
    W_e=None,
    W_p=None,
    W_u=None,
    eps: float | None = None,
    float64: bool = False,
    tolerance: float | None = None,
) -> Report:
    """Run ``model`` and the paper's algorithm on the tokens ``x`` and report, line by line,
    where they part ways (see the module's docstring).

    ``model``: a Hugging Face ``GPT2LMHeadModel`` (Algorithm 10) or ``BertForMaskedLM``
    (Algorithm 9 with BERT's extras, :func:`~.bert.bert_logits`), or a ``torch.nn.Transformer``
    (Algorithm 8; then also the context tokens ``z`` and the embeddings around the model in the
    paper's orientation: ``W_e`` ``(d_e, N_V)``, ``W_p`` ``(d_e, ℓ_max)``, ``W_u`` ``(N_V, d_e)``
    or ``None`` for tied; ``eps`` defaults to the model's first LayerNorm's). The model must be in
    eval mode and convertible (the converters' errors name what they refuse).
    ``x``: 1-D token ids (list, numpy or torch). ``float64=True`` runs both sides in float64: the
    model is cast in place and cast back afterwards (exact for float32/bfloat16/float16 weights).
    ``tolerance`` overrides :func:`tolerance_for`. Returns a :class:`Report`.
    """
    x = _tokens("x", x)
    z = None if z is None else _tokens("z", z)
    if not isinstance(model, nn.Module):
        fail(NAME, "model", f"must be a torch module (GPT2LMHeadModel, BertForMaskedLM or "
             f"torch.nn.Transformer), got {type(model).__name__}", TypeError)  # fmt: skip
    dtypes = {p.dtype for p in model.parameters()}
    if float64 and len(dtypes) > 1:
        fail(NAME, "model", f"mixes dtypes {sorted(map(str, dtypes))}; float64=True needs one")
    before = dtypes.pop() if len(dtypes) == 1 else None
    if float64:
        model.to(torch.float64)
        W_e, W_p, W_u = (None if w is None else np.asarray(_as_numpy(w), np.float64)
                         for w in (W_e, W_p, W_u))  # fmt: skip
    try:
        with jax.enable_x64(True) if float64 else contextlib.nullcontext():
            return _compare(model, x, z, W_e, W_p, W_u, eps, tolerance)
    finally:
        if float64 and before is not None:
            model.to(before)


def _as_numpy(w):
    return w.detach().cpu().numpy() if isinstance(w, torch.Tensor) else np.asarray(w)


def _tokens(argument, x):
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 1 or x.size == 0 or not np.issubdtype(x.dtype, np.integer):
        fail(NAME, argument, f"must be a non-empty 1-D sequence of integer token ids, got "
             f"shape {x.shape} and dtype {x.dtype}")  # fmt: skip
    return x.astype(np.int64)


def _family(model, W_e, W_p, W_u, eps, z):
    from transformers import BertForMaskedLM, GPT2LMHeadModel

    if isinstance(model, GPT2LMHeadModel):
        return _Gpt2(model)
    if isinstance(model, BertForMaskedLM):
        return _Bert(model)
    if type(model).__name__ == "LlamaForCausalLM":
        return _Llama(model)
    if isinstance(model, nn.Transformer):
        for name, value in (("z", z), ("W_e", W_e), ("W_p", W_p)):
            if value is None:
                fail(NAME, name, "is needed for a torch.nn.Transformer: Algorithm 8 embeds the "
                     "context z and the tokens x outside the model (W_e, W_p)")  # fmt: skip
        return _Torch(model, W_e, W_p, W_u, eps)
    fail(NAME, "model", f"must be a GPT2LMHeadModel, BertForMaskedLM, LlamaForCausalLM or "
         f"torch.nn.Transformer, got {type(model).__name__}", TypeError)  # fmt: skip


def _compare(model, x, z, W_e, W_p, W_u, eps, tolerance) -> Report:
    from ..trace import trace

    family = _family(model, W_e, W_p, W_u, eps, z)
    if model.training:
        fail(NAME, "model", "is in training mode; call model.eval() (the paper has no dropout)")
    family.x, family.z = x, z
    dtype = str(jax.tree_util.tree_leaves(family.theta)[0].dtype)
    d_e, L = family.size()
    tol = tolerance_for(dtype, d_e, L) if tolerance is None else float(tolerance)
    fn, args, kwargs = family.paper()
    tr = trace(fn, *args, **kwargs)
    vals = family.run()
    rows, not_exposed, paper = [], [], {}
    layer = None  # the layer l in force, for records whose path does not carry it
    for rec in tr.records:
        if "l" in rec.indices:
            layer = rec.indices["l"]
        found = _record_key(rec, family, layer)
        if found is None:
            continue
        key, path = found
        if key in paper:  # a second record of a line: lines 5-8 after line 8, RoPE's rotation
            if key[2] == 4 and key[3] in (1, 2):
                paper[key[:5] + ("rotated",)] = np.asarray(rec.value, np.float64)
            continue
        paper[key] = np.asarray(rec.value, np.float64)
        if key not in vals.values:
            not_exposed.append(path)
            continue
        value, source = vals.values[key]
        rows.append(_row(rec, path, key, value, paper[key], tol, source, family.kind(key)))
    report = Report(
        model=type(model).__name__, algorithm=family.name, dtype=dtype,
        tokens=x.tolist(), tolerance=tol, tolerance_note=tolerance_note(dtype, tol), rows=rows,
        not_exposed=not_exposed, causes=[], evidence=[],
    )  # fmt: skip
    first = report.first
    if first is not None:
        report.causes = list(CAUSES.get(first.kind, []))
        report.evidence = _evidence(family, first.key, first.kind, vals, paper, tol)
    return report


_LINE = re.compile(r"^lines? ([\d, \-–]+)")


def _record_key(rec, family, layer):
    """``(key, path)`` of a trace record: key = (top algorithm, its line, algorithm, line,
    indices, tag); ``None`` for a loop header or a record without an array value.

    The top algorithm's line is the call site of the record's nesting (``… › line 6 ›
    Algorithm 5 › …`` gives 6), or the record's own line at the top level. A nested record whose
    path names no call site (a call without its ``# line N`` comment) gets the family's default
    site and the layer in force, and its path shows them."""
    value = rec.value
    if not hasattr(value, "shape") or np.ndim(value) == 0:
        return None
    top, path, indices = family.algorithm, rec.path, dict(rec.indices)
    segments = path.split(" › ")
    nested = [i for i, text in enumerate(segments) if text.startswith("Algorithm")]
    top_line = rec.line
    if rec.algorithm != top or len(nested) > 1:
        end = nested[1] if len(nested) > 1 else None
        site = next((m for t in segments[1:end] if (m := _LINE.match(t))), None)
        if site is not None:
            top_line = int(re.findall(r"\d+", site.group(1))[-1])
        elif rec.algorithm in family.default_site and layer is not None:
            # NEEDS-TRACE (or the family's code): the call of this algorithm has no `# line N`
            top_line = family.default_site[rec.algorithm]
            indices.setdefault("l", layer)
            path = " › ".join([segments[0], f"line {top_line} (l={layer})", *segments[1:]])
        else:
            return None
    tag = ""
    if rec.algorithm == 4 and rec.name == "A":
        tag = "A"
    elif rec.algorithm == top and rec.line == family.final_line:
        tag = "logits" if rec.name == "logits" or rec.function.endswith("_logits") else "P"
    return _key(top, top_line, rec.algorithm, rec.line, tag, **indices), path


def _row(rec, path, key, value, expected, tol, source, kind) -> Row:
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    if value.shape != expected.shape:
        max_abs = max_rel = math.inf
    else:
        diff = np.nan_to_num(np.abs(value - expected), nan=np.inf)
        max_abs = float(diff.max()) if diff.size else 0.0
        max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
    path += " [logits W_u X]" if key[5] == "logits" else ""
    path += " [weights A]" if key[5] == "A" else ""
    return Row(
        path=path, pseudocode=str(rec.pseudocode), algorithm=rec.algorithm, line=rec.line,
        indices=dict(key[4]), shape=tuple(expected.shape), max_abs=max_abs,
        max_rel=max_rel, bound=tol * max(1.0, scale), source=source, kind=kind,
        top_line=key[1], tag=key[5], key=key,
    )  # fmt: skip


# =================================================================================== evidence
# Checks on the captured values that tell the likely causes of a departing line apart. Each is
# computed in float64 numpy from the model's own intermediates and θ, independently of the
# paper's run, and reports only what it finds.


def _np(a):
    return None if a is None else np.asarray(a, np.float64)


def _close(a, b, tol):
    if a is None or b is None or np.shape(a) != np.shape(b):
        return False
    scale = max(1.0, float(np.abs(b).max())) if np.size(b) else 1.0
    return float(np.abs(a - b).max()) <= tol * scale


def _evidence(family, key, kind, vals, paper, tol) -> list[str]:
    found = []
    check = {
        "norm": _norm_evidence,
        "final norm": _norm_evidence,
        "embedding": _embedding_evidence,
        "projection": _projection_evidence,
        "attention": _attention_evidence,
        "heads": _attention_evidence,
        "attention output": _attention_evidence,
        "attention residual": _attention_evidence,
        "mlp residual": _mlp_evidence,
        "head": _mlp_evidence,
        "output": _output_evidence,
    }.get(kind)
    difference = vals.values[key][0] - paper[key]
    scale = max(1.0, float(np.abs(paper[key]).max()))
    if tol < 1e-9 and 0 < float(np.abs(difference).max()) < 5e-7 * scale:
        found.append("the difference is of float32 rounding size in a float64 run: the model "
                     "computes this line (or one it reads) in float32 (e.g. Hugging Face's Llama "
                     "RMSnorm upcasts to float32 whatever the model's dtype)")  # fmt: skip
        return found
    if check is not None:
        found += check(family, key, vals, paper, max(tol, 1e-6))
    model_value, expected = vals.values[key][0], paper[key]
    if model_value.shape == expected.shape:
        found += _offset_evidence(family, key, model_value - expected, tol)
    if not found:
        found.append("none of the checks for this kind of line explains the difference; look "
                     "at the rows just above it and at the model's code for this line")  # fmt: skip
    return _merge_heads(found)


def _merge_heads(found):
    """ "head 1: …", "head 2: …" with the same text become one "heads 1, 2: …"."""
    merged, heads = [], {}
    for text in found:
        match = re.match(r"head (\d+): (.*)", text, re.S)
        if match is None:
            merged.append(text)
            continue
        rest = re.sub(r"rows \d+, \d+, …", "rows h − 1, h − 1 + H, …", match.group(2))
        if rest not in heads:
            heads[rest] = []
            merged.append(rest)
        heads[rest].append(match.group(1))
    return [f"head{'s' if len(heads[t]) > 1 else ''} {', '.join(heads[t])}: {t}" if t in heads
            else t for t in merged]  # fmt: skip


def _offset_evidence(family, key, D, tol):
    """A difference that is the same in every column is a vector added to (or missing from)
    every token: a bias."""
    if D.ndim != 2 or D.shape[1] < 2:
        return []
    column = D[:, :1]
    scale = max(1.0, float(np.abs(column).max()))
    if float(np.abs(D - column).max()) > tol * scale or float(np.abs(column).max()) <= tol:
        return []
    found = [f"model − paper is the same vector in every column (norm "
             f"{np.linalg.norm(column):.3g}): a bias added or dropped"]  # fmt: skip
    for name, b in family.biases(key):
        b = _np(b)
        if b is None or b.shape != column[:, 0].shape:
            continue
        if np.allclose(column[:, 0], -b, rtol=1e-3, atol=tol * scale):
            found.append(f"it is −{name}: the model does not add {name}")
        elif np.allclose(column[:, 0], b, rtol=1e-3, atol=tol * scale):
            found.append(f"it is +{name}: the model adds {name} twice")
    return found


def _layer_norm(x, gamma, beta, eps, *, unbiased=False, rms=False):
    """Algorithm 6 on every column, in float64 numpy (and the variants the evidence tries)."""
    m = 0.0 if rms else x.mean(axis=0, keepdims=True)
    v = ((x - m) ** 2).sum(axis=0, keepdims=True) / (x.shape[0] - (1 if unbiased else 0))
    y = (x - m) / np.sqrt(v + eps) * gamma[:, None]
    return y if rms else y + beta[:, None]


def _norm_evidence(family, key, vals, paper, tol):
    info = family.norm_of(key)
    if info is None:
        return []
    gamma, beta, input_key, eps = info
    l = dict(key[4]).get("l")
    x_in, y_out = (_np(a) for a in vals.extra.get(("norm", key[3], l), (None, None)))
    if x_in is None or y_out is None:
        return []
    gamma, beta = _np(gamma), _np(beta)
    expected_in = paper.get(input_key)
    if expected_in is not None and not _close(x_in, expected_in, tol):
        return [
            f"the model's norm reads another input than the paper's (max abs difference "
            f"{np.abs(x_in - expected_in).max():.3g}): it sits elsewhere in the layer (layer-norm "
            "placement, Pre-LN vs Post-LN), or what it reads was computed differently"
        ]
    if _close(y_out, x_in, tol):
        return ["the model's norm returns its input unchanged: this layer norm is missing"]
    rms = family.rms
    if _close(y_out, _layer_norm(x_in, gamma, beta, eps, rms=rms), tol):
        return ["the model's norm computes the configured norm on its own input: look upstream"]
    m = 0.0 if rms else x_in.mean(axis=0, keepdims=True)
    v = ((x_in - m) ** 2).mean(axis=0, keepdims=True)
    centred = y_out - beta[:, None]
    usable = np.abs(centred) > 1e-3 * np.abs(centred).max()
    s = np.where(usable, (x_in - m) * gamma[:, None] / np.where(usable, centred, 1.0), np.nan)
    eps_fit = float(np.nanmedian(s**2 - v))
    candidates = [
        (f"{'RMSnorm' if rms else 'a layer norm'} with ε ≈ {eps_fit:.3g}, where the "
         f"configuration (and the paper's run) has ε = {eps:g}",
         _layer_norm(x_in, gamma, beta, max(eps_fit, 0.0), rms=rms)),
        ("a layer norm with the unbiased variance (÷ (d_e − 1))",
         _layer_norm(x_in, gamma, beta, eps, unbiased=True)),
        ("RMSnorm (no mean subtracted, no β)", _layer_norm(x_in, gamma, beta, eps, rms=True)),
        ("a layer norm with γ and β swapped", _layer_norm(x_in, beta, gamma, eps)),
    ]  # fmt: skip
    for text, candidate in candidates:
        if _close(y_out, candidate, tol):
            return [f"the model's norm computes {text}"]
    return []


def _embedding_evidence(family, key, vals, paper, tol):
    X = vals.values[key][0]
    x = family.z if key[3] == 3 and family.algorithm == 8 else family.x
    W_e, W_p = _np(family.theta.W_e), _np(getattr(family.theta, "W_p", None))
    ell = X.shape[1]
    tokens = W_e[:, x]
    found = []
    if W_p is None:  # Llama: no W_p (RoPE inside the attention)
        if _close(X, math.sqrt(W_e.shape[0]) * tokens, tol):
            found.append("the model's X is √d_e · W_e[:, x[t]]: a scaled token embedding")
        return found
    for k in (1, 2):
        if k + ell <= W_p.shape[1] and _close(X, tokens + W_p[:, k : k + ell], tol):
            found.append(f"the model's X is W_e[:, x[t]] + W_p[:, t + {k}]: positions offset by "
                         f"{k} (the paper's first position is column 0 of W_p here)")  # fmt: skip
    if _close(X, tokens, tol):
        found.append("the model's X is W_e[:, x[t]] alone: no positional embedding is added")
    if _close(X, math.sqrt(W_e.shape[0]) * tokens + W_p[:, :ell], tol):
        found.append("the model's X is √d_e · W_e[:, x[t]] + W_p[:, t]: a scaled token embedding")
    return found


def _per_head(vals, paper, top, top_line, line, l, H):
    """Q or K (``line`` 1 or 2) of every head of layer l: the model's, or where its modules
    expose none (``nn.MultiheadAttention``), the paper's."""
    out = []
    for h in range(1, H + 1):
        k = _key(top, top_line, 4, line, l=l, h=h)
        rotated = _key(top, top_line, 4, line, "rotated", l=l, h=h)  # RoPE: what S is made of
        if rotated in paper:
            out.append(paper[rotated])
        else:
            out.append(vals.values[k][0] if k in vals.values else paper.get(k))
    return None if any(a is None for a in out) else out


def _softmax_masked(S, mask):
    S = np.where(mask, S, -np.inf) if mask is not None else S
    E = np.exp(S - S.max(axis=0, keepdims=True))
    return E / E.sum(axis=0, keepdims=True)


def _attention_evidence(family, key, vals, paper, tol):
    top, top_line, _, _, idx, _ = key
    idx = dict(idx)
    l, H = idx.get("l"), family.H
    if l is None:
        return []
    found = []
    Q = _per_head(vals, paper, top, top_line, 1, l, H)
    K = _per_head(vals, paper, top, top_line, 2, l, H)
    explained, paper_heads, gaps = False, 0, []
    for h in range(1, H + 1):
        weights_key = _key(top, top_line, 4, 6, "A", l=l, h=h)
        if weights_key not in vals.values:
            continue
        A = vals.values[weights_key][0]
        mask = family.mask(key, A.shape)
        if mask is not None:
            leak = float(A[~mask].sum())
            if leak > tol:
                transposed = np.array_equal(A > 1e-12, mask.T)
                found.append(f"head {h}: the model puts weight where Mask[t_z, t_x] = 0"
                             + (": its mask is the transpose of the paper's (it attends to "
                                "t_z ≥ t_x)" if transposed else ""))  # fmt: skip
                explained = True
                continue
            if ((A <= 1e-30) & mask).any():
                found.append(f"head {h}: the model gives weight 0 where Mask[t_z, t_x] = 1")
                explained = True
                continue
        if Q is None or K is None:
            continue
        q, k = Q[h - 1], K[h - 1]
        d_attn = q.shape[0]
        S = k.T @ q
        own = _softmax_masked(S / math.sqrt(d_attn), mask)
        if _close(A, own, tol):
            paper_heads += 1  # this head's weights are softmax(S / √d_attn) of its Q and K
            gaps.append(float(np.abs(A - own).max()))
            continue
        allowed = A > 1e-30 if mask is None else mask & (A > 1e-30)
        S_c = np.where(allowed, S - _column_mean(S, allowed), 0)
        logA = np.log(np.where(allowed, A, 1.0))
        L_c = np.where(allowed, logA - _column_mean(logA, allowed), 0)
        if float((S_c * S_c).sum()) > 0:
            c = float((S_c * L_c).sum() / (S_c * S_c).sum())  # log A = c·S + const per column
            if c > 0 and _close(A, _softmax_masked(S * c, mask), tol):
                by_d = math.isclose(1 / c, d_attn, rel_tol=1e-3)
                found.append(f"head {h}: the model's weights are softmax(S / {1 / c:.4g}); the "
                             f"paper divides by √d_attn = {math.sqrt(d_attn):.4g}"
                             + (f": the model divides by d_attn = {d_attn}" if by_d else ""))  # fmt: skip
                explained = True
                continue
        q2, k2 = np.concatenate(Q)[h - 1 :: H], np.concatenate(K)[h - 1 :: H]
        if _close(A, _softmax_masked(k2.T @ q2 / math.sqrt(d_attn), mask), tol):
            found.append(f"head {h}: the model's weights are those of a head made of every H-th "
                         f"row of Q and K (rows {h - 1}, {h - 1 + H}, … counted from 0): the heads "
                         "are split strided (view(…, d_attn, H)) instead of in contiguous blocks "
                         "of d_attn rows")  # fmt: skip
            explained = True
            continue
        mask_t = None if mask is None else mask.T
        if _close(A, _softmax_masked(S.T / math.sqrt(d_attn), mask_t), tol):
            found.append(f"head {h}: the model's weights are softmax(Sᵀ / √d_attn): queries and "
                         "keys swapped, or the softmax taken over the other axis")  # fmt: skip
            explained = True
    if not explained and paper_heads == H:
        found.append(f"the attention weights of layer {l} equal softmax(S / √d_attn) of the Q "
                     f"and K above for every head (max abs difference {max(gaps):.2g}): look at "
                     "the values, the head concatenation and W_o")  # fmt: skip
    return found


def _column_mean(M, allowed):
    n = np.maximum(allowed.sum(axis=0, keepdims=True), 1)
    return np.where(allowed, M, 0).sum(axis=0, keepdims=True) / n


def _projection_evidence(family, key, vals, paper, tol):
    top, top_line, _, _, idx, _ = key
    l = dict(idx).get("l")
    expected = family.attention_input(top_line, l, paper)
    got = _np(vals.extra.get(("attention input", top_line, l)))
    if expected is None or expected[1] is None or got is None:
        return []
    read, value = expected
    if not _close(got, value, tol):
        return [f"the model's attention reads another input than the paper's {read} (max abs "
                f"difference {np.abs(got - value).max():.3g}): layer-norm placement, or a "
                "departure upstream"]  # fmt: skip
    return []


ACTIVATIONS = {
    "the exact (erf) GELU": lambda t: torch.nn.functional.gelu(t),
    "the tanh GELU (gelu_new)": lambda t: torch.nn.functional.gelu(t, approximate="tanh"),
    "ReLU": torch.relu,
    "SiLU": torch.nn.functional.silu,
}


def _mlp_evidence(family, key, vals, paper, tol):
    top, top_line, _, line, idx, _ = key
    l = dict(idx).get("l")
    found = []
    expected = family.mlp_input(line if l is None else top_line, l, paper)
    got = _np(vals.extra.get(("mlp input", top_line, l)))
    if expected is not None and expected[1] is not None and got is not None:
        read, value = expected
        if not _close(got, value, tol):
            found.append(f"the model's MLP reads another input than the paper's {read} (max abs "
                         f"difference {np.abs(got - value).max():.3g}): layer-norm placement")  # fmt: skip
    a_in, a_out = vals.extra.get(("activation", top_line, l), (None, None))
    if a_in is not None and a_out is not None:
        t = torch.as_tensor(_np(a_in))
        paper_name = family.activation_name()
        for name, f in ACTIVATIONS.items():
            if _close(_np(a_out), f(t).numpy(), tol):
                if name != paper_name:
                    found.append(f"the model's MLP applies {name}; its configuration (and the "
                                 f"paper's run) says {paper_name}")  # fmt: skip
                break
        else:
            found.append(f"the model's MLP activation is none of {', '.join(ACTIVATIONS)}")
    return found


def _output_evidence(family, key, vals, paper, tol):
    X, logits = (_np(a) for a in vals.extra.get("logits", (None, None)))
    if X is None or logits is None:
        return []
    theta = family.theta
    W_e = _np(theta.W_e)
    b_u = family.logit_bias()
    b = 0.0 if b_u is None else _np(b_u)[:, None]
    tied = W_e.T @ X + b
    if theta.W_u is None:
        if not _close(logits, tied, tol):
            return ["the model's weights tie the unembedding (its output matrix is W_e), but its "
                    "logits are not W_eᵀ X: its code uses another matrix (untied)"]  # fmt: skip
        return []
    untied = _np(theta.W_u) @ X + b
    if _close(logits, tied, tol) and not _close(logits, untied, tol):
        return ["the model's logits are W_eᵀ X (tied), but its weights hold a separate W_u, which "
                "the paper's run uses: the code ties what the weights untie"]  # fmt: skip
    if not _close(logits, untied, tol):
        return ["the model's logits are neither W_u X nor W_eᵀ X of its own last X: another "
                "unembedding"]  # fmt: skip
    return []
