"""Helpers shared by the export, runtime, scoring and service tests (this module holds no tests).

Importing it points BentoML at a throw-away home (never ~/bentoml) before bentoml is imported.
`tiny_pipeline` runs the real commands in-process on a made-up cache: pretrain (3 steps, `tiny`)
-> probe -> evaluate -> export --int8; the result is built once per test session and shared.
Recording writers use third-party writers (pyedflib for EDF+, wfdb for WFDB), not the project's code.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

if "PHYSIOSERVE_TEST_BENTOML_HOME" not in os.environ:
    _home = tempfile.mkdtemp(prefix="physioserve-bentoml-home-")
    os.environ["PHYSIOSERVE_TEST_BENTOML_HOME"] = _home
    atexit.register(shutil.rmtree, _home, ignore_errors=True)
os.environ["BENTOML_HOME"] = os.environ["PHYSIOSERVE_TEST_BENTOML_HOME"]
os.environ["BENTOML_DO_NOT_TRACK"] = "true"
os.environ.pop("PHYSIOSERVE_BUNDLE", None)

CHANNELS = {"eeg": "F3-M2", "eog": "E1-M2", "emg": "Chin1-Chin2", "ecg": "ECG"}
STAGE_TEXT = ("W", "1", "2", "3", "R")


def tiny_pipeline(base: Path) -> dict[str, Path]:
    """{cache, run, probe, evaluation, bundle}: the real pipeline at `tiny` size, built once under `base`."""
    from physioserve.cli import main
    from training.tinycache import make_tiny_cache

    root = Path(base) / "physioserve-tiny-pipeline"
    paths = {"cache": root / "cache", "run": root / "run", "probe": root / "probe", "evaluation": root / "evaluation",
             "bundle": root / "bundle"}
    if (paths["bundle"] / "bundle.json").exists():
        return paths
    shutil.rmtree(root, ignore_errors=True)
    make_tiny_cache(paths["cache"])
    (root / "notes.md").write_text("**Trained on made-up test windows.** Not for real use.")
    commands = [
        ["pretrain", "--data", paths["cache"], "--out", paths["run"], "--size", "tiny", "--max-steps", "3",
         "--batch-size", "8", "--no-progress"],
        ["probe", "--checkpoint", paths["run"] / "encoder.pt", "--data", paths["cache"], "--out", paths["probe"],
         "--epochs", "3", "--no-progress"],
        ["evaluate", paths["probe"], "--out", paths["evaluation"]],
        ["export", "--checkpoint", paths["run"] / "encoder.pt", "--probe", paths["probe"], "--out", paths["bundle"],
         "--evaluation", paths["evaluation"] / "evaluation.json", "--int8", "--data", paths["cache"],
         "--version", "0.0.1-test", "--ablation", "--card-notes", root / "notes.md"],
    ]
    for command in commands:
        assert main([str(c) for c in command]) == 0, f"physioserve {command[0]} failed"
    return paths


def night_signals(fs: float, minutes: float, seed: int = 0) -> dict[str, np.ndarray]:
    """Made-up signals in µV (ECG in mV) per modality: sines + noise, stage-free."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(minutes * 60 * fs))) / fs
    return {
        "eeg": 30 * np.sin(2 * np.pi * 10 * t) + rng.normal(0, 10, t.size),
        "eog": 60 * np.sin(2 * np.pi * 0.3 * t) + rng.normal(0, 5, t.size),
        "emg": rng.normal(0, 8, t.size),
        "ecg": 0.8 * np.sin(2 * np.pi * 1.1 * t) ** 15 + rng.normal(0, 0.02, t.size),  # mV
    }


def write_edf(path: Path, fs: int = 200, minutes: float = 10, *, modalities=("eeg", "eog", "emg", "ecg"),
              annotate: bool = True, seed: int = 0) -> Path:
    """An EDF+ file written by pyedflib: PhysioNet-2018 channel names, ECG in mV, stage annotations."""
    import pyedflib

    data = night_signals(fs, minutes, seed)
    signals = [data[m] for m in modalities]
    headers = []
    for m in modalities:
        unit = "mV" if m == "ecg" else "uV"
        bound = 5.0 if m == "ecg" else 500.0
        headers.append({"label": CHANNELS[m], "dimension": unit, "sample_frequency": fs, "physical_min": -bound,
                        "physical_max": bound, "digital_min": -32768, "digital_max": 32767, "transducer": "",
                        "prefilter": ""})
    writer = pyedflib.EdfWriter(str(path), len(signals), file_type=pyedflib.FILETYPE_EDFPLUS)
    try:
        writer.setSignalHeaders(headers)
        if annotate:
            for k in range(int(minutes * 2)):
                writer.writeAnnotation(k * 30.0, 30.0, f"Sleep stage {STAGE_TEXT[k % 5]}")
        writer.writeSamples(signals)
    finally:
        writer.close()
    return path


def write_wfdb(folder: Path, name: str, fs: int = 200, minutes: float = 10, seed: int = 1) -> Path:
    """A WFDB record folder (folder/name/name.hea + .dat) written by wfdb.wrsamp; returns the record folder."""
    import wfdb

    record_dir = Path(folder) / name
    record_dir.mkdir(parents=True, exist_ok=True)
    data = night_signals(fs, minutes, seed)
    order = ("eeg", "eog", "emg", "ecg")
    signal = np.stack([data[m] for m in order], axis=1)  # [n, 4]
    wfdb.wrsamp(name, fs=fs, units=["uV", "uV", "uV", "mV"], sig_name=[CHANNELS[m] for m in order], p_signal=signal,
                fmt=["16"] * 4, adc_gain=[100.0, 100.0, 100.0, 5000.0], baseline=[0] * 4, write_dir=str(record_dir))
    return record_dir
