#!/usr/bin/env bash
# Pre-train the shipped `demo` model from random init with `cellsam2 train` on the synthetic
# styles of scripts/make_demo_data.py, in four stages:
#   1. WORK_DIR/run: configs/demo_pretrain.yaml (teacher-forced memory, mask prompts first);
#   2. WORK_DIR/clicks: from stage 1's checkpoints/best, clicks / boxes / masks with correction
#      clicks while memory stays teacher-forced, at 3e-4 (stage 1's own click epochs collapsed
#      tracking: docs/results/demo_model.md);
#   3. WORK_DIR/long: from stage 2's epoch 1, 14 more epochs of stage 2's mixture: 8 with
#      teacher-forced memory, then 6 on the model's own memory while the rate decays.
#   4. WORK_DIR/heads: from stage 3's epoch 8 (the demo before issue 13), CellSAM2's cell-centre
#      heatmap head alone (issue 13; docs/results/divisions.md says why not the division head).
#   5. WORK_DIR/own: from stage 4's best, SAM 2 and the heatmap head together on the model's own
#      memory at 1e-4 (clicks / boxes / masks with corrections), each epoch validated with
#      --divisions split, the mode the docs recommend for whole movies (docs/results/
#      demo_model.md, "Stage 5"; the variant with scratch.mother_covers_daughters is there too).
# Then: python scripts/package_demo_model.py WORK_DIR/own
#
# ONLY=NAME runs just that stage (its base must exist), e.g. ONLY=heads.
# Usage: bash scripts/pretrain_demo_model.sh WORK_DIR [key=value ...]   (overrides: stage 1)
# Run it again with the same WORK_DIR to resume a stage from its last checkpoint after a cut-off.
# One torch thread: on a shared 2-core machine more threads oversubscribe the cores.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:?usage: pretrain_demo_model.sh WORK_DIR [key=value ...]}"
shift
PY="${PYTHON:-python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
mkdir -p "$WORK"
[ -d "$WORK/data" ] || "$PY" scripts/make_demo_data.py --out "$WORK/data" --seed 0
# stage NAME [key=value ...]: train into WORK/NAME, resuming it when it has a last checkpoint
stage() {
  local name=$1 resume=false
  shift
  [ -z "${ONLY:-}" ] || [ "$ONLY" = "$name" ] || return 0
  [ -f "$WORK/$name/checkpoints/last.json" ] && resume=true
  "$PY" -m napari_cellsam2.cli train --config configs/demo_pretrain.yaml \
    launcher.experiment_log_dir="$WORK/$name" dataset.data_dir="$WORK/data" \
    launcher.resume=$resume "$@"
  echo "stage $name done at $(( $(date +%s) - start )) s"
}
start=$(date +%s)
stage run "$@"
# stages 2 and 3: clicks / boxes / masks with corrections at 3e-4, from the previous stage
LATER=(scratch.mask_prompt_epochs=0 scratch.base_lr=3e-4 scratch.vision_lr=3e-4)
stage clicks model.base="$WORK/run/checkpoints/best" scratch.num_epochs=2 \
  scratch.memory_from_gt_epochs=2 "${LATER[@]}"
stage long model.base="$WORK/clicks/checkpoints/epoch_001" scratch.num_epochs=14 \
  scratch.memory_from_gt_epochs=8 "${LATER[@]}"
# stage 4: the cell-centre heatmap head alone (SAM 2 frozen: tracking stays bit-identical), GT
# mask prompts (the head reads image features only), no tracking validation (nothing it measures
# changes)
stage heads model.base="$WORK/long/checkpoints/epoch_008" scratch.num_epochs=3 \
  scratch.memory_from_gt_epochs=0 scratch.mask_prompt_epochs=0 scratch.pred_heatmap=true \
  scratch.heads_only=true scratch.base_lr=1e-3 scratch.vision_lr=1e-3 scratch.prob_point=0 \
  scratch.prob_box=0 scratch.prob_mask=1 scratch.num_correction_pt_per_frame=0 \
  scratch.val_tracking_sequences=0
# stage 5: SAM 2 and the heatmap head on the model's own memory, validated with split divisions
stage own model.base="$WORK/heads/checkpoints/best" scratch.num_epochs=4 \
  scratch.memory_from_gt_epochs=0 scratch.mask_prompt_epochs=0 scratch.pred_heatmap=true \
  scratch.val_divisions=split scratch.base_lr=1e-4 scratch.vision_lr=1e-4
