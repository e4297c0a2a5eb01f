"""Facial action units estimated from 68 landmarks by a ridge regressor, and their words for a prompt.

Features: the landmarks are aligned to the synthetic world's mean shape by a similarity (Umeyama, on the *visible*
points only), landmarks under an occluder are replaced by the mean shape's point (they carry no evidence), and the
aligned offsets from the mean shape (136 numbers) go into a ridge regression to the 17 AU intensities of
:data:`facelab.synth.AU_NAMES`. It is trained on identities ``0 .. n_identities - 1`` of its own world seed, disjoint
from the scene identities (:data:`facelab.prompting.scenes.SCENE_IDENTITY_OFFSET` and up), with random emotion
prototypes and single AUs at random intensities, mild head pose, 1 px landmark noise (a detector's error) and random
loss of landmark groups. The checkpoint ``data/models/prompting_au_regressor`` (a few kB) is loaded or trained
through :func:`facelab.checkpoints.load_or_train` (``python -m facelab.prompting.aus`` retrains it).

:func:`au_phrases` turns estimates into the text of a prompt: AUs above 0.1, strongest first (at most four), with
a plain-language gloss of what the AU does to the face and a word for the intensity (slight / moderate / strong, on
the regressor's shrunken scale); AUs whose region is mostly occluded are reported as not visible.
"""

from __future__ import annotations

import numpy as np
import torch

from facelab import checkpoints
from facelab.core.geometry import umeyama

__all__ = ["AU_REGIONS", "landmark_features", "train_au_regressor", "load_au_regressor", "AURegressor",
           "au_phrases", "hidden_regions", "SETTINGS"]

CHECKPOINT = "prompting_au_regressor"
RESTORE = "python -m facelab.prompting.aus"
SETTINGS = {"world_seed": 7, "n_identities": 400, "per_identity": 6, "ridge": 1.0, "noise_px": 1.0, "version": 1}

#: Landmark indices each AU is read from (iBUG 68): brows 17-26, eyes 36-47, nose 27-35, mouth/jaw 48-67 and 0-16.
_BROW, _EYE = list(range(17, 27)), list(range(36, 48))
_NOSE, _MOUTH = list(range(27, 36)), list(range(48, 68))
AU_REGIONS = {"brows": _BROW, "eyes": _EYE, "nose": _NOSE, "mouth": _MOUTH}
_AU_REGION = {"AU01": "brows", "AU02": "brows", "AU04": "brows", "AU05": "eyes", "AU06": "eyes", "AU07": "eyes",
              "AU45": "eyes", "AU09": "nose", "AU10": "mouth", "AU12": "mouth", "AU14": "mouth", "AU15": "mouth",
              "AU17": "mouth", "AU20": "mouth", "AU23": "mouth", "AU25": "mouth", "AU26": "mouth"}


def _reference() -> np.ndarray:
    from facelab.synth.landmarks import mean_shape

    return mean_shape().numpy().astype(np.float64)


def landmark_features(landmarks, visible=None) -> np.ndarray:
    """``(N, 136)`` aligned landmark offsets from the mean shape; occluded points contribute zeros."""
    L = np.asarray(landmarks, dtype=np.float64)
    if L.ndim == 2:
        L = L[None]
    if L.ndim != 3 or L.shape[1:] != (68, 2):
        raise ValueError(f"landmarks must be (N, 68, 2) or (68, 2) pixel coordinates, got shape {L.shape}")
    V = np.ones(L.shape[:2], bool) if visible is None else np.asarray(visible, bool).reshape(L.shape[:2])
    ref = _reference()
    out = np.zeros((len(L), 136))
    for i in range(len(L)):
        v = V[i]
        if v.sum() < 6:
            continue                                          # nothing to align: the mean shape (all zeros)
        M = umeyama(L[i, v], ref[v])
        a = L[i] @ M[:, :2].T + M[:, 2]
        d = np.where(v[:, None], a - ref, 0.0)
        out[i] = d.reshape(-1)
    return out


class AURegressor:
    """Ridge regressor ``features -> 17 AU intensities`` (clipped to [0, 1])."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, au_names):
        self.weight, self.bias, self.au_names = np.asarray(weight), np.asarray(bias), tuple(au_names)

    def predict(self, landmarks, visible=None) -> np.ndarray:
        X = landmark_features(landmarks, visible)
        return np.clip(X @ self.weight + self.bias, 0.0, 1.0)


def _training_set(settings: dict):
    from facelab.synth import AU_NAMES, EMOTION_PROTOTYPES, FaceWorld

    rng = np.random.default_rng(settings["world_seed"])
    world = FaceWorld(seed=settings["world_seed"], size=112)
    n = settings["n_identities"] * settings["per_identity"]
    exprs = []
    emos = list(EMOTION_PROTOTYPES)
    for i in range(n):
        if i % 3 == 2:                                        # a few single or paired AUs
            names = rng.choice(AU_NAMES, size=int(rng.integers(1, 3)), replace=False)
            exprs.append({str(a): float(rng.uniform(0.1, 1.0)) for a in names})
        else:
            e = emos[int(rng.integers(len(emos)))]
            s = float(rng.uniform(0.0, 1.0))
            exprs.append({a: v * s for a, v in EMOTION_PROTOTYPES[e].items()})
    X, Y = [], []
    for start in range(0, n, 300):
        ids = np.repeat(np.arange(settings["n_identities"]), settings["per_identity"])[start:start + 300]
        b = world.sample(identities=ids.tolist(), expression=exprs[start:start + 300], nuisance="none",
                         yaw=(-12, 12), pitch=(-8, 8), roll=(-6, 6), generator=torch.Generator().manual_seed(start))
        L = b.landmarks.float().cpu().numpy() + rng.normal(0, settings["noise_px"], (len(ids), 68, 2))
        V = np.ones((len(ids), 68), bool)
        for r in range(len(ids)):                             # random occluded regions, as in the hard tier
            if rng.random() < 0.25:
                V[r, AU_REGIONS[str(rng.choice(["eyes", "mouth", "brows"]))]] = False
        X.append(landmark_features(L, V))
        Y.append(b.labels[list(AU_NAMES)].to_numpy(np.float64))
    return np.concatenate(X), np.concatenate(Y)


def train_au_regressor(settings: dict):
    """``(state_dict, log)`` for :func:`facelab.checkpoints.load_or_train`."""
    from facelab.synth import AU_NAMES

    X, Y = _training_set(settings)
    n_val = len(X) // 5
    Xt, Yt, Xv, Yv = X[n_val:], Y[n_val:], X[:n_val], Y[:n_val]
    mx, my = Xt.mean(0), Yt.mean(0)
    A = (Xt - mx).T @ (Xt - mx) + settings["ridge"] * np.eye(X.shape[1])
    W = np.linalg.solve(A, (Xt - mx).T @ (Yt - my))
    b = my - mx @ W
    pred = np.clip(Xv @ W + b, 0, 1)
    mae = np.abs(pred - Yv).mean(0)
    corr = [float(np.corrcoef(pred[:, k], Yv[:, k])[0, 1]) if Yv[:, k].std() > 0 else float("nan")
            for k in range(Y.shape[1])]
    log = {"n_train": int(len(Xt)), "n_val": int(n_val), "val_mae": dict(zip(AU_NAMES, map(float, mae))),
           "val_corr": dict(zip(AU_NAMES, corr))}
    return {"weight": torch.tensor(W, dtype=torch.float32), "bias": torch.tensor(b, dtype=torch.float32)}, log


def load_au_regressor(*, allow_train: bool = True) -> tuple[AURegressor, dict]:
    """The committed regressor (trained on first use when absent) and its sidecar (validation MAE/correlation)."""
    from facelab.synth import AU_NAMES

    state, meta = checkpoints.load_or_train(CHECKPOINT, train_au_regressor, settings=SETTINGS, restore=RESTORE,
                                            allow_train=allow_train)
    return AURegressor(state["weight"].double().numpy(), state["bias"].double().numpy(), AU_NAMES), meta


def hidden_regions(visible) -> list[str]:
    """Face regions (brows, eyes, nose, mouth) with more than half of their landmarks occluded."""
    v = np.asarray(visible, bool)
    return [r for r, idx in AU_REGIONS.items() if v[idx].mean() < 0.5]


#: Plain-language glosses of what each AU does to the face (as FACS coders describe it).
AU_GLOSSES = {
    "AU01": "inner brows raised", "AU02": "outer brows raised", "AU04": "brows lowered and drawn together, a frown",
    "AU05": "eyes widened", "AU06": "cheeks raised", "AU07": "eyelids tightened", "AU09": "nose wrinkled",
    "AU10": "upper lip raised", "AU12": "lip corners pulled up, a smile", "AU14": "dimpled mouth corners",
    "AU15": "lip corners pulled down", "AU17": "chin pushed up", "AU20": "lips stretched sideways",
    "AU23": "lips tightened", "AU25": "lips parted", "AU26": "jaw dropped open", "AU45": "eyes closed",
}


def _level(x: float) -> str:
    # the ridge estimates shrink towards the mean: a full display reads about 0.4-0.6
    return "strong" if x >= 0.45 else "moderate" if x >= 0.25 else "slight"


def au_phrases(intensities, au_names, visible=None, *, threshold: float = 0.1, top: int = 4) -> str:
    """``"AU12 lip corner puller (lip corners pulled up, a smile; strong), ..."``; occluded regions are named."""
    from facelab.synth import AU_DESCRIPTIONS

    hidden = hidden_regions(visible) if visible is not None else []
    x = np.asarray(intensities, dtype=float)
    order = [k for k in np.argsort(-x) if x[k] >= threshold and _AU_REGION.get(au_names[k]) not in hidden]
    parts = [f"{au_names[k]} {AU_DESCRIPTIONS[au_names[k]]} ({AU_GLOSSES[au_names[k]]}; {_level(x[k])})"
             for k in order[:top]]
    text = ", ".join(parts) if parts else "no action unit clearly active"
    if hidden:
        text += f"; {' and '.join(hidden)} not visible"
    return text


if __name__ == "__main__":   # pragma: no cover - retrain the committed checkpoint
    import json

    st, lg = train_au_regressor(SETTINGS)
    checkpoints.save(CHECKPOINT, st, settings=SETTINGS, log=lg, restore=RESTORE)
    print(json.dumps(lg["val_corr"], indent=1))
