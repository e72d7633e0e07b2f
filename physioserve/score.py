"""`physioserve score PATH... --out DIR`: score recordings locally or through a running service.

    physioserve score night1.edf records/ --out scored --plot            # local, default bundle
    physioserve score night1.edf --out scored --bundle bundles/small      # a given bundle folder
    physioserve score records/ --out scored --url http://127.0.0.1:3000   # through `bentoml serve`
    physioserve score SC4001E0-PSG.edf --out scored --hypnogram SC4001EC-Hypnogram.edf   # vs an expert
    physioserve score records/ --out scored --hypnogram-dir experts/     # several, matched by name
    physioserve score cohort/ --out scored --engine ray --ray-address auto   # spread over a Ray cluster

PATH: EDF/BDF files, WFDB records (a `.hea`, or a folder holding `<folder>.hea`), or folders
searched recursively for both (EDF+ files named `*hypnogram*` hold annotations only and are
skipped). Per recording OUT gets `<record>.epochs.csv` + `<record>.summary.json` (or `<record>.json`
with --format json) and, with --plot, `<record>.hypnogram.png`. A file that fails gets one line on
stderr and the rest go on; the exit status is 1 when any failed. Local and --url scoring write the
same tables: the service computes them with the same code (`physioserve.scoring`).

Expert hypnograms: `--hypnogram FILE` (one recording) or `--hypnogram-dir DIR` (several; the naming
rule is `io.hypnogram.NAMING_RULE`), in any format `io.hypnogram.FORMATS` lists, read by
`read_hypnogram` with the epoch length inferred from the recording when the file gives no times.
Per recording OUT also gets `<record>.agreement.json` (`agreement.stage_agreement_report` plus how
the hypnogram was read) and `<record>.agreement.png` (predicted above expert); the run prints accuracy
and Cohen's kappa per recording and their mean. Hypnograms are read once before scoring starts: a bad
`--hypnogram` stops there; with `--hypnogram-dir` a bad or ambiguous one is a stderr line, its
recording is scored without agreement, and the exit status is 1.

Engines (`cohort`): `--engine local` (default) scores in this process; `--engine ray` spreads the
recordings over a Ray cluster (`cohort_ray`, docs/SCALING.md) and writes the same files. Each
recording's files are written to a staging folder and renamed into OUT, the summary (`<record>.json`
with --format json) last: with `--resume` (the default with --engine ray) a rerun skips the
recordings whose summary is there and was made by the same model. Failures are also listed in
`OUT/_errors.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .agreement import agreement_title, agreement_with_hypnogram, plot_hypnograms, stage_codes
from .cohort import (  # noqa: F401 - find_inputs: imported from here by training.adapt
    CohortJob,
    Outcome,
    add_engine_arguments,
    checked_inputs,
    engine,
    error_text,
    find_inputs,
    guarded,
    record_name,
    run_cohort,
    staging,
)
from .io.errors import RecordError
from .io.hypnogram import FORMATS as HYPNOGRAM_FORMATS
from .io.hypnogram import NAMING_RULE, find_hypnogram, read_hypnogram
from .scoring import NightScore, score_windows_outputs, upload_payload, write_score

HELP = "score EDF/BDF/WFDB recordings: per-epoch stage and arousal probabilities, night summary, hypnogram"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = f"--hypnogram-dir naming rule: {NAMING_RULE}."
    parser.add_argument("paths", nargs="+", type=Path, help="EDF/BDF files, WFDB records (.hea or record folder), or folders")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--bundle", default=None,
                       help="bundle folder or model-store tag (default: PHYSIOSERVE_BUNDLE, the model store, the packaged bundle)")
    where.add_argument("--url", default=None, help="score through a running service, e.g. http://127.0.0.1:3000")
    parser.add_argument("--format", choices=("csv", "json"), default="csv", help="per-epoch table as CSV (default) or JSON")
    parser.add_argument("--plot", action="store_true", help="also write a hypnogram PNG per recording")
    parser.add_argument("--channel-map", default=None, help="override the channel patterns, e.g. eeg=C4-A1,eog=EOG(L)")
    parser.add_argument("--fill-gaps", action="store_true",
                        help="EDF+D with gaps between data records: score it, the gaps as missing data (else refused)")
    parser.add_argument("--variant", choices=("fp32", "int8"), default=None, help="graph variant of the bundle (not with --url)")
    parser.add_argument("--timeout", type=float, default=600.0, help="--url only: seconds to wait per recording (default 600)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    expert = parser.add_mutually_exclusive_group()
    expert.add_argument("--hypnogram", type=Path, default=None, metavar="FILE",
                        help="expert hypnogram of the one recording given: writes <record>.agreement.json and "
                             ".agreement.png, prints accuracy and kappa")
    expert.add_argument("--hypnogram-dir", type=Path, default=None, metavar="DIR",
                        help="expert hypnograms of several recordings, matched by name (NAME.st, NAME.hyp, "
                             "NAME-Hypnogram.edf, NAME_hypnogram.csv, ...; Sleep-EDF's E0-PSG / EC-Hypnogram pairs)")
    parser.add_argument("--hypnogram-format", choices=tuple(HYPNOGRAM_FORMATS), default=None,
                        help="hypnogram format (default: detected from the content); numeric = 0 W 1 N1 2 N2 3 N3 4 REM, "
                             "dreams = [Hypnogram] + 5 W ... 0 S4 per 5 s")
    parser.add_argument("--hypnogram-epoch", type=float, default=None, metavar="SECONDS",
                        help="seconds per line of a hypnogram that gives no times (default: inferred from the "
                             "recording, one of 30, 20, 5 s)")
    add_engine_arguments(parser, "default: on with --engine ray, off otherwise (every recording is scored again)")


class ScoreJob(CohortJob):
    """Per recording: the per-epoch table and night summary (`scoring`), the hypnogram PNG with --plot,
    and the agreement with its expert hypnogram when it has one. Marker: the summary."""

    command, verb = "score", "scored"

    def __init__(self, out: Path, model: dict, *, fmt: str = "csv", plot: bool = False,
                 hypnograms: dict[Path, Path] | None = None, hypnogram_epoch: float | None = None,
                 hypnogram_format: str | None = None, channel_map: dict | None = None, fill_gaps: bool = False):
        super().__init__(out, model, channel_map, fill_gaps)
        self.fmt, self.plot = fmt, plot
        self.hypnograms = {str(k): Path(v) for k, v in (hypnograms or {}).items()}
        self.hypnogram_epoch, self.hypnogram_format = hypnogram_epoch, hypnogram_format

    def marker(self, record: str) -> str:
        return f"{record}.summary.json" if self.fmt == "csv" else f"{record}.json"

    def made_by(self, marker: Path) -> dict | None:
        try:
            data = json.loads(marker.read_text())
        except (OSError, ValueError):
            return None
        model = (data if self.fmt == "csv" else data.get("summary", {})).get("model") if isinstance(data, dict) else None
        return model if isinstance(model, dict) else None

    def keep(self, recording):
        return recording  # the summary reads channels, labels, notes and raw amplitudes from it

    def write(self, prepared, probs, folder: Path) -> dict | None:
        night = score_windows_outputs(prepared.kept, probs, prepared.mask, model=self.model)
        return self.write_night(night, prepared.path, folder)

    def write_night(self, night: NightScore, path: str | Path, folder: Path) -> dict | None:
        """The files of a scored night (local, Ray or --url), and the agreement report when it has a hypnogram."""
        write_score(night, folder, fmt=self.fmt, plot=self.plot)
        hypnogram = self.hypnograms.get(str(path))
        if hypnogram is None:
            return None
        return write_agreement(night, hypnogram, folder, epoch_s=self.hypnogram_epoch, fmt=self.hypnogram_format)


class RemoteScorer:
    """POST each recording to a service's /score (EDF/BDF as-is, WFDB records zipped)."""

    def __init__(self, url: str, channel_map: str | None, timeout: float, fill_gaps: bool = False):
        import httpx

        self.url = url.rstrip("/")
        self.channel_map = channel_map
        self.fill_gaps = fill_gaps
        self.client = httpx.Client(timeout=timeout)
        try:
            meta = self.client.post(f"{self.url}/metadata", json={})
            meta.raise_for_status()
        except httpx.HTTPError as error:
            raise ConnectionError(f"{self.url}: no physioserve service answers /metadata ({error})") from None
        self.meta = meta.json()

    def describe(self) -> str:
        return f"{self.meta['name']} {self.meta['version']} at {self.url}"

    def __call__(self, path: Path) -> NightScore:
        filename, payload = upload_payload(path)
        data = {"name": record_name(path)}
        if self.channel_map:
            data["channel_map"] = self.channel_map
        if self.fill_gaps:
            data["fill_gaps"] = "true"
        response = self.client.post(f"{self.url}/score", files={"file": (filename, payload, "application/octet-stream")},
                                    data=data)
        if response.status_code != 200:
            try:
                body = response.json()
                message = body.get("error") if isinstance(body, dict) else body
            except ValueError:
                message = response.text[:500]
            raise RuntimeError(f"service answered {response.status_code}: {message}")
        return NightScore.from_json(response.json())


def match_hypnograms(inputs: list[Path], args: argparse.Namespace) -> tuple[dict[Path, Path], list[str]]:
    """{recording: its expert hypnogram} from --hypnogram / --hypnogram-dir, each read once to check it;
    and the problems found (a missing match is a note, an unreadable or ambiguous file a problem)."""
    pairs: dict[Path, Path] = {}
    problems: list[str] = []
    if args.hypnogram is not None:
        if len(inputs) != 1:
            return {}, [f"--hypnogram compares one recording, {len(inputs)} given; use --hypnogram-dir for several"]
        pairs[inputs[0]] = args.hypnogram
    elif args.hypnogram_dir is not None:
        if not args.hypnogram_dir.is_dir():
            return {}, [f"{args.hypnogram_dir}: --hypnogram-dir is not a folder"]
        for path in inputs:
            try:
                found = find_hypnogram(record_name(path), args.hypnogram_dir, exclude=path)
            except RecordError as error:
                problems.append(str(error))
                continue
            if found is None:
                print(f"score: {path}: no hypnogram for {record_name(path)} in {args.hypnogram_dir}; scored "
                      "without agreement (naming rule: physioserve score --help)", file=sys.stderr)
            else:
                pairs[path] = found
    for path, hypnogram in list(pairs.items()):
        try:
            read_hypnogram(hypnogram, epoch_s=args.hypnogram_epoch, fmt=args.hypnogram_format)
        except (RecordError, OSError) as error:
            problems.append(f"{error}" + (f" ({path.name} is scored without agreement)" if args.hypnogram_dir else ""))
            del pairs[path]
    return pairs, problems


def write_agreement(score: NightScore, hypnogram: Path, out_dir: Path, *, epoch_s: float | None = None,
                    fmt: str | None = None) -> dict:
    """Compare a scored night with its expert hypnogram: writes <record>.agreement.json and .png."""
    pred = stage_codes(score.column("stage"))
    report, expert = agreement_with_hypnogram(pred, hypnogram, epoch_s=epoch_s, fmt=fmt)
    report = {"record": score.record, **report}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{score.record}.agreement.json").write_text(json.dumps(report, indent=1) + "\n")
    plot_hypnograms(pred, expert.stages, out_dir / f"{score.record}.agreement.png",
                    f"{agreement_title(score.record, report)} (predicted above, expert {hypnogram.name} below)")
    return report


def _print_agreements(reports: list[dict]) -> None:
    if not reports:
        return
    for report in reports:
        print(f"score: agreement {agreement_title(report['record'], report)}", file=sys.stderr)
    if len(reports) > 1:
        accuracy = [r["accuracy"] for r in reports if r["accuracy"] is not None]
        kappa = [r["kappa"] for r in reports if r["kappa"] is not None]
        mean = lambda v: f"{sum(v) / len(v):.3f}" if v else "–"  # noqa: E731
        print(f"score: mean over {len(reports)} recordings: accuracy {mean(accuracy)}, Cohen's kappa {mean(kappa)}",
              file=sys.stderr)


def remote(job: ScoreJob, scorer: RemoteScorer):
    """--url as an engine: each recording POSTed to the service, its answer written like a local one."""

    def scored(todo: list[Path]):
        for path in todo:
            try:
                night = scorer(path)
                with staging(job, record_name(path)) as folder:
                    report = job.write_night(night, path, folder)
                yield Outcome(path=str(path), record=record_name(path), epochs=len(night.rows), report=report)
            except Exception as error:  # noqa: BLE001 - one bad file must not stop the rest
                yield Outcome(path=str(path), record=record_name(path), error=error_text(error))

    def start(todo: list[Path]):
        print(f"score: {len(todo)} recording(s) with {scorer.describe()} -> {job.out}", file=sys.stderr)
        return scored(todo)

    return start


def run(args: argparse.Namespace) -> int:
    from .bundle import resolve_bundle
    from .modalities import parse_channel_map

    conflict = "--url scores through a service, --engine ray on a Ray cluster: give one of them" \
        if args.url and args.engine == "ray" else None
    code, inputs, problems = checked_inputs("score", args, conflict)
    if code is not None:
        return code
    hypnograms, hypnogram_problems = match_hypnograms(inputs, args)
    for problem in hypnogram_problems:
        print(f"score: {problem}", file=sys.stderr)
    if (args.hypnogram is not None and not hypnograms) or (args.hypnogram_dir and not args.hypnogram_dir.is_dir()):
        return 1  # the comparison asked for cannot happen: stop before scoring
    problems += hypnogram_problems
    options = dict(fmt=args.format, plot=args.plot, hypnograms=hypnograms, hypnogram_epoch=args.hypnogram_epoch,
                   hypnogram_format=args.hypnogram_format, fill_gaps=args.fill_gaps)

    def scored():
        if args.url:
            scorer = RemoteScorer(args.url, args.channel_map, args.timeout, args.fill_gaps)
            job = ScoreJob(args.out, {k: scorer.meta[k] for k in ("name", "version")}, **options)
            stream = remote(job, scorer)
        else:
            bundle = resolve_bundle(args.bundle)
            job = ScoreJob(args.out, {"name": bundle.name, "version": bundle.version},
                           channel_map=parse_channel_map(args.channel_map), **options)
            stream = engine(job, args, bundle)
        resume = args.resume if args.resume is not None else args.engine == "ray"
        return run_cohort(job, inputs, stream, resume=resume, progress=not args.no_progress)

    result = guarded("score", scored)
    if result is None:
        return 1
    planned, outcomes = result
    _print_agreements([o.report for o in outcomes if o.report])
    failed = any(o.error is not None for o in outcomes)
    return 1 if failed or problems or planned.problems else 0
