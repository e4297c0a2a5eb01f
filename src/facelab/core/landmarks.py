"""The iBUG 68-point landmark layout, by name.

Every part of the book that reads landmarks (the synthetic renderer, alignment, region masks, attacks) uses these
named groups instead of raw slices: ``L[..., LANDMARKS["eye_left"], :]`` rather than ``L[..., 42:48, :]``.
"Left" and "right" are the *subject's* sides: the subject's right eye (points 36-41) is on the image left of a
frontal photo, as in dlib's documentation of the layout.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LANDMARKS", "GROUPS", "MIRROR", "N_LANDMARKS", "group", "group_mean"]

N_LANDMARKS = 68

#: Named index groups of the 68-point layout (index arrays, usable on numpy arrays and torch tensors alike).
LANDMARKS: dict[str, np.ndarray] = {
    "jaw": np.arange(0, 17),
    "brow_right": np.arange(17, 22),     # subject's right brow (image left)
    "brow_left": np.arange(22, 27),
    "nose_bridge": np.arange(27, 31),
    "nostrils": np.arange(31, 36),
    "eye_right": np.arange(36, 42),      # subject's right eye (image left)
    "eye_left": np.arange(42, 48),
    "lips_outer": np.arange(48, 60),
    "lips_inner": np.arange(60, 68),
}
# Unions and single points used often enough to deserve a name.
LANDMARKS["brows"] = np.concatenate([LANDMARKS["brow_right"], LANDMARKS["brow_left"]])
LANDMARKS["eyes"] = np.concatenate([LANDMARKS["eye_right"], LANDMARKS["eye_left"]])
LANDMARKS["nose"] = np.concatenate([LANDMARKS["nose_bridge"], LANDMARKS["nostrils"]])
LANDMARKS["mouth"] = np.concatenate([LANDMARKS["lips_outer"], LANDMARKS["lips_inner"]])
LANDMARKS["inner_face"] = np.arange(17, 68)
LANDMARKS["nose_tip"] = np.array([30])
LANDMARKS["chin"] = np.array([8])
LANDMARKS["mouth_corners"] = np.array([48, 54])
LANDMARKS["eye_corners_outer"] = np.array([36, 45])

#: The nine anatomical groups that partition the 68 points (no unions), for plots and tests.
GROUPS = {k: LANDMARKS[k] for k in ("jaw", "brow_right", "brow_left", "nose_bridge", "nostrils", "eye_right",
                                    "eye_left", "lips_outer", "lips_inner")}

#: Index of each landmark's mirror image (left-right flip of a face).
MIRROR = np.array(
    list(range(16, -1, -1))                      # jaw 0..16
    + list(range(26, 21, -1)) + list(range(21, 16, -1))   # brows 17..21 <-> 26..22
    + [27, 28, 29, 30]                           # nose bridge
    + [35, 34, 33, 32, 31]                       # nostrils
    + [45, 44, 43, 42, 47, 46]                   # right eye (image left) 36..41 -> left eye
    + [39, 38, 37, 36, 41, 40]                   # left eye 42..47 -> right eye
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]    # outer lips 48..59
    + [64, 63, 62, 61, 60, 67, 66, 65]           # inner lips 60..67
)


def group(name: str) -> np.ndarray:
    """Indexes of a named landmark group; a clear error lists the names for an unknown one."""
    try:
        return LANDMARKS[name]
    except KeyError:
        raise KeyError(f"unknown landmark group {name!r}; known groups: {', '.join(sorted(LANDMARKS))}") from None


def group_mean(landmarks, name: str):
    """Mean point of a named group over the landmark axis: (..., 68, 2) -> (..., 2); numpy or torch."""
    return landmarks[..., group(name), :].mean(-2)
