"""Loaders for the real multimodal micro-expression corpora, and an exporter of the synthetic corpus to their layout.

Nothing here downloads: MMME, CASME II, SAMM and SAMM-LV are released on request under licence agreements.

- **MMME** (Ma et al.; github.com/Mac0504/MMME): face video frames, an annotation sheet and synchronized EEG +
  peripheral recordings. The layout :func:`load_mmme` reads (adapt ``columns`` if your copy's sheet differs)::

      root/
        annotations.csv | .xlsx   Subject, Trial, Filename, VideoStart, Onset, Apex, Offset, Type, Emotion, AU
        sub01/
          trial01/img0001.jpg ... (Filename: the frame folder, relative to the subject folder)
          physio/*.fif|.edf|.bdf|.set|.vhdr   one or more recordings read with mne.io.read_raw

  ``VideoStart`` is the time (s) of the clip's first frame in the subject's recording; ``Type`` is ME/MaE or
  micro/macro. EEG and peripheral signals stored in separate files at different rates are resampled to the highest
  rate and cropped to the common length (:func:`align_recordings`).
- **CASME II** and **SAMM** episode sheets: :func:`facelab.datasets.load_casme2` and :func:`facelab.datasets.load_samm`
  (engineer B2's loaders, reused here, not duplicated); :func:`episodes_to_intervals` turns their episodes into
  spotting ground truth.
- **SAMM-LV / CAS(ME)^2** long-video interval sheets (``Subject, Filename, Onset, Apex, Offset, Type``):
  :func:`load_interval_sheet`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["MMMEDataset", "load_mmme", "align_recordings", "load_interval_sheet", "episodes_to_intervals",
           "export_mmme", "RAW_EXTENSIONS"]

RAW_EXTENSIONS = (".fif", ".edf", ".bdf", ".set", ".vhdr", ".gdf", ".cnt")
_KIND = {"me": "micro", "micro": "micro", "micro-expression": "micro", "mae": "macro", "macro": "macro",
         "macro-expression": "macro"}
_COLUMNS = {"subject": ["Subject"], "trial": ["Trial"], "filename": ["Filename", "Folder"],
            "video_start": ["VideoStart", "Video Start", "VideoStart(s)"], "onset": ["Onset", "OnsetFrame",
                                                                                   "Onset Frame"],
            "apex": ["Apex", "ApexFrame", "Apex Frame"], "offset": ["Offset", "OffsetFrame", "Offset Frame"],
            "type": ["Type", "Expression Type"], "emotion": ["Emotion", "Estimated Emotion"],
            "aus": ["AU", "Action Units"]}


def _sheet(path: Path) -> pd.DataFrame:
    from facelab.datasets import read_annotation_sheet  # CSV/xlsx, skips title rows above the header

    return read_annotation_sheet(path, "MMME")


def _col(table: pd.DataFrame, names: Sequence[str], sheet: Path, required: bool = True):
    norm = {re.sub(r"[\s_()]+", "", str(c).lower()): c for c in table.columns}
    for n in names:
        key = re.sub(r"[\s_()]+", "", n.lower())
        if key in norm:
            return table[norm[key]]
    if required:
        raise ValueError(f"sheet {sheet.name} has no column {names[0]!r} (columns: {list(table.columns)})")
    return None


def _frame(v) -> float:
    try:
        return float(int(float(str(v).strip())))
    except (TypeError, ValueError):
        return float("nan")


def align_recordings(raws: Sequence, sfreq: float | None = None, max_length_diff_s: float = 1.0):
    """Merge recordings of one session (e.g. an EEG file and a peripheral file) onto one timeline.

    Different sampling rates: every recording is resampled to ``sfreq`` (default: the highest rate). Different
    lengths: cropped to the shortest if they differ by at most ``max_length_diff_s`` seconds, otherwise an error
    (a longer mismatch means the files are not synchronized). Duplicate channel names are an error.
    """
    import mne

    raws = list(raws)
    if not raws:
        raise ValueError("align_recordings needs at least one recording")
    target = float(sfreq or max(r.info["sfreq"] for r in raws))
    out = []
    for r in raws:
        r = r.copy().load_data(verbose="error")
        if r.info["sfreq"] != target:
            r.resample(target, verbose="error")
        out.append(r)
    lengths = [r.times[-1] + 1 / target for r in out]
    if max(lengths) - min(lengths) > max_length_diff_s:
        raise ValueError(f"recordings last {[round(x, 3) for x in lengths]} s: they differ by more than "
                         f"max_length_diff_s={max_length_diff_s} s, so they cannot be aligned by cropping")
    names = [c for r in out for c in r.ch_names]
    dup = sorted({c for c in names if names.count(c) > 1})
    if dup:
        raise ValueError(f"channels {dup} appear in more than one recording")
    n = min(r.n_times for r in out)
    out = [r.crop(tmax=(n - 1) / target, verbose="error") if r.n_times > n else r for r in out]
    merged = out[0]
    if len(out) > 1:
        merged.add_channels(out[1:], force_update_info=True)
    return merged


@dataclass
class MMMEDataset:
    """An MMME-layout corpus: ``events`` (one row per expression) and lazily read recordings and frames."""

    root: Path
    events: pd.DataFrame
    fps: float
    _raws: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.events)

    @property
    def subjects(self) -> list[str]:
        return sorted(self.events["subject"].unique())

    def raw(self, subject: str, required: Sequence[str] = ()):
        """The subject's recording(s) from ``physio/`` merged by :func:`align_recordings`, with the expressions
        as :class:`mne.Annotations` (``"micro/happy"``); raises if an expression falls outside the recording."""
        import mne

        from facelab.micro.physio import check_raw

        if subject not in self._raws:
            folder = Path(self.root) / subject / "physio"
            files = sorted(p for p in folder.glob("*") if p.suffix.lower() in RAW_EXTENSIONS) if folder.is_dir() \
                else []
            if not files:
                raise FileNotFoundError(f"MMME: no recording ({', '.join(RAW_EXTENSIONS)}) in {folder}")
            raw = align_recordings([mne.io.read_raw(p, preload=True, verbose="error") for p in files])
            ev = self.events[self.events["subject"] == subject]
            onset = ev["video_start"] + ev["onset"] / self.fps
            dur = (ev["offset"] - ev["onset"] + 1) / self.fps
            end = raw.times[-1] + 1 / raw.info["sfreq"]
            bad = (onset < 0) | (onset + dur > end + 1e-9)
            if bad.any():
                r = ev[bad].iloc[0]
                raise ValueError(f"MMME: expression {r['filename']} frames {int(r['onset'])}-{int(r['offset'])} "
                                 f"(video start {r['video_start']} s) lies outside {subject}'s recording (0 to "
                                 f"{end:.2f} s)")
            ann = mne.Annotations(onset.to_numpy(), dur.to_numpy(),
                                  [f"{k}/{e}" for k, e in zip(ev["kind"], ev["emotion"])])
            raw.set_annotations(raw.annotations + ann, verbose="error")
            self._raws[subject] = raw
        return check_raw(self._raws[subject], required)

    def frames(self, i: int, start: int | None = None, stop: int | None = None) -> np.ndarray:
        """Frames ``start..stop`` (inclusive frame numbers; default onset..offset) of expression ``i`` as
        (T, 3, H, W) uint8."""
        import cv2

        row = self.events.iloc[int(i)]
        start = int(row["onset"]) if start is None else int(start)
        stop = int(row["offset"]) if stop is None else int(stop)
        folder = Path(row["folder"])
        files = {}
        for p in folder.iterdir():
            m = re.search(r"(\d+)$", p.stem)
            if m and p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"):
                files[int(m.group(1))] = p
        sel = [files[k] for k in sorted(files) if start <= k <= stop]
        if not sel:
            raise ValueError(f"MMME: no frames numbered {start}..{stop} in {folder}")
        return np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB).transpose(2, 0, 1) for p in sel])


def load_mmme(root, annotations=None, fps: float = 30.0) -> MMMEDataset:
    """Read an MMME-layout corpus (see the module docstring); recordings are opened on demand by ``.raw()``.

    Raises
    ------
    FileNotFoundError
        If ``root``, the sheet or a frame folder is missing.
    ValueError
        For missing columns, onset > offset, an apex outside [onset, offset] or an unknown expression type.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"MMME root {str(root)!r} does not exist; MMME is released on request "
                                "(github.com/Mac0504/MMME, licence agreement), nothing is downloaded")
    if annotations is None:
        sheets = sorted([*root.glob("*.csv"), *root.glob("*.xlsx")])
        if not sheets:
            raise FileNotFoundError(f"no annotation sheet (.csv/.xlsx) in {root}; pass annotations=PATH")
        annotations = sheets[0]
    sheet = Path(annotations)
    if not sheet.is_file():
        raise FileNotFoundError(f"annotation sheet {str(sheet)!r} does not exist")
    table = _sheet(sheet)
    c = {k: _col(table, v, sheet, required=k not in ("aus", "trial")) for k, v in _COLUMNS.items()}
    ev = pd.DataFrame({
        "subject": c["subject"].astype(str).str.strip().to_numpy(),
        "trial": (c["trial"].astype(str).str.strip().to_numpy() if c["trial"] is not None else ""),
        "filename": c["filename"].astype(str).str.strip().to_numpy(),
        "video_start": pd.to_numeric(c["video_start"], errors="coerce").to_numpy(),
        "onset": c["onset"].map(_frame).to_numpy(), "apex": c["apex"].map(_frame).to_numpy(),
        "offset": c["offset"].map(_frame).to_numpy(),
        "type": c["type"].astype(str).str.strip().to_numpy(),
        "emotion": c["emotion"].astype(str).str.strip().str.lower().to_numpy(),
        "aus": (c["aus"].astype(str).str.strip().to_numpy() if c["aus"] is not None else ""),
    })
    ev = ev[ev["filename"].ne("") & ev["filename"].str.lower().ne("nan")].reset_index(drop=True)
    if ev.empty:
        raise ValueError(f"sheet {sheet.name} holds no expressions")
    kind = ev["type"].str.lower().map(_KIND)
    if kind.isna().any():
        raise ValueError(f"unknown expression Type {sorted(set(ev['type'][kind.isna()]))}: expected ME/MaE or "
                         "micro/macro")
    ev["kind"] = kind
    bad = ev["onset"].isna() | ev["offset"].isna() | (ev["offset"] < ev["onset"]) | ev["video_start"].isna()
    if bad.any():
        raise ValueError(f"rows with missing onset/offset/VideoStart or offset < onset: "
                         f"{ev[bad][['subject', 'filename', 'onset', 'offset']].head(3).to_dict('records')}")
    apex_bad = ev["apex"].notna() & ((ev["apex"] < ev["onset"]) | (ev["apex"] > ev["offset"]))
    if apex_bad.any():
        raise ValueError(f"rows with an apex outside [onset, offset]: "
                         f"{ev[apex_bad][['subject', 'filename', 'onset', 'apex', 'offset']].head(3).to_dict('records')}")
    folders = []
    for s, f in zip(ev["subject"], ev["filename"]):
        p = root / s / f
        if not p.is_dir():
            raise FileNotFoundError(f"MMME: frame folder {s}/{f} not found under {root}")
        folders.append(str(p))
    ev["folder"] = folders
    return MMMEDataset(root, ev, float(fps))


def load_interval_sheet(path, fps: float | None = None, micro_max_s: float = 0.5) -> pd.DataFrame:
    """Long-video spotting ground truth (SAMM-LV, CAS(ME)^2 style): ``video, subject, kind, onset, apex, offset``.

    ``Type`` decides micro/macro when present (``Micro - 1/2``, ``ME``, ``Macro``, ``MaE``); otherwise ``fps`` is
    required and an interval shorter than ``micro_max_s`` is micro. Apex 0/-1 (uncoded in SAMM-LV) becomes NaN.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"interval sheet {str(path)!r} does not exist")
    table = _sheet(path)
    subj = _col(table, ["Subject"], path).astype(str).str.strip()
    video = _col(table, ["Filename", "Video"], path).astype(str).str.strip()
    out = pd.DataFrame({"video": video.to_numpy(), "subject": subj.to_numpy(),
                        "onset": _col(table, _COLUMNS["onset"], path).map(_frame).to_numpy(),
                        "apex": _col(table, _COLUMNS["apex"], path).map(_frame).to_numpy(),
                        "offset": _col(table, _COLUMNS["offset"], path).map(_frame).to_numpy()})
    out.loc[out["apex"] <= 0, "apex"] = np.nan
    typ = _col(table, ["Type", "Expression Type"], path, required=False)
    if typ is not None:
        t = typ.astype(str).str.lower().str.strip()
        kind = np.where(t.str.startswith(("micro", "me")), "micro",
                        np.where(t.str.startswith(("macro", "mae")), "macro", ""))
        if (kind == "").any():
            raise ValueError(f"unknown Type values {sorted(set(typ[kind == '']))} in {path.name}")
    else:
        if fps is None:
            raise ValueError(f"{path.name} has no Type column: pass fps to tell micro from macro by duration")
        kind = np.where((out["offset"] - out["onset"] + 1) / fps < micro_max_s, "micro", "macro")
    out["kind"] = kind
    bad = out["onset"].isna() | out["offset"].isna() | (out["offset"] < out["onset"])
    if bad.any():
        raise ValueError(f"{path.name}: rows with missing onset/offset or offset < onset: "
                         f"{out[bad].head(3).to_dict('records')}")
    return out[["video", "subject", "kind", "onset", "apex", "offset"]]


def episodes_to_intervals(episodes: pd.DataFrame, fps: float, micro_max_s: float = 0.5) -> pd.DataFrame:
    """CASME II / SAMM episodes (:class:`facelab.datasets.MicroExpressionDataset` ``.episodes``) -> intervals for
    :func:`facelab.micro.spotting.megc_evaluate`, micro when shorter than ``micro_max_s`` at ``fps``."""
    need = {"subject", "episode", "onset", "offset"}
    if need - set(episodes.columns):
        raise ValueError(f"episodes lack columns {sorted(need - set(episodes.columns))}")
    dur = (episodes["offset"] - episodes["onset"] + 1) / fps
    return pd.DataFrame({"video": episodes["subject"].astype(str) + "/" + episodes["episode"].astype(str),
                         "subject": episodes["subject"], "kind": np.where(dur < micro_max_s, "micro", "macro"),
                         "onset": episodes["onset"], "apex": episodes.get("apex", np.nan),
                         "offset": episodes["offset"]})


def export_mmme(corpus, root, fmt: str = ".png") -> Path:
    """Write a synthetic :class:`facelab.micro.corpus.Corpus` in the MMME layout :func:`load_mmme` reads.

    Frames are the grayscale face crops (3 equal channels); each session is saved as ``physio/session_raw.fif``.
    """
    import cv2

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for s in corpus.sessions:
        sub = f"sub{s.subject + 1:02d}"
        (root / sub / "physio").mkdir(parents=True, exist_ok=True)
        s.raw.save(root / sub / "physio" / "session_raw.fif", overwrite=True, verbose="error")
        for tr in s.trials:
            folder = f"trial{tr.trial + 1:02d}"
            (root / sub / folder).mkdir(exist_ok=True)
            for k, img in enumerate(tr.crops):
                cv2.imwrite(str(root / sub / folder / f"img{k:04d}{fmt}"), img)
            for ev in tr.events.itertuples():
                rows.append({"Subject": sub, "Trial": tr.trial + 1, "Filename": folder,
                             "VideoStart": tr.video_start_s, "Onset": ev.onset, "Apex": ev.apex,
                             "Offset": ev.offset, "Type": "ME" if ev.kind == "micro" else "MaE",
                             "Emotion": ev.emotion})
    pd.DataFrame(rows).to_csv(root / "annotations.csv", index=False)
    return root
