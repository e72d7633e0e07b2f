"""`physioserve reproduce`: every row of the paper's Tables 1-2 and Appendices C, D, E, H, over seeds.

    physioserve reproduce training test --out runs/paper --size paper --seeds 0,1,2 \\
        --pretrain-launcher "torchrun --nproc_per_node 8"                        # the real data, on GPUs
    physioserve reproduce corpus --out runs/small --size small --epochs 4 --seeds 0,1   # a synthetic corpus
    physioserve reproduce --cache CACHE --out RUNS --dry-run                     # print the commands only
    physioserve reproduce --cache CACHE --out RUNS --report                      # tables of the steps done so far

One `physioserve` command per step, run in order, each skipped when its output exists (so the whole
command resumes after a kill; pretraining steps pass `--resume`):

1. `prepare` the roots into RUNS/cache (or use `--cache`);
2. `pretrain` per seed: MultiMAE + modality drop, MultiMAE, one MAE per modality (Table 1), SimCLR,
   CLIP pairwise, CLIP leave-one-out (Table 2), MultiMAE + drop at each other `--mask-ratios` (App. C);
3. `probe` per seed: linear probes of each, the scratch baselines (per modality and all), the
   multimodal encoder probed with one modality (the extra Table 1 rows), `--label-records` train
   patients (App. D, linear and scratch), full fine-tuning (App. E);
4. `analyze` (§4.4 figures) of the scratch, MultiMAE and MultiMAE + drop encoders of the first seed;
5. the tables: RUNS/tables/*.md, tables.md, tables.json (`training.tables`).

Seeds: seed s pretrains with --seed s and probes with --seed s; a row is mean ± std over the seeds.
RUNS/reproduce.jsonl logs every step with its command and wall time.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from physioserve.modalities import MODALITIES

from .config import MODEL_SIZES, drop_mask_prob
from .tables import Row, Table, write_tables

HELP = "run every row of the paper's Tables 1-2 and Appendices C, D, E, H over seeds, and write the tables"
TABLES = ("1", "2", "C", "D", "E", "H")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data_dirs", nargs="*", type=Path, metavar="DATA_DIR",
                        help="PhysioNet-2018-layout roots to prepare into RUNS/cache (e.g. training test)")
    parser.add_argument("--out", type=Path, required=True, help="runs folder: cache/, pretrain/, probe/, figures/, tables/")
    parser.add_argument("--cache", type=Path, help="an existing window cache instead of DATA_DIRs")
    parser.add_argument("--size", choices=sorted(MODEL_SIZES), default=None,
                        help="model size (default: the --pretrain-config's, else small)")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds (default 0,1)")
    parser.add_argument("--tables", default=",".join(TABLES), help=f"subset of {','.join(TABLES)} (default all)")
    parser.add_argument("--pretrain-config", type=Path, help="JSON of PretrainConfig fields for every pretraining "
                        "(configs/pretrain-paper.json); the flags below win")
    parser.add_argument("--epochs", type=int, help="pretraining epochs (default: the config's, 2,000)")
    parser.add_argument("--batch-size", type=int, help="pretraining batch size")
    parser.add_argument("--lr", type=float, help="pretraining peak learning rate")
    parser.add_argument("--warmup-epochs", type=float, help="pretraining warm-up epochs (paper: 10)")
    parser.add_argument("--probe-epochs", type=int, help="linear probe epochs (paper: 200)")
    parser.add_argument("--probe-warmup-epochs", type=float, help="linear probe warm-up epochs (paper: 10)")
    parser.add_argument("--e2e-epochs", type=int, help="scratch and fine-tuning epochs (paper: 200)")
    parser.add_argument("--e2e-warmup-epochs", type=float, help="scratch and fine-tuning warm-up epochs (paper: 10)")
    parser.add_argument("--e2e-batch-size", type=int, help="scratch and fine-tuning batch size")
    parser.add_argument("--label-records", default="25,500",
                        help="Appendix D: train patients of the limited-label rows (default 25,500; at most the split's)")
    parser.add_argument("--mask-ratios", default="0.5,0.7,0.9", help="Appendix C: overall mask ratios (default 0.5,0.7,0.9)")
    parser.add_argument("--no-figures", action="store_true", help="skip `physioserve analyze`")
    parser.add_argument("--analysis-windows", type=int, default=64, help="windows `analyze` averages over (default 64)")
    parser.add_argument("--pretrain-launcher", help='run each pretraining as a subprocess under this launcher, e.g. '
                        '"torchrun --nproc_per_node 8" (default: in this process)')
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--workers", type=int, help="DataLoader workers (and prepare processes)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--report", action="store_true",
                        help="write the tables from the steps finished so far (a long run's progress), run nothing")
    parser.add_argument("--no-progress", action="store_true")


@dataclass
class Step:
    """One `physioserve` command and the file that says it is done."""

    argv: list[str]
    done: Path | None
    pretrain: bool = False


def _numbers(text: str, kind, what: str) -> list:
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"reproduce: {what} {text!r}: comma-separated numbers expected") from None


class Plan:
    """The steps and the tables of one reproduction, from the command's arguments."""

    def __init__(self, args: argparse.Namespace, cache: Path):
        self.args, self.cache, self.out = args, cache, args.out
        self.seeds = _numbers(args.seeds, int, "--seeds")
        self.tables = [t.strip().upper() for t in args.tables.split(",") if t.strip()]
        unknown = [t for t in self.tables if t not in TABLES]
        if unknown or not self.seeds:
            raise SystemExit(f"reproduce: --tables {args.tables} / --seeds {args.seeds}: tables are {', '.join(TABLES)}")
        self.mask_ratios = _numbers(args.mask_ratios, float, "--mask-ratios")
        self.label_records = _numbers(args.label_records, int, "--label-records")
        self.steps: list[Step] = []
        self.size = args.size or (json.loads(args.pretrain_config.read_text()).get("size") if args.pretrain_config
                                  else None) or "small"

    # -- commands -------------------------------------------------------------------------------------
    def _common(self) -> list[str]:
        a = self.args
        out = ["--device", a.device] + (["--threads", str(a.threads)] if a.threads else [])
        out += ["--workers", str(a.workers)] if a.workers is not None else []
        return out + (["--no-progress"] if a.no_progress else [])

    def pretrain(self, name: str, seed: int, *flags: str) -> Path:
        """Add a pretraining step (once); returns its encoder.pt."""
        a = self.args
        run = self.out / "pretrain" / f"{name}-s{seed}"
        if any(s.done == run / "encoder.pt" for s in self.steps):
            return run / "encoder.pt"
        argv = ["pretrain", "--data", str(self.cache), "--out", str(run), "--size", self.size, "--seed", str(seed),
                "--resume", *flags]
        argv += ["--config", str(a.pretrain_config)] if a.pretrain_config else []
        for flag, value in (("--epochs", a.epochs), ("--batch-size", a.batch_size), ("--lr", a.lr),
                            ("--warmup-epochs", a.warmup_epochs)):
            argv += [flag, str(value)] if value is not None else []
        self.steps.append(Step(argv + self._common(), run / "encoder.pt", pretrain=True))
        return run / "encoder.pt"

    def probe(self, name: str, seed: int, encoder: Path | None, *flags: str) -> Path:
        """Add a probe step (once); linear on `encoder`, or end to end with --scratch / --finetune in flags."""
        a = self.args
        out = self.out / "probe" / f"{name}-s{seed}"
        if any(s.done == out / "probe.json" for s in self.steps):
            return out
        argv = ["probe", "--data", str(self.cache), "--out", str(out), "--seed", str(seed), *flags]
        argv += ["--checkpoint", str(encoder)] if encoder is not None else ["--size", self.size]
        e2e = "--scratch" in flags or "--finetune" in flags
        values = ((a.e2e_epochs, a.e2e_warmup_epochs, a.e2e_batch_size) if e2e
                  else (a.probe_epochs, a.probe_warmup_epochs, None))
        for flag, value in zip(("--epochs", "--warmup-epochs", "--batch-size"), values):
            argv += [flag, str(value)] if value is not None else []
        self.steps.append(Step(argv + self._common(), out / "probe.json"))
        return out

    # -- the paper's rows -----------------------------------------------------------------------------
    def build(self) -> list[Table]:
        """Add every step the asked tables need; return the tables (rows = probe folders over seeds)."""
        if self.args.data_dirs:
            workers = ["--workers", str(self.args.workers)] if self.args.workers else []
            self.steps.append(Step(["prepare", *map(str, self.args.data_dirs), str(self.cache), *workers],
                                   None))
        s0 = self.seeds[0]
        tables: list[Table] = []

        def rows(make) -> list[Path]:
            return [make(seed) for seed in self.seeds]

        drop = {s: self.pretrain("multimae-drop", s) for s in self.seeds}
        nodrop = {s: self.pretrain("multimae", s, "--no-modality-drop") for s in self.seeds} \
            if {"2", "E"} & set(self.tables) or not self.args.no_figures else {}
        all_scratch = rows(lambda s: self.probe("all-scratch", s, None, "--scratch"))
        all_drop = rows(lambda s: self.probe("all-multimae-drop", s, drop[s]))
        if "1" in self.tables:
            t1 = []
            for m in MODALITIES:
                mae = {s: self.pretrain(f"mae-{m}", s, "--modalities", m) for s in self.seeds}
                t1.append(Row((m.upper(), "scratch (end to end)"),
                              rows(lambda s: self.probe(f"{m}-scratch", s, None, "--scratch", "--modalities", m))))
                t1.append(Row((m.upper(), f"pretrained: MAE on {m.upper()}, linear probe"),
                              rows(lambda s: self.probe(f"{m}-mae", s, mae[s]))))
                t1.append(Row((m.upper(), "extra: MultiMAE + drop encoder, probed with this modality only"),
                              rows(lambda s: self.probe(f"{m}-multimodal", s, drop[s], "--modalities", m))))
            t1 += [Row(("All", "scratch (end to end)"), all_scratch),
                   Row(("All", "pretrained: MultiMAE + modality drop, linear probe"), all_drop)]
            tables.append(Table("table1", "Table 1: unimodal and multimodal models", ("Inputs", "Model"), t1,
                                "Unimodal pretrained rows: an MAE pretrained on that modality alone (`pretrain "
                                "--modalities M`); the extra rows probe the multimodal encoder with one modality."))
        if "2" in self.tables:
            t2 = []
            for objective, title in (("simclr", "SimCLR"), ("clip-pairwise", "CLIP pairwise"),
                                     ("clip-loo", "CLIP leave-one-out")):
                enc = {s: self.pretrain(objective, s, "--objective", objective) for s in self.seeds}
                t2.append(Row(("late", title), rows(lambda s: self.probe(f"all-{objective}", s, enc[s]))))
            t2 += [Row(("early", "MultiMAE"), rows(lambda s: self.probe("all-multimae", s, nodrop[s]))),
                   Row(("early", "MultiMAE + modality drop"), all_drop)]
            tables.append(Table("table2", "Table 2: multimodal pretraining strategies (linear probes, all modalities)",
                                ("Fusion", "Pretraining"), t2))
        if "C" in self.tables:
            tc = []
            for ratio in self.mask_ratios:
                if abs(ratio - 0.7) < 1e-9:
                    tc.append(Row(("0.70 (paper)",), all_drop))
                    continue
                p = drop_mask_prob(ratio)
                if not 0.0 < p < 1.0:
                    raise SystemExit(f"reproduce: --mask-ratios {ratio}: with modality drop it must lie in (0.25, 1)")
                enc = {s: self.pretrain(f"multimae-drop-mask{ratio:g}", s, "--mask-ratio", str(ratio),
                                        "--token-mask-prob", f"{p:.6g}") for s in self.seeds}
                tc.append(Row((f"{ratio:.2f}",), rows(lambda s: self.probe(f"all-mask{ratio:g}", s, enc[s]))))
            tables.append(Table("appendix_c", "Appendix C: mask ratio of MultiMAE + modality drop (linear probes)",
                                ("Overall mask ratio",), tc, "With the drop, the other modalities are masked at "
                                "p = (4 r - 1) / 3 so that the overall ratio is r."))
        if "D" in self.tables:
            td = []
            for n in self.label_records:
                td.append(Row((str(n), "scratch (end to end)"),
                              rows(lambda s: self.probe(f"train{n}-scratch", s, None, "--scratch", "--train-records", str(n)))))
                td.append(Row((str(n), "MultiMAE + modality drop, linear probe"),
                              rows(lambda s: self.probe(f"train{n}-multimae-drop", s, drop[s], "--train-records", str(n)))))
            td += [Row(("all", "scratch (end to end)"), all_scratch),
                   Row(("all", "MultiMAE + modality drop, linear probe"), all_drop)]
            tables.append(Table("appendix_d", "Appendix D: limited labels (train patients)", ("Train patients", "Model"), td))
        if "E" in self.tables:
            te = [Row(("scratch (end to end)",), all_scratch),
                  Row(("MultiMAE, fine-tuned",), rows(lambda s: self.probe("all-multimae-finetune", s, nodrop[s], "--finetune"))),
                  Row(("MultiMAE + modality drop, fine-tuned",),
                      rows(lambda s: self.probe("all-multimae-drop-finetune", s, drop[s], "--finetune"))),
                  Row(("MultiMAE + modality drop, linear probe",), all_drop)]
            tables.append(Table("appendix_e", "Appendix E: full fine-tuning", ("Model",), te))
        if not self.args.no_figures:
            argv = ["analyze", "--data", str(self.cache), "--out", str(self.out / "figures"),
                    "--encoder", f"scratch={self.out / 'probe' / f'all-scratch-s{s0}'}",
                    "--encoder", f"MultiMAE={nodrop[s0]}", "--encoder", f"MultiMAE + drop={drop[s0]}",
                    "--windows", str(self.args.analysis_windows), "--device", self.args.device]
            self.steps.append(Step(argv, self.out / "figures" / "analysis.json"))
        return tables


def _run_step(step: Step, launcher: str | None) -> None:
    from physioserve.cli import main

    if step.pretrain and launcher:
        command = [*shlex.split(launcher), "-m", "physioserve.cli", *step.argv]
        code = subprocess.run(command).returncode
    else:
        try:
            code = main(step.argv)
        except SystemExit as stop:  # a command's own error message (already worded for the user)
            if isinstance(stop.code, str):
                print(stop.code, file=sys.stderr)
            code = 1 if isinstance(stop.code, str) or stop.code is None else stop.code
    if code != 0:
        raise SystemExit(f"reproduce: `physioserve {shlex.join(step.argv)}` failed (exit {code}); fix it and run "
                         "reproduce again: finished steps are kept")


def run(args: argparse.Namespace) -> int:
    if bool(args.data_dirs) == bool(args.cache):
        raise SystemExit("reproduce: give DATA_DIRs to prepare, or --cache for an existing window cache (one of them)")
    cache = args.cache or args.out / "cache"
    plan = Plan(args, cache)
    tables = plan.build()
    if args.dry_run:
        for step in plan.steps:
            prefix = f"{args.pretrain_launcher} -m physioserve.cli" if step.pretrain and args.pretrain_launcher else "physioserve"
            print(f"{prefix} {shlex.join(step.argv)}")
        return 0
    if args.report:
        done = sum(1 for step in plan.steps if step.done is not None and step.done.exists())
        print(write_tables(tables, args.out / "tables", appendix_h="H" in plan.tables))
        print(f"reproduce: {done} of {sum(s.done is not None for s in plan.steps)} steps finished; tables from those in "
              f"{args.out / 'tables'}", file=sys.stderr)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "reproduce.jsonl"
    started = time.perf_counter()
    for i, step in enumerate(plan.steps, 1):
        done = step.done is not None and step.done.exists()
        print(f"reproduce: [{i}/{len(plan.steps)}] {'done, skipped: ' if done else ''}physioserve "
              f"{shlex.join(step.argv)}", file=sys.stderr, flush=True)
        tick = time.perf_counter()
        if not done:
            _run_step(step, args.pretrain_launcher)
        with log.open("a") as f:
            f.write(json.dumps({"step": i, "argv": step.argv, "skipped": done, "wall_s": time.perf_counter() - tick}) + "\n")
    text = write_tables(tables, args.out / "tables", appendix_h="H" in plan.tables)
    print(text)
    print(f"reproduce: {len(plan.steps)} steps in {time.perf_counter() - started:.0f} s; tables in "
          f"{args.out / 'tables'} (tables.md, tables.json)", file=sys.stderr)
    return 0
