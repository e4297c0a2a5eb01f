"""The shared core (facelab.core): image checks and operations, Umeyama fits and warps, face-region masks."""

import math

import cv2
import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from facelab.core.geometry import (eyes_nose_mouth, pixels_to_grid, umeyama, umeyama_torch, warp_affine,
                                   warp_matrix_to_theta)
from facelab.core.images import PSNR_CAP_DB, check_images, gaussian_blur, psnr, resize, ssim
from facelab.core.landmarks import LANDMARKS
from facelab.core.regions import (EmptyMaskError, face_outline_mask, face_region_masks, polygon_mask,
                                  region_for_word)


def similarity(angle, scale, shift):
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[scale * c, -scale * s, shift[0]], [scale * s, scale * c, shift[1]]])


def apply(M, pts):
    return pts @ M[..., :2].swapaxes(-1, -2) + M[..., None, :, 2]


# ------------------------------------------------------------------------------------------------ geometry
def test_umeyama_recovers_a_known_similarity_in_numpy_and_torch():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(10, 2)) * 30
    M = similarity(0.7, 1.8, (12.0, -5.0))
    assert np.abs(umeyama(src, apply(M, src)) - M).max() < 1e-6
    # batched, one shared source set
    Ms = np.stack([similarity(a, s, (a * 10, -s)) for a, s in ((-2.0, 0.5), (0.1, 1.0), (3.0, 4.0))])
    dst = apply(Ms, src)
    assert np.abs(umeyama(src, dst) - Ms).max() < 1e-6
    fit_t = umeyama_torch(torch.from_numpy(src), torch.from_numpy(dst))
    assert torch.allclose(fit_t, torch.from_numpy(Ms), atol=1e-6)
    # numpy and torch agree on noisy points (a real least-squares problem)
    noisy = dst + rng.normal(size=dst.shape)
    assert np.abs(umeyama(src, noisy) - umeyama_torch(torch.from_numpy(src), torch.from_numpy(noisy)).numpy()
                  ).max() < 1e-9


def test_umeyama_is_the_least_squares_fit_and_never_reflects():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(8, 2))
    dst = src * np.array([-1.0, 1.0]) + rng.normal(size=(8, 2)) * 0.05         # a mirror image
    M = umeyama(src, dst)
    assert np.linalg.det(M[:, :2]) > 0                                          # rotation + scale, no reflection
    loss = lambda A: ((apply(A, src) - dst) ** 2).sum()
    for _ in range(20):                                  # no nearby similarity (a, b, tx, ty) fits better
        da, db, dx, dy = rng.normal(size=4) * 1e-3
        assert loss(M) <= loss(M + np.array([[da, -db, dx], [db, da, dy]])) + 1e-12


def test_umeyama_rigid_has_unit_scale_and_bad_input_is_clear():
    src = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    M = umeyama(src, apply(similarity(0.3, 2.5, (1, 2)), src), scale=False)
    assert abs(np.linalg.det(M[:, :2]) - 1.0) < 1e-12
    with pytest.raises(ValueError, match="all equal"):
        umeyama(np.zeros((3, 2)), np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"\(K, 2\)"):
        umeyama(np.zeros((3, 3)), np.ones((3, 3)))
    with pytest.raises(ValueError, match="same points"):
        umeyama_torch(torch.zeros(2, 4, 2), torch.zeros(2, 5, 2))


def test_umeyama_torch_is_differentiable():
    src = torch.randn(2, 6, 2, dtype=torch.float64, requires_grad=True)
    dst = torch.randn(2, 6, 2, dtype=torch.float64, requires_grad=True)
    umeyama_torch(src, dst).sum().backward()
    assert torch.isfinite(src.grad).all() and src.grad.abs().sum() > 0
    assert torch.isfinite(dst.grad).all() and dst.grad.abs().sum() > 0
    assert torch.autograd.gradcheck(lambda s, d: umeyama_torch(s, d), (src.detach().requires_grad_(),
                                                                       dst.detach().requires_grad_()))


def test_warp_affine_samples_where_the_matrix_says():
    img = torch.zeros(1, 1, 20, 30)
    img[0, 0, 5, 7] = 1.0
    # output pixel (x, y) samples input (x + 3, y - 2): the bright pixel moves to (4, 7)
    M = torch.tensor([[[1.0, 0.0, 3.0], [0.0, 1.0, -2.0]]])
    out = warp_affine(img, M)
    assert out.shape == img.shape and float(out[0, 0, 7, 4]) == pytest.approx(1.0, abs=1e-5)
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-5)
    assert warp_affine(img, M, (10, 12)).shape == (1, 1, 10, 12)
    assert warp_affine(img[:0], M[:0], 8).shape == (0, 1, 8, 8)
    # pixel centres at integers map to grid_sample coordinates -1 + 1/W ... 1 - 1/W
    g = pixels_to_grid(torch.tensor([[0.0, 0.0], [29.0, 19.0]]), 20, 30)
    assert torch.allclose(g, torch.tensor([[-1 + 1 / 30, -1 + 1 / 20], [1 - 1 / 30, 1 - 1 / 20]]))
    assert warp_matrix_to_theta(M, (20, 30), (20, 30)).shape == (1, 2, 3)


def test_eyes_nose_mouth_uses_the_named_groups():
    lm = np.random.default_rng(0).normal(size=(3, 68, 2))
    five = eyes_nose_mouth(lm)
    assert five.shape == (3, 5, 2)
    assert np.allclose(five[:, 0], lm[:, LANDMARKS["eye_right"]].mean(1))
    assert np.allclose(five[:, 4], lm[:, 54])
    assert torch.allclose(eyes_nose_mouth(torch.from_numpy(lm)), torch.from_numpy(five))


# ------------------------------------------------------------------------------------------------ images
def test_gaussian_blur_keeps_a_constant_image_and_matches_opencv():
    const = torch.full((2, 3, 24, 24), 0.37)
    assert torch.allclose(gaussian_blur(const, torch.tensor([0.8, 2.5])), const, atol=1e-6)
    rng = np.random.default_rng(0)
    img = rng.random((40, 48)).astype(np.float32)
    sigma = 1.5
    ours = gaussian_blur(torch.from_numpy(img)[None, None], sigma)[0, 0].numpy()
    k = 2 * int(math.ceil(3 * sigma)) + 1                                      # the same kernel size as ours
    ref = cv2.GaussianBlur(img, (k, k), sigma, borderType=cv2.BORDER_REFLECT_101)
    assert np.abs(ours - ref).max() < 1e-5


def test_gaussian_blur_sigma_is_per_image():
    x = torch.rand(1, 3, 32, 32).expand(3, 3, 32, 32).contiguous()
    y = gaussian_blur(x, torch.tensor([0.5, 1.0, 3.0]))
    assert torch.allclose(y[0], gaussian_blur(x[:1], 0.5)[0], atol=1e-6)
    assert torch.allclose(y[2], gaussian_blur(x[:1], 3.0)[0], atol=1e-6)
    spread = [float(y[i].std()) for i in range(3)]
    assert spread[0] > spread[1] > spread[2]                                    # more blur, less contrast
    r = gaussian_blur(x, 1.5, truncate=2.5, padding="replicate")
    assert r.shape == x.shape
    with pytest.raises(ValueError, match="padding"):
        gaussian_blur(x, 1.0, padding="zeros")
    with pytest.raises(ValueError, match="one per image"):
        gaussian_blur(x, torch.tensor([1.0, 2.0]))


def noisy_pair(seed, side, noise):
    """Two float32 batches (2, 3, side, side) in [0, 1]: random images and a noisy copy."""
    rng = np.random.default_rng(seed)
    a = rng.random((2, 3, side, side)).astype(np.float32)
    return a, np.clip(a + rng.normal(scale=noise, size=a.shape), 0, 1).astype(np.float32)


def test_psnr_matches_skimage_and_caps_identical_images():
    a, b = noisy_pair(0, 16, 0.05)
    ours = psnr(torch.from_numpy(a), torch.from_numpy(b))
    for i in range(2):
        assert float(ours[i]) == pytest.approx(peak_signal_noise_ratio(a[i], b[i], data_range=1.0), abs=1e-3)
    assert float(psnr(torch.from_numpy(a), torch.from_numpy(a))[0]) == pytest.approx(PSNR_CAP_DB)


def test_ssim_matches_skimage_with_the_same_gaussian_window():
    a, b = noisy_pair(1, 32, 0.1)
    ours = ssim(torch.from_numpy(a), torch.from_numpy(b))
    for i in range(2):
        ref = structural_similarity(a[i], b[i], gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                    data_range=1.0, channel_axis=0)
        assert float(ours[i]) == pytest.approx(ref, abs=1e-2)
    assert torch.allclose(ssim(torch.from_numpy(a), torch.from_numpy(a)), torch.ones(2), atol=1e-5)
    grey = torch.from_numpy(a[:, :1]).requires_grad_(True)
    ssim(grey, torch.from_numpy(b[:, :1])).sum().backward()                     # one channel, differentiable
    assert torch.isfinite(grey.grad).all()


def test_resize_shrinks_by_area_and_keeps_a_matching_batch():
    x = torch.rand(2, 3, 32, 32)
    assert resize(x, 32) is x
    small = resize(x, 16)
    assert small.shape == (2, 3, 16, 16)
    assert torch.allclose(small.mean((2, 3)), x.mean((2, 3)), atol=1e-5)     # area averaging keeps the mean
    assert resize(x, (40, 48)).shape == (2, 3, 40, 48)


@pytest.mark.parametrize("bad, kwargs, error, match", [
    (np.zeros((2, 3, 8, 8)), {}, TypeError, "must be a torch.Tensor"),
    (torch.zeros(3, 8, 8), {}, ValueError, "add a batch axis"),
    (torch.zeros(2, 8), {}, ValueError, r"\(N, C, H, W\)"),
    (torch.zeros(2, 4, 8, 8), {}, ValueError, "got 4 channels"),
    (torch.zeros(2, 1, 8, 8), {"channels": (3,)}, ValueError, "3 colour channels"),
    (torch.zeros(0, 3, 8, 8), {}, ValueError, "empty batch"),
    (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), {}, TypeError, "float"),
    (torch.full((2, 3, 8, 8), float("nan")), {"finite": True}, ValueError, "NaN"),
    (torch.full((2, 3, 8, 8), 1.5), {"value_range": (0, 1)}, ValueError, r"pixel values in \[0, 1\]"),
    (torch.zeros(2, 3, 8, 8), {"size": 16}, ValueError, "16x16"),
])
def test_check_images_errors(bad, kwargs, error, match):
    with pytest.raises(error, match=match):
        check_images(bad, **kwargs)


def test_check_images_passes_good_batches_through():
    x = torch.rand(2, 3, 8, 8)
    assert check_images(x, channels=(3,), size=8, finite=True, value_range=(0, 1)) is x
    assert check_images(torch.zeros(0, 1, 4, 4), allow_empty=True).shape[0] == 0
    assert check_images(torch.rand(1, 5, 4, 4), channels=None).shape[1] == 5
    with pytest.raises(ValueError, match="^source "):
        check_images(torch.zeros(2, 8), "source")


# ------------------------------------------------------------------------------------------------ regions
def face68(n=1, side=96):
    """A plausible frontal 68-point face in a side x side frame (the attacks' test template)."""
    from test_attacks import template_landmarks

    return template_landmarks(n, side, side)


def test_face_region_masks_are_soft_local_and_named():
    lm = face68(2)
    lips = face_region_masks(lm, 96, "lips")
    assert lips.shape == (2, 1, 96, 96) and float(lips.min()) >= 0 and float(lips.max()) == 1.0
    ys, xs = torch.nonzero(lips[0, 0] > 0.5, as_tuple=True)
    mouth = lm[0, LANDMARKS["mouth"]]
    assert mouth[:, 1].min() - 4 <= ys.float().mean() <= mouth[:, 1].max() + 4
    assert region_for_word("red lipstick") == "lips"
    with pytest.raises(EmptyMaskError, match="outside"):
        face_region_masks(lm + 500, 96)


def test_face_outline_mask_regions_nest():
    lm = face68(1, 64)
    face, inner, full = (face_outline_mask(lm, 64, 64, r) for r in ("face", "inner", "full"))
    assert bool((inner <= face).all()) and bool((face <= full).all())
    assert float(inner.sum()) < float(face.sum()) < float(full.sum())
    square = torch.tensor([[[10.0, 10.0], [40.0, 10.0], [40.0, 30.0], [10.0, 30.0]]])
    assert abs(float(polygon_mask(square, 64, 64).sum()) - 600) <= 50
    assert face_outline_mask(None, 64, 64, n=2).shape == (2, 1, 64, 64)
    with pytest.raises(ValueError, match="'face', 'inner' or 'full'"):
        face_outline_mask(lm, 64, 64, "cheeks")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_core_operations_run_on_the_gpu_and_match_the_cpu():
    x = torch.rand(3, 3, 40, 40)
    src, dst = torch.randn(3, 7, 2), torch.randn(3, 7, 2)
    M = umeyama_torch(src, dst)
    cpu = [gaussian_blur(x, torch.tensor([0.5, 1.0, 2.0])), psnr(x, x.flip(-1)), ssim(x, x.flip(-1)), M,
           warp_affine(x, M, 24)]
    xg = x.cuda()
    Mg = umeyama_torch(src.cuda(), dst.cuda())
    gpu = [gaussian_blur(xg, torch.tensor([0.5, 1.0, 2.0])), psnr(xg, xg.flip(-1)), ssim(xg, xg.flip(-1)), Mg,
           warp_affine(xg, Mg, 24)]
    for a, b in zip(cpu, gpu):
        assert b.is_cuda and torch.allclose(a, b.cpu(), atol=1e-4)
    lm = face68(2, 64).cuda()
    assert torch.equal(face_outline_mask(lm, 64, 64, "full").cpu(), face_outline_mask(lm.cpu(), 64, 64, "full"))
