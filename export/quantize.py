"""Dynamic int8 quantisation of the exported graph, and how far it drifts from fp32.

`onnxruntime.quantization.quantize_dynamic`: int8 weights for MatMul/Gemm (the transformer's bulk),
activations quantised on the fly per batch; no calibration data needed. The drift report compares
the int8 graph with the fp32 one on the same windows: sleep-stage agreement (argmax), and the
largest probability and embedding differences.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

from physioserve.bundle import OUTPUT_NAMES
from physioserve.runtime import softmax

from .graph import example_inputs, ort_session

INT8_OPS = ("MatMul", "Gemm")


def quantize_int8(fp32_path: str | Path, int8_path: str | Path) -> None:
    """Write the dynamically quantised (int8 weights, per-channel) copy of an fp32 graph."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:  # symbolic shape inference + ORT graph cleanup make more nodes quantisable
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
        except Exception:  # noqa: BLE001 - pre-processing is an optimisation, not a requirement
            prepared = Path(fp32_path)
        quantize_dynamic(str(prepared), str(int8_path), op_types_to_quantize=list(INT8_OPS),
                         per_channel=True, weight_type=QuantType.QInt8)
    onnx.checker.check_model(onnx.load(str(int8_path)), full_check=True)


def int8_drift(
    fp32_path: str | Path, int8_path: str | Path, *, signals: np.ndarray | None = None, mask: np.ndarray | None = None,
    n: int = 256, batch: int = 64, source: str | None = None,
) -> dict:
    """Compare int8 with fp32 on `signals`/`mask` (default: n synthetic windows, some modalities absent)."""
    source = source or "given windows"
    if signals is None:
        signals, mask = example_inputs(n, seed=12345)
        signals = np.where(mask[:, :, None], signals, 0.0).astype(np.float32)
        source = "synthetic N(0,1) windows (pass --data CACHE for real ones)"
    fp32, int8 = ort_session(fp32_path), ort_session(int8_path)
    outs = {"fp32": {k: [] for k in OUTPUT_NAMES}, "int8": {k: [] for k in OUTPUT_NAMES}}
    for start in range(0, len(signals), batch):
        feed = {"signals": signals[start : start + batch], "modality_mask": mask[start : start + batch]}
        for name, session in (("fp32", fp32), ("int8", int8)):
            for key, value in zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), feed)):
                outs[name][key].append(value)
    a = {k: np.concatenate(v) for k, v in outs["fp32"].items()}
    b = {k: np.concatenate(v) for k, v in outs["int8"].items()}
    report = {"windows": int(len(signals)), "source": source}
    for task in ("sleep_stage", "age", "arousal"):
        pa, pb = softmax(a[f"{task}_logits"]), softmax(b[f"{task}_logits"])
        report[f"{task}_agreement"] = round(float(np.mean(pa.argmax(1) == pb.argmax(1))), 4)
        report[f"{task}_max_abs_prob"] = round(float(np.max(np.abs(pa - pb))), 5)
    emb_a, emb_b = a["embedding"], b["embedding"]
    cos = np.sum(emb_a * emb_b, 1) / (np.linalg.norm(emb_a, axis=1) * np.linalg.norm(emb_b, axis=1) + 1e-12)
    report["embedding_min_cosine"] = round(float(cos.min()), 5)
    report["embedding_max_abs"] = round(float(np.max(np.abs(emb_a - emb_b))), 5)
    return report
