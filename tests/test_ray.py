"""`--engine ray` on a local Ray cluster (2 CPUs, every server on 127.0.0.1): `score` and `embed` write the
same files as `--engine local` (compared byte for byte) on a synthetic PhysioNet-layout corpus, EDF files
and the field cases; a corrupt file is reported and the others are written; the night-context bundle
and the GPU layout (`staged`, run here on a CPU worker) give the same numbers; a run killed half-way
and started again finishes the rest without redoing the done recordings.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read when ray is imported: a loopback-only single-machine Ray

import pytest  # noqa: E402
import ray  # noqa: E402
from context_fixtures import context_pipeline  # noqa: E402
from test_export_fixtures import tiny_pipeline, write_edf  # noqa: E402

from physioserve.bundle import read_bundle  # noqa: E402
from physioserve.cli import main  # noqa: E402
from physioserve.cohort_ray import run_ray  # noqa: E402
from physioserve.embed import EmbedJob  # noqa: E402
from physioserve.score import ScoreJob  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    return tiny_pipeline(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def cluster():
    """A local Ray of 2 CPUs for this module; its servers must all listen on loopback addresses only."""
    import psutil

    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=400 << 20,
             _temp_dir=tempfile.mkdtemp(prefix="ray-"), logging_level="WARNING")
    try:
        assert ray.util.get_node_ip_address() == "127.0.0.1"
        ours = {p.pid for p in psutil.Process().children(recursive=True)} | {os.getpid()}
        listening = {c.laddr.ip for c in psutil.net_connections("inet") if c.status == "LISTEN" and c.pid in ours}
        assert listening and listening <= LOOPBACK, listening
        yield ray.cluster_resources()
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """3 synthetic PhysioNet-2018 records (WFDB, 12 min), 2 EDF+ files written by pyedflib, and a corrupt EDF."""
    root = tmp_path_factory.mktemp("corpus")
    assert main(["synth", str(root), "--records", "3", "--hours", "0.2", "--seed", "4", "--workers", "1", "--quiet"]) == 0
    write_edf(root / "night_a.edf", minutes=11)
    write_edf(root / "night_b.edf", fs=256, minutes=7, annotate=False, seed=3)
    (root / "broken.edf").write_bytes(b"0       " + b"not an EDF header" * 20)
    return root


def files_of(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir()) if f.is_file()}


def test_score_and_embed_on_ray_write_the_local_files_and_report_the_corrupt_one(pipeline, cluster, corpus, tmp_path,
                                                                                    capsys):
    assert cluster["CPU"] == 2
    bundle = ["--bundle", str(pipeline["bundle"]), "--no-progress"]
    for command, marker in (("score", ".summary.json"), ("embed", ".parquet")):
        local, on_ray = tmp_path / f"{command}-local", tmp_path / f"{command}-ray"
        assert main([command, str(corpus), "--out", str(local), *bundle, *(["--plot"] if command == "score" else [])]) == 1
        capsys.readouterr()
        assert main([command, str(corpus), "--out", str(on_ray), *bundle, "--engine", "ray",
                     *(["--plot"] if command == "score" else [])]) == 1  # 1: the corrupt file
        err = capsys.readouterr().err
        assert "on Ray (2 CPUs, 0 GPUs): 2 worker(s)" in err and f"5 of 6 recording(s) {command[:5]}" in err
        assert [line for line in err.splitlines() if "failed:" in line][0].startswith(f"{command}: {corpus / 'broken.edf'}")
        errors = json.loads((on_ray / "_errors.json").read_text())
        assert [e["record"] for e in errors] == ["broken"] and "broken.edf" in errors[0]["error"]
        done = sorted(f.name[: -len(marker)] for f in on_ray.glob(f"*{marker}"))
        assert done == ["night_a", "night_b", "tr90-0001", "tr90-0002", "tr90-0003"]
        assert files_of(on_ray) == files_of(local)  # byte for byte, tables, summaries, plots and Parquet alike
        assert not list(on_ray.glob(".partial-*"))
    summary = json.loads((tmp_path / "score-ray" / "night_b.summary.json").read_text())
    assert summary["epochs"] == 14 and summary["channel_rates_hz"]["eeg"] == 256


def test_field_cases_score_on_ray_as_locally(pipeline, cluster, shared_data, tmp_path, capsys):
    field = shared_data / "field-cases"
    inputs = [str(field / n) for n in ("20a_eeg_flat_second_half.edf", "01a_physmin_eq_physmax.edf", "rec17a",
                                       "15b_signals_record_duration_0.edf")]
    common = ["--bundle", str(pipeline["bundle"]), "--no-progress"]
    assert main(["score", *inputs, "--out", str(tmp_path / "local"), *common]) == 1
    assert main(["score", *inputs, "--out", str(tmp_path / "ray"), *common, "--engine", "ray", "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert "'duration of a data record' is 0 s" in err
    assert files_of(tmp_path / "ray") == files_of(tmp_path / "local")
    flat = json.loads((tmp_path / "ray" / "20a_eeg_flat_second_half.summary.json").read_text())
    assert flat["epochs"] == 10 and flat["epochs_per_modality_set"] == {"eeg+eog+emg": 5, "eog+emg": 5}
    assert json.loads((tmp_path / "ray" / "rec17a.summary.json").read_text())["channel_rates_hz"]["ecg"] == 500


def test_night_context_bundle_and_the_gpu_layout_give_the_local_numbers(cluster, corpus, tmp_path_factory, tmp_path):
    """The staged layout (read tasks -> inference actors -> write tasks, what GPU workers use) on 1 CPU worker."""
    bundle = read_bundle(context_pipeline(tmp_path_factory.getbasetemp())["bundle"])
    assert bundle.context_path is not None
    inputs = sorted(p for p in corpus.iterdir() if p.is_dir() or p.suffix == ".edf")
    args = ["--bundle", str(bundle.path), "--no-progress"]
    for command, job in (("score", ScoreJob(tmp_path / "score-staged", {"name": bundle.name, "version": bundle.version},
                                            fmt="json")),
                         ("embed", EmbedJob(tmp_path / "embed-staged", bundle))):
        local = tmp_path / f"{command}-local"
        main([command, *map(str, inputs), "--out", str(local), *args, *(["--format", "json"] if command == "score" else [])])
        outcomes = list(run_ray(job, inputs, bundle, workers=1, staged=True))
        failed = {o.record: o.error for o in outcomes if o.error}
        assert list(failed) == ["broken"] and len(outcomes) == 6
        assert files_of(job.out) == {k: v for k, v in files_of(local).items() if k != "_errors.json"}
    night = json.loads((tmp_path / "score-staged" / "night_a.json").read_text())
    assert night["summary"]["staging"] == "night context" and "window_p_W" in night["columns"]
    import pyarrow.parquet as pq

    assert "night_p_REM" in pq.read_schema(tmp_path / "embed-staged" / "night_a.parquet").names


def _ray_processes(temp_dir: str) -> list[int]:
    """PIDs of the processes of a Ray started with RAY_TMPDIR=temp_dir (its sessions live there)."""
    import psutil

    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        if any(temp_dir in part for part in (process.info["cmdline"] or [])):
            found.append(process.info["pid"])
    return found


def test_a_run_killed_half_way_finishes_the_rest_when_started_again(pipeline, cluster, tmp_path, capsys):
    """`score --engine ray` in its own process (and its own local Ray) is SIGKILLed once some recordings are
    done; the rerun skips exactly those (their files untouched) and scores the rest."""
    data = tmp_path / "data"
    data.mkdir()
    names = [f"n{i:02d}" for i in range(10)]
    for i, name in enumerate(names):
        write_edf(data / f"{name}.edf", minutes=30, annotate=False, seed=i)
    out = tmp_path / "out"
    temp_dir = tempfile.mkdtemp(prefix="rk-")
    env = {**os.environ, "RAY_TMPDIR": temp_dir}
    env.pop("RAY_ADDRESS", None)
    command = [sys.executable, "-m", "physioserve.cli", "score", str(data), "--out", str(out), "--bundle",
               str(pipeline["bundle"]), "--engine", "ray", "--ray-address", "local", "--workers", "1", "--no-progress"]
    with open(tmp_path / "first.log", "wb") as log:
        first = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and first.poll() is None and not list(out.glob("*.summary.json")):
            time.sleep(0.01)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        for pid in _ray_processes(temp_dir):  # the killed run's Ray (raylet, GCS, workers)
            with __import__("contextlib").suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    done = {f.name: f.stat() for f in out.iterdir() if f.is_file()}
    finished = sorted(n for n in names if f"{n}.summary.json" in done)
    assert 1 <= len(finished) < len(names), (finished, (tmp_path / "first.log").read_text()[-3000:])
    assert main(command[3:]) == 0  # the rerun: this process, on the module's Ray
    err = capsys.readouterr().err
    assert f"{len(names) - len(finished)} of {len(names) - len(finished)} recording(s) scored" in err
    assert f"{len(finished)} already done there, skipped" in err
    for name, stat in done.items():  # what the first run finished was not written again
        if name.endswith(".summary.json") or name.replace(".epochs.csv", ".summary.json") in done:
            assert (out / name).stat().st_mtime_ns == stat.st_mtime_ns and (out / name).stat().st_ino == stat.st_ino
    assert sorted(f.name for f in out.iterdir()) == sorted(f"{n}.{kind}" for n in names for kind in ("epochs.csv", "summary.json"))
    assert main(["score", str(data), "--out", str(tmp_path / "local"), "--bundle", str(pipeline["bundle"]), "--no-progress"]) == 0
    assert files_of(out) == files_of(tmp_path / "local")
