"""`physioserve export`: pretraining checkpoint + probe heads -> a checked model bundle (ONNX).

    physioserve export --checkpoint runs/small/encoder.pt --probe runs/small-probe --out bundles/small
    physioserve export ... --int8 --data runs/cache      # + int8 graph, calibrated and gated on real windows
    physioserve export ... --register                    # + save into the BentoML model store

The encoder comes from the probe's `model.pt` (the weights the heads were trained on); the checkpoint
gives the pretraining provenance, and the two are checked to agree for a linear probe.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "export encoder + probe heads to an ONNX model bundle (parity-checked; optional int8 and model-store registration)"

PROBE_MODEL = "model.pt"
EVALUATION_NAMES = ("evaluation.json", "metrics.json", "results.json")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="RUN_DIR/encoder.pt or RUN_DIR/checkpoint.pt of `physioserve pretrain`")
    parser.add_argument("--probe", type=Path, required=True, help="PROBE_DIR of `physioserve probe` (holds model.pt), or that model.pt")
    parser.add_argument("--out", type=Path, required=True, help="bundle folder to write (model.onnx, bundle.json, MODEL_CARD.md)")
    parser.add_argument("--evaluation", type=Path, default=None,
                        help="JSON of `physioserve evaluate` for the model card (default: PROBE_DIR/evaluation.json if present)")
    parser.add_argument("--name", default="physioserve", help="model name in bundle.json (default physioserve)")
    parser.add_argument("--version", default=None, help="model version (default: UTC time YYYYMMDD.HHMMSS)")
    parser.add_argument("--int8", action="store_true", help="also write model.int8.onnx (static QDQ int8: the transformer's "
                        "MatMuls by a weight int8; tokenizers, attention's Q K^T and softmax x V, heads, LayerNorm, Softmax fp32) "
                        "and its drift report; refused (exit 1, fp32 bundle "
                        "still written) when its stage agreement with fp32 on held-out windows is below 99 %%")
    parser.add_argument("--data", type=Path, default=None, help="window cache: its train windows calibrate the int8 graph, its "
                        "test + val windows measure the drift (as recorded and EEG only); also the --ablation cache")
    parser.add_argument("--register", action="store_true", help="save the bundle into the BentoML model store as physioserve:<version>")
    parser.add_argument("--legacy", action="store_true", help="use the legacy TorchScript exporter instead of dynamo")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    parser.add_argument("--ablation", action="store_true",
                        help="score the exported graph on --data's test split with modalities missing (model card table)")
    parser.add_argument("--context", type=Path, default=None,
                        help="CONTEXT_DIR of `physioserve context`: adds the night-context graph (context.onnx) and "
                             "bakes the calibrated temperatures into the stage, arousal and night-level outputs")
    parser.add_argument("--card-notes", type=Path, default=None,
                        help="Markdown file put at the top of MODEL_CARD.md (what the model was trained on, caveats)")


def _load(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def _sha(path: Path) -> str:
    from physioserve.bundle import sha256

    return sha256(path)


def checkpoint_encoder_state(blob: dict) -> dict | None:
    """Encoder weights of an encoder.pt ('encoder') or a pretraining checkpoint.pt ('model', MultiMAE)."""
    if "encoder" in blob:
        return blob["encoder"]
    if "model" in blob:
        prefix = "encoder."
        return {k[len(prefix):]: v for k, v in blob["model"].items() if k.startswith(prefix)}
    return None


def checkpoint_decoder_state(blob: dict) -> dict | None:
    """The MultiMAE decoders of a pretraining checkpoint.pt ('model'); None for an encoder.pt."""
    if "model" not in blob:
        return None
    prefix = "decoders."
    return {k[len(prefix):]: v for k, v in blob["model"].items() if k.startswith(prefix)} or None


def adapt_weights(model, model_config: dict, decoders: dict | None, context) -> dict:
    """What `physioserve adapt` needs from a bundle: the torch weights behind both graphs, and the decoders."""
    state = {"model_config": model_config, "encoder": model.encoder.state_dict(), "heads": model.heads.state_dict(),
             "decoders": decoders, "context": None}
    if context is not None:
        context_model, info = context
        state["context"] = {"config": info["config"], "state": context_model.state_dict()}
    return state


def select_evaluation(probe: Path, evaluation: Path | None) -> dict | None:
    """This probe's metrics: its run in an `evaluate` JSON (test split), else probe.json's validation metrics."""
    probe_dir = probe if probe.is_dir() else probe.parent
    if evaluation is None and (probe_dir / "evaluation.json").exists():
        evaluation = probe_dir / "evaluation.json"
    if evaluation is not None:
        data = json.loads(Path(evaluation).read_text())
        runs = data.get("runs") if isinstance(data, dict) else None
        if runs is None:
            return {"source": f"{Path(evaluation).name}", "metrics": data}
        mine = [r for r in runs if Path(str(r.get("dir", ""))).name == probe_dir.name]
        if len(mine) == 1:
            run = mine[0]
            return {"source": f"{Path(evaluation).name} (physioserve evaluate, test split)", "metrics": run.get("metrics"),
                    "aggregate": run.get("aggregate"), "row": run.get("row")}
        print(f"export: {evaluation} has no single run for {probe_dir.name}; using probe.json's validation metrics",
              file=sys.stderr)
    summary_path = probe_dir / "probe.json"
    if summary_path.exists():
        summary = json.loads(summary_path.read_text())
        if summary.get("val_metrics"):
            return {"source": "probe.json (validation split; run `physioserve evaluate` for test metrics)",
                    "metrics": summary["val_metrics"]}
    return None


def load_for_export(checkpoint: Path, probe: Path, evaluation: Path | None = None):
    """-> (eval InferenceModel, model config dict, provenance dict)."""
    import torch

    from physioserve.preprocessing import check_config_matches
    from training.heads import load_inference_model
    from training.runtime import git_revision

    probe_file = probe / PROBE_MODEL if probe.is_dir() else probe
    for path, what in ((checkpoint, "--checkpoint"), (probe_file, "--probe")):
        if not path.exists():
            raise FileNotFoundError(f"{what}: {path} does not exist")
    ckpt = _load(checkpoint)
    ckpt_configs = ckpt.get("configs", {})
    check_config_matches(ckpt_configs.get("preprocessing", {}), where=f"checkpoint {checkpoint}")
    model, probe_configs = load_inference_model(probe_file)
    if "preprocessing" in probe_configs:
        check_config_matches(probe_configs["preprocessing"], where=f"probe {probe_file}")
    if ckpt_configs.get("model") and ckpt_configs["model"] != probe_configs.get("model"):
        raise ValueError(f"checkpoint {checkpoint} and probe {probe_file} have different model configs; "
                         "give the checkpoint the probe was trained on")
    ckpt_encoder = checkpoint_encoder_state(ckpt)
    same_encoder = None
    if ckpt_encoder:
        probe_encoder = model.encoder.state_dict()
        same_encoder = all(k in ckpt_encoder and torch.equal(v, ckpt_encoder[k]) for k, v in probe_encoder.items())
    mode = probe_configs.get("probe", {}).get("mode", "linear")
    if same_encoder is False and mode == "linear":
        raise ValueError(f"probe {probe_file} is a linear probe but its encoder differs from checkpoint {checkpoint}; "
                         "give the checkpoint the probe was trained on")
    evaluation_info = select_evaluation(probe, evaluation)
    provenance = {
        "checkpoint": {"file": checkpoint.name, "sha256": _sha(checkpoint), "kind": ckpt.get("kind"),
                       "step": ckpt.get("step"), "epoch": ckpt.get("epoch"), "configs": ckpt_configs},
        "probe": {"file": f"{probe.name}/{PROBE_MODEL}" if probe.is_dir() else probe.name, "sha256": _sha(probe_file),
                  "mode": mode, "encoder_matches_checkpoint": same_encoder, "configs": probe_configs},
        "data": ckpt_configs.get("data"),
        "git_train": ckpt.get("git"),
        "git_export": git_revision(),
        "torch": ckpt.get("torch"),
        "evaluation": evaluation_info,
    }
    return model, probe_configs["model"], provenance


CALIBRATED_HEADS = {"sleep_stage": "sleep_stage", "arousal": "arousal"}  # head -> temperature key


def load_context_dir(context_dir: Path, model, model_config: dict):
    """(model with calibrated heads, (calibrated context model, its bundle metadata), extra files) of a CONTEXT_DIR.

    The temperatures fitted by `physioserve context` divide the stage and arousal heads' weights and
    biases and the context model's output layer, so the graphs' logits are calibrated as they stand.
    """
    import copy

    import torch

    from training.context import load_context, scale_output

    path = context_dir / "context.pt"
    if not path.exists():
        raise FileNotFoundError(f"--context: {path} does not exist; give the folder of `physioserve context`")
    context_model, blob = load_context(path)
    if blob["probe_configs"].get("model") != model_config:
        raise ValueError(f"--context {context_dir} was trained on another encoder than --probe's; "
                         "run `physioserve context` on this probe")
    temperatures = blob["temperatures"]
    model = copy.deepcopy(model)
    with torch.no_grad():
        for head, key in CALIBRATED_HEADS.items():
            model.heads[head].weight /= temperatures[key]
            model.heads[head].bias /= temperatures[key]
    summary_path = context_dir / "context.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    calibration = {k: {m: v.get(m) for m in ("temperature", "n", "nll_before", "nll_after", "ece_before", "ece_after")}
                   for k, v in summary.get("calibration", {}).items()}
    info = {"config": blob["config"], "temperatures": temperatures, "calibration": calibration,
            "metrics": summary.get("metrics"), "selection": {k: v for k, v in summary.get("selection", {}).items()
                                                             if k != "curve"}}
    extra = {"reliability.png": context_dir / "reliability.png"} if (context_dir / "reliability.png").exists() else {}
    return model, (scale_output(context_model, temperatures["sleep_stage_night"]), info), extra


def run(args: argparse.Namespace) -> int:
    from physioserve.bundle import save_to_store

    from .build import export_bundle

    try:
        model, model_config, provenance = load_for_export(args.checkpoint, args.probe, args.evaluation)
    except (FileNotFoundError, ValueError, KeyError) as error:
        print(f"physioserve export: {error}", file=sys.stderr)
        return 1
    context, extra_files = None, {}
    if args.context is not None:
        try:
            model, context, extra_files = load_context_dir(args.context, model, model_config)
        except (FileNotFoundError, ValueError, KeyError) as error:
            print(f"physioserve export: {error}", file=sys.stderr)
            return 1
    if args.int8 and args.data:
        from .quantize import cache_int8_windows

        windows = cache_int8_windows(args.data)
    else:
        windows = None
    if args.ablation and not args.data:
        print("physioserve export: --ablation needs --data CACHE (the window cache whose test split it scores)", file=sys.stderr)
        return 1
    if args.card_notes is not None:
        if not args.card_notes.is_file():
            print(f"physioserve export: --card-notes {args.card_notes}: no such file", file=sys.stderr)
            return 1
        provenance["card_notes"] = args.card_notes.read_text().strip()
    try:
        bundle = export_bundle(
            model, args.out, model_config=model_config, provenance=provenance, name=args.name, version=args.version,
            exporter="legacy" if args.legacy else "auto", int8=args.int8, int8_windows=windows, overwrite=args.overwrite,
            ablation_cache=args.data if args.ablation else None, context=context, extra_files=extra_files,
            weights=adapt_weights(model, model_config, checkpoint_decoder_state(_load(args.checkpoint)), context),
        )
    except (FileExistsError, ValueError) as error:
        print(f"physioserve export: {error}", file=sys.stderr)
        return 1
    export = bundle.meta["export"]
    parity = ", ".join(f"b{b} {v:.1e}" for b, v in export["parity"]["max_abs"].items())
    print(f"bundle {bundle.path}: {bundle.name} {bundle.version}, exporter {export['exporter']}, parity max-abs {parity}")
    if export.get("fallback_reason"):
        print(f"  dynamo exporter failed, legacy used: {export['fallback_reason']}")
    if "int8" in export:
        print(f"  int8: stage agreement with fp32 {export['int8']['sleep_stage_agreement']} on {export['int8']['windows']} windows")
    refused = export.get("int8_refused")
    if refused:
        print(f"physioserve export: int8 refused, no model.int8.onnx written: its sleep stage agrees with fp32 on "
              f"{100 * refused['sleep_stage_agreement']:.1f} % of {refused['windows']} {refused['source']}, below "
              f"{100 * refused['min_agreement']:.0f} %; the fp32 bundle is written. Serve fp32, or pass --data CACHE "
              "when the figure came from synthetic windows", file=sys.stderr)
    if args.register:
        tag = save_to_store(bundle.path, name=args.name)
        print(f"  registered in the BentoML model store as {tag}")
    return 1 if refused else 0
