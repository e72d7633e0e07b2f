"""Missing modalities in practice: the exported model scored on a cache's test split with each
single modality, each modality removed, and EEG + EOG (Sleep-EDF-like), as the model card reports.

The same heads serve every row (no retraining): a row says what a user gets when a recording lacks
modalities. Runs on the ONNX graph with onnxruntime, so it measures exactly what is served.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from physioserve.cache import WindowCache
from physioserve.metrics import aggregate_score, classification_metrics
from physioserve.modalities import MODALITIES
from physioserve.runtime import softmax

SUBSETS: tuple[tuple[str, ...], ...] = (
    MODALITIES,
    *((m,) for m in MODALITIES),
    *(tuple(x for x in MODALITIES if x != m) for m in MODALITIES),
    ("eeg", "eog"),
)
TASKS = (("sleep_stage", "stage"), ("age", "age"), ("arousal", "arousal"))
CHUNK = 256


def subset_name(subset: tuple[str, ...]) -> str:
    if subset == MODALITIES:
        return "all four"
    missing = [m for m in MODALITIES if m not in subset]
    return f"no {missing[0]}" if len(missing) == 1 else "+".join(subset)


def modality_ablation(onnx_path: str | Path, cache_dir: str | Path, split: str = "test") -> list[dict]:
    """One row per subset: window count and per-task metrics on the split's windows with a stage."""
    cache = WindowCache(cache_dir)
    index = cache.split_indices(split)
    index = index[cache.labels["stage"][index] >= 0]  # windows with a defined stage, as the probes use
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    logits = {s: {t: [] for t, _ in TASKS} for s in SUBSETS}
    kept = {s: [] for s in SUBSETS}
    for start in range(0, len(index), CHUNK):
        chunk = index[start : start + CHUNK]
        signals = cache.windows(chunk)  # [n, 4, 3000]
        for subset in SUBSETS:
            allowed = np.array([m in subset for m in MODALITIES])
            mask = cache.mask[chunk] & allowed  # [n, 4]
            ok = mask.any(axis=1)
            if not ok.any():
                continue
            out = session.run(None, {"signals": signals[ok], "modality_mask": mask[ok]})
            for (task, _), values in zip(TASKS, out[1:]):
                logits[subset][task].append(values)
            kept[subset].append(chunk[ok])
    rows = []
    for subset in SUBSETS:
        if not kept[subset]:
            continue
        windows = np.concatenate(kept[subset])
        metrics = {}
        for task, label in TASKS:
            y = cache.labels[label][windows]
            prob = softmax(np.concatenate(logits[subset][task]))
            known = y >= 0
            metrics[task] = classification_metrics(y[known], prob[known]) if known.any() else None
        scores = {t: m["balanced_accuracy"] for t, m in metrics.items() if m}
        rows.append({"inputs": subset_name(subset), "modalities": list(subset), "windows": int(len(windows)),
                     "metrics": metrics, "aggregate": aggregate_score(scores) if len(scores) == 3 else None})
    return rows


def ablation_table(rows: list[dict]) -> list[str]:
    """Markdown lines: balanced accuracy and kappa per task, and the aggregate score, per subset."""
    def cell(m: dict | None, key: str) -> str:
        return "-" if not m or m.get(key) is None or m[key] != m[key] else f"{m[key]:.3f}"

    lines = ["| inputs | windows | stage bal. acc. | stage kappa | age bal. acc. | arousal bal. acc. | arousal AUROC | score |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        m = r["metrics"]
        score = "-" if r["aggregate"] is None else f"{r['aggregate']:.3f}"
        lines.append(f"| {r['inputs']} | {r['windows']} | {cell(m['sleep_stage'], 'balanced_accuracy')} | "
                     f"{cell(m['sleep_stage'], 'kappa')} | {cell(m['age'], 'balanced_accuracy')} | "
                     f"{cell(m['arousal'], 'balanced_accuracy')} | {cell(m['arousal'], 'auroc')} | {score} |")
    return lines
