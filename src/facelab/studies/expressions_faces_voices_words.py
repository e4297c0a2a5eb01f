"""Chapter 07, *Expressions from faces, voices and words* (EmotiEffLib at ABAW-8): protocol, tables, figures.

The methods live in :mod:`facelab.affect` (corpus, descriptors, descriptor bank, pipeline) and
:mod:`facelab.models` (face-api's expression net, the FER2013 mini-Xception, EmotiEffLib's ONNX models); this module
holds what only the chapter does with them.

* real photos: :func:`real_photo_expressions`, :func:`photo_table`, :func:`plot_photo_expressions`;
* one corpus clip: :func:`example_clip`, :func:`plot_clip_frames`, :func:`plot_spectrogram`,
  :func:`transcript_table`, :func:`clip_traces`, :func:`plot_clip_traces`;
* the descriptor bank (:func:`facelab.affect.bank.load_bank`): :func:`asr_error`, :func:`net_agreement`,
  :func:`plot_descriptor_views`;
* protocol: :func:`affect_data`, :func:`run_study` (the ablation per seed, for three face descriptors),
  :func:`ablation_summary`, :func:`crossval_fusion`, :func:`descriptor_comparison`, :func:`targets_table`,
  :func:`plot_confusions`;
* real corpora and weights: :func:`emotiefflib_status`, :func:`affwild2_example`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from facelab.metrics import ABAW_EXPRESSIONS, bootstrap_ci, expression_f1, paired_bootstrap, with_interval

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["real_photo_expressions", "photo_table", "plot_photo_expressions", "example_clip", "plot_clip_frames",
           "plot_spectrogram", "transcript_table", "clip_traces", "plot_clip_traces", "asr_error", "net_agreement",
           "plot_descriptor_views", "affect_data", "run_study", "ablation_summary", "crossval_fusion",
           "descriptor_comparison", "mimicry_study", "ah_by_cue", "targets_table", "plot_confusions", "emotiefflib_status", "affwild2_example",
           "FACE_VARIANTS"]

#: the three face descriptors compared: the nets' penultimate features, the landmark shape / deformation, both
FACE_VARIANTS = ("nets", "landmarks", "nets + landmarks")
SHORT = {"neutral": "neu", "anger": "ang", "disgust": "dis", "fear": "fea", "happiness": "hap", "sadness": "sad",
         "surprise": "sur", "other": "oth"}


# --------------------------------------------------------------------------------------------- real photos
def real_photo_expressions(*, max_faces_per_group: int = 3, device=None) -> dict:
    """Both nets on the book's real photos: every face YuNet finds (at most ``max_faces_per_group`` per face-api
    demo group photo, the largest), aligned like the corpus frames (ArcFace 112 template). Returns ``crops``
    (N, 112, 112, 3) uint8, ``faces`` (DataFrame: photo, identity), ``faceapi`` / ``fer`` (N, 7) probabilities in
    each net's own class order, and ``faceapi_abaw`` / ``fer_abaw`` (N, 8) in ABAW order."""
    import torch

    from facelab.affect.descriptors import _faceapi_outputs, to_abaw
    from facelab.align import align_faces
    from facelab.detect import detect_faces
    from facelab.io import load_image
    from facelab.models import FER_CLASSES, load_expression_model, load_fer_expression
    from facelab.models.expression import EXPRESSIONS
    from facelab.photos import real_photos

    crops, rows = [], []
    for r in real_photos().itertuples():
        img = load_image(r.path)
        faces = detect_faces(img, "yunet")
        if r.group:
            faces = sorted(faces, key=lambda f: -f.size)[:max_faces_per_group]
            faces = sorted(faces, key=lambda f: f.box[0])
        else:
            faces = faces[:1]
        for k, f in enumerate(faces):
            crops.append(align_faces(img, f, "arcface-112", size=112)[0])
            rows.append({"photo": r.name, "identity": r.identity if not r.group else f"{r.name}#{k}"})
    if not crops:
        raise RuntimeError("no face found in the real photos: run `make assets` to fetch them")
    crops = np.stack(crops)
    fa, fer = load_expression_model(device=device), load_fer_expression(device=device)
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255).to(fa.mean.device)
    p_fa, _ = _faceapi_outputs(fa, x)
    p_fer = fer.outputs(x).probabilities
    p_fa, p_fer = p_fa.cpu().numpy(), p_fer.cpu().numpy()
    return {"crops": crops, "faces": pd.DataFrame(rows), "faceapi": p_fa, "fer": p_fer,
            "faceapi_classes": EXPRESSIONS, "fer_classes": FER_CLASSES,
            "faceapi_abaw": to_abaw(p_fa, EXPRESSIONS), "fer_abaw": to_abaw(p_fer, FER_CLASSES)}


def photo_table(res: dict) -> pd.DataFrame:
    """One row per face: each net's top class (ABAW names) with its probability, whether they agree, and the
    total-variation distance between the two nets' ABAW distributions (0 = same, 1 = disjoint)."""
    a, b = res["faceapi_abaw"], res["fer_abaw"]
    ta, tb = a.argmax(1), b.argmax(1)
    out = res["faces"].copy()
    out["face-api"] = [f"{ABAW_EXPRESSIONS[k]} {a[i, k]:.2f}" for i, k in enumerate(ta)]
    out["FER mini-Xception"] = [f"{ABAW_EXPRESSIONS[k]} {b[i, k]:.2f}" for i, k in enumerate(tb)]
    out["agree"] = ta == tb
    out["distance"] = np.round(0.5 * np.abs(a - b).sum(1), 2)
    return out


def plot_photo_expressions(res: dict, *, ncols: int = 6) -> "Figure":
    """The aligned faces with each net's top class and probability."""
    from facelab import plotting

    a, b = res["faceapi_abaw"], res["fer_abaw"]
    titles = [f"fa: {SHORT[ABAW_EXPRESSIONS[a[i].argmax()]]} {a[i].max():.2f}\n"
              f"fer: {SHORT[ABAW_EXPRESSIONS[b[i].argmax()]]} {b[i].max():.2f}" for i in range(len(a))]
    return plotting.image_grid(list(res["crops"]), titles, ncols=ncols, size=1.5)


# --------------------------------------------------------------------------------------------- one clip
def example_clip(settings: dict, *, ah: int = 1, cue: str = "face"):
    """The first clip of the bank's corpus (``settings`` as in :func:`facelab.affect.bank.settings_for`) with the
    given A/H label and cue (planned with ``draw``, then rendered with speech): ``(corpus, index, clip)``."""
    from facelab.affect import AffectCorpus

    cs = settings["corpus"]
    corpus = AffectCorpus(cs["n_clips"], seed=cs["seed"], size=cs["size"], fps=cs["fps"],
                          n_identities=cs["n_identities"], ah_rate=cs["ah_rate"])
    for i in range(cs["n_clips"]):
        plan = corpus.draw(i)
        if plan["ah"] == ah and (cue is None or cue in plan["cues"]):
            return corpus, i, corpus.clip(i)
    raise ValueError(f"no clip with ah={ah} and cue {cue!r} among the {cs['n_clips']} clips")


def plot_clip_frames(clip, n: int = 8) -> "Figure":
    """``n`` frames spread over the clip, titled with time and the world's expression label."""
    from facelab import plotting

    idx = np.linspace(0, len(clip) - 1, n).round().astype(int)
    lab = clip.labels
    titles = [f"{lab['time_s'].iloc[t]:.1f} s {lab['expression'].iloc[t]}" for t in idx]
    return plotting.image_grid([clip.frames[t] for t in idx], titles, ncols=n, size=1.4)


def plot_spectrogram(clip, ax=None) -> "Figure":
    """Log-power spectrogram of the clip's speech (0-5 kHz) with the world's per-frame expression as a strip
    above it."""
    from scipy.signal import spectrogram

    from facelab.plotting import figure_axes

    if clip.audio is None:
        raise ValueError("this clip was rendered without speech (speech=False): no spectrogram")
    fig, (ax,) = figure_axes(ax, figsize=(9, 3))
    f, t, S = spectrogram(clip.audio, fs=clip.sample_rate, nperseg=512, noverlap=384)
    keep = f <= 5000
    ax.pcolormesh(t, f[keep] / 1000, 10 * np.log10(S[keep] + 1e-12), shading="auto", cmap="magma")
    lab = clip.labels
    dur = max(len(clip.audio) / clip.sample_rate, clip.duration_s)
    top = 5.0
    colours = {k: c for k, c in zip(ABAW_EXPRESSIONS, ["#bbbbbb", "#d1495b", "#66a182", "#8d6a9f", "#edae49",
                                                         "#00798c", "#1f5f8b", "#444444"])}
    for t0, e in zip(lab["time_s"], lab["expression"]):
        ax.axvspan(t0, t0 + 1 / clip.fps, ymin=0.93, ymax=1.0, color=colours[e], lw=0)
    present = [e for e in ABAW_EXPRESSIONS if e in set(lab["expression"])]
    for e in present:
        ax.plot([], [], color=colours[e], lw=6, label=e)
    ax.legend(loc="upper right", fontsize=7, ncol=len(present), bbox_to_anchor=(1, 1.22), frameon=False)
    ax.set_xlim(0, dur)
    ax.set_ylim(0, top)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("kHz")
    return fig


def transcript_table(clip, asr) -> pd.DataFrame:
    """The script (true transcript, hedges, fillers, pauses) beside PocketSphinx's transcript and its WER."""
    from facelab.affect.descriptors import word_error_rate

    hyp = asr.transcribe(clip.audio, clip.sample_rate)
    s = clip.script
    return pd.DataFrame({"": ["true transcript", "ASR (PocketSphinx)", "word error rate", "hedges / fillers / pauses",
                              "words' emotion / face's emotion", "A/H (cues)"],
                         "value": [clip.transcript, hyp, f"{word_error_rate(clip.transcript, hyp):.2f}",
                                   f"{s.n_hedges} / {s.n_fillers} / {s.n_pauses}",
                                   f"{clip.word_emotion} / {clip.face_emotion}",
                                   f"{clip.ah} ({', '.join(clip.ah_cues) or 'none'})"]})


def clip_traces(clip, *, device=None) -> dict:
    """Per-frame descriptors of one clip computed live: both nets' ABAW probabilities, landmarks, eGeMAPS."""
    from facelab.affect import descriptors as D
    from facelab.models import FER_CLASSES
    from facelab.models.expression import EXPRESSIONS

    cache = D.DescriptorCache()
    fd = D.face_descriptors(clip.frames, device=device, cache=cache)
    lm = D.landmark_descriptors(clip.frames, cache=cache)
    voice = D.voice_descriptors(clip.audio, clip.sample_rate, cache=cache) if clip.audio is not None else None
    return {"faceapi": D.to_abaw(fd.faceapi_probs, EXPRESSIONS), "fer": D.to_abaw(fd.fer_probs, FER_CLASSES),
            "landmarks": lm, "face": fd, "voice": voice}


def plot_clip_traces(clip, traces: dict, ax=None) -> "Figure":
    """Three class x frame maps: the world's label (one-hot), face-api's and FER's probabilities (ABAW order)."""
    from facelab.plotting import figure_axes

    fig, axes = figure_axes(ax, n=3, figsize=(12, 2.6))
    truth = np.zeros((len(clip), len(ABAW_EXPRESSIONS)))
    truth[np.arange(len(clip)), np.asarray(clip.labels["expression_index"])] = 1
    for a, (name, m) in zip(axes, [("world's label", truth), ("face-api", traces["faceapi"]),
                                   ("FER mini-Xception", traces["fer"])]):
        a.imshow(np.nan_to_num(m).T, aspect="auto", cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        a.grid(False)
        a.set_yticks(range(len(ABAW_EXPRESSIONS)), [SHORT[e] for e in ABAW_EXPRESSIONS], fontsize=7)
        a.set_xlabel("frame")
        a.set_title(name)
    return fig


# --------------------------------------------------------------------------------------------- the bank
def asr_error(bank, *, n_boot: int = 1000, seed: int = 0):
    """Corpus word error rate of PocketSphinx on the bank's clips (total edits / total reference words) with a
    clip-bootstrap interval: ``Interval(estimate, lo, hi)``."""
    e = np.asarray(bank.clips["wer_edits"], np.float64)
    w = np.asarray(bank.clips["wer_words"], np.float64)
    return bootstrap_ci(lambda a, b: a.sum() / b.sum(), e, w, n_boot=n_boot, seed=seed)


def _abaw_probs(bank, net: str) -> np.ndarray:
    from facelab.affect.descriptors import to_abaw
    from facelab.models import FER_CLASSES
    from facelab.models.expression import EXPRESSIONS

    p = bank.frames[f"{net}_probs"]
    return to_abaw(p, EXPRESSIONS if net == "faceapi" else FER_CLASSES)


def net_agreement(bank) -> pd.DataFrame:
    """Per ABAW class (the world's label): frames, and the share of them where each pretrained net's top class
    (mapped to ABAW) is that class (Wilson intervals), plus each net's mean top probability on those frames."""
    from facelab.metrics import wilson_interval

    y = bank.frames["label"]
    ok = bank.frames["present"]
    rows = []
    tops = {net: _abaw_probs(bank, net) for net in ("faceapi", "fer")}
    for k, name in enumerate(list(ABAW_EXPRESSIONS) + ["all expressive (not neutral)"]):
        m = ok & ((y == k) if k < len(ABAW_EXPRESSIONS) else (y != 0))
        row = {"class (world)": name, "frames": int(m.sum())}
        for net, label in (("faceapi", "face-api"), ("fer", "FER")):
            P = tops[net][m]
            hit = (P.argmax(1) == (k if k < len(ABAW_EXPRESSIONS) else -1)) if k < len(ABAW_EXPRESSIONS) else \
                (P.argmax(1) == y[m])
            lo, hi = wilson_interval(int(hit.sum()), int(m.sum())) if m.sum() else (np.nan, np.nan)
            row[f"{label} agrees"] = with_interval(hit.mean() if m.sum() else np.nan, lo, hi)
            row[f"{label} top p"] = round(float(P.max(1).mean()), 2) if m.sum() else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def plot_descriptor_views(bank, ax=None) -> "Figure":
    """Three views of the bank: the landmark deformation's first two axes coloured by the world's expression,
    two eGeMAPS functionals (mean loudness, mean F0) by A/H, and the first two axes of the transcript embeddings
    by A/H."""
    from facelab.affect.descriptors import egemaps_names
    from facelab.plotting import figure_axes

    fig, axes = figure_axes(ax, n=3, figsize=(13, 3.8))
    rng = np.random.default_rng(0)
    y = bank.frames["label"]
    d = bank.frames["deform"]
    pick = rng.permutation(len(y))[:4000]
    for k, e in enumerate(ABAW_EXPRESSIONS):
        m = pick[y[pick] == k]
        axes[0].scatter(d[m, 0], d[m, 1], s=3, alpha=0.5, label=SHORT[e])
    axes[0].legend(fontsize=6, markerscale=3, ncol=2)
    axes[0].set(title="landmark deformation (frames)", xlabel="axis 1", ylabel="axis 2")
    names = egemaps_names()
    ia = [i for i, n in enumerate(names) if n.startswith("loudness_sma3_amean")][0]
    ib = [i for i, n in enumerate(names) if n.startswith("F0semitoneFrom27.5Hz_sma3nz_amean")][0]
    ah = bank.clips["ah"]
    V, W = bank.clips["voice"], bank.clips["text_true"]
    for v, lab in ((0, "no A/H"), (1, "A/H")):
        axes[1].scatter(V[ah == v, ia], V[ah == v, ib], s=8, alpha=0.6, label=lab)
        axes[2].scatter(W[ah == v, 0], W[ah == v, 1], s=8, alpha=0.6, label=lab)
    axes[1].set(title="voice: eGeMAPS (clips)", xlabel="mean loudness", ylabel="mean F0 (semitones)")
    axes[2].set(title="words: MiniLM of the transcript (clips)", xlabel="axis 1", ylabel="axis 2")
    axes[1].legend(fontsize=7)
    return fig


# --------------------------------------------------------------------------------------------- protocol
def affect_data(bank, face: str = "nets + landmarks", *, pretrained: str = "faceapi"):
    """:class:`facelab.affect.pipeline.AffectData` from the bank with one of :data:`FACE_VARIANTS` as the face
    descriptor (per frame, and for the mimicry imitators), ``pretrained`` (``"faceapi"`` or ``"fer"``) as the net
    whose confident frames the selection keeps."""
    from facelab.affect.descriptors import to_abaw
    from facelab.affect.pipeline import AffectData
    from facelab.models.expression import EXPRESSIONS

    if face not in FACE_VARIANTS:
        raise ValueError(f"unknown face descriptor {face!r}: expected one of {FACE_VARIANTS}")
    if pretrained not in ("faceapi", "fer"):
        raise ValueError(f"pretrained must be 'faceapi' or 'fer', got {pretrained!r}")
    keys = {"nets": ("net",), "landmarks": ("shape", "deform"), "nets + landmarks": ("net", "shape", "deform")}[face]
    fr = bank.frames
    X = np.concatenate([fr[k] for k in keys], 1)
    X[~fr["present"]] = np.nan
    P = _abaw_probs(bank, pretrained)
    P[~fr["present"]] = np.nan
    ids = fr["clip"]
    cut = np.flatnonzero(np.diff(ids)) + 1
    mk = {"nets": ("mim_net", "mim_probs"), "landmarks": ("mim_deform",),
          "nets + landmarks": ("mim_net", "mim_probs", "mim_deform")}[face]
    mm = bank.mimicry
    M = np.concatenate([to_abaw(mm[k], EXPRESSIONS) if k == "mim_probs" else mm[k] for k in mk], 1)
    mcut = np.flatnonzero(np.diff(mm["mim_clip"])) + 1
    c = bank.clips
    return AffectData(np.split(X, cut), np.split(P, cut), np.split(fr["label"], cut), c["ah"], c["voice"],
                      c["text_true"], c["text_asr"], np.split(M, mcut), mm["mim_target"], meta={"face": face})


def run_study(bank, *, seeds=(0, 1, 2), n_boot: int = 500, n_components: int = 16, device=None) -> dict:
    """The ablation (:func:`facelab.affect.pipeline.run_ablation`) for every seed with nets + landmarks as the face
    descriptor, and for the first seed also with the nets alone and the landmarks alone. Every choice (early
    stopping, selection threshold, smoothing window) is made on a validation split of the training clips.

    Returns ``tables`` (one DataFrame, columns ``seed`` and ``face``) and ``predictions`` (face variant -> the
    first seed's test predictions, see ``run_ablation(..., return_predictions=True)``)."""
    from facelab.affect.pipeline import run_ablation

    tables, preds = [], {}
    for face in FACE_VARIANTS:
        data = affect_data(bank, face)
        for seed in (seeds if face == "nets + landmarks" else seeds[:1]):
            tab, pr = run_ablation(data, seed=seed, n_boot=n_boot, n_components=n_components, device=device,
                                   return_predictions=True)
            tab["seed"], tab["face"] = seed, face
            tables.append(tab)
            if seed == seeds[0]:
                preds[face] = pr
    return {"tables": pd.concat(tables, ignore_index=True), "predictions": preds, "seeds": tuple(seeds)}


def ablation_summary(res: dict, face: str = "nets + landmarks") -> pd.DataFrame:
    """The ablation with ``face`` as the face descriptor: per row the first seed's estimate with its clip-bootstrap
    interval and paired difference to the reference, then over all seeds the mean estimate, the mean difference and
    in how many seeds the paired interval excludes zero (positive / negative)."""
    t = res["tables"]
    t = t[t["face"] == face]
    first = t[t["seed"] == res["seeds"][0]].set_index(["task", "variant"])
    rows = []
    for (task, variant), g in t.groupby(["task", "variant"], sort=False):
        f = first.loc[(task, variant)]
        sig_pos = int(((g["delta_lo"] > 0)).sum())
        sig_neg = int(((g["delta_hi"] < 0)).sum())
        rows.append({"task": task, "variant": variant, "metric": f["metric"],
                     f"seed {res['seeds'][0]}": f["value"], "reference": f["reference"] or "—",
                     "difference": f["delta_value"],
                     f"mean over {len(g)} seeds": round(float(g["estimate"].mean()), 3),
                     "mean difference": round(float(g["delta"].mean()), 3) if g["delta"].notna().any() else np.nan,
                     "seeds above / below": f"{sig_pos} / {sig_neg}" if g["delta"].notna().any() else "—"})
    return pd.DataFrame(rows)


def crossval_fusion(bank, *, seeds=(0, 1, 2), n_folds: int = 5, n_boot: int = 1000, n_components: int = 16,
                    face: str = "nets + landmarks", device=None) -> pd.DataFrame:
    """Ambivalence/hesitancy with every clip tested once (``n_folds``-fold cross-validation, out-of-fold
    predictions): per seed and per transcript (true, ASR), macro-F1 of face, voice, words and fusion with
    clip-bootstrap intervals, and fusion minus the best single modality (the single modality with the highest
    out-of-fold F1: a conservative reference) with a paired bootstrap interval and p-value."""
    from facelab.affect.pipeline import crossval_predictions, fuse, pool_clips
    from facelab.metrics import ah_f1

    data = affect_data(bank, face)
    fx, _ = pool_clips(data.frame_features)
    px, _ = pool_clips(data.pretrained_probs)
    blocks = {"face": fuse(fx, px), "voice": data.voice, "words (true)": data.text_true,
              "words (ASR)": data.text_asr, "fusion (true)": ("face", "voice", "words (true)"),
              "fusion (ASR)": ("face", "voice", "words (ASR)")}
    y = np.asarray(data.ah).astype(np.int64)
    rows = []
    first = None
    for seed in seeds:
        pr = crossval_predictions(blocks, y, n_folds=n_folds, seed=seed, n_components=n_components, device=device)
        first = pr if first is None else first
        for tr in ("true", "ASR"):
            singles = ["face", "voice", f"words ({tr})"]
            best = max(singles, key=lambda s: ah_f1(y, pr[s]))
            row = {"seed": seed, "transcript": tr}
            for s in singles + [f"fusion ({tr})"]:
                est, lo, hi = bootstrap_ci(ah_f1, y, pr[s], n_boot=n_boot, seed=seed, strata=y)
                row[s.split(" (")[0]] = with_interval(est, lo, hi)
            d = paired_bootstrap(ah_f1, y, pr[f"fusion ({tr})"], pr[best], n_boot=n_boot, seed=seed, strata=y)
            row.update({"best single": best.split(" (")[0], "fusion - best": with_interval(d.delta, d.lo, d.hi),
                        "delta": d.delta, "delta_lo": d.lo, "delta_hi": d.hi, "p": round(d.p_value, 3)})
            rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs["predictions"] = first   # the first seed's out-of-fold predictions, for :func:`ah_by_cue`
    return out


def ah_by_cue(bank, cv: pd.DataFrame) -> pd.DataFrame:
    """Why fusion does or does not help: for the A/H clips of each planted cue (words, voice, face; a clip with two
    cues counts under both) and for the clips without A/H, the share each modality's out-of-fold prediction gets
    right (first seed of :func:`crossval_fusion`), with Wilson intervals."""
    from facelab.affect import AH_CUES
    from facelab.metrics import wilson_interval

    pr = cv.attrs.get("predictions")
    if pr is None:
        raise ValueError("cv has no predictions: pass the table crossval_fusion returned")
    y = np.asarray(bank.clips["ah"])
    cues = np.asarray(bank.clips["ah_cues"]).astype(bool)
    groups = {f"A/H, {c} cue": (y == 1) & cues[:, k] for k, c in enumerate(AH_CUES)}
    groups["no A/H"] = y == 0
    rows = []
    for g, m in groups.items():
        row = {"clips": g, "n": int(m.sum())}
        for name in ("face", "voice", "words (true)", "fusion (true)"):
            hit = pr[name][m] == y[m]
            lo, hi = wilson_interval(int(hit.sum()), int(m.sum()))
            row[name] = with_interval(hit.mean(), lo, hi)
        rows.append(row)
    return pd.DataFrame(rows)


def _clip_metric(y, pred, clip):
    """A metric over clips for paired resampling: rows are clip ids, frames of a clip stay together."""
    frames_of = {int(c): np.flatnonzero(clip == c) for c in np.unique(clip)}

    def metric(ids, which):
        ids = np.asarray(ids).reshape(-1)
        fr = np.concatenate([frames_of[int(c)] for c in ids])
        return expression_f1(y[fr], pred[int(np.asarray(which).reshape(-1)[0])][fr])

    return metric, np.array(sorted(frames_of))


def descriptor_comparison(res: dict, *, n_boot: int = 500, seed: int = 0) -> pd.DataFrame:
    """Expression macro-F1 (the classifier, first seed) and mimicry mean Pearson for each face descriptor, with
    intervals; the paired difference to the nets' descriptor (same test clips)."""
    from facelab.metrics import mimicry_score

    t = res["tables"]
    t = t[t["seed"] == res["seeds"][0]]
    P = res["predictions"]
    rows = []
    ref = "nets"
    y, clip = P[ref]["expression_true"], P[ref]["expression_clip"]
    preds = [P[f]["expression"]["classifier"] for f in FACE_VARIANTS]
    metric, ids = _clip_metric(y, preds, clip)
    for k, face in enumerate(FACE_VARIANTS):
        e = t[(t["face"] == face) & (t["task"] == "expression") & (t["variant"] == "classifier")].iloc[0]
        m = t[(t["face"] == face) & (t["task"] == "mimicry")].iloc[0]
        row = {"face descriptor": face, "expression F1 (classifier)": e["value"], "mimicry Pearson": m["value"]}
        if face == ref:
            row.update({"expression: difference to nets": "—", "mimicry: difference to nets": "—"})
        else:
            # paired over test clips: resample clip ids, evaluate both descriptors on the same resample
            rng = np.random.default_rng(seed)
            deltas = np.empty(n_boot)
            for b in range(n_boot):
                s = ids[rng.integers(0, len(ids), len(ids))]
                deltas[b] = metric(s, [k]) - metric(s, [0])
            delta = metric(ids, [k]) - metric(ids, [0])
            lo, hi = np.quantile(deltas, [0.025, 0.975])
            row["expression: difference to nets"] = with_interval(delta, lo, hi)
            yt = P[ref]["mimicry_true"]

            def ms(tt, pp):
                return mimicry_score(tt, pp, constant="zero").score

            d = paired_bootstrap(lambda tt, pp: ms(tt, pp.reshape(-1, 6)),
                                 yt, P[face]["mimicry"].reshape(len(yt), -1), P[ref]["mimicry"].reshape(len(yt), -1),
                                 n_boot=n_boot, seed=seed)
            row["mimicry: difference to nets"] = with_interval(d.delta, d.lo, d.hi)
        rows.append(row)
    return pd.DataFrame(rows)


def mimicry_study(bank, *, seeds=(0, 1, 2), n_boot: int = 500, n_components: int = 16, device=None) -> pd.DataFrame:
    """Emotional-mimicry mean Pearson per imitator descriptor and seed (the split and head of
    :func:`facelab.affect.pipeline.run_ablation`: 70 / 30 clips, pooled mean / std / max, 16 principal axes fitted on
    the training clips, one-hidden-layer MLP): the nets, the detected landmarks' deformation from the first frame,
    both, and the world's own landmarks (what a perfect landmark detector would give: an upper bound)."""
    from facelab.affect.descriptors import to_abaw
    from facelab.affect.pipeline import MLPHead, _split_clips, fuse, pool_clips, reduce_block
    from facelab.metrics import mimicry_score
    from facelab.models.expression import EXPRESSIONS

    mm = bank.mimicry
    cut = np.flatnonzero(np.diff(mm["mim_clip"])) + 1
    probs = to_abaw(mm["mim_probs"], EXPRESSIONS)
    pooled = {k: pool_clips(np.split(v, cut))[0] for k, v in
              {"net": np.concatenate([mm["mim_net"], probs], 1), "deform": mm["mim_deform"],
               "true": mm["mim_true_deform"]}.items()}
    variants = {"nets": ("net",), "detected landmarks": ("deform",), "nets + detected landmarks": ("net", "deform"),
                "world's landmarks (upper bound)": ("true",)}
    Y = np.asarray(mm["mim_target"], np.float64)

    def score(t, p):
        return mimicry_score(t, p, constant="zero").score

    rows = []
    for seed in seeds:
        tr, te = _split_clips(len(Y), 0.3, seed)
        for name, keys in variants.items():
            X = fuse(*[reduce_block(pooled[k], tr, n_components) for k in keys])
            p = MLPHead("regression", device=device, seed=seed).fit(X[tr], Y[tr]).predict(X[te])
            est, lo, hi = bootstrap_ci(score, Y[te], p, n_boot=n_boot, seed=seed)
            rows.append({"seed": seed, "descriptor": name, "estimate": est, "lo": lo, "hi": hi,
                         "value": with_interval(est, lo, hi), "n_test": len(te)})
    return pd.DataFrame(rows)


def targets_table(res: dict, cv: pd.DataFrame, wer, mimicry: pd.DataFrame | None = None) -> pd.DataFrame:
    """The issue's targets against what was measured (first seed's intervals; counts over seeds). ``mimicry``
    (:func:`mimicry_study`): its nets + detected landmarks rows are reported instead of the ablation's."""
    t = res["tables"]
    t = t[t["face"] == "nets + landmarks"]
    s0 = t[t["seed"] == res["seeds"][0]]
    n = len(res["seeds"])
    tr = cv[cv["transcript"] == "true"]
    fus = f"{tr['delta'].mean():+.3f} mean over {len(tr)} seeds; first seed {tr['fusion - best'].iloc[0]}"
    fus_met = bool((tr["delta_lo"] >= 0.05).all())
    sel = t[(t["task"] == "expression") & (t["variant"] == "classifier + selection")]
    sel0 = s0[(s0["task"] == "expression") & (s0["variant"] == "classifier + selection")].iloc[0]
    mim = s0[s0["task"] == "mimicry"].iloc[0]
    mim_all = t[t["task"] == "mimicry"]["estimate"]
    mim_name = "nets + landmarks"
    if mimicry is not None:
        mim_name = "nets + detected landmarks"  # the chapter's descriptor, fixed in advance (not the test's best)
        mm = mimicry[mimicry["descriptor"] == mim_name]
        mim, mim_all = mm.iloc[0], mm["estimate"]
    return pd.DataFrame([
        {"target": "fusion beats the best single modality on A/H by >= 0.05 F1",
         "measured": fus, "met": "yes" if fus_met else
         ("in the mean only" if tr["delta"].mean() >= 0.05 else "no")},
        {"target": "frame selection adds >= 0.02 expression F1",
         "measured": f"{sel['delta'].mean():+.3f} mean over {n} seeds; first seed {sel0['delta_value']} "
                     f"(threshold {sel0['threshold']})",
         "met": "yes" if (sel["delta_lo"] >= 0.02).all() else "no"},
        {"target": "mimicry mean Pearson >= 0.4",
         "measured": f"{mim_all.mean():.3f} mean over {len(mim_all)} seeds; first seed {mim['value']} ({mim_name})",
         "met": "yes" if mim["lo"] >= 0.4 else ("in the estimate only" if mim_all.mean() >= 0.4 else "no")},
        {"target": "ASR word error rate reported", "measured": with_interval(wer[0], wer[1], wer[2]), "met": "yes"},
    ])


def plot_confusions(y_true, preds: dict, ax=None) -> "Figure":
    """Row-normalised confusion matrices (world's label x prediction) in ABAW order, one panel per entry."""
    from facelab.plotting import figure_axes

    fig, axes = figure_axes(ax, n=len(preds), figsize=(4.2 * len(preds), 4))
    K = len(ABAW_EXPRESSIONS)
    y = np.asarray(y_true)
    for a, (name, p) in zip(axes, preds.items()):
        C = np.zeros((K, K))
        np.add.at(C, (y, np.asarray(p)), 1)
        C = C / np.maximum(C.sum(1, keepdims=True), 1)
        a.imshow(C, cmap="Blues", vmin=0, vmax=1)
        a.grid(False)
        for i in range(K):
            for j in range(K):
                if C[i, j] >= 0.05:
                    a.text(j, i, f"{C[i, j]:.2f}", ha="center", va="center", fontsize=6,
                           color="white" if C[i, j] > 0.6 else "black")
        ticks = [SHORT[e] for e in ABAW_EXPRESSIONS]
        a.set_xticks(range(K), ticks, fontsize=7, rotation=90)
        a.set_yticks(range(K), ticks, fontsize=7)
        a.set(title=f"{name}\nF1 {expression_f1(y, p):.2f}", xlabel="predicted", ylabel="world's label")
    return fig


# --------------------------------------------------------------------------------------------- real corpora
def emotiefflib_status(model_name: str = "enet_b0_8_best_vgaf", path=None) -> str:
    """Whether the real EmotiEffLib weights are on this machine: the path they load from, or the loader's message
    saying what to download and where (``path`` default: ``$EMOTIEFFLIB_DIR``, then ``~/.emotiefflib``)."""
    from facelab.models.emotiefflib import EmotiEffLibModelMissing, emotiefflib_model_path

    path = path if path is not None else os.environ.get("EMOTIEFFLIB_DIR")
    try:
        return f"found: {emotiefflib_model_path(model_name, path)}"
    except EmotiEffLibModelMissing as exc:
        return f"absent: {exc}"


def affwild2_example(root=None, video: str | None = None) -> pd.DataFrame | str:
    """The first rows of one Aff-Wild2 video's labels when the corpus is on this machine (``root`` default
    ``$AFFWILD2_ROOT``), otherwise the loader's message saying what it expects."""
    from facelab.affect.loaders import load_affwild2
    from facelab.datasets import DatasetNotFoundError

    root = root if root is not None else os.environ.get("AFFWILD2_ROOT")
    if root is None:
        return "Aff-Wild2 is not on this machine: set AFFWILD2_ROOT to your licensed copy (see facelab.affect.loaders)"
    try:
        if video is None:
            from pathlib import Path

            files = sorted(Path(root).rglob("*.txt"))
            if not files:
                return f"no ABAW annotation file (*.txt) under {root}"
            video = files[0].stem
        return load_affwild2(root, video).head()
    except DatasetNotFoundError as exc:
        return str(exc)
