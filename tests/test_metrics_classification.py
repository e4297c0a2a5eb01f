"""UF1 / UAR and friends: values against hand counts and scikit-learn, conventions for missing classes, errors."""

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score

from facelab import metrics
from facelab.metrics import accuracy, classification_summary, confusion_matrix, per_class_scores, uar, uf1


def test_exported_from_package():
    for name in ("uf1", "uar", "confusion_matrix", "classification_summary"):
        assert name in metrics.classification.__all__
        assert getattr(metrics, name) is getattr(metrics.classification, name)


def test_hand_counts():
    y_true = ["hap", "hap", "hap", "sur", "sur", "dis"]
    y_pred = ["hap", "hap", "sur", "sur", "dis", "dis"]
    cm = confusion_matrix(y_true, y_pred, labels=["hap", "sur", "dis"])
    assert cm.values.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    # F1: hap 2*2/(4+0+1)=0.8, sur 2/(2+1+1)=0.5, dis 2/(2+1+0)=2/3
    assert uf1(y_true, y_pred) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    # recall: 2/3, 1/2, 1
    assert uar(y_true, y_pred) == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert accuracy(y_true, y_pred) == pytest.approx(4 / 6)
    s = classification_summary(y_true, y_pred)
    assert s["n"] == 6 and s["UF1"] == pytest.approx(uf1(y_true, y_pred))


def test_matches_sklearn_on_random_labels():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 5, 300)
    y_pred = np.where(rng.random(300) < 0.5, y_true, rng.integers(0, 5, 300))
    assert uf1(y_true, y_pred) == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert uar(y_true, y_pred) == pytest.approx(balanced_accuracy_score(y_true, y_pred))


def test_missing_class_conventions():
    # class 2 is predicted but never true: F1 = 0 counts in UF1, recall undefined -> left out of UAR
    y_true, y_pred = [0, 0, 1, 1], [0, 2, 1, 1]
    table = per_class_scores(y_true, y_pred)
    assert np.isnan(table.loc[2, "recall"]) and table.loc[2, "f1"] == 0
    assert uar(y_true, y_pred) == pytest.approx((0.5 + 1.0) / 2)
    assert uf1(y_true, y_pred) == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)
    # a label listed but absent from both arrays is left out of both averages
    assert uf1([0, 1], [0, 1], labels=[0, 1, 2]) == pytest.approx(1.0)
    assert uar([0, 1], [0, 1], labels=[0, 1, 2]) == pytest.approx(1.0)


def test_perfect_and_majority_predictions():
    y = np.array([0] * 90 + [1] * 10)
    assert uf1(y, y) == 1.0 and uar(y, y) == 1.0
    majority = np.zeros_like(y)
    assert accuracy(y, majority) == pytest.approx(0.9)
    assert uar(y, majority) == pytest.approx(0.5)  # the point of UAR: the majority vote is not rewarded


def test_bad_input():
    with pytest.raises(ValueError, match="same length"):
        uf1([0, 1], [0])
    with pytest.raises(ValueError, match="empty"):
        uar([], [])
    with pytest.raises(ValueError, match="1-D"):
        uf1(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="not in labels"):
        uf1([0, 1], [0, 3], labels=[0, 1])
