"""One synthetic night: stage-driven physiology on a site's channels (default: the 13 of PhysioNet 2018).

How a night is made (all vectorised, whole night at once):
1. Every 30 s epoch gets parameters drawn from its stage's distribution (`STAGE_TABLE`) through a
   slowly varying latent (AR(1) across epochs), so that neighbouring epochs resemble each other and
   stages overlap as in real scoring: N2 epochs carry 0-12 % slow waves, mostly below 75 µV, N3
   epochs 22-90 % (AASM: N3 = >= 20 % of 0.5-2 Hz waves > 75 µV peak-to-peak); W epochs > 50 %
   alpha with eyes closed, little with eyes open; N1 < 45 % alpha, no spindles; not every N2 epoch
   has a spindle or K-complex (Poisson events at per-subject densities); REM epochs phasic (bursts
   of rapid eye movements, twitches, sawtooth waves) or tonic (none: then REM differs from N1
   mainly by chin atonia).
2. Epochs next to a stage change take up to 40 % of the neighbouring stage's values (the next ones
   in up to 15 %), within the scoring rules; the per-epoch values become 10 Hz control signals,
   cross-faded over the subject's transition time (6-20 s); within an epoch they drift.
3. Arousals are placed at the hypnogram's target-arousal regions (the physiological arousal is the
   annotated interval, label region minus the challenge's 2 s / 10 s margins, see `writer`): an
   abrupt >= 3 s shift to alpha, theta and/or beta with delta and spindles suppressed (AASM arousal
   rule), a chin EMG burst, a heart-rate rise and deeper breaths; some start with a K-complex.
   Respiratory events end in similar, non-target arousals.
4. `eeg` (EEG and EOG derivations), `brain` (eyes, chin), `body` (breathing, SaO2, ECG) turn the
   controls into signals; `artifacts` adds the recording's artefacts and `hardware` the site's
   filters.

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

from dataclasses import dataclass, replace

import numpy as np
from scipy import signal, stats
from scipy.special import ndtr

from ..modalities import STAGE_UNDEFINED
from . import artifacts, body, brain, eeg
from ._dsp import FS, STEP, ctrl_noise, gate, n_ctrl, poisson_events, region_envelope, smooth, uniform_process
from .hypnograms import EPOCH_SAMPLES, Hypnogram
from .labels import challenge_arousals
from .hardware import apply_filters, kinds
from .montage import derivation
from .sites import PHYSIONET_2018, SiteProfile
from .subject import Subject

CTRL_PER_EPOCH = EPOCH_SAMPLES // STEP  # 300

# Per-stage parameters, columns W, N1, N2, N3, REM. ("beta", a, b) draws a fraction from Beta(a, b)
# (("beta", a, b, offset, scale): offset + scale * Beta(a, b));
# ("ln", median, sigma) a log-normal value; a plain tuple is a constant per stage.
STAGE_TABLE: dict[str, tuple] = {
    # EEG. alpha_frac: share of the time with alpha (AASM: W > 50 % with eyes closed, N1 < 50 %);
    # alpha_level: its amplitude relative to eyes-closed wake (drowsy alpha is slower and smaller,
    # REM alpha bursts smaller still: Cantero & Atienza, Clin Neurophysiol, 2000);
    # sw_frac: share of the time with slow waves (AASM: N3 >= 20 % of 0.5-2 Hz waves > 75 µV);
    # bg_*: per-epoch amplitude factor of each background band (epoch-to-epoch variation).
    "alpha_frac": (("beta", 2.2, 1.2), ("beta", 1.0, 5.0), ("beta", 1.0, 25.0), ("beta", 1.0, 40.0), ("beta", 1.0, 9.0)),
    "alpha_level": (1.0, 0.35, 0.3, 0.3, 0.45),
    # sw_level: slow-wave amplitude relative to N3 (waves are larger the deeper the sleep:
    # Riedner et al., Sleep 30:1643, 2007; most N2 delta waves stay below the 75 µV criterion).
    "sw_level": (0.5, 0.5, 0.65, 1.0, 0.5),
    "sw_frac": (0.0, ("beta", 1.0, 80.0), ("beta", 1.2, 30.0), ("beta", 2.0, 2.5, 0.2, 0.7), ("beta", 1.0, 150.0)),
    "bg_delta": (("ln", 1.0, 0.2),) * 5,
    "bg_theta": (("ln", 1.0, 0.2),) * 5,
    "bg_alpha_bg": (("ln", 1.0, 0.2),) * 5,
    "bg_beta": (("ln", 1.0, 0.25),) * 5,
    "spindle_rate": (0.0, 0.0, ("ln", 1.0, 0.4), 0.6, 0.0),  # x subject density (per min in N2)
    "kc_rate": (0.0, 0.08, ("ln", 1.0, 0.45), 0.4, 0.0),  # x subject density
    "vertex_rate": (0.0, ("ln", 1.5, 0.6), 0.3, 0.0, 0.1),  # per min
    "sawtooth_rate": (0.0, 0.05, 0.0, 0.0, 3.0),  # per min, x phasic
    # EOG
    "saccade_rate": (22.0, 0.8, 0.1, 0.0, 50.0),  # per min; W x eyes open, REM x phasic
    "blink_rate": (16.0, 0.4, 0.0, 0.0, 0.0),  # per min; W x eyes open
    "sem_uv": (("ln", 8.0, 0.5), ("ln", 14.0, 0.5), ("ln", 8.0, 0.5), ("ln", 3.0, 0.4), ("ln", 6.0, 0.5)),
    "phasic": (0.0, 0.0, 0.0, 0.0, ("beta", 1.4, 2.0)),
    # EMG
    "emg_uv": (("ln", 16.0, 0.35), ("ln", 7.0, 0.35), ("ln", 5.5, 0.35), ("ln", 5.0, 0.35), ("ln", 2.0, 0.4)),
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
    """A generated night: signals [C, n] float32 at 200 Hz (µV; ECG mV; SaO2 %), and its events."""

    signals: np.ndarray
    channels: tuple[str, ...]  # names of the signals' rows (the site's channels)
    hypnogram: Hypnogram  # the labels to write: the driving hypnogram as the challenge's files can hold it
    arousal_annotations: np.ndarray  # [K, 2] samples: the physiological (annotated) target arousals
    resp_events: np.ndarray  # [R, 2] samples
    resp_kinds: list[str]
    transients: dict[str, np.ndarray]  # EEG transients' times (samples) by kind, see `eeg.derivations`

    def channel(self, name: str) -> np.ndarray:
        return self.signals[self.channels.index(name)]


# Not blended from a neighbouring stage: blinks and saccades stop when the eyes close (drowsiness).
_OWN_STAGE_ONLY = ("saccade_rate", "blink_rate")


def _neighbours(stages: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per epoch: the stage of a differing neighbour (itself if none) and how much it blends in.

    Epochs next to a stage change look partly like the neighbouring stage (up to 40 %), the next
    ones in a little (up to 15 %): scorers call such epochs on a majority, the signals change
    gradually (AASM manual v2.6, rules for stage transitions).
    """
    prev = np.r_[stages[0], stages[:-1]]
    nxt = np.r_[stages[1:], stages[-1]]
    neighbour = np.where(prev != stages, prev, np.where(nxt != stages, nxt, stages))
    blend = np.where(neighbour != stages, rng.uniform(0.0, 0.4, len(stages)), 0.0)
    prev2 = np.r_[stages[:2], stages[:-2]]
    nxt2 = np.r_[stages[2:], stages[-2:]]
    second = (neighbour == stages) & ((prev2 != stages) | (nxt2 != stages))
    neighbour = np.where(second, np.where(prev2 != stages, prev2, nxt2), neighbour)
    blend = np.where(second, rng.uniform(0.0, 0.15, len(stages)), blend)
    return neighbour, blend


def controls(rng: np.random.Generator, hyp: Hypnogram, s: Subject, eyes_open_share: float = 0.3) -> dict[str, np.ndarray]:
    """Stage-driven control signals (10 Hz) from the hypnogram: see the module doc, steps 1-2."""
    m = n_ctrl(hyp.n_samples)
    stages = np.where(hyp.stages == STAGE_UNDEFINED, 0, hyp.stages)  # unscored time: awake, lights on
    open_latent = signal.lfilter([np.sqrt(1 - 0.8**2)], [1, -0.8], rng.standard_normal(len(stages)))
    eyes_open = (stages == 0) & ((ndtr(open_latent) < eyes_open_share) | (hyp.stages == STAGE_UNDEFINED))
    neighbour, blend = _neighbours(stages, rng)
    values = {}
    for name, spec in STAGE_TABLE.items():
        own = _epoch_values(rng, stages, spec)
        other = _epoch_values(rng, neighbour, spec)
        values[name] = own if name in _OWN_STAGE_ONLY else (1 - blend) * own + blend * other
    # Blending never breaks the scoring rules (AASM v2.6): N3 >= 20 % slow waves, N2 below;
    # N1 < 50 % alpha.
    values["sw_frac"] = np.where(stages == 3, np.maximum(values["sw_frac"], 0.22), values["sw_frac"])
    values["sw_frac"] = np.where(stages == 2, np.minimum(values["sw_frac"], 0.12), values["sw_frac"])
    values["alpha_frac"] = np.where(stages == 1, np.minimum(values["alpha_frac"], 0.45), values["alpha_frac"])
    # Slow waves outside N3 stay mostly below 75 µV on frontal derivations, whatever the subject's
    # N3 amplitude (else the scorer would have called N3): scalp peak-to-peak capped at 95 µV.
    values["sw_uv"] = np.where(stages == 3, s.sw_uv * values["sw_level"], np.minimum(s.sw_uv * values["sw_level"], 95.0))
    wake = stages == 0
    values["alpha_frac"][eyes_open] *= s.alpha_eyes_open
    values["bg_beta"][eyes_open] *= 1.3
    values["sem_uv"][wake & ~eyes_open] *= 2.0  # drowsy, eyes closed: slow eye movements
    values["saccade_rate"][wake] *= np.where(eyes_open[wake], 1.0, 0.15)
    values["blink_rate"][wake] *= np.where(eyes_open[wake], 1.0, 0.2)
    rem = stages == 4
    values["saccade_rate"][rem] *= values["phasic"][rem]
    values["sawtooth_rate"][rem] *= 0.3 + values["phasic"][rem]
    values["twitch_rate"][rem] *= 0.3 + values["phasic"][rem]
    values["movement_rate"][hyp.stages == STAGE_UNDEFINED] *= 2.0
    c = {name: _to_ctrl(v, m, s.transition_s) for name, v in values.items()}
    for k in range(5):  # stage membership, blended at transitions, for the background spectrum
        member = (1 - blend) * (stages == k) + blend * (neighbour == k)
        c[f"stage_{k}"] = _to_ctrl(member, m, s.transition_s)
    # Within-epoch drift of the amplitudes.
    c["depth_mod"] = np.exp(0.2 * ctrl_noise(rng, m, 20.0))
    c["alpha_mod"] = np.exp(0.25 * ctrl_noise(rng, m, 8.0))
    for name in ("bg_theta", "bg_beta", "emg_uv"):
        c[name] = c[name] * np.exp(0.15 * ctrl_noise(rng, m, 10.0))
    c["bg_delta"] = c["bg_delta"] * c["depth_mod"]
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
    # The EEG during arousals: alpha (gated in `eeg_controls`), theta and beta up, delta down.
    c["bg_delta"] = c["bg_delta"] * np.clip(1.0 - 0.6 * c["arousal"], 0.2, 1.0)
    c["bg_theta"] = c["bg_theta"] * (1 + 0.8 * c["arousal_theta"])
    c["bg_beta"] = c["bg_beta"] * (1 + 1.5 * c["arousal_beta"])
    onsets = regions[:, 0] if len(regions) else np.zeros(0)
    nrem = c["nrem"][np.clip(onsets // STEP, 0, m - 1).astype(np.int64)] > 0.5 if len(onsets) else np.zeros(0, bool)
    return onsets[nrem & (rng.random(len(onsets)) < 0.35)].astype(float)


def alpha_amplitude(rng: np.random.Generator, c: dict) -> np.ndarray:
    """Alpha amplitude on the control grid (1 = the subject's eyes-closed alpha): on for alpha_frac."""
    alpha_frac = np.maximum(c["alpha_frac"], c["arousal_alpha"])
    on = gate(alpha_frac, uniform_process(rng, len(alpha_frac), 2.0))
    level = np.maximum(c["alpha_level"], c["arousal_alpha"])
    return level * (0.08 + 0.92 * on) * c["alpha_mod"]


def movement_controls(rng: np.random.Generator, c: dict, m: int, arousal_regions: np.ndarray) -> np.ndarray:
    """Control-grid envelope of body movements: spontaneous (stage rate) and at 25 % of arousals."""
    starts = poisson_events(rng, c["movement_rate"])
    regions = np.asarray(arousal_regions, np.int64).reshape(-1, 2)
    at_arousal = regions[rng.random(len(regions)) < 0.25, 0] + rng.uniform(0, 2 * FS)
    starts = np.concatenate([starts, at_arousal]) if len(at_arousal) else starts
    lengths = rng.uniform(1.0, 10.0, len(starts)) * FS
    moves = np.stack([starts, starts + lengths], axis=1).astype(np.int64) if len(starts) else np.zeros((0, 2), np.int64)
    return region_envelope(m, moves, 0.3, rng.uniform(0.3, 1.5, len(moves)))


def generate_night(hyp: Hypnogram, s: Subject, rng: np.random.Generator, site: SiteProfile = PHYSIONET_2018) -> Night:
    """All channels of `site` for one night following `hyp`, for subject `s`, at 200 Hz (see `Night`)."""
    n = hyp.n_samples
    m = n_ctrl(n)
    s = replace(s, eeg_tilt=s.eeg_tilt + site.slope)  # the site's spectral slope offset
    streams = rng.spawn(9)  # one stream per part: changing one generator leaves the others alone
    c = controls(streams[0], hyp, s, site.eyes_open)
    c["movement_rate"] = c["movement_rate"] * site.artifacts
    labels = challenge_arousals(hyp)
    target_ann = labels.annotations
    events, kinds_ = body.place_resp_events(streams[1], hyp.stages, n, s, labels.blocked)
    if len(labels.forced_resp):
        events = np.concatenate([events, labels.forced_resp])
        kinds_ = kinds_ + ["resp_hypopnea"] * len(labels.forced_resp)
        order = np.argsort(events[:, 0], kind="stable")
        events, kinds_ = events[order], [kinds_[i] for i in order]
    other, other_intensity = body.terminal_arousals(streams[1], events, kinds_)
    kc_times = arousal_controls(streams[2], c, m, target_ann, other, other_intensity)
    c["arousal_kc_times"] = kc_times
    movement = movement_controls(streams[2], c, m, np.concatenate([target_ann, other]).reshape(-1, 2))
    rera = target_ann[streams[2].random(len(target_ann)) < 0.6, 0] if len(target_ann) else np.zeros(0, np.int64)

    names = site.channels
    x = np.zeros((len(names), n), np.float32)
    idx = {name: i for i, name in enumerate(names)}
    breath = body.breathing(streams[3], n, c, s, events, kinds_, rera)
    for name in ("ABD", "CHEST", "AIRFLOW"):
        x[idx[name]] = breath[name]
    x[idx["SaO2"]] = body.sao2(streams[3], n, c, s, breath["deficit"])
    x[idx[site.ecg]] = body.ecg(streams[4], n, c, s, breath["phase_ctrl"], events)
    ecg_uv = x[idx[site.ecg]] * np.float32(1000.0)
    eye_h, eye_v = brain.eye_signals(streams[5], n, c, s)
    c["alpha_amp"] = alpha_amplitude(streams[5], c)
    c["sigma_amp"] = c["spindle_rate"] * np.clip(1.0 - 0.8 * c["arousal"], 0.05, 1.0)
    c["muscle_uv"] = c["emg_uv"] * s.emg_gain * (1.0 + c["arousal_emg"])
    derivs = [derivation(name) for name in (*site.eeg, *site.eog)]
    exg, transients = eeg.derivations(streams[5], n, c, s, derivs, eye_h, eye_v, ecg_uv)
    x[: len(derivs)] = exg * np.float32(site.amplitude)
    del eye_h, eye_v, exg
    x[idx[site.emg]] = brain.chin_emg(streams[6], n, c, s, ecg_uv, breath["phase"])
    del breath, ecg_uv
    channel_kinds = kinds(site)
    quality = artifacts.draw_quality(streams[8], channel_kinds, site)
    artifacts.add_artifacts(streams[7], x, channel_kinds, quality, site, movement, s.movement_gain)
    apply_filters(x, site)
    return Night(x, names, labels.hypnogram, target_ann, events, kinds_, transients)
