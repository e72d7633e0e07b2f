"""Static int8 (issue 13): layer groups, what stays fp32, calibration from the cache, and the agreement gate."""

from __future__ import annotations

import onnx
import pytest
from test_export_fixtures import tiny_pipeline

from export.quantize import GROUPS, INT8_GROUPS, cache_int8_windows, node_groups, quantize_static_int8


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    return tiny_pipeline(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def exported(pipeline):
    from export.cli import load_for_export

    return load_for_export(pipeline["run"] / "encoder.pt", pipeline["probe"], None)


def test_every_matmul_gemm_conv_falls_in_one_group(pipeline):
    graph = onnx.load(str(pipeline["bundle"] / "model.onnx"))
    groups = node_groups(graph)
    names = [n for g in groups.values() for n in g]
    wanted = [n.name for n in graph.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")]
    assert sorted(names) == sorted(wanted) and len(set(names)) == len(names)
    layers = 2  # tiny: 2 transformer blocks, 4 modalities, 3 heads
    assert {g: len(v) for g, v in groups.items()} == {
        "tokenizer_conv": 4, "tokenizer_proj": 4, "attn_qkv": layers, "attn_scores": layers, "attn_values": layers,
        "attn_out": layers, "mlp_in": layers, "mlp_out": layers, "heads": 3}


def test_cache_windows_calibrate_on_train_and_measure_on_test_and_val(pipeline):
    windows = cache_int8_windows(pipeline["cache"])
    assert "(train)" in windows.calibration_source and "(test + val)" in windows.heldout_source
    assert windows.calibration.shape[1:] == (4, 3000) and len(windows.calibration) == len(windows.calibration_mask)
    assert windows.heldout_mask.any(1).all()


def test_static_int8_quantises_only_the_chosen_groups(pipeline, tmp_path):
    windows = cache_int8_windows(pipeline["cache"])
    out = tmp_path / "int8.onnx"
    report = quantize_static_int8(pipeline["bundle"] / "model.onnx", out, windows.calibration, windows.calibration_mask)
    assert report["groups_int8"] == list(INT8_GROUPS) and report["calibration"]["method"] == "MinMax"
    assert set(report["nodes_fp32"]) == set(GROUPS) - set(INT8_GROUPS)
    graph = onnx.load(str(out)).graph
    dequantised = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    for node in graph.node:  # a kept-fp32 node reads no dequantised tensor; a quantised one does
        if node.op_type in ("MatMul", "Gemm", "Conv"):
            fed = any(i in dequantised for i in node.input)
            kept = any(node.name in v for v in report["nodes_fp32"].values())
            assert fed != kept, node.name
    assert not any(n.op_type == "DequantizeLinear" and n.output[0] in
                   {i for m in graph.node if m.op_type in ("LayerNormalization", "Softmax") for i in m.input}
                   for n in graph.node)


@pytest.mark.parametrize("threshold, written", [(0.0, True), (1.01, False)])
def test_the_gate_writes_int8_above_the_threshold_and_refuses_below(pipeline, exported, tmp_path, threshold, written):
    from export.build import INT8_MIN_AGREEMENT, export_bundle

    assert INT8_MIN_AGREEMENT == 0.99
    model, model_config, provenance = exported
    bundle = export_bundle(model, tmp_path / "b", model_config=model_config, provenance=provenance, int8=True,
                           int8_windows=cache_int8_windows(pipeline["cache"]), int8_min_agreement=threshold,
                           parity_batches=(1, 7), version="0.0.4-gate")
    export = bundle.meta["export"]
    report = export["int8"] if written else export["int8_refused"]
    assert ("int8_refused" in export) != written and ("int8" in export) == written
    assert (bundle.path / "model.int8.onnx").exists() == written and ("model.int8.onnx" in bundle.meta["files"]) == written
    assert report["method"].startswith("onnxruntime quantize_static, QDQ")
    assert "(train)" in report["calibration"]["source"] and "(test + val)" in report["source"]
    assert report["nodes_fp32"]["tokenizer_conv"] and report["nodes_fp32"]["heads"]  # names the nodes kept fp32
    by_mask = report["by_mask"]
    assert report["sleep_stage_agreement"] == min(r["sleep_stage_agreement"] for r in by_mask.values())
    assert set(by_mask) == {"as recorded", "eeg only"} and report["min_agreement"] == threshold
