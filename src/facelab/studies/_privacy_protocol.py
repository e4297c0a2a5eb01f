"""The protocol shared by the two privacy chapters (DiffAIM, chapter 05; MASQUE, chapter 06).

Conventions
-----------
* Victims and surrogates are :class:`facelab.models.FaceModel` objects: whole images plus 68 landmarks in,
  embeddings out; ``score`` is a similarity (higher = same person, :mod:`facelab.core.scores`): cosine for cosine
  models, minus the L2 distance for dlib.
* Thresholds are *measured*, not copied: for each victim, the similarity at FAR 0.1 / 0.01 / 0.001 on all genuine and
  impostor pairs of a clean labelled set (:func:`victim_thresholds`), in the same unit as the scores. A pair is
  accepted ("same person") when its similarity reaches the threshold.
* Leave-one-out black box: the attack against victim v uses every *other* differentiable model as surrogate
  (:func:`leave_one_out`); the white-box setting includes v in the ensemble.
* Success rates come with 95 % Wilson intervals (:func:`rate_columns`), and two methods are compared on the same faces
  with McNemar's paired test (:func:`paired_tests`); with 16 faces per victim most differences are not significant.

Used by :mod:`facelab.studies.privacy_diffaim` and :mod:`facelab.studies.privacy_masque`.
"""

from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

__all__ = ["FARS", "far_key", "pair_scores_all", "victim_thresholds", "leave_one_out", "quality_table", "Timer",
           "verification_outcomes", "runs_outcomes", "rate_columns", "rates_of", "outcome_table", "pooled_summary", "paired_tests", "world_template", "align_to_world",
           "real_photos_of"]

FARS = (0.1, 0.01, 0.001)


def far_key(far: float) -> str:
    """The column name of a FAR level: ``0.01 -> "FAR=0.01"``."""
    return f"FAR={far:g}"


# --------------------------------------------------------------------------------------------- thresholds
@torch.no_grad()
def pair_scores_all(model, images, landmarks, identities) -> tuple[np.ndarray, np.ndarray]:
    """Similarities and genuine labels of all pairs i < j of a labelled set (``model``: a FaceModel)."""
    from facelab.core.scores import similarity_matrix

    e = torch.cat([model.embed(images[i:i + 64], landmarks[i:i + 64]) for i in range(0, len(images), 64)])
    ids = np.asarray(identities)
    iu = np.triu_indices(len(ids), 1)
    s = similarity_matrix(e, metric=model.metric)
    return s.cpu().numpy()[iu], (ids[iu[0]] == ids[iu[1]])


def victim_thresholds(models: Mapping, images, landmarks, identities, fars: Sequence[float] = FARS) -> pd.DataFrame:
    """Per victim: the similarity threshold at each FAR, measured on the genuine/impostor pairs of a clean labelled
    set.

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
        rows[name] = {**{far_key(f): float(t) for f, t in zip(fars, thr)}, "AUC": roc_auc(lab, s),
                      "EER": eer(lab, s)[0], "n_genuine": int(lab.sum()), "n_impostor": n_imp}
    return pd.DataFrame.from_dict(rows, orient="index")


def leave_one_out(models: Mapping, victim: str) -> list[str]:
    """The surrogate ensemble for a black-box attack on ``victim``: every other differentiable model."""
    if victim not in models:
        raise ValueError(f"unknown victim {victim!r}; models are {list(models)}")
    return [n for n, m in models.items() if n != victim and m.differentiable]


# --------------------------------------------------------------------------------------------- quality
@torch.no_grad()
def quality_table(runs: Mapping[str, torch.Tensor], originals: torch.Tensor) -> pd.DataFrame:
    """Mean PSNR, SSIM and L-infinity change of each run's images against the originals."""
    from facelab.core.images import psnr, ssim

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


# --------------------------------------------------------------------------------------------- rates and tests
def rate_columns(outcomes: Mapping[str, np.ndarray], *, alpha: float = 0.05) -> dict:
    """Success rate and Wilson interval of each FAR's boolean outcomes.

    ``outcomes["FAR=0.01"]`` is a boolean array (one entry per attacked face or pair); returns
    ``{"FAR=0.01": rate, "FAR=0.01 lo": ..., "FAR=0.01 hi": ..., ..., "n": trials}`` in the order given.
    """
    from facelab.metrics import wilson_interval

    out, n = {}, None
    for key, ok in outcomes.items():
        ok = np.asarray(ok, dtype=bool)
        n = ok.size
        lo, hi = wilson_interval(int(ok.sum()), n, alpha=alpha)
        out[key] = float(ok.mean()) if n else float("nan")
        out[f"{key} lo"], out[f"{key} hi"] = float(lo), float(hi)
    out["n"] = int(n or 0)
    return out


def outcome_table(outcomes: Mapping[tuple, Mapping], keys: Sequence[str], *, alpha: float = 0.05) -> pd.DataFrame:
    """One row per run of ``outcomes[(k1, k2, ...)] = {"FAR=0.1": bool array, ..., "score": float array}``: the
    columns ``keys``, success rate with Wilson interval at each FAR (:func:`rate_columns`), ``n`` and the mean
    score."""
    return pd.DataFrame([{**dict(zip(keys, key)), **rates_of(o, alpha=alpha)} for key, o in outcomes.items()])


@torch.no_grad()
def verification_outcomes(model, images, landmarks, references, reference_landmarks, thresholds: Mapping,
                          fars: Sequence[float] = FARS, *, owner=None, accept: bool = True,
                          reference_embeddings: torch.Tensor | None = None) -> dict:
    """One victim's decisions on (image, reference) pairs at each FAR threshold.

    Pairs image ``owner[g]`` with reference ``g`` (default: image i with reference i). ``accept=True`` counts a pair
    as a success when the victim accepts it (similarity >= threshold: impersonation of the reference's identity),
    ``accept=False`` when it rejects it (similarity < threshold: dodging one's own photo). Returns
    ``{"FAR=0.1": bool array, ..., "score": similarities}`` (one entry per pair); ``reference_embeddings`` (the
    victim's embeddings of ``references``) saves embedding them again.
    """
    a = model.embed(images, landmarks)
    b = model.embed(references, reference_landmarks) if reference_embeddings is None else reference_embeddings
    if owner is not None:
        a = a[torch.as_tensor(owner, device=a.device)]
    s = model.score(a, b).cpu().numpy()
    return {**{far_key(f): (s >= thresholds[far_key(f)]) if accept else (s < thresholds[far_key(f)]) for f in fars},
            "score": s}


def runs_outcomes(runs: Mapping[tuple, torch.Tensor], models: Mapping, thresholds: pd.DataFrame, landmarks,
                  references, reference_landmarks, fars: Sequence[float] = FARS, **kwargs) -> dict:
    """:func:`verification_outcomes` of many runs, ``runs[(*key, victim)] = images`` (the victim last), each scored
    by its victim at its thresholds (one row of ``thresholds`` per victim); the references are embedded once per
    victim. ``kwargs``: ``owner``, ``accept``."""
    out, emb = {}, {}
    for key, images in runs.items():
        victim = key[-1]
        if victim not in emb:
            with torch.no_grad():
                emb[victim] = models[victim].embed(references, reference_landmarks)
        out[key] = verification_outcomes(models[victim], images, landmarks, references, reference_landmarks,
                                         thresholds.loc[victim].to_dict(), fars, reference_embeddings=emb[victim],
                                         **kwargs)
    return out


def rates_of(outcomes: Mapping, *, alpha: float = 0.05) -> dict:
    """:func:`rate_columns` of one run's outcomes plus its ``mean score``."""
    return {**rate_columns({k: v for k, v in outcomes.items() if k.startswith("FAR=")}, alpha=alpha),
            "mean score": float(np.mean(outcomes["score"]))}


def pooled_summary(table: pd.DataFrame, by: Sequence[str], fars: Sequence[float] = FARS, *,
                   alpha: float = 0.05) -> pd.DataFrame:
    """Success per ``by`` group, pooled over the victims of each group: rate = successes / trials (the mean of the
    victims' rates, since every victim scores the same number of trials) with a Wilson interval.

    The victims score the *same* protected images, so their decisions are not independent trials: the pooled
    interval is narrower than the evidence warrants; the per-victim rows of ``table`` are the conservative ones.
    """
    from facelab.metrics import wilson_interval

    rows = []
    for key, g in table.groupby(list(by), sort=False):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        n = int(g["n"].sum())
        for f in fars:
            c = far_key(f)
            k = int(round(float((g[c] * g["n"]).sum())))
            lo, hi = wilson_interval(k, n, alpha=alpha)
            row.update({c: k / n if n else float("nan"), f"{c} lo": float(lo), f"{c} hi": float(hi)})
        row.update({"victims": len(g), "n": n})
        rows.append(row)
    return pd.DataFrame(rows).set_index(list(by))


def paired_tests(outcomes: Mapping[tuple, Mapping], comparisons: Sequence[tuple], far: float = 0.01, *,
                 alpha: float = 0.05) -> pd.DataFrame:
    """McNemar's paired test for each ``(run_a, run_b)`` in ``comparisons`` (keys of ``outcomes``, scored on the
    same faces or pairs by the same victim) at one FAR.

    Returns one row per comparison: both rates, the discordant counts (``a only``: trials only A wins, ``b only``),
    the p-value and ``verdict``: ``"<method> higher"`` (the first element of the winning run's key) when
    p < ``alpha``, else ``"no difference shown"``.
    """
    from facelab.metrics import mcnemar_test

    key, rows = far_key(far), []
    for a, b in comparisons:
        oa, ob = np.asarray(outcomes[a][key], bool), np.asarray(outcomes[b][key], bool)
        if oa.shape != ob.shape:
            raise ValueError(f"runs {a} and {b} were scored on different trials ({oa.size} vs {ob.size}); "
                             "a paired test needs the same faces")
        p = _p_value(mcnemar_test(oa, ob))
        sig = bool(p < alpha)
        verdict = ("no difference shown" if not sig else f"{(a if oa.mean() > ob.mean() else b)[0]} higher")
        rows.append({"A": " / ".join(map(str, a)), "B": " / ".join(map(str, b)), "rate A": float(oa.mean()),
                     "rate B": float(ob.mean()), "A only": int((oa & ~ob).sum()), "B only": int((ob & ~oa).sum()),
                     "n": int(oa.size), "p (McNemar)": p, "verdict": verdict})
    return pd.DataFrame(rows)


def _p_value(result) -> float:
    for name in ("pvalue", "p_value", "p"):
        if hasattr(result, name):
            return float(getattr(result, name))
        if isinstance(result, Mapping) and name in result:
            return float(result[name])
    if isinstance(result, tuple):
        return float(result[-1])
    return float(result)


# --------------------------------------------------------------------------------------------- real photos
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
