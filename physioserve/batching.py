"""How /predict shares the CPU with the model: preprocessing on a low-priority pool, and windows parked
around BentoML's adaptive batching, so that no array goes through JSON twice.

Preprocessing (`PreprocessingPool`): /predict validates and preprocesses its windows on a pool of
its own whose threads run at a lower CPU priority (Linux `nice` per thread; elsewhere the process's
priority; PHYSIOSERVE_PREPROCESS_NICE, an absolute nice value, default 19; threads:
PHYSIOSERVE_PREPROCESS_THREADS, default the CPUs). Under load the next requests' preprocessing then
waits for the gaps between model batches instead of taking cores from ONNX Runtime's intra-op
threads mid-batch, where one pre-empted thread stalls the whole operator. Measured on 2 cores, 16
clients, `small`, 8 windows per request (bench/serve_throughput.py, docs/BENCHMARKS.md, run 4):
82-84 % of in-process preprocessing + model at nice 0, 84-86 % at 19. The price: while any thread
at normal priority is busy (the model, a /score night, other programs, ORT threads that spin with
PHYSIOSERVE_SPIN=1) /predict's preprocessing waits for it; on a machine shared with other CPU-bound
jobs set PHYSIOSERVE_PREPROCESS_NICE=0.

Parking (`WindowParking`): `/predict` parks its preprocessed windows here under random keys
(`ref:<uuid4 hex>`) and sends only the keys to the batchable `/infer` route through BentoML's
in-process client; `/infer` looks the keys up, runs the model on the whole adaptive batch and returns
packed outputs (`runtime.pack_outputs`). On a remote deployment (BENTOCLOUD_DEPLOYMENT_URL: the
self-client may reach another replica) the windows travel packed (`runtime.pack_windows`) instead.

BentoML 1.4's in-process client recycles its HTTP session every 100 calls and drops the calls in
flight at that moment; the windows are still parked, so the call is simply sent again (up to
INFER_ATTEMPTS times).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .runtime import cpu_count, pack_outputs, pack_windows, unpack_window

REF = "ref:"  # prefix of a parked window's key
INFER_ATTEMPTS = 3
ENV_NICE = "PHYSIOSERVE_PREPROCESS_NICE"
ENV_THREADS = "PHYSIOSERVE_PREPROCESS_THREADS"


class PreprocessingPool:
    """Threads that run /predict's validation and preprocessing at a lower CPU priority (module doc)."""

    def __init__(self, threads: int | None = None, nice: int | None = None) -> None:
        self.threads = threads or int(os.environ.get(ENV_THREADS, 0)) or cpu_count()
        self.nice = int(os.environ.get(ENV_NICE, 19)) if nice is None else nice
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="preprocess", initializer=self._lower_priority)

    def _lower_priority(self) -> None:
        """Raise this thread's nice value to self.nice, an absolute value (0-19); never lower it (that
        needs privileges). Linux only: there a thread has a priority of its own (setpriority on its id)."""
        if not sys.platform.startswith("linux"):
            return
        thread = threading.get_native_id()
        try:
            if self.nice > os.getpriority(os.PRIO_PROCESS, thread):
                os.setpriority(os.PRIO_PROCESS, thread, self.nice)
        except OSError:  # not allowed here: the thread keeps the process's priority
            pass

    async def run(self, fn, *args):
        """fn(*args) on the pool, awaited, in a copy of the caller's context (trace and log context, as
        anyio.to_thread keeps it); its exceptions propagate."""
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._pool, context.run, functools.partial(fn, *args))


class WindowParking:
    """The windows of the requests in flight in this process: key -> (signals [4, 3000], mask [4])."""

    def __init__(self) -> None:
        self._parked: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self._parked)

    async def infer(self, client, signals: np.ndarray, mask: np.ndarray) -> list[str]:
        """Packed outputs of `signals` [n, 4, 3000] / `mask` [n, 4] through `client.infer` (the batching route)."""
        if os.environ.get("BENTOCLOUD_DEPLOYMENT_URL"):
            return await client.infer(windows=pack_windows(signals, mask))
        import aiohttp

        keys = [f"{REF}{uuid.uuid4().hex}" for _ in range(len(signals))]
        self._parked.update(zip(keys, zip(signals, mask)))
        try:
            for attempt in range(INFER_ATTEMPTS):
                try:
                    return await client.infer(windows=keys)
                except aiohttp.ClientError:
                    if attempt == INFER_ATTEMPTS - 1:
                        raise
        finally:
            for key in keys:  # on success, failure or cancellation nothing stays parked
                self._parked.pop(key, None)
        raise AssertionError("unreachable")

    def run(self, session, items: list[str]) -> list[str]:
        """The batch side: items (keys parked here, or packed windows) -> packed outputs; "" for an unknown key."""
        windows = [self._parked.get(item) if item.startswith(REF) else unpack_window(item) for item in items]
        found = [i for i, w in enumerate(windows) if w is not None]
        results = [""] * len(items)
        if found:
            signals = np.stack([windows[i][0] for i in found])  # [k, 4, 3000]
            mask = np.stack([windows[i][1] for i in found])  # [k, 4]
            for i, packed in zip(found, pack_outputs(session.run(signals, mask))):
                results[i] = packed
        return results
