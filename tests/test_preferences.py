"""facelab.preferences (chapter 12): the planted preference world, the pipeline, Bradley-Terry/Elo, DPO, Arena."""

import numpy as np
import pandas as pd
import pytest
import torch

from facelab import preferences as pf


@pytest.fixture(scope="module")
def world():
    return pf.make_world(8, n_items=120, n_raters=80, n_per_rater=40, epsilon=0.1, seed=0)


# ------------------------------------------------------------------------------------------------------ world
def test_world_shapes_and_planted_tail_share(world):
    c = world.comparisons
    assert world.attributes.shape == (120, 8) and world.weights.shape == (80, 8)
    assert len(c) == 80 * 40
    assert np.allclose(world.attributes.mean(0), 0, atol=1e-9) and np.allclose(world.attributes.std(0), 1)
    assert ((world.weights != 0).sum(1) >= 1).all()
    assert np.all((c.winner == c.left) | (c.winner == c.right))
    tail = c.reasons.groupby("comparison")["parent"].max() < 0
    assert 0.07 < tail.mean() < 0.13                        # epsilon = 0.1 of the choices are idiosyncratic
    assert set(c.reasons["parent"]) <= set(range(-1, 8))
    assert (c.reasons.loc[c.reasons.parent < 0, "direction"] == 0).all()


def test_choices_follow_the_bradley_terry_utility():
    A = np.array([[1.0], [-1.0]])
    W = np.ones((200, 1))
    c = pf.simulate_choices(A, W, 50, epsilon=0.0, beta=2.0, seed=1)
    wins0 = np.mean(c.winner == 0)
    assert abs(wins0 - 1 / (1 + np.exp(-4.0))) < 0.02      # P(item 0 wins) = sigmoid(beta * (1 - (-1)))


def test_reason_grammar_has_about_5000_fine_grained_reasons():
    n = sum(len(cat.facets) for cat in pf.CATEGORIES) * 2 * len(pf.CONTEXTS)
    assert len(pf.CATEGORIES) == 21 and 4500 <= n <= 5500
    cat = pf.CATEGORIES[0]
    assert pf.reason_text(cat, cat.facets[0], 1, pf.CONTEXTS[0]).endswith(pf.CONTEXTS[0])
    with pytest.raises(ValueError, match="direction"):
        pf.reason_text(cat, cat.facets[0], 0)


def test_face_attributes_are_read_from_rendered_faces():
    from facelab.synth import FaceWorld

    w = pf.make_world(21, n_items=24, n_raters=5, n_per_rater=4, face_world=FaceWorld(seed=0, size=48), seed=0)
    assert list(w.item_labels.columns) == [c.name for c in pf.CATEGORIES]
    assert w.images.shape[0] == 24
    assert np.corrcoef(w.item_labels["glasses"], w.attributes[:, 12])[0, 1] > 0.99


def test_a_world_larger_than_the_renderer_adds_latent_categories():
    cats = pf.world_categories(25)
    assert len(cats) == 25 and cats[-1].source.startswith("latent")


def test_bad_comparisons_are_refused():
    with pytest.raises(ValueError, match="with itself"):
        pf.check_comparisons([0, 1], [0, 2])
    with pytest.raises(ValueError, match="neither item"):
        pf.check_comparisons([0], [1], [2])
    with pytest.raises(ValueError, match="epsilon"):
        pf.simulate_choices(np.zeros((3, 2)), np.ones((2, 2)), 2, epsilon=1.0)
    with pytest.raises(ValueError, match="share K"):
        pf.simulate_choices(np.zeros((3, 2)), np.ones((2, 3)), 2)
    with pytest.raises(ValueError, match="with itself"):
        pf.simulate_choices(np.zeros((3, 2)), np.ones((2, 2)), 0, pairs=([0], [1], [1]))


# --------------------------------------------------------------------------------------------------- pipeline
def test_greedy_selection_is_max_coverage():
    # comparison 0: {0}, 1: {0}, 2: {1, 2}, 3: {2}, 4: tail only
    comp = np.array([0, 1, 2, 2, 3, 4])
    cat = np.array([0, 0, 1, 2, 2, -1])
    chosen, cov = pf.select_categories(comp, cat, 2, n_comparisons=5, n_categories=3)
    assert sorted(chosen) == [0, 2] and np.allclose(cov, [0.4, 0.8])
    with pytest.raises(ValueError, match="larger than the number of categories"):
        pf.select_categories(comp, cat, 4, n_comparisons=5, n_categories=3)


def test_oracle_coverage_and_variance_follow_the_planted_structure(world):
    R = world.comparisons.reasons
    cov = pf.coverage_curve(R.comparison, R.parent, 8, n_comparisons=len(world.comparisons), n_categories=8)
    assert cov.is_monotonic_increasing and 0.86 < cov.iloc[-1] < 0.94    # 1 - epsilon
    X = pf.rater_category_matrix(world.comparisons.rater, R.comparison, R.parent, n_categories=8)
    assert X.shape == (80, 8) and (X >= 0).all() and (X.sum(1) <= 2).all()   # at most two reasons a choice
    pca = pf.explained_variance_curve(X, 8)
    assert pca.is_monotonic_increasing and abs(pca.iloc[-1] - 1) < 1e-9
    nmf = pf.explained_variance_curve(X, 3, method="nmf")
    assert (nmf <= pca.iloc[:3] + 1e-6).all()                 # PCA is the best rank-k fit
    with pytest.raises(ValueError, match="method"):
        pf.explained_variance_curve(X, 3, method="ica")


def test_raters_without_comparisons():
    comp, cat = np.array([0, 1]), np.array([0, 1])
    rater = np.array([0, 2])                                   # rater 1 has no comparisons
    with pytest.raises(ValueError, match="no comparisons"):
        pf.rater_category_matrix(rater, comp, cat, 3, 2)
    assert pf.rater_category_matrix(rater, comp, cat, 3, 2, empty="drop").shape == (2, 2)
    Z = pf.rater_category_matrix(rater, comp, cat, 3, 2, empty="zeros")
    assert Z.shape == (3, 2) and not Z[1].any()


def test_cluster_recovery_ignores_reasons_without_parent():
    assert pf.cluster_recovery([0, 0, 1, 1, None, -1], [5, 5, 7, 7, 5, 7]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no reason has a parent"):
        pf.cluster_recovery([None, -1], [0, 1])
    with pytest.raises(ValueError, match="one entry per reason"):
        pf.cluster_recovery([0, 1], [0])


def test_clustering_separates_separated_groups():
    rng = np.random.default_rng(0)
    centres = np.eye(4, 16) * 5
    X = np.concatenate([c + rng.normal(0, 0.3, (20, 16)) for c in centres])
    labels = np.repeat(np.arange(4), 20)
    assert pf.cluster_recovery(labels, pf.cluster_reasons(X, 4, weights=np.ones(80))) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="larger than the number of categories"):
        pf.cluster_reasons(X[:3], 4)


def test_embeddings_are_cached_by_content(tmp_path):
    calls = []

    def encoder(texts):
        calls.append(len(texts))
        return torch.arange(len(texts) * 384, dtype=torch.float32).reshape(len(texts), 384) + 1

    a = pf.embed_reasons(["x", "y"], encoder=encoder, cache_dir=tmp_path)
    b = pf.embed_reasons(["x", "y"], encoder=encoder, cache_dir=tmp_path)
    assert calls == [2] and np.allclose(a, b) and np.allclose(np.linalg.norm(a, axis=1), 1, atol=1e-5)
    with pytest.raises(TypeError, match="single string"):
        pf.embed_reasons("x", encoder=encoder, cache_dir=tmp_path)


def test_bootstrap_curves_have_ordered_intervals(world):
    R = world.comparisons.reasons
    out = pf.bootstrap_curves(world.comparisons.rater, R.comparison, R.parent, 5, n_boot=30, nmf_Ks=[3],
                              n_categories=8)
    assert list(out.index) == [1, 2, 3, 4, 5]
    for m in ("coverage", "pca"):
        # percentile intervals; resampling raters with replacement duplicates rows, which biases spectral shares
        # upwards a little, so the estimate may sit just below a PCA interval
        assert (out[f"{m}_lo"] <= out[f"{m}_hi"]).all() and (out[f"{m}_hi"] - out[f"{m}_lo"] < 0.2).all()
        assert ((out[m] > out[f"{m}_lo"] - 0.05) & (out[m] < out[f"{m}_hi"] + 0.05)).all()
    assert out.loc[3, "nmf_lo"] <= out.loc[3, "nmf_hi"] and np.isnan(out.loc[1, "nmf"])


# ------------------------------------------------------------------------------------------------- elo
def test_bradley_terry_recovers_strengths_and_handles_ties():
    rng = np.random.default_rng(0)
    theta = np.array([1.0, 0.0, -1.0])
    i, j = rng.integers(0, 3, 6000), rng.integers(0, 3, 6000)
    keep = i != j
    i, j = i[keep], j[keep]
    p = 1 / (1 + np.exp(-(theta[i] - theta[j])))
    win = rng.random(i.size) < p
    W = pf.win_matrix(np.where(win, i, j), np.where(win, j, i), 3)
    est = pf.bradley_terry(W)
    assert np.allclose(est, theta - theta.mean(), atol=0.1)
    elo = pf.to_elo(est)
    assert elo[0] - elo[2] == pytest.approx(pf.ELO_SCALE * (est[0] - est[2]))
    T = pf.win_matrix([0, 1], [1, 0], 2, ties=[True, False])  # a tie is half a win each
    assert np.allclose(T, [[0.0, 0.5], [1.5, 0.0]])
    with pytest.raises(ValueError, match="with itself"):
        pf.win_matrix([0], [0], 2)
    with pytest.raises(ValueError, match="no comparisons"):
        pf.bradley_terry(np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]]))


def test_per_category_elo_uses_only_comparisons_naming_the_category():
    winner, loser = np.array([0] * 30 + [1] * 30), np.array([1] * 30 + [0] * 30)
    named = [{0}] * 30 + [{1}] * 30
    E = pf.per_category_elo(winner, loser, named, 2, [0, 1, 2], names=["a", "b", "c"])
    assert E.loc["a", 0] > E.loc["a", 1] and E.loc["b", 1] > E.loc["b", 0]
    assert E.loc["c"].isna().all()                             # no comparison names category 2


# ------------------------------------------------------------------------------------------------- dpo
def test_dpo_moves_the_policy_towards_the_preferred_category():
    rng = np.random.default_rng(0)
    z_w, z_l = rng.normal(0, 1, (400, 3)), rng.normal(0, 1, (400, 3))
    swap = z_w[:, 0] < z_l[:, 0]                               # the chosen edit has more of attribute 0
    z_w[swap], z_l[swap] = z_l[swap].copy(), z_w[swap].copy()
    tuned = pf.dpo_update(pf.GaussianEditPolicy(np.zeros(3)), z_w, z_l, steps=100)
    assert tuned.mean[0] > 0.5 and np.abs(tuned.mean[1:]).max() < 0.2
    with pytest.raises(ValueError, match="same shape"):
        pf.dpo_update(pf.GaussianEditPolicy(np.zeros(3)), z_w, z_l[:, :2])
    with pytest.raises(ValueError, match="optimizer"):
        pf.dpo_update(pf.GaussianEditPolicy(np.zeros(3)), z_w, z_l, optimizer="lbfgs")
    adam = pf.dpo_update(pf.GaussianEditPolicy(np.zeros(3)), z_w, z_l, optimizer="adam", lr=0.02, steps=100)
    assert adam.mean[0] > 0.5


def test_judging_policies_rates_the_better_policy_higher():
    W = np.ones((50, 2))
    good, bad = pf.GaussianEditPolicy(np.array([1.0, 0.0])), pf.GaussianEditPolicy(np.zeros(2))
    comps, named = pf.judge_policies([good, bad], W, 2000, epsilon=0.0, seed=0)
    assert np.mean(comps.winner == 0) > 0.6 and len(named) == 2000
    with pytest.raises(ValueError, match="at least two"):
        pf.judge_policies([good], W, 10)


# ------------------------------------------------------------------------------------------------ arena
def test_arena_aggregate_is_read_and_scored():
    try:
        arena = pf.load_arena()
    except (FileNotFoundError, ModuleNotFoundError) as e:
        pytest.skip(f"Arena data not fetched: {e}")
    assert len(arena.models) == 129 and len(arena.pairs) == 3460
    assert 1.6e6 < arena.n_battles < 1.7e6
    scores = pf.arena_scores(arena)
    assert scores["elo"].is_monotonic_decreasing and scores["elo"].mean() == pytest.approx(1000)
    low = pf.arena_low_rank(arena)
    assert 0.5 < low["bt_r2"] <= 1 and np.all(np.diff(low["energy"]) >= 0)


def test_arena_file_errors(tmp_path):
    bad = tmp_path / "arena.json"
    bad.write_text('{"models": ["a", "b"], "X": [[0, 0]], "Y": [[1, 0, 0]]}')
    with pytest.raises(ValueError, match="with itself"):
        pf.load_arena(bad)
    bad.write_text('{"models": ["a"]}')
    with pytest.raises(ValueError, match="missing"):
        pf.load_arena(bad)
