"""Chapter 11 (``notebooks/11_micro_expressions_physiology.ipynb``): micro-expressions meet physiology.

The chapter's protocol, tables and figures. The methods (spotting, flow, recognition networks, fusion, LOSO) and
the synthetic MMME-like corpus live in :mod:`facelab.micro`; this module runs them over a corpus and reports.

Tables (with 95 % intervals: a bootstrap over videos for spotting F1, a stratified bootstrap over expressions for
UF1 / UAR, Wilson for accuracy):

- :func:`spot_corpus`: MDMD and LBP spotting in every smooth trial, MEGC table with ``F1_lo`` / ``F1_hi``;
- :func:`spotting_comparison`: paired bootstrap (over videos) of one spotter's F1 minus the other's;
- :func:`spotting_by_difficulty`: the spotting tables of the easy and realistic corpora side by side;
- :func:`recognition_table`: UF1, UAR and accuracy of each model's pooled LOSO predictions, with intervals;
- :func:`fusion_comparison`: each fusion against the best single modality (paired bootstrap of the UF1 difference);
- :func:`coupling_ablation`: UF1 per modality and fusion as the physiology coupling varies, with the fusion gains'
  paired-bootstrap intervals.

Figures (``plot_x(..., ax=None) -> Figure``): :func:`plot_trial`, :func:`plot_spotting`, :func:`plot_ablation`,
:func:`plot_recognition`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from facelab.metrics.intervals import bootstrap_ci, paired_bootstrap, wilson_interval
from facelab.micro.corpus import with_physiology
from facelab.micro.recognition import LINEAR_NAMES, MultimodalData, loso_linear
from facelab.micro.spotting import lbp_histograms, lbp_signal, mdmd_signal, megc_evaluate, spot_intervals

__all__ = ["PUBLISHED", "spotting_signals", "spot_corpus", "spotting_comparison", "spotting_by_difficulty",
           "unweighted_scores", "recognition_table", "fusion_comparison", "coupling_ablation", "plot_trial",
           "plot_spotting", "plot_ablation", "plot_recognition"]

#: Published reference numbers (METHODS.md): MEGC 2020 MDMD baseline and the MEs + EEG corpus.
PUBLISHED = pd.DataFrame([
    {"source": "MEGC 2020 baseline (MDMD)", "data": "CAS(ME)^2", "metric": "spotting F1 (overall)", "value": 0.0376},
    {"source": "MEGC 2020 baseline (MDMD)", "data": "SAMM-LV", "metric": "spotting F1 (overall)", "value": 0.0445},
    {"source": "MEs + EEG, cross-modal attention", "data": "MEs-EEG (67 subjects)", "metric": "5-class accuracy",
     "value": 0.8046},
    {"source": "MEs + EEG, cross-modal attention", "data": "MEs-EEG", "metric": "gain over MEs alone (points)",
     "value": 9.83},
    {"source": "MEs + EEG, cross-modal attention", "data": "MEs-EEG", "metric": "gain over EEG alone (points)",
     "value": 6.94},
])

_KINDS = ("micro", "macro", "overall")
_SPOTTERS = ("mdmd", "lbp")
_LBP_GRID = 6  # lbp_signal's default block grid


# --------------------------------------------------------------------------------------------------------------
# spotting
# --------------------------------------------------------------------------------------------------------------
def _video_id(trial) -> str:
    return f"s{trial.subject:02d}_t{trial.trial:02d}"


def _smooth_trials(corpus):
    trials = [t for t in corpus.trials if getattr(t, "spot", t.levels > 1)]
    if not trials:
        raise ValueError("no smoothly rendered trial to spot in (CorpusConfig.full_video_trials = 0)")
    return trials


def spotting_signals(trial, k_micro: int, k_macro: int) -> dict[str, np.ndarray]:
    """MDMD and LBP scores of one trial's clip at the micro and macro scales."""
    hists = lbp_histograms(trial.crops, _LBP_GRID)  # the LBP histograms do not depend on the scale: computed once
    return {"mdmd_micro": mdmd_signal(trial.crops, trial.regions, k_micro),
            "mdmd_macro": mdmd_signal(trial.crops, trial.regions, k_macro),
            "lbp_micro": lbp_signal(trial.crops, k_micro, grid=_LBP_GRID, hists=hists),
            "lbp_macro": lbp_signal(trial.crops, k_macro, grid=_LBP_GRID, hists=hists)}


def _per_video_counts(pred: pd.DataFrame, truth: pd.DataFrame, videos: Sequence[str], method: str) -> np.ndarray:
    """(n_videos, 3 kinds, 3) array of TP, n_pred, n_true per video (kinds: micro, macro, overall)."""
    p = pred[pred["method"] == method]
    out = np.zeros((len(videos), len(_KINDS), 3))
    for i, v in enumerate(videos):
        r = megc_evaluate(p[p["video"] == v], truth[truth["video"] == v])
        out[i] = r.loc[list(_KINDS), ["TP", "n_pred", "n_true"]].to_numpy(float)
    return out


def _f1_from_counts(counts: np.ndarray) -> np.ndarray:
    """MEGC F1 = 2 TP / (n_pred + n_true) per kind, from summed per-video counts."""
    tp, n_pred, n_true = counts.sum(0).T
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_pred + n_true > 0, 2 * tp / np.maximum(n_pred + n_true, 1e-12), np.nan)


def spot_corpus(corpus, k_micro: int | None = None, k_macro: int | None = None, p: float = 0.4,
                progress=None, *, n_boot: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Spot micro and macro intervals with MDMD and LBP in every smooth-rendered trial; MEGC table per method.

    Default scales: ``k`` = half the mean micro (macro) length in frames, as in the MEGC baselines. Returns the
    results table (rows method x kind; ``F1_lo`` / ``F1_hi``: 95 % bootstrap interval over videos, ``seed``) and all
    predicted intervals. Spotting itself is deterministic (OpenCV flow and LBP on the CPU).
    """
    trials = _smooth_trials(corpus)
    ev = corpus.events
    lengths = (ev["offset"] - ev["onset"] + 1).groupby(ev["kind"]).mean()
    k_micro = k_micro or max(2, int(round(lengths.get("micro", 12) / 2)))
    k_macro = k_macro or max(k_micro + 2, int(round(lengths.get("macro", 36) / 2)))
    preds, truths = [], []
    for tr in (progress(trials, desc="spotting") if progress else trials):
        vid = _video_id(tr)
        sig = spotting_signals(tr, k_micro, k_macro)
        for method in _SPOTTERS:
            for kind, k in (("micro", k_micro), ("macro", k_macro)):
                preds.append(spot_intervals(sig[f"{method}_{kind}"], k, kind, p).assign(video=vid, method=method))
        truths.append(tr.events[["kind", "onset", "offset"]].assign(video=vid))
    pred, truth = pd.concat(preds, ignore_index=True), pd.concat(truths, ignore_index=True)
    videos = [_video_id(t) for t in trials]
    rows = []
    for method in _SPOTTERS:
        r = megc_evaluate(pred[pred["method"] == method], truth).reset_index()
        counts = _per_video_counts(pred, truth, videos, method)
        ci = bootstrap_ci(_f1_from_counts, counts, n_boot=n_boot, seed=seed) if len(videos) > 1 else None
        r["F1_lo"] = np.nan if ci is None else np.atleast_1d(ci.lo)
        r["F1_hi"] = np.nan if ci is None else np.atleast_1d(ci.hi)
        rows.append(r.assign(method=method.upper()))
    table = pd.concat(rows).set_index(["method", "kind"])
    table.attrs.update(k_micro=k_micro, k_macro=k_macro, n_videos=len(trials))
    return table, pred


def spotting_comparison(corpus, pred: pd.DataFrame, a: str = "LBP", b: str = "MDMD", *, n_boot: int = 1000,
                        seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """Spotting F1 of ``a`` minus ``b`` per kind, with a paired bootstrap over the spotted videos.

    Both spotters are scored on the same videos, so resampling videos keeps the pairing; with few videos (the quick
    corpus spots one per subject) the interval is wide and the verdict usually "no significant difference".
    """
    trials = _smooth_trials(corpus)
    videos = [_video_id(t) for t in trials]
    truth = pd.concat([t.events[["kind", "onset", "offset"]].assign(video=_video_id(t)) for t in trials],
                      ignore_index=True)
    ca, cb = (_per_video_counts(pred, truth, videos, m.lower()) for m in (a, b))
    rows = []
    for j, kind in enumerate(_KINDS):
        def f1(_, counts, j=j):
            return float(_f1_from_counts(counts)[j])

        r = paired_bootstrap(f1, np.zeros(len(videos)), ca, cb, n_boot=n_boot, seed=seed, alpha=alpha)
        rows.append({"kind": kind, f"F1 {a}": f1(None, ca), f"F1 {b}": f1(None, cb), "difference": r.delta,
                     "difference_lo": r.lo, "difference_hi": r.hi, "p_value": r.p_value,
                     "verdict": _verdict(r, a, b, alpha)})
    out = pd.DataFrame(rows).set_index("kind")
    out.attrs["n_videos"] = len(videos)
    return out


def spotting_by_difficulty(tables: dict[str, pd.DataFrame], kind: str = "overall") -> pd.DataFrame:
    """One row per (difficulty, method): F1 of ``kind`` with its interval, precision, recall and counts.

    ``tables``: ``{"easy": spot_table, "realistic": spot_table}`` from :func:`spot_corpus`; also lists the
    published MDMD range (CAS(ME)^2, SAMM-LV) for reference in ``in published range x10`` (F1 within ten times the
    published numbers, 0.03-0.3 overall: the band the realistic corpus aims at).
    """
    rows = []
    for name, t in tables.items():
        for method in t.index.get_level_values(0).unique():
            r = t.loc[(method, kind)]
            rows.append({"corpus": name, "method": method, "F1": r["F1"], "F1_lo": r["F1_lo"], "F1_hi": r["F1_hi"],
                         "precision": r["precision"], "recall": r["recall"], "TP": int(r["TP"]),
                         "n_pred": int(r["n_pred"]), "n_true": int(r["n_true"]),
                         "videos": t.attrs.get("n_videos", np.nan),
                         "in published range x10": bool(0.03 <= r["F1"] <= 0.3)})
    return pd.DataFrame(rows).set_index(["corpus", "method"])


def _verdict(r, a: str, b: str, alpha: float) -> str:
    if r.p_value >= alpha:
        return "no significant difference"
    return f"{a} better" if r.delta > 0 else f"{b} better"


# --------------------------------------------------------------------------------------------------------------
# recognition
# --------------------------------------------------------------------------------------------------------------
def unweighted_scores(y_true, y_pred, n_classes: int) -> np.ndarray:
    """``[UF1, UAR]`` of pooled predictions (same values as :func:`facelab.metrics.uf1` / :func:`~facelab.metrics.uar`
    with ``labels=range(n_classes)``), in NumPy so that a bootstrap can call it thousands of times."""
    y_true, y_pred = np.asarray(y_true, int), np.asarray(y_pred, int)
    cm = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(1), cm.sum(0)
    # per class F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (support + predicted) and recall = TP / support, averaged over
    # the classes where they are defined (np.nanmean's arithmetic: the undefined ones count as 0 in the sum)
    has_f1, has_recall = support + predicted > 0, support > 0
    f1 = np.divide(2 * tp, support + predicted, out=np.zeros(n_classes), where=has_f1)
    recall = np.divide(tp, support, out=np.zeros(n_classes), where=has_recall)
    n_f1, n_recall = has_f1.sum(), has_recall.sum()
    return np.array([f1.sum() / n_f1 if n_f1 else np.nan, recall.sum() / n_recall if n_recall else np.nan])


def recognition_table(data: MultimodalData, probs: dict[str, np.ndarray], names: dict | None = None, *,
                      n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """UF1, UAR and accuracy of each model's pooled LOSO predictions with their 95 % intervals.

    UF1 / UAR: percentile bootstrap over expressions, stratified by true class (every resample keeps every class);
    accuracy: Wilson. ``probs`` and ``names`` as returned / used by :func:`facelab.micro.loso_evaluate` and
    :func:`~facelab.micro.loso_linear`.
    """
    names = names or {}
    C = len(data.classes)
    rows = []
    for k, p in probs.items():
        pred = p.argmax(1)
        ci = bootstrap_ci(lambda y, q: unweighted_scores(y, q, C), data.y, pred, n_boot=n_boot, seed=seed,
                          alpha=alpha, strata=data.y)
        correct = int((pred == data.y).sum())
        lo, hi = wilson_interval(correct, len(pred), alpha)
        rows.append({"model": names.get(k, k), "UF1": ci.estimate[0], "UF1_lo": ci.lo[0], "UF1_hi": ci.hi[0],
                     "UAR": ci.estimate[1], "UAR_lo": ci.lo[1], "UAR_hi": ci.hi[1],
                     "accuracy": correct / len(pred), "accuracy_lo": lo, "accuracy_hi": hi})
    return pd.DataFrame(rows).set_index("model")


def fusion_comparison(data: MultimodalData, probs: dict[str, np.ndarray], singles: Sequence[str],
                      fusions: Sequence[str], names: dict | None = None, *, n_boot: int = 1000, seed: int = 0,
                      alpha: float = 0.05) -> pd.DataFrame:
    """Each fusion's UF1 minus the best single modality's (chosen by UF1 on the same data), paired bootstrap.

    Both are scored on the same expressions; the resamples are stratified by true class. The best single modality
    is picked on the data it is compared on, which favours it slightly, so a "fusion better" verdict is conservative.
    """
    names = names or {}
    C = len(data.classes)
    uf1 = {k: unweighted_scores(data.y, probs[k].argmax(1), C)[0] for k in [*singles, *fusions]}
    best = max(singles, key=lambda k: uf1[k])
    rows = []
    for f in fusions:
        r = paired_bootstrap(lambda y, q: unweighted_scores(y, q, C)[0], data.y, probs[f].argmax(1),
                             probs[best].argmax(1), n_boot=n_boot, seed=seed, alpha=alpha, strata=data.y)
        rows.append({"fusion": names.get(f, f), "best single": names.get(best, best), "UF1 fusion": uf1[f],
                     "UF1 best single": uf1[best], "difference": r.delta, "difference_lo": r.lo,
                     "difference_hi": r.hi, "p_value": r.p_value,
                     "verdict": _verdict(r, "fusion", "single", alpha)})
    return pd.DataFrame(rows).set_index("fusion")


def coupling_ablation(corpus, scales: Sequence[float] = (0.0, 0.3, 1.0, 2.0), progress=None, *,
                      n_boot: int = 500, seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """UF1 of each modality and of late / early fusion (logistic LOSO) when the EEG and peripheral couplings are
    multiplied by each scale (video fixed): when does fusion stop helping?

    The physiology is re-simulated from the corpus seed (:func:`facelab.micro.corpus.with_physiology`). One row per
    scale; every UF1 column ``X`` has its 95 % bootstrap interval in ``X_lo`` / ``X_hi`` (stratified by class), and
    ``late fusion gain`` / ``early fusion gain`` (fusion UF1 minus the best single modality's) their paired-bootstrap
    intervals and p-values (``... p``). Resampling seed: ``seed``.
    """
    base = corpus.config
    singles = ("video", "eeg", "periph")
    fusions = {"late fusion (all)": "late fusion gain", "early fusion (concat)": "early fusion gain"}
    flow = corpus.video_features()  # the videos do not change with the coupling: their flow is computed once
    rows = []
    for s in (progress(scales, desc="ablation") if progress else scales):
        c = with_physiology(corpus, eeg_coupling=base.eeg_coupling * s, periph_coupling=base.periph_coupling * s)
        data = MultimodalData.from_corpus(c, video_flow=flow)
        _, probs = loso_linear(data)
        table = recognition_table(data, probs, LINEAR_NAMES, n_boot=n_boot, seed=seed, alpha=alpha)
        row = {}
        for model in table.index:
            row.update({model: table.loc[model, "UF1"], f"{model}_lo": table.loc[model, "UF1_lo"],
                        f"{model}_hi": table.loc[model, "UF1_hi"]})
        row["best single"] = max(table.loc[LINEAR_NAMES[k], "UF1"] for k in singles)
        gains = fusion_comparison(data, probs, singles, list(fusions), n_boot=n_boot, seed=seed, alpha=alpha)
        for f, label in fusions.items():
            g = gains.loc[f]
            row.update({label: g["difference"], f"{label}_lo": g["difference_lo"],
                        f"{label}_hi": g["difference_hi"], f"{label} p": g["p_value"]})
        rows.append(pd.Series(row, name=s))
    out = pd.DataFrame(rows)
    out.index.name = "physiology coupling scale"
    return out


# --------------------------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------------------------
def plot_trial(corpus, index: int = 0, channels: Sequence[str] = ("Fp1", "Fz", "C3", "Pz", "Oz"), ax=None):
    """Video strip (neutral, onset, apex, offset of the first expressions), EEG with the annotations, and the
    ECG / PPG / RSP / EDA panels of trial ``index``.

    A multi-panel layout: ``ax`` may be a :class:`~matplotlib.figure.Figure` (or SubFigure) to draw into, or None for
    a new figure.
    """
    import matplotlib.pyplot as plt

    tr = corpus.trials[index]
    s = next(s for s in corpus.sessions if s.subject == tr.subject)
    raw = s.raw
    sf = raw.info["sfreq"]
    t0, t1 = tr.start_s, tr.start_s + corpus.config.trial_s
    i0, i1 = int(t0 * sf), int(t1 * sf)
    t = raw.times[i0:i1]
    fig = plt.figure(figsize=(11, 10)) if ax is None else ax
    gs = fig.add_gridspec(7, 6, height_ratios=[1.3, 2.2, 0.8, 0.8, 0.8, 0.8, 0.8], hspace=0.55)
    shown = [(0, "neutral")]
    for ev in tr.events.head(2).itertuples():
        shown += [(ev.onset, f"{ev.kind} onset"), (ev.apex, f"apex ({ev.emotion})")]
    frames = tr.frames if tr.frames is not None else np.repeat(tr.crops[:, None], 3, axis=1)
    for j, (f, title) in enumerate(shown[:6]):
        a = fig.add_subplot(gs[0, j])
        a.imshow(frames[f].transpose(1, 2, 0))
        a.set_title(f"{title}\nframe {f}", fontsize=8)
        a.axis("off")
    a = fig.add_subplot(gs[1, :])
    data = raw.get_data(picks=list(channels))[:, i0:i1] * 1e6
    for k, ch in enumerate(channels):
        a.plot(t, data[k] - 150 * k, lw=0.6)
    a.set_yticks([-150 * k for k in range(len(channels))], list(channels))
    colours = {"micro": "tab:red", "macro": "tab:orange", "blink": "tab:gray"}
    for on, du, de in zip(raw.annotations.onset, raw.annotations.duration, raw.annotations.description):
        kind = de.split("/")[0]
        if kind in colours and on < t1 and on + du > t0:
            a.axvspan(on, on + du, color=colours[kind], alpha=0.25, lw=0)
    a.set_title("EEG (uV; red: micro, orange: macro, grey: blinks; the video spans "
                f"{tr.video_start_s:.0f}-{tr.video_start_s + tr.n_frames / tr.fps:.0f} s)", fontsize=9)
    units = {"ECG": ("mV", 1e3), "PPG": ("a.u.", 1), "RSP": ("a.u.", 1), "EDA": ("uS", 1e6), "SKT": ("degC", 1)}
    for r, ch in enumerate(units, start=2):
        a2 = fig.add_subplot(gs[r, :], sharex=a)
        u, scale = units[ch]
        a2.plot(t, raw.get_data(picks=[ch])[0, i0:i1] * scale, lw=0.7, color="k")
        a2.set_ylabel(f"{ch}\n({u})", fontsize=8)
        for ev in tr.events.itertuples():
            a2.axvline(tr.video_start_s + ev.onset / tr.fps, color=colours[ev.kind], lw=1)
    a2.set_xlabel("session time (s)")
    fig.suptitle(f"subject {tr.subject}, trial {tr.trial}: target emotion '{tr.emotion}'", y=0.93)
    return fig


def plot_spotting(corpus, pred: pd.DataFrame, index: int = 0, k_micro: int = 6, k_macro: int = 18, ax=None):
    """Flow-based scores of one smooth trial with ground truth (shaded) and spotted intervals (bars).

    ``ax``: two Axes (MDMD, LBP), or None for a new figure.
    """
    import matplotlib.pyplot as plt

    tr = _smooth_trials(corpus)[index]
    vid = _video_id(tr)
    sig = spotting_signals(tr, k_micro, k_macro)
    if ax is None:
        fig, axes = plt.subplots(2, 1, figsize=(11, 5), sharex=True)
    else:
        axes = list(np.ravel(ax))
        if len(axes) != 2:
            raise ValueError(f"plot_spotting draws two panels (MDMD, LBP); got {len(axes)} Axes")
        fig = axes[0].figure
    for a, method in zip(axes, _SPOTTERS):
        for kind, c in (("micro", "tab:red"), ("macro", "tab:orange")):
            s = sig[f"{method}_{kind}"]
            a.plot(s / (s.max() + 1e-12), color=c, label=f"{method.upper()} score, k for {kind}")
        for ev in tr.events.itertuples():
            a.axvspan(ev.onset, ev.offset, color="tab:red" if ev.kind == "micro" else "tab:orange", alpha=0.2)
        for b in tr.blinks:
            a.axvline(b, color="grey", ls=":", lw=1)
        for on, off in getattr(tr, "speech", np.zeros((0, 2), int)):
            a.axvspan(on, off, ymin=0.95, ymax=1.0, color="tab:blue", alpha=0.5, lw=0)
        p = pred[(pred["video"] == vid) & (pred["method"] == method)]
        for row in p.itertuples():
            a.hlines(-0.08 if row.kind == "micro" else -0.16, row.onset, row.offset,
                     color="tab:red" if row.kind == "micro" else "tab:orange", lw=4)
        a.set_ylabel("normalised score")
        a.legend(fontsize=8, loc="upper right")
    axes[-1].set_xlabel("frame (shaded: ground truth; bars: spotted; dotted: blinks; blue top band: talking)")
    return fig


def plot_recognition(table: pd.DataFrame, metric: str = "UF1", chance: float | None = None, ax=None):
    """Forest plot of one metric per model with its 95 % interval (rows of :func:`recognition_table`)."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(table) + 1))
    else:
        fig = ax.figure
    y = np.arange(len(table))[::-1]
    v = table[metric].to_numpy(float)
    err = np.stack([v - table[f"{metric}_lo"].to_numpy(float), table[f"{metric}_hi"].to_numpy(float) - v])
    ax.errorbar(v, y, xerr=err, fmt="o", capsize=3)
    ax.set_yticks(y, list(table.index))
    if chance is not None:
        ax.axvline(chance, color="grey", ls=":", label="chance")
        ax.legend(fontsize=8)
    ax.set_xlabel(f"LOSO {metric} (95 % bootstrap interval)")
    return fig


def plot_ablation(ablation: pd.DataFrame, ax=None):
    """UF1 per modality and for the fusions against the physiology coupling scale (bands: 95 % intervals)."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 4))
    else:
        fig = ax.figure
    for col, style in (("video (logistic)", "-o"), ("EEG (logistic)", "-o"), ("peripheral (logistic)", "-o"),
                       ("late fusion (all)", "-s"), ("early fusion (concat)", "--s")):
        (line,) = ax.plot(ablation.index, ablation[col], style, label=col)
        if f"{col}_lo" in ablation and f"{col}_hi" in ablation:
            ax.fill_between(ablation.index, ablation[f"{col}_lo"], ablation[f"{col}_hi"], color=line.get_color(),
                            alpha=0.08, lw=0)
    ax.axhline(0.2, color="grey", ls=":", label="chance (5 classes)")
    ax.set_xlabel("EEG and peripheral coupling (x default)")
    ax.set_ylabel("LOSO UF1")
    ax.legend(fontsize=8)
    return fig
