"""Hypnograms that drive the synthetic corpus: the packaged real ones, and user files.

A `Hypnogram` is what one synthetic night follows: a stage per 30 s epoch (0 W, 1 N1, 2 N2, 3 N3,
4 REM, 5 undefined) and the target-arousal label regions as [start, stop) sample pairs at 200 Hz,
exactly as the PhysioNet 2018 `-arousal.mat` files mark them (+1 samples).

The package ships `assets/hypnograms.npz`: the stage sequences and arousal regions of 200 real
training records of the PhysioNet/CinC Challenge 2018 (Ghassemi et al. 2018; Goldberger et al. 2000;
ODC-By 1.0, see `assets/README.md`), taken from `shared/data/physionet2018/labels.npz` by
`build_asset`. The last 10 of them (`HELD_OUT`) are never used by `synth` unless asked for, so a demo
can show a night that a model trained on a default corpus never saw.

User files (`load_hypnograms`):
- `.npz` holding several nights in the asset's layout (`records`, `n_samples`, `epoch_offsets`,
  `stage`, optional `region_offsets` + `arousal_regions`): `labels.npz` itself works;
- `.npz` holding one night: `stages` (per epoch) and optional `arousal_regions` ([K, 2] samples at
  200 Hz) or `arousal_regions_s` ([K, 2] seconds);
- `.txt` / `.csv`: one stage per line (`W N1 N2 N3 N4 R REM 0-5 ?`; `#` comments; a first line that
  is not a stage is a header), and optional lines `arousal,START_S,STOP_S` (seconds);
- `.edf` (EDF+ annotations, e.g. Sleep-EDF hypnograms): `Sleep stage W|1|2|3|4|R|N1|N2|N3|?`
  annotations with their durations, and annotations containing `arousal` as regions.

PhysioNet-2018 annotations can mark unscored time only before scoring starts: leading undefined
epochs are kept, trailing ones are dropped, and an undefined epoch after scoring starts takes the
previous epoch's stage (with a warning).
"""

from __future__ import annotations

import csv
import warnings
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from ..modalities import EPOCH_SECONDS, STAGE_UNDEFINED

FS = 200  # Hz: the PhysioNet 2018 sampling rate, of signals and label samples alike
EPOCH_SAMPLES = EPOCH_SECONDS * FS  # 6000
ASSET = "hypnograms.npz"
N_HELD_OUT = 10
# The last N_HELD_OUT records of the packaged asset (a test checks this list against the asset).
HELD_OUT: tuple[str, ...] = (
    "tr13-0508", "tr13-0547", "tr13-0576", "tr13-0627", "tr13-0681",
    "tr14-0003", "tr14-0110", "tr14-0193", "tr14-0258", "tr14-0291",
)
# Real records whose scoring starts at sample 0: left out of the asset (see shared/data/README.md).
_SCORED_FROM_SAMPLE_0 = ("tr03-0314", "tr05-0326", "tr07-0602")

_STAGE_WORDS = {
    "w": 0, "wake": 0, "0": 0,
    "n1": 1, "s1": 1, "1": 1,
    "n2": 2, "s2": 2, "2": 2,
    "n3": 3, "s3": 3, "3": 3, "n4": 3, "s4": 3, "4": 3,
    "r": 4, "rem": 4, "5": STAGE_UNDEFINED,
    "?": STAGE_UNDEFINED, "u": STAGE_UNDEFINED, "undefined": STAGE_UNDEFINED, "unscored": STAGE_UNDEFINED,
    "m": STAGE_UNDEFINED, "movement": STAGE_UNDEFINED, "movement time": STAGE_UNDEFINED,
}
# In files, integers are PhysioNet codes (0 W ... 4 REM, 5 undefined); "4" in a text file is REM
# only when written as a code, so text files with R&K stage 4 must write "N4"/"S4" (= N3).
_CODE_WORDS = {"0": 0, "1": 1, "2": 2, "3": 3, "4": 4, "5": STAGE_UNDEFINED}


@dataclass(frozen=True)
class Hypnogram:
    """One night's labels: stage per 30 s epoch and target-arousal label regions (samples at 200 Hz)."""

    name: str
    stages: np.ndarray  # [n_epochs] int8, 0..4, 5 = undefined
    arousal_regions: np.ndarray  # [K, 2] int64 [start, stop) samples at 200 Hz, sorted, disjoint
    n_samples: int  # record length in samples at 200 Hz (>= n_epochs * 6000 - 5999)

    def __post_init__(self) -> None:
        stages = np.asarray(self.stages, np.int8)
        if stages.ndim != 1 or len(stages) == 0:
            raise ValueError(f"hypnogram {self.name!r}: needs at least one epoch")
        if stages.min() < 0 or stages.max() > STAGE_UNDEFINED:
            raise ValueError(f"hypnogram {self.name!r}: stages must be 0..5 (W N1 N2 N3 REM undefined)")
        regions = np.asarray(self.arousal_regions, np.int64).reshape(-1, 2)
        regions = regions[np.argsort(regions[:, 0], kind="stable")] if len(regions) else regions
        object.__setattr__(self, "stages", stages)
        object.__setattr__(self, "arousal_regions", regions)
        object.__setattr__(self, "n_samples", int(self.n_samples))

    @property
    def n_epochs(self) -> int:
        return len(self.stages)

    @property
    def hours(self) -> float:
        return self.n_samples / FS / 3600

    def crop(self, start_epoch: int, n_epochs: int, name: str | None = None) -> "Hypnogram":
        """Epochs [start_epoch, start_epoch + n_epochs), arousal regions shifted and clipped."""
        start_epoch = int(np.clip(start_epoch, 0, self.n_epochs - 1))
        stop_epoch = min(start_epoch + n_epochs, self.n_epochs)
        lo, hi = start_epoch * EPOCH_SAMPLES, stop_epoch * EPOCH_SAMPLES
        regions = np.clip(self.arousal_regions, lo, hi) - lo
        regions = regions[regions[:, 1] > regions[:, 0]]
        return Hypnogram(name or self.name, self.stages[start_epoch:stop_epoch], regions, hi - lo)


def normalise_stages(stages: np.ndarray, name: str) -> np.ndarray:
    """Keep leading undefined epochs, drop trailing ones, fill inner ones with the previous stage."""
    stages = np.asarray(stages, np.int8).copy()
    scored = np.flatnonzero(stages != STAGE_UNDEFINED)
    if len(scored) == 0:
        raise ValueError(f"hypnogram {name!r}: no scored epoch (every epoch is undefined)")
    stages = stages[: scored[-1] + 1]
    inner = np.flatnonzero(stages[scored[0]:] == STAGE_UNDEFINED) + scored[0]
    if len(inner):
        warnings.warn(
            f"hypnogram {name!r}: {len(inner)} undefined epoch(s) after scoring starts (first: epoch "
            f"{inner[0]}); PhysioNet-2018 annotations cannot mark them, so they take the previous stage",
            stacklevel=3,
        )
        for i in inner:  # few, and each depends on the one before
            stages[i] = stages[i - 1]
    return stages


def _from_arrays(data, names: list[str] | None = None) -> list[Hypnogram]:
    """Nights from arrays in the asset / labels.npz layout."""
    records = [str(r) for r in data["records"]]
    offsets = np.asarray(data["epoch_offsets"], np.int64)
    stage = np.asarray(data["stage"], np.int8)
    n_samples = np.asarray(data["n_samples"], np.int64)
    has_regions = "region_offsets" in data and "arousal_regions" in data
    if has_regions:
        r_off = np.asarray(data["region_offsets"], np.int64)
        regions = np.asarray(data["arousal_regions"], np.int64)
    wanted = set(names) if names is not None else None
    out = []
    for i, record in enumerate(records):
        if wanted is not None and record not in wanted:
            continue
        reg = regions[r_off[i]:r_off[i + 1]] if has_regions else np.zeros((0, 2), np.int64)
        out.append(Hypnogram(record, stage[offsets[i]:offsets[i + 1]], reg, int(n_samples[i])))
    return out


@lru_cache(maxsize=1)
def packaged_hypnograms() -> tuple[Hypnogram, ...]:
    """All 200 packaged real hypnograms, in asset order (the last 10 are `HELD_OUT`)."""
    with resources.files("physioserve").joinpath("assets", ASSET).open("rb") as f:
        with np.load(f) as data:
            return tuple(_from_arrays(data))


def default_hypnograms() -> tuple[Hypnogram, ...]:
    """The packaged hypnograms that `synth` uses by default: all but `HELD_OUT`."""
    return tuple(h for h in packaged_hypnograms() if h.name not in HELD_OUT)


def held_out_hypnograms() -> tuple[Hypnogram, ...]:
    """The packaged hypnograms that `synth` never uses by default."""
    return tuple(h for h in packaged_hypnograms() if h.name in HELD_OUT)


def _parse_stage(token: str, rechtschaffen_kales: bool = False) -> int | None:
    """Stage code of a token; with `rechtschaffen_kales` (EDF 'Sleep stage 4'), '4' is N3, not a code."""
    key = token.strip().casefold().replace("sleep stage", "").strip()
    if rechtschaffen_kales and key in ("1", "2", "3", "4"):
        return min(int(key), 3)
    if key in _CODE_WORDS:
        return _CODE_WORDS[key]
    return _STAGE_WORDS.get(key)


def _regions_from_seconds(regions_s, n_samples: int) -> np.ndarray:
    regions = np.round(np.asarray(regions_s, float).reshape(-1, 2) * FS).astype(np.int64)
    regions = np.clip(regions, 0, n_samples)
    return regions[regions[:, 1] > regions[:, 0]]


def _hypnogram(name: str, stages, regions: np.ndarray, n_samples: int | None = None) -> Hypnogram:
    stages = normalise_stages(np.asarray(stages), name)
    n = len(stages) * EPOCH_SAMPLES if n_samples is None else min(int(n_samples), len(stages) * EPOCH_SAMPLES)
    regions = np.clip(np.asarray(regions, np.int64).reshape(-1, 2), 0, n)
    return Hypnogram(name, stages, regions[regions[:, 1] > regions[:, 0]], n)


def _load_text(path: Path) -> list[Hypnogram]:
    stages: list[int] = []
    regions: list[tuple[float, float]] = []
    with path.open(newline="") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            cells = [c.strip() for c in row if c.strip()]
            if not cells or cells[0].startswith("#"):
                continue
            if len(cells) == 1 and " " in cells[0]:
                cells = cells[0].split()
            if cells[0].casefold() == "arousal":
                if len(cells) != 3:
                    raise ValueError(f"{path}:{line_no}: an arousal line is 'arousal,START_S,STOP_S'")
                regions.append((float(cells[1]), float(cells[2])))
                continue
            code = _parse_stage(cells[-1])
            if code is None:
                if not stages and line_no == 1:
                    continue  # header line
                raise ValueError(
                    f"{path}:{line_no}: {cells[-1]!r} is not a stage; use W N1 N2 N3 R (or 0-5, ?)"
                )
            stages.append(code)
    if not stages:
        raise ValueError(f"{path}: no stages found; write one stage per line (W N1 N2 N3 R)")
    n = len(stages) * EPOCH_SAMPLES
    return [_hypnogram(path.stem, stages, _regions_from_seconds(regions, n))]


def _load_edf(path: Path) -> list[Hypnogram]:
    import edfio

    edf = edfio.read_edf(path)
    stage_spans: list[tuple[float, float, int]] = []
    regions: list[tuple[float, float]] = []
    for ann in edf.annotations:
        text = ann.text.strip()
        duration = float(ann.duration or 0.0)
        low = text.casefold()
        if low.startswith("sleep stage"):
            code = _parse_stage(low, rechtschaffen_kales=True)
            if code is None:
                raise ValueError(f"{path}: unknown stage annotation {text!r}")
            stage_spans.append((float(ann.onset), duration or EPOCH_SECONDS, code))
        elif "arousal" in low and duration > 0:
            regions.append((float(ann.onset), float(ann.onset) + duration))
    if not stage_spans:
        raise ValueError(f"{path}: no 'Sleep stage ...' annotations; is this an EDF+ hypnogram?")
    end = max(onset + dur for onset, dur, _ in stage_spans)
    n_epochs = int(np.ceil(end / EPOCH_SECONDS - 1e-6))
    stages = np.full(n_epochs, STAGE_UNDEFINED, np.int8)
    for onset, dur, code in stage_spans:
        first = int(round(onset / EPOCH_SECONDS))
        last = max(first + 1, int(round((onset + dur) / EPOCH_SECONDS)))
        stages[first:last] = code
    n = n_epochs * EPOCH_SAMPLES
    return [_hypnogram(path.stem, stages, _regions_from_seconds(regions, n))]


def _load_npz(path: Path) -> list[Hypnogram]:
    with np.load(path) as data:
        if "epoch_offsets" in data:
            nights = _from_arrays(data)
            return [_hypnogram(h.name, h.stages, h.arousal_regions, h.n_samples) for h in nights]
        if "stages" not in data:
            raise ValueError(f"{path}: expected 'stages' (one night) or the labels.npz layout (several)")
        stages = np.asarray(data["stages"])
        n = len(stages) * EPOCH_SAMPLES
        if "arousal_regions" in data:
            regions = np.asarray(data["arousal_regions"], np.int64)
        elif "arousal_regions_s" in data:
            regions = _regions_from_seconds(data["arousal_regions_s"], n)
        else:
            regions = np.zeros((0, 2), np.int64)
        return [_hypnogram(path.stem, stages, regions)]


def load_hypnograms(path: str | Path) -> list[Hypnogram]:
    """Read user hypnograms from `.npz`, `.txt`/`.csv` or EDF+ (see module doc)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"hypnogram file {path} does not exist")
    suffix = path.suffix.casefold()
    if suffix == ".npz":
        return _load_npz(path)
    if suffix in (".txt", ".csv", ".tsv"):
        return _load_text(path)
    if suffix in (".edf", ".bdf"):
        return _load_edf(path)
    raise ValueError(f"{path}: unknown hypnogram format {suffix!r}; use .npz, .txt, .csv or .edf")


def build_asset(labels_npz: str | Path, out_path: str | Path, n_records: int = 200) -> list[str]:
    """Write the compact packaged asset from the challenge's `labels.npz` (run once, by maintainers).

    Takes `n_records` records spread evenly over the (sorted) record list, leaving out the three
    records whose scoring starts at sample 0. Returns the record names, in asset order.
    """
    with np.load(labels_npz) as data:
        names = [str(r) for r in data["records"]]
        eligible = [i for i, r in enumerate(names) if r not in _SCORED_FROM_SAMPLE_0]
        pick = [eligible[int(j)] for j in np.round(np.linspace(0, len(eligible) - 1, n_records))]
        nights = _from_arrays(data, [names[i] for i in pick])
    stage = np.concatenate([h.stages for h in nights]).astype(np.int8)
    regions = np.concatenate([h.arousal_regions for h in nights]).astype(np.int32)
    np.savez_compressed(
        out_path,
        records=np.array([h.name for h in nights]),
        n_samples=np.array([h.n_samples for h in nights], np.int32),
        epoch_offsets=np.cumsum([0] + [h.n_epochs for h in nights]).astype(np.int32),
        stage=stage,
        region_offsets=np.cumsum([0] + [len(h.arousal_regions) for h in nights]).astype(np.int32),
        arousal_regions=regions,
    )
    return [h.name for h in nights]
