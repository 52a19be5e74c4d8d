"""Divisions on the tracking path (issue 13): TRA, SEG, LNK, BC(0), BC(1) and division F1 of
``cellsam2 track`` on held-out synthetic movies, per division mode and seeding.

For every test movie of ``--data`` (a CTC tree from scripts/make_demo_data.py) and every
combination of ``--modes`` (learned / learned+split / split / off) and ``--seedings`` (``gt``:
the GT masks of the first frame; ``auto``: no prompts, the cells the model finds), it runs::

    cellsam2 track MOVIE --prompts gt-first-frame|auto --model M --divisions MODE \
        --direction forward --out RES

and scores RES against the movie's GT with py-ctcmetrics. ``--thresholds 0.1,0.3,0.5`` repeats
the ``learned`` (and ``learned+split``) runs at each ``--div-obj-score-thresh``, and
``--iou-thresholds`` at each ``--div-iou-thresh`` (choose them on ``--split val`` movies,
never on the test movies they are reported on). Division F1 is
``2 tp / (2 tp + fp + fn)`` over py-ctcmetrics' division counts at zero frame tolerance (the
counts behind BC(0)), summed over the movies of a style. A result in which nothing was found
scores 0 everywhere (py-ctcmetrics leaves it unscored). Writes one JSON with every movie's
scores and the per-style means.

    python scripts/division_bars.py --model M --data WORK/data --out docs/results/x.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import tempfile
from pathlib import Path

import tifffile
from cli_run import cellsam2
from make_demo_data import movies_by_style

from napari_cellsam2.evaluation import evaluate_folders
from napari_cellsam2.tracking.division_config import LEARNED_MODES, DivisionConfig

METRICS = ("TRA", "SEG", "LNK", "BC(0)", "BC(1)", "tp_div(0)", "fp_div(0)", "fn_div(0)")
PROMPTS = {"gt": "gt-first-frame", "auto": "auto"}


def _track(
    seq: Path,
    model: str,
    mode: str,
    seeding: str,
    out: Path,
    threshold: str,
    iou_threshold: str,
    method: str,
    new_cells: int,
    extra: list[str],
) -> None:
    cellsam2(
        "track", str(seq),
        "--prompts", PROMPTS[seeding], "--model", model, "--divisions", mode,
        "--direction", "forward", "--device", "cpu", "--out", str(out),
        "--div-obj-score-thresh", threshold, "--div-iou-thresh", iou_threshold,
        "--detect-method", method, "--detect-new-cells", str(new_cells), *extra,
    )  # fmt: skip


def _style(data: Path, seq: Path) -> str:
    """The style a movie came from (make_demo_data.py's styles.txt)."""
    styles = {folder: style for style, folder in movies_by_style(data, seq.parent.parent.name)}
    return styles.get(seq, "unknown")


def _summary(rows: list[dict]) -> dict:
    out: dict = {}

    def key_of(r: dict) -> tuple[str, ...]:
        return r["style"], r["mode"], r["seeding"], r["threshold"], r["iou_threshold"]

    for key in sorted({key_of(r) for r in rows}):
        group = [r for r in rows if key_of(r) == key]
        mean = {}
        for metric in ("TRA", "SEG", "LNK", "BC(0)", "BC(1)"):
            values = [r[metric] for r in group if r[metric] is not None]
            mean[metric] = round(sum(values) / len(values), 4) if values else None
        tp, fp, fn = (sum(r[f"{k}_div(0)"] or 0 for r in group) for k in ("tp", "fp", "fn"))
        mean["div_F1"] = round(2 * tp / (2 * tp + fp + fn), 4) if tp + fp + fn else None
        mean.update(tp_div=tp, fp_div=fp, fn_div=fn, movies=len(group))
        out["/".join(key)] = mean
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--modes", default="learned,split,off")
    parser.add_argument("--seedings", default="gt,auto")
    parser.add_argument("--split", default="test")
    parser.add_argument("--detect-method", default="auto", help="auto seeding: auto, heatmap, grid")
    parser.add_argument(
        "--detect-new-cells", type=int, default=0, help="cellsam2 track's --detect-new-cells N"
    )
    default = DivisionConfig()
    parser.add_argument(
        "--thresholds",
        default=str(default.div_obj_score_thresh),
        help="learned: division thresholds (div_obj_score_thresh)",
    )
    parser.add_argument(
        "--iou-thresholds",
        default=str(default.div_iou_thresh),
        help="learned: daughters' predicted-IoU thresholds (div_iou_thresh)",
    )
    parser.add_argument(
        "--track-options",
        default="",
        help="more `cellsam2 track` options for every run, e.g. '--split-min-fraction 0.4'",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    extra = shlex.split(args.track_options)
    movies = sorted((args.data / args.split / "CTC").glob("[0-9][0-9]"))
    learned = list(itertools.product(args.thresholds.split(","), args.iou_thresholds.split(",")))
    # split / off ignore the thresholds: their rows carry the config's defaults
    defaults = (str(default.div_obj_score_thresh), str(default.div_iou_thresh))
    runs = [
        (mode, threshold, iou)
        for mode in args.modes.split(",")
        for threshold, iou in (learned if mode in LEARNED_MODES else [defaults])
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seq in movies:
            for mode, threshold, iou in runs:
                for seeding in args.seedings.split(","):
                    res = Path(tmp) / f"{seq.name}_{mode}_{threshold}_{iou}_{seeding}_RES"
                    _track(
                        seq, args.model, mode, seeding, res, threshold, iou,
                        args.detect_method, args.detect_new_cells, extra,
                    )  # fmt: skip
                    scores = evaluate_folders(seq.with_name(seq.name + "_GT"), res, METRICS)
                    row = {"movie": seq.name, "style": _style(args.data, seq), "mode": mode,
                           "seeding": seeding, "threshold": threshold,
                           "iou_threshold": iou}  # fmt: skip
                    # an empty result (nothing found) is left unscored by py-ctcmetrics: 0
                    empty = not any(tifffile.imread(f).any() for f in res.glob("mask*.tif"))
                    row.update({m: 0.0 if empty else scores.get(m) for m in METRICS})
                    row["empty"] = empty
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    result = {"model": args.model, "data": str(args.data),
              "detect_new_cells": args.detect_new_cells,
              "track_options": args.track_options, "rows": rows,
              "summary": _summary(rows)}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
