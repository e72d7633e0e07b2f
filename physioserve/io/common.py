"""Helpers shared by the readers: header-only channels, unit conversion, modality mapping, regions."""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np

from ..modalities import MIN_INPUT_FS, TARGET_FS, map_channels, modality_of
from ..preprocessing import band_limit_hz
from ..recording import Channel, is_voltage, microvolt_factor
from .errors import RecordError

MICROVOLT = "uV"


@dataclass
class HeaderChannel(Channel):
    """A channel whose samples were not loaded (`load_signals=False`): `data` is empty, the length is known."""

    n_samples: int = 0

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs


def n_samples_of(channel: Channel) -> int:
    """Samples in a channel, loaded or not."""
    return channel.n_samples if isinstance(channel, HeaderChannel) else len(channel.data)


def to_microvolts(data: np.ndarray, unit: str, *, where: str, required: bool) -> tuple[np.ndarray, str, float]:
    """(data, unit, factor): in µV when `unit` is a voltage; other units stay as they are unless `required`."""
    try:
        factor = microvolt_factor(unit, where=where)
    except ValueError:
        if required:
            raise
        return data, unit, 1.0
    return (data * factor if factor != 1.0 else data), MICROVOLT, factor


def make_channel(head: HeaderChannel, data: np.ndarray | None, *, where: str, required: bool) -> Channel:
    """A read channel from its header (`data` in header units; None: header only), voltages in µV."""
    if data is None:
        _, unit, _ = to_microvolts(np.empty(0), head.unit, where=where, required=required)
        return HeaderChannel(head.name, np.empty(0), head.fs, unit, n_samples=head.n_samples)
    data, unit, factor = to_microvolts(data, head.unit, where=where, required=required)
    limits = None if head.limits is None else (min(head.limits) * factor, max(head.limits) * factor)
    step = None if head.step is None else abs(head.step) * factor
    return Channel(head.name, data, head.fs, unit, limits, step)


def channel_problem(channel: Channel, calibration: str | None = None) -> str | None:
    """Why a channel cannot feed a model modality (uncalibrated, not a voltage, too slow), or None."""
    if calibration:
        return calibration
    if not is_voltage(channel.unit):
        return f"physical unit {channel.unit!r} is not a voltage (uV, mV, V)"
    if not channel.fs >= MIN_INPUT_FS:
        return f"sampled at {channel.fs:g} Hz, below the {MIN_INPUT_FS} Hz the model needs"
    return None


def choose_modalities(
    channels: dict[str, Channel],
    override: dict[str, str] | None,
    *,
    where: str,
    calibration: dict[str, str] | None = None,
) -> tuple[dict[str, str], list[str]]:
    """({modality: channel name}, notes): the patterns pick among usable channels; `override` wins.

    A channel is usable when it is calibrated (`calibration`: {name: problem} from the reader), its
    unit is a voltage and it runs at >= 50 Hz. A recognised channel that is not usable is left out
    with a note (Sleep-EDF's 1 Hz 'EMG submental' envelope, an EDF channel whose physical range is
    0 to 0), and the next usable candidate is taken; naming it in `override` is an error. A chosen
    channel below 100 Hz gets a note: it is upsampled and band-limited.
    """
    override = dict(override or {})
    problems = {name: p for name, c in channels.items() if (p := channel_problem(c, (calibration or {}).get(name)))}
    names = list(channels)
    for modality, name in override.items():
        if name not in channels:
            raise RecordError(
                f"{where}: channel map {modality}={name!r} names no channel of this recording; "
                f"channels: {', '.join(names) or '(none)'}"
            )
        if name in problems:
            raise RecordError(
                f"{where}: channel map {modality}={name!r}: {problems[name]}; map another channel, "
                "or fix the file's header"
            )
    try:
        chosen = map_channels([n for n in names if n not in problems or n in override.values()], override)
    except ValueError as error:
        raise RecordError(f"{where}: {error}") from None
    notes = [
        f"{modality}: {name!r} left out: {problems[name]}"
        for name in names
        if name in problems and (modality := modality_of(name)) is not None and modality not in override
    ]
    for modality, name in chosen.items():
        edge = band_limit_hz(channels[name].fs, modality)
        if edge is not None:
            notes.append(f"{modality}: {name!r} at {channels[name].fs:g} Hz is upsampled to {TARGET_FS} Hz; "
                         f"band-limited: nothing above {edge:g} Hz")
    return chosen, notes


def skipped_candidates(channels: dict[str, Channel], modality_channels: dict[str, str]) -> dict[str, list[str]]:
    """Channels the patterns recognise but that were not chosen, per modality (for `inspect`)."""
    out: dict[str, list[str]] = {}
    chosen = set(modality_channels.values())
    for name in channels:
        modality = modality_of(name)
        if modality is not None and name not in chosen:
            out.setdefault(modality, []).append(name)
    return out


def require_modality(
    modality_channels: dict[str, str], channels: dict[str, Channel], *, where: str, notes: list[str] = ()
) -> None:
    """Raise when no channel maps to any model modality (naming the channels left out, and why)."""
    if not modality_channels:
        listed = ", ".join(f"{n} ({c.fs:g} Hz)" for n, c in channels.items()) or "(none)"
        why = f"; {'; '.join(notes)}" if notes else ""
        raise RecordError(
            f"{where}: no EEG, EOG, EMG or ECG channel usable by the model (calibrated, in volts, at >= "
            f"{MIN_INPUT_FS} Hz) among: {listed}{why}; name one with a channel map, e.g. --channel-map eeg=C4-A1"
        )


def regions_from_mask(mask: np.ndarray) -> np.ndarray:
    """[start, stop) index pairs of the True runs of a boolean array: [K, 2] int64."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))  # [n + 1]
    return np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)], axis=1).astype(np.int64)


def stages_from_intervals(
    intervals: list[tuple[float, float, int]], n_epochs: int, epoch_s: float, undefined: int
) -> np.ndarray:
    """Stage per epoch read at its midpoint from (start, stop, stage) intervals; later intervals win."""
    stages = np.full(n_epochs, undefined, np.int8)
    mids = (np.arange(n_epochs) + 0.5) * epoch_s  # [n_epochs] s
    for start, stop, stage in intervals:
        stages[(mids >= start) & (mids < stop)] = stage
    return stages
