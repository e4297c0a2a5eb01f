r"""Face alignment: a similarity transform (rotation, uniform scale, translation) that maps a face's landmarks onto
a canonical template, then resampling into a square chip.

Two templates:

* ``"dlib-150"``: dlib's face chips (``dlib.get_face_chip(img, shape, size=150, padding=0.25)``), the input of
  dlib's ResNet face recogniser. The template is dlib's mean face: five points for the 5-point predictor, points
  27-54 and 60-64 of the 68-point mean shape for the 68-point predictor, each placed at
  :math:`(\text{padding} + p)/(2\,\text{padding} + 1)\cdot\text{size}`. Like dlib, large reductions go through an
  image pyramid (halvings) first so bilinear sampling does not alias.
* ``"arcface-112"``: the five-point 112x112 template of ArcFace/InsightFace, the input of SFace.

The transform is the least-squares similarity (Umeyama 1991) from template (chip) coordinates to image
coordinates, as dlib computes it: :func:`facelab.core.geometry.umeyama` (numpy) and
:func:`facelab.core.geometry.umeyama_torch` (closed form, differentiable). Pixel centres are at integer coordinates.

:func:`align_faces` works on one uint8 image and a list of :class:`facelab.detect.Face`; :func:`align_batch_torch`
is a batched differentiable version (``affine_grid``/``grid_sample``) for chapters that backpropagate through
alignment (gradients reach the image and the landmarks).
"""

from __future__ import annotations

import numpy as np

from facelab.core.geometry import eyes_nose_mouth, umeyama, warp_matrix_to_theta
from facelab.core.landmarks import LANDMARKS

__all__ = ["TEMPLATES", "ARCFACE_112", "similarity_transform", "template_points", "face_transform",
           "align_faces", "align_batch_torch", "warp_matrix_to_theta", "dlib_chip_convention"]

TEMPLATES = ("dlib-150", "arcface-112")

#: ArcFace / InsightFace 112x112 template: eye on the image's left, eye on the right, nose tip, mouth corners.
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655],
                        [70.7299, 92.2041]], dtype=np.float64)

# dlib's mean face for its 5-point predictor (interpolation.h, get_face_chip_details), unit square.
_DLIB5_MEAN = np.array([[0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677],
                        [0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242],
                        [0.4901123135679, 0.6277975316475]], dtype=np.float64)

# dlib's mean positions of the 68-point shape, points 17..67 (same source), unit square.
_DLIB68_X = [0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124, 0.904991, 0.98004,
             0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036, 0.490127, 0.554217, 0.613373, 0.121737,
             0.187122, 0.265825, 0.334606, 0.260918, 0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751,
             0.719335, 0.254149, 0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
             0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874, 0.553364, 0.490127,
             0.42689]
_DLIB68_Y = [0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891, 0.0187482, 0.038915,
             0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326, 0.609345, 0.628106, 0.609345, 0.587326,
             0.216423, 0.178758, 0.179852, 0.231733, 0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423,
             0.244077, 0.245099, 0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
             0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746, 0.784792, 0.824182,
             0.831803, 0.824182]
_DLIB68_MEAN = np.stack([_DLIB68_X, _DLIB68_Y], axis=1)  # rows are points 17..67
#: the 68-point indices dlib uses for chips: nose, eyes, upper outer lip (48..54) and upper inner lip (60..64);
#: no jaw, eyebrows or lower lip
DLIB68_USED = np.concatenate([LANDMARKS["nose"], LANDMARKS["eyes"], LANDMARKS["lips_outer"][:7],
                              LANDMARKS["lips_inner"][:5]])


def _mean68(i):
    return _DLIB68_MEAN[np.asarray(i) - 17]


# five eyes-nose-mouth points of dlib's 68-point mean face (eye centres, nose tip, mouth corners)
_DLIB_ENM_MEAN = np.stack([_mean68(LANDMARKS["eye_right"]).mean(0), _mean68(LANDMARKS["eye_left"]).mean(0),
                           *_mean68(LANDMARKS["nose_tip"]), *_mean68(LANDMARKS["mouth_corners"])])


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama, no reflection) mapping ``src`` points onto ``dst`` points.

    :func:`facelab.core.geometry.umeyama` with the scale fitted; (K, 2) point sets give a (2, 3) matrix M with
    ``dst ~ M[:, :2] @ src + M[:, 2]`` (K >= 2, source points not all equal, else ``ValueError``).
    """
    return umeyama(src, dst)


def template_points(template: str, kind: str, size: int | None = None, padding: float = 0.25) -> np.ndarray:
    """Canonical chip coordinates of the landmarks of ``kind`` ("dlib5", "eyes-nose-mouth", "68") for a template.

    For ``kind="68"`` the points returned are those of :data:`DLIB68_USED` (dlib-150) or the 68 -> 5 reduction
    (arcface-112: use :func:`facelab.detect.landmarks68_to_5` on the image side).
    """
    if template == "dlib-150":
        size = 150 if size is None else int(size)
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        unit = {"dlib5": _DLIB5_MEAN, "eyes-nose-mouth": _DLIB_ENM_MEAN, "68": _mean68(DLIB68_USED)}.get(kind)
        if unit is None:
            raise ValueError(f"unknown landmark kind {kind!r} (dlib5, eyes-nose-mouth, 68)")
        return (padding + unit) / (2 * padding + 1) * size
    if template == "arcface-112":
        size = 112 if size is None else int(size)
        base = ARCFACE_112 * (size / 112.0)
        if kind in ("eyes-nose-mouth", "68"):
            return base
        if kind == "dlib5":  # only the two eye centres are comparable
            return base[:2]
        raise ValueError(f"unknown landmark kind {kind!r} (dlib5, eyes-nose-mouth, 68)")
    raise ValueError(f"unknown template {template!r}; choose one of {TEMPLATES}")


def _face_points(face, template: str) -> tuple[str, np.ndarray]:
    """Pick the landmarks of a Face best suited to a template: (kind, image points matching template_points)."""
    from facelab.detect import landmarks68_to_5

    kind5 = getattr(face, "landmarks5_kind", None)
    lm5 = None if face.landmarks5 is None else np.asarray(face.landmarks5, dtype=np.float64)
    lm68 = None if face.landmarks68 is None else np.asarray(face.landmarks68, dtype=np.float64)
    if lm5 is not None and kind5 not in ("dlib5", "eyes-nose-mouth"):
        raise ValueError(f"face.landmarks5_kind must be 'dlib5' or 'eyes-nose-mouth', got {kind5!r}")
    if template == "dlib-150":
        if lm5 is not None and kind5 == "dlib5":
            return "dlib5", lm5
        if lm68 is not None:
            return "68", lm68[DLIB68_USED]
        if lm5 is not None:
            return "eyes-nose-mouth", lm5
    elif template == "arcface-112":
        if lm5 is not None and kind5 == "eyes-nose-mouth":
            return "eyes-nose-mouth", lm5
        if lm68 is not None:
            return "68", landmarks68_to_5(lm68)
        if lm5 is not None:  # dlib5: eye centres (image left eye = parts 2, 3; right eye = parts 0, 1)
            return "dlib5", np.stack([lm5[2:4].mean(0), lm5[0:2].mean(0)])
    else:
        raise ValueError(f"unknown template {template!r}; choose one of {TEMPLATES}")
    raise ValueError("the face has no landmarks: detect with landmarks (dlib backends: landmarks='auto'; "
                     "YuNet gives five) before aligning")


def face_transform(face, template: str = "dlib-150", size: int | None = None, padding: float = 0.25) -> np.ndarray:
    """(2, 3) similarity mapping chip pixel coordinates to image pixel coordinates for one face."""
    kind, pts = _face_points(face, template)
    S = (150 if template == "dlib-150" else 112) if size is None else int(size)
    M = similarity_transform(template_points(template, kind, S, padding), pts)
    return dlib_chip_convention(M, S) if template == "dlib-150" else M


def dlib_chip_convention(M, size: int):
    """Adjust chip->image similarities to the way dlib extracts chips.

    dlib keeps only the rotation, the scale ``s`` and the image point ``c`` of the chip centre ``(size/2, size/2)``
    from the fit, builds a rectangle of ``size * s`` pixels (inclusive, so its edges are ``size * s - 1`` apart)
    centred on ``c`` and maps chip pixels 0 and ``size - 1`` to its edges: the scale becomes
    ``(size * s - 1) / (size - 1)`` and ``c`` lands on chip pixel ``(size - 1) / 2``.

    Parameters
    ----------
    M : numpy.ndarray or torch.Tensor
        ``(2, 3)`` or a batch ``(..., 2, 3)`` (a torch batch stays differentiable).
    size : int
        Chip side.
    """
    if type(M).__module__.startswith("torch"):
        import torch

        sqrt, cat = torch.sqrt, torch.cat
        half = torch.full((2,), size / 2.0, dtype=M.dtype, device=M.device)
        centre = torch.full((2,), (size - 1) / 2.0, dtype=M.dtype, device=M.device)
    else:
        M = np.asarray(M, dtype=np.float64)
        sqrt, cat = np.sqrt, np.concatenate
        half, centre = np.full(2, size / 2.0), np.full(2, (size - 1) / 2.0)
    c = M[..., :2] @ half + M[..., 2]
    s = sqrt(M[..., 0, 0] ** 2 + M[..., 1, 0] ** 2)
    A = M[..., :2] * ((size * s - 1.0) / ((size - 1.0) * s))[..., None, None]
    t = c - A @ centre
    return cat([A, t[..., None]], -1)


def _warp(image: np.ndarray, M: np.ndarray, size: int, antialias: bool) -> np.ndarray:
    import cv2

    M = M.copy()
    img = image
    scale = float(np.sqrt(abs(np.linalg.det(M[:, :2]))))  # image pixels per chip pixel
    if antialias:
        while scale > 2.0 and min(img.shape[:2]) >= 4:
            img = cv2.pyrDown(img)
            M /= 2.0
            scale /= 2.0
    return cv2.warpAffine(img, M, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def align_faces(image, faces, template: str = "dlib-150", *, size: int | None = None, padding: float = 0.25,
                antialias: bool = True) -> np.ndarray:
    """Aligned square crops of the faces in an image.

    Parameters
    ----------
    image : np.ndarray or path
        (H, W, 3) uint8 RGB (or anything :func:`facelab.io.load_image` accepts).
    faces : Face or sequence of Face
        Detections with landmarks (:func:`facelab.detect.detect_faces`).
    template : {"dlib-150", "arcface-112"}
        dlib's 150 px chips with ``padding`` (what ``dlib.get_face_chip`` makes; input of the dlib ResNet), or
        the 112 px ArcFace five-point template (input of SFace).
    size : int, optional
        Output side (default 150 / 112); the template scales with it.
    padding : float
        dlib-150 only: border around the mean face as a fraction of its size (dlib's ``padding``).
    antialias : bool
        Halve the image with a Gaussian pyramid while the reduction exceeds 2x (as dlib does).

    Returns
    -------
    np.ndarray
        (N, S, S, 3) uint8; N = 0 when ``faces`` is empty.
    """
    from facelab.detect import Face
    from facelab.io import load_image

    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; choose one of {TEMPLATES}")
    img = image if (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
                    and image.dtype == np.uint8) else load_image(image)
    if isinstance(faces, Face):
        faces = [faces]
    S = (150 if template == "dlib-150" else 112) if size is None else int(size)
    if S < 8:
        raise ValueError(f"chip size must be >= 8, got {S}")
    out = np.zeros((len(faces), S, S, 3), np.uint8)
    for i, f in enumerate(faces):
        out[i] = _warp(img, face_transform(f, template, S, padding), S, antialias)
    return out


# ------------------------------------------------------------------------------------------------------------
# differentiable batched version


def align_batch_torch(images, landmarks, template: str = "arcface-112", *, kind: str = "eyes-nose-mouth",
                      size: int | None = None, padding: float = 0.25):
    """Differentiable batched alignment with ``affine_grid`` / ``grid_sample`` (bilinear, zero border).

    Parameters
    ----------
    images : torch.Tensor
        (N, C, H, W) float images (any range; typically RGB in [0, 1]).
    landmarks : torch.Tensor
        (N, K, 2) image pixel coordinates of the points of ``kind``: "eyes-nose-mouth" (K=5), "dlib5" (K=5) or
        "68" (K=68, full iBUG set).
    template, size, padding
        As in :func:`align_faces`.

    Returns
    -------
    torch.Tensor
        (N, C, S, S) aligned crops; gradients flow to ``images`` and ``landmarks``. No anti-alias pyramid: give
        images whose faces are at most ~2x the chip size for alias-free crops.
    """
    import torch

    from facelab.core.geometry import umeyama_torch, warp_affine
    from facelab.core.images import check_images

    check_images(images, channels=None, allow_empty=True)
    lm = torch.as_tensor(landmarks, dtype=images.dtype, device=images.device)
    if lm.dim() != 3 or lm.shape[0] != images.shape[0] or lm.shape[2] != 2:
        raise ValueError(f"expected landmarks (N={images.shape[0]}, K, 2), got {tuple(lm.shape)}")
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; choose one of {TEMPLATES}")
    S = (150 if template == "dlib-150" else 112) if size is None else int(size)
    if kind == "68":
        if lm.shape[1] != 68:
            raise ValueError(f"kind='68' needs 68 landmarks, got {lm.shape[1]}")
        if template == "dlib-150":
            lm = lm[:, torch.as_tensor(DLIB68_USED, device=lm.device)]
        else:
            lm = eyes_nose_mouth(lm)
    elif kind == "dlib5" and template == "arcface-112":
        if lm.shape[1] != 5:
            raise ValueError(f"kind='dlib5' needs 5 landmarks, got {lm.shape[1]}")
        lm = torch.stack([lm[:, 2:4].mean(1), lm[:, 0:2].mean(1)], 1)
    tmpl = torch.as_tensor(template_points(template, kind, S, padding), dtype=images.dtype, device=images.device)
    if tmpl.shape[0] != lm.shape[1]:
        raise ValueError(f"kind={kind!r} needs {tmpl.shape[0]} landmarks for {template}, got {lm.shape[1]}")
    M = umeyama_torch(tmpl, lm)
    if template == "dlib-150":
        M = dlib_chip_convention(M, S)
    return warp_affine(images, M, S, padding_mode="zeros")
