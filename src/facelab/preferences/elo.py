"""Bradley-Terry scores and Elo ratings from pairwise choices, with PyPI ``choix`` (chapter 12).

:func:`win_matrix` counts wins (a tie is half a win for each side: the defined handling of ties),
:func:`bradley_terry` fits log-strengths with ``choix.ilsr_pairwise_dense`` and :func:`to_elo` puts them on the
Elo scale (400 points = a factor 10 in the odds). :func:`per_category_elo` fits one rating per preference category
from the comparisons whose reasons name it, the paper's *preference-specific Elo*; :func:`elo_with_intervals`
adds bootstrap intervals over comparisons.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["win_matrix", "bradley_terry", "to_elo", "per_category_elo", "elo_with_intervals", "ELO_SCALE"]

#: Elo points per unit of Bradley-Terry log-strength: 400 / ln(10).
ELO_SCALE = 400.0 / np.log(10.0)


def win_matrix(winner, loser, n_items: int, *, ties=None) -> np.ndarray:
    """``W[i, j]`` = times ``i`` beat ``j``. ``ties`` (optional, boolean per comparison) marks a tie between
    ``winner[n]`` and ``loser[n]``: half a win to each. An item compared with itself is a ``ValueError``."""
    winner, loser = np.asarray(winner, int), np.asarray(loser, int)
    if winner.shape != loser.shape:
        raise ValueError(f"winner and loser must have the same length, got {winner.shape} and {loser.shape}")
    same = np.flatnonzero(winner == loser)
    if same.size:
        raise ValueError(f"comparison {same[0]} compares item {winner[same[0]]} with itself; a pairwise choice "
                         "needs two different items")
    if winner.size and (min(winner.min(), loser.min()) < 0 or max(winner.max(), loser.max()) >= n_items):
        raise ValueError(f"item indices must lie in 0..{n_items - 1}")
    w = np.ones(winner.size)
    W = np.zeros((n_items, n_items))
    if ties is not None:
        ties = np.asarray(ties, bool)
        if ties.shape != winner.shape:
            raise ValueError("ties must have one entry per comparison")
        w[ties] = 0.5
        np.add.at(W, (loser[ties], winner[ties]), 0.5)
    np.add.at(W, (winner, loser), w)
    return W


def bradley_terry(W, *, alpha: float = 0.01) -> np.ndarray:
    """Bradley-Terry log-strengths (mean 0) from a win matrix, by ``choix.ilsr_pairwise_dense``.

    ``alpha`` is choix's regularisation (a small prior that keeps an item that never lost finite). An item with no
    comparisons at all is a ``ValueError``."""
    import choix

    W = np.asarray(W, float)
    if W.ndim != 2 or W.shape[0] != W.shape[1] or W.shape[0] < 2:
        raise ValueError(f"W must be a square (n_items, n_items) win matrix with n_items >= 2, got {W.shape}")
    if (W < 0).any() or np.diag(W).any():
        raise ValueError("W must be non-negative with a zero diagonal (no item compared with itself)")
    played = W.sum(0) + W.sum(1)
    if (played == 0).any():
        raise ValueError(f"item(s) {np.flatnonzero(played == 0).tolist()[:5]} have no comparisons; drop them "
                         "before fitting")
    theta = choix.ilsr_pairwise_dense(W, alpha=alpha)
    return theta - theta.mean()


def to_elo(theta, *, base: float = 1000.0) -> np.ndarray:
    """Elo ratings from log-strengths (``base`` = the mean)."""
    theta = np.asarray(theta, float)
    return base + ELO_SCALE * (theta - theta.mean())


def per_category_elo(winner, loser, comparison_categories, n_items: int, categories, *, names=None,
                     alpha: float = 0.01) -> pd.DataFrame:
    """Elo of every item (columns) within each category (rows), from the comparisons whose reasons name it.

    ``comparison_categories`` is a list (one per comparison) of the category indices its reasons name; a category
    with fewer comparisons than items gets a row of NaN."""
    winner, loser = np.asarray(winner, int), np.asarray(loser, int)
    rows = {}
    for k, name in zip(categories, names if names is not None else categories):
        sel = np.asarray([k in cats for cats in comparison_categories], bool)
        W = win_matrix(winner[sel], loser[sel], n_items)
        try:
            rows[name] = to_elo(bradley_terry(W, alpha=alpha))
        except ValueError:
            rows[name] = np.full(n_items, np.nan)
    return pd.DataFrame(rows).T


def elo_with_intervals(winner, loser, n_items: int, *, n_boot: int = 200, alpha: float = 0.05, seed: int = 0,
                       reg: float = 0.01):
    """Elo per item with percentile intervals from resampling comparisons: ``(elo, lo, hi)`` arrays."""
    winner, loser = np.asarray(winner, int), np.asarray(loser, int)
    est = to_elo(bradley_terry(win_matrix(winner, loser, n_items), alpha=reg))
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        i = rng.integers(0, winner.size, winner.size)
        try:
            boots.append(to_elo(bradley_terry(win_matrix(winner[i], loser[i], n_items), alpha=reg)))
        except ValueError:
            continue
    lo, hi = np.percentile(np.asarray(boots), [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=0)
    return est, lo, hi
