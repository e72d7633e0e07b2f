"""pretrain -> probe -> evaluate from the CLI on a tiny cache; probe outputs and window selection."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from physioserve.cache import WindowCache  # noqa: E402
from physioserve.cli import main  # noqa: E402
from training.config import ProbeConfig  # noqa: E402
from training.tinycache import make_tiny_cache  # noqa: E402

CPU = ["--device", "cpu", "--no-progress"]


@pytest.fixture(autouse=True)
def one_thread(torch_one_thread):
    """Every test here runs with one torch thread (conftest.torch_one_thread)."""


@pytest.fixture(autouse=True)
def single_process(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    cache = make_tiny_cache(root / "cache", missing={"tiny01": ("ecg",)})
    run = root / "run"
    assert main(["pretrain", "--data", str(cache), "--out", str(run), "--size", "tiny", "--epochs", "1",
                 "--batch-size", "8", *CPU]) == 0
    return root, cache, run / "encoder.pt"


def _probe(cache, out, *extra):
    assert main(["probe", "--data", str(cache), "--out", str(out), *CPU, *extra]) == 0
    return json.loads((out / "probe.json").read_text())


def test_pretrain_probe_evaluate_end_to_end(setup, tmp_path):
    root, cache, encoder = setup
    dirs = []
    for name, extra in {
        "all-s0": ["--checkpoint", str(encoder), "--seed", "0"],
        "all-s1": ["--checkpoint", str(encoder), "--seed", "1"],
        "eeg": ["--checkpoint", str(encoder), "--modalities", "eeg"],
        "scratch": ["--scratch", "--size", "tiny", "--epochs", "1"],
        "finetune": ["--checkpoint", str(encoder), "--finetune", "--epochs", "1", "--train-records", "2"],
    }.items():
        summary = _probe(cache, tmp_path / name, *extra)
        assert summary["mode"] == ("scratch" if name == "scratch" else "finetune" if name == "finetune" else "linear")
        dirs.append(str(tmp_path / name))
    assert main(["evaluate", *dirs, "--out", str(tmp_path / "eval")]) == 0
    result = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert len(result["runs"]) == 5 and len(result["groups"]) == 4  # the two seeds form one row
    seeds = next(g for g in result["groups"] if g["n_runs"] == 2)
    assert seeds["row"]["inputs"] == "All" and seeds["row"]["training"] == "linear probe"
    assert seeds["row"]["pretraining"] == "MultiMAE + modality drop"
    for run in result["runs"]:
        m = run["metrics"]["sleep_stage"]
        assert 0.0 <= m["balanced_accuracy"] <= 1.0 and m["n"] > 0
    table = (tmp_path / "eval" / "evaluation.md").read_text()
    assert "| EEG (multimodal encoder) |" in table and "none (random init)" in table and "2 train records" in table


def test_linear_probe_outputs_and_inference_model(setup, tmp_path, monkeypatch):
    _, cache, encoder = setup
    out = tmp_path / "p"
    summary = _probe(cache, out, "--checkpoint", str(encoder))
    assert summary["configs"]["pretrain"]["modality_drop"] is True
    assert set(summary["val_metrics"]) == {"sleep_stage", "age", "arousal"}
    preds = np.load(out / "predictions.npz")
    prob = preds["sleep_stage__test__prob"]
    assert prob.shape[1] == 5 and np.allclose(prob.sum(1), 1.0, atol=1e-5)
    # model.pt = encoder + heads with the standardisation folded in: it reproduces the saved probabilities
    from training.heads import load_inference_model

    model, configs = load_inference_model(out / "model.pt")
    assert configs["probe"]["mode"] == "linear"
    cache_obj = WindowCache(cache)
    idx = preds["sleep_stage__test__index"]
    with torch.no_grad():
        _, stage, age, arousal = model(torch.from_numpy(cache_obj.windows(idx)), torch.from_numpy(cache_obj.mask[idx]))
    np.testing.assert_allclose(torch.softmax(stage, -1).numpy(), prob, atol=1e-4)
    assert stage.shape == (len(idx), 5) and age.shape == arousal.shape == (len(idx), 2)
    # embeddings are cached: a second probe with the same encoder does not recompute them
    import training.probe as probe_module

    def fail(*args, **kwargs):
        raise AssertionError("embeddings recomputed")

    monkeypatch.setattr(probe_module, "compute_embeddings", fail)
    _probe(cache, out, "--checkpoint", str(encoder), "--seed", "3")


def test_window_selection(setup):
    _, cache, _ = setup
    from training.probe import select_windows

    c = WindowCache(cache)
    everything = np.ones(4, bool)
    train = select_windows(c, "train", ProbeConfig(), everything)
    assert (c.labels["stage"][train] >= 0).all() and len(train) == 30  # 3 train records x 10 windows
    assert len(select_windows(c, "train", ProbeConfig(label_fraction=0.5), everything)) == 15
    two = select_windows(c, "train", ProbeConfig(train_records=2), everything)
    assert len(np.unique(c.record_index[two])) == 2
    ecg_only = np.array([False, False, False, True])
    test = select_windows(c, "test", ProbeConfig(modalities=("ecg",)), ecg_only)
    assert len(test) == 0  # the test record (tiny01) has no ECG


def test_subset_augmented_heads_fit_every_subset_and_keep_full_input_test_metrics(setup, tmp_path, capsys):
    from training.probe import augment_subsets

    assert augment_subsets(("eeg", "eog", "emg", "ecg")) == [
        ("eeg",), ("eog",), ("emg",), ("ecg",), ("eog", "emg", "ecg"), ("eeg", "emg", "ecg"),
        ("eeg", "eog", "ecg"), ("eeg", "eog", "emg")]
    assert augment_subsets(("eeg", "eog")) == [("eeg",), ("eog",)]
    _, cache, encoder = setup
    plain = _probe(cache, tmp_path / "plain", "--checkpoint", str(encoder))
    summary = _probe(cache, tmp_path / "aug", "--checkpoint", str(encoder), "--subset-augment")
    assert summary["configs"]["probe"]["subset_augment"] is True
    rows = int(capsys.readouterr().err.split("train rows ")[1].split()[0])
    n_train = summary["windows"]["train"]
    assert 8 * n_train - 2 * n_train < rows <= 9 * n_train  # full + 8 subsets (ecg missing in one record)
    # test predictions are for the full input, as without augmentation
    a, b = np.load(tmp_path / "plain" / "predictions.npz"), np.load(tmp_path / "aug" / "predictions.npz")
    assert np.array_equal(a["sleep_stage__test__index"], b["sleep_stage__test__index"])
    assert plain["windows"] == summary["windows"]
    with pytest.raises(SystemExit, match="applies to linear probes"):
        main(["probe", "--data", str(cache), "--out", str(tmp_path / "x"), "--scratch", "--size", "tiny",
              "--subset-augment", *CPU])


def test_task_weights_of_the_end_to_end_loss(setup, tmp_path):
    """--task-weights reaches the config and the loss: the same seed with age and arousal weighted 0 trains
    another encoder; bad weights are refused."""
    _, cache, _ = setup
    with pytest.raises(ValueError, match="one weight >= 0 per task"):
        ProbeConfig(mode="finetune", e2e_task_weights=(1.0, 0.5))
    with pytest.raises(SystemExit, match="three numbers"):
        main(["probe", "--data", str(cache), "--out", str(tmp_path / "x"), "--scratch", "--size", "tiny",
              "--task-weights", "1,a,b", *CPU])
    probs = {}
    for name, weights in (("plain", "1,1,1"), ("stage", "1,0,0")):
        summary = _probe(cache, tmp_path / name, "--scratch", "--size", "tiny", "--epochs", "1", "--task-weights", weights)
        assert summary["configs"]["probe"]["e2e_task_weights"] == [float(w) for w in weights.split(",")]
        probs[name] = np.load(tmp_path / name / "predictions.npz")["sleep_stage__test__prob"]
    assert probs["plain"].shape == probs["stage"].shape
    assert not np.allclose(probs["plain"], probs["stage"])
