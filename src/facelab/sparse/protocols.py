"""Occlusion protocols and their evaluation for chapter 03 (recognition under occlusion).

- :func:`block_occlude`: Wright et al. (2009)'s contiguous occlusion, a square of an unrelated texture placed at a
  random position and covering a given fraction of the image;
- :func:`corrupt_pixels`: Wright et al.'s random pixel corruption, a given fraction of the pixels replaced by
  i.i.d. uniform values;
- :func:`render_faces`: gallery and probe faces from the synthetic face world (``facelab.synth.FaceWorld``), with the
  world's own occluders (sunglasses, scarf, ...) and their ground-truth masks;
- :func:`evaluate` / :func:`occlusion_curve`: recognition rates of several classifiers on the same probes;
- :func:`weight_mask_auc`: how well low WWCSC weights find the occluded pixels (AUC against the ground-truth mask).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.base import clone

__all__ = [
    "real_photo_sets",
    "predictions_table",
    "block_occlude",
    "corrupt_pixels",
    "texture",
    "FaceSet",
    "render_faces",
    "evaluate",
    "occlusion_curve",
    "evaluate_sets",
    "sensitivity",
    "weight_mask_auc",
    "downsample_masks",
    "default_methods",
    "PUBLISHED_AR",
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


def _check_images(images):
    t = torch.as_tensor(images)
    if t.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(t.shape)}")
    return t.float()


def texture(size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A (size, size) texture in [0, 1] with face-like spatial frequencies (stands in for Wright's baboon image)."""
    noise = torch.rand(1, 1, max(2, size // 4), max(2, size // 4), generator=generator)
    coarse = torch.nn.functional.interpolate(noise, size=(size, size), mode="bilinear", align_corners=False)
    fine = torch.rand(1, 1, size, size, generator=generator)
    return (0.75 * coarse + 0.25 * fine)[0, 0].clamp(0, 1)


def block_occlude(images, fraction: float, generator: torch.Generator | None = None):
    """Cover a random square of ``fraction`` of each image with an unrelated texture (Wright et al. 2009).

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
    mask = torch.zeros(n, 1, h, w, dtype=torch.bool)
    side_h = min(h, int(round(math.sqrt(f * h * w))))
    side_w = min(w, int(round(f * h * w / max(side_h, 1)))) if side_h else 0
    if side_h == 0 or side_w == 0:
        return x, mask
    for i in range(n):
        top = int(torch.randint(0, h - side_h + 1, (1,), generator=generator))
        left = int(torch.randint(0, w - side_w + 1, (1,), generator=generator))
        tex = texture(max(side_h, side_w), generator)[:side_h, :side_w]
        x[i, :, top:top + side_h, left:left + side_w] = tex
        mask[i, 0, top:top + side_h, left:left + side_w] = True
    return x, mask


def corrupt_pixels(images, fraction: float, generator: torch.Generator | None = None):
    """Replace a random ``fraction`` of the pixels of each image by i.i.d. uniform values in [0, 1] (Wright et al.).

    Returns the corrupted images and the bool mask (N, 1, H, W) of corrupted pixels (the same pixels in all channels).
    """
    x = _check_images(images).clone()
    f = _check_fraction("fraction", fraction)
    n, c, h, w = x.shape
    mask = torch.rand(n, 1, h, w, generator=generator) < f
    noise = torch.rand(n, 1, h, w, generator=generator).expand(n, c, h, w)
    x = torch.where(mask.expand(n, c, h, w), noise, x)
    return x, mask


def downsample_masks(masks, size) -> np.ndarray:
    """Occluded fraction of each cell of the downsampled grid, shape (N, h*w) (matches :class:`Downsample`)."""
    t = torch.as_tensor(masks).float()
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

    A thin wrapper over ``world.sample`` that keeps what recognition needs (images, identity, masks) and the time it
    took. The gallery is rendered with ``occlusion=None``; probes with the world's occluders (``"sunglasses"``,
    ``"scarf"``, ...).
    """
    t0 = time.perf_counter()
    batch = world.sample(n_identities=n_identities, per_identity=per_identity, identity_offset=identity_offset,
                         nuisance=nuisance, occlusion=occlusion, occlusion_fraction=occlusion_fraction,
                         generator=torch.Generator().manual_seed(int(seed)))
    masks = getattr(batch, "masks", None)
    return FaceSet(images=batch.images.float().cpu(), identity=np.asarray(batch.labels["identity"]),
                   masks=None if masks is None else masks.cpu(), seconds=time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------------------------
def default_methods(lam: float = 1e-3, device: str = "cpu") -> dict:
    """The classifiers compared in the chapter, with the parameters used there."""
    from facelab.sparse.estimators import CRC, RSC, SRC, WCSC, WWCSC, NearestNeighbor

    return {
        "NN": NearestNeighbor(device=device),
        "CRC": CRC(lam=lam, device=device),
        "SRC": SRC(lam=lam, device=device),
        "SRC+I": SRC(lam=lam, extended=True, device=device),
        "RSC": RSC(lam=lam, device=device),
        "WCSC": WCSC(lam=lam, device=device),
        "WWCSC": WWCSC(lam=lam, device=device),
    }


def evaluate(methods: dict, gallery_features, gallery_labels, probe_features, probe_labels,
             fitted: bool = False) -> pd.DataFrame:
    """Recognition rate and time per probe of each method on the same gallery and probes.

    Returns a DataFrame with columns ``method``, ``accuracy``, ``ms_per_probe``, ``n_probes``.
    """
    rows = []
    for name, est in methods.items():
        if not fitted:
            est = clone(est).fit(gallery_features, gallery_labels)
            methods[name] = est
        t0 = time.perf_counter()
        pred = est.predict(probe_features)
        dt = time.perf_counter() - t0
        rows.append({"method": name, "accuracy": float(np.mean(pred == np.asarray(probe_labels))),
                     "ms_per_probe": 1e3 * dt / len(probe_labels), "n_probes": len(probe_labels)})
    return pd.DataFrame(rows)


def evaluate_sets(methods: dict, features, gallery: FaceSet, sets: dict) -> pd.DataFrame:
    """Recognition rate of each method on several probe sets, coded in one batch per method.

    Batching all probe sets together costs about as much as one set: an ADMM iteration on a small gallery is
    dominated by fixed per-iteration overhead, not by the number of probes.

    Parameters
    ----------
    methods : dict name -> classifier (unfitted; cloned and fitted on the gallery)
    features : fitted transformer (e.g. :class:`~facelab.sparse.Downsample`)
    gallery : FaceSet
    sets : dict name -> (images, identity)

    Returns
    -------
    DataFrame with ``set``, ``method``, ``accuracy``, ``n_probes``, ``ms_per_probe``.
    """
    G = features.transform(gallery.images)
    names = list(sets)
    feats = [features.transform(sets[k][0]) for k in names]
    labels = [np.asarray(sets[k][1]) for k in names]
    X = np.concatenate(feats)
    bounds = np.cumsum([0] + [len(f) for f in feats])
    rows = []
    for mname, est in methods.items():
        fitted = clone(est).fit(G, gallery.identity)
        t0 = time.perf_counter()
        pred = fitted.predict(X)
        ms = 1e3 * (time.perf_counter() - t0) / len(X)
        for i, k in enumerate(names):
            p = pred[bounds[i]:bounds[i + 1]]
            rows.append({"set": k, "method": mname, "accuracy": float(np.mean(p == labels[i])),
                         "n_probes": len(p), "ms_per_probe": ms})
    return pd.DataFrame(rows)


def occlusion_curve(methods: dict, features, gallery: FaceSet, probes: FaceSet, kind: str, fractions,
                    seed: int = 0) -> pd.DataFrame:
    """Recognition rate of each method vs occluded fraction (``kind="block"`` or ``"pixels"``).

    The probes are occluded at every fraction (a fresh random block or pixel set per probe and fraction) and all
    fractions are coded together (:func:`evaluate_sets`). Returns a long DataFrame (``kind``, ``fraction``,
    ``method``, ``accuracy``, ...).
    """
    if kind not in ("block", "pixels"):
        raise ValueError(f"kind must be 'block' or 'pixels', got {kind!r}")
    occlude = block_occlude if kind == "block" else corrupt_pixels
    sets = {}
    for i, f in enumerate(fractions):
        occluded, _ = occlude(probes.images, f, generator=torch.Generator().manual_seed(seed + i))
        sets[float(f)] = (occluded, probes.identity)
    df = evaluate_sets(methods, features, gallery, sets).rename(columns={"set": "fraction"})
    df.insert(0, "kind", kind)
    return df


def sensitivity(estimator, param: str, values, features, gallery: FaceSet, probes: FaceSet, kind: str = "block",
                fraction: float = 0.4, seed: int = 0) -> pd.DataFrame:
    """Recognition rate of ``estimator`` at one occlusion level as one parameter varies (others fixed)."""
    occlude = block_occlude if kind == "block" else corrupt_pixels
    occluded, _ = occlude(probes.images, fraction, generator=torch.Generator().manual_seed(seed))
    G, X = features.transform(gallery.images), features.transform(occluded)
    rows = []
    for v in values:
        est = clone(estimator).set_params(**{param: v}).fit(G, gallery.identity)
        rows.append({"parameter": param, "value": v, "accuracy": float(est.score(X, probes.identity))})
    return pd.DataFrame(rows)


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


def predictions_table(methods: dict, features, gallery: FaceSet, probes: FaceSet, probe_names) -> pd.DataFrame:
    """Each method's predicted identity for each probe (rows: probes; columns: truth and methods)."""
    G, X = features.transform(gallery.images), features.transform(probes.images)
    out = pd.DataFrame({"probe": list(probe_names), "truth": probes.identity})
    for name, est in methods.items():
        out[name] = clone(est).fit(G, gallery.identity).predict(X)
    return out.set_index("probe")
