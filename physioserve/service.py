"""The BentoML service: `bentoml serve` from the repository root (bentofile.yaml names this class).

Endpoints (POST, JSON unless noted):
- `/predict`: 30 s windows, each with its rate and any subset of eeg/eog/emg/ecg in µV -> per window
  the sleep stage (label + 5 probabilities), age (label + P(>= 55)), arousal (label + P), the
  modalities used, and the embedding when asked.
- `/score` (multipart): an EDF/BDF file, or a WFDB record (.hea + signal files) as a flat zip -> the
  per-epoch table and night summary that `physioserve score` writes.
- `/metadata`: model name, version, card summary, preprocessing config, class names, limits, runtime.
- BentoML's own: `/livez`, `/readyz` (ready once the model is loaded and warmed up), `/metrics`.

Thin by design: request models, validation into 4xx answers that name the field and the fix, and
calls into the package. `/predict` windows go through adaptive batching (`infer`, batchable) in
front of the ONNX session (the windows stay in this process; their keys go through BentoML's
in-process client); a request that would queue longer than PHYSIOSERVE_BATCH_LATENCY_MS (default
30 s) gets 503. `/score` runs its night in fixed chunks like the CLI, so both give identical
numbers. Limits (environment variables, read at start):
PHYSIOSERVE_MAX_WINDOWS (windows per /predict request, default 128), PHYSIOSERVE_MAX_BODY_MB
(JSON body, default 64), PHYSIOSERVE_MAX_UPLOAD_MB (/score upload, default 512; a zip may unpack
to 4x that). The model: PHYSIOSERVE_BUNDLE (folder or store tag), else `physioserve:latest` in the
BentoML model store, else the default bundle shipped in the package.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from http import HTTPStatus
from pathlib import Path
from typing import Annotated, Any

import anyio
import bentoml
import numpy as np
from bentoml.exceptions import BentoMLException
from bentoml.validators import ContentType
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse

from .bundle import ENV_BUNDLE, STORE_NAME, read_bundle, resolve_bundle
from .cache import recording_to_windows
from .modalities import AGE_CLASS_NAMES, AROUSAL_CLASS_NAMES, CLASS_NAMES, MODALITIES, STAGE_NAMES, parse_channel_map
from .preprocessing import DEFAULT_CONFIG, SUPPORTED_RATES_NOTE, preprocess_modalities, window_length
from .runtime import (
    DEFAULT_BATCH,
    InferenceSession,
    add_probabilities,
    pack_outputs,
    pack_windows,
    unpack_outputs,
    unpack_window,
)
from .scoring import UploadError, predict_night, read_upload, score_windows_outputs

MB = 1 << 20
MAX_WINDOWS = int(os.environ.get("PHYSIOSERVE_MAX_WINDOWS", 128))
MAX_BODY = int(float(os.environ.get("PHYSIOSERVE_MAX_BODY_MB", 64)) * MB)
MAX_UPLOAD = int(float(os.environ.get("PHYSIOSERVE_MAX_UPLOAD_MB", 512)) * MB)
MAX_UNPACKED = 4 * MAX_UPLOAD
BATCH_LATENCY_MS = int(os.environ.get("PHYSIOSERVE_BATCH_LATENCY_MS", 30_000))  # queueing bound, not a wait
GPU = os.environ.get("PHYSIOSERVE_GPU", "") not in ("", "0")
REF = "ref:"  # prefix of a parked window's key (see PhysioServe.infer)
INFER_ATTEMPTS = 3


class BadInput(Exception):
    """A request the service refuses: HTTP `status`, the offending `field`, what is wrong and the fix."""

    def __init__(self, field: str, problem: str, fix: str, status: int = 400):
        super().__init__(f"{field}: {problem}; {fix}")
        self.field, self.fix, self.status = field, fix, status

    def response(self) -> JSONResponse:
        return JSONResponse({"error": str(self), "field": self.field, "fix": self.fix}, status_code=self.status)


# ---- request and response models -----------------------------------------------------------------

_EXAMPLE_WINDOW = {"fs": 100, "eeg": [0.0] * 3000, "ecg": [0.0] * 3000}


class Window(BaseModel):
    """One 30 s window: its sampling rate and any subset of the four modalities, in µV."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"example": _EXAMPLE_WINDOW})
    fs: float = Field(description=f"sampling rate in Hz of every signal of this window; {SUPPORTED_RATES_NOTE}")
    eeg: list[float] | None = Field(default=None, description="EEG, 30 x fs samples in µV")
    eog: list[float] | None = Field(default=None, description="EOG, 30 x fs samples in µV")
    emg: list[float] | None = Field(default=None, description="chin EMG, 30 x fs samples in µV")
    ecg: list[float] | None = Field(default=None, description="ECG, 30 x fs samples in µV (mV x 1000)")


class StagePrediction(BaseModel):
    label: str = Field(description=f"most probable stage, one of {', '.join(STAGE_NAMES)}")
    probabilities: dict[str, float]


class AgePrediction(BaseModel):
    label: str = Field(description=f"one of {', '.join(AGE_CLASS_NAMES)}")
    probability_ge_55: float


class ArousalPrediction(BaseModel):
    label: str = Field(description=f"one of {', '.join(AROUSAL_CLASS_NAMES)}")
    probability: float


class WindowPrediction(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {
        "sleep_stage": {"label": "N2", "probabilities": {"W": 0.02, "N1": 0.08, "N2": 0.81, "N3": 0.06, "REM": 0.03}},
        "age": {"label": ">=55", "probability_ge_55": 0.64},
        "arousal": {"label": "no_arousal", "probability": 0.03},
        "modalities": ["eeg", "ecg"],
        "embedding": None,
    }})
    sleep_stage: StagePrediction
    age: AgePrediction
    arousal: ArousalPrediction
    modalities: list[str]
    embedding: list[float] | None = None


class ModelInfo(BaseModel):
    name: str
    version: str


class PredictResponse(BaseModel):
    model: ModelInfo
    predictions: list[WindowPrediction]


class ScoreResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {
        "record": "night1",
        "columns": ["epoch", "start_s", "stage", "p_W", "p_N1", "p_N2", "p_N3", "p_REM", "arousal", "p_arousal", "p_age_ge_55"],
        "summary": {"total_sleep_time_min": 402.5, "sleep_efficiency_pct": 87.5, "arousal_index_per_h": 9.1},
        "epochs": [{"epoch": 0, "start_s": 0, "stage": "W", "p_W": 0.91, "p_N1": 0.05, "p_N2": 0.02, "p_N3": 0.01,
                    "p_REM": 0.01, "arousal": 0, "p_arousal": 0.04, "p_age_ge_55": 0.61}],
    }})
    record: str
    columns: list[str]
    summary: dict[str, Any]
    epochs: list[dict[str, Any]]


class MetadataResponse(BaseModel):
    name: str
    version: str
    created: str | None
    card_summary: str
    d_model: int
    modalities: list[str]
    class_names: dict[str, list[str]]
    preprocessing: dict[str, Any]
    channel_aliases: dict[str, list[str]]
    limits: dict[str, int]
    runtime: dict[str, Any]
    export: dict[str, Any]


# ---- validation -----------------------------------------------------------------------------------


def windows_to_arrays(windows: list[Window]) -> tuple[np.ndarray, np.ndarray]:
    """Validate windows and preprocess them (THE preprocessing) -> (signals [n, 4, 3000], mask [n, 4])."""
    if not windows:
        raise BadInput("windows", "empty list", "send 1 to %d windows" % MAX_WINDOWS)
    if len(windows) > MAX_WINDOWS:
        raise BadInput("windows", f"{len(windows)} windows, over the limit of {MAX_WINDOWS} per request",
                       f"split them into requests of at most {MAX_WINDOWS} windows")
    groups: dict[tuple, list[int]] = {}
    raw: list[dict[str, np.ndarray]] = []
    for i, window in enumerate(windows):
        unknown = sorted(window.model_extra or {})
        if unknown:
            raise BadInput(f"windows[{i}].{unknown[0]}", f"unknown modality {unknown[0]!r}",
                           f"use only fs and the modalities {', '.join(MODALITIES)}")
        try:
            expected = window_length(window.fs)
        except ValueError as error:
            raise BadInput(f"windows[{i}].fs", str(error), "resample to 100 Hz or more before sending") from None
        arrays = {m: getattr(window, m) for m in MODALITIES if getattr(window, m) is not None}
        if not arrays:
            raise BadInput(f"windows[{i}]", "no modality present", f"give at least one of {', '.join(MODALITIES)}")
        for m, values in arrays.items():
            if len(values) != expected:
                raise BadInput(f"windows[{i}].{m}", f"{len(values)} samples, but a 30 s window at {window.fs:g} Hz has "
                               f"{expected}", "send exactly 30 s per window (30 x fs samples)")
            arrays[m] = np.asarray(values, np.float64)
            bad = np.flatnonzero(~np.isfinite(arrays[m]))
            if len(bad):
                raise BadInput(f"windows[{i}].{m}", f"sample {int(bad[0])} is {arrays[m][bad[0]]} (NaN/Inf)",
                               "send finite values in µV; drop or repair the window")
        raw.append(arrays)
        groups.setdefault((window.fs, tuple(arrays)), []).append(i)
    signals = np.zeros((len(windows), len(MODALITIES), 3000), np.float32)  # [n, 4, 3000]
    mask = np.zeros((len(windows), len(MODALITIES)), bool)  # [n, 4]
    for (fs, modalities), rows in groups.items():  # one vectorised call per (rate, modality set)
        stacked = {m: (np.stack([raw[r][m] for r in rows]), fs) for m in modalities}
        signals[rows], mask[rows] = preprocess_modalities(stacked)
    return signals, mask


def _prediction(out: dict[str, np.ndarray], i: int, mask: np.ndarray, embedding: bool) -> WindowPrediction:
    stage, age, arousal = out["sleep_stage_probs"][i], out["age_probs"][i], out["arousal_probs"][i]
    return WindowPrediction(
        sleep_stage=StagePrediction(label=STAGE_NAMES[int(stage.argmax())],
                                    probabilities={n: float(p) for n, p in zip(STAGE_NAMES, stage)}),
        age=AgePrediction(label=AGE_CLASS_NAMES[int(age.argmax())], probability_ge_55=float(age[1])),
        arousal=ArousalPrediction(label=AROUSAL_CLASS_NAMES[int(arousal.argmax())], probability=float(arousal[1])),
        modalities=[m for j, m in enumerate(MODALITIES) if mask[i, j]],
        embedding=[float(v) for v in out["embedding"][i]] if embedding else None,
    )


def _store_model():
    """The bundle registered in the BentoML model store, pinned to its version (packed by `bentoml build`)."""
    if os.environ.get(ENV_BUNDLE):
        return None
    try:
        return bentoml.models.BentoModel(str(bentoml.models.get(f"{STORE_NAME}:latest").tag))
    except BentoMLException:
        return None


# ---- the service ----------------------------------------------------------------------------------


@bentoml.service(
    name="physioserve",
    workers=1,
    traffic={"timeout": 600, "max_concurrency": 256},
    **({"resources": {"gpu": 1}} if GPU else {}),
)
class PhysioServe:
    """Sleep staging, age and arousal from 30 s windows or whole recordings (ONNX Runtime)."""

    store_model = _store_model()

    def __init__(self) -> None:
        model = None if os.environ.get(ENV_BUNDLE) else self.store_model
        if model is not None:
            self.bundle = read_bundle(model.path, source=f"store:{model.tag}")
        else:  # PHYSIOSERVE_BUNDLE, else the bundle shipped in the package
            self.bundle = resolve_bundle(use_store=False)
        self.session = InferenceSession(self.bundle, batch_size=DEFAULT_BATCH)
        self.model_info = ModelInfo(name=self.bundle.name, version=self.bundle.version)
        self._score_limiter = anyio.CapacityLimiter(1)
        self._parked: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # window key -> (signals, mask), see infer
        self._warm = False

    @bentoml.on_startup
    def warm_up(self) -> None:
        """Run the graph at batch 1 and at the batch size before reporting ready."""
        self.session.warmup((1, DEFAULT_BATCH))
        self._warm = True

    def __is_ready__(self) -> bool:
        return self._warm

    @bentoml.api(batchable=True, max_batch_size=DEFAULT_BATCH, max_latency_ms=BATCH_LATENCY_MS, route="/infer")
    def infer(self, windows: list[str]) -> list[str]:
        """Internal: preprocessed windows -> packed outputs (runtime.unpack_outputs), adaptively batched.

        An item is the key of a window that /predict parked in this process (`ref:<uuid4>`), or a
        packed window (runtime.pack_windows). /predict reaches this API through BentoML's in-process
        client, so only keys travel: the arrays never go through JSON, and bodies stay small.
        """
        unpacked = [self._parked.get(w) if w.startswith(REF) else unpack_window(w) for w in windows]
        valid = [i for i, u in enumerate(unpacked) if u is not None]
        results = [""] * len(windows)  # "" marks an item that was not a valid packed window
        if valid:
            signals = np.stack([unpacked[i][0] for i in valid])
            mask = np.stack([unpacked[i][1] for i in valid])
            for i, packed in zip(valid, pack_outputs(self.session.run(signals, mask))):
                results[i] = packed
        return results

    @bentoml.api
    async def predict(
        self,
        windows: list[Window] = Field(description=f"30 s windows, at most {MAX_WINDOWS} per request"),
        return_embedding: bool = Field(default=False, description="also return each window's embedding"),
    ) -> PredictResponse:
        """Sleep stage, age and arousal for each 30 s window (any subset of eeg/eog/emg/ecg, any rate >= 100 Hz)."""
        try:
            signals, mask = await anyio.to_thread.run_sync(windows_to_arrays, windows)
        except BadInput as error:
            return error.response()
        try:
            packed = await self._infer(signals, mask)
        except BentoMLException as error:  # the batching queue is full: BentoML answers 503
            if error.error_code != HTTPStatus.SERVICE_UNAVAILABLE:
                raise
            return BadInput("windows", "the service is overloaded", "retry later, or send fewer windows at once",
                            status=503).response()
        if any(not item for item in packed):
            raise RuntimeError("inference returned no result for some windows")
        out = add_probabilities(unpack_outputs(packed, self.bundle.d_model))
        predictions = [_prediction(out, i, mask, return_embedding) for i in range(len(signals))]
        return PredictResponse(model=self.model_info, predictions=predictions)

    async def _infer(self, signals: np.ndarray, mask: np.ndarray) -> list[str]:
        """Through the batching API: park the windows here and send their keys (remote deployments: the windows)."""
        if os.environ.get("BENTOCLOUD_DEPLOYMENT_URL"):  # the self-client may reach another replica
            return await self.to_async.infer(windows=pack_windows(signals, mask))
        import aiohttp

        keys = [f"{REF}{uuid.uuid4().hex}" for _ in range(len(signals))]
        self._parked.update(zip(keys, zip(signals, mask)))
        try:
            for attempt in range(INFER_ATTEMPTS):
                try:
                    return await self.to_async.infer(windows=keys)
                except aiohttp.ClientError:
                    # BentoML's in-process client recycles its HTTP session every 100 calls (bentoml
                    # 1.4), dropping the calls in flight; the windows are still parked: send again
                    if attempt == INFER_ATTEMPTS - 1:
                        raise
        finally:
            for key in keys:  # on success, failure or cancellation nothing stays parked
                self._parked.pop(key, None)

    @bentoml.api
    async def score(
        self,
        file: Annotated[Path, ContentType("*")] = Field(description="EDF/BDF file, or a WFDB record zipped flat (.hea + signal files)"),
        name: str | None = Field(default=None, description="record name for an EDF/BDF (default: from the file name)"),
        channel_map: str | None = Field(default=None, description="override, e.g. eeg=C4-A1,eog=EOG(L)"),
    ) -> ScoreResponse:
        """Score a whole recording: per-epoch probabilities and labels, and the night summary."""
        try:
            return await self._score(Path(file), name, channel_map)
        except BadInput as error:
            return error.response()

    async def _score(self, file: Path, name: str | None, channel_map: str | None) -> ScoreResponse:
        try:
            overrides = parse_channel_map(channel_map)
        except ValueError as error:
            raise BadInput("channel_map", str(error), "write it as eeg=NAME,eog=NAME,...") from None
        if name is None:  # BentoML names the upload tmpXXXXXXXX<original name>
            original = file.name[11:] if file.name.startswith("tmp") and len(file.name) > 11 else file.name
            name = Path(original).stem
        with tempfile.TemporaryDirectory(prefix="physioserve-") as work:
            try:
                recording = await anyio.to_thread.run_sync(
                    lambda: read_upload(file, work, max_unpacked_bytes=MAX_UNPACKED, name=name, channel_map=overrides))
            except UploadError as error:
                raise BadInput("file", error.problem, error.fix) from None
            if not recording.present_modalities:
                channels = ", ".join(recording.channels) or "(none)"
                raise BadInput("file", f"no channel maps to {', '.join(MODALITIES)} (channels: {channels})",
                               "pass channel_map=eeg=NAME,... to name them")
            try:
                signals, mask = await anyio.to_thread.run_sync(recording_to_windows, recording)
            except ValueError as error:
                raise BadInput("file", str(error), "upload at least 30 s of signal at 100 Hz or more") from None
        probs = await anyio.to_thread.run_sync(predict_night, self.session, signals, mask, limiter=self._score_limiter)
        night = score_windows_outputs(recording, probs, mask, model=self.model_info.model_dump())
        return ScoreResponse(**night.to_json())

    @bentoml.api
    def metadata(self) -> MetadataResponse:
        """Model name, version, card summary, preprocessing config, class names, limits and runtime."""
        meta = self.bundle.meta
        export = meta.get("export", {})
        return MetadataResponse(
            name=self.bundle.name, version=self.bundle.version, created=meta.get("created"),
            card_summary=self.bundle.card_summary(), d_model=self.bundle.d_model, modalities=list(MODALITIES),
            class_names={k: list(v) for k, v in CLASS_NAMES.items()}, preprocessing=DEFAULT_CONFIG.to_dict(),
            channel_aliases=meta.get("channel_aliases", {}),
            limits={"max_windows_per_request": MAX_WINDOWS, "max_body_bytes": MAX_BODY, "max_upload_bytes": MAX_UPLOAD,
                    "max_unpacked_bytes": MAX_UNPACKED},
            runtime=self.session.describe(),
            export={k: export.get(k) for k in ("exporter", "opset", "parity", "int8") if k in export},
        )


# ---- request size limits (413 before the body is parsed) ------------------------------------------


class BodyLimit:
    """ASGI middleware: refuse bodies over the limit of their path with 413 and a JSON message."""

    def __init__(self, app, limits: dict[str, int], default: int):
        self.app, self.limits, self.default = app, limits, default

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        limit = self.limits.get(scope["path"], self.default)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._drain(receive, int(declared))
            return await self._refuse(scope, send, int(declared), limit)
        if declared is None:  # chunked: read it all (up to the limit) before the app sees it
            chunks, size = [], 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return
                size += len(message.get("body", b""))
                if size > limit:
                    if message.get("more_body"):
                        await self._drain(receive, 64 * MB)
                    return await self._refuse(scope, send, size, limit)
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    break
            body = b"".join(chunks)
            sent = False

            async def replay():
                nonlocal sent
                if sent:
                    return await receive()
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}

            return await self.app(scope, replay, send)
        return await self.app(scope, receive, send)

    @staticmethod
    async def _drain(receive, budget: int) -> None:
        """Read and drop the body (bounded), so the client gets our answer rather than a reset connection."""
        while budget > 0:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body"):
                return
            budget -= len(message.get("body", b""))

    @staticmethod
    async def _refuse(scope, send, size: int, limit: int) -> None:
        field = "file" if scope["path"].endswith("/score") else "body"
        error = BadInput(field, f"request body of {size} bytes is over the {limit} byte limit of {scope['path']}",
                         "send less per request (see /metadata limits)", status=413)
        body = json.dumps({"error": str(error), "field": error.field, "fix": error.fix}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


PhysioServe.add_asgi_middleware(BodyLimit, limits={"/score": MAX_UPLOAD}, default=MAX_BODY)
