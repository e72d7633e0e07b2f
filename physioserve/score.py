"""`physioserve score PATH... --out DIR`: score recordings locally or through a running service.

    physioserve score night1.edf records/ --out scored --plot            # local, default bundle
    physioserve score night1.edf --out scored --bundle bundles/small      # a given bundle folder
    physioserve score records/ --out scored --url http://127.0.0.1:3000   # through `bentoml serve`

PATH: EDF/BDF files, WFDB records (a `.hea`, or a folder holding `<folder>.hea`), or folders
searched recursively for both (EDF+ files named `*hypnogram*` hold annotations only and are
skipped). Per recording OUT gets `<record>.epochs.csv` + `<record>.summary.json` (or `<record>.json`
with --format json) and, with --plot, `<record>.hypnogram.png`. A file that fails gets one line on
stderr and the rest go on; the exit status is 1 when any failed. Local and --url scoring write the
same tables: the service computes them with the same code (`physioserve.scoring`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .scoring import NightScore, upload_payload, write_score

HELP = "score EDF/BDF/WFDB recordings: per-epoch stage and arousal probabilities, night summary, hypnogram"

RECORDING_SUFFIXES = (".edf", ".bdf", ".hea")


def add_arguments(parser: argparse.ArgumentParser) -> None:
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
    parser.add_argument("--variant", choices=("fp32", "int8"), default=None, help="local only: graph variant of the bundle")
    parser.add_argument("--timeout", type=float, default=600.0, help="--url only: seconds to wait per recording (default 600)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


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
    return path.name if path.is_dir() else path.stem


class LocalScorer:
    """Read -> preprocess -> ONNX Runtime -> NightScore, in this process."""

    def __init__(self, bundle: str | None, variant: str | None, channel_map: str | None, fill_gaps: bool = False):
        from .bundle import resolve_bundle
        from .modalities import parse_channel_map
        from .runtime import InferenceSession

        self.session = InferenceSession(resolve_bundle(bundle), variant=variant)
        self.channel_map = parse_channel_map(channel_map)
        self.fill_gaps = fill_gaps
        self.model = {"name": self.session.bundle.name, "version": self.session.bundle.version}

    def describe(self) -> str:
        b = self.session.bundle
        return f"{b.name} {b.version} ({b.source}, {', '.join(self.session.providers)})"

    def __call__(self, path: Path) -> NightScore:
        from .io import read_recording
        from .scoring import score_recording

        recording = read_recording(path, channel_map=self.channel_map or None, fill_gaps=self.fill_gaps)
        return score_recording(recording, self.session, model=self.model)


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


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    inputs, problems = find_inputs(args.paths)
    for problem in problems:
        print(f"score: {problem}", file=sys.stderr)
    if not inputs:
        print("score: nothing to score", file=sys.stderr)
        return 1
    try:
        scorer = (RemoteScorer(args.url, args.channel_map, args.timeout, args.fill_gaps) if args.url
                  else LocalScorer(args.bundle, args.variant, args.channel_map, args.fill_gaps))
    except (ValueError, ConnectionError) as error:
        print(f"score: {error}", file=sys.stderr)
        return 1
    print(f"score: {len(inputs)} recording(s) with {scorer.describe()} -> {args.out}", file=sys.stderr)
    failed = 0
    bar = tqdm(inputs, desc="score", unit="rec", disable=args.no_progress, file=sys.stderr)
    for path in bar:
        bar.set_postfix_str(path.name)
        try:
            write_score(scorer(path), args.out, fmt=args.format, plot=args.plot)
        except Exception as error:  # noqa: BLE001 - one bad file must not stop the rest
            failed += 1
            tqdm.write(f"score: {path}: failed: {error}", file=sys.stderr)
    print(f"score: {len(inputs) - failed} of {len(inputs)} recording(s) scored into {args.out}", file=sys.stderr)
    return 1 if failed or problems else 0
