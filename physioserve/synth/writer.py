"""Write one record in the PhysioNet/CinC 2018 layout: `.hea`, `.mat`, `.arousal`, `-arousal.mat`.

- `NAME.mat`: MATLAB v4 matrix `val` (int16, 13 x n; the site's channels for other 200 Hz sites) whose 24-byte header (20-byte v4 header +
  "val\\0") precedes WFDB format-16 interleaved samples; the header's `16+24` tells WFDB readers to
  skip it, so plain `wfdb.rdrecord` reads the record, as it does the challenge's files.
- `NAME.hea`: `NAME 13 200 n`, then per channel `NAME.mat 16+24 GAIN(BASELINE)/UNIT 16 0 INIT
  CHECKSUM 0 CHANNEL`, with the real records' gains (1/uV; SaO2 655.35(-32768)/%; ECG 1000/mV).
- `NAME.arousal`: WFDB annotations, all with symbol '"' (note) as in the challenge: a stage note
  (`W N1 N2 N3 R`, chan 0) at every stage change, `(arousal_rera` / `arousal_rera)` pairs and
  `(resp_...` / `resp_...)` pairs (chan 1), with the subtypes the real files use.
- `NAME-arousal.mat`: MATLAB 7.3 (HDF5 with MATLAB's 512-byte user block): `data/arousals` (n x 1
  float64: +1 target arousal, 0, -1 not scored) and `data/sleep_stages/{wake,nonrem1,nonrem2,nonrem3,
  rem,undefined}` (1 x n uint8). As in the real files, stage changes sit one sample early (at
  6000 k - 1) and the last sample is undefined; `data/arousals` is built from the annotations by
  the challenge's rules (`labels`), which give back the hypnogram's arousal regions exactly.
"""

from __future__ import annotations

import struct
from pathlib import Path

import h5py
import numpy as np

from ..modalities import STAGE_UNDEFINED
from .hypnograms import EPOCH_SAMPLES, FS, Hypnogram
from .hardware import kinds
from .labels import arousal_vector
from .sites import PHYSIONET_2018, SiteProfile

# Counts per unit for electrophysiology: 1 count = 1 µV whatever the unit, as the real headers' 1/uV
# and 1000/mV (tr03-0005.hea); breathing as the real headers (1/uV), SaO2 655.35(-32768)/%.
_GAIN = {"uV": 1.0, "mV": 1000.0, "V": 1e6}


def channel_specs(site: SiteProfile = PHYSIONET_2018) -> list[tuple[str, float, int]]:
    """(unit, gain, baseline) per channel of `site.channels`; PHYSIONET_2018 gives the real headers'."""
    specs = []
    for kind in kinds(site):
        if kind in ("eeg", "eog", "emg"):
            specs.append((site.eeg_unit, _GAIN[site.eeg_unit], 0))
        elif kind == "resp":
            specs.append(("uV", 1.0, 0))
        elif kind == "sao2":
            specs.append(("%", 655.35, -32768))
        else:
            specs.append((site.ecg_unit, _GAIN[site.ecg_unit], 0))
    return specs
STAGE_NOTES = ("W", "N1", "N2", "N3", "R")
STAGE_SUBTYPES = (5, 3, 2, 1, 4)  # subtype of each stage note in the real files
EVENT_SUBTYPES = {  # (open, close) subtypes in the real files
    "arousal_rera": (0, 1),
    "resp_centralapnea": (12, 13),
    "resp_hypopnea": (16, 17),
    "resp_obstructiveapnea": (22, 23),
}
SLEEP_STAGE_FIELDS = ("wake", "nonrem1", "nonrem2", "nonrem3", "rem", "undefined")  # by stage code
_MATLAB_STAGE_FIELD_ORDER = ("undefined", "nonrem3", "nonrem2", "nonrem1", "rem", "wake")


def to_digital(signals: np.ndarray, site: SiteProfile = PHYSIONET_2018) -> np.ndarray:
    """Physical [C, n] (site units) -> int16 [n, C]; -32768 (WFDB's 'no sample') is never produced."""
    n = signals.shape[1]
    out = np.empty((n, len(site.channels)), np.int16)
    for ch, (_, gain, baseline) in enumerate(channel_specs(site)):
        d = np.rint(signals[ch].astype(np.float64) * gain + baseline)
        out[:, ch] = np.clip(d, -32767, 32767)
    return out


def _fmt_gain(gain: float, baseline: int, unit: str) -> str:
    g = f"{gain:g}"
    return f"{g}({baseline})/{unit}" if baseline else f"{g}/{unit}"


def write_signals(folder: Path, name: str, digital: np.ndarray, site: SiteProfile = PHYSIONET_2018) -> None:
    """`.mat` (MATLAB v4 container around WFDB format 16) and `.hea`."""
    n, n_sig = digital.shape
    header = struct.pack("<5i", 30, n_sig, n, 0, 4) + b"val\x00"  # type 30 = little-endian int16 matrix
    assert len(header) == 24
    with open(folder / f"{name}.mat", "wb") as f:
        f.write(header)
        f.write(np.ascontiguousarray(digital, "<i2").tobytes())  # column-major [n_sig, n] = interleaved
    sums = digital.astype(np.int64).sum(axis=0)
    checksums = (sums + 2**15) % 2**16 - 2**15
    lines = [f"{name} {n_sig} {FS} {n}"]
    for ch, (channel, (unit, gain, baseline)) in enumerate(zip(site.channels, channel_specs(site), strict=True)):
        lines.append(
            f"{name}.mat 16+24 {_fmt_gain(gain, baseline, unit)} 16 0 {int(digital[0, ch])} {int(checksums[ch])} 0 {channel}"
        )
    (folder / f"{name}.hea").write_text("\n".join(lines) + "\n")


def stage_changes(stages: np.ndarray) -> list[tuple[int, int]]:
    """(sample, stage) at every scored epoch whose stage differs from the previous epoch's."""
    out, previous = [], STAGE_UNDEFINED
    for epoch, stage in enumerate(np.asarray(stages)):
        if stage != previous and stage != STAGE_UNDEFINED:
            out.append((epoch * EPOCH_SAMPLES, int(stage)))
        previous = stage
    return out


def write_annotations(
    folder: Path, name: str, hyp: Hypnogram, arousals: np.ndarray, resp_events: np.ndarray, resp_kinds: list[str]
) -> None:
    """`.arousal`: stage notes, `(arousal_rera ... arousal_rera)` at the annotated arousals, resp events."""
    import wfdb

    rows: list[tuple[int, int, int, int, str]] = []  # sample, order, subtype, chan, note
    for sample, stage in stage_changes(hyp.stages):
        rows.append((sample, 0, STAGE_SUBTYPES[stage], 0, STAGE_NOTES[stage]))
    events = [("arousal_rera", a, b) for a, b in np.asarray(arousals).reshape(-1, 2)]
    events += [(kind, a, b) for kind, (a, b) in zip(resp_kinds, np.asarray(resp_events).reshape(-1, 2), strict=True)]
    for kind, a, b in events:
        opening, closing = EVENT_SUBTYPES[kind]
        rows.append((int(a), 1, opening, 1, f"({kind}"))
        rows.append((int(b), 1, closing, 1, f"{kind})"))
    rows.sort(key=lambda r: (r[0], r[1]))
    wfdb.wrann(
        name,
        "arousal",
        sample=np.array([r[0] for r in rows], np.int64),
        symbol=['"'] * len(rows),
        subtype=np.array([r[2] for r in rows], np.int64),
        chan=np.array([r[3] for r in rows], np.int64),
        num=np.zeros(len(rows), np.int64),
        aux_note=[r[4] for r in rows],
        fs=FS,
        write_dir=str(folder),
    )


def sample_stages(stages: np.ndarray, n: int) -> np.ndarray:
    """Stage per sample as in the real -arousal.mat: epoch k's stage from sample 6000 k - 1; last undefined."""
    epoch_of = np.minimum(np.arange(1, n + 1) // EPOCH_SAMPLES, len(stages) - 1)
    out = np.asarray(stages, np.int8)[epoch_of]
    out[-1] = STAGE_UNDEFINED
    return out


def _fields_attr(names) -> np.ndarray:
    out = np.empty(len(names), dtype=object)
    for i, name in enumerate(names):
        out[i] = np.frombuffer(name.encode(), dtype="S1")
    return out


_MAT73_HEADER = (
    b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: physioserve synth (synthetic data) "
    b"HDF5 schema 1.00 ."
).ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"


def write_label_mat(path: Path, hyp: Hypnogram, arousals: np.ndarray, resp_events: np.ndarray) -> None:
    """`-arousal.mat` (MATLAB 7.3 = HDF5) with the real files' groups, shapes, dtypes and attributes."""
    n = hyp.n_samples
    per_sample = sample_stages(hyp.stages, n)
    vlen_s1 = h5py.vlen_dtype(np.dtype("S1"))
    opts = dict(compression="gzip", compression_opts=3, track_times=False)
    with h5py.File(path, "w", userblock_size=512, libver="earliest", track_order=False) as f:
        refs = f.create_group("#refs#")
        empty = refs.create_dataset("a", data=np.zeros(2, np.uint64), track_times=False)
        empty.attrs["MATLAB_class"] = np.bytes_("canonical empty")
        empty.attrs["MATLAB_empty"] = np.uint8(1)
        data = f.create_group("data")
        data.attrs["MATLAB_class"] = np.bytes_("struct")
        data.attrs.create("MATLAB_fields", _fields_attr(("sleep_stages", "arousals")), dtype=vlen_s1)
        arousals = data.create_dataset(
            "arousals", data=arousal_vector(hyp.stages, n, arousals, resp_events)[:, None], chunks=(min(n, 8182), 1), **opts
        )
        arousals.attrs["H5PATH"] = np.bytes_("/data")
        arousals.attrs["MATLAB_class"] = np.bytes_("double")
        group = data.create_group("sleep_stages")
        group.attrs["H5PATH"] = np.bytes_("/data")
        group.attrs["MATLAB_class"] = np.bytes_("struct")
        group.attrs.create("MATLAB_fields", _fields_attr(_MATLAB_STAGE_FIELD_ORDER), dtype=vlen_s1)
        for code, field in enumerate(SLEEP_STAGE_FIELDS):
            mask = (per_sample == code).astype(np.uint8)[None, :]
            dset = group.create_dataset(field, data=mask, chunks=(1, min(n, 65151)), **opts)
            dset.attrs["H5PATH"] = np.bytes_("/datasleep_stages")  # sic, as MATLAB writes it
            dset.attrs["MATLAB_class"] = np.bytes_("logical")
            dset.attrs["MATLAB_int_decode"] = np.int32(1)
    with open(path, "r+b") as f:
        f.write(_MAT73_HEADER)


def write_record(
    out_dir: Path,
    name: str,
    signals: np.ndarray,
    hyp: Hypnogram | None,
    arousals: np.ndarray | None = None,
    resp_events: np.ndarray | None = None,
    resp_kinds: list[str] | None = None,
    site: SiteProfile = PHYSIONET_2018,
) -> Path:
    """Write `out_dir/name/` (signals [C, n] at 200 Hz in the site's units always; labels when `hyp`
    is given). Returns the folder."""
    if site.fs != FS:
        raise ValueError(
            f"site {site.name!r} records at {site.fs} Hz; the PhysioNet 2018 layout is 200 Hz only: "
            "write it as EDF (--format edf)"
        )
    folder = Path(out_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    write_signals(folder, name, to_digital(signals, site), site)
    if hyp is not None:
        resp = np.zeros((0, 2), np.int64) if resp_events is None else resp_events
        arousals = np.zeros((0, 2), np.int64) if arousals is None else arousals
        write_annotations(folder, name, hyp, arousals, resp, resp_kinds or [])
        write_label_mat(folder / f"{name}-arousal.mat", hyp, arousals, resp)
    return folder
