"""Image input: any common image file to an (H, W, 3) uint8 RGB array, with clear errors.

``load_image`` accepts a path (``str`` / ``os.PathLike``), raw ``bytes``, or an already decoded ``numpy`` array
(which it only normalises). It handles grey, grey+alpha, RGBA (composited on white), palette, 16-bit and float
images and applies the EXIF orientation tag, so a photo taken with a rotated phone comes out upright.
Anything that is not a readable image raises :class:`ImageLoadError` (a ``ValueError``) naming the file and the
reason: missing file, empty file, not an image, truncated image.
"""

from __future__ import annotations

import io as _io
import os
from pathlib import Path

import numpy as np

__all__ = ["ImageLoadError", "load_image", "to_rgb_uint8"]


class ImageLoadError(ValueError):
    """A file could not be read as an image (missing, empty, not an image, truncated)."""


def to_rgb_uint8(array: np.ndarray, *, background: int = 255) -> np.ndarray:
    """Convert a decoded image array to (H, W, 3) uint8 RGB.

    Parameters
    ----------
    array : np.ndarray
        (H, W) grey, (H, W, 1), (H, W, 2) grey+alpha, (H, W, 3) RGB or (H, W, 4) RGBA; dtype uint8, uint16
        (scaled by 1/257), bool, or float in [0, 1].
    background : int
        Grey level that transparent pixels are composited onto.

    Returns
    -------
    np.ndarray
        (H, W, 3) uint8, C-contiguous.
    """
    a = np.asarray(array)
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
        The file is missing, empty, not an image, or truncated/corrupt.
    """
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
    try:
        with Image.open(_io.BytesIO(data)) as img:
            img.load()  # decode now, so truncation shows up here
            img = ImageOps.exif_transpose(img) or img
            arr = _pil_to_array(img)
    except UnidentifiedImageError:
        raise ImageLoadError(f"not an image file (unrecognised format): {label}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        msg = str(exc)
        kind = "truncated image" if ("truncated" in msg.lower() or "end of file" in msg.lower()
                                     or isinstance(exc, EOFError)) else "corrupt or unreadable image"
        raise ImageLoadError(f"{kind}: {label} ({type(exc).__name__}: {msg})") from None
    return to_rgb_uint8(arr, background=background)
