"""Exercises of chapter 01, *Face recognition, end to end*: the score convention, pairs, identification ranks."""

from __future__ import annotations

import numpy as np

from facelab.exercises import checks
from facelab.exercises._core import exercise


@exercise("01.1", kind="predict", title="Distances become similarities",
          statement="""
          dlib's network publishes a *distance* threshold: two faces are the same person when the L2 distance of
          their embeddings is below 0.6. The book turns every comparison into a *similarity* (higher = more alike)
          once, in `facelab.core.scores`. Two faces are at L2 distance 0.58. What is their similarity in the book's
          convention (the number you would compare with `dlib_net.threshold`)?""",
          answer="a number (the similarity of the pair)",
          check=checks.number(-0.58, atol=1e-6, example="-0.3"),
          hints=["The book's similarity for a distance is minus the distance; the threshold -0.6 comes from 0.6.",
                 "similarity = -0.58, which is above -0.6: the pair is accepted."],
          wrong=[0.58, 0.02, -0.02, 1 / 0.58])
def solution_1():
    distance = 0.58
    answer = -distance  # the same unit as scores.DLIB_THRESHOLD (-0.6): accepted, since -0.58 >= -0.6
    return answer


def _impostor_pairs() -> int:
    from facelab.core.scores import genuine_impostor_pairs

    labels = np.repeat(np.arange(14), 4)  # the chapter's quick test set: 14 identities x 4 images
    pairs, genuine = genuine_impostor_pairs(labels)
    return int((~np.asarray(genuine, bool)).sum())


@exercise("01.2", kind="compute", title="How many impostor pairs?",
          statement="""
          The chapter's synthetic test set (quick profile) has 14 identities with 4 images each, and the verification
          benchmark compares every unordered pair of different images. How many of those pairs are *impostor* pairs
          (two different people)?""",
          answer="a whole number (a count of pairs)",
          check=checks.number(_impostor_pairs, atol=0.5, example="100"),
          hints=["Count all unordered pairs of the 56 images, then remove the pairs of the same person.",
                 "C(56, 2) - 14 * C(4, 2)."],
          wrong=[84, 1540, 3080, 2912])
def solution_2():
    from math import comb

    n_ids, per_id = 14, 4
    all_pairs = comb(n_ids * per_id, 2)
    genuine = n_ids * comb(per_id, 2)
    answer = all_pairs - genuine
    return answer


def _rank_k(scores, probe_labels, gallery_labels, k):
    from facelab import metrics

    return metrics.rank_k_accuracy(scores, probe_labels, gallery_labels, k)


def _cases_3():
    rng = np.random.default_rng(11)
    cases = []
    for n_probe, n_ids, per_id, k in [(6, 4, 1, 1), (20, 6, 3, 1), (30, 8, 2, 3), (15, 5, 4, 2), (40, 10, 3, 5)]:
        gallery = np.repeat(np.arange(n_ids), per_id)
        probes = rng.integers(0, n_ids, n_probe)
        S = rng.normal(size=(n_probe, len(gallery))) + 1.5 * (probes[:, None] == gallery[None, :])
        cases.append((S, probes, gallery, k))
    return cases


def _same_rate(got, want) -> bool:
    x = checks.as_number(got)
    return x is not None and abs(x - want) < 1e-9


@exercise("01.3", kind="implement", title="Rank-k identification",
          statement="""
          Write `rank_k(S, probe_ids, gallery_ids, k)`: `S[i, j]` is the similarity of probe `i` to gallery image
          `j`; the gallery may hold several images per identity. Return the share of probes whose true identity is
          among the `k` best *identities* (rank identities by their best image). Every probe's identity is
          enrolled. The check compares with `facelab.metrics.rank_k_accuracy` on hidden galleries.""",
          answer="a function rank_k(S, probe_ids, gallery_ids, k) -> float",
          check=checks.function(_rank_k, _cases_3, compare=_same_rate, signature="rank_k(S, probe_ids, gallery_ids, k)"),
          hints=["With several images per identity, ranking gallery *images* counts one person several times.",
                 "Reduce S to one column per identity (the max over its images), then rank the identities."],
          wrong=[lambda S, p, g, k: float(np.mean([p[i] in g[np.argsort(-S[i])[:k]] for i in range(len(p))])),
                 lambda S, p, g, k: float(np.mean(g[np.argmax(S, 1)] == p)),
                 "rank_k"])
def solution_3():
    import numpy as np

    def rank_k(S, probe_ids, gallery_ids, k):
        S, probe_ids, gallery_ids = np.asarray(S), np.asarray(probe_ids), np.asarray(gallery_ids)
        ids = np.unique(gallery_ids)
        best = np.stack([S[:, gallery_ids == c].max(axis=1) for c in ids], axis=1)  # (probes, identities)
        own = best[np.arange(len(probe_ids)), np.searchsorted(ids, probe_ids)]
        rank = 1 + (best > own[:, None]).sum(axis=1)
        return float(np.mean(rank <= k))

    answer = rank_k
    return answer


@exercise("01.4", kind="predict", title="A stricter threshold",
          statement="""
          You move dlib's similarity threshold from the published -0.6 to -0.5 (stricter: a pair must be closer to
          be accepted). Which error rate can only stay the same or go **up**: `"FAR"`, `"FRR"`, `"both"` or
          `"neither"`?""",
          answer='one of "FAR", "FRR", "both", "neither"',
          check=checks.choice("FRR", ["FAR", "FRR", "both", "neither"]),
          hints=["A stricter threshold accepts fewer pairs, genuine and impostor alike.",
                 "Fewer accepted impostors: FAR cannot rise. Fewer accepted genuine pairs: FRR cannot fall."],
          wrong=["FAR", "both", "neither"])
def solution_4():
    answer = "FRR"  # fewer pairs are accepted: fewer false accepts, more false rejects
    return answer
