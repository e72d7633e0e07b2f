"""The §4.4 analyses: the opt-in attention path, rollout, block summaries, relative source variance,
reconstructions, and `physioserve analyze` end to end (tiny sizes, CPU)."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from physioserve.cli import main  # noqa: E402
from training.analysis import (  # noqa: E402
    attention_maps,
    block_summary,
    reconstruction_errors,
    relative_source_variance,
    rsv_summary,
)
from training.config import ModelConfig  # noqa: E402
from training.model import MultiMAE, MultiModalEncoder  # noqa: E402
from training.tinycache import make_tiny_cache  # noqa: E402

TINY = ModelConfig.named("tiny")


@pytest.fixture(autouse=True)
def one_thread(torch_one_thread):
    """Every test here runs with one torch thread (conftest.torch_one_thread)."""


def _inputs(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, 3000, generator=g), torch.ones(n, 4, dtype=torch.bool)


def test_attention_path_computes_the_exported_function_and_returns_row_stochastic_weights():
    torch.manual_seed(0)
    encoder = MultiModalEncoder(TINY).eval()
    x, mask = _inputs()
    mask[0, 2] = False
    out = encoder.forward_analysis(x, mask)
    final = encoder.transformer.norm(out["hidden"][-1])
    torch.testing.assert_close(final, encoder.forward_features(x, mask), atol=1e-5, rtol=1e-5)
    weights = out["attention"][0]  # [B, H, N, N]
    assert weights.shape == (6, 2, 120, 120)
    torch.testing.assert_close(weights.sum(-1), torch.ones(6, 2, 120))
    assert weights[0, :, :, 60:90].abs().max() == 0  # an absent modality is never attended to


def test_rollout_is_the_product_of_half_identity_layers():
    torch.manual_seed(0)
    encoder = MultiModalEncoder(TINY).eval()
    x, mask = _inputs(2)
    raw, rollout = attention_maps(encoder, x, mask)
    assert raw.shape == (2, 120, 120) and rollout.shape == (120, 120)
    heads = [a.mean(1) for a in encoder.forward_analysis(x, mask)["attention"]]  # L x [B, N, N]
    eye = torch.eye(120)
    per_window = (0.5 * heads[1] + 0.5 * eye) @ (0.5 * heads[0] + 0.5 * eye)  # [B, N, N]
    np.testing.assert_allclose(rollout, per_window.mean(0).numpy(), atol=1e-5)
    np.testing.assert_allclose(rollout.sum(1), 1.0, atol=1e-5)  # still row-stochastic


def test_block_summary_of_known_matrices():
    n = 120
    identity = np.eye(n)
    s = block_summary(identity, 4)
    assert s["cross_modal"] == 0.0 and np.allclose(np.diag(s["block_mass"]), 1.0)
    uniform = np.full((n, n), 1.0 / n)
    s = block_summary(uniform, 4)
    assert s["cross_modal"] == pytest.approx(0.75) and s["temporal_alignment"] == pytest.approx(1 / 30)
    aligned = np.zeros((n, n))  # every token attends to the same second of the next modality
    for i in range(n):
        aligned[i, (i + 30) % n] = 1.0
    s = block_summary(aligned, 4)
    assert s["cross_modal"] == pytest.approx(1.0) and s["temporal_alignment"] == pytest.approx(1.0)


def test_relative_source_variance_finds_the_modality_a_unit_reads():
    """Late fusion: each token's units depend on its own modality only, so the pooled units of a
    one-modality encoder vary with that modality alone."""
    torch.manual_seed(0)
    encoder = MultiModalEncoder(TINY.replace(modalities=("eog",))).eval()
    x, mask = _inputs(8)
    rsv = relative_source_variance(encoder, x, mask, references=2)
    assert rsv["source_variance"].shape == (1, 2, 32) and np.allclose(rsv["share"], 1.0)
    encoder = MultiModalEncoder(TINY).eval()
    x[:, 3] = 0.0  # ECG identical everywhere: it cannot be a source of variance
    rsv = relative_source_variance(encoder, x, mask, references=2)
    assert rsv["source_variance"][3].max() < 1e-10 and rsv["share"][..., 3].max() < 1e-6
    np.testing.assert_allclose(rsv["share"].sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(rsv["softmax"].sum(-1), 1.0, atol=1e-6)
    summary = rsv_summary(rsv["share"])
    assert len(summary) == 2 and 0.0 <= summary[0]["entropy"] <= 1.0 and len(summary[0]["mean_rsv"]) == 4


def test_reconstruction_errors_score_masked_tokens_and_whole_dropped_modalities():
    torch.manual_seed(0)
    model = MultiMAE(TINY)
    x, mask = _inputs(4)
    errors = reconstruction_errors(model, x, mask)
    assert set(errors) == {"random_mask_0.7", "dropped_whole"}
    assert all(np.isfinite(v) and v > 0 for part in errors.values() for v in part.values())


def test_analyze_command_writes_the_figures_and_numbers(tmp_path, monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    cache = make_tiny_cache(tmp_path / "cache")
    common = ["--data", str(cache), "--size", "tiny", "--epochs", "1", "--batch-size", "8", "--device", "cpu",
              "--no-progress"]
    assert main(["pretrain", "--out", str(tmp_path / "drop"), *common]) == 0
    assert main(["pretrain", "--out", str(tmp_path / "late"), "--objective", "clip-loo", *common]) == 0
    assert main(["probe", "--scratch", "--size", "tiny", "--epochs", "1", "--data", str(cache), "--out",
                 str(tmp_path / "scratch"), "--device", "cpu", "--no-progress"]) == 0
    out = tmp_path / "figures"
    assert main(["analyze", "--data", str(cache), "--out", str(out), "--windows", "6", "--device", "cpu",
                 "--encoder", f"scratch={tmp_path / 'scratch'}", "--encoder", f"drop={tmp_path / 'drop' / 'encoder.pt'}",
                 "--encoder", f"late={tmp_path / 'late' / 'checkpoint.pt'}"]) == 0
    for name in ("rollout.png", "attention_layers.png", "rsv.png", "reconstructions.png"):
        assert (out / name).stat().st_size > 10_000
    data = json.loads((out / "analysis.json").read_text())
    assert set(data["encoders"]) == {"scratch", "drop", "late"}
    drop = data["encoders"]["drop"]
    assert np.array(drop["rollout"]["matrix"]).shape == (120, 120) and len(drop["layers"]) == 2
    assert drop["pretraining"] == "MultiMAE + modality drop" and "reconstruction_mse" in drop
    assert "reconstruction_mse" not in data["encoders"]["scratch"]  # no decoders: no reconstructions
    assert data["encoders"]["late"]["rollout"]["cross_modal"] == pytest.approx(0.0, abs=1e-6)  # late fusion
    with pytest.raises(SystemExit, match="NAME=PATH"):
        main(["analyze", "--data", str(cache), "--out", str(out), "--encoder", "nothing"])
