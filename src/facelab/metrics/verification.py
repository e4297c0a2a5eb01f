"""Verification (1:1) and identification (1:N) metrics.

Conventions used throughout
---------------------------
* **Scores are similarities**: a higher score means "more likely the same person" -- the book's one convention
  (:mod:`facelab.core.scores`). Every face comparison in :mod:`facelab.recognition`, :mod:`facelab.models` and the
  studies already returns such scores (dlib: minus the L2 distance, threshold -0.6; SFace: the cosine, threshold
  0.363), so they go into these functions as they are. A raw distance from elsewhere is converted once with
  :func:`facelab.core.scores.similarity_from_distance` (:func:`scores_from_distances` is the same for L2).
* **Labels** for verification are ``1`` (genuine / mated pair) and ``0`` (impostor / non-mated pair); booleans work.
* A pair is **accepted** at threshold ``t`` when ``score >= t`` (the scikit-learn convention), so

  .. math::

     \\mathrm{FAR}(t) = \\mathrm{FMR}(t) = \\frac{\\#\\{\\text{impostor}: s \\ge t\\}}{\\#\\text{impostor}},\\qquad
     \\mathrm{TAR}(t) = 1 - \\mathrm{FNMR}(t) = \\frac{\\#\\{\\text{genuine}: s \\ge t\\}}{\\#\\text{genuine}}.

* Identification takes a score matrix ``S`` of shape ``(n_probes, n_gallery)`` plus the identity of every probe and
  every gallery entry. A gallery identity with several templates is scored by its best template. Ties are resolved
  **pessimistically**: the rank of the true identity is ``1 +`` the number of other identities that score at least as
  high, so a method that outputs constant scores never looks good.

All functions take NumPy arrays, lists or (CPU or GPU) torch tensors and return NumPy values / Python floats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = [
    "scores_from_distances",
    "roc_curve",
    "roc_auc",
    "det_curve",
    "eer",
    "threshold_at_far",
    "tar_at_far",
    "fnmr_at_fmr",
    "far_frr",
    "verification_accuracy",
    "verification_report",
    "identification_ranks",
    "rank_k_accuracy",
    "cmc_curve",
    "dir_at_far",
    "OpenSetResult",
]


# --------------------------------------------------------------------------------------------- input checking
def _as_numpy(x, name: str) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(x)


def _check_binary(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y = _as_numpy(labels, "labels")
    s = _as_numpy(scores, "scores").astype(np.float64, copy=False)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D, got shapes {y.shape} and {s.shape}")
    if y.shape[0] != s.shape[0]:
        raise ValueError(f"labels and scores must have the same length, got {y.shape[0]} labels and {s.shape[0]} scores")
    if y.shape[0] == 0:
        raise ValueError("labels and scores are empty: verification metrics need genuine and impostor scores")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"scores contain {int(np.sum(~np.isfinite(s)))} NaN/inf values; expected finite numbers")
    uniq = np.unique(y)
    if not np.all(np.isin(uniq, [0, 1])):
        raise ValueError(f"labels must be 0 (impostor) or 1 (genuine), got values {uniq.tolist()[:10]}")
    y = y.astype(bool)
    n_gen, n_imp = int(y.sum()), int((~y).sum())
    if n_gen == 0 or n_imp == 0:
        present = "genuine (1)" if n_gen else "impostor (0)"
        raise ValueError(
            f"only one class present: {len(y)} {present} scores. Verification metrics need both genuine (label 1) "
            "and impostor (label 0) pairs."
        )
    return y, s


def scores_from_distances(distances) -> np.ndarray:
    """Turn L2-type distances (lower = same person) into similarity scores (higher = same person) by negation,
    :func:`facelab.core.scores.similarity_from_distance`. A threshold ``t`` on the distance becomes ``-t``."""
    from facelab.core.scores import similarity_from_distance

    return similarity_from_distance(_as_numpy(distances, "distances").astype(np.float64), "euclidean")


# --------------------------------------------------------------------------------------------- verification
def roc_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve: false accept rate and true accept rate at every distinct score threshold.

    Equal to :func:`sklearn.metrics.roc_curve` with ``drop_intermediate=False``.

    Parameters
    ----------
    labels : array-like of shape (n,)
        1 for genuine pairs, 0 for impostor pairs.
    scores : array-like of shape (n,)
        Similarity scores (higher = more likely genuine).

    Returns
    -------
    far : ndarray
        False accept rate (= false match rate), increasing from 0 to 1.
    tar : ndarray
        True accept rate (= 1 - FNMR), increasing.
    thresholds : ndarray
        Decreasing thresholds; ``thresholds[0] = inf`` (accept nothing).

    Examples
    --------
    >>> far, tar, thr = roc_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    >>> far.tolist(), tar.tolist()
    ([0.0, 0.0, 0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0])
    """
    y, s = _check_binary(labels, scores)
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    # the last index of each run of equal scores: all tied pairs are accepted together
    last = np.r_[np.nonzero(np.diff(s_sorted))[0], len(s_sorted) - 1]
    tp = np.cumsum(y_sorted)[last]
    fp = (last + 1) - tp
    tar = np.r_[0.0, tp / y.sum()]
    far = np.r_[0.0, fp / (~y).sum()]
    thresholds = np.r_[np.inf, s_sorted[last]]
    return far, tar, thresholds


def roc_auc(labels, scores) -> float:
    """Area under the ROC curve (trapezoidal; equals :func:`sklearn.metrics.roc_auc_score`).

    It is the probability that a random genuine pair scores above a random impostor pair, ties counting one half.
    """
    far, tar, _ = roc_curve(labels, scores)
    return float(np.trapezoid(tar, far))


def det_curve(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Detection error trade-off: false match rate and false non-match rate for every threshold.

    Returns ``(fmr, fnmr, thresholds)`` ordered by increasing threshold (the last one may be ``inf``: accept
    nothing), with the points that only extend the curve past 0 trimmed exactly as :func:`sklearn.metrics.det_curve`
    (scikit-learn >= 1.7) does, so the two agree. Plot them on
    normal-deviate axes (``scipy.stats.norm.ppf``) for the usual DET look.
    """
    far, tar, thr = roc_curve(labels, scores)
    # keep from the last point that still has the lowest FMR to the first point where FNMR reaches 0
    first = int(np.searchsorted(far, far[0], side="right")) - 1
    last = int(np.searchsorted(tar, tar[-1], side="left")) + 1
    sl = slice(first, last)
    return far[sl][::-1], (1.0 - tar[sl])[::-1], thr[sl][::-1]


def eer(labels, scores) -> tuple[float, float]:
    """Equal error rate and the threshold where it occurs.

    The FAR and FRR (= 1 - TAR) curves are interpolated linearly between consecutive ROC points and the EER is read
    where they cross. Perfect separation gives 0; constant scores give 0.5.

    Returns
    -------
    eer : float
    threshold : float
        A score threshold at the crossing (the score of the ROC vertex nearest to it).
    """
    far, tar, thr = roc_curve(labels, scores)
    frr = 1.0 - tar
    diff = far - frr  # starts at -1 (far 0, frr 1) and ends at +1: it crosses zero once
    i = int(np.nonzero(diff >= 0)[0][0])
    if diff[i] == 0 or i == 0:
        value, j = far[i], i
    else:
        a, b = diff[i - 1], diff[i]
        w = -a / (b - a)
        value = far[i - 1] + w * (far[i] - far[i - 1])
        j = i if w >= 0.5 else i - 1
    t = thr[j] if np.isfinite(thr[j]) else thr[min(j + 1, len(thr) - 1)]
    return float(value), float(t)


def _targets(far_targets) -> tuple[np.ndarray, bool]:
    t = np.atleast_1d(np.asarray(far_targets, dtype=np.float64))
    if np.any((t < 0) | (t > 1)) or not np.all(np.isfinite(t)):
        raise ValueError(f"FAR targets must lie in [0, 1], got {t.tolist()}")
    return t, np.ndim(far_targets) == 0


def threshold_at_far(labels, scores, far) -> float | np.ndarray:
    """The lowest score threshold whose false accept rate does not exceed ``far`` (scalar or array)."""
    f, roc_tar, thr = roc_curve(labels, scores)
    targets, scalar = _targets(far)
    idx = np.searchsorted(f, targets, side="right") - 1  # last ROC point with FAR <= target
    out = thr[idx]
    return float(out[0]) if scalar else out


def tar_at_far(labels, scores, far) -> float | np.ndarray:
    """True accept rate at the operating point with the largest FAR not above ``far`` (no interpolation).

    With ``n`` impostor pairs a FAR below ``1/n`` cannot be measured; the function then returns the TAR at FAR 0,
    which is what the data can support (report the impostor count beside small FARs).
    """
    f, t, _ = roc_curve(labels, scores)
    targets, scalar = _targets(far)
    idx = np.searchsorted(f, targets, side="right") - 1
    out = t[idx]
    return float(out[0]) if scalar else out


def fnmr_at_fmr(labels, scores, fmr) -> float | np.ndarray:
    """False non-match rate at a false match rate: ``1 - tar_at_far`` (ISO/IEC 19795 vocabulary)."""
    out = tar_at_far(labels, scores, fmr)
    return 1.0 - out


def far_frr(labels, scores, threshold: float) -> tuple[float, float]:
    """FAR and FRR when pairs with ``score >= threshold`` are accepted."""
    y, s = _check_binary(labels, scores)
    accept = s >= float(threshold)
    return float(accept[~y].mean()), float((~accept[y]).mean())


def verification_accuracy(labels, scores, threshold: float | None = None) -> tuple[float, float]:
    """Balanced accuracy ``1 - (FAR + FRR) / 2`` of same/different decisions, and the threshold used.

    With ``threshold=None`` the best threshold on these very pairs is used (an optimistic, "oracle" accuracy; the
    LFW protocol instead picks it on nine folds and tests on the tenth). On a balanced pair set such as LFW's
    (3,000 genuine, 3,000 impostor) this equals the plain accuracy.
    """
    y, s = _check_binary(labels, scores)
    if threshold is not None:
        far, frr = far_frr(y, s, threshold)
        return 1.0 - 0.5 * (far + frr), float(threshold)
    far, tar, thr = roc_curve(y, s)
    acc = 1.0 - 0.5 * (far + 1.0 - tar)
    best = int(np.argmax(acc))
    return float(acc[best]), float(thr[best])


def verification_report(labels, scores, fars: Sequence[float] = (1e-1, 1e-2, 1e-3)) -> dict:
    """AUC, EER and TAR at each FAR in ``fars`` as one flat dict (one row of a results table)."""
    y, s = _check_binary(labels, scores)
    row = {"AUC": roc_auc(y, s), "EER": eer(y, s)[0]}
    for f, t in zip(fars, np.atleast_1d(tar_at_far(y, s, list(fars)))):
        row[f"TAR@FAR={f:g}"] = float(t)
    row["n_genuine"], row["n_impostor"] = int(y.sum()), int((~y).sum())
    return row


# --------------------------------------------------------------------------------------------- identification
def _identity_scores(scores, probe_labels, gallery_labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Collapse the gallery to one column per identity (best template); return (S_id, identities, probe_labels)."""
    S = _as_numpy(scores, "scores").astype(np.float64, copy=False)
    p = np.asarray(_as_numpy(probe_labels, "probe_labels"))
    g = np.asarray(_as_numpy(gallery_labels, "gallery_labels"))
    if S.ndim != 2:
        raise ValueError(f"scores must be a (n_probes, n_gallery) matrix, got shape {S.shape}")
    if p.ndim != 1 or p.shape[0] != S.shape[0]:
        raise ValueError(f"probe_labels must have one entry per score row ({S.shape[0]}), got shape {p.shape}")
    if g.ndim != 1 or g.shape[0] != S.shape[1]:
        raise ValueError(f"gallery_labels must have one entry per score column ({S.shape[1]}), got shape {g.shape}")
    if S.shape[0] == 0 or S.shape[1] == 0:
        raise ValueError(f"identification needs at least one probe and one gallery entry, got scores of shape {S.shape}")
    if not np.all(np.isfinite(S)):
        raise ValueError("scores contain NaN/inf values; expected finite numbers")
    ids, inv = np.unique(g, return_inverse=True)
    if len(ids) == len(g):
        order = np.argsort(inv)
        return S[:, order], ids, p
    S_id = np.full((S.shape[0], len(ids)), -np.inf)
    for j in range(len(ids)):
        S_id[:, j] = S[:, inv == j].max(axis=1)
    return S_id, ids, p


def identification_ranks(scores, probe_labels, gallery_labels) -> np.ndarray:
    """Rank (1 = best) of each probe's true identity among the gallery identities; 0 for probes not in the gallery.

    Ties count against the probe (pessimistic ranks).
    """
    S, ids, p = _identity_scores(scores, probe_labels, gallery_labels)
    pos = {v: j for j, v in enumerate(ids.tolist())}
    ranks = np.zeros(len(p), dtype=np.int64)
    for i, lab in enumerate(p.tolist()):
        j = pos.get(lab)
        if j is None:
            continue
        genuine = S[i, j]
        ranks[i] = 1 + int(np.sum(S[i] >= genuine)) - 1  # >= counts itself once: remove it
    return ranks


def _mated(ranks: np.ndarray) -> np.ndarray:
    mated = ranks > 0
    if not np.any(mated):
        raise ValueError("no probe identity occurs in the gallery: closed-set rank/CMC metrics need mated probes")
    return mated


def rank_k_accuracy(scores, probe_labels, gallery_labels, k: int = 1) -> float:
    """Fraction of (mated) probes whose true identity is among the ``k`` best gallery identities."""
    if int(k) < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    ranks = identification_ranks(scores, probe_labels, gallery_labels)
    mated = _mated(ranks)
    return float(np.mean(ranks[mated] <= int(k)))


def cmc_curve(scores, probe_labels, gallery_labels, max_rank: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative match characteristic: rank-k identification rate for k = 1..max_rank.

    Probes whose identity is not enrolled are ignored (use :func:`dir_at_far` for open-set evaluation).

    Returns
    -------
    ranks : ndarray of int, shape (max_rank,)
    rate : ndarray of float, shape (max_rank,), non-decreasing, reaching 1 at the number of gallery identities.
    """
    ranks = identification_ranks(scores, probe_labels, gallery_labels)
    mated = _mated(ranks)
    n_ids = len(np.unique(_as_numpy(gallery_labels, "gallery_labels")))
    R = n_ids if max_rank is None else int(max_rank)
    if R < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank!r}")
    k = np.arange(1, R + 1)
    rate = (ranks[mated][None, :] <= k[:, None]).mean(axis=1)
    return k, rate


@dataclass
class OpenSetResult:
    """Open-set identification at a FAR: the detection-and-identification rate, the threshold and the counts."""

    dir: float
    far: float
    threshold: float
    rank: int
    n_mated: int
    n_non_mated: int


def dir_at_far(scores, probe_labels, gallery_labels, far: float = 0.01, rank: int = 1) -> OpenSetResult:
    """Open-set detection and identification rate (DIR) at a false alarm rate.

    Probes whose identity is enrolled are *mated*; the others are *non-mated*. A probe raises an alarm when its best
    gallery score is ``>= t``. The threshold ``t`` is the lowest one at which at most ``far`` of the non-mated probes
    raise an alarm; DIR is the fraction of mated probes whose true identity is within ``rank`` and scores ``>= t``.
    """
    S, ids, p = _identity_scores(scores, probe_labels, gallery_labels)
    ranks = identification_ranks(scores, probe_labels, gallery_labels)
    mated = ranks > 0
    if not np.any(mated) or np.all(mated):
        raise ValueError(
            f"open-set DIR@FAR needs mated and non-mated probes, got {int(mated.sum())} mated and "
            f"{int((~mated).sum())} non-mated"
        )
    if not 0 <= far <= 1:
        raise ValueError(f"far must lie in [0, 1], got {far!r}")
    best_non_mated = np.sort(S[~mated].max(axis=1))[::-1]
    n_nm = len(best_non_mated)
    allowed = int(np.floor(far * n_nm + 1e-12))  # number of alarms allowed
    if allowed >= n_nm:
        t = -np.inf
    else:
        # accept scores strictly above the (allowed+1)-th highest non-mated score
        t = np.nextafter(best_non_mated[allowed], np.inf)
    pos = {v: j for j, v in enumerate(ids.tolist())}
    genuine = np.array([S[i, pos[lab]] for i, lab in enumerate(p.tolist()) if mated[i]])
    hit = (ranks[mated] <= rank) & (genuine >= t)
    achieved = float(np.mean(best_non_mated >= t))
    return OpenSetResult(dir=float(hit.mean()), far=achieved, threshold=float(t), rank=int(rank),
                         n_mated=int(mated.sum()), n_non_mated=n_nm)
