"""Diagnostics of the anti-spoofing models: how far an upcycled Soft MoE starts from the dense tower, and
inference speed.

Used by chapter 04 (``notebooks/04_face_antispoofing.ipynb``, sections "Upcycling is not free" and the cost table)
and by ``benchmarks/bench_antispoof.py``.
"""

from __future__ import annotations

import math
import time

import pandas as pd
import torch
from torch.nn import functional as F

from facelab.antispoof.detector import AttackDetector, embed, predict_live

__all__ = ["upcycling_gap", "throughput"]


@torch.no_grad()
def upcycling_gap(clip, detector: AttackDetector, images: torch.Tensor, batch_size: int = 256) -> pd.DataFrame:
    """How far an upcycled (Soft MoE) image tower starts from the pretrained dense one, before any fine-tuning.

    For every Soft MoE block of ``detector.visual``, on the tokens that reach it from ``images``:

    * ``dispatch entropy / log(tokens)``: mean entropy of the dispatch weights of a slot over the routed tokens
      (all tokens for a :class:`~facelab.antispoof.moe.SoftMoE`, the patch tokens for a
      :class:`~facelab.antispoof.moe.ParallelMoE`), divided by its maximum (1 = every slot is the plain average
      of the tokens, 0 = every slot reads one token);
    * ``cosine to dense MLP output``: mean cosine between the Soft MoE output token and the pretrained MLP's output
      for the same token (1 = the upcycled block computes the same function).

    And one ``embedding`` row: mean cosine between the final image embeddings of the upcycled and the dense tower
    (in the cosine column). A value well below 1 means fine-tuning starts from a tower that no longer computes the
    pretrained features, and has to recover them first.
    """
    from facelab.antispoof.moe import ParallelMoE, SoftMoE

    dense = clip.visual
    up = detector.visual
    dev = next(up.parameters()).device
    was_dense, was_up = dense.training, up.training
    dense.eval()
    up.eval()
    rows = []
    n = up.n_layers
    for i, block in enumerate(up.transformer.resblocks):
        if not isinstance(block.mlp, (SoftMoE, ParallelMoE)):
            continue
        ent, cos, count = 0.0, 0.0, 0
        for k in range(0, images.shape[0], batch_size):
            x = up.tokens(images[k:k + batch_size].to(dev), stop=i)
            h = block.ln_2(block.attention_residual(x))
            dispatch, _ = block.mlp.routing(h)                          # (B, routed tokens, G, S)
            p = dispatch.clamp_min(1e-12)
            ent += float((-(p * p.log()).sum(1) / math.log(dispatch.shape[1])).mean()) * h.shape[0]
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
