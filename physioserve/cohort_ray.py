"""`--engine ray`: a cohort run spread over a Ray cluster with Ray Data (`pip install 'physioserve[ray]'`).

Each input recording is one row of a Ray Data dataset, streamed through one of two layouts:

- CPU workers (`--gpus-per-worker 0`, the default without GPUs): one actor pool, each actor holding
  one ONNX Runtime session, runs the whole chain for each recording it is given: read + preprocess
  (`cohort.prepare`), `scoring.predict_night`, write (`cohort.finish`). A night's windows (about
  50 MB) never leave the process that made them, and no stage waits for CPUs the actors hold.
- GPU workers (`staged`): read + preprocess as CPU tasks -> actors that only run the graphs on their
  GPU -> writing as CPU tasks. The GPU actors reserve no CPU, so reading and writing keep every CPU.

Both call the functions `--engine local` calls, so the files are identical. Inputs and OUT must be at
the same path on every node (a shared file system); the bundle travels to the workers through Ray's
object store. A recording that fails comes back as a row with its error; a worker that dies (out of
memory, a node lost) loses its rows, which are reported as failed, and the run goes on.

Connecting (`connect`): an existing cluster by address (`auto`: the one `ray start` runs on this
machine), else a new single-machine Ray whose servers all bind 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .bundle import CARD_FILE, META_FILE, Bundle
from .cohort import CohortJob, Outcome, error_text, finish, prepare, record_name

LOCAL = "local"
# Ray reads this when it is imported: "0" makes a single-machine Ray use 127.0.0.1 as its node address,
# so every server it starts binds the loopback interface only.
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
NO_RESULT = "no result came back from the Ray workers (a worker died: out of memory? see the Ray logs)"


def connect(address: str | None) -> bool:
    """Join the Ray cluster at `address` (None: RAY_ADDRESS, else `local`: a new Ray on this machine, loopback
    only). Returns True when this call started or joined Ray (the caller shuts it down), False when this
    process was already connected (that connection is used)."""
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or LOCAL
    if address == LOCAL:
        os.environ[LOOPBACK_ENV] = "0"
    import ray

    if address == LOCAL:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False  # what LOOPBACK_ENV sets, when ray was imported before it was set
        ray.init(address=LOCAL, include_dashboard=False, logging_level=logging.WARNING)
        node = ray.util.get_node_ip_address()
        if node != "127.0.0.1":
            ray.shutdown()
            raise ConnectionError(f"the local Ray listens on {node}, not on 127.0.0.1 only; start it with {LOOPBACK_ENV}=0 "
                                  "in the environment, or give --ray-address of a cluster")
    else:
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except ConnectionError as error:
            raise ConnectionError(f"Ray cluster {address!r} does not answer ({error}); start one (`ray start --head`), "
                                  "give --ray-address HOST:6379, or --ray-address local for a Ray on this machine") from None
    return True


def bundle_files(bundle: Bundle, variant: str | None) -> dict[str, bytes]:
    """The bundle files a session opens (graph variant, night-context graph, metadata, card), by name."""
    from .runtime import model_file

    names = {META_FILE, CARD_FILE, model_file(bundle, variant or "fp32")}
    if bundle.context_path is not None:
        names.add(bundle.context_path.name)
    return {name: (bundle.path / name).read_bytes() for name in sorted(names) if (bundle.path / name).is_file()}


def open_session(files, variant: str | None, threads: int, gpus: float):
    """An InferenceSession over shipped bundle files (written to a temporary folder, removed once loaded)."""
    import ray

    from .runtime import InferenceSession

    files = ray.get(files) if isinstance(files, ray.ObjectRef) else files
    folder = Path(tempfile.mkdtemp(prefix="physioserve-bundle-"))
    try:
        for name, data in files.items():
            (folder / name).write_bytes(data)
        return InferenceSession(folder, variant=variant, threads=threads, device="cuda" if gpus else "cpu")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _outcome_row(outcome: Outcome) -> dict:
    """An Outcome as a Ray Data row (fixed column types: '' for no error or report)."""
    return {"path": outcome.path, "record": outcome.record, "error": outcome.error or "", "epochs": outcome.epochs,
            "report": "" if outcome.report is None else json.dumps(outcome.report)}


def _row_outcome(row: dict) -> Outcome:
    return Outcome(path=row["path"], record=row["record"], error=row["error"] or None, epochs=int(row["epochs"]),
                   report=json.loads(row["report"]) if row["report"] else None)


class WholeWorker:
    """CPU layout: one ONNX Runtime session; read -> preprocess -> infer -> write per recording."""

    def __init__(self, job: CohortJob, files, variant: str | None, threads: int, gpus: float):
        self.job = job
        self.session = open_session(files, variant, threads, gpus)

    def __call__(self, row: dict) -> dict:
        from .cohort import process

        return _outcome_row(process(self.job, self.session, row["path"]))


def read_step(row: dict, job: CohortJob) -> dict:
    """GPU layout, CPU task: read and window one recording."""
    try:
        prepared = prepare(job, row["path"])
        return {"path": row["path"], "record": prepared.record, "error": "", "payload": pickle.dumps(prepared, protocol=5)}
    except Exception as error:  # noqa: BLE001 - reported, the others go on
        return {"path": row["path"], "record": record_name(Path(row["path"])), "error": error_text(error), "payload": b""}


class InferWorker:
    """GPU layout, actor: the graphs of one recording's windows (the night-context graph over the whole night)."""

    def __init__(self, files, variant: str | None, threads: int, gpus: float):
        self.session = open_session(files, variant, threads, gpus)

    def __call__(self, row: dict) -> dict:
        from .scoring import predict_night

        if row["error"]:
            return row
        try:
            prepared = pickle.loads(row["payload"])
            probs = predict_night(self.session, prepared.signals, prepared.mask)
            return {**row, "payload": pickle.dumps((prepared, probs), protocol=5)}
        except Exception as error:  # noqa: BLE001
            return {**row, "error": error_text(error), "payload": b""}


def write_step(row: dict, job: CohortJob) -> dict:
    """GPU layout, CPU task: write one recording's files."""
    if row["error"]:
        return _outcome_row(Outcome(path=row["path"], record=row["record"], error=row["error"]))
    try:
        prepared, probs = pickle.loads(row["payload"])
        return _outcome_row(finish(job, prepared, probs))
    except Exception as error:  # noqa: BLE001
        return _outcome_row(Outcome(path=row["path"], record=row["record"], error=error_text(error)))


def worker_gpus(requested: float | None, resources: dict) -> float:
    """GPUs per inference actor: as requested, else 1 when the cluster has GPUs and onnxruntime here has CUDA."""
    if requested is not None:
        return float(requested)
    import onnxruntime as ort

    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    return 1.0 if resources.get("GPU", 0) >= 1 and has_cuda else 0.0


def layout(resources: dict, workers: int | None, threads: int, gpus: float) -> int:
    """Inference actors: as asked, else as many as the cluster holds (CPUs / threads, or GPUs / gpus)."""
    if workers is not None:
        return workers
    if gpus > 0:
        return max(1, int(resources.get("GPU", 0) // gpus))
    return max(1, int(resources.get("CPU", 1) // threads))


def run_ray(job: CohortJob, todo: list[Path], bundle: Bundle, *, variant: str | None = None, workers: int | None = None,
            threads: int | None = None, gpus_per_worker: float | None = None, address: str | None = None,
            staged: bool | None = None) -> Iterator[Outcome]:
    """Connect, plan the dataset and say so on stderr; then the outcomes of `todo` as the cluster finishes
    them (any order), and a failed Outcome for each row lost. Ray is shut down at the end if this call
    started it.

    staged: the GPU layout (default: when the workers have GPUs); on CPU workers it needs more CPUs
    than workers, since its reading and writing tasks run beside the actors.
    """
    started = connect(address)
    try:
        import ray
        import ray.data

        resources = ray.cluster_resources()
        threads = threads or 1
        gpus = worker_gpus(gpus_per_worker, resources)
        workers = layout(resources, workers, threads, gpus)
        staged = gpus > 0 if staged is None else staged
        quiet_ray_data()
        files = ray.put(bundle_files(bundle, variant))
        session = {"files": files, "variant": variant, "threads": threads, "gpus": gpus}
        pool = ray.data.ActorPoolStrategy(size=workers)
        ds = ray.data.from_items([{"path": str(p)} for p in todo], override_num_blocks=len(todo))
        if staged:
            ds = ds.map(read_step, fn_kwargs={"job": job}, num_cpus=1)
            ds = ds.map(InferWorker, fn_constructor_kwargs=session, compute=pool, num_cpus=0 if gpus else threads,
                        num_gpus=gpus or None)
            ds = ds.map(write_step, fn_kwargs={"job": job}, num_cpus=1)
        else:
            ds = ds.map(WholeWorker, fn_constructor_kwargs={"job": job, **session}, compute=pool, num_cpus=threads)
        kind = f"{gpus:g} GPU" if gpus else f"{threads} thread(s)"
        print(f"{job.command}: {len(todo)} recording(s) on Ray ({resources.get('CPU', 0):g} CPUs, "
              f"{resources.get('GPU', 0):g} GPUs): {workers} worker(s) x {kind}, "
              f"{'staged' if staged else 'whole chain per worker'}; model {bundle.name} {bundle.version} -> {job.out}",
              file=sys.stderr)
    except BaseException:
        if started:
            ray.shutdown()
        raise
    return _stream(ds, todo, started)


def _stream(ds, todo: list[Path], started: bool) -> Iterator[Outcome]:
    try:
        seen = set()
        for row in ds.iter_rows():
            seen.add(row["path"])
            yield _row_outcome(row)
        for path in todo:
            if str(path) not in seen:
                yield Outcome(path=str(path), record=record_name(path), error=NO_RESULT)
    finally:
        if started:
            import ray

            ray.shutdown()


def quiet_ray_data() -> None:
    """No Ray Data progress bars (the caller shows one over recordings), no INFO lines; rows lost to a dead
    worker do not stop the run (`_stream` reports them)."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.max_errored_blocks = -1
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "Progress bars disabled"
