"""Difficulty calibration of the synthetic world (facelab.studies.synthetic_faces, chapter 02) on a stub world with
known answers."""

import numpy as np
import pandas as pd
import pytest
import torch

from facelab.studies import synthetic_faces as cal

from test_attacks import template_landmarks

S = 64


class StubWorld:
    """Identity k is a fixed smooth random texture; ``noise`` adds smooth random blobs of that scale on top."""

    def __init__(self, seed=0, size=S, device="cpu", identity_strength=1.0):
        self.seed, self.size, self.device, self.identity_strength = seed, size, torch.device(device), identity_strength

    def sample(self, identities, per_identity=1, generator=None, nuisance="none", noise=0.0, **_):
        ids = np.asarray(identities)
        textures = torch.stack([torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(int(k))) for k in ids])
        faces = torch.nn.functional.interpolate(textures, size=(S, S), mode="bilinear", align_corners=False)
        faces = 0.5 + self.identity_strength * (faces - 0.5)
        noise = float(noise[1] if isinstance(noise, tuple) else noise)
        blobs = torch.randn(len(ids), 3, 8, 8, generator=generator)     # nuisance at the scale of the identity
        blobs = torch.nn.functional.interpolate(blobs, size=(S, S), mode="bilinear", align_corners=False)
        images = (faces + noise * blobs).clamp(0, 1)

        class Batch:
            pass

        b = Batch()
        b.images, b.landmarks = images, template_landmarks(len(ids), S, S)
        b.labels = pd.DataFrame({"identity": ids})
        return b


def test_gallery_probe_split_and_rank1():
    ids = np.repeat(np.arange(3), 4)
    gallery, probes = cal.gallery_probe_split(ids, 1)
    assert gallery.tolist() == [0, 4, 8] and len(probes) == 9
    features = np.repeat(np.eye(3) * 10, 4, axis=0) + 0.01 * np.arange(12)[:, None]
    assert cal.nearest_neighbour_rank1(features, ids, 1) == 1.0
    wrong = features.copy()
    wrong[[1, 2, 3]] = features[[5, 6, 7]]                                # identity 0's probes copied from identity 1
    assert cal.nearest_neighbour_rank1(wrong, ids, 1) == pytest.approx(6 / 9)
    with pytest.raises(ValueError, match="no probes"):
        cal.gallery_probe_split(ids, 4)


def test_eigenfaces_rank1_separates_textures():
    world = StubWorld()
    clean = world.sample(np.repeat(np.arange(10), 4), generator=torch.Generator().manual_seed(0), noise=0.05)
    chips = cal._grey(clean.images)
    assert chips.shape == (40, 56, 56)
    assert cal.eigenfaces_rank1(chips, clean.labels["identity"].to_numpy(), 2, n_components=20) == 1.0


def test_calibrate_table_and_knobs():
    conditions = {"clean": {"noise": 0.02}, "noisy": {"noise": 0.6}, "noisy, spread 2x": {"noise": 0.6,
                                                                                         "identity_strength": 2.0}}
    table, feats = cal.calibrate(StubWorld(), conditions, n_identities=12, per_identity=4, n_gallery=2,
                                 embedder=None, n_components=20, chunk_identities=5, keep_features=True)
    assert list(table.index) == ["clean", "noisy", "noisy, spread 2x"]
    assert (table["images"] == 48).all() and np.allclose(table["chance"], 1 / 12)
    assert table.loc["clean", "eigenfaces (raw frame)"] == 1.0
    assert table.loc["noisy", "eigenfaces (raw frame)"] < 0.9                 # the nuisance makes it harder
    assert table.loc["noisy, spread 2x", "eigenfaces (raw frame)"] >= table.loc["noisy", "eigenfaces (raw frame)"]
    assert np.isnan(table.loc["clean", "dlib ResNet (aligned)"])             # no embedder given
    assert feats["clean"]["aligned"].shape == (48, 56, 56) and feats["clean"]["examples"].shape[0] == 4
    with pytest.raises(ValueError, match="exceed n_gallery"):
        cal.calibrate(StubWorld(), conditions, n_identities=4, per_identity=2, n_gallery=2, embedder=None)


def test_calibrate_with_an_embedder_and_dlib_detection_path():
    class PixelEmbedder:                                                  # the Embedder interface, enough for this
        template, input_size, embedding_size = "dlib-150", 32, 8

        def embed(self, chips, batch_size=64):
            return torch.nn.functional.adaptive_avg_pool2d(chips, 2).flatten(1)[:, :8]

    table = cal.calibrate(StubWorld(), {"clean": {"noise": 0.01}}, n_identities=6, per_identity=3, n_gallery=1,
                          embedder=PixelEmbedder(), detect_per_identity=1, n_components=5)
    row = table.loc["clean"]
    assert row["dlib ResNet (aligned)"] == 1.0
    assert 0.0 <= row["dlib HOG detection rate"] <= 1.0                   # textures are not faces: dlib may miss
    assert 0.0 <= row["dlib end-to-end (detect, align, embed)"] <= row["dlib HOG detection rate"] + 1e-9


def test_difficulty_table_quick_check():
    table = cal.difficulty_table(StubWorld(), n_identities=6, per_identity=4,
                                 settings={"clean": {"noise": 0.01}, "noisy": {"noise": 0.8}})
    assert list(table.columns) == ["setting", "rank1"] and list(table["setting"]) == ["clean", "noisy"]
    assert table.loc[0, "rank1"] == 1.0 and table.loc[1, "rank1"] < 1.0
    images = StubWorld().sample(np.repeat(np.arange(5), 3), generator=torch.Generator().manual_seed(0)).images
    assert cal.eigenfaces_rank1(images, np.repeat(np.arange(5), 3), 1, n_components=4) == 1.0
    with pytest.raises(ValueError, match="identity labels"):
        cal.eigenfaces_rank1(images, np.arange(3), 1)


def test_rank1_intervals_and_plot():
    table = cal.calibrate(StubWorld(), {"clean": {"noise": 0.02}, "noisy": {"noise": 0.6}}, n_identities=12,
                          per_identity=4, n_gallery=2, embedder=None, n_components=20)
    assert (table["probes"] == 24).all()
    iv = cal.rank1_intervals(table, ["eigenfaces (raw frame)"], formatted=False)
    est, lo, hi = (iv[c].to_numpy(float) for c in ("eigenfaces (raw frame)", "eigenfaces (raw frame)_lo",
                                                    "eigenfaces (raw frame)_hi"))
    assert np.all(lo <= est) and np.all(est <= hi) and hi[0] == pytest.approx(1.0) and lo[0] > 0.8   # 24/24
    from facelab.metrics import wilson_interval
    k = round(table.loc["noisy", "eigenfaces (raw frame)"] * 24)
    assert (lo[1], hi[1]) == pytest.approx(wilson_interval(k, 24))
    cells = cal.rank1_intervals(table)
    assert cells.loc["clean", "eigenfaces (raw frame)"].startswith("100.0 [") and cells.loc["clean", "dlib ResNet (aligned)"] == "-"
    assert list(cal.hardest_knobs(table, ["eigenfaces (raw frame)"], n=1)["eigenfaces (raw frame)"].index) == ["noisy"]
    import matplotlib
    matplotlib.use("Agg")
    fig = cal.plot_rank1(table, ["eigenfaces (aligned)", "eigenfaces (raw frame)"], title="stub")
    assert fig.axes[0].get_title() == "stub" and len(fig.axes[0].patches) == 4


def test_far_frr_with_identity_bootstrap():
    # 3 identities x 2 images; genuine pairs score 1, impostor pairs 0 except one pair of identities (0, 1) at 0.9
    ids = np.repeat(np.arange(3), 2)
    S = np.where(ids[:, None] == ids[None], 1.0, 0.0)
    S[np.ix_(ids == 0, ids == 1)] = 0.9
    S[np.ix_(ids == 1, ids == 0)] = 0.9
    sc = cal.VerificationScores(S, ids, threshold=0.5, name="toy")
    gen, imp = sc.pairs()
    assert len(gen) == 3 and len(imp) == 12
    r = cal.far_frr(sc, n_boot=200)
    assert r["far"] == pytest.approx(4 / 12) and r["frr"] == 0.0
    assert r["far_lo"] <= r["far"] <= r["far_hi"] and r["frr_lo"] == r["frr_hi"] == 0.0
    table = cal.verification_table({("toy faces", "toy"): sc}, n_boot=50)
    assert table.loc[("toy", "toy faces"), "FAR (%)"].startswith("33.3 [")
    assert table.loc[("toy", "toy faces"), "impostor pairs"] == 12
    with pytest.raises(ValueError, match="S must be"):
        cal.VerificationScores(S[:3], ids, 0.5)
    import matplotlib
    matplotlib.use("Agg")
    fig = cal.plot_similarity_distributions({("toy faces", "toy"): sc}, "toy")
    assert fig.axes[0].get_xlabel().startswith("toy similarity")
    with pytest.raises(ValueError, match="no scores"):
        cal.plot_similarity_distributions({("toy faces", "toy"): sc}, "other")


def test_landmark_crops_and_expression_agreement_table():
    images = torch.zeros(2, 3, 64, 64)
    images[:, :, 16:48, 16:48] = 1.0
    lm = torch.tensor([[16.0, 16.0], [47.0, 47.0]]).repeat(2, 34, 1)
    crops = cal._landmark_crops(images, lm, 32, 1.0)
    assert crops.shape == (2, 3, 32, 32) and float(crops[:, :, 8:24, 8:24].mean()) > 0.99

    class World:                                                    # a real world is used by the chapter; here
        def sample(self, identities, expression, nuisance, generator):   # the nets' predictions are only counted
            from facelab.synth import FaceWorld
            return FaceWorld(seed=0, size=64).sample(identities=identities, expression=expression,
                                                     generator=generator)
    table, raw = cal.expression_agreement(World(), per_emotion=1)
    assert list(table.index)[-1] == "all" and table.loc["all", "n"] == 7 and len(raw["labels"]) == 7
    for net in ("face-api", "FER2013"):
        assert 0 <= table.loc["all", f"{net}_lo"] <= table.loc["all", net] <= table.loc["all", f"{net}_hi"] <= 1
    cells = cal.agreement_cells(table)
    assert cells.shape == (8, 2) and "[" in cells.loc["all", "face-api"]
    with pytest.raises(ValueError, match="per_emotion"):
        cal.expression_agreement(World(), per_emotion=0)


def test_style_montage_pairs_the_styles():
    images, titles = cal.style_montage(seed=0, identities=[0, 1], size=64)
    assert images.shape == (4, 3, 64, 64) and titles[0].startswith("cartoon") and titles[2].startswith("photo")
