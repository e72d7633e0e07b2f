"""The figures of `physioserve analyze` (matplotlib, Agg): shaped like the paper's Figure 2, Appendix G and
Figure 4. Every function takes what `training.analyze` computed and writes one PNG; returns its path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

COLOURS = {"eeg": "tab:blue", "eog": "tab:orange", "emg": "tab:green", "ecg": "tab:red"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _token_axes(ax, modalities: list[str], n_chunks: int = 30) -> None:
    """Modality block lines and labels on a token x token matrix."""
    edges = np.arange(1, len(modalities)) * n_chunks - 0.5
    for e in edges:
        ax.axhline(e, color="white", lw=0.6)
        ax.axvline(e, color="white", lw=0.6)
    centres = (np.arange(len(modalities)) + 0.5) * n_chunks - 0.5
    ax.set_xticks(centres, [m.upper() for m in modalities], fontsize=7)
    ax.set_yticks(centres, [m.upper() for m in modalities], fontsize=7)


def _matrix(ax, matrix: np.ndarray, modalities: list[str], title: str) -> None:
    vmax = float(np.percentile(matrix, 99)) or 1.0
    ax.imshow(matrix, cmap="viridis", vmin=0.0, vmax=vmax, interpolation="nearest")
    _token_axes(ax, modalities)
    ax.set_title(title, fontsize=8)


def plot_rollout(arrays: dict[str, dict], path: Path) -> Path:
    """Figure 2A-C: attention rollout per encoder (query tokens down, key tokens across)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(arrays), figsize=(3.4 * len(arrays), 3.6), squeeze=False)
    for ax, (name, a) in zip(axes[0], arrays.items()):
        _matrix(ax, a["rollout"], a["modalities"], f"{name}: attention rollout")
        ax.set_xlabel("key token (1 s each)", fontsize=7)
        ax.set_ylabel("query token", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def plot_attention_layers(arrays: dict[str, dict], path: Path) -> Path:
    """Appendix G: raw attention (mean over heads and windows) per layer (columns) and encoder (rows)."""
    plt = _pyplot()
    layers = max(len(a["raw"]) for a in arrays.values())
    fig, axes = plt.subplots(len(arrays), layers, figsize=(2.2 * layers, 2.4 * len(arrays)), squeeze=False)
    for row, (name, a) in zip(axes, arrays.items()):
        for i, ax in enumerate(row):
            if i < len(a["raw"]):
                _matrix(ax, a["raw"][i], a["modalities"], f"{name}, layer {i + 1}")
            else:
                ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_rsv(numbers: dict[str, dict], kind: str, path: Path) -> Path:
    """Figure 2D-F: mean relative source variance per modality and layer (stacked), and the units' mean
    normalised entropy per layer (1: every unit equally driven by all modalities)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(numbers) + 1, figsize=(3.2 * (len(numbers) + 1), 3.2), squeeze=False)
    for ax, (name, n) in zip(axes[0], numbers.items()):
        layers = n["rsv"][kind]
        bottom = np.zeros(len(layers))
        for j, m in enumerate(n["modalities"]):
            values = np.array([layer["mean_rsv"][j] for layer in layers])
            ax.bar(np.arange(1, len(layers) + 1), values, bottom=bottom, color=COLOURS[m], label=m.upper())
            bottom += values
        ax.set_title(f"{name}: mean RSV ({kind})", fontsize=8)
        ax.set_xlabel("layer", fontsize=7)
        ax.set_ylim(0, 1)
    axes[0][0].legend(fontsize=6, loc="lower left")
    ax = axes[0][-1]
    for name, n in numbers.items():
        layers = n["rsv"][kind]
        ax.plot(np.arange(1, len(layers) + 1), [layer["entropy"] for layer in layers], marker="o", label=name)
    ax.set_title("units' RSV entropy (normalised)", fontsize=8)
    ax.set_xlabel("layer", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def plot_reconstructions(models: dict, signals: torch.Tensor, mask: torch.Tensor, path: Path) -> Path:
    """Figure 4: one window, each modality (rows): the signal (grey) and each MultiMAE's reconstruction
    (colour) on masked tokens (shaded), under random masking (0.7) and with that modality dropped whole."""
    from physioserve.modalities import MODALITIES, TARGET_FS

    from .analysis import reconstruct

    plt = _pyplot()
    columns = [(name, drop) for name in models for drop in (False, True)]
    fig, axes = plt.subplots(len(MODALITIES), len(columns), figsize=(4.0 * len(columns), 1.6 * len(MODALITIES)),
                             squeeze=False, sharex=True)
    t = np.arange(signals.shape[-1]) / TARGET_FS
    for c, (name, drop) in enumerate(columns):
        model = models[name]
        mods = list(model.cfg.modalities)
        for r, m in enumerate(MODALITIES):
            ax = axes[r][c]
            if m not in mods or (drop and len(mods) == 1):
                ax.axis("off")
                continue
            i = mods.index(m)
            pred, loss_mask, target = reconstruct(model, signals, mask, i if drop else None, 0.4 if drop else 0.3)
            y = target[0, i].float().cpu().numpy()
            p = pred[0, i].reshape(-1).float().cpu().numpy()
            masked = loss_mask[0].reshape(len(mods), -1)[i].cpu().numpy()  # [T]: tokens the decoder rebuilt
            for k, hidden in enumerate(masked):
                if hidden:
                    ax.axvspan(k, k + 1, color="0.92", lw=0)
            ax.plot(t, y, color="0.5", lw=0.5)
            shown = np.where(np.repeat(masked, len(p) // len(masked)), p, np.nan)
            ax.plot(t, shown, color=COLOURS[m], lw=0.6)
            ax.set_ylabel(m.upper(), fontsize=7)
            if r == 0:
                ax.set_title(f"{name}: {'this modality dropped whole' if drop else 'random mask 0.7'}", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("s", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
