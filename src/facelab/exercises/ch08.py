"""Exercises of chapter 08, *Personalising expression recognition from a neutral video*: PSPI, subject styles,
DSFDA's losses."""

from __future__ import annotations

import numpy as np

from facelab.exercises import checks
from facelab.exercises._core import exercise


def _truth_resting_pspi() -> float:
    from facelab.adaptation.source_free import data as D

    rest = {"AU04": 0.45, "AU07": 0.35}
    return float(D.pspi({a: [rest.get(a, 0.0)] for a in D.PSPI_AUS})[0])


@exercise("08.1", kind="compute", title="The PSPI of a resting frown",
          statement="""
          One target's resting face shows AU04 at 0.45 and AU07 at 0.35 (and nothing else). Compute its PSPI
          (`D.pspi` takes a table or dict of AU columns: AU04, AU06, AU07, AU09, AU10, AU45). Compare it with
          `D.PAIN_THRESHOLD`: how close is this person's *rest* to the source population's *pain*?""",
          answer="the PSPI as a number (e.g. 1.2)",
          check=checks.number(_truth_resting_pspi, atol=1e-6, example="1.2"),
          hints=["PSPI = AU4 + max(AU6, AU7) + max(AU9, AU10) + AU43 (AU45 here).",
                 "Only AU04 and AU07 are non-zero: 0.45 + max(0, 0.35)."],
          wrong=[0.45, 0.35, 1.6, 0.0])
def solution_1():
    from facelab.adaptation.source_free import data as D

    rest = {"AU04": 0.45, "AU07": 0.35}
    answer = float(D.pspi({a: [rest.get(a, 0.0)] for a in D.PSPI_AUS})[0])
    return answer


def _shown(gains, rest, felt):
    from facelab.adaptation.source_free.data import SubjectStyle

    return SubjectStyle(gains=gains, rest=rest).shown(felt)


def _cases_2():
    rng = np.random.default_rng(8)
    names = ["AU04", "AU06", "AU07", "AU12", "AU45"]
    cases = []
    for _ in range(6):
        gains = {a: float(rng.uniform(0.5, 1.0)) for a in names if rng.random() < 0.7}
        rest = {a: float(rng.uniform(0.0, 0.5)) for a in names if rng.random() < 0.4}
        felt = {a: float(rng.uniform(0.0, 1.0)) for a in names if rng.random() < 0.6}
        cases.append((gains, rest, felt))
    cases.append(({"AU04": 1.0}, {"AU04": 0.6}, {"AU04": 0.9}))           # clipped at 1
    return cases


def _same_dict(got, want) -> bool:
    if not isinstance(got, dict):
        return False
    keys = {k for k, v in want.items() if v > 0} | {k for k, v in got.items() if checks.as_number(v) not in (None, 0)}
    return all(abs((checks.as_number(got.get(k, 0.0)) or 0.0) - want.get(k, 0.0)) < 1e-9 for k in keys)


@exercise("08.2", kind="implement", title="What a face shows",
          statement="""
          Write `shown(gains, rest, felt)`: the action units a target's face shows when it feels `felt` (dicts AU ->
          intensity). Each AU is shown at `gain x felt + rest`, clipped to [0, 1]; a missing gain is 1, a missing
          rest or felt intensity 0. Return a dict over every AU in `felt` or `rest`. The check compares with
          `D.SubjectStyle(gains, rest).shown(felt)` on hidden cases.""",
          answer="a function shown(gains, rest, felt) -> dict",
          check=checks.function(_shown, _cases_2, compare=_same_dict, signature="shown(gains, rest, felt)"),
          hints=["Loop over set(felt) | set(rest).",
                 "min(1, max(0, gains.get(a, 1.0) * felt.get(a, 0.0) + rest.get(a, 0.0)))."],
          wrong=[lambda g, r, f: dict(f), lambda g, r, f: {a: g.get(a, 1.0) * f.get(a, 0.0) for a in f}, 0.5])
def solution_2():
    def shown(gains, rest, felt):
        return {a: min(1.0, max(0.0, gains.get(a, 1.0) * felt.get(a, 0.0) + rest.get(a, 0.0)))
                for a in set(felt) | set(rest)}

    answer = shown
    return answer


@exercise("08.3", kind="predict", title="Which loss swaps back?",
          statement="""
          Of DSFDA's generator losses, which one requires that generating from the generated face (as identity) and
          the original face (as expression) gives the original face back, `G(G(x_f, x_e), x_f) = x_f`? Options:
          `"identity adversarial"`, `"expression"`, `"perceptual"`, `"dual consistency"`. Then: which weight does
          the paper give it (`M.LOSS_WEIGHTS`)? Answer with the option only.""",
          answer='one of the options, e.g. "perceptual"',
          check=checks.choice("dual consistency", options=["identity adversarial", "expression", "perceptual",
                                                           "dual consistency"]),
          hints=["It is an L1 between an image and its reconstruction after two swaps.",
                 "It comes in two halves, weighted 5 + 5."],
          wrong=["perceptual", "identity adversarial", "expression"])
def solution_3():
    answer = "dual consistency"
    return answer
