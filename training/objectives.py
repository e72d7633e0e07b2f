"""What each pretraining objective needs from `physioserve pretrain`: its model, and a batch's forward inputs.

    model = build_model(model_cfg, pre)                  # MultiMAE, or ContrastiveModel (late fusion)
    inputs = BatchInputs(model_cfg, pre, dataset, source)
    loss, per_modality = model(*inputs(batch, generator, train=True))

MultiMAE (paper §3.3): optional training-time augmentation (`--augment`), the encoder's modalities
selected, a modality drawn for the input modality drop, the masking plan. SimCLR: the adjacent window of
each window fetched from the same source, both transformed by `training.signal_augment`. CLIP: the batch
as it is. Every random draw comes from the CPU generator passed in (exact resume; fixed validation).
"""

from __future__ import annotations

import numpy as np
import torch

from physioserve.modalities import MODALITIES

from .augment import augment_batch
from .config import ModelConfig, PretrainConfig, ViewAugmentConfig, augment_config
from .contrastive import ContrastiveModel, adjacent_positions
from .data import BatchSource, WindowBatchDataset
from .model import MultiMAE, plan_masking


def model_config(size: ModelConfig, pre: PretrainConfig, modalities: tuple[str, ...] | None = None) -> ModelConfig:
    """The named size with the objective's fusion and the pretraining modalities (default: the size's)."""
    return size.replace(fusion=pre.fusion, modalities=tuple(modalities or size.modalities))


def build_model(cfg: ModelConfig, pre: PretrainConfig) -> torch.nn.Module:
    """MultiMAE (decoders per modality) or ContrastiveModel (projection heads per modality)."""
    return MultiMAE(cfg) if pre.objective == "multimae" else ContrastiveModel(cfg, pre)


def usable_windows(cache, indices: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """The windows with at least one of the encoder's modalities present (others have nothing to learn from)."""
    keep = np.array([m in cfg.modalities for m in MODALITIES])
    return indices[(cache.mask[indices] & keep[None, :]).any(1)]


class BatchInputs:
    """Turns a `Batch` into the forward arguments of the objective's model."""

    def __init__(self, cfg: ModelConfig, pre: PretrainConfig, dataset: WindowBatchDataset, source: BatchSource):
        self.cfg, self.pre, self.dataset, self.source = cfg, pre, dataset, source
        self.augment = augment_config(pre.augment)
        self.views = ViewAugmentConfig()
        self.n_mod = len(cfg.modalities)
        self.select = None if tuple(cfg.modalities) == MODALITIES else [MODALITIES.index(m) for m in cfg.modalities]

    def __call__(self, batch, generator: torch.Generator, train: bool = True) -> tuple:
        signals, mask, mask_cpu = batch.signals, batch.mask, batch.mask_cpu
        if train and self.augment.enabled:  # draws from the generator, so a resumed run repeats them exactly
            signals, mask = augment_batch(signals, mask, self.augment, generator)
            mask_cpu = mask.cpu() if mask is not batch.mask else mask_cpu
        if self.pre.objective == "multimae":
            return self._masked(signals, mask, mask_cpu, generator)
        if self.pre.objective == "simclr":
            from .signal_augment import augment_views

            partner_signals, partner_mask = self._partners(batch.position, generator)
            return (augment_views(signals, mask, self.views, generator), mask,
                    augment_views(partner_signals, partner_mask, self.views, generator), partner_mask)
        return signals, mask

    def _masked(self, signals, mask, mask_cpu, generator) -> tuple:
        if self.select is not None:  # the encoder's modalities only (a unimodal MAE)
            signals, mask, mask_cpu = signals[:, self.select], mask[:, self.select], mask_cpu[:, self.select]
        drop = int(torch.randint(self.n_mod, (1,), generator=generator)) if self.pre.modality_drop else None
        plan = plan_masking(mask_cpu, self.cfg, self.pre.keep_fraction, drop, generator, signals.device)
        return signals, mask, plan.keep_idx, plan.keep_valid, plan.loss_mask

    def _partners(self, positions: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Signals and masks of each window's neighbour in its night (before or after, drawn at random)."""
        direction = torch.where(torch.rand(len(positions), generator=generator) < 0.5, -1, 1).numpy()
        cache = self.dataset.cache
        partner = adjacent_positions(self.dataset.indices, cache.record_index, positions.numpy(), direction)
        device = self.source.device
        if self.source.gpu is not None:
            got = self.source.gpu.batch(partner)
            return got.signals, got.mask
        item = self.dataset[partner]
        return item["signals"].to(device, non_blocking=True), item["mask"].to(device, non_blocking=True)


@torch.no_grad()
def validation_loss(model: torch.nn.Module, inputs: BatchInputs, source: BatchSource, seed: int, amp_dtype,
                    distributed: bool = False) -> dict[str, float]:
    """The objective's loss on the validation windows, with masks / views drawn from a generator seeded with
    `seed` each time (the same ones every epoch, so epochs compare). Mean over windows (and DDP ranks)."""
    import torch.distributed as dist

    from .runtime import autocast

    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    total = torch.zeros(2 + inputs.n_mod, dtype=torch.float64, device=source.device)  # [loss, per modality..., n]
    for batch in source.epoch(0):
        with autocast(amp_dtype, source.device):
            loss, per_modality = model(*inputs(batch, generator, train=False))
        n = len(batch.index)
        total[:-1] += torch.cat([loss.detach().reshape(1), per_modality]).double() * n
        total[-1] += n
    if distributed:
        dist.all_reduce(total)
    model.train(was_training)
    mean = (total[:-1] / total[-1].clamp(min=1)).tolist()
    return {"val_loss": mean[0], **{f"val_loss_{m}": v for m, v in zip(inputs.cfg.modalities, mean[1:])}}
