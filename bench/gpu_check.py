"""The GPU check, one table: pretraining, DDP, ONNX Runtime CUDA/TensorRT and the GPU service (bench/gpu_check.sh runs it).

    python bench/gpu_check.py             # real: paper size on the GPU, sized for < 10 min on one H100/H200
    python bench/gpu_check.py --dry-run   # the same steps end to end on the CPU at tiny sizes (seconds)

Steps (each in its own process with a time limit; a failed or skipped step is a row saying why):
1. pretraining throughput and MFU, bf16 autocast, eager and `torch.compile` (bench/train_speed.py);
2. DDP on one GPU: `torchrun --nproc_per_node 1 physioserve.cli pretrain` on a tiny cache (smoke test);
3. ONNX Runtime: a random-init bundle exported here, windows/s at batch 1 and 64 on the CPU, CUDA
   and TensorRT providers present, and max-abs parity of each against the CPU;
4. the service as `bentofile.gpu.yaml` runs it (PHYSIOSERVE_GPU=1): providers in /metadata, and
   /predict windows/s with the binary body at 8 clients.
Writes `<out>/gpu_check.md` (the table) and `<out>/gpu_check.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO)]


def run(cmd: list[str], timeout: float, env: dict | None = None) -> tuple[int, str, float]:
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout)
        return done.returncode, done.stdout + done.stderr, time.perf_counter() - t0
    except subprocess.TimeoutExpired as error:
        return 124, f"timed out after {timeout:.0f} s\n{error.stdout or ''}", time.perf_counter() - t0


def tail(text: str, n: int = 1) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " / ".join(lines[-n:])[:300]


def pretraining(args, rows: list) -> None:
    for compiled in (False, True):
        if compiled and args.dry_run and not args.compile:
            rows.append([f"pretrain {args.size}, torch.compile", "skipped", "dry run: compiling takes minutes on a CPU "
                         "(--compile runs it)"])
            continue
        out = args.out / f"train_speed{'_compile' if compiled else ''}.json"
        cmd = [sys.executable, str(BENCH / "train_speed.py"), "--size", args.size, "--batch-size", str(args.batch),
               "--steps", str(args.steps), "--device", args.device, "--amp", args.amp, "--out", str(out)]
        rc, text, wall = run(cmd + (["--compile"] if compiled else []), args.step_timeout)
        name = f"pretrain {args.size}, batch {args.batch}, {args.amp}, {'torch.compile' if compiled else 'eager'}"
        if rc:
            rows.append([name, "failed", tail(text, 2)])
            continue
        r = json.loads(out.read_text())
        row = r["rows"][0]
        rows.append([name, f"{row['samples_per_s']:.1f} samples/s", f"{row['model_tflops']:.2f} TFLOP/s, MFU "
                     f"{100 * row['mfu']:.1f} % of a measured {r['peak_flops'] / 1e12:.1f} TFLOP/s {r['peak_dtype']} "
                     f"matmul ({r['device']}; {wall:.0f} s)"])


def ddp(args, rows: list) -> None:
    from training.tinycache import make_tiny_cache

    cache = make_tiny_cache(args.out / "ddp_cache")
    env = {"OMP_NUM_THREADS": "1"}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        os.environ.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m",
           "physioserve.cli", "pretrain", "--data", str(cache), "--out", str(args.out / "ddp_run"), "--size",
           args.size, "--epochs", "1", "--batch-size", "8", "--no-progress", "--device", args.device]
    rc, text, wall = run(cmd, args.step_timeout, env)
    ok = rc == 0 and (args.out / "ddp_run" / "checkpoint.pt").exists()
    rows.append([f"DDP smoke test, torchrun 1 process on {args.device}", "passed" if ok else "failed",
                 f"{wall:.0f} s; checkpoint written" if ok else tail(text, 2)])


def ort_providers(args, rows: list) -> Path | None:
    import onnxruntime as ort

    from onnx_speed import build_bundle
    from physioserve.runtime import InferenceSession

    bundle = args.out / f"{args.size}-bundle"
    try:
        build_bundle(args.size, bundle)
    except Exception as error:  # an export that fails is a row, not the end of the check
        rows.append([f"ONNX export ({args.size})", "failed", str(error)[:300]])
        return None
    available = ort.get_available_providers()
    rows.append([f"onnxruntime {ort.__version__} providers", ", ".join(available), ""])
    rng = np.random.default_rng(0)
    batches = {b: (rng.normal(0, 1, (b, 4, 3000)).astype(np.float32), np.ones((b, 4), bool)) for b in (1, 64)}
    cpu = InferenceSession(bundle, device="cpu")
    reference = {b: cpu.run(*x)["sleep_stage_logits"] for b, x in batches.items()}
    sessions = {"CPU": cpu}
    if "CUDAExecutionProvider" in available:
        sessions["CUDA"] = InferenceSession(bundle, device="cuda")
    else:
        rows.append(["ORT CUDA EP", "not available", "install onnxruntime-gpu (bench/gpu_check.sh --wheels DIR)"])
    if "TensorrtExecutionProvider" in available:
        sessions["TensorRT"] = ort.InferenceSession(str(bundle / "model.onnx"), providers=[
            "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    else:
        rows.append(["ORT TensorRT EP", "not available", "onnxruntime-gpu built with TensorRT, and TensorRT's libraries"])
    for name, session in sessions.items():
        for b, (signals, mask) in batches.items():
            if name == "TensorRT":
                def call(s=signals, m=mask):
                    return session.run(["sleep_stage_logits"], {"signals": s, "modality_mask": m})[0]
            else:
                def call(s=signals, m=mask):
                    return session.run(s, m)["sleep_stage_logits"]
            logits = call()
            reps, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < args.seconds or reps < 2:
                call()
                reps += 1
            rate = reps * b / (time.perf_counter() - t0)
            diff = float(np.abs(logits - reference[b]).max())
            rows.append([f"ORT {name} EP, {args.size}, batch {b}", f"{rate:.1f} windows/s",
                         f"stage logits max-abs vs CPU {diff:.2e}"])
    return bundle


def service(args, rows: list, bundle: Path | None) -> None:
    if bundle is None:
        rows.append(["service (bentofile.gpu.yaml)", "skipped", "no bundle (export failed)"])
        return
    try:
        import bentoml  # noqa: F401
        import requests
    except ImportError as error:
        rows.append(["service (bentofile.gpu.yaml)", "skipped", f"{error} (carry bentoml's wheels: --wheels DIR)"])
        return
    from serve_throughput import http_load, make_windows, request_bodies, start_server, stop_server

    env = {"PHYSIOSERVE_DEVICE": args.device}
    if args.device == "cuda":
        env["PHYSIOSERVE_GPU"] = "1"
    os.environ.update(env)
    try:
        process, url = start_server(bundle, env, args.out / "serve.log")
    except RuntimeError as error:
        rows.append(["service (bentofile.gpu.yaml)", "failed", tail(str(error), 2)])
        return
    try:
        meta = requests.post(f"{url}/metadata", json={}, timeout=60).json()
        body = request_bodies(make_windows(8), ["npz"])["npz"]
        load = http_load(url, body, 8, 8, args.seconds)
    finally:
        stop_server(process)
    rows.append([f"service /predict (npz body, 8 clients, {args.size})", f"{load['windows_per_s']:.1f} windows/s",
                 f"providers {meta['runtime']['providers']}; p50 {load['p50_ms']:.0f} ms; {load['errors']} errors"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: the whole check in a minute or two")
    parser.add_argument("--compile", action="store_true", help="dry run: also time torch.compile (minutes on a CPU)")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/gpu_check")
    args = parser.parse_args()
    dry = args.dry_run
    args.size, args.batch, args.steps = ("tiny", 8, 2) if dry else ("paper", 256, 20)
    args.device, args.amp = ("cpu", "off") if dry else ("cuda", "bf16")
    args.seconds, args.step_timeout = (2.0, 300) if dry else (5.0, 240)
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[list[str]] = []
    t0 = time.perf_counter()
    try:
        import torch

        card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
        rows.append(["device", card, f"torch {torch.__version__}; {'dry run on the CPU' if dry else 'real run'}"])
        if not dry and not torch.cuda.is_available():
            rows.append(["check", "stopped", "no GPU visible to torch; use --dry-run on a CPU machine"])
        else:
            pretraining(args, rows)
            ddp(args, rows)
            service(args, rows, ort_providers(args, rows))
    finally:
        rows.append(["whole check", f"{time.perf_counter() - t0:.0f} s", ""])
        table = "| step | result | detail |\n| --- | --- | --- |\n" + "".join(f"| {' | '.join(r)} |\n" for r in rows)
        (args.out / "gpu_check.md").write_text(table)
        (args.out / "gpu_check.json").write_text(json.dumps({"dry_run": dry, "rows": rows}, indent=1))
        print(table)
    return 0 if not any(r[1] == "failed" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
