"""EDF, EDF+ (continuous and discontinuous) and BDF files, read with edfio.

Signals come in physical units from the header; voltage channels are converted to µV from their
physical dimension. Channels may run at different rates. Channel names map to modalities through
`modalities.map_channels` (the alias table, or the user's override).

EDF+ annotations become labels: `Sleep stage W/1/2/3/4/R/?` (also `N1`, `N2`, `N3`, `REM`, `Wake`;
stage 4 -> N3; `?` and `Movement time` -> undefined) on the 30 s grid from the recording start, read
at each epoch's midpoint (an annotation with a duration covers its span; one without holds until the
next stage annotation), and arousals (`Arousal`, `EEG arousal`, `arousal_*`, or `(name` ... `name)`
pairs) -> arousal regions.

EDF+D: data records with gaps between them are placed at their true times only when
`fill_gaps=True` (the gaps become 0 µV); by default a gap is an error that says so.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import edfio
import numpy as np

from ..modalities import EPOCH_SECONDS, STAGE_UNDEFINED
from ..recording import Channel, Labels, Recording
from .common import HeaderChannel, choose_modalities, require_modality, stages_from_intervals, to_microvolts
from .errors import RecordError

EDF_SUFFIXES = (".edf", ".bdf")
HEADER_ENCODING = "latin-1"  # the spec says ASCII; 'µV' written as latin-1 is common, and latin-1 never fails

_STAGE = re.compile(r"^sleep[\s_]*stage[\s_]*(?P<stage>.+?)$", re.IGNORECASE)
_STAGE_CODES: dict[str, int] = {
    "w": 0, "wake": 0,
    "1": 1, "n1": 1,
    "2": 2, "n2": 2,
    "3": 3, "n3": 3, "4": 3, "n4": 3,
    "r": 4, "rem": 4,
    "?": STAGE_UNDEFINED, "u": STAGE_UNDEFINED, "unknown": STAGE_UNDEFINED, "unscored": STAGE_UNDEFINED,
}
_UNDEFINED_TEXTS = {"movement time", "movement"}
_RECORD_COUNT = re.compile(r"indicates (?P<header>-?\d+) data records")  # edfio's warning on a count mismatch
_AROUSAL = re.compile(r"(^|[\s_(])arousal", re.IGNORECASE)


def read_edf(
    path: str | Path,
    channel_map: dict[str, str] | None = None,
    *,
    load_signals: bool = True,
    all_channels: bool = False,
    require_modality_channel: bool = True,
    fill_gaps: bool = False,
) -> Recording:
    """Read an EDF/EDF+/BDF file: signals in µV, modality map and labels from its annotations.

    `load_signals=False` reads the header and annotations only (channels with empty data and a known
    length). Only the channels chosen for the four modalities are kept unless `all_channels`. An
    annotation-only file (no signals) needs `require_modality_channel=False`.
    """
    path = Path(path)
    edf = _open(path)
    onsets = _record_onsets(edf, path, fill_gaps=fill_gaps or not load_signals)  # None unless gaps
    record_s = _span_s(edf, onsets)

    headers: dict[str, HeaderChannel] = {}
    for signal in edf.signals:
        name = _unique(signal.label.strip(), headers)
        fs = float(signal.sampling_frequency)
        if onsets is None:
            n = int(signal.samples_per_data_record * edf.num_data_records)
        else:
            n = int(round(record_s * fs))
        headers[name] = HeaderChannel(name, np.empty(0), fs, signal.physical_dimension.strip(), n)
    modality_channels = choose_modalities(headers, channel_map, where=str(path))
    if require_modality_channel:
        require_modality(modality_channels, headers, where=str(path))
    chosen = set(modality_channels.values())

    channels: dict[str, Channel] = {}
    for signal, (name, head) in zip(edf.signals, headers.items()):
        if not (all_channels or name in chosen):
            continue
        where = f"{path}: channel {name!r}"
        if load_signals:
            data = np.asarray(signal.data, np.float64)
            if onsets is not None:
                data = _place_records(data, signal, onsets, edf.data_record_duration, head.n_samples)
            data, unit = to_microvolts(data, head.unit, where=where, required=name in chosen)
            channels[name] = Channel(name=name, data=data, fs=head.fs, unit=unit)
        else:
            _, unit = to_microvolts(np.empty(0), head.unit, where=where, required=name in chosen)
            channels[name] = HeaderChannel(name, np.empty(0), head.fs, unit, head.n_samples)

    return Recording(
        name=_record_name(path),
        channels=channels,
        modality_channels=modality_channels,
        labels=labels_from_annotations(edf.annotations, record_s if edf.signals else None, source=str(path)),
        source=path,
    )


def read_edf_labels(path: str | Path) -> Labels:
    """Labels of an EDF+ file (a hypnogram / annotation-only file, or a recording with annotations)."""
    path = Path(path)
    edf = _open(path)
    record_s = _span_s(edf, _record_onsets(edf, path, fill_gaps=True)) if edf.signals else None
    labels = labels_from_annotations(edf.annotations, record_s, source=str(path))
    if labels is None:
        texts = sorted({a.text for a in edf.annotations})[:8]
        raise RecordError(
            f"{path}: no sleep stage or arousal annotations (found: {', '.join(texts) or 'no annotations'}); "
            "expected e.g. 'Sleep stage W', 'Sleep stage N2', 'Arousal'"
        )
    return labels


# ----------------------------------------------------------------------------------------- labels


def stage_code(text: str) -> int | None:
    """Stage code of an annotation text ('Sleep stage 4' -> 3, 'Sleep stage ?' -> 5), None if not a stage."""
    text = _strip_channel(text).strip()
    if text.casefold() in _UNDEFINED_TEXTS:
        return STAGE_UNDEFINED
    match = _STAGE.match(text)
    return None if match is None else _STAGE_CODES.get(match["stage"].strip().casefold())


def is_arousal(text: str) -> bool:
    """Whether an annotation marks an arousal ('Arousal', 'EEG arousal', 'arousal_rera')."""
    return bool(_AROUSAL.search(_strip_channel(text)))


def labels_from_annotations(
    annotations: tuple[edfio.EdfAnnotation, ...] | list[edfio.EdfAnnotation],
    record_s: float | None,
    *,
    source: str = "",
) -> Labels | None:
    """Stage per 30 s epoch and arousal regions from EDF+ annotations; None when there are neither.

    `record_s` is the recording length (None for an annotation-only file: the labels then end where
    the last stage annotation ends).
    """
    stage_ann = [(a.onset, a.duration, code) for a in annotations if (code := stage_code(a.text)) is not None]
    stage_ann.sort(key=lambda item: item[0])
    intervals = []
    for i, (onset, duration, code) in enumerate(stage_ann):
        if duration:
            stop = onset + duration
        elif i + 1 < len(stage_ann):
            stop = stage_ann[i + 1][0]
        else:
            stop = record_s if record_s is not None else onset + EPOCH_SECONDS
        intervals.append((onset, stop, code))
    regions = _arousal_regions(annotations)
    if not intervals and not len(regions):
        return None
    if record_s is None:
        end = max([stop for _, stop, _ in intervals] + [float(r[1]) for r in regions])
        n_epochs = int(np.ceil(end / EPOCH_SECONDS - 1e-9))
    else:
        n_epochs = int(np.floor(record_s / EPOCH_SECONDS + 1e-9))
    stages = stages_from_intervals(intervals, n_epochs, EPOCH_SECONDS, STAGE_UNDEFINED)
    return Labels(stages=stages, arousal_regions_s=regions, source=source)


def _arousal_regions(annotations) -> np.ndarray:
    """[K, 2] seconds: arousal annotations with their duration, and '(name' ... 'name)' pairs."""
    regions: list[tuple[float, float]] = []
    open_at: dict[str, list[float]] = {}
    for a in sorted(annotations, key=lambda a: a.onset):
        text = _strip_channel(a.text).strip()
        if not is_arousal(text):
            continue
        if text.startswith("(") and len(text) > 1:
            open_at.setdefault(text[1:], []).append(a.onset)
        elif text.endswith(")") and open_at.get(text[:-1]):
            regions.append((open_at[text[:-1]].pop(0), a.onset))
        elif not text.endswith(")"):
            regions.append((a.onset, a.onset + (a.duration or 0.0)))
    return np.array(sorted(regions), float).reshape(-1, 2)


def _strip_channel(text: str) -> str:
    """Drop the '@@channel' suffix some writers append to annotation texts."""
    return text.split("@@", 1)[0]


# ---------------------------------------------------------------------------------------- signals


def _open(path: Path) -> edfio.Edf:
    """Open with edfio (EDF signals load lazily, when touched); a truncated or bad file is a `RecordError`."""
    if not path.is_file():
        raise RecordError(f"{path}: no such file")
    is_bdf = path.suffix.lower() == ".bdf"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            if is_bdf:
                edf = edfio.read_bdf(path, header_encoding=HEADER_ENCODING)
            else:
                edf = edfio.read_edf(path, lazy_load_data=True, header_encoding=HEADER_ENCODING)
        except Exception as error:  # edfio raises ValueError, UnicodeError, struct/IndexError on bad files
            kind = "BDF" if is_bdf else "EDF"
            raise RecordError(f"{path}: not a readable {kind} file ({type(error).__name__}: {error})") from None
    for warning in caught:
        text = str(warning.message)
        counts = _RECORD_COUNT.search(text)
        if "truncated" in text or (counts and counts["header"] != "-1"):
            raise RecordError(f"{path}: {text} The file is truncated or its header is wrong; re-export it.")
    return edf


def _span_s(edf: edfio.Edf, onsets: np.ndarray | None) -> float:
    """Seconds from the recording start to the end of its last data record (gaps included)."""
    if onsets is None:
        return edf.num_data_records * edf.data_record_duration
    return float(onsets[-1] + edf.data_record_duration)


def _record_onsets(edf: edfio.Edf, path: Path, *, fill_gaps: bool) -> np.ndarray | None:
    """Start time (s) of each data record for an EDF+D file with gaps, else None (records back to back)."""
    if edf.is_continuous:
        return None
    onsets = _timekeeping_onsets(path, edf.num_data_records)  # [n_records]
    expected = onsets[0] + np.arange(len(onsets)) * edf.data_record_duration
    if np.any(np.diff(onsets) < edf.data_record_duration - 1e-9):
        raise RecordError(f"{path}: EDF+D data records overlap or are out of order; the file is corrupt")
    gaps = onsets - expected
    if not fill_gaps:
        first = int(np.flatnonzero(gaps > 1e-9)[0])
        raise RecordError(
            f"{path}: EDF+D with gaps between data records (first at {expected[first]:g} s, "
            f"{gaps[-1]:g} s missing in total); split the file at its gaps, or read it with "
            "fill_gaps=True to fill them with 0 µV"
        )
    return onsets - onsets[0]


def _timekeeping_onsets(path: Path, n_records: int) -> np.ndarray:
    """Onset (s) of every data record: the first TAL of the first annotation signal, read from the raw file.

    Layout (EDF spec): 256-byte main header with the signal count at bytes 252-256, then per-signal
    fields, of which labels (16 bytes each) come first and samples-per-record (8 bytes each) at offset
    216 * ns; data records follow the header, 2 bytes per sample (3 in BDF).
    """
    with path.open("rb") as f:
        main = f.read(256)
        header_bytes, ns = int(main[184:192]), int(main[252:256])
        fields = f.read(header_bytes - 256)
    labels = [fields[16 * i : 16 * (i + 1)].decode("latin-1").strip() for i in range(ns)]
    per_record = [int(fields[216 * ns + 8 * i : 216 * ns + 8 * (i + 1)]) for i in range(ns)]
    width = 3 if path.suffix.lower() == ".bdf" else 2
    j = next(i for i, label in enumerate(labels) if label in ("EDF Annotations", "BDF Annotations"))
    start, stop = width * sum(per_record[:j]), width * sum(per_record[: j + 1])
    data = np.memmap(path, np.uint8, "r", offset=header_bytes, shape=(n_records, width * sum(per_record)))
    onsets = [float(bytes(data[k, start:stop]).split(b"\x14", 1)[0]) for k in range(n_records)]
    return np.array(onsets)  # [n_records]


def _place_records(data: np.ndarray, signal, onsets: np.ndarray, record_s: float, n_total: int) -> np.ndarray:
    """Put each data record's samples at its true time; gaps stay 0: [n_total]."""
    per = int(signal.samples_per_data_record)
    out = np.zeros(n_total)
    for k, onset in enumerate(onsets):
        start = int(round(onset * signal.sampling_frequency))
        out[start : start + per] = data[k * per : (k + 1) * per]
    return out


def _unique(name: str, taken: dict) -> str:
    """`name`, or `name (2)`, `name (3)`... when a file repeats a label."""
    if name not in taken:
        return name
    k = 2
    while f"{name} ({k})" in taken:
        k += 1
    return f"{name} ({k})"


def _record_name(path: Path) -> str:
    return path.name[: -len(path.suffix)] if path.suffix else path.name
