"""A one-line summary of a recorded value, shared by ``Trace.table`` and the trace page."""

from __future__ import annotations

import math

import numpy as np


def fmt(x: float) -> str:
    """A float in 4 significant digits; inf and nan as Python prints them."""
    if not math.isfinite(x):
        return str(x)
    return f"{x:.4g}"


def summary(value) -> str:
    """A one-line description of a value: a scalar, a few entries, or statistics."""
    if value is None:
        return "—"
    if isinstance(value, bool | int | np.integer | np.bool_):
        return str(value)
    if isinstance(value, float | np.floating):
        return fmt(float(value))
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        a = np.asarray(value)
        if a.size == 0:
            return "empty"
        if a.ndim == 0:
            return summary(a.item())
        if a.dtype == bool:
            return f"{int(a.sum())} of {a.size} true"
        if a.size <= 6:
            return "[" + ", ".join(summary(v) for v in a.ravel().tolist()) + "]"
        if np.issubdtype(a.dtype, np.integer):
            return "[" + ", ".join(map(str, a.ravel()[:6].tolist())) + ", …]"
        a = a.astype(np.float64)
        finite = a[np.isfinite(a)]
        if finite.size == 0:
            return "no finite entries"
        return (
            f"mean {fmt(finite.mean())}, std {fmt(finite.std())}, "
            f"min {fmt(a.min())}, max {fmt(a.max())}"
        )
    if isinstance(value, tuple | list):
        return f"{type(value).__name__} of {len(value)}"
    return type(value).__name__
