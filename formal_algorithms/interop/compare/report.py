"""The report of a comparison: one :class:`Row` per paper line the model exposes, the verdict,
the likely causes and the evidence; the tolerance and why it is what it is."""

from __future__ import annotations

import dataclasses
import json
import math
import textwrap

__all__ = ["Report", "Row", "TOLERANCES", "tolerance_for", "tolerance_note"]

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
        "1e-5) needs a float64 run."
    )


@dataclasses.dataclass
class Row:
    """One paper line whose value the model exposes."""

    path: str  # a label built from the key, e.g. "Algorithm 10 › line 6 (l=1) › Algorithm 4 › …"
    pseudocode: str
    algorithm: int | str
    line: int | str
    indices: dict
    shape: tuple
    max_abs: float
    max_rel: float
    bound: float  # max_abs must not exceed this
    source: str  # where the model's value was read: module and hook
    kind: str  # the kind of line, which selects the likely causes and the evidence
    top_line: int = 0  # the line of the top algorithm (10, 9 or 8) the record is inside
    tag: str = ""  # the part of the line: "A" (Algorithm 4's weights), "logits"; "" its value
    column: int | None = None  # the first token position t (1-based column) beyond the bound
    key: tuple = dataclasses.field(default=(), repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.max_abs <= self.bound


@dataclasses.dataclass
class Report:
    """The result of :func:`~formal_algorithms.interop.compare`: :meth:`table`, :meth:`to_dict`,
    :meth:`to_json`."""

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
    ruled_out: list = dataclasses.field(default_factory=list)  # causes the checks excluded
    known: list = dataclasses.field(default_factory=list)  # known, documented departures

    @property
    def first(self) -> Row | None:
        """The first row beyond tolerance, in the paper's execution order, or ``None``."""
        return next((row for row in self.rows if not row.ok), None)

    @property
    def departs(self) -> bool:
        return self.first is not None

    @property
    def departing(self) -> list:
        """Every row beyond tolerance, in execution order."""
        return [row for row in self.rows if not row.ok]

    def table(self, *, all_rows: bool = True, departing: bool = False) -> str:
        """The rows as text, then the verdict, the likely causes and the evidence.
        ``all_rows=False``: only up to the first departing row and a few after it;
        ``departing=True``: every departing row (and only those), in execution order."""
        rows = self._shown(all_rows, departing)
        lines = _rows_text(rows)
        if not rows:
            lines.append(_empty_note(self, departing))
        if self.not_exposed:
            lines.append(
                f"({len(self.not_exposed)} traced values have no counterpart among the "
                "model's modules, e.g. Algorithm 4's S: report.not_exposed)"
            )
        elif rows and len(rows) < len(self.rows) and not departing:
            lines.append(f"... {len(self.rows) - len(rows)} more rows (all_rows=True)")
        if rows:
            lines.append("")
        note = f"tolerance: {self.tolerance:.2g} × max(1, max |paper|) per line; "
        lines += textwrap.wrap(note + self.tolerance_note, 100)
        for text in self.known:
            lines += textwrap.wrap("known departure: " + text, 100, subsequent_indent="  ")
        lines += self._verdict()
        return "\n".join(lines)

    def _shown(self, all_rows, departing):
        if departing:
            return self.departing
        if all_rows:
            return self.rows
        return [] if self.first is None else self.rows[: self.rows.index(self.first) + 4]

    def _verdict(self) -> list:
        first, lines = self.first, []
        if first is None:
            worst = max(self.rows, key=lambda r: r.max_rel, default=None)
            where = (
                f" (largest max rel err {worst.max_rel:.2e}, at {worst.path})." if worst else "."
            )
            return textwrap.wrap(
                f"EQUAL: all {len(self.rows)} lines the model exposes agree with {self.algorithm} "
                "within tolerance" + where,
                100,
                subsequent_indent="  ",
            )
        column = "" if first.column is None else f", first at token position t = {first.column}"
        lines += textwrap.wrap(
            f"DEPARTS at {first.path}: {first.pseudocode}  (max abs err {first.max_abs:.3e}, "
            f"tolerance {first.bound:.3e}{column}; model value from {first.source})",
            100,
            subsequent_indent="  ",
        )
        n = len(self.departing)
        lines.append(f"{n} of {len(self.rows)} rows depart (departing=True lists them)")
        for title, items, mark in (
            ("likely causes for this kind of line:", self.causes, "-"),
            ("ruled out by the checks below:", self.ruled_out, "-"),
            ("evidence:", self.evidence, "*"),
        ):
            if items:
                lines.append(title)
                for c in items:
                    lines += textwrap.wrap(
                        c, 100, initial_indent=f"  {mark} ", subsequent_indent="    "
                    )
        return lines

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
            "ruled_out": list(self.ruled_out),
            "evidence": list(self.evidence),
            "known_departures": list(self.known),
            "rows": [_row_dict(r) for r in self.rows],
            "not_exposed": list(self.not_exposed),
        }

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **{"indent": 1, "ensure_ascii": False, **kwargs})

    def __str__(self) -> str:
        return self.table()


CODE_WIDTH = 44


def _rows_text(rows) -> list:
    if not rows:
        return []
    width = max(len(r.path) for r in rows)
    lines = [
        f"{'path':<{width}}  {'pseudocode':<{CODE_WIDTH}}  {'max abs err':>11}  {'max rel err':>11}"
    ]
    for r in rows:
        code = r.pseudocode if len(r.pseudocode) <= CODE_WIDTH else r.pseudocode[:41] + "..."
        mark = "" if r.ok else f"  <-- beyond tolerance from t = {r.column}"
        lines.append(
            f"{r.path:<{width}}  {code:<{CODE_WIDTH}}  {r.max_abs:11.3e}  {r.max_rel:11.3e}{mark}"
        )
    return lines


def _empty_note(report, departing) -> str:
    if departing:
        return f"(no row of {len(report.rows)} departs)"
    return f"({len(report.rows)} rows, all within tolerance: all_rows=True prints them)"


def _row_dict(r: Row) -> dict:
    return {
        "path": r.path,
        "pseudocode": r.pseudocode,
        "algorithm": r.algorithm,
        "line": r.line,
        "indices": dict(r.indices),
        "shape": list(r.shape),
        "max_abs_err": _num(r.max_abs),
        "max_rel_err": _num(r.max_rel),
        "bound": r.bound,
        "ok": r.ok,
        "kind": r.kind,
        "top_line": r.top_line,
        "tag": r.tag,
        "first_column": r.column,
        "model_value_from": r.source,
    }


def _num(v: float):
    return v if math.isfinite(v) else str(v)
