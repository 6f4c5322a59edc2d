"""Evidence for the embedding, the projections' input, the MLP and the logits: each candidate
departure rebuilt in float64 numpy from the model's captured values and θ, and compared."""

from __future__ import annotations

import math

import numpy as np
import torch

from .base import close, f64

__all__ = ["embedding_evidence", "projection_evidence", "mlp_evidence", "output_evidence"]


def embedding_evidence(ctx):
    X = ctx.model(ctx.key)
    family = ctx.family
    x = family.z if ctx.key.line == 3 and family.algorithm == 8 else family.x
    W_e, W_p = f64(family.theta.W_e), f64(getattr(family.theta, "W_p", None))
    tokens, ell = W_e[:, x], X.shape[1]
    positions = W_p[:, :ell] if W_p is not None else 0.0
    found = []
    ctx.ran.add("scaled-embedding")
    if close(X, math.sqrt(W_e.shape[0]) * tokens + positions, ctx.tol):
        ctx.hit.add("scaled-embedding")
        what = " + W_p[:, t]" if W_p is not None else ""
        found.append(f"the model's X is √d_e · W_e[:, x[t]]{what}: a scaled token embedding")
    if W_p is None:  # Llama: no W_p (RoPE inside the attention)
        return found
    ctx.ran.update({"positions", "no-positions"})
    for k in (1, 2):
        if k + ell <= W_p.shape[1] and close(X, tokens + W_p[:, k : k + ell], ctx.tol):
            ctx.hit.add("positions")
            found.append(
                f"the model's X is W_e[:, x[t]] + W_p[:, t + {k}]: positions offset by "
                f"{k} (the paper's first position is column 0 of W_p here)"
            )
    if close(X, tokens, ctx.tol):
        ctx.hit.add("no-positions")
        found.append("the model's X is W_e[:, x[t]] alone: no positional embedding is added")
    return found


def projection_evidence(ctx):
    k = ctx.key
    expected = ctx.family.attention_input(k.site, k.l, ctx.paper)
    got = ctx.extra.get(("attention input", k.site, k.l), (None, None))[0]
    if expected is None or expected[1] is None or got is None:
        return []
    read, value = expected
    ctx.ran.add("projection-input")
    if close(got, value, ctx.tol):
        return []
    ctx.hit.add("projection-input")
    return [
        f"the model's attention reads another input than the paper's {read} (max abs "
        f"difference {np.abs(got - value).max():.3g}): layer-norm placement, or a departure "
        "upstream"
    ]


ACTIVATIONS = {
    "the exact (erf) GELU": lambda t: torch.nn.functional.gelu(t),
    "the tanh GELU (gelu_new)": lambda t: torch.nn.functional.gelu(t, approximate="tanh"),
    "ReLU": torch.relu,
    "SiLU": torch.nn.functional.silu,
}


def mlp_evidence(ctx):
    k, family = ctx.key, ctx.family
    site = k.line if k.l is None else k.site
    found = []
    expected = family.mlp_input(site, k.l, ctx.paper)
    got, out = ctx.extra.get(("mlp input", site, k.l), (None, None))
    if expected is not None and expected[1] is not None and got is not None:
        ctx.ran.add("mlp-input")
        read, value = expected
        if not close(got, value, ctx.tol):
            ctx.hit.add("mlp-input")
            found.append(
                f"the model's MLP reads another input than the paper's {read} (max abs "
                f"difference {np.abs(got - value).max():.3g}): layer-norm placement"
            )
    found += _activation(ctx, site)
    layers = getattr(family.theta, "layers", None)
    if k.l is not None and layers is not None and hasattr(layers[k.l - 1], "W_gate"):
        found += _gate_up(ctx, got, out)
    return found


def _activation(ctx, site):
    a_in, a_out = ctx.extra.get(("activation", site, ctx.key.l), (None, None))
    if a_in is None or a_out is None:
        return []
    ctx.ran.add("activation")
    t = torch.as_tensor(f64(a_in))
    paper_name = ctx.family.activation_name()
    for name, f in ACTIVATIONS.items():
        if close(f64(a_out), f(t).numpy(), ctx.tol):
            if name == paper_name:
                return []
            ctx.hit.add("activation")
            return [
                f"the model's MLP applies {name}; its configuration (and the paper's run) "
                f"says {paper_name}"
            ]
    ctx.hit.add("activation")
    return [f"the model's MLP activation is none of {', '.join(ACTIVATIONS)}"]


def _gate_up(ctx, X, out):
    """SwiGLU: W_down (silu(W_gate X) ⊙ W_up X) against gate and up swapped."""
    if X is None or out is None:
        return []
    layer = ctx.family.theta.layers[ctx.key.l - 1]
    gate, up, down = (f64(getattr(layer, n)) for n in ("W_gate", "W_up", "W_down"))
    silu = torch.nn.functional.silu
    ctx.ran.add("gate-up")
    swapped = down @ (silu(torch.as_tensor(up @ X)).numpy() * (gate @ X))
    paper = down @ (silu(torch.as_tensor(gate @ X)).numpy() * (up @ X))
    if close(out, paper, ctx.tol) or not close(out, swapped, ctx.tol):
        return []
    ctx.hit.add("gate-up")
    return [
        "the model's MLP computes W_down (silu(W_up X̃) ⊙ W_gate X̃): the gate and up "
        "projections are swapped"
    ]


def output_evidence(ctx):
    X, logits = (f64(a) for a in ctx.extra.get(("logits", ctx.key.site, None), (None, None)))
    if X is None or logits is None:
        return []
    theta, family = ctx.family.theta, ctx.family
    b_u = family.logit_bias()
    b = 0.0 if b_u is None else f64(b_u)[:, None]
    tied = f64(theta.W_e).T @ X + b
    own = tied if theta.W_u is None else f64(theta.W_u) @ X + b
    other = None if theta.W_u is None else tied
    ctx.ran.update({"tied", "temperature", "softcap", "logit-shift"})
    if close(logits, own, ctx.tol):
        return [
            "the model's logits are W_u X of its own last X: the difference comes from "
            "the X it reads (the rows above)"
        ]
    if other is not None and close(logits, other, ctx.tol):
        ctx.hit.add("tied")
        return [
            "the model's logits are W_eᵀ X (tied), but its weights hold a separate W_u, which "
            "the paper's run uses: the code ties what the weights untie"
        ]
    return _logit_forms(ctx, logits, own, theta.W_u is None)


def _logit_forms(ctx, logits, own, tied):
    c = float((logits * own).sum() / (own * own).sum())
    if c > 0 and close(logits, c * own, ctx.tol):
        ctx.hit.add("temperature")
        return [
            f"the model's logits are {c:.4g} × W_u X: divided by a temperature τ = "
            f"{1 / c:.4g} (or scaled) before the softmax"
        ]
    shift = logits - own
    if close(shift, np.broadcast_to(shift[:1], shift.shape), ctx.tol):
        ctx.hit.add("logit-shift")
        return [
            "the model's logits are W_u X plus a constant per token: the same softmax, "
            "another normalisation (a log-softmax, or a per-token shift)"
        ]
    for cap in (30.0, 50.0, 10.0):
        if close(logits, cap * np.tanh(own / cap), ctx.tol):
            ctx.hit.add("softcap")
            return [f"the model's logits are {cap:g} · tanh(W_u X / {cap:g}): soft-capped"]
    matrix = "W_eᵀ" if tied else "W_u"
    return [
        f"the model's logits are not {matrix} X of its own last X, nor a multiple of it, "
        "nor it shifted per token, nor soft-capped: its code computes them from another "
        + ("matrix than the tied W_e (untied)" if tied else "matrix than W_u")
    ]
