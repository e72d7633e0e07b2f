"""One 8 h four-modality night scored end to end (read + preprocess + model + write) vs model time alone.

An EDF+ night (EEG, EOG, EMG at 200 Hz in µV, ECG in mV) is written with pyedflib into a temporary
folder (not timed), then scored the way `physioserve score` does it, each stage timed: read
(physioserve.io), preprocess (cache.recording_to_windows, the shared path), model
(InferenceSession.predict, in the session's chunks: 16 windows on CPU), write (CSV + summary JSON + hypnogram PNG). The whole
`physioserve score` command is timed too (it adds session creation).

    python bench/serve_night.py --bundle runs/bench/paper-bundle [--hours 8] [--fs 200]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import machine, print_load


def write_night(path: Path, hours: float, fs: int, seed: int = 0) -> Path:
    import pyedflib

    rng = np.random.default_rng(seed)
    n = int(hours * 3600 * fs)
    t = np.arange(n) / fs
    signals = [30 * np.sin(2 * np.pi * 10 * t) + rng.normal(0, 10, n), rng.normal(0, 20, n), rng.normal(0, 8, n),
               0.8 * np.sin(2 * np.pi * 1.1 * t) ** 15 + rng.normal(0, 0.02, n)]
    labels, units, bounds = ["F3-M2", "E1-M2", "Chin1-Chin2", "ECG"], ["uV", "uV", "uV", "mV"], [500.0, 500.0, 500.0, 5.0]
    writer = pyedflib.EdfWriter(str(path), 4, file_type=pyedflib.FILETYPE_EDFPLUS)
    try:
        writer.setSignalHeaders([{"label": lab, "dimension": u, "sample_frequency": fs, "physical_min": -b,
                                  "physical_max": b, "digital_min": -32768, "digital_max": 32767, "transducer": "",
                                  "prefilter": ""} for lab, u, b in zip(labels, units, bounds)])
        writer.writeSamples(signals)
    finally:
        writer.close()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--hours", type=float, default=8.0)
    parser.add_argument("--fs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results/serve_night.json"))
    args = parser.parse_args()
    load_start = os.getloadavg()

    from physioserve.cache import recording_to_windows
    from physioserve.cli import main as cli
    from physioserve.io import read_recording
    from physioserve.runtime import InferenceSession
    from physioserve.scoring import score_windows_outputs, write_score

    with tempfile.TemporaryDirectory(prefix="physioserve-night-") as tmp:
        edf = write_night(Path(tmp) / "night8h.edf", args.hours, args.fs)
        session = InferenceSession(args.bundle, threads=args.threads)
        session.warmup()
        stages: dict[str, float] = {}
        t = time.perf_counter()
        recording = read_recording(edf)
        stages["read"] = time.perf_counter() - t
        t = time.perf_counter()
        signals, mask = recording_to_windows(recording)
        stages["preprocess"] = time.perf_counter() - t
        t = time.perf_counter()
        probs = session.predict(signals, mask)
        stages["model"] = time.perf_counter() - t
        t = time.perf_counter()
        score = score_windows_outputs(recording, probs, mask, model={"name": session.bundle.name, "version": session.bundle.version})
        write_score(score, Path(tmp) / "out", fmt="csv", plot=True)
        stages["table + summary + write (CSV, JSON, PNG)"] = time.perf_counter() - t
        total = sum(stages.values())
        t = time.perf_counter()
        assert cli(["score", str(edf), "--out", str(Path(tmp) / "cli"), "--bundle", str(args.bundle), "--plot",
                    "--no-progress"]) == 0
        command_s = time.perf_counter() - t
        size_mb = edf.stat().st_size / 1e6
    meta = session.bundle.meta
    print(f"{args.hours:g} h night, 4 modalities at {args.fs} Hz ({len(signals)} windows, EDF {size_mb:.0f} MB), "
          f"{meta['model']['size']} model, {session.providers[0]} x {session.threads} threads, "
          f"{machine()}")
    print(f"{'stage':<44} {'s':>8} {'share':>7}")
    for name, seconds in stages.items():
        print(f"{name:<44} {seconds:>8.2f} {100 * seconds / total:>6.1f}%")
    print(f"{'end to end (sum)':<44} {total:>8.2f}   model alone is {100 * stages['model'] / total:.0f} % of it")
    print(f"{'`physioserve score --plot` command':<44} {command_s:>8.2f}")
    print_load(load_start)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"load_average_start_end": [load_start, os.getloadavg()],
                                    "machine": machine(), "cpus": os.cpu_count(),
                                    "size": meta["model"]["size"], "hours": args.hours, "fs": args.fs,
                                    "windows": int(len(signals)), "edf_mb": size_mb, "providers": session.providers,
                                    "threads": session.threads, "stages_s": stages, "end_to_end_s": total,
                                    "model_share": stages["model"] / total, "score_command_s": command_s}, indent=1))


if __name__ == "__main__":
    main()
