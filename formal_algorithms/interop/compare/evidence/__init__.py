"""Evidence: checks on the captured values that tell the likely causes of a departing line apart.
Each is computed in float64 numpy from the model's own intermediates and θ, independently of the
paper's run, and says only what it found (:mod:`.norm`, :mod:`.attention`, :mod:`.lines`)."""

from __future__ import annotations

import numpy as np

from .attention import attention_evidence
from .base import Context, merge_heads, offset_evidence
from .lines import embedding_evidence, mlp_evidence, output_evidence, projection_evidence
from .norm import norm_evidence

__all__ = ["Context", "explain"]

CHECKS = {
    "norm": norm_evidence,
    "final norm": norm_evidence,
    "embedding": embedding_evidence,
    "projection": projection_evidence,
    "attention": attention_evidence,
    "heads": attention_evidence,
    "attention output": attention_evidence,
    "attention residual": attention_evidence,
    "mlp residual": mlp_evidence,
    "head": mlp_evidence,
    "output": output_evidence,
}


def explain(ctx: Context, kind: str) -> list[str]:
    """The evidence sentences for the departing line ``ctx.key`` of this kind."""
    model_value, expected = ctx.model(ctx.key), ctx.paper[ctx.key]
    difference = model_value - expected if model_value.shape == expected.shape else None
    scale = max(1.0, float(np.abs(expected).max()))
    if difference is not None and ctx.tol < 1e-9:
        ctx.ran.add("float32")
        size = float(np.abs(difference).max())
        if 0 < size < 5e-7 * scale:
            ctx.hit.add("float32")
            return [
                f"the difference ({size / scale:.2g} of the line's scale) is of float32 "
                "rounding size in a float64 run: the model computes this line (or one it "
                "reads) in float32"
            ]
    found = []
    check = CHECKS.get(kind)
    if check is not None:
        inner = Context(ctx.family, ctx.key, ctx.exposed, ctx.extra, ctx.paper, max(ctx.tol, 1e-6))
        found += check(inner)
        ctx.ran |= inner.ran
        ctx.hit |= inner.hit
    if difference is not None:
        found += offset_evidence(ctx, difference)
    if not found:
        found.append(
            "none of the checks for this kind of line explains the difference; look "
            "at the rows just above it and at the model's code for this line"
        )
    return merge_heads(found)
