#!/usr/bin/env bash
# Rebuild the bundled default model and the staging experiment of docs/EXPERIMENTS.md, step by step.
# Every step is a `physioserve` command; each resumes or skips what is already done.
# Usage: bash configs/default_model.sh [RUNS_DIR]     (default runs/default; about 2 h on 2 idle CPU cores)
# THREADS=1 (default 2) on a machine that other jobs share: torch's threads spin against them.
set -euo pipefail
runs="${1:-runs/default}"
ps="${PHYSIOSERVE:-.venv/bin/physioserve}"
threads="${THREADS:-2}"
mkdir -p "$runs"
step() { echo "== $(date +%T) $*"; /usr/bin/time -f "   wall %e s" "$@"; }
done_or() { [ -e "$1" ] || { shift; step "$@"; }; }

# 1. corpus: synthetic nights driven by real PhysioNet 2018 hypnograms (6 unlabelled, as in the challenge's
#    test set), each recorded at its own site drawn from the training distribution (amplitude, spectral
#    slope, noise, artefact rates, filters, eyes-open wake; docs/SYNTHETIC.md); the demo's held-out
#    hypnograms and the held-out sites are never used here
done_or "$runs/corpus/te90-0036/te90-0036.mat" "$ps" synth "$runs/corpus" --records 36 --unlabelled 6 --seed 1 --workers 2 --quiet
# 2. window cache + patient split; each record uses one of six EEG derivations (frontal, central,
#    occipital; both sides), so the model learns across derivations
done_or "$runs/cache/split.json" "$ps" prepare "$runs/corpus" "$runs/cache" --workers 2 \
  --vary-eeg F3-M2,F4-M1,C3-M2,C4-M1,O1-M2,O2-M1
# 3. MultiMAE + input modality drop pretraining (paper §3.3), `small` size, 2 epochs, on clean windows
#    (pretraining on augmented windows left the MAE loss nearly flat: docs/EXPERIMENTS.md)
done_or "$runs/pretrain/encoder.pt" "$ps" pretrain --config configs/pretrain-small.json --epochs 2 --warmup-epochs 0.3 \
  --data "$runs/cache" --out "$runs/pretrain" --resume --no-progress --threads "$threads"
# 4. frozen-encoder linear probes (the paper's protocol), for the card's comparison with fine-tuning
done_or "$runs/probe-linear/model.pt" "$ps" probe --config configs/probe-linear.json --checkpoint "$runs/pretrain/encoder.pt" \
  --epochs 60 --warmup-epochs 3 --data "$runs/cache" --out "$runs/probe-linear" --no-progress --threads "$threads"
# 5. full fine-tuning of the pretrained encoder (paper Appendix E): mild augmentation and random modality
#    subsets (EEG alone in half of the cut windows), stage loss weighted first (configs/finetune-default.json):
#    the shipped model's window-level heads
done_or "$runs/finetune/model.pt" "$ps" probe --config configs/finetune-default.json --finetune \
  --checkpoint "$runs/pretrain/encoder.pt" --data "$runs/cache" --out "$runs/finetune" --no-progress --threads "$threads"
# 6. the night-context model (BiGRU over the fine-tuned encoder's epoch embeddings, per-recording normalisation,
#    a correction of the window-level logits: configs/context-default.json) and temperature scaling
done_or "$runs/context/context.pt" "$ps" context --probe "$runs/finetune" --data "$runs/cache" --out "$runs/context" \
  --config configs/context-default.json --passes 4 --no-progress --threads "$threads"
# 7. test-split tables of both heads
done_or "$runs/evaluation/evaluation.json" "$ps" evaluate "$runs/probe-linear" "$runs/finetune" --out "$runs/evaluation"
# 8. the bundled default model: fine-tuned encoder + calibrated heads + night-context graph, the MultiMAE
#    decoders for `physioserve adapt`, its test metrics, the missing-modality table, the card notes, and
#    the static int8 graph (written only if it agrees with fp32 on >= 99 % of held-out windows)
step "$ps" export --checkpoint "$runs/pretrain/checkpoint.pt" --probe "$runs/finetune" --context "$runs/context" \
  --evaluation "$runs/evaluation/evaluation.json" --data "$runs/cache" --ablation --int8 \
  --card-notes configs/default_model_card_notes.md --version 0.4.0 --out physioserve/assets/default_bundle --overwrite
