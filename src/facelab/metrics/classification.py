"""Class-balanced classification scores: UF1 and UAR (the micro-expression recognition metrics of MEGC).

Micro-expression corpora are small and very unbalanced (CASME II has 4x more "others" than "surprise"), so accuracy
rewards predicting the majority class. MEGC therefore reports

.. math::

    \\mathrm{UF1} = \\frac{1}{C}\\sum_{c=1}^{C} \\frac{2\\,TP_c}{2\\,TP_c + FP_c + FN_c}, \\qquad
    \\mathrm{UAR} = \\frac{1}{C}\\sum_{c=1}^{C} \\frac{TP_c}{N_c},

computed once on the predictions pooled over all leave-one-subject-out folds (not averaged per fold, since a test
subject rarely shows every class).

Conventions for classes that are missing (defined, tested):

- ``labels`` fixes the class set; otherwise it is the sorted union of ``y_true`` and ``y_pred``.
- UAR averages over the classes with at least one true sample (recall is undefined otherwise).
- UF1 averages over the classes that occur in ``y_true`` or ``y_pred``; a class that is predicted but never true has
  F1 = 0, a class that is neither true nor predicted is left out.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "confusion_matrix",
    "per_class_scores",
    "uf1",
    "uar",
    "accuracy",
    "classification_summary",
]


def _validate(y_true, y_pred, labels=None):
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    if y_true.ndim != 1 or y_pred.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D label arrays, got shapes {y_true.shape} and {y_pred.shape}")
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true and y_pred must have the same length, got {len(y_true)} and {len(y_pred)}")
    if len(y_true) == 0:
        raise ValueError("y_true and y_pred are empty: at least one sample is needed")
    if labels is None:
        labels = np.unique(np.concatenate([y_true, y_pred]))
    else:
        labels = np.asarray(labels)
        if len(np.unique(labels)) != len(labels):
            raise ValueError(f"labels must be unique, got {list(labels)}")
        unknown = set(np.unique(np.concatenate([y_true, y_pred])).tolist()) - set(labels.tolist())
        if unknown:
            raise ValueError(f"y_true/y_pred contain labels {sorted(map(str, unknown))} not in labels={list(labels)}")
    return y_true, y_pred, labels


def confusion_matrix(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> pd.DataFrame:
    """Counts of (true class, predicted class) as a DataFrame indexed by true class, columns by predicted class.

    Examples
    --------
    >>> confusion_matrix(["a", "a", "b"], ["a", "b", "b"]).values.tolist()
    [[1, 1], [0, 1]]
    """
    y_true, y_pred, labels = _validate(y_true, y_pred, labels)
    index = {lab: k for k, lab in enumerate(labels.tolist())}
    cm = np.zeros((len(labels), len(labels)), dtype=int)
    np.add.at(cm, ([index[v] for v in y_true.tolist()], [index[v] for v in y_pred.tolist()]), 1)
    return pd.DataFrame(cm, index=pd.Index(labels, name="true"), columns=pd.Index(labels, name="predicted"))


def per_class_scores(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> pd.DataFrame:
    """Per-class support, TP, FP, FN, precision, recall and F1 (NaN where undefined)."""
    cm = confusion_matrix(y_true, y_pred, labels).values
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    fp, fn = predicted - tp, support - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, np.nan)
        recall = np.where(support > 0, tp / support, np.nan)
        denom = 2 * tp + fp + fn
        f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), np.nan)
    _, _, labs = _validate(y_true, y_pred, labels)
    return pd.DataFrame({"support": support.astype(int), "tp": tp.astype(int), "fp": fp.astype(int),
                         "fn": fn.astype(int), "precision": precision, "recall": recall, "f1": f1},
                        index=pd.Index(labs, name="class"))


def uf1(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> float:
    """Unweighted (macro) F1 over classes, the MEGC "UF1".

    Examples
    --------
    >>> round(uf1([0, 0, 1, 1], [0, 0, 1, 0]), 4)  # F1 = 0.8 for class 0, 0.6667 for class 1
    0.7333
    """
    f1 = per_class_scores(y_true, y_pred, labels)["f1"].to_numpy()
    return float(np.nanmean(f1)) if np.isfinite(f1).any() else float("nan")


def uar(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None) -> float:
    """Unweighted average recall (balanced accuracy), the MEGC "UAR".

    Examples
    --------
    >>> uar([0, 0, 0, 1], [0, 0, 0, 0])  # recall 1 for class 0, 0 for class 1
    0.5
    """
    recall = per_class_scores(y_true, y_pred, labels)["recall"].to_numpy()
    return float(np.nanmean(recall)) if np.isfinite(recall).any() else float("nan")


def accuracy(y_true: Sequence, y_pred: Sequence) -> float:
    """Fraction of correct predictions."""
    y_true, y_pred, _ = _validate(y_true, y_pred)
    return float(np.mean(y_true == y_pred))


def _uf1_uar_accuracy(cm: np.ndarray) -> np.ndarray:
    """UF1, UAR and accuracy from a confusion matrix (the conventions of :func:`uf1` and :func:`uar`)."""
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(axis=1).astype(float), cm.sum(axis=0).astype(float)
    denom = 2 * tp + (predicted - tp) + (support - tp)
    f1 = 2 * tp[denom > 0] / denom[denom > 0]
    recall = tp[support > 0] / support[support > 0]
    return np.array([f1.mean() if f1.size else np.nan, recall.mean() if recall.size else np.nan,
                     tp.sum() / cm.sum()])


def classification_summary(y_true: Sequence, y_pred: Sequence, labels: Sequence | None = None, *,
                           alpha: float | None = None, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """``{"UF1": ..., "UAR": ..., "accuracy": ..., "n": ...}`` for one set of pooled predictions.

    With ``alpha`` (e.g. 0.05) the row also holds ``UF1_lo``/``UF1_hi``, ``UAR_lo``/``UAR_hi`` (percentile bootstrap
    over samples, resampled within each true class, ``n_boot`` resamples, ``seed``) and ``accuracy_lo``/``accuracy_hi``
    (Wilson); :func:`facelab.metrics.format_interval_columns` turns a table of such rows into ``"0.73 [0.61, 0.83]"``
    cells.
    """
    out = {"UF1": uf1(y_true, y_pred, labels), "UAR": uar(y_true, y_pred, labels),
           "accuracy": accuracy(y_true, y_pred), "n": int(len(np.asarray(y_true)))}
    if alpha is not None:
        from facelab.metrics.intervals import bootstrap_ci, wilson_interval

        y_t, y_p, labs = _validate(y_true, y_pred, labels)
        index = {lab: k for k, lab in enumerate(labs.tolist())}
        codes_t = np.array([index[v] for v in y_t.tolist()])
        codes_p = np.array([index[v] for v in y_p.tolist()])
        n_cls = len(labs)

        def stat(t, p):
            return _uf1_uar_accuracy(np.bincount(t * n_cls + p, minlength=n_cls * n_cls).reshape(n_cls, n_cls))

        ci = bootstrap_ci(stat, codes_t, codes_p, n_boot=n_boot, alpha=alpha, seed=seed, strata=codes_t)
        for i, key in enumerate(("UF1", "UAR")):
            out[f"{key}_lo"], out[f"{key}_hi"] = float(ci.lo[i]), float(ci.hi[i])
        out["accuracy_lo"], out["accuracy_hi"] = wilson_interval(int((y_t == y_p).sum()), len(y_t), alpha)
    return out
