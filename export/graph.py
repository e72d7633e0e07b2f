"""torch `InferenceModel` -> one ONNX graph, with the checks every export runs.

`export_onnx` uses the dynamo exporter (`torch.onnx.export(dynamo=True)`, torch.export + onnxscript)
and falls back to the legacy TorchScript exporter when it fails (or when asked for with
`exporter="legacy"`); the bundle records which one made the file. Then: `onnx.checker` full check,
and `check_parity` runs the graph in ONNX Runtime against torch at several batch sizes with some
modalities absent (the values of absent modalities are garbage on purpose: they must not matter).
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import onnx
import torch

from physioserve.bundle import INPUT_NAMES, OUTPUT_NAMES
from physioserve.modalities import MODALITIES, WINDOW_SAMPLES

log = logging.getLogger(__name__)

OPSET = 18
PARITY_BATCHES = (1, 2, 7, 64)
PARITY_TOLERANCE = 1e-4
MAX_BATCH = 4096  # upper bound given to torch.export for the dynamic batch dimension (runtime has none)


def example_inputs(n: int, seed: int = 0, absent_fraction: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """n windows of N(0, 1) signals with random modalities absent (at least one present per window).

    Absent modalities hold large garbage values: the model must ignore them.
    """
    rng = np.random.default_rng(seed)
    signals = rng.normal(0.0, 1.0, (n, len(MODALITIES), WINDOW_SAMPLES)).astype(np.float32)  # [n, 4, 3000]
    mask = rng.random((n, len(MODALITIES))) >= absent_fraction  # [n, 4]
    if n:
        mask[0] = True  # one full window
        if n > 1:
            mask[1] = [True, False, False, False]  # one EEG-only window
    empty = ~mask.any(axis=1)
    mask[empty, rng.integers(0, len(MODALITIES), int(empty.sum()))] = True
    signals[~mask] = 1e3
    return signals, mask


def _dynamo_export(model: torch.nn.Module, path: Path, opset: int) -> None:
    signals, mask = (torch.from_numpy(a) for a in example_inputs(2))
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (signals, mask), dynamo=True, input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
            dynamic_shapes=({0: batch}, {0: batch}), opset_version=opset, verbose=False,
        )
        program.save(str(path), external_data=False)


def _legacy_export(model: torch.nn.Module, path: Path, opset: int) -> None:
    signals, mask = (torch.from_numpy(a) for a in example_inputs(2))
    names = (*INPUT_NAMES, *OUTPUT_NAMES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (signals, mask), str(path), dynamo=False, input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES), dynamic_axes={name: {0: "batch"} for name in names}, opset_version=opset,
        )


def export_onnx(model: torch.nn.Module, path: str | Path, *, exporter: str = "auto", opset: int = OPSET) -> dict:
    """Write `model` (eval mode, CPU) to `path`. exporter: auto (dynamo, legacy on failure) | dynamo | legacy.

    Returns {"exporter": used, "opset": opset, "fallback_reason": why dynamo was not used, or None}.
    """
    if exporter not in ("auto", "dynamo", "legacy"):
        raise ValueError(f"exporter {exporter!r}; accepted: auto, dynamo, legacy")
    path = Path(path)
    model = model.eval().cpu()
    reason = None
    if exporter in ("auto", "dynamo"):
        try:
            _dynamo_export(model, path, opset)
            return {"exporter": "dynamo", "opset": opset, "fallback_reason": None}
        except Exception as error:  # noqa: BLE001 - any exporter failure falls back when allowed
            if exporter == "dynamo":
                raise
            reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:500]
            log.warning("dynamo exporter failed (%s); falling back to the legacy TorchScript exporter", reason)
    _legacy_export(model, path, opset)
    return {"exporter": "legacy", "opset": opset, "fallback_reason": reason}


def check_graph(path: str | Path) -> None:
    """onnx.checker full check (with shape inference) and the graph interface of DESIGN's contract."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    inputs = tuple(i.name for i in model.graph.input)
    outputs = tuple(o.name for o in model.graph.output)
    if inputs != INPUT_NAMES or outputs != OUTPUT_NAMES:
        raise ValueError(f"{path}: inputs {inputs} / outputs {outputs}, expected {INPUT_NAMES} / {OUTPUT_NAMES}")
    signals = model.graph.input[0].type.tensor_type
    mask = model.graph.input[1].type.tensor_type
    if signals.elem_type != onnx.TensorProto.FLOAT or mask.elem_type != onnx.TensorProto.BOOL:
        raise ValueError(f"{path}: signals must be float32 and modality_mask bool")
    for value in (*model.graph.input, *model.graph.output):
        dim0 = value.type.tensor_type.shape.dim[0]
        if dim0.HasField("dim_value"):
            raise ValueError(f"{path}: {value.name} has a fixed batch dimension {dim0.dim_value}; it must be dynamic")


def ort_session(path: str | Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def check_parity(
    model: torch.nn.Module, path: str | Path, *, batches=PARITY_BATCHES, tolerance: float = PARITY_TOLERANCE, seed: int = 0
) -> dict:
    """Max-abs difference ONNX Runtime vs torch per batch size and output; raises when above `tolerance`."""
    session = ort_session(path)
    model = model.eval()
    report: dict = {"tolerance": tolerance, "max_abs": {}, "per_output": {}}
    for n in batches:
        signals, mask = example_inputs(n, seed=seed + n)
        with torch.no_grad():
            expected = [t.numpy() for t in model(torch.from_numpy(signals), torch.from_numpy(mask))]
        got = session.run(list(OUTPUT_NAMES), {"signals": signals, "modality_mask": mask})
        per = {name: float(np.max(np.abs(g - e))) for name, g, e in zip(OUTPUT_NAMES, got, expected)}
        report["per_output"][str(n)] = per
        report["max_abs"][str(n)] = max(per.values())
        report.setdefault("absent_modalities", {})[str(n)] = int((~mask).sum())
    worst = max(report["max_abs"].values())
    report["passed"] = bool(worst <= tolerance)
    if not report["passed"]:
        raise ValueError(f"{path}: ONNX vs torch max-abs {worst:.3g} > {tolerance:g} (per batch: {report['max_abs']})")
    return report


def set_metadata(path: str | Path, meta: dict) -> None:
    """Write `meta` into the ONNX file's metadata_props (strings as-is, the rest as JSON)."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    model.producer_name = "physioserve"
    model.doc_string = f"{meta.get('name', '')} {meta.get('version', '')}: encoder + sleep stage, age and arousal heads"
    onnx.save(model, str(path))


def read_metadata(path: str | Path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
