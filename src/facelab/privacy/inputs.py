"""Input checks shared by the privacy attacks: is this a batch of faces with usable landmarks?"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facelab.core.images import check_images
from facelab.core.landmarks import group_mean

__all__ = ["NotAFaceError", "check_faces"]


class NotAFaceError(ValueError):
    """An input image does not look like a face to the reference recogniser."""


def check_faces(images: torch.Tensor, landmarks: torch.Tensor, reference=None,
                reference_embeddings: torch.Tensor | None = None, min_similarity: float | None = None) -> None:
    """Reject inputs that are not faces.

    Checks that ``images`` is a float (N, 3, H, W) batch in [0, 1], that ``landmarks`` is (N, 68, 2), finite and
    inside the image (up to 10 % of its side beyond the border, where a jaw line may run) with a plausible face layout (eyes above the nose tip above the mouth, inter-ocular distance at least
    8 % of the width), and, when a ``reference`` recogniser (:class:`facelab.models.FaceModel`) and embeddings of
    known faces are given, that every image's best cosine similarity to those faces reaches ``min_similarity``.

    Raises
    ------
    NotAFaceError
        Saying which images failed and why.
    """
    check_images(images, channels=(3,), allow_empty=True)
    lm = torch.as_tensor(landmarks, dtype=torch.float32)
    if lm.dim() != 3 or lm.shape[0] != images.shape[0] or lm.shape[1:] != (68, 2):
        raise NotAFaceError(f"expected 68 landmarks per image, shape ({images.shape[0]}, 68, 2); got "
                            f"{tuple(lm.shape)} (detect the face first: facelab.detect)")
    H, W = images.shape[-2:]
    bad = []
    for i in range(lm.shape[0]):
        p = lm[i]
        eye_r, eye_l = group_mean(p, "eye_right"), group_mean(p, "eye_left")
        nose, mouth = group_mean(p, "nose_tip"), group_mean(p, "mouth")
        why = None
        out = (p[:, 0] < -0.1 * W) | (p[:, 0] > 1.1 * W) | (p[:, 1] < -0.1 * H) | (p[:, 1] > 1.1 * H)
        if not torch.isfinite(p).all():
            why = "landmarks are not finite (NaN or inf)"
        elif out.any():
            k = int(torch.nonzero(out)[0])
            why = (f"landmarks outside the image: {int(out.sum())} of 68 points, e.g. point {k} at "
                   f"({float(p[k, 0]):.1f}, {float(p[k, 1]):.1f}), lie more than 10% outside the {W}x{H} image "
                   f"(landmarks are pixel coordinates of this image)")
        elif (eye_l - eye_r).norm() < 0.08 * W:
            why = "eyes closer than 8% of the image width"
        elif not (max(eye_r[1], eye_l[1]) < nose[1] < mouth[1]):
            why = "eyes, nose and mouth not in face order"
        if why:
            bad.append(f"image {i}: {why}")
    if bad:
        raise NotAFaceError("not a face: " + "; ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""))
    if reference is not None and reference_embeddings is not None and min_similarity is not None:
        with torch.no_grad():
            e = F.normalize(reference.embed(images, lm), dim=1)
            best = (e @ F.normalize(reference_embeddings.to(e.device), dim=1).T).amax(1)
        low = torch.nonzero(best < min_similarity).flatten().tolist()
        if low:
            raise NotAFaceError(f"not a face for {reference.name}: images {low} have best similarity "
                                f"{[round(float(best[i]), 3) for i in low]} to known faces, below {min_similarity}")
