"""Classical baselines (eigenfaces, fisherfaces, LBP histograms) as scikit-learn estimators."""

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from facelab.classical import (Eigenfaces, Fisherfaces, LBPHistogram, chi2_distance, paired_chi2_distance,
                               to_grey_batch)


def _toy_faces(n_ids=6, per_id=6, size=24, noise=0.15, seed=0):
    """Each identity is a fixed random smooth pattern; samples add noise and a brightness change."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    protos = []
    for _ in range(n_ids):
        f = rng.uniform(1, 4, size=(3, 2))
        ph = rng.uniform(0, 2 * np.pi, size=3)
        protos.append(sum(np.sin(2 * np.pi * (f[k, 0] * xx + f[k, 1] * yy) + ph[k]) for k in range(3)))
    X, y = [], []
    for i, p in enumerate(protos):
        for _ in range(per_id):
            X.append(0.5 + 0.15 * p + noise * rng.normal(size=p.shape) + rng.uniform(-0.05, 0.05))
            y.append(i)
    return np.clip(np.array(X), 0, 1), np.array(y)


ESTIMATORS = [Eigenfaces(n_components=10), Fisherfaces(), LBPHistogram(grid=(3, 3))]


@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_fit_predict_transform(est):
    X, y = _toy_faces()
    est = clone(est).fit(X, y)
    # the training images are their own nearest neighbours
    assert est.score(X, y) == 1.0
    F = est.transform(X[:5])
    assert F.ndim == 2 and F.shape[0] == 5
    proba = est.predict_proba(X[:3])
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert list(est.classes_) == list(range(6))


@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_generalises_to_new_samples_of_same_identities(est):
    X, y = _toy_faces(per_id=10, noise=0.05)  # LBP codes are sensitive to pixel noise
    tr = np.arange(len(y)) % 10 < 5
    est = clone(est).fit(X[tr], y[tr])
    assert est.score(X[~tr], y[~tr]) >= 0.9


def test_feature_sizes_and_components():
    X, y = _toy_faces()
    eig = Eigenfaces(n_components=7).fit(X, y)
    assert eig.transform(X).shape == (36, 7) and eig.components_.shape == (7, 24, 24)
    fish = Fisherfaces().fit(X, y)
    assert fish.transform(X).shape == (36, 5)  # c - 1 discriminant directions
    lbp = LBPHistogram(grid=(2, 3), P=8, method="nri_uniform").fit(X, y)
    H = lbp.transform(X)
    assert H.shape == (36, 2 * 3 * 59)
    # each cell histogram sums to one
    np.testing.assert_allclose(H.reshape(36, 6, 59).sum(-1), 1.0)
    assert LBPHistogram(grid=(2, 2), method="uniform").fit(X, y).transform(X).shape == (36, 4 * 10)


def test_image_layouts_agree():
    X, y = _toy_faces()
    rgb = np.repeat(X[..., None], 3, axis=-1)
    chw = np.moveaxis(rgb, -1, 1)
    np.testing.assert_allclose(to_grey_batch(rgb), X, atol=1e-12)
    np.testing.assert_allclose(to_grey_batch(chw), X, atol=1e-12)
    np.testing.assert_allclose(to_grey_batch(X.reshape(36, -1), image_shape=(24, 24)), X)
    a = Eigenfaces(5).fit(X, y).transform(X)
    b = Eigenfaces(5).fit(X.reshape(36, -1), y).transform(X.reshape(36, -1))  # flat input works for PCA methods
    np.testing.assert_allclose(np.abs(a), np.abs(b), atol=1e-8)
    import torch

    np.testing.assert_allclose(to_grey_batch(torch.from_numpy(chw)), X, atol=1e-12)


def test_chi2_distance():
    A = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    B = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    D = chi2_distance(A, B)
    assert D[0, 0] == pytest.approx(0.0)
    assert D[1, 1] == pytest.approx(2.0)  # disjoint histograms: sum of both masses
    assert D[0, 1] == pytest.approx(0.5 ** 2 / 0.5 * 2 / 1 / 1 + 1.0, rel=1e-6)  # 0.25/.5*2=1, +1 for bin 3
    np.testing.assert_allclose(paired_chi2_distance(A, B), np.diag(D))


def test_pipeline_and_grid_search():
    X, y = _toy_faces(per_id=8)
    flat = X.reshape(len(X), -1)
    pipe = Pipeline([("eig", Eigenfaces(image_shape=(24, 24))), ("clf", LogisticRegression(max_iter=2000))])
    gs = GridSearchCV(pipe, {"eig__n_components": [2, 8]}, cv=2).fit(flat, y)
    assert gs.best_params_["eig__n_components"] in (2, 8)
    assert gs.score(flat, y) >= 0.9
    gs2 = GridSearchCV(LBPHistogram(), {"grid": [(2, 2), (4, 4)]}, cv=2).fit(X, y)
    assert gs2.best_score_ >= 0.8
    assert Fisherfaces().get_params()["n_components"] is None


def test_bad_input():
    X, y = _toy_faces()
    with pytest.raises(ValueError, match="at least two identities"):
        Eigenfaces().fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="one identity per image"):
        Eigenfaces().fit(X, y[:-1])
    with pytest.raises(ValueError, match="pass image_shape"):
        LBPHistogram().fit(X.reshape(len(X), -1), y)
    with pytest.raises(ValueError, match="more images than identities"):
        Fisherfaces().fit(X[::6], y[::6])
    fitted = Eigenfaces(5).fit(X, y)
    with pytest.raises(ValueError, match="fitted on"):
        fitted.predict(X[:, :20, :20])
    with pytest.raises(ValueError, match="grid"):
        LBPHistogram(grid=(30, 30)).fit(X, y)
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        LBPHistogram().transform(X)
