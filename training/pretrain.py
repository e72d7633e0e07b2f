"""`physioserve pretrain`: self-supervised pretraining on a window cache.

    physioserve pretrain --data CACHE --size small --out runs/small                        # MultiMAE + drop
    physioserve pretrain --data CACHE --size small --out runs/eeg --modalities eeg         # unimodal MAE
    physioserve pretrain --data CACHE --size small --out runs/loo --objective clip-loo     # late fusion
    torchrun --nproc_per_node 8 -m physioserve.cli pretrain --data CACHE --size paper --out runs/paper --gpu-cache

Objectives (`training.objectives`): MultiMAE with input modality drop (paper §3.3; `--no-modality-drop`
for MultiMAE alone; `--modalities eeg` for one modality's MAE, Table 1) and the late-fusion contrastive
baselines of Appendix F (`--objective simclr | clip-pairwise | clip-loo`). AdamW, linear warm-up then
cosine (per step), gradient clipping, bf16/fp16 autocast on GPU, DDP under torchrun.

At every epoch end the objective's loss on the validation split (fixed masks and views) is logged;
`--select best-val` gives encoder.pt the weights of the epoch with the lowest one (kept in RUN_DIR/best.pt),
`--select latest` the last weights; the default is the paper's rule (§3.5): latest for MultiMAE +
modality drop, best validation loss otherwise. RUN_DIR/checkpoint.pt (latest: model, optimizer,
scheduler, scaler, every rank's RNG states, epoch and batch position, best validation loss, configs, git
revision) is written every `--checkpoint-every` steps, at each epoch end and when the run stops;
`--resume` continues from it and reproduces the uninterrupted run's losses exactly. RUN_DIR/encoder.pt
(the selected encoder weights, and the decoders for MultiMAE, + configs) is written when the run stops.
RUN_DIR/metrics.jsonl logs one JSON line per `--log-every` steps and one per validation.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from physioserve.cache import WindowCache
from physioserve.preprocessing import DEFAULT_CONFIG

from physioserve.modalities import MODALITIES

from .config import MODEL_SIZES, OBJECTIVES, SELECT_RULES, AugmentConfig, ModelConfig, PretrainConfig, load_config_file
from .data import BatchSource, WindowBatchDataset
from .model import count_parameters
from .objectives import BatchInputs, build_model, model_config, usable_windows, validation_loss
from .runtime import (
    Runtime,
    all_gather_objects,
    autocast,
    autocast_dtype,
    git_revision,
    load_checkpoint,
    rng_state,
    save_atomic,
    seed_everything,
    set_rng_state,
    setup_runtime,
    teardown_runtime,
)

HELP = "pretraining on a window cache: MultiMAE (+ modality drop), unimodal MAE, or a contrastive baseline"
CHECKPOINT = "checkpoint.pt"
ENCODER = "encoder.pt"
BEST = "best.pt"
METRICS = "metrics.jsonl"

# flag -> PretrainConfig field; None defaults mean "not given" (so --resume can tell what was asked)
_CONFIG_FLAGS = {
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lr": "lr",
    "min_lr": "min_lr",
    "warmup_epochs": "warmup_epochs",
    "weight_decay": "weight_decay",
    "clip_grad_norm": "clip_grad_norm",
    "mask_ratio": "mask_ratio",
    "token_mask_prob": "token_mask_prob",
    "seed": "seed",
    "amp": "amp",
    "log_every": "log_every",
    "checkpoint_every": "checkpoint_every",
    "objective": "objective",
    "select": "select",
    "temperature": "temperature",
    "val_windows": "val_windows",
}
_RUN_CONTROL = {"amp", "log_every", "checkpoint_every", "select"}  # may change on resume


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="window cache folder (physioserve prepare)")
    parser.add_argument("--out", required=True, help="run folder: checkpoint.pt, encoder.pt, metrics.jsonl")
    parser.add_argument("--size", choices=sorted(MODEL_SIZES), default=None, help="model size (default: small)")
    parser.add_argument("--config", help="JSON file of PretrainConfig fields (configs/pretrain-*.json); flags win")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int, help="global batch size, split over DDP processes")
    parser.add_argument("--lr", type=float, help="peak learning rate")
    parser.add_argument("--min-lr", type=float, help="learning rate at the end of the cosine")
    parser.add_argument("--warmup-epochs", type=float)
    parser.add_argument("--weight-decay", type=float)
    parser.add_argument("--clip-grad-norm", type=float)
    parser.add_argument("--mask-ratio", type=float, help="masked fraction without modality drop (0.7)")
    parser.add_argument("--token-mask-prob", type=float, help="masked fraction of the other modalities with drop (0.6)")
    parser.add_argument("--no-modality-drop", action="store_true", help="MultiMAE only (the paper's baseline)")
    parser.add_argument("--objective", choices=OBJECTIVES,
                        help="multimae (default; early fusion) or a late-fusion contrastive baseline (paper Appendix F)")
    parser.add_argument("--modalities", help="comma-separated subset of eeg,eog,emg,ecg the encoder takes "
                        "(default all; one modality: the unimodal MAE of the paper's Table 1)")
    parser.add_argument("--select", choices=SELECT_RULES,
                        help="weights encoder.pt gets: latest, or best-val (lowest validation loss); default the "
                             "paper's rule: latest for MultiMAE + modality drop, best-val otherwise")
    parser.add_argument("--temperature", type=float, help="contrastive objectives: fixed softmax temperature (0.1)")
    parser.add_argument("--val-windows", type=int, help="validation windows per epoch end (at most; 0: no validation)")
    parser.add_argument("--augment", action="store_true",
                        help="perturb every batch as real recordings vary (training.augment; our addition)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], help="autocast on GPU (default auto)")
    parser.add_argument("--log-every", type=int, help="steps between metrics lines")
    parser.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (also each epoch end)")
    parser.add_argument("--workers", type=int, help="DataLoader workers per process (default: 0 on CPU, 8 on GPU)")
    parser.add_argument("--gpu-cache", action="store_true", help="hold the whole split on the GPU in fp16")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--max-steps", type=int, help="stop (with a checkpoint) after this many steps in all")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--threads", type=int, help="torch CPU threads (on a busy CPU, fewer can be faster)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (GPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_modalities(text: str | None, where: str) -> tuple[str, ...] | None:
    """'eeg,eog' -> ('eeg', 'eog') in MODALITIES order; None for None; SystemExit naming the bad ones."""
    if text is None:
        return None
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODALITIES]
    if unknown or not names:
        raise SystemExit(f"{where}: --modalities {text}: unknown {', '.join(unknown) or '(none given)'}; "
                         f"accepted: {', '.join(MODALITIES)}")
    return tuple(m for m in MODALITIES if m in names)


def _configs_from_args(args: argparse.Namespace) -> tuple[ModelConfig, PretrainConfig, set[str]]:
    base = load_config_file(args.config) if args.config else {}
    given = {field: getattr(args, flag) for flag, field in _CONFIG_FLAGS.items() if getattr(args, flag) is not None}
    if args.no_modality_drop:
        given["modality_drop"] = False
    if args.augment:
        given["augment"] = AugmentConfig().to_dict()
    modalities = parse_modalities(args.modalities, "pretrain")
    objective = given.get("objective", base.get("objective", "multimae"))
    if objective != "multimae":
        given["modality_drop"] = False  # the masking fields do not apply to contrastive objectives
    elif modalities is not None and len(modalities) == 1 and given.get("modality_drop", base.get("modality_drop", True)):
        print(f"pretrain: one modality ({modalities[0]}): no modality to drop, so MultiMAE masks "
              f"{given.get('mask_ratio', base.get('mask_ratio', 0.7))} of its tokens (--no-modality-drop implied)",
              file=sys.stderr)
        given["modality_drop"] = False
    size = args.size or base.pop("size", None) or "small"
    base.pop("size", None)
    try:
        pre = PretrainConfig.from_dict({**base, **given})
        model = model_config(ModelConfig.named(size), pre, modalities)
        if pre.objective.startswith("clip") and len(model.modalities) < 2:
            raise ValueError(f"objective {pre.objective} contrasts modalities with each other: give at least two")
    except ValueError as error:
        raise SystemExit(f"pretrain: {error}") from None
    return model, pre, set(given) | ({"size"} if args.size else set()) | ({"modalities"} if modalities else set())


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up over `warmup` steps, then cosine from 1 to `min_ratio` at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
                   fused: bool = False) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases, norms, embeddings and mask tokens (every parameter below 2-D)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, **({"fused": True} if fused else {}))


class MetricsLog:
    """RUN_DIR/metrics.jsonl (+ TensorBoard when installed), written by rank 0 only."""

    def __init__(self, run_dir: Path, enabled: bool, resume_step: int | None):
        self.path = run_dir / METRICS
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():  # drop lines logged after the checkpoint
            keep = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= resume_step]
            self.path.write_text("".join(line + "\n" for line in keep))
        elif resume_step is None:
            self.path.write_text("")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:
            self.tb = None

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.tb.add_scalar(f"pretrain/{key}", value, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.out)
    runtime = setup_runtime(args.device, args.threads)
    try:
        return _train(args, run_dir, runtime)
    finally:
        teardown_runtime(runtime)


def _train(args: argparse.Namespace, run_dir: Path, runtime: Runtime) -> int:
    from tqdm.auto import tqdm

    model_cfg, pre_cfg, given = _configs_from_args(args)
    ckpt_path = run_dir / CHECKPOINT
    checkpoint = None
    if args.resume and ckpt_path.exists():
        checkpoint = load_checkpoint(ckpt_path)
        saved_model = ModelConfig.from_dict(checkpoint["configs"]["model"])
        saved_pre = PretrainConfig.from_dict(checkpoint["configs"]["pretrain"])
        clash = sorted(f for f in given - _RUN_CONTROL - {"size", "modalities"} if getattr(pre_cfg, f) != getattr(saved_pre, f))
        if "size" in given and model_cfg.name != saved_model.name:
            clash.append("size")
        if "modalities" in given and model_cfg.modalities != saved_model.modalities:
            clash.append("modalities")
        if clash:
            raise SystemExit(f"pretrain --resume: {', '.join(clash)} differ from the checkpoint's; drop those flags "
                             "or start a new --out")
        model_cfg = saved_model
        pre_cfg = saved_pre.replace(**{f: getattr(pre_cfg, f) for f in given & _RUN_CONTROL})
        if checkpoint["world_size"] != runtime.world_size:
            print(f"pretrain: resuming a {checkpoint['world_size']}-process run on {runtime.world_size}: "
                  "batch order and RNG streams differ from an uninterrupted run", file=sys.stderr)
    elif ckpt_path.exists():
        raise SystemExit(f"pretrain: {ckpt_path} exists; pass --resume to continue it or choose a new --out")
    if pre_cfg.batch_size % runtime.world_size:
        raise SystemExit(f"pretrain: --batch-size {pre_cfg.batch_size} must divide by the {runtime.world_size} processes")

    seed_everything(pre_cfg.seed + runtime.rank)
    mask_generator = torch.Generator().manual_seed(pre_cfg.seed * 1000 + runtime.rank)
    device = runtime.device
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    try:
        cache = WindowCache(args.data)
        indices = usable_windows(cache, cache.split_indices("pretrain"), model_cfg)
        val_indices = usable_windows(cache, cache.split_indices("val"), model_cfg)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"pretrain: {error}") from None
    if len(val_indices) > pre_cfg.val_windows:  # evenly spaced over the split's nights
        val_indices = val_indices[np.linspace(0, len(val_indices) - 1, pre_cfg.val_windows).astype(np.int64)]
    dataset = WindowBatchDataset(args.data, indices)
    per_rank_batch = pre_cfg.batch_size // runtime.world_size
    source = BatchSource(dataset, per_rank_batch, device, rank=runtime.rank, world_size=runtime.world_size,
                         seed=pre_cfg.seed, workers=args.workers, gpu_cache=args.gpu_cache)
    steps_per_epoch = source.batches_per_epoch()
    if steps_per_epoch == 0:
        raise SystemExit(f"pretrain: {len(indices)} pretraining windows give no batch of {pre_cfg.batch_size}; "
                         "lower --batch-size")
    total_steps = pre_cfg.epochs * steps_per_epoch
    warmup_steps = max(1, round(pre_cfg.warmup_epochs * steps_per_epoch))
    inputs = BatchInputs(model_cfg, pre_cfg, dataset, source)
    val_inputs = None
    if len(val_indices):
        val_dataset = WindowBatchDataset(args.data, val_indices)
        val_source = BatchSource(val_dataset, per_rank_batch, device, rank=runtime.rank, world_size=runtime.world_size,
                                 seed=pre_cfg.seed, shuffle=False, drop_last=False, workers=0)
        val_inputs = BatchInputs(model_cfg, pre_cfg.replace(augment=None), val_dataset, val_source)
    elif runtime.is_main:
        print("pretrain: no validation window (empty val split or --val-windows 0): no validation loss"
              + ("; --select best-val falls back to the latest weights" if pre_cfg.selection == "best-val" else ""),
              file=sys.stderr)

    model = build_model(model_cfg, pre_cfg).to(device)
    amp_dtype = autocast_dtype(pre_cfg.amp, device)
    optimizer = make_optimizer(model, pre_cfg.lr, pre_cfg.weight_decay, pre_cfg.betas, fused=device.type == "cuda")
    min_ratio = pre_cfg.min_lr / pre_cfg.lr
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup_steps, total_steps, min_ratio)
    )
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    step, epoch, position = 0, 0, 0
    best = None  # {"val_loss", "epoch", "step"} of the lowest validation loss so far
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        step, epoch, position = checkpoint["step"], checkpoint["epoch"], checkpoint["batch_in_epoch"]
        best = checkpoint.get("best_val")
        states = checkpoint["rng"]
        set_rng_state(states[runtime.rank % len(states)], mask_generator)
    train_model: torch.nn.Module = model
    if runtime.distributed:
        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if args.compile:
        train_model = torch.compile(train_model)

    configs = {
        "model": model_cfg.to_dict(),
        "pretrain": pre_cfg.to_dict(),
        "preprocessing": DEFAULT_CONFIG.to_dict(),
        "cache": cache.header,
        "data": {"split": "pretrain", "windows": int(len(indices)), "records": len(cache.split.get("pretrain", [])),
                 "val_windows": int(len(val_indices))},
        "runtime": {"world_size": runtime.world_size, "device": device.type, "amp": str(amp_dtype)},
    }
    provenance = {"git": git_revision(), "torch": str(torch.__version__)}
    if runtime.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        print(f"pretrain: {pre_cfg.objective} on {'+'.join(model_cfg.modalities)}, {model_cfg.name} {model_cfg.fusion}-fusion "
              f"model, {count_parameters(model.encoder) / 1e6:.2f} M encoder parameters, "
              f"{len(indices)} windows, {steps_per_epoch} steps/epoch x {pre_cfg.epochs} epochs, "
              f"{runtime.world_size} process(es) on {device.type}, autocast {amp_dtype}", file=sys.stderr)
    log = MetricsLog(run_dir, runtime.is_main, step if checkpoint is not None else None)

    def save(final: bool) -> None:
        states = all_gather_objects(rng_state(mask_generator), runtime)  # collective: every rank calls
        if not runtime.is_main:
            return
        blob = {
            "kind": "pretrain",
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "step": step,
            "epoch": epoch if position < steps_per_epoch else epoch + 1,
            "batch_in_epoch": position if position < steps_per_epoch else 0,
            "best_val": best,
            "rng": states,
            "world_size": runtime.world_size,
            "configs": configs,
            **provenance,
        }
        save_atomic(blob, run_dir / CHECKPOINT)
        if final:
            save_atomic(selected_encoder(blob, run_dir, pre_cfg.selection), run_dir / ENCODER)

    def validate() -> None:
        nonlocal best
        if val_inputs is None:
            return
        record = {"step": step, "epoch": epoch + 1,
                  **validation_loss(model, val_inputs, val_source, pre_cfg.val_seed, amp_dtype, runtime.distributed)}
        log.write(record)
        if runtime.is_main:
            tqdm.write(f"pretrain: epoch {epoch + 1} validation loss {record['val_loss']:.4f}", file=sys.stderr)
        if best is None or record["val_loss"] < best["val_loss"]:
            best = {"val_loss": record["val_loss"], "epoch": epoch + 1, "step": step}
            if runtime.is_main:
                save_atomic({"kind": "pretrain-best", "model": model.state_dict(), **best, "configs": configs,
                             **provenance}, run_dir / BEST)

    max_steps = total_steps if args.max_steps is None else min(args.max_steps, total_steps)
    bar = tqdm(total=max_steps, initial=step, disable=not runtime.is_main or args.no_progress,
               dynamic_ncols=True, desc="pretrain")
    n_mod = len(model_cfg.modalities)
    running = torch.zeros(1 + n_mod, device=device)  # summed loss and per-modality losses since the last log
    running_steps, tick, start = 0, time.perf_counter(), time.perf_counter()
    params = [p for p in model.parameters() if p.requires_grad]
    train_model.train()
    while step < max_steps and epoch < pre_cfg.epochs:
        skip = position
        for batch in source.epoch(epoch, skip):
            with autocast(amp_dtype, device):
                loss, per_modality = train_model(*inputs(batch, mask_generator))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, pre_cfg.clip_grad_norm)
            lr = optimizer.param_groups[0]["lr"]  # the rate this step used
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            position += 1
            running += torch.cat([loss.detach().reshape(1), per_modality]).float()
            running_steps += 1
            bar.update(1)
            if step % pre_cfg.log_every == 0 or step == max_steps:
                values = running / running_steps
                if runtime.distributed:
                    dist.all_reduce(values)
                    values /= runtime.world_size
                values = values.tolist()
                if not math.isfinite(values[0]):
                    raise SystemExit(f"pretrain: loss is {values[0]} at step {step}; lower --lr or use --amp bf16/off")
                now = time.perf_counter()
                record = {
                    "step": step,
                    "epoch": epoch + position / steps_per_epoch,
                    "loss": values[0],
                    **{f"loss_{m}": v for m, v in zip(model_cfg.modalities, values[1:])},
                    "lr": lr,
                    "grad_norm": float(grad_norm),
                    "samples_per_s": running_steps * pre_cfg.batch_size / max(now - tick, 1e-9),
                    "elapsed_s": now - start,
                }
                log.write(record)
                bar.set_postfix(loss=f"{values[0]:.4f}", lr=f"{record['lr']:.2e}")
                running.zero_()
                running_steps, tick = 0, now
            if step % pre_cfg.checkpoint_every == 0 and step < max_steps:
                save(final=False)
            if step >= max_steps:
                break
        if position >= steps_per_epoch:
            validate()
            epoch, position = epoch + 1, 0
            if step < max_steps:
                save(final=False)
    bar.close()
    save(final=True)
    log.close()
    if runtime.is_main:
        chosen = load_checkpoint(run_dir / ENCODER)["selection"]
        print(f"pretrain: stopped at step {step} (epoch {epoch}, batch {position}); {run_dir / ENCODER} written "
              f"({chosen['rule']}: epoch {chosen['epoch']}, step {chosen['step']})", file=sys.stderr)
    return 0


def selected_encoder(latest: dict, run_dir: Path, rule: str) -> dict:
    """encoder.pt: the encoder (and MultiMAE decoders) of the latest weights, or of RUN_DIR/best.pt for best-val.

    "selection" says which: {rule, epoch, step, val_loss}; best-val without any validation yet falls back to
    the latest weights and says so."""
    source, used = latest, rule
    if rule == "best-val":
        if (run_dir / BEST).exists():
            source = load_checkpoint(run_dir / BEST)
        else:
            used = "latest (best-val asked; no validation loss yet)"
    state = source["model"]
    part = {name: {k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")}
            for name in ("encoder", "decoders")}
    selection = {"rule": used, "epoch": source["epoch"], "step": source["step"], "val_loss": source.get("val_loss")}
    return {"kind": "encoder", "encoder": part["encoder"], "decoders": part["decoders"] or None,
            "step": source["step"], "epoch": source["epoch"], "selection": selection,
            "best_val": latest.get("best_val"), "configs": latest["configs"],
            **{k: latest[k] for k in ("git", "torch")}}
