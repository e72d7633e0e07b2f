"""Export: the real tiny pipeline -> bundle; checker, parity at batch 1/2/7/64, metadata, int8, legacy fallback, store."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from test_export_fixtures import tiny_pipeline

from export.build import export_bundle
from export.graph import PARITY_BATCHES, check_graph, check_parity, example_inputs, export_onnx, read_metadata
from physioserve.bundle import BundleError, read_bundle, resolve_bundle, save_to_store, store_bundle_path
from physioserve.modalities import CLASS_NAMES, MODALITIES
from physioserve.preprocessing import DEFAULT_CONFIG
from training.heads import load_inference_model


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    return tiny_pipeline(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def model(pipeline):
    return load_inference_model(pipeline["probe"] / "model.pt")[0]


def test_export_writes_a_checked_bundle(pipeline):
    bundle = read_bundle(pipeline["bundle"], verify_hash=True)
    meta = bundle.meta
    assert sorted(p.name for p in bundle.path.iterdir()) == ["MODEL_CARD.md", "bundle.json", "model.int8.onnx", "model.onnx", "weights.pt"]
    assert meta["version"] == "0.0.1-test" and meta["d_model"] == 32 and meta["model"]["size"] == "tiny"
    assert meta["modalities"] == list(MODALITIES)
    assert meta["class_names"] == {k: list(v) for k, v in CLASS_NAMES.items()}
    assert meta["preprocessing"] == DEFAULT_CONFIG.to_dict()
    assert meta["export"]["exporter"] == "dynamo" and meta["export"]["fallback_reason"] is None
    prov = meta["provenance"]
    assert prov["checkpoint"]["file"] == "encoder.pt" and prov["checkpoint"]["step"] == 3
    assert prov["probe"]["mode"] == "linear" and prov["probe"]["encoder_matches_checkpoint"] is True
    assert prov["checkpoint"]["configs"]["model"]["name"] == "tiny"
    assert set(prov["evaluation"]["metrics"]) == {"sleep_stage", "age", "arousal"}
    # parity with torch at every batch size, written to bundle.json
    parity = meta["export"]["parity"]
    assert set(parity["max_abs"]) == {str(b) for b in PARITY_BATCHES}
    assert parity["passed"] and max(parity["max_abs"].values()) <= 1e-4
    # the ONNX file carries the same metadata, and passes the full checker with a dynamic batch
    props = read_metadata(bundle.model_path)
    assert props["version"] == meta["version"] and json.loads(props["preprocessing"]) == meta["preprocessing"]
    assert json.loads(props["class_names"]) == meta["class_names"]
    assert json.loads(props["channel_aliases"]) == meta["channel_aliases"]
    assert json.loads(props["provenance"])["checkpoint"]["sha256"] == prov["checkpoint"]["sha256"]
    check_graph(bundle.model_path)
    graph = onnx.load(str(bundle.model_path))
    assert [i.type.tensor_type.elem_type for i in graph.graph.input] == [onnx.TensorProto.FLOAT, onnx.TensorProto.BOOL]
    # the attention mask is an additive bias: no Where / IsNaN guards over the score tensors (bench/attention_mask.py)
    assert "IsNaN" not in {node.op_type for node in graph.graph.node}
    # int8 graph and its drift report
    int8 = meta["export"]["int8"]
    assert int8["file"] == "model.int8.onnx" and "cache" in int8["source"]
    assert 0.8 <= int8["sleep_stage_agreement"] <= 1.0
    assert read_metadata(bundle.path / "model.int8.onnx")["version"] == meta["version"]
    # model card: summary, evaluation table, export checks
    card = bundle.card
    assert bundle.card_summary().startswith("Multimodal sleep model (tiny size")
    assert "| sleep_stage |" in card and "batch 64:" in card and "int8" in card


def test_card_has_the_notes_and_the_missing_modality_table(pipeline):
    meta = json.loads((pipeline["bundle"] / "bundle.json").read_text())
    rows = {r["inputs"]: r for r in meta["provenance"]["modality_ablation"]}
    assert list(rows) == ["all four", "eeg", "eog", "emg", "ecg", "no eeg", "no eog", "no emg", "no ecg", "eeg+eog"]
    assert len({r["windows"] for r in rows.values()}) == 1  # every test window keeps some modality
    evaluation = json.loads((pipeline["evaluation"] / "evaluation.json").read_text())["runs"][0]["metrics"]
    # all four modalities through ONNX Runtime = the probe's own test metrics through torch
    assert abs(rows["all four"]["metrics"]["sleep_stage"]["balanced_accuracy"]
               - evaluation["sleep_stage"]["balanced_accuracy"]) < 0.02
    assert rows["all four"]["windows"] == evaluation["sleep_stage"]["n"]
    card = (pipeline["bundle"] / "MODEL_CARD.md").read_text()
    assert "**Trained on made-up test windows.**" in card.split("## Intended use")[0]
    assert "## Missing modalities" in card and "| no ecg |" in card


def test_parity_holds_at_each_batch_size_with_modalities_absent(model, pipeline):
    report = check_parity(model, pipeline["bundle"] / "model.onnx", batches=(1, 2, 7, 64), seed=99)
    assert all(v <= 1e-4 for v in report["max_abs"].values())
    assert report["absent_modalities"]["64"] > 0
    signals, mask = example_inputs(7)
    assert mask.any(1).all() and not mask.all()


def test_parity_check_catches_a_wrong_graph(model, pipeline, tmp_path):
    other = load_inference_model(pipeline["probe"] / "model.pt")[0]
    with torch.no_grad():
        other.heads["sleep_stage"].bias.add_(0.01)
    with pytest.raises(ValueError, match="max-abs"):
        check_parity(other, pipeline["bundle"] / "model.onnx", batches=(2,))


def test_legacy_exporter_is_a_working_fallback(model, tmp_path, monkeypatch):
    import export.graph as graph

    def broken(*args, **kwargs):
        raise RuntimeError("dynamo exporter unavailable (simulated)")

    monkeypatch.setattr(graph, "_dynamo_export", broken)
    info = export_onnx(model, tmp_path / "auto.onnx", exporter="auto")
    assert info["exporter"] == "legacy" and "simulated" in info["fallback_reason"]
    check_graph(tmp_path / "auto.onnx")
    assert max(check_parity(model, tmp_path / "auto.onnx")["max_abs"].values()) <= 1e-4
    with pytest.raises(RuntimeError, match="simulated"):
        export_onnx(model, tmp_path / "strict.onnx", exporter="dynamo")


def test_legacy_flag_writes_a_loadable_bundle_and_registers_it(pipeline, tmp_path, capsys):
    from physioserve.cli import main
    from physioserve.runtime import InferenceSession

    out = tmp_path / "legacy"
    assert main(["export", "--checkpoint", str(pipeline["run"] / "encoder.pt"), "--probe", str(pipeline["probe"]),
                 "--out", str(out), "--legacy", "--register", "--version", "0.0.2-legacy"]) == 0
    assert "registered in the BentoML model store as physioserve:" in capsys.readouterr().out
    assert read_bundle(store_bundle_path("physioserve:latest")).version == "0.0.2-legacy"
    bundle = read_bundle(out)
    assert bundle.meta["export"]["exporter"] == "legacy" and "int8" not in bundle.meta["export"]
    # without --evaluation the card falls back to probe.json's validation metrics
    assert "validation" in bundle.meta["provenance"]["evaluation"]["source"]
    signals, mask = example_inputs(5)
    out_legacy = InferenceSession(bundle).run(signals, mask)
    out_dynamo = InferenceSession(pipeline["bundle"]).run(signals, mask)
    for name in out_legacy:
        assert np.max(np.abs(out_legacy[name] - out_dynamo[name])) <= 1e-4


def test_export_refuses_a_checkpoint_with_another_preprocessing(pipeline, tmp_path, capsys):
    from physioserve.cli import main

    blob = torch.load(pipeline["run"] / "encoder.pt", weights_only=True)
    blob["configs"]["preprocessing"] = {**blob["configs"]["preprocessing"], "clip": 20.0}
    torch.save(blob, tmp_path / "encoder.pt")
    code = main(["export", "--checkpoint", str(tmp_path / "encoder.pt"), "--probe", str(pipeline["probe"]),
                 "--out", str(tmp_path / "b")])
    assert code == 1 and "preprocessing config" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_export_refuses_a_linear_probe_on_another_encoder(pipeline, tmp_path, capsys):
    from physioserve.cli import main

    blob = torch.load(pipeline["run"] / "encoder.pt", weights_only=True)
    key = next(iter(blob["encoder"]))
    blob["encoder"][key] = blob["encoder"][key] + 1.0
    torch.save(blob, tmp_path / "encoder.pt")
    code = main(["export", "--checkpoint", str(tmp_path / "encoder.pt"), "--probe", str(pipeline["probe"]),
                 "--out", str(tmp_path / "b")])
    assert code == 1 and "encoder differs" in capsys.readouterr().err


def test_export_does_not_overwrite_and_cleans_up_on_failure(model, pipeline, tmp_path, monkeypatch):
    with pytest.raises(FileExistsError):
        export_bundle(model, pipeline["bundle"], model_config={"d_model": 32}, provenance={})
    import export.build as build

    monkeypatch.setattr(build, "check_parity", lambda *a, **k: (_ for _ in ()).throw(ValueError("parity failed")))
    with pytest.raises(ValueError, match="parity failed"):
        export_bundle(model, tmp_path / "out", model_config={"d_model": 32, "name": "tiny"}, provenance={})
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_register_saves_into_the_model_store_and_resolves_from_it(pipeline, tmp_path, monkeypatch):
    monkeypatch.delenv("PHYSIOSERVE_BUNDLE", raising=False)
    tag = save_to_store(pipeline["bundle"])
    assert tag.startswith("physioserve:")
    stored = store_bundle_path(tag)
    assert sorted(p.name for p in stored.iterdir() if not p.name.startswith("model.yaml")) == [
        "MODEL_CARD.md", "bundle.json", "model.int8.onnx", "model.onnx", "weights.pt"]
    resolved = resolve_bundle(packaged=tmp_path / "none")
    assert resolved.source.startswith("store:") and resolved.version == "0.0.1-test"
    assert resolve_bundle(tag).path == stored
    with pytest.raises(BundleError, match="no such folder and no model"):
        resolve_bundle("physioserve:nosuchversion")


def test_int8_below_the_agreement_gate_is_refused_and_not_written(pipeline, tmp_path):
    """An int8 graph that does not give fp32's stage on enough held-out windows is never written (issue 13)."""
    from export.build import INT8_MIN_AGREEMENT, export_bundle
    from export.cli import load_for_export
    from export.quantize import cache_int8_windows
    from physioserve.runtime import InferenceSession

    assert INT8_MIN_AGREEMENT == 0.99
    model, model_config, provenance = load_for_export(pipeline["run"] / "encoder.pt", pipeline["probe"], None)
    bundle = export_bundle(model, tmp_path / "gated", model_config=model_config, provenance=provenance, int8=True,
                           int8_windows=cache_int8_windows(pipeline["cache"]), int8_min_agreement=1.01, version="0.0.3-gate")
    refused = bundle.meta["export"]["int8_refused"]
    assert "int8" not in bundle.meta["export"] and not (bundle.path / "model.int8.onnx").exists()
    assert refused["min_agreement"] == 1.01 and 0 <= refused["sleep_stage_agreement"] <= 1 and refused["windows"] >= 10
    assert "model.int8.onnx" not in bundle.meta["files"]
    with pytest.raises(BundleError, match="no int8 graph"):
        InferenceSession(bundle, variant="int8")
