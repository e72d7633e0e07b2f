"""The contrastive baselines (late fusion, SimCLR / CLIP losses, views), unimodal encoders, and pretraining
validation with the best-val / latest selection (tiny sizes, CPU)."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from physioserve.cli import main  # noqa: E402
from training.config import ModelConfig, PretrainConfig, ViewAugmentConfig, drop_mask_prob  # noqa: E402
from training.contrastive import (  # noqa: E402
    ContrastiveModel,
    adjacent_positions,
    clip_leave_one_out,
    clip_pairwise,
    nt_xent,
)
from training.model import MultiModalEncoder  # noqa: E402
from training.runtime import load_checkpoint  # noqa: E402
from training.signal_augment import augment_views  # noqa: E402
from training.tinycache import make_tiny_cache  # noqa: E402

TINY = ModelConfig.named("tiny")
CPU = ["--device", "cpu", "--no-progress"]
PRE = ["--size", "tiny", "--epochs", "2", "--batch-size", "8", "--warmup-epochs", "1", *CPU]


@pytest.fixture(autouse=True)
def one_thread(torch_one_thread):
    """Every test here runs with one torch thread (conftest.torch_one_thread)."""


@pytest.fixture(autouse=True)
def single_process(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_tiny_cache(tmp_path_factory.mktemp("cache"), missing={"tiny03": ("ecg",)})


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _clip(a, b, t):
    """CLIP's symmetric InfoNCE written out: mean of the two cross-entropies."""
    logits = a @ b.T / t
    target = torch.arange(len(a))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def test_clip_pairwise_is_the_mean_of_clip_over_pairs_of_present_modalities():
    z = _unit(6, 3, 8)
    mask = torch.ones(6, 3, dtype=torch.bool)
    loss, per = clip_pairwise(z, mask, 0.1)
    expected = [_clip(z[:, i], z[:, j], 0.1) for i, j in ((0, 1), (0, 2), (1, 2))]
    assert loss.item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-5)
    assert per[0].item() == pytest.approx(((expected[0] + expected[1]) / 2).item(), rel=1e-5)
    # a window lacking modality 2 leaves the pairs with modality 2 as if it were not in the batch
    mask[5, 2] = False
    loss, _ = clip_pairwise(z, mask, 0.1)
    sub = [_clip(z[:, 0], z[:, 1], 0.1) * 6, _clip(z[:5, 0], z[:5, 2], 0.1) * 5, _clip(z[:5, 1], z[:5, 2], 0.1) * 5]
    assert loss.item() == pytest.approx((sum(sub) / 16).item(), rel=1e-5)


def test_clip_leave_one_out_contrasts_each_modality_with_the_mean_of_the_others():
    z = _unit(5, 3, 8, seed=1)
    mask = torch.ones(5, 3, dtype=torch.bool)
    _, per = clip_leave_one_out(z, mask, 0.2)
    rest = (z[:, 1] + z[:, 2]) / 2  # SleepFM: the mean, not renormalised
    assert per[0].item() == pytest.approx(_clip(z[:, 0], rest, 0.2).item(), rel=1e-5)
    mask[0, 1] = False  # window 0: modality 0's others are modality 2 alone
    _, per = clip_leave_one_out(z, mask, 0.2)
    rest = (z[:, 1] + z[:, 2]) / 2
    rest[0] = z[0, 2]
    assert per[0].item() == pytest.approx(_clip(z[:, 0], rest, 0.2).item(), rel=1e-5)


def test_nt_xent_matches_simclr_and_rewards_aligned_views():
    u, v = _unit(4, 8, seed=2), _unit(4, 8, seed=3)
    ones = torch.ones(4, dtype=torch.bool)
    total, n = nt_xent(u, v, ones, ones, 0.5)
    z = torch.cat([u, v])
    logits = z @ z.T / 0.5
    logits.fill_diagonal_(float("-inf"))
    manual = F.cross_entropy(logits, torch.cat([torch.arange(4, 8), torch.arange(4)]), reduction="sum")
    assert n.item() == 8 and total.item() == pytest.approx(manual.item(), rel=1e-5)
    assert (nt_xent(u, u, ones, ones, 0.5)[0] / 8).item() < (total / 8).item()  # identical views: lower loss


def test_late_fusion_mixes_no_modalities_and_pools_present_ones():
    torch.manual_seed(0)
    encoder = MultiModalEncoder(TINY.replace(fusion="late")).eval()
    x = torch.randn(2, 4, 3000)
    mask = torch.ones(2, 4, dtype=torch.bool)
    y = x.clone()
    y[:, 1] = torch.randn(2, 3000) * 5  # change EOG only
    a, b = encoder.forward_features(x, mask), encoder.forward_features(y, mask)
    T = TINY.n_chunks
    torch.testing.assert_close(a[:, :T], b[:, :T])  # EEG tokens untouched: no cross-modal attention
    assert not torch.allclose(a[:, T : 2 * T], b[:, T : 2 * T])
    mask[0, 2:] = False
    pooled = encoder.pooled(x, mask)
    torch.testing.assert_close(pooled[0], encoder.forward_features(x, mask)[0, : 2 * T].mean(0))
    attention = encoder.forward_analysis(x, mask)["attention"][0]  # [B, H, N, N]: block-diagonal
    assert attention[:, :, :T, T:].abs().max() == 0 and torch.allclose(attention.sum(-1), torch.ones(()))


def test_unimodal_encoder_reads_its_modality_from_the_four_modality_input():
    torch.manual_seed(0)
    encoder = MultiModalEncoder(TINY.replace(modalities=("eog",))).eval()
    x = torch.randn(3, 4, 3000)
    mask = torch.ones(3, 4, dtype=torch.bool)
    y = x.clone()
    y[:, [0, 2, 3]] = float("nan")  # other modalities are ignored, whatever they hold
    torch.testing.assert_close(encoder.pooled(x, mask), encoder.pooled(y, mask))
    mask[1, 1] = False  # no EOG: a finite zero embedding, never NaN
    out = encoder.pooled(y, mask)
    assert torch.isfinite(out).all() and not out[1].any()


def test_views_are_reproducible_and_leave_absent_modalities_alone():
    x = torch.randn(4, 4, 3000)
    mask = torch.ones(4, 4, dtype=torch.bool)
    mask[0, 3] = False
    a = augment_views(x, mask, ViewAugmentConfig(), torch.Generator().manual_seed(5))
    b = augment_views(x, mask, ViewAugmentConfig(), torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and torch.equal(a[0, 3], x[0, 3]) and not torch.equal(a, x)
    assert a.abs().max() <= 40.0  # the preprocessing clip
    off = augment_views(x, mask, ViewAugmentConfig(p=0.0), torch.Generator().manual_seed(5))
    torch.testing.assert_close(off, x, atol=1e-4, rtol=0)  # every transformation off: the window (FFT round trip)


def test_adjacent_windows_stay_in_their_night():
    record_index = np.array([0, 0, 0, 1, 1, 2])
    indices = np.arange(6)
    positions = np.array([0, 2, 3, 4, 5])
    assert adjacent_positions(indices, record_index, positions, np.array([1, 1, -1, 1, 1])).tolist() == [1, 1, 4, 3, 5]
    assert adjacent_positions(indices, record_index, positions, np.array([-1, -1, 1, -1, -1])).tolist() == [1, 1, 4, 3, 5]


def test_drop_mask_probability_keeps_the_overall_ratio():
    assert drop_mask_prob(0.7) == pytest.approx(0.6)
    for ratio in (0.5, 0.9):
        p = drop_mask_prob(ratio)
        assert (30 + p * 90) / 120 == pytest.approx(ratio)


@pytest.mark.parametrize("objective", ["simclr", "clip-pairwise", "clip-loo"])
def test_contrastive_pretraining_probes_and_selects_the_best_validation_epoch(cache, tmp_path, objective):
    run = tmp_path / "run"
    assert main(["pretrain", "--data", str(cache), "--out", str(run), "--objective", objective, *PRE]) == 0
    encoder = load_checkpoint(run / "encoder.pt")
    configs = encoder["configs"]
    assert configs["model"]["fusion"] == "late" and configs["pretrain"]["objective"] == objective
    assert not any(k.startswith("projections") for k in encoder["encoder"]) and encoder["decoders"] is None
    val = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "val_loss" in line]
    assert [r["epoch"] for r in val] == [1, 2] and all(np.isfinite(r["val_loss"]) for r in val)
    best = min(val, key=lambda r: r["val_loss"])
    assert encoder["selection"]["rule"] == "best-val" and encoder["selection"]["epoch"] == best["epoch"]
    assert encoder["selection"]["val_loss"] == pytest.approx(best["val_loss"])
    assert main(["probe", "--checkpoint", str(run / "encoder.pt"), "--data", str(cache), "--out", str(tmp_path / "p"),
                 "--epochs", "3", *CPU]) == 0
    from training.heads import load_inference_model

    model, _ = load_inference_model(tmp_path / "p" / "model.pt")
    assert model.encoder.cfg.fusion == "late"


def test_selection_rule_defaults_to_the_papers_and_can_be_forced(cache, tmp_path):
    assert PretrainConfig().selection == "latest"  # MultiMAE + modality drop: the latest weights (§3.5)
    assert PretrainConfig(modality_drop=False).selection == "best-val"
    assert PretrainConfig(objective="clip-loo").selection == "best-val"
    run = tmp_path / "drop"
    assert main(["pretrain", "--data", str(cache), "--out", str(run), "--select", "best-val", *PRE]) == 0
    chosen = load_checkpoint(run / "encoder.pt")
    best = load_checkpoint(run / "best.pt")
    assert chosen["selection"]["epoch"] == best["epoch"]
    assert all(torch.equal(v, best["model"][f"encoder.{k}"]) for k, v in chosen["encoder"].items())
    assert set(chosen["decoders"]) == {k[len("decoders."):] for k in best["model"] if k.startswith("decoders.")}
    latest = tmp_path / "latest"
    assert main(["pretrain", "--data", str(cache), "--out", str(latest), "--val-windows", "0", "--no-modality-drop",
                 *PRE]) == 0
    assert load_checkpoint(latest / "encoder.pt")["selection"]["rule"].startswith("latest (best-val asked")


def test_unimodal_pretraining_probes_its_modality_and_refuses_others(cache, tmp_path):
    run = tmp_path / "eeg"
    assert main(["pretrain", "--data", str(cache), "--out", str(run), "--modalities", "eeg", *PRE]) == 0
    blob = load_checkpoint(run / "checkpoint.pt")
    assert blob["configs"]["model"]["modalities"] == ["eeg"] or blob["configs"]["model"]["modalities"] == ("eeg",)
    assert blob["configs"]["pretrain"]["modality_drop"] is False  # one modality: nothing to drop
    assert sorted({k.split(".")[1] for k in blob["model"] if k.startswith("decoders.")}) == ["eeg"]
    summary = tmp_path / "p"
    assert main(["probe", "--checkpoint", str(run / "encoder.pt"), "--data", str(cache), "--out", str(summary),
                 "--epochs", "3", *CPU]) == 0
    assert json.loads((summary / "probe.json").read_text())["configs"]["probe"]["modalities"] == ["eeg"]
    with pytest.raises(SystemExit, match="takes only eeg"):
        main(["probe", "--checkpoint", str(run / "encoder.pt"), "--data", str(cache), "--out", str(tmp_path / "q"),
              "--modalities", "eog", *CPU])
    with pytest.raises(SystemExit, match="at least two"):
        main(["pretrain", "--data", str(cache), "--out", str(tmp_path / "c"), "--objective", "clip-loo",
              "--modalities", "eeg", *PRE])


def test_contrastive_model_gives_every_parameter_a_gradient_with_a_modality_absent_everywhere():
    torch.manual_seed(0)
    cfg = TINY.replace(fusion="late")
    model = ContrastiveModel(cfg, PretrainConfig(objective="clip-pairwise"))
    mask = torch.ones(6, 4, dtype=torch.bool)
    mask[:, 3] = False
    loss, per = model(torch.randn(6, 4, 3000), mask)
    loss.backward()
    assert torch.isfinite(loss) and per.shape == (4,)
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.slow
def test_late_fusion_and_unimodal_probes_export_as_one_onnx_graph_of_the_same_interface(cache, tmp_path):
    """`physioserve export` of a late-fusion (CLIP leave-one-out) and of a unimodal probe: the bundle contract's
    inputs and outputs, dynamic batch, parity with torch (checked by export at batch 1, 2, 7, 64)."""
    import onnxruntime as ort

    from physioserve.bundle import INPUT_NAMES, OUTPUT_NAMES, read_bundle

    for name, flags in {"late": ["--objective", "clip-loo"], "eeg": ["--modalities", "eeg"]}.items():
        run, probe, bundle = tmp_path / f"run-{name}", tmp_path / f"probe-{name}", tmp_path / f"bundle-{name}"
        assert main(["pretrain", "--data", str(cache), "--out", str(run), *flags, *PRE]) == 0
        assert main(["probe", "--checkpoint", str(run / "encoder.pt"), "--data", str(cache), "--out", str(probe),
                     "--epochs", "2", *CPU]) == 0
        assert main(["export", "--checkpoint", str(run / "encoder.pt"), "--probe", str(probe), "--out", str(bundle)]) == 0
        meta = read_bundle(bundle).meta
        assert max(meta["export"]["parity"]["max_abs"].values()) <= 1e-4
        session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
        assert tuple(i.name for i in session.get_inputs()) == INPUT_NAMES
        assert tuple(o.name for o in session.get_outputs()) == OUTPUT_NAMES
        signals = np.random.default_rng(0).normal(size=(3, 4, 3000)).astype(np.float32)
        out = session.run(None, {"signals": signals, "modality_mask": np.ones((3, 4), bool)})
        assert out[0].shape == (3, TINY.d_model) and out[1].shape == (3, 5)
