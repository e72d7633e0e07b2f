"""THE preprocessing: raw 30 s windows in µV at any rate >= 100 Hz -> model input at 100 Hz.

Training, the service and recording scoring all call `preprocess`, window by window or on a whole
night's `[n_windows, n_samples]` array at once; each window is processed independently, so a window
gives bit-identical model input whichever path it took.

Steps, per window (paper §3.1, Fang et al. 2024):
1. remove the window's mean (a constant offset carries no information);
2. resample to 100 Hz exactly (rational polyphase resampling, `scipy.signal.resample_poly`) with a
   zero-phase Kaiser FIR anti-aliasing filter: flat to 40 Hz, >= 40 dB down from 50 Hz;
3. band-pass, zero-phase (forward-backward Butterworth): EEG/EOG 0.1-30 Hz; EMG/ECG 0.1-70 Hz as
   the paper writes it, which a 100 Hz output cannot carry: their effective upper edge is the
   anti-aliasing edge (flat to 40 Hz, gone by 50 Hz), so only the 0.1 Hz high-pass is applied;
4. divide by a fixed per-modality scale (µV) so that typical signals are O(1), and clip the rare
   huge artifact to +-`clip`. The scale is a constant, not a per-window statistic: amplitude is
   information (N3 delta, chin tone).

The whole configuration is `PreprocessingConfig`, recorded in every cache, checkpoint and bundle.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from functools import lru_cache

import numpy as np
from scipy import signal

from .modalities import EPOCH_SECONDS, MODALITIES, TARGET_FS, WINDOW_SAMPLES, check_modality

SUPPORTED_RATES_NOTE = "any rate >= 100 Hz whose 30 s window is a whole number of samples"


@dataclass(frozen=True)
class PreprocessingConfig:
    """Every number that shapes the model input. Bundles refuse a config that differs from this."""

    target_fs: int = TARGET_FS
    window_seconds: int = EPOCH_SECONDS
    highpass_hz: float = 0.1
    highpass_order: int = 2
    lowpass_hz: dict[str, float | None] = field(
        default_factory=lambda: {"eeg": 31.0, "eog": 31.0, "emg": None, "ecg": None}
    )
    lowpass_order: int = 8
    antialias_pass_hz: float = 40.0
    antialias_stop_hz: float = 50.0
    antialias_atten_db: float = 60.0
    scale_uv: dict[str, float] = field(
        default_factory=lambda: {"eeg": 25.0, "eog": 25.0, "emg": 10.0, "ecg": 250.0}
    )
    clip: float = 40.0
    version: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "PreprocessingConfig":
        return cls(**data)

    def __hash__(self) -> int:  # dict fields make the default hash fail; the JSON is canonical
        return hash(self.to_json())


DEFAULT_CONFIG = PreprocessingConfig()


def check_config_matches(recorded: dict, *, where: str, config: PreprocessingConfig = DEFAULT_CONFIG) -> None:
    """Raise when a recorded preprocessing config (cache, checkpoint, bundle) differs from the code's."""
    ours = config.to_dict()
    if recorded != ours:
        diff = sorted(k for k in set(recorded) | set(ours) if recorded.get(k) != ours.get(k))
        raise ValueError(
            f"{where} was made with a different preprocessing config (fields differ: {', '.join(diff)}); "
            "re-create it with this version of physioserve, or install the version that made it"
        )


def _rational(fs: float) -> tuple[int, int]:
    """(up, down) with fs * up / down == target exactly."""
    ratio = Fraction(TARGET_FS) / Fraction(fs).limit_denominator(10_000)
    return ratio.numerator, ratio.denominator


@lru_cache(maxsize=64)
def _antialias_taps(up: int, down: int, pass_hz: float, stop_hz: float, atten_db: float) -> np.ndarray:
    """Kaiser low-pass FIR at the upsampled rate fs * up (unit DC gain)."""
    rate = TARGET_FS * down  # == fs * up
    width = (stop_hz - pass_hz) / (rate / 2)
    numtaps, beta = signal.kaiserord(atten_db, width)
    numtaps |= 1  # odd length: integer group delay, which resample_poly compensates exactly
    cutoff = (pass_hz + stop_hz) / 2
    taps = signal.firwin(numtaps, cutoff, window=("kaiser", beta), fs=rate)
    return taps  # resample_poly applies the interpolation gain `up` itself


@lru_cache(maxsize=16)
def _bandpass_sos(highpass_hz: float, hp_order: int, lowpass_hz: float | None, lp_order: int) -> np.ndarray:
    sos = signal.butter(hp_order, highpass_hz, btype="highpass", fs=TARGET_FS, output="sos")
    if lowpass_hz is not None:
        low = signal.butter(lp_order, lowpass_hz, btype="lowpass", fs=TARGET_FS, output="sos")
        sos = np.vstack([sos, low])
    return sos


def window_length(fs: float) -> int:
    """Samples in one 30 s window at `fs`; raises for rates the model cannot take."""
    if not np.isfinite(fs) or fs < TARGET_FS:
        raise ValueError(f"sampling rate {fs} Hz is below {TARGET_FS} Hz; accepted: {SUPPORTED_RATES_NOTE}")
    n = EPOCH_SECONDS * fs
    if abs(n - round(n)) > 1e-6:
        raise ValueError(f"sampling rate {fs} Hz gives {n} samples per 30 s window; accepted: {SUPPORTED_RATES_NOTE}")
    return int(round(n))


def preprocess(
    x: np.ndarray, fs: float, modality: str, config: PreprocessingConfig = DEFAULT_CONFIG
) -> np.ndarray:
    """Raw windows [..., 30 * fs] in µV at `fs` Hz -> float32 [..., 3000] at 100 Hz (see module doc)."""
    check_modality(modality)
    expected = window_length(fs)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 0 or x.shape[-1] != expected:
        got = "a scalar" if x.ndim == 0 else f"{x.shape[-1]} samples"
        raise ValueError(
            f"{modality}: a 30 s window at {fs:g} Hz has {expected} samples, got {got}; "
            "send exactly 30 s per window"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{modality}: window contains NaN or Inf; send finite values in µV")
    x = x - x.mean(axis=-1, keepdims=True)  # [..., n]
    up, down = _rational(fs)
    if (up, down) != (1, 1):
        taps = _antialias_taps(up, down, config.antialias_pass_hz, config.antialias_stop_hz, config.antialias_atten_db)
        x = signal.resample_poly(x, up, down, axis=-1, window=taps)  # [..., 3000]
    sos = _bandpass_sos(config.highpass_hz, config.highpass_order, config.lowpass_hz[modality], config.lowpass_order)
    x = signal.sosfiltfilt(sos, x, axis=-1)  # [..., 3000]
    x = np.clip(x / config.scale_uv[modality], -config.clip, config.clip)
    return np.ascontiguousarray(x, dtype=np.float32)


def preprocess_modalities(
    windows: dict[str, tuple[np.ndarray, float]], config: PreprocessingConfig = DEFAULT_CONFIG
) -> tuple[np.ndarray, np.ndarray]:
    """{modality: (raw [n, 30*fs], fs)} -> (signals [n, 4, 3000] float32, mask [n, 4] bool).

    Absent modalities are zeros with mask False. At least one modality must be given.
    """
    if not windows:
        raise ValueError(f"no modality present; give at least one of {', '.join(MODALITIES)}")
    for modality in windows:
        check_modality(modality)
    n = {m: np.asarray(raw).reshape(-1, np.asarray(raw).shape[-1]).shape[0] for m, (raw, _) in windows.items()}
    if len(set(n.values())) != 1:
        raise ValueError(f"modalities have different window counts: {n}; give each the same windows")
    n_windows = next(iter(n.values()))
    signals = np.zeros((n_windows, len(MODALITIES), WINDOW_SAMPLES), np.float32)  # [n, 4, 3000]
    mask = np.zeros((n_windows, len(MODALITIES)), bool)  # [n, 4]
    for i, modality in enumerate(MODALITIES):
        if modality in windows:
            raw, fs = windows[modality]
            signals[:, i] = preprocess(np.asarray(raw).reshape(n_windows, -1), fs, modality, config)
            mask[:, i] = True
    return signals, mask
