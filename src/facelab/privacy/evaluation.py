"""The evaluation protocol of the privacy chapters (DiffAIM, MASQUE): face models as victims, thresholds at fixed
false-accept rates, white-box and leave-one-out black-box success rates, image quality and time per image.

Conventions
-----------
* A :class:`FaceModel` wraps an embedder with its alignment: it takes *whole images* (N, 3, H, W) in [0, 1] plus
  their 68 landmarks (pixels) and aligns them differentiably (:func:`facelab.align.align_batch_torch`) into the
  model's template (``dlib-150`` for dlib's ResNet, ``arcface-112`` for SFace; the project's synthetic models take the
  64 px frame as rendered). Gradients flow from the embedding to the pixels.
* Scores are similarities (higher = same person): cosine for cosine models, minus the L2 distance for dlib
  (the metrics module's convention, :mod:`facelab.metrics.verification`).
* Thresholds are *measured*, not copied: for each victim, the score at FAR 0.1 / 0.01 / 0.001 on all genuine and
  impostor pairs of a clean labelled set (:func:`victim_thresholds`, via ``threshold_at_far``).
* Impersonation succeeds at a FAR level when score(protected image, target image) >= that victim's threshold
  (the target image is the one the attack was given, as in DiffAIM's protocol). Dodging succeeds when
  score(protected, source) < threshold.
* Leave-one-out black box: the attack against victim v uses every *other* differentiable model as surrogate; the
  white-box setting includes v in the ensemble.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

__all__ = ["FaceModel", "load_face_models", "FARS", "victim_thresholds", "pair_scores_all", "success_rates",
           "success_table", "ssim", "psnr", "quality_table", "leave_one_out", "Timer", "check_faces",
           "NotAFaceError", "world_template", "align_to_world", "attack_pairs", "protection_data", "real_pair",
           "run_protocol"]

FARS = (0.1, 0.01, 0.001)


class NotAFaceError(ValueError):
    """An input image does not look like a face to the reference recogniser."""


# --------------------------------------------------------------------------------------------- models
# FaceModel and load_face_models live in facelab.models.face_model (re-exported here for old imports).
from facelab.models.face_model import FaceModel, load_face_models  # noqa: E402


# --------------------------------------------------------------------------------------------- thresholds
@torch.no_grad()
def pair_scores_all(model: FaceModel, images, landmarks, identities) -> tuple[np.ndarray, np.ndarray]:
    """Scores and genuine labels of all pairs i < j of a labelled set."""
    e = torch.cat([model.embed(images[i:i + 64], landmarks[i:i + 64]) for i in range(0, len(images), 64)])
    ids = np.asarray(identities)
    iu = np.triu_indices(len(ids), 1)
    if model.metric == "euclidean":
        s = -torch.cdist(e, e)
    else:
        en = F.normalize(e, dim=1)
        s = en @ en.T
    return s.cpu().numpy()[iu], (ids[iu[0]] == ids[iu[1]])


def victim_thresholds(models: Mapping[str, FaceModel], images, landmarks, identities,
                      fars: Sequence[float] = FARS) -> pd.DataFrame:
    """Per victim: the score threshold at each FAR, measured on the genuine/impostor pairs of a clean labelled set.

    Returns a DataFrame indexed by victim with columns ``FAR=0.1`` ..., plus AUC, EER and the pair counts.
    A FAR below 1 / (number of impostor pairs) cannot be measured: that raises ``ValueError``.
    """
    from facelab.metrics.verification import eer, roc_auc, threshold_at_far

    rows = {}
    for name, m in models.items():
        s, lab = pair_scores_all(m, images, landmarks, identities)
        n_imp = int((~lab).sum())
        if n_imp * min(fars) < 1:
            raise ValueError(f"FAR {min(fars)} needs at least {int(np.ceil(1 / min(fars)))} impostor pairs; "
                             f"the set gives {n_imp}: use more identities")
        thr = np.atleast_1d(threshold_at_far(lab, s, list(fars)))
        rows[name] = {**{f"FAR={f:g}": float(t) for f, t in zip(fars, thr)}, "AUC": roc_auc(lab, s),
                      "EER": eer(lab, s)[0], "n_genuine": int(lab.sum()), "n_impostor": n_imp}
    return pd.DataFrame.from_dict(rows, orient="index")


# --------------------------------------------------------------------------------------------- success
@torch.no_grad()
def success_rates(model: FaceModel, protected, landmarks, targets, target_landmarks, thresholds: Mapping,
                  fars: Sequence[float] = FARS) -> dict:
    """Impersonation success rate of ``protected`` vs ``targets`` for one victim at each FAR, plus mean score."""
    a = model.embed(protected, landmarks)
    b = model.embed(targets, target_landmarks)
    s = model.score(a, b).cpu().numpy()
    out = {f"FAR={f:g}": float((s >= thresholds[f"FAR={f:g}"]).mean()) for f in fars}
    out["mean score"] = float(s.mean())
    return out


def success_table(runs: Mapping, models: Mapping[str, FaceModel], thresholds: pd.DataFrame, landmarks,
                  targets, target_landmarks, fars: Sequence[float] = FARS) -> pd.DataFrame:
    """Impersonation success for many runs: ``runs[(method, setting, victim)] = protected images``.

    Returns one row per (method, setting, victim) with the success rate at each FAR and the mean score.
    """
    rows = []
    for (method, setting, victim), images in runs.items():
        r = success_rates(models[victim], images, landmarks, targets, target_landmarks,
                          thresholds.loc[victim].to_dict(), fars)
        rows.append({"method": method, "setting": setting, "victim": victim, **r})
    return pd.DataFrame(rows)


def strength_sweep(attacks: Mapping[str, Callable[[float], torch.Tensor]], multipliers: Sequence[float], *,
                   victim: str, models: Mapping[str, FaceModel], thresholds: pd.DataFrame, originals, landmarks,
                   targets, target_landmarks, fars: Sequence[float] = FARS,
                   done: Mapping[tuple, torch.Tensor] | None = None) -> pd.DataFrame:
    """Quality against success as the attack strength varies: the trade-off curve of the privacy chapters.

    ``attacks[name](multiplier)`` returns protected images made with the method's strength (its clamp or budget)
    scaled by ``multiplier``; ``done[(name, multiplier)]`` supplies runs that exist already (not recomputed).
    Returns one row per (method, multiplier): SSIM and PSNR to ``originals`` and the impersonation success against
    ``victim`` at each FAR.
    """
    done = dict(done or {})
    rows = []
    for name, attack in attacks.items():
        for mult in multipliers:
            x = done[(name, mult)] if (name, mult) in done else attack(mult)
            q = quality_table({"x": x}, originals).loc["x"]
            r = success_rates(models[victim], x, landmarks, targets, target_landmarks,
                              thresholds.loc[victim].to_dict(), fars)
            rows.append({"method": name, "multiplier": mult, "SSIM": float(q["SSIM"]), "PSNR (dB)": float(q["PSNR (dB)"]),
                         **{k: v for k, v in r.items() if k.startswith("FAR")}})
    return pd.DataFrame(rows)


def leave_one_out(models: Mapping[str, FaceModel], victim: str) -> list[str]:
    """The surrogate ensemble for a black-box attack on ``victim``: every other differentiable model."""
    if victim not in models:
        raise ValueError(f"unknown victim {victim!r}; models are {list(models)}")
    return [n for n, m in models.items() if n != victim and m.differentiable]


# --------------------------------------------------------------------------------------------- quality
def _gauss_window(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=torch.float32) - size // 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).expand(3, 1, size, size).contiguous()


def ssim(a: torch.Tensor, b: torch.Tensor, *, window: int = 11) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004) of RGB images in [0, 1], Gaussian window 11 / sigma 1.5, mean over
    channels; differentiable (used as the perceptual penalty in place of LPIPS). Returns (N,)."""
    w = _gauss_window(window, 1.5, a.device).to(a.dtype)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    pad = window // 2
    mu_a = F.conv2d(a, w, padding=pad, groups=3)
    mu_b = F.conv2d(b, w, padding=pad, groups=3)
    saa = F.conv2d(a * a, w, padding=pad, groups=3) - mu_a ** 2
    sbb = F.conv2d(b * b, w, padding=pad, groups=3) - mu_b ** 2
    sab = F.conv2d(a * b, w, padding=pad, groups=3) - mu_a * mu_b
    m = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
    return m[..., pad:-pad, pad:-pad].flatten(1).mean(1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of images in [0, 1]."""
    mse = ((a.float() - b.float()) ** 2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-12))


@torch.no_grad()
def quality_table(runs: Mapping[str, torch.Tensor], originals: torch.Tensor) -> pd.DataFrame:
    """Mean PSNR, SSIM and L-infinity change of each run's images against the originals."""
    rows = []
    for name, x in runs.items():
        rows.append({"method": name, "PSNR (dB)": float(psnr(x, originals).mean()),
                     "SSIM": float(ssim(x, originals).mean()),
                     "Linf (/255)": float((x - originals).abs().flatten(1).amax(1).mean() * 255)})
    return pd.DataFrame(rows).set_index("method")


class Timer:
    """Context manager measuring wall seconds (``.seconds``); ``per(n)`` gives seconds per item."""

    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0

    def per(self, n: int) -> float:
        return self.seconds / max(1, n)


# --------------------------------------------------------------------------------------------- inputs
def check_faces(images: torch.Tensor, landmarks: torch.Tensor, reference: FaceModel | None = None,
                reference_embeddings: torch.Tensor | None = None, min_similarity: float | None = None) -> None:
    """Reject inputs that are not faces.

    Checks that ``images`` is a float (N, 3, H, W) batch in [0, 1], that ``landmarks`` is (N, 68, 2) inside the
    image with a plausible face layout (eyes above the nose tip above the mouth, inter-ocular distance at least
    8 % of the width), and, when a ``reference`` recogniser and embeddings of known faces are given, that every
    image's best cosine similarity to those faces reaches ``min_similarity``.

    Raises
    ------
    NotAFaceError
        Saying which images failed and why.
    """
    if not torch.is_tensor(images) or images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise ValueError(f"expected float images (N, 3, H, W) in [0, 1], got {type(images).__name__} "
                         f"{tuple(getattr(images, 'shape', ()))}")
    lm = torch.as_tensor(landmarks, dtype=torch.float32)
    if lm.dim() != 3 or lm.shape[0] != images.shape[0] or lm.shape[1:] != (68, 2):
        raise NotAFaceError(f"expected 68 landmarks per image, shape ({images.shape[0]}, 68, 2); got "
                            f"{tuple(lm.shape)} (detect the face first: facelab.detect)")
    H, W = images.shape[-2:]
    bad = []
    for i in range(lm.shape[0]):
        p = lm[i]
        le, re, nose, mouth = p[36:42].mean(0), p[42:48].mean(0), p[30], p[48:68].mean(0)
        why = None
        if not torch.isfinite(p).all() or (p[:, 0] < -0.1 * W).any() or (p[:, 0] > 1.1 * W).any() \
                or (p[:, 1] < -0.1 * H).any() or (p[:, 1] > 1.1 * H).any():
            why = "landmarks outside the image"
        elif (re - le).norm() < 0.08 * W:
            why = "eyes closer than 8% of the image width"
        elif not (max(le[1], re[1]) < nose[1] < mouth[1]):
            why = "eyes, nose and mouth not in face order"
        if why:
            bad.append(f"image {i}: {why}")
    if bad:
        raise NotAFaceError("not a face: " + "; ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""))
    if reference is not None and reference_embeddings is not None and min_similarity is not None:
        with torch.no_grad():
            e = F.normalize(reference.embed(images, lm), dim=1)
            best = (e @ F.normalize(reference_embeddings.to(e.device), dim=1).T).amax(1)
        low = torch.nonzero(best < min_similarity).flatten().tolist()
        if low:
            raise NotAFaceError(f"not a face for {reference.name}: images {low} have best similarity "
                                f"{[round(float(best[i]), 3) for i in low]} to known faces, below {min_similarity}")


def world_template(size: int = 64) -> torch.Tensor:
    """Mean 68 landmarks (pixels) of frontal synthetic-world faces rendered at ``size`` px."""
    from facelab.synth import FaceWorld

    b = FaceWorld(seed=0, size=size).sample(n_identities=16, identity_offset=900000, nuisance="none")
    return b.landmarks.mean(0)


def align_to_world(image: np.ndarray, landmarks68: np.ndarray, size: int = 64,
                   template: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop a real photo so its face sits where the synthetic world puts faces (similarity fit of the 68 points).

    Returns the (3, size, size) image in [0, 1] and its (68, 2) landmarks in chip pixels.
    """
    import cv2

    from facelab.align import similarity_transform

    tmpl = (world_template(size) if template is None else template).numpy().astype(np.float64)
    lm = np.asarray(landmarks68, dtype=np.float64)
    M = similarity_transform(lm, tmpl)  # image -> chip
    img = np.asarray(image)
    scale = np.sqrt(abs(np.linalg.det(M[:, :2])))
    if scale < 0.5:  # shrink with an anti-alias pre-blur
        sigma = 0.5 / scale
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    chip = cv2.warpAffine(img, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    lm_chip = lm @ M[:, :2].T + M[:, 2]
    x = torch.from_numpy(chip).permute(2, 0, 1).float() / 255.0
    return x, torch.from_numpy(lm_chip).float()


def attack_pairs(identities: Sequence, *, seed: int = 0) -> np.ndarray:
    """Index pairs (source, target) where each source gets a target image of a different identity (a random
    derangement over identities; deterministic for a seed)."""
    ids = np.asarray(identities)
    rng = np.random.default_rng(seed)
    n = len(ids)
    for _ in range(1000):
        perm = rng.permutation(n)
        if np.all(ids[perm] != ids):
            return np.stack([np.arange(n), perm], 1)
    raise ValueError("cannot pair every source with a different identity: need at least two identities")


# --------------------------------------------------------------------------------------------- chapter data
def protection_data(size: int = 64, n_faces: int = 16, n_threshold_identities: int = 40, per_identity: int = 3,
                    nuisance: str = "mild", seed: int = 0) -> dict:
    """Synthetic faces for a protection experiment, from identities never used in training (>= 100000).

    Returns a dict with ``sources``/``targets`` (N, 3, size, size) and their ``*_landmarks`` (N, 68, 2) and
    ``*_ids`` (N faces of N different identities, targets of N other identities), and a labelled set
    ``threshold_images``/``threshold_landmarks``/``threshold_ids`` (``n_threshold_identities x per_identity``
    images of yet other identities) for measuring the victims' thresholds.
    """
    from facelab.synth import FaceWorld

    world = FaceWorld(seed=0, size=size)
    g = torch.Generator().manual_seed(seed)
    src = world.sample(n_identities=n_faces, identity_offset=100000, nuisance=nuisance, expression="random",
                       generator=g)
    tgt = world.sample(n_identities=n_faces, identity_offset=100500, nuisance=nuisance, expression="random",
                       generator=g)
    thr = world.sample(n_identities=n_threshold_identities, per_identity=per_identity, identity_offset=101000,
                       nuisance=nuisance, expression="random", generator=g)
    return {"sources": src.images, "source_landmarks": src.landmarks, "source_ids": src.labels["identity"].to_numpy(),
            "targets": tgt.images, "target_landmarks": tgt.landmarks, "target_ids": tgt.labels["identity"].to_numpy(),
            "threshold_images": thr.images, "threshold_landmarks": thr.landmarks,
            "threshold_ids": thr.labels["identity"].to_numpy()}


def real_photos_of(identity: str, size: int = 64, *, limit: int | None = None) -> dict:
    """Every full real photo of ``identity`` in ``facelab.photos`` (partial faces and near copies left out),
    cropped like the synthetic world's faces (:func:`align_to_world`).

    Returns ``images`` (K, 3, size, size), ``landmarks`` (K, 68, 2) and ``names`` (file names); ValueError naming
    the people available when there is none.
    """
    from facelab.io import load_image
    from facelab.photos import load_real_faces

    faces = load_real_faces("dlib-resnet", include_groups=False)
    tab = faces.table.reset_index(drop=True)
    keep = (tab["identity"] == identity) & (~tab["partial"].astype(bool))
    if "note" in tab:
        keep &= ~tab["note"].astype(str).str.contains("near copy")
    rows = tab.index[keep].tolist()[:limit]
    if not rows:
        raise ValueError(f"no full real photo of {identity!r}; people available: {sorted(set(tab['identity']))}")
    tmpl = world_template(size)
    imgs, lms, names = [], [], []
    for i in rows:
        image = load_image(tab.loc[i, "path"])
        lm68 = faces.faces[i].landmarks68
        if lm68 is None:
            from facelab.detect import shape_predictor_landmarks

            lm68 = shape_predictor_landmarks(image, faces.faces[i], 68)
        x, lm = align_to_world(image, lm68, size, tmpl)
        imgs.append(x)
        lms.append(lm)
        names.append(str(tab.loc[i, "name"]))
    return {"images": torch.stack(imgs), "landmarks": torch.stack(lms), "names": names}


def real_pair(source: str = "Barack Obama", target: str = "Joe Biden", size: int = 64) -> dict:
    """One real photo of ``source`` and one of ``target`` (``facelab.photos``), cropped like the synthetic world's
    faces (:func:`align_to_world`). Returns ``images`` (2, 3, size, size), ``landmarks`` (2, 68, 2), ``names``."""
    a, b = real_photos_of(source, size, limit=1), real_photos_of(target, size, limit=1)
    return {"images": torch.cat([a["images"], b["images"]]), "landmarks": torch.cat([a["landmarks"], b["landmarks"]]),
            "names": [f"{source} ({a['names'][0]})", f"{target} ({b['names'][0]})"]}


def run_protocol(protect: Callable, models: Mapping[str, FaceModel], victims: Sequence[str] | None = None
                 ) -> tuple[dict, pd.DataFrame]:
    """Run an attack in the white-box setting (one run with every differentiable model as surrogate) and the
    leave-one-out black-box setting (one run per victim, without it).

    ``protect(surrogates: list[FaceModel]) -> ProtectionResult``. Returns ``runs[(setting, victim)] = images`` and
    a timing table (one row per run: setting, held-out victim, surrogates, seconds per image).
    """
    victims = list(models) if victims is None else list(victims)
    runs, rows = {}, []
    white = protect([m for m in models.values() if m.differentiable])
    rows.append({"setting": "white-box", "held out": "-", "surrogates": ", ".join(white.surrogates),
                 "s/image": white.seconds_per_image})
    for v in victims:
        runs[("white-box", v)] = white.images
        r = protect([models[n] for n in leave_one_out(models, v)])
        runs[("black-box", v)] = r.images
        rows.append({"setting": "black-box", "held out": v, "surrogates": ", ".join(r.surrogates),
                     "s/image": r.seconds_per_image})
    return runs, pd.DataFrame(rows)
