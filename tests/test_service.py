"""The BentoML service: in-process (validation, size limits, the ASGI app) and a real `bentoml serve` subprocess.

The server fixture starts `bentoml serve` from the repository root on a free loopback port with small
limits, waits for /readyz, and stops it by process group. Every bad input gets its 4xx and the
server keeps answering after each.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from test_export_fixtures import tiny_pipeline, write_edf, write_wfdb
from test_field_cases import REFUSED, SCORED, STD_UV, field, subsecond  # noqa: F401 - fixtures

from physioserve.api_models import Window
from physioserve.api_requests import BadInput, windows_to_arrays
from physioserve.preprocessing import preprocess
from physioserve.request_guard import RequestGuard, Route
from physioserve.runtime import InferenceSession

REPO = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(5)
LIMITS = {"PHYSIOSERVE_MAX_WINDOWS": "16", "PHYSIOSERVE_MAX_BODY_MB": "2", "PHYSIOSERVE_MAX_UPLOAD_MB": "9"}


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory):
    return tiny_pipeline(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def service(pipeline):
    """physioserve.service imported with PHYSIOSERVE_BUNDLE set (the module reads its settings at import)."""
    os.environ["PHYSIOSERVE_BUNDLE"] = str(pipeline["bundle"])
    try:
        yield importlib.import_module("physioserve.service")
    finally:
        os.environ.pop("PHYSIOSERVE_BUNDLE", None)


def window(fs: float = 200, **modalities) -> dict:
    n = int(30 * fs)
    out = {"fs": fs}
    for m in modalities or ("eeg",):
        out[m] = RNG.normal(0, 30, n).tolist()
    return out


# ---- in process ------------------------------------------------------------------------------------


def test_service_preprocessing_is_the_shared_function_bit_for_bit():
    windows = [Window(**window(200, eeg=1, ecg=1)), Window(**window(256, eog=1)), Window(**window(200, eeg=1, ecg=1))]
    signals, mask = windows_to_arrays(windows, 128)
    assert mask.tolist() == [[True, False, False, True], [False, True, False, False], [True, False, False, True]]
    assert np.array_equal(signals[1, 1], preprocess(np.asarray(windows[1].eog), 256, "eog"))
    assert np.array_equal(signals[2, 0], preprocess(np.asarray(windows[2].eeg), 200, "eeg"))
    assert np.array_equal(signals[0, 3], preprocess(np.asarray(windows[0].ecg), 200, "ecg"))
    assert not signals[1, [0, 2, 3]].any()


@pytest.mark.parametrize("payload, field, text", [
    ([], "windows", "empty list"),
    ([{"fs": 100, "eeg": [0.0] * 3000}] * 129, "windows", "over the limit of 128"),
    ([{"fs": 200, "eeg": [0.0] * 5999}], "windows[0].eeg", "5999 samples, but a 30 s window at 200 Hz has 6000"),
    ([{"fs": 49, "eeg": [0.0] * 1470}], "windows[0].fs", "below 50 Hz"),
    ([{"fs": 100.01, "eeg": [0.0] * 3000}], "windows[0].fs", "whole number"),
    ([{"fs": 100, "eeg": [0.0] * 2999 + [float("nan")]}], "windows[0].eeg", "sample 2999 is nan"),
    ([{"fs": 100, "ecg": [float("inf")] + [0.0] * 2999}], "windows[0].ecg", "sample 0 is inf"),
    ([{"fs": 100}], "windows[0]", "no modality present"),
    ([{"fs": 100, "eeg": [0.0] * 3000}, {"fs": 100, "resp": [0.0] * 3000}], "windows[1].resp", "unknown modality"),
    ([{"fs": 100, "eeg": [1e9] * 3000}], "windows[0].eeg", "beyond +-1e+07"),
    ([{"fs": 100, "eeg": [3.0] * 3000, "emg": [0.0] * 3000}], "windows[0]", "every modality of this window is flat"),
    ([{"fs": 1e308, "eeg": [0.0] * 3}], "windows[0].fs", "inf samples"),
])
def test_bad_windows_name_the_field_and_the_fix(payload, field, text):
    with pytest.raises(BadInput) as caught:
        windows_to_arrays([Window(**w) for w in payload], 128)
    assert caught.value.field == field and text in str(caught.value) and caught.value.fix in str(caught.value)
    assert caught.value.status == 400


def test_flat_modality_of_a_window_is_masked_there():
    rng = np.random.default_rng(0)
    flat = Window(fs=100, eeg=rng.normal(0, 30, 3000).tolist(), emg=[4.0] * 3000)
    signals, mask = windows_to_arrays([flat, Window(fs=100, emg=rng.normal(0, 5, 3000).tolist())], 8)
    assert mask.tolist() == [[True, False, False, False], [False, False, True, False]]
    assert not signals[0, 2].any()


def test_request_guard_limits_media_types_and_forms():
    """The guard on a plain Starlette app: sizes, media types, form structure, BentoML-style answers rewritten."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route as StarletteRoute
    from starlette.testclient import TestClient

    async def echo(request):
        return PlainTextResponse(str(len(await request.body())))

    async def pydantic_like(request):
        return JSONResponse({"error": "1 validation error", "detail": [{"type": "float_parsing", "loc": ["windows", 0, "fs"],
                                                                          "msg": "Input should be a valid number"}]}, 400)

    routes = {"/score": Route("/score", 600, ("file", "name"), frozenset({"file"}), frozenset({"file"})),
              "/x": Route("/x", 10, ("windows",), frozenset(), frozenset()),
              "/v": Route("/v", 100, ("windows",), frozenset(), frozenset())}
    app = RequestGuard(Starlette(routes=[StarletteRoute(p, echo if p != "/v" else pydantic_like, methods=["POST"])
                                         for p in routes]), routes)
    client = TestClient(app)
    assert client.post("/x", content=b"a" * 10).text == "10"
    refused = client.post("/x", content=b"a" * 11)
    assert refused.status_code == 413 and refused.json()["field"] == "body"
    assert client.post("/x", content=iter([b"a" * 6, b"a" * 6])).status_code == 413  # chunked, counted
    assert client.post("/x", content=iter([b"a" * 4, b"a" * 4])).text == "8"
    assert client.post("/x", content=b"{}", headers={"content-type": "text/plain"}).status_code == 415
    rewritten = client.post("/v", json={}).json()
    assert rewritten["field"] == "windows[0].fs" and "valid number" in rewritten["error"] and rewritten["fix"]
    form = client.post("/score", files={"file": ("n.edf", b"x" * 100)}, data={"name": "n"})
    assert form.status_code == 200 and int(form.text) > 100  # the whole form replayed to the app
    assert client.post("/score", files={"file": ("n.edf", b"x" * 800)}).json()["field"] == "file"  # 413
    assert client.post("/score", files={"upload": ("n.edf", b"x")}).json()["field"] == "upload"
    assert client.post("/score", files={"file": (None, "text")}).json()["error"].startswith("file: a plain text value")
    assert client.post("/score", files={"file": ("n.edf", b"x"), "name": ("n.txt", b"n")}).json()["field"] == "name"
    assert client.post("/score", content=b"--b\r\n", headers={"content-type": "multipart/form-data"}).json()["field"] \
        == "Content-Type"


def test_the_asgi_app_in_process(service, pipeline):
    from starlette.testclient import TestClient

    edf = write_edf(pipeline["bundle"].parent / "inproc.edf", minutes=2)
    with TestClient(service.PhysioServe.to_asgi()) as client:
        assert client.get("/readyz").status_code == 200
        response = client.post("/predict", json={"windows": [window(100, eeg=1, emg=1)] * 3})
        assert response.status_code == 200 and len(response.json()["predictions"]) == 3
        bad = client.post("/predict", json={"windows": [{"fs": 100}]})
        assert bad.status_code == 400 and bad.json()["field"] == "windows[0]"
        scored = client.post("/score", files={"file": ("inproc.edf", edf.read_bytes(), "application/octet-stream")})
        assert scored.status_code == 200 and scored.json()["record"] == "inproc" and len(scored.json()["epochs"]) == 4
        meta = client.post("/metadata", json={}).json()
        assert meta["version"] == "0.0.1-test" and meta["runtime"]["providers"] == ["CPUExecutionProvider"]


# ---- a real `bentoml serve` --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: list[str], env: dict, cwd: Path, log: Path, timeout: float = 120) -> tuple[subprocess.Popen, str]:
    import requests

    port = free_port()
    handle = open(log, "wb")
    process = subprocess.Popen([sys.executable, "-m", "bentoml", "serve", *args, "--host", "127.0.0.1", "--port", str(port)],
                               cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if requests.get(f"{url}/readyz", timeout=2).status_code == 200:
                return process, url
        except requests.RequestException:
            pass
        time.sleep(0.3)
    stop_server(process)
    raise RuntimeError(f"bentoml serve not ready after {timeout} s:\n{log.read_text()[-4000:]}")


def stop_server(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (it started its own session), SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(pipeline, tmp_path_factory):
    env = {**os.environ, "PHYSIOSERVE_BUNDLE": str(pipeline["bundle"]), **LIMITS}
    log = tmp_path_factory.mktemp("server") / "serve.log"
    process, url = start_server([], env, REPO, log)
    try:
        yield url
    finally:
        stop_server(process)


def alive(url: str) -> bool:
    import requests

    return requests.get(f"{url}/livez", timeout=5).status_code == 200


@pytest.mark.server
def test_health_readiness_metrics_metadata(server):
    import requests

    assert requests.get(f"{server}/livez").status_code == 200
    assert requests.get(f"{server}/readyz").status_code == 200
    meta = requests.post(f"{server}/metadata", json={}).json()
    assert meta["name"] == "physioserve" and meta["version"] == "0.0.1-test"
    assert meta["card_summary"].startswith("Multimodal sleep model")
    assert meta["class_names"]["sleep_stage"] == ["W", "N1", "N2", "N3", "REM"]
    assert meta["limits"]["max_windows_per_request"] == 16 and meta["limits"]["max_upload_bytes"] == 9 << 20
    assert meta["runtime"]["providers"] == ["CPUExecutionProvider"] and meta["export"]["parity"]["passed"]
    requests.post(f"{server}/predict", json={"windows": [window(100)]})
    metrics = requests.get(f"{server}/metrics").text
    assert "bentoml_service_request_total" in metrics and "bentoml_service_adaptive_batch_size_bucket" in metrics


@pytest.mark.server
def test_predict_with_curl_matches_the_runtime(server, pipeline, service, tmp_path):
    windows = [window(200, eeg=1, ecg=1), window(256, eog=1, emg=1), window(100, eeg=1, eog=1, emg=1, ecg=1)]
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"windows": windows, "return_embedding": True}))
    if shutil.which("curl"):
        out = subprocess.run(["curl", "-sS", "-X", "POST", f"{server}/predict", "-H", "Content-Type: application/json",
                              "--data-binary", f"@{body}"], capture_output=True, text=True, timeout=60, check=True).stdout
        data = json.loads(out)
    else:  # pragma: no cover - curl is on the CI machine
        import requests

        data = requests.post(f"{server}/predict", data=body.read_bytes(), headers={"Content-Type": "application/json"}).json()
    assert data["model"]["version"] == "0.0.1-test"
    predictions = data["predictions"]
    assert [p["modalities"] for p in predictions] == [["eeg", "ecg"], ["eog", "emg"], ["eeg", "eog", "emg", "ecg"]]
    signals, mask = windows_to_arrays([Window(**w) for w in windows], 128)
    local = InferenceSession(pipeline["bundle"]).predict(signals, mask)
    for i, p in enumerate(predictions):
        probs = [p["sleep_stage"]["probabilities"][n] for n in ("W", "N1", "N2", "N3", "REM")]
        assert abs(sum(probs) - 1) < 1e-5 and np.allclose(probs, local["sleep_stage_probs"][i], atol=1e-5)
        assert p["sleep_stage"]["label"] == ["W", "N1", "N2", "N3", "REM"][int(np.argmax(probs))]
        assert abs(p["age"]["probability_ge_55"] - local["age_probs"][i, 1]) < 1e-5
        assert abs(p["arousal"]["probability"] - local["arousal_probs"][i, 1]) < 1e-5
        assert np.allclose(p["embedding"], local["embedding"][i], atol=1e-5) and len(p["embedding"]) == 32


@pytest.mark.server
def test_concurrent_requests_are_batched_and_all_answered(server):
    """8 clients, 160 requests: more than the 100 calls after which BentoML recycles its in-process client."""
    import requests

    body = json.dumps({"windows": [window(100)] * 2})

    def post(_):
        with requests.Session() as http:
            return [http.post(f"{server}/predict", data=body, headers={"Content-Type": "application/json"},
                              timeout=60).status_code for _ in range(20)]

    with ThreadPoolExecutor(8) as pool:
        codes = [code for batch in pool.map(post, range(8)) for code in batch]
    assert codes == [200] * 160
    metrics = requests.get(f"{server}/metrics").text
    sizes = [line for line in metrics.splitlines() if line.startswith("bentoml_service_adaptive_batch_size_count")]
    assert sizes and float(sizes[0].split()[-1]) > 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_preprocessing_pool_runs_at_lower_priority_and_passes_errors_on():
    """/predict's preprocessing threads (batching.PreprocessingPool) run at the asked-for nice value,
    return results in order, and pass a BadInput on to the endpoint."""
    import asyncio
    import threading

    from physioserve.api_requests import BadInput, window_input
    from physioserve.batching import PreprocessingPool

    base = os.getpriority(os.PRIO_PROCESS, 0)
    pool = PreprocessingPool(threads=2, nice=min(base + 3, 19))

    def job(x):
        return 2 * x, os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    async def calls():
        results = await asyncio.gather(*(pool.run(job, i) for i in range(6)))
        with pytest.raises(BadInput, match="empty list"):
            await pool.run(window_input, [], [], 4, 1 << 20)
        return results

    results = asyncio.run(calls())
    assert [r[0] for r in results] == [0, 2, 4, 6, 8, 10]
    assert {r[1] for r in results} == {min(base + 3, 19)}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base  # the caller's thread is untouched
    lower = PreprocessingPool(threads=1, nice=max(base - 1, -20))  # cannot raise priority: keeps the process's
    assert asyncio.run(lower.run(job, 1)) == (2, base)


@pytest.mark.server
def test_an_overloaded_batching_queue_answers_503_and_recovers(pipeline, tmp_path):
    """With a 1 ms queueing bound most concurrent requests are shed: 503 naming the fix, never 500."""
    import requests

    env = {**os.environ, "PHYSIOSERVE_BUNDLE": str(pipeline["bundle"]), "PHYSIOSERVE_BATCH_LATENCY_MS": "1"}
    process, url = start_server([], env, REPO, tmp_path / "serve.log")
    try:
        body = json.dumps({"windows": [window(100)]})

        def post(_):
            with requests.Session() as http:
                return [http.post(f"{url}/predict", data=body, headers={"Content-Type": "application/json"},
                                  timeout=60) for _ in range(10)]

        with ThreadPoolExecutor(8) as pool:
            responses = [r for batch in pool.map(post, range(8)) for r in batch]
        codes = {r.status_code for r in responses}
        assert codes <= {200, 503} and 503 in codes, codes
        shed = next(r for r in responses if r.status_code == 503).json()
        assert shed["field"] == "windows" and "overloaded" in shed["error"] and shed["fix"]
        assert alive(url)
        assert any(requests.post(f"{url}/predict", data=body, headers={"Content-Type": "application/json"}).ok
                   for _ in range(5))
    finally:
        stop_server(process)


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.server
def test_every_bad_input_gets_a_4xx_and_the_server_stays_up(server, tmp_path):
    import requests

    ok = {"windows": [window(100)]}
    record = write_wfdb(tmp_path, "rec01", minutes=1)
    hea, dat = (record / "rec01.hea").read_bytes(), (record / "rec01.dat").read_bytes()
    edf = write_edf(tmp_path / "n.edf", minutes=2).read_bytes()
    predict_cases = {
        "wrong length": ({"windows": [{"fs": 200, "eeg": [0.0] * 3000}]}, 400, "windows[0].eeg"),
        "rate below 50": ({"windows": [{"fs": 40, "eeg": [0.0] * 1200}]}, 400, "windows[0].fs"),
        "flat window": ({"windows": [{"fs": 50, "eeg": [0.0] * 1500}]}, 400, "windows[0]"),
        "NaN": ('{"windows": [{"fs": 100, "eeg": [NaN' + ", 0.0" * 2999 + "]}]}", 400, "windows[0].eeg"),
        "Infinity": ('{"windows": [{"fs": 100, "emg": [Infinity' + ", 0.0" * 2999 + "]}]}", 400, "windows[0].emg"),
        "no modality": ({"windows": [{"fs": 100}]}, 400, "windows[0]"),
        "unknown modality": ({"windows": [{"fs": 100, "eeg": [0.0] * 3000, "spo2": [0.0] * 3000}]}, 400, "windows[0].spo2"),
        "too many windows": ({"windows": [{"fs": 100, "eeg": [0.0] * 3000}] * 17}, 400, "windows"),
        "body too large": ({"windows": [{"fs": 1000, "eeg": [0.123456789] * 30000}] * 8}, 413, "body"),
        "not JSON": ("{windows: ", 400, "body"),
        "wrong type": ({"windows": [{"fs": "fast", "eeg": [0.0] * 3000}]}, 400, "windows[0].fs"),
        "not an object": ("[1, 2]", 400, "body"),
        "consecutive without a context graph": ({"windows": [window(100)], "consecutive": True}, 400, "consecutive"),
    }
    for name, (payload, status, field) in predict_cases.items():
        data = payload if isinstance(payload, str) else json.dumps(payload)
        response = requests.post(f"{server}/predict", data=data, headers={"Content-Type": "application/json"}, timeout=60)
        assert response.status_code == status, (name, response.text[:300])
        body = response.json()
        assert body["field"] == field and field in body["error"] and body["fix"], name
        assert alive(server), name
    score_cases = {
        "unreadable file": (("x.edf", b"this is not a recording"), 400, "first bytes"),
        "truncated EDF": (("x.edf", edf[:300]), 400, "cannot read it as a recording"),
        "path traversal": (("r.zip", _zip({"../../rec01.hea": hea, "rec01.dat": dat})), 400, "folder or a path"),
        "foreign file in zip": (("r.zip", _zip({"rec01.hea": hea, "rec01.dat": dat, "run.sh": b"#!"})), 400, "not a file of record"),
        "two records": (("r.zip", _zip({"rec01.hea": hea, "rec01.dat": dat, "rec02.hea": hea})), 400, "2 .hea files"),
        "missing signal file": (("r.zip", _zip({"rec01.hea": hea})), 400, "cannot read it as a recording"),
        "upload too large": (("big.edf", b"0       " + b"\0" * (9 << 20)), 413, "byte limit"),
    }
    for name, (file, status, text) in score_cases.items():
        response = requests.post(f"{server}/score", files={"file": file}, timeout=60)
        assert response.status_code == status, (name, response.text[:300])
        body = response.json()
        assert body["field"] == "file" and text in body["error"], (name, body)
        assert "/tmp" not in body["error"] and str(tmp_path) not in body["error"], name
        assert alive(server), name
    response = requests.post(f"{server}/score", files={"file": ("n.edf", edf)}, data={"channel_map": "eeg"})
    assert response.status_code == 400 and response.json()["field"] == "channel_map"
    response = requests.post(f"{server}/score", files={"file": ("n.edf", edf)}, data={"channel_map": "eeg=NOPE"})
    assert response.status_code == 400 and "NOPE" in response.json()["error"]
    assert requests.post(f"{server}/score", data={"name": "x"}).status_code == 415  # a form without any file
    assert requests.post(f"{server}/score", files={"name": (None, "x")}).json()["field"] == "file"
    assert requests.post(f"{server}/predict", json=ok).status_code == 200  # still serving


@pytest.mark.server
def test_malformed_requests_of_real_clients_get_4xx(server, tmp_path):
    """The four request kinds of the field-cases README: each a 4xx with error, field and fix; never 500."""
    import requests

    edf = write_edf(tmp_path / "n.edf", minutes=1).read_bytes()
    form = b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"n.edf\"\r\n\r\n" + edf + b"\r\n--x--\r\n"
    cases = {
        "multipart without a boundary": (dict(data=form, headers={"Content-Type": "multipart/form-data"}), 400, "Content-Type"),
        "file under another field name": (dict(files={"upload": ("n.edf", edf)}), 400, "upload"),
        "plain text where the file goes": (dict(files={"file": (None, "night.edf")}), 400, "file"),
        "a file as /predict's JSON windows": (dict(files={"windows": ("w.json", b"[]")}), 400, "windows"),
        "text to /predict": (dict(data=b"windows", headers={"Content-Type": "text/plain"}), 415, "Content-Type"),
        "truncated form": (dict(data=form[:-20], headers={"Content-Type": "multipart/form-data; boundary=x"}), 400, "body"),
        "JSON to /score": (dict(json={"file": "/etc/passwd"}), 415, "Content-Type"),
    }
    for name, (request, status, field) in cases.items():
        route = "/predict" if "predict" in name else "/score"
        response = requests.post(f"{server}{route}", timeout=60, **request)
        assert response.status_code == status, (name, response.text[:300])
        body = response.json()
        assert body["field"] == field and body["error"].startswith(f"{field}: ") and body["fix"], (name, body)
        assert alive(server), name
    assert requests.post(f"{server}/score", data=form, headers={"Content-Type": "multipart/form-data; boundary=x"},
                         timeout=60).status_code == 200  # the same form, well formed, is scored


@pytest.mark.server
def test_internal_infer_route_is_validated_and_size_limited(server):
    """/infer stays reachable (a remote replica's self-client uses it) but takes only what /predict sends."""
    import requests

    from physioserve.runtime import pack_windows, unpack_outputs

    signals = np.zeros((1, 4, 3000), np.float32)
    signals[0, 0] = RNG.normal(0, 1, 3000)
    mask = np.array([[True, False, False, False]])
    packed = pack_windows(signals, mask)
    ok = requests.post(f"{server}/infer", json={"windows": packed}, timeout=60)
    assert ok.status_code == 200 and unpack_outputs(ok.json(), 32)["embedding"].shape == (1, 32)
    unknown = requests.post(f"{server}/infer", json={"windows": ["ref:" + "0" * 32]}, timeout=60)
    assert unknown.status_code == 200 and unknown.json() == [""]  # a key that is not parked here: no result
    for payload, field in [({"windows": ["not a window"]}, "windows[0]"), ({"windows": packed * 17}, "windows"),
                           ({"windows": "x"}, "windows"), ({}, "windows")]:
        response = requests.post(f"{server}/infer", json=payload, timeout=60)
        assert response.status_code == 400 and response.json()["field"] == field, (payload if len(str(payload)) < 99 else field)
    big = requests.post(f"{server}/infer", data=b'{"windows": ["' + b"A" * (3 << 20) + b'"]}',
                        headers={"Content-Type": "application/json"}, timeout=60)
    assert big.status_code == 413 and big.json()["field"] == "body"
    assert alive(server)


@pytest.mark.server
@pytest.mark.parametrize("name", list(SCORED) + list(REFUSED))
def test_score_field_cases_through_the_service(server, shared_data, name):
    import requests

    from physioserve.scoring import upload_payload

    filename, payload = upload_payload(shared_data / "field-cases" / name)
    response = requests.post(f"{server}/score", files={"file": (filename, payload)}, timeout=120)
    if name in REFUSED:
        assert response.status_code == 400 and REFUSED[name] in response.json()["error"]
        assert response.json()["field"] == "file" and "/work" not in response.json()["error"]
        return
    assert response.status_code == 200, response.text[:300]
    data = response.json()
    _, used, note = SCORED[name]
    assert data["record"] == Path(name).stem and len(data["epochs"]) == 10
    assert [e["modalities"] for e in data["epochs"]] == used
    assert data["summary"]["epochs_per_modality_set"] == {s: used.count(s) for s in set(used)}
    assert (note is None and data["summary"]["notes"] == []) or any(note in n for n in data["summary"]["notes"])
    assert data["summary"]["channel_rates_hz"] == SCORED[name][0]
    for m, std in data["summary"]["signal_std_uv"].items():
        assert std == pytest.approx(STD_UV[m], rel=0.05), m


@pytest.mark.server
def test_score_flat_eeg_epochs_equal_the_file_without_eeg(server, shared_data):
    import requests

    scored = {}
    for name in ("20a_eeg_flat_second_half.edf", "20b_no_eeg_control.edf"):
        path = shared_data / "field-cases" / name
        scored[name] = requests.post(f"{server}/score", files={"file": (name, path.read_bytes())}, timeout=120).json()
    flat, control = (scored[n]["epochs"] for n in scored)
    keys = [k for k in flat[0] if k.startswith("p_")]
    assert [[e[k] for k in keys] for e in flat[5:]] == [[e[k] for k in keys] for e in control[5:]]
    assert [e["modalities"] for e in flat] == ["eeg+eog+emg"] * 5 + ["eog+emg"] * 5


@pytest.mark.server
def test_score_subsecond_edf_through_the_service(server, subsecond):
    import requests

    response = requests.post(f"{server}/score", files={"file": ("subsecond.edf", subsecond.read_bytes())}, timeout=300)
    assert response.status_code == 200, response.text[:300]
    data = response.json()
    assert len(data["epochs"]) == 300 and [e["true_stage"] for e in data["epochs"][:5]] == ["W", "N1", "N2", "N3", "REM"]
    assert data["summary"]["reference"]["labelled_epochs"] == 300


@pytest.mark.server
@pytest.mark.slow
def test_schemathesis_finds_no_server_error(server, tmp_path):
    """Property-based fuzzing of the live OpenAPI schema (positive and negative data): no 5xx, still ready."""
    import requests

    if shutil.which("schemathesis") is None and not (Path(sys.executable).parent / "schemathesis").exists():
        pytest.skip("schemathesis is not installed (pip install -e '.[dev]')")
    cli = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")
    run = subprocess.run([cli, "run", f"{server}/docs.json", "--checks", "not_a_server_error", "--max-examples", "25",
                          "--seed", "7", "--request-timeout", "60", "--phases", "examples,coverage,fuzzing",
                          "--mode", "all"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-4000:]
    assert "generated" in run.stdout and " passed" in run.stdout
    assert requests.get(f"{server}/readyz", timeout=10).status_code == 200


@pytest.mark.server
def test_score_a_third_party_edf_and_a_zipped_wfdb_record(server, tmp_path):
    import requests

    edf = write_edf(tmp_path / "night.edf", fs=256, minutes=6)
    response = requests.post(f"{server}/score", files={"file": ("night.edf", edf.read_bytes())}, timeout=120)
    assert response.status_code == 200, response.text[:300]
    data = response.json()
    assert data["record"] == "night" and len(data["epochs"]) == 12 and "true_stage" in data["columns"]
    summary = data["summary"]
    assert summary["total_recording_time_min"] == 6.0 and summary["modalities_used"] == ["eeg", "eog", "emg", "ecg"]
    assert {"total_sleep_time_min", "sleep_efficiency_pct", "stage_percent_of_sleep", "arousal_index_per_h"} <= set(summary)
    from physioserve.scoring import upload_payload

    name, payload = upload_payload(write_wfdb(tmp_path, "rec07", minutes=2))
    response = requests.post(f"{server}/score", files={"file": (name, payload)}, timeout=120)
    assert response.status_code == 200 and response.json()["record"] == "rec07" and len(response.json()["epochs"]) == 4


@pytest.mark.server
def test_score_cli_through_the_service_writes_identical_tables(server, pipeline, tmp_path):
    from physioserve.cli import main

    data = tmp_path / "data"
    data.mkdir()
    write_edf(data / "night_b.edf", minutes=5)
    write_wfdb(data, "rec02", minutes=3)
    local, remote = tmp_path / "local", tmp_path / "remote"
    assert main(["score", str(data), "--out", str(local), "--bundle", str(pipeline["bundle"]), "--no-progress"]) == 0
    assert main(["score", str(data), "--out", str(remote), "--url", server, "--no-progress", "--plot"]) == 0
    for name in ("night_b.epochs.csv", "night_b.summary.json", "rec02.epochs.csv", "rec02.summary.json"):
        assert (local / name).read_bytes() == (remote / name).read_bytes(), name
    assert (remote / "night_b.hypnogram.png").exists()
    assert main(["score", str(data / "night_b.edf"), "--out", str(tmp_path / "x"), "--url", "http://127.0.0.1:9",
                 "--no-progress"]) == 1


@pytest.mark.slow
@pytest.mark.server
def test_bentoml_build_offline_packs_the_registered_bundle_and_serves_it(pipeline, tmp_path):
    import requests

    from physioserve.bundle import save_to_store

    if not (shutil.which("uv") or importlib.util.find_spec("uv")):
        pytest.skip("bentoml build needs uv installed (it would download it otherwise): pip install uv")
    tag = save_to_store(pipeline["bundle"])
    env = {k: v for k, v in os.environ.items() if k != "PHYSIOSERVE_BUNDLE"}
    env.update({"UV_OFFLINE": "1", "PIP_NO_INDEX": "1"})  # any download attempt fails instead of waiting
    built = subprocess.run([sys.executable, "-m", "bentoml", "build", "--output", "tag"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    bento_tag = built.stdout.strip().splitlines()[-1].replace("__tag__:", "")
    import bentoml

    bento = bentoml.bentos.get(bento_tag)
    assert [str(m.tag) for m in bento.info.all_models] == [tag]
    requirements = (Path(bento.path) / "env" / "python" / "requirements.txt").read_text()
    assert "onnxruntime" in requirements and "torch" not in requirements
    process, url = start_server([bento_tag], env, tmp_path, tmp_path / "bento.log")
    try:
        meta = requests.post(f"{url}/metadata", json={}).json()
        assert meta["version"] == "0.0.1-test" and meta["runtime"]["source"] == f"store:{tag}"
        assert requests.post(f"{url}/predict", json={"windows": [window(100)]}).status_code == 200
    finally:
        stop_server(process)


@pytest.mark.slow
def test_gpu_bentofile_builds_offline_with_onnxruntime_gpu_and_a_gpu(pipeline):
    if not (shutil.which("uv") or importlib.util.find_spec("uv")):
        pytest.skip("bentoml build needs uv installed (it would download it otherwise): pip install uv")
    env = {**os.environ, "PHYSIOSERVE_GPU": "1", "PHYSIOSERVE_BUNDLE": str(pipeline["bundle"]), "UV_OFFLINE": "1",
           "PIP_NO_INDEX": "1"}
    built = subprocess.run([sys.executable, "-m", "bentoml", "build", "-f", "bentofile.gpu.yaml", "--output", "tag"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    import bentoml

    bento = bentoml.bentos.get(built.stdout.strip().splitlines()[-1].replace("__tag__:", ""))
    manifest = (Path(bento.path) / "bento.yaml").read_text()
    assert "gpu: 1" in manifest and "cuda_version: 12" in manifest
    requirements = (Path(bento.path) / "env" / "python" / "requirements.txt").read_text().split()
    assert "onnxruntime-gpu>=1.18" in requirements and not any(r.startswith("onnxruntime>") for r in requirements)


def test_request_guard_methods_and_part_counts():
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route as StarletteRoute
    from starlette.testclient import TestClient

    async def echo(request):
        return PlainTextResponse("ok")

    routes = {"/score": Route("/score", 1 << 20, ("file", "name"), frozenset({"file"}), frozenset({"file"}))}
    client = TestClient(RequestGuard(Starlette(routes=[StarletteRoute("/score", echo, methods=["POST"])]), routes))
    got = client.get("/score")
    assert got.status_code == 405 and got.json()["field"] == "method" and "POST /score" in got.json()["fix"]
    many = [("file", ("n.edf", b"x"))] + [("name", (None, "n"))] * 20
    assert client.post("/score", files=many).json()["error"].startswith("body: 21 form parts")
