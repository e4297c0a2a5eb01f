"""Diagonal Fisher information of a classifier's pseudo-label log-likelihood, and the top-k parameter masks FIESTA
builds from it.

For frames ``x_1..x_n`` and the model's own predictions ``y_i = argmax p(y | x_i; theta)``, the diagonal (empirical)
Fisher of parameter entry ``j`` is

    F_j = 1/n sum_i (d log p(y_i | x_i; theta) / d theta_j)^2

the expected squared sensitivity of the model's confidence in what it predicts to that entry: large where a small
change of the entry changes the prediction much. FIESTA updates only the ``k`` entries with the largest ``F_j``.
"""

from __future__ import annotations

from typing import Mapping

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["fisher_diagonal", "topk_mask", "mask_size", "mask_jaccard", "mask_by_layer", "count_parameters"]


def count_parameters(model: nn.Module) -> int:
    """Number of parameter entries of ``model``."""
    return int(sum(p.numel() for p in model.parameters()))


def fisher_diagonal(model: nn.Module, x: torch.Tensor, labels: torch.Tensor | None = None, *,
                    forward=None) -> dict[str, torch.Tensor]:
    """Diagonal Fisher of ``log p(label | x)`` for every parameter of ``model``, averaged over the rows of ``x``.

    Parameters
    ----------
    model : nn.Module
        Its ``forward`` (or ``forward(model, x)``) returns logits, or a tuple whose first element is the logits.
    x : tensor (n, ...)
        The frames, already in the model's input format; one backward pass per frame (per-sample gradients).
    labels : tensor (n,) of int, optional
        Default: the model's own predictions (pseudo-labels), as FIESTA and EATA do.

    Returns
    -------
    dict name -> tensor of the parameter's shape (zeros for parameters the loss does not reach).
    """
    if x.shape[0] == 0:
        raise ValueError("fisher_diagonal needs at least one frame, got an empty batch")
    named = [(n, p) for n, p in model.named_parameters()]
    req = {n: p.requires_grad for n, p in named}
    for _, p in named:
        p.requires_grad_(True)
    fisher = {n: torch.zeros_like(p) for n, p in named}
    try:
        for i in range(x.shape[0]):
            out = forward(model, x[i:i + 1]) if forward is not None else model(x[i:i + 1])
            logits = out[0] if isinstance(out, tuple) else out
            logp = F.log_softmax(logits, dim=1)
            y = int(logp.argmax(1)) if labels is None else int(labels[i])
            grads = torch.autograd.grad(logp[0, y], [p for _, p in named], allow_unused=True)
            for (n, _), g in zip(named, grads):
                if g is not None:
                    fisher[n] += g.detach() ** 2
    finally:
        for n, p in named:
            p.requires_grad_(req[n])
    return {n: f / x.shape[0] for n, f in fisher.items()}


def mask_size(k, total: int) -> int:
    """``k`` as a number of entries: an int in [1, total] or a fraction in (0, 1]."""
    if isinstance(k, bool) or not isinstance(k, (int, float)):
        raise TypeError(f"k must be a number of parameters (int) or a fraction in (0, 1] (float), got {k!r}")
    if isinstance(k, float):
        if not (0.0 < k <= 1.0):
            raise ValueError(f"a fractional mask size must lie in (0, 1], got {k}")
        return max(1, int(round(k * total)))
    if k < 1:
        raise ValueError(f"the mask must select at least one parameter, got k={k}")
    if k > total:
        raise ValueError(f"mask size k={k} is larger than the model, which has {total} parameter entries; "
                         f"use k <= {total} or a fraction")
    return int(k)


def topk_mask(fisher: Mapping[str, torch.Tensor], k) -> dict[str, torch.Tensor]:
    """Boolean mask (same keys and shapes as ``fisher``) of the ``k`` entries with the largest Fisher value over all
    parameters together (ties broken by position). ``k``: an int, or a float fraction of all entries."""
    if not fisher:
        raise ValueError("fisher is empty: no parameters to select from")
    names = list(fisher)
    flat = torch.cat([fisher[n].detach().reshape(-1).float() for n in names])
    if not torch.isfinite(flat).all():
        raise ValueError("fisher holds NaN or inf values; recompute it on finite frames")
    kk = mask_size(k, flat.numel())
    sel = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    sel[torch.topk(flat, kk, sorted=False).indices] = True
    out, start = {}, 0
    for n in names:
        size = fisher[n].numel()
        out[n] = sel[start:start + size].reshape(fisher[n].shape)
        start += size
    return out


def mask_jaccard(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Jaccard overlap |a & b| / |a | b| of two masks over the same parameters (1 for two empty masks)."""
    if set(a) != set(b):
        raise ValueError("the two masks cover different parameters")
    inter = sum(int((a[n] & b[n]).sum()) for n in a)
    union = sum(int((a[n] | b[n]).sum()) for n in a)
    return 1.0 if union == 0 else inter / union


def _layer(name: str) -> str:
    return name.rsplit(".", 1)[0]


def mask_by_layer(mask: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """Selected and total entries per layer (parameter name without ``.weight``/``.bias``), in model order."""
    rows: dict[str, list[int]] = {}
    for n, m in mask.items():
        r = rows.setdefault(_layer(n), [0, 0])
        r[0] += int(m.sum())
        r[1] += m.numel()
    df = pd.DataFrame([(k, s, t) for k, (s, t) in rows.items()], columns=["layer", "selected", "total"])
    df["share"] = df["selected"] / df["total"]
    return df
