"""`physioserve probe`: linear probes on a frozen encoder, and the end-to-end baselines (paper §3.4).

    physioserve probe --checkpoint runs/small/encoder.pt --data CACHE --out probes/small-all
    physioserve probe --checkpoint runs/small/encoder.pt --data CACHE --out probes/small-eeg --modalities eeg
    physioserve probe --size small --scratch --data CACHE --out probes/scratch
    physioserve probe --checkpoint runs/small/encoder.pt --finetune --data CACHE --out probes/ft --train-records 10

Windows: the split's windows with a defined sleep stage (and at least one modality left after
`--modalities`). Tasks: sleep stage (5-way, all of them), age < 55 (windows of records with a known
age), arousal (windows of labelled records). Linear mode (default): embeddings (final LayerNorm, mean
over present tokens) are computed once into PROBE_DIR/embeddings.npz, then one linear head per task
trains on them with class-weighted cross-entropy; the epoch with the best validation balanced
accuracy is kept, per task. `--scratch` / `--finetune`: the same encoder with the three heads trained
end to end (from random init / from the checkpoint), the epoch with the best mean validation balanced
accuracy kept. PROBE_DIR gets probe.json (configs, selection, validation metrics), predictions.npz
(validation and test probabilities), model.pt (encoder + heads: `InferenceModel`, what export takes).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from physioserve.cache import WindowCache
from physioserve.modalities import MODALITIES
from physioserve.preprocessing import DEFAULT_CONFIG, check_config_matches

from .augment import augment_batch
from .config import MODEL_SIZES, TASK_LABEL_FIELD, TASKS, AugmentConfig, ModelConfig, ProbeConfig, augment_config, load_config_file
from .data import BatchSource, WindowBatchDataset
from .heads import InferenceModel, make_heads
from physioserve.metrics import balanced_accuracy, classification_metrics
from .model import MultiModalEncoder
from .pretrain import lr_factor, make_optimizer
from .runtime import (
    autocast,
    autocast_dtype,
    git_revision,
    load_encoder_checkpoint,
    save_atomic,
    seed_everything,
    setup_runtime,
    write_json,
)

HELP = "linear probes (stage, age, arousal) on a frozen encoder"
SPLITS = ("train", "val", "test")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", help="RUN_DIR/encoder.pt or checkpoint.pt (optional with --scratch)")
    parser.add_argument("--data", required=True, help="window cache folder")
    parser.add_argument("--out", required=True, help="probe folder")
    parser.add_argument("--config", help="JSON file of ProbeConfig fields (configs/probe-*.json); flags win")
    parser.add_argument("--size", choices=sorted(MODEL_SIZES), help="model size for --scratch without --checkpoint")
    parser.add_argument("--modalities", help="comma-separated subset of eeg,eog,emg,ecg (default all)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--scratch", action="store_true", help="same architecture trained end to end from random init")
    mode.add_argument("--finetune", action="store_true", help="full fine-tuning from the checkpoint")
    parser.add_argument("--subset-augment", action="store_true", default=None,
                        help="linear: train the heads on every single-modality and one-left-out subset too "
                             "(heads that serve recordings lacking modalities)")
    parser.add_argument("--augment", action="store_true", default=None,
                        help="--scratch/--finetune: perturb every training batch as real recordings vary "
                             "(training.augment; our addition)")
    parser.add_argument("--augment-subsets", type=float, default=None, metavar="P",
                        help="with --augment: share of training windows whose modalities are cut to a random subset")
    parser.add_argument("--augment-eeg-only", type=float, default=None, metavar="P",
                        help="with --augment-subsets: share of the cut windows that keep EEG alone")
    parser.add_argument("--task-weights", default=None, metavar="S,A,R",
                        help="--scratch/--finetune: weights of the sleep_stage, age and arousal losses (default 1,1,1)")
    parser.add_argument("--select", choices=["mean", "sleep_stage"], default=None,
                        help="end to end: keep the epoch with the best mean validation balanced accuracy over the "
                             "tasks (default, as the paper's baselines) or the best for sleep stage")
    parser.add_argument("--label-fraction", type=float, help="fraction of the labelled train windows (seeded)")
    parser.add_argument("--train-records", type=int, help="use only N train records (seeded)")
    parser.add_argument("--epochs", type=int, help="epochs of the heads (linear) or of end-to-end training (200)")
    parser.add_argument("--warmup-epochs", type=float, help="linear warm-up epochs before the cosine, active mode (10)")
    parser.add_argument("--lr", type=float, help="learning rate of the active mode")
    parser.add_argument("--batch-size", type=int, help="training batch size of the active mode")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"])
    parser.add_argument("--workers", type=int, help="DataLoader workers (default: 0 on CPU, 8 on GPU)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--threads", type=int, help="torch CPU threads (on a busy CPU, fewer can be faster)")
    parser.add_argument("--no-progress", action="store_true")


def _config_from_args(args: argparse.Namespace) -> ProbeConfig:
    values = load_config_file(args.config) if args.config else {}
    mode = "scratch" if args.scratch else "finetune" if args.finetune else values.get("mode", "linear")
    values["mode"] = mode
    linear = mode == "linear"
    flags = {
        "modalities": tuple(m.strip() for m in args.modalities.split(",")) if args.modalities else None,
        "label_fraction": args.label_fraction,
        "subset_augment": args.subset_augment,
        "train_records": args.train_records,
        "seed": args.seed,
        "amp": args.amp,
        "epochs" if linear else "e2e_epochs": args.epochs,
        "warmup_epochs" if linear else "e2e_warmup_epochs": args.warmup_epochs,
        "batch_size" if linear else "e2e_batch_size": args.batch_size,
        ("lr" if linear else f"{mode}_lr"): args.lr,
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    if args.select is not None:
        values["e2e_select"] = args.select
    if args.task_weights is not None:
        try:
            values["e2e_task_weights"] = tuple(float(w) for w in args.task_weights.split(","))
        except ValueError:
            raise SystemExit(f"probe: --task-weights {args.task_weights!r}: three numbers, e.g. 1,0.2,0.3") from None
    if args.augment:
        extra = {"subset_p": args.augment_subsets, "eeg_only_p": args.augment_eeg_only}
        values["augment"] = AugmentConfig(**{k: v for k, v in extra.items() if v is not None}).to_dict()
    elif args.augment_subsets is not None or args.augment_eeg_only is not None:
        raise SystemExit("probe: --augment-subsets / --augment-eeg-only need --augment")
    if values.get("augment") and mode == "linear":
        raise SystemExit("probe: --augment applies to --scratch/--finetune (linear probes train on cached embeddings)")
    if "modalities" in values:
        unknown = [m for m in values["modalities"] if m not in MODALITIES]
        if unknown or not values["modalities"]:
            raise SystemExit(f"probe: --modalities {','.join(values['modalities'])}: unknown {', '.join(unknown) or '(none given)'}; "
                             f"accepted: {', '.join(MODALITIES)}")
        values["modalities"] = tuple(m for m in MODALITIES if m in values["modalities"])  # MODALITIES order
    if values.get("subset_augment") and mode != "linear":
        raise SystemExit("probe: --subset-augment applies to linear probes; drop it with --scratch/--finetune")
    try:
        return ProbeConfig.from_dict(values)
    except ValueError as error:
        raise SystemExit(f"probe: {error}") from None


def _fit_to_encoder(cfg: ProbeConfig, model_cfg: ModelConfig, given: bool) -> ProbeConfig:
    """Probe inputs within the encoder's modalities: a unimodal MAE is probed with its own modality."""
    if set(cfg.modalities) <= set(model_cfg.modalities):
        return cfg
    if given:
        raise SystemExit(f"probe: --modalities {','.join(cfg.modalities)}: the encoder takes only "
                         f"{','.join(model_cfg.modalities)}; probe within those")
    return cfg.replace(modalities=tuple(model_cfg.modalities))


def select_windows(cache: WindowCache, split: str, cfg: ProbeConfig, keep: np.ndarray) -> np.ndarray:
    """Global indices of the split's windows with a defined stage and a present modality left, limited on train."""
    idx = cache.split_indices(split)
    idx = idx[cache.labels["stage"][idx] >= 0]
    idx = idx[(cache.mask[idx] & keep[None, :]).any(1)]
    if split != "train":
        return idx
    rng = np.random.default_rng(cfg.seed)
    if cfg.train_records is not None:
        names = sorted(cache.split["train"])
        if cfg.train_records > len(names):
            raise SystemExit(f"probe: --train-records {cfg.train_records}: the split has {len(names)} train records; "
                             "ask for at most that many")
        chosen = set(rng.permutation(names)[: cfg.train_records].tolist())
        record_ids = [i for i, r in enumerate(cache.records) if r in chosen]
        idx = idx[np.isin(cache.record_index[idx], record_ids)]
    if cfg.label_fraction < 1.0 and len(idx):
        n = max(1, int(round(cfg.label_fraction * len(idx))))
        idx = np.sort(rng.choice(idx, n, replace=False))
    return idx


def class_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    """n / (K * n_k) for classes seen in training (0 for unseen ones): balanced cross-entropy."""
    counts = np.bincount(y[y >= 0], minlength=n_classes).astype(np.float64)
    seen = counts > 0
    w = np.zeros(n_classes)
    w[seen] = counts.sum() / (seen.sum() * counts[seen])
    return torch.tensor(w, dtype=torch.float32)


def weighted_ce(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Class-weighted cross-entropy over labelled rows (y >= 0); 0 when none (no NaN)."""
    labelled = y >= 0
    target = y.clamp(min=0)
    nll = F.cross_entropy(logits.float(), target, reduction="none")  # [B]
    w = weight[target] * labelled.float()  # [B]
    return (w * nll).sum() / w.sum().clamp(min=1e-12)


def _loader(dataset: WindowBatchDataset, batch_size: int, device, args, shuffle: bool, seed: int) -> BatchSource:
    return BatchSource(dataset, batch_size, device, seed=seed, shuffle=shuffle, drop_last=False, workers=args.workers)


@torch.no_grad()
def compute_embeddings(encoder: MultiModalEncoder, source: BatchSource, amp_dtype) -> np.ndarray:
    """Pooled embeddings [n, D] float32 of the source's windows, in order."""
    encoder.eval()
    parts = [
        _pooled(encoder, batch, amp_dtype).float().cpu().numpy() for batch in source.epoch(0)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, encoder.cfg.d_model), np.float32)


def _pooled(encoder, batch, amp_dtype):
    with autocast(amp_dtype, batch.signals.device):
        return encoder.pooled(batch.signals, batch.mask)


def train_linear_head(x_tr: torch.Tensor, y_tr: torch.Tensor, x_val: torch.Tensor, y_val: np.ndarray,
                      n_classes: int, cfg: ProbeConfig) -> tuple[nn.Linear, dict]:
    """One linear head on standardised embeddings, class-weighted CE, AdamW with linear warm-up then cosine
    per step (paper §3.5: 200 epochs, 10 warm-up), best epoch on validation balanced accuracy. The returned
    head works on raw embeddings (the standardisation is folded into it)."""
    torch.manual_seed(cfg.seed)
    mu = x_tr.mean(0)
    sd = x_tr.std(0, unbiased=False).clamp(min=1e-6)
    z_tr, z_val = (x_tr - mu) / sd, (x_val - mu) / sd
    head = nn.Linear(x_tr.shape[1], n_classes).to(x_tr.device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = -(-len(x_tr) // cfg.batch_size)
    warmup, total = max(1, round(cfg.warmup_epochs * steps_per_epoch)), cfg.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, total, cfg.min_lr_ratio))
    weight = class_weights(y_tr.cpu().numpy(), n_classes).to(x_tr.device)
    generator = torch.Generator().manual_seed(cfg.seed)
    best = {"val_balanced_accuracy": -math.inf, "epoch": -1}
    best_state = copy.deepcopy(head.state_dict())
    curve = []
    n = len(x_tr)
    for epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=generator).to(x_tr.device)
        for start in range(0, n, cfg.batch_size):
            sel = order[start : start + cfg.batch_size]
            loss = weighted_ce(head(z_tr[sel]), y_tr[sel], weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        with torch.no_grad():
            pred = head(z_val).argmax(1).cpu().numpy()
        score = balanced_accuracy(y_val, pred, n_classes)
        curve.append(score)
        if score > best["val_balanced_accuracy"]:
            best = {"val_balanced_accuracy": score, "epoch": epoch}
            best_state = copy.deepcopy(head.state_dict())
    head.load_state_dict(best_state)
    with torch.no_grad():  # fold (x - mu) / sd into the weights: W' = W / sd, b' = b - W' mu
        w = head.weight / sd
        head.bias -= w @ mu
        head.weight.copy_(w)
    return head, {**best, "val_curve": curve}


def _probs(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits.float(), dim=-1).cpu().numpy()


def run(args: argparse.Namespace) -> int:
    cfg = _config_from_args(args)
    runtime = setup_runtime(args.device, args.threads)
    if runtime.distributed:
        raise SystemExit("probe runs in one process; start it without torchrun")
    device = runtime.device
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        cache = WindowCache(args.data)
        cache.split_indices("train")
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"probe: {error}") from None

    if args.checkpoint:
        encoder_state, source_configs = load_encoder_checkpoint(args.checkpoint)
        check_config_matches(source_configs["preprocessing"], where=f"checkpoint {args.checkpoint}")
        model_cfg = ModelConfig.from_dict(source_configs["model"])
        if args.size and args.size != model_cfg.name:
            raise SystemExit(f"probe: --size {args.size} differs from the checkpoint's {model_cfg.name}")
        cfg = _fit_to_encoder(cfg, model_cfg, given=args.modalities is not None)
    elif cfg.mode == "scratch":
        encoder_state, source_configs = None, {}
        # the architecture of the rows it stands beside: an encoder of the probed modalities only
        model_cfg = ModelConfig.named(args.size or "small").replace(modalities=cfg.modalities)
    else:
        raise SystemExit("probe: give --checkpoint (or --scratch with --size)")

    seed_everything(cfg.seed)
    encoder = MultiModalEncoder(model_cfg)
    if cfg.mode != "scratch":
        encoder.load_state_dict(encoder_state)
    encoder.to(device)
    amp_dtype = autocast_dtype(cfg.amp, device)
    keep = np.array([m in cfg.modalities for m in MODALITIES])
    indices = {s: select_windows(cache, s, cfg, keep) for s in SPLITS}
    for split, idx in indices.items():
        if len(idx) == 0:
            raise SystemExit(f"probe: no {split} window has a sleep stage and one of {', '.join(cfg.modalities)}")
    labels = {s: {t: cache.labels[TASK_LABEL_FIELD[t]][idx].astype(np.int64) for t in TASKS} for s, idx in indices.items()}
    datasets = {s: WindowBatchDataset(args.data, idx, keep) for s, idx in indices.items()}
    print(f"probe: {cfg.mode}, {model_cfg.name} encoder, inputs {'+'.join(cfg.modalities)}, windows "
          + ", ".join(f"{s} {len(i)}" for s, i in indices.items()), file=sys.stderr)

    if cfg.mode == "linear":
        heads, selection, probs = _linear(encoder, datasets, labels, cfg, args, out, amp_dtype, device)
    else:
        heads, selection, probs = _end_to_end(encoder, datasets, labels, cfg, args, amp_dtype, device)

    predictions = {}
    val_metrics = {}
    for task in TASKS:
        for split in ("val", "test"):
            if task not in probs:
                continue
            has = labels[split][task] >= 0
            predictions[f"{task}__{split}__prob"] = probs[task][split][has].astype(np.float32)
            predictions[f"{task}__{split}__label"] = labels[split][task][has]
            predictions[f"{task}__{split}__index"] = indices[split][has]
        if task in probs:
            val_metrics[task] = classification_metrics(predictions[f"{task}__val__label"], predictions[f"{task}__val__prob"])
    np.savez(out / "predictions.npz", **predictions)

    checkpoint_configs = source_configs if cfg.mode != "scratch" else {}
    configs = {
        "model": model_cfg.to_dict(),
        "probe": cfg.to_dict(),
        "preprocessing": DEFAULT_CONFIG.to_dict(),
        "cache": cache.header,
        "pretrain": checkpoint_configs.get("pretrain"),
    }
    provenance = {"git": git_revision(), "torch": str(torch.__version__), "checkpoint": args.checkpoint}
    save_atomic({"kind": "inference", "encoder": encoder.cpu().state_dict(), "heads": heads.cpu().state_dict(),
                 "configs": configs, **provenance}, out / "model.pt")
    summary = {
        "mode": cfg.mode,
        "configs": configs,
        **provenance,
        "windows": {s: int(len(i)) for s, i in indices.items()},
        "labelled_windows": {s: {t: int((labels[s][t] >= 0).sum()) for t in TASKS} for s in SPLITS},
        "train_records": sorted({cache.records[i] for i in cache.record_index[indices["train"]]}),
        "selection": selection,
        "val_metrics": val_metrics,
        "skipped_tasks": {t: selection[t]["skipped"] for t in TASKS if "skipped" in selection.get(t, {})},
        "wall_s": time.perf_counter() - started,
    }
    write_json(out / "probe.json", summary)
    for task, m in val_metrics.items():
        print(f"probe: {task:12s} val balanced accuracy {m['balanced_accuracy']:.3f}  kappa {m['kappa']:.3f}  "
              f"macro F1 {m['macro_f1']:.3f}  AUROC {m['auroc']:.3f}", file=sys.stderr)
    return 0


def _embeddings(encoder, datasets, cfg, args, out: Path, amp_dtype, device) -> dict[str, np.ndarray]:
    """Embeddings per split, reused from PROBE_DIR/embeddings.npz when made from the same encoder and windows."""
    path = out / "embeddings.npz"
    digest = hashlib.sha1(Path(args.checkpoint).read_bytes()).hexdigest()
    fingerprint = json.dumps({"checkpoint_sha1": digest, "modalities": list(cfg.modalities), "amp": str(amp_dtype)})
    if path.exists():
        saved = np.load(path)
        if str(saved["fingerprint"]) == fingerprint and all(
            np.array_equal(saved[f"{s}_index"], datasets[s].indices) for s in SPLITS
        ):
            return {s: saved[f"{s}_embedding"] for s in SPLITS}
    emb = {}
    for split in SPLITS:
        source = _loader(datasets[split], cfg.embed_batch_size, device, args, shuffle=False, seed=cfg.seed)
        emb[split] = compute_embeddings(encoder, source, amp_dtype)
    np.savez(path, fingerprint=np.array(fingerprint), **{f"{s}_embedding": emb[s] for s in SPLITS},
             **{f"{s}_index": datasets[s].indices for s in SPLITS})
    return emb


def augment_subsets(modalities: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Each single modality and each one-left-out subset of `modalities` (the full set excluded)."""
    singles = [(m,) for m in modalities]
    left_out = [tuple(x for x in modalities if x != m) for m in modalities]
    return [s for s in dict.fromkeys(singles + left_out) if s and s != tuple(modalities)]


def _subset_embeddings(encoder, datasets, labels, cfg, args, amp_dtype, device) -> dict[str, tuple]:
    """Train and val embeddings (and their labels) of every augmentation subset, concatenated."""
    out = {}
    for split in ("train", "val"):
        xs, ys = [], {t: [] for t in TASKS}
        for subset in augment_subsets(cfg.modalities):
            keep = np.array([m in subset for m in MODALITIES])
            present = (datasets[split].cache.mask[datasets[split].indices] & keep).any(1)  # [n]
            ds = WindowBatchDataset(datasets[split].cache_root, datasets[split].indices[present], keep)
            source = _loader(ds, cfg.embed_batch_size, device, args, shuffle=False, seed=cfg.seed)
            xs.append(compute_embeddings(encoder, source, amp_dtype))
            for t in TASKS:
                ys[t].append(labels[split][t][present])
        out[split] = (np.concatenate(xs), {t: np.concatenate(v) for t, v in ys.items()})
    return out


def _linear(encoder, datasets, labels, cfg, args, out, amp_dtype, device):
    emb = _embeddings(encoder, datasets, cfg, args, out, amp_dtype, device)
    heads = make_heads(encoder.cfg.d_model)
    selection, probs = {}, {}
    x = {s: torch.from_numpy(emb[s]).float().to(device) for s in SPLITS}
    fit_x, fit_labels = {s: x[s] for s in ("train", "val")}, {s: labels[s] for s in ("train", "val")}
    if cfg.subset_augment:  # heads fit on the full input plus every augmentation subset
        extra = _subset_embeddings(encoder, datasets, labels, cfg, args, amp_dtype, device)
        for s, (xe, ye) in extra.items():
            fit_x[s] = torch.cat([x[s], torch.from_numpy(xe).float().to(device)])
            fit_labels[s] = {t: np.concatenate([labels[s][t], ye[t]]) for t in TASKS}
        print(f"probe: subset augmentation, {len(augment_subsets(cfg.modalities))} subsets, train rows "
              f"{len(fit_x['train'])}", file=sys.stderr)
    for task, n_classes in TASKS.items():
        y = fit_labels["train"][task]
        has = y >= 0
        classes = np.unique(y[has])
        if len(classes) < 2 or not (fit_labels["val"][task] >= 0).any():
            selection[task] = {"skipped": f"train has classes {classes.tolist()}; validation labels: "
                                          f"{int((fit_labels['val'][task] >= 0).sum())}"}
            continue
        val_has = fit_labels["val"][task] >= 0
        head, info = train_linear_head(fit_x["train"][torch.from_numpy(has).to(device)],
                                       torch.from_numpy(y[has]).to(device),
                                       fit_x["val"][torch.from_numpy(val_has).to(device)],
                                       fit_labels["val"][task][val_has], n_classes, cfg)
        heads[task].load_state_dict(head.state_dict())
        selection[task] = info
        with torch.no_grad():
            probs[task] = {s: _probs(head(x[s])) for s in ("val", "test")}
        print(f"probe: {task:12s} best epoch {info['epoch'] + 1}/{cfg.epochs}, "
              f"val balanced accuracy {info['val_balanced_accuracy']:.3f}", file=sys.stderr)
    return heads, selection, probs


@torch.no_grad()
def _predict(model: InferenceModel, source: BatchSource, amp_dtype) -> dict[str, np.ndarray]:
    model.eval()
    parts: dict[str, list] = {t: [] for t in TASKS}
    for batch in source.epoch(0):
        with autocast(amp_dtype, batch.signals.device):
            _, *logits = model(batch.signals, batch.mask)
        for task, lg in zip(TASKS, logits):
            parts[task].append(_probs(lg))
    return {t: np.concatenate(p) for t, p in parts.items()}


def _end_to_end(encoder, datasets, labels, cfg, args, amp_dtype, device):
    """Train encoder + heads jointly (scratch or finetune); keep the epoch with the best mean val balanced accuracy."""
    model = InferenceModel(encoder, make_heads(encoder.cfg.d_model)).to(device)
    weights = {t: class_weights(labels["train"][t], n).to(device) for t, n in TASKS.items()}
    active = [t for t in TASKS if len(np.unique(labels["train"][t][labels["train"][t] >= 0])) >= 2
              and (labels["val"][t] >= 0).any()]
    if not active:
        raise SystemExit("probe: no task has two classes in train and labels in validation")
    lr = cfg.scratch_lr if cfg.mode == "scratch" else cfg.finetune_lr
    optimizer = make_optimizer(model, lr, cfg.e2e_weight_decay, (0.9, 0.999), fused=device.type == "cuda")
    train = _loader(datasets["train"], cfg.e2e_batch_size, device, args, shuffle=True, seed=cfg.seed)
    val = _loader(datasets["val"], cfg.embed_batch_size, device, args, shuffle=False, seed=cfg.seed)
    steps_per_epoch = train.batches_per_epoch()
    total = cfg.e2e_epochs * steps_per_epoch
    warmup = max(1, round(cfg.e2e_warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, total, cfg.min_lr_ratio))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    label_table = {t: torch.from_numpy(labels["train"][t]) for t in TASKS}  # row = position in datasets["train"]
    best_score, best_state, best_epoch, curve = -math.inf, copy.deepcopy(model.state_dict()), -1, []
    augment = augment_config(cfg.augment)
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    from tqdm.auto import tqdm

    bar = tqdm(total=total, disable=args.no_progress, dynamic_ncols=True, desc=cfg.mode)
    for epoch in range(cfg.e2e_epochs):
        model.train()
        for batch in train.epoch(epoch):
            rows = batch.position
            signals, mask = augment_batch(batch.signals, batch.mask, augment, generator)
            with autocast(amp_dtype, device):
                _, *logits = model(signals, mask)
            loss = sum(
                task_weight * weighted_ce(lg, label_table[t][rows].to(device), weights[t])
                for t, lg, task_weight in zip(TASKS, logits, cfg.e2e_task_weights) if t in active
            )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            bar.update(1)
            if not bar.disable and bar.n % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
        probs = _predict(model, val, amp_dtype)
        scores = {}
        for t in active:
            has = labels["val"][t] >= 0
            scores[t] = balanced_accuracy(labels["val"][t][has], probs[t][has].argmax(1), TASKS[t])
        if cfg.e2e_select == "sleep_stage" and "sleep_stage" in scores:
            score = scores["sleep_stage"]
        else:
            score = float(np.mean(list(scores.values()))) if scores else -math.inf
        curve.append(scores)
        if score > best_score:
            best_score, best_epoch, best_state = score, epoch, copy.deepcopy(model.state_dict())
    bar.close()
    model.load_state_dict(best_state)
    test = _loader(datasets["test"], cfg.embed_batch_size, device, args, shuffle=False, seed=cfg.seed)
    probs_val, probs_test = _predict(model, val, amp_dtype), _predict(model, test, amp_dtype)
    selection = {t: ({"epoch": best_epoch, f"val_{cfg.e2e_select}_balanced_accuracy": best_score,
                      "val_curve": [c.get(t) for c in curve]} if t in active else
                     {"skipped": "fewer than two classes in train or no validation labels"}) for t in TASKS}
    probs = {t: {"val": probs_val[t], "test": probs_test[t]} for t in active}
    return model.heads, selection, probs

