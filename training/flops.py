"""Model size and compute: parameter counts and FLOPs per window, measured with torch's FlopCounterMode.

FLOPs count matrix multiplies, convolutions and attention (2 per multiply-add), as FlopCounterMode does;
element-wise work (norms, activations, softmax) is not counted. `python -m training.flops` prints the tables
in docs/TRAINING.md: the early-fusion encoder + MultiMAE decoders of every named size, and the late-fusion
encoder + projection heads of the contrastive baselines (Appendix F).
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from .config import MODEL_SIZES, PretrainConfig
from .contrastive import ContrastiveModel
from .model import MultiMAE, MultiModalEncoder, count_parameters, plan_masking


def _sdpa_cpu_forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of CPU attention (QK^T and PV), which FlopCounterMode does not know: shapes [B, H, L, hd]."""
    b, h, lq, d = query
    lk, dv = key[-2], value[-1]
    return 2 * b * h * lq * lk * d + 2 * b * h * lq * lk * dv


def _sdpa_cpu_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    """Backward: dV = P^T dO, dP = dO V^T, dQ = dS K, dK = dS^T Q (twice the forward), as torch counts GPU kernels."""
    return 2 * _sdpa_cpu_forward(query, key, value)


_CPU_ATTENTION = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_forward,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward,
}


def flop_counter() -> FlopCounterMode:
    """FlopCounterMode that also counts attention on the CPU (on GPU torch's own formulas apply)."""
    return FlopCounterMode(display=False, custom_mapping=_CPU_ATTENTION)


def encoder_flops_per_window(encoder: MultiModalEncoder, batch: int = 2) -> float:
    """Forward FLOPs of the inference encoder (all modalities present, pooled embedding) per window."""
    x = torch.zeros(batch, len(encoder.cfg.modalities), encoder.cfg.n_chunks * encoder.cfg.chunk_samples)
    mask = torch.ones(batch, len(encoder.cfg.modalities), dtype=torch.bool)
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad(), flop_counter() as counter:
        encoder.pooled(x, mask)
    encoder.train(was_training)
    return counter.get_total_flops() / batch


def pretrain_flops_per_window(model: MultiMAE, pre: PretrainConfig, batch: int = 2) -> float:
    """Forward + backward FLOPs of one MultiMAE pretraining step per window (what MFU is measured against)."""
    cfg = model.cfg
    x = torch.zeros(batch, len(cfg.modalities), cfg.n_chunks * cfg.chunk_samples, device=next(model.parameters()).device)
    mask = torch.ones(batch, len(cfg.modalities), dtype=torch.bool)
    plan = plan_masking(mask, cfg, pre.keep_fraction, 0 if pre.modality_drop else None,
                        torch.Generator().manual_seed(0), device=x.device)
    with flop_counter() as counter:
        loss, _ = model(x, mask.to(x.device), plan.keep_idx, plan.keep_valid, plan.loss_mask)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


def contrastive_flops_per_window(model: ContrastiveModel, batch: int = 2) -> float:
    """Forward + backward FLOPs of one contrastive step per window (CLIP: one view; SimCLR: two)."""
    cfg = model.cfg
    x = torch.zeros(batch, len(cfg.modalities), cfg.n_chunks * cfg.chunk_samples)
    mask = torch.ones(batch, len(cfg.modalities), dtype=torch.bool)
    with flop_counter() as counter:
        loss, _ = model(x, mask, x, mask) if model.objective == "simclr" else model(x, mask)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch


def late_fusion_table() -> list[dict]:
    """Parameters and FLOPs of the late-fusion encoder and projection heads of every named size (clip-loo)."""
    rows = []
    for name, cfg in MODEL_SIZES.items():
        torch.manual_seed(0)
        model = ContrastiveModel(cfg.replace(fusion="late"), PretrainConfig(objective="clip-loo"))
        rows.append({
            "size": name,
            "encoder_params": count_parameters(model.encoder),
            "projection_params": count_parameters(model.projections),
            "encoder_gflop_per_window": encoder_flops_per_window(model.encoder) / 1e9,
            "pretrain_step_gflop_per_window": contrastive_flops_per_window(model) / 1e9,
        })
    return rows


def size_table() -> list[dict]:
    """Parameters and FLOPs of every named size."""
    rows = []
    for name, cfg in MODEL_SIZES.items():
        torch.manual_seed(0)
        model = MultiMAE(cfg)
        rows.append({
            "size": name,
            "d_model": cfg.d_model,
            "layers": cfg.n_layers,
            "heads": cfg.n_heads,
            "encoder_params": count_parameters(model.encoder),
            "decoder_params": count_parameters(model.decoders),
            "encoder_gflop_per_window": encoder_flops_per_window(model.encoder) / 1e9,
            "pretrain_step_gflop_per_window": pretrain_flops_per_window(model, PretrainConfig()) / 1e9,
        })
    return rows


def main() -> None:
    print("| size | d_model | layers | heads | encoder params | decoder params | encoder GFLOP/window | "
          "pretrain step GFLOP/window (fwd+bwd) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in size_table():
        print(f"| {r['size']} | {r['d_model']} | {r['layers']} | {r['heads']} | {r['encoder_params'] / 1e6:.2f} M | "
              f"{r['decoder_params'] / 1e6:.2f} M | {r['encoder_gflop_per_window']:.3f} | "
              f"{r['pretrain_step_gflop_per_window']:.3f} |")
    print()
    print("| size, late fusion | encoder params | projection params | encoder GFLOP/window | "
          "CLIP step GFLOP/window (fwd+bwd) |")
    print("|---|---|---|---|---|")
    for r in late_fusion_table():
        print(f"| {r['size']} | {r['encoder_params'] / 1e6:.2f} M | {r['projection_params'] / 1e6:.2f} M | "
              f"{r['encoder_gflop_per_window']:.3f} | {r['pretrain_step_gflop_per_window']:.3f} |")


if __name__ == "__main__":
    main()


