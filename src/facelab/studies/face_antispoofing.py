"""Study of chapter 04 (``notebooks/04_face_antispoofing.ipynb``): unified physical-digital attack detection.

The methods (CLIP, Soft MoE, DM/CDM losses, detectors, training loop) live in :mod:`facelab.antispoof`; this
module holds what is specific to the chapter:

1. **Data and protocols** (section "The data"): the UniAttackData-like attack set rendered on the synthetic world
   (every identity live and under every attack), its protocols P1 / P2.1 / P2.2 with identities disjoint between
   train and test, the CLIP pretraining faces and the real-photo attack set.
2. **The ablation** (section "Experiments"): variants from a CNN to the full FG-MoE-CLIP-CAR model (with both-class
   and live-only CDM, and the routing scale and slots of the Soft MoE), each trained with several seeds on a
   protocol's train side and scored at ``p(live) >= 0.5`` on its test side; :func:`ablation_design` says which
   variants and seeds each profile runs.
3. **Uncertainty** (tables of section "Experiments"): bootstrap intervals of ACER / AUC / EER over the test
   identities, and paired bootstrap checks of the chapter's claims (a claim holds only when the interval of the
   difference excludes zero).
4. **Tables and figures**: failure cases, feature-space PCA, per-species APCER, real photos; ``plot_*`` functions
   with the shared signature ``plot_x(..., ax=None) -> Figure``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from facelab.plotting import figure_axes
from facelab.antispoof.data import AttackSet, attack_kinds, resize_images
from facelab.antispoof.detector import (AttackDetector, CNNBaseline, LinearProbe, TrainConfig, embed, frozen_tokens,
                                        predict_live, train_detector)
from facelab.antispoof.vit import check_images

__all__ = [
    # data and protocols
    "protocols", "build_attack_set", "split_protocol", "pretraining_faces", "attacks_on_photos", "chapter_clip",
    # the ablation
    "VARIANTS", "DEFAULT_MOE", "FULL_MODEL", "LIVE_CDM", "HEADLINE", "ROUTING", "ablation_design",
    "make_variant", "fit_variant", "evaluate", "AblationResult",
    "run_ablation",
    # uncertainty
    "CHECKS", "AblationIntervals", "ablation_intervals", "score_intervals", "summarise_checks",
    # tables
    "failure_cases", "feature_table", "moe_gates", "per_species_apcer", "dispatch_weights", "real_photo_table",
    # figures
    "plot_pretraining", "plot_dispatch", "plot_training", "plot_feature_space", "plot_intervals",
]


# ================================================================================================ 1. data, protocols
def protocols() -> pd.DataFrame:
    """The protocols table of :func:`facelab.synth.attacks.attack_protocols` (P1, P2.1, P2.2)."""
    from facelab.synth.attacks import attack_protocols

    return attack_protocols()


def build_attack_set(world, n_identities: int, per_identity: int, size: int | None = None,
                     kinds: Sequence[str] | None = None, generator: torch.Generator | None = None,
                     identity_offset: int = 0, nuisance: str = "mild") -> AttackSet:
    """Render live faces and every attack for ``n_identities`` identities (ID-consistent, as UniAttackData).

    Thin wrapper of :func:`facelab.synth.attacks.make_attack_set` (rendered on ``world``'s device, returned on the
    CPU), resized to ``size`` when given.
    """
    from facelab.synth.attacks import ATTACK_KINDS, make_attack_set

    kinds = list(ATTACK_KINDS if kinds is None else kinds)
    bad = [k for k in kinds if k not in attack_kinds()]
    if bad:
        raise ValueError(f"Unknown attack type(s) {bad}; expected a subset of {list(attack_kinds())}")
    images, labels = make_attack_set(world, n_identities, per_identity, kinds=kinds, generator=generator,
                                     identity_offset=identity_offset, nuisance=nuisance)
    labels = labels.copy()
    labels["source"] = "synthetic"
    images = images.detach().float().cpu()
    return AttackSet(resize_images(images, size) if size else images, labels)


def split_protocol(data: AttackSet, protocol: str, test_fraction: float = 0.3, seed: int = 0
                   ) -> tuple[AttackSet, AttackSet]:
    """Train and test sets of one protocol (``"P1"``, ``"P2.1"``, ``"P2.2"``), identities disjoint."""
    from facelab.synth.attacks import protocol_split

    tr, te = protocol_split(data.labels, protocol, test_fraction=test_fraction, seed=seed)
    return data.subset(tr), data.subset(te)


def pretraining_faces(world, n_identities: int, per_identity: int, identity_offset: int = 100_000,
                      size: int | None = None, generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, list[str]]:
    """Live faces and their captions for the CLIP pretraining (identities far from the attack set's)."""
    batch = world.sample(n_identities=n_identities, per_identity=per_identity, identity_offset=identity_offset,
                         nuisance="full", expression="random", makeup="random", generator=generator)
    images = batch.images.detach().float().cpu()
    captions = [str(c) for c in batch.labels["caption"]]
    return (resize_images(images, size) if size else images), captions


def attacks_on_photos(photos: torch.Tensor, kinds: Sequence[str] | None = None, size: int = 64,
                      generator: torch.Generator | None = None, landmarks: torch.Tensor | None = None,
                      device=None) -> AttackSet:
    """Real photos as live faces plus every attack rendered on them (swap/morph donors: the next photo).

    ``photos`` are aligned face crops ``(N, 3, H, W)``; the attacks run at that resolution on ``device`` (default:
    the photos' device), then everything is resized to ``size`` and returned on the CPU.
    """
    from facelab.synth.attacks import ATTACK_KINDS, ATTACK_TYPES, apply_attack

    check_images(photos, name="photos")
    if device is not None:
        photos = photos.to(device)
        landmarks = None if landmarks is None else landmarks.to(device)
    kinds = list(ATTACK_KINDS if kinds is None else kinds)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    n = photos.shape[0]
    images, rows = [photos], [{"identity": i, "live": True, "attack": "live", "family": "live"} for i in range(n)]
    for kind in kinds:
        extra = {}
        if ATTACK_TYPES[kind] == "digital" and kind in ("faceswap", "morph"):
            extra["source"] = torch.roll(photos, 1, 0)
            if landmarks is not None:
                extra["source_landmarks"] = torch.roll(landmarks, 1, 0)
        res = apply_attack(photos, kind, generator=g, landmarks=landmarks, **extra)
        images.append(res.images)
        rows += [{"identity": i, "live": False, "attack": kind, "family": ATTACK_TYPES[kind]} for i in range(n)]
    labels = pd.DataFrame(rows)
    labels["source"] = "real photo"
    return AttackSet(resize_images(torch.cat([x.float().cpu() for x in images]), size), labels)


def chapter_clip(*, cached: bool = True, world=None, image_size: int = 48, vit: dict | None = None,
                 openclip_path=None, n_identities: int = 3000, steps: int = 3000, batch_size: int = 256,
                 device=None, seed: int = 0, progress: Callable | None = None) -> tuple:
    """The chapter's pretrained CLIP and what the chapter shows of its pretraining: ``(clip, info)``.

    ``cached=True`` (quick profile): the package's cached tower, :func:`facelab.antispoof.pretrained_clip`
    (verified and loaded, or pretrained and saved once when missing, corrupt or stale). ``cached=False`` (full
    profile, or an OpenCLIP image tower from ``openclip_path``): a CLIP of architecture ``vit`` pretrained here on
    ``n_identities x 4`` faces of ``world`` for ``steps`` steps (generators ``seed + 2`` for the faces, ``seed + 3``
    for the batches). ``info``: ``history`` (loss and batch accuracy), ``window`` (rolling mean for the plot),
    ``seconds`` (pretraining time), ``log`` (the cached tower's log, or None) and ``summary`` (one sentence).
    """
    from facelab.antispoof.clip import build_clip, pretrain_clip
    from facelab.antispoof.pretrain import CLIP_CHECKPOINT, pretrained_clip

    t0 = time.perf_counter()
    if cached:
        clip, log = pretrained_clip(device=device, progress=progress)
        summary = (f"cached CLIP ({CLIP_CHECKPOINT.name}, loaded in {time.perf_counter() - t0:.1f} s): "
                   f"{log['n_pairs']} image-caption pairs, {log['distinct_captions']} distinct face captions, "
                   f"{log['settings']['steps']} steps of {log['settings']['batch_size']}; pretraining took "
                   f"{log['seconds']:.0f} s on {log['threads']} CPU thread(s); held-out retrieval accuracy "
                   f"{log['held_out_accuracy']:.2f} among the distinct captions of {log['held_out_pairs']} new faces")
        info = {"history": pd.DataFrame(log["curve"]), "window": 1, "seconds": float(log["seconds"]), "log": log}
    else:
        if world is None:
            raise ValueError("chapter_clip(cached=False) pretrains on the synthetic world: pass world=")
        images, captions = pretraining_faces(world, n_identities, 4, size=image_size,
                                             generator=torch.Generator().manual_seed(seed + 2))
        clip = build_clip(image_size=image_size, openclip_path=openclip_path, device=device or "cpu", seed=seed + 3,
                          **(vit or {}))
        history = pretrain_clip(clip, images, captions, steps=steps, batch_size=batch_size,
                                generator=torch.Generator().manual_seed(seed + 3), progress=progress)
        seconds = time.perf_counter() - t0
        summary = (f"{len(images)} image-caption pairs, {len(set(captions))} distinct face captions; "
                   f"pretraining took {seconds:.0f} s")
        info = {"history": history, "window": 10, "seconds": seconds, "log": None}
    return clip, {**info, "summary": summary}


# ================================================================================================ 2. the ablation
#: Soft MoE placement and size used by the MoE variants: 4 experts x 4 slots, 4 routing groups, upcycled in parallel
#: with the kept dense MLP (zero gate, [CLS] through the dense path) with routing scale 10, in the second-to-last
#: block (the fine-tuned blocks are the last two; the final block stays dense, because its [CLS] output, the image
#: embedding, takes the dense path and its MoE could not change it).
DEFAULT_MOE = {"last": 2, "final": False, "n_experts": 4, "slots_per_expert": 4, "groups": 4, "mode": "parallel",
               "scale": 10.0}

FULL_MODEL = "CLIP + FG-MoE + DM + CDM"
LIVE_CDM = "CLIP + FG-MoE + DM + CDM (live only)"

#: Variant name -> spec. ``kind``: "cnn", "probe" or "clip"; ``moe``: overrides of DEFAULT_MOE or None; loss weights;
#: ``cdm_compact``: which classes CDM compacts ("both", the paper's formula, or "live").
VARIANTS: dict[str, dict] = {
    "CNN baseline": {"kind": "cnn"},
    "CLIP linear probe": {"kind": "probe"},
    "CLIP fine-tune": {"kind": "clip", "moe": None},
    "CLIP + Soft MoE": {"kind": "clip", "moe": {"groups": 1}},
    "CLIP + FG-MoE": {"kind": "clip", "moe": {}},
    "CLIP + FG-MoE + DM": {"kind": "clip", "moe": {}, "lambda_dm": 1.0},
    FULL_MODEL: {"kind": "clip", "moe": {}, "lambda_dm": 1.0, "lambda_cdm": 1.0},
    LIVE_CDM: {"kind": "clip", "moe": {}, "lambda_dm": 1.0, "lambda_cdm": 1.0, "cdm_compact": "live"},
    # the routing ablation (issue #22): scale, slots, and the first version's upcycling that replaced the MLP
    "FG-MoE, routing scale 1": {"kind": "clip", "moe": {"scale": 1.0}},
    "FG-MoE, 1 slot per expert": {"kind": "clip", "moe": {"slots_per_expert": 1}},
    "FG-MoE, replacing the MLP": {"kind": "clip", "moe": {"mode": "replace", "scale": 1.0, "final": True}},
}

#: The comparisons the chapter's claims rest on (every seed in both profiles).
HEADLINE = ["CNN baseline", "CLIP linear probe", "CLIP fine-tune", "CLIP + FG-MoE", "CLIP + FG-MoE + DM", FULL_MODEL,
            LIVE_CDM]
#: The routing ablation (one seed in the quick profile).
ROUTING = ["CLIP + Soft MoE", "FG-MoE, routing scale 1", "FG-MoE, 1 slot per expert", "FG-MoE, replacing the MLP"]


def ablation_design(quick: bool, seed: int = 0) -> dict:
    """What the chapter trains: protocol -> ``{"variants", "seeds", "single_seed"}`` (variants run with the
    first seed only), and the schedule.

    Full profile: every variant on every protocol with 5 seeds. Quick profile (150 s budget for the whole chapter on
    two CPU cores): the unseen-type protocols P2.1 and P2.2, on which the issue's targets are stated, get the
    headline variants (:data:`HEADLINE`) with 3 seeds and the routing ablation with one seed (P2.2 only, the
    scale and slot variants); P1 (seen types) trains only the CNN, the probe and the full model, with one seed,
    for the real-photo table and the speed measurement. The quick schedule is 60 steps of 48 for the CLIP variants
    and 120 steps of 24 for the CNN (from scratch: twice the steps at three times the learning rate).
    """
    seeds = tuple(seed + k for k in range(3 if quick else 5))
    if not quick:
        return {"protocols": {p: {"variants": HEADLINE + ROUTING, "seeds": seeds, "single_seed": []}
                              for p in ("P1", "P2.1", "P2.2")},
                "steps": 1000, "batch_size": 128, "lr": 1e-3, "cnn_batch_size": None}
    return {"protocols": {
        "P1": {"variants": ["CNN baseline", "CLIP linear probe", FULL_MODEL], "seeds": seeds[:1], "single_seed": []},
        "P2.1": {"variants": HEADLINE, "seeds": seeds, "single_seed": []},
        "P2.2": {"variants": HEADLINE + ["FG-MoE, routing scale 1", "FG-MoE, 1 slot per expert"], "seeds": seeds,
                 "single_seed": ["FG-MoE, routing scale 1", "FG-MoE, 1 slot per expert"]}},
        "steps": 60, "batch_size": 48, "lr": 2e-3, "cnn_batch_size": 24}


def _spec(name: str, spec: dict | None) -> dict:
    if spec is None:
        if name not in VARIANTS:
            raise ValueError(f"Unknown variant {name!r}; expected one of {list(VARIANTS)} or pass spec=")
        spec = VARIANTS[name]
    if spec.get("kind") not in ("cnn", "probe", "clip"):
        raise ValueError(f"variant kind must be 'cnn', 'probe' or 'clip', got {spec.get('kind')!r}")
    return spec


def make_variant(name: str, clip, spec: dict | None = None, moe: dict | None = None,
                 generator: torch.Generator | None = None, seed: int | None = None):
    """Build an untrained model of a variant on the CLIP's device (a copy of the CLIP tower for the CLIP variants;
    ``generator`` seeds the MoE upcycling, ``seed`` the CNN's weights)."""
    spec = _spec(name, spec)
    if spec["kind"] == "cnn":
        return CNNBaseline(image_size=clip.visual.config.image_size, embed_dim=clip.embed_dim,
                           device=clip.logit_scale.device, seed=seed)
    if spec["kind"] == "probe":
        return LinearProbe(clip)
    moe_cfg = None if spec.get("moe") is None else {**(moe or DEFAULT_MOE), **spec["moe"]}
    return AttackDetector.from_clip(clip, moe=moe_cfg, generator=generator)


def fit_variant(name: str, clip, train: AttackSet, config: TrainConfig | None = None, spec: dict | None = None,
                moe: dict | None = None, generator: torch.Generator | None = None, progress: Callable | None = None,
                tokens: torch.Tensor | None = None, seed: int | None = None, cnn_batch_size: int | None = None):
    """Build and train one variant on the CLIP's device; returns ``(model, history)`` (history is empty for the
    probe). ``generator`` seeds the MoE upcycling and the batches (default: seed 0), ``seed`` the CNN's weights.

    ``tokens``: optional :func:`~facelab.antispoof.detector.frozen_tokens` of ``train.images`` for the CLIP variants.
    ``cnn_batch_size``: the CNN's batch size (default: the config's).
    """
    spec = _spec(name, spec)
    cfg = (config or TrainConfig()).replace(lambda_dm=spec.get("lambda_dm", 0.0),
                                            lambda_cdm=spec.get("lambda_cdm", 0.0),
                                            cdm_compact=spec.get("cdm_compact", "both"))
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    model = make_variant(name, clip, spec, moe, g, seed)
    if spec["kind"] == "probe":
        return model.fit(train.images, train.live), pd.DataFrame()
    if spec["kind"] == "cnn":
        cfg = cfg.replace(lr=3 * cfg.lr, steps=int(cfg.steps * spec.get("step_factor", 2)),
                          batch_size=int(cnn_batch_size or cfg.batch_size))
    return model, train_detector(model, train.images, train.live, cfg, g, progress,
                                  tokens=tokens if spec["kind"] == "clip" else None)


def evaluate(model, test: AttackSet, threshold: float = 0.5, tokens: torch.Tensor | None = None,
             finetune_last: int = 2) -> tuple[dict, np.ndarray]:
    """PAD metrics of a trained model on a test set (:func:`facelab.metrics.pad_report`), and its ``p(live)``.

    ``tokens``: optional :func:`~facelab.antispoof.detector.frozen_tokens` of ``test.images`` (computed with the
    same ``finetune_last``) for an :class:`AttackDetector` whose first blocks were frozen in training: the scores
    are then computed from the cached tokens, in the same batches of 256 as :func:`predict_live`, so they are the
    same numbers without running the frozen blocks again for every variant and seed."""
    from facelab.metrics import pad_report

    if tokens is not None and isinstance(model, AttackDetector):
        if tokens.shape[0] != len(test.images):
            raise ValueError(f"tokens hold {tokens.shape[0]} images, but the test set has {len(test.images)}")
        start = model.visual.n_layers - int(finetune_last)
        dev = next(model.parameters()).device
        model.eval()
        with torch.no_grad():
            scores = torch.cat([model._logits(model.embed_tokens(tokens[i:i + 256].to(dev), start)).softmax(-1)[:, 1]
                                .float().cpu() for i in range(0, tokens.shape[0], 256)]).numpy()
    else:
        scores = predict_live(model, test.images)
    return pad_report(test.live, scores, threshold, attack_types=test.attack), scores


@dataclass
class AblationResult:
    """Everything the chapter shows: the metrics table and, per (protocol, variant), scores, history and model.

    ``scores``, ``histories`` and ``models`` hold the first seed's; ``seed_scores[protocol, variant]`` the test
    scores of every seed (the bootstrap averages the metrics over them); ``seed_metrics`` one row per (protocol,
    variant, seed) with its ACER, AUC, EER and seconds.
    """

    table: pd.DataFrame
    scores: dict = field(default_factory=dict)
    histories: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    splits: dict = field(default_factory=dict)
    seed_scores: dict = field(default_factory=dict)
    seed_metrics: pd.DataFrame = field(default_factory=pd.DataFrame)
    threshold: float = 0.5
    seconds: float = 0.0

    @classmethod
    def concat(cls, results: Sequence["AblationResult"]) -> "AblationResult":
        """Merge results of separate runs (for example one per protocol)."""
        out = cls(table=pd.concat([r.table for r in results], ignore_index=True))
        for r in results:
            out.scores |= r.scores
            out.histories |= r.histories
            out.models |= r.models
            out.splits |= r.splits
            out.seed_scores |= r.seed_scores
            out.threshold = r.threshold
            out.seconds += r.seconds
        out.seed_metrics = pd.concat([r.seed_metrics for r in results], ignore_index=True)
        return out

    def pivot(self, metric: str = "ACER") -> pd.DataFrame:
        """``variant x protocol`` table of one metric, in the variants' order."""
        t = self.table.pivot_table(index="variant", columns="protocol", values=metric, sort=False)
        return t.loc[[v for v in dict.fromkeys(self.table["variant"])]]

    def seed_spread(self, metrics: Sequence[str] = ("ACER", "AUC", "EER"), digits: int = 3) -> pd.DataFrame:
        """``variant x (protocol, metric)`` cells ``"0.241 ± 0.012 (3)"``: mean ± standard deviation over the
        training seeds (ddof 1) and their number; ``"0.241 (1)"`` for a single seed."""
        m = self.seed_metrics
        if m.empty:
            raise ValueError("this result holds no per-seed metrics")

        def cell(x):
            x = np.asarray(x, dtype=float)
            if len(x) < 2:
                return f"{x.mean():.{digits}f} (1)"
            return f"{x.mean():.{digits}f} ± {x.std(ddof=1):.{digits}f} ({len(x)})"

        out = {}
        protos = list(dict.fromkeys(m["protocol"]))
        variants = list(dict.fromkeys(m["variant"]))
        for p in protos:
            for met in metrics:
                sel = m[m["protocol"] == p]
                out[p, met] = [cell(sel.loc[sel["variant"] == v, met]) if (sel["variant"] == v).any() else ""
                               for v in variants]
        return pd.DataFrame(out, index=pd.Index(variants, name="variant"))


def run_ablation(clip, data: AttackSet, protocols: Sequence[str] = ("P1", "P2.1", "P2.2"),
                 variants: Sequence[str] | None = None, config: TrainConfig | None = None, moe: dict | None = None,
                 seeds: Sequence[int] = (0,), test_fraction: float = 0.3, split_seed: int = 0,
                 threshold: float = 0.5, progress: Callable | None = None, device=None,
                 single_seed: Sequence[str] = (), cnn_batch_size: int | None = None) -> AblationResult:
    """Train and evaluate every variant on every protocol (and seed); metrics are averaged over seeds.

    Parameters
    ----------
    clip : CLIPModel
        The pretrained CLIP; moved to ``device`` when given (every variant is built on the CLIP's device).
    seeds : sequence of int
        One training run per seed (generator ``seed * 1000 + 17`` for upcycling and batches, ``seed`` for the CNN's
        weights). The linear probe is deterministic: it is fitted once and its scores stand for every seed.
    single_seed : sequence of str
        Variants trained with the first seed only (the quick profile's routing ablation).
    split_seed : int
        Seed of the identity split of every protocol.
    cnn_batch_size : int, optional
        Batch size of the CNN (default: the config's).

    Returns
    -------
    AblationResult
        ``table``: one row per (protocol, variant) with the mean of :func:`facelab.metrics.pad_report` over seeds
        (plus ``ACER_std``, ``AUC_std``, ``EER_std`` (ddof 1, NaN for one seed), ``n_seeds`` and ``seconds``);
        ``seed_metrics``: one row per seed; scores/histories/models of the first seed.
    """
    variants = list(VARIANTS if variants is None else variants)
    for v in variants:
        _spec(v, None)
    bad = [v for v in single_seed if v not in variants]
    if bad:
        raise ValueError(f"single_seed names variants that are not run: {bad}")
    if not len(seeds):
        raise ValueError("need at least one seed")
    if device is not None:
        clip = clip.to(device)
    t0 = time.perf_counter()
    res = AblationResult(table=pd.DataFrame(), threshold=float(threshold))
    rows, seed_rows = [], []
    jobs = [(p, v) for p in protocols for v in variants]
    it = jobs if progress is None else progress(jobs, desc="ablation")
    splits = {p: split_protocol(data, p, test_fraction, split_seed) for p in protocols}
    res.splits = splits
    cfg = config or TrainConfig()
    tokens = {p: frozen_tokens(clip.visual, splits[p][0].images, cfg.finetune_last) for p in protocols}
    test_tokens = {p: frozen_tokens(clip.visual, splits[p][1].images, cfg.finetune_last) for p in protocols}
    for p, v in it:
        train, test = splits[p]
        run_seeds = list(seeds[:1] if v in single_seed else seeds)
        per_seed, seed_scores = [], []
        for k, seed in enumerate(run_seeds):
            ts = time.perf_counter()
            if k and _spec(v, None)["kind"] == "probe":        # deterministic: the same fit for every seed
                metrics, scores = dict(per_seed[0]), seed_scores[0]
            else:
                g = torch.Generator().manual_seed(int(seed) * 1000 + 17)
                torch.manual_seed(int(seed))
                model, hist = fit_variant(v, clip, train, cfg, moe=moe, generator=g, tokens=tokens[p],
                                          seed=int(seed), cnn_batch_size=cnn_batch_size)
                metrics, scores = evaluate(model, test, threshold, tokens=test_tokens[p],
                                           finetune_last=cfg.finetune_last)
                if k == 0:
                    res.scores[p, v], res.histories[p, v], res.models[p, v] = scores, hist, model
            metrics["seconds"] = time.perf_counter() - ts
            per_seed.append(metrics)
            seed_scores.append(scores)
            seed_rows.append({"protocol": p, "variant": v, "seed": int(seed),
                              **{m: float(metrics[m]) for m in ("ACER", "AUC", "EER", "seconds")}})
        res.seed_scores[p, v] = np.stack(seed_scores)
        frame = pd.DataFrame(per_seed)
        row = {"protocol": p, "variant": v, **frame.mean(numeric_only=True).to_dict()}
        for m in ("ACER", "AUC", "EER"):
            row[f"{m}_std"] = float(frame[m].std(ddof=1)) if len(frame) > 1 else float("nan")
        row["n_seeds"] = len(frame)
        row["seconds"] = float(frame["seconds"].sum())
        rows.append(row)
    res.table = pd.DataFrame(rows)
    res.seed_metrics = pd.DataFrame(seed_rows)
    res.seconds = time.perf_counter() - t0
    return res


# ================================================================================================ 3. uncertainty
_METRICS = ("ACER", "AUC", "EER")

#: The chapter's claims as paired comparisons: name -> (metric, variant A, variant B, direction). ``"lower"``: the
#: claim is that A has the lower metric (ACER); ``"higher"``: the higher (AUC).
CHECKS: dict[str, tuple[str, str, str, str]] = {
    "full model < CNN": ("ACER", FULL_MODEL, "CNN baseline", "lower"),
    "full model < linear probe": ("ACER", FULL_MODEL, "CLIP linear probe", "lower"),
    "full model < dense fine-tune": ("ACER", FULL_MODEL, "CLIP fine-tune", "lower"),
    "FG-MoE < fine-tune": ("ACER", "CLIP + FG-MoE", "CLIP fine-tune", "lower"),
    "+DM helps": ("ACER", "CLIP + FG-MoE + DM", "CLIP + FG-MoE", "lower"),
    "+CDM helps": ("ACER", FULL_MODEL, "CLIP + FG-MoE + DM", "lower"),
    "+CDM (live only) helps": ("ACER", LIVE_CDM, "CLIP + FG-MoE + DM", "lower"),
    "live-only CDM < both-class CDM": ("ACER", LIVE_CDM, FULL_MODEL, "lower"),
    "AUC: full model > CNN": ("AUC", FULL_MODEL, "CNN baseline", "higher"),
    "AUC: full model > linear probe": ("AUC", FULL_MODEL, "CLIP linear probe", "higher"),
    "AUC: +DM helps": ("AUC", "CLIP + FG-MoE + DM", "CLIP + FG-MoE", "higher"),
    "AUC: +CDM helps": ("AUC", FULL_MODEL, "CLIP + FG-MoE + DM", "higher"),
    "AUC: live-only CDM > both-class CDM": ("AUC", LIVE_CDM, FULL_MODEL, "higher"),
    "routing scale 10 < scale 1": ("ACER", "CLIP + FG-MoE", "FG-MoE, routing scale 1", "lower"),
}


def _pad_metrics(labels: np.ndarray, seed_scores: np.ndarray, threshold: float) -> np.ndarray:
    """(ACER, AUC, EER) of one variant on one test set, averaged over the seeds (``seed_scores``: (seeds, n))."""
    from facelab.metrics import eer, roc_auc

    live = labels.astype(bool)
    out = []
    for s in seed_scores:
        accepted = s >= threshold
        acer = 0.5 * (accepted[~live].mean() + (~accepted[live]).mean())  # pooled ACER, as metrics.acer
        out.append((acer, roc_auc(labels, s), eer(labels, s)[0]))
    return np.mean(out, axis=0)


def _by_identity(test: AttackSet, scores: np.ndarray) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Rows for the bootstrap: one row per test identity (its labels, its scores of every variant and seed) when
    every identity has the same number of images, as in the ID-consistent attack set; else one row per image
    (``strata``: the labels)."""
    y = test.live
    ident = test.labels["identity"].to_numpy() if "identity" in test.labels else None
    if ident is not None:
        _, inv, counts = np.unique(ident, return_inverse=True, return_counts=True)
        if np.all(counts == counts[0]):
            order = np.argsort(inv, kind="stable")
            m = int(counts[0])
            return [y[order].reshape(-1, m), scores[:, order].reshape(scores.shape[0], -1, m).transpose(1, 0, 2)], None
    return [y, scores.T], y


@dataclass
class AblationIntervals:
    """Bootstrap intervals of an ablation (:func:`ablation_intervals`).

    ``metrics``: one row per (protocol, variant, metric) with ``value``, ``lo``, ``hi``; ``checks``: one row per
    (check, protocol) of :data:`CHECKS` with ``difference`` (A - B), ``lo``, ``hi``, ``point holds`` and
    ``verdict``; ``unit``: what was resampled (``"identity"`` or ``"image"``).
    """

    metrics: pd.DataFrame
    checks: pd.DataFrame
    n_boot: int
    seed: int
    level: float
    unit: str

    def table(self, metric: str = "ACER") -> pd.DataFrame:
        """``variant x (protocol, value/lo/hi)`` table of one metric."""
        if metric not in _METRICS:
            raise ValueError(f"metric must be one of {_METRICS}, got {metric!r}")
        t = self.metrics[self.metrics["metric"] == metric]
        protos = list(dict.fromkeys(t["protocol"]))
        out = t.pivot_table(index="variant", columns="protocol", values=["value", "lo", "hi"], sort=False)
        out = out.swaplevel(0, 1, axis=1)
        return out.loc[list(dict.fromkeys(t["variant"])), [(p, c) for p in protos for c in ("value", "lo", "hi")]]

    def formatted(self, metric: str = "ACER", digits: int = 3) -> pd.DataFrame:
        """``variant x protocol`` cells ``"0.240 [0.205, 0.281]"``."""
        from facelab.metrics import with_interval

        t = self.table(metric)
        protos = list(dict.fromkeys(t.columns.get_level_values(0)))
        return pd.DataFrame({p: [with_interval(*t.loc[v, p][["value", "lo", "hi"]], digits=digits)
                                 for v in t.index] for p in protos}, index=t.index)

    def verdicts(self) -> pd.DataFrame:
        """``check x protocol`` cells ``"yes: -0.081 [-0.120, -0.044], seeds 3/3"`` (verdict, difference A - B,
        interval, seeds whose difference is on the claimed side)."""
        from facelab.metrics import with_interval

        c = self.checks.assign(cell=[f"{r.verdict}: " + with_interval(r.difference, r.lo, r.hi, digits=3)
                                     + f", seeds {r.seeds}" for r in self.checks.itertuples()])
        return c.pivot_table(index="check", columns="protocol", values="cell", aggfunc="first",
                             sort=False).loc[list(dict.fromkeys(c["check"]))]


def _check_checks(checks: dict) -> dict:
    for name, (metric, _, _, direction) in checks.items():
        if metric not in _METRICS or direction not in ("lower", "higher"):
            raise ValueError(f"check {name!r}: metric must be one of {_METRICS} and direction 'lower' or 'higher', "
                             f"got {metric!r}, {direction!r}")
    return checks


def score_intervals(test: AttackSet, scores: dict, threshold: float = 0.5, checks: dict | None = None,
                    n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[list, list, str]:
    """Bootstrap intervals of ACER, AUC and EER of several models scored on one test set, and paired intervals of
    the differences in ``checks`` (name -> (metric, A, B, "lower"/"higher"); only those whose models are present).

    ``scores``: model name -> ``p(live)`` of shape ``(n,)`` or ``(seeds, n)`` (a replicate then averages the
    metric over the seeds; models may have different numbers of seeds). Resampling is by identity when every
    identity has the same number of images (see :func:`ablation_intervals`), else by image within each class.

    A check's ``verdict`` needs both the test identities and the training seeds to agree: ``"yes"`` when the
    interval of the difference lies on the claimed side of zero *and* the difference of every seed pair (seed k of
    A against seed k of B, on the whole test set) is on that side (``seeds``: how many of how many); ``"no
    (reversed)"`` when both lie on the other side; else ``"not resolved"``. With one seed only the interval counts.
    Returns ``(metric_rows, check_rows, unit)``.
    """
    from facelab.metrics import bootstrap_ci

    checks = _check_checks({} if checks is None else checks)
    names = list(scores)
    arrs = [np.atleast_2d(np.asarray(scores[v], dtype=np.float64)) for v in names]
    counts = [a.shape[0] for a in arrs]
    offs = np.cumsum([0, *counts])
    total, k = int(offs[-1]), len(names)
    arrays, strata = _by_identity(test, np.concatenate(arrs))
    pairs = [(name, spec) for name, spec in checks.items() if spec[1] in names and spec[2] in names]

    def statistic(y, s):
        if s.ndim == 3:                                                      # (identities, models*seeds, m)
            s = s.transpose(0, 2, 1)
        y, s = y.reshape(-1), s.reshape(-1, total)
        m = np.stack([_pad_metrics(y, s[:, offs[i]:offs[i + 1]].T, threshold) for i in range(k)])   # (models, 3)
        diffs = [m[names.index(a), _METRICS.index(met)] - m[names.index(b), _METRICS.index(met)]
                 for _, (met, a, b, _) in pairs]
        return np.concatenate([m.ravel(), diffs])

    est, lo, hi = bootstrap_ci(statistic, *arrays, n_boot=n_boot, alpha=alpha, seed=seed, strata=strata)
    per_seed = {v: np.stack([_pad_metrics(test.live, a[i:i + 1], threshold) for i in range(a.shape[0])])
                for v, a in zip(names, arrs)}                                 # (seeds, 3) on the whole test set
    metric_rows, check_rows = [], []
    for i, v in enumerate(names):
        for j, met in enumerate(_METRICS):
            q = i * len(_METRICS) + j
            metric_rows.append({"variant": v, "metric": met, "value": float(est[q]), "lo": float(lo[q]),
                                "hi": float(hi[q])})
    for q, (name, (met, a, b, direction)) in enumerate(pairs, start=k * len(_METRICS)):
        d, l, h = float(est[q]), float(lo[q]), float(hi[q])
        lower = direction == "lower"
        n = min(len(per_seed[a]), len(per_seed[b]))
        sd = per_seed[a][:n, _METRICS.index(met)] - per_seed[b][:n, _METRICS.index(met)]
        agree = int(np.sum(sd < 0 if lower else sd > 0))
        against = int(np.sum(sd > 0 if lower else sd < 0))
        shown, reversed_ = (h < 0 if lower else l > 0), (l > 0 if lower else h < 0)
        verdict = ("yes" if shown and (n < 2 or agree == n) else
                   "no (reversed)" if reversed_ and (n < 2 or against == n) else "not resolved")
        check_rows.append({"check": name, "metric": met, "difference": d, "lo": l, "hi": h,
                           "point holds": bool(d < 0 if lower else d > 0), "seeds": f"{agree}/{n}",
                           "seed sd of difference": float(sd.std(ddof=1)) if n > 1 else float("nan"),
                           "verdict": verdict})
    return metric_rows, check_rows, ("image" if strata is not None else "identity")


def summarise_checks(intervals: AblationIntervals) -> str:
    """The checks in words, grouped by verdict: which claims this run shows, which it reverses, which the data
    do not resolve (with the protocols of each)."""
    c = intervals.checks
    lines = []
    for verdict, head in (("yes", "shown (interval of the difference excludes zero on the claimed side, and every "
                                  "seed agrees)"),
                          ("no (reversed)", "reversed (interval excludes zero on the other side, every seed agrees)"),
                          ("not resolved", "not resolved (interval contains zero, or the seeds disagree)")):
        sel = c[c["verdict"] == verdict]
        items = [f"{name} [{', '.join(sel[sel['check'] == name]['protocol'])}]"
                 for name in dict.fromkeys(sel["check"])]
        lines.append(f"{head}: " + ("; ".join(items) if items else "none"))
    return "\n".join(lines)


def ablation_intervals(result: AblationResult, checks: dict | None = None, n_boot: int = 1000, seed: int = 0,
                       alpha: float = 0.05) -> AblationIntervals:
    """Percentile bootstrap intervals of ACER, AUC and EER of every (protocol, variant), and paired intervals of
    the differences named in ``checks`` (default :data:`CHECKS`), with :func:`facelab.metrics.bootstrap_ci`.

    The test set of a protocol is resampled **by identity** (an identity brings all its images, live and attacked,
    as in the ID-consistent attack set: the images of one face are not independent), and every variant is scored on
    the same resamples, so the differences are paired. A claim's ``verdict`` is ``"yes"`` when the whole interval of
    its difference lies on the claimed side of zero, ``"no (reversed)"`` when it lies on the other side, and
    ``"not resolved"`` when it contains zero. With several seeds, a replicate is the mean over the seeds' scores.
    """
    checks = _check_checks(CHECKS if checks is None else checks)
    metric_rows, check_rows, units = [], [], set()
    for p, (_, test) in result.splits.items():
        scores = {v: result.seed_scores[pp, v] for (pp, v) in result.seed_scores if pp == p}
        if not scores:
            continue
        m, c, unit = score_intervals(test, scores, result.threshold, checks, n_boot, seed, alpha)
        metric_rows += [{"protocol": p, **r} for r in m]
        check_rows += [{"protocol": p, **r} for r in c]
        units.add(unit)
    return AblationIntervals(pd.DataFrame(metric_rows), pd.DataFrame(check_rows), int(n_boot), int(seed),
                             1 - alpha, "image" if "image" in units else "identity")


# ================================================================================================ 4. tables
def failure_cases(result: AblationResult, protocol: str, variant: str, k: int = 8) -> pd.DataFrame:
    """The ``k`` most confident mistakes on a protocol's test set: attacks with the highest ``p(live)`` and live
    faces with the lowest. Columns: ``index`` (into the test set), ``attack``, ``p_live``, ``error``."""
    test = result.splits[protocol][1]
    s = result.scores[protocol, variant]
    y = test.live
    wrong = np.nonzero((s >= result.threshold) != (y == 1))[0]
    conf = np.abs(s[wrong] - result.threshold)
    order = wrong[np.argsort(-conf)][:k]
    return pd.DataFrame({"index": order, "attack": test.attack[order], "p_live": s[order],
                         "error": np.where(y[order] == 1, "live rejected", "attack accepted")})


def feature_table(model, data: AttackSet, n_components: int = 2, seed: int = 0) -> pd.DataFrame:
    """PCA of a model's normalised embeddings with the labels: columns ``pc1``, ``pc2``, ``attack``, ``live``,
    ``family``; the PCA is fitted on ``data`` itself (``seed``: its random state)."""
    from sklearn.decomposition import PCA

    X = model.embed(data.images) if isinstance(model, LinearProbe) else embed(model.embed, data.images)
    Z = PCA(n_components=n_components, random_state=seed).fit_transform(X)
    out = pd.DataFrame(Z, columns=[f"pc{i + 1}" for i in range(n_components)])
    out["attack"], out["live"], out["family"] = data.attack, data.live, data.labels["family"].to_numpy()
    return out


def per_species_apcer(result: AblationResult, variant: str = FULL_MODEL) -> pd.DataFrame:
    """``species x protocol`` APCER of one variant (fraction of each attack accepted as live; NaN where a protocol
    does not test that species)."""
    t = result.table[result.table["variant"] == variant].set_index("protocol").filter(like="APCER[")
    t.columns = [c[len("APCER["):-1] for c in t.columns]
    return t.T


@torch.no_grad()
def dispatch_weights(detector: AttackDetector, images: torch.Tensor, block: int | None = None, device=None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Dispatch and combine weights ``(batch, tokens, groups, slots)`` of a Soft MoE block on ``images``: the
    tokens the block's MoE really reads (after the frozen blocks, the block's attention and ``ln_2``; the patch
    tokens only for the parallel upcycling, every token for ``mode="replace"``). ``block``: its index (default:
    the last block with a Soft MoE)."""
    from facelab.antispoof.moe import ParallelMoE, SoftMoE

    visual = detector.visual
    dev = next(visual.parameters()).device if device is None else torch.device(device)
    if block is None:                                    # the last block with a Soft MoE
        moe_blocks = [i for i, b in enumerate(visual.transformer.resblocks)
                      if isinstance(b.mlp, (SoftMoE, ParallelMoE))]
        if not moe_blocks:
            raise ValueError("the detector has no Soft MoE block")
        block = moe_blocks[-1]
    b = visual.transformer.resblocks[block]
    stop = block % visual.n_layers
    tokens = visual.tokens(images.to(dev), stop=stop)
    return b.mlp.routing(b.ln_2(b.attention_residual(tokens)))


def moe_gates(result: AblationResult, variants: Sequence[str] | None = None) -> pd.DataFrame:
    """Gate and routing scale of every parallel Soft MoE block of the trained first-seed models: ``(protocol,
    variant) x (block gate, block scale)``; how far fine-tuning opened the MoE branch (0 = not at all)."""
    from facelab.antispoof.moe import ParallelMoE

    rows = {}
    for (p, v), model in result.models.items():
        if (variants is not None and v not in variants) or not isinstance(model, AttackDetector):
            continue
        row = {}
        for i, b in enumerate(model.visual.transformer.resblocks):
            if isinstance(b.mlp, ParallelMoE):
                row[f"block {i + 1} gate"] = float(b.mlp.gate.detach())
                row[f"block {i + 1} routing scale"] = float(b.mlp.scale.detach())
        if row:
            rows[p, v] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def real_photo_table(result: AblationResult, real: AttackSet, protocol: str = "P1",
                     variants: Sequence[str] = ("CNN baseline", "CLIP linear probe", FULL_MODEL),
                     n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """APCER / BPCER / ACER / AUC on the real-photo attack set of the models trained on one protocol, with
    bootstrap intervals of ACER and AUC over the photos (``ACER_lo``, ``ACER_hi``, ``AUC_lo``, ``AUC_hi``)."""
    evals = {v: evaluate(result.models[protocol, v], real, result.threshold) for v in variants}
    table = pd.DataFrame({v: e[0] for v, e in evals.items()}).T[["APCER", "BPCER", "ACER", "AUC"]]
    rows, _, _ = score_intervals(real, {v: e[1] for v, e in evals.items()}, result.threshold, None, n_boot, seed,
                                 alpha)
    for r in rows:
        if r["metric"] in ("ACER", "AUC"):
            table.loc[r["variant"], f"{r['metric']}_lo"] = r["lo"]
            table.loc[r["variant"], f"{r['metric']}_hi"] = r["hi"]
    return table[["APCER", "BPCER", "ACER", "ACER_lo", "ACER_hi", "AUC", "AUC_lo", "AUC_hi"]]


# ================================================================================================ 5. figures
_ORDER = ["live", "print", "replay", "mask3d", "adversarial", "faceswap", "morph"]


def plot_pretraining(history: pd.DataFrame, window: int = 1, ax=None):
    """Loss and batch image-to-caption accuracy of the CLIP pretraining (rolling mean over ``window`` rows); two
    axes (``ax``: a pair, or None for a new figure). Returns the figure."""
    fig, (a, b) = figure_axes(ax, 2, figsize=(9, 3))
    smooth = history.rolling(window, min_periods=1).mean()
    a.plot(smooth["step"], smooth["loss"])
    a.set(title="CLIP pretraining loss", xlabel="step")
    b.plot(smooth["step"], smooth["accuracy"])
    b.set(title="image -> own caption (batch)", xlabel="step")
    return fig


def plot_dispatch(dispatch, grid: int, slots: int = 8, ax=None):
    """Dispatch weights of the first ``slots`` slots over the patch grid (the [CLS] token is dropped when it is
    routed); ``dispatch``: ``(tokens, slots)`` of one image and group. ``ax``: ``slots`` axes or None."""
    dispatch = dispatch.detach().cpu().numpy() if isinstance(dispatch, torch.Tensor) else np.asarray(dispatch)
    if dispatch.shape[0] not in (grid * grid, grid * grid + 1):
        raise ValueError(f"dispatch must have {grid * grid} patch tokens (+ [CLS]) rows, got {dispatch.shape[0]}")
    dispatch = dispatch[-grid * grid:]
    fig, axes = figure_axes(ax, slots, figsize=(1.25 * slots, 1.6))
    for j, a in enumerate(axes[:slots]):
        a.imshow(dispatch[:, j].reshape(grid, grid), cmap="magma")
        a.set_title(f"slot {j}", fontsize=8)
        a.axis("off")
    return fig


def plot_training(histories: dict, column: str, title: str = "", ax=None):
    """One line per variant of a logged training column (``ce``, ``centre_distance``, ...)."""
    from facelab.plotting import PALETTE

    fig, (a,) = figure_axes(ax, 1, figsize=(5, 3.2))
    for i, (name, h) in enumerate(histories.items()):
        if len(h) and column in h:
            label = name if isinstance(name, str) else " / ".join(map(str, name))   # (protocol, variant) keys
            a.plot(h["step"], h[column], label=label, color=PALETTE[i % len(PALETTE)])
    a.set(title=title or column, xlabel="step", ylabel=column)
    return fig


def plot_feature_space(table: pd.DataFrame, title: str = "", ax=None):
    """Scatter of :func:`feature_table` coloured by attack type, with the live and fake class centres (stars) and
    the centre of every attack type (labelled)."""
    from facelab.plotting import PALETTE

    fig, (a,) = figure_axes(ax, 1, figsize=(5.5, 4.4))
    kinds = [k for k in _ORDER if k in set(table["attack"])]
    for i, k in enumerate(kinds):
        t = table[table["attack"] == k]
        a.scatter(t["pc1"], t["pc2"], s=9, alpha=0.55, color=PALETTE[i % len(PALETTE)], label=k,
                  marker="o" if k == "live" else ("s" if t["family"].iloc[0] == "physical" else "^"))
        a.annotate(k, (t["pc1"].mean(), t["pc2"].mean()), fontsize=8, fontweight="bold", ha="center")
    for live, name in ((1, "live centre"), (0, "fake centre")):
        t = table[table["live"] == live]
        a.scatter(t["pc1"].mean(), t["pc2"].mean(), marker="*", s=260, color="k" if live else "#d1495b",
                  edgecolor="white", zorder=5, label=name)
    a.set(title=title, xlabel="PC 1", ylabel="PC 2")
    return fig


def plot_intervals(intervals: AblationIntervals, metric: str = "ACER", ax=None):
    """Point estimates and bootstrap intervals of one metric of :func:`ablation_intervals`: variants on the y axis,
    one colour per protocol."""
    from facelab.plotting import PALETTE

    table = intervals.table(metric)
    fig, (a,) = figure_axes(ax, 1, figsize=(7, 0.45 * len(table) + 1.2))
    protos = list(dict.fromkeys(table.columns.get_level_values(0)))
    y = np.arange(len(table))
    for i, p in enumerate(protos):
        off = (i - (len(protos) - 1) / 2) * 0.22
        v, lo, hi = (table[p, c].to_numpy() for c in ("value", "lo", "hi"))
        a.errorbar(v, y + off, xerr=[v - lo, hi - v], fmt="o", ms=4, capsize=2, color=PALETTE[i % len(PALETTE)],
                   label=p)
    a.set_yticks(y, list(table.index))
    a.invert_yaxis()
    unit = {"identity": "identities", "image": "images"}.get(intervals.unit, intervals.unit)
    a.set(xlabel=f"{metric} ({intervals.level:.0%} bootstrap interval over test {unit})")
    a.legend(fontsize=7, loc="lower right")
    return fig
