"""The descriptor bank (facelab.affect.bank) and the landmark descriptor."""

import numpy as np
import pytest
import torch

from facelab import checkpoints
from facelab.affect import bank as B
from facelab.affect import descriptors as D


def test_normalise_landmarks_removes_position_rotation_scale():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(1, 68, 2)) * 10 + 50
    a = np.deg2rad(20)
    R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    moved = (pts[0] @ R.T) * 2.5 + np.array([7.0, -3.0])
    both = np.concatenate([pts, moved[None]])
    s = D.normalise_landmarks(both)
    assert s.shape == (2, 136)
    np.testing.assert_allclose(s[0], s[1], atol=1e-5)
    r = s[0].reshape(68, 2)
    assert np.sqrt((r ** 2).sum(1).mean()) == pytest.approx(1.0, abs=1e-5)
    eye = r[42:48].mean(0) - r[36:42].mean(0)
    assert abs(eye[1]) < 1e-5 and eye[0] > 0                # eye line horizontal
    nan = D.normalise_landmarks(np.full((1, 68, 2), np.nan))
    assert np.isnan(nan).all()
    with pytest.raises(ValueError, match=r"expected \(T, 68, 2\) landmarks"):
        D.normalise_landmarks(np.zeros((3, 5, 2)))


def test_landmark_descriptors_mark_missing_faces_and_cache(tmp_path):
    from facelab.affect import AffectCorpus

    clip = AffectCorpus(1, seed=0, speech=False).clip(0)
    frames = clip.frames[:4].clone()
    frames[2] = 0.0                                          # a black frame: no face
    cache = D.DescriptorCache(tmp_path)
    lm = D.landmark_descriptors(frames, cache=cache)
    assert lm.present.tolist() == [True, True, False, True] and lm.n_missing == 1
    assert lm.points.shape == (4, 68, 2) and lm.shape.shape == (4, 136)
    assert np.isnan(lm.shape[2]).all() and np.isfinite(lm.shape[[0, 1, 3]]).all()
    err = np.abs(lm.points[0] - clip.landmarks[0].numpy()).mean()
    assert err < 6.0                                         # pixels, on a 112-pixel frame
    again = D.landmark_descriptors(frames, cache=cache)
    assert cache.hits == 1 and np.array_equal(again.points, lm.points, equal_nan=True)
    with pytest.raises(ValueError, match="no frames"):
        D.landmark_descriptors(frames[:0])


def test_projection_and_deformation():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5)) @ np.diag([5, 3, 1, 0.1, 0.01])
    p = B.Projection.fit(X, 2, standardise=False)
    Z = p(X)
    assert Z.shape == (200, 2) and p.explained.sum() > 0.95
    assert np.isnan(p(np.full((1, 5), np.nan))).all()
    with pytest.raises(ValueError, match="at least 2 complete rows"):
        B.Projection.fit(np.full((3, 5), np.nan), 2)
    s = np.arange(12, dtype=float).reshape(4, 3)
    np.testing.assert_allclose(B.deformation(s, "first")[0], 0)
    np.testing.assert_allclose(np.median(B.deformation(s), 0), 0)
    assert np.isnan(B.deformation(np.full((2, 3), np.nan))).all()


def test_settings_for_profiles():
    q, f = B.settings_for("quick"), B.settings_for("full")
    assert q["corpus"]["n_clips"] < f["corpus"]["n_clips"] and q["bank_version"] == B.BANK_VERSION
    with pytest.raises(ValueError, match="profile must be 'quick' or 'full'"):
        B.settings_for("medium")


def test_committed_quick_bank_loads_without_computing():
    bank = B.load_bank("quick", allow_compute=False)
    s = bank.settings
    assert s == B.settings_for("quick")
    n = s["corpus"]["n_clips"]
    assert bank.n_clips == n and set(np.unique(bank.frames["clip"])) == set(range(n))
    F = len(bank.frames["label"])
    for k, d in (("faceapi_probs", 7), ("fer_probs", 7), ("net", s["pca"]["net"]), ("shape", s["pca"]["shape"]),
                 ("deform", s["pca"]["deform"])):
        assert bank.frames[k].shape == (F, d)
    ok = bank.frames["present"]
    np.testing.assert_allclose(bank.frames["faceapi_probs"][ok].sum(1), 1, atol=0.02)
    assert bank.frames["label"].min() >= 0 and bank.frames["label"].max() <= 7
    assert set(np.unique(bank.clips["ah"])) == {0, 1}
    assert bank.clips["voice"].shape == (n, 88) and bank.clips["text_asr"].shape == (n, s["pca"]["text"])
    assert (bank.clips["wer_words"] > 0).all()
    assert len(bank.per_clip("label")) == n
    M = s["n_mimicry"]
    assert bank.mimicry["mim_target"].shape == (M, 6) and len(bank.mimicry_per_clip("mim_deform")) == M
    assert checkpoints.checkpoint_path("affect_descriptors_quick").stat().st_size < 3_000_000


def test_changed_settings_refuse_without_computing(monkeypatch):
    monkeypatch.setitem(B.QUICK, "n_mimicry", 3)
    with pytest.raises(checkpoints.CheckpointError, match="other settings"):
        B.load_bank("quick", allow_compute=False)


def test_compute_bank_tiny(tmp_path):
    s = B.settings_for("quick")
    s = {**s, "corpus": {**s["corpus"], "n_clips": 2}, "n_mimicry": 1,
         "calibration": {"seed": 1, "n_clips": 2, "n_sentences": 30}}
    state, log = B.compute_bank(s, cache=D.DescriptorCache(tmp_path), progress=False)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    assert state["ah"].shape == (2,) and state["mim_target"].shape == (1, 6)
    assert state["net"].shape[1] == s["pca"]["net"] and log["n_frames"] == state["label"].numel()
    assert len(log["asr_examples"]) == 2
    bank = B._to_bank(state, {"settings": s, "log": log})
    assert bank.n_clips == 2 and bank.frames["present"].dtype == bool
