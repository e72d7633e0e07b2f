"""Agreement of predicted sleep stages with an expert hypnogram, and the plot of both.

Numpy only (matplotlib for the plot, imported when plotting), metrics from `physioserve.metrics`,
so the service can use it. Stages are the project's codes (0 W 1 N1 2 N2 3 N3 4 REM); anything else
(5 undefined, -1 unscorable or unlabelled) has no stage.

Alignment: epoch k of both covers [30k, 30k + 30) s from the recording start. A hypnogram longer
or shorter than the predicted night is compared on the overlap (the first min(n_pred, n_expert)
epochs), with a note. Epochs the expert did not stage (undefined, movement, unscored) and epochs the
model could not score (no usable modality) are left out of every metric and counted apart.

Metrics (over the compared epochs): accuracy; Cohen's kappa (Cohen 1960); balanced accuracy (mean
recall over the stages the expert scored, as scikit-learn); macro F1; per-stage recall and
precision (None where a stage has no expert, resp. no predicted, epoch); the confusion matrix with
rows = expert, columns = predicted. Stage changes per hour, for both hypnograms: pairs of
consecutive compared epochs whose stage differs, per hour of compared epochs (a measure of flicker;
scorers' hypnograms change stage a few to ~10 times an hour).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .metrics import balanced_accuracy, cohen_kappa, confusion_matrix, macro_f1
from .modalities import EPOCH_SECONDS, STAGE_NAMES

N_STAGES = len(STAGE_NAMES)
PLOT_LEVELS = {"W": 4, "REM": 3, "N1": 2, "N2": 1, "N3": 0}  # conventional hypnogram order, W on top


def _finite(value: float) -> float | None:
    """JSON-safe metric: None for NaN (e.g. kappa when every epoch has one stage)."""
    return float(value) if np.isfinite(value) else None


def _changes(stages: np.ndarray, pairs: np.ndarray) -> int:
    """Stage changes between consecutive epochs k-1, k where pairs[k - 1] is True."""
    return int(np.count_nonzero((stages[1:] != stages[:-1]) & pairs))


def stage_agreement_report(pred_stages, expert_stages, *, epoch_s: float = EPOCH_SECONDS) -> dict:
    """Agreement of predicted vs expert stages per 30 s epoch; a JSON-ready dict.

    pred_stages [n_pred], expert_stages [n_expert]: stage codes (0..4; other values have no stage).
    Keys: epochs (compared), accuracy, kappa, balanced_accuracy, macro_f1, recall and precision
    {stage: value or None}, confusion [5][5] (rows expert, columns predicted), stage_changes_per_hour
    {predicted, expert}, stage_epochs {predicted, expert} over the compared epochs, excluded
    {expert_undefined, predicted_unscorable}, predicted_epochs, expert_epochs, overlap_epochs, notes.
    Metrics are None when no epoch is compared. Raises ValueError for non-integer input.
    """
    pred = np.asarray(pred_stages).ravel()
    expert = np.asarray(expert_stages).ravel()
    for name, values in (("predicted", pred), ("expert", expert)):
        if values.size and not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"{name} stages must be integer codes 0-4 (W N1 N2 N3 REM), got dtype {values.dtype}")
    pred, expert = pred.astype(np.int64), expert.astype(np.int64)
    n = min(len(pred), len(expert))
    p, e = pred[:n], expert[:n]  # [n] each
    p_ok, e_ok = (p >= 0) & (p < N_STAGES), (e >= 0) & (e < N_STAGES)
    keep = p_ok & e_ok  # [n]
    pk, ek = p[keep], e[keep]
    cm = confusion_matrix(ek, pk, N_STAGES)  # [5, 5] rows expert, columns predicted
    compared = int(keep.sum())
    pairs = keep[1:] & keep[:-1]  # [n - 1] consecutive epochs both compared
    hours = compared * epoch_s / 3600
    notes = []
    if len(pred) != len(expert):
        longer = "expert hypnogram" if len(expert) > len(pred) else "predicted night"
        notes.append(f"the expert hypnogram has {len(expert)} epochs, the predicted night {len(pred)}: compared on "
                     f"the first {n} ({abs(len(expert) - len(pred))} epochs of the {longer} left out)")
    if not compared:
        notes.append("no epoch has both an expert stage and a predicted stage: no metric")

    def per_stage(row_sums: np.ndarray) -> dict:
        return {name: (float(cm[k, k] / row_sums[k]) if row_sums[k] else None) for k, name in enumerate(STAGE_NAMES)}

    return {
        "epochs": compared,
        "accuracy": float((pk == ek).mean()) if compared else None,
        "kappa": _finite(cohen_kappa(ek, pk, N_STAGES)) if compared else None,
        "balanced_accuracy": _finite(balanced_accuracy(ek, pk, N_STAGES)) if compared else None,
        "macro_f1": _finite(macro_f1(ek, pk, N_STAGES)) if compared else None,
        "recall": per_stage(cm.sum(1)),
        "precision": per_stage(cm.sum(0)),
        "confusion": cm.tolist(),
        "confusion_axes": "rows expert, columns predicted, order " + " ".join(STAGE_NAMES),
        "stage_changes_per_hour": {
            "predicted": round(_changes(p, pairs) / hours, 2) if hours else None,
            "expert": round(_changes(e, pairs) / hours, 2) if hours else None,
        },
        "stage_epochs": {
            "predicted": dict(zip(STAGE_NAMES, map(int, cm.sum(0)))),
            "expert": dict(zip(STAGE_NAMES, map(int, cm.sum(1)))),
        },
        "excluded": {"expert_undefined": int((~e_ok).sum()), "predicted_unscorable": int((e_ok & ~p_ok).sum())},
        "predicted_epochs": int(len(pred)),
        "expert_epochs": int(len(expert)),
        "overlap_epochs": int(n),
        "epoch_seconds": epoch_s,
        "notes": notes,
    }


def stage_codes(names) -> np.ndarray:
    """Stage names per epoch ('W', 'N1', ..., '' or None for none) -> codes [n] int64, -1 for none."""
    return np.array([STAGE_NAMES.index(s) if s in STAGE_NAMES else -1 for s in names], np.int64)


def format_report(report: dict) -> list[str]:
    """The agreement block of a text report: metrics line, per-stage recall, confusion matrix."""
    fmt = lambda v: "   –" if v is None else f"{v:.3f}"  # noqa: E731
    lines = [
        f"  accuracy {fmt(report['accuracy'])}   Cohen's kappa {fmt(report['kappa'])}   "
        f"balanced accuracy {fmt(report['balanced_accuracy'])}",
        "  recall    " + "  ".join(f"{name:>5}" for name in STAGE_NAMES),
        "            " + "  ".join(f"{fmt(report['recall'][name]):>5}" for name in STAGE_NAMES),
        "",
        "  confusion (rows true, columns predicted)",
        "        " + "".join(f"{name:>6}" for name in STAGE_NAMES),
    ]
    lines += [f"  {name:>5} " + "".join(f"{v:>6}" for v in row) for name, row in zip(STAGE_NAMES, report["confusion"])]
    return lines


def plot_hypnograms(pred, expert, path: str | Path, title: str = "", *, epoch_s: float = EPOCH_SECONDS) -> Path:
    """PNG with the predicted hypnogram above the expert's, shared time axis in hours.

    pred [n_pred], expert [n_expert]: stage codes; epochs without a stage are gaps. A red strip
    under both marks the epochs where both have a stage and they differ. Returns `path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pred, expert = np.asarray(pred, np.int64), np.asarray(expert, np.int64)
    levels = np.array([PLOT_LEVELS[name] for name in STAGE_NAMES], float)  # code -> plot level

    def as_levels(stages: np.ndarray) -> np.ndarray:
        ok = (stages >= 0) & (stages < N_STAGES)
        return np.where(ok, levels[np.clip(stages, 0, N_STAGES - 1)], np.nan)

    n = min(len(pred), len(expert))
    p_levels, e_levels = as_levels(pred[:n]), as_levels(expert[:n])
    differ = np.flatnonzero(np.isfinite(p_levels) & np.isfinite(e_levels) & (p_levels != e_levels))  # [n_differ]
    fig, axes = plt.subplots(3, 1, figsize=(11, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 3, 0.45]})
    for ax, label, stages in ((axes[0], "predicted", pred), (axes[1], "expert", expert)):
        edges = np.arange(len(stages) + 1) * epoch_s / 3600  # [n + 1] hours
        ax.stairs(as_levels(stages), edges, baseline=None, color="#1f4e79", linewidth=1.2)
        ax.set_yticks(list(PLOT_LEVELS.values()), list(PLOT_LEVELS.keys()))
        ax.set_ylim(-0.5, 4.5)
        ax.set_ylabel(label)
        ax.grid(axis="x", alpha=0.3)
    strip = np.zeros(n)
    strip[differ] = 1.0
    axes[2].stairs(strip, np.arange(n + 1) * epoch_s / 3600, fill=True, color="#c0392b", baseline=0)
    axes[2].set_yticks([])
    axes[2].set_ylim(0, 1)
    axes[2].set_ylabel("differ", rotation=0, ha="right", va="center", fontsize=8)
    axes[0].set_title(title, fontsize=10)
    axes[2].set_xlabel(f"hours from recording start ({len(differ)} of {n} epochs differ)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def agreement_title(record: str, report: dict) -> str:
    """'REC: accuracy 0.812, kappa 0.701 over 840 epochs' (a plot title, a summary line)."""
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    return f"{record}: accuracy {fmt(report['accuracy'])}, Cohen's kappa {fmt(report['kappa'])} over {report['epochs']} epochs"


def agreement_with_hypnogram(pred_stages, path: str | Path, *, epoch_s: float | None = None, fmt: str | None = None):
    """Read an expert hypnogram file and compare with predicted stages [n] (codes; -1 unscorable).

    Returns (report, hypnogram): report = {'hypnogram': how the file was read, **stage_agreement_report}
    with the reader's notes first; hypnogram = the `io.hypnogram.Hypnogram` (for the plot). The epoch
    length of a file without times is inferred from the predicted night's length. Raises
    `RecordError` (a ValueError) naming the file for a bad hypnogram.
    """
    from .io.hypnogram import read_hypnogram

    pred = np.asarray(pred_stages)
    hypnogram = read_hypnogram(path, epoch_s=epoch_s, n_epochs=len(pred), fmt=fmt)
    report = stage_agreement_report(pred, hypnogram.stages)
    report["notes"] = hypnogram.notes + report["notes"]
    return {"hypnogram": hypnogram.describe(), **report}, hypnogram
