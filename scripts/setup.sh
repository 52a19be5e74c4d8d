#!/usr/bin/env bash
# One-command set-up on a fresh Debian/Ubuntu machine: system libraries for napari under Xvfb,
# a virtual environment in .venv, the CPU build of PyTorch, then this package with its test extra.
# Usage: bash scripts/setup.sh            (VENV=path and TORCH_SPEC=... override the defaults)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-xinerama0 \
    libxcb-cursor0 libxkbcommon-x11-0 libgl1 libegl1 libfontconfig1 libdbus-1-3 >/dev/null
fi

python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# Torch first: a bare "torch" requirement would pull a multi-GB CUDA build.
"$VENV/bin/python" -m pip install -q "$TORCH_SPEC"
"$VENV/bin/python" -m pip install -q -e ".[testing]"
echo "set-up done: activate with 'source $VENV/bin/activate'"
