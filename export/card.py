"""MODEL_CARD.md from a bundle's metadata: what the model is, what it was trained on, how it scores."""

from __future__ import annotations

import json

from physioserve.modalities import STAGE_NAMES

from .ablation import ablation_table

# how the heads were trained (`physioserve probe` mode), for the card's summary line
_HEADS = {
    "linear": "with linear heads on the frozen encoder",
    "finetune": "then fine-tuned end to end with its heads",
    "scratch": "(architecture only: trained end to end from random init) with heads",
}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "-"
    return str(value)


def _metrics_table(evaluation: dict) -> list[str]:
    """{source, metrics: {task: {metric: value}}, aggregate?} as a Markdown table."""
    metrics = evaluation.get("metrics") or {}
    tasks = {k: v for k, v in metrics.items() if isinstance(v, dict)}
    lines = [f"Source: {evaluation.get('source', '-')}.", ""]
    if not tasks:
        return lines + ["```json", json.dumps(metrics, indent=1)[:6000], "```"]
    names = [m for m in ("balanced_accuracy", "kappa", "macro_f1", "auroc", "n") if any(m in v for v in tasks.values())]
    lines += ["| task | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
    for task, values in tasks.items():
        lines.append(f"| {task} | " + " | ".join(_fmt(values.get(m)) for m in names) + " |")
    if evaluation.get("aggregate") is not None:
        lines += ["", f"Aggregate score (mean over tasks of (balanced accuracy - chance) / chance): "
                      f"{_fmt(evaluation['aggregate'])}"]
    return lines


def context_section(context: dict) -> list[str]:
    """Night-context staging and calibration: window-level vs night-level metrics, temperatures and ECE."""
    cfg = context.get("config", {})
    lines = [
        "## Night context",
        "",
        f"`context.onnx` stages every epoch from the embeddings of the whole recording around it: a bidirectional "
        f"GRU ({cfg.get('layers')} layers, {cfg.get('hidden')} units per direction) over the sequence of epoch "
        "embeddings of the frozen encoder, trained on crops of "
        f"{cfg.get('crop_epochs')} epochs (`physioserve context`). `physioserve score`, `/score` and the demo use "
        "it; the window-level heads stay in `model.onnx` (`window_*` columns, `/predict`).",
        "",
    ]
    if cfg.get("night_norm"):
        lines += [
            "**Per-recording normalisation** (part of the graph): the GRU also reads each epoch embedding z-scored "
            "by the statistics of the sequence it is given, over its scorable epochs, and how many epochs those "
            "rest on, so a recording's overall shift of the embeddings (amplitude, derivation, filters, site) "
            "cancels out. Given a whole night (`score`, `/score`, the demo) the statistics are the night's; given "
            "a run of windows (`/predict consecutive=true`), the run's: send at least 30 minutes, a whole night "
            f"where you can. Trained on whole-night statistics, and on excerpts of one epoch up to the crop length with their own for "
            f"{cfg.get('excerpt_stats_p', 0):.0%} of the crops.",
            "",
        ]
    if cfg.get("window_residual"):
        lines += [
            "**A correction of the window-level answer**: the graph carries a copy of the window-level stage "
            "head and adds its logits to the GRU's, so the GRU learns what the context changes, and an epoch "
            "with no useful context (a single window, a very short run) keeps the window-level stage.",
            "",
        ]
    metrics = context.get("metrics") or {}
    if metrics:
        lines += ["| split / inputs | window kappa | night kappa | night accuracy | night balanced acc. | "
                  "stage changes / h (true) |", "| --- | --- | --- | --- | --- | --- |"]
        for key, m in metrics.items():
            night = m["night"]
            lines.append(f"| {key} | {_fmt(m['window']['kappa'])} | {_fmt(night['kappa'])} | {_fmt(night['accuracy'])} | "
                         f"{_fmt(night['balanced_accuracy'])} | {_fmt(night['stage_changes_per_h'])} "
                         f"({_fmt(night['true_stage_changes_per_h'])}) |")
        lines.append("")
    calibration = context.get("calibration") or {}
    if calibration:
        lines += ["## Calibration", "",
                  "Temperature scaling fitted on the validation split (Guo et al. 2017) and baked into the graphs' "
                  "output layers; expected calibration error over 15 confidence bins (`reliability.png`).", "",
                  "| output | temperature | ECE before | ECE after | NLL before | NLL after | n |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, c in calibration.items():
            lines.append(f"| {name} | {_fmt(c.get('temperature'))} | {_fmt(c.get('ece_before'))} | "
                         f"{_fmt(c.get('ece_after'))} | {_fmt(c.get('nll_before'))} | {_fmt(c.get('nll_after'))} | "
                         f"{_fmt(c.get('n'))} |")
    return lines


def model_card(meta: dict) -> str:
    """The model card text (its first paragraph is the summary /metadata returns)."""
    model = meta.get("model", {})
    prov = meta.get("provenance", {})
    export = meta.get("export", {})
    pre = meta.get("preprocessing", {})
    size = model.get("size", "?")
    data = prov.get("data") or {}
    lines = [
        f"# {meta['name']} {meta['version']}",
        "",
        f"Multimodal sleep model ({size} size, d_model {meta.get('d_model')}, "
        f"{_fmt(model.get('parameters'))} parameters): a MultiMAE-style encoder pretrained with input "
        f"modality drop (Fang et al., 2024) {_HEADS.get((prov.get('probe') or {}).get('mode'), _HEADS['linear'])} "
        "for sleep stage (W, N1, N2, N3, REM), age (< 55 / >= 55) and arousal, on 30 s windows of any "
        "subset of EEG, EOG, EMG and ECG.",
        "",
        *([prov["card_notes"], ""] if prov.get("card_notes") else []),
        "## Intended use",
        "",
        "Research on overnight physiological recordings: per-epoch sleep-stage probabilities, arousal "
        "probabilities and embeddings. Not a medical device; not validated for diagnosis. The numbers "
        "below say how it scored on its own test split, nothing about other populations or hardware.",
        "",
        "## Inputs and preprocessing",
        "",
        f"`signals` float32 [batch, 4, 3000] (modalities in order {', '.join(meta.get('modalities', []))}), "
        "`modality_mask` bool [batch, 4] (at least one modality per window). Raw windows in µV at any rate "
        ">= 100 Hz go through `physioserve.preprocessing.preprocess` (the bundle refuses to load if this "
        "config differs from the code's):",
        "",
        "```json",
        json.dumps(pre, indent=1, sort_keys=True),
        "```",
        "",
        "## Outputs",
        "",
        f"`embedding` [batch, {meta.get('d_model')}], `sleep_stage_logits` [batch, 5] ({', '.join(STAGE_NAMES)}), "
        "`age_logits` [batch, 2] (<55, >=55), `arousal_logits` [batch, 2] (no_arousal, arousal).",
        "",
        "## Training",
        "",
        f"- pretraining checkpoint: `{prov.get('checkpoint', {}).get('file', '-')}` "
        f"(step {_fmt(prov.get('checkpoint', {}).get('step'))}, epoch {_fmt(prov.get('checkpoint', {}).get('epoch'))}, "
        f"sha256 {str(prov.get('checkpoint', {}).get('sha256', '-'))[:12]})",
        f"- probe: `{prov.get('probe', {}).get('file', '-')}` (mode {prov.get('probe', {}).get('mode', '-')})",
        f"- data: {json.dumps(data, sort_keys=True) if data else '-'}",
        f"- source revision at training: {_fmt(prov.get('git_train'))}; at export: {_fmt(prov.get('git_export'))}",
        f"- torch {_fmt(prov.get('torch'))}",
        "",
        "## Evaluation",
        "",
    ]
    evaluation = prov.get("evaluation")
    lines += _metrics_table(evaluation) if evaluation else ["No evaluation JSON was given at export (`--evaluation`)."]
    ablation = prov.get("modality_ablation")
    if ablation:
        lines += ["", "## Missing modalities", "",
                  "The same heads, test split, with modalities removed at inference (what a recording that "
                  "lacks them gets; nothing retrained). Balanced accuracy unless named; score = aggregate as above.",
                  "", *ablation_table(ablation)]
    context = meta.get("context")
    if context:
        lines += ["", *context_section(context)]
    parity = export.get("parity", {})
    lines += [
        "",
        "## Export checks",
        "",
        f"- exporter: {export.get('exporter')} (opset {export.get('opset')})"
        + (f"; dynamo failed: {export['fallback_reason']}" if export.get("fallback_reason") else ""),
        "- `onnx.checker` full check: passed",
        "- ONNX Runtime vs torch, max-abs difference over all outputs (some modalities absent): "
        + ", ".join(f"batch {b}: {v:.2e}" for b, v in parity.get("max_abs", {}).items())
        + f" (tolerance {parity.get('tolerance')})",
    ]
    int8 = export.get("int8")
    if int8:
        lines.append(
            f"- int8 (`{int8.get('file')}`, {int8.get('method', 'quantised')}): sleep-stage agreement with fp32 "
            f"{int8.get('sleep_stage_agreement')} on {int8.get('windows')} {int8.get('source')}; "
            f"max |Δp| stage {int8.get('sleep_stage_max_abs_prob')}"
        )
    lines += [
        "",
        "## Limitations",
        "",
        "- Sleep onset latency and efficiency are computed from the recording start, which stands in for "
        "lights-off.",
        "- Arousal is rare (about 2.7 % of scored epochs in PhysioNet 2018): read its probability, not only its label.",
        "- Age is predicted per 30 s window; a night-level value is the mean of those.",
        "",
    ]
    return "\n".join(lines)
