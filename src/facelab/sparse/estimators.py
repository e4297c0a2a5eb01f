"""Sparse-coding face classifiers (SRC, CRC, RSC, WCSC, WWCSC, 1-NN) and feature transformers, scikit-learn style.

Every classifier stores the gallery as a dictionary ``D`` (one unit-RMS atom per gallery image), codes each probe
over the whole dictionary, and decides by the **class-wise residual**: the class whose atoms alone reconstruct the
probe best wins. ``decision_function`` returns minus the class-wise residuals (larger = more likely).

One sample per class
--------------------
All classifiers accept galleries with a single image per class (the "single sample per person" setting): the
class subspace is then one-dimensional and the coding and the residual rule stay well defined (SRC degenerates to a
sparse nearest-subspace rule), but accuracy drops, as Wright et al. (2009) note. A gallery with fewer than two
classes is an error (there is nothing to decide between).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from facelab.core.images import luminance

from facelab.sparse.solvers import (
    ADMMResult,
    IdentityExtendedFactor,
    ShiftedGramFactor,
    _positive,
    lasso_admm,
    robust_admm,
    wing_loss,
)

__all__ = [
    "Downsample",
    "RandomProjection",
    "SRC",
    "CRC",
    "RSC",
    "WCSC",
    "WWCSC",
    "NearestNeighbor",
    "RSC_SETTINGS",
    "unit_rms",
]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


# --------------------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------------------
def _to_numpy(X, name: str = "X") -> np.ndarray:
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    X = np.asarray(X)
    if X.dtype == object or not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
        raise ValueError(f"{name} must hold numbers, got dtype {X.dtype}")
    return X


def _check_finite(X: np.ndarray, name: str = "X") -> None:
    if np.issubdtype(X.dtype, np.floating) and not np.isfinite(X).all():
        bad = int((~np.isfinite(X)).sum())
        rows = np.unique(np.nonzero(~np.isfinite(X.reshape(len(X), -1)))[0])[:5].tolist()
        raise ValueError(
            f"{name} contains {bad} NaN or infinite values (first bad samples: {rows}); "
            "replace or drop them before coding (e.g. clip corrupted pixels to [0, 1])"
        )


def _check_2d(X, name: str = "X") -> np.ndarray:
    X = _to_numpy(X, name)
    if X.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array (n_samples, n_features), got shape {X.shape}; turn images into features "
            "first with Downsample() or RandomProjection() (e.g. in a Pipeline)"
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {X.shape}")
    _check_finite(X, name)
    return X


def unit_rms(F: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Scale each vector along ``dim`` to unit root-mean-square (an all-zero vector stays zero)."""
    rms = F.pow(2).mean(dim=dim, keepdim=True).sqrt()
    return F / rms.clamp_min(torch.finfo(F.dtype).tiny * 1e6)


def _images_to_tensor(X, name: str = "X") -> torch.Tensor:
    """(N, C, H, W) or (N, H, W) images -> float tensor (N, 1, H, W), gray."""
    if isinstance(X, torch.Tensor):
        t = X.detach().cpu()
    else:
        t = torch.as_tensor(_to_numpy(X, name))
    t = t.float()
    if t.ndim == 3:
        t = t[:, None]
    if t.ndim != 4:
        raise ValueError(f"{name} must be images shaped (N, C, H, W) or (N, H, W), got shape {tuple(t.shape)}")
    if t.shape[1] not in (1, 3):
        raise ValueError(f"{name} must have 1 or 3 channels in dimension 1, got {t.shape[1]} (shape {tuple(t.shape)})")
    if not torch.isfinite(t).all():
        _check_finite(t.numpy(), name)
    if t.shape[1] == 3:
        t = luminance(t)
    return t


# --------------------------------------------------------------------------------------------------------------
# Feature transformers
# --------------------------------------------------------------------------------------------------------------
class Downsample(TransformerMixin, BaseEstimator):
    """Gray, area-downsampled pixels as features (Wright et al. 2009 used 12x10 ... 24x21 images).

    Keeps the pixel layout, so per-pixel weights (WWCSC, RSC) can be shown as images: ``inverse_shape`` is the
    (height, width) to reshape a feature vector to.

    Parameters
    ----------
    size : tuple of int
        Output (height, width).

    Examples
    --------
    >>> X = np.random.rand(5, 3, 112, 112).astype("float32")
    >>> Downsample(size=(16, 12)).fit_transform(X).shape
    (5, 192)
    """

    def __init__(self, size=(24, 24)):
        self.size = size

    def _check_size(self):
        size = tuple(int(s) for s in np.atleast_1d(self.size))
        if len(size) == 1:
            size = size * 2
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"size must be a positive (height, width), got {self.size!r}")
        return size

    def fit(self, X, y=None):
        self.size_ = self._check_size()
        t = _images_to_tensor(X)
        self.input_shape_ = tuple(t.shape[-2:])
        self.n_features_out_ = self.size_[0] * self.size_[1]
        return self

    @property
    def inverse_shape(self):
        return self.size_

    def transform(self, X):
        check_is_fitted(self, "size_")
        t = _images_to_tensor(X)
        if tuple(t.shape[-2:]) != self.input_shape_:
            raise ValueError(f"X has images of size {tuple(t.shape[-2:])}, but Downsample was fitted on "
                             f"{self.input_shape_}")
        out = torch.nn.functional.adaptive_avg_pool2d(t, self.size_)
        return out.reshape(len(t), -1).numpy()


class RandomProjection(TransformerMixin, BaseEstimator):
    """Gaussian random projection of the (gray) pixels: the "randomfaces" of Wright et al. (2009), used by WCSC.

    Parameters
    ----------
    n_components : int
        Output dimension (> 0).
    random_state : int
        Seed of the projection matrix.
    """

    def __init__(self, n_components: int = 300, random_state: int = 0):
        self.n_components = n_components
        self.random_state = random_state

    def _flat(self, X):
        X = _to_numpy(X) if not isinstance(X, torch.Tensor) else X
        if getattr(X, "ndim", 0) in (3, 4):
            return _images_to_tensor(X).reshape(len(X), -1).numpy()
        return _check_2d(X)

    def fit(self, X, y=None):
        if isinstance(self.n_components, bool) or int(self.n_components) != self.n_components or self.n_components < 1:
            raise ValueError(f"n_components must be a positive integer, got {self.n_components!r}")
        F = self._flat(X)
        rng = np.random.default_rng(self.random_state)
        self.n_features_in_ = F.shape[1]
        self.components_ = (rng.standard_normal((int(self.n_components), F.shape[1]))
                            / math.sqrt(self.n_components)).astype(np.float32)
        return self

    def transform(self, X):
        check_is_fitted(self, "components_")
        F = self._flat(X)
        if F.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {F.shape[1]} features, but RandomProjection was fitted with {self.n_features_in_}")
        return F.astype(np.float32) @ self.components_.T


# --------------------------------------------------------------------------------------------------------------
# Classifiers
# --------------------------------------------------------------------------------------------------------------
class _ResidualClassifier(ClassifierMixin, BaseEstimator):
    """Shared fit/predict: gallery -> unit-RMS dictionary, probes coded in batches, class-wise residual rule."""

    def _device(self):
        from facelab.runtime import resolve_device

        return resolve_device(self.device) if isinstance(self.device, str) else torch.device(self.device)

    def _dtype(self):
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {tuple(_DTYPES)}, got {self.dtype!r}")
        return _DTYPES[self.dtype]

    def _validate_params(self):  # overridden by subclasses that have more parameters
        if isinstance(self.batch_size, bool) or int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")

    def fit(self, X, y):
        """Store the gallery ``X`` (n_samples, n_features) with labels ``y`` as the dictionary."""
        self._validate_params()
        X = _check_2d(X, "X")
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != len(X):
            raise ValueError(f"y must be 1-D with one label per row of X ({len(X)}), got shape {y.shape}")
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"the gallery must hold at least 2 classes to classify, got {len(self.classes_)}")
        counts = np.bincount(y_idx)
        self.n_samples_per_class_ = counts
        self.n_features_in_ = X.shape[1]
        dev, dt = self._device(), self._dtype()
        D = torch.as_tensor(X, dtype=dt, device=dev).T.contiguous()  # (m, n): one atom per column
        if bool((D.pow(2).sum(0) == 0).any()):
            raise ValueError("X contains an all-zero gallery sample; it cannot be a dictionary atom")
        self.dictionary_ = unit_rms(D, dim=0)
        self.atom_class_ = torch.as_tensor(y_idx, device=dev)
        self._fit_extra()
        return self

    def _fit_extra(self):
        pass

    def _probes(self, X) -> torch.Tensor:
        check_is_fitted(self, "dictionary_")
        X = _check_2d(X, "X")
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} was fitted with "
                             f"{self.n_features_in_} (dictionary and probe dimensions must match)")
        Y = torch.as_tensor(X, dtype=self.dictionary_.dtype, device=self.dictionary_.device).T
        return unit_rms(Y, dim=0)

    def _batches(self, X):
        Y = self._probes(X)
        b = int(self.batch_size)
        for i in range(0, Y.shape[1], b):
            yield Y[:, i:i + b]

    def _class_residuals(self, Y, coef, fn):
        """(k, n_classes) tensor of fn(Y - D_c coef_c) for every class c (fn reduces over pixels)."""
        out = []
        D = self.dictionary_
        for c in range(len(self.classes_)):
            idx = self.atom_class_ == c
            out.append(fn(Y - D[:, idx] @ coef[idx]))
        return torch.stack(out, dim=1)

    def _scores(self, Y) -> torch.Tensor:  # (k, n_classes), larger = better
        raise NotImplementedError

    def decision_function(self, X) -> np.ndarray:
        """Minus the class-wise residual of every probe, shape (n_samples, n_classes)."""
        return torch.cat([self._scores(Y) for Y in self._batches(X)]).cpu().numpy()

    def predict(self, X) -> np.ndarray:
        """The class with the smallest class-wise residual."""
        return self.classes_[self.decision_function(X).argmax(axis=1)]


def _common_checks(est, *names):
    for n in names:
        _positive(n, getattr(est, n))


def _int_at_least(name, value, low):
    if isinstance(value, bool) or int(value) != value or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


class NearestNeighbor(_ResidualClassifier):
    """1-nearest-neighbour baseline on unit-RMS features (distance to the closest gallery image of each class)."""

    def __init__(self, device: str = "cpu", dtype: str = "float32", batch_size: int = 1024):
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size

    def _scores(self, Y):
        d = torch.cdist(Y.T, self.dictionary_.T)  # (k, n)
        out = torch.full((Y.shape[1], len(self.classes_)), float("inf"), dtype=d.dtype, device=d.device)
        out = out.scatter_reduce(1, self.atom_class_.expand_as(d), d, reduce="amin")
        return -out


class CRC(_ResidualClassifier):
    """Collaborative representation classification (Zhang et al. 2011), closed form.

    ``x = (D^T D + m lam I)^{-1} D^T y`` (ridge with the mean-over-pixels data term), decided by the regularized
    residual ``||y - D_c x_c|| / ||x_c||``. The projection matrix is computed once in ``fit``.

    Parameters
    ----------
    lam : float
        Ridge weight (> 0).
    """

    def __init__(self, lam: float = 1e-3, device: str = "cpu", dtype: str = "float64", batch_size: int = 1024):
        self.lam = lam
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size

    def _validate_params(self):
        super()._validate_params()
        _common_checks(self, "lam")

    def _fit_extra(self):
        D = self.dictionary_
        factor = ShiftedGramFactor(D, D.shape[0] * float(self.lam))
        self.projection_ = factor.solve(D.T)  # (n, m)

    def encode(self, X) -> torch.Tensor:
        """Codes of the probes, shape (n_atoms, n_samples)."""
        return torch.cat([self.projection_ @ Y for Y in self._batches(X)], dim=1)

    def _scores(self, Y):
        coef = self.projection_ @ Y
        res = self._class_residuals(Y, coef, lambda R: torch.linalg.vector_norm(R, dim=0))
        norms = torch.stack([torch.linalg.vector_norm(coef[self.atom_class_ == c], dim=0)
                             for c in range(len(self.classes_))], dim=1)
        return -res / norms.clamp_min(1e-12)


class SRC(_ResidualClassifier):
    """Sparse representation-based classification (Wright et al. 2009), solved by batched ADMM.

    ``min_x ||y - D x||^2 / (2m) + lam ||x||_1`` (scikit-learn's Lasso scaling), class = ``argmin_c
    ||y - D_c x_c||``. With ``extended=True`` the dictionary is extended by the identity, ``B = [D, I]``, so that a
    sparse error ``e`` can absorb occluded or corrupted pixels (Wright et al., section 3.2): the code is
    ``[x; e]`` and the residual rule uses ``y - e - D_c x_c``.

    Parameters
    ----------
    lam : float
        l1 weight (> 0).
    extended : bool
        Use the identity-extended dictionary (robust SRC for occlusion).
    rho : float, optional
        ADMM penalty; default ``lam``.
    max_iter : int
    tol : float
        Relative primal/dual tolerance (absolute tolerance ``tol / 100``).
    """

    def __init__(self, lam: float = 1e-2, extended: bool = False, rho: float | None = None, max_iter: int = 300,
                 tol: float = 1e-3, device: str = "cpu", dtype: str = "float64", batch_size: int = 512):
        self.lam = lam
        self.extended = extended
        self.rho = rho
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size

    def _validate_params(self):
        super()._validate_params()
        _common_checks(self, "lam", "tol")
        if self.rho is not None:
            _common_checks(self, "rho")
        _int_at_least("max_iter", self.max_iter, 1)

    def _fit_extra(self):
        D = self.dictionary_
        m = D.shape[0]
        if self.extended:
            D = torch.cat([D, math.sqrt(m) * torch.eye(m, dtype=D.dtype, device=D.device)], dim=1)
        self.coding_dictionary_ = D
        self.rho_ = float(self.lam) if self.rho is None else float(self.rho)
        if self.extended:  # structured solve: no (n + m)-sized factorization
            self.factor_ = IdentityExtendedFactor(self.dictionary_, math.sqrt(m), m * self.rho_)
        else:
            self.factor_ = ShiftedGramFactor(D, m * self.rho_)

    def _solve(self, Y, record=False) -> ADMMResult:
        return lasso_admm(self.coding_dictionary_, Y, float(self.lam), rho=self.rho_, max_iter=int(self.max_iter),
                          abs_tol=float(self.tol) / 100, rel_tol=float(self.tol), factor=self.factor_,
                          record=record)

    def encode(self, X, record: bool = True) -> ADMMResult:
        """Code all probes at once (one batch) and return the full :class:`ADMMResult` with its history."""
        return self._solve(self._probes(X), record=record)

    def _scores(self, Y):
        res = self._solve(Y)
        n = self.dictionary_.shape[1]
        coef = res.coef[:n]
        if self.extended:
            Y = Y - math.sqrt(Y.shape[0]) * res.coef[n:]
        return -self._class_residuals(Y, coef, lambda R: torch.linalg.vector_norm(R, dim=0))


def _check_tau(tau):
    try:
        t = float(tau)
    except (TypeError, ValueError):
        raise ValueError(f"tau must be a number in (0, 1), got {tau!r}") from None
    if not 0.0 < t < 1.0:
        raise ValueError(f"tau must be in (0, 1) (the quantile of the squared residuals that sets the weight "
                         f"threshold), got {tau!r}")
    return t


class _RobustCoder(_ResidualClassifier):
    """Shared code of RSC, WCSC, WWCSC: the split-residual ADMM with a per-pixel fidelity."""

    fidelity = "wing"

    def _validate_params(self):
        super()._validate_params()
        _common_checks(self, "lam", "rho", "mu", "tol")
        _int_at_least("max_iter", self.max_iter, 1)
        if self.fidelity == "wing":
            _common_checks(self, "w", "epsilon")
        if hasattr(self, "n_reweight"):
            _int_at_least("n_reweight", self.n_reweight, 0)
            _common_checks(self, "c")
            _check_tau(self.tau)
        if hasattr(self, "init") and self.init not in ("mean", "unit"):
            raise ValueError(f"init must be 'mean' (weights from the residual to the mean face) or 'unit', "
                             f"got {self.init!r}")

    def _fit_extra(self):
        D = self.dictionary_
        self.factor_ = ShiftedGramFactor(D, float(self.rho) * D.shape[0] / float(self.mu))
        self.mean_atom_ = D.mean(dim=1, keepdim=True)

    def _kwargs(self):
        kw = dict(fidelity=self.fidelity, rho=float(self.rho), mu=float(self.mu), max_iter=int(self.max_iter),
                  abs_tol=float(self.tol) / 100, rel_tol=float(self.tol), factor=self.factor_)
        if self.fidelity == "wing":
            kw.update(w=float(self.w), epsilon=float(self.epsilon))
        if hasattr(self, "n_reweight"):
            kw.update(reweight=int(self.n_reweight), tau=float(self.tau), c=float(self.c))
        return kw

    def _solve(self, Y, record=False) -> ADMMResult:
        kw = self._kwargs()
        if getattr(self, "init", "unit") == "mean" and kw.get("reweight", 0) > 0:
            kw["initial_residual"] = Y - self.mean_atom_
        return robust_admm(self.dictionary_, Y, float(self.lam), record=record, **kw)

    def encode(self, X, record: bool = True) -> ADMMResult:
        """Code all probes at once and return the :class:`ADMMResult` (codes, weights, history)."""
        return self._solve(self._probes(X), record=record)

    def _residual_fn(self, weights):
        if self.fidelity == "wing":
            def fn(R):
                f = wing_loss(R, float(self.w), float(self.epsilon))
                return (f if weights is None else f * weights).mean(0)
        else:
            def fn(R):
                f = R * R
                return (f if weights is None else f * weights).mean(0).sqrt()
        return fn

    def _scores(self, Y):
        res = self._solve(Y)
        return -self._class_residuals(Y, res.coef, self._residual_fn(res.weights))


class WCSC(_RobustCoder):
    """Wing-constrained sparse coding (Yun & Xu 2025): Wing-loss fidelity + l1 code, solved by ADMM.

    ``min_x (1/m) sum_i wing((y - Dx)_i) + lam ||x||_1``; class = smallest class-wise Wing residual
    ``(1/m) sum_i wing((y - D_c x_c)_i)``. Features are unit-RMS, so ``w`` and ``epsilon`` are in units of the
    RMS pixel value.

    Parameters
    ----------
    lam : float
        l1 weight (> 0).
    w, epsilon : float
        Wing loss parameters (> 0): log branch below ``w``, curvature set by ``epsilon``.
    rho, mu : float
        ADMM penalties on ``x = z`` and on ``e = y - Dx`` (> 0).
    max_iter : int
        ADMM iterations (per reweighting round for WWCSC).
    tol : float
        Relative primal/dual tolerance.
    """

    fidelity = "wing"

    def __init__(self, lam: float = 1e-2, w: float = 1.0, epsilon: float = 0.3, rho: float = 0.1,
                 mu: float = 10.0, max_iter: int = 100, tol: float = 1e-3, device: str = "cpu",
                 dtype: str = "float64", batch_size: int = 512):
        self.lam = lam
        self.w = w
        self.epsilon = epsilon
        self.rho = rho
        self.mu = mu
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size


class WWCSC(WCSC):
    """Weighted Wing-constrained sparse coding: WCSC with per-pixel weights learned by reweighting.

    With ``init="unit"`` (default) the first round is plain WCSC (unit weights); with ``init="mean"`` the first
    weights come from the residual to the mean gallery face, as in RSC, so that a heavily occluded probe is not
    first coded blind. (The default was measured on a validation world of the synthetic face world, not on the
    chapter's test worlds: there the mean-face start lost at 40 % and 60 % blocks, since with ``tau=0.6`` it
    distrusts the most identity-bearing pixels; chapter 03 repeats the validation.) Each round after the first sets ``v_i = 1 / (1 + exp(beta (r_i^2 - delta)))`` from the
    current residual ``r = y - D x`` (``delta`` = ``tau``-quantile of ``r^2``, ``beta = c / delta``) and solves
    ``min_x (1/m) sum_i v_i wing(r_i) + lam ||x||_1`` again, warm-started. Occluded pixels, which the clean gallery
    cannot explain, get weights near zero. With ``n_reweight=0`` this is exactly :class:`WCSC`. The weights of the
    last round are in ``encode(X).weights`` (one column per probe; reshape with ``Downsample.inverse_shape``).

    Parameters
    ----------
    n_reweight : int
        Reweighting rounds (>= 0).
    tau : float in (0, 1)
        Quantile of the squared residuals that sets the weight threshold ``delta``.
    c : float
        Steepness of the weight function (``beta = c / delta``).
    init : {"unit", "mean"}
        First weights: all one (``"unit"``, = WCSC) or from the residual to the mean gallery face (``"mean"``).
        Ignored when ``n_reweight=0`` (then this is exactly WCSC).
    (others as in :class:`WCSC`)
    """

    def __init__(self, lam: float = 1e-2, w: float = 1.0, epsilon: float = 0.3, rho: float = 0.1,
                 mu: float = 10.0, max_iter: int = 60, tol: float = 1e-3, n_reweight: int = 3, tau: float = 0.6,
                 c: float = 8.0, init: str = "unit", device: str = "cpu", dtype: str = "float64",
                 batch_size: int = 512):
        super().__init__(lam=lam, w=w, epsilon=epsilon, rho=rho, mu=mu, max_iter=max_iter, tol=tol, device=device,
                         dtype=dtype, batch_size=batch_size)
        self.n_reweight = n_reweight
        self.tau = tau
        self.c = c
        self.init = init


#: RSC's settings in Yang et al.'s demos: tau (quantile of the squared residuals), lambda relative to the weighted
#: probe norm, and the number of reweighting rounds, for clean probes and for occluded ones.
RSC_SETTINGS = {
    "clean": {"tau": 0.8, "lam": 0.001, "n_rounds": 2},
    "occlusion": {"tau": 0.7, "lam": 0.005, "n_rounds": 10},
}


class RSC(_RobustCoder):
    """Robust sparse coding (Yang et al. 2011), run as in its authors' demos.

    Each round ``t = 1 .. n_rounds`` computes logistic weights ``w = 1 / (1 + exp(beta (r^2 - delta)))`` from the
    current residual (round 1: the residual to the mean gallery face; ``delta`` = ``tau``-quantile of ``r^2``,
    ``beta = c / delta``), multiplies **both** the probe and the dictionary by ``w`` (so the squared residual is
    weighted by ``w^2``), re-normalises the weighted probe and every weighted atom to unit norm, and solves the
    Lasso ``||y' - D' a||^2 + lam' ||a||_1`` with ``lam' = lam * ||W y||`` (``y`` of unit norm). In this package's
    scaling that is exactly

    ``min_x (1/2m) sum_i w_i^2 (y - Dx)_i^2 + (lam * s / 2) sum_j n_j |x_j|``

    with ``s`` the weighted RMS of the probe and ``n_j`` that of atom ``j`` (unit-RMS features): one shared
    factorization codes every probe (:func:`~facelab.sparse.robust_admm` with per-entry l1 weights), each round a
    fresh ADMM run. Class = smallest weighted residual ``||w (y - D_c x_c)||``.

    Parameters
    ----------
    setting : {"occlusion", "clean"}
        The authors' defaults: occlusion ``tau=0.7, lam=0.005, n_rounds=10``; clean ``tau=0.8, lam=0.001,
        n_rounds=2``. Any of ``tau``, ``lam``, ``n_rounds`` given explicitly overrides the setting.
    tau : float in (0, 1), optional
    lam : float, optional
        Lambda relative to the weighted probe norm (``lam' = lam ||W y||``).
    n_rounds : int >= 1, optional
        Weighted sparse-coding rounds (the first uses the mean-face weights).
    c : float
        Steepness (``beta = c / delta``; 8 in the authors' code).
    rho, mu, max_iter, tol : ADMM penalties, iterations per round and relative tolerance.

    Notes
    -----
    The authors also project clean probes and the weighted dictionary onto eigenfaces before coding; this class
    codes the weighted pixels directly (the projection would need one factorization per probe).
    """

    fidelity = "square"

    def __init__(self, setting: str = "occlusion", tau: float | None = None, lam: float | None = None,
                 n_rounds: int | None = None, c: float = 8.0, rho: float = 1e-2, mu: float = 1.0,
                 max_iter: int = 200, tol: float = 1e-3, device: str = "cpu", dtype: str = "float64",
                 batch_size: int = 512):
        self.setting = setting
        self.tau = tau
        self.lam = lam
        self.n_rounds = n_rounds
        self.c = c
        self.rho = rho
        self.mu = mu
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size

    def _resolved(self) -> dict:
        if self.setting not in RSC_SETTINGS:
            raise ValueError(f"setting must be one of {tuple(RSC_SETTINGS)}, got {self.setting!r}")
        out = dict(RSC_SETTINGS[self.setting])
        for k in out:
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out

    def _validate_params(self):
        if isinstance(self.batch_size, bool) or int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        r = self._resolved()
        _positive("lam", r["lam"])
        _check_tau(r["tau"])
        _int_at_least("n_rounds", r["n_rounds"], 1)
        _common_checks(self, "rho", "mu", "tol", "c")
        _int_at_least("max_iter", self.max_iter, 1)

    def _solve(self, Y, record=False) -> ADMMResult:
        from facelab.sparse.solvers import _History, logistic_weights

        r = self._resolved()
        D = self.dictionary_
        residual = Y - self.mean_atom_
        hist = _History(record)
        rounds_w, rounds_c, rounds_i, rounds_z, total = [], [], [], [], 0
        res = None
        for t in range(int(r["n_rounds"])):
            w = logistic_weights(residual, float(r["tau"]), float(self.c))
            v = w * w
            s = (v * Y * Y).mean(0, keepdim=True).sqrt()  # weighted RMS of each probe, (1, k)
            atom_rms = (v.T @ (D * D) / D.shape[0]).sqrt().T  # (n, k): weighted RMS of every atom per probe
            res = robust_admm(D, Y, float(r["lam"]) / 2, fidelity="square", weights=v, l1_weights=s * atom_rms,
                              rho=float(self.rho), mu=float(self.mu), max_iter=int(self.max_iter),
                              abs_tol=float(self.tol) / 100, rel_tol=float(self.tol), factor=self.factor_,
                              record=record)
            if record:
                res.history["round"] = np.full_like(res.history["primal"], t)
                for k, val in res.history.items():
                    hist.rows[k].extend(list(val))
            residual = Y - D @ res.coef
            rounds_w.append(w)
            rounds_c.append(res.converged)
            rounds_i.append(res.n_iter)
            rounds_z.append(res.coef)
            total += res.n_iter
        return ADMMResult(coef=res.coef, error=res.error, weights=w, n_iter=total, converged=res.converged,
                          history=hist.arrays(), round_weights=rounds_w, round_converged=rounds_c,
                          round_iterations=rounds_i, round_coef=rounds_z)

    def _residual_fn(self, weights):
        def fn(R):
            return ((weights * R) ** 2).mean(0).sqrt()
        return fn
