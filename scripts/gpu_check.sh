#!/usr/bin/env bash
# The CUDA path, proven in one go on a machine with an NVIDIA GPU (docs/gpu.md): installs what the
# checks need into the existing environment, runs the CUDA-marked tests, then short GPU benchmarks,
# writing JSON reports and their tables under $OUT (default gpu-check/). Budget: under 8 minutes.
#   scripts/gpu_check.sh [--dry-run]    --dry-run prints the commands and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-gpu-check}
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1

run() {  # print a step; run it unless this is a dry run
  echo "+ $*"
  if [[ $DRY == 0 ]]; then "$@"; fi
}

if [[ $DRY == 0 ]] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check: $PY sees no CUDA GPU (a CUDA build of torch and a driver are needed)" >&2
  exit 2
fi
run mkdir -p "$OUT"
# tinycudann is optional and not on PyPI: installed offline from a wheel built beforehand (TCNN_WHEEL,
# docs/gpu.md: building it takes longer than this whole check), else the PyTorch hash grid runs
if [[ -n "${TCNN_WHEEL:-}" ]]; then
  run "$PY" -m pip install --no-index --no-deps "$TCNN_WHEEL"
fi
run "$PY" -c "import importlib.util as u; print('tinycudann:', 'yes' if u.find_spec('tinycudann') else 'no (PyTorch hash grid)')"
# CUDA-marked tests; the SDS-step test appends its timings (256 px, fp16) to sds.jsonl
run rm -f "$OUT/sds.jsonl"
run env CUBLAS_WORKSPACE_CONFIG=:4096:8 GEN3D_GPU_REPORT="$OUT/sds.jsonl" "$PY" -m pytest -q -p no:cacheprovider \
  -k "cuda or tcnn" tests/test_device.py tests/test_fields.py tests/test_real_priors.py
run "$PY" -c "import json, sys; from pathlib import Path; from gen3d.bench.report import write_report
write_report('sds-steps', [json.loads(l) for l in open(sys.argv[1])], Path(sys.argv[2]))" "$OUT/sds.jsonl" "$OUT/sds.json"
run timeout 420 "$PY" -m gen3d bench gpu --json "$OUT/gpu.json"
run "$PY" -m gen3d bench fields --quick --json "$OUT/fields.json"
echo "gpu_check: reports in $OUT/"
