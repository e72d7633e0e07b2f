"""Training-time augmentation: each perturbation does what it says, absent modalities stay as they were."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from physioserve.modalities import MODALITIES, TARGET_FS, WINDOW_SAMPLES
from physioserve.preprocessing import DEFAULT_CONFIG
from training.augment import augment_batch, random_subsets
from training.config import AugmentConfig

OFF = dict(gain_sigma=0.0, polarity_p=(0.0,) * 4, tilt_p=0.0, highpass_p=0.0, lowpass_p=0.0, noise_p=0.0, drift_p=0.0,
           pop_p=0.0, burst_p=0.0, flat_p=0.0)


def batch(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, len(MODALITIES), WINDOW_SAMPLES, generator=g), torch.ones(n, len(MODALITIES), dtype=torch.bool)


def band_power(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    spec = torch.fft.rfft(x, dim=-1).abs() ** 2
    freqs = torch.fft.rfftfreq(x.shape[-1], 1 / TARGET_FS)
    return spec[..., (freqs >= lo) & (freqs < hi)].sum(-1)


def test_default_augmentation_keeps_shapes_clip_and_absent_modalities():
    x, mask = batch()
    mask[::3, 2] = False
    x[::3, 2] = 7.0  # an absent modality's values: must come back untouched
    y, new_mask = augment_batch(x, mask, AugmentConfig(), torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.dtype == x.dtype and torch.equal(new_mask, mask)
    assert torch.equal(y[::3, 2], x[::3, 2])
    assert y.abs().max() <= DEFAULT_CONFIG.clip
    assert not torch.equal(y[1:3], x[1:3])


def test_same_generator_seed_gives_the_same_batch_and_disabled_is_identity():
    x, mask = batch()
    a, _ = augment_batch(x, mask, AugmentConfig(), torch.Generator().manual_seed(3))
    b, _ = augment_batch(x, mask, AugmentConfig(), torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    same, same_mask = augment_batch(x, mask, AugmentConfig(enabled=False), torch.Generator())
    assert same is x and same_mask is mask


def test_gain_is_log_normal_with_the_configured_sigma():
    x, mask = batch(512)
    y, _ = augment_batch(x, mask, AugmentConfig(**{**OFF, "gain_sigma": 0.35}), torch.Generator().manual_seed(0))
    log_ratio = torch.log(y.std(-1) / x.std(-1))  # [n, M]
    assert abs(float(log_ratio.std()) - 0.35) < 0.03 and abs(float(log_ratio.mean())) < 0.03


def test_polarity_flips_whole_windows_at_the_configured_rate():
    x, mask = batch(2000)
    cfg = AugmentConfig(**{**OFF, "polarity_p": (0.0, 0.5, 0.0, 1.0)})
    y, _ = augment_batch(x, mask, cfg, torch.Generator().manual_seed(0))
    flipped = torch.isclose(y, -x, atol=1e-5).all(-1)  # [n, M]
    assert not flipped[:, 0].any() and flipped[:, 3].all()
    assert 0.45 < float(flipped[:, 1].float().mean()) < 0.55


def test_tilt_lowpass_and_highpass_shape_the_spectrum():
    x, mask = batch(256)
    g = torch.Generator().manual_seed(0)
    lowpassed, _ = augment_batch(x, mask, AugmentConfig(**{**OFF, "lowpass_p": 1.0, "lowpass_hz": (20.0, 20.0)}), g)
    ratio = band_power(lowpassed[:, :3], 35, 50) / band_power(x[:, :3], 35, 50)  # EEG, EOG, EMG
    assert float(ratio.max()) < 0.05  # 8th-order magnitude response: -28 dB and more above 35 Hz
    assert torch.allclose(lowpassed[:, 3], x[:, 3], atol=1e-5)  # never on ECG
    highpassed, _ = augment_batch(x, mask, AugmentConfig(**{**OFF, "highpass_p": 1.0, "highpass_hz": (1.0, 1.0)}), g)
    assert float((band_power(highpassed, 0.05, 0.5) / band_power(x, 0.05, 0.5)).max()) < 0.3
    steeper, _ = augment_batch(x, mask, AugmentConfig(**{**OFF, "tilt_p": 1.0, "tilt_max": 0.6}), g)
    tilt_ratio = (band_power(steeper, 20, 40) / band_power(steeper, 2, 4)) / (band_power(x, 20, 40) / band_power(x, 2, 4))
    assert float(tilt_ratio.log().std()) > 0.5  # slopes now differ by window


def test_noise_pops_and_flat_stretches_appear_at_their_rates():
    x, mask = batch(1000)
    x = x * 0.0 + 1e-3  # nearly flat input shows what was added
    g = torch.Generator().manual_seed(0)
    y, _ = augment_batch(x, mask, AugmentConfig(**{**OFF, "noise_p": 1.0, "noise_uv": (5.0, 5.0)}), g)
    std_uv = y.std(-1) * torch.tensor([DEFAULT_CONFIG.scale_uv[m] for m in MODALITIES])  # back to µV
    assert torch.allclose(std_uv, torch.full_like(std_uv, 5.0), rtol=0.1)
    x, mask = batch(1000)
    flat, _ = augment_batch(x, mask, AugmentConfig(**{**OFF, "flat_p": 0.5}), g)
    zero_run = (flat == 0).sum(-1) >= 2 * TARGET_FS  # >= 2 s of zeros
    assert 0.45 < float(zero_run.float().mean()) < 0.55


@pytest.mark.parametrize("subset_p, eeg_only_p", [(1.0, 0.0), (1.0, 1.0), (0.5, 0.4)])
def test_random_subsets_are_non_empty_and_keep_eeg_alone_at_the_configured_rate(subset_p, eeg_only_p):
    mask = torch.ones(4000, len(MODALITIES), dtype=torch.bool)
    mask[:1000, 0] = False  # a quarter of the windows have no EEG
    cfg = AugmentConfig(subset_p=subset_p, eeg_only_p=eeg_only_p)
    out = random_subsets(mask, cfg, torch.Generator().manual_seed(0))
    assert out.any(1).all() and not (out & ~mask).any()
    eeg_alone = (out == torch.tensor([True, False, False, False])).all(1)[1000:]
    expected = subset_p * eeg_only_p + subset_p * (1 - eeg_only_p) / 16
    assert abs(float(eeg_alone.float().mean()) - expected) < 0.04
    changed = (out != mask).any(1)
    assert float(changed.float().mean()) <= subset_p + 0.02
    assert np.isclose(float((~out[:1000, 0]).float().mean()), 1.0)  # EEG never appears where it was absent
