"""One self-contained page of a :class:`~formal_algorithms.trace.Trace` (``trace.to_html(path)``).

For each algorithm the trace recorded (in the order it first ran), a section with the paper's
title and every pseudocode line of it (:mod:`formal_algorithms.paper.pseudocode`), each beside the
code statements that implement it (their source, function and file:line) and the values they took:
matrices as heatmaps, vectors as small line plots (token ids as tables), scalars as text. Values
are nested by the paper's loop indices (layer ``l``, head ``h``, …) in collapsible ``<details>``.

Nothing is fetched at view time: CSS and JavaScript are inline, vectors are inline SVG and
heatmaps are canvases drawn by the inline script from the page's embedded JSON (one entry per
distinct matrix, 8 bits per cell: a heatmap shows no more; the tooltip's value is read back from
those 8 bits, hence "≈"). To keep the page small, a matrix is drawn up to ``max_side`` rows and
columns (the rest is summarised) and the page draws at most ``max_cells`` cells (and vector
points) in all.

Stable hooks for tests and scripts: ``section.algorithm[data-algorithm="10"]`` (id ``alg-10``),
``.line[data-algorithm="10"][data-line="6"]`` (id ``alg-10-line-6``), ``.record`` elements with
``data-algorithm``, ``data-line``, ``data-name`` and one ``data-<index>`` per loop index
(``data-l="2" data-h="1"``), ``canvas.heatmap`` (``data-drawn="true"`` once drawn) and, on
``<body>``, ``data-heatmaps`` (how many were drawn) and ``window.faErrors`` (script errors).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import pathlib
import re

import numpy as np

from ..paper import pseudocode
from .values import fmt, summary

__all__ = ["write_html"]

_PACKAGE_ROOT = pathlib.Path(__file__).resolve().parent.parent.parent

#: How the paper names the loop indices in the page's group headings.
_INDEX_NAMES = {"l": "layer", "h": "head", "i": "iteration", "n": "example", "b": "batch"}


def write_html(
    trace,
    path,
    *,
    title: str | None = None,
    tokens: list[str] | None = None,
    max_side: int = 128,
    max_cells: int = 1_500_000,
) -> pathlib.Path:
    """Write the page of ``trace`` to ``path``; returns the path.

    ``title``: the page's heading (default: the outermost algorithm's). ``tokens``: labels of the
    input's tokens (shown in heatmap tooltips along an axis of that length). ``max_side``: matrices
    are drawn up to this many rows and columns; ``max_cells``: cells drawn on the whole page.
    """
    if max_side < 1 or max_cells < 0:
        raise ValueError(
            f"write_html: max_side must be >= 1 and max_cells >= 0, got {max_side}, {max_cells}"
        )
    page = _Page(trace, title, tokens, max_side, max_cells)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page.render(), encoding="utf-8")
    return path


def _esc(text) -> str:
    return html.escape(str(text), quote=True)


def _slug(algorithm) -> str:
    return re.sub(r"[^0-9a-z]+", "-", str(algorithm).lower()).strip("-")


def _alg_label(algorithm) -> str:
    return pseudocode.label(algorithm)


def _relative(source: str) -> str:
    """``/…/formal_algorithms/paper/attention.py:110`` -> ``formal_algorithms/paper/attention.py:110``."""
    file, _, line = source.rpartition(":")
    try:
        file = str(pathlib.Path(file).resolve().relative_to(_PACKAGE_ROOT))
    except ValueError:
        file = pathlib.Path(file).name
    return f"{file}:{line}"


class _Page:
    def __init__(self, trace, title, tokens, max_side, max_cells):
        self.summary = summary
        self.trace = trace
        self.title = title
        self.tokens = [str(t) for t in tokens] if tokens is not None else None
        self.max_side = max_side
        self.cells_left = max_cells
        self.data: dict[str, dict] = {}  # heatmap key -> its quantised cells
        self.keys: dict[bytes, str] = {}  # digest -> key: equal matrices are stored once
        self.n_records = 0

    # ------------------------------------------------------------------------------- the page

    def render(self) -> str:
        records = list(self.trace.records)
        algorithms = list(dict.fromkeys(r.algorithm for r in records))
        title = self.title or (
            f"Trace of {_alg_label(algorithms[0])}: {pseudocode.TITLES.get(algorithms[0], '')}"
            if algorithms
            else "Trace (nothing recorded)"
        )
        sections = [self._section(a, [r for r in records if r.algorithm == a]) for a in algorithms]
        toc = "".join(
            f'<li><a href="#alg-{_slug(a)}">{_esc(_alg_label(a))}</a> '
            f"{_esc(pseudocode.TITLES.get(a, ''))}</li>"
            for a in algorithms
        )
        result = self.trace.result
        shape = np.shape(result) if hasattr(result, "shape") else None
        meta = (
            f"{len(records)} records of {len(algorithms)} algorithm"
            f"{'s' if len(algorithms) != 1 else ''}; result: "
            f"{'shape ' + str(tuple(shape)) + ', ' if shape is not None else ''}"
            f"{self.summary(result)}"
        )
        data = json.dumps({"tokens": self.tokens, "matrices": self.data}, separators=(",", ":"))
        data = data.replace("</", "<\\/")  # never close the script element early
        return _TEMPLATE.format(
            title=_esc(title),
            css=_CSS,
            meta=_esc(meta),
            toc=toc,
            sections="\n".join(sections),
            data=data,
            script=_SCRIPT,
        )

    def _section(self, algorithm, records) -> str:
        table = pseudocode.PSEUDOCODE.get(algorithm, {})
        lines = sorted(set(table) | {n for r in records for n in r.lines})
        # statements by their source (one row per code statement), in execution order
        statements: dict[str, list] = {}
        for r in records:
            statements.setdefault(r.source, []).append(r)
        rows = []
        for n in lines:
            here = [s for s in statements.values() if n in s[0].lines]
            rows.append(self._line(algorithm, n, table.get(n, ""), here))
        slug = _slug(algorithm)
        return (
            f'<section class="algorithm" id="alg-{slug}" data-algorithm="{_esc(algorithm)}">'
            f"<h2>{_esc(_alg_label(algorithm))} <span class=title>"
            f"{_esc(pseudocode.TITLES.get(algorithm, ''))}</span></h2>"
            f'<div class="lines">{"".join(rows)}</div></section>'
        )

    def _line(self, algorithm, n, text, statements) -> str:
        slug = _slug(algorithm)
        recorded = any(n in s[0].lines for s in statements)
        cells = []
        for stmt in statements:
            first = stmt[0]
            where = (
                f"<div class=where><span class=fn>{_esc(first.function)}</span> · "
                f"<span class=src>{_esc(_relative(first.source))}</span> · "
                f"{len(stmt)} record{'s' if len(stmt) != 1 else ''}</div>"
            )
            code = f"<pre class=code>{_esc(first.code)}</pre>"
            own = [r for r in stmt if r.line == n]
            if own:
                body = self._nest(own, ())
            else:
                body = (
                    f"<div class=note>one statement with line{'s' if len(first.lines) > 1 else ''}"
                    f" {_esc(', '.join(map(str, first.lines)))}: its values are under "
                    f'<a href="#alg-{slug}-line-{first.line}">line {first.line}</a></div>'
                )
            cells.append(f'<div class="statement">{code}{where}{body}</div>')
        if not cells:
            cells.append("<div class=note>not recorded in this run</div>")
        return (
            f'<div class="line" id="alg-{slug}-line-{n}" data-algorithm="{_esc(algorithm)}" '
            f'data-line="{n}" data-recorded="{str(recorded).lower()}">'
            f'<div class="pseudo"><span class=no>{n}</span>'
            f"<span class=text>{_esc(text) or '&nbsp;'}</span></div>"
            f'<div class="impl">{"".join(cells)}</div></div>'
        )

    # ------------------------------------------------------------------ nesting by loop indices

    def _nest(self, records, used) -> str:
        key = next((k for r in records for k in r.indices if k not in used), None)
        if key is None:
            return "".join(self._record(r) for r in records)
        out, groups = [], {}
        for r in records:
            if key in r.indices:
                groups.setdefault(r.indices[key], []).append(r)
            else:
                out.append(self._record(r))  # not inside this loop: shown before its groups
        if len(records) == 1 and not out:
            return self._nest(records, (*used, key))
        for k, (value, group) in enumerate(groups.items()):
            name = _INDEX_NAMES.get(key, "")
            label = f"{name} {key} = {value}" if name else f"{key} = {value}"
            out.append(
                f'<details class="index" data-index="{_esc(key)}" data-value="{_esc(value)}"'
                f"{' open' if k == 0 else ''}><summary>{_esc(label)} "
                f"<span class=count>({len(group)})</span></summary>"
                f"{self._nest(group, (*used, key))}</details>"
            )
        return "".join(out)

    # ---------------------------------------------------------------------------- one record

    def _record(self, r) -> str:
        self.n_records += 1
        attrs = "".join(
            f' data-{_esc(re.sub(r"[^0-9a-z_]", "_", str(k).lower()))}="{_esc(v)}"'
            for k, v in r.indices.items()
        )
        value = r.value
        shape = np.shape(value) if hasattr(value, "shape") else None
        head = (
            f"<div class=rhead><span class=name>{_esc(r.name or '—')}</span>"
            f"{' <span class=shape>' + _esc(tuple(shape)) + '</span>' if shape is not None else ''}"
            f" <span class=summary>{_esc(self.summary(value))}</span></div>"
            f'<div class=path title="{_esc(r.path)}">{_esc(r.path)}</div>'
        )
        return (
            f'<div class="record" data-algorithm="{_esc(r.algorithm)}" data-line="{r.line}" '
            f'data-name="{_esc(r.name)}"{attrs}>{head}{self._value(r, value)}</div>'
        )

    def _value(self, r, value, depth=0) -> str:
        if value is None:
            return "<div class=note>no concrete value (inside a compiled or abstract region)</div>"
        if isinstance(value, tuple | list):
            if depth or not value or len(value) > 8:
                return ""
            names = r.name.split(",") if r.name and "," in r.name else []
            parts = []
            for k, v in enumerate(value):
                label = names[k] if k < len(names) else f"[{k}]"
                shape = f" {tuple(np.shape(v))}" if hasattr(v, "shape") else ""
                parts.append(
                    f"<div class=part><span class=name>{_esc(label)}</span>{_esc(shape)} "
                    f"<span class=summary>{_esc(self.summary(v))}</span>"
                    f"{self._value(r, v, depth + 1)}</div>"
                )
            return "".join(parts)
        if not (hasattr(value, "shape") and hasattr(value, "dtype")):
            return ""  # a scalar or an object: its summary is the whole story
        a = np.asarray(value)
        if a.ndim == 0 or a.size == 0:
            return ""
        if a.ndim == 2 and min(a.shape) == 1:
            a = a.reshape(-1)  # a row or a column (layer_norm's m, v): a vector
        if a.ndim == 1:
            if a.dtype == bool or np.issubdtype(a.dtype, np.integer):
                return self._int_table(a)
            return self._plot(a)
        if a.ndim == 2:
            return self._heatmap(r, a)
        return f"<div class=note>{a.ndim}-D value: summarised above</div>"

    def _int_table(self, a) -> str:
        shown = a[:64].astype(np.int64) if a.dtype != bool else a[:64]
        tokens = self.tokens if self.tokens is not None and len(self.tokens) == a.size else None
        cells = "".join(
            f"<td title='{k + 1}{': ' + _esc(tokens[k]) if tokens else ''}'>{_esc(v)}</td>"
            for k, v in enumerate(shown.tolist())
        )
        more = f"<td>… ({a.size} in all)</td>" if a.size > 64 else ""
        return f"<table class=ints><tr>{cells}{more}</tr></table>"

    def _plot(self, a) -> str:
        """A small inline SVG line plot of a vector (its first 512 entries)."""
        a = a.astype(np.float64)
        n_all = a.size
        a = a[:512]
        finite = a[np.isfinite(a)]
        if finite.size == 0:
            return "<div class=note>no finite entries</div>"
        if a.size > self.cells_left:  # a plot's points count against the page's budget too
            return "<div class=note>not drawn: the page's budget of cells is spent</div>"
        self.cells_left -= a.size
        lo, hi = float(min(finite.min(), 0.0)), float(max(finite.max(), 0.0))
        span = hi - lo or 1.0
        w, h = min(max(4 * a.size, 80), 480), 48
        xs = np.linspace(2, w - 2, a.size) if a.size > 1 else np.array([w / 2])
        ys = h - 4 - (np.clip(np.nan_to_num(a, nan=lo), lo, hi) - lo) / span * (h - 8)
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))
        zero = h - 4 - (0 - lo) / span * (h - 8)
        dots = (
            "".join(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="1.6"/>' for x, y in zip(xs, ys, strict=True)
            )
            if a.size <= 64
            else ""
        )
        values = ""
        if n_all <= 16:
            values = (
                "<table class=vals><tr>"
                + "".join(f"<td>{fmt(float(v))}</td>" for v in a)
                + "</tr></table>"
            )
        note = f"<div class=note>first 512 of {n_all} entries</div>" if n_all > 512 else ""
        return (
            f'<svg class="vector" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img">'
            f"<title>{n_all} entries, min {fmt(float(finite.min()))}, "
            f"max {fmt(float(finite.max()))}</title>"
            f'<line x1="0" x2="{w}" y1="{zero:.1f}" y2="{zero:.1f}" class=axis />'
            f'<polyline points="{points}" />{dots}</svg>{values}{note}'
        )

    def _heatmap(self, r, a) -> str:
        rows, cols = a.shape
        shown = a[: self.max_side, : self.max_side]
        note = ""
        if shown.shape != a.shape:
            note = (
                f"<div class=note>drawn: rows 1-{shown.shape[0]}, columns 1-{shown.shape[1]} "
                f"of ({rows}, {cols})</div>"
            )
        if shown.size > self.cells_left:
            return "<div class=note>not drawn: the page's budget of cells is spent</div>"
        self.cells_left -= shown.size
        key = self._store(shown)
        axes = ("t_z", "t_x") if r.algorithm == 4 and r.name in ("S", "A") else ("i", "j")
        scale = max(2, min(10, 192 // max(shown.shape)))  # the longer side about 192 px
        return (
            f'<canvas class="heatmap" data-key="{key}" data-rows="{shown.shape[0]}" '
            f'data-cols="{shown.shape[1]}" data-axes="{axes[0]},{axes[1]}" '
            f'width="{shown.shape[1]}" height="{shown.shape[0]}" '
            f'style="width:{shown.shape[1] * scale}px;height:{shown.shape[0] * scale}px">'
            f"</canvas>{note}"
        )

    def _store(self, a) -> str:
        """Quantise a matrix to 8 bits (255: not finite) and keep it once; returns its key."""
        if a.dtype == bool:
            kind, lo, hi = "bool", 0.0, 1.0
            q = a.astype(np.uint8) * 254
        else:
            a = a.astype(np.float64)
            finite = np.isfinite(a)
            lo = float(a[finite].min()) if finite.any() else 0.0
            hi = float(a[finite].max()) if finite.any() else 0.0
            if lo < 0 < hi:  # a diverging scale centred on 0
                kind = "div"
                m = max(-lo, hi)
                lo, hi = -m, m
            else:
                kind = "seq"
            span = hi - lo or 1.0
            q = np.where(finite, np.rint((np.where(finite, a, lo) - lo) / span * 254), 255)
            q = q.astype(np.uint8)
        raw = q.tobytes()
        digest = hashlib.sha1(raw + f"{a.shape}{kind}{lo}{hi}".encode()).digest()
        key = self.keys.get(digest)
        if key is None:
            key = f"m{len(self.keys)}"
            self.keys[digest] = key
            self.data[key] = {
                "r": int(a.shape[0]),
                "c": int(a.shape[1]),
                "lo": lo,
                "hi": hi,
                "s": kind,
                "q": base64.b64encode(raw).decode("ascii"),
            }
        return key


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{title}</title>
<script>window.faErrors = [];
window.addEventListener("error", function (e) {{ window.faErrors.push(String(e.message)); }});
</script>
<style>{css}</style></head>
<body data-heatmaps="0">
<header><h1>{title}</h1><p class=meta>{meta}</p>
<p class=meta>Each paper line (left) beside the code that implements it and the values it took
(right), grouped by the paper's loop indices (1-based). Heatmaps: rows × columns as in the paper
(X is d × ℓ, A is t_z × t_x); blue ≤ 0 ≤ red, or white → blue for one-signed values; grey: not
finite. <button id=expand type=button>expand all</button>
<button id=collapse type=button>collapse all</button></p>
<nav><ul>{toc}</ul></nav></header>
<main>{sections}</main>
<div id=tip hidden></div>
<script type="application/json" id="fa-data">{data}</script>
<script>{script}</script>
</body></html>
"""

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 1.5em 3em; color: #222; }
h1 { font-size: 1.4em; margin: .6em 0 .2em; }
h2 { font-size: 1.15em; margin: 1.4em 0 .4em; padding: .3em .5em; background: #eef2f7;
     border-left: 4px solid #4a6fa5; }
h2 .title { font-weight: normal; font-family: "DejaVu Serif", serif; margin-left: .5em; }
.meta { color: #555; margin: .2em 0; }
nav ul { display: flex; flex-wrap: wrap; gap: .3em 1.2em; padding: 0; list-style: none; }
.line { display: grid; grid-template-columns: minmax(12em, 22em) 1fr; gap: 1em;
        border-top: 1px solid #e3e3e3; padding: .35em 0; }
.line[data-recorded="false"] .pseudo { color: #999; }
.pseudo { font-family: "DejaVu Serif", serif; }
.pseudo .no { display: inline-block; width: 2em; color: #4a6fa5; font-weight: bold; }
.statement { margin-bottom: .5em; }
pre.code { margin: 0; padding: .2em .4em; background: #f6f8fa; font-size: 12px;
           white-space: pre-wrap; border-radius: 3px; }
.where { font-size: 11px; color: #777; }
.note { font-size: 12px; color: #777; font-style: italic; }
details.index { margin: .15em 0 .15em .6em; }
/* the innermost groups (heads inside a layer) side by side */
details.index:not(:has(details)) { display: inline-block; vertical-align: top; }
details.index > summary { cursor: pointer; color: #4a6fa5; }
.count { color: #999; font-size: 11px; }
.record { display: inline-block; vertical-align: top; margin: .3em 1.2em .5em .6em;
          max-width: 19em; }
.rhead .name { font-family: monospace; font-weight: bold; }
.rhead .shape { font-family: monospace; color: #4a6fa5; }
.rhead .summary, .part .summary { font-family: monospace; font-size: 12px; color: #333; }
.path { font-size: 11px; color: #999; }
canvas.heatmap { image-rendering: pixelated; border: 1px solid #ccc; display: block;
                 margin: .2em 0; }
svg.vector { display: block; margin: .2em 0; background: #fafafa; border: 1px solid #eee; }
svg.vector polyline { fill: none; stroke: #4a6fa5; stroke-width: 1.2; }
svg.vector circle { fill: #4a6fa5; }
svg.vector .axis { stroke: #bbb; stroke-width: .8; }
table.ints, table.vals { border-collapse: collapse; font: 11px monospace; margin: .2em 0; }
table.ints td, table.vals td { border: 1px solid #ddd; padding: 0 .3em; }
#tip { position: fixed; pointer-events: none; background: #222; color: #fff; font: 12px
       monospace; padding: .2em .4em; border-radius: 3px; z-index: 9; }
button { font-size: 11px; }
"""

_SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("fa-data").textContent);
  var tokens = data.tokens;
  function colour(code, kind) {
    if (code === 255) return [170, 170, 170];
    var u = code / 254;
    if (kind === "bool") return u > 0.5 ? [40, 60, 110] : [255, 255, 255];
    if (kind === "seq") {
      return [Math.round(255 - 215 * u), Math.round(255 - 180 * u), Math.round(255 - 90 * u)];
    }
    var v = 2 * u - 1;  // diverging: -1 blue, 0 white, 1 red
    if (v < 0) {
      v = -v;
      return [Math.round(255 - 200 * v), Math.round(255 - 150 * v), 255 - Math.round(40 * v)];
    }
    return [255 - Math.round(40 * v), Math.round(255 - 190 * v), Math.round(255 - 200 * v)];
  }
  function decode(b64) {
    var s = atob(b64), out = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  var cache = {};
  function matrix(key) {
    if (!cache[key]) { var m = data.matrices[key]; cache[key] = {m: m, q: decode(m.q)}; }
    return cache[key];
  }
  var drawn = 0;
  var canvases = document.querySelectorAll("canvas.heatmap");
  for (var k = 0; k < canvases.length; k++) {
    var canvas = canvases[k], entry = matrix(canvas.dataset.key), m = entry.m, q = entry.q;
    var ctx = canvas.getContext("2d"), img = ctx.createImageData(m.c, m.r);
    for (var i = 0; i < q.length; i++) {
      var c = colour(q[i], m.s);
      img.data[4 * i] = c[0]; img.data[4 * i + 1] = c[1]; img.data[4 * i + 2] = c[2];
      img.data[4 * i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    canvas.dataset.drawn = "true";
    drawn++;
  }
  document.body.dataset.heatmaps = String(drawn);
  var tip = document.getElementById("tip");
  function label(name, index, count) {
    var s = name + "=" + (index + 1);
    if (tokens && tokens.length === count) s += " " + JSON.stringify(tokens[index]);
    return s;
  }
  document.addEventListener("mousemove", function (e) {
    var canvas = e.target;
    if (!canvas.classList || !canvas.classList.contains("heatmap")) { tip.hidden = true; return; }
    var entry = matrix(canvas.dataset.key), m = entry.m, box = canvas.getBoundingClientRect();
    var col = Math.min(m.c - 1, Math.floor((e.clientX - box.left) / box.width * m.c));
    var row = Math.min(m.r - 1, Math.floor((e.clientY - box.top) / box.height * m.r));
    var code = entry.q[row * m.c + col], axes = canvas.dataset.axes.split(",");
    var value = code === 255 ? "not finite" : m.s === "bool" ? String(code > 127) :
      "≈ " + (m.lo + code / 254 * (m.hi - m.lo)).toPrecision(3);
    tip.textContent = "[" + label(axes[0], row, m.r) + ", " + label(axes[1], col, m.c) + "] " +
      value;
    tip.style.left = (e.clientX + 12) + "px";
    tip.style.top = (e.clientY + 12) + "px";
    tip.hidden = false;
  });
  function all(open) {
    var ds = document.querySelectorAll("details.index");
    for (var i = 0; i < ds.length; i++) ds[i].open = open;
  }
  document.getElementById("expand").addEventListener("click", function () { all(true); });
  document.getElementById("collapse").addEventListener("click", function () { all(false); });
})();
"""
