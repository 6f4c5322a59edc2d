"""The trace page's fixed text: its HTML template, style sheet and script (the filters, the
tooltips, the heat maps' scale), filled in by :mod:`.html`."""

TEMPLATE = """<!DOCTYPE html>
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

CSS = """
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
.hm { display: inline-block; }
.hmrow { display: flex; align-items: flex-start; }
.hmlab { font: 9px monospace; color: #555; white-space: pre; overflow: hidden; }
.hmlab.cols { display: flex; margin-left: 4.2em; height: 4.2em; align-items: flex-end; }
.hmlab.cols span { writing-mode: vertical-rl; transform: rotate(180deg); overflow: hidden;
                   text-align: left; max-height: 4.2em; }
.hmlab.rows { display: flex; flex-direction: column; width: 4.2em; margin-top: .2em; }
.hmlab.rows span { overflow: hidden; text-align: right; padding-right: 2px; line-height: 1; }
table.steps { border-collapse: collapse; font: 13px monospace; }
table.steps td, table.steps th { border: 1px solid #ddd; padding: .1em .5em; }
table.steps td.tok { white-space: pre; background: #f6f8fa; }
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

SCRIPT = r"""
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
