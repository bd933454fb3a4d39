"""The page of ``stet report``: HTML with inline CSS and SVG drawn here, nothing else.

The page loads nothing (a Content-Security-Policy forbids every fetch, and it holds no
script): it opens from a cluster's scratch directory over ``file://`` as it does from a
web server. Every chart has a title, axis labels and a legend in text, and every cell and
bar a tooltip saying its numbers.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from ._report import (
    MAX_FAILURES,
    MAX_GRID,
    MAX_POINTS,
    MAX_VALUES,
    STATES,
    Failure,
    ReportData,
)

__all__ = ["render"]

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'"
#: A key field with at most this many values is drawn as categories, evenly spaced (the
#: values of a grid, such as learning rates 0.1, 0.01, 0.001, are read best that way).
_CATEGORIES = 12
_COLORS = {"done": "#2e7d32", "failed": "#c62828", "running": "#f9a825", "pending": "#c4c4c4"}

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;
max-width:1100px;padding:1em 1.5em;color:#222;background:#fff}
h1{font-size:1.6em;margin:.2em 0}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
h3{font-size:1.05em;margin:1em 0 .3em}code,pre{font-family:ui-monospace,Menlo,Consolas,monospace}
.meta{color:#555}.note{color:#555;font-size:.92em}nav a{margin-right:1em}
.legend span{display:inline-block;margin-right:1.2em}
.swatch{display:inline-block;width:.9em;height:.9em;vertical-align:-.1em;margin-right:.3em;
border:1px solid #0003}
table{border-collapse:collapse}td,th{padding:.15em .8em .15em 0;text-align:left}
td.n,th.n{text-align:right}
details.failure{border:1px solid #e0c0c0;border-radius:4px;margin:.4em 0;padding:.3em .6em}
details.failure summary{cursor:pointer}.etype{color:#b71c1c;font-weight:600}
pre{background:#f6f6f6;padding:.6em;overflow:auto;max-height:30em;font-size:.85em}
.plots{display:flex;flex-wrap:wrap;gap:1em}
svg text{font-size:11px;fill:#333}svg .axis{stroke:#888}svg .grid{stroke:#eee}
svg .bar{fill:#5472a8}svg .pt{fill:#5472a8;fill-opacity:.55}
.cell rect.frame{fill:none;stroke:#fff}
"""


def _e(text: Any) -> str:
    return escape(str(text), quote=True)


def _n(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    return f"{x:.3g}"


def _seconds(x: float) -> str:
    if x < 120:
        return f"{x:.3g} s"
    m, s = divmod(round(x), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}"


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round numbers (1, 2, 5 times a power of ten) between ``lo`` and ``hi``."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step) * step
    out = []
    x = first
    while x <= hi + step * 1e-9:
        out.append(round(x, 12))
        x += step
    return out


def _axes(box: tuple[int, int, int, int, int, int, int], xlabel: str, ylabel: str) -> str:
    """A chart's axes and their labels, and the end of its SVG; ``box`` is its width,
    height, left, right and top margins, and the plot's width and height."""
    W, H, ml, mr, mt, pw, ph = box
    return (f'<line class="axis" x1="{ml}" x2="{W - mr}" y1="{mt + ph}" y2="{mt + ph}"/>'
            f'<line class="axis" x1="{ml}" x2="{ml}" y1="{mt}" y2="{mt + ph}"/>'
            f'<text class="xlabel" x="{ml + pw / 2}" y="{H - 8}" text-anchor="middle">'
            f"{_e(xlabel)}</text>"
            f'<text class="ylabel" transform="rotate(-90)" x="{-(mt + ph / 2)}" y="12" '
            f'text-anchor="middle">{_e(ylabel)}</text></svg>')


def _legend(states: tuple[str, ...]) -> str:
    items = "".join(f'<span><i class="swatch" style="background:{_COLORS[s]}"></i>{s}</span>'
                    for s in states)
    return f'<p class="legend" aria-label="legend">{items}</p>'


# ------------------------------------------------------------------------ sections
def _header(data: ReportData) -> str:
    from . import __version__

    c = data.counts
    total = sum(c.values())
    parts = [f"{c['done']:,} done", f"{c['failed']:,} failed", f"{c['running']:,} running"]
    if data.planned:
        parts.append(f"{c['pending']:,} pending")
    funcs = ", ".join(f or "(no function name)" for f in data.functions) or "(none)"
    return (f"<header><h1>Sweep report</h1>"
            f'<p class="meta">Store <code>{_e(data.store)}</code> ({_e(data.backend)}); '
            f"function{'s' if len(data.functions) != 1 else ''}: {_e(funcs)}; written "
            f"{_e(data.generated)} by stet {_e(__version__)}.</p>"
            f'<p class="summary" id="summary">{_n(total, "setting")}: {", ".join(parts)}.</p>'
            f'<nav><a href="#progress">Progress</a><a href="#durations">Durations</a>'
            f'<a href="#failures">Failures</a><a href="#results">Results</a></nav></header>')


def _worst(cell: dict[str, int]) -> str:
    for state in ("failed", "running", "pending"):
        if cell[state]:
            return state
    return "done"


def _progress(data: ReportData) -> str:
    out = ['<section id="progress"><h2>Progress by key field</h2>']
    states = STATES if data.planned else STATES[:3]
    if data.planned:
        out.append('<p class="note">Each cell is one value of a key field: the settings '
                   "of the sweep's plan with that value, coloured by state (bottom to top: "
                   "done, failed, running, pending).</p>")
    else:
        out.append('<p class="note">Each cell is one value of a key field, seen in the store: '
                   "the settings with that value, coloured by state (bottom to top: done, "
                   "failed, running). The store does not record the sweep's plan, so "
                   "settings not run yet are not shown.</p>")
    out.append(_legend(states))
    if not data.fields:
        out.append("<p>No run with key fields yet.</p>")
    out.append(_grid(data))
    for i, f in enumerate(data.fields):
        out.append(_heat_row(f"hm-{i}", f, data.by_value[f]))
    out.append("</section>")
    return "".join(out)


def _cell(x: float, y0: float, size: float, cell: dict[str, int], attrs: str,
          what: str) -> str:
    """One cell: its settings' states stacked from the bottom (done, failed, running,
    pending), classed by the first of failed, running, pending it holds (else done)."""
    total = sum(cell.values())
    said = ", ".join(f"{cell[s]} {s}" for s in STATES if cell[s])
    out = [f'<g class="cell state-{_worst(cell)}" {attrs}><title>{_e(what)}: {said} '
           f"(of {total})</title>"]
    y = float(y0 + size)
    for s in STATES:
        if cell[s]:
            h = size * cell[s] / total
            y -= h
            out.append(f'<rect x="{x}" y="{y:.2f}" width="{size}" height="{h:.2f}" '
                       f'fill="{_COLORS[s]}"/>')
    out.append(f'<rect class="frame" x="{x}" y="{y0}" width="{size}" height="{size}"/></g>')
    return "".join(out)


def _grid(data: ReportData) -> str:
    if data.grid is None:
        return ""
    xf, yf = data.grid
    seen_x = {v for v, _ in data.grid_cells}
    all_xs = [v for v in data.by_value[xf] if v in seen_x]  # (in the heat map's order)
    xs = all_xs[:MAX_GRID]
    shown_x = set(xs)
    seen_y = {w for v, w in data.grid_cells if v in shown_x}
    all_ys = [w for w in data.by_value[yf] if w in seen_y]
    ys = all_ys[:MAX_GRID]
    size = 22 if max(len(xs), len(ys)) <= 30 else 12
    left = 12 + 7 * min(12, max(len(v) for v in ys))
    top = 16 + 7 * min(12, max(len(v) for v in xs))
    width, height = left + len(xs) * size + 10, top + len(ys) * size + 10
    out = [f'<h3 id="grid-title">{_e(yf)} (rows) by {_e(xf)} (columns)</h3>',
           f'<svg id="grid" data-x="{_e(xf)}" data-y="{_e(yf)}" width="{width}" '
           f'height="{height}" role="img" aria-labelledby="grid-t"><title id="grid-t">'
           f"Settings by {_e(xf)} and {_e(yf)}: {len(xs)} by {len(ys)} values</title>",
           f'<text x="{left}" y="11" font-weight="600">{_e(xf)} →</text>']
    for i, v in enumerate(xs):
        lx, ly = left + i * size + size / 2, top - 4
        label = v if len(v) <= 12 else v[:11] + "…"
        out.append(f'<text x="{lx}" y="{ly}" transform="rotate(-60 {lx} {ly})">{_e(label)}'
                   f"</text>")
    for j, w in enumerate(ys):
        label = w if len(w) <= 12 else w[:11] + "…"
        out.append(f'<text x="{left - 4}" y="{top + j * size + size / 2 + 4}" '
                   f'text-anchor="end">{_e(label)}</text>')
        for i, v in enumerate(xs):
            cell = data.grid_cells.get((v, w))
            if cell is not None:
                out.append(_cell(left + i * size, top + j * size, size, cell,
                                 f'data-x="{_e(v)}" data-y="{_e(w)}"',
                                 f"{xf} = {v}, {yf} = {w}"))
    out.append("</svg>")
    if len(all_xs) > len(xs) or len(all_ys) > len(ys):
        out.append(f'<p class="note">Showing the first {len(xs)} of {len(all_xs):,} values '
                   f"of {_e(xf)} and {len(ys)} of {len(all_ys):,} of {_e(yf)}.</p>")
    out.append('<p class="note">A cell with no run of that pair of values is left empty; '
               "choose the two fields with <code>stet report STORE -o OUT --grid X,Y"
               "</code>.</p>")
    return "".join(out)


def _heat_row(ident: str, name: str, values: dict[str, dict[str, int]]) -> str:
    shown = list(values.items())[:MAX_VALUES]
    per_line, size, gap = 36, 26, 2
    label_h = 40
    lines = max(1, math.ceil(len(shown) / per_line))
    width = min(len(shown), per_line) * (size + gap) + 10
    height = lines * (size + label_h)
    out = [f'<h3>{_e(name)}</h3>',
           f'<svg class="heatmap" data-field="{_e(name)}" width="{width}" height="{height}" '
           f'role="img" aria-labelledby="{ident}"><title id="{ident}">Progress by value of '
           f"{_e(name)}: {_n(len(values), 'value')}</title>"]
    for i, (value, cell) in enumerate(shown):
        x = (i % per_line) * (size + gap) + 2
        y0 = (i // per_line) * (size + label_h)
        out.append(_cell(x, y0, size, cell, f'data-field="{_e(name)}" data-value="{_e(value)}"',
                         f"{name} = {value}"))
        label = value if len(value) <= 7 else value[:6] + "…"
        lx, ly = x + size / 2, y0 + size + 4
        out.append(f'<text x="{lx}" y="{ly}" transform="rotate(50 {lx} {ly})">{_e(label)}'
                   f"</text>")
    out.append("</svg>")
    if len(values) > len(shown):
        out.append(f'<p class="note">Showing the first {len(shown)} of '
                   f"{len(values):,} values of {_e(name)}.</p>")
    return "".join(out)


def _durations(data: ReportData) -> str:
    out = ['<section id="durations"><h2>Durations</h2>']
    d = sorted(data.durations)
    if not d:
        out.append("<p>No completed run records a duration.</p></section>")
        return "".join(out)
    n = len(d)

    def q(p: float) -> float:
        return d[min(n - 1, int(p * n))]

    mean = math.fsum(d) / n
    out.append(f'<p id="duration-stats">{_n(n, "completed run")}: min {_seconds(d[0])}, '
               f"median {_seconds(q(0.5))}, mean {_seconds(mean)}, 90% under "
               f"{_seconds(q(0.9))}, max {_seconds(d[-1])}; total {_seconds(math.fsum(d))}"
               f".</p>")
    out.append(_histogram(d))
    out.append("</section>")
    return "".join(out)


def _histogram(d: list[float]) -> str:
    lo, hi = d[0], d[-1]
    log = lo > 0 and hi / lo >= 1000
    bins = 30
    if log:
        a, b = math.log10(lo), math.log10(hi)
    else:
        a, b = lo, hi
    if b <= a:
        b = a + (abs(a) or 1.0) * 0.01 + 1e-12
    counts = [0] * bins
    for v in d:
        t = math.log10(v) if log else v
        counts[min(bins - 1, int((t - a) / (b - a) * bins))] += 1
    W, H, ml, mr, mt, mb = 640, 240, 50, 15, 10, 45
    pw, ph = W - ml - mr, H - mt - mb
    top = max(counts)
    scale = "log scale" if log else "linear scale"
    out = [f'<svg id="duration-histogram" width="{W}" height="{H}" role="img" '
           f'aria-labelledby="dh-t dh-d"><title id="dh-t">Distribution of durations of '
           f"completed runs</title><desc id=\"dh-d\">Histogram: {bins} bins of seconds "
           f"({scale}), runs per bin.</desc>"]
    for y in _ticks(0, top, 4):
        py = mt + ph - ph * y / top
        out.append(f'<line class="grid" x1="{ml}" x2="{W - mr}" y1="{py:.1f}" y2="{py:.1f}"/>'
                   f'<text x="{ml - 5}" y="{py + 4:.1f}" text-anchor="end">{_fmt(y)}</text>')
    bw = pw / bins
    for i, c in enumerate(counts):
        e0, e1 = a + (b - a) * i / bins, a + (b - a) * (i + 1) / bins
        if log:
            e0, e1 = 10 ** e0, 10 ** e1
        h = ph * c / top
        out.append(f'<rect class="bar" x="{ml + i * bw + 0.5:.1f}" y="{mt + ph - h:.1f}" '
                   f'width="{bw - 1:.1f}" height="{h:.1f}"><title>{_seconds(e0)} to '
                   f"{_seconds(e1)}: {_n(c, 'run')}</title></rect>")
    for t in _ticks(a, b, 6):
        px = ml + pw * (t - a) / (b - a)
        shown = _seconds(10 ** t) if log else _seconds(t)
        out.append(f'<text x="{px:.1f}" y="{mt + ph + 15}" text-anchor="middle">{shown}</text>')
    out.append(_axes((W, H, ml, mr, mt, pw, ph), f"duration (seconds, {scale})", "runs"))
    return "".join(out)


def _failures(data: ReportData) -> str:
    out = [f'<section id="failures"><h2>Failures ({data.failure_count:,})</h2>']
    if not data.failure_count:
        out.append("<p>No failed run (that has not completed since).</p></section>")
        return "".join(out)
    out.append('<p class="note">Runs whose latest attempt failed and that have not completed '
               "since, latest first.</p>")
    out.append('<table id="error-types"><tr><th>error</th><th class="n">runs</th></tr>')
    for kind, count in sorted(data.error_types.items(), key=lambda kv: -kv[1]):
        out.append(f'<tr><td class="etype">{_e(kind)}</td><td class="n">{count:,}</td></tr>')
    out.append("</table>")
    out.extend(_failure(f) for f in data.failures)
    if data.failure_count > len(data.failures):
        out.append(f'<p class="note">Showing the latest {MAX_FAILURES} of '
                   f"{data.failure_count:,} failures (stet ls STORE --failed lists them all)."
                   f"</p>")
    out.append("</section>")
    return "".join(out)


def _failure(f: Failure) -> str:
    setting = ", ".join(f"{k}={v}" for k, v in f.values.items())
    call = f"{f.func}({setting})" if f.func else f"({setting})"
    where = " · ".join(x for x in (f.when, f.host) if x)
    tb = (f"<pre class=\"traceback\">{_e(f.traceback)}</pre>" if f.traceback else
          '<p class="note">No traceback recorded.</p>')
    return (f'<details class="failure"><summary><code class="call">{_e(call)}</code>: '
            f'<span class="etype">{_e(f.error_type)}</span>: '
            f'<span class="message">{_e(f.message[:300])}</span></summary>'
            f'<p class="note">{_e(where)}</p><pre class="full-message">{_e(f.message)}</pre>'
            f"{tb}</details>")


def _results(data: ReportData) -> str:
    out = ['<section id="results"><h2>Saved results</h2>']
    if not data.results:
        out.append("<p>No completed run saved a numeric result (save_result=True stores "
                   "what the function returns).</p></section>")
        return "".join(out)
    if data.sampled < data.result_runs:
        out.append(f'<p class="note" id="sample-note">The plots show {data.sampled:,} of the '
                   f"{data.result_runs:,} runs that saved a result (an even sample, at most "
                   f"{MAX_POINTS:,} points per plot).</p>")
    else:
        out.append(f'<p class="note" id="sample-note">The plots show all '
                   f"{data.result_runs:,} runs that saved a result.</p>")
    for i, (name, plots) in enumerate(data.results.items()):
        out.append(f"<h3>{_e(name)}</h3><div class=\"plots\">")
        out.extend(_scatter(f"sc-{i}-{j}", name, f, xs, ys)
                   for j, (f, (xs, ys)) in enumerate(plots.items()))
        out.append("</div>")
    out.append("</section>")
    return "".join(out)


def _numeric(texts: list[str]) -> list[float] | None:
    try:
        out = [float(t) for t in texts]
    except ValueError:
        return None
    return out if all(math.isfinite(x) for x in out) else None


def _scatter(ident: str, name: str, field: str, xs: list[str], ys: list[float]) -> str:
    W, H, ml, mr, mt, mb = 340, 240, 55, 12, 24, 48
    pw, ph = W - ml - mr, H - mt - mb
    ylo, yhi = min(ys), max(ys)
    if yhi <= ylo:
        ylo, yhi = ylo - (abs(ylo) or 1) * 0.5, yhi + (abs(yhi) or 1) * 0.5
    pad = (yhi - ylo) * 0.05
    ylo, yhi = ylo - pad, yhi + pad
    numbers = _numeric(xs)
    ticks: list[tuple[float, str]] = []
    log = False
    if numbers is not None and len(set(numbers)) > _CATEGORIES:
        xlo, xhi = min(numbers), max(numbers)
        log = xlo > 0 and xhi / xlo >= 100
        if log:
            xlo, xhi = math.log10(xlo), math.log10(xhi)
            numbers = [math.log10(v) for v in numbers]
        pad = (xhi - xlo) * 0.05
        xlo, xhi = xlo - pad, xhi + pad
        px = [ml + pw * (v - xlo) / (xhi - xlo) for v in numbers]
        ticks = [(ml + pw * (t - xlo) / (xhi - xlo), _fmt(10 ** t if log else t))
                 for t in _ticks(xlo, xhi, 4)]
    else:  # categories: one column per value, points spread a little within it
        cats = sorted(set(xs), key=lambda t: (_numeric([t]) is None, _numeric([t]) or 0, t))
        where = {c: i for i, c in enumerate(cats)}
        band = pw / len(cats)
        px = [ml + band * (where[t] + 0.5 + 0.6 * (((i * 0.618034) % 1) - 0.5))
              for i, t in enumerate(xs)]
        step = max(1, math.ceil(len(cats) / 8))
        ticks = [(ml + band * (i + 0.5), c if len(c) <= 10 else c[:9] + "…")
                 for i, c in enumerate(cats) if i % step == 0]
    title = f"{name} against {field}"
    out = [f'<svg class="scatter" data-result="{_e(name)}" data-field="{_e(field)}" '
           f'width="{W}" height="{H}" role="img" aria-labelledby="{ident}-t {ident}-d">'
           f'<title id="{ident}-t">{_e(title)}</title><desc id="{ident}-d">'
           f"{_n(len(ys), 'run')}: {_e(field)} across{' (log scale)' if log else ''}, "
           f"{_e(name)} up.</desc>"
           f'<text x="{ml}" y="14" font-weight="600">{_e(title)}</text>']
    for t in _ticks(ylo, yhi, 4):
        py = mt + ph - ph * (t - ylo) / (yhi - ylo)
        out.append(f'<line class="grid" x1="{ml}" x2="{W - mr}" y1="{py:.1f}" y2="{py:.1f}"/>'
                   f'<text x="{ml - 4}" y="{py + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    for x, label in ticks:
        out.append(f'<text x="{x:.1f}" y="{mt + ph + 14}" text-anchor="middle">'
                   f"{_e(label)}</text>")
    out.extend(f'<circle class="pt" cx="{x:.1f}" cy="{mt + ph - ph * (y - ylo) / (yhi - ylo):.1f}"'
               f' r="2.5"/>' for x, y in zip(px, ys, strict=True))
    out.append(_axes((W, H, ml, mr, mt, pw, ph), f"{field}{' (log scale)' if log else ''}",
                     name))
    return "".join(out)


def render(data: ReportData) -> str:
    """The whole page of ``data``, as text."""
    return "".join([
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>stet report: {_e(data.store)}</title><style>{_CSS}</style></head><body>",
        _header(data), _progress(data), _durations(data), _failures(data), _results(data),
        "</body></html>\n"])
