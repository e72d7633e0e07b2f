"""How separable is the synthetic corpus? Band powers + logistic regression, held-out subjects.

Generates a corpus with `physioserve synth` (or takes one with --corpus), reads every record with
`physioserve.io.read_recording`, preprocesses each 30 s window with `physioserve.preprocessing.
preprocess` (the model's input), and computes log band powers per window and modality (Welch PSD):
EEG/EOG 0.5-2, 2-4, 4-8, 8-12, 12-16, 16-30 Hz; EMG/ECG 0.5-4, 4-10, 10-20, 20-30, 30-45 Hz; plus
the log variance. A standardised, class-balanced logistic regression is trained per task with
5-fold cross-validation grouped by record (each subject is predicted by a model that never saw it).
Balanced accuracy per task on the pooled out-of-fold predictions: stage (5 classes, scored
windows), age (< 55 vs >= 55, every window), arousal (>= 75 % of the window in a target arousal,
scored windows). Rows: all four modalities, then each alone. Prints a table, writes JSON.

    python bench/synth_baseline.py [--records 60] [--hours 1.5] [--seed 0] [--corpus DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy import signal

from physioserve.io import find_records, read_recording
from physioserve.modalities import MODALITIES, STAGE_NAMES, TARGET_FS
from physioserve.preprocessing import preprocess
from benchlib import machine

BANDS = {
    "eeg": [(0.5, 2), (2, 4), (4, 8), (8, 12), (12, 16), (16, 30)],
    "eog": [(0.5, 2), (2, 4), (4, 8), (8, 12), (12, 16), (16, 30)],
    "emg": [(0.5, 4), (4, 10), (10, 20), (20, 30), (30, 45)],
    "ecg": [(0.5, 4), (4, 10), (10, 20), (20, 30), (30, 45)],
}
TASKS = ("stage", "age", "arousal")


def window_features(x: np.ndarray, modality: str) -> np.ndarray:
    """Log band powers + log variance of preprocessed windows [n, 3000] -> [n, n_bands + 1]."""
    freqs, psd = signal.welch(x, fs=TARGET_FS, nperseg=200, axis=-1)  # [n, 101]
    cols = [np.log(psd[:, (freqs >= lo) & (freqs < hi)].mean(axis=1) + 1e-8) for lo, hi in BANDS[modality]]
    cols.append(np.log(x.var(axis=1) + 1e-8))
    return np.stack(cols, axis=1)


def corpus_features(corpus: Path) -> dict[str, np.ndarray]:
    feats = {m: [] for m in MODALITIES}
    labels = {t: [] for t in TASKS}
    groups = []
    records = find_records(corpus)
    for i, folder in enumerate(records):
        rec = read_recording(folder)
        if rec.labels is None:
            continue
        for m in MODALITIES:
            raw, fs = rec.modality_windows(m)
            feats[m].append(window_features(preprocess(raw, fs, m), m))
        lab = rec.window_labels(0.75)
        for t in TASKS:
            labels[t].append(lab[t])
        groups.append(np.full(rec.n_windows, i))
    out = {m: np.concatenate(v) for m, v in feats.items()}
    out.update({f"y_{t}": np.concatenate(v) for t, v in labels.items()})
    out["groups"] = np.concatenate(groups)
    return out


def evaluate(data: dict, modalities: tuple[str, ...], task: str, folds: int) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, recall_score
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([data[m] for m in modalities], axis=1)
    y = data[f"y_{task}"].astype(int)
    keep = y >= 0
    if task == "arousal":
        keep &= data["y_stage"] >= 0
    x, y, groups = x[keep], y[keep], data["groups"][keep]
    pred = np.zeros_like(y)
    for train, test in GroupKFold(n_splits=folds).split(x, y, groups):
        model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=3000))
        model.fit(x[train], y[train])
        pred[test] = model.predict(x[test])
    result = {"balanced_accuracy": float(balanced_accuracy_score(y, pred)), "n_windows": int(len(y)),
              "positive_share": float(np.mean(y == 1)) if task != "stage" else None}
    if task == "stage":
        from sklearn.metrics import confusion_matrix

        recall = recall_score(y, pred, labels=list(range(5)), average=None, zero_division=0)
        result["recall"] = {name: float(r) for name, r in zip(STAGE_NAMES, recall, strict=True)}
        result["confusion"] = confusion_matrix(y, pred, labels=list(range(5))).tolist()  # rows: true
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=60)
    parser.add_argument("--hours", type=float, default=1.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--corpus", type=Path, default=None, help="use (or, if absent, create) this corpus folder")
    parser.add_argument("--out", type=Path, default=Path("bench/results/synth_baseline.json"))
    args = parser.parse_args()

    from physioserve.synth.corpus import synthesize_corpus

    with tempfile.TemporaryDirectory() as tmp:
        corpus = args.corpus or Path(tmp) / "corpus"
        t0 = time.perf_counter()
        if not (corpus / "age-sex.csv").is_file():
            synthesize_corpus(corpus, args.records, hours=args.hours, seed=args.seed, workers=args.workers)
        t1 = time.perf_counter()
        data = corpus_features(corpus)
        t2 = time.perf_counter()
    rows = []
    for name, mods in [("all", MODALITIES)] + [(m, (m,)) for m in MODALITIES]:
        row = {"modalities": name}
        for task in TASKS:
            row[task] = evaluate(data, mods, task, args.folds)
        rows.append(row)
    print(f"synthetic corpus: {len(np.unique(data['groups']))} labelled records, {len(data['groups'])} windows, "
          f"seed {args.seed}; {args.folds}-fold CV grouped by record; balanced accuracy")
    header = f"{'modalities':<10} {'stage':>6} {'age':>6} {'arousal':>8}   stage recall " + " ".join(f"{s:>5}" for s in STAGE_NAMES)
    print(header)
    for r in rows:
        rec = r["stage"]["recall"]
        print(f"{r['modalities']:<10} {r['stage']['balanced_accuracy']:>6.3f} {r['age']['balanced_accuracy']:>6.3f} "
              f"{r['arousal']['balanced_accuracy']:>8.3f}   {'':12} " + " ".join(f"{rec[s]:>5.2f}" for s in STAGE_NAMES))
    print(f"(generate {t1 - t0:.0f} s, features {t2 - t1:.0f} s; arousal-positive share "
          f"{rows[0]['arousal']['positive_share']:.3f}, age>=55 share {rows[0]['age']['positive_share']:.2f})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": machine(),
        "records": args.records, "hours": args.hours, "seed": args.seed, "folds": args.folds,
        "corpus": str(args.corpus) if args.corpus else None, "rows": rows,
    }, indent=1))


if __name__ == "__main__":
    main()
