"""The multimodal encoder and its MultiMAE pretraining model (paper §3.2-3.3).

Read top to bottom: attention and pre-LN blocks -> per-modality tokenizer -> `MultiModalEncoder`
(what probing and the ONNX model use; early fusion, or late fusion for the contrastive baselines of
Appendix F) -> masking plan -> `MultiMAE` (encoder + per-modality decoders, `forward_encoder` /
`forward_decoder` / `forward_loss`).

Shapes: B batch, M modalities (4), T tokens per modality (30), C samples per token (100),
N = M * T tokens (120), K kept tokens, D model width, S samples per window (3000).

Attention goes through `F.scaled_dot_product_attention` with an explicit key mask (`key_bias`: an
additive bias built from the boolean key validity, True = attend): no fused module paths, no Python
branches on tensor values, so the encoder exports to ONNX with a dynamic batch. The attention weights (for the §4.4 analyses) come from a separate, opt-in path
(`forward_with_weights`, `MultiModalEncoder.forward_analysis`) that the exported forward never takes.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from physioserve.modalities import MODALITIES

from .config import ModelConfig


def sinusoidal_positions(n: int, dim: int) -> torch.Tensor:
    """Fixed sine/cosine position table [n, dim] (Vaswani et al.)."""
    position = torch.arange(n, dtype=torch.float32)[:, None]  # [n, 1]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))  # [dim/2]
    table = torch.zeros(n, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table


def key_bias(key_valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """key_valid [B, Lk] bool -> additive attention bias [B, 1, 1, Lk]: 0 where valid, the dtype's lowest
    finite value elsewhere. exp() of it underflows to exactly 0, so attention equals the boolean mask's
    (bit for bit in the exported graph, bench/attention_mask.py) while ONNX Runtime runs one Add instead of
    the exporter's Where / IsNaN guards: 1.19x windows/s at small size, 1.09x at paper size (2 CPU threads,
    batch 16, docs/BENCHMARKS.md). Every row keeps at least one valid key (a window has a modality)."""
    bias = torch.zeros(key_valid.shape, dtype=dtype, device=key_valid.device)  # [B, Lk]
    return bias.masked_fill(~key_valid, torch.finfo(dtype).min)[:, None, None, :]  # [B, 1, 1, Lk]


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_valid: torch.Tensor | None, dropout: float):
    """q [B, H, Lq, hd], k/v [B, H, Lk, hd], key_valid [B, Lk] bool -> [B, Lq, H * hd]."""
    mask = None if key_valid is None else key_bias(key_valid, q.dtype)  # [B, 1, 1, Lk]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)  # [B, H, Lq, hd]
    return out.transpose(1, 2).flatten(2)  # [B, Lq, H * hd]


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        qkv = self.qkv(x).unflatten(-1, (3, self.heads, -1))  # [B, L, 3, H, hd]
        return qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [B, H, L, hd]

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self._qkv(x)
        out = _attend(q, k, v, key_valid, self.dropout if self.training else 0.0)  # [B, L, D]
        return self.proj_drop(self.proj(out))

    def forward_with_weights(self, x: torch.Tensor, key_valid: torch.Tensor | None = None):
        """The same function computed explicitly (no dropout), also returning softmax(QK^T / sqrt(hd)) [B, H, L, L]."""
        q, k, v = self._qkv(x)
        scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5  # [B, H, L, L]
        if key_valid is not None:
            scores = scores.masked_fill(~key_valid[:, None, None, :], float("-inf"))
        weights = scores.softmax(-1)  # [B, H, L, L]
        out = (weights @ v).transpose(1, 2).flatten(2)  # [B, L, D]
        return self.proj(out), weights


class CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor, key_valid: torch.Tensor | None = None) -> torch.Tensor:
        q = self.q(x).unflatten(-1, (self.heads, -1)).transpose(1, 2)  # [B, H, Lq, hd]
        kv = self.kv(context).unflatten(-1, (2, self.heads, -1))  # [B, Lk, 2, H, hd]
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # 2 x [B, H, Lk, hd]
        out = _attend(q, k, v, key_valid, self.dropout if self.training else 0.0)  # [B, Lq, D]
        return self.proj_drop(self.proj(out))


class Mlp(nn.Sequential):
    def __init__(self, dim: int, ratio: float, dropout: float):
        hidden = int(dim * ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout))


class Block(nn.Module):
    """Pre-LN transformer layer: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_valid)
        return x + self.mlp(self.norm2(x))

    def forward_with_weights(self, x: torch.Tensor, key_valid: torch.Tensor | None = None):
        """(output, attention weights [B, H, L, L]); the analysis path (eval mode)."""
        out, weights = self.attn.forward_with_weights(self.norm1(x), key_valid)
        x = x + out
        return x + self.mlp(self.norm2(x)), weights


class CrossBlock(nn.Module):
    """Pre-LN cross-attention layer: queries attend to a context, then an MLP (MultiMAE's decoder)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.norm_q = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio, dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor, key_valid: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm_q(x), self.norm_context(context), key_valid)
        return x + self.mlp(self.norm2(x))


class TransformerEncoder(nn.Module):
    """The shared encoder: pre-LN blocks + final LayerNorm. Knows nothing of modalities."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, key_valid: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, key_valid)
        return self.norm(x)

    def forward_layers(self, x: torch.Tensor, key_valid: torch.Tensor | None = None):
        """(final output [B, L, D], each block's output [B, L, D] x depth, each block's attention [B, H, L, L] x depth)."""
        hidden, attention = [], []
        for block in self.blocks:
            x, weights = block.forward_with_weights(x, key_valid)
            hidden.append(x)
            attention.append(weights)
        return self.norm(x), hidden, attention


class ModalityTokenizer(nn.Module):
    """One modality's adapter: 1 s chunks -> Conv1d -> ReLU -> max-pool -> Linear -> LayerNorm, + modality embedding.

    ReLU is monotone, so ReLU-then-max-pool equals max-pool-then-ReLU, values and gradients alike; the
    pool runs first because that applies the activation to pool_size times fewer values.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.chunk, self.n_chunks, self.dim = cfg.chunk_samples, cfg.n_chunks, cfg.d_model
        self.conv = nn.Conv1d(1, cfg.conv_channels, cfg.conv_kernel, padding=cfg.conv_kernel // 2)
        self.pool = nn.MaxPool1d(cfg.pool_size)
        self.proj = nn.Linear(cfg.conv_channels * (cfg.chunk_samples // cfg.pool_size), cfg.d_model)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.modality_embedding = nn.Parameter(torch.zeros(cfg.d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, S] -> tokens [B, T, D] (without position embedding)."""
        x = x.reshape(-1, 1, self.chunk)  # [B*T, 1, C]
        x = F.relu(self.pool(self.conv(x)))  # [B*T, K, C/p] (= pool(relu(conv)))
        x = self.norm(self.proj(x.flatten(1)))  # [B*T, D]
        return x.reshape(-1, self.n_chunks, self.dim) + self.modality_embedding  # [B, T, D]


def _init_weights(module: nn.Module) -> None:
    """MAE-style init: xavier-uniform Linear weights, zero biases; LayerNorm and Conv1d at torch defaults."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class MultiModalEncoder(nn.Module):
    """Tokenizers (nn.ModuleDict keyed by modality) + transformer(s). Absent modalities are key-padded.

    Input is always the model input: signals [B, 4, S] and modality_mask [B, 4] in MODALITIES order; an
    encoder of fewer modalities (`cfg.modalities`, e.g. a unimodal MAE) ignores the others. Early fusion
    (`cfg.fusion == "early"`, the paper's model): one shared transformer over all tokens. Late fusion
    (the contrastive baselines): one transformer per modality over that modality's tokens only.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        # None: all four modalities, input taken as it is (the exported graph of the paper's model)
        self.input_index = None if tuple(cfg.modalities) == MODALITIES else [MODALITIES.index(m) for m in cfg.modalities]
        self.tokenizers = nn.ModuleDict({m: ModalityTokenizer(cfg) for m in cfg.modalities})
        self.register_buffer("pos_embedding", sinusoidal_positions(cfg.n_chunks, cfg.d_model), persistent=False)
        layers = (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.mlp_ratio, cfg.dropout)
        if cfg.fusion == "early":
            self.transformer = TransformerEncoder(*layers)
        else:
            self.transformers = nn.ModuleDict({m: TransformerEncoder(*layers) for m in cfg.modalities})
        _init_weights(self)
        for tokenizer in self.tokenizers.values():
            nn.init.trunc_normal_(tokenizer.modality_embedding, std=0.02)

    def select_inputs(self, signals: torch.Tensor, modality_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Model input [B, 4, S], [B, 4] -> this encoder's modalities [B, M, S], [B, M] (as is for all four)."""
        if self.input_index is None:
            return signals, modality_mask
        return signals[:, self.input_index], modality_mask[:, self.input_index]

    def tokenize(self, signals: torch.Tensor, modality_mask: torch.Tensor) -> torch.Tensor:
        """signals [B, M, S], modality_mask [B, M] (this encoder's modalities) -> tokens [B, N, D], N = M * T.

        Absent modalities' samples are replaced by zeros first, so their values (even NaN) never matter.
        """
        signals = torch.where(modality_mask[:, :, None], signals, 0.0)  # [B, M, S]
        tokens = [tok(signals[:, i]) + self.pos_embedding for i, tok in enumerate(self.tokenizers.values())]
        return torch.cat(tokens, dim=1)  # [B, M*T, D]

    def token_presence(self, modality_mask: torch.Tensor) -> torch.Tensor:
        """[B, M] bool -> [B, N] bool: each modality's flag repeated over its T tokens."""
        return modality_mask[:, :, None].expand(-1, -1, self.cfg.n_chunks).flatten(1)  # [B, M*T]

    def encode(self, signals: torch.Tensor, modality_mask: torch.Tensor) -> torch.Tensor:
        """Encoder modalities' signals [B, M, S] and mask [B, M] -> all tokens after the final LayerNorm [B, N, D]."""
        tokens = self.tokenize(signals, modality_mask)  # [B, N, D]
        if self.cfg.fusion == "late":  # a modality's tokens are all present or all absent: no key mask needed
            blocks = tokens.unflatten(1, (len(self.cfg.modalities), self.cfg.n_chunks))  # [B, M, T, D]
            out = [tf(blocks[:, i]) for i, tf in enumerate(self.transformers.values())]  # M x [B, T, D]
            return torch.cat(out, dim=1)  # [B, N, D]
        valid = self.token_presence(modality_mask)  # [B, N]
        if self.input_index is not None:  # none of this encoder's modalities present: finite output, pooled to 0
            valid = valid | ~valid.any(1, keepdim=True)
        return self.transformer(tokens, key_valid=valid)  # [B, N, D]

    def forward_features(self, signals: torch.Tensor, modality_mask: torch.Tensor) -> torch.Tensor:
        """All tokens after the final LayerNorm: [B, N, D]; absent modalities are padding keys."""
        return self.encode(*self.select_inputs(signals, modality_mask))  # [B, N, D]

    def pooled(self, signals: torch.Tensor, modality_mask: torch.Tensor) -> torch.Tensor:
        """Mean over present tokens: [B, D] (the embedding that probes and the service use)."""
        signals, modality_mask = self.select_inputs(signals, modality_mask)
        tokens = self.encode(signals, modality_mask)  # [B, N, D]
        weight = self.token_presence(modality_mask).unsqueeze(-1).to(tokens.dtype)  # [B, N, 1]
        return (tokens * weight).sum(1) / weight.sum(1).clamp(min=1.0)  # [B, D]

    forward = pooled

    @torch.no_grad()
    def forward_analysis(self, signals: torch.Tensor, modality_mask: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        """The opt-in analysis path (never exported): per block, its output tokens [B, N, D] ("hidden") and its
        attention weights [B, H, N, N] ("attention"; block-diagonal for late fusion). Run in eval mode."""
        signals, modality_mask = self.select_inputs(signals, modality_mask)
        tokens = self.tokenize(signals, modality_mask)  # [B, N, D]
        if self.cfg.fusion == "early":
            valid = self.token_presence(modality_mask)
            if self.input_index is not None:
                valid = valid | ~valid.any(1, keepdim=True)
            _, hidden, attention = self.transformer.forward_layers(tokens, valid)
            return {"hidden": hidden, "attention": attention}
        n_mod, n_chunks = len(self.cfg.modalities), self.cfg.n_chunks
        blocks = tokens.unflatten(1, (n_mod, n_chunks))  # [B, M, T, D]
        runs = [tf.forward_layers(blocks[:, i]) for i, tf in enumerate(self.transformers.values())]
        hidden = [torch.cat([r[1][layer] for r in runs], dim=1) for layer in range(self.cfg.n_layers)]  # [B, N, D]
        attention = [_tile_blocks([r[2][layer] for r in runs]) for layer in range(self.cfg.n_layers)]  # [B, H, N, N]
        return {"hidden": hidden, "attention": attention}


def _tile_blocks(parts: list[torch.Tensor]) -> torch.Tensor:
    """M blocks [B, H, T, T] -> [B, H, M*T, M*T] with block i at (i, i) and zeros elsewhere."""
    n_batch, heads, t, _ = parts[0].shape
    m = len(parts)
    out = parts[0].new_zeros(n_batch, heads, m * t, m * t)
    for i, block in enumerate(parts):
        out[:, :, i * t : (i + 1) * t, i * t : (i + 1) * t] = block
    return out


class MaskPlan(NamedTuple):
    """Which tokens the encoder sees, per sample, and which ones the loss reconstructs."""

    keep_idx: torch.Tensor  # [B, K] int64 token indices; slot k is real iff keep_valid[b, k]
    keep_valid: torch.Tensor  # [B, K] bool
    loss_mask: torch.Tensor  # [B, N] bool: present and not kept (dropped modality included)
    dropped: torch.Tensor  # [B, M] bool: the modality dropped whole in this sample


def kept_token_count(cfg: ModelConfig, keep_fraction: float, modality_drop: bool) -> int:
    """K: kept tokens of a sample with every modality present (36 of 120, or 36 of the 90 left by a drop)."""
    available = cfg.n_tokens - (cfg.n_chunks if modality_drop else 0)
    return max(1, int(round(keep_fraction * available)))


def plan_masking(
    modality_mask: torch.Tensor,
    cfg: ModelConfig,
    keep_fraction: float,
    drop_modality: int | None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> MaskPlan:
    """Random masking with a fixed kept count per sample (MultiMAE), optionally with a modality dropped whole.

    Available tokens = present modalities minus the dropped one; the dropped modality is dropped only in
    samples that keep another present modality (a sample never loses all its input). Each sample keeps
    round(keep_fraction * available) tokens, chosen uniformly among its available ones; K, the slot count,
    is the full-sample count (a Python int: no host sync, static shapes). The plan is drawn on the CPU
    from `generator` (reproducible whatever the device; pass the CPU copy of the mask to avoid a sync)
    and moved to `device` (default: the mask's).
    """
    device = modality_mask.device if device is None else device
    mask_cpu = modality_mask.cpu()  # [B, M]
    n_batch, n_mod = mask_cpu.shape
    n_chunks = cfg.n_chunks
    dropped = torch.zeros_like(mask_cpu)  # [B, M]
    if drop_modality is not None:
        one_hot = torch.zeros(n_mod, dtype=torch.bool)
        one_hot[drop_modality] = True
        keeps_other = (mask_cpu & ~one_hot).any(1, keepdim=True)  # [B, 1]
        dropped = mask_cpu & one_hot & keeps_other  # [B, M]
    available = (mask_cpu & ~dropped)[:, :, None].expand(-1, -1, n_chunks).flatten(1)  # [B, N]
    n_keep = (available.sum(1).float() * keep_fraction).round().clamp(min=1).long()  # [B]
    slots = kept_token_count(cfg, keep_fraction, drop_modality is not None)
    noise = torch.rand(available.shape, generator=generator)  # [B, N]
    noise = noise.masked_fill(~available, 2.0)  # unavailable tokens sort last
    keep_idx = noise.argsort(dim=1)[:, :slots]  # [B, K]
    keep_valid = torch.arange(slots)[None, :] < n_keep[:, None]  # [B, K]
    kept = torch.zeros_like(available).scatter(1, keep_idx, keep_valid)  # [B, N]
    present = mask_cpu[:, :, None].expand(-1, -1, n_chunks).flatten(1)  # [B, N]
    loss_mask = present & ~kept  # [B, N]
    move = dict(device=device, non_blocking=True)
    return MaskPlan(keep_idx.to(**move), keep_valid.to(**move), loss_mask.to(**move), dropped.to(**move))


class ModalityDecoder(nn.Module):
    """One modality's decoder: its T queries (kept tokens' encoder outputs, mask tokens elsewhere, +
    position + modality embeddings) cross-attend to the encoder output, then a transformer layer,
    then Linear -> C samples per token."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        dim = cfg.decoder_dim
        self.context_proj = nn.Linear(cfg.d_model, dim)
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.modality_embedding = nn.Parameter(torch.zeros(dim))
        self.register_buffer("pos_embedding", sinusoidal_positions(cfg.n_chunks, dim), persistent=False)
        self.cross = CrossBlock(dim, cfg.decoder_heads, cfg.mlp_ratio, cfg.decoder_dropout)
        self.blocks = nn.ModuleList(
            Block(dim, cfg.decoder_heads, cfg.mlp_ratio, cfg.decoder_dropout) for _ in range(cfg.decoder_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, cfg.chunk_samples)

    def forward(
        self, queries: torch.Tensor, kept: torch.Tensor, context: torch.Tensor, context_valid: torch.Tensor
    ) -> torch.Tensor:
        """queries [B, T, D] (encoder outputs scattered to their positions), kept [B, T] bool,
        context [B, K, D], context_valid [B, K] -> reconstruction [B, T, C]."""
        q = self.context_proj(queries)  # [B, T, Dd]
        q = torch.where(kept[:, :, None], q, self.mask_token) + self.pos_embedding + self.modality_embedding
        x = self.cross(q, self.context_proj(context), context_valid)  # [B, T, Dd]
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))  # [B, T, C]


class MultiMAE(nn.Module):
    """Encoder + one decoder per modality, trained to reconstruct masked 1 s chunks (MSE).

    Signals and masks here are in the encoder's modalities ([B, M, S], [B, M]; `encoder.select_inputs`
    makes them from model input): M = 4 for the paper's model, 1 for a unimodal MAE.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.fusion != "early":
            raise ValueError("MultiMAE needs an early-fusion encoder (fusion 'early'); late fusion is for the "
                             "contrastive objectives")
        self.cfg = cfg
        self.encoder = MultiModalEncoder(cfg)
        self.decoders = nn.ModuleDict({m: ModalityDecoder(cfg) for m in cfg.modalities})
        _init_weights(self.decoders)
        for decoder in self.decoders.values():
            nn.init.trunc_normal_(decoder.mask_token, std=0.02)
            nn.init.trunc_normal_(decoder.modality_embedding, std=0.02)

    def forward_encoder(
        self, signals: torch.Tensor, modality_mask: torch.Tensor, keep_idx: torch.Tensor, keep_valid: torch.Tensor
    ) -> torch.Tensor:
        """Encode the kept tokens only: [B, K, D]. Padding slots (keep_valid False) are masked keys."""
        tokens = self.encoder.tokenize(signals, modality_mask)  # [B, N, D]
        # gather's backward reaches every tokenizer, so no parameter is ever unused (DDP needs no
        # find_unused_parameters even when a modality is dropped)
        kept = tokens.gather(1, keep_idx[:, :, None].expand(-1, -1, tokens.shape[-1]))  # [B, K, D]
        return self.encoder.transformer(kept, key_valid=keep_valid)  # [B, K, D]

    def forward_decoder(self, encoded: torch.Tensor, keep_idx: torch.Tensor, keep_valid: torch.Tensor) -> torch.Tensor:
        """Per-modality reconstructions [B, M, T, C] from the encoded kept tokens [B, K, D]."""
        n_batch, _, dim = encoded.shape
        cfg = self.cfg
        index = keep_idx[:, :, None].expand(-1, -1, dim)  # [B, K, D]
        full = encoded.new_zeros(n_batch, cfg.n_tokens, dim).scatter(1, index, encoded)  # [B, N, D]
        kept = torch.zeros(n_batch, cfg.n_tokens, dtype=torch.bool, device=encoded.device)
        kept = kept.scatter(1, keep_idx, keep_valid)  # [B, N]; padding slots stay False -> mask tokens
        full = full.reshape(n_batch, len(cfg.modalities), cfg.n_chunks, dim)  # [B, M, T, D]
        kept = kept.reshape(n_batch, len(cfg.modalities), cfg.n_chunks)  # [B, M, T]
        preds = [dec(full[:, i], kept[:, i], encoded, keep_valid) for i, dec in enumerate(self.decoders.values())]
        return torch.stack(preds, dim=1)  # [B, M, T, C]

    def forward_loss(
        self, signals: torch.Tensor, pred: torch.Tensor, loss_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """MSE over masked present tokens only (float32). Returns (loss, per-modality loss [M])."""
        n_batch, n_mod = signals.shape[:2]
        target = signals.reshape(n_batch, n_mod, self.cfg.n_chunks, self.cfg.chunk_samples)  # [B, M, T, C]
        err = (pred.float() - target.float()).pow(2).mean(-1)  # [B, M, T]
        weight = loss_mask.reshape(n_batch, n_mod, self.cfg.n_chunks).to(err.dtype)  # [B, M, T]
        loss = (err * weight).sum() / weight.sum().clamp(min=1.0)
        per_modality = (err * weight).sum((0, 2)) / weight.sum((0, 2)).clamp(min=1.0)  # [M]
        return loss, per_modality.detach()

    def forward(
        self,
        signals: torch.Tensor,
        modality_mask: torch.Tensor,
        keep_idx: torch.Tensor,
        keep_valid: torch.Tensor,
        loss_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One pretraining forward: (loss, per-modality loss [M])."""
        encoded = self.forward_encoder(signals, modality_mask, keep_idx, keep_valid)  # [B, K, D]
        pred = self.forward_decoder(encoded, keep_idx, keep_valid)  # [B, M, T, C]
        return self.forward_loss(signals, pred, loss_mask)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
