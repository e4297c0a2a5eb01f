"""The ABAW challenge metrics (Affective Behavior Analysis in-the-Wild; Kollias et al.), frame or video level.

.. math::

    P_\\mathrm{EXPR} = \\frac{1}{8}\\sum_{c=1}^{8} F1_c, \\qquad
    \\mathrm{CCC}(x, y) = \\frac{2\\,s_{xy}}{s_x^2 + s_y^2 + (\\bar x - \\bar y)^2}, \\qquad
    P_\\mathrm{VA} = \\frac{\\mathrm{CCC}_V + \\mathrm{CCC}_A}{2}, \\qquad
    P_\\mathrm{EMI} = \\frac{1}{6}\\sum_{d=1}^{6} \\rho_d

- :func:`expression_f1`: macro F1 over ABAW's eight expression classes (:data:`ABAW_EXPRESSIONS`: neutral, anger,
  disgust, fear, happiness, sadness, surprise, other), labels given as names or as indices 0-7 in that order.
- :func:`ccc` and :func:`va_score`: Lin's concordance correlation coefficient with population (1/N) moments, as
  ABAW's evaluation code computes it; the valence-arousal score is the mean of the two CCCs.
- :func:`pearson` and :func:`mimicry_score`: emotional mimicry intensity (Hume-Vidmimic2), the mean Pearson
  correlation over the six intensity dimensions (:data:`MIMICRY_DIMENSIONS`), computed across videos.
- :func:`ah_f1`: ambivalence/hesitancy (BAH): F1 of a binary label; ``average="macro"`` (default) is the mean F1 of
  the two classes (A/H present and absent), the challenge's measure; ``average="binary"`` the F1 of A/H alone.

Conventions (defined and tested):

- Inputs are 1-D (mimicry: ``(N, 6)``) arrays, lists or CPU tensors of equal length; NaN or infinite values,
  mismatched lengths, empty inputs and unknown class names or indices are ``ValueError`` with the offending values.
- Aff-Wild2 marks unannotated frames with ``-1`` (expressions) and ``-5`` (valence/arousal):
  ``ignore_index=-1`` / ``ignore_value=-5`` drop those frames of the *ground truth* before scoring (the prediction
  of a dropped frame is not checked); a prediction must always be valid.
- A class with neither true nor predicted samples has F1 = 0 and still counts in the macro average
  (``absent="zero"``, ABAW's fixed eight classes; sklearn ``f1_score(..., labels=all, zero_division=0)``), or is left
  out with ``absent="ignore"`` (the average over the classes present in truth or prediction, for short clips).
- A correlation of a constant series is undefined (Pearson: either side constant; CCC: *both* sides constant, since
  one constant side gives the well-defined CCC = 0). ``constant="raise"`` (default) raises ``ValueError``,
  ``"nan"`` returns NaN (and a mean over dimensions that includes it is NaN), ``"zero"`` scores it 0 (no measurable
  agreement, the usual convention when a model predicts one value for every sample).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd

__all__ = ["ABAW_EXPRESSIONS", "MIMICRY_DIMENSIONS", "expression_indices", "expression_f1", "expression_f1_per_class",
           "ccc", "VAScore", "va_score", "pearson", "MimicryScore", "mimicry_score", "ah_f1"]

#: ABAW's eight expression classes, in the order of Aff-Wild2's annotation indices 0-7.
ABAW_EXPRESSIONS = ("neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise", "other")
#: Hume-Vidmimic2's six emotional mimicry intensity dimensions (ABAW EMI challenge), in the annotation order.
MIMICRY_DIMENSIONS = ("admiration", "amusement", "determination", "empathic_pain", "excitement", "joy")
_CONSTANT = ("raise", "nan", "zero")


def _show(values, k: int = 5) -> str:
    values = list(values)
    return ", ".join(map(repr, values[:k])) + (f", ... ({len(values)} in all)" if len(values) > k else "")


def _as_array(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.dtype == object:
        raise ValueError(f"{name} must be numeric or class names of one type, got mixed values {_show(a.ravel())}")
    return a


def _float_1d(x, name: str) -> np.ndarray:
    a = _as_array(x, name)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of numbers, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty: at least two samples are needed")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise ValueError(f"{name} must hold numbers, got dtype {a.dtype} ({_show(a)})")
    a = a.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        raise ValueError(f"{name} has {bad.size} NaN/infinite values (at positions {_show(bad.tolist())}); drop or "
                         f"fill those samples first")
    return a


def _same_length(a: np.ndarray, b: np.ndarray, names: tuple[str, str]) -> None:
    if len(a) != len(b):
        raise ValueError(f"{names[0]} and {names[1]} must have the same length (one value per frame or video), got "
                         f"{len(a)} and {len(b)}")


def _check_constant_option(constant: str) -> None:
    if constant not in _CONSTANT:
        raise ValueError(f"constant must be one of {_CONSTANT}, got {constant!r}")


def _undefined(constant: str, message: str) -> float:
    if constant == "raise":
        raise ValueError(message + "; pass constant='nan' or constant='zero' to score it instead")
    return float("nan") if constant == "nan" else 0.0


# --------------------------------------------------------------------------------------------------------------
# expressions


def expression_indices(labels, name: str = "labels", *, ignore_index: int | None = None) -> np.ndarray:
    """ABAW expression labels as indices 0-7 (:data:`ABAW_EXPRESSIONS` order).

    ``labels``: class names (case-insensitive, e.g. ``"happiness"``) or integers 0-7; ``ignore_index`` (e.g. -1)
    is kept as is (for the caller to drop). Anything else is a ``ValueError`` naming the unknown values and the
    eight classes.
    """
    a = _as_array(labels, name)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of expression labels, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty: at least one frame is needed")
    if a.dtype.kind in "US":
        lookup = {c: i for i, c in enumerate(ABAW_EXPRESSIONS)}
        low = np.char.lower(np.char.strip(a.astype(str)))
        unknown = sorted(set(low.tolist()) - set(lookup))
        if ignore_index is not None:
            unknown = [u for u in unknown if u != str(ignore_index)]
        if unknown:
            raise ValueError(f"{name} has unknown expression names {unknown}; ABAW's classes are "
                             f"{list(ABAW_EXPRESSIONS)} (or indices 0-7)")
        return np.array([lookup.get(v, ignore_index) for v in low.tolist()], dtype=np.int64)
    if a.dtype == bool or not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{name} must be class names or integer indices 0-7, got dtype {a.dtype}")
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} has NaN/infinite labels at positions "
                             f"{_show(np.flatnonzero(~np.isfinite(a)).tolist())}")
        if (a != np.round(a)).any():
            frac = a[a != np.round(a)]
            raise ValueError(f"{name} must be integer class indices, got fractional values {_show(frac)}")
    idx = a.astype(np.int64)
    valid = (idx >= 0) & (idx < len(ABAW_EXPRESSIONS))
    if ignore_index is not None:
        valid |= idx == ignore_index
    if not valid.all():
        raise ValueError(f"{name} has unknown expression indices {sorted(set(idx[~valid].tolist()))}; ABAW's classes "
                         f"are 0-7 = {list(ABAW_EXPRESSIONS)}"
                         + ("" if ignore_index is not None else " (Aff-Wild2's unannotated frames are -1: pass "
                                                                 "ignore_index=-1 to drop them)"))
    return idx


def _expression_pairs(y_true, y_pred, ignore_index):
    t = expression_indices(y_true, "y_true", ignore_index=ignore_index)
    p = _as_array(y_pred, "y_pred")
    _same_length(t, p, ("y_true", "y_pred"))
    keep = np.ones(len(t), bool) if ignore_index is None else t != ignore_index
    if not keep.any():
        raise ValueError(f"every frame of y_true is ignore_index={ignore_index}: nothing to score")
    p = expression_indices(p[keep], "y_pred")  # predictions of dropped frames are not checked
    return t[keep], p


def expression_f1_per_class(y_true, y_pred, *, ignore_index: int | None = None,
                            absent: str = "zero") -> pd.Series:
    """F1 of each of ABAW's eight classes (index :data:`ABAW_EXPRESSIONS`).

    A class with neither true nor predicted frames gets 0 (``absent="zero"``) or NaN (``absent="ignore"``).
    """
    if absent not in ("zero", "ignore"):
        raise ValueError(f"absent must be 'zero' or 'ignore', got {absent!r}")
    t, p = _expression_pairs(y_true, y_pred, ignore_index)
    k = len(ABAW_EXPRESSIONS)
    cm = np.bincount(t * k + p, minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(float)
    denom = cm.sum(0) + cm.sum(1)  # 2 TP + FP + FN
    f1 = np.divide(2 * tp, denom, out=np.full(k, 0.0 if absent == "zero" else np.nan), where=denom > 0)
    return pd.Series(f1, index=pd.Index(ABAW_EXPRESSIONS, name="expression"), name="F1")


def expression_f1(y_true, y_pred, *, ignore_index: int | None = None, absent: str = "zero") -> float:
    """ABAW expression score: macro F1 over the eight classes (frame level).

    Parameters
    ----------
    y_true, y_pred : sequence
        Class names (:data:`ABAW_EXPRESSIONS`, case-insensitive) or indices 0-7, one per frame.
    ignore_index : int, optional
        A ground-truth value whose frames are dropped (Aff-Wild2: -1).
    absent : {"zero", "ignore"}
        A class with neither true nor predicted frames counts as F1 = 0 (ABAW: always eight classes) or is left out.

    Examples
    --------
    >>> round(expression_f1(["happiness", "anger"], ["happiness", "neutral"]), 4)  # happiness 1, anger 0, neutral 0
    0.125
    """
    f1 = expression_f1_per_class(y_true, y_pred, ignore_index=ignore_index, absent=absent)
    return float(np.nanmean(f1.values))


# --------------------------------------------------------------------------------------------------------------
# valence / arousal


def ccc(y_true, y_pred, *, constant: str = "raise") -> float:
    """Lin's concordance correlation coefficient, population moments (ABAW's valence/arousal metric).

    ``2 cov(x, y) / (var x + var y + (mean x - mean y)^2)``: 1 for perfect agreement, 0 for none, -1 for perfect
    disagreement; unlike Pearson it penalises a shift or a scale error. One constant side gives 0; both constant
    is undefined (see ``constant`` in the module docstring).
    """
    _check_constant_option(constant)
    x, y = _float_1d(y_true, "y_true"), _float_1d(y_pred, "y_pred")
    _same_length(x, y, ("y_true", "y_pred"))
    if len(x) < 2:
        raise ValueError(f"CCC needs at least two samples, got {len(x)}")
    mx, my = x.mean(), y.mean()
    vx, vy = ((x - mx) ** 2).mean(), ((y - my) ** 2).mean()
    if np.ptp(x) == 0 and np.ptp(y) == 0:
        return _undefined(constant, f"CCC is undefined when both series are constant (y_true = {x[0]!r}, "
                                    f"y_pred = {y[0]!r} for all {len(x)} samples)")
    cov = ((x - mx) * (y - my)).mean()
    return float(2 * cov / (vx + vy + (mx - my) ** 2))


class VAScore(NamedTuple):
    """Valence and arousal CCC and their mean, ABAW's VA score."""

    valence: float
    arousal: float
    score: float


def va_score(valence_true, valence_pred, arousal_true, arousal_pred, *, ignore_value: float | None = None,
             constant: str = "raise") -> VAScore:
    """ABAW valence-arousal score: ``(CCC_valence + CCC_arousal) / 2``.

    ``ignore_value`` (Aff-Wild2: -5) drops the frames whose true valence *or* arousal equals it, from both series.
    """
    vt, at = _float_1d(valence_true, "valence_true"), _float_1d(arousal_true, "arousal_true")
    vp, ap = _as_array(valence_pred, "valence_pred"), _as_array(arousal_pred, "arousal_pred")
    for a, b, names in ((vt, vp, ("valence_true", "valence_pred")), (vt, at, ("valence_true", "arousal_true")),
                        (at, ap, ("arousal_true", "arousal_pred"))):
        _same_length(a, b, names)
    keep = np.ones(len(vt), bool) if ignore_value is None else (vt != ignore_value) & (at != ignore_value)
    if not keep.any():
        raise ValueError(f"every frame has a true valence or arousal of ignore_value={ignore_value}: nothing to score")
    vp = _float_1d(np.asarray(vp)[keep], "valence_pred")
    ap = _float_1d(np.asarray(ap)[keep], "arousal_pred")
    v = ccc(vt[keep], vp, constant=constant)
    a = ccc(at[keep], ap, constant=constant)
    return VAScore(v, a, (v + a) / 2)


# --------------------------------------------------------------------------------------------------------------
# emotional mimicry intensity


def pearson(x, y, *, constant: str = "raise") -> float:
    """Pearson's correlation coefficient (as ``scipy.stats.pearsonr``); undefined when a side is constant (see
    ``constant`` in the module docstring)."""
    _check_constant_option(constant)
    return _pearson(x, y, ("x", "y"), constant)


def _pearson(x, y, names: tuple[str, str], constant: str) -> float:
    a, b = _float_1d(x, names[0]), _float_1d(y, names[1])
    _same_length(a, b, names)
    if len(a) < 2:
        raise ValueError(f"Pearson's r needs at least two samples, got {len(a)}")
    for v, name in ((a, names[0]), (b, names[1])):
        if np.ptp(v) == 0:
            return _undefined(constant, f"Pearson's r is undefined: {name} is constant ({v[0]!r} for all {len(v)} "
                                        f"samples)")
    da, db = a - a.mean(), b - b.mean()
    r = (da * db).sum() / np.sqrt((da * da).sum() * (db * db).sum())
    return float(np.clip(r, -1.0, 1.0))


class MimicryScore(NamedTuple):
    """Emotional mimicry intensity: the mean Pearson r over the dimensions, and each dimension's r."""

    score: float
    per_dimension: pd.Series


def mimicry_score(y_true, y_pred, *, dimensions: Sequence[str] = MIMICRY_DIMENSIONS,
                  constant: str = "raise") -> MimicryScore:
    """ABAW emotional mimicry intensity score: Pearson's r of each dimension across samples (videos), averaged.

    ``y_true``, ``y_pred``: ``(N, D)`` intensities, D = ``len(dimensions)`` (six for Hume-Vidmimic2).
    """
    _check_constant_option(constant)
    dims = tuple(dimensions)
    t, p = _as_array(y_true, "y_true"), _as_array(y_pred, "y_pred")
    for a, name in ((t, "y_true"), (p, "y_pred")):
        if a.ndim != 2 or a.shape[1] != len(dims):
            raise ValueError(f"{name} must have shape (N, {len(dims)}) (one column per dimension: {list(dims)}), "
                             f"got {a.shape}")
    if len(t) != len(p):
        raise ValueError(f"y_true and y_pred must have the same number of samples, got {len(t)} and {len(p)}")
    r = [_pearson(t[:, j], p[:, j], (f"y_true column {d!r}", f"y_pred column {d!r}"), constant)
         for j, d in enumerate(dims)]
    per = pd.Series(r, index=pd.Index(dims, name="dimension"), name="pearson")
    return MimicryScore(float(np.mean(r)), per)


# --------------------------------------------------------------------------------------------------------------
# ambivalence / hesitancy


def _binary(x, name: str) -> np.ndarray:
    a = _as_array(x, name)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of 0/1 (or bool) labels, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty: at least one sample is needed")
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise ValueError(f"{name} must be 0/1 or bool labels, got dtype {a.dtype} ({_show(a)})")
    f = a.astype(np.float64)
    bad = ~np.isin(f, (0.0, 1.0))
    if bad.any():
        raise ValueError(f"{name} must hold 0/1 labels (A/H absent/present), got {_show(np.unique(f[bad]))}"
                         + ("; threshold probabilities first" if np.isfinite(f).all() else ""))
    return f.astype(np.int64)


def ah_f1(y_true, y_pred, *, average: str = "macro") -> float:
    """Ambivalence/hesitancy F1 (BAH), labels 0/1 or bool (1 = A/H present).

    ``average="macro"`` (default): mean of the F1 of both classes (present, absent), the challenge's measure;
    ``"binary"``: F1 of the A/H class only. A class with neither true nor predicted samples has F1 = 0 (as
    sklearn's ``zero_division=0``).
    """
    if average not in ("macro", "binary"):
        raise ValueError(f"average must be 'macro' or 'binary', got {average!r}")
    t, p = _binary(y_true, "y_true"), _binary(y_pred, "y_pred")
    _same_length(t, p, ("y_true", "y_pred"))
    f1 = []
    for c in (1, 0):
        tp = float(((t == c) & (p == c)).sum())
        denom = float((t == c).sum() + (p == c).sum())
        f1.append(2 * tp / denom if denom > 0 else 0.0)
    return f1[0] if average == "binary" else (f1[0] + f1[1]) / 2
