"""Synthetic record speed: seconds to generate and write one 8 h record, pinned to one core.

Prints a table and writes JSON (default bench/results/synth_speed.json). Target: <= 30 s per 8 h record.

    python bench/synth_speed.py [--hours 8] [--repeats 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
from pathlib import Path

from physioserve.synth.corpus import plan_corpus, synthesize_record
from physioserve.synth.hypnograms import default_hypnograms
from benchlib import machine, pin_to_one_core


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("bench/results/synth_speed.json"))
    args = parser.parse_args()
    pin_to_one_core()
    epochs = int(args.hours * 120)
    night = next(h for h in default_hypnograms() if h.n_epochs >= epochs).crop(0, epochs)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.repeats):
            plan = plan_corpus(1, seed=seed, hypnograms=[night])[0]
            r = synthesize_record(plan, tmp)
            rows.append({"seed": seed, "hours": r["hours"], "generate_s": r["generate_s"], "write_s": r["write_s"],
                         "total_s": r["generate_s"] + r["write_s"]})
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"one {args.hours:g} h record (13 channels, 200 Hz, labels), one core; peak RSS {peak_mb:.0f} MB")
    print(f"{'seed':>4} {'generate s':>11} {'write s':>8} {'total s':>8}")
    for r in rows:
        print(f"{r['seed']:>4} {r['generate_s']:>11.2f} {r['write_s']:>8.2f} {r['total_s']:>8.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine(), "cores_used": 1,
                                    "hours": args.hours, "peak_rss_mb": peak_mb, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
