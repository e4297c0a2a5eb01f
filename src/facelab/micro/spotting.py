"""Expression spotting in long videos and its MEGC evaluation.

Two baselines, both scoring every frame and then thresholding peaks:

- **MDMD** (main directional maximal difference; Wang et al. 2017, the MEGC 2020 baseline of He et al.): for the
  current frame :math:`i`, the flow from the head frame :math:`i-k` to :math:`i` in each facial region; its
  directions are binned (8 bins), the most populated bin is the *main direction*, and the region's value is the mean
  of the largest third of the magnitudes in that direction (the top regions are averaged). The same is computed from
  the head frame to the tail frame :math:`i+k`, and the score is the difference: large at the apex of a brief
  movement (the face moved, then came back), small for a slow drift. Global (head) motion is removed first by
  subtracting the median flow of the nose region.
- **LBP chi-squared feature difference** (Moilanen et al. 2014): uniform-LBP histograms per block; the chi-squared
  distance of frame :math:`i` to the average of frames :math:`i \\pm k`, averaged over the most changing third of the
  blocks, contrasted with its neighbours: :math:`C_i = F_i - (F_{i-k} + F_{i+k}) / 2`.

Peaks above :math:`T = \\bar s + p\\,(s_{\\max} - \\bar s)` at least :math:`k` frames apart become intervals
:math:`[i-k, i+k]`, labelled micro or macro by the :math:`k` they were spotted with.

MEGC evaluation: a spotted interval is a true positive when its IoU with a ground-truth interval of the same kind is
>= 0.5 (each ground truth matched once); precision, recall and F1 for micro, macro and overall (summed counts).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from facelab.micro.flow import flow_sequence

__all__ = ["mdmd_signal", "lbp_signal", "lbp_histograms", "spot_peaks", "spot_intervals", "interval_iou",
           "megc_evaluate"]

#: Regions used by default: the eyes are left out because blinks dominate their flow (a common MEGC practice).
SPOT_REGIONS = ("left_brow", "right_brow", "nose", "mouth", "left_cheek", "right_cheek", "chin")


def _crop(a, box):
    x0, y0, x1, y1 = box
    return a[..., y0:y1, x0:x1, :] if a.ndim == 4 else a[y0:y1, x0:x1]


def mdmd_signal(gray_crops: np.ndarray, regions: dict, k: int, *, use: Sequence[str] = SPOT_REGIONS,
                n_bins: int = 8, top_regions: int = 3, method: str = "dis") -> np.ndarray:
    """MDMD score per frame of a cropped (T, S, S) uint8 clip; frames closer than ``k`` to either end are 0.

    Parameters
    ----------
    gray_crops : ndarray
        Face crops, grayscale uint8 (see :func:`facelab.micro.flow.crop_faces`).
    regions : dict
        Region name -> box in crop pixels (see :func:`facelab.micro.flow.face_regions`).
    k : int
        Head-frame distance, about half the expected expression length in frames.
    """
    T = len(gray_crops)
    if k < 1:
        raise ValueError(f"k must be a positive number of frames, got {k}")
    missing = [r for r in use if r not in regions]
    if missing:
        raise ValueError(f"regions {missing} are missing; got {sorted(regions)}")
    scores = np.zeros(T)
    if T <= 2 * k:
        return scores
    centre = range(k, T - k)
    head_to_current = flow_sequence(gray_crops, [(i - k, i) for i in centre], method)
    head_to_tail = flow_sequence(gray_crops, [(i - k, i + k) for i in centre], method)
    md_current = _main_directional(head_to_current, regions, use, n_bins, top_regions)
    md_tail = _main_directional(head_to_tail, regions, use, n_bins, top_regions)
    scores[k:T - k] = np.clip(md_current - md_tail, 0, None)
    return scores


def _main_directional(flows, regions, use, n_bins, top_regions):
    """Mean of the largest third of the magnitudes in the main direction, per region; mean of the top regions."""
    ref = np.median(_crop(flows, regions["nose"]).reshape(len(flows), -1, 2), axis=1)
    flows = flows - ref[:, None, None, :]  # remove global (head) motion
    per_region = []
    for name in use:
        f = _crop(flows, regions[name]).reshape(len(flows), -1, 2)
        mag = np.hypot(f[..., 0], f[..., 1])
        bins = np.minimum(((np.arctan2(f[..., 1], f[..., 0]) + np.pi) / (2 * np.pi) * n_bins).astype(int),
                          n_bins - 1)
        vals = np.zeros(len(flows))
        for t in range(len(flows)):
            counts = np.bincount(bins[t], minlength=n_bins)
            m = np.sort(mag[t][bins[t] == counts.argmax()])[::-1]
            vals[t] = m[: max(1, len(m) // 3)].mean()
        per_region.append(vals)
    per_region = np.sort(np.stack(per_region, 1), axis=1)[:, ::-1]
    return per_region[:, :top_regions].mean(1)


def lbp_histograms(gray_crops: np.ndarray, grid: int = 6, P: int = 8, R: int = 1) -> np.ndarray:
    """(T, grid * grid, P + 2) normalised uniform-LBP histograms per block of every frame (:func:`lbp_signal`'s
    features; pass them as its ``hists`` to score the same clip at several ``k``)."""
    from skimage.feature import local_binary_pattern

    T, S, _ = gray_crops.shape
    n_codes = P + 2
    edges = np.linspace(0, S, grid + 1).astype(int)
    out = np.zeros((T, grid * grid, n_codes))
    for t in range(T):
        codes = local_binary_pattern(gray_crops[t], P, R, method="uniform").astype(int)
        for a in range(grid):
            for b in range(grid):
                block = codes[edges[a]:edges[a + 1], edges[b]:edges[b + 1]]
                out[t, a * grid + b] = np.bincount(block.ravel(), minlength=n_codes)[:n_codes]
    return out / out.sum(-1, keepdims=True)


def lbp_signal(gray_crops: np.ndarray, k: int, *, grid: int = 6, hists: np.ndarray | None = None) -> np.ndarray:
    """LBP chi-squared feature-difference contrast per frame (Moilanen et al. 2014); 0 where undefined.

    ``hists``: the clip's :func:`lbp_histograms` with this ``grid`` when already computed (they do not depend on
    ``k``), else computed here.
    """
    T = len(gray_crops)
    if k < 1:
        raise ValueError(f"k must be a positive number of frames, got {k}")
    F = np.zeros(T)
    if T <= 2 * k:
        return F
    h = lbp_histograms(gray_crops, grid) if hists is None else hists
    if h.shape[:2] != (T, grid * grid):
        raise ValueError(f"hists must be ({T}, {grid * grid}, n_codes) for this clip and grid, got {h.shape}")
    for i in range(k, T - k):
        avg = 0.5 * (h[i - k] + h[i + k])
        chi = ((h[i] - avg) ** 2 / (h[i] + avg + 1e-10)).sum(-1)
        top = np.sort(chi)[::-1][: max(1, len(chi) // 3)]
        F[i] = top.mean()
    C = np.zeros(T)
    for i in range(2 * k, T - 2 * k):
        C[i] = max(0.0, F[i] - 0.5 * (F[i - k] + F[i + k]))
    return C


def spot_peaks(score: np.ndarray, k: int, p: float = 0.3) -> np.ndarray:
    """Frame indices of peaks above ``mean + p (max - mean)`` at least ``k`` frames apart."""
    from scipy.signal import find_peaks

    score = np.asarray(score, dtype=float)
    if not np.isfinite(score).all():
        raise ValueError("score contains NaN/inf")
    if len(score) == 0 or np.ptp(score) == 0:
        return np.zeros(0, dtype=int)
    thr = score.mean() + p * (score.max() - score.mean())
    peaks, _ = find_peaks(score, height=thr, distance=max(1, k))
    return peaks


def spot_intervals(score: np.ndarray, k: int, kind: str, p: float = 0.3, shift: int = 0) -> pd.DataFrame:
    """Spotted intervals ``[peak - k + shift, peak + k + shift]`` (clipped to the clip) as a DataFrame."""
    T = len(score)
    peaks = spot_peaks(score, k, p)
    rows = [{"kind": kind, "onset": int(max(0, q - k + shift)), "offset": int(min(T - 1, q + k + shift)),
             "peak": int(q), "score": float(score[q])} for q in peaks]
    return pd.DataFrame(rows, columns=["kind", "onset", "offset", "peak", "score"])


def interval_iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    """IoU of two inclusive frame intervals ``(onset, offset)``."""
    if a[1] < a[0] or b[1] < b[0]:
        raise ValueError(f"intervals must have onset <= offset, got {a} and {b}")
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]) + 1)
    union = (a[1] - a[0] + 1) + (b[1] - b[0] + 1) - inter
    return inter / union


def megc_evaluate(predicted: pd.DataFrame, truth: pd.DataFrame, iou: float = 0.5,
                  video_col: str = "video") -> pd.DataFrame:
    """MEGC spotting scores: TP, n_pred, n_true, precision, recall, F1 for micro, macro and overall.

    Parameters
    ----------
    predicted, truth : DataFrame
        Columns ``kind`` ("micro"/"macro"), ``onset``, ``offset`` (inclusive frames) and ``video_col`` (any id; the
        column may be absent when everything comes from one video). Truth intervals must have onset <= offset.

    Returns
    -------
    DataFrame indexed by ``micro``, ``macro``, ``overall``. Precision is NaN when nothing was spotted and recall NaN
    when there is no ground truth of that kind; F1 = 2 TP / (n_pred + n_true) (0 when both are 0 is avoided: NaN).
    """
    for name, df in (("predicted", predicted), ("truth", truth)):
        missing = {"kind", "onset", "offset"} - set(df.columns)
        if missing:
            raise ValueError(f"{name} lacks columns {sorted(missing)}; expected kind, onset, offset")
        bad = set(df["kind"]) - {"micro", "macro"}
        if bad:
            raise ValueError(f"{name}.kind must be 'micro' or 'macro', got {sorted(bad)}")
    if (truth["offset"] < truth["onset"]).any():
        raise ValueError("truth has intervals with offset < onset")
    vid = lambda df: df[video_col] if video_col in df.columns else pd.Series(0, index=df.index)  # noqa: E731
    rows = {}
    for kind in ("micro", "macro"):
        P = predicted.assign(_v=vid(predicted).to_numpy())
        P = P[P["kind"] == kind]
        G = truth.assign(_v=vid(truth).to_numpy())
        G = G[G["kind"] == kind]
        tp = 0
        for v, g in G.groupby("_v"):
            p = P[P["_v"] == v]
            cand = sorted(((interval_iou((a.onset, a.offset), (b.onset, b.offset)), i, j)
                           for i, a in enumerate(p.itertuples()) for j, b in enumerate(g.itertuples())),
                          reverse=True)
            used_p, used_g = set(), set()
            for score, i, j in cand:
                if score < iou:
                    break
                if i not in used_p and j not in used_g:
                    used_p.add(i)
                    used_g.add(j)
                    tp += 1
        rows[kind] = (tp, len(P), len(G))
    rows["overall"] = tuple(sum(r[i] for r in rows.values()) for i in range(3))
    out = []
    for kind, (tp, n_pred, n_true) in rows.items():
        prec = tp / n_pred if n_pred else np.nan
        rec = tp / n_true if n_true else np.nan
        f1 = 2 * tp / (n_pred + n_true) if (n_pred + n_true) else np.nan
        out.append({"kind": kind, "TP": tp, "n_pred": n_pred, "n_true": n_true, "precision": prec, "recall": rec,
                    "F1": f1})
    return pd.DataFrame(out).set_index("kind")
