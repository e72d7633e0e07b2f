"""The night-context model: the model itself, its training, its ONNX graph in the bundle, and scoring with it."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from context_fixtures import context_pipeline
from test_export_fixtures import write_edf

from physioserve.bundle import read_bundle
from physioserve.epoch_features import FEATURE_MODALITY, FEATURE_NAMES, N_FEATURES, epoch_features
from physioserve.io import read_recording
from physioserve.metrics import cohen_kappa
from physioserve.modalities import STAGE_NAMES
from physioserve.runtime import InferenceSession
from physioserve.scoring import COLUMNS, WINDOW_STAGE_COLUMNS, score_recording
from training.config import ContextConfig
from training.context import (Night, NightContext, predict_nights, scale_output, train_context,
                              whole_night_statistics)


def markov_nights(n_nights: int, length: int, d: int, noise: float, seed: int, feature_noise: float | None = None) -> list[Night]:
    """Stages that persist (p = 0.93 per epoch, like scored nights) seen through noisy embeddings, and
    through noisy epoch features (`feature_noise`; None: the features are noise alone)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (5, d))
    feature_centres = rng.normal(0, 1, (5, N_FEATURES)) if feature_noise is not None else np.zeros((5, N_FEATURES))
    nights = []
    for k in range(n_nights):
        stage = np.zeros(length, np.int64)
        for i in range(1, length):
            stage[i] = stage[i - 1] if rng.random() < 0.93 else rng.integers(0, 5)
        emb = centres[stage] + noise * rng.normal(0, 1, (length, d))
        mask = np.ones((length, 4), bool)
        mask[rng.random(length) < 0.05] = False  # a few unscorable epochs
        feats = feature_centres[stage] + (feature_noise or 1.0) * rng.normal(0, 1, (length, N_FEATURES))
        nights.append(Night(f"n{k}", emb.astype(np.float32), mask, stage, feats.astype(np.float32)))
    return nights


@pytest.mark.parametrize("options", [{}, {"night_norm": True}, {"night_norm": True, "window_residual": True}])
def test_unscorable_epochs_do_not_matter_and_any_length_runs(options):
    model = NightContext(16, ContextConfig(hidden=8, **options)).eval()
    emb = torch.randn(2, 40, 16)
    feats = torch.randn(2, 40, N_FEATURES)
    mask = torch.rand(2, 40, 4) > 0.3
    mask[:, 5] = False
    mask[:, 6] = torch.tensor([True, False, True, True])  # no EOG in epoch 6
    garbage, garbage_feats = emb.clone(), feats.clone()
    garbage[:, 5] = 1e6
    garbage_feats[:, 5] = 1e6
    garbage_feats[:, 6, torch.from_numpy(FEATURE_MODALITY == 1)] = 1e6  # an absent modality's features
    with torch.no_grad():
        assert torch.allclose(model(emb, mask, feats), model(garbage, mask, garbage_feats))
        for length in (1, 3, 700):
            assert model(torch.randn(1, length, 16), torch.ones(1, length, 4, dtype=torch.bool),
                         torch.randn(1, length, N_FEATURES)).shape == (1, length, 5)


def test_context_beats_window_by_window_staging_on_persistent_stages(torch_one_thread):
    nights = markov_nights(15, 300, 8, noise=1.6, seed=0)  # one set of stage centres; epochs overlap a lot
    train, val = nights[:12], nights[12:]
    cfg = ContextConfig(hidden=16, layers=1, crop_epochs=60, batch_size=16, steps=300, eval_every=50)
    model, selection = train_context(train, val, cfg, progress=False)
    y = np.concatenate([n.stage[n.mask.any(1)] for n in val])
    night = np.concatenate([lg[n.mask.any(1)].argmax(1) for lg, n in zip(predict_nights(model, val), val)])
    centres = np.stack([np.concatenate([n.embedding for n in train])[np.concatenate([n.stage for n in train]) == k].mean(0)
                        for k in range(5)])
    emb = np.concatenate([n.embedding[n.mask.any(1)] for n in val])
    window = ((emb[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)  # the best a window-level rule does here
    assert selection["best_val_kappa"] == pytest.approx(cohen_kappa(y, night, 5), abs=1e-6)
    assert cohen_kappa(y, night, 5) > cohen_kappa(y, window, 5) + 0.15


def test_night_statistics_given_in_training_are_the_ones_the_graph_computes_from_a_whole_night():
    torch.manual_seed(0)
    model = NightContext(16, ContextConfig(hidden=8, night_norm=True)).eval()
    night = markov_nights(1, 90, 16, noise=1.0, seed=3)[0]
    emb, mask, feats = (torch.from_numpy(a[None]) for a in (night.embedding, night.mask, night.features))
    (stats,) = whole_night_statistics(model, [night])
    assert stats[2].item() == night.mask.any(1).sum()  # n = the scorable epochs
    with torch.no_grad():
        assert torch.allclose(model(emb, mask, feats), model(emb, mask, feats, stats), atol=1e-6)
        # an excerpt gets its own statistics: not the same logits as inside the night
        assert not torch.allclose(model(emb[:, :20], mask[:, :20], feats[:, :20]), model(emb, mask, feats)[:, :20], atol=1e-3)


def test_window_residual_graph_is_the_window_head_plus_a_correction():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 5)
    model = NightContext(16, ContextConfig(hidden=8, night_norm=True, window_residual=True)).eval()
    model.set_window_head(head)
    emb, mask, feats = torch.randn(1, 30, 16), torch.ones(1, 30, 4, dtype=torch.bool), torch.randn(1, 30, N_FEATURES)
    with torch.no_grad():
        correction = model(emb, mask, feats) - head(emb)
        model.out.weight.zero_()
        model.out.bias.zero_()
        assert torch.allclose(model(emb, mask, feats), head(emb), atol=1e-6)  # no correction: the window-level logits
    assert correction.abs().max() > 1e-3
    assert not any(p.requires_grad for p in model.window_head.parameters())  # frozen: only the correction trains
    calibrated = scale_output(model, 2.0)
    with torch.no_grad():
        assert torch.allclose(calibrated(emb, mask, feats), head(emb) / 2.0, atol=1e-6)  # the temperature scales both


def test_the_context_stages_from_the_epoch_features_where_the_embeddings_carry_nothing(torch_one_thread):
    nights = markov_nights(14, 300, 8, noise=1.0, seed=5, feature_noise=1.5)
    for k, night in enumerate(nights):  # embeddings: noise alone, different in every night
        night.embedding = np.random.default_rng(100 + k).normal(0, 1, night.embedding.shape).astype(np.float32)
    train, val = nights[:11], nights[11:]
    cfg = ContextConfig(hidden=16, layers=1, crop_epochs=60, batch_size=16, steps=300, eval_every=50, night_norm=True)
    _, selection = train_context(train, val, cfg, progress=False)
    assert selection["best_val_kappa"] > 0.8, selection["best_val_kappa"]


def test_epoch_features_are_log_band_powers_of_each_recorded_modality():
    t = np.arange(3000) / 100.0
    signals = np.zeros((2, 4, 3000), np.float32)
    signals[:, 0] = 2.0 * np.sin(2 * np.pi * 11.0 * t)  # 11 Hz, 2 units peak: power 2 units^2
    signals[:, 1] = np.random.default_rng(0).normal(0, 1, 3000)  # white noise, variance 1 up to 50 Hz
    mask = np.array([[True, True, False, False], [True, False, False, False]])
    feats = epoch_features(signals, mask)
    names = dict(zip(FEATURE_NAMES, feats[0]))
    assert feats.shape == (2, N_FEATURES) and feats.dtype == np.float32
    assert names["eeg_10-12Hz"] > names["eeg_4-6Hz"] + 4 and names["eeg_10-12Hz"] > names["eeg_8-10Hz"]
    # 2 units^2 spread over the 8 bins (2 Hz) of 10-12 Hz: about 1 unit^2/Hz, log10 -> ~0
    assert -0.3 < names["eeg_10-12Hz"] < 0.1
    # white noise of variance 1 over 0-50 Hz: 0.02 units^2/Hz in every band (log10 -1.7)
    assert all(-1.9 < names[f"eog_{b}"] < -1.5 for b in ("1-2Hz", "8-10Hz", "20-30Hz"))
    assert not feats[1, FEATURE_MODALITY == 1].any() and not feats[:, FEATURE_MODALITY >= 2].any()  # absent: zeros
    with pytest.raises(ValueError, match="epoch_features"):
        epoch_features(signals[:, :, :100], mask)


def test_per_recording_normalisation_carries_staging_to_nights_with_a_site_shift(torch_one_thread):
    """Every night at its own site: its embeddings shifted and scaled per dimension (amplitude,
    derivation, filters move a real encoder's output so). The per-night statistics cancel that."""
    rng = np.random.default_rng(7)
    nights = markov_nights(16, 300, 8, noise=0.7, seed=1)
    for night in nights:
        night.embedding = (night.embedding * rng.uniform(0.6, 1.6, 8) + rng.normal(0, 1.5, 8)).astype(np.float32)
    train, val, test = nights[:10], nights[10:13], nights[13:]
    kappas = {}
    for night_norm in (False, True):
        cfg = ContextConfig(hidden=16, layers=1, crop_epochs=60, batch_size=16, steps=300, eval_every=50,
                            night_norm=night_norm)
        model, _ = train_context(train, val, cfg, progress=False)
        y = np.concatenate([n.stage[n.mask.any(1)] for n in test])
        p = np.concatenate([lg[n.mask.any(1)].argmax(1) for lg, n in zip(predict_nights(model, test), test)])
        kappas[night_norm] = cohen_kappa(y, p, 5)
    assert kappas[True] > 0.6 and kappas[True] > kappas[False] + 0.25, kappas  # seen: 0.69 vs 0.32


@pytest.fixture(scope="module")
def context_bundle(tmp_path_factory):
    return context_pipeline(tmp_path_factory.getbasetemp())


def test_context_command_writes_calibration_and_metrics(context_bundle):
    summary = json.loads((context_bundle["ctx"] / "context.json").read_text())
    assert set(summary["temperatures"]) == {"sleep_stage", "arousal", "sleep_stage_night"}
    for res in summary["calibration"].values():
        assert res["nll_after"] <= res["nll_before"] + 1e-9
    assert {"val/all", "val/eeg", "test/all", "test/eeg"} <= set(summary["metrics"])
    assert (context_bundle["ctx"] / "reliability.png").stat().st_size > 1000


def test_bundle_carries_a_parity_checked_context_graph_with_the_temperatures_baked_in(context_bundle):
    from training.context import load_context
    from training.heads import load_inference_model

    bundle = read_bundle(context_bundle["bundle"], verify_hash=True)
    meta = bundle.meta["context"]
    assert bundle.context_path.name == "context.onnx" and meta["parity"]["passed"]
    assert (context_bundle["bundle"] / "reliability.png").exists()
    temps = meta["temperatures"]
    # the window-level graph's stage logits are the probe's divided by T
    probe, _ = load_inference_model(context_bundle["ft"] / "model.pt")
    session = ort.InferenceSession(str(bundle.model_path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    signals = rng.normal(0, 1, (3, 4, 3000)).astype(np.float32)
    mask = np.ones((3, 4), bool)
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"signals": signals, "modality_mask": mask})))
    with torch.no_grad():
        emb, stage, _, arousal = probe(torch.from_numpy(signals), torch.from_numpy(mask))
    assert np.allclose(got["sleep_stage_logits"], stage.numpy() / temps["sleep_stage"], atol=1e-4)
    assert np.allclose(got["arousal_logits"], arousal.numpy() / temps["arousal"], atol=1e-4)
    # the context graph's logits are the context model's divided by T_night
    context, _ = load_context(context_bundle["ctx"] / "context.pt")
    runtime = InferenceSession(bundle)
    night_mask = np.ones((6, 4), bool)
    night_mask[2] = False
    night_emb = np.asarray(rng.normal(0, 1, (6, bundle.d_model)), np.float32)
    night_feats = np.asarray(rng.normal(-1, 1, (6, N_FEATURES)), np.float32)
    with torch.no_grad():
        expected = context(*(torch.from_numpy(a[None]) for a in (night_emb, night_mask, night_feats)))[0].numpy()
    got = runtime.night_stage_logits(night_emb, night_mask, night_feats)
    assert np.allclose(got, expected / temps["sleep_stage_night"], atol=1e-4)


def test_scoring_with_a_context_bundle_gives_night_and_window_stages(context_bundle, tmp_path):
    session = InferenceSession(read_bundle(context_bundle["bundle"]))
    assert session.has_context and session.describe()["night_context"]
    recording = read_recording(write_edf(tmp_path / "night.edf", fs=200, minutes=5))
    score = score_recording(recording, session)
    assert score.columns == [*COLUMNS, *WINDOW_STAGE_COLUMNS, "true_stage"]
    assert score.summary["staging"] == "night context" and len(score.rows) == 10
    for row in score.rows:
        assert row["stage"] in STAGE_NAMES and row["window_stage"] in STAGE_NAMES
        assert abs(sum(row[f"p_{s}"] for s in STAGE_NAMES) - 1) < 1e-5
        assert abs(sum(row[f"window_p_{s}"] for s in STAGE_NAMES) - 1) < 1e-5


@pytest.mark.server
def test_service_stages_a_run_of_windows_in_context_and_scores_against_an_uploaded_hypnogram(context_bundle, tmp_path):
    import os

    import requests
    from test_service import REPO, start_server, stop_server

    edf = write_edf(tmp_path / "night.edf", fs=200, minutes=5)
    hypnogram = tmp_path / "expert.csv"
    hypnogram.write_text("stage\n" + "\n".join(["W", "N1", "N2", "N3", "R"] * 2) + "\n")
    rng = np.random.default_rng(0)
    windows = [{"fs": 100, "eeg": rng.normal(0, 30, 3000).tolist()} for _ in range(4)]
    env = {**os.environ, "PHYSIOSERVE_BUNDLE": str(context_bundle["bundle"])}
    process, url = start_server([], env, REPO, tmp_path / "serve.log")
    try:
        plain = requests.post(f"{url}/predict", json={"windows": windows}, timeout=60).json()["predictions"]
        run = requests.post(f"{url}/predict", json={"windows": windows, "consecutive": True}, timeout=60).json()["predictions"]
        assert all(p["sleep_stage_in_context"] is None for p in plain)
        assert [p["sleep_stage"] for p in run] == [p["sleep_stage"] for p in plain]  # window-level unchanged
        assert all(abs(sum(p["sleep_stage_in_context"]["probabilities"].values()) - 1) < 1e-5 for p in run)
        files = {"file": ("night.edf", edf.read_bytes()), "hypnogram": ("expert.csv", hypnogram.read_bytes())}
        scored = requests.post(f"{url}/score", files=files, timeout=120)
        assert scored.status_code == 200, scored.text
        agreement = scored.json()["agreement"]
        assert agreement["epochs"] == 10 and agreement["hypnogram"]["format"] == "csv"
        expected = sum(row["stage"] == row["true_stage"] for row in scored.json()["epochs"]) / 10
        assert agreement["accuracy"] == pytest.approx(expected)  # the expert file holds the EDF's own stages
        bad = requests.post(f"{url}/score", files={"file": ("night.edf", edf.read_bytes()), "hypnogram": ("x.txt", b"3\n4\n")},
                            timeout=120)
        assert bad.status_code == 400 and bad.json()["field"] == "hypnogram"
        assert requests.post(f"{url}/score", files={"file": ("night.edf", edf.read_bytes())}, timeout=120).json()["agreement"] is None
    finally:
        stop_server(process)
