"""The encoder's attention mask in the exported graph: additive bias (the model now) vs boolean mask (before).

The same random-init model is exported twice through the real export path: once as it is
(`training.model.key_bias`: 0 / the dtype's lowest value added to the scores) and once with the
boolean key mask it had before (`attn_mask=key_valid[:, None, None, :]`, which the exporter turns
into Where / IsNaN guards over every [B, H, L, L] score tensor). Both graphs run the same windows
(a third of them with EEG alone) in one process: the largest output difference between them, then
windows/s of each, in alternating rounds (the best round kept).

    python bench/attention_mask.py --size small --threads 2
    python bench/attention_mask.py --size paper --threads 2
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
import torch.nn.functional as F
from benchlib import machine, print_load


def attend_with_boolean_mask(q, k, v, key_valid, dropout):
    """training.model._attend as it was: the boolean key mask straight into SDPA."""
    mask = None if key_valid is None else key_valid[:, None, None, :]  # [B, 1, 1, Lk]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)  # [B, H, Lq, hd]
    return out.transpose(1, 2).flatten(2)  # [B, Lq, H * hd]


def main() -> None:
    import training.model as model_module
    from export.build import export_bundle
    from training.config import ModelConfig
    from training.heads import InferenceModel, make_heads

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="small", help="model size: paper | small | tiny (default small)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per timing round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("runs/bench/attention_mask"))
    args = parser.parse_args()
    load_start = os.getloadavg()

    torch.manual_seed(0)
    cfg = ModelConfig.named(args.size)
    model = InferenceModel(model_module.MultiModalEncoder(cfg), make_heads(cfg.d_model)).eval()
    graphs = {}
    current = model_module._attend
    for name, attend in (("boolean mask (before)", attend_with_boolean_mask), ("additive bias (now)", current)):
        model_module._attend = attend
        try:
            bundle = export_bundle(model, args.out / name.split()[0], model_config=cfg.to_dict(), overwrite=True,
                                   version="bench", provenance={"note": "random-init weights, speed only"})
        finally:
            model_module._attend = current
        graphs[name] = bundle.path / "model.onnx"

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sessions = {name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for name, path in graphs.items()}
    rng = np.random.default_rng(0)
    signals = rng.normal(0, 1, (args.batch, 4, 3000)).astype(np.float32)  # [B, 4, 3000]
    mask = np.ones((args.batch, 4), bool)  # [B, 4]
    mask[::3, 1:] = False  # a third with EEG alone: masked keys in attention
    feed = {"signals": signals, "modality_mask": mask}
    outputs = {name: s.run(None, feed) for name, s in sessions.items()}
    first, second = outputs.values()
    diff = max(float(np.abs(a - b).max()) for a, b in zip(first, second))
    rates = {name: [] for name in sessions}
    for _ in range(args.rounds):
        for name, s in sessions.items():
            s.run(None, feed)
            done, start = 0, time.perf_counter()
            while time.perf_counter() - start < args.seconds:
                s.run(None, feed)
                done += args.batch
            rates[name].append(done / (time.perf_counter() - start))
    print(f"{args.size} model, batch {args.batch}, {args.threads} threads, {machine()}")
    print(f"largest output difference between the two graphs: {diff:.3g}")
    for name, r in rates.items():
        print(f"{name:>22}: best {max(r):.1f} windows/s (rounds {', '.join(f'{x:.1f}' for x in r)})")
    names = list(rates)
    print(f"additive bias / boolean mask: {max(rates[names[1]]) / max(rates[names[0]]):.3f}x")
    print_load(load_start)


if __name__ == "__main__":
    main()
