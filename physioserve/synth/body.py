"""Breathing (ABD, CHEST, AIRFLOW), respiratory events, SaO2 and ECG.

Breathing: a breath-phase integrated from a stage-dependent rate (regular in N2/N3, irregular in W
and REM; Douglas et al. 1982), an asymmetric effort waveform on the belts (chest excursion reduced in
REM by intercostal atonia) and a thermistor-like airflow. Respiratory events follow the AASM rules
(Berry et al. 2012): obstructive apnea (airflow < 10 % with continued, paradoxical effort), central
apnea (no effort), hypopnea (airflow down 30-70 %), each >= 10 s, ending in recovery breaths and
often a (non-target) arousal, and followed after the lung-to-finger delay by an SaO2 dip; before a
RERA-type target arousal the airflow may flatten (flow limitation).

ECG: beats placed by integrating a heart rate made of the subject's rate, a stage offset (lower in
N3, higher and more variable in REM and W; Trinder et al. 2001), ~0.1 Hz oscillations, respiratory
sinus arrhythmia, arousal tachycardia and apnea bradycardia; each beat is a sum of Gaussian P, Q, R,
S, T waves (after McSharry et al. 2003) with QT following RR (Bazett), plus occasional premature
ventricular beats. Output in mV.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from ._dsp import CTRL_FS, FS, STEP, ctrl_noise, smooth, stamp, upsample
from .hypnograms import EPOCH_SAMPLES
from .subject import Subject

RESP_KINDS = ("resp_obstructiveapnea", "resp_hypopnea", "resp_centralapnea")
_EVENT_STAGE_WEIGHT = np.array([0.0, 0.8, 1.0, 0.35, 1.6, 0.0])  # W N1 N2 N3 REM undefined


def place_resp_events(
    rng: np.random.Generator, stages: np.ndarray, n: int, s: Subject, blocked: np.ndarray
) -> tuple[np.ndarray, list[str]]:
    """Respiratory events ([K, 2] samples, kinds) in sleep, away from `blocked` sample regions."""
    epochs = np.arange(min(len(stages), n // EPOCH_SAMPLES))
    weight = _EVENT_STAGE_WEIGHT[stages[epochs]]
    sleep_hours = np.count_nonzero(weight) * EPOCH_SAMPLES / FS / 3600
    if weight.sum() == 0 or sleep_hours == 0:
        return np.zeros((0, 2), np.int64), []
    want = rng.poisson(s.ahi * sleep_hours)
    m = n // STEP + 1
    busy = np.zeros(m, bool)
    sleep_ctrl = np.repeat(weight > 0, EPOCH_SAMPLES // STEP)[:m]
    busy[: len(sleep_ctrl)] |= ~sleep_ctrl
    busy[len(sleep_ctrl):] = True
    for lo, hi in np.asarray(blocked, np.int64).reshape(-1, 2):
        busy[max(lo // STEP - 100, 0): hi // STEP + 100] = True  # 10 s margins
    p_kind = np.array([s.obstructive_share, 1 - s.obstructive_share - s.central_share, s.central_share])
    events, kinds = [], []
    candidates = rng.choice(epochs, size=3 * want, p=weight / weight.sum()) if want else []
    for epoch in candidates:
        if len(events) >= want:
            break
        kind = RESP_KINDS[rng.choice(3, p=p_kind)]
        dur = np.clip(20.0 * np.exp(0.35 * rng.standard_normal()), 10.0, 75.0) * FS
        start = int(epoch * EPOCH_SAMPLES + rng.uniform(0, EPOCH_SAMPLES))
        stop = int(start + dur)
        lo, hi = start // STEP - 150, stop // STEP + 200  # room for the recovery and the next event
        if lo < 0 or hi >= m or busy[lo:hi].any():
            continue
        busy[lo:hi] = True
        events.append((start, stop))
        kinds.append(kind)
    order = np.argsort([e[0] for e in events])
    return np.array([events[i] for i in order], np.int64).reshape(-1, 2), [kinds[i] for i in order]


def terminal_arousals(rng, events: np.ndarray, kinds: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Non-target arousals that end respiratory events: ([K, 2] samples, intensity [K])."""
    p = {"resp_obstructiveapnea": 0.8, "resp_hypopnea": 0.55, "resp_centralapnea": 0.5}
    keep = [i for i, kind in enumerate(kinds) if rng.random() < p[kind]]
    stops = events[keep, 1] if keep else np.zeros(0, np.int64)
    lengths = rng.uniform(3.0, 12.0, len(stops)) * FS
    regions = np.stack([stops - FS, stops + lengths.astype(np.int64)], axis=1) if len(stops) else np.zeros((0, 2), np.int64)
    return regions, rng.uniform(0.35, 0.9, len(stops))


def breathing(
    rng, n: int, c: dict, s: Subject, events: np.ndarray, kinds: list[str], rera_onsets: np.ndarray
) -> dict[str, np.ndarray]:
    """ABD, CHEST, AIRFLOW ("uV" as in the real headers), breath phase [n], and the SaO2 deficit (ctrl)."""
    m = len(c["resp_rate"])
    rate = s.resp_per_min * c["resp_rate"] * (1 + 0.35 * c["resp_irregular"] * ctrl_noise(rng, m, 4.0))
    phase_ctrl = 2 * np.pi * np.cumsum(np.clip(rate, 4.0, 40.0) / 60.0 / CTRL_FS)
    tidal = c["tidal"] * np.exp(0.8 * c["resp_irregular"] * ctrl_noise(rng, m, 10.0))
    tidal *= 1 + 0.7 * c["arousal"]  # arousal: deep breaths
    flow, effort, paradox, flat = np.ones(m), np.ones(m), np.zeros(m), np.zeros(m)
    deficit = np.zeros(m)
    for (start, stop), kind in zip(events, kinds, strict=True):
        i0, i1 = start // STEP, stop // STEP
        ramp = np.linspace(0, 1, i1 - i0)
        if kind == "resp_obstructiveapnea":
            flow[i0:i1] = rng.uniform(0.02, 0.09)
            effort[i0:i1] = 0.8 + 0.5 * ramp
            paradox[i0:i1] = 0.75 * np.pi * np.minimum(ramp * 3, 1)
            depth = rng.uniform(3.0, 9.0)
        elif kind == "resp_centralapnea":
            flow[i0:i1] = rng.uniform(0.02, 0.08)
            effort[i0:i1] = rng.uniform(0.02, 0.08)
            depth = rng.uniform(3.0, 8.0)
        else:
            flow[i0:i1] = rng.uniform(0.35, 0.65)
            effort[i0:i1] = rng.uniform(0.6, 0.85)
            flat[i0:i1] = rng.uniform(0.3, 0.8)
            depth = rng.uniform(1.5, 5.0)
        recovery = slice(i1, min(i1 + int(8 * CTRL_FS), m))
        tidal[recovery] *= 1.8
        deficit[i0:i1] += depth * s.desat_gain * ramp
        tail = min(int(12 * CTRL_FS), m - i1)
        deficit[i1:i1 + tail] += depth * s.desat_gain * np.linspace(1, 0, tail)
    for onset in np.asarray(rera_onsets, np.int64):  # flow limitation before RERA-type arousals
        i1 = onset // STEP
        i0 = max(i1 - int(rng.uniform(10, 30) * CTRL_FS), 0)
        flow[i0:i1] = np.minimum(flow[i0:i1], 0.75)
        flat[i0:i1] = np.maximum(flat[i0:i1], 0.6)
    flow, effort, paradox, flat = (smooth(v, 1.5) for v in (flow, effort, paradox, flat))
    phase = upsample(phase_ctrl, n).astype(np.float64)
    wave = np.sin(phase + 0.3 * np.sin(phase)).astype(np.float32)  # quick inspiration, slow expiration
    abd = s.resp_gain[0] * upsample(tidal * effort, n) * wave
    chest_phase = phase + upsample(paradox, n)
    chest = s.resp_gain[1] * upsample(tidal * effort * c["chest_share"], n) * np.sin(chest_phase + 0.3 * np.sin(chest_phase))
    air = np.sin(phase - 0.6 + 0.3 * np.sin(phase - 0.6)).astype(np.float32)
    ceiling = upsample(1.0 - 0.7 * flat, n)
    air = np.minimum(air, ceiling) / np.maximum(ceiling, 0.3) * (air > 0) + air * (air <= 0)
    airflow = s.resp_gain[2] * upsample(tidal * flow, n) * air
    return {
        "ABD": abd.astype(np.float32) + s.resp_offset[0],
        "CHEST": chest.astype(np.float32) + s.resp_offset[1],
        "AIRFLOW": airflow.astype(np.float32) + s.resp_offset[2],
        "phase": phase,
        "phase_ctrl": phase_ctrl,
        "deficit": deficit,
    }


def sao2(rng, n: int, c: dict, s: Subject, deficit: np.ndarray) -> np.ndarray:
    """SaO2 in %: baseline, stage offsets, delayed desaturations, integer resolution like a pulse oximeter."""
    m = len(deficit)
    delay = int(s.circulation_s * CTRL_FS)
    delayed = np.concatenate([np.zeros(delay), deficit])[:m]
    level = s.spo2_base + c["spo2_offset"] - smooth(delayed, 3.0) + 0.35 * ctrl_noise(rng, m, 30.0)
    return np.clip(np.round(upsample(np.minimum(level, 100.0), n)), 50, 100).astype(np.float32)


def heart_rate(rng, c: dict, s: Subject, phase_ctrl: np.ndarray, events: np.ndarray) -> np.ndarray:
    """Instantaneous heart rate (bpm) on the control grid."""
    m = len(phase_ctrl)
    lf_sos = signal.butter(2, [0.06, 0.14], btype="bandpass", fs=CTRL_FS, output="sos")
    lf = signal.sosfilt(lf_sos, rng.standard_normal(m + 600))[600:]
    lf /= max(float(np.std(lf)), 1e-12)
    hr = s.hr_bpm + c["hr_offset"] + s.lf_bpm * c["lf_gain"] * lf
    hr += s.rsa_bpm * c["rsa_gain"] * np.sin(phase_ctrl - 0.5)
    lagged = np.concatenate([np.zeros(int(2 * CTRL_FS)), smooth(c["arousal"], 4.0)])[:m]
    hr += s.arousal_hr_bpm * lagged
    brady = np.zeros(m)
    for start, stop in events:
        brady[start // STEP: stop // STEP] = -3.0
    hr += smooth(brady, 3.0) + 1.0 * ctrl_noise(rng, m, 30.0)
    return np.clip(hr, 35.0, 160.0)


def _g(t, mu, sigma):
    return np.exp(-0.5 * ((t - mu) / sigma) ** 2)


def ecg(rng, n: int, c: dict, s: Subject, phase_ctrl: np.ndarray, events: np.ndarray) -> np.ndarray:
    """ECG in mV [n] float32."""
    hr = heart_rate(rng, c, s, phase_ctrl, events)
    beats_total = np.cumsum(hr / 60.0 / CTRL_FS)
    k = np.arange(1, int(beats_total[-1]) + 1)
    pos = np.interp(k, beats_total, np.arange(len(hr))) * STEP  # [K] samples
    rr = np.diff(pos, prepend=pos[0] - 60.0 / hr[0] * FS) / FS  # [K] s
    pvc = rng.random(len(pos)) < s.pvc_per_hour / np.maximum(hr.mean() * 60.0, 1.0)
    pvc[0] = False
    pos = np.where(pvc, pos - 0.3 * rr * FS, pos)
    breath = np.interp(pos / STEP, np.arange(len(phase_ctrl)), phase_ctrl)
    r = (s.r_mv * (1 + 0.06 * np.cos(breath)) * np.exp(0.03 * rng.standard_normal(len(pos))))[:, None]
    rr_c = np.clip(rr, 0.35, 2.0)[:, None]

    normal = ~pvc
    rn, rrn = r[normal], rr_c[normal]
    t_mu = 0.29 * np.sqrt(rrn)

    def beat(t):
        t_sigma = np.where(t < t_mu, 0.06, 0.04)
        return (
            s.p_mv * _g(t, -s.pr_s, 0.022)
            - 0.1 * rn * _g(t, -0.026, 0.008)
            + rn * _g(t, 0.0, s.qrs_sigma_s)
            - 0.25 * rn * _g(t, 0.027, 0.009)
            + s.t_mv * _g(t, t_mu, t_sigma)
        )

    out = stamp(n, pos[normal], 0.3, 0.75, beat)
    rp = r[pvc]

    def ectopic(t):
        return 1.3 * rp * _g(t, 0.01, 0.035) - 0.5 * rp * _g(t, 0.33, 0.07)

    out += stamp(n, pos[pvc], 0.2, 0.7, ectopic)
    out *= s.ecg_polarity
    out += 0.05 * upsample(np.sin(phase_ctrl), n)  # respiratory baseline sway
    return out.astype(np.float32)
