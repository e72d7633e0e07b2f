#!/usr/bin/env bash
# The research pipeline end to end on a tiny synthetic corpus (a couple of minutes on 2 CPU cores):
# synth -> prepare -> pretrain -> probe -> evaluate. Outputs under runs/quickstart/ (or $1).
set -euo pipefail
runs="${1:-runs/quickstart}"
ps="${PHYSIOSERVE:-.venv/bin/physioserve}"
"$ps" synth "$runs/corpus" --records 4 --hours 1 --seed 0 --overwrite
"$ps" prepare "$runs/corpus" "$runs/cache"
"$ps" pretrain --data "$runs/cache" --size tiny --epochs 2 --warmup-epochs 0.5 --batch-size 32 --out "$runs/pretrain" --resume
"$ps" probe --checkpoint "$runs/pretrain/encoder.pt" --data "$runs/cache" --out "$runs/probe" --epochs 20
"$ps" evaluate "$runs/probe" --out "$runs/evaluation"
echo "quickstart: done; tables in $runs/evaluation/evaluation.md"
