"""facelab.recognition (verify, Gallery: enrol/remove/identify/open-set, FaceRecognizer) and chapter 01's study module
(facelab.studies.face_recognition: the benchmark protocol, tables, figures). Scores are similarities throughout."""

import importlib.util

import numpy as np
import pytest
import torch

from facelab import recognition as R
from facelab.studies import face_recognition as FR

HAS_FAISS = importlib.util.find_spec("faiss") is not None


def _brute_topk(G, labels, q, k, metric):
    """Reference: similarities to every template, best template per identity, sorted best first."""
    S = R.similarities(q, G, metric).numpy()
    ids = sorted(set(labels), key=list(labels).index)
    per_id = np.stack([S[:, [i for i, l in enumerate(labels) if l == ident]].max(1) for ident in ids], 1)
    order = np.argsort(-per_id, axis=1, kind="stable")[:, :k]
    return np.asarray(ids, dtype=object)[order], np.take_along_axis(per_id, order, 1)


# ------------------------------------------------------------------------------------------------ verify
def test_verify_euclidean_and_cosine():
    same, s = R.verify([0.0, 0.0], [[0.3, 0.4], [3.0, 4.0]], "euclidean", -0.6)
    assert same.tolist() == [True, False]
    np.testing.assert_allclose(s.numpy(), [-0.5, -5.0], rtol=1e-6)  # similarity = -L2 distance
    assert R.verify([0.0, 0.0], [[0.3, 0.4], [3.0, 4.0]])[0].tolist() == [True, False]  # default: dlib's -0.6
    same, s = R.verify([[1.0, 0.0], [1.0, 0.0]], [[2.0, 0.0], [0.0, 3.0]], "cosine", 0.5)
    np.testing.assert_allclose(s.numpy(), [1.0, 0.0], atol=1e-6)  # scale-invariant; orthogonal -> 0
    assert same.tolist() == [True, False]


def test_pairwise_matches_paired():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 16, generator=g), torch.randn(7, 16, generator=g)
    for metric in R.METRICS:
        D = R.pairwise_distances(a, b, metric)
        assert D.shape == (5, 7)
        np.testing.assert_allclose(D[2].numpy(), R.paired_distances(a[2], b, metric).numpy(), rtol=1e-5, atol=1e-5)
        S = R.similarities(a, b, metric)
        np.testing.assert_allclose(S[2].numpy(), R.paired_similarities(a[2], b, metric).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(R.pairwise_distances(a, b).numpy(), torch.cdist(a, b).numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(R.similarities(a, b).numpy(), -torch.cdist(a, b).numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(R.similarities(a, b, "cosine").numpy(),
                               torch.nn.functional.cosine_similarity(a[:, None], b[None], dim=2).numpy(), atol=1e-5)


@pytest.mark.parametrize(
    "a, b, match",
    [
        (np.zeros(4), np.zeros(5), "embedding sizes differ"),
        (np.zeros((2, 4)), np.zeros((3, 4)), "same number of rows"),
        (np.zeros((2, 2, 2)), np.zeros(4), "shape \\(n, d\\)"),
        (np.array([np.nan, 1.0]), np.zeros(2), "NaN"),
    ],
)
def test_verify_bad_input(a, b, match):
    with pytest.raises(ValueError, match=match):
        R.verify(a, b)


def test_unknown_metric():
    with pytest.raises(ValueError, match="distance must be one of"):
        R.verify(np.zeros(2), np.zeros(2), distance="manhattan")


# ------------------------------------------------------------------------------------------------ gallery
@pytest.fixture
def data():
    g = torch.Generator().manual_seed(1)
    G = torch.randn(60, 32, generator=g)
    labels = [f"id{i % 20}" for i in range(60)]  # 20 identities, 3 templates each
    q = torch.randn(9, 32, generator=g)
    return G, labels, q


@pytest.mark.parametrize("metric", R.METRICS)
@pytest.mark.parametrize("chunk", [2**24, 50])  # 50 elements forces one probe per block
def test_identify_matches_brute_force(data, metric, chunk):
    G, labels, q = data
    gal = R.Gallery(metric=metric, chunk_elements=chunk)
    gal.enroll(G, labels)
    assert len(gal) == 20 and gal.n_templates == 60 and gal.embedding_size == 32
    res = gal.identify(q, k=4)
    ref_labels, ref_s = _brute_topk(G, labels, q, 4, metric)
    assert res.labels.shape == (9, 4)
    np.testing.assert_array_equal(res.labels, ref_labels)
    np.testing.assert_allclose(res.scores.numpy(), ref_s, rtol=1e-4, atol=1e-4)
    assert torch.all(res.scores[:, :-1] >= res.scores[:, 1:])  # best first
    assert all(len(set(row)) == 4 for row in res.labels)  # distinct identities
    assert res.accepted.all()


def test_identify_unique_identities_and_k_cap():
    gal = R.Gallery(metric="euclidean")
    gal.enroll(np.eye(3), ["a", "b", "c"])
    res = gal.identify(np.array([[0.9, 0.1, 0.0]]), k=10)
    assert res.labels.tolist() == [["a", "b", "c"]]  # k capped at 3 identities
    assert res.scores[0, 0] == pytest.approx(-res.distances[0, 0].item())
    frame = res.to_frame()
    assert list(frame.columns[:3]) == ["rank1", "rank2", "rank3"] and frame.loc[0, "predicted"] == "a"
    assert frame.loc[0, "s1"] == pytest.approx(res.scores[0, 0].item())


def test_open_set_reject():
    gal = R.Gallery(metric="euclidean", threshold=-0.6, unknown="unknown")  # a similarity: L2 distance <= 0.6
    gal.enroll([[0.0, 0.0], [1.0, 0.0]], ["ada", "bob"])
    res = gal.identify([[0.1, 0.0], [5.0, 5.0], [0.95, 0.0]])
    assert res.accepted.tolist() == [True, False, True]
    assert res.predicted.tolist() == ["ada", "unknown", "bob"]
    assert res.labels[1, 0] == "bob"  # the top-k list itself is kept for rejected probes
    # per-call threshold overrides
    assert gal.identify([[5.0, 5.0]], threshold=-100).predicted.tolist() == ["bob"]


def test_cosine_is_scale_invariant():
    gal = R.Gallery(metric="cosine", threshold=0.9)
    gal.enroll([[1.0, 0.0], [0.0, 1.0]], ["x", "y"])
    res = gal.identify([[10.0, 0.5]])
    assert res.predicted.tolist() == ["x"]
    assert res.scores[0, 0].item() == pytest.approx(10 / np.hypot(10, 0.5), rel=1e-5)


def test_duplicate_policies():
    gal = R.Gallery()
    gal.enroll([[0.0, 0.0], [0.1, 0.0]], ["a", "a"])  # two templates in one call are fine
    assert len(gal) == 1 and gal.n_templates == 2
    with pytest.raises(R.DuplicateEnrolmentError, match="already enrolled: 'a'"):
        gal.enroll([[5.0, 5.0]], ["a"])
    app = R.Gallery(duplicates="append")
    app.enroll([[0.0, 0.0]], ["a"])
    app.enroll([[5.0, 5.0]], ["a"])
    assert len(app) == 1 and app.n_templates == 2
    assert app.identify([[5.0, 5.1]]).distances[0, 0].item() == pytest.approx(0.1, abs=1e-4)
    rep = R.Gallery(duplicates="replace")
    rep.enroll([[0.0, 0.0], [9.0, 9.0]], ["a", "b"])
    rep.enroll([[5.0, 5.0]], ["a"])
    assert rep.n_templates == 2 and set(rep.labels) == {"a", "b"}
    assert rep.identify([[0.0, 0.0]]).distances[0, 0].item() == pytest.approx(np.hypot(5, 5), rel=1e-4)


def test_remove():
    gal = R.Gallery()
    gal.enroll(np.eye(4), ["a", "b", "a", "c"])
    assert gal.remove("a") == 2
    assert gal.labels == ["b", "c"] and gal.n_templates == 2 and "a" not in gal
    assert gal.identify(np.eye(4)[0]).labels[0, 0] in {"b", "c"}
    with pytest.raises(KeyError, match="not enrolled"):
        gal.remove("a")
    gal.remove("b")
    gal.remove("c")
    with pytest.raises(R.EmptyGalleryError, match="empty"):
        gal.identify(np.eye(4)[0])


def test_gallery_errors():
    gal = R.Gallery()
    with pytest.raises(R.EmptyGalleryError, match="enroll"):
        gal.identify(np.zeros(4))
    gal.enroll(np.zeros((2, 4)), ["a", "b"])
    with pytest.raises(R.GalleryError, match="size 5 but the gallery holds 4-d"):
        gal.enroll(np.zeros((1, 5)), ["c"])
    with pytest.raises(R.GalleryError, match="size 3 but the gallery holds 4-d"):
        gal.identify(np.zeros(3))
    with pytest.raises(R.GalleryError, match="2 embeddings but 1 labels"):
        gal.enroll(np.ones((2, 4)), ["x"])
    with pytest.raises(ValueError, match="positive integer"):
        gal.identify(np.zeros(4), k=0)
    with pytest.raises(ValueError, match="duplicates must be"):
        R.Gallery(duplicates="ignore")


@pytest.mark.skipif(not HAS_FAISS, reason="faiss is optional and not installed")
@pytest.mark.parametrize("metric", R.METRICS)
def test_faiss_backend_agrees(data, metric):
    G, labels, q = data
    ref = R.Gallery(metric=metric)
    ref.enroll(G, labels)
    fa = R.Gallery(metric=metric, backend="faiss")
    fa.enroll(G, labels)
    a, b = ref.identify(q, k=3), fa.identify(q, k=3)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.scores.numpy(), b.scores.numpy(), rtol=1e-4, atol=1e-4)


def test_faiss_missing_is_clear(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake(name, *args, **kwargs):
        if name == "faiss":
            raise ImportError("no faiss")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    gal = R.Gallery(backend="faiss")
    gal.enroll(np.eye(2), ["a", "b"])
    with pytest.raises(ImportError, match="faiss-cpu"):
        gal.identify(np.eye(2))
    auto = R.Gallery(backend="auto")
    auto.enroll(np.eye(2), ["a", "b"])
    assert auto.identify(np.eye(2)).labels[:, 0].tolist() == ["a", "b"]  # falls back to torch


# ------------------------------------------------------------------------------------------------ protocol
def test_pair_indices_and_scores():
    labels = ["a", "a", "b", "b", "b"]
    i, j, same = R.pair_indices(labels)
    assert len(i) == 10 and same.sum() == 1 + 3  # C(2,2) + C(3,2)
    assert np.all(i < j)
    i2, j2, same2 = R.pair_indices(labels, max_impostor=2, rng=np.random.default_rng(0))
    assert same2.sum() == 4 and (same2 == 0).sum() == 2
    X = np.array([[0.0], [0.1], [1.0], [1.1], [1.2]])
    s = R.pair_scores(X, i, j, "euclidean")
    np.testing.assert_allclose(s, -np.abs(X[i, 0] - X[j, 0]), atol=1e-6)
    s_callable = R.pair_scores(X, i, j, lambda A, B: np.abs(A - B).sum(1))
    np.testing.assert_allclose(s_callable, s, atol=1e-6)
    with pytest.raises(ValueError, match="at least two samples of one identity"):
        R.pair_indices(["a", "b", "c"])


def test_split_gallery_probes():
    labels = np.repeat(np.arange(5), 3)
    gal, probes = FR.split_gallery_probes(labels, n_gallery=1, rng=np.random.default_rng(0))
    assert len(gal) == 5 and len(probes) == 10
    assert sorted(labels[gal].tolist()) == list(range(5))
    assert not set(gal) & set(probes)
    with pytest.raises(ValueError, match="need more than n_gallery"):
        FR.split_gallery_probes([0, 0, 1], n_gallery=1)


# ------------------------------------------------------------------------------------------------ recognizer
class _FakeFace:
    def __init__(self, box):
        self.box = box


class _FakeEmbedder(torch.nn.Module):
    """Embeds a crop as its mean colour: enough to test the plumbing without real models."""

    distance, threshold, embedding_size, input_size = "euclidean", -0.1, 3, 8  # threshold: a similarity

    def embed(self, crops):
        return crops.float().mean(dim=(2, 3))


@pytest.fixture
def fake_pipeline(monkeypatch):
    def detect_faces(image, backend="dlib-hog", **options):
        # a "face" is any non-black image; two faces when the image is wide
        if image.max() == 0:
            return []
        h, w = image.shape[:2]
        return [_FakeFace((0, 0, w // 2, h)), _FakeFace((w // 2, 0, w, h))] if w > h else [_FakeFace((0, 0, w, h))]

    def align_faces(image, faces, template=None):
        crops = []
        for f in faces:
            x0, y0, x1, y1 = f.box
            crops.append(torch.from_numpy(image[y0:y1, x0:x1]).permute(2, 0, 1).float() / 255)
        return torch.stack([c[:, :8, :8] for c in crops])

    import types

    monkeypatch.setitem(__import__("sys").modules, "facelab.detect", types.SimpleNamespace(detect_faces=detect_faces))
    monkeypatch.setitem(__import__("sys").modules, "facelab.align", types.SimpleNamespace(align_faces=align_faces))
    return R.FaceRecognizer(detector="fake", embedder=_FakeEmbedder())


def test_face_recognizer_with_stub_modules(fake_pipeline):
    rec = fake_pipeline
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 255
    also_red = red.copy()
    blue = np.zeros((16, 16, 3), np.uint8)
    blue[..., 2] = 255
    faces, emb = rec.embed_image(red)
    assert len(faces) == 1 and emb.shape == (1, 3)
    np.testing.assert_allclose(emb[0].numpy(), [1, 0, 0])
    same, s = rec.verify(red, also_red)
    assert same is True and s == pytest.approx(0.0)
    same, s = rec.verify(red, blue)
    assert same is False and s == pytest.approx(-np.sqrt(2), rel=1e-5)
    # a wide image holds two faces: one embedding each
    wide = np.concatenate([blue, blue[:, :8]], axis=1)
    faces, emb = rec.embed_image(wide)
    assert len(faces) == 2 and emb.shape == (2, 3)
    faces, emb = rec.embed_image(np.zeros((16, 16, 3), np.uint8))
    assert faces == [] and emb.shape == (0, 3)


def test_face_recognizer_no_face_names_the_image(fake_pipeline):
    black = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(R.NoFaceError, match="no face found in image_b"):
        fake_pipeline.verify(np.full((16, 16, 3), 200, np.uint8), black)
    with pytest.raises(ValueError, match="uint8 RGB"):
        fake_pipeline.embed_image(np.zeros((16, 16)))


def test_face_recognizer_rejects_non_embedder():
    with pytest.raises(TypeError, match="must provide .embed"):
        R.FaceRecognizer(embedder=object())


# ------------------------------------------------------------------------------------------------ comparison
def test_compare_methods_orders_good_and_bad_features():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(8), 4)
    centres = rng.normal(size=(8, 16))
    good = centres[labels] + 0.05 * rng.normal(size=(32, 16))
    noise = rng.normal(size=(32, 16))
    hist = np.abs(good) / np.abs(good).sum(1, keepdims=True)
    cmp = FR.compare_methods({"good": (good, "euclidean"), "noise": (torch.from_numpy(noise), "cosine"),
                             "hist": (hist, "chi2")}, labels, fars=(0.1,), rng=np.random.default_rng(1))
    t = cmp.table
    assert list(t.index) == ["good", "noise", "hist"]
    assert t.loc["good", "AUC"] == 1.0 and t.loc["good", "rank-1"] == 1.0 and t.loc["good", "EER"] == 0.0
    assert t.loc["noise", "AUC"] < 0.8
    assert t.loc["good", "n_genuine"] == 8 * 6 and t.loc["good", "n_impostor"] == 32 * 31 // 2 - 48
    assert len(cmp.gallery) == 8 and len(cmp.probes) == 24
    assert cmp.id_scores["good"].shape == (24, 8)
    far, tar, _ = cmp.roc("hist")
    assert far[0] == 0 and tar[-1] == 1
    k, rate = cmp.cmc("noise")
    assert len(k) == 8 and rate[-1] == 1.0
    with pytest.raises(ValueError, match="rows but there are"):
        FR.compare_methods({"x": (good[:5], "euclidean")}, labels)
    with pytest.raises(ValueError, match="distance must be one of"):
        FR.compare_methods({"x": (good, "l1")}, labels)
    assert np.all(cmp.pair_scores["good"] <= 0)  # -L2
    np.testing.assert_array_equal(cmp.rank1_correct("good"), np.ones(24, bool))


def test_aligned_chips_shapes_and_errors():
    pytest.importorskip("facelab.align")
    imgs = torch.rand(2, 3, 112, 112)
    from facelab.align import ARCFACE_112

    # landmarks whose eyes/nose/mouth sit exactly on the template give the identity warp
    lm = torch.zeros(2, 68, 2)
    from facelab.core.landmarks import LANDMARKS

    groups = ["eye_right", "eye_left", "nose_tip", "mouth_corners", "mouth_corners"]
    for k, (group, point) in enumerate(zip(groups, ARCFACE_112)):
        idx = LANDMARKS[group] if k < 3 else LANDMARKS[group][k - 3:k - 2]
        lm[:, idx] = torch.tensor(point, dtype=torch.float32)
    chips = R.aligned_chips(imgs, lm, "arcface-112")
    assert chips.shape == (2, 3, 112, 112)
    np.testing.assert_allclose(chips[:, :, 20:90, 20:90].numpy(), imgs[:, :, 20:90, 20:90].numpy(), atol=1e-3)
    assert FR.grey_chips(imgs, lm, size=32).shape == (2, 32, 32)
    with pytest.raises(ValueError, match="landmarks \\(N, 68, 2\\)"):
        R.aligned_chips(imgs, lm[:, :5])


# ------------------------------------------------------------------------------------------------ figures
def test_figure_helpers():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), 3)
    good = rng.normal(size=(5, 8))[labels] + 0.1 * rng.normal(size=(15, 8))
    cmp = FR.compare_methods({"good": (good, "euclidean")}, labels)
    fig = FR.plot_comparison(cmp, max_rank=4)
    assert isinstance(fig, Figure) and len(fig.axes) == 3 and len(fig.axes[2].lines) == 1
    s = cmp.pair_scores["good"]
    fig = FR.plot_threshold_tradeoff(cmp.pair_labels, s, threshold=float(np.median(s)), published=-0.6)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    _, axes = plt.subplots(1, 2)
    assert FR.plot_threshold_tradeoff(cmp.pair_labels, s, threshold=-0.6, ax=axes) is axes[0].figure
    with pytest.raises(ValueError, match="2 axes"):
        FR.plot_threshold_tradeoff(cmp.pair_labels, s, threshold=-0.6, ax=axes[0])
    fig = FR.plot_similarity_heatmap(np.array([[0.0, -0.5], [-0.5, 0.0]]), ["a", "b"], threshold=-0.6)
    assert len(fig.axes[0].patches) == 2  # both off-diagonal cells reach the threshold
    face = _FakeFace((1, 1, 5, 5))
    face.landmarks68 = np.ones((68, 2))
    fig = FR.plot_faces(np.zeros((8, 8, 3), np.uint8), [face])
    assert len(fig.axes[0].patches) == 1 and len(fig.axes[0].collections) == 1
    plt.close("all")


def test_labelled_pairs_and_partial_table():
    S = np.array([[0.0, -0.3, -0.9], [-0.3, 0.0, -0.7], [-0.9, -0.7, 0.0]])
    pairs = FR.labelled_pairs(["a1", "a2", "b"], ["A", "A", "B"], S, threshold=-0.6)
    assert pairs[["a", "b"]].values.tolist() == [["a1", "a2"], ["a1", "b"], ["a2", "b"]]
    assert pairs["same person"].tolist() == [True, False, False] and pairs["accepted"].tolist() == [True, False, False]
    np.testing.assert_allclose(pairs["similarity"], [-0.3, -0.9, -0.7])
    t = FR.partial_face_table(S, ["a1", "a2", "b"], rows=["a1", "b"], columns=["a1", "a2"])
    assert t.loc["a1", "a2"] == -0.3 and t.iloc[0, -1] == pytest.approx(-0.3)  # self-similarity left out
    assert t.iloc[1, -1] == pytest.approx(-0.8)


def test_comparison_intervals_contain_the_estimates():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 4)
    X = rng.normal(size=(6, 8))[labels] + 0.8 * rng.normal(size=(24, 8))
    cmp = FR.compare_methods({"x": (X, "euclidean"), "noise": (rng.normal(size=(24, 8)), "cosine")}, labels,
                             fars=(0.1,), rng=np.random.default_rng(1))
    ci = FR.comparison_intervals(cmp, n_boot=200, seed=0)
    assert list(ci.columns) == ["AUC", "EER", "TAR@FAR=0.1", "rank-1", "rank-5", "n_genuine", "n_impostor", "n_probes"]
    assert list(ci.index) == ["x", "noise"] and ci.loc["x", "n_probes"] == 18
    est, lo, hi = (float(v) for v in ci.loc["x", "AUC"].replace("[", "").replace("]", "").replace(",", "").split())
    assert lo <= est <= hi and est == pytest.approx(cmp.table.loc["x", "AUC"], abs=1e-3)
    acc = FR.accuracy_table(cmp, {"x": -1.0}, n_boot=100)
    assert list(acc.columns) == ["synthetic, published threshold", "synthetic, best threshold"]


def test_threshold_widget_updates_its_snapshot():
    pytest.importorskip("ipywidgets")
    import matplotlib

    matplotlib.use("Agg")
    labels = np.array([1, 1, 0, 0, 0])
    s = np.array([-0.2, -0.3, -0.5, -0.7, -0.9])
    box = FR.threshold_widget(labels, s, "toy", published=-0.6)
    slider, out = box.children
    assert slider.value == pytest.approx(-0.6) and slider.min <= -0.9 and slider.max >= -0.2
    assert len(out.outputs) == 1
    slider.value = -0.4
    assert len(out.outputs) == 1  # replaced, not appended


# ------------------------------------------------------------------------------------------------ real models
def test_face_recognizer_on_real_photos():
    """The whole pipeline with real models: Obama matches Obama, not Grace Hopper; no face is a clear error."""
    from facelab import assets
    from facelab.io import load_image

    photos = assets.fetch("face-recognition-test-images")
    rec = R.FaceRecognizer(detector="dlib-hog", embedder="dlib-resnet", detector_options={"max_side": 640})
    assert rec.distance == "euclidean" and rec.threshold == -0.6
    obama2, hopper = load_image(photos / "obama2.jpg"), load_image(assets.fetch("grace-hopper"))
    faces, emb = rec.embed_image(obama2)
    assert len(faces) == 1 and emb.shape == (1, 128)
    same, s = rec.verify(photos / "obama.jpg", obama2)  # paths work too
    assert same is True and s > -0.5
    same, s = rec.verify(obama2, hopper)
    assert same is False and s < -0.6
    with pytest.raises(R.NoFaceError, match="no face found in image_b"):
        rec.verify(obama2, np.full((200, 200, 3), 128, np.uint8))


def test_labelled_faces_picks_largest_face_and_every_group_face():
    from types import SimpleNamespace

    from facelab.recognition import NoFaceError
    from facelab.studies.face_recognition import labelled_faces

    face = lambda size: SimpleNamespace(size=size)
    e = lambda n: torch.arange(n * 3, dtype=torch.float32).view(n, 3)
    det = {"a": ([face(10), face(50)], e(2)), "grp": ([face(5), face(6), face(7)], e(3)), "empty": ([], e(0))}
    out = labelled_faces(det, identity={"a": "Alice", "grp": "?", "empty": "?"},
                         group={"a": False, "grp": True, "empty": True})
    assert out.names == ["a", "grp-1", "grp-2", "grp-3"]
    assert out.identities == ["Alice", "grp-1", "grp-2", "grp-3"]
    assert out.embeddings.shape == (4, 3) and out.embeddings[0].tolist() == [3.0, 4.0, 5.0]   # the larger face
    assert out.faces[0] == ("a", det["a"][0][1])
    with pytest.raises(NoFaceError, match="'b'"):
        labelled_faces({"b": ([], e(0))}, identity={"b": "Bob"}, group={"b": False})
