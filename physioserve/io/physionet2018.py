"""PhysioNet/CinC 2018 records: `<name>.hea` + `<name>.mat` signals, `-arousal.mat` / `.arousal` labels.

Layout of the challenge data set: `<root>/<name>/<name>.hea` (WFDB header), `<name>.mat` (signals, a
MATLAB v4 container that the header reads as format 16 with a 24-byte offset), `<name>-arousal.mat`
(per-sample labels, MATLAB v7.3 = HDF5) and `<name>.arousal` (WFDB annotations), plus
`<root>/age-sex.csv`. Plain `.dat` signal files (any WFDB format) read the same way.

Signals come in physical units from the header; every voltage channel is converted to µV (ECG in mV
x 1000); other units (SaO2 in %) stay as they are. wfdb reads WFDB's invalid-sample value (-32768 in
format 16) as NaN, and so do we: preprocessing refuses a window that holds one.

Labels. The `-arousal.mat` file is the challenge's reference: stage one-hot arrays and `arousals`
(+1 target arousal, 0 none, -1 not scored) per sample. The `.arousal` annotations hold the scorer's
events, from which the challenge built that file; `arousal_labels_from_annotations` rebuilds it the
same way, so both label files give the same stages and target arousal regions:
  - index m of the `.mat` arrays is annotation sample m + 1 (MATLAB's 1-based indices);
  - a target arousal spans [onset - 2 s, offset + 10 s] of an `arousal_*` event (both ends included);
  - not scored (-1, wins over +1): [onset - 10 s, offset + 10 s] of every `resp_*` event (apneas,
    hypopneas), and wake from 10 s (+1 sample) before its first sample to 10 s after its last.
Checked sample for sample on tr03-0005, the one record with both files at hand (tests/test_io_physionet.py).
"""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np
import wfdb

from ..modalities import EPOCH_SECONDS, STAGE_UNDEFINED
from ..recording import Channel, Labels, Recording, stages_from_sample_labels
from .common import (
    HeaderChannel,
    choose_modalities,
    regions_from_mask,
    require_modality,
    make_channel,
)
from .errors import RecordError
from .wfdb_annotations import NOTE, Annotation, read_annotations
from .wfdb_record import read_header, read_signals

STAGE_NOTES: dict[str, int] = {"W": 0, "N1": 1, "N2": 2, "N3": 3, "R": 4}
STAGE_DATASETS: tuple[str, ...] = ("wake", "nonrem1", "nonrem2", "nonrem3", "rem")  # codes 0..4; else 5
AROUSAL_BEFORE_S, AROUSAL_AFTER_S = 2.0, 10.0  # target arousal = event widened by these
UNSCORED_PAD_S = 10.0  # respiratory events and wake are not scored, +- this
AGE_SEX_FILE = "age-sex.csv"
CHALLENGE_FS = 200.0  # every PhysioNet 2018 record



# ----------------------------------------------------------------------------------------- layout


def resolve_header(path: str | Path) -> Path:
    """The `.hea` of a record given as the header itself or as its folder (`<name>/<name>.hea`)."""
    path = Path(path)
    if path.is_dir():
        named = path / f"{path.name}.hea"
        if named.is_file():
            return named
        headers = sorted(path.glob("*.hea"))
        if len(headers) == 1:
            return headers[0]
        found = ", ".join(h.name for h in headers) or "none"
        raise RecordError(
            f"{path}: a record folder must hold {path.name}.hea (or exactly one .hea); found: {found}"
        )
    if not path.is_file():
        raise RecordError(f"{path}: no such file or folder")
    return path


def find_records(data_dir: str | Path) -> list[Path]:
    """Record folders of a PhysioNet-2018-layout root: subfolders `<name>` holding `<name>.hea`, sorted."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise RecordError(f"{data_dir}: not a folder; give the data set root that holds one folder per record")
    return sorted(p for p in data_dir.iterdir() if p.is_dir() and (p / f"{p.name}.hea").is_file())


def read_age_sex(data_dir: str | Path) -> dict[str, tuple[float | None, str | None]]:
    """{record: (age, sex)} from `<data_dir>/age-sex.csv` (columns Record,Age,Sex); {} when absent."""
    path = Path(data_dir) / AGE_SEX_FILE
    if not path.is_file():
        return {}
    out: dict[str, tuple[float | None, str | None]] = {}
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = {"Record", "Age", "Sex"} - set(reader.fieldnames or [])
        if missing:
            raise RecordError(f"{path}: missing column(s) {', '.join(sorted(missing))}; expected Record,Age,Sex")
        for row in reader:
            age_text, sex = (row["Age"] or "").strip(), (row["Sex"] or "").strip()
            try:
                age = float(age_text) if age_text else None
            except ValueError:
                raise RecordError(f"{path}: record {row['Record']}: age {age_text!r} is not a number") from None
            out[row["Record"].strip()] = (age, sex or None)
    return out


# ---------------------------------------------------------------------------------------- signals


def _read_header(header: Path) -> wfdb.Record | wfdb.MultiRecord:
    return read_header(header)[0]


def record_length(header: Path, parsed: tuple | None = None) -> tuple[int, float]:
    """(samples, Hz) of a record at its frame rate: the header's count, else from the signal file's size."""
    rec, specs = parsed or read_header(header)
    frames = max((s.n_samples * float(rec.fs) / s.fs for s in specs), default=0)
    return int(round(frames)), float(rec.fs)


def signal_files(path: str | Path) -> dict[str, bool]:
    """{signal file named by the header: present next to it} of a record (folder or `.hea`), segments included."""
    header = resolve_header(path)
    rec = _read_header(header)
    if isinstance(rec, wfdb.MultiRecord):
        names = [f for seg in rec.segments if seg is not None for f in (seg.file_name or []) if f != "~"]
    else:
        names = rec.file_name or []
    return {name: (header.parent / name).is_file() for name in dict.fromkeys(names)}


def read_physionet2018(
    path: str | Path,
    channel_map: dict[str, str] | None = None,
    *,
    load_signals: bool = True,
    all_channels: bool = False,
    require_modality_channel: bool = True,
) -> Recording:
    """Read a WFDB record (folder or `.hea`): signals in µV, modality map, labels, age and sex.

    `load_signals=False` reads the header only (channels with empty data and a known length; the
    signal file may be absent). Only the channels chosen for the four modalities are kept unless
    `all_channels`. Labels come from `<name>-arousal.mat`, else `<name>.arousal`, else None.
    Multi-segment and multi-frequency records read as one recording (each signal at its own rate);
    an uncalibrated signal (ADC gain 0 or missing) is left out with a note (`Recording.notes`).
    """
    header = resolve_header(path)
    rec, specs = read_header(header)
    headers = {
        s.name: HeaderChannel(s.name, np.empty(0), s.fs, s.unit, s.limits, s.step, n_samples=s.n_samples)
        for s in specs
    }
    if len(headers) != len(specs):
        raise RecordError(f"{header}: duplicate signal names in {[s.name for s in specs]}; names must be unique")
    calibration = {s.name: s.problem for s in specs if s.problem}
    modality_channels, notes = choose_modalities(headers, channel_map, where=str(header), calibration=calibration)
    if require_modality_channel:
        require_modality(modality_channels, headers, where=str(header), notes=notes)
    chosen = set(modality_channels.values())
    keep = [s.name for s in specs if (all_channels or s.name in chosen) and not (load_signals and s.name in calibration)]

    signals = read_signals(header, rec, keep) if load_signals else {}
    channels: dict[str, Channel] = {}
    for name in keep:
        channels[name] = headers[name] if name in calibration else make_channel(
            headers[name], signals[name] if load_signals else None, where=f"{header}: channel {name!r}",
            required=name in chosen)

    n_frames, frame_fs = record_length(header, (rec, specs))
    age, sex = _age_sex_of(header, rec.record_name)
    return Recording(
        name=rec.record_name,
        channels=channels,
        modality_channels=modality_channels,
        labels=read_record_labels(header, n_samples=n_frames, fs=frame_fs, missing_ok=True),
        age=age,
        sex=sex,
        source=header,
        notes=notes,
        unusable=calibration,
    )


def _age_sex_of(header: Path, name: str) -> tuple[float | None, str | None]:
    """(age, sex) of a record from the data set root's age-sex.csv (the root holds the record folder)."""
    for root in (header.parent.parent, header.parent):
        table = read_age_sex(root)
        if table:
            return table.get(name, (None, None))
    return None, None


# ----------------------------------------------------------------------------------------- labels


def label_files(header: Path) -> list[Path]:
    """The label files next to a header, preferred first."""
    stem = header.with_suffix("")
    candidates = [stem.parent / f"{stem.name}-arousal.mat", stem.parent / f"{stem.name}.arousal"]
    return [p for p in candidates if p.is_file()]


def read_record_labels(
    path: str | Path, *, n_samples: int | None = None, fs: float | None = None, missing_ok: bool = False
) -> Labels | None:
    """Labels of a record (folder or `.hea`) from the label files next to its header."""
    header = resolve_header(path)
    if n_samples is None or fs is None:
        n_samples, fs = record_length(header)
    files = label_files(header)
    if not files:
        if missing_ok:
            return None
        raise RecordError(
            f"{header}: no label file next to it; expected {header.stem}-arousal.mat or {header.stem}.arousal"
        )
    if files[0].suffix == ".mat":
        labels = read_arousal_mat(files[0], fs=fs)
        if n_samples and len(labels.stages) != n_samples // int(round(EPOCH_SECONDS * fs)):
            raise RecordError(
                f"{files[0]}: covers {len(labels.stages)} epochs but {header.name} has {n_samples} samples; "
                "the label file belongs to another record"
            )
        return labels
    return read_arousal_annotations(files[0], n_samples=n_samples or None, fs=fs)


def read_arousal_mat(path: str | Path, fs: float | None = None) -> Labels:
    """Labels from a challenge `-arousal.mat` (HDF5): stages at epoch midpoints, +1 regions as arousals.

    `fs` defaults to the `.hea` next to the file, else to the challenge's 200 Hz.
    """
    path = Path(path)
    if fs is None:
        header = path.parent / (path.name[: -len("-arousal.mat")] + ".hea")
        fs = float(_read_header(header).fs) if header.is_file() else CHALLENGE_FS
    try:
        with h5py.File(path, "r") as f:
            arousals = np.ravel(f["data/arousals"][()])  # [n_samples] -1 / 0 / +1
            onehot = {key: np.ravel(f[f"data/sleep_stages/{key}"][()]) for key in STAGE_DATASETS}
    except KeyError as error:
        raise RecordError(
            f"{path}: missing dataset ({error}); expected data/arousals and data/sleep_stages/"
            f"{{{','.join(STAGE_DATASETS)},undefined}}"
        ) from None
    except OSError as error:
        raise RecordError(f"{path}: not a readable MATLAB v7.3 (HDF5) label file ({error})") from None
    n = len(arousals)
    if any(len(v) != n for v in onehot.values()):
        raise RecordError(f"{path}: stage arrays and data/arousals differ in length; the file is corrupt")
    stage_per_sample = np.full(n, STAGE_UNDEFINED, np.int8)  # [n_samples]
    for code, key in enumerate(STAGE_DATASETS):
        stage_per_sample[onehot[key] != 0] = code
    regions = regions_from_mask(arousals == 1)  # [K, 2] samples
    return Labels(
        stages=stages_from_sample_labels(stage_per_sample, fs),
        arousal_regions_s=regions / fs,
        source=str(path),
    )


def read_arousal_annotations(path: str | Path, n_samples: int | None = None, fs: float | None = None) -> Labels:
    """Labels from a challenge `.arousal` WFDB annotation file (sample-0 notes included).

    `n_samples` and `fs` default to the `.hea` next to the file, then (fs) to the file's time
    resolution; without a header the labels end at the last annotation.
    """
    path = Path(path)
    annotations, file_fs = read_annotations(path)
    header = path.with_suffix(".hea")
    if (n_samples is None or fs is None) and header.is_file():
        length, header_fs = record_length(header)
        n_samples = length if n_samples is None and length else n_samples
        fs = header_fs if fs is None else fs
    fs = fs or file_fs
    if not fs:
        raise RecordError(
            f"{path}: no '## time resolution' note and no header next to it; the sampling rate is unknown "
            "(put the record's .hea next to it)"
        )
    notes = [a for a in annotations if a.code == NOTE]
    if n_samples is None:
        n_samples = max((a.sample for a in notes), default=0) + 1
    per = int(round(EPOCH_SECONDS * fs))
    stage_notes = sorted(((a.sample, STAGE_NOTES[a.aux]) for a in notes if a.aux in STAGE_NOTES), key=lambda n: n[0])
    stages = stages_at_midpoints(stage_notes, n_samples // per, per)
    mask = arousal_labels_from_annotations(notes, stage_notes, n_samples, fs)
    return Labels(stages=stages, arousal_regions_s=regions_from_mask(mask == 1) / fs, source=str(path))


def stages_at_midpoints(stage_notes: list[tuple[int, int]], n_epochs: int, per: int) -> np.ndarray:
    """Stage per epoch: the last stage note at or before the epoch midpoint; undefined before the first."""
    stages = np.full(n_epochs, STAGE_UNDEFINED, np.int8)
    if not stage_notes:
        return stages
    samples = np.array([s for s, _ in stage_notes], np.int64)  # sorted
    codes = np.array([c for _, c in stage_notes], np.int8)
    mids = np.arange(n_epochs) * per + per // 2  # [n_epochs]
    idx = np.searchsorted(samples, mids, side="right") - 1  # last note at or before each midpoint
    stages[idx >= 0] = codes[idx[idx >= 0]]
    return stages


def paired_events(notes: list[Annotation]) -> list[tuple[str, int, int]]:
    """(name, onset, offset) of '(name' ... 'name)' note pairs, in onset order; unclosed ones are dropped."""
    open_at: dict[str, list[int]] = {}
    events = []
    for note in notes:
        text = note.aux.strip()
        if text.startswith("(") and len(text) > 1:
            open_at.setdefault(text[1:], []).append(note.sample)
        elif text.endswith(")") and open_at.get(text[:-1]):
            events.append((text[:-1], open_at[text[:-1]].pop(0), note.sample))
    return sorted(events, key=lambda e: e[1])


def arousal_labels_from_annotations(
    notes: list[Annotation], stage_notes: list[tuple[int, int]], n_samples: int, fs: float
) -> np.ndarray:
    """The challenge's per-sample arousal array (+1 target, 0, -1 not scored) in `.mat` indexing: [n_samples]."""
    labels = np.zeros(n_samples, np.int8)
    before, after, pad = (int(round(s * fs)) for s in (AROUSAL_BEFORE_S, AROUSAL_AFTER_S, UNSCORED_PAD_S))

    def put(first: int, last: int, value: int) -> None:  # annotation samples, both included
        labels[max(first - 1, 0) : max(min(last, n_samples), 0)] = value  # .mat index = sample - 1

    events = paired_events(notes)
    for name, onset, offset in events:
        if name.startswith("arousal"):
            put(onset - before, offset + after, 1)
    for name, onset, offset in events:
        if name.startswith("resp"):
            put(onset - pad, offset + pad, -1)
    for i, (start, code) in enumerate(stage_notes):
        if code == STAGE_NOTES["W"]:
            stop = stage_notes[i + 1][0] if i + 1 < len(stage_notes) else n_samples + 1
            put(start - pad - 1, stop - 1 + pad, -1)
    return labels
