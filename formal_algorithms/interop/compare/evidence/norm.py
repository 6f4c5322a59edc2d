"""Evidence for a layer-norm line: which normalisation the model's module really computes on its
own input, in float64 numpy from the captured input and output and θ's γ, β."""

from __future__ import annotations

import numpy as np

from .base import close, f64

__all__ = ["layer_norm", "norm_evidence"]


def layer_norm(x, gamma, beta, eps, *, unbiased=False, rms=False, plus_one=False):
    """Algorithm 6 on every column (and the variants the evidence tries)."""
    m = 0.0 if rms else x.mean(axis=0, keepdims=True)
    v = ((x - m) ** 2).sum(axis=0, keepdims=True) / (x.shape[0] - (1 if unbiased else 0))
    y = (x - m) / np.sqrt(v + eps) * ((1.0 + gamma) if plus_one else gamma)[:, None]
    return y if beta is None else y + beta[:, None]


def norm_evidence(ctx):
    info = ctx.family.norm_of(ctx.key)
    k = ctx.key
    x_in, y_out = (f64(a) for a in ctx.extra.get(("norm", k.line, k.l), (None, None)))
    if info is None or x_in is None or y_out is None:
        return []
    gamma, beta, input_key, eps = info
    gamma, beta = f64(gamma), f64(beta)
    expected_in = ctx.paper.get(input_key)
    ctx.ran.add("placement")
    if expected_in is not None and not close(x_in, expected_in, ctx.tol):
        ctx.hit.add("placement")
        return [
            f"the model's norm reads another input than the paper's (max abs difference "
            f"{np.abs(x_in - expected_in).max():.3g}): it sits elsewhere in the layer (layer-norm "
            "placement, Pre-LN vs Post-LN), or what it reads was computed differently"
        ]
    ctx.ran.add("missing")
    if close(y_out, x_in, ctx.tol):
        ctx.hit.add("missing")
        return ["the model's norm returns its input unchanged: this layer norm is missing"]
    rms = ctx.family.rms
    return _which_norm(ctx, x_in, y_out, gamma, beta, eps, rms)


def _fit_eps(x_in, y_out, gamma, beta, rms):
    m = 0.0 if rms else x_in.mean(axis=0, keepdims=True)
    v = ((x_in - m) ** 2).mean(axis=0, keepdims=True)
    centred = y_out - beta[:, None]
    usable = np.abs(centred) > 1e-3 * np.abs(centred).max()
    s = np.where(usable, (x_in - m) * gamma[:, None] / np.where(usable, centred, 1.0), np.nan)
    return float(np.nanmedian(s**2 - v))


def _which_norm(ctx, x_in, y_out, gamma, beta, eps, rms):
    eps_fit = _fit_eps(x_in, y_out, gamma, beta, rms)
    name = "RMSnorm" if rms else "a layer norm"
    candidates = [
        ("eps", f"{name} with ε ≈ {eps_fit:.3g}, where the configuration (and the paper's run) "
         f"has ε = {eps:g}", layer_norm(x_in, gamma, beta, max(eps_fit, 0.0), rms=rms)),
        ("unbiased", f"{name} with the unbiased variance (÷ (d_e − 1))",
         layer_norm(x_in, gamma, beta, eps, unbiased=True, rms=rms)),
    ]  # fmt: skip
    if rms:
        candidates += [
            (
                "layer-norm",
                "a layer norm (the mean subtracted) where RMSnorm belongs",
                layer_norm(x_in, gamma, beta, eps),
            ),
            (
                "gamma-plus-one",
                "RMSnorm scaled by (1 + γ) instead of γ (Gemma's convention)",
                layer_norm(x_in, gamma, beta, eps, rms=True, plus_one=True),
            ),
        ]
    else:
        candidates += [
            (
                "rms",
                "RMSnorm (no mean subtracted, no β)",
                layer_norm(x_in, gamma, None, eps, rms=True),
            ),
            ("gamma-beta", "a layer norm with γ and β swapped", layer_norm(x_in, beta, gamma, eps)),
        ]
    if abs(eps_fit - eps) <= 0.01 * eps:  # the fit finds the configured ε: not a cause
        candidates = candidates[1:]
    for check, text, candidate in candidates:
        ctx.ran.add(check)
        if close(y_out, candidate, ctx.tol):
            ctx.hit.add(check)
            return [f"the model's norm computes {text}"]
    return []
