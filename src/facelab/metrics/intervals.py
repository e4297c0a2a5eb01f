"""Uncertainty for every comparison: confidence intervals and paired tests.

A chapter that says "method A beats method B" must show how sure it is. The synthetic test sets of the quick profile
are small (a few hundred probes), so an accuracy of 0.73 can easily be 0.61-0.83; this module gives the tools that
every comparison table of the book uses:

- :func:`wilson_interval` / :func:`proportion_ci`: interval of a proportion (accuracy, APCER, a rank-1 rate, a
  dodging success rate) from ``k`` successes in ``n`` trials. The Wilson score interval keeps its coverage for small
  ``n`` and for proportions near 0 or 1, where the textbook ``p +- 1.96 sqrt(p(1-p)/n)`` collapses to a point.
- :func:`bootstrap_ci`: percentile bootstrap of any statistic (AUC, EER, TAR@FAR, UF1, PSNR means...); rows of the
  arrays are resampled jointly, optionally within strata (e.g. genuine and impostor pairs separately).
- :func:`mcnemar_test`: two classifiers scored on the *same* samples: do their error sets differ?
- :func:`paired_bootstrap`: the same question for any metric (difference ``metric(A) - metric(B)``, its interval and a
  two-sided p-value from the same resamples).
- :func:`with_interval` and :func:`format_interval_columns`: table cells such as ``"0.73 [0.61, 0.83]"``.
- :func:`compare_accuracies` and :func:`compare_methods`: a comparison table in one call, each method's value with
  its interval and its paired test against a reference method.

Conventions: ``alpha`` is the two-sided level (0.05 -> 95 % intervals); every resampling function takes a ``seed``
and gives the same numbers for the same seed; inputs may be lists, NumPy arrays or (CPU or GPU) torch tensors.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "Interval",
    "McNemarResult",
    "PairedBootstrapResult",
    "wilson_interval",
    "proportion_ci",
    "bootstrap_ci",
    "mcnemar_test",
    "paired_bootstrap",
    "with_interval",
    "format_interval_columns",
    "compare_accuracies",
    "compare_methods",
]


class Interval(NamedTuple):
    """A point estimate and its confidence interval (unpacks as ``estimate, lo, hi``)."""

    estimate: float | np.ndarray
    lo: float | np.ndarray
    hi: float | np.ndarray

    def __str__(self) -> str:  # pragma: no cover - convenience for notebooks
        return with_interval(self.estimate, self.lo, self.hi)


class McNemarResult(NamedTuple):
    """McNemar's test: ``b`` = samples only A gets right, ``c`` = samples only B gets right."""

    statistic: float
    p_value: float
    b: int
    c: int


class PairedBootstrapResult(NamedTuple):
    """``delta = metric(A) - metric(B)`` on the full data, its percentile interval and a two-sided p-value."""

    delta: float
    lo: float
    hi: float
    p_value: float


# --------------------------------------------------------------------------------------------- input checking
def _to_numpy(x, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, on any device
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be array-like, got {type(x).__name__}: {exc}") from None


def _check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be a number in (0, 1) (0.05 gives 95 % intervals), got {alpha!r}")
    return float(alpha)


def _check_n_boot(n_boot) -> int:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    return int(n_boot)


def _check_counts(k, n) -> tuple[np.ndarray, np.ndarray]:
    k_arr = _to_numpy(k, "k")
    n_arr = _to_numpy(n, "n")
    for name, arr in (("k", k_arr), ("n", n_arr)):
        if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.number)):
            raise TypeError(f"{name} must be integer counts, got dtype {arr.dtype}")
        if np.issubdtype(arr.dtype, np.floating):
            if np.any(np.isnan(arr)):
                raise ValueError(f"{name} contains NaN; counts must be finite non-negative integers")
            if np.any(~np.isfinite(arr)) or np.any(arr != np.round(arr)):
                raise ValueError(f"{name} must hold whole numbers (counts), got {arr.ravel()[:5].tolist()}")
    try:
        k_arr, n_arr = np.broadcast_arrays(k_arr.astype(np.float64), n_arr.astype(np.float64))
    except ValueError:
        raise ValueError(f"k and n have shapes {k_arr.shape} and {n_arr.shape} that do not broadcast") from None
    if np.any(n_arr <= 0):
        raise ValueError(f"n must be at least 1 (an interval needs at least one trial), got n={n_arr.ravel().tolist()[:5]}")
    if np.any(k_arr < 0):
        raise ValueError(f"k must be non-negative, got k={k_arr.ravel().tolist()[:5]}")
    if np.any(k_arr > n_arr):
        bad = np.flatnonzero((k_arr > n_arr).ravel())[0]
        raise ValueError(
            f"k > n: {int(k_arr.ravel()[bad])} successes out of {int(n_arr.ravel()[bad])} trials; k counts the "
            "successes among the n trials, so 0 <= k <= n"
        )
    return k_arr, n_arr


def _check_rows(arrays: Sequence, names: Sequence[str] | None = None) -> tuple[list[np.ndarray], int]:
    if not arrays:
        raise ValueError("at least one array is needed to resample")
    out = []
    for i, a in enumerate(arrays):
        name = names[i] if names else f"array {i}"
        arr = _to_numpy(a, name)
        if arr.ndim == 0:
            raise ValueError(f"{name} is a scalar; expected one value per sample (a 1-D array or rows of a 2-D one)")
        if len(arr) == 0:
            raise ValueError(f"{name} is empty: the bootstrap needs at least one sample")
        if np.issubdtype(arr.dtype, np.floating) and np.any(np.isnan(arr)):
            raise ValueError(f"{name} contains {int(np.isnan(arr).sum())} NaN values; drop or impute them first")
        out.append(arr)
    return out, len(out[0])


def _same_length(arrays: list[np.ndarray], names: Sequence[str] | None = None) -> int:
    lengths = [len(a) for a in arrays]
    if len(set(lengths)) > 1:
        label = ", ".join(f"{(names[i] if names else f'array {i}')}={n}" for i, n in enumerate(lengths))
        raise ValueError(f"paired resampling needs arrays of the same length (one row per sample), got {label}")
    return lengths[0]


def _resample_indices(rng: np.random.Generator, n: int, strata: np.ndarray | None) -> np.ndarray:
    if strata is None:
        return rng.integers(0, n, size=n)
    return np.concatenate([grp[rng.integers(0, len(grp), size=len(grp))] for grp in strata])


def _strata_groups(strata, n: int) -> list[np.ndarray] | None:
    if strata is None:
        return None
    s = _to_numpy(strata, "strata")
    if s.ndim != 1 or len(s) != n:
        raise ValueError(f"strata must be 1-D with one label per sample ({n}), got shape {s.shape}")
    _, inverse = np.unique(s, return_inverse=True)
    return [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]


def _scalar_or_array(x: np.ndarray):
    x = np.asarray(x, dtype=np.float64)
    return float(x) if x.ndim == 0 else x


# --------------------------------------------------------------------------------------------- proportions
def wilson_interval(k, n, alpha: float = 0.05, *, correction: bool = False):
    """Wilson score interval of a binomial proportion ``k / n``; returns ``(lo, hi)``.

    Vectorised: ``k`` and ``n`` broadcast (e.g. one row per method), and the bounds come back as arrays of that
    shape; scalars give floats. With ``correction=True`` the continuity-corrected version (Newcombe 1998, method 4)
    is returned, which is slightly wider and never under-covers. Matches
    ``scipy.stats.binomtest(k, n).proportion_ci(1 - alpha, method="wilson"/"wilsoncc")``.

    >>> lo, hi = wilson_interval(73, 100)      # accuracy 0.73 on 100 probes
    >>> round(lo, 3), round(hi, 3)
    (0.636, 0.807)
    """
    alpha = _check_alpha(alpha)
    k_arr, n_arr = _check_counts(k, n)
    z = stats.norm.ppf(1 - alpha / 2)
    p = k_arr / n_arr
    if not correction:
        denom = 1 + z**2 / n_arr
        centre = (p + z**2 / (2 * n_arr)) / denom
        half = z / denom * np.sqrt(p * (1 - p) / n_arr + z**2 / (4 * n_arr**2))
        lo, hi = centre - half, centre + half
    else:
        denom = 2 * (n_arr + z**2)
        with np.errstate(invalid="ignore"):  # the root is negative only where the bound is clamped below
            lo = (2 * k_arr + z**2 - 1 - z * np.sqrt(np.maximum(z**2 - 2 - 1 / n_arr + 4 * p * (n_arr * (1 - p) + 1), 0))) / denom
            hi = (2 * k_arr + z**2 + 1 + z * np.sqrt(np.maximum(z**2 + 2 - 1 / n_arr + 4 * p * (n_arr * (1 - p) - 1), 0))) / denom
    lo = np.where(k_arr == 0, 0.0, lo)  # exact bounds at the ends (the formula gives 1 - 1e-16)
    hi = np.where(k_arr == n_arr, 1.0, hi)
    lo = np.clip(lo, 0.0, 1.0)
    hi = np.clip(hi, 0.0, 1.0)
    return _scalar_or_array(lo), _scalar_or_array(hi)


def proportion_ci(k, n=None, alpha: float = 0.05, *, correction: bool = False) -> Interval:
    """``Interval(k / n, lo, hi)`` with the Wilson interval.

    ``k`` may also be a boolean array of per-sample outcomes (``correct = pred == y``), with ``n`` left out.
    """
    if n is None:
        outcomes = _to_numpy(k, "outcomes")
        if outcomes.ndim != 1 or len(outcomes) == 0:
            raise ValueError(f"outcomes must be a non-empty 1-D array of booleans, got shape {outcomes.shape}")
        if outcomes.dtype != bool:
            if np.issubdtype(outcomes.dtype, np.floating) and np.any(np.isnan(outcomes)):
                raise ValueError("outcomes contain NaN; expected booleans (or 0/1)")
            if not np.all(np.isin(outcomes, [0, 1])):
                raise ValueError(f"outcomes must be booleans or 0/1, got values {np.unique(outcomes)[:5].tolist()}")
        k, n = int(outcomes.astype(bool).sum()), len(outcomes)
    lo, hi = wilson_interval(k, n, alpha, correction=correction)
    k_arr, n_arr = _check_counts(k, n)
    return Interval(_scalar_or_array(k_arr / n_arr), lo, hi)


# --------------------------------------------------------------------------------------------- bootstrap
def bootstrap_ci(
    statistic: Callable | Sequence | np.ndarray,
    *arrays,
    n_boot: int = 2000,
    alpha: float = 0.05,
    seed: int = 0,
    paired: bool = True,
    strata=None,
) -> Interval:
    """Percentile bootstrap interval of ``statistic(*arrays)``; returns ``Interval(estimate, lo, hi)``.

    Two ways to call it:

    - ``bootstrap_ci(values)``: interval of the mean of ``values`` (e.g. per-image PSNR, per-face success);
    - ``bootstrap_ci(fn, a, b, ...)``: interval of ``fn(a, b, ...)``, e.g. ``bootstrap_ci(roc_auc, labels, scores,
      strata=labels)``. With ``paired=True`` (default) the same row indices are drawn for every array, so rows that
      belong together (a label and its score) stay together; ``paired=False`` resamples each array on its own
      (independent groups, e.g. two test sets of different sizes).

    ``strata`` (one label per row, paired only) resamples within each group, keeping group sizes fixed: use the
    genuine/impostor labels for verification metrics, so that no resample has a single class. The statistic may return
    a scalar or a fixed-shape array (then ``lo`` and ``hi`` are arrays). The estimate is the statistic on the full data,
    not the bootstrap mean.
    """
    n_boot = _check_n_boot(n_boot)
    alpha = _check_alpha(alpha)
    rng = np.random.default_rng(seed)
    if not callable(statistic):
        if arrays:
            raise TypeError(
                "bootstrap_ci(values) takes one array (the interval of its mean); to bootstrap a function of several "
                "arrays pass the function first: bootstrap_ci(fn, a, b)"
            )
        (values,), n = _check_rows([statistic], ["values"])
        values = values.astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise ValueError("values contain inf; the mean of a bootstrap resample would not be finite")
        groups = _strata_groups(strata, n)
        boots = np.empty((n_boot,) + values.shape[1:])
        for b in range(n_boot):
            boots[b] = values[_resample_indices(rng, n, groups)].mean(axis=0)
        estimate = values.mean(axis=0)
    else:
        data, _ = _check_rows(arrays)
        if paired:
            n = _same_length(data)
            groups = _strata_groups(strata, n)
        elif strata is not None:
            raise ValueError("strata is only defined for paired resampling (one stratum label per shared row)")
        estimate = np.asarray(statistic(*data), dtype=np.float64)
        boots = np.empty((n_boot,) + estimate.shape)
        for b in range(n_boot):
            if paired:
                idx = _resample_indices(rng, n, groups)
                boots[b] = statistic(*(a[idx] for a in data))
            else:
                boots[b] = statistic(*(a[rng.integers(0, len(a), size=len(a))] for a in data))
    bad = ~np.isfinite(boots)
    if bad.any():
        n_bad = int(bad.reshape(n_boot, -1).any(axis=1).sum())
        raise ValueError(
            f"the statistic was not finite on {n_bad} of {n_boot} bootstrap resamples (a resample with a single class?); "
            "pass strata= (e.g. the labels) so each resample keeps every group"
        )
    lo, hi = np.quantile(boots, [alpha / 2, 1 - alpha / 2], axis=0)
    return Interval(_scalar_or_array(estimate), _scalar_or_array(lo), _scalar_or_array(hi))


def paired_bootstrap(
    metric: Callable,
    y_true,
    pred_a,
    pred_b,
    n_boot: int = 2000,
    seed: int = 0,
    *,
    alpha: float = 0.05,
    strata=None,
) -> PairedBootstrapResult:
    """Is ``metric(y_true, pred_a)`` different from ``metric(y_true, pred_b)`` on the same samples?

    Resamples the samples (rows of ``y_true``, ``pred_a``, ``pred_b`` together) ``n_boot`` times and returns
    ``(delta, lo, hi, p_value)``: the observed difference A - B, its percentile interval and the two-sided p-value
    ``2 * min(P*(delta* <= 0), P*(delta* >= 0))`` (with the usual +1 correction), which is below ``alpha`` exactly
    when the interval excludes zero, so prose and table never disagree. ``metric`` is anything of the form
    ``metric(y_true, pred) -> float``: accuracy, :func:`facelab.metrics.uf1`, :func:`facelab.metrics.roc_auc`
    (labels, scores; pass ``strata=y_true``)...
    """
    n_boot = _check_n_boot(n_boot)
    alpha = _check_alpha(alpha)
    if not callable(metric):
        raise TypeError(f"metric must be a function metric(y_true, pred) -> float, got {type(metric).__name__}")
    names = ["y_true", "pred_a", "pred_b"]
    (y, a, b), _ = _check_rows([y_true, pred_a, pred_b], names)
    n = _same_length([y, a, b], names)
    groups = _strata_groups(strata, n)
    rng = np.random.default_rng(seed)
    delta = float(metric(y, a)) - float(metric(y, b))
    if not math.isfinite(delta):
        raise ValueError(f"metric is not finite on the full data (A - B = {delta})")
    deltas = np.empty(n_boot)
    for i in range(n_boot):
        idx = _resample_indices(rng, n, groups)
        deltas[i] = float(metric(y[idx], a[idx])) - float(metric(y[idx], b[idx]))
    if not np.all(np.isfinite(deltas)):
        raise ValueError(
            f"the metric was not finite on {int((~np.isfinite(deltas)).sum())} of {n_boot} resamples; "
            "pass strata=y_true so each resample keeps every class"
        )
    lo, hi = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    below = (1 + np.sum(deltas <= 0)) / (n_boot + 1)
    above = (1 + np.sum(deltas >= 0)) / (n_boot + 1)
    p = float(min(1.0, 2 * min(below, above)))
    return PairedBootstrapResult(delta, float(lo), float(hi), p)


# --------------------------------------------------------------------------------------------- McNemar
def mcnemar_test(correct_a, correct_b, exact: bool | None = None) -> McNemarResult:
    """McNemar's test for two classifiers evaluated on the same samples; returns ``(statistic, p_value, b, c)``.

    ``correct_a``/``correct_b`` are per-sample booleans (``pred_a == y``). Only the discordant samples count:
    ``b`` = A right and B wrong, ``c`` = A wrong and B right. With few discordant samples (``exact=None`` and
    ``b + c < 25``) the exact two-sided binomial test of ``b ~ Bin(b + c, 1/2)`` is used and ``statistic = min(b, c)``;
    otherwise the chi-square statistic with continuity correction ``(|b - c| - 1)^2 / (b + c)`` on 1 degree of freedom.
    ``b = c = 0`` (the classifiers never disagree) gives statistic 0 and p = 1.
    """
    names = ["correct_a", "correct_b"]
    (ca, cb), _ = _check_rows([correct_a, correct_b], names)
    _same_length([ca, cb], names)
    for name, arr in zip(names, (ca, cb)):
        if arr.ndim != 1:
            raise ValueError(f"{name} must be 1-D (one boolean per sample), got shape {arr.shape}")
        if arr.dtype != bool and not np.all(np.isin(arr, [0, 1])):
            raise ValueError(
                f"{name} must hold booleans or 0/1 (is each prediction correct?), got values {np.unique(arr)[:5].tolist()}"
            )
    ca, cb = ca.astype(bool), cb.astype(bool)
    b = int(np.sum(ca & ~cb))
    c = int(np.sum(~ca & cb))
    if exact is None:
        exact = b + c < 25
    if b + c == 0:
        return McNemarResult(0.0, 1.0, b, c)
    if exact:
        p = stats.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue
        return McNemarResult(float(min(b, c)), float(min(1.0, p)), b, c)
    statistic = (abs(b - c) - 1) ** 2 / (b + c)
    return McNemarResult(float(statistic), float(stats.chi2.sf(statistic, df=1)), b, c)


# --------------------------------------------------------------------------------------------- table cells
def with_interval(estimate, lo, hi, *, digits: int = 2, percent: bool = False) -> str:
    """Format one table cell: ``with_interval(0.7312, 0.61, 0.83) -> "0.73 [0.61, 0.83]"``.

    ``percent=True`` multiplies by 100 (``digits=1``: ``"73.1 [61.0, 83.0]"``). An :class:`Interval` can be passed
    whole: ``with_interval(*ci)``. All three NaN (the reference row of a comparison) gives ``"—"``.
    """
    values = []
    for name, v in (("estimate", estimate), ("lo", lo), ("hi", hi)):
        arr = _to_numpy(v, name)
        if arr.ndim != 0 and arr.size != 1:
            raise ValueError(f"with_interval formats one cell; {name} has shape {arr.shape} (use format_interval_columns)")
        values.append(float(arr.reshape(())))
    if all(math.isnan(v) for v in values):  # e.g. the reference row of a comparison: nothing to compare
        return "—"
    if percent:
        values = [100 * v for v in values]
    e, l, h = (("nan" if math.isnan(v) else f"{v:.{digits}f}") for v in values)
    return f"{e} [{l}, {h}]"


def format_interval_columns(
    df: pd.DataFrame,
    columns: Sequence[str] | None = None,
    *,
    lo_suffix: str = "_lo",
    hi_suffix: str = "_hi",
    digits: int = 2,
    percent: bool = False,
) -> pd.DataFrame:
    """Merge ``X``, ``X_lo``, ``X_hi`` columns of a results table into one string column ``X`` = ``"0.73 [0.61, 0.83]"``.

    ``columns`` defaults to every ``X`` for which both ``X_lo`` and ``X_hi`` exist. The ``_lo``/``_hi`` columns are
    dropped; other columns are left as they are. The input frame is not modified.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    if columns is None:
        columns = [c for c in df.columns if f"{c}{lo_suffix}" in df.columns and f"{c}{hi_suffix}" in df.columns]
        if not columns:
            raise ValueError(f"no column X of {list(df.columns)} has both X{lo_suffix} and X{hi_suffix} columns")
    else:
        columns = list(columns)
        missing = [c for col in columns for c in (col, f"{col}{lo_suffix}", f"{col}{hi_suffix}") if c not in df.columns]
        if missing:
            raise KeyError(f"columns {missing} are missing from the table (it has {list(df.columns)})")
    out = df.copy()
    for col in columns:
        out[col] = [
            with_interval(e, l, h, digits=digits, percent=percent)
            for e, l, h in zip(df[col], df[f"{col}{lo_suffix}"], df[f"{col}{hi_suffix}"])
        ]
    return out.drop(columns=[f"{c}{s}" for c in columns for s in (lo_suffix, hi_suffix)])


# --------------------------------------------------------------------------------------------- comparison tables
def _check_reference(names: list[str], reference: str | None) -> str | None:
    if reference is not None and reference not in names:
        raise KeyError(f"reference {reference!r} is not one of the methods {names}")
    return reference


def compare_accuracies(correct: dict, reference: str | None = None, *, alpha: float = 0.05) -> pd.DataFrame:
    """Accuracy of several methods on the same samples, with Wilson intervals and McNemar tests against ``reference``.

    ``correct`` maps a method name to its per-sample booleans (``pred == y``), all over the same samples in the same
    order. One row per method: ``accuracy``, ``accuracy_lo``, ``accuracy_hi``, ``n`` and, with a reference, ``b``
    (only this method right), ``c`` (only the reference right), ``p_value`` (:func:`mcnemar_test`) and ``differs``
    (``p_value < alpha``); the reference's own row has NaN there. Format with :func:`format_interval_columns`.
    """
    if not isinstance(correct, dict) or not correct:
        raise ValueError("correct must be a non-empty dict {method name: per-sample booleans}")
    names = list(correct)
    reference = _check_reference(names, reference)
    rows = []
    for name in names:
        ci = proportion_ci(correct[name], alpha=alpha)
        row = {"method": name, "accuracy": ci.estimate, "accuracy_lo": ci.lo, "accuracy_hi": ci.hi,
               "n": len(_to_numpy(correct[name], name))}
        if reference is not None:
            if name == reference:
                row.update(b=np.nan, c=np.nan, p_value=np.nan, differs=np.nan)
            else:
                res = mcnemar_test(correct[name], correct[reference])
                row.update(b=res.b, c=res.c, p_value=res.p_value, differs=res.p_value < alpha)
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


def compare_methods(metric: Callable, y_true, predictions: dict, reference: str | None = None, *,
                    name: str = "value", alpha: float = 0.05, n_boot: int = 1000, seed: int = 0,
                    strata=None) -> pd.DataFrame:
    """Any ``metric(y_true, pred)`` for several methods on the same samples, with bootstrap intervals and paired
    bootstrap tests against ``reference``.

    One row per method: ``<name>``, ``<name>_lo``, ``<name>_hi`` (:func:`bootstrap_ci` over samples) and, with a
    reference, ``delta``, ``delta_lo``, ``delta_hi``, ``p_value`` (:func:`paired_bootstrap`, this method minus the
    reference) and ``differs``. ``strata`` as in :func:`bootstrap_ci` (pass the labels for AUC/EER). Every method uses
    the same ``seed``, so the intervals come from the same resamples.
    """
    if not callable(metric):
        raise TypeError(f"metric must be a function metric(y_true, pred) -> float, got {type(metric).__name__}")
    if not isinstance(predictions, dict) or not predictions:
        raise ValueError("predictions must be a non-empty dict {method name: per-sample predictions or scores}")
    names = list(predictions)
    reference = _check_reference(names, reference)
    rows = []
    for method in names:
        ci = bootstrap_ci(metric, y_true, predictions[method], n_boot=n_boot, alpha=alpha, seed=seed, strata=strata)
        row = {"method": method, name: ci.estimate, f"{name}_lo": ci.lo, f"{name}_hi": ci.hi}
        if reference is not None:
            if method == reference:
                row.update(delta=np.nan, delta_lo=np.nan, delta_hi=np.nan, p_value=np.nan, differs=np.nan)
            else:
                res = paired_bootstrap(metric, y_true, predictions[method], predictions[reference], n_boot=n_boot,
                                       seed=seed, alpha=alpha, strata=strata)
                row.update(delta=res.delta, delta_lo=res.lo, delta_hi=res.hi, p_value=res.p_value,
                           differs=res.p_value < alpha)
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")
