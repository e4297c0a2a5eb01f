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
