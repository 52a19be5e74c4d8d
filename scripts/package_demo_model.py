"""Copy a pre-trained checkpoint into the package as the ``demo`` model.

    python scripts/package_demo_model.py RUN_DIR [--checkpoint best]

Takes ``RUN_DIR/checkpoints/<checkpoint>`` of ``scripts/pretrain_demo_model.sh`` (a full
checkpoint: ``model.safetensors`` + ``config.json`` + ``cellsam2.json``) and writes it to
``src/napari_cellsam2/model/weights/demo/`` (with ``heads.safetensors`` when the run trained
CellSAM2's heads). Its ``cellsam2.json`` says what it is: trained from
random weights on synthetic data only, with which recipe and epoch, and its validation scores.
The weights were trained, so the random-weights flag that ``model.base=tiny`` set is cleared.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from napari_cellsam2.training.loop import best_record

TARGET = Path(__file__).resolve().parents[1] / "src" / "napari_cellsam2" / "model" / "weights"
MAX_BYTES = 25 * 1024 * 1024  # the bound on the shipped weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--checkpoint", default="best")
    args = parser.parse_args()
    source = args.run / "checkpoints" / args.checkpoint
    info = json.loads((source / "cellsam2.json").read_text())
    if info["kind"] != "full":
        raise SystemExit(f"{source} is a {info['kind']} checkpoint; the demo model must be full")
    weights = source / "model.safetensors"
    if weights.stat().st_size > MAX_BYTES:
        raise SystemExit(f"{weights} is {weights.stat().st_size:,} bytes, over 25 MB")
    training = info.get("meta", {}).get("training", {})
    record = best_record(args.run / "checkpoints") if args.checkpoint == "best" else None
    scores = record or {}
    info.update(
        random_weights=False,
        base=None,
        meta={
            "demo": "trained on synthetic data only",
            "recipe": "scripts/pretrain_demo_model.sh (configs/demo_pretrain.yaml, "
            f"stages up to {args.run.name})",
            "data": "scripts/make_demo_data.py --seed 0",
            "epoch": training.get("epoch"),
            "global_step": training.get("global_step"),
            "validation": {
                k: v for k, v in scores.items() if k.startswith("val_") and v is not None
            },
        },
    )
    out = TARGET / "demo"
    tmp = TARGET / ".demo.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copy2(weights, tmp / "model.safetensors")
    shutil.copy2(source / "config.json", tmp / "config.json")
    heads = source / "heads.safetensors"  # CellSAM2's heads (model.heads), when trained
    if heads.is_file():
        shutil.copy2(heads, tmp / heads.name)
    (tmp / "cellsam2.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    print(f"demo model from {source} -> {out} ({weights.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
