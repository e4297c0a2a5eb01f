"""facelab.metrics.abaw: the ABAW metrics against scikit-learn, scipy and a hand-written CCC; bad input."""

import warnings

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr
from sklearn.metrics import f1_score

from facelab import metrics
from facelab.metrics import (ABAW_EXPRESSIONS, MIMICRY_DIMENSIONS, ah_f1, ccc, expression_f1, expression_f1_per_class,
                             expression_indices, mimicry_score, pearson, va_score)


def _ccc_by_hand(x, y):
    """Lin (1989) with population moments, written out term by term."""
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sx2 = sum((a - mx) ** 2 for a in x) / n
    sy2 = sum((b - my) ** 2 for b in y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y)) / n
    return 2 * sxy / (sx2 + sy2 + (mx - my) ** 2)


def test_exported_from_metrics():
    assert metrics.ccc is ccc and metrics.expression_f1 is expression_f1 and metrics.ah_f1 is ah_f1
    assert ABAW_EXPRESSIONS == ("neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise", "other")
    assert len(MIMICRY_DIMENSIONS) == 6


# ---------------------------------------------------------------------------------------------------------------
# expressions


def test_expression_f1_matches_sklearn():
    rng = np.random.default_rng(0)
    for n in (30, 500):
        t = rng.integers(0, 8, n)
        p = np.where(rng.random(n) < 0.5, t, rng.integers(0, 8, n))
        want = f1_score(t, p, labels=list(range(8)), average="macro", zero_division=0)
        assert expression_f1(t, p) == pytest.approx(want, abs=1e-12)
        per = expression_f1_per_class(t, p)
        np.testing.assert_allclose(per.values, f1_score(t, p, labels=list(range(8)), average=None, zero_division=0))
        assert list(per.index) == list(ABAW_EXPRESSIONS)
        # names, any case, give the same score as indices; so do tensors
        names = np.array(ABAW_EXPRESSIONS)
        assert expression_f1(names[t], [s.upper() for s in names[p]]) == pytest.approx(want, abs=1e-12)
        assert expression_f1(torch.from_numpy(t), torch.from_numpy(p)) == pytest.approx(want, abs=1e-12)


def test_expression_f1_absent_classes():
    t, p = [4, 4, 1, 0], [4, 0, 1, 0]  # classes 2, 3, 5, 6, 7 never occur
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zero = f1_score(t, p, labels=list(range(8)), average="macro", zero_division=0)
        present = f1_score(t, p, average="macro")  # sklearn: the labels present in truth or prediction
    assert expression_f1(t, p) == pytest.approx(zero)
    assert expression_f1(t, p, absent="ignore") == pytest.approx(present)
    assert np.isnan(expression_f1_per_class(t, p, absent="ignore")["other"])
    assert expression_f1(["happiness", "anger"], ["happiness", "neutral"]) == pytest.approx(1 / 8)


def test_expression_ignore_index_drops_unannotated_frames():
    t = np.array([0, -1, 4, 4, -1, 6])
    p = np.array([0, 99, 4, 3, 5, 6])  # predictions of dropped frames are not checked
    keep = t != -1
    want = f1_score(t[keep], p[keep], labels=list(range(8)), average="macro", zero_division=0)
    assert expression_f1(t, p, ignore_index=-1) == pytest.approx(want)
    with pytest.raises(ValueError, match="ignore_index=-1"):
        expression_f1(t, p)  # -1 is not a class unless asked for
    with pytest.raises(ValueError, match="nothing to score"):
        expression_f1([-1, -1], [0, 1], ignore_index=-1)


def test_expression_bad_input():
    with pytest.raises(ValueError, match=r"unknown expression names \['happy'\]"):
        expression_f1(["happy", "neutral"], ["neutral", "neutral"])
    with pytest.raises(ValueError, match="unknown expression indices"):
        expression_f1([0, 8], [0, 1])
    with pytest.raises(ValueError, match="unknown expression indices"):
        expression_f1([0, 1], [0, -1])  # a prediction must be a class even with ignore_index
    with pytest.raises(ValueError, match="same length"):
        expression_f1([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        expression_f1([0.0, np.nan], [0, 1])
    with pytest.raises(ValueError, match="fractional"):
        expression_f1([0.0, 1.5], [0, 1])
    with pytest.raises(ValueError, match="empty"):
        expression_f1([], [])
    with pytest.raises(ValueError, match="absent"):
        expression_f1([0], [0], absent="skip")
    assert expression_indices(["Neutral", " other "]).tolist() == [0, 7]


# ---------------------------------------------------------------------------------------------------------------
# CCC and the VA score


def test_ccc_matches_hand_formula():
    rng = np.random.default_rng(1)
    for n in (2, 7, 200):
        x = rng.uniform(-1, 1, n)
        y = 0.6 * x + rng.normal(0, 0.3, n) + 0.1
        assert ccc(x, y) == pytest.approx(_ccc_by_hand(list(x), list(y)), abs=1e-12)
        # CCC <= |Pearson|, equality iff same mean and variance
        assert ccc(x, y) <= abs(pearsonr(x, y)[0]) + 1e-12
    x = rng.normal(size=50)
    x -= x.mean()  # perfect disagreement needs the same mean
    assert ccc(x, x) == pytest.approx(1.0)
    assert ccc(x, -x) == pytest.approx(-1.0)
    assert ccc(x, x + 1.0) < 1.0 and pearson(x, x + 1.0) == pytest.approx(1.0)  # a shift costs CCC, not r
    assert ccc(torch.tensor(x), torch.tensor(x)) == pytest.approx(1.0)


def test_ccc_constant_input():
    x = np.array([0.1, 0.5, -0.2, 0.3])
    assert ccc(x, np.full(4, 0.2)) == 0.0  # one constant side: defined, 0
    with pytest.raises(ValueError, match="both series are constant"):
        ccc(np.full(4, 0.2), np.full(4, 0.2))
    assert np.isnan(ccc(np.full(4, 0.2), np.full(4, 0.3), constant="nan"))
    assert ccc(np.full(4, 0.2), np.full(4, 0.2), constant="zero") == 0.0
    with pytest.raises(ValueError, match="constant must be"):
        ccc(x, x, constant="ignore")


def test_ccc_bad_input():
    with pytest.raises(ValueError, match="NaN"):
        ccc([0.1, np.nan, 0.3], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="NaN"):
        ccc([0.1, 0.2, 0.3], [0.1, np.inf, 0.3])
    with pytest.raises(ValueError, match="same length"):
        ccc([0.1, 0.2, 0.3], [0.1, 0.2])
    with pytest.raises(ValueError, match="at least two"):
        ccc([0.1], [0.2])
    with pytest.raises(ValueError, match="1-D"):
        ccc(np.zeros((3, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="numbers"):
        ccc(["a", "b"], [0.1, 0.2])


def test_va_score():
    rng = np.random.default_rng(2)
    v, a = rng.uniform(-1, 1, 100), rng.uniform(-1, 1, 100)
    vp, ap = v + rng.normal(0, 0.4, 100), 0.5 * a
    s = va_score(v, vp, a, ap)
    assert s.valence == pytest.approx(_ccc_by_hand(list(v), list(vp)))
    assert s.arousal == pytest.approx(_ccc_by_hand(list(a), list(ap)))
    assert s.score == pytest.approx((s.valence + s.arousal) / 2)
    # Aff-Wild2's -5 marks unannotated frames: dropped from both series
    v2, a2 = v.copy(), a.copy()
    v2[:10] = -5
    a2[95:] = -5
    s2 = va_score(v2, vp, a2, ap, ignore_value=-5)
    keep = slice(10, 95)
    assert s2.valence == pytest.approx(ccc(v[keep], vp[keep])) and s2.arousal == pytest.approx(ccc(a[keep], ap[keep]))
    with pytest.raises(ValueError, match="same length"):
        va_score(v, vp, a[:50], ap[:50])
    with pytest.raises(ValueError, match="NaN"):
        va_score(v, np.where(np.arange(100) == 3, np.nan, vp), a, ap)


# ---------------------------------------------------------------------------------------------------------------
# mimicry


def test_pearson_matches_scipy():
    rng = np.random.default_rng(3)
    for n in (2, 3, 40):
        x, y = rng.normal(size=n), rng.normal(size=n)
        assert pearson(x, y) == pytest.approx(pearsonr(x, y)[0], abs=1e-12)
    with pytest.raises(ValueError, match="x is constant"):
        pearson(np.ones(5), np.arange(5.0))
    assert np.isnan(pearson(np.arange(5.0), np.ones(5), constant="nan"))
    assert pearson(np.arange(5.0), np.ones(5), constant="zero") == 0.0


def test_mimicry_score_matches_scipy():
    rng = np.random.default_rng(4)
    t = rng.uniform(0, 1, (60, 6))
    p = t + rng.normal(0, 0.3, (60, 6)) * np.linspace(0.2, 2, 6)
    s = mimicry_score(t, p)
    want = [pearsonr(t[:, j], p[:, j])[0] for j in range(6)]
    np.testing.assert_allclose(s.per_dimension.values, want, atol=1e-12)
    assert s.score == pytest.approx(np.mean(want)) and list(s.per_dimension.index) == list(MIMICRY_DIMENSIONS)
    # a model that predicts one value for a dimension: undefined, handled as asked
    p2 = p.copy()
    p2[:, 2] = 0.5
    with pytest.raises(ValueError, match="y_pred column 'determination' is constant"):
        mimicry_score(t, p2)
    z = mimicry_score(t, p2, constant="zero")
    assert z.per_dimension["determination"] == 0.0 and z.score == pytest.approx((sum(want) - want[2]) / 6)
    assert np.isnan(mimicry_score(t, p2, constant="nan").score)
    with pytest.raises(ValueError, match=r"shape \(N, 6\)"):
        mimicry_score(t[:, :5], p[:, :5])
    with pytest.raises(ValueError, match="same number of samples"):
        mimicry_score(t, p[:50])
    with pytest.raises(ValueError, match="NaN"):
        mimicry_score(t, np.where(p > 1.5, np.nan, p))
    assert mimicry_score(t[:, :2], p[:, :2], dimensions=("a", "b")).score == pytest.approx(np.mean(want[:2]))


# ---------------------------------------------------------------------------------------------------------------
# ambivalence / hesitancy


def test_ah_f1_matches_sklearn():
    rng = np.random.default_rng(5)
    for n in (10, 300):
        t = (rng.random(n) < 0.3).astype(int)
        p = np.where(rng.random(n) < 0.7, t, 1 - t)
        assert ah_f1(t, p) == pytest.approx(f1_score(t, p, average="macro", labels=[0, 1], zero_division=0))
        assert ah_f1(t, p, average="binary") == pytest.approx(f1_score(t, p, zero_division=0))
        assert ah_f1(t.astype(bool), p.astype(bool)) == pytest.approx(ah_f1(t, p))
    # no A/H anywhere: the A/H class has F1 0 (zero_division=0); the absent class is perfect
    assert ah_f1([0, 0, 0], [0, 0, 0]) == pytest.approx(0.5)
    assert ah_f1([0, 0, 0], [0, 0, 0], average="binary") == 0.0


def test_ah_f1_bad_input():
    with pytest.raises(ValueError, match="0/1 labels.*threshold"):
        ah_f1([0, 1, 1], [0.2, 0.9, 0.6])
    with pytest.raises(ValueError, match="0/1 labels"):
        ah_f1([0, 2], [0, 1])
    with pytest.raises(ValueError, match="0/1 labels"):
        ah_f1([0, np.nan], [0, 1])
    with pytest.raises(ValueError, match="same length"):
        ah_f1([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="0/1 or bool"):
        ah_f1(["yes", "no"], [0, 1])
    with pytest.raises(ValueError, match="average"):
        ah_f1([0, 1], [0, 1], average="micro")
