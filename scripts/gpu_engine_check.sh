#!/usr/bin/env bash
# Issue 12's GPU measurements in one go (budget: 9 minutes on one H100/H200), each written as
# JSON under OUT_DIR:
#   1. meta_predictor.json: tracking frames/s, ours vs Meta's SAM2VideoPredictor, same random
#      sam2.1-hiera-tiny weights (Meta .pt), 60 frames of 512 px, 1 and 20 objects
#      (benchmarks/bench_meta_predictor.py; Meta's side runs when `import sam2` works);
#   2. profile_tracking.json: where a tracked frame's time goes (profile_tracking.py: wall vs
#      kernel time, launches, host syncs, top host functions), 1 and 20 objects;
#   3. profile_hiera_b1.json: one training step of hiera-tiny at 512 px, 8 frames, 20 objects,
#      bf16: wall time, kernel time, gpu_busy_fraction, kernel launches, host syncs;
#   4. tracking_cuda.json: bench_tracking.py (click latency on a cached frame, throughput);
#   5. profile_tiny_b{1,8}.json: clips per second against batch_size (tiny model, 256 px).
# The steps' time limits add up to 590 s, so the script ends inside one 600-s device call;
# the most wanted numbers come first. They were set from the 2026-11-28 H200 runs
# (docs/results/gpu.md): step 1 took 130 s; steps 2-3 ran past 60 and 110 s; step 5 took 176 s
# for both batch sizes when run alone.
#
# Usage: bash scripts/gpu_engine_check.sh OUT_DIR
#
# Packages the device machine lacks travel as wheels in .whl/ (see
# /work/.library/device/README.md): this package's dependencies, and for Meta's side
# hydra-core, antlr4-python3-runtime==4.9.3 and a pure-Python wheel of facebookresearch/sam2
# (`SAM2_BUILD_CUDA=0 pip wheel --no-deps -w .whl <sam2 checkout>`; its CUDA extension only
# fills holes in masks and is optional). With .whl/ present they are installed to /tmp/site.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: gpu_engine_check.sh OUT_DIR}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
# shellcheck source=scripts/gpu_env.sh
source scripts/gpu_env.sh
$PY -c "import sam2; print('sam2 importable')" || echo "sam2 not importable: Meta's side is skipped"

log "1. tracking: ours vs Meta's predictor (hiera-tiny, 60 x 512 px, 1 and 20 objects)"
timeout 130 $PY benchmarks/bench_meta_predictor.py --device cuda --frames 60 --size 512 \
  --objects 1 20 --out "$OUT/meta_predictor.json" 2>&1 | grep -v 'it/s\]'

log "2. where a tracked frame's time goes: hiera-tiny, 1 and 20 objects"
timeout 90 $PY benchmarks/profile_tracking.py --device cuda --frames 12 --objects 1 20 \
  --out "$OUT/profile_tracking.json" 2>&1 | grep -v -e USDT -e Warning | tail -n 4

log "3. training step: hiera-tiny, 512 px, 8 frames, 20 objects, bf16"
timeout 130 $PY benchmarks/profile_training_step.py --device cuda --model hiera-tiny-random \
  --resolution 512 --frames 8 --objects 20 --skip 2 --python-steps 1 --torch-steps 1 \
  --out "$OUT/profile_hiera_b1.json" | tail -n 3

log "4. click latency and throughput (bench_tracking.py)"
timeout 60 $PY benchmarks/bench_tracking.py --device cuda --tiny-frames 10 --hiera-frames 10 \
  --hiera-frames-many 4 --memory-lengths 20,40 --out "$OUT/tracking_cuda.json" | tail -n 20

log "5. batch size: clips/s of the tiny model at 256 px, 4 frames, 8 objects"
for b in 1 8; do
  timeout 90 $PY benchmarks/profile_training_step.py --device cuda --model tiny --resolution 256 \
    --frames 4 --objects 8 --batch-size "$b" --skip 3 --python-steps 2 --torch-steps 2 \
    --out "$OUT/profile_tiny_b$b.json" | tail -n 1
done
log done
