"""Text hypnograms: csv tables, one stage per line, numeric codes, DREAMS files -> `Hypnogram`.

- `csv`: a header row naming a stage column (`stage`, `Sleep_stage`, `label`, `description` ...) and
  optionally epoch, onset (s) and duration (s) columns: `epoch,onset_s,stage`, onset + duration
  spans, run-length `Sleep_stage,duration` (Sleep-EDF's `*-PSG.edf.csv`); `,` `;` tab or blanks.
- `lines`: one spelled stage per line, no header (`SPELLINGS`).
- `numeric`: codes 0 W 1 N1 2 N2 3 N3 4 REM (PhysioNet 2018 `labels.npz`, YASA's integer hypnograms);
  any other number (5, YASA's -1 Art and -2 Uns) is undefined, with a note. Lines or a csv column.
- `dreams`: DREAMS databases (Devuyst et al., "The DREAMS Databases and Assessment Algorithm",
  Univ. Mons / CHU Charleroi, Zenodo 2650142): a `[Hypnogram]`, `[HypnogramR&K]` or `[HypnogramAASM]`
  line, then one code per 5 s. R&K: 5 W, 4 REM, 3 S1, 2 S2, 1 S3, 0 S4, -1 movement, -2 / -3
  unknown; AASM: 5 W, 4 REM, 3 N1, 2 N2, 1 N3, 0 to -3 unknown.

Numbers are never guessed: PhysioNet and YASA write 0 W ... 4 REM, DREAMS 5 W ... 0 S4, R&K
numbering has 4 = S4. Digits among spelled stages (letters such as W or R in the same file) are R&K
stage numbers, as Sleep-EDF writes them (4 = S4 -> N3, 0 = W); a file of numbers only is refused
unless the format says `numeric` or `dreams`. Any line ending (Sleep-EDF's CSV uses CR alone).
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

import numpy as np

from ..modalities import EPOCH_SECONDS
from .errors import RecordError
from .hypnogram_grid import FIT_RANGE, N1, N2, N3, REM, UNDEFINED, W, Hypnogram, epochs_by_majority, grid_note, infer_epoch_s

DREAMS_EPOCH_S = 5.0

# Spellings of text formats, compared after `spelling_key` (case-folded, 'sleep stage' / 'stage' prefix,
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
DREAMS_HEADER = re.compile(r"^\[\s*hypnogram\s*(?P<scheme>r\s*&\s*k|aasm)?\s*\]$", re.IGNORECASE)
NUMBER = re.compile(r"^[+-]?\d+(?:\.0*)?$")
_STAGE_PREFIX = re.compile(r"^(sleep[\s_-]*)?stage[\s_-]*", re.IGNORECASE)
_COLUMNS = {
    "stage": ("stage", "stages", "sleepstage", "sleepstages", "label", "labels", "hypnogram", "score", "description"),
    "onset": ("onset", "onsets", "start", "starttime", "begin", "time"),
    "duration": ("duration", "durations", "dur", "length"),
    "epoch": ("epoch", "epochs", "epochnumber", "epochno", "epochindex", "index", "no", "#"),
}


def numbers_only(path: Path, what: str = "the stages are") -> RecordError:
    """The refusal of a file whose stages are numbers only (their meaning differs between formats)."""
    return RecordError(
        f"{path}: {what} numbers only, which formats number differently (0 W, 1 N1, 2 N2, 3 N3, 4 REM in "
        "PhysioNet 2018 and YASA; DREAMS 5 W ... 0 S4; R&K 4 = S4); say which with --hypnogram-format numeric "
        "(0 W ... 4 REM) or --hypnogram-format dreams"
    )


def is_text(head: bytes) -> bool:
    """Whether the first bytes of a file decode as UTF-8 (a text hypnogram, not a binary annotation file)."""
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as error:
        return error.start >= len(head) - 3  # only a character cut at the end of `head`


def text_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of the non-blank, non-comment lines; any line ending (CR alone too)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return [(i, s) for i, line in enumerate(text.splitlines(), 1) if (s := line.strip()) and not s.startswith("#")]


def spelling_key(text: str) -> str:
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


def split_header(line: str) -> tuple[str | None, list[str | None]] | None:
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
    tokens = [spelling_key(t) for _, t in rows]
    for (n, text), key in zip(rows, tokens):
        if key not in SPELLINGS and key != "":
            accepted = "W, Wake, N1, S1, 1, N2, S2, 2, N3, N4, S3, S4, 3, 4, R, REM, MT, ?, unscored"
            hint = ("; numbers only? use --hypnogram-format numeric or dreams" if NUMBER.match(text) else "")
            raise RecordError(f"{path}: line {n}: {text[:60]!r} is not a sleep stage (accepted: {accepted}){hint}")
    if any(t for _, t in rows) and all(NUMBER.match(t) for _, t in rows if t):
        raise numbers_only(path, "the stage column holds")
    empty = sum(key == "" for key in tokens)
    if empty:
        notes.append(f"{empty} empty stage cell(s) read as undefined")
    return np.array([SPELLINGS.get(key, UNDEFINED) for key in tokens], np.int8), notes


def _number(path: Path, line: int, text: str) -> int:
    if not NUMBER.match(text):
        raise RecordError(f"{path}: line {line}: {text[:60]!r} is not an integer stage code")
    return int(float(text))


def _float(path: Path, line: int, text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        unit = "" if what == "epoch" else " of seconds from the recording start"
        raise RecordError(f"{path}: line {line}: {what} {text[:40]!r} is not a number{unit}") from None
    if not math.isfinite(value) or value < 0 or (what == "duration" and value == 0):
        raise RecordError(f"{path}: line {line}: {what} {text[:40]!r} must be a positive number")
    return value


def read_text_hypnogram(path: Path, fmt: str, epoch_s: float | None, n_epochs: int | None) -> Hypnogram:
    """A text hypnogram of format `fmt` (csv, lines, numeric, dreams); arguments as `read_hypnogram`."""
    lines = text_lines(path)
    if not lines:
        raise RecordError(f"{path}: empty file; an expert hypnogram has one stage per line or row")
    header = split_header(lines[0][1])
    notes: list[str] = []
    kind = {"lines": "one stage per line", "numeric": "numeric codes 0 W ... 4 REM"}.get(fmt, fmt)
    if fmt == "dreams":
        match = DREAMS_HEADER.match(lines[0][1])
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
    """A table with a header row: spans from onset + duration, onsets alone, durations alone, or rows."""
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
                     epoch_s=file_epoch, extent="the end of the last row", notes=notes + grid_note(file_epoch))


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
                     extent="the last line", notes=notes + grid_note(epoch_s))
