"""Loaders for users' copies of the two pain corpora DSFDA is evaluated on (never downloaded: both need a licence).

* **BioVid Heat Pain Database, Part A** (Walter et al. 2013): ``<root>/samples.csv`` (tab-separated:
  ``subject_id, subject_name, class_id, class_name, sample_id, sample_name``) and
  ``<root>/video/<subject_name>/<sample_name>.mp4``; classes BL1 (baseline, no pain) and PA1-PA4 (pain levels).
  The paper's binary task: BL1 vs PA4. :func:`load_biovid` lists the samples; :func:`biovid_frames` reads frames.
* **UNBC-McMaster Shoulder Pain Expression Archive** (Lucey et al. 2011): ``<root>/Images/<subject>/<sequence>/
  <frame>.png`` and ``<root>/Frame_Labels/PSPI/<subject>/<sequence>/<frame>_facs.txt`` (one number: the frame's
  PSPI, 0-16). :func:`load_unbc` lists the frames with their PSPI; pain is ``PSPI > 0`` by default.

In DSFDA's protocol a target's *control video* is its BL1 (BioVid) or its PSPI = 0 frames (UNBC); the rest of
the target's data is the expressive evaluation set. Frames are returned as uint8 RGB arrays; crop and align
them (e.g. :func:`facelab.detect` + :func:`facelab.align`) before :func:`facelab.adaptation.source_free.data.to_model_input`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["BIOVID_CLASSES", "load_biovid", "biovid_frames", "load_unbc", "unbc_image", "corpus_root"]

BIOVID_CLASSES = ("BL1", "PA1", "PA2", "PA3", "PA4")
_BIOVID_COLUMNS = ("subject_id", "subject_name", "class_id", "class_name", "sample_id", "sample_name")
_ENV = {"biovid": "FACELAB_BIOVID", "unbc": "FACELAB_UNBC"}


def corpus_root(name: str, root=None) -> Path | None:
    """The folder of a user's copy: ``root`` if given, else the environment variable ``FACELAB_BIOVID`` /
    ``FACELAB_UNBC``; ``None`` when neither is set."""
    if name not in _ENV:
        raise ValueError(f"unknown corpus {name!r}: expected one of {', '.join(_ENV)}")
    root = root if root is not None else os.environ.get(_ENV[name])
    return Path(root).expanduser() if root else None


def _need_dir(root, what: str) -> Path:
    if root is None:
        raise FileNotFoundError(f"no {what} folder given: pass root= or set the environment variable")
    p = Path(root).expanduser()
    if not p.is_dir():
        raise FileNotFoundError(f"{what} folder {p} does not exist")
    return p


def load_biovid(root=None, *, classes=("BL1", "PA4"), check_files: bool = True) -> pd.DataFrame:
    """BioVid Part A samples: one row per video with ``subject``, ``class_name``, ``label`` (0 for BL1, else 1),
    ``path``. Only ``classes`` are kept (the paper's binary task: BL1 vs PA4).

    Raises ``FileNotFoundError`` (missing folder, samples.csv or video) or ``ValueError`` (malformed samples.csv,
    unknown class) saying what was expected.
    """
    root = _need_dir(corpus_root("biovid", root), "BioVid Part A")
    bad = [c for c in classes if c not in BIOVID_CLASSES]
    if bad:
        raise ValueError(f"unknown BioVid classes {bad}: expected some of {', '.join(BIOVID_CLASSES)}")
    csv = root / "samples.csv"
    if not csv.is_file():
        raise FileNotFoundError(f"{csv} is missing: BioVid Part A has samples.csv (tab-separated) next to video/")
    df = pd.read_csv(csv, sep="\t", dtype=str)
    missing = [c for c in _BIOVID_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{csv} lacks the columns {missing}; expected tab-separated {', '.join(_BIOVID_COLUMNS)}")
    df = df[df["class_name"].isin(classes)].copy()
    df["path"] = [str(root / "video" / s / f"{n}.mp4") for s, n in zip(df["subject_name"], df["sample_name"])]
    if check_files:
        absent = [p for p in df["path"] if not Path(p).is_file()]
        if absent:
            raise FileNotFoundError(f"{len(absent)} BioVid videos listed in samples.csv are missing, e.g. {absent[0]}")
    df["label"] = (df["class_name"] != "BL1").astype(int)
    return df.rename(columns={"subject_name": "subject"})[["subject", "class_name", "label", "sample_name", "path"]] \
        .reset_index(drop=True)


def biovid_frames(path, *, every: int = 1, max_frames: int | None = None) -> np.ndarray:
    """Frames of one BioVid video as uint8 RGB (T, H, W, 3), every ``every``-th frame."""
    import cv2

    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise FileNotFoundError(f"cannot open video {path}")
    out, t = [], 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if t % every == 0:
                out.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                if max_frames and len(out) >= max_frames:
                    break
            t += 1
    finally:
        cap.release()
    if not out:
        raise ValueError(f"video {path} has no readable frames")
    return np.stack(out)


def load_unbc(root=None, *, pain_threshold: float = 0.0) -> pd.DataFrame:
    """UNBC-McMaster frames: one row per image with ``subject``, ``sequence``, ``frame``, ``pspi``, ``label``
    (``pspi > pain_threshold``) and ``path``.

    Raises ``FileNotFoundError`` (missing Images/ or Frame_Labels/PSPI/, an image without its label file) or
    ``ValueError`` (a label file that is not one number).
    """
    root = _need_dir(corpus_root("unbc", root), "UNBC-McMaster")
    images, labels = root / "Images", root / "Frame_Labels" / "PSPI"
    for p in (images, labels):
        if not p.is_dir():
            raise FileNotFoundError(f"{p} is missing: UNBC-McMaster has Images/ and Frame_Labels/PSPI/")
    rows = []
    for img in sorted(images.glob("*/*/*.png")):
        subject, sequence = img.parent.parent.name, img.parent.name
        lab = labels / subject / sequence / f"{img.stem}_facs.txt"
        if not lab.is_file():
            raise FileNotFoundError(f"{img} has no PSPI label file {lab}")
        text = lab.read_text().split()
        try:
            value = float(text[0]) if len(text) == 1 else None
        except ValueError:
            value = None
        if value is None or not np.isfinite(value) or value < 0:
            raise ValueError(f"{lab} must hold one PSPI value >= 0, got {' '.join(text)[:40]!r}")
        rows.append({"subject": subject, "sequence": sequence, "frame": img.stem, "pspi": value, "path": str(img)})
    if not rows:
        raise FileNotFoundError(f"no frames under {images} (expected Images/<subject>/<sequence>/<frame>.png)")
    df = pd.DataFrame(rows)
    df["label"] = (df["pspi"] > pain_threshold).astype(int)
    return df


def unbc_image(path) -> np.ndarray:
    """One UNBC frame as uint8 RGB (H, W, 3)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
