"""`physioserve synth`: layout, readability, labels = hypnogram, determinism, per-stage physiology, CLI."""

from __future__ import annotations

import dataclasses
import filecmp

import h5py
import numpy as np
import pytest
import scipy.io
import wfdb
from scipy import signal

from physioserve.cli import main as cli_main
from physioserve.io import read_labels, read_recording
from physioserve.synth.corpus import plan_corpus, synthesize_corpus
from physioserve.synth.hypnograms import (
    HELD_OUT,
    Hypnogram,
    default_hypnograms,
    load_hypnograms,
    packaged_hypnograms,
)
from physioserve.synth.labels import challenge_arousals
from physioserve.synth.physiology import generate_night
from physioserve.synth.sites import CHANNEL_NAMES, PHYSIONET_2018
from physioserve.synth.subject import draw_subject

REAL_NAMES = [
    "F3-M2", "F4-M1", "C3-M2", "C4-M1", "O1-M2", "O2-M1",
    "E1-M2", "Chin1-Chin2", "ABD", "CHEST", "AIRFLOW", "SaO2", "ECG",
]
REAL_UNITS = ["uV"] * 11 + ["%", "mV"]
FS = 200


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """3 records x 6 min, the last one unlabelled, written with 2 worker processes."""
    out = tmp_path_factory.mktemp("synth")
    synthesize_corpus(out, 3, hours=0.1, seed=7, unlabelled=1, workers=2, progress=False)
    return out, plan_corpus(3, seed=7, hours=0.1, unlabelled=1)


# ------------------------------------------------------------------------------ layout and reading


def test_layout_like_the_challenge(corpus):
    out, plans = corpus
    assert [p.name for p in plans] == ["tr90-0001", "tr90-0002", "te90-0003"]
    for p in plans:
        files = sorted(f.name for f in (out / p.name).iterdir())
        labels = [f"{p.name}-arousal.mat", f"{p.name}.arousal"] if p.labelled else []
        assert files == sorted([f"{p.name}.hea", f"{p.name}.mat", *labels])
    lines = (out / "age-sex.csv").read_text().splitlines()
    assert lines[0] == "Record,Age,Sex"
    assert [line.split(",")[0] for line in lines[1:]] == [p.name for p in plans]
    for line, p in zip(lines[1:], plans, strict=True):
        age, sex = line.split(",")[1:]
        assert int(age) == p.age and 18 <= p.age <= 90 and sex in ("M", "F")


def test_header_lines_like_the_real_ones(corpus):
    out, plans = corpus
    lines = (out / "tr90-0001" / "tr90-0001.hea").read_text().splitlines()
    assert lines[0] == f"tr90-0001 13 200 {plans[0].hypnogram.n_samples}"
    assert lines[1].startswith("tr90-0001.mat 16+24 1/uV 16 0 ") and lines[1].endswith(" 0 F3-M2")
    assert " 655.35(-32768)/% 16 0 " in lines[12] and lines[12].endswith("SaO2")
    assert " 1000/mV 16 0 " in lines[13] and lines[13].endswith("ECG")


def test_plain_wfdb_reads_every_record(corpus):
    out, plans = corpus
    for p in plans:
        rec = wfdb.rdrecord(str(out / p.name / p.name))
        assert rec.sig_name == REAL_NAMES
        assert rec.fs == FS and rec.units == REAL_UNITS
        assert rec.p_signal.shape == (p.hypnogram.n_samples, 13)
        assert not np.isnan(rec.p_signal).any()
        sao2 = rec.p_signal[:, 11]
        assert 50 <= sao2.min() and sao2.max() <= 100.01
        digital = wfdb.rdrecord(str(out / p.name / p.name), physical=False)
        assert all((a - b) % 65536 == 0 for a, b in zip(digital.checksum, digital.calc_checksum(), strict=True))
        mat = scipy.io.loadmat(out / p.name / f"{p.name}.mat")["val"]  # also a MATLAB v4 file
        np.testing.assert_array_equal(mat.T, digital.d_signal)


def test_project_reader_reads_records_ages_and_modalities(corpus):
    out, plans = corpus
    for p in plans:
        rec = read_recording(out / p.name)
        assert rec.modality_channels == {"eeg": "F3-M2", "eog": "E1-M2", "emg": "Chin1-Chin2", "ecg": "ECG"}
        assert rec.age == p.age and rec.sex == p.sex
        assert (rec.labels is not None) == p.labelled
        assert rec.n_windows == p.hypnogram.n_epochs


# ------------------------------------------------------------------------------------------ labels


def _regions(mask: np.ndarray) -> np.ndarray:
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)], axis=1)


def test_labels_equal_the_driving_hypnogram(corpus):
    out, plans = corpus
    for p in [p for p in plans if p.labelled]:
        hyp = p.hypnogram  # a real hypnogram: every region is written exactly, none dropped
        assert np.array_equal(challenge_arousals(hyp).hypnogram.arousal_regions, hyp.arousal_regions)
        folder = out / p.name
        with h5py.File(folder / f"{p.name}-arousal.mat", "r") as f:
            arousals = f["data/arousals"][()]
            assert arousals.shape == (hyp.n_samples, 1) and arousals.dtype == np.float64
            stages = {k: f[f"data/sleep_stages/{k}"][()] for k in ("wake", "nonrem1", "nonrem2", "nonrem3", "rem", "undefined")}
        assert all(v.shape == (1, hyp.n_samples) and v.dtype == np.uint8 for v in stages.values())
        onehot = np.stack([stages[k][0] for k in ("wake", "nonrem1", "nonrem2", "nonrem3", "rem", "undefined")])
        assert (onehot.sum(axis=0) == 1).all()
        mids = np.arange(hyp.n_epochs) * 6000 + 3000
        np.testing.assert_array_equal(onehot.argmax(axis=0)[mids], hyp.stages)
        np.testing.assert_array_equal(_regions(arousals[:, 0] == 1), hyp.arousal_regions)
        for label_file in (f"{p.name}-arousal.mat", f"{p.name}.arousal"):
            labels = read_labels(folder / label_file)
            np.testing.assert_array_equal(labels.stages, hyp.stages)
            np.testing.assert_array_equal(np.round(labels.arousal_regions_s * FS).astype(int), hyp.arousal_regions)


def test_annotation_file_holds_stage_notes_and_event_pairs(corpus):
    out, plans = corpus
    p = plans[0]
    ann = wfdb.rdann(str(out / p.name / p.name), "arousal")
    assert ann.fs == FS and set(ann.symbol) == {'"'}
    notes = set(ann.aux_note)
    assert notes <= {"W", "N1", "N2", "N3", "R"} | {f"{o}{k}{c}" for k in (
        "arousal_rera", "resp_obstructiveapnea", "resp_hypopnea", "resp_centralapnea") for o, c in (("(", ""), ("", ")"))}
    opened = sum(n.startswith("(") for n in ann.aux_note)
    assert opened == sum(n.endswith(")") for n in ann.aux_note)
    assert sum(n == "(arousal_rera" for n in ann.aux_note) == len(p.hypnogram.arousal_regions)


def test_every_packaged_region_is_writable():
    for hyp in packaged_hypnograms()[::20]:
        written = challenge_arousals(hyp)
        np.testing.assert_array_equal(written.hypnogram.arousal_regions, hyp.arousal_regions)
        assert len(written.annotations) == len(hyp.arousal_regions)


# ----------------------------------------------------------------------------------- determinism


def test_deterministic_whatever_the_worker_count(tmp_path, corpus):
    out, plans = corpus
    again = tmp_path / "again"
    synthesize_corpus(again, 2, hours=0.1, seed=7, workers=1, progress=False)  # fewer records, 1 worker
    for p in plans[:2]:  # byte-identical files
        for suffix in (".mat", ".hea", ".arousal", "-arousal.mat"):
            assert filecmp.cmp(out / p.name / f"{p.name}{suffix}", again / p.name / f"{p.name}{suffix}", shallow=False)
    other = plan_corpus(2, seed=8, hours=0.1)
    assert [p.source for p in other] != [p.source for p in plans[:2]] or [p.age for p in other] != [p.age for p in plans[:2]]


def test_held_out_hypnograms_are_the_last_ten_and_unused_by_default():
    names = [h.name for h in packaged_hypnograms()]
    assert len(names) == 200 and tuple(names[-10:]) == HELD_OUT
    assert not {h.name for h in default_hypnograms()} & set(HELD_OUT)
    assert not {p.source for p in plan_corpus(400, seed=1, hours=0.01)} & set(HELD_OUT)


# ----------------------------------------------------------------------------- per-stage physiology


CLEAN = dataclasses.replace(PHYSIONET_2018, artifacts=0.0)  # no movements, pops, sweat or bad leads


@pytest.fixture(scope="module")
def staged_nights():
    """Three subjects (no artefacts), each 4 rounds of 6 epochs of W, N1, N2, N3, REM: 1 h at 200 Hz."""
    stages = np.tile(np.repeat(np.arange(5), 6), 4).astype(np.int8)
    hyp = Hypnogram("blocks", stages, np.zeros((0, 2)), len(stages) * 6000)
    nights = []
    for seed, age in ((1, 30), (2, 55), (3, 75)):
        rng = np.random.default_rng(seed)
        subject = draw_subject(rng, age, "F" if seed % 2 else "M")
        nights.append(generate_night(hyp, subject, rng, CLEAN))
    return stages, nights


def _band_power(x: np.ndarray, stages: np.ndarray, stage: int, lo: float, hi: float, stat=np.median) -> float:
    """Median (or `stat`) over the stage's epochs, 1 left out at each transition, of the band power."""
    inner = (stages == stage) & (np.roll(stages, 1) == stage) & (np.roll(stages, -1) == stage)
    epochs = np.flatnonzero(inner)
    windows = np.stack([x[e * 6000:(e + 1) * 6000] for e in epochs]).astype(np.float64)
    f, p = signal.welch(windows, fs=FS, nperseg=800, axis=-1)
    return float(stat(p[:, (f >= lo) & (f < hi)].mean(axis=1)))


def _channels(night, names):
    return [night.channel(n) for n in names]


def test_n3_delta_well_above_wake(staged_nights):
    stages, nights = staged_nights
    for night in nights:
        for x in _channels(night, ["F3-M2", "F4-M1", "C3-M2"]):
            assert _band_power(x, stages, 3, 0.5, 2) > 3 * _band_power(x, stages, 0, 0.5, 2)


def test_n3_slow_waves_reach_75_uv_peak_to_peak(staged_nights):
    stages, nights = staged_nights
    sos = signal.butter(2, [0.5, 2.0], btype="bandpass", fs=FS, output="sos")
    young = nights[0].channel("F3-M2")
    delta = signal.sosfiltfilt(sos, young.astype(np.float64))
    epochs = np.flatnonzero((stages == 3) & (np.roll(stages, 1) == 3) & (np.roll(stages, -1) == 3))
    # peak-to-peak per 1 s of delta; share of the epoch above 75 µV
    shares = [np.mean(np.ptp(delta[e * 6000:(e + 1) * 6000].reshape(30, 200), axis=1) > 75) for e in epochs]
    assert np.median(shares) >= 0.2


def test_wake_chin_emg_above_rem(staged_nights):
    stages, nights = staged_nights
    for night in nights:
        x = night.channel("Chin1-Chin2")
        assert _band_power(x, stages, 0, 20, 90) > 4 * _band_power(x, stages, 4, 20, 90)


def test_spindle_band_in_n2_above_n1(staged_nights):
    stages, nights = staged_nights
    for night in nights:
        x = night.channel("C3-M2")
        assert _band_power(x, stages, 2, 11, 16) > 1.2 * _band_power(x, stages, 1, 11, 16)


def test_occipital_alpha_in_wake_above_n2(staged_nights):
    """Over subjects (one of these has low-voltage alpha, as ~10 % of adults: not every one by 1.5x)."""
    stages, nights = staged_nights
    for name in ("O1-M2", "O2-M1"):  # mean: eyes-open wake epochs have little alpha
        ratios = [_band_power(n.channel(name), stages, 0, 8, 12, np.mean) / _band_power(n.channel(name), stages, 2, 8, 12, np.mean)
                  for n in nights]
        assert np.median(ratios) > 1.5 and min(ratios) > 0.8, ratios


def test_rem_eye_movements_on_eog(staged_nights):
    stages, nights = staged_nights
    ratios = [_band_power(n.channel("E1-M2"), stages, 4, 0.3, 3) / _band_power(n.channel("E1-M2"), stages, 2, 0.3, 3)
              for n in nights]
    assert np.median(ratios) > 1.5 and min(ratios) > 0.7, ratios


def test_age_lowers_delta_spindles_and_heart_rate_variability():
    rng = np.random.default_rng(0)
    young = [draw_subject(rng, 25, "M") for _ in range(200)]
    old = [draw_subject(rng, 80, "M") for _ in range(200)]
    for field in ("sw_uv", "kc_uv", "spindle_per_min", "spindle_uv", "rsa_bpm", "r_mv", "t_mv"):
        assert np.mean([getattr(s, field) for s in old]) < 0.85 * np.mean([getattr(s, field) for s in young]), field
    assert np.mean([s.pvc_per_hour for s in old]) > np.mean([s.pvc_per_hour for s in young])


# --------------------------------------------------------------------------- user hypnograms, CLI


def test_user_hypnogram_text_file_drives_a_record(tmp_path):
    path = tmp_path / "night.csv"
    rows = ["stage"] + ["?"] * 2 + ["W"] * 3 + ["N1"] * 2 + ["N2"] * 5 + ["R"] * 3 + ["arousal,400.0,430.5"]
    path.write_text("\n".join(rows) + "\n")
    (hyp,) = load_hypnograms(path)
    np.testing.assert_array_equal(hyp.stages, [5, 5, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 4, 4, 4])
    np.testing.assert_array_equal(hyp.arousal_regions, [[80000, 86100]])
    out = tmp_path / "out"
    synthesize_corpus(out, 1, seed=0, hypnograms=[hyp], workers=1, progress=False)
    labels = read_labels(out / "tr90-0001" / "tr90-0001.arousal")
    np.testing.assert_array_equal(labels.stages, hyp.stages)
    np.testing.assert_array_equal(np.round(labels.arousal_regions_s * FS), hyp.arousal_regions)


def test_user_hypnograms_from_npz_and_edf(tmp_path, shared_data):
    path = tmp_path / "one.npz"
    np.savez(path, stages=np.array([0, 1, 2, 2, 3, 5, 4]), arousal_regions_s=np.array([[65.0, 80.0]]))
    (hyp,) = load_hypnograms(path)
    np.testing.assert_array_equal(hyp.stages, [0, 1, 2, 2, 3, 3, 4])  # an inner undefined epoch is filled
    np.testing.assert_array_equal(hyp.arousal_regions, [[13000, 16000]])
    (edf,) = load_hypnograms(shared_data / "other" / "hypnogram_annotations.edf")
    assert edf.n_epochs == 854 and edf.stages[0] == 0 and set(np.unique(edf.stages)) == {0, 1, 2, 3, 4}
    several = load_hypnograms(shared_data / "physionet2018" / "labels.npz")
    assert len(several) == 949 and several[0].name == "tr03-0005"


def test_cli_synth_writes_a_corpus(tmp_path, capsys):
    out = tmp_path / "corpus"
    assert cli_main(["synth", str(out), "--records", "2", "--hours", "0.2", "--seed", "0", "--quiet"]) == 0
    assert "wrote 2 records" in capsys.readouterr().out
    for name in ("tr90-0001", "tr90-0002"):
        rec = wfdb.rdrecord(str(out / name / name))
        assert rec.sig_name == REAL_NAMES and rec.sig_len == int(0.2 * 3600 * FS)
    assert cli_main(["synth", str(out), "--records", "2", "--hours", "0.2", "--quiet"]) == 2  # no silent overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert cli_main(["synth", str(out), "--records", "1", "--unlabelled", "2", "--quiet"]) == 2


def test_channel_order_matches_the_writer():
    assert list(CHANNEL_NAMES) == REAL_NAMES


def test_short_crops_always_hold_a_scored_epoch():
    """A crop entirely before scoring starts would have no stage note (wfdb.wrann refuses an empty file)."""
    from physioserve.synth.corpus import _crop
    from physioserve.synth.hypnograms import Hypnogram

    stages = np.r_[np.full(50, 5), np.full(100, 2)].astype(np.int8)
    hyp = Hypnogram("late-start", stages, np.zeros((0, 2), np.int64), len(stages) * 6000)
    rng = np.random.default_rng(0)
    for _ in range(200):
        assert (_crop(rng, hyp, hours=3 / 120).stages != 5).any()  # 3 epochs
