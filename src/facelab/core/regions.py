r"""Face-region masks drawn from the 68 iBUG landmarks.

Two families, for two uses:

* :func:`face_region_masks` - **soft makeup regions** (lips, eyeshadow, eyeliner, cheeks, face), rasterised with
  OpenCV at 4x supersampling and softened by a Gaussian whose width is a fraction of the inter-ocular distance
  :math:`d` (so the masks scale with the face). MASQUE restricts its edit with them (a face-parsing network is not
  available offline; every face in the book has 68 landmarks: the synthetic world renders them, real photos get
  them from :mod:`facelab.detect`).
* :func:`face_outline_mask` - **binary face outlines** (jaw line closed by the brows, shrunk, or extended over the
  forehead), rasterised in torch on the batch's device; the synthetic attacks paste and cover faces with them.

==============  =====================================================================================
region          drawn as (:func:`face_region_masks`)
==============  =====================================================================================
``lips``        the outer lip contour (``lips_outer``), grown by :math:`0.04\,d`
``eyeshadow``   per eye, the area between the upper eyelid and the brow (stopping at 80 % of the way)
``eyeliner``    per eye, a band of width :math:`0.10\,d` along the whole eye contour
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

from facelab.core.geometry import pixel_grid
from facelab.core.landmarks import LANDMARKS, group_mean

__all__ = ["REGIONS", "MAKEUP_REGIONS", "OUTLINES", "EmptyMaskError", "region_for_word", "face_region_masks",
           "latent_mask", "face_outline_mask", "polygon_mask", "ellipse_mask"]

REGIONS = ("lips", "eyeshadow", "eyeliner", "cheeks", "face")
#: The regions with a left and a right part (one on each side of the face)
TWO_SIDED = ("eyeshadow", "eyeliner", "cheeks")
#: The face region each makeup word of the synthetic world lives in.
MAKEUP_REGIONS = {"lipstick": "lips", "lips": "lips", "eyeshadow": "eyeshadow", "eyeliner": "eyeliner",
                  "blush": "cheeks", "cheeks": "cheeks"}
#: The outlines of :func:`face_outline_mask`.
OUTLINES = ("face", "inner", "full")

# named points used below (indexes into the 68)
_ER, _EL = LANDMARKS["eye_right"], LANDMARKS["eye_left"]
_MOUTH_R, _MOUTH_L = LANDMARKS["mouth_corners"]
_NOSE_BASE = LANDMARKS["nostrils"][2]                   # the centre of the nostril row (point 33)


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


def _interocular(p: np.ndarray) -> float:
    return float(np.linalg.norm(group_mean(p, "eye_left") - group_mean(p, "eye_right")))


def _draw_region(canvas: np.ndarray, p: np.ndarray, region: str, scale: int) -> None:
    """Rasterise one region of one face into ``canvas`` (uint8, upsampled by ``scale`` for sub-pixel accuracy)."""
    q = p * scale
    d = _interocular(q)
    poly = lambda idx: np.round(q[idx]).astype(np.int32)
    if region == "lips":
        cv2.fillPoly(canvas, [poly(LANDMARKS["lips_outer"])], 255)
        cv2.polylines(canvas, [poly(LANDMARKS["lips_outer"])], True, 255, max(1, int(round(0.08 * d))))
    elif region == "eyeshadow":
        # the upper lid (each eye's first four points, corner to corner over the top) and the brow reversed: a loop
        for eye, brow in ((_ER, LANDMARKS["brow_right"]), (_EL, LANDMARKS["brow_left"])):
            lid_pts, brow_pts = q[eye[:4]], q[brow[::-1]]
            # stop a little below the brow so the brow hair stays the person's own
            brow_pts = lid_pts.mean(0) + 0.8 * (brow_pts - lid_pts.mean(0))
            cv2.fillPoly(canvas, [np.round(np.vstack([lid_pts, brow_pts])).astype(np.int32)], 255)
    elif region == "eyeliner":
        for eye in (_ER, _EL):
            cv2.polylines(canvas, [poly(eye)], True, 255, max(1, int(round(0.10 * d))))
    elif region == "cheeks":
        # (outer eye corner, mouth corner, lower-lid point) on each side
        for eye_corner, mouth_corner, lower_lid in ((_ER[0], _MOUTH_R, _ER[5]), (_EL[3], _MOUTH_L, _EL[4])):
            cx = 0.5 * (q[eye_corner, 0] + q[mouth_corner, 0])
            cy = 0.5 * (q[lower_lid, 1] + q[_NOSE_BASE, 1]) + 0.05 * d
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
        Float masks on the CPU, 1 inside the region.

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
        d = _interocular(p)
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


# ------------------------------------------------------------------------------------ binary outlines (torch)

def polygon_mask(poly: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Even-odd rule rasterisation of polygons: ``poly`` (N, E, 2) pixel (x, y) -> float mask (N, 1, H, W).

    A pixel (centre at integer coordinates) is inside when an odd number of edge crossings of its row lie to its
    right. Scanline form: each row's crossings are sorted and counted with ``searchsorted``, which costs
    O(N H W log E) instead of O(N E H W). Runs on the polygons' device.
    """
    device = poly.device
    n = poly.shape[0]
    rows = torch.arange(height, device=device, dtype=torch.float32).view(1, 1, height)
    cols = torch.arange(width, device=device, dtype=torch.float32)
    v = poly.float()
    vn = torch.roll(v, -1, dims=1)
    vx, vy = v[..., 0:1], v[..., 1:2]
    wx, wy = vn[..., 0:1], vn[..., 1:2]
    straddle = (vy > rows) != (wy > rows)                                 # (N, E, H)
    dy = torch.where((wy - vy).abs() < 1e-6, torch.full_like(wy, 1e-6), wy - vy)
    x_cross = vx + (rows - vy) * (wx - vx) / dy
    x_cross = torch.where(straddle, x_cross, torch.full_like(x_cross, float("inf")))
    crossings = torch.sort(x_cross.transpose(1, 2), dim=-1).values.contiguous()   # (N, H, E)
    valid = straddle.sum(1)                                               # (N, H)
    left = torch.searchsorted(crossings, cols.expand(n, height, width).contiguous(), right=True)
    right_of = valid.unsqueeze(-1) - left
    return (right_of % 2 == 1).float().unsqueeze(1)


def ellipse_mask(height: int, width: int, n: int, device=None, cx: float = 0.5, cy: float = 0.52, rx: float = 0.34,
                 ry: float = 0.44) -> torch.Tensor:
    """Binary axis-aligned ellipse (N, 1, H, W); centre and radii are fractions of the image size."""
    px, py = pixel_grid(height, width, device)
    r = ((px + 0.5) / width - cx) ** 2 / rx ** 2 + ((py + 0.5) / height - cy) ** 2 / ry ** 2
    return (r <= 1.0).float().expand(n, 1, height, width).clone()


def face_outline_mask(landmarks: torch.Tensor | None, height: int, width: int, region: str = "face",
                      n: int | None = None, device=None) -> torch.Tensor:
    """Binary mask ``(N, 1, H, W)`` of a face outline from iBUG-68 landmarks.

    Parameters
    ----------
    landmarks : torch.Tensor or None
        ``(N, 68, 2)`` pixel (x, y). ``None`` assumes a centred, aligned face and returns an ellipse.
    height, width : int
        Image size.
    region : {"face", "inner", "full"}
        ``"face"``: jaw line closed by the eyebrows; ``"inner"``: the same shrunk by 8% towards its centre (the
        part a face swap replaces); ``"full"``: the face with the forehead (brows lifted by 35% of the
        brow-to-chin distance), the area a rigid mask covers.
    n, device : optional
        Batch size and device, needed only when ``landmarks`` is ``None``.
    """
    if region not in OUTLINES:
        raise ValueError(f"region must be 'face', 'inner' or 'full', got {region!r}")
    if landmarks is None:
        if n is None:
            raise ValueError("face_outline_mask (synth.attacks.face_region_mask) needs n (batch size) when landmarks is None")
        scale = {"face": (0.30, 0.38), "inner": (0.27, 0.34), "full": (0.33, 0.45)}[region]
        cy = 0.52 if region != "full" else 0.48
        return ellipse_mask(height, width, n, device, cy=cy, rx=scale[0], ry=scale[1])
    lm = landmarks.float()
    jaw = lm[:, LANDMARKS["jaw"]]
    brows = lm[:, LANDMARKS["brows"]].flip(1)                            # right-to-left closes the loop
    if region == "full":
        up = group_mean(lm, "brows").unsqueeze(1) - lm[:, LANDMARKS["chin"]]
        brows = brows + 0.35 * up
    poly = torch.cat([jaw, brows], dim=1)
    if region == "inner":
        centre = poly.mean(1, keepdim=True)
        poly = centre + 0.92 * (poly - centre)
    return polygon_mask(poly, height, width)
