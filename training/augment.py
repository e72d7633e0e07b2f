"""Training-time augmentation of preprocessed windows: what real recordings vary, applied on the fly.

The window cache holds model input (`preprocessing.preprocess`: 100 Hz, per-modality µV scale). Real
recordings differ from our synthetic nights in ways the model must not care about, so every batch is
perturbed, per window and modality, before the model sees it:

- gain (electrode impedance, amplifier calibration, skull and skin; subjects differ by a factor of two
  in EEG amplitude, Carrier et al. 2001) and polarity (reversed derivations such as M2-F3, E2 vs E1
  EOG, inverted ECG leads);
- spectral tilt (per-subject and per-site 1/f slope, He 2014; Schneider et al. 2022 report slopes of
  -1 to -3 across people and ages) and the filter corners of other systems (hardware high-pass 0.3 to
  1 Hz; low-pass 25 Hz and below in systems recording at 50-100 Hz, e.g. the DREAMS excerpts);
- additive amplifier and electrode noise, slow drift and DC steps, electrode pops (fast step, slow
  exponential decay), EMG bursts leaking into EEG and EOG, flat stretches of a disconnected lead;
- which modalities a recording has: with `subset_p` the presence mask is cut to a random non-empty
  subset (EEG alone with `eeg_only_p`), so one model serves recordings that lack modalities.

Filters are applied as zero-phase magnitude responses in the FFT domain of the 30 s window; values are
re-clipped to the preprocessing clip. Everything is a tensor op over the batch: cheap next to the model.
All sizes in µV are converted with the preprocessing's per-modality scale.
"""

from __future__ import annotations

import math

import torch

from physioserve.modalities import MODALITIES, TARGET_FS, WINDOW_SAMPLES
from physioserve.preprocessing import DEFAULT_CONFIG, PreprocessingConfig

from .config import AugmentConfig

EEG, EOG, EMG, ECG = (MODALITIES.index(m) for m in ("eeg", "eog", "emg", "ecg"))


NO_AUGMENT = AugmentConfig(enabled=False)


def _uniform(shape, lo: float, hi: float, g: torch.Generator, device) -> torch.Tensor:
    return (lo + (hi - lo) * torch.rand(shape, generator=g)).to(device)


def _bernoulli(shape, p, g: torch.Generator, device) -> torch.Tensor:
    p = torch.as_tensor(p, dtype=torch.float32)
    return (torch.rand(shape, generator=g) < p).to(device)


def random_subsets(mask: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Presence mask [B, M] cut to a random non-empty subset of each row's present modalities."""
    n, m = mask.shape
    cut = torch.rand(n, generator=g) < cfg.subset_p  # [B]
    eeg_only = torch.rand(n, generator=g) < cfg.eeg_only_p  # [B]
    keep = torch.rand(n, m, generator=g) < 0.5  # [B, M]
    keep[eeg_only] = torch.tensor([i == EEG for i in range(m)])
    mask_cpu = mask.cpu()
    new = mask_cpu & keep
    empty = ~new.any(1)
    new[empty] = mask_cpu[empty]  # nothing left: keep the row as it was
    out = torch.where(cut[:, None], new, mask_cpu)
    return out.to(mask.device)


def augment_batch(
    signals: torch.Tensor,
    mask: torch.Tensor,
    cfg: AugmentConfig,
    g: torch.Generator,
    pre: PreprocessingConfig = DEFAULT_CONFIG,
) -> tuple[torch.Tensor, torch.Tensor]:
    """signals [B, M, S] (preprocessed), mask [B, M] -> perturbed copies (see the module doc).

    Random draws come from the CPU generator `g` (reproducible on any device). Absent modalities stay
    untouched: the model ignores them.
    """
    if not cfg.enabled:
        return signals, mask
    device = signals.device
    n, m, s = signals.shape
    scale = torch.tensor([pre.scale_uv[mod] for mod in MODALITIES], device=device)[None, :, None]  # [1, M, 1]
    x = signals.float()

    # spectrum: tilt, high-pass, low-pass as zero-phase magnitude responses
    freqs = torch.fft.rfftfreq(s, 1.0 / TARGET_FS).to(device)[None, None, :]  # [1, 1, F]
    spec = torch.fft.rfft(x, dim=-1)  # [B, M, F]
    tilt = _uniform((n, m, 1), -cfg.tilt_max, cfg.tilt_max, g, device) * _bernoulli((n, m, 1), cfg.tilt_p, g, device)
    response = (freqs.clamp(min=0.5) / 8.0) ** tilt  # [B, M, F]
    hp_on = _bernoulli((n, m, 1), cfg.highpass_p, g, device)
    hp = _uniform((n, m, 1), *cfg.highpass_hz, g, device)
    response = response * torch.where(hp_on, 1.0 / torch.sqrt(1.0 + (hp / freqs.clamp(min=1e-3)) ** 4), 1.0)
    lp_on = _bernoulli((n, m, 1), cfg.lowpass_p, g, device)
    lp_on[:, ECG] = False
    lp = _uniform((n, m, 1), *cfg.lowpass_hz, g, device)
    response = response * torch.where(lp_on, 1.0 / torch.sqrt(1.0 + (freqs / lp) ** 8), 1.0)
    x = torch.fft.irfft(spec * response, n=s, dim=-1)  # [B, M, S]

    # amplitude and polarity
    gain = torch.exp(cfg.gain_sigma * torch.randn(n, m, 1, generator=g)).to(device)
    sign = torch.where(_bernoulli((n, m, 1), torch.tensor(cfg.polarity_p)[None, :, None], g, device), -1.0, 1.0)
    x = x * gain * sign

    t = torch.arange(s, device=device, dtype=torch.float32)[None, None, :] / TARGET_FS  # [1, 1, S] seconds
    # additive noise (µV -> model units)
    noise_on = _bernoulli((n, m, 1), cfg.noise_p, g, device)
    noise_uv = _uniform((n, m, 1), *cfg.noise_uv, g, device)
    x = x + noise_on * noise_uv / scale * torch.randn(n, m, s, generator=g).to(device)
    # slow drift: half a cycle of a 0.02-0.2 Hz sine, or a DC step at a random time
    drift_on = _bernoulli((n, m, 1), cfg.drift_p, g, device)
    freq = _uniform((n, m, 1), 0.02, 0.2, g, device)
    phase = _uniform((n, m, 1), 0, 2 * math.pi, g, device)
    step_at = _uniform((n, m, 1), 0, WINDOW_SAMPLES / TARGET_FS, g, device)
    is_step = _bernoulli((n, m, 1), 0.5, g, device)
    amp = cfg.drift_uv * torch.randn(n, m, 1, generator=g).to(device) / scale
    shape = torch.where(is_step, (t >= step_at).float() - 0.5, torch.sin(2 * math.pi * freq * t + phase))
    x = x + drift_on * amp * shape
    # electrode pop: a jump that decays over 0.2-1 s
    pop_on = _bernoulli((n, m, 1), cfg.pop_p, g, device)
    pop_at = _uniform((n, m, 1), 0, WINDOW_SAMPLES / TARGET_FS, g, device)
    tau = _uniform((n, m, 1), 0.2, 1.0, g, device)
    pop_amp = cfg.pop_uv * torch.randn(n, m, 1, generator=g).to(device) / scale
    after = (t - pop_at).clamp(min=0)
    x = x + pop_on * pop_amp * torch.where(t >= pop_at, torch.exp(-after / tau), 0.0)
    # EMG burst: 20-45 Hz noise for 0.5-5 s, in EEG, EOG and EMG at once (a movement or a swallow)
    burst_on = _bernoulli((n, 1, 1), cfg.burst_p, g, device)
    b_start = _uniform((n, 1, 1), 0, WINDOW_SAMPLES / TARGET_FS, g, device)
    b_len = _uniform((n, 1, 1), 0.5, 5.0, g, device)
    inside = ((t >= b_start) & (t < b_start + b_len)).float()  # [B, 1, S]
    band = torch.fft.rfft(torch.randn(n, 1, s, generator=g).to(device), dim=-1)
    band = torch.fft.irfft(band * ((freqs >= 20) & (freqs <= 45)), n=s, dim=-1)
    band = band / band.std(dim=-1, keepdim=True).clamp(min=1e-6)
    which = torch.tensor([1.0, 1.0, 2.0, 0.0], device=device)[None, :, None]  # stronger in the chin EMG
    x = x + burst_on * inside * band * which * cfg.burst_uv / scale
    # lead off: a flat stretch of 2-15 s
    flat_on = _bernoulli((n, m, 1), cfg.flat_p, g, device)
    f_start = _uniform((n, m, 1), 0, WINDOW_SAMPLES / TARGET_FS, g, device)
    f_len = _uniform((n, m, 1), 2.0, 15.0, g, device)
    flat = flat_on & (t >= f_start) & (t < f_start + f_len)
    x = torch.where(flat, 0.0, x)

    x = x.clamp(-pre.clip, pre.clip)
    x = torch.where(mask[:, :, None], x, signals.float())  # absent modalities untouched
    new_mask = random_subsets(mask, cfg, g) if cfg.subset_p > 0 else mask
    return x.to(signals.dtype), new_mask
