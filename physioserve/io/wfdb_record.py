"""WFDB records (https://physionet.org/physiotools/wag/header-5.htm), read with wfdb, checked here first.

What wfdb leaves to its caller, and this module does:
- calibration: wfdb reads an ADC gain of 0, or a missing one, as 200 (the spec's "uncalibrated");
  such a signal is reported with its problem and never read as if it were calibrated;
- units: wfdb reads the header as ASCII and drops other bytes ('µV' becomes 'V'); units are read
  here from the header decoded as UTF-8 (else Latin-1);
- multi-frequency records: signal i runs at frame rate x samples per frame (`16x200`), with
  sig_len x samples per frame samples;
- a header without a sample count: the length follows from the signal file's size;
- multi-segment records (`name/n_seg`), fixed or variable layout: read and joined by wfdb; a null
  segment (`~`) and a signal absent from a segment hold NaN (missing data);
- size checks of signal files, samples per frame and packed formats (212, 310, 311) included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import wfdb

from .errors import RecordError

# Bits per sample of the WFDB formats whose file size follows from the header.
_BITS_PER_SAMPLE = {"8": 8, "16": 16, "24": 24, "32": 32, "61": 16, "80": 8, "160": 16, "212": 12,
                    "310": 32 / 3, "311": 32 / 3}
_MAT_SLACK_BYTES = 8  # a MATLAB v5 container may pad its data element to 8 bytes
_PACKED_SLACK_BYTES = 4  # 212 / 310 / 311 pad their last group of samples
_GAIN = re.compile(r"^(?P<gain>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)(?:\([-+]?\d+\))?(?:/(?P<units>.*))?$")


@dataclass(frozen=True)
class SignalSpec:
    """One signal as the header describes it: rate (Hz), samples at that rate, unit, calibration problem."""

    name: str
    fs: float
    n_samples: int
    unit: str
    problem: str | None = None
    limits: tuple[float, float] | None = None  # physical values of the ADC's lowest and highest codes
    step: float | None = None  # physical value of one ADC count (1 / gain)


def header_text(header: Path) -> str:
    """The header decoded as UTF-8 (else Latin-1, which never fails); CRLF line ends are fine."""
    raw = header.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _signal_lines(text: str) -> list[str]:
    """The signal (or segment) lines of a header: the non-comment lines after the record line."""
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    return [line for line in lines if line][1:]


def _calibration(line: str) -> tuple[str, str | None]:
    """(unit, problem) of one signal line: units as written (WFDB's default mV when absent)."""
    tokens = line.split()
    if len(tokens) < 3:
        return "mV", "its ADC gain is missing from the WFDB header (uncalibrated: wfdb would assume 200 adu/mV)"
    match = _GAIN.match(tokens[2])
    if match is None:
        return "", f"its ADC gain field {tokens[2]!r} in the WFDB header is not a number"
    unit = (match["units"] or "mV").strip()
    if float(match["gain"]) == 0:
        return unit, "its ADC gain is 0 in the WFDB header (an uncalibrated signal, WFDB spec)"
    return unit, None


def read_header(header: Path) -> tuple[wfdb.Record | wfdb.MultiRecord, list[SignalSpec]]:
    """The wfdb header object and one `SignalSpec` per signal (segments merged for multi-segment records)."""
    for line in _signal_lines(header_text(header)):  # signal files, or segment names: next to the header
        name = line.split()[0]
        if name != "~" and (Path(name).name != name or name in (".", "..")):
            raise RecordError(f"{header}: {name!r} is not a plain file name; a WFDB record's files lie next to "
                              "its header")
    try:
        rec = wfdb.rdheader(str(header.with_suffix("")), rd_segments=True)
    except Exception as error:  # wfdb raises bare Exceptions, ValueErrors and IndexErrors on bad headers
        raise RecordError(f"{header}: not a readable WFDB header ({type(error).__name__}: {error})") from None
    if isinstance(rec, wfdb.MultiRecord):
        return rec, _multi_segment_specs(header, rec)
    if rec.n_sig and len(rec.sig_name or []) != rec.n_sig:
        raise RecordError(f"{header}: the record line says {rec.n_sig} signals, the header describes {len(rec.sig_name)}")
    lines = _signal_lines(header_text(header))
    frames = record_frames(header, rec)
    specs = []
    for i, name in enumerate(signal_names(rec)):
        unit, problem = _calibration(lines[i])
        per_frame = int(rec.samps_per_frame[i] or 1)
        specs.append(SignalSpec(name, float(rec.fs) * per_frame, frames * per_frame, unit, problem,
                                None if problem else _limits(rec, i), None if problem else 1 / abs(rec.adc_gain[i])))
    return rec, specs


def _limits(rec: wfdb.Record, i: int) -> tuple[float, float] | None:
    """Physical range of signal i: its ADC resolution (else its format's width) around its ADC zero."""
    bits = int(rec.adc_res[i] or 0) if rec.adc_res else 0
    bits = bits or {"8": 8, "16": 16, "24": 24, "32": 32, "80": 8, "212": 12, "310": 10, "311": 10}.get(rec.fmt[i], 0)
    if not bits or not rec.adc_gain[i]:
        return None
    zero = int(rec.adc_zero[i] or 0) if rec.adc_zero else 0
    low, high = zero - 2 ** (bits - 1), zero + 2 ** (bits - 1) - 1
    baseline = int(rec.baseline[i] or 0) if rec.baseline else 0
    return tuple(sorted(((low - baseline) / rec.adc_gain[i], (high - baseline) / rec.adc_gain[i])))


def signal_names(rec: wfdb.Record) -> list[str]:
    """Signal names of a single-segment record; 'signal <i>' where the header gives no description."""
    return [name if name is not None else f"signal {i}" for i, name in enumerate(rec.sig_name or [None] * rec.n_sig)]


def _multi_segment_specs(header: Path, rec: wfdb.MultiRecord) -> list[SignalSpec]:
    """Signals of a multi-segment record: names from the layout segment (variable) or the first one (fixed)."""
    segments = [(name, seg) for name, seg in zip(rec.seg_name, rec.segments) if seg is not None]
    if not segments:
        raise RecordError(f"{header}: a multi-segment record whose segments are all null ('~')")
    if any(max(seg.samps_per_frame or [1]) > 1 for _, seg in segments):
        raise RecordError(f"{header}: multi-segment records with several samples per frame are not supported; "
                          "convert the record to a single segment (e.g. wfdb's rdrecord(m2s=True) then wrsamp)")
    names = list(segments[0][1].sig_name)
    unit: dict[str, str] = {}
    problem: dict[str, str] = {}
    for seg_name, seg in segments:
        for line, name in zip(_signal_lines(header_text(header.parent / f"{seg_name}.hea")), seg.sig_name):
            if name not in names:
                raise RecordError(f"{header}: segment {seg_name} holds signal {name!r}, which the "
                                  f"{'layout' if rec.layout == 'variable' else 'first'} segment lacks; the record is corrupt")
            seg_unit, seg_problem = _calibration(line)
            unit.setdefault(name, seg_unit)
            if seg_problem and name not in problem:
                problem[name] = f"{seg_problem} (segment {seg_name})"
    n = int(rec.sig_len or sum(int(length) for length in rec.seg_len))
    return [SignalSpec(name, float(rec.fs), n, unit.get(name, "mV"), problem.get(name)) for name in names]


def _bytes_per_frame(rec: wfdb.Record, idx: list[int]) -> float:
    return sum(_BITS_PER_SAMPLE[rec.fmt[i]] * int(rec.samps_per_frame[i] or 1) for i in idx) / 8


def _file_groups(rec: wfdb.Record) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(rec.file_name or []):
        groups.setdefault(name, []).append(i)
    return groups


def record_frames(header: Path, rec: wfdb.Record) -> int:
    """Frames of a single-segment record: the header's sample count, else the signal file's size."""
    if rec.sig_len is not None:
        return int(rec.sig_len)
    for file_name, idx in _file_groups(rec).items():
        path = header.parent / file_name
        if path.is_file() and all(rec.fmt[i] in _BITS_PER_SAMPLE for i in idx):
            offset = (rec.byte_offset[idx[0]] if rec.byte_offset else None) or 0
            return int((path.stat().st_size - offset) // _bytes_per_frame(rec, idx))
    return 0


def check_signal_files(header: Path, rec: wfdb.Record | wfdb.MultiRecord) -> None:
    """Raise when a signal file named by the header is missing or its size disagrees with the header."""
    if isinstance(rec, wfdb.MultiRecord):
        for seg_name, seg in zip(rec.seg_name, rec.segments):
            if seg is not None and seg.sig_len:
                check_signal_files(header.parent / f"{seg_name}.hea", seg)
        return
    for file_name, idx in _file_groups(rec).items():
        path = header.parent / file_name
        if file_name == "~":
            continue
        if not path.is_file():
            raise RecordError(
                f"{path}: signal file named by {header.name} is missing; put it next to the header "
                "(inspect reads the header alone)"
            )
        if rec.sig_len is None or not all(rec.fmt[i] in _BITS_PER_SAMPLE for i in idx):
            continue
        offset = (rec.byte_offset[idx[0]] if rec.byte_offset else None) or 0
        expected = offset + int(np.ceil(rec.sig_len * _bytes_per_frame(rec, idx)))
        size = path.stat().st_size
        slack = _MAT_SLACK_BYTES if path.suffix.lower() == ".mat" else 0
        slack += _PACKED_SLACK_BYTES if any(rec.fmt[i] in ("212", "310", "311") for i in idx) else 0
        if not expected <= size <= expected + slack:
            what = "truncated" if size < expected else "longer than the header says"
            per_frame = sum(int(rec.samps_per_frame[i] or 1) for i in idx)
            raise RecordError(
                f"{path}: {size} bytes, but {header.name} describes {rec.sig_len} frames x {per_frame} samples "
                f"(format {'/'.join(sorted({rec.fmt[i] for i in idx}))}) = {expected} bytes ({what}); "
                "re-download the record or fix the header"
            )


def read_signals(header: Path, rec: wfdb.Record | wfdb.MultiRecord, names: list[str]) -> dict[str, np.ndarray]:
    """{name: physical values at the signal's own rate} (float64; NaN where WFDB marks a sample invalid)."""
    if not names:
        return {}
    check_signal_files(header, rec)
    base = str(header.with_suffix(""))
    try:
        if isinstance(rec, wfdb.MultiRecord):
            order = _multi_segment_names(rec)
            out = wfdb.rdrecord(base, m2s=True, physical=True, channels=[order.index(n) for n in names])
            return {n: np.asarray(out.p_signal[:, j], np.float64) for j, n in enumerate(names)}  # [n_samples]
        order = signal_names(rec)
        out = wfdb.rdrecord(base, physical=True, smooth_frames=False, channels=[order.index(n) for n in names])
    except RecordError:
        raise
    except Exception as error:
        raise RecordError(f"{header}: cannot read the signals ({type(error).__name__}: {error})") from None
    return {n: np.asarray(x, np.float64) for n, x in zip(names, out.e_p_signal)}  # each [frames x per frame]


def _multi_segment_names(rec: wfdb.MultiRecord) -> list[str]:
    return list(next(seg for seg in rec.segments if seg is not None).sig_name)
