r"""DiffAIM: adversarial identity manipulation with a diffusion model (Wang et al. 2025, arXiv 2504.21646).

The source face is encoded by the model's autoencoder and inverted with edit-friendly DDPM inversion; the reverse
process is then replayed, and during the *last* :math:`K` reverse steps the current latent :math:`x_t` is nudged by
a few gradient steps so the image the step predicts looks like the target identity to an ensemble of face
recognisers. At reverse step :math:`t`:

.. math::
    \mathcal L(x_t) = \underbrace{\sum_m w_m\,\frac1A\sum_a \big[\cos(f_m(\tau_a(\hat x_0)), f_m(x_{tgt}))
        - \cos(f_m(\tau_a(\hat x_0)), f_m(x_{src})) + 1\big]}_{\text{identity}}
      + \lambda_{sem}\,\big(1-\overline{\cos}_c(h(x_t), h(x_t^{benign}))\big)
      - \lambda_{str}\,\mathcal S(x_t, x_t^{benign})
      - \lambda_{per}\max(0, D(\hat x_0, x_{ref}) - \delta)

with :math:`\hat x_0` the step's prediction of the clean image (decoded by the autoencoder), :math:`\tau_a` random
noise and resize-and-pad augmentations (the public code's ``input_noise`` then ``input_diversity``), ensemble weights
:math:`w = \mathrm{softmax}(1 - \text{score})` recomputed after every inner step (models the attack is already
winning on get less weight), :math:`h` the output of the UNet's last down block and :math:`\overline{\cos}_c` the
cosine over spatial positions per channel, averaged over channels (:func:`facelab.diffusion.hooks.per_channel_cosine`,
as the public code), :math:`\mathcal S` the mean squared difference of the self-attention logits of the adversarial
and benign latents, and :math:`D` a perceptual distance with margin :math:`\delta`. Each inner step ascends
:math:`\mathcal L` and clamps the change of :math:`x_t` to :math:`\pm\epsilon`; the step then continues from the
*benign* update plus that change: :math:`x_{t-1} = \mathrm{step}(x_t) + (x_t^{adv} - x_t)`.

Published settings (METHODS.md, ``Liqin-Wang/DiffAIM``'s ``config.py``) and what the quick CPU profile changes;
every one is a field of :class:`DiffAIMConfig`, :data:`PUBLISHED_DEFAULTS` holds the published values:

=============================  ======================  ====================================================
setting                        published (SD 1.5)      quick profile (64 px latent model, CPU)
=============================  ======================  ====================================================
inference steps / inversion    100, DDPM eta = 1       scaled down, same *fraction* manipulated (last 20 %)
manipulated (last) steps K     20                      scaled down (chapter 05 states the factor)
inner gradient steps           10                      scaled down (chapter 05 states the factor)
step size                      3 x raw gradient        RMS-normalised gradient, ``step_size x eps``
clamp eps on the latent        0.05                    0.05
augmentations A                5                       5
identity / semantic weights    1 / 2                   1 / 2
semantic features              down_blocks[-1]         down_blocks[-1], per-channel spatial cosine
structure weight               0.1                     0.1
perceptual weight / margin     8 / 0.01 (LPIPS-alex)   8 / margin calibrated on 1 - SSIM (no LPIPS weights)
guidance scale src / tgt       3.5 / 15 (*)            1 / 1
prompt                         "" (empty)              "" (empty)
image size                     256                     64
=============================  ======================  ====================================================

(*) The public code inverts and replays with the empty prompt and no conditional branch, so there the two guidance
scales have no effect; the unconditional prediction (scale 1 on the empty prompt) is the same computation.

**Perceptual term.** LPIPS's network weights cannot be had offline, so :math:`D = 1-\mathrm{SSIM}`. A margin of 0.01
means something else on that scale than on LPIPS's, so it is *calibrated*
(:func:`calibrate_perceptual_margin`): the mean 1 - SSIM that pixel PGD at its budget costs on the faces at hand, so
the guidance may change as much structure as the pixel baseline does before the term pushes back. :math:`x_{ref}` is the decoded prediction of the *benign*
latent at the same step (``perceptual_reference="benign"``: the term then charges only the change the guidance made,
not the blur of a prediction from a noisy latent nor the autoencoder's reconstruction error), the image the unguided
replay returns (``"reconstruction"``) or the source (``"source"``, the public code, where the last 20 of 100 steps
are nearly noise-free). Both terms' gradients are logged per inner step
(``history``: ``grad identity`` and ``grad perceptual``, L2 norms with respect to the decoded image), so the chapter
can show whether one swamps the other.

**Step size.** The paper's raw-gradient step (3 x gradient) is tuned to SD's latent and to its recognisers'
gradient scale; ours differ, so the default divides the gradient by its per-image RMS and steps ``step_size x eps``
(``normalize_gradient=False`` restores the raw step).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from facelab.core.images import ssim
from facelab.diffusion.hooks import UNetProbe
from facelab.diffusion.inversion import (Inversion, check_guidance_scale, ddpm_inversion, noise_prediction,
                                         step_terms)
from facelab.models.face_model import FaceModel
from facelab.privacy.inputs import check_faces

__all__ = ["DiffAIMConfig", "PUBLISHED_DEFAULTS", "ProtectionResult", "diffaim_protect", "guidance_step",
           "identity_score", "augment_chips", "check_attack_inputs", "calibrate_perceptual_margin",
           "slice_inversion"]


@dataclass
class DiffAIMConfig:
    """Every knob of DiffAIM (defaults: the quick profile; :data:`PUBLISHED_DEFAULTS`: the paper)."""

    num_steps: int = 20
    manipulated_steps: int = 4
    inner_steps: int = 3
    epsilon: float = 0.05
    step_size: float = 1.0
    normalize_gradient: bool = True
    n_augment: int = 5
    id_weight: float = 1.0
    semantic_weight: float = 2.0
    structure_weight: float = 0.1
    perceptual_weight: float = 8.0
    perceptual_margin: float = 0.01
    perceptual_reference: str = "benign"
    feature_block: str = "down_blocks[-1]"
    guidance_scale_source: float = 1.0
    guidance_scale_target: float = 1.0
    prompt: str | None = ""
    seed: int = 0

    def __post_init__(self):
        for k in ("inner_steps", "n_augment", "num_steps"):
            if not isinstance(getattr(self, k), int) or int(getattr(self, k)) < 1:
                raise ValueError(f"{k} must be an integer >= 1, got {getattr(self, k)!r}")
        if not 1 <= self.manipulated_steps <= self.num_steps:
            raise ValueError(f"manipulated_steps must lie in [1, num_steps={self.num_steps}], "
                             f"got {self.manipulated_steps}")
        self.guidance_scale_source = check_guidance_scale(self.guidance_scale_source, "guidance_scale_source")
        self.guidance_scale_target = check_guidance_scale(self.guidance_scale_target, "guidance_scale_target")
        for k in ("epsilon", "step_size"):
            v = getattr(self, k)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{k} must be a finite number > 0, got {v!r}")
        for k in ("id_weight", "semantic_weight", "structure_weight", "perceptual_weight", "perceptual_margin"):
            v = getattr(self, k)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{k} must be a finite number >= 0, got {v!r}")
        if self.perceptual_reference not in ("benign", "reconstruction", "source"):
            raise ValueError(f"perceptual_reference must be 'benign', 'reconstruction' or 'source', got "
                             f"{self.perceptual_reference!r}")
        if self.feature_block not in ("down_blocks[-1]", "mid_block"):
            raise ValueError(f"feature_block must be 'down_blocks[-1]' (the public code) or 'mid_block', got "
                             f"{self.feature_block!r}")

    @property
    def gradient_steps(self) -> int:
        """Gradient steps per image: ``manipulated_steps x inner_steps``."""
        return self.manipulated_steps * self.inner_steps


#: DiffAIM's published settings (METHODS.md; ``config.py`` of the public code), for the full profile on SD 1.5.
PUBLISHED_DEFAULTS = DiffAIMConfig(num_steps=100, manipulated_steps=20, inner_steps=10, epsilon=0.05, step_size=3.0,
                                   normalize_gradient=False, n_augment=5, perceptual_margin=0.01,
                                   perceptual_reference="source", guidance_scale_source=1.0,
                                   guidance_scale_target=1.0, prompt="")


@dataclass
class ProtectionResult:
    """Protected images and what it took to make them (``history``: one row per inner step, or per PGD step)."""

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
    """DiffAIM's input diversity, as the public code's ``input_diversity(input_noise(x))``: ``n`` copies, each
    with probability ``p`` given Gaussian noise of random amplitude up to ``sqrt(noise_scale)``, then with
    probability ``p`` shrunk to a random size in [resize_rate, 1] of the side and zero-padded back at a random
    offset. Every copy is drawn at random (``n = 1``: the chips unchanged). Returns (n * N, C, S, S)."""
    if n <= 1:
        return chips
    out = []
    S = chips.shape[-1]
    for _ in range(n):
        x = chips
        if torch.rand(1, generator=generator).item() < p:
            amp = torch.rand(1, generator=generator).item() * noise_scale ** 0.5
            x = x + amp * torch.randn(x.shape, generator=generator).to(x.device)
        r = torch.rand(3, generator=generator).tolist()
        if r[0] < p:
            s = int(round(S * (resize_rate + (1 - resize_rate) * r[1])))
            off = int(r[2] * (S - s + 1)) if s < S else 0
            x = F.pad(F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False),
                      (off, S - s - off, off, S - s - off))
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


@torch.no_grad()
def calibrate_perceptual_margin(perturbed: torch.Tensor, originals: torch.Tensor) -> float:
    """DiffAIM's perceptual margin on the 1 - SSIM scale, calibrated on a reference perturbation: the mean
    1 - SSIM of ``perturbed`` against ``originals``. Chapter 05 passes pixel PGD's output at its budget, so the
    guidance may change as much structure as the pixel baseline does and pays ``perceptual_weight`` per unit of
    1 - SSIM beyond it (the paper's 0.01 is on LPIPS's scale, which 1 - SSIM does not share)."""
    if not torch.is_tensor(perturbed) or perturbed.shape != getattr(originals, "shape", None):
        raise ValueError(f"perturbed and originals must be tensors of the same shape, got "
                         f"{tuple(getattr(perturbed, 'shape', ()))} and {tuple(getattr(originals, 'shape', ()))}")
    return float((1 - ssim(perturbed.float(), originals.float())).mean())


def slice_inversion(inv: Inversion, index) -> Inversion:
    """The :class:`Inversion` of a subset of its images (``index``: slice or index tensor)."""
    cond = inv.cond if inv.cond.shape[0] == 1 else inv.cond[index]
    return Inversion(timesteps=inv.timesteps, xts=inv.xts[:, index],
                     residuals=None if inv.residuals is None else inv.residuals[:, index], cond=cond, eta=inv.eta,
                     guidance_scale=inv.guidance_scale, uncond=inv.uncond)


def _eps_pair(model, x_benign, x_adv, t, cond, uncond, guidance_scale):
    """Noise predictions of [benign; adversarial] in one batch (two UNet calls under classifier-free guidance, so
    each call keeps the benign/adversarial halves the probe compares)."""
    x = torch.cat([x_benign, x_adv])
    c = cond.repeat(2, 1, 1) if cond.shape[0] > 1 else cond
    if guidance_scale == 1.0 or uncond is None:
        return noise_prediction(model, x, t, c)
    eps_u = noise_prediction(model, x, t, uncond)
    eps_c = noise_prediction(model, x, t, c)
    return eps_u + guidance_scale * (eps_c - eps_u)


def guidance_step(model, x_t, x_benign, t, cond, uncond, *, models, landmarks, sources, source_emb, target_emb,
                  weights, cfg: DiffAIMConfig, probe: UNetProbe, reference=None, generator=None):
    """One inner gradient step of DiffAIM on the latent ``x_t``.

    ``x_benign`` is the benign latent at the same step (from the inversion); ``reference`` the image the perceptual
    term compares with (default ``sources``). Returns the new latent (not yet clamped), the new ensemble weights and
    the loss terms per image, including the L2 norms of the identity and perceptual terms' gradients with respect to
    the decoded image (``grad identity``, ``grad perceptual``) and of the whole gradient on the latent
    (``grad latent``)."""
    x_adv = x_t.detach().requires_grad_(True)
    probe.reset()
    eps = _eps_pair(model, x_benign, x_adv, t, cond, uncond, cfg.guidance_scale_target)
    _, x0_hat, _ = step_terms(model.scheduler, x_adv, t, eps.chunk(2)[1], 1.0)
    img = model.decode(x0_hat)
    if cfg.perceptual_reference == "benign":     # the benign latent's own prediction at this step
        with torch.no_grad():
            _, x0_benign, _ = step_terms(model.scheduler, x_benign, t, eps.chunk(2)[0].detach(), 1.0)
            reference = model.decode(x0_benign)
    reference = sources if reference is None else reference
    img_leaf = img.detach().requires_grad_(True)
    scores = identity_score(models, img_leaf, landmarks, source_emb, target_emb, n_augment=cfg.n_augment,
                            generator=generator)                                     # (N, M)
    identity = (weights * scores).sum(1)
    perceptual = (1 - ssim(img_leaf, reference) - cfg.perceptual_margin).clamp_min(0)
    g_id, = torch.autograd.grad(cfg.id_weight * identity.sum(), img_leaf)
    if cfg.perceptual_weight > 0 and bool((perceptual > 0).any()):
        g_per, = torch.autograd.grad(cfg.perceptual_weight * perceptual.sum(), img_leaf)
    else:
        g_per = torch.zeros_like(g_id)
    semantic = probe.semantic_divergence()
    structure = probe.structure if torch.is_tensor(probe.structure) else torch.zeros_like(identity)
    unet_terms = cfg.semantic_weight * semantic - cfg.structure_weight * structure
    # one backward pass through decoder and UNet carries all four terms: d/dimg (identity - perceptual) and the
    # UNet-feature terms
    grad, = torch.autograd.grad([img, unet_terms.sum()], x_adv, grad_outputs=[g_id - g_per, None],
                                allow_unused=True)
    grad = torch.zeros_like(x_adv) if grad is None else grad
    g_norm = grad.flatten(1).norm(dim=1)
    if cfg.normalize_gradient:
        rms = grad.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12).view(-1, 1, 1, 1)
        x_new = x_adv.detach() + cfg.step_size * cfg.epsilon * grad / rms
    else:
        x_new = x_adv.detach() + cfg.step_size * grad
    new_weights = torch.softmax(1 - scores.detach(), dim=1)
    loss = (cfg.id_weight * identity + cfg.semantic_weight * semantic - cfg.structure_weight * structure
            - cfg.perceptual_weight * perceptual)
    terms = {"identity": identity.detach(), "semantic": semantic.detach(), "structure": structure.detach(),
             "perceptual": perceptual.detach(), "1 - SSIM": (1 - ssim(img.detach(), reference)).detach(),
             "loss": loss.detach(), "grad identity": g_id.flatten(1).norm(dim=1),
             "grad perceptual": g_per.flatten(1).norm(dim=1), "grad latent": g_norm.detach()}
    return x_new, new_weights, terms


# --------------------------------------------------------------------------------------------- the attack
def diffaim_protect(model, sources: torch.Tensor, targets: torch.Tensor | None,
                    models: Mapping[str, FaceModel] | Sequence,
                    *, landmarks: torch.Tensor, target_landmarks: torch.Tensor | None = None,
                    config: DiffAIMConfig | None = None, prompts=None, inversion: Inversion | None = None,
                    source_ids=None, target_ids=None, batch_size: int | None = None,
                    progress: Callable | None = None) -> ProtectionResult:
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
        Prompts for inversion and reverse process (default ``config.prompt``; the published setting is "").
    inversion : Inversion, optional
        A DDPM inversion of ``sources`` made with ``config.num_steps`` (reuse across runs).
    source_ids, target_ids : sequence, optional
        Identities, checked to differ.
    batch_size : int, optional
        Guide this many faces at a time (less memory; default all at once). The augmentations of the chunk that
        starts at face ``k`` draw from a generator seeded with ``config.seed + k``, so a chunk's result does not
        depend on the other chunks.

    Returns
    -------
    ProtectionResult
        ``history`` has one row per (chunk, manipulated step, inner step) with the loss terms and gradient norms
        averaged over the chunk's faces.
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
    elif inversion.xts.shape[1] != sources.shape[0]:
        raise ValueError(f"the inversion holds {inversion.xts.shape[1]} images but {sources.shape[0]} sources were "
                         "given: invert the same sources")
    N = sources.shape[0]
    bs = N if not batch_size else int(batch_size)
    images, history = [], []
    uncond = model.encode_prompt([""]) if cfg.guidance_scale_target != 1.0 else None
    for c0 in range(0, N, bs):
        sl = slice(c0, min(N, c0 + bs))
        gc = g if c0 == 0 else torch.Generator().manual_seed(cfg.seed + c0)   # chunk k: seed + its first index
        imgs, hist = _guide(model, sources[sl], None if dodging else targets[sl], models, landmarks[sl],
                            target_landmarks[sl], cfg, slice_inversion(inversion, sl), uncond, gc, progress)
        images.append(imgs)
        history += [{"chunk": c0 // bs, **h} for h in hist]
    secs = time.perf_counter() - t0
    return ProtectionResult(images=torch.cat(images), config=asdict(cfg), surrogates=[m.name for m in models],
                            seconds=secs, seconds_per_image=secs / max(1, N), history=history)


def _guide(model, sources, targets, models, landmarks, target_landmarks, cfg, inversion, uncond, g, progress):
    dev = model.device
    with torch.no_grad():
        src_emb = [m.embed(sources, landmarks) for m in models]
        tgt_emb = None if targets is None else [m.embed(targets, target_landmarks) for m in models]
        reference = sources if cfg.perceptual_reference == "source" else model.decode(inversion.xts[-1])
    N, M = sources.shape[0], len(models)
    weights = torch.full((N, M), 1.0 / M, device=dev)
    model.scheduler.set_timesteps(cfg.num_steps, device=dev)
    S, K = inversion.num_steps, cfg.manipulated_steps
    cond = inversion.cond
    history = []
    x = inversion.xts[S - K]                       # skip: start from the benign latent K steps before the end
    steps = range(S - K, S) if progress is None else progress(range(S - K, S), desc="DiffAIM")
    with UNetProbe(model.unet, where=cfg.feature_block) as probe:
        for i in steps:                            # the last K reverse steps, each with inner gradient steps
            t = inversion.timesteps[i]
            probe.active = False
            with torch.no_grad():                  # where the unguided step would go from the current latent
                eps = noise_prediction(model, x, t, cond, cfg.guidance_scale_target, uncond)
                mu, _, _ = step_terms(model.scheduler, x, t, eps, inversion.eta)
                x_prev = mu + inversion.residuals[i]
            probe.active = True
            x_adv = x
            for j in range(cfg.inner_steps):
                x_adv, weights, terms = guidance_step(
                    model, x_adv, inversion.xts[i], t, cond, uncond, models=models,
                    landmarks=landmarks, sources=sources, source_emb=src_emb, target_emb=tgt_emb, weights=weights,
                    cfg=cfg, probe=probe, reference=reference, generator=g)
                delta = (x_adv - x).clamp(-cfg.epsilon, cfg.epsilon)
                at_clamp = float((delta.abs() >= cfg.epsilon * (1 - 1e-6)).float().mean())
                x_adv = x + delta
                history.append({"step": int(i), "inner": j, **{k: float(v.float().mean()) for k, v in terms.items()},
                                "at clamp": at_clamp})
            x = x_prev + (x_adv - x)               # benign update plus the adversarial change
    with torch.no_grad():
        images = model.decode(x)
    return images.detach(), history
