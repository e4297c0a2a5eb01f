"""Presentation (physical) and digital attacks on face images, each labelled with its type and family.

Every attack takes a float batch ``(N, 3, H, W)`` in ``[0, 1]`` (rendered by :class:`facelab.synth.FaceWorld` or
real photos), works on whatever device the batch lives on, and is deterministic given a ``torch.Generator``:
random numbers are drawn on the CPU from that generator and then moved to the batch's device, so the same seed
gives the same attack on a CPU and on a GPU.

=============  ==========  ============================================================================
kind           family      what the image model does
=============  ==========  ============================================================================
``print``      physical    gamut compression (ink cannot reach black or saturated colours), halftone
                           dot screen, paper fibre texture, a bent sheet (cylinder warp + shading),
                           recapture blur and sensor noise
``replay``     physical    a phone/monitor showing the face: display gamma and colour cast, sub-pixel
                           RGB grid, moire bands from camera-screen aliasing, a specular reflection
                           and a dark bezel around a slightly shrunken screen
``mask3d``     physical    a rigid mask: over the face (forehead included) the skin is smoothed to a
                           uniform plastic tone with no micro-texture and a glossy sheen; the wearer's
                           real eyes show through eye holes with a shadowed rim; a dark seam marks the
                           mask edge
``adversarial``  digital   a bounded perturbation, ``||delta||_inf <= epsilon`` (default 8/255): a
                           multi-scale random sign pattern, or PGD against a differentiable ``model``
``faceswap``   digital     the inner face of ``source`` (similarity-aligned on landmarks, colour
                           matched, slightly lower resolution) pasted into the target with a soft but
                           visible blending boundary
``morph``      digital     both faces warped (thin-plate spline on the 68 landmarks) to their average
                           shape and cross-dissolved: a face that resembles both identities
=============  ==========  ============================================================================

:func:`make_attack_set` turns a :class:`~facelab.synth.FaceWorld` into a labelled unified physical-digital
attack set (live faces plus every attack), and :func:`attack_protocols` / :func:`protocol_split` give the
UniAttackData-style evaluation protocols: all attacks seen (P1), unseen physical attacks (P2.1) and unseen digital
attacks (P2.2), with disjoint identities between train and test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from facelab.core.geometry import identity_grid, pixel_grid, pixels_to_grid, umeyama_torch, warp_affine
from facelab.core.images import check_images, gaussian_blur, luminance
from facelab.core.landmarks import LANDMARKS, group_mean
from facelab.core.regions import face_outline_mask

__all__ = [
    "ATTACK_TYPES",
    "ATTACK_KINDS",
    "AttackResult",
    "apply_attack",
    "make_attack_set",
    "attack_protocols",
    "protocol_split",
    "face_region_mask",
]

#: Attack kind -> family ("physical" presentation attacks, "digital" manipulations).
ATTACK_TYPES: dict[str, str] = {
    "print": "physical",
    "replay": "physical",
    "mask3d": "physical",
    "adversarial": "digital",
    "faceswap": "digital",
    "morph": "digital",
}
ATTACK_KINDS: tuple[str, ...] = tuple(ATTACK_TYPES)
PHYSICAL_KINDS = tuple(k for k, f in ATTACK_TYPES.items() if f == "physical")
DIGITAL_KINDS = tuple(k for k, f in ATTACK_TYPES.items() if f == "digital")


@dataclass
class AttackResult:
    """Attacked images and one label row per image; unpacks as ``images, labels = result``.

    Attributes
    ----------
    images : torch.Tensor
        ``(N, 3, H, W)`` float in ``[0, 1]``, on the device of the input.
    labels : pandas.DataFrame
        Columns ``attack``, ``family`` and the attack's own parameters (one row per image).
    """

    images: torch.Tensor
    labels: pd.DataFrame

    def __iter__(self) -> Iterator:
        return iter((self.images, self.labels))

    def __len__(self) -> int:
        return int(self.images.shape[0])


# ----------------------------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------------------------

def _check_landmarks(landmarks, n: int, name: str = "landmarks") -> torch.Tensor | None:
    if landmarks is None:
        return None
    lm = torch.as_tensor(landmarks, dtype=torch.float32)
    if lm.ndim != 3 or lm.shape[0] != n or lm.shape[1] != 68 or lm.shape[2] != 2:
        raise ValueError(f"{name} must have shape ({n}, 68, 2) (iBUG 68 pixel coordinates), got {tuple(lm.shape)}")
    return lm


def _uniform(n: int, lo: float, hi: float, generator, device) -> torch.Tensor:
    return (lo + (hi - lo) * torch.rand(n, generator=generator)).to(device)


def _randn(shape, generator, device) -> torch.Tensor:
    return torch.randn(*shape, generator=generator).to(device)


#: Binary face outline from landmarks (``"face"``, ``"inner"``, ``"full"``): :func:`facelab.core.regions.face_outline_mask`.
face_region_mask = face_outline_mask


# ----------------------------------------------------------------------------------------------------------------
# physical attacks
# ----------------------------------------------------------------------------------------------------------------

def _print_attack(x: torch.Tensor, g, *, halftone_period: float | None = None, bend: float | None = None,
                  blur_sigma: float | None = None, noise_std: float = 0.01, **_) -> tuple[torch.Tensor, dict]:
    n, _, h, w = x.shape
    dev = x.device
    # gamut: inks cannot reach deep black or saturated colours; paper tint is warm
    sat = _uniform(n, 0.55, 0.85, g, dev).view(n, 1, 1, 1)
    black = _uniform(n, 0.06, 0.14, g, dev).view(n, 1, 1, 1)
    white = _uniform(n, 0.86, 0.95, g, dev).view(n, 1, 1, 1)
    lum = luminance(x)
    y = lum + sat * (x - lum)
    y = black + (white - black) * y
    paper = torch.stack([_uniform(n, 0.99, 1.02, g, dev), _uniform(n, 0.97, 1.0, g, dev),
                         _uniform(n, 0.88, 0.95, g, dev)], 1).view(n, 3, 1, 1)
    y = y * paper
    # halftone: a rotated dot screen; ink coverage = soft threshold of the tone against the screen
    period = (torch.full((n,), float(halftone_period), device=dev) if halftone_period is not None
              else _uniform(n, 2.6, 4.0, g, dev))
    angle = _uniform(n, 0.0, math.pi / 2, g, dev)
    px, py = pixel_grid(h, w, dev)
    ca, sa = torch.cos(angle).view(n, 1, 1), torch.sin(angle).view(n, 1, 1)
    u = (ca * px + sa * py) / period.view(n, 1, 1)
    v = (-sa * px + ca * py) / period.view(n, 1, 1)
    screen = (0.5 + 0.25 * (torch.cos(2 * math.pi * u) + torch.cos(2 * math.pi * v))).unsqueeze(1)
    dots = torch.sigmoid(10.0 * (y - screen))
    ink = _uniform(n, 0.3, 0.5, g, dev).view(n, 1, 1, 1)               # how much of the tone is dot-rendered
    y = (1 - ink) * y + ink * dots
    # paper fibres: smooth multiplicative noise
    fibres = gaussian_blur(_randn((n, 1, h, w), g, dev), 0.8)
    fibres = fibres / fibres.flatten(1).std(1).clamp_min(1e-6).view(n, 1, 1, 1)
    y = y * (1.0 + 0.03 * fibres)
    # bending: the sheet curls round a vertical axis (x_img = R sin(x_paper / R)), with a small rotation
    k = (torch.full((n,), float(bend), device=dev) if bend is not None else _uniform(n, 0.0, 0.8, g, dev))
    rot = _uniform(n, -0.08, 0.08, g, dev)
    grid = identity_grid(n, h, w, dev)
    gx, gy = grid[..., 0], grid[..., 1]
    cr, sr = torch.cos(rot).view(n, 1, 1), torch.sin(rot).view(n, 1, 1)
    rx, ry = cr * gx - sr * gy, sr * gx + cr * gy
    kk = k.view(n, 1, 1)
    arg = (kk * rx).clamp(-0.999, 0.999)
    safe_k = torch.where(kk.abs() < 1e-4, torch.ones_like(kk), kk)
    ux = torch.where(kk.abs() < 1e-4, rx, torch.asin(arg) / safe_k)
    y = F.grid_sample(y, torch.stack([ux, ry], -1), mode="bilinear", padding_mode="border", align_corners=False)
    shade = 1.0 - 0.35 * (1.0 - torch.sqrt(1.0 - arg ** 2))             # surfaces turning away get darker
    light_side = _uniform(n, -0.12, 0.12, g, dev).view(n, 1, 1)
    y = y * (shade + light_side * rx).unsqueeze(1)
    # recapture: blur and sensor noise
    sigma = (torch.full((n,), float(blur_sigma), device=dev) if blur_sigma is not None
             else _uniform(n, 0.5, 1.1, g, dev))
    y = gaussian_blur(y, sigma)
    y = y + noise_std * _randn((n, 3, h, w), g, dev)
    params = {"halftone_period": period, "bend": k, "blur_sigma": sigma, "saturation": sat.view(n)}
    return y.clamp(0.0, 1.0), params


def _replay_attack(x: torch.Tensor, g, *, gamma: float | None = None, moire_strength: float | None = None,
                   grid_pitch: int = 3, screen_scale: float | None = None, **_) -> tuple[torch.Tensor, dict]:
    n, _, h, w = x.shape
    dev = x.device
    # display: gamma mismatch, raised black level (backlight), cool colour cast
    gam = (torch.full((n,), float(gamma), device=dev) if gamma is not None else _uniform(n, 0.65, 1.5, g, dev))
    y = x.clamp_min(1e-4) ** gam.view(n, 1, 1, 1)
    black = _uniform(n, 0.03, 0.09, g, dev).view(n, 1, 1, 1)
    cast = torch.stack([_uniform(n, 0.9, 0.98, g, dev), _uniform(n, 0.97, 1.02, g, dev),
                        _uniform(n, 1.03, 1.12, g, dev)], 1).view(n, 3, 1, 1)
    y = black + (1.0 - black) * y * cast
    # bezel: the screen is a little smaller than the camera frame and sits off-centre
    s = (torch.full((n,), float(screen_scale), device=dev) if screen_scale is not None
         else _uniform(n, 0.8, 0.95, g, dev))
    off = (1.0 - s).view(n, 1) * (2 * torch.rand(n, 2, generator=g).to(dev) - 1.0)
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0] = 1.0 / s
    theta[:, 1, 1] = 1.0 / s
    theta[:, :, 2] = -off / s.view(n, 1)
    grid = F.affine_grid(theta, (n, 3, h, w), align_corners=False)
    inside = F.grid_sample(torch.ones(n, 1, h, w, device=dev), grid, align_corners=False, padding_mode="zeros")
    y = F.grid_sample(y, grid, mode="bilinear", padding_mode="border", align_corners=False)
    px, py = pixel_grid(h, w, dev)
    # sub-pixel grid: each pixel column lights one of R, G, B; a dark line between pixel rows
    sub = torch.stack([((px.long() % grid_pitch) == c).float() for c in range(3)], 0)   # (3, H, W)
    rows = ((py.long() % grid_pitch) == 0).float()
    grid_amp = _uniform(n, 0.08, 0.18, g, dev).view(n, 1, 1, 1)
    y = y * (1.0 - grid_amp + grid_amp * 1.5 * sub.unsqueeze(0)) * (1.0 - 0.5 * grid_amp * rows)
    # moire: curved low-frequency bands with per-channel phase (colour fringes)
    freq = _uniform(n, 0.04, 0.14, g, dev).view(n, 1, 1)
    ang = _uniform(n, 0.0, math.pi, g, dev).view(n, 1, 1)
    curv = _uniform(n, -0.004, 0.004, g, dev).view(n, 1, 1)
    phase = _uniform(n, 0.0, 2 * math.pi, g, dev).view(n, 1, 1)
    cx, cy = px - w / 2, py - h / 2
    arg = 2 * math.pi * freq * (torch.cos(ang) * cx + torch.sin(ang) * cy) + curv * (cx ** 2 + cy ** 2) + phase
    fringe = torch.stack([torch.cos(arg + d) for d in (0.0, 2.1, 4.2)], 1)
    amp = (torch.full((n,), float(moire_strength), device=dev) if moire_strength is not None
           else _uniform(n, 0.04, 0.1, g, dev))
    y = y * (1.0 + amp.view(n, 1, 1, 1) * fringe)
    # specular reflection of a lamp/window on the glass: an elongated Gaussian added on top
    mx, my = _uniform(n, 0.1, 0.9, g, dev).view(n, 1, 1) * w, _uniform(n, 0.1, 0.9, g, dev).view(n, 1, 1) * h
    sx, sy = _uniform(n, 0.08, 0.3, g, dev).view(n, 1, 1) * w, _uniform(n, 0.04, 0.12, g, dev).view(n, 1, 1) * h
    th = _uniform(n, 0.0, math.pi, g, dev).view(n, 1, 1)
    du, dv = px - mx, py - my
    ru = torch.cos(th) * du + torch.sin(th) * dv
    rv = -torch.sin(th) * du + torch.cos(th) * dv
    glare = torch.exp(-0.5 * ((ru / sx) ** 2 + (rv / sy) ** 2)).unsqueeze(1)
    glare_amp = _uniform(n, 0.15, 0.35, g, dev).view(n, 1, 1, 1)
    y = y + glare_amp * glare
    bezel = _uniform(n, 0.03, 0.12, g, dev).view(n, 1, 1, 1)
    y = inside * y + (1.0 - inside) * bezel
    params = {"gamma": gam, "moire_strength": amp, "moire_frequency": freq.view(n), "screen_scale": s}
    return y.clamp(0.0, 1.0), params


def _eye_holes(lm: torch.Tensor | None, n: int, h: int, w: int, dev) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft eye-hole masks and the normalised radius map (r < 1 inside a hole), shape (N, 1, H, W)."""
    px, py = pixel_grid(h, w, dev)
    if lm is None:
        centres = torch.tensor([[0.37 * w, 0.43 * h], [0.63 * w, 0.43 * h]], device=dev).expand(n, 2, 2)
        axis = torch.tensor([1.0, 0.0], device=dev).expand(n, 2, 2)
        half = torch.full((n, 2), 0.09 * w, device=dev)
    else:
        er, el = LANDMARKS["eye_right"], LANDMARKS["eye_left"]
        centres = torch.stack([group_mean(lm, "eye_right"), group_mean(lm, "eye_left")], 1)   # (N, 2, 2)
        corner = torch.stack([lm[:, er[3]] - lm[:, er[0]], lm[:, el[3]] - lm[:, el[0]]], 1)  # corner to corner
        half = corner.norm(dim=-1).clamp_min(1.0) * 0.5
        axis = corner / (2 * half.unsqueeze(-1))
    a = 1.35 * half                                                      # hole a bit larger than the eye
    b = 0.75 * a
    r = None
    for e in range(2):
        du = px - centres[:, e, 0].view(n, 1, 1)
        dv = py - centres[:, e, 1].view(n, 1, 1)
        ax, ay = axis[:, e, 0].view(n, 1, 1), axis[:, e, 1].view(n, 1, 1)
        u = ax * du + ay * dv
        v = -ay * du + ax * dv
        re = torch.sqrt((u / a[:, e].view(n, 1, 1)) ** 2 + (v / b[:, e].view(n, 1, 1)) ** 2)
        r = re if r is None else torch.minimum(r, re)
    return (r < 1.0).float().unsqueeze(1), r.unsqueeze(1)


def _mask3d_attack(x: torch.Tensor, g, *, landmarks=None, smoothness: float | None = None,
                   **_) -> tuple[torch.Tensor, dict]:
    n, _, h, w = x.shape
    dev = x.device
    lm = None if landmarks is None else landmarks.to(dev)
    cover = face_region_mask(lm, h, w, region="full", n=n, device=dev)
    holes, r = _eye_holes(lm, n, h, w, dev)
    # smooth, uniform "plastic" skin: strong blur, pulled towards the mask's mean colour, with a tint
    sig = (torch.full((n,), float(smoothness), device=dev) if smoothness is not None
           else _uniform(n, 0.02, 0.035, g, dev) * w)
    smooth = gaussian_blur(x, sig)
    area = cover.sum((2, 3), keepdim=True).clamp_min(1.0)
    mean = (smooth * cover).sum((2, 3), keepdim=True) / area
    flat = _uniform(n, 0.35, 0.6, g, dev).view(n, 1, 1, 1)
    tint = torch.stack([_uniform(n, 0.98, 1.08, g, dev), _uniform(n, 0.93, 1.02, g, dev),
                        _uniform(n, 0.88, 1.0, g, dev)], 1).view(n, 3, 1, 1)
    skin = ((1 - flat) * smooth + flat * mean) * tint
    # gloss: broad highlights on the forehead and nose bridge, the same on every mask of the batch shape
    px, py = pixel_grid(h, w, dev)
    if lm is None:
        spots = torch.tensor([[0.5 * w, 0.3 * h], [0.5 * w, 0.55 * h]], device=dev).expand(n, 2, 2)
    else:
        brow_mid = group_mean(lm, "brows")
        chin, nose_bridge_low = LANDMARKS["chin"][0], LANDMARKS["nose_bridge"][2]
        spots = torch.stack([brow_mid + 0.25 * (brow_mid - lm[:, chin]), lm[:, nose_bridge_low]], 1)
    gloss = torch.zeros(n, 1, h, w, device=dev)
    for s in range(2):
        d2 = (px - spots[:, s, 0].view(n, 1, 1)) ** 2 + (py - spots[:, s, 1].view(n, 1, 1)) ** 2
        gloss = gloss + torch.exp(-d2 / (2 * (0.07 * w) ** 2)).unsqueeze(1)
    skin = skin + _uniform(n, 0.08, 0.16, g, dev).view(n, 1, 1, 1) * gloss
    # the wearer's eyes through the holes, with a shadowed rim of mask thickness
    rim = ((r >= 1.0) & (r < 1.12)).float()
    skin = holes * x + (1 - holes) * skin * (1 - 0.3 * rim)
    # seam where the mask edge meets the wearer's skin
    soft = gaussian_blur(cover, 1.0)
    seam = (4.0 * soft * (1 - soft)).clamp(0, 1)
    y = cover * skin + (1 - cover) * x
    y = y * (1 - 0.45 * seam)
    params = {"smoothness_px": sig, "flatness": flat.view(n), "mask_area": cover.mean((1, 2, 3))}
    return y.clamp(0.0, 1.0), params


# ----------------------------------------------------------------------------------------------------------------
# digital attacks
# ----------------------------------------------------------------------------------------------------------------

def _adversarial_attack(x: torch.Tensor, g, *, epsilon: float = 8 / 255, model: Callable | None = None,
                        steps: int = 10, step_size: float | None = None, **_) -> tuple[torch.Tensor, dict]:
    n, c, h, w = x.shape
    dev = x.device
    if not (0.0 < float(epsilon) <= 0.25):
        raise ValueError(f"epsilon must be in (0, 0.25] (L-inf budget on [0, 1] images), got {epsilon!r}")
    eps = float(epsilon)
    # multi-scale random field -> sign: the look of an adversarial texture, at the full L-inf budget
    field = torch.zeros(n, c, h, w, device=dev)
    for s in (1, 2, 4, 8):
        z = _randn((n, c, max(1, h // s), max(1, w // s)), g, dev)
        field = field + F.interpolate(z, size=(h, w), mode="bilinear", align_corners=False)
    delta = eps * torch.sign(field)
    method = "random-sign"
    if model is not None:
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1 for PGD, got {steps!r}")
        method = "pgd"
        alpha = float(step_size) if step_size is not None else 2.5 * eps / int(steps)
        delta = 0.5 * delta
        with torch.no_grad():
            clean = model(x).reshape(n, -1).detach()
        with torch.enable_grad():
            for _ in range(int(steps)):
                d = delta.detach().requires_grad_(True)
                emb = model((x + d).clamp(0, 1)).reshape(n, -1)
                sim = F.cosine_similarity(emb, clean, dim=1).sum()     # dodging: move away from the clean output
                (grad,) = torch.autograd.grad(sim, d)
                delta = (d - alpha * grad.sign()).clamp(-eps, eps).detach()
    y = (x + delta).clamp(0.0, 1.0)
    params = {"epsilon": torch.full((n,), eps), "method": [method] * n}
    return y, params


def _tps_warp(img: torch.Tensor, out_pts: torch.Tensor, in_pts: torch.Tensor, coarse: int = 32) -> torch.Tensor:
    """Thin-plate-spline warp: output pixel at ``out_pts[k]`` samples ``img`` at ``in_pts[k]`` (pixel coords).

    The frame's corners and edge midpoints stay fixed; the spline is evaluated on a coarse grid and upsampled.
    """
    n, _, h, w = img.shape
    dev = img.device
    border = torch.tensor([[-1, -1], [0, -1], [1, -1], [1, 0], [1, 1], [0, 1], [-1, 1], [-1, 0]],
                          dtype=torch.float32, device=dev).expand(n, 8, 2)
    c = torch.cat([pixels_to_grid(out_pts.to(dev), h, w), border], 1)           # control points (output space)
    v = torch.cat([pixels_to_grid(in_pts.to(dev), h, w), border], 1)            # where they sample (input space)
    k = c.shape[1]

    def kernel(d2):
        return d2 * torch.log(d2.clamp_min(1e-12))

    kmat = kernel(((c[:, :, None] - c[:, None]) ** 2).sum(-1)) + 1e-4 * torch.eye(k, device=dev)
    p = torch.cat([torch.ones(n, k, 1, device=dev), c], -1)
    top = torch.cat([kmat, p], 2)
    bottom = torch.cat([p.transpose(1, 2), torch.zeros(n, 3, 3, device=dev)], 2)
    system = torch.cat([top, bottom], 1)
    rhs = torch.cat([v, torch.zeros(n, 3, 2, device=dev)], 1)
    coef = torch.linalg.solve(system, rhs)                              # (N, K+3, 2)
    gs = torch.linspace(-1, 1, coarse, device=dev)
    gy, gx = torch.meshgrid(gs, gs, indexing="ij")
    q = torch.stack([gx, gy], -1).reshape(1, -1, 2).expand(n, -1, -1)
    uq = kernel(((q[:, :, None] - c[:, None]) ** 2).sum(-1))
    pq = torch.cat([torch.ones(n, q.shape[1], 1, device=dev), q], -1)
    mapped = torch.cat([uq, pq], 2) @ coef                               # (N, G*G, 2)
    flow = (mapped - q).reshape(n, coarse, coarse, 2).permute(0, 3, 1, 2)
    flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=True).permute(0, 2, 3, 1)
    grid = identity_grid(n, h, w, dev) + flow
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _source_and_landmarks(x, source, landmarks, source_landmarks, kind):
    n = x.shape[0]
    source_index = None
    if source is None:
        if n < 2:
            raise ValueError(f"{kind} needs a second face: pass source=(N, 3, H, W) or a batch of at least 2 images")
        source = torch.roll(x, 1, dims=0)
        source_index = np.roll(np.arange(n), 1)
        if source_landmarks is None and landmarks is not None:
            source_landmarks = torch.roll(landmarks, 1, dims=0)
    else:
        source = check_images(source, "source", channels=(3,))
        if source.shape != x.shape:
            raise ValueError(f"source must have the same shape as images {tuple(x.shape)}, got {tuple(source.shape)}")
        source = source.to(x.device, x.dtype)
    source_landmarks = _check_landmarks(source_landmarks, n, "source_landmarks")
    if (landmarks is None) != (source_landmarks is None):
        raise ValueError(f"{kind}: give landmarks for both the target (landmarks=) and the source "
                         "(source_landmarks=), or for neither (then the faces are assumed aligned)")
    return source, source_landmarks, source_index


def _faceswap_attack(x, g, *, source=None, landmarks=None, source_landmarks=None, blend_sigma: float | None = None,
                     color_strength: float | None = None, **_) -> tuple[torch.Tensor, dict]:
    n, _, h, w = x.shape
    dev = x.device
    src, slm, sidx = _source_and_landmarks(x, source, landmarks, source_landmarks, "faceswap")
    lm = None if landmarks is None else landmarks.to(dev)
    if lm is not None:
        a = umeyama_torch(lm, slm.to(dev))                                # target pixel -> source pixel
        src = warp_affine(src, a, padding_mode="border")
    # the generated face is a little softer than the frame around it (the swap network's lower resolution)
    half = F.interpolate(src, scale_factor=0.5, mode="bilinear", align_corners=False, antialias=True)
    src = F.interpolate(half, size=(h, w), mode="bilinear", align_corners=False)
    region = face_region_mask(lm, h, w, region="inner", n=n, device=dev)
    # colour transfer (Reinhard, per RGB channel, inside the face region), partly applied
    area = region.sum((2, 3), keepdim=True).clamp_min(1.0)

    def stats(img):
        mu = (img * region).sum((2, 3), keepdim=True) / area
        sd = (((img - mu) ** 2 * region).sum((2, 3), keepdim=True) / area).sqrt().clamp_min(1e-3)
        return mu, sd

    mt, st = stats(x)
    ms, ss = stats(src)
    cs = (torch.full((n,), float(color_strength), device=dev) if color_strength is not None
          else _uniform(n, 0.7, 0.95, g, dev)).view(n, 1, 1, 1)
    matched = (src - ms) / ss * st + mt
    src = cs * matched + (1 - cs) * src
    sig = (torch.full((n,), float(blend_sigma), device=dev) if blend_sigma is not None
           else _uniform(n, 0.8, 1.8, g, dev))
    alpha = gaussian_blur(region, sig).clamp(0, 1)
    y = alpha * src + (1 - alpha) * x
    params = {"source_index": sidx if sidx is not None else np.full(n, -1), "blend_sigma": sig,
              "color_strength": cs.view(n)}
    return y.clamp(0.0, 1.0), params


def _morph_attack(x, g, *, source=None, landmarks=None, source_landmarks=None, alpha: float | None = 0.5,
                  **_) -> tuple[torch.Tensor, dict]:
    n = x.shape[0]
    dev = x.device
    src, slm, sidx = _source_and_landmarks(x, source, landmarks, source_landmarks, "morph")
    al = (torch.full((n,), float(alpha), device=dev) if alpha is not None else _uniform(n, 0.3, 0.7, g, dev))
    if not bool(((al >= 0) & (al <= 1)).all()):
        raise ValueError(f"morph alpha must be in [0, 1], got {alpha!r}")
    a4 = al.view(n, 1, 1, 1)
    if landmarks is not None:
        lm, slm = landmarks.to(dev), slm.to(dev)
        mean_shape = (1 - al.view(n, 1, 1)) * lm + al.view(n, 1, 1) * slm
        x_w = _tps_warp(x, mean_shape, lm)
        s_w = _tps_warp(src, mean_shape, slm)
    else:
        x_w, s_w = x, src
    y = (1 - a4) * x_w + a4 * s_w
    params = {"source_index": sidx if sidx is not None else np.full(n, -1), "alpha": al}
    return y.clamp(0.0, 1.0), params


_ATTACKS = {
    "print": _print_attack,
    "replay": _replay_attack,
    "mask3d": _mask3d_attack,
    "adversarial": _adversarial_attack,
    "faceswap": _faceswap_attack,
    "morph": _morph_attack,
}


def apply_attack(images: torch.Tensor, kind: str, generator: torch.Generator | None = None,
                 source: torch.Tensor | None = None, landmarks: torch.Tensor | None = None,
                 **params) -> AttackResult:
    """Apply one attack to a batch of faces.

    Parameters
    ----------
    images : torch.Tensor
        ``(N, 3, H, W)`` float in ``[0, 1]`` on any device (the bona fide / live faces, or the target faces of a
        swap or morph).
    kind : str
        One of :data:`ATTACK_KINDS`: ``"print"``, ``"replay"``, ``"mask3d"`` (physical) or ``"adversarial"``,
        ``"faceswap"``, ``"morph"`` (digital).
    generator : torch.Generator, optional
        CPU generator for every random choice (same generator state -> same pixels on any device). ``None`` uses
        the global torch RNG.
    source : torch.Tensor, optional
        The second faces of ``faceswap``/``morph`` (same shape as ``images``). ``None`` pairs each image with the
        previous one in the batch (``torch.roll`` by one).
    landmarks : torch.Tensor, optional
        ``(N, 68, 2)`` iBUG-68 pixel coordinates of ``images``. ``mask3d`` places the mask, eye holes and seam
        with them; ``faceswap``/``morph`` align faces with them (then ``source_landmarks=`` is needed too, unless
        ``source`` is None). Without landmarks, faces are assumed centred and aligned.
    **params
        Per-kind options (all optional): print ``halftone_period``, ``bend``, ``blur_sigma``, ``noise_std``;
        replay ``gamma``, ``moire_strength``, ``grid_pitch``, ``screen_scale``; mask3d ``smoothness``;
        adversarial ``epsilon`` (default 8/255), ``model`` (a differentiable callable: PGD that lowers the cosine
        similarity of ``model(x + delta)`` to ``model(x)``), ``steps``, ``step_size``; faceswap
        ``source_landmarks``, ``blend_sigma``, ``color_strength``; morph ``source_landmarks``, ``alpha``
        (default 0.5; ``None`` draws it in [0.3, 0.7]).

    Returns
    -------
    AttackResult
        ``images`` (same shape and device) and ``labels`` (``attack``, ``family`` and the drawn parameters).

    Examples
    --------
    >>> import torch
    >>> faces = torch.rand(4, 3, 64, 64)
    >>> attacked, labels = apply_attack(faces, "print", generator=torch.Generator().manual_seed(0))
    >>> attacked.shape, labels.loc[0, "family"]
    (torch.Size([4, 3, 64, 64]), 'physical')
    """
    if not isinstance(kind, str) or kind not in _ATTACKS:
        raise ValueError(f"Unknown attack kind {kind!r}; expected one of: {', '.join(ATTACK_KINDS)} "
                         f"(physical: {', '.join(PHYSICAL_KINDS)}; digital: {', '.join(DIGITAL_KINDS)})")
    x = check_images(images, channels=(3,))
    n = x.shape[0]
    lm = _check_landmarks(landmarks, n)
    fn = _ATTACKS[kind]
    if kind in ("faceswap", "morph"):
        y, extra = fn(x, generator, source=source, landmarks=lm, **params)
    else:
        if source is not None:
            raise ValueError(f"source= is used only by faceswap and morph, not by {kind!r}")
        y, extra = fn(x.detach(), generator, landmarks=lm, **params)
    table = {"attack": [kind] * n, "family": [ATTACK_TYPES[kind]] * n}
    for key, val in extra.items():
        table[key] = val.detach().cpu().numpy() if isinstance(val, torch.Tensor) else np.asarray(val)
    return AttackResult(images=y.to(x.dtype), labels=pd.DataFrame(table))


# ----------------------------------------------------------------------------------------------------------------
# a unified physical-digital attack set from the synthetic world
# ----------------------------------------------------------------------------------------------------------------

def make_attack_set(world, n_identities: int, per_identity: int, kinds: Sequence[str] = ATTACK_KINDS,
                    generator: torch.Generator | None = None, identity_offset: int = 0, nuisance: str = "mild",
                    **sample_kwargs) -> tuple[torch.Tensor, pd.DataFrame]:
    """Live faces plus every attack kind, for the same identities, with labels.

    For each identity the world renders ``per_identity`` live images, then, for each kind, another
    ``per_identity`` fresh renders (new pose/light draws) that are attacked. Face swaps and morphs take their second
    face from the next identity of the set (so ``n_identities >= 2`` is needed for them).

    Parameters
    ----------
    world : facelab.synth.FaceWorld
    n_identities, per_identity : int
        Identities ``identity_offset .. identity_offset + n_identities - 1`` and images per identity and class.
    kinds : sequence of str
        Attack kinds to include (default: all of :data:`ATTACK_KINDS`).
    generator : torch.Generator, optional
        Drives both the rendering and the attacks.
    nuisance : str
        Passed to ``world.sample`` (default ``"mild"``).
    **sample_kwargs
        Other ``world.sample`` factors (expression, makeup, ...).

    Returns
    -------
    images : torch.Tensor
        ``(n_identities * per_identity * (1 + len(kinds)), 3, H, W)``.
    labels : pandas.DataFrame
        ``identity``, ``live`` (bool), ``attack`` (``"live"`` or the kind), ``family`` (``"live"``, ``"physical"``,
        ``"digital"``), ``source_identity`` (swap/morph donor, else -1).
    """
    if isinstance(n_identities, bool) or not isinstance(n_identities, (int, np.integer)) or n_identities < 1:
        raise ValueError(f"n_identities must be a positive integer, got {n_identities!r}")
    if isinstance(per_identity, bool) or not isinstance(per_identity, (int, np.integer)) or per_identity < 1:
        raise ValueError(f"per_identity must be a positive integer, got {per_identity!r}")
    kinds = list(kinds)
    bad = [k for k in kinds if k not in ATTACK_TYPES]
    if bad:
        raise ValueError(f"Unknown attack kind(s) {bad}; expected a subset of {list(ATTACK_KINDS)}")
    if n_identities < 2 and any(k in ("faceswap", "morph") for k in kinds):
        raise ValueError("faceswap and morph need at least 2 identities (the donor face is another identity)")
    n_total = int(n_identities) * int(per_identity) * (1 + len(kinds))
    size = int(getattr(world, "size", 0))
    from facelab.io import check_batch_bytes

    check_batch_bytes(float(n_total) * 3 * 4 * size * size, f"make_attack_set ({n_total:,} images of {size} px)",
                      device=getattr(world, "device", None),
                      instead="Build it in parts: several calls with identity_offset stepping through the identities "
                              "(or fewer kinds per call), each used and released before the next.")
    if generator is None:
        generator = torch.Generator().manual_seed(0)

    def render():
        return world.sample(n_identities=int(n_identities), per_identity=int(per_identity),
                            identity_offset=int(identity_offset), nuisance=nuisance, generator=generator,
                            **sample_kwargs)

    live = render()
    ids = live.labels["identity"].to_numpy()
    images = [live.images]
    frames = [pd.DataFrame({"identity": ids, "live": True, "attack": "live", "family": "live",
                            "source_identity": -1})]
    for kind in kinds:
        batch = render()
        extra = {}
        if kind in ("faceswap", "morph"):
            shift = int(per_identity)                                   # donor = the next identity in the set
            extra = {"source": torch.roll(batch.images, shift, 0),
                     "source_landmarks": torch.roll(batch.landmarks, shift, 0)}
            donor = np.roll(batch.labels["identity"].to_numpy(), shift)
        else:
            donor = np.full(len(ids), -1)
        res = apply_attack(batch.images, kind, generator=generator, landmarks=batch.landmarks, **extra)
        images.append(res.images)
        frames.append(pd.DataFrame({"identity": batch.labels["identity"].to_numpy(), "live": False,
                                    "attack": kind, "family": ATTACK_TYPES[kind], "source_identity": donor}))
    labels = pd.concat(frames, ignore_index=True)
    labels["live"] = labels["live"].astype(bool)
    return torch.cat(images, 0), labels


def attack_protocols() -> pd.DataFrame:
    """The UniAttackData-style protocols (Fang et al., 2024) over this module's attack kinds.

    Returns
    -------
    pandas.DataFrame
        One row per protocol: ``protocol`` ("P1", "P2.1", "P2.2"), ``description``, ``train_attacks`` and
        ``test_attacks`` (tuples of kinds; live faces are in both). Identities never overlap between train and
        test (see :func:`protocol_split`).
    """
    rows = [
        ("P1", "all attack types seen in training", ATTACK_KINDS, ATTACK_KINDS),
        ("P2.1", "unseen physical attacks: train on live + digital, test on live + physical",
         DIGITAL_KINDS, PHYSICAL_KINDS),
        ("P2.2", "unseen digital attacks: train on live + physical, test on live + digital",
         PHYSICAL_KINDS, DIGITAL_KINDS),
    ]
    return pd.DataFrame(rows, columns=["protocol", "description", "train_attacks", "test_attacks"])


def protocol_split(labels: pd.DataFrame, protocol: str, test_fraction: float = 0.3,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Boolean train/test masks over the rows of ``labels`` for one protocol of :func:`attack_protocols`.

    Identities are split first (a ``test_fraction`` of them go to test), then rows are kept when their attack kind
    belongs to that side of the protocol (live rows always do).
    """
    table = attack_protocols().set_index("protocol")
    if protocol not in table.index:
        raise ValueError(f"Unknown protocol {protocol!r}; expected one of {list(table.index)}")
    for col in ("identity", "attack"):
        if col not in labels.columns:
            raise ValueError(f"labels needs a {col!r} column (as returned by make_attack_set)")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    ids = np.unique(labels["identity"].to_numpy())
    if len(ids) < 2:
        raise ValueError("protocol_split needs at least 2 identities to keep train and test identities disjoint")
    rng = np.random.default_rng(seed)
    n_test = min(len(ids) - 1, max(1, int(round(test_fraction * len(ids)))))
    test_ids = rng.choice(ids, size=n_test, replace=False)
    is_test_id = labels["identity"].isin(test_ids).to_numpy()
    attack = labels["attack"].to_numpy()
    live = attack == "live"
    train_ok = live | np.isin(attack, list(table.loc[protocol, "train_attacks"]))
    test_ok = live | np.isin(attack, list(table.loc[protocol, "test_attacks"]))
    return (~is_test_id) & train_ok, is_test_id & test_ok
