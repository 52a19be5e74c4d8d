"""Prompt files for ``cellsam2 track``: clicks in CSV, clicks and boxes in JSON.

CSV: a header with the columns ``object_id,frame,x,y`` and optionally ``label`` (1 = on the cell,
the default; 0 = not on it), then one click per row::

    object_id,frame,x,y,label
    1,0,12.5,30,1
    2,0,40,18,1

JSON: a list of entries (or ``{"prompts": [...]}``), each with ``object_id``, ``frame`` and
``points`` (``[[x, y], ...]``, optional ``labels``) and/or ``box`` (``[x0, y0, x1, y1]``)::

    [{"object_id": 1, "frame": 0, "points": [[12.5, 30]], "labels": [1]},
     {"object_id": 2, "frame": 0, "box": [35, 10, 48, 26]}]

``frame`` is the CTC frame index (the number in ``t000.tif``); x is the column and y the row in
pixels of the original image. Errors name the file and the line (CSV) or entry (JSON).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .prompts import BoxPrompt, PointPrompt


@dataclass(frozen=True)
class PromptEntry:
    """One prompt from a file, with where it came from (for error messages)."""

    object_id: int
    frame: int
    prompt: PointPrompt | BoxPrompt
    where: str


class PromptFileError(ValueError):
    """A prompt file is malformed; the message names the file and line or entry."""


def _int(value: Any, name: str, where: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PromptFileError(f"{where}: {name} must be an integer, got {value!r}") from None
    if not math.isfinite(number) or number != int(number):
        raise PromptFileError(f"{where}: {name} must be an integer, got {value!r}")
    return int(number)


def _float(value: Any, name: str, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise PromptFileError(f"{where}: {name} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise PromptFileError(f"{where}: {name} must be finite, got {value!r}")
    return number


def _undecodable(path: Path, exc: UnicodeDecodeError) -> PromptFileError:
    return PromptFileError(
        f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
        "save it as UTF-8 (e.g. Excel's 'CSV UTF-8')"
    )


def read_csv(path: Path) -> list[PromptEntry]:
    try:
        return _read_csv(path)
    except UnicodeDecodeError as exc:
        raise _undecodable(path, exc) from None


def _read_csv(path: Path) -> list[PromptEntry]:
    entries = []
    # utf-8-sig: spreadsheet programs start their UTF-8 CSV files with a byte-order mark
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in ("object_id", "frame", "x", "y") if c not in columns]
        if missing:
            raise PromptFileError(
                f"{path} line 1: header must have columns object_id,frame,x,y[,label]; "
                f"missing {', '.join(missing)} (got {','.join(columns) or 'nothing'})"
            )
        reader.fieldnames = columns
        for row in reader:
            where = f"{path} line {reader.line_num}"
            if None in row or any(
                row.get(c) in (None, "") for c in ("object_id", "frame", "x", "y")
            ):
                raise PromptFileError(f"{where}: expected {len(columns)} values, got {row!r}")
            label = row.get("label")
            label = 1 if label in (None, "") else _int(label, "label", where)
            point = [[_float(row["x"], "x", where), _float(row["y"], "y", where)]]
            entries.append(
                PromptEntry(
                    _int(row["object_id"], "object_id", where),
                    _int(row["frame"], "frame", where),
                    PointPrompt(point, [label]),
                    where,
                )
            )
    if not entries:
        raise PromptFileError(f"{path}: no prompts (only a header)")
    return entries


def read_json(path: Path) -> list[PromptEntry]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise _undecodable(path, exc) from None
    except json.JSONDecodeError as exc:
        raise PromptFileError(f"{path} line {exc.lineno}: invalid JSON ({exc.msg})") from None
    if isinstance(data, dict):
        data = data.get("prompts")
    if not isinstance(data, list) or not data:
        raise PromptFileError(
            f"{path}: expected a non-empty list of prompts (or {{'prompts': [...]}})"
        )
    entries = []
    for k, item in enumerate(data, start=1):
        where = f"{path} entry {k}"
        if not isinstance(item, dict):
            raise PromptFileError(f"{where}: expected an object, got {item!r}")
        unknown = sorted(set(item) - {"object_id", "frame", "points", "labels", "box"})
        if unknown:
            raise PromptFileError(f"{where}: unknown key(s) {', '.join(unknown)}")
        for key in ("object_id", "frame"):
            if key not in item:
                raise PromptFileError(f"{where}: missing '{key}'")
        oid = _int(item["object_id"], "object_id", where)
        frame = _int(item["frame"], "frame", where)
        if "points" not in item and "box" not in item:
            raise PromptFileError(f"{where}: needs 'points' and/or 'box'")
        if "box" in item:
            entries.append(PromptEntry(oid, frame, BoxPrompt(item["box"]), where))
        if "points" in item:
            entries.append(
                PromptEntry(oid, frame, PointPrompt(item["points"], item.get("labels")), where)
            )
        elif "labels" in item:
            raise PromptFileError(f"{where}: 'labels' without 'points'")
    return entries


def read_prompt_file(path: str | Path) -> list[PromptEntry]:
    """Parse a ``.csv`` or ``.json`` prompt file (see the module docstring for the format)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prompt file not found")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv(path)
    if suffix == ".json":
        return read_json(path)
    raise PromptFileError(f"{path}: prompt files must end in .csv or .json")
