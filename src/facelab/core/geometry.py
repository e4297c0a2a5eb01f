r"""Plane geometry of faces: similarity fits between point sets (Umeyama) and affine warps of image batches.

The similarity (rotation, uniform scale, translation; no reflection) that best maps points :math:`c_i` onto
:math:`p_i` in the least-squares sense (Umeyama 1991) has, in 2-D, a closed form (no SVD, so the torch version is
differentiable everywhere the source points are not all equal):

.. math::
    a = \frac{\sum_i \langle \tilde c_i, \tilde p_i\rangle}{\sum_i \|\tilde c_i\|^2},\quad
    b = \frac{\sum_i \tilde c_i \times \tilde p_i}{\sum_i \|\tilde c_i\|^2},\quad
    A = \begin{pmatrix} a & -b\\ b & a\end{pmatrix},\quad t = \bar p - A\bar c,

with :math:`\tilde c, \tilde p` the centred points. It equals Umeyama's SVD solution with the reflection
correction. Matrices are ``(2, 3)`` with ``dst ~ M[:, :2] @ src + M[:, 2]``; pixel centres are at integer
coordinates throughout the book.

Only the numpy functions are usable without torch installed: torch is imported inside the torch functions, so
``import facelab.align`` (numpy/OpenCV alignment) stays light.

Warps follow one convention too: an "output -> input" matrix ``M`` says where each output pixel samples the input
(:func:`warp_affine`), which is what ``cv2.warpAffine(..., WARP_INVERSE_MAP)`` and ``grid_sample`` do.
"""

from __future__ import annotations

import numpy as np

from facelab.core.landmarks import LANDMARKS, group_mean

__all__ = ["umeyama", "umeyama_torch", "warp_matrix_to_theta", "warp_affine", "pixels_to_grid", "identity_grid",
           "pixel_grid", "eyes_nose_mouth"]


def umeyama(src, dst, *, scale: bool = True) -> np.ndarray:
    """Least-squares similarity (Umeyama, no reflection) mapping ``src`` points onto ``dst`` points (numpy).

    Parameters
    ----------
    src, dst : array_like
        ``(K, 2)`` corresponding points, or batches ``(B, K, 2)`` (``src`` may also be one ``(K, 2)`` set shared by
        every item of a ``dst`` batch); K >= 2, source points not all equal.
    scale : bool
        Fit the scale (similarity); ``False`` fits a rotation and translation only (rigid).

    Returns
    -------
    np.ndarray
        ``(2, 3)`` (or ``(B, 2, 3)``) float64 matrix ``M`` with ``dst ~ M[:, :2] @ src + M[:, 2]``.

    Raises
    ------
    ValueError
        Shapes that are not matching point sets, or source points that are all equal.
    """
    s = np.asarray(src, dtype=np.float64)
    d = np.asarray(dst, dtype=np.float64)
    batched = d.ndim == 3
    if s.ndim == 2 and batched:
        s = np.broadcast_to(s, d.shape)
    if (s.ndim not in (2, 3) or s.shape[-1] != 2 or s.shape != d.shape or s.shape[-2] < 2):
        raise ValueError(f"expected two (K, 2) point sets with K >= 2, got {s.shape} and {d.shape}")
    if not batched:
        s, d = s[None], d[None]
    sm, dm = s.mean(1, keepdims=True), d.mean(1, keepdims=True)
    sc, dc = s - sm, d - dm
    var = (sc ** 2).sum((1, 2))
    if (var <= 1e-12).any():
        raise ValueError("source points are all equal: no similarity transform")
    a = (sc * dc).sum((1, 2)) / var
    b = (sc[..., 0] * dc[..., 1] - sc[..., 1] * dc[..., 0]).sum(1) / var
    if not scale:
        norm = np.hypot(a, b)
        norm = np.where(norm > 0, norm, 1.0)
        a, b = a / norm, b / norm
    A = np.stack([np.stack([a, -b], -1), np.stack([b, a], -1)], -2)              # (B, 2, 2)
    t = dm[:, 0] - np.einsum("bij,bj->bi", A, sm[:, 0])
    M = np.concatenate([A, t[..., None]], -1)
    return M if batched else M[0]


def umeyama_torch(src: "torch.Tensor", dst: "torch.Tensor", *, scale: bool = True) -> "torch.Tensor":
    """Batched, differentiable Umeyama similarity fit in torch (closed form, any device).

    Parameters
    ----------
    src : torch.Tensor
        ``(K, 2)`` (shared by the batch) or ``(B, K, 2)`` source points.
    dst : torch.Tensor
        ``(B, K, 2)`` destination points.
    scale : bool
        Fit the scale; ``False`` fits a rotation and translation only.

    Returns
    -------
    torch.Tensor
        ``(B, 2, 3)`` with ``dst ~ src @ M[:, :, :2].T + M[:, :, 2]``; gradients flow to ``src`` and ``dst``.
        Degenerate source sets (all points equal) do not raise: their variance is floored at 1e-12.
    """
    import torch

    if dst.dim() != 3 or dst.shape[-1] != 2 or src.shape[-1] != 2 or src.dim() not in (2, 3):
        raise ValueError(f"expected src (K, 2) or (B, K, 2) and dst (B, K, 2), got {tuple(src.shape)} and "
                         f"{tuple(dst.shape)}")
    if src.dim() == 2:
        src = src.unsqueeze(0).expand(dst.shape[0], -1, -1)
    if src.shape != dst.shape:
        raise ValueError(f"src and dst must hold the same points, got {tuple(src.shape)} and {tuple(dst.shape)}")
    sm, dm = src.mean(1, keepdim=True), dst.mean(1, keepdim=True)
    sc, dc = src - sm, dst - dm
    var = (sc ** 2).sum((1, 2)).clamp_min(1e-12)
    a = (sc * dc).sum((1, 2)) / var
    b = (sc[..., 0] * dc[..., 1] - sc[..., 1] * dc[..., 0]).sum(1) / var
    if not scale:
        norm = torch.sqrt(a ** 2 + b ** 2).clamp_min(1e-12)
        a, b = a / norm, b / norm
    A = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)
    t = dm.squeeze(1) - (A @ sm.squeeze(1).unsqueeze(-1)).squeeze(-1)
    return torch.cat([A, t.unsqueeze(-1)], -1)


def warp_matrix_to_theta(M, in_hw, out_hw) -> torch.Tensor:
    """Convert output->input pixel matrices ``(N, 2, 3)`` into ``affine_grid`` thetas (``align_corners=False``).

    Parameters
    ----------
    M : torch.Tensor
        ``(N, 2, 3)``: output pixel ``(x, y)`` samples the input at ``M @ [x, y, 1]`` (pixel centres at integers).
    in_hw, out_hw : (int, int)
        Input and output image sizes ``(H, W)``.
    """
    import torch

    M = torch.as_tensor(M)
    H, W = in_hw
    h, w = out_hw
    dt = M.dtype
    # normalised -> pixel for the output, pixel -> normalised for the input
    n_out = torch.tensor([[w / 2.0, 0, (w - 1) / 2.0], [0, h / 2.0, (h - 1) / 2.0], [0, 0, 1]], dtype=dt,
                         device=M.device)
    p_in = torch.tensor([[2.0 / W, 0, 1.0 / W - 1], [0, 2.0 / H, 1.0 / H - 1], [0, 0, 1]], dtype=dt,
                        device=M.device)
    bottom = torch.tensor([0, 0, 1], dtype=dt, device=M.device).expand(M.shape[0], 1, 3)
    M3 = torch.cat([M, bottom], dim=1)
    return (p_in @ M3 @ n_out)[:, :2, :]


def warp_affine(images: torch.Tensor, M: torch.Tensor, size=None, *, padding_mode: str = "zeros",
                mode: str = "bilinear") -> torch.Tensor:
    """Warp a batch with output->input pixel matrices (differentiable in ``images`` and ``M``).

    Parameters
    ----------
    images : torch.Tensor
        ``(N, C, H, W)``.
    M : torch.Tensor
        ``(N, 2, 3)``: output pixel ``(x, y)`` takes the input's value at ``M @ [x, y, 1]``.
    size : int or (int, int), optional
        Output side or ``(H, W)`` (default: the input size).
    padding_mode : {"zeros", "border", "reflection"}
        Value of samples outside the input (``grid_sample``'s modes).
    mode : {"bilinear", "nearest", "bicubic"}
        Interpolation.
    """
    import torch.nn.functional as F

    n, c, H, W = images.shape
    h, w = (H, W) if size is None else ((int(size), int(size)) if not isinstance(size, (tuple, list))
                                        else (int(size[0]), int(size[1])))
    if n == 0:
        return images.new_zeros((0, c, h, w))
    theta = warp_matrix_to_theta(M.to(images.dtype), (H, W), (h, w))
    grid = F.affine_grid(theta, [n, c, h, w], align_corners=False)
    return F.grid_sample(images, grid, mode=mode, padding_mode=padding_mode, align_corners=False)


def pixels_to_grid(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixel ``(x, y)`` (pixel centres at integers) -> ``grid_sample`` coordinates in [-1, 1] (align_corners=False)."""
    import torch

    scale = torch.tensor([width, height], dtype=points.dtype, device=points.device)
    return (2.0 * points + 1.0) / scale - 1.0


def identity_grid(n: int, height: int, width: int, device=None) -> torch.Tensor:
    """The ``grid_sample`` grid ``(N, H, W, 2)`` that leaves an image unchanged (align_corners=False)."""
    import torch
    import torch.nn.functional as F

    theta = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], device=device).expand(n, 2, 3)
    return F.affine_grid(theta, (n, 1, height, width), align_corners=False)


def pixel_grid(height: int, width: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates, each ``(H, W)`` float32: x (column index) and y (row index)."""
    import torch

    ys = torch.arange(height, device=device, dtype=torch.float32)
    xs = torch.arange(width, device=device, dtype=torch.float32)
    return torch.meshgrid(xs, ys, indexing="xy")


def eyes_nose_mouth(landmarks68):
    """The five "eyes-nose-mouth" points (ArcFace order) from iBUG-68 landmarks ``(..., 68, 2)``, numpy or torch.

    Order: centre of the subject's right eye (image left), centre of the left eye, nose tip, the two mouth
    corners (image left first).
    """
    lm = landmarks68
    is_torch = type(lm).__module__.startswith("torch")
    parts = [group_mean(lm, "eye_right")[..., None, :], group_mean(lm, "eye_left")[..., None, :],
             lm[..., LANDMARKS["nose_tip"], :], lm[..., LANDMARKS["mouth_corners"], :]]
    if is_torch:
        import torch

        return torch.cat(parts, -2)
    return np.concatenate(parts, -2)
