"""EEG and EOG derivations: background spectrum, alpha, transients, and what the electrodes also pick up.

Every derivation (`C4-M1`, `C3-A2`, `Fpz-Cz`, `E1-M2` ...) is made the same way, from the night's
control signals (`physiology.controls`):
1. Background (`background.synthesise`): per second, the stage mixture of the design spectra of
   `norms.BACKGROUND_PSD` (C4-M1), split into four bands with their own topographies (delta
   frontal, theta central, the 8-13 Hz background posterior, beta diffuse) and per-epoch band
   modulations; the subject's spectral tilt and amplitude; alpha (a peak at the subject's alpha
   frequency, occipital, on while the eyes are closed in wake and partly in N1, in arousals and
   briefly in REM); scalp muscle (above 20 Hz, local, strongest at mastoids/ears and frontally).
2. Transients stamped at Poisson times with their topographic gain per derivation: spindles (slow
   frontal, fast centro-parietal; AASM manual v2.6: 11-16 Hz, >= 0.5 s; densities, durations and
   frequencies per subject, see `subject`), K-complexes (negative sharp wave then positive
   component, >= 0.5 s, frontal; Colrain 2005), slow waves (0.5-2 Hz, one negative half-wave then a
   positive one; incidence per epoch from the stage table, N3 >= 20 % of the epoch; Massimini et al.
   2004), vertex sharp waves (N1; < 0.5 s, central), sawtooth waves (REM; 2-6 Hz trains, central).
3. The eyes (`brain.eye_signals`: horizontal and vertical potential at unit gain) through the
   `eye_h`/`eye_v` topographies: large on E1/E2, small frontally; the cardiac field through the `ecg`
   topography (mastoid and ear references pick it up most).
All amplitudes are µV. Hardware filters, noise and artifacts come later (`artifacts`).
"""

from __future__ import annotations

import numpy as np

from . import background
from ._dsp import FS, STEP, ctrl_noise, poisson_events, stamp
from .montage import Derivation, coefficients, derivation, fields_of, power_gain
from .norms import background_psd
from .subject import Subject

# The four background bands (amplitude windows that sum to one, smooth in log-frequency) and the
# topography each uses; the reference derivation on which BACKGROUND_PSD is defined.
BANDS = (("delta", 0.0, 3.0), ("theta", 3.0, 7.0), ("alpha_bg", 7.0, 13.0), ("beta", 13.0, np.inf))
REFERENCE = derivation("C4-M1")
_F = background.FREQS


def _band_windows(freqs: np.ndarray) -> np.ndarray:
    """[4, F] amplitude windows with raised-cosine edges one octave wide in log-frequency, summing to 1."""
    x = np.log2(np.maximum(freqs, 1e-3))
    edges = [np.log2(3.0), np.log2(7.0), np.log2(13.0)]
    step = [np.clip((x - e) + 0.5, 0.0, 1.0) for e in edges]  # 0 -> 1 over one octave around e
    up = [0.5 - 0.5 * np.cos(np.pi * s) for s in step]
    return np.stack([1 - up[0], up[0] - up[1], up[1] - up[2], up[2]])


_WINDOWS = _band_windows(_F)


def _gauss(t, mu, sigma):
    return np.exp(-0.5 * ((t - mu) / sigma) ** 2)


def _spindles(rng, n: int, times: np.ndarray, s: Subject, hz: float) -> np.ndarray:
    k = len(times)
    amp = (s.spindle_uv * np.exp(0.35 * rng.standard_normal(k)))[:, None]
    dur = np.clip(s.spindle_dur_s * np.exp(0.3 * rng.standard_normal(k)), 0.5, 2.5)[:, None]
    freq = (hz + 0.4 * rng.standard_normal(k))[:, None]
    chirp = rng.uniform(-0.6, 0.0, k)[:, None]  # spindles slow down slightly towards their end
    phase = rng.uniform(0, 2 * np.pi, k)[:, None]

    def wave(t):
        inside = np.abs(t) < dur / 2
        f_t = freq + chirp * t / dur
        return np.where(inside, amp * np.sin(np.pi * (t / dur + 0.5)) ** 2 * np.sin(2 * np.pi * f_t * t + phase), 0.0)

    return stamp(n, times, 1.3, 1.3, wave)


def _k_complexes(rng, n: int, times: np.ndarray, s: Subject) -> np.ndarray:
    amp = (s.kc_uv * np.exp(0.3 * rng.standard_normal(len(times))))[:, None]
    width = rng.uniform(0.10, 0.16, len(times))[:, None]

    def wave(t):  # small P200, sharp negative N550 (negative up in EEG convention), slow positive P900
        return amp * (0.15 * _gauss(t, -0.28, 0.05) - _gauss(t, 0.0, width) + 0.5 * _gauss(t, 0.5, 0.22))

    return stamp(n, times, 0.6, 1.3, wave)


def _slow_waves(rng, n: int, times: np.ndarray, ptp_uv: np.ndarray) -> np.ndarray:
    """Slow oscillation cycles: negative half-wave (down state, 0.25-0.6 s) then positive (0.3-0.8 s).

    `ptp_uv` [K]: median peak-to-peak at the frontal maximum at each event (control `sw_uv`).
    """
    k = len(times)
    ptp = (ptp_uv * np.exp(0.3 * rng.standard_normal(k)))[:, None]
    t_neg = rng.uniform(0.25, 0.6, k)[:, None]
    t_pos = t_neg * rng.uniform(1.0, 1.5, k)[:, None]
    a_neg = ptp * 0.6

    def wave(t):
        neg = np.where((t >= 0) & (t < t_neg), -a_neg * np.sin(np.pi * t / t_neg), 0.0)
        pos = np.where((t >= t_neg) & (t < t_neg + t_pos), (ptp - a_neg) * np.sin(np.pi * (t - t_neg) / t_pos), 0.0)
        return neg + pos

    return stamp(n, times, 0.0, 1.8, wave)


def _vertex_waves(rng, n: int, times: np.ndarray) -> np.ndarray:
    amp = (50.0 * np.exp(0.35 * rng.standard_normal(len(times))))[:, None]

    def wave(t):
        return amp * (0.3 * _gauss(t, 0.12, 0.06) - _gauss(t, 0.0, 0.05))

    return stamp(n, times, 0.3, 0.4, wave)


def _sawtooth(rng, n: int, times: np.ndarray) -> np.ndarray:
    from scipy import signal

    k = len(times)
    amp = (30.0 * np.exp(0.35 * rng.standard_normal(k)))[:, None]
    freq = rng.uniform(2.0, 5.0, k)[:, None]
    dur = (rng.integers(3, 9, k) / freq[:, 0])[:, None]

    def wave(t):
        inside = (t >= 0) & (t < dur)
        taper = np.sin(np.pi * np.clip(t / dur, 0, 1)) ** 0.5
        return np.where(inside, amp * taper * signal.sawtooth(2 * np.pi * freq * t, 0.8), 0.0)

    return stamp(n, times, 0.0, 4.5, wave)


def _frame(c: dict, name: str, n: int) -> np.ndarray:
    return background.frame_values(c[name], n, STEP)


def _background(rng, n: int, c: dict, s: Subject, derivs: list[Derivation]) -> np.ndarray:
    """Background + alpha + sigma + scalp muscle for every derivation [D, n], µV."""
    fields = fields_of(derivs)
    # Stage spectra (power mixture of the stages present in each second), the subject's tilt.
    tilt = np.where(_F > 0, (np.maximum(_F, 0.5) / 10.0) ** s.eeg_tilt, 0.0)
    stage_psd = np.stack([background_psd(_F, k) for k in range(5)]) * tilt * s.eeg_power  # [5, F]
    weights = np.stack([_frame(c, f"stage_{k}", n) for k in range(5)], axis=1)  # [T, 5]
    base_amp = np.sqrt(weights @ stage_psd)  # [T, F]
    band_mod = np.stack([_frame(c, f"bg_{name}", n) for name, _, _ in BANDS], axis=1)  # [T, 4]
    band_coef = np.stack([coefficients(name, derivs, fields) / np.sqrt(power_gain(name, REFERENCE)) for name, _, _ in BANDS])
    # Alpha: a peak at the subject's frequency (PSD at O1-M2 scale); sigma: the spindle-band
    # activity between detectable spindles (the N2 spectrum's sigma peak), at the fast-spindle
    # frequency; scalp muscle above 20 Hz.
    def peak(hz: float, width: float) -> np.ndarray:
        return np.exp(-0.5 * ((_F - hz) / width) ** 2) / np.sqrt(2 * np.pi * width**2)  # unit power

    muscle_shape = np.where(_F > 0, (_F / 25.0) ** 2 / (1 + (_F / 25.0) ** 2), 0.0) / 50.0  # ~1 µV² over 20-70 Hz
    extra_shape = np.sqrt(np.stack([peak(s.alpha_hz, s.alpha_width_hz), peak(s.spindle_fast_hz - 0.5, 1.0), muscle_shape]))
    extra_coef = np.stack([coefficients("alpha", derivs, fields) / np.sqrt(power_gain("alpha", derivation("O1-M2"))),
                           coefficients("sigma", derivs, fields) / np.sqrt(power_gain("sigma", REFERENCE)),
                           coefficients("muscle", derivs, fields)])
    sigma_uv = s.spindle_uv * 0.08 * np.sqrt(s.spindle_per_min / 4.0)  # RMS on C4-M1 at spindle_rate 1
    extra_amp = np.stack([s.alpha_uv * _frame(c, "alpha_amp", n), sigma_uv * np.sqrt(np.maximum(_frame(c, "sigma_amp", n), 0.0)),
                          s.scalp_emg * _frame(c, "muscle_uv", n)], axis=1)
    # Bands follow the per-second stage spectrum (base); alpha and muscle get a quarter-period
    # phase so that their power adds to the background's on shared fields.
    groups = [
        (band_mod, _WINDOWS, band_coef, base_amp, False),
        (extra_amp, extra_shape, extra_coef, None, True),
    ]
    return background.synthesise(rng, n, groups)


def derivations(
    rng, n: int, c: dict, s: Subject, derivs: list[Derivation], eye_h: np.ndarray, eye_v: np.ndarray, ecg_uv: np.ndarray
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """All EEG and EOG derivations [D, n] float32 in µV (before hardware filters, noise, artifacts),
    and the transients' times (samples) by kind: slow_wave, k_complex, spindle, vertex, sawtooth."""
    x = _background(rng, n, c, s, derivs)
    m = len(c["sw_frac"])
    suppress = np.clip(1.0 - 0.8 * c["arousal"], 0.05, 1.0)  # arousals suppress slow waves and spindles
    # Slow waves: Poisson cycles at 55/min x sw_frac (one cycle ~ 1.1 s), clustered in trains.
    trains = np.exp(0.8 * ctrl_noise(rng, m, 4.0) - 0.32)  # mean ~1
    times = {"slow_wave": poisson_events(rng, 55.0 * c["sw_frac"] * trains * suppress)}
    ptp = c["sw_uv"][np.minimum(times["slow_wave"].astype(np.int64) // STEP, m - 1)]
    sw = _slow_waves(rng, n, times["slow_wave"], ptp)
    rate = c["spindle_rate"] * s.spindle_per_min * suppress
    slow_times, fast_times = poisson_events(rng, 0.4 * rate), poisson_events(rng, 0.6 * rate)
    slow = _spindles(rng, n, slow_times, s, s.spindle_slow_hz)
    fast = _spindles(rng, n, fast_times, s, s.spindle_fast_hz)
    times["k_complex"] = np.sort(np.concatenate([poisson_events(rng, c["kc_rate"] * s.kc_per_min), c["arousal_kc_times"]]))
    kc = _k_complexes(rng, n, times["k_complex"], s)
    kc_at = np.minimum(times["k_complex"].astype(np.int64) // STEP, m - 1)
    then_spindle = (rng.random(len(kc_at)) < 0.3) & (c["spindle_rate"][kc_at] > 0.05)  # in NREM
    follow = times["k_complex"][then_spindle] + 0.6 * FS  # a K-complex often followed by a spindle
    fast += _spindles(rng, n, follow, s, s.spindle_fast_hz)
    times["spindle"] = np.sort(np.concatenate([slow_times, fast_times, follow]))
    times["vertex"] = poisson_events(rng, c["vertex_rate"])
    vertex = _vertex_waves(rng, n, times["vertex"])
    times["sawtooth"] = poisson_events(rng, c["sawtooth_rate"])
    saw = _sawtooth(rng, n, times["sawtooth"])
    events = (("slow_wave", sw + kc), ("spindle_slow", slow), ("spindle_fast", fast), ("vertex", vertex),
              ("sawtooth", saw), ("eye_h", eye_h), ("eye_v", eye_v), ("ecg", s.ecg_field * ecg_uv))
    for i, d in enumerate(derivs):
        g = s.electrode_gain[d.active] * s.electrode_gain[d.reference]
        for component, wave in events:
            gain = d.gain(component)
            if gain:
                x[i] += np.float32(gain) * wave.astype(np.float32, copy=False)
        x[i] *= np.float32(np.sqrt(g))
    return x, times
