"""Staging against the peer: physioserve vs YASA vs a feature baseline, on identical synthetic nights.

    python bench/compare_yasa.py --bundle BUNDLE --train-corpus runs/default/corpus [--nights 10] [--seed 0]

Nights: one synthetic night per held-out real hypnogram (`physioserve.synth.hypnograms.HELD_OUT`,
never used for training), written by `physioserve synth` (seeded; `--site NAME` for a held-out
recording site of the generator, where it has them) and read back from disk. Every system gets the
same channels of the same night:

- physioserve (the bundle; night-context staging when the bundle has the graph): YASA's inputs
  (EEG `C4-M1` + EOG `E1-M2` + EMG `Chin1-Chin2`), EEG alone, and all four modalities (+ ECG);
- YASA 0.8.1 `SleepStaging` (Vallat & Walker 2021: LightGBM trained on ~30,000 h of real PSG from
  NSRR cohorts, shipped inside the package): EEG + EOG + EMG, and EEG alone;
- feature baseline: YASA's own feature extraction + a LightGBM trained on `--train-corpus` (our
  synthetic training nights), same two input sets: the simplest thing that works, on our data.

Per night and mean: accuracy, Cohen's kappa, per-stage recall, stage changes per hour (predicted,
and the truth's). Needs the `compare` extra (`pip install -e '.[compare]'`); YASA never enters the
served path. Prints a table and writes OUT/compare_yasa.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine, print_load, yasa_stage_codes  # noqa: E402

from physioserve.agreement import stage_agreement_report, stage_codes  # noqa: E402
from physioserve.bundle import resolve_bundle  # noqa: E402
from physioserve.cohort import find_inputs  # noqa: E402
from physioserve.io import find_records, read_recording  # noqa: E402
from physioserve.modalities import STAGE_NAMES  # noqa: E402
from physioserve.runtime import InferenceSession  # noqa: E402
from physioserve.scoring import score_recording  # noqa: E402

YASA_CHANNELS = {"eeg": "C4-M1", "eog": "E1-M2", "emg": "Chin1-Chin2"}
INPUTS = {  # input set -> modalities given to every system
    "eeg+eog+emg": ("eeg", "eog", "emg"),
    "eeg": ("eeg",),
}


def site_channels(site: str | None) -> dict[str, str]:
    """The EEG (central first), EOG and chin EMG channel names YASA gets at `site` (None: PhysioNet 2018's)."""
    if site is None:
        return dict(YASA_CHANNELS)
    from physioserve.synth.sites import site as site_profile

    profile = site_profile(site)
    central = [d for d in profile.eeg if d.split("-")[0] in ("C4", "C3")]
    return {"eeg": (central or list(profile.eeg))[0], "eog": profile.eog[0], "emg": profile.emg}


def held_out_nights(out: Path, n: int, seed: int, hours: float | None, site: str | None) -> list[Path]:
    """Write (once) n nights driven by the held-out hypnograms; returns their records (folders or EDF files).

    A named site records at its own rate; one that is not 200 Hz is written as EDF+ (the PhysioNet 2018
    layout holds 200 Hz records only)."""
    from physioserve.synth.corpus import synthesize_corpus
    from physioserve.synth.hypnograms import FS, held_out_hypnograms
    from physioserve.synth.sites import site as site_profile

    folder = out / (f"nights-seed{seed}" + (f"-{site}" if site else ""))
    if not (folder / "age-sex.csv").exists():
        options = {}
        if site:
            profile = site_profile(site)
            options = {"site": profile, "fmt": "physionet" if profile.fs == FS else "edf"}
        synthesize_corpus(folder, n, hours=hours, seed=seed, hypnograms=held_out_hypnograms()[:n], workers=2,
                          progress=True, **options)
    records, _ = find_inputs([folder])  # record folders, or EDF+ files
    return records


def _recording(record: Path, modalities: tuple[str, ...], channels: dict[str, str]):
    channel_map = {m: channels[m] for m in modalities if channels.get(m)}
    recording = read_recording(record, channel_map=channel_map, all_channels=True)
    recording.modality_channels = {m: c for m, c in recording.modality_channels.items() if m in modalities}
    return recording


def ours(session, record: Path, modalities: tuple[str, ...], channels: dict[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """(predicted stage codes [n], true stage codes [n], -1 undefined) of our model on `modalities`."""
    recording = _recording(record, modalities, channels)
    score = score_recording(recording, session)
    return stage_codes(score.column("stage")), recording.window_labels()["stage"].astype(np.int64)


def _raw(recording, modalities: tuple[str, ...], channels: dict[str, str]):
    import mne

    names = [channels[m] for m in modalities]
    fs = recording.channels[names[0]].fs
    data = np.stack([recording.channels[c].data for c in names]) * 1e-6  # µV -> V (MNE's unit)
    info = mne.create_info(names, fs, ch_types=["eeg", "eog", "emg"][: len(names)], verbose=False)
    return mne.io.RawArray(data, info, verbose=False)


def yasa_staging(record: Path, modalities: tuple[str, ...], channels: dict[str, str]):
    """A fitted yasa.SleepStaging of one night on `modalities` (EEG C4-M1 [+ EOG E1-M2 + EMG Chin1-Chin2])."""
    import yasa

    recording = _recording(record, ("eeg", "eog", "emg"), channels)
    kw = {"eog_name": channels["eog"], "emg_name": channels["emg"]} if len(modalities) > 1 else {}
    return yasa.SleepStaging(_raw(recording, modalities, channels), eeg_name=channels["eeg"], **kw), recording


def yasa_predict(record: Path, modalities: tuple[str, ...], channels: dict[str, str]) -> np.ndarray:
    sls, _ = yasa_staging(record, modalities, channels)
    return yasa_stage_codes(sls.predict())


def features(record: Path, modalities: tuple[str, ...], cache: Path, channels: dict[str, str] = YASA_CHANNELS):
    """(YASA feature table [n_epochs, F], true stages [n]) of one night, cached as .npz under `cache`."""
    import pandas as pd

    path = cache / f"{record.parent.name}-{record.stem}-{'+'.join(modalities)}.npz"
    if path.exists():
        saved = np.load(path, allow_pickle=True)
        return pd.DataFrame(saved["x"], columns=list(saved["columns"])), saved["y"]
    sls, recording = yasa_staging(record, modalities, channels)
    table = sls.get_features()
    y = recording.window_labels()["stage"].astype(np.int64)
    n = min(len(table), len(y))
    table, y = table.iloc[:n], y[:n]
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=table.to_numpy(np.float32), columns=np.array(table.columns), y=y)
    return table, y


def train_feature_baseline(records: list[Path], modalities: tuple[str, ...], cache: Path):
    """LightGBM on YASA's features of our synthetic training nights (YASA's published settings, balanced classes)."""
    import pandas as pd
    from lightgbm import LGBMClassifier

    tables, ys = zip(*(features(r, modalities, cache) for r in records))
    x, y = pd.concat(tables, ignore_index=True), np.concatenate(ys)
    keep = y >= 0
    model = LGBMClassifier(n_estimators=400, max_depth=5, num_leaves=90, colsample_bytree=0.5,
                           class_weight="balanced", n_jobs=1, verbose=-1, random_state=0)
    model.fit(x[keep], y[keep])
    return model


def report(pred: np.ndarray, true: np.ndarray) -> dict:
    """physioserve.agreement's report, with the stage changes per hour flattened for the tables."""
    out = stage_agreement_report(np.asarray(pred, np.int64), np.asarray(true, np.int64))
    out["stage_changes_per_h"] = out["stage_changes_per_hour"]["predicted"]
    out["expert_stage_changes_per_h"] = out["stage_changes_per_hour"]["expert"]
    return out


def _mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else None


def summarise(per_night: list[dict]) -> dict:
    out = {k: _mean(per_night, k) for k in ("accuracy", "kappa", "stage_changes_per_h", "expert_stage_changes_per_h")}
    out["recall"] = {s: _mean([r["recall"] for r in per_night], s) for s in STAGE_NAMES}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default=None, help="bundle folder or store tag (default: the packaged one)")
    parser.add_argument("--train-corpus", type=Path, default=None,
                        help="PhysioNet-layout synthetic training corpus for the feature baseline (skipped without)")
    parser.add_argument("--nights", type=int, default=10, help="held-out nights (at most 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hours", type=float, default=None, help="crop each night (default: whole nights)")
    parser.add_argument("--site", default=None, help="a recording site of the generator (`physioserve synth --list-sites`)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/compare_yasa"))
    parser.add_argument("--bundle-only", action="store_true",
                        help="physioserve only (no YASA, no feature baseline): compare bundles on nights whose peer figures are known")
    args = parser.parse_args()
    load = __import__("os").getloadavg()
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    records = held_out_nights(args.out, min(args.nights, 10), args.seed, args.hours, args.site)
    channels = site_channels(args.site)
    bundle = resolve_bundle(args.bundle)
    session = InferenceSession(bundle)
    baselines = {}
    if args.train_corpus is not None and not args.bundle_only:
        train = [r for r in find_records(args.train_corpus) if (r / f"{r.name}.arousal").exists()]
        for name, modalities in INPUTS.items():
            print(f"feature baseline ({name}): features of {len(train)} training nights", file=sys.stderr)
            baselines[name] = train_feature_baseline(train, modalities, args.out / "features")

    results: dict[str, list[dict]] = {}
    for record in records:
        print(f"night {record.name}", file=sys.stderr)
        for name, modalities in INPUTS.items():
            pred, true = ours(session, record, modalities, channels)
            results.setdefault(f"physioserve/{name}", []).append({"record": record.name, **report(pred, true)})
            if not args.bundle_only:
                yasa_pred = yasa_predict(record, modalities, channels)
                results.setdefault(f"yasa/{name}", []).append({"record": record.name, **report(yasa_pred, true)})
            if name in baselines:
                table, y = features(record, modalities, args.out / "features", channels)
                fpred = baselines[name].predict(table)
                results.setdefault(f"feature-baseline/{name}", []).append({"record": record.name, **report(fpred, y)})
        pred, true = ours(session, record, ("eeg", "eog", "emg", "ecg"), {**channels, "ecg": None})
        results.setdefault("physioserve/all four", []).append({"record": record.name, **report(pred, true)})

    summary = {k: summarise(v) for k, v in results.items()}
    print(f"\n{len(records)} held-out nights (seed {args.seed}{', site ' + args.site if args.site else ''}); "
          f"bundle {bundle.name} {bundle.version}; machine {machine()}")
    print(f"{'system/inputs':34s} {'acc':>6s} {'kappa':>6s} " + " ".join(f"{s:>5s}" for s in STAGE_NAMES)
          + "  changes/h (true)")
    for key, s in summary.items():
        recall = " ".join(f"{s['recall'][n]:5.2f}" if s["recall"][n] is not None else "    -" for n in STAGE_NAMES)
        print(f"{key:34s} {s['accuracy']:6.3f} {s['kappa']:6.3f} {recall}  {s['stage_changes_per_h']:5.1f} "
              f"({s['expert_stage_changes_per_h']:.1f})")
    print("per-night kappa: " + "; ".join(f"{k} " + " ".join(f"{r['kappa']:.2f}" for r in v) for k, v in results.items()))
    print_load(load)
    out = {"nights": [r.name for r in records], "seed": args.seed, "site": args.site, "hours": args.hours,
           "bundle": {"name": bundle.name, "version": bundle.version, "source": bundle.source},
           "summary": summary, "per_night": results, "machine": machine(), "wall_s": time.perf_counter() - started}
    (args.out / "compare_yasa.json").write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
