"""Classification metrics in numpy (no scikit-learn: the served path and the demo use them too) and the aggregate score.

Conventions follow scikit-learn so that a test can compare them directly: balanced accuracy = mean
recall over the classes present in y_true; macro F1 over the classes present in y_true or y_pred (0
where undefined); Cohen's kappa from the confusion matrix; AUROC by the rank (Mann-Whitney) formula
with average ranks for ties, one-vs-rest macro over classes for more than two classes.

The paper's aggregate score is the mean over tasks of (balanced accuracy - chance) / chance with
chance 0.2 (5 stages), 0.5 (age), 0.5 (arousal): its "All, pretrained" row 0.744, 0.719, 0.637 gives
(2.72 + 0.438 + 0.274) / 3 = 1.144.
"""

from __future__ import annotations

import numpy as np

from .modalities import CLASS_NAMES

# Chance level of balanced accuracy per task: 1 / number of classes (0.2, 0.5, 0.5).
CHANCE: dict[str, float] = {task: 1.0 / len(names) for task, names in CLASS_NAMES.items()}


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """[n_classes, n_classes] counts, rows = true class, columns = predicted class."""
    y_true = np.asarray(y_true, np.int64)
    y_pred = np.asarray(y_pred, np.int64)
    return np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    cm = confusion_matrix(y_true, y_pred, n_classes)
    support = cm.sum(1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float(np.mean(np.diag(cm)[present] / support[present]))


def cohen_kappa(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    cm = confusion_matrix(y_true, y_pred, n_classes).astype(np.float64)
    n = cm.sum()
    if n == 0:
        return float("nan")
    observed = np.trace(cm) / n
    expected = float(cm.sum(0) @ cm.sum(1)) / n**2
    return float((observed - expected) / (1.0 - expected)) if expected < 1.0 else float("nan")


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> float:
    cm = confusion_matrix(y_true, y_pred, n_classes).astype(np.float64)
    tp = np.diag(cm)
    denom = cm.sum(0) + cm.sum(1)  # (tp + fp) + (tp + fn)
    labels = denom > 0  # classes present in y_true or y_pred
    if not labels.any():
        return float("nan")
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1[labels].mean())


def _rankdata(x: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) with ties sharing their mean rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    boundaries = np.concatenate([[True], xs[1:] != xs[:-1], [True]])
    starts = np.flatnonzero(boundaries)  # run starts + end sentinel
    run_ranks = (starts[:-1] + starts[1:] + 1) / 2.0  # mean of 1-based ranks start+1 .. end
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(run_ranks, np.diff(starts))
    return ranks


def binary_auroc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of `score` for positives y_true == 1; nan if one class is missing."""
    y_true = np.asarray(y_true).astype(bool)
    n_pos = int(y_true.sum())
    n_neg = len(y_true) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _rankdata(np.asarray(score, np.float64))
    return float((ranks[y_true].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auroc(y_true: np.ndarray, prob: np.ndarray) -> float:
    """prob [n, K]: binary AUROC of column 1 when K == 2, else one-vs-rest macro over the classes
    that have both positives and negatives."""
    prob = np.asarray(prob, np.float64)
    y_true = np.asarray(y_true, np.int64)
    if prob.shape[1] == 2:
        return binary_auroc(y_true == 1, prob[:, 1])
    scores = [binary_auroc(y_true == k, prob[:, k]) for k in range(prob.shape[1])]
    scores = [s for s in scores if np.isfinite(s)]
    return float(np.mean(scores)) if scores else float("nan")


def classification_metrics(y_true: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """balanced_accuracy, kappa, macro_f1, auroc and n for class probabilities prob [n, K]."""
    prob = np.asarray(prob)
    n_classes = prob.shape[1]
    y_pred = prob.argmax(1)
    return {
        "balanced_accuracy": balanced_accuracy(y_true, y_pred, n_classes),
        "kappa": cohen_kappa(y_true, y_pred, n_classes),
        "macro_f1": macro_f1(y_true, y_pred, n_classes),
        "auroc": auroc(y_true, prob),
        "n": int(len(y_true)),
    }


def aggregate_score(scores: dict[str, float], chance: dict[str, float] = CHANCE) -> float:
    """Mean over tasks of (score - chance) / chance; `scores` = {task: balanced accuracy}."""
    return float(np.mean([(scores[t] - chance[t]) / chance[t] for t in chance]))
