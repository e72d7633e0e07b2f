"""Synthetic subjects: age, sex and the per-subject constants that make one night differ from another.

Age is drawn from a normal distribution N(55, 13) truncated to [18, 90] years (the PhysioNet 2018
cohort's ages are not public; its mean is in the mid-fifties). It is mildly correlated
(`AGE_HYPNOGRAM_CORRELATION`) with the driving hypnogram's "age proxy" (more wake, less N3 = older),
as in the sleep literature (Ohayon et al. 2004). Age modulates, with subject-level noise on top so
that no single feature gives it away:
- slow-wave amplitude falls ~1 %/year (Carrier et al. 2001, 2011; Mander et al. 2017);
- spindle density, amplitude and duration fall, frequency rises slightly (Crowley et al. 2002;
  Martin et al. 2013); K-complex density and amplitude fall (Crowley et al. 2002);
- alpha peak frequency falls slightly (Klimesch 1999); the spectrum flattens (aperiodic exponent
  falls with age: Voytek et al., J Neurosci 35:13257, 2015);
- heart rate variability falls steeply, respiratory sinus arrhythmia most (Umetani et al. 1998;
  Shaffer & Ginsberg 2017); resting heart rate falls slightly (Kostis et al. 1982); R and T wave
  voltage fall and PR and QRS lengthen (Simonson 1972; Rijnbeek et al. 2014); ventricular ectopy
  rises (Fleg & Kennedy 1982);
- apnea-hypopnea index and baseline SpO2 worsen with age (Peppard et al. 2013).
Sex shifts heart rate (+3 bpm female), QRS voltage (lower female) and spindle density (higher female).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .montage import ELECTRODES

AGE_MEAN, AGE_SD, AGE_MIN, AGE_MAX = 55.0, 13.0, 18, 90
AGE_HYPNOGRAM_CORRELATION = 0.35

@dataclass(frozen=True)
class Subject:
    """Per-subject constants (units in the field comments). Drawn once per record by `draw_subject`."""

    age: int
    sex: str  # "M" | "F"
    # EEG (scalp-level amplitudes: the largest electrode of a component's topography, `montage`)
    eeg_power: float  # power factor of the background (skull and scalp thickness), 1 = table
    eeg_tilt: float  # spectral slope offset: background x (f / 10 Hz) ** eeg_tilt
    electrode_gain: np.ndarray  # [len(ELECTRODES)] amplitude factor per electrode (contact, placement)
    alpha_hz: float
    alpha_width_hz: float  # SD of the alpha peak
    alpha_uv: float  # RMS of eyes-closed alpha on O1-M2 when on, µV
    alpha_eyes_open: float  # alpha left with the eyes open (reactivity), fraction
    sw_uv: float  # median peak-to-peak of slow waves at the frontal maximum, µV
    spindle_per_min: float  # density in N2 (slow + fast)
    spindle_uv: float  # peak amplitude at the topographic maximum, µV
    spindle_dur_s: float  # median duration
    spindle_slow_hz: float
    spindle_fast_hz: float
    kc_per_min: float  # density in N2
    kc_uv: float  # negative peak at the frontal maximum, µV
    scalp_emg: float  # scalp muscle amplitude per µV of chin EMG tone (muscle topography maximum)
    ecg_field: float  # µV on the `ecg` topography's maximum per µV of ECG
    # EOG
    eog_uv: float  # µV per unit of eye position
    blink_uv: float
    sem_gain: float
    # EMG
    emg_gain: float  # chin tone factor
    emg_ecg_leak: float
    snore_uv: float  # 0 for non-snorers
    # Heart
    hr_bpm: float
    rsa_bpm: float  # respiratory sinus arrhythmia amplitude
    lf_bpm: float  # ~0.1 Hz heart-rate oscillation amplitude
    arousal_hr_bpm: float  # heart-rate rise at a full arousal
    r_mv: float
    t_mv: float
    p_mv: float
    pr_s: float
    qrs_sigma_s: float
    ecg_polarity: float  # +1 or -1 (lead placement)
    pvc_per_hour: float
    # Breathing
    resp_per_min: float
    ahi: float  # apnea-hypopnea events per hour of sleep
    obstructive_share: float
    central_share: float
    resp_gain: np.ndarray  # [3] ABD, CHEST, AIRFLOW amplitude ("uV" as in the real headers)
    resp_offset: np.ndarray  # [3]
    spo2_base: float  # %
    desat_gain: float
    circulation_s: float  # lung-to-finger delay of SpO2
    movement_gain: float  # how restless: amplitude factor of body-movement artifacts
    transition_s: float  # cross-fade time between stages


def draw_age(rng: np.random.Generator, proxy_z: float = 0.0) -> int:
    """Age in years: N(55, 13) truncated to [18, 90], correlated with a hypnogram's age proxy z-score."""
    rho = AGE_HYPNOGRAM_CORRELATION if np.isfinite(proxy_z) else 0.0
    while True:
        z = rho * float(np.clip(proxy_z, -3, 3)) + np.sqrt(1 - rho**2) * rng.standard_normal()
        age = AGE_MEAN + AGE_SD * z
        if AGE_MIN <= age <= AGE_MAX:
            return int(round(age))


def draw_subject(rng: np.random.Generator, age: int, sex: str) -> Subject:
    """All per-subject constants for a subject of `age` and `sex` (see module doc for the effects)."""
    a = age - AGE_MEAN
    female = sex == "F"

    def ln(sigma: float, size=None):
        return np.exp(sigma * rng.standard_normal(size))

    head = ln(0.2)  # skull/skin: common amplitude factor of the EEG
    ahi = float(np.clip(8.0 * np.exp(0.025 * a) * ln(1.0), 0.2, 90.0))
    obstructive = float(rng.uniform(0.25, 0.55))
    central = float(rng.uniform(0.03, 0.2))
    return Subject(
        age=int(age),
        sex=sex,
        eeg_power=float(head**2),
        eeg_tilt=float(0.004 * a + 0.12 * rng.standard_normal()),
        electrode_gain=ln(0.08, len(ELECTRODES)),
        alpha_hz=float(np.clip(10.0 - 0.015 * a + 0.6 * rng.standard_normal(), 8.0, 12.0)),
        alpha_width_hz=float(rng.uniform(0.5, 1.0)),
        alpha_uv=float(13.0 * ln(0.45)),
        alpha_eyes_open=float(rng.uniform(0.1, 0.5)),
        sw_uv=float(170.0 * np.exp(-0.01 * a) * (1.08 if female else 1.0) * ln(0.2)),
        spindle_per_min=float(np.clip(4.5 * np.exp(-0.015 * a) * (1.1 if female else 1.0) * ln(0.35), 0.5, 9.0)),
        spindle_uv=float(27.0 * np.exp(-0.006 * a) * ln(0.25)),
        spindle_dur_s=float(np.clip(1.0 - 0.003 * a, 0.6, 1.4) * ln(0.12)),
        spindle_slow_hz=float(np.clip(11.8 + 0.006 * a + 0.35 * rng.standard_normal(), 10.8, 12.8)),
        spindle_fast_hz=float(np.clip(13.5 + 0.01 * a + 0.4 * rng.standard_normal(), 12.8, 15.0)),
        kc_per_min=float(1.3 * np.exp(-0.015 * a) * ln(0.4)),
        kc_uv=float(130.0 * np.exp(-0.01 * a) * ln(0.25)),
        scalp_emg=float(0.08 * ln(0.6)),
        ecg_field=float(0.006 * ln(0.6) * (1.0 if rng.random() < 0.5 else 0.2)),
        eog_uv=90.0 * ln(0.35),
        blink_uv=160.0 * ln(0.35),
        sem_gain=float(ln(0.35)),
        emg_gain=float(np.exp(-0.004 * a) * ln(0.4)),
        emg_ecg_leak=float(0.006 * ln(0.9)),
        snore_uv=float(rng.uniform(3, 15) if rng.random() < 0.3 + 0.005 * a else 0.0),
        hr_bpm=float(64.0 - 0.08 * a + (3.0 if female else 0.0) + 6.5 * rng.standard_normal()),
        rsa_bpm=float(4.0 * np.exp(-0.035 * a) * ln(0.35)),
        lf_bpm=float(2.2 * np.exp(-0.02 * a) * ln(0.35)),
        arousal_hr_bpm=float(10.0 * np.exp(-0.008 * a) * ln(0.3)),
        r_mv=float(1.1 * np.exp(-0.01 * a) * (0.85 if female else 1.0) * ln(0.3)),
        t_mv=float(0.28 * np.exp(-0.013 * a) * ln(0.3)),
        p_mv=float(0.12 * ln(0.25)),
        pr_s=float(np.clip(0.158 + 0.0007 * a + 0.015 * rng.standard_normal(), 0.11, 0.24)),
        qrs_sigma_s=float(np.clip(0.0105 + 0.00003 * a + 0.0012 * rng.standard_normal(), 0.007, 0.016)),
        ecg_polarity=1.0 if rng.random() < 0.9 else -1.0,
        pvc_per_hour=float(np.exp(-0.2 + 0.06 * a) * ln(1.0)),
        resp_per_min=float(np.clip(14.0 + 0.03 * a + 2.0 * rng.standard_normal(), 8.0, 24.0)),
        ahi=ahi,
        obstructive_share=obstructive,
        central_share=central,
        resp_gain=np.array([900.0, 700.0, 600.0]) * ln(0.5, 3),
        resp_offset=rng.normal(0, 3000, 3),
        spo2_base=float(np.clip(96.5 - 0.04 * a + 0.8 * rng.standard_normal(), 91.0, 99.5)),
        desat_gain=float(ln(0.35)),
        circulation_s=float(rng.uniform(12, 28)),
        movement_gain=float(ln(0.4)),
        transition_s=float(rng.uniform(6.0, 20.0)),
    )
