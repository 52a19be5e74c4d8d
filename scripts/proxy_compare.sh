#!/usr/bin/env bash
# The CPU proxy of "does fine-tuning help?" (docs/results/README.md), from scratch, with the
# project's own commands: synthetic data -> pre-train a tiny random SAM 2 on nuclei (a full
# fine-tune of random weights) -> `cellsam2 compare` zero-shot / LoRA / full on mother-machine
# movies -> copy compare.json, compare.png and the pre-training log to docs/results/.
#
# Usage: bash scripts/proxy_compare.sh [WORK_DIR]      (default /tmp/cellsam2-proxy; erased)
# Sizes can be shrunk for a smoke run, e.g. PRETRAIN_EPOCHS=1 PRETRAIN_STEPS=3 STEPS=4 FRAMES=8;
# IOU and CLICKS set the annotator's threshold and per-track budget.
# Prints its run time (1060 s on the 2-core development VM). One torch thread: on a shared
# 2-core machine the default (one thread per core) oversubscribes the cores
# (benchmarks/bench_training.py --threads N measures it).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:-/tmp/cellsam2-proxy}"
PY="${PYTHON:-python}"
CLI=("$PY" -m napari_cellsam2.cli)
RES=128                                    # model resolution = frame scale 1 for both datasets
PRETRAIN_EPOCHS="${PRETRAIN_EPOCHS:-8}"
PRETRAIN_STEPS="${PRETRAIN_STEPS:-150}"   # per epoch
STEPS="${STEPS:-300}"                      # optimizer steps per fine-tuning mode
FRAMES="${FRAMES:-30}"
OUT="${OUT:-docs/results}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
rm -rf "$WORK" && mkdir -p "$WORK"
start=$(date +%s)

# 1. Data. Pre-training domain: 12 nuclei movies (10 train / 1 val / 1 test), 128 x 128.
"${CLI[@]}" synth nuclei --out "$WORK/nuclei" --sequences 12 --frames 20 --seed 1
# Target domain: mother-machine movies, 128 x 32 (the CLI writes 256 x 32; the API takes sizes):
# 4 train / 1 val / 2 test movies - a small annotated set, as a user would have.
"$PY" -c "
from napari_cellsam2.datasets import write_dataset
write_dataset('$WORK/mm', 'mother-machine', sequences=7, frames=$FRAMES, seed=2,
              splits=(4, 1, 2), height=128, width=32)"

# 2. Pre-train the base: full training of the random tiny model on nuclei. Random weights need
# a larger learning rate than SAM 2's fine-tuning defaults, and no layer-wise decay.
COMMON=(scratch.resolution=$RES scratch.num_frames=4 scratch.max_num_objects=8
        scratch.max_num_bkgd_objects=2 scratch.num_correction_pt_per_frame=1 scratch.val_steps=4)
"${CLI[@]}" train launcher.experiment_log_dir="$WORK/pretrain" model.base=tiny \
  scratch.use_lora=false dataset.data_dir="$WORK/nuclei" model.device=cpu "${COMMON[@]}" \
  scratch.num_epochs=$PRETRAIN_EPOCHS scratch.steps_per_epoch=$PRETRAIN_STEPS \
  scratch.base_lr=1e-3 scratch.vision_lr=1e-3 scratch.layer_decay=1.0 scratch.seed=0
BASE=$("$PY" -c "from napari_cellsam2.training import last_checkpoint as c; print(c('$WORK/pretrain'))")

# 3. Compare on mother machine: same steps and seed for LoRA (lora_lr default 1e-3) and full
# fine-tuning (1e-4: a tenth of the pre-training rate; the 5e-6 default is for real SAM 2).
# Annotator at IoU 0.5 with 5 clicks per track: at the defaults (0.8, 3) every track of this
# weak model spends the whole budget, which says nothing about the modes.
"${CLI[@]}" compare --base "$BASE" --data "$WORK/mm" --out "$WORK/compare" --steps $STEPS \
  --seed 0 --clicks --click-budget "${CLICKS:-5}" --iou "${IOU:-0.5}" --device cpu \
  "${COMMON[@]}" scratch.base_lr=1e-4 scratch.vision_lr=1e-4

# 4. Results into the repository.
mkdir -p "$OUT"
cp "$WORK/compare/compare.json" "$WORK/compare/compare.png" "$OUT/"
# the pre-training log without its per-step lines (start, epoch, validation, done records)
grep -v '"type": "step"' "$WORK/pretrain/metrics.jsonl" > "$OUT/pretrain_metrics.jsonl"
echo "proxy done in $(( $(date +%s) - start )) s; results in $OUT"
