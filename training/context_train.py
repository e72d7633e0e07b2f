"""`physioserve context`: train the night-context model on a probe's frozen embeddings, and calibrate.

    physioserve context --probe PROBE_DIR --data CACHE --out CONTEXT_DIR

1. Embeddings of every window of every train/val/test record, in record order, from the probe's
   `model.pt` (encoder + heads; the encoder is not trained here): every record gets a clean pass with
   all modalities and one with EEG alone (the two common deployments); train records also get
   `--passes` augmented passes, each with one modality subset per night (a recording lacks a lead for
   the whole night) and `training.augment` perturbations per window. Cached in
   CONTEXT_DIR/nights.npz (reused when it matches).
2. `training.context.NightContext` fitted on the train nights, the step with the best validation
   kappa kept.
3. Temperatures (`training.calibration`) on the validation split for the window-level stage head,
   the arousal head and the night-level stage output; ECE before and after, reliability diagram.
4. CONTEXT_DIR/context.pt (weights, config, temperatures), context.json (everything measured:
   window-level vs night-level metrics per split and input, stage changes per hour, calibration),
   reliability.png. `physioserve export --context CONTEXT_DIR` puts it into the bundle.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from physioserve.cache import WindowCache
from physioserve.agreement import stage_agreement_report
from physioserve.epoch_features import FEATURE_NAMES, N_FEATURES, epoch_features
from physioserve.modalities import MODALITIES

from .augment import AugmentConfig, augment_batch
from .calibration import calibrate, plot_reliability
from .config import load_config_file
from .context import ContextConfig, Night, predict_nights, train_context
from .heads import load_inference_model
from .runtime import git_revision, save_atomic, setup_runtime, write_json

HELP = "train the night-context model (BiGRU over epoch embeddings) on a probe's encoder, and calibrate"
SPLITS = ("train", "val", "test")
EEG_ONLY = np.array([m == "eeg" for m in MODALITIES])
ALL = np.ones(len(MODALITIES), bool)
# modality subsets of the augmented passes, one per night: (subset, weight); every non-empty subset
# appears, the full set and EEG alone (the common deployments) most often
SUBSETS = [(np.array([(k >> i) & 1 for i in range(len(MODALITIES))], bool), 1.0) for k in range(1, 2 ** len(MODALITIES))]
SUBSETS = [(s, 12.0 if s.all() else 10.0 if s.tolist() == EEG_ONLY.tolist() else 2.0 if s[0] else 1.0) for s, _ in SUBSETS]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--probe", required=True, type=Path, help="PROBE_DIR of `physioserve probe` (its model.pt)")
    parser.add_argument("--data", required=True, type=Path, help="the window cache the probe was trained on")
    parser.add_argument("--out", required=True, type=Path, help="output folder (context.pt, context.json, ...)")
    parser.add_argument("--config", type=Path, help="JSON file of ContextConfig fields; flags win")
    parser.add_argument("--passes", type=int, default=3, help="augmented embedding passes of the train nights (default 3)")
    parser.add_argument("--steps", type=int, help="training steps of the context model")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--batch", type=int, default=256, help="windows per encoder batch (default 256)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--no-progress", action="store_true")


@torch.no_grad()
def record_outputs(model, windows: np.ndarray, mask: np.ndarray, device, batch: int,
                   augment: AugmentConfig | None = None, generator: torch.Generator | None = None) -> dict:
    """Encoder + heads on one record's windows [n, 4, 3000] (mask [n, 4]) -> embedding [n, D], logits, and
    the epoch features [n, F] of the same (augmented) windows (`physioserve.epoch_features`).

    Windows without a modality give zeros (they are unscorable)."""
    d = model.encoder.cfg.d_model
    n = len(mask)
    out = {"embedding": np.zeros((n, d), np.float32), "stage_logits": np.zeros((n, 5), np.float32),
           "arousal_logits": np.zeros((n, 2), np.float32), "age_logits": np.zeros((n, 2), np.float32),
           "features": np.zeros((n, N_FEATURES), np.float32)}
    rows = np.flatnonzero(mask.any(1))
    for start in range(0, len(rows), batch):
        sel = rows[start : start + batch]
        x = torch.from_numpy(np.asarray(windows[sel], np.float32)).to(device)  # [b, 4, 3000]
        m = torch.from_numpy(mask[sel]).to(device)  # [b, 4]
        if augment is not None:
            x, m = augment_batch(x, m, augment, generator)
        emb, stage, age, arousal = model(x, m)
        out["features"][sel] = epoch_features(x.float().cpu().numpy(), m.cpu().numpy())
        out["embedding"][sel] = emb.float().cpu().numpy()
        out["stage_logits"][sel] = stage.float().cpu().numpy()
        out["age_logits"][sel] = age.float().cpu().numpy()
        out["arousal_logits"][sel] = arousal.float().cpu().numpy()
    return out


def embed_nights(model, cache: WindowCache, passes: int, seed: int, device, batch: int, progress: bool) -> dict:
    """{split: [{record, kind, mask, stage, arousal, embedding, stage/arousal/age_logits}]}: every record of each split."""
    from tqdm.auto import tqdm

    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    weights = np.array([w for _, w in SUBSETS])
    jobs = []
    for split in SPLITS:
        for name in cache.split[split]:
            kinds = [("all", ALL, None), ("eeg", EEG_ONLY, None)]  # every split: clean, all modalities and EEG alone
            if split == "train":
                for p in range(passes):
                    subset = SUBSETS[rng.choice(len(SUBSETS), p=weights / weights.sum())][0]
                    kinds.append((f"aug{p}", subset, AugmentConfig()))
            jobs += [(split, name, *kind) for kind in kinds]
    out: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for split, name, kind, subset, augment in tqdm(jobs, desc="embed nights", disable=not progress, dynamic_ncols=True):
        i = cache.records.index(name)
        lo, hi = cache.offsets[i], cache.offsets[i + 1]
        mask = cache.mask[lo:hi] & subset[None, :]  # [n, 4]
        res = record_outputs(model, cache.record_windows(i), mask, device, batch, augment, generator)
        labels = {k: cache.labels[k][lo:hi] for k in ("stage", "arousal")}
        out[split].append({"record": name, "kind": kind, "mask": mask, **labels, **res})
    return out


def _nights(items: list[dict], kinds: tuple[str, ...] | None = None) -> list[Night]:
    return [Night(it["record"], it["embedding"], it["mask"], it["stage"].astype(np.int64), it["features"])
            for it in items if kinds is None or it["kind"] in kinds]


def stage_metrics(pred_by_night: list[np.ndarray], items: list[dict]) -> dict:
    """Pooled accuracy, kappa, balanced accuracy, per-stage recall and confusion over the nights' scorable,
    labelled epochs (`physioserve.agreement`), per-night kappa, and the mean stage changes per hour."""
    truth = [np.where(it["mask"].any(1), it["stage"], -1).astype(np.int64) for it in items]
    preds = [np.where(it["mask"].any(1), p, -1).astype(np.int64) for p, it in zip(pred_by_night, items)]
    pooled = stage_agreement_report(np.concatenate(preds), np.concatenate(truth))
    nights = [stage_agreement_report(p, t) for p, t in zip(preds, truth)]
    keys = ("epochs", "accuracy", "kappa", "balanced_accuracy", "recall", "confusion")
    return {**{k: pooled[k] for k in keys}, "per_night_kappa": [n["kappa"] for n in nights],
            "stage_changes_per_h": float(np.mean([n["stage_changes_per_hour"]["predicted"] for n in nights])),
            "true_stage_changes_per_h": float(np.mean([n["stage_changes_per_hour"]["expert"] for n in nights]))}


def _labelled_rows(items: list[dict], key: str, field: str) -> tuple[np.ndarray, np.ndarray]:
    logits = np.concatenate([it[key][it["mask"].any(1)] for it in items])
    y = np.concatenate([it[field][it["mask"].any(1)] for it in items]).astype(np.int64)
    return logits[y >= 0], y[y >= 0]


def _config(args) -> ContextConfig:
    values = load_config_file(args.config) if args.config else {}
    values.update({k: v for k, v in {"steps": args.steps, "seed": args.seed}.items() if v is not None})
    try:
        return ContextConfig.from_dict(values)
    except (TypeError, ValueError) as error:
        raise SystemExit(f"context: {error}") from None


def _load_or_embed(args, model, cache, cfg, device) -> dict:
    path = args.out / "nights.npz"
    fingerprint = json.dumps({"probe": str((args.probe / "model.pt").stat().st_mtime_ns), "passes": args.passes,
                              "train_clean": ["all", "eeg"], "features": FEATURE_NAMES, "seed": cfg.seed, "records": {s: cache.split[s] for s in SPLITS}})
    if path.exists():
        saved = np.load(path, allow_pickle=True)
        if str(saved["fingerprint"]) == fingerprint:
            return saved["nights"].item()
    nights = embed_nights(model, cache, args.passes, cfg.seed, device, args.batch, not args.no_progress)
    np.savez(path, fingerprint=np.array(fingerprint), nights=np.array(nights, dtype=object))
    return nights


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    cfg = _config(args)
    runtime = setup_runtime(args.device, args.threads)
    device = runtime.device
    args.out.mkdir(parents=True, exist_ok=True)
    probe_file = args.probe / "model.pt" if args.probe.is_dir() else args.probe
    if not probe_file.exists():
        raise SystemExit(f"context: {probe_file} does not exist; give the folder of `physioserve probe`")
    try:
        cache = WindowCache(args.data)
        cache.split_indices("train")
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"context: {error}") from None
    model, probe_configs = load_inference_model(probe_file)
    model.to(device)
    nights = _load_or_embed(args, model, cache, cfg, device)
    print(f"context: nights " + ", ".join(f"{s} {len({it['record'] for it in nights[s]})}" for s in SPLITS)
          + f" ({sum(len(v) for v in nights.values())} passes)", file=sys.stderr)

    context, selection = train_context(_nights(nights["train"]), _nights(nights["val"]), cfg,
                                       progress=not args.no_progress, window_head=model.heads["sleep_stage"])

    # calibration on the validation split (all-modality and EEG-only passes together)
    val = nights["val"]
    calib = {
        "sleep_stage": calibrate(*_labelled_rows(val, "stage_logits", "stage")),
        "arousal": calibrate(*_labelled_rows(val, "arousal_logits", "arousal")),
    }
    night_val = [{**it, "night": lg} for it, lg in zip(val, predict_nights(context, _nights(val)))]
    calib["sleep_stage_night"] = calibrate(*_labelled_rows(night_val, "night", "stage"))
    plot_reliability(calib, args.out / "reliability.png")

    metrics = {}
    for split in ("val", "test"):
        for kind in ("all", "eeg"):
            items = [it for it in nights[split] if it["kind"] == kind]
            if not items:
                continue
            night = [lg.argmax(1) for lg in predict_nights(context, _nights(items))]
            window = [it["stage_logits"].argmax(1) for it in items]
            metrics[f"{split}/{kind}"] = {"window": stage_metrics(window, items), "night": stage_metrics(night, items)}
            m = metrics[f"{split}/{kind}"]
            print(f"context: {split:4s} {kind:3s}  kappa window {m['window']['kappa']:.3f} -> night "
                  f"{m['night']['kappa']:.3f}; changes/h {m['night']['stage_changes_per_h']:.1f} "
                  f"(true {m['night']['true_stage_changes_per_h']:.1f})", file=sys.stderr)
    temps = {k: v["temperature"] for k, v in calib.items()}
    save_atomic({"kind": "context", "state": context.state_dict(), "config": cfg.to_dict(),
                 "d_model": int(model.encoder.cfg.d_model), "temperatures": temps,
                 "probe_configs": probe_configs, "git": git_revision()}, args.out / "context.pt")
    summary = {"config": cfg.to_dict(), "probe": str(args.probe), "passes": args.passes,
               "nights": {s: len({it["record"] for it in nights[s]}) for s in SPLITS},
               "selection": selection, "temperatures": temps,
               "calibration": calib,
               "metrics": metrics, "wall_s": time.perf_counter() - started}
    write_json(args.out / "context.json", summary)
    for name, res in calib.items():
        print(f"context: calibration {name:17s} T {res['temperature']:.2f}  ECE {res['ece_before']:.3f} -> "
              f"{res['ece_after']:.3f}", file=sys.stderr)
    return 0


