"""The contrastive baselines of the paper's Table 2 (Appendix F): a late-fusion encoder + projection heads.

Each modality goes through its own tokenizer and transformer (`MultiModalEncoder` with fusion "late": no
cross-modal attention anywhere); its tokens are averaged into a modality embedding [B, M, D], which a
projection head per modality (d_model -> d_model/2 -> d_model/4: 512 -> 256 -> 128 at the paper size;
discarded after pretraining) maps to the unit sphere. Losses, all InfoNCE with a fixed temperature:

- `simclr` (SimCLR, Chen et al. 2020, in the multiview form of Raghu et al. 2022): the two views of a
  window are the window and an adjacent window of the same night (30 s before or after), each transformed
  by `training.signal_augment`; per modality, NT-Xent over the 2B views of the batch.
- `clip-pairwise` (SleepFM, Thapa et al. 2024): for every pair of modalities, the symmetric CLIP loss
  between their embeddings of the same windows, averaged over the pairs.
- `clip-loo` (SleepFM's leave-one-out): each modality's embedding against the mean of the other present
  modalities' embeddings, symmetric, averaged over the modalities.

Windows where a modality is absent take no part in the terms that need it (masked rows and columns, no
host sync). The probed embedding is the encoder's pooled output: the mean over present modalities.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig, PretrainConfig
from .model import MultiModalEncoder

_NEG = -1e9  # masked logits (float32): exp() is 0, no inf - inf in the gradients


def _info_nce(a: torch.Tensor, b: torch.Tensor, valid: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE of unit vectors a, b [B, P] whose row i is a positive pair where valid [B] holds.

    Returns (summed loss over valid rows and both directions / 2, number of valid rows)."""
    logits = (a.float() @ b.float().T) / temperature  # [B, B]
    logits = logits.masked_fill(~(valid[:, None] & valid[None, :]), _NEG)  # invalid rows and columns, both ways
    target = torch.arange(len(a), device=a.device)
    rows = F.cross_entropy(logits, target, reduction="none") + F.cross_entropy(logits.T, target, reduction="none")
    return (rows * valid).sum() / 2, valid.sum()


def nt_xent(u: torch.Tensor, v: torch.Tensor, valid_u: torch.Tensor, valid_v: torch.Tensor,
            temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SimCLR's NT-Xent over the 2B views [u; v] (unit vectors [B, P]): view i's positive is its pair, the
    other 2B - 2 present views are negatives. Returns (summed loss over anchors of valid pairs, their count)."""
    n = len(u)
    z = torch.cat([u, v]).float()  # [2B, P]
    present = torch.cat([valid_u, valid_v])  # [2B]
    logits = z @ z.T / temperature  # [2B, 2B]
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(eye | ~present[None, :], _NEG)
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    anchors = torch.cat([valid_u & valid_v] * 2)  # [2B]
    rows = F.cross_entropy(logits, target, reduction="none")
    return (rows * anchors).sum(), anchors.sum()


def clip_pairwise(z: torch.Tensor, mask: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """z [B, M, P] unit vectors, mask [B, M] -> (loss, per-modality loss [M]): CLIP over every modality pair."""
    n_mod = z.shape[1]
    total, count = z.new_zeros(()), z.new_zeros(())
    per_sum, per_n = z.new_zeros(n_mod), z.new_zeros(n_mod)
    for i in range(n_mod):
        for j in range(i + 1, n_mod):
            loss, n = _info_nce(z[:, i], z[:, j], mask[:, i] & mask[:, j], temperature)
            total, count = total + loss, count + n
            for k in (i, j):
                per_sum[k] += loss.detach()
                per_n[k] += n
    return total / count.clamp(min=1), per_sum / per_n.clamp(min=1)


def clip_leave_one_out(z: torch.Tensor, mask: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """z [B, M, P], mask [B, M] -> (loss, per-modality loss [M]): each modality vs the mean of the other
    present ones (SleepFM: the mean is not renormalised)."""
    n_mod = z.shape[1]
    weight = mask.to(z.dtype)[:, :, None]  # [B, M, 1]
    summed = (z * weight).sum(1)  # [B, P]
    total, count = z.new_zeros(()), z.new_zeros(())
    per = []
    for i in range(n_mod):
        others = mask.sum(1) - mask[:, i].long()  # [B]
        rest = (summed - z[:, i] * weight[:, i]) / others.clamp(min=1)[:, None]  # [B, P]
        loss, n = _info_nce(z[:, i], rest, mask[:, i] & (others > 0), temperature)
        total, count = total + loss, count + n
        per.append(loss.detach() / n.clamp(min=1))
    return total / count.clamp(min=1), torch.stack(per)


class ContrastiveModel(nn.Module):
    """Late-fusion encoder + one projection head per modality, trained with a contrastive objective.

    forward(signals [B, 4, S], modality_mask [B, 4], [partner_signals, partner_mask] for simclr) ->
    (loss, per-modality loss [M]). `encoder` is what probes and the export use.
    """

    def __init__(self, cfg: ModelConfig, pre: PretrainConfig):
        super().__init__()
        if cfg.fusion != "late":
            raise ValueError(f"objective {pre.objective} trains a late-fusion encoder (fusion 'late')")
        if pre.objective != "simclr" and len(cfg.modalities) < 2:
            raise ValueError(f"objective {pre.objective} contrasts modalities: it needs at least two")
        self.cfg, self.objective, self.temperature = cfg, pre.objective, pre.temperature
        self.encoder = MultiModalEncoder(cfg)
        hidden = pre.projection_hidden or cfg.d_model // 2
        out = pre.projection_dim or cfg.d_model // 4
        self.projections = nn.ModuleDict({
            m: nn.Sequential(nn.Linear(cfg.d_model, hidden), nn.ReLU(), nn.Linear(hidden, out)) for m in cfg.modalities
        })

    def embed(self, signals: torch.Tensor, modality_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Model input -> (projected unit vectors [B, M, P], the encoder modalities' mask [B, M])."""
        signals, modality_mask = self.encoder.select_inputs(signals, modality_mask)
        tokens = self.encoder.encode(signals, modality_mask)  # [B, N, D]
        per_modality = tokens.unflatten(1, (len(self.cfg.modalities), self.cfg.n_chunks)).mean(2)  # [B, M, D]
        z = torch.stack([proj(per_modality[:, i]) for i, proj in enumerate(self.projections.values())], 1)  # [B, M, P]
        return F.normalize(z.float(), dim=-1), modality_mask

    def forward(self, signals: torch.Tensor, modality_mask: torch.Tensor, partner_signals: torch.Tensor | None = None,
                partner_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        z, mask = self.embed(signals, modality_mask)
        if self.objective == "simclr":
            z2, mask2 = self.embed(partner_signals, partner_mask)
            sums, counts = zip(*(nt_xent(z[:, i], z2[:, i], mask[:, i], mask2[:, i], self.temperature)
                                 for i in range(z.shape[1])))
            loss = torch.stack(sums).sum() / torch.stack(counts).sum().clamp(min=1)
            per_modality = (torch.stack(sums) / torch.stack(counts).clamp(min=1)).detach()
            anchor = z.sum() + z2.sum()
        elif self.objective == "clip-pairwise":
            loss, per_modality = clip_pairwise(z, mask, self.temperature)
            anchor = z.sum()
        else:
            loss, per_modality = clip_leave_one_out(z, mask, self.temperature)
            anchor = z.sum()
        # every parameter stays in the graph even when a modality is absent from the whole batch (DDP)
        return loss + 0.0 * anchor, per_modality


def adjacent_positions(indices: np.ndarray, record_index: np.ndarray, positions: np.ndarray,
                       direction: np.ndarray) -> np.ndarray:
    """Dataset positions of the window next to each of `positions` in the same night.

    indices [n]: the dataset's global window indices (whole records, in order); record_index: record of each
    global window; direction [B] in {-1, +1}: after (+1) or before (-1), turned around at a night's edge (a
    one-window night pairs with itself)."""
    positions = np.asarray(positions, np.int64)
    rec = record_index[indices[positions]]

    def ok(p: np.ndarray) -> np.ndarray:
        inside = (p >= 0) & (p < len(indices))
        same = np.zeros(len(p), bool)
        same[inside] = record_index[indices[p[inside]]] == rec[inside]
        return same

    first = positions + direction
    second = positions - direction
    return np.where(ok(first), first, np.where(ok(second), second, positions))
