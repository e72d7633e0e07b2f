"""THE preprocessing: raw 30 s windows in µV at any rate >= 50 Hz -> model input at 100 Hz.

Training, the service and recording scoring all call `preprocess`, window by window or on a whole
night's `[n_windows, n_samples]` array at once; each window is processed independently, so a window
gives bit-identical model input whichever path it took.

Steps, per window (paper §3.1, Fang et al. 2024):
1. remove the window's mean (a constant offset carries no information);
2. resample to 100 Hz exactly (rational polyphase resampling, `scipy.signal.resample_poly`) with a
   zero-phase Kaiser FIR anti-aliasing filter: flat to 40 Hz, >= 60 dB down from 50 Hz. Above
   BLOCKED_ABOVE_HZ (200 Hz), where the filter is long (186 taps per output sample at 512 Hz), the
   same filter runs as blocked matrix products (`resampling.py`): the same sums in another order,
   a few times faster, within 1 float32 rounding step of scipy's loop. Up to 200 Hz (the PhysioNet
   2018 rate of the training data) scipy's loop stays and the output is bit-identical. Rates of
   50-99 Hz (older PSG systems) are upsampled with the same filter scaled to the input's Nyquist
   rate (stop edge fs / 2, pass edge 0.8 x fs / 2), so the interpolation creates no images: the
   output is band-limited to fs / 2 (`band_limit_hz` says when that is below the modality's band);
3. band-pass, zero-phase (forward-backward Butterworth): EEG/EOG 0.1-30 Hz; EMG/ECG 0.1-70 Hz as
   the paper writes it, which a 100 Hz output cannot carry: their effective upper edge is the
   anti-aliasing edge (flat to 40 Hz, gone by 50 Hz), so only the 0.1 Hz high-pass is applied;
4. divide by a fixed per-modality scale (µV) so that typical signals are O(1), and clip the rare
   huge artifact to +-`clip`. The scale is a constant, not a per-window statistic: amplitude is
   information (N3 delta, chin tone).

The whole configuration is `PreprocessingConfig`, recorded in every cache, checkpoint and bundle.

Missing data (`missing_windows`, used by every path that makes model input): a window whose samples
are not all finite (WFDB's invalid sample), or whose lead is flat (peak-to-peak within
FLAT_RANGE_UV for FLAT_SECONDS consecutive seconds of its 1 s grid: a disconnected electrode) or saturated (at least SATURATED_FRACTION
of its samples at the channel's physical limits, when the header gives them: clipped), is missing
for that modality: it is masked, like an absent modality.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from functools import lru_cache

import numpy as np
from scipy import signal
from numpy.lib.stride_tricks import sliding_window_view

from .modalities import EPOCH_SECONDS, MIN_INPUT_FS, MODALITIES, TARGET_FS, WINDOW_SAMPLES, check_modality
from .resampling import BlockPlan, block_plan, resample_blocked

SUPPORTED_RATES_NOTE = (
    f"any rate >= {MIN_INPUT_FS} Hz whose 30 s window is a whole number of samples "
    f"({MIN_INPUT_FS}-{TARGET_FS - 1} Hz: upsampled, band-limited to fs / 2)"
)
# Missing-data rules (module doc). A real EEG/EOG/EMG/ECG lead is never this still for 5 s: the
# amplifier noise alone is ~1 µV peak-to-peak.
FLAT_SECONDS = 5.0
FLAT_RANGE_UV = 0.5
SATURATED_FRACTION = 0.5
SATURATION_TOLERANCE = 1e-4  # of the physical range: "at the limit"
# Input rates above this are resampled by blocked matrix products (module doc, step 2). Rates up to
# it keep scipy's loop, bit for bit: the training data is 200 Hz.
BLOCKED_ABOVE_HZ = 2 * TARGET_FS


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
def _blocked_plan(up: int, down: int, n_in: int, pass_hz: float, stop_hz: float, atten_db: float) -> BlockPlan | None:
    """The blocked-product plan of the resampling filter for windows of n_in samples (None: use scipy's loop)."""
    return block_plan(up, down, n_in, _antialias_taps(up, down, pass_hz, stop_hz, atten_db))


@lru_cache(maxsize=16)
def _bandpass_sos(highpass_hz: float, hp_order: int, lowpass_hz: float | None, lp_order: int
                  ) -> tuple[np.ndarray, np.ndarray, int]:
    """(sos [sections, 6], steady-state zi [sections, 2], edge samples) of the band-pass, for `_filtfilt`."""
    sos = signal.butter(hp_order, highpass_hz, btype="highpass", fs=TARGET_FS, output="sos")
    if lowpass_hz is not None:
        low = signal.butter(lp_order, lowpass_hz, btype="lowpass", fs=TARGET_FS, output="sos")
        sos = np.vstack([sos, low])
    ntaps = 2 * len(sos) + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum()))
    # cached and shared by every call: never written to (scipy's sosfilt needs writable buffers)
    return sos, signal.sosfilt_zi(sos), 3 * ntaps  # scipy.signal.sosfiltfilt's default padlen


def _filtfilt(x: np.ndarray, sos: np.ndarray, zi: np.ndarray, edge: int) -> np.ndarray:
    """`scipy.signal.sosfiltfilt(sos, x, axis=-1)` (odd padding, default padlen), bit for bit, with the
    filter's steady state `zi` computed once per filter instead of on every call. x: [..., n] -> [..., n]."""
    if x.shape[-1] <= edge:
        raise ValueError(f"a window of {x.shape[-1]} samples is too short for the band-pass (needs > {edge})")
    left, right = x[..., :1], x[..., -1:]
    ext = np.concatenate([2 * left - x[..., edge:0:-1], x, 2 * right - x[..., -2:-(edge + 2):-1]], axis=-1)  # [..., n + 2 edge]
    zi = zi.reshape(len(sos), *([1] * (x.ndim - 1)), 2)  # [sections, 1.., 2]
    y, _ = signal.sosfilt(sos, ext, axis=-1, zi=zi * ext[..., :1])
    y, _ = signal.sosfilt(sos, y[..., ::-1], axis=-1, zi=zi * y[..., -1:])
    return y[..., ::-1][..., edge:-edge]  # [..., n]


def _antialias_edges(fs: float, config: PreprocessingConfig) -> tuple[float, float]:
    """(pass, stop) Hz of the resampling filter: the config's edges, scaled down to fs / 2 below 100 Hz."""
    stop = min(config.antialias_stop_hz, fs / 2)
    return config.antialias_pass_hz * stop / config.antialias_stop_hz, stop


def band_limit_hz(fs: float, modality: str, config: PreprocessingConfig = DEFAULT_CONFIG) -> float | None:
    """Upper edge (Hz) of what a `fs` Hz input carries when that is below the modality's band, else None.

    E.g. EEG at 50 Hz: 20 Hz (its band is 0.1-30 Hz); at >= 100 Hz nothing is lost (None).
    """
    if fs >= TARGET_FS:
        return None
    edge = _antialias_edges(fs, config)[0]
    band = min(config.lowpass_hz[modality] or np.inf, config.antialias_pass_hz)
    return round(edge, 3) if edge < band else None


def window_length(fs: float) -> int:
    """Samples in one 30 s window at `fs`; raises for rates the model cannot take."""
    if not np.isfinite(fs) or fs < MIN_INPUT_FS:
        raise ValueError(f"sampling rate {fs} Hz is below {MIN_INPUT_FS} Hz; accepted: {SUPPORTED_RATES_NOTE}")
    n = EPOCH_SECONDS * fs
    if not np.isfinite(n) or abs(n - round(n)) > 1e-6:
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
    up, down = _rational(fs)
    pass_hz, stop_hz = _antialias_edges(fs, config)
    blocked = fs > BLOCKED_ABOVE_HZ
    plan = _blocked_plan(up, down, expected, pass_hz, stop_hz, config.antialias_atten_db) if blocked else None
    raw = x
    if plan is not None:
        x, mean = resample_blocked(raw, plan)  # [..., 3000] with the window's mean removed, [..., 1]
    else:
        mean = raw.mean(axis=-1, keepdims=True)  # [..., 1]
    if not np.all(np.isfinite(mean)):  # the mean is not finite when a sample is not
        if not np.all(np.isfinite(raw)):
            raise ValueError(f"{modality}: window contains NaN or Inf; send finite values in µV")
        raise ValueError(f"{modality}: values too large to sum in float64; send the signal in µV")
    if plan is None:
        x = x - mean  # [..., n]
        if (up, down) != (1, 1):
            taps = _antialias_taps(up, down, pass_hz, stop_hz, config.antialias_atten_db)
            x = signal.resample_poly(x, up, down, axis=-1, window=taps)  # [..., 3000]
    sos, zi, edge = _bandpass_sos(config.highpass_hz, config.highpass_order, config.lowpass_hz[modality],
                                  config.lowpass_order)
    x = _filtfilt(x, sos, zi, edge)  # [..., 3000], a new array (a view of one)
    x /= config.scale_uv[modality]
    np.clip(x, -config.clip, config.clip, out=x)
    return np.ascontiguousarray(x, dtype=np.float32)


def missing_windows(
    x: np.ndarray, fs: float, limits: tuple[float, float] | None = None, step: float | None = None
) -> np.ndarray:
    """Raw windows [..., 30 * fs] in µV -> [...] bool: True where the window is missing data.

    Missing: any sample not finite, a flat stretch (peak-to-peak <= FLAT_RANGE_UV µV, or <= 2
    quantisation `step`s when the header gives a coarser one: a lead off jitters by one count, over
    FLAT_SECONDS consecutive seconds of the window's 1 s grid), or, when the channel's physical `limits` (low, high) µV are known (EDF physical
    range, WFDB ADC range), saturation: >= SATURATED_FRACTION of the samples at a limit. A lead stuck
    at one limit is also flat, so windows without known limits (/predict) catch it too.
    """
    x = np.asarray(x, dtype=np.float64)
    is_finite = np.isfinite(x)
    finite = is_finite.all(axis=-1)  # [...]
    if not finite.all():
        x = np.where(is_finite, x, 0.0)
    starts = np.round(np.arange(EPOCH_SECONDS) * x.shape[-1] / EPOCH_SECONDS).astype(np.intp)  # the 1 s grid
    span = int(FLAT_SECONDS)
    high = sliding_window_view(np.maximum.reduceat(x, starts, axis=-1), span, axis=-1).max(axis=-1)  # [..., 26]
    low = sliding_window_view(np.minimum.reduceat(x, starts, axis=-1), span, axis=-1).min(axis=-1)  # [..., 26]
    flat = (high - low <= max(FLAT_RANGE_UV, 2 * (step or 0.0))).any(axis=-1)  # [...]
    if limits is None:
        return ~finite | flat
    low, high = min(limits), max(limits)
    near = SATURATION_TOLERANCE * (high - low)
    saturated = ((x <= low + near) | (x >= high - near)).mean(axis=-1) >= SATURATED_FRACTION  # [...]
    return ~finite | flat | saturated


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
