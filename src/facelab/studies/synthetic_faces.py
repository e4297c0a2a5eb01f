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
* :func:`difficulty_table` is the generator's own quick check (eigenfaces with whitened PCA on the raw, unaligned
  frame, 48 px grey), which the world's identity spread is tuned against and ``benchmarks/bench_synth.py`` reports.
"""

from __future__ import annotations

import time
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
           "rank1_intervals", "hardest_knobs", "plot_rank1"]

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
        world = type(world)(seed=world.seed, size=world.size, device=world.device, identity_strength=float(strength))
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
