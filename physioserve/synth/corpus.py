"""A whole synthetic corpus: plan N records, generate them in parallel, write `age-sex.csv`.

Determinism: record i draws everything from `SeedSequence(seed, spawn_key=(..., i))` streams, and
the hypnogram order from per-cycle permutations seeded by `seed` alone, so a record's files depend
only on (seed, i, hours, hypnogram pool): not on the number of records, workers or their order.

Names: labelled records are `tr90-0001`, `tr90-0002`, ... (record i -> number i + 1; the real
challenge uses tr03 ... tr14, so a `tr9x` name says "synthetic"). With `unlabelled=K` the last K
records are written like the challenge's test set, signals only (`.hea` + `.mat`), and named
`te90-XXXX` (same numbering), as the challenge names its test records `teXX-XXXX`.

Sites: by default each record draws its own site from the training distribution
(`sites.draw_training_site`: PhysioNet 2018 layout, varied amplitude, slope, noise, artefacts,
filters); with `site=` every record uses that profile. Formats: `physionet` (the challenge's
layout, 200 Hz sites only) or `edf` (one EDF+ file per record, `OUT/tr90-0001.edf`, at the site's
rate with the labels as annotations, see `synth.edf`).
"""

from __future__ import annotations

import csv
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..modalities import STAGE_UNDEFINED
from .hypnograms import FS, Hypnogram, default_hypnograms
from .edf import write_edf
from .hardware import resample, to_units
from .physiology import Night, generate_night
from .sites import SiteProfile, draw_training_site
from .subject import Subject, draw_age, draw_subject
from .writer import write_record

FORMATS = ("physionet", "edf")

_PLAN, _NIGHT, _ORDER = 0, 1, 2  # first element of the spawn keys


@dataclass(frozen=True)
class RecordPlan:
    """Everything that decides one record, fixed before any signal is made."""

    index: int
    name: str
    hypnogram: Hypnogram  # already cropped to the record's length
    source: str  # name of the driving hypnogram
    age: int
    sex: str
    labelled: bool
    seed: int
    site: SiteProfile


def record_name(index: int, labelled: bool = True) -> str:
    """`tr90-0001` for record 0; `te90-...` for unlabelled records; `tr91-...` after 9999 records."""
    prefix = "tr" if labelled else "te"
    return f"{prefix}{90 + index // 9999}-{index % 9999 + 1:04d}"


def age_proxy(hypnograms: list[Hypnogram] | tuple[Hypnogram, ...]) -> np.ndarray:
    """z-score over the pool of (wake after sleep onset share - N3 share): higher = 'older' night."""
    scores = []
    for h in hypnograms:
        scored = h.stages[h.stages != STAGE_UNDEFINED]
        sleep = np.flatnonzero(scored != 0)
        after_onset = scored[sleep[0]:] if len(sleep) else scored
        scores.append(np.mean(after_onset == 0) - np.mean(scored == 3))
    scores = np.asarray(scores, float)
    sd = scores.std()
    return (scores - scores.mean()) / sd if sd > 0 else np.zeros_like(scores)


def _crop(rng: np.random.Generator, hyp: Hypnogram, hours: float | None) -> Hypnogram:
    if hours is None:
        return hyp
    n_epochs = max(int(round(hours * 3600 / 30)), 1)
    if n_epochs >= hyp.n_epochs:
        return hyp
    scored = np.flatnonzero(hyp.stages != STAGE_UNDEFINED)
    # start at most 10 epochs (and never a whole crop) before scoring starts: every crop holds a
    # scored epoch, which the label files need
    lo = max(int(scored[0]) - min(10, n_epochs - 1), 0) if len(scored) else 0
    hi = hyp.n_epochs - n_epochs
    start = int(rng.integers(min(lo, hi), hi + 1))
    return hyp.crop(start, n_epochs)


def plan_corpus(
    n_records: int,
    seed: int = 0,
    hours: float | None = None,
    hypnograms: list[Hypnogram] | tuple[Hypnogram, ...] | None = None,
    unlabelled: int = 0,
    site: SiteProfile | None = None,
) -> list[RecordPlan]:
    """Plans of records 0..n_records-1 (see module doc); the last `unlabelled` are unlabelled.

    `site`: every record's site; None draws one per record from the training distribution.
    """
    if n_records < 1:
        raise ValueError("--records must be at least 1")
    if not 0 <= unlabelled <= n_records:
        raise ValueError(f"--unlabelled must be between 0 and --records ({n_records}), got {unlabelled}")
    if hours is not None and hours <= 0:
        raise ValueError(f"--hours must be positive, got {hours}")
    pool = tuple(default_hypnograms() if hypnograms is None else hypnograms)
    if not pool:
        raise ValueError("no hypnograms to drive the corpus")
    proxy = age_proxy(pool)
    plans = []
    for i in range(n_records):
        cycle, slot = divmod(i, len(pool))
        order = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_ORDER, cycle))).permutation(len(pool))
        k = int(order[slot])
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_PLAN, i)))
        age = draw_age(rng, float(proxy[k]))
        sex = "F" if rng.random() < 0.45 else "M"
        labelled = i < n_records - unlabelled
        name = record_name(i, labelled)
        hypnogram = _crop(rng, pool[k], hours)
        record_site = draw_training_site(rng) if site is None else site
        plans.append(RecordPlan(i, name, hypnogram, pool[k].name, age, sex, labelled, seed, record_site))
    return plans


def generate_record(plan: RecordPlan) -> tuple[Subject, Night]:
    """The subject and the signals of one planned record, in memory (what `synthesize_record` writes)."""
    rng = np.random.default_rng(np.random.SeedSequence(plan.seed, spawn_key=(_NIGHT, plan.index)))
    subject = draw_subject(rng, plan.age, plan.sex)
    return subject, generate_night(plan.hypnogram, subject, rng, plan.site)


def recorded(night: Night, site: SiteProfile) -> np.ndarray:
    """The night as the site's files hold it: at the site's rate, in its units, float32 [C, n]."""
    return to_units(resample(night.signals, site.fs), site)


def synthesize_record(plan: RecordPlan, out_dir: str | Path, fmt: str = "physionet") -> dict:
    """Generate and write one planned record (`fmt` in FORMATS); returns a small summary."""
    t0 = time.perf_counter()
    _, night = generate_record(plan)
    t1 = time.perf_counter()
    signals = recorded(night, plan.site)
    labels = night.hypnogram if plan.labelled else None
    if fmt == "edf":
        write_edf(Path(out_dir) / f"{plan.name}.edf", signals, plan.site, labels, sex=plan.sex, age=plan.age)
    else:
        write_record(
            Path(out_dir), plan.name, signals, labels, night.arousal_annotations, night.resp_events,
            night.resp_kinds, plan.site,
        )
    return {
        "name": plan.name,
        "source": plan.source,
        "hours": plan.hypnogram.n_samples / FS / 3600,
        "generate_s": t1 - t0,
        "write_s": time.perf_counter() - t1,
    }


def write_age_sex(out_dir: Path, plans: list[RecordPlan]) -> Path:
    """`age-sex.csv` with the challenge's columns `Record,Age,Sex`."""
    path = Path(out_dir) / "age-sex.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["Record", "Age", "Sex"])
        for p in plans:
            writer.writerow([p.name, p.age, p.sex])
    return path


def synthesize_corpus(
    out_dir: str | Path,
    n_records: int,
    *,
    hours: float | None = None,
    seed: int = 0,
    hypnograms: list[Hypnogram] | tuple[Hypnogram, ...] | None = None,
    unlabelled: int = 0,
    workers: int | None = None,
    progress: bool = True,
    site: SiteProfile | None = None,
    fmt: str = "physionet",
) -> list[dict]:
    """Plan, generate and write a corpus into `out_dir`; records run in `workers` processes.

    `site`: one profile for every record (None: each draws a training site); `fmt`: "physionet"
    (200 Hz sites) or "edf". ValueError names a site that the format cannot hold.
    """
    from tqdm import tqdm

    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if fmt == "physionet" and site is not None and site.fs != FS:
        raise ValueError(
            f"site {site.name!r} records at {site.fs} Hz; the PhysioNet 2018 layout is 200 Hz only: "
            "write it as EDF (--format edf)"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plans = plan_corpus(n_records, seed, hours, hypnograms, unlabelled, site)
    write_age_sex(out_dir, plans)
    workers = min(workers or os.cpu_count() or 1, len(plans))
    results: list[dict] = []
    bar = tqdm(total=len(plans), unit="record", desc="synth", disable=not progress)
    try:
        if workers <= 1:
            for plan in plans:
                results.append(synthesize_record(plan, out_dir, fmt))
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(synthesize_record, plan, out_dir, fmt) for plan in plans]
                for future in as_completed(futures):
                    results.append(future.result())
                    bar.update()
    finally:
        bar.close()
    order = {p.name: p.index for p in plans}
    return sorted(results, key=lambda r: order[r["name"]])

