"""Chapter 06, "Hiding in plain sight II" (``notebooks/06_privacy_masque.ipynb``): the dodging experiment of MASQUE
against its baselines, its tables and figures.

*Dodging* hides a person without naming anyone else: the protected photo should no longer match the person's other
photos for a recogniser at its threshold. :func:`dodging_data` renders the faces (synthetic identities the diffusion
model and the small recognisers never saw), and :func:`compare_dodging` runs, on the same faces and with the same
surrogate recognisers,

* **makeup without guidance**: MASQUE's edit with the adversarial guidance off (what the makeup alone does);
* **MASQUE**: localized makeup + pairwise adversarial guidance (:func:`facelab.privacy.masque.masque_protect`),
  white box (all surrogates) and leave-one-out black box (the victim held out);
* **global PGD** and **masked PGD** on the same pairwise loss (:func:`facelab.privacy.masque.pgd_dodge`), the
  masked one restricted to MASQUE's face-region mask;
* **DiffAIM used for dodging** (:func:`facelab.privacy.diffaim.diffaim_protect` with no target: push away from the
  face's own clean embedding), white box and black box.

:func:`dodging_results` turns the runs into the success table at each victim's FAR thresholds (:func:`dodging_table`,
rates with Wilson intervals), the locality, quality and prompt-adherence tables, and :func:`dodging_tests` compares
two methods on the same (face, gallery photo) pairs with McNemar's test. The protocol pieces shared with chapter 05
(thresholds, leave-one-out, quality, intervals, real photos) are in :mod:`facelab.studies._privacy_protocol`.

Dodging succeeds for a (protected photo, gallery photo of the same person) pair when the victim's similarity falls
*below* its threshold at that FAR.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from facelab.studies._privacy_protocol import (FARS, far_key, leave_one_out, outcome_table, paired_tests, pooled_summary,
                                               quality_table, rates_of, real_photos_of, runs_outcomes,
                                               verification_outcomes, victim_thresholds)

__all__ = ["FARS", "chapter_config", "victim_thresholds", "leave_one_out", "real_photos_of", "dodging_data", "makeup_prompt",
           "similarity_to_references", "DodgingRuns", "compare_dodging", "dodging_outcomes", "dodging_rates",
           "dodging_table", "dodging_results", "dodging_tests", "locality", "locality_table", "adherence_table",
           "makeup_ceiling", "guidance_sweep",
           "region_colour", "colour_table", "attention_table", "locality_at_equal_success",
           "plot_guidance"]


# --------------------------------------------------------------------------------------------- configuration
def chapter_config(quick: bool = True, **change):
    """The chapter's MASQUE configuration (:class:`facelab.privacy.masque.MasqueConfig`), with ``change`` applied;
    the notebook and the benchmarks that measure "the chapter's setting" (``benchmarks/bench_masque_attention.py
    --chapter-now``) read it from here, so they cannot drift apart.

    Quick profile: 8 DDIM steps, negative-prompt inversion instead of null-text optimisation (the chapter's block 1
    measures both), classifier-free guidance 7.5, the adversarial guidance on the last half of the steps at half a
    step with each pixel's chroma held (``keep_colour="chroma"``), the edit bounded by the landmark region alone
    (``blend_threshold=0``): the setting ``benchmarks/bench_masque_guidance.py`` chose on validation people
    (identities 500000 on, never the chapter's test people). Full profile: the paper's 50 steps and null-text
    inversion with 10 iterations per step, guidance step 0.1 on every step, the region's mean colour anchored.
    """
    from facelab.privacy.masque import MasqueConfig

    if quick:
        config = MasqueConfig(num_steps=8, guidance_scale=7.5, null_init="source", null_inner_steps=0,
                              adv_start=0.5, adv_step=0.5, keep_colour="chroma", blend_threshold=0.0)
    else:
        config = MasqueConfig(num_steps=50, null_inner_steps=10, adv_step=0.1, max_self_tokens=16 * 16,
                              guide_window=None, keep_colour=True)
    return replace(config, **change)


# --------------------------------------------------------------------------------------------- data
def dodging_data(size: int = 64, n_faces: int = 16, *, n_references: int = 2, n_gallery: int = 2,
                 n_threshold_identities: int = 40, nuisance: str = "mild", seed: int = 0,
                 identity_offset: int = 100000) -> dict:
    """Synthetic faces for a dodging experiment (identities from ``identity_offset`` on, never used in training;
    the chapter's test people start at 100000, settings are chosen on others, e.g. 500000).

    Each of ``n_faces`` people gets ``1 + n_references + n_gallery`` images: the face to protect, the references the
    pairwise guidance pushes away from, and the held-out gallery the victims compare the protected face with (the
    attacker's photos of the person). A set of ``n_threshold_identities`` other people x 3 images gives the victims'
    thresholds.

    Returns a dict: ``images``, ``landmarks``, ``identities`` (the N protected faces); ``references``,
    ``reference_landmarks``, ``reference_identities``; ``gallery``, ``gallery_landmarks``, ``gallery_owner`` (index
    of the protected face of the same person); ``threshold_images``, ``threshold_landmarks``, ``threshold_ids``.
    """
    from facelab.synth import FaceWorld

    if n_faces < 1 or n_references < 0 or n_gallery < 1:
        raise ValueError(f"need n_faces >= 1, n_references >= 0 and n_gallery >= 1; got {n_faces}, {n_references}, "
                         f"{n_gallery}")
    world = FaceWorld(seed=0, size=size)
    per = 1 + n_references + n_gallery
    b = world.sample(n_identities=n_faces, per_identity=per, identity_offset=identity_offset, nuisance=nuisance,
                     expression="random", generator=torch.Generator().manual_seed(seed + 1))
    th = world.sample(n_identities=n_threshold_identities, per_identity=3, identity_offset=identity_offset + 100000,
                      nuisance=nuisance,
                      expression="random", generator=torch.Generator().manual_seed(seed + 2))
    ids = b.labels["identity"].to_numpy()
    prot = [per * i for i in range(n_faces)]
    ref = [per * i + 1 + k for i in range(n_faces) for k in range(n_references)]
    gal = [per * i + 1 + n_references + k for i in range(n_faces) for k in range(n_gallery)]
    return {"images": b.images[prot], "landmarks": b.landmarks[prot], "identities": ids[prot],
            "references": b.images[ref], "reference_landmarks": b.landmarks[ref], "reference_identities": ids[ref],
            "gallery": b.images[gal], "gallery_landmarks": b.landmarks[gal],
            "gallery_owner": np.repeat(np.arange(n_faces), n_gallery),
            "threshold_images": th.images, "threshold_landmarks": th.landmarks,
            "threshold_ids": th.labels["identity"].to_numpy()}


def makeup_prompt(model, phrase: str) -> tuple[str, str]:
    """``"red lipstick"`` -> (the model's default prompt + ``" with red lipstick"``, ``"lipstick"``): the edit prompt
    and its edited word (the phrase's last word)."""
    words = phrase.split()
    if not words:
        raise ValueError("empty makeup phrase; expected e.g. 'red lipstick'")
    return f"{model.default_prompt} with {phrase}", words[-1]


@torch.no_grad()
def similarity_to_references(models: Sequence, runs: Mapping[str, torch.Tensor], data: Mapping) -> pd.DataFrame:
    """Per protected face, the pairwise dodging loss (mean cosine similarity to the person's reference photos,
    averaged over ``models``) of each image set in ``runs`` (name -> (N, 3, S, S)); one column per run."""
    from facelab.privacy.masque import build_references, pairwise_similarity

    models = list(models)
    L = data["landmarks"]
    dev = models[0].device
    refs = build_references(models, data["images"].to(dev), L.to(dev), data["identities"],
                            references=data["references"].to(dev),
                            reference_landmarks=data["reference_landmarks"].to(dev),
                            reference_identities=data["reference_identities"])
    return pd.DataFrame({name: pairwise_similarity(models, x.to(dev), L.to(dev), refs).cpu().numpy()
                         for name, x in runs.items()})


# --------------------------------------------------------------------------------------------- running
@dataclass
class DodgingRuns:
    """Everything :func:`compare_dodging` produced.

    Attributes
    ----------
    runs : dict
        ``(method, prompt, setting, victim) -> images``; setting ``"white-box"`` (the victim is a surrogate),
        ``"black-box"`` (held out: not among the surrogates of that run) or ``"no guidance"``; prompt ``"-"`` for
        methods that put on no makeup.
    masks : dict
        Prompt -> (N, 1, S, S) face-region mask of its word (where MASQUE may change pixels).
    masque : dict
        Prompt -> the white-box :class:`facelab.privacy.masque.MasqueResult` (word maps, guidance history).
    plain : dict
        Prompt -> the :class:`~facelab.privacy.masque.MasqueResult` of the makeup without guidance.
    timing : pandas.DataFrame
        One row per run: method, prompt, setting, held-out victim, seconds per face.
    surrogates : list of str
        The white-box surrogate ensemble.
    """

    runs: dict
    masks: dict
    masque: dict
    timing: pd.DataFrame
    originals: torch.Tensor = field(repr=False, default=None)
    plain: dict = field(default_factory=dict)
    surrogates: list = field(default_factory=list)


def compare_dodging(model, data: Mapping, models: Mapping, phrases: Sequence[str], *,
                    config=None, inversion=None, surrogates: Sequence[str] | None = None,
                    pgd_epsilons: Sequence[float] = (2 / 255, 4 / 255, 8 / 255), masked_pgd_epsilons=None,
                    pgd_steps: int = 10, black_box_victims: Sequence[str] | None = None,
                    black_box_phrases: Sequence[str] | None = None, diffaim_config=False, seed: int = 0,
                    progress: Callable | None = None) -> DodgingRuns:
    """Run every method of the chapter on ``data`` (from :func:`dodging_data`).

    Parameters
    ----------
    model : facelab.diffusion.DiffusionModel
    data : mapping
        :func:`dodging_data`'s dict.
    models : mapping
        Name -> FaceModel; all of them are victims.
    phrases : sequence of str
        Makeup phrases (``"red lipstick"``, ...).
    config : MasqueConfig, optional
    inversion : NullTextInversion, optional
        A null-text inversion of ``data["images"]`` with ``config``'s steps (reused for every phrase; its source
        attention is recorded once).
    surrogates : sequence of str, optional
        The white-box ensemble (default: every differentiable model). A victim outside it is attacked in the
        black box by the white-box runs themselves (no extra run).
    pgd_epsilons : sequence of float
        L-inf budgets of global PGD (the sweep that locality is compared at equal success with).
    masked_pgd_epsilons : sequence of float, optional
        Budgets of PGD inside MASQUE's region (default: the largest global budget).
    black_box_victims : sequence of str, optional
        Victims held out in turn (leave one out) for MASQUE and global PGD (default: all). A surrogate held out
        costs one more run of each; a non-surrogate reuses the white-box runs.
    black_box_phrases : sequence of str, optional
        Phrases with black-box MASQUE runs (default: all).
    diffaim_config : DiffAIMConfig, None or False
        DiffAIM used for dodging (None: its defaults; False: not run).
    seed : int
        Seed of the PGD baselines' random start.
    """
    from facelab.privacy.masque import MasqueConfig, masque_protect, null_text_inversion, pgd_dodge

    cfg = config or MasqueConfig()
    X, L, ids = data["images"], data["landmarks"], np.asarray(data["identities"])
    refkw = dict(references=data["references"], reference_landmarks=data["reference_landmarks"],
                 reference_identities=data["reference_identities"])
    names = [n for n, m in models.items() if m.differentiable] if surrogates is None else list(surrogates)
    unknown = sorted(set(names) - set(models))
    if unknown or not names:
        raise ValueError(f"surrogates {unknown or names} are not among the models {list(models)}")
    sur = {n: models[n] for n in names}
    victims = list(models)
    bb_victims = victims if black_box_victims is None else list(black_box_victims)
    bb_phrases = list(phrases) if black_box_phrases is None else list(black_box_phrases)
    unknown = sorted(set(bb_phrases) - set(phrases)) + sorted(set(bb_victims) - set(victims))
    if unknown:
        raise ValueError(f"black-box phrases/victims {unknown} are not among the phrases {list(phrases)} / "
                         f"victims {victims}")
    held_out = {v: {n: m for n, m in sur.items() if n != v} for v in bb_victims}
    held_out = {v: s for v, s in held_out.items() if s}                 # something must remain
    extra = [v for v in held_out if v in sur]                           # held out surrogates need their own run
    free = [v for v in held_out if v not in sur]                        # the white-box run is black box for them
    white = [v for v in victims if v in sur]
    if inversion is None:
        inversion = null_text_inversion(model, X, model.default_prompt, num_steps=cfg.num_steps,
                                        guidance_scale=cfg.guidance_scale, inner_steps=cfg.null_inner_steps,
                                        lr=cfg.null_lr, null_init=cfg.null_init, record_attention=True,
                                        self_replace=cfg.self_replace, max_self_tokens=cfg.max_self_tokens)
    runs, masks, masque, plain, timing = {}, {}, {}, {}, []
    N = X.shape[0]

    def record(method, prompt, setting, images, seconds, on, held="-"):
        for v in on:
            runs[(method, prompt, setting, v)] = images
        timing.append({"method": method, "prompt": prompt, "setting": setting, "held out": held,
                       "s/face": seconds / N})

    def pgd(mask, surr, eps):
        t0 = time.perf_counter()
        x = pgd_dodge(X, L, ids, surr, epsilon=eps, steps=pgd_steps, mask=mask, seed=seed, **refkw)
        return x, time.perf_counter() - t0

    for phrase in phrases:
        prompt, word = makeup_prompt(model, phrase)
        kw = dict(edit_prompt=prompt, word=word, inversion=inversion, **refkw)
        r0 = masque_protect(model, X, L, ids, config=replace(cfg, adversarial=False), **kw)
        record("makeup, no guidance", phrase, "no guidance", r0.images, r0.seconds, victims)
        wb = masque_protect(model, X, L, ids, models=sur, config=cfg, resume=r0, **kw)
        record("MASQUE", phrase, "white-box", wb.images, wb.seconds, white)
        masks[phrase], masque[phrase], plain[phrase] = wb.mask, wb, r0
        if phrase in bb_phrases:
            for v in free:
                runs[("MASQUE", phrase, "black-box", v)] = wb.images
            for v in extra:
                r = masque_protect(model, X, L, ids, models=held_out[v], config=cfg, resume=r0, **kw)
                record("MASQUE", phrase, "black-box", r.images, r.seconds, [v], held=v)
        for eps in (masked_pgd_epsilons if masked_pgd_epsilons is not None else [max(pgd_epsilons)]):
            x, s = pgd(wb.mask, sur, eps)
            record(f"masked PGD {eps * 255:.0f}/255", phrase, "white-box", x, s, white)
        if progress is not None:
            progress(phrase)
    for eps in pgd_epsilons:
        name = f"global PGD {eps * 255:.0f}/255"
        x, s = pgd(None, sur, eps)
        record(name, "-", "white-box", x, s, white)
        for v in free:
            runs[(name, "-", "black-box", v)] = x
        for v in extra:
            xb, sb = pgd(None, held_out[v], eps)
            record(name, "-", "black-box", xb, sb, [v], held=v)
    if diffaim_config is not False:
        from facelab.privacy.diffaim import DiffAIMConfig, diffaim_protect

        dcfg = diffaim_config or DiffAIMConfig(seed=seed)
        r = diffaim_protect(model, X, None, list(sur.values()), landmarks=L, config=dcfg)
        record("DiffAIM (dodging)", "-", "white-box", r.images, r.seconds, white)
        for v in free:
            runs[("DiffAIM (dodging)", "-", "black-box", v)] = r.images
        for v in extra:
            rb = diffaim_protect(model, X, None, list(held_out[v].values()), landmarks=L, config=dcfg)
            record("DiffAIM (dodging)", "-", "black-box", rb.images, rb.seconds, [v], held=v)
    for v in victims:
        runs[("clean", "-", "no attack", v)] = X
    return DodgingRuns(runs=runs, masks=masks, masque=masque, timing=pd.DataFrame(timing), originals=X,
                       plain=plain, surrogates=names)


# --------------------------------------------------------------------------------------------- success
def dodging_rates(model, protected, landmarks, gallery, gallery_landmarks, owner, thresholds: Mapping,
                  fars: Sequence[float] = FARS, *, gallery_embeddings: torch.Tensor | None = None) -> dict:
    """Dodging success of one victim (a FaceModel): over all (protected face, clean gallery image of the same person)
    pairs, the fraction whose similarity falls *below* the victim's threshold at each FAR, with its Wilson interval
    (``"FAR=0.01 lo"`` / ``"hi"``), the number of pairs ``n`` and the mean similarity.

    ``owner`` (G,) gives, for each gallery image, the index of the protected face of the same person;
    ``gallery_embeddings`` (the victim's embeddings of ``gallery``) saves embedding the gallery again.
    """
    return rates_of(verification_outcomes(model, protected, landmarks, gallery, gallery_landmarks, thresholds, fars,
                                          owner=owner, accept=False, reference_embeddings=gallery_embeddings))


def dodging_outcomes(runs: Mapping, models: Mapping, thresholds: pd.DataFrame, landmarks, gallery,
                     gallery_landmarks, owner, fars: Sequence[float] = FARS) -> dict:
    """Pair-by-pair dodging outcomes of many runs: ``runs[(*key, victim)] = protected images`` (the victim last) ->
    ``{(*key, victim): {"FAR=0.1": bool (G,), ..., "score": similarities (G,)}}``, one entry per gallery image;
    a pair succeeds when the victim rejects (protected face ``owner[g]``, gallery image g)."""
    return runs_outcomes(runs, models, thresholds, landmarks, gallery, gallery_landmarks, fars, owner=owner,
                         accept=False)


def dodging_table(runs: Mapping, models: Mapping, thresholds: pd.DataFrame, landmarks, gallery,
                  gallery_landmarks, owner, fars: Sequence[float] = FARS) -> pd.DataFrame:
    """Dodging success for many runs: ``runs[(method, setting, victim)] = protected images`` (settings such as
    "white-box" / "black-box"); one row per run, with Wilson intervals (:func:`dodging_rates`)."""
    outcomes = dodging_outcomes(runs, models, thresholds, landmarks, gallery, gallery_landmarks, owner, fars)
    return outcome_table(outcomes, ("method", "setting", "victim"))


@torch.no_grad()
def locality(protected: torch.Tensor, originals: torch.Tensor, mask: torch.Tensor, *, inside: float = 0.5
             ) -> dict:
    """How local a change is: mean absolute change (x 255) inside and outside the region (mask > ``inside`` /
    mask == 0), and the share of the total absolute change that lies outside the region."""
    d = (protected.float() - originals.float().to(protected.device)).abs().mean(1, keepdim=True)
    m = mask.to(d.device)
    ins, out = (m > inside).float(), (m <= 0).float()
    total = d.flatten(1).sum(1).clamp_min(1e-12)
    return {"change inside (/255)": float((d * ins).flatten(1).sum(1).div(ins.flatten(1).sum(1).clamp_min(1)).mean()
                                          * 255),
            "change outside (/255)": float((d * out).flatten(1).sum(1).div(out.flatten(1).sum(1).clamp_min(1)).mean()
                                           * 255),
            "share of change outside": float(((d * out).flatten(1).sum(1) / total).mean())}


def locality_table(runs: Mapping[str, torch.Tensor], originals: torch.Tensor, mask: torch.Tensor) -> pd.DataFrame:
    """:func:`locality` of each run's images against the originals, one row per run."""
    return pd.DataFrame({name: locality(x, originals, mask) for name, x in runs.items()}).T.rename_axis("method")


# --------------------------------------------------------------------------------------------- the chapter's tables
def dodging_results(result: DodgingRuns, data: Mapping, models: Mapping, thresholds: pd.DataFrame,
                    *, classifier=None, fars: Sequence[float] = FARS) -> dict:
    """The chapter's tables from :func:`compare_dodging`'s runs.

    Returns a dict: ``success`` (one row per run: method, prompt, setting, victim, success at each FAR with its
    Wilson interval, pairs ``n``, mean score), ``summary`` (success pooled over the victims per method, prompt and
    setting, with Wilson intervals), ``locality`` (per prompt: change inside/outside that prompt's region for every
    method), ``quality`` (PSNR, SSIM, L-inf per method and prompt), with a makeup ``classifier`` ``adherence``
    (fraction of faces showing the prompt's makeup), and ``outcomes`` (pair-by-pair outcomes per run, for
    :func:`dodging_tests`).
    """
    X = result.originals
    outcomes = dodging_outcomes(result.runs, models, thresholds, data["landmarks"], data["gallery"],
                                data["gallery_landmarks"], data["gallery_owner"], fars)
    table = outcome_table(outcomes, ("method", "prompt", "setting", "victim"))
    summary = pooled_summary(table, ("method", "prompt", "setting"), fars)
    images = {}                                     # one image set per method and prompt (black-box runs aside)
    for (m, p, s, v), x in result.runs.items():
        if s != "black-box":
            images.setdefault((m, p), x)
    loc, qual, adh = [], [], []
    for phrase, mask in result.masks.items():
        mine = {m: x for (m, p), x in images.items() if p in (phrase, "-")}
        loc.append(locality_table(mine, X, mask).assign(prompt=phrase))
        qual.append(quality_table(mine, X).assign(prompt=phrase))
        if classifier is not None:
            adh.append(adherence_table(classifier, mine, phrase))
    out = {"success": table, "summary": summary, "outcomes": outcomes,
           "locality": pd.concat(loc).reset_index().set_index(["prompt", "method"]),
           "quality": pd.concat(qual).reset_index().set_index(["prompt", "method"]),
           "colour": colour_table(result), "attention": attention_table(result)}
    if adh:
        out["adherence"] = pd.concat(adh)
    return out


def adherence_table(classifier, runs: Mapping[str, torch.Tensor], phrase: str, *, alpha: float = 0.05
                    ) -> pd.DataFrame:
    """Prompt adherence of each run (method -> images): the fraction of faces on which the makeup classifier
    recognises the phrase's makeup (kind and colour), with its Wilson interval; one row per method."""
    from facelab.metrics import wilson_interval
    from facelab.privacy.makeup import parse_makeup

    kind, colour = parse_makeup(phrase)
    rows = []
    for method, x in runs.items():
        pred = classifier.predict(x)[kind]
        k, n = sum(p == colour for p in pred), len(pred)
        lo, hi = wilson_interval(k, n, alpha=alpha)
        rows.append({"prompt": phrase, "method": method, "adherence": k / max(1, n), "adherence lo": float(lo),
                     "adherence hi": float(hi), "n": n})
    return pd.DataFrame(rows).set_index(["prompt", "method"])


@torch.no_grad()
def makeup_ceiling(model, classifier, phrases: Sequence[str], *, n_faces: int = 32, seed: int = 0,
                   alpha: float = 0.05) -> pd.DataFrame:
    """What any edit through ``model`` can reach in prompt adherence: faces *rendered* by the synthetic world with
    each phrase's makeup (identities from 400000 on), classified as they are and after the model's autoencoder
    (encode, decode). An edit is decoded by the same autoencoder, so the second shows how much of the world's own
    makeup survives it (a reference for MASQUE's adherence, not a bound: an edit can paint stronger makeup than the
    world renders); the first is the classifier's own recall on that makeup. Wilson intervals."""
    from facelab.metrics import wilson_interval
    from facelab.privacy.makeup import parse_makeup
    from facelab.synth import FaceWorld

    world = FaceWorld(seed=0, size=model.image_size)
    rows = []
    for phrase in phrases:
        kind, colour = parse_makeup(phrase)
        b = world.sample(n_identities=n_faces, per_identity=1, identity_offset=400000, nuisance="mild",
                         makeup={kind: colour}, expression="random", generator=torch.Generator().manual_seed(seed))
        x = b.images.to(model.device)
        for name, imgs in (("rendered", x), ("through the autoencoder", model.decode(model.encode(x)))):
            pred = classifier.predict(imgs)[kind]
            k = sum(p_ == colour for p_ in pred)
            lo, hi = wilson_interval(k, len(pred), alpha=alpha)
            top = max(set(pred), key=pred.count)
            rows.append({"prompt": phrase, "faces": name, "adherence": k / len(pred), "adherence lo": float(lo),
                         "adherence hi": float(hi), "most frequent prediction": top, "n": len(pred)})
    return pd.DataFrame(rows).set_index(["prompt", "faces"])


def region_colour(images: torch.Tensor, mask: torch.Tensor, *, inside: float = 0.5) -> torch.Tensor:
    """Mean RGB (N, 3) of each image inside its region (mask > ``inside``)."""
    m = (mask.to(images.device) > inside).float()
    return (images * m).flatten(2).sum(2) / m.flatten(2).sum(2).clamp_min(1)


@torch.no_grad()
def colour_table(result: DodgingRuns) -> pd.DataFrame:
    """Does the edit move the region's colour towards the prompt's? Per prompt and MASQUE run (without guidance,
    white box): the region's mean RGB before and after, its distance to the synthetic world's colour of the
    phrase (:data:`facelab.synth.world.MAKEUP_COLOURS`) before and after, and the share of faces whose region
    moved closer to it."""
    from facelab.privacy.makeup import parse_makeup
    from facelab.synth.world import MAKEUP_COLOURS

    X = result.originals
    rows = []
    for phrase, mask in result.masks.items():
        kind, colour = parse_makeup(phrase)
        target = torch.tensor(MAKEUP_COLOURS[kind][colour])
        before = region_colour(X, mask).cpu()
        for method, r in (("makeup, no guidance", result.plain.get(phrase)), ("MASQUE", result.masque.get(phrase))):
            if r is None:
                continue
            after = region_colour(r.images, mask).cpu()
            d0, d1 = (before - target).norm(dim=1), (after - target).norm(dim=1)
            rows.append({"prompt": phrase, "method": method, "target RGB": tuple(round(v, 2) for v in target.tolist()),
                         "RGB before": tuple(round(v, 2) for v in before.mean(0).tolist()),
                         "RGB after": tuple(round(v, 2) for v in after.mean(0).tolist()),
                         "distance before": float(d0.mean()), "distance after": float(d1.mean()),
                         "share closer": float((d1 < d0).float().mean())})
    return pd.DataFrame(rows).set_index(["prompt", "method"])


@torch.no_grad()
def attention_table(result: DodgingRuns) -> pd.DataFrame:
    """Where the edited word looks: per prompt, the word's pieces and the share of its cross-attention (mean over
    layers, heads, steps and faces of MASQUE's white-box edit) that falls inside the word's landmark region on
    the latent grid, next to the region's share of the grid (what a uniform map would put there)."""
    rows = []
    for phrase, r in result.masque.items():
        row = {"prompt": phrase, "word": r.word, "pieces": " ".join(r.pieces) or "-", "region": str(r.region),
               "map": r.map_kind, "region share of grid": float(r.latent_mask.float().mean())}
        if r.attention_map is not None:
            m, reg = r.attention_map, r.latent_mask[:, 0].to(r.attention_map)
            share = (m * reg).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1e-12)
            row.update({"attention mass in region": float(share.mean()),
                        "faces with >= half inside": float((share >= 0.5).float().mean())})
        rows.append(row)
    return pd.DataFrame(rows).set_index("prompt")


def locality_at_equal_success(tables: Mapping, phrase: str, *, far: float = 0.01, setting: str = "white-box"
                              ) -> tuple[pd.DataFrame, dict]:
    """Locality against success for one prompt: each method's dodging success (pooled over the victims of
    ``setting``) next to its change outside the prompt's region, and global PGD's change outside interpolated
    (linearly in success, over its budget sweep) at MASQUE's success.

    Returns ``(table, at_equal)``; ``at_equal`` has MASQUE's success and change outside, PGD's interpolated change
    outside at that success, and ``"within sweep"`` (False when MASQUE's success lies outside PGD's range: then the
    nearest PGD budget is used and the comparison is not at equal success)."""
    key = far_key(far)
    summ = tables["summary"][key]
    loc = tables["locality"].xs(phrase, level="prompt")
    rows = []
    for method in loc.index:
        for p_ in (phrase, "-"):
            for st in (setting, "no guidance"):
                if (method, p_, st) in summ.index:
                    rows.append({"method": method, "success": float(summ[(method, p_, st)]),
                                 "success lo": float(tables["summary"][f"{key} lo"][(method, p_, st)]),
                                 "success hi": float(tables["summary"][f"{key} hi"][(method, p_, st)]),
                                 "change outside (/255)": float(loc.loc[method, "change outside (/255)"]),
                                 "share of change outside": float(loc.loc[method, "share of change outside"])})
    t = pd.DataFrame(rows).drop_duplicates("method").set_index("method")
    pgd = t[t.index.str.startswith("global PGD")].sort_values("success")
    out = {}
    if "MASQUE" in t.index and len(pgd):
        s = float(t.loc["MASQUE", "success"])
        xs, ys = pgd["success"].to_numpy(), pgd["change outside (/255)"].to_numpy()
        out = {"MASQUE success": s, "MASQUE change outside (/255)": float(t.loc["MASQUE", "change outside (/255)"]),
               "PGD change outside at equal success (/255)": float(np.interp(s, xs, ys)),
               "within sweep": bool(xs.min() <= s <= xs.max()), "PGD success range": (float(xs.min()),
                                                                                      float(xs.max()))}
    return t, out


def guidance_sweep(model, result: DodgingRuns, data: Mapping, models: Mapping, thresholds: pd.DataFrame, phrase: str,
                   adv_steps: Sequence[float], *, inversion, classifier=None, far: float = 0.01, config=None,
                   keep_colour: Sequence[bool | str] | None = None, outcomes: Mapping | None = None) -> pd.DataFrame:
    """What the adversarial guidance trades: MASQUE on ``phrase`` at several guidance weights ``adv_steps``, each
    with the region's colour anchored, free or its chroma held for every value in ``keep_colour`` (True, False,
    ``"chroma"``; default: the chapter's setting only; see :class:`facelab.privacy.masque.MasqueConfig`), each run
    resumed from the unguided edit, so it costs only the guided steps; next to the unguided edit (weight 0) and the
    chapter's run. ``outcomes``: :func:`dodging_results`' pair-by-pair outcomes of ``result`` (its ``"outcomes"``):
    a victim's outcomes of the unguided edit and the chapter's run are taken from there when they scored the very same
    images, instead of being scored again. Per run, indexed by
    (``adv_step``, ``colour kept``): dodging success at ``far`` pooled over the white-box victims (the surrogates)
    and over the others (black box), with Wilson intervals; the share of faces whose region colour moved towards the
    prompt's colour (:func:`colour_table`'s measure); and, with a ``classifier``, prompt adherence with its Wilson
    interval and McNemar's p-value against the chapter's run on the same faces (column "adherence vs chapter's run:
    p"; 1 on the chapter's own row). ``inversion`` is the one :func:`compare_dodging` used."""
    from facelab.metrics import mcnemar_test, wilson_interval
    from facelab.privacy.makeup import parse_makeup
    from facelab.privacy.masque import masque_protect
    from facelab.synth.world import MAKEUP_COLOURS

    X, L, ids = result.originals, data["landmarks"], np.asarray(data["identities"])
    plain, main = result.plain[phrase], result.masque[phrase]
    cfg = config or _config_of(main)
    sur = {n: models[n] for n in result.surrogates}
    prompt, word = makeup_prompt(model, phrase)
    runs = {(0.0, False): plain.images, (float(cfg.adv_step), _kept(cfg.keep_colour)): main.images}
    for a in adv_steps:
        for kc in ([cfg.keep_colour] if keep_colour is None else keep_colour):
            if float(a) == 0 or (float(a), _kept(kc)) in runs:
                continue
            runs[(float(a), _kept(kc))] = masque_protect(
                model, X, L, ids, edit_prompt=prompt, word=word, models=sur,
                config=replace(cfg, adv_step=float(a), keep_colour=_kept(kc)), inversion=inversion, resume=plain,
                references=data["references"], reference_landmarks=data["reference_landmarks"],
                reference_identities=data["reference_identities"]).images
    kind, colour = parse_makeup(phrase)
    target = torch.tensor(MAKEUP_COLOURS[kind][colour])
    mask = result.masks[phrase]
    d0 = (region_colour(X, mask).cpu() - target).norm(dim=1)
    key = far_key(far)
    boxes = (("white box", list(sur)), ("black box", [v for v in models if v not in sur]))
    # a victim's outcomes of the very same image tensor, already scored by dodging_results, are reused; every other
    # run against every victim in one call: each victim embeds the gallery once for the whole sweep
    scored = {(id(result.runs[k]), k[-1]): o for k, o in (outcomes or {}).items() if k in result.runs and key in o}
    wanted = {(a, kc, v): x for (a, kc), x in runs.items() for _, names in boxes for v in names}
    known = {k: scored[(id(x), k[-1])] for k, x in wanted.items() if (id(x), k[-1]) in scored}
    todo = {k: x for k, x in wanted.items() if k not in known}
    outcomes = {**known, **runs_outcomes(todo, models, thresholds, L, data["gallery"], data["gallery_landmarks"],
                                         (far,), owner=data["gallery_owner"], accept=False)}
    rows, correct = [], {}
    for a, kc in sorted(runs, key=lambda k: (k[0], str(k[1]))):
        x = runs[(a, kc)]
        row = {"adv_step": a, "colour kept": kc}
        for label, names in boxes:
            if not names:
                continue
            ok = np.concatenate([outcomes[(a, kc, v)][key] for v in names])
            lo, hi = wilson_interval(int(ok.sum()), ok.size)
            row.update({f"success {label}": float(ok.mean()), f"success {label} lo": float(lo),
                        f"success {label} hi": float(hi)})
        d1 = (region_colour(x, mask).cpu() - target).norm(dim=1)
        row["colour: share closer"] = float((d1 < d0).float().mean())
        if classifier is not None:
            ok = correct[(a, kc)] = np.array([p_ == colour for p_ in classifier.predict(x)[kind]], dtype=bool)
            lo, hi = wilson_interval(int(ok.sum()), ok.size)
            row.update({"adherence": float(ok.mean()), "adherence lo": float(lo), "adherence hi": float(hi)})
        rows.append(row)
    if correct:                # McNemar on the same faces against the chapter's run (p = 1 on its own row)
        chapter = correct[(float(cfg.adv_step), _kept(cfg.keep_colour))]
        for row in rows:
            ok = correct[(row["adv_step"], row["colour kept"])]
            row["adherence vs chapter's run: p"] = float(mcnemar_test(ok, chapter).p_value)
    return pd.DataFrame(rows).set_index(["adv_step", "colour kept"])


def _kept(value):
    """A ``keep_colour`` setting as the sweep's index shows it: True / False, or ``"chroma"``."""
    return value if isinstance(value, str) else bool(value)


def _config_of(r):
    from facelab.privacy.masque import MasqueConfig
    from dataclasses import fields

    names = {f.name for f in fields(MasqueConfig)}
    return MasqueConfig(**{k: v for k, v in r.config.items() if k in names})


def dodging_tests(outcomes: Mapping, phrases: Sequence[str], victims: Sequence[str], *, far: float = 0.01,
                  black_box_victims: Sequence[str] = (), pgd: str | None = None) -> pd.DataFrame:
    """The chapter's paired comparisons (McNemar on the same face/gallery pairs, one row per victim), at ``far``:

    * per prompt, MASQUE (white box) against the same makeup without guidance, and (with ``pgd``, e.g.
      ``"masked PGD 8/255"``) against masked PGD inside the same region;
    * for each black-box victim, MASQUE (black box, each prompt that has such a run) against the clean faces and
      against global PGD / DiffAIM (dodging) in the same black-box setting.

    The pairs of one face share the protected image, so they are not independent: p-values are on the optimistic
    side. Returns :func:`facelab.studies._privacy_protocol.paired_tests`'s table plus ``victim``, ``prompt`` (of the
    MASQUE run) and a short ``comparison`` label.
    """
    comps = []
    for p in phrases:
        for v in victims:
            a = ("MASQUE", p, "white-box", v)
            comps.append((a, ("makeup, no guidance", p, "no guidance", v)))
            if pgd is not None and (f"masked {pgd}", p, "white-box", v) in outcomes:
                comps.append((a, (f"masked {pgd}", p, "white-box", v)))
    for v in black_box_victims:
        for p in phrases:
            a = ("MASQUE", p, "black-box", v)
            if a not in outcomes:
                continue
            comps.append((a, ("clean", "-", "no attack", v)))
            for other in ([f"global {pgd}"] if pgd else []) + ["DiffAIM (dodging)"]:
                if (other, "-", "black-box", v) in outcomes:
                    comps.append((a, (other, "-", "black-box", v)))
    comps = [(a, b) for a, b in comps if a in outcomes and b in outcomes]
    t = paired_tests(outcomes, comps, far)
    t.insert(0, "victim", [a[-1] for a, _ in comps])
    t.insert(1, "prompt", [a[1] for a, _ in comps])
    t.insert(2, "comparison", [f"{a[0]} ({a[2]}) vs {b[0]} ({b[2]})" for a, b in comps])
    return t


# --------------------------------------------------------------------------------------------- figures
def plot_guidance(history: Sequence[Mapping], similarities: pd.DataFrame, phrase: str, ax=None):
    """Left: the mean cosine to the references during MASQUE's guided steps (``MasqueResult.history``); right: the
    per-face similarity to the own references after each edit (:func:`similarity_to_references`). ``ax``: a pair
    of Axes, or None for a new figure."""
    import matplotlib.pyplot as plt

    axes = ax
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(9, 2.8), layout="constrained")
    hist = pd.DataFrame([h for h in history if "pairwise similarity" in h])
    axes[0].plot(hist["step"], hist["pairwise similarity"], "o-")
    axes[0].set(xlabel="reverse step", ylabel="mean cosine to references", title=f"during guidance ({phrase})")
    axes[1].boxplot([similarities[c] for c in similarities], tick_labels=list(similarities))
    axes[1].set(ylabel="cosine to own references", title="after the edit (surrogate mean)")
    return axes[0].figure
