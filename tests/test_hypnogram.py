"""Expert hypnograms: every format on the real files with exact epoch counts, the 30 s grid rules,
epoch-length inference, the lone-annotation-file rule (and `inspect` saying so), clear errors."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter

import edfio
import numpy as np
import pytest
import wfdb

from physioserve.cli import main
from physioserve.io import RecordError, read_labels
from physioserve.io.hypnogram import FORMATS, find_hypnogram, read_hypnogram
from physioserve.io.hypnogram_grid import epochs_by_majority, infer_epoch_s
from physioserve.modalities import STAGE_NAMES

W, N1, N2, N3, REM, UNDEF = 0, 1, 2, 3, 4, 5
NAMES = (*STAGE_NAMES, "undefined")
SC4001_RK = {"W": 1997, "1": 58, "2": 250, "3": 101, "4": 119, "R": 125}  # published R&K counts, 2,650 epochs
SC4001 = {"W": 1997, "N1": 58, "N2": 250, "N3": 220, "REM": 125, "undefined": 0}
TR03 = {"W": 367, "N1": 58, "N2": 267, "N3": 72, "REM": 81, "undefined": 12}


@pytest.fixture(scope="module")
def real(shared_data):
    return shared_data / "real"


@pytest.fixture(scope="module")
def sc4001(real):
    return read_hypnogram(real / "sleep_edf" / "SC4001E0_hypnogram_30s_epochs.csv").stages


def _counts(stages) -> dict:
    return dict(zip(NAMES, np.bincount(np.asarray(stages, int), minlength=6).tolist()))


def _inspect(capsys, *argv):
    code = main(["inspect", *map(str, argv)])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


# ------------------------------------------------------------------------------- real files


def test_sleep_edf_sc4001_in_its_three_formats_gives_the_same_epochs(real):
    folder = real / "sleep_edf"
    raw = folder / "SC4001E0_hypnogram_30s_epochs.csv"
    with raw.open() as f:  # independent R&K count from the raw rows (N3/N4 = R&K S3/S4)
        rk = Counter(row["stage"] for row in csv.DictReader(f))
    assert rk == {"W": 1997, "N1": 58, "N2": 250, "N3": 101, "N4": 119, "R": 125}
    runs = folder / "SC4001E0-PSG.edf.csv"
    assert b"\r" in runs.read_bytes() and b"\n" not in runs.read_bytes()  # carriage-return-only line endings
    seconds = Counter()
    for line in runs.read_bytes().decode().split("\r")[1:]:
        if line:
            stage, duration = line.split(",")
            seconds[stage] += int(duration)
    assert {k: v // 30 for k, v in seconds.items()} == SC4001_RK

    read = {name: read_hypnogram(folder / name) for name in (raw.name, runs.name, "SC4001E0-PSG.edf.hyp")}
    for name, hyp in read.items():
        assert len(hyp.stages) == 2650, name
        assert hyp.stage_counts() == SC4001, name
        np.testing.assert_array_equal(hyp.stages, read[raw.name].stages, err_msg=name)
    assert read[raw.name].format == "csv" and read[raw.name].epoch_s == 30
    assert read[runs.name].format == "csv" and "run-length" in read[runs.name].kind
    hyp = read["SC4001E0-PSG.edf.hyp"]
    assert hyp.format == "wfdb" and "Sleep-EDF" in hyp.kind
    assert (hyp.stages[:1021] == W).all()  # the first run (W, 0-30,630 s) that wfdb.rdann loses
    lost = wfdb.rdann(str(folder / "SC4001E0-PSG.edf"), "hyp")
    assert "Sleep_stage_W duration: 30630" not in lost.aux_note


def test_sleep_edf_hypnogram_as_edf_plus(tmp_path, real, sc4001):
    """The same night as an EDF+ annotation file (Sleep-EDF's *-Hypnogram.edf layout), written by edfio."""
    annotations, t = [], 0
    for line in (real / "sleep_edf" / "SC4001E0-PSG.edf.csv").read_bytes().decode().split("\r")[1:]:
        if line:
            stage, duration = line.split(",")
            annotations.append(edfio.EdfAnnotation(t, int(duration), f"Sleep stage {stage}"))
            t += int(duration)
    path = tmp_path / "SC4001EC-Hypnogram.edf"
    edfio.Edf([], annotations=annotations).write(path)
    hyp = read_hypnogram(path)
    assert hyp.format == "edf" and hyp.stage_counts() == SC4001
    np.testing.assert_array_equal(hyp.stages, sc4001)


def test_hypnogram_annotations_edf(shared_data):
    hyp = read_hypnogram(shared_data / "other" / "hypnogram_annotations.edf")
    assert len(hyp.stages) == 854 and hyp.format == "edf"
    assert hyp.stage_counts() == {"W": 151, "N1": 109, "N2": 430, "N3": 23, "REM": 141, "undefined": 0}
    assert "annotation-only" in hyp.extent


def test_physionet2018_arousal(shared_data):
    hyp = read_hypnogram(shared_data / "physionet2018" / "tr03-0005.arousal")
    assert len(hyp.stages) == 857 and hyp.stage_counts() == TR03
    assert hyp.extent.startswith("the header tr03-0005.hea") and len(hyp.arousal_regions_s) == 27


SLPDB_RAW = {"W": W, "1": N1, "2": N2, "3": N3, "4": N3, "R": REM, "MT": UNDEF}


@pytest.mark.parametrize(("record", "n_epochs"), [("slp01a", 240), ("slp02a", 360), ("slp04", 720)])
def test_slpdb_st_matches_the_raw_aux_strings(real, record, n_epochs):
    folder = real / "slpdb"
    raw = wfdb.rdann(str(folder / record), "st")  # independent reader; slpdb's first note is at sample 1
    header = wfdb.rdheader(str(folder / record))
    per = int(30 * header.fs)
    assert header.sig_len // per == n_epochs
    expected = np.full(n_epochs, UNDEF)
    for sample, aux in zip(raw.sample, raw.aux_note):
        expected[sample // per] = SLPDB_RAW[aux.split()[0]]
    hyp = read_hypnogram(folder / f"{record}.st")
    assert hyp.format == "wfdb" and "slpdb" in hyp.kind and hyp.extent.startswith(f"the header {record}.hea")
    np.testing.assert_array_equal(hyp.stages, expected)
    first = Counter(aux.split()[0] for aux in raw.aux_note)
    counts = hyp.stage_counts()
    assert counts["N3"] == first["3"] + first["4"] and counts["undefined"] == first["MT"]
    assert (counts["W"], counts["N1"], counts["N2"], counts["REM"]) == (first["W"], first["1"], first["2"], first["R"])


# ---------------------------------------------------------------------- lone annotation files


def test_lone_annotation_files_run_to_their_last_annotation(tmp_path, real, shared_data, capsys):
    lone = tmp_path / "lone"
    lone.mkdir()
    for source in (real / "slpdb" / "slp01a.st", real / "sleep_edf" / "SC4001E0-PSG.edf.hyp",
                   shared_data / "physionet2018" / "tr03-0005.arousal"):
        shutil.copy(source, lone)
    st = read_hypnogram(lone / "slp01a.st")  # last note at 1,792,500 / 250 Hz = 7,170 s, + one 30 s epoch
    assert len(st.stages) == 240 and st.extent == "the end of the last annotation's epoch"
    assert any("250 Hz from the most common note spacing" in note for note in st.notes)
    hyp = read_hypnogram(lone / "SC4001E0-PSG.edf.hyp")  # last run ends at 79,500 s
    assert len(hyp.stages) == 2650 and hyp.extent == "the end of the last annotated run"
    last = int(wfdb.rdann(str(shared_data / "physionet2018" / "tr03-0005"), "arousal").sample[-1])
    arousal = read_hypnogram(lone / "tr03-0005.arousal")
    assert len(arousal.stages) == (last + 1) // 6000 < 857
    for hypnogram in (st, hyp, arousal):
        assert any("no header beside it" in note for note in hypnogram.notes)

    out = _inspect(capsys, lone / "slp01a.st")
    assert "epoch count runs to the end of the last annotation's epoch" in out
    assert "note: no header beside it (slp01a.hea): the epoch count runs to the last annotation" in out
    summary = json.loads(_inspect(capsys, lone / "tr03-0005.arousal", "--json"))
    assert summary["labels"]["hypnogram"]["extent"] == "the last annotation"

    # a header beside it wins: here one that says the record is half as long
    (lone / "slp01a.hea").write_text((real / "slpdb" / "slp01a.hea").read_text().replace(" 1800000 ", " 900000 "))
    assert len(read_hypnogram(lone / "slp01a.st").stages) == 120
    out = _inspect(capsys, lone / "slp01a.st")
    assert "epoch count runs to the header slp01a.hea beside it (3600 s)" in out and "epochs: 120" in out


def test_inspect_describes_every_hypnogram_format(tmp_path, real, capsys):
    folder = real / "sleep_edf"
    dreams = tmp_path / "dreams.txt"
    dreams.write_text("[HypnogramR&K]\n" + "5\n" * 12 + "2\n" * 6)
    for path, fmt in ((folder / "SC4001E0-PSG.edf.csv", "csv"), (folder / "SC4001E0_hypnogram_30s_epochs.csv", "csv"),
                      (folder / "SC4001E0-PSG.edf.hyp", "wfdb"), (real / "slpdb" / "slp04.st", "wfdb"),
                      (dreams, "dreams")):
        summary = json.loads(_inspect(capsys, path, "--json"))
        assert summary["kind"] == "labels" and summary["labels"]["hypnogram"]["format"] == fmt
    assert summary["labels"]["n_epochs"] == 3 and summary["labels"]["stage_counts"]["W"] == 2
    out = _inspect(capsys, dreams)
    assert "format: dreams (DREAMS hypnogram (R&K codes); 5 s epochs)" in out
    numbers = tmp_path / "numbers.txt"
    numbers.write_text("0\n2\n2\n4\n")
    assert main(["inspect", str(numbers)]) == 1
    assert "--hypnogram-format numeric" in capsys.readouterr().err
    out = _inspect(capsys, numbers, "--hypnogram-format", "numeric")
    assert "format: numeric" in out and "epochs: 4  W 1  N1 0  N2 2  N3 0  REM 1" in out
    summary = json.loads(_inspect(capsys, real.parent / "other" / "hypnogram_annotations.edf", "--json",
                                  "--hypnogram-format", "edf"))
    assert summary["labels"]["hypnogram"]["extent"].endswith("(annotation-only file)")


# --------------------------------------------------------------------------- text formats


def test_dreams_5_s_codes_give_the_30_s_hypnogram(tmp_path, sc4001):
    rk = {W: 5, N1: 3, N2: 2, N3: 1, REM: 4}
    path = tmp_path / "HypnogramR&K_subject1.txt"
    path.write_text("[HypnogramR&K]\n" + "".join(f"{rk[s]}\n" * 6 for s in sc4001))
    hyp = read_hypnogram(path)
    assert hyp.format == "dreams" and hyp.epoch_s == 5
    np.testing.assert_array_equal(hyp.stages, sc4001)
    path.write_text("[Hypnogram]\n" + "0\n1\n" * 3 + "-1\n" * 6 + "-2\n" * 6)  # R&K S4, S3 -> N3; movement, unknown
    np.testing.assert_array_equal(read_hypnogram(path).stages, [N3, UNDEF, UNDEF])
    path.write_text("[HypnogramAASM]\n" + "0\n" * 6 + "1\n" * 6)  # AASM table: 0 is unknown, 1 is N3
    np.testing.assert_array_equal(read_hypnogram(path).stages, [UNDEF, N3])
    path.write_text("[HypnogramR&K]\n5\n7\n")
    with pytest.raises(RecordError, match=r"line 3: DREAMS code 7 is not one of 5, 4, 3, 2, 1, 0, -1, -2, -3"):
        read_hypnogram(path)


def test_majority_and_the_tie_rule():
    def sub(codes, e=5.0):
        return epochs_by_majority([(i * e, (i + 1) * e, c) for i, c in enumerate(codes)]).tolist()

    assert sub([N2, N2, N2, N2, N3, N3]) == [N2]
    assert sub([N2, N2, N2, N3, N3, N3]) == [N3]  # 15 s each: the one holding the midpoint (15 s) wins
    assert sub([W, W, N1, N2, REM, REM]) == [W]  # W and REM tie, N2 holds the midpoint: equally near, earlier wins
    assert sub([REM, N1, N1, W, W, N2]) == [W]  # N1 and W tie, W holds the midpoint
    assert sub([N2] * 7) == [N2, UNDEF]  # the last epoch has 5 s scored, 25 s not
    assert sub([W, N1, N2], e=20.0) == [W, N2]  # 20 s epochs: [0, 30) is 20 s W + 10 s N1
    assert sub([N3], e=60.0) == [N3, N3]


def test_spelled_lines_and_csv(tmp_path):
    path = tmp_path / "stages.txt"
    path.write_text("Wake\nS1\nstage 2\nN4\nSleep stage 4\nR\nREM\nMT\n?\nunscored\n")
    hyp = read_hypnogram(path, epoch_s=30)
    assert hyp.format == "lines"
    np.testing.assert_array_equal(hyp.stages, [W, N1, N2, N3, N3, REM, REM, UNDEF, UNDEF, UNDEF])
    path.write_text("Epoch;Start (s);Sleep Stage\n1;0;W\n2;30;N2\n3;60;R\n")
    np.testing.assert_array_equal(read_hypnogram(path).stages, [W, N2, REM])
    path.write_text("onset,duration,description\n0,60,Sleep stage W\n60,30,Sleep stage 3\n")
    np.testing.assert_array_equal(read_hypnogram(path).stages, [W, W, N3])
    path.write_text("stage\nW\nN1\n")
    np.testing.assert_array_equal(read_hypnogram(path, epoch_s=30).stages, [W, N1])


def test_numbers_are_never_guessed(tmp_path):
    path = tmp_path / "hypno.txt"
    path.write_text("0\n1\n2\n3\n4\n-1\n")
    with pytest.raises(RecordError, match=r"numbers only.*--hypnogram-format numeric .*or --hypnogram-format dreams"):
        read_hypnogram(path)
    hyp = read_hypnogram(path, fmt="numeric", epoch_s=30)
    np.testing.assert_array_equal(hyp.stages, [W, N1, N2, N3, REM, UNDEF])
    assert any("-1 are not 0-4" in note for note in hyp.notes)
    table = tmp_path / "hypno.csv"
    table.write_text("epoch,stage\n0,0\n1,4\n")
    with pytest.raises(RecordError, match="stage column holds numbers only"):
        read_hypnogram(table)
    np.testing.assert_array_equal(read_hypnogram(table, fmt="numeric", epoch_s=30).stages, [W, REM])
    path.write_text("5\n" * 6)
    hyp = read_hypnogram(path, fmt="dreams")
    assert hyp.stages.tolist() == [W] and "no [Hypnogram] line" in hyp.notes[0]


def test_epoch_length_inferred_from_the_recording(tmp_path):
    path = tmp_path / "stages.txt"
    path.write_text("N2\n" * 90)
    hyp = read_hypnogram(path, n_epochs=60)  # 90 lines x 20 s = 30 min = 60 epochs
    assert hyp.epoch_s == 20 and len(hyp.stages) == 60 and "20 s per line inferred" in hyp.notes[0]
    assert read_hypnogram(path, n_epochs=90).epoch_s == 30
    assert read_hypnogram(path, n_epochs=15).epoch_s == 5
    hyp = read_hypnogram(path)
    assert hyp.epoch_s == 30 and "30 s per line assumed" in hyp.notes[0]
    assert read_hypnogram(path, n_epochs=60, epoch_s=30).epoch_s == 30  # a given length wins
    epoch, note = infer_epoch_s(90, 200)
    assert epoch == 30 and "none of 30 / 20 / 5 s" in note


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("W\nN2\nbanana\n", {}, r"stages\.txt: .*line 3 'banana' is no stage spelling.*formats: edf"),
        ("W\nN2\nbanana\n", {"fmt": "lines"}, r"line 3: 'banana' is not a sleep stage"),
        ("", {}, r"stages\.txt: empty file"),
        ("W\n", {"fmt": "xml"}, r"unknown hypnogram format 'xml'; accepted: " + ", ".join(FORMATS)),
        ("W\n", {"epoch_s": -5}, r"epoch length -5 s must be a positive"),
        ("epoch,stage\n1,W\n3,N2\n", {}, r"epoch column does not count up by 1"),
        ("onset,stage\n30,W\n0,N2\n", {}, r"line 3: onset goes back in time"),
        ("onset,stage\n0,W\n23:10:00,N2\n", {}, r"line 3: onset '23:10:00' is not a number of seconds"),
        ("epoch,onset,stage\n1,0\n", {}, r"line 2: 2 field\(s\), the header names 3"),
    ],
)
def test_clear_errors(tmp_path, text, kwargs, message):
    path = tmp_path / "stages.txt"
    path.write_text(text)
    with pytest.raises(RecordError, match=message):
        read_hypnogram(path, **kwargs)


def test_wfdb_file_without_stages_and_missing_file(tmp_path, real):
    beats = tmp_path / "100.st"
    shutil.copy(real / "ecg" / "100.atr", beats)
    with pytest.raises(RecordError, match=r"100\.st: a WFDB annotation file without sleep stage notes"):
        read_hypnogram(beats)
    with pytest.raises(RecordError, match=r"nothing\.csv: no such file"):
        read_labels(tmp_path / "nothing.csv")


def test_naming_rule(tmp_path):
    for name in ("SC4001EC-Hypnogram.edf", "SC4001E0-PSG.edf", "slp01a.st", "slp01.hea", "tr03-0005.arousal",
                 "tr03-0005-arousal.mat", "night2_hypnogram.csv", "night2.edf", "night20.txt"):
        (tmp_path / name).write_bytes(b"")
    assert find_hypnogram("SC4001E0-PSG", tmp_path).name == "SC4001EC-Hypnogram.edf"
    assert find_hypnogram("slp01a", tmp_path).name == "slp01a.st"
    assert find_hypnogram("slp01", tmp_path) is None
    assert find_hypnogram("tr03-0005", tmp_path).name == "tr03-0005.arousal"
    assert find_hypnogram("night2", tmp_path).name == "night2_hypnogram.csv"
    (tmp_path / "night2.st").write_bytes(b"")
    with pytest.raises(RecordError, match=r"2 hypnograms match record night2: night2.st, night2_hypnogram.csv"):
        find_hypnogram("night2", tmp_path)
