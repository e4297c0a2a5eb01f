"""Chapter 11's study module (facelab.studies.micro_expressions_physiology) on the fast stand-in corpus: the tables
carry their intervals (lo <= value <= hi), the paired comparisons agree with the metrics, the figures draw."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from _micro_helpers import StubWorld  # noqa: E402
from facelab.metrics import uar, uf1  # noqa: E402
from facelab.micro.corpus import make_corpus, with_physiology  # noqa: E402
from facelab.micro.recognition import LINEAR_NAMES, MultimodalData, loso_linear  # noqa: E402
from facelab.studies import micro_expressions_physiology as study  # noqa: E402


@pytest.fixture(scope="module")
def corpus():
    return make_corpus(world=StubWorld(48), n_subjects=3, trials_per_subject=2, size=48, crop_size=48,
                       full_video_trials=1, seed=3)


def _assert_intervals(df, col):
    ok = df[col].notna()
    assert ok.any()
    assert (df.loc[ok, f"{col}_lo"] <= df.loc[ok, col] + 1e-12).all()
    assert (df.loc[ok, col] <= df.loc[ok, f"{col}_hi"] + 1e-12).all()


def test_unweighted_scores_match_the_metrics():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y, p = rng.integers(0, 5, 40), rng.integers(0, 5, 40)
        np.testing.assert_allclose(study.unweighted_scores(y, p, 5), [uf1(y, p, labels=range(5)),
                                                                        uar(y, p, labels=range(5))])


def _unweighted_scores_before(y_true, y_pred, n_classes):
    """unweighted_scores as it was before it avoided np.nanmean / np.errstate (for the bootstrap's speed)."""
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    cm = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(1), cm.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(2 * tp + (predicted - tp) + (support - tp) > 0,
                      2 * tp / (2 * tp + (predicted - tp) + (support - tp)), np.nan)
        recall = np.where(support > 0, tp / support, np.nan)
    f1 = np.where(support + predicted > 0, f1, np.nan)
    return np.array([np.nanmean(f1), np.nanmean(recall)])


def test_unweighted_scores_equal_the_previous_computation():
    rng = np.random.default_rng(1)
    for n_classes in (2, 5, 11):
        for n in (1, 7, 40, 300):
            y, p = rng.integers(0, n_classes, n), rng.integers(0, n_classes, n)
            p[: n // 3] = y[: n // 3]  # some agreement
            np.testing.assert_array_equal(study.unweighted_scores(y, p, n_classes),
                                          _unweighted_scores_before(y, p, n_classes))
    assert np.isnan(study.unweighted_scores([], [], 5)).all()


def test_spotting_table_and_comparison(corpus):
    table, pred = study.spot_corpus(corpus, n_boot=200, seed=1)
    assert list(table.index.get_level_values(0).unique()) == ["MDMD", "LBP"]
    _assert_intervals(table, "F1")
    assert table.attrs["n_videos"] == 3
    cmp = study.spotting_comparison(corpus, pred, "LBP", "MDMD", n_boot=200)
    assert list(cmp.index) == ["micro", "macro", "overall"]
    for kind in cmp.index:  # the comparison's F1 are the table's, the difference its delta
        a, b = table.loc[("LBP", kind), "F1"], table.loc[("MDMD", kind), "F1"]
        if np.isfinite(a) and np.isfinite(b):
            assert cmp.loc[kind, "difference"] == pytest.approx(a - b)
    _assert_intervals(cmp, "difference")
    assert isinstance(study.plot_spotting(corpus, pred, 0, 3, 9), Figure)
    fig, axes = plt.subplots(2, 1)
    assert study.plot_spotting(corpus, pred, 0, 3, 9, ax=axes) is fig
    plt.close("all")


def test_recognition_and_fusion_tables(corpus):
    data = MultimodalData.from_corpus(corpus)
    old, probs = loso_linear(data)
    table = study.recognition_table(data, probs, LINEAR_NAMES, n_boot=200)
    for col in ("UF1", "UAR", "accuracy"):
        _assert_intervals(table, col)
        np.testing.assert_allclose(table[col], old[col])  # same point estimates as the method's own table
    fusion = study.fusion_comparison(data, probs, ["video", "eeg", "periph"], ["early fusion (concat)"],
                                     LINEAR_NAMES, n_boot=200)
    row = fusion.iloc[0]
    assert row["difference"] == pytest.approx(row["UF1 fusion"] - row["UF1 best single"])
    assert row["UF1 best single"] == pytest.approx(old.loc[list(LINEAR_NAMES.values()), "UF1"].max())
    _assert_intervals(fusion, "difference")
    assert (row["p_value"] < 0.05) == (row["verdict"] != "no significant difference")


def test_coupling_ablation_and_figures(corpus):
    ab = study.coupling_ablation(corpus, scales=(0.0, 1.0), n_boot=100)
    assert list(ab.index) == [0.0, 1.0]
    for col in (*LINEAR_NAMES.values(), "late fusion (all)", "early fusion (concat)", "late fusion gain",
                "early fusion gain"):
        _assert_intervals(ab, col)
    singles = ab[list(LINEAR_NAMES.values())].max(axis=1)
    np.testing.assert_allclose(ab["best single"], singles)
    np.testing.assert_allclose(ab["late fusion gain"], ab["late fusion (all)"] - singles)
    assert isinstance(study.plot_ablation(ab), Figure)
    assert isinstance(study.plot_trial(corpus, 0), Figure)
    plt.close("all")


def test_spotting_needs_a_smooth_trial():
    c = make_corpus(world=StubWorld(48), n_subjects=1, trials_per_subject=1, size=48, crop_size=48,
                    full_video_trials=0, seed=1)
    with pytest.raises(ValueError, match="no smoothly rendered trial"):
        study.spot_corpus(c)


def test_spotting_by_difficulty_and_recognition_plot(corpus):
    table, _ = study.spot_corpus(corpus, n_boot=100, seed=1)
    both = study.spotting_by_difficulty({"easy": table, "realistic": table})
    assert list(both.index) == [(c, m) for c in ("easy", "realistic") for m in ("MDMD", "LBP")]
    for c in ("easy", "realistic"):
        for m in ("MDMD", "LBP"):
            assert both.loc[(c, m), "F1"] == pytest.approx(table.loc[(m, "overall"), "F1"], nan_ok=True)
            assert both.loc[(c, m), "in published range x10"] == bool(0.03 <= both.loc[(c, m), "F1"] <= 0.3)
    _assert_intervals(both, "F1")
    data = MultimodalData.from_corpus(corpus)
    _, probs = loso_linear(data)
    rec = study.recognition_table(data, probs, LINEAR_NAMES, n_boot=100)
    assert isinstance(study.plot_recognition(rec, chance=0.2), Figure)
    fig, ax = plt.subplots()
    assert study.plot_recognition(rec, ax=ax) is fig
    plt.close("all")


def test_work_shared_across_scales_and_spotters_changes_nothing(corpus):
    """The ablation computes the videos' flow once and the spotting the LBP histograms once per clip: the same
    values as computing them for every coupling scale / every k."""
    from facelab.micro.spotting import lbp_signal, mdmd_signal

    c = with_physiology(corpus, eeg_coupling=0.0, periph_coupling=2.0)
    a, b = MultimodalData.from_corpus(c, video_flow=corpus.video_features()), MultimodalData.from_corpus(c)
    for k in ("video", "eeg", "periph", "y", "subjects"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    with pytest.raises(ValueError, match="video_flow has"):
        MultimodalData.from_corpus(c, video_flow=corpus.video_features()[:-1])
    tr = study._smooth_trials(corpus)[0]
    sig = study.spotting_signals(tr, 4, 12)
    for k in (4, 12):
        kind = "micro" if k == 4 else "macro"
        np.testing.assert_array_equal(sig[f"lbp_{kind}"], lbp_signal(tr.crops, k))
        np.testing.assert_array_equal(sig[f"mdmd_{kind}"], mdmd_signal(tr.crops, tr.regions, k))
