"""Pieces of the HTML monitor report: inline SVG charts (a real time axis) and tables with flagged rows
marked. No JavaScript and no external file: the page is one self-contained document."""

from __future__ import annotations

import html
from datetime import datetime

W, H, PAD_L, PAD_R, PAD_T, PAD_B = 760, 260, 56, 16, 16, 40


def esc(value) -> str:
    return html.escape(str(value))


def pct(value, digits: int = 1) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def num(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}g}" if abs(value) >= 1e4 or (value and abs(value) < 1e-3) else f"{value:.{digits}f}"


def _t(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def accuracy_chart(windows: list[dict], reference: float | None, title: str) -> str:
    """Estimated accuracy (line, with its 95% band) and realised accuracy (dots) per window, on a time axis."""
    if not windows:
        return ""
    t0, t1 = _t(windows[0]["start"]), _t(windows[-1]["end"])
    mids = [(_t(w["start"]) + _t(w["end"])) / 2 for w in windows]
    values = [v for w in windows for v in (w.get("estimated"), w.get("realised"), *(w.get("band") or [])) if v is not None]
    values += [reference] if reference is not None else []
    lo = max(0.0, min(values, default=0.0) - 0.05)
    hi = min(1.0, max(values, default=1.0) + 0.02)
    if hi - lo < 0.1:
        lo = max(0.0, hi - 0.1)

    def x(t: float) -> float:
        return PAD_L + (t - t0) / max(t1 - t0, 1e-9) * (W - PAD_L - PAD_R)

    def y(v: float) -> float:
        return PAD_T + (hi - v) / (hi - lo) * (H - PAD_T - PAD_B)

    parts = [f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{esc(title)}">']
    for i in range(5):  # y grid and labels
        v = lo + (hi - lo) * i / 4
        parts.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y(v):.1f}" y2="{y(v):.1f}" class="grid"/>'
                     f'<text x="{PAD_L - 6}" y="{y(v) + 4:.1f}" class="tick" text-anchor="end">{v * 100:.0f}%</text>')
    for i in range(6):  # the time axis: real clock times
        t = t0 + (t1 - t0) * i / 5
        label = datetime.fromtimestamp(t).astimezone().strftime("%H:%M" if t1 - t0 < 86400 else "%d %b %H:%M")
        parts.append(f'<text x="{x(t):.1f}" y="{H - PAD_B + 18}" class="tick" text-anchor="middle">{label}</text>')
    parts.append(f'<text x="{W - PAD_R}" y="{H - 4}" class="tick" text-anchor="end">time (local)</text>')
    band = [(m, w["band"]) for m, w in zip(mids, windows) if w.get("band")]
    if band:
        upper = " ".join(f"{x(m):.1f},{y(b[1]):.1f}" for m, b in band)
        lower = " ".join(f"{x(m):.1f},{y(b[0]):.1f}" for m, b in reversed(band))
        parts.append(f'<polygon points="{upper} {lower}" class="band"/>')
    est = [(m, w["estimated"]) for m, w in zip(mids, windows) if w.get("estimated") is not None]
    if est:
        parts.append('<polyline class="estimated" points="' + " ".join(f"{x(m):.1f},{y(v):.1f}" for m, v in est) + '"/>')
    for m, w in zip(mids, windows):
        if w.get("realised") is not None:
            parts.append(f'<circle class="realised" cx="{x(m):.1f}" cy="{y(w["realised"]):.1f}" r="5">'
                         f'<title>realised {pct(w["realised"])} over {w["labelled"]} labels</title></circle>')
    if reference is not None:
        parts.append(f'<line class="reference" x1="{PAD_L}" x2="{W - PAD_R}" y1="{y(reference):.1f}" y2="{y(reference):.1f}"/>')
    parts.append("</svg>")
    legend = ('<p class="legend"><span class="key est"></span>estimated (no labels) with its 95% band '
              '<span class="key real"></span>realised (labelled) <span class="key ref"></span>reference</p>')
    return f"<figure><figcaption>{esc(title)}</figcaption>{''.join(parts)}{legend}</figure>"


def confusion_table(quality: dict) -> str:
    labels, matrix = quality["labels"], quality["confusion"]
    peak = max((v for row in matrix for v in row), default=1) or 1
    head = "".join(f"<th>{esc(label)}</th>" for label in labels)
    rows = []
    for label, row in zip(labels, matrix):
        cells = "".join(f'<td class="{"diag" if i == j else "off" if v else ""}" style="--a:{v / peak:.2f}">{v}</td>'
                        for j, v in enumerate(row) for i in [labels.index(label)])
        rows.append(f"<tr><th>{esc(label)}</th>{cells}<td class='total'>{sum(row)}</td></tr>")
    return (f'<table class="confusion"><caption>confusion matrix: rows true class, columns predicted class '
            f'(counts of labelled predictions)</caption><tr><th>true \\ predicted</th>{head}<th>total</th></tr>{"".join(rows)}</table>')


def table(caption: str, headers: list[str], rows: list[tuple[bool, list]], css: str = "") -> str:
    """`rows`: (flagged, cells); flagged rows are marked (class and a ⚑ in the first cell)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(f'<tr class="{"flagged" if flagged else ""}">'
                   + "".join(f"<td>{'⚑ ' if flagged and i == 0 else ''}{esc(c)}</td>" for i, c in enumerate(cells)) + "</tr>"
                   for flagged, cells in rows)
    return f'<table class="{css}"><caption>{esc(caption)}</caption><tr>{head}</tr>{body}</table>'


def bars(caption: str, items: list[tuple[str, float, float]]) -> str:
    """Side-by-side shares (reference, window) per class."""
    rows = "".join(f'<tr><th>{esc(name)}</th><td><div class="bar ref" style="width:{a * 100:.1f}%"></div>'
                   f'<div class="bar cur" style="width:{b * 100:.1f}%"></div></td><td>{pct(a)} → {pct(b)}</td></tr>'
                   for name, a, b in items)
    return f'<table class="bars"><caption>{esc(caption)}</caption><tr><th>class</th><th>reference / window</th><th>share</th></tr>{rows}</table>'


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f4f6f9;color:#1d2433}
header{background:#1d2433;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}header p{margin:4px 0 0;color:#b8c2d6}
main{padding:16px 32px;max-width:1280px}section.version{background:#fff;border-radius:10px;padding:16px 24px;margin:16px 0;
box-shadow:0 1px 3px rgba(0,0,0,.08)}h2{margin:4px 0 12px}h3{margin:20px 0 8px;font-size:16px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:10px}
.card{border-radius:8px;padding:10px 12px;border-left:6px solid #98a2b3;background:#f8f9fb}
.card .name{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#5b6578}.card .value{font-size:18px;font-weight:600}
.card .detail{font-size:12px;color:#5b6578}.card.passed{border-color:#12b76a}.card.breached{border-color:#f04438;background:#fff4f3}
.card.notmade{border-color:#f79009;background:#fffaeb}.card.info{border-color:#2e90fa}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}caption{text-align:left;color:#5b6578;padding:4px 0}
th,td{border-bottom:1px solid #e4e7ec;padding:4px 10px;text-align:right}th{background:#f2f4f7}
tr.flagged td{background:#fef3f2;color:#b42318;font-weight:600}
table.confusion td{background:rgba(46,144,250,var(--a));min-width:34px;text-align:center}
table.confusion td.off{background:rgba(240,68,56,calc(var(--a) + .15))}table.confusion td.total{background:#f2f4f7}
.chart{width:100%;max-width:820px;height:auto;background:#fff}.grid{stroke:#e4e7ec}.tick{font-size:11px;fill:#5b6578}
.band{fill:rgba(46,144,250,.18)}.estimated{fill:none;stroke:#2e90fa;stroke-width:2.5}.realised{fill:#f04438}
.reference{stroke:#12b76a;stroke-dasharray:6 4;stroke-width:2}figure{margin:8px 0}figcaption{font-weight:600}
.legend{font-size:12px;color:#5b6578}.key{display:inline-block;width:14px;height:10px;margin:0 4px 0 12px}
.key.est{background:#2e90fa}.key.real{background:#f04438;border-radius:50%}.key.ref{border-top:2px dashed #12b76a;height:0}
.bar{height:7px;border-radius:3px;margin:1px 0;min-width:1px}.bar.ref{background:#98a2b3}.bar.cur{background:#2e90fa}
table.bars td:nth-child(2){width:260px;text-align:left}.grid2{display:grid;grid-template-columns:1fr 1fr;gap:16px}
.note{color:#5b6578;font-size:12px}details{margin:8px 0}
"""
