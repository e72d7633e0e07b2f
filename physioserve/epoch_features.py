"""Spectral features of each preprocessed 30 s epoch: what the night-context model reads besides the embedding.

The encoder's embedding is learnt on synthetic nights at a CPU budget; the features YASA's staging
rests on (log band powers of EEG, EOG and EMG, z-scored per night: Vallat & Walker 2021, eLife
10:e70092) are cheap, gain-free after the per-night z-scoring of the context model, and carry the
stage cues a scorer uses (AASM: slow waves 0.5-2 Hz for N3, theta for N1/REM, alpha for eyes-closed
wake, sigma for spindles, chin EMG tone). The context model takes both (training/context.py).

    signals [n, 4, 3000] (the one preprocessing's output: 100 Hz, µV / scale_uv) -> features [n, N_FEATURES]

Per epoch and modality, a Welch spectrum (4 s Hann segments, 50 % overlap: 14 segments, 0.25 Hz
bins), then log10 of the mean power spectral density in each band of `BANDS` (Hz, lower edge
included, upper excluded) and over the modality's `TOTAL` band. Units: log10 of (preprocessed
units)^2 / Hz, i.e. of (µV / scale_uv)^2 / Hz. A modality absent from an epoch (mask False) gives
zeros; `FEATURE_MODALITY` names the modality index of each feature column so that the model can mask them.
"""

from __future__ import annotations

import numpy as np

from .modalities import MODALITIES, MODALITY_INDEX, TARGET_FS, WINDOW_SAMPLES

SEGMENT = 4 * TARGET_FS  # 400 samples: 0.25 Hz resolution, enough for the 0.5-1 Hz band
STEP = SEGMENT // 2
EPS = 1e-6  # floor of a band's density (preprocessed units^2 / Hz): a flat lead gives -6

# bands per modality (Hz): EEG and EOG after the AASM / YASA bands, split finer where stages differ;
# EMG: chin tone above the EEG/EOG band; ECG: its low and high band (heart rate and QRS energy)
_EEG_BANDS = ((0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, 6.0), (6.0, 8.0), (8.0, 10.0), (10.0, 12.0),
              (12.0, 14.0), (14.0, 16.0), (16.0, 20.0), (20.0, 30.0))
BANDS: dict[str, tuple[tuple[float, float], ...]] = {
    "eeg": _EEG_BANDS,
    "eog": _EEG_BANDS,
    "emg": ((10.0, 20.0), (20.0, 30.0), (30.0, 40.0)),
    "ecg": ((0.5, 5.0), (5.0, 40.0)),
}
TOTAL: dict[str, tuple[float, float]] = {"eeg": (0.5, 30.0), "eog": (0.5, 30.0), "emg": (10.0, 40.0), "ecg": (0.5, 40.0)}

FEATURE_NAMES: tuple[str, ...] = tuple(
    name for m in MODALITIES for name in ([f"{m}_{lo:g}-{hi:g}Hz" for lo, hi in BANDS[m]] + [f"{m}_total"]))
FEATURE_MODALITY: np.ndarray = np.array(
    [MODALITY_INDEX[m] for m in MODALITIES for _ in range(len(BANDS[m]) + 1)], np.int64)  # [N_FEATURES]
N_FEATURES = len(FEATURE_NAMES)  # 12 + 12 + 4 + 3 = 31

_FREQS = np.fft.rfftfreq(SEGMENT, 1.0 / TARGET_FS)  # [201]
_WINDOW = np.hanning(SEGMENT).astype(np.float32)
_STARTS = np.arange(0, WINDOW_SAMPLES - SEGMENT + 1, STEP)  # 14 segment starts


def _band_matrix() -> np.ndarray:
    """[201 bins, N_FEATURES]: 1 / (bins in band) at each feature's bins, per modality's block."""
    columns = []
    for m in MODALITIES:
        for lo, hi in (*BANDS[m], TOTAL[m]):
            sel = (_FREQS >= lo) & (_FREQS < hi)
            columns.append(sel / sel.sum())
    return np.stack(columns, axis=1).astype(np.float32)


_BAND_MATRIX = _band_matrix()
_BLOCKS = [np.flatnonzero(FEATURE_MODALITY == i) for i in range(len(MODALITIES))]


def welch_power(x: np.ndarray) -> np.ndarray:
    """x [..., 3000] -> Welch PSD [..., 201] (units^2 / Hz, one-sided, 0.25 Hz bins): the mean of its 14 Hann segments' periodograms."""
    segments = np.stack([x[..., s : s + SEGMENT] for s in _STARTS], axis=-2)  # [..., 14, 400]
    segments = segments - segments.mean(-1, keepdims=True)
    spectrum = np.fft.rfft(segments * _WINDOW, axis=-1)  # [..., 14, 201]
    return (np.abs(spectrum) ** 2).mean(-2) * (2.0 / (TARGET_FS * np.sum(_WINDOW ** 2)))  # [..., 201]


def epoch_features(signals: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Preprocessed windows [n, 4, 3000] and modality mask [n, 4] bool -> features [n, N_FEATURES] float32.

    Raises ValueError for other shapes. Absent modalities (mask False) give zeros."""
    signals = np.asarray(signals)
    mask = np.asarray(mask, bool)
    if signals.ndim != 3 or signals.shape[1:] != (len(MODALITIES), WINDOW_SAMPLES) or mask.shape != signals.shape[:2]:
        raise ValueError(f"epoch_features: signals {signals.shape} / mask {mask.shape}, expected "
                         f"[n, {len(MODALITIES)}, {WINDOW_SAMPLES}] / [n, {len(MODALITIES)}]")
    out = np.zeros((len(signals), N_FEATURES), np.float32)
    for i, cols in enumerate(_BLOCKS):
        rows = np.flatnonzero(mask[:, i])
        if len(rows):
            power = welch_power(signals[rows, i].astype(np.float32))  # [k, 201]
            out[np.ix_(rows, cols)] = np.log10(power @ _BAND_MATRIX[:, cols] + EPS)
    return out
