"""The EmotiEffLib ABAW-8 pipeline (issue 15, item 4): pooled frame features, a one-hidden-layer MLP, frame
selection by the pretrained net's confidence, temporal smoothing, modality fusion and the ablation.

* :func:`pool_frames` / :func:`pool_clips`: per-clip mean / std / max of frame features, NaN-aware (frames with no
  face are rows of NaN: they are left out of the statistics and *counted*, never dropped silently).
* :class:`MLPHead`: one hidden layer (torch), standardised inputs (NaN imputed with the training mean), early
  stopping on a validation split of the *training* data (split by group, e.g. by clip, for frame-level tasks), for
  classification (ambivalence/hesitancy per clip, expression per frame) and regression (the six mimicry intensities).
* :func:`select_frames`: the pretrained net's confident frames (max probability above ``threshold``) keep its label,
  mapped to ABAW's eight classes (:func:`facelab.affect.descriptors.to_abaw`); the other frames take the trained
  classifier's. :func:`choose_threshold` picks the threshold on validation data.
* :func:`smooth_probabilities`: a mean or median filter over a window of frames, per clip (never across clip
  boundaries); :func:`choose_window` picks the window on validation data.
* :func:`fuse`: concatenation of pooled modality descriptors (face / voice / words).
* :func:`run_ablation`: face, voice, words, fusion (ambivalence/hesitancy); with and without frame selection and
  smoothing (expression); ASR vs true transcript; mimicry. Returns a DataFrame with bootstrap intervals over clips
  and paired comparisons against the best single modality / the plain classifier.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from facelab.metrics import (ABAW_EXPRESSIONS, ah_f1, bootstrap_ci, expression_f1, mimicry_score,
                             paired_bootstrap, with_interval)

STATS = ("mean", "std", "max")
N_EXPRESSIONS = len(ABAW_EXPRESSIONS)


# ------------------------------------------------------------------ pooling
@dataclass
class Pooled:
    """Pooled descriptor of one clip: ``vector`` (len(stats) * D,), NaN where every frame is missing (only with
    ``all_missing="nan"``), ``n_missing`` frames without a face out of ``n_frames``."""

    vector: np.ndarray
    n_missing: int
    n_frames: int

    @property
    def missing_fraction(self) -> float:
        return self.n_missing / self.n_frames


def _frame_matrix(features, name: str = "features") -> np.ndarray:
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a (T, D) array of per-frame features, got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} has no frames (T = 0): expected at least one frame")
    return x


def pool_frames(features, *, present=None, stats: Sequence[str] = STATS, all_missing: str = "raise") -> Pooled:
    """Pool per-frame features ``(T, D)`` into one clip vector: the ``stats`` (``mean``, ``std``, ``max``, ``min``)
    of each column over the frames that have a face, concatenated in that order.

    A frame is missing when its row has a NaN or ``present[t]`` is False; missing frames are left out and counted.
    When every frame is missing, ``all_missing="raise"`` (default) raises ValueError, ``"nan"`` returns NaNs.
    """
    x = _frame_matrix(features)
    stats = tuple(stats)
    unknown = [s for s in stats if s not in ("mean", "std", "max", "min")]
    if unknown or not stats:
        raise ValueError(f"unknown pooling statistic(s) {unknown}: expected a non-empty subset of mean, std, max, min")
    if all_missing not in ("raise", "nan"):
        raise ValueError(f"all_missing must be 'raise' or 'nan', got {all_missing!r}")
    ok = ~np.isnan(x).any(axis=1)
    if present is not None:
        present = np.asarray(present, dtype=bool).reshape(-1)
        if present.shape[0] != x.shape[0]:
            raise ValueError(f"present has {present.shape[0]} entries but features have {x.shape[0]} frames: "
                             "expected one flag per frame")
        ok &= present
    n_missing = int((~ok).sum())
    if not ok.any():
        if all_missing == "raise":
            raise ValueError(f"all {x.shape[0]} frames are missing (no face detected): nothing to pool; "
                             "pass all_missing='nan' to get a NaN vector instead")
        return Pooled(np.full(len(stats) * x.shape[1], np.nan, np.float32), n_missing, x.shape[0])
    v = x[ok]
    fns = {"mean": np.mean, "std": np.std, "max": np.max, "min": np.min}
    vec = np.concatenate([fns[s](v, axis=0) for s in stats]).astype(np.float32)
    return Pooled(vec, n_missing, x.shape[0])


def pool_clips(clips: Sequence, *, presents: Sequence | None = None, stats: Sequence[str] = STATS,
               all_missing: str = "nan") -> tuple[np.ndarray, np.ndarray]:
    """:func:`pool_frames` over clips: ``(X (N, len(stats) * D), n_missing (N,))``. Here a clip with no face at all
    gives a NaN row by default (the MLP imputes it); ``all_missing="raise"`` refuses it."""
    if len(clips) == 0:
        raise ValueError("no clips to pool: expected at least one (T, D) array")
    if presents is not None and len(presents) != len(clips):
        raise ValueError(f"presents has {len(presents)} entries for {len(clips)} clips: expected one per clip")
    pooled = [pool_frames(c, present=None if presents is None else presents[i], stats=stats, all_missing=all_missing)
              for i, c in enumerate(clips)]
    dims = {p.vector.shape[0] for p in pooled}
    if len(dims) > 1:
        raise ValueError(f"clips have different feature dimensions (pooled sizes {sorted(dims)}): expected one D")
    return np.stack([p.vector for p in pooled]), np.array([p.n_missing for p in pooled])


def fuse(*blocks) -> np.ndarray:
    """Concatenate per-clip descriptors of several modalities (each ``(N, D_k)``) into ``(N, sum D_k)``."""
    if not blocks:
        raise ValueError("fuse needs at least one modality block (N, D)")
    arrs = []
    for k, b in enumerate(blocks):
        if isinstance(b, torch.Tensor):
            b = b.detach().cpu().numpy()
        a = np.asarray(b, dtype=np.float32)
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2:
            raise ValueError(f"modality block {k} must be (N, D), got shape {a.shape}")
        arrs.append(a)
    ns = [a.shape[0] for a in arrs]
    if len(set(ns)) > 1:
        raise ValueError(f"modality blocks have different numbers of clips {ns}: expected the same N for each")
    return np.concatenate(arrs, axis=1)


def reduce_block(X, train_idx, n_components: int | None) -> np.ndarray:
    """Standardise a modality block (N, D) with the mean / std of the ``train_idx`` rows (NaN -> training mean) and
    project it on at most ``n_components`` principal axes fitted on those rows only (None: standardise only).
    Keeps a high-dimensional block (pooled face features) from swamping a small one (voice) when fused."""
    X = np.asarray(X, np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be (N, D), got shape {X.shape}")
    tr = np.asarray(train_idx)
    if tr.size < 2:
        raise ValueError(f"reduce_block needs at least 2 training rows, got {tr.size}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean, std = np.nanmean(X[tr], 0), np.nanstd(X[tr], 0)
    mean = np.where(np.isnan(mean), 0.0, mean)
    std = np.where(~np.isfinite(std) | (std < 1e-8), 1.0, std)
    Z = np.where(np.isnan(X), 0.0, (X - mean) / std)
    if n_components is None or n_components >= min(Z.shape[1], tr.size):
        return Z.astype(np.float32)
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1 or None, got {n_components}")
    _, _, vt = np.linalg.svd(Z[tr], full_matrices=False)
    return (Z @ vt[:n_components].T).astype(np.float32)


# ------------------------------------------------------------------ the MLP
def _device(device) -> torch.device:
    return torch.device(device) if device is not None else torch.device("cpu")


def _split(n: int, val_fraction: float, rng: np.random.Generator, groups=None) -> tuple[np.ndarray, np.ndarray]:
    if groups is None:
        groups = np.arange(n)
    groups = np.asarray(groups)
    if groups.shape[0] != n:
        raise ValueError(f"groups has {groups.shape[0]} entries for {n} samples: expected one per sample")
    uniq = np.unique(groups)
    if len(uniq) < 2:
        raise ValueError(f"early stopping needs at least 2 groups (clips) to hold out a validation split, got {len(uniq)}")
    n_val = min(len(uniq) - 1, max(1, int(round(val_fraction * len(uniq)))))
    val_groups = rng.permutation(uniq)[:n_val]
    is_val = np.isin(groups, val_groups)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


class MLPHead:
    """One-hidden-layer MLP: ``Linear(D, hidden) - ReLU - Dropout - Linear(hidden, out)``.

    ``task="classification"`` (``n_classes`` outputs, cross-entropy; labels 0..n_classes-1) or ``"regression"``
    (``y`` of shape (N, K), mean squared error on standardised targets). Inputs are standardised with the training
    mean / std; NaN entries (missing faces, silent audio) become the training mean. ``fit`` holds out
    ``val_fraction`` of the training data (by ``groups`` when given, e.g. clip ids for frame-level data), trains with
    Adam and stops when the validation loss has not improved for ``patience`` epochs, keeping the best weights.
    Deterministic for a given ``seed`` on a given device.
    """

    def __init__(self, task: str = "classification", *, n_classes: int | None = None, hidden: int = 64,
                 dropout: float = 0.2, lr: float = 3e-3, weight_decay: float = 1e-3, max_epochs: int = 300,
                 patience: int = 20, batch_size: int = 512, val_fraction: float = 0.2, class_weight: bool = True,
                 device=None, seed: int = 0):
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
        if task == "classification" and (n_classes is None or n_classes < 2):
            raise ValueError(f"classification needs n_classes >= 2, got {n_classes}")
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.task, self.n_classes, self.hidden, self.dropout = task, n_classes, hidden, dropout
        self.lr, self.weight_decay, self.max_epochs, self.patience = lr, weight_decay, max_epochs, patience
        self.batch_size, self.val_fraction, self.class_weight = batch_size, val_fraction, class_weight
        self.device, self.seed = _device(device), seed
        self.net = None
        self.history: list[tuple[float, float]] = []
        self.best_epoch = -1

    # -- data
    def _x(self, X) -> np.ndarray:
        if isinstance(X, torch.Tensor):
            X = X.detach().cpu().numpy()
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"X must be (N, D), got shape {X.shape}")
        return X

    def _standardise(self, X: np.ndarray) -> torch.Tensor:
        if X.shape[1] != self.mean_.shape[0]:
            raise ValueError(f"X has {X.shape[1]} features, the head was fitted on {self.mean_.shape[0]}")
        Z = (X - self.mean_) / self.scale_
        Z = np.where(np.isnan(Z), 0.0, Z)
        return torch.as_tensor(Z, dtype=torch.float32, device=self.device)

    def _y(self, y, n: int) -> np.ndarray:
        if isinstance(y, torch.Tensor):
            y = y.detach().cpu().numpy()
        y = np.asarray(y)
        if y.shape[0] != n:
            raise ValueError(f"X has {n} rows but y has {y.shape[0]}: expected one label per row")
        if self.task == "classification":
            if y.ndim != 1:
                raise ValueError(f"classification labels must be 1-D class indices, got shape {y.shape}")
            if not np.issubdtype(y.dtype, np.integer):
                if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
                    y = y.astype(np.int64)
                else:
                    raise ValueError(f"classification labels must be integer class indices, got dtype {y.dtype}")
            bad = (y < 0) | (y >= self.n_classes)
            if bad.any():
                raise ValueError(f"labels must be in 0..{self.n_classes - 1}, got {np.unique(y[bad])[:5].tolist()}")
            return y.astype(np.int64)
        y = y.astype(np.float64)
        if y.ndim == 1:
            y = y[:, None]
        if not np.all(np.isfinite(y)):
            raise ValueError("regression targets contain NaN or inf")
        return y

    def fit(self, X, y, *, groups=None) -> "MLPHead":
        X = self._x(X)
        y = self._y(y, X.shape[0])
        rng = np.random.default_rng(self.seed)
        tr, va = _split(X.shape[0], self.val_fraction, rng, groups)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: mean 0, scale 1
            mean = np.nanmean(X[tr], axis=0)
            scale = np.nanstd(X[tr], axis=0)
        self.mean_ = np.where(np.isnan(mean), 0.0, mean)
        self.scale_ = np.where(~np.isfinite(scale) | (scale < 1e-8), 1.0, scale)
        Xt = self._standardise(X)
        if self.task == "classification":
            out_dim = self.n_classes
            Y = torch.as_tensor(y, device=self.device)
            if self.class_weight:
                counts = np.bincount(y[tr], minlength=self.n_classes).astype(np.float64)
                w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / (counts > 0).sum(), 0.0)
                weight = torch.as_tensor(w, dtype=torch.float32, device=self.device)
            else:
                weight = None
            loss_fn = nn.CrossEntropyLoss(weight=weight)
        else:
            out_dim = y.shape[1]
            self.y_mean_, self.y_scale_ = y[tr].mean(0), np.where(y[tr].std(0) < 1e-8, 1.0, y[tr].std(0))
            Y = torch.as_tensor((y - self.y_mean_) / self.y_scale_, dtype=torch.float32, device=self.device)
            loss_fn = nn.MSELoss()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.net = nn.Sequential(nn.Linear(X.shape[1], self.hidden), nn.ReLU(), nn.Dropout(self.dropout),
                                     nn.Linear(self.hidden, out_dim)).to(self.device)
        gen = torch.Generator().manual_seed(self.seed)
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        tr_t, va_t = torch.as_tensor(tr, device=self.device), torch.as_tensor(va, device=self.device)
        best, best_state, bad = np.inf, None, 0
        self.history = []
        for epoch in range(self.max_epochs):
            self.net.train()
            perm = tr_t[torch.randperm(len(tr), generator=gen).to(self.device)]
            total = 0.0
            for s in range(0, len(perm), self.batch_size):
                idx = perm[s:s + self.batch_size]
                # dropout masks drawn from a seeded generator state: fork so the global RNG is untouched
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(self.seed * 100003 + epoch * 1009 + s)
                    loss = loss_fn(self.net(Xt[idx]), Y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            self.net.eval()
            with torch.no_grad():
                vl = float(loss_fn(self.net(Xt[va_t]), Y[va_t]))
            self.history.append((total / len(tr), vl))
            if vl < best - 1e-6:
                best, bad, self.best_epoch = vl, 0, epoch
                best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            else:
                bad += 1
                if bad >= self.patience:
                    break
        self.net.load_state_dict(best_state)
        self.net.eval()
        return self

    def _check_fitted(self):
        if self.net is None:
            raise RuntimeError("MLPHead is not fitted: call fit(X, y) first")

    @torch.no_grad()
    def decision(self, X) -> np.ndarray:
        self._check_fitted()
        return self.net(self._standardise(self._x(X))).cpu().numpy()

    def predict_proba(self, X) -> np.ndarray:
        if self.task != "classification":
            raise ValueError("predict_proba is for classification heads")
        z = torch.as_tensor(self.decision(X))
        return torch.softmax(z, dim=1).numpy()

    def predict(self, X) -> np.ndarray:
        if self.task == "classification":
            return self.decision(X).argmax(1)
        return self.decision(X) * self.y_scale_ + self.y_mean_


# ------------------------------------------------------------------ frame selection and smoothing
def _probs(p, name: str, n_classes: int | None = None) -> np.ndarray:
    if isinstance(p, torch.Tensor):
        p = p.detach().cpu().numpy()
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 2 or (n_classes is not None and p.shape[1] != n_classes):
        want = f"(T, {n_classes})" if n_classes is not None else "(T, C)"
        raise ValueError(f"{name} must be per-frame probabilities {want}, got shape {p.shape}")
    return p


def pretrained_abaw(probs, classes) -> np.ndarray:
    """A pretrained net's probabilities over its ``classes`` as (T, 8) in ABAW order (unknown names raise)."""
    from facelab.affect.descriptors import to_abaw

    return to_abaw(probs, classes).astype(np.float64)


def select_frames(pretrained_probs, classifier_probs, threshold: float, *, classes=None) -> tuple[np.ndarray, np.ndarray]:
    """EmotiEffLib's frame selection. ``pretrained_probs`` (T, 8) in ABAW order (or (T, len(classes)) with the net's
    ``classes``, mapped by :func:`facelab.affect.descriptors.to_abaw`), ``classifier_probs`` (T, 8).

    Returns ``(probs (T, 8), confident (T,) bool)``: confident frames (finite, max pretrained probability
    ``> threshold``) carry the pretrained row, so their argmax is the pretrained label; the other frames (including
    frames without a face, NaN rows) carry the trained classifier's row. ``threshold=inf`` (or >= 1) means no
    selection.
    """
    pre = pretrained_abaw(pretrained_probs, classes) if classes is not None else _probs(pretrained_probs,
                                                                                         "pretrained_probs", N_EXPRESSIONS)
    clf = _probs(classifier_probs, "classifier_probs", N_EXPRESSIONS)
    if pre.shape[0] != clf.shape[0]:
        raise ValueError(f"pretrained_probs has {pre.shape[0]} frames, classifier_probs {clf.shape[0]}: "
                         "expected the same frames")
    if np.isnan(threshold):
        raise ValueError("threshold is NaN")
    finite = np.isfinite(pre).all(1)
    conf = np.zeros(len(pre), bool)
    conf[finite] = pre[finite].max(1) > threshold
    out = clf.copy()
    out[conf] = pre[conf]
    return out, conf


def _segments(n: int, lengths) -> list[slice]:
    if lengths is None:
        return [slice(0, n)]
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if (lengths < 0).any() or lengths.sum() != n:
        raise ValueError(f"lengths (frames per clip) sum to {int(lengths.sum())} but there are {n} frames")
    ends = np.cumsum(lengths)
    return [slice(int(e - l), int(e)) for l, e in zip(lengths, ends)]


def smooth_probabilities(probs, window: int, *, method: str = "mean", lengths=None) -> np.ndarray:
    """Temporal filter of per-frame probabilities (T, C): each frame takes the mean (or median) of the frames within
    ``window // 2`` of it in the same clip (``lengths`` = frames per clip, concatenated in order; the window never
    crosses a clip boundary and is truncated at the ends). NaN rows are ignored in the window; a row stays NaN only
    if its whole window is NaN. ``window`` must be a positive odd integer; 1 returns a copy."""
    p = _probs(probs, "probs")
    if not isinstance(window, (int, np.integer)) or window < 1 or window % 2 == 0:
        raise ValueError(f"window must be a positive odd integer (frames), got {window!r}")
    if method not in ("mean", "median"):
        raise ValueError(f"method must be 'mean' or 'median', got {method!r}")
    out = p.copy()
    if window == 1:
        return out
    h = window // 2
    agg = np.nanmean if method == "mean" else np.nanmedian
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows stay NaN
        for seg in _segments(len(p), lengths):
            q = p[seg]
            T = len(q)
            if T == 0:
                continue
            pad = np.concatenate([np.full((h, q.shape[1]), np.nan), q, np.full((h, q.shape[1]), np.nan)])
            win = np.lib.stride_tricks.sliding_window_view(pad, window, axis=0)  # (T, C, window)
            out[seg] = agg(win, axis=2)
    return out


def _argmax(p: np.ndarray, fallback: int = 0) -> np.ndarray:
    ok = np.isfinite(p).all(1)
    lab = np.full(len(p), fallback, np.int64)
    lab[ok] = p[ok].argmax(1)
    return lab


def predict_expressions(pretrained_probs, classifier_probs, *, threshold: float = np.inf, window: int = 1,
                        method: str = "mean", lengths=None) -> np.ndarray:
    """Frame labels (T,) in ABAW order: :func:`select_frames` then :func:`smooth_probabilities`, then argmax (a frame
    whose row is still NaN gets class 0, neutral)."""
    p, _ = select_frames(pretrained_probs, classifier_probs, threshold)
    return _argmax(smooth_probabilities(p, window, method=method, lengths=lengths))


def choose_threshold(pretrained_probs, classifier_probs, y_true, *, thresholds=None) -> tuple[float, pd.DataFrame]:
    """Pick the selection threshold with the best expression F1 on *validation* frames. ``thresholds`` default:
    inf (no selection) and 0.3, 0.35, ..., 0.95. Returns ``(threshold, table of threshold, f1, n_confident)``;
    ties go to the larger threshold (fewer pretrained frames)."""
    thresholds = [np.inf] + list(np.round(np.arange(0.3, 0.951, 0.05), 2)) if thresholds is None else list(thresholds)
    y = np.asarray(y_true)
    rows = []
    for t in thresholds:
        p, conf = select_frames(pretrained_probs, classifier_probs, t)
        if len(y) != len(p):
            raise ValueError(f"y_true has {len(y)} frames, probabilities {len(p)}: expected one label per frame")
        rows.append({"threshold": t, "f1": expression_f1(y, _argmax(p)), "n_confident": int(conf.sum())})
    tab = pd.DataFrame(rows)
    best = tab.sort_values(["f1", "threshold"], ascending=[False, False]).iloc[0]
    return float(best["threshold"]), tab


def choose_window(probs, y_true, *, lengths=None, windows=(1, 3, 5, 9, 15), method: str = "mean") -> tuple[int, pd.DataFrame]:
    """Pick the smoothing window with the best expression F1 on *validation* frames (ties: the smaller window)."""
    y = np.asarray(y_true)
    rows = []
    for w in windows:
        lab = _argmax(smooth_probabilities(probs, int(w), method=method, lengths=lengths))
        if len(y) != len(lab):
            raise ValueError(f"y_true has {len(y)} frames, probabilities {len(lab)}: expected one label per frame")
        rows.append({"window": int(w), "f1": expression_f1(y, lab)})
    tab = pd.DataFrame(rows)
    best = tab.sort_values(["f1", "window"], ascending=[False, True]).iloc[0]
    return int(best["window"]), tab


# ------------------------------------------------------------------ the ablation
@dataclass
class AffectData:
    """Descriptors of N clips for :func:`run_ablation`.

    ``frame_features``: list of (T_i, D) face features per frame (NaN rows = no face); ``pretrained_probs``: list of
    (T_i, 8) pretrained probabilities in ABAW order (NaN rows = no face); ``frame_labels``: list of (T_i,) ABAW
    indices; ``ah``: (N,) 0/1; ``voice``: (N, Dv); ``text_true`` / ``text_asr``: (N, Dt) transcript embeddings
    (``text_asr`` may be None); optional mimicry: ``mimicry_features`` list of (T_j, D) imitator frame features and
    ``mimicry_targets`` (M, 6)."""

    frame_features: list
    pretrained_probs: list
    frame_labels: list
    ah: np.ndarray
    voice: np.ndarray
    text_true: np.ndarray
    text_asr: np.ndarray | None = None
    mimicry_features: list | None = None
    mimicry_targets: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.frame_features)
        if n == 0:
            raise ValueError("AffectData needs at least one clip")
        for name in ("pretrained_probs", "frame_labels", "ah", "voice", "text_true", "text_asr"):
            v = getattr(self, name)
            if v is not None and len(v) != n:
                raise ValueError(f"{name} has {len(v)} entries for {n} clips: expected one per clip")
        for i, (f, p, y) in enumerate(zip(self.frame_features, self.pretrained_probs, self.frame_labels)):
            if not (len(f) == len(p) == len(y)):
                raise ValueError(f"clip {i}: {len(f)} feature frames, {len(p)} probability frames and {len(y)} labels:"
                                 " expected the same number of frames")
            if np.asarray(p).ndim != 2 or np.asarray(p).shape[1] != N_EXPRESSIONS:
                raise ValueError(f"clip {i}: pretrained_probs must be (T, 8) in ABAW order, got {np.asarray(p).shape}")
        if self.mimicry_features is not None:
            if self.mimicry_targets is None or len(self.mimicry_targets) != len(self.mimicry_features):
                raise ValueError("mimicry_features and mimicry_targets must both be given, one target row per clip")

    @property
    def n(self) -> int:
        return len(self.frame_features)


def _split_clips(n: int, test_fraction: float, seed: int, strata=None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if strata is None:
        perm = rng.permutation(n)
        k = max(1, int(round(test_fraction * n)))
        return np.sort(perm[k:]), np.sort(perm[:k])
    strata = np.asarray(strata)
    test = []
    for s in np.unique(strata):
        idx = rng.permutation(np.flatnonzero(strata == s))
        test += list(idx[:max(1, int(round(test_fraction * len(idx))))])
    test = np.sort(np.array(test))
    return np.setdiff1d(np.arange(n), test), test


def _row(task, variant, metric, est, lo, hi, ref=None, delta=None, d_lo=None, d_hi=None, p=None, **extra):
    nan = float("nan")
    r = {"task": task, "variant": variant, "metric": metric, "estimate": est, "lo": lo, "hi": hi,
         "value": with_interval(est, lo, hi), "reference": ref or "",
         "delta": nan if delta is None else delta, "delta_lo": nan if d_lo is None else d_lo,
         "delta_hi": nan if d_hi is None else d_hi, "p_value": nan if p is None else p}
    r["delta_value"] = "—" if delta is None else with_interval(delta, d_lo, d_hi)
    r.update(extra)
    return r


def run_ablation(data: AffectData, *, device=None, seed: int = 0, test_fraction: float = 0.3, n_boot: int = 1000,
                 hidden: int = 64, val_fraction: float = 0.25, stats: Sequence[str] = STATS,
                 windows=(1, 3, 5, 9, 15), max_epochs: int = 300, patience: int = 20,
                 n_components: int | None = None, return_predictions: bool = False):
    """The EmotiEffLib ablation on one split of ``data`` (clips split into train / test stratified by A/H, seed
    ``seed``; every choice, early stopping, selection threshold and smoothing window, is made on a validation split of
    the training clips).

    Rows (``task``, ``variant``): ambivalence/hesitancy macro-F1 (``ah``) for face, voice, words (true transcript,
    ASR), fusion (true, ASR), each with a clip-bootstrap interval and the paired difference to the best single
    modality (chosen by test estimate among face/voice/words with the same transcript: a conservative reference);
    expression macro-F1 (``expression``) for the pretrained net alone, the classifier, classifier + selection,
    classifier + selection + smoothing (intervals and paired differences resample *clips*, so correlated frames stay
    together; reference: the classifier); mimicry mean Pearson (``mimicry``) when the data has mimicry clips.
    Extra columns: ``threshold``, ``window``, ``n_test``. ``n_components``: each clip-level modality block (and the
    mimicry features) is reduced to that many principal components fitted on the training clips
    (:func:`reduce_block`) before the MLP and before fusion; None keeps every dimension.
    ``return_predictions=True`` returns ``(table, predictions)``: a dict with the test clips (``test``), A/H labels
    and predictions per variant (``ah_true``, ``ah``), frame labels and predictions per expression variant
    (``expression_true``, ``expression``), and mimicry targets and predictions (``mimicry_true``, ``mimicry``).
    """
    dev = _device(device)
    mlp = dict(hidden=hidden, val_fraction=val_fraction, device=dev, seed=seed, max_epochs=max_epochs,
               patience=patience)
    tr, te = _split_clips(data.n, test_fraction, seed, strata=np.asarray(data.ah))
    rows = []

    # ---- ambivalence / hesitancy (clip level)
    face_X, _ = pool_clips(data.frame_features, stats=stats)
    pre_X, _ = pool_clips(data.pretrained_probs, stats=stats)
    face_X = reduce_block(fuse(face_X, pre_X), tr, n_components)
    voice_X = reduce_block(data.voice, tr, n_components)
    words = {"true": reduce_block(data.text_true, tr, n_components)}
    if data.text_asr is not None:
        words["ASR"] = reduce_block(data.text_asr, tr, n_components)
    blocks = {"face": face_X, "voice": voice_X}
    blocks.update({f"words ({k})": v for k, v in words.items()})
    blocks.update({f"fusion ({k})": fuse(face_X, voice_X, v) for k, v in words.items()})
    y = np.asarray(data.ah).astype(np.int64)
    preds = {}
    for name, X in blocks.items():
        X = np.asarray(X, np.float32)
        head = MLPHead("classification", n_classes=2, **mlp).fit(X[tr], y[tr])
        preds[name] = head.predict(X[te])
    yt = y[te]
    for transcript in ("true", "ASR"):
        fusion = f"fusion ({transcript})"
        if fusion not in preds:
            continue
        singles = ["face", "voice", f"words ({transcript})"]
        best = max(singles, key=lambda s: ah_f1(yt, preds[s]))
        for name in singles + [fusion]:
            if transcript == "ASR" and name in ("face", "voice"):
                continue  # listed once, under the true transcript
            est, lo, hi = bootstrap_ci(ah_f1, yt, preds[name], n_boot=n_boot, seed=seed, strata=yt)
            if name == best:
                rows.append(_row("ah", name, "macro F1", est, lo, hi, n_test=len(te)))
            else:
                d = paired_bootstrap(ah_f1, yt, preds[name], preds[best], n_boot=n_boot, seed=seed, strata=yt)
                rows.append(_row("ah", name, "macro F1", est, lo, hi, best, d.delta, d.lo, d.hi, d.p_value,
                                 n_test=len(te)))

    # ---- expression (frame level), validation split of the training clips for every choice
    rng = np.random.default_rng(seed + 1)
    perm = rng.permutation(tr)
    n_val = max(1, int(round(val_fraction * len(tr))))
    va, fit_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])

    def frames(idx):
        X = np.concatenate([np.asarray(data.frame_features[i], np.float64) for i in idx])
        P = np.concatenate([np.asarray(data.pretrained_probs[i], np.float64) for i in idx])
        Y = np.concatenate([np.asarray(data.frame_labels[i]).astype(np.int64) for i in idx])
        g = np.concatenate([np.full(len(data.frame_labels[i]), i) for i in idx])
        lengths = np.array([len(data.frame_labels[i]) for i in idx])
        return np.concatenate([X, P], axis=1), P, Y, g, lengths

    Xf, _, Yf, gf, _ = frames(fit_idx)
    Xv, Pv, Yv, _, Lv = frames(va)
    Xt, Pt, Yt, gt, Lt = frames(te)
    bad = set(np.unique(np.concatenate([Yf, Yv, Yt])).tolist()) - set(range(N_EXPRESSIONS))
    if bad:
        raise ValueError(f"frame labels must be ABAW indices 0..7, got {sorted(bad)}")
    clf = MLPHead("classification", n_classes=N_EXPRESSIONS, **mlp).fit(Xf, Yf, groups=gf)
    Cv, Ct = clf.predict_proba(Xv), clf.predict_proba(Xt)
    thr, _ = choose_threshold(Pv, Cv, Yv)
    sel_v, _ = select_frames(Pv, Cv, thr)
    win, _ = choose_window(sel_v, Yv, lengths=Lv, windows=windows)
    sel_t, conf_t = select_frames(Pt, Ct, thr)
    variants = {
        "pretrained only": _argmax(Pt),
        "classifier": _argmax(Ct),
        "classifier + selection": _argmax(sel_t),
        "classifier + selection + smoothing": _argmax(smooth_probabilities(sel_t, win, lengths=Lt)),
    }
    # clip-level resampling: rows are test clips; column 1 tells the metric which prediction to read
    clip_ids = np.asarray(te)
    frame_of = {int(c): np.flatnonzero(gt == c) for c in clip_ids}
    keys = list(variants)

    def metric(ids, tagged):
        ids = np.asarray(ids).reshape(-1)
        k = int(np.asarray(tagged)[0, 1])
        fr = np.concatenate([frame_of[int(c)] for c in ids])
        return expression_f1(Yt[fr], variants[keys[k]][fr])

    def tagged(k):
        return np.stack([clip_ids, np.full(len(clip_ids), k)], axis=1)

    ref = keys.index("classifier")
    for k, name in enumerate(keys):
        est, lo, hi = bootstrap_ci(metric, clip_ids, tagged(k), n_boot=n_boot, seed=seed)
        extra = dict(threshold=thr if "selection" in name else np.nan, window=win if "smoothing" in name else np.nan,
                     n_test=len(te), n_frames=len(Yt), n_confident=int(conf_t.sum()) if "selection" in name else 0)
        if k == ref:
            rows.append(_row("expression", name, "macro F1", est, lo, hi, **extra))
        else:
            d = paired_bootstrap(metric, clip_ids, tagged(k), tagged(ref), n_boot=n_boot, seed=seed)
            rows.append(_row("expression", name, "macro F1", est, lo, hi, "classifier", d.delta, d.lo, d.hi,
                             d.p_value, **extra))

    # ---- mimicry (clip level regression)
    if data.mimicry_features is not None:
        Xm, _ = pool_clips(data.mimicry_features, stats=stats)
        Ym = np.asarray(data.mimicry_targets, np.float64)
        mtr, mte = _split_clips(len(Ym), test_fraction, seed)
        Xm = reduce_block(Xm, mtr, n_components)
        reg = MLPHead("regression", **mlp).fit(Xm[mtr], Ym[mtr])
        pm = reg.predict(Xm[mte])

        def mscore(t, p):
            return mimicry_score(t, p, constant="zero").score

        est, lo, hi = bootstrap_ci(mscore, Ym[mte], pm, n_boot=n_boot, seed=seed)
        rows.append(_row("mimicry", "face (imitator)", "mean Pearson", est, lo, hi, n_test=len(mte)))
    table = pd.DataFrame(rows)
    if not return_predictions:
        return table
    out = {"test": np.asarray(te), "ah_true": yt, "ah": {k: np.asarray(v) for k, v in preds.items()},
           "expression_true": Yt, "expression": variants, "expression_clip": gt}
    if data.mimicry_features is not None:
        out.update(mimicry_true=Ym[mte], mimicry=pm)
    return table, out


def crossval_predictions(blocks: dict, y, *, n_folds: int = 5, seed: int = 0, n_components: int | None = None,
                         device=None, **mlp) -> dict:
    """Out-of-fold A/H predictions for every clip: ``blocks`` maps a name to a clip-level block (N, D) or to a tuple
    of block names to fuse; folds are stratified by ``y`` and drawn with ``seed``; in each fold every block is
    standardised / reduced on the training clips only (:func:`reduce_block`) and an :class:`MLPHead` (seed ``seed``)
    is fitted. Returns ``{name: predictions (N,)}`` (each clip predicted by the model that did not see it)."""
    y = np.asarray(y).astype(np.int64)
    n = len(y)
    if n_folds < 2 or n_folds > n:
        raise ValueError(f"n_folds must be in 2..{n} (clips), got {n_folds}")
    rng = np.random.default_rng(seed)
    fold = np.empty(n, np.int64)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold[idx] = np.arange(len(idx)) % n_folds
    raw = {k: v for k, v in blocks.items() if not isinstance(v, tuple)}
    for k, v in raw.items():
        if len(v) != n:
            raise ValueError(f"block {k!r} has {len(v)} rows for {n} labels: expected one row per clip")
    fused = {k: v for k, v in blocks.items() if isinstance(v, tuple)}
    for k, parts in fused.items():
        missing = [p for p in parts if p not in raw]
        if missing:
            raise ValueError(f"fusion {k!r} names unknown blocks {missing}: expected names among {list(raw)}")
    preds = {k: np.zeros(n, np.int64) for k in blocks}
    for f in range(n_folds):
        tr, te = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        red = {k: reduce_block(v, tr, n_components) for k, v in raw.items()}
        for k in blocks:
            X = red[k] if k in red else fuse(*[red[p] for p in fused[k]])
            head = MLPHead("classification", n_classes=2, device=device, seed=seed, **mlp).fit(X[tr], y[tr])
            preds[k][te] = head.predict(X[te])
    return preds


__all__ = ["STATS", "Pooled", "pool_frames", "pool_clips", "fuse", "MLPHead", "pretrained_abaw", "reduce_block", "select_frames",
           "smooth_probabilities", "predict_expressions", "choose_threshold", "choose_window", "AffectData",
           "run_ablation", "crossval_predictions"]
