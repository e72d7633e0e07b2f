"""Preprocessing speed: one vectorised call per modality for a whole night vs a per-window loop.

Pinned to one core. Prints a table and writes JSON (default bench/results/preprocess_speed.json).

    python bench/preprocess_speed.py [--hours 8] [--rates 200 256 512] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from physioserve.modalities import MODALITIES
from physioserve.preprocessing import preprocess
from benchlib import machine, pin_to_one_core


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--rates", type=int, nargs="+", default=[200, 256, 512])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/preprocess_speed.json"))
    args = parser.parse_args()
    pin_to_one_core()
    n_windows = int(args.hours * 120)
    rng = np.random.default_rng(0)
    rows = []
    for fs in args.rates:
        night = {m: rng.normal(0, 30, (n_windows, 30 * fs)) for m in MODALITIES}  # [n, 30 * fs] µV
        for m in MODALITIES:  # warm the filter-design caches
            preprocess(night[m][:1], fs, m)
        vectorised = best_of(lambda: [preprocess(night[m], fs, m) for m in MODALITIES], args.repeats)
        loop = best_of(lambda: [[preprocess(w, fs, m) for w in night[m]] for m in MODALITIES], 1)
        rows.append({"fs": fs, "windows": n_windows, "modalities": len(MODALITIES),
                     "vectorised_s": vectorised, "per_window_loop_s": loop, "speedup": loop / vectorised})
    print(f"{args.hours:g} h night, {len(MODALITIES)} modalities, one core")
    print(f"{'fs':>6} {'windows':>8} {'vectorised s':>13} {'loop s':>8} {'speed-up':>9}")
    for r in rows:
        print(f"{r['fs']:>6} {r['windows']:>8} {r['vectorised_s']:>13.3f} {r['per_window_loop_s']:>8.3f} {r['speedup']:>8.1f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "cores_used": 1,
                                    "hours": args.hours, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
