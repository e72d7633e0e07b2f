"""Window cache: recording -> cache equals direct preprocessing bit for bit; split and resume rules."""

import json

import numpy as np
import pytest
import wfdb

from physioserve.cache import WindowCache, init_cache, make_split, write_record
from physioserve.modalities import MODALITIES
from physioserve.prepare import prepare
from physioserve.preprocessing import preprocess
from physioserve.recording import Channel, Labels, Recording

RNG = np.random.default_rng(7)


def make_recording(name: str, n_windows: int = 5, fs: int = 200, modalities=MODALITIES, age=60.0) -> Recording:
    names = {"eeg": "F3-M2", "eog": "E1-M2", "emg": "Chin1-Chin2", "ecg": "ECG"}
    channels = {
        names[m]: Channel(names[m], RNG.normal(0, 40, n_windows * 30 * fs), fs, "uV") for m in modalities
    }
    stages = RNG.integers(0, 6, n_windows).astype(np.int8)
    labels = Labels(stages=stages, arousal_regions_s=np.array([[30.0, 57.0], [90.0, 100.0]]))
    return Recording(name, channels, {m: names[m] for m in modalities}, labels=labels, age=age)


def test_cache_window_is_bit_identical_to_direct_preprocess(tmp_path):
    rec = make_recording("tr00-0001", modalities=("eeg", "emg"))
    init_cache(tmp_path)
    assert write_record(tmp_path, rec) == 5
    (tmp_path / "split.json").write_text(json.dumps(make_split(["tr00-0001"], [])))
    cache = WindowCache(tmp_path)
    cached = cache.windows(np.arange(5))  # [5, 4, 3000]
    for m in ("eeg", "emg"):
        raw = rec.channels[rec.modality_channels[m]].data[2 * 6000 : 3 * 6000]  # window 2, straight from the array
        assert np.array_equal(cached[2, MODALITIES.index(m)], preprocess(raw, 200, m))
    assert cache.mask[0].tolist() == [True, False, True, False]
    assert not cached[:, [1, 3]].any()


def test_cache_labels_follow_the_rules(tmp_path):
    rec = make_recording("tr00-0002")
    init_cache(tmp_path)
    write_record(tmp_path, rec)
    labels = WindowCache(tmp_path).labels
    expected_stage = np.where(rec.labels.stages == 5, -1, rec.labels.stages)
    assert labels["stage"].tolist() == expected_stage.tolist()
    # window 1 is 27/30 = 90 % inside an arousal (>= 75 %), window 3 only 10/30
    assert labels["arousal"].tolist() == [0, 1, 0, 0, 0]
    assert labels["age"].tolist() == [1] * 5


def test_split_is_by_patient_and_keeps_val_test_out_of_pretraining():
    labelled = [f"tr00-{i:04d}" for i in range(30)]
    unlabelled = [f"te00-{i:04d}" for i in range(5)]
    split = make_split(labelled, unlabelled)
    assert set(split["train"]) <= set(split["pretrain"])
    assert set(unlabelled) <= set(split["pretrain"])
    assert not (set(split["val"]) | set(split["test"])) & set(split["pretrain"])
    assert sorted(split["train"] + split["val"] + split["test"]) == labelled
    assert (len(split["train"]), len(split["val"]), len(split["test"])) == (20, 4, 6)  # 657/117/219 of 993


def test_cache_refuses_other_preprocessing(tmp_path):
    init_cache(tmp_path)
    header = json.loads((tmp_path / "cache.json").read_text())
    header["preprocessing"]["highpass_hz"] = 0.5
    (tmp_path / "cache.json").write_text(json.dumps(header))
    with pytest.raises(ValueError, match="different preprocessing config"):
        WindowCache(tmp_path)


def write_wfdb_record(root, name, n_windows=4, fs=200, ecg_mv=True):
    """A PhysioNet-2018-like record folder written with wfdb itself (header + format-16 signals)."""
    folder = root / name
    folder.mkdir(parents=True)
    n = n_windows * 30 * fs
    sig = np.column_stack([RNG.normal(0, 30, n), RNG.normal(0, 30, n), RNG.normal(0, 10, n), RNG.normal(0, 0.5, n)])
    wfdb.wrsamp(name, fs=fs, units=["uV", "uV", "uV", "mV" if ecg_mv else "uV"],
                sig_name=["F3-M2", "E1-M2", "Chin1-Chin2", "ECG"], p_signal=sig, fmt=["16"] * 4,
                adc_gain=[10.0, 10.0, 10.0, 1000.0], baseline=[0] * 4, write_dir=str(folder))
    return folder


def test_prepare_resumes_reports_bad_records_and_reuses_split(tmp_path):
    data = tmp_path / "data"
    for i in range(4):
        write_wfdb_record(data, f"tr00-{i:04d}")
    bad = data / "tr00-0009"
    bad.mkdir()
    (bad / "tr00-0009.hea").write_text("tr00-0009 1 200 6000\ntr00-0009.dat 16 1/uV 16 0 0 0 0 F3-M2\n")
    cache_dir = tmp_path / "cache"
    summary = prepare(data, cache_dir, workers=1, progress=False)
    assert summary["done"] == 4 and list(summary["failed"]) == ["tr00-0009"]
    assert "tr00-0009" in (cache_dir / "problems.json").read_text()
    split_before = (cache_dir / "split.json").read_text()
    again = prepare(data, cache_dir, workers=1, progress=False)
    assert again["skipped"] == 4 and again["prepared_now"] == 0
    assert (cache_dir / "split.json").read_text() == split_before
    cache = WindowCache(cache_dir)
    assert len(cache) == 16 and cache.mask.all()


def test_missing_samples_mark_only_that_window_and_modality_absent(tmp_path):
    rec = make_recording("tr00-0003", n_windows=3, modalities=("eeg", "ecg"))
    rec.channels["ECG"].data[6000 + 17] = np.nan  # one invalid ECG sample in window 1
    init_cache(tmp_path)
    write_record(tmp_path, rec)
    cache = WindowCache(tmp_path)
    assert cache.mask[:, [0, 3]].tolist() == [[True, True], [True, False], [True, True]]
    assert not cache.windows(np.array([1]))[0, 3].any()
    eeg_raw = rec.channels["F3-M2"].data[6000:12000]
    assert np.array_equal(cache.windows(np.array([1]))[0, 0], preprocess(eeg_raw, 200, "eeg"))
