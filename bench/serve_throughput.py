"""HTTP /predict throughput with concurrent clients vs in-process ONNX Runtime (same bundle, same machine).

In-process baselines, measured first (server not running): (a) the model alone, `InferenceSession.run`
on 64 preprocessed windows per call (the session runs them in its own chunks: 16 on CPU); (b)
preprocessing + model, one after the other, as a script would. Then `bentoml serve` is started
from the repository root on a free loopback port (PHYSIOSERVE_BUNDLE=--bundle), and N client threads
post /predict requests (4-modality 200 Hz windows, encoded once up front) for --seconds each, per body
kind (--body): JSON, or the binary npz body that physioserve.client sends (multipart/form-data with
the file windows_npz; windows_npz.py). The baselines are measured again after the HTTP runs and
averaged with the first (a shared machine's load drifts).
The clients run on the same machine and take CPU from the server: on a small machine that counts
against the HTTP figure; the table gives the CPUs the server (all its processes) and the clients
used during each run (/proc). Non-200 answers are counted, and the first few are kept in the JSON.
The server is stopped by its process group.

    python bench/serve_throughput.py --bundle runs/bench/paper-bundle --clients 1 4 16
    python bench/serve_throughput.py --bundle physioserve/assets/default_bundle --clients 4 16 --body npz --threads 2
    python bench/serve_throughput.py ... --server-env PHYSIOSERVE_PREPROCESS_NICE=0   # the server's settings
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from benchlib import machine, print_load

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_windows(n: int, fs: int = 200, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"fs": fs, **{m: np.round(rng.normal(0, 30, 30 * fs), 3).tolist() for m in ("eeg", "eog", "emg", "ecg")}}
            for _ in range(n)]


def in_process(bundle: Path, windows: list[dict], threads: int | None):
    """A function that measures the in-process baselines for `seconds` each (model; preprocessing + model)."""
    from physioserve.preprocessing import preprocess_modalities
    from physioserve.runtime import InferenceSession

    session = InferenceSession(bundle, threads=threads)
    raw = {m: (np.array([w[m] for w in windows]), windows[0]["fs"]) for m in ("eeg", "eog", "emg", "ecg")}
    signals, mask = preprocess_modalities(raw)
    session.run(signals[:64], mask[:64])

    def rate(fn, seconds: float) -> float:
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            done += fn()
        return done / (time.perf_counter() - start)

    def model_only() -> int:
        session.run(signals[:64], mask[:64])
        return min(64, len(signals))

    def with_preprocessing() -> int:
        s, m = preprocess_modalities({k: (v[0][:64], v[1]) for k, v in raw.items()})
        session.run(s, m)
        return len(s)

    def measure(seconds: float) -> dict:
        return {"model_windows_per_s": rate(model_only, seconds),
                "preprocess_model_windows_per_s": rate(with_preprocessing, seconds),
                "providers": session.providers, "threads": session.threads, "load_1min": os.getloadavg()[0]}

    return measure


def start_server(bundle: Path, env_extra: dict, log: Path) -> tuple[subprocess.Popen, str]:
    import requests

    port = free_port()
    env = {**os.environ, "PHYSIOSERVE_BUNDLE": str(bundle), "BENTOML_DO_NOT_TRACK": "true", **env_extra}
    process = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", "--host", "127.0.0.1", "--port", str(port)],
                               cwd=REPO, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        if process.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except requests.RequestException:
            pass
        time.sleep(0.5)
    stop_server(process)
    raise RuntimeError("server not ready after 300 s")


def stop_server(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def request_bodies(windows: list[dict], kinds: list[str]) -> dict[str, tuple[bytes, str]]:
    """{kind: (body, Content-Type)} of one /predict request of `windows`: json, or npz (what physioserve.client sends)."""
    from urllib3 import encode_multipart_formdata

    from physioserve.windows_npz import FIELD, write_windows_npz

    bodies = {}
    for kind in kinds:
        if kind == "json":
            bodies[kind] = (json.dumps({"windows": windows}).encode(), "application/json")
        else:
            arrays = {m: np.array([w[m] for w in windows]) for m in ("eeg", "eog", "emg", "ecg")}
            npz = write_windows_npz(windows[0]["fs"], arrays)
            bodies[kind] = encode_multipart_formdata({FIELD: ("windows.npz", npz, "application/octet-stream")})
    return bodies


def batch_totals(url: str) -> tuple[float, float]:
    """(sum, count) of the adaptive batch sizes so far, from the server's Prometheus metrics."""
    import requests

    totals = [0.0, 0.0]
    for line in requests.get(f"{url}/metrics", timeout=30).text.splitlines():
        for i, suffix in enumerate(("_sum", "_count")):
            if line.startswith(f"bentoml_service_adaptive_batch_size{suffix}"):
                totals[i] += float(line.rsplit(" ", 1)[1])
    return totals[0], totals[1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and all its descendants so far (/proc, Linux)."""
    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def http_load(url: str, body: tuple[bytes, str], per_request: int, clients: int, seconds: float,
              server_pid: int | None = None) -> dict:
    import requests

    latencies: list[float] = []
    errors = [0]
    error_samples: list[str] = []
    stop = time.perf_counter() + seconds
    lock = threading.Lock()

    def client() -> None:
        with requests.Session() as http:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                response = http.post(f"{url}/predict", data=body[0], headers={"Content-Type": body[1]}, timeout=300)
                with lock:
                    if response.status_code == 200:
                        latencies.append(time.perf_counter() - t0)
                    else:
                        errors[0] += 1
                        if len(error_samples) < 3:
                            error_samples.append(f"{response.status_code}: {response.text[:300]}")

    start = time.perf_counter()
    cpu_start = (cpu_seconds(server_pid) if server_pid else 0.0, time.process_time())
    workers = [threading.Thread(target=client) for _ in range(clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    server_cpu = (cpu_seconds(server_pid) - cpu_start[0]) / elapsed if server_pid else None
    client_cpu = (time.process_time() - cpu_start[1]) / elapsed
    ms = sorted(1e3 * x for x in latencies)
    return {"clients": clients, "requests": len(latencies), "errors": errors[0],
            "windows_per_s": len(latencies) * per_request / elapsed,
            "error_samples": error_samples, "server_cpus": server_cpu, "client_cpus": client_cpu,
            "p50_ms": statistics.median(ms) if ms else None, "p95_ms": ms[int(0.95 * (len(ms) - 1))] if ms else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, required=True, help="bundle folder (bench/onnx_speed.py writes runs/bench/<size>-bundle)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--windows-per-request", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per measurement")
    parser.add_argument("--body", nargs="+", choices=("json", "npz"), default=["json", "npz"],
                        help="request body kinds to measure (default both)")
    parser.add_argument("--threads", type=int, default=None, help="ORT intra-op threads (default: all CPUs)")
    parser.add_argument("--server-threads", type=int, default=None, help="the server's ORT threads (default: --threads)")
    parser.add_argument("--server-env", nargs="*", default=[], help="extra NAME=VALUE settings of the server")
    parser.add_argument("--out", type=Path, default=Path("bench/results/serve_throughput.json"))
    args = parser.parse_args()
    load_start = os.getloadavg()

    windows = make_windows(64)
    measure = in_process(args.bundle, windows, args.threads)
    before = measure(args.seconds)
    bodies = request_bodies(windows[: args.windows_per_request], args.body)
    server_threads = args.server_threads or args.threads
    env_extra = {"PHYSIOSERVE_THREADS": str(server_threads)} if server_threads else {}
    for item in args.server_env:
        name, sep, value = item.partition("=")
        if not sep or name in ("PHYSIOSERVE_BUNDLE", "PHYSIOSERVE_THREADS"):
            parser.error(f"--server-env {item!r}: give NAME=VALUE; the bundle and threads are --bundle / --server-threads")
        env_extra[name] = value
    log = Path("runs/bench/serve_throughput.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    process, url = start_server(args.bundle, env_extra, log)
    try:
        rows = []
        for kind, body in bodies.items():
            http_load(url, body, args.windows_per_request, 2, 3.0)  # warm-up
            for c in args.clients:
                start = batch_totals(url)
                row = http_load(url, body, args.windows_per_request, c, args.seconds, process.pid)
                end = batch_totals(url)
                row["mean_batch"] = (end[0] - start[0]) / max(1.0, end[1] - start[1])
                rows.append({"body": kind, "body_bytes": len(body[0]), **row, "load_1min": os.getloadavg()[0]})
    finally:
        stop_server(process)
    after = measure(args.seconds)  # the load of a shared machine drifts: bracket the HTTP runs
    base = {**before, **{k: (before[k] + after[k]) / 2 for k in ("model_windows_per_s", "preprocess_model_windows_per_s")}}
    meta = json.loads((args.bundle / "bundle.json").read_text())
    model, both = base["model_windows_per_s"], base["preprocess_model_windows_per_s"]
    print(f"{meta['model']['size']} model, {args.windows_per_request} windows (4 modalities, 200 Hz) per request, "
          f"{os.cpu_count()} CPUs, {machine()}")
    print(f"in-process (mean of before / after the HTTP runs): model {model:.1f} windows/s "
          f"({before['model_windows_per_s']:.1f} / {after['model_windows_per_s']:.1f}), preprocessing + model "
          f"{both:.1f} windows/s ({before['preprocess_model_windows_per_s']:.1f} / "
          f"{after['preprocess_model_windows_per_s']:.1f}); {base['providers'][0]}, {base['threads']} threads")
    print(f"{'body':>5} {'MB':>5} {'clients':>7} {'windows/s':>10} {'p50 ms':>8} {'p95 ms':>8} {'errors':>6} "
          f"{'% of model':>10} {'% of prep+model':>15} {'batch':>6} {'server CPUs':>11} {'client CPUs':>11}")
    for r in rows:
        print(f"{r['body']:>5} {r['body_bytes'] / 1e6:>5.2f} {r['clients']:>7} {r['windows_per_s']:>10.1f} "
              f"{r['p50_ms']:>8.0f} {r['p95_ms']:>8.0f} {r['errors']:>6} {100 * r['windows_per_s'] / model:>9.0f}% "
              f"{100 * r['windows_per_s'] / both:>14.0f}% {r['mean_batch']:>6.1f} {r['server_cpus']:>11.2f} {r['client_cpus']:>11.2f}")
    best = {kind: max(r["windows_per_s"] for r in rows if r["body"] == kind) for kind in bodies}
    for kind, rate in best.items():
        print(f"HTTP ({kind}) at saturation: {100 * rate / model:.0f} % of in-process model throughput, "
              f"{100 * rate / both:.0f} % of in-process preprocessing + model")
    print_load(load_start)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"load_average_start_end": [load_start, os.getloadavg()],
                                    "machine": machine(), "cpus": os.cpu_count(),
                                    "size": meta["model"]["size"], "windows_per_request": args.windows_per_request,
                                    "in_process": base, "in_process_before_after": [before, after], "http": rows,
                                    "http_over_model": {k: v / model for k, v in best.items()},
                                    "http_over_preprocess_model": {k: v / both for k, v in best.items()}},
                                   indent=1))


if __name__ == "__main__":
    main()
