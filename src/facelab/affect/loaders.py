"""Loaders for users' local copies of the real affect corpora (ABAW): Aff-Wild2, BAH and Hume-Vidmimic2.

Nothing here downloads: each corpus needs a signed end-user licence from its owners; unpack it locally and point
the loader at it. A missing path raises :class:`facelab.datasets.DatasetNotFoundError` naming the source.

==================  ==========================================================  =====================================
corpus              what the loader expects                                     loader
==================  ==========================================================  =====================================
Aff-Wild2 (ABAW)    annotation files ``<video>.txt``, one line per frame after   :func:`read_abaw_annotation`,
                    a header: expression (``Neutral,Anger,Disgust,Fear,Happi-   :func:`load_affwild2`
                    ness,Sadness,Surprise,Other``; an index 0-7, -1 = not
                    annotated), valence/arousal (``valence,arousal``; -5 = not
                    annotated), AUs (``AU1,AU2,...``; 0/1, -1 = not annotated);
                    frames ``cropped_aligned/<video>/00001.jpg`` (1-based)
BAH                 a label table (CSV) with a video id column (``video_id``,   :func:`load_bah`
                    ``video``, ``video_name`` or ``filename``) and a 0/1 A/H
                    column (``label``, ``ah`` or ``ambivalence``), optional
                    ``segments.csv`` (``video_id, start_s, end_s``: A/H spans)
                    and ``transcripts/<video_id>.txt``
Hume-Vidmimic2      ``<split>_split.csv`` with ``Filename`` and the six        :func:`load_vidmimic`
                    intensities (``Admiration, Amusement, Determination,
                    Empathic Pain, Excitement, Joy``), videos under ``raw/``
==================  ==========================================================  =====================================

The BAH layout above is the loader's contract (the public release's file names may differ: rename the columns or
pass ``labels=``); the ABAW formats follow the challenge's annotation files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from facelab.metrics.abaw import ABAW_EXPRESSIONS, MIMICRY_DIMENSIONS

SOURCES = {
    "Aff-Wild2": "https://ibug.doc.ic.ac.uk/resources/aff-wild2/ (ABAW challenge, end-user licence)",
    "BAH": "https://sbelharbi.github.io/bah-dataset (BAH dataset, end-user licence)",
    "Hume-Vidmimic2": "ABAW Emotional Mimicry Intensity challenge (Hume AI, end-user licence)",
}
EXPR_HEADER = tuple(c.capitalize() for c in ABAW_EXPRESSIONS)
VA_INVALID = -5.0
VIDMIMIC_COLUMNS = ("Admiration", "Amusement", "Determination", "Empathic Pain", "Excitement", "Joy")


def _missing(corpus: str, what: str):
    from facelab.datasets import DatasetNotFoundError

    return DatasetNotFoundError(f"{corpus}: {what}. facelab does not download datasets; obtain {corpus} from its "
                                f"official source and unpack it locally: {SOURCES[corpus]}")


def _root(corpus: str, root) -> Path:
    if root is None or (isinstance(root, str) and not root.strip()):
        raise _missing(corpus, "no path given (root=None)")
    p = Path(root).expanduser()
    if not p.exists():
        raise _missing(corpus, f"path {str(p)!r} does not exist")
    return p


def read_abaw_annotation(path) -> pd.DataFrame:
    """One ABAW annotation file as a per-frame table (``frame`` 0-based, and its columns).

    The kind is told by the header: expression (``Neutral,...,Other``) -> columns ``expression`` (class name or
    None) and ``expression_index`` (-1 = not annotated); ``valence,arousal`` -> those columns (NaN where -5);
    ``AU1,...`` -> one 0/1 column per AU (-1 = not annotated). Raises ``ValueError`` for an unknown header, a
    wrong number of fields or an expression index outside -1..7.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no annotation file at {str(path)!r}")
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{path.name}: empty annotation file (expected a header line and one line per frame)")
    header = [h.strip() for h in lines[0].split(",")]
    if header in (list(EXPR_HEADER), list(ABAW_EXPRESSIONS)):
        return _read_expression(path, lines)
    rows = [ln.split(",") for ln in lines[1:]]
    bad = [i for i, r in enumerate(rows) if len(r) != len(header)]
    if bad:
        raise ValueError(f"{path.name}: line {bad[0] + 2} has {len(rows[bad[0]])} fields, the header has "
                         f"{len(header)}")
    try:
        vals = np.array(rows, dtype=np.float64).reshape(len(rows), len(header))
    except ValueError:
        raise ValueError(f"{path.name}: non-numeric value in the annotations") from None
    out = pd.DataFrame({"frame": np.arange(len(rows))})
    low = [h.lower() for h in header]
    if low == ["valence", "arousal"]:
        v = np.where(vals == VA_INVALID, np.nan, vals)
        out["valence"], out["arousal"] = v[:, 0], v[:, 1]
        return out
    if all(h.upper().startswith("AU") for h in header):
        for k, h in enumerate(header):
            out["AU" + h[2:].lstrip("0").zfill(2)] = vals[:, k].astype(int)
        return out
    raise ValueError(f"{path.name}: unknown annotation header {lines[0]!r}: expected the expression classes "
                     f"({','.join(EXPR_HEADER)}), 'valence,arousal' or AU columns")


def _read_expression(path: Path, lines: list[str]) -> pd.DataFrame:
    vals = []
    for k, ln in enumerate(lines[1:]):
        try:
            vals.append(int(ln.strip()))
        except ValueError:
            raise ValueError(f"{path.name}: line {k + 2}: expected one class index (-1..7), got {ln!r}") from None
    idx = np.array(vals, dtype=int)
    if idx.size and (idx.min() < -1 or idx.max() > 7):
        raise ValueError(f"{path.name}: expression index outside -1..7 ({idx.min()}..{idx.max()}): expected "
                         f"{', '.join(f'{i}={c}' for i, c in enumerate(ABAW_EXPRESSIONS))}, -1 = not annotated")
    names = [ABAW_EXPRESSIONS[i] if i >= 0 else None for i in idx]
    return pd.DataFrame({"frame": np.arange(len(idx)), "expression": names, "expression_index": idx})


def align_labels(labels: pd.DataFrame, n_frames: int, *, policy: str = "raise") -> pd.DataFrame:
    """Match a per-frame label table to a video of ``n_frames`` frames.

    ``policy="raise"``: a ``ValueError`` naming both lengths when they differ. ``"truncate"``: cut both to the
    shorter (the table is cut; a shorter table is padded with not-annotated rows: NaN / -1 / None). ABAW's files
    are sometimes one or two lines off their videos; the challenge evaluates the annotated frames only.
    """
    if policy not in ("raise", "truncate"):
        raise ValueError(f"policy must be 'raise' or 'truncate', got {policy!r}")
    n = len(labels)
    if n == n_frames:
        return labels
    if policy == "raise":
        raise ValueError(f"labels and video differ in length: {n} label rows for {n_frames} frames "
                         "(use policy='truncate' to cut or pad with not-annotated rows)")
    if n > n_frames:
        return labels.iloc[:n_frames].reset_index(drop=True)
    pad = pd.DataFrame({c: ([-1] if c == "expression_index" or c.startswith("AU") else
                            [None] if labels[c].dtype == object else [np.nan]) * (n_frames - n)
                        for c in labels.columns})
    pad["frame"] = np.arange(n, n_frames)
    return pd.concat([labels, pad], ignore_index=True)


def load_affwild2(root, video: str, *, tasks=("expression", "va", "au"), n_frames: int | None = None,
                  policy: str = "raise") -> pd.DataFrame:
    """Per-frame labels of one Aff-Wild2 video, merged over the ABAW task folders under ``root`` (any file named
    ``<video>.txt`` below it whose header says which task it is), and its frame paths when present
    (``cropped_aligned/<video>/NNNNN.jpg``, column ``path``; None where absent). ``n_frames``: check/align the
    length against the video's (see :func:`align_labels`)."""
    root = _root("Aff-Wild2", root)
    files = sorted(root.rglob(f"{video}.txt"))
    if not files:
        raise _missing("Aff-Wild2", f"no annotation file {video}.txt under {str(root)!r}")
    merged = None
    for f in files:
        t = read_abaw_annotation(f)
        kind = "expression" if "expression" in t else "va" if "valence" in t else "au"
        if kind not in tasks:
            continue
        merged = t if merged is None else merged.merge(t, on="frame", how="outer")
    if merged is None:
        raise _missing("Aff-Wild2", f"no annotation of the tasks {tasks} for {video}")
    frames_dir = root / "cropped_aligned" / video
    merged["path"] = [str(p) if (p := frames_dir / f"{i + 1:05d}.jpg").is_file() else None for i in merged["frame"]]
    if n_frames is not None:
        merged = align_labels(merged, n_frames, policy=policy)
    return merged


def _pick(table: pd.DataFrame, names, what: str, path) -> str:
    cols = {c.lower().strip(): c for c in table.columns}
    for n in names:
        if n in cols:
            return cols[n]
    raise ValueError(f"{Path(path).name}: no {what} column (expected one of {', '.join(names)}), got "
                     f"{list(table.columns)}")


def load_bah(root, *, labels: str | None = None) -> pd.DataFrame:
    """BAH video-level labels: one row per video with ``video_id``, ``ah`` (0/1), ``segments`` (list of (start_s,
    end_s) A/H spans, empty when none), ``transcript`` (str or None) and ``video`` (path or None)."""
    root = _root("BAH", root)
    table_path = Path(labels) if labels is not None else None
    if table_path is None:
        cands = [p for p in sorted(root.glob("*.csv")) if p.name != "segments.csv"]
        if not cands:
            raise _missing("BAH", f"no label table (*.csv) in {str(root)!r}")
        table_path = cands[0]
    table = pd.read_csv(table_path, dtype=str)  # ids such as "00012" stay strings
    vid = _pick(table, ("video_id", "video", "video_name", "filename", "name"), "video id", table_path)
    lab = _pick(table, ("label", "ah", "ambivalence", "a/h"), "A/H label", table_path)
    y = pd.to_numeric(table[lab], errors="coerce")
    if y.isna().any() or not y.isin((0, 1)).all():
        raise ValueError(f"{table_path.name}: the A/H column {lab!r} must hold 0 or 1, got "
                         f"{sorted(set(table[lab].astype(str)))[:5]}")
    out = pd.DataFrame({"video_id": table[vid].astype(str), "ah": y.astype(int)})
    seg_path = root / "segments.csv"
    segs = {v: [] for v in out["video_id"]}
    if seg_path.is_file():
        s = pd.read_csv(seg_path, dtype={"video_id": str})
        for _, r in s.iterrows():
            a, b = float(r["start_s"]), float(r["end_s"])
            if not b > a >= 0:
                raise ValueError(f"segments.csv: need 0 <= start_s < end_s, got {a}, {b} for {r['video_id']}")
            segs.setdefault(str(r["video_id"]), []).append((a, b))
    out["segments"] = [segs.get(v, []) for v in out["video_id"]]
    tr = root / "transcripts"
    out["transcript"] = [(tr / f"{v}.txt").read_text().strip() if (tr / f"{v}.txt").is_file() else None
                         for v in out["video_id"]]
    vids = {p.stem: str(p) for p in root.rglob("*") if p.suffix.lower() in (".mp4", ".avi", ".mov", ".webm")}
    out["video"] = [vids.get(v) for v in out["video_id"]]
    return out


def load_vidmimic(root, split: str = "train") -> pd.DataFrame:
    """Hume-Vidmimic2 targets: ``Filename``, the six intensities renamed to :data:`MIMICRY_DIMENSIONS`, and
    ``video`` (path under ``raw/`` or None). Intensities must lie in [0, 1]."""
    root = _root("Hume-Vidmimic2", root)
    if split not in ("train", "valid", "test"):
        raise ValueError(f"split must be 'train', 'valid' or 'test', got {split!r}")
    path = root / f"{split}_split.csv"
    if not path.is_file():
        raise _missing("Hume-Vidmimic2", f"no {path.name} in {str(root)!r}")
    t = pd.read_csv(path, dtype=str)  # file names such as "00012" stay strings
    fn = _pick(t, ("filename", "file", "video"), "file name", path)
    missing = [c for c in VIDMIMIC_COLUMNS if c not in t.columns]
    if missing:
        raise ValueError(f"{path.name}: missing intensity columns {missing} (expected {', '.join(VIDMIMIC_COLUMNS)})")
    vals = t[list(VIDMIMIC_COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    if not np.all(np.isfinite(vals)) or vals.min() < 0 or vals.max() > 1:
        raise ValueError(f"{path.name}: intensities must be numbers in [0, 1]")
    out = pd.DataFrame({"Filename": t[fn].astype(str)})
    for c, d in zip(VIDMIMIC_COLUMNS, MIMICRY_DIMENSIONS):
        out[d] = vals[:, VIDMIMIC_COLUMNS.index(c)]
    raw = root / "raw"
    out["video"] = [str(p) if (p := raw / f"{f}.mp4").is_file() else None for f in out["Filename"]]
    return out
