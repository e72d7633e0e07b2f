"""`physioserve analyze`: the §4.4 figures and numbers of encoders side by side (torch; ONNX untouched).

    physioserve analyze --data CACHE --out figures/ --encoder scratch=probes/scratch \\
        --encoder MultiMAE=runs/nodrop/encoder.pt --encoder "MultiMAE + drop"=runs/drop/encoder.pt

Each `--encoder NAME=PATH` is a pretraining run's encoder.pt / checkpoint.pt / best.pt (decoders
included, so its reconstructions are drawn) or a probe folder / its model.pt (the encoder the heads
read, e.g. a scratch model). On `--windows` windows of the `--split` (default test) with every modality
present, evenly spaced over its nights, OUT gets:

- rollout.png: attention rollout per encoder (Figure 2A-C), 120 x 120 tokens with modality blocks;
- attention_layers.png: raw attention per layer and encoder (Appendix G);
- rsv.png: relative source variance per layer (Figure 2D-F): mean RSV per modality, units' entropy;
- reconstructions.png: an example window under random masking and with each modality dropped whole;
- analysis.json: every matrix and number behind the figures, block summaries, reconstruction errors.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from physioserve.modalities import MODALITIES

HELP = "attention rollout, raw attention, relative source variance and reconstructions of encoders (paper §4.4)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--encoder", action="append", required=True, metavar="NAME=PATH",
                        help="an encoder to analyse (repeat): NAME=RUN_DIR/encoder.pt, checkpoint.pt, or a probe folder")
    parser.add_argument("--data", required=True, type=Path, help="window cache")
    parser.add_argument("--out", required=True, type=Path, help="folder for the PNGs and analysis.json")
    parser.add_argument("--split", default="test", choices=("train", "val", "test", "pretrain"))
    parser.add_argument("--windows", type=int, default=64, help="windows to average over (default 64)")
    parser.add_argument("--references", type=int, default=4, help="RSV: reference windows per modality (default 4)")
    parser.add_argument("--rsv", choices=("share", "softmax"), default="share",
                        help="RSV normalisation across modalities in the figure: each modality's share of the summed "
                             "source variance (default; scale-free) or their softmax (uniform whenever the variances "
                             "are small, as they are in these models); analysis.json has both")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--threads", type=int)


def load_encoder(path: Path) -> tuple[torch.nn.Module, dict | None, dict]:
    """(eval MultiModalEncoder, MultiMAE decoder state or None, configs) of any file this package writes."""
    from .config import ModelConfig
    from .model import MultiModalEncoder
    from .runtime import load_checkpoint

    if path.is_dir():
        path = path / "model.pt" if (path / "model.pt").exists() else path / "encoder.pt"
    if not path.exists():
        raise FileNotFoundError(f"--encoder: {path} does not exist; give RUN_DIR/encoder.pt or a probe folder")
    blob = load_checkpoint(path)
    kind = blob.get("kind")
    if kind in ("encoder", "inference"):
        encoder_state, decoders = blob["encoder"], blob.get("decoders")
    elif kind in ("pretrain", "pretrain-best"):
        parts = {n: {k[len(n) + 1:]: v for k, v in blob["model"].items() if k.startswith(n + ".")}
                 for n in ("encoder", "decoders")}
        encoder_state, decoders = parts["encoder"], parts["decoders"] or None
    else:
        raise ValueError(f"--encoder: {path} is not a pretraining or probe file (kind {kind!r})")
    cfg = ModelConfig.from_dict(blob["configs"]["model"])
    encoder = MultiModalEncoder(cfg)
    encoder.load_state_dict(encoder_state)
    return encoder.eval(), decoders, blob["configs"]


def analysis_windows(cache_dir: Path, split: str, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(signals [n, 4, S], mask [n, 4], global indices) of windows with all four modalities, evenly spaced."""
    from physioserve.cache import WindowCache

    cache = WindowCache(cache_dir)
    index = cache.split_indices(split)
    index = index[cache.mask[index].all(1)]
    if not len(index):
        raise SystemExit(f"analyze: no {split} window of {cache_dir} has all four modalities")
    index = index[np.unique(np.linspace(0, len(index) - 1, min(n, len(index))).astype(np.int64))]
    return cache.windows(index), cache.mask[index], index


def analyse_encoder(name: str, encoder, decoders, configs: dict, signals, mask, args) -> tuple[dict, dict]:
    """(numbers for analysis.json, arrays for the figures) of one encoder."""
    from .analysis import attention_maps, block_summary, reconstruction_errors, relative_source_variance, rsv_summary
    from .evaluate import pretraining_label
    from .model import MultiMAE

    cfg = encoder.cfg
    n_mod = len(cfg.modalities)
    raw, rollout = attention_maps(encoder, signals, mask)
    rsv = relative_source_variance(encoder, signals, mask, references=args.references)
    pre = configs.get("pretrain") or {}
    label = pretraining_label(pre, configs["model"]) if pre else "none (trained from random init)"
    numbers = {
        "pretraining": label, "model": configs["model"], "fusion": cfg.fusion, "modalities": list(cfg.modalities),
        "rollout": {**block_summary(rollout, n_mod), "matrix": rollout.round(6).tolist()},
        "layers": [{"layer": i + 1, **block_summary(a, n_mod), "matrix": a.round(6).tolist()} for i, a in enumerate(raw)],
        "rsv": {"units": "channels of each block's output, averaged over tokens",
                "softmax": rsv_summary(rsv["softmax"]), "share": rsv_summary(rsv["share"]),
                "values_" + args.rsv: rsv[args.rsv].round(6).tolist()},
    }
    arrays = {"raw": raw, "rollout": rollout, "rsv": rsv[args.rsv], "model": None, "modalities": list(cfg.modalities)}
    if decoders:
        model = MultiMAE(cfg).to(signals.device)
        model.encoder.load_state_dict(encoder.state_dict())
        model.decoders.load_state_dict(decoders)
        numbers["reconstruction_mse"] = reconstruction_errors(model, signals, mask)
        arrays["model"] = model.eval()
    print(f"analyze: {name}: rollout cross-modal {numbers['rollout']['cross_modal']:.3f}, aligned "
          f"{numbers['rollout']['temporal_alignment']:.3f}; last-layer RSV entropy "
          f"{numbers['rsv'][args.rsv][-1]['entropy']:.3f}", file=sys.stderr)
    return numbers, arrays


def run(args: argparse.Namespace) -> int:
    from .plots import plot_attention_layers, plot_reconstructions, plot_rollout, plot_rsv
    from .runtime import setup_runtime

    runtime = setup_runtime(args.device, args.threads)
    encoders = {}
    for spec in args.encoder:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"analyze: --encoder {spec!r}: expected NAME=PATH")
        try:
            encoders[name] = load_encoder(Path(path))
        except (FileNotFoundError, ValueError) as error:
            raise SystemExit(f"analyze: {error}") from None
    signals_np, mask_np, index = analysis_windows(args.data, args.split, args.windows)
    signals = torch.from_numpy(signals_np).to(runtime.device)
    mask = torch.from_numpy(mask_np).to(runtime.device)
    numbers, arrays = {}, {}
    for name, (encoder, decoders, configs) in encoders.items():
        numbers[name], arrays[name] = analyse_encoder(name, encoder.to(runtime.device), decoders, configs, signals, mask, args)
    args.out.mkdir(parents=True, exist_ok=True)
    figures = [plot_rollout(arrays, args.out / "rollout.png"), plot_attention_layers(arrays, args.out / "attention_layers.png"),
               plot_rsv(numbers, args.rsv, args.out / "rsv.png")]
    with_decoders = {k: v["model"] for k, v in arrays.items() if v["model"] is not None}
    if with_decoders:
        figures.append(plot_reconstructions(with_decoders, signals[:1], mask[:1], args.out / "reconstructions.png"))
    summary = {"windows": {"split": args.split, "n": int(len(index)), "indices": index.tolist()},
               "settings": {"references": args.references, "rsv_figure": args.rsv,
                            "rollout": "A_l = 0.5 W_l + 0.5 I, W_l averaged over heads; R = A_L ... A_1; mean over windows"},
               "modalities": list(MODALITIES), "encoders": numbers, "figures": [f.name for f in figures]}
    (args.out / "analysis.json").write_text(json.dumps(summary))
    print(f"analyze: {len(encoders)} encoder(s) on {len(index)} {args.split} windows; "
          + ", ".join(f.name for f in figures) + f", analysis.json in {args.out}", file=sys.stderr)
    return 0
