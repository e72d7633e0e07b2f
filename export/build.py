"""Write a bundle folder from an eval-mode `InferenceModel`: graph, checks, metadata, card, int8.

Order: export (dynamo, legacy fallback) -> `onnx.checker` full check -> parity with torch at
batch 1, 2, 7, 64 (some modalities absent) -> metadata into the ONNX file and `bundle.json` ->
optional static int8 copy + drift report (gated) -> MODEL_CARD.md. The folder is written under a temporary name
and renamed at the end, so a failed check never leaves a half bundle behind.
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

import torch

from physioserve.bundle import (
    CARD_FILE,
    CONTEXT_FILE,
    MODEL_FILE,
    WEIGHTS_FILE,
    Bundle,
    interface_metadata,
    read_bundle,
    sha256,
    write_bundle_meta,
)
from physioserve.preprocessing import DEFAULT_CONFIG

from .card import model_card
from .context_graph import check_context_parity, export_context
from .graph import PARITY_BATCHES, check_graph, check_parity, export_onnx, set_metadata
from .quantize import Int8Windows

INT8_FILE = "model.int8.onnx"
INT8_MIN_AGREEMENT = 0.99  # issue 13: an int8 graph must give fp32's sleep stage on >= 99 % of held-out windows


def default_version() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d.%H%M%S")


def export_bundle(
    model: torch.nn.Module,
    out_dir: str | Path,
    *,
    model_config: dict,
    provenance: dict,
    name: str = "physioserve",
    version: str | None = None,
    exporter: str = "auto",
    int8: bool = False,
    int8_windows: Int8Windows | None = None,
    int8_min_agreement: float = INT8_MIN_AGREEMENT,
    parity_batches: tuple[int, ...] = PARITY_BATCHES,
    overwrite: bool = False,
    ablation_cache: str | Path | None = None,
    context: tuple[torch.nn.Module, dict] | None = None,
    extra_files: dict[str, Path] | None = None,
    weights: dict | None = None,
) -> Bundle:
    """Export `model` to a checked bundle folder at `out_dir`; returns the loaded Bundle.

    `context`: (night-context model, its metadata for bundle.json) -> `context.onnx`, parity-checked.
    `extra_files`: {name in the bundle: source file} copied as they are (e.g. the reliability diagram).
    `weights`: torch state dicts written to `weights.pt` for `physioserve adapt` (encoder, heads,
    decoders or None, context).
    `int8`: also a static QDQ int8 copy, calibrated on `int8_windows.calibration` (default: synthetic
    windows), written only when its sleep stage agrees with fp32 on `int8_min_agreement` of the
    held-out windows (with their masks and with EEG alone); else the report goes to
    `export.int8_refused` and no int8 file is written.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} exists and is not empty; choose a new --out or pass --overwrite")
    tmp = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        model = model.eval().cpu()
        onnx_path = tmp / MODEL_FILE
        export_info = export_onnx(model, onnx_path, exporter=exporter)
        check_graph(onnx_path)
        export_info["parity"] = check_parity(model, onnx_path, batches=parity_batches)
        export_info["torch"] = torch.__version__
        export_info["onnx"] = __import__("onnx").__version__
        export_info["onnxruntime"] = __import__("onnxruntime").__version__
        d_model = int(model_config["d_model"])
        meta = {
            "name": name,
            "version": version or default_version(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "d_model": d_model,
            "model": {
                "size": model_config.get("name"),
                "parameters": int(sum(p.numel() for p in model.parameters())),
                "config": model_config,
            },
            **interface_metadata(),
            "preprocessing": DEFAULT_CONFIG.to_dict(),
            "export": export_info,
            "provenance": provenance,
        }
        files = {}
        if context is not None:
            context_model, context_info = context
            context_path = tmp / CONTEXT_FILE
            context_export = export_context(context_model, context_path, d_model)
            context_export["parity"] = check_context_parity(context_model, context_path, d_model)
            meta["context"] = {"file": CONTEXT_FILE, **context_export, **context_info}
            set_metadata(context_path, meta)
            files[CONTEXT_FILE] = sha256(context_path)
        set_metadata(onnx_path, meta)
        files[MODEL_FILE] = sha256(onnx_path)
        if int8:
            from .quantize import int8_drift, quantize_static_int8, synthetic_int8_windows

            int8_path = tmp / INT8_FILE
            windows = int8_windows if int8_windows is not None else synthetic_int8_windows()
            quant = quantize_static_int8(onnx_path, int8_path, windows.calibration, windows.calibration_mask,
                                         calibration_source=windows.calibration_source)
            drift = int8_drift(onnx_path, int8_path, signals=windows.heldout, mask=windows.heldout_mask,
                               source=windows.heldout_source)
            report = {"file": INT8_FILE, **quant, "min_agreement": int8_min_agreement, **drift}
            if drift["sleep_stage_agreement"] < int8_min_agreement:  # the gate: no int8 graph that disagrees
                int8_path.unlink()
                report.pop("file")
                meta["export"]["int8_refused"] = report
            else:
                meta["export"]["int8"] = report
                set_metadata(int8_path, meta)
                files[INT8_FILE] = sha256(int8_path)
            set_metadata(onnx_path, meta)  # the fp32 file carries the int8 report too
            files[MODEL_FILE] = sha256(onnx_path)
        if ablation_cache is not None:  # card table only: the graph's metadata stays as exported
            from .ablation import modality_ablation

            meta["provenance"]["modality_ablation"] = modality_ablation(onnx_path, ablation_cache)
        for name, source in (extra_files or {}).items():
            shutil.copyfile(source, tmp / name)
        if weights is not None:
            torch.save(weights, tmp / WEIGHTS_FILE)
            files[WEIGHTS_FILE] = sha256(tmp / WEIGHTS_FILE)
            meta["weights"] = {"file": WEIGHTS_FILE, "decoders": weights.get("decoders") is not None,
                               "note": "torch weights for `physioserve adapt`; serving never reads them"}
        meta["files"] = files
        write_bundle_meta(tmp, meta)
        (tmp / CARD_FILE).write_text(model_card(meta))
        read_bundle(tmp, verify_hash=True)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return read_bundle(out_dir)
