"""`physioserve adapt`: a site's unlabelled recordings -> a new bundle that serves like any other."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from context_fixtures import context_pipeline
from test_export_fixtures import write_edf

from physioserve.bundle import read_bundle
from physioserve.io import read_recording
from physioserve.runtime import InferenceSession
from physioserve.scoring import score_recording
from training.adapt import align_heads, continue_mae, load_weights, site_windows


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("site")
    for k in range(2):  # a "site" whose EEG is louder and noisier than anything the tiny model saw
        write_edf(folder / f"night{k}.edf", fs=256, minutes=6, seed=10 + k)
    return folder


@pytest.fixture(scope="module")
def adapted(tmp_path_factory, site):
    from physioserve.cli import main

    paths = context_pipeline(tmp_path_factory.getbasetemp())
    out = tmp_path_factory.mktemp("adapted") / "bundle"
    assert main(["adapt", str(paths["bundle"]), str(site), "--out", str(out), "--steps", "3", "--batch-size", "4",
                 "--no-progress"]) == 0
    return {"source": paths["bundle"], "out": out}


def test_the_bundle_ships_its_decoders_and_the_adapted_one_serves(adapted, site):
    source, out = read_bundle(adapted["source"]), read_bundle(adapted["out"], verify_hash=True)
    assert source.meta["weights"]["decoders"] and out.meta["weights"]["decoders"]
    assert out.version.startswith(source.version + "+adapted.") and out.meta["context"]["parity"]["passed"]
    info = out.meta["provenance"]["adaptation"]
    assert [r["record"] for r in info["recordings"]] == ["night0", "night1"]
    assert info["windows"] == 24 and info["mae_steps"] == 3 and info["decoders"] == "shipped"
    assert "Adapted without labels" in out.card
    score = score_recording(read_recording(site / "night0.edf"), InferenceSession(out))
    assert score.summary["staging"] == "night context" and len(score.rows) == 12
    folder = adapted["out"]
    assert not (folder.parent / f".{folder.name}.adapt").exists()  # finished: the work folder is gone


def test_the_context_graph_standardises_with_the_site_statistics(adapted):
    weights = {k: torch.load(read_bundle(adapted[k]).path / "weights.pt", weights_only=True) for k in ("source", "out")}
    before, after = (weights[k]["context"]["state"] for k in ("source", "out"))
    assert not torch.allclose(before["mean"], after["mean"])
    # the window heads read site embeddings as the training statistics would: folded affine map
    assert not torch.allclose(weights["source"]["heads"]["sleep_stage.weight"], weights["out"]["heads"]["sleep_stage.weight"])


def test_aligned_heads_map_site_statistics_onto_the_training_ones():
    heads = torch.nn.ModuleDict({"a": torch.nn.Linear(3, 2)})
    x = torch.randn(500, 3) * torch.tensor([2.0, 0.5, 1.0]) + torch.tensor([1.0, -1.0, 0.0])  # site embeddings
    train_mean, train_std = torch.zeros(3), torch.ones(3)
    site_mean, site_std = x.mean(0), x.std(0)
    expected = heads["a"]((x - site_mean) / site_std * train_std + train_mean)
    align_heads(heads, train_mean, train_std, site_mean, site_std)
    assert torch.allclose(heads["a"](x), expected, atol=1e-5)


def test_mae_steps_resume_exactly_from_the_checkpoint(adapted, site, tmp_path):
    weights = load_weights(read_bundle(adapted["source"]))
    signals, mask, _ = site_windows([site], tmp_path / "work", None, progress=False)
    args = argparse.Namespace(steps=4, batch_size=4, lr=1e-3, train="tokenizers", seed=0, resume=False, no_progress=True)
    straight, _, losses = continue_mae(weights, signals, mask, args, tmp_path / "a")
    args.steps = 2
    continue_mae(weights, signals, mask, args, tmp_path / "b")
    args.steps, args.resume = 4, True
    resumed, _, resumed_losses = continue_mae(weights, signals, mask, args, tmp_path / "b")
    assert np.allclose(losses[2:], resumed_losses, atol=1e-6)
    assert all(torch.allclose(straight[k], resumed[k], atol=1e-6) for k in straight)
    frozen = [k for k in straight if not k.startswith("tokenizers.")]
    assert all(torch.equal(straight[k], weights["encoder"][k]) for k in frozen)  # --train tokenizers
