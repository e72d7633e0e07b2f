"""The window cache: a night's preprocessed windows per record, memory-mapped, plus labels and split.

Layout (written by `physioserve prepare`, read by training):

    CACHE/cache.json                  format version, preprocessing config, arousal threshold
    CACHE/split.json                  patient-level split, written once and reused
    CACHE/records/<name>/windows.npy  [n, 4, 3000] float32, model input (memory-mapped on read)
    CACHE/records/<name>/mask.npy     [n, 4] bool, modality present
    CACHE/records/<name>/labels.npz   stage [n] int8 (-1 undefined/unlabelled), arousal [n] int8
                                      (-1 unlabelled), age [n] int8 (-1 unknown, 1 = age >= 55)
    CACHE/records/<name>/record.json  name, n_windows, modality channels, rates, age, sex, labelled
    CACHE/problems.json               records that failed, with the reason

A record folder appears only when complete (written to a temporary folder, then renamed), so an
interrupted `prepare` resumes by skipping the records that exist.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from .modalities import MODALITIES, WINDOW_SAMPLES
from .preprocessing import (
    DEFAULT_CONFIG,
    PreprocessingConfig,
    check_config_matches,
    missing_windows,
    preprocess_modalities,
)
from .recording import Recording

CACHE_FORMAT = 1
SPLITS = ("pretrain", "train", "val", "test")
LABEL_FIELDS = ("stage", "arousal", "age")


def recording_to_windows(
    recording: Recording, config: PreprocessingConfig = DEFAULT_CONFIG
) -> tuple[np.ndarray, np.ndarray]:
    """All complete 30 s windows of a recording -> (signals [n, 4, 3000] float32, mask [n, 4] bool).

    A window that is missing data in a modality (`preprocessing.missing_windows`: invalid samples,
    a flat or saturated lead) is marked absent for that modality (mask False, zeros) instead of
    failing the night; a window can end up with no modality at all (mask row all False): training
    skips it, scoring reports it as unscorable.
    """
    n = recording.n_windows
    if n == 0:
        raise ValueError(f"{recording.name}: shorter than one 30 s window in every present modality")
    raw = {m: recording.modality_windows(m, n) for m in recording.present_modalities}
    channels = {m: recording.modality_channel(m) for m in raw}
    valid = {m: ~missing_windows(x, fs, channels[m].limits, channels[m].step) for m, (x, fs) in raw.items()}  # [n]
    raw = {m: (np.where(valid[m][:, None], x, 0.0), fs) for m, (x, fs) in raw.items()}
    signals, mask = preprocess_modalities(raw, config)  # [n, 4, 3000], [n, 4]
    for m, ok in valid.items():
        i = MODALITIES.index(m)
        mask[:, i] &= ok
        signals[~ok, i] = 0.0
    return signals, mask


def write_record(
    cache_dir: Path,
    recording: Recording,
    config: PreprocessingConfig = DEFAULT_CONFIG,
    arousal_threshold: float = 0.75,
) -> int:
    """Preprocess one recording into CACHE/records/<name>/ atomically; returns its window count."""
    records_dir = Path(cache_dir) / "records"
    final = records_dir / recording.name
    tmp = records_dir / f".tmp-{recording.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    signals, mask = recording_to_windows(recording, config)  # [n, 4, 3000], [n, 4]
    labels = recording.window_labels(arousal_threshold)
    np.save(tmp / "windows.npy", signals)
    np.save(tmp / "mask.npy", mask)
    np.savez(tmp / "labels.npz", **labels)
    meta = {
        "name": recording.name,
        "n_windows": int(len(signals)),
        "modality_channels": recording.modality_channels,
        "fs": {m: recording.channels[c].fs for m, c in recording.modality_channels.items()},
        "age": recording.age,
        "sex": recording.sex,
        "labelled": recording.labels is not None,
    }
    (tmp / "record.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return len(signals)


def init_cache(cache_dir: Path, config: PreprocessingConfig = DEFAULT_CONFIG, arousal_threshold: float = 0.75) -> None:
    """Create CACHE/cache.json, or check that an existing cache was made with the same settings."""
    cache_dir = Path(cache_dir)
    header = {"format": CACHE_FORMAT, "preprocessing": config.to_dict(), "arousal_threshold": arousal_threshold}
    path = cache_dir / "cache.json"
    if path.exists():
        existing = json.loads(path.read_text())
        check_config_matches(existing.get("preprocessing", {}), where=f"cache {cache_dir}", config=config)
        if existing.get("arousal_threshold") != arousal_threshold:
            raise ValueError(
                f"cache {cache_dir} uses arousal threshold {existing.get('arousal_threshold')}, not "
                f"{arousal_threshold}; use a new output folder"
            )
        return
    cache_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(header, indent=1))


@dataclass(frozen=True)
class SplitFractions:
    """Fractions of labelled records (paper: 657 / 117 / 219 of 993); the rest of them is test."""

    train: float = 657 / 993
    val: float = 117 / 993
    seed: int = 0


def make_split(labelled: list[str], unlabelled: list[str], fractions: SplitFractions = SplitFractions()) -> dict:
    """Patient-level split: pretrain = unlabelled + train; val and test never seen in pretraining.

    In PhysioNet 2018 each record is one patient, so records are the unit of the split.
    """
    order = sorted(labelled)
    np.random.default_rng(fractions.seed).shuffle(order)
    n_train = int(round(fractions.train * len(order)))
    n_val = int(round(fractions.val * len(order)))
    if len(order) >= 3:  # keep every split non-empty when there are enough records
        n_val = max(n_val, 1)
        n_train = min(max(n_train, 1), len(order) - n_val - 1)
    train, val, test = order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]
    return {
        "seed": fractions.seed,
        "fractions": {"train": fractions.train, "val": fractions.val},
        "pretrain": sorted(unlabelled) + sorted(train),
        "train": sorted(train),
        "val": sorted(val),
        "test": sorted(test),
    }


class WindowCache:
    """Read side of the cache: labels and masks in memory, windows memory-mapped per record."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        header_path = self.root / "cache.json"
        if not header_path.exists():
            raise FileNotFoundError(f"{self.root} is not a window cache (no cache.json); run `physioserve prepare`")
        self.header = json.loads(header_path.read_text())
        check_config_matches(self.header["preprocessing"], where=f"cache {self.root}")
        split_path = self.root / "split.json"
        self.split: dict = json.loads(split_path.read_text()) if split_path.exists() else {}
        done = sorted(p.name for p in (self.root / "records").glob("*") if (p / "record.json").exists())
        self.records: list[str] = [r for r in done if not r.startswith(".")]
        self.meta = {r: json.loads((self.root / "records" / r / "record.json").read_text()) for r in self.records}
        counts = np.array([self.meta[r]["n_windows"] for r in self.records], np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])  # record i: [offsets[i], offsets[i+1])
        self.record_index = np.repeat(np.arange(len(self.records), dtype=np.int32), counts)  # [N]
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @cached_property
    def labels(self) -> dict[str, np.ndarray]:
        """{stage, arousal, age}: [N] int8 each, -1 where unknown."""
        parts = [np.load(self.root / "records" / r / "labels.npz") for r in self.records]
        return {k: np.concatenate([p[k] for p in parts]) if parts else np.zeros(0, np.int8) for k in LABEL_FIELDS}

    @cached_property
    def mask(self) -> np.ndarray:
        """[N, 4] bool modality presence."""
        parts = [np.load(self.root / "records" / r / "mask.npy") for r in self.records]
        return np.concatenate(parts) if parts else np.zeros((0, len(MODALITIES)), bool)

    def record_windows(self, i: int) -> np.ndarray:
        """Memory-mapped windows of record i: [n_i, 4, 3000] float32."""
        if i not in self._maps:
            self._maps[i] = np.load(self.root / "records" / self.records[i] / "windows.npy", mmap_mode="r")
        return self._maps[i]

    def windows(self, indices: np.ndarray) -> np.ndarray:
        """Gather windows by global index: [len(indices), 4, 3000] float32."""
        indices = np.asarray(indices, np.int64)
        out = np.empty((len(indices), len(MODALITIES), WINDOW_SAMPLES), np.float32)
        rec = self.record_index[indices]
        for i in np.unique(rec):
            sel = np.nonzero(rec == i)[0]
            out[sel] = self.record_windows(int(i))[indices[sel] - self.offsets[i]]
        return out

    def split_indices(self, split: str) -> np.ndarray:
        """Global window indices of the records in one split (pretrain / train / val / test)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; accepted: {', '.join(SPLITS)}")
        if not self.split:
            raise FileNotFoundError(f"{self.root} has no split.json; run `physioserve prepare` to finish the cache")
        wanted = set(self.split[split])
        parts = [np.arange(self.offsets[i], self.offsets[i + 1]) for i, r in enumerate(self.records) if r in wanted]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)
