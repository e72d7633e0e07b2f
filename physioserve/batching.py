"""Windows parked around BentoML's adaptive batching, so that no array goes through JSON twice.

`/predict` preprocesses its windows, parks them here under random keys (`ref:<uuid4 hex>`) and sends
only the keys to the batchable `/infer` route through BentoML's in-process client; `/infer` looks
the keys up, runs one ONNX Runtime call for the whole adaptive batch and returns packed outputs
(`runtime.pack_outputs`). On a remote deployment (BENTOCLOUD_DEPLOYMENT_URL: the self-client may
reach another replica) the windows travel packed (`runtime.pack_windows`) instead.

BentoML 1.4's in-process client recycles its HTTP session every 100 calls and drops the calls in
flight at that moment; the windows are still parked, so the call is simply sent again (up to
INFER_ATTEMPTS times).
"""

from __future__ import annotations

import os
import uuid

import numpy as np

from .runtime import pack_outputs, pack_windows, unpack_window

REF = "ref:"  # prefix of a parked window's key
INFER_ATTEMPTS = 3


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
