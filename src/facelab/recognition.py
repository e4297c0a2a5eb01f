"""Face verification (1:1) and identification (1:N) on top of face embeddings.

The chapter *Face recognition, end to end* (``notebooks/01_face_recognition.ipynb``) uses this module.

* :func:`verify` compares embeddings pairwise: ``same = distance(a, b) <= threshold``.
* :class:`Gallery` enrols labelled embeddings and answers top-k identification queries with an open-set reject
  option. The search is a batched matrix product in PyTorch (any device), chunked over probes so that memory stays
  bounded; FAISS (``IndexFlatIP`` / ``IndexFlatL2``) is used when asked for and installed, never required.
* :class:`FaceRecognizer` composes detection, alignment and an embedder: image in, faces and embeddings out.
* :func:`pair_indices`, :func:`pair_scores` and :func:`split_gallery_probes` are the benchmark protocol of the
  chapter (all genuine / impostor pairs of a labelled set; a one-template-per-identity gallery).

Distances
---------
``"euclidean"``: :math:`d(a, b) = \\lVert a - b \\rVert_2` (dlib: same person when :math:`d < 0.6`).
``"cosine"``: :math:`d(a, b) = 1 - \\frac{a^\\top b}{\\lVert a\\rVert \\lVert b\\rVert}` (SFace: same person when
the cosine similarity exceeds 0.363, i.e. :math:`d < 0.637`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Hashable, Iterable, Mapping, Sequence

import numpy as np
import torch

__all__ = [
    "METRICS",
    "FAISS_AUTO_MIN",
    "GalleryError",
    "EmptyGalleryError",
    "DuplicateEnrolmentError",
    "NoFaceError",
    "as_embeddings",
    "pairwise_distances",
    "paired_distances",
    "verify",
    "Identification",
    "Gallery",
    "FaceRecognizer",
    "LabelledFaces",
    "labelled_faces",
    "pair_indices",
    "pair_scores",
    "split_gallery_probes",
    "COMPARISON_DISTANCES",
    "distance_matrix",
    "MethodComparison",
    "compare_methods",
    "aligned_chips",
    "embed_aligned",
    "grey_chips",
    "draw_faces",
    "distance_heatmap",
    "plot_comparison",
    "threshold_tradeoff",
    "threshold_widget",
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


def pairwise_distances(a, b, distance: str = "euclidean") -> torch.Tensor:
    """All distances between the rows of ``a`` (n, d) and ``b`` (m, d): an ``(n, m)`` tensor."""
    _check_metric(distance)
    a, b = as_embeddings(a, "a"), as_embeddings(b, "b", device=None)
    b = b.to(a.device)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding sizes differ: a has d={a.shape[1]}, b has d={b.shape[1]}")
    if distance == "cosine":
        return 1.0 - _normalize(a) @ _normalize(b).T
    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * (a @ b.T)
    return sq.clamp_min(0.0).sqrt()


def paired_distances(a, b, distance: str = "euclidean") -> torch.Tensor:
    """Distances between matching rows ``a[i]``, ``b[i]`` (both ``(n, d)``, or one of them a single vector)."""
    _check_metric(distance)
    a, b = as_embeddings(a, "emb_a"), as_embeddings(b, "emb_b")
    b = b.to(a.device)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"embedding sizes differ: emb_a has d={a.shape[1]}, emb_b has d={b.shape[1]}")
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise ValueError(f"emb_a and emb_b must have the same number of rows (or one row), got {a.shape[0]} and {b.shape[0]}")
    if distance == "cosine":
        return 1.0 - (_normalize(a) * _normalize(b)).sum(1)
    return (a - b).norm(dim=1)


def verify(emb_a, emb_b, distance: str = "euclidean", threshold: float = 0.6) -> tuple[torch.Tensor, torch.Tensor]:
    """1:1 verification: is ``emb_a[i]`` the same person as ``emb_b[i]``?

    Parameters
    ----------
    emb_a, emb_b : array-like or Tensor, shape (n, d) or (d,)
    distance : {"euclidean", "cosine"}
        ``"cosine"`` means the cosine *distance* ``1 - cos``.
    threshold : float
        Pairs with ``distance <= threshold`` are declared the same person (dlib: 0.6 euclidean; SFace: 1 - 0.363
        cosine).

    Returns
    -------
    same : BoolTensor, shape (n,)
    distances : Tensor, shape (n,)

    Examples
    --------
    >>> same, d = verify([0.0, 0.0], [[0.3, 0.4], [3.0, 4.0]], threshold=0.6)
    >>> same.tolist(), d.tolist()
    ([True, False], [0.5, 5.0])
    """
    d = paired_distances(emb_a, emb_b, distance)
    return d <= float(threshold), d


# --------------------------------------------------------------------------------------------- gallery
@dataclass
class Identification:
    """Result of :meth:`Gallery.identify` for ``n`` probes.

    Attributes
    ----------
    labels : ndarray of object, shape (n, k)
        The ``k`` nearest enrolled identities of each probe, best first (distinct identities).
    distances : Tensor, shape (n, k)
        Their distances (the best template of each identity), in the gallery's metric.
    accepted : BoolTensor, shape (n,)
        Whether the best match is within the open-set threshold (all True without a threshold).
    unknown : Any
        The label :attr:`predicted` uses for rejected probes.
    """

    labels: np.ndarray
    distances: torch.Tensor
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
    def scores(self) -> torch.Tensor:
        """Similarity scores (higher = closer): cosine similarity, or the negative L2 distance."""
        return 1.0 - self.distances if self.metric == "cosine" else -self.distances

    def to_frame(self):
        """A pandas DataFrame: one row per probe with ``rank1..rankk``, ``d1..dk``, ``predicted``, ``accepted``."""
        import pandas as pd

        k = self.labels.shape[1]
        data = {f"rank{j + 1}": self.labels[:, j] for j in range(k)}
        d = self.distances.cpu().numpy()
        data.update({f"d{j + 1}": d[:, j] for j in range(k)})
        data["predicted"] = self.predicted
        data["accepted"] = self.accepted.cpu().numpy()
        return pd.DataFrame(data)


class Gallery:
    """An enrolment database of labelled face embeddings with batched top-k search.

    Parameters
    ----------
    metric : {"euclidean", "cosine"}
        Distance used for search (cosine distance = 1 - cosine similarity).
    threshold : float, optional
        Open-set threshold: a probe whose best distance is above it is rejected as *unknown*.
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
        Upper bound on the number of entries of one probe-by-gallery distance block (memory ~ 4 bytes each).
    unknown : Any
        Label returned for rejected probes.

    Examples
    --------
    >>> g = Gallery(metric="euclidean", threshold=0.6)
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
        import faiss

        if self._faiss is None:
            base = np.ascontiguousarray(self._emb.cpu().numpy())
            index = faiss.IndexFlatIP(base.shape[1]) if self.metric == "cosine" else faiss.IndexFlatL2(base.shape[1])
            index.add(base)
            self._faiss = index
        D, I = self._faiss.search(np.ascontiguousarray(probes.cpu().numpy()), kk)
        D, I = torch.from_numpy(D), torch.from_numpy(I)
        D = 1.0 - D if self.metric == "cosine" else D.clamp_min(0).sqrt()
        return D.to(self.device), I.to(self.device)

    def _distance_block(self, probes: torch.Tensor) -> torch.Tensor:
        """Cosine distances, or *squared* L2 distances (the caller takes the root of the winners)."""
        if self.metric == "cosine":
            return 1.0 - probes @ self._emb.T
        if self._sqnorm is None or self._sqnorm.shape[0] != self._emb.shape[0]:
            self._sqnorm = (self._emb * self._emb).sum(1)
        # ||q||^2 + ||g||^2 - 2 q.g in one fused addmm; sqrt only on the k winners (monotone)
        sq = torch.addmm(self._sqnorm[None, :], probes, self._emb.T, alpha=-2.0)
        return sq.add_((probes * probes).sum(1)[:, None]).clamp_min_(0.0)

    def identify(self, probes, k: int = 1, threshold: float | None = None) -> Identification:
        """Top-``k`` identities for each probe embedding, with an open-set reject.

        Parameters
        ----------
        probes : array-like or Tensor, shape (n, d) or (d,)
        k : int
            Number of distinct identities to return (capped at the number enrolled).
        threshold : float, optional
            Overrides the gallery's open-set threshold for this call.

        Returns
        -------
        Identification
        """
        if self._emb is None or len(self) == 0:
            raise EmptyGalleryError("the gallery is empty: enroll(embeddings, labels) before identify()")
        if int(k) < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        q = self._prepare(probes, "probes")
        n_ids = len(self)
        k = min(int(k), n_ids)
        multi = self.n_templates > n_ids
        ids = self._ids.to(self.device)
        if self._use_faiss():
            max_templates = int(torch.bincount(self._ids).max()) if multi else 1
            D, I = self._faiss_search(q, min(self.n_templates, k * max_templates))
            if multi:
                block = torch.full((q.shape[0], n_ids), float("inf"), device=self.device)
                block.scatter_reduce_(1, ids[I], D, reduce="amin")
                D, I = torch.topk(block, k, dim=1, largest=False)
            else:
                D, I = D[:, :k], ids[I[:, :k]]
        else:
            rows = max(1, self.chunk_elements // self.n_templates)
            out_d, out_i = [], []
            for start in range(0, q.shape[0], rows):
                block = self._distance_block(q[start:start + rows])
                if multi:
                    per_id = torch.full((block.shape[0], n_ids), float("inf"), device=self.device)
                    per_id.scatter_reduce_(1, ids.expand_as(block), block, reduce="amin")
                    d, i = torch.topk(per_id, k, dim=1, largest=False)
                else:
                    d, j = torch.topk(block, k, dim=1, largest=False)
                    i = ids[j]
                out_d.append(d)
                out_i.append(i)
            D, I = torch.cat(out_d), torch.cat(out_i)
            if self.metric == "euclidean":
                D = D.sqrt()
        thr = self.threshold if threshold is None else float(threshold)
        accepted = torch.ones(q.shape[0], dtype=torch.bool, device=self.device) if thr is None else D[:, 0] <= thr
        lab = np.empty(I.shape, dtype=object)
        names = np.empty(n_ids, dtype=object)
        names[:] = self._labels
        lab[:] = names[I.cpu().numpy()]
        return Identification(labels=lab, distances=D, accepted=accepted, metric=self.metric, unknown=self.unknown)


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
        Verification threshold on the distance; by default the embedder's published one
        (``embedder.distance_threshold`` when it has one, else ``embedder.threshold``).
    device : str or torch.device
    detector_options : dict, optional
        Extra keyword arguments for :func:`facelab.detect.detect_faces` (e.g. ``{"max_side": 800}``).
    """

    def __init__(self, detector: str = "dlib-hog", embedder: Any = "dlib-resnet", template: str | None = None,
                 threshold: float | None = None, device: str | torch.device = "cpu",
                 detector_options: dict | None = None):
        self.detector = detector
        self.detector_options = dict(detector_options or {})
        self.device = torch.device(device)
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
        # the published threshold as a *distance* (SFace publishes a cosine similarity: distance = 1 - it)
        published = getattr(embedder, "distance_threshold", embedder.threshold)
        self.threshold = float(published if threshold is None else threshold)

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
        """Are the largest faces of two images the same person? Returns ``(same, distance)``."""
        a = self._largest_face_embedding(image_a, "image_a")
        b = self._largest_face_embedding(image_b, "image_b")
        same, d = verify(a, b, self.distance, self.threshold)
        return bool(same[0]), float(d[0])


def _box_area(box) -> float:
    x0, y0, x1, y1 = [float(v) for v in np.asarray(box, dtype=np.float64).ravel()[:4]]
    return max(0.0, x1 - x0) * max(0.0, y1 - y0)


@dataclass
class LabelledFaces:
    """Faces picked from detections, one row each: ``names`` (photo name, ``name-k`` for the k-th face of a group
    photo), ``identities`` (the photo's person; each face of a group photo is its own unknown person),
    ``embeddings`` (F, D) and ``faces`` ((photo name, face) pairs, for cropping)."""

    names: list
    identities: list
    embeddings: np.ndarray
    faces: list


def labelled_faces(detections: Mapping, identity: Mapping, group: Mapping) -> LabelledFaces:
    """Pick the faces to compare from :meth:`FaceRecognizer.embed_image` results.

    ``detections[name] = (faces, embeddings)``; ``identity[name]`` is the person in photo ``name``; ``group[name]``
    marks group photos. A labelled photo contributes its largest face (others are bystanders or false detections),
    a group photo every face. A labelled photo with no face is an error that names it.
    """
    names, people, emb, used = [], [], [], []
    for name, (faces, e) in detections.items():
        if not len(faces):
            if group[name]:
                continue
            raise NoFaceError(f"no face found in {name!r}: a labelled photo needs one (try a lower detector "
                              f"threshold or a larger max_side)")
        keep = range(len(faces)) if group[name] else [int(np.argmax([f.size for f in faces]))]
        for k, idx in enumerate(keep):
            label = f"{name}-{k + 1}" if group[name] else name
            names.append(label)
            people.append(label if group[name] else identity[name])
            emb.append(e[idx].detach().cpu().numpy() if torch.is_tensor(e[idx]) else np.asarray(e[idx]))
            used.append((name, faces[idx]))
    if not names:
        raise NoFaceError("no face found in any photo")
    return LabelledFaces(names, people, np.stack(emb), used)


# --------------------------------------------------------------------------------------------- benchmark protocol
def pair_indices(labels: Sequence[Hashable], max_impostor: int | None = None,
                 rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All genuine pairs and all (or a random subset of) impostor pairs of a labelled set.

    Returns ``(i, j, same)`` with ``i < j``; ``same`` is 1 for genuine pairs. ``max_impostor`` keeps a random subset
    of the impostor pairs (drawn with ``rng``) so large sets stay cheap.
    """
    lab = np.asarray(labels)
    n = len(lab)
    if n < 2:
        raise ValueError(f"need at least two samples to form pairs, got {n}")
    i, j = np.triu_indices(n, k=1)
    same = (lab[i] == lab[j]).astype(np.int64)
    if not same.any() or same.all():
        raise ValueError("the labelled set must hold at least two samples of one identity and two identities")
    if max_impostor is not None and (same == 0).sum() > max_impostor:
        rng = rng if rng is not None else np.random.default_rng(0)
        imp = np.nonzero(same == 0)[0]
        keep = np.sort(np.r_[np.nonzero(same)[0], rng.choice(imp, size=int(max_impostor), replace=False)])
        i, j, same = i[keep], j[keep], same[keep]
    return i, j, same


def pair_scores(features, i: np.ndarray, j: np.ndarray, distance: str | Any = "euclidean") -> np.ndarray:
    """Similarity score (negative distance) of each pair ``(features[i], features[j])``.

    ``distance`` is ``"euclidean"``, ``"cosine"`` or a callable ``f(A, B) -> (n,)`` of paired distances (e.g. the
    chi-squared distance of LBP histograms).
    """
    if callable(distance):
        X = np.asarray(features.cpu() if isinstance(features, torch.Tensor) else features, dtype=np.float64)
        return -np.asarray(distance(X[i], X[j]), dtype=np.float64)
    X = as_embeddings(features, "features")
    return -paired_distances(X[torch.as_tensor(i)], X[torch.as_tensor(j)], distance).cpu().double().numpy()


def split_gallery_probes(labels: Sequence[Hashable], n_gallery: int = 1,
                         rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a gallery (``n_gallery`` random samples per identity) and of the probes (the rest)."""
    lab = np.asarray(labels)
    rng = rng if rng is not None else np.random.default_rng(0)
    gal = []
    for ident in np.unique(lab):
        idx = np.nonzero(lab == ident)[0]
        if len(idx) <= n_gallery:
            raise ValueError(f"identity {ident!r} has {len(idx)} samples; need more than n_gallery={n_gallery}")
        gal.extend(rng.choice(idx, size=n_gallery, replace=False).tolist())
    gal = np.sort(np.asarray(gal))
    probes = np.setdiff1d(np.arange(len(lab)), gal)
    return gal, probes


# --------------------------------------------------------------------------------------------- method comparison
#: Distances the comparison understands: the two embedding metrics and the chi-squared distance of histograms.
COMPARISON_DISTANCES = ("euclidean", "cosine", "chi2")


def distance_matrix(features, distance: str) -> np.ndarray:
    """All pairwise distances ``(n, n)`` of a feature matrix, as float64 NumPy."""
    if distance == "chi2":
        from facelab.classical import chi2_distance

        X = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
        return chi2_distance(X, X)
    if distance not in METRICS:
        raise ValueError(f"distance must be one of {COMPARISON_DISTANCES}, got {distance!r}")
    X = as_embeddings(features, "features")
    return pairwise_distances(X, X, distance).cpu().double().numpy()


@dataclass
class MethodComparison:
    """Verification and identification results of several methods on one identity-labelled test set.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per method: AUC, EER, TAR at each FAR, rank-1 and rank-5 identification rates, pair counts.
    pair_labels : ndarray
        1 for genuine pairs, 0 for impostors (the same pairs for every method).
    pair_scores : dict[str, ndarray]
        Similarity score (negative distance) of every pair, per method.
    id_scores : dict[str, ndarray]
        ``(n_probes, n_gallery)`` similarity matrices for identification, per method.
    gallery, probes : ndarray
        Indices of the gallery (one image per identity) and probe images in the test set.
    labels : ndarray
        Identity of every test image.
    """

    table: Any
    pair_labels: np.ndarray
    pair_scores: dict
    id_scores: dict
    gallery: np.ndarray
    probes: np.ndarray
    labels: np.ndarray

    def roc(self, method: str):
        from facelab.metrics import roc_curve

        return roc_curve(self.pair_labels, self.pair_scores[method])

    def det(self, method: str):
        from facelab.metrics import det_curve

        return det_curve(self.pair_labels, self.pair_scores[method])

    def cmc(self, method: str, max_rank: int | None = None):
        from facelab.metrics import cmc_curve

        return cmc_curve(self.id_scores[method], self.labels[self.probes], self.labels[self.gallery], max_rank)


def compare_methods(features: dict, labels: Sequence[Hashable], fars: Sequence[float] = (1e-1, 1e-2, 1e-3),
                    n_gallery: int = 1, rng: np.random.Generator | None = None) -> MethodComparison:
    """Evaluate several face representations on the same identity-labelled images.

    Verification uses **all** pairs of the test images (genuine: same identity); identification enrols
    ``n_gallery`` random images per identity and uses the rest as probes (closed set).

    Parameters
    ----------
    features : dict[str, (array (n, f), distance)]
        Per method, the features of the ``n`` test images and the distance to compare them with
        (``"euclidean"``, ``"cosine"`` or ``"chi2"``).
    labels : sequence of length n
        Identity of each test image.
    fars : sequence of float
        False accept rates at which the TAR is reported.
    n_gallery : int
    rng : numpy Generator, optional
        For the gallery draw.

    Returns
    -------
    MethodComparison
    """
    import pandas as pd

    from facelab import metrics

    lab = np.asarray(labels)
    if not features:
        raise ValueError("features is empty: give at least one method {name: (features, distance)}")
    i, j, same = pair_indices(lab)
    gallery, probes = split_gallery_probes(lab, n_gallery=n_gallery, rng=rng)
    rows, pair_s, id_s = [], {}, {}
    for name, spec in features.items():
        if not (isinstance(spec, tuple) and len(spec) == 2):
            raise ValueError(f"features[{name!r}] must be a (features, distance) tuple, got {type(spec).__name__}")
        F, dist = spec
        if len(F) != len(lab):
            raise ValueError(f"features[{name!r}] has {len(F)} rows but there are {len(lab)} labels")
        D = distance_matrix(F, dist)
        pair_s[name] = -D[i, j]
        id_s[name] = -D[np.ix_(probes, gallery)]
        row = {"method": name, "distance": dist, **metrics.verification_report(same, pair_s[name], fars)}
        row["rank-1"] = metrics.rank_k_accuracy(id_s[name], lab[probes], lab[gallery], 1)
        row["rank-5"] = metrics.rank_k_accuracy(id_s[name], lab[probes], lab[gallery], 5)
        rows.append(row)
    table = pd.DataFrame(rows).set_index("method")
    return MethodComparison(table=table, pair_labels=same, pair_scores=pair_s, id_scores=id_s,
                            gallery=gallery, probes=probes, labels=lab)


def aligned_chips(images: torch.Tensor, landmarks, template: str = "arcface-112", size: int | None = None,
                  batch_size: int = 64) -> torch.Tensor:
    """Align a batch of float images ``(N, 3, H, W)`` with known 68-point landmarks ``(N, 68, 2)``.

    A thin batched wrapper of :func:`facelab.align.align_batch_torch` (used for the synthetic face world, whose
    landmarks are ground truth, so no detector is needed). Returns float chips ``(N, 3, S, S)`` in [0, 1].
    """
    from facelab.align import align_batch_torch

    images = torch.as_tensor(images)
    lm = torch.as_tensor(landmarks, dtype=images.dtype)
    if images.dim() != 4 or lm.dim() != 3 or lm.shape[0] != images.shape[0] or lm.shape[1:] != (68, 2):
        raise ValueError(f"expected images (N, 3, H, W) and landmarks (N, 68, 2), got {tuple(images.shape)} and "
                         f"{tuple(lm.shape)}")
    out = [align_batch_torch(images[k:k + batch_size], lm[k:k + batch_size].to(images.device), template, kind="68",
                             size=size) for k in range(0, images.shape[0], batch_size)]
    return torch.cat(out).clamp_(0.0, 1.0)


def embed_aligned(embedder, images: torch.Tensor, landmarks, batch_size: int = 32) -> torch.Tensor:
    """Embeddings of images with known landmarks: align to the embedder's template, then ``embedder.embed``."""
    chips = aligned_chips(images, landmarks, embedder.template, embedder.input_size)
    with torch.no_grad():
        return embedder.embed(chips, batch_size=batch_size).float().cpu()


def grey_chips(images: torch.Tensor, landmarks, size: int = 56) -> np.ndarray:
    """Aligned grey chips ``(N, size, size)`` in [0, 1] for the classical methods (ArcFace five-point template)."""
    from facelab.classical import to_grey_batch

    return to_grey_batch(aligned_chips(images, landmarks, "arcface-112", size).cpu().numpy())


# --------------------------------------------------------------------------------------------- figures
def draw_faces(image: np.ndarray, faces: Sequence, ax=None, title: str | None = None, landmarks: bool = True,
               zoom: float | None = None):
    """Show an image with the detected boxes and landmarks (68 points if present, else 5) drawn on it.

    ``zoom``: if given, crop the view to the faces plus this many face widths of margin on every side.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from facelab.plotting import PALETTE

    if ax is None:
        _, ax = plt.subplots(figsize=(4, 4))
    ax.imshow(image)
    lw = 1.5
    for f in faces:
        x0, y0, x1, y1 = f.box
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=PALETTE[1], lw=lw))
        pts = getattr(f, "landmarks68", None) if landmarks else None
        if pts is None and landmarks:
            pts = getattr(f, "landmarks5", None)
        if pts is not None:
            ax.scatter(pts[:, 0], pts[:, 1], s=4, color=PALETTE[2], linewidths=0)
    if zoom is not None and len(faces):
        boxes = np.array([f.box for f in faces], dtype=np.float64)
        m = float(zoom) * float(np.max(boxes[:, 2] - boxes[:, 0]))
        h, w = image.shape[:2]
        ax.set_xlim(max(0.0, boxes[:, 0].min() - m), min(w, boxes[:, 2].max() + m))
        ax.set_ylim(min(h, boxes[:, 3].max() + m), max(0.0, boxes[:, 1].min() - m))
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9, fontweight="normal")
    return ax


def distance_heatmap(D, names: Sequence[str], threshold: float, ax=None, title: str | None = None):
    """Annotated distance matrix; cells at or below ``threshold`` (declared "same person") are outlined."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    D = np.asarray(D.cpu() if isinstance(D, torch.Tensor) else D, dtype=np.float64)
    n = len(names)
    if ax is None:
        _, ax = plt.subplots(figsize=(0.55 * n + 2, 0.5 * n + 1.5))
    im = ax.imshow(D, cmap="viridis_r", vmin=0, vmax=max(float(D.max()), threshold * 1.5))
    for a in range(n):
        for b in range(n):
            ax.text(b, a, f"{D[a, b]:.2f}", ha="center", va="center", fontsize=6.5,
                    color="white" if D[a, b] < threshold else "black")
            if a != b and D[a, b] <= threshold:
                ax.add_patch(Rectangle((b - 0.5, a - 0.5), 1, 1, fill=False, color="#d1495b", lw=1.5))
    ax.set_xticks(range(n), names, rotation=70, fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.grid(False)
    plt.colorbar(im, ax=ax, shrink=0.8, label="distance")
    if title:
        ax.set_title(title)
    return ax


def plot_comparison(cmp: MethodComparison, max_rank: int = 10):
    """ROC (log FAR), DET (normal-deviate axes) and CMC curves of every method, side by side."""
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    n_imp = int((cmp.pair_labels == 0).sum())
    eps = 0.5 / max(n_imp, 1)
    for name in cmp.pair_scores:
        far, tar, _ = cmp.roc(name)
        axes[0].plot(np.maximum(far, eps), tar, label=name, drawstyle="steps-post")
        fmr, fnmr, _ = cmp.det(name)
        clip = lambda v: np.clip(v, 1e-4, 1 - 1e-4)  # noqa: E731 - probit of 0 or 1 is infinite
        axes[1].plot(norm.ppf(clip(fmr)), norm.ppf(clip(fnmr)), label=name)
        k, rate = cmp.cmc(name, max_rank=min(max_rank, len(cmp.gallery)))
        axes[2].plot(k, rate, marker="o", ms=3, label=name)
    axes[0].set(xscale="log", xlabel="false accept rate (log)", ylabel="true accept rate", title="ROC",
                xlim=(eps, 1), ylim=(0, 1.01))
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8])
    axes[1].set_xticks(norm.ppf(ticks), [f"{t:g}" for t in ticks])
    axes[1].set_yticks(norm.ppf(ticks), [f"{t:g}" for t in ticks])
    axes[1].set(xlabel="false match rate", ylabel="false non-match rate", title="DET (normal deviate axes)",
                xlim=norm.ppf([5e-4, 0.9]), ylim=norm.ppf([5e-4, 0.9]))
    axes[2].set(xlabel="rank k", ylabel="identification rate", title="CMC (closed set)", ylim=(0, 1.02))
    axes[2].legend(loc="lower right")
    return fig


def threshold_tradeoff(labels, distances, threshold: float, name: str = "", published: float | None = None):
    """FAR and FRR as functions of a distance threshold, with the chosen (and published) threshold marked.

    Used by the chapter's threshold slider; returns ``(fig, far, frr)`` at ``threshold``.
    """
    import matplotlib.pyplot as plt

    from facelab.metrics import far_frr

    y = np.asarray(labels).astype(bool)
    d = np.asarray(distances, dtype=np.float64)
    grid = np.linspace(d.min(), d.max(), 200)
    fa = np.array([np.mean(d[~y] <= t) for t in grid])
    fr = np.array([np.mean(d[y] > t) for t in grid])
    far, frr = far_frr(y, -d, -threshold)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    axes[0].hist(d[y], bins=40, alpha=0.6, density=True, label="genuine pairs")
    axes[0].hist(d[~y], bins=40, alpha=0.6, density=True, label="impostor pairs")
    axes[1].plot(grid, fa, label="FAR (impostors accepted)")
    axes[1].plot(grid, fr, label="FRR (genuine rejected)")
    for ax in axes:
        ax.axvline(threshold, color="black", lw=1.2, label=f"threshold {threshold:.3f}")
        if published is not None:
            ax.axvline(published, color="gray", ls="--", lw=1, label=f"published {published:.3f}")
    axes[0].set(xlabel="distance", ylabel="density", title=f"{name}: distance distributions")
    axes[1].set(xlabel="distance threshold", ylabel="rate", title=f"FAR {far:.3f}, FRR {frr:.3f}")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    return fig, far, frr


def threshold_widget(labels, distances, name: str = "", published: float | None = None,
                     value: float | None = None, step: float = 0.01):
    """A slider over the distance threshold with the :func:`threshold_tradeoff` figure below it.

    The figure is rendered into an ``ipywidgets.Output`` with ``append_display_data`` (no output capture and no
    ``clear_output(wait=True)``, which make notebook executors such as nbclient hang intermittently), so an
    executed notebook stores a static snapshot in its widget state and a live kernel redraws on every move.
    """
    from facelab.plotting import slider_figure

    d = np.asarray(distances, dtype=np.float64)
    start = float(published if value is None and published is not None else (np.median(d) if value is None else value))
    return slider_figure(lambda t: threshold_tradeoff(labels, d, t, name, published)[0], value=start,
                         min=float(np.floor(d.min() / step) * step), max=float(np.ceil(d.max() / step) * step),
                         step=step, description="threshold")
