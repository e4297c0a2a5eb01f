r"""Quality gates of a text-conditioned latent diffusion model, measured (issue #20, chapter 05).

The privacy chapters edit faces through the quick latent diffusion model, so three properties of the model decide
whether their results mean anything; each is measured here on faces of identities the model never saw
(:class:`facelab.synth.FaceWorld` identities from 100000 on, as in the privacy chapters):

1. **DDIM inversion reconstructs** (:func:`ddim_inversion_psnr`): invert a face with DDIM (deterministic, approximate)
   and run the reverse loop back; target at least 28 dB PSNR against the input. The autoencoder alone (encode, then
   decode) bounds what any latent method can reach, so the table also gives its PSNR and the PSNR of the inversion
   against the autoencoder's own reconstruction: the reader sees which part of the error comes from where.
2. **Edit-friendly DDPM inversion is exact** (:func:`ddpm_exactness`): its reverse loop with the stored residuals gives
   back the input latent up to float rounding; target: the decoded reconstruction differs from the autoencoder's by
   less than half a grey level (0.5 / 255), i.e. the same 8-bit image.
3. **Words attend where their makeup goes** (:func:`token_attention_maps`, :func:`region_mass`): the UNet's
   cross-attention map of a makeup word, averaged over heads, layers and a few noise levels, puts at least half of its
   mass inside the word's landmark region: "lipstick" in the mouth (lips) region, "eyeshadow" in the eye regions
   (eyelid + eye contour of both eyes). MASQUE's masked attention relies on it.

How the attention maps are averaged. A cross-attention layer at resolution :math:`h\times w` has probabilities
:math:`A\in\mathbb R^{hw\times K}` (softmax over the :math:`K` conditioning tokens). The map of token :math:`j` is the
column :math:`A_{:,j}`, averaged over heads, upsampled to the latent grid (nearest, 8 x 8 -> 16 x 16) and normalised
to sum 1 over the grid (a distribution of where the token is read); a word's map is the mean over its word pieces
("eyeshadow" is ``eyes ##had ##ow`` for MiniLM), the cross-attention layers and the noise levels (the clean latent
noised to :math:`t \in \{200, 400, 600\}` with a fixed generator, one UNet pass each). Every map therefore sums to 1
and :func:`region_mass` (the fraction of it inside a region mask, masks averaged onto the latent grid by area) is in
[0, 1]; a uniform map would put the region's area fraction there (the ``chance`` column).

:class:`AttentionRecorder` is a diffusers attention processor installed on the cross-attention modules for the
duration of a ``with`` block: it computes the same masked attention as the model's own processor
(:func:`facelab.diffusion.model.padding_bias`, explicit softmax:
:func:`facelab.diffusion.attention.explicit_attention`) and keeps the head-averaged probabilities; on exit the UNet's
processors are restored.

>>> from facelab.diffusion import quick_model                      # doctest: +SKIP
>>> from facelab.diffusion.quality import quality_gates
>>> gates = quality_gates(quick_model(), n_faces=32)
>>> gates.table                                                    # gate, measured, ci_low, ci_high, target, passed, n
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

__all__ = ["TARGETS", "WORD_REGIONS", "GATE_WORDS", "unseen_faces", "makeup_faces", "ddim_inversion_psnr",
           "ddpm_exactness", "word_token_positions", "AttentionRecorder", "token_attention_maps", "word_region_masks",
           "region_mass", "QualityGates", "quality_gates"]

#: Targets of the gates (issue #20).
TARGETS = {"ddim_psnr_db": 28.0, "ddpm_max_abs_error": 0.5 / 255, "lipstick_region_mass": 0.5,
           "eyeshadow_region_mass": 0.5}
#: Landmark regions (:mod:`facelab.core.regions`) of each makeup word: "lipstick" -> the mouth (lips) region,
#: "eyeshadow" -> the eye regions (the lid area under the brow and a band along the eye contour, both eyes).
WORD_REGIONS = {"lipstick": ("lips",), "eyeshadow": ("eyeshadow", "eyeliner"), "eyeliner": ("eyeliner",),
                "blush": ("cheeks",)}
#: The words whose maps are gated.
GATE_WORDS = ("lipstick", "eyeshadow")
#: First identity of the faces the gates are measured on (never seen in training; as in the privacy chapters).
UNSEEN_OFFSET = 100000


# ------------------------------------------------------------------------------------------------ faces
def unseen_faces(n: int, *, seed: int = 0, size: int = 64):
    """``n`` faces of unseen identities (100000 on) drawn like the training set (mild nuisance, random expression,
    random makeup): a :class:`facelab.synth.FaceBatch` whose captions are the prompts."""
    from facelab.synth import FaceWorld

    _check_count(n, "n")
    return FaceWorld(seed=0, size=size).sample(n_identities=n, identity_offset=UNSEEN_OFFSET, nuisance="mild",
                                               expression="random", makeup="random",
                                               generator=torch.Generator().manual_seed(seed))


def makeup_faces(n: int, *, seed: int = 0, size: int = 64):
    """``n`` faces of unseen identities that all wear lipstick and eyeshadow (colours cycling over the world's
    colours), so every caption names both gated words ("a face of a person with red lipstick and blue eyeshadow")."""
    from facelab.synth import FaceWorld
    from facelab.synth.world import MAKEUP_COLOURS, FaceBatch

    _check_count(n, "n")
    world = FaceWorld(seed=0, size=size)
    g = torch.Generator().manual_seed(seed + 1)
    lips, shadows = sorted(MAKEUP_COLOURS["lipstick"]), sorted(MAKEUP_COLOURS["eyeshadow"])
    parts = []
    for i in range(n):
        makeup = {"lipstick": lips[i % len(lips)], "eyeshadow": shadows[(3 * i + 1) % len(shadows)]}
        parts.append(world.sample(n_identities=1, identity_offset=UNSEEN_OFFSET + i, nuisance="mild",
                                  expression="random", makeup=makeup, generator=g))
    return FaceBatch(torch.cat([p.images for p in parts]), pd.concat([p.labels for p in parts], ignore_index=True),
                     torch.cat([p.landmarks for p in parts]), torch.cat([p.masks for p in parts]),
                     torch.cat([p.face_masks for p in parts]))


def _check_count(n, name):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")


def _prompts_for(model, prompts, n: int) -> list:
    prompts = [model.default_prompt] * n if prompts is None else prompts
    prompts = [prompts] * n if isinstance(prompts, str) else list(prompts)
    if len(prompts) != n:
        raise ValueError(f"give one prompt or one per image: got {len(prompts)} prompts for {n} images")
    return prompts


def _chunks(n: int, size: int):
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


# ------------------------------------------------------------------------------------------------ inversion gates
@torch.no_grad()
def ddim_inversion_psnr(model, images: torch.Tensor, prompts=None, *, num_steps: int = 50,
                        guidance_scale: float = 1.0, batch_size: int = 32) -> pd.DataFrame:
    """PSNR (dB) per image of DDIM inversion followed by the DDIM reverse loop, and of the autoencoder alone.

    Parameters
    ----------
    model : facelab.diffusion.DiffusionModel
    images : torch.Tensor
        (N, 3, S, S) in [0, 1].
    prompts : str or list of str, optional
        Prompt(s) used to invert and reconstruct (default ``model.default_prompt``; the faces' captions are natural).
    num_steps : int
        DDIM steps (the same for inversion and reconstruction).

    Returns
    -------
    pandas.DataFrame
        One row per image: ``psnr_autoencoder_db`` (decode(encode(x)) vs x: the ceiling of any latent method),
        ``psnr_ddim_db`` (inversion + reconstruction vs x: the gate) and ``psnr_ddim_vs_autoencoder_db`` (the same
        against the autoencoder's reconstruction: the error the inversion itself adds).
    """
    from facelab.diffusion.inversion import ddim_inversion, psnr, reverse_process

    images = model.check_images(images)
    prompts = _prompts_for(model, prompts, images.shape[0])
    rows = []
    for sl in _chunks(images.shape[0], batch_size):
        x = images[sl]
        ae = model.decode(model.encode(x))
        inv = ddim_inversion(model, x, prompts[sl], num_steps=num_steps, guidance_scale=guidance_scale)
        rec = reverse_process(model, inv)
        for a, r, b in zip(psnr(ae, x).tolist(), psnr(rec, x).tolist(), psnr(rec, ae).tolist()):
            rows.append({"psnr_autoencoder_db": a, "psnr_ddim_db": r, "psnr_ddim_vs_autoencoder_db": b})
    return pd.DataFrame(rows)


@torch.no_grad()
def ddpm_exactness(model, images: torch.Tensor, prompts=None, *, num_steps: int = 20, seed: int = 0,
                   batch_size: int = 32) -> pd.DataFrame:
    """Edit-friendly DDPM inversion (Huberman-Spiegelglas et al. 2024) reconstruction errors per image.

    The reverse loop with the inversion's residuals must give back the input latent :math:`x_0` exactly (up to float
    rounding). Returns one row per image: ``latent_max_abs_error`` (reverse loop vs :math:`x_0`) and
    ``pixel_max_abs_error`` (decoded reconstruction vs the autoencoder's decode of :math:`x_0`, in [0, 1] units).
    """
    from facelab.diffusion.inversion import ddpm_inversion, reverse_step

    images = model.check_images(images)
    prompts = _prompts_for(model, prompts, images.shape[0])
    g = torch.Generator().manual_seed(seed)
    rows = []
    for sl in _chunks(images.shape[0], batch_size):
        inv = ddpm_inversion(model, images[sl], prompts[sl], num_steps=num_steps, generator=g)
        x = inv.xts[0]
        for i in range(inv.num_steps):
            x = reverse_step(model, x, inv.timesteps[i], inv.cond, eta=inv.eta, residual=inv.residuals[i],
                             guidance_scale=inv.guidance_scale, uncond=inv.uncond)["prev"]
        x0 = inv.xts[-1]
        lat = (x - x0).flatten(1).abs().amax(1)
        pix = (model.decode(x) - model.decode(x0)).flatten(1).abs().amax(1)
        rows += [{"latent_max_abs_error": float(a), "pixel_max_abs_error": float(b)} for a, b in zip(lat, pix)]
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------ attention
def _tokenizer(model):
    tok = getattr(model.text_encoder, "tokenizer", None)
    if tok is None or not hasattr(tok, "tokenize"):
        raise ValueError(f"{getattr(model, 'name', 'this model')}'s prompt encoder has no tokenizer with .tokenize: "
                         f"token attention maps need a token-level encoder (MiniLMTokenEncoder, CLIP)")
    return tok


def word_token_positions(tokenizer, prompt: str, word: str) -> list:
    """Positions of ``word``'s word pieces in the conditioning sequence of ``prompt`` (position 0 is the start
    token), for every occurrence of the word; [] when the prompt does not contain it."""
    pieces = tokenizer.tokenize(prompt)
    target = tokenizer.tokenize(word)
    if not target:
        raise ValueError(f"the word {word!r} has no word pieces")
    k = len(target)
    out = []
    for i in range(len(pieces) - k + 1):
        if pieces[i:i + k] == target:
            out += list(range(1 + i, 1 + i + k))
    return out


class _RecordingProcessor:
    """Cross-attention with the padding masked (as :class:`facelab.diffusion.model.PaddingMaskAttnProcessor`),
    computed explicitly (:func:`facelab.diffusion.attention.explicit_attention`) so the head-averaged probabilities
    (B, Q, K) can be kept; self-attention is passed on to the module's own processor."""

    def __init__(self, recorder: "AttentionRecorder", own):
        self.recorder, self.own = recorder, own

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is None:
            return self.own(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        from facelab.diffusion.attention import explicit_attention

        def keep(probs):                                                       # (B * heads, Q, K)
            B, Q, K = probs.shape[0] // attn.heads, probs.shape[1], probs.shape[2]
            self.recorder._add(probs.detach().view(B, attn.heads, Q, K).mean(1).float().cpu())
            return probs

        return explicit_attention(attn, hidden_states, encoder_hidden_states, attention_mask, temb, on_probs=keep)


class AttentionRecorder:
    """Context manager: record the head-averaged cross-attention probabilities of every cross-attention layer of a
    ``UNet2DConditionModel`` (the padding of the conditioning masked exactly as the model does), then restore the
    UNet's own attention processors.

    ``probs`` holds one (B, Q, K) tensor per cross-attention call since the last :meth:`reset`.
    """

    def __init__(self, unet):
        self.unet = unet
        self.probs: list = []
        self._saved = None

    def reset(self) -> None:
        self.probs = []

    def _add(self, p: torch.Tensor) -> None:
        self.probs.append(p)

    def __enter__(self) -> "AttentionRecorder":
        self._saved = dict(self.unet.attn_processors)
        new = {k: (_RecordingProcessor(self, v) if k.endswith("attn2.processor") else v)
               for k, v in self._saved.items()}
        self.unet.set_attn_processor(new)
        return self

    def __exit__(self, *exc):
        self.unet.set_attn_processor(self._saved)
        return False


def _grid_maps(probs: torch.Tensor, positions: Sequence[int], grid: int) -> torch.Tensor:
    """(Q, K) probabilities of one image -> the mean over ``positions`` of each token's map, upsampled (nearest) to
    grid x grid and normalised to sum 1."""
    q = probs.shape[0]
    side = int(round(math.sqrt(q)))
    if side * side != q:
        raise ValueError(f"cross-attention over {q} positions is not a square grid")
    m = probs[:, list(positions)].T.reshape(len(positions), 1, side, side)
    if side != grid:
        m = F.interpolate(m, size=(grid, grid), mode="nearest")
    m = m / m.flatten(1).sum(1).clamp_min(1e-30).view(-1, 1, 1, 1)
    return m.mean(0)[0]


@torch.no_grad()
def token_attention_maps(model, images: torch.Tensor, prompts, words: Sequence[str] | str, *,
                         timesteps: Sequence[int] = (200, 400, 600), seed: int = 0, batch_size: int = 16,
                         min_side: int | None = None, resolutions: Sequence[int] | None = None) -> torch.Tensor:
    """Cross-attention maps of ``words`` on the latent grid, per image: (N, W, h, w), each map summing to 1.

    Parameters
    ----------
    model : facelab.diffusion.DiffusionModel
        Its prompt encoder must expose a ``tokenizer`` (:class:`facelab.diffusion.MiniLMTokenEncoder` does).
    images : torch.Tensor
        (N, 3, S, S) in [0, 1].
    prompts : str or list of str
        One prompt, or one per image (the faces' captions), containing the words.
    words : str or list of str
        Words whose word pieces are read ("lipstick", "eyeshadow").
    timesteps : sequence of int
        Noise levels: the clean latent is noised to each (fixed generator ``seed``), one UNet pass each.
    min_side : int, optional
        Layers whose maps are coarser than ``min_side`` x ``min_side`` are left out (default: half the latent side,
        so the quick UNet's 16 x 16 and 8 x 8 layers count and its 4 x 4 mid block does not).
    resolutions : sequence of int, optional
        Use only the layers whose maps have these sides (e.g. ``(16,)``: the full-resolution layers alone), to see
        which layers localise a word; overrides ``min_side``.

    Returns
    -------
    torch.Tensor
        (N, W, h, w) float32 on the CPU; NaN for an image whose prompt does not contain the word.

    Raises
    ------
    ValueError
        A word that no prompt contains, or a model without a token-level prompt encoder.
    """
    words = [words] if isinstance(words, str) else list(words)
    if not words:
        raise ValueError("give at least one word")
    tok = _tokenizer(model)
    images = model.check_images(images)
    n = images.shape[0]
    prompts = _prompts_for(model, prompts, n)
    positions = [[word_token_positions(tok, p, w) for w in words] for p in prompts]
    absent = [w for j, w in enumerate(words) if not any(pos[j] for pos in positions)]
    if absent:
        raise ValueError(f"no prompt contains {absent}: the attention map of a word needs a prompt with that word "
                         f"(e.g. the faces' captions; prompts given: {sorted(set(prompts))[:3]}...)")
    T = model.scheduler.config.num_train_timesteps
    ts = [int(t) for t in timesteps]
    if not ts or any(t < 0 or t >= T for t in ts):
        raise ValueError(f"timesteps must be in [0, {T - 1}], got {list(timesteps)}")
    acp = model.scheduler.alphas_cumprod
    grid = int(model.unet.config.sample_size)
    min_side = max(1, grid // 2) if min_side is None else int(min_side)
    out = torch.full((n, len(words), grid, grid), float("nan"))
    C = int(model.unet.config.in_channels)
    noises = torch.randn((len(ts), n, C, grid, grid), generator=torch.Generator().manual_seed(seed))
    with AttentionRecorder(model.unet) as rec:
        for sl in _chunks(n, batch_size):
            z0 = model.encode(images[sl])
            cond = model.encode_prompt(prompts[sl])
            acc = torch.zeros((z0.shape[0], len(words), grid, grid))
            count = 0
            for k, t in enumerate(ts):
                noise = noises[k, sl].to(z0.device)
                a = acp[t].to(z0.device)
                zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
                rec.reset()
                model.unet(zt, t, encoder_hidden_states=cond)
                if resolutions is not None:
                    used = [p for p in rec.probs if int(round(math.sqrt(p.shape[1]))) in set(map(int, resolutions))]
                else:
                    used = [p for p in rec.probs if p.shape[1] >= min_side ** 2]
                if not used:
                    sides = sorted({int(round(math.sqrt(p.shape[1]))) for p in rec.probs})
                    raise ValueError(f"no cross-attention layer with the requested map sides (min_side {min_side}, "
                                     f"resolutions {resolutions}); this UNet's maps are {sides} on a side")
                for p in used:
                    for bi in range(z0.shape[0]):
                        for j in range(len(words)):
                            pos = positions[sl.start + bi][j]
                            if pos:
                                acc[bi, j] += _grid_maps(p[bi], pos, grid)
                    count += 1
            for bi in range(z0.shape[0]):
                for j in range(len(words)):
                    if positions[sl.start + bi][j]:
                        out[sl.start + bi, j] = acc[bi, j] / count
    return out


def word_region_masks(landmarks, size: int, word: str, *, grid: int | None = None) -> torch.Tensor:
    """The landmark region of a makeup word (:data:`WORD_REGIONS`), hard-edged, (N, 1, size, size), or averaged by
    area onto a ``grid`` x ``grid`` latent grid (each cell = the fraction of its pixels inside)."""
    from facelab.core.regions import face_region_masks

    if word not in WORD_REGIONS:
        raise ValueError(f"no face region known for {word!r}; known words: {sorted(WORD_REGIONS)}")
    m = face_region_masks(landmarks, size, list(WORD_REGIONS[word]), soften=0.0)
    return m if grid is None else F.adaptive_avg_pool2d(m, (grid, grid))


def region_mass(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Fraction of each map's mass inside its region mask: sum(map * mask) / sum(map).

    ``maps``: (N, h, w) or (N, W, h, w), non-negative; ``masks``: (N, 1, H, W) in [0, 1] on any grid (averaged by area
    onto the maps' grid, or upsampled when coarser). Returns (N,) or (N, W) values in [0, 1] (NaN where a map is NaN).
    """
    maps = torch.as_tensor(maps).float()
    squeeze = maps.ndim == 3
    if squeeze:
        maps = maps.unsqueeze(1)
    if maps.ndim != 4:
        raise ValueError(f"maps must be (N, h, w) or (N, W, h, w), got shape {tuple(maps.shape)}")
    masks = torch.as_tensor(masks).float()
    if masks.ndim == 3:
        masks = masks.unsqueeze(1)
    if masks.ndim != 4 or masks.shape[0] != maps.shape[0] or masks.shape[1] != 1:
        raise ValueError(f"masks must be (N, 1, H, W) with N = {maps.shape[0]}, got shape {tuple(masks.shape)}")
    if (masks < 0).any() or (masks > 1).any():
        raise ValueError("masks must have values in [0, 1]")
    if (maps < 0).any():
        raise ValueError("attention maps must be non-negative")
    h, w = maps.shape[-2:]
    if masks.shape[-2:] != (h, w):
        mode = "area" if masks.shape[-2] >= h else "nearest"
        masks = F.interpolate(masks, size=(h, w), mode=mode)
    mass = (maps * masks).flatten(2).sum(-1) / maps.flatten(2).sum(-1)
    return mass[:, 0] if squeeze else mass


# ------------------------------------------------------------------------------------------------ one call
@dataclass
class QualityGates:
    """What :func:`quality_gates` measured: ``table`` (one row per gate) and the data behind it."""

    table: pd.DataFrame
    ddim: pd.DataFrame
    ddpm: pd.DataFrame
    attention: pd.DataFrame
    maps: torch.Tensor
    words: tuple
    images: torch.Tensor
    masks: torch.Tensor
    prompts: list
    settings: dict = field(default_factory=dict)


def _mean_row(gate, values, target, higher_is_better=True, what=""):
    from facelab.metrics.intervals import bootstrap_ci

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    ci = bootstrap_ci(v, seed=0) if len(v) > 1 else None
    est = float(v.mean()) if len(v) else float("nan")
    passed = bool(est >= target) if higher_is_better else bool(est <= target)
    return {"gate": gate, "measured": est, "ci_low": float(ci.lo) if ci else float("nan"),
            "ci_high": float(ci.hi) if ci else float("nan"), "target": target,
            "passed": passed, "n": int(len(v)), "statistic": what}


def quality_gates(model, n_faces: int = 32, seed: int = 0, *, num_steps: int = 50, ddpm_faces: int = 8,
                  ddpm_steps: int = 20, timesteps: Sequence[int] = (200, 400, 600), words: Sequence[str] = GATE_WORDS,
                  attention_faces: int | None = None) -> QualityGates:
    """Measure the model's quality gates on faces of unseen identities, in one call.

    * DDIM inversion + reconstruction PSNR on ``n_faces`` faces drawn like the training set (their captions as
      prompts, ``num_steps`` DDIM steps): mean with a 95 % bootstrap interval, target >= 28 dB; the autoencoder-only
      PSNR alongside (no target: it is the ceiling).
    * Edit-friendly DDPM exactness on the first ``ddpm_faces`` of them (``ddpm_steps`` steps): the largest absolute
      pixel difference to the autoencoder's reconstruction, target < 0.5 / 255 (the same 8-bit image).
    * Attention: on ``attention_faces`` (default ``n_faces``) faces wearing lipstick and eyeshadow
      (:func:`makeup_faces`, captions as prompts), the mass of each word's map inside its region
      (:data:`WORD_REGIONS`, the mask averaged by area onto the latent grid), target >= 0.5; ``chance`` is the mean
      area fraction of the region (what a uniform map would score). For information (no target) also the mass
      inside every latent cell the region touches
      (:func:`facelab.core.regions.latent_mask`, the mask MASQUE blends latents with): a map on the 16 x 16 grid
      cannot put all its mass inside a region a few cells wide when measured by area. ``.attention`` also has the
      mass of the 16 x 16 and of the 8 x 8 layers alone and ``best_cell_*``, the most a map of that resolution can
      score (all its mass on the cell most covered by the region).

    Returns a :class:`QualityGates`; ``.table`` has columns gate, measured, ci_low, ci_high, target, passed, n,
    statistic; ``.maps`` (attention_faces, W, h, w) and ``.images``/``.masks`` are for a figure.
    """
    _check_count(n_faces, "n_faces")
    _check_count(ddpm_faces, "ddpm_faces")
    n_att = n_faces if attention_faces is None else attention_faces
    _check_count(n_att, "attention_faces")
    size = int(model.image_size)
    seconds = {}
    t0 = time.perf_counter()
    faces = unseen_faces(n_faces, seed=seed, size=size)
    captions = faces.labels["caption"].astype(str).tolist()
    ddim = ddim_inversion_psnr(model, faces.images, captions, num_steps=num_steps)
    seconds["ddim"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    k = min(ddpm_faces, n_faces)
    ddpm = ddpm_exactness(model, faces.images[:k], captions[:k], num_steps=ddpm_steps, seed=seed)
    seconds["ddpm"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    mk = makeup_faces(n_att, seed=seed, size=size)
    mk_captions = mk.labels["caption"].astype(str).tolist()
    maps = token_attention_maps(model, mk.images, mk_captions, list(words), timesteps=timesteps, seed=seed)
    grid = maps.shape[-1]
    by_side = {}               # the same maps from one resolution of layers at a time (which layers localise?)
    for side in (grid, grid // 2):
        try:
            by_side[side] = token_attention_maps(model, mk.images, mk_captions, list(words), timesteps=timesteps,
                                                 seed=seed, resolutions=(side,))
        except ValueError:     # a UNet without layers at this resolution
            pass
    seconds["attention"] = time.perf_counter() - t0
    att_rows, masks = [], []
    from facelab.core.regions import latent_mask

    for j, w in enumerate(words):
        px = word_region_masks(mk.landmarks, size, w)
        m = F.adaptive_avg_pool2d(px, (grid, grid))
        cells = latent_mask(px, grid)          # every latent cell the region touches (MASQUE's latent blend mask)
        masks.append(m)
        mass, mass_cells = region_mass(maps[:, j], m), region_mass(maps[:, j], cells)
        area, area_cells = m.flatten(1).mean(1), cells.flatten(1).mean(1)
        per_side = {f"mass_{sd}x{sd}_layers": region_mass(mp[:, j], m) for sd, mp in by_side.items()}
        # the best a map of one resolution can score: all its mass on the cell most covered by the region
        per_side.update({f"best_cell_{sd}x{sd}": F.adaptive_avg_pool2d(px, (sd, sd)).flatten(1).amax(1)
                         for sd in by_side})
        for i in range(n_att):
            att_rows.append({"face": i, "word": w, "region": "+".join(WORD_REGIONS[w]), "mass": float(mass[i]),
                             "chance": float(area[i]), "mass_cells": float(mass_cells[i]),
                             "chance_cells": float(area_cells[i]),
                             **{k_: float(v[i]) for k_, v in per_side.items()}, "caption": mk_captions[i]})
    attention = pd.DataFrame(att_rows)

    rows = [_mean_row("DDIM inversion PSNR (dB)", ddim["psnr_ddim_db"], TARGETS["ddim_psnr_db"],
                      what=f"mean over faces, {num_steps} DDIM steps, captions as prompts"),
            {**_mean_row("autoencoder PSNR (dB), the ceiling", ddim["psnr_autoencoder_db"], float("nan")),
             "passed": None, "statistic": "mean over faces (no target)"},
            {**_mean_row("DDIM inversion PSNR vs the autoencoder's reconstruction (dB)",
                         ddim["psnr_ddim_vs_autoencoder_db"], float("nan")),
             "passed": None, "statistic": "mean over faces: the error the inversion itself adds (no target)"},
            {"gate": "DDPM inversion max abs pixel error", "measured": float(ddpm["pixel_max_abs_error"].max()),
             "ci_low": float("nan"), "ci_high": float("nan"), "target": TARGETS["ddpm_max_abs_error"],
             "passed": bool(ddpm["pixel_max_abs_error"].max() < TARGETS["ddpm_max_abs_error"]), "n": len(ddpm),
             "statistic": f"max over faces and pixels, {ddpm_steps} steps"}]
    for w in words:
        sub = attention[attention.word == w]
        key = f"{w}_region_mass"
        target = TARGETS.get(key, 0.5)
        row = _mean_row(f"'{w}' attention mass in {'+'.join(WORD_REGIONS[w])}", sub["mass"], target,
                        what=f"mean over faces (chance {sub['chance'].mean():.3f})")
        rows.append(row)
        rows.append({**_mean_row(f"'{w}' attention mass in the latent cells touching {'+'.join(WORD_REGIONS[w])}",
                                 sub["mass_cells"], float("nan")), "passed": None,
                     "statistic": f"mean over faces (chance {sub['chance_cells'].mean():.3f}; no target)"})
    table = pd.DataFrame(rows, columns=["gate", "measured", "ci_low", "ci_high", "target", "passed", "n",
                                        "statistic"])
    settings = {"n_faces": n_faces, "attention_faces": n_att, "seed": seed, "num_steps": num_steps, "ddpm_faces": k,
                "ddpm_steps": ddpm_steps, "timesteps": list(timesteps), "words": list(words),
                "identities_from": UNSEEN_OFFSET, "seconds": {k_: round(v, 2) for k_, v in seconds.items()}}
    return QualityGates(table=table, ddim=ddim, ddpm=ddpm, attention=attention, maps=maps, words=tuple(words),
                        images=mk.images, masks=torch.cat(masks, 1), prompts=mk_captions, settings=settings)
