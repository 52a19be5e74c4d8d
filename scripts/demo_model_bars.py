"""Measure a model against the demo-model bars (issue 10) with the CLI, on fresh test movies.

    python scripts/demo_model_bars.py --model demo --out docs/results/demo_model.json [--seed 7]

1. ``scripts/make_demo_data.py --seed SEED`` writes fresh movies (seeds never used in training:
   the shipped model trained on ``--seed 0``); its ``test`` split holds 2 movies per style.
2. Per movie, with the real ``cellsam2`` command:
   - ``cellsam2 track MOVIE --prompts gt-first-frame --model M --evaluate GT``: seeded from the
     GT masks of the first frame;
   - ``cellsam2 track MOVIE --prompts clicks.csv --model M --evaluate GT``: one click per cell
     of the first frame, at the GT centroid (the prompt file is written here);
   - the click run's first frame against the GT gives each cell's single-click mask IoU;
   - ``cellsam2 track MOVIE --prompts auto --model M --evaluate GT``: no prompts at all, the
     cells found on the first frame (``tracking.detect``, default thresholds); its first frame
     against the GT gives the detection's precision and recall (a found cell matches a GT cell
     at mask IoU >= 0.5, each GT cell at most once).
   ``--track-options`` adds the same ``cellsam2 track`` options to every run (divisions, new
   cells); the frame-0 measures (click IoU, detection) do not depend on them.
3. Prints a table per style (mean over its movies; click IoU: median over cells; detection:
   pooled over movies) and writes the JSON. The bars: GT-seeded TRA >= 0.90 and SEG >= 0.75,
   click-seeded TRA >= 0.85, click IoU >= 0.85.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile
from cli_run import cellsam2
from make_demo_data import movies_by_style

from napari_cellsam2.evaluation.detection import detection_counts

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("TRA", "SEG", "DET", "LNK")


def _scores(
    seq: Path, prompts: str, model: str, out: Path, device: str, extra: list[str]
) -> dict[str, float]:
    gt = seq.with_name(seq.name + "_GT")
    cellsam2(
        "track",
        str(seq),
        "--prompts",
        prompts,
        "--model",
        model,
        "--out",
        str(out),
        "--device",
        device,
        "--direction",
        "forward",
        *extra,
    )
    report = out.with_suffix(".json")
    cellsam2("evaluate", "--gt", str(gt), "--res", str(out), "--json", str(report))
    scores = json.loads(report.read_text())
    # an empty result is left unscored by py-ctcmetrics; it found nothing: 0 (LNK stays None)
    empty = not any(tifffile.imread(f).any() for f in out.glob("mask*.tif"))
    return {k: (0.0 if empty and k != "LNK" else scores.get(k)) for k in METRICS}


def _click_file(seq: Path, path: Path) -> np.ndarray:
    """One click per GT cell of the first frame, at its centroid; returns that GT frame."""
    gt_dir = seq.with_name(seq.name + "_GT") / "TRA"
    first = tifffile.imread(sorted(gt_dir.glob("man_track*.tif"))[0])
    rows = ["object_id,frame,x,y,label"]
    for label in np.unique(first[first > 0]):
        ys, xs = np.nonzero(first == label)
        rows.append(f"{label},0,{xs.mean():.2f},{ys.mean():.2f},1")
    path.write_text("\n".join(rows) + "\n")
    return first


def _click_ious(first_gt: np.ndarray, res: Path) -> list[float]:
    """IoU of each cell's frame-0 mask (object ID = GT label in the click file) with its GT."""
    got = tifffile.imread(sorted(res.glob("mask*.tif"))[0])
    ious = []
    for label in np.unique(first_gt[first_gt > 0]):
        a, b = got == label, first_gt == label
        ious.append(float((a & b).sum() / max(1, (a | b).sum())))
    return ious


def _means(runs: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Mean per metric over movies, over the movies where it is defined (None if none)."""
    out: dict[str, float | None] = {}
    for m in METRICS:
        values = [r[m] for r in runs if r.get(m) is not None]
        out[m] = float(np.mean(values)) if values else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--track-options",
        default="",
        help="more `cellsam2 track` options for every run, e.g. '--divisions split "
        "--detect-new-cells 1' (default: none, the CLI's defaults)",
    )
    args = parser.parse_args()
    extra = shlex.split(args.track_options)
    with tempfile.TemporaryDirectory(prefix="demo-bars-") as tmp:
        data = Path(tmp) / "data"
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "make_demo_data.py"),
                "--out",
                str(data),
                "--seed",
                str(args.seed),
            ],
            check=True,
            capture_output=True,
        )
        styles: dict[str, list[Path]] = {}
        for style, seq in movies_by_style(data):
            styles.setdefault(style, []).append(seq)
        results = {}
        for style, movies in styles.items():
            per = []
            for seq in movies:
                work = Path(tmp) / style / seq.name
                work.mkdir(parents=True)
                first = _click_file(seq, work / "clicks.csv")
                runs = {
                    name: _scores(
                        seq, prompts, args.model, work / f"{name}_RES", args.device, extra
                    )
                    for name, prompts in (
                        ("gt", "gt-first-frame"),
                        ("click", str(work / "clicks.csv")),
                        ("auto", "auto"),
                    )
                }
                per.append(
                    {
                        "movie": seq.name,
                        "gt": runs["gt"],
                        "clicks": runs["click"],
                        "click_iou": _click_ious(first, work / "click_RES"),
                        "auto": runs["auto"],
                        "detection": detection_counts(
                            tifffile.imread(sorted((work / "auto_RES").glob("mask*.tif"))[0]),
                            first,
                        ),
                    }
                )
            results[style] = {
                "movies": per,
                "gt": _means([p["gt"] for p in per]),
                "clicks": _means([p["clicks"] for p in per]),
                "click_iou_median": float(np.median([i for p in per for i in p["click_iou"]])),
                "auto": _means([p["auto"] for p in per]),
                "detection": {
                    k: sum(p["detection"][k] for p in per) for k in ("found", "gt", "matched")
                },
            }
    summary = {
        "model": args.model,
        "seed": args.seed,
        "track_options": args.track_options,
        "styles": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(
        "| style | TRA (GT seeds) | SEG (GT seeds) | TRA (clicks) | click IoU (median) "
        "| TRA (automatic) | detection precision / recall |"
    )
    print("|---|---|---|---|---|---|---|")
    for style, r in results.items():
        d = r["detection"]
        precision, recall = d["matched"] / max(1, d["found"]), d["matched"] / max(1, d["gt"])
        print(
            f"| {style} | {r['gt']['TRA']:.3f} | {r['gt']['SEG']:.3f} | "
            f"{r['clicks']['TRA']:.3f} | {r['click_iou_median']:.3f} | {r['auto']['TRA'] or 0:.3f} "
            f"| {precision:.2f} / {recall:.2f} ({d['matched']} of {d['found']} found, "
            f"{d['gt']} cells) |"
        )


if __name__ == "__main__":
    main()
