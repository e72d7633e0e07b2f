"""Cohort throughput: `physioserve embed` over N whole nights, local engine vs Ray Data on 1 and 2 workers.

N four-modality EDF+ nights (pyedflib, 200 Hz, as bench/serve_night.py writes them) go into a
temporary folder (not timed). Then, in this one process and one after another, the same corpus is
embedded (read + preprocess + model + Parquet, the whole per-recording chain) by:

- the local engine with 1 ONNX Runtime thread (the baseline: one worker's worth of CPU),
- the local engine with one thread per CPU (what `--engine local` does by default),
- `--engine ray` on a local Ray (started once, its start-up timed apart) with 1 and with 2 workers
  of 1 thread each (each worker = one actor holding one ONNX Runtime session).

Each run's wall time is from the first recording handed to the engine to the last file written
(for Ray this includes starting the actors and shipping the bundle). On a shared machine wall times
depend on what else runs, so each run also reports the CPU time its workers spent per night (the
process CPU time of every process that wrote a recording, read when it wrote its last one: this
counts the session's start-up too), which other processes do not change. Every run's files are
checked byte-identical to the baseline's.

    nice -n 19 python bench/cohort_throughput.py [--nights 6] [--hours 8] [--bundle DIR] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchlib import machine, print_load
from serve_night import write_night

from physioserve.bundle import resolve_bundle
from physioserve.cohort import run_local
from physioserve.embed import EmbedJob
from physioserve.runtime import InferenceSession, cpu_count


class TimedEmbedJob(EmbedJob):
    """EmbedJob whose report says which process wrote the recording and its CPU time by then."""

    def write(self, prepared, probs, folder):
        super().write(prepared, probs, folder)
        return {"pid": os.getpid(), "cpu_s": time.process_time()}


def files_of(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir()) if f.is_file()}


def timed(name: str, outcomes, cpu_before: float = 0.0) -> dict:
    """Wall time of draining `outcomes`, and the CPU seconds of the processes that wrote them (this process's
    CPU time before the run is `cpu_before`: local runs count only what the run added)."""
    start = time.perf_counter()
    done = list(outcomes)
    seconds = time.perf_counter() - start
    failed = [o for o in done if o.error]
    if failed:
        raise RuntimeError(f"{name}: {failed[0].path}: {failed[0].error}")
    cpu: dict[int, float] = {}
    for outcome in done:
        cpu[outcome.report["pid"]] = max(cpu.get(outcome.report["pid"], 0.0), outcome.report["cpu_s"])
    cpu_s = sum(cpu.values()) - cpu_before
    return {"run": name, "seconds": round(seconds, 2), "nights": len(done), "processes": len(cpu),
            "cpu_s_per_night": round(cpu_s / len(done), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nights", type=int, default=6)
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--bundle", default=None, help="bundle folder (default: the packaged default bundle)")
    parser.add_argument("--workers", default="1,2", help="Ray worker counts to run (comma-separated)")
    parser.add_argument("--json", type=Path, default=Path("bench/results/cohort_throughput.json"))
    args = parser.parse_args()
    load_start = os.getloadavg()
    bundle = resolve_bundle(args.bundle, use_store=False)
    root = Path(tempfile.mkdtemp(prefix="cohort-bench-"))
    try:
        corpus = root / "corpus"
        corpus.mkdir()
        inputs = [write_night(corpus / f"night{i:02d}.edf", args.hours, 200, seed=i) for i in range(args.nights)]
        runs = []
        for threads, name in ((1, "local, 1 thread"), (cpu_count(), f"local, {cpu_count()} threads")):
            job = TimedEmbedJob(root / name, bundle)
            before = time.process_time()
            runs.append(timed(name, run_local(job, inputs, InferenceSession(bundle, threads=threads)), before))
            runs[-1]["out"] = name
        from physioserve.cohort_ray import connect, run_ray

        start = time.perf_counter()
        connect("local")  # before ray is imported here: the loopback-only switch is read at import
        import ray

        ray_start = round(time.perf_counter() - start, 2)
        for workers in (int(w) for w in args.workers.split(",")):
            name = f"ray, {workers} worker(s) x 1 thread"
            job = TimedEmbedJob(root / name, bundle)
            runs.append(timed(name, run_ray(job, inputs, bundle, workers=workers, threads=1)))
            runs[-1]["out"] = name
        ray.shutdown()
        baseline = files_of(root / runs[0]["out"])
        for run in runs:
            run["identical_files"] = files_of(root / run.pop("out")) == baseline
            run["nights_per_hour"] = round(3600 * run["nights"] / run["seconds"], 1)
            run["vs_local_1_thread"] = round(runs[0]["seconds"] / run["seconds"], 2)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    ray_runs = [r for r in runs if r["run"].startswith("ray")]
    print(f"{args.nights} nights x {args.hours:g} h (EDF+, 4 modalities, 200 Hz), model {bundle.name} {bundle.version} "
          f"({bundle.meta.get('model', {}).get('size', '?')}), {machine()}, {cpu_count()} CPUs; Ray start-up {ray_start} s")
    print("| run | wall (s) | nights / hour | throughput vs local 1 thread | worker CPU s / night | files identical |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in runs:
        print(f"| {r['run']} | {r['seconds']} | {r['nights_per_hour']} | {r['vs_local_1_thread']} | "
              f"{r['cpu_s_per_night']} | {r['identical_files']} |")
    if len(ray_runs) >= 2:
        print(f"Ray {ray_runs[-1]['run'].split(', ')[1]} / {ray_runs[0]['run'].split(', ')[1]}: "
              f"{ray_runs[0]['seconds'] / ray_runs[-1]['seconds']:.2f}x throughput")
    print_load(load_start)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"nights": args.nights, "hours": args.hours, "bundle": bundle.version,
                                     "cpus": cpu_count(), "ray_start_s": ray_start, "runs": runs,
                                     "load_start": load_start[0], "load_end": os.getloadavg()[0]}, indent=1) + "\n")
    print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
