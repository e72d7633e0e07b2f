"""The eyes and the chin: eye potentials (seen by E1/E2 and frontal EEG through `montage`) and chin EMG.

Eyes (AASM manual v2.6, EOG rules): saccades and rapid eye movements (conjugate, sharply peaked,
initial deflection < 500 ms; a new gaze position at each event, reached in ~40 ms, seen through the
EOG amplifier's 0.3 Hz high-pass), slow rolling eye movements (0.15-0.6 Hz, drowsy wake and N1),
blinks (0.2-0.5 s, eyes open). The potentials are at unit topographic gain (the E1 electrode);
`eeg` projects them onto every derivation. Chin EMG: broadband muscle noise whose envelope is the
stage's tone (highest in wake, lowest in REM: atonia), arousal bursts and REM twitches, with ECG
and snoring leakage. All amplitudes are in µV.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from ._dsp import FS, band_noise, poisson_events, stamp, upsample
from .subject import Subject


def _gauss(t, mu, sigma):
    return np.exp(-0.5 * ((t - mu) / sigma) ** 2)


def eye_signals(rng, n: int, c: dict, s: Subject) -> tuple[np.ndarray, np.ndarray]:
    """(horizontal, vertical) eye potentials at E1 in µV: saccades/REMs, slow rolling movements, blinks."""
    # Saccades and REMs: a new gaze target at each event; the position ramps there in ~40 ms.
    times = poisson_events(rng, c["saccade_rate"])
    target = s.eog_uv * rng.standard_normal(len(times))
    steps = np.diff(np.concatenate([[0.0], target]))
    velocity = stamp(n, times, 0.0, 0.05, lambda t: np.where(t < 0.04, 1.0 / (0.04 * FS), 0.0) * steps[:, None])
    position = np.cumsum(velocity)
    hp = signal.butter(1, 0.3, btype="highpass", fs=FS, output="sos")  # AC-coupled EOG amplifier
    horizontal = signal.sosfilt(hp, position).astype(np.float32)
    sem = band_noise(rng, n, 0.15, 0.6, decim=20)
    horizontal += upsample(c["sem_uv"] * s.sem_gain, n) * sem
    blinks = poisson_events(rng, c["blink_rate"])
    amp = (s.blink_uv * np.exp(0.3 * rng.standard_normal(len(blinks))))[:, None]
    vertical = stamp(n, blinks, 0.1, 0.5, lambda t: amp * np.where(t < 0.08, _gauss(t, 0.08, 0.04), _gauss(t, 0.08, 0.09)))
    return horizontal, vertical.astype(np.float32)


def chin_emg(rng, n: int, c: dict, s: Subject, ecg_uv: np.ndarray, resp_phase: np.ndarray) -> np.ndarray:
    """Chin1-Chin2 in µV: tone x broadband muscle noise, arousal bursts, REM twitches, ECG, snoring."""
    tone = c["emg_uv"] * s.emg_gain * (1.0 + c["arousal_emg"])  # [m]
    twitch_times = poisson_events(rng, c["twitch_rate"])
    k = len(twitch_times)
    amp = (12.0 * s.emg_gain * np.exp(0.5 * rng.standard_normal(k)))[:, None]
    dur = rng.uniform(0.05, 0.25, k)[:, None]
    twitches = stamp(n, twitch_times, 0.0, 0.25, lambda t: np.where(t < dur, amp * np.sin(np.pi * t / dur), 0.0))
    env = upsample(tone, n) + twitches.astype(np.float32)
    if s.snore_uv > 0:  # inspiratory snoring bursts in NREM sleep
        insp = np.clip(np.sin(resp_phase), 0, None) ** 2
        env += upsample(c["nrem"] * s.snore_uv, n) * insp.astype(np.float32)
    out = band_noise(rng, n, 10.0, 95.0, order=2) * env  # surface EMG: broad, most power 20-90 Hz (De Luca 1997)
    out += s.emg_ecg_leak * ecg_uv
    return out
