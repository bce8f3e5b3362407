"""Output for the CLI: results on stdout (a table, or exactly one JSON document), the rest on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence


def emit_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def emit(text: str) -> None:
    sys.stdout.write(text + "\n")


def note(text: str) -> None:
    """Progress, warnings and hints: stderr, so stdout stays the result alone."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
