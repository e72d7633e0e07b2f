"""The representation analyses of the paper's §4.4, on a torch encoder (the exported ONNX graph is untouched).

- `attention_maps`: the raw attention of every layer and the attention rollout (Abnar & Zuidema 2020:
  A_l = 0.5 W_l + 0.5 I with W_l averaged over heads, multiplied over the layers, R = A_L ... A_1), as
  N x N token matrices (120 x 120 for four modalities: modality blocks of 30 one-second tokens), averaged
  over windows (Figure 2A-C, Appendix G). `block_summary` reduces a matrix to the modality-block mass,
  the cross-modal share and its temporal alignment.
- `relative_source_variance`: per unit (a channel of a layer's output, averaged over tokens) and layer,
  the source variance of each modality = the variance of the unit over windows when only that modality's
  input changes and the others are held at a reference window's, averaged over references; normalised
  across modalities with a softmax (as the issue states it) or as a share of the sum (scale-free)
  (Figure 2D-F).
- `reconstruction_errors` / `reconstruct`: MultiMAE reconstructions under random masking and with one
  modality dropped whole (what cross-modal reconstruction recovers; Appendix C, Figure 4).

Inputs are model input (signals [n, 4, 3000], mask [n, 4]); all functions run in eval mode, no grad.
"""

from __future__ import annotations

import numpy as np
import torch

from .model import MultiMAE, MultiModalEncoder, plan_masking


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


@torch.no_grad()
def attention_maps(encoder: MultiModalEncoder, signals: torch.Tensor, mask: torch.Tensor,
                   batch: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(raw attention per layer [L, N, N], rollout [N, N]), both averaged over heads and windows."""
    encoder.eval()
    raw, roll, n = None, None, len(signals)
    for part in _batches(n, batch):
        attention = encoder.forward_analysis(signals[part], mask[part])["attention"]  # L x [b, H, N, N]
        heads = torch.stack([a.float().mean(1) for a in attention], 1)  # [b, L, N, N]
        eye = torch.eye(heads.shape[-1], device=heads.device)
        rollout = eye.expand_as(heads[:, 0]).clone()  # [b, N, N]
        for layer in range(heads.shape[1]):
            rollout = (0.5 * heads[:, layer] + 0.5 * eye) @ rollout  # R_l = A_l R_{l-1}
        raw = heads.sum(0) if raw is None else raw + heads.sum(0)
        roll = rollout.sum(0) if roll is None else roll + rollout.sum(0)
    return (raw / n).cpu().numpy(), (roll / n).cpu().numpy()


def block_summary(matrix: np.ndarray, n_modalities: int) -> dict:
    """A row-stochastic token matrix [N, N] -> modality-block mass [M, M] (row: query modality; rows sum to
    1), cross-modal share (mass on other modalities' tokens, mean over queries) and temporal alignment (the
    share of the cross-modal mass at the query's own second; chance 1 / T)."""
    n = matrix.shape[0]
    t = n // n_modalities
    blocks = matrix.reshape(n_modalities, t, n_modalities, t)  # [M, T, M, T]
    mass = blocks.sum(3).mean(1)  # [M, M]
    other = ~np.eye(n_modalities, dtype=bool)
    cross = float(mass[other].sum() / n_modalities)
    same_time = np.einsum("itjt->ij", blocks) / t  # [M, M]: mean mass at the same second
    aligned = float(same_time[other].sum() / max(mass[other].sum(), 1e-12))
    return {"block_mass": mass.round(6).tolist(), "cross_modal": cross, "temporal_alignment": aligned,
            "alignment_chance": 1.0 / t}


@torch.no_grad()
def _pooled_layers(encoder: MultiModalEncoder, signals: torch.Tensor, mask: torch.Tensor, batch: int) -> torch.Tensor:
    """Each block's output averaged over the present tokens: [L, n, D]."""
    outs = []
    for part in _batches(len(signals), batch):
        hidden = encoder.forward_analysis(signals[part], mask[part])["hidden"]  # L x [b, N, D]
        sel_mask = encoder.select_inputs(signals[part], mask[part])[1]
        weight = encoder.token_presence(sel_mask).unsqueeze(-1).float()  # [b, N, 1]
        outs.append(torch.stack([(h.float() * weight).sum(1) / weight.sum(1).clamp(min=1) for h in hidden]))
    return torch.cat(outs, 1)  # [L, n, D]


@torch.no_grad()
def relative_source_variance(encoder: MultiModalEncoder, signals: torch.Tensor, mask: torch.Tensor,
                             references: int = 4, batch: int = 64) -> dict:
    """Source variance SV [M, L, D] of each of the encoder's modalities, and its two normalisations across
    modalities: `softmax` and `share` (SV / sum over modalities), each [L, D, M]. Needs windows where all
    the encoder's modalities are present."""
    from physioserve.modalities import MODALITIES

    encoder.eval()
    columns = [MODALITIES.index(m) for m in encoder.cfg.modalities]
    sv = []
    for col in columns:
        per_ref = []
        for r in range(min(references, len(signals))):
            probe = signals[r : r + 1].repeat(len(signals), 1, 1)  # [n, 4, S]: the reference everywhere ...
            probe[:, col] = signals[:, col]  # ... but this modality, taken from every window
            pooled = _pooled_layers(encoder, probe, mask[r : r + 1].repeat(len(signals), 1), batch)  # [L, n, D]
            per_ref.append(pooled.var(1, unbiased=False))  # [L, D]
        sv.append(torch.stack(per_ref).mean(0))  # [L, D]
    sv = torch.stack(sv)  # [M, L, D]
    softmax = sv.permute(1, 2, 0).softmax(-1)  # [L, D, M]
    share = (sv / sv.sum(0, keepdim=True).clamp(min=1e-12)).permute(1, 2, 0)  # [L, D, M]
    return {"source_variance": sv.cpu().numpy(), "softmax": softmax.cpu().numpy(), "share": share.cpu().numpy()}


def rsv_summary(rsv: np.ndarray) -> list[dict]:
    """Per layer of a normalised RSV [L, D, M]: mean RSV per modality, the units' mean normalised entropy (1 =
    every modality alike, 0 = one modality), the share of units dominated (RSV > 0.5) by one modality."""
    n_mod = rsv.shape[-1]
    out = []
    for layer in rsv:
        p = np.clip(layer, 1e-12, 1.0)
        entropy = -(p * np.log(p)).sum(-1) / np.log(n_mod) if n_mod > 1 else np.zeros(len(p))
        out.append({"mean_rsv": layer.mean(0).round(6).tolist(), "entropy": float(entropy.mean()),
                    "dominated": float((layer.max(-1) > 0.5).mean()),
                    "dominant_share": (np.bincount(layer.argmax(-1), minlength=n_mod) / len(layer)).round(6).tolist()})
    return out


@torch.no_grad()
def reconstruct(model: MultiMAE, signals: torch.Tensor, mask: torch.Tensor, drop: int | None, keep_fraction: float,
                seed: int = 0):
    """One MultiMAE pass on model input: (reconstruction [n, M, T, C], loss mask [n, M*T], target [n, M, S]) with
    random masking (`drop` None, keep_fraction of the tokens) or modality `drop` (index into the encoder's
    modalities) dropped whole and keep_fraction of the rest kept."""
    model.eval()
    signals, mask = model.encoder.select_inputs(signals, mask)
    plan = plan_masking(mask.cpu(), model.cfg, keep_fraction, drop, torch.Generator().manual_seed(seed), signals.device)
    encoded = model.forward_encoder(signals, mask, plan.keep_idx, plan.keep_valid)
    return model.forward_decoder(encoded, plan.keep_idx, plan.keep_valid), plan.loss_mask, signals


def reconstruction_errors(model: MultiMAE, signals: torch.Tensor, mask: torch.Tensor, batch: int = 64) -> dict:
    """MSE on masked tokens per modality: random masking at 0.7 (keep 0.3), and each modality dropped whole
    (keep 0.4 of the rest: the paper's drop setting) -> the dropped modality's error (rebuilt from the others)."""
    cfg = model.cfg
    modalities = list(cfg.modalities)

    def mse(drop, keep):
        err = torch.zeros(len(modalities), dtype=torch.float64)
        count = torch.zeros(len(modalities), dtype=torch.float64)
        for part in _batches(len(signals), batch):
            pred, loss_mask, target = reconstruct(model, signals[part], mask[part], drop, keep)
            target = target.reshape(pred.shape)  # [b, M, T, C]
            e = (pred.float() - target.float()).pow(2).mean(-1)  # [b, M, T]
            w = loss_mask.reshape(e.shape).double()
            err += (e.double() * w).sum((0, 2))
            count += w.sum((0, 2))
        return (err / count.clamp(min=1)).tolist()

    out = {"random_mask_0.7": dict(zip(modalities, mse(None, 0.3)))}
    if len(modalities) > 1:
        out["dropped_whole"] = {m: mse(i, 0.4)[i] for i, m in enumerate(modalities)}
    return out
