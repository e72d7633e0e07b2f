"""The README's commands: every `physioserve` command it shows exists and takes the flags it shows;
the short ones run here (the demo, serving and scoring are run by their own tests, the test command
by .ci/run)."""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from physioserve.cli import COMMANDS

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def readme_commands() -> list[list[str]]:
    """`physioserve SUBCOMMAND ...` argument lists from the README's bash blocks (and torchrun lines)."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            for part in re.split(r"&&|\|\|", line):
                words = shlex.split(part.strip())
                for i, word in enumerate(words):
                    if word.endswith("physioserve") or (word == "physioserve.cli" and words[i - 1] == "-m"):
                        found.append(words[i + 1 :])
                        break
    return found


def parser_for(command: str) -> argparse.ArgumentParser:
    module = importlib.import_module(COMMANDS[command][0])
    parser = argparse.ArgumentParser(prog=f"physioserve {command}", exit_on_error=False)
    module.add_arguments(parser)
    return parser


def test_readme_shows_every_command_and_each_parses():
    commands = readme_commands()
    shown = {args[0] for args in commands if args}
    assert set(COMMANDS) <= shown | {"--help"}, f"not in the README: {set(COMMANDS) - shown}"
    for args in commands:
        if not args or args[0] == "--help":
            continue
        assert args[0] in COMMANDS, f"README uses unknown command {args[0]!r}"
        parser_for(args[0]).parse_args(args[1:])  # raises on an unknown flag or a missing argument


@pytest.mark.parametrize("args", [a for a in readme_commands() if a and a[0] == "inspect" and "../shared" in " ".join(a)],
                         ids=lambda a: " ".join(a))
def test_readme_inspect_commands_run_on_the_real_files(args, shared_data):
    done = subprocess.run([sys.executable, "-m", "physioserve.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "W" in done.stdout


def test_help_lists_every_command():
    done = subprocess.run([sys.executable, "-m", "physioserve.cli", "--help"], capture_output=True, text=True, timeout=60)
    for command in COMMANDS:
        assert command in done.stdout


def test_first_two_readme_lines_are_setup_and_tests_and_ci_runs_the_second():
    block = re.search(r"```bash\n(.*?)```", README, flags=re.S).group(1).splitlines()
    assert block[0].startswith("# 1.") and block[1].endswith("physioserve demo")
    assert block[2] == "# 2. run the tests" and block[3].endswith("python -m pytest -q")
    assert "'^# 2\\. run the tests'" in (REPO / ".ci" / "run").read_text()
