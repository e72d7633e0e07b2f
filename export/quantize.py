"""int8 copies of the exported graph, and how far they drift from fp32.

What `export --int8` writes: static quantisation (`onnxruntime.quantization.quantize_static`, QDQ
format, after `quant_pre_process`), int8 weights per output channel and int8 activations whose
ranges come from calibration windows (MinMax), each fed with its recorded modality mask and with EEG
alone. Only the transformer's MatMuls by a weight are quantised (`INT8_GROUPS`: qkv, attention
output, MLP in and out); the tokenizers (Conv and projection), the two activation x activation MatMuls of attention (Q K^T, softmax x V), the heads
and every other op (LayerNorm, Softmax, the attention mask, GELU, pooling) stay fp32. The choice
comes from the per-group sensitivity run of `bench/int8_check.py` (docs/BENCHMARKS.md): on the
default model, quantising the tokenizer convolutions alone costs 8.5 % stage agreement (their
input, the signal, has a per-tensor range set by rare large samples), the tokenizer projections
6.5 %, softmax x V 1 %; the weight MatMuls together cost none.

`quantize_dynamic_int8` (weights only, activations quantised per batch) is kept for comparison.
The drift report compares an int8 graph with fp32 on held-out windows: sleep-stage agreement
(argmax) with the windows' own modality masks and with EEG alone (what many requests send), and the
largest probability and embedding differences.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx

from physioserve.bundle import OUTPUT_NAMES
from physioserve.modalities import MODALITY_INDEX
from physioserve.runtime import softmax

from .graph import example_inputs, ort_session

DYNAMIC_OPS = ("MatMul", "Gemm")
QUANTISABLE_OPS = ("MatMul", "Gemm", "Conv")
# every MatMul/Gemm/Conv of the encoder falls in one group (`node_groups`)
GROUPS = ("tokenizer_conv", "tokenizer_proj", "attn_qkv", "attn_scores", "attn_values", "attn_out", "mlp_in",
          "mlp_out", "heads")
TRANSFORMER_GROUPS = ("attn_qkv", "attn_scores", "attn_values", "attn_out", "mlp_in", "mlp_out")
INT8_GROUPS = ("attn_qkv", "attn_out", "mlp_in", "mlp_out")  # the transformer's MatMuls by a weight
CALIBRATION_WINDOWS = 256
HELDOUT_WINDOWS = 512
FP32_OPS_NOTE = "every op but the quantised MatMul/Gemm/Conv nodes (LayerNormalization, Softmax, attention mask, GELU, pooling)"


class Int8Windows(NamedTuple):
    """Calibration windows (train split) and held-out windows (test + val) for an int8 export."""

    calibration: np.ndarray  # [n, 4, 3000] float32
    calibration_mask: np.ndarray  # [n, 4] bool
    heldout: np.ndarray  # [m, 4, 3000] float32
    heldout_mask: np.ndarray  # [m, 4] bool
    calibration_source: str
    heldout_source: str


def _spaced(indices: np.ndarray, n: int) -> np.ndarray:
    return indices[np.linspace(0, len(indices) - 1, min(n, len(indices))).astype(np.int64)] if len(indices) else indices


def cache_int8_windows(cache_dir: str | Path, n_calibration: int = CALIBRATION_WINDOWS,
                       n_heldout: int = HELDOUT_WINDOWS) -> Int8Windows:
    """Evenly spaced windows of a cache: calibration from the train split, held-out from test + val.

    A cache without those splits (or without a split.json) gives all its records to both (the
    source says so). Windows with no modality present are skipped.
    """
    from physioserve.cache import WindowCache

    cache = WindowCache(cache_dir)
    name = Path(cache_dir).name

    def pick(splits: tuple[str, ...], n: int) -> tuple[np.ndarray, str]:
        try:
            indices = np.concatenate([cache.split_indices(s) for s in splits])
        except FileNotFoundError:
            indices = np.zeros(0, np.int64)
        label = " + ".join(splits)
        if not len(indices):
            indices, label = np.arange(len(cache)), "all records"
        indices = np.sort(indices[cache.mask[indices].any(1)])
        return _spaced(indices, n), f"windows of the window cache `{name}` ({label})"

    cal, cal_source = pick(("train",), n_calibration)
    held, held_source = pick(("test", "val"), n_heldout)
    return Int8Windows(cache.windows(cal), cache.mask[cal], cache.windows(held), cache.mask[held], cal_source, held_source)


def synthetic_int8_windows(n_calibration: int = 64, n_heldout: int = 256) -> Int8Windows:
    """N(0, 1) windows, some modalities absent (zeros): for graphs with random weights (speed only)."""
    def make(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        signals, mask = example_inputs(n, seed=seed)
        return np.where(mask[:, :, None], signals, 0.0).astype(np.float32), mask

    cal, held = make(n_calibration, 1), make(n_heldout, 12345)
    note = "synthetic N(0,1) windows (pass --data CACHE for real ones)"
    return Int8Windows(*cal, *held, note, note)


def node_groups(model: onnx.ModelProto) -> dict[str, list[str]]:
    """{group: node names} for every MatMul/Gemm/Conv of an exported encoder graph.

    Told apart by structure (the dynamo exporter's node names say little): Conv -> tokenizer_conv;
    a MatMul of two activations -> attn_scores (Q K^T, feeds the masked Softmax) or attn_values
    (softmax x V, the one after the Softmax); a weight named for the tokenizers or heads -> those;
    other weights [a, b] by shape: b = 3a qkv, a = b output projection, b > a MLP in, a > b MLP out.
    """
    weights = {i.name: tuple(i.dims) for i in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}

    def after_softmax(name: str, depth: int = 3) -> bool:  # softmax -> (IsNaN guard / Where) -> MatMul
        node = producer.get(name)
        if node is None or depth == 0:
            return False
        return node.op_type == "Softmax" or any(after_softmax(i, depth - 1) for i in node.input if i)

    groups: dict[str, list[str]] = {g: [] for g in GROUPS}
    for node in model.graph.node:
        if node.op_type not in QUANTISABLE_OPS:
            continue
        w = node.input[1]
        if node.op_type == "Conv":
            group = "tokenizer_conv"
        elif w not in weights:
            group = "attn_values" if after_softmax(node.input[0]) else "attn_scores"
        elif "tokenizers" in w:
            group = "tokenizer_proj"
        elif w.startswith("heads."):
            group = "heads"
        else:
            a, b = weights[w][-2:]
            group = "attn_qkv" if b == 3 * a else "attn_out" if a == b else "mlp_in" if b > a else "mlp_out"
        groups[group].append(node.name)
    return groups


def eeg_only(mask: np.ndarray) -> np.ndarray:
    """[n, 4] mask with EEG alone present (what many requests send)."""
    out = np.zeros_like(mask)
    out[:, MODALITY_INDEX["eeg"]] = True
    return out


class WindowReader:
    """onnxruntime CalibrationDataReader over (signals, mask) in batches, each batch also with EEG alone.

    Activation ranges differ with the modalities present (attention over 30 tokens instead of 120),
    so calibration sees both masks the drift report measures.
    """

    def __init__(self, signals: np.ndarray, mask: np.ndarray, batch: int = 16):
        self.feeds = [{"signals": np.ascontiguousarray(signals[i : i + batch], np.float32),
                       "modality_mask": np.ascontiguousarray(m[i : i + batch], bool)}
                      for i in range(0, len(signals), batch) for m in (mask, eeg_only(mask))]
        self.position = 0

    def get_next(self) -> dict | None:
        if self.position >= len(self.feeds):
            return None
        self.position += 1
        return self.feeds[self.position - 1]

    def rewind(self) -> None:
        self.position = 0


def _prepared(fp32_path: Path, tmp: Path) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = tmp / "prepared.onnx"
    try:  # symbolic shape inference + ORT graph cleanup make more nodes quantisable
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
    except Exception:  # noqa: BLE001 - pre-processing is an optimisation, not a requirement
        prepared = fp32_path
    return prepared


def quantize_static_int8(
    fp32_path: str | Path, int8_path: str | Path, signals: np.ndarray, mask: np.ndarray, *,
    groups: tuple[str, ...] = INT8_GROUPS, calibrate_method: str = "MinMax", calibration_source: str = "given windows",
    extra_options: dict | None = None,
) -> dict:
    """Write a static QDQ int8 copy of an fp32 graph, quantising the MatMul/Gemm/Conv nodes of `groups`.

    Returns the report: method, calibration (method, windows), groups quantised, and the
    MatMul/Gemm/Conv nodes kept fp32 by group.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise ValueError(f"unknown int8 groups {sorted(unknown)}; known: {', '.join(GROUPS)}")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = _prepared(Path(fp32_path), Path(tmp))
        by_group = node_groups(onnx.load(str(prepared)))
        nodes = [n for g in groups for n in by_group[g]]
        options = {"ActivationSymmetric": False, **(extra_options or {})}
        if nodes:
            quantize_static(str(prepared), str(int8_path), WindowReader(signals, mask), quant_format=QuantFormat.QDQ,
                            per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QInt8,
                            op_types_to_quantize=list(QUANTISABLE_OPS), nodes_to_quantize=nodes,
                            calibrate_method=getattr(CalibrationMethod, calibrate_method), extra_options=options)
        else:  # nothing to quantise: the fp32 graph itself (a baseline for the sensitivity run)
            onnx.save(onnx.load(str(prepared)), str(int8_path))
    onnx.checker.check_model(onnx.load(str(int8_path)), full_check=True)
    return {
        "method": "onnxruntime quantize_static, QDQ, int8 weights per channel, int8 activations",
        "calibration": {"method": calibrate_method, "windows": int(len(signals)), "source": calibration_source,
                        "masks": ["as recorded", "eeg only"], "extra_options": options},
        "groups_int8": list(groups),
        "nodes_int8": len(nodes),
        "nodes_fp32": {g: by_group[g] for g in GROUPS if g not in groups and by_group[g]},
        "ops_fp32": FP32_OPS_NOTE,
    }


def quantize_dynamic_int8(fp32_path: str | Path, int8_path: str | Path) -> dict:
    """Write the dynamically quantised copy (int8 weights per channel, MatMul/Gemm; activations per batch)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        prepared = _prepared(Path(fp32_path), Path(tmp))
        quantize_dynamic(str(prepared), str(int8_path), op_types_to_quantize=list(DYNAMIC_OPS), per_channel=True,
                         weight_type=QuantType.QInt8)
    onnx.checker.check_model(onnx.load(str(int8_path)), full_check=True)
    return {"method": "onnxruntime quantize_dynamic, int8 weights per channel, MatMul/Gemm"}


def _run(path: str | Path, signals: np.ndarray, mask: np.ndarray, batch: int) -> dict[str, np.ndarray]:
    session = ort_session(path)
    outs: dict[str, list] = {k: [] for k in OUTPUT_NAMES}
    for start in range(0, len(signals), batch):
        feed = {"signals": signals[start : start + batch], "modality_mask": mask[start : start + batch]}
        for key, value in zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), feed)):
            outs[key].append(value)
    return {k: np.concatenate(v) for k, v in outs.items()}


def int8_drift(
    fp32_path: str | Path, int8_path: str | Path, *, signals: np.ndarray | None = None, mask: np.ndarray | None = None,
    batch: int = 64, source: str | None = None,
) -> dict:
    """Compare int8 with fp32 on held-out windows (default: synthetic ones), with their masks and EEG alone.

    `sleep_stage_agreement` (what the export gate reads) is the lower of the two stage agreements.
    """
    if signals is None:
        windows = synthetic_int8_windows()
        signals, mask, source = windows.heldout, windows.heldout_mask, windows.heldout_source
    masks = {"as recorded": mask, "eeg only": eeg_only(mask)}
    report = {"windows": int(len(signals)), "source": source or "given windows",
              "all_modalities_fraction": round(float(mask.all(1).mean()), 4)}
    by_mask: dict[str, dict] = {}
    for label, m in masks.items():
        a, b = _run(fp32_path, signals, m, batch), _run(int8_path, signals, m, batch)
        row = {}
        for task in ("sleep_stage", "age", "arousal"):
            pa, pb = softmax(a[f"{task}_logits"]), softmax(b[f"{task}_logits"])
            row[f"{task}_agreement"] = round(float(np.mean(pa.argmax(1) == pb.argmax(1))), 4)
            row[f"{task}_max_abs_prob"] = round(float(np.max(np.abs(pa - pb))), 5)
        emb_a, emb_b = a["embedding"], b["embedding"]
        cos = np.sum(emb_a * emb_b, 1) / (np.linalg.norm(emb_a, axis=1) * np.linalg.norm(emb_b, axis=1) + 1e-12)
        row["embedding_min_cosine"] = round(float(cos.min()), 5)
        row["embedding_max_abs"] = round(float(np.max(np.abs(emb_a - emb_b))), 5)
        by_mask[label] = row
    for key in by_mask["as recorded"]:  # the worse of the two masks
        pick = max if "max_abs" in key else min
        report[key] = pick(row[key] for row in by_mask.values())
    report["by_mask"] = by_mask
    return report
