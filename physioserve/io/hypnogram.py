"""Expert hypnograms in the formats real files use -> `Hypnogram` (a `Labels`: stage per 30 s epoch).

`read_hypnogram` is the one entry point. Formats (`FORMATS`; `fmt=` forces one, else the content
decides, the suffix only as a hint):

- `edf`: EDF+ annotations (Sleep-EDF `*-Hypnogram.edf`), read by `edf.read_edf_labels`.
- `wfdb`: a WFDB annotation file, its kind told by the notes: PhysioNet 2018 `.arousal` (stage notes
  W N1 N2 N3 R, read by `physionet2018.read_arousal_annotations`), MIT-BIH slpdb `.st` (one note per
  30 s epoch, aux starting with the stage: W 1 2 3 4 R MT, then apnea codes, e.g. `4 LA`), Sleep-EDF
  `.hyp` (aux `Sleep_stage_X duration: N` in seconds). Read with `wfdb_annotations`, which keeps notes
  at sample 0 (`wfdb.rdann` loses the `.hyp` file's first run, W from 0 s to 30,630 s in SC4001E0).
- `csv`, `lines`, `numeric`, `dreams`: text files (`hypnogram_text`).

Every format ends on the 30 s grid of `hypnogram_grid` (R&K stages 3 and 4 are N3; movement time,
artefact and unscored epochs are undefined, which agreement leaves out). Epoch length: from the file
where it says (onsets, durations, WFDB sample times), else `epoch_s`, else inferred from the
recording's `n_epochs` (one stage per line), else 30 s; `notes` says which.

A lone WFDB annotation file cannot know where the recording ends: its epochs run to the last
annotation (its end, for `.st` and `.hyp` whose notes have a length), unless the record's header is
beside it (`<record>.hea`; for a Sleep-EDF `.hyp` also the `<record>` EDF itself): then the count
follows the header. `extent` says which.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import wfdb

from ..modalities import EPOCH_SECONDS
from .edf import EDF_SUFFIXES, read_edf, read_edf_labels
from .errors import RecordError
from .hypnogram_grid import N1, N2, N3, REM, UNDEFINED, W, Hypnogram, epochs_by_majority
from .hypnogram_text import (
    DREAMS_HEADER,
    NUMBER,
    SPELLINGS,
    is_text,
    numbers_only,
    read_text_hypnogram,
    spelling_key,
    split_header,
    text_lines,
)
from .physionet2018 import STAGE_NOTES, read_arousal_annotations
from .wfdb_annotations import NOTE, read_annotations

FORMATS: dict[str, str] = {
    "edf": "EDF+ annotations ('Sleep stage W/1/2/3/4/R/?', 'Movement time'), e.g. Sleep-EDF *-Hypnogram.edf",
    "wfdb": "WFDB annotation file: .arousal (PhysioNet 2018 stage notes), .st (MIT-BIH slpdb, one note per "
            "30 s epoch, e.g. '4 LA'), .hyp (Sleep-EDF, 'Sleep_stage_X duration: N')",
    "csv": "table with a header row: a stage column, optional epoch / onset (s) / duration (s) columns "
           "(epoch,onset_s,stage; Sleep_stage,duration)",
    "lines": "one spelled stage per line, no header (W, N1, S1, 1, N2, N3, N4, S4, R, REM, MT, ?, unscored)",
    "numeric": "one number per epoch: 0 W, 1 N1, 2 N2, 3 N3, 4 REM (PhysioNet 2018, YASA); other numbers undefined",
    "dreams": "DREAMS: a [Hypnogram] / [HypnogramR&K] / [HypnogramAASM] line, then one code per 5 s "
              "(5 W, 4 REM, 3 S1, 2 S2, 1 S3, 0 S4, -1 movement, -2/-3 unknown)",
}
WFDB_SUFFIXES = (".arousal", ".st", ".hyp")
TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
HYPNOGRAM_SUFFIXES = (*EDF_SUFFIXES, *WFDB_SUFFIXES, *TEXT_SUFFIXES)
SLPDB_EPOCH_S = 30.0  # MIT-BIH slpdb: one stage annotation per 30 s epoch (PhysioNet slpdb description)
SLPDB_STAGES: dict[str, int] = {"W": W, "1": N1, "2": N2, "3": N3, "4": N3, "R": REM, "MT": UNDEFINED}

_HYP_AUX = re.compile(r"^(?:sleep_stage_(?P<stage>\S+)|(?P<movement>movement_time))\s+duration:\s*(?P<s>[\d.]+)",
                      re.IGNORECASE)


def read_hypnogram(
    path: str | Path, *, epoch_s: float | None = None, n_epochs: int | None = None, fmt: str | None = None
) -> Hypnogram:
    """Read an expert hypnogram: stage per 30 s epoch from the recording start ([n] int8, `Labels` codes).

    epoch_s: seconds per line of a file that gives no times (beats inference; a file's own times win).
    n_epochs: the recording's length in 30 s epochs, to infer the epoch length of such files.
    fmt: one of `FORMATS` to skip detection. Raises `RecordError` (a `ValueError`) naming the file,
    the problem and the fix; never prints.
    """
    path = Path(path)
    if not path.is_file():
        raise RecordError(f"{path}: no such file; give an expert hypnogram ({', '.join(FORMATS)})")
    if fmt is not None and fmt not in FORMATS:
        raise RecordError(f"{path}: unknown hypnogram format {fmt!r}; accepted: {', '.join(FORMATS)}")
    if epoch_s is not None and not (math.isfinite(epoch_s) and epoch_s > 0):
        raise RecordError(f"{path}: epoch length {epoch_s!r} s must be a positive number of seconds")
    fmt = fmt or detect_format(path)
    if fmt == "edf":
        return _from_edf(path)
    if fmt == "wfdb":
        return _from_wfdb(path, epoch_s)
    return read_text_hypnogram(path, fmt, epoch_s, n_epochs)


def detect_format(path: str | Path) -> str:
    """The `FORMATS` key that fits a file's content (suffix as a hint); raises listing the formats."""
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(4096)
    if path.suffix.lower() in EDF_SUFFIXES or head.startswith((b"0       ", b"\xffBIOSEMI")):
        return "edf"
    if b"\0" in head or (path.suffix.lower() in WFDB_SUFFIXES and not is_text(head)):
        return "wfdb"
    lines = text_lines(path)
    if not lines:
        raise RecordError(f"{path}: empty file; an expert hypnogram has one stage per epoch ({_format_list()})")
    if DREAMS_HEADER.match(lines[0][1]):
        return "dreams"
    if split_header(lines[0][1]) is not None:
        return "csv"
    tokens = [text for _, text in lines]
    if all(NUMBER.match(t) for t in tokens):
        raise numbers_only(path)
    if all(spelling_key(t) in SPELLINGS for t in tokens):
        return "lines"
    bad = next((n, t) for n, t in lines if spelling_key(t) not in SPELLINGS)
    kind = "not a recording (unknown file type " + repr(path.suffix or "(no extension)") + ")"
    raise RecordError(
        f"{path}: {kind} and no hypnogram format fits: line {bad[0]} {bad[1][:60]!r} is no stage spelling "
        f"and line 1 is no header naming a stage column; formats: {_format_list()}; force one with --hypnogram-format"
    )


def _format_list() -> str:
    return "; ".join(f"{key}: {text}" for key, text in FORMATS.items())


# ------------------------------------------------------------------------------------- EDF, WFDB


def _from_edf(path: Path) -> Hypnogram:
    labels = read_edf_labels(path)
    edf = read_edf(path, load_signals=False, require_modality_channel=False)
    extent = ("the end of the last stage annotation (annotation-only file)" if not edf.channels
              else f"the recording in the same file ({edf.duration_s:g} s)")
    return Hypnogram(stages=labels.stages, arousal_regions_s=labels.arousal_regions_s, source=str(path),
                     format="edf", kind="EDF+ annotations", epoch_s=None, extent=extent)


def _header_beside(path: Path, notes: list[str]) -> tuple[Path, float, float | None] | None:
    """(file, duration_s, fs or None) of the record a lone annotation file belongs to, when found beside it:
    its WFDB header `<record>.hea`, or (Sleep-EDF `SC4001E0-PSG.edf.hyp`) the EDF `<record>` itself.
    A header that cannot be read is passed over with a note."""
    header = path.with_suffix(".hea")
    if header.is_file():
        try:
            rec = wfdb.rdheader(str(header.with_suffix("")))
        except Exception as error:  # wfdb raises bare Exceptions on bad headers
            notes.append(f"{header.name} beside it is not a readable WFDB header ({type(error).__name__}: {error}); "
                         "not used")
        else:
            if rec.sig_len:
                return header, int(rec.sig_len) / float(rec.fs), float(rec.fs)
    edf = path.with_suffix("")
    if edf.suffix.lower() in EDF_SUFFIXES and edf.is_file():
        return edf, read_edf(edf, load_signals=False, require_modality_channel=False).duration_s, None
    return None


def _from_wfdb(path: Path, epoch_s: float | None) -> Hypnogram:
    annotations, file_fs = read_annotations(path)
    notes = [a for a in annotations if a.code == NOTE and a.aux.strip()]
    auxes = [a.aux.strip() for a in notes]
    if any(_HYP_AUX.match(aux) for aux in auxes):
        return _from_sleep_edf_hyp(path, notes, file_fs)
    first = [aux.split()[0] for aux in auxes]
    physionet = any(aux in ("N1", "N2", "N3") for aux in auxes) or any(aux.startswith("(") for aux in auxes)
    if physionet or (path.suffix.lower() == ".arousal" and all(a in STAGE_NOTES for a in first)):
        return _from_physionet2018(path)
    if first and all(stage in SLPDB_STAGES for stage in first):
        return _from_slpdb(path, notes, file_fs, epoch_s)
    seen = ", ".join(sorted(set(auxes))[:8]) or "no notes"
    raise RecordError(
        f"{path}: a WFDB annotation file without sleep stage notes (notes: {seen}); expected PhysioNet 2018 "
        "stage notes (W, N1, N2, N3, R), MIT-BIH slpdb stages (W, 1-4, R, MT) or 'Sleep_stage_X duration: N'"
    )


def _from_physionet2018(path: Path) -> Hypnogram:
    labels = read_arousal_annotations(path)  # the header beside it, if any, sets the length
    notes: list[str] = []
    header = _header_beside(path, notes)
    hyp = Hypnogram(stages=labels.stages, arousal_regions_s=labels.arousal_regions_s, source=str(path),
                    format="wfdb", kind="PhysioNet 2018 .arousal stage notes",
                    extent=_extent(header) if header else "the last annotation", notes=notes)
    if not header:
        hyp.notes.append(_lone_note(path.with_suffix(".hea")))
    return hyp


def _from_slpdb(path: Path, notes, file_fs: float | None, epoch_s: float | None) -> Hypnogram:
    length = epoch_s or SLPDB_EPOCH_S
    extra: list[str] = []
    header = _header_beside(path, extra)
    fs = header[2] if header and header[2] else file_fs
    if not fs:
        steps = np.diff([a.sample for a in notes])
        if not len(steps):
            raise RecordError(f"{path}: one annotation and no header beside it: the sampling rate is unknown; "
                              f"put the record's {path.with_suffix('.hea').name} beside it")
        values, counts = np.unique(steps, return_counts=True)
        fs = float(values[counts.argmax()]) / length
        extra.append(f"no header beside it: sampling rate {fs:g} Hz from the most common note spacing "
                     f"({int(values[counts.argmax()])} samples = one {length:g} s epoch)")
    codes = [SLPDB_STAGES[a.aux.split()[0]] for a in notes]
    intervals = [(a.sample / fs, a.sample / fs + length, c) for a, c in zip(notes, codes)]
    n = _header_epochs(header) if header else None
    hyp = Hypnogram(stages=epochs_by_majority(intervals, n), source=str(path), format="wfdb",
                    kind="MIT-BIH slpdb .st (stage first in each note)", epoch_s=length,
                    extent=_extent(header) if header else "the end of the last annotation's epoch")
    hyp.notes += extra + ([] if header else [_lone_note(path.with_suffix(".hea"))])
    return hyp


def _from_sleep_edf_hyp(path: Path, notes, file_fs: float | None) -> Hypnogram:
    extra: list[str] = []
    header = _header_beside(path, extra)
    fs = file_fs or (header[2] if header else None)
    if not fs:
        raise RecordError(f"{path}: no '## time resolution' note and no header beside it: the sampling rate is "
                          f"unknown; put the record's {path.with_suffix('.hea').name} beside it")
    intervals = []
    for note in notes:
        match = _HYP_AUX.match(note.aux.strip())
        if match is None:
            continue  # other notes (lights off ...) carry no stage
        code = UNDEFINED if match["movement"] else SPELLINGS.get(spelling_key(match["stage"]))
        if code is None:
            raise RecordError(f"{path}: note {note.aux!r} at sample {note.sample}: unknown stage "
                              f"{match['stage']!r}; expected Sleep_stage_W/1/2/3/4/R/?")
        intervals.append((note.sample / fs, note.sample / fs + float(match["s"]), code))
    n = _header_epochs(header) if header else None
    hyp = Hypnogram(stages=epochs_by_majority(intervals, n), source=str(path), format="wfdb",
                    kind="Sleep-EDF .hyp (Sleep_stage_X duration: N)", epoch_s=None,
                    extent=_extent(header) if header else "the end of the last annotated run", notes=extra)
    if not header:
        hyp.notes.append(_lone_note(path.with_suffix(".hea")))
    return hyp


def _header_epochs(header: tuple[Path, float, float | None]) -> int:
    """Complete 30 s epochs of the record found beside an annotation file."""
    return int(header[1] / EPOCH_SECONDS + 1e-9)


def _extent(header: tuple[Path, float, float | None]) -> str:
    what = "header" if header[0].suffix.lower() == ".hea" else "recording"
    return f"the {what} {header[0].name} beside it ({header[1]:g} s)"


def _lone_note(header: Path) -> str:
    return (f"no header beside it ({header.name}): the epoch count runs to the last annotation, not "
            "necessarily to the recording's end; put the header beside it for the full length")


# ------------------------------------------------------------------------------------ naming rule

_PSG_SUFFIX = re.compile(r"[-_ ]psg$", re.IGNORECASE)
_SLEEP_EDF = re.compile(r"^(?P<night>s[ct]\d{4}[a-z])\d-psg$", re.IGNORECASE)  # SC4001E0-PSG, ST7011J0-PSG
NAMING_RULE = (
    "in DIR, the hypnogram of record NAME (a file's stem, a record folder's name) is the one file named "
    "NAME or NAME without a -PSG/_PSG suffix, then '.', '-', '_' or ' ', ending in .arousal .st .hyp .csv .tsv "
    ".txt, or .edf/.bdf with 'hypnogram' in its name; Sleep-EDF's SC4001E0-PSG also matches SC4001E?-Hypnogram.edf "
    "(the scorer's letter differs)"
)


def find_hypnogram(record: str, folder: str | Path, *, exclude: Path | None = None) -> Path | None:
    """The expert hypnogram of `record` in `folder` by `NAMING_RULE`; None when there is none.

    `exclude`: the recording's own file (a folder may hold both). Raises `RecordError` listing the
    candidates when several files match (the rule never picks one silently).
    """
    folder = Path(folder)
    keys = {record.casefold(), _PSG_SUFFIX.sub("", record).casefold()}
    sleep_edf = _SLEEP_EDF.match(record)
    found = []
    for path in sorted(folder.iterdir()):
        name = path.name.casefold()
        if not path.is_file() or not name.endswith(HYPNOGRAM_SUFFIXES) or (exclude and path.resolve() == exclude.resolve()):
            continue
        if name.endswith(EDF_SUFFIXES) and "hypnogram" not in name:
            continue
        named = any(name.startswith(key) and name[len(key): len(key) + 1] in (".", "-", "_", " ") for key in keys)
        if named or (sleep_edf and re.fullmatch(rf"{sleep_edf['night'].casefold()}[a-z]-hypnogram\.edf", name)):
            found.append(path)
    if len(found) > 1:
        raise RecordError(f"{folder}: {len(found)} hypnograms match record {record}: "
                          f"{', '.join(p.name for p in found)}; keep one per record, or give it with --hypnogram")
    return found[0] if found else None
