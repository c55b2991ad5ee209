"""Every head of every layer at a glance, as CircuitsVis shows them: one self-contained HTML fragment (inline
script, no CDN) that renders the same in the dashboard, in JupyterLab and in an exported page.

Thumbnails are canvases with square cells. Hover a token of the strip below them: the strip colours what that
token attends to in the enlarged head (blue) and underlines what attends to it (orange), and every head marks its
row.
Click a thumbnail to enlarge that head. An orange line marks where the repeat starts on an induction prompt.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from jaxtyping import Float
from torch import Tensor

STYLE = """
#ID {font: 13px system-ui, sans-serif; color: #222}
#ID .wb-grid {display: grid; gap: 6px; align-items: center; justify-content: start; margin-bottom: 10px}
#ID .wb-grid canvas {cursor: pointer; border: 2px solid transparent; image-rendering: pixelated}
#ID .wb-grid canvas.wb-on {border-color: #e6550d}
#ID .wb-label {color: #666; font-size: 12px; text-align: center}
#ID .wb-big {image-rendering: pixelated; border: 1px solid #ccc}
#ID .wb-tokens {line-height: 2.1; max-width: 860px; margin-bottom: 8px}
#ID .wb-tok {padding: 2px 3px; margin: 1px; border-radius: 3px; border-bottom: 3px solid transparent;
  cursor: default; font-family: ui-monospace, monospace; display: inline-block}
#ID .wb-tok.wb-boundary {margin-left: 10px; box-shadow: -6px 0 0 -4px #e6550d}
#ID .wb-info {color: #444; min-height: 1.4em; margin: 4px 0}
"""

SCRIPT = """
(function () {
  const root = document.getElementById("ID"), D = DATA;
  const L = D.p.length, H = D.p[0].length, N = D.tokens.length;
  let sel = D.sel, hover = null;
  const w = (l, h, q, k) => D.p[l][h][q][k] / 1000;
  function draw(canvas, l, h, size, big) {
    const c = canvas.getContext("2d"), cell = size / N;
    c.fillStyle = "#fff"; c.fillRect(0, 0, size, size);
    for (let q = 0; q < N; q++) for (let k = 0; k < N; k++) {
      const a = w(l, h, q, k);
      if (a < 0.005) continue;
      c.fillStyle = `rgb(${255 - a * 247},${255 - a * 207},${255 - a * 148})`;
      c.fillRect(k * cell, q * cell, Math.ceil(cell), Math.ceil(cell));
    }
    if (D.boundary !== null) {
      c.strokeStyle = "#e6550d"; c.lineWidth = 1; c.beginPath();
      c.moveTo(D.boundary * cell, 0); c.lineTo(D.boundary * cell, size);
      c.moveTo(0, D.boundary * cell); c.lineTo(size, D.boundary * cell); c.stroke();
    }
    if (hover !== null) {
      c.strokeStyle = "#d62728"; c.lineWidth = big ? 2 : 1;
      c.strokeRect(0, hover * cell, size, Math.max(cell, 1));
      if (big) c.strokeRect(hover * cell, 0, Math.max(cell, 1), size);
    }
  }
  const grid = root.querySelector(".wb-grid"), thumbs = [];
  grid.style.gridTemplateColumns = `auto repeat(${H}, ${D.thumb + 4}px)`;
  grid.appendChild(document.createElement("span"));
  for (let h = 0; h < H; h++) {
    const s = document.createElement("span"); s.className = "wb-label"; s.textContent = "head " + h;
    grid.appendChild(s);
  }
  for (let l = 0; l < L; l++) {
    const s = document.createElement("span"); s.className = "wb-label"; s.textContent = "layer " + D.layers[l];
    grid.appendChild(s);
    for (let h = 0; h < H; h++) {
      const cv = document.createElement("canvas");
      cv.width = cv.height = D.thumb; cv.title = `layer ${D.layers[l]} head ${h}: click to enlarge`;
      cv.dataset.layer = D.layers[l]; cv.dataset.head = h;
      cv.onclick = () => { sel = [l, h]; redraw(); };
      grid.appendChild(cv); thumbs.push([cv, l, h]);
    }
  }
  const big = root.querySelector(".wb-big"), info = root.querySelector(".wb-info");
  const title = root.querySelector(".wb-title"), strip = root.querySelector(".wb-tokens");
  big.width = big.height = D.big;
  const spans = D.tokens.map((t, i) => {
    const s = document.createElement("span"); s.className = "wb-tok"; s.textContent = t;
    s.dataset.pos = i; s.title = `position ${i}`;
    if (i === D.boundary) s.classList.add("wb-boundary");
    s.onmouseenter = () => { hover = i; redraw(); };
    s.onmouseleave = () => { hover = null; redraw(); };
    strip.appendChild(s); return s;
  });
  big.onmousemove = (e) => {
    const r = big.getBoundingClientRect(), cell = r.width / N;
    const q = Math.floor((e.clientY - r.top) / cell), k = Math.floor((e.clientX - r.left) / cell);
    if (q < 0 || k < 0 || q >= N || k >= N) return;
    info.textContent = `query ${q} (${D.tokens[q]}) → key ${k} (${D.tokens[k]}): ${w(sel[0], sel[1], q, k).toFixed(3)}`;
  };
  function redraw() {
    for (const [cv, l, h] of thumbs) {
      draw(cv, l, h, D.thumb, false); cv.classList.toggle("wb-on", l === sel[0] && h === sel[1]);
    }
    draw(big, sel[0], sel[1], D.big, true);
    title.textContent = `layer ${D.layers[sel[0]]} head ${sel[1]}`;
    spans.forEach((s, j) => {
      const to = hover === null ? 0 : w(sel[0], sel[1], hover, j);
      const from = hover === null ? 0 : w(sel[0], sel[1], j, hover);
      s.style.background = to > 0.005 ? `rgba(8,48,107,${to.toFixed(3)})` : "";
      s.style.color = to > 0.5 ? "#fff" : "";
      s.style.borderBottomColor = from > 0.005 ? `rgba(230,85,13,${Math.min(1, from).toFixed(3)})` : "transparent";
      s.style.outline = j === hover ? "2px solid #d62728" : "";
    });
    if (hover !== null) info.textContent = `${D.tokens[hover]} (position ${hover}) in layer ${D.layers[sel[0]]} ` +
      `head ${sel[1]}: blue = what it attends to, orange underline = what attends to it`;
  }
  redraw();
})();
"""


def all_heads(patterns: Float[Tensor, "layer head q k"], tokens: Sequence[str], layers: Sequence[int] | None = None,
              boundary: int | None = None, thumb: int = 112, selected: tuple[int, int] | None = None) -> AllHeads:
    """Every head's attention pattern on one prompt as a thumbnail grid with a hoverable token strip; `tokens`
    are the prompt's token names, `layers` the model layers the patterns come from, `boundary` the position
    where a repeat starts (marked), `selected` the (layer, head) enlarged first (default: the last layer's head 0)."""
    n_layers, n_heads, n_q, n_k = patterns.shape
    if n_q != n_k or n_q != len(tokens):
        raise ValueError(f"all_heads: patterns are {n_q}×{n_k} but there are {len(tokens)} tokens")
    layers = list(layers if layers is not None else range(n_layers))
    layer, head = selected if selected is not None else (layers[-1], 0)
    if layer not in layers or not 0 <= head < n_heads:
        raise ValueError(f"all_heads: selected=({layer}, {head}) is not a head here (layers {layers}, "
                         f"{n_heads} heads each)")
    element = f"wb-heads-{uuid.uuid4().hex[:8]}"
    big = max(240, min(480, 8 * n_q))
    data = {"p": (patterns.detach().float().cpu().clamp(0, 1) * 1000).round().int().tolist(),
            "tokens": [str(t) for t in tokens], "layers": layers, "sel": [layers.index(layer), head],
            "boundary": boundary, "thumb": thumb, "big": big}
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")  # "</" would end the script early
    page = (f'<div id="{element}" class="wb-heads"><style>{STYLE.replace("ID", element)}</style>'
            '<div class="wb-grid"></div><div class="wb-info">hover a token</div><div class="wb-tokens"></div>'
            '<div class="wb-title"></div><canvas class="wb-big"></canvas>'
            f'<script>{SCRIPT.replace("ID", element).replace("DATA", payload)}</script></div>')
    strip_lines = -(-sum(len(str(t)) + 2 for t in tokens) // 90)  # the token strip wraps at ~90 characters
    return AllHeads(page, height=60 + n_layers * (thumb + 10) + 34 * strip_lines + big + 40)


@dataclass(frozen=True)
class AllHeads:
    """The all-heads view: `html` is one self-contained fragment; a notebook shows it (JupyterLab and exported
    HTML run its inline script), the dashboard embeds it at `height` pixels."""

    html: str
    height: int

    def _repr_html_(self) -> str:
        return self.html
