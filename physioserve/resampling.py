"""Rational FIR resampling as blocked matrix products: `scipy.signal.resample_poly`'s filter, run by BLAS.

`resample_poly(x, up, down, window=taps)` (zero padding at both ends) computes, per output sample n,

    y[n] = up * sum_k taps[half + n * down - k * up] * x[k]        (half = (len(taps) - 1) // 2)

a sum over ~len(taps) / up inputs, done by scipy's scalar polyphase loop (`upfirdn`). The index
`n * down - k * up` repeats when n advances by `up` and k by `down`: cut the input into blocks of
B = m * down samples and the output into blocks of Q = m * up samples; output block b is then

    y[b] = sum_s x[b + s] @ H_s            (x[j]: input block j, zero outside the window)

with a few fixed [B, Q] matrices H_s. One matrix product of all input blocks with [H_s ...] side by
side, then S shifted additions, gives the same numbers as `resample_poly` up to the order of the
floating-point sums (differences ~1e-13 of the signal's scale in float64), several times faster
when the filter is long (high input rates: 512 Hz has 186 taps per output sample).

The window's mean is removed without a pass of its own: a column of ones beside the H_s gives each
block's sum in the same product, and resample(x - mean) = resample(x) - mean * resample(ones), with
resample(ones) part of the plan.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np

MIN_BLOCK = 32  # input samples per block: below this the matrix products are too thin for BLAS
MAX_BLOCK_OUT = 50  # output samples per block. Wider products are split across BLAS threads, and the
# split changes the last bits with the thread count (seen at 333 Hz, up = 100): no plan is made then.
SINGLE_THREAD_MNK = 1 << 18  # OpenBLAS runs a product of M x N x K at most this on one thread, whatever
# the thread count: the products are cut to this size, so the thread count never changes a bit (and
# small products skip OpenBLAS's packing: faster here)
MAX_WEIGHT_BYTES = 4 << 20  # larger plans (odd rates with a huge up / down) are not made: use resample_poly
CHUNK_BYTES = 1 << 20  # the [windows, blocks, S * Q] product is made in chunks of about this size (cache)


@dataclass(frozen=True)
class BlockPlan:
    """How one (up, down, taps, window length) resampling is cut into blocks (see module doc)."""

    up: int
    down: int
    n_in: int
    block_in: int  # B = m * down input samples per block
    block_out: int  # Q = m * up output samples per block
    shifts: tuple[int, ...]  # s of each H_s: output block b takes input block b + s
    weights: np.ndarray  # [B, S * Q + 1]: H_s side by side, in the order of `shifts`, then ones (block sums)
    rows: int  # input blocks per matrix product (divides the window's block count)
    ones_response: np.ndarray  # [n_out]: resample(ones), to remove a window's mean afterwards

    @property
    def n_blocks(self) -> int:
        return self.n_in // self.block_in

    @property
    def n_out(self) -> int:
        return self.n_blocks * self.block_out


def _shift_range(m: int, up: int, down: int, half: int) -> tuple[int, int]:
    """Input-sample offsets (first, last) that output block 0 reaches, for blocks of m periods."""
    first = -(half // up)  # ceil(-half / up)
    last = ((m * up - 1) * down + half) // up
    return first, last


def choose_blocks(up: int, down: int, n_in: int, half: int) -> int | None:
    """Periods per block m (m divides n_in / down), the cheapest by a cost model measured on CPU.

    Cost per output sample = S * B multiply-adds (S blocks of B inputs each), times (1 + 16 / Q):
    products with few output columns run well below BLAS speed, and blocks of fewer than
    MIN_BLOCK inputs are avoided for the same reason (on a Xeon, one core: 1000 Hz picks B = 200
    over B = 40, 1.8x faster; 250 Hz B = 50 over B = 100, 1.2x). Q is at most MAX_BLOCK_OUT;
    None when no m allows it (333 Hz: up / down = 100 / 333).
    """
    periods = n_in // down
    fits = [m for m in range(1, periods + 1) if periods % m == 0 and m * up <= MAX_BLOCK_OUT]
    wide = [m for m in fits if m * down >= MIN_BLOCK] or fits

    def cost(m: int) -> float:
        first, last = _shift_range(m, up, down, half)
        n_shifts = last // (m * down) - first // (m * down) + 1
        return n_shifts * m * down * (1 + 16 / (m * up))

    return min(wide, key=cost) if wide else None


def _plan_weights(taps: np.ndarray, up: int, down: int, m: int) -> tuple[tuple[int, ...], np.ndarray]:
    half = (len(taps) - 1) // 2
    g = up * np.asarray(taps, np.float64)  # resample_poly's interpolation gain
    block_in, block_out = m * down, m * up
    first, last = _shift_range(m, up, down, half)
    shifts = tuple(range(first // block_in, last // block_in + 1))
    r = np.arange(shifts[0] * block_in, (shifts[-1] + 1) * block_in)  # input offsets, relative to the block
    j = np.arange(block_out)
    index = j[None, :] * down - r[:, None] * up  # [S * B, Q]: the filter index of each (input, output) pair
    inside = np.abs(index) <= half
    h = np.where(inside, g[np.clip(index + half, 0, len(g) - 1)], 0.0)  # [S * B, Q]
    weights = h.reshape(len(shifts), block_in, block_out).transpose(1, 0, 2).reshape(block_in, -1)  # [B, S * Q]
    return shifts, np.ascontiguousarray(np.hstack([weights, np.ones((block_in, 1))]))  # [B, S * Q + 1]


def block_plan(up: int, down: int, n_in: int, taps: np.ndarray) -> BlockPlan | None:
    """The plan of resampling windows of `n_in` samples by up / down with `taps` (odd length); cache it.

    None when no block size fits (`choose_blocks`) or the plan's matrix would exceed MAX_WEIGHT_BYTES:
    resample_poly is the way there.
    """
    if len(taps) % 2 != 1 or n_in % down:
        raise ValueError(f"blocked resampling needs odd taps and n_in divisible by down (got {len(taps)}, {n_in}/{down})")
    h = np.asarray(taps, np.float64)
    half = (len(h) - 1) // 2
    m = choose_blocks(up, down, n_in, half)
    if m is None:
        return None
    first, last = _shift_range(m, up, down, half)
    n_shifts = last // (m * down) - first // (m * down) + 1
    if m * down * (n_shifts * m * up + 1) * 8 > MAX_WEIGHT_BYTES:
        return None
    shifts, weights = _plan_weights(h, up, down, m)
    n_blocks = n_in // (m * down)
    rows = max(r for r in range(1, n_blocks + 1) if n_blocks % r == 0 and (r == 1 or r * weights.size <= SINGLE_THREAD_MNK))
    plan = BlockPlan(up, down, n_in, m * down, m * up, shifts, weights, rows, np.zeros(0))
    ones = _apply(plan, np.ones((1, n_in)))[0][0]  # [n_out]
    return BlockPlan(up, down, n_in, m * down, m * up, shifts, weights, rows, ones)


def _apply(plan: BlockPlan, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x [n, n_in] float64 C-contiguous -> (resampled [n, n_out] with zero padding at both ends, sums [n])."""
    n = len(x)
    nb, q = plan.n_blocks, plan.block_out
    y = np.empty((n, nb, q))  # [n, blocks, Q]
    sums = np.empty(n)
    step = max(1, CHUNK_BYTES // (nb * plan.weights.shape[1] * 8))
    centre = plan.shifts.index(0)
    for a in range(0, n, step):
        b = min(n, a + step)
        blocks = x[a:b].reshape(-1, plan.rows, plan.block_in)  # [c * blocks / rows, rows, B], a view
        z = (blocks @ plan.weights).reshape(b - a, nb, -1)  # [c, blocks, S * Q + 1]: products of one shape
        sums[a:b] = z[:, :, -1].sum(axis=1)
        y[a:b] = z[:, :, centre * q : (centre + 1) * q]  # shift 0: x[b] @ H_0
        for i, s in enumerate(plan.shifts):  # y[b] += x[b + s] @ H_s, within the window
            if s:
                lo, hi = max(0, -s), min(nb, nb - s)
                y[a:b, lo:hi] += z[:, lo + s : hi + s, i * q : (i + 1) * q]
    return y.reshape(n, nb * q), sums


def resample_blocked(x: np.ndarray, plan: BlockPlan) -> tuple[np.ndarray, np.ndarray]:
    """Windows x [..., n_in] -> (resample_poly(x - mean, up, down, window=taps) [..., n_out], mean [..., 1]).

    The mean is each window's; it is not finite when a sample is not (NaN, Inf), so callers check it.
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    lead, n_in = x.shape[:-1], x.shape[-1]
    if n_in != plan.n_in:
        raise ValueError(f"the plan is for windows of {plan.n_in} samples, got {n_in}")
    y, sums = _apply(plan, x.reshape(-1, n_in))  # [n, n_out], [n]
    mean = sums[:, None] / n_in  # [n, 1]
    y -= mean * plan.ones_response
    return y.reshape(*lead, plan.n_out), mean.reshape(*lead, 1)
