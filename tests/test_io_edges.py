"""Reader edges that real files have: calibration, unit spellings, WFDB layouts and lengths, EDF+ timekeeping."""

from __future__ import annotations

import edfio
import numpy as np
import pytest
import wfdb

from physioserve.cache import recording_to_windows
from physioserve.inspection import inspect_path
from physioserve.io import RecordError, read_recording

FS = 200
SECONDS = 60


def _eeg(seed=0, seconds=SECONDS, fs=FS):
    return np.random.default_rng(seed).normal(0, 25, seconds * fs)


def _edf(path, signals, record_s=1):
    edfio.Edf(signals, data_record_duration=record_s).write(path)
    return path


def _patch_field(path, signal_index, n_signals, field_offset, width, text):
    """Overwrite one per-signal EDF header field (offsets after the 256-byte main header, EDF spec)."""
    data = bytearray(path.read_bytes())
    start = 256 + field_offset * n_signals + width * signal_index
    data[start : start + width] = text.encode("latin-1").ljust(width)
    path.write_bytes(bytes(data))


PHYS_MIN, PHYS_MAX, DIG_MIN, DIG_MAX = 104, 112, 120, 128  # field offsets / ns (label 16, transducer 80, unit 8)


# ---- calibration ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset, text, words", [
    (PHYS_MIN, "500", "'physical minimum' and 'physical maximum' are both 500"),
    (PHYS_MAX, "abc", "'physical maximum' is 'abc', not a number"),
    (DIG_MIN, "32767", "'digital minimum' and 'digital maximum' are both 32767"),
    (DIG_MAX, "", "'digital maximum' is '', not a number"),
])
def test_uncalibrated_edf_channel_is_left_out_with_a_note(tmp_path, offset, text, words):
    path = _edf(tmp_path / "u.edf", [
        edfio.EdfSignal(_eeg(0), FS, label="C4-M1", physical_dimension="uV", physical_range=(-500, 500)),
        edfio.EdfSignal(_eeg(1), FS, label="E1-M2", physical_dimension="uV", physical_range=(-500, 500)),
    ])
    _patch_field(path, 0, 2, offset, 8, text)
    recording = read_recording(path)
    assert recording.modality_channels == {"eog": "E1-M2"} and "C4-M1" not in recording.channels
    assert any(words in note and "'C4-M1' left out" in note for note in recording.notes), recording.notes
    assert np.std(recording.channels["E1-M2"].data) == pytest.approx(25, rel=0.05)
    with pytest.raises(RecordError, match=r"channel map eeg='C4-M1': EDF header field"):
        read_recording(path, "eeg=C4-M1")
    summary = inspect_path(path)
    assert next(c for c in summary["channels"] if c["name"] == "C4-M1")["problem"] is not None


def _wfdb_header(folder, name, lines, n=SECONDS * FS):
    data = np.round(np.stack([_eeg(0), _eeg(1)], axis=1) * 10).astype("<i2")  # [n, 2] at 10 adu/µV
    data.tofile(folder / f"{name}.dat")
    (folder / f"{name}.hea").write_text(f"{name} 2 {FS} {n}\n" + "".join(f"{name}.dat 16 {line}\n" for line in lines))
    return folder / f"{name}.hea"


@pytest.mark.parametrize("gain, problem", [("", "ADC gain is missing"), ("0/uV", "ADC gain is 0")])
def test_uncalibrated_wfdb_signal_is_left_out(tmp_path, gain, problem):
    header = _wfdb_header(tmp_path, "r", [f"{gain} 16 0 0 0 0 C4-M1".strip() if gain else "", "10/uV 16 0 0 0 0 E1-M2"])
    if not gain:  # a signal line with only the file and format: no gain, no description
        header.write_text(f"r 2 {FS} {SECONDS * FS}\nr.dat 16\nr.dat 16 10/uV 16 0 0 0 0 E1-M2\n")
        recording = read_recording(header, all_channels=True)
        assert recording.modality_channels == {"eog": "E1-M2"} and "signal 0" not in recording.channels
        assert "gain is missing" in recording.unusable["signal 0"]
        with pytest.raises(RecordError, match=r"eeg='signal 0': its ADC gain is missing"):
            read_recording(header, "eeg=signal 0")
        return
    recording = read_recording(header)
    assert recording.modality_channels == {"eog": "E1-M2"} and any(problem in n for n in recording.notes)
    assert np.std(recording.channels["E1-M2"].data) == pytest.approx(25, rel=0.05)


@pytest.mark.parametrize("unit, factor", [
    ("uV", 1), ("µV", 1), ("\u03bcV", 1), ("UV", 1), ("u V", 1), ("mV", 1e3), ("MV", 1e3), ("V", 1e6), ("nV", 1e-3),
])
def test_unit_spellings_in_wfdb_headers(tmp_path, unit, factor):
    header = tmp_path / "u.hea"
    data = np.round(_eeg(2) * 10).astype("<i2")
    data.tofile(tmp_path / "u.dat")
    header.write_bytes(f"u 1 {FS} {SECONDS * FS}\nu.dat 16 10/{unit.replace(' ', '')} 16 0 0 0 0 C4-M1\n".encode("utf-8"))
    eeg = read_recording(header).channels["C4-M1"]
    assert eeg.unit == "uV" and np.std(eeg.data) == pytest.approx(25 * factor, rel=0.05)


@pytest.mark.parametrize("raw", [b"\xb5V", b"\xc2\xb5V", b"\xce\xbcV", b"UV", b"u V"])
def test_microvolt_spellings_in_edf_headers(tmp_path, raw):
    path = _edf(tmp_path / "m.edf", [edfio.EdfSignal(_eeg(4), FS, label="C4-M1", physical_dimension="mV",
                                                     physical_range=(-500, 500))])
    data = bytearray(path.read_bytes())
    unit_at = 256 + 96  # one signal: label 16 + transducer 80, then the 8-byte physical dimension
    data[unit_at : unit_at + 8] = raw.ljust(8)
    path.write_bytes(bytes(data))
    eeg = read_recording(path).channels["C4-M1"]
    assert eeg.unit == "uV" and np.std(eeg.data) == pytest.approx(25, rel=0.05)  # µV, not mV x 1000


# ---- WFDB layouts and lengths ----------------------------------------------------------------------------


def test_variable_layout_multi_segment_with_a_null_segment(tmp_path, shared_data):
    source = shared_data / "field-cases" / "msrec"
    for part in ("msrec_0001", "msrec_0002"):
        for ext in (".hea", ".dat"):
            (tmp_path / f"{part}{ext}").write_bytes((source / f"{part}{ext}").read_bytes())
    (tmp_path / "v.hea").write_text("v/4 2 200 66000\nv_layout 0\nmsrec_0001 30000\n~ 6000\nmsrec_0002 30000\n")
    (tmp_path / "v_layout.hea").write_text("v_layout 2 200 0\n~ 0 10/uV 16 0 0 0 0 C4-M1\n~ 0 10/uV 16 0 0 0 0 E1-M2\n")
    recording = read_recording(tmp_path / "v.hea")
    eeg = recording.channels["C4-M1"].data
    assert len(eeg) == 66_000 and recording.duration_s == 330 and recording.n_windows == 11
    assert np.isnan(eeg[30_000:36_000]).all() and np.nanstd(eeg) == pytest.approx(28.5, rel=0.02)
    _, mask = recording_to_windows(recording)  # the null segment (150-180 s) is missing data
    assert mask[:, 0].tolist() == [True] * 5 + [False] + [True] * 5


def test_multi_frequency_record_size_check_counts_samples_per_frame(tmp_path, shared_data):
    source = shared_data / "field-cases" / "rec17a"
    (tmp_path / "rec17a.hea").write_bytes((source / "rec17a.hea").read_bytes())
    (tmp_path / "rec17a.dat").write_bytes((source / "rec17a.dat").read_bytes()[:-2000])
    with pytest.raises(RecordError, match=r"658600 bytes, but rec17a.hea describes 300 frames x 1101 samples.*660600 bytes \(truncated\)"):
        read_recording(tmp_path / "rec17a.hea")


def test_header_without_a_sample_count_takes_it_from_the_signal_file(tmp_path):
    wfdb.wrsamp("n", fs=FS, units=["uV"], sig_name=["C4-M1"], p_signal=_eeg(5)[:, None], fmt=["16"],
                adc_gain=[10.0], baseline=[0], write_dir=str(tmp_path))
    text = (tmp_path / "n.hea").read_text().splitlines()
    first = text[0].split()
    (tmp_path / "n.hea").write_text("\r\n".join([" ".join(first[:3])] + text[1:]) + "\r\n")  # no count, CRLF
    (tmp_path / "n.arousal").write_bytes(b"")  # no labels: stays None
    (tmp_path / "n.arousal").unlink()
    recording = read_recording(tmp_path / "n.hea")
    assert len(recording.channels["C4-M1"].data) == SECONDS * FS and recording.n_windows == 2
    summary = inspect_path(tmp_path / "n.hea")
    assert summary["duration_s"] == SECONDS and summary["n_windows"] == 2


def test_counter_frequency_and_format_212_headers(shared_data):
    slp = read_recording(shared_data / "real" / "slpdb" / "slp01a.hea", load_signals=False, all_channels=True)
    assert slp.channels["EEG (C4-A1)"].fs == 250 and slp.duration_s == 7200
    mit = read_recording(shared_data / "real" / "ecg" / "100.hea")  # 212, read for real
    # 11-bit ADC around its zero 1024, baseline 1024 (absent: the ADC zero), 200 adu/mV -> -5.12 .. 5.115 mV
    assert mit.channels["MLII"].limits == pytest.approx((-5120.0, 5115.0))


# ---- EDF+ timekeeping ------------------------------------------------------------------------------------


def _plus_d(path, onsets):
    """An EDF+D file of 1 s records whose timekeeping TALs carry `onsets` (texts), written by edfio then patched."""
    n = len(onsets)
    signal = edfio.EdfSignal(_eeg(6, seconds=n), FS, label="C4-M1", physical_dimension="uV", physical_range=(-500, 500))
    edfio.Edf([signal], data_record_duration=1, annotations=[edfio.EdfAnnotation(0, 30, "Sleep stage W")]).write(path)
    data = bytearray(path.read_bytes())
    header, ns = int(data[184:192]), int(data[252:256])
    per = [int(data[256 + 216 * ns + 8 * i : 256 + 216 * ns + 8 * (i + 1)]) for i in range(ns)]
    data[192:197] = b"EDF+D"
    for k, onset in enumerate(onsets):
        start = header + k * 2 * sum(per) + 2 * per[0]  # the annotation signal comes second
        rest = bytes(data[start : start + 2 * per[1]]).split(b"\x14\x14\x00", 1)[1]
        data[start : start + 2 * per[1]] = (f"+{onset}".encode() + b"\x14\x14\x00" + rest)[: 2 * per[1]].ljust(2 * per[1], b"\0")
    path.write_bytes(bytes(data))
    return path


def test_onsets_with_float_noise_are_continuous_and_real_gaps_are_found(tmp_path):
    noisy = _plus_d(tmp_path / "noisy.edf", [f"{k + 0.202312 - (1e-12 if k > 30 else 0):.12f}" for k in range(60)])
    recording = read_recording(noisy)
    assert recording.gaps_s == [] and recording.n_windows == 2
    gapped = _plus_d(tmp_path / "gap.edf", [str(k if k < 30 else k + 20) for k in range(60)])
    with pytest.raises(RecordError, match=r"1 gap\(s\).*first at 30 s for 20 s.*--fill-gaps.*fill_gaps=true"):
        read_recording(gapped)
    summary = inspect_path(gapped)
    assert summary["gaps_s"] == [[30.0, 20.0]] and summary["duration_s"] == 80
    filled = read_recording(gapped, fill_gaps=True)
    _, mask = recording_to_windows(filled)  # windows 1 (30-60 s) and 2 (60-80 s... ) hold the gap
    assert mask[:, 0].tolist() == [True, False]


def test_record_duration_zero_with_signals(tmp_path):
    path = _edf(tmp_path / "z.edf", [edfio.EdfSignal(_eeg(7), FS, label="C4-M1", physical_dimension="uV")])
    data = bytearray(path.read_bytes())
    data[244:252] = b"0       "
    path.write_bytes(bytes(data))
    with pytest.raises(RecordError, match=r"'duration of a data record' is 0 s, but the file holds 1 signal\(s\) \(C4-M1\)"):
        read_recording(path)


# ---- rates of 50-99 Hz -------------------------------------------------------------------------------------


def test_shhs_like_50_hz_eog_is_used_and_band_limited(tmp_path):
    path = _edf(tmp_path / "shhs.edf", [
        edfio.EdfSignal(_eeg(8, fs=125), 125, label="EEG", physical_dimension="uV", physical_range=(-500, 500)),
        edfio.EdfSignal(_eeg(9, fs=50), 50, label="EOG(L)", physical_dimension="uV", physical_range=(-500, 500)),
        edfio.EdfSignal(_eeg(10, fs=10), 10, label="EMG", physical_dimension="uV", physical_range=(-500, 500)),
    ])
    recording = read_recording(path)
    assert recording.modality_channels == {"eeg": "EEG", "eog": "EOG(L)"}
    assert any("'EOG(L)' at 50 Hz is upsampled to 100 Hz; band-limited: nothing above 20 Hz" in n for n in recording.notes)
    assert any("'EMG' left out: sampled at 10 Hz" in n for n in recording.notes)
    signals, mask = recording_to_windows(recording)
    assert signals.shape == (2, 4, 3000) and mask[:, :2].all()
