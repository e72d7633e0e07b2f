"""What the endpoints do with a request once it is parsed: validation into 4xx answers, and the calls
into the package that turn windows and uploads into model input.

Every refusal is a `BadInput`: HTTP status, the offending field, the problem and a fix the caller
can apply over HTTP; `BadInput.response()` is the JSON body every 4xx of the service has
(`{"error", "field", "fix"}`; the request guard gives malformed requests the same body).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from starlette.responses import JSONResponse

from .api_models import AgePrediction, ArousalPrediction, StagePrediction, Window, WindowPrediction
from .cache import recording_to_windows
from .epoch_features import epoch_features
from .modalities import AGE_CLASS_NAMES, AROUSAL_CLASS_NAMES, MODALITIES, STAGE_NAMES, WINDOW_SAMPLES, parse_channel_map
from .preprocessing import band_limit_hz, missing_windows, preprocess_modalities, window_length
from .recording import Recording
from .runtime import softmax
from .scoring import UploadError, read_upload
from .windows_npz import FIELD, NpzError, read_windows_npz

MAX_ABS_UV = 1e7  # 10 V: no electrode signal in µV comes near it; larger values are not in µV


class BadInput(Exception):
    """A request the service refuses: HTTP `status`, the offending `field`, what is wrong and the fix."""

    def __init__(self, field: str, problem: str, fix: str, status: int = 400):
        super().__init__(f"{field}: {problem}; {fix}")
        self.field, self.problem, self.fix, self.status = field, problem, fix, status

    def body(self) -> dict:
        return {"error": str(self), "field": self.field, "fix": self.fix}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


# ---- /predict ------------------------------------------------------------------------------------


def _window_arrays(i: int, window: Window) -> dict[str, np.ndarray]:
    """The modalities of one JSON window as float64 arrays, checked (`check_window`)."""
    unknown = sorted(window.model_extra or {})
    if unknown:
        raise BadInput(f"windows[{i}].{unknown[0]}", f"unknown modality {unknown[0]!r}",
                       f"use only fs and the modalities {', '.join(MODALITIES)}")
    arrays = {m: getattr(window, m) for m in MODALITIES if getattr(window, m) is not None}
    return check_window(i, window.fs, {m: np.asarray(values, np.float64) for m, values in arrays.items()})


def check_window(i: int, fs: float, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Window i's {modality: [30 * fs] float64} checked: rate, length, finite µV values; BadInput else."""
    try:
        expected = window_length(fs)
    except ValueError as error:
        raise BadInput(f"windows[{i}].fs", str(error), "resample to 50 Hz or more before sending") from None
    if not arrays:
        raise BadInput(f"windows[{i}]", "no modality present", f"give at least one of {', '.join(MODALITIES)}")
    for m, values in arrays.items():
        if len(values) != expected:
            raise BadInput(f"windows[{i}].{m}", f"{len(values)} samples, but a 30 s window at {fs:g} Hz has "
                           f"{expected}", "send exactly 30 s per window (30 x fs samples)")
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise BadInput(f"windows[{i}].{m}", f"sample {int(bad[0])} is {values[bad[0]]} (NaN/Inf)",
                           "send finite values in µV; drop or repair the window")
        big = np.flatnonzero(np.abs(values) > MAX_ABS_UV)
        if len(big):
            raise BadInput(f"windows[{i}].{m}", f"sample {int(big[0])} is {values[big[0]]:g}, beyond +-{MAX_ABS_UV:g}",
                           "send the signal in µV (ECG in mV x 1000)")
    return arrays


def check_windows(fs: float, arrays: dict[str, np.ndarray]) -> None:
    """`check_window` for windows of one rate and modality set, {modality: [n, L] float64}, in one pass per
    array; the first window with a problem is refused with check_window's answer (BadInput)."""
    try:
        expected = window_length(fs)
    except ValueError:
        expected = None  # check_window says why
    if expected is None or any(x.shape[-1] != expected for x in arrays.values()):
        first = 0  # every window has the problem
    else:  # |x| <= limit is False for NaN and Inf too
        ok = np.logical_and.reduce([(np.abs(x) <= MAX_ABS_UV).all(axis=-1) for x in arrays.values()])  # [n]
        if ok.all():
            return
        first = int(np.argmin(ok))
    check_window(first, fs, {m: x[first] for m, x in arrays.items()})
    raise AssertionError(f"window {first} passed check_window but not check_windows")


def _check_count(n: int, max_windows: int) -> None:
    if not n:
        raise BadInput("windows", "empty list", f"send 1 to {max_windows} windows")
    if n > max_windows:
        raise BadInput("windows", f"{n} windows, over the limit of {max_windows} per request",
                       f"split them into requests of at most {max_windows} windows")


def windows_to_arrays(windows: list[Window], max_windows: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate JSON windows and preprocess them (THE preprocessing) -> (signals [n, 4, 3000], mask [n, 4]).

    A flat modality of a window (`preprocessing.missing_windows`) is missing data: masked there. A
    window left with no usable modality is refused.
    """
    _check_count(len(windows), max_windows)
    raw = [_window_arrays(i, window) for i, window in enumerate(windows)]
    return _model_input([window.fs for window in windows], raw)


def npz_to_arrays(file, max_windows: int, max_bytes: int) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """The binary body (windows_npz.py) validated like JSON windows and preprocessed -> (signals, mask, rates)."""
    try:
        fs, arrays = read_windows_npz(file, max_bytes)
    except NpzError as error:
        raise BadInput(error.field, error.problem, error.fix) from None
    if not arrays:
        raise BadInput("windows[0]", "no modality present", f"give at least one of {', '.join(MODALITIES)} as an array")
    n = len(next(iter(arrays.values())))
    _check_count(n, max_windows)
    check_windows(fs, arrays)
    signals, mask = _preprocessed(fs, arrays)
    _refuse_empty(mask, lambda i: list(arrays))
    return signals, mask, [fs] * n


def window_input(windows: list[Window], windows_npz: list[Path], max_windows: int, max_bytes: int
                 ) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """/predict's input, JSON `windows` or the binary `windows_npz` (exactly one) -> (signals, mask, rates)."""
    if windows and windows_npz:
        raise BadInput(FIELD, "both windows and windows_npz given", "send the windows one way: JSON or the npz file")
    if windows_npz:
        return npz_to_arrays(windows_npz[0], max_windows, max_bytes)
    signals, mask = windows_to_arrays(windows, max_windows)
    return signals, mask, [window.fs for window in windows]


def _model_input(rates: list[float], raw: list[dict[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Checked raw windows -> preprocessed (signals [n, 4, 3000], mask [n, 4]), one call per (rate, modality set)."""
    groups: dict[tuple, list[int]] = {}
    for i, (fs, arrays) in enumerate(zip(rates, raw)):
        groups.setdefault((fs, tuple(arrays)), []).append(i)
    signals = np.zeros((len(raw), len(MODALITIES), WINDOW_SAMPLES), np.float32)  # [n, 4, 3000]
    mask = np.zeros((len(raw), len(MODALITIES)), bool)  # [n, 4]
    for (fs, modalities), rows in groups.items():  # one vectorised call per (rate, modality set)
        stacked = {m: np.stack([raw[r][m] for r in rows]) for m in modalities}  # [k, 30 * fs] each
        signals[rows], mask[rows] = _preprocessed(fs, stacked)
    _refuse_empty(mask, lambda i: list(raw[i]))
    return signals, mask


def _preprocessed(fs: float, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Checked windows of one rate, {modality: [k, 30 * fs] µV} -> (signals [k, 4, 3000], mask [k, 4]):
    THE preprocessing, with flat or non-finite leads (`missing_windows`) masked and zeroed."""
    signals, mask = preprocess_modalities({m: (x, fs) for m, x in arrays.items()})
    for m, x in arrays.items():
        missing = missing_windows(x, fs)  # [k]
        j = MODALITIES.index(m)
        mask[missing, j] = False
        signals[missing, j] = 0.0
    return signals, mask


def _refuse_empty(mask: np.ndarray, sent: Callable[[int], list[str]]) -> None:
    """BadInput for the first window (mask [n, 4]) left with no usable modality; sent(i): its modalities."""
    empty = np.flatnonzero(~mask.any(axis=1))
    if len(empty):
        i = int(empty[0])
        raise BadInput(f"windows[{i}]", f"every modality of this window is flat (a lead off?): "
                       f"{', '.join(sent(i))} missing data", "drop the window or send a recorded signal")


def _stage(probs: np.ndarray) -> StagePrediction:
    return StagePrediction(label=STAGE_NAMES[int(probs.argmax())], probabilities={n: float(p) for n, p in zip(STAGE_NAMES, probs)})


def require_context(session) -> None:
    """/predict consecutive=true needs a bundle with a night-context graph; BadInput else."""
    if not session.has_context:
        raise BadInput("consecutive", "this model has no night-context graph",
                       "send consecutive=false, or serve a bundle exported with `physioserve export --context`")


def in_context(session, out: dict[str, np.ndarray], signals: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Night-context stage probabilities [n, 5] of a run of consecutive windows (/predict consecutive=true):
    out's embeddings [n, D] with the epoch features of the preprocessed `signals` [n, 4, 3000]."""
    require_context(session)
    return softmax(session.night_stage_logits(out["embedding"], mask, epoch_features(signals, mask)))


def predictions(out: dict[str, np.ndarray], mask: np.ndarray, fs: list[float], embedding: bool,
                context: np.ndarray | None = None) -> list[WindowPrediction]:
    """Per window: stage (and, given `context` [n, 5], the stage in context), age and arousal, the modalities used."""
    result = []
    for i in range(len(mask)):
        stage, age, arousal = out["sleep_stage_probs"][i], out["age_probs"][i], out["arousal_probs"][i]
        used = [m for j, m in enumerate(MODALITIES) if mask[i, j]]
        result.append(WindowPrediction(
            sleep_stage=_stage(stage),
            sleep_stage_in_context=None if context is None else _stage(context[i]),
            age=AgePrediction(label=AGE_CLASS_NAMES[int(age.argmax())], probability_ge_55=float(age[1])),
            arousal=ArousalPrediction(label=AROUSAL_CLASS_NAMES[int(arousal.argmax())], probability=float(arousal[1])),
            modalities=used,
            band_limited_hz={m: edge for m in used if (edge := band_limit_hz(fs[i], m)) is not None},
            embedding=[float(v) for v in out["embedding"][i]] if embedding else None,
        ))
    return result


# ---- /score ---------------------------------------------------------------------------------------


def upload_name(file: Path, name: str | None) -> str:
    """The record name of an upload: `name`, else the uploaded file's name (BentoML stores tmpXXXXXXXX<name>)."""
    if name:
        return name
    original = file.name[11:] if file.name.startswith("tmp") and len(file.name) > 11 else file.name
    return Path(original).stem


def read_scored_upload(
    file: Path, workdir: str, *, name: str | None, channel_map: str | None, fill_gaps: bool, max_unpacked_bytes: int
) -> tuple[Recording, np.ndarray, np.ndarray]:
    """An uploaded recording -> (Recording, signals [n, 4, 3000], mask [n, 4]) by the shared path; BadInput else."""
    try:
        overrides = parse_channel_map(channel_map)
    except ValueError as error:
        raise BadInput("channel_map", str(error), "write it as eeg=NAME,eog=NAME,...") from None
    try:
        recording = read_upload(file, workdir, max_unpacked_bytes=max_unpacked_bytes, name=upload_name(file, name),
                                channel_map=overrides, fill_gaps=fill_gaps)
    except UploadError as error:
        raise BadInput("file", error.problem, error.fix) from None
    if not recording.present_modalities:
        channels = ", ".join(recording.channels) or "(none)"
        raise BadInput("file", f"no channel maps to {', '.join(MODALITIES)} (channels: {channels})",
                       "pass channel_map=eeg=NAME,... to name them")
    try:
        signals, mask = recording_to_windows(recording)
    except ValueError as error:
        raise BadInput("file", str(error), "upload at least 30 s of signal at 50 Hz or more") from None
    return recording, signals, mask


def hypnogram_agreement(night, hypnogram: Path, fmt: str | None, epoch_s: float | None) -> dict:
    """/score with an expert hypnogram: physioserve.agreement's report of the night's stages vs the file."""
    from .agreement import agreement_with_hypnogram, stage_codes

    try:
        report, _ = agreement_with_hypnogram(stage_codes(night.column("stage")), hypnogram, epoch_s=epoch_s, fmt=fmt)
    except ValueError as error:
        message = str(error).replace(str(hypnogram), "hypnogram")  # no server paths in answers
        raise BadInput("hypnogram", message, "upload the expert hypnogram file as it is (EDF+, .st, .hyp, .arousal, "
                       "CSV/TXT, DREAMS); set hypnogram_format / hypnogram_epoch_s when it cannot be told") from None
    return report
