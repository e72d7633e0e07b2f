"""Calibrated confidence: temperature scaling (Guo et al. 2017) and the expected calibration error.

One temperature T per output, fitted on the validation split by minimising the negative
log-likelihood of softmax(logits / T) over T in [0.05, 20] (golden-section search on log T: the
NLL is unimodal in T). T > 1 softens an over-confident model. The export divides the output layer's
weights and bias by T, so every consumer of the graph gets calibrated probabilities.

ECE (Naeini et al. 2015; Guo et al. 2017): the confidence (top probability) is split into 15 equal-width
bins and ECE = sum over bins of (bin share) x |accuracy - mean confidence| in the bin.
"""

from __future__ import annotations

import math

import numpy as np

ECE_BINS = 15
T_RANGE = (0.05, 20.0)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return np.exp(_log_softmax(np.asarray(logits, np.float64) / temperature))


def nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of labels y [n] under softmax(logits [n, K] / T)."""
    logp = _log_softmax(np.asarray(logits, np.float64) / temperature)
    return float(-logp[np.arange(len(y)), y].mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray, iterations: int = 60) -> float:
    """The T in T_RANGE minimising nll(logits, y, T); 1.0 when there is nothing to fit."""
    y = np.asarray(y, np.int64)
    if len(y) == 0:
        return 1.0
    lo, hi = math.log(T_RANGE[0]), math.log(T_RANGE[1])
    ratio = (math.sqrt(5) - 1) / 2
    a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
    fa, fb = nll(logits, y, math.exp(a)), nll(logits, y, math.exp(b))
    for _ in range(iterations):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - ratio * (hi - lo)
            fa = nll(logits, y, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + ratio * (hi - lo)
            fb = nll(logits, y, math.exp(b))
    return float(math.exp((lo + hi) / 2))


def reliability(probs: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Per-bin confidence, accuracy and count of the top class, and the ECE: {ece, bins: [...]}."""
    probs = np.asarray(probs, np.float64)
    y = np.asarray(y, np.int64)
    confidence = probs.max(axis=1)  # [n]
    correct = probs.argmax(axis=1) == y  # [n]
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)  # [n]
    table, ece = [], 0.0
    for k in range(bins):
        inside = which == k
        count = int(inside.sum())
        if count:
            acc, conf = float(correct[inside].mean()), float(confidence[inside].mean())
            ece += count / len(y) * abs(acc - conf)
        else:
            acc = conf = None
        table.append({"lo": float(edges[k]), "hi": float(edges[k + 1]), "count": count, "accuracy": acc,
                      "confidence": conf})
    return {"ece": float(ece) if len(y) else None, "n": int(len(y)), "bins": table}


def calibrate(logits: np.ndarray, y: np.ndarray) -> dict:
    """Fit T and report before/after: {temperature, nll_before, nll_after, ece_before, ece_after, reliability_*}."""
    t = fit_temperature(logits, y)
    before, after = reliability(softmax(logits), y), reliability(softmax(logits, t), y)
    return {"temperature": t, "n": int(len(y)), "nll_before": nll(logits, y), "nll_after": nll(logits, y, t),
            "ece_before": before["ece"], "ece_after": after["ece"], "reliability_before": before["bins"],
            "reliability_after": after["bins"]}


def plot_reliability(results: dict[str, dict], path) -> None:
    """Reliability diagrams (accuracy vs confidence per bin, before and after scaling), one panel per output."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 4.0), squeeze=False)
    for ax, (name, res) in zip(axes[0], results.items()):
        ax.plot([0, 1], [0, 1], color="0.6", linewidth=1, linestyle="--")
        for key, color, label in (("reliability_before", "#c0392b", "before"), ("reliability_after", "#1f4e79", "after")):
            pts = [(b["confidence"], b["accuracy"]) for b in res[key] if b["count"]]
            if pts:
                xs, ys = zip(*pts)
                ece = res["ece_before" if key.endswith("before") else "ece_after"]
                ax.plot(xs, ys, "o-", color=color, markersize=3, label=f"{label} (ECE {ece:.3f})")
        ax.set_title(f"{name}: T = {res['temperature']:.2f}", fontsize=10)
        ax.set_xlabel("confidence (top probability)")
        ax.set_ylabel("accuracy")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(loc="upper left", fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
