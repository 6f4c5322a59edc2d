"""What every check shares: the context of one departing line, float64 helpers, and the checks
that apply to any line (float32 rounding in a float64 run, a constant per-token offset)."""

from __future__ import annotations

import re

import numpy as np

__all__ = ["Context", "close", "f64", "offset_evidence", "merge_heads"]


class Context:
    """One departing line: the family, its key, the model's values (``exposed``: Key → (value,
    source); ``extra``: what the evidence reads), the paper's (Key → float64 array), the
    tolerance; ``ran`` and ``hit`` collect the names of the checks run and of those that found
    their cause (the likely causes are filtered by them)."""

    def __init__(self, family, key, exposed, extra, paper, tol):
        self.family, self.key, self.exposed, self.extra = family, key, exposed, extra
        self.paper, self.tol = paper, tol
        self.ran: set[str] = set()
        self.hit: set[str] = set()

    def model(self, key):
        found = self.exposed.get(key)
        return None if found is None else found[0]


def f64(a):
    return None if a is None else np.asarray(a, np.float64)


def close(a, b, tol):
    if a is None or b is None or np.shape(a) != np.shape(b):
        return False
    scale = max(1.0, float(np.abs(b).max())) if np.size(b) else 1.0
    return bool(float(np.abs(a - b).max()) <= tol * scale)


def offset_evidence(ctx, D):
    """A difference that is the same in every column is a vector added to (or missing from)
    every token: a bias."""
    if D.ndim != 2 or D.shape[1] < 2:
        return []
    ctx.ran.add("bias")
    column = D[:, :1]
    scale = max(1.0, float(np.abs(column).max()))
    if float(np.abs(D - column).max()) > ctx.tol * scale or float(np.abs(column).max()) <= ctx.tol:
        return []
    ctx.hit.add("bias")
    found = [
        f"model − paper is the same vector in every column (norm "
        f"{np.linalg.norm(column):.3g}): a bias added or dropped"
    ]
    for name, b in ctx.family.biases(ctx.key):
        b = f64(b)
        if b is None or b.shape != column[:, 0].shape:
            continue
        if np.allclose(column[:, 0], -b, rtol=1e-3, atol=ctx.tol * scale):
            found.append(f"it is −{name}: the model does not add {name}")
        elif np.allclose(column[:, 0], b, rtol=1e-3, atol=ctx.tol * scale):
            found.append(f"it is +{name}: the model adds {name} twice")
    return found


def merge_heads(found):
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
    return [
        f"head{'s' if len(heads[t]) > 1 else ''} {', '.join(heads[t])}: {t}" if t in heads else t
        for t in merged
    ]
