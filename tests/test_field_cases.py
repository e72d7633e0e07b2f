"""The field cases (../shared/data/field-cases/README.md) through the readers, `physioserve inspect` and
`physioserve score`; the same table drives the `/score` test against a real server (test_service.py).

Ground truth of the cases: 5 min (10 epochs); EEG C4-M1 std ~28.5 µV, EOG E1-M2 ~38 µV, chin EMG
~7.6 µV, ECG ~131 µV (after mV -> µV). Also: `inspect` on every file of ../shared/data/real and
field-cases describes it or refuses it in one line, never a traceback.
"""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_export_fixtures import tiny_pipeline

from physioserve.cli import main
from physioserve.io import RecordError, read_recording

STD_UV = {"eeg": 28.5, "eog": 38.05, "emg": 7.61, "ecg": 130.75}

# file: (rates by modality, modalities of every epoch, a text that a note must hold, or None)
SCORED = {
    "01a_physmin_eq_physmax.edf": ({"eog": 200, "emg": 200, "ecg": 200}, ["eog+emg+ecg"] * 10,
                                   "'C4-M1' left out: EDF header fields 'physical minimum' and 'physical maximum' are both 0"),
    "01b_digmin_eq_digmax.edf": ({"eog": 200, "emg": 200, "ecg": 200}, ["eog+emg+ecg"] * 10,
                                 "'C4-M1' left out: EDF header fields 'digital minimum' and 'digital maximum' are both"),
    "rec11": ({"eog": 200}, ["eog"] * 10, "'C4-M1' left out: its ADC gain is 0 in the WFDB header"),
    "msrec": ({"eeg": 200, "eog": 200}, ["eeg+eog"] * 10, None),
    "rec17a": ({"eeg": 200, "eog": 200, "emg": 200, "ecg": 500}, ["eeg+eog+emg+ecg"] * 10, None),
    "20a_eeg_flat_second_half.edf": ({"eeg": 200, "eog": 200, "emg": 200}, ["eeg+eog+emg"] * 5 + ["eog+emg"] * 5, None),
    "20b_no_eeg_control.edf": ({"eog": 200, "emg": 200}, ["eog+emg"] * 10, None),
}
REFUSED = {"15b_signals_record_duration_0.edf": "'duration of a data record' is 0 s, but the file holds 2 signal(s)"}
SUBSECOND = "subsecond_start_9000_records.edf.gz"
LABEL_ONLY_SUFFIXES = (".st", ".hyp", ".csv")  # label files: the hypnogram readers' business


@pytest.fixture(scope="session")
def field(shared_data) -> Path:
    return shared_data / "field-cases"


@pytest.fixture(scope="session")
def subsecond(field, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("subsecond") / "subsecond.edf"
    with gzip.open(field / SUBSECOND) as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return tiny_pipeline(tmp_path_factory.getbasetemp())["bundle"]


def _inspect(capsys, path) -> tuple[int, dict | None, str]:
    code = main(["inspect", str(path), "--json"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else None), captured.err


# ---- readers and inspect ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SCORED))
def test_reader_rates_and_microvolts(field, name):
    rates, _, note = SCORED[name]
    recording = read_recording(field / name)
    assert recording.duration_s == 300 and recording.n_windows == 10
    assert {m: recording.channels[c].fs for m, c in recording.modality_channels.items()} == rates
    for m, c in recording.modality_channels.items():
        data = recording.channels[c].data[: 150 * int(rates[m])]  # the first 150 s (20a: EEG flat after)
        assert np.std(data) == pytest.approx(STD_UV[m], rel=0.02), (m, c)
    if note is None:
        assert recording.notes == []
    else:
        assert any(note in n for n in recording.notes), recording.notes
        assert "eeg" not in recording.modality_channels  # never raw counts labelled µV


@pytest.mark.parametrize("name", list(SCORED))
def test_inspect_field_case(capsys, field, name):
    rates, _, note = SCORED[name]
    code, summary, _ = _inspect(capsys, field / name)
    assert code == 0
    assert summary["duration_s"] == 300 and summary["n_windows"] == 10
    assert {m: next(c["fs"] for c in summary["channels"] if c["name"] == n)
            for m, n in summary["modality_channels"].items()} == rates
    if note is not None:
        assert any(note in n for n in summary["notes"])
        eeg = next(c for c in summary["channels"] if c["name"] == "C4-M1")
        assert eeg["modality"] is None and ("calibration" in eeg["problem"] or "gain is 0" in eeg["problem"])


def test_record_duration_zero_is_a_clear_error(capsys, field):
    name, text = next(iter(REFUSED.items()))
    code, _, err = _inspect(capsys, field / name)
    assert code == 1 and text in err and err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(RecordError, match="Re-export the file with its true record duration"):
        read_recording(field / name)


def test_subsecond_start_with_float_noise_is_continuous(capsys, subsecond):
    recording = read_recording(subsecond)
    assert recording.duration_s == 9000 and recording.n_windows == 300 and recording.gaps_s == []
    stages = recording.labels.stages
    assert len(stages) == 300 and stages.tolist() == [0, 1, 2, 3, 4] * 60  # as annotated: W N1 N2 N3 REM ...
    assert np.std(recording.channels["C4-M1"].data) == pytest.approx(STD_UV["eeg"], rel=0.02)
    code, summary, _ = _inspect(capsys, subsecond)
    assert code == 0 and summary["n_windows"] == 300 and summary["gaps_s"] == []
    assert summary["labels"]["stage_counts"] == {"W": 60, "N1": 60, "N2": 60, "N3": 60, "REM": 60, "undefined": 0}


def _every_input(root: Path) -> list[Path]:
    """Every file, plus every folder that holds a record (inspect takes record folders too)."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "README.md")
    folders = sorted({p.parent for p in files if p.suffix == ".hea" and p.parent.name == p.stem.split("_")[0]})
    return files + folders


def test_inspect_describes_or_refuses_every_shared_file(capsys, shared_data, subsecond):
    seen = 0
    for root in (shared_data / "real", shared_data / "field-cases"):
        for path in _every_input(root):
            code = main(["inspect", str(path)])
            captured = capsys.readouterr()
            assert "Traceback" not in captured.out + captured.err, path
            if path.suffix.lower() in LABEL_ONLY_SUFFIXES:
                assert code in (0, 1), path  # label files: described by the hypnogram readers, or refused
                continue
            if code == 0:
                assert "channels (" in captured.out and "duration:" in captured.out, path
            else:
                assert captured.err.startswith("physioserve inspect: error: ") and captured.err.count("\n") == 1, path
                assert str(path) in captured.err and "; " in captured.err, path  # names the file and the fix
            seen += 1
    assert seen >= 20


@pytest.mark.parametrize("relative, channel, modality, fs, n_windows", [
    ("real/slpdb/slp01a.hea", "EEG (C4-A1)", "eeg", 250, 240),
    ("real/slpdb/slp02a.hea", "EEG (O2-A1)", "eeg", 250, 360),
    ("real/slpdb/slp04.hea", "EEG (C3-O1)", "eeg", 250, 720),
    ("real/ecg/100.hea", "MLII", "ecg", 360, 60),
    ("real/ecg/a103l.hea", "II", "ecg", 250, 11),
])
def test_inspect_real_headers(capsys, shared_data, relative, channel, modality, fs, n_windows):
    code, summary, _ = _inspect(capsys, shared_data / relative)
    assert code == 0 and summary["modality_channels"][modality] == channel
    assert summary["n_windows"] == n_windows
    assert next(c for c in summary["channels"] if c["name"] == channel)["fs"] == fs


def test_real_ecg_records_read_in_microvolts(shared_data):
    mit = read_recording(shared_data / "real" / "ecg" / "100.hea")  # format 212, gain 200 adu/mV, no unit = mV
    ecg = mit.channels["MLII"].data
    assert len(ecg) == 650_000 and mit.channels["MLII"].fs == 360
    assert 100 < np.std(ecg) < 1000 and np.abs(ecg).max() < 5_000  # a real lead in µV, not counts or mV
    challenge = read_recording(shared_data / "real" / "ecg" / "a103l.hea")  # .mat container, format 16+24
    assert len(challenge.channels["II"].data) == 82_500 and 50 < np.std(challenge.channels["II"].data) < 2_000


# ---- physioserve score --------------------------------------------------------------------------------


def _table(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_score_cli_every_field_case(bundle, field, subsecond, tmp_path, capsys):
    inputs = [field / name for name in (*SCORED, *REFUSED)] + [subsecond]
    code = main(["score", *map(str, inputs), "--out", str(tmp_path), "--bundle", str(bundle), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and f"{len(inputs) - 1} of {len(inputs)} recording(s) scored" in err  # 15b refused
    assert REFUSED["15b_signals_record_duration_0.edf"] in err
    for name, (_, used, note) in SCORED.items():
        record = Path(name).stem if name.endswith(".edf") else name
        rows = _table(tmp_path / f"{record}.epochs.csv")
        summary = json.loads((tmp_path / f"{record}.summary.json").read_text())
        assert [r["modalities"] for r in rows] == used, name
        assert summary["epochs"] == 10 and summary["unscorable_epochs"] == 0
        assert summary["epochs_per_modality_set"] == {s: used.count(s) for s in set(used)}
        assert (note is None) == (summary["notes"] == []), name
        assert summary["channel_rates_hz"] == SCORED[name][0], name
        for m, std in summary["signal_std_uv"].items():  # median per-epoch std over the epochs that used it
            assert std == pytest.approx(STD_UV[m], rel=0.05), (name, m)
    flat, control = _table(tmp_path / "20a_eeg_flat_second_half.epochs.csv"), _table(tmp_path / "20b_no_eeg_control.epochs.csv")
    probabilities = [k for k in flat[0] if k.startswith("p_")]
    assert [[r[k] for k in probabilities] for r in flat[5:]] == [[r[k] for k in probabilities] for r in control[5:]]
    assert [[r[k] for k in probabilities] for r in flat[:5]] != [[r[k] for k in probabilities] for r in control[:5]]
    long = _table(tmp_path / "subsecond.epochs.csv")
    assert len(long) == 300 and [r["true_stage"] for r in long[:5]] == ["W", "N1", "N2", "N3", "REM"]
    assert json.loads((tmp_path / "subsecond.summary.json").read_text())["reference"]["labelled_epochs"] == 300
