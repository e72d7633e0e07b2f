"""`physioserve inspect`: text and JSON for records, EDF files and label files; clean errors."""

from __future__ import annotations

import json

import edfio
import numpy as np
import pytest

from physioserve.cli import main
from physioserve.recording import arousal_fraction

REAL_COUNTS = {"W": 367, "N1": 58, "N2": 267, "N3": 72, "REM": 81, "undefined": 12}


def _run(capsys, *argv):
    code = main(["inspect", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def real(shared_data):
    return shared_data / "physionet2018"


@pytest.fixture(scope="module")
def real_arousal_windows(real):
    """Epochs of tr03-0005 at least 75 % inside a target arousal, from labels.npz (independent of the readers)."""
    packed = np.load(real / "labels.npz")
    i = list(packed["records"]).index("tr03-0005")
    frac = packed["arousal_frac"][packed["epoch_offsets"][i] : packed["epoch_offsets"][i + 1]].astype(float)
    regions = packed["arousal_regions"][packed["region_offsets"][i] : packed["region_offsets"][i + 1]] / 200
    assert int((arousal_fraction(regions, len(frac)) >= 0.75).sum()) == int((frac >= 0.75).sum())
    return int((frac >= 0.75).sum())


def test_record_header_alone_text(capsys, real, real_arousal_windows):
    code, out, err = _run(capsys, real / "tr03-0005.hea")
    assert code == 0 and err == ""
    assert "signal file(s) not found: tr03-0005.mat" in out
    assert "25735 s (7 h 08 min 55 s), 857 complete 30 s windows" in out
    assert "modalities: eeg=F3-M2, eog=E1-M2, emg=Chin1-Chin2, ecg=ECG  (missing: none)" in out
    assert "SaO2" in out and "%" in out
    assert "epochs: 857  W 367  N1 58  N2 267  N3 72  REM 81  undefined 12" in out
    assert f"arousals: 27; windows >= 0.75 covered: {real_arousal_windows}" in out


def test_record_folder_json(capsys, real, real_arousal_windows):
    code, out, _ = _run(capsys, real, "--json", "--channel-map", "eeg=C4-M1")
    assert code == 0
    summary = json.loads(out)
    assert summary["kind"] == "physionet2018" and summary["name"] == "tr03-0005"
    assert summary["signal_files"] == {"tr03-0005.mat": False}
    assert len(summary["channels"]) == 13
    ecg = next(c for c in summary["channels"] if c["name"] == "ECG")
    assert ecg == {
        "name": "ECG", "fs": 200.0, "unit": "uV", "n_samples": 5_147_000, "modality": "ecg", "alias_of": "ecg",
        "problem": None,
    }
    assert summary["modality_channels"]["eeg"] == "C4-M1"
    labels = summary["labels"]
    assert labels["n_epochs"] == 857 and labels["stage_counts"] == REAL_COUNTS
    assert labels["n_arousals"] == 27 and labels["arousal_windows"] == real_arousal_windows
    assert labels["source"].endswith("tr03-0005-arousal.mat")


@pytest.mark.parametrize("name", ["tr03-0005.arousal", "tr03-0005-arousal.mat"])
def test_label_file_alone(capsys, real, name, real_arousal_windows):
    code, out, _ = _run(capsys, real / name, "--json")
    summary = json.loads(out)
    assert code == 0 and summary["kind"] == "labels"
    assert summary["labels"]["stage_counts"] == REAL_COUNTS
    assert summary["labels"]["arousal_windows"] == real_arousal_windows


def test_hypnogram_edf(capsys, shared_data):
    code, out, _ = _run(capsys, shared_data / "other" / "hypnogram_annotations.edf")
    assert code == 0
    assert "no signals (an annotation-only file)" in out
    assert "epochs: 854  W 151  N1 109  N2 430  N3 23  REM 141  undefined 0" in out


def test_edf_with_low_rate_emg(capsys, tmp_path):
    path = tmp_path / "psg.edf"
    signals = [
        edfio.EdfSignal(np.zeros(100 * 60), 100, label="EEG Fpz-Cz", physical_dimension="uV"),
        edfio.EdfSignal(np.zeros(60), 1, label="EMG submental", physical_dimension="uV"),
    ]
    edfio.Edf(signals).write(path)
    code, out, _ = _run(capsys, path, "--json")
    summary = json.loads(out)
    assert code == 0 and summary["modality_channels"] == {"eeg": "EEG Fpz-Cz"}
    assert summary["missing_modalities"] == ["eog", "emg", "ecg"]
    assert summary["notes"] == ["emg: 'EMG submental' left out: sampled at 1 Hz, below the 50 Hz the model needs"]
    assert summary["labels"] is None
    code, out, _ = _run(capsys, path)
    assert "note: emg: 'EMG submental' left out: sampled at 1 Hz" in out and "labels: none found" in out


@pytest.mark.parametrize(
    ("make", "argv", "message"),
    [
        (lambda p: (p / "x.txt").write_text("hi"), ["x.txt"], "unknown file type '.txt'"),
        (lambda p: None, ["nothing.edf"], "nothing.edf: no such file"),
        (lambda p: (p / "bad.edf").write_bytes(b"garbage" * 40), ["bad.edf"], "bad.edf: not a readable EDF file"),
        (lambda p: (p / "t.arousal").write_bytes(b"\x00\x58\x01"), ["t.arousal"], "t.arousal: odd byte count"),
        (lambda p: None, ["nothing.edf", "--channel-map", "eeg"], "must look like MODALITY=CHANNEL"),
    ],
)
def test_errors_are_one_line(capsys, tmp_path, make, argv, message):
    make(tmp_path)
    code, out, err = _run(capsys, tmp_path / argv[0], *argv[1:])
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("physioserve inspect: error: ") and message in err
