"""Image batches: one check, and the small image operations every chapter uses (resize, Gaussian blur, PSNR, SSIM).

The book's image convention is a float tensor ``(N, C, H, W)`` with ``C`` = 3 (RGB) or 1 (grey) and values in
``[0, 1]``, on any device. :func:`check_images` enforces it with messages that say what was expected and what was
given; the operations here keep the batch's device and dtype and treat every image of the batch separately
(:func:`gaussian_blur` takes one sigma per image, :func:`psnr` and :func:`ssim` return one value per image).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["check_images", "gaussian_blur", "gaussian_window", "resize", "luminance", "psnr", "ssim", "PSNR_CAP_DB",
           "LUMA_WEIGHTS"]

#: ITU-R BT.601 luma weights of R, G, B (what OpenCV's and PIL's RGB -> grey conversions use).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

#: The largest PSNR :func:`psnr` reports: identical images give this (MSE floored at 1e-12) instead of infinity.
PSNR_CAP_DB = 120.0


def _shape_text(channels) -> str:
    if channels is None:
        return "(N, C, H, W)"
    chans = tuple(channels)
    return f"(N, {chans[0]}, H, W)" if len(chans) == 1 else "(N, C, H, W)"


def check_images(images, name: str = "images", *, channels: Sequence[int] | None = (1, 3), size=None,
                 allow_empty: bool = False, finite: bool = False, value_range: tuple[float, float] | None = None,
                 tolerance: float = 1e-3) -> torch.Tensor:
    """Validate a batch of images and return it unchanged.

    Parameters
    ----------
    images : torch.Tensor
        The batch, expected float ``(N, C, H, W)``.
    name : str
        What the caller calls the argument (used in the messages).
    channels : sequence of int or None
        Allowed channel counts (``(3,)`` for RGB only); ``None`` allows any.
    size : int or (int, int), optional
        Required ``H x W`` (an int means square).
    allow_empty : bool
        Accept ``N = 0``.
    finite : bool
        Reject NaN and infinite values.
    value_range : (float, float), optional
        Reject values outside this range by more than ``tolerance`` (e.g. ``(0, 1)``). Costs one pass over the
        batch, so it is off by default.
    tolerance : float
        Slack of the range check.

    Returns
    -------
    torch.Tensor
        ``images`` itself (no copy, no conversion).

    Raises
    ------
    TypeError
        Not a tensor, or not floating point.
    ValueError
        Wrong number of axes (one image without its batch axis is named as such), channels or size, an empty batch,
        NaN/inf values, values out of range.
    """
    shape = _shape_text(channels)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape} in [0, 1], got {type(images).__name__}")
    if images.ndim == 3:
        raise ValueError(f"{name} must be a batch {shape}; got one image of shape {tuple(images.shape)} - "
                         f"add a batch axis with {name}[None]")
    if images.ndim != 4:
        raise ValueError(f"{name} must have shape {shape}, got {images.ndim}-D shape {tuple(images.shape)}")
    if channels is not None and images.shape[1] not in tuple(channels):
        chans = tuple(channels)
        what = {(3,): "3 colour channels (RGB, channels first)", (1,): "1 channel (grey, channels first)"}.get(
            chans, f"{' or '.join(map(str, chans))} channels (channels first)")
        raise ValueError(f"{name} must have {what}, shape {shape}; got {images.shape[1]} channels in shape "
                         f"{tuple(images.shape)}")
    if size is not None:
        h, w = (int(size), int(size)) if not isinstance(size, (tuple, list)) else (int(size[0]), int(size[1]))
        if images.shape[2] != h or images.shape[3] != w:
            raise ValueError(f"{name} must be {h}x{w} pixels for this model, got {images.shape[2]}x{images.shape[3]}"
                             f" (resize with facelab.core.images.resize first)")
    if images.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} is an empty batch (N = 0)")
    if not images.is_floating_point():
        raise TypeError(f"{name} must be a float tensor (floating point, values in [0, 1]), got dtype {images.dtype}")
    if images.numel() and (finite or value_range is not None):
        if finite and not bool(torch.isfinite(images).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
        if value_range is not None:
            lo, hi = float(images.min()), float(images.max())
            if math.isnan(lo) or math.isnan(hi) or lo < value_range[0] - tolerance or hi > value_range[1] + tolerance:
                looks_255 = value_range[1] == 1 and hi > 1.5
                hint = " - images in 0-255 must be divided by 255 first" if looks_255 else ""
                raise ValueError(f"{name} must hold pixel values in [{value_range[0]:g}, {value_range[1]:g}]; got range "
                                 f"[{lo:.3g}, {hi:.3g}]{hint}")
    return images


def gaussian_blur(images: torch.Tensor, sigma, *, truncate: float = 3.0, padding: str = "reflect") -> torch.Tensor:
    """Separable Gaussian blur with one sigma per image.

    Parameters
    ----------
    images : torch.Tensor
        ``(N, C, H, W)`` float, any device.
    sigma : float or torch.Tensor
        Standard deviation in pixels: a scalar for the whole batch or ``(N,)`` (one per image); clamped to >= 1e-3.
    truncate : float
        Kernel radius in sigmas: ``radius = ceil(truncate * max(sigma))`` (at least 1; with ``"reflect"`` at most
        ``(min(H, W) - 1) // 2``, the largest reflection padding allows).
    padding : {"reflect", "replicate"}
        Border handling (``"reflect"`` mirrors without repeating the edge pixel, like OpenCV's default
        ``BORDER_REFLECT_101``).

    Returns
    -------
    torch.Tensor
        Blurred ``(N, C, H, W)``, same dtype and device; differentiable in ``images``.
    """
    if padding not in ("reflect", "replicate"):
        raise ValueError(f"padding must be 'reflect' or 'replicate', got {padding!r}")
    check_images(images, channels=None, allow_empty=True)
    n, c, h, w = images.shape
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=images.device).reshape(-1)
    if sigma.numel() not in (1, n):
        raise ValueError(f"sigma must be one value or one per image ({n}), got {sigma.numel()} values")
    sigma = sigma.expand(n).clamp_min(1e-3)
    radius = max(1, int(math.ceil(truncate * float(sigma.max()))))
    if padding == "reflect":
        radius = max(1, min(radius, (min(h, w) - 1) // 2))
    t = torch.arange(-radius, radius + 1, device=images.device, dtype=torch.float32)
    k = torch.exp(-0.5 * (t[None, :] / sigma[:, None]) ** 2)
    k = (k / k.sum(dim=1, keepdim=True)).to(images.dtype)                     # (N, K)
    k = k.repeat_interleave(c, dim=0)                                        # (N*C, K)
    y = images.reshape(1, n * c, h, w)
    y = F.pad(y, (radius, radius, 0, 0), mode=padding)
    y = F.conv2d(y, k[:, None, None, :], groups=n * c)
    y = F.pad(y, (0, 0, radius, radius), mode=padding)
    y = F.conv2d(y, k[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def resize(images: torch.Tensor, size, *, antialias: bool = True) -> torch.Tensor:
    """Resize a batch of images.

    Parameters
    ----------
    images : torch.Tensor
        ``(N, C, H, W)`` float, any device.
    size : int or (int, int)
        Square side, or ``(H, W)``.
    antialias : bool
        Shrink by area averaging (no aliasing of fine texture); ``False`` samples bilinearly. Growing is always
        bilinear (``align_corners=False``).

    Returns
    -------
    torch.Tensor
        The resized batch; ``images`` itself when it already has the size. Values are not clamped.
    """
    h, w = (int(size), int(size)) if not isinstance(size, (tuple, list)) else (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    if tuple(images.shape[-2:]) == (h, w):
        return images
    if antialias and images.shape[-2] >= h and images.shape[-1] >= w:
        return F.interpolate(images, size=(h, w), mode="area")
    return F.interpolate(images, size=(h, w), mode="bilinear", align_corners=False)


def luminance(images: torch.Tensor) -> torch.Tensor:
    """Grey level (BT.601 luma, :data:`LUMA_WEIGHTS`) of RGB images: ``(N, 3, H, W)`` -> ``(N, 1, H, W)``.

    Differentiable, same dtype and device. ``luminance(x).expand_as(x)`` gives a grey RGB image.
    """
    r, g, b = LUMA_WEIGHTS
    return r * images[:, 0:1] + g * images[:, 1:2] + b * images[:, 2:3]


def psnr(a: torch.Tensor, b: torch.Tensor, *, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, in dB.

    Parameters
    ----------
    a, b : torch.Tensor
        ``(N, ...)`` images with values in ``[0, data_range]``.
    data_range : float
        Peak value (1 for the book's images).

    Returns
    -------
    torch.Tensor
        ``(N,)`` float32: ``10 log10(data_range^2 / MSE)``; identical images give :data:`PSNR_CAP_DB` (the MSE is
        floored at 1e-12) rather than infinity, so means over a batch stay finite.
    """
    mse = ((a.float() - b.float()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(float(data_range) ** 2 / mse.clamp_min(1e-12))


def gaussian_window(size: int = 11, sigma: float = 1.5, *, channels: int = 3, device=None,
                    dtype=torch.float32) -> torch.Tensor:
    """A normalised 2-D Gaussian window ``(channels, 1, size, size)`` for a grouped convolution."""
    x = torch.arange(size, device=device, dtype=torch.float32) - size // 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(channels, 1, size, size).contiguous().to(dtype)


def ssim(a: torch.Tensor, b: torch.Tensor, *, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004), differentiable.

    Gaussian window ``window`` x ``window`` with standard deviation ``sigma``, constants ``K1 = 0.01``,
    ``K2 = 0.03`` for data range 1, population (not sample) covariances; the SSIM map is averaged over the pixels
    whose window lies inside the image and over the channels. With the defaults this matches
    ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=1, channel_axis=0)``.

    Parameters
    ----------
    a, b : torch.Tensor
        ``(N, C, H, W)`` in ``[0, 1]``, ``H, W > window``.

    Returns
    -------
    torch.Tensor
        ``(N,)``; 1 for identical images.
    """
    c = a.shape[1]
    w = gaussian_window(window, sigma, channels=c, device=a.device, dtype=a.dtype)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    pad = window // 2
    mu_a = F.conv2d(a, w, padding=pad, groups=c)
    mu_b = F.conv2d(b, w, padding=pad, groups=c)
    saa = F.conv2d(a * a, w, padding=pad, groups=c) - mu_a ** 2
    sbb = F.conv2d(b * b, w, padding=pad, groups=c) - mu_b ** 2
    sab = F.conv2d(a * b, w, padding=pad, groups=c) - mu_a * mu_b
    m = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
    return m[..., pad:-pad, pad:-pad].flatten(1).mean(1)
