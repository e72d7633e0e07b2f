"""Recording artifacts: electrode noise, line noise, sweat, electrode pops, body movement, bad leads.

The failure modes of the AASM manual's technical section and of PSG artifact reviews (Anderer et
al., Neuropsychobiology 40:150, 1999; Tatum et al., J Clin Neurophysiol 28:252, 2011):
- electrode and amplifier noise, white, per channel; about 8 % of electrodes have a high
  impedance (4x the noise);
- line noise at the site's mains frequency (50/60 Hz), per channel, strong in 10 % of recordings;
- baseline wander (slow drift) on every channel, and sweat episodes on EEG/EOG (0.05-0.5 Hz sway of
  tens of µV lasting minutes, about one per 8 h of recording x the site's artefact factor);
- electrode pops: a step and exponential return, 0.4 per hour per channel x the artefact factor;
- body movements (`movement` envelope): large low-frequency swings plus muscle;
- a flat (electrode off), disconnected (noise and mains) or noisy lead in 12 % of recordings x the
  artefact factor, for the whole night or from some point on.
Levels are per recording and channel (`Quality`), in µV for EEG/EOG/EMG; the belts and airflow use
the same draws times their scale, ECG (mV) times 1/1000. SaO2 gets none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._dsp import FS, band_noise, poisson_events, stamp, upsample
from .sites import SiteProfile

# Per modality: artifact scale (EEG/EOG/EMG µV, belts and airflow, SaO2 none, ECG mV), baseline
# wander scale and band, and the low-/high-frequency gains of body movements.
_SCALE = {"eeg": 1.0, "eog": 1.0, "emg": 1.0, "resp": 25.0, "sao2": 0.0, "ecg": 0.001}
_WANDER = {"eeg": (1.0, 0.03, 0.5), "eog": (1.5, 0.03, 0.5), "emg": (0.15, 0.03, 0.5),
           "resp": (25.0, 0.005, 0.05), "sao2": (0.0, 0.03, 0.5), "ecg": (0.01, 0.03, 0.5)}
_MOVE = {"eeg": (0.9, 0.45), "eog": (1.4, 0.6), "emg": (0.5, 3.0), "resp": (6.0, 0.0), "sao2": (0.0, 0.0),
         "ecg": (0.0005, 0.0004)}


@dataclass(frozen=True)
class Quality:
    """Per-recording quality, one entry per channel (units as in the module doc)."""

    noise_uv: np.ndarray  # white noise RMS
    mains_uv: np.ndarray  # line-noise amplitude
    wander_uv: np.ndarray  # baseline wander RMS
    pops_per_hour: np.ndarray
    sweat_per_hour: float
    bad_channel: int  # index of a flat/disconnected/noisy lead, -1 if none
    bad_kind: str  # "flat" | "disconnected" | "noisy" | ""
    bad_from: float  # fraction of the night from which it is bad


def draw_quality(rng: np.random.Generator, kinds: tuple[str, ...], site: SiteProfile) -> Quality:
    """Quality of one recording of the channels `kinds` (see `hardware.kinds`) at `site`."""
    n_ch = len(kinds)

    def ln(sigma: float, size=None):
        return np.exp(sigma * rng.standard_normal(size))

    noise = 0.5 * site.noise * ln(0.5, n_ch)
    noise[rng.random(n_ch) < 0.08] *= 4.0  # a few high-impedance electrodes
    mains = 0.6 * site.mains * ln(1.0, n_ch) * (8.0 if rng.random() < 0.1 else 1.0)
    bad_channel, bad_kind, bad_from = -1, "", 1.0
    candidates = [i for i, k in enumerate(kinds) if k not in ("sao2", "ecg")]
    if rng.random() < min(0.12 * site.artifacts, 0.6):
        bad_channel = int(rng.choice(candidates))
        bad_kind = str(rng.choice(["flat", "disconnected", "noisy"], p=[0.35, 0.25, 0.4]))
        bad_from = float(rng.choice([0.0, rng.uniform(0.1, 0.9)]))
    return Quality(
        noise_uv=noise, mains_uv=mains, wander_uv=2.0 * ln(0.6, n_ch),
        pops_per_hour=0.4 * site.artifacts * ln(1.0, n_ch), sweat_per_hour=0.12 * site.artifacts * float(ln(0.5)),
        bad_channel=bad_channel, bad_kind=bad_kind, bad_from=bad_from,
    )


def add_artifacts(
    rng: np.random.Generator, x: np.ndarray, kinds: tuple[str, ...], q: Quality, site: SiteProfile,
    movement: np.ndarray, movement_gain: float,
) -> None:
    """Add artifacts in place to x [C, n] (physical units); `movement` is a control-grid envelope."""
    n = x.shape[1]
    t = np.arange(n, dtype=np.float64) / FS
    mains_sin = np.sin(2 * np.pi * site.mains_hz * t).astype(np.float32)
    mains_cos = np.cos(2 * np.pi * site.mains_hz * t).astype(np.float32)
    del t
    sweat = _sweat(rng, n, q.sweat_per_hour)
    for ch, kind in enumerate(kinds):
        scale = _SCALE[kind]
        if scale == 0:
            continue
        x[ch] += (scale * q.noise_uv[ch]) * rng.standard_normal(n, dtype=np.float32)
        phi = rng.uniform(0, 2 * np.pi)
        if kind != "ecg":  # the mains field reaches the electrodes and belt leads, hardly the ECG amplitude
            x[ch] += (scale * q.mains_uv[ch]) * (np.cos(phi) * mains_sin + np.sin(phi) * mains_cos)
        w_scale, lo, hi = _WANDER[kind]
        x[ch] += (w_scale * q.wander_uv[ch]) * band_noise(rng, n, lo, hi, decim=20)
        if sweat is not None and kind in ("eeg", "eog"):
            x[ch] += rng.uniform(0.6, 1.4) * sweat
        pops = poisson_events(rng, np.full(n // 20 + 2, q.pops_per_hour[ch] / 60.0))
        if len(pops):
            amp = (scale * 150.0 * rng.choice([-1, 1], len(pops)) * np.exp(0.5 * rng.standard_normal(len(pops))))[:, None]
            tau = rng.uniform(0.3, 2.0, len(pops))[:, None]
            x[ch] += stamp(n, pops, 0.0, 8.0, lambda tt, amp=amp, tau=tau: amp * np.where(tt >= 0, np.exp(-tt / tau), 0.0)).astype(np.float32)
    if np.any(movement > 0):
        env = upsample(movement * movement_gain, n)
        lf = band_noise(rng, n, 0.3, 8.0, decim=4) * env
        hf = band_noise(rng, n, 20.0, 95.0) * env
        for ch, kind in enumerate(kinds):
            g_lf, g_hf = _MOVE[kind]
            if g_lf:
                x[ch] += (150.0 * g_lf * rng.uniform(0.5, 1.5)) * lf
            if g_hf:
                x[ch] += (60.0 * g_hf) * hf
    if q.bad_channel >= 0:
        ch, start = q.bad_channel, int(q.bad_from * n)
        scale = _SCALE[kinds[ch]]
        if q.bad_kind == "flat":  # electrode off, amplifier at a constant
            x[ch, start:] = np.float32(rng.uniform(-50, 50) * scale)
        elif q.bad_kind == "disconnected":  # floating input: large noise and mains
            x[ch, start:] = (scale * rng.uniform(40, 120)) * rng.standard_normal(n - start, dtype=np.float32)
            x[ch, start:] += (scale * rng.uniform(50, 300)) * mains_sin[start:]
        else:  # high impedance from some point on
            x[ch, start:] += (scale * rng.uniform(10, 40)) * rng.standard_normal(n - start, dtype=np.float32)
            x[ch, start:] += (scale * rng.uniform(5, 30)) * mains_sin[start:]


def _sweat(rng: np.random.Generator, n: int, per_hour: float) -> np.ndarray | None:
    """Sweat episodes: slow (0.05-0.5 Hz) sway of 20-80 µV RMS, 2-15 min each, ramped; None if none."""
    hours = n / FS / 3600
    k = rng.poisson(per_hour * hours)
    if k == 0:
        return None
    m = n // 20 + 2
    env = np.zeros(m)
    for _ in range(k):
        start = rng.uniform(0, m)
        length = rng.uniform(120, 900) * FS / 20
        i = np.arange(int(np.ceil(start)), min(int(start + length), m))
        env[i] = np.maximum(env[i], rng.uniform(20, 80) * np.sin(np.pi * np.clip((i - start) / length, 0, 1)) ** 0.5)
    return band_noise(rng, n, 0.05, 0.5, decim=20) * upsample(env, n)
