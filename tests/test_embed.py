"""`physioserve embed`: the Parquet table and its metadata read back with pandas and pyarrow, embeddings equal
to a real `bentoml serve`'s `/predict` for the same windows, unscorable epochs as nulls, resume (skips, and
refuses to mix two models), and the engine options' errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from test_export_fixtures import tiny_pipeline, write_edf, write_wfdb

from physioserve.cli import main
from physioserve.cohort import Prepared
from physioserve.embed import EmbedJob, embedding_matrix, embedding_table, read_metadata
from physioserve.io import read_recording
from physioserve.modalities import MODALITIES, STAGE_NAMES
from physioserve.preprocessing import DEFAULT_CONFIG
from physioserve.runtime import InferenceSession
from physioserve.scoring import predict_night


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    return tiny_pipeline(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def embedded(pipeline, tmp_path_factory):
    """An EDF+ (8 epochs, 200 Hz) and a WFDB record (6 epochs, 250 Hz) embedded into one OUT."""
    root = tmp_path_factory.mktemp("embed")
    (root / "data").mkdir()
    edf = write_edf(root / "data" / "night_a.edf", minutes=4)
    wfdb = write_wfdb(root / "data", "rec01", fs=250, minutes=3)
    assert main(["embed", str(edf), str(wfdb), "--out", str(root / "out"), "--bundle", str(pipeline["bundle"]),
                 "--no-progress"]) == 0
    return {"edf": edf, "wfdb": wfdb, "out": root / "out"}


def test_parquet_reads_back_with_pandas_and_pyarrow_with_the_model_in_its_metadata(embedded, pipeline):
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = embedded["out"]
    assert sorted(p.name for p in out.iterdir()) == ["night_a.parquet", "rec01.parquet"]
    table = pq.read_table(out / "night_a.parquet")
    probs = [f"p_{s}" for s in STAGE_NAMES]
    assert table.column_names == ["record", "epoch", "start_s", *(f"mask_{m}" for m in MODALITIES), "modalities", *probs,
                                  "p_arousal", "p_age_ge_55", "embedding"]
    kind = table.schema.field("embedding").type
    assert pa.types.is_fixed_size_list(kind) and kind.list_size == 32 and kind.value_type == pa.float32()
    frame = table.to_pandas()
    assert len(frame) == 8 and list(frame.epoch) == list(range(8)) and list(frame.start_s) == [30 * i for i in range(8)]
    assert frame.mask_eeg.all() and (frame.modalities == "eeg+eog+emg+ecg").all()
    assert np.allclose(frame[probs].sum(axis=1), 1, atol=1e-5) and frame.p_arousal.between(0, 1).all()
    meta = read_metadata(out / "night_a.parquet")
    assert meta["model"] == {"name": "physioserve", "version": "0.0.1-test", "d_model": 32, "night_context": False}
    assert meta["preprocessing"] == DEFAULT_CONFIG.to_dict() and meta["modalities"] == list(MODALITIES)
    assert meta["record"] == "night_a" and meta["source"] == str(embedded["edf"]) and meta["channels"]["eeg"] == "F3-M2"
    cohort = pd.read_parquet(out)  # OUT is one dataset: both recordings
    assert sorted(cohort.record.unique()) == ["night_a", "rec01"] and len(cohort) == 14
    assert embedding_matrix(cohort).shape == (14, 32) and np.array_equal(embedding_matrix(frame), embedding_matrix(table))
    session = InferenceSession(pipeline["bundle"])
    recording = read_recording(embedded["wfdb"])
    from physioserve.cache import recording_to_windows

    signals, mask = recording_to_windows(recording)
    expected = session.predict(signals, mask)
    rec = pq.read_table(out / "rec01.parquet")
    assert np.array_equal(embedding_matrix(rec), expected["embedding"])  # the one preprocessing, the same graph
    assert np.array_equal(rec["p_W"].to_numpy(), expected["sleep_stage_probs"][:, 0])


def test_unscorable_epochs_have_null_probabilities_and_embedding(pipeline, tmp_path):
    session = InferenceSession(pipeline["bundle"])
    rng = np.random.default_rng(0)
    signals = rng.normal(0, 1, (4, 4, 3000)).astype(np.float32)  # [n, 4, 3000]
    mask = np.ones((4, 4), bool)
    mask[2] = False  # epoch 2: every channel missing data
    mask[3, 1:] = False  # epoch 3: EEG only
    probs = predict_night(session, signals, mask)
    job = EmbedJob(tmp_path, session.bundle)
    table = embedding_table(Prepared("x.edf", "x", signals, mask, {"channels": {}, "notes": []}), probs, job.model)
    frame = table.to_pandas()
    assert list(frame.modalities) == ["eeg+eog+emg+ecg", "eeg+eog+emg+ecg", "", "eeg"]
    assert frame.p_W.isna().tolist() == [False, False, True, False] and frame.embedding[2] is None
    matrix = embedding_matrix(table)
    assert np.isnan(matrix[2]).all() and np.array_equal(matrix[[0, 1, 3]], probs["embedding"][[0, 1, 3]])


@pytest.mark.server
def test_embeddings_equal_those_of_predict_for_the_same_windows(embedded, pipeline, tmp_path):
    import pyarrow.parquet as pq
    import requests
    from test_service import REPO, start_server, stop_server

    recording = read_recording(embedded["edf"])
    raw = {m: recording.modality_windows(m)[0] for m in recording.present_modalities}  # [8, 6000] µV each
    windows = [{"fs": 200, **{m: raw[m][i].tolist() for m in raw}} for i in range(8)]
    env = {**os.environ, "PHYSIOSERVE_BUNDLE": str(pipeline["bundle"])}
    process, url = start_server([], env, REPO, tmp_path / "serve.log")
    try:
        answer = requests.post(f"{url}/predict", json={"windows": windows, "return_embedding": True}, timeout=120)
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
    finally:
        stop_server(process)
    table = pq.read_table(embedded["out"] / "night_a.parquet")
    served = np.array([p["embedding"] for p in predictions], np.float32)  # [8, 32]
    assert np.array_equal(embedding_matrix(table), served)
    for name in STAGE_NAMES:
        assert np.array_equal(table[f"p_{name}"].to_numpy(), np.array([p["sleep_stage"]["probabilities"][name]
                                                                         for p in predictions], np.float32))


def test_a_rerun_skips_done_recordings_and_refuses_another_models_outputs(embedded, pipeline, tmp_path, capsys):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(embedded["out"], out)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    edf3 = write_edf(tmp_path / "night_c.edf", minutes=2)
    args = [str(embedded["edf"]), str(embedded["wfdb"]), str(edf3), "--out", str(out), "--no-progress"]
    assert main(["embed", *args, "--bundle", str(pipeline["bundle"])]) == 0
    err = capsys.readouterr().err
    assert "1 of 1 recording(s) embedded" in err and "2 already done there, skipped" in err
    assert {p: out.joinpath(p).stat().st_mtime_ns for p in before} == before
    other = pipeline["bundle"].parent / "bundle-v2"
    if not other.exists():
        shutil.copytree(pipeline["bundle"], other)
        meta = json.loads((other / "bundle.json").read_text())
        meta["version"] = "0.0.9-other"
        (other / "bundle.json").write_text(json.dumps(meta))
    assert main(["embed", *args, "--bundle", str(other)]) == 1  # mixing two models in one OUT: refused
    err = capsys.readouterr().err
    assert "3 recording(s) there were made by model physioserve 0.0.1-test" in err and "--no-resume" in err
    assert {p: out.joinpath(p).stat().st_mtime_ns for p in before} == before


def test_engine_options_that_do_not_fit_are_refused(pipeline, tmp_path, capsys):
    edf = write_edf(tmp_path / "n.edf", minutes=1)
    common = [str(edf), "--out", str(tmp_path / "o"), "--bundle", str(pipeline["bundle"]), "--no-progress"]
    assert main(["embed", *common, "--workers", "2"]) == 2
    assert "--workers: only with --engine ray" in capsys.readouterr().err
    assert main(["score", str(edf), "--out", str(tmp_path / "o"), "--url", "http://127.0.0.1:9", "--engine", "ray"]) == 2
    assert "give one of them" in capsys.readouterr().err
    assert main(["embed", *common, "--engine", "ray", "--threads", "0"]) == 2
    assert not (tmp_path / "o").exists()
