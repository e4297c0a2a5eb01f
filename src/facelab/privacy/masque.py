r"""MASQUE: localized adversarial makeup by text-guided diffusion, for *dodging* face recognition.

The three building blocks, each in one place below (the public code is TrustMLRG/MASQUE; this is our own
implementation over any diffusers ``UNet2DConditionModel`` + ``DDIMScheduler`` + prompt encoder, i.e. any
:class:`facelab.diffusion.DiffusionModel`):

1. **Null-text inversion** (Mokady et al. 2023), :func:`null_text_inversion`. DDIM inversion with the source
   prompt's embedding :math:`c` and no guidance gives a pivot trajectory :math:`x^*_T,\dots,x^*_0`. Sampling with
   classifier-free guidance of scale :math:`w`,

   .. math:: \tilde\epsilon = \epsilon_\theta(x_t, t, \varnothing_t) + w\,\big(\epsilon_\theta(x_t, t, c)
             - \epsilon_\theta(x_t, t, \varnothing_t)\big),

   drifts away from the pivot; so, step by step from :math:`\bar x_T = x^*_T`, the unconditional embedding
   :math:`\varnothing_t` is optimised (Adam, a few iterations) to minimise
   :math:`\|x^*_{t-1} - \mathrm{DDIM}(\bar x_t, t, c, \varnothing_t)\|^2` and the guided step with the optimised
   embedding gives :math:`\bar x_{t-1}`. Replaying the guided loop with the stored :math:`\varnothing_t` reconstructs
   the source; editing replays it with a new prompt. Only the empty prompt's real tokens are optimised: padded
   positions stay exact zeros, so the quick model's padding mask keeps masking them. ``null_init="source"`` starts
   from the source prompt's own embedding instead (*negative-prompt inversion*, Miyake et al. 2023): the guided
   prediction then equals the conditional one and the guided loop replays the DDIM inversion with no optimisation.
   The inversion also records the source branch: its guided trajectory :math:`\bar x_t`, its conditional noise
   predictions and (``record_attention=True``) its attention maps.
2. **Attention control with a face mask**, :mod:`facelab.privacy.attention` and :mod:`facelab.privacy.masks`:
   prompt-to-prompt with the source branch recorded once: each edit denoises only the edit branch (makeup prompt,
   with the inversion's :math:`\varnothing_t`), whose conditional pass takes the source's cross-attention maps for
   shared tokens and its self-attention maps early on, and records the makeup word's own cross-attention (all its
   word pieces). After every step the edit latent is blended back to the source's outside a mask :math:`M`,
   :math:`x^{edit}_{t-1} \leftarrow \bar x_{t-1} + M \odot (x^{edit}_{t-1} - \bar x_{t-1})`. :math:`M` is the
   landmark face-region mask of the makeup word (lips for lipstick, ...) intersected with the thresholded map of
   the word (its cross-attention, or where the source and edit noise predictions differ when the prompt encoder
   gives a single token). A final pixel composite with the soft region mask makes the change outside the region
   exactly zero.
3. **Pairwise adversarial guidance** for dodging, :func:`pairwise_similarity`: no target identity; the edited
   face (the edit's predicted clean latent :math:`\hat z_0` decoded and composited into the source) is pushed away
   from the *other* images :math:`r \in R_i` of the same person over an ensemble of surrogate recognisers
   :math:`f_m`,

   .. math:: \mathcal L_{pair}(x_i) = \frac1M\sum_m \frac{1}{|R_i|}\sum_{r\in R_i}
             \cos\big(f_m(D(\hat z_0)), f_m(r)\big),\qquad
             \hat z_0 \leftarrow \hat z_0 - \eta\,\frac{M\odot\nabla_{\hat z_0}\mathcal L_{pair}}
             {\mathrm{rms}(M\odot\nabla_{\hat z_0}\mathcal L_{pair})}

   before the DDIM step. The gradient is taken on :math:`\hat z_0` (not back through the UNet) and through a window
   of the decoder around the region (:func:`decode_region`): a guided step costs a fraction of the full chain.

   When a person has no other image the guidance falls back to the source image itself (push away from one's own
   clean embedding) and the result lists those faces; ``on_missing_references="error"`` raises instead.

Baselines for the chapter: :func:`pgd_dodge` (pixel PGD on the same pairwise loss, global or inside the mask), and
the same MASQUE run without adversarial guidance (``MasqueConfig(adversarial=False)``). The chapter's protocol and
evaluation (dodging success at measured thresholds, locality) are in :mod:`facelab.studies.privacy_masque`.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from facelab.core.images import luminance
from facelab.core.regions import TWO_SIDED, face_region_masks, latent_mask, region_for_word
from facelab.diffusion.inversion import ddim_inversion, noise_prediction, step_terms
from facelab.models.face_model import FaceModel
from facelab.privacy.attention import AttentionEditor, SourceAttention, align_prompts, check_prompts
from facelab.privacy.masks import check_landmarks_inside, makeup_word

__all__ = ["NullTextInversion", "null_text_inversion", "record_source_attention", "guided_reconstruction",
           "region_boxes", "decode_region", "MasqueConfig", "MasqueResult",
           "NoReferencesError", "References", "build_references", "pairwise_similarity", "masque_protect",
           "pgd_dodge", "region_parts", "anchor_colour", "hold_chroma"]


# ============================================================================================ 1. null-text inversion
@dataclass
class NullTextInversion:
    r"""A source batch inverted for guided editing.

    Attributes
    ----------
    timesteps : torch.Tensor
        (S,) inference timesteps, noisiest first.
    xts : torch.Tensor
        (S + 1, N, C, h, w) DDIM pivot trajectory; ``xts[0]`` = :math:`x_T`, ``xts[S]`` = the encoded source.
    cond : torch.Tensor
        (N, L, D) source-prompt conditioning.
    uncond : torch.Tensor
        (S, N, L, D) optimised unconditional embedding of every step (the plain empty-prompt embedding repeated
        when ``inner_steps = 0``).
    guidance_scale : float
    losses : list of float
        Final per-step reconstruction loss (mean over images).
    trajectory : torch.Tensor
        (S + 1, N, C, h, w) the guided source trajectory :math:`\bar x_T, \dots, \bar x_0` with the optimised
        embeddings (what :func:`guided_reconstruction` replays): the source branch of every edit.
    source_eps : torch.Tensor
        (S, N, C, h, w) conditional noise prediction of the source prompt along ``trajectory`` (for the
        noise-difference map of single-token models).
    attention : SourceAttention or None
        The source branch's attention maps (``record_attention=True``), replayed into every edit.
    """

    timesteps: torch.Tensor
    xts: torch.Tensor
    cond: torch.Tensor
    uncond: torch.Tensor
    guidance_scale: float
    losses: list = field(default_factory=list)
    trajectory: torch.Tensor | None = None
    source_eps: torch.Tensor | None = None
    attention: SourceAttention | None = None

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])

    def reconstruction(self, model) -> torch.Tensor:
        """The decoded end of ``trajectory`` (what every edit of this batch is compared with), decoded once per
        model and trajectory and reused: a full decode of the batch costs seconds on a CPU."""
        cached = getattr(self, "_decoded", None)       # (model, trajectory, images): identity, not equality
        if cached is None or cached[0] is not model or cached[1] is not self.trajectory:
            with torch.no_grad():
                cached = (model, self.trajectory, model.decode(self.trajectory[-1]))
            self._decoded = cached
        return cached[2]


def _ddim_step(model, x, t, eps):
    mu, x0, _ = step_terms(model.scheduler, x, t, eps, 0.0)
    return mu, x0


def _alpha_prev(model, t, device) -> torch.Tensor:
    """:math:`\\bar\\alpha_s` of the timestep the reverse step from ``t`` lands on."""
    sch = model.scheduler
    s = int(t) - sch.config.num_train_timesteps // sch.num_inference_steps
    return sch.alphas_cumprod.to(device)[s] if s >= 0 else sch.final_alpha_cumprod.to(device)


def _self_tokens(cfg_value, latent_hw) -> int:
    h, w = latent_hw
    return int(cfg_value) if cfg_value is not None else max(1, (h * w) // 4)


def null_text_inversion(model, images: torch.Tensor, prompts=None, *, num_steps: int = 20,
                        guidance_scale: float = 3.0, inner_steps: int = 10, lr: float = 1e-2, tol: float = 1e-5,
                        null_init: str = "empty", record_attention: bool = False, self_replace: float = 0.4,
                        max_self_tokens: int | None = None, progress: Callable | None = None) -> NullTextInversion:
    """Null-text inversion of a batch (Mokady et al. 2023; see the module docstring).

    Parameters
    ----------
    model : facelab.diffusion.DiffusionModel
    images : torch.Tensor
        (N, 3, S, S) in [0, 1].
    prompts : str or list of str, optional
        Source prompt(s) (default ``model.default_prompt``).
    num_steps : int
        DDIM steps.
    guidance_scale : float
        The classifier-free guidance scale the edit will use (> 1).
    inner_steps : int
        Adam iterations per step on the unconditional embedding (0 = plain DDIM inversion, no optimisation).
        Only the rows of the empty prompt's embedding that are not padding are optimised: padded rows stay exact
        zeros, so the padding mask of a token-sequence model keeps masking them.
    lr : float
        Adam learning rate (decays linearly over the steps, as in the paper).
    tol : float
        Early stop of a step's iterations once every image's loss is below ``tol`` (+ a small per-step slack).
    null_init : {"empty", "source"}
        Starting point of the unconditional embedding: the empty prompt's (Mokady et al.), or the source prompt's
        own conditioning: *negative-prompt inversion* (Miyake et al. 2023). With :math:`\\varnothing_t = c` the
        guided prediction equals the conditional one, so the guided loop replays the DDIM inversion without any
        optimisation (``inner_steps=0``), and an edit is guided from the source prompt towards the makeup prompt.
    record_attention : bool
        Also record the source branch's attention (:class:`facelab.privacy.attention.SourceAttention`) for
        prompt-to-prompt edits; ``self_replace`` and ``max_self_tokens`` say which self-attention maps are kept
        (see :class:`MasqueConfig`).

    Returns
    -------
    NullTextInversion
    """
    guidance_scale = _finite(guidance_scale, "guidance_scale")
    if guidance_scale <= 1.0:
        raise ValueError(f"null-text inversion is for guided sampling: guidance_scale must be > 1, got "
                         f"{guidance_scale} (with no guidance use facelab.diffusion.ddim_inversion)")
    pivot = ddim_inversion(model, images, prompts, num_steps=num_steps, guidance_scale=1.0)
    cond, ts, xts = pivot.cond, pivot.timesteps, pivot.xts
    N, S = xts.shape[1], len(ts)
    if null_init not in ("empty", "source"):
        raise ValueError(f"null_init must be 'empty' (null-text inversion) or 'source' (negative-prompt inversion), "
                         f"got {null_init!r}")
    u = (model.encode_prompt([""]).expand(N, -1, -1) if null_init == "empty" else cond.expand(N, -1, -1)).clone()
    keep = (u.abs().amax(-1, keepdim=True) > 0).to(u.dtype)           # padded rows stay zero (masked)
    if keep.sum() == 0:
        keep = torch.ones_like(keep)
    source = SourceAttention() if record_attention else None
    editor = (AttentionEditor(model.unet, None, N, tuple(xts.shape[-2:]), S, source=source, mode="record",
                              self_replace=self_replace,
                              max_self_tokens=_self_tokens(max_self_tokens, xts.shape[-2:]))
              if record_attention else None)
    unconds, losses, traj, src_eps = [], [], [xts[0]], []
    x = xts[0]
    steps = range(S) if progress is None else progress(range(S), desc="null-text inversion")
    for i in steps:
        t = ts[i]
        with torch.no_grad():
            if editor is not None:
                with editor:
                    editor.begin_step(i)
                    eps_c = noise_prediction(model, x, t, cond)
            else:
                eps_c = noise_prediction(model, x, t, cond)
        if inner_steps > 0:
            u = u.detach().requires_grad_(True)
            opt = torch.optim.Adam([u], lr=lr * (1.0 - i / (2.0 * S)))
            for _ in range(inner_steps):
                with torch.enable_grad():
                    eps_u = model.unet(x, t, encoder_hidden_states=u).sample
                    prev, _ = _ddim_step(model, x, t, eps_u + guidance_scale * (eps_c - eps_u))
                    per_image = (prev - xts[i + 1]).pow(2).flatten(1).mean(1)
                    opt.zero_grad(set_to_none=True)
                    per_image.sum().backward()
                opt.step()
                with torch.no_grad():
                    u.mul_(keep)
                if float(per_image.detach().max()) < tol + 2e-5 * i:
                    break
            u = u.detach()
        with torch.no_grad():
            eps_u = eps_c if (inner_steps == 0 and null_init == "source") else \
                model.unet(x, t, encoder_hidden_states=u).sample
            x, _ = _ddim_step(model, x, t, eps_u + guidance_scale * (eps_c - eps_u))
            losses.append(float((x - xts[i + 1]).pow(2).mean()))
        unconds.append(u.clone())
        traj.append(x)
        src_eps.append(eps_c)
    return NullTextInversion(timesteps=ts, xts=xts, cond=cond, uncond=torch.stack(unconds),
                             guidance_scale=float(guidance_scale), losses=losses, trajectory=torch.stack(traj),
                             source_eps=torch.stack(src_eps), attention=source)


@torch.no_grad()
def record_source_attention(model, inversion: NullTextInversion, *, self_replace: float = 0.4,
                            max_self_tokens: int | None = None) -> NullTextInversion:
    """Record the source branch's attention of an inversion made without ``record_attention`` (one conditional
    UNet pass per step along its guided trajectory); returns the inversion with ``attention`` set."""
    if inversion.trajectory is None:
        raise ValueError("this inversion has no guided trajectory; make it with null_text_inversion")
    model.scheduler.set_timesteps(inversion.num_steps, device=model.device)
    N, hw = inversion.xts.shape[1], tuple(inversion.xts.shape[-2:])
    source = SourceAttention()
    editor = AttentionEditor(model.unet, None, N, hw, inversion.num_steps, source=source, mode="record",
                             self_replace=self_replace, max_self_tokens=_self_tokens(max_self_tokens, hw))
    with editor:
        for i, t in enumerate(inversion.timesteps):
            editor.begin_step(i)
            noise_prediction(model, inversion.trajectory[i], t, inversion.cond)
    inversion.attention = source
    return inversion


@torch.no_grad()
def guided_reconstruction(model, inversion: NullTextInversion) -> torch.Tensor:
    """Replay the guided DDIM loop from :math:`x_T` with the inversion's per-step unconditional embeddings."""
    model.scheduler.set_timesteps(inversion.num_steps, device=model.device)
    x = inversion.xts[0]
    for i, t in enumerate(inversion.timesteps):
        eps = noise_prediction(model, x, t, inversion.cond, inversion.guidance_scale, inversion.uncond[i])
        x, _ = _ddim_step(model, x, t, eps)
    return model.decode(x)


def _span(on: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last index where each row of ``on`` (N, L) is True (an empty row gives (10**6, -10**6))."""
    idx = torch.arange(on.shape[1], device=on.device)
    big = torch.tensor(10 ** 6, device=on.device)
    return torch.where(on, idx, big).amin(1), torch.where(on, idx, -big).amax(1)


def region_boxes(lmask: torch.Tensor, margin: int = 2) -> tuple[torch.Tensor, tuple[int, int]]:
    """Per-face latent windows around a region: (N, 2) top-left corners (y, x) and one window size (hc, wc) for the
    batch (the largest region box plus ``margin`` cells on each side, clipped to the grid)."""
    N, _, h, w = lmask.shape
    on = lmask[:, 0] > 0
    rows, cols = on.any(2), on.any(1)
    y0, y1 = _span(rows)
    x0, x1 = _span(cols)
    empty = ~rows.any(1)
    y0, y1, x0, x1 = [torch.where(empty, d, v) for v, d in ((y0, 0), (y1, h - 1), (x0, 0), (x1, w - 1))]
    hc = min(h, int((y1 - y0).max()) + 1 + 2 * margin)
    wc = min(w, int((x1 - x0).max()) + 1 + 2 * margin)
    cy, cx = (y0 + y1 + 1) // 2, (x0 + x1 + 1) // 2
    top = (cy - hc // 2).clamp(0, h - hc)
    left = (cx - wc // 2).clamp(0, w - wc)
    return torch.stack([top, left], 1).cpu(), (hc, wc)


def decode_region(model, latents: torch.Tensor, images: torch.Tensor, boxes: torch.Tensor, size) -> torch.Tensor:
    """Decode only a window of each latent and put it into ``images`` (the rest of each image is ``images``):
    the decoder's cost scales with the window, so guidance through the decoder costs a fraction of a full decode.
    Differentiable in ``latents``. The window's border sees zero padding instead of its neighbours, so pixels near
    it differ from a full decode; :func:`masque_protect` keeps the region ``margin`` cells inside it."""
    hc, wc = size
    f = model.latent_scale
    crops = torch.stack([latents[i, :, int(y):int(y) + hc, int(x):int(x) + wc] for i, (y, x) in enumerate(boxes)])
    dec = model.decode(crops)                                                  # (N, 3, hc f, wc f)
    H, W = images.shape[-2:]
    out = []
    for i, (y, x) in enumerate(boxes):
        py, px = int(y) * f, int(x) * f
        base = images[i, :, py:py + hc * f, px:px + wc * f]
        out.append(images[i] + F.pad(dec[i] - base, (px, W - px - wc * f, py, H - py - hc * f)))
    return torch.stack(out)


def _finite(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return v


# ============================================================================================ 3. pairwise guidance
class NoReferencesError(ValueError):
    """A protected face has no other image of the same person for the pairwise guidance."""


@dataclass
class References:
    """Other images of the protected people, embedded once per surrogate.

    Attributes
    ----------
    embeddings : dict
        Surrogate name -> (R, D) L2-normalised embeddings of the reference images.
    owner : torch.LongTensor
        (R,) index of the protected face each reference belongs to (a reference image of a person serves every
        protected face of that person).
    fallback : list of int
        Protected faces that had no reference and use their own clean image instead.
    """

    embeddings: dict
    owner: torch.Tensor
    fallback: list


@torch.no_grad()
def build_references(models: Sequence[FaceModel], images, landmarks, identities, *, references=None,
                     reference_landmarks=None, reference_identities=None,
                     on_missing: str = "source") -> References:
    """Embed the other images of each protected person (see :class:`References`).

    Parameters
    ----------
    models : sequence of FaceModel
        Surrogates.
    images, landmarks, identities
        The protected faces (N, 3, S, S), (N, 68, 2) and their N identity labels.
    references, reference_landmarks, reference_identities : optional
        A separate set of clean images of the same people. Without it, the other protected faces of the same
        identity serve (each face never references itself).
    on_missing : {"source", "error"}
        A face without any other image of its person: use its own clean image ("source": push away from one's
        own embedding) or raise :class:`NoReferencesError`.
    """
    if on_missing not in ("source", "error"):
        raise ValueError(f"on_missing must be 'source' or 'error', got {on_missing!r}")
    ids = np.asarray(list(identities))
    if len(ids) != images.shape[0]:
        raise ValueError(f"need one identity per protected image: {len(ids)} identities for {images.shape[0]} images")
    if references is None:
        ref_img, ref_lm, ref_ids, self_index = images, landmarks, ids, np.arange(len(ids))
    else:
        if reference_landmarks is None or reference_identities is None:
            raise ValueError("references need reference_landmarks and reference_identities too")
        ref_img, ref_lm, ref_ids = references, reference_landmarks, np.asarray(list(reference_identities))
        if len(ref_ids) != ref_img.shape[0]:
            raise ValueError(f"{len(ref_ids)} reference identities for {ref_img.shape[0]} reference images")
        self_index = np.full(len(ids), -1)
    rows, owners, fallback = [], [], []
    for i, person in enumerate(ids):
        hits = [j for j in np.flatnonzero(ref_ids == person) if not (references is None and j == self_index[i])]
        if not hits:
            if on_missing == "error":
                raise NoReferencesError(f"face {i} (identity {person!r}) has no other image of the same person: "
                                        f"pairwise dodging pushes away from such images; give references= or "
                                        f"on_missing='source' to push away from the face's own clean image")
            fallback.append(i)
        rows += hits
        owners += [i] * len(hits)
    emb = {}
    for m in models:
        parts = []
        if rows:
            idx = torch.as_tensor(rows)
            parts.append(F.normalize(m.embed(ref_img[idx].to(m.device), torch.as_tensor(ref_lm)[idx].to(m.device)),
                                     dim=1))
        if fallback:
            idx = torch.as_tensor(fallback)
            parts.append(F.normalize(m.embed(images[idx].to(m.device), torch.as_tensor(landmarks)[idx].to(m.device)),
                                     dim=1))
        emb[m.name] = torch.cat(parts)
    return References(emb, torch.as_tensor(owners + fallback, dtype=torch.long), fallback)


def pairwise_similarity(models: Sequence[FaceModel], images, landmarks, refs: References) -> torch.Tensor:
    """Per-image mean cosine similarity (N,) to the other images of the same person, averaged over surrogates
    (the pairwise dodging loss; differentiable in ``images``)."""
    N = images.shape[0]
    owner = refs.owner.to(images.device)
    count = torch.zeros(N, device=images.device).index_add_(0, owner, torch.ones_like(owner, dtype=images.dtype))
    total = 0.0
    for m in models:
        e = F.normalize(m.embed(images, landmarks), dim=1)
        sims = (e[owner] * refs.embeddings[m.name].to(e.device)).sum(1)
        total = total + torch.zeros(N, device=images.device, dtype=sims.dtype).index_add_(0, owner, sims) / count
    return total / len(models)


# ============================================================================================ 2 + 3. the edit loop
@dataclass
class MasqueConfig:
    """Every knob of MASQUE here (defaults: quick profile on the small face model).

    ``guidance_scale``: classifier-free guidance of inversion and edit (finite, > 1); ``null_inner_steps`` /
    ``null_lr``: null-text optimisation; ``cross_replace`` / ``self_replace``: fractions of steps with attention
    fusion / injection; ``max_self_tokens``: self-attention injection only at layers with at most this many
    positions (None: a quarter of the latent grid, i.e. below the finest level); ``word_weight``: re-weighting of
    the named word (> 0); ``blend_threshold``: the word map (normalised to its maximum inside the region) is
    thresholded here and intersected with the region mask (0 = region mask only); ``blend_dilation``: before that,
    the word map is dilated by a max-pool of this radius in latent cells, as prompt-to-prompt's public ``LocalBlend``
    does (radius 1 there, on a map a quarter of Stable Diffusion's latent side; radius 1 on this model's latent grid
    spans the same share of the face), here the map inside the region only, so the blend keeps every cell it kept
    undilated and gains their neighbours in the region; 0 (default, the chapters' setting so far) thresholds the
    map as recorded, and a word map concentrated in a few cells then keeps only part of the region
    (``benchmarks/bench_masque_edit_colour.py``); ``adversarial``: pairwise guidance on or off; ``adv_start``:
    fraction of steps after which guidance acts; ``adv_step``: guidance step (finite, >= 0) on the predicted clean
    latent per reverse step, in units of its RMS-normalised gradient inside the region; ``soften``: mask edge width (fraction of the inter-ocular distance); ``paste``: final pixel composite;
    ``null_init``: ``"empty"`` (null-text inversion) or ``"source"`` (negative-prompt inversion, see
    :func:`null_text_inversion`); ``guide_window``: the guidance decodes only a window of the latent around the
    region, this many latent cells wider on each side (None: the whole latent; the output is always decoded whole);
    ``keep_colour``: colour-anchored guidance: the mean RGB of each part of the region (left and right for the
    two-sided regions: eyeshadow, eyeliner, cheeks) is held at its value when the guidance starts, in the images the
    surrogates see and in the output (:func:`anchor_colour`), so the guidance changes texture and shading inside
    the makeup, not its colour (False: the guidance may recolour the region); ``"chroma"``: as True, and each pixel's
    chroma is held as well at the decoded prediction's when the guidance starts (:func:`hold_chroma`), so the guidance
    changes only the luminance pattern inside the region (``benchmarks/bench_masque_guidance.py``: the guidance's
    colour pattern is what the makeup classifier misreads on a UNet with localised word maps).
    """

    num_steps: int = 20
    guidance_scale: float = 3.0
    null_inner_steps: int = 5
    null_lr: float = 1e-2
    null_init: str = "empty"
    cross_replace: float = 0.8
    self_replace: float = 0.4
    max_self_tokens: int | None = None
    word_weight: float = 1.0
    blend_threshold: float = 0.2
    blend_dilation: int = 0
    adversarial: bool = True
    adv_start: float = 0.3
    adv_step: float = 0.08
    soften: float = 0.05
    paste: bool = True
    guide_window: int | None = 2
    keep_colour: bool | str = False

    def __post_init__(self):
        if int(self.num_steps) != self.num_steps or self.num_steps < 1:
            raise ValueError(f"num_steps must be an integer >= 1, got {self.num_steps!r}")
        g = _finite(self.guidance_scale, "guidance_scale")
        if g <= 1.0:
            raise ValueError(f"guidance_scale is the classifier-free guidance of the edit and must be > 1, got "
                             f"{self.guidance_scale!r}")
        a = _finite(self.adv_step, "adv_step (the adversarial guidance weight)")
        if a < 0:
            raise ValueError(f"adv_step (the adversarial guidance weight) must be >= 0 (0 = no guidance), got "
                             f"{self.adv_step!r}")
        if _finite(self.word_weight, "word_weight") <= 0:
            raise ValueError(f"word_weight multiplies the word's attention and must be > 0, got {self.word_weight!r}")
        for k in ("cross_replace", "self_replace", "adv_start", "blend_threshold"):
            v = _finite(getattr(self, k), k)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{k} is a fraction in [0, 1], got {getattr(self, k)!r}")
        d = self.blend_dilation
        if isinstance(d, (bool, np.bool_)) or not isinstance(d, (int, np.integer)) or d < 0:
            raise ValueError(f"blend_dilation is a radius in latent cells, an integer >= 0, got {self.blend_dilation!r}")
        if self.guide_window is not None and (int(self.guide_window) != self.guide_window or self.guide_window < 0):
            raise ValueError(f"guide_window is a number of latent cells >= 0 (or None), got {self.guide_window!r}")
        if not (isinstance(self.keep_colour, (bool, np.bool_)) or self.keep_colour == "chroma"):
            raise ValueError(f"keep_colour must be True, False or 'chroma', got {self.keep_colour!r}")
        if self.null_init not in ("empty", "source"):
            raise ValueError(f"null_init must be 'empty' or 'source', got {self.null_init!r}")
        if self.null_inner_steps < 0 or _finite(self.null_lr, "null_lr") <= 0:
            raise ValueError(f"need null_inner_steps >= 0 and null_lr > 0, got {self.null_inner_steps}, "
                             f"{self.null_lr}")


@dataclass
class MasqueResult:
    """What :func:`masque_protect` returns.

    Attributes
    ----------
    images : torch.Tensor
        (N, 3, S, S) protected faces.
    reconstruction : torch.Tensor
        The source branch decoded (null-text reconstruction of the sources).
    mask : torch.Tensor
        (N, 1, S, S) soft face-region mask of the makeup word.
    latent_mask : torch.Tensor
        (N, 1, h, w) the region on the latent grid.
    blend_mask : torch.Tensor
        (N, 1, h, w) final latent blend mask (region x thresholded word map).
    word_map : torch.Tensor
        (N, h, w) map of the edited word inside the region, normalised to [0, 1] per image.
    attention_map : torch.Tensor or None
        (N, h, w) the edited word's raw cross-attention (mean over layers, heads and steps), None for single-token
        models.
    map_kind : str
        ``"cross-attention"`` or ``"noise-difference"`` (single-token prompt encoders).
    word, region : str
    pieces : list of str
        The word's tokens.
    fallback : list of int
        Faces whose guidance used their own image (no other image of the person).
    history : list of dict
        Per reverse step: mean pairwise similarity (when guided).
    seconds, seconds_per_image : float
        Time of the edit (a resumed edit counts the steps it took over, too).
    config : dict
    """

    images: torch.Tensor
    reconstruction: torch.Tensor
    mask: torch.Tensor
    latent_mask: torch.Tensor
    blend_mask: torch.Tensor
    word_map: torch.Tensor
    attention_map: torch.Tensor | None
    map_kind: str
    word: str
    region: object
    pieces: list
    fallback: list
    history: list
    seconds: float
    seconds_per_image: float
    config: dict


def region_parts(mask: torch.Tensor, parts: int, *, inside: float = 0.5) -> torch.Tensor:
    """Split each soft region mask (N, 1, S, S) into ``parts`` equal-width vertical strips of its extent (where
    mask > ``inside``): (N, parts, S, S), the mask's weights in each strip (they sum to the mask)."""
    N, _, S, W = mask.shape
    on = (mask[:, 0] > inside).any(1)                                          # (N, W) columns of the region
    xs = torch.arange(W, device=mask.device)
    x0, x1 = _span(on)
    x0, x1 = x0.clamp(max=W - 1), x1.clamp(min=0)
    x1 = torch.maximum(x0, x1)
    edges = x0.view(-1, 1).float() + (x1 - x0 + 1).view(-1, 1).float() * torch.linspace(0, 1, parts + 1,
                                                                                         device=mask.device)
    edges[:, 0], edges[:, -1] = -1.0, float(W)                                 # soft edges belong to the end strips
    strip = (xs.view(1, 1, -1) >= edges[:, :-1, None]) & (xs.view(1, 1, -1) < edges[:, 1:, None])   # (N, parts, W)
    return mask * strip[:, :, None, :].float()


def anchor_colour(images: torch.Tensor, weights: torch.Tensor, target: torch.Tensor | None = None):
    r"""Mean RGB of each region part, and the images with those means moved to ``target``.

    ``weights`` (N, K, S, S) are the parts' soft masks (:func:`region_parts`); the colour of part k is the weighted
    mean :math:`c_k = \sum_x w_k(x)\, I(x) / \sum_x w_k(x)`. With ``target`` (N, K, 3), each part is shifted by
    :math:`w_k(x)\, s_k\, (c^\ast_k - c_k)` with :math:`s_k = \sum w_k / \sum w_k^2`, so its weighted mean becomes
    :math:`c^\ast_k` exactly (before clipping to [0, 1]) and nothing outside the weights moves. Differentiable: a
    gradient through the anchored images has no component along the parts' mean colours.

    Returns (images, colours (N, K, 3)); the images unchanged when ``target`` is None.
    """
    mass = weights.flatten(2).sum(2).clamp_min(1e-12)                          # (N, K)
    colours = torch.einsum("nkhw,nchw->nkc", weights, images) / mass.unsqueeze(2)
    if target is None:
        return images, colours
    scale = mass / weights.pow(2).flatten(2).sum(2).clamp_min(1e-12)           # (N, K)
    shift = torch.einsum("nkhw,nkc->nchw", weights, (target - colours) * scale.unsqueeze(2))
    return (images + shift).clamp(0, 1), colours


def hold_chroma(images: torch.Tensor, weights: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    r"""The images with each pixel's chroma taken from ``reference`` inside the region, their own luminance kept.

    With :math:`Y` the luminance (:func:`facelab.core.images.luminance`) and :math:`w = \min(1, \sum_k w_k)` the parts' summed weights
    (:func:`region_parts`), returns :math:`I + w\,(R + (Y(I) - Y(R)) - I)`: where ``w`` is 1 the pixel is the
    reference's colour shifted by the luminance change, so the difference to the reference is grey; nothing outside
    the weights moves. Differentiable in ``images``; all three (N, 3, S, S). Not clipped: in MASQUE,
    :func:`anchor_colour` follows and clips to [0, 1].
    """
    w = weights.sum(1, keepdim=True).clamp(0, 1)
    return images + w * (reference + (luminance(images) - luminance(reference)) - images)


def _normalise_map(m: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    m = m * region[:, 0]
    return m / m.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1)


def masque_protect(model, images: torch.Tensor, landmarks: torch.Tensor, identities, *, edit_prompt: str,
                   word: str | None = None, models: Mapping[str, FaceModel] | Sequence[FaceModel] = (),
                   source_prompt: str | None = None, region=None, config: MasqueConfig | None = None,
                   inversion: NullTextInversion | None = None, references=None, reference_landmarks=None,
                   reference_identities=None, on_missing_references: str = "source",
                   resume: MasqueResult | None = None, progress: Callable | None = None) -> MasqueResult:
    r"""Put the makeup of ``edit_prompt`` on each face, inside its face region, adversarially for dodging.

    The source branch is the null-text inversion's guided trajectory, with its attention recorded once
    (:class:`facelab.privacy.attention.SourceAttention`); each reverse step denoises only the edit branch
    (unconditional + makeup prompt), with the source's cross-attention for shared tokens and its self-attention
    early on, records the named word's cross-attention, and blends the edit back to the source outside
    region x word map. With guidance, from step ``adv_start`` on the predicted clean latent :math:`\hat z_0` of the
    edit is decoded, pasted into the photo inside the region, embedded by every surrogate, and moved against the
    gradient of the pairwise similarity (:func:`pairwise_similarity`) before the DDIM step
    (:math:`x_{t-1} = \sqrt{\bar\alpha_{t-1}}\,(\hat z_0 - \eta\,\tilde g) + \sqrt{1-\bar\alpha_{t-1}}\,\epsilon`,
    :math:`\tilde g` the gradient inside the region over its RMS): the gradient does not go back through the UNet,
    which halves the cost of a guided step (as manifold-preserving guidance does, He et al. 2024).

    Parameters
    ----------
    model : facelab.diffusion.DiffusionModel
    images : torch.Tensor
        (N, 3, S, S) in [0, 1], S = ``model.image_size``.
    landmarks : torch.Tensor
        (N, 68, 2) pixel landmarks (for the mask and the recognisers' alignment), inside the image.
    identities : sequence
        N identity labels (whose other images the guidance pushes away from).
    edit_prompt : str
        The makeup prompt, e.g. ``"a face of a person with red lipstick"``.
    word : str, optional
        The edited word of the prompt (``"lipstick"``); default: the prompt's word of the vocabulary of regions
        (:func:`facelab.privacy.masks.makeup_word`). It picks the face region unless ``region`` is given.
    models : FaceModels
        Surrogate ensemble (needed when ``config.adversarial``).
    source_prompt : str, optional
        Describes the face before the edit (default ``model.default_prompt``).
    region : str or list of str, optional
        Face region(s) of :mod:`facelab.core.regions` (default: the word's region).
    config : MasqueConfig
    inversion : NullTextInversion, optional
        Reuse an inversion of ``images`` (same steps and guidance scale); its source attention is recorded here if
        it was made without ``record_attention``.
    references, reference_landmarks, reference_identities, on_missing_references
        See :func:`build_references`.
    resume : MasqueResult, optional
        A result of the same edit (images, inversion, prompt and settings up to ``adv_start``; e.g. the makeup
        without guidance): this edit starts from its state at step ``adv_start`` instead of step 0, since the steps
        before the guidance are the same.

    Returns
    -------
    MasqueResult

    Raises
    ------
    PromptError
        No word of the vocabulary of regions in ``edit_prompt``, ``word`` not in it, or already in the source prompt.
    LandmarksOutsideError
        Landmarks of the region lie outside the image.
    EmptyMaskError
        No usable landmarks, so no region.
    NoReferencesError
        ``on_missing_references="error"`` and a person has no other image.
    """
    cfg = config or MasqueConfig()
    source_prompt = model.default_prompt if source_prompt is None else source_prompt
    if word is None:
        word, default_region = makeup_word(edit_prompt)
    else:
        default_region = None
    check_prompts(source_prompt, edit_prompt, word)
    if region is None:
        region = default_region or region_for_word(word)
    x_images = model.check_images(images)
    N, S_img = x_images.shape[0], x_images.shape[-1]
    dev = model.device
    check_landmarks_inside(landmarks, S_img, region)
    pmask = face_region_masks(landmarks, S_img, region, soften=cfg.soften).to(dev)   # EmptyMaskError early
    models = list(models.values()) if isinstance(models, Mapping) else list(models)
    if cfg.adversarial and cfg.adv_step > 0 and not models:
        raise ValueError("adversarial guidance needs at least one surrogate FaceModel (models=...); "
                         "use MasqueConfig(adversarial=False) for makeup without guidance")
    guide = cfg.adversarial and cfg.adv_step > 0
    lm = torch.as_tensor(landmarks, dtype=torch.float32).to(dev)
    refs = (build_references(models, x_images, lm, identities, references=references,
                             reference_landmarks=reference_landmarks, reference_identities=reference_identities,
                             on_missing=on_missing_references) if guide else None)
    alignment = align_prompts(model, source_prompt, edit_prompt, word)
    t0 = time.perf_counter()
    if inversion is None:
        inversion = null_text_inversion(model, x_images, source_prompt, num_steps=cfg.num_steps,
                                        guidance_scale=cfg.guidance_scale, inner_steps=cfg.null_inner_steps,
                                        lr=cfg.null_lr, null_init=cfg.null_init, record_attention=True,
                                        self_replace=cfg.self_replace, max_self_tokens=cfg.max_self_tokens)
    elif inversion.num_steps != cfg.num_steps or inversion.xts.shape[1] != N:
        raise ValueError(f"the inversion has {inversion.num_steps} steps for {inversion.xts.shape[1]} images; "
                         f"this edit needs {cfg.num_steps} steps for {N} images")
    if inversion.trajectory is None:
        raise ValueError("the inversion has no guided source trajectory; make it with null_text_inversion")
    if inversion.attention is None:
        record_source_attention(model, inversion, self_replace=cfg.self_replace, max_self_tokens=cfg.max_self_tokens)
    model.scheduler.set_timesteps(cfg.num_steps, device=dev)
    h, w = inversion.xts.shape[-2:]
    lmask = latent_mask(pmask, (h, w))
    boxes, window = region_boxes(lmask, cfg.guide_window) if cfg.guide_window is not None else (None, None)
    names = [region] if isinstance(region, str) else list(region)
    parts = (region_parts(pmask, 2 if all(r in TWO_SIDED for r in names) else 1) if cfg.keep_colour else None)
    anchor = chroma_reference = None
    cond_edit = model.encode_prompt([edit_prompt] * N)
    if cond_edit.shape != inversion.cond.shape:
        raise ValueError(f"source and edit conditioning differ in shape: {tuple(inversion.cond.shape)} vs "
                         f"{tuple(cond_edit.shape)}")
    w_cfg = cfg.guidance_scale
    x_edit = inversion.trajectory[0]
    noise_diff = torch.zeros(N, h, w, device=dev)
    blend = lmask
    wmap = lmask[:, 0]
    history = []
    adv_from = int(round(cfg.adv_start * cfg.num_steps))
    first = 0
    key = (edit_prompt, word, str(region), id(inversion), cfg.num_steps, cfg.guidance_scale, cfg.cross_replace,
           cfg.self_replace, cfg.word_weight, cfg.blend_threshold, cfg.blend_dilation, cfg.soften, adv_from)
    if resume is not None:
        state = resume.config.get("_state")
        if state is None or state["key"] != key:
            raise ValueError("resume= needs a MasqueResult of the same images, inversion, prompt and settings up to "
                             "adv_start (only the guidance may differ)")
        first, x_edit, noise_diff = adv_from, state["x_edit"], state["noise_diff"].clone()
        history = [dict(h_) for h_ in resume.history[:adv_from]]
    saved = None
    t_loop = time.perf_counter()
    steps = range(first, cfg.num_steps)
    steps = steps if progress is None else progress(steps, desc="MASQUE")
    with AttentionEditor(model.unet, alignment, N, (h, w), cfg.num_steps, source=inversion.attention, mode="edit",
                         cross_replace=cfg.cross_replace, self_replace=cfg.self_replace,
                         word_weight=cfg.word_weight) as editor:
        if resume is not None:
            editor.word_maps = None if state["word_maps"] is None else state["word_maps"].clone()
            editor.n_recorded = state["n_recorded"]
        for i in steps:
            if i == adv_from:
                saved = {"key": key, "seconds": time.perf_counter() - t_loop, "x_edit": x_edit, "noise_diff": noise_diff.clone(), "n_recorded": editor.n_recorded,
                         "word_maps": None if editor.word_maps is None else editor.word_maps.clone()}
            t = inversion.timesteps[i]
            editor.begin_step(i)
            step_log = {"step": i}
            with torch.no_grad():
                eps_u, eps_e = model.unet(torch.cat([x_edit, x_edit]), t,
                                          encoder_hidden_states=torch.cat([inversion.uncond[i], cond_edit])
                                          ).sample.chunk(2)
                eps = eps_u + w_cfg * (eps_e - eps_u)
                mu_e, x0_e = _ddim_step(model, x_edit, t, eps)
            if guide and i >= adv_from:
                with torch.enable_grad():
                    z0 = x0_e.detach().requires_grad_(True)
                    img = model.decode(z0) if boxes is None else decode_region(model, z0, x_images, boxes, window)
                    if cfg.paste:
                        img = x_images + pmask * (img - x_images)
                    if parts is not None:
                        if cfg.keep_colour == "chroma":
                            if chroma_reference is None:        # the prediction when the guidance starts
                                chroma_reference = img.detach()
                            img = hold_chroma(img, parts, chroma_reference)
                        img, colours = anchor_colour(img, parts, anchor)
                        if anchor is None:
                            anchor = colours.detach()               # the region's colours when the guidance starts
                        step_log["colour"] = colours.detach().mean(0).tolist()
                    sim = pairwise_similarity(models, img, lm, refs)
                    grad, = torch.autograd.grad(sim.sum(), z0)
                with torch.no_grad():
                    grad = grad * lmask
                    rms = grad.pow(2).flatten(1).sum(1).div(lmask.flatten(1).sum(1).clamp_min(1) * grad.shape[1])
                    mu_e = mu_e - _alpha_prev(model, t, dev).sqrt() * cfg.adv_step * grad / \
                        rms.sqrt().clamp_min(1e-12).view(-1, 1, 1, 1)
                step_log["pairwise similarity"] = float(sim.detach().mean())
            with torch.no_grad():
                x_src = inversion.trajectory[i + 1]
                if inversion.source_eps is not None:
                    noise_diff += (eps_e - inversion.source_eps[i]).abs().mean(1)
                wm = editor.word_map()
                wm = noise_diff if wm is None else wm
                if cfg.blend_dilation:
                    r_ = int(cfg.blend_dilation)
                    # the map inside the region, dilated: every blend cell of the undilated map stays in the blend
                    wm = F.max_pool2d((wm * lmask[:, 0]).unsqueeze(1), 2 * r_ + 1, stride=1, padding=r_)[:, 0]
                wmap = _normalise_map(wm, lmask)
                if cfg.blend_threshold > 0:
                    blend = lmask * (wmap > cfg.blend_threshold).float().unsqueeze(1)
                    empty = blend.flatten(1).sum(1) == 0
                    blend[empty] = lmask[empty]
                x_edit = x_src + blend * (mu_e - x_src)
            history.append(step_log)
        attention_map = editor.word_map()
    map_kind = "cross-attention" if attention_map is not None else "noise-difference"
    with torch.no_grad():
        # pasted through the region, the edit needs only the window the guidance decodes (a fraction of the cost)
        edited = (decode_region(model, x_edit, x_images, boxes, window) if cfg.paste and boxes is not None
                  else model.decode(x_edit))
        recon = inversion.reconstruction(model)
        if cfg.paste:
            edited = x_images + pmask * (edited - x_images)
        if anchor is not None:
            if chroma_reference is not None:
                edited = hold_chroma(edited, parts, chroma_reference)
            edited = anchor_colour(edited, parts, anchor)[0]
    secs = time.perf_counter() - t0 + (state["seconds"] if resume is not None else 0.0)
    return MasqueResult(images=edited.detach(), reconstruction=recon.detach(), mask=pmask, latent_mask=lmask,
                        blend_mask=blend, word_map=wmap, attention_map=attention_map, map_kind=map_kind, word=word,
                        region=region, pieces=list(alignment.pieces or []),
                        fallback=[] if refs is None else list(refs.fallback),
                        history=history, seconds=secs, seconds_per_image=secs / N,
                        config={**asdict(cfg), "edit_prompt": edit_prompt, "word": word, "region": region,
                                "source_prompt": source_prompt, "surrogates": [m.name for m in models],
                                "_state": saved if saved is not None else (resume.config.get("_state")
                                                                           if resume is not None else None)})


# ============================================================================================ baselines
def pgd_dodge(images: torch.Tensor, landmarks: torch.Tensor, identities, models: Mapping | Sequence, *,
              epsilon: float = 8 / 255, steps: int = 10, step_size: float | None = None, mask=None,
              references=None, reference_landmarks=None, reference_identities=None,
              on_missing_references: str = "source", random_start: bool = True, seed: int = 0) -> torch.Tensor:
    r"""Dodging PGD in pixel space on the same pairwise loss as MASQUE (the baselines of the chapter).

    .. math:: x^{k+1} = \Pi_{\|x-x_0\|_\infty\le\epsilon}\big(x^k - \alpha\,M\odot\mathrm{sign}\,
              \nabla_x\mathcal L_{pair}(x^k)\big),\qquad \alpha = 2.5\,\epsilon/\text{steps}

    ``mask`` (N, 1, H, W) restricts the change ("masked PGD"; a soft mask scales it); None = global PGD.
    ``random_start`` begins from a uniform point of the (masked) epsilon ball drawn with ``seed`` (Madry et al.
    2018). It matters here: when a face's reference is an identical image (the ``on_missing_references="source"``
    fallback, or two identical photos) the similarity starts at its maximum, where the gradient vanishes and PGD
    from the clean image would never move.
    Returns the protected images.
    """
    models = list(models.values()) if isinstance(models, Mapping) else list(models)
    if not models or epsilon <= 0 or steps < 1:
        raise ValueError(f"need surrogate models, epsilon > 0 and steps >= 1; got {len(models)} models, "
                         f"epsilon={epsilon}, steps={steps}")
    dev = models[0].device
    x0 = images.to(dev).float()
    lm = torch.as_tensor(landmarks, dtype=torch.float32).to(dev)
    refs = build_references(models, x0, lm, identities, references=references,
                            reference_landmarks=reference_landmarks, reference_identities=reference_identities,
                            on_missing=on_missing_references)
    m = torch.ones_like(x0[:, :1]) if mask is None else mask.to(dev).float()
    alpha = 2.5 * epsilon / steps if step_size is None else step_size
    x = x0.clone()
    if random_start:
        g = torch.Generator().manual_seed(int(seed))
        noise = (torch.rand(x0.shape, generator=g) * 2 - 1).to(dev) * epsilon
        x = (x0 + noise * m).clamp(0, 1)
    for _ in range(steps):
        x.requires_grad_(True)
        grad, = torch.autograd.grad(pairwise_similarity(models, x, lm, refs).sum(), x)
        with torch.no_grad():
            x = (x0 + (x - alpha * m * grad.sign() - x0).clamp(-epsilon, epsilon) * m).clamp(0, 1)
    return x.detach()
