"""Alignment: the paper's trace records and the model's captured values meet on a structured
:class:`Key`, built from the records' fields (algorithm, line, indices, the name of a part),
never from their display paths.

A record nested inside the top algorithm (Algorithm 4 inside line 6 of Algorithm 10) belongs to
the line of the top algorithm whose record comes next: a statement is recorded when it has run,
after everything it called. That line is the key's ``site``; it tells apart, e.g., Algorithm 8's
encoder self-attention (line 5), decoder self-attention (14) and cross-attention (16), and it
supplies the layer ``l`` to a nested record that carries none.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .report import Row

__all__ = ["Key", "key", "paper_values", "label", "align"]


class Key(NamedTuple):
    """Where a value belongs: the top algorithm, its line that contains the value (``site``),
    the algorithm and line that compute it, the part of the line ("" for its own value, "A"
    for Algorithm 4's weights, "logits" before the last softmax, "P" its result), the indices."""

    top: int
    site: int
    algorithm: int | str
    line: int
    part: str
    indices: tuple

    @property
    def idx(self) -> dict:
        return dict(self.indices)

    @property
    def l(self):  # noqa: E743 (the paper's layer index)
        return self.idx.get("l")

    @property
    def h(self):
        return self.idx.get("h")


def key(top, site, algorithm, line, part="", **indices) -> Key:
    return Key(top, site, algorithm, line, part, tuple(sorted(indices.items())))


def paper_values(records, top: int, final_line: int, layer: int | None = None):
    """``[(Key, record, the site's lines)]`` in execution order, one per line value (the first
    record of a key wins: ``lines 5-8`` after ``line 8``); a second record of Q or K (RoPE's
    rotation) is kept under the part ``"rotated"``."""
    out, seen, site, site_indices, site_lines = [], set(), None, {}, ()
    for rec in reversed(records):
        if rec.algorithm in (top, layer):  # `layer`: the algorithm whose layer the top one runs
            site, site_indices, site_lines = rec.line, rec.indices, rec.lines
        if not hasattr(rec.value, "shape") or np.ndim(rec.value) == 0 or site is None:
            continue
        indices = {**{k: v for k, v in site_indices.items() if k == "l"}, **rec.indices}
        part = rec.name if rec.part else ""
        if rec.algorithm == top and rec.line == final_line and not rec.part:
            part = "P"
        at = rec.line if rec.algorithm in (top, layer) else site
        out.append((key(top, at, rec.algorithm, rec.line, part, **indices), rec, site_lines))
    out.reverse()
    result = []
    for k, rec, lines in out:
        if k in seen:
            if k.algorithm == 4 and k.line in (1, 2) and not k.part:
                result.append((k._replace(part="rotated"), rec, lines))
            continue
        seen.add(k)
        result.append((k, rec, lines))
    return result


def label(k: Key, site_lines=()) -> str:
    """A row's label, from the key: ``Algorithm 10 › line 6 (l=1) › Algorithm 4 › line 6 (h=1)
    [weights A]``."""
    idx = k.idx
    outer = {n: v for n, v in idx.items() if n == "l"}
    inner = {n: v for n, v in idx.items() if n != "l"}
    lines = tuple(site_lines) or (k.site,)
    span = f"lines {lines[0]}-{lines[-1]}" if len(lines) > 1 else f"line {lines[0]}"
    site = _with(span, outer)
    text = f"Algorithm {k.top} › {site}"
    if k.algorithm != k.top:
        alg = k.algorithm if isinstance(k.algorithm, str) else f"Algorithm {k.algorithm}"
        text += f" › {alg} › {_with(f'line {k.line}', inner)}"
    part = {"A": " [weights A]", "logits": " [logits W_u X]", "P": " [P]"}.get(k.part, "")
    return text + part


def _with(text, indices):
    return f"{text} ({', '.join(f'{n}={v}' for n, v in indices.items())})" if indices else text


def align(paper, exposed, tol, kind_of):
    """Rows for every paper key the model exposes, in execution order; the labels of the others.
    ``paper``: [(Key, record, site lines)]; ``exposed``: Key → (value, source); ``kind_of``."""
    rows, not_exposed = [], []
    for k, rec, lines in paper:
        if k.part == "rotated":
            continue
        if k not in exposed:
            not_exposed.append(label(k, lines))
            continue
        value, source = exposed[k]
        expected = np.asarray(rec.value, np.float64)
        rows.append(_row(rec, k, lines, value, expected, tol, source, kind_of(k)))
    return rows, not_exposed


def _row(rec, k, lines, value, expected, tol, source, kind) -> Row:
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    bound = tol * max(1.0, scale)
    column = None
    if value.shape != expected.shape:
        max_abs = max_rel = math.inf
    else:
        diff = np.nan_to_num(np.abs(value - expected), nan=np.inf)
        max_abs = float(diff.max()) if diff.size else 0.0
        max_rel = max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf)
        column = first_column(diff, bound)
    return Row(
        path=label(k, lines),
        pseudocode=str(rec.pseudocode),
        algorithm=rec.algorithm,
        line=rec.line,
        indices=k.idx,
        shape=tuple(expected.shape),
        max_abs=max_abs,
        max_rel=max_rel,
        bound=bound,
        source=source,
        kind=kind,
        top_line=k.site,
        tag=k.part,
        column=column,
        key=k,
    )


def first_column(diff, bound):
    """The first token position t (1-based; the columns of the paper's orientation) where the
    difference exceeds ``bound``; ``None`` if none does."""
    if diff.ndim != 2:
        return None
    beyond = np.flatnonzero(diff.max(axis=0) > bound)
    return int(beyond[0]) + 1 if beyond.size else None
