"""The night-context model: sleep stage of every epoch from the embeddings of the whole night around it.

The paper's heads classify one 30 s window. Sleep scorers read an epoch in its context (AASM rules
such as "N2 continues until..." and the ~90 min cycle), and so do the stagers people trust (YASA's
rolling features, U-Sleep's U-Net, SeqSleepNet's bidirectional RNN, Phan et al. 2019). This model
runs a bidirectional GRU over the sequence of epoch embeddings of the frozen encoder, each joined by
the epoch's spectral features (`physioserve.epoch_features`: log band powers per modality, F of them):

    [embedding [B, L, D], epoch_features [B, L, F]] --standardise (training statistics)--> z [B, L, D + F]
    [z, modality mask] [B, L, D + F + 4] -> Linear -> GELU -> BiGRU (2 layers) [B, L, 2H] -> Linear -> logits [B, L, 5]

A feature of a modality the epoch lacks enters as 0 (its training mean); standardised features are
clipped at +-FEATURE_CLIP (a flat lead, an electrode pop).

With `night_norm` (per-recording normalisation, as YASA z-scores its features per night) the input
also carries each z re-standardised by its own sequence's statistics over the scorable epochs, and
how many epochs those statistics rest on:

    [z, (z - night mean) / night std, modality mask, log(n_scorable) / log(1000)] [B, L, 2(D + F) + 5]

so a site's overall shift of the embeddings (amplitude, derivation, filters) cancels out. Given a
whole night the statistics are the night's; given an excerpt, the excerpt's (documented for
`/predict consecutive=true`); training uses both (`ContextConfig.excerpt_stats_p`).

With `window_residual` the graph carries the window-level stage head (frozen, a copy of the probe's)
and adds its logits to the GRU's: logits = out(h) + head(embedding). The GRU learns a correction of
the window-level answer, which an epoch without useful context keeps.

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

from physioserve.epoch_features import FEATURE_MODALITY, N_FEATURES
from physioserve.modalities import MODALITIES, STAGE_NAMES

from .config import ContextConfig

N_STAGES = len(STAGE_NAMES)
N_MOD = len(MODALITIES)


LOG_1000 = float(np.log(1000.0))  # scales log(n_scorable): a whole night (~1000 epochs) -> ~1
STD_FLOOR = 0.1  # night std floor (units of the training std): a uniform excerpt does not blow up
FEATURE_CLIP = 8.0  # standardised epoch features are clipped to +-8 training std


def sequence_statistics(z: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean [B, 1, D], std [B, 1, D] (floored at STD_FLOOR) and count n [B, 1, 1] (>= 1) of z [B, L, D]
    over the scorable epochs (present [B, L, 1] = 1) of each sequence."""
    n = present.sum(1, keepdim=True).clamp(min=1.0)  # [B, 1, 1]
    mean = (z * present).sum(1, keepdim=True) / n  # [B, 1, D]
    var = (((z - mean) * present) ** 2).sum(1, keepdim=True) / n  # [B, 1, D]
    return mean, torch.sqrt(var + STD_FLOOR ** 2), n


class NightContext(nn.Module):
    """Bidirectional GRU over a night's epoch embeddings -> per-epoch stage logits (see module doc)."""

    input_names = ("embedding", "modality_mask", "epoch_features")
    output_names = ("sleep_stage_logits",)

    def __init__(self, d_model: int, cfg: ContextConfig, mean: torch.Tensor | None = None,
                 std: torch.Tensor | None = None, feature_mean: torch.Tensor | None = None,
                 feature_std: torch.Tensor | None = None):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("mean", torch.zeros(d_model) if mean is None else mean.float().clone())
        self.register_buffer("std", torch.ones(d_model) if std is None else std.float().clone())
        self.register_buffer("feature_mean", torch.zeros(N_FEATURES) if feature_mean is None else feature_mean.float().clone())
        self.register_buffer("feature_std", torch.ones(N_FEATURES) if feature_std is None else feature_std.float().clone())
        self.register_buffer("feature_modality", torch.from_numpy(FEATURE_MODALITY), persistent=False)
        width = d_model + N_FEATURES
        self.inp = nn.Linear((2 * width + N_MOD + 1) if cfg.night_norm else (width + N_MOD), cfg.hidden)
        self.gru = nn.GRU(cfg.hidden, cfg.hidden, cfg.layers, batch_first=True, bidirectional=True,
                          dropout=cfg.dropout if cfg.layers > 1 else 0.0)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(2 * cfg.hidden, N_STAGES)
        if cfg.window_residual:  # the window-level stage head, frozen (set by `set_window_head`)
            self.window_head = nn.Linear(d_model, N_STAGES)
            self.window_head.requires_grad_(False)

    def set_window_head(self, head: nn.Linear) -> None:
        """Copy the probe's stage head [5, D] (window_residual only)."""
        with torch.no_grad():
            self.window_head.weight.copy_(head.weight)
            self.window_head.bias.copy_(head.bias)

    def standardise(self, embedding: torch.Tensor, modality_mask: torch.Tensor,
                    epoch_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (z [B, L, D + F] by the training statistics, zero at unscorable epochs and at features of
        absent modalities; present [B, L, 1])."""
        present = modality_mask.any(-1, keepdim=True).to(embedding.dtype)  # [B, L, 1]
        recorded = modality_mask[..., self.feature_modality].to(embedding.dtype)  # [B, L, F]
        zf = ((epoch_features - self.feature_mean) / self.feature_std).clamp(-FEATURE_CLIP, FEATURE_CLIP)  # [B, L, F]
        ze = (embedding - self.mean) / self.std * present  # [B, L, D]
        return torch.cat([ze, zf * recorded], dim=-1), present  # [B, L, D + F]

    def forward(self, embedding: torch.Tensor, modality_mask: torch.Tensor, epoch_features: torch.Tensor,
                night_stats: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """embedding [B, L, D] float, modality_mask [B, L, 4] bool, epoch_features [B, L, F] float
        -> sleep_stage_logits [B, L, 5].

        `night_stats` (training only; the graph computes them from its input): (mean [B, 1, D + F],
        std [B, 1, D + F], n [B, 1, 1]) of z over a longer sequence than the one given (the whole night)."""
        z, present = self.standardise(embedding, modality_mask, epoch_features)  # [B, L, D + F], [B, L, 1]
        parts = [z]
        if self.cfg.night_norm:
            mean, std, n = sequence_statistics(z, present) if night_stats is None else night_stats  # [B, 1, D + F] x2, [B, 1, 1]
            parts.append((z - mean) / std * present)  # [B, L, D + F]
        parts.append(modality_mask.to(embedding.dtype))  # [B, L, 4]
        if self.cfg.night_norm:
            parts.append((torch.log(n) / LOG_1000).expand(-1, z.shape[1], -1))  # [B, L, 1]
        x = torch.cat(parts, dim=-1)  # [B, L, D + F + 4] or [B, L, 2(D + F) + 5]
        x = self.drop(F.gelu(self.inp(x)))  # [B, L, H]
        h, _ = self.gru(x)  # [B, L, 2H]
        logits = self.out(self.drop(h))  # [B, L, 5]
        if self.cfg.window_residual:
            logits = logits + self.window_head(embedding * present)  # [B, L, 5]
        return logits


@dataclass
class Night:
    """One record's epochs in order: embeddings [n, D], modality mask [n, 4], stage [n] (-1 unknown),
    epoch features [n, F] (`physioserve.epoch_features`)."""

    record: str
    embedding: np.ndarray
    mask: np.ndarray
    stage: np.ndarray
    features: np.ndarray


def class_weights(nights: list[Night]) -> torch.Tensor:
    """Balanced-CE weights n / (K n_k) over the labelled, scorable epochs of `nights`."""
    y = np.concatenate([n.stage[n.mask.any(1)] for n in nights])
    counts = np.bincount(y[y >= 0], minlength=N_STAGES).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (N_STAGES * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


def sample_crops(nights: list[Night], cfg: ContextConfig, rng: np.random.Generator):
    """A training batch of random crops: (embedding [B, L, D], mask [B, L, 4], features [B, L, F], stage [B, L],
    night index [B])."""
    length = cfg.crop_epochs
    d = nights[0].embedding.shape[1]
    emb = np.zeros((cfg.batch_size, length, d), np.float32)
    feats = np.zeros((cfg.batch_size, length, N_FEATURES), np.float32)
    mask = np.zeros((cfg.batch_size, length, N_MOD), bool)
    stage = np.full((cfg.batch_size, length), -1, np.int64)
    sizes = np.array([len(n.stage) for n in nights], float)
    picks = rng.choice(len(nights), cfg.batch_size, p=sizes / sizes.sum())
    for b, k in enumerate(picks):
        night = nights[k]
        n = len(night.stage)
        start = int(rng.integers(0, max(n - length, 0) + 1))
        stop = min(start + length, n)
        emb[b, : stop - start] = night.embedding[start:stop]
        feats[b, : stop - start] = night.features[start:stop]
        mask[b, : stop - start] = night.mask[start:stop]
        stage[b, : stop - start] = night.stage[start:stop]
    blank = rng.random((cfg.batch_size, length)) < cfg.epoch_drop_p  # epochs made unscorable
    mask[blank] = False
    stage[~mask.any(-1)] = -1
    return torch.from_numpy(emb), torch.from_numpy(mask), torch.from_numpy(feats), torch.from_numpy(stage), picks


@torch.no_grad()
def whole_night_statistics(model: NightContext, nights: list[Night]) -> list[tuple[torch.Tensor, ...]]:
    """`sequence_statistics` of each whole night: [(mean [1, 1, D + F], std [1, 1, D + F], n [1, 1, 1])]."""
    out = []
    for night in nights:
        z, present = model.standardise(*night_tensors(night))
        out.append(sequence_statistics(z, present))
    return out


def night_tensors(night: Night) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A whole night as one sequence: (embedding [1, n, D], mask [1, n, 4], features [1, n, F])."""
    return (torch.from_numpy(night.embedding[None]).float(), torch.from_numpy(night.mask[None]),
            torch.from_numpy(night.features[None]).float())


def crop_statistics(model: NightContext, emb: torch.Tensor, mask: torch.Tensor, feats: torch.Tensor, stage: torch.Tensor,
                    picks: np.ndarray, nights_stats: list[tuple[torch.Tensor, ...]], excerpt_p: float,
                    rng: np.random.Generator):
    """Statistics for a batch of crops: its whole night's for most; a share `excerpt_p` become excerpts
    of one epoch up to the crop's length (log-uniform; the rest blanked in `mask` and `stage`, in place)
    with their own statistics, as a /predict run or a short clip gets. -> (mean, std [B, 1, D + F], n [B, 1, 1])."""
    use_own = rng.random(len(picks)) < excerpt_p  # [B]
    for b in np.flatnonzero(use_own):
        stop = int(np.exp(rng.uniform(0.0, np.log(mask.shape[1] + 1))))  # 1 .. L epochs
        mask[b, stop:] = False
        stage[b, stop:] = -1
    with torch.no_grad():
        own = sequence_statistics(*model.standardise(emb, mask, feats))
    flag = torch.from_numpy(use_own)[:, None, None]  # [B, 1, 1]
    stats = []
    for i in range(3):
        night = torch.cat([nights_stats[k][i] for k in picks])  # [B, 1, D + F] or [B, 1, 1]
        stats.append(torch.where(flag, own[i], night))
    return tuple(stats)


@torch.no_grad()
def predict_nights(model: NightContext, nights: list[Night]) -> list[np.ndarray]:
    """Stage logits [n, 5] of each whole night (one sequence each)."""
    model.eval()
    out = []
    for night in nights:
        logits = model(*night_tensors(night))
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


def train_context(train: list[Night], val: list[Night], cfg: ContextConfig, *, progress: bool = True,
                  window_head: nn.Linear | None = None) -> tuple[NightContext, dict]:
    """Fit a NightContext on training nights (random crops, balanced CE); keep the step with the best
    validation kappa. `window_head`: the probe's stage head (required with `cfg.window_residual`).
    Returns (eval-mode model, {best_step, best_val_kappa, curve})."""
    import copy

    from tqdm.auto import tqdm

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    present = np.concatenate([n.embedding[n.mask.any(1)] for n in train])  # [N, D]
    mean, std = present.mean(0), present.std(0).clip(min=1e-6)
    f_mean, f_std = feature_statistics(train)
    model = NightContext(train[0].embedding.shape[1], cfg, torch.from_numpy(mean), torch.from_numpy(std),
                         torch.from_numpy(f_mean), torch.from_numpy(f_std))
    if cfg.window_residual:
        if window_head is None:
            raise ValueError("ContextConfig.window_residual needs the probe's stage head (window_head)")
        model.set_window_head(window_head)
    optimizer_params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(optimizer_params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    weight = class_weights(train)
    best = {"best_step": 0, "best_val_kappa": -np.inf}
    best_state = copy.deepcopy(model.state_dict())
    curve = []
    nights_stats = whole_night_statistics(model, train) if cfg.night_norm else None
    for step in tqdm(range(1, cfg.steps + 1), desc="context", disable=not progress, dynamic_ncols=True):
        model.train()
        emb, mask, feats, stage, picks = sample_crops(train, cfg, rng)
        stats = (crop_statistics(model, emb, mask, feats, stage, picks, nights_stats, cfg.excerpt_stats_p, rng)
                 if cfg.night_norm else None)
        logits = model(emb, mask, feats, stats)  # [B, L, 5]
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


def feature_statistics(nights: list[Night]) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std [F] of each epoch feature over the epochs where its modality is recorded."""
    feats = np.concatenate([n.features for n in nights])  # [N, F]
    recorded = np.concatenate([n.mask for n in nights])[:, FEATURE_MODALITY]  # [N, F]
    count = np.maximum(recorded.sum(0), 1)
    mean = (feats * recorded).sum(0) / count
    std = np.sqrt((((feats - mean) * recorded) ** 2).sum(0) / count)
    return mean.astype(np.float32), std.clip(min=1e-3).astype(np.float32)


def scale_output(model: NightContext, temperature: float) -> NightContext:
    """A copy whose logits are divided by `temperature` (calibration baked into the output layer)."""
    import copy

    out = copy.deepcopy(model)
    with torch.no_grad():
        for layer in (out.out, out.window_head) if model.cfg.window_residual else (out.out,):
            layer.weight /= temperature
            layer.bias /= temperature
    return out


def load_context(path) -> tuple[NightContext, dict]:
    """CONTEXT_DIR/context.pt -> (eval-mode NightContext, its saved summary)."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    cfg = ContextConfig.from_dict(blob["config"])
    model = NightContext(int(blob["d_model"]), cfg)
    model.load_state_dict(blob["state"])
    return model.eval(), blob
