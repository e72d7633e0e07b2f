"""`physioserve synth OUT_DIR --records N [--hours H] [--seed S] [--hypnograms FILE] [--unlabelled N]
[--site NAME] [--format physionet|edf] [--workers W]`; `physioserve synth --list-sites`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HELP = "write a PhysioNet-2018-shaped synthetic corpus (see docs/SYNTHETIC.md)"


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", type=Path, nargs="?", metavar="OUT_DIR", help="folder to write trXX-XXXX/ records and age-sex.csv into")
    parser.add_argument("--records", type=int, metavar="N", help="number of records (required unless --list-sites)")
    parser.add_argument(
        "--hours", type=_positive_float, default=None, metavar="H",
        help="length of each record: a random stretch of its hypnogram (the whole night if shorter); default: the whole night (~7-9 h)",
    )
    parser.add_argument("--seed", type=_non_negative_int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument(
        "--hypnograms", type=Path, default=None, metavar="FILE",
        help="drive the records with these hypnograms (.npz, .txt/.csv, EDF+) instead of the packaged real ones",
    )
    parser.add_argument(
        "--include-held-out", action="store_true",
        help="also use the 10 packaged hypnograms that are held out for demos (physioserve.synth.hypnograms.HELD_OUT)",
    )
    parser.add_argument(
        "--unlabelled", type=_non_negative_int, default=0, metavar="N",
        help="write the last N records without label files, named teXX-XXXX like the challenge's test set",
    )
    parser.add_argument(
        "--site", default=None, metavar="NAME",
        help="record every night at this named site (rate, derivations, units, filters, mains, noise; "
        "see --list-sites); default: each record draws its own site from the training distribution "
        "around PhysioNet 2018, in the PhysioNet layout",
    )
    parser.add_argument("--list-sites", action="store_true", help="print the named site profiles and exit")
    parser.add_argument(
        "--format", choices=("physionet", "edf"), default="physionet", dest="fmt",
        help="physionet: the PhysioNet 2018 layout (.hea/.mat/.arousal/-arousal.mat; 200 Hz sites); "
        "edf: one EDF+ file per record at the site's rate and units, stages and arousals as annotations",
    )
    parser.add_argument("--workers", type=int, default=None, metavar="W", help="parallel processes (default: all cores)")
    parser.add_argument("--overwrite", action="store_true", help="replace records that already exist in OUT_DIR")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from .corpus import plan_corpus, synthesize_corpus
    from .hypnograms import load_hypnograms, packaged_hypnograms
    from .sites import SITES, draw_training_site, site

    if args.list_sites:
        print("named sites (physioserve synth OUT --records N --site NAME):")
        for profile in SITES.values():
            print(f"  {profile.describe()}")
        print(f"default: every record draws its own site from the training distribution, e.g.\n  "
              f"{draw_training_site(np.random.default_rng(0)).describe()}")
        return 0
    if args.out_dir is None or args.records is None:
        print("physioserve synth: OUT_DIR and --records are required (or --list-sites)", file=sys.stderr)
        return 2
    if args.records < 1:
        print("physioserve synth: --records must be at least 1", file=sys.stderr)
        return 2
    try:
        profile = None if args.site is None else site(args.site)
    except ValueError as error:
        print(f"physioserve synth: {error}", file=sys.stderr)
        return 2
    if profile is not None and args.fmt == "physionet" and profile.fs != 200:
        print(f"physioserve synth: site {profile.name!r} records at {profile.fs} Hz; the PhysioNet 2018 layout "
              "is 200 Hz only: add --format edf", file=sys.stderr)
        return 2
    if args.hypnograms is not None and args.include_held_out:
        print("physioserve synth: --include-held-out applies to the packaged hypnograms, not to --hypnograms", file=sys.stderr)
        return 2
    try:
        if args.hypnograms is not None:
            pool = load_hypnograms(args.hypnograms)
        else:
            pool = packaged_hypnograms() if args.include_held_out else None
        plans = plan_corpus(args.records, args.seed, args.hours, pool, args.unlabelled, profile)
    except (ValueError, FileNotFoundError) as error:
        print(f"physioserve synth: {error}", file=sys.stderr)
        return 2
    suffix = ".edf" if args.fmt == "edf" else ""
    existing = [p.name for p in plans if (args.out_dir / f"{p.name}{suffix}").exists()]
    if existing and not args.overwrite:
        print(
            f"physioserve synth: {args.out_dir} already holds {len(existing)} of these records "
            f"({', '.join(existing[:3])}{', ...' if len(existing) > 3 else ''}); pass --overwrite or pick another folder",
            file=sys.stderr,
        )
        return 2
    start = time.perf_counter()
    results = synthesize_corpus(
        args.out_dir, args.records, hours=args.hours, seed=args.seed, hypnograms=pool,
        unlabelled=args.unlabelled, workers=args.workers, progress=not args.quiet, site=profile, fmt=args.fmt,
    )
    hours = sum(r["hours"] for r in results)
    print(
        f"wrote {len(results)} records ({hours:.1f} h of signals, {args.unlabelled} unlabelled; "
        f"{'site ' + profile.name if profile else 'training sites'}, {args.fmt}) and age-sex.csv "
        f"to {args.out_dir} in {time.perf_counter() - start:.1f} s"
    )
    return 0
