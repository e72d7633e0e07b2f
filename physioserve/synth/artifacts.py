"""Recording artifacts: electrode noise, 60 Hz mains, baseline wander, electrode pops, body movement,
and an occasional flat or noisy channel (the failure modes listed in the AASM manual's technical
section and in every PSG artifact review, e.g. Anderer et al. 1999).

Levels are per subject and per channel (`Subject.noise_uv`, `mains_uv`, ...), in µV for the
electrophysiological channels; the belts and airflow use the same draws times `_SCALE`, ECG (mV)
times 1/1000. SaO2 gets none of these.
"""

from __future__ import annotations

import numpy as np

from ._dsp import FS, band_noise, poisson_events, stamp, upsample
from .subject import CHANNEL_NAMES, Subject

# Per-channel scale of the artifact levels: EEG/EOG/EMG in µV, belts/airflow, SaO2 (none), ECG in mV.
_SCALE = np.array([1.0] * 8 + [25.0, 25.0, 25.0, 0.0, 0.001])
# Baseline wander: scale and band per channel (belts drift slowly, below the breathing band).
_WANDER_SCALE = np.array([1.0] * 6 + [1.5, 0.15, 25.0, 25.0, 25.0, 0.0, 0.01])
_WANDER_BAND = [(0.03, 0.5)] * 8 + [(0.005, 0.05)] * 3 + [(0.03, 0.5)] * 2
_SAO2 = CHANNEL_NAMES.index("SaO2")
_MOVE_LF = np.array([1.0, 1.0, 0.8, 0.8, 0.6, 0.6, 1.4, 0.5, 8.0, 8.0, 4.0, 0.0, 0.0005])  # per channel
_MOVE_HF = np.array([0.5, 0.5, 0.4, 0.4, 0.6, 0.6, 0.6, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0004])


def add_artifacts(rng: np.random.Generator, x: np.ndarray, s: Subject, movement: np.ndarray) -> None:
    """Add artifacts in place to x [13, n] (physical units); `movement` is a control-grid envelope."""
    n = x.shape[1]
    t = np.arange(n, dtype=np.float64) / FS
    mains_sin = np.sin(2 * np.pi * 60.0 * t).astype(np.float32)
    mains_cos = np.cos(2 * np.pi * 60.0 * t).astype(np.float32)
    del t
    for ch in range(x.shape[0]):
        scale = _SCALE[ch]
        if scale == 0:
            continue
        x[ch] += (scale * s.noise_uv[ch]) * rng.standard_normal(n, dtype=np.float32)
        phi = rng.uniform(0, 2 * np.pi)
        if ch < 11:  # the mains field reaches the electrodes and belts leads, hardly the ECG amplitude
            x[ch] += (scale * s.mains_uv[ch]) * (np.cos(phi) * mains_sin + np.sin(phi) * mains_cos)
        x[ch] += (_WANDER_SCALE[ch] * s.wander_uv[ch]) * band_noise(rng, n, *_WANDER_BAND[ch], decim=20)
        pops = poisson_events(rng, np.full(n // 20 + 2, s.pops_per_hour[ch] / 60.0))
        if len(pops):
            amp = (scale * 150.0 * rng.choice([-1, 1], len(pops)) * np.exp(0.5 * rng.standard_normal(len(pops))))[:, None]
            tau = rng.uniform(0.3, 2.0, len(pops))[:, None]
            x[ch] += stamp(n, pops, 0.0, 8.0, lambda tt, amp=amp, tau=tau: amp * np.where(tt >= 0, np.exp(-tt / tau), 0.0)).astype(np.float32)
    if np.any(movement > 0):
        env = upsample(movement * s.movement_gain, n)
        lf = band_noise(rng, n, 0.3, 8.0, decim=4) * env
        hf = band_noise(rng, n, 20.0, 95.0) * env
        for ch in range(x.shape[0]):
            if _MOVE_LF[ch]:
                x[ch] += (150.0 * _MOVE_LF[ch] * rng.uniform(0.5, 1.5)) * lf
            if _MOVE_HF[ch]:
                x[ch] += (60.0 * _MOVE_HF[ch]) * hf
    if s.bad_channel >= 0 and s.bad_channel != _SAO2:
        ch, start = s.bad_channel, int(s.bad_from * n)
        if s.bad_kind == "flat":  # electrode off: the amplifier sits at a constant
            x[ch, start:] = np.float32(rng.uniform(-50, 50) * _SCALE[ch])
        else:
            x[ch, start:] += (_SCALE[ch] * rng.uniform(40, 120)) * rng.standard_normal(n - start, dtype=np.float32)
            x[ch, start:] += (_SCALE[ch] * rng.uniform(10, 60)) * mains_sin[start:]
