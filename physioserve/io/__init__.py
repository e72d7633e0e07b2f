"""Readers: raw files -> `Recording` (signals in µV, modality map, labels) or `Labels` alone.

Accepted inputs:
  - a PhysioNet/CinC 2018 record: its folder (`<name>/<name>.hea`) or its `.hea` (signals in `.mat`
    or `.dat`; labels from `<name>-arousal.mat` or `<name>.arousal` next to it);
  - an EDF, EDF+ (C or D) or BDF file (`.edf`, `.bdf`, any case);
  - for labels alone: `<name>-arousal.mat`, an expert hypnogram in any format `hypnogram.FORMATS`
    lists (`.arousal`, `.st`, `.hyp`, EDF+ annotations, CSV/TXT, DREAMS), or any of the above.
"""

from __future__ import annotations

from pathlib import Path

from ..modalities import parse_channel_map
from ..recording import Labels, Recording
from .common import HeaderChannel, n_samples_of
from .edf import EDF_SUFFIXES, read_edf, read_edf_labels
from .errors import RecordError
from .hypnogram import FORMATS as HYPNOGRAM_FORMATS
from .hypnogram import TEXT_SUFFIXES, WFDB_SUFFIXES, Hypnogram, read_hypnogram
from .physionet2018 import (
    find_records,
    read_age_sex,
    read_arousal_mat,
    read_physionet2018,
    read_record_labels,
)

__all__ = [
    "RecordError",
    "HeaderChannel",
    "n_samples_of",
    "read_recording",
    "read_labels",
    "read_hypnogram",
    "Hypnogram",
    "HYPNOGRAM_FORMATS",
    "find_records",
    "read_age_sex",
    "is_label_file",
    "ACCEPTED_INPUTS",
]

ACCEPTED_INPUTS = "a PhysioNet 2018 record folder or .hea file, or an .edf/.bdf file"
ACCEPTED_LABEL_INPUTS = (
    "a <name>-arousal.mat, a WFDB annotation file (.arousal, .st, .hyp), an EDF+ annotation file, a CSV/TXT or "
    "DREAMS hypnogram, or " + ACCEPTED_INPUTS
)


def is_label_file(path: str | Path, *, text: bool = False) -> bool:
    """Whether `path` names a label file alone: `-arousal.mat` or a WFDB annotation file (`.arousal`, `.st`,
    `.hyp`); with `text`, also a text hypnogram (`.csv`, `.tsv`, `.txt`). EDF+ hypnograms are EDF files."""
    name = Path(path).name.lower()
    return name.endswith(("-arousal.mat", *WFDB_SUFFIXES, *(TEXT_SUFFIXES if text else ())))


def _kind(path: Path) -> str:
    """'physionet2018' or 'edf'; raises naming the accepted inputs otherwise."""
    if not path.exists():
        raise RecordError(f"{path}: no such file or folder; give {ACCEPTED_INPUTS}")
    if path.is_dir() or path.suffix.lower() == ".hea":
        return "physionet2018"
    if path.suffix.lower() in EDF_SUFFIXES:
        return "edf"
    if is_label_file(path):
        raise RecordError(f"{path}: is a label file; inspect it with `physioserve inspect`, or give the record "
                          f"({ACCEPTED_INPUTS})")
    if path.suffix.lower() in (".mat", ".dat"):
        raise RecordError(f"{path}: is a WFDB signal file; give the .hea next to it (or its folder)")
    if path.suffix.lower() in (".atr", ".ann", ".qrs", ".ecg"):
        raise RecordError(f"{path}: is a WFDB annotation file (beats or events, no signals); give the record's .hea")
    if path.suffix.lower() in (".gz", ".bz2", ".xz", ".zip", ".7z"):
        raise RecordError(f"{path}: is compressed; unpack it first (e.g. gunzip), then give the .edf/.bdf or the .hea")
    raise RecordError(f"{path}: unknown file type {path.suffix or '(no extension)'!r}; give {ACCEPTED_INPUTS}")


def read_recording(
    path: str | Path,
    channel_map: dict[str, str] | str | None = None,
    *,
    load_signals: bool = True,
    all_channels: bool = False,
    require_modality: bool = True,
    fill_gaps: bool = False,
    labels_path: str | Path | None = None,
) -> Recording:
    """Read one recording: signals in µV (voltage channels), the modality map, labels, age/sex.

    channel_map: {modality: channel} (or 'eeg=C4-A1,eog=EOG(L)') overriding the channel patterns.
    load_signals=False: header only; channels have empty data and a known length (`HeaderChannel`).
    all_channels: keep every channel, not only the ones chosen for the four modalities.
    require_modality: raise when no channel maps to EEG/EOG/EMG/ECG (off for inspection).
    fill_gaps: EDF+D only, fill gaps between data records with 0 µV instead of raising.
    labels_path: read labels from this file instead (e.g. a Sleep-EDF hypnogram next to its PSG).
    """
    path = Path(path)
    override = parse_channel_map(channel_map) if isinstance(channel_map, str) else channel_map
    options = dict(load_signals=load_signals, all_channels=all_channels, require_modality_channel=require_modality)
    if _kind(path) == "edf":
        recording = read_edf(path, override, fill_gaps=fill_gaps, **options)
    else:
        recording = read_physionet2018(path, override, **options)
    if labels_path is not None:
        recording.labels = read_labels(labels_path)
    return recording


def read_labels(path: str | Path) -> Labels:
    """Labels from a label file alone (`-arousal.mat`, a hypnogram in any `HYPNOGRAM_FORMATS`) or a record.

    Hypnograms come back as `Hypnogram` (a `Labels` that also says how the file was read).
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith("-arousal.mat"):
        return read_arousal_mat(path) if path.is_file() else _missing(path)
    if is_label_file(path, text=True):
        return read_hypnogram(path) if path.is_file() else _missing(path)
    try:
        kind = _kind(path)
    except RecordError as error:
        raise RecordError(f"{error} (for labels: {ACCEPTED_LABEL_INPUTS})") from None
    if kind == "edf":
        return read_edf_labels(path)
    return read_record_labels(path)


def _missing(path: Path) -> Labels:
    raise RecordError(f"{path}: no such file")
