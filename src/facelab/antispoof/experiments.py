"""The chapter's ablation: a CNN baseline, a CLIP linear probe, CLIP fine-tuning, + Soft MoE, + FG-MoE, + DM, + CDM.

Every variant trains on the train side of a protocol and is scored on its test side with
:func:`facelab.metrics.pad_report` at the threshold ``p(live) >= 0.5`` (balanced training batches make 0.5 the
natural operating point; no threshold is tuned on test data). The CLIP variants share one pretrained CLIP.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from facelab.antispoof.data import AttackSet, split_protocol
from facelab.antispoof.detector import (AttackDetector, CNNBaseline, LinearProbe, TrainConfig, embed, frozen_tokens,
                                        predict_live, train_detector)

__all__ = ["VARIANTS", "DEFAULT_MOE", "FULL_MODEL", "make_variant", "fit_variant", "evaluate", "AblationResult",
           "run_ablation", "failure_cases", "feature_table", "upcycling_gap", "throughput"]

#: Soft MoE placement and size used by the MoE variants (the last 2 blocks, 4 experts x 4 slots).
DEFAULT_MOE = {"last": 2, "n_experts": 4, "slots_per_expert": 4, "groups": 4}

#: Variant name -> spec. ``kind``: "cnn", "probe" or "clip"; ``moe``: overrides of DEFAULT_MOE or None; loss weights.
VARIANTS: dict[str, dict] = {
    "CNN baseline": {"kind": "cnn"},
    "CLIP linear probe": {"kind": "probe"},
    "CLIP fine-tune": {"kind": "clip", "moe": None},
    "CLIP + Soft MoE": {"kind": "clip", "moe": {"groups": 1}},
    "CLIP + FG-MoE": {"kind": "clip", "moe": {}},
    "CLIP + FG-MoE + DM": {"kind": "clip", "moe": {}, "lambda_dm": 1.0},
    "CLIP + FG-MoE + DM + CDM": {"kind": "clip", "moe": {}, "lambda_dm": 1.0, "lambda_cdm": 1.0},
}
FULL_MODEL = "CLIP + FG-MoE + DM + CDM"


def _spec(name: str, spec: dict | None) -> dict:
    if spec is None:
        if name not in VARIANTS:
            raise ValueError(f"Unknown variant {name!r}; expected one of {list(VARIANTS)} or pass spec=")
        spec = VARIANTS[name]
    if spec.get("kind") not in ("cnn", "probe", "clip"):
        raise ValueError(f"variant kind must be 'cnn', 'probe' or 'clip', got {spec.get('kind')!r}")
    return spec


def make_variant(name: str, clip, spec: dict | None = None, moe: dict | None = None,
                 generator: torch.Generator | None = None):
    """Build an untrained model of a variant (a copy of the CLIP tower for the CLIP variants)."""
    spec = _spec(name, spec)
    if spec["kind"] == "cnn":
        dev = clip.logit_scale.device
        return CNNBaseline(image_size=clip.visual.config.image_size, embed_dim=clip.embed_dim).to(dev)
    if spec["kind"] == "probe":
        return LinearProbe(clip)
    moe_cfg = None if spec.get("moe") is None else {**(moe or DEFAULT_MOE), **spec["moe"]}
    return AttackDetector.from_clip(clip, moe=moe_cfg, generator=generator)


def fit_variant(name: str, clip, train: AttackSet, config: TrainConfig | None = None, spec: dict | None = None,
                moe: dict | None = None, generator: torch.Generator | None = None, progress: Callable | None = None,
                tokens: torch.Tensor | None = None):
    """Build and train one variant; returns ``(model, history)`` (history is empty for the probe).

    ``tokens``: optional :func:`~facelab.antispoof.detector.frozen_tokens` of ``train.images`` for the CLIP variants.
    """
    spec = _spec(name, spec)
    cfg = (config or TrainConfig()).replace(lambda_dm=spec.get("lambda_dm", 0.0),
                                            lambda_cdm=spec.get("lambda_cdm", 0.0))
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    model = make_variant(name, clip, spec, moe, g)
    if spec["kind"] == "probe":
        return model.fit(train.images, train.live), pd.DataFrame()
    if spec["kind"] == "cnn":
        cfg = cfg.replace(lr=3 * cfg.lr, steps=int(cfg.steps * spec.get("step_factor", 2)))
    return model, train_detector(model, train.images, train.live, cfg, g, progress,
                                  tokens=tokens if spec["kind"] == "clip" else None)


def evaluate(model, test: AttackSet, threshold: float = 0.5) -> tuple[dict, np.ndarray]:
    """PAD metrics of a trained model on a test set, and its ``p(live)`` scores."""
    from facelab.metrics import pad_report

    scores = predict_live(model, test.images)
    return pad_report(test.live, scores, threshold, attack_types=test.attack), scores


@dataclass
class AblationResult:
    """Everything the chapter shows: the metrics table and, per (protocol, variant), scores, history and model."""

    table: pd.DataFrame
    scores: dict = field(default_factory=dict)
    histories: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    splits: dict = field(default_factory=dict)
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
            out.seconds += r.seconds
        return out

    def pivot(self, metric: str = "ACER") -> pd.DataFrame:
        """``variant x protocol`` table of one metric, in the variants' order."""
        t = self.table.pivot_table(index="variant", columns="protocol", values=metric, sort=False)
        return t.loc[[v for v in dict.fromkeys(self.table["variant"])]]


def run_ablation(clip, data: AttackSet, protocols: Sequence[str] = ("P1", "P2.1", "P2.2"),
                 variants: Sequence[str] | None = None, config: TrainConfig | None = None, moe: dict | None = None,
                 seeds: Sequence[int] = (0,), test_fraction: float = 0.3, split_seed: int = 0,
                 threshold: float = 0.5, progress: Callable | None = None) -> AblationResult:
    """Train and evaluate every variant on every protocol (and seed); metrics are averaged over seeds.

    Returns
    -------
    AblationResult
        ``table``: one row per (protocol, variant) with the mean of :func:`facelab.metrics.pad_report` over seeds
        (plus ``ACER_std`` and ``seconds``); scores/histories/models of the first seed.
    """
    variants = list(VARIANTS if variants is None else variants)
    for v in variants:
        _spec(v, None)
    t0 = time.perf_counter()
    res = AblationResult(table=pd.DataFrame())
    rows = []
    jobs = [(p, v) for p in protocols for v in variants]
    it = jobs if progress is None else progress(jobs, desc="ablation")
    splits = {p: split_protocol(data, p, test_fraction, split_seed) for p in protocols}
    res.splits = splits
    cfg = config or TrainConfig()
    tokens = {p: frozen_tokens(clip.visual, splits[p][0].images, cfg.finetune_last) for p in protocols}
    for p, v in it:
        train, test = splits[p]
        per_seed = []
        for k, seed in enumerate(seeds):
            ts = time.perf_counter()
            g = torch.Generator().manual_seed(int(seed) * 1000 + 17)
            torch.manual_seed(int(seed))
            model, hist = fit_variant(v, clip, train, cfg, moe=moe, generator=g, tokens=tokens[p])
            metrics, scores = evaluate(model, test, threshold)
            metrics["seconds"] = time.perf_counter() - ts
            per_seed.append(metrics)
            if k == 0:
                res.scores[p, v], res.histories[p, v], res.models[p, v] = scores, hist, model
        frame = pd.DataFrame(per_seed)
        row = {"protocol": p, "variant": v, **frame.mean(numeric_only=True).to_dict()}
        row["ACER_std"] = float(frame["ACER"].std(ddof=0))
        rows.append(row)
    res.table = pd.DataFrame(rows)
    res.seconds = time.perf_counter() - t0
    return res


def failure_cases(result: AblationResult, protocol: str, variant: str, k: int = 8) -> pd.DataFrame:
    """The ``k`` most confident mistakes on a protocol's test set: attacks with the highest ``p(live)`` and live
    faces with the lowest. Columns: ``index`` (into the test set), ``attack``, ``p_live``, ``error``."""
    test = result.splits[protocol][1]
    s = result.scores[protocol, variant]
    y = test.live
    wrong = np.nonzero((s >= 0.5) != (y == 1))[0]
    conf = np.abs(s[wrong] - 0.5)
    order = wrong[np.argsort(-conf)][:k]
    return pd.DataFrame({"index": order, "attack": test.attack[order], "p_live": s[order],
                         "error": np.where(y[order] == 1, "live rejected", "attack accepted")})


def feature_table(model, data: AttackSet, n_components: int = 2) -> pd.DataFrame:
    """PCA of a model's normalised embeddings with the labels: columns ``pc1``, ``pc2``, ``attack``, ``live``,
    ``family``; the PCA is fitted on ``data`` itself."""
    from sklearn.decomposition import PCA

    X = model.embed(data.images) if isinstance(model, LinearProbe) else embed(model.embed, data.images)
    Z = PCA(n_components=n_components, random_state=0).fit_transform(X)
    out = pd.DataFrame(Z, columns=[f"pc{i + 1}" for i in range(n_components)])
    out["attack"], out["live"], out["family"] = data.attack, data.live, data.labels["family"].to_numpy()
    return out


@torch.no_grad()
def upcycling_gap(clip, detector: AttackDetector, images: torch.Tensor, batch_size: int = 256) -> pd.DataFrame:
    """How far an upcycled (Soft MoE) image tower starts from the pretrained dense one, before any fine-tuning.

    For every Soft MoE block of ``detector.visual``, on the tokens that reach it from ``images``:

    * ``dispatch entropy / log(tokens)``: mean entropy of the dispatch weights of a slot over the tokens, divided
      by its maximum (1 = every slot is the plain average of all tokens, 0 = every slot reads one token);
    * ``cosine to dense MLP output``: mean cosine between the Soft MoE output token and the pretrained MLP's output
      for the same token (1 = the upcycled block computes the same function).

    And one ``embedding`` row: mean cosine between the final image embeddings of the upcycled and the dense tower
    (in the cosine column). A value well below 1 means fine-tuning starts from a tower that no longer computes the
    pretrained features, and has to recover them first.
    """
    from facelab.antispoof.moe import SoftMoE

    dense = clip.visual
    up = detector.visual
    dev = next(up.parameters()).device
    was_dense, was_up = dense.training, up.training
    dense.eval()
    up.eval()
    rows = []
    n = up.n_layers
    for i, block in enumerate(up.transformer.resblocks):
        if not isinstance(block.mlp, SoftMoE):
            continue
        ent, cos, count = 0.0, 0.0, 0
        for k in range(0, images.shape[0], batch_size):
            x = up.tokens(images[k:k + batch_size].to(dev), stop=i)
            h = block.ln_2(block.attention_residual(x))
            dispatch, _ = block.mlp.routing(h)                                    # (B, m, G, S)
            p = dispatch.clamp_min(1e-12)
            ent += float((-(p * p.log()).sum(1) / math.log(h.shape[1])).mean()) * h.shape[0]
            ref = dense.transformer.resblocks[i].mlp(h)
            cos += float(F.cosine_similarity(block.mlp(h), ref, dim=-1).mean()) * h.shape[0]
            count += h.shape[0]
        rows.append({"block": f"block {i + 1} of {n}", "dispatch entropy / log(tokens)": ent / count,
                     "cosine to dense MLP output": cos / count})
    if not rows:
        raise ValueError("the detector has no Soft MoE block: build it with AttackDetector.from_clip(clip, moe=...)")
    e_dense = torch.from_numpy(embed(dense, images, batch_size, device=dev))
    e_up = torch.from_numpy(embed(up, images, batch_size, device=dev))
    rows.append({"block": "image embedding", "dispatch entropy / log(tokens)": float("nan"),
                 "cosine to dense MLP output": float(F.cosine_similarity(e_up, e_dense, dim=-1).mean())})
    dense.train(was_dense)
    up.train(was_up)
    return pd.DataFrame(rows).set_index("block")


def throughput(model, images: torch.Tensor, repeats: int = 3, batch_size: int | None = None) -> float:
    """Inference speed of a detector in images per second: :func:`predict_live` on ``images`` in batches of
    ``batch_size`` (default: all at once), best wall time of ``repeats`` runs after one warm-up batch."""
    if repeats < 1 or images.shape[0] < 1:
        raise ValueError(f"need repeats >= 1 and at least one image, got repeats={repeats}, {images.shape[0]} images")
    bs = images.shape[0] if batch_size is None else int(batch_size)
    predict_live(model, images[:min(8, images.shape[0])], bs)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        predict_live(model, images, bs)
        best = min(best, time.perf_counter() - t)
    return images.shape[0] / best
