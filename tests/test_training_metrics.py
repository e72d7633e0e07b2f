"""numpy metrics against scikit-learn, and the paper's aggregate score."""

import numpy as np
import pytest

from physioserve.metrics import (
    aggregate_score,
    auroc,
    balanced_accuracy,
    binary_auroc,
    classification_metrics,
    cohen_kappa,
    macro_f1,
)

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def _probs(rng, n, k):
    logits = rng.normal(size=(n, k))
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [2, 5])
def test_metrics_match_scikit_learn(seed, k):
    rng = np.random.default_rng(seed)
    n = 300
    y = rng.integers(0, k, n)
    prob = _probs(rng, n, k)
    prob[np.arange(n), y] += rng.uniform(0, 0.5, n)  # some signal
    prob /= prob.sum(1, keepdims=True)
    pred = prob.argmax(1)
    assert balanced_accuracy(y, pred, k) == pytest.approx(sklearn_metrics.balanced_accuracy_score(y, pred))
    assert cohen_kappa(y, pred, k) == pytest.approx(sklearn_metrics.cohen_kappa_score(y, pred))
    assert macro_f1(y, pred, k) == pytest.approx(sklearn_metrics.f1_score(y, pred, average="macro"))
    if k == 2:
        expected = sklearn_metrics.roc_auc_score(y, prob[:, 1])
    else:
        expected = sklearn_metrics.roc_auc_score(y, prob, multi_class="ovr", average="macro")
    assert auroc(y, prob) == pytest.approx(expected)


def test_auroc_with_ties_and_missing_predicted_classes():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    score = rng.integers(0, 4, 200).astype(float)  # many ties
    assert binary_auroc(y, score) == pytest.approx(sklearn_metrics.roc_auc_score(y, score))
    y5 = rng.integers(0, 5, 200)
    pred = np.where(y5 == 4, 0, y5)  # class 4 never predicted
    assert macro_f1(y5, pred, 5) == pytest.approx(sklearn_metrics.f1_score(y5, pred, average="macro", zero_division=0))
    assert balanced_accuracy(y5, pred, 5) == pytest.approx(sklearn_metrics.balanced_accuracy_score(y5, pred))
    assert np.isnan(binary_auroc(np.ones(5), np.arange(5)))  # one class only


def test_aggregate_reproduces_the_papers_all_pretrained_row():
    """(0.744 - 0.2) / 0.2, (0.719 - 0.5) / 0.5, (0.637 - 0.5) / 0.5 averaged = 1.144: balanced accuracy
    (chance 1/K) is the metric that makes the paper's arithmetic work."""
    score = aggregate_score({"sleep_stage": 0.744, "age": 0.719, "arousal": 0.637})
    assert score == pytest.approx(1.144, abs=5e-4)
    assert aggregate_score({"sleep_stage": 0.2, "age": 0.5, "arousal": 0.5}) == 0.0


def test_classification_metrics_keys():
    rng = np.random.default_rng(1)
    out = classification_metrics(rng.integers(0, 5, 50), _probs(rng, 50, 5))
    assert set(out) == {"balanced_accuracy", "kappa", "macro_f1", "auroc", "n"} and out["n"] == 50
