#!/usr/bin/env bash
# The paper's tables on the real PhysioNet 2018 data (Fang et al. 2024): Tables 1-2 and Appendices C, D, E, H,
# each row over three seeds, plus the §4.4 figures. Every step is a `physioserve` command that resumes or skips
# what is done, so the script can be run again after a kill.
# Usage: bash configs/paper.sh DATA_DIR [RUNS_DIR]
#   DATA_DIR holds the challenge's training/ (labelled) and test/ (unlabelled) folders; RUNS_DIR default runs/paper.
# Pretraining runs under torchrun on every GPU of the node (GPUS=8 by default); probes run on one GPU.
# `physioserve reproduce ... --dry-run` lists the 113 commands (3 seeds) without running them.
set -euo pipefail
data="${1:?usage: bash configs/paper.sh DATA_DIR [RUNS_DIR]}"
runs="${2:-runs/paper}"
ps="${PHYSIOSERVE:-physioserve}"
gpus="${GPUS:-8}"
"$ps" reproduce "$data/training" "$data/test" --out "$runs" --pretrain-config configs/pretrain-paper.json \
  --seeds "${SEEDS:-0,1,2}" --label-records 25,500 --mask-ratios 0.5,0.7,0.9 \
  --pretrain-launcher "torchrun --nproc_per_node $gpus" --workers 8
echo "paper: tables in $runs/tables (tables.md, tables.json), figures in $runs/figures"
