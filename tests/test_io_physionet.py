"""PhysioNet 2018 reader: real label files, the sample-0 stage note, a written record end to end, errors."""

from __future__ import annotations

import shutil
import struct

import h5py
import numpy as np
import pytest
import scipy.io
import wfdb

from physioserve.io import RecordError, find_records, read_age_sex, read_labels, read_recording
from physioserve.io.common import HeaderChannel
from physioserve.io.physionet2018 import arousal_labels_from_annotations, read_arousal_annotations
from physioserve.io.wfdb_annotations import read_annotations

REAL_COUNTS = {"W": 367, "N1": 58, "N2": 267, "N3": 72, "REM": 81, "undefined": 12}


@pytest.fixture(scope="module")
def real(shared_data):
    return shared_data / "physionet2018"


# ------------------------------------------------------------------------------------ real labels


def test_arousal_and_mat_labels_agree_on_every_epoch(real):
    from_notes = read_labels(real / "tr03-0005.arousal")
    from_mat = read_labels(real / "tr03-0005-arousal.mat")
    assert len(from_notes.stages) == len(from_mat.stages) == 857
    assert from_notes.stage_counts() == from_mat.stage_counts() == REAL_COUNTS
    np.testing.assert_array_equal(from_notes.stages, from_mat.stages)
    assert from_mat.arousal_regions_s.shape == (27, 2)
    np.testing.assert_array_equal(from_notes.arousal_regions_s, from_mat.arousal_regions_s)


def test_labels_match_labels_npz(real):
    packed = np.load(real / "labels.npz")
    i = list(packed["records"]).index("tr03-0005")
    stages = packed["stage"][packed["epoch_offsets"][i] : packed["epoch_offsets"][i + 1]]
    regions = packed["arousal_regions"][packed["region_offsets"][i] : packed["region_offsets"][i + 1]]
    assert packed["n_samples"][i] == 5_147_000
    for source in ("tr03-0005.arousal", "tr03-0005-arousal.mat"):
        labels = read_labels(real / source)
        np.testing.assert_array_equal(labels.stages, stages)
        np.testing.assert_array_equal(np.round(labels.arousal_regions_s * 200).astype(int), regions)


def test_challenge_arousal_array_rebuilt_sample_for_sample(real):
    """The .arousal events rebuild data/arousals (+1 / 0 / -1) exactly, not only its +1 regions."""
    with h5py.File(real / "tr03-0005-arousal.mat", "r") as f:
        reference = np.ravel(f["data/arousals"][()]).astype(np.int8)
    annotations, fs = read_annotations(real / "tr03-0005.arousal")
    notes = [a for a in annotations if a.code == 22]
    codes = {"W": 0, "N1": 1, "N2": 2, "N3": 3, "R": 4}
    stage_notes = [(a.sample, codes[a.aux]) for a in notes if a.aux in codes]
    rebuilt = arousal_labels_from_annotations(notes, stage_notes, len(reference), fs)
    np.testing.assert_array_equal(rebuilt, reference)
    # The scorer's raw arousal events are shorter than the challenge's target regions.
    first = next(a.sample for a in notes if a.aux == "(arousal_rera")
    assert first == 192_904 and read_labels(real / "tr03-0005.arousal").arousal_regions_s[0, 0] * 200 == 192_503


def test_own_annotation_reader_matches_wfdb_on_real_file(real):
    ours, fs = read_annotations(real / "tr03-0005.arousal")
    theirs = wfdb.rdann(str(real / "tr03-0005"), "arousal", return_label_elements=["label_store"])
    assert fs == 200.0 and len(ours) == len(theirs.sample) == 240
    assert [a.sample for a in ours] == list(theirs.sample)
    assert [a.aux for a in ours] == list(theirs.aux_note)
    assert [a.code for a in ours] == list(theirs.label_store)
    assert [a.subtype for a in ours] == list(theirs.subtype)


def test_header_alone_of_real_record(real, tmp_path):
    recording = read_recording(real / "tr03-0005.hea", load_signals=False, all_channels=True)
    assert recording.name == "tr03-0005" and len(recording.channels) == 13
    assert recording.modality_channels == {"eeg": "F3-M2", "eog": "E1-M2", "emg": "Chin1-Chin2", "ecg": "ECG"}
    ecg, sao2 = recording.channels["ECG"], recording.channels["SaO2"]
    assert isinstance(ecg, HeaderChannel) and ecg.unit == "uV" and ecg.n_samples == 5_147_000 and ecg.data.size == 0
    assert sao2.unit == "%"
    assert recording.duration_s == 25_735.0 and recording.n_windows == 857
    assert recording.labels is not None and recording.labels.stage_counts() == REAL_COUNTS
    # The official header has CRLF line endings.
    crlf = tmp_path / "tr03-0005.hea"
    crlf.write_bytes((real / "tr03-0005.hea").read_bytes().replace(b"\n", b"\r\n"))
    assert read_recording(crlf, load_signals=False).modality_channels == recording.modality_channels
    with pytest.raises(RecordError, match=r"tr03-0005\.mat.*missing"):
        read_recording(real / "tr03-0005.hea")


# ---------------------------------------------------------------------------- sample-0 stage note


def test_stage_note_at_sample_zero_is_kept(tmp_path):
    # wrann with fs writes the challenge's layout: '## time resolution' note, SKIP -1, null +1, notes.
    samples = np.array([0, 6000, 12000, 15000, 18000])
    notes = ["W", "N2", "(arousal_rera", "arousal_rera)", "R"]
    wfdb.wrann("rec", "arousal", samples, symbol=['"'] * 5, aux_note=notes, fs=200, write_dir=str(tmp_path))
    dropped = wfdb.rdann(str(tmp_path / "rec"), "arousal")
    assert 0 not in dropped.sample  # the wfdb 4.3.1 behaviour this reader works around
    annotations, fs = read_annotations(tmp_path / "rec.arousal")
    assert fs == 200.0
    assert [(a.sample, a.aux) for a in annotations] == list(zip(samples.tolist(), notes))
    labels = read_arousal_annotations(tmp_path / "rec.arousal", n_samples=24_000)
    np.testing.assert_array_equal(labels.stages, [0, 2, 2, 4])
    # Challenge rule: [onset - 2 s, offset + 10 s], both ends included, in the .mat's indexing (sample - 1).
    np.testing.assert_array_equal(labels.arousal_regions_s * 200, [[12_000 - 401, 15_000 + 2000]])


def test_stage_note_at_sample_zero_without_time_resolution(tmp_path):
    wfdb.wrann("rec", "arousal", np.array([0, 6000]), symbol=['"'] * 2, aux_note=["N1", "N3"], write_dir=str(tmp_path))
    annotations, fs = read_annotations(tmp_path / "rec.arousal")
    assert fs is None and [(a.sample, a.aux) for a in annotations] == [(0, "N1"), (6000, "N3")]
    labels = read_arousal_annotations(tmp_path / "rec.arousal", n_samples=12_000, fs=200)
    np.testing.assert_array_equal(labels.stages, [1, 3])


def test_truncated_annotation_file(tmp_path, real):
    bad = tmp_path / "tr03-0005.arousal"
    bad.write_bytes((real / "tr03-0005.arousal").read_bytes()[:-2])  # drop the end-of-file word
    with pytest.raises(RecordError, match=r"tr03-0005\.arousal.*truncated"):
        read_labels(bad)
    bad.write_bytes((real / "tr03-0005.arousal").read_bytes()[:101])
    with pytest.raises(RecordError, match=r"tr03-0005\.arousal"):
        read_labels(bad)


# ------------------------------------------------------------------------- a record written here

FS = 200
N = 60 * FS  # two 30 s epochs
NAMES = ["F3-M2", "E1-M2", "Chin1-Chin2", "SaO2", "ECG"]
UNITS = ["uV", "uV", "uV", "%", "mV"]


def _signals() -> np.ndarray:
    t = np.arange(N) / FS
    return np.stack(
        [
            40 * np.sin(2 * np.pi * 2 * t),  # EEG, µV
            80 * np.sin(2 * np.pi * 0.5 * t),  # EOG, µV
            10 * np.sin(2 * np.pi * 30 * t),  # EMG, µV
            95 + np.sin(2 * np.pi * 0.1 * t),  # SaO2, %
            1.2 * np.sin(2 * np.pi * 1.2 * t),  # ECG, mV
        ],
        axis=1,
    )  # [N, 5]


def _write_record(root, name="rec1", mat=False):
    """A PhysioNet-2018-layout record `root/name/name.hea` + `.dat` (or `.mat`, as the challenge ships)."""
    folder = root / name
    folder.mkdir(parents=True)
    wfdb.wrsamp(
        name, fs=FS, units=UNITS, sig_name=NAMES, p_signal=_signals(), fmt=["16"] * 5,
        adc_gain=[10, 10, 100, 100, 1000], baseline=[0] * 5, write_dir=str(folder),
    )
    if mat:  # MATLAB v4 'val' matrix [5 x N] int16 = the .dat bytes after a 24-byte header ("16+24")
        dat = folder / f"{name}.dat"
        head = struct.pack("<5i", 30, 5, N, 0, 4) + b"val\0"
        (folder / f"{name}.mat").write_bytes(head + dat.read_bytes())
        dat.unlink()
        hea = folder / f"{name}.hea"
        hea.write_text(hea.read_text().replace(f"{name}.dat 16", f"{name}.mat 16+24"))
    return folder


@pytest.mark.parametrize("mat", [False, True], ids=["dat", "mat"])
def test_round_trip_of_written_record(tmp_path, mat):
    folder = _write_record(tmp_path, mat=mat)
    (tmp_path / "age-sex.csv").write_text("Record,Age,Sex\nrec1,61,F\nrec2,,M\n")
    wfdb.wrann("rec1", "arousal", np.array([0, 3000, 4000, 6000]), symbol=['"'] * 4,
               aux_note=["W", "(resp_hypopnea", "resp_hypopnea)", "N2"], fs=FS, write_dir=str(folder))
    if mat:
        raw = scipy.io.loadmat(folder / "rec1.mat")["val"]  # a real MATLAB file, as the challenge ships
        assert raw.shape == (5, N) and raw.dtype == np.int16

    recording = read_recording(folder)
    expected = _signals()
    assert recording.name == "rec1" and recording.age == 61.0 and recording.sex == "F"
    assert recording.modality_channels == {"eeg": "F3-M2", "eog": "E1-M2", "emg": "Chin1-Chin2", "ecg": "ECG"}
    assert set(recording.channels) == {"F3-M2", "E1-M2", "Chin1-Chin2", "ECG"}  # modality channels only
    for j, gain in [(0, 10), (1, 10), (2, 100)]:
        channel = recording.channels[NAMES[j]]
        assert channel.unit == "uV" and channel.fs == FS and len(channel.data) == N
        np.testing.assert_allclose(channel.data, expected[:, j], atol=0.5 / gain + 1e-9)
    ecg = recording.channels["ECG"]
    assert ecg.unit == "uV"
    np.testing.assert_allclose(ecg.data, expected[:, 4] * 1000, atol=0.5 + 1e-9)  # mV -> µV, 1/1000 mV steps
    assert recording.labels is not None and list(recording.labels.stages) == [0, 2]

    everything = read_recording(folder / "rec1.hea", all_channels=True)
    assert everything.channels["SaO2"].unit == "%"
    np.testing.assert_allclose(everything.channels["SaO2"].data, expected[:, 3], atol=0.005 + 1e-9)

    header_only = read_recording(folder, load_signals=False)
    assert header_only.duration_s == 60.0 and header_only.n_windows == 2
    assert all(c.data.size == 0 and c.n_samples == N for c in header_only.channels.values())


def test_find_records_and_age_sex(tmp_path):
    for name in ("tr02", "tr01"):
        _write_record(tmp_path, name)
    (tmp_path / "notes").mkdir()
    (tmp_path / "age-sex.csv").write_text("Record,Age,Sex\ntr01,34,M\ntr02,,\n")
    assert [p.name for p in find_records(tmp_path)] == ["tr01", "tr02"]
    assert read_age_sex(tmp_path) == {"tr01": (34.0, "M"), "tr02": (None, None)}
    assert read_age_sex(tmp_path / "tr01") == {}
    assert read_recording(tmp_path / "tr02", load_signals=False).age is None


# ------------------------------------------------------------------------------------------ errors


def test_truncated_signal_file(tmp_path):
    folder = _write_record(tmp_path, mat=True)
    mat = folder / "rec1.mat"
    mat.write_bytes(mat.read_bytes()[:-100])
    with pytest.raises(RecordError, match=r"rec1\.mat.*truncated"):
        read_recording(folder)
    assert read_recording(folder, load_signals=False).n_windows == 2  # the header alone still reads


def test_missing_signal_file_and_bad_header(tmp_path):
    folder = _write_record(tmp_path)
    (folder / "rec1.dat").unlink()
    with pytest.raises(RecordError, match=r"rec1\.dat.*missing"):
        read_recording(folder)
    (folder / "rec1.hea").write_text("rec1 five 200 12000\n")
    with pytest.raises(RecordError, match=r"rec1\.hea"):
        read_recording(folder)


def test_missing_required_channels(tmp_path):
    folder = tmp_path / "resp"
    folder.mkdir()
    wfdb.wrsamp("resp", fs=FS, units=["uV", "%"], sig_name=["ABD", "SaO2"], p_signal=_signals()[:, 2:4],
                fmt=["16", "16"], write_dir=str(folder))
    with pytest.raises(RecordError, match=r"resp\.hea.*no EEG, EOG, EMG or ECG.*ABD"):
        read_recording(folder)
    with pytest.raises(RecordError, match=r"eeg='C4-M1' names no channel"):
        read_recording(folder, {"eeg": "C4-M1"})
    assert read_recording(folder, "eeg=ABD").modality_channels == {"eeg": "ABD"}


def test_non_voltage_modality_channel(tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    wfdb.wrsamp("odd", fs=FS, units=["%"], sig_name=["ECG"], p_signal=_signals()[:, 3:4], fmt=["16"],
                write_dir=str(folder))
    with pytest.raises(ValueError, match=r"odd\.hea: no EEG.*'ECG' left out: physical unit '%' is not a voltage"):
        read_recording(folder)


def test_unknown_inputs(tmp_path, real):
    for name, pattern in [
        ("night.txt", r"night\.txt: unknown file type '\.txt'.*\.edf/\.bdf"),
        ("rec.dat", r"rec\.dat: is a WFDB signal file; give the \.hea"),
    ]:
        (tmp_path / name).write_text("x")
        with pytest.raises(RecordError, match=pattern):
            read_recording(tmp_path / name)
    with pytest.raises(RecordError, match=r"nowhere\.hea: no such file"):
        read_recording(tmp_path / "nowhere.hea")
    with pytest.raises(RecordError, match="is a label file"):
        read_recording(real / "tr03-0005.arousal")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RecordError, match=r"empty: a record folder must hold empty\.hea"):
        read_recording(empty)


def test_corrupt_label_mat(tmp_path, real):
    bad = tmp_path / "x-arousal.mat"
    shutil.copy(real / "tr03-0005-arousal.mat", bad)
    bad.write_bytes(bad.read_bytes()[:4096])
    with pytest.raises(RecordError, match=r"x-arousal\.mat"):
        read_labels(bad)
