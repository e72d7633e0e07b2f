"""ONNX Runtime session options at batch 1 (and 64): windows/s and % of the matmul peak, in one process.

    python bench/ort_options.py --size paper --threads 2

Builds (or reuses) the random-init bundle of bench/onnx_speed.py, then times the fp32 graph under
each variant of the session options (graph optimisation level, thread spinning, intra-op threads,
the runtime's own choice) against the fp32 matmul peak measured in the same process; variants
are timed in turn, twice (A B C ... A B C ...), and the better round kept, so a load change on a
shared machine shows as a gap between rounds, not as a win. FLOPs per window: training.flops.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from benchlib import machine, print_load
from onnx_speed import build_bundle, matmul_peak_gflops


def session(path: Path, threads: int, level, spinning: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = level
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def rate(fn, seconds: float) -> float:
    fn()
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or reps < 3:
        fn()
        reps += 1
    return reps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="paper")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1])
    parser.add_argument("--seconds", type=float, default=3.0, help="per variant and round")
    parser.add_argument("--out", type=Path, default=Path("bench/results/ort_options.json"))
    args = parser.parse_args()
    load_start = os.getloadavg()

    from physioserve.runtime import InferenceSession
    from training.flops import encoder_flops_per_window

    model, bundle = build_bundle(args.size, Path("runs/bench") / f"{args.size}-bundle")
    d = json.loads((bundle / "bundle.json").read_text())["d_model"]
    flops = encoder_flops_per_window(model.encoder) + 2 * d * 9  # encoder + three linear heads, as onnx_speed.py
    path = bundle / "model.onnx"
    L = ort.GraphOptimizationLevel
    variants = {
        "runtime (InferenceSession)": InferenceSession(bundle, threads=args.threads).session,
        "ALL, spinning": session(path, args.threads, L.ORT_ENABLE_ALL, True),
        "ALL, no spinning": session(path, args.threads, L.ORT_ENABLE_ALL, False),
        "EXTENDED, spinning": session(path, args.threads, L.ORT_ENABLE_EXTENDED, True),
        "BASIC, spinning": session(path, args.threads, L.ORT_ENABLE_BASIC, True),
        "ALL, 1 thread": session(path, 1, L.ORT_ENABLE_ALL, True),
    }
    import torch

    torch.set_num_threads(args.threads)
    peak = matmul_peak_gflops()
    rng = np.random.default_rng(0)
    rows = []
    for batch in args.batches:
        feed = {"signals": rng.normal(0, 1, (batch, 4, 3000)).astype(np.float32), "modality_mask": np.ones((batch, 4), bool)}
        best: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(2):
            for name, s in variants.items():
                best[name].append(batch * rate(lambda s=s: s.run(["sleep_stage_logits"], feed), args.seconds))
        for name, rounds in best.items():
            w = max(rounds)
            rows.append({"variant": name, "batch": batch, "windows_per_s": w, "rounds": rounds,
                         "gflops": w * flops / 1e9, "pct_of_peak": 100 * w * flops / 1e9 / peak})
    print(f"{args.size}: {flops / 1e9:.2f} GFLOP/window, {args.threads} thread(s), matmul peak {peak:.1f} GFLOP/s "
          f"(torch, same process), onnxruntime {ort.__version__}, {machine()}")
    print(f"{'variant':<28} {'batch':>5} {'windows/s':>10} {'rounds':>14} {'% peak':>7}")
    for r in rows:
        print(f"{r['variant']:<28} {r['batch']:>5} {r['windows_per_s']:>10.2f} "
              f"{'/'.join(f'{x:.2f}' for x in r['rounds']):>14} {r['pct_of_peak']:>6.1f}%")
    print_load(load_start)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"load_average_start_end": [load_start, os.getloadavg()], "machine": machine(),
                                    "size": args.size, "threads": args.threads, "gflop_per_window": flops / 1e9,
                                    "matmul_peak_gflops": peak, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
