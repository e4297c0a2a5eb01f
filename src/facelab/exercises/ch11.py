"""Exercises of chapter 11, *Micro-expressions meet physiology*: MEGC interval matching and F1, UF1, and where
fusion weights must be fitted."""

from __future__ import annotations

import numpy as np

from facelab.exercises import checks
from facelab.exercises._core import exercise


def _iou(a, b):
    from facelab.micro.spotting import interval_iou

    return interval_iou(a, b)


def _cases_1():
    return [((10, 30), (15, 40)), ((0, 0), (0, 0)), ((5, 9), (10, 14)), ((3, 20), (8, 12)), ((100, 112), (90, 104)),
            ((7, 7), (7, 8))]


def _close_number(got, want) -> bool:
    x = checks.as_number(got)
    return x is not None and abs(x - want) < 1e-9


def _exclusive_iou(a, b):  # a typical mistake: lengths e - s, as for half-open intervals
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union else 0.0


@exercise("11.1", kind="implement", title="IoU of two frame intervals",
          statement="""
          MEGC counts a spotted interval as a hit when its intersection over union (IoU) with a ground-truth interval
          is at least 0.5. Intervals are `(onset, offset)` in **inclusive** frames: `(7, 7)` is one frame long.
          Write `iou(a, b)`. The check compares with `facelab.micro.spotting.interval_iou`.""",
          answer="a function iou(a, b) -> float",
          check=checks.function(_iou, _cases_1, compare=_close_number, signature="iou(a, b)"),
          hints=["Inclusive frames: the length of (s, e) is e - s + 1.",
                 "inter = max(0, min(a1, b1) - max(a0, b0) + 1); union = len(a) + len(b) - inter."],
          wrong=[lambda a, b: max(0, min(a[1], b[1]) - max(a[0], b[0])) / max(1, (max(a[1], b[1]) - min(a[0], b[0]))),
                 lambda a, b: _exclusive_iou(a, b),
                 0.5])
def solution_1():
    def iou(a, b):
        inter = max(0, min(a[1], b[1]) - max(a[0], b[0]) + 1)
        union = (a[1] - a[0] + 1) + (b[1] - b[0] + 1) - inter
        return inter / union

    answer = iou
    return answer


@exercise("11.2", kind="compute", title="Spotting F1",
          statement="""
          In one video the ground truth has 6 micro-expressions; MDMD spots 10 micro intervals, of which 4 match a
          ground-truth interval with IoU >= 0.5 (each ground truth matched at most once). What is the MEGC F1 of the
          micro-expressions (`facelab.micro.spotting.megc_evaluate` computes it as `2 TP / (n_pred + n_true)`)?""",
          answer="a number between 0 and 1",
          check=checks.number(2 * 4 / (10 + 6), atol=1e-3, example="0.3"),
          hints=["Precision = TP / n_pred, recall = TP / n_true, F1 their harmonic mean.",
                 "2 * 4 / (10 + 6)."],
          wrong=[0.4, 4 / 6, (0.4 + 4 / 6) / 2, 4 / 16])
def solution_2():
    tp, n_pred, n_true = 4, 10, 6
    precision, recall = tp / n_pred, tp / n_true
    answer = 2 * precision * recall / (precision + recall)  # = 2 TP / (n_pred + n_true) = 0.5
    return answer


def _uf1(y_true, y_pred):
    from facelab import metrics

    return metrics.uf1(y_true, y_pred)


def _cases_3():
    rng = np.random.default_rng(113)
    cases = []
    for n, k, acc in [(20, 3, 0.6), (50, 5, 0.4), (12, 2, 0.8), (90, 4, 0.3)]:
        y = np.r_[np.arange(k), rng.integers(0, k, n - k)]  # every class occurs
        pred = np.where(rng.uniform(size=n) < acc, y, rng.integers(0, k, n))
        pred[0] = (y[0] + 1) % k  # at least one error
        cases.append((y, pred))
    return cases


@exercise("11.3", kind="implement", title="Unweighted F1 (UF1)",
          statement="""
          Micro-expression classes are very unbalanced, so MEGC reports UF1: the F1 score of every class, averaged
          with equal weight per class (not per sample). Write `uf1(y_true, y_pred)` for integer label arrays in which
          every class occurs in `y_true`. The check compares with `facelab.metrics.uf1`.""",
          answer="a function uf1(y_true, y_pred) -> float",
          check=checks.function(_uf1, _cases_3, compare=lambda g, w: checks.as_number(g) is not None
                                and abs(checks.as_number(g) - w) < 1e-9, signature="uf1(y_true, y_pred)"),
          hints=["For each class c: TP, FP and FN of 'is c', then F1_c = 2 TP / (2 TP + FP + FN).",
                 "Average the per-class F1 over the classes, not over the samples."],
          wrong=[lambda y, p: float(np.mean(np.asarray(y) == np.asarray(p))),
                 lambda y, p: float(np.mean([np.mean(np.asarray(p)[np.asarray(y) == c] == c) for c in np.unique(y)])),
                 "uf1"])
def solution_3():
    import numpy as np

    def uf1(y_true, y_pred):
        y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
        f1 = []
        for c in np.unique(np.r_[y_true, y_pred]):
            tp = np.sum((y_pred == c) & (y_true == c))
            fp = np.sum((y_pred == c) & (y_true != c))
            fn = np.sum((y_pred != c) & (y_true == c))
            f1.append(2 * tp / (2 * tp + fp + fn))
        return float(np.mean(f1))

    answer = uf1
    return answer


@exercise("11.4", kind="predict", title="Where fusion weights must be fitted",
          statement="""
          Late fusion mixes the class probabilities of the video, EEG and peripheral branches with weights. Fitted on
          the branches' predictions for their own *training* subjects, the fused model lost to the best single
          modality in leave-one-subject-out evaluation. On which predictions must the weights be fitted to match the
          best modality? Answer `"training"`, `"out-of-fold"` or `"test"`.""",
          answer='one of "training", "out-of-fold", "test"',
          check=checks.choice("out-of-fold", ["training", "out-of-fold", "test"]),
          hints=["A branch looks perfect on the people it was trained on.",
                 "Fit on predictions for subjects the branch did not see, but never on the test subject."],
          wrong=["training", "test"])
def solution_4():
    answer = "out-of-fold"  # calibrate_late_fusion on out-of-fold predictions of the training subjects
    return answer
