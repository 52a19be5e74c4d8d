# Sourced by the GPU scripts (gpu_engine_check.sh, gpu_pretrain.sh) from the repository root,
# with PY set: defines log(), installs the wheels carried in .whl/ to /tmp/site (packages the
# device machine lacks; /work/.library/device/README.md) and prints the environment. DEVICE=cpu
# (a dry run here) skips nvidia-smi.
log() { echo "== $(date +%T) $*"; }

if compgen -G ".whl/*.whl" > /dev/null; then
  log "installing carried wheels"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
log environment
[ "${DEVICE:-cuda}" = cpu ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$PY -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', \
transformers.__version__, 'peft', peft.__version__, torch.cuda.get_device_name() \
if torch.cuda.is_available() else 'no GPU')" || exit 1
