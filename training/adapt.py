"""`physioserve adapt BUNDLE RECORDINGS... --out BUNDLE2`: adapt a bundle to a site without labels.

    physioserve adapt physioserve/assets/default_bundle site/*.edf --out bundles/site-a
    physioserve adapt bundles/site-a site/*.edf --out bundles/site-a --resume        # after a kill

What a foundation model is for: a site's own unlabelled recordings continue the self-supervised
objective, and only what can be re-fitted without labels is re-fitted.

1. Windows: the recordings (EDF/BDF/WFDB, as `physioserve score` reads them) through the one
   preprocessing, cached in the work folder `.OUT.adapt/` beside OUT (windows.npy + mask.npy).
2. MultiMAE continuation (paper §3.3, input modality drop, `training.augment`): the bundle's encoder
   and the MultiMAE decoders it ships (`weights.pt`; re-initialised when the bundle has none, which
   the card then says). By default only the per-modality tokenizers (the modality adapters) train and
   the shared transformer stays frozen, so the heads keep reading the space they were fitted in
   (`--train all` trains every encoder weight). Off by default (`--steps 0`): on the held-out site
   of docs/EXPERIMENTS.md, 100 or 300 steps lowered the EEG-alone kappa while the statistics alone
   raised every input set's; `--steps N` turns it on. Resumable from the work folder's
   checkpoint.pt (`--resume`).
3. Normalisation statistics: the per-dimension mean and standard deviation of the site's embeddings
   replace the training ones. The night-context graph standardises with them directly; the window
   heads get the affine map site -> training statistics folded into their weights (feature alignment,
   a label-free re-fit in the spirit of AdaBN, Li et al. 2018). Whole nights are expected: the
   statistics assume a night's usual mix of stages. The epoch features' training statistics are
   kept: the context graph z-scores them per recording anyway (night_norm), which is what a site's
   shift of band powers needs.
4. Re-export with the same checks as `physioserve export` (parity, metadata, card) into OUT: a bundle
   that serves and scores like any other.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .context_train import EEG_ONLY

HELP = "adapt a bundle to a site's unlabelled recordings (MultiMAE continuation + embedding statistics), re-export"



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="bundle folder or model-store tag (it must ship weights.pt)")
    parser.add_argument("recordings", nargs="+", type=Path, help="EDF/BDF/WFDB recordings or folders of them (whole nights)")
    parser.add_argument("--out", type=Path, required=True,
                        help="folder of the adapted bundle; the work (windows, checkpoint) goes to .OUT.adapt/ beside it")
    parser.add_argument("--steps", type=int, default=0,
                        help="MultiMAE steps on the site's windows (default 0: statistics only; on the held-out site of "
                             "docs/EXPERIMENTS.md 100-300 steps lowered EEG-alone kappa, try e.g. 300 on your own scored nights)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--train", choices=("tokenizers", "all"), default="tokenizers",
                        help="encoder weights the MultiMAE steps update (default: the per-modality tokenizers)")
    parser.add_argument("--channel-map", default=None, help="override the channel patterns, e.g. eeg=C4-A1")
    parser.add_argument("--version", default=None, help="version of the adapted bundle (default: <version>+adapted.<UTC time>)")
    parser.add_argument("--resume", action="store_true", help="continue the unfinished run in .OUT.adapt/")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-progress", action="store_true")


def site_windows(paths: list[Path], work: Path, channel_map: str | None, progress: bool) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """All windows of the recordings (signals [N, 4, 3000] memory-mapped, mask [N, 4]) and per-recording notes."""
    from tqdm.auto import tqdm

    from physioserve.cache import recording_to_windows
    from physioserve.io import read_recording
    from physioserve.modalities import parse_channel_map
    from physioserve.score import find_inputs

    done = work / "windows.json"
    if done.exists():
        return (np.load(work / "windows.npy", mmap_mode="r"), np.load(work / "mask.npy"),
                json.loads(done.read_text())["recordings"])
    inputs, problems = find_inputs(paths)
    for problem in problems:
        print(f"adapt: {problem}", file=sys.stderr)
    overrides = parse_channel_map(channel_map)
    signals, masks, notes = [], [], []
    for path in tqdm(inputs, desc="read", unit="rec", disable=not progress):
        try:
            recording = read_recording(path, channel_map=overrides or None)
            x, m = recording_to_windows(recording)
        except (ValueError, OSError) as error:  # one bad file must not stop the rest
            print(f"adapt: {path}: skipped: {error}", file=sys.stderr)
            continue
        signals.append(x)
        masks.append(m)
        notes.append({"record": recording.name, "windows": int(len(x)), "modalities": list(recording.present_modalities)})
    if not signals:
        raise SystemExit("adapt: no recording could be read; nothing to adapt on")
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "windows.npy", np.concatenate(signals))
    np.save(work / "mask.npy", np.concatenate(masks))
    done.write_text(json.dumps({"recordings": notes}, indent=1))
    return np.load(work / "windows.npy", mmap_mode="r"), np.load(work / "mask.npy"), notes


def load_weights(bundle) -> dict:
    from physioserve.bundle import WEIGHTS_FILE, BundleError

    path = bundle.path / WEIGHTS_FILE
    if not path.exists():
        raise BundleError(f"bundle {bundle.path} ships no {WEIGHTS_FILE} (torch weights); re-export it with "
                          "this version of `physioserve export` to adapt it")
    return torch.load(path, map_location="cpu", weights_only=True)


def continue_mae(weights: dict, signals: np.ndarray, mask: np.ndarray, args, work: Path):
    """MultiMAE steps on the site's windows from the bundle's encoder and decoders; returns the encoder state."""
    from tqdm.auto import tqdm

    from .augment import augment_batch
    from .config import AugmentConfig, ModelConfig, PretrainConfig
    from .model import MultiMAE, plan_masking
    from .pretrain import make_optimizer
    from .runtime import load_checkpoint, rng_state, save_atomic, set_rng_state

    cfg = ModelConfig.from_dict(weights["model_config"])
    model = MultiMAE(cfg)
    model.encoder.load_state_dict(weights["encoder"])
    if weights.get("decoders"):
        model.decoders.load_state_dict(weights["decoders"])
    for p in model.encoder.parameters():
        p.requires_grad = args.train == "all"
    if args.train == "tokenizers":
        for p in model.encoder.tokenizers.parameters():
            p.requires_grad = True
    optimizer = make_optimizer(model, args.lr, 0.05, (0.9, 0.95))
    pre, augment = PretrainConfig(), AugmentConfig()
    generator = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)  # dropout draws from the global generator
    step = 0
    work.mkdir(parents=True, exist_ok=True)
    checkpoint = work / "checkpoint.pt"
    if args.resume and checkpoint.exists():
        blob = load_checkpoint(checkpoint)
        model.load_state_dict(blob["model"])
        optimizer.load_state_dict(blob["optimizer"])
        set_rng_state(blob["rng"], generator)
        step = blob["step"]
    usable = np.flatnonzero(mask.any(1))
    losses = []
    model.train()
    bar = tqdm(total=args.steps, initial=step, desc="adapt", disable=args.no_progress, dynamic_ncols=True)
    while step < args.steps:
        rows = np.sort(usable[torch.randint(len(usable), (args.batch_size,), generator=generator).numpy()])
        x, m = augment_batch(torch.from_numpy(np.asarray(signals[rows])), torch.from_numpy(mask[rows]), augment, generator)
        drop = int(torch.randint(len(cfg.modalities), (1,), generator=generator))
        plan = plan_masking(m, cfg, pre.keep_fraction, drop, generator)
        loss, _ = model(x, m, plan.keep_idx, plan.keep_valid, plan.loss_mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        step += 1
        losses.append(float(loss.detach()))
        bar.update(1)
        if step % 25 == 0 or step == args.steps:
            save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                         "rng": rng_state(generator)}, checkpoint)
    bar.close()
    return model.encoder.state_dict(), model.decoders.state_dict(), losses


@torch.no_grad()
def embedding_stats(encoder, signals: np.ndarray, mask: np.ndarray, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and standard deviation [D] of the embeddings of the usable windows, each
    embedded twice: with its recorded modalities and with EEG alone (where it has EEG). The training
    statistics these replace were taken over the same mix (`physioserve context` embeds every night
    with all modalities and with EEG alone, plus subsets); statistics of all-modality embeddings
    alone would shift every EEG-only embedding (measured: -0.085 EEG-alone kappa on home-128)."""
    encoder.eval()
    parts = []
    for m in (mask, mask & EEG_ONLY[None, :]):
        rows = np.flatnonzero(m.any(1))
        parts += [encoder.pooled(torch.from_numpy(np.asarray(signals[rows[i : i + batch]])),
                                 torch.from_numpy(m[rows[i : i + batch]])) for i in range(0, len(rows), batch)]
    emb = torch.cat(parts)  # [N, D]
    return emb.mean(0), emb.std(0).clamp(min=1e-6)


def align_heads(heads, train_mean, train_std, site_mean, site_std) -> None:
    """Fold e -> (e - site_mean) / site_std * train_std + train_mean into each linear head, in place."""
    scale = train_std / site_std  # [D]
    shift = train_mean - scale * site_mean  # [D]
    with torch.no_grad():
        for head in heads.values():
            head.bias += head.weight @ shift
            head.weight *= scale


def run(args: argparse.Namespace) -> int:
    from export.build import export_bundle
    from export.cli import adapt_weights
    from physioserve.bundle import BundleError, resolve_bundle

    from .config import ContextConfig, ModelConfig
    from .context import NightContext
    from .heads import build_inference_model
    from .runtime import setup_runtime

    started = time.perf_counter()
    setup_runtime("cpu", args.threads)
    try:
        bundle = resolve_bundle(args.bundle)
        weights = load_weights(bundle)
    except BundleError as error:
        print(f"physioserve adapt: {error}", file=sys.stderr)
        return 1
    work = args.out.parent / f".{args.out.name}.adapt"
    if work.exists() and not args.resume and (work / "checkpoint.pt").exists():
        print(f"physioserve adapt: {work} holds an unfinished run; pass --resume, or remove it", file=sys.stderr)
        return 1
    signals, mask, notes = site_windows(args.recordings, work, args.channel_map, not args.no_progress)
    print(f"adapt: {len(notes)} recording(s), {int(mask.any(1).sum())} usable windows; bundle {bundle.name} "
          f"{bundle.version}", file=sys.stderr)
    losses = []
    decoders = weights.get("decoders")
    encoder_state = weights["encoder"]
    if args.steps > 0:
        encoder_state, decoders, losses = continue_mae(weights, signals, mask, args, work)
    cfg = ModelConfig.from_dict(weights["model_config"])
    model = build_inference_model(cfg, encoder_state, weights["heads"])
    site_mean, site_std = embedding_stats(model.encoder, signals, mask)
    context = None
    if weights.get("context") is not None:
        context_cfg = ContextConfig.from_dict(weights["context"]["config"])
        context_model = NightContext(cfg.d_model, context_cfg)
        context_model.load_state_dict(weights["context"]["state"])
        window_head = {"window_head": context_model.window_head} if context_cfg.window_residual else {}
        align_heads({**model.heads, **window_head}, context_model.mean, context_model.std, site_mean, site_std)
        context_model.mean.copy_(site_mean)
        context_model.std.copy_(site_std)
        context_info = {k: v for k, v in bundle.meta["context"].items() if k not in ("file", "exporter", "opset", "parity")}
        context = (context_model.eval(), context_info)
    else:
        print("adapt: the bundle has no night-context graph, so no training statistics: heads kept as they are",
              file=sys.stderr)
    prov = dict(bundle.meta.get("provenance", {}))
    prov["adaptation"] = {
        "from": {"name": bundle.name, "version": bundle.version, "source": bundle.source},
        "recordings": notes, "windows": int(mask.any(1).sum()), "mae_steps": args.steps, "trained": args.train,
        "decoders": "shipped" if weights.get("decoders") else "re-initialised", "lr": args.lr,
        "loss_first_last": [losses[0], losses[-1]] if losses else None,
        "statistics": "site embedding mean/std" if context is not None else None,
    }
    note = (f"**Adapted without labels** from {bundle.name} {bundle.version} on {len(notes)} recording(s) of a site "
            f"({prov['adaptation']['windows']} windows): {args.steps} MultiMAE steps ({args.train}), embedding "
            "statistics re-fitted. Its evaluation tables below are those of the original model.")
    prov["card_notes"] = (note + "\n\n" + prov["card_notes"]) if prov.get("card_notes") else note
    version = args.version or f"{bundle.version}+adapted.{time.strftime('%Y%m%d%H%M%S', time.gmtime())}"
    try:
        out = export_bundle(model, args.out, model_config=weights["model_config"], provenance=prov, name=bundle.name,
                            version=version, overwrite=True, context=context,
                            extra_files={f: bundle.path / f for f in ("reliability.png",) if (bundle.path / f).exists()},
                            weights=adapt_weights(model, weights["model_config"], decoders, context))
    except (ValueError, FileExistsError) as error:
        print(f"physioserve adapt: {error}", file=sys.stderr)
        return 1
    import shutil

    shutil.rmtree(work, ignore_errors=True)  # finished: nothing to resume
    print(f"adapt: bundle {out.path} ({out.name} {out.version}) written in {time.perf_counter() - started:.0f} s; "
          f"parity max-abs {max(out.meta['export']['parity']['max_abs'].values()):.1e}", file=sys.stderr)
    return 0
