"""facelab.detect and facelab.align on real photos: detections, landmarks, hard inputs, dlib-exact chips."""

import numpy as np
import pytest
import torch

from facelab import assets
from facelab.align import (ARCFACE_112, align_batch_torch, align_faces, face_transform, similarity_transform,
                           template_points)
from facelab.detect import Face, detect_faces, landmarks68_to_5
from facelab.io import load_image


@pytest.fixture(scope="module")
def obama():
    return load_image(assets.fetch("face-recognition-test-images") / "obama.jpg")


@pytest.fixture(scope="module")
def obama_faces(obama):
    return detect_faces(obama, "dlib-hog")


def _inside(pts, box, margin=0.25):
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    return bool(np.all((pts[:, 0] > x0 - margin * w) & (pts[:, 0] < x1 + margin * w)
                       & (pts[:, 1] > y0 - margin * h) & (pts[:, 1] < y1 + margin * h)))


def test_dlib_hog_face_and_landmarks(obama, obama_faces):
    assert len(obama_faces) == 1
    f = obama_faces[0]
    assert isinstance(f, Face) and f.backend == "dlib-hog" and f.score > 0
    x0, y0, x1, y1 = f.box
    assert 150 < x1 - x0 < 400 and 150 < y1 - y0 < 400  # a 910x1137 portrait
    assert f.landmarks5.shape == (5, 2) and f.landmarks5_kind == "dlib5"
    assert f.landmarks68.shape == (68, 2)
    assert _inside(f.landmarks5, f.box) and _inside(f.landmarks68, f.box)
    # anatomy: eyes above the nose, above the mouth; the image-left eye is left of the image-right eye
    lm = landmarks68_to_5(f.landmarks68)
    assert lm[0, 0] < lm[1, 0] and max(lm[0, 1], lm[1, 1]) < lm[2, 1] < min(lm[3, 1], lm[4, 1])


def test_yunet_agrees_with_dlib(obama, obama_faces):
    fy = detect_faces(obama, "yunet")
    assert len(fy) == 1 and fy[0].landmarks5_kind == "eyes-nose-mouth" and fy[0].landmarks68 is None
    assert 0.5 < fy[0].score <= 1.0
    ref = landmarks68_to_5(obama_faces[0].landmarks68)
    err = np.linalg.norm(fy[0].landmarks5 - ref, axis=1)
    assert err[:2].max() < 0.08 * obama_faces[0].width  # eye centres within a few percent of the face width


def test_haar_and_cnn_find_the_face(obama, obama_faces):
    import cv2

    small = cv2.resize(obama, (320, 400), interpolation=cv2.INTER_AREA)
    k = 320 / obama.shape[1]
    for backend in ("haar", "dlib-cnn"):
        faces = detect_faces(small, backend, landmarks="5")
        assert len(faces) == 1, backend
        c = np.array(faces[0].box).reshape(2, 2).mean(0) / k
        c_ref = np.array(obama_faces[0].box).reshape(2, 2).mean(0)
        assert np.linalg.norm(c - c_ref) < 0.25 * obama_faces[0].width, backend
        assert faces[0].landmarks5.shape == (5, 2)


@pytest.mark.parametrize("backend", ["dlib-hog", "yunet", "haar"])
def test_no_face_gives_empty_list(backend):
    rng = np.random.default_rng(0)
    flat = np.full((240, 320, 3), 128, np.uint8)
    noise = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    assert detect_faces(flat, backend) == []
    assert detect_faces(noise, backend) == []
    assert detect_faces(np.zeros((5, 5, 3), np.uint8), backend) == []


def test_too_small_face_is_empty_or_filtered(obama):
    import cv2

    tiny = cv2.resize(obama, (36, 45), interpolation=cv2.INTER_AREA)  # the face is ~10 px wide
    assert detect_faces(tiny, "dlib-hog") == []
    assert detect_faces(tiny, "yunet") == []
    # min_size drops faces that are found but smaller than asked
    assert detect_faces(obama, "yunet", min_size=5000) == []


def test_huge_image_is_downscaled_and_mapped_back(obama, obama_faces):
    import cv2

    big = cv2.resize(obama, None, fx=3.0, fy=3.0, interpolation=cv2.INTER_LINEAR)  # 2730 x 3411
    faces = detect_faces(big, "dlib-hog", landmarks="5")
    assert len(faces) == 1
    ref = np.array(obama_faces[0].box) * 3.0
    assert np.abs(np.array(faces[0].box) - ref).max() < 0.15 * (ref[2] - ref[0])
    assert np.abs(faces[0].landmarks5 - obama_faces[0].landmarks5 * 3.0).max() < 0.05 * (ref[2] - ref[0])


def test_grey_and_path_inputs(obama):
    folder = assets.fetch("face-recognition-test-images")
    grey = np.repeat(obama.mean(2, keepdims=True).astype(np.uint8), 3, axis=2)
    assert len(detect_faces(grey, "yunet")) == 1
    assert len(detect_faces(folder / "obama.jpg", "yunet")) == 1


def test_bad_arguments(obama):
    with pytest.raises(ValueError, match="unknown detector"):
        detect_faces(obama, "mtcnn")
    with pytest.raises(ValueError, match="upsample"):
        detect_faces(obama, "dlib-hog", upsample=-1)
    with pytest.raises(ValueError, match="landmarks"):
        align_faces(obama, [Face((0.0, 0.0, 10.0, 10.0), 1.0)])
    with pytest.raises(ValueError, match="template"):
        align_faces(obama, [], template="vgg-224")


# ---------------------------------------------------------------------------------------------------------------
# alignment


def test_similarity_transform_is_the_core_umeyama_fit():
    from facelab.core.geometry import umeyama  # its behaviour is tested in test_core.py

    rng = np.random.default_rng(1)
    src, dst = rng.normal(size=(7, 2)) * 30, rng.normal(size=(7, 2)) * 30
    np.testing.assert_array_equal(similarity_transform(src, dst), umeyama(src, dst))
    with pytest.raises(ValueError, match="all equal"):
        similarity_transform(np.zeros((3, 2)), np.ones((3, 2)))


def test_dlib150_matches_dlib_get_face_chip(obama, obama_faces):
    import dlib

    from facelab.detect import _shape_predictor

    f = obama_faces[0]
    ref = dlib.get_face_chip(obama, _shape_predictor(5)(obama, f.dlib_rect()), size=150, padding=0.25)
    chips = align_faces(obama, obama_faces, "dlib-150")
    assert chips.shape == (1, 150, 150, 3) and chips.dtype == np.uint8
    assert np.abs(chips[0].astype(int) - ref.astype(int)).mean() < 1.0  # dlib truncates, we round


def test_arcface112_puts_landmarks_on_template(obama):
    fy = detect_faces(obama, "yunet")
    chips = align_faces(obama, fy, "arcface-112")
    assert chips.shape == (1, 112, 112, 3)
    M = face_transform(fy[0], "arcface-112")  # chip -> image
    Minv = np.linalg.inv(np.vstack([M, [0, 0, 1]]))[:2]
    in_chip = fy[0].landmarks5 @ Minv[:, :2].T + Minv[:, 2]
    assert np.abs(in_chip - ARCFACE_112).max() < 6.0  # a least-squares fit of 5 points: a few px residual
    assert align_faces(obama, [], "arcface-112").shape == (0, 112, 112, 3)


def test_dlib_faces_align_to_arcface_and_yunet_to_dlib150(obama, obama_faces):
    fy = detect_faces(obama, "yunet")
    a = align_faces(obama, obama_faces, "arcface-112")[0].astype(float)
    b = align_faces(obama, fy, "arcface-112")[0].astype(float)
    assert np.abs(a - b).mean() < 25  # same face, same template, different landmark sources
    c = align_faces(obama, fy, "dlib-150")[0].astype(float)
    d = align_faces(obama, obama_faces, "dlib-150")[0].astype(float)
    assert np.abs(c - d).mean() < 25
    assert template_points("dlib-150", "eyes-nose-mouth").shape == (5, 2)


def test_torch_alignment_matches_and_is_differentiable(obama, obama_faces):
    f = obama_faces[0]
    x = torch.from_numpy(obama.copy()).permute(2, 0, 1)[None].float().div(255).requires_grad_(True)
    lm = torch.from_numpy(f.landmarks5)[None].float().requires_grad_(True)
    out = align_batch_torch(x, lm, "dlib-150", kind="dlib5")
    ref = align_faces(obama, [f], "dlib-150", antialias=False)[0]
    assert out.shape == (1, 3, 150, 150)
    assert np.abs(out[0].detach().permute(1, 2, 0).numpy() * 255 - ref).mean() < 1.0
    out.mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert lm.grad is not None and torch.isfinite(lm.grad).all() and lm.grad.abs().sum() > 0
    # batched: two copies, 68-point kind, arcface template
    lm68 = torch.from_numpy(np.stack([f.landmarks68] * 2)).float()
    out2 = align_batch_torch(x.detach().expand(2, -1, -1, -1), lm68, "arcface-112", kind="68")
    assert out2.shape == (2, 3, 112, 112) and torch.allclose(out2[0], out2[1])
    with pytest.raises(ValueError, match="landmarks"):
        align_batch_torch(x, lm[:, :3], "dlib-150", kind="dlib5")
