"""Confidence intervals and paired tests: against scipy, published values (Newcombe 1998, Agresti) and bad input."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from facelab import metrics
from facelab.metrics import (
    Interval,
    bootstrap_ci,
    format_interval_columns,
    mcnemar_test,
    paired_bootstrap,
    proportion_ci,
    roc_auc,
    wilson_interval,
    with_interval,
)


def test_exported_from_package():
    for name in ("wilson_interval", "bootstrap_ci", "mcnemar_test", "paired_bootstrap", "with_interval"):
        assert name in metrics.intervals.__all__
        assert getattr(metrics, name) is getattr(metrics.intervals, name)


# --------------------------------------------------------------------------------------------- Wilson
@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (0, 10), (1, 10), (5, 7), (73, 100), (10, 10), (3, 1000), (999, 1000)])
@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.01])
@pytest.mark.parametrize("correction,method", [(False, "wilson"), (True, "wilsoncc")])
def test_wilson_matches_scipy(k, n, alpha, correction, method):
    ref = stats.binomtest(k, n).proportion_ci(1 - alpha, method=method)
    lo, hi = wilson_interval(k, n, alpha, correction=correction)
    assert isinstance(lo, float) and isinstance(hi, float)
    assert lo == pytest.approx(ref.low, abs=1e-12)
    assert hi == pytest.approx(ref.high, abs=1e-12)


@pytest.mark.parametrize(
    "k,n,plain,corrected",
    [  # Newcombe (1998), Statistics in Medicine 17:857, Table I, methods 3 and 4
        (81, 263, (0.2553, 0.3662), (0.2535, 0.3682)),
        (15, 148, (0.0624, 0.1605), (0.0598, 0.1644)),
        (0, 20, (0.0, 0.1611), (0.0, 0.2005)),
        (1, 29, (0.0061, 0.1718), (0.0018, 0.1963)),
    ],
)
def test_wilson_published_values(k, n, plain, corrected):
    assert np.round(wilson_interval(k, n), 4).tolist() == list(plain)
    assert np.round(wilson_interval(k, n, correction=True), 4).tolist() == list(corrected)


def test_wilson_vectorised():
    k = np.array([[0, 5], [7, 10]])
    lo, hi = wilson_interval(k, 10)
    assert lo.shape == hi.shape == (2, 2)
    for idx in np.ndindex(2, 2):
        assert (lo[idx], hi[idx]) == pytest.approx(wilson_interval(int(k[idx]), 10))
    assert np.all(lo <= k / 10) and np.all(k / 10 <= hi)
    lo, hi = wilson_interval([1, 2], [10, 20])
    assert lo.shape == (2,)


def test_proportion_ci_from_counts_and_outcomes():
    ci = proportion_ci(73, 100)
    assert isinstance(ci, Interval) and ci.estimate == pytest.approx(0.73)
    assert (ci.lo, ci.hi) == pytest.approx(wilson_interval(73, 100))
    correct = np.r_[np.ones(73, bool), np.zeros(27, bool)]
    assert proportion_ci(correct) == pytest.approx(ci)


@pytest.mark.parametrize(
    "k,n,match",
    [
        (11, 10, "k > n"),
        (0, 0, "n must be at least 1"),
        (-1, 10, "non-negative"),
        (float("nan"), 10, "NaN"),
        (1.5, 10, "whole numbers"),
        ([1, 2, 3], [10, 10], "broadcast"),
    ],
)
def test_wilson_bad_input(k, n, match):
    with pytest.raises(ValueError, match=match):
        wilson_interval(k, n)


def test_wilson_bad_alpha():
    for alpha in (0, 1, -0.1, 1.5, True):
        with pytest.raises(ValueError, match="alpha"):
            wilson_interval(1, 10, alpha)


# --------------------------------------------------------------------------------------------- bootstrap
def test_bootstrap_mean_matches_normal_theory_and_is_seeded():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=400)
    ci = bootstrap_ci(x, n_boot=2000, seed=1)
    assert ci.estimate == pytest.approx(x.mean())
    se = x.std(ddof=1) / np.sqrt(len(x))
    assert ci.lo == pytest.approx(x.mean() - 1.96 * se, abs=0.25 * se)
    assert ci.hi == pytest.approx(x.mean() + 1.96 * se, abs=0.25 * se)
    assert bootstrap_ci(x, n_boot=300, seed=1) == bootstrap_ci(x, n_boot=300, seed=1)
    assert bootstrap_ci(x, n_boot=300, seed=1) != bootstrap_ci(x, n_boot=300, seed=2)


def test_bootstrap_function_of_paired_rows_with_strata():
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(60), np.zeros(140)].astype(int)
    scores = labels * 1.0 + rng.normal(0, 1, 200)
    ci = bootstrap_ci(roc_auc, labels, scores, n_boot=300, seed=0, strata=labels)
    assert ci.estimate == pytest.approx(roc_auc(labels, scores))
    assert ci.lo < ci.estimate < ci.hi and 0.5 < ci.lo and ci.hi < 1
    # without strata a resample may still have both classes here; the joint draw keeps each label with its score
    ci2 = bootstrap_ci(lambda y, s: np.mean(s[y == 1]) - np.mean(s[y == 0]), labels, scores, n_boot=300)
    assert ci2.lo < 1.0 < ci2.hi


def test_bootstrap_vector_statistic_and_unpaired():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 3))
    ci = bootstrap_ci(lambda a: a.mean(axis=0), x, n_boot=200)
    assert ci.lo.shape == ci.hi.shape == (3,)
    a, b = rng.normal(0, 1, 50), rng.normal(1, 1, 80)  # different lengths: independent groups
    ci = bootstrap_ci(lambda u, v: v.mean() - u.mean(), a, b, n_boot=500, paired=False)
    assert ci.lo < ci.estimate < ci.hi


def test_bootstrap_bad_input():
    with pytest.raises(ValueError, match="same length"):
        bootstrap_ci(lambda a, b: 0.0, np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_ci(np.array([1.0, np.nan, 2.0]))
    with pytest.raises(ValueError, match="empty"):
        bootstrap_ci(np.array([]))
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(np.ones(5), n_boot=0)
    with pytest.raises(TypeError, match="function first"):
        bootstrap_ci(np.ones(5), np.ones(5))
    with pytest.raises(ValueError, match="strata"):
        bootstrap_ci(np.ones(5), strata=[0, 1])
    # a statistic that breaks on some resamples: clear message pointing to strata
    y = np.r_[1, np.zeros(9)]
    with pytest.raises(ValueError, match="strata="):
        bootstrap_ci(lambda a: a.sum() / a.sum() if a.sum() else np.nan, y, n_boot=200)


# --------------------------------------------------------------------------------------------- McNemar
def _pairs(n11, n10, n01, n00):
    a = np.r_[np.ones(n11 + n10), np.zeros(n01 + n00)].astype(bool)
    b = np.r_[np.ones(n11), np.zeros(n10), np.ones(n01), np.zeros(n00)].astype(bool)
    return a, b


def test_mcnemar_chi_square_textbook():
    # Agresti, Categorical Data Analysis (2nd ed.), Table 10.1: presidential approval 794/150/86/570
    res = mcnemar_test(*_pairs(794, 150, 86, 570))
    assert (res.b, res.c) == (150, 86)
    assert res.statistic == pytest.approx((64 - 1) ** 2 / 236)
    assert res.p_value == pytest.approx(stats.chi2.sf((64 - 1) ** 2 / 236, 1))
    assert res.p_value == pytest.approx(4.11e-5, rel=1e-2)


def test_mcnemar_exact_matches_binomtest():
    res = mcnemar_test(*_pairs(20, 9, 2, 5))
    assert res.b + res.c < 25
    assert res.statistic == 2.0
    assert res.p_value == pytest.approx(stats.binomtest(9, 11, 0.5).pvalue)
    assert res.p_value == pytest.approx(0.06543, abs=1e-5)  # 2 * P(X <= 2 | Bin(11, 1/2)) = 2 * 67 / 2048
    forced = mcnemar_test(*_pairs(20, 9, 2, 5), exact=False)
    assert forced.statistic == pytest.approx((7 - 1) ** 2 / 11)
    big_exact = mcnemar_test(*_pairs(794, 150, 86, 570), exact=True)
    assert big_exact.p_value == pytest.approx(stats.binomtest(150, 236, 0.5).pvalue)


def test_mcnemar_no_disagreement_and_symmetry():
    a = np.array([True, False, True])
    assert tuple(mcnemar_test(a, a)) == (0.0, 1.0, 0, 0)
    r1, r2 = mcnemar_test(*_pairs(5, 30, 10, 5)), mcnemar_test(*_pairs(5, 10, 30, 5))
    assert r1.p_value == pytest.approx(r2.p_value) and (r1.b, r1.c) == (r2.c, r2.b)


def test_mcnemar_bad_input():
    with pytest.raises(ValueError, match="same length"):
        mcnemar_test([True, False], [True])
    with pytest.raises(ValueError, match="booleans or 0/1"):
        mcnemar_test([0, 2], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        mcnemar_test([0.0, np.nan], [1, 1])
    with pytest.raises(ValueError, match="empty"):
        mcnemar_test([], [])


# --------------------------------------------------------------------------------------------- paired bootstrap
def _accuracy(y, p):
    return float(np.mean(y == p))


def test_paired_bootstrap_detects_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 400)
    good = np.where(rng.random(400) < 0.85, y, (y + 1) % 3)
    bad = np.where(rng.random(400) < 0.6, y, (y + 1) % 3)
    res = paired_bootstrap(_accuracy, y, good, bad, n_boot=1000, seed=0)
    assert res.delta == pytest.approx(_accuracy(y, good) - _accuracy(y, bad))
    assert 0 < res.lo < res.delta < res.hi
    assert res.p_value < 0.01
    same = paired_bootstrap(_accuracy, y, good, good, n_boot=200, seed=0)
    assert (same.delta, same.lo, same.hi, same.p_value) == (0.0, 0.0, 0.0, 1.0)
    # the p-value agrees with the interval: p < alpha exactly when 0 is outside [lo, hi]
    noisy = np.where(rng.random(400) < 0.84, y, (y + 2) % 3)
    r = paired_bootstrap(_accuracy, y, good, noisy, n_boot=1000, seed=3)
    assert (r.p_value < 0.05) == (r.lo > 0 or r.hi < 0)
    assert paired_bootstrap(_accuracy, y, good, noisy, n_boot=200, seed=3) == paired_bootstrap(
        _accuracy, y, good, noisy, n_boot=200, seed=3
    )


def test_paired_bootstrap_with_auc_and_strata():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(50), np.zeros(150)].astype(int)
    a = y * 2.0 + rng.normal(0, 1, 200)
    b = y * 0.5 + rng.normal(0, 1, 200)
    res = paired_bootstrap(roc_auc, y, a, b, n_boot=300, seed=0, strata=y)
    assert res.lo > 0 and res.p_value < 0.05


def test_paired_bootstrap_bad_input():
    with pytest.raises(ValueError, match="same length"):
        paired_bootstrap(_accuracy, np.zeros(4), np.zeros(4), np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        paired_bootstrap(_accuracy, np.zeros(3), np.array([0, np.nan, 1]), np.zeros(3))
    with pytest.raises(TypeError, match="metric"):
        paired_bootstrap("accuracy", np.zeros(3), np.zeros(3), np.zeros(3))


# --------------------------------------------------------------------------------------------- table cells
def test_with_interval_cells():
    assert with_interval(0.7312, 0.6149, 0.8251) == "0.73 [0.61, 0.83]"
    assert with_interval(*proportion_ci(73, 100)) == "0.73 [0.64, 0.81]"
    assert with_interval(0.7312, 0.6149, 0.8251, digits=1, percent=True) == "73.1 [61.5, 82.5]"
    assert with_interval(np.float32(0.5), np.array(0.25), np.array([0.75]), digits=3) == "0.500 [0.250, 0.750]"
    with pytest.raises(ValueError, match="one cell"):
        with_interval(np.ones(2), 0, 1)


def test_format_interval_columns():
    df = pd.DataFrame(
        {"method": ["A", "B"], "acc": [0.73, 0.5], "acc_lo": [0.61, 0.4], "acc_hi": [0.83, 0.6], "n": [100, 100]}
    )
    out = format_interval_columns(df)
    assert list(out.columns) == ["method", "acc", "n"]
    assert out["acc"].tolist() == ["0.73 [0.61, 0.83]", "0.50 [0.40, 0.60]"]
    assert "acc_lo" in df.columns  # input untouched
    with pytest.raises(KeyError, match="missing"):
        format_interval_columns(df, ["auc"])
    with pytest.raises(ValueError, match="no column"):
        format_interval_columns(df[["method", "n"]])


# --------------------------------------------------------------------------------------------- rows with intervals
def test_pad_report_with_intervals():
    from facelab.metrics import pad_report

    rng = np.random.default_rng(0)
    live = np.r_[np.ones(80), np.zeros(120)].astype(int)
    scores = np.clip(0.5 + 0.3 * (2 * live - 1) + rng.normal(0, 0.25, 200), 0, 1)
    plain = pad_report(live, scores)
    row = pad_report(live, scores, alpha=0.05, n_boot=300, seed=0)
    assert {k: row[k] for k in plain} == plain  # the point values do not change
    for key in ("APCER", "BPCER", "ACER", "AUC", "EER"):
        assert row[f"{key}_lo"] <= row[key] <= row[f"{key}_hi"], key
    k_attack = int((scores[live == 0] >= 0.5).sum())
    assert (row["APCER_lo"], row["APCER_hi"]) == pytest.approx(wilson_interval(k_attack, 120))
    table = format_interval_columns(pd.DataFrame([row])[["ACER", "ACER_lo", "ACER_hi"]])
    assert table["ACER"].iloc[0].count("[") == 1


def test_classification_summary_with_intervals():
    from facelab.metrics import classification_summary, uar, uf1
    from facelab.metrics.classification import _uf1_uar_accuracy, confusion_matrix

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 150)
    pred = np.where(rng.random(150) < 0.6, y, rng.integers(0, 5, 150))  # class 4 is predicted, never true
    cm = confusion_matrix(y, pred).values
    assert _uf1_uar_accuracy(cm) == pytest.approx([uf1(y, pred), uar(y, pred), np.mean(y == pred)])
    row = classification_summary(y, pred, alpha=0.05, n_boot=300, seed=1)
    for key in ("UF1", "UAR", "accuracy"):
        assert row[f"{key}_lo"] < row[key] < row[f"{key}_hi"], key
    assert set(classification_summary(y, pred)) == {"UF1", "UAR", "accuracy", "n"}


# --------------------------------------------------------------------------------------------- comparison tables
def test_compare_accuracies():
    from facelab.metrics import compare_accuracies

    a, b = _pairs(794, 150, 86, 570)
    table = compare_accuracies({"A": a, "B": b, "same as B": b}, reference="B")
    assert list(table.index) == ["A", "B", "same as B"]
    assert table.loc["A", "accuracy"] == pytest.approx(944 / 1600)
    assert (table.loc["A", "accuracy_lo"], table.loc["A", "accuracy_hi"]) == pytest.approx(wilson_interval(944, 1600))
    assert table.loc["A", "p_value"] == pytest.approx(mcnemar_test(a, b).p_value) and table.loc["A", "differs"]
    assert table.loc["same as B", "p_value"] == 1.0 and not table.loc["same as B", "differs"]
    assert np.isnan(table.loc["B", "p_value"])
    cells = format_interval_columns(table)
    assert cells.loc["A", "accuracy"] == with_interval(*proportion_ci(a))
    with pytest.raises(KeyError, match="reference"):
        compare_accuracies({"A": a}, reference="C")
    with pytest.raises(ValueError, match="same length"):
        compare_accuracies({"A": a, "B": b[:-1]}, reference="A")


def test_compare_methods_with_auc():
    from facelab.metrics import compare_methods

    rng = np.random.default_rng(1)
    y = np.r_[np.ones(50), np.zeros(150)].astype(int)
    preds = {"strong": y * 2.0 + rng.normal(0, 1, 200), "weak": y * 0.5 + rng.normal(0, 1, 200)}
    table = compare_methods(roc_auc, y, preds, reference="weak", name="AUC", n_boot=200, strata=y)
    assert list(table.columns[:3]) == ["AUC", "AUC_lo", "AUC_hi"]
    assert table.loc["strong", "AUC"] == pytest.approx(roc_auc(y, preds["strong"]))
    r = paired_bootstrap(roc_auc, y, preds["strong"], preds["weak"], n_boot=200, seed=0, strata=y)
    assert (table.loc["strong", "delta"], table.loc["strong", "p_value"]) == pytest.approx((r.delta, r.p_value))
    assert table.loc["strong", "differs"]
    cells = format_interval_columns(table)  # AUC and delta both become cells
    assert "[" in cells.loc["strong", "AUC"] and "[" in cells.loc["strong", "delta"]


def test_reference_row_formats_as_a_dash():
    assert with_interval(np.nan, np.nan, np.nan) == "—"
    assert with_interval(0.5, np.nan, np.nan) == "0.50 [nan, nan]"
