"""Classical face recognition baselines as scikit-learn estimators.

* :class:`Eigenfaces` (Turk and Pentland 1991): PCA of the pixel vectors, nearest neighbour in the PCA space.
* :class:`Fisherfaces` (Belhumeur, Hespanha and Kriegman 1997): PCA to ``n - c`` dimensions, then LDA to at most
  ``c - 1``, nearest neighbour in the discriminant space.
* :class:`LBPHistogram` (Ahonen, Hadid and Pietikainen 2006): uniform local binary pattern histograms on a grid of
  cells, concatenated; nearest neighbour under the chi-squared distance.

Each is a feature extractor (``transform``) and a classifier (``predict``, ``score``) and drops into ``Pipeline``,
``GridSearchCV`` and ``cross_val_score``. Input ``X`` is a batch of images: ``(n, H, W)`` grey, ``(n, H, W, 3)``
RGB, ``(n, 3, H, W)`` channels-first (a torch batch converted with ``.numpy()``), or already flattened ``(n, H*W)``
with ``image_shape=(H, W)`` given. Colour images are converted to grey (ITU-R 601 luma).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

__all__ = ["to_grey_batch", "chi2_distance", "paired_chi2_distance", "Eigenfaces", "Fisherfaces", "LBPHistogram"]

_LUMA = np.array([0.299, 0.587, 0.114])


def to_grey_batch(X, image_shape: tuple[int, int] | None = None, allow_flat: bool = False) -> np.ndarray:
    """Convert a batch of images to a float64 ``(n, H, W)`` grey array (see the module docstring for layouts).

    With ``allow_flat=True`` a flat ``(n, d)`` array without ``image_shape`` is kept as ``(n, 1, d)`` (for methods
    such as PCA that do not need the 2-D layout).
    """
    try:
        import torch

        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    X = np.asarray(X)
    if X.dtype == object or not np.issubdtype(X.dtype, np.number):
        raise ValueError(f"X must be a numeric array of images, got dtype {X.dtype}")
    X = X.astype(np.float64, copy=False)
    if X.ndim == 2 and image_shape is None and allow_flat:
        X = X[:, None, :]
    elif X.ndim == 2:
        if image_shape is None:
            raise ValueError(f"X is flat {X.shape}: pass image_shape=(H, W) or give images as (n, H, W)")
        h, w = image_shape
        if h * w != X.shape[1]:
            raise ValueError(f"image_shape {image_shape} holds {h * w} pixels but X rows have {X.shape[1]}")
        X = X.reshape(len(X), h, w)
    elif X.ndim == 4:
        if X.shape[1] in (1, 3) and X.shape[-1] not in (1, 3):
            X = np.moveaxis(X, 1, -1)
        if X.shape[-1] == 3:
            X = X @ _LUMA
        elif X.shape[-1] == 1:
            X = X[..., 0]
        else:
            raise ValueError(f"4-D X must be (n, H, W, 3|1) or (n, 3|1, H, W), got shape {X.shape}")
    elif X.ndim != 3:
        raise ValueError(f"X must be (n, H, W), (n, H, W, 3), (n, 3, H, W) or flat (n, H*W); got shape {X.shape}")
    if len(X) == 0:
        raise ValueError("X holds no images")
    if not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or inf")
    return X


def chi2_distance(A, B, eps: float = 1e-10) -> np.ndarray:
    """All chi-squared distances :math:`\\sum_b (a_b - b_b)^2 / (a_b + b_b)` between rows of A (n, d) and B (m, d)."""
    A, B = np.asarray(A, np.float64), np.asarray(B, np.float64)
    out = np.empty((len(A), len(B)))
    for start in range(0, len(A), 64):  # bounded memory: 64 x m x d
        a = A[start:start + 64, None, :]
        out[start:start + 64] = ((a - B[None]) ** 2 / (a + B[None] + eps)).sum(-1)
    return out


def paired_chi2_distance(A, B, eps: float = 1e-10) -> np.ndarray:
    """Chi-squared distance between matching rows of A and B (both (n, d))."""
    A, B = np.asarray(A, np.float64), np.asarray(B, np.float64)
    return ((A - B) ** 2 / (A + B + eps)).sum(-1)


class _NearestNeighbourFace(ClassifierMixin, TransformerMixin, BaseEstimator):
    """Shared fit/predict: learn features with ``_fit_features``, then 1-NN (or k-NN) on the training features."""

    distance_name = "euclidean"
    _needs_2d = False

    def distance(self, A, B) -> np.ndarray:
        """All distances between feature rows of ``A`` (n, f) and ``B`` (m, f) in this method's metric."""
        from sklearn.metrics import pairwise_distances

        return pairwise_distances(A, B, metric="euclidean")

    def paired_distance(self, A, B) -> np.ndarray:
        """Distances between matching feature rows of ``A`` and ``B``."""
        return np.linalg.norm(np.asarray(A, np.float64) - np.asarray(B, np.float64), axis=1)

    def _fit_features(self, G: np.ndarray, y: np.ndarray) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _features(self, G: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit(self, X, y):
        """Learn the feature space from images ``X`` with identities ``y`` and store the training features."""
        G = to_grey_batch(X, self.image_shape, allow_flat=not self._needs_2d)
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(G):
            raise ValueError(f"y must be 1-D with one identity per image: {len(G)} images, y of shape {y.shape}")
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs at least two identities, got {len(self.classes_)}")
        self.image_shape_ = G.shape[1:]
        self.n_features_in_ = int(np.prod(self.image_shape_))
        self._fit_features(G, y)
        self.train_features_ = self._features(G)
        self.knn_ = KNeighborsClassifier(n_neighbors=self.n_neighbors, metric="precomputed")
        self.knn_.fit(self.distance(self.train_features_, self.train_features_), y)
        return self

    def _grey(self, X) -> np.ndarray:
        check_is_fitted(self, "knn_")
        G = to_grey_batch(X, self.image_shape, allow_flat=not self._needs_2d)
        if G.shape[1:] != self.image_shape_:
            raise ValueError(f"{type(self).__name__} was fitted on {self.image_shape_} images, got {G.shape[1:]}")
        return G

    def transform(self, X) -> np.ndarray:
        """Features of images ``X``: ``(n, n_features_out)``."""
        return self._features(self._grey(X))

    def predict(self, X) -> np.ndarray:
        """Identity of the nearest training image in feature space."""
        return self.knn_.predict(self.distance(self.transform(X), self.train_features_))

    def predict_proba(self, X) -> np.ndarray:
        """Fraction of the ``n_neighbors`` nearest training images of each identity (columns: ``classes_``)."""
        return self.knn_.predict_proba(self.distance(self.transform(X), self.train_features_))


class Eigenfaces(_NearestNeighbourFace):
    """Eigenfaces: PCA on pixel intensities and nearest neighbour in the face space.

    Parameters
    ----------
    n_components : int or float
        PCA components (an int, or a float in (0, 1) for the fraction of variance kept; capped at ``n - 1``).
    whiten : bool
        Scale components to unit variance (often helps nearest neighbour).
    n_neighbors : int
    image_shape : (H, W), optional
        Needed only when ``X`` is given flattened.

    Attributes
    ----------
    pca_ : PCA
    components_ : ndarray (n_components, H, W)
        The eigenfaces.
    """

    def __init__(self, n_components=50, whiten: bool = False, n_neighbors: int = 1, image_shape=None):
        self.n_components = n_components
        self.whiten = whiten
        self.n_neighbors = n_neighbors
        self.image_shape = image_shape

    def _fit_features(self, G, y):
        n_comp = self.n_components
        if isinstance(n_comp, (int, np.integer)):
            n_comp = int(max(1, min(n_comp, len(G) - 1, G[0].size)))
        self.pca_ = PCA(n_components=n_comp, whiten=self.whiten, svd_solver="full").fit(G.reshape(len(G), -1))
        self.components_ = self.pca_.components_.reshape(-1, *G.shape[1:])

    def _features(self, G):
        return self.pca_.transform(G.reshape(len(G), -1))


class Fisherfaces(_NearestNeighbourFace):
    """Fisherfaces: PCA to ``n - c`` dimensions (so the within-class scatter is invertible), then LDA.

    Parameters
    ----------
    n_components : int, optional
        LDA dimensions (at most ``c - 1``; default ``c - 1``).
    pca_components : int, optional
        PCA dimensions before LDA (default ``n_samples - n_classes``, as in Belhumeur et al.).
    n_neighbors : int
    image_shape : (H, W), optional
    """

    def __init__(self, n_components=None, pca_components=None, n_neighbors: int = 1, image_shape=None):
        self.n_components = n_components
        self.pca_components = pca_components
        self.n_neighbors = n_neighbors
        self.image_shape = image_shape

    def _fit_features(self, G, y):
        n, c = len(G), len(self.classes_)
        if n <= c:
            raise ValueError(f"Fisherfaces needs more images than identities (n - c >= 1), got n={n}, c={c}")
        n_pca = self.pca_components if self.pca_components is not None else n - c
        n_pca = int(max(1, min(n_pca, n - c, G[0].size)))
        flat = G.reshape(n, -1)
        self.pca_ = PCA(n_components=n_pca, svd_solver="full").fit(flat)
        n_lda = min(c - 1, n_pca) if self.n_components is None else int(min(self.n_components, c - 1, n_pca))
        self.lda_ = LinearDiscriminantAnalysis(n_components=n_lda, solver="svd").fit(self.pca_.transform(flat), y)

    def _features(self, G):
        return self.lda_.transform(self.pca_.transform(G.reshape(len(G), -1)))


class LBPHistogram(_NearestNeighbourFace):
    """Local binary pattern histograms on a grid, compared with the chi-squared distance.

    Parameters
    ----------
    P, R : int, float
        Number of neighbours and radius of the LBP operator.
    grid : (rows, cols)
        Cells per image; one ``P + 2``-bin uniform-LBP histogram per cell (``method="uniform"``).
    method : str
        :func:`skimage.feature.local_binary_pattern` method: ``"uniform"`` (rotation-invariant, P+2 bins) or
        ``"nri_uniform"`` (P(P-1)+3 bins).
    n_neighbors : int
    image_shape : (H, W), optional
    """

    distance_name = "chi-squared"
    _needs_2d = True

    def __init__(self, P: int = 8, R: float = 1.0, grid=(7, 7), method: str = "nri_uniform", n_neighbors: int = 1,
                 image_shape=None):
        self.P = P
        self.R = R
        self.grid = grid
        self.method = method
        self.n_neighbors = n_neighbors
        self.image_shape = image_shape

    def distance(self, A, B) -> np.ndarray:
        """All chi-squared distances between histogram rows."""
        return chi2_distance(A, B)

    def paired_distance(self, A, B) -> np.ndarray:
        return paired_chi2_distance(A, B)

    def _n_bins(self) -> int:
        P = int(self.P)
        if self.method == "uniform":
            return P + 2
        if self.method == "nri_uniform":
            return P * (P - 1) + 3
        if self.method in ("default", "ror"):
            return 2**P
        raise ValueError(f"method must be 'uniform', 'nri_uniform', 'default' or 'ror', got {self.method!r}")

    def _fit_features(self, G, y):
        rows, cols = self.grid
        if rows < 1 or cols < 1 or rows > G.shape[1] or cols > G.shape[2]:
            raise ValueError(f"grid {self.grid} does not fit images of shape {G.shape[1:]}")
        self._n_bins()

    def _features(self, G):
        import warnings

        from skimage.feature import local_binary_pattern

        rows, cols = self.grid
        n_bins = self._n_bins()
        h, w = G.shape[1:]
        ys = np.linspace(0, h, rows + 1).astype(int)
        xs = np.linspace(0, w, cols + 1).astype(int)
        out = np.empty((len(G), rows * cols * n_bins))
        for k, img in enumerate(G):
            # skimage warns that float images lose precision in LBP; quantise to uint8 ourselves
            lo, hi = img.min(), img.max()
            u8 = np.zeros(img.shape, np.uint8) if hi <= lo else np.round(255 * (img - lo) / (hi - lo)).astype(np.uint8)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                codes = local_binary_pattern(u8, int(self.P), float(self.R), method=self.method).astype(np.int64)
            hists = []
            for r in range(rows):
                for c in range(cols):
                    cell = codes[ys[r]:ys[r + 1], xs[c]:xs[c + 1]]
                    hist = np.bincount(cell.ravel(), minlength=n_bins)[:n_bins].astype(np.float64)
                    hists.append(hist / max(cell.size, 1))
            out[k] = np.concatenate(hists)
        return out
