r"""Presentation-attack detection metrics (ISO/IEC 30107-3): APCER, BPCER, ACER, plus AUC and EER.

Conventions
-----------
* **Labels**: ``1`` = bona fide (live) presentation, ``0`` = attack (physical presentation attack or digital
  manipulation). Booleans work.
* **Scores**: higher = more likely bona fide (for example :math:`p(\text{live})`), the same orientation as the
  genuine scores of :mod:`facelab.metrics.verification`, whose ROC code computes AUC and EER here.
* A sample is **classified bona fide** when ``score >= threshold``.

.. math::

   \mathrm{APCER}_s = \frac{\#\{\text{attacks of species } s \text{ classified bona fide}\}}{\#\{\text{attacks of species } s\}},\qquad
   \mathrm{BPCER} = \frac{\#\{\text{bona fide classified as attack}\}}{\#\{\text{bona fide}\}},\qquad
   \mathrm{ACER} = \frac{\mathrm{APCER} + \mathrm{BPCER}}{2}.

ISO/IEC 30107-3 reports APCER per attack (PAI) species and, as one number, the worst species
(``reduce="max"``); the unified-attack papers (UniAttackData, FG-MoE-CLIP-CAR) pool all attacks
(``reduce="pooled"``, also what you get without ``attack_types``). ACER is undefined without both classes, and
this module says so instead of returning a number.
"""

from __future__ import annotations

import numpy as np

from facelab.metrics.intervals import bootstrap_ci, wilson_interval
from facelab.metrics.verification import eer as _eer
from facelab.metrics.verification import roc_auc as _roc_auc
from facelab.metrics.verification import _as_numpy  # torch tensors or arrays -> numpy

__all__ = ["apcer", "bpcer", "acer", "apcer_per_species", "pad_report"]


_REDUCE = ("max", "mean", "pooled")


def _check(labels, scores, threshold, need: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate; ``need`` is 'attack', 'bonafide' or 'both' (which classes must be present)."""
    y = _as_numpy(labels, "labels")
    s = _as_numpy(scores, "scores").astype(np.float64, copy=False)
    if y.ndim != 1 or s.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D arrays, got shapes {y.shape} and {s.shape}")
    if y.shape[0] != s.shape[0]:
        raise ValueError(f"labels and scores must have the same length, got {y.shape[0]} and {s.shape[0]}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"scores contain {int(np.sum(~np.isfinite(s)))} NaN/inf values; expected finite numbers")
    uniq = np.unique(y)
    if not np.all(np.isin(uniq, [0, 1])):
        raise ValueError(f"labels must be 1 (bona fide / live) or 0 (attack), got values {uniq.tolist()[:10]}")
    if threshold is not None and not np.isfinite(float(threshold)):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    y = y.astype(bool)
    n_bf, n_at = int(y.sum()), int((~y).sum())
    if need in ("attack", "both") and n_at == 0:
        raise ValueError(f"no attack samples (label 0) among {len(y)}: APCER is undefined"
                         + (" and so is ACER; evaluate on a set with both bona fide and attack samples"
                            if need == "both" else ""))
    if need in ("bonafide", "both") and n_bf == 0:
        raise ValueError(f"no bona fide samples (label 1) among {len(y)}: BPCER is undefined"
                         + (" and so is ACER; evaluate on a set with both bona fide and attack samples"
                            if need == "both" else ""))
    return y, s


def apcer_per_species(labels, scores, attack_types, threshold: float = 0.5) -> dict[str, float]:
    """APCER of every attack species: ``{species: fraction of its samples classified bona fide}``.

    ``attack_types`` holds one name per sample; entries of bona fide rows are ignored.
    """
    y, s = _check(labels, scores, threshold, "attack")
    t = _as_numpy(attack_types, "attack_types")
    if t.ndim != 1 or t.shape[0] != y.shape[0]:
        raise ValueError(f"attack_types must have one entry per sample ({y.shape[0]}), got shape {t.shape}")
    accepted = s >= float(threshold)
    out = {}
    for species in sorted({str(v) for v in t[~y]}):
        sel = (~y) & (t.astype(str) == species)
        out[species] = float(accepted[sel].mean())
    return out


def apcer(labels, scores, threshold: float = 0.5, attack_types=None, reduce: str = "max") -> float:
    """Attack presentation classification error rate.

    Parameters
    ----------
    labels : array-like of shape (n,)
        1 bona fide, 0 attack.
    scores : array-like of shape (n,)
        Higher = more bona fide.
    threshold : float
        Classified bona fide when ``score >= threshold``.
    attack_types : array-like of shape (n,), optional
        Attack species of each sample. Without it all attacks are pooled.
    reduce : {"max", "mean", "pooled"}
        With ``attack_types``: the worst species (ISO/IEC 30107-3), the mean over species, or pooled.

    Examples
    --------
    >>> apcer([1, 0, 0, 0], [0.9, 0.8, 0.2, 0.1])
    0.3333333333333333
    >>> apcer([1, 0, 0, 0], [0.9, 0.8, 0.2, 0.1], attack_types=["", "print", "print", "replay"])
    0.5
    """
    if reduce not in _REDUCE:
        raise ValueError(f"reduce must be one of {_REDUCE}, got {reduce!r}")
    y, s = _check(labels, scores, threshold, "attack")
    if attack_types is None or reduce == "pooled":
        return float((s[~y] >= float(threshold)).mean())
    per = apcer_per_species(y, s, attack_types, threshold)
    vals = np.array(list(per.values()))
    return float(vals.max() if reduce == "max" else vals.mean())


def bpcer(labels, scores, threshold: float = 0.5) -> float:
    """Bona fide presentation classification error rate: bona fide samples with ``score < threshold``."""
    y, s = _check(labels, scores, threshold, "bonafide")
    return float((s[y] < float(threshold)).mean())


def acer(labels, scores, threshold: float = 0.5, attack_types=None, reduce: str = "max") -> float:
    """Average classification error rate ``(APCER + BPCER) / 2``; an error when only one class is present.

    Examples
    --------
    >>> acer([1, 1, 0, 0], [0.9, 0.4, 0.2, 0.6])
    0.5
    """
    _check(labels, scores, threshold, "both")
    return 0.5 * (apcer(labels, scores, threshold, attack_types, reduce) + bpcer(labels, scores, threshold))


def pad_report(labels, scores, threshold: float = 0.5, attack_types=None, *, alpha: float | None = None,
               n_boot: int = 1000, seed: int = 0) -> dict:
    """One results-table row: pooled APCER/BPCER/ACER, worst-species APCER/ACER, AUC, EER and per-species APCER.

    Keys: ``APCER``, ``BPCER``, ``ACER`` (pooled attacks, as the unified-attack papers report), ``APCER_max``,
    ``ACER_max`` (worst species, ISO/IEC 30107-3; equal to the pooled ones without ``attack_types``), ``AUC``,
    ``EER`` (threshold-free, from :mod:`facelab.metrics.verification`), ``APCER[species]`` for every species,
    ``n_bonafide``, ``n_attack``.

    With ``alpha`` (e.g. 0.05) every headline number also gets ``X_lo``/``X_hi`` bounds (:mod:`facelab.metrics.intervals`):
    Wilson intervals for APCER and BPCER (proportions), a percentile bootstrap that resamples bona fide and attack
    samples separately (``n_boot`` resamples, ``seed``) for ACER, AUC and EER. A table of such rows becomes
    ``"0.12 [0.08, 0.17]"`` cells with :func:`facelab.metrics.format_interval_columns`.
    """
    y, s = _check(labels, scores, threshold, "both")
    row = {"APCER": apcer(y, s, threshold), "BPCER": bpcer(y, s, threshold)}
    row["ACER"] = 0.5 * (row["APCER"] + row["BPCER"])
    per = apcer_per_species(y, s, attack_types, threshold) if attack_types is not None else {}
    row["APCER_max"] = max(per.values()) if per else row["APCER"]
    row["ACER_max"] = 0.5 * (row["APCER_max"] + row["BPCER"])
    row["AUC"] = _roc_auc(y.astype(int), s)
    row["EER"] = _eer(y.astype(int), s)[0]
    for k, v in per.items():
        row[f"APCER[{k}]"] = v
    row["n_bonafide"], row["n_attack"] = int(y.sum()), int((~y).sum())
    if alpha is not None:
        t = float(threshold)
        n_at_accepted, n_bf_rejected = int((s[~y] >= t).sum()), int((s[y] < t).sum())
        row["APCER_lo"], row["APCER_hi"] = wilson_interval(n_at_accepted, row["n_attack"], alpha)
        row["BPCER_lo"], row["BPCER_hi"] = wilson_interval(n_bf_rejected, row["n_bonafide"], alpha)

        def headline(yb, sb):
            acer_b = 0.5 * ((sb[~yb] >= t).mean() + (sb[yb] < t).mean())
            return np.array([acer_b, _roc_auc(yb.astype(int), sb), _eer(yb.astype(int), sb)[0]])

        ci = bootstrap_ci(headline, y, s, n_boot=n_boot, alpha=alpha, seed=seed, strata=y)
        for i, key in enumerate(("ACER", "AUC", "EER")):
            row[f"{key}_lo"], row[f"{key}_hi"] = float(ci.lo[i]), float(ci.hi[i])
    return row
