"""Recording scoring: a night -> per-epoch table, night summary and hypnogram.

The windows come from `cache.recording_to_windows`, the one preprocessing path shared with training
and the service. The table and summary are computed here for both the local CLI and the service's
`/score`, so the two give the same numbers; `NightScore.to_json` / `from_json` round-trip exactly.

Night summary (computed on the predicted stages; recording start stands in for lights-off):
total recording time (TRT), total sleep time (TST = N1 + N2 + N3 + REM epochs), sleep onset
latency (start -> first sleep epoch), wake after sleep onset, sleep efficiency (TST / TRT),
minutes and percentages per stage, and the arousal index: arousal episodes (runs of consecutive
arousal-positive sleep epochs) per hour of TST. Each epoch lists the modalities it used (a flat or
saturated lead, or invalid samples, leave a modality out of that epoch), and the summary counts
epochs per modality set and carries the reader's notes (channels left out and why).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .cache import recording_to_windows
from .agreement import PLOT_LEVELS, stage_agreement_report
from .epoch_features import epoch_features
from .modalities import EPOCH_SECONDS, MODALITIES, STAGE_NAMES
from .preprocessing import band_limit_hz
from .recording import Recording

SLEEP_STAGES = (1, 2, 3, 4)  # N1 N2 N3 REM
UNSCORABLE = -1  # stage code of a window with no usable modality (every channel missing there)
PROB_DECIMALS = 6
STAGE_PROB_COLUMNS = tuple(f"p_{name}" for name in STAGE_NAMES)
MODALITIES_COLUMN = "modalities"  # the modalities an epoch used, e.g. 'eeg+eog+emg' ('' when unscorable)
COLUMNS = ("epoch", "start_s", "stage", *STAGE_PROB_COLUMNS, "arousal", "p_arousal", "p_age_ge_55", MODALITIES_COLUMN)
# with a night-context graph, `stage` / p_* are the night-level output and these keep the window-level one
WINDOW_STAGE_COLUMNS = ("window_stage", *(f"window_{c}" for c in STAGE_PROB_COLUMNS))
LABEL_COLUMN = "true_stage"
MODALITY_SETS_KEY = "epochs_per_modality_set"  # summary: {'eeg+eog+emg': 5, 'eog+emg': 5, ...}


@dataclass
class NightScore:
    """One scored night: per-epoch rows (dicts, `columns` order) and the night summary."""

    record: str
    columns: list[str]
    rows: list[dict]
    summary: dict

    def to_json(self) -> dict:
        return {"record": self.record, "columns": self.columns, "summary": self.summary, "epochs": self.rows}

    @classmethod
    def from_json(cls, data: dict) -> "NightScore":
        return cls(record=data["record"], columns=list(data["columns"]), rows=list(data["epochs"]), summary=data["summary"])

    def column(self, name: str) -> list:
        return [row[name] for row in self.rows]


def _round(values: np.ndarray) -> list[float | None]:
    """Rounded probabilities; None for an unscorable window (NaN)."""
    return [round(float(v), PROB_DECIMALS) if np.isfinite(v) else None for v in values]


def score_outputs(
    record: str,
    probs: dict[str, np.ndarray],
    mask: np.ndarray,
    *,
    channels: dict[str, str] | None = None,
    true_stage: np.ndarray | None = None,
    model: dict | None = None,
    notes: list[str] | None = None,
    band_limited: dict[str, float] | None = None,
) -> NightScore:
    """Model probabilities of a night's windows -> NightScore.

    `probs`: sleep_stage_probs [n, 5], age_probs [n, 2], arousal_probs [n, 2], and optionally
    sleep_stage_night_probs [n, 5] (the night-context graph: then `stage` and p_* are night-level and
    the window-level ones move to window_*); `mask` [n, 4] (the modalities each window used: absent,
    or missing data there); `true_stage` [n] with -1 where undefined, or None when the recording has
    no labels; `notes` and `band_limited` ({modality: upper edge Hz} of inputs below 100 Hz) go to
    the summary as they are.
    """
    night = "sleep_stage_night_probs" in probs
    window_p = probs["sleep_stage_probs"]
    stage_p = probs["sleep_stage_night_probs"] if night else window_p
    age_p, arousal_p = probs["age_probs"], probs["arousal_probs"]
    n = len(stage_p)
    scorable = np.asarray(mask, bool).any(axis=1)  # [n]: windows with at least one usable modality
    stage = np.where(scorable, np.nan_to_num(stage_p).argmax(axis=1), UNSCORABLE)  # [n]
    arousal = np.where(scorable, np.nan_to_num(arousal_p).argmax(axis=1), 0)  # [n]
    columns = list(COLUMNS) + (list(WINDOW_STAGE_COLUMNS) if night else []) + ([LABEL_COLUMN] if true_stage is not None else [])
    stage_cols = [_round(stage_p[:, k]) for k in range(len(STAGE_NAMES))]
    window_cols = [_round(window_p[:, k]) for k in range(len(STAGE_NAMES))]
    window_stage = np.nan_to_num(window_p).argmax(axis=1)  # [n]
    p_arousal, p_age = _round(arousal_p[:, 1]), _round(age_p[:, 1])
    used = modality_sets(mask)  # [n] 'eeg+eog' ...
    rows = []
    for i in range(n):
        row = {"epoch": i, "start_s": i * EPOCH_SECONDS, "stage": STAGE_NAMES[stage[i]] if scorable[i] else ""}
        row.update({col: stage_cols[k][i] for k, col in enumerate(STAGE_PROB_COLUMNS)})
        row.update({"arousal": int(arousal[i]) if scorable[i] else None, "p_arousal": p_arousal[i], "p_age_ge_55": p_age[i],
                    MODALITIES_COLUMN: used[i]})
        if night:
            row["window_stage"] = STAGE_NAMES[window_stage[i]] if scorable[i] else ""
            row.update({f"window_{col}": window_cols[k][i] for k, col in enumerate(STAGE_PROB_COLUMNS)})
        if true_stage is not None:
            row[LABEL_COLUMN] = STAGE_NAMES[true_stage[i]] if true_stage[i] >= 0 else ""
        rows.append(row)
    present = [m for j, m in enumerate(MODALITIES) if n and mask[:, j].any()]
    summary = night_summary(stage, arousal, true_stage)
    summary.update({
        "record": record,
        "age_ge_55_probability": round(float(np.mean(age_p[scorable, 1])), PROB_DECIMALS) if scorable.any() else None,
        "unscorable_epochs": int(n - scorable.sum()),
        "modalities_used": present,
        MODALITY_SETS_KEY: {key or "none": used.count(key) for key in sorted(set(used), key=lambda k: (-used.count(k), k))},
        "band_limited_hz": dict(band_limited or {}),
        "channels": dict(channels or {}),
        "notes": list(notes or []),
        "staging": "night context" if night else "window",
    })
    if model:
        summary["model"] = dict(model)
    return NightScore(record=record, columns=columns, rows=rows, summary=summary)


def modality_sets(mask: np.ndarray) -> list[str]:
    """Per window, the modalities it used joined by '+' in model order ('eeg+emg'); '' for none: [n]."""
    return ["+".join(m for j, m in enumerate(MODALITIES) if row[j]) for row in np.asarray(mask, bool)]


def _runs(flags: np.ndarray) -> int:
    """Number of runs of consecutive True values."""
    flags = np.asarray(flags, bool)
    return int(np.count_nonzero(flags[1:] & ~flags[:-1]) + (1 if len(flags) and flags[0] else 0))


def night_summary(stage: np.ndarray, arousal: np.ndarray, true_stage: np.ndarray | None = None) -> dict:
    """Sleep statistics of a night from per-epoch stage codes (0..4) and arousal flags (0/1)."""
    epoch_min = EPOCH_SECONDS / 60
    n = len(stage)
    asleep = np.isin(stage, SLEEP_STAGES)
    counts = np.bincount(stage[stage >= 0], minlength=len(STAGE_NAMES))[: len(STAGE_NAMES)]
    trt, tst = n * epoch_min, float(asleep.sum()) * epoch_min
    onset = int(np.argmax(asleep)) if asleep.any() else None
    # arousal episodes: runs of arousal-positive epochs scored as sleep (a wake epoch ends a run)
    episodes = _runs((np.asarray(arousal) == 1) & asleep)
    summary = {
        "epochs": n,
        "epoch_seconds": EPOCH_SECONDS,
        "total_recording_time_min": round(trt, 3),
        "total_sleep_time_min": round(tst, 3),
        "sleep_onset_latency_min": None if onset is None else round(onset * epoch_min, 3),
        "wake_after_sleep_onset_min": None if onset is None else round(float((stage[onset:] == 0).sum()) * epoch_min, 3),
        "sleep_efficiency_pct": round(100 * tst / trt, 2) if trt else None,
        "stage_minutes": {name: round(float(c) * epoch_min, 3) for name, c in zip(STAGE_NAMES, counts)},
        "stage_percent_of_recording": {name: round(100 * float(c) / n, 2) if n else None for name, c in zip(STAGE_NAMES, counts)},
        "stage_percent_of_sleep": {
            STAGE_NAMES[k]: round(100 * float(counts[k]) / asleep.sum(), 2) if asleep.any() else None for k in SLEEP_STAGES
        },
        "arousal_episodes": episodes,
        "arousal_index_per_h": round(episodes / (tst / 60), 2) if tst else None,
    }
    if true_stage is not None:
        summary["reference"] = stage_agreement(stage, true_stage)
    return summary


def stage_agreement(pred: np.ndarray, true: np.ndarray) -> dict:
    """Accuracy and Cohen's kappa of predicted vs scored stages over the epochs that have both
    (`physioserve.agreement`), rounded for the night summary's `reference`."""
    report = stage_agreement_report(np.asarray(pred, np.int64), np.asarray(true, np.int64))
    rounded = {k: None if report[k] is None else round(report[k], 4) for k in ("accuracy", "kappa")}
    return {"labelled_epochs": report["epochs"], "stage_accuracy": rounded["accuracy"], "stage_kappa": rounded["kappa"]}


def predict_night(session, signals: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    """Model probabilities for a night's consecutive windows; NaN rows where a window has no usable modality.

    {sleep_stage_probs, age_probs, arousal_probs, embedding}, plus sleep_stage_night_probs when the
    bundle has a night-context graph (run over all n windows in order; unscorable ones are gaps).
    """
    from .runtime import softmax

    scorable = mask.any(axis=1)  # [n]
    probs = session.predict(signals[scorable], mask[scorable]) if scorable.any() else {}
    out = {}
    d_model = probs["embedding"].shape[1] if scorable.any() else session.d_model
    widths = (("sleep_stage_probs", len(STAGE_NAMES)), ("age_probs", 2), ("arousal_probs", 2), ("embedding", d_model))
    for key, width in widths:
        full = np.full((len(mask), width), np.nan, np.float32)  # [n, K]
        if scorable.any():
            full[scorable] = probs[key]
        out[key] = full
    if getattr(session, "has_context", False):
        features = epoch_features(signals, mask)  # [n, F]
        night = softmax(session.night_stage_logits(np.nan_to_num(out["embedding"]), mask, features))  # [n, 5]
        night[~scorable] = np.nan
        out["sleep_stage_night_probs"] = night
    return out


def score_recording(recording: Recording, session, *, model: dict | None = None) -> NightScore:
    """Read -> preprocess (the shared path) -> model -> NightScore. `session`: runtime.InferenceSession."""
    signals, mask = recording_to_windows(recording)  # [n, 4, 3000], [n, 4]
    probs = predict_night(session, signals, mask)
    return score_windows_outputs(recording, probs, mask, model=model)


def score_windows_outputs(recording: Recording, probs: dict, mask: np.ndarray, *, model: dict | None = None) -> NightScore:
    """NightScore of a recording from its windows' model probabilities (used by the service too)."""
    true_stage = recording.window_labels()["stage"] if recording.labels is not None else None
    band_limited = {m: edge for m, name in recording.modality_channels.items()
                    if (edge := band_limit_hz(recording.channels[name].fs, m)) is not None}
    night = score_outputs(recording.name, probs, mask, channels=recording.modality_channels,
                          true_stage=true_stage, model=model, notes=recording.notes, band_limited=band_limited)
    night.summary.update(signal_summary(recording, mask))
    return night


def signal_summary(recording: Recording, mask: np.ndarray) -> dict:
    """Input rates per modality (Hz) and the median over the epochs that used it of the per-epoch standard
    deviation (µV): a check that units were read right (an EEG near 1 µV or 10,000 µV was not)."""
    rates, std = {}, {}
    for j, m in enumerate(MODALITIES):
        if m not in recording.modality_channels:
            continue
        raw, rates[m] = recording.modality_windows(m, len(mask))  # [n, 30 * fs] µV
        used = np.asarray(mask, bool)[:, j]
        std[m] = round(float(np.median(np.std(raw[used], axis=1))), 3) if used.any() else None
    return {"channel_rates_hz": rates, "signal_std_uv": std}


# ---- writing --------------------------------------------------------------------------------------


def table_csv(score: NightScore) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=score.columns, lineterminator="\n")
    writer.writeheader()
    for row in score.rows:
        writer.writerow({k: (f"{v:.{PROB_DECIMALS}f}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def write_score(score: NightScore, out_dir: str | Path, *, fmt: str = "csv", plot: bool = False) -> list[Path]:
    """Write <record>.epochs.csv + <record>.summary.json (csv) or <record>.json (json), and the hypnogram PNG."""
    if fmt not in ("csv", "json"):
        raise ValueError(f"format {fmt!r}; accepted: csv, json")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if fmt == "csv":
        written.append(out_dir / f"{score.record}.epochs.csv")
        written[-1].write_text(table_csv(score))
        written.append(out_dir / f"{score.record}.summary.json")
        written[-1].write_text(json.dumps(score.summary, indent=1) + "\n")
    else:
        written.append(out_dir / f"{score.record}.json")
        written[-1].write_text(json.dumps(score.to_json(), indent=1) + "\n")
    if plot:
        written.append(plot_hypnogram(score, out_dir / f"{score.record}.hypnogram.png"))
    return written




def plot_hypnogram(score: NightScore, path: str | Path) -> Path:
    """Hypnogram PNG: predicted stages (with arousal epochs marked) and the scored ones when present."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = np.array([row["start_s"] for row in score.rows] + [len(score.rows) * EPOCH_SECONDS]) / 3600
    panels = [("predicted", score.column("stage"))]
    if LABEL_COLUMN in score.columns:
        panels.append(("scored", score.column(LABEL_COLUMN)))
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 2.2 * len(panels) + 0.6), sharex=True, squeeze=False)
    for ax, (title, stages) in zip(axes[:, 0], panels):
        levels = np.array([PLOT_LEVELS.get(s, np.nan) for s in stages], float)
        ax.stairs(levels, hours, baseline=None, color="#1f4e79", linewidth=1.2)
        if title == "predicted":
            arousal_hours = hours[:-1][np.array(score.column("arousal"), bool)]
            ax.plot(arousal_hours, np.full(len(arousal_hours), 4.45), "|", color="#c0392b", markersize=6, label="arousal")
            if len(arousal_hours):
                ax.legend(loc="upper right", fontsize=8, frameon=False)
        ax.set_yticks(list(PLOT_LEVELS.values()), list(PLOT_LEVELS.keys()))
        ax.set_ylim(-0.5, 4.8)
        ax.set_ylabel(title)
        ax.grid(axis="x", alpha=0.3)
    s = score.summary
    axes[0, 0].set_title(
        f"{score.record}: TST {s['total_sleep_time_min']:.0f} min, efficiency {s['sleep_efficiency_pct']} %, "
        f"arousal index {s['arousal_index_per_h']} /h", fontsize=10)
    axes[-1, 0].set_xlabel("hours from recording start")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


# ---- uploads: what the CLI sends to /score and what the service accepts --------------------------

EDF_MAGIC, BDF_MAGIC, ZIP_MAGIC = b"0       ", b"\xffBIOSEMI", b"PK\x03\x04"
MAX_ZIP_ENTRIES = 32


class UploadError(ValueError):
    """An uploaded file the service cannot read: what is wrong (`problem`) and what to send instead (`fix`)."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem}; {fix}")
        self.problem, self.fix = problem, fix


def _named_files(text: str) -> list[str]:
    """Files a WFDB header names: signal files, or segment headers (`<segment>.hea`) of a multi-segment record."""
    lines = [line.split("#", 1)[0].split() for line in text.splitlines()]
    lines = [parts for parts in lines if parts]
    if not lines:
        return []
    segmented = "/" in lines[0][0]
    return [f"{parts[0]}.hea" if segmented else parts[0] for parts in lines[1:] if parts[0] != "~"]


def record_files(header: Path) -> list[Path]:
    """A WFDB record's files: the .hea, the signal files it names (segments too), and label files with its name."""
    header = Path(header)
    stem = header.stem
    files = {header}
    for name in _named_files(header.read_text(errors="replace")):
        path = header.parent / name
        if path.is_file() and path not in files:
            files.update(record_files(path) if path.suffix == ".hea" else [path])
    for extra in header.parent.iterdir():
        if extra.is_file() and extra.name.startswith(stem) and extra.name[len(stem) : len(stem) + 1] in (".", "-"):
            files.add(extra)
    return sorted(files)


def upload_payload(path: str | Path) -> tuple[str, bytes]:
    """(filename, bytes) to POST for an input: EDF/BDF as-is, a WFDB record as a zip of its files."""
    path = Path(path)
    header = path / f"{path.name}.hea" if path.is_dir() else path
    if header.suffix.lower() != ".hea":
        return path.name, path.read_bytes()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in record_files(header):
            archive.write(file, arcname=file.name)
    return f"{header.stem}.zip", buffer.getvalue()


def _safe_member(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and name not in (".", "..") and ":" not in name \
        and not name.startswith(".")


def safe_record_name(name: str | None, fallback: str = "upload") -> str:
    """A record name usable as a file name: letters, digits, '.', '_', '-' (at most 100 characters)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name or "").lstrip(".")[:100]
    return cleaned or fallback


def open_upload(path: str | Path, workdir: str | Path, *, max_unpacked_bytes: int, name: str | None = None) -> Path:
    """Check an uploaded file and return the path to read: the EDF/BDF itself, or the .hea of a zipped record.

    An EDF/BDF is copied to `workdir/<name>.edf|.bdf` (the record is named after `name`). A zip must
    hold one WFDB record's files, flat (no folders, no path traversal): one `<record>.hea`, and only
    files named `<record>.*` or `<record>-*`, at most `max_unpacked_bytes` unpacked.
    """
    path, workdir = Path(path), Path(workdir)
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(ZIP_MAGIC):
        return _unzip_record(path, workdir, max_unpacked_bytes)
    if head == EDF_MAGIC or head == BDF_MAGIC:
        target = workdir / (safe_record_name(name) + (".bdf" if head == BDF_MAGIC else ".edf"))
        shutil.copyfile(path, target)
        return target
    raise UploadError(
        "not an EDF/BDF file or a zip of a WFDB record (its first bytes match neither)",
        "upload the .edf/.bdf itself, or zip the record's .hea with its signal files",
    )


def _unzip_record(path: Path, workdir: Path, max_unpacked_bytes: int) -> Path:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise UploadError(f"not a readable zip ({error})", "zip the record's .hea with its signal files") from None
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_ZIP_ENTRIES:
            raise UploadError(f"zip holds {len(infos)} entries (at most {MAX_ZIP_ENTRIES})", "zip one record's files only")
        bad = [i.filename for i in infos if i.is_dir() or not _safe_member(i.filename)]
        if bad:
            raise UploadError(f"zip entry {bad[0]!r} is a folder or a path", "zip the record's files flat, without folders")
        symlinks = [i.filename for i in infos if (i.external_attr >> 16) & 0o170000 == 0o120000]
        if symlinks:
            raise UploadError(f"zip entry {symlinks[0]!r} is a symbolic link", "zip the files themselves")
        headers = [i.filename for i in infos if i.filename.lower().endswith(".hea")]
        texts = {h: archive.read(h)[:1 << 16].decode("latin-1") for h in headers}
        masters = [h for h in headers if (_named_files(texts[h]) or [""])[0].endswith(".hea")]  # multi-segment
        named = {f for h in headers for f in _named_files(texts[h])}
        if len(masters) == 1 and set(headers) - {masters[0]} <= named:
            headers = masters  # a multi-segment record: its header first, its segments among the named files
        if len(headers) != 1:
            raise UploadError(f"zip holds {len(headers)} .hea files", "zip exactly one WFDB record (one .hea and its files)")
        stem = headers[0][:-4]
        others = [i.filename for i in infos if i.filename not in named
                  and not (i.filename.startswith(stem) and i.filename[len(stem) : len(stem) + 1] in (".", "-"))]
        if others:
            raise UploadError(f"zip entry {others[0]!r} is not a file of record {stem!r}",
                              f"zip only {stem}.hea and {stem}.* / {stem}-* files")
        budget = max_unpacked_bytes
        target = workdir / "record"
        target.mkdir()
        for info in infos:
            with archive.open(info) as src, open(target / info.filename, "wb") as dst:
                while chunk := src.read(1 << 20):
                    budget -= len(chunk)
                    if budget < 0:
                        raise UploadError(f"zip unpacks to more than {max_unpacked_bytes} bytes", "upload a smaller record")
                    dst.write(chunk)
        return target / headers[0]


def read_upload(
    path: str | Path, workdir: str | Path, *, max_unpacked_bytes: int, name: str | None = None,
    channel_map: dict | None = None, fill_gaps: bool = False,
) -> Recording:
    """An uploaded file -> Recording (raises UploadError for unreadable files)."""
    from .io import read_recording

    target = open_upload(path, workdir, max_unpacked_bytes=max_unpacked_bytes, name=name)
    try:
        return read_recording(target, channel_map=channel_map or None, fill_gaps=fill_gaps)
    except (ValueError, OSError, KeyError, IndexError, EOFError) as error:
        message = str(error).replace(f"{Path(workdir)}{os.sep}", "")  # no server paths in answers
        raise UploadError(f"cannot read it as a recording: {message}",
                          "upload a complete EDF/BDF file or the record's .hea with all its signal files") from None
