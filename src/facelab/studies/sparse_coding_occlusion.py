"""Chapter 03 (``notebooks/03_sparse_coding_occlusion.ipynb``): recognition under occlusion by sparse coding.

The chapter's protocol, tables and figures. The methods it studies (ADMM solvers, SRC, CRC, RSC, WCSC, WWCSC, the
feature transformers) live in :mod:`facelab.sparse`; this module only generates the data, runs the comparisons and
draws them.

Protocol
--------
- :func:`block_occlude` / :func:`corrupt_pixels`: Wright et al. (2009)'s contiguous block occlusion (a square of an
  unrelated :func:`texture`) and random pixel corruption;
- :func:`render_faces` / :func:`render_protocol`: gallery and probes from the synthetic face world, with the world's
  own occluders (sunglasses, scarf) and their ground-truth masks;
- :func:`real_photo_sets`: the real-photo gallery and occluded Obama probes.

Tables (every accuracy with its 95 % Wilson interval in ``accuracy_lo`` / ``accuracy_hi``)
-------------------------------------------------------------------------------------------
- :func:`evaluate`, :func:`evaluate_sets`, :func:`occlusion_curve`, :func:`sensitivity`: recognition rates, with the
  per-probe correctness kept (column ``correct``) for the paired tests;
- :func:`accuracy_table`: the wide display table (``"0.85 [0.64, 0.95]"`` cells);
- :func:`paired_comparisons`: "does A beat B?" on the same probes: the difference with a paired-bootstrap interval
  and McNemar's test;
- :func:`weight_auc_table`, :func:`rho_iterations`, :func:`predictions_table`, :func:`embedding_predictions`,
  :func:`correct_counts`, :func:`published_comparison`.

Figures (``plot_x(..., ax=None) -> Figure``): :func:`plot_occlusion_curves`, :func:`plot_weight_maps`,
:func:`plot_convergence`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.base import clone

from facelab.core.images import check_images
from facelab.metrics.intervals import format_interval_columns, mcnemar_test, paired_bootstrap, wilson_interval
from facelab.sparse import CRC, RSC, SRC, WCSC, WWCSC, Downsample, NearestNeighbor, lasso_admm, unit_rms

__all__ = [
    "PUBLISHED_AR",
    "texture",
    "block_occlude",
    "corrupt_pixels",
    "downsample_masks",
    "weight_mask_auc",
    "FaceSet",
    "render_faces",
    "render_protocol",
    "default_methods",
    "protocol_sets",
    "run_protocol",
    "pool_seeds",
    "curve_frame",
    "convergence_table",
    "validate_wwcsc_init",
    "evaluate",
    "evaluate_sets",
    "occlusion_curve",
    "sensitivity",
    "accuracy_table",
    "paired_comparisons",
    "weight_auc_table",
    "rho_iterations",
    "real_photo_sets",
    "predictions_table",
    "embedding_predictions",
    "correct_counts",
    "published_comparison",
    "plot_occlusion_curves",
    "plot_weight_maps",
    "plot_convergence",
]

#: Published recognition rates on the AR database (METHODS.md): Wright et al. 2009 (SRC) and Yang et al. 2011 (RSC).
PUBLISHED_AR = pd.DataFrame([
    {"method": "SRC", "protocol": "sunglasses", "published_AR": 0.870, "source": "Wright et al. 2009"},
    {"method": "SRC", "protocol": "scarf", "published_AR": 0.595, "source": "Wright et al. 2009"},
    {"method": "RSC", "protocol": "sunglasses", "published_AR": 0.99, "source": "Yang et al. 2011"},
    {"method": "RSC", "protocol": "scarf", "published_AR": 0.97, "source": "Yang et al. 2011"},
])


def _check_fraction(name, fraction, high=1.0):
    f = float(fraction)
    if not (0.0 <= f <= high) or math.isnan(f):
        raise ValueError(f"{name} must be in [0, {high}], got {fraction!r}")
    return f


def _check_images(images) -> torch.Tensor:
    """Float (N, C, H, W) images, any channel count (the occluders also run on 1-channel test arrays)."""
    return check_images(torch.as_tensor(images).float(), channels=None, allow_empty=True)


def _wilson_columns(df: pd.DataFrame, k, n, alpha: float = 0.05) -> pd.DataFrame:
    lo, hi = wilson_interval(np.asarray(k), np.asarray(n), alpha)
    df["accuracy_lo"], df["accuracy_hi"] = np.atleast_1d(lo), np.atleast_1d(hi)
    return df


# --------------------------------------------------------------------------------------------------------------
# occluders (the data of the protocol)
# --------------------------------------------------------------------------------------------------------------
def texture(size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A (size, size) texture in [0, 1] with face-like spatial frequencies (stands in for Wright's baboon image)."""
    noise = torch.rand(1, 1, max(2, size // 4), max(2, size // 4), generator=generator)
    coarse = torch.nn.functional.interpolate(noise, size=(size, size), mode="bilinear", align_corners=False)
    fine = torch.rand(1, 1, size, size, generator=generator)
    return (0.75 * coarse + 0.25 * fine)[0, 0].clamp(0, 1)


def block_occlude(images, fraction: float, generator: torch.Generator | None = None):
    """Cover a random square of ``fraction`` of each image with an unrelated texture (Wright et al. 2009).

    The random draws come from ``generator`` (a CPU generator, e.g. ``P.generator(40)``); the result stays on the
    images' device.

    Parameters
    ----------
    images : tensor (N, C, H, W) in [0, 1]
    fraction : float in [0, 1]
        Fraction of the image area covered (the side is ``sqrt(fraction * H * W)``, clipped to the image).
    generator : torch.Generator, optional

    Returns
    -------
    occluded : tensor (N, C, H, W)
    mask : bool tensor (N, 1, H, W), True on the occluder
    """
    x = _check_images(images).clone()
    f = _check_fraction("fraction", fraction)
    n, _, h, w = x.shape
    mask = torch.zeros(n, 1, h, w, dtype=torch.bool, device=x.device)
    side_h = min(h, int(round(math.sqrt(f * h * w))))
    side_w = min(w, int(round(f * h * w / max(side_h, 1)))) if side_h else 0
    if side_h == 0 or side_w == 0:
        return x, mask
    for i in range(n):
        top = int(torch.randint(0, h - side_h + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - side_w + 1, (1,), generator=generator))
        tex = texture(max(side_h, side_w), generator)[:side_h, :side_w]
        x[i, :, top:top + side_h, left:left + side_w] = tex.to(x.device)
        mask[i, 0, top:top + side_h, left:left + side_w] = True
    return x, mask


def corrupt_pixels(images, fraction: float, generator: torch.Generator | None = None):
    """Replace a random ``fraction`` of the pixels of each image by i.i.d. uniform values in [0, 1] (Wright et al.).

    Returns the corrupted images and the bool mask (N, 1, H, W) of corrupted pixels (the same pixels in all channels);
    drawn from the CPU ``generator``, returned on the images' device.
    """
    x = _check_images(images).clone()
    f = _check_fraction("fraction", fraction)
    n, c, h, w = x.shape
    mask = (torch.rand(n, 1, h, w, generator=generator) < f).to(x.device)
    noise = torch.rand(n, 1, h, w, generator=generator).to(x.device).expand(n, c, h, w)
    x = torch.where(mask.expand(n, c, h, w), noise, x)
    return x, mask


def downsample_masks(masks, size) -> np.ndarray:
    """Occluded fraction of each cell of the downsampled grid, shape (N, h*w) (matches :class:`Downsample`)."""
    t = torch.as_tensor(masks).float().cpu()
    if t.ndim == 3:
        t = t[:, None]
    return torch.nn.functional.adaptive_avg_pool2d(t, tuple(size)).reshape(len(t), -1).numpy()


def weight_mask_auc(weights, masks) -> float:
    """AUC of ``1 - weight`` as a detector of occluded pixels (pooled over all pixels of all probes).

    ``weights`` and ``masks`` are (N, m) (``masks`` bool, or occluded fractions, counted occluded when >= 0.5).
    1.0: every occluded pixel has a lower weight than every clean one; 0.5: the weights ignore the occluder.
    """
    from sklearn.metrics import roc_auc_score

    w = np.asarray(weights, dtype=float).ravel()
    m = np.asarray(masks).ravel()
    m = m >= 0.5 if m.dtype != bool else m
    if w.shape != m.shape:
        raise ValueError(f"weights and masks must have the same number of entries, got {w.size} and {m.size}")
    if m.all() or not m.any():
        return float("nan")
    return float(roc_auc_score(m, -w))


# --------------------------------------------------------------------------------------------------------------
# synthetic face world
# --------------------------------------------------------------------------------------------------------------
@dataclass
class FaceSet:
    """Images with identity labels and (optional) occlusion masks."""

    images: torch.Tensor  # (N, 3, H, W) in [0, 1]
    identity: np.ndarray  # (N,)
    masks: torch.Tensor | None = None  # (N, 1, H, W) bool
    seconds: float = 0.0

    def __len__(self):
        return len(self.images)


def render_faces(world, n_identities: int, per_identity: int, *, occlusion=None, occlusion_fraction=None,
                 nuisance: str = "mild", seed: int = 0, identity_offset: int = 0) -> FaceSet:
    """Render faces of identities ``identity_offset ...`` from a :class:`facelab.synth.FaceWorld`.

    A thin wrapper over ``world.sample`` (which renders on the world's device) that keeps what recognition needs
    (images, identity, masks, on the CPU) and the time it took. The gallery is rendered with ``occlusion=None``;
    probes with the world's occluders (``"sunglasses"``, ``"scarf"``, ...).
    """
    t0 = time.perf_counter()
    batch = world.sample(n_identities=n_identities, per_identity=per_identity, identity_offset=identity_offset,
                         nuisance=nuisance, occlusion=occlusion, occlusion_fraction=occlusion_fraction,
                         generator=torch.Generator().manual_seed(int(seed)))
    masks = getattr(batch, "masks", None)
    return FaceSet(images=batch.images.float().cpu(), identity=np.asarray(batch.labels["identity"]),
                   masks=None if masks is None else masks.cpu(), seconds=time.perf_counter() - t0)


def render_protocol(n_identities: int, per_identity: int, probes_per_identity: int, *, seed: int = 0,
                    device="cpu", size: int = 112, nuisance: str = "mild") -> dict[str, FaceSet]:
    """The chapter's face sets from one :class:`~facelab.synth.FaceWorld` (world seed ``seed``).

    Returns ``{"gallery", "probes", "sunglasses", "scarf"}``: the gallery (``per_identity`` clean images per person)
    and three probe sets of ``probes_per_identity`` other images per person, clean or with the world's sunglasses /
    scarf (with masks), rendered with seeds ``seed + 1 ... seed + 4`` on ``device``.
    """
    from facelab.synth import FaceWorld

    world = FaceWorld(seed=seed, size=size, device=device)
    return {
        "gallery": render_faces(world, n_identities, per_identity, nuisance=nuisance, seed=seed + 1),
        "probes": render_faces(world, n_identities, probes_per_identity, nuisance=nuisance, seed=seed + 2),
        "sunglasses": render_faces(world, n_identities, probes_per_identity, nuisance=nuisance,
                                   occlusion="sunglasses", seed=seed + 3),
        "scarf": render_faces(world, n_identities, probes_per_identity, nuisance=nuisance, occlusion="scarf",
                              seed=seed + 4),
    }


# --------------------------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------------------------
def default_methods(lam: float = 1e-2, device="cpu") -> dict:
    """The classifiers compared in the chapter, with the parameters used there.

    RSC runs with its authors' settings (:data:`facelab.sparse.RSC_SETTINGS`): ``"RSC (clean)"`` is the setting for
    clean probes, ``"RSC (occl.)"`` the one for occluded probes; each is reported on every probe set, and the
    chapter reads the clean setting on clean probes and the occlusion setting on occluded ones. SRC+I (the
    identity-extended SRC of Wright et al.) is the occlusion baseline. SRC and SRC+I use the ADMM penalty
    ``rho = 10 lam`` (the penalty changes the speed, not the solution: see :func:`rho_iterations`).
    """
    return {
        "NN": NearestNeighbor(device=device),
        "CRC": CRC(lam=lam, device=device),
        # rho = 10 lam: the same Lasso solutions, reached in ~60 iterations instead of hitting the 300 cap (SRC+I)
        "SRC": SRC(lam=lam, rho=10 * lam, max_iter=1000, device=device),
        "SRC+I": SRC(lam=lam, extended=True, rho=10 * lam, max_iter=1000, device=device),
        "RSC (clean)": RSC(setting="clean", device=device),
        "RSC (occl.)": RSC(setting="occlusion", device=device),
        "WCSC": WCSC(lam=lam, device=device),
        "WWCSC": WWCSC(lam=lam, device=device),
    }


def protocol_sets(faces: dict, block_fractions=(0.4, 0.6), pixel_fractions=(0.6,), seed: int = 0,
                  occluders=("sunglasses", "scarf")) -> dict:
    """All probe sets of one world: clean, sunglasses, scarf, and the clean probes under random blocks / pixels.

    ``faces`` is :func:`render_protocol`'s output. Keys are ``(kind, fraction)`` with kind ``"clean"``,
    ``"sunglasses"``, ``"scarf"`` (fraction ``nan``), ``"block"`` or ``"pixels"``; values ``(images, identity)``.
    Block / pixel draws use CPU generators seeded ``seed + 40 + i`` / ``seed + 60 + i``. ``occluders`` names the
    world's occluded sets to include (``()``: none; the other sets are the same).
    """
    probes = faces["probes"]
    sets = {("clean", float("nan")): (probes.images, probes.identity)}
    for kind in occluders:
        if kind not in ("sunglasses", "scarf"):
            raise ValueError(f"occluders must name 'sunglasses' and/or 'scarf', got {kind!r}")
        sets[(kind, float("nan"))] = (faces[kind].images, faces[kind].identity)
    for offset, kind, occlude, fractions in ((40, "block", block_occlude, block_fractions),
                                             (60, "pixels", corrupt_pixels, pixel_fractions)):
        for i, f in enumerate(fractions):
            f = _check_fraction("occlusion fraction", f)
            if f == 0:
                continue  # the clean set
            occluded, _ = occlude(probes.images, f, generator=torch.Generator().manual_seed(seed + offset + i))
            sets[(kind, f)] = (occluded, probes.identity)
    return sets


def run_protocol(methods: dict, seeds: Sequence[int], n_identities: int, per_identity: int,
                 probes_per_identity: int, size, *, block_fractions=(0.4, 0.6), pixel_fractions=(0.6,),
                 occluders=("sunglasses", "scarf"), device="cpu", world_device=None) -> pd.DataFrame:
    """Every method on every probe set of several independent synthetic worlds (one world per seed).

    For each seed: a fresh :func:`render_protocol` world (other people, other gallery, other probes), features by
    :class:`~facelab.sparse.Downsample` to ``size``, the sets of :func:`protocol_sets`, and one batched
    :func:`evaluate_sets` per method. Returns a long frame with ``seed``, ``kind``, ``fraction``, ``method``,
    ``accuracy`` (with its Wilson interval), ``n_probes``, ``ms_per_probe``, ``correct`` (per-probe bools); pool
    the seeds with :func:`pool_seeds`. ``occluders``: the world's occluded sets to code (:func:`protocol_sets`).
    """
    if len(seeds) == 0:
        raise ValueError("run_protocol needs at least one seed")
    out = []
    for seed in seeds:
        faces = render_protocol(n_identities, per_identity, probes_per_identity, seed=int(seed),
                                device=world_device or device)
        features = Downsample(size=size).fit(faces["gallery"].images)
        sets = protocol_sets(faces, block_fractions, pixel_fractions, seed=int(seed), occluders=occluders)
        keyed = {i: v for i, v in enumerate(sets.values())}
        df = evaluate_sets(methods, features, faces["gallery"], keyed, device=device)
        keys = list(sets)
        df.insert(0, "fraction", [keys[i][1] for i in df["set"]])
        df.insert(0, "kind", [keys[i][0] for i in df["set"]])
        df.insert(0, "seed", int(seed))
        out.append(df.drop(columns="set"))
    return pd.concat(out, ignore_index=True)


def pool_seeds(results: pd.DataFrame, by=("kind", "fraction", "method"), alpha: float = 0.05) -> pd.DataFrame:
    """Pool the probes of all seeds: one row per ``by`` group with the pooled ``correct``, rate and Wilson interval.

    ``fraction`` may be NaN (sunglasses, scarf): grouping keeps those rows.
    """
    rows = []
    for key, g in results.groupby(list(by), sort=False, dropna=False):
        correct = np.concatenate(list(g["correct"]))
        rows.append({**dict(zip(by, key)), "accuracy": float(correct.mean()), "n_probes": len(correct),
                     "n_seeds": g["seed"].nunique() if "seed" in g else 1, "correct": correct})
    df = pd.DataFrame(rows)
    if "kind" in df and "fraction" in df:
        df.insert(0, "set", [k if not np.isfinite(f) else f"{k} {f:.0%}" for k, f in zip(df["kind"], df["fraction"])])
    lo, hi = wilson_interval(np.array([c.sum() for c in df["correct"]]), df["n_probes"].to_numpy(), alpha)
    df.insert(df.columns.get_loc("accuracy") + 1, "accuracy_lo", np.atleast_1d(lo))
    df.insert(df.columns.get_loc("accuracy") + 2, "accuracy_hi", np.atleast_1d(hi))
    return df


def curve_frame(pooled: pd.DataFrame) -> pd.DataFrame:
    """The block / pixel rows of :func:`pool_seeds`' output, with the clean probes as fraction 0 of both curves."""
    clean = pooled[pooled["kind"] == "clean"]
    parts = [pooled[pooled["kind"].isin(["block", "pixels"])]]
    for kind in ("block", "pixels"):
        parts.append(clean.assign(kind=kind, fraction=0.0))
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values(["kind", "fraction"], kind="stable").reset_index(drop=True)


def convergence_table(fitted: dict, probe_features, results: dict | None = None) -> pd.DataFrame:
    """How each fitted iterative method stopped on the same probes: the share that converged, and why the rest stopped.

    ``fitted``: name -> fitted SRC / RSC / WCSC / WWCSC (anything with ``encode``). One row per method with
    ``rounds`` (weighted sparse-coding rounds), ``iterations per round`` (median over probes is not tracked per
    probe: the batch runs until every probe converged or the cap, so this is the batch's count), ``converged (last
    round)`` and ``converged (every round)`` (shares of probes meeting the primal/dual test), and ``stop reason``
    counts (``tolerance`` / ``iteration cap``, last round). CRC (closed form) and NN have nothing to converge.
    ``results``: optional name -> ``est.encode(probe_features)`` already computed (e.g. kept for
    :func:`plot_convergence`), used instead of coding the probes again.
    """
    rows = []
    for name, est in fitted.items():
        res = results[name] if results is not None and name in results else est.encode(probe_features, record=False)
        per_round = res.round_converged or [res.converged]
        iters = res.round_iterations or [res.n_iter]
        all_rounds = torch.stack([c.cpu() for c in per_round]).all(0).numpy()
        reasons = pd.Series(res.stop_reason).value_counts()
        rows.append({"method": name, "rounds": len(per_round), "cap per round": int(est.max_iter),
                     "iterations per round": "/".join(str(int(i)) for i in iters),
                     "converged (last round)": float(res.converged.float().mean()),
                     "converged (every round)": float(all_rounds.mean()),
                     "stopped: tolerance": int(reasons.get("tolerance", 0)),
                     "stopped: iteration cap": int(reasons.get("iteration cap", 0))})
    return pd.DataFrame(rows)


def validate_wwcsc_init(seed: int, n_identities: int, per_identity: int, probes_per_identity: int, size, *,
                        fractions=(0.4, 0.6), lam: float = 1e-2, device="cpu") -> tuple[pd.DataFrame, pd.DataFrame]:
    """WWCSC started from unit weights vs from the mean-face residual, on a **validation** world (``seed``).

    Choose ``seed`` apart from the test worlds. Returns the pooled rates per start (with Wilson intervals) and the
    paired comparison (McNemar) over the block fractions pooled. Only the clean and block-occluded probes are coded
    (the world's sunglasses and scarf sets are not used here).
    """
    methods = {"WWCSC (unit start)": WWCSC(lam=lam, init="unit"), "WWCSC (mean-face start)": WWCSC(lam=lam, init="mean")}
    res = run_protocol(methods, [seed], n_identities, per_identity, probes_per_identity, size,
                       block_fractions=fractions, pixel_fractions=(), occluders=(), device=device)
    pooled = pool_seeds(res)
    test = paired_comparisons(res, [("WWCSC (mean-face start)", "WWCSC (unit start)")],
                              {"blocks pooled": res["kind"].eq("block").to_numpy()}, seed=seed)
    return pooled, test


def _fit(est, X, y, device):
    est = clone(est)
    if device is not None:
        est.set_params(device=device)
    return est.fit(X, y)


def evaluate(methods: dict, gallery_features, gallery_labels, probe_features, probe_labels,
             fitted: bool = False, *, device=None) -> pd.DataFrame:
    """Recognition rate (with its Wilson interval) and time per probe of each method on the same gallery and probes.

    ``device`` (optional) overrides the estimators' own device. Returns a DataFrame with columns ``method``,
    ``accuracy``, ``accuracy_lo``, ``accuracy_hi``, ``ms_per_probe``, ``n_probes`` and ``correct`` (per-probe bools).
    """
    rows = []
    for name, est in methods.items():
        if not fitted:
            est = _fit(est, gallery_features, gallery_labels, device)
            methods[name] = est
        t0 = time.perf_counter()
        pred = est.predict(probe_features)
        dt = time.perf_counter() - t0
        correct = pred == np.asarray(probe_labels)
        rows.append({"method": name, "accuracy": float(np.mean(correct)),
                     "ms_per_probe": 1e3 * dt / len(probe_labels), "n_probes": len(probe_labels),
                     "correct": correct})
    df = pd.DataFrame(rows)
    return _wilson_columns(df, [c.sum() for c in df["correct"]], df["n_probes"])


def evaluate_sets(methods: dict, features, gallery: FaceSet, sets: dict, *, device=None) -> pd.DataFrame:
    """Recognition rate of each method on several probe sets, coded in one batch per method.

    Batching all probe sets together costs about as much as one set: an ADMM iteration on a small gallery is
    dominated by fixed per-iteration overhead, not by the number of probes.

    Parameters
    ----------
    methods : dict name -> classifier (unfitted; cloned and fitted on the gallery)
    features : fitted transformer (e.g. :class:`~facelab.sparse.Downsample`)
    gallery : FaceSet
    sets : dict name -> (images, identity)
    device : str or torch.device, optional
        Overrides the estimators' device (``P.device`` in the chapter).

    Returns
    -------
    DataFrame with ``set``, ``method``, ``accuracy``, ``accuracy_lo``, ``accuracy_hi`` (95 % Wilson), ``n_probes``,
    ``ms_per_probe`` and ``correct`` (per-probe bool array, for :func:`paired_comparisons`).
    """
    G = features.transform(gallery.images)
    names = list(sets)
    feats = [features.transform(sets[k][0]) for k in names]
    labels = [np.asarray(sets[k][1]) for k in names]
    X = np.concatenate(feats)
    bounds = np.cumsum([0] + [len(f) for f in feats])
    rows = []
    for mname, est in methods.items():
        fitted = _fit(est, G, gallery.identity, device)
        t0 = time.perf_counter()
        pred = fitted.predict(X)
        ms = 1e3 * (time.perf_counter() - t0) / len(X)
        for i, k in enumerate(names):
            correct = pred[bounds[i]:bounds[i + 1]] == labels[i]
            rows.append({"set": k, "method": mname, "accuracy": float(np.mean(correct)),
                         "n_probes": len(correct), "ms_per_probe": ms, "correct": correct})
    df = pd.DataFrame(rows)
    df = _wilson_columns(df, [c.sum() for c in df["correct"]], df["n_probes"])
    return df[["set", "method", "accuracy", "accuracy_lo", "accuracy_hi", "n_probes", "ms_per_probe", "correct"]]


def occlusion_curve(methods: dict, features, gallery: FaceSet, probes: FaceSet, kind: str, fractions,
                    seed: int = 0, *, device=None) -> pd.DataFrame:
    """Recognition rate of each method vs occluded fraction (``kind="block"`` or ``"pixels"``).

    The probes are occluded at every fraction (a fresh random block or pixel set per probe and fraction, seeds
    ``seed + i``) and all fractions are coded together (:func:`evaluate_sets`). Returns a long DataFrame (``kind``,
    ``fraction``, ``method``, ``accuracy`` with its interval, ...).
    """
    if kind not in ("block", "pixels"):
        raise ValueError(f"kind must be 'block' or 'pixels', got {kind!r}")
    occlude = block_occlude if kind == "block" else corrupt_pixels
    sets = {}
    for i, f in enumerate(fractions):
        occluded, _ = occlude(probes.images, f, generator=torch.Generator().manual_seed(seed + i))
        sets[float(f)] = (occluded, probes.identity)
    df = evaluate_sets(methods, features, gallery, sets, device=device).rename(columns={"set": "fraction"})
    df.insert(0, "kind", kind)
    return df


def sensitivity(estimator, param: str, values, features, gallery: FaceSet, probes: FaceSet, kind: str = "block",
                fraction: float = 0.4, seed: int = 0, *, device=None) -> pd.DataFrame:
    """Recognition rate (with Wilson interval) of ``estimator`` at one occlusion level as one parameter varies."""
    occlude = block_occlude if kind == "block" else corrupt_pixels
    occluded, _ = occlude(probes.images, fraction, generator=torch.Generator().manual_seed(seed))
    G, X = features.transform(gallery.images), features.transform(occluded)
    rows = []
    for v in values:
        est = _fit(clone(estimator).set_params(**{param: v}), G, gallery.identity, device)
        correct = est.predict(X) == np.asarray(probes.identity)
        rows.append({"parameter": param, "value": v, "accuracy": float(np.mean(correct)),
                     "n_probes": len(correct), "n_correct": int(correct.sum())})
    df = pd.DataFrame(rows)
    return _wilson_columns(df, df["n_correct"], df["n_probes"]).drop(columns="n_correct")


def accuracy_table(results: pd.DataFrame, columns="set", index="method", *,
                   order: Sequence | None = None, digits: int = 2) -> pd.DataFrame:
    """Wide display table of a results frame: one ``"0.85 [0.64, 0.95]"`` cell (accuracy [95 % Wilson]) per cell.

    ``results`` is the output of :func:`evaluate_sets` / :func:`occlusion_curve`; ``index`` and ``columns`` name the
    row and column keys (either may be a list: ``index=["kind", "fraction"], columns="method"`` for the occlusion
    curves). Columns keep their first-seen order; ``order`` sorts the rows (e.g. ``list(methods)``).
    """
    cells = format_interval_columns(results.drop(columns=["correct"], errors="ignore"), ["accuracy"], digits=digits)
    wide = cells.pivot(index=index, columns=columns, values="accuracy")
    if isinstance(columns, str):
        wide = wide[list(dict.fromkeys(results[columns]))]  # first-seen order, not alphabetical
        wide.columns.name = None
    if order is not None:
        wide = wide.loc[list(order)]
    return wide


def _pooled_correct(results: pd.DataFrame, method: str, mask) -> np.ndarray:
    rows = results[mask & (results["method"] == method)]
    if rows.empty:
        raise ValueError(f"no result rows for method {method!r} in the selected protocol")
    return np.concatenate(list(rows["correct"]))


def paired_comparisons(results: pd.DataFrame, pairs: Sequence[tuple[str, str]], protocols: dict, *,
                       n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """Does method A recognise more of the *same* probes than method B? One row per protocol and pair.

    Parameters
    ----------
    results : DataFrame with ``method`` and ``correct`` columns (:func:`evaluate_sets`, :func:`occlusion_curve`;
        several may be concatenated)
    pairs : [(A, B), ...]
    protocols : dict name -> boolean row mask of ``results`` (the probes of all selected rows are pooled, e.g.
        ``curves.kind.eq("block") & curves.fraction.ge(0.4)`` pools the 40 % and 60 % blocks)
    n_boot, seed, alpha : the paired bootstrap of the accuracy difference

    Returns
    -------
    DataFrame with ``protocol``, ``A``, ``B``, ``n_probes``, ``accuracy_A`` / ``accuracy_B`` (with 95 % Wilson
    ``_lo`` / ``_hi``), ``difference`` (A - B, with paired-bootstrap ``difference_lo`` / ``difference_hi``),
    McNemar's ``only_A`` / ``only_B`` (probes only one of them gets right) and ``p_mcnemar``, and ``verdict``:
    ``"A better"`` / ``"B better"`` only when McNemar's test rejects at ``alpha``, else ``"no significant difference"``.
    """
    rows = []
    for protocol, mask in protocols.items():
        mask = np.asarray(mask, dtype=bool)
        for a, b in pairs:
            ca, cb = _pooled_correct(results, a, mask), _pooled_correct(results, b, mask)
            n = len(ca)
            lo_a, hi_a = wilson_interval(int(ca.sum()), n, alpha)
            lo_b, hi_b = wilson_interval(int(cb.sum()), n, alpha)
            boot = paired_bootstrap(lambda y, c: float(np.mean(c)), np.ones(n), ca.astype(float), cb.astype(float),
                                    n_boot=n_boot, seed=seed, alpha=alpha)
            test = mcnemar_test(ca, cb)
            verdict = ("no significant difference" if test.p_value >= alpha
                       else f"{a} better" if boot.delta > 0 else f"{b} better")
            rows.append({"protocol": protocol, "A": a, "B": b, "n_probes": n,
                         "accuracy_A": float(ca.mean()), "accuracy_A_lo": lo_a, "accuracy_A_hi": hi_a,
                         "accuracy_B": float(cb.mean()), "accuracy_B_lo": lo_b, "accuracy_B_hi": hi_b,
                         "difference": boot.delta, "difference_lo": boot.lo, "difference_hi": boot.hi,
                         "only_A": test.b, "only_B": test.c, "p_mcnemar": test.p_value, "verdict": verdict})
    return pd.DataFrame(rows)


def weight_auc_table(estimator, features, shown: dict, size) -> tuple[pd.Series, dict]:
    """Code each probe set of ``shown`` (name -> (images, masks)) with a fitted WWCSC/RSC ``estimator``.

    Returns the AUC of ``1 - weight`` against the downsampled true masks (:func:`weight_mask_auc`), one per set, and
    the codes (name -> :class:`~facelab.sparse.ADMMResult`, whose ``weights`` are (pixels, probes)).
    """
    codes = {k: estimator.encode(features.transform(im)) for k, (im, _) in shown.items()}
    auc = pd.Series({k: weight_mask_auc(codes[k].weights.T.cpu(), downsample_masks(m, size))
                     for k, (_, m) in shown.items()}, name="AUC of 1 - weight vs mask")
    return auc, codes


def rho_iterations(fitted_src, probe_features, lam: float, ratios=(0.1, 0.3, 1.0, 3.0, 10.0),
                   max_iter: int = 3000) -> pd.DataFrame:
    """ADMM iterations the Lasso of a fitted :class:`~facelab.sparse.SRC` needs as ``rho / lam`` varies.

    The penalty changes the speed, not the solution. Runs on the dictionary's device.
    """
    D = fitted_src.dictionary_
    Y = unit_rms(torch.as_tensor(probe_features, dtype=D.dtype).T.to(D.device))
    return pd.DataFrame([{"rho / lam": r, "iterations": lasso_admm(D, Y, lam, rho=r * lam, max_iter=max_iter,
                                                                  record=False).n_iter}
                         for r in ratios])


# --------------------------------------------------------------------------------------------------------------
# real photos
# --------------------------------------------------------------------------------------------------------------
def real_photo_sets(block_fraction: float = 0.4, generator: torch.Generator | None = None):
    """Gallery and occluded probes from the book's real photos (dlib-aligned 150 px chips).

    Probes: the two partial-face Obama photos of the ``face_recognition`` test set (real occlusion: the face is cut
    by the image border, so part of the chip is empty) and ``obama2.jpg`` with a random block over
    ``block_fraction`` of it (a synthetic occluder on a real face). Gallery: every other real face, one identity per
    person (``obama.jpg`` and ``obama3.jpg`` for Obama; Biden, the astronaut, Grace Hopper and the people of the
    group photos with one image each). ``32bit.png``, a near copy of ``obama2.jpg``, is left out so the block probe
    has no twin in the gallery.

    Returns
    -------
    gallery, probes : FaceSet
    probe_names : list of str
    """
    from facelab import photos

    real = photos.load_real_faces("dlib-resnet")
    images = torch.from_numpy(real.chips).permute(0, 3, 1, 2).float() / 255.0
    table = real.table
    names = table["name"].to_numpy()
    identity = table["identity"].to_numpy()
    partial = table["partial"].to_numpy().astype(bool)
    block_src = names == "obama2.jpg"
    in_gallery = ~partial & ~block_src & (names != "32bit.png")
    if not partial.any() or not block_src.any():
        raise RuntimeError("the real photo catalogue lost its partial-face or obama2 images; run `make assets`")
    blocked, _ = block_occlude(images[block_src], block_fraction, generator=generator)
    probes = FaceSet(images=torch.cat([images[partial], blocked]),
                     identity=np.concatenate([identity[partial], identity[block_src]]))
    probe_names = [*names[partial], *(f"{n} + {block_fraction:.0%} block" for n in names[block_src])]
    gallery = FaceSet(images=images[in_gallery], identity=identity[in_gallery])
    return gallery, probes, probe_names


def predictions_table(methods: dict, features, gallery: FaceSet, probes: FaceSet, probe_names, *,
                      device=None) -> pd.DataFrame:
    """Each method's predicted identity for each probe (rows: probes; columns: truth and methods)."""
    G, X = features.transform(gallery.images), features.transform(probes.images)
    out = pd.DataFrame({"probe": list(probe_names), "truth": probes.identity})
    for name, est in methods.items():
        out[name] = _fit(est, G, gallery.identity, device).predict(X)
    return out.set_index("probe")


def embedding_predictions(gallery: FaceSet, probes: FaceSet, embedder: str = "dlib-resnet", *,
                          device="cpu") -> np.ndarray:
    """Identity of each probe by 1-NN on a pretrained embedder's features (the real-photo contrast column)."""
    from facelab.models import load_embedder

    net = load_embedder(embedder, device=device)
    with torch.no_grad():
        emb_gallery = net.embed(gallery.images).cpu().numpy()
        emb_probes = net.embed(probes.images).cpu().numpy()
    return NearestNeighbor(device=device).fit(emb_gallery, gallery.identity).predict(emb_probes)


def correct_counts(predictions: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Correct answers per method of a :func:`predictions_table` (one row per method, with the Wilson interval)."""
    correct = predictions.drop(columns="truth").eq(predictions["truth"], axis=0)
    n = len(predictions)
    df = pd.DataFrame({"correct": correct.sum(), "of": n, "accuracy": correct.mean()})
    return _wilson_columns(df, df["correct"], n, alpha)


def published_comparison(results: pd.DataFrame, extra: Sequence[str] = ("WCSC", "WWCSC", "CRC", "SRC+I")
                         ) -> pd.DataFrame:
    """:data:`PUBLISHED_AR` next to our sunglasses / scarf rates (with their Wilson intervals)."""
    ours = results[results["set"].isin(["sunglasses", "scarf"])].rename(columns={"set": "protocol"})
    ours = format_interval_columns(ours[["method", "protocol", "accuracy", "accuracy_lo", "accuracy_hi"]],
                                   ["accuracy"]).rename(columns={"accuracy": "ours_synthetic [95% CI]"})
    compare = PUBLISHED_AR.merge(ours, on=["method", "protocol"])
    return pd.concat([compare, ours[ours["method"].isin(list(extra))]], ignore_index=True)


# --------------------------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------------------------
def plot_occlusion_curves(curves: pd.DataFrame, kinds: Sequence[str] = ("block", "pixels"), ax=None):
    """Recognition rate vs occluded fraction, one panel per kind, one line per method with its Wilson band.

    ``ax``: one Axes per kind (e.g. ``plt.subplots(1, 2)[1]``), or None for a new figure.
    """
    import matplotlib.pyplot as plt

    from facelab.plotting import PALETTE

    if ax is None:
        fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 3.6), sharey=True, squeeze=False)
        axes = list(axes[0])
    else:
        axes = list(np.atleast_1d(ax))
        if len(axes) != len(kinds):
            raise ValueError(f"plot_occlusion_curves needs one Axes per kind ({len(kinds)}), got {len(axes)}")
        fig = axes[0].figure
    for a, kind in zip(axes, kinds):
        df = curves[curves["kind"] == kind]
        for i, (name, g) in enumerate(df.groupby("method", sort=False)):
            colour = PALETTE[i % len(PALETTE)]
            a.plot(g["fraction"], g["accuracy"], "o-", label=name, color=colour)
            a.fill_between(g["fraction"], g["accuracy_lo"], g["accuracy_hi"], color=colour, alpha=0.08, lw=0)
        a.set(title=f"{kind} occlusion", xlabel="occluded fraction", ylabel="recognition rate")
    axes[-1].legend(loc="lower left", fontsize=8)
    return fig


def plot_weight_maps(shown: dict, codes: dict, size, per_set: int = 2, ax=None):
    """Each probe of ``shown`` (name -> (images, masks)) next to its true mask and its WWCSC weight map.

    ``codes``: from :func:`weight_auc_table`. Dark = distrusted. ``ax``: an array of ``len(shown) * per_set * 3``
    Axes, or None for a new figure.
    """
    import matplotlib.pyplot as plt

    n = len(shown) * per_set * 3
    ncols = 6
    if ax is None:
        nrows = int(np.ceil(n / ncols))
        fig, axes = plt.subplots(nrows, ncols, figsize=(1.4 * ncols, 1.4 * nrows * 1.18), squeeze=False)
        axes = list(axes.flat)
    else:
        axes = list(np.ravel(ax))
        if len(axes) < n:
            raise ValueError(f"plot_weight_maps needs {n} Axes, got {len(axes)}")
        fig = axes[0].figure
    k = 0
    for name, (images, masks) in shown.items():
        for j in range(per_set):
            weights = codes[name].weights[:, j].reshape(tuple(size)).cpu()
            for tile, title, cmap in ((images[j].permute(1, 2, 0).cpu(), name, None),
                                      (masks[j, 0].float().cpu(), "true mask", "gray"),
                                      (weights, "WWCSC weights", "gray")):
                axes[k].imshow(tile.squeeze(-1).numpy() if tile.shape[-1] == 1 else tile.numpy(), cmap=cmap,
                               vmin=0, vmax=1)
                axes[k].set_title(title, fontsize=8)
                k += 1
    for a in axes:
        a.axis("off")
    return fig


def plot_convergence(histories: dict, ax=None):
    """Primal and dual residual norms and their tolerances per ADMM iteration, one panel per solver.

    ``histories``: name -> ``ADMMResult.history_frame()``. ``ax``: one Axes per history, or None.
    """
    import matplotlib.pyplot as plt

    from facelab.plotting import PALETTE

    if ax is None:
        fig, axes = plt.subplots(1, len(histories), figsize=(5 * len(histories), 3.4), squeeze=False)
        axes = list(axes[0])
    else:
        axes = list(np.atleast_1d(ax))
        fig = axes[0].figure
    for a, (name, h) in zip(axes, histories.items()):
        for col, c in (("primal", PALETTE[0]), ("dual", PALETTE[1])):
            a.semilogy(h["iteration"], h[col], color=c, label=f"{col} residual")
            a.semilogy(h["iteration"], h[f"eps_{col}"], color=c, ls=":", label=f"{col} tolerance")
        a.set(title=name, xlabel="iteration")
    axes[0].legend()
    return fig
