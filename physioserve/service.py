"""The BentoML service: `bentoml serve` from the repository root (bentofile.yaml names this class).

Endpoints (POST, JSON unless noted):
- `/predict`: 30 s windows, each with its rate and any subset of eeg/eog/emg/ecg in µV -> per window
  the sleep stage, age and arousal, the modalities used, and the embedding when asked.
- `/score` (multipart): an EDF/BDF file, or a WFDB record (.hea + signal files) as a flat zip -> the
  per-epoch table and night summary that `physioserve score` writes.
- `/metadata`: model name, version, card summary, preprocessing config, class names, limits, runtime.
- `/infer`: internal, the adaptive batching in front of the ONNX session (batching.py); validated
  and size-limited like the public routes.
- BentoML's own: `/livez`, `/readyz` (ready once the model is loaded and warmed up), `/metrics`.

Request models: api_models.py; validation and request handling: api_requests.py; malformed requests
(size, media type, form structure) are answered before BentoML parses them: request_guard.py.
Settings (environment variables, read at start): PHYSIOSERVE_MAX_WINDOWS (windows per /predict or
/infer request, default 128), PHYSIOSERVE_MAX_BODY_MB (JSON body, default 64), PHYSIOSERVE_MAX_UPLOAD_MB
(/score upload, default 512; a zip may unpack to 4x that), PHYSIOSERVE_BATCH_LATENCY_MS (queueing
bound of the batching, default 30 s: 503 beyond), PHYSIOSERVE_PREPROCESS_NICE and
PHYSIOSERVE_PREPROCESS_THREADS (/predict's low-priority preprocessing pool: batching.py). The model:
PHYSIOSERVE_BUNDLE (folder or store tag), else `physioserve:latest` in the BentoML model store, else
the default bundle of the package.
"""

from __future__ import annotations

import os
import tempfile
from http import HTTPStatus
from pathlib import Path
from typing import Annotated

import anyio
import bentoml
from bentoml.exceptions import BentoMLException
from bentoml.validators import ContentType
from pydantic import Field

from .api_models import InferItem, MetadataResponse, ModelInfo, PredictResponse, ScoreResponse, Window
from .api_requests import (
    BadInput,
    hypnogram_agreement,
    in_context,
    predictions,
    read_scored_upload,
    require_context,
    window_input,
)
from .batching import PreprocessingPool, WindowParking
from .bundle import ENV_BUNDLE, STORE_NAME, read_bundle, resolve_bundle
from .modalities import CHANNEL_ALIASES, CLASS_NAMES, MODALITIES
from .preprocessing import DEFAULT_CONFIG
from .request_guard import RequestGuard, api_routes
from .runtime import DEFAULT_BATCH, InferenceSession, add_probabilities, unpack_outputs
from .scoring import predict_night, score_windows_outputs

MB = 1 << 20
MAX_WINDOWS = int(os.environ.get("PHYSIOSERVE_MAX_WINDOWS", 128))
MAX_BODY = int(float(os.environ.get("PHYSIOSERVE_MAX_BODY_MB", 64)) * MB)
MAX_UPLOAD = int(float(os.environ.get("PHYSIOSERVE_MAX_UPLOAD_MB", 512)) * MB)
MAX_UNPACKED = 4 * MAX_UPLOAD
BATCH_LATENCY_MS = int(os.environ.get("PHYSIOSERVE_BATCH_LATENCY_MS", 30_000))  # queueing bound, not a wait
GPU = os.environ.get("PHYSIOSERVE_GPU", "") not in ("", "0")


def _store_model():
    """The bundle registered in the BentoML model store, pinned to its version (packed by `bentoml build`)."""
    if os.environ.get(ENV_BUNDLE):
        return None
    try:
        return bentoml.models.BentoModel(str(bentoml.models.get(f"{STORE_NAME}:latest").tag))
    except BentoMLException:
        return None


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
        self.session = InferenceSession(self.bundle)
        self.model_info = ModelInfo(name=self.bundle.name, version=self.bundle.version)
        self.parking = WindowParking()
        self._score_limiter = anyio.CapacityLimiter(1)
        self.preprocessing = PreprocessingPool()
        self._warm = False

    @bentoml.on_startup
    def warm_up(self) -> None:
        """Run the graph at batch 1 and at the session's chunk size before reporting ready."""
        self.session.warmup((1, self.session.batch_size))
        self._warm = True

    def __is_ready__(self) -> bool:
        return self._warm

    @bentoml.api(batchable=True, max_batch_size=DEFAULT_BATCH, max_latency_ms=BATCH_LATENCY_MS, route="/infer")
    def infer(
        self, windows: Annotated[list[InferItem], Field(max_length=MAX_WINDOWS)]
    ) -> list[str]:
        """Internal: window keys parked by /predict, or packed windows -> packed outputs, adaptively batched."""
        return self.parking.run(self.session, windows)

    @bentoml.api
    async def predict(
        self,
        windows: list[Window] = Field(default_factory=list, description=f"30 s windows, at most {MAX_WINDOWS} per "
                                      "request (JSON body; or send windows_npz instead)"),
        # a list of at most one file: BentoML 1.4 cannot build an input spec for an optional file
        windows_npz: Annotated[list[Path], Field(max_length=1)] = Field(
            default_factory=list, description="binary body instead of windows (multipart/form-data): one .npz with `fs` "
            "(Hz) and [n, 30 x fs] float32 µV arrays named eeg, eog, emg, ecg (any subset; one rate and modality set "
            "per request); physioserve.client writes it"),
        return_embedding: bool = Field(default=False, description="also return each window's embedding"),
        consecutive: bool = Field(default=False, description="the windows are consecutive 30 s epochs of one recording, "
                                  "in order: also stage each in its context (night-context graph; a bundle with "
                                  "per-recording normalisation takes its statistics from this run: send >= 30 min)"),
    ) -> PredictResponse:
        """Sleep stage, age and arousal for each 30 s window (any subset of eeg/eog/emg/ecg, any rate >= 50 Hz).

        Body: JSON `{"windows": [...]}`, or multipart/form-data with the file `windows_npz` (binary,
        ~2x smaller and far cheaper to parse than JSON) and the other fields as form values.
        """
        try:
            signals, mask, rates = await self.preprocessing.run(window_input, windows, windows_npz, MAX_WINDOWS, MAX_BODY)
            if consecutive:
                require_context(self.session)
            packed = await self.parking.infer(self.to_async, signals, mask)
        except BadInput as error:
            return error.response()
        except BentoMLException as error:  # the batching queue is full: BentoML answers 503
            if error.error_code != HTTPStatus.SERVICE_UNAVAILABLE:
                raise
            return BadInput("windows", "the service is overloaded", "retry later, or send fewer windows at once",
                            status=503).response()
        if any(not item for item in packed):
            raise RuntimeError("inference returned no result for some windows")
        out = add_probabilities(unpack_outputs(packed, self.bundle.d_model))
        context = await anyio.to_thread.run_sync(in_context, self.session, out, signals, mask) if consecutive else None
        return PredictResponse(model=self.model_info, predictions=predictions(out, mask, rates, return_embedding, context))

    @bentoml.api
    async def score(
        self,
        file: Annotated[Path, ContentType("*")] = Field(description="EDF/BDF file, or a WFDB record zipped flat (.hea + signal files)"),
        name: str | None = Field(default=None, description="record name for an EDF/BDF (default: from the file name)"),
        channel_map: str | None = Field(default=None, description="override, e.g. eeg=C4-A1,eog=EOG(L)"),
        fill_gaps: bool = Field(default=False, description="EDF+D with gaps: score it, the gaps as missing data"),
        # a list of at most one file: BentoML 1.4 cannot build an input spec for an optional file
        hypnogram: Annotated[list[Path], Field(max_length=1)] = Field(
            default_factory=list, description="optional expert hypnogram (EDF+, .st, .hyp, .arousal, CSV/TXT, DREAMS): "
            "adds the agreement with it"),
        hypnogram_format: str | None = Field(default=None, description="force the hypnogram format (edf, wfdb, csv, lines, "
                                             "numeric, dreams)"),
        hypnogram_epoch_s: float | None = Field(default=None, description="epoch length of a hypnogram without times"),
    ) -> ScoreResponse:
        """Score a whole recording: per-epoch probabilities, labels and modalities used, and the night summary."""
        try:
            with tempfile.TemporaryDirectory(prefix="physioserve-") as work:
                recording, signals, mask = await anyio.to_thread.run_sync(lambda: read_scored_upload(
                    Path(file), work, name=name, channel_map=channel_map, fill_gaps=fill_gaps,
                    max_unpacked_bytes=MAX_UNPACKED))
        except BadInput as error:
            return error.response()
        probs = await anyio.to_thread.run_sync(predict_night, self.session, signals, mask, limiter=self._score_limiter)
        night = score_windows_outputs(recording, probs, mask, model=self.model_info.model_dump())
        try:
            agreement = None if not hypnogram else await anyio.to_thread.run_sync(
                hypnogram_agreement, night, Path(hypnogram[0]), hypnogram_format, hypnogram_epoch_s)
        except BadInput as error:
            return error.response()
        return ScoreResponse(**night.to_json(), agreement=agreement)

    @bentoml.api
    def metadata(self) -> MetadataResponse:
        """Model name, version, card summary, preprocessing config, class names, limits and runtime."""
        meta = self.bundle.meta
        export = meta.get("export", {})
        return MetadataResponse(
            name=self.bundle.name, version=self.bundle.version, created=meta.get("created"),
            card_summary=self.bundle.card_summary(), d_model=self.bundle.d_model, modalities=list(MODALITIES),
            class_names={k: list(v) for k, v in CLASS_NAMES.items()}, preprocessing=DEFAULT_CONFIG.to_dict(),
            channel_aliases={m: list(patterns) for m, patterns in CHANNEL_ALIASES.items()},
            limits={"max_windows_per_request": MAX_WINDOWS, "max_body_bytes": MAX_BODY, "max_upload_bytes": MAX_UPLOAD,
                    "max_unpacked_bytes": MAX_UNPACKED},
            runtime=self.session.describe(),
            export={k: export.get(k) for k in ("exporter", "opset", "parity", "int8") if k in export},
        )


PhysioServe.add_asgi_middleware(RequestGuard, routes=api_routes(PhysioServe, {"/score": MAX_UPLOAD}, MAX_BODY,
                                                                    {"/predict": "windows.npz"}))
