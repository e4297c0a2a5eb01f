"""Face detection and landmarks with real pretrained detectors: dlib HOG, dlib MMOD CNN, YuNet and a Haar cascade.

All backends return the same record, :class:`Face`, in the coordinates of the image that was passed in:

* ``box`` = (x0, y0, x1, y1) floats, x1 - x0 the width in pixels (pixel centres at integer coordinates);
* ``score``: the backend's own confidence (dlib HOG: SVM margin, > 0; dlib CNN: MMOD confidence; YuNet:
  probability in [0, 1]; Haar: the cascade's level weight), comparable only within one backend;
* ``landmarks5``: (5, 2) array or ``None``; *what* the five points are depends on ``landmarks5_kind``:

  - ``"dlib5"`` (dlib's 5-point shape predictor, used by the dlib and Haar backends): outer and inner corner of
    the eye on the image's right, outer and inner corner of the eye on the image's left, base of the nose;
  - ``"eyes-nose-mouth"`` (YuNet, and the ArcFace/SFace template): centre of the eye on the image's left, centre
    of the eye on the image's right, nose tip, mouth corner on the image's left, mouth corner on the image's right;

* ``landmarks68``: (68, 2) iBUG 300-W points from dlib's 68-point predictor, or ``None``.

:func:`facelab.align.align_faces` understands both kinds of five points and the 68 points.

Defined behaviour for hard inputs:

* no face -> ``[]`` (never an exception); an image smaller than 8 px on a side -> ``[]``;
* faces whose box is smaller than ``min_size`` pixels (default 20) are dropped; every detector also has a
  smallest face it can see at all (HOG and MMOD: about 80 px without upsampling, 40 px with ``upsample=1``;
  YuNet: about 10-15 px; Haar: ``min_size``), below which the result is ``[]`` too;
* huge images (longest side > ``max_side``, default 1600 px) are detected on a downscaled copy and the boxes are
  mapped back; landmarks are then predicted on the full-resolution image inside the mapped box.

Models are loaded once per process (module-level cache) from the fetched assets.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from facelab import assets
from facelab.io import load_image

__all__ = ["Face", "detect_faces", "BACKENDS", "landmarks68_to_5", "shape_predictor_landmarks"]

BACKENDS = ("dlib-hog", "dlib-cnn", "yunet", "haar")
LANDMARK_KINDS = ("dlib5", "eyes-nose-mouth")


@dataclass
class Face:
    """One detected face (see the module docstring for the conventions)."""

    box: tuple[float, float, float, float]
    score: float
    landmarks5: np.ndarray | None = None
    landmarks68: np.ndarray | None = None
    backend: str = ""
    landmarks5_kind: str | None = None
    extra: dict = field(default_factory=dict, repr=False)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def size(self) -> float:
        """Geometric mean of box width and height, in pixels."""
        return float(np.sqrt(max(self.width, 0.0) * max(self.height, 0.0)))

    def scaled(self, factor: float) -> "Face":
        """The same face in an image resized by ``factor`` (coordinates multiplied by it)."""
        f = float(factor)
        return replace(self, box=tuple(float(v) * f for v in self.box),
                       landmarks5=None if self.landmarks5 is None else self.landmarks5 * f,
                       landmarks68=None if self.landmarks68 is None else self.landmarks68 * f)

    def dlib_rect(self):
        """The box as a ``dlib.rectangle`` (inclusive right/bottom, as dlib's detectors report)."""
        import dlib

        x0, y0, x1, y1 = (int(round(v)) for v in self.box)
        return dlib.rectangle(x0, y0, max(x1 - 1, x0), max(y1 - 1, y0))


# ------------------------------------------------------------------------------------------------------------
# model cache


@lru_cache(maxsize=None)
def _dlib_hog():
    import dlib

    return dlib.get_frontal_face_detector()


@lru_cache(maxsize=None)
def _dlib_cnn():
    import dlib

    return dlib.cnn_face_detection_model_v1(str(assets.path("dlib-mmod-detector")))


@lru_cache(maxsize=None)
def _shape_predictor(n: int):
    import dlib

    name = {5: "dlib-shape-predictor-5", 68: "dlib-shape-predictor-68"}[n]
    return dlib.shape_predictor(str(assets.path(name)))


@lru_cache(maxsize=None)
def _yunet_model_path() -> str:
    return str(assets.path("yunet-model"))


_YUNET = {}


def _yunet(w: int, h: int, score_threshold: float):
    import cv2

    key = round(score_threshold, 4)
    det = _YUNET.get(key)
    if det is None:
        det = cv2.FaceDetectorYN.create(_yunet_model_path(), "", (w, h), score_threshold, 0.3, 5000)
        _YUNET[key] = det
    det.setInputSize((w, h))
    return det


@lru_cache(maxsize=None)
def _haar():
    import cv2

    path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"
    clf = cv2.CascadeClassifier(path)
    if clf.empty():
        raise RuntimeError(f"OpenCV could not load the Haar cascade {path} (opencv-python-headless < 5 ships it)")
    return clf


# ------------------------------------------------------------------------------------------------------------
# landmarks


def landmarks68_to_5(pts68: np.ndarray) -> np.ndarray:
    """Five "eyes-nose-mouth" points (ArcFace order) from the 68 iBUG points.

    Eye centres, nose tip and mouth corners: :func:`facelab.core.geometry.eyes_nose_mouth` on a float64 array.
    """
    from facelab.core.geometry import eyes_nose_mouth

    p = np.asarray(pts68, dtype=np.float64)
    if p.shape[-2:] != (68, 2):
        raise ValueError(f"expected (..., 68, 2) landmarks, got shape {p.shape}")
    return eyes_nose_mouth(p)


def shape_predictor_landmarks(image: np.ndarray, face: Face, n: int) -> np.ndarray:
    """Run dlib's ``n``-point (5 or 68) shape predictor in ``face.box``; returns (n, 2) float64 (x, y)."""
    if n not in (5, 68):
        raise ValueError(f"dlib shape predictors have 5 or 68 points, got {n}")
    shape = _shape_predictor(n)(image, face.dlib_rect())
    return np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], dtype=np.float64)


# ------------------------------------------------------------------------------------------------------------
# backends (each works on an RGB uint8 image and returns faces in its coordinates)


def _rect_box(r) -> tuple[float, float, float, float]:
    return (float(r.left()), float(r.top()), float(r.right() + 1), float(r.bottom() + 1))


def _run_dlib_hog(img, upsample, threshold):
    rects, scores, _ = _dlib_hog().run(img, upsample, threshold)
    return [Face(_rect_box(r), float(s), backend="dlib-hog") for r, s in zip(rects, scores)]


def _run_dlib_cnn(img, upsample, threshold):
    dets = _dlib_cnn()(img, upsample)
    return [Face(_rect_box(d.rect), float(d.confidence), backend="dlib-cnn")
            for d in dets if d.confidence >= threshold]


def _run_yunet(img, upsample, threshold):
    import cv2

    h, w = img.shape[:2]
    scale = 2.0 ** upsample
    work = img if upsample == 0 else cv2.resize(img, (int(round(w * scale)), int(round(h * scale))),
                                                interpolation=cv2.INTER_LINEAR)
    hh, ww = work.shape[:2]
    det = _yunet(ww, hh, max(float(threshold), 0.0) if threshold is not None else 0.6)
    _, rows = det.detect(np.ascontiguousarray(work[:, :, ::-1]))
    faces = []
    if rows is None:
        return faces
    for r in np.asarray(rows, dtype=np.float64):
        x, y, bw, bh = r[:4] / scale
        lm = r[4:14].reshape(5, 2) / scale
        faces.append(Face((x, y, x + bw, y + bh), float(r[14]), landmarks5=lm, backend="yunet",
                          landmarks5_kind="eyes-nose-mouth"))
    return faces


def _run_haar(img, upsample, threshold, min_size):
    import cv2

    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    scale = 2.0 ** upsample
    if upsample:
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
    ms = max(int(min_size * scale), 20)
    boxes, _, weights = _haar().detectMultiScale3(grey, scaleFactor=1.1, minNeighbors=5, minSize=(ms, ms),
                                                  outputRejectLevels=True)
    faces = []
    for (x, y, bw, bh), wgt in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(weights).reshape(-1)):
        if threshold is not None and wgt < threshold:
            continue
        faces.append(Face(tuple(float(v) / scale for v in (x, y, x + bw, y + bh)), float(wgt), backend="haar"))
    return faces


def _default_upsample(backend: str, long_side: int) -> int:
    if backend == "dlib-hog":
        return 1 if long_side <= 800 else 0
    if backend == "dlib-cnn":
        return 1 if long_side <= 400 else 0
    return 0


def detect_faces(image, backend: str = "dlib-hog", *, min_size: float = 20, upsample: int | None = None,
                 landmarks: str = "auto", threshold: float | None = None, max_side: int = 1600) -> list[Face]:
    """Detect faces (and landmarks) in an image.

    Parameters
    ----------
    image : np.ndarray or path
        (H, W, 3) uint8 RGB (or anything :func:`facelab.io.load_image` accepts).
    backend : {"dlib-hog", "dlib-cnn", "yunet", "haar"}
        dlib's HOG+SVM frontal detector, dlib's MMOD CNN (slow on CPU, ~1-2 s per image), OpenCV's YuNet (fast,
        gives five landmarks) or OpenCV's frontal Haar cascade (Viola-Jones).
    min_size : float
        Drop faces whose box (geometric mean of width and height) is smaller than this many pixels.
    upsample : int or None
        How many times to double the image before detecting (finds smaller faces, slower). ``None``: dlib-hog
        upsamples once for images up to 800 px, dlib-cnn for images up to 400 px, the others never.
    landmarks : {"auto", "5", "68", "both", "none"}
        Which dlib shape predictors to run on the dlib and Haar boxes. ``"auto"`` = ``"both"`` for those backends;
        YuNet always gives its own five points and never 68.
    threshold : float or None
        Score threshold (``None``: the backend's default: dlib-hog 0, dlib-cnn 0, yunet 0.6, haar none).
    max_side : int
        Images whose longest side exceeds this are detected on a downscaled copy (boxes mapped back).

    Returns
    -------
    list of Face
        Sorted by decreasing score; empty when there is no face.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown detector backend {backend!r}; choose one of {BACKENDS}")
    if landmarks not in ("auto", "5", "68", "both", "none"):
        raise ValueError(f"landmarks must be 'auto', '5', '68', 'both' or 'none', got {landmarks!r}")
    if upsample is not None and (int(upsample) != upsample or not 0 <= upsample <= 3):
        raise ValueError(f"upsample must be an integer in 0..3 or None, got {upsample!r}")
    img = image if (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3
                    and image.dtype == np.uint8) else load_image(image)
    img = np.ascontiguousarray(img)
    h, w = img.shape[:2]
    if min(h, w) < 8:
        return []
    factor = 1.0
    work = img
    if max(h, w) > max_side:
        import cv2

        factor = max_side / max(h, w)
        work = cv2.resize(img, (max(1, int(round(w * factor))), max(1, int(round(h * factor)))),
                          interpolation=cv2.INTER_AREA)
    up = _default_upsample(backend, max(work.shape[:2])) if upsample is None else int(upsample)
    if backend == "dlib-hog":
        faces = _run_dlib_hog(work, up, 0.0 if threshold is None else threshold)
    elif backend == "dlib-cnn":
        faces = _run_dlib_cnn(work, up, 0.0 if threshold is None else threshold)
    elif backend == "yunet":
        faces = _run_yunet(work, up, threshold)
    else:
        faces = _run_haar(work, up, threshold, min_size * factor)
    if factor != 1.0:
        faces = [f.scaled(1.0 / factor) for f in faces]
    faces = [f for f in faces if f.size >= min_size]
    want = {"auto": (5, 68), "both": (5, 68), "5": (5,), "68": (68,), "none": ()}[landmarks]
    if backend != "yunet":
        for f in faces:
            if 5 in want:
                f.landmarks5 = shape_predictor_landmarks(img, f, 5)
                f.landmarks5_kind = "dlib5"
            if 68 in want:
                f.landmarks68 = shape_predictor_landmarks(img, f, 68)
    faces.sort(key=lambda f: -f.score)
    return faces
