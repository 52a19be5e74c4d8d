"""Plain-text and JSON views of score rows (one row per result, mode or checkpoint)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping

from .metrics import is_count

Rows = Mapping[str, Mapping[str, float | None]]


def _cell(value: float | None, column: str) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:g}" if is_count(column) else f"{value:.4f}"


def format_table(rows: Rows) -> str:
    """An aligned text table: rows = names, columns = every metric seen (first-seen order).

    Missing or undefined scores show as ``-``.
    """
    columns: list[str] = []
    for scores in rows.values():
        columns.extend(k for k in scores if k not in columns)
    body = [[name, *(_cell(scores.get(c), c) for c in columns)] for name, scores in rows.items()]
    header = ["", *columns]
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in [header, *body]
    ]
    return "\n".join(lines)


def scores_to_json(scores: Mapping, indent: int = 2) -> str:
    """JSON text for one score dict or a dict of rows; NaN becomes ``null`` (valid JSON)."""

    def clean(obj):
        if isinstance(obj, Mapping):
            return {str(k): clean(v) for k, v in obj.items()}
        if isinstance(obj, float) and math.isnan(obj):
            return None
        return obj

    return json.dumps(clean(scores), indent=indent, allow_nan=False)
