"""Request and response models of the HTTP API (pydantic; BentoML builds the OpenAPI schema from them).

`/predict` takes `Window`s and answers a `PredictResponse`; `/score` answers a `ScoreResponse` (the
per-epoch table and night summary of `scoring.NightScore`); `/metadata` a `MetadataResponse`.
`InferItem` is one item of the internal batching route `/infer`: a window key or a packed window.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from .modalities import AGE_CLASS_NAMES, AROUSAL_CLASS_NAMES, STAGE_NAMES
from .preprocessing import SUPPORTED_RATES_NOTE
from .runtime import unpack_window
from .scoring import COLUMNS

PARKED_KEY = re.compile(r"^ref:[0-9a-f]{32}$")  # a window parked in this process (see batching.py)
_EXAMPLE_EEG = [round(20 * ((i * 37) % 101 - 50) / 50, 3) for i in range(3000)]  # a made-up signal, not flat
_EXAMPLE_WINDOW = {"fs": 100, "eeg": _EXAMPLE_EEG}


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
        "band_limited_hz": {},
        "embedding": None,
    }})
    sleep_stage: StagePrediction
    sleep_stage_in_context: StagePrediction | None = Field(
        default=None, description="with consecutive=true: the stage from the night-context graph over the run of windows")
    age: AgePrediction
    arousal: ArousalPrediction
    modalities: list[str] = Field(description="the modalities the model used (a flat lead is left out)")
    band_limited_hz: dict[str, float] = Field(
        default_factory=dict, description="modalities sent below 100 Hz: the upper edge (Hz) of what they carry")
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
        "columns": list(COLUMNS),
        "summary": {"total_sleep_time_min": 402.5, "sleep_efficiency_pct": 87.5, "arousal_index_per_h": 9.1,
                    "epochs_per_modality_set": {"eeg+eog+emg+ecg": 1}, "notes": []},
        "epochs": [{"epoch": 0, "start_s": 0, "stage": "W", "p_W": 0.91, "p_N1": 0.05, "p_N2": 0.02, "p_N3": 0.01,
                    "p_REM": 0.01, "arousal": 0, "p_arousal": 0.04, "p_age_ge_55": 0.61,
                    "modalities": "eeg+eog+emg+ecg"}],
    }})
    record: str
    columns: list[str]
    summary: dict[str, Any]
    epochs: list[dict[str, Any]]
    agreement: dict[str, Any] | None = Field(
        default=None, description="with a hypnogram upload: accuracy, kappa, per-stage recall, confusion vs the expert")


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


def _check_infer_item(item: str) -> str:
    if PARKED_KEY.match(item) or unpack_window(item) is not None:
        return item
    raise ValueError("neither a parked window key (ref:<32 hex>) nor a packed window (runtime.pack_windows: base64 "
                     "of 4 x 3000 finite float32 and 4 mask bytes, at least one modality present)")


InferItem = Annotated[str, AfterValidator(_check_infer_item)]
