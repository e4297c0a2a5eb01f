"""Tests of facelab.metrics.pad (ISO/IEC 30107-3 APCER, BPCER, ACER; AUC/EER through verification)."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from facelab.metrics import acer, apcer, apcer_per_species, bpcer, eer, pad_report

LABELS = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
SCORES = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1, 0.55, 0.05])
TYPES = np.array(["live"] * 4 + ["print", "print", "replay", "replay", "morph", "morph"])


def test_hand_computed_values():
    # attacks accepted (score >= 0.5): 0.7 (print) and 0.55 (morph) -> pooled APCER 2/6; bona fide 0.3 rejected
    assert apcer(LABELS, SCORES) == pytest.approx(2 / 6)
    assert bpcer(LABELS, SCORES) == pytest.approx(1 / 4)
    assert acer(LABELS, SCORES, attack_types=TYPES, reduce="pooled") == pytest.approx((2 / 6 + 1 / 4) / 2)
    per = apcer_per_species(LABELS, SCORES, TYPES)
    assert per == {"morph": 0.5, "print": 0.5, "replay": 0.0}
    assert apcer(LABELS, SCORES, attack_types=TYPES, reduce="max") == 0.5
    assert apcer(LABELS, SCORES, attack_types=TYPES, reduce="mean") == pytest.approx(1 / 3)
    assert acer(LABELS, SCORES, attack_types=TYPES) == pytest.approx((0.5 + 0.25) / 2)


def test_threshold_is_inclusive_and_moves_errors():
    y, s = [1, 0], [0.5, 0.5]
    assert bpcer(y, s, threshold=0.5) == 0.0 and apcer(y, s, threshold=0.5) == 1.0
    assert bpcer(y, s, threshold=0.51) == 1.0 and apcer(y, s, threshold=0.51) == 0.0


def test_pad_report_matches_sklearn_and_verification():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = rng.normal(size=200) + 1.5 * y
    row = pad_report(y, s, threshold=0.7, attack_types=np.where(y == 1, "live", rng.choice(["a", "b"], 200)))
    assert row["AUC"] == pytest.approx(roc_auc_score(y, s))
    assert row["EER"] == pytest.approx(eer(y, s)[0])
    assert row["ACER"] == pytest.approx((row["APCER"] + row["BPCER"]) / 2)
    assert row["APCER_max"] == pytest.approx(max(row["APCER[a]"], row["APCER[b]"]))
    assert row["n_bonafide"] == int(y.sum()) and row["n_attack"] == int((1 - y).sum())


def test_perfect_and_torch_inputs():
    y = torch.tensor([1, 1, 0, 0])
    s = torch.tensor([0.9, 0.8, 0.1, 0.2])
    row = pad_report(y, s)
    assert row["ACER"] == 0.0 and row["AUC"] == 1.0 and row["EER"] == 0.0


@pytest.mark.parametrize("labels, what", [([1, 1, 1], "no attack samples"), ([0, 0, 0], "no bona fide")])
def test_one_class_means_acer_undefined(labels, what):
    with pytest.raises(ValueError, match=what) as err:
        acer(labels, [0.2, 0.6, 0.9])
    assert "ACER" in str(err.value)
    with pytest.raises(ValueError, match="undefined"):
        pad_report(labels, [0.2, 0.6, 0.9])


def test_bad_inputs():
    with pytest.raises(ValueError, match="same length"):
        acer([1, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="1 \\(bona fide"):
        acer([2, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN"):
        acer([1, 0], [np.nan, 0.2])
    with pytest.raises(ValueError, match="reduce"):
        apcer([1, 0], [0.1, 0.2], reduce="median")
    with pytest.raises(ValueError, match="one entry per sample"):
        apcer_per_species([1, 0], [0.1, 0.2], ["print"])
    with pytest.raises(ValueError, match="finite"):
        bpcer([1, 0], [0.1, 0.2], threshold=float("nan"))
