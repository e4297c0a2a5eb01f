"""facelab.core.scores: one score convention (similarity, higher = more alike, threshold in the same unit) for every
embedder, the genuine/impostor pairs, and the metrics reading those scores as before the convention change."""

import numpy as np
import pytest
import torch

from facelab import metrics as M
from facelab.core import scores as S


# ------------------------------------------------------------------------------------------------ every embedder
def test_dlib_threshold_is_minus_its_published_distance_exactly():
    from facelab.models import FaceModel, load_embedder

    assert S.DLIB_THRESHOLD == -0.6 and S.DLIB_DISTANCE_THRESHOLD == 0.6
    m = load_embedder("dlib-resnet")
    assert m.threshold == -0.6 and m.distance_threshold == 0.6
    assert load_embedder("dlib-resnet", weights="faceapi").threshold == -0.6
    assert FaceModel("dlib", m, m.template).threshold == -0.6
    assert load_embedder("sface").threshold == S.SFACE_THRESHOLD == 0.363


def _check_convention(embedder, same_a, same_b, other):
    """similarity(x, x) >= threshold; a second photo of the same person too; a different person below it."""
    e = torch.stack([same_a, same_b, other])
    sim = embedder.similarity(e)
    t = embedder.threshold
    assert torch.all(sim.diagonal() >= t), (embedder.name, sim.diagonal(), t)
    assert sim[0, 1] >= t, (embedder.name, float(sim[0, 1]), t)
    assert sim[0, 2] < t and sim[1, 2] < t, (embedder.name, sim[:2, 2].tolist(), t)
    assert torch.equal(embedder.is_same(e, e), sim >= t)


@pytest.mark.parametrize("name, weights", [("dlib-resnet", "dlib"), ("dlib-resnet", "faceapi"), ("sface", None)])
def test_real_embedders_follow_the_convention(name, weights):
    from facelab.models import load_embedder
    from facelab.photos import load_real_faces

    m = load_embedder(name, weights=weights)
    faces = load_real_faces(name)
    ids = list(faces.identities)
    obama = [k for k, i in enumerate(ids) if i == "Barack Obama" and not faces.table["partial"].iloc[k]]
    hopper = ids.index("Grace Hopper")
    e = m.embed(faces.chips[[obama[0], obama[1], hopper]])
    _check_convention(m, e[0], e[1], e[2])


@pytest.mark.parametrize("name", ["synth-plain", "synth-residual"])
def test_synthetic_recognisers_follow_the_convention(name):
    from facelab.models import load_face_models
    from facelab.synth import FaceWorld

    model = load_face_models([name])[name]
    world = FaceWorld(seed=0, size=64)
    faces = world.sample(n_identities=2, per_identity=2, identity_offset=100_000, nuisance="none",
                         generator=torch.Generator().manual_seed(0))
    ids = faces.labels["identity"].to_numpy()
    with torch.no_grad():
        e = model.embed(faces.images, faces.landmarks)
    a, b = np.nonzero(ids == ids[0])[0][:2]
    other = int(np.nonzero(ids != ids[0])[0][0])
    _check_convention(model.embedder, e[a], e[b], e[other])
    assert model.threshold == model.embedder.threshold
    s = model.score(e[[a, a]], e[[b, other]])
    assert s[0] >= model.threshold > s[1]


def test_face_model_score_is_the_paired_similarity():
    from facelab.models import FaceModel, load_embedder

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 128, generator=g), torch.randn(4, 128, generator=g)
    dlib = load_embedder("dlib-resnet")
    fm = FaceModel("dlib", dlib, dlib.template)
    torch.testing.assert_close(fm.score(a, b), -(a - b).norm(dim=1))
    torch.testing.assert_close(fm.score(a, b), dlib.similarity(a, b).diagonal(), rtol=1e-5, atol=1e-5)
    sface = load_embedder("sface")
    fm = FaceModel("sface", sface, sface.template)
    torch.testing.assert_close(fm.score(a, b), torch.nn.functional.cosine_similarity(a, b, dim=1))


# ------------------------------------------------------------------------------------------------ helpers
def test_similarity_from_distance_and_matrix():
    assert S.similarity_from_distance(0.6) == -0.6
    assert S.similarity_from_distance(0.25, "cosine") == 0.75
    with pytest.raises(ValueError, match="unknown metric"):
        S.similarity_from_distance(0.1, "manhattan")
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(5, 8, generator=g), torch.randn(3, 8, generator=g)
    torch.testing.assert_close(S.similarity_matrix(a, b), -torch.cdist(a, b), rtol=1e-4, atol=1e-4)
    cos = torch.nn.functional.cosine_similarity(a[:, None], b[None], dim=2)
    torch.testing.assert_close(S.similarity_matrix(a, b, "cosine"), cos, rtol=1e-5, atol=1e-5)
    assert S.similarity_matrix(a).shape == (5, 5)
    with pytest.raises(ValueError, match="expected embeddings"):
        S.similarity_matrix(a, torch.randn(3, 4))
    x = a.clone().requires_grad_(True)
    S.paired_similarity(x, a.flip(0)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_genuine_impostor_pairs():
    labels = ["a", "a", "b", "b", "b"]
    pairs, genuine = S.genuine_impostor_pairs(labels)
    assert pairs.shape == (10, 2) and pairs.dtype == np.int64 and np.all(pairs[:, 0] < pairs[:, 1])
    assert pairs.tolist() == [list(p) for p in zip(*np.triu_indices(5, 1))]  # row-major order
    assert genuine.dtype == bool and genuine.sum() == 1 + 3
    sub, gen = S.genuine_impostor_pairs(labels, max_impostors=2, seed=0)
    assert gen.sum() == 4 and (~gen).sum() == 2
    again, _ = S.genuine_impostor_pairs(labels, max_impostors=2, seed=0)
    assert np.array_equal(sub, again)
    same_rng, _ = S.genuine_impostor_pairs(labels, max_impostors=2, seed=np.random.default_rng(0))
    assert np.array_equal(sub, same_rng)
    with pytest.raises(ValueError, match="at least two samples of one identity"):
        S.genuine_impostor_pairs(["a", "b", "c"])
    with pytest.raises(ValueError, match="at least two samples to form pairs"):
        S.genuine_impostor_pairs(["a"])


def test_pair_similarities_match_the_matrix():
    g = torch.Generator().manual_seed(2)
    e = torch.randn(6, 16, generator=g)
    pairs, _ = S.genuine_impostor_pairs([0, 0, 1, 1, 2, 2])
    for metric in S.METRICS:
        full = S.similarity_matrix(e, metric=metric).double().numpy()[pairs[:, 0], pairs[:, 1]]
        np.testing.assert_allclose(S.pair_similarities(e, pairs, metric), full, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------ metrics, same numbers
#: EER, its threshold, AUC, TAR@FAR=0.1 and the ROC size/sums computed with the distance-based code before the change
#: (recognition.pair_indices + paired_distances, scores = metrics.scores_from_distances(d)) on the set below.
BEFORE = {
    "euclidean": (0.08922558922558922, -5.667869567871094, 0.9632903105125328, 0.9166666666666666, 631,
                  298.8215488215488, 590.6944444444443),
    "cosine": (0.058922558922558925, -0.6269239187240601, 0.9691358024691359, 0.9722222222222222, 631,
               298.6111111111111, 594.1666666666666),
}


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_metrics_give_the_same_numbers_as_before_the_convention(metric):
    rng = np.random.default_rng(14)
    labels = np.repeat(np.arange(12), 3)
    X = rng.normal(size=(12, 16))[labels] + 0.9 * rng.normal(size=(36, 16))
    pairs, genuine = S.genuine_impostor_pairs(labels)
    s = S.pair_similarities(torch.as_tensor(X, dtype=torch.float32), pairs, metric)
    eer, thr = M.eer(genuine, s)
    far, tar, _ = M.roc_curve(genuine, s)
    e0, t0, auc0, tar0, n0, far_sum0, tar_sum0 = BEFORE[metric]
    assert eer == pytest.approx(e0, abs=1e-12)
    # the cosine similarity is 1 - the cosine distance: same threshold, shifted by one
    assert thr == pytest.approx(t0 + (1.0 if metric == "cosine" else 0.0), abs=1e-5)
    assert M.roc_auc(genuine, s) == pytest.approx(auc0, abs=1e-12)
    assert float(M.tar_at_far(genuine, s, 0.1)) == pytest.approx(tar0, abs=1e-12)
    assert len(far) == n0 and far.sum() == pytest.approx(far_sum0) and tar.sum() == pytest.approx(tar_sum0)
