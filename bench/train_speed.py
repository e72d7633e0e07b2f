"""Pretraining speed: samples/s, model FLOP/s and MFU against a measured matmul peak.

    python bench/train_speed.py --size small --batch-size 64                       # CPU
    python bench/train_speed.py --size paper --batch-size 256 --device cuda --compile   # GPU, bf16

Times full MultiMAE training steps (masking plan, forward, backward, clipping, AdamW) on random
in-memory batches, so the number is the model's, not the disk's. Model FLOPs per window come from
`training.flops` (FlopCounterMode, forward + backward); the peak is a large matmul in the step's
precision (bf16 on GPU, fp32 on CPU) timed on the same device. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.config import MODEL_SIZES, ModelConfig, PretrainConfig  # noqa: E402
from training.flops import pretrain_flops_per_window  # noqa: E402
from training.model import MultiMAE, plan_masking  # noqa: E402
from training.pretrain import make_optimizer  # noqa: E402
from training.runtime import autocast, autocast_dtype  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, seconds: float = 2.0) -> float:
    """Measured FLOP/s of an n x n matmul in `dtype`."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
        if device.type == "cuda" and reps % 10:
            continue
        _sync(device)
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


def time_steps(cfg: ModelConfig, pre: PretrainConfig, batch: int, steps: int, warmup: int, device: torch.device,
               compile_model: bool) -> dict:
    torch.manual_seed(0)
    model = MultiMAE(cfg).to(device)
    optimizer = make_optimizer(model, pre.lr, pre.weight_decay, pre.betas, fused=device.type == "cuda")
    amp = autocast_dtype(pre.amp, device)
    train_model = torch.compile(model) if compile_model else model
    signals = torch.randn(batch, len(cfg.modalities), cfg.n_chunks * cfg.chunk_samples, device=device)
    mask_cpu = torch.ones(batch, len(cfg.modalities), dtype=torch.bool)
    mask = mask_cpu.to(device)
    generator = torch.Generator().manual_seed(0)
    params = list(model.parameters())

    def step() -> None:
        drop = int(torch.randint(4, (1,), generator=generator)) if pre.modality_drop else None
        plan = plan_masking(mask_cpu, cfg, pre.keep_fraction, drop, generator, device)
        with autocast(amp, device):
            loss, _ = train_model(signals, mask, plan.keep_idx, plan.keep_valid, plan.loss_mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, pre.clip_grad_norm)
        optimizer.step()

    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    elapsed = time.perf_counter() - start
    flops = pretrain_flops_per_window(MultiMAE(cfg), pre)
    return {"steps_per_s": steps / elapsed, "samples_per_s": steps * batch / elapsed,
            "step_ms": 1000 * elapsed / steps, "gflop_per_window": flops / 1e9, "amp": str(amp)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", action="append", choices=sorted(MODEL_SIZES), help="repeatable (default: tiny, small)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    parser.add_argument("--no-modality-drop", action="store_true")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--out", default="bench/results/train_speed.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    pre = PretrainConfig(amp=args.amp, modality_drop=not args.no_modality_drop)
    amp = autocast_dtype(pre.amp, device)
    peak_dtype = amp or torch.float32
    peak = matmul_peak(device, peak_dtype, 8192 if device.type == "cuda" else 1024)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    rows = []
    for size in args.size or ["tiny", "small"]:
        r = time_steps(ModelConfig.named(size), pre, args.batch_size, args.steps, args.warmup, device, args.compile)
        r.update(size=size, batch_size=args.batch_size, model_tflops=r["samples_per_s"] * r["gflop_per_window"] / 1e3)
        r["mfu"] = r["model_tflops"] * 1e12 / peak
        rows.append(r)
    print(f"device: {card} ({device.type}, {torch.get_num_threads()} CPU threads), torch {torch.__version__}, "
          f"matmul peak {peak / 1e12:.2f} TFLOP/s in {peak_dtype}")
    print("| size | batch | steps/s | samples/s | GFLOP/window (fwd+bwd) | model TFLOP/s | MFU |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {r['batch_size']} | {r['steps_per_s']:.2f} | {r['samples_per_s']:.1f} | "
              f"{r['gflop_per_window']:.3f} | {r['model_tflops']:.3f} | {100 * r['mfu']:.1f} % |")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"device": card, "device_type": device.type, "torch": torch.__version__,
                               "threads": torch.get_num_threads(), "peak_flops": peak, "peak_dtype": str(peak_dtype),
                               "compile": args.compile, "rows": rows}, indent=1))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
