"""`physioserve pretrain` on a tiny cache: checkpoints, configs, exact resume."""

import json

import pytest

torch = pytest.importorskip("torch")

from physioserve.cli import main  # noqa: E402
from training.runtime import load_checkpoint  # noqa: E402
from training.tinycache import make_tiny_cache  # noqa: E402

# 6 labelled + 1 unlabelled records x 10 windows; pretrain split = 4 records = 40 windows = 5 batches of 8
ARGS = ["--size", "tiny", "--epochs", "2", "--batch-size", "8", "--warmup-epochs", "1", "--log-every", "1",
        "--no-progress", "--device", "cpu"]


@pytest.fixture(autouse=True)
def one_thread(torch_one_thread):
    """Every test here runs with one torch thread (conftest.torch_one_thread)."""


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_tiny_cache(tmp_path_factory.mktemp("cache"), missing={"tiny03": ("ecg",)})


@pytest.fixture(autouse=True)
def single_process(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)


def _pretrain(cache, out, *extra):
    assert main(["pretrain", "--data", str(cache), "--out", str(out), *ARGS, *extra]) == 0


def _log(run, kind="loss"):
    """metrics.jsonl lines of one kind: training ("loss") or validation ("val_loss")."""
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if kind in r]


def test_resume_after_a_stop_gives_the_same_losses(cache, tmp_path):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    _pretrain(cache, straight)
    _pretrain(cache, stopped, "--max-steps", "3")  # stops mid-epoch 0
    _pretrain(cache, stopped, "--resume", "--max-steps", "7", "--workers", "1")  # crosses the epoch end; a worker reads
    (stopped / "metrics.jsonl").write_text((stopped / "metrics.jsonl").read_text() + '{"step": 99, "loss": 0}\n')
    _pretrain(cache, stopped, "--resume")  # lines after the checkpoint's step are dropped, then re-logged
    a, b = _log(straight), _log(stopped)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 11))
    for key in ("loss", "loss_eeg", "loss_ecg", "lr", "grad_norm"):
        assert [r[key] for r in a] == [r[key] for r in b], key  # bit-identical
    va, vb = _log(straight, "val_loss"), _log(stopped, "val_loss")
    assert [r["step"] for r in va] == [r["step"] for r in vb] == [5, 10]  # one validation per epoch end
    assert [r["val_loss"] for r in va] == [r["val_loss"] for r in vb]
    ma, mb = (load_checkpoint(r / "checkpoint.pt")["model"] for r in (straight, stopped))
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


def test_checkpoint_holds_configs_and_states(cache, tmp_path):
    run = tmp_path / "run"
    _pretrain(cache, run, "--max-steps", "2", "--no-modality-drop", "--lr", "1e-3")
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["step"] == 2 and ckpt["epoch"] == 0 and ckpt["batch_in_epoch"] == 2
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "configs", "git", "world_size"} <= set(ckpt)
    configs = ckpt["configs"]
    assert configs["model"]["name"] == "tiny" and configs["pretrain"]["modality_drop"] is False
    assert configs["pretrain"]["lr"] == 1e-3
    from physioserve.preprocessing import DEFAULT_CONFIG

    assert configs["preprocessing"] == DEFAULT_CONFIG.to_dict() == configs["cache"]["preprocessing"]
    assert {"python", "numpy", "torch", "generator"} <= set(ckpt["rng"][0])
    encoder = load_checkpoint(run / "encoder.pt")
    assert encoder["kind"] == "encoder" and all(not k.startswith("decoders") for k in encoder["encoder"])
    lines = _log(run)
    assert len(lines) == 2 and lines[0]["lr"] < lines[1]["lr"]  # warm-up
    assert {"loss", "loss_eeg", "loss_eog", "loss_emg", "loss_ecg", "samples_per_s", "epoch"} <= set(lines[0])


def test_refuses_to_overwrite_or_to_resume_with_other_settings(cache, tmp_path):
    run = tmp_path / "run"
    _pretrain(cache, run, "--max-steps", "1")
    with pytest.raises(SystemExit, match="--resume"):
        _pretrain(cache, run)
    with pytest.raises(SystemExit, match="lr"):
        _pretrain(cache, run, "--resume", "--lr", "0.5")


def test_learning_rate_schedule():
    from training.pretrain import lr_factor

    factors = [lr_factor(s, 10, 100, 0.01) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))  # cosine decays
    assert factors[-1] == pytest.approx(0.01, abs=1e-3)


def test_in_memory_fp16_cache_path_matches_the_loader_path(cache, tmp_path):
    """--gpu-cache on a CPU device holds the split in fp16 in memory: same batches, fp16-rounded inputs."""
    _pretrain(cache, tmp_path / "loader", "--max-steps", "3")
    _pretrain(cache, tmp_path / "cached", "--max-steps", "3", "--gpu-cache")
    a, b = _log(tmp_path / "loader"), _log(tmp_path / "cached")
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], rel=1e-2)


def test_config_files_parse_and_drive_the_cli(cache, tmp_path):
    from pathlib import Path

    from training.config import PretrainConfig, ProbeConfig, load_config_file

    configs = Path(__file__).resolve().parents[1] / "configs"
    for path in configs.glob("pretrain-*.json"):
        values = load_config_file(path)
        values.pop("size")
        PretrainConfig.from_dict(values)
    for path in configs.glob("probe-*.json"):
        ProbeConfig.from_dict(load_config_file(path))
    run = tmp_path / "run"
    assert main(["pretrain", "--config", str(configs / "pretrain-small.json"), "--data", str(cache), "--out", str(run),
                 "--size", "tiny", "--batch-size", "8", "--max-steps", "1", "--no-progress", "--device", "cpu"]) == 0
    pre = load_checkpoint(run / "checkpoint.pt")["configs"]["pretrain"]
    assert pre["lr"] == 1e-3 and pre["batch_size"] == 8 and pre["epochs"] == 10  # file values, flags win
