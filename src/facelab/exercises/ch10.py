"""Exercises of chapter 10, *Asking a language model what someone feels*: cue reliability, calibration, the ladder."""

from __future__ import annotations

import numpy as np

from facelab.exercises import checks
from facelab.exercises._core import exercise

_LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")


def _truth_majority(r: float = 0.6) -> float:
    # three independent cues, each right with probability r: at least two right
    return 3 * r ** 2 * (1 - r) + r ** 3


@exercise("10.1", kind="compute", title="How often does the context majority know the answer?",
          statement="""
          In the chapter's scenes three context cues (posture, scene type, one other person's emotion) each point to
          the target's felt emotion with probability $r = 0.6$, independently. What is the probability that **at
          least two** of the three point to the felt emotion? Compute it exactly or simulate it with
          `facelab.prompting.Reliability` and `pr.make_scenes(..., tiers=("hard",))`.""",
          answer="a probability between 0 and 1 (e.g. 0.5)",
          check=checks.number(_truth_majority, atol=0.01, example="0.5"),
          hints=["Count the ways: exactly two right (three choices of the wrong one) or all three right.",
                 "P = 3 r^2 (1 - r) + r^3."],
          wrong=[0.6, 0.216, 0.36, 64.8])
def solution_1():
    r = 0.6
    answer = 3 * r ** 2 * (1 - r) + r ** 3
    return answer


def _calibrated_label() -> str:
    logp = np.log([0.02, 0.40, 0.30, 0.05, 0.03, 0.02, 0.18])
    cf = np.log([0.02, 0.55, 0.20, 0.05, 0.04, 0.02, 0.12])
    return _LABELS[int(np.argmax(logp - cf))]


@exercise("10.2", kind="predict", title="Calibration changes the answer",
          statement="""
          After a full SoVTP prompt, a language model gives the seven labels (neutral, happy, sad, angry, fearful,
          disgusted, surprised) next-token probabilities 0.02, 0.40, 0.30, 0.05, 0.03, 0.02, 0.18. After the
          content-free prompt (every field "N/A") it gives 0.02, 0.55, 0.20, 0.05, 0.04, 0.02, 0.12. Which label does
          content-free calibration (`facelab.prompting.calibrate`) predict?""",
          answer="one of the seven label names",
          check=checks.choice(_calibrated_label, options=list(_LABELS)),
          hints=["Calibration compares each label's probability with the model's prior for that label word.",
                 "Divide the two probability lists element by element (subtract the logs) and take the largest."],
          wrong=["happy", "neutral"])
def solution_2():
    import numpy as np
    import facelab.prompting as pr

    logp = np.log([[0.02, 0.40, 0.30, 0.05, 0.03, 0.02, 0.18]])
    cf = np.log([0.02, 0.55, 0.20, 0.05, 0.04, 0.02, 0.12])
    answer = str(pr.predictions(pr.calibrate(logp, cf))[0])
    return answer


def _reference_calibrated(logp, cf):
    logp = np.asarray(logp, float)
    return np.argmax(logp - np.asarray(cf, float)[None], axis=1)


def _cases_3():
    rng = np.random.default_rng(10)
    cases = []
    for n, k in [(1, 7), (5, 7), (12, 3), (4, 2)]:
        logp = np.log(rng.dirichlet(np.ones(k), size=n))
        cf = np.log(rng.dirichlet(np.ones(k)))
        cases.append((logp, cf))
    return cases


@exercise("10.3", kind="implement", title="Content-free calibration",
          statement="""
          Write `calibrated_argmax(logp, cf)`: `logp` is an `(n, k)` array of label log-probabilities for `n`
          prompts, `cf` the `k` log-probabilities after the content-free prompt. Return the index of the predicted
          label for each prompt after content-free calibration (an integer array of length `n`).""",
          answer="a function calibrated_argmax(logp, cf) -> integer array of shape (n,)",
          check=checks.function(_reference_calibrated, _cases_3, signature="calibrated_argmax(logp, cf)"),
          hints=["Subtract the content-free log-probabilities from every row, then take the argmax along the labels.",
                 "np.argmax(logp - cf[None], axis=1)"],
          wrong=[lambda logp, cf: np.argmax(np.asarray(logp), axis=1),
                 lambda logp, cf: np.argmax(np.asarray(logp) + np.asarray(cf)[None], axis=1)])
def solution_3():
    import numpy as np

    def calibrated_argmax(logp, cf):
        return np.argmax(np.asarray(logp, float) - np.asarray(cf, float)[None], axis=1)

    answer = calibrated_argmax
    return answer
