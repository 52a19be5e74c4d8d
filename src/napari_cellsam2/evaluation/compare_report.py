"""Views of a comparison (what :func:`.compare.compare` returns): a text table and a figure."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["compare_rows", "format_compare_table", "plot_compare"]

_METRICS = ("TRA", "SEG", "DET", "LNK")


def compare_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per mode and seeding: metrics, parameters, steps, time, memory, clicks."""
    rows = []
    for mode, r in summary["modes"].items():
        for how, scores in r["metrics"].items():
            a = r.get("annotation") or {}
            rows.append(
                {
                    "mode": mode if len(r["metrics"]) == 1 else f"{mode} ({how})",
                    **{m: scores["mean"].get(m) for m in _METRICS},
                    "trainable": r["trainable_params"],
                    "steps": r["steps"],
                    "train_s": r["train_seconds"],
                    "eval_s": r["eval_seconds"],
                    "peak_MB": max(v for v in (r["train_peak_mb"], r["eval_peak_mb"]) if v),
                    "clicks/track": a.get("clicks_per_track"),
                    "clicks/100fr": a.get("clicks_per_100_frames"),
                }
            )
    return rows


def _cell(value: Any, column: str) -> str:
    if value is None:
        return "-"
    if column in _METRICS:
        return f"{value:.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.1f}" if column.endswith(("_s", "MB")) else f"{value:.2f}"


def format_compare_table(summary: dict[str, Any]) -> str:
    """An aligned text table of :func:`compare_rows` plus a line on how memory was measured."""
    rows = compare_rows(summary)
    columns = list(rows[0]) if rows else ["mode"]
    body = [[_cell(r[c], c) if c != "mode" else r[c] for c in columns] for r in rows]
    widths = [max(len(x) for x in [c, *(b[i] for b in body)]) for i, c in enumerate(columns)]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in [columns, *body]
    ]
    kinds = {r.get("memory_kind") for r in summary["modes"].values()}
    lines.append(f"peak memory: {', '.join(sorted(k for k in kinds if k))} (max of train, eval)")
    return "\n".join(lines)


def _running_mean(steps: list[int], values: list[float]) -> tuple[list[int], list[float]]:
    """Per-step losses are noisy (one clip, random prompts): a centred running mean over about
    a tenth of the run shows the trend."""
    window = max(1, len(values) // 10)
    if window == 1:
        return steps, values
    kernel = np.ones(window) / window
    smooth = np.convolve(values, kernel, mode="valid")
    start = (window - 1) // 2
    return steps[start : start + len(smooth)], smooth.tolist()


def plot_compare(summary: dict[str, Any], path: str | Path) -> Path:
    """``compare.png``: metrics per mode (bars per seeding), correction clicks per track, and
    the loss curves of the fine-tuning runs. Written atomically."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, safe inside napari

    modes = summary["modes"]
    names = list(modes)
    seedings = list(next(iter(modes.values()))["metrics"]) if modes else []
    fig = Figure(figsize=(14, 4.2), layout="constrained")
    ax_metrics, ax_clicks, ax_loss = fig.subplots(1, 3, width_ratios=[2.2, 1, 1.6])

    groups = [(how, m) for how in seedings for m in _METRICS]
    width = 0.8 / max(1, len(names))
    for k, mode in enumerate(names):
        heights = [modes[mode]["metrics"][how]["mean"].get(m) for how, m in groups]
        xs = [i + (k - (len(names) - 1) / 2) * width for i in range(len(groups))]
        values = [h if h is not None else 0.0 for h in heights]
        ax_metrics.bar(xs, values, width, label=mode, color=f"C{k}")
    labels = [m if len(seedings) == 1 else f"{m}\n{how}" for how, m in groups]
    ax_metrics.set_xticks(range(len(groups)), labels)
    ax_metrics.set_ylim(0, 1.05)
    ax_metrics.set_ylabel("score (mean over test sequences)")
    ax_metrics.set_title("CTC metrics (" + ", ".join(f"{s} seeding" for s in seedings) + ")")
    ax_metrics.legend(loc="upper right", fontsize="small")

    clicks = {m: (modes[m].get("annotation") or {}).get("clicks_per_track") for m in names}
    annotated = [m for m in names if clicks[m] is not None]
    if annotated:
        colors = [f"C{names.index(m)}" for m in annotated]
        bars = ax_clicks.bar(annotated, [clicks[m] for m in annotated], color=colors)
        ax_clicks.bar_label(bars, fmt="%.2f")
        first = modes[annotated[0]]["annotation"]
        ax_clicks.set_title(
            f"correction clicks per track\n(IoU >= {first['iou_threshold']:g}, "
            f"budget {first['max_clicks_per_track']})"
        )
        ax_clicks.set_ylim(0, max(first["max_clicks_per_track"], 1) * 1.1)
    else:
        ax_clicks.set_title("annotation effort not measured")
    ax_clicks.tick_params(axis="x", labelrotation=20)

    plotted = False
    for k, mode in enumerate(names):
        curve = modes[mode].get("loss") or {}
        if curve.get("steps"):
            color = f"C{k}"
            ax_loss.plot(curve["steps"], curve["loss"], color=color, lw=0.6, alpha=0.35)
            steps, smooth = _running_mean(curve["steps"], curve["loss"])
            ax_loss.plot(steps, smooth, color=color, lw=1.8, label=f"{mode} train (running mean)")
            plotted = True
            if curve.get("val_steps"):
                ax_loss.plot(
                    curve["val_steps"], curve["val_loss"], "o--", color=color,
                    label=f"{mode} val", ms=4,
                )  # fmt: skip
    ax_loss.set_title("fine-tuning loss" if plotted else "no fine-tuning run")
    ax_loss.set_xlabel("optimizer step")
    if plotted:
        ax_loss.legend(fontsize="small")

    base = summary["settings"]["base"]
    fig.suptitle(f"fine-tuning comparison: base {Path(base).name or base}", fontsize="medium")
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the figure is meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
