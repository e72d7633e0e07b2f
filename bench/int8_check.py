"""int8 vs fp32 on a trained bundle: which layers cost stage agreement, and what int8 buys in speed.

Writes int8 variants of the bundle's model.onnx into --work (dynamic; static QDQ with every
MatMul/Gemm/Conv group; each group alone = the sensitivity run; the groups `export --int8` uses;
calibration methods), calibrated on train-split windows of --data and compared with fp32 on its
test + val windows, with the windows' own modality masks and with EEG alone. Then windows/s of
fp32 vs int8 at each batch size in this process (ratios are what count on a shared machine), the
share of fp32 time spent in MatMul/Gemm (ORT profile: what int8 can speed up at most), and the
same speed figures for a random-init `paper` model exported through the real path (speed only).

    python bench/int8_check.py --data runs/default/cache
    python bench/int8_check.py --data CACHE --bundle BUNDLE --threads 1 --no-paper
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import machine, print_load

DEFAULT_BUNDLE = Path("physioserve/assets/default_bundle")


def session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def windows_per_s(sessions: dict, signals: np.ndarray, mask: np.ndarray, seconds: float) -> dict[str, float]:
    """Median windows/s of each session on one batch; the sessions take turns (same load for each)."""
    feed = {"signals": signals, "modality_mask": mask}
    for s in sessions.values():
        s.run(None, feed)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in sessions}
    start = time.perf_counter()
    while time.perf_counter() - start < seconds * len(sessions) or min(map(len, times.values())) < 3:
        for name, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, feed)
            times[name].append(time.perf_counter() - t0)
        if min(map(len, times.values())) >= 30:
            break
    return {k: len(signals) / statistics.median(v) for k, v in times.items()}


def op_shares(path: Path, signals: np.ndarray, mask: np.ndarray, threads: int) -> dict[str, float]:
    """Share of kernel time per op type (ORT profiler, 3 runs after a warm-up)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = str(Path(tmp) / "profile")
        s = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
        for _ in range(4):
            s.run(None, {"signals": signals, "modality_mask": mask})
        events = json.loads(Path(s.end_profiling()).read_text())
    total: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            total[e["args"]["op_name"]] += e["dur"]
    whole = sum(total.values())
    return {k: round(v / whole, 4) for k, v in total.most_common()}


def speed_rows(label: str, graphs: dict[str, Path], windows, batches, threads: int, seconds: float) -> list[dict]:
    sessions = {k: session(p, threads) for k, p in graphs.items()}
    rows = []
    for batch in batches:
        idx = np.arange(batch) % len(windows.heldout)
        rates = windows_per_s(sessions, windows.heldout[idx], windows.heldout_mask[idx], seconds)
        for name, rate in rates.items():
            rows.append({"model": label, "graph": name, "batch": batch, "windows_per_s": round(rate, 2),
                         "vs_fp32": round(rate / rates["fp32"], 3)})
            print(f"{label:<6} {name:<22} batch {batch:>3}: {rate:8.1f} windows/s  {rate / rates['fp32']:.2f}x fp32",
                  flush=True)
    return rows


def paper_graph(work: Path) -> Path:
    """A random-init paper-size model exported through the real export path (parity-checked)."""
    import torch

    from export.build import export_bundle
    from training.config import ModelConfig
    from training.heads import InferenceModel, make_heads
    from training.model import MultiModalEncoder

    out = work / "paper-bundle"
    if not (out / "bundle.json").exists():
        torch.manual_seed(0)
        cfg = ModelConfig.named("paper")
        model = InferenceModel(MultiModalEncoder(cfg), make_heads(cfg.d_model)).eval()
        export_bundle(model, out, model_config=cfg.to_dict(), overwrite=True, version="bench-paper",
                      parity_batches=(1, 7), provenance={"note": "random-init weights for speed measurements only"})
    return out / "model.onnx"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="window cache (train: calibration; test + val: agreement)")
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE, help="bundle folder (default: the packaged one)")
    parser.add_argument("--work", type=Path, default=Path("runs/bench/int8"), help="folder for the int8 variants")
    parser.add_argument("--calibration", type=int, default=256, help="calibration windows (train split)")
    parser.add_argument("--heldout", type=int, default=600, help="held-out windows (test + val)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads for the speed figures")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per graph and batch size")
    parser.add_argument("--no-sensitivity", action="store_true", help="skip the one-group-at-a-time variants")
    parser.add_argument("--no-paper", action="store_true", help="skip the paper-size speed figures")
    parser.add_argument("--out", type=Path, default=Path("bench/results/int8_check.json"))
    args = parser.parse_args()
    load_start = os.getloadavg()

    from export.quantize import (
        GROUPS,
        INT8_GROUPS,
        TRANSFORMER_GROUPS,
        cache_int8_windows,
        int8_drift,
        quantize_dynamic_int8,
        quantize_static_int8,
    )

    args.work.mkdir(parents=True, exist_ok=True)
    fp32 = args.bundle / "model.onnx"
    windows = cache_int8_windows(args.data, args.calibration, args.heldout)
    cal = (windows.calibration, windows.calibration_mask)
    print(f"calibration: {len(cal[0])} {windows.calibration_source}; held out: {len(windows.heldout)} "
          f"{windows.heldout_source}; {machine()}", flush=True)

    variants: dict[str, dict] = {"dynamic (MatMul/Gemm weights)": {"dynamic": True},
                                 "static, every group": {"groups": GROUPS},
                                 "static, every group, Percentile 99.999": {"groups": GROUPS, "calibrate_method": "Percentile"},
                                 "static, every group, symmetric activations": {
                                     "groups": GROUPS, "extra_options": {"ActivationSymmetric": True}},
                                 "static, transformer (+ Q K^T, softmax x V)": {"groups": TRANSFORMER_GROUPS},
                                 "static, export --int8 groups": {"groups": INT8_GROUPS},
                                 "static, export --int8 groups + heads": {"groups": (*INT8_GROUPS, "heads")}}
    if not args.no_sensitivity:
        variants.update({f"static, {g} only": {"groups": (g,)} for g in GROUPS})
    rows, paths = [], {}
    for i, (name, spec) in enumerate(variants.items()):
        path = args.work / f"variant{i}.onnx"
        t0 = time.perf_counter()
        if spec.get("dynamic"):
            info = quantize_dynamic_int8(fp32, path)
        else:
            info = quantize_static_int8(fp32, path, *cal, groups=tuple(spec["groups"]),
                                        calibrate_method=spec.get("calibrate_method", "MinMax"),
                                        calibration_source=windows.calibration_source,
                                        extra_options=spec.get("extra_options"))
        drift = int8_drift(fp32, path, signals=windows.heldout, mask=windows.heldout_mask, source=windows.heldout_source)
        by = drift["by_mask"]
        row = {"variant": name, "file": path.name, "stage_agreement_as_recorded": by["as recorded"]["sleep_stage_agreement"],
               "stage_agreement_eeg_only": by["eeg only"]["sleep_stage_agreement"],
               "embedding_min_cosine": drift["embedding_min_cosine"], "seconds": round(time.perf_counter() - t0, 1),
               "nodes_fp32": {g: len(v) for g, v in info.get("nodes_fp32", {}).items()}}
        rows.append(row)
        paths[name] = path
        print(f"{name:<46} stage agreement {row['stage_agreement_as_recorded']:.4f} (as recorded) "
              f"{row['stage_agreement_eeg_only']:.4f} (EEG only), embedding min cosine {row['embedding_min_cosine']:.4f}",
              flush=True)

    speed_graphs = {"fp32": fp32, "dynamic": paths["dynamic (MatMul/Gemm weights)"],
                    "static, every group": paths["static, every group"],
                    "static, export --int8": paths["static, export --int8 groups"]}
    speed = speed_rows("small", speed_graphs, windows, args.batches, args.threads, args.seconds)
    big = max(args.batches)
    idx = np.arange(big) % len(windows.heldout)
    shares = {name: op_shares(p, windows.heldout[idx], windows.heldout_mask[idx], args.threads)
              for name, p in (("fp32", fp32), ("static, export --int8", speed_graphs["static, export --int8"]))}
    matmul = sum(v for k, v in shares["fp32"].items() if k in ("MatMul", "Gemm", "FusedMatMul", "FusedGemm"))
    print(f"small fp32 batch {big}: MatMul/Gemm {100 * matmul:.1f} % of kernel time (int8 speed-up bound "
          f"{1 / (1 - matmul):.2f}x); top ops {list(shares['fp32'].items())[:6]}", flush=True)
    paper_shares = None
    if not args.no_paper:
        paper = paper_graph(args.work)
        paper_int8 = args.work / "paper.int8.onnx"
        quantize_static_int8(paper, paper_int8, *cal, calibration_source=windows.calibration_source)
        paper_dyn = args.work / "paper.dynamic.onnx"
        quantize_dynamic_int8(paper, paper_dyn)
        speed += speed_rows("paper", {"fp32": paper, "dynamic": paper_dyn, "static, export --int8": paper_int8},
                            windows, args.batches, args.threads, args.seconds)
        paper_shares = op_shares(paper, windows.heldout[idx], windows.heldout_mask[idx], args.threads)
        pm = sum(v for k, v in paper_shares.items() if k in ("MatMul", "Gemm", "FusedMatMul", "FusedGemm"))
        print(f"paper fp32 batch {big}: MatMul/Gemm {100 * pm:.1f} % of kernel time (bound {1 / (1 - pm):.2f}x)")
    print_load(load_start)
    import onnxruntime

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": machine(), "cpus": os.cpu_count(), "threads": args.threads, "onnxruntime": onnxruntime.__version__,
        "load_average_start_end": [load_start, os.getloadavg()], "bundle": str(args.bundle),
        "calibration": {"windows": len(cal[0]), "source": windows.calibration_source},
        "heldout": {"windows": len(windows.heldout), "source": windows.heldout_source,
                    "all_modalities_fraction": round(float(windows.heldout_mask.all(1).mean()), 4)},
        "agreement": rows, "speed": speed, "op_shares_small": shares, "op_shares_paper_fp32": paper_shares,
    }, indent=1))


if __name__ == "__main__":
    main()
