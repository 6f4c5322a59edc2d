"""Likely causes, per kind of line and per family: each cause applies to a family only if the
family has what it names (RoPE, grouped key/value sets, RMSnorm, a gated MLP, learned positions,
biases), and each names the evidence check that tests it; a cause whose check ran and found
nothing is listed as ruled out, not as likely."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

__all__ = ["Cause", "CAUSES", "causes_for"]


class Cause(NamedTuple):
    text: str
    check: str | None = None  # the evidence check that tests it (None: no check does)
    applies: Callable = lambda family: True


def _rms(f):
    return f.rms


def _ln(f):
    return not f.rms


def _rope(f):
    return getattr(f, "rope", False)


def _gqa(f):
    return bool(f.G) and f.G < f.H


def _positions(f):
    return getattr(f.theta, "W_p", None) is not None


def _gated(f):
    return hasattr(f.theta, "layers") and hasattr(f.theta.layers[0], "W_gate")


def _plain_mlp(f):
    return not _gated(f)


def _biases(f):
    return not f.rms


def _f64(f):
    return f.float64


def _scaled(f):
    return not _relative(f)  # T5 divides by no √d_attn (its W_q absorbs it)


def _relative(f):
    return hasattr(f.theta, "R_enc")  # a relative position bias (T5)


NORM = [
    Cause("ε: another value than the configuration says (1e-5, 1e-6, 1e-12), or ε outside "
          "the √", "eps"),
    Cause("layer-norm placement: Post-LN where Pre-LN belongs or the reverse (the norm reads "
          "another input)", "placement"),
    Cause("the norm missing (it returns its input)", "missing"),
    Cause("an unbiased variance (÷ (d_e − 1))", "unbiased"),
    Cause("RMSnorm where a layer norm belongs (m = β = 0)", "rms", _ln),
    Cause("γ and β swapped, or one of them missing", "gamma-beta", _ln),
    Cause("a layer norm (the mean subtracted) where RMSnorm belongs", "layer-norm", _rms),
    Cause("RMSnorm's weight applied as (1 + γ) (Gemma's convention) instead of γ",
          "gamma-plus-one", _rms),
    Cause("RMSnorm computed in float32 whatever the model's dtype (Hugging Face's cast)",
          "float32", _rms),
]  # fmt: skip

ATTENTION = [
    Cause("the attention scale: scores divided by d_attn (or not at all) instead of √d_attn",
          "scale", _scaled),
    Cause("the attention scale: scores divided by √d_attn, which T5's attention does not do",
          "scale", _relative),
    Cause("the relative position bias: buckets computed another way (bidirectional where "
          "causal, another max_distance or bucket count) or another head's row of R",
          None, _relative),
    Cause("the mask: Mask[t_z, t_x] transposed, off by one (a future token seen), or a causal "
          "mask where the paper has none", "mask"),
    Cause("the padding mask on the wrong axis (over the queries t_x instead of the keys t_z)",
          "padding", lambda f: getattr(f, "padded", False)),
    Cause("heads split in another order (strided instead of contiguous blocks of d_attn rows)",
          "strided", lambda f: not _rope(f) and not _gqa(f)),
    Cause("queries and keys swapped (scores Qᵀ K)", "swapped"),
    Cause("softmax over the wrong axis (over the queries t_x instead of the keys t_z)",
          "softmax-axis"),
    Cause("RoPE's base: another θ than the configuration's rope_theta", "rope-base", _rope),
    Cause("RoPE's scaling: positions divided by a factor (linear scaling) the configuration "
          "does not have", "rope-scaling", _rope),
    Cause("RoPE's position offset: queries and keys rotated by positions that do not match "
          "(a cache position off by one)", "rope-offset", _rope),
    Cause("keys cached before RoPE and rotated by the step's position when read",
          "rope-cache", lambda f: _rope(f) and hasattr(f, "full_paper")),
    Cause("key/value grouping order: query head h reading set (h − 1) mod G (tiled) instead of "
          "⌊(h − 1)·G/H⌋ (repeated per group)", "kv-order", _gqa),
]  # fmt: skip

CAUSES = {
    "embedding": [
        Cause("a position offset: positions counted from 1 (or 2, as OPT) instead of 0, or "
              "W_p[:, t + k]", "positions", _positions),
        Cause("no positional embedding, or a sinusoid where W_p is learned", "no-positions",
              _positions),
        Cause("a scaled token embedding (√d_e · W_e[:, x[t]], as Gemma)",
              "scaled-embedding"),
        Cause("extra embeddings (token types, an embedding layer norm)"),
        Cause("token ids mapped differently (another vocabulary, W_e read transposed)"),
    ],
    "norm": NORM,
    "final norm": [
        Cause("the final layer norm missing, applied twice, or placed before the last layer's "
              "MLP", "missing"),
        *NORM[:1], *NORM[3:],
    ],
    "projection": [
        Cause("a bias dropped or added (b_q, b_k, b_v)", "bias", _biases),
        Cause("q, k, v unpacked in another order from a fused projection, or a weight read "
              "transposed"),
        Cause("the projection reads another input: layer-norm placement (Pre-LN/Post-LN)",
              "projection-input"),
    ],
    "attention": ATTENTION,
    "heads": [
        Cause("heads concatenated in another order (line 3: Y = [Y^1; …; Y^H])"),
        Cause("the attention weights applied to the wrong values (V, or Vᵀ)"),
        *ATTENTION,
    ],
    "attention output": [
        Cause("W_o or b_o: the output projection's bias dropped or doubled, its weight "
              "transposed", "bias"),
        Cause("heads concatenated in another order"),
        *ATTENTION,
    ],
    "attention residual": [
        Cause("the residual adds the normalised X̃ instead of X (or nothing)"),
        Cause("layer-norm placement: the norm applied after the residual sum (Post-LN) in a "
              "Pre-LN model, or the reverse"),
        *ATTENTION,
    ],
    "mlp residual": [
        Cause("the GELU form: the tanh approximation (gelu_new) instead of the exact erf GELU, "
              "or the reverse; another activation (ReLU, SiLU)", "activation", _plain_mlp),
        Cause("an MLP bias dropped (b_mlp1, b_mlp2)", "bias", _biases),
        Cause("the MLP reads another input: layer-norm placement (Pre-LN/Post-LN)", "mlp-input"),
        Cause("SwiGLU's gate and up projections swapped (silu(W_up X̃) ⊙ W_gate X̃)", "gate-up",
              _gated),
        Cause("another gated activation (GELU instead of SiLU)", "activation", _gated),
    ],
    "head": [
        Cause("the GELU form of the head (W_f, b_f, then GELU)", "activation"),
        Cause("a bias dropped (b_f)", "bias"),
    ],
    "output": [
        Cause("the unembedding tied where it is untied (W_eᵀ instead of W_u) or the reverse",
              "tied"),
        Cause("logits divided by a temperature or scaled", "temperature"),
        Cause("soft-capped logits (c · tanh(W_u X / c))", "softcap"),
        Cause("a bias on the logits, or a log-softmax in their place", "logit-shift"),
        Cause("the final layer norm (line before) missing or different"),
    ],
}  # fmt: skip


def causes_for(family, kind, ran, hit):
    """(likely causes, causes ruled out by the checks that ran) for this family and kind."""
    likely, ruled_out = [], []
    for cause in CAUSES.get(kind, []):
        if not cause.applies(family):
            continue
        if cause.check is not None and cause.check in ran and cause.check not in hit:
            ruled_out.append(cause.text)
        else:
            likely.append(cause.text)
    return likely, ruled_out
