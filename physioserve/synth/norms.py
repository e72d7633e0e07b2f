"""Published sleep-EEG norms: the generator's background spectra and the ranges its output is checked against.

Two kinds of numbers live here, and only here:

1. `BACKGROUND_PSD`: the design spectrum of the ongoing (background) EEG per stage on `C4-M1`, in
   µV²/Hz at `BACKGROUND_NODES` Hz, interpolated log-log in between. Transients (spindles,
   K-complexes, slow waves, vertex and sawtooth waves), alpha, eye movements, scalp muscle and noise
   come on top (`eeg`). The shapes follow the per-stage mean spectra of healthy adults on central
   derivations: a 1/f^x fall-off with a knee below ~1 Hz and a steeper fall above ~15 Hz, flattest
   in wake and steepest in NREM/REM above 30 Hz (Lendner et al., eLife 9:e55092, 2020: aperiodic
   exponent by stage; Donoghue et al., Nat Neurosci 23:1655, 2020: aperiodic + periodic model);
   broad theta without a peak (theta rises in N1 and REM as a shoulder, not a peak: Ogilvie, Sleep
   Med Rev 5:247, 2001, on the sleep-onset period; Cantero et al., J Neurosci 23:10897, 2003, on
   REM theta); NREM delta 10-50x wake (Dijk, J Clin Sleep Med 5:S6, 2009; Carrier et al.,
   Psychophysiology 38:232, 2001); N1 and REM low voltage (AASM manual v2.6: "low amplitude,
   mixed frequency", predominantly 4-7 Hz). The levels were then set so that the total spectra meet
   the ranges of item 2 and the real clips in `shared/data/real/yasa` (W eyes open F4-A1/Cz-A2, N2,
   N3): see docs/SYNTHETIC.md for the plots.

2. `RANGES`: the per-stage summary the realism report checks (`bench/realism.py`): relative band
   powers of C4-M1 in YASA's bands, the 15-28 Hz log-log slope, amplitude ratios between stages and
   derivations, and event rates measured on the signals. Each row carries its source; where a source
   gives an ordering or a figure rather than a number, the range is our reading of it, and says so.
"""

from __future__ import annotations

import numpy as np

STAGES = ("W", "N1", "N2", "N3", "REM")
BACKGROUND_NODES = np.array([0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 11.0, 16.0, 24.0, 32.0, 48.0, 70.0])
# µV²/Hz on C4-M1, per stage (rows W N1 N2 N3 REM), at BACKGROUND_NODES. See the module doc, item 1.
BACKGROUND_PSD = np.array([
    [25.0, 14.0, 6.0, 3.0, 2.2, 1.8, 1.2, 0.60, 0.25, 0.13, 0.06, 0.03],   # W (alpha, muscle extra)
    [18.0, 12.0, 6.5, 5.0, 3.8, 2.2, 1.0, 0.42, 0.17, 0.09, 0.04, 0.02],  # N1 (theta-dominant)
    [110.0, 75.0, 26.0, 7.0, 3.5, 2.0, 1.2, 0.40, 0.12, 0.05, 0.018, 0.008],  # N2 (spindles, KCs extra)
    [250.0, 180.0, 55.0, 11.0, 5.0, 2.5, 1.3, 0.40, 0.12, 0.05, 0.018, 0.008],  # N3 (slow waves extra)
    [30.0, 19.0, 8.0, 4.5, 3.2, 2.0, 1.0, 0.40, 0.14, 0.065, 0.025, 0.011],  # REM (sawtooth extra)
])


def background_psd(freqs: np.ndarray, stage: int) -> np.ndarray:
    """Design background PSD (µV²/Hz, C4-M1) of `stage` at `freqs`, log-log interpolated; 0 at DC."""
    f = np.asarray(freqs, float)
    logp = np.interp(np.log(np.maximum(f, 1e-3)), np.log(BACKGROUND_NODES), np.log(BACKGROUND_PSD[stage]))
    return np.where(f > 0, np.exp(logp), 0.0)


# YASA's bands (Vallat & Walker, eLife 10:e70092, 2021), relative to 0.5-30 Hz here.
BANDS = {"delta": (0.5, 4.0), "theta": (4.0, 8.0), "alpha": (8.0, 12.0), "sigma": (12.0, 16.0), "beta": (16.0, 30.0)}

# (metric, stage, derivation, low, high, source). Metrics are computed by `bench/realism.py`:
# rel_<band>: median over the stage's epochs of the band's share of 0.5-30 Hz power (Welch, 5 s
# Hamming windows, median averaging, as YASA computes it); slope: log-log slope of that PSD over
# 15-28 Hz; rms: median 0.5-30 Hz RMS (µV); ratio metrics as named (EMG: ratio of median 10-90 Hz
# RMS; EOG: of 0.5-5 Hz power); rates per minute of the stage.
_AASM = "AASM manual v2.6 (Berry et al. 2020)"
RANGES: tuple[tuple[str, str, str, float, float, str], ...] = (
    # Relative band power, central derivation. Our reading of stage-averaged spectra of healthy
    # adults (Dijk 2009; Carrier et al. 2001 for NREM; Cantero et al. 2003 for REM; Barry et al.,
    # Clin Neurophysiol 118:2765, 2007 for eyes-open/closed wake), checked on the real clips.
    ("rel_delta", "W", "C4-M1", 0.25, 0.75, "≈ Barry et al. 2007 (resting EEG); real clip Cz-A2 0.29, F4-A1 0.51"),
    ("rel_delta", "N1", "C4-M1", 0.45, 0.85, "≈ Ogilvie 2001 (sleep onset: delta rises, alpha falls)"),
    ("rel_delta", "N2", "C4-M1", 0.70, 0.94, "≈ Dijk 2009; real N2 clip 0.89"),
    ("rel_delta", "N3", "C4-M1", 0.82, 0.98, "≈ Dijk 2009; real N3 clip 0.82"),
    ("rel_delta", "REM", "C4-M1", 0.45, 0.85, "≈ Cantero et al. 2003"),
    ("rel_theta", "N1", "C4-M1", 0.06, 0.25, "≈ Ogilvie 2001; AASM: N1 predominantly 4-7 Hz, low amplitude"),
    ("rel_theta", "REM", "C4-M1", 0.06, 0.25, "≈ Cantero et al. 2003 (REM theta)"),
    ("rel_theta", "N2", "C4-M1", 0.02, 0.12, "≈ Dijk 2009; real N2 clip 0.04"),
    ("rel_alpha", "W", "O1-M2", 0.15, 0.70, "Barry et al. 2007 (posterior alpha, eyes closed and open pooled)"),
    ("rel_alpha", "N2", "C4-M1", 0.01, 0.06, "≈ Dijk 2009; real N2 clip 0.025"),
    ("rel_sigma", "N2", "C4-M1", 0.02, 0.09, "≈ Dijk 2009 (sigma peak of N2); real N2 clip 0.042"),
    ("rel_sigma", "N3", "C4-M1", 0.005, 0.04, "≈ Dijk 2009; real N3 clip 0.018"),
    ("rel_beta", "W", "C4-M1", 0.02, 0.15, "≈ Barry et al. 2007; real clip Cz-A2 0.057, F4-A1 0.08"),
    ("rel_beta", "N2", "C4-M1", 0.002, 0.02, "≈ Dijk 2009; real N2 clip 0.005"),
    ("rel_beta", "N3", "C4-M1", 0.001, 0.012, "≈ Dijk 2009; real N3 clip 0.004"),
    ("rel_beta", "REM", "C4-M1", 0.005, 0.06, "≈ Cantero et al. 2003 (REM: desynchronised, between NREM and W)"),
    # Spectral slope above 15 Hz: steep in sleep, flattest in wake (Lendner et al. 2020).
    ("slope", "W", "C4-M1", -3.5, -1.0, "Lendner et al. 2020 (flattest in W); real W clips -2.9 / -3.9"),
    ("slope", "N2", "C4-M1", -4.5, -2.0, "Lendner et al. 2020; real N2 clip -2.2"),
    ("slope", "N3", "C4-M1", -5.0, -2.0, "Lendner et al. 2020; real N3 clip -5.0"),
    ("slope", "REM", "C4-M1", -5.0, -2.0, "Lendner et al. 2020 (steepest 30-45 Hz slope in REM)"),
    # Amplitudes.
    ("rms", "W", "C4-M1", 6.0, 25.0, "≈ Niedermeyer 2011 (adult waking EEG 10-50 µV p-p); real W clips 11.5-11.8"),
    ("rms", "N2", "C4-M1", 12.0, 40.0, "real N2 clip 28.6 µV; AASM"),
    ("ratio_rms_N1_N2", "N1", "C4-M1", 0.35, 0.85, f"{_AASM}: N1 low amplitude mixed frequency, below N2"),
    ("ratio_alpha_O_C", "W", "O1-M2/C3-M2", 1.3, 5.0, "Niedermeyer 2011: posterior dominant rhythm, occipital maximum"),
    # Events, measured on the signals by YASA's detectors (spindles_detect, sw_detect defaults).
    ("spindles_per_min", "N2", "C4-M1", 1.0, 8.0, "Purcell et al., Nat Commun 8:15930, 2017 (NSRR, C3/C4, age-dependent)"),
    ("spindle_duration_s", "N2", "C4-M1", 0.5, 1.5, "Purcell et al. 2017; De Gennaro & Ferrara 2003 (0.5-2 s, mean ~1 s)"),
    ("spindle_hz", "N2", "C4-M1", 12.0, 14.5, "De Gennaro & Ferrara 2003: fast spindles 13-15 Hz centrally, slow 11-13 frontal"),
    ("slow_waves_per_min", "N3", "F3-M2", 8.0, 35.0, "Massimini et al., J Neurosci 24:6862, 2004 (slow oscillations ~0.8/s in deep NREM, detected subset); Carrier et al. 2011"),
    ("slow_wave_ptp_uv", "N3", "F3-M2", 75.0, 250.0, f"{_AASM} (>= 75 µV); Carrier et al., Eur J Neurosci 33:758, 2011 (lower with age)"),
    ("kcomplex_per_min", "N2", "C4-M1", 0.5, 3.0, "Colrain 2005; Crowley et al., Clin Neurophysiol 113:1615, 2002"),
    # Other modalities.
    ("ratio_emg_REM_N2", "REM", "Chin1-Chin2", 0.3, 0.95, f"≈ {_AASM}: REM chin tone lowest of the recording (RMS ratio)"),
    ("ratio_emg_W_N2", "W", "Chin1-Chin2", 1.2, 4.0, f"≈ {_AASM}: chin EMG higher in wake (RMS ratio)"),
    ("eog_rms", "REM", "E1-M2", 15.0, 50.0, "real REM EOG clip (LOC/ROC, 0.5-30 Hz) 30 / 35 µV"),
    ("ratio_eog_REM_N2", "REM", "E1-M2", 1.3, 8.0, f"{_AASM}: rapid eye movements in REM (0.5-5 Hz EOG power)"),
    ("ratio_hr_N3_W", "N3", "ECG", 0.85, 0.98, "Trinder et al., J Sleep Res 10:253, 2001 (heart rate falls in NREM)"),
)
