"""Chapter 01, *Face recognition, end to end*: its protocol, tables and figures.

The methods are :mod:`facelab.recognition` (verify, Gallery, FaceRecognizer), :mod:`facelab.models` (the
embedders) and :mod:`facelab.classical` (eigenfaces, fisherfaces, LBP); this module holds what only the chapter does
with them:

* real photos: :func:`labelled_faces` (one face per labelled photo, every face of a group photo),
  :func:`labelled_pairs` (every pair with its similarity and decision), :func:`partial_face_table`;
* the synthetic benchmark: :func:`grey_chips` (input of the classical methods), :func:`method_similarities`,
  :func:`compare_methods` -> :class:`MethodComparison`, :func:`comparison_intervals` and :func:`accuracy_table`
  (95 % intervals), :func:`balanced_accuracy_ci`,
  :func:`split_gallery_probes`;
* figures, all ``plot_x(..., ax=None) -> Figure``: :func:`plot_faces`, :func:`plot_similarity_heatmap`,
  :func:`plot_comparison`, :func:`plot_threshold_tradeoff`; and :func:`threshold_widget`, the book's one threshold
  slider (chapter 00 uses it too).

Every score is a similarity (higher = more alike) with its threshold in the same unit (:mod:`facelab.core.scores`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Hashable, Mapping, Sequence

import numpy as np
import torch

from facelab.plotting import figure_axes
from facelab.core.scores import DLIB_THRESHOLD, genuine_impostor_pairs
from facelab.recognition import METRICS, NoFaceError, aligned_chips, as_embeddings, similarities

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "LabelledFaces",
    "labelled_faces",
    "labelled_pairs",
    "partial_face_table",
    "split_gallery_probes",
    "grey_chips",
    "COMPARISON_DISTANCES",
    "method_similarities",
    "MethodComparison",
    "compare_methods",
    "comparison_intervals",
    "balanced_accuracy_ci",
    "accuracy_table",
    "plot_faces",
    "plot_similarity_heatmap",
    "plot_comparison",
    "plot_threshold_tradeoff",
    "threshold_widget",
]


# --------------------------------------------------------------------------------------------- real photos
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


def labelled_pairs(names: Sequence[str], identities: Sequence[Hashable], S, threshold: float = DLIB_THRESHOLD):
    """Every pair i < j of a labelled set of faces as a table: ``a``, ``b``, ``similarity`` (from the (n, n)
    similarity matrix ``S``), ``same person`` (ground truth) and ``accepted`` (``similarity >= threshold``)."""
    import pandas as pd

    S = np.asarray(S.cpu() if isinstance(S, torch.Tensor) else S, dtype=np.float64)
    pairs, same = genuine_impostor_pairs(identities)
    i, j = pairs[:, 0], pairs[:, 1]
    names = np.asarray(names, dtype=object)
    s = S[i, j]
    return pd.DataFrame({"a": names[i], "b": names[j], "similarity": s, "same person": same,
                         "accepted": s >= float(threshold)})


def partial_face_table(S, names: Sequence[str], rows: Sequence[str], columns: Sequence[str]):
    """Similarities of the faces ``rows`` to the faces ``columns`` (by name), with their mean over the other faces
    (a face's similarity to itself is left out of the mean)."""
    import pandas as pd

    S = np.asarray(S.cpu() if isinstance(S, torch.Tensor) else S, dtype=np.float64)
    idx = {n: k for k, n in enumerate(names)}
    table = pd.DataFrame({c: {r: S[idx[r], idx[c]] for r in rows} for c in columns})
    others = pd.DataFrame({c: {r: (np.nan if r == c else S[idx[r], idx[c]]) for r in rows} for c in columns})
    table[f"mean to {', '.join(columns)}"] = others.mean(axis=1)
    return table


# --------------------------------------------------------------------------------------------- benchmark protocol
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


def grey_chips(images: torch.Tensor, landmarks, size: int = 56) -> np.ndarray:
    """Aligned grey chips ``(N, size, size)`` in [0, 1] for the classical methods (ArcFace five-point template)."""
    from facelab.classical import to_grey_batch

    return to_grey_batch(aligned_chips(images, landmarks, "arcface-112", size).cpu().numpy())


#: Distances the comparison understands: the two embedding metrics and the chi-squared distance of histograms.
COMPARISON_DISTANCES = ("euclidean", "cosine", "chi2")


def method_similarities(features, distance: str) -> np.ndarray:
    """All pairwise similarities ``(n, n)`` of a feature matrix, float64: ``-L2``, the cosine, or minus the
    chi-squared distance of histograms."""
    if distance == "chi2":
        from facelab.classical import chi2_distance

        X = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
        return -chi2_distance(X, X)
    if distance not in METRICS:
        raise ValueError(f"distance must be one of {COMPARISON_DISTANCES}, got {distance!r}")
    X = as_embeddings(features, "features")
    return similarities(X, X, distance).cpu().double().numpy()


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
        Similarity of every pair, per method (:mod:`facelab.core.scores`).
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

    def rank1_correct(self, method: str) -> np.ndarray:
        """Per probe, whether the method's best gallery identity is the right one (for paired tests)."""
        from facelab.metrics import identification_ranks

        return identification_ranks(self.id_scores[method], self.labels[self.probes], self.labels[self.gallery]) == 1


def compare_methods(features: dict, labels: Sequence[Hashable], fars: Sequence[float] = (1e-1, 1e-2, 1e-3),
                    n_gallery: int = 1, rng: np.random.Generator | None = None) -> MethodComparison:
    """Evaluate several face representations on the same identity-labelled images.

    Verification uses **all** pairs of the test images (genuine: same identity); identification enrols
    ``n_gallery`` random images per identity and uses the rest as probes (closed set).

    Parameters
    ----------
    features : dict[str, (array (n, f), distance)]
        Per method, the features of the ``n`` test images and the distance to compare them with
        (``"euclidean"``, ``"cosine"`` or ``"chi2"``; scores are similarities, :func:`method_similarities`).
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
    pairs, same = genuine_impostor_pairs(lab)
    i, j = pairs[:, 0], pairs[:, 1]
    same = same.astype(np.int64)
    gallery, probes = split_gallery_probes(lab, n_gallery=n_gallery, rng=rng)
    rows, pair_s, id_s = [], {}, {}
    for name, spec in features.items():
        if not (isinstance(spec, tuple) and len(spec) == 2):
            raise ValueError(f"features[{name!r}] must be a (features, distance) tuple, got {type(spec).__name__}")
        F, dist = spec
        if len(F) != len(lab):
            raise ValueError(f"features[{name!r}] has {len(F)} rows but there are {len(lab)} labels")
        S = method_similarities(F, dist)
        pair_s[name] = S[i, j]
        id_s[name] = S[np.ix_(probes, gallery)]
        row = {"method": name, "distance": dist, **metrics.verification_report(same, pair_s[name], fars)}
        row["rank-1"] = metrics.rank_k_accuracy(id_s[name], lab[probes], lab[gallery], 1)
        row["rank-5"] = metrics.rank_k_accuracy(id_s[name], lab[probes], lab[gallery], 5)
        rows.append(row)
    table = pd.DataFrame(rows).set_index("method")
    return MethodComparison(table=table, pair_labels=same, pair_scores=pair_s, id_scores=id_s,
                            gallery=gallery, probes=probes, labels=lab)


def comparison_intervals(cmp: MethodComparison, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05):
    """The comparison table with (1 - alpha) intervals, one row per method: AUC, EER and TAR at each FAR of
    ``cmp.table`` by a bootstrap over pairs (stratified by genuine/impostor, one resample set for all three),
    rank-1 and rank-5 by the Wilson interval over the probes; then the pair and probe counts.

    The pairs of one image set share images, so they are not independent: the pair bootstrap treats them as if they
    were and its intervals are on the narrow side. Cells read ``"0.970 [0.950, 0.980]"``.
    """
    import pandas as pd

    from facelab import metrics

    y = cmp.pair_labels
    tar_cols = [c for c in cmp.table.columns if c.startswith("TAR@FAR=")]
    fars = [float(c.split("=", 1)[1]) for c in tar_cols]
    cols = ["AUC", "EER", *tar_cols]

    def stats(yy, ss):
        row = metrics.verification_report(yy, ss, fars)
        return np.array([row[c] for c in cols])

    n_probes = len(cmp.probes)
    rows = {}
    for name, s in cmp.pair_scores.items():
        est, lo, hi = metrics.bootstrap_ci(stats, y, s, strata=y, n_boot=n_boot, seed=seed, alpha=alpha)
        row = {c: metrics.with_interval(est[k], lo[k], hi[k], digits=3) for k, c in enumerate(cols)}
        for k in (1, 5):
            hits = int(round(cmp.table.loc[name, f"rank-{k}"] * n_probes))
            row[f"rank-{k}"] = metrics.with_interval(hits / n_probes, *metrics.wilson_interval(hits, n_probes, alpha),
                                                     digits=3)
        row.update(n_genuine=int((y == 1).sum()), n_impostor=int((y == 0).sum()), n_probes=n_probes)
        rows[name] = row
    return pd.DataFrame(rows).T.rename_axis("method")


def balanced_accuracy_ci(labels, scores, threshold: float | None = None, n_boot: int = 1000, seed: int = 0,
                         alpha: float = 0.05):
    """Balanced verification accuracy in % (:func:`facelab.metrics.verification_accuracy`) at ``threshold`` (a
    similarity; ``None``: the best threshold, re-fitted in every resample) with a bootstrap interval over pairs,
    stratified by genuine/impostor: an :class:`facelab.metrics.Interval`."""
    from facelab import metrics

    y = np.asarray(labels).astype(int)
    return metrics.bootstrap_ci(lambda yy, ss: 100 * metrics.verification_accuracy(yy, ss, threshold)[0], y,
                                np.asarray(scores, dtype=np.float64), strata=y, n_boot=n_boot, seed=seed, alpha=alpha)


def accuracy_table(cmp: MethodComparison, thresholds: Mapping[str, float], n_boot: int = 1000, seed: int = 0,
                   alpha: float = 0.05):
    """Balanced verification accuracy (%) per method on the comparison's pairs, at its published threshold (a
    similarity) and at the best threshold for these pairs (optimistic), each with :func:`balanced_accuracy_ci`."""
    import pandas as pd

    from facelab import metrics

    rows = {}
    for name, t in thresholds.items():
        y, s = cmp.pair_labels, cmp.pair_scores[name]
        rows[name] = {
            "synthetic, published threshold": metrics.with_interval(
                *balanced_accuracy_ci(y, s, t, n_boot=n_boot, seed=seed, alpha=alpha), digits=1),
            "synthetic, best threshold": metrics.with_interval(
                *balanced_accuracy_ci(y, s, None, n_boot=n_boot, seed=seed, alpha=alpha), digits=1)}
    return pd.DataFrame(rows).T


# --------------------------------------------------------------------------------------------- figures
def plot_faces(image: np.ndarray, faces: Sequence, title: str | None = None, landmarks: bool = True,
               zoom: float | None = None, ax=None) -> Figure:
    """Show an image with the detected boxes and landmarks (68 points if present, else 5) drawn on it.

    ``zoom``: if given, crop the view to the faces plus this many face widths of margin on every side.
    """
    from matplotlib.patches import Rectangle

    from facelab.plotting import PALETTE

    fig, (ax,) = figure_axes(ax, 1, (4, 4))
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
    return fig


def plot_similarity_heatmap(S, names: Sequence[str], threshold: float, title: str | None = None, ax=None) -> Figure:
    """Annotated similarity matrix; off-diagonal cells at or above ``threshold`` (declared "same person") are
    outlined."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    S = np.asarray(S.cpu() if isinstance(S, torch.Tensor) else S, dtype=np.float64)
    n = len(names)
    fig, (ax,) = figure_axes(ax, 1, (0.55 * n + 2, 0.5 * n + 1.5))
    lo, hi = min(float(S.min()), threshold - 0.5 * abs(threshold)), float(S.max())
    im = ax.imshow(S, cmap="viridis", vmin=lo, vmax=hi)
    for a in range(n):
        for b in range(n):
            ax.text(b, a, f"{S[a, b]:.2f}", ha="center", va="center", fontsize=6.5,
                    color="white" if S[a, b] < 0.5 * (lo + hi) else "black")
            if a != b and S[a, b] >= threshold:
                ax.add_patch(Rectangle((b - 0.5, a - 0.5), 1, 1, fill=False, color="#d1495b", lw=1.5))
    ax.set_xticks(range(n), names, rotation=70, fontsize=7)
    ax.set_yticks(range(n), names, fontsize=7)
    ax.grid(False)
    plt.colorbar(im, ax=ax, shrink=0.8, label="similarity")
    if title:
        ax.set_title(title)
    return fig


def plot_comparison(cmp: MethodComparison, max_rank: int = 10, ax=None) -> Figure:
    """ROC (log FAR), DET (normal-deviate axes) and CMC curves of every method, side by side (``ax``: three axes)."""
    from scipy.stats import norm

    fig, axes = figure_axes(ax, 3, (13, 4))
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


def plot_threshold_tradeoff(labels, scores, threshold: float, name: str = "", published: float | None = None,
                            ax=None) -> Figure:
    """Genuine and impostor similarity distributions and FAR / FRR as functions of the threshold, with the chosen
    (and the published) threshold marked (``ax``: two axes). A pair is accepted when ``score >= threshold``."""
    from facelab.metrics import far_frr

    y = np.asarray(labels).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    grid = np.linspace(s.min(), s.max(), 200)
    fa = np.array([np.mean(s[~y] >= t) for t in grid])
    fr = np.array([np.mean(s[y] < t) for t in grid])
    far, frr = far_frr(y, s, threshold)
    fig, axes = figure_axes(ax, 2, (11, 3.6))
    bins = np.linspace(s.min(), s.max(), 41)
    axes[0].hist(s[y], bins=bins, alpha=0.6, density=True, label="genuine pairs")
    axes[0].hist(s[~y], bins=bins, alpha=0.6, density=True, label="impostor pairs")
    axes[1].plot(grid, fa, label="FAR (impostors accepted)")
    axes[1].plot(grid, fr, label="FRR (genuine rejected)")
    for a in axes:
        a.axvline(threshold, color="black", lw=1.2, label=f"threshold {threshold:.3f}")
        if published is not None:
            a.axvline(published, color="gray", ls="--", lw=1, label=f"published {published:.3f}")
    prefix = f"{name}: " if name else ""
    axes[0].set(xlabel="similarity score", ylabel="density", title=f"{prefix}score distributions")
    axes[1].set(xlabel="threshold (similarity)", ylabel="rate", title=f"FAR {far:.3f}, FRR {frr:.3f}")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    return fig


def threshold_widget(labels, scores, name: str = "", published: float | None = None, value: float | None = None,
                     step: float = 0.01):
    """A slider over the similarity threshold with the :func:`plot_threshold_tradeoff` figure below it (the book's
    one threshold widget; :func:`facelab.plotting.slider_figure` keeps a static snapshot for the site).

    ``value``: the starting threshold (default: ``published`` if given, else the median score).
    """
    from facelab.plotting import slider_figure

    s = np.asarray(scores, dtype=np.float64)
    start = float(published if value is None and published is not None else (np.median(s) if value is None else value))
    return slider_figure(lambda t: plot_threshold_tradeoff(labels, s, t, name, published), value=start,
                         min=float(np.floor(s.min() / step) * step), max=float(np.ceil(s.max() / step) * step),
                         step=step, description="threshold")
