"""Per-identity head and feature shape of the world's ``style="photo"`` beyond the shared geometry (issue 26).

The default ``"cartoon"`` style never calls this module. For ``"photo"`` identities, :func:`photo_head` takes a
second set of standard-normal numbers of each identity (drawn from the identity's photo generator after its
appearance numbers, so everything else about the person stays as it was) and returns

* landmark offsets (n, 68, 2), left-right symmetric, made of named modes -- jaw width at the angle, cheek fullness,
  chin width and point, forehead-to-brow distance (through the brows' height), brow length, inner-brow height and
  outer-brow drop, upper-lid peak, eye opening, nose-bridge width, nostril flare, nose-tip height, cupid's bow,
  mouth-corner height -- plus a small symmetric per-landmark detail (:data:`DETAIL`), each mode with a spread in
  frontal-frame units (:data:`MODES`);
* new values of the identity's ``face`` columns that only the head drawing reads (forehead height, cheek fullness,
  ear size, neck width) over wider ranges (:data:`FACE_RANGES`).

What was measured (world seed 101, 100 identities x 4 images, mild nuisance; dlib ResNet at distance 0.6, the
impostor-pair acceptance 0.176 before this module): giving every identity the same *inner* landmarks (brows, eyes,
nose, mouth) raises it to 0.62, the same brows alone to 0.28, while the same jaw contour leaves it at 0.18, the same
``face`` columns (forehead, nose depth, cheeks, ears, neck, age) at 0.17 and the same hair at 0.19 (no hair at all:
0.22). dlib's aligned chip is the inner face: the head outline, ears and neck barely count. With this module alone
the acceptance is 0.163 (twice the spreads 0.159, a wider :data:`facelab.synth.identity.PHOTO_SPREAD` 0.158). Next to
the half relief of :data:`facelab.synth.render.PHOTO_RELIEF` and the split skin of :mod:`facelab.synth.appearance`
the modes no longer move dlib (FAR on world seeds 101, 202, 303, 404 without them 0.153, 0.174, 0.192, 0.143; with
them 0.149, 0.175, 0.187, 0.150), but they lower SFace's FAR (seeds 101, 202: 0.224, 0.179 -> 0.204, 0.154), so they
stay; ``benchmarks/bench_synth_realism.py`` reruns these ablations. The ``face`` ranges are measured neutral.
"""

from __future__ import annotations

import torch

from facelab.synth.fields import Face
from facelab.synth.landmarks import MIRROR, mean_shape

#: how many standard-normal numbers per identity :func:`photo_head` reads
N_HEAD = 160
#: spread (frontal-frame units at z = 1) of each named symmetric mode
MODES = {"jaw_angle": 0.03, "cheeks": 0.02, "chin_width": 0.02, "chin_point": 0.02, "brow_height": 0.02,
         "brow_length": 0.02, "brow_inner": 0.015, "brow_outer": 0.015, "lid_peak": 0.01, "eye_open": 0.008,
         "bridge": 0.008, "nostril_flare": 0.015, "tip": 0.012, "cupid": 0.006, "mouth_corners": 0.012}
#: spread of the symmetric per-landmark detail
DETAIL = 0.02
#: new ranges (low, high) of the ``face`` columns drawn around the head
FACE_RANGES = {Face.FOREHEAD: (0.7, 1.3), Face.CHEEKS: (0.0, 1.0), Face.EARS: (0.7, 1.35), Face.NECK: (0.65, 1.2)}


def _symmetric(off: torch.Tensor) -> torch.Tensor:
    """The left-right symmetric part of landmark offsets (n, 68, 2)."""
    mir = off[:, torch.as_tensor(MIRROR)] * torch.tensor([-1.0, 1.0])
    return 0.5 * (off + mir)


def photo_head(z: torch.Tensor, face: torch.Tensor, strength: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(landmark offsets (n, 68, 2), new ``face`` (n, 6)) of identities with standard-normal numbers ``z``
    (n, >= :data:`N_HEAD`); ``face`` is the identity's current ``face`` (its age and nose depth are kept)."""
    if z.dim() != 2 or z.shape[1] < N_HEAD:
        raise ValueError(f"photo_head needs (n, >= {N_HEAD}) numbers, got {tuple(z.shape)}")
    n = z.shape[0]
    z = z.float().clamp(-2.5, 2.5)
    m = mean_shape()
    off = torch.zeros(n, 68, 2)
    k = iter(range(len(MODES)))
    s = {name: z[:, next(k)] * sd * strength for name, sd in MODES.items()}
    side = torch.sign(m[:, 0])                        # -1 on the image left (subject's right), +1 on the right
    # jaw: width at the angle (points 3-5, 11-13), cheeks (1-3, 13-15), chin width (6-10) and point (8 down)
    for idx, w in (([3, 13], 0.7), ([4, 12], 1.0), ([5, 11], 0.8)):
        off[:, idx, 0] += s["jaw_angle"][:, None] * w * side[idx]
    for idx, w in (([1, 15], 0.6), ([2, 14], 1.0), ([3, 13], 0.5)):
        off[:, idx, 0] += s["cheeks"][:, None] * w * side[idx]
    for idx, w in (([6, 10], 1.0), ([7, 9], 0.6)):
        off[:, idx, 0] += s["chin_width"][:, None] * w * side[idx]
    off[:, [7, 8, 9], 1] += s["chin_point"][:, None] * torch.tensor([0.5, 1.0, 0.5])
    # brows (17-21 image left, 22-26 image right; inner ends 21, 22, outer ends 17, 26)
    brows = list(range(17, 27))
    off[:, brows, 1] -= s["brow_height"][:, None]
    off[:, [17, 26], 0] += s["brow_length"][:, None] * side[[17, 26]]
    off[:, [18, 25], 0] += 0.5 * s["brow_length"][:, None] * side[[18, 25]]
    off[:, [21, 22], 1] -= s["brow_inner"][:, None]
    off[:, [20, 23], 1] -= 0.5 * s["brow_inner"][:, None]
    off[:, [17, 26], 1] += s["brow_outer"][:, None]
    # eyes: the upper lid's peak moves out or in (37, 38 / 43, 44), the opening grows or shrinks
    off[:, [37, 38, 43, 44], 0] += s["lid_peak"][:, None] * side[[37, 38, 43, 44]]
    off[:, [37, 38, 43, 44], 1] -= s["eye_open"][:, None]
    off[:, [40, 41, 46, 47], 1] += 0.5 * s["eye_open"][:, None]
    # nose: bridge (27-29 stay on the midline; the nostrils' inner points follow), flare, tip height
    off[:, [32, 34], 0] += s["bridge"][:, None] * side[[32, 34]]
    off[:, [31, 35], 0] += s["nostril_flare"][:, None] * side[[31, 35]]
    off[:, 30, 1] += s["tip"]
    off[:, [31, 32, 33, 34, 35], 1] += 0.5 * s["tip"][:, None]
    # mouth: cupid's bow (50, 52 up, 51 down) and the corners (48, 54; 60, 64) up or down
    off[:, [50, 52], 1] -= s["cupid"][:, None]
    off[:, 51, 1] += 0.5 * s["cupid"]
    off[:, [48, 54, 60, 64], 1] += s["mouth_corners"][:, None]
    # symmetric per-landmark detail
    start = len(MODES)
    detail = z[:, start:start + 136].reshape(n, 68, 2) * DETAIL * strength
    off = _symmetric(off + detail)
    # the face columns drawn around the head, from the last numbers (Gaussian -> uniform through the normal CDF)
    face = face.clone()
    u = 0.5 * (1 + torch.erf(z[:, start + 136:start + 136 + len(FACE_RANGES)] / 2 ** 0.5))
    for j, (col, (lo, hi)) in enumerate(FACE_RANGES.items()):
        face[:, col] = lo + (hi - lo) * u[:, j]
    return off, face
