"""Exercises of chapter 07, *Expressions from faces, voices and words*: the ASR error, the nets on the synthetic
world, EmotiEffLib's frame selection and temporal smoothing."""

from __future__ import annotations

import numpy as np

from facelab.exercises import checks
from facelab.exercises._core import exercise

_CLASSES = ["neutral", "anger", "disgust", "fear", "happiness", "sadness", "surprise", "other"]


def _truth_wer() -> float:
    from facelab.affect import bank as affect_bank

    c = affect_bank.load_bank("quick", allow_compute=False).clips
    return float(c["wer_edits"].sum() / c["wer_words"].sum())


@exercise("07.1", kind="compute", title="How wrong is the recogniser?",
          statement="""
          The descriptor bank stores, per clip, the number of word edits PocketSphinx's transcript needs to become
          the true one (`bank.clips["wer_edits"]`) and the number of words of the true transcript
          (`bank.clips["wer_words"]`). Load the quick bank (`facelab.affect.bank.load_bank("quick")`) and compute the
          *corpus* word error rate: all edits over all reference words (not the mean of per-clip rates).""",
          answer="the word error rate as a fraction (e.g. 0.25)",
          check=checks.number(_truth_wer, atol=0.005, example="0.25"),
          hints=["Sum both arrays over the clips, then divide.",
                 "The mean of per-clip rates weighs a 5-word clip like a 20-word one; the corpus rate does not."],
          wrong=[0.0, 38.0, 1.0])
def solution_1():
    from facelab.affect import bank as affect_bank

    bank = affect_bank.load_bank("quick")
    answer = bank.clips["wer_edits"].sum() / bank.clips["wer_words"].sum()
    return answer


def _truth_best_class() -> str:
    from facelab.affect import bank as affect_bank
    from facelab.studies import expressions_faces_voices_words as study

    a = study.net_agreement(affect_bank.load_bank("quick", allow_compute=False)).iloc[:8]
    share = a["face-api agrees"].str.split(" ").str[0].astype(float)
    return str(a["class (world)"].iloc[int(share.to_numpy().argmax())])


@exercise("07.2", kind="predict", title="What does face-api read on rendered faces?",
          statement="""
          face-api's expression net was trained on photographs. On the synthetic world's rendered faces, on frames
          of which true class (ABAW's eight) is its top class most often right? Predict first, then check with
          `study.net_agreement(bank)`.""",
          answer='one ABAW class name, e.g. "happiness"',
          check=checks.choice(_truth_best_class, options=_CLASSES),
          hints=["Think of which expression changes the face the most in the renderer: a few large action units.",
                 "Look at the 'face-api agrees' column of study.net_agreement(bank)."],
          wrong=["neutral", "happiness", "other"])
def solution_2():
    from facelab.affect import bank as affect_bank
    from facelab.studies import expressions_faces_voices_words as study

    a = study.net_agreement(affect_bank.load_bank("quick")).iloc[:8]
    share = a["face-api agrees"].str.split(" ").str[0].astype(float)
    answer = a["class (world)"].iloc[int(share.to_numpy().argmax())]
    return answer


def _reference_select(pretrained, classifier, threshold):
    from facelab.affect.pipeline import _argmax, select_frames

    p, _ = select_frames(pretrained, classifier, threshold)
    return _argmax(p)


def _cases_3():
    rng = np.random.default_rng(7)
    cases = []
    for T, t in [(6, 0.5), (20, 0.3), (15, 0.9), (10, 2.0)]:
        pre = rng.dirichlet(np.ones(8) * 0.4, T)
        clf = rng.dirichlet(np.ones(8), T)
        cases.append((pre, clf, t))
    return cases


@exercise("07.3", kind="implement", title="EmotiEffLib's frame selection",
          statement="""
          Write `select(pretrained, classifier, threshold)`: both arguments are (T, 8) probability arrays in ABAW
          order; a frame whose pretrained maximum probability is **above** the threshold keeps the pretrained net's
          label, every other frame takes the classifier's label. Return the T labels (integers 0-7). The check
          compares with `facelab.affect.pipeline.select_frames` on hidden arrays.""",
          answer="a function select(pretrained, classifier, threshold) -> labels (T,)",
          check=checks.function(_reference_select, _cases_3, signature="select(pretrained, classifier, threshold)"),
          hints=["confident = pretrained.max(1) > threshold",
                 "np.where(confident, pretrained.argmax(1), classifier.argmax(1))"],
          wrong=[lambda p, c, t: np.argmax(c, 1), lambda p, c, t: np.argmax(p, 1),
                 lambda p, c, t: np.where(p.max(1) > t, np.argmax(c, 1), np.argmax(p, 1))])
def solution_3():
    import numpy as np

    def select(pretrained, classifier, threshold):
        pretrained, classifier = np.asarray(pretrained), np.asarray(classifier)
        confident = pretrained.max(1) > threshold
        return np.where(confident, pretrained.argmax(1), classifier.argmax(1))

    answer = select
    return answer
