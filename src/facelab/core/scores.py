"""The score convention of the whole book, and genuine/impostor pairs.

One convention
--------------
Everything that compares two faces returns a **similarity**: higher means more alike. Its threshold is in the same
unit and a pair is accepted ("same person") when ``similarity >= threshold``; :mod:`facelab.metrics` takes these
scores as they are (no sign flips anywhere).

* Euclidean embedders (dlib's ResNet): similarity = **minus** the L2 distance. dlib publishes "same person when the
  distance is below 0.6"; that threshold is converted once, here (:data:`DLIB_THRESHOLD` = -0.6).
* Cosine embedders (SFace, the synthetic recognisers, face-api's descriptor compared by cosine): similarity = cosine
  of the two embeddings; SFace's published threshold 0.363 is already a cosine similarity (:data:`SFACE_THRESHOLD`).

(dlib's "distance < 0.6" and the convention's "similarity >= -0.6" differ only for a distance of exactly 0.6.)

Functions
---------
:func:`similarity_matrix` (N, M), :func:`paired_similarity` (N,), :func:`similarity_threshold` (an embedder's
threshold as a similarity), :func:`genuine_impostor_pairs` and :func:`pair_similarities` (labelled pairs of a set).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["METRICS", "DLIB_DISTANCE_THRESHOLD", "DLIB_THRESHOLD", "SFACE_THRESHOLD", "similarity_from_distance",
           "similarity_threshold", "similarity_matrix", "paired_similarity", "genuine_impostor_pairs",
           "pair_similarities"]

METRICS = ("euclidean", "cosine")
#: dlib's published same-person threshold, as the L2 distance it is published as.
DLIB_DISTANCE_THRESHOLD = 0.6
#: the same threshold in the book's unit (similarity = -distance).
DLIB_THRESHOLD = -DLIB_DISTANCE_THRESHOLD
#: SFace's published threshold (OpenCV's FaceRecognizerSF, cosine similarity).
SFACE_THRESHOLD = 0.363


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
    return metric


def similarity_from_distance(distance, metric: str = "euclidean"):
    """A distance in ``metric`` turned into the book's similarity: ``-d`` (euclidean) or ``1 - d`` (cosine distance
    -> cosine similarity). For numbers, arrays and tensors alike. Use it where a distance is *defined*, never in a
    notebook."""
    return -distance if _check_metric(metric) == "euclidean" else 1.0 - distance


def similarity_threshold(embedder) -> float:
    """The same-person threshold of an embedder (or anything with ``threshold``) as a similarity.

    Embedders carry ``threshold`` in the similarity unit already (:class:`facelab.models.Embedder`); this returns it
    as a float and refuses an object without one."""
    t = getattr(embedder, "threshold", None)
    if t is None:
        raise AttributeError(f"{type(embedder).__name__} has no threshold")
    return float(t)


def _as_tensor(x) -> torch.Tensor:
    if torch.is_tensor(x):
        return x if x.is_floating_point() else x.float()
    return torch.as_tensor(np.asarray(x), dtype=torch.float32)


def similarity_matrix(a, b=None, metric: str = "euclidean") -> torch.Tensor:
    """(N, M) similarities between embeddings ``a`` (N, D) and ``b`` (M, D) (default ``a``): minus the L2 distance
    (``sqrt(|a|^2 + |b|^2 - 2 a.b)``, one matrix product) or the cosine similarity."""
    a = _as_tensor(a)
    b = a if b is None else _as_tensor(b).to(a.device)
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"expected embeddings (N, D) and (M, D), got {tuple(a.shape)} and {tuple(b.shape)}")
    if _check_metric(metric) == "cosine":
        return F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return -sq.clamp_min(0.0).sqrt()


def paired_similarity(a, b, metric: str = "euclidean") -> torch.Tensor:
    """(N,) similarities between row i of ``a`` and row i of ``b`` (differentiable)."""
    a, b = _as_tensor(a), _as_tensor(b)
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"expected two embedding batches of the same shape (N, D), got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if _check_metric(metric) == "euclidean":
        return -(a - b).norm(dim=1)
    return F.cosine_similarity(a, b, dim=1)


def genuine_impostor_pairs(labels, *, max_impostors: int | None = None, seed: int | np.random.Generator = 0
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j), i < j, of a labelled set and whether each is genuine (same label).

    Parameters
    ----------
    labels : sequence (N,)
        Identity of every item; at least two items of one identity and two identities.
    max_impostors : int, optional
        Keep every genuine pair and at most this many impostor pairs, drawn without replacement (default: all).
    seed : int or numpy Generator
        For the impostor draw.

    Returns
    -------
    pairs : int array (P, 2)
        In row-major (i, j) order, genuine and impostor pairs interleaved as they come.
    genuine : bool array (P,)
    """
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    if len(y) < 2:
        raise ValueError(f"need at least two samples to form pairs, got {len(y)}")
    i, j = np.triu_indices(len(y), k=1)
    same = y[i] == y[j]
    if not same.any() or same.all():
        raise ValueError("the labelled set must hold at least two samples of one identity and two identities")
    if max_impostors is not None and (~same).sum() > max_impostors:
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        imp = np.nonzero(~same)[0]
        keep = np.sort(np.r_[np.nonzero(same)[0], rng.choice(imp, size=int(max_impostors), replace=False)])
        i, j, same = i[keep], j[keep], same[keep]
    return np.stack([i, j], 1).astype(np.int64), same


def pair_similarities(embeddings, pairs, metric: str = "euclidean") -> np.ndarray:
    """Similarities (P,) of the index ``pairs`` (P, 2) of ``embeddings`` (N, D), as float64 numpy."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    e = _as_tensor(embeddings)
    with torch.no_grad():
        s = paired_similarity(e[pairs[:, 0]], e[pairs[:, 1]], metric)
    return s.detach().cpu().numpy().astype(np.float64)
