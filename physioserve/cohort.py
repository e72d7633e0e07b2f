"""Cohort runs: many recordings through one model, one set of output files per recording, resumable.

A run is a `CohortJob` (what to write per recording: `score` tables, `embed` Parquet) over a list of
inputs. Both engines run the same three steps per recording, so they write byte-identical files:

1. `prepare`: read (`io.read_recording`) and window (`cache.recording_to_windows`, THE preprocessing);
2. `scoring.predict_night` in one ONNX Runtime session (the night-context graph, when the bundle has
   one, runs over the whole night in order);
3. `finish`: `CohortJob.write` writes the job's files into a staging folder `OUT/.partial-*`, which
   are then renamed into OUT, the job's marker file last.

`run_local` (`--engine local`) runs them in this process, one recording after another;
`cohort_ray.run_ray` (`--engine ray`) spreads them over a Ray cluster with Ray Data.

Resume: a recording is done when its marker file is in OUT. A killed run leaves no half-written
output, only `.partial-*` folders, which the next run removes (so one run per OUT at a time). With
resume on, done recordings are skipped after checking that they were made by this run's model: a run
that would mix two models' outputs in one OUT stops instead. A recording that fails is reported (one
line on stderr, and `OUT/_errors.json`) and the others go on; failed recordings are tried again by
the next run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RECORDING_SUFFIXES = (".edf", ".bdf", ".hea")
PARTIAL_PREFIX = ".partial-"
ERRORS_FILE = "_errors.json"  # '_' first: pyarrow and pandas skip it when reading OUT as a dataset
ENGINES = ("local", "ray")


class CohortError(ValueError):
    """A run that cannot start as asked (outputs of another model in OUT, options that do not fit)."""


@dataclass
class Prepared:
    """One recording, read and windowed: what inference and the job's writer need."""

    path: str  # the input as given on the command line
    record: str
    signals: np.ndarray  # [n, 4, 3000] float32, model input
    mask: np.ndarray  # [n, 4] bool, the modalities each window uses
    kept: Any = None  # what `CohortJob.keep` took from the Recording for `write`


@dataclass
class Outcome:
    """What became of one recording: written (error None) or failed, and the job's report."""

    path: str
    record: str
    error: str | None = None
    epochs: int = 0
    report: dict | None = None


class CohortJob:
    """What a run writes per recording. Subclasses: `score.ScoreJob`, `embed.EmbedJob` (picklable: Ray
    ships them to its workers)."""

    command = "cohort"
    verb = "written"  # "3 of 4 recording(s) <verb> into OUT"

    def __init__(self, out: Path, model: dict, channel_map: dict | None = None, fill_gaps: bool = False):
        self.out = Path(out)
        self.model = dict(model)  # {"name", "version"} of the bundle, as the driver resolved it
        self.channel_map = channel_map or None
        self.fill_gaps = fill_gaps

    def marker(self, record: str) -> str:
        """Name of the file in OUT whose presence means the recording is done (written last)."""
        raise NotImplementedError

    def made_by(self, marker: Path) -> dict | None:
        """{"name", "version"} of the model that wrote a marker file; None when it cannot be read."""
        raise NotImplementedError

    def keep(self, recording) -> Any:
        """What `write` needs from the Recording besides the windows (default: nothing)."""
        return None

    def write(self, prepared: Prepared, probs: dict[str, np.ndarray], folder: Path) -> dict | None:
        """Write the recording's files into `folder`; return a report (JSON-able) or None."""
        raise NotImplementedError


def find_inputs(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """Expand PATHs to recordings (EDF/BDF files, .hea headers, record folders); also the paths that are none."""
    found: list[Path] = []
    problems: list[str] = []

    def add(path: Path) -> None:
        if path not in found:
            found.append(path)

    def walk(folder: Path) -> None:
        if (folder / f"{folder.name}.hea").is_file():
            add(folder)
            return
        for child in sorted(folder.iterdir()):
            if child.is_dir():
                walk(child)
            elif child.suffix.lower() in RECORDING_SUFFIXES and "hypnogram" not in child.name.lower():
                add(child)

    for path in paths:
        if path.is_dir():
            before = len(found)
            walk(path)
            if len(found) == before:
                problems.append(f"{path}: no EDF/BDF file or WFDB record inside")
        elif path.is_file() and path.suffix.lower() in RECORDING_SUFFIXES:
            add(path)
        elif path.exists():
            problems.append(f"{path}: not an EDF/BDF file or a WFDB .hea; give recordings or folders of them")
        else:
            problems.append(f"{path}: no such file or folder")
    return found, problems


def record_name(path: Path) -> str:
    """The record name the readers give a path (file stem; a record folder's name)."""
    path = Path(path)
    return path.name if path.is_dir() else path.stem


def error_text(error: BaseException) -> str:
    text = str(error).strip()
    return text if text else type(error).__name__


# ---- one recording ---------------------------------------------------------------------------------


def prepare(job: CohortJob, path: str | Path) -> Prepared:
    """Read one recording and window it with the one preprocessing path."""
    from .cache import recording_to_windows
    from .io import read_recording

    recording = read_recording(Path(path), channel_map=job.channel_map, fill_gaps=job.fill_gaps)
    signals, mask = recording_to_windows(recording)  # [n, 4, 3000], [n, 4]
    return Prepared(path=str(path), record=record_name(Path(path)), signals=signals, mask=mask, kept=job.keep(recording))


@contextlib.contextmanager
def staging(job: CohortJob, record: str) -> Iterator[Path]:
    """A folder in OUT to write a recording's files into; on success they are renamed into OUT, the
    marker last (an older marker is removed first, so a kill in between never leaves a mixed set)."""
    job.out.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{record}-", dir=job.out))
    try:
        yield folder
        marker = job.marker(record)
        (job.out / marker).unlink(missing_ok=True)
        for file in sorted(folder.iterdir(), key=lambda f: f.name == marker):  # the marker last
            os.replace(file, job.out / file.name)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def finish(job: CohortJob, prepared: Prepared, probs: dict[str, np.ndarray]) -> Outcome:
    """Write one recording's outputs through `staging`."""
    with staging(job, prepared.record) as folder:
        report = job.write(prepared, probs, folder)
    return Outcome(path=prepared.path, record=prepared.record, epochs=len(prepared.mask), report=report)


def process(job: CohortJob, session, path: str | Path) -> Outcome:
    """prepare -> predict_night -> finish for one recording; a failure becomes the Outcome's error."""
    from .scoring import predict_night

    try:
        prepared = prepare(job, path)
        return finish(job, prepared, predict_night(session, prepared.signals, prepared.mask))
    except Exception as error:  # noqa: BLE001 - one bad recording must not stop the others
        return Outcome(path=str(path), record=record_name(Path(path)), error=error_text(error))


def run_local(job: CohortJob, todo: list[Path], session) -> Iterator[Outcome]:
    """`--engine local`: the recordings one after another in this process."""
    for path in todo:
        yield process(job, session, path)


# ---- planning and reporting ------------------------------------------------------------------------


@dataclass
class Plan:
    todo: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)  # done by an earlier run (resume)
    problems: list[str] = field(default_factory=list)  # inputs left out, with the reason


def plan(job: CohortJob, inputs: list[Path], resume: bool) -> Plan:
    """Which inputs to run: all of them, less the done ones with resume; inputs whose record names
    collide are left out (their files would overwrite each other). Raises CohortError when OUT holds
    done recordings of another model and resume is on."""
    out = Plan()
    by_name: dict[str, list[Path]] = {}
    for path in inputs:
        by_name.setdefault(record_name(path), []).append(path)
    foreign: list[tuple[Path, dict]] = []
    for path in inputs:
        name = record_name(path)
        if len(by_name[name]) > 1:
            others = ", ".join(str(p) for p in by_name[name] if p != path)
            out.problems.append(f"{path}: another input has the record name {name!r} ({others}); their outputs "
                                f"would overwrite each other in {job.out}: run them with different --out folders")
            continue
        marker = job.out / job.marker(name)
        if resume and marker.is_file():
            model = job.made_by(marker)
            if model is None:  # unreadable: a damaged output is redone, not trusted
                out.todo.append(path)
                continue
            if {k: model.get(k) for k in ("name", "version")} != {k: job.model.get(k) for k in ("name", "version")}:
                foreign.append((marker, model))
            out.skipped.append(path)
        else:
            out.todo.append(path)
    if foreign:
        marker, model = foreign[0]
        raise CohortError(
            f"{job.out}: {len(foreign)} recording(s) there were made by model {model.get('name')} "
            f"{model.get('version')} (e.g. {marker.name}), this run uses {job.model['name']} {job.model['version']}; "
            "give a new --out, or --no-resume to redo them with this model")
    return out


def clean_partials(out: Path) -> None:
    """Remove the staging folders a killed run left in OUT."""
    if out.is_dir():
        for folder in out.glob(f"{PARTIAL_PREFIX}*"):
            shutil.rmtree(folder, ignore_errors=True)


def collect(job: CohortJob, outcomes: Iterable[Outcome], total: int, *, progress: bool) -> list[Outcome]:
    """Drain outcomes with a progress bar, printing each failure as it comes."""
    from tqdm import tqdm

    done: list[Outcome] = []
    failed = 0
    with tqdm(total=total, desc=job.command, unit="rec", disable=not progress, file=sys.stderr) as bar:
        for outcome in outcomes:
            done.append(outcome)
            if outcome.error is not None:
                failed += 1
                tqdm.write(f"{job.command}: {outcome.path}: failed: {outcome.error}", file=sys.stderr)
            bar.update(1)
            bar.set_postfix_str(f"{outcome.record}" + (f", {failed} failed" if failed else ""))
    return done


def summarise(job: CohortJob, planned: Plan, outcomes: list[Outcome]) -> int:
    """The closing line, `OUT/_errors.json` (failed recordings and left-out inputs); the number failed."""
    failed = [o for o in outcomes if o.error is not None]
    line = f"{job.command}: {len(outcomes) - len(failed)} of {len(planned.todo)} recording(s) {job.verb} into {job.out}"
    if planned.skipped:
        line += f"; {len(planned.skipped)} already done there, skipped (--no-resume redoes them)"
    print(line, file=sys.stderr)
    path = job.out / ERRORS_FILE
    if failed or planned.problems:
        job.out.mkdir(parents=True, exist_ok=True)
        entries = [{"path": o.path, "record": o.record, "error": o.error} for o in failed]
        entries += [{"problem": p} for p in planned.problems]
        path.write_text(json.dumps(entries, indent=1) + "\n")
        print(f"{job.command}: {len(failed)} recording(s) not {job.verb}, {len(planned.problems)} input(s) left out: "
              f"listed in {path}", file=sys.stderr)
    else:
        path.unlink(missing_ok=True)
    return len(failed)


# ---- command-line options shared by `score` and `embed` --------------------------------------------


def add_engine_arguments(parser: argparse.ArgumentParser, resume_default: str) -> None:
    group = parser.add_argument_group("engine (a cohort on this machine or on a Ray cluster; docs/SCALING.md)")
    group.add_argument("--engine", choices=ENGINES, default="local",
                       help="local: in this process (default); ray: spread over a Ray cluster with Ray Data "
                            "(pip install 'physioserve[ray]'); both write identical files")
    group.add_argument("--resume", action=argparse.BooleanOptionalAction, default=None,
                       help=f"skip recordings whose outputs are complete in OUT (made by the same model); {resume_default}")
    group.add_argument("--ray-address", default=None, metavar="ADDRESS",
                       help="ray: the cluster, e.g. auto (the one `ray start` runs here), 10.0.0.5:6379 or "
                            "ray://head:10001; default: RAY_ADDRESS, else a new Ray on this machine bound to 127.0.0.1")
    group.add_argument("--workers", type=int, default=None, metavar="N",
                       help="ray: inference actors, each with one ONNX Runtime session (default: cluster CPUs / "
                            "--threads, or one per GPU)")
    group.add_argument("--threads", type=int, default=None, metavar="T",
                       help="ONNX Runtime threads per session (default: all CPUs locally, 1 per Ray worker)")
    group.add_argument("--gpus-per-worker", type=float, default=None, metavar="G",
                       help="ray: GPUs per inference actor (default: 1 when the cluster has GPUs and onnxruntime-gpu "
                            "is installed, else 0; 0.5 packs two actors per GPU)")


def checked_inputs(command: str, args: argparse.Namespace, conflict: str | None = None) -> tuple[int | None, list[Path], list[str]]:
    """Engine options checked and PATHs expanded, each problem printed on stderr: (the exit status to stop
    with, or None to go on; the recordings; the problems with PATHs)."""
    problem = check_engine_arguments(args) or conflict
    if problem is not None:
        print(f"{command}: {problem}", file=sys.stderr)
        return 2, [], []
    inputs, problems = find_inputs(args.paths)
    for problem in problems:
        print(f"{command}: {problem}", file=sys.stderr)
    if not inputs:
        print(f"{command}: no recording to {command}", file=sys.stderr)
        return 1, [], problems
    return None, inputs, problems


def guarded(command: str, body: Callable[[], Any]) -> Any:
    """body(), or None after one stderr line when it raises what a user can fix: a missing extra, a bad
    bundle or channel map, another model's outputs in OUT (CohortError), a Ray address that does not answer."""
    try:
        return body()
    except ModuleNotFoundError as error:
        print(f"{command}: missing dependency {error.name!r} (pip install 'physioserve[ray]')", file=sys.stderr)
    except (ValueError, ConnectionError) as error:
        print(f"{command}: {error}", file=sys.stderr)
    return None


def check_engine_arguments(args: argparse.Namespace) -> str | None:
    """A problem with the engine options, or None."""
    if args.engine == "local":
        given = [flag for flag, value in (("--ray-address", args.ray_address), ("--workers", args.workers),
                                          ("--gpus-per-worker", args.gpus_per_worker)) if value is not None]
        if given:
            return f"{', '.join(given)}: only with --engine ray"
    for flag, value in (("--workers", args.workers), ("--threads", args.threads)):
        if value is not None and value < 1:
            return f"{flag} {value}: must be at least 1"
    if args.gpus_per_worker is not None and args.gpus_per_worker < 0:
        return f"--gpus-per-worker {args.gpus_per_worker}: must be 0 or more"
    return None


def run_cohort(job: CohortJob, inputs: list[Path], stream: Callable[[list[Path]], Iterable[Outcome]], *, resume: bool,
               progress: bool) -> tuple[Plan, list[Outcome]]:
    """Plan, run `stream(todo)` with a progress bar, and summarise. Raises CohortError (see `plan`)."""
    planned = plan(job, inputs, resume)
    for problem in planned.problems:
        print(f"{job.command}: {problem}", file=sys.stderr)
    clean_partials(job.out)
    outcomes = collect(job, stream(planned.todo), len(planned.todo), progress=progress) if planned.todo else []
    summarise(job, planned, outcomes)
    return planned, outcomes


def engine(job: CohortJob, args: argparse.Namespace, bundle) -> Callable[[list[Path]], Iterator[Outcome]]:
    """The `--engine` chosen in `args` as a function todo -> outcomes that sets up (a session, or a Ray
    dataset) and says so on stderr before returning the stream (`run_local` or `cohort_ray.run_ray`)."""

    def local(todo: list[Path]) -> Iterator[Outcome]:
        from .runtime import InferenceSession

        session = InferenceSession(bundle, variant=args.variant, threads=args.threads)
        print(f"{job.command}: {len(todo)} recording(s) with {bundle.name} {bundle.version} ({bundle.source}, "
              f"{', '.join(session.providers)}) -> {job.out}", file=sys.stderr)
        return run_local(job, todo, session)

    def ray(todo: list[Path]) -> Iterator[Outcome]:
        from .cohort_ray import run_ray

        return run_ray(job, todo, bundle, variant=args.variant, workers=args.workers, threads=args.threads,
                       gpus_per_worker=args.gpus_per_worker, address=args.ray_address)

    return ray if args.engine == "ray" else local
