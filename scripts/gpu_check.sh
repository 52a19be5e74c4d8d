#!/usr/bin/env bash
# GPU validation in one go (about 9 minutes on one H100/H200): CLI training on CUDA with bf16
# autocast (LoRA and full), CLI tracking on CUDA, CUDA-vs-CPU agreement of tracking
# (scripts/gpu_check.py), and the tracking/training benchmarks with --device cuda.
# Usage: bash scripts/gpu_check.sh OUT_DIR   (python with torch+CUDA and this package importable)
set -euo pipefail
OUT=${1:?usage: gpu_check.sh OUT_DIR}
PY=${PYTHON:-python3}
WORK=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
log() { echo "== $(date +%T) $*"; }

log environment
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$PY -c "import torch, transformers, peft; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__, 'peft', peft.__version__, torch.cuda.get_device_name())"

log synthetic data
$PY -m napari_cellsam2.cli synth mother-machine --out "$WORK/data" --sequences 4 --frames 30 --seed 0

for mode in lora full; do
  log "train $mode on cuda"
  lora=$([ $mode = lora ] && echo true || echo false)
  $PY -m napari_cellsam2.cli train launcher.experiment_log_dir="$WORK/runs/$mode" \
    model.base=tiny model.device=cuda dataset.data_dir="$WORK/data" scratch.use_lora=$lora \
    scratch.num_epochs=2 scratch.steps_per_epoch=20 scratch.num_frames=3 scratch.resolution=256 \
    scratch.val_steps=2 2>&1 | tee "$OUT/train_$mode.log" | tail -n 8
  ckpt=$(ls -d "$WORK/runs/$mode/checkpoints"/epoch_* | tail -n 1)
  log "track with the $mode checkpoint on cuda"
  $PY -m napari_cellsam2.cli track "$WORK/data/test/CTC/01" --prompts gt-first-frame \
    --model "$ckpt" --device cuda --out "$WORK/res_$mode/01_RES"
  $PY -m napari_cellsam2.cli info "$WORK/res_$mode/01_RES" | tail -n 4
done

log "checkpoint for the agreement check (tiny LoRA, 512 px, 3 frames, 12 steps)"
$PY -m napari_cellsam2.cli train launcher.experiment_log_dir="$WORK/runs/check" model.base=tiny \
  model.device=cuda dataset.data_dir="$WORK/data" scratch.num_epochs=1 \
  scratch.steps_per_epoch=12 scratch.num_frames=3 scratch.resolution=512 scratch.val_steps=1 \
  > "$OUT/train_check.log" 2>&1
log "tracking agreement: cpu fp32 vs cuda fp32 vs cuda bf16"
$PY scripts/gpu_check.py --model "$WORK/runs/check/checkpoints/epoch_001" \
  --sequence "$WORK/data/test/CTC/01" --frames 30 --out "$OUT/gpu_check.json"
tar -czf "$OUT/gpu_runs.tar.gz" -C "$WORK" runs res_lora res_full data/test

log "bench_training --device cuda"
$PY benchmarks/bench_training.py --device cuda --steps 5 --warmup 2 --out "$OUT/training_cuda.json"
log "profile_training_step --device cuda"
$PY benchmarks/profile_training_step.py --device cuda --skip 12 --python-steps 1 --torch-steps 2 \
  --out "$OUT/profile_training_step_cuda.json" | tail -n 3
log "bench_tracking --device cuda"
$PY benchmarks/bench_tracking.py --device cuda --hiera-frames 30 --hiera-frames-many 10 \
  --out "$OUT/tracking_cuda.json"
log done
