"""How real do synthetic nights look? YASA's pretrained stagers on the 10 held-out-hypnogram nights.

Generates one night per held-out hypnogram (`physioserve.synth.hypnograms.held_out_hypnograms()`),
quantised as the written files are, and scores it with YASA 0.8.1's pretrained `SleepStaging`
(LightGBM classifiers trained on thousands of real PSG nights; Vallat & Walker, eLife 10:e70092,
2021): EEG `C4-M1` + EOG `E1-M2` + EMG `Chin1-Chin2`, and EEG alone. Prints kappa, accuracy,
per-stage recall and the confusion matrix per night and over all nights, then the per-stage spectral
summary of the generator against the cited normative ranges (`physioserve.synth.norms`). Writes JSON.

Needs the optional extra: `pip install -c constraints/cpu.txt -e '.[compare]'`.

    python bench/realism.py [--seed 0] [--hours H] [--workers 2] [--out bench/results/realism.json]
        [--markdown FILE]      # also the tables of docs/SYNTHETIC.md, as Markdown
    python bench/realism.py --from-json --markdown FILE    # tables and figures from an earlier --out JSON
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from benchlib import yasa_stage_codes  # bench/ is the script's folder
from physioserve.modalities import STAGE_NAMES, STAGE_UNDEFINED
from physioserve.synth.corpus import generate_record, plan_corpus
from physioserve.synth.hypnograms import EPOCH_SAMPLES, FS, held_out_hypnograms
from physioserve.synth.norms import BANDS, RANGES
from physioserve.synth.sites import CHANNEL_NAMES
from physioserve.synth.writer import channel_specs

INPUTS = {"eeg+eog+emg": ("C4-M1", "E1-M2", "Chin1-Chin2"), "eeg": ("C4-M1", None, None)}


def quantised(signals: np.ndarray, name: str) -> np.ndarray:
    """One channel as the written file holds it (int16 at the header's gain), back in physical units."""
    ch = CHANNEL_NAMES.index(name)
    _, gain, baseline = channel_specs()[ch]
    x = signals[ch].astype(np.float64)
    return (np.clip(np.rint(x * gain + baseline), -32767, 32767) - baseline) / gain


def yasa_stages(channels: dict[str, np.ndarray], eeg: str, eog: str | None, emg: str | None) -> np.ndarray:
    """YASA's predicted stage per 30 s epoch (0 W ... 4 REM) from µV arrays at 200 Hz."""
    import mne
    import yasa

    names = [c for c in (eeg, eog, emg) if c is not None]
    info = mne.create_info(names, FS, ["eeg", "eog", "emg"][: len(names)] if eog else ["eeg"], verbose=False)
    raw = mne.io.RawArray(np.stack([channels[c] * 1e-6 for c in names]), info, verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hyp = yasa.SleepStaging(raw, eeg_name=eeg, eog_name=eog, emg_name=emg).predict()
    return yasa_stage_codes(hyp)


def confusion(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """[5, 5] counts, rows = true stage, columns = predicted."""
    m = np.zeros((5, 5), np.int64)
    np.add.at(m, (truth, pred), 1)
    return m


def scores(m: np.ndarray) -> dict:
    """Cohen's kappa, accuracy and per-stage recall from a confusion matrix."""
    n = m.sum()
    po = np.trace(m) / n
    pe = float((m.sum(0) * m.sum(1)).sum()) / n**2
    rows = m.sum(1)
    recall = {STAGE_NAMES[k]: (float(m[k, k] / rows[k]) if rows[k] else None) for k in range(5)}
    return {"kappa": float((po - pe) / (1 - pe)), "accuracy": float(po), "recall": recall}


SUMMARY_CHANNELS = ("F3-M2", "C3-M2", "C4-M1", "O1-M2", "E1-M2", "Chin1-Chin2", "ECG")


def _epochs(x: np.ndarray, n_epochs: int) -> np.ndarray:
    return x[: n_epochs * EPOCH_SAMPLES].reshape(n_epochs, EPOCH_SAMPLES)


def epoch_features(channels: dict[str, np.ndarray], n_epochs: int) -> dict[str, np.ndarray]:
    """Per-epoch spectral features of the summary channels (see `norms.RANGES` for the definitions)."""
    from scipy import signal

    out = {}
    sos = signal.butter(4, [0.5, 30.0], btype="bandpass", fs=FS, output="sos")
    for name in ("F3-M2", "C3-M2", "C4-M1", "O1-M2"):
        x = _epochs(channels[name], n_epochs)
        f, p = signal.welch(x - x.mean(axis=1, keepdims=True), FS, window="hamming", nperseg=5 * FS, average="median", axis=-1)
        total = p[:, (f >= 0.5) & (f < 30)].sum(axis=1)
        for band, (lo, hi) in BANDS.items():
            out[f"{name}/abs_{band}"] = p[:, (f >= lo) & (f < hi)].sum(axis=1) * (f[1] - f[0])
            out[f"{name}/rel_{band}"] = p[:, (f >= lo) & (f < hi)].sum(axis=1) / total
        fit = (f >= 15) & (f <= 28)
        out[f"{name}/slope"] = np.polyfit(np.log(f[fit]), np.log(np.maximum(p[:, fit].T, 1e-12)), 1)[0]
        out[f"{name}/rms"] = _epochs(signal.sosfiltfilt(sos, channels[name]), n_epochs).std(axis=1)
    emg = signal.sosfiltfilt(signal.butter(4, [10.0, 90.0], btype="bandpass", fs=FS, output="sos"), channels["Chin1-Chin2"])
    out["Chin1-Chin2/rms"] = _epochs(emg, n_epochs).std(axis=1)
    eog = signal.sosfiltfilt(signal.butter(2, [0.5, 5.0], btype="bandpass", fs=FS, output="sos"), channels["E1-M2"])
    out["E1-M2/power"] = _epochs(eog, n_epochs).var(axis=1)
    out["E1-M2/rms"] = _epochs(signal.sosfiltfilt(sos, channels["E1-M2"]), n_epochs).std(axis=1)
    ecg = signal.sosfiltfilt(signal.butter(2, [5.0, 30.0], btype="bandpass", fs=FS, output="sos"), channels["ECG"])
    energy = ecg**2
    peaks, _ = signal.find_peaks(energy, height=0.2 * np.quantile(energy, 0.999), distance=int(0.33 * FS))
    out["ECG/hr"] = np.bincount(peaks // EPOCH_SAMPLES, minlength=n_epochs)[:n_epochs] * 2.0  # beats per min
    return out


PSD_CHANNELS = ("F3-M2", "C4-M1", "O1-M2", "E1-M2")  # frontal, central, occipital, EOG


def stage_spectra(channels: dict[str, np.ndarray], stages: np.ndarray) -> dict:
    """Per stage and channel: median over the stage's epochs of the Welch PSD (5 s Hamming, median)."""
    from scipy import signal

    out = {}
    for name in PSD_CHANNELS:
        x = _epochs(channels[name], len(stages))
        f, p = signal.welch(x - x.mean(axis=1, keepdims=True), FS, window="hamming", nperseg=5 * FS, average="median", axis=-1)
        keep = f <= 45
        out["freqs"] = f[keep].tolist()
        for k, stage in enumerate(STAGE_NAMES):
            if np.any(stages == k):
                out[f"{name}/{stage}"] = np.median(p[stages == k][:, keep], axis=0).tolist()
    return out


def real_clip_spectra(shared: Path) -> dict:
    """PSDs of the real clips (shared/data/real/yasa): W eyes open F4-A1, Cz-A2; N2; N3; REM EOG."""
    from scipy import signal

    folder = shared / "data" / "real" / "yasa"
    clips = {}
    if not folder.is_dir():
        return clips

    def psd(x, fs):
        n = int(5 * fs)
        f, p = signal.welch(np.asarray(x, float) - np.mean(x), fs, window="hamming", nperseg=min(n, len(x)), average="median")
        return f.tolist(), p.tolist()

    rest = np.load(folder / "data_resting_EO_200Hz.npz")
    for i, name in enumerate(rest["chan"]):
        clips[f"W/{name} (real, eyes open)"] = psd(rest["data"][i], float(rest["sf"]))
    clips["N2/real N2 clip"] = psd(np.loadtxt(folder / "data_N2_spindles_15sec_200Hz.txt"), 200)
    clips["N3/real N3 clip"] = psd(np.loadtxt(folder / "data_N3_no-spindles_30sec_100Hz.txt"), 100)
    eog = np.load(folder / "data_EOGs_REM_256Hz.npz")
    clips["REM/LOC (real REM EOG)"] = psd(eog["data"][0], float(eog["sf"]))
    return clips


def plot_stages(results: list[dict], rows: list[dict], clips: dict, folder: Path) -> list[Path]:
    """One PNG per stage: generator spectra (frontal, central, occipital, EOG; median and quartiles
    over nights) with the real clips (dotted), and relative band powers against the cited ranges."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from physioserve.synth.norms import background_psd

    folder.mkdir(parents=True, exist_ok=True)
    f = np.array(results[0]["psd"]["freqs"])
    colours = dict(zip(PSD_CHANNELS, ("tab:blue", "tab:green", "tab:purple", "tab:gray")))
    paths = []
    for k, stage in enumerate(STAGE_NAMES):
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [1.6, 1]})
        for name in PSD_CHANNELS:
            curves = np.array([r["psd"][f"{name}/{stage}"] for r in results if f"{name}/{stage}" in r["psd"]])
            if not len(curves):
                continue
            ax.fill_between(f[1:], *np.percentile(curves[:, 1:], [25, 75], axis=0), color=colours[name], alpha=0.2, lw=0)
            ax.loglog(f[1:], np.median(curves[:, 1:], axis=0), color=colours[name], lw=1.5, label=f"synthetic {name}")
        ax.loglog(f[1:], background_psd(f[1:], k), "k--", lw=1, label="design background C4-M1")
        clip_colours = ["tab:orange", "tab:red", "tab:brown"]
        for label, (cf, cp) in clips.items():
            clip_stage, clip_name = label.split("/", 1)
            if clip_stage == stage:
                cf, cp = np.array(cf), np.array(cp)
                keep = (cf > 0) & (cf <= 45)
                ax.loglog(cf[keep], cp[keep], lw=1, alpha=0.9, ls=":", color=clip_colours.pop(0), label=clip_name)
        ax.set_xlim(0.4, 45)
        ax.set_xlabel("Hz")
        ax.set_ylabel("µV²/Hz")
        ax.set_title(f"{stage}: spectra (median and quartiles over nights)")
        ax.legend(fontsize=7, loc="lower left")
        mine = [r for r in rows if r["stage"] == stage and r["metric"].startswith("rel_")]
        for i, r in enumerate(mine):
            bx.plot([r["low"], r["high"]], [i, i], color="k", lw=4, alpha=0.3, solid_capstyle="butt")
            bx.plot(r["value"], i, "o", color="tab:green" if r["inside"] else "tab:red")
        bx.set_yticks(range(len(mine)), [f"{r['metric'][4:]} {r['derivation']}" for r in mine], fontsize=8)
        bx.set_xscale("log")
        bx.xaxis.set_major_locator(LogLocator(subs=(1.0, 3.0)))
        bx.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        bx.tick_params(axis="x", labelsize=8)
        bx.xaxis.set_minor_formatter(NullFormatter())  # no overlapping 2x10^-1, 3x10^-1 ... labels
        bx.set_xlabel("share of 0.5-30 Hz power")
        others = [r for r in rows if r["stage"] == stage and not r["metric"].startswith("rel_")]
        bx.set_title("relative power vs cited range (bars)", fontsize=9)
        text = "\n".join(f"{r['metric']} {r['derivation']}: {r['value']:.3g} [{r['low']:g}, {r['high']:g}]" for r in others)
        bx.text(0.02, -0.32, text, transform=bx.transAxes, fontsize=7, va="top")
        fig.tight_layout()
        path = folder / f"{stage}.png"
        fig.savefig(path, dpi=80, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)
    return paths


def event_features(channels: dict[str, np.ndarray], stages: np.ndarray) -> dict:
    """Spindles (C4-M1, N2) and slow waves (F3-M2, N3) by YASA's detectors, with their defaults."""
    import yasa
    from scipy import signal

    hyp = np.repeat(np.where(stages == STAGE_UNDEFINED, -2, stages), EPOCH_SAMPLES // 2).astype(int)  # at 100 Hz
    out = {}
    minutes = {k: np.count_nonzero(stages == k) / 2.0 for k in (2, 3)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c4 = signal.resample_poly(channels["C4-M1"][: len(hyp) * 2], 1, 2)
        sp = yasa.spindles_detect(c4, 100, hypno=hyp[: len(c4)], include=(2,), verbose="ERROR")
        df = sp.summary() if sp is not None else None
        out["spindles"] = (0 if df is None else len(df), minutes[2])
        out["spindle_duration_s"] = [] if df is None else df["Duration"].tolist()
        out["spindle_hz"] = [] if df is None else df["Frequency"].tolist()
        f3 = signal.resample_poly(channels["F3-M2"][: len(hyp) * 2], 1, 2)
        sw = yasa.sw_detect(f3, 100, hypno=hyp[: len(f3)], include=(3,), verbose="ERROR") if minutes[3] else None
        df = sw.summary() if sw is not None else None
        out["slow_waves"] = (0 if df is None else len(df), minutes[3])
        out["slow_wave_ptp_uv"] = [] if df is None else df["PTP"].tolist()
    return out


def score_night(plan) -> dict:
    """Generate one planned night, score it with YASA (both input sets), summarise its spectra."""
    t0 = time.perf_counter()
    subject, night = generate_record(plan)
    t1 = time.perf_counter()
    channels = {c: quantised(night.signals, c) for c in SUMMARY_CHANNELS}
    stages = night.hypnogram.stages
    out = {"name": plan.source, "age": subject.age, "sex": subject.sex, "generate_s": t1 - t0, "inputs": {}}
    for key, (eeg, eog, emg) in INPUTS.items():
        pred = yasa_stages(channels, eeg, eog, emg)
        k = min(len(pred), len(stages))
        scored = stages[:k] != STAGE_UNDEFINED
        m = confusion(stages[:k][scored], pred[:k][scored])
        out["inputs"][key] = {"confusion": m.tolist(), **scores(m)}
    n_epochs = min(len(stages), len(channels["C4-M1"]) // EPOCH_SAMPLES)
    feats = epoch_features(channels, n_epochs)
    out["epochs"] = {"stage": stages[:n_epochs].tolist(), **{k: v.tolist() for k, v in feats.items()}}
    out["psd"] = stage_spectra(channels, stages[:n_epochs])
    out["events"] = event_features(channels, stages[:n_epochs])
    n2_minutes = np.count_nonzero(stages == 2) / 2.0
    out["events"]["k_complexes"] = (int(np.count_nonzero(stages[np.minimum(night.transients["k_complex"].astype(int)
                                                                         // EPOCH_SAMPLES, len(stages) - 1)] == 2)), n2_minutes)
    out["score_s"] = time.perf_counter() - t1
    return out


def spectral_summary(results: list[dict]) -> list[dict]:
    """Each row of `norms.RANGES` measured over all nights: value, range, inside or not."""
    stage_of = np.concatenate([r["epochs"]["stage"] for r in results])
    feats = {k: np.concatenate([r["epochs"][k] for r in results]) for k in results[0]["epochs"] if k != "stage"}
    code = {name: i for i, name in enumerate(STAGE_NAMES)}

    def med(key: str, stage: str) -> float:
        return float(np.median(feats[key][stage_of == code[stage]]))

    events = {k: [r["events"][k] for r in results] for k in results[0]["events"]}

    def rate(key: str) -> float:
        count, minutes = np.sum(events[key], axis=0)
        return float(count / minutes) if minutes else float("nan")

    rows = []
    for metric, stage, deriv, lo, hi, source in RANGES:
        if metric.startswith(("rel_", "slope", "rms")) and "/" not in deriv and deriv != "Chin1-Chin2":
            value = med(f"{deriv}/{metric}", stage)
        elif metric == "ratio_rms_N1_N2":
            value = med(f"{deriv}/rms", "N1") / med(f"{deriv}/rms", "N2")
        elif metric == "ratio_alpha_O_C":
            occipital, central = deriv.split("/")
            value = float(np.median((feats[f"{occipital}/abs_alpha"] / feats[f"{central}/abs_alpha"])[stage_of == 0]))
        elif metric in ("spindles_per_min", "slow_waves_per_min", "kcomplex_per_min"):
            value = rate({"spindles_per_min": "spindles", "slow_waves_per_min": "slow_waves", "kcomplex_per_min": "k_complexes"}[metric])
        elif metric in ("spindle_duration_s", "spindle_hz", "slow_wave_ptp_uv"):
            value = float(np.median(np.concatenate([np.asarray(v, float) for v in events[metric]] + [[np.nan]])[:-1]))
        elif metric == "ratio_emg_REM_N2":
            value = med("Chin1-Chin2/rms", "REM") / med("Chin1-Chin2/rms", "N2")
        elif metric == "ratio_emg_W_N2":
            value = med("Chin1-Chin2/rms", "W") / med("Chin1-Chin2/rms", "N2")
        elif metric == "eog_rms":
            value = med("E1-M2/rms", stage)
        elif metric == "ratio_eog_REM_N2":
            value = med("E1-M2/power", "REM") / med("E1-M2/power", "N2")
        elif metric == "ratio_hr_N3_W":
            value = med("ECG/hr", "N3") / med("ECG/hr", "W")
        else:
            raise ValueError(f"no measurement for {metric}")
        rows.append({"metric": metric, "stage": stage, "derivation": deriv, "value": value, "low": lo, "high": hi,
                     "inside": bool(lo <= value <= hi), "source": source})
    return rows


def _print_summary(rows: list[dict]) -> None:
    print("\nper-stage summary against the cited ranges (physioserve.synth.norms.RANGES)")
    print(f"{'metric':<20} {'stage':<5} {'derivation':<13} {'value':>8} {'range':>17}  ")
    for r in rows:
        flag = "ok" if r["inside"] else "OUTSIDE"
        print(f"{r['metric']:<20} {r['stage']:<5} {r['derivation']:<13} {r['value']:8.3f} [{r['low']:7.3f}, {r['high']:7.3f}]  {flag}")
    print(f"{sum(r['inside'] for r in rows)} of {len(rows)} inside")


def _print_table(results: list[dict], key: str) -> dict:
    print(f"\nYASA SleepStaging, inputs {key} ({' + '.join(c for c in INPUTS[key] if c)})")
    print(f"{'night':<10} {'age':>3} {'kappa':>6} {'acc':>5} " + " ".join(f"{s:>5}" for s in STAGE_NAMES))
    for r in results:
        s = r["inputs"][key]
        rec = " ".join(f"{s['recall'][n]:5.2f}" if s["recall"][n] is not None else "    -" for n in STAGE_NAMES)
        print(f"{r['name']:<10} {r['age']:>3} {s['kappa']:6.3f} {s['accuracy']:5.2f} {rec}")
    total = sum(np.array(r["inputs"][key]["confusion"]) for r in results)
    pooled = scores(total)
    mean = {
        "kappa": float(np.mean([r["inputs"][key]["kappa"] for r in results])),
        "accuracy": float(np.mean([r["inputs"][key]["accuracy"] for r in results])),
        "recall": {n: float(np.nanmean([r["inputs"][key]["recall"][n] if r["inputs"][key]["recall"][n] is not None
                                         else np.nan for r in results])) for n in STAGE_NAMES},
    }
    rec = " ".join(f"{mean['recall'][n]:5.2f}" for n in STAGE_NAMES)
    print(f"{'mean':<10} {'':>3} {mean['kappa']:6.3f} {mean['accuracy']:5.2f} {rec}")
    print("confusion over all nights (rows true, columns YASA):")
    print("      " + " ".join(f"{s:>6}" for s in STAGE_NAMES))
    for k, row in enumerate(total):
        print(f"{STAGE_NAMES[k]:>5} " + " ".join(f"{v:6d}" for v in row))
    return {"mean": mean, "pooled": pooled, "confusion": total.tolist()}


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def range_cell(low: float, high: float) -> str:
    """A cited range as the doc's table writes it: `low - high`."""
    return f"{low:g} - {high:g}"


def markdown(data: dict, figures: Path | None = None) -> str:
    """The realism tables of docs/SYNTHETIC.md from the JSON this script writes: YASA per input set
    (mean over nights and pooled), per night, the confusion matrices, the spectral summary."""
    names = list(STAGE_NAMES)
    lines = ["| YASA inputs | mean kappa | pooled kappa | accuracy | " + " | ".join(f"{n} recall" for n in names) + " |",
             "| --- " * (4 + len(names)) + "|"]
    for key, s in data["summary"].items():
        rec = " | ".join(f"{s['mean']['recall'][n]:.2f}" for n in names)
        lines.append(f"| {key} ({' + '.join(c for c in INPUTS[key] if c)}) | {s['mean']['kappa']:.3f} | "
                     f"{s['pooled']['kappa']:.3f} | {s['mean']['accuracy']:.2f} | {rec} |")
    lines += ["", "Per night (kappa; the hypnogram's record, the synthetic subject's age and sex):", "",
              "| night | age | sex | " + " | ".join(f"kappa {k}" for k in data["summary"]) + " | N1 recall " +
              " | N1 recall ".join(data["summary"]) + " |", "| --- " * (3 + 2 * len(data["summary"])) + "|"]
    for r in data["nights"]:
        kap = " | ".join(f"{r['inputs'][k]['kappa']:.3f}" for k in data["summary"])
        n1 = " | ".join("-" if r["inputs"][k]["recall"]["N1"] is None else f"{r['inputs'][k]['recall']['N1']:.2f}"
                        for k in data["summary"])
        lines.append(f"| {r['name']} | {r['age']} | {r['sex']} | {kap} | {n1} |")
    for key, s in data["summary"].items():
        lines += ["", f"Confusion over all nights, YASA {key} (rows: true stage; columns: YASA):", "",
                  "| true stage | " + " | ".join(names) + " | recall |", "| --- " * (len(names) + 2) + "|"]
        for k, row in enumerate(s["confusion"]):
            total = sum(row)
            lines.append(f"| {names[k]} | " + " | ".join(str(v) for v in row) + f" | {row[k] / total:.2f} |"
                         if total else f"| {names[k]} | " + " | ".join(str(v) for v in row) + " | - |")
    rows = data["spectral_summary"]
    lines += ["", f"Per-stage summary against the cited ranges ({sum(r['inside'] for r in rows)} of {len(rows)} inside; "
              "value = median over all epochs of the stage, or rate over all its minutes):", "",
              "| metric | stage | derivation | cited range | synthetic | inside | source |", "| --- " * 7 + "|"]
    for r in rows:
        lines.append(f"| {r['metric']} | {r['stage']} | {r['derivation']} | {range_cell(r['low'], r['high'])} | "
                     f"{_fmt(r['value'])} | {'yes' if r['inside'] else '**no**'} | {r['source']} |")
    if figures is not None:
        lines.append("")
        for stage in names:
            lines.append(f"![{stage}: synthetic spectra and relative band powers against the cited ranges]({figures}/{stage}.png)")
    return "\n".join(lines) + "\n"


def _doc_relative(folder: Path) -> Path:
    """The figures' folder as docs/SYNTHETIC.md links it."""
    return Path(os.path.relpath(folder.resolve(), Path("docs").resolve()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hours", type=float, default=None, help="crop each night (default: whole nights)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--nights", type=int, default=10, help="score only the first N held-out nights (quick looks)")
    parser.add_argument("--figures", type=Path, default=Path("docs/figures/synthetic"), help="folder for the per-stage PNGs")
    parser.add_argument("--shared", type=Path, default=Path("../shared"), help="shared data folder (the real clips)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/realism.json"))
    parser.add_argument("--markdown", type=Path, default=None, help="also write the doc's tables (Markdown) here")
    parser.add_argument("--from-json", action="store_true", help="no new nights: the Markdown (and the figures) from the --out JSON")
    args = parser.parse_args()
    if args.from_json:
        if args.markdown is None:
            parser.error("--from-json writes Markdown: give --markdown FILE")
        if not args.out.is_file():
            parser.error(f"--from-json: {args.out} not found; run bench/realism.py first (or give --out FILE)")
        data = json.loads(args.out.read_text())
        if all("psd" in r for r in data["nights"]):  # a JSON without the spectra gives the tables only
            for path in plot_stages(data["nights"], data["spectral_summary"], real_clip_spectra(args.shared), args.figures):
                print(f"wrote {path}")
        args.markdown.write_text(markdown(data, _doc_relative(args.figures)))
        print(f"wrote {args.markdown}")
        return
    pool = held_out_hypnograms()
    plans = plan_corpus(len(pool), args.seed, args.hours, pool)[: args.nights]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as ex:
        results = list(ex.map(score_night, plans))
    summary = {key: _print_table(results, key) for key in INPUTS}
    rows = spectral_summary(results)
    _print_summary(rows)
    for path in plot_stages(results, rows, real_clip_spectra(args.shared), args.figures):
        print(f"wrote {path}")
    print(f"\n{len(results)} nights, seed {args.seed}, {time.perf_counter() - t0:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    data = {"seed": args.seed, "hours": args.hours, "summary": summary, "spectral_summary": rows,
            "nights": [{k: v for k, v in r.items() if k != "epochs"} for r in results]}
    args.out.write_text(json.dumps(data, indent=1))
    if args.markdown is not None:
        args.markdown.write_text(markdown(data, _doc_relative(args.figures)))
        print(f"wrote {args.markdown}")


if __name__ == "__main__":
    main()
