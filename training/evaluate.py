"""`physioserve evaluate PROBE_DIR [PROBE_DIR ...]`: test-split metrics, grouped over seeds, as the paper's tables.

Per probe folder and task: balanced accuracy, Cohen's kappa, macro F1, AUROC on the test split, and
the aggregate score (mean over tasks of (balanced accuracy - chance) / chance). Folders that differ
only in their seeds (pretraining or probing) form one row: mean ± sample std over them. Printed as
Markdown and written to OUT/evaluation.json and OUT/evaluation.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from physioserve.modalities import MODALITIES

from .config import TASKS
from physioserve.metrics import aggregate_score, classification_metrics

HELP = "test-split metrics of probe runs, as the paper's tables"
METRICS = ("balanced_accuracy", "kappa", "macro_f1", "auroc")
TASK_TITLES = {"sleep_stage": "Sleep stage", "age": "Age", "arousal": "Arousal"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("probe_dirs", nargs="+", help="folders written by `physioserve probe`")
    parser.add_argument("--out", default="evaluation", help="folder for evaluation.json and evaluation.md")


OBJECTIVE_TITLES = {"simclr": "SimCLR", "clip-pairwise": "CLIP pairwise", "clip-loo": "CLIP leave-one-out"}


def pretraining_label(pre: dict, model: dict) -> str:
    """'MultiMAE + modality drop', 'MultiMAE', 'MAE on EEG' (unimodal), 'SimCLR (late fusion)', ...; a mask
    ratio other than the paper's 0.7 is named (Appendix C)."""
    objective = pre.get("objective", "multimae")
    if objective != "multimae":
        return f"{OBJECTIVE_TITLES[objective]} (late fusion)"
    mods = model.get("modalities", MODALITIES)
    if len(mods) < len(MODALITIES):
        label = f"MAE on {'+'.join(m.upper() for m in mods)}"
    else:
        label = "MultiMAE + modality drop" if pre.get("modality_drop") else "MultiMAE"
    if pre.get("modality_drop"):  # overall ratio: the dropped modality plus p of the others
        ratio = (1 + pre.get("token_mask_prob", 0.6) * (len(mods) - 1)) / len(mods)
    else:
        ratio = pre.get("mask_ratio", 0.7)
    return label if abs(ratio - 0.7) < 1e-6 else f"{label}, mask ratio {ratio:.2f}"


def describe(summary: dict) -> dict[str, str]:
    """The row labels of one probe run: inputs, pretraining, training, labels, size."""
    probe = summary["configs"]["probe"]
    pre = summary["configs"].get("pretrain") or {}
    model = summary["configs"]["model"]
    mods = [m for m in MODALITIES if m in probe["modalities"]]
    inputs = "All" if len(mods) == len(MODALITIES) else "+".join(m.upper() for m in mods)
    if probe["mode"] != "scratch" and len(mods) < len(model.get("modalities", MODALITIES)):
        inputs += " (multimodal encoder)"  # one modality into an encoder pretrained on more: not a unimodal MAE
    if probe["mode"] == "scratch":
        pretraining = "none (random init)"
    else:
        pretraining = pretraining_label(pre, model)
    training = {"linear": "linear probe", "finetune": "fine-tuned", "scratch": "end to end"}[probe["mode"]]
    if probe.get("train_records") is not None:
        labels = f"{probe['train_records']} train records"
    elif probe.get("label_fraction", 1.0) < 1.0:
        labels = f"{probe['label_fraction']:.0%} of train windows"
    else:
        labels = "all"
    return {"inputs": inputs, "pretraining": pretraining, "training": training, "labels": labels,
            "size": model["name"]}


def _config_key(summary: dict) -> str:
    """Hash of everything that defines a run except seeds and paths: runs with equal keys are repeats."""
    configs = summary["configs"]
    probe = {k: v for k, v in configs["probe"].items() if k != "seed"}
    pre = {k: v for k, v in (configs.get("pretrain") or {}).items() if k != "seed"}
    if probe["mode"] == "scratch":
        pre = {}
    text = json.dumps({"model": configs["model"], "probe": probe, "pretrain": pre}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def evaluate_dir(path: str | Path) -> dict:
    """Test metrics of one probe folder."""
    path = Path(path)
    summary = json.loads((path / "probe.json").read_text())
    preds = np.load(path / "predictions.npz")
    metrics = {}
    for task in TASKS:
        key = f"{task}__test__prob"
        if key in preds.files and len(preds[key]):
            metrics[task] = classification_metrics(preds[f"{task}__test__label"], preds[key])
    bacc = {t: m["balanced_accuracy"] for t, m in metrics.items()}
    aggregate = aggregate_score(bacc) if len(bacc) == len(TASKS) else float("nan")
    pre = summary["configs"].get("pretrain") or {}
    return {
        "dir": str(path),
        "row": describe(summary),
        "config": _config_key(summary),
        "seeds": {"probe": summary["configs"]["probe"]["seed"], "pretrain": pre.get("seed")},
        "metrics": metrics,
        "aggregate": aggregate,
    }


def mean_std(values: list[float]) -> dict:
    """{mean, std (sample, ddof 1; 0 for one value), n} of the finite values."""
    arr = np.asarray(values, np.float64)
    arr = arr[np.isfinite(arr)]
    if len(arr) == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, "n": int(len(arr))}


def group_runs(runs: list[dict]) -> list[dict]:
    """Runs with the same configuration (seeds aside) -> one row with mean and std per metric."""
    groups: dict[str, list[dict]] = {}
    for r in runs:
        groups.setdefault(r["config"], []).append(r)
    labels = [json.dumps(g[0]["row"], sort_keys=True) for g in groups.values()]
    out = []
    for (key, members), label in zip(groups.items(), labels):
        row = dict(members[0]["row"])
        if labels.count(label) > 1:  # same visible labels, other hyperparameters: tell them apart
            row["labels"] += f" [config {key}]"
        out.append({
            "row": row,
            "config": key,
            "n_runs": len(members),
            "dirs": [m["dir"] for m in members],
            "metrics": {t: {k: mean_std([m["metrics"].get(t, {}).get(k, np.nan) for m in members]) for k in METRICS}
                        for t in TASKS},
            "aggregate": mean_std([m["aggregate"] for m in members]),
        })
    order = {"All": -1, **{m.upper(): i for i, m in enumerate(MODALITIES)}}
    out.sort(key=lambda g: (g["row"]["size"], g["row"]["training"], g["row"]["pretraining"], g["row"]["labels"],
                            order.get(g["row"]["inputs"], 10), g["row"]["inputs"]))
    return out


def format_cell(stat: dict) -> str:
    """'0.744 ± 0.012' (std only when there are several runs); '–' when there are none."""
    if stat["n"] == 0:
        return "–"
    return f"{stat['mean']:.3f}" + (f" ± {stat['std']:.3f}" if stat["n"] > 1 else "")


def markdown_tables(groups: list[dict]) -> str:
    """Table 1 shape (balanced accuracy per task + aggregate score) and a detail table of every metric."""
    head = "| Inputs | Pretraining | Training | Labels | Size | Sleep stage | Age | Arousal | Score | Runs |"
    lines = ["### Test balanced accuracy and aggregate score (mean ± std over seeds)", "", head,
             "|" + "---|" * 10]
    for g in groups:
        r = g["row"]
        cells = [format_cell(g["metrics"][t]["balanced_accuracy"]) for t in TASKS]
        lines.append(f"| {r['inputs']} | {r['pretraining']} | {r['training']} | {r['labels']} | {r['size']} | "
                     + " | ".join(cells) + f" | {format_cell(g['aggregate'])} | {g['n_runs']} |")
    lines += ["", "Score = mean over tasks of (balanced accuracy − chance) / chance; chance 0.2, 0.5, 0.5.", "",
              "### All test metrics", "",
              "| Inputs | Pretraining | Training | Labels | Size | Task | Balanced acc. | Kappa | Macro F1 | AUROC |",
              "|" + "---|" * 10]
    for g in groups:
        r = g["row"]
        for t in TASKS:
            m = g["metrics"][t]
            lines.append(f"| {r['inputs']} | {r['pretraining']} | {r['training']} | {r['labels']} | {r['size']} | "
                         f"{TASK_TITLES[t]} | " + " | ".join(format_cell(m[k]) for k in METRICS) + " |")
    return "\n".join(lines) + "\n"


def json_safe(obj):
    """NaN -> null, so that evaluation.json is strict JSON."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_safe(v) for v in obj]
    return obj


def run(args: argparse.Namespace) -> int:
    missing = [d for d in args.probe_dirs if not (Path(d) / "probe.json").exists()]
    if missing:
        print(f"evaluate: not probe folders (no probe.json): {', '.join(missing)}", file=sys.stderr)
        return 2
    runs = [evaluate_dir(d) for d in args.probe_dirs]
    groups = group_runs(runs)
    text = markdown_tables(groups)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(json_safe({"runs": runs, "groups": groups}), indent=1))
    (out / "evaluation.md").write_text(text)
    print(text)
    print(f"evaluate: {len(runs)} run(s) in {len(groups)} row(s); {out / 'evaluation.json'}, {out / 'evaluation.md'}",
          file=sys.stderr)
    return 0
