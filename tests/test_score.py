"""Recording scoring: night summary arithmetic, the shared preprocessing path, the CLI, and upload checks."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from test_export_fixtures import tiny_pipeline, write_edf, write_wfdb

from physioserve.cache import recording_to_windows
from physioserve.io import read_recording
from physioserve.modalities import STAGE_NAMES
from physioserve.runtime import InferenceSession
from physioserve.score import find_inputs
from physioserve.scoring import (
    COLUMNS,
    NightScore,
    UploadError,
    night_summary,
    open_upload,
    score_recording,
    stage_agreement,
    table_csv,
    upload_payload,
)


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    return tiny_pipeline(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def session(pipeline):
    return InferenceSession(pipeline["bundle"])


def test_night_summary_arithmetic():
    # W W N1 N2 N2 W N3 REM REM W  (10 epochs = 5 min); arousal flags on epochs 3, 4 (one run), 5 (wake), 7
    stage = np.array([0, 0, 1, 2, 2, 0, 3, 4, 4, 0])
    arousal = np.array([0, 0, 0, 1, 1, 1, 0, 1, 0, 0])
    s = night_summary(stage, arousal)
    assert s["epochs"] == 10 and s["total_recording_time_min"] == 5.0
    assert s["total_sleep_time_min"] == 3.0  # 6 sleep epochs
    assert s["sleep_onset_latency_min"] == 1.0  # first sleep epoch is epoch 2
    assert s["wake_after_sleep_onset_min"] == 1.0  # epochs 5 and 9
    assert s["sleep_efficiency_pct"] == 60.0
    assert s["stage_minutes"] == {"W": 2.0, "N1": 0.5, "N2": 1.0, "N3": 0.5, "REM": 1.0}
    assert s["stage_percent_of_sleep"] == {"N1": 16.67, "N2": 33.33, "N3": 16.67, "REM": 33.33}
    assert s["stage_percent_of_recording"]["W"] == 40.0
    assert s["arousal_episodes"] == 2  # epochs 3-4 and epoch 7; epoch 5 is wake
    assert s["arousal_index_per_h"] == 40.0  # 2 episodes / 0.05 h
    awake = night_summary(np.zeros(4, int), np.ones(4, int))
    assert awake["total_sleep_time_min"] == 0 and awake["sleep_onset_latency_min"] is None
    assert awake["arousal_index_per_h"] is None and awake["arousal_episodes"] == 0


def test_stage_agreement_matches_sklearn():
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(0)
    true = rng.integers(-1, 5, 200)
    pred = np.where(rng.random(200) < 0.6, np.clip(true, 0, 4), rng.integers(0, 5, 200))
    out = stage_agreement(pred, true)
    keep = true >= 0
    assert out["labelled_epochs"] == keep.sum()
    assert out["stage_accuracy"] == round(float(np.mean(pred[keep] == true[keep])), 4)
    assert out["stage_kappa"] == round(float(cohen_kappa_score(true[keep], pred[keep])), 4)


def test_scoring_uses_the_shared_preprocessing_path(session, tmp_path):
    recording = read_recording(write_edf(tmp_path / "night.edf", minutes=5))
    seen = {}

    class Spy:
        def predict(self, signals, mask):
            seen["signals"], seen["mask"] = signals, mask
            return session.predict(signals, mask)

    score = score_recording(recording, Spy(), model={"name": "m", "version": "v"})
    signals, mask = recording_to_windows(recording)
    assert np.array_equal(seen["signals"], signals) and np.array_equal(seen["mask"], mask)
    assert score.columns == [*COLUMNS, "true_stage"] and len(score.rows) == 10
    row = score.rows[3]
    assert row["epoch"] == 3 and row["start_s"] == 90 and row["stage"] in STAGE_NAMES
    assert abs(sum(row[f"p_{n}"] for n in STAGE_NAMES) - 1) < 1e-5
    assert score.column("true_stage")[:5] == ["W", "N1", "N2", "N3", "REM"]
    summary = score.summary
    assert summary["record"] == "night" and summary["modalities_used"] == ["eeg", "eog", "emg", "ecg"]
    assert summary["channels"]["ecg"] == "ECG" and summary["model"] == {"name": "m", "version": "v"}
    assert summary["reference"]["labelled_epochs"] == 10
    assert NightScore.from_json(json.loads(json.dumps(score.to_json()))) == score


def test_window_without_any_usable_modality_is_reported_unscorable(session, tmp_path):
    recording = read_recording(write_edf(tmp_path / "gap.edf", minutes=3))
    for name in recording.modality_channels.values():  # every channel missing in window 2
        channel = recording.channels[name]
        per = int(30 * channel.fs)
        channel.data = channel.data.copy()
        channel.data[2 * per + 5] = np.nan
    score = score_recording(recording, session)
    assert score.rows[2]["stage"] == "" and score.rows[2]["p_W"] is None and score.rows[2]["arousal"] is None
    assert all(row["stage"] in STAGE_NAMES for i, row in enumerate(score.rows) if i != 2)
    assert score.summary["unscorable_epochs"] == 1
    assert sum(score.summary["stage_minutes"].values()) == 2.5  # 5 scored epochs of 30 s
    assert ",,,,,,," in table_csv(score).splitlines()[3]  # empty cells, not "nan"


def test_score_cli_local_writes_tables_summary_plot_and_reports_failures(pipeline, tmp_path, capsys):
    from physioserve.cli import main

    data = tmp_path / "data"
    data.mkdir()
    write_edf(data / "night_a.edf", minutes=4)
    write_wfdb(data / "wfdb", "rec01", minutes=3)
    (data / "broken.edf").write_bytes(b"0       this is not an EDF file")
    (data / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    code = main(["score", str(data), "--out", str(out), "--bundle", str(pipeline["bundle"]), "--plot", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1  # one file failed, the others were scored
    failed = [line for line in err.splitlines() if "failed" in line]
    assert len(failed) == 1 and "broken.edf" in failed[0]
    assert "2 of 3 recording(s) scored" in err
    for name, n in (("night_a", 8), ("rec01", 6)):
        lines = (out / f"{name}.epochs.csv").read_text().splitlines()
        assert lines[0].startswith("epoch,start_s,stage,p_W,p_N1,p_N2,p_N3,p_REM,arousal,p_arousal,p_age_ge_55")
        assert len(lines) == n + 1
        summary = json.loads((out / f"{name}.summary.json").read_text())
        assert summary["epochs"] == n and summary["model"]["version"] == "0.0.1-test"
        assert (out / f"{name}.hypnogram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "true_stage" in (out / "night_a.epochs.csv").read_text().splitlines()[0]  # EDF+ annotations are labels


def test_score_cli_json_format(pipeline, tmp_path):
    from physioserve.cli import main

    edf = write_edf(tmp_path / "n.edf", minutes=2, annotate=False)
    assert main(["score", str(edf), "--out", str(tmp_path / "o"), "--bundle", str(pipeline["bundle"]), "--format", "json",
                 "--no-progress", "--channel-map", "eeg=F3-M2"]) == 0
    data = json.loads((tmp_path / "o" / "n.json").read_text())
    assert data["record"] == "n" and len(data["epochs"]) == 4 and "true_stage" not in data["columns"]
    assert data["summary"]["channels"]["eeg"] == "F3-M2"


def test_find_inputs_expands_folders(tmp_path):
    write_wfdb(tmp_path / "root", "rec01", minutes=1)
    write_wfdb(tmp_path / "root" / "nested", "rec02", minutes=1)
    (tmp_path / "root" / "a.EDF").write_bytes(b"")
    (tmp_path / "root" / "b-Hypnogram.edf").write_bytes(b"")
    (tmp_path / "empty").mkdir()
    found, problems = find_inputs([tmp_path / "root", tmp_path / "empty", tmp_path / "nope", tmp_path / "root" / "a.EDF"])
    assert [p.name for p in found] == ["a.EDF", "rec02", "rec01"]
    assert len(problems) == 2 and "no EDF/BDF file or WFDB record inside" in problems[0] and "no such file" in problems[1]


def _zip(entries: dict[str, bytes], symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = 0o120777 << 16
            archive.writestr(info, "rec01.dat")
    return buffer.getvalue()


def test_upload_payload_and_safe_unzip(tmp_path):
    record = write_wfdb(tmp_path, "rec01", minutes=1)
    (record / "rec01-notes.txt").write_text("a file of the record")
    (record / "other.txt").write_text("not part of the record")
    name, payload = upload_payload(record)
    assert name == "rec01.zip"
    assert sorted(zipfile.ZipFile(io.BytesIO(payload)).namelist()) == ["rec01-notes.txt", "rec01.dat", "rec01.hea"]
    upload = tmp_path / "upload.zip"
    upload.write_bytes(payload)
    (tmp_path / "work").mkdir()
    header = open_upload(upload, tmp_path / "work", max_unpacked_bytes=10**7)
    assert header.name == "rec01.hea" and read_recording(header).n_windows == 2
    files = {"rec01.hea": (record / "rec01.hea").read_bytes(), "rec01.dat": b"\0" * 10}
    bad = {
        "folder or a path": _zip({"../rec01.hea": files["rec01.hea"]}),
        "folder or a path ": _zip({"sub/rec01.hea": files["rec01.hea"]}),
        "is not a file of record": _zip({**files, "evil.sh": b"#!"}),
        ".hea files": _zip({"rec01.dat": b""}),
        "2 .hea files": _zip({**files, "rec02.hea": b""}),
        "symbolic link": _zip(files, symlink="rec01.lnk"),
        "unpacks to more than": _zip({**files, "rec01.big": b"\0" * 5000}),
        "not a readable zip": b"PK\x03\x04 truncated",
        "first bytes match neither": b"hello",
    }
    for i, (message, content) in enumerate(bad.items()):
        path = tmp_path / f"bad{i}.bin"
        path.write_bytes(content)
        work = tmp_path / f"w{i}"
        work.mkdir()
        with pytest.raises(UploadError, match=message.strip()):
            open_upload(path, work, max_unpacked_bytes=4000)
        assert not (tmp_path / "rec01.hea").exists() and not (tmp_path.parent / "rec01.hea").exists()
    edf = write_edf(tmp_path / "x.edf", minutes=1)
    (tmp_path / "we").mkdir()
    opened = open_upload(edf, tmp_path / "we", max_unpacked_bytes=0, name="../../night 1")
    assert opened.parent == tmp_path / "we" and opened.name.endswith("night_1.edf")


def test_csv_formats_floats_identically(session, tmp_path):
    recording = read_recording(write_edf(tmp_path / "n.edf", minutes=1))
    score = score_recording(recording, session)
    again = NightScore.from_json(json.loads(json.dumps(score.to_json())))
    assert table_csv(score) == table_csv(again)
    assert table_csv(score).splitlines()[1].count(".") == 7  # 5 stage, arousal and age probabilities, 6 decimals


def test_score_resume_skips_done_recordings_and_the_default_scores_again(pipeline, tmp_path, capsys):
    from physioserve.cli import main

    first, second = write_edf(tmp_path / "a.edf", minutes=2), write_edf(tmp_path / "b.edf", minutes=2, seed=1)
    out = tmp_path / "out"
    common = ["--out", str(out), "--bundle", str(pipeline["bundle"]), "--no-progress"]
    assert main(["score", str(first), *common]) == 0
    stamp = (out / "a.summary.json").stat().st_mtime_ns
    assert main(["score", str(first), str(second), *common, "--resume"]) == 0
    err = capsys.readouterr().err
    assert "1 of 1 recording(s) scored" in err and "1 already done there, skipped" in err
    assert (out / "a.summary.json").stat().st_mtime_ns == stamp and (out / "b.summary.json").exists()
    assert main(["score", str(first), *common]) == 0  # local default: scored again, as before
    assert (out / "a.summary.json").stat().st_mtime_ns != stamp
    assert not list(out.glob(".partial-*")) and not (out / "_errors.json").exists()


def test_inputs_with_the_same_record_name_are_left_out_instead_of_overwriting_each_other(pipeline, tmp_path, capsys):
    from physioserve.cli import main

    (tmp_path / "site1").mkdir()
    (tmp_path / "site2").mkdir()
    write_edf(tmp_path / "site1" / "night.edf", minutes=1)
    write_edf(tmp_path / "site2" / "night.edf", minutes=2)
    write_edf(tmp_path / "site2" / "other.edf", minutes=1)
    out = tmp_path / "out"
    code = main(["score", str(tmp_path / "site1"), str(tmp_path / "site2"), "--out", str(out), "--bundle",
                 str(pipeline["bundle"]), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("another input has the record name 'night'") == 2
    assert sorted(p.name for p in out.iterdir()) == ["_errors.json", "other.epochs.csv", "other.summary.json"]
    assert len(json.loads((out / "_errors.json").read_text())) == 2
