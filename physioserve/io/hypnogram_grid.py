"""The 30 s stage grid every expert hypnogram ends on, and `Hypnogram`, the labels it gives.

Epoch k covers [30k, 30k + 30) s from the recording start; codes 0 W 1 N1 2 N2 3 N3 4 REM 5 undefined
(`modalities.STAGE_NAMES`, `STAGE_UNDEFINED`). Stages given on other epochs or as timed runs combine by
majority of time (`epochs_by_majority`): the stage covering most of the 30 s epoch wins, time no
stage covers counts as undefined; a tie goes to the tied stage nearest the epoch midpoint (30k + 15 s,
where the project reads every other label; the piece holding the midpoint beats one ending there),
the earlier when two are equally near.

Epoch length of a file that gives no times (`infer_epoch_s`): with the recording's length, the one of
30 / 20 / 5 s (R&K 30 s and 20 s epochs, DREAMS 5 s) whose span is 75-110 % of the recording (the
three ranges never overlap), else 30 s; the choice always comes back as a note.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..modalities import EPOCH_SECONDS, STAGE_NAMES, STAGE_UNDEFINED
from ..recording import Labels

W, N1, N2, N3, REM = (STAGE_NAMES.index(s) for s in ("W", "N1", "N2", "N3", "REM"))
UNDEFINED = STAGE_UNDEFINED
CANDIDATE_EPOCHS_S = (30.0, 20.0, 5.0)  # epoch lengths inferred from the recording (R&K 30 s and 20 s, DREAMS 5 s)
FIT_RANGE = (0.75, 1.10)  # hypnogram span / recording duration that counts as a fit (disjoint for 30/20/5 s)


@dataclass
class Hypnogram(Labels):
    """An expert hypnogram on the 30 s grid, and how it was read.

    format: key of `hypnogram.FORMATS`; kind: what the content was (e.g. 'MIT-BIH slpdb .st'); epoch_s: the
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


def grid_note(epoch_s: float | None) -> list[str]:
    if epoch_s is None or epoch_s == EPOCH_SECONDS:
        return []
    if EPOCH_SECONDS % epoch_s == 0:
        return [f"{int(EPOCH_SECONDS // epoch_s)} sub-epochs of {epoch_s:g} s combine into each 30 s epoch by majority"]
    return [f"{epoch_s:g} s epochs do not tile 30 s: each 30 s epoch takes the stage covering most of it"]


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
