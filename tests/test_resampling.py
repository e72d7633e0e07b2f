"""Blocked resampling: the numbers of scipy's resample_poly (same filter, zero padding), by matrix products."""

import numpy as np
import pytest
from scipy import signal

from physioserve.resampling import CHUNK_BYTES, block_plan, choose_blocks, resample_blocked


def kaiser_taps(up: int, down: int, fs_in: float) -> np.ndarray:
    """A low-pass at the up-rate like preprocessing's (40 / 50 Hz edges, 60 dB), odd length."""
    rate = fs_in * up
    numtaps, beta = signal.kaiserord(60.0, 10.0 / (rate / 2))
    return signal.firwin(numtaps | 1, 45.0, window=("kaiser", beta), fs=rate)


@pytest.mark.parametrize("up, down, fs_in", [(25, 128, 512), (1, 5, 500), (2, 5, 250), (25, 64, 256), (1, 10, 1000),
                                             (1, 3, 300), (5, 18, 360)])
def test_equals_resample_poly_of_the_mean_removed_window(up, down, fs_in):
    taps = kaiser_taps(up, down, fs_in)
    n_in = 30 * fs_in
    plan = block_plan(up, down, n_in, taps)
    rng = np.random.default_rng(up * down)
    x = rng.normal(0, 30, (5, 2, n_in)) + rng.normal(0, 1000, (5, 2, 1))  # [5, 2, n_in] with DC offsets
    y, mean = resample_blocked(x, plan)
    ref = signal.resample_poly(x - x.mean(axis=-1, keepdims=True), up, down, axis=-1, window=taps)
    assert y.shape == ref.shape == (5, 2, 3000) and mean.shape == (5, 2, 1)
    assert np.allclose(mean, x.mean(axis=-1, keepdims=True), rtol=1e-12, atol=0)
    assert np.max(np.abs(y - ref)) < 1e-11 * np.max(np.abs(x))  # the same sums, in another order


def test_more_windows_than_one_chunk():
    up, down = 25, 128
    taps = kaiser_taps(up, down, 512)
    plan = block_plan(up, down, 15360, taps)
    per_chunk = CHUNK_BYTES // (plan.n_blocks * plan.weights.shape[1] * 8)
    x = np.random.default_rng(0).normal(0, 30, (2 * per_chunk + 3, 15360))
    y, _ = resample_blocked(x, plan)
    ref = signal.resample_poly(x - x.mean(axis=-1, keepdims=True), up, down, axis=-1, window=taps)
    assert np.max(np.abs(y - ref)) < 1e-10


def test_plans_that_would_be_slow_or_thread_dependent_are_not_made():
    assert choose_blocks(100, 333, 9990, 6000) is None  # 333 Hz: a block would hold 100 outputs
    assert block_plan(100, 333, 9990, kaiser_taps(100, 333, 333)) is None
    with pytest.raises(ValueError, match="odd taps"):
        block_plan(25, 128, 15360, np.ones(10))


def test_block_choice_prefers_wide_products():
    # 1000 Hz (up 1, down 10, 365 taps): 20 periods per block (B = 200), not 4 (B = 40)
    assert choose_blocks(1, 10, 30000, 182) == 20
    assert choose_blocks(25, 128, 15360, 2321) == 1
