"""Synthetic record speed: seconds to generate and write one 8 h record, pinned to one core.

Also times a baseline generator in the same process, alternating with the current one, so that
the ratio holds on a busy machine: the `physioserve/synth` package of git revision `--baseline`
(default 8645ef4, the generator before the realistic EEG), extracted with `git show` into a
temporary package `physioserve_baseline` (with that revision's `modalities.py`). Prints a table
and writes JSON (default bench/results/synth_speed.json). Target: current <= 1.5 x baseline.

    python bench/synth_speed.py [--hours 8] [--repeats 2] [--baseline REV|none] [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from physioserve.synth.corpus import plan_corpus, synthesize_record
from physioserve.synth.hypnograms import default_hypnograms
from benchlib import machine, pin_to_one_core

ROOT = Path(__file__).resolve().parents[1]


def load_baseline(rev: str, into: Path):
    """Import `physioserve/synth` of git revision `rev` as package `physioserve_baseline.synth`."""
    files = subprocess.run(["git", "-C", str(ROOT), "ls-tree", "--name-only", rev, "physioserve/synth/"],
                           check=True, capture_output=True, text=True).stdout.split()
    package = into / "physioserve_baseline"
    (package / "synth").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    wanted = [f for f in files if f.endswith(".py")] + ["physioserve/modalities.py"]
    for path in wanted:
        text = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], check=True, capture_output=True,
                              text=True).stdout
        (package / path.removeprefix("physioserve/")).write_text(text)
    sys.path.insert(0, str(into))
    return importlib.import_module("physioserve_baseline.synth.corpus")


def time_record(corpus_module, night, seed: int, out: str) -> dict:
    plan = corpus_module.plan_corpus(1, seed=seed, hypnograms=[night])[0]
    r = corpus_module.synthesize_record(plan, out)
    return {"seed": seed, "hours": r["hours"], "generate_s": r["generate_s"], "write_s": r["write_s"],
            "total_s": r["generate_s"] + r["write_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--baseline", default="8645ef4", help="git revision of the baseline generator, or 'none'")
    parser.add_argument("--out", type=Path, default=Path("bench/results/synth_speed.json"))
    args = parser.parse_args()
    pin_to_one_core()
    load = os.getloadavg()
    epochs = int(args.hours * 120)
    night = next(h for h in default_hypnograms() if h.n_epochs >= epochs).crop(0, epochs)
    current = sys.modules["physioserve.synth.corpus"]
    rows = {"current": [], "baseline": []}
    with tempfile.TemporaryDirectory() as tmp:
        baseline = None if args.baseline == "none" else load_baseline(args.baseline, Path(tmp) / "code")
        if baseline is not None:
            bnight = baseline.Hypnogram(night.name, night.stages, night.arousal_regions, night.n_samples)
        for seed in range(args.repeats):
            rows["current"].append(time_record(current, night, seed, tmp))
            if baseline is not None:
                rows["baseline"].append(time_record(baseline, bnight, seed, tmp))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"one {args.hours:g} h record (13 channels, 200 Hz, labels), one core; peak RSS {peak_mb:.0f} MB; "
          f"1-min load average at start {load[0]:.2f}, end {os.getloadavg()[0]:.2f}")
    print(f"{'generator':<10} {'seed':>4} {'generate s':>11} {'write s':>8} {'total s':>8}")
    for key, items in rows.items():
        for r in items:
            print(f"{key:<10} {r['seed']:>4} {r['generate_s']:>11.2f} {r['write_s']:>8.2f} {r['total_s']:>8.2f}")
    summary = {"machine": machine(), "cores_used": 1, "hours": args.hours, "peak_rss_mb": peak_mb,
               "baseline_rev": args.baseline, "rows": rows}
    if rows["baseline"]:
        ratio = sum(r["total_s"] for r in rows["current"]) / sum(r["total_s"] for r in rows["baseline"])
        summary["ratio_current_to_baseline"] = ratio
        print(f"current / baseline ({args.baseline}) total time: {ratio:.2f}x (target <= 1.5x)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
