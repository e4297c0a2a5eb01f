"""The chapter's experiments and figures: spotting over a corpus, the coupling ablation, trial plots, published
numbers. Thin wrappers over :mod:`facelab.micro.spotting`, :mod:`facelab.micro.recognition` and the corpus."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from facelab.micro.recognition import MultimodalData, loso_linear
from facelab.micro.spotting import lbp_signal, mdmd_signal, megc_evaluate, spot_intervals

__all__ = ["PUBLISHED", "spotting_signals", "spot_corpus", "coupling_ablation", "plot_trial", "plot_spotting",
           "plot_ablation"]

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


def spotting_signals(trial, k_micro: int, k_macro: int) -> dict[str, np.ndarray]:
    """MDMD and LBP scores of one trial's clip at the micro and macro scales."""
    return {"mdmd_micro": mdmd_signal(trial.crops, trial.regions, k_micro),
            "mdmd_macro": mdmd_signal(trial.crops, trial.regions, k_macro),
            "lbp_micro": lbp_signal(trial.crops, k_micro), "lbp_macro": lbp_signal(trial.crops, k_macro)}


def spot_corpus(corpus, k_micro: int | None = None, k_macro: int | None = None, p: float = 0.4,
                progress=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Spot micro and macro intervals with MDMD and LBP in every smooth-rendered trial; MEGC table per method.

    Default scales: ``k`` = half the mean micro (macro) length in frames, as in the MEGC baselines. Returns the
    results table (rows method x kind) and all predicted intervals.
    """
    trials = [t for t in corpus.trials if t.levels > 1]
    if not trials:
        raise ValueError("no smoothly rendered trial to spot in (CorpusConfig.full_video_trials = 0)")
    ev = corpus.events
    lengths = (ev["offset"] - ev["onset"] + 1).groupby(ev["kind"]).mean()
    k_micro = k_micro or max(2, int(round(lengths.get("micro", 12) / 2)))
    k_macro = k_macro or max(k_micro + 2, int(round(lengths.get("macro", 36) / 2)))
    preds, truths = [], []
    for tr in (progress(trials, desc="spotting") if progress else trials):
        vid = f"s{tr.subject:02d}_t{tr.trial:02d}"
        sig = spotting_signals(tr, k_micro, k_macro)
        for method in ("mdmd", "lbp"):
            for kind, k in (("micro", k_micro), ("macro", k_macro)):
                preds.append(spot_intervals(sig[f"{method}_{kind}"], k, kind, p).assign(video=vid, method=method))
        truths.append(tr.events[["kind", "onset", "offset"]].assign(video=vid))
    pred, truth = pd.concat(preds, ignore_index=True), pd.concat(truths, ignore_index=True)
    rows = []
    for method in ("mdmd", "lbp"):
        r = megc_evaluate(pred[pred["method"] == method], truth)
        rows.append(r.reset_index().assign(method=method.upper()))
    table = pd.concat(rows).set_index(["method", "kind"])
    table.attrs.update(k_micro=k_micro, k_macro=k_macro, n_videos=len(trials))
    return table, pred


def coupling_ablation(corpus, scales: Sequence[float] = (0.0, 0.3, 1.0, 2.0), progress=None) -> pd.DataFrame:
    """UF1 of each modality and of late / early fusion (logistic LOSO) when the EEG and peripheral couplings are
    multiplied by each scale (video fixed): when does fusion stop helping?"""
    from facelab.micro.corpus import with_physiology

    base = corpus.config
    rows = []
    for s in (progress(scales, desc="ablation") if progress else scales):
        c = with_physiology(corpus, eeg_coupling=base.eeg_coupling * s, periph_coupling=base.periph_coupling * s)
        table, _ = loso_linear(MultimodalData.from_corpus(c))
        rows.append(table["UF1"].rename(s))
    out = pd.DataFrame(rows)
    out.index.name = "physiology coupling scale"
    single = out[["video (logistic)", "EEG (logistic)", "peripheral (logistic)"]]
    out["best single"] = single.max(axis=1)
    out["late fusion gain"] = out["late fusion (all)"] - out["best single"]
    return out


def plot_trial(corpus, index: int = 0, channels: Sequence[str] = ("Fp1", "Fz", "C3", "Pz", "Oz")):
    """Video strip (neutral, onset, apex, offset of the first expressions), EEG with the annotations, and the
    ECG / PPG / RSP / EDA panels of trial ``index``."""
    import matplotlib.pyplot as plt

    tr = corpus.trials[index]
    s = next(s for s in corpus.sessions if s.subject == tr.subject)
    raw = s.raw
    sf = raw.info["sfreq"]
    t0, t1 = tr.start_s, tr.start_s + corpus.config.trial_s
    i0, i1 = int(t0 * sf), int(t1 * sf)
    t = raw.times[i0:i1]
    fig = plt.figure(figsize=(11, 10))
    gs = fig.add_gridspec(7, 6, height_ratios=[1.3, 2.2, 0.8, 0.8, 0.8, 0.8, 0.8], hspace=0.55)
    shown = [(0, "neutral")]
    for ev in tr.events.head(2).itertuples():
        shown += [(ev.onset, f"{ev.kind} onset"), (ev.apex, f"apex ({ev.emotion})")]
    frames = tr.frames if tr.frames is not None else np.repeat(tr.crops[:, None], 3, axis=1)
    for j, (f, title) in enumerate(shown[:6]):
        ax = fig.add_subplot(gs[0, j])
        ax.imshow(frames[f].transpose(1, 2, 0))
        ax.set_title(f"{title}\nframe {f}", fontsize=8)
        ax.axis("off")
    ax = fig.add_subplot(gs[1, :])
    data = raw.get_data(picks=list(channels))[:, i0:i1] * 1e6
    for k, ch in enumerate(channels):
        ax.plot(t, data[k] - 150 * k, lw=0.6)
    ax.set_yticks([-150 * k for k in range(len(channels))], list(channels))
    colours = {"micro": "tab:red", "macro": "tab:orange", "blink": "tab:gray"}
    for on, du, de in zip(raw.annotations.onset, raw.annotations.duration, raw.annotations.description):
        kind = de.split("/")[0]
        if kind in colours and on < t1 and on + du > t0:
            ax.axvspan(on, on + du, color=colours[kind], alpha=0.25, lw=0)
    ax.set_title("EEG (uV; red: micro, orange: macro, grey: blinks; the video spans "
                 f"{tr.video_start_s:.0f}-{tr.video_start_s + tr.n_frames / tr.fps:.0f} s)", fontsize=9)
    units = {"ECG": ("mV", 1e3), "PPG": ("a.u.", 1), "RSP": ("a.u.", 1), "EDA": ("uS", 1e6), "SKT": ("degC", 1)}
    for r, ch in enumerate(units, start=2):
        ax2 = fig.add_subplot(gs[r, :], sharex=ax)
        u, scale = units[ch]
        ax2.plot(t, raw.get_data(picks=[ch])[0, i0:i1] * scale, lw=0.7, color="k")
        ax2.set_ylabel(f"{ch}\n({u})", fontsize=8)
        for ev in tr.events.itertuples():
            ax2.axvline(tr.video_start_s + ev.onset / tr.fps, color=colours[ev.kind], lw=1)
    ax2.set_xlabel("session time (s)")
    fig.suptitle(f"subject {tr.subject}, trial {tr.trial}: target emotion '{tr.emotion}'", y=0.93)
    return fig


def plot_spotting(corpus, pred: pd.DataFrame, index: int = 0, k_micro: int = 6, k_macro: int = 18):
    """Flow-based scores of one smooth trial with ground truth (shaded) and spotted intervals (bars)."""
    import matplotlib.pyplot as plt

    tr = [t for t in corpus.trials if t.levels > 1][index]
    vid = f"s{tr.subject:02d}_t{tr.trial:02d}"
    sig = spotting_signals(tr, k_micro, k_macro)
    fig, axes = plt.subplots(2, 1, figsize=(11, 5), sharex=True)
    for ax, method in zip(axes, ("mdmd", "lbp")):
        for kind, c in (("micro", "tab:red"), ("macro", "tab:orange")):
            s = sig[f"{method}_{kind}"]
            ax.plot(s / (s.max() + 1e-12), color=c, label=f"{method.upper()} score, k for {kind}")
        for ev in tr.events.itertuples():
            ax.axvspan(ev.onset, ev.offset, color="tab:red" if ev.kind == "micro" else "tab:orange", alpha=0.2)
        for b in tr.blinks:
            ax.axvline(b, color="grey", ls=":", lw=1)
        p = pred[(pred["video"] == vid) & (pred["method"] == method)]
        for row in p.itertuples():
            ax.hlines(-0.08 if row.kind == "micro" else -0.16, row.onset, row.offset,
                      color="tab:red" if row.kind == "micro" else "tab:orange", lw=4)
        ax.set_ylabel("normalised score")
        ax.legend(fontsize=8, loc="upper right")
    axes[-1].set_xlabel("frame (shaded: ground truth; bars: spotted; dotted: blinks)")
    return fig


def plot_ablation(ablation: pd.DataFrame):
    """UF1 per modality and for the fusions against the physiology coupling scale."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for col, style in (("video (logistic)", "-o"), ("EEG (logistic)", "-o"), ("peripheral (logistic)", "-o"),
                       ("late fusion (all)", "-s"), ("early fusion (concat)", "--s")):
        ax.plot(ablation.index, ablation[col], style, label=col)
    ax.axhline(0.2, color="grey", ls=":", label="chance (5 classes)")
    ax.set_xlabel("EEG and peripheral coupling (x default)")
    ax.set_ylabel("LOSO UF1")
    ax.legend(fontsize=8)
    return fig
