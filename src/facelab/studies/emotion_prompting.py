"""Chapter 10, *Asking a language model what someone feels: set-of-vision-text prompting*: protocol, tables, figures.

The method lives in :mod:`facelab.prompting` (scenes, AU regressor, prompts, scorers) and the language models in
:mod:`facelab.models.language`; this module holds what only the chapter does with them.

* protocol: :func:`make_dataset` (scenes per tier, face readings, AU regressor, every prompt of the ladder),
  :func:`minilm_results` and :func:`gemma_results` (one row per scene x variant, raw and calibrated predictions),
  :func:`vision_llm_results` (a user's vision LLM on the marked images, full profile);
* tables: :func:`ladder_table` (accuracy per rung and tier with Wilson intervals), :func:`gain_table` (paired
  bootstrap of full SoVTP minus face only, per tier), :func:`bias_table` (share of each predicted label before and
  after calibration), :func:`calibration_accuracy` (one rung, raw vs calibrated, Wilson intervals),
  :func:`failure_cases` (one error per scene kind first) and :func:`error_sources` (every error: did the cues
  mislead, did they point to the felt emotion, is the answer the label calibration favours);
* figures: :func:`plot_examples` (one marked scene per kind), :func:`plot_ladder`, :func:`plot_bias`, and
  :func:`facelab.prompting.draw_marks` for the marked image.

Gemma scores are cached by prompt content hash (``data/cache/prompting/``); the quick profile's are committed as
``data/models/prompting_gemma_scores`` (``python -m facelab.studies.emotion_prompting`` recomputes and saves them),
so a clean checkout loads the model for the live examples but does not score 250 prompts again.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from facelab import prompting as pr
from facelab.metrics import paired_bootstrap, wilson_interval

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["MODEL_KEY", "SCORE_CHECKPOINT", "make_dataset", "minilm_results", "gemma_results", "load_gemma_scorer",
           "vision_llm_results", "ladder_table", "format_ladder", "gain_table", "bias_table", "calibration_accuracy",
           "failure_cases", "error_sources", "plot_examples", "plot_ladder", "plot_bias", "QUICK_SCENES",
           "GEMMA_QUICK_VARIANTS", "EXAMPLE_KINDS"]

MODEL_KEY = "gemma-3-270m-q4_k_m"
SCORE_CHECKPOINT = "prompting_gemma_scores"
QUICK_SCENES = 42                      # per tier: 6 per label
GEMMA_QUICK_VARIANTS = pr.VARIANTS     # every rung (their scores are committed)
EXAMPLE_KINDS = ("full", "subtle", "occluded", "contradicting")


# ----------------------------------------------------------------------------------------------- protocol
def make_dataset(n_per_tier: int = QUICK_SCENES, *, seed: int = 0, reliability: pr.Reliability | None = None,
                 device="cpu") -> dict:
    """Scenes, face readings, the AU regressor and every prompt (scene-major, :data:`facelab.prompting.VARIANTS`)."""
    from facelab.synth import FaceWorld

    t0 = time.perf_counter()
    world = FaceWorld(seed=seed, size=pr.scenes.TILE, device="cpu")
    scenes = pr.make_scenes(world, n_per_tier, seed=seed, reliability=reliability)
    readings = pr.face_readings(scenes)
    regressor, meta = pr.load_au_regressor()
    prompts = pr.build_prompts(scenes, readings, regressor)
    return {"scenes": scenes, "readings": readings, "regressor": regressor, "regressor_meta": meta,
            "prompts": prompts, "seconds": time.perf_counter() - t0}


def _frame(data: dict, prompts, scores, cf: dict, scorer: str) -> pd.DataFrame:
    scenes = data["scenes"]
    cal = np.array([s - cf[p.variant] for s, p in zip(scores, prompts)])
    return pd.DataFrame({
        "scorer": scorer, "scene": [p.scene for p in prompts], "variant": [p.variant for p in prompts],
        "tier": [scenes[p.scene].tier for p in prompts], "kind": [scenes[p.scene].kind for p in prompts],
        "label": [p.label for p in prompts], "pred_raw": pr.predictions(scores), "pred": pr.predictions(cal),
    }).assign(correct=lambda d: d.pred == d.label, correct_raw=lambda d: d.pred_raw == d.label)


def minilm_results(data: dict, scorer: pr.MiniLMScorer | None = None) -> pd.DataFrame:
    """MiniLM similarities for every prompt, raw and content-free calibrated (one row per scene x variant)."""
    scorer = scorer or pr.MiniLMScorer()
    prompts = data["prompts"]
    S = scorer.scores([p.body for p in prompts])
    cf = {v: scorer.scores([pr.content_free_prompt(v).body])[0] for v in pr.VARIANTS}
    return _frame(data, prompts, S, cf, "MiniLM")


def load_gemma_scorer(*, load_model: bool = True) -> pr.LMScorer:
    """Gemma-3-270M label scorer with the cache and the committed quick-profile scores; ``load_model=False``
    serves cached scores only (a ``LookupError`` for a prompt that has none)."""
    label_scorer = None
    if load_model:
        from facelab.models.language import LabelScorer, load_gemma

        tok, model = load_gemma()
        label_scorer = LabelScorer(model, tok, pr.LABELS)
    return pr.LMScorer(label_scorer, MODEL_KEY, pr.LABELS, checkpoint=SCORE_CHECKPOINT)


def gemma_results(data: dict, lm: pr.LMScorer, variants=GEMMA_QUICK_VARIANTS) -> tuple[pd.DataFrame, dict]:
    """Gemma label log-probabilities for the ``variants`` of every scene: ``(rows, content-free log-probs)``."""
    for v in variants:
        pr.prompts.check_variant(v)
    prompts = [p for p in data["prompts"] if p.variant in variants]
    L = lm.logprobs([p.text for p in prompts])
    cf = {v: lm.logprobs([pr.content_free_prompt(v).text])[0] for v in variants}
    return _frame(data, prompts, L, cf, "Gemma-3-270M"), cf


def vision_llm_results(data: dict, path, *, device="cpu", variants=("marks", "others")) -> pd.DataFrame:
    """A user's local vision LLM (full profile): the marked scene image + the text part, calibrated with a grey
    image and the content-free text."""
    import torch

    from facelab.models.language import VisionLabelScorer, load_vision_llm

    processor, model = load_vision_llm(path, device=device)
    vs = VisionLabelScorer(model, processor, pr.LABELS)
    prompts = [p for p in data["prompts"] if p.variant in variants]
    images = [data["scenes"][p.scene].image for p in prompts]
    split = [p.text.rsplit("\n", 1) for p in prompts]
    L = vs.logprobs(images, [a for a, _ in split], [b for _, b in split])
    grey = torch.full_like(images[0], 0.5)
    cf = {}
    for v in variants:
        a, b = pr.content_free_prompt(v).text.rsplit("\n", 1)
        cf[v] = vs.logprobs([grey], [a], [b])[0]
    return _frame(data, prompts, L, cf, "vision LLM")


# ----------------------------------------------------------------------------------------------- tables
def ladder_table(results: pd.DataFrame, *, column: str = "correct") -> pd.DataFrame:
    """Accuracy (%) per rung (rows) and tier (columns) with 95 % Wilson intervals, plus the number of scenes."""
    rows = []
    for v in [x for x in pr.VARIANTS if x in set(results.variant)]:
        row = {"rung": pr.VARIANT_NAMES[v]}
        for tier in [t for t in pr.TIERS if t in set(results.tier)] + ["all"]:
            sel = results[(results.variant == v) & ((results.tier == tier) if tier != "all" else True)]
            k, n = int(sel[column].sum()), len(sel)
            lo, hi = wilson_interval(k, n)
            row[tier] = 100 * k / n
            row[f"{tier}_lo"], row[f"{tier}_hi"] = 100 * lo, 100 * hi
            row["n per tier" if tier != "all" else "n"] = n
        rows.append(row)
    return pd.DataFrame(rows).set_index("rung")


def format_ladder(table: pd.DataFrame) -> pd.DataFrame:
    """``"57 [43, 70]"`` cells for display."""
    out = {}
    for c in [c for c in table.columns if not c.endswith(("_lo", "_hi")) and not c.startswith("n")]:
        out[c] = [f"{e:.0f} [{lo:.0f}, {hi:.0f}]" for e, lo, hi in
                  zip(table[c], table[f"{c}_lo"], table[f"{c}_hi"])]
    return pd.DataFrame(out, index=table.index).assign(n=table["n per tier"].astype(int))


def gain_table(results: pd.DataFrame, *, start: str = "face", end: str = "others", n_boot: int = 2000,
               seed: int = 0) -> pd.DataFrame:
    """Accuracy gain (points) from rung ``start`` to rung ``end`` per tier, paired bootstrap over scenes."""
    rows = []
    for tier in [t for t in pr.TIERS if t in set(results.tier)] + ["all"]:
        sel = results if tier == "all" else results[results.tier == tier]
        a = sel[sel.variant == end].set_index("scene").sort_index()
        b = sel[sel.variant == start].set_index("scene").loc[a.index]
        res = paired_bootstrap(lambda y, p: float(np.mean(p == y)), a.label.to_numpy(), a.pred.to_numpy(),
                               b.pred.to_numpy(), n_boot=n_boot, seed=seed)
        rows.append({"tier": tier, "from": 100 * float((b.pred == b.label).mean()),
                     "to": 100 * float((a.pred == a.label).mean()), "gain": 100 * res.delta, "gain_lo": 100 * res.lo,
                     "gain_hi": 100 * res.hi, "p_value": res.p_value, "n": len(a)})
    return pd.DataFrame(rows).set_index("tier")


def bias_table(results: pd.DataFrame, variant: str = "others") -> pd.DataFrame:
    """Share (%) of each predicted label before and after calibration (balanced data: 14.3 % each is unbiased)."""
    sel = results[results.variant == variant]
    return pd.DataFrame({"truth": 100 * pr.label_bias(sel.label), "raw": 100 * pr.label_bias(sel.pred_raw),
                         "calibrated": 100 * pr.label_bias(sel.pred)}, index=list(pr.LABELS))


def calibration_accuracy(results: pd.DataFrame, variant: str = "others") -> pd.DataFrame:
    """Accuracy (%) on rung ``variant`` without (``"raw"``) and with (``"calibrated"``) content-free calibration:
    95 % Wilson interval (``lo``, ``hi``), number of scenes ``n`` and points over chance (``over_chance``)."""
    pr.prompts.check_variant(variant)
    sel = results[results.variant == variant]
    if sel.empty:
        raise ValueError(f"the results hold no row of variant {variant!r}: expected one of "
                         f"{', '.join(sorted(set(results.variant)))}")
    chance = 100 / len(pr.LABELS)
    rows = []
    for col, name in (("correct_raw", "raw"), ("correct", "calibrated")):
        k, n = int(sel[col].sum()), len(sel)
        acc, (lo, hi) = 100 * k / n, [100 * x for x in wilson_interval(k, n)]
        rows.append({"scoring": name, "accuracy": acc, "lo": lo, "hi": hi, "n": n, "over_chance": acc - chance})
    return pd.DataFrame(rows).set_index("scoring")


def failure_cases(results: pd.DataFrame, data: dict, variant: str = "others", n: int = 4) -> pd.DataFrame:
    """Full-prompt errors, one per scene kind first: what was felt, shown, and what the cues pointed to."""
    sel = results[(results.variant == variant) & ~results.correct]
    picked = sel.groupby("kind", sort=False).head(1)
    picked = pd.concat([picked, sel.drop(picked.index)]).head(n)
    rows = []
    for _, r in picked.iterrows():
        s = data["scenes"][r.scene]
        p = s.person
        rows.append({"scene": r.scene, "tier": s.tier, "kind": s.kind, "felt": p.emotion, "face shows": p.display,
                     "occluder": p.occlusion, "posture cue": p.posture_emotion, "scene cue": s.scene_emotion,
                     "others": ", ".join(o.emotion for o in s.persons if o is not p), "predicted": r.pred})
    return pd.DataFrame(rows)


def _cues(scene) -> list[str]:
    """The emotions the target's context cues point to: posture, scene type, then each other person."""
    p = scene.person
    return [p.posture_emotion, scene.scene_emotion] + [o.emotion for o in scene.persons if o is not p]


def error_sources(results: pd.DataFrame, data: dict, variant: str = "others",
                  favoured: str | None = None) -> pd.DataFrame:
    """Every error on rung ``variant``, one row each, with where its context cues pointed.

    ``to_felt`` / ``to_predicted``: how many of the ``cues`` (posture, scene, each other person) point to the felt
    emotion / to the answer; ``misled``: more cues point to the answer than to the felt emotion; ``informed``: most
    cues point to the felt emotion (the scorer failed to use them); ``favoured``: the answer is the label that
    calibration favours most (``favoured``, by default the largest calibrated share of :func:`bias_table`; in
    ``.attrs["favoured"]``).
    """
    pr.prompts.check_variant(variant)
    if favoured is None:
        favoured = bias_table(results, variant)["calibrated"].idxmax()
    elif favoured not in pr.LABELS:
        raise ValueError(f"favoured must be one of {', '.join(pr.LABELS)}, got {favoured!r}")
    wrong = results[(results.variant == variant) & ~results.correct]
    rows = []
    for _, r in wrong.iterrows():
        s = data["scenes"][r.scene]
        cues = _cues(s)
        to_felt, to_pred = sum(c == s.label for c in cues), sum(c == r.pred for c in cues)
        rows.append({"scene": r.scene, "tier": s.tier, "kind": s.kind, "felt": s.label, "predicted": r.pred,
                     "cues": len(cues), "to_felt": to_felt, "to_predicted": to_pred, "misled": to_pred > to_felt,
                     "informed": to_felt > len(cues) / 2, "favoured": r.pred == favoured})
    cols = ["scene", "tier", "kind", "felt", "predicted", "cues", "to_felt", "to_predicted", "misled", "informed",
            "favoured"]
    out = pd.DataFrame(rows, columns=cols)
    out.attrs["favoured"] = favoured
    return out


# ----------------------------------------------------------------------------------------------- figures
def plot_examples(scenes, kinds=EXAMPLE_KINDS) -> "Figure":
    """The first scene of each kind in ``kinds``, marked (:func:`facelab.prompting.draw_marks`), one per row."""
    import matplotlib.pyplot as plt

    examples = []
    for k in kinds:
        s = next((s for s in scenes if s.kind == k), None)
        if s is None:
            raise ValueError(f"no scene of kind {k!r}: the scenes hold {', '.join(sorted({s.kind for s in scenes}))}")
        examples.append(s)
    fig, axes = plt.subplots(len(examples), 1, figsize=(6, 2.1 * len(examples)), squeeze=False)
    for ax, s in zip(axes[:, 0], examples):
        pr.draw_marks(s, ax=ax)
        ax.set_title(f"{s.tier} / {s.kind}: person {s.person.number} feels {s.label}, shows {s.person.display}",
                     fontsize=9)
    return fig


def plot_ladder(tables: dict, *, ax=None) -> "Figure":
    """Accuracy per rung, one line per tier, one panel per scorer (``{scorer name: ladder_table}``)."""
    from facelab.plotting import figure_axes

    fig, axes = figure_axes(ax, n=len(tables), figsize=(4.6 * len(tables), 3.4))
    for a, (name, t) in zip(axes, tables.items()):
        x = np.arange(len(t))
        for tier in [c for c in pr.TIERS if c in t.columns]:
            a.errorbar(x, t[tier], yerr=[t[tier] - t[f"{tier}_lo"], t[f"{tier}_hi"] - t[tier]], marker="o",
                       capsize=3, label=tier)
        a.axhline(100 / len(pr.LABELS), color="grey", ls=":", label="chance")
        a.set_xticks(x, [i.replace(" (full SoVTP)", "") for i in t.index], rotation=25, ha="right")
        a.set_ylabel("accuracy (%)")
        a.set_title(name)
        a.set_ylim(0, 100)
    axes[0].legend(fontsize=8)
    return fig


def plot_bias(table: pd.DataFrame, *, ax=None) -> "Figure":
    """Predicted-label shares before and after calibration."""
    from facelab.plotting import figure_axes

    fig, (a,) = figure_axes(ax, figsize=(6, 3))
    x = np.arange(len(table))
    for k, c in enumerate(["truth", "raw", "calibrated"]):
        a.bar(x + (k - 1) * 0.27, table[c], width=0.27, label=c)
    a.set_xticks(x, table.index, rotation=20)
    a.set_ylabel("share of predictions (%)")
    a.legend(fontsize=8)
    return fig


def main() -> None:   # pragma: no cover - recompute and commit the quick profile's Gemma scores
    from facelab.prompting.scorers import save_score_checkpoint

    data = make_dataset(QUICK_SCENES, seed=0)
    lm = load_gemma_scorer()
    res, _ = gemma_results(data, lm)
    texts = [p.text for p in data["prompts"] if p.variant in GEMMA_QUICK_VARIANTS]
    texts += [pr.content_free_prompt(v).text for v in GEMMA_QUICK_VARIANTS]
    save_score_checkpoint(SCORE_CHECKPOINT, lm.entries(texts), MODEL_KEY, pr.LABELS)
    print(ladder_table(res))


if __name__ == "__main__":   # pragma: no cover
    main()
