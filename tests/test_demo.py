"""The bundled default model: `physioserve demo` end to end, and `bentoml serve` with nothing registered."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_service import REPO, start_server, stop_server, window

from physioserve.bundle import PACKAGED_BUNDLE, read_bundle


def clean_env(tmp_path) -> dict:
    """No bundle given, an empty BentoML model store: only the packaged default can be found."""
    env = {k: v for k, v in os.environ.items() if k != "PHYSIOSERVE_BUNDLE"}
    env.update({"BENTOML_HOME": str(tmp_path / "empty-bentoml-home"), "BENTOML_DO_NOT_TRACK": "true"})
    return env


def test_packaged_default_bundle_loads_and_says_what_it_was_trained_on():
    bundle = read_bundle(PACKAGED_BUNDLE, verify_hash=True)
    assert bundle.meta["model"]["size"] == "small"
    card = bundle.card
    assert "Trained on synthetic signals only" in card and "## Missing modalities" in card
    rows = {r["inputs"] for r in bundle.meta["provenance"]["modality_ablation"]}
    assert {"all four", "eeg", "no ecg", "eeg+eog"} <= rows
    assert {"context.onnx", "weights.pt"} <= {p.name for p in PACKAGED_BUNDLE.iterdir()}  # night context; adapt
    # a few MB: graph + night-context graph (~5 MB) and the torch weights `physioserve adapt` starts from (~6 MB)
    assert sum(p.stat().st_size for p in PACKAGED_BUNDLE.iterdir()) < 16 * 2**20


@pytest.mark.slow
def test_demo_scores_a_held_out_night_with_the_packaged_bundle(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "physioserve.cli", "demo", "--out", str(out), "--hours", "0.5",
                           "--seed", "3"], env=clean_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(packaged)" in done.stdout and "never used in training" in done.stdout
    assert "Cohen's kappa" in done.stdout and "recall" in done.stdout
    report = json.loads((out / "demo.json").read_text())
    assert report["hypnogram"] in done.stdout and report["agreement"]["epochs"] > 0
    assert 0.0 <= report["agreement"]["accuracy"] <= 1.0
    record = report["record"]
    assert (out / f"{record}.hypnogram.png").read_bytes()[:4] == b"\x89PNG"
    rows = (out / f"{record}.epochs.csv").read_text().splitlines()
    assert rows[0].endswith("true_stage") and len(rows) - 1 == report["summary"]["epochs"]


@pytest.mark.slow
@pytest.mark.server
def test_serve_with_no_model_registered_serves_the_packaged_default(tmp_path):
    import requests

    process, url = start_server([], clean_env(tmp_path), REPO, tmp_path / "serve.log")
    try:
        meta = requests.post(f"{url}/metadata", json={}).json()
        bundle = read_bundle(PACKAGED_BUNDLE)
        assert meta["runtime"]["source"] == "packaged" and meta["version"] == bundle.version
        assert meta["card_summary"] == bundle.card_summary()
        answer = requests.post(f"{url}/predict", json={"windows": [window(256, eeg=1, eog=1)]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"][0]["modalities"] == ["eeg", "eog"]
    finally:
        stop_server(process)
