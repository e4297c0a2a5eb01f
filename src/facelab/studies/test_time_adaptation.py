"""Chapter 09, *Adapting while watching: Fisher-selected test-time adaptation*: protocol, tables, figures.

The adapters live in :mod:`facelab.adaptation.test_time`; this module holds what only the chapter does with them.

* the base model: :func:`source_model` (the FER2013 mini-Xception fine-tuned on the "source" part of the synthetic
  world: frontal, studio light; checkpoint ``data/models/tta_source_fer``), :func:`source_faces`;
* the shift: :func:`make_stream` (a world video of an unseen person with expression episodes and per-frame labels,
  then light / pose drift / occlusion / blur and noise / sensor gain drift / no-face drop-outs), :func:`make_streams`
  (disjoint validation and test identities and seeds);
* the protocol: :func:`build_adapter` (the methods with the hyper-parameters chosen on validation streams),
  :func:`select_hyperparameters` (the grid on validation streams, saved to ``data/models/tta_selection.json``),
  :func:`evaluate` (macro-F1, ms per frame, parameters updated per stream and method), :func:`fisher_frames_study`,
  :func:`drift_study`, :func:`temporal_ablation`;
* tables: :func:`methods_table` (mean macro-F1 over streams with bootstrap intervals, paired differences),
  :func:`fisher_table`;
* figures: :func:`plot_shift`, :func:`plot_fisher_layers`, :func:`plot_methods`, :func:`plot_fisher_frames`,
  :func:`plot_drift`.

Everything here is synthetic: the numbers describe the synthetic world and its shifts, not real faces.
"""

from __future__ import annotations

import copy
import json
import math
import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from facelab import checkpoints
from facelab.adaptation import test_time as tta
from facelab.metrics import bootstrap_ci, expression_f1

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["WORLD_TO_FER", "EXPRESSIVE", "SOURCE_SETTINGS", "source_faces", "source_model", "make_stream",
           "make_streams", "stream_f1", "HYPERPARAMETERS", "load_selection", "select_hyperparameters",
           "build_adapter", "evaluate", "methods_table", "paired_table", "fisher_frames_study", "fisher_table",
           "drift_study", "temporal_ablation", "fisher_mask", "plot_shift", "plot_fisher_layers", "plot_methods",
           "plot_fisher_frames", "plot_drift"]

#: The world's emotions -> the FER2013 class index (FER order: angry, disgust, fear, happy, sad, surprise, neutral);
#: the world's "contempt" has no FER class and is never shown.
WORLD_TO_FER = {"angry": 0, "disgusted": 1, "fearful": 2, "happy": 3, "sad": 4, "surprised": 5, "neutral": 6}
EXPRESSIVE = ("angry", "disgusted", "fearful", "happy", "sad", "surprised")
#: FER class -> ABAW expression name (for :func:`facelab.metrics.expression_f1`).
FER_TO_ABAW = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
#: A frame shows its emotion when the event's intensity at that frame is at least this; below it is "neutral".
LABEL_THRESHOLD = 0.35
SIZE = 64
SOURCE_SETTINGS = dict(world_seed=0, size=SIZE, identities=(0, 300), per_identity=7, epochs=8, batch_size=32,
                       lr=1e-3, seed=0, nuisance="none", label_threshold=LABEL_THRESHOLD, version=1)
SELECTION_FILE = "tta_selection.json"


def _axes(ax, figsize=(6, 4)):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    return ax.figure, ax


# ------------------------------------------------------------------------------------------------ source
def source_faces(world, identities, per_identity: int, seed: int, *, nuisance: str = "none"):
    """Faces of ``identities`` (``per_identity`` each) with a random emotion at a random intensity; the label is the
    emotion (FER index) when the intensity is at least :data:`LABEL_THRESHOLD`, else neutral. Returns
    ``(images (N, 3, S, S), labels (N,) int64)``."""
    from facelab.synth import EMOTION_PROTOTYPES

    g = torch.Generator().manual_seed(seed)
    ids = np.repeat(np.asarray(list(identities)), per_identity)
    n = len(ids)
    pick = torch.randint(0, 7, (n,), generator=g).tolist()          # 0..5 expressive, 6 neutral
    u = torch.rand(n, generator=g).tolist()
    exprs, labels = [], []
    for k, r in zip(pick, u):
        if k == 6:
            exprs.append(None)
            labels.append(WORLD_TO_FER["neutral"])
            continue
        emo = EXPRESSIVE[k]
        s = 0.05 + 0.25 * r / 0.2 if r < 0.2 else 0.4 + 0.6 * (r - 0.2) / 0.8   # 20% faint (neutral label)
        exprs.append({au: v * s for au, v in EMOTION_PROTOTYPES[emo].items()})
        labels.append(WORLD_TO_FER[emo] if s >= LABEL_THRESHOLD else WORLD_TO_FER["neutral"])
    exprs = [e if e is not None else {} for e in exprs]
    batch = world.sample(identities=ids.tolist(), nuisance=nuisance, expression=exprs, generator=g)
    return batch.images.cpu(), torch.tensor(labels, dtype=torch.long)


def _train_source(settings: dict):
    from facelab.models import load_fer_expression
    from facelab.synth import FaceWorld

    s = settings
    torch.manual_seed(s["seed"])
    world = FaceWorld(seed=s["world_seed"], size=s["size"])
    a, b = s["identities"]
    X, y = source_faces(world, range(a, b), s["per_identity"], s["seed"], nuisance=s["nuisance"])
    Xv, yv = source_faces(world, range(b, b + 40), 3, s["seed"] + 1, nuisance=s["nuisance"])
    model = copy.deepcopy(load_fer_expression(cache=False)).train()
    x = model.preprocess(X)
    xv = model.preprocess(Xv)
    opt = torch.optim.Adam(model.parameters(), lr=s["lr"])
    g = torch.Generator().manual_seed(s["seed"])
    curve = []
    t0 = time.time()
    for ep in range(s["epochs"]):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        tot = 0.0
        for i in range(0, len(x), s["batch_size"]):
            j = perm[i:i + s["batch_size"]]
            xb = x[j]
            if torch.rand(1, generator=g) < 0.5:
                xb = xb.flip(3)
            loss = F.cross_entropy(model(xb)[0], y[j])
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(j)
        model.eval()
        with torch.no_grad():
            acc = float((model(xv)[0].argmax(1) == yv).float().mean())
        curve.append(dict(epoch=ep + 1, loss=tot / len(x), val_accuracy=acc))
        print(f"  epoch {ep + 1}: loss {tot / len(x):.3f}, held-out source accuracy {acc:.3f}", flush=True)
    log = dict(curve=curve, seconds=time.time() - t0, n_train=len(x), n_val=len(xv),
               val_accuracy=curve[-1]["val_accuracy"])
    return model.state_dict(), log


def source_model(device=None):
    """The base model: the FER2013 mini-Xception fine-tuned on the source world (checkpoint
    ``data/models/tta_source_fer``, trained by ``python -m facelab.studies.test_time_adaptation`` when missing);
    returns ``(model in eval mode, sidecar meta)``."""
    from facelab.models.fer import FERMiniXception

    state, meta = checkpoints.load_or_train("tta_source_fer", _train_source, settings=SOURCE_SETTINGS,
                                            restore="python -m facelab.studies.test_time_adaptation")
    model = FERMiniXception()
    model.load_state_dict(state)
    model.eval()
    if device is not None:
        model.to(device)
    return model, meta


# ------------------------------------------------------------------------------------------------ streams
def _episodes(duration_s: float, rng: np.random.Generator):
    events, t = [], 0.4 + 0.6 * rng.random()
    while True:
        length = 1.5 + 2.0 * rng.random()
        if t + length > duration_s - 0.2:
            break
        emo = EXPRESSIVE[int(rng.integers(len(EXPRESSIVE)))]
        apex = t + length * (0.3 + 0.2 * rng.random())
        events.append(dict(kind="macro", emotion=emo, onset=round(t, 3), apex=round(apex, 3),
                           offset=round(t + length, 3), intensity=float(0.7 + 0.3 * rng.random())))
        t += length + 0.4 + 1.2 * rng.random()
    return events


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0:
        return x
    r = max(1, int(math.ceil(2.5 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype) / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def make_stream(world, identity: int, seed: int, *, duration_s: float = 24.0, fps: float = 8.0,
                shift: str = "wild") -> dict:
    """One test stream: a world video of ``identity`` with expression episodes (macro events of the six FER
    emotions, 1.5-3.5 s, 0.4-1.6 s apart) and, for ``shift="wild"``, in-the-wild shift on top of the world's
    "mild" nuisances (light, background, base pose, blur, noise, JPEG):

    * pose drift: the head's in-plane rotation, position and scale drift linearly over the stream;
    * sensor gain drift: per-channel gain and offset drift linearly (auto-exposure / white balance wandering);
    * occlusion: a block over part of the face for 30-50% of the stream;
    * blur and noise growing along the stream;
    * no-face drop-outs: one short window (3% of frames) where the detector finds nothing (NaN frames, ``valid``
      False; their labels still count, the adapter holds its last prediction).

    ``shift="none"``: the source conditions (frontal, studio light, no head motion) for the same person and episodes.

    Returns a dict: ``frames`` (T, 3, S, S) with NaN rows at drop-outs, ``labels`` (T,) FER indices, ``valid`` (T,),
    ``intensity`` (T,), ``identity``, ``seed``, ``fps``, ``shift`` (the drawn shift parameters).
    """
    from facelab.synth.video import envelope

    if shift not in ("wild", "none"):
        raise ValueError(f"shift must be 'wild' or 'none', got {shift!r}")
    rng = np.random.default_rng(seed)
    events = _episodes(duration_s, rng)
    g = torch.Generator().manual_seed(int(seed))
    v = world.video(identity=int(identity), duration_s=duration_s, fps=fps, events=events,
                    nuisance="mild" if shift == "wild" else "none", head_motion=shift == "wild", generator=g)
    T = len(v)
    inten = np.zeros(T)
    labels = np.full(T, WORLD_TO_FER["neutral"], dtype=np.int64)
    for ev in v.events.itertuples():
        e = envelope(T, ev.onset, ev.apex, ev.offset) * ev.intensity
        on = (e >= LABEL_THRESHOLD) & (e > inten)
        labels[on] = WORLD_TO_FER[ev.emotion]
        inten = np.maximum(inten, e)
    x = v.frames.cpu().float()
    valid = np.ones(T, dtype=bool)
    info = dict(identity=int(identity), seed=int(seed))
    if shift == "wild":
        t = torch.linspace(0, 1, T)
        rot = float(rng.choice([-1, 1]) * rng.uniform(4, 12))
        tx, ty = (float(rng.uniform(-0.08, 0.08)) for _ in range(2))
        sc = float(rng.uniform(0.9, 1.1))
        ang = torch.deg2rad(rot * t)
        s = 1 + (sc - 1) * t
        theta = torch.zeros(T, 2, 3)
        theta[:, 0, 0] = torch.cos(ang) / s
        theta[:, 0, 1] = -torch.sin(ang) / s
        theta[:, 1, 0] = torch.sin(ang) / s
        theta[:, 1, 1] = torch.cos(ang) / s
        theta[:, 0, 2] = tx * t
        theta[:, 1, 2] = ty * t
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
        gain_end = torch.tensor(rng.uniform(0.7, 1.3, 3), dtype=torch.float32) * float(rng.uniform(0.8, 1.2))
        off_end = float(rng.uniform(-0.1, 0.1))
        gain = 1 + (gain_end[None] - 1) * t[:, None]
        x = x * gain[:, :, None, None] + (off_end * t)[:, None, None, None]
        sigma = float(rng.uniform(0.3, 0.9))
        x = _blur(x, sigma)
        noise_end = float(rng.uniform(0.02, 0.05))
        gn = torch.Generator().manual_seed(int(seed) + 7)
        x = x + torch.randn(x.shape, generator=gn) * (noise_end * t)[:, None, None, None]
        # occlusion: a block over 20-30% of the face for a window of 30-50% of the stream
        S = x.shape[-1]
        w = int(S * rng.uniform(0.3, 0.45))
        h = int(S * rng.uniform(0.25, 0.4))
        cx = int(rng.uniform(0.3, 0.7) * S)
        cy = int(rng.uniform(0.3, 0.75) * S)
        start = int(rng.uniform(0.1, 0.5) * T)
        length = int(rng.uniform(0.3, 0.5) * T)
        colour = torch.tensor(rng.uniform(0.1, 0.9, 3), dtype=torch.float32)
        y0, x0 = max(0, cy - h // 2), max(0, cx - w // 2)
        x[start:start + length, :, y0:y0 + h, x0:x0 + w] = colour[None, :, None, None]
        x = x.clamp(0, 1)
        d0 = int(rng.uniform(0.2, 0.9) * T)
        dn = max(1, int(round(0.03 * T)))
        valid[d0:d0 + dn] = False
        x[torch.as_tensor(~valid)] = float("nan")
        info.update(rotation_deg=rot, shift_x=tx, shift_y=ty, scale=sc, gain_end=gain_end.tolist(),
                    offset_end=off_end, blur_sigma=sigma, noise_end=noise_end,
                    occlusion=(start, start + length), dropout=(d0, d0 + dn))
    return dict(frames=x, labels=labels, valid=valid, intensity=inten, identity=int(identity), seed=int(seed),
                fps=float(fps), shift=info, events=v.events)


#: Identity and seed ranges: validation and test streams never share a person or a seed (and none is a source id).
SPLITS = {"validation": (5000, 100), "test": (6000, 200)}


def make_streams(world, n: int, split: str = "test", *, duration_s: float = 24.0, fps: float = 8.0,
                 shift: str = "wild") -> list[dict]:
    """``n`` streams of unseen people of ``split`` ("validation" or "test")."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    id0, s0 = SPLITS[split]
    return [make_stream(world, id0 + i, s0 + i, duration_s=duration_s, fps=fps, shift=shift) for i in range(n)]


def stream_f1(labels, pred) -> float:
    """Macro-F1 (ABAW's expression score, classes absent from both truth and prediction left out) of one stream."""
    labels, pred = np.asarray(labels), np.asarray(pred)
    if labels.shape != pred.shape:
        raise ValueError(f"labels {labels.shape} and predictions {pred.shape} differ in length")
    keep = labels >= 0                                   # -1: frame without a usable label (Aff-Wild2's -1, "other")
    labels, pred = labels[keep], pred[keep]
    if labels.size == 0:
        raise ValueError("an empty stream has no macro-F1: it has no labelled frames")
    names = np.array(FER_TO_ABAW)
    return float(expression_f1(names[labels], names[pred], absent="ignore"))


#: ABAW expression index (neutral, anger, disgust, fear, happiness, sadness, surprise, other) -> FER index (-1: none).
ABAW_TO_FER = (6, 0, 1, 2, 3, 4, 5, -1)


def affwild2_stream(root, video: str, *, max_frames: int | None = None, size: int = 112) -> dict:
    """An Aff-Wild2 video as a stream (full profile; needs the corpus on disk, never downloads): frames from
    ``cropped_aligned`` (missing crops are no-face frames), expression labels mapped to FER classes ("other" and
    unlabelled frames get -1 and are not scored). Loaded through :func:`facelab.affect.loaders.load_affwild2`."""
    from PIL import Image

    from facelab.affect.loaders import load_affwild2

    df = load_affwild2(root, video, tasks=("expression",))
    if max_frames is not None:
        df = df.iloc[:max_frames]
    frames = torch.full((len(df), 3, size, size), float("nan"))
    for i, p in enumerate(df["path"]):
        if p:
            im = Image.open(p).convert("RGB").resize((size, size))
            frames[i] = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
    e = df["expression"].fillna(-1).astype(int).to_numpy()
    labels = np.array([ABAW_TO_FER[k] if 0 <= k < len(ABAW_TO_FER) else -1 for k in e])
    valid = torch.isfinite(frames).flatten(1).all(1).numpy()
    return dict(frames=frames, labels=labels, valid=valid, identity=video, seed=-1, fps=30.0, shift={}, events=None)


# ------------------------------------------------------------------------------------------------ methods
#: Hyper-parameters used when no selection file exists (the selection on validation streams overrides them).
HYPERPARAMETERS = {
    "none": {},
    "BN stats": dict(bn_alpha=0.1, bn_momentum=0.02),
    "TENT": dict(lr=1e-4, bn_alpha=0.1, bn_momentum=0.02),
    "EATA": dict(lr=1e-4, bn_alpha=0.1, bn_momentum=0.02, d_margin=0.95, fisher_alpha=2000.0),
    "SAR": dict(lr=1e-4, bn_alpha=0.1, bn_momentum=0.02, rho=0.05),
    "TempT (all parameters)": dict(lr=1e-4, bn_alpha=0.1, bn_momentum=0.02, temporal=1.0),
    "FIESTA": dict(lr=1e-4, bn_alpha=0.1, bn_momentum=0.02, temporal=1.0, k=2000, n_fisher=3),
}
METHOD_ORDER = tuple(HYPERPARAMETERS)


def load_selection(path=None) -> dict | None:
    """The hyper-parameter selection saved by :func:`select_hyperparameters` (``None`` when there is none)."""
    p = checkpoints.MODELS_DIR / SELECTION_FILE if path is None else path
    try:
        return json.loads(open(p).read())
    except FileNotFoundError:
        return None


def chosen_hyperparameters(selection: dict | None = None) -> dict:
    """Per method, the hyper-parameters chosen on validation streams (or :data:`HYPERPARAMETERS`)."""
    sel = load_selection() if selection is None else selection
    hp = copy.deepcopy(HYPERPARAMETERS)
    if sel:
        for k, v in sel["chosen"].items():
            hp[k] = v
    return hp


def build_adapter(name: str, model, hp: dict | None = None, *, fishers=None, **overrides):
    """The adapter ``name`` (a key of :data:`facelab.adaptation.test_time.METHODS`) for ``model`` with
    hyper-parameters ``hp[name]`` (default: :func:`chosen_hyperparameters`) updated by ``overrides``."""
    if name not in tta.METHODS:
        raise ValueError(f"unknown method {name!r}: expected one of {', '.join(tta.METHODS)}")
    kw = dict((hp or chosen_hyperparameters()).get(name, {}))
    kw.update(overrides)
    if name == "EATA":
        kw.setdefault("fishers", fishers)
    return tta.METHODS[name](model, **kw)


def source_fishers(model, n: int = 64, seed: int = 11):
    """EATA's anti-forgetting Fisher from ``n`` source faces (people the test streams never show)."""
    from facelab.synth import FaceWorld

    w = FaceWorld(seed=SOURCE_SETTINGS["world_seed"], size=SIZE)
    X, _ = source_faces(w, range(4000, 4000 + n), 1, seed)
    return tta.source_fishers(model, model.preprocess(X))


def evaluate(model, streams, methods=METHOD_ORDER, *, batch_size: int = 8, hp: dict | None = None, fishers=None,
             keep_predictions: bool = False, overrides: dict | None = None) -> pd.DataFrame:
    """Run every method on every stream (a fresh adapter per stream); one row per (stream, method): ``f1``,
    ``ms_per_frame``, ``n_updated``, ``n_parameters``, ``updates``, ``resets``, ``no_face_frames`` (and ``pred``
    with ``keep_predictions``). ``overrides``: ``{method: {argument: value}}`` on top of ``hp``."""
    hp = hp or chosen_hyperparameters()
    overrides = overrides or {}
    if "EATA" in methods and fishers is None:
        fishers = source_fishers(model)
    rows = []
    for i, s in enumerate(streams):
        for name in methods:
            a = build_adapter(name, model, hp, fishers=fishers, **overrides.get(name, {}))
            r = tta.run_stream(a, s["frames"], batch_size, s["valid"])
            row = dict(stream=i, identity=s["identity"], method=name, f1=stream_f1(s["labels"], r["pred"]),
                       ms_per_frame=r["ms_per_frame"], n_updated=a.n_updated, n_parameters=a.n_parameters,
                       updates=r["log"]["updates"],
                       resets=r["log"]["nan_resets"] + r["log"]["scheduled_resets"] + r["log"]["recoveries"],
                       no_face_frames=r["log"]["no_face_frames"])
            if keep_predictions:
                row["pred"] = r["pred"]
                row["adapter"] = a
            rows.append(row)
    return pd.DataFrame(rows)


def _paired(a, b, n_boot: int = 2000, seed: int = 0):
    """Mean of a - b over streams with a percentile bootstrap interval and two-sided bootstrap p-value."""
    d = np.asarray(a, float) - np.asarray(b, float)
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), (n_boot, len(d)))].mean(1)
    lo, hi = np.quantile(boots, [0.025, 0.975])
    p = min(1.0, 2 * min((np.sum(boots <= 0) + 1) / (n_boot + 1), (np.sum(boots >= 0) + 1) / (n_boot + 1)))
    return float(d.mean()), float(lo), float(hi), float(p)


def methods_table(df: pd.DataFrame, reference: str = "none", challenger: str = "FIESTA") -> pd.DataFrame:
    """Per method: mean macro-F1 over streams (x100) with a 95% bootstrap interval over streams, the paired
    difference to ``reference`` and from ``challenger`` (mean over streams, interval, p), parameters updated (and
    the factor fewer than the all-parameter baseline), ms per frame and resets."""
    wide = df.pivot(index="stream", columns="method", values="f1") * 100
    rows = []
    all_params = int(df["n_parameters"].max())
    for m in [x for x in METHOD_ORDER if x in wide] + [x for x in wide if x not in METHOD_ORDER]:
        ci = bootstrap_ci(wide[m].to_numpy())
        d_ref = _paired(wide[m], wide[reference]) if reference in wide and m != reference else (np.nan,) * 4
        d_ch = _paired(wide[challenger], wide[m]) if challenger in wide and m != challenger else (np.nan,) * 4
        sub = df[df["method"] == m]
        nu = int(sub["n_updated"].iloc[0])
        rows.append({"method": m, "macro-F1": ci.estimate, "lo": ci.lo, "hi": ci.hi,
                     f"vs {reference}": d_ref[0], f"vs {reference} lo": d_ref[1], f"vs {reference} hi": d_ref[2],
                     f"vs {reference} p": d_ref[3],
                     f"{challenger} - method": d_ch[0], f"{challenger} - method lo": d_ch[1],
                     f"{challenger} - method hi": d_ch[2], f"{challenger} - method p": d_ch[3],
                     "parameters updated": nu, "x fewer than all": (all_params / nu) if nu else np.nan,
                     "ms/frame": sub["ms_per_frame"].mean(), "resets": int(sub["resets"].sum())})
    return pd.DataFrame(rows).set_index("method")


def paired_table(table: pd.DataFrame, reference: str = "none", challenger: str = "FIESTA") -> pd.DataFrame:
    """:func:`methods_table` formatted for the chapter: ``est [lo, hi]`` strings."""
    from facelab.metrics import with_interval

    out = pd.DataFrame(index=table.index)
    out["macro-F1 x100 [95% CI]"] = [with_interval(r["macro-F1"], r["lo"], r["hi"], digits=1)
                                    for _, r in table.iterrows()]
    for col in (f"vs {reference}", f"{challenger} - method"):
        out[col + " [95% CI], p"] = ["" if not np.isfinite(r[col]) else
                                     f"{with_interval(r[col], r[col + ' lo'], r[col + ' hi'], digits=1)}, "
                                     f"p={r[col + ' p']:.3f}" for _, r in table.iterrows()]
    out["parameters updated"] = table["parameters updated"]
    out["x fewer than all"] = table["x fewer than all"].round(1)
    out["ms/frame"] = table["ms/frame"].round(2)
    out["resets"] = table["resets"]
    return out


# ------------------------------------------------------------------------------------------------ selection
#: The grid searched on validation streams (never on test streams). BN settings first (shared by all adapters), then
#: each method's learning rate (and EATA's redundancy margin, FIESTA's mask size and temporal weight).
GRID = {
    "bn": [(1.0, 0.0), (0.1, 0.02), (0.0, 0.05)],
    "lr": [1e-5, 3e-5, 1e-4],
    "EATA.d_margin": [0.95],
    "FIESTA.k": [2000],
    "temporal": [0.0, 1.0],
}


def select_hyperparameters(model, streams, *, batch_size: int = 8, grid=GRID, save: bool = True,
                           progress=print) -> dict:
    """Choose hyper-parameters by mean macro-F1 on validation ``streams`` (greedy: BN statistics, then each
    method's grid); returns and saves ``{"chosen": {...}, "trials": [...], "streams": ..., "batch_size": ...}``."""
    fishers = source_fishers(model)
    trials = []

    def score(name, kw):
        df = evaluate(model, streams, (name,), batch_size=batch_size, hp={name: kw}, fishers=fishers)
        f = float(df["f1"].mean())
        trials.append(dict(method=name, **{k: v for k, v in kw.items()}, f1=f))
        if progress:
            progress(f"  {name} {kw}: validation macro-F1 {f:.3f}")
        return f

    chosen = {"none": {}}
    best = max(grid["bn"], key=lambda ab: score("BN stats", dict(bn_alpha=ab[0], bn_momentum=ab[1])))
    bn = dict(bn_alpha=best[0], bn_momentum=best[1])
    chosen["BN stats"] = dict(bn)
    for name in ("TENT", "EATA", "SAR", "TempT (all parameters)", "FIESTA"):
        base = dict(HYPERPARAMETERS[name], **bn)
        cands = [dict(base, lr=lr) for lr in grid["lr"]]
        if name == "EATA":
            cands = [dict(c, d_margin=d) for c in cands for d in grid["EATA.d_margin"]]
        if name == "FIESTA":
            cands = [dict(c, k=k) for c in cands for k in grid["FIESTA.k"]]
        scored = [(score(name, c), c) for c in cands]
        kw = max(scored, key=lambda t: t[0])[1]
        if name in ("TempT (all parameters)", "FIESTA"):
            scored = [(score(name, dict(kw, temporal=t)), dict(kw, temporal=t)) for t in grid["temporal"]
                      if t != kw["temporal"]] + [(max(s for s, _ in scored), kw)]
            kw = max(scored, key=lambda t: t[0])[1]
        chosen[name] = kw
    out = dict(chosen=chosen, trials=trials, batch_size=batch_size, streams=[s["identity"] for s in streams],
               split="validation")
    if save:
        from facelab.files import atomic_write_json

        atomic_write_json(checkpoints.MODELS_DIR / SELECTION_FILE, out)
    return out


# ------------------------------------------------------------------------------------------------ studies
def fisher_mask(model, stream, n_frames: int, k, hp: dict | None = None):
    """The FIESTA mask (and Fisher) estimated from the first ``n_frames`` valid frames of ``stream``."""
    a = build_adapter("FIESTA", model, hp, k=k, n_fisher=n_frames)
    x = stream["frames"][torch.as_tensor(stream["valid"])][:n_frames]
    a.estimate(a._input(x))
    return a.mask, a.fisher


def fisher_frames_study(model, streams, ns=(1, 3, 10, 30), *, batch_size: int = 8, hp=None) -> pd.DataFrame:
    """FIESTA with its Fisher estimated from the first ``n`` frames, for each ``n``: per stream the macro-F1 and the
    Jaccard overlap of the mask with the mask from ``max(ns)`` frames."""
    hp = hp or chosen_hyperparameters()
    rows = []
    for i, s in enumerate(streams):
        masks = {}
        for n in ns:
            a = build_adapter("FIESTA", model, hp, n_fisher=n)
            r = tta.run_stream(a, s["frames"], batch_size, s["valid"])
            masks[n] = a.mask
            rows.append(dict(stream=i, n_frames=n, f1=stream_f1(s["labels"], r["pred"])))
        ref = masks[max(ns)]
        for row in rows[-len(ns):]:
            m = masks[row["n_frames"]]
            row["jaccard"] = tta.mask_jaccard(m, ref) if m is not None and ref is not None else np.nan
    return pd.DataFrame(rows)


def fisher_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per number of Fisher frames: mean macro-F1 x100 [CI], its paired difference to the largest number [CI], and
    the mean mask Jaccard with the largest number's mask [CI]."""
    wide = df.pivot(index="stream", columns="n_frames", values="f1") * 100
    jac = df.pivot(index="stream", columns="n_frames", values="jaccard")
    ref = wide.columns.max()
    rows = []
    for n in wide.columns:
        ci = bootstrap_ci(wide[n].to_numpy())
        d = _paired(wide[n], wide[ref]) if n != ref else (0.0, 0.0, 0.0, 1.0)
        j = bootstrap_ci(jac[n].to_numpy())
        rows.append({"Fisher frames": n, "macro-F1": ci.estimate, "lo": ci.lo, "hi": ci.hi, f"minus {ref}": d[0],
                     f"minus {ref} lo": d[1], f"minus {ref} hi": d[2], "Jaccard": j.estimate, "Jaccard lo": j.lo,
                     "Jaccard hi": j.hi})
    return pd.DataFrame(rows).set_index("Fisher frames")


def drift_study(model, streams, methods=("TENT", "TempT (all parameters)", "FIESTA"), *, reset_every: int = 160,
                batch_size: int = 8, window: int = 80, hp=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Long streams: each method with and without a reset to the source weights every ``reset_every`` frames.
    Returns ``(curves, summary)``: accuracy in sliding windows of ``window`` frames along the stream (mean over
    streams; the source model as reference), and per method/policy the macro-F1 of the first and last quarter."""
    hp = hp or chosen_hyperparameters()
    curves, summary = [], []
    for i, s in enumerate(streams):
        y = s["labels"]
        runs = [("none", "no adaptation", {})]
        for m in methods:
            runs += [(m, "no reset", {}), (m, f"reset every {reset_every}", dict(reset_every=reset_every))]
        for m, policy, kw in runs:
            a = build_adapter(m, model, hp, **kw)
            r = tta.run_stream(a, s["frames"], batch_size, s["valid"])
            ok = (r["pred"] == y).astype(float)
            acc = pd.Series(ok).rolling(window, min_periods=window // 2).mean().to_numpy()
            curves.append(pd.DataFrame(dict(stream=i, method=m, policy=policy, frame=np.arange(len(y)),
                                            accuracy=acc)))
            q = len(y) // 4
            summary.append(dict(stream=i, method=m, policy=policy, f1=stream_f1(y, r["pred"]),
                                f1_first_quarter=stream_f1(y[:q], r["pred"][:q]),
                                f1_last_quarter=stream_f1(y[-q:], r["pred"][-q:]),
                                majority_share_last_quarter=float(np.bincount(r["pred"][-q:]).max() / q),
                                resets=r["log"]["scheduled_resets"] + r["log"]["nan_resets"]))
    c = pd.concat(curves).groupby(["method", "policy", "frame"], as_index=False)["accuracy"].mean()
    return c, pd.DataFrame(summary)


def temporal_ablation(model, streams, *, batch_size: int = 8, hp=None, results: pd.DataFrame | None = None,
                      weight: float | None = None) -> pd.DataFrame:
    """FIESTA with a temporal weight (default: the chosen one, or 1 when the chosen one is 0) and with none: per
    stream macro-F1, to compare paired. ``results``: :func:`evaluate` rows already computed with the chosen setting
    (reused for that arm)."""
    hp = hp or chosen_hyperparameters()
    chosen = float(hp["FIESTA"].get("temporal", 1.0))
    lam = float(weight) if weight is not None else (chosen if chosen > 0 else 1.0)

    def arm(w):
        if results is not None and w == chosen:
            r = results[results["method"] == "FIESTA"].sort_values("stream")
            if len(r) == len(streams):
                return r["f1"].to_numpy()
        return evaluate(model, streams, ("FIESTA",), batch_size=batch_size, hp=hp,
                        overrides={"FIESTA": dict(temporal=w)})["f1"].to_numpy()

    return pd.DataFrame(dict(stream=np.arange(len(streams)), temporal_on=arm(lam), temporal_off=arm(0.0), weight=lam))


# ------------------------------------------------------------------------------------------------ figures
def plot_shift(model, source_stream, wild_stream, frames=(10, 60, 110, 160), ax=None) -> "Figure":
    """The same person and episodes in source conditions (top) and with the in-the-wild shift (bottom), with the
    source model's prediction and the label under each frame."""
    import matplotlib.pyplot as plt
    from facelab.models.fer import FER_CLASSES

    n = len(frames)
    fig, axes = plt.subplots(2, n, figsize=(1.9 * n, 4.4)) if ax is None else (ax.figure, ax)
    for row, s in enumerate((source_stream, wild_stream)):
        for j, t in enumerate(frames):
            a = axes[row, j]
            x = s["frames"][t]
            if torch.isfinite(x).all():
                a.imshow(x.permute(1, 2, 0).numpy())
                with torch.no_grad():
                    p = int(model.probabilities(x[None]).argmax())
                pred = FER_CLASSES[p]
            else:
                a.imshow(np.zeros((SIZE, SIZE, 3)))
                pred = "(no face)"
            a.set_xticks([])
            a.set_yticks([])
            truth = FER_CLASSES[int(s["labels"][t])]
            a.set_title(f"t={t}\nlabel {truth}\nmodel {pred}", fontsize=8,
                        color="C2" if pred == truth else "C3")
        axes[row, 0].set_ylabel("source" if row == 0 else "in the wild")
    return fig


def plot_fisher_layers(mask, ax=None) -> "Figure":
    """Share of each layer's entries in the FIESTA mask (bars) and the number selected (labels)."""
    fig, ax = _axes(ax, (7, 3.6))
    df = tta.mask_by_layer(mask)
    ax.bar(np.arange(len(df)), 100 * df["share"], color="C0")
    ax.set_xticks(np.arange(len(df)))
    ax.set_xticklabels(df["layer"], rotation=90, fontsize=7)
    ax.set_ylabel("% of the layer's entries selected")
    for i, (s, t) in enumerate(zip(df["selected"], df["total"])):
        if s:
            ax.text(i, 100 * s / t, str(int(s)), ha="center", va="bottom", fontsize=6)
    ax.set_title(f"FIESTA mask: {int(df['selected'].sum())} of {int(df['total'].sum())} entries")
    return fig


def plot_methods(table: pd.DataFrame, ax=None) -> "Figure":
    """Mean macro-F1 per method with its 95% interval over streams."""
    fig, ax = _axes(ax, (6, 3.4))
    y = np.arange(len(table))
    ax.errorbar(table["macro-F1"], y, xerr=[table["macro-F1"] - table["lo"], table["hi"] - table["macro-F1"]],
                fmt="o", capsize=3)
    ax.set_yticks(y)
    ax.set_yticklabels(table.index)
    ax.invert_yaxis()
    ax.set_xlabel("macro-F1 x100 (mean over test streams, 95% CI)")
    return fig


def plot_fisher_frames(table: pd.DataFrame, ax=None) -> "Figure":
    """Macro-F1 and mask Jaccard against the number of frames the Fisher is estimated from."""
    fig, ax = _axes(ax, (5.5, 3.4))
    n = table.index.to_numpy()
    ax.errorbar(n, table["macro-F1"], yerr=[table["macro-F1"] - table["lo"], table["hi"] - table["macro-F1"]],
                fmt="o-", capsize=3, label="macro-F1 x100")
    ax.set_xscale("log")
    ax.set_xticks(n)
    ax.set_xticklabels([str(int(v)) for v in n])
    ax.set_xlabel("frames used to estimate the Fisher")
    ax.set_ylabel("macro-F1 x100")
    ax2 = ax.twinx()
    ax2.errorbar(n, table["Jaccard"], yerr=[table["Jaccard"] - table["Jaccard lo"],
                                            table["Jaccard hi"] - table["Jaccard"]], fmt="s--", color="C1",
                 capsize=3, label="mask Jaccard")
    ax2.set_ylabel(f"Jaccard with the {int(n.max())}-frame mask", color="C1")
    ax2.set_ylim(0, 1.05)
    return fig


def plot_drift(curves: pd.DataFrame, ax=None) -> "Figure":
    """Sliding-window accuracy along long streams, each method with and without the reset policy."""
    fig, ax = _axes(ax, (7, 3.6))
    styles = {}
    for i, ((m, pol), d) in enumerate(curves.groupby(["method", "policy"], sort=False)):
        c = styles.setdefault(m, f"C{len(styles)}")
        ax.plot(d["frame"], d["accuracy"], color=c, ls="--" if pol.startswith("reset") else "-",
                label=f"{m}, {pol}")
    ax.set_xlabel("frame")
    ax.set_ylabel("accuracy (sliding window)")
    ax.legend(fontsize=7, ncol=2)
    return fig


def main(argv=None):
    """``python -m facelab.studies.test_time_adaptation [select]``: train the source checkpoint if it is missing;
    with ``select``, run the hyper-parameter selection on validation streams and save it."""
    import sys

    from facelab.synth import FaceWorld

    args = sys.argv[1:] if argv is None else argv
    model, meta = source_model()
    print(f"source model: held-out source accuracy {meta['log']['val_accuracy']:.3f}")
    if args and args[0] == "select":
        world = FaceWorld(seed=0, size=SIZE)
        streams = make_streams(world, int(args[1]) if len(args) > 1 else 6, "validation")
        sel = select_hyperparameters(model, streams)
        print(json.dumps(sel["chosen"], indent=1))


if __name__ == "__main__":
    main()
