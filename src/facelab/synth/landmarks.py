"""The iBUG 68-point landmark layout of the synthetic faces: a symmetric mean shape, index groups and mirror pairs.

Coordinates are in the *frontal frame*: x to the image right, y down, both in [-1, 1] for the full image
(``F.grid_sample`` convention, ``align_corners=False``). The mean shape is a symmetrised average face in that frame;
identities and expressions are offsets from it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

# Average face in unit-box coordinates (the well-known aligned-face template used by dlib/OpenFace alignment),
# symmetrised below.
_TEMPLATE = np.array([
    (0.0792, 0.3392), (0.0829, 0.4570), (0.0968, 0.5756), (0.1221, 0.6919), (0.1687, 0.8003), (0.2398, 0.8957),
    (0.3257, 0.9771), (0.4223, 1.0433), (0.5318, 1.0608), (0.6413, 1.0398), (0.7381, 0.9723), (0.8244, 0.8896),
    (0.8948, 0.7925), (0.9394, 0.6815), (0.9611, 0.5622), (0.9706, 0.4418), (0.9712, 0.3221),
    (0.1638, 0.2492), (0.2178, 0.2043), (0.2913, 0.1924), (0.3675, 0.2036), (0.4393, 0.2331),
    (0.5864, 0.2281), (0.6602, 0.1959), (0.7375, 0.1824), (0.8132, 0.1928), (0.8708, 0.2353),
    (0.5153, 0.3186), (0.5162, 0.3962), (0.5171, 0.4738), (0.5182, 0.5532),
    (0.4337, 0.6041), (0.4755, 0.6208), (0.5207, 0.6343), (0.5659, 0.6188), (0.6071, 0.6016),
    (0.2524, 0.3311), (0.2987, 0.3026), (0.3557, 0.3030), (0.4037, 0.3387), (0.3525, 0.3500), (0.2968, 0.3505),
    (0.6313, 0.3341), (0.6791, 0.2965), (0.7360, 0.2947), (0.7829, 0.3213), (0.7403, 0.3418), (0.6850, 0.3437),
    (0.3532, 0.7462), (0.4146, 0.7191), (0.4777, 0.7068), (0.5227, 0.7171), (0.5698, 0.7054), (0.6352, 0.7157),
    (0.6995, 0.7394), (0.6394, 0.8052), (0.5764, 0.8354), (0.5254, 0.8417), (0.4764, 0.8375), (0.4138, 0.8100),
    (0.3801, 0.7500), (0.4780, 0.7451), (0.5234, 0.7489), (0.5711, 0.7433), (0.6724, 0.7442), (0.5725, 0.7766),
    (0.5240, 0.7834), (0.4776, 0.7819),
], dtype=np.float64)

from facelab.core.landmarks import GROUPS, LANDMARKS, MIRROR  # noqa: E402  (the layout is defined in the core)

JAW = LANDMARKS["jaw"]
BROW_R = LANDMARKS["brow_right"]
BROW_L = LANDMARKS["brow_left"]
NOSE_BRIDGE = LANDMARKS["nose_bridge"]
NOSTRILS = LANDMARKS["nostrils"]
EYE_R = LANDMARKS["eye_right"]
EYE_L = LANDMARKS["eye_left"]
LIPS_OUTER = LANDMARKS["lips_outer"]
LIPS_INNER = LANDMARKS["lips_inner"]


def span(name: str) -> slice:
    """A contiguous named group as a slice (indexing a tensor with it gives a view, not a copy)."""
    idx = LANDMARKS[name]
    if not (np.diff(idx) == 1).all():
        raise ValueError(f"landmark group {name!r} is not a contiguous range")
    return slice(int(idx[0]), int(idx[-1]) + 1)


def points(name: str) -> list[int]:
    """A named group as a list of ints."""
    return [int(i) for i in LANDMARKS[name]]


# ---- named single points and contours (subject's right = image left; "first"/"last" in image order)
JAW_RIGHT, JAW_LEFT = int(JAW[0]), int(JAW[-1])            # jaw ends at ear level (0 and 16)
CHIN = int(LANDMARKS["chin"][0])                           # 8
NOSE_ROOT, NOSE_TIP = int(NOSE_BRIDGE[0]), int(LANDMARKS["nose_tip"][0])   # 27, 30
SUBNASALE = int(NOSTRILS[2])                               # 33, below the nose tip
NOSTRIL_RIGHT, NOSTRIL_LEFT = int(NOSTRILS[0]), int(NOSTRILS[-1])   # 31, 35: the outer points of the nostrils
#: (outer nostril point, the next one towards the midline) per side (right, left): the alar wings
ALAR = ((int(NOSTRILS[0]), int(NOSTRILS[1])), (int(NOSTRILS[-1]), int(NOSTRILS[-2])))
EYE_RIGHT_OUTER, EYE_LEFT_OUTER = (int(i) for i in LANDMARKS["eye_corners_outer"])   # 36, 45
MOUTH_RIGHT, MOUTH_LEFT = (int(i) for i in LANDMARKS["mouth_corners"])              # 48, 54
UPPER_LIP_TOP, LOWER_LIP_BOTTOM = int(LIPS_OUTER[3]), int(LIPS_OUTER[9])            # 51, 57
#: the outer lips' upper contour (48..54), as a slice
UPPER_LIP_OUTER = slice(int(LIPS_OUTER[0]), int(LIPS_OUTER[6]) + 1)
#: lip contours from the right mouth corner to the left one (image left to right), for piecewise-linear curves
LIP_CONTOURS = {
    "outer_upper": [int(i) for i in LIPS_OUTER[0:7]],                                        # 48..54
    "outer_lower": [int(LIPS_OUTER[0])] + [int(i) for i in LIPS_OUTER[:6:-1]] + [int(LIPS_OUTER[6])],   # 48,59..55,54
    "inner_upper": [int(i) for i in LIPS_INNER[0:5]],                                        # 60..64
    "inner_lower": [int(LIPS_INNER[0])] + [int(i) for i in LIPS_INNER[:3:-1]],               # 60,67,66,65,64
}


class EyePoints(NamedTuple):
    """The six points of one eye in image order: corners ``first`` (image left) and ``last``, the two upper-lid and
    the two lower-lid points (left to right), the ``outer`` corner, the lower lid's point nearer the nose
    (``lower_inner``), and the whole group as a slice."""
    group: slice
    first: int
    last: int
    upper: list
    lower: list
    outer: int
    lower_inner: int


def _eye(name: str) -> EyePoints:
    g = [int(i) for i in LANDMARKS[name]]
    right = name == "eye_right"
    return EyePoints(span(name), g[0], g[3], [g[1], g[2]], [g[5], g[4]], g[0] if right else g[3],
                     g[4] if right else g[5])


#: The subject's right eye (image left) and left eye, in that order (the side index of ``aus[:, :, side]``).
EYES = (_eye("eye_right"), _eye("eye_left"))
#: The brows' points per side (right, left), each from image left to right.
BROWS = (points("brow_right"), points("brow_left"))


def _symmetrise(t: np.ndarray) -> np.ndarray:
    centre_x = 0.5 * (t[:, 0].mean() + (t[MIRROR, 0]).mean())
    mirrored = t[MIRROR].copy()
    mirrored[:, 0] = 2 * centre_x - mirrored[:, 0]
    s = 0.5 * (t + mirrored)
    s[:, 0] -= centre_x
    return s


def mean_shape() -> torch.Tensor:
    """The symmetric mean shape (68, 2) in the frontal frame: eyes at y ~ -0.22, chin at y ~ 0.62."""
    s = _symmetrise(_TEMPLATE)
    scale = 1.08
    out = np.empty_like(s)
    out[:, 0] = s[:, 0] * scale
    out[:, 1] = (s[:, 1] - 0.32) * scale - 0.18
    return torch.tensor(out, dtype=torch.float32)


def side_weights() -> torch.Tensor:
    """(68, 2) weights of each landmark on the subject's (right, left) half: midline points get 0.5 each.

    The subject's right side is the image left (x < 0), as on a photograph of a person facing the camera.
    """
    x = mean_shape()[:, 0]
    right = torch.where(x < -1e-3, 1.0, torch.where(x > 1e-3, 0.0, 0.5))
    return torch.stack([right, 1.0 - right], dim=1)
