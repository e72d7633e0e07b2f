"""`physioserve reproduce` end to end at tiny size on a few synthetic records laid out as the challenge's
training/ and test/ folders (every table's rows over two seeds, the figures), and `prepare` with several roots."""

import json
import shutil

import pytest

torch = pytest.importorskip("torch")

from physioserve.cli import main  # noqa: E402
from physioserve.prepare import prepare  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def single_process(monkeypatch, torch_one_thread):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def challenge(tmp_path_factory):
    """8 synthetic records: 6 labelled in training/ (with age-sex.csv), 2 unlabelled in test/."""
    root = tmp_path_factory.mktemp("challenge")
    assert main(["synth", str(root / "corpus"), "--records", "8", "--unlabelled", "2", "--hours", "0.4", "--seed", "2",
                 "--workers", "2", "--quiet"]) == 0
    (root / "training").mkdir()
    (root / "test").mkdir()
    for path in (root / "corpus").iterdir():
        shutil.move(str(path), str(root / ("test" if path.name.startswith("te") else "training") / path.name))
    return root


def _split(cache):
    return json.loads((cache / "split.json").read_text())


def test_prepare_takes_several_roots_and_the_split_does_not_depend_on_their_order(challenge, tmp_path):
    a = prepare([challenge / "training", challenge / "test"], tmp_path / "a", workers=2, progress=False)
    b = prepare([challenge / "test", challenge / "training"], tmp_path / "b", workers=2, progress=False)
    assert a["split"] == b["split"] == {"pretrain": 6, "train": 4, "val": 1, "test": 1}
    assert _split(tmp_path / "a") == _split(tmp_path / "b")
    split = _split(tmp_path / "a")
    assert {r for r in split["pretrain"] if r.startswith("te")} == {"te90-0007", "te90-0008"}  # unlabelled join
    assert not set(split["pretrain"]) & (set(split["val"]) | set(split["test"]))
    # in two runs, unlabelled test/ first: the labelled records are still split, not all sent to test
    prepare(challenge / "test", tmp_path / "c", workers=2, progress=False)
    c = prepare(challenge / "training", tmp_path / "c", workers=2, progress=False)
    assert c["split"] == a["split"] and _split(tmp_path / "c")["train"] == split["train"]
    with pytest.raises(ValueError, match="give each record once"):
        prepare([challenge / "test", challenge / "test"], tmp_path / "d", workers=1, progress=False)


def test_reproduce_runs_every_table_over_two_seeds(challenge, tmp_path):
    out = tmp_path / "runs"
    args = ["reproduce", str(challenge / "training"), str(challenge / "test"), "--out", str(out), "--size", "tiny",
            "--seeds", "0,1", "--epochs", "1", "--batch-size", "16", "--warmup-epochs", "0.5", "--probe-epochs", "3",
            "--e2e-epochs", "1", "--e2e-warmup-epochs", "0.5", "--label-records", "2,3", "--analysis-windows", "8",
            "--threads", "1", "--device", "cpu", "--no-progress"]
    assert main(args) == 0
    tables = json.loads((out / "tables" / "tables.json").read_text())
    assert list(tables) == ["table1", "table2", "appendix_c", "appendix_d", "appendix_e"]
    counts = {k: len(t["rows"]) for k, t in tables.items()}
    assert counts == {"table1": 14, "table2": 5, "appendix_c": 3, "appendix_d": 6, "appendix_e": 4}
    for key, table in tables.items():
        for row in table["rows"]:
            assert row["n_runs"] == 2, (key, row["labels"])  # every row over both seeds
            stage = row["metrics"]["sleep_stage"]["balanced_accuracy"]
            assert stage["n"] == 2 and 0.0 <= stage["mean"] <= 1.0
    late = [r["describe"]["pretraining"] for r in tables["table2"]["rows"]]
    assert late == ["SimCLR (late fusion)", "CLIP pairwise (late fusion)", "CLIP leave-one-out (late fusion)",
                    "MultiMAE", "MultiMAE + modality drop"]
    unimodal = [r for r in tables["table1"]["rows"] if "MAE on" in r["labels"][1]]
    assert [r["describe"]["pretraining"] for r in unimodal] == ["MAE on EEG", "MAE on EOG", "MAE on EMG", "MAE on ECG"]
    assert [r["describe"]["pretraining"] for r in tables["appendix_c"]["rows"]] == [
        "MultiMAE + modality drop, mask ratio 0.50", "MultiMAE + modality drop", "MultiMAE + modality drop, mask ratio 0.90"]
    appendix_h = (out / "tables" / "appendix_h.md").read_text()
    assert appendix_h.count("| table1 |") == 14 * 3 and "AUROC" in appendix_h
    figures = json.loads((out / "figures" / "analysis.json").read_text())
    assert list(figures["encoders"]) == ["scratch", "MultiMAE", "MultiMAE + drop"]
    assert all((out / "figures" / name).exists() for name in figures["figures"])
    # a second run finds every step done and rewrites the same tables
    before = (out / "tables" / "tables.md").read_text()
    assert main(args) == 0
    assert (out / "tables" / "tables.md").read_text() == before
    log = [json.loads(line) for line in (out / "reproduce.jsonl").read_text().splitlines()]
    assert all(r["skipped"] for r in log[len(log) // 2 + 1:])  # all but prepare (which always checks) skipped
    # --report writes the tables of what is done, running nothing (a long run's progress)
    shutil.rmtree(out / "probe" / "all-clip-loo-s1")
    assert main([*args, "--report"]) == 0
    rows = json.loads((out / "tables" / "tables.json").read_text())["table2"]["rows"]
    assert [r["n_runs"] for r in rows] == [2, 2, 1, 2, 2] and not (out / "probe" / "all-clip-loo-s1").exists()
