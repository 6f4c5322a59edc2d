"""Check that a record holds what its line names: the table :data:`~..paper.pseudocode.VALUES`
(and :data:`~..paper.pseudocode.PARTS`) says, for every pseudocode line, the symbol it produces,
its kind (a distribution per column, −∞ only on masked entries, integer token ids, …) and its shape
in the paper's orientation. :func:`problems` lists every record of a trace that disagrees.

Shapes are symbolic (``("d_attn", "ℓ_x")``): a symbol must stand for one size across the records of
one call of an algorithm (the records sharing a path up to their own line and their indices), so a
transposed ``S`` in cross-attention (``ℓ_z ≠ ℓ_x``) or a head axis left in a per-head value is
caught. A value one axis short of a matrix whose last axis is a length (``ℓ``, ``ℓ_x``) is one of
its columns, as in the paper's ``for t ∈ [ℓ]: X[:, t] ← …``.
"""

from __future__ import annotations

import jax
import numpy as np

from ..paper import pseudocode

#: How far a distribution's column sum may be from 1 (float32 runs included).
SUM_TOLERANCE = 1e-4


def problems(records) -> list[str]:
    """Every disagreement between the records and the table, one sentence each (empty: none)."""
    out, bound = [], {}
    for r in records:
        expected = _expected(r)
        where = f"{r.path} [{r.name}] ({r.source})"
        if expected is None:
            what = f"a part named {r.name!r}" if r.part else "a value"
            out.append(f"{where}: the table declares no such line or part ({what})")
            continue
        if r.value is None:  # abstract (inside a transformation the trace cannot see into)
            continue
        wrong = check_kind(expected.kind, r.value)
        if wrong:
            out.append(
                f"{where}: {expected.name} should be {pseudocode.KINDS[expected.kind]}; {wrong}"
            )
            continue
        if expected.shape is not None:
            # one call: the path down to the algorithm, at the record's indices (step i of
            # Algorithm 14 feeds a longer x than step i − 1)
            call = (r.path.rsplit(" › ", 1)[0], tuple(sorted(r.indices.items(), key=str)))
            shape = np.shape(_array(r.value))
            wrong = _check_shape(expected.shape, shape, bound.setdefault(call, {}))
            if wrong:
                out.append(f"{where}: {expected.name} should have shape {expected.shape}; {wrong}")
    return out


def _expected(r):
    """The value a record should hold: its part's, or that of the last of its lines that names
    one (a statement ``# lines 4-6`` over a loop ends on ``end``, which names nothing)."""
    if r.part:
        return pseudocode.value(r.algorithm, r.line, r.name)
    for line in reversed(r.lines):
        found = pseudocode.value(r.algorithm, line)
        if found is not None:
            return found
    return None


def check_kind(kind: str, value) -> str | None:
    """``None`` if ``value`` is of ``kind`` (:data:`~..paper.pseudocode.KINDS`), else why not."""
    if kind == "params":
        leaves = jax.tree.leaves(value)
        if not leaves or not all(hasattr(a, "shape") for a in leaves):
            return f"got {type(value).__name__}"
        bad = [a for a in leaves if _is_float(a) and not np.isfinite(np.asarray(a)).all()]
        return "a leaf is not finite" if bad else None
    a = _array(value)
    if a is None:
        return f"got {type(value).__name__}"
    if kind == "mask":
        return None if a.dtype == np.bool_ else f"got dtype {a.dtype}"
    if kind in ("token", "tokens", "length", "index"):
        if not np.issubdtype(a.dtype, np.integer):
            return f"got dtype {a.dtype}"
        if a.ndim != (1 if kind == "tokens" else 0):
            return f"got shape {a.shape}"
        low = 1 if kind == "index" else 0
        return None if np.all(a >= low) else f"got {a.min()} < {low}"
    if not np.issubdtype(a.dtype, np.floating):
        return f"got dtype {a.dtype}"
    a = a.astype(np.float64)
    if kind == "scalar":
        return None if a.ndim == 0 and np.isfinite(a) else f"got shape {a.shape}, value {a}"
    if kind == "masked":
        return "holds NaN or +∞" if np.isnan(a).any() or np.isposinf(a).any() else None
    if not np.isfinite(a).all():
        return "holds NaN or ±∞"
    if kind == "log_distribution":
        gap = np.abs(np.log(np.exp(a).sum(axis=0))).max()
        return None if (a <= 0).all() and gap <= SUM_TOLERANCE else f"exp sums to 1 ± {gap:.3g}"
    if kind == "distribution":
        if (a < 0).any():
            return f"has a negative entry {a.min():.3g}"
        gap = np.abs(a.sum(axis=0) - 1).max()
        return None if gap <= SUM_TOLERANCE else f"a column sums to 1 ± {gap:.3g}"
    return None


def _check_shape(symbols, shape, bound) -> str | None:
    if len(shape) == len(symbols) - 1 and symbols[-1].startswith("ℓ"):
        symbols = symbols[:-1]  # one column of it: the paper's `for t ∈ [ℓ]: X[:, t] ← …`
    if len(symbols) != len(shape):
        return f"got {shape}"
    for symbol, size in zip(symbols, shape, strict=True):
        if bound.setdefault(symbol, size) != size:
            return f"got {shape}, but {symbol} = {bound[symbol]} in this call"
    return None


def _array(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | np.number):
        return np.asarray(value)
    if isinstance(value, list) and all(isinstance(v, int | np.integer) for v in value):
        return np.asarray(value, dtype=np.int64)
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return np.asarray(value)
    return None


def _is_float(a) -> bool:
    return np.issubdtype(np.asarray(a).dtype, np.inexact)
