"""HTML for the console: Jinja2 templates with autoescaping on (every value from a repository, a replica or a
user is escaped), a few formatting filters, and a small inline SVG bar chart (no front-end build step)."""

from __future__ import annotations

import json
from functools import lru_cache

from markupsafe import Markup, escape

NONE = "-"  # a missing value, as the CLI's tables show it
STATE_CLASS = {"in sync": "ok", "drift": "bad", "unreachable": "bad", "timed out": "bad", "key refused": "warn",
               "no version": "muted"}


@lru_cache(maxsize=1)
def environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader("controlplane.console", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True), undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=num, pct=pct, short=short, when=when, jsonish=jsonish)
    env.globals.update(NONE=NONE, STATE_CLASS=STATE_CLASS, bars=bars)
    return env


def render(template: str, **context) -> str:
    return environment().get_template(template).render(**context)


def num(value, digits: int = 2) -> str:
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def pct(value) -> str:
    return NONE if value is None else f"{100 * value:.1f}%"


def short(sha: str | None, n: int = 12) -> str:
    return NONE if not sha else sha[:n]


def when(iso: str | None) -> str:
    """An ISO time without its sub-seconds and offset noise: 2026-11-26 17:23:14 UTC."""
    if not iso:
        return NONE
    text = iso.replace("T", " ")
    return text[:19] + (" UTC" if iso.endswith(("+00:00", "Z")) else "")


def jsonish(value) -> str:
    if value is None:
        return NONE
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def bars(rows: list[dict], keys: tuple[str, ...], unit: str, width: int = 420) -> Markup:
    """Horizontal bars, one group per version, one bar per key (e.g. p50 and p99). Values that are missing draw
    no bar and say so; the scale is the largest value shown."""
    values = [row.get(k) for row in rows for k in keys if row.get(k) is not None]
    top = max(values, default=0.0) or 1.0
    bar_h, gap, label_w = 12, 8, 70
    height = len(rows) * (len(keys) * bar_h + gap) + gap
    parts = [(f'<svg class="chart" role="img" width="{width + label_w + 90}" height="{height}" '
              f'aria-label="{escape(", ".join(keys))} per version">')]
    y = gap
    for row in rows:
        parts.append(f'<text x="0" y="{y + bar_h}" class="label">v{escape(row["version"])}</text>')
        for i, key in enumerate(keys):
            value = row.get(key)
            length = 0 if value is None else max(1.0, width * value / top)
            text = NONE if value is None else f"{value:.2f} {unit}"
            parts.append(f'<rect x="{label_w}" y="{y}" width="{length:.1f}" height="{bar_h - 2}" class="bar{i}">'
                         f'<title>{escape(key)}: {escape(text)}</title></rect>')
            parts.append(f'<text x="{label_w + length + 4:.1f}" y="{y + bar_h - 2}" class="value">{escape(key)} {escape(text)}</text>')
            y += bar_h
        y += gap
    parts.append("</svg>")
    return Markup("".join(parts))
