#!/usr/bin/env bash
# Does fine-tuning help? The demo model (pre-trained here on synthetic data) fine-tuned on a
# style it never saw: phase-contrast trenches (scripts/make_demo_data.py --held-out: inverted
# contrast, wider cells), zero-shot vs LoRA vs full, `cellsam2 compare` with 3 seeds.
#
# Usage: bash scripts/demo_finetune_compare.sh WORK_DIR [OUT]     (OUT default docs/results)
# STEPS (default 200) sets the optimizer steps per mode; SEEDS (default "0 1 2") the seeds;
# PARALLEL (default 2) how many seeds run at once (one torch thread each).
# By default fine-tuning prompts with GT masks, without corrections, and the test movies are
# seeded with GT masks only. CLICKS=1 also seeds them with one click per cell; ANNOTATE=1 runs the
# simulated annotator (compare's defaults: IoU 0.8, 3 clicks per track); PROMPTS=mixed trains with
# the pre-training prompt mixture (points 0.5, boxes 0.25, masks 0.25, two correction clicks per
# frame) instead of masks only. DATA names another dataset (default: the held-out synthetic
# style, written to WORK_DIR/data), e.g. a real movie split by scripts/make_real_split.py.
# OUT_NAME (default demo_finetune.json) names the summary.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${1:?usage: demo_finetune_compare.sh WORK_DIR [OUT]}"
OUT="${2:-docs/results}"
PY="${PYTHON:-python}"
STEPS="${STEPS:-200}"
SEEDS="${SEEDS:-0 1 2}"
CLICK_OPTS=()
[ "${CLICKS:-0}" = 1 ] && CLICK_OPTS+=(--clicks)
[ "${ANNOTATE:-0}" = 1 ] || CLICK_OPTS+=(--no-annotate)
case "${PROMPTS:-mask}" in
  mask) PROMPT_OPTS=(scratch.prob_point=0 scratch.prob_box=0 scratch.prob_mask=1
                     scratch.num_correction_pt_per_frame=0) ;;
  mixed) PROMPT_OPTS=(scratch.prob_point=0.5 scratch.prob_box=0.25 scratch.prob_mask=0.25
                      scratch.num_correction_pt_per_frame=2) ;;
  *) echo "PROMPTS must be mask or mixed" >&2; exit 2 ;;
esac
export OMP_NUM_THREADS=1
mkdir -p "$WORK" "$OUT"
DATA="${DATA:-$WORK/data}"
[ -d "$DATA" ] || "$PY" scripts/make_demo_data.py --out "$DATA" --seed 0 --held-out
start=$(date +%s)
running=0
for seed in $SEEDS; do
  "$PY" -m napari_cellsam2.cli compare --base demo --data "$DATA" --out "$WORK/seed$seed" \
    --steps "$STEPS" --seed "$seed" "${CLICK_OPTS[@]}" --device cpu \
    scratch.num_frames=4 scratch.max_num_objects=8 scratch.max_num_bkgd_objects=2 \
    "${PROMPT_OPTS[@]}" scratch.val_tracking_sequences=1 \
    scratch.base_lr=1e-4 scratch.vision_lr=1e-4 > "$WORK/seed$seed.log" 2>&1 &
  running=$((running + 1))
  if [ "$running" -ge "${PARALLEL:-2}" ]; then wait -n; running=$((running - 1)); fi
done
wait
"$PY" scripts/summarize_compare.py "$WORK"/seed*/compare.json --out "$OUT/${OUT_NAME:-demo_finetune.json}"
echo "compare done in $(( $(date +%s) - start )) s"
