"""`physioserve synth OUT_DIR --records N [--hours H] [--seed S] [--hypnograms FILE] [--unlabelled N] [--workers W]`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

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
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="folder to write trXX-XXXX/ records and age-sex.csv into")
    parser.add_argument("--records", type=int, required=True, metavar="N", help="number of records")
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
    parser.add_argument("--workers", type=int, default=None, metavar="W", help="parallel processes (default: all cores)")
    parser.add_argument("--overwrite", action="store_true", help="replace records that already exist in OUT_DIR")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from .corpus import plan_corpus, synthesize_corpus
    from .hypnograms import load_hypnograms, packaged_hypnograms

    if args.records < 1:
        print("physioserve synth: --records must be at least 1", file=sys.stderr)
        return 2
    if args.hypnograms is not None and args.include_held_out:
        print("physioserve synth: --include-held-out applies to the packaged hypnograms, not to --hypnograms", file=sys.stderr)
        return 2
    try:
        if args.hypnograms is not None:
            pool = load_hypnograms(args.hypnograms)
        else:
            pool = packaged_hypnograms() if args.include_held_out else None
        plans = plan_corpus(args.records, args.seed, args.hours, pool, args.unlabelled)
    except (ValueError, FileNotFoundError) as error:
        print(f"physioserve synth: {error}", file=sys.stderr)
        return 2
    existing = [p.name for p in plans if (args.out_dir / p.name).exists()]
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
        unlabelled=args.unlabelled, workers=args.workers, progress=not args.quiet,
    )
    hours = sum(r["hours"] for r in results)
    print(
        f"wrote {len(results)} records ({hours:.1f} h of signals, {args.unlabelled} unlabelled) and age-sex.csv "
        f"to {args.out_dir} in {time.perf_counter() - start:.1f} s"
    )
    return 0
