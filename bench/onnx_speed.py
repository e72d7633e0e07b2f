"""Inference speed: torch eager vs ONNX Runtime fp32 vs ONNX Runtime int8, same model, same run.

Per batch size: windows/s, ms per window, and achieved GFLOP/s against a matmul peak measured in the
same process (torch fp32 GEMM, same thread count). FLOPs per window are the encoder's forward
(training.flops, all four modalities present) plus the heads; int8 is credited with the same FLOPs
(its "GFLOP/s" is fp32-equivalent work per second). The model is random-init (speed does not depend
on the weights); it is exported through the real export path (parity-checked) into --bundle-out,
which bench/serve_*.py can reuse.

    python bench/onnx_speed.py                          # paper size, batch 1 and 64, all cores
    python bench/onnx_speed.py --size small --batches 1 16 64 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from benchlib import machine, print_load


def timed(fn, *, min_reps: int = 2, min_seconds: float = 3.0) -> float:
    """Median seconds per call after one warm-up call (at least min_reps calls or min_seconds)."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 50:
            break
    return statistics.median(times)


def matmul_peak_gflops(n: int = 2048) -> float:
    """Best fp32 GEMM rate of torch on this machine with the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = min(timed(lambda: a @ b, min_reps=5, min_seconds=1.0) for _ in range(2))
    return 2 * n**3 / best / 1e9


def build_bundle(size: str, out: Path, seed: int = 0) -> tuple[torch.nn.Module, Path]:
    from export.build import export_bundle
    from physioserve.bundle import read_bundle
    from training.config import ModelConfig
    from training.heads import InferenceModel, make_heads
    from training.model import MultiModalEncoder

    torch.manual_seed(seed)
    cfg = ModelConfig.named(size)
    model = InferenceModel(MultiModalEncoder(cfg), make_heads(cfg.d_model)).eval()
    meta = out / "bundle.json"
    if meta.exists() and json.loads(meta.read_text())["model"]["size"] == size:
        blob = torch.load(out.with_name(out.name + ".weights.pt"), weights_only=True)
        model.load_state_dict(blob)
        return model, out
    bundle = export_bundle(model, out, model_config=cfg.to_dict(), int8=True, overwrite=True, version=f"bench-{size}",
                           int8_min_agreement=0.0,  # random weights: speed only, the agreement is reported
                           provenance={"note": "random-init weights for speed measurements only"})
    torch.save(model.state_dict(), out.with_name(out.name + ".weights.pt"))  # next to the bundle, not in it
    read_bundle(bundle.path)
    return model, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="paper", help="model size: paper | small | tiny (default paper)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--threads", type=int, default=None, help="threads for torch and ORT (default: all CPUs)")
    parser.add_argument("--bundle-out", type=Path, default=None, help="bundle folder (default runs/bench/<size>-bundle)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/onnx_speed.json"))
    args = parser.parse_args()
    load_start = os.getloadavg()

    from physioserve.runtime import InferenceSession, cpu_count
    from training.flops import encoder_flops_per_window

    threads = args.threads or cpu_count()
    torch.set_num_threads(threads)
    bundle_dir = args.bundle_out or Path("runs/bench") / f"{args.size}-bundle"
    t0 = time.perf_counter()
    model, bundle_dir = build_bundle(args.size, bundle_dir)
    export_s = time.perf_counter() - t0
    meta = json.loads((bundle_dir / "bundle.json").read_text())
    d = meta["d_model"]
    flops = encoder_flops_per_window(model.encoder) + 2 * d * 9  # encoder + three linear heads
    peak = matmul_peak_gflops()
    sessions = {name: InferenceSession(bundle_dir, threads=threads, variant=name, batch_size=max(args.batches))
                for name in ("fp32", "int8")}
    rng = np.random.default_rng(0)
    rows = []
    for batch in args.batches:
        signals = rng.normal(0, 1, (batch, 4, 3000)).astype(np.float32)  # [B, 4, 3000]
        mask = np.ones((batch, 4), bool)
        x, m = torch.from_numpy(signals), torch.from_numpy(mask)

        def eager():
            with torch.inference_mode():
                model(x, m)

        runners = {"torch eager": eager,
                   "ORT fp32": lambda: sessions["fp32"].run(signals, mask),
                   "ORT int8": lambda: sessions["int8"].run(signals, mask)}
        for name, fn in runners.items():
            seconds = timed(fn)
            rows.append({"variant": name, "batch": batch, "s_per_call": seconds, "windows_per_s": batch / seconds,
                         "ms_per_window": 1e3 * seconds / batch, "gflops": flops * batch / seconds / 1e9,
                         "pct_of_peak": 100 * flops * batch / seconds / 1e9 / peak})
    print(f"{args.size} model (d_model {d}, {meta['model']['parameters'] / 1e6:.1f} M parameters, "
          f"{flops / 1e9:.2f} GFLOP/window), {threads} thread(s), matmul peak {peak:.1f} GFLOP/s, "
          f"{machine()}")
    print(f"{'variant':<12} {'batch':>5} {'windows/s':>10} {'ms/window':>10} {'GFLOP/s':>8} {'% peak':>7}")
    for r in rows:
        print(f"{r['variant']:<12} {r['batch']:>5} {r['windows_per_s']:>10.2f} {r['ms_per_window']:>10.2f} "
              f"{r['gflops']:>8.1f} {r['pct_of_peak']:>6.1f}%")
    parity = meta["export"]["parity"]["max_abs"]
    int8 = meta["export"]["int8"]
    print(f"export {export_s:.1f} s ({meta['export']['exporter']}); parity max-abs {parity}; "
          f"int8 stage agreement {int8['sleep_stage_agreement']} on {int8['windows']} {int8['source']}")
    print_load(load_start)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"load_average_start_end": [load_start, os.getloadavg()],
        "machine": machine(), "cpus": os.cpu_count(), "threads": threads,
        "torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__, "size": args.size,
        "d_model": d, "parameters": meta["model"]["parameters"], "gflop_per_window": flops / 1e9,
        "matmul_peak_gflops": peak, "providers": sessions["fp32"].providers, "parity_max_abs": parity,
        "int8_drift": int8, "export_s": export_s, "bundle": str(bundle_dir), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
