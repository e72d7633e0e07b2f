"""A small reader of the WFDB annotation format (MIT format), notes at sample 0 included.

wfdb 4.3.1's `rdann` drops every NOTE at sample 0 (it takes them all for the '## time resolution'
header), and three PhysioNet 2018 records put their first stage note there. The format is simple
(https://physionet.org/physiotools/wag/annot-5.htm): a stream of 16-bit little-endian words, each
with a 6-bit code A (high bits) and a 10-bit field I (low bits):

- A = 0, I = 0: end of file; A = 0, I > 0: a null annotation that only moves the time by I;
- A = 59 (SKIP): the next two words hold a signed 32-bit time step, high word first;
- A = 60, 61, 62 (NUM, SUB, CHN): a field of the previous annotation (value in the low byte); NUM and
  CHN carry over to the following annotations until changed, SUB does not;
- A = 63 (AUX): I bytes of text follow (padded to an even count), the previous annotation's note;
- A = 1..49: an annotation of that type, I samples after the previous one (NOTE = 22).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import RecordError

SKIP, NUM, SUB, CHN, AUX = 59, 60, 61, 62, 63
NOTE = 22
TIME_RESOLUTION = "## time resolution:"


@dataclass
class Annotation:
    """One annotation: absolute sample, type code and auxiliary note."""

    sample: int
    code: int
    aux: str = ""
    subtype: int = 0
    chan: int = 0
    num: int = 0


def read_annotations(path: str | Path) -> tuple[list[Annotation], float | None]:
    """All annotations of a WFDB annotation file in file order, and its '## time resolution' (or None).

    The time-resolution header note itself is not returned. Raises `RecordError` naming the file
    when it is truncated or malformed.
    """
    path = Path(path)
    data = path.read_bytes()
    if len(data) % 2:
        raise RecordError(f"{path}: odd byte count {len(data)}; a WFDB annotation file is 16-bit words (truncated?)")
    words = np.frombuffer(data, dtype="<u2").astype(np.int64)  # [n_words]
    annotations: list[Annotation] = []
    t = 0
    i = 0
    while i < len(words):
        code, field = int(words[i]) >> 10, int(words[i]) & 0x3FF
        if code == 0 and field == 0:
            return _split_header(annotations)
        if code == SKIP:
            if i + 2 >= len(words):
                raise RecordError(f"{path}: file ends inside a SKIP at byte {2 * i} (truncated)")
            step = (int(words[i + 1]) << 16) | int(words[i + 2])
            t += step - (1 << 32) if step >= 1 << 31 else step
            i += 3
            continue
        if code in (NUM, SUB, CHN, AUX):
            if not annotations:
                raise RecordError(f"{path}: field word (code {code}) before any annotation at byte {2 * i}")
            last = annotations[-1]
            if code == AUX:
                n_words = (field + 1) // 2
                if i + 1 + n_words > len(words):
                    raise RecordError(f"{path}: file ends inside a note at byte {2 * i} (truncated)")
                raw = data[2 * (i + 1) : 2 * (i + 1) + field]
                last.aux = raw.split(b"\0", 1)[0].decode("latin-1")
                i += 1 + n_words
            else:
                value = field & 0xFF
                signed = value - 256 if value >= 128 else value
                if code == NUM:
                    last.num = signed
                elif code == SUB:
                    last.subtype = signed
                else:
                    last.chan = value
                i += 1
            continue
        t += field
        if code != 0:  # code 0 with I > 0 is a null annotation: it only moves the time
            if t < 0:
                raise RecordError(f"{path}: annotation at negative sample {t} (byte {2 * i}); the file is corrupt")
            previous = annotations[-1] if annotations else Annotation(0, 0)
            annotations.append(Annotation(sample=t, code=code, chan=previous.chan, num=previous.num))
        i += 1
    raise RecordError(f"{path}: no end-of-file word; the annotation file is truncated")


def _split_header(annotations: list[Annotation]) -> tuple[list[Annotation], float | None]:
    """Remove the '##' header notes at sample 0 (time resolution, label definitions); parse the rate."""
    header = [a for a in annotations if a.sample == 0 and a.code == NOTE and a.aux.startswith("##")]
    fs = None
    for note in header:
        if note.aux.startswith(TIME_RESOLUTION):
            try:
                fs = float(note.aux[len(TIME_RESOLUTION) :].strip())
            except ValueError:
                fs = None
    return [a for a in annotations if not any(a is h for h in header)], fs
