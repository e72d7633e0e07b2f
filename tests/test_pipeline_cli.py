"""End to end from the command line: synth -> prepare -> pretrain -> probe -> evaluate (tiny sizes)."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("torch")


def physioserve(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "physioserve.cli", *args], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"physioserve {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.slow
def test_cli_pipeline_on_a_tiny_synthetic_corpus(tmp_path):
    corpus, cache, run, probe, report = (tmp_path / d for d in ("corpus", "cache", "run", "probe", "eval"))
    physioserve("synth", str(corpus), "--records", "6", "--hours", "0.3", "--seed", "3")
    physioserve("prepare", str(corpus), str(cache), "--workers", "2")
    split = json.loads((cache / "split.json").read_text())
    assert split["val"] and split["test"] and not set(split["test"]) & set(split["pretrain"])
    physioserve("pretrain", "--data", str(cache), "--out", str(run), "--size", "tiny", "--epochs", "2",
                "--batch-size", "16", "--no-progress")
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    assert losses and all(loss == loss for loss in losses)  # logged and finite (not NaN)
    physioserve("probe", "--checkpoint", str(run / "encoder.pt"), "--data", str(cache), "--out", str(probe),
                "--epochs", "3")
    out = physioserve("evaluate", str(probe), "--out", str(report))
    assert "Sleep stage" in out and "Score" in out
    evaluation = json.loads((report / "evaluation.json").read_text())
    assert evaluation  # one row per configuration, with per-task metrics
