"""Output for the CLI: results on stdout (a table, or exactly one JSON document), the rest on stderr."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence


def strict(data):
    """`data` with every non-finite float (NaN, ±inf, numpy's too) as None, numpy scalars as Python numbers
    and tuples as lists: what strict JSON can carry (json.dumps writes bare NaN, which parsers reject)."""
    if isinstance(data, Mapping):
        return {key: strict(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [strict(value) for value in data]
    if isinstance(data, bool) or data is None or isinstance(data, (int, str)):
        return data
    if hasattr(data, "item") and hasattr(data, "dtype") and getattr(data, "ndim", None) == 0:  # a numpy scalar
        return strict(data.item())
    if hasattr(data, "tolist") and hasattr(data, "dtype"):  # a numpy array
        return strict(data.tolist())
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    return data


def emit_json(data) -> None:
    """Exactly one strict JSON document on stdout: non-finite numbers become null, never bare NaN."""
    sys.stdout.write(json.dumps(strict(data), indent=2, allow_nan=False, default=str) + "\n")


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
