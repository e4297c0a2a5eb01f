"""Exercises of chapter 12, *A canonical basis of preferences*: Elo and Bradley-Terry, win matrices with ties,
coverage of a category basis, and what each definition measures."""

from __future__ import annotations

import numpy as np

from facelab.exercises import checks
from facelab.exercises._core import exercise


@exercise("12.1", kind="compute", title="What 100 Elo points mean",
          statement="""
          The chapter reports per-category Elo ratings, which are Bradley-Terry log-strengths on the Elo scale
          (`facelab.preferences.elo.to_elo`: 400 points per factor 10 in the odds). Item A is rated 100 points above
          item B. What is the probability that A is preferred to B?""",
          answer="a probability between 0 and 1",
          check=checks.number(1 / (1 + 10 ** (-100 / 400)), atol=2e-3, example="0.55"),
          hints=["On the Elo scale the odds of A over B are 10^(difference / 400).",
                 "p = 1 / (1 + 10^(-100/400))."],
          wrong=[1 / (1 + np.exp(-1.0)), 0.6, 1 / (1 + np.exp(-100 / 400)), 0.75])
def solution_1():
    difference = 100
    answer = 1 / (1 + 10 ** (-difference / 400))
    return answer


def _win_matrix(winner, loser, n_items, ties):
    from facelab.preferences.elo import win_matrix

    return win_matrix(winner, loser, n_items, ties=ties)


def _cases_2():
    rng = np.random.default_rng(122)
    cases = []
    for n_items, n in [(3, 6), (5, 30), (4, 12), (6, 50)]:
        a = rng.integers(0, n_items, n)
        b = (a + rng.integers(1, n_items, n)) % n_items  # never the same item
        a[:2], b[:2] = 0, 1  # a repeated pair
        cases.append((a, b, n_items, rng.uniform(size=n) < 0.3))
    return cases


@exercise("12.2", kind="implement", title="A win matrix with ties",
          statement="""
          Bradley-Terry is fitted from a win matrix `W[i, j]` = the number of times item `i` beat item `j`. Write
          `win_matrix(winner, loser, n_items, ties)`, where `ties[n]` (booleans) marks comparison `n` as a tie,
          which counts as half a win for each of the two items. Pairs can repeat. The check compares with
          `facelab.preferences.elo.win_matrix`.""",
          answer="a function win_matrix(winner, loser, n_items, ties) -> (n_items, n_items) array",
          check=checks.function(_win_matrix, _cases_2, signature="win_matrix(winner, loser, n_items, ties)"),
          hints=["Repeated pairs must add up: W[a, b] = value overwrites, np.add.at accumulates.",
                 "A tie adds 0.5 to W[winner, loser] and 0.5 to W[loser, winner]."],
          wrong=[lambda w, l, n, t: _assign(w, l, n),
                 lambda w, l, n, t: _accumulate(w, l, n),
                 "W"])
def solution_2():
    import numpy as np

    def win_matrix(winner, loser, n_items, ties):
        winner, loser, ties = np.asarray(winner), np.asarray(loser), np.asarray(ties, bool)
        W = np.zeros((n_items, n_items))
        np.add.at(W, (winner, loser), np.where(ties, 0.5, 1.0))
        np.add.at(W, (loser[ties], winner[ties]), 0.5)
        return W

    answer = win_matrix
    return answer


def _assign(w, l, n):
    W = np.zeros((n, n))
    W[np.asarray(w), np.asarray(l)] += 1  # fancy-index += does not accumulate repeats
    return W


def _accumulate(w, l, n):
    W = np.zeros((n, n))
    np.add.at(W, (np.asarray(w), np.asarray(l)), 1.0)  # ignores ties
    return W


def _coverage(comparison, category, chosen, n_comparisons):
    comparison, category = np.asarray(comparison), np.asarray(category)
    covered = np.zeros(n_comparisons, bool)
    covered[comparison[np.isin(category, chosen)]] = True
    return float(covered.mean())


def _cases_3():
    rng = np.random.default_rng(123)
    cases = []
    for n_comp, n_reasons, n_cat, k in [(10, 25, 4, 2), (40, 100, 8, 3), (30, 50, 5, 1), (60, 200, 12, 5)]:
        comparison = np.r_[np.arange(n_comp), rng.integers(0, n_comp, n_reasons - n_comp)]
        category = rng.integers(-1, n_cat, n_reasons)  # -1: an idiosyncratic reason, in no category
        chosen = list(rng.choice(n_cat, k, replace=False))
        cases.append((comparison, category, chosen, n_comp))
    return cases


@exercise("12.3", kind="implement", title="Coverage of a preference basis",
          statement="""
          Every comparison comes with one or more reasons; `comparison[m]` is the comparison of reason `m` and
          `category[m]` its category (-1: idiosyncratic, in no category). The *coverage* of a set of chosen
          categories is the share of **comparisons** with at least one reason in a chosen category (the measure
          behind the chapter's 89 %). Write `coverage(comparison, category, chosen, n_comparisons)`.""",
          answer="a function coverage(comparison, category, chosen, n_comparisons) -> float",
          check=checks.function(_coverage, _cases_3, compare=lambda g, w: checks.as_number(g) is not None
                                and abs(checks.as_number(g) - w) < 1e-9,
                                signature="coverage(comparison, category, chosen, n_comparisons)"),
          hints=["Count comparisons, not reasons: a comparison with two covered reasons counts once.",
                 "covered = zeros(n_comparisons, bool); covered[comparison[isin(category, chosen)]] = True."],
          wrong=[lambda c, cat, ch, n: float(np.isin(cat, ch).mean()),
                 lambda c, cat, ch, n: float(np.isin(cat, ch).sum() / n),
                 0.89])
def solution_3():
    import numpy as np

    def coverage(comparison, category, chosen, n_comparisons):
        comparison, category = np.asarray(comparison), np.asarray(category)
        covered = np.zeros(n_comparisons, bool)
        covered[comparison[np.isin(category, chosen)]] = True
        return float(covered.mean())

    answer = coverage
    return answer


@exercise("12.4", kind="predict", title="Which share can a null world reach?",
          statement="""
          The chapter computes the "share explained" of a 21-category basis in two ways: the **coverage** of the
          comparisons, and the **variance explained** by the leading components of a rater x category matrix. In a
          null world with no low-rank structure, which of the two can still come out near 100 %? Answer
          `"coverage"`, `"variance explained"` or `"neither"`.""",
          answer='one of "coverage", "variance explained", "neither"',
          check=checks.choice("variance explained", ["coverage", "variance explained", "neither"]),
          hints=["Decompose a matrix that has only as many columns as there are categories: how many components "
                 "do you need to explain all of it?",
                 "A rater x category matrix with 21 columns is fully explained by 21 components, whatever was "
                 "planted; coverage stays far below 50 % in the null world."],
          wrong=["coverage", "neither"])
def solution_4():
    answer = "variance explained"
    return answer
