r"""Baselines for identity protection: pixel-space PGD and reconstruction without guidance.

**PGD** (Madry et al. 2018) in pixel space with the *same budget* as DiffAIM: as many gradient steps as DiffAIM's
``manipulated_steps x inner_steps``, the same surrogate ensemble, the same 5 augmentations (input diversity) and the
same identity objective (cos to target - cos to source, ensemble weights softmax(1 - score)), under an
:math:`L_\infty` bound

.. math::  x^{k+1} = \Pi_{\|x - x_{src}\|_\infty \le \epsilon}\big(x^k + \alpha\,\mathrm{sign}\nabla_x\mathcal L_{id}(x^k)\big),
           \quad \alpha = 2.5\,\epsilon / n_{steps}.

**Reconstruction** runs the DDPM-inversion reverse process with no guidance: it returns the source exactly, so its
success rate is the floor (what the recognisers say about the clean faces).
"""

from __future__ import annotations

import math
import time
from typing import Mapping, Sequence

import torch

from facelab.models.face_model import FaceModel
from facelab.privacy.diffaim import ProtectionResult, check_attack_inputs, identity_score
from facelab.privacy.inputs import check_faces

__all__ = ["pgd_protect", "reconstruct"]


def pgd_protect(sources: torch.Tensor, targets: torch.Tensor, models: Mapping[str, FaceModel] | Sequence, *,
                landmarks: torch.Tensor, target_landmarks: torch.Tensor | None = None, epsilon: float = 8 / 255,
                steps: int = 12, step_size: float | None = None, n_augment: int = 5, seed: int = 0,
                source_ids=None, target_ids=None, batch_size: int | None = None) -> ProtectionResult:
    """Targeted (impersonation) PGD in pixel space.

    Parameters
    ----------
    sources, targets : torch.Tensor
        (N, 3, H, W) in [0, 1].
    models : surrogate FaceModels (differentiable).
    landmarks, target_landmarks : (N, 68, 2) pixel landmarks.
    epsilon : float
        :math:`L_\\infty` budget in [0, 1] pixel units.
    steps : int
        Gradient steps (use DiffAIM's ``manipulated_steps * inner_steps`` for the same budget).
    step_size : float, optional
        Default ``2.5 * epsilon / steps``.
    n_augment : int
        Augmented copies per step (as DiffAIM: 5).

    batch_size : int, optional
        Attack this many faces at a time; the chunk starting at face ``k`` draws its augmentations from a generator
        seeded with ``seed + k`` (a chunk's result does not depend on the others).

    ``history`` has one row per step: the mean identity score and the L2 norm of the gradient on the image.
    """
    models = list(models.values()) if isinstance(models, Mapping) else list(models)
    check_attack_inputs(sources, targets, source_ids, target_ids)
    check_faces(sources, landmarks)
    check_faces(targets, landmarks if target_landmarks is None else target_landmarks)
    if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon > 0) or int(steps) < 1:
        raise ValueError(f"need epsilon > 0 and steps >= 1, got epsilon={epsilon}, steps={steps}")
    dev = models[0].device
    x0 = sources.to(dev).float()
    landmarks = landmarks.to(dev)
    target_landmarks = (landmarks if target_landmarks is None else target_landmarks).to(dev)
    alpha = 2.5 * epsilon / steps if step_size is None else step_size
    t0 = time.perf_counter()
    N = x0.shape[0]
    bs = N if not batch_size else int(batch_size)
    out, history = [], []
    for c0 in range(0, N, bs):
        sl = slice(c0, min(N, c0 + bs))
        g = torch.Generator().manual_seed(seed + c0)          # chunk k: seed + its first index
        x, hist = _pgd_chunk(models, x0[sl], targets[sl].to(dev).float(), landmarks[sl], target_landmarks[sl],
                             epsilon, steps, alpha, n_augment, g)
        out.append(x)
        history += [{"chunk": c0 // bs, **h} for h in hist]
    x = torch.cat(out)
    secs = time.perf_counter() - t0
    return ProtectionResult(images=x.detach(), config={"epsilon": epsilon, "steps": steps, "step_size": alpha,
                                                       "n_augment": n_augment},
                            surrogates=[m.name for m in models], seconds=secs, seconds_per_image=secs / N,
                            history=history)


def _pgd_chunk(models, x0, targets, landmarks, target_landmarks, epsilon, steps, alpha, n_augment, g):
    with torch.no_grad():
        src = [m.embed(x0, landmarks) for m in models]
        tgt = [m.embed(targets, target_landmarks) for m in models]
    N, M = x0.shape[0], len(models)
    w = torch.full((N, M), 1.0 / M, device=x0.device)
    x = x0.clone()
    history = []
    for _ in range(steps):
        x.requires_grad_(True)
        scores = identity_score(models, x, landmarks, src, tgt, n_augment=n_augment, generator=g)
        loss = (w * scores).sum()
        grad, = torch.autograd.grad(loss, x)
        with torch.no_grad():
            x = (x0 + (x + alpha * grad.sign() - x0).clamp(-epsilon, epsilon)).clamp(0, 1)
        w = torch.softmax(1 - scores.detach(), dim=1)
        history.append({"step": len(history), "identity": float(scores.detach().mean()),
                        "grad identity": float(grad.flatten(1).norm(dim=1).mean())})
    return x.detach(), history


@torch.no_grad()
def reconstruct(model, inversion, *, skip_to: int | None = None) -> torch.Tensor:
    """The reverse process of a DDPM inversion with no guidance, from step ``skip_to`` (default 0): the input
    comes back (up to float rounding) whatever the skip."""
    from facelab.diffusion.inversion import reverse_process

    return reverse_process(model, inversion, start=0 if skip_to is None else skip_to)
