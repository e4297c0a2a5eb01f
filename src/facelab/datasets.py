"""Loaders for users' local copies of real face datasets, and exporters from the synthetic world to their formats.

Nothing here downloads: every dataset must be obtained from its official source (most need a signed licence
agreement) and unpacked locally. A missing path raises :class:`DatasetNotFoundError`, which names that source.

=================  ==============================================  ===============================================
dataset            what the loader expects under ``root``          loader
=================  ==============================================  ===============================================
LFW                ``<Person_Name>/<Person_Name>_0001.jpg`` (in    :func:`load_lfw_people`, :func:`load_lfw_pairs`
                   ``root``, ``root/lfw`` or ``root/lfw-deep-
                   funneled``) and ``pairs.txt`` (10 folds)
ORL / AT&T         ``s1 .. s40/1.pgm .. 10.pgm`` (92 x 112 grey)   :func:`load_orl`
AR (cropped)       ``M-001-01.bmp``, ``W-027-14.bmp``, ... (any    :func:`load_ar` (codes: :data:`AR_CONDITIONS`)
                   image extension, case-insensitive)
CASME II           ``sub01/EP02_01f/img46.jpg`` + the coding       :func:`load_casme2`
                   sheet (``Subject, Filename, OnsetFrame,
                   ApexFrame, OffsetFrame, Action Units,
                   Estimated Emotion``), CSV or xlsx
SAMM               ``006/006_1_2/006_05562.jpg`` + the FACS codes  :func:`load_samm`
                   sheet (``Subject, Filename, Onset Frame, Apex
                   Frame, Offset Frame, Action Units, Estimated
                   Emotion``), CSV or xlsx
=================  ==============================================  ===============================================

Reading ``.xlsx`` sheets needs ``openpyxl``; without it, convert the sheet to CSV (same columns).

The exporters :func:`export_lfw`, :func:`export_orl`, :func:`export_ar`, :func:`export_casme` and
:func:`export_samm` write synthetic faces from :class:`facelab.synth.FaceWorld` in exactly these formats, so the
loaders are tested on fixtures, and so code written for the synthetic world runs unchanged on the real data.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from facelab.core.images import luminance

__all__ = [
    "DatasetNotFoundError",
    "DATASET_SOURCES",
    "AR_CONDITIONS",
    "FaceImageDataset",
    "MicroExpressionDataset",
    "load_lfw_people",
    "load_lfw_pairs",
    "load_orl",
    "load_ar",
    "load_casme2",
    "load_samm",
    "parse_action_units",
    "read_annotation_sheet",
    "export_lfw",
    "export_orl",
    "export_ar",
    "export_casme",
    "export_samm",
]

#: Where each dataset officially comes from (the loaders never download).
DATASET_SOURCES = {
    "LFW": "Labeled Faces in the Wild, University of Massachusetts Amherst: http://vis-www.cs.umass.edu/lfw/ "
           "(Huang et al. 2007)",
    "ORL": "The ORL / AT&T 'Database of Faces', AT&T Laboratories Cambridge: "
           "https://cam-orl.co.uk/facedatabase.html (Samaria & Harter 1994)",
    "AR": "The AR Face Database, Aleix Martinez and Robert Benavente, CVC / Ohio State University: "
          "https://www2.ece.ohio-state.edu/~aleix/ARdatabase.html (licence agreement required)",
    "CASME II": "CASME II, Institute of Psychology, Chinese Academy of Sciences: http://casme.psych.ac.cn/casme/e2 "
                "(Yan et al. 2014; licence agreement required)",
    "SAMM": "SAMM (Spontaneous Actions and Micro-Movements), Manchester Metropolitan University: "
            "http://www2.docm.mmu.ac.uk/STAFF/M.Yap/dataset.php (Davison et al. 2018; licence agreement required)",
}

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".tif", ".tiff")

#: AR database image codes (Martinez & Benavente 1998): image number -> (session, expression, illumination,
#: occlusion). Numbers 14-26 repeat 1-13 in the second session, two weeks later.
AR_CONDITIONS: dict[int, tuple[int, str, str, str]] = {}
_AR_SESSION = [
    ("neutral", "ambient", "none"),      # 1  neutral expression
    ("smile", "ambient", "none"),        # 2  smile
    ("anger", "ambient", "none"),        # 3  anger
    ("scream", "ambient", "none"),       # 4  scream
    ("neutral", "left", "none"),         # 5  left light on
    ("neutral", "right", "none"),        # 6  right light on
    ("neutral", "both", "none"),         # 7  all side lights on
    ("neutral", "ambient", "sunglasses"),  # 8  wearing sunglasses
    ("neutral", "left", "sunglasses"),   # 9  sunglasses, left light on
    ("neutral", "right", "sunglasses"),  # 10 sunglasses, right light on
    ("neutral", "ambient", "scarf"),     # 11 wearing scarf
    ("neutral", "left", "scarf"),        # 12 scarf, left light on
    ("neutral", "right", "scarf"),       # 13 scarf, right light on
]
for _s in (1, 2):
    for _k, (_e, _l, _o) in enumerate(_AR_SESSION):
        AR_CONDITIONS[13 * (_s - 1) + _k + 1] = (_s, _e, _l, _o)

# facelab emotion names <-> the words the micro-expression sheets use
_SHEET_EMOTION = {"happy": "happiness", "sad": "sadness", "angry": "anger", "fearful": "fear",
                  "disgusted": "disgust", "surprised": "surprise", "contempt": "contempt", "neutral": "others"}
_FROM_SHEET = {v: k for k, v in _SHEET_EMOTION.items()}
_FROM_SHEET.update({"happiness": "happy", "disgust": "disgusted", "surprise": "surprised", "sadness": "sad",
                    "fear": "fearful", "anger": "angry", "contempt": "contempt"})


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is not where the loader was told to look; the message names its official source."""


def _missing(dataset: str, what: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"{dataset}: {what}. facelab does not download datasets; obtain {dataset} from its official source and "
        f"unpack it locally: {DATASET_SOURCES[dataset]}")


def _root(dataset: str, root) -> Path:
    if root is None or (isinstance(root, str) and not root.strip()):
        raise _missing(dataset, "no path given (root=None)")
    path = Path(root).expanduser()
    if not path.exists():
        raise _missing(dataset, f"path {str(path)!r} does not exist")
    if not path.is_dir():
        raise _missing(dataset, f"path {str(path)!r} is not a folder")
    return path


def _read_rgb(path) -> np.ndarray:
    from facelab.io import load_image

    return load_image(path)


def _to_tensor(img: np.ndarray, size: int | tuple[int, int] | None, grey: bool) -> torch.Tensor:
    import cv2

    if size is not None:
        h, w = (size, size) if isinstance(size, (int, np.integer)) else size
        if img.shape[:2] != (h, w):
            interp = cv2.INTER_AREA if img.shape[0] > h else cv2.INTER_LINEAR
            img = cv2.resize(img, (int(w), int(h)), interpolation=interp)
    t = torch.from_numpy(np.array(img, dtype=np.float32)).permute(2, 0, 1) / 255.0
    if grey:
        t = luminance(t[None])[0]
    return t


class FaceImageDataset(torch.utils.data.Dataset):
    """Still face images listed in a table, read lazily from disk (memory stays bounded).

    Attributes
    ----------
    name : str
        Dataset name ("LFW", "ORL", "AR").
    root : Path
    table : pandas.DataFrame
        One row per image: ``path``, ``identity`` (0-based integer), ``person`` and the dataset's own labels.
    size : int or (int, int), optional
        Resize every image to this (H, W) on reading.
    grey : bool
        Return one channel instead of RGB.

    ``dataset[i]`` returns ``(image, identity)`` with ``image`` a float tensor ``(C, H, W)`` in ``[0, 1]``;
    :meth:`images` loads many at once.
    """

    def __init__(self, name: str, root: Path, table: pd.DataFrame, size=None, grey: bool = False):
        self.name, self.root, self.table, self.size, self.grey = name, root, table.reset_index(drop=True), size, grey

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int):
        row = self.table.iloc[int(i)]
        return _to_tensor(_read_rgb(row["path"]), self.size, self.grey), int(row["identity"])

    def images(self, indices: Iterable[int] | None = None) -> torch.Tensor:
        """Stack images ``indices`` (default all) into ``(N, C, H, W)``; needs ``size`` when sizes differ."""
        idx = range(len(self)) if indices is None else indices
        return torch.stack([self[i][0] for i in idx])

    def __repr__(self) -> str:
        return (f"FaceImageDataset({self.name!r}, root={str(self.root)!r}, images={len(self)}, "
                f"identities={self.table['identity'].nunique()})")


# ----------------------------------------------------------------------------------------------------------------
# LFW
# ----------------------------------------------------------------------------------------------------------------

def _lfw_people_dir(root: Path) -> Path:
    for cand in (root / "lfw", root / "lfw-deepfunneled", root / "lfw_funneled", root):
        if cand.is_dir() and any(p.is_dir() and any(p.glob(f"{p.name}_*")) for p in cand.iterdir()):
            return cand
    raise _missing("LFW", f"no person folders (Name_Surname/Name_Surname_0001.jpg) under {str(root)!r}")


def load_lfw_people(root, min_faces_per_person: int = 0, size=None, grey: bool = False) -> FaceImageDataset:
    """LFW identities: one row per image, people sorted by name.

    Parameters
    ----------
    root : path
        Folder holding the person folders, or its parent (with ``lfw/`` or ``lfw-deepfunneled/`` inside).
    min_faces_per_person : int
        Keep only people with at least this many images (scikit-learn's convention).
    size, grey
        Passed to :class:`FaceImageDataset`.

    Returns
    -------
    FaceImageDataset
        ``table`` columns: ``path``, ``person``, ``image_number`` (the 1-based number in the file name),
        ``identity``.
    """
    base = _root("LFW", root)
    people = _lfw_people_dir(base)
    rows = []
    pat = re.compile(r"^(?P<name>.+)_(?P<num>\d{4})$")
    for person in sorted(p for p in people.iterdir() if p.is_dir()):
        for f in sorted(person.iterdir()):
            m = pat.match(f.stem)
            if f.suffix.lower() in IMAGE_EXTENSIONS and m and m.group("name") == person.name:
                rows.append((str(f), person.name, int(m.group("num"))))
    table = pd.DataFrame(rows, columns=["path", "person", "image_number"])
    if min_faces_per_person > 0:
        counts = table["person"].value_counts()
        table = table[table["person"].isin(counts[counts >= min_faces_per_person].index)]
    if table.empty:
        raise ValueError(f"LFW: no person has at least {min_faces_per_person} images under {str(people)!r}")
    table = table.reset_index(drop=True)
    table["identity"] = pd.factorize(table["person"], sort=True)[0]
    return FaceImageDataset("LFW", people, table, size=size, grey=grey)


def _lfw_image_path(people: Path, name: str, number: int) -> Path:
    for ext in (".jpg", ".png", ".jpeg", ".bmp"):
        p = people / name / f"{name}_{number:04d}{ext}"
        if p.exists():
            return p
    return people / name / f"{name}_{number:04d}.jpg"


def load_lfw_pairs(root, pairs_file: str = "pairs.txt", check_files: bool = True) -> pd.DataFrame:
    """The LFW verification protocol (``pairs.txt``: 10 folds of 300 matched then 300 mismatched pairs).

    The first line holds ``n_folds n_pairs`` (or a single count for ``pairsDevTrain.txt``-style files: one fold);
    a matched line is ``name  n1  n2``, a mismatched one ``name1  n1  name2  n2``.

    Returns
    -------
    pandas.DataFrame
        ``fold``, ``same`` (bool), ``person1``, ``number1``, ``person2``, ``number2``, ``path1``, ``path2``.
    """
    base = _root("LFW", root)
    candidates = [base / pairs_file, base.parent / pairs_file]
    pairs_path = next((p for p in candidates if p.is_file()), None)
    if pairs_path is None:
        raise _missing("LFW", f"{pairs_file!r} not found in {str(base)!r} or its parent")
    people = _lfw_people_dir(base)
    lines = [ln.split() for ln in pairs_path.read_text().splitlines() if ln.strip()]
    header = [int(v) for v in lines[0]]
    if len(header) == 2:
        n_folds, n_pairs = header
    elif len(header) == 1:
        n_folds, n_pairs = 1, header[0]
    else:
        raise ValueError(f"LFW {pairs_file}: first line must be 'n_folds n_pairs' or 'n_pairs', got {lines[0]}")
    body = lines[1:]
    if len(body) != 2 * n_folds * n_pairs:
        raise ValueError(f"LFW {pairs_file}: header promises {n_folds} folds x 2 x {n_pairs} pairs = "
                         f"{2 * n_folds * n_pairs} lines, found {len(body)}")
    rows = []
    for k, parts in enumerate(body):
        fold = k // (2 * n_pairs)
        if len(parts) == 3:
            a, na, nb = parts
            b = a
        elif len(parts) == 4:
            a, na, b, nb = parts
        else:
            raise ValueError(f"LFW {pairs_file} line {k + 2}: expected 3 or 4 fields, got {parts}")
        same = len(parts) == 3
        expected_same = (k % (2 * n_pairs)) < n_pairs
        if same != expected_same:
            raise ValueError(f"LFW {pairs_file} line {k + 2}: a {'matched' if expected_same else 'mismatched'} "
                             f"pair was expected at this position, got {parts}")
        rows.append((fold, same, a, int(na), b, int(nb), str(_lfw_image_path(people, a, int(na))),
                     str(_lfw_image_path(people, b, int(nb)))))
    table = pd.DataFrame(rows, columns=["fold", "same", "person1", "number1", "person2", "number2", "path1", "path2"])
    if check_files:
        missing = [p for p in pd.concat([table["path1"], table["path2"]]).unique() if not os.path.exists(p)]
        if missing:
            raise _missing("LFW", f"{len(missing)} images named in {pairs_file} are missing, e.g. {missing[0]!r}")
    return table


# ----------------------------------------------------------------------------------------------------------------
# ORL / AT&T and AR
# ----------------------------------------------------------------------------------------------------------------

def load_orl(root, size=None, grey: bool = True) -> FaceImageDataset:
    """ORL / AT&T: 40 subjects ``s1..s40``, 10 images ``1.pgm..10.pgm`` each (92 x 112, grey).

    Returns
    -------
    FaceImageDataset
        ``table`` columns ``path``, ``person`` (``"s7"``), ``subject`` (7), ``image_number``, ``identity``
        (``subject - 1``).
    """
    base = _root("ORL", root)
    rows = []
    for d in base.iterdir():
        m = re.fullmatch(r"s(\d+)", d.name)
        if d.is_dir() and m:
            for f in d.iterdir():
                if f.suffix.lower() in IMAGE_EXTENSIONS and f.stem.isdigit():
                    rows.append((str(f), d.name, int(m.group(1)), int(f.stem)))
    if not rows:
        raise _missing("ORL", f"no subject folders s1..s40 with 1.pgm..10.pgm under {str(base)!r}")
    table = pd.DataFrame(rows, columns=["path", "person", "subject", "image_number"])
    table = table.sort_values(["subject", "image_number"]).reset_index(drop=True)
    table["identity"] = pd.factorize(table["subject"], sort=True)[0]
    return FaceImageDataset("ORL", base, table, size=size, grey=grey)


_AR_RE = re.compile(r"^(?P<sex>[MWmw])-(?P<person>\d{3})-(?P<image>\d{1,2})$")


def load_ar(root, size=None, grey: bool = False) -> FaceImageDataset:
    """AR face database (cropped or full images named ``M-001-01.bmp`` / ``W-012-26.bmp``).

    File name: ``<sex>-<person>-<image>``: sex ``M`` (men) or ``W`` (women), a 3-digit person number, and the image
    code 1-26 of :data:`AR_CONDITIONS`:

    ====  ==========================  ====  ============================
    code  condition (session 1)       code  condition (session 1)
    ====  ==========================  ====  ============================
    1     neutral expression          8     wearing sunglasses
    2     smile                       9     sunglasses + left light
    3     anger                       10    sunglasses + right light
    4     scream                      11    wearing scarf
    5     left light on               12    scarf + left light
    6     right light on              13    scarf + right light
    7     both side lights on
    ====  ==========================  ====  ============================

    Codes 14-26 are the same 13 conditions in session 2 (two weeks later). The usual occlusion protocol trains on
    unoccluded images and tests on sunglasses (~20% of the face covered) and scarf (~40%).

    Returns
    -------
    FaceImageDataset
        ``table`` columns ``path``, ``person`` (``"M-001"``), ``sex``, ``person_number``, ``image_number``,
        ``session``, ``expression``, ``illumination``, ``occlusion``, ``identity``.
    """
    base = _root("AR", root)
    rows = []
    for f in sorted(base.rglob("*")):
        m = _AR_RE.match(f.stem)
        if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS and m:
            code = int(m.group("image"))
            if code not in AR_CONDITIONS:
                raise ValueError(f"AR: image code {code} in {f.name!r} is outside 1-26")
            sex = m.group("sex").upper()
            rows.append((str(f), f"{sex}-{m.group('person')}", sex, int(m.group("person")), code,
                         *AR_CONDITIONS[code]))
    if not rows:
        raise _missing("AR", f"no images named like 'M-001-01.bmp' under {str(base)!r}")
    table = pd.DataFrame(rows, columns=["path", "person", "sex", "person_number", "image_number", "session",
                                        "expression", "illumination", "occlusion"])
    table["identity"] = pd.factorize(table["person"], sort=True)[0]
    return FaceImageDataset("AR", base, table, size=size, grey=grey)


# ----------------------------------------------------------------------------------------------------------------
# micro-expressions: CASME II and SAMM
# ----------------------------------------------------------------------------------------------------------------

_AU_TOKEN = re.compile(r"^(?:AU)?(?P<side>[LR]?)0*(?P<num>\d+)(?P<side2>[LR]?)(?P<intensity>[A-E]?)$",
                       re.IGNORECASE)


def parse_action_units(code) -> list[str]:
    """A FACS coding string to facelab AU names: ``"4+L10"`` -> ``["AU04", "AU10L"]``, ``"R12A+25"`` ->
    ``["AU12R", "AU25"]``. Intensity letters (A-E) are dropped; tokens that are not AUs (e.g. ``"?"``) are skipped.
    """
    if code is None or (isinstance(code, float) and np.isnan(code)):
        return []
    out = []
    for tok in re.split(r"[+,;/\s]+", str(code).strip()):
        m = _AU_TOKEN.match(tok.strip())
        if m:
            side = (m.group("side") or m.group("side2")).upper()
            out.append(f"AU{int(m.group('num')):02d}{side}")
    return out


def _au_code(aus) -> str:
    """AU names (a list, a dict name -> intensity, or a string) -> FACS coding string ``"4+L10"``."""
    if isinstance(aus, dict):
        names = [k for k, v in aus.items() if float(v) > 0]
    elif isinstance(aus, str):
        names = parse_action_units(aus)
    elif aus is None or (isinstance(aus, float) and np.isnan(aus)):
        names = []
    else:
        names = [n for a in aus for n in parse_action_units(a)]
    parts = []
    for name in names:
        for norm in parse_action_units(name):
            m = re.match(r"^AU(\d+)([LR]?)$", norm)
            parts.append(f"{m.group(2)}{int(m.group(1))}")
    return "+".join(parts)


def read_annotation_sheet(path, dataset: str = "annotation") -> pd.DataFrame:
    """Read a coding sheet (CSV, or xlsx with openpyxl) as strings, skipping title rows above the header.

    The header is the first row that names both ``Subject`` and ``Filename`` (SAMM's sheet has title rows above it).
    """
    path = Path(path)
    if path.suffix.lower() in (".xlsx", ".xls"):
        try:
            import openpyxl  # noqa: F401
        except ImportError:
            raise ImportError(f"{dataset}: reading {path.name} needs openpyxl (pip install openpyxl), or save the "
                              "sheet as CSV with the same columns") from None
        raw = pd.read_excel(path, header=None, dtype=str)
    else:
        import csv

        with open(path, newline="", encoding="utf-8-sig") as fh:
            records = list(csv.reader(fh))                               # title rows may be shorter than the table
        width = max((len(r) for r in records), default=0)
        raw = pd.DataFrame([r + [""] * (width - len(r)) for r in records], dtype=str)
    # the header row is the first one naming the file column (SAMM's sheet has title rows above it)
    for i in range(min(len(raw), 40)):
        cells = [str(c).strip().lower() for c in raw.iloc[i].tolist()]
        if "filename" in cells and "subject" in cells:
            table = raw.iloc[i + 1:].copy()
            table.columns = [str(c).strip() for c in raw.iloc[i].tolist()]
            return table.dropna(how="all").reset_index(drop=True)
    raise ValueError(f"{dataset}: no header row with 'Subject' and 'Filename' in {path.name}")




def _find_sheet(base: Path, annotations, dataset: str, hint: str) -> Path:
    if annotations is not None:
        p = Path(annotations).expanduser()
        if not p.is_file():
            raise _missing(dataset, f"annotation sheet {str(p)!r} does not exist")
        return p
    sheets = sorted([*base.glob("*.csv"), *base.glob("*.xlsx"), *base.glob("*.xls")])
    sheets = [s for s in sheets if hint in s.name.lower()] or sheets
    if not sheets:
        raise _missing(dataset, f"no annotation sheet (.csv or .xlsx) in {str(base)!r}; pass annotations=PATH")
    return sheets[0]


def _frame_number(p: Path) -> int | None:
    m = re.search(r"(\d+)$", p.stem)
    return int(m.group(1)) if m else None


def _column(table: pd.DataFrame, names: Sequence[str], dataset: str, sheet: Path) -> pd.Series:
    norm = {re.sub(r"[\s_]+", "", c.lower()): c for c in table.columns}
    for n in names:
        key = re.sub(r"[\s_]+", "", n.lower())
        if key in norm:
            return table[norm[key]]
    raise ValueError(f"{dataset}: sheet {sheet.name} has no column {names[0]!r} (columns: {list(table.columns)})")


def _to_frame(v) -> float:
    try:
        return float(int(float(str(v).strip())))
    except (TypeError, ValueError):
        return float("nan")            # CASME II writes '/' for an apex that was not coded


@dataclass
class MicroExpressionDataset(torch.utils.data.Dataset):
    """Micro-expression episodes: one row per coded event, frames read lazily from the episode folder.

    Attributes
    ----------
    name : str
        "CASME II" or "SAMM".
    root : Path
    episodes : pandas.DataFrame
        ``subject``, ``episode`` (the sheet's Filename), ``onset``, ``apex``, ``offset`` (frame numbers as in the
        frame file names; apex NaN when not coded), ``action_units`` (the sheet's code), ``aus`` (list of facelab AU
        names), ``emotion_raw`` (the sheet's word), ``emotion`` (facelab's vocabulary where one exists, else the
        sheet's word), ``folder`` and ``n_frames``.

    ``dataset[i]`` returns ``(frames, row)``: frames ``(T, 3, H, W)`` from onset to offset and the row as a dict.
    """

    name: str
    root: Path
    episodes: pd.DataFrame
    size: int | tuple[int, int] | None = None
    grey: bool = False
    _frames: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.episodes)

    def frame_paths(self, i: int) -> pd.Series:
        """All frame files of episode ``i`` indexed by frame number."""
        folder = Path(self.episodes.iloc[int(i)]["folder"])
        if folder not in self._frames:
            files = {_frame_number(p): p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS}
            files.pop(None, None)
            self._frames[folder] = pd.Series(files).sort_index()
        return self._frames[folder]

    def frames(self, i: int, start: int | None = None, stop: int | None = None) -> tuple[torch.Tensor, np.ndarray]:
        """Frames ``start..stop`` (inclusive frame numbers; default onset..offset) -> ``(T, C, H, W)``, numbers."""
        row = self.episodes.iloc[int(i)]
        start = int(row["onset"]) if start is None else int(start)
        stop = int(row["offset"]) if stop is None else int(stop)
        paths = self.frame_paths(i)
        sel = paths[(paths.index >= start) & (paths.index <= stop)]
        if sel.empty:
            raise ValueError(f"{self.name}: no frames numbered {start}..{stop} in {row['folder']}")
        return torch.stack([_to_tensor(_read_rgb(p), self.size, self.grey) for p in sel]), sel.index.to_numpy()

    def __getitem__(self, i: int):
        return self.frames(i)[0], self.episodes.iloc[int(i)].to_dict()


def _episode_folders(base: Path, subject_dir: str, episode: str, dataset: str) -> Path:
    search = [base, *[d for d in base.iterdir() if d.is_dir()]]
    for top in search:
        p = top / subject_dir / episode
        if p.is_dir():
            return p
    raise _missing(dataset, f"frame folder {subject_dir}/{episode} not found under {str(base)!r}")


def _micro_table(dataset: str, base: Path, sheet: Path, subject_dir, cols: dict) -> pd.DataFrame:
    table = read_annotation_sheet(sheet, dataset)
    subj = _column(table, cols["subject"], dataset, sheet).astype(str).str.strip()
    fname = _column(table, cols["filename"], dataset, sheet).astype(str).str.strip()
    out = pd.DataFrame({
        "subject": subj.to_numpy(),
        "episode": fname.to_numpy(),
        "onset": _column(table, cols["onset"], dataset, sheet).map(_to_frame).to_numpy(),
        "apex": _column(table, cols["apex"], dataset, sheet).map(_to_frame).to_numpy(),
        "offset": _column(table, cols["offset"], dataset, sheet).map(_to_frame).to_numpy(),
        "action_units": _column(table, cols["aus"], dataset, sheet).astype(str).str.strip().to_numpy(),
        "emotion_raw": _column(table, cols["emotion"], dataset, sheet).astype(str).str.strip().to_numpy(),
    })
    out = out[(out["episode"] != "") & (out["episode"].str.lower() != "nan")].reset_index(drop=True)
    bad = out[out["onset"].isna() | out["offset"].isna() | (out["offset"] < out["onset"])]
    if not bad.empty:
        raise ValueError(f"{dataset}: rows with missing onset/offset or offset < onset in {sheet.name}: "
                         f"{bad[['subject', 'episode', 'onset', 'offset']].head(3).to_dict('records')}")
    out["aus"] = out["action_units"].map(parse_action_units)
    out["emotion"] = out["emotion_raw"].str.lower().map(lambda e: _FROM_SHEET.get(e, e))
    out["folder"] = [str(_episode_folders(base, subject_dir(s, e), e, dataset))
                     for s, e in zip(out["subject"], out["episode"])]
    out["n_frames"] = [sum(1 for p in Path(f).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
                       for f in out["folder"]]
    return out


def load_casme2(root, annotations=None, size=None, grey: bool = False) -> MicroExpressionDataset:
    """CASME II: ``sub01/EP02_01f/img46.jpg`` frame folders and the coding sheet (CSV or xlsx).

    Parameters
    ----------
    root : path
        Folder with the ``subXX`` folders (or one level above them, e.g. holding ``CASME2_RAW_selected/``).
    annotations : path, optional
        The coding sheet (default: the ``*coding*`` CSV/xlsx in ``root``, else the only sheet there).
    """
    base = _root("CASME II", root)
    sheet = _find_sheet(base, annotations, "CASME II", "coding")
    cols = {"subject": ["Subject"], "filename": ["Filename"], "onset": ["OnsetFrame", "Onset Frame"],
            "apex": ["ApexFrame", "Apex Frame"], "offset": ["OffsetFrame", "Offset Frame"],
            "aus": ["Action Units", "AU"], "emotion": ["Estimated Emotion", "Emotion"]}

    def subject_dir(s, _):
        return f"sub{int(float(s)):02d}" if re.fullmatch(r"\d+(\.0)?", s) else s

    episodes = _micro_table("CASME II", base, sheet, subject_dir, cols)
    episodes["subject"] = [subject_dir(s, None) for s in episodes["subject"]]
    return MicroExpressionDataset("CASME II", base, episodes, size=size, grey=grey)


def load_samm(root, annotations=None, size=None, grey: bool = False) -> MicroExpressionDataset:
    """SAMM: ``006/006_1_2/006_05562.jpg`` frame folders and the FACS codes sheet (CSV or xlsx; title rows above
    the header are skipped).
    """
    base = _root("SAMM", root)
    sheet = _find_sheet(base, annotations, "SAMM", "samm")
    cols = {"subject": ["Subject"], "filename": ["Filename"], "onset": ["Onset Frame", "OnsetFrame"],
            "apex": ["Apex Frame", "ApexFrame"], "offset": ["Offset Frame", "OffsetFrame"],
            "aus": ["Action Units", "AU"], "emotion": ["Estimated Emotion", "Objective Classes", "Emotion"]}

    def subject_dir(s, _):
        return f"{int(float(s)):03d}" if re.fullmatch(r"\d+(\.0)?", s) else s

    episodes = _micro_table("SAMM", base, sheet, subject_dir, cols)
    episodes["subject"] = [subject_dir(s, None) for s in episodes["subject"]]
    return MicroExpressionDataset("SAMM", base, episodes, size=size, grey=grey)


# ----------------------------------------------------------------------------------------------------------------
# exporters from the synthetic world
# ----------------------------------------------------------------------------------------------------------------

def _write_image(path: Path, img: torch.Tensor, size=None, grey: bool = False, quality: int = 95) -> None:
    import cv2

    arr = (img.detach().float().clamp(0, 1).cpu().permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    if size is not None:
        h, w = size
        side = max(h, w)
        if arr.shape[:2] != (side, side):
            arr = cv2.resize(arr, (side, side), interpolation=cv2.INTER_AREA)
        y0, x0 = (side - h) // 2, (side - w) // 2                          # centre crop to the dataset's aspect
        arr = arr[y0:y0 + h, x0:x0 + w]
    path.parent.mkdir(parents=True, exist_ok=True)
    out = cv2.cvtColor(arr, cv2.COLOR_RGB2GRAY) if grey else cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    if not cv2.imwrite(str(path), out, params):
        raise OSError(f"could not write {path}")


def _synthetic_name(k: int) -> str:
    return f"Synthetic_Person{k:05d}"


def _sample_chunks(world, ids: np.ndarray, counts: np.ndarray, chunk: int, generator, **kwargs):
    """Yield (identity, image_index, image, label_row) rendering ``counts[j]`` images of ``ids[j]`` chunk by chunk."""
    for start in range(0, len(ids), chunk):
        sel_ids, sel_counts = ids[start:start + chunk], counts[start:start + chunk]
        batch = world.sample(identities=np.repeat(sel_ids, sel_counts).tolist(), per_identity=1,
                             generator=generator, **kwargs)
        k = 0
        for ident, c in zip(sel_ids, sel_counts):
            for j in range(int(c)):
                yield int(ident), j, batch.images[k], batch.labels.iloc[k]
                k += 1


def export_lfw(world, root, n_identities: int = 40, per_identity=4, n_folds: int = 10,
               pairs_per_fold: int | None = None, identity_offset: int = 0, seed: int = 0, nuisance: str = "mild",
               generator: torch.Generator | None = None, chunk: int = 64, **sample_kwargs) -> Path:
    """Write synthetic people as an LFW-style tree with a person-disjoint 10-fold ``pairs.txt``.

    Writes ``root/lfw/Synthetic_PersonKKKKK/Synthetic_PersonKKKKK_0001.jpg``, ``root/pairs.txt`` and
    ``root/labels.csv`` (every image's full synthetic ground truth with its path).

    Parameters
    ----------
    world : facelab.synth.FaceWorld
    root : path
        Output folder (created).
    n_identities : int
    per_identity : int or sequence of int
        Images per person (a sequence gives each person their own count, as in LFW where most have one image).
    n_folds : int
        Folds of ``pairs.txt``; people are split round-robin so no person appears in two folds.
    pairs_per_fold : int, optional
        Matched (and as many mismatched) pairs per fold; default: as many as every fold can give, at most 300.
    seed : int
        Seeds the choice of pairs.
    nuisance, generator, chunk, **sample_kwargs
        Passed to ``world.sample`` (``chunk`` people are rendered at a time: memory stays bounded).

    Returns
    -------
    Path
        ``root``.
    """
    if isinstance(n_identities, bool) or not isinstance(n_identities, (int, np.integer)) or n_identities < 2:
        raise ValueError(f"n_identities must be an integer >= 2, got {n_identities!r}")
    counts = np.full(n_identities, per_identity) if np.isscalar(per_identity) else np.asarray(per_identity)
    if counts.shape != (n_identities,) or (counts < 1).any():
        raise ValueError(f"per_identity must be a positive int or {n_identities} positive ints, got {per_identity!r}")
    if n_identities < 2 * n_folds:
        raise ValueError(f"n_identities={n_identities} is too few for {n_folds} person-disjoint folds "
                         f"(need at least {2 * n_folds}: two people per fold)")
    root = Path(root)
    people = root / "lfw"
    ids = np.arange(identity_offset, identity_offset + n_identities)
    rows = []
    for ident, j, img, lab in _sample_chunks(world, ids, counts, chunk, generator, nuisance=nuisance,
                                             **sample_kwargs):
        name = _synthetic_name(ident)
        path = people / name / f"{name}_{j + 1:04d}.jpg"
        _write_image(path, img)
        rows.append({"path": str(path), "person": name, "image_number": j + 1, **lab.to_dict()})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)

    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_identities)
    order = np.concatenate([perm[counts[perm] >= 2], perm[counts[perm] < 2]])   # spread the multi-image people
    folds = [order[f::n_folds] for f in range(n_folds)]
    candidates = []
    for members in folds:
        matched = [(m, a, b) for m in members for a in range(counts[m]) for b in range(a + 1, counts[m])]
        mismatched = [(p, a, q, b) for i, p in enumerate(members) for q in members[i + 1:]
                      for a in range(counts[p]) for b in range(counts[q])]
        candidates.append((matched, mismatched))
    feasible = min(min(len(m), len(u)) for m, u in candidates)
    n_pairs = min(300, feasible) if pairs_per_fold is None else int(pairs_per_fold)
    if n_pairs < 1 or n_pairs > feasible:
        raise ValueError(f"pairs_per_fold={pairs_per_fold} but the smallest fold allows {feasible} distinct matched "
                         "and mismatched pairs; give people more images or use fewer folds")
    lines = [f"{n_folds}\t{n_pairs}"]
    for matched, mismatched in candidates:
        for k in rng.choice(len(matched), n_pairs, replace=False):
            m, a, b = matched[k]
            lines.append(f"{_synthetic_name(ids[m])}\t{a + 1}\t{b + 1}")
        for k in rng.choice(len(mismatched), n_pairs, replace=False):
            p, a, q, b = mismatched[k]
            lines.append(f"{_synthetic_name(ids[p])}\t{a + 1}\t{_synthetic_name(ids[q])}\t{b + 1}")
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root


def export_orl(world, root, n_subjects: int = 40, per_subject: int = 10, identity_offset: int = 0,
               nuisance: str = "mild", generator: torch.Generator | None = None, chunk: int = 64,
               **sample_kwargs) -> Path:
    """Write synthetic people as ORL / AT&T: ``root/s1..sN/1.pgm..M.pgm``, 92 x 112 grey PGM, plus ``labels.csv``."""
    for name, v in (("n_subjects", n_subjects), ("per_subject", per_subject)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    root = Path(root)
    ids = np.arange(identity_offset, identity_offset + n_subjects)
    rows = []
    for ident, j, img, lab in _sample_chunks(world, ids, np.full(n_subjects, per_subject), chunk, generator,
                                             nuisance=nuisance, **sample_kwargs):
        path = root / f"s{ident - identity_offset + 1}" / f"{j + 1}.pgm"
        _write_image(path, img, size=(112, 92), grey=True)
        rows.append({"path": str(path), **lab.to_dict()})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    return root


#: How the synthetic world renders each AR condition.
_AR_EXPRESSIONS = {"neutral": "neutral", "smile": "happy", "anger": "angry",
                   "scream": {"AU04": 0.7, "AU07": 0.8, "AU09": 0.4, "AU10": 0.6, "AU20": 0.6, "AU25": 1.0,
                              "AU26": 1.0}}
_AR_LIGHTS = {"ambient": {}, "left": {"light_azimuth": -60.0, "light_intensity": 1.15},
              "right": {"light_azimuth": 60.0, "light_intensity": 1.15},
              "both": {"light_azimuth": 0.0, "light_intensity": 1.35, "ambient": 0.55}}


def export_ar(world, root, n_men: int = 3, n_women: int = 3, sessions: Sequence[int] = (1, 2),
              identity_offset: int = 0, generator: torch.Generator | None = None, ext: str = ".bmp") -> Path:
    """Write synthetic people with the 13 AR conditions per session as ``M-001-01.bmp`` ... (120 x 165 px).

    People ``identity_offset ..`` are written as men ``M-001..`` then women ``W-001..`` (the synthetic world has no
    sex label: the letter is only the file-name convention). Each condition is rendered with the world's own
    expression, light and occlusion factors (scream = AU4+7+9+10+20+25+26).
    """
    if any(int(s) not in (1, 2) for s in sessions):
        raise ValueError(f"sessions must be a subset of (1, 2), got {sessions!r}")
    n = int(n_men) + int(n_women)
    if n < 1 or n_men < 0 or n_women < 0:
        raise ValueError(f"n_men and n_women must be non-negative with a positive sum, got {n_men}, {n_women}")
    root = Path(root)
    ids = list(range(identity_offset, identity_offset + n))
    files = [("M", k + 1) for k in range(n_men)] + [("W", k + 1) for k in range(n_women)]
    for code, (session, expression, light, occlusion) in AR_CONDITIONS.items():
        if session not in sessions:
            continue
        batch = world.sample(identities=ids, per_identity=1, nuisance="none",
                             expression=_AR_EXPRESSIONS[expression],
                             occlusion=None if occlusion == "none" else occlusion, generator=generator,
                             **_AR_LIGHTS[light])
        for (sex, number), img in zip(files, batch.images):
            _write_image(root / f"{sex}-{number:03d}-{code:02d}{ext}", img, size=(165, 120))
    return root


def _as_videos(videos) -> list:
    return list(videos) if isinstance(videos, (list, tuple)) else [videos]


def _event_rows(video, kinds):
    ev = video.events
    if ev is None or len(ev) == 0:
        return []
    ev = ev[ev["kind"].isin(kinds)] if "kind" in ev.columns else ev
    rows = []
    for _, e in ev.iterrows():
        aus = e.get("aus", e.get("AUs", e.get("action_units", "")))
        rows.append((int(e["onset"]), int(e["apex"]), int(e["offset"]), _au_code(aus),
                     _SHEET_EMOTION.get(str(e.get("emotion", "others")), str(e.get("emotion", "others")))))
    return rows


def _write_sheet(table: pd.DataFrame, path: Path, sheet_format: str) -> Path:
    if sheet_format == "xlsx":
        try:
            import openpyxl  # noqa: F401
        except ImportError:
            raise ImportError("sheet_format='xlsx' needs openpyxl; use sheet_format='csv'") from None
        path = path.with_suffix(".xlsx")
        table.to_excel(path, index=False)
    elif sheet_format == "csv":
        path = path.with_suffix(".csv")
        table.to_csv(path, index=False)
    else:
        raise ValueError(f"sheet_format must be 'csv' or 'xlsx', got {sheet_format!r}")
    return path


def _videos_and_subjects(videos, subjects):
    """The videos as a list and one subject number per video (1, 2, ... by default)."""
    videos = _as_videos(videos)
    subjects = list(range(1, len(videos) + 1)) if subjects is None else list(subjects)
    if len(subjects) != len(videos):
        raise ValueError(f"subjects has {len(subjects)} entries for {len(videos)} videos")
    return videos, subjects


def export_casme(videos, root, subjects: Sequence[int] | None = None, kinds=("micro",),
                 sheet_format: str = "csv") -> Path:
    """Write synthetic videos as CASME II: ``root/subSS/EPVV_01/img1.jpg..`` and ``root/CASME2-coding.csv``.

    Parameters
    ----------
    videos : a ``world.video(...)`` result or a list of them
        Each needs ``frames`` (T, 3, H, W) and ``events`` (kind, emotion, onset, apex, offset, aus).
    subjects : sequence of int, optional
        Subject number of each video (default: 1, 2, ...).
    kinds : tuple of str
        Event kinds written to the sheet (default micro-expressions only, as in CASME II).
    sheet_format : {"csv", "xlsx"}

    Returns
    -------
    Path
        The sheet. Frame numbers are 1-based (``img1.jpg`` is frame 0 of the video), and so are the sheet's.
    """
    videos, subjects = _videos_and_subjects(videos, subjects)
    root = Path(root)
    rows = []
    for v, (video, subject) in enumerate(zip(videos, subjects)):
        episode = f"EP{v + 1:02d}_01"
        folder = root / f"sub{int(subject):02d}" / episode
        for t, frame in enumerate(video.frames):
            _write_image(folder / f"img{t + 1}.jpg", frame)
        for onset, apex, offset, aus, emo in _event_rows(video, kinds):
            rows.append({"Subject": f"{int(subject):02d}", "Filename": episode, "OnsetFrame": onset + 1,
                         "ApexFrame": apex + 1, "OffsetFrame": offset + 1, "Action Units": aus,
                         "Estimated Emotion": emo})
    table = pd.DataFrame(rows, columns=["Subject", "Filename", "OnsetFrame", "ApexFrame", "OffsetFrame",
                                        "Action Units", "Estimated Emotion"])
    return _write_sheet(table, root / "CASME2-coding", sheet_format)


def export_samm(videos, root, subjects: Sequence[int] | None = None, kinds=("micro",),
                sheet_format: str = "csv") -> Path:
    """Write synthetic videos as SAMM: ``root/SSS/SSS_1_V/SSS_00001.jpg..`` and ``root/SAMM_Micro_FACS_Codes.csv``
    (columns Subject, Filename, Inducement Code, Onset Frame, Apex Frame, Offset Frame, Duration, Type,
    Action Units, Notes, Estimated Emotion; frame numbers 1-based as in the file names)."""
    videos, subjects = _videos_and_subjects(videos, subjects)
    root = Path(root)
    rows = []
    for v, (video, subject) in enumerate(zip(videos, subjects)):
        sid = f"{int(subject):03d}"
        episode = f"{sid}_1_{v + 1}"
        folder = root / sid / episode
        for t, frame in enumerate(video.frames):
            _write_image(folder / f"{sid}_{t + 1:05d}.jpg", frame)
        for onset, apex, offset, aus, emo in _event_rows(video, kinds):
            rows.append({"Subject": sid, "Filename": episode, "Inducement Code": 1, "Onset Frame": onset + 1,
                         "Apex Frame": apex + 1, "Offset Frame": offset + 1, "Duration": offset - onset + 1,
                         "Type": "Micro - 1/2", "Action Units": aus, "Notes": "synthetic",
                         "Estimated Emotion": emo})
    table = pd.DataFrame(rows, columns=["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame",
                                        "Offset Frame", "Duration", "Type", "Action Units", "Notes",
                                        "Estimated Emotion"])
    return _write_sheet(table, root / "SAMM_Micro_FACS_Codes", sheet_format)
