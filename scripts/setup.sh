#!/usr/bin/env bash
# Idempotent set-up: system libraries, .venv, the CPU torch wheel first, then gen3d in editable mode
# with the extras in GEN3D_EXTRAS (default: dev).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# open3d links against libusb; install it when missing and we are allowed to.
if ! ldconfig -p 2>/dev/null | grep -q libusb-1.0; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get install -y -qq libusb-1.0-0 >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq libusb-1.0-0; }) >/dev/null
  else
    echo "setup: libusb-1.0 is missing; install it (apt-get install libusb-1.0-0) for open3d" >&2
  fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
VPY=.venv/bin/python
export PIP_DISABLE_PIP_VERSION_CHECK=1
# A bare `torch` requirement would pull a CUDA build of several GB; take the CPU wheel first.
"$VPY" -c "import torch" 2>/dev/null || "$VPY" -m pip install -q "torch==2.13.0"

# GEN3D_EXTRAS picks the optional extras (make test adds `cluster`, the Ray backend's tests).
extras=${GEN3D_EXTRAS:-dev}
stamp=.venv/.gen3d-installed-${extras//,/-}
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VPY" -m pip install -q -e ".[$extras]"
  touch "$stamp"
fi

# The viewer's built assets ship inside the package (not in git); build them when their sources changed.
bash scripts/build_viewer.sh
