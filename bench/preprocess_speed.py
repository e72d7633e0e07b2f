"""Preprocessing speed of an 8 h four-modality night, on one core: this release vs scipy's loop (release 1).

Per input rate, in one process pinned to one core: (a) `preprocess` as it is (one call per
modality for the whole night; above 200 Hz the resampling filter runs as blocked matrix products),
(b) the same with scipy's `resample_poly` at every rate (release 1's implementation, by setting
`preprocessing.BLOCKED_ABOVE_HZ` out of reach), (c) a per-window loop of (a). Wall and CPU seconds
(best of --repeats); on a shared machine the wall time includes waiting for the core, the CPU time
does not. Prints a table and writes JSON (default bench/results/preprocess_speed.json).

    python bench/preprocess_speed.py [--hours 8] [--rates 200 256 500 512 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

import physioserve.preprocessing as preprocessing
from physioserve.modalities import MODALITIES
from physioserve.preprocessing import preprocess
from benchlib import machine, pin_to_one_core, print_load


def best_of(fn, repeats: int) -> tuple[float, float]:
    """(best wall seconds, best CPU seconds) of `repeats` calls."""
    wall, cpu = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return min(wall), min(cpu)


def scipy_loop(fn):
    """Run fn with release 1's resampling (scipy's resample_poly at every rate)."""
    saved = preprocessing.BLOCKED_ABOVE_HZ
    preprocessing.BLOCKED_ABOVE_HZ = float("inf")
    try:
        return fn()
    finally:
        preprocessing.BLOCKED_ABOVE_HZ = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--rates", type=int, nargs="+", default=[200, 256, 500, 512, 1000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-loop", action="store_true", help="skip the per-window loop (slow)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/preprocess_speed.json"))
    args = parser.parse_args()
    load_start = os.getloadavg()
    pin_to_one_core()
    n_windows = int(args.hours * 120)
    rng = np.random.default_rng(0)
    rows = []
    for fs in args.rates:
        night = {m: rng.normal(0, 30, (n_windows, 30 * fs)) for m in MODALITIES}  # [n, 30 * fs] µV
        whole = lambda: [preprocess(night[m], fs, m) for m in MODALITIES]  # noqa: E731
        whole()  # warm the filter-design caches (both paths)
        scipy_loop(whole)
        wall, cpu = best_of(whole, args.repeats)
        old_wall, old_cpu = scipy_loop(lambda: best_of(whole, args.repeats))
        loop = None if args.no_loop else best_of(lambda: [[preprocess(w, fs, m) for w in night[m]] for m in MODALITIES], 1)[1]
        rows.append({"fs": fs, "windows": n_windows, "modalities": len(MODALITIES),
                     "wall_s": wall, "cpu_s": cpu, "scipy_loop_wall_s": old_wall, "scipy_loop_cpu_s": old_cpu,
                     "speedup_cpu": old_cpu / cpu, "per_window_loop_cpu_s": loop})
        del night
    print(f"{args.hours:g} h night ({n_windows} windows), {len(MODALITIES)} modalities, one core, {machine()}")
    print(f"{'fs':>6} {'CPU s':>7} {'wall s':>7} {'release 1 CPU s':>16} {'speed-up':>9} {'per-window loop CPU s':>22}")
    for r in rows:
        loop = "-" if r["per_window_loop_cpu_s"] is None else f"{r['per_window_loop_cpu_s']:.3f}"
        print(f"{r['fs']:>6} {r['cpu_s']:>7.3f} {r['wall_s']:>7.3f} {r['scipy_loop_cpu_s']:>16.3f} "
              f"{r['speedup_cpu']:>8.2f}x {loop:>22}")
    print_load(load_start)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "cores_used": 1, "hours": args.hours,
                                    "load_average_start_end": [load_start, os.getloadavg()], "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
