r"""DiffAIM: adversarial identity manipulation with a diffusion model (Wang et al. 2025, arXiv 2504.21646).

The source face is inverted with edit-friendly DDPM inversion; the reverse process is then replayed, and during the
*last* :math:`K` reverse steps the current latent :math:`x_t` is nudged by a few gradient steps so the image the step
predicts looks like the target identity to an ensemble of face recognisers. At reverse step :math:`t`:

.. math::
    \mathcal L(x_t) = \underbrace{\sum_m w_m\,\frac1A\sum_a \big[\cos(f_m(\tau_a(\hat x_0)), f_m(x_{tgt}))
        - \cos(f_m(\tau_a(\hat x_0)), f_m(x_{src})) + 1\big]}_{\text{identity}}
      + \lambda_{sem}\,\big(1-\cos(h_{mid}(x_t), h_{mid}(x_t^{benign}))\big)
      - \lambda_{str}\,\mathcal S(x_t, x_t^{benign})
      - \lambda_{per}\max(0, D(\hat x_0, x_{src}) - \delta)

with :math:`\hat x_0` the step's prediction of the clean image (decoded), :math:`\tau_a` random resize-and-pad /
noise augmentations, ensemble weights :math:`w = \mathrm{softmax}(1 - \text{score})` recomputed after every inner
step (models the attack is already winning on get less weight), :math:`h_{mid}` the UNet mid-block features,
:math:`\mathcal S` the mean squared difference of the self-attention maps of the adversarial and benign latents
and :math:`D` a perceptual distance. Each inner step ascends :math:`\mathcal L` and clamps the change of
:math:`x_t` to :math:`\pm\epsilon`; the step then continues from the *benign* update plus that change:
:math:`x_{t-1} = \mathrm{step}(x_t) + (x_t^{adv} - x_t)`.

Published defaults (METHODS.md) and ours (quick CPU profile) side by side; every one is a field of
:class:`DiffAIMConfig`:

=============================  ======================  ====================================================
setting                        published (SD 1.5)      quick profile default here
=============================  ======================  ====================================================
inference steps / inversion    100, DDPM eta = 1       12, DDPM eta = 1
manipulated (last) steps K     20                      3
inner gradient steps           10                      2
step size                      3 (raw gradient)        0.5 x eps per inner step, gradient RMS-normalised
clamp eps on the latent        0.05                    0.05
augmentations A                5                       1 (none: each one costs a pass of every model)
identity / semantic weights    1 / 2                   1 / 2
structure weight               0.1                     0.1
perceptual weight / margin     8 / 0.01 (LPIPS)        8 / 0.01 on 1 - SSIM (no LPIPS weights offline)
guidance scale src / tgt       3.5 / 15 (*)            1 / 1 (no CFG: halves the UNet cost)
image size                     256                     64
=============================  ======================  ====================================================

(*) The public code inverts and replays with the empty prompt and no conditional branch, so there the two guidance
scales have no effect; plain conditional prediction (scale 1) is the same computation.

The gradient normalisation is our change: the raw-gradient step of the paper depends on the scale of the latent
space and of the recognisers' gradients, which differ between SD's latent and our pixel-patch latent; dividing by the
per-image RMS makes ``step_size`` a fraction of the clamp.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from facelab.core.images import ssim
from facelab.diffusion.hooks import UNetProbe
from facelab.diffusion.inversion import Inversion, ddpm_inversion, noise_prediction, step_terms
from facelab.models.face_model import FaceModel
from facelab.privacy.inputs import check_faces

__all__ = ["DiffAIMConfig", "PUBLISHED_DEFAULTS", "ProtectionResult", "diffaim_protect", "guidance_step",
           "identity_score", "augment_chips", "check_attack_inputs"]


@dataclass
class DiffAIMConfig:
    """Every knob of DiffAIM (defaults: quick profile; see :data:`PUBLISHED_DEFAULTS`)."""

    num_steps: int = 12
    manipulated_steps: int = 3
    inner_steps: int = 2
    epsilon: float = 0.05
    step_size: float = 0.5
    normalize_gradient: bool = True
    n_augment: int = 1
    id_weight: float = 1.0
    semantic_weight: float = 2.0
    structure_weight: float = 0.1
    perceptual_weight: float = 8.0
    perceptual_margin: float = 0.01
    guidance_scale_source: float = 1.0
    guidance_scale_target: float = 1.0
    prompt: str | None = None
    seed: int = 0

    def __post_init__(self):
        if not 1 <= self.manipulated_steps <= self.num_steps:
            raise ValueError(f"manipulated_steps must lie in [1, num_steps={self.num_steps}], "
                             f"got {self.manipulated_steps}")
        for k in ("inner_steps", "n_augment", "num_steps"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"{k} must be >= 1, got {getattr(self, k)}")
        if self.guidance_scale_target != 1.0:
            raise ValueError("classifier-free guidance during the manipulated steps is not supported "
                             f"(guidance_scale_target must be 1, got {self.guidance_scale_target}); the public "
                             "DiffAIM code uses none either")
        if self.epsilon <= 0:
            raise ValueError(f"epsilon must be > 0, got {self.epsilon}")


#: DiffAIM's published settings (METHODS.md), for the full profile on Stable Diffusion 1.5.
PUBLISHED_DEFAULTS = DiffAIMConfig(num_steps=100, manipulated_steps=20, inner_steps=10, epsilon=0.05, step_size=3.0,
                                   normalize_gradient=False, n_augment=5, guidance_scale_source=1.0,
                                   guidance_scale_target=1.0, prompt="")


@dataclass
class ProtectionResult:
    """Protected images and what it took to make them."""

    images: torch.Tensor
    config: dict
    surrogates: list
    seconds: float
    seconds_per_image: float
    history: list = field(default_factory=list)


# --------------------------------------------------------------------------------------------- pieces
def check_attack_inputs(sources, targets, source_ids=None, target_ids=None):
    """Same number of sources and targets, same shape, and never the same identity (impersonation needs a
    different target)."""
    if not torch.is_tensor(sources) or not torch.is_tensor(targets) or sources.shape != targets.shape:
        raise ValueError(f"sources and targets must be tensors of the same shape (N, 3, S, S); got "
                         f"{tuple(getattr(sources, 'shape', ()))} and {tuple(getattr(targets, 'shape', ()))}")
    if source_ids is not None and target_ids is not None:
        same = [i for i, (a, b) in enumerate(zip(list(source_ids), list(target_ids))) if a == b]
        if same:
            raise ValueError(f"target identity equals the source identity for pairs {same}: impersonation needs a "
                             f"different person as target (to hide without a target, use a dodging attack)")


def augment_chips(chips: torch.Tensor, n: int, generator: torch.Generator | None = None,
                  resize_rate: float = 0.9, noise_scale: float = 0.1, p: float = 0.5) -> torch.Tensor:
    """DiffAIM's input diversity: ``n`` copies, each with probability ``p`` shrunk to a random size in
    [resize_rate, 1] of the side and zero-padded back at a random offset, and with probability ``p`` Gaussian noise
    of random amplitude up to ``sqrt(noise_scale)``. The first copy is left unchanged. Returns (n * N, C, S, S)."""
    out = [chips]
    S = chips.shape[-1]
    for _ in range(n - 1):
        x = chips
        r = torch.rand(3, generator=generator).tolist()
        if r[0] < p:
            s = int(round(S * (resize_rate + (1 - resize_rate) * r[1])))
            off = int(r[2] * (S - s + 1)) if s < S else 0
            x = F.pad(F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False),
                      (off, S - s - off, off, S - s - off))
        if torch.rand(1, generator=generator).item() < p:
            amp = torch.rand(1, generator=generator).item() * noise_scale ** 0.5
            x = x + amp * torch.randn(x.shape, generator=generator).to(x.device)
        out.append(x)
    return torch.cat(out)


def identity_score(models: Sequence[FaceModel], images, landmarks, source_emb, target_emb, *, n_augment: int = 1,
                   generator=None) -> torch.Tensor:
    """Per-image, per-model identity scores (N, M): mean over augmentations of cos(target) - cos(source) + 1.

    ``target_emb=None`` (dodging, no target identity): the score is 1 - cos(source) alone."""
    N = images.shape[0]
    cols = []
    target_emb = [None] * len(models) if target_emb is None else target_emb
    for m, es, et in zip(models, source_emb, target_emb):
        aug = (lambda c: augment_chips(c, n_augment, generator)) if n_augment > 1 else None
        e = m.embed(images, landmarks, augment=aug).view(n_augment, N, -1)
        s = 1 - F.cosine_similarity(e, es.unsqueeze(0), dim=-1)
        if et is not None:
            s = s + F.cosine_similarity(e, et.unsqueeze(0), dim=-1)
        cols.append(s.mean(0))
    return torch.stack(cols, 1)


def guidance_step(model, x_t, x_benign, t, cond, uncond, *, models, landmarks, sources, source_emb, target_emb,
                  weights, cfg: DiffAIMConfig, probe: UNetProbe, generator=None):
    """One inner gradient step of DiffAIM on the latent ``x_t`` (returns the new latent, new ensemble weights and
    the loss terms). ``x_benign`` is the benign latent at the same step (from the inversion)."""
    x_adv = x_t.detach().requires_grad_(True)
    probe.reset()
    eps = noise_prediction(model, torch.cat([x_benign, x_adv]), t, cond.repeat(2, 1, 1) if cond.shape[0] > 1 else cond,
                           cfg.guidance_scale_target, uncond)
    _, x0_hat, _ = step_terms(model.scheduler, x_adv, t, eps.chunk(2)[1], 1.0)
    img = model.decode(x0_hat)
    scores = identity_score(models, img, landmarks, source_emb, target_emb, n_augment=cfg.n_augment,
                            generator=generator)                                     # (N, M)
    identity = (weights * scores).sum(1)
    semantic = probe.semantic_divergence()
    structure = probe.structure if torch.is_tensor(probe.structure) else torch.zeros_like(identity)
    perceptual = (1 - ssim(img, sources) - cfg.perceptual_margin).clamp_min(0)
    loss = (cfg.id_weight * identity + cfg.semantic_weight * semantic - cfg.structure_weight * structure
            - cfg.perceptual_weight * perceptual)
    grad, = torch.autograd.grad(loss.sum(), x_adv)
    if cfg.normalize_gradient:
        grad = grad / grad.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12).view(-1, 1, 1, 1)
        step = cfg.step_size * cfg.epsilon
    else:
        step = cfg.step_size
    x_new = x_adv.detach() + step * grad
    new_weights = torch.softmax(1 - scores.detach(), dim=1)
    terms = {"identity": identity.detach(), "semantic": semantic.detach(), "structure": structure.detach(),
             "perceptual": perceptual.detach(), "loss": loss.detach()}
    return x_new, new_weights, terms


# --------------------------------------------------------------------------------------------- the attack
def diffaim_protect(model, sources: torch.Tensor, targets: torch.Tensor | None,
                    models: Mapping[str, FaceModel] | Sequence,
                    *, landmarks: torch.Tensor, target_landmarks: torch.Tensor | None = None,
                    config: DiffAIMConfig | None = None, prompts=None, inversion: Inversion | None = None,
                    source_ids=None, target_ids=None, progress: Callable | None = None) -> ProtectionResult:
    r"""Make each source face match its target identity for the surrogate recognisers (DiffAIM).

    With ``targets=None`` the same guidance *dodges* instead: the identity term is :math:`1 - \cos(f_m(\hat x_0),
    f_m(x_{src}))` alone, pushing the face away from its own clean embedding (the "DiffAIM used for dodging"
    baseline of the MASQUE chapter).

    Parameters
    ----------
    model : facelab.diffusion.DiffusionModel
    sources, targets : torch.Tensor
        (N, 3, S, S) in [0, 1], S = ``model.image_size``; ``targets[i]`` is the face ``sources[i]`` should match
        (``targets=None``: dodging, see above).
    models : mapping or sequence of FaceModel
        The surrogate ensemble (differentiable).
    landmarks, target_landmarks : torch.Tensor
        (N, 68, 2) pixel landmarks of sources and targets (the protected image keeps the source's geometry).
    config : DiffAIMConfig
    prompts : str or list, optional
        Prompts for inversion and reverse process (default the model's).
    inversion : Inversion, optional
        A DDPM inversion of ``sources`` made with ``config.num_steps`` (reuse across runs).
    source_ids, target_ids : sequence, optional
        Identities, checked to differ.

    Returns
    -------
    ProtectionResult
    """
    cfg = config or DiffAIMConfig()
    models = list(models.values()) if isinstance(models, Mapping) else list(models)
    if not models:
        raise ValueError("DiffAIM needs at least one surrogate face model")
    nd = [m.name for m in models if not m.differentiable]
    if nd:
        raise ValueError(f"surrogates must be differentiable; {nd} are not (use them as black-box victims only)")
    dodging = targets is None
    if not dodging:
        check_attack_inputs(sources, targets, source_ids, target_ids)
    sources = model.check_images(sources)
    check_faces(sources, landmarks)
    if not dodging:
        targets = model.check_images(targets)
        check_faces(targets, landmarks if target_landmarks is None else target_landmarks)
    dev = model.device
    landmarks = landmarks.to(dev)
    target_landmarks = (landmarks if target_landmarks is None else target_landmarks).to(dev)
    g = torch.Generator().manual_seed(cfg.seed)
    t0 = time.perf_counter()
    prompts = prompts if prompts is not None else cfg.prompt
    if inversion is None:
        inversion = ddpm_inversion(model, sources, prompts, num_steps=cfg.num_steps,
                                   guidance_scale=cfg.guidance_scale_source, generator=g)
    elif inversion.num_steps != cfg.num_steps or inversion.residuals is None:
        raise ValueError(f"the inversion must be a DDPM inversion with num_steps={cfg.num_steps}; got "
                         f"{inversion.num_steps} steps, residuals={'yes' if inversion.residuals is not None else 'no'}")
    model.scheduler.set_timesteps(cfg.num_steps, device=dev)
    with torch.no_grad():
        src_emb = [m.embed(sources, landmarks) for m in models]
        tgt_emb = None if dodging else [m.embed(targets, target_landmarks) for m in models]
    N, M = sources.shape[0], len(models)
    weights = torch.full((N, M), 1.0 / M, device=dev)
    S, K = inversion.num_steps, cfg.manipulated_steps
    cond = inversion.cond
    uncond = model.encode_prompt([""]) if cfg.guidance_scale_target != 1.0 else None
    history = []
    x = inversion.xts[S - K]                       # skip: start from the benign latent K steps before the end
    steps = range(S - K, S) if progress is None else progress(range(S - K, S), desc="DiffAIM")
    with UNetProbe(model.unet) as probe:
        for i in steps:                            # the last K reverse steps, each with inner gradient steps
            t = inversion.timesteps[i]
            probe.active = False
            with torch.no_grad():                  # where the unguided step would go from the current latent
                eps = noise_prediction(model, x, t, cond, cfg.guidance_scale_target, uncond)
                mu, _, _ = step_terms(model.scheduler, x, t, eps, inversion.eta)
                x_prev = mu + inversion.residuals[i]
            probe.active = True
            x_adv = x
            for _ in range(cfg.inner_steps):
                x_adv, weights, terms = guidance_step(
                    model, x_adv, inversion.xts[i], t, cond, uncond, models=models,
                    landmarks=landmarks, sources=sources, source_emb=src_emb, target_emb=tgt_emb, weights=weights,
                    cfg=cfg, probe=probe, generator=g)
                x_adv = x + (x_adv - x).clamp(-cfg.epsilon, cfg.epsilon)
                history.append({"step": int(i), **{k: float(v.mean()) for k, v in terms.items()}})
            x = x_prev + (x_adv - x)               # benign update plus the adversarial change
    with torch.no_grad():
        images = model.decode(x)
    secs = time.perf_counter() - t0
    return ProtectionResult(images=images.detach(), config=asdict(cfg), surrogates=[m.name for m in models],
                            seconds=secs, seconds_per_image=secs / N, history=history)
