"""A Python client of the service: windows go to `/predict` as the binary npz body (windows_npz.py).

    from physioserve.client import Client
    with Client("http://127.0.0.1:3000") as client:
        answer = client.predict(200, eeg=eeg, eog=eog)          # [n, 6000] µV each, n <= the service's limit
        answer["predictions"][0]["sleep_stage"]["label"]        # "N2"

`predict` sends windows of one rate and modality set in one request (the service's `/metadata`
limits say how many); `consecutive=True` stages them in their night context. Any 4xx/5xx answer
raises `ServiceError` with the service's field, problem and fix. httpx only (BentoML depends on it).
"""

from __future__ import annotations

import numpy as np

from .windows_npz import FIELD, write_windows_npz


class ServiceError(RuntimeError):
    """A refused request: HTTP `status`, the `field` the service names and its `fix`."""

    def __init__(self, status: int, body: dict | str):
        body = body if isinstance(body, dict) else {"error": str(body)}
        super().__init__(f"service answered {status}: {body.get('error')}")
        self.status, self.field, self.fix, self.body = status, body.get("field"), body.get("fix"), body


class Client:
    """The service at `url` (one HTTP connection pool; use it from one thread, or one Client per thread)."""

    def __init__(self, url: str, timeout: float = 300.0):
        import httpx

        self.url = url.rstrip("/")
        self.http = httpx.Client(timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def _answer(self, response) -> dict:
        if response.status_code != 200:
            try:
                body = response.json()
            except ValueError:
                body = response.text[:500]
            raise ServiceError(response.status_code, body[0] if isinstance(body, list) and body else body)
        return response.json()

    def predict(self, fs: float, *, eeg: np.ndarray | None = None, eog: np.ndarray | None = None,
                emg: np.ndarray | None = None, ecg: np.ndarray | None = None,
                return_embedding: bool = False, consecutive: bool = False) -> dict:
        """Windows [n, 30 * fs] µV (or [30 * fs] for one) of each given modality -> /predict's answer (a dict).

        Raises ValueError for an unknown modality or none given, ServiceError when the service refuses.
        """
        arrays = {m: x for m, x in (("eeg", eeg), ("eog", eog), ("emg", emg), ("ecg", ecg)) if x is not None}
        return self.predict_npz(write_windows_npz(fs, arrays), return_embedding=return_embedding,
                                consecutive=consecutive)

    def predict_npz(self, npz: bytes, *, return_embedding: bool = False, consecutive: bool = False) -> dict:
        """An npz body already written (`write_windows_npz`) -> /predict's answer."""
        data = {"return_embedding": str(return_embedding).lower(), "consecutive": str(consecutive).lower()}
        response = self.http.post(f"{self.url}/predict", files={FIELD: ("windows.npz", npz, "application/octet-stream")},
                                  data=data)
        return self._answer(response)

    def metadata(self) -> dict:
        """/metadata: model name, version, limits, runtime..."""
        return self._answer(self.http.post(f"{self.url}/metadata", json={}))
