"""The night-context model: sleep stage of every epoch from the embeddings of the whole night around it.

The paper's heads classify one 30 s window. Sleep scorers read an epoch in its context (AASM rules
such as "N2 continues until..." and the ~90 min cycle), and so do the stagers people trust (YASA's
rolling features, U-Sleep's U-Net, SeqSleepNet's bidirectional RNN, Phan et al. 2019). This model
runs a bidirectional GRU over the sequence of epoch embeddings of the frozen encoder:

    embedding [B, L, D] --standardise (training statistics)--> z [B, L, D]
    [z, modality mask] [B, L, D + 4] -> Linear -> GELU -> BiGRU (2 layers) [B, L, 2H] -> Linear -> logits [B, L, 5]

An epoch without any usable modality (unscorable window, a gap) enters as zeros with an all-False
mask: the GRU bridges it from its neighbours, and scoring still reports it unscorable. The same
graph takes a 30-minute excerpt or a whole night (trained on random crops of `crop_epochs`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from physioserve.modalities import MODALITIES, STAGE_NAMES

from .config import ContextConfig

N_STAGES = len(STAGE_NAMES)
N_MOD = len(MODALITIES)


class NightContext(nn.Module):
    """Bidirectional GRU over a night's epoch embeddings -> per-epoch stage logits (see module doc)."""

    input_names = ("embedding", "modality_mask")
    output_names = ("sleep_stage_logits",)

    def __init__(self, d_model: int, cfg: ContextConfig, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mean", torch.zeros(d_model) if mean is None else mean.float().clone())
        self.register_buffer("std", torch.ones(d_model) if std is None else std.float().clone())
        self.inp = nn.Linear(d_model + N_MOD, cfg.hidden)
        self.gru = nn.GRU(cfg.hidden, cfg.hidden, cfg.layers, batch_first=True, bidirectional=True,
                          dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(2 * cfg.hidden, N_STAGES)

    def forward(self, embedding: torch.Tensor, modality_mask: torch.Tensor) -> torch.Tensor:
        """embedding [B, L, D] float, modality_mask [B, L, 4] bool -> sleep_stage_logits [B, L, 5]."""
        present = modality_mask.any(-1, keepdim=True).to(embedding.dtype)  # [B, L, 1]
        z = (embedding - self.mean) / self.std * present  # [B, L, D]
        x = torch.cat([z, modality_mask.to(embedding.dtype)], dim=-1)  # [B, L, D + 4]
        x = self.drop(F.gelu(self.inp(x)))  # [B, L, H]
        h, _ = self.gru(x)  # [B, L, 2H]
        return self.out(self.drop(h))  # [B, L, 5]


@dataclass
class Night:
    """One record's epochs in order: embeddings [n, D], modality mask [n, 4], stage [n] (-1 unknown)."""

    record: str
    embedding: np.ndarray
    mask: np.ndarray
    stage: np.ndarray


def class_weights(nights: list[Night]) -> torch.Tensor:
    """Balanced-CE weights n / (K n_k) over the labelled, scorable epochs of `nights`."""
    y = np.concatenate([n.stage[n.mask.any(1)] for n in nights])
    counts = np.bincount(y[y >= 0], minlength=N_STAGES).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (N_STAGES * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def sample_crops(nights: list[Night], cfg: ContextConfig, rng: np.random.Generator):
    """A training batch of random crops: (embedding [B, L, D], mask [B, L, 4], stage [B, L])."""
    length = cfg.crop_epochs
    d = nights[0].embedding.shape[1]
    emb = np.zeros((cfg.batch_size, length, d), np.float32)
    mask = np.zeros((cfg.batch_size, length, N_MOD), bool)
    stage = np.full((cfg.batch_size, length), -1, np.int64)
    sizes = np.array([len(n.stage) for n in nights], float)
    for b, k in enumerate(rng.choice(len(nights), cfg.batch_size, p=sizes / sizes.sum())):
        night = nights[k]
        n = len(night.stage)
        start = int(rng.integers(0, max(n - length, 0) + 1))
        stop = min(start + length, n)
        emb[b, : stop - start] = night.embedding[start:stop]
        mask[b, : stop - start] = night.mask[start:stop]
        stage[b, : stop - start] = night.stage[start:stop]
    blank = rng.random((cfg.batch_size, length)) < cfg.epoch_drop_p  # epochs made unscorable
    mask[blank] = False
    stage[~mask.any(-1)] = -1
    return torch.from_numpy(emb), torch.from_numpy(mask), torch.from_numpy(stage)


@torch.no_grad()
def predict_nights(model: NightContext, nights: list[Night]) -> list[np.ndarray]:
    """Stage logits [n, 5] of each whole night (one sequence each)."""
    model.eval()
    out = []
    for night in nights:
        logits = model(torch.from_numpy(night.embedding[None]).float(), torch.from_numpy(night.mask[None]))
        out.append(logits[0].numpy())
    return out


def night_kappa(model: NightContext, nights: list[Night]) -> float:
    """Cohen's kappa over all labelled, scorable epochs of `nights` (the selection score)."""
    from physioserve.metrics import cohen_kappa

    logits = predict_nights(model, nights)
    y = np.concatenate([n.stage[n.mask.any(1)] for n in nights])
    p = np.concatenate([lg[n.mask.any(1)].argmax(1) for lg, n in zip(logits, nights)])
    keep = y >= 0
    return cohen_kappa(y[keep], p[keep], N_STAGES)


def train_context(train: list[Night], val: list[Night], cfg: ContextConfig, *, progress: bool = True
                  ) -> tuple[NightContext, dict]:
    """Fit a NightContext on training nights (random crops, balanced CE); keep the step with the best
    validation kappa. Returns (eval-mode model, {best_step, best_val_kappa, curve})."""
    import copy

    from tqdm.auto import tqdm

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    present = np.concatenate([n.embedding[n.mask.any(1)] for n in train])  # [N, D]
    mean, std = present.mean(0), present.std(0).clip(min=1e-6)
    model = NightContext(train[0].embedding.shape[1], cfg, torch.from_numpy(mean), torch.from_numpy(std))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    weight = class_weights(train)
    best = {"best_step": 0, "best_val_kappa": -np.inf}
    best_state = copy.deepcopy(model.state_dict())
    curve = []
    for step in tqdm(range(1, cfg.steps + 1), desc="context", disable=not progress, dynamic_ncols=True):
        model.train()
        emb, mask, stage = sample_crops(train, cfg, rng)
        logits = model(emb, mask)  # [B, L, 5]
        labelled = stage >= 0
        loss = F.cross_entropy(logits[labelled], stage[labelled], weight=weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            kappa = night_kappa(model, val)
            curve.append({"step": step, "loss": float(loss.detach()), "val_kappa": kappa})
            if kappa > best["best_val_kappa"]:
                best = {"best_step": step, "best_val_kappa": kappa}
                best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return model.eval(), {**best, "curve": curve}


def scale_output(model: NightContext, temperature: float) -> NightContext:
    """A copy whose logits are divided by `temperature` (calibration baked into the output layer)."""
    import copy

    out = copy.deepcopy(model)
    with torch.no_grad():
        out.out.weight /= temperature
        out.out.bias /= temperature
    return out


def load_context(path) -> tuple[NightContext, dict]:
    """CONTEXT_DIR/context.pt -> (eval-mode NightContext, its saved summary)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    cfg = ContextConfig.from_dict(blob["config"])
    model = NightContext(int(blob["d_model"]), cfg)
    model.load_state_dict(blob["state"])
    return model.eval(), blob
