"""Helpers shared by the readers: header-only channels, unit conversion, modality mapping, regions."""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np

from ..modalities import TARGET_FS, map_channels, modality_of
from ..recording import Channel, microvolt_factor
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


def to_microvolts(data: np.ndarray, unit: str, *, where: str, required: bool) -> tuple[np.ndarray, str]:
    """Scale `data` to µV when `unit` is a voltage. Non-voltage units stay as they are unless `required`."""
    try:
        factor = microvolt_factor(unit, where=where)
    except ValueError:
        if required:
            raise
        return data, unit
    return (data * factor if factor != 1.0 else data), MICROVOLT


def choose_modalities(
    channels: dict[str, Channel], override: dict[str, str] | None, *, where: str
) -> dict[str, str]:
    """{modality: channel name}: the alias table picks among channels sampled at >= 100 Hz; `override` wins.

    A channel below 100 Hz (Sleep-EDF's 1 Hz 'EMG submental' envelope) cannot feed the model, so the alias
    table skips it and the modality is left absent; naming it in `override` is an error.
    """
    override = dict(override or {})
    names = list(channels)
    for modality, name in override.items():
        if name not in channels:
            raise RecordError(
                f"{where}: channel map {modality}={name!r} names no channel of this recording; "
                f"channels: {', '.join(names) or '(none)'}"
            )
        if channels[name].fs < TARGET_FS:
            raise RecordError(
                f"{where}: channel map {modality}={name!r} is sampled at {channels[name].fs:g} Hz; "
                f"the model needs >= {TARGET_FS} Hz, map another channel"
            )
    usable = [n for n in names if channels[n].fs >= TARGET_FS or n in override.values()]
    try:
        return map_channels(usable, override)
    except ValueError as error:
        raise RecordError(f"{where}: {error}") from None


def skipped_candidates(channels: dict[str, Channel], modality_channels: dict[str, str]) -> dict[str, list[str]]:
    """Channels the alias table knows but that were not chosen, per modality (for `inspect`)."""
    out: dict[str, list[str]] = {}
    chosen = set(modality_channels.values())
    for name in channels:
        modality = modality_of(name)
        if modality is not None and name not in chosen:
            out.setdefault(modality, []).append(name)
    return out


def require_modality(modality_channels: dict[str, str], channels: dict[str, Channel], *, where: str) -> None:
    """Raise when no channel maps to any model modality."""
    if not modality_channels:
        listed = ", ".join(f"{n} ({c.fs:g} Hz)" for n, c in channels.items()) or "(none)"
        raise RecordError(
            f"{where}: no EEG, EOG, EMG or ECG channel at >= {TARGET_FS} Hz found among: {listed}; "
            "name one with a channel map, e.g. --channel-map eeg=C4-A1"
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
