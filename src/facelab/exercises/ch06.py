"""Exercises of chapter 06, *Hiding in plain sight II* (MASQUE): paired tests on 16 faces, pasting an edit into
the original, how local a change is, and null-text inversion."""

from __future__ import annotations

import numpy as np

from facelab.exercises import checks
from facelab.exercises._core import exercise


def _mcnemar_p() -> float:
    from facelab import metrics

    a = np.array([1] * 5 + [1] * 6 + [0] * 1 + [0] * 4, bool)  # MASQUE: 11 of 16
    b = np.array([1] * 5 + [0] * 6 + [1] * 1 + [0] * 4, bool)  # makeup alone: 6 of 16
    return metrics.mcnemar_test(a, b).p_value


@exercise("06.1", kind="compute", title="11 of 16 against 6 of 16",
          statement="""
          On the same 16 faces MASQUE dodges the victim on 11, makeup without guidance on 6. Both succeed on 5 faces,
          both fail on 4; MASQUE alone succeeds on 6 faces, makeup alone on 1. What is the p-value of McNemar's exact
          test (`facelab.metrics.mcnemar_test(correct_a, correct_b)`)? Is the difference significant at 5 %?""",
          answer="a p-value between 0 and 1",
          check=checks.number(_mcnemar_p, atol=1e-3, example="0.05"),
          hints=["Only the 7 discordant faces count: is 6 against 1 unusual for a fair coin?",
                 "p = 2 P(X <= 1) for X ~ Bin(7, 1/2) = 2 * 8 / 128."],
          wrong=[0.0625, 0.0078, 0.05, 0.0703])
def solution_1():
    import numpy as np
    from facelab import metrics

    masque = np.array([1] * 5 + [1] * 6 + [0] * 1 + [0] * 4, bool)
    makeup = np.array([1] * 5 + [0] * 6 + [1] * 1 + [0] * 4, bool)
    result = metrics.mcnemar_test(masque, makeup)
    answer = result.p_value  # 0.125: not significant with 16 faces
    return answer


def _paste(original, edited, mask):
    o, e, m = (np.asarray(a, float) for a in (original, edited, mask))
    return m * e + (1 - m) * o


def _cases_2():
    rng = np.random.default_rng(62)
    cases = []
    for n, c, h in [(1, 3, 8), (2, 3, 16), (4, 1, 6)]:
        cases.append((rng.uniform(size=(n, c, h, h)), rng.uniform(size=(n, c, h, h)), rng.uniform(size=(n, 1, h, h))))
    cases.append((rng.uniform(size=(2, 3, 5, 5)), rng.uniform(size=(2, 3, 5, 5)),
                  (rng.uniform(size=(2, 1, 5, 5)) > 0.5).astype(float)))
    return cases


@exercise("06.2", kind="implement", title="Paste the edit, keep the rest",
          statement="""
          MASQUE keeps everything outside the makeup region exactly: the edited image is pasted into the original
          through a soft mask in [0, 1] (1 = take the edit). Write `paste(original, edited, mask)` for arrays of
          shape `(N, C, H, W)` with a mask of shape `(N, 1, H, W)` (broadcast over the colour channels).""",
          answer="a function paste(original, edited, mask) -> array (N, C, H, W)",
          check=checks.function(_paste, _cases_2, signature="paste(original, edited, mask)"),
          hints=["A convex combination per pixel, weighted by the mask.",
                 "mask * edited + (1 - mask) * original."],
          wrong=[lambda o, e, m: np.asarray(m) * np.asarray(o) + (1 - np.asarray(m)) * np.asarray(e),
                 lambda o, e, m: np.asarray(e) * (np.asarray(m) > 0.5), "mask"])
def solution_2():
    import numpy as np

    def paste(original, edited, mask):
        mask = np.asarray(mask, float)
        return mask * np.asarray(edited) + (1 - mask) * np.asarray(original)

    answer = paste
    return answer


def _outside_share(protected, originals, mask):
    import torch
    from facelab.studies.privacy_masque import locality

    t = [torch.as_tensor(np.asarray(a, float)) for a in (protected, originals, mask)]
    return locality(*t)["share of change outside"]


def _cases_3():
    rng = np.random.default_rng(63)
    cases = []
    for n, h in [(1, 8), (3, 12), (2, 6)]:
        orig = rng.uniform(size=(n, 3, h, h))
        mask = np.zeros((n, 1, h, h))
        mask[:, :, h // 4: 3 * h // 4, h // 4: 3 * h // 4] = 1.0
        prot = orig + rng.normal(scale=0.05, size=orig.shape) * (0.2 + mask)
        cases.append((prot, orig, mask))
    return cases


def _close_number(got, want) -> bool:
    x = checks.as_number(got)
    return x is not None and abs(x - want) < 1e-6


@exercise("06.3", kind="implement", title="How local is the change?",
          statement="""
          The chapter's locality table reports the share of the total change that lies *outside* the makeup region.
          Write `outside_share(protected, original, mask)` for arrays `(N, 3, H, W)` and a mask `(N, 1, H, W)` (0 =
          outside): per image, average the absolute change over the colour channels, divide its sum over the
          pixels where the mask is 0 by its sum over all pixels, then average over the images. The check compares
          with `facelab.studies.privacy_masque.locality`.""",
          answer="a function outside_share(protected, original, mask) -> float",
          check=checks.function(_outside_share, _cases_3, compare=_close_number,
                                signature="outside_share(protected, original, mask)"),
          hints=["d = |protected - original|.mean(axis=1, keepdims=True); outside = (mask == 0).",
                 "(d * outside).sum((1, 2, 3)) / d.sum((1, 2, 3)), then the mean over images."],
          wrong=[lambda p, o, m: float((np.abs(np.asarray(p) - o).mean(1, keepdims=True) * (np.asarray(m) > 0)).sum()
                                       / np.abs(np.asarray(p) - o).mean(1, keepdims=True).sum()),
                 lambda p, o, m: float((np.asarray(m) == 0).mean()), 0.1])
def solution_3():
    import numpy as np

    def outside_share(protected, original, mask):
        d = np.abs(np.asarray(protected, float) - np.asarray(original, float)).mean(axis=1, keepdims=True)
        outside = (np.asarray(mask) <= 0).astype(float)
        per_image = (d * outside).sum(axis=(1, 2, 3)) / d.sum(axis=(1, 2, 3))
        return float(per_image.mean())

    answer = outside_share
    return answer


@exercise("06.4", kind="predict", title="Why null-text inversion?",
          statement="""
          Guided editing runs the reverse process with classifier-free guidance (scale > 1). Started from a plain
          DDIM inversion, that reverse process drifts away from the photo; MASQUE first optimises the unconditional
          ("null-text") embedding of every step. Which starting point reconstructs the photo almost exactly
          *under guidance*? Answer `"DDIM inversion"`, `"null-text inversion"` or `"both"`.""",
          answer='one of "DDIM inversion", "null-text inversion", "both"',
          check=checks.choice("null-text inversion", ["DDIM inversion", "null-text inversion", "both"]),
          hints=["DDIM inversion assumes the same noise prediction going forward and backward; guidance changes it.",
                 "The optimised null-text embeddings make each guided step land on the inverted trajectory."],
          wrong=["DDIM inversion", "both"])
def solution_4():
    answer = "null-text inversion"
    return answer
