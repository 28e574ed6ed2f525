"""Small, dependency-free SVG charts for the reports: a stacked bar and a line chart.

Each function takes plain numbers and returns one ``<svg>`` element as a string: well-formed XML,
every text escaped, presentation attributes only (no ``style=``, no script, no fonts or images from
the network), so the same markup works inline in HTML, in Markdown and as a standalone ``.svg``.
The ``width``/``height`` attributes give the natural size; HTML scales it down with
``svg { max-width: 100%; height: auto }`` (the ``viewBox`` keeps the proportions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from xml.sax.saxutils import escape, quoteattr

#: Colour-blind-safe palette (Okabe & Ito 2008), in the order components appear.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999", "#000000")
CAPACITY_COLOUR = "#C0392B"
AXIS_COLOUR = "#555555"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"


def _n(x: float) -> str:
    """A coordinate, short and stable (no float noise in snapshots)."""
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _svg(width: int, height: int, title: str, body: list[str], desc: str = "") -> str:
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
            f'role="img" aria-label={quoteattr(title)} font-family={quoteattr(FONT)} font-size="14">')
    meta = [f"<title>{escape(title)}</title>"] + ([f"<desc>{escape(desc)}</desc>"] if desc else [])
    return "\n".join([head, *meta, *body, "</svg>"])


def _text(x: float, y: float, text: str, anchor: str = "start", **attrs: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}={quoteattr(v)}' for k, v in attrs.items())
    return f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}"{extra}>{escape(text)}</text>'


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``top`` (1, 2, 2.5 or 5 times a power of ten)."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    n = math.ceil(top / step - 1e-9)
    return [round(i * step, 10) for i in range(n + 1)]


def short_number(x: float) -> str:
    """Token counts as people write them: 512, 4k, 128k, 1M (binary k = 1024)."""
    x = float(x)
    for div, suffix in ((1 << 20, "M"), (1 << 10, "k")):
        if x >= div and x % (div / 4) == 0:
            v = x / div
            return f"{v:g}{suffix}"
    return f"{x:,.0f}" if x >= 1000 else f"{x:g}"


def stacked_bar(segments: Sequence[tuple[str, float]], capacity: float, *, unit: str = "GiB",
                title: str = "Memory by component", width: int = 560) -> str:
    """One horizontal bar of ``segments`` (label, value) drawn against a ``capacity`` marker.

    The scale runs to the larger of the total and the capacity, so an overflow shows past the line.
    A legend below names every segment with its value.
    """
    segments = [(label, max(0.0, float(v))) for label, v in segments]
    total = sum(v for _, v in segments)
    left, right, bar_y, bar_h = 12, 12, 34, 34
    inner = width - left - right
    top = max(total, capacity, 1e-9) * 1.04
    scale = inner / top
    legend_rows = math.ceil(len(segments) / 2) if segments else 0
    height = bar_y + bar_h + 36 + legend_rows * 22 + 8
    body = [_text(left, 20, f"{total:.2f} {unit} of {capacity:g} {unit}"
                  f" ({total / capacity * 100:.1f}%)" if capacity else f"{total:.2f} {unit}", font_weight="600")]
    x = left
    for i, (label, v) in enumerate(segments):
        w = v * scale
        body.append(f'<rect x="{_n(x)}" y="{bar_y}" width="{_n(w)}" height="{bar_h}" fill="{PALETTE[i % len(PALETTE)]}">'
                    f"<title>{escape(f'{label}: {v:.2f} {unit}')}</title></rect>")
        x += w
    body.append(f'<rect x="{left}" y="{bar_y}" width="{_n(inner)}" height="{bar_h}" fill="none" stroke="{AXIS_COLOUR}" '
                f'stroke-width="0.5"/>')
    if capacity > 0:
        cx = left + capacity * scale
        body.append(f'<line x1="{_n(cx)}" y1="{bar_y - 8}" x2="{_n(cx)}" y2="{bar_y + bar_h + 8}" stroke="{CAPACITY_COLOUR}" '
                    f'stroke-width="2" stroke-dasharray="4 2"/>')
        anchor = "end" if cx > width / 2 else "start"
        body.append(_text(cx + (-4 if anchor == "end" else 4), bar_y + bar_h + 20, f"capacity {capacity:g} {unit}",
                          anchor, fill=CAPACITY_COLOUR))
    y0 = bar_y + bar_h + 40
    col = (width - left - right) / 2
    for i, (label, v) in enumerate(segments):
        lx, ly = left + (i % 2) * col, y0 + (i // 2) * 22
        body.append(f'<rect x="{_n(lx)}" y="{_n(ly - 10)}" width="12" height="12" fill="{PALETTE[i % len(PALETTE)]}"/>')
        body.append(_text(lx + 18, ly, f"{label}: {v:.2f} {unit}"))
    desc = "; ".join(f"{label} {v:.2f} {unit}" for label, v in segments)
    return _svg(width, height, title, body, desc)


def line_chart(points: Sequence[tuple[float, float]], capacity: float, *, crossing: float | None = None,
               marker: tuple[float, float] | None = None, x_label: str = "context length (tokens)",
               y_label: str = "GiB", title: str = "Memory versus context length", width: int = 560,
               height: int = 320) -> str:
    """``points`` (x, y) on a log2 x axis and a linear y axis from 0, with a dashed capacity line.

    ``crossing`` marks the x where the workload stops fitting (a vertical line and its value);
    ``marker`` highlights one point (the request itself). Points above the capacity are drawn red.
    """
    points = sorted((float(x), float(y)) for x, y in points if x > 0)
    left, right, top_pad, bottom = 48, 24, 30, 50
    pw, ph = width - left - right, height - top_pad - bottom
    body: list[str] = []
    if not points:
        body.append(_text(width / 2, height / 2, "no data", "middle"))
        return _svg(width, height, title, body)
    xs = [p[0] for p in points]
    x_lo, x_hi = math.log2(min(xs)), math.log2(max(xs))
    if x_hi - x_lo < 1e-9:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    ticks = nice_ticks(max(max(p[1] for p in points), capacity) * 1.05)
    y_top = ticks[-1]

    def px(x: float) -> float:
        return left + (math.log2(x) - x_lo) / (x_hi - x_lo) * pw

    def py(y: float) -> float:
        return top_pad + ph - (y / y_top) * ph if y_top else top_pad + ph

    for t in ticks:  # horizontal grid and y labels
        body.append(f'<line x1="{left}" y1="{_n(py(t))}" x2="{left + pw}" y2="{_n(py(t))}" stroke="#DDDDDD" stroke-width="1"/>')
        body.append(_text(left - 6, py(t) + 4, f"{t:g}", "end", fill=AXIS_COLOUR))
    body.append(f'<line x1="{left}" y1="{top_pad + ph}" x2="{left + pw}" y2="{top_pad + ph}" stroke="{AXIS_COLOUR}"/>')
    body.append(f'<line x1="{left}" y1="{top_pad}" x2="{left}" y2="{top_pad + ph}" stroke="{AXIS_COLOUR}"/>')
    # x ticks at powers of two, thinned to at most 7 labels
    exps = list(range(math.ceil(x_lo - 1e-9), math.floor(x_hi + 1e-9) + 1))
    stride = max(1, math.ceil(len(exps) / 7))
    for e in exps[::stride]:
        x = px(2.0 ** e)
        body.append(f'<line x1="{_n(x)}" y1="{top_pad + ph}" x2="{_n(x)}" y2="{top_pad + ph + 5}" stroke="{AXIS_COLOUR}"/>')
        body.append(_text(x, top_pad + ph + 20, short_number(2 ** e), "middle", fill=AXIS_COLOUR))
    body.append(_text(left + pw / 2, height - 8, x_label, "middle", fill=AXIS_COLOUR))
    body.append(_text(left - 6, 16, y_label, "end", fill=AXIS_COLOUR))
    if capacity > 0:
        cy = py(capacity)
        body.append(f'<line x1="{left}" y1="{_n(cy)}" x2="{left + pw}" y2="{_n(cy)}" stroke="{CAPACITY_COLOUR}" stroke-width="2" '
                    f'stroke-dasharray="6 3"/>')
        body.append(_text(left + pw - 4, cy - 6, f"capacity {capacity:g} {y_label}", "end", fill=CAPACITY_COLOUR))
    path = " ".join(f"{'M' if i == 0 else 'L'}{_n(px(x))},{_n(py(y))}" for i, (x, y) in enumerate(points))
    body.append(f'<path d="{path}" fill="none" stroke="{PALETTE[0]}" stroke-width="2"/>')
    for x, y in points:
        over = capacity > 0 and y > capacity
        body.append(f'<circle cx="{_n(px(x))}" cy="{_n(py(y))}" r="3.5" fill="{CAPACITY_COLOUR if over else PALETTE[0]}">'
                    f"<title>{escape(f'{x:,.0f} tokens: {y:.2f} {y_label}')}</title></circle>")
    if crossing is not None and xs[0] <= crossing <= xs[-1]:
        cx = px(crossing)
        body.append(f'<line x1="{_n(cx)}" y1="{top_pad}" x2="{_n(cx)}" y2="{top_pad + ph}" stroke="{CAPACITY_COLOUR}" '
                    f'stroke-width="1" stroke-dasharray="2 2"/>')
        anchor = "end" if cx > left + pw * 0.7 else "start"
        body.append(_text(cx + (-4 if anchor == "end" else 4), top_pad + 12, f"fits up to {crossing:,.0f}", anchor,
                          fill=CAPACITY_COLOUR))
    if marker is not None and marker[0] > 0:
        mx, my = px(marker[0]), py(marker[1])
        body.append(f'<circle cx="{_n(mx)}" cy="{_n(my)}" r="6" fill="none" stroke="#000000" stroke-width="2">'
                    f"<title>{escape(f'this request: {marker[0]:,.0f} tokens, {marker[1]:.2f} {y_label}')}</title></circle>")
    desc = "; ".join(f"{x:,.0f}: {y:.2f} {y_label}" for x, y in points)
    return _svg(width, height, title, body, desc)
