"""EEG (6 derivations), EOG (E1-M2) and chin EMG from the night's control signals.

EEG = bilateral band-limited sources (delta, theta, alpha, beta, 1/f background) with stage- and
time-varying envelopes, mixed into F3/F4/C3/C4/O1/O2 with topographic gains (delta frontal, alpha
occipital, theta and vertex waves central, slow spindles frontal, fast spindles central), plus
transient events stamped at Poisson times: spindles, K-complexes, vertex sharp waves, sawtooth
waves; plus leakage of eye movements, scalp muscle and ECG, as in real mastoid-referenced montages.
EOG = saccades (steps in eye position seen through the amplifier's 0.3 Hz high-pass), blinks, slow
rolling eye movements, and the frontal EEG that E1-M2 picks up. Chin EMG = broadband muscle noise
whose envelope is the stage's tone, arousal bursts and REM twitches, with ECG and snoring leakage.
All amplitudes are in µV.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from ._dsp import FS, band_noise, gate, poisson_events, stamp, uniform_process, upsample
from .subject import Subject

# Topographic gains over (F3, F4, C3, C4, O1, O2).
TOPO = {
    "delta": np.array([1.0, 1.0, 0.85, 0.85, 0.55, 0.55]),
    "theta": np.array([0.85, 0.85, 1.0, 1.0, 0.75, 0.75]),
    "alpha": np.array([0.4, 0.4, 0.55, 0.55, 1.0, 1.0]),
    "beta": np.array([1.0, 1.0, 0.9, 0.9, 0.8, 0.8]),
    "pink": np.array([1.0, 1.0, 0.95, 0.95, 0.9, 0.9]),
    "spindle_slow": np.array([1.0, 1.0, 0.7, 0.7, 0.3, 0.3]),
    "spindle_fast": np.array([0.6, 0.6, 1.0, 1.0, 0.55, 0.55]),
    "kc": np.array([1.0, 1.0, 0.8, 0.8, 0.4, 0.4]),
    "vertex": np.array([0.7, 0.7, 1.0, 1.0, 0.35, 0.35]),
    "sawtooth": np.array([0.8, 0.8, 1.0, 1.0, 0.4, 0.4]),
    "scalp_emg": np.array([1.0, 1.0, 0.45, 0.45, 0.8, 0.8]),
    "eye_h": np.array([0.12, -0.12, 0.03, -0.03, 0.0, 0.0]),
    "eye_v": np.array([0.25, 0.25, 0.06, 0.06, 0.01, 0.01]),
}
LEFT = np.array([True, False, True, False, True, False])
_OWN, _OTHER = 0.85, float(np.sqrt(1 - 0.85**2))  # hemispheric coherence of the band sources


def _gauss(t, mu, sigma):
    return np.exp(-0.5 * ((t - mu) / sigma) ** 2)


def _add_bilateral(x: np.ndarray, env: np.ndarray, left: np.ndarray, right: np.ndarray, topo: np.ndarray) -> None:
    a, b = env * left, env * right  # [n] each
    for ch in range(6):
        own, other = (a, b) if LEFT[ch] else (b, a)
        x[ch] += topo[ch] * (_OWN * own + _OTHER * other)


def _spindles(rng, n: int, times: np.ndarray, s: Subject, hz: float) -> np.ndarray:
    k = len(times)
    amp = (s.spindle_uv * np.exp(0.3 * rng.standard_normal(k)))[:, None]
    dur = np.clip(s.spindle_dur_s * np.exp(0.3 * rng.standard_normal(k)), 0.5, 2.0)[:, None]
    freq = (hz + 0.35 * rng.standard_normal(k))[:, None]
    phase = rng.uniform(0, 2 * np.pi, k)[:, None]

    def wave(t):
        inside = np.abs(t) < dur / 2
        return np.where(inside, amp * np.sin(np.pi * (t / dur + 0.5)) ** 2 * np.sin(2 * np.pi * freq * t + phase), 0.0)

    return stamp(n, times, 1.0, 1.0, wave)


def _k_complexes(rng, n: int, times: np.ndarray, s: Subject) -> np.ndarray:
    amp = (s.kc_uv * np.exp(0.3 * rng.standard_normal(len(times))))[:, None]
    width = rng.uniform(0.09, 0.15, len(times))[:, None]

    def wave(t):  # small P200, sharp negative N550 (negative = upward in EEG convention), slow P900
        return amp * (0.15 * _gauss(t, -0.25, 0.05) - _gauss(t, 0.0, width) + 0.45 * _gauss(t, 0.45, 0.2))

    return stamp(n, times, 0.6, 1.2, wave)


def _vertex_waves(rng, n: int, times: np.ndarray) -> np.ndarray:
    amp = (55.0 * np.exp(0.35 * rng.standard_normal(len(times))))[:, None]

    def wave(t):
        return amp * (0.3 * _gauss(t, 0.12, 0.06) - _gauss(t, 0.0, 0.045))

    return stamp(n, times, 0.3, 0.4, wave)


def _sawtooth(rng, n: int, times: np.ndarray) -> np.ndarray:
    k = len(times)
    amp = (40.0 * np.exp(0.35 * rng.standard_normal(k)))[:, None]
    freq = rng.uniform(2.0, 4.5, k)[:, None]
    dur = (rng.integers(3, 8, k) / freq[:, 0])[:, None]

    def wave(t):
        inside = (t >= 0) & (t < dur)
        taper = np.sin(np.pi * np.clip(t / dur, 0, 1)) ** 0.5
        return np.where(inside, amp * taper * signal.sawtooth(2 * np.pi * freq * t, 0.8), 0.0)

    return stamp(n, times, 0.0, 4.0, wave)


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


def eeg(rng, n: int, c: dict, s: Subject, eye_h: np.ndarray, eye_v: np.ndarray, ecg_uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """EEG [6, n] float32 in µV, and the brain part of F3 (before leakage) that E1-M2 also sees."""
    m = len(c["delta_frac"])
    x = np.zeros((6, n), np.float32)
    suppress = np.clip(1.0 - 0.8 * c["arousal"], 0.05, 1.0)  # arousals suppress delta and spindles
    # Slow waves: on for about delta_frac of the time, at the subject's amplitude.
    on = gate(c["delta_frac"], uniform_process(rng, m, 3.0))
    env = upsample((c["delta_bg_uv"] + s.delta_uv * on * c["depth_mod"]) * suppress, n)
    _add_bilateral(x, env, band_noise(rng, n, 0.5, 2.0, decim=10), band_noise(rng, n, 0.5, 2.0, decim=10), TOPO["delta"])
    env = upsample(c["theta_uv"] * s.theta_gain * (1 + 0.8 * c["arousal_theta"]), n)
    _add_bilateral(x, env, band_noise(rng, n, 4.0, 7.0, order=3, decim=2), band_noise(rng, n, 4.0, 7.0, order=3, decim=2), TOPO["theta"])
    alpha_frac = np.maximum(c["alpha_frac"], c["arousal_alpha"])
    on = gate(alpha_frac, uniform_process(rng, m, 2.0))
    env = upsample(s.alpha_uv * (0.1 + 0.9 * on) * c["alpha_mod"], n)
    lo, hi = s.alpha_hz - 1.0, s.alpha_hz + 1.0
    _add_bilateral(x, env, band_noise(rng, n, lo, hi, order=3), band_noise(rng, n, lo, hi, order=3), TOPO["alpha"])
    env = upsample(c["beta_uv"] * s.beta_gain * (1 + 2.0 * c["arousal_beta"]), n)
    _add_bilateral(x, env, band_noise(rng, n, 16.0, 30.0), band_noise(rng, n, 16.0, 30.0), TOPO["beta"])
    env = upsample(c["sigma_uv"] * (0.5 + 0.5 * s.spindle_uv / 30.0) * suppress, n)
    lo, hi = s.spindle_fast_hz - 1.5, s.spindle_fast_hz + 1.0
    _add_bilateral(x, env, band_noise(rng, n, lo, hi), band_noise(rng, n, lo, hi), TOPO["spindle_fast"])
    env = upsample(c["pink_uv"], n)
    _add_bilateral(x, env, band_noise(rng, n, 0.3, 2.5, order=1), band_noise(rng, n, 0.3, 2.5, order=1), TOPO["pink"])

    # Transients.
    rate = c["spindle_rate"] * s.spindle_per_min * suppress
    slow = _spindles(rng, n, poisson_events(rng, 0.4 * rate), s, s.spindle_slow_hz)
    fast = _spindles(rng, n, poisson_events(rng, 0.6 * rate), s, s.spindle_fast_hz)
    kc_times = np.sort(np.concatenate([poisson_events(rng, c["kc_rate"] * s.kc_per_min), c["arousal_kc_times"]]))
    kc = _k_complexes(rng, n, kc_times, s)
    follow = kc_times[rng.random(len(kc_times)) < 0.3] + 0.5 * FS  # K-complex followed by a spindle
    fast += _spindles(rng, n, follow, s, s.spindle_fast_hz)
    vertex = _vertex_waves(rng, n, poisson_events(rng, c["vertex_rate"]))
    saw = _sawtooth(rng, n, poisson_events(rng, c["sawtooth_rate"]))
    for ch in range(6):
        x[ch] += TOPO["spindle_slow"][ch] * slow + TOPO["spindle_fast"][ch] * fast
        x[ch] += TOPO["kc"][ch] * kc + TOPO["vertex"][ch] * vertex + TOPO["sawtooth"][ch] * saw
    x *= s.eeg_gain[:, None].astype(np.float32)
    brain_f3 = x[0].copy()

    # Leakage: scalp muscle, eyes, heart.
    muscle = band_noise(rng, n, 20.0, 90.0) * upsample(c["emg_uv"] * s.emg_gain * s.scalp_emg, n)
    for ch in range(6):
        x[ch] += TOPO["scalp_emg"][ch] * muscle + TOPO["eye_h"][ch] * eye_h + TOPO["eye_v"][ch] * eye_v
        if s.ecg_leak[ch] > 0:
            x[ch] += s.ecg_leak[ch] * ecg_uv
    return x, brain_f3


def eog(eye_h: np.ndarray, eye_v: np.ndarray, brain_f3: np.ndarray, s: Subject) -> np.ndarray:
    """E1-M2 in µV: horizontal movements, part of the blinks, and the frontal EEG under the electrode."""
    return eye_h - 0.4 * eye_v + s.eeg_in_eog * brain_f3


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
    out = band_noise(rng, n, 15.0, 95.0, order=3) * env
    out += s.emg_ecg_leak * ecg_uv
    return out
