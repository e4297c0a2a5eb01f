"""The iBUG 68-point landmark layout of the synthetic faces: a symmetric mean shape, index groups and mirror pairs.

Coordinates are in the *frontal frame*: x to the image right, y down, both in [-1, 1] for the full image
(``F.grid_sample`` convention, ``align_corners=False``). The mean shape is a symmetrised average face in that frame;
identities and expressions are offsets from it.
"""

from __future__ import annotations

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
