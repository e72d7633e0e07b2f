"""The facts every part shares: modality order, channel aliases, class names, epoch length.

One source of truth: readers, preprocessing, the cache, the model, the ONNX bundle and the service all
import these names instead of repeating them.
"""

from __future__ import annotations

import re

# Fixed order of the model's modality axis: signals [B, 4, 3000], modality_mask [B, 4].
MODALITIES: tuple[str, ...] = ("eeg", "eog", "emg", "ecg")
MODALITY_INDEX: dict[str, int] = {m: i for i, m in enumerate(MODALITIES)}

EPOCH_SECONDS = 30
TARGET_FS = 100
WINDOW_SAMPLES = EPOCH_SECONDS * TARGET_FS  # 3000 samples per modality per window

# Sleep stages (PhysioNet 2018 / AASM): integer codes used in labels, caches, ONNX outputs.
STAGE_NAMES: tuple[str, ...] = ("W", "N1", "N2", "N3", "REM")
STAGE_UNDEFINED = 5  # epochs without a stage (before scoring starts, '?' in EDF+): excluded from staging
AGE_CLASS_NAMES: tuple[str, ...] = ("<55", ">=55")
AGE_THRESHOLD_YEARS = 55.0
AROUSAL_CLASS_NAMES: tuple[str, ...] = ("no_arousal", "arousal")
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "sleep_stage": STAGE_NAMES,
    "age": AGE_CLASS_NAMES,
    "arousal": AROUSAL_CLASS_NAMES,
}

# PhysioNet 2018 channel used for each modality when a record has several candidates.
DEFAULT_CHANNELS: dict[str, str] = {"eeg": "F3-M2", "eog": "E1-M2", "emg": "Chin1-Chin2", "ecg": "ECG"}

# Channel-name aliases, most preferred first within each modality. Names are compared after
# `normalise_channel_name` (case-folded, 'EEG '/'EOG '/... prefixes and separators collapsed), so
# 'EEG Fpz-Cz', 'Fpz-Cz' and 'FPZ_CZ' are one alias.
CHANNEL_ALIASES: dict[str, tuple[str, ...]] = {
    "eeg": (
        # PhysioNet 2018 (AASM montage, M = mastoid)
        "F3-M2", "F4-M1", "C3-M2", "C4-M1", "O1-M2", "O2-M1",
        # older A (auricular) reference names
        "F3-A2", "F4-A1", "C3-A2", "C4-A1", "O1-A2", "O2-A1",
        # Sleep-EDF
        "Fpz-Cz", "Pz-Oz",
        # single-electrode names used by some systems
        "C3", "C4", "F3", "F4", "O1", "O2", "EEG",
    ),
    "eog": (
        "E1-M2", "E2-M1", "E1-M1", "E2-M2", "E1", "E2",
        "horizontal", "LOC-A2", "ROC-A1", "LOC", "ROC",
        "EOG(L)", "EOG(R)", "Left EOG", "Right EOG", "EOG",
    ),
    "emg": (
        "Chin1-Chin2", "Chin1-Chin3", "Chin2-Chin3", "Chin", "submental", "chin EMG", "EMG chin",
        "Chin EMG", "EMG",
    ),
    "ecg": ("ECG", "EKG", "ECG II", "ECG I", "ECG1", "ECG2", "ECG1-ECG2", "EKG1-EKG2"),
}

_PREFIX = re.compile(r"^(eeg|eog|emg|ecg|ekg)[\s_:]+", re.IGNORECASE)
_SEPARATORS = re.compile(r"[\s_]+")


def normalise_channel_name(name: str) -> str:
    """Case-fold a channel name and drop a leading modality word ('EEG Fpz-Cz' -> 'fpz-cz')."""
    name = name.strip()
    stripped = _PREFIX.sub("", name)
    name = stripped if stripped else name
    return _SEPARATORS.sub(" ", name).replace("–", "-").casefold().strip()


def _alias_lookup() -> dict[str, tuple[str, int]]:
    table: dict[str, tuple[str, int]] = {}
    for modality, aliases in CHANNEL_ALIASES.items():
        for rank, alias in enumerate(aliases):
            key = normalise_channel_name(alias)
            if key in table and table[key][0] != modality:
                raise AssertionError(f"alias {alias!r} is listed under {table[key][0]} and {modality}")
            table.setdefault(key, (modality, rank))
    return table


_ALIASES = _alias_lookup()


def modality_of(channel_name: str) -> str | None:
    """The modality a channel name belongs to, or None when the alias table does not know it."""
    hit = _ALIASES.get(normalise_channel_name(channel_name))
    return hit[0] if hit else None


def check_modality(modality: str) -> str:
    """Return `modality` if known, else raise naming the accepted values."""
    if modality not in MODALITY_INDEX:
        raise ValueError(f"unknown modality {modality!r}; accepted: {', '.join(MODALITIES)}")
    return modality


def map_channels(
    channel_names: list[str] | tuple[str, ...], override: dict[str, str] | None = None
) -> dict[str, str]:
    """Choose one channel per modality: {modality: channel name}.

    `override` ({modality: channel name}) wins over the alias table; each of its channels must exist.
    Among alias matches the most preferred alias wins (F3-M2 before C4-M1 ...). Modalities with no
    matching channel are left out: a recording may lack modalities.
    """
    override = dict(override or {})
    chosen: dict[str, str] = {}
    for modality, channel in override.items():
        check_modality(modality)
        if channel not in channel_names:
            raise ValueError(
                f"channel map: {modality}={channel!r} is not a channel of this recording; "
                f"channels: {', '.join(channel_names)}"
            )
        chosen[modality] = channel
    best: dict[str, tuple[int, str]] = {}
    for name in channel_names:
        hit = _ALIASES.get(normalise_channel_name(name))
        if hit is None or hit[0] in chosen:
            continue
        modality, rank = hit
        if modality not in best or rank < best[modality][0]:
            best[modality] = (rank, name)
    chosen.update({m: name for m, (_, name) in best.items()})
    return {m: chosen[m] for m in MODALITIES if m in chosen}


def parse_channel_map(text: str | None) -> dict[str, str]:
    """Parse a user override 'eeg=C4-A1,eog=EOG(L)' into {modality: channel}."""
    if not text:
        return {}
    out: dict[str, str] = {}
    for item in text.split(","):
        if "=" not in item:
            raise ValueError(f"channel map item {item!r} must look like MODALITY=CHANNEL, e.g. eeg=C4-A1")
        modality, channel = (part.strip() for part in item.split("=", 1))
        out[check_modality(modality)] = channel
    return out
