// vramplan page charts: the memory bar and memory against context length, as plain SVG (no dependencies).
"use strict";

window.VramplanCharts = (function () {
  const SVG = "http://www.w3.org/2000/svg";
  // Okabe-Ito colour-blind-safe palette (the HTML report uses the same), then two neutrals.
  const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
                   "#999999", "#6b4c9a"];

  function el(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    Object.keys(attrs || {}).forEach((k) => node.setAttribute(k, attrs[k]));
    if (parent) parent.appendChild(node);
    return node;
  }

  // 1, 2 or 5 times a power of ten, at least ``raw``: grid steps a reader can add up.
  function niceStep(raw) {
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    const m = raw / p;
    return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
  }

  // GiB with two decimals, as the CLI and the API show them.
  function gib(value) {
    return typeof value === "number" && isFinite(value) ? value.toFixed(2) : String(value);
  }

  function fmt(value, digits) {
    if (typeof value !== "number" || !isFinite(value)) return String(value);
    return value.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: 0 });
  }

  // A stacked horizontal bar, one segment per memory component, scaled to the GPU's capacity (or to the
  // usage where it exceeds it, with a red capacity line). The legend is an HTML list beside it.
  function stackedBar(svg, legend, details, capacity) {
    svg.textContent = "";
    legend.textContent = "";
    const entries = Object.entries(details).filter(([, v]) => typeof v === "number" && v > 0);
    const used = entries.reduce((s, [, v]) => s + v, 0);
    const scale = 1000 / Math.max(capacity, used, 1e-9);
    el("rect", { x: 0, y: 10, width: 1000, height: 40, rx: 4, class: "capacity" }, svg);
    let x = 0;
    entries.forEach(([label, value], i) => {
      const w = value * scale;
      const color = PALETTE[i % PALETTE.length];
      const rect = el("rect", { x: x, y: 10, width: Math.max(w, 0.5), height: 40, fill: color,
                                class: "segment", "data-label": label, "data-gib": value }, svg);
      el("title", {}, rect).textContent = label + ": " + gib(value) + " GiB";
      x += w;
      const li = document.createElement("li");
      const sw = document.createElement("span");
      sw.className = "swatch";
      sw.style.backgroundColor = color;
      li.appendChild(sw);
      li.appendChild(document.createTextNode(label + " " + gib(value) + " GiB"));
      legend.appendChild(li);
    });
    const cap = capacity * scale;
    el("line", { x1: cap, x2: cap, y1: 2, y2: 58, class: used > capacity ? "limit over" : "limit" }, svg);
    const text = el("text", { x: Math.min(cap, 995), y: 68, "text-anchor": "end", class: "limit-label" }, svg);
    text.textContent = "GPU " + fmt(capacity, 1) + " GiB";
  }

  // Memory against context length on a log2 x axis: the points, the GPU's capacity, the request and the
  // longest context that fits.
  function contextChart(svg, curve) {
    svg.textContent = "";
    const W = 1000, H = 300, L = 72, R = 24, T = 22, B = 44;
    const pts = curve.points || [];
    if (!pts.length) return;
    const xs = pts.map((p) => Math.log2(p.seq_length));
    const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
    const top = Math.max(curve.capacity, ...pts.map((p) => p.vram_usage)) * 1.05;
    const step = niceStep(top / 5);
    const ymax = Math.ceil(top / step) * step;
    const X = (n) => L + (Math.log2(n) - x0) / (x1 - x0) * (W - L - R);
    const Y = (g) => H - B - g / ymax * (H - T - B);
    // grid and axes: round GiB steps (1, 2 or 5 x 10^n)
    for (let g = 0; g <= ymax + step / 2; g += step) {
      el("line", { x1: L, x2: W - R, y1: Y(g), y2: Y(g), class: "grid" }, svg);
      el("text", { x: L - 8, y: Y(g) + 4, "text-anchor": "end", class: "axis" }, svg).textContent = fmt(g, step < 1 ? 1 : 0);
    }
    el("text", { x: 4, y: (H - B + T) / 2, class: "axis", "text-anchor": "middle",
                 transform: "rotate(-90 12 " + (H - B + T) / 2 + ")" }, svg).textContent = "GiB per GPU";
    pts.forEach((p, i) => {
      if (i % 2 && pts.length > 8) return;
      el("text", { x: X(p.seq_length), y: H - B + 18, "text-anchor": "middle", class: "axis" }, svg).textContent =
        p.seq_length >= 1024 ? fmt(p.seq_length / 1024, 0) + "k" : String(p.seq_length);
    });
    el("text", { x: W - R, y: H - 6, "text-anchor": "end", class: "axis" }, svg).textContent = "context (tokens, log scale)";
    // the GPU's capacity
    el("line", { x1: L, x2: W - R, y1: Y(curve.capacity), y2: Y(curve.capacity), class: "capacity-line" }, svg);
    el("text", { x: W - R, y: Y(curve.capacity) - 6, "text-anchor": "end", class: "capacity-label" }, svg).textContent =
      "GPU " + fmt(curve.capacity, 1) + " GiB";
    // the crossing: the longest context that fits
    if (curve.crossing) {
      const cx = X(curve.crossing);
      el("line", { x1: cx, x2: cx, y1: T, y2: H - B, class: "crossing" }, svg);
      el("text", { x: cx + 6, y: T + 12, class: "crossing-label" }, svg).textContent = "fits up to " + fmt(curve.crossing, 0);
    }
    // the curve
    const d = pts.map((p, i) => (i ? "L" : "M") + X(p.seq_length).toFixed(1) + " " + Y(p.vram_usage).toFixed(1)).join(" ");
    el("path", { d: d, class: "curve" }, svg);
    pts.forEach((p) => {
      const fitsHere = p.memory_status !== "insufficient" && p.memory_status !== "error";
      const c = el("circle", { cx: X(p.seq_length), cy: Y(p.vram_usage), r: 4.5, class: fitsHere ? "pt" : "pt over",
                               "data-seq": p.seq_length, "data-gib": p.vram_usage }, svg);
      el("title", {}, c).textContent = fmt(p.seq_length, 0) + " tokens: " + gib(p.vram_usage) + " GiB";
    });
    const req = curve.request || {};
    const here = pts.find((p) => p.seq_length === req.seq_length);
    if (here) {
      el("circle", { cx: X(here.seq_length), cy: Y(here.vram_usage), r: 9, class: "marker" }, svg);
    }
  }

  return { stackedBar: stackedBar, contextChart: contextChart, fmt: fmt, gib: gib };
})();
