"""Task heads and `InferenceModel`: what the ONNX export takes (encoder + three linear heads).

`InferenceModel.forward(signals [B, 4, 3000] float32, modality_mask [B, 4] bool)` returns
(embedding [B, D], sleep_stage_logits [B, 5], age_logits [B, 2], arousal_logits [B, 2]): no Python
control flow on tensor values, batch dimension free.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import TASKS, ModelConfig
from .model import MultiModalEncoder


def make_heads(d_model: int) -> nn.ModuleDict:
    """One linear head per task, keyed by task name (sleep_stage, age, arousal)."""
    return nn.ModuleDict({task: nn.Linear(d_model, n_classes) for task, n_classes in TASKS.items()})


class InferenceModel(nn.Module):
    """Frozen-style encoder + heads: (embedding, sleep_stage_logits, age_logits, arousal_logits)."""

    output_names = ("embedding", "sleep_stage_logits", "age_logits", "arousal_logits")
    input_names = ("signals", "modality_mask")

    def __init__(self, encoder: MultiModalEncoder, heads: nn.ModuleDict):
        super().__init__()
        self.encoder = encoder
        self.heads = heads

    def forward_head(self, embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.heads["sleep_stage"](embedding), self.heads["age"](embedding), self.heads["arousal"](embedding)

    def forward(
        self, signals: torch.Tensor, modality_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        embedding = self.encoder.pooled(signals, modality_mask)  # [B, D]
        stage, age, arousal = self.forward_head(embedding)
        return embedding, stage, age, arousal


def build_inference_model(model_cfg: ModelConfig, encoder_state: dict, heads_state: dict) -> InferenceModel:
    """An eval-mode InferenceModel from saved state dicts (see probe's model.pt)."""
    encoder = MultiModalEncoder(model_cfg)
    encoder.load_state_dict(encoder_state)
    heads = make_heads(model_cfg.d_model)
    heads.load_state_dict(heads_state)
    return InferenceModel(encoder, heads).eval()


def load_inference_model(path, map_location: str = "cpu") -> tuple[InferenceModel, dict]:
    """Load PROBE_DIR/model.pt -> (eval-mode InferenceModel, its configs and provenance)."""
    blob = torch.load(path, map_location=map_location, weights_only=True)
    model_cfg = ModelConfig.from_dict(blob["configs"]["model"])
    return build_inference_model(model_cfg, blob["encoder"], blob["heads"]), blob["configs"]
