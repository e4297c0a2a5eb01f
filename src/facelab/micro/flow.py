"""Optical flow in landmark-located facial regions (OpenCV DIS or Farneback), and the flow features of the chapter.

- :func:`optical_flow` / :func:`flow_sequence`: dense flow between frames with OpenCV (``"dis"``: Kroeger et al.'s
  Dense Inverse Search, fast; ``"farneback"``: polynomial expansion), grayscale uint8 in, (H, W, 2) float32 out.
- :func:`face_box` and :func:`crop_faces`: one face box per clip from the 68 landmarks (so the crop does not jitter),
  frames cropped and resized to a fixed size.
- :func:`face_regions`: boxes around landmark groups (brows, eyes, nose, mouth, chin) in crop coordinates, the ROIs
  of the spotting methods.
- :func:`onset_apex_flow`: the recognition input of MMME / MEGC-style recognisers: flow from the onset frame to the
  apex frame, resized to a small grid, with its magnitude as a third channel.
"""

from __future__ import annotations

import numpy as np

__all__ = ["to_gray_uint8", "optical_flow", "flow_sequence", "face_box", "crop_faces", "face_regions",
           "REGION_LANDMARKS", "onset_apex_flow"]

#: iBUG-68 landmark groups of the facial regions used by the spotting methods.
REGION_LANDMARKS = {
    "left_brow": list(range(17, 22)), "right_brow": list(range(22, 27)),
    "left_eye": list(range(36, 42)), "right_eye": list(range(42, 48)),
    "nose": list(range(27, 36)), "mouth": list(range(48, 68)),
    "left_cheek": [1, 2, 3, 31, 48], "right_cheek": [13, 14, 15, 35, 54], "chin": list(range(5, 12)),
}


def to_gray_uint8(frames) -> np.ndarray:
    """(T, 3, H, W) or (T, H, W, 3) float in [0, 1] / uint8, torch or numpy -> (T, H, W) uint8 grayscale."""
    x = frames.detach().cpu().numpy() if hasattr(frames, "detach") else np.asarray(frames)
    if x.ndim == 3:  # already (T, H, W)
        gray = x
    elif x.ndim == 4 and x.shape[1] == 3:
        gray = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    elif x.ndim == 4 and x.shape[-1] == 3:
        gray = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
    else:
        raise ValueError(f"frames must be (T, 3, H, W), (T, H, W, 3) or (T, H, W), got shape {x.shape}")
    if x.dtype != np.uint8:
        if np.nanmax(gray) <= 1.0 + 1e-6:
            gray = gray * 255.0
        gray = np.clip(np.round(gray), 0, 255)
    return np.ascontiguousarray(gray.astype(np.uint8))


_DIS = {}


def optical_flow(prev: np.ndarray, nxt: np.ndarray, method: str = "dis") -> np.ndarray:
    """Dense optical flow from ``prev`` to ``nxt`` (grayscale uint8 of the same shape): (H, W, 2) float32 pixels."""
    import cv2

    if prev.shape != nxt.shape or prev.ndim != 2:
        raise ValueError(f"optical_flow needs two 2-D grayscale images of the same shape, got {prev.shape} and "
                         f"{nxt.shape}")
    if prev.dtype != np.uint8 or nxt.dtype != np.uint8:
        raise ValueError(f"optical_flow needs uint8 images (see to_gray_uint8), got {prev.dtype} and {nxt.dtype}")
    if method == "dis":
        dis = _DIS.get("fast")
        if dis is None:
            dis = _DIS["fast"] = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
        return dis.calc(prev, nxt, None)
    if method == "farneback":
        return cv2.calcOpticalFlowFarneback(prev, nxt, None, pyr_scale=0.5, levels=3, winsize=9, iterations=3,
                                            poly_n=5, poly_sigma=1.1, flags=0)
    raise ValueError(f"method must be 'dis' or 'farneback', got {method!r}")


def flow_sequence(gray: np.ndarray, pairs, method: str = "dis") -> np.ndarray:
    """Flow for each (i, j) frame-index pair of a (T, H, W) uint8 clip: (n_pairs, H, W, 2)."""
    pairs = list(pairs)
    out = np.zeros((len(pairs),) + gray.shape[1:] + (2,), dtype=np.float32)
    for n, (i, j) in enumerate(pairs):
        out[n] = optical_flow(gray[i], gray[j], method)
    return out


def face_box(landmarks, margin: float = 0.15) -> tuple[int, int, int, int]:
    """Square box (x0, y0, x1, y1) around the median landmarks of a clip ((T, 68, 2) or (68, 2)), with ``margin``."""
    lm = landmarks.detach().cpu().numpy() if hasattr(landmarks, "detach") else np.asarray(landmarks, dtype=float)
    if lm.ndim == 3:
        lm = np.median(lm, axis=0)
    if lm.shape != (68, 2) or not np.isfinite(lm).all():
        raise ValueError(f"landmarks must be finite (T, 68, 2) or (68, 2), got shape {lm.shape}")
    (x0, y0), (x1, y1) = lm.min(0), lm.max(0)
    # the 68 points stop at the brows: extend upwards to include the forehead strip above them
    y0 -= 0.15 * (y1 - y0)
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (int(round(cx - side / 2)), int(round(cy - side / 2)), int(round(cx + side / 2)), int(round(cy + side / 2)))


def crop_faces(gray: np.ndarray, box, size: int = 96) -> np.ndarray:
    """Crop every frame of a (T, H, W) uint8 clip to ``box`` (padded with edge pixels) and resize to ``size``."""
    import cv2

    x0, y0, x1, y1 = box
    T, H, W = gray.shape
    pad = max(0, -x0, -y0, x1 - W, y1 - H)
    if pad:
        gray = np.pad(gray, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
        x0, y0, x1, y1 = x0 + pad, y0 + pad, x1 + pad, y1 + pad
    return np.stack([cv2.resize(g[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA) for g in gray])


def face_regions(landmarks, box, size: int = 96, pad: float = 0.06) -> dict[str, tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1) in crop pixels around each landmark group of :data:`REGION_LANDMARKS`."""
    lm = landmarks.detach().cpu().numpy() if hasattr(landmarks, "detach") else np.asarray(landmarks, dtype=float)
    if lm.ndim == 3:
        lm = np.median(lm, axis=0)
    x0, y0, x1, y1 = box
    scale = size / (x1 - x0)
    pts = (lm - np.array([x0, y0])) * scale
    p = int(round(pad * size))
    out = {}
    for name, idx in REGION_LANDMARKS.items():
        (a, b), (c, d) = pts[idx].min(0), pts[idx].max(0)
        if name.endswith("brow"):  # brows move upwards: take the band above them too
            b -= 2 * p
        out[name] = (int(max(0, a - p)), int(max(0, b - p)), int(min(size, c + p + 1)), int(min(size, d + p + 1)))
    return out


def onset_apex_flow(gray_crops: np.ndarray, onset: int, apex: int, grid: int = 28, method: str = "dis", *,
                    stabilise: bool = False) -> np.ndarray:
    """(3, grid, grid) float32: u, v and magnitude of the onset -> apex flow of a cropped clip, in pixels / crop size.

    Flow is computed at crop resolution and area-averaged to ``grid`` x ``grid``; dividing by the crop size makes
    features comparable across face sizes. ``stabilise`` subtracts the median flow of the crop (the head's
    translation between onset and apex; facial actions move a minority of the pixels).
    """
    import cv2

    T = gray_crops.shape[0]
    if not (0 <= onset < T and 0 <= apex < T):
        raise ValueError(f"onset {onset} and apex {apex} must be frame indices of the clip (0 to {T - 1})")
    if apex < onset:
        raise ValueError(f"apex ({apex}) comes before onset ({onset})")
    f = optical_flow(gray_crops[onset], gray_crops[apex], method)
    if stabilise:
        f = f - np.median(f.reshape(-1, 2), axis=0)
    f = cv2.resize(f, (grid, grid), interpolation=cv2.INTER_AREA) * (100.0 / gray_crops.shape[1])
    mag = np.sqrt((f**2).sum(-1, keepdims=True))
    return np.concatenate([f, mag], axis=-1).transpose(2, 0, 1).astype(np.float32)
