"""The inference runtime: a bundle's ONNX graph in an ONNX Runtime session. numpy + onnxruntime, no torch.

    session = InferenceSession(resolve_bundle())          # CUDA when present, else CPU
    out = session.predict(signals, mask)                  # [n, 4, 3000] float32, [n, 4] bool
    out["sleep_stage_probs"]                              # [n, 5] softmax, order modalities.STAGE_NAMES

Execution providers: CUDA when onnxruntime-gpu is installed and sees a GPU, else CPU. What is in
use is read back from the session (`session.providers`), never assumed: onnxruntime-gpu without a
usable GPU silently falls back to CPU, and that shows there. Threads: one intra-op pool sized to
the CPUs this process may use (`PHYSIOSERVE_THREADS` overrides), no inter-op parallelism.
"""

from __future__ import annotations

import base64
import json
import logging
import os

import numpy as np
import onnxruntime as ort

from .bundle import CONTEXT_INPUTS, CONTEXT_OUTPUTS, INPUT_NAMES, OUTPUT_NAMES, Bundle, BundleError, read_bundle
from .epoch_features import N_FEATURES
from .modalities import MODALITIES, WINDOW_SAMPLES
from .preprocessing import DEFAULT_CONFIG

log = logging.getLogger(__name__)

ENV_THREADS = "PHYSIOSERVE_THREADS"
ENV_DEVICE = "PHYSIOSERVE_DEVICE"  # auto | cpu | cuda
ENV_SPIN = "PHYSIOSERVE_SPIN"  # 1: ORT's idle intra-op threads spin (a dedicated machine)
ENV_VARIANT = "PHYSIOSERVE_VARIANT"  # fp32 | int8 (when the bundle was exported with --int8)
DEFAULT_BATCH = 64  # windows per adaptive batch of the service, and per ONNX Runtime call on a GPU
# Windows per ONNX Runtime call on CPU: smaller batches stay in cache. Measured on 2 cores, 2 threads
# (bench/onnx_speed.py, docs/BENCHMARKS.md): small size 424 windows/s at 16 against 360 at 64 (1.18x);
# paper size 32.3 against 30.9 (1.05x).
CPU_BATCH = 16
N_MOD = len(MODALITIES)


def cpu_count() -> int:
    """CPUs this process may run on (cgroup/affinity aware where the OS says)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def choose_providers(device: str = "auto") -> list[str]:
    """Execution providers to ask for: CUDA first when available (device auto/cuda), then CPU."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device {device!r}; accepted: auto, cpu, cuda")
    available = ort.get_available_providers()
    if device != "cpu" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise ValueError(
            "device cuda: this onnxruntime has no CUDAExecutionProvider (available: "
            f"{', '.join(available)}); pip uninstall -y onnxruntime && pip install onnxruntime-gpu"
        )
    return ["CPUExecutionProvider"]


def model_file(bundle: Bundle, variant: str = "fp32") -> str:
    """File name of a bundle's graph variant: fp32 (model.onnx) or int8 (export --int8)."""
    if variant == "fp32":
        return bundle.model_path.name
    if variant == "int8":
        int8 = bundle.meta.get("export", {}).get("int8")
        if not int8:
            raise BundleError(f"bundle {bundle.path} has no int8 graph; re-export with `physioserve export --int8`")
        return int8["file"]
    raise ValueError(f"variant {variant!r}; accepted: fp32, int8")


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return (z / z.sum(axis=-1, keepdims=True)).astype(np.float32)


def check_model_input(signals: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert model input: signals [n, 4, 3000] float32, mask [n, 4] bool, >= 1 modality each."""
    signals = np.ascontiguousarray(signals, dtype=np.float32)
    mask = np.ascontiguousarray(mask, dtype=bool)
    if signals.ndim != 3 or signals.shape[1:] != (N_MOD, WINDOW_SAMPLES):
        raise ValueError(f"signals: shape {signals.shape}, expected [n, {N_MOD}, {WINDOW_SAMPLES}]")
    if mask.shape != signals.shape[:2]:
        raise ValueError(f"modality_mask: shape {mask.shape}, expected {signals.shape[:2]}")
    empty = np.nonzero(~mask.any(axis=1))[0]
    if len(empty):
        raise ValueError(f"window {int(empty[0])}: no modality present; each window needs at least one of {MODALITIES}")
    return signals, mask


class InferenceSession:
    """An ONNX Runtime session over a checked bundle, with softmax outputs and chunked batches."""

    def __init__(
        self,
        bundle: Bundle | str | os.PathLike,
        *,
        device: str | None = None,
        threads: int | None = None,
        batch_size: int | None = None,
        variant: str | None = None,
    ):
        """batch_size: windows per ONNX Runtime call (default CPU_BATCH on CPU, DEFAULT_BATCH on a GPU)."""
        self.bundle = bundle if isinstance(bundle, Bundle) else read_bundle(bundle)
        device = device or os.environ.get(ENV_DEVICE, "auto")
        threads = threads or int(os.environ.get(ENV_THREADS, 0)) or cpu_count()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # idle pool threads sleep instead of spinning: on a shared machine spinning threads take the
        # cores the work needs (paper size, batch 1: 1.4x, bench/ort_options.py); PHYSIOSERVE_SPIN=1 spins
        options.add_session_config_entry("session.intra_op.allow_spinning", os.environ.get(ENV_SPIN, "0"))
        options.log_severity_level = 3  # errors only
        self.variant = variant or os.environ.get(ENV_VARIANT, "fp32")
        path = self.bundle.path / model_file(self.bundle, self.variant)
        requested = choose_providers(device)
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=requested)
        self.providers: list[str] = self.session.get_providers()  # what is actually in use
        self.batch_size = int(batch_size or (CPU_BATCH if self.providers[0] == "CPUExecutionProvider" else DEFAULT_BATCH))
        self.threads = threads
        if requested[0] not in self.providers:
            log.warning("asked for %s, onnxruntime uses %s", requested, self.providers)
        self._check_graph()
        context = self.bundle.context_path
        self.context = None if context is None else ort.InferenceSession(
            str(context), sess_options=options, providers=requested)
        if self.context is not None:
            self._check_context_graph()

    def _check_graph(self) -> None:
        """The ONNX file must match bundle.json and the code: names, metadata, preprocessing config."""
        where = f"bundle {self.bundle.path}"
        inputs = tuple(i.name for i in self.session.get_inputs())
        outputs = tuple(o.name for o in self.session.get_outputs())
        if inputs != INPUT_NAMES or outputs != OUTPUT_NAMES:
            raise BundleError(f"{where}: graph inputs {inputs} / outputs {outputs}, expected {INPUT_NAMES} / {OUTPUT_NAMES}")
        props = self.session.get_modelmeta().custom_metadata_map
        recorded = props.get("preprocessing")
        if recorded is None or json.loads(recorded) != DEFAULT_CONFIG.to_dict():
            raise BundleError(
                f"{where}: the ONNX file's preprocessing config differs from this code's (or is missing); "
                "re-export the bundle with this version of physioserve"
            )
        if props.get("version") != self.bundle.version:
            raise BundleError(f"{where}: model.onnx is version {props.get('version')!r}, bundle.json says "
                              f"{self.bundle.version!r}; the folder mixes two exports")

    def _check_context_graph(self) -> None:
        where = f"bundle {self.bundle.path}: {self.bundle.context_path.name}"
        inputs = tuple(i.name for i in self.context.get_inputs())
        outputs = tuple(o.name for o in self.context.get_outputs())
        if inputs != CONTEXT_INPUTS or outputs != CONTEXT_OUTPUTS:
            raise BundleError(f"{where}: inputs {inputs} / outputs {outputs}, expected {CONTEXT_INPUTS} / {CONTEXT_OUTPUTS}")
        version = self.context.get_modelmeta().custom_metadata_map.get("version")
        if version != self.bundle.version:
            raise BundleError(f"{where} is version {version!r}, bundle.json says {self.bundle.version!r}; "
                              "the folder mixes two exports")

    @property
    def d_model(self) -> int:
        return self.bundle.d_model

    @property
    def has_context(self) -> bool:
        return self.context is not None

    def night_stage_logits(self, embedding: np.ndarray, mask: np.ndarray, features: np.ndarray) -> np.ndarray:
        """Night-context stage logits [n, 5] of n consecutive epochs (embedding [n, D], mask [n, 4], and
        features [n, F]: `epoch_features` of the same preprocessed windows).

        Unscorable epochs (mask row all False) may hold anything in `embedding`; the graph ignores it.
        Raises BundleError for a bundle exported without a context graph.
        """
        if self.context is None:
            raise BundleError(f"bundle {self.bundle.path} has no night-context graph; re-export with --context")
        embedding = np.ascontiguousarray(embedding, np.float32)
        mask = np.ascontiguousarray(mask, bool)
        features = np.ascontiguousarray(features, np.float32)
        n = len(embedding)
        if (embedding.ndim != 2 or embedding.shape[1] != self.d_model or mask.shape != (n, N_MOD)
                or features.shape != (n, N_FEATURES)):
            raise ValueError(f"night context: embedding {embedding.shape}, mask {mask.shape} and features "
                             f"{features.shape}, expected [n, {self.d_model}], [n, {N_MOD}] and [n, {N_FEATURES}]")
        if not n:
            return np.zeros((0, 5), np.float32)
        feed = {"embedding": embedding[None], "modality_mask": mask[None],
                "epoch_features": features[None]}  # [1, n, D], [1, n, 4], [1, n, F]
        return self.context.run(list(CONTEXT_OUTPUTS), feed)[0][0]  # [n, 5]

    def run(self, signals: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """Raw graph outputs {embedding, *_logits} for any n, in chunks of `batch_size`."""
        signals, mask = check_model_input(signals, mask)
        parts: dict[str, list[np.ndarray]] = {name: [] for name in OUTPUT_NAMES}
        for start in range(0, len(signals), self.batch_size):
            feed = {"signals": signals[start : start + self.batch_size], "modality_mask": mask[start : start + self.batch_size]}
            for name, value in zip(OUTPUT_NAMES, self.session.run(list(OUTPUT_NAMES), feed)):
                parts[name].append(value)
        if not len(signals):
            return {
                "embedding": np.zeros((0, self.d_model), np.float32),
                "sleep_stage_logits": np.zeros((0, 5), np.float32),
                "age_logits": np.zeros((0, 2), np.float32),
                "arousal_logits": np.zeros((0, 2), np.float32),
            }
        return {name: np.concatenate(chunks) for name, chunks in parts.items()}

    def predict(self, signals: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs plus softmax probabilities: {embedding, *_logits, sleep_stage_probs, age_probs, arousal_probs}."""
        out = self.run(signals, mask)
        return add_probabilities(out)

    def warmup(self, sizes: tuple[int, ...] = (1, DEFAULT_BATCH)) -> None:
        """Run the graph (and the context graph) once per batch size so the first request does not pay for allocation."""
        for n in sizes:
            signals = np.zeros((n, N_MOD, WINDOW_SAMPLES), np.float32)
            out = self.run(signals, np.ones((n, N_MOD), bool))
            if self.context is not None:
                self.night_stage_logits(out["embedding"], np.ones((n, N_MOD), bool), np.zeros((n, N_FEATURES), np.float32))

    def describe(self) -> dict:
        return {"providers": self.providers, "threads": self.threads, "batch_size": self.batch_size,
                "variant": self.variant, "source": self.bundle.source, "night_context": self.context is not None}


def add_probabilities(out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = dict(out)
    for task in ("sleep_stage", "age", "arousal"):
        out[f"{task}_probs"] = softmax(out[f"{task}_logits"])
    return out


# ---- compact transport of windows and outputs through the service's batching API -----------------
# One window = signals [4, 3000] float32 + mask [4] as uint8, base64; one result = embedding and the
# three logit vectors as float32, base64. Exact, and far cheaper to (de)serialise than JSON lists.

_WINDOW_BYTES = N_MOD * WINDOW_SAMPLES * 4 + N_MOD


def pack_windows(signals: np.ndarray, mask: np.ndarray) -> list[str]:
    signals, mask = check_model_input(signals, mask)
    return [base64.b64encode(s.tobytes() + m.astype(np.uint8).tobytes()).decode("ascii") for s, m in zip(signals, mask)]


def unpack_window(item: str) -> tuple[np.ndarray, np.ndarray] | None:
    """One packed window -> (signals [4, 3000], mask [4]); None when it is not a valid packed window."""
    try:
        raw = base64.b64decode(item, validate=True)
    except (ValueError, TypeError):
        return None
    if len(raw) != _WINDOW_BYTES:
        return None
    signals = np.frombuffer(raw[: -N_MOD], np.float32).reshape(N_MOD, WINDOW_SAMPLES)
    mask = np.frombuffer(raw[-N_MOD:], np.uint8).astype(bool)
    if not mask.any() or not np.isfinite(signals).all():
        return None
    return signals, mask


def pack_outputs(out: dict[str, np.ndarray]) -> list[str]:
    flat = np.concatenate([out[name] for name in OUTPUT_NAMES], axis=1).astype(np.float32)  # [n, d + 9]
    return [base64.b64encode(row.tobytes()).decode("ascii") for row in flat]


def unpack_outputs(items: list[str], d_model: int) -> dict[str, np.ndarray]:
    flat = np.stack([np.frombuffer(base64.b64decode(i), np.float32) for i in items])  # [n, d + 9]
    widths = {"embedding": d_model, "sleep_stage_logits": 5, "age_logits": 2, "arousal_logits": 2}
    out, start = {}, 0
    for name in OUTPUT_NAMES:
        out[name] = flat[:, start : start + widths[name]]
        start += widths[name]
    return out
