"""Chapter 12, *A canonical basis of preferences: from eigenfaces to what people want*: protocol, tables, figures.

The methods live in :mod:`facelab.preferences` (world, pipeline, Elo, DPO, Arena); this module holds what only the
chapter does with them.

* protocol: :func:`eigenface_spectrum` (PCA of rendered faces), :func:`run_pipeline` (reasons -> MiniLM ->
  clusters -> greedy categories -> rater x category matrix -> explained-share curves with rater-bootstrap
  intervals), :func:`controls` (epsilon and true-K sweeps and the K = 200 null world, with the planted parents
  as categories so that the sweep isolates the rater structure from the text clustering),
  :func:`finetune_study` (DPO on one category, per-category Elo before/after with bootstrap intervals),
  :func:`arena_study` (Chatbot Arena aggregate: models, not raters);
* tables: :func:`explained_table`, :func:`elo_table`;
* figures (``plot_x(..., ax=None) -> Figure``): :func:`plot_spectra`, :func:`plot_explained`, :func:`plot_elo_shift`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from facelab import preferences as pf

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["eigenface_spectrum", "run_pipeline", "candidate_sweep", "explained_table", "controls", "finetune_study", "elo_table",
           "arena_study", "plot_spectra", "plot_explained", "plot_elo_shift"]


def _axes(ax, figsize=(6, 4)):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    return ax.figure, ax


# --------------------------------------------------------------------------------------------- eigenfaces
def eigenface_spectrum(face_world, n_faces: int = 400, *, size: int = 32, K_max: int = 60, seed: int = 0,
                       nuisance: str = "mild") -> pd.Series:
    """Cumulative share of pixel variance explained by the first K eigenfaces of ``n_faces`` rendered faces
    (one image per identity, grey, ``size`` px): the spectrum the preference basis is compared with."""
    batch = face_world.sample(n_identities=n_faces, nuisance=nuisance,
                              generator=torch.Generator().manual_seed(seed))
    grey = torch.nn.functional.interpolate(batch.images.float().cpu().mean(1, keepdim=True), size=(size, size),
                                           mode="area").flatten(1).numpy()
    return pf.explained_variance_curve(grey, min(K_max, n_faces - 1)).rename("eigenfaces (pixels)")


# ----------------------------------------------------------------------------------------------- pipeline
def run_pipeline(world, *, n_candidates: int = 27, K: int = 21, n_boot: int = 200, nmf_Ks=(5, 10, 21),
                 n_init: int = 10, seed: int = 0, device="cpu") -> dict:
    """The paper's pipeline on ``world``; returns a dict with every intermediate result.

    Keys: ``texts`` (distinct reasons embedded), ``counts``, ``embeddings``, ``clusters`` (per distinct reason),
    ``ari`` (distinct reasons) and ``ari_mentions`` (every named reason), ``chosen`` (greedy order of candidate
    clusters), ``cluster_names`` (the planted category most of a cluster's mass belongs to),
    ``curves`` (:func:`facelab.preferences.bootstrap_curves` on the candidate clusters), ``fine`` (PCA of the rater
    x distinct reason matrix), ``X`` (rater x candidate cluster)."""
    c = world.comparisons
    R = c.reasons
    texts = sorted(R["text"].unique())
    index = pd.Series(np.arange(len(texts)), index=texts)
    text_id = index[R["text"]].to_numpy()
    counts = np.bincount(text_id, minlength=len(texts))
    parent_of_text = R.groupby("text")["parent"].first().reindex(texts).to_numpy()
    emb = pf.embed_reasons(texts, device=device)
    clusters = pf.cluster_reasons(emb, n_candidates, weights=counts, seed=seed, n_init=n_init)
    per_reason = clusters[text_id]
    chosen, _ = pf.select_categories(R["comparison"], per_reason, K, n_comparisons=len(c),
                                     n_categories=n_candidates)
    names = []
    for k in range(n_candidates):
        p = R["parent"].to_numpy()[per_reason == k]
        named = p[p >= 0]
        share_tail = np.mean(p < 0) if p.size else 1.0
        top = (world.category_names[np.bincount(named).argmax()] if named.size else "(idiosyncratic)")
        names.append(top if share_tail < 0.5 else f"(idiosyncratic) {top}" if named.size else "(idiosyncratic)")
    X = pf.rater_category_matrix(c.rater, R["comparison"], per_reason, len(world.weights), n_candidates,
                                 empty="drop")
    curves = pf.bootstrap_curves(c.rater, R["comparison"], per_reason, K, n_boot=n_boot, nmf_Ks=nmf_Ks,
                                 n_categories=n_candidates, seed=seed)
    Xf = pf.rater_category_matrix(c.rater, R["comparison"], text_id, len(world.weights), len(texts), empty="drop")
    fine = pf.explained_variance_curve(Xf, K).rename("variance explained (distinct reasons, PCA)")
    return {"texts": texts, "counts": counts, "embeddings": emb, "clusters": clusters,
            "ari": pf.cluster_recovery(parent_of_text, clusters),
            "ari_mentions": pf.cluster_recovery(R["parent"].to_numpy(), per_reason),
            "chosen": chosen, "cluster_names": names, "curves": curves, "fine": fine, "X": X,
            "text_id": text_id, "parent_of_text": parent_of_text, "n_init": n_init, "seed": seed}


def candidate_sweep(world, pipe: dict, n_candidates=(21, 24, 27, 30, 36), *, K: int = 21) -> pd.DataFrame:
    """Adjusted Rand index and share of comparisons covered by ``K`` greedy categories as the number of candidate
    clusters varies (same embeddings as ``pipe``): fewer candidates absorb the idiosyncratic reasons into real
    categories (coverage above 1 - epsilon), more candidates split categories (coverage below it)."""
    R = world.comparisons.reasons
    rows = []
    for M in n_candidates:
        cl = pf.cluster_reasons(pipe["embeddings"], M, weights=pipe["counts"], seed=pipe["seed"],
                                n_init=pipe["n_init"])
        cov = pf.coverage_curve(R["comparison"], cl[pipe["text_id"]], min(K, M), n_comparisons=len(world.comparisons),
                                n_categories=M).iloc[-1]
        rows.append({"candidate clusters": M, "adjusted Rand index": pf.cluster_recovery(pipe["parent_of_text"], cl),
                     f"share covered by {K} (%)": 100 * cov})
    return pd.DataFrame(rows).set_index("candidate clusters").round(3)


def explained_table(curves: pd.DataFrame, Ks=(1, 5, 10, 21), *, fine: pd.Series | None = None) -> pd.DataFrame:
    """Percent captured at selected K under each definition, ``"est [lo, hi]"`` cells."""
    from facelab.metrics import with_interval

    rows = {}
    for K in Ks:
        if K not in curves.index:
            continue
        r = curves.loc[K]
        row = {"share of comparisons covered (%)": with_interval(r.coverage, r.coverage_lo, r.coverage_hi,
                                                                 percent=True, digits=1),
               "variance explained, PCA (%)": with_interval(r.pca, r.pca_lo, r.pca_hi, percent=True, digits=1),
               "variance explained, NMF (%)": (with_interval(r.nmf, r.nmf_lo, r.nmf_hi, percent=True, digits=1)
                                               if np.isfinite(r.nmf) else "—")}
        if fine is not None and K in fine.index:
            row["variance explained, distinct reasons, PCA (%)"] = f"{100 * fine.loc[K]:.1f}"
        rows[K] = row
    return pd.DataFrame(rows).T.rename_axis("K")


# ----------------------------------------------------------------------------------------------- controls
def controls(*, epsilons=(0.0, 0.1, 0.2, 0.4), true_Ks=(5, 10, 21, 40), null_K: int = 200, K: int = 21,
             n_raters: int = 300, n_per_rater: int = 60, seed: int = 0) -> pd.DataFrame:
    """Coverage and PCA variance explained at ``K`` categories when the world plants ``epsilon`` idiosyncratic
    mass and ``true_K`` categories, plus a null world with ``null_K`` categories and dense raters (no low-rank
    structure). Categories are the planted parents (no text step), the matrix is rater x planted category."""
    rows = []

    def measure(label, eps, k_true, mean_active=2.5):
        w = pf.make_world(k_true, n_items=300, n_raters=n_raters, n_per_rater=n_per_rater, epsilon=eps,
                          mean_active=mean_active, seed=seed)
        R = w.comparisons.reasons
        k = min(K, k_true)
        cov = pf.coverage_curve(R["comparison"], R["parent"], k, n_comparisons=len(w.comparisons),
                                n_categories=k_true).iloc[-1]
        X = pf.rater_category_matrix(w.comparisons.rater, R["comparison"], R["parent"], n_raters, k_true,
                                     empty="drop")
        pca = pf.explained_variance_curve(X, min(k, min(X.shape))).iloc[-1]
        rows.append({"world": label, "epsilon": eps, "planted K": k_true, "K measured": k,
                     "share covered (%)": 100 * cov, "variance explained, PCA (%)": 100 * pca})

    for eps in epsilons:
        measure(f"epsilon sweep", eps, 21)
    for k_true in true_Ks:
        measure(f"true-K sweep", 0.1, k_true)
    measure("null world", 0.1, null_K, mean_active=40)
    return pd.DataFrame(rows).round(1)


# ---------------------------------------------------------------------------------------------- fine-tune
def finetune_study(world, category: int, *, n_judge: int = 60000, n_references: int = 3, n_boot: int = 100,
                   beta: float = 0.5, steps: int = 100, device="cpu", seed: int = 0) -> dict:
    """DPO on the comparisons whose reasons name ``category``; per-category Elo of the base and tuned policies
    (and ``n_references`` fixed reference policies) judged by the world's raters, with bootstrap intervals of the
    tuned - base difference over the judged comparisons."""
    K = world.K
    base = pf.GaussianEditPolicy(np.zeros(K), 1.0)
    z_w, z_l = pf.preference_pairs(world.comparisons, world.attributes, category)
    tuned = pf.dpo_update(base, z_w, z_l, beta=beta, steps=steps, device=device, seed=seed)
    rng = np.random.default_rng(seed + 11)
    refs = [pf.GaussianEditPolicy(rng.normal(0, 0.3, K), 1.0) for _ in range(n_references)]
    comps, named = pf.judge_policies([base, tuned, *refs], world.weights, n_judge, epsilon=world.epsilon,
                                     beta=world.meta.get("beta", 2.0), categories=world.categories, seed=seed + 5)
    n_pol = 2 + n_references
    member = np.zeros((n_judge, K), bool)
    for n, cats in enumerate(named):
        member[n, list(cats)] = True
    winner, loser = comps.winner, comps.loser

    def elos(idx):
        out = np.full((K, n_pol), np.nan)
        for k in range(K):
            sel = idx[member[idx, k]]
            try:
                out[k] = pf.to_elo(pf.bradley_terry(pf.win_matrix(winner[sel], loser[sel], n_pol)))
            except ValueError:
                pass
        return out

    est = elos(np.arange(n_judge))
    boot = np.stack([elos(rng.integers(0, n_judge, n_judge)) for _ in range(n_boot)])
    diff = boot[:, :, 1] - boot[:, :, 0]
    lo, hi = np.nanpercentile(diff, [2.5, 97.5], axis=0)
    table = pd.DataFrame({"Elo before (base)": est[:, 0], "Elo after (tuned)": est[:, 1],
                          "change": est[:, 1] - est[:, 0], "change_lo": lo, "change_hi": hi,
                          "judged comparisons": member.sum(0)}, index=world.category_names)
    table.index.name = "category"
    return {"table": table, "base": base, "tuned": tuned, "pairs": len(z_w), "category": category}


def elo_table(table: pd.DataFrame, *, highlight: int | None = None) -> pd.DataFrame:
    """Rounded per-category Elo table with the change as ``"est [lo, hi]"``."""
    from facelab.metrics import format_interval_columns

    out = table.copy()
    out[["Elo before (base)", "Elo after (tuned)"]] = out[["Elo before (base)", "Elo after (tuned)"]].round(0)
    return format_interval_columns(out, ["change"], digits=0)


# ---------------------------------------------------------------------------------------------------- arena
def arena_study(*, top: int = 10, max_rank: int = 10) -> dict:
    """Chatbot Arena aggregate: Bradley-Terry Elo (top models) and the low-rank structure of the model x model
    log-odds matrix. These are models compared by anonymous votes, not individual raters."""
    arena = pf.load_arena()
    scores = pf.arena_scores(arena)
    low = pf.arena_low_rank(arena, max_rank=max_rank)
    return {"arena": arena, "top": scores.head(top).round({"elo": 0}), "scores": scores, "low_rank": low}


# ---------------------------------------------------------------------------------------------------- figures
def plot_spectra(face_curve: pd.Series, rater_curves: dict, *, ax=None) -> "Figure":
    """Cumulative explained share vs number of components: eigenfaces (pixels) and raters (preferences)."""
    fig, ax = _axes(ax)
    ax.plot(face_curve.index, 100 * face_curve.to_numpy(), "k-", label=face_curve.name)
    for name, curve in rater_curves.items():
        ax.plot(curve.index, 100 * np.asarray(curve), marker=".", label=name)
    ax.axvline(21, color="grey", ls=":", lw=1)
    ax.set(xlabel="components K", ylabel="explained share (%)", ylim=(0, 101))
    ax.legend(fontsize=8)
    return fig


def plot_explained(curves: pd.DataFrame, *, fine: pd.Series | None = None, ax=None) -> "Figure":
    """Share of comparisons covered and variance explained (PCA) vs K with 95 % rater-bootstrap bands."""
    fig, ax = _axes(ax)
    K = curves.index.to_numpy()
    for m, label in (("coverage", "share of comparisons covered"), ("pca", "variance explained (PCA)")):
        ax.plot(K, 100 * curves[m], marker=".", label=label)
        ax.fill_between(K, 100 * curves[f"{m}_lo"], 100 * curves[f"{m}_hi"], alpha=0.25)
    nmf = curves["nmf"].dropna()
    if len(nmf):
        ax.errorbar(nmf.index, 100 * nmf, yerr=[100 * (nmf - curves.loc[nmf.index, "nmf_lo"]).clip(0),
                                                100 * (curves.loc[nmf.index, "nmf_hi"] - nmf).clip(0)],
                    fmt="s", label="variance explained (NMF)")
    if fine is not None:
        ax.plot(fine.index, 100 * fine, ls="--", label="variance explained (distinct reasons)")
    ax.axhspan(89, 91, color="grey", alpha=0.15, label="paper: > 89 % at K = 21")
    ax.set(xlabel="categories K", ylabel="%", ylim=(0, 101))
    ax.legend(fontsize=8)
    return fig


def plot_elo_shift(table: pd.DataFrame, *, category: str | None = None, ax=None) -> "Figure":
    """Per-category Elo change (tuned - base) with 95 % intervals; the tuned category highlighted."""
    fig, ax = _axes(ax, figsize=(7, 5))
    y = np.arange(len(table))
    colours = ["C3" if n == category else "C0" for n in table.index]
    ax.barh(y, table["change"], color=colours,
            xerr=[(table["change"] - table["change_lo"]).clip(0), (table["change_hi"] - table["change"]).clip(0)])
    ax.set_yticks(y, table.index, fontsize=8)
    for x in (-25, 25, 100):
        ax.axvline(x, color="grey", ls=":", lw=1)
    ax.set(xlabel="Elo change after DPO (tuned - base)")
    ax.invert_yaxis()
    return fig
