"""The real labelled face photos the book can use offline, and a one-call loader of their aligned faces.

``real_photos()`` lists them (one row per photo); ``load_real_faces(...)`` detects and aligns every face for an
embedder's template (one row per face). Identities:

* Barack Obama x6 (``face_recognition`` 1.3.0 test images): three full portraits, two *partial* faces (cropped
  at the image border: real occlusion), and ``32bit.png``, an RGBA near copy of ``obama2.jpg``;
* Joe Biden x1 (same source);
* Eileen Collins, the astronaut (scikit-image), and Grace Hopper (matplotlib);
* the people in face-api's six demo group photos: nobody is named, so each face is its own identity, labelled
  ``"<photo>#<k>"``, k = rank from the left among the faces YuNet finds in that photo (a fixed reference, so the
  same person gets the same label whichever detector found them; a face YuNet misses gets ``"<photo>@x<centre>"``);
  they serve as distinct impostors. This assumes no person
  appears in two demo photos, which is what the photos look like, but it is not documented anywhere.

Everything comes from the asset registry (fetched through PyPI and npm, sha256-checked).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from facelab import assets

__all__ = ["real_photos", "load_real_faces", "RealFaces", "GROUP_IDENTITY"]

#: identity value of the group photos in :func:`real_photos` (faces get "<photo>#<k>" in :func:`load_real_faces`)
GROUP_IDENTITY = "unknown (group photo)"

_SINGLE = [
    # (asset, file, identity, note)
    ("face-recognition-test-images", "obama.jpg", "Barack Obama", ""),
    ("face-recognition-test-images", "obama2.jpg", "Barack Obama", ""),
    ("face-recognition-test-images", "obama3.jpg", "Barack Obama", ""),
    ("face-recognition-test-images", "obama_partial_face.jpg", "Barack Obama", "partial face (cut by the left border)"),
    ("face-recognition-test-images", "obama_partial_face2.jpg", "Barack Obama", "partial face (cut by the right border)"),
    ("face-recognition-test-images", "32bit.png", "Barack Obama", "RGBA PNG, near copy of obama2.jpg"),
    ("face-recognition-test-images", "biden.jpg", "Joe Biden", ""),
    ("astronaut", "astronaut.png", "Eileen Collins", "astronaut portrait; a mission patch can give a weak false detection"),
    ("grace-hopper", "grace_hopper.jpg", "Grace Hopper", "black-and-white era portrait, colourised scan"),
]
_GROUPS = [f"sample{i}.jpg" for i in range(1, 7)]


def real_photos(*, include_groups: bool = True) -> pd.DataFrame:
    """Catalogue of the real photos (fetched by `make assets`): one row per photo.

    Returns
    -------
    pandas.DataFrame
        Columns ``name`` (file name), ``identity`` (:data:`GROUP_IDENTITY` for group photos), ``group`` (bool),
        ``path`` (str), ``source`` (registry package==version), ``license``, ``note``.
    """
    rows = []
    for asset_name, fname, ident, note in _SINGLE:
        a = assets.get(asset_name)
        folder = assets.path(asset_name)
        path = folder / fname if folder.is_dir() else folder
        rows.append(dict(name=fname, identity=ident, group=False, path=str(path),
                         source=f"{a.source}:{a.package}=={a.version}", license=a.license, note=note))
    if include_groups:
        a = assets.get("faceapi-demo-photos")
        folder = assets.path("faceapi-demo-photos")
        for fname in _GROUPS:
            rows.append(dict(name=fname, identity=GROUP_IDENTITY, group=True, path=str(folder / fname),
                             source=f"{a.source}:{a.package}=={a.version}", license=a.license,
                             note="group photo, people unnamed: each face is a distinct identity"))
    return pd.DataFrame(rows, columns=["name", "identity", "group", "path", "source", "license", "note"])


@dataclass
class RealFaces:
    """Faces of the real photos, detected and aligned for one template.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per face: ``name``, ``identity`` (group faces: ``"<photo>#<k>"``), ``face_index``, ``group``,
        ``partial`` (bool), ``note``, ``path``, ``box`` (x0, y0, x1, y1), ``score``, ``backend``.
    faces : list of facelab.detect.Face
    chips : np.ndarray
        (N, S, S, 3) uint8 aligned crops, row-aligned with ``table``.
    template : str
    """

    table: pd.DataFrame
    faces: list
    chips: np.ndarray
    template: str

    def __len__(self) -> int:
        return len(self.faces)

    @property
    def identities(self) -> np.ndarray:
        return self.table["identity"].to_numpy()


def load_real_faces(embedder="dlib-resnet", *, detector: str | None = None, include_groups: bool = True,
                    template: str | None = None) -> RealFaces:
    """Detect and align every face of :func:`real_photos` for an embedder.

    Parameters
    ----------
    embedder : str or facelab.models.Embedder
        Decides the template: ``"dlib-resnet"`` -> ``"dlib-150"``, ``"sface"`` -> ``"arcface-112"``.
    detector : str, optional
        Detector backend; default ``"dlib-hog"`` for dlib-150 (the pipeline dlib and ``face_recognition`` use) and
        ``"yunet"`` for arcface-112.
    include_groups : bool
        Include the faces of the face-api group photos (distinct impostors).
    template : str, optional
        Override the template.

    Returns
    -------
    RealFaces
        For single-person photos only the highest-scoring face is kept (so a false detection cannot create an
        extra "Obama"); group photos keep every face. The result is cached per argument set: don't modify it.
    """
    if template is None:
        name = embedder if isinstance(embedder, str) else getattr(embedder, "name", None)
        tmpl = getattr(embedder, "template", None)
        if tmpl:
            template = tmpl
        elif name == "dlib-resnet":
            template = "dlib-150"
        elif name == "sface":
            template = "arcface-112"
        else:
            raise ValueError(f"cannot tell the template of embedder {embedder!r}; give template='dlib-150' or "
                             "'arcface-112'")
    if detector is None:
        detector = "dlib-hog" if template == "dlib-150" else "yunet"
    return _load_real_faces(template, detector, include_groups)


@lru_cache(maxsize=None)
def _group_reference(path: str) -> list:
    """YuNet boxes of a group photo, sorted left to right (the reference that names its people)."""
    from facelab.detect import detect_faces

    faces = detect_faces(path, "yunet")
    return sorted((f.box for f in faces), key=lambda b: (b[0] + b[2]) / 2)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _group_label(name: str, path: str, face) -> str:
    ref = _group_reference(path)
    ious = [_iou(face.box, b) for b in ref]
    if ious and max(ious) >= 0.3:
        return f"{name}#{int(np.argmax(ious))}"
    return f"{name}@x{int(round((face.box[0] + face.box[2]) / 2))}"


@lru_cache(maxsize=8)
def _load_real_faces(template: str, detector: str, include_groups: bool) -> RealFaces:
    from facelab.align import align_faces
    from facelab.detect import detect_faces
    from facelab.io import load_image

    landmarks = "5" if detector != "yunet" else "auto"
    rows, faces, chips = [], [], []
    for r in real_photos(include_groups=include_groups).itertuples(index=False):
        img = load_image(r.path)
        found = detect_faces(img, detector, landmarks=landmarks)
        if not r.group:
            found = found[:1]
        if not found:
            continue
        chips.append(align_faces(img, found, template))
        for k, f in enumerate(found):
            faces.append(f)
            rows.append(dict(name=r.name, identity=_group_label(r.name, r.path, f) if r.group else r.identity,
                             face_index=k,
                             group=r.group, partial="partial" in r.note, note=r.note, path=r.path,
                             box=tuple(round(v, 1) for v in f.box), score=f.score, backend=f.backend))
    size = 150 if template == "dlib-150" else 112
    chips_arr = np.concatenate(chips) if chips else np.zeros((0, size, size, 3), np.uint8)
    return RealFaces(table=pd.DataFrame(rows), faces=faces, chips=chips_arr, template=template)
