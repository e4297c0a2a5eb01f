"""Exercises of chapter 00, *Getting started*: thresholds, FAR/FRR and the EER on simulated scores."""

from __future__ import annotations

import math

import numpy as np

from facelab.exercises import checks
from facelab.exercises._core import exercise


def _truth_frr_low_separation() -> float:
    from facelab.studies import getting_started

    genuine, impostor = getting_started.simulate_scores(separation=1.5, rng=np.random.default_rng(0))
    return getting_started.error_rates(genuine, impostor, 1.5)[1]


@exercise("00.1", kind="predict", title="A worse verifier at the same threshold",
          statement="""
          The chapter's simulated verifier separates genuine and impostor scores by 3 standard deviations, and at
          threshold 1.5 both FAR and FRR are about 7 %. Predict, then measure: with
          `getting_started.simulate_scores(separation=1.5, rng=np.random.default_rng(0))` and the same threshold 1.5,
          what is the FRR (`getting_started.error_rates`)?""",
          answer="the FRR as a fraction between 0 and 1 (e.g. 0.12)",
          check=checks.number(_truth_frr_low_separation, atol=0.02, example="0.12"),
          hints=["The genuine scores are now N(1.5, 1): where does the threshold sit in that distribution?",
                 "error_rates returns (FAR, FRR); the FRR is the share of genuine scores below the threshold."],
          wrong=[0.067, 0.0668, 50.0, 0.5 * 0.0668])
def solution_1():
    import numpy as np
    from facelab.studies import getting_started

    genuine, impostor = getting_started.simulate_scores(separation=1.5, rng=np.random.default_rng(0))
    far, frr = getting_started.error_rates(genuine, impostor, 1.5)
    answer = frr
    return answer


def _true_eer(separation: float = 3.0) -> float:
    # two unit-variance Gaussians separated by d cross half-way: EER = Phi(-d/2)
    return 0.5 * math.erfc(separation / 2 / math.sqrt(2))


@exercise("00.2", kind="compute", title="The equal error rate of the simulated verifier",
          statement="""
          Estimate the equal error rate (EER) of the chapter's simulated verifier (`separation=3.0`) from its scores,
          for instance with `facelab.metrics.eer(labels, scores)` and `getting_started.labelled_scores`. The check
          compares with the true EER of the two Gaussians the scores are drawn from, so any seed works.""",
          answer="the EER as a fraction between 0 and 1 (e.g. 0.05)",
          check=checks.number(_true_eer, atol=0.01, example="0.05"),
          hints=["At the EER threshold FAR equals FRR; facelab.metrics.eer returns (eer, threshold).",
                 "The scores are N(3, 1) and N(0, 1): by symmetry the two rates cross at 1.5."],
          wrong=[1.5, 6.68, 0.5, 0.0])
def solution_2():
    import numpy as np
    from facelab import metrics
    from facelab.studies import getting_started

    genuine, impostor = getting_started.simulate_scores(separation=3.0, rng=np.random.default_rng(0))
    eer, threshold = metrics.eer(*getting_started.labelled_scores(genuine, impostor))
    answer = eer
    return answer


def _error_rates(genuine, impostor, threshold):
    from facelab.studies import getting_started

    return getting_started.error_rates(genuine, impostor, threshold)


def _cases_3():
    rng = np.random.default_rng(3)
    cases = []
    for n_g, n_i, t in [(5, 7, 1.0), (40, 60, 0.0), (100, 300, 2.0), (8, 8, 3.0)]:
        # integer scores make ties with the threshold, where ">=" and ">" differ
        cases.append((rng.integers(-2, 5, n_g).astype(float), rng.integers(-3, 3, n_i).astype(float), t))
    return cases


def _same_pair(got, want) -> bool:
    return isinstance(got, (tuple, list)) and len(got) == 2 and all(
        checks.as_number(g) is not None and abs(checks.as_number(g) - w) < 1e-9 for g, w in zip(got, want))


@exercise("00.3", kind="implement", title="FAR and FRR from scratch",
          statement="""
          Write `far_frr(genuine, impostor, threshold)` returning the pair `(FAR, FRR)` for similarity scores
          (higher = more alike): a pair is *accepted* when its score is **at or above** the threshold. FAR is the
          share of impostor scores accepted, FRR the share of genuine scores rejected. The check runs your function
          on hidden score arrays (with ties at the threshold) and compares with `getting_started.error_rates`.""",
          answer="a function far_frr(genuine, impostor, threshold) -> (FAR, FRR)",
          check=checks.function(_error_rates, _cases_3, compare=_same_pair, signature="far_frr(genuine, impostor, threshold)"),
          hints=["Accepted means score >= threshold; a genuine score exactly at the threshold is accepted.",
                 "FAR = mean(impostor >= t), FRR = mean(genuine < t)."],
          wrong=[lambda g, i, t: (float(np.mean(i > t)), float(np.mean(g <= t))),
                 lambda g, i, t: (float(np.mean(g < t)), float(np.mean(i >= t))),
                 0.5])
def solution_3():
    import numpy as np

    def far_frr(genuine, impostor, threshold):
        genuine, impostor = np.asarray(genuine, float), np.asarray(impostor, float)
        return float(np.mean(impostor >= threshold)), float(np.mean(genuine < threshold))

    answer = far_frr
    return answer


@exercise("00.4", kind="predict", title="What a seed changes",
          statement="""
          Run this chapter with `-p SEED 1` (papermill) or `SEED = 1` in the parameters cell. Which of these outputs
          change? Options: `"pipeline figure"`, `"threshold slider"`, `"FAR/FRR table"`, `"number of verification
          pairs"`.""",
          answer='a list of the options that change, e.g. ["pipeline figure"]',
          check=checks.items(["threshold slider", "FAR/FRR table"],
                             options=["pipeline figure", "threshold slider", "FAR/FRR table",
                                      "number of verification pairs"]),
          hints=["Only what is drawn from P.rng depends on the seed.",
                 "The simulated scores feed two outputs; sizes come from P.pick, the figure from fixed coordinates."],
          wrong=[["pipeline figure"], ["FAR/FRR table"], ["threshold slider", "FAR/FRR table", "pipeline figure"]])
def solution_4():
    answer = ["threshold slider", "FAR/FRR table"]
    return answer
