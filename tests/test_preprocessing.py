"""The one preprocessing: frequency response measured with sinusoids, errors, vectorisation."""

import numpy as np
import pytest

from physioserve.modalities import MODALITIES
from physioserve.preprocessing import DEFAULT_CONFIG, check_config_matches, preprocess, preprocess_modalities

RATES = (100, 128, 200, 250, 256, 500, 512, 1000)
AMPLITUDE_UV = 10.0
SETTLED = slice(500, 2500)  # the middle 20 s: away from the window-edge transients of the 0.1 Hz high-pass


def gain_db(freq_hz: float, fs: int, modality: str) -> float:
    """Output/input amplitude of a sinusoid (on a 100 µV offset), in dB.

    Frequencies below the output Nyquist are fitted at their own frequency; higher ones fold, so
    their leftover power is measured as the RMS of the output.
    """
    t = np.arange(30 * fs) / fs
    x = AMPLITUDE_UV * np.sin(2 * np.pi * freq_hz * t + 0.3) + 100.0
    y = preprocess(x, fs, modality).astype(np.float64) * DEFAULT_CONFIG.scale_uv[modality]
    if freq_hz < 50:
        tt = np.arange(3000)[SETTLED] / 100
        basis = np.stack([np.sin(2 * np.pi * freq_hz * tt), np.cos(2 * np.pi * freq_hz * tt)], axis=1)
        coef, *_ = np.linalg.lstsq(basis, y[SETTLED], rcond=None)
        amplitude = np.hypot(*coef)
    else:
        amplitude = np.sqrt(2) * y[SETTLED].std()
    return 20 * np.log10(amplitude / AMPLITUDE_UV + 1e-12)


@pytest.mark.parametrize("fs", RATES)
@pytest.mark.parametrize("modality", MODALITIES)
def test_passband_flat_within_1_db(fs, modality):
    top = 25.0 if modality in ("eeg", "eog") else 40.0
    for f in (0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 25.0, top):
        assert abs(gain_db(f, fs, modality)) <= 1.0, (fs, modality, f)


@pytest.mark.parametrize("fs", RATES)
@pytest.mark.parametrize("modality", MODALITIES)
def test_stopband_at_least_30_db_down(fs, modality):
    stop = [f for f in (55.0, 60.0, 70.0, 100.0, 150.0, 200.0, 300.0, 450.0) if f < fs / 2]
    if modality in ("eeg", "eog"):
        stop = [40.0, 45.0, 48.0] + stop
    for f in stop:
        assert gain_db(f, fs, modality) <= -30.0, (fs, modality, f)


def test_constant_offset_removed():
    y = preprocess(np.full(6000, 250.0), 200, "eeg")
    assert np.abs(y).max() < 1e-6


def test_output_shape_dtype_and_batch_axes():
    x = np.random.default_rng(0).normal(0, 20, (3, 2, 7680))
    y = preprocess(x, 256, "eog")
    assert y.shape == (3, 2, 3000) and y.dtype == np.float32


def test_vectorised_equals_window_by_window_bitwise():
    x = np.random.default_rng(1).normal(0, 30, (6, 6000))
    whole = preprocess(x, 200, "eeg")
    one_by_one = np.stack([preprocess(w, 200, "eeg") for w in x])
    assert np.array_equal(whole, one_by_one)


@pytest.mark.parametrize(
    "args, message",
    [
        ((np.zeros(1470), 49, "eeg"), "below 50 Hz"),
        ((np.zeros(5999), 200, "eeg"), "6000 samples"),
        ((np.zeros(6000), 200, "eegg"), "accepted: eeg, eog, emg, ecg"),
        ((np.r_[np.zeros(5999), np.nan], 200, "ecg"), "NaN or Inf"),
        ((np.r_[np.zeros(5999), np.inf], 200, "ecg"), "NaN or Inf"),
        ((np.zeros(3000 * 7 + 1), 100.03, "eeg"), "whole number of samples"),
    ],
)
def test_bad_input_names_the_problem(args, message):
    with pytest.raises(ValueError, match=message):
        preprocess(*args)


def test_preprocess_modalities_masks_absent_and_rejects_empty():
    rng = np.random.default_rng(2)
    signals, mask = preprocess_modalities({"eeg": (rng.normal(size=(2, 6000)), 200), "ecg": (rng.normal(size=(2, 7500)), 250)})
    assert signals.shape == (2, 4, 3000) and mask.tolist() == [[True, False, False, True]] * 2
    assert not signals[:, 1:3].any()
    with pytest.raises(ValueError, match="at least one of eeg, eog, emg, ecg"):
        preprocess_modalities({})


def test_config_mismatch_is_refused():
    recorded = DEFAULT_CONFIG.to_dict() | {"highpass_hz": 0.3}
    with pytest.raises(ValueError, match="highpass_hz"):
        check_config_matches(recorded, where="bundle X")
    check_config_matches(DEFAULT_CONFIG.to_dict(), where="bundle X")


# ---- rates of 50-99 Hz, and missing data --------------------------------------------------------------


@pytest.mark.parametrize("fs", [50, 60, 64, 75, 80, 99])
def test_upsampling_from_50_to_99_hz_creates_no_images(fs):
    """White noise at fs < 100 Hz, upsampled: nothing above fs / 2 (60 dB down), the band below kept."""
    from scipy import signal

    x = np.random.default_rng(fs).normal(0, 10, (16, 30 * fs))
    y = preprocess(x, fs, "emg").astype(np.float64) * DEFAULT_CONFIG.scale_uv["emg"]  # [16, 3000] µV
    assert y.shape == (16, 3000)
    f, p = signal.welch(y, fs=100, nperseg=1000, axis=-1)
    p = p.mean(axis=0)
    kept, above = p[(f > 1) & (f < 0.8 * fs / 2)].mean(), p[f > fs / 2 + 0.5]
    assert len(above) == 0 or 10 * np.log10(above.mean() / kept) < -60, fs
    assert np.std(y) == pytest.approx(10 * np.sqrt(0.8), rel=0.15)  # white noise keeps its power below 0.8 fs / 2


def test_band_limit_is_reported_only_where_the_band_is_cut():
    from physioserve.preprocessing import band_limit_hz

    assert band_limit_hz(50, "eeg") == 20.0 and band_limit_hz(50, "emg") == 20.0
    assert band_limit_hz(80, "eeg") is None and band_limit_hz(80, "ecg") == 32.0  # EEG stops at 31 Hz anyway
    assert all(band_limit_hz(fs, m) is None for fs in (100, 128, 200, 256) for m in ("eeg", "eog", "emg", "ecg"))


def test_rates_from_100_hz_keep_the_filter_they_always_had():
    """>= 100 Hz: the anti-aliasing edges are the config's 40 / 50 Hz exactly, so outputs are unchanged bit for bit."""
    from physioserve.preprocessing import _antialias_edges

    for fs in (100, 128, 200, 250, 256, 500, 512, 1000, 100.5 * 2):
        assert _antialias_edges(fs, DEFAULT_CONFIG) == (40.0, 50.0)
    assert _antialias_edges(50, DEFAULT_CONFIG) == (20.0, 25.0)


def test_missing_windows_flat_saturated_invalid():
    from physioserve.preprocessing import missing_windows

    rng = np.random.default_rng(3)
    fs = 200
    x = rng.normal(0, 20, (7, 30 * fs))  # [7, 6000] µV
    x[1] = 0.0  # lead off: exactly 0 µV
    x[2, 1000:2100] = 12.3  # constant for 5.5 s inside a normal window
    x[3, 3000:4200] += rng.normal(0, 0.05, 1200) - x[3, 3000:4200]  # near-constant (0.3 µV p-p) for 6 s
    x[4, 3000:3900] = 7.0  # constant for 4.5 s only: kept
    x[5] = rng.normal(0, 1.5, 30 * fs)  # a quiet chin EMG (REM atonia): kept
    x[6, 10] = np.nan
    assert missing_windows(x, fs).tolist() == [False, True, True, True, False, False, True]
    clipped = np.clip(rng.normal(0, 400, (2, 30 * fs)), -250, 250)  # ~53 % of the samples at +-250 µV
    clipped[1] = np.clip(clipped[1], -100, 100) * 0.5  # within the limits: not clipped
    assert missing_windows(clipped, fs, limits=(-250.0, 250.0)).tolist() == [True, False]
    assert missing_windows(clipped, fs).tolist() == [False, False]  # limits unknown: only flat counts


def test_a_lead_off_jittering_by_one_count_is_flat():
    from physioserve.preprocessing import missing_windows

    rng = np.random.default_rng(4)
    step = 1.0  # µV per count: a coarse ADC
    off = np.round(rng.normal(0, 0.4, (1, 6000)))  # +-1 count around 0: 2 µV peak-to-peak
    assert missing_windows(off, 200).tolist() == [False]  # without the step: above 0.5 µV
    assert missing_windows(off, 200, step=step).tolist() == [True]
    quiet = np.round(rng.normal(0, 1.5, (1, 6000)) / step) * step  # a quiet real EMG, quantised
    assert missing_windows(quiet, 200, step=step).tolist() == [False]


# ---- the resampling implementation: unchanged output at 100 / 200 Hz, measured tolerance elsewhere ------


def release_1_preprocess(x, fs, modality):
    """`preprocess` as released before blocked resampling (scipy's resample_poly at every rate): the oracle."""
    from scipy import signal

    from physioserve.preprocessing import _antialias_edges, _antialias_taps, _bandpass_sos, _rational

    config = DEFAULT_CONFIG
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=-1, keepdims=True)
    up, down = _rational(fs)
    if (up, down) != (1, 1):
        pass_hz, stop_hz = _antialias_edges(fs, config)
        taps = _antialias_taps(up, down, pass_hz, stop_hz, config.antialias_atten_db)
        x = signal.resample_poly(x, up, down, axis=-1, window=taps)
    sos = _bandpass_sos(config.highpass_hz, config.highpass_order, config.lowpass_hz[modality], config.lowpass_order)[0]
    x = signal.sosfiltfilt(sos, x, axis=-1)
    x = np.clip(x / config.scale_uv[modality], -config.clip, config.clip)
    return np.ascontiguousarray(x, dtype=np.float32)


def night_like(n: int, fs: float, seed: int) -> np.ndarray:
    """[n, 30 fs] µV: noise, a slow wave, a DC offset per window and a drift, a few clipped artefacts."""
    rng = np.random.default_rng(seed)
    samples = int(round(30 * fs))
    t = np.arange(samples) / fs
    x = rng.normal(0, 20, (n, samples)) + 60 * np.sin(2 * np.pi * 0.8 * t + rng.uniform(0, 6, (n, 1)))
    x += rng.normal(0, 800, (n, 1)) + np.linspace(0, 300, samples)
    x[0, : samples // 10] += 3000.0  # a movement artefact, beyond the clip
    return x


@pytest.mark.parametrize("fs", [100, 200])
@pytest.mark.parametrize("modality", MODALITIES)
def test_100_and_200_hz_are_bit_identical_to_release_1(fs, modality):
    """The training data is 200 Hz: its caches, checkpoints and bundles stay valid bit for bit."""
    x = night_like(12, fs, seed=fs)
    assert np.array_equal(preprocess(x, fs, modality), release_1_preprocess(x, fs, modality))
    assert np.array_equal(preprocess(x[3], fs, modality), release_1_preprocess(x[3], fs, modality))


@pytest.mark.parametrize("fs", [50, 64, 128, 250, 256, 333, 500, 512, 1000, 1024, 2048])
def test_other_rates_within_one_float32_step_of_release_1(fs):
    """Above 200 Hz the same filter runs as blocked products: at most 1 float32 step from release 1
    (~2e-4 of the samples differ, by <= 1.2e-7 of the 25 µV unit); below, and at odd rates, unchanged."""
    from physioserve.preprocessing import BLOCKED_ABOVE_HZ

    for modality in MODALITIES:
        x = night_like(8, fs, seed=int(fs))
        new, old = preprocess(x, fs, modality), release_1_preprocess(x, fs, modality)
        step = np.spacing(np.abs(old))  # float32 rounding step of each value
        assert np.all(np.abs(new.astype(np.float64) - old) <= step), (fs, modality)
        assert np.mean(new != old) < 1e-3, (fs, modality)
        if fs <= BLOCKED_ABOVE_HZ or fs == 333:  # scipy's loop (333 Hz: no block plan fits)
            assert np.array_equal(new, old), (fs, modality)


@pytest.mark.parametrize("fs", [512, 250, 1000])
def test_blocked_rates_vectorised_equals_window_by_window_bitwise(fs):
    x = night_like(23, fs, seed=7)
    whole = preprocess(x, fs, "eeg")
    assert np.array_equal(whole, np.stack([preprocess(w, fs, "eeg") for w in x]))
    assert np.array_equal(whole, np.concatenate([preprocess(x[i : i + 5], fs, "eeg") for i in range(0, 23, 5)]))


def test_blocked_rates_do_not_depend_on_the_blas_thread_count():
    """Ray workers run one BLAS thread, a local scorer all cores: both must give the same bits."""
    import subprocess
    import sys

    code = ("import hashlib, numpy as np; from physioserve.preprocessing import preprocess; "
            "rng = np.random.default_rng(5); "
            "print(''.join(hashlib.sha256(preprocess(rng.normal(0, 30, (40, 30 * fs)), fs, 'eeg').tobytes()).hexdigest()[:16] "
            "for fs in (256, 512, 1000, 2000)))")
    digests = set()
    for threads in ("1", "3"):
        env = {**__import__("os").environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
        digests.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)
    assert len(digests) == 1


def test_huge_sums_are_refused_clearly():
    with np.errstate(over="ignore"), pytest.raises(ValueError, match="too large"):
        preprocess(np.full(15360, 1e306), 512, "eeg")
    with pytest.raises(ValueError, match="NaN or Inf"):
        preprocess(np.r_[np.zeros(15359), np.nan], 512, "eeg")


@pytest.mark.parametrize("modality", MODALITIES)
def test_band_pass_is_scipys_sosfiltfilt_bit_for_bit(modality):
    """preprocessing._filtfilt keeps the filter's initial conditions per filter; its output must be
    scipy.signal.sosfiltfilt's, bit for bit, for 1-D and 2-D, strided and float32 input."""
    from scipy import signal

    from physioserve.preprocessing import _bandpass_sos, _filtfilt

    config = DEFAULT_CONFIG
    sos, zi, edge = _bandpass_sos(config.highpass_hz, config.highpass_order, config.lowpass_hz[modality],
                                  config.lowpass_order)
    x = np.random.default_rng(5).normal(0, 30, (3, 3000))
    for data in (x, x[0], x[:, ::2], x.astype(np.float32), np.asfortranarray(x), x[:, : edge + 1]):
        ours, scipys = _filtfilt(np.asarray(data), sos, zi, edge), signal.sosfiltfilt(sos, data, axis=-1)
        assert ours.dtype == scipys.dtype and np.array_equal(ours, scipys)
    with pytest.raises(ValueError, match="too short"):
        _filtfilt(x[:, :edge], sos, zi, edge)
