"""facelab.affect.pipeline: pooling, MLP head, frame selection, smoothing, fusion, ablation (synthetic arrays)."""

import numpy as np
import pandas as pd
import pytest
import torch

from facelab.affect.pipeline import (AffectData, MLPHead, choose_threshold, choose_window, fuse, pool_clips,
                                     pool_frames, predict_expressions, reduce_block, run_ablation, select_frames,
                                     smooth_probabilities)


# ------------------------------------------------------------------ pooling
def test_pool_frames_mean_std_max_and_missing_counted():
    x = np.array([[1.0, 10.0], [np.nan, np.nan], [3.0, 30.0], [2.0, 20.0]])
    p = pool_frames(x)
    assert p.vector.shape == (6,)
    np.testing.assert_allclose(p.vector, [2, 20, np.std([1, 3, 2]), np.std([10, 30, 20]), 3, 30], rtol=1e-6)
    assert (p.n_missing, p.n_frames) == (1, 4)
    assert p.missing_fraction == 0.25


def test_pool_frames_present_flags_and_errors():
    x = np.arange(8, dtype=float).reshape(4, 2)
    p = pool_frames(x, present=[True, False, True, True], stats=("max",))
    assert p.n_missing == 1 and p.vector.tolist() == [6, 7]
    with pytest.raises(ValueError, match="one flag per frame"):
        pool_frames(x, present=[True, False])
    with pytest.raises(ValueError, match="all 2 frames are missing"):
        pool_frames(np.full((2, 3), np.nan))
    assert np.isnan(pool_frames(np.full((2, 3), np.nan), all_missing="nan").vector).all()
    with pytest.raises(ValueError, match="unknown pooling statistic"):
        pool_frames(x, stats=("median",))
    with pytest.raises(ValueError, match=r"\(T, D\)"):
        pool_frames(np.zeros(5))


def test_pool_clips_and_fuse_shapes():
    clips = [np.random.default_rng(i).normal(size=(5 + i, 4)) for i in range(3)]
    clips[1][:] = np.nan
    X, n_missing = pool_clips(clips)
    assert X.shape == (3, 12) and n_missing.tolist() == [0, 6, 0]
    assert np.isnan(X[1]).all() and np.isfinite(X[[0, 2]]).all()
    with pytest.raises(ValueError, match="different feature dimensions"):
        pool_clips([np.zeros((2, 3)), np.zeros((2, 4))])
    F = fuse(X, np.ones((3, 2)), torch.zeros(3, 5))
    assert F.shape == (3, 19)
    with pytest.raises(ValueError, match="different numbers of clips"):
        fuse(X, np.ones((2, 2)))


def test_reduce_block_uses_training_rows_only():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 6))
    X[3, 1] = np.nan
    Z = reduce_block(X, np.arange(10), 2)
    assert Z.shape == (20, 2) and np.isfinite(Z).all()
    np.testing.assert_allclose(Z[:10].mean(0), 0, atol=1e-6)
    S = reduce_block(X, np.arange(10), None)
    assert S.shape == (20, 6) and S[3, 1] == 0.0           # NaN -> training mean
    Xc = X.copy()
    Xc[10:] += 100                                         # test rows do not move the fit
    np.testing.assert_allclose(reduce_block(Xc, np.arange(10), 2)[:10], Z[:10], atol=1e-5)
    with pytest.raises(ValueError, match="n_components must be >= 1"):
        reduce_block(X, np.arange(10), 0)


# ------------------------------------------------------------------ MLP
def _blobs(n=120, d=6, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = rng.normal(size=(n, d)) + 2.0 * np.eye(3, d)[y]
    return X, y


def test_mlp_classification_learns_and_is_deterministic_per_seed():
    X, y = _blobs()
    a = MLPHead("classification", n_classes=3, seed=1, max_epochs=40).fit(X[:90], y[:90])
    b = MLPHead("classification", n_classes=3, seed=1, max_epochs=40).fit(X[:90], y[:90])
    c = MLPHead("classification", n_classes=3, seed=2, max_epochs=40).fit(X[:90], y[:90])
    pa, pb, pc = a.predict_proba(X[90:]), b.predict_proba(X[90:]), c.predict_proba(X[90:])
    np.testing.assert_array_equal(pa, pb)
    assert not np.array_equal(pa, pc)
    assert pa.shape == (30, 3) and np.allclose(pa.sum(1), 1, atol=1e-5)
    assert (a.predict(X[90:]) == y[90:]).mean() > 0.7
    assert 0 <= a.best_epoch < len(a.history) <= 40  # early stopping keeps the best validation epoch


def test_mlp_nan_inputs_regression_and_errors():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    Y = np.stack([X[:, 0], -X[:, 1]], 1)
    Xn = X.copy()
    Xn[::7, 2] = np.nan
    reg = MLPHead("regression", seed=0, max_epochs=150).fit(Xn, Y)
    P = reg.predict(Xn)
    assert P.shape == (60, 2) and np.isfinite(P).all()
    assert np.corrcoef(P[:, 0], Y[:, 0])[0, 1] > 0.7
    with pytest.raises(ValueError, match="one label per row"):
        MLPHead("classification", n_classes=2).fit(X, np.zeros(10, int))
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.1"):
        MLPHead("classification", n_classes=2).fit(X, np.full(60, 3))
    with pytest.raises(RuntimeError, match="not fitted"):
        MLPHead("classification", n_classes=2).predict(X)
    with pytest.raises(ValueError, match="n_classes >= 2"):
        MLPHead("classification")
    with pytest.raises(ValueError, match="3 features"):
        reg.predict(X[:, :3])


def test_mlp_validation_split_by_group():
    X, y = _blobs(n=40)
    groups = np.repeat(np.arange(4), 10)
    head = MLPHead("classification", n_classes=3, seed=0, max_epochs=5).fit(X, y, groups=groups)
    assert head.predict(X).shape == (40,)
    with pytest.raises(ValueError, match="at least 2 groups"):
        MLPHead("classification", n_classes=3).fit(X, y, groups=np.zeros(40))


# ------------------------------------------------------------------ selection
def test_confident_frames_keep_the_pretrained_label():
    pre = np.full((4, 8), 0.02)
    pre[0, 4] = 0.86            # confident happiness
    pre[1, 1] = 0.5             # not confident at 0.6
    pre[3] = np.nan             # no face -> classifier
    clf = np.full((4, 8), 0.1)
    clf[:, 5] = 0.3             # classifier says sadness
    probs, conf = select_frames(pre, clf, 0.6)
    assert conf.tolist() == [True, False, False, False]
    assert probs.argmax(1).tolist() == [4, 5, 5, 5]
    none, conf_inf = select_frames(pre, clf, np.inf)
    assert not conf_inf.any() and none.argmax(1).tolist() == [5, 5, 5, 5]
    assert predict_expressions(pre, clf, threshold=0.6).tolist() == [4, 5, 5, 5]


def test_selection_maps_net_classes_to_abaw_and_rejects_unknown_names():
    fer = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    pre = np.full((2, 7), 0.05)
    pre[0, 3] = 0.7             # happy -> happiness (ABAW 4)
    clf = np.full((2, 8), 0.125)
    clf[:, 0] = 0.2
    probs, conf = select_frames(pre, clf, 0.5, classes=fer)
    assert conf.tolist() == [True, False] and probs.argmax(1).tolist() == [4, 0]
    with pytest.raises(ValueError, match="unknown class name"):
        select_frames(pre, clf, 0.5, classes=fer[:6] + ["bored"])
    with pytest.raises(ValueError, match="same frames"):
        select_frames(np.zeros((3, 8)), clf, 0.5)
    with pytest.raises(ValueError, match=r"\(T, 8\)"):
        select_frames(np.zeros((2, 7)), clf, 0.5)


def test_choose_threshold_prefers_a_reliable_pretrained_net():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 8, 200)
    pre = np.full((200, 8), 0.02)
    pre[np.arange(200), y] = 0.86                     # the pretrained net is right and confident
    clf = rng.dirichlet(np.ones(8), 200)              # the classifier guesses
    thr, tab = choose_threshold(pre, clf, y)
    assert thr < 0.86 and tab["f1"].max() == 1.0
    assert set(tab.columns) == {"threshold", "f1", "n_confident"}


# ------------------------------------------------------------------ smoothing
def test_smoothing_mean_median_per_clip_and_nan():
    p = np.zeros((6, 2))
    p[:, 0] = [1, 1, 0, 1, 1, 1]
    p[:, 1] = 1 - p[:, 0]
    med = smooth_probabilities(p, 3, method="median")
    assert med.argmax(1).tolist() == [0] * 6                # an isolated flip is removed
    mean = smooth_probabilities(p, 3)
    np.testing.assert_allclose(mean[2], [2 / 3, 1 / 3])
    np.testing.assert_allclose(mean[0], [1, 0])             # truncated at the edge
    # two clips of 3: the window does not cross the boundary
    q = np.array([[1, 0], [1, 0], [1, 0], [0, 1], [0, 1], [0, 1]], float)
    np.testing.assert_array_equal(smooth_probabilities(q, 5, lengths=[3, 3]), q)
    r = q.copy()
    r[1] = np.nan
    out = smooth_probabilities(r, 3, lengths=[3, 3])
    np.testing.assert_allclose(out[1], [1, 0])              # NaN row filled from its neighbours
    np.testing.assert_array_equal(smooth_probabilities(p, 1), p)
    for bad in (2, 0, 1.5):
        with pytest.raises(ValueError, match="positive odd integer"):
            smooth_probabilities(p, bad)
    with pytest.raises(ValueError, match="sum to 5"):
        smooth_probabilities(p, 3, lengths=[2, 3])


def test_choose_window_picks_smoothing_when_labels_are_piecewise_constant():
    rng = np.random.default_rng(1)
    y = np.repeat(rng.integers(0, 8, 10), 20)
    p = np.full((200, 8), 0.1)
    p[np.arange(200), y] = 0.3
    flip = rng.random(200) < 0.25
    p[flip, (y[flip] + 1) % 8] = 0.5                         # noisy frames
    w, tab = choose_window(p, y, lengths=[20] * 10)
    assert w > 1 and tab.set_index("window").loc[w, "f1"] > tab.set_index("window").loc[1, "f1"]


# ------------------------------------------------------------------ ablation
def _data(n=40, T=12, seed=0, mimicry=True):
    rng = np.random.default_rng(seed)
    ah = np.array([i % 2 for i in range(n)])
    feats, pres, labs = [], [], []
    for i in range(n):
        y = np.repeat(rng.integers(0, 8, 2), T // 2)
        f = rng.normal(size=(T, 5)) + np.eye(8, 5)[y] * 2
        f[0] = np.nan                                     # one missing face per clip
        p = rng.dirichlet(np.ones(8), T)
        p[np.arange(T), y] += 1.0
        p /= p.sum(1, keepdims=True)
        p[0] = np.nan
        feats.append(f), pres.append(p), labs.append(y)
    voice = rng.normal(size=(n, 4)) + ah[:, None]
    text = rng.normal(size=(n, 6)) + 0.5 * ah[:, None]
    mf = [rng.normal(size=(8, 5)) for _ in range(30)]
    mt = np.stack([m.mean(0)[:3].tolist() * 2 for m in mf])
    return AffectData(feats, pres, labs, ah, voice, text, text + rng.normal(size=text.shape) * 0.5,
                      mf if mimicry else None, mt if mimicry else None)


def test_ablation_table_rows_intervals_and_determinism():
    d = _data()
    kw = dict(seed=0, n_boot=50, hidden=16, max_epochs=40, patience=5)
    tab = run_ablation(d, **kw)
    assert isinstance(tab, pd.DataFrame)
    ah = tab[tab.task == "ah"]
    assert set(ah.variant) == {"face", "voice", "words (true)", "words (ASR)", "fusion (true)", "fusion (ASR)"}
    ex = tab[tab.task == "expression"].set_index("variant")
    assert list(ex.index) == ["pretrained only", "classifier", "classifier + selection",
                              "classifier + selection + smoothing"]
    assert (tab.lo <= tab.estimate + 1e-9).all() and (tab.estimate <= tab.hi + 1e-9).all()
    assert ex.loc["classifier", "delta_value"] == "—" and np.isfinite(ex.loc["classifier + selection", "delta"])
    assert (tab.task == "mimicry").sum() == 1
    assert tab.value.str.match(r"^-?\d\.\d\d \[").all()
    pd.testing.assert_frame_equal(tab, run_ablation(d, **kw))
    small = run_ablation(d, **kw, n_components=3)
    assert small.shape == tab.shape and np.isfinite(small.estimate).all()


def test_ablation_data_checks():
    d = _data(n=6, mimicry=False)
    with pytest.raises(ValueError, match="voice has 5 entries for 6 clips"):
        AffectData(d.frame_features, d.pretrained_probs, d.frame_labels, d.ah, d.voice[:5], d.text_true)
    labels = list(d.frame_labels)
    labels[2] = labels[2][:-1]
    with pytest.raises(ValueError, match="clip 2: 12 feature frames, 12 probability frames and 11 labels"):
        AffectData(d.frame_features, d.pretrained_probs, labels, d.ah, d.voice, d.text_true)


def test_ablation_returns_predictions_matching_the_table():
    from facelab.metrics import ah_f1, expression_f1

    d = _data()
    kw = dict(seed=1, n_boot=30, hidden=16, max_epochs=30, patience=5)
    tab, pr = run_ablation(d, **kw, return_predictions=True)
    pd.testing.assert_frame_equal(tab, run_ablation(d, **kw))
    ah = tab[tab.task == "ah"].set_index("variant")
    for name, p in pr["ah"].items():
        assert len(p) == len(pr["test"]) == len(pr["ah_true"])
        assert ah.loc[name, "estimate"] == pytest.approx(ah_f1(pr["ah_true"], p))
    ex = tab[tab.task == "expression"].set_index("variant")
    for name, p in pr["expression"].items():
        assert ex.loc[name, "estimate"] == pytest.approx(expression_f1(pr["expression_true"], p))
    assert set(np.unique(pr["expression_clip"])) == set(pr["test"].tolist())
    assert pr["mimicry"].shape == pr["mimicry_true"].shape


def test_crossval_predictions_every_clip_once_and_checks():
    from facelab.affect.pipeline import crossval_predictions

    rng = np.random.default_rng(0)
    y = np.array([i % 2 for i in range(60)])
    blocks = {"a": rng.normal(size=(60, 3)) + 2 * y[:, None], "b": rng.normal(size=(60, 4)), "ab": ("a", "b")}
    kw = dict(hidden=8, max_epochs=30, patience=5)
    pr = crossval_predictions(blocks, y, n_folds=4, seed=0, **kw)
    assert set(pr) == {"a", "b", "ab"} and all(p.shape == (60,) for p in pr.values())
    assert (pr["a"] == y).mean() > 0.8                      # informative block predicted out of fold
    for k in pr:
        np.testing.assert_array_equal(pr[k], crossval_predictions(blocks, y, n_folds=4, seed=0, **kw)[k])
    with pytest.raises(ValueError, match="names unknown blocks"):
        crossval_predictions({"a": blocks["a"], "f": ("a", "c")}, y, n_folds=3)
    with pytest.raises(ValueError, match="n_folds must be in 2..60"):
        crossval_predictions(blocks, y, n_folds=1)
    with pytest.raises(ValueError, match="block 'b' has 59 rows for 60 labels"):
        crossval_predictions({"b": blocks["b"][:59]}, y, n_folds=3)
