"""Temperature scaling and the expected calibration error."""

from __future__ import annotations

import numpy as np

from training.calibration import calibrate, fit_temperature, nll, reliability, softmax


def sampled(n: int, temperature: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits / temperature): the fitted T must come back."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, 5))
    probs = softmax(logits, temperature)
    y = np.array([rng.choice(5, p=p) for p in probs])
    return logits, y


def test_fitted_temperature_recovers_the_true_one():
    for true_t in (0.5, 1.0, 2.5):
        logits, y = sampled(6000, true_t, seed=int(true_t * 10))
        t = fit_temperature(logits, y)
        assert abs(t / true_t - 1) < 0.1, (true_t, t)
        assert nll(logits, y, t) <= min(nll(logits, y, t * 1.2), nll(logits, y, t / 1.2))


def test_scaling_an_overconfident_model_lowers_ece_and_nll():
    logits, y = sampled(6000, 2.0)
    result = calibrate(logits, y)  # logits used at T = 1 are over-confident
    assert result["temperature"] > 1.5
    assert result["ece_after"] < result["ece_before"] and result["ece_after"] < 0.03
    assert result["nll_after"] < result["nll_before"]


def test_ece_is_the_bin_weighted_gap_between_accuracy_and_confidence():
    probs = np.array([[0.95, 0.05]] * 10 + [[0.55, 0.45]] * 10)
    y = np.array([0] * 9 + [1] + [0] * 5 + [1] * 5)  # 90 % right at 0.95, 50 % right at 0.55
    result = reliability(probs, y, bins=10)
    assert np.isclose(result["ece"], 0.5 * abs(0.9 - 0.95) + 0.5 * abs(0.5 - 0.55))
    counts = [b["count"] for b in result["bins"]]
    assert sum(counts) == 20 and counts[5] == 10 and counts[9] == 10
