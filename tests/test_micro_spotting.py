"""Optical flow, MDMD / LBP spotting on a clip with known expressions, and the MEGC evaluation."""

import numpy as np
import pandas as pd
import pytest

from _micro_helpers import StubWorld
from facelab.micro.corpus import render_videos
from facelab.micro.flow import (crop_faces, face_box, face_regions, onset_apex_flow, optical_flow, to_gray_uint8)
from facelab.micro.spotting import (interval_iou, lbp_histograms, lbp_signal, mdmd_signal, megc_evaluate,
                                    spot_intervals)


def _texture(size=64, seed=0):
    import cv2

    rng = np.random.default_rng(seed)
    t = cv2.GaussianBlur(rng.uniform(0, 255, (size, size)).astype(np.float32), (0, 0), 2.5)
    return cv2.normalize(t, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_flow_recovers_a_known_shift(method):
    import cv2

    a = _texture(96)
    b = cv2.warpAffine(a, np.float32([[1, 0, 1.5], [0, 1, -1.0]]), (96, 96), borderMode=cv2.BORDER_REFLECT)
    f = optical_flow(a, b, method)
    assert f.shape == (96, 96, 2)
    inner = f[20:-20, 20:-20].reshape(-1, 2)
    np.testing.assert_allclose(np.median(inner, 0), [1.5, -1.0], atol=0.3)


def test_flow_bad_input():
    a = _texture(32)
    with pytest.raises(ValueError, match="same shape"):
        optical_flow(a, a[:16])
    with pytest.raises(ValueError, match="uint8"):
        optical_flow(a.astype(float), a.astype(float))
    with pytest.raises(ValueError, match="method"):
        optical_flow(a, a, "lucas")
    with pytest.raises(ValueError, match=r"\(T, 3, H, W\)"):
        to_gray_uint8(np.zeros((4, 5)))


def test_iou_and_megc_counts():
    assert interval_iou((0, 9), (0, 9)) == 1.0
    assert interval_iou((0, 9), (5, 14)) == pytest.approx(5 / 15)
    assert interval_iou((0, 4), (10, 14)) == 0.0
    truth = pd.DataFrame({"video": ["a", "a", "b"], "kind": ["micro", "macro", "micro"],
                          "onset": [10, 50, 5], "offset": [20, 90, 15]})
    pred = pd.DataFrame({"video": ["a", "a", "a", "b"], "kind": ["micro", "micro", "macro", "micro"],
                         "onset": [11, 60, 55, 30], "offset": [21, 70, 95, 40]})
    r = megc_evaluate(pred, truth)
    # micro: (11,21) matches a/(10,20) -> TP; (60,70) FP; b/(30,40) FP; b/(5,15) missed
    assert r.loc["micro", ["TP", "n_pred", "n_true"]].tolist() == [1, 3, 2]
    assert r.loc["macro", "TP"] == 1  # IoU((55,95),(50,90)) = 36/46 >= 0.5
    assert r.loc["overall", ["TP", "n_pred", "n_true"]].tolist() == [2, 4, 3]
    assert r.loc["overall", "F1"] == pytest.approx(2 * 2 / 7)
    assert r.loc["micro", "precision"] == pytest.approx(1 / 3) and r.loc["micro", "recall"] == pytest.approx(0.5)
    # a prediction in another video never matches
    r2 = megc_evaluate(pred.assign(video="zzz"), truth)
    assert r2.loc["overall", "TP"] == 0


def test_megc_edge_cases():
    truth = pd.DataFrame({"kind": ["micro"], "onset": [0], "offset": [9]})
    empty = pd.DataFrame({"kind": [], "onset": [], "offset": []})
    r = megc_evaluate(empty, truth)
    assert np.isnan(r.loc["micro", "precision"]) and r.loc["micro", "recall"] == 0.0
    r = megc_evaluate(truth, empty)
    assert np.isnan(r.loc["micro", "recall"]) and r.loc["micro", "precision"] == 0.0
    assert np.isnan(r.loc["macro", "F1"])
    # one prediction cannot match two truths
    two = pd.DataFrame({"kind": ["micro", "micro"], "onset": [0, 0], "offset": [9, 9]})
    assert megc_evaluate(truth, two).loc["micro", "TP"] == 1
    with pytest.raises(ValueError, match="kind"):
        megc_evaluate(truth.assign(kind="blink"), truth)
    with pytest.raises(ValueError, match="lacks columns"):
        megc_evaluate(truth.drop(columns="offset"), truth)
    with pytest.raises(ValueError, match="offset < onset"):
        megc_evaluate(truth, truth.assign(offset=-1))


@pytest.fixture(scope="module")
def clip():
    world = StubWorld(64)
    events = [{"onset": 20, "apex": 25, "offset": 31, "aus": {"AU12": 0.5, "AU06": 0.4}},
              {"onset": 80, "apex": 95, "offset": 115, "aus": {"AU04": 0.9, "AU15": 0.8}}]
    (frames, lms), = render_videos(world, 0, [{"n_frames": 150, "events": events, "blinks": [55], "levels": 8}])
    gray = to_gray_uint8(frames)
    box = face_box(lms)
    return crop_faces(gray, box, 64), face_regions(lms, box, 64), events


def test_regions_inside_crop(clip):
    crops, regions, _ = clip
    assert crops.shape == (150, 64, 64) and crops.dtype == np.uint8
    for name, (x0, y0, x1, y1) in regions.items():
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64, name
    assert regions["left_brow"][1] < regions["mouth"][1]


def test_mdmd_spots_the_expressions_not_the_blink(clip):
    crops, regions, events = clip
    k = 6
    s = mdmd_signal(crops, regions, k)
    assert s.shape == (150,) and (s[:k] == 0).all() and (s[-k:] == 0).all()
    peak_micro = s[20:40].max()
    assert peak_micro > 3 * np.median(s)
    assert s[50:62].max() < 0.5 * peak_micro  # eyes are excluded: the blink barely registers
    pred = spot_intervals(s, k, "micro", p=0.3)
    truth = pd.DataFrame([{"kind": "micro", "onset": 20, "offset": 31}])
    assert megc_evaluate(pred, truth).loc["micro", "TP"] == 1
    with pytest.raises(ValueError, match="k must"):
        mdmd_signal(crops, regions, 0)
    with pytest.raises(ValueError, match="missing"):
        mdmd_signal(crops, {"nose": regions["nose"]}, 3)


def test_lbp_contrast_peaks_at_the_expressions(clip):
    crops, _, _ = clip
    c = lbp_signal(crops, 6)
    assert c.shape == (150,) and (c >= 0).all()
    assert c[18:36].max() > 3 * max(np.median(c), 1e-6)
    assert np.argmax(c) in set(range(15, 40)) | set(range(78, 120))


def test_lbp_histograms_computed_once_give_the_same_scores(clip):
    crops, _, _ = clip
    h = lbp_histograms(crops, 6)
    assert h.shape == (150, 36, 10)
    np.testing.assert_allclose(h.sum(-1), 1.0)
    for k in (3, 6, 19):  # one set of histograms serves every k, with exactly the values computed per k
        np.testing.assert_array_equal(lbp_signal(crops, k, hists=h), lbp_signal(crops, k))
    with pytest.raises(ValueError, match="hists must be"):
        lbp_signal(crops, 6, grid=4, hists=h)


def test_onset_apex_flow(clip):
    crops, _, events = clip
    f = onset_apex_flow(crops, events[0]["onset"], events[0]["apex"], grid=28)
    assert f.shape == (3, 28, 28) and f.dtype == np.float32
    np.testing.assert_allclose(f[2], np.sqrt(f[0] ** 2 + f[1] ** 2), rtol=1e-5)
    still = onset_apex_flow(crops, 0, 5)
    assert np.abs(still).mean() < 0.2 * np.abs(f).mean()
    with pytest.raises(ValueError, match="before onset"):
        onset_apex_flow(crops, 30, 20)
    with pytest.raises(ValueError, match="frame indices"):
        onset_apex_flow(crops, 0, 500)
