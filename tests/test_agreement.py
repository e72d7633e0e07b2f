"""Agreement with an expert hypnogram: the numbers (against scikit-learn), exclusions, alignment, the plot,
and `physioserve score --hypnogram` end to end on a synthetic night scored by the packaged default bundle."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import (
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
)

from physioserve.agreement import plot_hypnograms, stage_agreement_report
from physioserve.cli import main
from physioserve.io import read_recording
from physioserve.modalities import STAGE_NAMES

W, N1, N2, N3, REM, UNDEF = 0, 1, 2, 3, 4, 5
DREAMS_RK = {W: 5, N1: 3, N2: 2, N3: 1, REM: 4, UNDEF: -2}


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(3)
    expert = rng.integers(0, 6, 500)  # 5 = undefined
    pred = np.where(rng.random(500) < 0.6, expert, rng.integers(0, 5, 500))
    pred[rng.random(500) < 0.05] = -1  # unscorable
    report = stage_agreement_report(pred, expert)
    keep = (expert < 5) & (pred >= 0)
    e, p = expert[keep], pred[keep]
    labels = list(range(5))
    assert report["epochs"] == keep.sum()
    assert report["excluded"] == {"expert_undefined": int((expert == 5).sum()),
                                  "predicted_unscorable": int(((pred < 0) & (expert < 5)).sum())}
    assert report["accuracy"] == pytest.approx(np.mean(e == p))
    assert report["kappa"] == pytest.approx(cohen_kappa_score(e, p))
    assert report["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(e, p))
    assert report["macro_f1"] == pytest.approx(f1_score(e, p, average="macro"))
    assert report["confusion"] == confusion_matrix(e, p, labels=labels).tolist()  # rows expert, columns predicted
    recall = recall_score(e, p, labels=labels, average=None)
    precision = precision_score(e, p, labels=labels, average=None, zero_division=0)
    for k, name in enumerate(STAGE_NAMES):
        assert report["recall"][name] == pytest.approx(recall[k])
        assert report["precision"][name] == pytest.approx(precision[k])


def test_stage_changes_overlap_and_empty_stages():
    # the expert changes twice (W->N2, N2->REM), the prediction 5 times over epochs 0-5; epoch 6 is unscorable
    expert = np.array([W, W, N2, N2, N2, REM, REM, REM, N2, N2])
    pred = np.array([W, N1, N2, N1, N2, REM, -1, REM])
    report = stage_agreement_report(pred, expert)
    assert report["overlap_epochs"] == 8 and report["epochs"] == 7
    assert report["expert_epochs"] == 10 and report["predicted_epochs"] == 8
    assert "compared on the first 8 (2 epochs of the expert hypnogram left out)" in report["notes"][0]
    # pairs of consecutive compared epochs: (0,1) (1,2) (2,3) (3,4) (4,5); epoch 6 breaks (5,6), (6,7)
    hours = 7 * 30 / 3600
    assert report["stage_changes_per_hour"] == {"predicted": round(5 / hours, 2), "expert": round(2 / hours, 2)}
    assert report["recall"]["N1"] is None and report["precision"]["N1"] == 0.0
    assert report["stage_epochs"]["expert"] == {"W": 2, "N1": 0, "N2": 3, "N3": 0, "REM": 2}

    one_stage = stage_agreement_report(np.full(4, N2), np.full(4, N2))
    assert one_stage["accuracy"] == 1.0 and one_stage["kappa"] is None  # kappa undefined: JSON null, not NaN
    json.dumps(one_stage, allow_nan=False)
    nothing = stage_agreement_report(np.full(3, -1), np.full(3, UNDEF))
    assert nothing["epochs"] == 0 and nothing["accuracy"] is None and "no metric" in nothing["notes"][0]
    with pytest.raises(ValueError, match="integer codes"):
        stage_agreement_report(np.array([0.5, 1.0]), np.array([0, 1]))


def test_plot_hypnograms_writes_a_png(tmp_path):
    expert = np.repeat([W, N1, N2, N3, N2, REM, UNDEF, W], 20)
    pred = expert.copy()
    pred[::7] = N2
    path = plot_hypnograms(pred, expert[:150], tmp_path / "both.png", "night: accuracy 0.9")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """A 1 h synthetic night (record folder) and its true stages, written by `physioserve synth`."""
    root = tmp_path_factory.mktemp("night")
    assert main(["synth", str(root / "corpus"), "--records", "1", "--hours", "1", "--seed", "2", "--workers", "1"]) == 0
    record = root / "corpus" / "tr90-0001"
    return record, read_recording(record, load_signals=False).labels.stages


def _write_formats(folder, stages) -> dict:
    """The night's true hypnogram as an epoch CSV and as a DREAMS 5 s file."""
    names = ("W", "N1", "N2", "N3", "R", "?")
    epochs = folder / "tr90-0001_hypnogram.csv"
    epochs.write_text("epoch,onset_s,stage\n" + "".join(f"{i},{30 * i},{names[s]}\n" for i, s in enumerate(stages)))
    dreams = folder / "HypnogramR&K_tr90-0001.txt"
    dreams.write_text("[HypnogramR&K]\n" + "".join(f"{DREAMS_RK[s]}\n" * 6 for s in stages))
    return {"csv": epochs, "dreams": dreams}


@pytest.mark.slow
def test_score_with_hypnogram_end_to_end(tmp_path, night, capsys, monkeypatch):
    monkeypatch.delenv("PHYSIOSERVE_BUNDLE", raising=False)  # the packaged default bundle
    record, stages = night
    assert len(set(stages.tolist()) - {UNDEF}) >= 3  # a night with several stages
    files = _write_formats(tmp_path, stages)
    reports = {}
    for fmt, hypnogram in files.items():
        out = tmp_path / f"out-{fmt}"
        assert main(["score", str(record), "--out", str(out), "--hypnogram", str(hypnogram), "--no-progress"]) == 0
        err = capsys.readouterr().err
        reports[fmt] = json.loads((out / "tr90-0001.agreement.json").read_text())
        report = reports[fmt]
        assert f"agreement tr90-0001: accuracy {report['accuracy']:.3f}, Cohen's kappa {report['kappa']:.3f}" in err
        assert (out / "tr90-0001.agreement.png").read_bytes()[:4] == b"\x89PNG"
        # the record carries its own labels: the scored table's reference agreement is the same night's
        summary = json.loads((out / "tr90-0001.summary.json").read_text())
        assert summary["reference"]["stage_accuracy"] == round(report["accuracy"], 4)
        assert summary["reference"]["labelled_epochs"] == report["epochs"] == int((stages != UNDEF).sum())
    assert reports["csv"]["hypnogram"]["format"] == "csv" and reports["dreams"]["hypnogram"]["epoch_s"] == 5
    same = {k: v for k, v in reports["csv"].items() if k not in ("hypnogram", "notes")}
    assert same == {k: v for k, v in reports["dreams"].items() if k not in ("hypnogram", "notes")}
    assert same["expert_epochs"] == same["predicted_epochs"] == len(stages) == 120


@pytest.mark.slow
def test_score_with_hypnogram_dir_and_bad_hypnograms(tmp_path, night, capsys, monkeypatch):
    monkeypatch.delenv("PHYSIOSERVE_BUNDLE", raising=False)
    record, stages = night
    experts = tmp_path / "experts"
    experts.mkdir()
    numbers = experts / "tr90-0001.txt"  # numbers only: refused until the format is named
    numbers.write_text("".join(f"{s if s < 5 else -2}\n" for s in stages))
    out = tmp_path / "out"
    assert main(["score", str(record), "--out", str(out), "--hypnogram-dir", str(experts), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "numbers only" in err and "tr90-0001 is scored without agreement" in err
    assert (out / "tr90-0001.epochs.csv").is_file() and not (out / "tr90-0001.agreement.json").exists()
    assert main(["score", str(record), "--out", str(out), "--hypnogram-dir", str(experts), "--hypnogram-format",
                 "numeric", "--no-progress"]) == 0
    report = json.loads((out / "tr90-0001.agreement.json").read_text())
    assert report["hypnogram"]["format"] == "numeric" and report["expert_epochs"] == 120
    assert "30 s per line inferred" in report["notes"][0]
    assert main(["score", str(record), "--out", str(out), "--hypnogram", str(tmp_path / "none.csv")]) == 1
    assert "none.csv: no such file" in capsys.readouterr().err
