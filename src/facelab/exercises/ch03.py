"""Exercises of chapter 03, *Recognition under occlusion*: the proximal steps of ADMM, the Wing loss, RSC's
weights and the class-wise residual rule."""

from __future__ import annotations

import math

import numpy as np

from facelab.exercises import checks
from facelab.exercises._core import exercise


def _soft(x, t):
    import torch
    from facelab.sparse.solvers import soft_threshold

    return soft_threshold(torch.as_tensor(np.asarray(x, float)), t).numpy()


def _cases_1():
    rng = np.random.default_rng(31)
    return [(rng.normal(size=12), 0.5), (rng.normal(size=(5, 4)) * 3, 1.0), (np.array([-1.0, -0.2, 0.0, 0.2, 1.0]), 0.2),
            (rng.normal(size=30), 0.0)]


@exercise("03.1", kind="implement", title="Soft thresholding, the l1 step of every solver",
          statement="""
          Each ADMM iteration of SRC, RSC and WWCSC shrinks the code with the proximal operator of
          `t * |x|` (elementwise): values within `[-t, t]` become 0 and the others move towards 0 by `t`. Write
          `soft(x, t)` for NumPy arrays of any shape. The check compares with `facelab.sparse.solvers.soft_threshold`
          on hidden arrays.""",
          answer="a function soft(x, t) -> array of the same shape",
          check=checks.function(_soft, _cases_1, signature="soft(x, t)"),
          hints=["Keep the sign, shrink the magnitude: sign(x) * max(|x| - t, 0).",
                 "np.sign(x) * np.maximum(np.abs(x) - t, 0)"],
          wrong=[lambda x, t: np.maximum(np.asarray(x) - t, 0), lambda x, t: np.where(np.abs(x) > t, x, 0.0), 0.5])
def solution_1():
    import numpy as np

    def soft(x, t):
        x = np.asarray(x, float)
        return np.sign(x) * np.maximum(np.abs(x) - t, 0.0)

    answer = soft
    return answer


def _wing_constant() -> float:
    w, eps = 1.0, 0.5
    return w - w * math.log1p(w / eps)


@exercise("03.2", kind="compute", title="Where the Wing loss turns linear",
          statement="""
          `facelab.sparse.solvers.wing_loss(x, w, epsilon)` is `w ln(1 + |x|/epsilon)` for `|x| < w` and `|x| - C`
          beyond, with the constant `C` chosen so that the two pieces meet at `|x| = w`. For the chapter's
          `w = 1`, `epsilon = 0.5`, what is `C`?""",
          answer="a number (the constant C)",
          check=checks.number(_wing_constant, atol=1e-3, example="0.5"),
          hints=["Continuity at |x| = w: w ln(1 + w/epsilon) = w - C.",
                 "C = w - w ln(1 + w/epsilon) = 1 - ln 3."],
          wrong=[math.log(3), 1.0, 1 - math.log(2), 0.0])
def solution_2():
    import math

    w, epsilon = 1.0, 0.5
    answer = w - w * math.log(1 + w / epsilon)
    return answer


@exercise("03.3", kind="predict", title="RSC's weight of a typical pixel",
          statement="""
          RSC reweights pixels with `facelab.sparse.solvers.logistic_weights`:
          `v = 1 / (1 + exp(beta (r^2 - delta)))`, where `delta` is the `tau`-quantile of the probe's squared
          residuals. Without computing anything: what weight does a pixel get whose squared residual equals `delta`
          exactly?""",
          answer="a number between 0 and 1",
          check=checks.number(0.5, atol=1e-3, example="0.9"),
          hints=["Put r^2 = delta into the formula: what is exp(0)?", "1 / (1 + 1)."],
          wrong=[1.0, 0.0, 0.8, 0.7])
def solution_3():
    import torch
    from facelab.sparse.solvers import logistic_weights

    residual = torch.linspace(-1, 1, 1001).reshape(-1, 1)  # one probe, 1001 pixels
    delta = torch.quantile(residual ** 2, 0.8)
    weights = logistic_weights(residual, tau=0.8)
    at_delta = weights[(residual ** 2 - delta).abs().argmin()]
    answer = float(at_delta)  # 0.5: the logistic is centred on delta
    return answer


def _residual_rule(D, atom_class, code, y):
    D, atom_class, code, y = (np.asarray(a) for a in (D, atom_class, code, y))
    classes = np.unique(atom_class)
    res = [np.linalg.norm(y - D[:, atom_class == c] @ code[atom_class == c]) for c in classes]
    return classes[int(np.argmin(res))]


def _cases_4():
    rng = np.random.default_rng(34)
    cases = []
    for m, n_classes, per in [(20, 3, 2), (50, 5, 3), (30, 4, 4), (40, 6, 2), (25, 3, 5)]:
        D = rng.normal(size=(m, n_classes * per))
        atom_class = np.repeat(np.arange(n_classes) * 10, per)  # class labels need not be 0..C-1
        true = rng.integers(n_classes)
        code = rng.normal(scale=0.2, size=n_classes * per)
        code[atom_class == true * 10] += rng.normal(size=per)
        decoy = rng.choice(np.flatnonzero(atom_class != true * 10))
        code[decoy] = 3.0  # the largest coefficient sits in a wrong class: the rule must compare residuals
        y = D[:, atom_class == true * 10] @ code[atom_class == true * 10] + 0.05 * rng.normal(size=m)
        cases.append((D, atom_class, code, y))
    return cases


def _same_label(got, want) -> bool:
    try:
        return got == want or (checks.as_number(got) is not None and checks.as_number(got) == float(want))
    except Exception:
        return False


@exercise("03.4", kind="implement", title="The class-wise residual rule",
          statement="""
          SRC codes a probe `y` with the whole gallery `D` (one atom per column, `atom_class[j]` the identity of
          atom `j`) and decides for the identity whose atoms alone reconstruct `y` best. Write
          `decide(D, atom_class, code, y)` that returns the identity `c` minimising `||y - D_c code_c||`, where
          `D_c` and `code_c` keep only the atoms of identity `c`. Identities are arbitrary labels (not 0..C-1).""",
          answer="a function decide(D, atom_class, code, y) -> an identity label",
          check=checks.function(_residual_rule, _cases_4, compare=_same_label,
                                signature="decide(D, atom_class, code, y)"),
          hints=["Loop over np.unique(atom_class); keep the atoms of one identity with a boolean mask.",
                 "The largest code coefficient is not the rule: compare the norms of y - D[:, m] @ code[m]."],
          wrong=[lambda D, a, c, y: np.asarray(a)[int(np.argmax(np.abs(c)))],
                 lambda D, a, c, y: int(np.argmin([np.linalg.norm(y - np.asarray(D)[:, np.asarray(a) == k]
                                                                  @ np.asarray(c)[np.asarray(a) == k])
                                                   for k in np.unique(a)])),
                 [1, 2]])
def solution_4():
    import numpy as np

    def decide(D, atom_class, code, y):
        classes = np.unique(atom_class)
        residuals = [np.linalg.norm(y - D[:, atom_class == c] @ code[atom_class == c]) for c in classes]
        return classes[int(np.argmin(residuals))]

    answer = decide
    return answer
