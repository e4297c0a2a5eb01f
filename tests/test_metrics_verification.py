"""Verification and identification metrics: against scikit-learn and hand-worked examples."""

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from facelab import metrics as M


def _random_cases(n_cases=60, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(n_cases):
        n = int(rng.integers(2, 60))
        y = rng.integers(0, 2, n)
        if y.min() == y.max():
            y[0] = 1 - y[0]
        # rounding makes many ties
        s = np.round(rng.normal(size=n) + 1.5 * y, int(rng.integers(0, 3)))
        yield y, s


def test_roc_auc_det_match_sklearn():
    for y, s in _random_cases():
        far, tar, thr = M.roc_curve(y, s)
        sk_far, sk_tar, sk_thr = skm.roc_curve(y, s, drop_intermediate=False)
        np.testing.assert_allclose(far, sk_far)
        np.testing.assert_allclose(tar, sk_tar)
        np.testing.assert_array_equal(thr, sk_thr)
        assert M.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
        for mine, theirs in zip(M.det_curve(y, s), skm.det_curve(y, s)):
            np.testing.assert_allclose(mine, theirs)


def test_roc_hand_worked_with_ties():
    y = [0, 1, 0, 1, 1]
    s = [0.2, 0.5, 0.5, 0.9, 0.1]
    far, tar, thr = M.roc_curve(y, s)
    # thresholds inf, 0.9, 0.5 (one genuine + one impostor accepted together), 0.2, 0.1
    np.testing.assert_allclose(far, [0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(tar, [0, 1 / 3, 2 / 3, 2 / 3, 1])
    np.testing.assert_allclose(thr, [np.inf, 0.9, 0.5, 0.2, 0.1])
    # AUC by counting: pairs (g, i): 0.5>0.2 ok, 0.5=0.5 half, 0.9 beats both, 0.1 loses both -> (1+0.5+2)/6
    assert M.roc_auc(y, s) == pytest.approx(3.5 / 6)


def test_perfect_separation_and_constant_scores():
    y = [0, 0, 0, 1, 1]
    s = [0.1, 0.2, 0.3, 0.7, 0.8]
    assert M.roc_auc(y, s) == 1.0
    e, t = M.eer(y, s)
    assert e == 0.0 and 0.3 < t <= 0.7
    assert M.tar_at_far(y, s, 0.0) == 1.0
    assert M.fnmr_at_fmr(y, s, 0.0) == 0.0
    const = [1.0] * 5
    assert M.roc_auc(y, const) == 0.5
    assert M.eer(y, const)[0] == pytest.approx(0.5)
    assert M.tar_at_far(y, const, 0.5) == 0.0  # accepting anything means FAR 1
    assert M.tar_at_far(y, const, 1.0) == 1.0


def test_eer_interpolates_between_roc_points():
    # genuine 1,3 ; impostor 0,2 : FAR/FRR cross at 0.5
    assert M.eer([0, 1, 0, 1], [0, 1, 2, 3])[0] == pytest.approx(0.5)
    # asymmetric case: 4 impostors, 2 genuine
    y = [0, 0, 0, 0, 1, 1]
    s = [0.0, 0.1, 0.2, 0.6, 0.5, 0.9]
    e, _ = M.eer(y, s)
    far, tar, _ = M.roc_curve(y, s)
    frr = 1 - tar
    # EER lies between the FAR and FRR at every ROC vertex around the crossing
    i = int(np.argmax(far - frr >= 0))
    assert min(far[i - 1], frr[i]) <= e <= max(far[i], frr[i - 1])
    assert e == pytest.approx(0.25)


def test_tar_at_far_array_and_thresholds():
    y = np.r_[np.zeros(4), np.ones(4)]
    s = np.array([1, 2, 3, 4, 2.5, 3.5, 4.5, 5])
    np.testing.assert_allclose(M.tar_at_far(y, s, [0, 0.25, 0.5, 1]), [0.5, 0.75, 1, 1])
    assert M.threshold_at_far(y, s, 0.25) == 3.5
    far, frr = M.far_frr(y, s, 3.5)
    assert far <= 0.25 and frr == pytest.approx(0.25)
    # scalar in, scalar out; torch tensors work too
    assert isinstance(M.tar_at_far(torch.tensor(y), torch.tensor(s), 0.25), float)


def test_verification_accuracy():
    y = [0, 0, 0, 0, 1, 1]
    s = [0.0, 0.1, 0.2, 0.6, 0.5, 0.9]
    acc, t = M.verification_accuracy(y, s, threshold=0.55)  # FAR 1/4, FRR 1/2
    assert acc == pytest.approx(1 - (0.25 + 0.5) / 2) and t == 0.55
    best, t_best = M.verification_accuracy(y, s)  # at 0.5: FAR 1/4, FRR 0 -> 0.875
    assert best == pytest.approx(0.875) and t_best == 0.5
    assert M.verification_accuracy([0, 1], [0.0, 1.0])[0] == 1.0


def test_distances_to_scores_sign():
    d = np.array([0.2, 0.9])
    np.testing.assert_allclose(M.scores_from_distances(d), [-0.2, -0.9])
    assert M.roc_auc([1, 0], M.scores_from_distances(d)) == 1.0


def test_verification_report_row():
    y, s = next(_random_cases(1, seed=3))
    row = M.verification_report(y, s, fars=(0.1, 0.01))
    assert set(row) == {"AUC", "EER", "TAR@FAR=0.1", "TAR@FAR=0.01", "n_genuine", "n_impostor"}
    assert row["n_genuine"] + row["n_impostor"] == len(y)


@pytest.mark.parametrize(
    "labels, scores, match",
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], "only one class"),
        ([0, 0], [0.1, 0.2], "only one class"),
        ([0, 1], [0.1], "same length"),
        ([0, 2], [0.1, 0.2], "0 \\(impostor\\) or 1"),
        ([0, 1], [0.1, np.nan], "NaN"),
        ([], [], "empty"),
    ],
)
def test_bad_verification_input(labels, scores, match):
    with pytest.raises(ValueError, match=match):
        M.roc_curve(labels, scores)


def test_far_target_out_of_range():
    with pytest.raises(ValueError, match="FAR targets"):
        M.tar_at_far([0, 1], [0, 1], 1.5)


# ------------------------------------------------------------------------------------------- identification
S = np.array([
    [0.9, 0.1, 0.2, 0.3],   # probe a: best is a -> rank 1
    [0.3, 0.3, 0.1, 0.0],   # probe b: ties with a -> pessimistic rank 2
    [0.1, 0.2, 0.8, 0.1],   # probe c: rank 1
    [0.5, 0.4, 0.6, 0.1],   # probe d: d scores lowest -> rank 4
    [0.2, 0.7, 0.1, 0.1],   # probe x: not enrolled
])
PROBES = ["a", "b", "c", "d", "x"]
GALLERY = ["a", "b", "c", "d"]


def test_ranks_rank_k_cmc():
    np.testing.assert_array_equal(M.identification_ranks(S, PROBES, GALLERY), [1, 2, 1, 4, 0])
    assert M.rank_k_accuracy(S, PROBES, GALLERY, k=1) == 0.5
    assert M.rank_k_accuracy(S, PROBES, GALLERY, k=2) == 0.75
    k, rate = M.cmc_curve(S, PROBES, GALLERY)
    np.testing.assert_array_equal(k, [1, 2, 3, 4])
    np.testing.assert_allclose(rate, [0.5, 0.75, 0.75, 1.0])


def test_multiple_templates_use_best_score():
    # two templates for "a": the better one counts; the gallery order does not matter
    S2 = np.array([[0.1, 0.5, 0.9], [0.8, 0.2, 0.1]])
    ranks = M.identification_ranks(S2, ["a", "b"], ["a", "b", "a"])
    np.testing.assert_array_equal(ranks, [1, 2])


def test_dir_at_far():
    res = M.dir_at_far(S, PROBES, GALLERY, far=0.0)
    # the non-mated probe x scores 0.7 at best: threshold just above 0.7; mated rank-1 probes a (0.9), c (0.8) pass
    assert res.threshold > 0.7 and res.far == 0.0
    assert res.dir == pytest.approx(2 / 4)
    assert (res.n_mated, res.n_non_mated) == (4, 1)
    loose = M.dir_at_far(S, PROBES, GALLERY, far=1.0)
    assert loose.dir == pytest.approx(M.rank_k_accuracy(S, PROBES, GALLERY, 1))


def test_bad_identification_input():
    with pytest.raises(ValueError, match="one entry per score row"):
        M.cmc_curve(S, PROBES[:3], GALLERY)
    with pytest.raises(ValueError, match="no probe identity occurs"):
        M.rank_k_accuracy(S[:1], ["z"], GALLERY)
    with pytest.raises(ValueError, match="mated and non-mated"):
        M.dir_at_far(S[:4], PROBES[:4], GALLERY)
    with pytest.raises(ValueError, match="positive integer"):
        M.rank_k_accuracy(S, PROBES, GALLERY, k=0)


def test_metrics_are_exported():
    from facelab.metrics import verification

    for name in verification.__all__:
        assert getattr(M, name) is getattr(verification, name)
