"""The `physioserve` console command. Each subcommand lives in its own module.

A command module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`. Modules
are imported only when their command runs, so `physioserve --help` is fast and the served path never
imports torch; a command whose extra is not installed says which extra to install.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

# command -> (module, one-line help, extra that provides its dependencies)
COMMANDS: dict[str, tuple[str, str, str | None]] = {
    "inspect": ("physioserve.inspection", "show channels, rates, duration, modality map and labels of a file", None),
    "prepare": ("physioserve.prepare", "turn PhysioNet-2018-layout folders (e.g. training and test) into a memory-mapped window cache", None),
    "synth": ("physioserve.synth.cli", "write a PhysioNet-2018-shaped synthetic corpus", None),
    "pretrain": ("training.pretrain", "pretraining: MultiMAE (+ modality drop), unimodal MAE, or a contrastive baseline", "train"),
    "probe": ("training.probe", "linear probes (stage, age, arousal) on a frozen encoder", "train"),
    "context": ("training.context_train", "train the night-context model (BiGRU over epoch embeddings) and calibrate", "train"),
    "evaluate": ("training.evaluate", "test-split metrics of probe runs, as the paper's tables", "train"),
    "analyze": ("training.analyze", "attention rollout, raw attention, relative source variance, reconstructions (paper §4.4)", "train"),
    "reproduce": ("training.reproduce", "every row of the paper's Tables 1-2 and Appendices C, D, E, H over seeds", "train"),
    "export": ("export.cli", "export encoder + probe heads to a checked ONNX model bundle", "export"),
    "adapt": ("training.adapt", "adapt a bundle to a site's unlabelled recordings (MultiMAE + embedding statistics)", "train"),
    "demo": ("physioserve.demo", "score a synthetic night from a held-out real hypnogram with the default model", None),
    "score": ("physioserve.score", "score EDF/BDF/WFDB recordings: per-epoch table, night summary, hypnogram", None),
    "embed": ("physioserve.embed", "per-epoch embeddings and probabilities of recordings as Parquet (local or Ray)", None),
}


def _available() -> dict[str, tuple[str, str, str | None]]:
    """Commands whose module ships in this install (later issues add more)."""
    found = {}
    for name, spec in COMMANDS.items():
        try:
            if importlib.util.find_spec(spec[0]) is not None:
                found[name] = spec
        except ModuleNotFoundError:
            continue
    return found


def build_parser(commands: dict[str, tuple[str, str, str | None]] | None = None) -> argparse.ArgumentParser:
    commands = _available() if commands is None else commands
    parser = argparse.ArgumentParser(
        prog="physioserve",
        description="Multimodal physiological foundation model: prepare, pretrain, probe, export, serve, score.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text, _) in commands.items():
        sub.add_parser(name, help=help_text, description=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = _available()
    parser = build_parser(commands)
    if not argv or argv[0] not in commands:
        parser.parse_args(argv or ["--help"])  # prints help or the argparse error
        return 2
    name = argv[0]
    module_name, help_text, extra = commands[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        hint = f" (pip install 'physioserve[{extra}]')" if extra else ""
        print(f"physioserve {name}: missing dependency {error.name!r}{hint}", file=sys.stderr)
        return 1
    command_parser = argparse.ArgumentParser(prog=f"physioserve {name}", description=module.HELP)
    module.add_arguments(command_parser)
    args = command_parser.parse_args(argv[1:])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
