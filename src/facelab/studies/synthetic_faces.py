"""Chapter 02, *A laboratory of faces*: how hard is the synthetic face world? Its calibration protocol, tables and
figures.

The world itself is :mod:`facelab.synth` (generator, video, attacks); the recognisers are :mod:`facelab.classical`
(eigenfaces), :mod:`facelab.models` (dlib's ResNet-29) and :mod:`facelab.detect` (dlib's HOG detector and 68-point
shape predictor). This module holds what only the chapter does with them.

The protocol: render ``n_identities x per_identity`` faces under one condition (a set of ``world.sample``
factors), use the first ``n_gallery`` images of each identity as the gallery (the training set of eigenfaces)
and the rest as probes, and report rank-1 identification accuracy (chance = ``1 / n_identities``) of

* **eigenfaces** (PCA + 1-nearest neighbour, :class:`facelab.classical.Eigenfaces`) on grey 56 px chips aligned
  with the ground-truth landmarks, and on the raw, unaligned frame (downsampled to the same size);
* **dlib's ResNet-29** (a real network trained on real faces, :func:`facelab.models.load_embedder`) on chips
  aligned with the ground-truth landmarks, Euclidean nearest neighbour (the highest similarity -L2 of
  :mod:`facelab.core.scores`);
* whether **dlib's own pipeline** finds the synthetic faces: the HOG detector's detection rate, the error of dlib's
  68-point shape predictor against the ground-truth landmarks (mean point error / inter-ocular distance), and
  rank-1 when the chips are aligned with dlib's predicted landmarks instead (only images where a face was found).

Rendering and feature extraction run chunk by chunk, so memory stays bounded whatever the set size.

* protocol: :data:`CONDITIONS`, :data:`KNOBS`, :func:`calibrate` (-> one row per condition, with the counts behind
  each rate), :func:`condition_features`, :func:`evaluate_condition`, :func:`dlib_landmark_report`;
* tables: :func:`rank1_intervals` (95 % Wilson intervals of every rate), :func:`hardest_knobs`;
* figures (``plot_x(..., ax=None) -> Figure``): :func:`plot_rank1`;
* realism (issue 26): how distinct the world's people are to real recognisers, and how readable its expressions are
  to real expression nets, for both rendering styles (``FaceWorld(style="cartoon" | "photo")``) against the real
  photos: :func:`synthetic_verification_scores`, :func:`real_verification_scores`, :func:`verification_table` (FAR and
  FRR at each network's published threshold with identity-bootstrap intervals), :func:`plot_similarity_distributions`,
  :func:`expression_agreement` (face-api and FER2013 per class, Wilson intervals), :func:`style_montage`;
* :func:`identity_limits_record` reads the stored diagnostics of why the photo style's people still look alike to
  dlib (``benchmarks/bench_synth_identity_limits.py``: real textures on real and synthetic shapes, the size of the
  real-face pool, caricatured chips);
* :func:`difficulty_table` is the generator's own quick check (eigenfaces with whitened PCA on the raw, unaligned
  frame, 48 px grey), which the world's identity spread is tuned against and ``benchmarks/bench_synth.py`` reports.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from facelab.core.images import luminance
from facelab.core.landmarks import group_mean

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["CONDITIONS", "KNOBS", "METHODS", "gallery_probe_split", "nearest_neighbour_rank1", "eigenfaces_rank1",
           "condition_features", "evaluate_condition", "calibrate", "dlib_landmark_report", "difficulty_table",
           "rank1_intervals", "hardest_knobs", "plot_rank1", "STYLES", "VerificationScores", "verification_scores",
           "synthetic_verification_scores", "real_verification_scores", "far_frr", "verification_table",
           "plot_similarity_distributions", "expression_predictions", "expression_agreement", "agreement_cells",
           "expression_identity_shift", "style_montage", "IDENTITY_LIMITS_RECORD", "identity_limits_record"]

#: Headline conditions: the world's nuisance presets.
CONDITIONS: dict[str, dict] = {
    "none": {"nuisance": "none"},
    "mild": {"nuisance": "mild"},
    "full": {"nuisance": "full"},
}

#: One knob at a time on top of ``nuisance="none"`` (ranges of the "full" preset), plus the identity spread.
KNOBS: dict[str, dict] = {
    "pose (full range)": {"nuisance": "none", "yaw": (-35, 35), "pitch": (-20, 20), "roll": (-15, 15)},
    "light (full range)": {"nuisance": "none", "light_azimuth": (-80, 80), "light_elevation": (-20, 60),
                           "light_intensity": (0.55, 1.3), "ambient": (0.2, 0.55)},
    "image quality (full range)": {"nuisance": "none", "blur": (0, 1.3), "noise": (0, 0.05), "jpeg": (25, 100),
                                   "resolution": (0.4, 1.0)},
    "scale and shift (full range)": {"nuisance": "none", "scale": (0.88, 1.12), "shift": (-0.08, 0.08)},
    "random expressions": {"nuisance": "none", "expression": "random"},
    "random occlusions": {"nuisance": "none", "occlusion": "random"},
    "full, identities 2x apart": {"nuisance": "full", "identity_strength": 2.0},
    "full, identities 0.5x apart": {"nuisance": "full", "identity_strength": 0.5},
}

_SIZE = 56


def gallery_probe_split(ids, n_gallery: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the first ``n_gallery`` images of each identity (gallery) and of the rest (probes)."""
    ids = np.asarray(ids)
    rank = pd.Series(ids).groupby(ids).cumcount().to_numpy()
    gallery, probes = np.flatnonzero(rank < n_gallery), np.flatnonzero(rank >= n_gallery)
    if len(probes) == 0 or len(np.unique(ids[gallery])) < 2:
        raise ValueError(f"n_gallery={n_gallery} leaves no probes or fewer than 2 gallery identities; "
                         "use per_identity > n_gallery and n_identities >= 2")
    return gallery, probes


def nearest_neighbour_rank1(features, ids, n_gallery: int, valid=None) -> float:
    """Rank-1 accuracy of Euclidean 1-NN from probes to the gallery (``valid`` masks out failed images)."""
    f = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    ids = np.asarray(ids)
    gallery, probes = gallery_probe_split(ids, n_gallery)
    if valid is not None:
        valid = np.asarray(valid, bool)
        gallery, probes = gallery[valid[gallery]], probes[valid[probes]]
        if len(gallery) == 0 or len(probes) == 0:
            return float("nan")
    nearest = torch.cdist(f[probes], f[gallery]).argmin(1).numpy()
    return float(np.mean(ids[gallery][nearest] == ids[probes]))


def eigenfaces_rank1(chips, ids, n_gallery: int = 5, n_components: int = 100, whiten: bool = False,
                     size: int = _SIZE) -> float:
    """Rank-1 of eigenfaces fitted on the gallery and tested on the probes.

    Parameters
    ----------
    chips : numpy.ndarray (N, H, W) or torch.Tensor (N, 3, H, W)
        Grey chips, or an RGB image batch (converted to grey and area-resized to ``size`` pixels).
    ids : array of int
        Identity of each image; the first ``n_gallery`` of each identity are the gallery.
    n_components : int
        PCA components (capped at the gallery size - 1).
    whiten : bool
        Scale the components to unit variance.
    """
    if isinstance(chips, torch.Tensor):
        if chips.ndim != 4 or chips.shape[1] != 3:
            raise ValueError(f"an image batch must have shape (N, 3, H, W), got {tuple(chips.shape)}")
        chips = _grey(chips, size)
    chips = np.asarray(chips, dtype=np.float32)
    ids = np.asarray(ids)
    if len(chips) != len(ids):
        raise ValueError(f"{len(chips)} images but {len(ids)} identity labels")
    gallery, probes = gallery_probe_split(ids, n_gallery)
    try:
        from facelab.classical import Eigenfaces
    except ImportError:  # pragma: no cover - the classical module is part of facelab; this keeps the chapter alive
        from sklearn.decomposition import PCA

        g = chips[gallery].reshape(len(gallery), -1)
        pca = PCA(n_components=min(n_components, len(gallery) - 1), whiten=whiten).fit(g)
        return nearest_neighbour_rank1(pca.transform(chips.reshape(len(chips), -1)), ids, n_gallery)
    from threadpoolctl import threadpool_limits

    # one BLAS thread: the SVD of a few hundred chips is fast either way, but multi-threaded OpenBLAS slows down
    # by an order of magnitude when the CPU is oversubscribed (measured: 0.2 s -> 10 s CPU for 500 x 3136)
    with threadpool_limits(limits=1, user_api="blas"):
        model = Eigenfaces(n_components=n_components, whiten=whiten).fit(chips[gallery], ids[gallery])
        return float(model.score(chips[probes], ids[probes]))


def _grey(images: torch.Tensor, size: int = _SIZE) -> np.ndarray:
    import torch.nn.functional as F

    small = F.interpolate(luminance(images).float(), size=(size, size), mode="area")[:, 0]
    return small.cpu().numpy().astype(np.float32)


def dlib_landmark_report(images: torch.Tensor, landmarks: torch.Tensor) -> pd.DataFrame:
    """Run dlib's HOG detector and 68-point shape predictor on each image; compare with the ground truth.

    Returns
    -------
    pandas.DataFrame
        One row per image: ``detected`` (bool), ``nme`` (mean point error / inter-ocular distance of the
        ground truth; NaN when not detected) and ``landmarks`` (the predicted (68, 2) array or None).
    """
    from facelab.detect import detect_faces

    rows = []
    arr = (images.detach().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    gt = landmarks.detach().cpu().numpy()
    for img, pts in zip(arr, gt):
        faces = detect_faces(img, "dlib-hog", min_size=10, landmarks="68")
        if not faces or faces[0].landmarks68 is None:
            rows.append((False, float("nan"), None))
            continue
        pred = np.asarray(faces[0].landmarks68, dtype=np.float32)
        iod = float(np.linalg.norm(group_mean(pts, "eye_right") - group_mean(pts, "eye_left")))
        rows.append((True, float(np.linalg.norm(pred - pts, axis=1).mean() / max(iod, 1e-6)), pred))
    return pd.DataFrame(rows, columns=["detected", "nme", "landmarks"])


def condition_features(world, factors: Mapping, n_identities: int, per_identity: int, n_gallery: int = 5, *,
                       identity_offset: int = 0,
                       generator: torch.Generator | None = None, embedder=None, detect_per_identity: int = 0,
                       chunk_identities: int = 25, progress: Callable | None = None) -> dict:
    """Render one condition chunk by chunk and keep only what the methods need.

    Returns a dict with ``ids``, ``aligned`` and ``raw`` grey chips ``(N, 56, 56)``, ``dlib`` embeddings
    ``(N, 128)`` (GT-aligned; None without an embedder), ``dlib_own`` embeddings aligned with dlib's own landmarks
    for the first ``detect_per_identity`` probes of each identity (NaN rows where dlib found no face), their
    ``detection`` table (``index`` into the set, ``detected``, ``nme``), ``labels``,
    the first chunk's first images as ``examples`` and the render time ``render_s``.
    """
    from facelab.recognition import aligned_chips
    from facelab.studies.face_recognition import grey_chips

    factors = dict(factors)
    strength = factors.pop("identity_strength", None)
    if strength is not None:
        style = {"style": world.style} if hasattr(world, "style") else {}
        world = type(world)(seed=world.seed, size=world.size, device=world.device, identity_strength=float(strength),
                            **style)
    ids_all = np.arange(identity_offset, identity_offset + n_identities)
    out = {k: [] for k in ("ids", "aligned", "raw", "dlib", "dlib_own", "detection", "labels")}
    render_s = 0.0
    examples = None
    chunks = range(0, n_identities, chunk_identities)
    for start in (progress(chunks) if progress is not None else chunks):
        sel = ids_all[start:start + chunk_identities]
        t0 = time.perf_counter()
        batch = world.sample(identities=np.repeat(sel, per_identity).tolist(), per_identity=1, generator=generator,
                             **factors)
        render_s += time.perf_counter() - t0
        images, lm = batch.images, batch.landmarks
        if examples is None:
            examples = images[:per_identity].cpu()
        ids = np.repeat(sel, per_identity)
        out["ids"].append(ids)
        out["labels"].append(batch.labels)
        out["aligned"].append(grey_chips(images, lm, size=_SIZE))
        out["raw"].append(_grey(images))
        if embedder is not None:
            with torch.no_grad():
                chips = aligned_chips(images, lm, embedder.template, embedder.input_size)
                out["dlib"].append(embedder.embed(chips).float().cpu())
        if detect_per_identity > 0:
            # dlib's own pipeline on probes only (the first detect_per_identity probes of each identity)
            rank = np.arange(len(ids)) % per_identity
            pick = np.flatnonzero((rank >= n_gallery) & (rank < n_gallery + detect_per_identity))
            rep = dlib_landmark_report(images[pick], lm[pick])
            rep.insert(0, "index", pick + start * per_identity)
            if embedder is not None:
                own = torch.full((len(pick), embedder.embedding_size), float("nan"))
                ok = rep["detected"].to_numpy(dtype=bool).copy()
                if ok.any():
                    ok_t = torch.from_numpy(ok)
                    pts = torch.as_tensor(np.stack(rep.loc[ok, "landmarks"].to_list()))
                    with torch.no_grad():
                        chips = aligned_chips(images[pick][ok_t], pts, embedder.template, embedder.input_size)
                        own[ok_t] = embedder.embed(chips).float().cpu()
                out["dlib_own"].append(own)
            out["detection"].append(rep.drop(columns="landmarks"))
    result = {
        "ids": np.concatenate(out["ids"]),
        "aligned": np.concatenate(out["aligned"]),
        "raw": np.concatenate(out["raw"]),
        "dlib": torch.cat(out["dlib"]) if out["dlib"] else None,
        "dlib_own": torch.cat(out["dlib_own"]) if out["dlib_own"] else None,
        "detection": pd.concat(out["detection"], ignore_index=True) if out["detection"] else None,
        "labels": pd.concat(out["labels"], ignore_index=True),
        "examples": examples,
        "render_s": render_s,
    }
    return result


def evaluate_condition(feats: dict, per_identity: int, n_gallery: int, n_components: int = 100) -> dict:
    """Rank-1 accuracies (and dlib detection numbers) from :func:`condition_features`' output."""
    ids = feats["ids"]
    row = {
        "images": len(ids),
        "identities": len(np.unique(ids)),
        "probes": len(gallery_probe_split(ids, n_gallery)[1]),
        "chance": 1.0 / len(np.unique(ids)),
        "eigenfaces (aligned)": eigenfaces_rank1(feats["aligned"], ids, n_gallery, n_components),
        "eigenfaces (raw frame)": eigenfaces_rank1(feats["raw"], ids, n_gallery, n_components),
        "dlib ResNet (aligned)": (nearest_neighbour_rank1(feats["dlib"].numpy(), ids, n_gallery)
                                  if feats["dlib"] is not None else float("nan")),
    }
    det = feats["detection"]
    if det is not None:
        row["dlib probes"] = len(det)
        row["dlib HOG detection rate"] = float(det["detected"].mean())
        row["dlib 68-pt NME"] = float(det["nme"].median()) if det["detected"].any() else float("nan")
        if feats["dlib_own"] is not None and feats["dlib"] is not None:
            # end to end: enrolled with ground-truth alignment, probed through dlib's detector and shape predictor;
            # a probe where dlib finds no face counts as an error
            gallery, _ = gallery_probe_split(ids, n_gallery)
            probe_idx = det["index"].to_numpy()
            own = feats["dlib_own"]
            found = ~torch.isnan(own).any(1)
            hits = np.zeros(len(probe_idx), bool)
            if bool(found.any()):
                d = torch.cdist(own[found], feats["dlib"][gallery])
                hits[found.numpy()] = ids[gallery][d.argmin(1).numpy()] == ids[probe_idx[found.numpy()]]
            row["dlib end-to-end (detect, align, embed)"] = float(hits.mean())
    row["render s"] = feats["render_s"]
    return row


def calibrate(world, conditions: Mapping[str, Mapping] | None = None, n_identities: int = 100,
              per_identity: int = 10, n_gallery: int = 5, *, embedder="dlib-resnet", detect_per_identity: int = 0,
              n_components: int = 100, seed: int = 0, chunk_identities: int = 25,
              progress: Callable | None = None, keep_features: bool = False):
    """Identification difficulty of the world under several conditions.

    Parameters
    ----------
    world : facelab.synth.FaceWorld
    conditions : mapping name -> ``world.sample`` factors, optional
        Default :data:`CONDITIONS` (the nuisance presets). A factor ``identity_strength`` renders that condition
        with a copy of the world whose identities are spread that much more (or less).
    n_identities, per_identity, n_gallery : int
        ``n_gallery`` images of each identity form the gallery; the other ``per_identity - n_gallery`` are probes.
    embedder : "dlib-resnet", an Embedder, or None
        The real network (None skips it).
    detect_per_identity : int
        Run dlib's detector + shape predictor on this many images per identity (0 skips; it is the slow part).
    n_components : int
        Eigenfaces' PCA components.
    seed : int
        Seeds the per-image randomness (each condition gets its own stream).
    keep_features : bool
        Also return the per-condition features (for figures).

    Returns
    -------
    pandas.DataFrame, indexed by condition (and a dict of features when ``keep_features``).
    """
    if per_identity <= n_gallery:
        raise ValueError(f"per_identity ({per_identity}) must exceed n_gallery ({n_gallery}) to leave probes")
    conditions = dict(CONDITIONS if conditions is None else conditions)
    if isinstance(embedder, str):
        from facelab.models import load_embedder

        embedder = load_embedder(embedder, device=getattr(world, "device", None))
    rows, kept = [], {}
    for k, (name, factors) in enumerate(conditions.items()):
        feats = condition_features(world, factors, n_identities, per_identity, n_gallery,
                                   generator=torch.Generator().manual_seed(seed * 1000 + k), embedder=embedder,
                                   detect_per_identity=detect_per_identity, chunk_identities=chunk_identities,
                                   progress=progress)
        rows.append({"condition": name, **evaluate_condition(feats, per_identity, n_gallery, n_components)})
        if keep_features:
            kept[name] = feats
    table = pd.DataFrame(rows).set_index("condition")
    return (table, kept) if keep_features else table


def difficulty_table(world, n_identities: int = 100, per_identity: int = 10, settings=None,
                     batch_size: int = 250, *, seed: int | None = None) -> pd.DataFrame:
    """Eigenfaces rank-1 under several sampling settings (dicts of :meth:`FaceWorld.sample` arguments).

    The generator's quick difficulty check: whitened PCA (100 components) on the raw frame in 48 px grey, the first
    half of each identity's images as the gallery. ``seed`` seeds each setting's per-image randomness (default
    ``world.seed + 99``). Returns a DataFrame with columns ``setting`` and ``rank1``.
    """
    if settings is None:
        settings = {"none": dict(nuisance="none"), "mild": dict(nuisance="mild"),
                    "full": dict(nuisance="full"),
                    "full + expression": dict(nuisance="full", expression="random"),
                    "full + expression + occlusion": dict(nuisance="full", expression="random", occlusion="random")}
    rows = []
    for name, kw in settings.items():
        g = torch.Generator().manual_seed(world.seed + 99 if seed is None else int(seed))
        ids = np.repeat(np.arange(n_identities), per_identity)
        grey = np.concatenate([_grey(world.sample(identities=ids[s:s + batch_size].tolist(), generator=g,
                                                  **kw).images, 48)
                               for s in range(0, len(ids), batch_size)])
        rows.append({"setting": name, "rank1": eigenfaces_rank1(grey, ids, n_gallery=per_identity // 2,
                                                                whiten=True)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- tables and figures
#: The rank-1 columns of :func:`calibrate`'s table, and the probes each rate is measured on.
METHODS = {"eigenfaces (aligned)": "probes", "eigenfaces (raw frame)": "probes", "dlib ResNet (aligned)": "probes",
           "dlib HOG detection rate": "dlib probes", "dlib end-to-end (detect, align, embed)": "dlib probes"}


def _rate_interval(rate: float, n: float, alpha: float):
    """(k, lo, hi) of a rate measured on n probes (Wilson interval); NaNs when it was not measured."""
    from facelab.metrics import wilson_interval

    if not (np.isfinite(rate) and np.isfinite(n) and n > 0):
        return float("nan"), float("nan"), float("nan")
    k = int(round(rate * n))
    lo, hi = wilson_interval(k, int(n), alpha)
    return k, lo, hi


def rank1_intervals(table: pd.DataFrame, methods: Sequence[str] | None = None, alpha: float = 0.05,
                    formatted: bool = True) -> pd.DataFrame:
    """Every rate of a :func:`calibrate` table with its (1 - alpha) Wilson interval over the probes it was measured
    on (rank-1 counts the probes whose nearest gallery image is the same person; the probes of one condition are
    rendered independently, so the interval is the binomial one).

    Returns cells in percent such as ``"40.2 [37.2, 43.3]"`` (``formatted``; ``"-"`` where a rate was not
    measured), or a frame with ``<method>``, ``<method>_lo`` and ``<method>_hi`` columns of fractions.
    """
    from facelab.metrics import with_interval

    methods = [m for m in (METHODS if methods is None else methods) if m in table.columns]
    out = {}
    for m in methods:
        n_col = METHODS.get(m, "probes")
        cells = [(row[m],) + _rate_interval(row[m], row.get(n_col, np.nan), alpha)[1:] for _, row in table.iterrows()]
        if formatted:
            out[m] = [with_interval(e, lo, hi, digits=1, percent=True) if np.isfinite(e) else "-"
                      for e, lo, hi in cells]
        else:
            out[m], out[f"{m}_lo"], out[f"{m}_hi"] = (list(c) for c in zip(*cells))
    return pd.DataFrame(out, index=table.index)


def hardest_knobs(table: pd.DataFrame, methods: Sequence[str], n: int = 3, skip_prefix: str = "full,") -> dict:
    """For each method, the ``n`` conditions (knobs) with the lowest rank-1, lowest first (conditions whose name
    starts with ``skip_prefix``, the identity-spread rows, are left out): method -> Series condition -> rank-1."""
    single = table.drop(index=[name for name in table.index if name.startswith(skip_prefix)])
    return {m: single[m].sort_values().head(n) for m in methods}


def plot_rank1(table: pd.DataFrame, methods: Sequence[str] | None = None, title: str | None = None,
               alpha: float = 0.05, legend: bool = True, ax=None) -> Figure:
    """Horizontal bars of rank-1 accuracy per condition and method, with (1 - alpha) Wilson intervals as error bars
    and the chance level as a dotted line."""
    import matplotlib.pyplot as plt

    methods = [m for m in (methods or ["eigenfaces (aligned)", "eigenfaces (raw frame)", "dlib ResNet (aligned)"])
               if m in table.columns]
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 0.45 * len(table) * len(methods) ** 0.5 + 1.2))
    else:
        fig = ax.figure
    iv = rank1_intervals(table, methods, alpha, formatted=False)
    height = 0.8 / len(methods)
    y = np.arange(len(table))
    for j, m in enumerate(methods):
        est = iv[m].to_numpy(float)
        err = np.abs(np.stack([est - iv[f"{m}_lo"].to_numpy(float), iv[f"{m}_hi"].to_numpy(float) - est]))
        ax.barh(y + (j - (len(methods) - 1) / 2) * height, est, height=height, xerr=err, label=m, capsize=2)
    if "chance" in table.columns:
        ax.axvline(float(table["chance"].max()), color="grey", ls=":", lw=1)
    ax.set_yticks(y, list(table.index))
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"rank-1 accuracy ({100 * (1 - alpha):.0f}% Wilson intervals)")
    if title:
        ax.set_title(title)
    if legend:
        ax.legend(fontsize=8, loc="lower right")
    return fig


# ---------------------------------------------------------------- realism: real networks on the world (issue 26)
#: The world's rendering styles compared by the realism study.
STYLES = ("cartoon", "photo")


class VerificationScores:
    """All pairwise similarities of one set of faces under one embedder: ``S`` (N, N), ``ids`` (N,), the embedder's
    published ``threshold`` (a similarity: same person when ``S >= threshold``) and a ``name``."""

    def __init__(self, S, ids, threshold: float, name: str = ""):
        self.S = np.asarray(S, dtype=np.float64)
        self.ids = np.asarray(ids)
        if self.S.shape != (len(self.ids), len(self.ids)):
            raise ValueError(f"S must be ({len(self.ids)}, {len(self.ids)}) for {len(self.ids)} labels, "
                             f"got {self.S.shape}")
        self.threshold, self.name = float(threshold), name

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(genuine similarities, impostor similarities) over all unordered pairs of distinct images."""
        iu = np.triu_indices(len(self.ids), 1)
        same = self.ids[iu[0]] == self.ids[iu[1]]
        return self.S[iu][same], self.S[iu][~same]


def verification_scores(embeddings, ids, embedder, name: str = "") -> VerificationScores:
    """:class:`VerificationScores` of embeddings (N, D) with an embedder's similarity and published threshold."""
    S = embedder.similarity(torch.as_tensor(embeddings), torch.as_tensor(embeddings)).cpu().numpy()
    return VerificationScores(S, ids, embedder.threshold, name)


def synthetic_verification_scores(world, embedders: Mapping, n_identities: int = 100, per_identity: int = 4, *,
                                  nuisance: str = "mild", identity_offset: int = 0, seed: int = 0,
                                  chunk_identities: int = 50) -> dict:
    """Render ``n_identities x per_identity`` faces of ``world`` (ground-truth landmarks for alignment) and embed them
    with each embedder: name -> :class:`VerificationScores`."""
    from facelab.recognition import embed_aligned

    if n_identities < 2 or per_identity < 2:
        raise ValueError("verification needs n_identities >= 2 and per_identity >= 2 (genuine and impostor pairs)")
    g = torch.Generator().manual_seed(int(seed))
    ids = np.repeat(np.arange(identity_offset, identity_offset + n_identities), per_identity)
    embs = {name: [] for name in embedders}
    step = chunk_identities * per_identity
    for s0 in range(0, len(ids), step):
        b = world.sample(identities=ids[s0:s0 + step].tolist(), nuisance=nuisance, generator=g)
        for name, e in embedders.items():
            embs[name].append(embed_aligned(e, b.images, b.landmarks))
    return {name: verification_scores(torch.cat(embs[name]), ids, e, name) for name, e in embedders.items()}


def real_verification_scores(embedders: Mapping) -> dict:
    """The book's real photos (:func:`facelab.photos.load_real_faces`, each embedder's own detector and template):
    name -> :class:`VerificationScores`. Genuine pairs are Barack Obama's six photos; every other pair is an
    impostor pair."""
    from facelab.photos import load_real_faces

    out = {}
    for name, e in embedders.items():
        faces = load_real_faces(e)
        x = torch.as_tensor(faces.chips).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            emb = e.embed(x).float().cpu()
        out[name] = verification_scores(emb, faces.identities, e, name)
    return out


def far_frr(scores: VerificationScores, n_boot: int = 500, alpha: float = 0.05, seed: int = 0) -> dict:
    """FAR and FRR at the published threshold with (1 - alpha) intervals from a bootstrap over *identities* (pairs
    that share a person are not independent, so the pairs are not resampled one by one).

    Returns a dict with ``far``, ``far_lo``, ``far_hi``, ``frr``, ``frr_lo``, ``frr_hi``, ``genuine_pairs``,
    ``impostor_pairs``, ``identities``, and the medians of the genuine and impostor similarities.
    """
    S, ids, thr = scores.S, scores.ids, scores.threshold
    uniq, inv = np.unique(ids, return_inverse=True)
    k = len(uniq)
    onehot = np.zeros((len(ids), k))
    onehot[np.arange(len(ids)), inv] = 1
    acc = (S >= thr).astype(np.float64)
    np.fill_diagonal(acc, 0)
    ones = np.ones_like(S)
    np.fill_diagonal(ones, 0)
    A = onehot.T @ acc @ onehot          # accepted ordered pairs between identities (diagonal: genuine)
    T = onehot.T @ ones @ onehot         # all ordered pairs between identities
    gen_acc, gen_tot = np.diag(A).copy(), np.diag(T).copy()
    np.fill_diagonal(A, 0)
    np.fill_diagonal(T, 0)

    def rates(w):
        ta = w @ T @ w
        far = (w @ A @ w) / ta if ta > 0 else np.nan
        tg = w @ gen_tot
        frr = 1 - (w @ gen_acc) / tg if tg > 0 else np.nan
        return far, frr

    far, frr = rates(np.ones(k))
    rng = np.random.default_rng(seed)
    boots = np.array([rates(np.bincount(rng.integers(0, k, k), minlength=k).astype(np.float64))
                      for _ in range(n_boot)])
    lo, hi = np.nanquantile(boots, alpha / 2, axis=0), np.nanquantile(boots, 1 - alpha / 2, axis=0)
    gen, imp = scores.pairs()
    return {"far": far, "far_lo": lo[0], "far_hi": hi[0], "frr": frr, "frr_lo": lo[1], "frr_hi": hi[1],
            "genuine_pairs": len(gen), "impostor_pairs": len(imp), "identities": k,
            "genuine_median": float(np.median(gen)) if len(gen) else np.nan,
            "impostor_median": float(np.median(imp)) if len(imp) else np.nan}


def verification_table(scores: Mapping, n_boot: int = 500, alpha: float = 0.05, formatted: bool = True) -> pd.DataFrame:
    """One row per (source, embedder) of ``scores`` ({(source, embedder name): VerificationScores}): FAR and FRR at
    the embedder's published threshold with identity-bootstrap intervals (cells like ``"16.3 [12.0, 21.2]"`` in
    percent when ``formatted``), pair counts and median similarities."""
    from facelab.metrics import with_interval

    rows = []
    for (source, name), sc in scores.items():
        r = far_frr(sc, n_boot=n_boot, alpha=alpha)
        row = {"faces": source, "network": name, "threshold": sc.threshold}
        if formatted:
            row["FAR (%)"] = with_interval(r["far"], r["far_lo"], r["far_hi"], digits=1, percent=True)
            row["FRR (%)"] = with_interval(r["frr"], r["frr_lo"], r["frr_hi"], digits=1, percent=True) \
                if np.isfinite(r["frr"]) else "-"
        else:
            row.update({k: r[k] for k in ("far", "far_lo", "far_hi", "frr", "frr_lo", "frr_hi")})
        row.update({"identities": r["identities"], "genuine pairs": r["genuine_pairs"],
                    "impostor pairs": r["impostor_pairs"], "genuine median": round(r["genuine_median"], 3),
                    "impostor median": round(r["impostor_median"], 3)})
        rows.append(row)
    return pd.DataFrame(rows).set_index(["network", "faces"]).sort_index(level=0, sort_remaining=False)


def plot_similarity_distributions(scores: Mapping, network: str, title: str | None = None, ax=None) -> Figure:
    """Histograms of the genuine (solid) and impostor (dashed) similarities of each face source for one network,
    and its published threshold (dotted): ``scores`` as for :func:`verification_table`."""
    from facelab.plotting import figure_axes

    fig, (ax,) = figure_axes(ax, figsize=(5.5, 3.2))
    colours = _colours()
    items = [(src, sc) for (src, net), sc in scores.items() if net == network]
    if not items:
        raise ValueError(f"no scores for network {network!r}; have {sorted({n for _, n in scores})}")
    lo = min(float(sc.S.min()) for _, sc in items)
    hi = max(float(np.max(sc.S[~np.eye(len(sc.ids), dtype=bool)])) for _, sc in items)
    bins = np.linspace(lo, hi, 50)
    for k, (src, sc) in enumerate(items):
        gen, imp = sc.pairs()
        c = colours[k % len(colours)]
        if len(gen):
            ax.hist(gen, bins=bins, density=True, histtype="step", color=c, lw=1.5, label=f"{src}: genuine")
        ax.hist(imp, bins=bins, density=True, histtype="step", color=c, lw=1.5, ls="--", label=f"{src}: impostor")
    ax.axvline(items[0][1].threshold, color="k", ls=":", lw=1, label="published threshold")
    ax.set_xlabel(f"{network} similarity (higher = more alike)")
    ax.set_ylabel("density")
    ax.set_title(title or network)
    ax.legend(fontsize=7)
    return fig


def _colours() -> list:
    import matplotlib.pyplot as plt

    return plt.rcParams["axes.prop_cycle"].by_key()["color"]


def _landmark_crops(images: torch.Tensor, landmarks: torch.Tensor, size: int, margin: float) -> torch.Tensor:
    """Square crops (N, 3, size, size) centred on each face's landmark box, side = margin x the box's longer side
    (zero outside the image)."""
    import torch.nn.functional as F

    n, H = images.shape[0], images.shape[-1]
    lm = landmarks.to(images)
    lo, hi = lm.min(1).values, lm.max(1).values
    c, side = (lo + hi) / 2, (hi - lo).max(1).values * margin
    t = torch.linspace(-0.5, 0.5, size, device=images.device)
    gx = c[:, 0, None] + side[:, None] * t[None]
    gy = c[:, 1, None] + side[:, None] * t[None]
    grid = torch.stack([gx[:, None, :].expand(n, size, size), gy[:, :, None].expand(n, size, size)], -1)
    return F.grid_sample(images, (grid + 0.5) * 2 / H - 1, align_corners=False, padding_mode="zeros")


def expression_predictions(images: torch.Tensor, landmarks: torch.Tensor) -> dict:
    """Predicted emotion names of face-api's expression net (crop = the landmark box, 112 px, colour) and of the
    FER2013 mini-Xception (landmark box grown by 20%, grey 64 px), mapped to face-api's names."""
    from facelab.models import load_expression_model, load_fer_expression
    from facelab.models.expression import EXPRESSIONS
    from facelab.models.fer import FER_CLASSES

    fer_names = {"angry": "angry", "disgust": "disgusted", "fear": "fearful", "happy": "happy", "sad": "sad",
                 "surprise": "surprised", "neutral": "neutral"}
    with torch.no_grad():
        fa = load_expression_model().predict(_landmark_crops(images, landmarks, 112, 1.0)).argmax(1).cpu().numpy()
        fe = load_fer_expression().probabilities(_landmark_crops(images, landmarks, 64, 1.2)).argmax(1).cpu().numpy()
    return {"face-api": np.array([EXPRESSIONS[i] for i in fa]),
            "FER2013": np.array([fer_names[FER_CLASSES[i]] for i in fe])}


def expression_agreement(world, per_emotion: int = 30, *, nuisance: str = "mild", identity_offset: int = 0,
                         seed: int = 0, alpha: float = 0.05, chunk: int = 105) -> tuple[pd.DataFrame, dict]:
    """How often real expression nets agree with the world's label on full-intensity prototypes of face-api's seven
    emotions (``per_emotion`` different identities each).

    Returns (table, raw): the table has one row per emotion plus ``"all"`` and, per net, the agreement and its
    (1 - alpha) Wilson interval (``<net>``, ``<net>_lo``, ``<net>_hi``) and ``n``; ``raw`` holds ``labels`` and each
    net's predictions (for confusion matrices).
    """
    from facelab.metrics import wilson_interval
    from facelab.models.expression import EXPRESSIONS

    if per_emotion < 1:
        raise ValueError(f"per_emotion must be a positive integer, got {per_emotion!r}")
    g = torch.Generator().manual_seed(int(seed))
    labels = np.repeat(np.array(EXPRESSIONS), per_emotion)
    ids = np.arange(identity_offset, identity_offset + len(labels))
    preds: dict = {}
    for s0 in range(0, len(ids), chunk):
        b = world.sample(identities=ids[s0:s0 + chunk].tolist(), expression=labels[s0:s0 + chunk].tolist(),
                         nuisance=nuisance, generator=g)
        for net, p in expression_predictions(b.images, b.landmarks).items():
            preds.setdefault(net, []).append(p)
    preds = {k: np.concatenate(v) for k, v in preds.items()}
    rows = []
    for emo in list(EXPRESSIONS) + ["all"]:
        sel = labels == emo if emo != "all" else np.ones(len(labels), bool)
        row = {"emotion": emo, "n": int(sel.sum())}
        for net, p in preds.items():
            k = int((p[sel] == labels[sel]).sum())
            lo, hi = wilson_interval(k, int(sel.sum()), alpha)
            row.update({net: k / sel.sum(), f"{net}_lo": lo, f"{net}_hi": hi})
        rows.append(row)
    return pd.DataFrame(rows).set_index("emotion"), {"labels": labels, **preds}


def agreement_cells(table: pd.DataFrame, nets: Sequence[str] = ("face-api", "FER2013")) -> pd.DataFrame:
    """:func:`expression_agreement`'s table as percent cells with intervals, such as ``"31.4 [25.5, 38.0]"``."""
    from facelab.metrics import with_interval

    return pd.DataFrame({net: [with_interval(r[net], r[f"{net}_lo"], r[f"{net}_hi"], digits=1, percent=True)
                               for _, r in table.iterrows()] for net in nets}, index=table.index)


def expression_identity_shift(world, embedder, per_emotion: int = 10, *, nuisance: str = "mild",
                              identity_offset: int = 0, seed: int = 0, alpha: float = 0.05,
                              chunk: int = 105) -> pd.DataFrame:
    """How far a full-intensity expression moves a person for a face recogniser: ``embedder``'s similarity between
    each prototype of face-api's six expressive emotions (``per_emotion`` people each, identities from
    ``identity_offset``) and the same person's neutral face under the same nuisance (a list of prototypes draws no
    random numbers, so the neutral twin, rendered with a generator seeded alike, gets the same pose, light and
    camera), ground-truth alignment.

    Returns one row per emotion plus ``"all"``: ``n``, the mean ``distance`` (minus the similarity: dlib's L2
    distance, or one minus SFace's cosine), and ``rejected``, the share whose similarity falls below the embedder's
    published threshold (the person would not be recognised), with its (1 - alpha) Wilson interval
    (``rejected_lo``, ``rejected_hi``)."""
    from facelab.metrics import wilson_interval
    from facelab.models.expression import EXPRESSIONS
    from facelab.recognition import embed_aligned

    if per_emotion < 1:
        raise ValueError(f"per_emotion must be a positive integer, got {per_emotion!r}")
    emotions = [e for e in EXPRESSIONS if e != "neutral"]
    labels = np.repeat(np.array(emotions), per_emotion)
    ids = np.arange(identity_offset, identity_offset + len(labels))
    g, g0 = torch.Generator().manual_seed(int(seed)), torch.Generator().manual_seed(int(seed))
    sims = []
    for s0 in range(0, len(ids), chunk):
        part = ids[s0:s0 + chunk].tolist()
        b = world.sample(identities=part, expression=labels[s0:s0 + chunk].tolist(), nuisance=nuisance, generator=g)
        n = world.sample(identities=part, expression=["neutral"] * len(part), nuisance=nuisance, generator=g0)
        e, e0 = embed_aligned(embedder, b.images, b.landmarks), embed_aligned(embedder, n.images, n.landmarks)
        sims.append(torch.as_tensor(embedder.similarity(e, e0)).diagonal().float().cpu())
    sim = torch.cat(sims).numpy()
    off = 1.0 if getattr(embedder, "distance", "") == "cosine" else 0.0      # similarity -> distance
    rows = []
    for emo in emotions + ["all"]:
        sel = labels == emo if emo != "all" else np.ones(len(labels), bool)
        k, m = int((sim[sel] < embedder.threshold).sum()), int(sel.sum())
        lo, hi = wilson_interval(k, m, alpha)
        rows.append({"emotion": emo, "n": m, "distance": float(off - sim[sel].mean()), "rejected": k / m,
                     "rejected_lo": lo, "rejected_hi": hi})
    return pd.DataFrame(rows).set_index("emotion")


def style_montage(seed: int = 0, identities: Sequence[int] = range(6), *, size: int = 112, nuisance: str = "none",
                  expression=None, generator_seed: int = 0, device="cpu") -> tuple[torch.Tensor, list]:
    """The same identities (and expressions) rendered in each style of :data:`STYLES`, style after style:
    (images (len(STYLES) * n, 3, size, size), titles)."""
    from facelab.synth import FaceWorld

    images, titles = [], []
    for style in STYLES:
        world = FaceWorld(seed=seed, size=size, device=device, style=style)
        b = world.sample(identities=list(identities), nuisance=nuisance, expression=expression,
                         generator=torch.Generator().manual_seed(int(generator_seed)))
        images.append(b.images.cpu())
        titles += [f"{style} · id {i}" + (f" · {e}" if e != "neutral" else "")
                   for i, e in zip(b.labels.identity, b.labels.emotion)]
    return torch.cat(images), titles


# ---------------------------------------------------------------- realism: why photo-style people look alike to dlib
#: The record of one run of ``benchmarks/bench_synth_identity_limits.py`` (its README says how it was made).
IDENTITY_LIMITS_RECORD = Path(__file__).resolve().parents[3] / "data" / "runs" / "synth_identity_limits"
_IDENTITY_LIMITS_COMMAND = ("OMP_WAIT_POLICY=PASSIVE FACELAB_THREADS=2 nice -n 19 .venv/bin/python "
                            "benchmarks/bench_synth_identity_limits.py")
#: The tables of the record and the columns each of their rows must have.
_IDENTITY_LIMITS_COLUMNS = {
    "real": ("faces", "images", "impostor_pairs", "impostor_mean_distance", "far", "far_lo", "far_hi"),
    "shapes": ("texture", "faces", "shape", "images", "impostor_pairs", "impostor_mean_distance", "far", "far_lo",
               "far_hi"),
    "pool": ("seed", "detail_faces", "lfw_faces", "identities", "impostor_mean_distance", "far", "far_lo", "far_hi",
             "frr", "frr_lo", "frr_hi"),
    "caricature": ("edit", "factor", "impostor_mean_distance", "genuine_mean_distance", "far", "far_lo", "far_hi",
                   "frr"),
}


def identity_limits_record(path=None) -> dict:
    """Read the stored record of ``benchmarks/bench_synth_identity_limits.py`` (dlib's ResNet, L2 threshold 0.6)
    from the folder ``path`` (default :data:`IDENTITY_LIMITS_RECORD`) or from a ``results.json`` file.

    Returns ``{"real", "shapes", "pool", "caricature"}`` as DataFrames, one row per measured set, with the impostor
    mean distance, FAR and its 95 % identity-bootstrap interval (``far_lo``, ``far_hi``; ``far_pairs_lo/hi``: Wilson
    over pairs in ``real`` and ``shapes``), FRR where there are genuine pairs:

    * ``real``: the book's real photos as they are;
    * ``shapes``: real textures (``texture``: ``face region`` or ``photo frame``) of ``faces`` (the real faces or
      photofit composites of them) warped onto a ``shape``;
    * ``pool``: the photo-style world per ``seed`` with ``detail_faces`` real faces and ``lfw_faces`` LFW reliefs
      behind it;
    * ``caricature``: the world's aligned chips with an ``edit`` (``factor`` for the caricatures, NaN otherwise);

    and ``"meta"``: a dict with the run's ``date``, ``command``, ``machine``, ``seconds``, ``settings`` and ``git``.
    A missing file is a FileNotFoundError and a record without these tables a ValueError, both naming the file and
    the command that makes it."""
    import json

    p = Path(path) if path is not None else IDENTITY_LIMITS_RECORD
    res_file = p / "results.json" if p.suffix != ".json" else p
    if not res_file.is_file():
        raise FileNotFoundError(f"no identity-limits record at {res_file}: expected the results.json that "
                                f"`{_IDENTITY_LIMITS_COMMAND}` writes")
    try:
        res = json.loads(res_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{res_file} is not valid JSON ({err}); rerun `{_IDENTITY_LIMITS_COMMAND}`") from err
    if not isinstance(res, dict):
        raise ValueError(f"{res_file} is not a synth_identity_limits record: expected a JSON object; rerun "
                         f"`{_IDENTITY_LIMITS_COMMAND}`")
    out = {}
    for key, columns in _IDENTITY_LIMITS_COLUMNS.items():
        rows = res.get(key)
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
            raise ValueError(f"{res_file} is not a synth_identity_limits record: {key!r} is missing or not a "
                             f"non-empty list of rows; rerun `{_IDENTITY_LIMITS_COMMAND}`")
        missing = sorted({c for r in rows for c in columns if c not in r})
        if missing:
            raise ValueError(f"{res_file}: the {key!r} rows lack {missing}; rerun `{_IDENTITY_LIMITS_COMMAND}`")
        df = pd.DataFrame(rows)
        num = [c for c in columns if c not in ("faces", "texture", "shape", "edit")]
        df[num] = df[num].apply(pd.to_numeric, errors="coerce")
        rates = [c for c in df.columns if c.startswith(("far", "frr"))]
        bad = [c for c in rates if ((df[c] < 0) | (df[c] > 1)).any()]
        if bad:
            raise ValueError(f"{res_file}: the {key!r} rates {bad} lie outside [0, 1]; rerun "
                             f"`{_IDENTITY_LIMITS_COMMAND}`")
        out[key] = df
    out["meta"] = {k: res.get(k) for k in ("date", "command", "machine", "seconds", "settings", "git", "what")}
    return out
