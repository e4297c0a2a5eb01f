"""Exercises of chapter 05, *Hiding in plain sight I* (DiffAIM): the predicted clean image, the adaptive ensemble
weights, success at a fixed FAR and its interval, and the public code's semantic similarity (per-channel cosine)."""

from __future__ import annotations

import numpy as np

from facelab.exercises import checks
from facelab.exercises._core import exercise


def _x0(x_t, eps, alpha_bar):
    x_t, eps = np.asarray(x_t, float), np.asarray(eps, float)
    return (x_t - np.sqrt(1 - alpha_bar) * eps) / np.sqrt(alpha_bar)


def _cases_1():
    rng = np.random.default_rng(51)
    return [(rng.normal(size=s), rng.normal(size=s), a) for s, a in [((4,), 0.9), ((2, 3, 8, 8), 0.5),
                                                                     ((16,), 0.02), ((3, 5), 0.999)]]


@exercise("05.1", kind="implement", title="The clean image a reverse step predicts",
          statement="""
          DiffAIM's identity loss looks at the clean image that a reverse step predicts, not at the noisy latent.
          With `x_t = sqrt(a) x_0 + sqrt(1 - a) eps` (`a` the cumulative alpha of step `t`), write
          `predict_x0(x_t, eps, a)` returning the prediction of `x_0` from the noisy latent and the predicted noise,
          as `facelab.diffusion.inversion.step_terms` computes it.""",
          answer="a function predict_x0(x_t, eps, a) -> array",
          check=checks.function(_x0, _cases_1, signature="predict_x0(x_t, eps, a)"),
          hints=["Solve x_t = sqrt(a) x_0 + sqrt(1 - a) eps for x_0.",
                 "x_0 = (x_t - sqrt(1 - a) eps) / sqrt(a)."],
          wrong=[lambda x, e, a: (np.asarray(x) - (1 - a) * np.asarray(e)) / a,
                 lambda x, e, a: np.asarray(x) - np.sqrt(1 - a) * np.asarray(e), "x0"])
def solution_1():
    import numpy as np

    def predict_x0(x_t, eps, a):
        return (np.asarray(x_t) - np.sqrt(1 - a) * np.asarray(eps)) / np.sqrt(a)

    answer = predict_x0
    return answer


def _weights(scores):
    s = 1 - np.asarray(scores, float)
    e = np.exp(s - s.max())
    return e / e.sum()


def _cases_2():
    rng = np.random.default_rng(52)
    return [(rng.uniform(-1, 1, n),) for n in (2, 3, 4, 7)]


@exercise("05.2", kind="implement", title="Adaptive ensemble weights",
          statement="""
          DiffAIM attacks an ensemble of recognisers and re-weights them after every inner step: a recogniser the
          attack is already winning on (a high identity score, `score` in [-1, 1]) gets *less* weight,
          `w = softmax(1 - score)`. Write `ensemble_weights(scores)` for a 1-D array of per-model scores.""",
          answer="a function ensemble_weights(scores) -> 1-D array summing to 1",
          check=checks.function(_weights, _cases_2, signature="ensemble_weights(scores)"),
          hints=["A softmax of 1 - score, normalised over the models.",
                 "e = exp(1 - s); w = e / e.sum() (subtract the max first for stability)."],
          wrong=[lambda s: np.exp(s) / np.exp(s).sum(), lambda s: (1 - np.asarray(s)) / (1 - np.asarray(s)).sum(),
                 [0.5, 0.5]])
def solution_2():
    import numpy as np

    def ensemble_weights(scores):
        z = 1 - np.asarray(scores, float)
        e = np.exp(z - z.max())
        return e / e.sum()

    answer = ensemble_weights
    return answer


def _wilson_low() -> float:
    from facelab import metrics

    return float(metrics.wilson_interval(12, 64)[0])


@exercise("05.3", kind="compute", title="An interval for 64 faces",
          statement="""
          Against a held-out victim, DiffAIM makes 12 of the chapter's 64 protected faces match their target at
          FAR 1 %. Report the **lower** end of the 95 % Wilson interval of that success rate
          (`facelab.metrics.wilson_interval`). Is a method with 5 of 64 clearly worse?""",
          answer="a fraction between 0 and 1 (the lower end of the interval)",
          check=checks.number(_wilson_low, atol=0.005, example="0.2"),
          hints=["wilson_interval(k, n) returns (low, high).",
                 "The normal approximation p - 1.96 sqrt(p(1-p)/n) is not the Wilson interval."],
          wrong=[12 / 64, 12 / 64 - 1.96 * np.sqrt(12 / 64 * 52 / 64 / 64), 0.5])
def solution_3():
    from facelab import metrics

    low, high = metrics.wilson_interval(12, 64)
    answer = low  # about 0.11; 5/64 = 0.08 lies below it, but the paired test decides, not overlapping bars
    return answer


@exercise("05.4", kind="predict", title="A stricter FAR",
          statement="""
          Success is measured at each victim's threshold for a fixed false accept rate, estimated from impostor
          pairs. You move from FAR 1 % to FAR 0.1 %. What can the impersonation success rate of the same protected
          images do? Answer `"rise"`, `"fall or stay"` or `"anything"`.""",
          answer='one of "rise", "fall or stay", "anything"',
          check=checks.choice("fall or stay", ["rise", "fall or stay", "anything"]),
          hints=["A lower FAR needs a higher similarity threshold.",
                 "The same similarities against a higher threshold: fewer (or as many) pass."],
          wrong=["rise", "anything"])
def solution_4():
    answer = "fall or stay"  # the threshold rises with a lower FAR; the similarities do not change
    return answer


def _semantic(a, b):
    a = np.asarray(a, float).reshape(np.shape(a)[0], -1)
    b = np.asarray(b, float).reshape(np.shape(b)[0], -1)
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-8)
    return float(cos.mean())


def _cases_5():
    rng = np.random.default_rng(55)
    out = []
    for c, h in [(3, 4), (8, 2), (1, 5), (16, 4)]:
        a = rng.normal(size=(c, h, h))
        out.append((a, a + rng.normal(scale=0.7, size=a.shape) + rng.normal(size=(c, 1, 1))))
    return out


@exercise("05.5", kind="implement", title="The semantic similarity of the public code",
          statement="""
          DiffAIM's semantic term compares the UNet's features of the adversarial and the benign latent at the end
          of the encoder (`unet.down_blocks[-1]`), shape (C, h, w) per image. The public code does not flatten them
          into one vector: it takes, for each channel, the cosine similarity of its h x w map in the two latents, and
          averages over the channels. Write `semantic_similarity(a, b)` for two (C, h, w) arrays (the semantic
          *divergence* is one minus it; `facelab.diffusion.hooks.per_channel_cosine` is the batched version).""",
          answer="a function semantic_similarity(a, b) -> float",
          check=checks.function(_semantic, _cases_5, signature="semantic_similarity(a, b)"),
          hints=["Reshape each to (C, h * w); one cosine per row.",
                 "cos_c = <a_c, b_c> / (|a_c| |b_c|), then the mean over c; not the cosine of the flattened arrays."],
          wrong=[lambda a, b: float((np.ravel(a) @ np.ravel(b)) / (np.linalg.norm(a) * np.linalg.norm(b))),
                 lambda a, b: float(np.mean(np.asarray(a) * np.asarray(b))), 1.0])
def solution_5():
    import numpy as np

    def semantic_similarity(a, b):
        a = np.asarray(a, float).reshape(len(a), -1)
        b = np.asarray(b, float).reshape(len(b), -1)
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        return float(cos.mean())

    answer = semantic_similarity
    return answer
