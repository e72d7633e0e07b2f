"""Background EEG with a time-varying, smooth spectrum, made in the short-time Fourier domain.

The ongoing EEG is a Gaussian process whose power spectrum changes with the stage (second by
second, through the control signals) and with the derivation (through the topographies of
`montage`). It is synthesised frame by frame: 2 s frames every 1 s, complex Gaussian coefficients
with the target amplitude, inverse FFT, a sine window (whose square sums to one at 50 % overlap, so
the variance is constant) and overlap-add. Compared with summing band-pass filtered noises this
gives any smooth spectrum without bumps or plateaus and costs a few FFTs per derivation.

The spectrum of frame t on derivation d at frequency f is

    P_d(t, f) = sum_j | sum_k b(t, f) a_k(t) c_{k,d,j} s_k(f) |^2

with components k (frequency bands of the background, alpha, scalp muscle), their frame amplitudes
a_k(t) (from the control signals), their spectral shapes s_k(f) (sqrt of µV²/Hz at a = 1), an
optional per-frame spectrum b(t, f) shared by a group of components (the stage mixture), and the
field weights c_{k,d,j} of `montage.coefficients` (spatial coherence between derivations).
"""

from __future__ import annotations

import numpy as np

from ._dsp import FS

NPERSEG = 400  # 2 s frames at 200 Hz
HOP = NPERSEG // 2  # 1 s
F_MAX = 70.0  # Hz: nothing is synthesised above (scalp EEG above 70 Hz is muscle and noise, added elsewhere)
FREQS = np.fft.rfftfreq(NPERSEG, 1.0 / FS)[: int(F_MAX * NPERSEG / FS) + 1]  # [F] 0, 0.5, ... 70 Hz
_WINDOW = np.sin(np.pi * (np.arange(NPERSEG) + 0.5) / NPERSEG).astype(np.float32)  # sin^2 + cos^2 = 1
_SCALE = np.sqrt(FS * NPERSEG / 2.0)  # |X_k| for a one-sided PSD of 1 µV²/Hz (numpy irfft convention)
# Complex Gaussian coefficients are looked up in a fixed table of 2^16 draws by random 16-bit
# indices: 5x faster than fresh normals, and the same distribution to within sampling error.
_TABLE = (np.random.default_rng(20180101).standard_normal((65536, 2)) @ np.array([1.0, 1.0j]) * np.sqrt(0.5)).astype(np.complex64)


def n_frames(n: int) -> int:
    """Frames covering n samples: frame t spans samples [(t - 1) * HOP, (t + 1) * HOP)."""
    return n // HOP + 2


def frame_values(ctrl: np.ndarray, n: int, ctrl_step: int) -> np.ndarray:
    """A control signal (one point per `ctrl_step` samples) at the frame centres, t * HOP samples."""
    idx = np.minimum(np.arange(n_frames(n)) * HOP // ctrl_step, len(ctrl) - 1)
    return np.asarray(ctrl)[idx]


def synthesise(rng: np.random.Generator, n: int, groups: list[tuple], chunk: int = 1200) -> np.ndarray:
    """Background [D, n] float32 (µV) from groups of components.

    Each group is (amp [T, K], shapes [K, F], coefs [K, D, J], base [T, F] or None, quadrature):
    the amplitude of component k on field j of derivation d at frame t and frequency FREQS[f] is
    base[t, f] * amp[t, k] * coefs[k, d, j] * shapes[k, f] (T = n_frames(n)), times i for a
    quadrature group: components a quarter period apart add in power even on a shared field.
    Frames are made in chunks of `chunk` (memory ~ chunk * D * J * F).
    """
    n_d, n_j = groups[0][2].shape[1:]
    coefs_any = sum(np.abs(g[2]).sum(axis=0) for g in groups)  # [D, J]: skip fields a derivation does not see
    pairs = [(d, j) for d in range(n_d) for j in range(n_j) if coefs_any[d, j] > 0]
    p_d = np.array([d for d, _ in pairs])
    p_j = np.array([j for _, j in pairs])
    n_f = len(FREQS)
    bases = []
    for amp, shapes, coefs, base, _ in groups:
        b = coefs[:, p_d, p_j][:, :, None] * shapes[:, None, :] * _SCALE  # [K, P, F]
        bases.append(b.reshape(len(shapes), -1).astype(np.float32))
    n_t = groups[0][0].shape[0]
    out = np.zeros((n_d, (n_t + 1) * HOP), np.float32)
    for t0 in range(0, n_t, chunk):
        t1 = min(t0 + chunk, n_t)
        a = np.zeros((2, t1 - t0, len(pairs), n_f), np.float32)  # in phase, quadrature
        for (amp, _, _, base, quadrature), b in zip(groups, bases, strict=True):
            part = (amp[t0:t1].astype(np.float32) @ b).reshape(t1 - t0, len(pairs), n_f)  # [Tc, P, F]
            if base is not None:
                part *= base[t0:t1, None, :].astype(np.float32)
            a[int(quadrature)] += part
        a = a[0] + 1j * a[1] if any(g[4] for g in groups) else a[0]
        z = _TABLE[rng.integers(0, 65536, (n_j, t1 - t0, n_f), dtype=np.uint16)]  # [J, Tc, F], E|z|^2 = 1
        spec = np.zeros((n_d, t1 - t0, n_f), np.complex64)
        for p, (d, j) in enumerate(pairs):
            spec[d] += a[:, p, :] * z[j]
        spec[:, :, 0] = 0  # no DC
        frames = np.fft.irfft(spec, n=NPERSEG, axis=-1).astype(np.float32) * _WINDOW  # [D, Tc, NPERSEG]
        # frame t covers output samples [t * HOP, t * HOP + NPERSEG) (shifted by HOP, cut at the end)
        out[:, t0 * HOP:t1 * HOP] += frames[:, :, :HOP].reshape(n_d, -1)
        out[:, (t0 + 1) * HOP:(t1 + 1) * HOP] += frames[:, :, HOP:].reshape(n_d, -1)
    return out[:, HOP:HOP + n]
