"""The facts every part shares: modality order, channel-name patterns, class names, epoch length, rates.

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

# Input rates (Hz). >= TARGET_FS: resampled down exactly. MIN_INPUT_FS..TARGET_FS: upsampled exactly,
# the content above fs / 2 is absent (band-limited; older PSG systems record at 50 Hz). Below: unusable.
MIN_INPUT_FS = 50

# ---- channel names -> modality ------------------------------------------------------------------
# Names are matched after `normalise_channel_name` (case-folded; '_', brackets and repeated spaces
# become one space; no spaces around - : / +), e.g. 'EEG (C4-A1)' -> 'eeg c4-a1', 'EOG(L)' -> 'eog l'.
# Electrodes: the 10-20 / 10-10 system (old T3-T6 names included); references: mastoids / ear
# lobes (M1, M2, A1, A2, linked: A1A2, M1+M2, LM, LE, CLE, LER), another electrode (bipolar), or
# an average / common reference.
_EL = {
    "frontal": r"f(?:10|[1-9z])",
    "central": r"(?:c[1-6z]|fc[1-6z]|cp[1-6z])",
    "occipital": r"(?:o[12z]|po(?:10|[3-9z])|iz)",
    "frontopolar": r"(?:fp[12z]|af[3-8z])",
    "parietal": r"p(?:10|[1-9z])",
    "temporal": r"(?:t(?:10|[3-9])|ft(?:10|[7-9])|tp(?:10|[7-9]))",
}
_ELECTRODE = "(?:" + "|".join(_EL.values()) + ")"
_EAR = r"(?:[am][12]|[am]1\+?[am]2(?:/2)?|lm|le|cle|ler|linked ?(?:ears?|mastoids?))"
_OTHER_REF = rf"(?:{_ELECTRODE}|avg|ave|average|car|ref)"
_SEP = r"[-:/ ]"
_EEG = r"^(?:eeg ?)?"
_EOG = r"^(?:eog ?)?"
_EMG = r"^(?:emg ?)?"
_LEFT_EYE, _RIGHT_EYE = r"(?:e1|loc)", r"(?:e2|roc)"
_EYE_REF = rf"(?:{_EAR}|fpz|cz|nz|ref|avg)"
_EOG_LEFT_WORDS, _EOG_RIGHT_WORDS = r"(?:1|l|left|lt|sx|g)", r"(?:2|r|right|rt|dx|d)"
_HORIZ = r"(?: horiz\w*)?"
_ECG_LEAD = r"(?:i{1,3}|v[1-6]|a?v[rlf]|\d|l|r|la|ra|ll|lead ?i{1,3})"

# Names that are never a model channel, checked first: leg / arm / respiratory-muscle EMG.
NOT_A_MODALITY: tuple[str, ...] = (
    r"(?:^|[ -])(?:[lr]? ?legs?|[lr]leg|lat|rat|tib\w*|ant ?tib\w*|plm\w*|limbs?|arms?|intercostal|diaph\w*)"
    r"\d*(?:$|[ -/])",
)

# Patterns per modality, most preferred first: the first pattern a name matches is its rank, and
# among a recording's channels the best rank wins (file order breaks ties). EEG: the pretraining
# derivation F3-M2, then mastoid/ear-referenced derivations by region (frontal, central, occipital,
# frontopolar, parietal, temporal), then bipolar / cephalic-reference derivations in the same order,
# then single-electrode names, then generic names (EEG, EEG1, EEG2, EEG(sec)).
CHANNEL_ALIASES: dict[str, tuple[str, ...]] = {
    "eeg": (
        rf"{_EEG}f3{_SEP}?[am]2$",
        rf"{_EEG}f4{_SEP}?[am]1$",
        *(rf"{_EEG}{el}{_SEP}?{_EAR}$" for el in _EL.values()),
        *(rf"{_EEG}{el}{_SEP}{_OTHER_REF}$" for el in _EL.values()),
        *(rf"{_EEG}{el}$" for el in _EL.values()),
        r"^eeg ?(?:1|pri\w*)?$",
        r"^eeg ?(?:[2-9]|sec\w*)$",
    ),
    "eog": (
        rf"{_EOG}{_LEFT_EYE}{_SEP}?[am]2$",
        rf"{_EOG}(?:{_LEFT_EYE}{_SEP}?{_EYE_REF}|{_RIGHT_EYE}{_SEP}?{_EYE_REF})$",
        rf"{_EOG}{_LEFT_EYE}$|^eog ?-?{_EOG_LEFT_WORDS}{_HORIZ}(?:{_SEP}{_EYE_REF})?$|^(?:l|left)(?:{_HORIZ})? ?-?eog$",
        rf"{_EOG}{_RIGHT_EYE}$|^eog ?-?{_EOG_RIGHT_WORDS}{_HORIZ}(?:{_SEP}{_EYE_REF})?$|^(?:r|right)(?:{_HORIZ})? ?-?eog$",
        rf"{_EOG}(?:{_LEFT_EYE}{_SEP}{_RIGHT_EYE}|{_RIGHT_EYE}{_SEP}{_LEFT_EYE})$",
        r"^(?:eog|heog|eog ?h(?:oriz\w*)?|horizontal)$",
        r"^(?:veog|eog ?v(?:ert\w*)?)$",
    ),
    "emg": (
        rf"{_EMG}chin ?1{_SEP}?chin ?[23]$",
        rf"{_EMG}chin ?[1-3]?(?:{_SEP}?chin ?[1-3])?(?: ?emg)?$|{_EMG}(?:sub)?mental(?:is)?$",
        r"^emg ?[1-9]?(?:[-:/ ]emg ?[1-9])?$",
    ),
    "ecg": (
        r"^(?:ecg|ekg)$",
        rf"^(?:ecg|ekg) ?(?:ecg|ekg)? ?{_ECG_LEAD}$|^(?:ecg|ekg) ?(?:ii|2)$",
        rf"^(?:ecg|ekg) ?{_ECG_LEAD}?{_SEP}(?:ecg|ekg)? ?{_ECG_LEAD}$",
        r"^(?:ml)?(?:i{1,3}|v[1-6]|a?v[rlf])$",
    ),
}

_SPACES = re.compile(r"[\s_()\[\]]+")
_AROUND = re.compile(r" ?([-:/+=]) ?")


def normalise_channel_name(name: str) -> str:
    """Case-fold a channel name and tidy its separators ('EEG (C4-A1)' -> 'eeg c4-a1', 'C3_M2' -> 'c3 m2')."""
    name = name.replace("\u2013", "-").replace("\u2014", "-").casefold()
    name = _SPACES.sub(" ", name).strip()
    return _AROUND.sub(r"\1", name)


_EXCLUDED = [re.compile(p) for p in NOT_A_MODALITY]
_PATTERNS = {m: [re.compile(p) for p in patterns] for m, patterns in CHANNEL_ALIASES.items()}


def channel_rank(channel_name: str) -> tuple[str, int] | None:
    """(modality, rank) of a channel name (rank 0 = most preferred), or None when no pattern matches."""
    key = normalise_channel_name(channel_name)
    if any(p.search(key) for p in _EXCLUDED):
        return None
    for modality in MODALITIES:
        for rank, pattern in enumerate(_PATTERNS[modality]):
            if pattern.search(key):
                return modality, rank
    return None


def modality_of(channel_name: str) -> str | None:
    """The modality a channel name belongs to, or None when no pattern knows it."""
    hit = channel_rank(channel_name)
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

    `override` ({modality: channel name}) wins over the patterns; each of its channels must exist.
    Among pattern matches the best rank wins (F3-M2 before C4-M1 ...; see `CHANNEL_ALIASES`); a
    channel is used for one modality at most. Modalities with no
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
        hit = channel_rank(name)
        if hit is None or hit[0] in chosen or name in chosen.values():
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
