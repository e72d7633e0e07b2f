"""Runtime: bundle loading and refusal, providers reported, outputs vs torch, chunking, packing, no torch import."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from test_export_fixtures import tiny_pipeline

from export.graph import example_inputs, set_metadata
from physioserve.bundle import BundleError, read_bundle, resolve_bundle
from physioserve.runtime import (
    InferenceSession,
    check_model_input,
    choose_providers,
    pack_outputs,
    pack_windows,
    unpack_outputs,
    unpack_window,
)


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    return tiny_pipeline(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def session(pipeline):
    return InferenceSession(pipeline["bundle"], batch_size=5)


def test_session_reports_the_providers_in_use(session):
    assert session.providers == session.session.get_providers()
    assert "CPUExecutionProvider" in session.providers
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert session.providers == ["CPUExecutionProvider"]
        with pytest.raises(ValueError, match="onnxruntime-gpu"):
            choose_providers("cuda")
    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    described = session.describe()
    assert described["threads"] >= 1 and described["variant"] == "fp32" and described["source"] == "folder"


def test_default_chunk_is_smaller_on_cpu(pipeline):
    """On CPU a session runs CPU_BATCH windows per ONNX Runtime call (faster per window than 64 there),
    and chunking does not change the answer beyond float rounding."""
    from physioserve.runtime import CPU_BATCH, DEFAULT_BATCH

    default, wide = InferenceSession(pipeline["bundle"]), InferenceSession(pipeline["bundle"], batch_size=DEFAULT_BATCH)
    if default.providers[0] == "CPUExecutionProvider":
        assert default.batch_size == CPU_BATCH == 16 and default.describe()["batch_size"] == 16
    signals = np.random.default_rng(3).normal(0, 1, (CPU_BATCH * 2 + 3, 4, 3000)).astype(np.float32)
    mask = np.ones((len(signals), 4), bool)
    a, b = default.run(signals, mask), wide.run(signals, mask)
    assert a["embedding"].shape == (CPU_BATCH * 2 + 3, default.d_model)
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-4)


def test_predict_matches_torch_in_chunks(session, pipeline):
    import torch

    from training.heads import load_inference_model

    model = load_inference_model(pipeline["probe"] / "model.pt")[0]
    signals, mask = example_inputs(12, seed=3)  # 12 windows in chunks of 5: 5 + 5 + 2
    out = session.predict(signals, mask)
    with torch.no_grad():
        expected = model(torch.from_numpy(signals), torch.from_numpy(mask))
    for name, ref in zip(("embedding", "sleep_stage_logits", "age_logits", "arousal_logits"), expected):
        assert out[name].shape == tuple(ref.shape)
        assert np.max(np.abs(out[name] - ref.numpy())) <= 1e-4
    for task, k in (("sleep_stage", 5), ("age", 2), ("arousal", 2)):
        probs = out[f"{task}_probs"]
        assert probs.shape == (12, k) and np.allclose(probs.sum(1), 1, atol=1e-6) and (probs >= 0).all()
    assert session.run(signals[:0], mask[:0])["embedding"].shape == (0, 32)


def test_int8_variant_loads_and_mostly_agrees(session, pipeline):
    int8 = InferenceSession(pipeline["bundle"], variant="int8")
    signals, mask = example_inputs(32, seed=4)
    a = session.predict(signals, mask)["sleep_stage_probs"]
    b = int8.predict(signals, mask)["sleep_stage_probs"]
    assert np.mean(a.argmax(1) == b.argmax(1)) >= 0.8 and np.max(np.abs(a - b)) < 0.2


def test_model_input_is_checked():
    signals, mask = example_inputs(3)
    with pytest.raises(ValueError, match=r"expected \[n, 4, 3000\]"):
        check_model_input(signals[:, :, :2999], mask)
    with pytest.raises(ValueError, match="modality_mask"):
        check_model_input(signals, mask[:, :3])
    mask[1] = False
    with pytest.raises(ValueError, match="window 1: no modality present"):
        check_model_input(signals, mask)


def test_refuses_a_bundle_made_with_another_preprocessing(pipeline, tmp_path):
    changed = tmp_path / "changed"
    shutil.copytree(pipeline["bundle"], changed)
    meta = json.loads((changed / "bundle.json").read_text())
    meta["preprocessing"]["scale_uv"]["eeg"] = 50.0
    (changed / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="different preprocessing config .*scale_uv"):
        read_bundle(changed)
    # bundle.json right but the graph's own metadata wrong: the session refuses too
    meta["preprocessing"]["scale_uv"]["eeg"] = 25.0
    (changed / "bundle.json").write_text(json.dumps(meta))
    onnx_meta = {**meta, "preprocessing": {**meta["preprocessing"], "clip": 1.0}}
    onnx_meta.pop("files")
    set_metadata(changed / "model.onnx", onnx_meta)
    with pytest.raises(BundleError, match="ONNX file's preprocessing config differs"):
        InferenceSession(read_bundle(changed))


def test_refuses_incomplete_or_foreign_bundles(pipeline, tmp_path):
    with pytest.raises(BundleError, match="not a folder"):
        read_bundle(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="missing model.onnx, bundle.json"):
        read_bundle(tmp_path / "empty")
    other = tmp_path / "other"
    shutil.copytree(pipeline["bundle"], other)
    meta = json.loads((other / "bundle.json").read_text())
    meta["class_names"]["sleep_stage"] = ["W", "L", "D", "REM", "X"]
    (other / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="class_names"):
        read_bundle(other)
    mixed = tmp_path / "mixed"
    shutil.copytree(pipeline["bundle"], mixed)
    meta = json.loads((mixed / "bundle.json").read_text())
    meta["version"] = "9.9.9"
    (mixed / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="mixes two exports"):
        InferenceSession(read_bundle(mixed))
    with pytest.raises(BundleError, match="does not match the sha256"):
        (mixed / "model.onnx").write_bytes((mixed / "model.onnx").read_bytes() + b"\0")
        read_bundle(mixed, verify_hash=True)


def test_resolve_order_explicit_env_packaged(pipeline, tmp_path, monkeypatch):
    monkeypatch.delenv("PHYSIOSERVE_BUNDLE", raising=False)
    assert resolve_bundle(pipeline["bundle"]).source == "folder"
    monkeypatch.setenv("PHYSIOSERVE_BUNDLE", str(pipeline["bundle"]))
    assert resolve_bundle().path == pipeline["bundle"]
    monkeypatch.delenv("PHYSIOSERVE_BUNDLE")
    packaged = tmp_path / "default_bundle"
    shutil.copytree(pipeline["bundle"], packaged)
    found = resolve_bundle(packaged=packaged, use_store=False)
    assert found.source == "packaged" and found.path == packaged
    with pytest.raises(BundleError, match="no model bundle: none given"):
        resolve_bundle(packaged=tmp_path / "nothing", use_store=False)
    with pytest.raises(BundleError, match="no such folder"):
        resolve_bundle(str(tmp_path / "not" / "there"))


def test_packing_round_trips_exactly():
    signals, mask = example_inputs(4)
    signals = np.where(mask[:, :, None], signals, 0.0).astype(np.float32)
    packed = pack_windows(signals, mask)
    for i, item in enumerate(packed):
        s, m = unpack_window(item)
        assert np.array_equal(s, signals[i]) and np.array_equal(m, mask[i])
    assert unpack_window("not base64!") is None and unpack_window("AAAA") is None
    bad = signals.copy()
    bad[0, 0, 0] = np.nan
    assert unpack_window(pack_windows(bad, mask)[0]) is None
    out = {"embedding": np.random.rand(4, 8).astype(np.float32), "sleep_stage_logits": np.random.rand(4, 5).astype(np.float32),
           "age_logits": np.random.rand(4, 2).astype(np.float32), "arousal_logits": np.random.rand(4, 2).astype(np.float32)}
    back = unpack_outputs(pack_outputs(out), 8)
    assert all(np.array_equal(back[k], out[k]) for k in out)


def test_served_path_never_imports_torch():
    code = ("import sys; import physioserve.service, physioserve.score, physioserve.scoring, physioserve.runtime, "
            "physioserve.bundle, physioserve.cli; "
            "bad = [m for m in ('torch', 'training', 'export', 'onnx') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
