"""EDF, EDF+ (continuous and discontinuous) and BDF files, read with edfio.

Signals come in physical units from the header; voltage channels are converted to µV from their
physical dimension. Channels may run at different rates. Channel names map to modalities through
`modalities.map_channels` (the channel patterns, or the user's override).

EDF+ annotations become labels: `Sleep stage W/1/2/3/4/R/?` (also `N1`, `N2`, `N3`, `REM`, `Wake`;
stage 4 -> N3; `?` and `Movement time` -> undefined) on the 30 s grid from the recording start, read
at each epoch's midpoint (an annotation with a duration covers its span; one without holds until the
next stage annotation), and arousals (`Arousal`, `EEG arousal`, `arousal_*`, or `(name` ... `name)`
pairs) -> arousal regions.

EDF+D: data records whose onsets are back to back within a tenth of a sample read as continuous;
with real gaps between them they are placed at their true times only when `fill_gaps=True` (the
gaps hold NaN: missing data, masked per window); by default a gap is an error that says so.
A data-record duration of 0 is refused unless the file holds annotations only (EDF+ spec).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import edfio
import numpy as np

from ..modalities import EPOCH_SECONDS, STAGE_UNDEFINED
from ..recording import Channel, Labels, Recording
from .common import HeaderChannel, choose_modalities, make_channel, require_modality, stages_from_intervals
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
    annotation-only file (no signals) needs `require_modality_channel=False`. A channel whose
    calibration cannot be computed from its header (physical or digital range degenerate or not a
    number) is never read: it is left out of the modality map with a note (`Recording.notes`).
    `fill_gaps`: EDF+D records are placed at their onsets and the gaps hold NaN (missing data).
    """
    path = Path(path)
    edf = _open(path)
    max_fs = max((float(s.sampling_frequency) for s in edf.signals), default=0.0)
    onsets, gaps = _record_onsets(edf, path, max_fs, fill_gaps=fill_gaps or not load_signals)  # None unless gaps
    record_s = _span_s(edf, onsets)

    headers: dict[str, HeaderChannel] = {}
    calibration: dict[str, str] = {}
    ranges: dict[str, tuple[float, float, float, float]] = {}
    kind = "BDF" if path.suffix.lower() == ".bdf" else "EDF"
    for signal, fields in zip(edf.signals, _signal_fields(path)):
        name = _unique(signal.label.strip(), headers)
        fs = float(signal.sampling_frequency)
        if onsets is None:
            n = int(signal.samples_per_data_record * edf.num_data_records)
        else:
            n = int(round(record_s * fs))
        scale, problem = calibration_of(fields, kind)
        limits = step = None
        if problem is None:
            ranges[name] = scale
            limits, step = (scale[0], scale[1]), (scale[1] - scale[0]) / (scale[3] - scale[2])
        headers[name] = HeaderChannel(name, np.empty(0), fs, signal.physical_dimension.strip(), limits, step, n_samples=n)
        if problem is not None:
            calibration[name] = problem
    modality_channels, notes = choose_modalities(headers, channel_map, where=str(path), calibration=calibration)
    if require_modality_channel:
        require_modality(modality_channels, headers, where=str(path), notes=notes)
    chosen = set(modality_channels.values())

    channels: dict[str, Channel] = {}
    for signal, (name, head) in zip(edf.signals, headers.items()):
        if not (all_channels or name in chosen) or (load_signals and name in calibration):
            continue
        if name in calibration:  # header only (inspect): shown with its problem, never read
            channels[name] = head
            continue
        data = None
        if load_signals:
            data = _physical(signal.digital, ranges[name])
            if onsets is not None:
                data = _place_records(data, signal, onsets, head.n_samples)
        channels[name] = make_channel(head, data, where=f"{path}: channel {name!r}", required=name in chosen)
    if gaps:
        notes.append(f"{len(gaps)} gap(s) between data records, {sum(d for _, d in gaps):g} s in all (first at "
                     f"{gaps[0][0]:g} s for {gaps[0][1]:g} s); windows in a gap are missing data")

    return Recording(
        name=_record_name(path),
        channels=channels,
        modality_channels=modality_channels,
        labels=labels_from_annotations(edf.annotations, record_s if edf.signals else None, source=str(path)),
        source=path,
        notes=notes,
        unusable={**calibration},
        gaps_s=gaps,
    )


def calibration_of(fields: dict[str, str], kind: str = "EDF") -> tuple[tuple[float, float, float, float] | None, str | None]:
    """((physical min, max, digital min, max), None), or (None, why no calibration can be computed).

    Physical = physical min + (digital - digital min) x (physical max - physical min) / (digital max -
    digital min) (EDF spec): all four fields must be numbers and neither range may be empty.
    """
    values = []
    for field in ("physical minimum", "physical maximum", "digital minimum", "digital maximum"):
        text = fields[field]
        try:
            value = float(text)
        except ValueError:
            return None, f"{kind} header field '{field}' is {text!r}, not a number; no calibration can be computed"
        if not np.isfinite(value):
            return None, f"{kind} header field '{field}' is {text!r}; no calibration can be computed"
        values.append(value)
    for kind_of, (low, high) in (("physical", values[:2]), ("digital", values[2:])):
        if low == high:
            return None, (f"{kind} header fields '{kind_of} minimum' and '{kind_of} maximum' are both {low:g}; "
                          "no calibration can be computed")
    return tuple(values), None


def _physical(digital: np.ndarray, scale: tuple[float, float, float, float]) -> np.ndarray:
    """Digital counts -> physical values (EDF spec; edfio would return counts for a range it cannot parse)."""
    pmin, pmax, dmin, dmax = scale
    return pmin + (np.asarray(digital, np.float64) - dmin) * ((pmax - pmin) / (dmax - dmin))


def _signal_fields(path: Path) -> list[dict[str, str]]:
    """The calibration fields of each ordinary signal (annotation signals left out), as written in the header.

    Header layout (EDF spec): 256-byte main header, then per field one block of ns entries: label 16,
    transducer 80, physical dimension 8, physical min 8, physical max 8, digital min 8, digital max 8...
    """
    with path.open("rb") as f:
        main = f.read(256)
        ns = int(main[252:256].decode("latin-1"))
        block = f.read(ns * 136)
    labels = [block[16 * i : 16 * (i + 1)].decode("latin-1").strip() for i in range(ns)]
    out = []
    names = ("physical minimum", "physical maximum", "digital minimum", "digital maximum")
    for i, label in enumerate(labels):
        if label in ("EDF Annotations", "BDF Annotations"):
            continue
        out.append({name: block[ns * (104 + 8 * k) + 8 * i : ns * (104 + 8 * k) + 8 * (i + 1)].decode("latin-1").strip()
                    for k, name in enumerate(names)})
    return out


def read_edf_labels(path: str | Path) -> Labels:
    """Labels of an EDF+ file (a hypnogram / annotation-only file, or a recording with annotations)."""
    path = Path(path)
    edf = _open(path)
    max_fs = max((float(s.sampling_frequency) for s in edf.signals), default=0.0)
    record_s = _span_s(edf, _record_onsets(edf, path, max_fs, fill_gaps=True)[0]) if edf.signals else None
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
    _check_record_duration(path, "BDF" if is_bdf else "EDF")
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


def _check_record_duration(path: Path, kind: str) -> None:
    """Refuse a data-record duration of 0 when the file holds signals (EDF spec: annotation-only files only).

    Header layout: 'duration of a data record' at bytes 244-252, the signal count at 252-256, then
    16-byte labels; edfio cannot open such a file (it divides by the duration).
    """
    with path.open("rb") as f:
        main = f.read(256)
        try:
            duration, ns = float(main[244:252].decode("latin-1")), int(main[252:256].decode("latin-1"))
        except ValueError:
            return  # edfio names the bad field
        labels = [f.read(16).decode("latin-1").strip() for _ in range(max(ns, 0))]
    signals = [label for label in labels if label not in ("EDF Annotations", "BDF Annotations")]
    if duration <= 0 and signals:
        raise RecordError(
            f"{path}: {kind} header field 'duration of a data record' is {duration:g} s, but the file holds "
            f"{len(signals)} signal(s) ({', '.join(signals[:4])}{', ...' if len(signals) > 4 else ''}); a duration "
            "of 0 is only allowed in annotation-only files, so the sampling rates cannot be known. Re-export "
            "the file with its true record duration"
        )


def _span_s(edf: edfio.Edf, onsets: np.ndarray | None) -> float:
    """Seconds from the recording start to the end of its last data record (gaps included)."""
    if onsets is None:
        return edf.num_data_records * edf.data_record_duration
    return float(onsets[-1] + edf.data_record_duration)


def _record_onsets(
    edf: edfio.Edf, path: Path, max_fs: float, *, fill_gaps: bool
) -> tuple[np.ndarray | None, list[tuple[float, float]]]:
    """(onset of each data record relative to the first, or None when back to back; gaps as (start, s)).

    Onsets are compared with back-to-back times within a tenth of a sample at the fastest rate:
    writers that accumulate floats print onsets such as +8192.202311999999 for 8192.202312.
    """
    if edf.is_continuous:
        return None, []
    onsets = _timekeeping_onsets(path, edf.num_data_records)  # [n_records]
    onsets = onsets - onsets[0]
    duration = edf.data_record_duration
    tolerance = 0.1 / max_fs if max_fs > 0 else 1e-6
    steps = np.diff(onsets)  # [n_records - 1]
    if np.any(steps < duration - tolerance):
        k = int(np.flatnonzero(steps < duration - tolerance)[0]) + 1
        raise RecordError(
            f"{path}: EDF+D data record {k} starts at {onsets[k]:g} s, before the previous one ends "
            f"({onsets[k - 1] + duration:g} s): records overlap or are out of order; the file is corrupt, re-export it"
        )
    at = np.flatnonzero(steps > duration + tolerance)
    if not len(at):
        return None, []  # EDF+D whose records are back to back (within float noise): continuous
    gaps = [(float(onsets[k] + duration), float(steps[k] - duration)) for k in at]
    if not fill_gaps:
        raise RecordError(
            f"{path}: EDF+D with {len(gaps)} gap(s) between data records (first at {gaps[0][0]:g} s for "
            f"{gaps[0][1]:g} s, {sum(g for _, g in gaps):g} s missing in all); score it with the gaps as missing "
            "data (physioserve score --fill-gaps, or fill_gaps=true in /score's form), or split the file at its gaps"
        )
    return onsets, gaps


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


def _place_records(data: np.ndarray, signal, onsets: np.ndarray, n_total: int) -> np.ndarray:
    """Put each data record's samples at its true time; gaps hold NaN (missing data): [n_total]."""
    per = int(signal.samples_per_data_record)
    out = np.full(n_total, np.nan)
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
