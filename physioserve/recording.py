"""`Recording`: what every reader returns, and the label rules that turn it into 30 s windows.

A recording holds per-channel arrays in physical units (µV for the four model modalities), their
sampling rates and names, the channel -> modality map, and optional labels and demographics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .modalities import (
    AGE_THRESHOLD_YEARS,
    EPOCH_SECONDS,
    MODALITIES,
    STAGE_NAMES,
    STAGE_UNDEFINED,
)

# Physical unit -> factor to µV. Units come from the file header, never from amplitudes. Keys are
# spellings after `_unit_key` (micro sign, Greek mu and 'u' all read as 'u'; case and spaces dropped;
# 'MV' and 'UV' are how upper-case-only writers spell mV and µV).
_TO_MICROVOLTS = {
    "uv": 1.0, "mcv": 1.0, "microv": 1.0, "microvolt": 1.0, "microvolts": 1.0, "uvolt": 1.0, "uvolts": 1.0,
    "mv": 1e3, "millivolt": 1e3, "millivolts": 1e3, "mvolt": 1e3, "mvolts": 1e3,
    "v": 1e6, "volt": 1e6, "volts": 1e6,
    "nv": 1e-3, "nanovolt": 1e-3, "nanovolts": 1e-3,
}


def _unit_key(unit: str) -> str:
    """'µV' (Latin-1 or UTF-8, micro sign or Greek mu), 'u V', 'UV' -> 'uv'."""
    try:  # a UTF-8 'µ' read as Latin-1 shows as 'Âµ' (Greek mu as 'Î¼'): undo that first
        unit = unit.encode("latin-1").decode("utf-8")
    except UnicodeError:
        pass
    key = "".join(unit.split()).casefold()
    return key.replace("\u00b5", "u").replace("\u03bc", "u")


def microvolt_factor(unit: str, *, where: str) -> float:
    """Factor that converts `unit` to µV; raises naming `where` when the unit is not a voltage."""
    key = _unit_key(unit)
    if key not in _TO_MICROVOLTS:
        raise ValueError(
            f"{where}: physical unit {unit!r} is not a voltage; expected one of uV, mV, V, nV "
            "(fix the header or map another channel to this modality)"
        )
    return _TO_MICROVOLTS[key]


def is_voltage(unit: str) -> bool:
    """Whether a header unit is a voltage that `microvolt_factor` converts."""
    return _unit_key(unit) in _TO_MICROVOLTS


@dataclass
class Channel:
    """One channel: samples in `unit` (µV after reading, for the model modalities), rate in Hz."""

    name: str
    data: np.ndarray  # [n_samples] float64
    fs: float
    unit: str
    limits: tuple[float, float] | None = None  # (low, high) physical range in `unit`, when the header gives one
    step: float | None = None  # quantisation step in `unit` (one ADC count), when the header gives it

    @property
    def duration_s(self) -> float:
        return len(self.data) / self.fs


@dataclass
class Labels:
    """Scored labels. Stages per 30 s epoch from the recording start; arousals as time regions."""

    stages: np.ndarray  # [n_epochs] int8, 0..4 = W N1 N2 N3 REM, 5 = undefined
    arousal_regions_s: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # [K, 2] [start, stop) s
    source: str = ""

    def stage_counts(self) -> dict[str, int]:
        counts = np.bincount(self.stages.astype(np.int64), minlength=STAGE_UNDEFINED + 1)
        names = (*STAGE_NAMES, "undefined")
        return {name: int(c) for name, c in zip(names, counts)}


@dataclass
class Recording:
    """One night (or part of one) as read from a file, ready for windowing."""

    name: str
    channels: dict[str, Channel]  # channel name -> Channel
    modality_channels: dict[str, str]  # modality -> channel name, only for present modalities
    labels: Labels | None = None
    age: float | None = None
    sex: str | None = None
    source: Path | None = None
    notes: list[str] = field(default_factory=list)  # what the reader left out or changed, and why
    unusable: dict[str, str] = field(default_factory=dict)  # channel -> why it cannot feed the model
    gaps_s: list[tuple[float, float]] = field(default_factory=list)  # (start, duration) s, EDF+D only

    @property
    def present_modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if m in self.modality_channels)

    @property
    def duration_s(self) -> float:
        return max(c.duration_s for c in self.channels.values()) if self.channels else 0.0

    @property
    def n_windows(self) -> int:
        """Complete 30 s windows that every present modality covers."""
        if not self.modality_channels:
            return 0
        spans = [self.channels[c].duration_s for c in self.modality_channels.values()]
        return int(np.floor(min(spans) / EPOCH_SECONDS + 1e-9))

    def modality_channel(self, modality: str) -> Channel:
        """The channel chosen for a modality."""
        return self.channels[self.modality_channels[modality]]

    def modality_windows(self, modality: str, n_windows: int | None = None) -> tuple[np.ndarray, float]:
        """Raw windows of one modality: ([n_windows, 30 * fs] float64 in µV, fs)."""
        channel = self.channels[self.modality_channels[modality]]
        samples_per_window = EPOCH_SECONDS * channel.fs
        if abs(samples_per_window - round(samples_per_window)) > 1e-6:
            raise ValueError(
                f"{self.name}: channel {channel.name!r} at {channel.fs} Hz has no whole number of samples "
                "per 30 s window; resample it to an integer rate first"
            )
        per = int(round(samples_per_window))
        n = self.n_windows if n_windows is None else n_windows
        return channel.data[: n * per].reshape(n, per), channel.fs  # [n_windows, 30 * fs]

    def window_labels(self, arousal_threshold: float = 0.75) -> dict[str, np.ndarray]:
        """Per-window labels: stage (-1 where undefined or unlabelled), arousal (-1 unlabelled), age."""
        n = self.n_windows
        stage = np.full(n, -1, np.int8)
        arousal = np.full(n, -1, np.int8)
        if self.labels is not None:
            k = min(n, len(self.labels.stages))
            stages = self.labels.stages[:k].astype(np.int8)
            stage[:k] = np.where(stages == STAGE_UNDEFINED, -1, stages)
            frac = arousal_fraction(self.labels.arousal_regions_s, n)
            arousal[:] = (frac >= arousal_threshold).astype(np.int8)
        age_label = -1 if self.age is None else int(self.age >= AGE_THRESHOLD_YEARS)
        return {"stage": stage, "arousal": arousal, "age": np.full(n, age_label, np.int8)}


def arousal_fraction(regions_s: np.ndarray, n_windows: int) -> np.ndarray:
    """Fraction of each 30 s window covered by `regions_s` ([K, 2] seconds, disjoint as the readers
    return them; overlaps would count twice, clipped at 1): [n_windows]."""
    covered = np.zeros(n_windows)
    starts = np.arange(n_windows) * EPOCH_SECONDS
    for start, stop in np.asarray(regions_s, float).reshape(-1, 2):
        first = max(int(start // EPOCH_SECONDS), 0)
        last = min(int(np.ceil(stop / EPOCH_SECONDS)), n_windows)
        for w in range(first, last):
            lo, hi = max(start, starts[w]), min(stop, starts[w] + EPOCH_SECONDS)
            covered[w] += max(hi - lo, 0.0)
    return np.clip(covered / EPOCH_SECONDS, 0.0, 1.0)


def stages_from_sample_labels(stage_per_sample: np.ndarray, fs: float) -> np.ndarray:
    """Stage per 30 s epoch read at each epoch's midpoint from a per-sample stage array."""
    per = int(round(EPOCH_SECONDS * fs))
    n_epochs = len(stage_per_sample) // per
    mids = np.arange(n_epochs) * per + per // 2
    return np.asarray(stage_per_sample)[mids].astype(np.int8)
