"""EDF/EDF+/BDF reader: the real hypnogram, files written by pyedflib and edfio, EDF+D, BDF, errors."""

from __future__ import annotations

from collections import Counter

import edfio
import numpy as np
import pyedflib.highlevel as pyedf
import pytest

from physioserve.io import RecordError, read_labels, read_recording
from physioserve.io.edf import is_arousal, stage_code

# ---------------------------------------------------------------------------------- real hypnogram


def test_real_hypnogram_counts(shared_data):
    path = shared_data / "other" / "hypnogram_annotations.edf"
    raw = edfio.read_edf(path).annotations
    assert len(raw) == 856
    # Independent count: every stage annotation spans whole 30 s epochs, back to back from 0 s.
    stage_ann = [a for a in raw if a.text.startswith("Sleep stage ")]
    assert [a.onset for a in stage_ann] == [30.0 * k for k in range(len(stage_ann))]
    expected = Counter()
    for a in stage_ann:
        expected[a.text.removeprefix("Sleep stage ")] += int(round(a.duration / 30))
    assert dict(expected) == {"W": 151, "N1": 109, "N2": 430, "N3": 23, "R": 141}
    assert {a.text for a in raw} - {a.text for a in stage_ann} == {"Lights off@@EEG F4-A1", "Lights on@@EEG Fpz-Cz"}

    labels = read_labels(path)
    assert len(labels.stages) == 854  # 7.1 h
    assert labels.stage_counts() == {"W": 151, "N1": 109, "N2": 430, "N3": 23, "REM": 141, "undefined": 0}
    assert labels.arousal_regions_s.shape == (0, 2)
    names = {"W": 0, "N1": 1, "N2": 2, "N3": 3, "R": 4}
    per_epoch = [names[a.text.removeprefix("Sleep stage ")] for a in stage_ann]
    np.testing.assert_array_equal(labels.stages, per_epoch)

    # As a recording: no signals, so it needs require_modality=False; labels are the same.
    recording = read_recording(path, require_modality=False)
    assert recording.channels == {} and recording.labels.stage_counts() == labels.stage_counts()
    with pytest.raises(RecordError, match=r"hypnogram_annotations\.edf: no EEG, EOG, EMG or ECG channel"):
        read_recording(path)


# ----------------------------------------------------------------- Sleep-EDF names, pyedflib writer

SECONDS = 120


def _sleep_edf(path):
    """A Sleep-EDF-like PSG (its channel names and rates) plus an ECG in mV, written by pyedflib."""
    t100, t256 = np.arange(100 * SECONDS) / 100, np.arange(256 * SECONDS) / 256
    signals = [
        50 * np.sin(2 * np.pi * 3 * t100),  # EEG Fpz-Cz, µV
        30 * np.sin(2 * np.pi * 7 * t100),  # EEG Pz-Oz, µV
        60 * np.sin(2 * np.pi * 0.4 * t100),  # EOG horizontal, µV
        np.linspace(-5, 5, SECONDS),  # Resp oro-nasal, 1 Hz
        np.linspace(0, 8, SECONDS),  # EMG submental, 1 Hz envelope
        np.full(SECONDS, 36.6),  # Temp rectal, 1 Hz
        1.5 * np.sin(2 * np.pi * 1.1 * t256),  # ECG, mV at 256 Hz
    ]
    headers = [
        pyedf.make_signal_header("EEG Fpz-Cz", "uV", 100, -200, 200),
        pyedf.make_signal_header("EEG Pz-Oz", "uV", 100, -200, 200),
        pyedf.make_signal_header("EOG horizontal", "uV", 100, -200, 200),
        pyedf.make_signal_header("Resp oro-nasal", "", 1, -10, 10),
        pyedf.make_signal_header("EMG submental", "uV", 1, -10, 10),
        pyedf.make_signal_header("Temp rectal", "DegC", 1, 30, 40),
        pyedf.make_signal_header("ECG", "mV", 256, -5, 5),
    ]
    header = pyedf.make_header()
    header["annotations"] = [
        [0, 30, "Sleep stage W"],
        [30, 30, "Sleep stage 1"],
        [60, 30, "Sleep stage 4"],
        [90, 30, "Sleep stage R"],
        [70, 12.5, "EEG arousal"],
    ]
    pyedf.write_edf(str(path), signals, headers, header)
    return signals


def test_sleep_edf_names_written_by_pyedflib(tmp_path):
    path = tmp_path / "SC4001E0-PSG.edf"
    signals = _sleep_edf(path)
    recording = read_recording(path, all_channels=True)
    # 'EMG submental' is a 1 Hz envelope in Sleep-EDF: the model cannot take it, so emg stays absent.
    assert recording.modality_channels == {"eeg": "EEG Fpz-Cz", "eog": "EOG horizontal", "ecg": "ECG"}
    assert recording.present_modalities == ("eeg", "eog", "ecg")
    eeg, ecg, temp = (recording.channels[n] for n in ("EEG Fpz-Cz", "ECG", "Temp rectal"))
    assert (eeg.fs, eeg.unit, len(eeg.data)) == (100.0, "uV", 100 * SECONDS)
    np.testing.assert_allclose(eeg.data, signals[0], atol=400 / 65535)  # one digital step of +-200 µV
    assert (ecg.fs, ecg.unit) == (256.0, "uV")
    np.testing.assert_allclose(ecg.data, signals[6] * 1000, atol=10_000 / 65535 * 1000)  # mV -> µV
    assert temp.unit == "DegC" and temp.fs == 1.0  # not a voltage, not a model channel: kept as is
    assert recording.n_windows == 4
    np.testing.assert_array_equal(recording.labels.stages, [0, 1, 3, 4])
    np.testing.assert_allclose(recording.labels.arousal_regions_s, [[70.0, 82.5]])

    only_modalities = read_recording(path)
    assert set(only_modalities.channels) == {"EEG Fpz-Cz", "EOG horizontal", "ECG"}
    header_only = read_recording(path, load_signals=False, all_channels=True)
    assert header_only.channels["ECG"].n_samples == 256 * SECONDS and header_only.channels["ECG"].data.size == 0
    assert header_only.duration_s == SECONDS and header_only.channels["ECG"].unit == "uV"


def test_psg_with_separate_hypnogram(tmp_path, shared_data):
    """Sleep-EDF ships labels in a second EDF+ file: `labels_path` reads them with the signals."""
    psg = tmp_path / "SC4001E0-PSG.edf"
    _sleep_edf(psg)
    hypnogram = shared_data / "other" / "hypnogram_annotations.edf"
    recording = read_recording(psg, labels_path=hypnogram)
    assert recording.labels.source == str(hypnogram) and len(recording.labels.stages) == 854
    assert recording.window_labels()["stage"].tolist() == [0, 0, 0, 0]  # the first 4 of 854 epochs: wake


def test_alias_override(tmp_path):
    path = tmp_path / "night.EDF"  # any case
    _sleep_edf(path)
    recording = read_recording(path, {"eeg": "EEG Pz-Oz"})
    assert recording.modality_channels["eeg"] == "EEG Pz-Oz"
    assert read_recording(path, "eeg=EEG Pz-Oz,eog=EEG Fpz-Cz").modality_channels["eog"] == "EEG Fpz-Cz"
    with pytest.raises(RecordError, match=r"night\.EDF: channel map eeg='C4-A1' names no channel.*EEG Fpz-Cz"):
        read_recording(path, {"eeg": "C4-A1"})
    with pytest.raises(RecordError, match=r"emg='EMG submental': sampled at 1 Hz, below the 50 Hz"):
        read_recording(path, {"emg": "EMG submental"})
    with pytest.raises(ValueError, match="unknown modality 'resp'"):
        read_recording(path, "resp=Resp oro-nasal")


# ------------------------------------------------------------------------ edfio writer, EDF+, BDF


def test_edf_plus_stage_annotations_without_duration(tmp_path):
    """Annotations without a duration hold until the next stage annotation (or the recording end)."""
    data = np.sin(np.arange(200 * 150) / 9) * 20
    annotations = [
        edfio.EdfAnnotation(0, None, "Sleep stage W"),
        edfio.EdfAnnotation(30, None, "Sleep stage N2"),
        edfio.EdfAnnotation(75, None, "Sleep stage ?"),  # epoch 2 midpoint (75 s) is here
        edfio.EdfAnnotation(100, None, "Movement time"),
        edfio.EdfAnnotation(120, None, "Sleep stage REM@@C4-A1"),
        edfio.EdfAnnotation(40, 15, "arousal_spontaneous"),
        edfio.EdfAnnotation(121, None, "Lights on"),
    ]
    signal = edfio.EdfSignal(data, 200, label="C4-A1", physical_dimension="uV", physical_range=(-100, 100))
    path = tmp_path / "night.edf"
    edfio.Edf([signal], annotations=annotations).write(path)
    recording = read_recording(path)
    assert recording.modality_channels == {"eeg": "C4-A1"}
    np.testing.assert_array_equal(recording.labels.stages, [0, 2, 5, 5, 4])
    np.testing.assert_allclose(recording.labels.arousal_regions_s, [[40, 55]])
    assert read_labels(path).stage_counts()["undefined"] == 2


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Sleep stage W", 0), ("Sleep stage 1", 1), ("Sleep stage N1", 1), ("Sleep stage 2", 2),
        ("Sleep stage N2", 2), ("Sleep stage 3", 3), ("Sleep stage 4", 3), ("Sleep stage N3", 3),
        ("Sleep stage R", 4), ("Sleep stage REM", 4), ("Sleep stage ?", 5), ("Movement time", 5),
        ("sleep_stage_n2", 2), ("Sleep stage W@@EEG F4-A1", 0), ("Lights off", None), ("Arousal", None),
    ],
)
def test_stage_texts(text, code):
    assert stage_code(text) == code


def test_arousal_texts():
    assert all(map(is_arousal, ["Arousal", "EEG arousal", "arousal_rera", "(arousal_plm"]))
    assert not any(map(is_arousal, ["Sleep stage W", "Lights off", "Obstructive apnea"]))


def test_bdf(tmp_path):
    t = np.arange(512 * 60) / 512
    eeg, ecg = 35 * np.sin(2 * np.pi * 10 * t), 0.8 * np.sin(2 * np.pi * 1.3 * t[::2])
    signals = [
        edfio.BdfSignal(eeg, 512, label="EEG C4-A1", physical_dimension="uV", physical_range=(-500, 500)),
        edfio.BdfSignal(ecg, 256, label="ECG II", physical_dimension="mV", physical_range=(-5, 5)),
    ]
    path = tmp_path / "night.BDF"
    edfio.Bdf(signals, annotations=[edfio.EdfAnnotation(0, 60, "Sleep stage N3")]).write(path)
    recording = read_recording(path)
    assert recording.modality_channels == {"eeg": "EEG C4-A1", "ecg": "ECG II"}
    np.testing.assert_allclose(recording.channels["EEG C4-A1"].data, eeg, atol=1000 / 2**24)
    np.testing.assert_allclose(recording.channels["ECG II"].data, ecg * 1000, atol=10 / 2**24 * 1000)
    assert recording.channels["ECG II"].unit == "uV" and recording.channels["ECG II"].fs == 256
    np.testing.assert_array_equal(recording.labels.stages, [3, 3])


def test_latin1_microvolt_unit(tmp_path):
    path = tmp_path / "mu.edf"
    signal = edfio.EdfSignal(np.zeros(100 * 30), 100, label="Fpz-Cz", physical_dimension="uV")
    edfio.Edf([signal]).write(path)
    raw = bytearray(path.read_bytes())
    field = 256 + 1 * (16 + 80)  # physical dimension of signal 0 (ns = 1)
    raw[field : field + 8] = "µV".encode("latin-1").ljust(8)
    path.write_bytes(bytes(raw))
    assert read_recording(path).channels["Fpz-Cz"].unit == "uV"


# ------------------------------------------------------------------------------------------ EDF+D


def _make_discontinuous(path, first_record, gap_s):
    """Rewrite an EDF+C file as EDF+D with data records `first_record`... moved `gap_s` later."""
    raw = bytearray(path.read_bytes())
    header_bytes, n_records, ns = int(raw[184:192]), int(raw[236:244]), int(raw[252:256])
    labels = [raw[256 + 16 * i : 256 + 16 * (i + 1)].decode().strip() for i in range(ns)]
    base = 256 + 216 * ns
    per_record = [int(raw[base + 8 * i : base + 8 * (i + 1)]) for i in range(ns)]
    j = labels.index("EDF Annotations")
    offset, size, record_bytes = 2 * sum(per_record[:j]), 2 * per_record[j], 2 * sum(per_record)
    assert raw[192:197] == b"EDF+C"
    raw[192:197] = b"EDF+D"
    for k in range(first_record, n_records):
        start = header_bytes + k * record_bytes + offset
        first, rest = bytes(raw[start : start + size]).split(b"\x14\x14\x00", 1)
        block = f"+{float(first[1:]) + gap_s:g}".encode() + b"\x14\x14\x00" + rest
        raw[start : start + size] = block[:size].ljust(size, b"\0")
    path.write_bytes(bytes(raw))


def test_edf_plus_d(tmp_path):
    data = np.arange(100 * 60, dtype=float) % 50  # 60 one-second records of a ramp, µV
    signal = edfio.EdfSignal(data, 100, label="EEG", physical_dimension="uV", physical_range=(0, 100))
    edf = edfio.Edf([signal], data_record_duration=1, annotations=[edfio.EdfAnnotation(0, 30, "Sleep stage W")])
    contiguous, path = tmp_path / "contiguous.edf", tmp_path / "d.edf"
    edf.write(contiguous)
    edf.write(path)
    _make_discontinuous(contiguous, first_record=30, gap_s=0)  # EDF+D, but back to back: reads as continuous
    assert len(read_recording(contiguous).channels["EEG"].data) == 6000

    _make_discontinuous(path, first_record=30, gap_s=15)  # 15 s missing after 30 s
    with pytest.raises(RecordError, match=r"d\.edf: EDF\+D with 1 gap.*first at 30 s for 15 s.*score --fill-gaps"):
        read_recording(path)
    recording = read_recording(path, fill_gaps=True)
    eeg = recording.channels["EEG"].data
    assert len(eeg) == 100 * 75 and recording.duration_s == 75 and recording.gaps_s == [(30.0, 15.0)]
    step = 100 / 65535
    np.testing.assert_allclose(eeg[:3000], data[:3000], atol=step)
    assert np.isnan(eeg[3000:4500]).all()  # the gap is missing data, not 0 µV
    np.testing.assert_allclose(eeg[4500:], data[3000:], atol=step)
    np.testing.assert_array_equal(recording.labels.stages, [0, 5])
    assert read_recording(path, load_signals=False).duration_s == 75  # header only: no error


# ----------------------------------------------------------------------------------------- errors


def test_truncated_edf(tmp_path):
    path = tmp_path / "cut.edf"
    _sleep_edf(path)
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(RecordError, match=r"cut\.edf: .*truncated"):
        read_recording(path)


def test_not_an_edf(tmp_path):
    path = tmp_path / "fake.edf"
    path.write_bytes(b"this is not an EDF header" * 20)
    with pytest.raises(RecordError, match=r"fake\.edf: not a readable EDF file"):
        read_recording(path)
    with pytest.raises(RecordError, match=r"missing\.bdf: no such file"):
        read_recording(tmp_path / "missing.bdf")


def test_modality_channel_without_voltage_unit(tmp_path):
    path = tmp_path / "nounit.edf"
    edfio.Edf([edfio.EdfSignal(np.zeros(100 * 30), 100, label="EEG Fpz-Cz", physical_dimension="")]).write(path)
    with pytest.raises(RecordError, match=r"nounit\.edf: no EEG.*'EEG Fpz-Cz' left out: physical unit '' is not a voltage"):
        read_recording(path)
    with pytest.raises(RecordError, match=r"eeg='EEG Fpz-Cz': physical unit '' is not a voltage"):
        read_recording(path, "eeg=EEG Fpz-Cz")


def test_edf_labels_alone_need_stage_or_arousal(tmp_path):
    path = tmp_path / "events.edf"
    edfio.Edf([], annotations=[edfio.EdfAnnotation(10, None, "Lights off")]).write(path)
    with pytest.raises(RecordError, match=r"events\.edf: no sleep stage or arousal annotations \(found: Lights off\)"):
        read_labels(path)
