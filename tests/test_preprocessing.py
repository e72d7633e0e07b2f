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
