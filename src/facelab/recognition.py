"""Face verification (1:1) and identification (1:N) on top of face embeddings: the public recognition API.

* :func:`verify` compares embeddings pairwise: ``same = similarity(a, b) >= threshold``.
* :class:`Gallery` enrols labelled embeddings and answers top-k identification queries with an open-set reject
  option. The search is a batched matrix product in PyTorch (any device), chunked over probes so that memory stays
  bounded; FAISS (``IndexFlatIP`` / ``IndexFlatL2``) is used when asked for and installed, never required.
* :class:`FaceRecognizer` composes detection, alignment and an embedder: image in, faces and embeddings out.
* :func:`similarities`, :func:`paired_similarities` (and the distances they come from), :func:`aligned_chips`,
  :func:`embed_aligned`: embedding helpers. Genuine/impostor pairs: :func:`facelab.core.scores.genuine_impostor_pairs`.

Chapter 01's protocol (labelled real photos, the method comparison, its figures) is
:mod:`facelab.studies.face_recognition`.

Scores
------
Everything here returns **similarities** (higher = more alike; :mod:`facelab.core.scores`) and takes thresholds in
the same unit: ``"euclidean"``: :math:`s(a, b) = -\\lVert a - b \\rVert_2` (dlib: same person when
:math:`s \\ge -0.6`, i.e. the published distance 0.6); ``"cosine"``: :math:`s(a, b) = \\frac{a^\\top b}{\\lVert a\\rVert
\\lVert b\\rVert}` (SFace: same person when :math:`s \\ge 0.363`). The metric is still named ``distance`` where an
argument chooses it (``verify(..., distance="cosine")``, ``Embedder.distance``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Iterable, Sequence

import numpy as np
import torch

from facelab.core.scores import DLIB_THRESHOLD, genuine_impostor_pairs, similarity_matrix

__all__ = [
    "METRICS",
    "FAISS_AUTO_MIN",
    "GalleryError",
    "EmptyGalleryError",
    "DuplicateEnrolmentError",
    "NoFaceError",
    "as_embeddings",
    "similarities",
    "paired_similarities",
    "pairwise_distances",
    "paired_distances",
    "verify",
    "Identification",
    "Gallery",
    "FaceRecognizer",
    "pair_indices",
    "pair_scores",
    "aligned_chips",
    "embed_aligned",
]

METRICS = ("euclidean", "cosine")
#: Gallery size from which ``Gallery(backend="auto")`` uses FAISS (when installed) on the CPU.
FAISS_AUTO_MIN = 2_000_000


class GalleryError(ValueError):
    """Bad use of a :class:`Gallery` (wrong embedding size, unknown label, ...)."""


class EmptyGalleryError(GalleryError):
    """Identification was asked of a gallery with nobody enrolled."""


class DuplicateEnrolmentError(GalleryError):
    """A label that is already enrolled was enrolled again under ``duplicates="error"``."""


class NoFaceError(ValueError):
    """An image given for verification or enrolment holds no detectable face."""


# --------------------------------------------------------------------------------------------- embeddings
def as_embeddings(x, name: str = "embeddings", device: torch.device | str | None = None) -> torch.Tensor:
    """Validate and convert embeddings to a float32 ``(n, d)`` tensor (a single ``(d,)`` vector becomes ``(1, d)``)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(x, dtype=np.float32))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} must be a numeric array of shape (n, d), got {type(x).__name__}") from err
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2:
        raise ValueError(f"{name} must have shape (n, d) or (d,), got shape {tuple(t.shape)}")
    if t.shape[1] == 0:
        raise ValueError(f"{name} have dimension 0; expected d >= 1")
    t = t.to(dtype=torch.float32, device=device if device is not None else t.device)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contain NaN or inf values")
    return t


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"distance must be one of {METRICS}, got {metric!r}")
    return metric


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _to_distance(s: torch.Tensor, metric: str) -> torch.Tensor:
    """The distance a similarity came from: ``-s`` (L2) or ``1 - s`` (cosine distance)."""
    return -s if metric == "euclidean" else 1.0 - s


def similarities(a, b, distance: str = "euclidean") -> torch.Tensor:
    """All similarities between the rows of ``a`` (n, d) and ``b`` (m, d): an ``(n, m)`` tensor (``-L2`` or cosine)."""
    _check_metric(distance)
    a, b = as_embeddings(a, "a"), as_embeddings(b, "b", device=None)
    b = b.to(a.device)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding sizes differ: a has d={a.shape[1]}, b has d={b.shape[1]}")
    return similarity_matrix(a, b, distance)


def pairwise_distances(a, b, distance: str = "euclidean") -> torch.Tensor:
    """All distances (L2, or cosine distance ``1 - cos``) between the rows of ``a`` and ``b``: ``(n, m)``."""
    return _to_distance(similarities(a, b, distance), distance)


def paired_similarities(a, b, distance: str = "euclidean") -> torch.Tensor:
    """Similarities of matching rows ``a[i]``, ``b[i]`` (both ``(n, d)``, or one of them a single vector)."""
    _check_metric(distance)
    a, b = as_embeddings(a, "emb_a"), as_embeddings(b, "emb_b")
    b = b.to(a.device)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding sizes differ: emb_a has d={a.shape[1]}, emb_b has d={b.shape[1]}")
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise ValueError(f"emb_a and emb_b must have the same number of rows (or one row), got {a.shape[0]} and {b.shape[0]}")
    if distance == "cosine":
        return (_normalize(a) * _normalize(b)).sum(1)
    return -(a - b).norm(dim=1)


def paired_distances(a, b, distance: str = "euclidean") -> torch.Tensor:
    """Distances of matching rows ``a[i]``, ``b[i]`` (L2, or cosine distance ``1 - cos``)."""
    return _to_distance(paired_similarities(a, b, distance), distance)


def verify(emb_a, emb_b, distance: str = "euclidean", threshold: float = DLIB_THRESHOLD
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """1:1 verification: is ``emb_a[i]`` the same person as ``emb_b[i]``?

    Parameters
    ----------
    emb_a, emb_b : array-like or Tensor, shape (n, d) or (d,)
    distance : {"euclidean", "cosine"}
        The metric: similarity ``-L2`` or the cosine similarity.
    threshold : float
        A similarity: pairs with ``similarity >= threshold`` are declared the same person (dlib: -0.6, the
        default, i.e. L2 distance <= 0.6; SFace: 0.363 cosine). ``embedder.threshold`` is in this unit.

    Returns
    -------
    same : BoolTensor, shape (n,)
    similarities : Tensor, shape (n,)

    Examples
    --------
    >>> same, s = verify([0.0, 0.0], [[0.3, 0.4], [3.0, 4.0]], threshold=-0.6)
    >>> same.tolist(), s.tolist()
    ([True, False], [-0.5, -5.0])
    """
    s = paired_similarities(emb_a, emb_b, distance)
    return s >= float(threshold), s


# --------------------------------------------------------------------------------------------- gallery
def _same_label(a, b) -> bool:
    """``a == b`` for labels of any type (False where the comparison is not a plain truth value)."""
    if b is None:
        return a is None
    try:
        return bool(a == b)
    except (TypeError, ValueError):
        return False


@dataclass
class Identification:
    """Result of :meth:`Gallery.identify` for ``n`` probes.

    Attributes
    ----------
    labels : ndarray of object, shape (n, k)
        The ``k`` most similar enrolled identities of each probe, best first (distinct identities).
    scores : Tensor, shape (n, k)
        Their similarities (the best template of each identity): minus the L2 distance, or the cosine.
    accepted : BoolTensor, shape (n,)
        Whether the best match reaches the open-set threshold (all True without a threshold).
    unknown : Any
        The label :attr:`predicted` uses for rejected probes.
    """

    labels: np.ndarray
    scores: torch.Tensor
    accepted: torch.Tensor
    metric: str
    unknown: Any = None

    @property
    def predicted(self) -> np.ndarray:
        """Rank-1 label per probe, or :attr:`unknown` where the open-set threshold rejected it."""
        out = self.labels[:, 0].copy() if self.labels.shape[1] else np.full(len(self.labels), self.unknown, object)
        out[~self.accepted.cpu().numpy()] = self.unknown
        return out

    @property
    def distances(self) -> torch.Tensor:
        """The distances the scores come from (L2, or cosine distance ``1 - cos``)."""
        return _to_distance(self.scores, self.metric)

    def to_frame(self):
        """A pandas DataFrame: one row per probe with ``rank1..rankk``, similarities ``s1..sk``, ``predicted``,
        ``accepted``."""
        import pandas as pd

        k = self.labels.shape[1]
        data = {f"rank{j + 1}": self.labels[:, j] for j in range(k)}
        s = self.scores.cpu().numpy()
        data.update({f"s{j + 1}": s[:, j] for j in range(k)})
        data["predicted"] = self.predicted
        data["accepted"] = self.accepted.cpu().numpy()
        return pd.DataFrame(data)


class Gallery:
    """An enrolment database of labelled face embeddings with batched top-k search.

    Parameters
    ----------
    metric : {"euclidean", "cosine"}
        How embeddings are compared; search ranks by similarity (minus the L2 distance, or the cosine).
    threshold : float, optional
        Open-set threshold **as a similarity** (:mod:`facelab.core.scores`): a probe whose best similarity is below
        it is rejected as *unknown* (e.g. -0.6 for dlib's L2 distance 0.6, 0.363 for SFace).
    duplicates : {"error", "append", "replace"}
        What enrolling an already-enrolled label does: raise :class:`DuplicateEnrolmentError`, add the new
        embeddings as extra templates of that identity, or replace its templates. Several embeddings with one label in
        a single :meth:`enroll` call are always templates of the same identity.
    device : str or torch.device
        Where the templates live and the search runs (``"cpu"``, ``"cuda"``, ...).
    backend : {"torch", "faiss", "auto"}
        ``"faiss"`` uses an exact FAISS flat index on the CPU (an error if FAISS is not installed); ``"auto"`` uses
        FAISS when it is installed, the device is the CPU and the gallery holds at least :data:`FAISS_AUTO_MIN`
        templates, otherwise torch (faster than a flat FAISS index at 100k templates on our CPU).
    chunk_elements : int
        Upper bound on the number of entries of one probe-by-gallery score block (memory ~ 4 bytes each).
    unknown : Any
        Label returned for rejected probes.

    Examples
    --------
    >>> g = Gallery(metric="euclidean", threshold=-0.6)
    >>> g.enroll([[0.0, 0.0], [1.0, 0.0]], ["ada", "bob"])
    >>> g.identify([[0.1, 0.0], [5.0, 5.0]], k=1).predicted.tolist()
    ['ada', None]
    """

    def __init__(self, metric: str = "euclidean", threshold: float | None = None, duplicates: str = "error",
                 device: str | torch.device = "cpu", backend: str = "torch", chunk_elements: int = 2**24,
                 unknown: Any = None):
        self.metric = _check_metric(metric)
        if duplicates not in ("error", "append", "replace"):
            raise ValueError(f"duplicates must be 'error', 'append' or 'replace', got {duplicates!r}")
        if backend not in ("torch", "faiss", "auto"):
            raise ValueError(f"backend must be 'torch', 'faiss' or 'auto', got {backend!r}")
        if int(chunk_elements) < 1:
            raise ValueError(f"chunk_elements must be positive, got {chunk_elements!r}")
        self.threshold = None if threshold is None else float(threshold)
        self.duplicates = duplicates
        self.device = torch.device(device)
        self.backend = backend
        self.chunk_elements = int(chunk_elements)
        self.unknown = unknown
        self._emb: torch.Tensor | None = None   # (N, d) templates (unit norm for cosine)
        self._ids = torch.empty(0, dtype=torch.long)  # (N,) index into self._labels
        self._labels: list[Hashable] = []
        self._index: dict[Hashable, int] = {}
        self._faiss = None
        self._sqnorm: torch.Tensor | None = None

    # -------------------------------------------------------------------------------- bookkeeping
    def __len__(self) -> int:
        """Number of enrolled identities."""
        return len(self._index)

    @property
    def n_templates(self) -> int:
        return 0 if self._emb is None else int(self._emb.shape[0])

    @property
    def embedding_size(self) -> int | None:
        return None if self._emb is None else int(self._emb.shape[1])

    @property
    def labels(self) -> list:
        """Enrolled identities, in enrolment order."""
        return list(self._index)

    def __contains__(self, label) -> bool:
        return label in self._index

    def __repr__(self) -> str:
        return (f"Gallery(metric={self.metric!r}, identities={len(self)}, templates={self.n_templates}, "
                f"d={self.embedding_size}, threshold={self.threshold}, device={str(self.device)!r})")

    def _prepare(self, emb, name: str) -> torch.Tensor:
        t = as_embeddings(emb, name, device=self.device)
        if self._emb is not None and t.shape[1] != self._emb.shape[1]:
            raise GalleryError(
                f"{name} have size {t.shape[1]} but the gallery holds {self._emb.shape[1]}-d embeddings "
                "(embeddings from different models cannot be compared)"
            )
        return _normalize(t) if self.metric == "cosine" else t

    def _rebuild_ids(self, keep: torch.Tensor | None = None) -> None:
        """Drop templates not in ``keep`` and renumber identities in enrolment order."""
        if keep is not None:
            self._emb, self._ids = self._emb[keep], self._ids[keep.cpu()]
        present = sorted(set(self._ids.tolist()))
        remap = {old: new for new, old in enumerate(present)}
        self._labels = [self._labels[i] for i in present]
        self._index = {lab: i for i, lab in enumerate(self._labels)}
        self._ids = torch.tensor([remap[i] for i in self._ids.tolist()], dtype=torch.long)
        if self._emb is not None and self._emb.shape[0] == 0:
            self._emb = None
        self._faiss, self._sqnorm = None, None

    # -------------------------------------------------------------------------------- enrol / remove
    def enroll(self, embeddings, labels: Sequence[Hashable] | Hashable) -> None:
        """Enrol embeddings (n, d) with one label each (a single label is allowed for a single embedding).

        Raises
        ------
        DuplicateEnrolmentError
            Under ``duplicates="error"`` when a label is already enrolled.
        GalleryError
            When the embedding size differs from the enrolled ones or labels do not match the rows.
        """
        emb = self._prepare(embeddings, "embeddings")
        if isinstance(labels, (str, bytes)) or not isinstance(labels, Iterable):
            labels = [labels]
        labels = list(labels.tolist() if hasattr(labels, "tolist") else labels)
        if len(labels) != emb.shape[0]:
            raise GalleryError(f"got {emb.shape[0]} embeddings but {len(labels)} labels; expected one label per row")
        reserved = [j for j, lab in enumerate(labels) if lab is None or _same_label(lab, self.unknown)]
        if reserved:
            raise GalleryError(f"label {labels[reserved[0]]!r} (row {reserved[0]}) is reserved: identify() predicts "
                               f"Gallery.unknown = {self.unknown!r} for rejected probes, and None is never a label; "
                               "give every enrolled row a real identity label")
        if emb.shape[0] == 0:
            return
        already = [lab for lab in dict.fromkeys(labels) if lab in self._index]
        if already and self.duplicates == "error":
            shown = ", ".join(map(repr, already[:5])) + (" ..." if len(already) > 5 else "")
            raise DuplicateEnrolmentError(
                f"already enrolled: {shown}. Use Gallery(duplicates='append') to add templates, "
                "duplicates='replace' to overwrite, or remove(label) first."
            )
        if already and self.duplicates == "replace":
            for lab in already:
                self.remove(lab)
        new_ids = []
        for lab in labels:
            if lab not in self._index:
                self._index[lab] = len(self._labels)
                self._labels.append(lab)
            new_ids.append(self._index[lab])
        self._emb = emb if self._emb is None else torch.cat([self._emb, emb], 0)
        self._ids = torch.cat([self._ids, torch.tensor(new_ids, dtype=torch.long)])
        self._faiss, self._sqnorm = None, None

    def remove(self, label: Hashable) -> int:
        """Remove an identity and all its templates; returns how many templates were removed."""
        if label not in self._index:
            raise KeyError(f"{label!r} is not enrolled (enrolled: {len(self)} identities)")
        keep = self._ids != self._index[label]
        n = int((~keep).sum())
        self._rebuild_ids(keep.to(self._emb.device))
        return n

    # -------------------------------------------------------------------------------- search
    def _use_faiss(self) -> bool:
        if self.backend == "torch":
            return False
        try:
            import faiss  # noqa: F401
        except ImportError:
            if self.backend == "faiss":
                raise ImportError("Gallery(backend='faiss') needs the optional package faiss-cpu "
                                  "(pip install faiss-cpu); backend='torch' needs nothing extra") from None
            return False
        # measured on a 2-core CPU (benchmarks/bench_gallery.py): torch's blocked matmul beat IndexFlat* by ~6x at
        # 100k x 128, so "auto" only hands very large CPU galleries to FAISS
        return self.backend == "faiss" or (self.device.type == "cpu" and self.n_templates >= FAISS_AUTO_MIN)

    def _faiss_search(self, probes: torch.Tensor, kk: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-``kk`` templates per probe: (similarities, template indices), best first."""
        import faiss

        if self._faiss is None:
            base = np.ascontiguousarray(self._emb.cpu().numpy())
            index = faiss.IndexFlatIP(base.shape[1]) if self.metric == "cosine" else faiss.IndexFlatL2(base.shape[1])
            index.add(base)
            self._faiss = index
        S, I = self._faiss.search(np.ascontiguousarray(probes.cpu().numpy()), kk)
        S, I = torch.from_numpy(S), torch.from_numpy(I)
        if self.metric == "euclidean":
            S = -S.clamp_min(0).sqrt()  # IndexFlatL2 returns squared distances
        return S.to(self.device), I.to(self.device)

    def _score_block(self, probes: torch.Tensor) -> torch.Tensor:
        """Cosine similarities, or *minus the squared* L2 distances (the caller takes the root of the winners)."""
        if self.metric == "cosine":
            return probes @ self._emb.T
        if self._sqnorm is None or self._sqnorm.shape[0] != self._emb.shape[0]:
            self._sqnorm = (self._emb * self._emb).sum(1)
        # -(||q||^2 + ||g||^2 - 2 q.g) in one fused addmm; sqrt only on the k winners (monotone)
        neg_sq = torch.addmm(self._sqnorm[None, :], probes, self._emb.T, alpha=-2.0)
        return neg_sq.add_((probes * probes).sum(1)[:, None]).clamp_min_(0.0).neg_()

    def identify(self, probes, k: int = 1, threshold: float | None = None) -> Identification:
        """Top-``k`` identities for each probe embedding, with an open-set reject.

        Parameters
        ----------
        probes : array-like or Tensor, shape (n, d) or (d,)
        k : int
            Number of distinct identities to return (capped at the number enrolled).
        threshold : float, optional
            Overrides the gallery's open-set threshold (a similarity) for this call.

        Returns
        -------
        Identification
        """
        if self._emb is None or len(self) == 0:
            raise EmptyGalleryError("the gallery is empty: enroll(embeddings, labels) before identify()")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        q = self._prepare(probes, "probes")
        n_ids = len(self)
        k = min(int(k), n_ids)
        multi = self.n_templates > n_ids
        ids = self._ids.to(self.device)
        if self._use_faiss():
            max_templates = int(torch.bincount(self._ids).max()) if multi else 1
            S, I = self._faiss_search(q, min(self.n_templates, k * max_templates))
            if multi:
                block = torch.full((q.shape[0], n_ids), float("-inf"), device=self.device)
                block.scatter_reduce_(1, ids[I], S, reduce="amax")
                S, I = torch.topk(block, k, dim=1)
            else:
                S, I = S[:, :k], ids[I[:, :k]]
        else:
            rows = max(1, self.chunk_elements // self.n_templates)
            out_s, out_i = [], []
            for start in range(0, q.shape[0], rows):
                block = self._score_block(q[start:start + rows])
                if multi:
                    per_id = torch.full((block.shape[0], n_ids), float("-inf"), device=self.device)
                    per_id.scatter_reduce_(1, ids.expand_as(block), block, reduce="amax")
                    s, i = torch.topk(per_id, k, dim=1)
                else:
                    s, j = torch.topk(block, k, dim=1)
                    i = ids[j]
                out_s.append(s)
                out_i.append(i)
            S, I = torch.cat(out_s), torch.cat(out_i)
            if self.metric == "euclidean":
                S = -(-S).sqrt()
        thr = self.threshold if threshold is None else float(threshold)
        accepted = torch.ones(q.shape[0], dtype=torch.bool, device=self.device) if thr is None else S[:, 0] >= thr
        lab = np.empty(I.shape, dtype=object)
        names = np.empty(n_ids, dtype=object)
        names[:] = self._labels
        lab[:] = names[I.cpu().numpy()]
        return Identification(labels=lab, scores=S, accepted=accepted, metric=self.metric, unknown=self.unknown)


# --------------------------------------------------------------------------------------------- images -> embeddings
class FaceRecognizer:
    """Image in, faces and embeddings out: detection -> alignment -> embedding, and 1:1 verification of two images.

    Parameters
    ----------
    detector : str
        A backend of :func:`facelab.detect.detect_faces` (``"dlib-hog"``, ``"dlib-cnn"``, ``"yunet"``, ``"haar"``).
    embedder : str or nn.Module
        A name for :func:`facelab.models.load_embedder` (``"dlib-resnet"``, ``"sface"``) or a loaded embedder with
        ``embed``, ``distance``, ``threshold`` and ``input_size``.
    template : str, optional
        Alignment template for :func:`facelab.align.align_faces`; by default the one the embedder expects.
    threshold : float, optional
        Verification threshold as a similarity (:mod:`facelab.core.scores`); by default the embedder's published
        one, ``embedder.threshold`` (-0.6 for dlib, 0.363 for SFace).
    device : str or torch.device
    detector_options : dict, optional
        Extra keyword arguments for :func:`facelab.detect.detect_faces` (e.g. ``{"max_side": 800}``).
    """

    def __init__(self, detector: str = "dlib-hog", embedder: Any = "dlib-resnet", template: str | None = None,
                 threshold: float | None = None, device: str | torch.device | None = None,
                 detector_options: dict | None = None):
        self.detector = detector
        self.detector_options = dict(detector_options or {})
        self.device = torch.device(device if device is not None else "cpu")
        if isinstance(embedder, str):
            from facelab.models import load_embedder

            embedder = load_embedder(embedder, device=self.device)  # cached per device: the shared copy never moves
        for attr in ("embed", "distance", "threshold"):
            if not hasattr(embedder, attr):
                raise TypeError(f"embedder must provide .{attr} (see facelab.models.load_embedder), "
                                f"got {type(embedder).__name__}")
        self.embedder = embedder.to(self.device) if hasattr(embedder, "to") else embedder
        self.template = template if template is not None else getattr(embedder, "template", None)
        self.distance = embedder.distance
        self.threshold = float(embedder.threshold if threshold is None else threshold)

    def __repr__(self) -> str:
        return (f"FaceRecognizer(detector={self.detector!r}, embedder={type(self.embedder).__name__}, "
                f"distance={self.distance!r}, threshold={self.threshold})")

    @staticmethod
    def _load(image, name: str) -> tuple[np.ndarray, str]:
        if isinstance(image, (str, Path)):
            from facelab.io import load_image

            return load_image(image), str(image)
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"{name} must be a path or an (H, W, 3) uint8 RGB array, got {arr.dtype} {arr.shape}")
        return arr, name

    def align(self, image: np.ndarray, faces: Sequence):
        """Aligned crops for the embedder (:func:`facelab.align.align_faces`: uint8 ``(n, S, S, 3)``)."""
        from facelab.align import align_faces

        kwargs = {} if not self.template else {"template": self.template}
        return align_faces(image, faces, **kwargs)

    def embed_faces(self, crops) -> torch.Tensor:
        """Embeddings ``(n, d)`` of aligned crops (whatever the embedder's ``embed`` accepts, e.g. uint8 NHWC)."""
        if len(crops) == 0:
            return torch.zeros(0, int(getattr(self.embedder, "embedding_size", 0)))
        with torch.no_grad():
            return self.embedder.embed(crops).float()

    def embed_image(self, image, name: str = "image") -> tuple[list, torch.Tensor]:
        """Detect, align and embed every face of an image (a path or an RGB uint8 array).

        Returns ``(faces, embeddings)``; an image without faces gives ``([], empty (0, d) tensor)``.
        """
        img, _ = self._load(image, name)
        from facelab.detect import detect_faces

        faces = list(detect_faces(img, backend=self.detector, **self.detector_options))
        if not faces:
            return [], self.embed_faces([])
        return faces, self.embed_faces(self.align(img, faces))

    def _largest_face_embedding(self, image, name: str) -> torch.Tensor:
        img, label = self._load(image, name)
        faces, emb = self.embed_image(img, label)
        if not faces:
            raise NoFaceError(f"no face found in {label} by detector {self.detector!r}; "
                              "try another detector (e.g. 'dlib-cnn' or 'yunet') or a larger, frontal face")
        areas = [_box_area(f.box) for f in faces]
        return emb[int(np.argmax(areas))]

    def verify(self, image_a, image_b) -> tuple[bool, float]:
        """Are the largest faces of two images the same person? Returns ``(same, similarity)``."""
        a = self._largest_face_embedding(image_a, "image_a")
        b = self._largest_face_embedding(image_b, "image_b")
        same, s = verify(a, b, self.distance, self.threshold)
        return bool(same[0]), float(s[0])


def _box_area(box) -> float:
    x0, y0, x1, y1 = [float(v) for v in np.asarray(box, dtype=np.float64).ravel()[:4]]
    return max(0.0, x1 - x0) * max(0.0, y1 - y0)


# --------------------------------------------------------------------------------------------- pairs, chips
def pair_indices(labels: Sequence[Hashable], max_impostor: int | None = None,
                 rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All genuine pairs and all (or a random subset of) impostor pairs of a labelled set, as ``(i, j, same)``
    (``i < j``; ``same`` 1 for genuine pairs): :func:`facelab.core.scores.genuine_impostor_pairs` unpacked."""
    p, same = genuine_impostor_pairs(labels, max_impostors=max_impostor, seed=rng if rng is not None else 0)
    return p[:, 0], p[:, 1], same.astype(np.int64)


def pair_scores(features, i: np.ndarray, j: np.ndarray, distance: str | Any = "euclidean") -> np.ndarray:
    """Similarity of each pair ``(features[i], features[j])``, float64.

    ``distance`` is ``"euclidean"``, ``"cosine"`` or a callable ``f(A, B) -> (n,)`` of paired *distances* (e.g. the
    chi-squared distance of LBP histograms), whose similarity is minus that distance.
    """
    if callable(distance):
        X = np.asarray(features.cpu() if isinstance(features, torch.Tensor) else features, dtype=np.float64)
        return -np.asarray(distance(X[i], X[j]), dtype=np.float64)
    X = as_embeddings(features, "features")
    return paired_similarities(X[torch.as_tensor(i)], X[torch.as_tensor(j)], distance).cpu().double().numpy()


def aligned_chips(images: torch.Tensor, landmarks, template: str = "arcface-112", size: int | None = None,
                  batch_size: int = 64) -> torch.Tensor:
    """Align a batch of float images ``(N, 3, H, W)`` with known 68-point landmarks ``(N, 68, 2)``.

    A thin batched wrapper of :func:`facelab.align.align_batch_torch` (used for the synthetic face world, whose
    landmarks are ground truth, so no detector is needed). Returns float chips ``(N, 3, S, S)`` in [0, 1].
    """
    from facelab.align import align_batch_torch

    from facelab.core.images import check_images

    images = torch.as_tensor(images)
    lm = torch.as_tensor(landmarks, dtype=images.dtype)
    if images.dim() != 4 or lm.dim() != 3 or lm.shape[0] != images.shape[0] or lm.shape[1:] != (68, 2):
        raise ValueError(f"expected images (N, 3, H, W) and landmarks (N, 68, 2), got {tuple(images.shape)} and "
                         f"{tuple(lm.shape)}")
    check_images(images, "images", channels=(3,), allow_empty=True, value_range=(0.0, 1.0), tolerance=0.02)
    out = [align_batch_torch(images[k:k + batch_size], lm[k:k + batch_size].to(images.device), template, kind="68",
                             size=size) for k in range(0, images.shape[0], batch_size)]
    return torch.cat(out).clamp_(0.0, 1.0)


def embed_aligned(embedder, images: torch.Tensor, landmarks, batch_size: int = 32) -> torch.Tensor:
    """Embeddings of images with known landmarks: align to the embedder's template, then ``embedder.embed``."""
    chips = aligned_chips(images, landmarks, embedder.template, embedder.input_size)
    with torch.no_grad():
        return embedder.embed(chips, batch_size=batch_size).float().cpu()
