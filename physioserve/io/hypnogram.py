"""Expert hypnograms in the formats real files use -> `Hypnogram` (a `Labels`: stage per 30 s epoch).

Every format ends on the project's grid: epoch k covers [30k, 30k + 30) s from the recording start,
codes 0 W 1 N1 2 N2 3 N3 4 REM 5 undefined (`modalities.STAGE_NAMES`, `STAGE_UNDEFINED`). R&K stages 3
and 4 are N3 (AASM 2007 merged them); movement time, artefact and unscored epochs are undefined
(agreement leaves them out). Formats (`FORMATS`; `fmt=` forces one, else the content decides):

- `edf`: EDF+ annotations (Sleep-EDF `*-Hypnogram.edf`), read by `edf.read_edf_labels`.
- `wfdb`: a WFDB annotation file, its kind told by the notes: PhysioNet 2018 `.arousal` (stage notes
  W N1 N2 N3 R, read by `physionet2018.read_arousal_annotations`), MIT-BIH slpdb `.st` (one note per
  30 s epoch, aux starting with the stage: W 1 2 3 4 R MT, then apnea codes, e.g. `4 LA`), Sleep-EDF
  `.hyp` (aux `Sleep_stage_X duration: N` in seconds). Read with `wfdb_annotations`, which keeps notes
  at sample 0 (`wfdb.rdann` loses the `.hyp` file's first run, W from 0 s to 30,630 s in SC4001E0).
- `csv`: a table with a header row naming a stage column and optionally epoch, onset (s) and
  duration (s) columns: `epoch,onset_s,stage`, run-length `Sleep_stage,duration` (Sleep-EDF's
  `*-PSG.edf.csv`, carriage-return line endings); `,` `;` tab or blank separated.
- `lines`: one spelled stage per line, no header (W Wake N1 S1 1 N2 N3 N4 S4 R REM MT ? unscored ...).
- `numeric`: one number per epoch in the codes 0 W 1 N1 2 N2 3 N3 4 REM (PhysioNet 2018 `labels.npz`,
  YASA's integer hypnograms); any other number (5, -1 Art, -2 unscored) is undefined. Lines or a
  csv stage column. Never guessed: numbers mean different stages in different formats.
- `dreams`: DREAMS databases (Devuyst, Univ. Mons / CHU Charleroi; "The DREAMS Databases and
  Assessment Algorithm", Zenodo 2650142): a `[Hypnogram]`, `[HypnogramR&K]` or `[HypnogramAASM]`
  line, then one code per 5 s. R&K: 5 W, 4 REM, 3 S1, 2 S2, 1 S3, 0 S4, -1 movement, -2 / -3
  unknown; AASM: 5 W, 4 REM, 3 N1, 2 N2, 1 N3, 0 to -3 unknown.

Numbers in a spelled file (`lines`, `csv` with letters such as W or R among the stages) are R&K stage
numbers, as Sleep-EDF writes them (4 = S4 -> N3, 0 = W). A file of numbers only is refused unless
`fmt` says `numeric` or `dreams`.

Epoch length: from the file where it says (onsets, durations, the WFDB time resolution), else
`epoch_s`, else (one stage per line) inferred from the recording when `n_epochs` is given and
exactly one of 30 / 20 / 5 s makes the hypnogram span 75-110 % of it, else 30 s; the choice is
written in `notes`. Epochs shorter or not aligned with 30 s combine by majority of time: the stage
covering most of the 30 s epoch wins (uncovered time counts as undefined); a tie goes to the stage
nearest the epoch midpoint (30k + 15 s, where the project reads every other label), the earlier one
when two are equally near.

A lone WFDB annotation file cannot know where the recording ends: its epochs run to the last
annotation (its end, for `.st` and `.hyp` whose notes have a length), unless the record's header is
beside it (`<record>.hea`; for a Sleep-EDF `.hyp` also the `<record>` EDF itself): then the count
follows the header. `extent` says which.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import wfdb

from ..modalities import EPOCH_SECONDS, STAGE_NAMES, STAGE_UNDEFINED
from ..recording import Labels
from .edf import EDF_SUFFIXES, read_edf, read_edf_labels
from .errors import RecordError
from .physionet2018 import STAGE_NOTES, read_arousal_annotations
from .wfdb_annotations import NOTE, read_annotations

W, N1, N2, N3, REM = (STAGE_NAMES.index(s) for s in ("W", "N1", "N2", "N3", "REM"))
UNDEFINED = STAGE_UNDEFINED

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
CANDIDATE_EPOCHS_S = (30.0, 20.0, 5.0)  # epoch lengths inferred from the recording (R&K 30 s and 20 s, DREAMS 5 s)
FIT_RANGE = (0.75, 1.10)  # hypnogram span / recording duration that counts as a fit (disjoint for 30/20/5 s)
DREAMS_EPOCH_S = 5.0
SLPDB_EPOCH_S = 30.0  # MIT-BIH slpdb: one stage annotation per 30 s epoch (PhysioNet slpdb description)

# Spellings of text formats, compared after `_token` (case-folded, 'sleep stage' / 'stage' prefix,
# blanks, '_' and '-' removed). Digits are R&K stage numbers, as Sleep-EDF writes them.
SPELLINGS: dict[str, int] = {
    **dict.fromkeys(("w", "wake", "awake", "wk", "0", "s0"), W),
    **dict.fromkeys(("n1", "s1", "1", "nrem1"), N1),
    **dict.fromkeys(("n2", "s2", "2", "nrem2"), N2),
    **dict.fromkeys(("n3", "s3", "3", "nrem3", "n4", "s4", "4", "nrem4", "sws"), N3),
    **dict.fromkeys(("r", "rem", "sr"), REM),
    **dict.fromkeys(("mt", "m", "movement", "movementtime", "?", "u", "unscored", "unknown", "uns", "a", "art",
                     "artefact", "artifact", "nan", "na", "none"), UNDEFINED),
}
DREAMS_CODES: dict[str, dict[int, int]] = {
    "r&k": {5: W, 4: REM, 3: N1, 2: N2, 1: N3, 0: N3, -1: UNDEFINED, -2: UNDEFINED, -3: UNDEFINED},
    "aasm": {5: W, 4: REM, 3: N1, 2: N2, 1: N3, 0: UNDEFINED, -1: UNDEFINED, -2: UNDEFINED, -3: UNDEFINED},
}
SLPDB_STAGES: dict[str, int] = {"W": W, "1": N1, "2": N2, "3": N3, "4": N3, "R": REM, "MT": UNDEFINED}
_DREAMS_HEADER = re.compile(r"^\[\s*hypnogram\s*(?P<scheme>r\s*&\s*k|aasm)?\s*\]$", re.IGNORECASE)
_HYP_AUX = re.compile(r"^(?:sleep_stage_(?P<stage>\S+)|(?P<movement>movement_time))\s+duration:\s*(?P<s>[\d.]+)",
                      re.IGNORECASE)
_NUMBER = re.compile(r"^[+-]?\d+(?:\.0*)?$")
_STAGE_PREFIX = re.compile(r"^(sleep[\s_-]*)?stage[\s_-]*", re.IGNORECASE)
_COLUMNS = {
    "stage": ("stage", "stages", "sleepstage", "sleepstages", "label", "labels", "hypnogram", "score", "description"),
    "onset": ("onset", "onsets", "start", "starttime", "begin", "time"),
    "duration": ("duration", "durations", "dur", "length"),
    "epoch": ("epoch", "epochs", "epochnumber", "epochno", "epochindex", "index", "no", "#"),
}


@dataclass
class Hypnogram(Labels):
    """An expert hypnogram on the 30 s grid, and how it was read.

    format: key of `FORMATS`; kind: what the content was (e.g. 'MIT-BIH slpdb .st'); epoch_s: the
    file's epoch length in s (None when it gives times, not epochs); extent: how its end was found;
    notes: every choice made while reading (epoch length inferred, codes read as undefined ...).
    """

    format: str = ""
    kind: str = ""
    epoch_s: float | None = EPOCH_SECONDS
    extent: str = ""
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        """JSON-ready description (for inspect, the agreement file and the service)."""
        return {"source": self.source, "format": self.format, "kind": self.kind, "epoch_s": self.epoch_s,
                "n_epochs": int(len(self.stages)), "stage_counts": self.stage_counts(), "extent": self.extent,
                "notes": list(self.notes)}


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
    return _from_text(path, fmt, epoch_s, n_epochs)


def detect_format(path: str | Path) -> str:
    """The `FORMATS` key that fits a file's content (suffix as a hint); raises listing the formats."""
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(4096)
    if path.suffix.lower() in EDF_SUFFIXES or head.startswith((b"0       ", b"\xffBIOSEMI")):
        return "edf"
    if b"\0" in head or (path.suffix.lower() in WFDB_SUFFIXES and not _is_text(head)):
        return "wfdb"
    lines = _text_lines(path)
    if not lines:
        raise RecordError(f"{path}: empty file; an expert hypnogram has one stage per epoch ({_format_list()})")
    if _DREAMS_HEADER.match(lines[0][1]):
        return "dreams"
    if _split_header(lines[0][1]) is not None:
        return "csv"
    tokens = [text for _, text in lines]
    if all(_NUMBER.match(t) for t in tokens):
        raise RecordError(
            f"{path}: the stages are numbers only, and formats number stages differently (0 W, 1 N1, 2 N2, "
            "3 N3, 4 REM in PhysioNet 2018 and YASA; DREAMS 5 W ... 0 S4; R&K 4 = S4); say which with "
            "--hypnogram-format numeric (0 W ... 4 REM) or --hypnogram-format dreams"
        )
    if all(_token(t) in SPELLINGS for t in tokens):
        return "lines"
    bad = next((n, t) for n, t in lines if _token(t) not in SPELLINGS)
    kind = "not a recording (unknown file type " + repr(path.suffix or "(no extension)") + ")"
    raise RecordError(
        f"{path}: {kind} and no hypnogram format fits: line {bad[0]} {bad[1][:60]!r} is no stage spelling "
        f"and line 1 is no header naming a stage column; formats: {_format_list()}; force one with --hypnogram-format"
    )


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
    if first and all(token in SLPDB_STAGES for token in first):
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
        code = UNDEFINED if match["movement"] else SPELLINGS.get(_token(match["stage"]))
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


# ------------------------------------------------------------------------------------------- text


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _text_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of the non-blank, non-comment lines; any line ending (CR alone too)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return [(i, s) for i, line in enumerate(text.splitlines(), 1) if (s := line.strip()) and not s.startswith("#")]


def _token(text: str) -> str:
    """Normalised spelling: 'Sleep stage W' -> 'w', 'Stage 4' -> '4', 'Movement time' -> 'movementtime'."""
    text = text.strip().strip("\"'")
    text = _STAGE_PREFIX.sub("", text) or text
    return re.sub(r"[\s_-]+", "", text).casefold()


def _column_key(name: str) -> str | None:
    """'onset_s' / 'Onset (s)' / 'Sleep_stage' -> 'onset' / 'onset' / 'stage'; None when unknown."""
    key = re.sub(r"[^a-z#]", "", name.casefold())
    for unit in ("seconds", "secs", "sec", "s"):
        if key.endswith(unit) and key[: -len(unit)] in _COLUMNS["onset"] + _COLUMNS["duration"]:
            key = key[: -len(unit)]
    return next((column for column, names in _COLUMNS.items() if key in names), None)


def _split(line: str, sep: str | None) -> list[str]:
    return next(csv.reader(io.StringIO(line), delimiter=sep)) if sep else line.split()


def _split_header(line: str) -> tuple[str | None, list[str | None]] | None:
    """(separator, column keys) when `line` is a header row naming a stage column, else None."""
    if _column_key(line) == "stage":
        return ",", ["stage"]  # a single column: 'stage', 'Sleep stage'
    for sep in (",", "\t", ";", None):
        if sep is not None and sep not in line:
            continue
        keys = [_column_key(cell) for cell in _split(line, sep)]
        if (len(keys) > 1 or sep is not None) and "stage" in keys:
            return sep, keys
    return None


def _codes(path: Path, fmt: str, rows: list[tuple[int, str]]) -> tuple[np.ndarray, list[str]]:
    """Stage codes of (line, text) rows in a text format, and notes; raises naming the first bad row."""
    notes: list[str] = []
    if fmt == "numeric":
        values = [_number(path, n, t) for n, t in rows]
        codes = np.array([v if 0 <= v <= 4 else UNDEFINED for v in values], np.int8)
        other = sorted({v for v in values if not 0 <= v <= 4})
        if other:
            notes.append(f"codes {', '.join(map(str, other))} are not 0-4 (W N1 N2 N3 REM): read as undefined "
                         f"({int(np.sum(codes == UNDEFINED))} lines)")
        return codes, notes
    tokens = [_token(t) for _, t in rows]
    for (n, text), token in zip(rows, tokens):
        if token not in SPELLINGS and token != "":
            accepted = "W, Wake, N1, S1, 1, N2, S2, 2, N3, N4, S3, S4, 3, 4, R, REM, MT, ?, unscored"
            hint = ("; numbers only? use --hypnogram-format numeric or dreams" if _NUMBER.match(text) else "")
            raise RecordError(f"{path}: line {n}: {text[:60]!r} is not a sleep stage (accepted: {accepted}){hint}")
    if all(_NUMBER.match(t) for _, t in rows if t):
        raise RecordError(
            f"{path}: the stage column holds numbers only, which formats number differently (0 W ... 4 REM in "
            "PhysioNet 2018 and YASA; DREAMS 5 W ... 0 S4; R&K 4 = S4); say which with --hypnogram-format numeric "
            "(0 W ... 4 REM) or --hypnogram-format dreams"
        )
    empty = sum(token == "" for token in tokens)
    if empty:
        notes.append(f"{empty} empty stage cell(s) read as undefined")
    return np.array([SPELLINGS.get(token, UNDEFINED) for token in tokens], np.int8), notes


def _number(path: Path, line: int, text: str) -> int:
    if not _NUMBER.match(text):
        raise RecordError(f"{path}: line {line}: {text[:60]!r} is not an integer stage code")
    return int(float(text))


def _float(path: Path, line: int, text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RecordError(f"{path}: line {line}: {what} {text[:40]!r} is not a number of seconds "
                          "from the recording start") from None
    if not math.isfinite(value) or value < 0 or (what == "duration" and value == 0):
        raise RecordError(f"{path}: line {line}: {what} {text[:40]!r} must be a positive number of seconds")
    return value


def _from_text(path: Path, fmt: str, epoch_s: float | None, n_epochs: int | None) -> Hypnogram:
    lines = _text_lines(path)
    if not lines:
        raise RecordError(f"{path}: empty file; an expert hypnogram has one stage per epoch ({_format_list()})")
    header = _split_header(lines[0][1])
    notes: list[str] = []
    kind = {"lines": "one stage per line", "numeric": "numeric codes 0 W ... 4 REM"}.get(fmt, fmt)
    if fmt == "dreams":
        match = _DREAMS_HEADER.match(lines[0][1])
        scheme = "aasm" if match and match["scheme"] and match["scheme"].casefold() == "aasm" else "r&k"
        if match is None:
            notes.append("no [Hypnogram] line: read with the DREAMS R&K code table")
        rows = lines[1:] if match else lines
        table = DREAMS_CODES[scheme]
        values = [_number(path, n, t) for n, t in rows]
        bad = next(((n, v) for (n, _), v in zip(rows, values) if v not in table), None)
        if bad:
            raise RecordError(f"{path}: line {bad[0]}: DREAMS code {bad[1]} is not one of "
                              f"{', '.join(map(str, sorted(table, reverse=True)))} ({scheme.upper()} table)")
        codes = np.array([table[v] for v in values], np.int8)
        kind = f"DREAMS hypnogram ({'AASM' if scheme == 'aasm' else 'R&K'} codes)"
        return _per_epoch(path, fmt, kind, codes, epoch_s or DREAMS_EPOCH_S, epoch_s is None, n_epochs, notes,
                          default_note=f"{DREAMS_EPOCH_S:g} s per line (the DREAMS convention)")
    if fmt in ("csv", "numeric") and header is not None:
        return _from_table(path, fmt, lines, header, epoch_s, n_epochs)
    if fmt == "csv":
        raise RecordError(f"{path}: line 1 {lines[0][1][:60]!r} names no stage column; a csv hypnogram starts "
                          "with a header row such as epoch,onset_s,stage or Sleep_stage,duration")
    codes, notes = _codes(path, fmt, lines)
    return _per_epoch(path, fmt, kind, codes, epoch_s, False, n_epochs, notes)


def _from_table(path, fmt, lines, header, epoch_s, n_epochs) -> Hypnogram:
    sep, keys = header
    col = {key: keys.index(key) for key in ("stage", "onset", "duration", "epoch") if key in keys}
    rows = []
    for n, text in lines[1:]:
        cells = _split(text, sep)
        if len(cells) < len(keys):
            raise RecordError(f"{path}: line {n}: {len(cells)} field(s), the header names {len(keys)}")
        rows.append((n, cells))
    if not rows:
        raise RecordError(f"{path}: a header row and no epochs")
    codes, notes = _codes(path, fmt, [(n, cells[col["stage"]]) for n, cells in rows])
    kind = "csv table" + (" (numeric codes 0 W ... 4 REM)" if fmt == "numeric" else "")
    if "onset" not in col and "duration" not in col:
        if "epoch" in col:
            numbers = [_float(path, n, cells[col["epoch"]], "epoch") for n, cells in rows]
            if np.any(np.diff(numbers) != 1):
                raise RecordError(f"{path}: the epoch column does not count up by 1 (rows missing or out of order); "
                                  "add an onset column in seconds to place each row")
        return _per_epoch(path, fmt, kind + ", one row per epoch", codes, epoch_s, False, n_epochs, notes)
    if "onset" in col:
        onsets = np.array([_float(path, n, cells[col["onset"]], "onset") for n, cells in rows])
        if np.any(np.diff(onsets) < 0):
            n = rows[int(np.flatnonzero(np.diff(onsets) < 0)[0]) + 1][0]
            raise RecordError(f"{path}: line {n}: onset goes back in time; sort the rows by onset")
    if "duration" in col:
        durations = np.array([_float(path, n, cells[col["duration"]], "duration") for n, cells in rows])
        if "onset" not in col:
            onsets = np.concatenate(([0.0], np.cumsum(durations)[:-1]))  # run-length: runs back to back from 0 s
            kind += ", run-length (stage, duration) from the recording start"
        stops = onsets + durations
        file_epoch = None
    else:
        steps = np.diff(onsets)
        values, counts = np.unique(np.round(steps, 6), return_counts=True) if len(steps) else ([], [])
        file_epoch = float(values[int(np.argmax(counts))]) if len(values) else (epoch_s or float(EPOCH_SECONDS))
        if epoch_s is not None and len(values) and abs(epoch_s - file_epoch) > 1e-6:
            notes.append(f"the onsets are {file_epoch:g} s apart; the given epoch length {epoch_s:g} s is not used")
        stops = np.concatenate((onsets[1:], [onsets[-1] + file_epoch]))  # a row holds until the next one
        kind += f", onsets {file_epoch:g} s apart" if len(values) == 1 else ", onsets"
    intervals = list(zip(onsets, stops, codes))
    return Hypnogram(stages=epochs_by_majority(intervals), source=str(path), format=fmt, kind=kind,
                     epoch_s=file_epoch, extent="the end of the last row", notes=notes + _grid_note(file_epoch))


def _per_epoch(path, fmt, kind, codes, epoch_s, is_default, n_epochs, notes, default_note=None) -> Hypnogram:
    """One code per line: choose the epoch length (given / inferred / default), then combine to 30 s."""
    if epoch_s is None:
        epoch_s, note = infer_epoch_s(len(codes), n_epochs)
        notes.append(note)
    elif is_default:
        notes.append(default_note)
        if n_epochs:
            ratio = len(codes) * epoch_s / (n_epochs * EPOCH_SECONDS)
            if not FIT_RANGE[0] <= ratio <= FIT_RANGE[1]:
                notes.append(f"at {epoch_s:g} s per line the hypnogram spans {ratio:.0%} of the recording; "
                             "give --hypnogram-epoch if its lines are not 5 s")
    else:
        notes.append(f"{epoch_s:g} s per line (given)")
    intervals = [(i * epoch_s, (i + 1) * epoch_s, c) for i, c in enumerate(codes)]
    stages = codes if epoch_s == EPOCH_SECONDS else epochs_by_majority(intervals)
    return Hypnogram(stages=np.asarray(stages, np.int8), source=str(path), format=fmt, kind=kind, epoch_s=epoch_s,
                     extent="the last line", notes=notes + _grid_note(epoch_s))


def infer_epoch_s(n_lines: int, n_epochs: int | None) -> tuple[float, str]:
    """Epoch length of a file of `n_lines` stages without times, and a note saying how it was chosen.

    With the recording's `n_epochs` (30 s), the one of 30 / 20 / 5 s that makes the hypnogram span
    `FIT_RANGE` of the recording; else 30 s.
    """
    if not n_epochs:
        return float(EPOCH_SECONDS), "30 s per line assumed (the file gives no times; give --hypnogram-epoch if not)"
    duration = n_epochs * EPOCH_SECONDS
    fits = [e for e in CANDIDATE_EPOCHS_S if FIT_RANGE[0] <= n_lines * e / duration <= FIT_RANGE[1]]
    if len(fits) == 1:
        return fits[0], (f"{fits[0]:g} s per line inferred: {n_lines} lines x {fits[0]:g} s = "
                         f"{n_lines * fits[0] / 3600:.2f} h for a {duration / 3600:.2f} h recording")
    return float(EPOCH_SECONDS), (f"30 s per line assumed: {n_lines} lines fit a {duration / 3600:.2f} h recording "
                                  "at none of 30 / 20 / 5 s; give --hypnogram-epoch if not 30 s")


def _grid_note(epoch_s: float | None) -> list[str]:
    if epoch_s is None or epoch_s == EPOCH_SECONDS:
        return []
    if EPOCH_SECONDS % epoch_s == 0:
        return [f"{int(EPOCH_SECONDS // epoch_s)} sub-epochs of {epoch_s:g} s combine into each 30 s epoch by majority"]
    return [f"{epoch_s:g} s epochs do not tile 30 s: each 30 s epoch takes the stage covering most of it"]


def _format_list() -> str:
    return "; ".join(f"{key}: {text}" for key, text in FORMATS.items())


# ------------------------------------------------------------------------------------ 30 s grid


def epochs_by_majority(intervals, n_epochs: int | None = None) -> np.ndarray:
    """Stage per 30 s epoch from (start_s, stop_s, code) intervals: the code covering most of it.

    Uncovered time counts as undefined; a tie goes to the tied code nearest the epoch midpoint
    (30k + 15 s), the earlier when equally near. `n_epochs` defaults to the epochs the intervals
    reach (ceil of the last stop / 30 s). Returns [n_epochs] int8.
    """
    ends = [stop for _, stop, _ in intervals]
    if n_epochs is None:
        n_epochs = int(math.ceil(max(ends, default=0.0) / EPOCH_SECONDS - 1e-9))
    pieces: list[list[tuple[float, float, int]]] = [[] for _ in range(n_epochs)]
    for start, stop, code in intervals:
        first, last = int(start // EPOCH_SECONDS), int(math.ceil(stop / EPOCH_SECONDS)) - 1
        for k in range(max(first, 0), min(last, n_epochs - 1) + 1):
            lo, hi = max(start, k * EPOCH_SECONDS), min(stop, (k + 1) * EPOCH_SECONDS)
            if hi > lo:
                pieces[k].append((lo - k * EPOCH_SECONDS, hi - k * EPOCH_SECONDS, int(code)))
    stages = np.full(n_epochs, UNDEFINED, np.int8)
    for k, epoch in enumerate(pieces):
        if len(epoch) == 1 and epoch[0][1] - epoch[0][0] >= EPOCH_SECONDS / 2 + 1e-9:
            stages[k] = epoch[0][2]
        elif epoch:
            stages[k] = _majority(epoch)
    return stages


def _majority(pieces: list[tuple[float, float, int]]) -> int:
    """Majority code of one epoch's pieces ([start, stop) s within the epoch, code), gaps undefined."""
    pieces = sorted(pieces)
    filled, t = [], 0.0
    for start, stop, code in pieces:
        if start > t + 1e-9:
            filled.append((t, start, UNDEFINED))
        filled.append((start, stop, code))
        t = max(t, stop)
    if t < EPOCH_SECONDS - 1e-9:
        filled.append((t, float(EPOCH_SECONDS), UNDEFINED))
    cover: dict[int, float] = {}
    for start, stop, code in filled:
        cover[code] = cover.get(code, 0.0) + stop - start
    top = max(cover.values())
    tied = [code for code, total in cover.items() if total >= top - 1e-9]
    if len(tied) == 1:
        return tied[0]
    mid = EPOCH_SECONDS / 2

    def rank(piece):  # nearest the midpoint first; the piece holding it ([start, stop) with start <= mid < stop)
        start, stop, _ = piece  # beats one ending there; then the earlier
        holds = start <= mid < stop
        return (0.0 if holds else min(abs(start - mid), abs(stop - mid)), not holds, start)

    return min((p for p in filled if p[2] in tied), key=rank)[2]


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
