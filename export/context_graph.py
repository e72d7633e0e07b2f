"""The night-context model -> its own ONNX graph (`context.onnx`), with the checks every export runs.

Inputs `embedding` float32 [batch, epochs, D] (the main graph's `embedding` output of consecutive 30 s
epochs), `modality_mask` bool [batch, epochs, 4] and `epoch_features` float32 [batch, epochs, F]
(`physioserve.epoch_features` of the same preprocessed windows); output `sleep_stage_logits` [batch, epochs, 5].
Both the batch and the epoch count are dynamic: a 30-minute excerpt and a 10-hour night run the same
graph. The legacy TorchScript exporter writes it (ONNX `GRU` op); the dynamo exporter fixes the
sequence length of the output shape for recurrent modules in torch 2.13, so it is not used here.
Parity with torch is checked at several batch sizes and lengths, with unscorable epochs in the input.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from physioserve.bundle import CONTEXT_INPUTS, CONTEXT_OUTPUTS
from physioserve.epoch_features import N_FEATURES
from physioserve.modalities import MODALITIES

from .graph import OPSET, PARITY_TOLERANCE, ort_session

PARITY_SHAPES = ((1, 1), (1, 7), (2, 120), (1, 1100))  # (batch, epochs)


def example_sequence(batch: int, epochs: int, d_model: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random embeddings [batch, epochs, D], masks [batch, epochs, 4] with some epochs unscorable, and
    epoch features [batch, epochs, F] (log10 band powers: around -2..2)."""
    rng = np.random.default_rng(seed)
    embedding = rng.normal(0.0, 1.0, (batch, epochs, d_model)).astype(np.float32)
    mask = rng.random((batch, epochs, len(MODALITIES))) < 0.8
    mask[:, ::9] = False  # unscorable epochs: their embedding values must not matter
    embedding[~mask.any(-1)] = 1e3
    features = rng.normal(0.0, 1.0, (batch, epochs, N_FEATURES)).astype(np.float32)
    return embedding, mask, features


def export_context(model: torch.nn.Module, path: str | Path, d_model: int, opset: int = OPSET) -> dict:
    """Write `context.onnx`; returns {"exporter", "opset"}."""
    inputs = tuple(torch.from_numpy(a) for a in example_sequence(2, 30, d_model))
    names = (*CONTEXT_INPUTS, *CONTEXT_OUTPUTS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval().cpu(), inputs, str(path), dynamo=False, input_names=list(CONTEXT_INPUTS),
            output_names=list(CONTEXT_OUTPUTS), dynamic_axes={n: {0: "batch", 1: "epochs"} for n in names},
            opset_version=opset,
        )
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    inputs = tuple(i.name for i in graph.graph.input)
    outputs = tuple(o.name for o in graph.graph.output)
    if inputs != CONTEXT_INPUTS or outputs != CONTEXT_OUTPUTS:
        raise ValueError(f"{path}: inputs {inputs} / outputs {outputs}, expected {CONTEXT_INPUTS} / {CONTEXT_OUTPUTS}")
    return {"exporter": "legacy", "opset": opset}


def check_context_parity(model: torch.nn.Module, path: str | Path, d_model: int,
                         tolerance: float = PARITY_TOLERANCE) -> dict:
    """Max-abs difference ONNX Runtime vs torch per (batch, epochs); raises when above `tolerance`."""
    session = ort_session(path)
    report: dict = {"tolerance": tolerance, "max_abs": {}}
    for batch, epochs in PARITY_SHAPES:
        arrays = example_sequence(batch, epochs, d_model, seed=batch * 1000 + epochs)
        with torch.no_grad():
            expected = model.eval()(*(torch.from_numpy(a) for a in arrays)).numpy()
        got = session.run(list(CONTEXT_OUTPUTS), dict(zip(CONTEXT_INPUTS, arrays)))[0]
        report["max_abs"][f"{batch}x{epochs}"] = float(np.max(np.abs(got - expected)))
    worst = max(report["max_abs"].values())
    report["passed"] = bool(worst <= tolerance)
    if not report["passed"]:
        raise ValueError(f"{path}: context graph ONNX vs torch max-abs {worst:.3g} > {tolerance:g} ({report['max_abs']})")
    return report
