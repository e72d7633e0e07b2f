"""Vectorised building blocks of the generator: control signals, band-limited noise, event stamping.

Slow quantities (amplitudes, rates, heart rate, breathing phase) live on a 10 Hz control grid
(`STEP` = 20 samples at 200 Hz) and are upsampled linearly; fast ones are whole-night arrays at
200 Hz. Nothing loops over samples in Python.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage, signal

FS = 200  # Hz
STEP = 20  # samples per control step
CTRL_FS = FS / STEP  # 10 Hz control rate


def n_ctrl(n: int) -> int:
    """Control points covering n samples (point k sits at sample k * STEP)."""
    return n // STEP + 2


def upsample(ctrl: np.ndarray, n: int, step: int = STEP) -> np.ndarray:
    """Linear interpolation of a control signal (point k at sample k*step) to n samples, float32."""
    m = -(-n // step) + 1
    c = np.asarray(ctrl, np.float32)
    if len(c) < m:
        c = np.concatenate([c, np.full(m - len(c), c[-1], np.float32)])
    c = c[:m]
    w = (np.arange(step, dtype=np.float32) / step)[None, :]  # [1, step]
    out = c[:-1, None] * (1 - w) + c[1:, None] * w  # [m - 1, step]
    return out.reshape(-1)[:n]


def smooth(x: np.ndarray, seconds: float, fs: float = CTRL_FS) -> np.ndarray:
    """Moving average over `seconds` (edges held), e.g. to cross-fade stage parameters."""
    size = max(int(round(seconds * fs)), 1)
    return ndimage.uniform_filter1d(np.asarray(x, np.float64), size, mode="nearest")


@lru_cache(maxsize=64)
def _band_sos(lo: float | None, hi: float | None, fs: float, order: int) -> np.ndarray:
    if lo and hi:
        return signal.butter(order, [lo, hi], btype="bandpass", fs=fs, output="sos")
    if lo:
        return signal.butter(order, lo, btype="highpass", fs=fs, output="sos")
    return signal.butter(order, hi, btype="lowpass", fs=fs, output="sos")


def band_noise(
    rng: np.random.Generator, n: int, lo: float | None, hi: float | None, *, order: int = 2, decim: int = 1
) -> np.ndarray:
    """Unit-RMS Gaussian noise band-limited to [lo, hi] Hz at 200 Hz, float32.

    With `decim` > 1 it is made at 200/decim Hz and upsampled linearly (cheap for slow bands).
    """
    m = n // decim + 2
    x = rng.standard_normal(m)
    y = signal.sosfilt(_band_sos(lo, hi, FS / decim, order), x)
    y /= max(float(np.std(y[m // 20:])), 1e-12)  # skip the start-up transient
    if decim > 1:
        return upsample(y, n, decim)
    return y[:n].astype(np.float32)


def ctrl_noise(rng: np.random.Generator, m: int, seconds: float) -> np.ndarray:
    """Unit-variance smooth Gaussian process on the control grid, correlation time ~`seconds`."""
    x = rng.standard_normal(m + int(4 * seconds * CTRL_FS))
    y = ndimage.gaussian_filter1d(x, max(seconds * CTRL_FS / 2, 0.5), mode="wrap")[:m]
    return y / max(float(np.std(y)), 1e-12)


def gate(fraction: np.ndarray, u: np.ndarray, sharpness: float = 25.0) -> np.ndarray:
    """Soft on/off gate that is on for about `fraction` of the time: u ~ U(0, 1) is a slow process."""
    return 1.0 / (1.0 + np.exp(-sharpness * (fraction - u)))


def uniform_process(rng: np.random.Generator, m: int, seconds: float) -> np.ndarray:
    """Slow process with U(0, 1) marginals (Gaussian copula of `ctrl_noise`)."""
    from scipy.special import ndtr

    return ndtr(ctrl_noise(rng, m, seconds))


def poisson_events(rng: np.random.Generator, rate_per_min: np.ndarray) -> np.ndarray:
    """Event positions (float samples) of an inhomogeneous Poisson process given on the control grid."""
    lam = np.clip(np.asarray(rate_per_min, float), 0, None) * (STEP / FS) / 60.0
    counts = rng.poisson(lam)
    idx = np.repeat(np.arange(len(lam)), counts)
    return np.sort((idx + rng.random(len(idx))) * STEP)


def stamp(n: int, pos: np.ndarray, before_s: float, after_s: float, waveform) -> np.ndarray:
    """Sum of one waveform per event into a float64 [n] array.

    `waveform(t)` gets t [K, L] in seconds relative to each event position and returns [K, L];
    per-event parameters broadcast as [K, 1] arrays inside the closure.
    """
    pos = np.asarray(pos, float)
    out = np.zeros(n)
    if len(pos) == 0:
        return out
    before, length = int(np.ceil(before_s * FS)), int(np.ceil((before_s + after_s) * FS)) + 1
    start = np.floor(pos).astype(np.int64) - before
    idx = start[:, None] + np.arange(length)[None, :]  # [K, L]
    t = (idx - pos[:, None]) / FS  # [K, L]
    w = waveform(t)
    valid = (idx >= 0) & (idx < n)
    return np.bincount(idx[valid], weights=w[valid], minlength=n)


def region_envelope(m: int, regions: np.ndarray, ramp_s: float = 0.5, values=None) -> np.ndarray:
    """Control-grid envelope that is `values` (default 1) inside sample regions [K, 2], ramped edges."""
    env = np.zeros(m)
    regions = np.asarray(regions, np.int64).reshape(-1, 2)
    if len(regions) == 0:
        return env
    vals = np.ones(len(regions)) if values is None else np.asarray(values, float)
    lo = np.clip(regions[:, 0] // STEP, 0, m)
    hi = np.clip(-(-regions[:, 1] // STEP), 0, m)
    delta = np.zeros(m + 1)
    np.add.at(delta, lo, vals)
    np.add.at(delta, hi, -vals)
    env = np.cumsum(delta)[:m]
    return smooth(env, ramp_s) if ramp_s > 0 else env
