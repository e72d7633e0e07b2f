"""The binary body of /predict (windows_npz.py) and physioserve.client: in process, then a real `bentoml serve`.

In process: an npz gives the model input of the same windows sent as JSON, bit for bit, and every
malformed or bad file gets the 400 (field, problem, fix) its JSON twin gets. Served: the client's
binary requests answer what JSON requests answer, with and without the night context.
"""

from __future__ import annotations

import io
import os
import zipfile

import numpy as np
import pytest
from context_fixtures import context_pipeline

from physioserve.api_models import Window
from physioserve.api_requests import BadInput, npz_to_arrays, window_input, windows_to_arrays
from physioserve.request_guard import RequestGuard, Route, with_json_bodies
from physioserve.windows_npz import write_windows_npz

RNG = np.random.default_rng(11)


def _npz(**arrays) -> io.BytesIO:
    out = io.BytesIO()
    np.savez(out, **arrays)
    out.seek(0)
    return out


def test_npz_windows_are_the_json_windows_bit_for_bit():
    eeg, ecg = RNG.normal(0, 30, (5, 6000)).astype(np.float32), RNG.normal(0, 900, (5, 6000)).astype(np.float32)
    ecg[2] = 3.0  # a flat lead: masked in that window, as in JSON
    binary = npz_to_arrays(io.BytesIO(write_windows_npz(200, {"eeg": eeg, "ecg": ecg})), 16, 1 << 20)
    windows = [Window(fs=200, eeg=eeg[i].tolist(), ecg=ecg[i].tolist()) for i in range(5)]
    signals, mask = windows_to_arrays(windows, 16)
    assert np.array_equal(binary[0], signals) and np.array_equal(binary[1], mask) and binary[2] == [200.0] * 5
    assert mask[:, 3].tolist() == [True, True, False, True, True]
    one = npz_to_arrays(io.BytesIO(write_windows_npz(100, {"eog": RNG.normal(0, 30, 3000)})), 16, 1 << 20)
    assert one[0].shape == (1, 4, 3000) and one[1].tolist() == [[False, True, False, False]]  # one window as [L]


def _bomb() -> io.BytesIO:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("eeg.npy", "w") as member:
            np.lib.format.write_array(member, np.zeros((64, 1 << 16)))  # 32 MB of zeros, a few kB zipped
        with z.open("fs.npy", "w") as member:
            np.lib.format.write_array(member, np.float64(100))
    out.seek(0)
    return out


def _short_member() -> io.BytesIO:
    """A zip whose eeg.npy header promises [2, 3000] float64 but holds 100 bytes of data."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (2, 3000)})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("eeg.npy", header.getvalue() + b"\0" * 100)
        with z.open("fs.npy", "w") as member:
            np.lib.format.write_array(member, np.float64(100))
    out.seek(0)
    return out


good = RNG.normal(0, 30, (2, 3000))
nan = good.copy()
nan[1, 7] = np.nan


@pytest.mark.parametrize("file, field, text", [
    (io.BytesIO(b"not a zip"), "windows_npz", "not an .npz file"),
    (lambda: _npz(fs=100, eeg=good, resp=good), "windows_npz.resp.npy", "unknown array"),
    (lambda: _npz(eeg=good), "windows_npz.fs", "missing"),
    (lambda: _npz(fs=[100, 200], eeg=good), "windows_npz.fs", "one rate per request"),
    (lambda: _npz(fs=100, eeg=np.array([{"a": 1}], dtype=object)), "windows_npz.eeg", "not a readable .npy"),
    (_short_member, "windows_npz.eeg", "truncated: 100 of 48000 data bytes"),
    (lambda: _npz(fs=100, eeg=good.astype(complex)), "windows_npz.eeg", "not a real number type"),
    (lambda: _npz(fs=100, eeg=good[None]), "windows_npz.eeg", "shape (1, 2, 3000)"),
    (lambda: _npz(fs=100, eeg=good, emg=good[:1]), "windows_npz", "different numbers of windows"),
    (_bomb, "windows_npz", "over the 1048576 byte limit"),
    (lambda: _npz(fs=100), "windows[0]", "no modality present"),
    (lambda: _npz(fs=100, eeg=good[:0]), "windows", "empty list"),
    (lambda: _npz(fs=100, eeg=np.zeros((17, 3000))), "windows", "over the limit of 16"),
    (lambda: _npz(fs=200, eeg=good), "windows[0].eeg", "3000 samples, but a 30 s window at 200 Hz has 6000"),
    (lambda: _npz(fs=49, eeg=good[:, :1470]), "windows[0].fs", "below 50 Hz"),
    (lambda: _npz(fs=100, eeg=nan), "windows[1].eeg", "sample 7 is nan"),
    (lambda: _npz(fs=100, eeg=good * 1e6), "windows[0].eeg", "beyond +-1e+07"),
    (lambda: _npz(fs=100, eeg=np.full((2, 3000), 3.0)), "windows[0]", "every modality of this window is flat"),
])
def test_bad_npz_bodies_name_the_field_and_the_fix(file, field, text):
    with pytest.raises(BadInput) as caught:
        npz_to_arrays(file() if callable(file) else file, 16, 1 << 20)
    assert caught.value.field == field and text in str(caught.value) and caught.value.fix, str(caught.value)
    assert caught.value.status == 400


def test_one_body_at_a_time():
    with pytest.raises(BadInput) as caught:
        window_input([Window(fs=100, eeg=good[0].tolist())], [_npz(fs=100, eeg=good)], 16, 1 << 20)
    assert caught.value.field == "windows_npz" and "both" in caught.value.problem


def test_guard_takes_json_and_forms_on_a_route_with_optional_files_and_documents_both():
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route as StarletteRoute
    from starlette.testclient import TestClient

    async def echo(request):
        return PlainTextResponse(str(len(await request.body())))

    form_schema = {"type": "object", "properties": {"windows": {"type": "array"}, "windows_npz": {"type": "array"}}}
    spec = {"paths": {"/predict": {"post": {"requestBody": {"content": {"multipart/form-data": {"schema": form_schema}}}}}}}

    async def docs(request):
        return JSONResponse(spec)

    routes = {"/predict": Route("/predict", 1000, ("windows", "windows_npz"), frozenset({"windows_npz"}), frozenset(),
                                "windows.npz")}
    app = Starlette(routes=[StarletteRoute("/predict", echo, methods=["POST"]), StarletteRoute("/docs.json", docs)])
    client = TestClient(RequestGuard(app, routes))
    assert client.post("/predict", json={"windows": []}).status_code == 200
    assert client.post("/predict", files={"windows_npz": ("w.npz", b"x" * 10)}).status_code == 200
    assert client.post("/predict", files={"windows_npz": (None, "text")}).json()["field"] == "windows_npz"
    assert client.post("/predict", files={"upload": ("w.npz", b"x")}).json()["fix"].count("windows_npz=@windows.npz")
    refused = client.post("/predict", content=b"x", headers={"content-type": "application/x-npy"})
    assert refused.status_code == 415 and "windows_npz" in refused.json()["fix"]
    assert client.post("/predict", json={"windows": ["x" * 2000]}).json()["field"] == "body"  # 413
    content = client.get("/docs.json").json()["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert set(content) == {"multipart/form-data", "application/json"}
    assert list(content["application/json"]["schema"]["properties"]) == ["windows"]
    assert with_json_bodies({"paths": {}}, routes) == {"paths": {}}


# ---- a real `bentoml serve` --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def context_server(tmp_path_factory):
    from test_service import LIMITS, REPO, start_server, stop_server

    bundle = context_pipeline(tmp_path_factory.getbasetemp())["bundle"]
    env = {**os.environ, "PHYSIOSERVE_BUNDLE": str(bundle), **LIMITS}
    process, url = start_server([], env, REPO, tmp_path_factory.mktemp("client") / "serve.log")
    try:
        yield url
    finally:
        stop_server(process)


@pytest.mark.server
def test_client_binary_requests_answer_what_json_requests_answer(context_server):
    import requests

    from physioserve.client import Client, ServiceError

    eeg, eog = RNG.normal(0, 30, (6, 6000)).astype(np.float32), RNG.normal(0, 40, (6, 6000)).astype(np.float32)
    windows = [{"fs": 200, "eeg": eeg[i].tolist(), "eog": eog[i].tolist()} for i in range(6)]
    with Client(context_server) as client:
        assert client.metadata()["limits"]["max_windows_per_request"] == 16
        for consecutive in (False, True):
            binary = client.predict(200, eeg=eeg, eog=eog, return_embedding=True, consecutive=consecutive)
            body = {"windows": windows, "return_embedding": True, "consecutive": consecutive}
            as_json = requests.post(f"{context_server}/predict", json=body, timeout=60).json()
            assert binary == as_json  # same numbers: the same model input, batched alike
            in_context = [p["sleep_stage_in_context"] for p in binary["predictions"]]
            assert all(p is not None for p in in_context) == consecutive
            assert all(p["modalities"] == ["eeg", "eog"] for p in binary["predictions"])
        with pytest.raises(ServiceError) as caught:
            client.predict(200, eeg=eeg[:, :5999])
        assert caught.value.status == 400 and caught.value.field == "windows[0].eeg" and caught.value.fix
        with pytest.raises(ServiceError) as caught:
            client.predict(100, eeg=np.zeros((17, 3000)) + RNG.normal(0, 30, 3000))
        assert caught.value.field == "windows"
    docs = requests.get(f"{context_server}/docs.json", timeout=30).json()
    content = docs["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert "windows_npz" in content["multipart/form-data"]["schema"]["properties"]
    assert "windows" in content["application/json"]["schema"]["properties"]
