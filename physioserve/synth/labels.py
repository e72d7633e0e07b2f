"""The challenge's label conventions, so that `.arousal` and `-arousal.mat` agree with the hypnogram.

In the PhysioNet 2018 files (checked sample for sample on tr03-0005; `physioserve.io` rebuilds the
`.mat` from the `.arousal` the same way), with annotation samples a..b and `.mat` index = sample - 1:
- a target arousal `(arousal_x` a ... `arousal_x)` b is +1 over [a - 401, b + 2000) (2 s before,
  10 s after);
- a respiratory event `(resp_x` a ... `resp_x)` b is -1 (not scored) over [a - 2001, b + 2000);
- a run of wake starting at a and ending at b (the next stage note) is -1 over [a - 2002, b + 1999);
- -1 wins over +1.
So the +1 regions of real files are event intervals widened and then clipped by unscored time. To
write a hypnogram's regions into both files, `challenge_arousals` finds for every region an
annotated (physiological) arousal interval that the widening and clipping turn back into exactly
that region: [start + 401, stop - 2000) for regions of >= 15 s; for shorter (clipped) regions an
interval that reaches into the unscored time that clipped them, or, where nothing clipped them (about
1 % of the real regions: the clipping event is not in `labels.npz`), a hypopnea placed where the
clipping respiratory event must have been. A region that cannot be written this way (a sliver cut by
a crop) is dropped from the hypnogram, which is then what the record's labels equal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .hypnograms import EPOCH_SAMPLES, FS, Hypnogram

AROUSAL_BEFORE, AROUSAL_AFTER = 401, 2000  # +1 region = [onset - 401, offset + 2000)
RESP_BEFORE, RESP_AFTER = 2001, 2000  # -1 region = [onset - 2001, offset + 2000)
WAKE_BEFORE, WAKE_AFTER = 2002, 1999  # -1 region = [first W sample - 2002, next stage note + 1999)
MIN_AROUSAL = 3 * FS  # AASM: an arousal lasts at least 3 s
FORCED_RESP = 15 * FS  # length of a hypopnea placed to explain a clipped region
_LONG = AROUSAL_BEFORE + AROUSAL_AFTER + MIN_AROUSAL  # regions this long need no clipping


def wake_runs(stages: np.ndarray, n: int) -> list[tuple[int, int]]:
    """[start, stop) samples of each run of scored wake (the last run ends at n)."""
    w = np.append(np.asarray(stages) == 0, False).astype(np.int8)
    edges = np.diff(np.concatenate([[0], w]))
    runs = []
    for first, stop in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
        runs.append((int(first) * EPOCH_SAMPLES, n if stop >= len(stages) else int(stop) * EPOCH_SAMPLES))
    return runs


def unscored_mask(stages: np.ndarray, n: int, resp_events=()) -> np.ndarray:
    """-1 samples of the `.mat`: wake runs and respiratory events with their margins, [n] bool."""
    mask = np.zeros(n, bool)
    for a, b in wake_runs(stages, n):
        mask[max(a - WAKE_BEFORE, 0): max(b + WAKE_AFTER, 0)] = True
    for a, b in np.asarray(resp_events, np.int64).reshape(-1, 2):
        mask[max(a - RESP_BEFORE, 0): max(b + RESP_AFTER, 0)] = True
    return mask


def arousal_vector(stages: np.ndarray, n: int, annotations: np.ndarray, resp_events) -> np.ndarray:
    """`data/arousals` [n] float64 built from the annotations exactly as the challenge built it."""
    vec = np.zeros(n)
    for a, b in np.asarray(annotations, np.int64).reshape(-1, 2):
        vec[max(a - AROUSAL_BEFORE, 0): max(min(b + AROUSAL_AFTER, n), 0)] = 1.0
    vec[unscored_mask(stages, n, resp_events)] = -1.0
    return vec


def regions_of(mask: np.ndarray) -> np.ndarray:
    """[start, stop) runs of True in a boolean mask: [K, 2] int64."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)], axis=1).astype(np.int64)


@dataclass(frozen=True)
class ChallengeArousals:
    hypnogram: Hypnogram  # regions clipped to scored time, unwritable slivers dropped
    annotations: np.ndarray  # [K, 2] annotated arousal intervals, one per kept region
    forced_resp: np.ndarray  # [R, 2] hypopneas that explain clipped regions

    @property
    def blocked(self) -> np.ndarray:
        """Sample regions other respiratory events must keep away from (labels, annotations, forced)."""
        zones = [self.hypnogram.arousal_regions, self.forced_resp]
        zones.append(self.annotations + np.array([-AROUSAL_BEFORE, AROUSAL_AFTER]))
        return np.concatenate(zones).reshape(-1, 2)


def _sleep_span(stages: np.ndarray, a: int, b: int) -> bool:
    e0, e1 = a // EPOCH_SAMPLES, -(-b // EPOCH_SAMPLES)
    span = np.asarray(stages)[e0:e1]
    return e1 <= len(stages) and len(span) > 0 and bool(np.all((span >= 1) & (span <= 4)))


def challenge_arousals(hyp: Hypnogram) -> ChallengeArousals:
    """Annotated arousal intervals (and explaining hypopneas) that reproduce `hyp`'s regions; see module doc."""
    n = hyp.n_samples
    wake = unscored_mask(hyp.stages, n)
    target = np.zeros(n, bool)
    for a, b in hyp.arousal_regions:
        target[max(a, 0): min(b, n)] = True
    regions = regions_of(target & ~wake)  # what the challenge's converter would keep
    unscored = wake.copy()
    taken = np.zeros(n, bool)  # +1 regions and the rebuild zones of annotations made so far
    taken[target] = True
    kept, annotations, forced = [], [], []
    for s, t in regions:
        s, t = int(s), int(t)
        start_ok = s == 0 or unscored[s - 1]
        end_ok = t >= n or unscored[t]
        if t - s >= _LONG:
            ann = (s + AROUSAL_BEFORE, t - AROUSAL_AFTER)
        else:
            if not end_ok and not start_ok:
                for a, b in ((t + RESP_BEFORE, t + RESP_BEFORE + FORCED_RESP), (s - RESP_AFTER - FORCED_RESP, s - RESP_AFTER)):
                    lo, hi = a - RESP_BEFORE, b + RESP_AFTER
                    if lo >= 0 and hi <= n and _sleep_span(hyp.stages, a, b) and not taken[lo:hi].any():
                        forced.append((a, b))
                        unscored[lo:hi] = True
                        end_ok, start_ok = t >= n or bool(unscored[t]), s == 0 or bool(unscored[s - 1])
                        break
            if end_ok:
                a = s if start_ok else s + AROUSAL_BEFORE
                ann = (a, min(a + MIN_AROUSAL, n))
                if a >= n - 1:
                    continue
            elif start_ok:
                b = t - AROUSAL_AFTER
                a = min(s + AROUSAL_BEFORE, b - MIN_AROUSAL)
                if a < 0:
                    continue
                ann = (a, b)
            else:
                continue  # cannot be written: drop
        kept.append((s, t))
        annotations.append(ann)
        taken[max(ann[0] - AROUSAL_BEFORE, 0): min(ann[1] + AROUSAL_AFTER, n)] = True
    adjusted = Hypnogram(hyp.name, hyp.stages, np.array(kept, np.int64).reshape(-1, 2), n)
    return ChallengeArousals(
        adjusted, np.array(annotations, np.int64).reshape(-1, 2), np.array(forced, np.int64).reshape(-1, 2)
    )
