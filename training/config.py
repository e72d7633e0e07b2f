"""Configs of the model, pretraining and probing: frozen dataclasses, saved in every checkpoint.

Every number is the paper's (Fang et al. 2024, §3.2-3.4) unless its comment says "choice": those
are ours where the paper is silent, written here once and kept. `to_dict` / `from_dict` round-trip
through JSON so that checkpoints, probe folders and bundles carry their configs as plain data.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from physioserve.metrics import CHANCE  # re-exported: balanced-accuracy chance per task
from physioserve.modalities import EPOCH_SECONDS, MODALITIES, TARGET_FS


class _Config:
    """to_dict / from_dict / replace for the frozen dataclasses below."""

    def to_dict(self) -> dict:
        return asdict(self)  # type: ignore[call-overload]

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict):
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


FUSIONS = ("early", "late")


@dataclass(frozen=True)
class ModelConfig(_Config):
    """The encoder (tokenizers + transformer) and the MultiMAE decoders."""

    name: str = "paper"
    d_model: int = 512
    n_layers: int = 8
    n_heads: int = 8
    dropout: float = 0.1
    mlp_ratio: float = 4.0  # choice: the paper gives no MLP width; 4 x d_model as in ViT/MAE
    # tokenizer (paper: 1 s chunks -> Conv1d 64 ch, kernel 21 -> max-pool -> Linear -> LayerNorm)
    chunk_samples: int = TARGET_FS  # 1 s at 100 Hz
    n_chunks: int = EPOCH_SECONDS  # 30 tokens per modality
    conv_channels: int = 64
    conv_kernel: int = 21
    pool_size: int = 10  # choice: max-pool 100 -> 10 steps, so Linear(64 * 10 -> d_model)
    # decoders (paper: cross-attention + one transformer layer + Linear -> 100 samples)
    decoder_dim: int = 512  # = d_model: the paper's "Linear d_model -> 100"
    decoder_heads: int = 8
    decoder_layers: int = 1
    decoder_dropout: float = 0.0  # choice: no dropout in the decoders (as MAE)
    # the encoder's modalities, in MODALITIES order; one of them for a unimodal MAE (paper Table 1). The
    # model input stays [B, 4, S] + mask [B, 4]; the other modalities are ignored
    modalities: tuple[str, ...] = MODALITIES
    # early: one transformer over all modalities' tokens (MultiMAE); late: each modality through its own
    # transformer of the same size, no cross-modal attention, embedding = mean over present modalities
    # (paper Appendix F, the contrastive baselines; the mean is our choice, so heads read d_model)
    fusion: str = "early"

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads or self.decoder_dim % self.decoder_heads:
            raise ValueError(f"{self.name}: d_model / decoder_dim must be divisible by the head count")
        if self.chunk_samples % self.pool_size:
            raise ValueError(f"{self.name}: pool_size {self.pool_size} must divide chunk_samples {self.chunk_samples}")
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion {self.fusion!r}; accepted: {', '.join(FUSIONS)}")
        if not self.modalities or list(self.modalities) != [m for m in MODALITIES if m in self.modalities]:
            raise ValueError(f"model modalities {list(self.modalities)}: a non-empty subset of "
                             f"{', '.join(MODALITIES)}, in that order")

    @property
    def n_tokens(self) -> int:
        return len(self.modalities) * self.n_chunks  # 4 x 30 = 120

    @classmethod
    def named(cls, size: str) -> "ModelConfig":
        if size not in MODEL_SIZES:
            raise ValueError(f"unknown model size {size!r}; accepted: {', '.join(MODEL_SIZES)}")
        return MODEL_SIZES[size]


MODEL_SIZES: dict[str, ModelConfig] = {
    # paper §3.2: d_model 512, 8 layers, 8 heads, dropout 0.1
    "paper": ModelConfig(),
    # choice: trains on CPU on a synthetic corpus of tens of nights in under an hour (narrower
    # tokenizer convolution and decoders: on a CPU they, not the encoder, cost the most)
    "small": ModelConfig(
        name="small", d_model=128, n_layers=4, n_heads=4, dropout=0.1, conv_channels=32, decoder_dim=64,
        decoder_heads=4,
    ),
    # tests only
    "tiny": ModelConfig(
        name="tiny", d_model=32, n_layers=2, n_heads=2, dropout=0.1, conv_channels=16, decoder_dim=32,
        decoder_heads=2,
    ),
}


OBJECTIVES = ("multimae", "simclr", "clip-pairwise", "clip-loo")
SELECT_RULES = ("latest", "best-val")


@dataclass(frozen=True)
class PretrainConfig(_Config):
    """Pretraining: MultiMAE with input modality drop (paper §3.3) or a contrastive baseline of a
    late-fusion model (Appendix F), and its optimisation."""

    # multimae: masked reconstruction (early fusion); simclr: augmented adjacent windows as positives, per
    # modality; clip-pairwise / clip-loo: modalities of a window as positives (SleepFM, Thapa et al. 2024)
    objective: str = "multimae"
    mask_ratio: float = 0.7  # fraction of the 120 tokens masked: 36 kept per full sample
    modality_drop: bool = True
    token_mask_prob: float = 0.6  # with drop: masked fraction of the 3 remaining modalities (36 of 90 kept)
    epochs: int = 2000  # the paper's schedule (7-10 days on 8 V100s)
    batch_size: int = 256  # global, split over the DDP ranks; choice (paper silent)
    lr: float = 1.5e-4  # peak; choice: MAE's base lr 1.5e-4 per 256 samples
    min_lr: float = 1e-6  # end of the cosine; choice
    warmup_epochs: float = 10.0  # paper §3.5: 10 warm-up epochs, then cosine
    weight_decay: float = 0.05  # choice: MAE
    betas: tuple[float, float] = (0.9, 0.95)  # choice: MAE
    clip_grad_norm: float = 1.0  # choice
    seed: int = 0
    amp: str = "auto"  # auto (bf16 where supported, else fp16; off on CPU) | bf16 | fp16 | off
    checkpoint_every: int = 1000  # steps; also at every epoch end and when the run stops
    log_every: int = 50  # steps
    augment: dict | None = None  # AugmentConfig fields (our addition): perturb each batch before masking
    # validation: the objective's loss on (at most) val_windows windows of the validation split at every
    # epoch end, with fixed masks / augmentations (seed val_seed), so that epochs are comparable
    val_windows: int = 16384  # choice: evenly spaced windows of the split, enough for a stable mean
    val_seed: int = 12345
    # which weights encoder.pt gets: None = the paper's rule (§3.5): the latest for MultiMAE + modality
    # drop, the lowest validation loss otherwise
    select: str | None = None
    # contrastive objectives (Appendix F): projection head d_model -> d_model/2 -> d_model/4 per modality
    # (512 -> 256 -> 128 at the paper size), discarded after pretraining; fixed temperature
    temperature: float = 0.1  # choice: the paper fixes it without the value we could find; SimCLR's range
    projection_hidden: int | None = None  # None: d_model // 2
    projection_dim: int | None = None  # None: d_model // 4

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_ratio < 1.0 or not 0.0 < self.token_mask_prob < 1.0:
            raise ValueError("mask_ratio and token_mask_prob must lie in (0, 1)")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            raise ValueError(f"amp {self.amp!r}; accepted: auto, bf16, fp16, off")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective {self.objective!r}; accepted: {', '.join(OBJECTIVES)}")
        if self.select is not None and self.select not in SELECT_RULES:
            raise ValueError(f"select {self.select!r}; accepted: {', '.join(SELECT_RULES)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature {self.temperature} must be positive")

    @property
    def keep_fraction(self) -> float:
        """Fraction of the available (present, not dropped) tokens that the encoder sees."""
        return 1.0 - (self.token_mask_prob if self.modality_drop else self.mask_ratio)

    @property
    def fusion(self) -> str:
        """The encoder the objective trains: early fusion for MultiMAE, late fusion for the contrastive ones."""
        return "early" if self.objective == "multimae" else "late"

    @property
    def selection(self) -> str:
        """`select`, or the paper's rule: latest for MultiMAE + modality drop, best validation loss otherwise."""
        if self.select is not None:
            return self.select
        return "latest" if self.objective == "multimae" and self.modality_drop else "best-val"


def drop_mask_prob(mask_ratio: float, n_modalities: int = len(MODALITIES)) -> float:
    """Per-token mask probability on the modalities left by a drop that keeps the overall ratio at mask_ratio:
    (1 + p (M - 1)) / M = r, so p = (M r - 1) / (M - 1); 0.6 for the paper's 0.7 with 4 modalities."""
    return (n_modalities * mask_ratio - 1.0) / (n_modalities - 1)


@dataclass(frozen=True)
class AugmentConfig(_Config):
    """Training-time augmentation (`training.augment`; our choice, not the paper's): probabilities per window
    and modality unless noted, ranges, sizes in µV before the preprocessing scale."""

    enabled: bool = True
    gain_sigma: float = 0.35  # log-normal sigma: x0.5 .. x2 at +-2 sigma
    polarity_p: tuple[float, ...] = (0.15, 0.5, 0.5, 0.3)  # eeg eog emg ecg
    tilt_p: float = 0.6
    tilt_max: float = 0.6  # exponent of (f / 8 Hz) added to the spectrum's slope, uniform in +-tilt_max
    highpass_p: float = 0.25
    highpass_hz: tuple[float, float] = (0.3, 1.0)
    lowpass_p: float = 0.25  # EEG/EOG/EMG: corners of older systems and 50 Hz recordings
    lowpass_hz: tuple[float, float] = (18.0, 30.0)
    noise_p: float = 0.5
    noise_uv: tuple[float, float] = (0.5, 6.0)  # white noise RMS range
    drift_p: float = 0.2
    drift_uv: float = 40.0  # amplitude of a slow drift / DC step
    pop_p: float = 0.05
    pop_uv: float = 200.0
    burst_p: float = 0.1  # EMG burst (20-45 Hz) added to EEG, EOG and EMG
    burst_uv: float = 15.0
    flat_p: float = 0.03  # a stretch of 2-15 s set to 0 (lead off)
    subset_p: float = 0.0  # cut the presence mask to a random non-empty subset
    eeg_only_p: float = 0.0  # of the cut masks, the share that keep EEG alone


@dataclass(frozen=True)
class ViewAugmentConfig(_Config):
    """The views of SimCLR-style pretraining (`training.signal_augment`): the augmentation families Raghu et
    al. 2022 take from Cheng et al. 2020 (subject-aware contrastive learning for biosignals), applied per
    window and modality, each with probability `p`. The ranges are our choices for 30 s windows at 100 Hz;
    amplitudes are in units of the window's own standard deviation."""

    p: float = 0.8
    scale: tuple[float, float] = (0.5, 2.0)  # amplitude scaling, log-uniform
    dc_shift: float = 0.5  # +- std
    noise: float = 0.2  # additive Gaussian noise, sigma uniform in [0, noise] std
    bandstop_width_hz: float = 5.0
    bandstop_hz: tuple[float, float] = (2.8, 45.0)  # band-stop centre
    time_shift_s: float = 1.0  # circular shift, uniform in +- this
    zero_mask_s: tuple[float, float] = (0.0, 3.0)  # a zeroed stretch of this length


def augment_config(value: dict | None) -> AugmentConfig:
    """The AugmentConfig a PretrainConfig / ProbeConfig `augment` field holds (None: no augmentation)."""
    return AugmentConfig(enabled=False) if value is None else AugmentConfig.from_dict(value)


TASKS: dict[str, int] = {"sleep_stage": 5, "age": 2, "arousal": 2}  # task -> class count
TASK_LABEL_FIELD: dict[str, str] = {"sleep_stage": "stage", "age": "age", "arousal": "arousal"}


@dataclass(frozen=True)
class ProbeConfig(_Config):
    """Linear probing (paper §3.4) and the end-to-end baselines (scratch, fine-tuning)."""

    mode: str = "linear"  # linear (frozen encoder) | scratch | finetune
    modalities: tuple[str, ...] = MODALITIES  # presence mask restricted to these (unimodal rows)
    label_fraction: float = 1.0  # fraction of the labelled train windows used (choice: windows, seeded)
    train_records: int | None = None  # use only the first N train records (seeded shuffle)
    seed: int = 0
    # linear heads on cached embeddings: 200 epochs, 10 warm-up then cosine (paper §3.5); choices (paper
    # silent): AdamW on standardised features, lr, batch, weight decay, class-weighted CE, the epoch with
    # the best validation balanced accuracy, per task
    epochs: int = 200
    warmup_epochs: float = 10.0
    batch_size: int = 1024
    lr: float = 1e-3
    min_lr_ratio: float = 0.01  # choice: the cosine ends at 1 % of the peak (linear and end to end)
    weight_decay: float = 1e-4
    # our addition (not the paper's): linear heads also train and select on the embeddings of each
    # single modality and each one-left-out subset, so one set of heads serves recordings that lack
    # modalities (the deployed model); test metrics stay those of `modalities`
    subset_augment: bool = False
    # our addition: AugmentConfig fields; end-to-end modes perturb each training batch (`training.augment`)
    augment: dict | None = None
    # end-to-end baselines (scratch / finetune): 200 epochs, 10 warm-up then cosine (paper §3.5, stated for
    # fine-tuning; scratch models get the same supervised schedule). Choices: one model with the three heads
    # (summed class-weighted CE), AdamW, the lrs, the epoch with the best mean validation balanced accuracy
    e2e_epochs: int = 200
    e2e_batch_size: int = 256
    scratch_lr: float = 3e-4
    finetune_lr: float = 1e-4
    e2e_weight_decay: float = 0.05
    e2e_warmup_epochs: float = 10.0
    e2e_select: str = "mean"  # keep the epoch with the best mean val balanced accuracy, or "sleep_stage"
    # our addition: weight of each task's class-weighted CE in the end-to-end loss, in TASKS order
    # (sleep_stage, age, arousal); 1, 1, 1 is the plain sum
    e2e_task_weights: tuple[float, ...] = (1.0, 1.0, 1.0)
    clip_grad_norm: float = 1.0
    amp: str = "auto"
    embed_batch_size: int = 512  # inference batch for embeddings and predictions

    def __post_init__(self) -> None:
        if len(self.e2e_task_weights) != len(TASKS) or min(self.e2e_task_weights) < 0:
            raise ValueError(f"e2e_task_weights {list(self.e2e_task_weights)}: one weight >= 0 per task "
                             f"({', '.join(TASKS)})")
        if self.e2e_select not in ("mean", "sleep_stage"):
            raise ValueError(f"e2e_select {self.e2e_select!r}; accepted: mean, sleep_stage")
        if self.mode not in ("linear", "scratch", "finetune"):
            raise ValueError(f"probe mode {self.mode!r}; accepted: linear, scratch, finetune")
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad or not self.modalities:
            raise ValueError(f"probe modalities {bad or '(none)'}; accepted: {', '.join(MODALITIES)}")
        if not 0.0 < self.label_fraction <= 1.0:
            raise ValueError(f"label_fraction {self.label_fraction} must lie in (0, 1]")


@dataclass(frozen=True)
class ContextConfig(_Config):
    """Architecture and training of the night-context model (all our choices; the paper has none)."""

    hidden: int = 64  # GRU width per direction
    layers: int = 2
    dropout: float = 0.2
    crop_epochs: int = 120  # training crops: 1 h of 30 s epochs (the graph takes any length)
    # per-recording normalisation (our choice, after YASA's per-night z-scored features, Vallat & Walker
    # 2021): the GRU also sees each embedding z-scored by the statistics of its own sequence (the night,
    # or the excerpt it is given); training crops take the whole night's statistics, except a share
    # `excerpt_stats_p` that take their crop's own, as a 30-minute /predict run or a short clip does
    night_norm: bool = False
    excerpt_stats_p: float = 0.3
    # the GRU's output is added to the window-level stage logits (the probe's stage head, frozen, inside
    # the graph): the context model learns a correction, and an epoch without context (a single window,
    # a short excerpt) keeps the window-level answer
    window_residual: bool = False
    batch_size: int = 16
    steps: int = 1500
    lr: float = 2e-3
    weight_decay: float = 1e-2
    epoch_drop_p: float = 0.05  # share of epochs blanked (as unscorable) in training crops
    eval_every: int = 100
    seed: int = 0


def load_config_file(path: str | Path) -> dict:
    """A JSON config file (configs/*.json) -> dict of fields; CLI flags override its values."""
    data = json.loads(Path(path).read_text())
    return {k: v for k, v in data.items() if not k.startswith("_")}  # "_comment" keys are notes


def config_field_names(cls) -> set[str]:
    return {f.name for f in fields(cls)}


__all__ = [
    "CHANCE",
    "MODEL_SIZES",
    "ModelConfig",
    "OBJECTIVES",
    "PretrainConfig",
    "ProbeConfig",
    "AugmentConfig",
    "ViewAugmentConfig",
    "ContextConfig",
    "TASKS",
    "TASK_LABEL_FIELD",
    "load_config_file",
]
