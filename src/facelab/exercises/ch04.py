"""Exercises of chapter 04, *Catching attacks*: ISO PAD metrics, Soft-MoE routing, the disentanglement loss and
upcycling."""

from __future__ import annotations

import numpy as np

from facelab.exercises import checks
from facelab.exercises._core import exercise

_APCER = {"print": 0.10, "replay": 0.30, "mask3d": 0.05}
_BPCER = 0.04


@exercise("04.1", kind="compute", title="ACER the ISO way",
          statement="""
          A detector misclassifies, as bona fide, 10 % of the print attacks, 30 % of the replay attacks and 5 % of the
          3D masks (the APCER of each species), and rejects 4 % of the live faces (BPCER). ISO/IEC 30107-3 summarises
          the attacks by the *worst* species (`facelab.metrics.acer(..., reduce="max")`). What is the ACER?""",
          answer="a fraction between 0 and 1 (e.g. 0.1)",
          check=checks.number((max(_APCER.values()) + _BPCER) / 2, atol=1e-4, example="0.1"),
          hints=["ACER = (APCER + BPCER) / 2, with APCER the worst species' rate.",
                 "(0.30 + 0.04) / 2."],
          wrong=[(np.mean(list(_APCER.values())) + _BPCER) / 2, 0.30 + 0.04, 0.30, (0.05 + 0.04) / 2])
def solution_1():
    apcer = {"print": 0.10, "replay": 0.30, "mask3d": 0.05}
    bpcer = 0.04
    answer = (max(apcer.values()) + bpcer) / 2
    return answer


def _routing(logits):
    import torch

    L = torch.as_tensor(np.asarray(logits, float))
    return L.softmax(dim=0).numpy(), L.softmax(dim=1).numpy()


def _cases_2():
    rng = np.random.default_rng(42)
    return [(rng.normal(size=(m, s)) * 2,) for m, s in [(5, 3), (16, 8), (2, 2), (49, 16)]]


def _same_pair_of_arrays(got, want) -> bool:
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        return False
    for g, w in zip(got, want):
        g = checks.as_array(g)
        if g is None or g.shape != w.shape or not np.allclose(g, w, atol=1e-6):
            return False
    return True


@exercise("04.2", kind="implement", title="Soft-MoE dispatch and combine",
          statement="""
          A Soft MoE layer (`facelab.antispoof.moe.SoftMoE.routing`) turns routing logits `L` of shape
          `(tokens, slots)` into two sets of weights: **dispatch** weights, with which every slot takes a weighted
          average of the tokens (they sum to 1 over the tokens of each slot), and **combine** weights, with which
          every token takes a weighted average of the slot outputs (they sum to 1 over the slots of each token).
          Write `routing(L)` returning `(dispatch, combine)`, both of shape `(tokens, slots)`.""",
          answer="a function routing(L) -> (dispatch, combine)",
          check=checks.function(_routing, _cases_2, compare=_same_pair_of_arrays, signature="routing(L)"),
          hints=["Both are softmaxes of the same logits, over different axes.",
                 "dispatch: softmax over axis 0 (tokens); combine: softmax over axis 1 (slots)."],
          wrong=[lambda L: _routing(L)[::-1], lambda L: (_routing(L)[0], _routing(L)[0]), "softmax"])
def solution_2():
    import numpy as np

    def softmax(x, axis):
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)

    def routing(L):
        L = np.asarray(L, float)
        return softmax(L, axis=0), softmax(L, axis=1)

    answer = routing
    return answer


def _dm(features, labels):
    import torch
    from facelab.antispoof.losses import disentanglement_loss

    return float(disentanglement_loss(torch.as_tensor(np.asarray(features, float)), torch.as_tensor(labels)))


def _cases_3():
    rng = np.random.default_rng(43)
    cases = []
    for n, d, shift in [(10, 4, 1.0), (40, 8, 0.3), (25, 16, 2.0), (8, 3, 0.0)]:
        labels = np.r_[np.ones(n // 2, int), np.zeros(n - n // 2, int)]
        feats = rng.normal(size=(n, d)) * rng.uniform(0.5, 5, size=(n, 1))  # different norms: normalise first
        feats[labels == 1, 0] += shift * 4
        cases.append((feats, labels))
    return cases


def _close_number(got, want) -> bool:
    x = checks.as_number(got)
    return x is not None and abs(x - want) < 1e-5


@exercise("04.3", kind="implement", title="The disentanglement loss",
          statement="""
          FG-MoE-CLIP-CAR pushes the centre of the live features away from the centre of the fake ones. Its
          Disentanglement loss is `1 - ||mu_live - mu_fake|| / 2`, where the centres `mu` are the class means of the
          **L2-normalised** features (label 1 = live, 0 = fake). Write `dm_loss(features, labels)` for a NumPy array
          `(N, D)` and labels `(N,)`, returning a float. The check compares with
          `facelab.antispoof.losses.disentanglement_loss`.""",
          answer="a function dm_loss(features, labels) -> float",
          check=checks.function(_dm, _cases_3, compare=_close_number, signature="dm_loss(features, labels)"),
          hints=["Normalise each feature vector to unit length before taking the class means.",
                 "f = F / ||F||_row; mu1 = f[labels == 1].mean(0); mu0 = f[labels == 0].mean(0)."],
          wrong=[lambda F, y: 1 - np.linalg.norm(np.asarray(F)[y == 1].mean(0) - np.asarray(F)[y == 0].mean(0)) / 2,
                 lambda F, y: 1 - np.linalg.norm(_unit(F)[y == 1].mean(0) - _unit(F)[y == 0].mean(0)),
                 1.0])
def solution_3():
    import numpy as np

    def dm_loss(features, labels):
        f = np.asarray(features, float)
        f = f / np.linalg.norm(f, axis=1, keepdims=True)
        labels = np.asarray(labels)
        mu_live, mu_fake = f[labels == 1].mean(axis=0), f[labels == 0].mean(axis=0)
        return float(1 - np.linalg.norm(mu_live - mu_fake) / 2)

    answer = dm_loss
    return answer


def _unit(F):
    F = np.asarray(F, float)
    return F / np.linalg.norm(F, axis=1, keepdims=True)


@exercise("04.4", kind="predict", title="Which upcycling keeps the pretrained CLIP?",
          statement="""
          Two ways to put a Soft MoE into a pretrained CLIP block: **copy** the dense MLP into every expert
          (`SoftMoE.from_mlp`), or keep the MLP and add the MoE **in parallel behind a zero gate**
          (`ParallelMoE`). Which one computes exactly the pretrained function before training? Answer
          `"copy"`, `"parallel"`, `"both"` or `"neither"`.""",
          answer='one of "copy", "parallel", "both", "neither"',
          check=checks.choice("parallel", ["copy", "parallel", "both", "neither"]),
          hints=["With identical experts, does a token still see its own MLP output, or a mix of slots?",
                 "Slots are weighted averages of tokens and the MLP is nonlinear: MLP(mix) != mix of MLP. A zero gate "
                 "adds exactly 0."],
          wrong=["copy", "both", "neither"])
def solution_4():
    answer = "parallel"  # a zero gate adds exactly nothing; copies see mixtures of tokens (cosine 0.06-0.09 here)
    return answer
