"""Write one record as an EDF+ file (edfio): the site's rate, channel names and physical units, labels as annotations.

- Signals: one EDF signal per channel of `site.channels`, at `site.fs`, with the site's physical
  dimension (`uV`, `mV`, `V` for electrophysiology; `uV` for the belts and airflow as in the
  PhysioNet headers; `%` for SaO2), 16-bit digital values over fixed physical ranges as recording
  systems use (EEG/EOG/EMG +-3276.7 µV, i.e. 0.1 µV resolution; ECG +-10 mV), values beyond a range
  clipped as an amplifier saturates; the prefiltering field states the hardware filters. 1 s data
  records; the tail shorter than 1 s is dropped.
- Annotations (EDF+ TAL): `Sleep stage W|N1|N2|N3|R` (or `Sleep stage ?` before scoring starts) at
  every 30 s epoch with duration 30, and `Arousal` at every target-arousal label region of the
  hypnogram (onset and duration in seconds), so that `physioserve score night.edf` reads back the
  driving hypnogram's labels.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np

from ..modalities import EPOCH_SECONDS, STAGE_UNDEFINED
from .hardware import kinds
from .hypnograms import FS, Hypnogram
from .sites import UNIT_SCALE, SiteProfile

STAGE_TEXT = ("W", "N1", "N2", "N3", "R")
START = datetime.datetime(2018, 1, 1, 22, 0, 0)
_RANGE_UV = {"eeg": 3276.7, "eog": 3276.7, "emg": 3276.7}


def _physical_range(kind: str, unit: str, x: np.ndarray) -> tuple[float, float]:
    if kind in _RANGE_UV:
        r = _RANGE_UV[kind] * UNIT_SCALE[unit]
        return -r, r
    if kind == "ecg":
        r = 10_000.0 * UNIT_SCALE[unit]
        return -r, r
    if kind == "sao2":
        return 0.0, 100.0
    r = float(np.ceil(max(np.abs(x).max(), 1.0) * 1.05))
    return -r, r


def annotations(hyp: Hypnogram | None) -> list:
    """EDF+ annotations of the labels: one stage per epoch, one `Arousal` per label region."""
    import edfio

    if hyp is None:
        return []
    out = []
    for k, stage in enumerate(hyp.stages):
        text = "Sleep stage ?" if stage == STAGE_UNDEFINED else f"Sleep stage {STAGE_TEXT[stage]}"
        out.append(edfio.EdfAnnotation(float(k * EPOCH_SECONDS), float(EPOCH_SECONDS), text))
    for start, stop in np.asarray(hyp.arousal_regions).reshape(-1, 2):
        out.append(edfio.EdfAnnotation(start / FS, (stop - start) / FS, "Arousal"))
    return out


def write_edf(
    path: str | Path, signals: np.ndarray, site: SiteProfile, hyp: Hypnogram | None, *, sex: str = "X", age: int | None = None,
) -> Path:
    """Write `signals` [C, n] (site units, at site.fs) as an EDF+ file with the labels of `hyp`.

    The header is fixed (start 2018-01-01 22:00:00; patient code = file stem, sex, a birthdate that
    gives `age` at the start; equipment `physioserve-synth`, the site's name), so files are
    byte-identical between runs.
    """
    import edfio

    path = Path(path)
    n = signals.shape[1] // site.fs * site.fs
    lp = f" LP:{site.lowpass_hz:g}Hz" if site.lowpass_hz else ""
    hp = f"HP:{site.highpass_hz:g}Hz" if site.highpass_hz else "HP:DC"
    edf_signals = []
    for ch, (name, kind) in enumerate(zip(site.channels, kinds(site), strict=True)):
        unit = {"eeg": site.eeg_unit, "eog": site.eeg_unit, "emg": site.eeg_unit, "ecg": site.ecg_unit,
                "sao2": "%", "resp": "uV"}[kind]
        lo, hi = _physical_range(kind, unit, signals[ch, :n])
        data = np.clip(signals[ch, :n].astype(np.float64), lo, hi)
        edf_signals.append(edfio.EdfSignal(
            data, float(site.fs), label=name, physical_dimension=unit, physical_range=(lo, hi),
            prefiltering=f"{hp}{lp}" if kind in ("eeg", "eog") else "",
        ))
    birthdate = None if age is None else START.date().replace(year=START.year - int(age) - 1, day=2)
    edf = edfio.Edf(
        edf_signals, data_record_duration=1.0, annotations=annotations(hyp), starttime=START.time(),
        patient=edfio.Patient(code=path.stem, sex=sex if sex in ("F", "M") else "X", birthdate=birthdate),
        recording=edfio.Recording(startdate=START.date(), equipment_code="physioserve-synth", additional=(site.name,)),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    edf.write(path)
    return path
