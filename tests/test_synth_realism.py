"""The generator's EEG against the published shapes: calibrated background, steep fall-off, broad
theta, occipital alpha, N1 quieter than N2, spindles and slow waves at their published rates."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import signal

from physioserve.synth import eeg, norms
from physioserve.synth.background import n_frames, synthesise
from physioserve.synth.hypnograms import Hypnogram
from physioserve.synth.montage import coefficients, derivation, fields_of, power_gain
from physioserve.synth.physiology import generate_night
from physioserve.synth.sites import PHYSIONET_2018
from physioserve.synth.subject import draw_subject

FS = 200
CLEAN = dataclasses.replace(PHYSIONET_2018, artifacts=0.0)


def _psd(x: np.ndarray, nperseg: int = 800) -> tuple[np.ndarray, np.ndarray]:
    return signal.welch(x.astype(np.float64), FS, nperseg=nperseg, axis=-1)


def test_background_synthesis_gives_the_asked_spectrum_on_every_derivation():
    n = FS * 600
    derivs = [derivation(d) for d in ("C4-M1", "F3-M2", "O1-A2", "Fpz-Cz")]
    fields = fields_of(derivs)
    from physioserve.synth.background import FREQS

    target = np.where(FREQS > 0, 20.0 / (1 + (FREQS / 2.0) ** 2), 0.0)
    coef = coefficients("delta", derivs, fields)[None]  # [1, D, J]
    x = synthesise(np.random.default_rng(0), n, [(np.ones((n_frames(n), 1)), np.sqrt(target)[None], coef, None, False)])
    assert x.shape == (4, n) and x.dtype == np.float32
    f, p = _psd(x)
    for i, d in enumerate(derivs):
        for q in (1.0, 2.0, 4.0, 8.0, 16.0):
            expected = power_gain("delta", d) * 20.0 / (1 + (q / 2.0) ** 2)
            assert p[i, f == q][0] == pytest.approx(expected, rel=0.2), (d.name, q)


def test_background_matches_the_design_table_on_c4_m1():
    rng = np.random.default_rng(1)
    s = dataclasses.replace(draw_subject(rng, 55, "M"), eeg_power=1.0, eeg_tilt=0.0)
    n, m = FS * 300, FS * 300 // 20 + 2
    nodes = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0])
    for stage in range(5):
        c = {f"stage_{k}": np.full(m, float(k == stage)) for k in range(5)}
        c |= {name: np.ones(m) for name in ("bg_delta", "bg_theta", "bg_alpha_bg", "bg_beta")}
        c |= {name: np.zeros(m) for name in ("alpha_amp", "sigma_amp", "muscle_uv")}
        x = eeg._background(rng, n, c, s, [derivation("C4-M1")])
        f, p = _psd(x[0])
        measured = np.array([p[f == q][0] for q in nodes])
        np.testing.assert_allclose(measured, norms.background_psd(nodes, stage), rtol=0.3, err_msg=norms.STAGES[stage])


@pytest.fixture(scope="module")
def blocks():
    """Two subjects, 3 rounds of 10 epochs of each stage (2.5 h), no artefacts: stage spectra."""
    stages = np.tile(np.repeat(np.arange(5), 10), 3).astype(np.int8)
    hyp = Hypnogram("blocks", stages, np.zeros((0, 2)), len(stages) * 6000)
    nights = [generate_night(hyp, draw_subject(np.random.default_rng(seed), age, "F"), np.random.default_rng(seed), CLEAN)
              for seed, age in ((11, 35), (12, 65))]
    inner = (stages == np.roll(stages, 1)) & (stages == np.roll(stages, -1))
    return stages, inner, nights


def _stage_psd(night, name: str, stages, inner, stage: int):
    x = night.channel(name)
    epochs = np.stack([x[e * 6000:(e + 1) * 6000] for e in np.flatnonzero(inner & (stages == stage))])
    f, p = _psd(epochs - epochs.mean(axis=1, keepdims=True), 1000)
    return f, np.median(p, axis=0)


def test_steep_fall_off_above_15_hz_in_sleep(blocks):
    stages, inner, nights = blocks
    for night in nights:
        for stage in (2, 3, 4):  # N2, N3, REM: slope below -2 between 15 and 28 Hz (Lendner et al. 2020)
            f, p = _stage_psd(night, "C4-M1", stages, inner, stage)
            fit = (f >= 15) & (f <= 28)
            assert np.polyfit(np.log(f[fit]), np.log(p[fit]), 1)[0] < -2.0, stage


def test_theta_is_broad_without_a_peak(blocks):
    stages, inner, nights = blocks
    for night in nights:
        for stage in (0, 1, 2, 4):
            f, p = _stage_psd(night, "C4-M1", stages, inner, stage)
            bins = [p[(f >= lo) & (f < lo + 1)].mean() for lo in (3, 4, 5, 6)]
            assert all(b <= 1.15 * a for a, b in zip(bins, bins[1:])), stage  # 1 Hz bins fall across 3-7 Hz


def test_n1_is_quieter_than_n2_and_alpha_is_occipital_in_wake(blocks):
    stages, inner, nights = blocks
    sos = signal.butter(4, [0.5, 30], btype="bandpass", fs=FS, output="sos")
    for night in nights:
        x = signal.sosfiltfilt(sos, night.channel("C4-M1"))
        rms = [np.median([x[e * 6000:(e + 1) * 6000].std() for e in np.flatnonzero(inner & (stages == k))]) for k in (1, 2)]
        assert rms[0] < 0.85 * rms[1]
        fo, po = _stage_psd(night, "O1-M2", stages, inner, 0)
        fc, pc = _stage_psd(night, "C3-M2", stages, inner, 0)
        alpha = (fo >= 8) & (fo <= 12)
        assert po[alpha].sum() > 1.3 * pc[alpha].sum()


def test_transient_rates_within_published_ranges(blocks):
    stages, inner, nights = blocks
    minutes = {k: np.count_nonzero(inner & (stages == k)) / 2.0 for k in range(5)}
    for night in nights:
        t = night.transients
        epoch_of = {kind: np.minimum(times.astype(int) // 6000, len(stages) - 1) for kind, times in t.items()}
        stage_of = {kind: np.where(inner[e], stages[e], -1) for kind, e in epoch_of.items()}  # -1: next to a change
        spindles_n2 = np.count_nonzero(stage_of["spindle"] == 2) / minutes[2]
        assert 1.0 <= spindles_n2 <= 10.0  # Purcell et al. 2017
        assert np.count_nonzero(stage_of["spindle"] == 4) / minutes[4] < 0.05 * spindles_n2  # hardly any in REM
        kc_n2 = np.count_nonzero(stage_of["k_complex"] == 2) / minutes[2]
        assert 0.3 <= kc_n2 <= 4.0  # Colrain 2005
        sw_n3 = np.count_nonzero(stage_of["slow_wave"] == 3) / minutes[3]
        assert sw_n3 > 5 * max(np.count_nonzero(stage_of["slow_wave"] == 2) / minutes[2], 0.1)
        assert np.count_nonzero(stage_of["slow_wave"] == 0) / minutes[0] < 0.02 * sw_n3  # hardly any in wake
        assert np.count_nonzero(stage_of["sawtooth"] == 4) > np.count_nonzero(np.isin(stage_of["sawtooth"], (0, 2, 3)))


def test_n3_slow_waves_meet_the_scoring_rule_and_n2_mostly_not(blocks):
    """AASM: N3 = >= 20 % of the epoch with 0.5-2 Hz waves > 75 µV peak-to-peak (frontal)."""
    stages, inner, nights = blocks
    sos = signal.butter(2, [0.5, 2.0], btype="bandpass", fs=FS, output="sos")
    young = nights[0]
    delta = signal.sosfiltfilt(sos, young.channel("F4-M1").astype(np.float64))

    def share(stage):
        return [np.mean(np.ptp(delta[e * 6000:(e + 1) * 6000].reshape(30, 200), axis=1) > 75)
                for e in np.flatnonzero(inner & (stages == stage))]

    assert np.median(share(3)) >= 0.2
    assert np.median(share(2)) < 0.2


def test_the_docs_range_table_is_norms_ranges():
    """docs/SYNTHETIC.md's per-stage summary cites exactly `norms.RANGES` (one source of truth):
    every row, its range and its source, and no other row (regenerate with bench/realism.py --markdown)."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "SYNTHETIC.md").read_text()
    metrics = {m for m, *_ in norms.RANGES}
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in doc.splitlines()
            if line.startswith("| ") and line.split("|")[1].strip() in metrics]
    cited = [(r[0], r[1], r[2], r[3], r[6]) for r in rows]
    expected = [(m, st, d, f"{lo:g} - {hi:g}", src) for m, st, d, lo, hi, src in norms.RANGES]
    assert cited == expected
