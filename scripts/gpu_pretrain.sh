#!/usr/bin/env bash
# Issue 10's GPU stage: continue (or restart) the demo model's pre-training at 256 px on one
# GPU, inside one device call (budget: 15 minutes of device time per session, 10 per command).
#
# The engine is bound by the host on a GPU (docs/results/gpu.md: about 15 % of a step is GPU
# work), and run_clip batches the clips of a step into one forward, so a step of 8 clips costs
# little more than a step of one. The runs below therefore use scratch.batch_size=8, and run
# side by side on the one GPU (each is its own process, with its own CPU threads):
#   hires     from the shipped demo (stage 5), 256 px, stage 5's recipe, lr 2e-4;
#   hires3    the same at lr 3e-4 (the larger batch may take a larger rate);
#   hires16   the same at lr 2e-4 with 16 clips per step;
#   own128    from the shipped demo, 128 px, stage 5's recipe (more of the same training);
#   scratch   from random init at 256 px, 16 clips per step, the stage-1 curriculum compressed
#             (mask prompts and teacher-forced memory first, then clicks / boxes / masks), lr 1e-3.
# The runs of the 2026-11-28 session are the default (docs/results/demo_model.md, "On a GPU").
# `own128` lost accuracy from its first epoch; these tell its causes apart (bf16 autocast, 8
# clips per step) and are the next session's first question:
#   RUNS="own128 own128_fp32 own128_b1_fp32 hires16 hires16_fp32"
#   own128_fp32     own128 in fp32 (scratch.amp=false: no autocast, TF32 off);
#   own128_b1_fp32  the same with one clip per step at the CPU recipe's rate: the CPU's stage 5;
#   hires16_fp32    hires16 in fp32.
# Each run validates on the tracking path every epoch (one movie per style, --divisions split),
# keeps checkpoints/best by validation TRA, and is stopped at RUN_SECONDS if it has not ended;
# its finished epochs stay. What comes back: OUT_DIR/<run>.tar.gz with checkpoints/best,
# metrics.jsonl, config.yaml and the run's log, and for the 256-px runs <run>_last.tar.gz with the
# newest epoch when it is not the best.
#
# Usage: bash scripts/gpu_pretrain.sh OUT_DIR [RUN_SECONDS]   (default 480)
# Test it on the CPU first, e.g. RUNS="own128 hires" DEVICE=cpu STEPS=1 EPOCHS=2 BATCH=1
#   EXTRA="scratch.val_tracking_frames=3 scratch.val_steps=1" bash scripts/gpu_pretrain.sh OUT 600
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: gpu_pretrain.sh OUT_DIR [RUN_SECONDS]}
SECONDS_LIMIT=${2:-480}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-40}     # steps per epoch
EPOCHS=${EPOCHS:-8}
BATCH=${BATCH:-8}
THREADS=${THREADS:-2}
WORK=${WORK:-/tmp/gpu-pretrain}
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=$THREADS
# shellcheck source=scripts/gpu_env.sh
source scripts/gpu_env.sh
[ -d "$WORK/data" ] || $PY scripts/make_demo_data.py --out "$WORK/data" --seed 0 || exit 1

COMMON=(--config configs/demo_pretrain.yaml dataset.data_dir="$WORK/data" model.device="$DEVICE"
  scratch.batch_size="$BATCH" scratch.steps_per_epoch="$STEPS" scratch.num_epochs="$EPOCHS"
  scratch.val_divisions=split scratch.pred_heatmap=true scratch.validate_first=false
  scratch.num_workers="${WORKERS:-1}")
# stage 5's recipe: the model's own memory, clicks / boxes / masks with corrections
STAGE5=(scratch.memory_from_gt_epochs=0 scratch.mask_prompt_epochs=0)
RUNS=${RUNS:-hires hires3 hires16 own128 scratch}
read -r -a EXTRA <<< "${EXTRA:-}"  # more overrides for every run, e.g. for a test on the CPU
run() {  # run NAME key=value ...: one training in the background, its log in WORK/NAME.log
  local name=$1
  shift
  [[ " $RUNS " == *" $name "* ]] || return 0
  timeout "$SECONDS_LIMIT" $PY -m napari_cellsam2.cli train "${COMMON[@]}" \
    launcher.experiment_log_dir="$WORK/$name" "$@" "${EXTRA[@]}" > "$WORK/$name.log" 2>&1 &
}
log "training, at most $SECONDS_LIMIT s per run"
run hires model.base=demo scratch.resolution=256 "${STAGE5[@]}" \
  scratch.base_lr=2e-4 scratch.vision_lr=2e-4
run hires3 model.base=demo scratch.resolution=256 "${STAGE5[@]}" \
  scratch.base_lr=3e-4 scratch.vision_lr=3e-4
run hires16 model.base=demo scratch.resolution=256 "${STAGE5[@]}" scratch.batch_size=$((2 * BATCH)) \
  scratch.base_lr=2e-4 scratch.vision_lr=2e-4
run own128 model.base=demo scratch.resolution=128 "${STAGE5[@]}" \
  scratch.base_lr=1e-4 scratch.vision_lr=1e-4
run own128_fp32 model.base=demo scratch.resolution=128 "${STAGE5[@]}" scratch.amp=false \
  scratch.base_lr=1e-4 scratch.vision_lr=1e-4
run own128_b1_fp32 model.base=demo scratch.resolution=128 "${STAGE5[@]}" scratch.amp=false \
  scratch.batch_size=1 scratch.base_lr=1e-4 scratch.vision_lr=1e-4
run hires16_fp32 model.base=demo scratch.resolution=256 "${STAGE5[@]}" scratch.amp=false \
  scratch.batch_size=$((2 * BATCH)) scratch.base_lr=2e-4 scratch.vision_lr=2e-4
run scratch model.base=tiny scratch.resolution=256 scratch.batch_size=$((2 * BATCH)) \
  scratch.mask_prompt_epochs=3 scratch.memory_from_gt_epochs=6
wait
log "packing"
# pack NAME TAR PATH...: the run's PATHs (relative to its folder, missing ones skipped)
pack() {
  local dir=$WORK/$1 tarball=$OUT/$2
  shift 2
  (cd "$dir" && ls -d "$@" 2>/dev/null | tar -czf "$tarball" --exclude train_state.pt -T -)
}
for name in $RUNS; do
  dir=$WORK/$name
  cp "$WORK/$name.log" "$dir/run.log" 2>/dev/null
  pack "$name" "$name.tar.gz" metrics.jsonl config.yaml run.log checkpoints/best
  best=$(sed -n 's/^ *"epoch": *\([0-9]*\).*/\1/p' "$dir/checkpoints/best/best.json" 2>/dev/null | head -n 1)
  last=$(ls -d "$dir"/checkpoints/epoch_* 2>/dev/null | tail -n 1)
  # the newest epoch too, when it is not the best (the 256-px runs: 8 files come back at most)
  case $name in hires*)
    [ -n "$last" ] && [ "$(basename "$last")" != "$(printf 'epoch_%03d' "${best:-0}")" ] &&
      pack "$name" "${name}_last.tar.gz" "checkpoints/$(basename "$last")" ;;
  esac
  echo "$name: best epoch ${best:-none}, last $(basename "${last:-none}"), $(grep -c '"val_TRA"' "$dir/metrics.jsonl" 2>/dev/null) validations"
  grep -E '"val_TRA"' "$dir/metrics.jsonl" 2>/dev/null | sed -E 's/.*"epoch": ([0-9]+).*"val_TRA": ([0-9.]+), "val_SEG": ([0-9.]+).*/  epoch \1 TRA \2 SEG \3/'
  tail -n 2 "$WORK/$name.log"
done
ls -la "$OUT"
log done
