r"""Class-aware regularisers of FG-MoE-CLIP-CAR: the Disentanglement and Cluster Distillation Modules.

Both act on L2-normalised image embeddings :math:`f_i` with binary labels :math:`y_i \in \{\text{live}=1,
\text{fake}=0\}` (any integer class labels work). The paper publishes no code; these are the formulas we use.

Disentanglement Module (DM)
    pushes the live and fake class centres apart. With batch centres :math:`\mu_k = \operatorname{mean}_{y_i=k} f_i`
    (inside the unit ball, so :math:`\lVert\mu_1-\mu_0\rVert \le 2`):

    .. math:: \mathcal L_{DM} = 1 - \tfrac12\lVert \mu_{\text{live}} - \mu_{\text{fake}} \rVert_2 \in [0, 1].

    It is 0 only when each class collapses to a point and the two points are antipodal. Gradients flow through the
    centres, so every feature of a class moves with its centre.

Cluster Distillation Module (CDM)
    pulls each feature to its own (detached, normalised) centre :math:`\hat c_{y}` and keeps it at least a margin
    :math:`m` (in cosine distance :math:`d(f, c) = 1 - f^\top \hat c`) from every other centre, weighting distant,
    hard features more:

    .. math::

       \mathcal L_{CDM} = \frac{1}{K}\sum_k \sum_{i: y_i = k} w_i\, d(f_i, \hat c_k)
        + \frac{1}{N}\sum_i \sum_{k \ne y_i} \max\bigl(0, m - d(f_i, \hat c_k)\bigr),
       \qquad w_i = \operatorname{softmax}_{i: y_i = k}\bigl(d(f_i, \hat c_k)/\tau\bigr).

    The centres act as fixed teachers within a step ("distillation"); the softmax weights make the farthest features
    of a class dominate its pull term (:math:`\tau\to\infty` gives the plain mean). The loss is 0 exactly when every
    feature sits on its centre and the centres are at least :math:`m` apart.

    ``compact="live"`` keeps the pull term of the live class only (the sum over :math:`k` runs over live alone;
    the push term and the distant-feature weights are unchanged): as in SSDG and the asymmetric triplet losses of
    face anti-spoofing, the live faces are made compact while the fakes are only kept away from them, because
    pulling every fake onto one seen-attack centre can hurt attacks of unseen types. ``compact="both"`` (default)
    is the formula above.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["class_centres", "centre_distance", "disentanglement_loss", "cluster_distillation_loss"]


def _check(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(features, torch.Tensor) or features.ndim != 2:
        raise ValueError(f"features must be a (N, D) tensor, got {getattr(features, 'shape', type(features))}")
    labels = torch.as_tensor(labels, device=features.device).long()
    if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(f"labels must have shape ({features.shape[0]},), got {tuple(labels.shape)}")
    return features, labels


def class_centres(features: torch.Tensor, labels: torch.Tensor, n_classes: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean feature of each class, ``(n_classes, D)``, and a boolean ``(n_classes,)`` of the classes present."""
    features, labels = _check(features, labels)
    onehot = F.one_hot(labels, n_classes).to(features.dtype)  # (N, K)
    counts = onehot.sum(0)
    centres = onehot.t() @ features / counts.clamp_min(1).unsqueeze(1)
    return centres, counts > 0


def centre_distance(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Euclidean distance between the live (1) and fake (0) centres of the L2-normalised features."""
    c, present = class_centres(F.normalize(features.detach().float(), dim=1), labels)
    if not bool(present.all()):
        raise ValueError("centre_distance needs both live (1) and fake (0) samples")
    return float(torch.linalg.vector_norm(c[1] - c[0]))


def disentanglement_loss(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """DM loss ``1 - ||mu_live - mu_fake|| / 2`` on L2-normalised features (0 when a class is missing)."""
    features, labels = _check(features, labels)
    c, present = class_centres(F.normalize(features, dim=1), labels)
    if not bool(present.all()):
        return features.sum() * 0.0
    return 1.0 - 0.5 * torch.linalg.vector_norm(c[1] - c[0])


def cluster_distillation_loss(features: torch.Tensor, labels: torch.Tensor, margin: float = 1.0,
                              temperature: float = 0.1, n_classes: int = 2,
                              centres: torch.Tensor | None = None, compact: str = "both") -> torch.Tensor:
    """CDM loss (see the module docstring).

    Parameters
    ----------
    features : (N, D) tensor
        Image embeddings (normalised inside).
    labels : (N,) integer tensor
    margin : float
        Cosine-distance margin to the other centres (1 = orthogonal).
    temperature : float
        Softmax temperature of the hard-feature weights; ``float("inf")`` weights all features equally.
    centres : (n_classes, D) tensor, optional
        Fixed centres (for example a running average); default: the detached batch centres.
    compact : {"both", "live"}
        Which classes the pull term compacts: every class, or the live class (label 1) only.
    """
    if compact not in ("both", "live"):
        raise ValueError(f"compact must be 'both' or 'live', got {compact!r}")
    features, labels = _check(features, labels)
    f = F.normalize(features, dim=1)
    if centres is None:
        centres, present = class_centres(f.detach(), labels, n_classes)
    else:
        centres = centres.detach()
        present = torch.zeros(n_classes, dtype=torch.bool, device=f.device)
        present[labels.unique()] = True
    chat = F.normalize(centres, dim=1)
    dist = 1.0 - f @ chat.t()  # (N, K) cosine distance to every centre
    own = dist.gather(1, labels[:, None]).squeeze(1)
    pull, k_used = f.new_zeros(()), 0
    for k in (range(n_classes) if compact == "both" else (1,)):
        sel = labels == k
        if not bool(sel.any()):
            continue
        d = own[sel]
        if temperature == float("inf"):
            w = torch.full_like(d, 1.0 / d.numel())
        else:
            w = torch.softmax(d.detach() / temperature, dim=0)
        pull = pull + (w * d).sum()
        k_used += 1
    pull = pull / max(k_used, 1)
    other = torch.ones_like(dist, dtype=torch.bool)
    other.scatter_(1, labels[:, None], False)
    other &= present[None, :]
    push = (F.relu(margin - dist) * other).sum(1).mean()
    return pull + push
