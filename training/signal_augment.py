"""The views of SimCLR-style pretraining: random signal transformations of preprocessed windows.

SimCLR (Chen et al. 2020) learns what two views of one sample share. For physiological time series,
Raghu et al. 2022 ("Contrastive pre-training for multimodal medical time series") build the views with
the transformations of Cheng et al. 2020 ("Subject-aware contrastive learning for biosignals"):
amplitude scaling, DC shift, additive Gaussian noise, band-stop filtering, time shift and zero-masking.
Each is applied per window and modality with probability `ViewAugmentConfig.p`, in that order. Sizes are
relative to the window's own standard deviation, so one setting serves every modality. Draws come from a
CPU generator (reproducible on any device, exact on resume); absent modalities stay untouched.

This is not `training.augment` (the perturbations real recordings show, our addition for robustness):
these views define the contrastive task itself.
"""

from __future__ import annotations

import math

import torch

from physioserve.modalities import TARGET_FS
from physioserve.preprocessing import DEFAULT_CONFIG, PreprocessingConfig

from .augment import _bernoulli, _uniform
from .config import ViewAugmentConfig


def augment_views(
    signals: torch.Tensor,
    mask: torch.Tensor,
    cfg: ViewAugmentConfig,
    g: torch.Generator,
    pre: PreprocessingConfig = DEFAULT_CONFIG,
) -> torch.Tensor:
    """signals [B, M, S] (preprocessed), mask [B, M] -> one random view [B, M, S] (same dtype)."""
    device = signals.device
    n, m, s = signals.shape
    x = signals.float()
    std = x.std(dim=-1, keepdim=True).clamp(min=1e-3)  # [B, M, 1]

    def on() -> torch.Tensor:
        return _bernoulli((n, m, 1), cfg.p, g, device)  # [B, M, 1]

    log_lo, log_hi = math.log(cfg.scale[0]), math.log(cfg.scale[1])
    x = x * torch.where(on(), torch.exp(_uniform((n, m, 1), log_lo, log_hi, g, device)), 1.0)
    x = x + on() * _uniform((n, m, 1), -cfg.dc_shift, cfg.dc_shift, g, device) * std
    sigma = _uniform((n, m, 1), 0.0, cfg.noise, g, device) * std
    x = x + on() * sigma * torch.randn(n, m, s, generator=g).to(device)
    # band-stop: a zero-phase notch of bandstop_width_hz at a random centre (FFT magnitude response)
    freqs = torch.fft.rfftfreq(s, 1.0 / TARGET_FS).to(device)[None, None, :]  # [1, 1, F]
    centre = _uniform((n, m, 1), *cfg.bandstop_hz, g, device)
    stop = on() & ((freqs - centre).abs() <= cfg.bandstop_width_hz / 2)  # [B, M, F]
    x = torch.fft.irfft(torch.fft.rfft(x, dim=-1) * (~stop), n=s, dim=-1)  # [B, M, S]
    # time shift: circular, by up to +- time_shift_s
    max_shift = int(round(cfg.time_shift_s * TARGET_FS))
    shift = torch.randint(-max_shift, max_shift + 1, (n, m, 1), generator=g).to(device) * on()
    index = (torch.arange(s, device=device)[None, None, :] - shift) % s  # [B, M, S]
    x = x.gather(-1, index)
    # zero-masking: a stretch of zero_mask_s at a random start
    t = torch.arange(s, device=device, dtype=torch.float32)[None, None, :] / TARGET_FS  # [1, 1, S] seconds
    length = _uniform((n, m, 1), *cfg.zero_mask_s, g, device)
    start = _uniform((n, m, 1), 0.0, s / TARGET_FS, g, device)
    x = torch.where(on() & (t >= start) & (t < start + length), 0.0, x)

    x = x.clamp(-pre.clip, pre.clip)
    return torch.where(mask[:, :, None], x, signals.float()).to(signals.dtype)
