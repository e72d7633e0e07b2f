"""The tiny pipeline with a night-context model (this module holds no tests).

`context_pipeline` extends `test_export_fixtures.tiny_pipeline`: an augmented fine-tune of its
encoder, `physioserve context` and `export --context` from the pretraining checkpoint (so the bundle
ships the MultiMAE decoders for `physioserve adapt`), built once per test session.
"""

from __future__ import annotations

from pathlib import Path

from test_export_fixtures import tiny_pipeline

REPO = Path(__file__).resolve().parents[1]


def context_pipeline(base: Path) -> dict[str, Path]:
    """{ft, ctx, bundle, cache, run}: fine-tuned probe, context folder and bundle, under `base`."""
    from physioserve.cli import main

    paths = tiny_pipeline(base)
    root = Path(base) / "context-pipeline"
    out = {"ft": root / "ft", "ctx": root / "ctx", "bundle": root / "bundle", "cache": paths["cache"], "run": paths["run"]}
    if (out["bundle"] / "bundle.json").exists():
        return out
    commands = [
        ["probe", "--checkpoint", paths["run"] / "encoder.pt", "--finetune", "--augment", "--augment-subsets", "0.5",
         "--select", "sleep_stage", "--data", paths["cache"], "--out", out["ft"], "--epochs", "1", "--batch-size", "8",
         "--no-progress"],
        ["context", "--probe", out["ft"], "--data", paths["cache"], "--out", out["ctx"], "--steps", "40", "--passes", "1",
         "--config", REPO / "configs" / "context-default.json", "--no-progress"],
        ["export", "--checkpoint", paths["run"] / "checkpoint.pt", "--probe", out["ft"], "--context", out["ctx"],
         "--out", out["bundle"], "--version", "0.0.2-test"],
    ]
    for command in commands:
        assert main([str(c) for c in command]) == 0, f"physioserve {command[0]} failed"
    return out
