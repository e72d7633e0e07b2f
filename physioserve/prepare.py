"""`physioserve prepare DATA_DIR [DATA_DIR ...] OUT_DIR`: PhysioNet-2018-layout folders -> window cache.

    physioserve prepare training test CACHE       # the challenge's labelled training/ and unlabelled test/

Records are preprocessed in parallel (one process per record) with the one `preprocess` function,
records already in the cache are skipped, and a record that fails is reported without losing the
rest. The patient-level split is written once, from every record of every root given (so the order of
the roots does not matter), and reused afterwards. Records added by a later run join it without ever
moving a labelled record into pretraining once labelled records have been split: new unlabelled
records -> pretrain, new labelled ones -> test; a cache that held only unlabelled records splits the
first labelled ones it gets with the usual fractions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from .cache import SplitFractions, init_cache, make_split, write_record
from .io import find_records, read_recording
from .modalities import parse_channel_map

HELP = "turn PhysioNet-2018-layout folders (real or synthetic; e.g. training and test) into a memory-mapped window cache"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dirs", type=Path, nargs="+", metavar="DATA_DIR",
                        help="dataset roots holding record folders (e.g. training/ and test/ of PhysioNet 2018)")
    parser.add_argument("out_dir", type=Path, help="cache folder (created; re-running resumes)")
    parser.add_argument("--workers", type=int, default=2, help="parallel processes (default 2)")
    parser.add_argument("--channel-map", default=None, help="override, e.g. eeg=C4-M1,eog=E1-M2")
    parser.add_argument("--vary-eeg", default=None, metavar="CHANNELS",
                        help="comma-separated EEG derivations, e.g. F3-M2,C4-M1,O2-M1: each record uses one of them "
                             "(chosen from its name, so reruns agree) instead of the preferred one; trains a model "
                             "across derivations (the choice is in each record.json)")
    parser.add_argument("--arousal-threshold", type=float, default=0.75,
                        help="fraction of a window inside a target arousal to label it arousal (default 0.75)")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the patient split (first run only)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N records (quick runs)")


def eeg_choice(record: str, derivations: list[str]) -> str:
    """The EEG derivation `--vary-eeg` gives a record: a stable hash of its name picks one (same on every run)."""
    digest = hashlib.sha256(record.encode()).digest()
    return derivations[int.from_bytes(digest[:4], "little") % len(derivations)]


def _prepare_one(record_dir: Path, cache_dir: Path, channel_map: dict, threshold: float,
                 vary_eeg: list[str] | None = None) -> tuple[str, int, bool]:
    if vary_eeg:
        channel_map = {**channel_map, "eeg": eeg_choice(record_dir.name, vary_eeg)}
    recording = read_recording(record_dir, channel_map=channel_map)
    n = write_record(cache_dir, recording, arousal_threshold=threshold)
    return recording.name, n, recording.labels is not None


def _labelled(cache_dir: Path, name: str) -> bool:
    return json.loads((cache_dir / "records" / name / "record.json").read_text())["labelled"]


def find_all_records(data_dirs: list[Path]) -> list[Path]:
    """Record folders of every root, in root order; a record name found under two roots is an error."""
    records: dict[str, Path] = {}
    for root in data_dirs:
        found = find_records(root)
        if not found:
            raise FileNotFoundError(f"{root}: no record folders (expected <name>/<name>.hea inside)")
        for record in found:
            if record.name in records:
                raise ValueError(f"record {record.name} is in {records[record.name].parent} and in {root}; "
                                 "give each record once")
            records[record.name] = record
    return list(records.values())


def prepare(
    data_dirs: Path | list[Path],
    out_dir: Path,
    *,
    workers: int = 2,
    channel_map: dict | None = None,
    arousal_threshold: float = 0.75,
    split_seed: int = 0,
    limit: int | None = None,
    progress: bool = True,
    vary_eeg: list[str] | None = None,
) -> dict:
    """Build or resume the cache from one or several roots; returns a summary {done, skipped, failed: {record:
    reason}, split}."""
    roots = [Path(data_dirs)] if isinstance(data_dirs, (str, Path)) else [Path(d) for d in data_dirs]
    out_dir = Path(out_dir)
    records = find_all_records(roots)[:limit]
    init_cache(out_dir, arousal_threshold=arousal_threshold)
    todo = [r for r in records if not (out_dir / "records" / r.name / "record.json").exists()]
    failed: dict[str, str] = {}
    with ProcessPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(_prepare_one, r, out_dir, channel_map or {}, arousal_threshold, vary_eeg): r for r in todo}
        bar = tqdm(as_completed(futures), total=len(futures), desc="prepare", unit="rec", disable=not progress)
        for future in bar:
            record = futures[future]
            try:
                future.result()
            except Exception as error:  # one bad record must not stop the rest
                failed[record.name] = f"{type(error).__name__}: {error}"
                tqdm.write(f"prepare: {record.name} failed: {error}", file=sys.stderr)
    (out_dir / "problems.json").write_text(json.dumps(failed, indent=1))
    done = [r.name for r in records if (out_dir / "records" / r.name / "record.json").exists()]
    split = _write_or_extend_split(out_dir, done, split_seed)
    return {"done": len(done), "prepared_now": len(todo) - len(failed), "skipped": len(records) - len(todo),
            "failed": failed, "split": {k: len(split[k]) for k in ("pretrain", "train", "val", "test")}}


def _write_or_extend_split(out_dir: Path, done: list[str], seed: int) -> dict:
    """Write split.json on the first run; later runs keep it and only place records it lacks."""
    path = out_dir / "split.json"
    labelled = {r for r in done if _labelled(out_dir, r)}
    unlabelled = {r for r in done if r not in labelled}
    if not path.exists():
        split = make_split(sorted(labelled), sorted(unlabelled), SplitFractions(seed=seed))
        path.write_text(json.dumps(split, indent=1))
        return split
    split = json.loads(path.read_text())
    known = set(split["pretrain"]) | set(split["val"]) | set(split["test"])
    new = [r for r in done if r not in known]
    held_labelled = split["train"] or split["val"] or split["test"]
    if new and not held_labelled and any(r in labelled for r in new):
        # only unlabelled records so far (e.g. test/ prepared before training/): nothing was split yet
        fresh = make_split(sorted(r for r in new if r in labelled), [], SplitFractions(seed=seed))
        split.update({k: fresh[k] for k in ("train", "val", "test")})
        split["pretrain"] = sorted(set(split["pretrain"]) | {r for r in new if r in unlabelled} | set(fresh["train"]))
        path.write_text(json.dumps(split, indent=1))
        print(f"prepare: split.json held no labelled record; {len(fresh['train'])} train / {len(fresh['val'])} val / "
              f"{len(fresh['test'])} test records split now (train joins pretrain)")
    elif new:  # records added after the split was fixed: labelled ones go to test, never into pretraining
        split["test"] = sorted(split["test"] + [r for r in new if r in labelled])
        split["pretrain"] = sorted(split["pretrain"] + [r for r in new if r in unlabelled])
        path.write_text(json.dumps(split, indent=1))
        print(f"prepare: split.json kept; {len(new)} new records placed (labelled -> test, unlabelled -> pretrain)")
    return split


def run(args: argparse.Namespace) -> int:
    try:
        summary = prepare(
            args.data_dirs, args.out_dir, workers=args.workers, channel_map=parse_channel_map(args.channel_map),
            arousal_threshold=args.arousal_threshold, split_seed=args.split_seed, limit=args.limit,
            vary_eeg=[c.strip() for c in args.vary_eeg.split(",") if c.strip()] if args.vary_eeg else None,
        )
    except (FileNotFoundError, ValueError) as error:
        print(f"physioserve prepare: {error}", file=sys.stderr)
        return 1
    print(
        f"cache {args.out_dir}: {summary['done']} records ({summary['prepared_now']} prepared now, "
        f"{summary['skipped']} already there, {len(summary['failed'])} failed); split {summary['split']}"
    )
    for name, reason in summary["failed"].items():
        print(f"  failed {name}: {reason}", file=sys.stderr)
    return 1 if summary["failed"] and summary["done"] == 0 else 0
