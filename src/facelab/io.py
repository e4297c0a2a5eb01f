"""Image input: any common image file to an (H, W, 3) uint8 RGB array, with clear errors.

``load_image`` accepts a path (``str`` / ``os.PathLike``), raw ``bytes``, or an already decoded ``numpy`` array
(which it only normalises). It handles grey, grey+alpha, RGBA (composited on white), palette, 16-bit and float
images and applies the EXIF orientation tag, so a photo taken with a rotated phone comes out upright.
Anything that is not a readable image raises :class:`ImageLoadError` (a ``ValueError``) naming the file and the
reason: missing file, empty file, not an image, truncated image, more pixels than :func:`max_image_pixels`
(``FACELAB_MAX_IMAGE_PIXELS``, default 100 megapixels, checked before decoding).

The memory guard of the batch builders lives here too: :func:`check_batch_bytes` refuses a request whose result
would take more than :func:`max_batch_bytes` (``FACELAB_MAX_BATCH_BYTES``; default half of the memory of the device
the result lives on, at least 2 GiB) with :class:`BatchTooLargeError`, naming the streaming alternative.
"""

from __future__ import annotations

import io as _io
import os
from pathlib import Path

import numpy as np

__all__ = ["ImageLoadError", "load_image", "to_rgb_uint8", "max_image_pixels", "BatchTooLargeError",
           "max_batch_bytes", "check_batch_bytes", "DEFAULT_MAX_IMAGE_PIXELS"]

#: Default pixel limit of :func:`load_image` (100 megapixels: a 10000 x 10000 image, ~300 MB decoded).
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000
#: Smallest default of :func:`max_batch_bytes`.
_MIN_DEFAULT_BATCH_BYTES = 2 * 2**30
#: Largest deviation from [0, 1] a float image may have (resampling overshoot); beyond it the image is refused.
_FLOAT_SLACK = 0.02


class ImageLoadError(ValueError):
    """A file could not be read as an image (missing, empty, not an image, truncated, too many pixels)."""


class BatchTooLargeError(ValueError):
    """A request whose result would take more memory than :func:`max_batch_bytes` allows."""


def _env_number(name: str) -> float | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (value > 0) or value == float("inf"):
        raise ValueError(f"{name} must be a positive number, got {raw!r}")
    return value


def max_image_pixels() -> int:
    """Largest image (width x height) :func:`load_image` decodes: ``FACELAB_MAX_IMAGE_PIXELS`` or
    :data:`DEFAULT_MAX_IMAGE_PIXELS`."""
    v = _env_number("FACELAB_MAX_IMAGE_PIXELS")
    return DEFAULT_MAX_IMAGE_PIXELS if v is None else int(v)


def _device_memory(device) -> int | None:
    """Total memory in bytes of ``device`` (a CUDA GPU's memory, else the machine's RAM); None if unknown."""
    try:
        if device is not None and str(device).startswith("cuda"):
            import torch

            return int(torch.cuda.get_device_properties(torch.device(device)).total_memory)
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError, RuntimeError, AssertionError):
        return None


def max_batch_bytes(device=None) -> int:
    """The memory bound of one request's result, in bytes.

    ``FACELAB_MAX_BATCH_BYTES`` (e.g. ``8e9``) when set; otherwise half of the total memory of ``device`` (the GPU's
    for a CUDA device, the machine's RAM otherwise), at least 2 GiB.
    """
    v = _env_number("FACELAB_MAX_BATCH_BYTES")
    if v is not None:
        return int(v)
    total = _device_memory(device)
    return max(_MIN_DEFAULT_BATCH_BYTES, total // 2) if total else _MIN_DEFAULT_BATCH_BYTES


def check_batch_bytes(nbytes: float, what: str, *, device=None, instead: str = "") -> None:
    """Refuse a request whose result would need ``nbytes`` bytes, more than :func:`max_batch_bytes` allows.

    Parameters
    ----------
    nbytes : float
        Estimated size of the result (may be ``inf``).
    what : str
        The request, for the message (``"FaceWorld.sample(100000 x 10 images of 112 px)"``).
    device : optional
        Where the result lives (sets the default bound).
    instead : str
        What to do instead (the streaming API), appended to the message.

    Raises
    ------
    BatchTooLargeError
        With the estimate, the bound, how to raise it and ``instead``.
    """
    limit = max_batch_bytes(device)
    if not nbytes <= limit:
        need = "an unbounded amount of memory" if nbytes != nbytes or nbytes == float("inf") else \
            f"about {nbytes / 2**30:.3g} GiB"
        raise BatchTooLargeError(f"{what} would need {need}, more than the limit of {limit / 2**30:.3g} GiB "
                                 "(set FACELAB_MAX_BATCH_BYTES to change it). " + instead)


def to_rgb_uint8(array: np.ndarray, *, background: int = 255) -> np.ndarray:
    """Convert a decoded image array to (H, W, 3) uint8 RGB.

    Parameters
    ----------
    array : np.ndarray
        (H, W) grey, (H, W, 1), (H, W, 2) grey+alpha, (H, W, 3) RGB or (H, W, 4) RGBA; dtype uint8, uint16
        (scaled by 1/257), bool, or float in [0, 1] (an overshoot of up to 0.02 is clipped; a float image in
        0-255 is refused: divide it by 255 or pass uint8).
    background : int
        Grey level that transparent pixels are composited onto.

    Returns
    -------
    np.ndarray
        (H, W, 3) uint8, C-contiguous.
    """
    a = np.asarray(array)
    if a.ndim >= 2 and a.shape[0] * a.shape[1] > max_image_pixels():
        raise ImageLoadError(f"image of {a.shape[1]} x {a.shape[0]} pixels is larger than the limit of "
                             f"{max_image_pixels():,} pixels (FACELAB_MAX_IMAGE_PIXELS); downscale it first")
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 2, 3, 4)):
        raise ImageLoadError(f"expected an image array of shape (H, W) or (H, W, C) with C in 1..4, got {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ImageLoadError(f"image has zero size: shape {a.shape}")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        a = ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ImageLoadError("float image contains NaN or inf")
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if lo < -_FLOAT_SLACK or hi > 1.0 + _FLOAT_SLACK:
            hint = (" - it looks like 0-255: divide it by 255 or pass a uint8 array" if hi > 1.5 and lo >= -_FLOAT_SLACK
                    else "")
            raise ImageLoadError(f"a float image must hold values in [0, 1], got range [{lo:.3g}, {hi:.3g}]{hint}")
        a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    elif a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.integer) and a.min() >= 0 and a.max() <= 255:
            a = a.astype(np.uint8)
        else:
            raise ImageLoadError(f"unsupported image dtype {a.dtype} (expected uint8, uint16, bool or float in [0, 1])")
    if a.ndim == 2:
        a = a[:, :, None]
    c = a.shape[2]
    if c in (2, 4):
        alpha = a[:, :, -1:].astype(np.float32) / 255.0
        col = a[:, :, :-1].astype(np.float32)
        a = np.rint(col * alpha + background * (1.0 - alpha)).astype(np.uint8)
        c -= 1
    if c == 1:
        a = np.repeat(a, 3, axis=2)
    return np.ascontiguousarray(a)


def _pil_to_array(img) -> np.ndarray:
    from PIL import Image

    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(img)
        if mode == "I":  # 32-bit signed ints: 16-bit PNGs often decode to this
            hi = int(a.max()) if a.size else 0
            a = (a.astype(np.float64) / (65535.0 if hi > 255 else 255.0))
            return np.clip(a, 0, 1)
        return a.astype(np.uint16)
    if mode == "F":
        a = np.asarray(img, dtype=np.float64)
        hi = float(a.max()) if a.size else 0.0
        return np.clip(a / (hi if hi > 1.0 else 1.0), 0, 1)
    if mode == "1":
        return np.asarray(img.convert("L"))
    if mode in ("RGBA", "LA", "RGB", "L"):
        return np.asarray(img)
    if mode in ("P", "PA"):
        return np.asarray(img.convert("RGBA" if ("transparency" in img.info or mode == "PA") else "RGB"))
    if mode == "La":
        return np.asarray(img.convert("LA"))
    if mode in ("RGBa",):
        return np.asarray(img.convert("RGBA"))
    return np.asarray(img.convert("RGB"))


def load_image(path, *, background: int = 255) -> np.ndarray:
    """Load an image as an (H, W, 3) uint8 RGB array.

    Parameters
    ----------
    path : str, os.PathLike, bytes or np.ndarray
        An image file (JPEG, PNG, BMP, TIFF, WebP, GIF, ...), its raw bytes, or an array (normalised with
        :func:`to_rgb_uint8`).
    background : int
        Grey level that transparent pixels are composited onto (default white).

    Returns
    -------
    np.ndarray
        (H, W, 3) uint8 RGB, upright according to the EXIF orientation tag. Multi-frame files give their first frame.

    Raises
    ------
    ImageLoadError
        The file is missing, empty, not an image, truncated/corrupt, or has more pixels than
        :func:`max_image_pixels` (checked from the header, before decoding; PIL's ``DecompressionBombError`` is
        reported the same way).
    """
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(path, np.ndarray):
        return to_rgb_uint8(path, background=background)
    if isinstance(path, (bytes, bytearray, memoryview)):
        data, label = bytes(path), "<bytes>"
    elif isinstance(path, (str, os.PathLike)):
        p = Path(path)
        label = str(p)
        if not p.exists():
            raise ImageLoadError(f"image file not found: {label}")
        if p.is_dir():
            raise ImageLoadError(f"expected an image file, got a directory: {label}")
        data = p.read_bytes()
    else:
        raise ImageLoadError(f"expected a path, bytes or numpy array, got {type(path).__name__}")
    if len(data) == 0:
        raise ImageLoadError(f"image file is empty (0 bytes): {label}")
    limit = max_image_pixels()
    try:
        with warnings.catch_warnings():
            # PIL warns above its own limit (~89 Mpx); ours is checked below, before decoding
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img_ctx = Image.open(_io.BytesIO(data))
        with img_ctx as img:
            w, h = img.size
            if w * h > limit:
                raise ImageLoadError(f"image of {w} x {h} pixels is larger than the limit of {limit:,} pixels "
                                     f"(FACELAB_MAX_IMAGE_PIXELS): {label}; downscale it first")
            img.load()  # decode now, so truncation shows up here
            img = ImageOps.exif_transpose(img) or img
            arr = _pil_to_array(img)
    except ImageLoadError:
        raise
    except UnidentifiedImageError:
        raise ImageLoadError(f"not an image file (unrecognised format): {label}") from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"image is larger than PIL's decompression-bomb limit: {label} ({exc})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        msg = str(exc)
        kind = "truncated image" if ("truncated" in msg.lower() or "end of file" in msg.lower()
                                     or isinstance(exc, EOFError)) else "corrupt or unreadable image"
        raise ImageLoadError(f"{kind}: {label} ({type(exc).__name__}: {msg})") from None
    return to_rgb_uint8(arr, background=background)
