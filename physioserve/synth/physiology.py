"""One synthetic night: stage-driven physiology on the 13 PhysioNet 2018 channels.

How a night is made (all vectorised, whole night at once):
1. Every 30 s epoch gets parameters drawn from its stage's distribution (`STAGE_TABLE`) through a
   slowly varying latent (AR(1) across epochs), so that neighbouring epochs resemble each other and
   stages overlap as in real scoring: e.g. N2 epochs carry 0-30 % slow waves and N3 epochs 20-90 %
   (AASM: N3 = >= 20 % of 0.5-2 Hz waves > 75 µV peak-to-peak), W epochs > 50 % alpha with eyes
   closed but little with eyes open, N1 < 50 % alpha, REM epochs phasic (bursts of rapid eye
   movements, twitches, sawtooth waves) or tonic (none: then REM differs from N1 mainly by chin
   atonia).
2. The per-epoch values become 10 Hz control signals and are cross-faded over the subject's
   transition time (6-20 s), so stage changes blend instead of stepping; within an epoch they drift.
3. Arousals are placed at the hypnogram's target-arousal regions (the physiological arousal is the
   annotated interval, label region minus the challenge's 2 s / 10 s margins, see `writer`): an
   abrupt >= 3 s shift to alpha, theta and/or beta with delta and spindles suppressed (AASM arousal
   rule), a chin EMG burst, a heart-rate rise and deeper breaths; some start with a K-complex.
   Respiratory events end in similar, non-target arousals.
4. `brain`, `body` and `artifacts` turn the controls into signals.

Grounding (the numbers in `STAGE_TABLE` and `subject` come from these): Berry et al., The AASM Manual
for the Scoring of Sleep and Associated Events, v2.0 (2012) and v2.6 (2020); Rechtschaffen & Kales
(1968); Silber et al., J Clin Sleep Med 3:121 (2007) (visual scoring of sleep in adults); De Gennaro
& Ferrara, Sleep Med Rev 7:423 (2003) (spindles); Colrain, Sleep 28:255 (2005) (K-complexes);
Carskadon & Dement, Normal human sleep (Principles and Practice of Sleep Medicine, 2011); Halasz et
al., J Sleep Res 13:1 (2004) (arousals); Trinder et al., J Sleep Res 10:253 (2001) (autonomic
activity by stage); Douglas et al., Thorax 37:840 (1982) (breathing by stage); McSharry et al.,
IEEE TBME 50:289 (2003) (ECG model); Ghassemi et al., CinC 2018 (the challenge and its labels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal, stats
from scipy.special import ndtr

from ..modalities import STAGE_UNDEFINED
from . import artifacts, body, brain
from ._dsp import FS, STEP, ctrl_noise, n_ctrl, poisson_events, region_envelope, smooth
from .hypnograms import EPOCH_SAMPLES, Hypnogram
from .labels import challenge_arousals
from .subject import CHANNEL_NAMES, Subject

CTRL_PER_EPOCH = EPOCH_SAMPLES // STEP  # 300

# Per-stage parameters, columns W, N1, N2, N3, REM. ("beta", a, b) draws a fraction from Beta(a, b)
# (("beta", a, b, offset, scale): offset + scale * Beta(a, b));
# ("ln", median, sigma) a log-normal value; a plain tuple is a constant per stage.
STAGE_TABLE: dict[str, tuple] = {
    # EEG
    "alpha_frac": (("beta", 2.2, 1.2), ("beta", 1.3, 3.2), ("beta", 1.0, 25.0), ("beta", 1.0, 40.0), ("beta", 1.2, 7.0)),
    "delta_frac": (("beta", 1.0, 60.0), ("beta", 1.0, 20.0), ("beta", 1.3, 12.0), ("beta", 2.0, 2.5, 0.2, 0.7), ("beta", 1.0, 30.0)),
    "delta_bg_uv": (4.0, 6.0, 9.0, 10.0, 6.0),
    "theta_uv": (("ln", 4.0, 0.25), ("ln", 11.0, 0.3), ("ln", 8.0, 0.25), ("ln", 7.0, 0.25), ("ln", 8.0, 0.3)),
    "beta_uv": (("ln", 4.5, 0.3), ("ln", 3.2, 0.3), ("ln", 2.4, 0.3), ("ln", 2.0, 0.3), ("ln", 3.2, 0.3)),
    "pink_uv": (("ln", 7.0, 0.2), ("ln", 9.0, 0.2), ("ln", 11.0, 0.2), ("ln", 11.0, 0.2), ("ln", 7.5, 0.2)),
    "spindle_rate": (0.0, 0.2, 1.0, 0.25, 0.0),  # x subject density (per min in N2)
    "sigma_uv": (0.0, 0.6, 5.0, 3.0, 0.3),  # continuous sigma activity between spindles, x subject
    "kc_rate": (0.0, 0.1, 1.0, 0.5, 0.03),  # x subject density
    "vertex_rate": (0.0, 1.5, 0.4, 0.0, 0.15),  # per min
    "sawtooth_rate": (0.0, 0.05, 0.0, 0.0, 2.5),  # per min, x phasic
    # EOG
    "saccade_rate": (22.0, 0.8, 0.1, 0.0, 55.0),  # per min; W x eyes open, REM x phasic
    "blink_rate": (16.0, 0.4, 0.0, 0.0, 0.0),  # per min; W x eyes open
    "sem_uv": (("ln", 8.0, 0.5), ("ln", 16.0, 0.6), ("ln", 10.0, 0.5), ("ln", 3.0, 0.4), ("ln", 6.0, 0.5)),
    "phasic": (0.0, 0.0, 0.0, 0.0, ("beta", 1.2, 2.2)),
    # EMG
    "emg_uv": (("ln", 16.0, 0.35), ("ln", 8.0, 0.35), ("ln", 5.5, 0.35), ("ln", 5.0, 0.35), ("ln", 2.0, 0.4)),
    "twitch_rate": (0.0, 0.8, 0.4, 0.2, 12.0),  # per min, REM x (0.3 + phasic)
    "movement_rate": (0.6, 0.15, 0.04, 0.02, 0.05),  # per min
    # heart and breathing
    "hr_offset": (5.0, 2.0, -1.5, -3.0, 2.0),  # bpm
    "lf_gain": (1.2, 1.0, 0.8, 0.5, 1.4),
    "rsa_gain": (0.7, 0.9, 1.1, 1.2, 0.7),
    "resp_rate": (1.08, 1.0, 0.96, 0.94, 1.06),
    "resp_irregular": (0.25, 0.18, 0.06, 0.04, 0.3),
    "tidal": (1.1, 0.95, 0.9, 1.0, 0.85),
    "chest_share": (1.0, 1.0, 1.0, 1.0, 0.6),
    "spo2_offset": (0.4, 0.0, -0.2, -0.2, -0.6),
    "nrem": (0.0, 1.0, 1.0, 1.0, 0.0),
}
EYES_OPEN_P = 0.3  # share of W epochs with eyes open (little alpha, blinks and saccades), in runs


def _epoch_values(rng: np.random.Generator, stages: np.ndarray, spec: tuple, rho: float = 0.75) -> np.ndarray:
    """One value per epoch from its stage's entry in `spec`, through an AR(1) latent (correlation rho)."""
    z = signal.lfilter([np.sqrt(1 - rho**2)], [1, -rho], rng.standard_normal(len(stages)))
    u = np.clip(ndtr(z), 1e-6, 1 - 1e-6)
    out = np.zeros(len(stages))
    for stage, entry in enumerate(spec):
        mask = stages == stage
        if not mask.any():
            continue
        if not isinstance(entry, tuple):
            out[mask] = entry
        elif entry[0] == "beta":  # ("beta", a, b[, offset, scale])
            offset, scale = entry[3:5] if len(entry) == 5 else (0.0, 1.0)
            out[mask] = offset + scale * stats.beta.ppf(u[mask], entry[1], entry[2])
        else:
            out[mask] = entry[1] * np.exp(entry[2] * stats.norm.ppf(u[mask]))
    return out


def _to_ctrl(values: np.ndarray, m: int, transition_s: float) -> np.ndarray:
    """Per-epoch values -> control grid (the last epoch extends to the end), cross-faded."""
    ctrl = np.repeat(values, CTRL_PER_EPOCH)
    ctrl = np.concatenate([ctrl, np.full(max(m - len(ctrl), 0), values[-1])])[:m]
    return smooth(ctrl, transition_s)


@dataclass
class Night:
    """A generated night: signals [13, n] float32 in physical units, and its events."""

    signals: np.ndarray
    hypnogram: Hypnogram  # the labels to write: the driving hypnogram as the challenge's files can hold it
    arousal_annotations: np.ndarray  # [K, 2] samples: the physiological (annotated) target arousals
    resp_events: np.ndarray  # [R, 2] samples
    resp_kinds: list[str]

    def channel(self, name: str) -> np.ndarray:
        return self.signals[CHANNEL_NAMES.index(name)]


def controls(rng: np.random.Generator, hyp: Hypnogram, s: Subject) -> dict[str, np.ndarray]:
    """Stage-driven control signals (10 Hz) from the hypnogram: see the module doc, steps 1-2."""
    m = n_ctrl(hyp.n_samples)
    stages = np.where(hyp.stages == STAGE_UNDEFINED, 0, hyp.stages)  # unscored time: awake, lights on
    open_latent = signal.lfilter([np.sqrt(1 - 0.8**2)], [1, -0.8], rng.standard_normal(len(stages)))
    eyes_open = (stages == 0) & ((ndtr(open_latent) < EYES_OPEN_P) | (hyp.stages == STAGE_UNDEFINED))
    values = {name: _epoch_values(rng, stages, spec) for name, spec in STAGE_TABLE.items()}
    values["alpha_frac"][eyes_open] *= 0.15
    values["beta_uv"][eyes_open] *= 1.4
    values["sem_uv"][(stages == 0) & ~eyes_open] *= 2.0  # drowsy, eyes closed: slow eye movements
    wake = stages == 0
    values["saccade_rate"][wake] *= np.where(eyes_open[wake], 1.0, 0.15)
    values["blink_rate"][wake] *= np.where(eyes_open[wake], 1.0, 0.2)
    rem = stages == 4
    values["saccade_rate"][rem] *= values["phasic"][rem]
    values["sawtooth_rate"][rem] *= 0.3 + values["phasic"][rem]
    values["twitch_rate"][rem] *= 0.3 + values["phasic"][rem]
    values["movement_rate"][hyp.stages == STAGE_UNDEFINED] *= 2.0
    c = {name: _to_ctrl(v, m, s.transition_s) for name, v in values.items()}
    # Within-epoch drift of the amplitudes.
    c["depth_mod"] = np.exp(0.2 * ctrl_noise(rng, m, 20.0))
    c["alpha_mod"] = np.exp(0.25 * ctrl_noise(rng, m, 8.0))
    for name in ("theta_uv", "beta_uv", "pink_uv", "emg_uv"):
        c[name] = c[name] * np.exp(0.15 * ctrl_noise(rng, m, 10.0))
    return c


def arousal_controls(
    rng: np.random.Generator, c: dict, m: int, target: np.ndarray, other: np.ndarray, other_intensity: np.ndarray
) -> np.ndarray:
    """Add arousal envelopes to `c`; returns K-complex times at NREM arousal onsets (samples)."""
    regions = np.concatenate([target, other]).reshape(-1, 2)
    intensity = np.concatenate([rng.uniform(0.55, 1.3, len(target)), other_intensity])
    mix = rng.dirichlet([1.6, 1.0, 1.0], len(regions)) if len(regions) else np.zeros((0, 3))
    c["arousal"] = region_envelope(m, regions, 0.5, intensity)
    c["arousal_alpha"] = region_envelope(m, regions, 0.5, np.clip(1.6 * mix[:, 0] * intensity, 0, 1))
    c["arousal_theta"] = region_envelope(m, regions, 0.5, 2.0 * mix[:, 1] * intensity)
    c["arousal_beta"] = region_envelope(m, regions, 0.5, 2.0 * mix[:, 2] * intensity)
    c["arousal_emg"] = region_envelope(m, regions, 0.3, rng.uniform(0.5, 3.5, len(regions)) * intensity)
    onsets = regions[:, 0] if len(regions) else np.zeros(0)
    nrem = c["nrem"][np.clip(onsets // STEP, 0, m - 1).astype(np.int64)] > 0.5 if len(onsets) else np.zeros(0, bool)
    return onsets[nrem & (rng.random(len(onsets)) < 0.35)].astype(float)


def movement_controls(rng: np.random.Generator, c: dict, m: int, arousal_regions: np.ndarray) -> np.ndarray:
    """Control-grid envelope of body movements: spontaneous (stage rate) and at 25 % of arousals."""
    starts = poisson_events(rng, c["movement_rate"])
    regions = np.asarray(arousal_regions, np.int64).reshape(-1, 2)
    at_arousal = regions[rng.random(len(regions)) < 0.25, 0] + rng.uniform(0, 2 * FS)
    starts = np.concatenate([starts, at_arousal]) if len(at_arousal) else starts
    lengths = rng.uniform(1.0, 10.0, len(starts)) * FS
    moves = np.stack([starts, starts + lengths], axis=1).astype(np.int64) if len(starts) else np.zeros((0, 2), np.int64)
    return region_envelope(m, moves, 0.3, rng.uniform(0.3, 1.5, len(moves)))


def generate_night(hyp: Hypnogram, s: Subject, rng: np.random.Generator) -> Night:
    """All 13 channels of one night following `hyp`, for subject `s`."""
    n = hyp.n_samples
    m = n_ctrl(n)
    streams = rng.spawn(8)  # one stream per part: changing one generator leaves the others alone
    c = controls(streams[0], hyp, s)
    labels = challenge_arousals(hyp)
    target_ann = labels.annotations
    events, kinds = body.place_resp_events(streams[1], hyp.stages, n, s, labels.blocked)
    if len(labels.forced_resp):
        events = np.concatenate([events, labels.forced_resp])
        kinds = kinds + ["resp_hypopnea"] * len(labels.forced_resp)
        order = np.argsort(events[:, 0], kind="stable")
        events, kinds = events[order], [kinds[i] for i in order]
    other, other_intensity = body.terminal_arousals(streams[1], events, kinds)
    kc_times = arousal_controls(streams[2], c, m, target_ann, other, other_intensity)
    c["arousal_kc_times"] = kc_times
    movement = movement_controls(streams[2], c, m, np.concatenate([target_ann, other]).reshape(-1, 2))
    rera = target_ann[streams[2].random(len(target_ann)) < 0.6, 0] if len(target_ann) else np.zeros(0, np.int64)

    x = np.zeros((len(CHANNEL_NAMES), n), np.float32)
    idx = {name: i for i, name in enumerate(CHANNEL_NAMES)}
    breath = body.breathing(streams[3], n, c, s, events, kinds, rera)
    for name in ("ABD", "CHEST", "AIRFLOW"):
        x[idx[name]] = breath[name]
    x[idx["SaO2"]] = body.sao2(streams[3], n, c, s, breath["deficit"])
    x[idx["ECG"]] = body.ecg(streams[4], n, c, s, breath["phase_ctrl"], events)
    ecg_uv = x[idx["ECG"]] * np.float32(1000.0)
    eye_h, eye_v = brain.eye_signals(streams[5], n, c, s)
    x[:6], brain_f3 = brain.eeg(streams[5], n, c, s, eye_h, eye_v, ecg_uv)
    x[idx["E1-M2"]] = brain.eog(eye_h, eye_v, brain_f3, s)
    del eye_h, eye_v, brain_f3
    x[idx["Chin1-Chin2"]] = brain.chin_emg(streams[6], n, c, s, ecg_uv, breath["phase"])
    del breath, ecg_uv
    artifacts.add_artifacts(streams[7], x, s, movement)
    return Night(x, labels.hypnogram, target_ann, events, kinds)

