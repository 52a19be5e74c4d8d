#!/usr/bin/env bash
# Pre-train the shipped `demo` model from random init with `cellsam2 train`
# (configs/demo_pretrain.yaml) on the synthetic styles of scripts/make_demo_data.py.
#
# Usage: bash scripts/pretrain_demo_model.sh WORK_DIR [key=value ...]
# Run it again with the same WORK_DIR to resume from the last checkpoint after a cut-off.
# One torch thread: on a shared 2-core machine more threads oversubscribe the cores.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:?usage: pretrain_demo_model.sh WORK_DIR [key=value ...]}"
shift
PY="${PYTHON:-python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
mkdir -p "$WORK"
[ -d "$WORK/data" ] || "$PY" scripts/make_demo_data.py --out "$WORK/data" --seed 0
RESUME=false
[ -f "$WORK/run/checkpoints/last.json" ] && RESUME=true
start=$(date +%s)
"$PY" -m napari_cellsam2.cli train --config configs/demo_pretrain.yaml \
  launcher.experiment_log_dir="$WORK/run" dataset.data_dir="$WORK/data" launcher.resume=$RESUME "$@"
echo "pre-training part done in $(( $(date +%s) - start )) s"
