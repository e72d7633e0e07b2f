"""`physioserve inspect PATH`: channels, rates, units, duration, modality map and labels of a file.

PATH is a PhysioNet 2018 record (folder or `.hea`; the header alone is enough), an EDF/EDF+/BDF
file, or a label file alone: `-arousal.mat`, or an expert hypnogram in any of `io.hypnogram.FORMATS`
(`.arousal`, `.st`, `.hyp`, EDF+ annotations, CSV/TXT, DREAMS), shown with its format, epoch length
and where its epoch count comes from (the record's header beside a lone annotation file, else its
last annotation). Signals are never loaded: everything shown comes from headers and label files.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .io import HYPNOGRAM_FORMATS, Hypnogram, is_label_file, n_samples_of, read_hypnogram, read_labels, read_recording
from .io.physionet2018 import signal_files
from .modalities import EPOCH_SECONDS, MODALITIES, modality_of, parse_channel_map
from .recording import Labels, Recording, arousal_fraction

HELP = "show channels, rates, duration, modality map and labels of a file"
AROUSAL_THRESHOLD = 0.75  # the design's arousal-window rule


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH",
                        help="record folder or .hea, .edf/.bdf, -arousal.mat, or a hypnogram (.arousal, .st, .hyp, .csv, .txt)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument(
        "--channel-map", default=None, metavar="MAP", help="override the channel patterns, e.g. eeg=C4-A1,eog=EOG(L)"
    )
    parser.add_argument("--hypnogram-format", choices=tuple(HYPNOGRAM_FORMATS), default=None,
                        help="read PATH as an expert hypnogram of this format (default: detected; numbers-only files need it)")
    parser.add_argument("--hypnogram-epoch", type=float, default=None, metavar="SECONDS",
                        help="seconds per line of a hypnogram that gives no times (default 30 s, DREAMS 5 s)")


def run(args: argparse.Namespace) -> int:
    try:
        summary = inspect_path(Path(args.path), parse_channel_map(args.channel_map),
                               hypnogram_format=args.hypnogram_format, hypnogram_epoch=args.hypnogram_epoch)
    except (ValueError, OSError) as error:  # RecordError is a ValueError; both name the file
        print(f"physioserve inspect: error: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # never a traceback for a file we could not read
        print(f"physioserve inspect: error: {args.path}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def inspect_path(path: Path, channel_map: dict[str, str] | None = None, *, hypnogram_format: str | None = None,
                 hypnogram_epoch: float | None = None) -> dict:
    """Everything `inspect` shows, as a JSON-ready dict. A hypnogram format or epoch length reads PATH
    as an expert hypnogram (`io.hypnogram.read_hypnogram`)."""
    if hypnogram_format or hypnogram_epoch or is_label_file(path, text=True):
        forced = hypnogram_format or hypnogram_epoch
        labels = read_hypnogram(path, fmt=hypnogram_format, epoch_s=hypnogram_epoch) if forced else read_labels(path)
        return {"path": str(path), "kind": "labels", "name": path.name, "labels": label_summary(labels)}
    recording = read_recording(path, channel_map, load_signals=False, all_channels=True, require_modality=False)
    return recording_summary(recording, path)


def recording_summary(recording: Recording, path: Path) -> dict:
    """JSON-ready description of a header-only recording."""
    chosen = {name: m for m, name in recording.modality_channels.items()}
    channels = [
        {
            "name": c.name,
            "fs": c.fs,
            "unit": c.unit,
            "n_samples": n_samples_of(c),
            "modality": chosen.get(c.name),
            "alias_of": modality_of(c.name),
            "problem": recording.unusable.get(c.name),
        }
        for c in recording.channels.values()
    ]
    kind = "edf" if path.suffix.lower() in (".edf", ".bdf") else "physionet2018"
    files = signal_files(path) if kind == "physionet2018" else {str(path.name): True}
    return {
        "path": str(path),
        "kind": kind,
        "name": recording.name,
        "signal_files": files,
        "duration_s": recording.duration_s,
        "n_windows": recording.n_windows,
        "channels": channels,
        "modality_channels": dict(recording.modality_channels),
        "missing_modalities": [m for m in MODALITIES if m not in recording.modality_channels],
        "gaps_s": [list(gap) for gap in recording.gaps_s],
        "notes": list(recording.notes),
        "age": recording.age,
        "sex": recording.sex,
        "labels": None if recording.labels is None else label_summary(recording.labels),
    }


def label_summary(labels: Labels) -> dict:
    """Epochs per stage, arousal count and windows at the 0.75 rule; for a hypnogram file also its
    format, epoch length, where the epoch count comes from (`extent`) and the reader's notes."""
    n_epochs = len(labels.stages)
    fraction = arousal_fraction(labels.arousal_regions_s, n_epochs)  # [n_epochs]
    summary = {
        "source": labels.source,
        "n_epochs": n_epochs,
        "stage_counts": labels.stage_counts(),
        "n_arousals": int(len(labels.arousal_regions_s)),
        "arousal_windows": int((fraction >= AROUSAL_THRESHOLD).sum()),
        "arousal_threshold": AROUSAL_THRESHOLD,
    }
    if isinstance(labels, Hypnogram):
        described = labels.describe()
        summary["hypnogram"] = {key: described[key] for key in ("format", "kind", "epoch_s", "extent", "notes")}
    return summary


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600} h {s % 3600 // 60:02d} min {s % 60:02d} s"


def format_summary(summary: dict) -> str:
    """The human-readable text of `inspect`."""
    lines = [f"{summary['name']}  ({summary['kind']}: {summary['path']})"]
    if "channels" in summary and not summary["channels"]:
        lines.append("no signals (an annotation-only file)")
    elif "channels" in summary:
        missing_files = [name for name, present in summary["signal_files"].items() if not present]
        if missing_files:
            lines.append(f"signal file(s) not found: {', '.join(missing_files)} (shown from the header alone)")
        lines.append(
            f"duration: {summary['duration_s']:g} s ({_hms(summary['duration_s'])}), "
            f"{summary['n_windows']} complete {EPOCH_SECONDS} s windows of the mapped modalities"
        )
        if summary["gaps_s"]:
            where = ", ".join(f"{start:g} s (+{length:g} s)" for start, length in summary["gaps_s"][:5])
            more = f" and {len(summary['gaps_s']) - 5} more" if len(summary["gaps_s"]) > 5 else ""
            lines.append(f"gaps: {len(summary['gaps_s'])} between data records, at {where}{more}; "
                         "score with --fill-gaps to treat them as missing data")
        rows = [("channel", "rate (Hz)", "unit", "samples", "modality")]
        rows += [
            (c["name"], f"{c['fs']:g}", c["unit"] or "-", str(c["n_samples"]),
             c["modality"] or ("left out (see notes)" if c.get("problem") else ""))
            for c in summary["channels"]
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines.append(f"channels ({len(summary['channels'])}):")
        lines += ["  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
        mapped = ", ".join(f"{m}={c}" for m, c in summary["modality_channels"].items()) or "none"
        missing = ", ".join(summary["missing_modalities"]) or "none"
        lines.append(f"modalities: {mapped}  (missing: {missing})")
        lines += [f"  note: {note}" for note in summary["notes"]]
        if summary["age"] is not None or summary["sex"] is not None:
            lines.append(f"age: {summary['age']}, sex: {summary['sex']}")
    labels = summary["labels"]
    if labels is None:
        lines.append("labels: none found")
    else:
        counts = "  ".join(f"{k} {v}" for k, v in labels["stage_counts"].items())
        lines.append(f"labels ({labels['source']}):")
        hypnogram = labels.get("hypnogram")
        if hypnogram:
            epoch = "times in the file" if hypnogram["epoch_s"] is None else f"{hypnogram['epoch_s']:g} s epochs"
            lines.append(f"  format: {hypnogram['format']} ({hypnogram['kind']}; {epoch})")
            lines.append(f"  epoch count runs to {hypnogram['extent']}")
        lines.append(f"  epochs: {labels['n_epochs']}  {counts}")
        lines.append(
            f"  arousals: {labels['n_arousals']}; windows >= {labels['arousal_threshold']:g} covered: "
            f"{labels['arousal_windows']}"
        )
        lines += [f"  note: {note}" for note in (hypnogram or {}).get("notes", [])]
    return "\n".join(lines)
