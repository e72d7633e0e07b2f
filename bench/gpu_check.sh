#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py): one table of pretraining MFU, DDP, ONNX Runtime CUDA/TensorRT and the GPU service.
#
#   bench/gpu_check.sh --dry-run                  # CPU, tiny sizes, end to end (a minute or two)
#   bench/gpu_check.sh [--wheels DIR] [--out DIR]  # one H100/H200, paper size, under 10 minutes
#
# --wheels DIR: install the wheels in DIR first (pip --no-index into /tmp/gpu-check-site, put on
# PYTHONPATH), for a machine that cannot reach a package index (onnxruntime-gpu, bentoml and their
# needs). PYTHON overrides the interpreter (default python3). The table goes to stdout and
# <out>/gpu_check.md (default bench/results/gpu_check/).
set -euo pipefail
cd "$(dirname "$0")/.."
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --wheels) wheels="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) args+=("$1"); shift ;;
  esac
done
python="${PYTHON:-python3}"
if [[ -n "${wheels:-}" ]]; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-check-site "$wheels"/*.whl
  export PYTHONPATH="/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 BENTOML_DO_NOT_TRACK=true
export BENTOML_HOME="${BENTOML_HOME:-$(mktemp -d)}"
exec "$python" bench/gpu_check.py "${args[@]}"
