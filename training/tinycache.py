"""A tiny window cache of made-up nights, for tests, smoke runs and benchmarks (no synthetic-corpus dependency).

Signals are sinusoids plus noise whose frequency and amplitude follow the stage, so that probes have
something to find; they are not meant to look like real polysomnography.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from physioserve.cache import SplitFractions, init_cache, make_split, write_record
from physioserve.modalities import EPOCH_SECONDS, MODALITIES
from physioserve.recording import Channel, Labels, Recording

_STAGE_HZ = {"eeg": (10.0, 6.0, 13.0, 1.5, 7.0), "eog": (0.5, 0.3, 0.2, 0.1, 1.0), "emg": (20.0,) * 5, "ecg": (1.1,) * 5}
_STAGE_UV = {"eeg": (15.0, 20.0, 25.0, 60.0, 15.0), "eog": (60.0, 30.0, 10.0, 10.0, 80.0),
             "emg": (20.0, 10.0, 8.0, 6.0, 2.0), "ecg": (800.0,) * 5}


def tiny_recording(name: str, n_windows: int, fs: float, seed: int, *, age: float | None = None,
                   labelled: bool = True, modalities: tuple[str, ...] = MODALITIES,
                   arousal_every: int = 4) -> Recording:
    """A made-up night of `n_windows` 30 s windows at `fs` Hz with random stages and a few arousals."""
    rng = np.random.default_rng(seed)
    stages = rng.integers(0, 5, n_windows).astype(np.int8)
    per = int(round(EPOCH_SECONDS * fs))
    t = np.arange(per) / fs
    channels: dict[str, Channel] = {}
    for modality in modalities:
        hz = np.array(_STAGE_HZ[modality])[stages]  # [n]
        uv = np.array(_STAGE_UV[modality])[stages]  # [n]
        phase = rng.uniform(0, 2 * np.pi, n_windows)
        x = uv[:, None] * np.sin(2 * np.pi * hz[:, None] * t[None, :] + phase[:, None])  # [n, per]
        x += 0.2 * uv[:, None] * rng.standard_normal((n_windows, per))
        channels[modality.upper()] = Channel(modality.upper(), x.reshape(-1), fs, "uV")
    if labelled:
        starts = np.arange(0, n_windows, arousal_every) * EPOCH_SECONDS + 1.0
        regions = np.stack([starts, starts + EPOCH_SECONDS - 2.0], 1)  # [K, 2] s, >= 75 % of a window
        labels = Labels(stages=stages, arousal_regions_s=regions, source="tiny")
    else:
        labels = None
    return Recording(name=name, channels=channels, modality_channels={m: m.upper() for m in modalities},
                     labels=labels, age=age if labelled else None)


def make_tiny_cache(root: str | Path, n_labelled: int = 6, n_unlabelled: int = 1, n_windows: int = 10,
                    seed: int = 0, missing: dict[str, tuple[str, ...]] | None = None) -> Path:
    """Write a complete cache (records + split.json) to `root`: labelled records alternate 100 / 200 Hz
    and ages 30 / 70 within each split (so every split has both age classes when it has two records).
    `missing` = {record name: absent modalities}."""
    root = Path(root)
    init_cache(root)
    labelled = [f"tiny{i:02d}" for i in range(n_labelled)]
    unlabelled = [f"free{i:02d}" for i in range(n_unlabelled)]
    split = make_split(labelled, unlabelled, SplitFractions(train=0.5, val=0.25, seed=seed))
    ages = {}
    for part in ("train", "val", "test"):
        for j, name in enumerate(split[part]):
            ages[name] = 30.0 if j % 2 == 0 else 70.0
    missing = missing or {}
    for i, name in enumerate(labelled + unlabelled):
        present = tuple(m for m in MODALITIES if m not in missing.get(name, ()))
        rec = tiny_recording(name, n_windows, 100.0 if i % 2 == 0 else 200.0, seed * 1000 + i,
                             age=ages.get(name), labelled=name in ages, modalities=present)
        write_record(root, rec)
    (root / "split.json").write_text(json.dumps(split, indent=1))
    return root
