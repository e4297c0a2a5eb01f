"""Face-region masks for makeup edits (drawn by :mod:`facelab.core.regions`, re-exported here) and the checks MASQUE
runs before it draws one: which makeup word of a prompt the model has a region for (:func:`makeup_word`), and
whether the face's landmarks lie inside the image (:func:`check_landmarks_inside`)."""

from __future__ import annotations

import numpy as np
import torch

from facelab.core.landmarks import LANDMARKS
from facelab.core.regions import (MAKEUP_REGIONS, REGIONS, EmptyMaskError, face_region_masks, latent_mask,
                                  region_for_word)

__all__ = ["REGIONS", "MAKEUP_REGIONS", "EmptyMaskError", "LandmarksOutsideError", "region_for_word",
           "face_region_masks", "latent_mask", "makeup_word", "region_landmarks", "check_landmarks_inside"]

#: The landmarks each region is drawn from (what must lie inside the image for the region to be where it belongs).
_REGION_POINTS = {"lips": LANDMARKS["mouth"], "eyeshadow": np.concatenate([LANDMARKS["eyes"], LANDMARKS["brows"]]),
                  "eyeliner": LANDMARKS["eyes"],
                  "cheeks": np.concatenate([LANDMARKS["eyes"], LANDMARKS["mouth_corners"], LANDMARKS["nostrils"]]),
                  "face": np.arange(68)}


class LandmarksOutsideError(EmptyMaskError):
    """Landmarks of the region to edit lie outside the image (a face cut by the frame, or landmarks of another
    image size)."""


def makeup_word(prompt: str) -> tuple[str, str]:
    """The makeup word of a prompt that the model has a face region for, and that region:
    ``"a face of a person with red lipstick"`` -> ``("lipstick", "lips")`` (the last such word when there are several).

    Raises
    ------
    facelab.privacy.attention.PromptError
        The prompt names no word of the vocabulary of regions (:data:`MAKEUP_REGIONS`).
    """
    from facelab.privacy.attention import PromptError

    if not isinstance(prompt, str):
        raise PromptError(f"the makeup prompt must be a string, got {type(prompt).__name__}")
    words = prompt.lower().replace(",", " ").replace(".", " ").split()
    hits = [w for w in words if w in MAKEUP_REGIONS]
    if not hits:
        vocab = ", ".join(f"{w} -> {r}" for w, r in MAKEUP_REGIONS.items())
        raise PromptError(f"the prompt {prompt!r} names no makeup the model has a face region for; MASQUE edits "
                          f"one region named by a word of the prompt ({vocab}), e.g. "
                          f"'a face of a person with red lipstick'")
    return hits[-1], MAKEUP_REGIONS[hits[-1]]


def region_landmarks(region) -> np.ndarray:
    """Indices of the 68 landmarks a region (or list of regions) is drawn from."""
    regions = [region] if isinstance(region, str) else list(region)
    unknown = [r for r in regions if r not in _REGION_POINTS]
    if unknown:
        raise ValueError(f"unknown face region(s) {unknown}; choose from {REGIONS}")
    return np.unique(np.concatenate([_REGION_POINTS[r] for r in regions]))


def check_landmarks_inside(landmarks, size, region="face") -> np.ndarray:
    """Raise :class:`LandmarksOutsideError` when a landmark the region is drawn from lies outside the image.

    Parameters
    ----------
    landmarks : torch.Tensor or numpy.ndarray
        (N, 68, 2) or (68, 2) pixel (x, y) landmarks.
    size : int or (int, int)
        Image side, or (H, W).
    region : str or list of str
        Region(s) whose landmarks must be inside (default: all 68 points).

    Returns
    -------
    numpy.ndarray
        The landmarks as a float (N, 68, 2) array.
    """
    lm = landmarks.detach().cpu().numpy() if torch.is_tensor(landmarks) else np.asarray(landmarks, dtype=np.float64)
    if lm.ndim == 2:
        lm = lm[None]
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise EmptyMaskError(f"expected 68 landmarks per face, shape (N, 68, 2); got {lm.shape}")
    H, W = (size, size) if np.ndim(size) == 0 else tuple(size)
    pts = lm[:, region_landmarks(region)]
    finite = np.isfinite(pts).all(-1)
    inside = finite & (pts[..., 0] >= 0) & (pts[..., 0] <= W - 1) & (pts[..., 1] >= 0) & (pts[..., 1] <= H - 1)
    bad = np.flatnonzero(~inside.all(1))
    if len(bad):
        i = int(bad[0])
        worst = pts[i][~inside[i]][0]
        raise LandmarksOutsideError(
            f"{len(bad)} face(s) {bad[:10].tolist()} have landmarks of the {region} region outside the "
            f"{W}x{H} image (face {i}: point at x={worst[0]:.1f}, y={worst[1]:.1f}): the makeup region would be cut "
            f"off; crop or align the face so it lies inside the image (landmarks in pixels of this image)")
    return lm
