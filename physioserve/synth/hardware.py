"""The recording chain: hardware filters, the site's sampling rate, its units.

Signals are generated at 200 Hz in µV (ECG in mV). A site's amplifier then filters them (a
first-order high-pass on EEG and EOG, a second-order low-pass on all electrophysiology; AASM manual
v2.6 recommends 0.3 Hz and 35 Hz for EEG display, systems record wider), the recorder samples them
at the site's rate (exact rational resampling with scipy's polyphase filter, which is also the
anti-aliasing filter), and the file stores them in the site's units.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from scipy import signal

from ._dsp import FS
from .sites import UNIT_SCALE, SiteProfile


def kinds(site: SiteProfile) -> tuple[str, ...]:
    """Modality of each channel of `site.channels`: eeg, eog, emg, resp, sao2, ecg."""
    return ("eeg",) * len(site.eeg) + ("eog",) * len(site.eog) + ("emg", "resp", "resp", "resp", "sao2", "ecg")


def apply_filters(x: np.ndarray, site: SiteProfile) -> None:
    """The site's hardware filters, in place on x [C, n] at 200 Hz (channels as in `site.channels`)."""
    kind = kinds(site)
    if site.highpass_hz > 0:
        sos = signal.butter(1, site.highpass_hz, btype="highpass", fs=FS, output="sos")
        for ch, k in enumerate(kind):
            if k in ("eeg", "eog"):
                x[ch] = signal.sosfilt(sos, x[ch]).astype(np.float32)
    if 0 < site.lowpass_hz < FS / 2:
        sos = signal.butter(2, site.lowpass_hz, btype="lowpass", fs=FS, output="sos")
        for ch, k in enumerate(kind):
            if k in ("eeg", "eog", "emg"):
                x[ch] = signal.sosfilt(sos, x[ch]).astype(np.float32)


def resample(x: np.ndarray, fs: int) -> np.ndarray:
    """x [C, n] at 200 Hz -> [C, round(n * fs / 200)] at fs (polyphase, exact rational ratio)."""
    if fs == FS:
        return x
    ratio = Fraction(int(fs), FS)
    y = signal.resample_poly(x, ratio.numerator, ratio.denominator, axis=-1).astype(np.float32)
    return y[:, : int(round(x.shape[1] * fs / FS))]


def to_units(x: np.ndarray, site: SiteProfile) -> np.ndarray:
    """µV (ECG mV) -> the site's units per channel, float32 [C, n]; SaO2 and breathing unchanged."""
    out = np.array(x, np.float32)
    for ch, k in enumerate(kinds(site)):
        if k in ("eeg", "eog", "emg"):
            out[ch] *= UNIT_SCALE[site.eeg_unit]
        elif k == "ecg":
            out[ch] *= UNIT_SCALE[site.ecg_unit] * 1000.0  # generated in mV
    return out
