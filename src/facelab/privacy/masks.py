r"""Face-region masks from the 68 iBUG landmarks: where a makeup edit is allowed to change the face.

MASQUE restricts its edit with a face-parsing network; none is available offline, so the regions here are drawn
from the 68 landmarks, which every face in the book has (the synthetic world renders them, the real photos get them
from :mod:`facelab.detect`). Each region is a polygon or an ellipse in image pixels, softened by a Gaussian whose
width is a fraction of the inter-ocular distance :math:`d` (so the masks scale with the face):

==============  =====================================================================================
region          drawn as
==============  =====================================================================================
``lips``        the outer lip contour (points 48-59), grown by :math:`0.04\,d`
``eyeshadow``   per eye, the area between the upper eyelid (36-39 / 42-45) and the brow (17-21 / 22-26)
``eyeliner``    per eye, a band of width :math:`0.10\,d` along the whole eye contour (36-41 / 42-47)
``cheeks``      per side, an ellipse centred between eye corner and mouth corner, radii
                :math:`0.42\,d \times 0.30\,d`
``face``        the convex hull of all 68 points
==============  =====================================================================================

:data:`MAKEUP_REGIONS` names the region of each makeup word of the synthetic world (``lipstick`` -> lips,
``eyeshadow`` -> eyeshadow, ``eyeliner`` -> eyeliner, ``blush`` -> cheeks). Missing landmarks (None, NaN, or
points that put the region outside the image) raise :class:`EmptyMaskError`: an empty mask would silently turn a
local edit into no edit at all.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["REGIONS", "MAKEUP_REGIONS", "EmptyMaskError", "region_for_word", "face_region_masks", "latent_mask"]

REGIONS = ("lips", "eyeshadow", "eyeliner", "cheeks", "face")
#: The face region each makeup word of the synthetic world lives in.
MAKEUP_REGIONS = {"lipstick": "lips", "lips": "lips", "eyeshadow": "eyeshadow", "eyeliner": "eyeliner",
                  "blush": "cheeks", "cheeks": "cheeks"}


class EmptyMaskError(ValueError):
    """A face-region mask came out empty (no landmarks, or landmarks that place the region outside the image)."""


def region_for_word(word: str) -> str:
    """The face region of a makeup word (``"red lipstick"`` -> ``"lips"``); ValueError for an unknown word."""
    for token in str(word).lower().split()[::-1]:
        if token in MAKEUP_REGIONS:
            return MAKEUP_REGIONS[token]
    raise ValueError(f"no face region known for the makeup word {word!r}; known words: "
                     f"{', '.join(sorted(MAKEUP_REGIONS))} (or pass region= one of {REGIONS})")


def _as_landmarks(landmarks, n_expected: int | None = None) -> np.ndarray:
    if landmarks is None:
        raise EmptyMaskError("no landmarks given: the makeup mask is drawn from the 68 face landmarks "
                             "(detect the face first, e.g. facelab.detect)")
    lm = landmarks.detach().cpu().numpy() if torch.is_tensor(landmarks) else np.asarray(landmarks, dtype=np.float64)
    if lm.ndim == 2:
        lm = lm[None]
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise EmptyMaskError(f"expected 68 landmarks per face, shape (N, 68, 2); got {lm.shape} "
                             f"(no face found, or a 5-point detector)")
    if n_expected is not None and lm.shape[0] != n_expected:
        raise ValueError(f"got landmarks for {lm.shape[0]} faces but {n_expected} images")
    bad = [i for i in range(lm.shape[0]) if not np.isfinite(lm[i]).all()]
    if bad:
        raise EmptyMaskError(f"landmarks missing (NaN/inf) for faces {bad[:10]}: no face was found there, so "
                             f"there is no region to put makeup on")
    return lm.astype(np.float64)


def _draw_region(canvas: np.ndarray, p: np.ndarray, region: str, scale: int) -> None:
    """Rasterise one region of one face into ``canvas`` (uint8, upsampled by ``scale`` for sub-pixel accuracy)."""
    q = p * scale
    d = np.linalg.norm(q[42:48].mean(0) - q[36:42].mean(0))
    poly = lambda idx: np.round(q[list(idx)]).astype(np.int32)
    if region == "lips":
        cv2.fillPoly(canvas, [poly(range(48, 60))], 255)
        cv2.polylines(canvas, [poly(range(48, 60))], True, 255, max(1, int(round(0.08 * d))))
    elif region == "eyeshadow":
        for lid, brow in (((36, 37, 38, 39), (21, 20, 19, 18, 17)), ((42, 43, 44, 45), (26, 25, 24, 23, 22))):
            lid_pts, brow_pts = q[list(lid)], q[list(brow)]
            # stop a little below the brow so the brow hair stays the person's own
            brow_pts = lid_pts.mean(0) + 0.8 * (brow_pts - lid_pts.mean(0))
            cv2.fillPoly(canvas, [np.round(np.vstack([lid_pts, brow_pts])).astype(np.int32)], 255)
    elif region == "eyeliner":
        for eye in (range(36, 42), range(42, 48)):
            cv2.polylines(canvas, [poly(eye)], True, 255, max(1, int(round(0.10 * d))))
    elif region == "cheeks":
        for eye_corner, mouth_corner, lower_lid in ((36, 48, 41), (45, 54, 46)):
            cx = 0.5 * (q[eye_corner, 0] + q[mouth_corner, 0])
            cy = 0.5 * (q[lower_lid, 1] + q[33, 1]) + 0.05 * d
            cv2.ellipse(canvas, (int(round(cx)), int(round(cy))),
                        (max(1, int(round(0.42 * d))), max(1, int(round(0.30 * d)))), 0, 0, 360, 255, -1)
    elif region == "face":
        cv2.fillPoly(canvas, [cv2.convexHull(np.round(q).astype(np.int32))], 255)
    else:
        raise ValueError(f"unknown face region {region!r}; choose from {REGIONS}")


def face_region_masks(landmarks, size, regions: str | Sequence[str] = "lips", *, soften: float = 0.05
                      ) -> torch.Tensor:
    """Soft masks (N, 1, H, W) in [0, 1] of face regions drawn from 68 landmarks.

    Parameters
    ----------
    landmarks : torch.Tensor or numpy.ndarray
        (N, 68, 2) (or (68, 2)) pixel (x, y) landmarks in the iBUG layout.
    size : int or (int, int)
        Image side, or (H, W).
    regions : str or sequence of str
        One or more of :data:`REGIONS`; several are united.
    soften : float
        Gaussian edge width as a fraction of the inter-ocular distance (0 = hard edges).

    Returns
    -------
    torch.Tensor
        Float masks, 1 inside the region.

    Raises
    ------
    EmptyMaskError
        Landmarks missing, or a face whose region does not fall inside the image.
    """
    lm = _as_landmarks(landmarks)
    H, W = (size, size) if np.isscalar(size) else tuple(size)
    regions = [regions] if isinstance(regions, str) else list(regions)
    if not regions:
        raise ValueError(f"give at least one region from {REGIONS}")
    scale = 4
    out = np.zeros((lm.shape[0], 1, H, W), np.float32)
    for i, p in enumerate(lm):
        canvas = np.zeros((H * scale, W * scale), np.uint8)
        for r in regions:
            _draw_region(canvas, p + 0.5 - 0.5 / scale, r, scale)
        m = cv2.resize(canvas, (W, H), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
        d = float(np.linalg.norm(p[42:48].mean(0) - p[36:42].mean(0)))
        if soften > 0 and d > 0:
            m = np.maximum(m, cv2.GaussianBlur(m, (0, 0), max(soften * d, 0.3)) * 1.5).clip(0, 1)
        out[i, 0] = m
    empty = [i for i in range(lm.shape[0]) if out[i].max() < 0.5]
    if empty:
        raise EmptyMaskError(f"the {'+'.join(regions)} mask is empty for faces {empty[:10]}: their landmarks put "
                             f"the region outside the {H}x{W} image")
    return torch.from_numpy(out)


def latent_mask(mask: torch.Tensor, latent_size, *, threshold: float = 0.05) -> torch.Tensor:
    """A pixel mask (N, 1, H, W) -> a binary mask on the latent grid (N, 1, h, w).

    A latent cell is inside when any pixel it covers has mask value above ``threshold`` (max-pooling), so the
    latent mask always covers the pixel mask: latent blending may change a little more than the region, the final
    pixel composite then trims it back.
    """
    h, w = (latent_size, latent_size) if np.isscalar(latent_size) else tuple(latent_size)
    pooled = F.adaptive_max_pool2d(mask.float(), (h, w))
    return (pooled > threshold).float()
