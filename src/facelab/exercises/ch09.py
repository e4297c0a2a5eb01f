"""Exercises of chapter 09, *Adapting while watching*: Fisher masks, their overlap, and BatchNorm with one frame."""

from __future__ import annotations

import numpy as np

from facelab.exercises import checks
from facelab.exercises._core import exercise


def _truth_ratio() -> float:
    from facelab.adaptation import test_time as tta
    from facelab.models.fer import FERMiniXception

    return tta.count_parameters(FERMiniXception()) / 2000


@exercise("09.1", kind="compute", title="How many times fewer parameters",
          statement="""
          FIESTA updates the `k = 2000` entries with the largest Fisher value; the all-parameter baseline updates
          every entry of the mini-Xception. Count the entries (`tta.count_parameters(model)`) and give the factor:
          how many times fewer entries does FIESTA update?""",
          answer="a number (e.g. 12.5)",
          check=checks.number(_truth_ratio, atol=0.05, example="12.5"),
          hints=["count_parameters sums p.numel() over model.parameters().",
                 "Divide the total by k = 2000."],
          wrong=[2000.0, 1 / 28.5, 20.0])
def solution_1():
    from facelab.adaptation import test_time as tta
    from facelab.studies import test_time_adaptation as study

    model, _ = study.source_model()
    answer = tta.count_parameters(model) / 2000
    return answer


def _jaccard(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = np.sum(a | b)
    return 1.0 if union == 0 else float(np.sum(a & b) / union)


def _cases_2():
    rng = np.random.default_rng(9)
    cases = [(np.zeros(5, bool), np.zeros(5, bool)), (np.array([1, 0, 1], bool), np.array([1, 1, 0], bool))]
    for n in (10, 100, 1000):
        cases.append((rng.random(n) < 0.3, rng.random(n) < 0.3))
    return cases


def _close(got, want) -> bool:
    g = checks.as_number(got)
    return g is not None and abs(g - want) < 1e-9


@exercise("09.2", kind="implement", title="Mask overlap",
          statement="""
          Write `jaccard(a, b)` for two boolean masks of the same shape (numpy arrays): the number of entries set in
          both divided by the number set in either, and 1.0 when both masks are empty (two empty masks agree). The
          chapter uses it (`tta.mask_jaccard`) to compare the masks estimated from 1, 3, 10 and 30 frames.""",
          answer="a function jaccard(a, b) -> float",
          check=checks.function(_jaccard, _cases_2, compare=_close, signature="jaccard(a, b)"),
          hints=["a & b is the intersection, a | b the union.",
                 "Guard the division when the union is empty."],
          wrong=[lambda a, b: float(np.mean(np.asarray(a) == np.asarray(b))),
                 lambda a, b: float(np.sum(np.asarray(a) & np.asarray(b)) / max(1, np.sum(np.asarray(a)))),
                 0.5])
def solution_2():
    import numpy as np

    def jaccard(a, b):
        a, b = np.asarray(a, bool), np.asarray(b, bool)
        union = np.sum(a | b)
        return 1.0 if union == 0 else float(np.sum(a & b) / union)

    answer = jaccard
    return answer


@exercise("09.3", kind="predict", title="BatchNorm with a batch of one frame",
          statement="""
          An adapter built with `bn_alpha=1.0` (normalise with the batch's own statistics, as TENT does) receives a
          batch of **one** frame. What does `StreamBatchNorm2d` normalise with? Options: `"the frame's own
          statistics"`, `"the source statistics only"`, `"a blend capped at single_frame_alpha"`, `"it raises an
          error"`.""",
          answer='one of the options, e.g. "the source statistics only"',
          check=checks.choice("a blend capped at single_frame_alpha",
                              options=["the frame's own statistics", "the source statistics only",
                                       "a blend capped at single_frame_alpha", "it raises an error"]),
          hints=["Read the docstring of facelab.adaptation.test_time.norm.",
                 "One frame's pixels at the last block are 16 values per channel: too few to replace the statistics."],
          wrong=["the frame's own statistics", "it raises an error"])
def solution_3():
    answer = "a blend capped at single_frame_alpha"
    return answer
