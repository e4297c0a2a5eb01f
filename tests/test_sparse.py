"""Tests of facelab.sparse (ADMM solvers, Wing prox, estimators, bad input; synthetic matrices only, fast) and of
chapter 03's study module facelab.studies.sparse_coding_occlusion (occluders, tables with intervals, figures)."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import Lasso
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline

from facelab import sparse
from facelab.sparse import (
    CRC,
    RSC,
    SRC,
    WCSC,
    WWCSC,
    Downsample,
    NearestNeighbor,
    RandomProjection,
    ShiftedGramFactor,
    lasso_admm,
    lasso_objective,
    robust_admm,
    robust_objective,
    wing_loss,
    wing_prox,
)
from facelab.studies import sparse_coding_occlusion as study
from facelab.studies.sparse_coding_occlusion import block_occlude, corrupt_pixels, weight_mask_auc


@pytest.fixture(autouse=True)
def one_thread():
    """These problems are tiny: one thread avoids OpenMP spin-waiting on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------------------------------------------
# synthetic "faces": class subspaces in pixel space
# ----------------------------------------------------------------------------------------------------------------
def subspace_data(n_classes=8, per_class=6, n_probe=2, m=144, dim=3, seed=0, noise=0.02):
    rng = np.random.default_rng(seed)
    common = rng.random((m, 4))
    X, y, P, py = [], [], [], []
    for c in range(n_classes):
        basis = np.abs(common @ rng.random((4, dim)) + 0.8 * rng.random((m, dim)))
        for j in range(per_class + n_probe):
            v = basis @ rng.random(dim) + noise * rng.standard_normal(m)
            (X if j < per_class else P).append(v)
            (y if j < per_class else py).append(c)
    return np.array(X), np.array(y), np.array(P), np.array(py)


def lasso_problem(m=60, n=100, k=6, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(m, n, generator=g, dtype=dtype) + 0.5 * torch.rand(m, 3, generator=g, dtype=dtype) @ torch.rand(
        3, n, generator=g, dtype=dtype)
    D = D / D.pow(2).mean(0).sqrt()
    x = torch.zeros(n, k, dtype=dtype)
    x[torch.randint(0, n, (4 * k,), generator=g), torch.arange(k).repeat(4)] = 1.0
    Y = D @ x + 0.05 * torch.randn(m, k, generator=g, dtype=dtype)
    return D, Y


# ----------------------------------------------------------------------------------------------------------------
# solvers
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("m,n", [(80, 50), (40, 120)])
def test_factor_solves_shifted_gram(m, n):
    D = torch.randn(m, n, dtype=torch.float64)
    F = ShiftedGramFactor(D, 0.7)
    assert F.method == ("cholesky" if n <= m else "woodbury")
    B = torch.randn(n, 5, dtype=torch.float64)
    A = D.T @ D + 0.7 * torch.eye(n, dtype=torch.float64)
    torch.testing.assert_close(A @ F.solve(B), B, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("shape,lam", [((60, 100), 0.01), ((120, 80), 0.003)])
def test_lasso_admm_matches_sklearn_objective(shape, lam):
    D, Y = lasso_problem(*shape)
    res = lasso_admm(D, Y, lam, abs_tol=1e-8, rel_tol=1e-6, max_iter=20000)
    ours = lasso_objective(D, Y, res.coef, lam)
    for j in range(Y.shape[1]):
        # sklearn: 1/(2 n_samples) ||y - Xw||^2 + alpha ||w||_1, the same scaling as ours with alpha = lam
        sk = Lasso(alpha=lam, fit_intercept=False, tol=1e-9, max_iter=50_000).fit(D.numpy(), Y[:, j].numpy())
        ref = lasso_objective(D, Y[:, j:j + 1], torch.as_tensor(sk.coef_)[:, None], lam).item()
        assert ours[j].item() <= ref * (1 + 1e-4)  # ADMM's z is exactly sparse: its objective is an upper bound
    assert bool(res.converged.all())
    h = res.history_frame()
    assert {"primal", "dual", "eps_primal", "eps_dual"} <= set(h.columns)
    assert h["primal"].iloc[-1] < h["primal"].iloc[0]


def test_lasso_admm_batched_equals_one_by_one():
    D, Y = lasso_problem(seed=3)
    both = lasso_admm(D, Y, 0.01, max_iter=300).coef
    for j in range(Y.shape[1]):
        one = lasso_admm(D, Y[:, j], 0.01, max_iter=300).coef[:, 0]
        torch.testing.assert_close(one, both[:, j], atol=1e-3, rtol=0)


def test_robust_square_fidelity_solves_the_lasso():
    D, Y = lasso_problem(seed=1)
    lam = 0.01
    a = lasso_admm(D, Y, lam, abs_tol=1e-8, rel_tol=1e-6, max_iter=5000)
    b = robust_admm(D, Y, lam, fidelity="square", rho=0.01, mu=1.0, abs_tol=1e-8, rel_tol=1e-6, max_iter=5000)
    torch.testing.assert_close(lasso_objective(D, Y, b.coef, lam), lasso_objective(D, Y, a.coef, lam), rtol=1e-4,
                               atol=0)


def test_wing_loss_shape():
    w, eps = 1.0, 0.2
    x = torch.tensor([0.0, 0.5, 1.0, 3.0, -3.0], dtype=torch.float64)
    v = wing_loss(x, w, eps)
    C = w - w * math.log1p(w / eps)
    assert v[0] == 0
    assert v[1].item() == pytest.approx(w * math.log1p(0.5 / eps))
    assert v[3].item() == pytest.approx(3.0 - C)
    assert v[3] == v[4]
    # continuous at |x| = w
    assert wing_loss(torch.tensor(w - 1e-9, dtype=torch.float64), w, eps).item() == pytest.approx(
        wing_loss(torch.tensor(w, dtype=torch.float64), w, eps).item(), abs=1e-7)


@pytest.mark.parametrize("w,eps", [(1.0, 0.2), (0.5, 0.05), (10.0, 2.0)])
def test_wing_prox_matches_numerical_minimiser(w, eps):
    rng = np.random.default_rng(0)
    a = torch.as_tensor(np.concatenate([rng.uniform(-3 * w, 3 * w, 200), [0.0, w, -w]]))[:, None]
    t = torch.as_tensor(rng.uniform(0.0, 2.0 * w, len(a)))[:, None]
    got = wing_prox(a, t, w, eps)

    def obj(e):
        return t * wing_loss(e, w, eps) + 0.5 * (e - a) ** 2

    # brute force: a dense grid over [-|a| - 1, |a| + 1] for every a at once, then a finer grid around the best point
    span = a.abs() + 1
    grid = -span + 2 * span * torch.linspace(0, 1, 4001, dtype=torch.float64)[None]
    best = grid.gather(1, obj(grid).argmin(1, keepdim=True))
    fine = best + span * 1e-3 * torch.linspace(-1, 1, 2001, dtype=torch.float64)[None]
    ref = torch.minimum(obj(fine).min(1, keepdim=True).values, obj(torch.zeros_like(a)))
    assert bool((obj(got) <= ref + 1e-9).all())
    assert bool((obj(got) >= ref - 1e-3).all())  # and the grid search is not far off (sanity of the test)


def test_wing_prox_limits():
    a = torch.linspace(-5, 5, 101, dtype=torch.float64)
    torch.testing.assert_close(wing_prox(a, 0.0, 1.0, 0.5), a)  # t = 0: identity
    big = wing_prox(a, 1e6, 1.0, 0.5)  # huge step: everything to zero
    assert big.abs().max().item() == 0.0


def test_wwcsc_unit_weights_equal_wcsc():
    D, Y = lasso_problem(seed=2)
    kw = dict(fidelity="wing", w=1.0, epsilon=0.3, rho=0.1, mu=10.0, max_iter=100)
    a = robust_admm(D, Y, 0.01, **kw)
    b = robust_admm(D, Y, 0.01, weights=torch.ones_like(Y), **kw)
    torch.testing.assert_close(a.coef, b.coef, atol=1e-12, rtol=0)
    X, y, P, _ = subspace_data()
    wc = WCSC(lam=0.01).fit(X, y)
    ww = WWCSC(lam=0.01, n_reweight=0, max_iter=wc.max_iter).fit(X, y)
    np.testing.assert_allclose(ww.decision_function(P), wc.decision_function(P), atol=1e-12)
    torch.testing.assert_close(ww.encode(P).coef, wc.encode(P).coef, atol=1e-12, rtol=0)


def test_wing_admm_decreases_objective_and_weights_find_outliers():
    D, Y = lasso_problem(m=100, n=60, k=4, seed=5)
    Yc = Y.clone()
    Yc[:15] += 3.0  # gross outliers on the first 15 pixels (fewer than 1 - tau of them)
    res = robust_admm(D, Yc, 0.005, fidelity="wing", w=1.0, epsilon=0.3, rho=0.05, mu=10.0, reweight=3,
                      max_iter=60, record_objective=True)
    obj = res.history["objective"]
    assert obj[-1].mean() < obj[0].mean()
    assert res.weights.shape == Yc.shape
    assert res.weights[:15].mean() < 0.3 < 0.6 < res.weights[15:].mean()


# ----------------------------------------------------------------------------------------------------------------
# estimators
# ----------------------------------------------------------------------------------------------------------------
ALL = [lambda: SRC(lam=0.01), lambda: SRC(lam=0.01, extended=True), lambda: CRC(lam=1e-3),
       lambda: RSC(lam=0.01), lambda: WCSC(lam=0.01), lambda: WWCSC(lam=0.01), lambda: NearestNeighbor()]


@pytest.mark.parametrize("make", ALL)
def test_estimators_classify_clean_subspace_data(make):
    X, y, P, py = subspace_data()
    est = make().fit(X, y)
    assert est.decision_function(P).shape == (len(P), 8)
    assert est.score(P, py) >= 0.85


def test_robust_methods_survive_block_occlusion_better_than_square_loss():
    X, y, P, py = subspace_data(n_classes=10, per_class=6, n_probe=3, m=256, seed=4)
    imgs = P.reshape(-1, 1, 16, 16)
    occ, _ = block_occlude(torch.as_tensor(imgs, dtype=torch.float32), 0.4, generator=torch.Generator().manual_seed(0))
    Po = occ.reshape(len(P), -1).numpy()
    acc = {name: est.fit(X, y).score(Po, py) for name, est in
           [("src", SRC(lam=0.01)), ("wwcsc", WWCSC(lam=0.01)), ("src_ext", SRC(lam=0.01, extended=True))]}
    assert acc["wwcsc"] >= acc["src"]
    assert acc["wwcsc"] >= 0.8


def test_pipeline_and_gridsearch():
    rng = np.random.default_rng(0)
    X, y, P, py = subspace_data(n_classes=5, per_class=6, n_probe=2, m=256, seed=1)
    imgs = np.clip(X.reshape(-1, 1, 16, 16) / X.max(), 0, 1)
    pipe = Pipeline([("feat", Downsample(size=(8, 8))), ("clf", WCSC(lam=0.01))])
    gs = GridSearchCV(pipe, {"clf__lam": [0.003, 0.03], "feat__size": [(8, 8), (16, 16)]}, cv=3)
    gs.fit(imgs, y)
    assert set(gs.best_params_) == {"clf__lam", "feat__size"}
    assert gs.score(np.clip(P.reshape(-1, 1, 16, 16) / X.max(), 0, 1), py) >= 0.8
    rp = Pipeline([("feat", RandomProjection(n_components=40, random_state=0)), ("clf", SRC(lam=0.01))])
    assert rp.fit(imgs, y).predict(imgs[:3]).shape == (3,)
    assert clone(rp).get_params()["feat__n_components"] == 40
    del rng


def test_one_sample_per_class_is_allowed():
    X, y, P, py = subspace_data(per_class=1, noise=0.0)
    for est in (SRC(lam=0.01), CRC(), WWCSC(lam=0.01), RSC(lam=0.01), NearestNeighbor()):
        pred = est.fit(X, y).predict(P)
        assert pred.shape == py.shape
        assert set(pred) <= set(y)


def test_transformers():
    imgs = np.random.default_rng(0).random((4, 3, 32, 24)).astype("float32")
    d = Downsample(size=(8, 6)).fit(imgs)
    F = d.transform(imgs)
    assert F.shape == (4, 48) and d.inverse_shape == (8, 6)
    gray = 0.299 * imgs[:, 0] + 0.587 * imgs[:, 1] + 0.114 * imgs[:, 2]
    np.testing.assert_allclose(F[0, 0], gray[0, :4, :4].mean(), rtol=1e-5)
    r = RandomProjection(n_components=10, random_state=1).fit(imgs)
    assert r.transform(imgs).shape == (4, 10)
    np.testing.assert_array_equal(r.components_, RandomProjection(10, random_state=1).fit(imgs).components_)


def test_occluders_and_auc():
    g = torch.Generator().manual_seed(0)
    imgs = torch.full((3, 1, 40, 40), 0.5)
    out, mask = block_occlude(imgs, 0.25, generator=g)
    assert out.shape == imgs.shape and mask.shape == (3, 1, 40, 40)
    assert mask.float().mean().item() == pytest.approx(0.25, abs=0.02)
    assert torch.equal(out[~mask], imgs[~mask])
    out, mask = corrupt_pixels(imgs, 0.6, generator=g)
    assert mask.float().mean().item() == pytest.approx(0.6, abs=0.02)
    assert 0 <= out.min() and out.max() <= 1
    m = np.array([[1, 1, 0, 0]], bool)
    assert weight_mask_auc(np.array([[0.1, 0.2, 0.9, 0.8]]), m) == pytest.approx(1.0)
    assert weight_mask_auc(np.array([[0.9, 0.8, 0.1, 0.2]]), m) == pytest.approx(0.0)


# ----------------------------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------------------------
def test_dimension_mismatch():
    X, y, P, _ = subspace_data()
    est = SRC(lam=0.01).fit(X, y)
    with pytest.raises(ValueError, match="features, but SRC was fitted with 144"):
        est.predict(P[:, :100])
    with pytest.raises(ValueError, match="do not match"):
        lasso_admm(torch.randn(10, 5), torch.randn(9, 2), 0.1)
    with pytest.raises(ValueError, match="2-D"):
        SRC().fit(X.reshape(len(X), 12, 12), y)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_pixels(bad):
    X, y, P, _ = subspace_data()
    Xb = X.copy()
    Xb[3, 5] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        WWCSC().fit(Xb, y)
    est = CRC().fit(X, y)
    Pb = P.copy()
    Pb[0, 0] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        est.predict(Pb)
    with pytest.raises(ValueError, match="NaN or infinite"):
        robust_admm(torch.as_tensor(X.T), torch.as_tensor(Pb.T), 0.1)
    with pytest.raises(ValueError, match="NaN or infinite"):
        Downsample().fit(np.full((2, 1, 8, 8), bad))


def test_single_class_is_an_error():
    X, _, _, _ = subspace_data()
    with pytest.raises(ValueError, match="at least 2 classes"):
        SRC().fit(X, np.zeros(len(X)))


@pytest.mark.parametrize("est,param", [
    (SRC(lam=0), "lam"), (SRC(lam=-1), "lam"), (SRC(rho=0.0), "rho"), (CRC(lam=0), "lam"),
    (WCSC(w=0), "w"), (WCSC(epsilon=-0.1), "epsilon"), (WCSC(mu=0), "mu"), (WWCSC(tau=1.5), "tau"),
    (WWCSC(n_reweight=-1), "n_reweight"), (RSC(c=0), "c"), (SRC(max_iter=0), "max_iter"), (WCSC(tol=0), "tol"),
])
def test_non_positive_parameters(est, param):
    X, y, _, _ = subspace_data()
    with pytest.raises(ValueError, match=param):
        est.fit(X, y)


def test_non_positive_solver_parameters():
    D, Y = lasso_problem()
    with pytest.raises(ValueError, match="lam"):
        lasso_admm(D, Y, 0.0)
    with pytest.raises(ValueError, match="rho"):
        lasso_admm(D, Y, 0.1, rho=-1)
    with pytest.raises(ValueError, match="epsilon"):
        wing_prox(torch.zeros(3), 1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="w must"):
        wing_loss(torch.zeros(3), -1.0, 0.5)
    with pytest.raises(ValueError, match="n_components"):
        RandomProjection(n_components=0).fit(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="size"):
        Downsample(size=(0, 4)).fit(np.zeros((2, 1, 8, 8)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        robust_objective(D, Y, torch.zeros(D.shape[1], Y.shape[1], dtype=D.dtype), 0.1)


def test_real_photo_sets_hold_out_the_occluded_obama_probes():
    gallery, probes, names = study.real_photo_sets(block_fraction=0.4, generator=torch.Generator().manual_seed(0))
    assert len(probes) == 3 and len(names) == 3
    assert set(probes.identity) == {"Barack Obama"}
    assert names[:2] == ["obama_partial_face.jpg", "obama_partial_face2.jpg"] and "40% block" in names[2]
    assert (gallery.identity == "Barack Obama").sum() == 2  # obama.jpg, obama3.jpg; not obama2's twin 32bit.png
    assert len(set(gallery.identity)) > 10
    assert probes.images.shape[1:] == gallery.images.shape[1:] == (3, 150, 150)
    # the block probe differs from the clean chip over about 40% of its pixels
    features = sparse.Downsample((8, 8)).fit(gallery.images)
    table = study.predictions_table({"NN": sparse.NearestNeighbor()}, features, gallery, probes, names)
    assert list(table.index) == names and list(table.columns) == ["truth", "NN"]
    assert set(table["NN"]) <= set(gallery.identity)


# ----------------------------------------------------------------------------------------------------------------
# chapter 03's study: tables with intervals, paired comparisons, figures
# ----------------------------------------------------------------------------------------------------------------
def _image_sets(seed=4):
    X, y, P, py = subspace_data(n_classes=6, per_class=5, n_probe=4, m=256, seed=seed)
    scale = max(X.max(), P.max())
    gallery = study.FaceSet(images=torch.as_tensor(X.reshape(-1, 1, 16, 16) / scale, dtype=torch.float32), identity=y)
    probes = study.FaceSet(images=torch.as_tensor(P.reshape(-1, 1, 16, 16) / scale, dtype=torch.float32), identity=py)
    return gallery, probes, Downsample(size=(16, 16)).fit(gallery.images)


def _assert_interval_columns(df, col):
    assert {col, f"{col}_lo", f"{col}_hi"} <= set(df.columns)
    ok = df[col].notna()
    assert ok.any()
    assert (df.loc[ok, f"{col}_lo"] <= df.loc[ok, col] + 1e-12).all()
    assert (df.loc[ok, col] <= df.loc[ok, f"{col}_hi"] + 1e-12).all()


def test_study_tables_carry_wilson_intervals_and_per_probe_correctness():
    gallery, probes, features = _image_sets()
    methods = {"NN": NearestNeighbor(), "SRC": SRC(lam=0.01), "WWCSC": WWCSC(lam=0.01)}
    occluded, _ = block_occlude(probes.images, 0.4, generator=torch.Generator().manual_seed(0))
    sets = {"clean": (probes.images, probes.identity), "block": (occluded, probes.identity)}
    res = study.evaluate_sets(methods, features, gallery, sets, device="cpu")
    _assert_interval_columns(res, "accuracy")
    assert list(res.columns[:5]) == ["set", "method", "accuracy", "accuracy_lo", "accuracy_hi"]
    for row in res.itertuples():
        assert len(row.correct) == row.n_probes and row.correct.mean() == pytest.approx(row.accuracy)
    wide = study.accuracy_table(res, order=list(methods))
    assert list(wide.index) == list(methods) and list(wide.columns) == ["clean", "block"]
    assert all(isinstance(c, str) and c.count("[") == 1 for c in wide.to_numpy().ravel())

    curve = study.occlusion_curve(methods, features, gallery, probes, "pixels", [0.0, 0.5], seed=1)
    _assert_interval_columns(curve, "accuracy")
    assert set(curve["fraction"]) == {0.0, 0.5} and set(curve["kind"]) == {"pixels"}
    sens = study.sensitivity(WWCSC(), "lam", [0.01, 0.1], features, gallery, probes, "block", 0.3)
    _assert_interval_columns(sens, "accuracy")
    ev = study.evaluate(dict(methods), features.transform(gallery.images), gallery.identity,
                        features.transform(occluded), probes.identity)
    _assert_interval_columns(ev, "accuracy")
    np.testing.assert_allclose(ev["accuracy"], res[res.set == "block"]["accuracy"])


def test_paired_comparisons_pool_probes_and_only_claim_significant_differences():
    gallery, probes, features = _image_sets()
    curve = study.occlusion_curve({"NN": NearestNeighbor(), "WWCSC": WWCSC(lam=0.01), "WWCSC2": WWCSC(lam=0.01)},
                                  features, gallery, probes, "block", [0.0, 0.4], seed=0)
    heavy = curve["fraction"].ge(0.4)
    table = study.paired_comparisons(curve, [("WWCSC", "NN"), ("WWCSC", "WWCSC2")],
                                     {">= 40% block": heavy, "all": curve["fraction"].ge(0)}, n_boot=200)
    assert len(table) == 4 and set(table["protocol"]) == {">= 40% block", "all"}
    for col in ("accuracy_A", "accuracy_B", "difference"):
        _assert_interval_columns(table, col)
    assert (table[table.protocol == "all"]["n_probes"] == 2 * len(probes)).all()
    same = table[table.B == "WWCSC2"].iloc[0]  # identical classifiers: no discordant probe, p = 1
    assert same.difference == 0 and same.only_A == same.only_B == 0 and same.p_mcnemar == 1.0
    assert same.verdict == "no significant difference"
    for row in table.itertuples():
        assert (row.p_mcnemar < 0.05) == (row.verdict != "no significant difference")
    with pytest.raises(ValueError, match="no result rows for method 'RSC'"):
        study.paired_comparisons(curve, [("RSC", "NN")], {"all": curve["fraction"].ge(0)})


def test_weight_auc_rho_iterations_and_figures():
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    gallery, probes, features = _image_sets()
    occluded, mask = block_occlude(probes.images, 0.4, generator=torch.Generator().manual_seed(0))
    ww = WWCSC(lam=0.01).fit(features.transform(gallery.images), gallery.identity)
    auc, codes = study.weight_auc_table(ww, features, {"block": (occluded, mask)}, (16, 16))
    assert 0.5 < auc["block"] <= 1.0
    src = SRC(lam=0.01).fit(features.transform(gallery.images), gallery.identity)
    iters = study.rho_iterations(src, features.transform(occluded), 0.01, ratios=(1.0, 10.0))
    assert list(iters["rho / lam"]) == [1.0, 10.0] and (iters["iterations"] >= 1).all()
    curve = study.occlusion_curve({"NN": NearestNeighbor()}, features, gallery, probes, "block", [0.0, 0.4])
    assert isinstance(study.plot_occlusion_curves(curve, kinds=("block",)), Figure)
    fig, axes = plt.subplots(1, 2)
    assert study.plot_occlusion_curves(pd.concat([curve, curve.assign(kind="pixels")]), ax=axes) is fig
    assert isinstance(study.plot_weight_maps({"block": (occluded, mask)}, codes, (16, 16), per_set=1), Figure)
    hist = {"SRC": src.encode(features.transform(occluded)).history_frame(), "WWCSC": codes["block"].history_frame()}
    assert isinstance(study.plot_convergence(hist), Figure)
    plt.close("all")


def test_correct_counts_and_published_comparison():
    pred = pd.DataFrame({"truth": ["a", "a", "b"], "X": ["a", "b", "b"], "Y": ["b", "b", "a"]})
    counts = study.correct_counts(pred)
    assert list(counts["correct"]) == [2, 0] and list(counts["of"]) == [3, 3]
    _assert_interval_columns(counts, "accuracy")
    res = pd.DataFrame({"set": ["sunglasses", "scarf", "clean"], "method": ["SRC", "SRC", "SRC"],
                        "accuracy": [0.75, 0.7, 0.9], "accuracy_lo": [0.5, 0.5, 0.7], "accuracy_hi": [0.9, 0.85, 1.0]})
    cmp = study.published_comparison(res)
    assert list(cmp["protocol"]) == ["sunglasses", "scarf"]
    assert cmp["ours_synthetic [95% CI]"].iloc[0] == "0.75 [0.50, 0.90]"


def test_occluders_follow_the_images_and_reject_bad_input():
    g = torch.Generator().manual_seed(0)
    out, mask = block_occlude(torch.full((2, 3, 20, 20), 0.5), 0.0, generator=g)
    assert not mask.any() and torch.equal(out, torch.full((2, 3, 20, 20), 0.5))
    with pytest.raises(ValueError, match="fraction must be in"):
        corrupt_pixels(torch.zeros(1, 1, 8, 8), 1.5)
    with pytest.raises(ValueError, match="images"):
        block_occlude(torch.zeros(8, 8), 0.2)


# ----------------------------------------------------------------------------------------------------------------
# issue #21: RSC as its authors run it, WWCSC's start, per-round solves, penalty reset, structured SRC+I solve
# ----------------------------------------------------------------------------------------------------------------
def test_rsc_settings_follow_the_authors_demos():
    assert RSC()._resolved() == {"tau": 0.7, "lam": 0.005, "n_rounds": 10}
    assert RSC(setting="clean")._resolved() == {"tau": 0.8, "lam": 0.001, "n_rounds": 2}
    assert RSC(setting="clean", tau=0.75)._resolved()["tau"] == 0.75  # explicit values override the setting
    with pytest.raises(ValueError, match="setting must be one of"):
        RSC(setting="sunny").fit(*subspace_data()[:2])


def test_rsc_clean_setting_reaches_src_on_clean_probes():
    X, y, P, py = subspace_data(n_classes=10, per_class=6, n_probe=4, m=256, seed=3, noise=0.05)
    src = SRC(lam=0.01).fit(X, y).score(P, py)
    rsc = RSC(setting="clean").fit(X, y)
    assert rsc.score(P, py) >= src
    res = rsc.encode(P)
    assert len(res.round_weights) == 2 and res.weights.shape == (256, len(P))


def test_rsc_round_solves_the_renormalised_weighted_lasso():
    """One RSC round == the authors' problem: ||y' - D'a||^2 + lam ||Wy|| ||a||_1 on w-weighted, re-normalised data."""
    X, y, P, _ = subspace_data(n_classes=5, per_class=4, n_probe=1, m=100, seed=2)
    rsc = RSC(setting="clean", n_rounds=1, max_iter=3000, tol=1e-6).fit(X, y)
    res = rsc.encode(P)
    D = rsc.dictionary_
    Y = rsc._probes(P)
    m = D.shape[0]
    for j in range(len(P)):
        w = res.round_weights[0][:, j]
        yn = Y[:, j] / Y[:, j].norm()  # the authors' unit-norm probe
        wy = w * yn
        yp = wy / wy.norm()
        Dw = w[:, None] * D
        Dp = Dw / Dw.norm(dim=0)
        lam_p = 0.001 * float(wy.norm())
        # sklearn's Lasso minimises ||y - Xa||^2/(2m) + alpha ||a||_1  ->  alpha = lam' / (2m)
        ref = Lasso(alpha=lam_p / (2 * m), fit_intercept=False, tol=1e-12, max_iter=100000).fit(
            Dp.numpy(), yp.numpy()).coef_
        a = torch.as_tensor(ref)

        def obj(a):
            return float(((yp - Dp @ a) ** 2).sum() + lam_p * a.abs().sum())
        # our code x maps to a_j = ||W d_j|| x_j / ||W y|| (unit-norm probe)
        x = res.coef[:, j]
        ours = Dw.norm(dim=0) * x / (math.sqrt(m) * wy.norm())
        assert obj(ours) <= obj(a) * (1 + 5e-3) + 1e-9  # ADMM to ~1e-3, coordinate descent to 1e-12


@pytest.mark.parametrize("fidelity", ["square", "wing"])
def test_each_reweighting_round_solves_its_weighted_problem(fidelity):
    """The code each round ends with minimises the objective at that round's weights (vs an independent solve)."""
    X, y, P, _ = subspace_data(n_classes=6, per_class=4, n_probe=1, m=144, seed=5)
    D = sparse.unit_rms(torch.as_tensor(X.T))
    Y = sparse.unit_rms(torch.as_tensor(P.T))
    imgs = torch.as_tensor(P.reshape(-1, 1, 12, 12), dtype=torch.float32) / float(P.max())
    occ, _ = block_occlude(imgs, 0.3, generator=torch.Generator().manual_seed(0))
    Y = sparse.unit_rms(occ.reshape(len(P), -1).T.double())
    lam = 0.01
    kw = dict(fidelity=fidelity, rho=0.1, mu=10.0, max_iter=400, abs_tol=1e-8, rel_tol=1e-5)
    res = robust_admm(D, Y, lam, reweight=2, tau=0.6, initial_residual=Y - D.mean(1, keepdim=True), **kw)
    assert len(res.round_weights) == len(res.round_coef) == 3
    assert sorted(set(res.history["round"][:, 0].astype(int))) == [0, 1, 2]
    for v, z in zip(res.round_weights, res.round_coef):
        got = robust_objective(D, Y, z, lam, fidelity, v, epsilon=0.5)
        if fidelity == "square":  # convex: compare with sklearn's Lasso on the sqrt(v)-scaled problem, per probe
            for j in range(Y.shape[1]):
                s = v[:, j].sqrt()
                ref = Lasso(alpha=lam, fit_intercept=False, tol=1e-12, max_iter=100000).fit(
                    (s[:, None] * D).numpy(), (s * Y[:, j]).numpy()).coef_
                best = robust_objective(D, Y[:, j:j + 1], torch.as_tensor(ref)[:, None], lam, fidelity, v[:, j:j + 1])
                assert float(got[j]) <= float(best[0]) * (1 + 1e-3)
        else:  # non-convex: an independent solve from scratch with fixed weights and no reweighting
            ind = robust_admm(D, Y, lam, weights=v, reweight=0, **{**kw, "max_iter": 3000})
            best = robust_objective(D, Y, ind.coef, lam, fidelity, v, epsilon=0.5)
            assert torch.all(got <= best * 1.02 + 1e-6)


def test_penalties_reset_each_round():
    D, Y = lasso_problem(m=80, n=30, k=4)
    res = robust_admm(D, Y, 0.01, fidelity="wing", reweight=2, max_iter=40, abs_tol=1e-12, rel_tol=1e-12)
    h = res.history_frame()
    assert list(h.groupby("round")["iteration_in_round"].max()) == [40, 40, 40]
    # every round starts a fresh ADMM run: its first iterations are not as tight as the end of the previous round
    starts = h[h.iteration_in_round == 1]["eps_dual"].to_numpy()
    assert len(starts) == 3 and np.all(np.isfinite(starts))
    assert list(res.stop_reason) == ["iteration cap"] * 4
    assert res.round_iterations == [40, 40, 40]


def test_identity_extended_factor_matches_dense_solve():
    g = torch.Generator().manual_seed(0)
    D = torch.randn(50, 12, generator=g, dtype=torch.float64)
    a, c = math.sqrt(50), 0.7
    B = torch.cat([D, a * torch.eye(50, dtype=D.dtype)], 1)
    b = torch.randn(62, 5, generator=g, dtype=D.dtype)
    F = sparse.IdentityExtendedFactor(D, a, c)
    assert torch.allclose(F.solve(b), torch.linalg.solve(B.T @ B + c * torch.eye(62, dtype=D.dtype), b))


def test_wwcsc_mean_start_uses_the_mean_face_residual():
    X, y, P, py = subspace_data()
    unit = WWCSC(lam=0.01, n_reweight=1).fit(X, y)
    mean = WWCSC(lam=0.01, n_reweight=1, init="mean").fit(X, y)
    assert unit.encode(P).round_weights[0] is None  # first round = WCSC (unit weights)
    w0 = mean.encode(P).round_weights[0]
    assert w0.shape == (144, len(P)) and float(w0.min()) < 0.5
    assert mean.score(P, py) >= 0.85
    with pytest.raises(ValueError, match="init must be 'mean'"):
        WWCSC(init="zero").fit(X, y)


@pytest.mark.parametrize("tau", [0.0, 1.0, -0.2, 1.5, "x"])
def test_tau_outside_open_unit_interval_is_an_error(tau):
    X, y, _, _ = subspace_data()
    for est in (WWCSC(tau=tau), RSC(tau=tau)):
        with pytest.raises(ValueError, match=r"tau must be .*\(0, 1\)"):
            est.fit(X, y)
    if not isinstance(tau, str):
        with pytest.raises(ValueError, match="tau"):
            sparse.logistic_weights(torch.ones(4, 1), tau)


@pytest.mark.parametrize("fraction", [-0.1, 1.01, float("nan")])
def test_occlusion_fraction_outside_unit_interval_is_an_error(fraction):
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1"):
        block_occlude(torch.zeros(1, 1, 8, 8), fraction)
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1"):
        corrupt_pixels(torch.zeros(1, 1, 8, 8), fraction)


@pytest.mark.parametrize("make", [lambda: RSC(), lambda: WWCSC(init="mean"), lambda: SRC(extended=True)])
def test_probe_size_must_match_the_gallery_features(make):
    X, y, P, _ = subspace_data()
    est = make().fit(X, y)
    with pytest.raises(ValueError, match="X has 100 features, but .* was fitted with 144"):
        est.predict(P[:, :100])


def test_run_protocol_pools_seeds_with_intervals_and_reports_convergence():
    methods = {"NN": NearestNeighbor(), "SRC": SRC(lam=0.01), "WWCSC": WWCSC(lam=0.01, max_iter=20, n_reweight=1)}
    res = study.run_protocol(methods, [0, 1], 3, 2, 1, (12, 10), block_fractions=(0.0, 0.4), pixel_fractions=(0.6,))
    assert set(res["seed"]) == {0, 1}
    assert set(zip(res.kind, res.fraction.fillna(-1))) == {("clean", -1), ("sunglasses", -1), ("scarf", -1),
                                                           ("block", 0.4), ("pixels", 0.6)}
    pooled = study.pool_seeds(res)
    assert len(pooled) == 5 * 3 and (pooled["n_probes"] == 6).all() and (pooled["n_seeds"] == 2).all()
    _assert_interval_columns(pooled, "accuracy")
    row = pooled[(pooled.set == "block 40%") & (pooled.method == "SRC")].iloc[0]
    parts = res[(res.kind == "block") & (res.method == "SRC")]["correct"]
    assert row["accuracy"] == pytest.approx(np.concatenate(list(parts)).mean())
    curves = study.curve_frame(pooled)
    assert set(curves.kind) == {"block", "pixels"} and (curves.fraction == 0).sum() == 2 * 3
    with pytest.raises(ValueError, match="at least one seed"):
        study.run_protocol(methods, [], 3, 2, 1, (12, 10))
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1"):
        study.run_protocol(methods, [0], 3, 2, 1, (12, 10), block_fractions=(1.2,))
    X, y, P, _ = subspace_data()
    fitted = {"SRC": SRC(lam=0.01, max_iter=5000).fit(X, y), "WWCSC": WWCSC(lam=0.01, max_iter=5).fit(X, y),
              "RSC": RSC(max_iter=500).fit(X, y)}
    conv = study.convergence_table(fitted, P).set_index("method")
    assert conv.loc["WWCSC", "rounds"] == 4 and conv.loc["RSC", "rounds"] == 10
    assert conv.loc["WWCSC", "stopped: iteration cap"] + conv.loc["WWCSC", "stopped: tolerance"] == len(P)
    assert (conv["converged (every round)"] <= conv["converged (last round)"]).all()
    assert conv.loc["SRC", "converged (last round)"] == 1.0
    # codes computed once (with their history, for the convergence figure) give the same table
    codes = {k: est.encode(P) for k, est in fitted.items()}
    pd.testing.assert_frame_equal(study.convergence_table(fitted, P, results=codes).set_index("method"), conv)


def _reference_robust(D, Y, lam, fidelity, weights, rho, mu, iters, growth, w=1.0, epsilon=0.3):
    """The split-residual ADMM written out with four dictionary products per iteration (the textbook form)."""
    from facelab.sparse.solvers import _fidelity_prox, soft_threshold

    m, n = D.shape
    lam_s, rho_s, mu_s = lam * m, rho * m, mu
    F = torch.linalg.inv(D.T @ D + (rho_s / mu_s) * torch.eye(n, dtype=D.dtype))
    x = z = p = torch.zeros(n, Y.shape[1], dtype=D.dtype)
    e = u = torch.zeros_like(Y)
    for _ in range(iters):
        t = 1.0 / mu_s if weights is None else weights / mu_s
        x = F @ (D.T @ (Y - e + u) + (rho_s / mu_s) * (z - p))
        e = _fidelity_prox(Y - D @ x + u, t, fidelity, w, epsilon)
        z = soft_threshold(x + p, lam_s / rho_s)
        u, p = u + Y - D @ x - e, p + x - z
        if growth > 1:
            mu_s, rho_s, u, p = mu_s * growth, rho_s * growth, u / growth, p / growth
    return z


@pytest.mark.parametrize("fidelity,growth,weighted", [("square", 1.0, True), ("l1", 1.0, False),
                                                      ("wing", 1.0, False), ("wing", 1.05, True)])
def test_robust_admm_two_product_iteration_matches_textbook_form(fidelity, growth, weighted):
    # the solver keeps D^T e, D^T u and x^T D^T D x from the Gram matrix instead of two more (m, n) products per
    # iteration: the iterates must be those of the plain iteration, to rounding
    g = torch.Generator().manual_seed(3)
    D = torch.randn(120, 30, generator=g, dtype=torch.float64)
    Y = D[:, :6] @ torch.rand(6, 8, generator=g, dtype=torch.float64) + 0.1 * torch.randn(120, 8, generator=g,
                                                                                           dtype=torch.float64)
    Y[:20] += 3.0  # an occluder
    v = torch.rand(120, 8, generator=g, dtype=torch.float64) if weighted else None
    res = robust_admm(D, Y, 0.01, fidelity=fidelity, weights=v, w=1.0, epsilon=0.3, rho=0.1, mu=10.0, max_iter=40,
                      abs_tol=1e-300,
                      rel_tol=0.0, growth=growth, max_growth=1e6, record=False)
    assert res.n_iter == 40
    ref = _reference_robust(D, Y, 0.01, fidelity, v, 0.1, 10.0, 40, growth)
    torch.testing.assert_close(res.coef, ref, rtol=1e-7, atol=1e-9)


# ----------------------------------------------------------------------------------------------------------------
# the in-place inner loops give the numbers of the plain formulas, bit for bit (chapter 03's tables stay put)
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("w,eps", [(1.0, 0.3), (0.5, 2.0), (3.0, 0.03)])
def test_wing_prox_in_place_equals_plain_formulas_bitwise(w, eps):
    import _sparse_reference as ref

    g = torch.Generator().manual_seed(5)
    a = 2.0 * torch.randn(300, 40, generator=g, dtype=torch.float64)
    a[0, :8] = torch.tensor([0.0, -0.0, w, -w, 3 * w, 1e-12, -1e6, eps], dtype=torch.float64)
    steps = [0.0, 0.1, 1e6, torch.tensor(0.1, dtype=torch.float64),
             0.3 * torch.rand(300, 40, generator=g, dtype=torch.float64),
             0.3 * torch.rand(300, 1, generator=g, dtype=torch.float64)]
    for t in steps:
        got, want = wing_prox(a, t, w, eps), ref.wing_prox(a, t, w, eps)
        assert got.shape == want.shape and got.dtype == want.dtype
        assert torch.equal(got, want)
    # float32 and a step that broadcasts the input to a larger shape
    a32, t32 = a.float(), (0.3 * torch.rand(300, 40, generator=g)).float()
    assert torch.equal(wing_prox(a32, t32, w, eps), ref.wing_prox(a32, t32, w, eps))
    row = a[:1, :40]
    assert torch.equal(wing_prox(row, steps[4], w, eps), ref.wing_prox(row, steps[4], w, eps))


def _occluded_subspace_data():
    X, y, P, py = subspace_data(n_classes=6, per_class=5, n_probe=3, seed=4)
    P = P.copy()
    P[:, :40] = np.linspace(0.0, 3.0, 40)  # a block the gallery cannot explain
    return X, y, P


@pytest.mark.parametrize("name", ["WCSC", "WWCSC", "WWCSC mean start", "RSC (occl.)", "RSC (clean)"])
def test_robust_iterations_in_place_equal_the_plain_loop_bitwise(monkeypatch, name):
    import _sparse_reference as ref
    import facelab.sparse.solvers as solvers

    est = {"WCSC": WCSC(lam=0.01, max_iter=40), "WWCSC": WWCSC(lam=0.01, max_iter=20),
           "WWCSC mean start": WWCSC(lam=0.01, max_iter=20, init="mean"),
           "RSC (occl.)": RSC(setting="occlusion", max_iter=60), "RSC (clean)": RSC(setting="clean")}[name]
    X, y, P = _occluded_subspace_data()
    est.fit(X, y)
    new, new_pred = est.encode(P), est.predict(P)
    monkeypatch.setattr(solvers, "_robust_iterations", ref._robust_iterations)
    old, old_pred = est.encode(P), est.predict(P)
    assert torch.equal(new.coef, old.coef) and torch.equal(new.error, old.error)
    assert torch.equal(new.weights, old.weights) if old.weights is not None else new.weights is None
    assert new.round_iterations == old.round_iterations and torch.equal(new.converged, old.converged)
    assert set(new.history) == set(old.history)
    for k in old.history:
        np.testing.assert_array_equal(new.history[k], old.history[k])
    np.testing.assert_array_equal(new_pred, old_pred)


def test_robust_admm_in_place_loop_leaves_callers_arrays_alone():
    # the loop updates its (m, k) arrays in place: the probes, the weights and the returned per-round codes must
    # not change under the caller
    g = torch.Generator().manual_seed(2)
    D = torch.randn(60, 12, generator=g, dtype=torch.float64)
    Y = torch.randn(60, 5, generator=g, dtype=torch.float64)
    v = torch.rand(60, 5, generator=g, dtype=torch.float64)
    Y0, v0 = Y.clone(), v.clone()
    res = robust_admm(D, Y, 0.01, fidelity="square", weights=v, max_iter=15, reweight=2, record=False)
    assert torch.equal(Y, Y0) and torch.equal(v, v0)
    assert torch.equal(res.round_weights[0], v0)
    assert not torch.equal(res.round_coef[0], res.round_coef[-1])


def test_protocol_sets_without_world_occluders_and_validation_on_used_sets_only():
    faces = study.render_protocol(3, 2, 1, seed=0, size=48)
    full = study.protocol_sets(faces, (0.4,), (0.6,), seed=0)
    some = study.protocol_sets(faces, (0.4,), (0.6,), seed=0, occluders=())
    assert [k[0] for k in full] == ["clean", "sunglasses", "scarf", "block", "pixels"]
    assert [k[0] for k in some] == ["clean", "block", "pixels"]
    kept = [v for k, v in full.items() if k[0] not in ("sunglasses", "scarf")]  # (NaN keys: match by position)
    for (images, identity), (want_images, want_identity) in zip(some.values(), kept):
        assert torch.equal(images, want_images) and np.array_equal(identity, want_identity)
    with pytest.raises(ValueError, match="occluders"):
        study.protocol_sets(faces, occluders=("hat",))
    # WWCSC at its iteration cap in every round codes each probe on its own: leaving the unused sets out of the
    # batch gives the same per-probe results (validate_wwcsc_init codes only the clean and block probes)
    methods = {"WWCSC": WWCSC(lam=0.01, max_iter=5)}
    a = study.run_protocol(methods, [0], 3, 2, 1, (12, 10), block_fractions=(0.4,), pixel_fractions=())
    b = study.run_protocol(methods, [0], 3, 2, 1, (12, 10), block_fractions=(0.4,), pixel_fractions=(), occluders=())
    a = a[a["kind"].isin(["clean", "block"])].reset_index(drop=True)
    assert list(b["kind"]) == list(a["kind"])
    for ca, cb in zip(a["correct"], b["correct"]):
        np.testing.assert_array_equal(ca, cb)
    pd.testing.assert_series_equal(a["accuracy"], b["accuracy"])
