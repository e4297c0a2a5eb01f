"""Vectorised soft rasteriser of the synthetic faces (torch, batched, any device).

A face is drawn in a *frontal frame* from its 68 landmarks with smooth primitives (soft polygons in polar form,
parabolic lids, piecewise-linear lips, capsules), lit with a normal map derived from an analytic depth map, then
warped to its head pose with one ``grid_sample`` (2.5-D: each frontal point moves with its depth), composited over a
background, occluded, and degraded (resolution, blur, noise, JPEG).

The stages of :func:`render` (each a function below, in this order):

1. **identity layer** -- :func:`draw_identity` draws each identity once (head, skin and texture, hair, neck and ears,
   brows, nostrils, age lines, beard) into a cached frontal layer; per image, :func:`_expression_layer` warps it
   along the expression's landmark displacements (style "photo": :func:`_photo_expression_grid`, which moves the
   photo texture as far as the landmarks);
2. **expression** -- :func:`draw_expression` draws on the warped layer: PPG skin colour, AU wrinkles (style "photo":
   plus the broad folds of :func:`_photo_folds` and the learned shading of :data:`PHOTO_SHADING`), blush, eyes
   (style "photo": eye whites where the lids open wider), mouth (style "photo": opened only by the jaw and the
   upper lip, teeth bared by a smile, a raised or a stretched lip), glasses and the frontal occluders (scarf,
   medical mask, hand);
3. **light** -- :func:`_shade`: an analytic depth (:class:`DepthModel`) gives normals, lit at half resolution;
4. **pose** -- :func:`_pose`: one backward warp turns the frontal stack to the head pose and placement;
5. **background** -- :func:`_composite` over :func:`_background`;
6. **image-space occluders** -- :func:`_image_occluders`: random blocks and corrupted pixels, sized on the face;
7. **camera** -- :func:`degrade`: resolution loss, blur, sensor noise, JPEG;
8. **ground truth** -- :func:`project_landmarks` and the occluded share of the face.

Coordinates: x right, y down, [-1, 1] over the image, pixel centres at ``(2 j + 1) / size - 1``. Landmarks are
read through the named groups and points of :mod:`facelab.synth.landmarks`, packed parameters through the named
columns of :mod:`facelab.synth.fields`.
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from facelab.synth.facs import _AU_INDEX
from facelab.synth.fields import (Background, Beard, BlockParam, Brow, Clutter, Degrade, Face, Glasses, HairShape,
                                  HairStyle, HandParam, Layer, Light, Makeup, MaskParam, PixelsParam, ScarfParam,
                                  Similarity, Texture)
from facelab.synth.landmarks import (ALAR, BROWS, CHIN, EYE_LEFT_OUTER, EYE_RIGHT_OUTER, EYES, JAW, JAW_LEFT,
                                     JAW_RIGHT, LIP_CONTOURS, LOWER_LIP_BOTTOM, MOUTH_LEFT, MOUTH_RIGHT, NOSE_BRIDGE,
                                     NOSE_ROOT, NOSE_TIP, NOSTRIL_LEFT, NOSTRIL_RIGHT, SUBNASALE, UPPER_LIP_OUTER,
                                     UPPER_LIP_TOP, span)

#: style "photo": AU wrinkles and folds this much darker than in the cartoon style
PHOTO_WRINKLE_GAIN = 1.6
#: style "photo": the light's relief (the analytic head's depth in the shading) at this share: the real-photo detail
#: maps carry their own shading, and the shared analytic head drawn at full relief made different people alike to
#: the real networks (100 identities x 4, mild nuisance; dlib FAR on world seeds 101, 202, 303, 404 at full relief
#: 0.176, 0.202, 0.228, 0.180, at half 0.149, 0.175, 0.187, 0.150; SFace on seed 101 0.29 -> 0.22)
PHOTO_RELIEF = 0.5
#: style "photo": share of the teeth drawn in an open mouth (the rest is the mouth's shadow), raised towards all of
#: them by the AUs of :data:`PHOTO_TEETH_AU`
PHOTO_TEETH = 0.45
#: style "photo": AUs that bare the teeth (raised upper lip, smile, stretched lips) or darken the open mouth (jaw
#: drop), as weights on the teeth's share above :data:`PHOTO_TEETH` (the sum clamped to [0, 1])
PHOTO_TEETH_AU = {"AU10": 1.0, "AU12": 1.0, "AU20": 0.6, "AU26": -0.6}
#: style "photo": an open mouth shows its inside only where the jaw (AU25, AU26) or the upper lip (AU10) opened it
PHOTO_MOUTH_GATE = True
#: style "photo": opacity of the eye white drawn where the lids open wider than the identity's (AU5)
PHOTO_SCLERA = 1.0
#: style "photo": the AU shading templates are drawn on the mean face moved by the style's AU gains
PHOTO_TEMPLATE_GAIN = True
OCCLUSIONS = ("none", "sunglasses", "scarf", "mask", "hand", "block", "pixels")
_AU = _AU_INDEX
LAYER_CHANNELS = Layer.NAMES

# contiguous landmark groups as slices (views), and named jaw points
_BROWS, _EYES, _NOSTRILS = span("brows"), span("eyes"), span("nostrils")
_JAW, _MOUTH, _LIPS_OUTER = span("jaw"), span("mouth"), span("lips_outer")
_NECK_TOP = int(JAW[4])                              # the neck starts below this jaw point
_CHEEK_LINE = int(JAW[3])                            # a full beard reaches up to about this jaw point's height
_EAR_LOOPS = (int(JAW[1]), int(JAW[-2]))             # where a medical mask's loops go round the ears
_NOSE_MID = (int(NOSE_BRIDGE[1]), int(NOSE_BRIDGE[2]))   # middle of the nose bridge (28, 29)
#: per side (subject's right = image left, left): the image-x direction away from the midline
_SIDES = ((0, -1.0), (1, 1.0))


@dataclass
class Scene:
    """Everything needed to render N faces (on the render device); every field but ``layers`` has a leading batch
    dimension N. Packed fields are read through the named columns of :mod:`facelab.synth.fields`."""

    landmarks: torch.Tensor          # (N, 68, 2) frontal-frame landmarks (identity + expression)
    aus: torch.Tensor                # (N, A, 2) AU intensities (subject right, left)
    skin: torch.Tensor               # (N, 3)
    lip: torch.Tensor                # (N, 3)
    hair: torch.Tensor               # (N, 3)
    eye: torch.Tensor                # (N, 3)
    hair_style: torch.Tensor         # (N,) long, HairStyle
    hair_shape: torch.Tensor         # (N, 4) HairShape
    brow: torch.Tensor               # (N, 2) Brow
    face: torch.Tensor               # (N, 6) Face
    beard: torch.Tensor              # (N, 2) Beard
    glasses: torch.Tensor            # (N, 4) Glasses
    texture: torch.Tensor            # (N, 3, R, R) Texture
    pose: torch.Tensor               # (N, 3) Pose: yaw, pitch, roll in degrees
    similarity: torch.Tensor         # (N, 3) Similarity: scale, shift x, shift y
    light: torch.Tensor              # (N, 7) Light: azimuth, elevation (deg), intensity, ambient, r, g, b
    background: torch.Tensor         # (N, 12) Background: two colours, gradient direction, noise amplitude, clothing
    background_noise: torch.Tensor   # (N, 3, 6, 6)
    clutter: torch.Tensor            # (N, 3, 8) Clutter ellipses: cx, cy, rx, ry, r, g, b, alpha
    gaze: torch.Tensor               # (N, 2)
    occlusion: torch.Tensor          # (N,) index into OCCLUSIONS
    occlusion_param: torch.Tensor    # (N, 8) kind-specific: ScarfParam, MaskParam, HandParam, BlockParam, PixelsParam
    makeup: torch.Tensor             # (N, 16) Makeup: lipstick rgb+a, eyeshadow rgb+a, eyeliner rgb+a, blush rgb+a
    degrade: torch.Tensor            # (N, 4) Degrade: resolution factor, blur sigma (px at 112), noise sigma, jpeg
    skin_gain: torch.Tensor          # (N, 3) multiplicative skin colour change (PPG)
    layers: torch.Tensor             # (U, 6, H, W) identity layers (draw_identity) of the batch's identities
    layer_index: torch.Tensor        # (N,) long: each image's identity layer (row of ``layers``)
    neutral: torch.Tensor            # (N, 68, 2) the identity's neutral frontal landmarks
    seeds: torch.Tensor              # (N,) int64 seeds of per-image pixel noise

    @property
    def n(self) -> int:
        return self.landmarks.shape[0]

    def select(self, idx) -> "Scene":
        """The scene of images ``idx`` (a slice or an index tensor)."""
        return Scene(**{f.name: getattr(self, f.name) if f.name == "layers" else getattr(self, f.name)[idx]
                        for f in fields(self)})


@dataclass
class Rendered:
    images: torch.Tensor     # (N, 3, H, W)
    landmarks: torch.Tensor  # (N, 68, 2) pixels
    masks: torch.Tensor      # (N, 1, H, W) bool
    face: torch.Tensor       # (N, 1, H, W) bool, visible face skin region (before occlusion)
    occluded_fraction: torch.Tensor  # (N,)


# ---------------------------------------------------------------- drawing primitives
def _ramp(sdf, width):
    """Soft inside-indicator of a signed distance (negative inside), anti-aliased over ``width``."""
    return (sdf / -width).add_(0.5).clamp_(0.0, 1.0)


def _lerp_(col, c, a):
    """In-place alpha blend of colour ``c`` (N,3,...) into ``col`` with alpha ``a`` (N,1,...)."""
    return col.lerp_(c, a)


def _exp_neg(t):
    """exp(-t) for t >= 0, with t clipped at 80 (exp(-80) ~ 2e-35 is zero for any picture).

    The clip is for speed: torch's vectorised CPU exp takes a slow path, tens of times slower, for arguments below
    about -88, which the far tails of the Gaussians of this renderer reach on most pixels."""
    return t.clamp_max(80.0).neg_().exp_()


def _gauss(t):
    """exp(-t^2), clipped as in :func:`_exp_neg`."""
    return (t * t).clamp_max_(80.0).neg_().exp_()


def _ipow(x, k: int):
    """x ** k for an integer k >= 1 by repeated squaring (torch's CPU pow is several times slower for integer
    exponents other than 2)."""
    if k == 1:
        return x
    half = _ipow(x * x, k // 2)
    return half * x if k % 2 else half


def _c(v):
    """(N, 3) colour -> (N, 3, 1, 1)."""
    return v[:, :, None, None]


def _s(v):
    """(N,) -> (N, 1, 1, 1)."""
    return v.view(v.shape[0], 1, 1, 1) if v.dim() == 1 else v[:, None, None, None]   # view: the cheaper call


def _pl(u, ku, kv):
    """Piecewise-linear interpolation at u (N,1,h,w) through sorted knots ku, kv (N, K)."""
    du = (ku[:, 1:] - ku[:, :-1]).clamp_min(1e-4)
    s = (kv[:, 1:] - kv[:, :-1]) / du                     # (N, K-1) slopes
    out = _s(kv[:, 0]) + _s(s[:, 0]) * (u - _s(ku[:, 0]))
    for k in range(1, ku.shape[1] - 1):
        out = out + _s(s[:, k] - s[:, k - 1]) * (u - _s(ku[:, k])).clamp_min(0)
    return out


def _frame(X, Y, p0, p1):
    """Coordinates along the segment p0->p1 (u in [0, 1]) and across it (v, in frontal units, + = image down side)."""
    d = p1 - p0
    length = d.norm(dim=1).clamp_min(1e-4)
    ex, ey = d[:, 0] / length, d[:, 1] / length
    dx, dy = X - _s(p0[:, 0]), Y - _s(p0[:, 1])
    u = (dx * _s(ex) + dy * _s(ey)) / _s(length)
    v = -dx * _s(ey) + dy * _s(ex)
    return u, v, length


def _frame_pts(P, p0, p1):
    """Segment coordinates (u, v) of points P (N, K, 2) in the frame p0->p1 (see :func:`_frame`)."""
    d = p1 - p0
    length = d.norm(dim=1).clamp_min(1e-4)
    ex, ey = (d[:, 0] / length)[:, None], (d[:, 1] / length)[:, None]
    dx, dy = P[..., 0] - p0[:, 0:1], P[..., 1] - p0[:, 1:2]
    return (dx * ex + dy * ey) / length[:, None], -dx * ey + dy * ex


def _seg_dist(X, Y, a, b):
    """Distance of each pixel to the segment a-b (a, b: (N, 2))."""
    d = b - a
    dx, dy = _s(d[:, 0]), _s(d[:, 1])
    l2 = _s((d * d).sum(1).clamp_min(1e-8))
    px, py = X - _s(a[:, 0]), Y - _s(a[:, 1])
    t = (px * (dx / l2) + py * (dy / l2)).clamp_(0, 1)             # position of the nearest point along a-b
    qx, qy = torch.addcmul(px, t, dx, value=-1), torch.addcmul(py, t, dy, value=-1)
    return qx.mul_(qx).addcmul_(qy, qy).sqrt_()


def _box(P, mx0, mx1, my0, my1):
    """Frontal box (x0, x1, y0, y1) around the points P (..., 2) of all faces, grown by the given margins."""
    return (float(P[..., 0].min()) - mx0, float(P[..., 0].max()) + mx1, float(P[..., 1].min()) - my0,
            float(P[..., 1].max()) + my1)


def _jaw_centre_width(L):
    """Horizontal centre and half-width of each face's jaw line (N,), (N,)."""
    return (L[:, JAW_RIGHT, 0] + L[:, JAW_LEFT, 0]) * 0.5, (L[:, JAW_LEFT, 0] - L[:, JAW_RIGHT, 0]) * 0.5


class DepthModel:
    """Analytic depth of the head in the frontal frame (towards the camera = +z): ellipsoid + nose + cheeks + ..."""

    def __init__(self, L, face, aus):
        self.jaw_w = (L[:, JAW_LEFT, 0] - L[:, JAW_RIGHT, 0]) * 0.5
        self.cx = (L[:, JAW_RIGHT, 0] + L[:, JAW_LEFT, 0]) * 0.5
        top = L[:, _BROWS, 1].min(1).values - 0.5 * face[:, Face.FOREHEAD]
        self.cy = 0.5 * (top + L[:, CHIN, 1])
        self.ax = self.jaw_w * 1.08
        self.ay = 0.5 * (L[:, CHIN, 1] - top) * 1.05
        self.zc = 0.55 * self.jaw_w / 0.48
        self.nose_a, self.nose_b = L[:, NOSE_ROOT], L[:, NOSE_TIP]
        self.nose_h = 0.11 * face[:, Face.NOSE_DEPTH]
        self.nose_w = (L[:, NOSTRIL_LEFT, 0] - L[:, NOSTRIL_RIGHT, 0]).abs() * 0.38
        ey = L[:, _EYES, 1].mean(1)
        my = L[:, UPPER_LIP_OUTER, 1].mean(1)
        cheek_y = 0.55 * ey + 0.45 * my - 0.035 * aus[:, _AU["AU06"]].mean(1) - 0.02 * aus[:, _AU["AU12"]].mean(1)
        right, left = EYES
        self.cheek = torch.stack([L[:, right.group, 0].mean(1) - 0.02, L[:, left.group, 0].mean(1) + 0.02], 1)  # (N,2)
        self.cheek_y = cheek_y
        raise_ = aus[:, _AU["AU06"]] * 0.6 + aus[:, _AU["AU12"]] * 0.4   # (N, 2)
        self.cheek_h = (0.02 + 0.03 * face[:, Face.CHEEKS])[:, None] + 0.035 * raise_
        self.eye = torch.stack([L[:, right.group].mean(1), L[:, left.group].mean(1)], 1)   # (N, 2, 2)
        self.eye_r = (L[:, right.last, 0] - L[:, right.first, 0]).abs() * 0.75
        self.brow_y = L[:, _BROWS, 1].mean(1)
        self.mouth = L[:, _LIPS_OUTER].mean(1)
        self.mouth_w = (L[:, MOUTH_LEFT, 0] - L[:, MOUTH_RIGHT, 0]).abs() * 0.5
        chin = L[:, CHIN]
        self.chin = chin + torch.stack([torch.zeros_like(chin[:, 0]), -0.06 * torch.ones_like(chin[:, 0])], 1)

    def __call__(self, X, Y):
        g = lambda v: v[:, None, None, None] if v.dim() == 1 else v  # noqa: E731
        e = ((X - g(self.cx)) / g(self.ax)) ** 2 + ((Y - g(self.cy)) / g(self.ay)) ** 2
        z = g(self.zc) * (1 - e).clamp_min_(0).sqrt_()
        # nose: a ridge along the bridge rising to the tip, and the tip bulb
        u, v, _ = _frame(X, Y, self.nose_a, self.nose_b)
        uc = u.clamp(0, 1.15)
        ridge = _gauss(v / (g(self.nose_w) * (0.55 + 0.6 * uc))) * ((u > -0.1) & (u < 1.2))
        z += g(self.nose_h) * (0.3 + 0.7 * uc) * ridge * (1 - ((u - 1.05) / 0.18).clamp_(0, 1))
        # cheeks, brow ridge, eye sockets, lips, chin
        for s in range(2):
            d2 = (X - g(self.cheek[:, s])) ** 2 + (Y - g(self.cheek_y)) ** 2
            z += g(self.cheek_h[:, s]) * _exp_neg(d2 / 0.012)
            d2 = (X - g(self.eye[:, s, 0])) ** 2 + (Y - g(self.eye[:, s, 1])) ** 2
            z -= 0.045 * _exp_neg(d2 / (g(self.eye_r) ** 2))
        z += 0.025 * _gauss((Y - g(self.brow_y) + 0.02) / 0.04) * _gauss(X / 0.35)
        dm = ((X - g(self.mouth[:, 0])) / g(self.mouth_w)) ** 2 + ((Y - g(self.mouth[:, 1])) / 0.07) ** 2
        z += 0.03 * _exp_neg(dm)
        dc = ((X - g(self.chin[:, 0])) / 0.12) ** 2 + ((Y - g(self.chin[:, 1])) / 0.08) ** 2
        z += 0.025 * _exp_neg(dc)
        return z


def _polar_face(L, face):
    """Closed face contour (jaw + forehead arc) as a polar radius table around a centre: (centre (N,2), table (N,K))."""
    N = L.shape[0]
    jaw = L[:, _JAW]
    top = L[:, _BROWS, 1].min(1).values - 0.5 * face[:, Face.FOREHEAD]        # forehead top
    y0 = 0.5 * (jaw[:, 0, 1] + jaw[:, -1, 1])
    x_l, x_r = jaw[:, 0, 0], jaw[:, -1, 0]
    phi = torch.linspace(0.12, math.pi - 0.12, 11, device=L.device)
    cxa, rx = 0.5 * (x_l + x_r), 0.5 * (x_r - x_l) * 1.02
    arc_x = cxa[:, None] + rx[:, None] * torch.cos(phi)[None]
    arc_y = y0[:, None] - (y0 - top)[:, None] * torch.sin(phi)[None]
    cont = torch.cat([jaw, torch.stack([arc_x, arc_y], -1)], 1)     # (N, 28, 2)
    centre = torch.stack([cxa, 0.5 * (top + L[:, CHIN, 1])], 1)
    d = cont - centre[:, None]
    ang = torch.atan2(d[..., 1], d[..., 0])
    rad = d.norm(dim=-1)
    ang, order = ang.sort(dim=1)
    rad = rad.gather(1, order)
    ang = torch.cat([ang[:, -1:] - 2 * math.pi, ang, ang[:, :1] + 2 * math.pi], 1)
    rad = torch.cat([rad[:, -1:], rad, rad[:, :1]], 1)
    K = 128
    grid = torch.linspace(-math.pi, math.pi, K + 1, device=L.device)[None].expand(N, -1).contiguous()
    i = torch.searchsorted(ang.contiguous(), grid).clamp(1, ang.shape[1] - 1)
    a0, a1 = ang.gather(1, i - 1), ang.gather(1, i)
    r0, r1 = rad.gather(1, i - 1), rad.gather(1, i)
    t = ((grid - a0) / (a1 - a0).clamp_min(1e-6)).clamp(0, 1)
    return centre, r0 + (r1 - r0) * t, top


def _polar_lookup(X, Y, centre, table):
    """Signed distance-like value (distance - contour radius) of each pixel against a polar contour table."""
    N, K1 = table.shape
    K = K1 - 1
    dx, dy = X - _s(centre[:, 0]), Y - _s(centre[:, 1])
    r = (dx * dx + dy * dy).sqrt_()
    a = torch.atan2(dy, dx).add_(math.pi).mul_(K / (2 * math.pi))    # angle in table steps
    i0 = a.long().clamp_(0, K - 1)
    flat = i0.view(N, -1)
    # linear interpolation between table entries i0 and i0 + 1
    radius = table.gather(1, flat).view_as(r)
    slope = (table[:, 1:] - table[:, :-1]).gather(1, flat).view_as(r)
    return r.sub_(radius).sub_(slope.mul_(a.sub_(i0)))


def _eye_curves(u, upper, lower):
    """Upper/lower lid offsets at u for one eye: cubic 4u(1-u)(a + b u) through the two lid points on each side."""
    def fit(pts):
        (u1, v1), (u2, v2) = pts
        f1, f2 = 4 * u1 * (1 - u1), 4 * u2 * (1 - u2)
        # v = f (a + b u): two equations
        det = (f1 * f2 * u2 - f2 * f1 * u1)
        det = torch.where(det.abs() < 1e-6, torch.full_like(det, 1e-6), det)
        a = (v1 * f2 * u2 - v2 * f1 * u1) / det
        b = (f1 * v2 - f2 * v1) / det
        return a, b
    au, bu = fit(upper)
    al, bl = fit(lower)
    f = 4 * u * (1 - u)
    return f * (_s(au) + _s(bu) * u), f * (_s(al) + _s(bl) * u)


def _rows(y0, y1, H):
    """Pixel-row slice covering frontal-frame rows y in [y0, y1]."""
    r0 = int(max(0, math.floor((y0 + 1) * H / 2 - 1)))
    r1 = int(min(H, math.ceil((y1 + 1) * H / 2 + 1)))
    return slice(r0, max(r1, r0 + 1))


_FINE = {}


def _fine_noise(H, device):
    """A fixed high-frequency noise pattern (1, 1, H, H) in [-1, 1] for hair, stubble and brows."""
    key = (H, str(device))
    if key not in _FINE:
        g = torch.Generator().manual_seed(1234)
        n = torch.rand(1, 1, H, H, generator=g) * 2 - 1
        n = 0.6 * n + 0.4 * F.interpolate(torch.rand(1, 1, H // 2, H // 2, generator=g) * 2 - 1, size=(H, H),
                                          mode="bilinear", align_corners=False)
        _FINE[key] = n.to(device)
    return _FINE[key]


def _noise(seeds, shape, device, offset=0, uniform=False):
    """Per-image reproducible noise, standard normal (or uniform in [0, 1)): image i uses its own generator seeded by
    seeds[i] + offset, so its noise does not depend on the rest of the batch."""
    out = torch.empty((len(seeds),) + tuple(shape), device=device)
    gen = torch.Generator(device=device)
    for i, s in enumerate(seeds.tolist()):
        gen.manual_seed(int(s) + offset)
        if uniform:
            out[i].uniform_(generator=gen)
        else:
            out[i].normal_(generator=gen)
    return out


def _window(X, Y, x0, x1, y0, y1, H):
    """Static pixel window (row slice, column slice) covering frontal [x0, x1] x [y0, y1], and its coordinates."""
    rs = _rows(y0, y1, H)
    cs = _rows(x0, x1, H)
    return rs, cs, X[..., cs], Y[:, :, rs]


_RESIZE: dict = {}


def _resize_matrix(n: int, size: int, mode: str, device) -> torch.Tensor:
    """(n, size) matrix of the 1-D resize of ``n`` samples to ``size`` by ``F.interpolate`` (``mode`` "bilinear" or
    "bicubic", align_corners=False), cached."""
    key = (n, size, mode, str(device))
    if key not in _RESIZE:
        eye = torch.eye(n).view(n, 1, 1, n)
        _RESIZE[key] = F.interpolate(eye, size=(1, size), mode=mode, align_corners=False).view(n, size).to(device)
    return _RESIZE[key]


def _resize(x, H: int, mode: str = "bilinear"):
    """``F.interpolate(x, size=(H, H), mode=mode, align_corners=False)`` for (N, C, h, w) ``x``. Up-sampling by 2
    or more is computed as two matrix products with the separable 1-D interpolation matrices (several times faster
    than ``F.interpolate`` on the CPU)."""
    h, w = x.shape[-2:]
    if 2 * max(h, w) > H:
        return F.interpolate(x, size=(H, H), mode=mode, align_corners=False)
    return _resize_matrix(h, H, mode, x.device).T @ x @ _resize_matrix(w, H, mode, x.device)


def _resize_grid(x, H: int):
    """Bilinear resize (as :func:`_resize`) of (N, h, w, C) channels-last maps, such as sampling grids, to
    (N, H, H, C): the column pass acts on the interleaved channels with kron(matrix, I_C)."""
    N, h, w, C = x.shape
    key = ("kron", w, H, C, str(x.device))
    cols = _RESIZE.get(key)
    if cols is None:
        cols = _RESIZE[key] = torch.kron(_resize_matrix(w, H, "bilinear", x.device), torch.eye(C, device=x.device))
    return (_resize_matrix(h, H, "bilinear", x.device).T @ (x.reshape(N, h, w * C) @ cols)).view(N, H, H, C)


def _grid(H, device):
    xs = (torch.arange(H, device=device, dtype=torch.float32) + 0.5) * (2.0 / H) - 1
    return xs.view(1, 1, 1, H), xs.view(1, 1, H, 1)


# ---------------------------------------------------------------- 1. identity layer
@dataclass
class _Head:
    """Head geometry of n identities in the frontal frame (each (n,)): jaw centre and half-width, forehead top, the
    face contour's polar table, the skull ellipse (under the hair), the eye line, and hair style flags."""

    cx: torch.Tensor
    jaw_w: torch.Tensor
    top: torch.Tensor
    centre: torch.Tensor
    table: torch.Tensor
    skull_rx: torch.Tensor
    skull_ry: torch.Tensor
    skull_cy: torch.Tensor
    eye_y: torch.Tensor
    bald: torch.Tensor          # bool
    long_hair: torch.Tensor     # float 0/1: long hair or a bob, drawn behind the head too


def _head_geometry(I) -> _Head:
    L, hs, style = I.landmarks, I.hair_shape, I.hair_style
    centre, table, top = _polar_face(L, I.face)
    jaw_w = (L[:, JAW_LEFT, 0] - L[:, JAW_RIGHT, 0]) * 0.5
    cx = (L[:, JAW_RIGHT, 0] + L[:, JAW_LEFT, 0]) * 0.5
    bald = style == HairStyle.BALD
    vol = torch.where(bald, torch.zeros_like(hs[:, HairShape.VOLUME]), 0.03 + 0.07 * hs[:, HairShape.VOLUME])
    rx = jaw_w * 1.03 + vol
    ry = (L[:, CHIN, 1] - top) * 0.55 + vol
    return _Head(cx=cx, jaw_w=jaw_w, top=top, centre=centre, table=table, skull_rx=rx, skull_ry=ry,
                 skull_cy=top + ry - vol * 1.6, eye_y=L[:, _EYES, 1].mean(1), bald=bald,
                 long_hair=((style == HairStyle.LONG) | (style == HairStyle.BOB)).float())


@dataclass
class _Canvas:
    """The part of the identity layers that the heads reach (all rows, the head columns): pixel coordinates ``X``
    (head columns) and ``Y``, the fixed fine noise, and views of the layer channels."""

    X: torch.Tensor
    X_full: torch.Tensor
    Y: torch.Tensor
    fine: torch.Tensor
    head: slice
    col: torch.Tensor
    alpha: torch.Tensor
    face_a: torch.Tensor
    skin_m: torch.Tensor
    H: int
    pix: float

    def window(self, x0, x1, y0, y1):
        """Row slice and column slice (of the head columns) of a frontal box, and their coordinates."""
        H, head = self.H, self.head
        rs, cs = _rows(y0, y1, H), _rows(x0, x1, H)
        cs = slice(max(cs.start, head.start) - head.start, max(min(cs.stop, head.stop) - head.start, 1))
        return rs, cs, self.X[..., cs], self.Y[:, :, rs]


def _canvas(out, L, hd: _Head, H) -> _Canvas:
    """Everything is drawn in the columns of the heads (skull and long hair, ears): the rest stays transparent."""
    pix = 2.0 / H
    Xf, Y = _grid(H, L.device)
    reach = hd.skull_rx * 1.08
    head = _rows(float(torch.minimum(hd.cx - reach, L[:, JAW_RIGHT, 0] - 0.09).min()) - pix,
                 float(torch.maximum(hd.cx + reach, L[:, JAW_LEFT, 0] + 0.09).max()) + pix, H)
    canvas = out[..., head]
    return _Canvas(X=Xf[..., head], X_full=Xf, Y=Y, fine=_fine_noise(H, L.device)[..., head], head=head,
                   col=canvas[:, Layer.RGB], alpha=canvas[:, Layer.ALPHA], face_a=canvas[:, Layer.FACE],
                   skin_m=canvas[:, Layer.SKIN], H=H, pix=pix)


def draw_identity(I, H: int, out: torch.Tensor | None = None, style: str = "cartoon") -> torch.Tensor:
    """Neutral frontal layers of identities ``I`` (an :class:`~facelab.synth.identity.Identity` on the device).

    Returns (n, 6, H, W), drawn into ``out`` when given: colour, alpha, face region and skin mask (see
    :class:`~facelab.synth.fields.Layer`). Eyes, lips, makeup and accessories are drawn per image on top of these.
    ``style="photo"`` multiplies the skin by the identity's real-photo detail map (:func:`_draw_photo_skin`),
    which brings its own brows, eyes, nostrils and lips, instead of drawing brows and nostrils.
    """
    photo = style == "photo"
    L = I.landmarks
    out = torch.zeros(L.shape[0], len(Layer.NAMES), H, H, device=L.device) if out is None else out.zero_()
    # 1a. head geometry, and the canvas of the head columns
    hd = _head_geometry(I)
    cv = _canvas(out, L, hd, H)
    # 1b. the skull (under the hair) and long hair behind the head
    face_sdf = _polar_lookup(cv.X, cv.Y, hd.centre, hd.table)
    e_sk = (((cv.X - _s(hd.cx)) / _s(hd.skull_rx)) ** 2 + ((cv.Y - _s(hd.skull_cy)) / _s(hd.skull_ry)) ** 2).sqrt() - 1
    skull = _ramp(e_sk * _s(hd.skull_ry.clamp_min(0.1)), cv.pix) * (cv.Y < _s(L[:, JAW_RIGHT, 1])).float()
    strands = 1 + 0.10 * torch.sin((cv.X - _s(hd.cx)) * 95 + 4 * torch.sin(cv.Y * 7)) \
        * torch.sin(cv.Y * 13 + cv.X * 9) + 0.08 * cv.fine
    if bool(hd.long_hair.any()):
        _draw_back_hair(cv, I, hd, skull, strands)
    # 1c. neck and ears, 1d. skin with the identity's texture, 1e. hair
    skin_parts = _draw_neck_and_ears(cv, I, hd)
    head_skin = _draw_skin(cv, I, face_sdf, skull, skin_parts)
    if photo:
        _draw_photo_skin(cv, I, head_skin)
    hair_a = _draw_hair(cv, I, hd, face_sdf, skull, head_skin, strands, skin_parts)
    # 1f. brows, nostrils, age lines (the AU-driven wrinkles are added per image from templates), beard
    if not photo:
        _draw_brows(cv, I)
        _draw_nostrils(cv, L, hd.cx)
    zero_au = torch.zeros(L.shape[0], len(_AU), 2, device=L.device)
    dark = _wrinkles(L, zero_au, I.face[:, Face.AGE], cv.X_full, cv.Y, H)[..., cv.head]
    cv.col.mul_(1 - dark * cv.face_a)
    if bool((I.beard[:, Beard.STYLE] > 0).any()):
        _draw_beard(cv, I, hd, hair_a)
    return out


def _draw_back_hair(cv: _Canvas, I, hd: _Head, skull, strands):
    """Long hair (and bobs) hanging behind the head, below the skull's centre line."""
    X, Y, pix, length = cv.X, cv.Y, cv.pix, I.hair_shape[:, HairShape.LENGTH]
    hair_len = torch.where(I.hair_style == HairStyle.LONG, 0.75 + 0.35 * length, 0.35 + 0.1 * length)
    back = _ramp(((X - _s(hd.cx)).abs() - _s(hd.skull_rx * 1.08)), pix) \
        * _ramp(Y - _s(I.landmarks[:, CHIN, 1] + hair_len - 0.3), 4 * pix)
    back = torch.where(Y > _s(hd.skull_cy), back, skull) * _s(hd.long_hair)
    _lerp_(cv.col, _c(I.hair) * 0.75 * strands, back)
    torch.maximum(cv.alpha, back, out=cv.alpha)


def _draw_neck_and_ears(cv: _Canvas, I, hd: _Head):
    """Neck (below a jaw point) and ears, each in its window; returns their (rows, columns, alpha) for the skin mask."""
    L, pix, skin = I.landmarks, cv.pix, I.skin
    skin_parts = []
    neck_w = hd.jaw_w * 0.62 * I.face[:, Face.NECK]
    rs, cs, Xw, Yw = cv.window(-1.0, 1.0, float(L[:, _NECK_TOP, 1].min()) - pix, 1.0)
    neck = _ramp((Xw - _s(hd.cx)).abs() - _s(neck_w), pix) * (Yw > _s(L[:, _NECK_TOP, 1]))
    shade_neck = 0.62 + 0.18 * ((Yw - _s(L[:, CHIN, 1])) / 0.3).clamp(0, 1)
    _lerp_(cv.col[:, :, rs, cs], _c(skin) * shade_neck, neck)
    skin_parts.append((rs, cs, neck))
    ny = L[:, SUBNASALE, 1]
    ear_h = (ny - hd.eye_y) * 0.7 * I.face[:, Face.EARS]
    ear_y = 0.5 * (hd.eye_y + ny)
    for j, sign in ((JAW_RIGHT, -1.0), (JAW_LEFT, 1.0)):
        ex = L[:, j, 0] + sign * 0.035
        reach = 1 + pix / 0.055                                      # the anti-aliased edge's extent
        rs, cs, Xw, Yw = cv.window(float(ex.min()) - 0.055 * reach, float(ex.max()) + 0.055 * reach,
                                   float((ear_y - ear_h * reach).min()), float((ear_y + ear_h * reach).max()))
        e = (((Xw - _s(ex)) / 0.055) ** 2 + ((Yw - _s(ear_y)) / _s(ear_h)) ** 2).sqrt_() - 1
        ear = _ramp(e * 0.055, pix)
        _lerp_(cv.col[:, :, rs, cs], _c(skin) * 0.88, ear)
        skin_parts.append((rs, cs, ear))
    for rs, cs, a in skin_parts:
        torch.maximum(cv.alpha[:, :, rs, cs], a, out=cv.alpha[:, :, rs, cs])
    return skin_parts


def _draw_skin(cv: _Canvas, I, face_sdf, skull, skin_parts):
    """Face region and skin of face and skull, with the identity's texture (blotches, freckles, moles)."""
    cv.face_a.copy_(_ramp(face_sdf, cv.pix))
    head_skin = torch.maximum(skull, cv.face_a)
    _lerp_(cv.col, _c(I.skin), head_skin)
    torch.maximum(cv.alpha, head_skin, out=cv.alpha)
    t = I.texture
    blotch, freckles, moles = (t[:, k:k + 1] for k in (Texture.BLOTCHES, Texture.FRECKLES, Texture.MOLES))
    tex = _resize(torch.cat([0.035 * blotch - 0.22 * freckles, moles], 1), cv.H)[..., cv.head]
    # tone change and moles: (1 + blotches and freckles - 0.55 clamp(3 moles, 0, 1)) clamped, applied on the skin
    tone = (tex[:, 0:1] + 1).sub_((tex[:, 1:2] * 3).clamp_(0, 1).mul_(0.55)).clamp_(0.3, 1.2)
    cv.col.mul_(tone.sub_(1).mul_(head_skin).add_(1))
    return head_skin


def _draw_photo_skin(cv: _Canvas, I, head_skin):
    """Style "photo": the skin times the identity's detail map from the real-photo appearance model, carried from
    the mean shape to the identity's landmarks by a smooth landmark warp, plus skin noise at three scales (pores,
    fine and coarse mottling, fixed per identity)."""
    from facelab.synth.appearance import sample_textures
    from facelab.synth.landmarks import mean_shape

    L, H = I.landmarks, cv.H
    n = L.shape[0]
    detail = sample_textures(I.appearance, L.device)                           # (n, 3, R, R) over the frame
    grid = _expression_grid(mean_shape().to(L.device)[None].expand(n, -1, -1), L, H)
    d = F.grid_sample(detail, grid[:, :, cv.head], align_corners=False, padding_mode="border")
    # multi-scale skin noise from the identity's texture channels (blotches at two scales) and the fine pattern
    blot = I.texture[:, Texture.BLOTCHES:Texture.BLOTCHES + 1]
    coarse = _resize(blot, H, "bicubic")[..., cv.head]
    fine_scale = _resize(blot[..., ::4, ::4].flip(-1), H)[..., cv.head]
    # 1 + 0.03 coarse + 0.02 fine_scale + 0.035 fine, then the skin times 1 + (d noise - 1) face_a (in place)
    noise = (0.03 * coarse).add_(1).add_(fine_scale.mul_(0.02)).add_(0.035 * cv.fine)
    fa = cv.face_a
    cv.col.mul_(d.mul_(noise).sub_(1).mul_(fa).add_(1))
    # outside the face region (forehead under the hair line, ears, neck) the pores only
    cv.col.mul_((head_skin - fa).clamp_min_(0).mul_(0.035 * cv.fine).add_(1))


def _draw_hair(cv: _Canvas, I, hd: _Head, face_sdf, skull, head_skin, strands, skin_parts):
    """Hair on the skull above a hairline (by style), plus the sides down to the ears; sets the skin mask."""
    L, X, Y, pix = I.landmarks, cv.X, cv.Y, cv.pix
    style, hs = I.hair_style, I.hair_shape
    brow_top = L[:, _BROWS, 1].min(1).values
    line = torch.where(style == HairStyle.FRINGE, brow_top - 0.02 - 0.05 * hs[:, HairShape.FRINGE],
                       hd.top + 0.05 + 0.06 * hs[:, HairShape.HAIRLINE])
    line = torch.where(style == HairStyle.RECEDING, hd.top + 0.02, line)
    recede = torch.where(style == HairStyle.RECEDING, 0.08 + 0.06 * hs[:, HairShape.HAIRLINE],
                         0.02 * hs[:, HairShape.HAIRLINE])
    xr = (X - _s(hd.cx)) / _s(hd.jaw_w)
    hairline = _s(line) - _s(recede) * (1 - xr * xr).clamp(0, 1) + 0.54 * (xr.abs() - 0.62).clamp_min(0)
    side_limit = torch.where(hd.long_hair > 0, hd.eye_y + 0.12, hd.eye_y - 0.04)
    cap = _ramp(Y - hairline, 1.5 * pix) * skull
    sides = skull * (face_sdf > -0.01).float() * (Y < _s(side_limit)).float()
    hair_a = torch.maximum(cap, sides) * _s((~hd.bald).float())
    _lerp_(cv.col, _c(I.hair) * strands, hair_a)
    torch.maximum(cv.alpha, hair_a, out=cv.alpha)
    torch.mul(head_skin, 1 - hair_a, out=cv.skin_m)
    for rs, cs, a in skin_parts:
        torch.maximum(cv.skin_m[:, :, rs, cs], a * (1 - hair_a[:, :, rs, cs]), out=cv.skin_m[:, :, rs, cs])
    return hair_a


def _draw_brows(cv: _Canvas, I):
    """Both brows, thicker towards the midline, in the brow band's window."""
    L, pix = I.landmarks, cv.pix
    rs, cs, Xw, Yw = cv.window(*_box(L[:, _BROWS], 0.03, 0.03, 0.05, 0.04))
    cb = cv.col[:, :, rs, cs]
    brow_c = _c(I.hair * (1 - 0.45 * I.brow[:, Brow.DARKNESS, None]).clamp(0, 1)) * 0.8
    thick0 = 0.022 * I.brow[:, Brow.THICKNESS]
    hairy = 0.8 + 0.2 * cv.fine[:, :, rs, cs]
    for s, ids in enumerate(BROWS):
        bx, by = L[:, ids, 0], L[:, ids, 1]
        u = (Xw - _s(bx[:, 0])) / _s(bx[:, -1] - bx[:, 0])
        yc = _pl(Xw, bx, by)
        t = u if s == 0 else 1 - u
        thick = _s(thick0) * (0.55 + 0.45 * t.clamp(0, 1)) + 0.004
        a = _ramp((u - 0.5).abs() - 0.5, pix / _s(bx[:, -1] - bx[:, 0])) * _ramp((Yw - yc + 0.003).abs() - thick, pix)
        _lerp_(cb, brow_c, a * hairy * 0.95)


def _draw_nostrils(cv: _Canvas, L, cx):
    """Nostrils and alar creases, in the nose's window."""
    pix = cv.pix
    rs, cs, Xw, Yw = cv.window(*_box(L[:, _NOSTRILS], 0.05, 0.05, 0.06, 0.03))
    cn = cv.col[:, :, rs, cs]
    for k0, k1 in ALAR:
        nc = 0.55 * L[:, k0] + 0.45 * L[:, k1]
        d = (((Xw - _s(nc[:, 0])) / 0.017) ** 2 + ((Yw - _s(nc[:, 1] - 0.004)) / 0.009) ** 2).sqrt() - 1
        cn.mul_(1 - 0.65 * _ramp(d * 0.01, pix))
        acx = L[:, k0, 0] + (L[:, k0, 0] - cx).sign() * 0.012
        d = (((Xw - _s(acx)) / 0.018) ** 2 + ((Yw - _s(L[:, k0, 1] - 0.018)) / 0.03) ** 2).sqrt()
        cn.mul_(1 - 0.18 * _gauss((d - 1) / 0.25))


def _draw_beard(cv: _Canvas, I, hd: _Head, hair_a):
    """Stubble, full beard, goatee or moustache on the lower face (not under the hair)."""
    L, pix, cx = I.landmarks, cv.pix, hd.cx
    bstyle, dens = I.beard[:, Beard.STYLE], I.beard[:, Beard.DENSITY]
    x0, x1 = float(L[:, _JAW, 0].min()) - 0.02, float(L[:, _JAW, 0].max()) + 0.02
    y0, y1 = float(L[:, NOSE_TIP, 1].min()) - 0.02, float(L[:, CHIN, 1].max()) + 0.03
    rs, cs, Xw, Yw = cv.window(x0, x1, y0, y1)
    cl = cv.col[:, :, rs, cs]
    fr = cv.face_a[:, :, rs, cs] * (1 - hair_a[:, :, rs, cs])
    mouth_y = 0.5 * (L[:, UPPER_LIP_TOP, 1] + L[:, LOWER_LIP_BOTTOM, 1])
    mw = (L[:, MOUTH_LEFT, 0] - L[:, MOUTH_RIGHT, 0]).abs() * 0.5
    nose_b = L[:, SUBNASALE, 1]
    stub = 0.55 + 0.45 * cv.fine[:, :, rs, cs]
    below_nose = _ramp(_s(nose_b + 0.02) - Yw, pix)
    cheek_line = _ramp(_s(0.5 * (nose_b + L[:, _CHEEK_LINE, 1])) - 0.05 * ((Xw - _s(cx)).abs() / _s(hd.jaw_w)) - Yw,
                       2 * pix)
    full = fr * cheek_line * below_nose
    dxm = (Xw - _s(cx)).abs()
    goatee = fr * _ramp(dxm - _s(mw * 0.9), 2 * pix) * _ramp(_s(mouth_y - 0.02) - Yw, 2 * pix)
    moust = fr * _ramp(dxm - _s(mw * 1.05), 2 * pix) * below_nose * _ramp(Yw - _s(L[:, UPPER_LIP_TOP, 1] - 0.004), pix)
    bs = _s(bstyle)
    region = torch.where(bs == Beard.GOATEE, torch.maximum(goatee, moust),
                         torch.where(bs == Beard.MOUSTACHE, moust, full))
    strength = torch.where(bstyle == Beard.STUBBLE, 0.45 * dens, 0.9 * dens) * (bstyle > 0).float()
    ba = region * _s(strength) * stub.clamp(0, 1)
    _lerp_(cl, _c(I.hair) * 0.85, ba)
    cv.skin_m[:, :, rs, cs] *= 1 - ba


# ---------------------------------------------------------------- wrinkles and folds (age lines and AU shading)
class _Shading:
    """Accumulates darkening terms ``out`` (N, 1, H, W): each term is evaluated only in a window around its
    landmarks that holds all of it above about 1e-8 (Gaussians are cut at 4.3 sigma), and skipped when its weight is
    zero for every face."""

    def __init__(self, L, X, Y, H):
        self.L, self.X, self.Y, self.H = L, X, Y, H
        self.out = torch.zeros(L.shape[0], 1, Y.shape[2], X.shape[3], device=L.device)

    def add(self, k, term, around, mx, my=None):
        """out += k * term(X, Y) for per-face weights k (N,), in the window of the frontal points ``around`` (N, P, 2)
        of all faces grown by mx (horizontally) and my (vertically, default mx)."""
        if not bool((k != 0).any()):
            return
        lo, hi = around.reshape(-1, 2).amin(0), around.reshape(-1, 2).amax(0)
        my = mx if my is None else my
        rs, cs, Xw, Yw = _window(self.X, self.Y, float(lo[0]) - mx, float(hi[0]) + mx, float(lo[1]) - my,
                                 float(hi[1]) + my, self.H)
        self.out[:, :, rs, cs].addcmul_(term(Xw, Yw), _s(k))

    def at(self, x, y):
        """(N, 1, 2) frontal points from per-face coordinates (N,) (or numbers)."""
        x, y = torch.as_tensor(x, device=self.L.device), torch.as_tensor(y, device=self.L.device)
        return torch.stack(torch.broadcast_tensors(x, y), -1).view(-1, 1, 2)


def _wrinkles(L, aus, age, X, Y, H):
    """Darkening (N, 1, H, W) of wrinkles and folds: age lines plus AU-driven ones (linear in each AU).

    ``X``, ``Y`` are the pixel-centre coordinates of :func:`_grid`. A term whose weight is zero for every face is
    skipped (the identity layer only has the age lines); see :class:`_Shading`.
    """
    sh = _Shading(L, X, Y, H)
    cx = (L[:, JAW_RIGHT, 0] + L[:, JAW_LEFT, 0]) * 0.5
    a = lambda name, s=None: (aus[:, _AU[name]].mean(1) if s is None else aus[:, _AU[name], s])  # noqa: E731
    _brow_wrinkles(sh, L, a, age, cx)
    for s, sign in _SIDES:
        _side_wrinkles(sh, L, a, age, s, sign)
    _chin_wrinkles(sh, L, a, cx)
    return sh.out


def _brow_wrinkles(sh: _Shading, L, a, age, cx):
    """Forehead lines (AU1 medial, AU2 lateral, age everywhere), the glabella (AU4) and the nose root (AU9)."""
    brow_y = L[:, _BROWS, 1].min(1).values
    forehead = sh.at(cx, brow_y - 0.1075), 2.0, 0.0925      # between 0.2 and 0.015 above the brows

    def lines(X, Y):
        fy = Y - _s(brow_y)
        return _ipow(torch.sin(fy * 95), 6) * ((-fy - 0.015) / 0.02).clamp(0, 1) * ((fy + 0.2) / 0.05).clamp(0, 1)

    lat = lambda X: ((X - _s(cx)).abs() / 0.25).clamp(0, 1)  # noqa: E731
    sh.add(0.2 * a("AU01") + 0.03 * age, lambda X, Y: (1 - lat(X)) * lines(X, Y), *forehead)
    sh.add(0.2 * a("AU02"), lambda X, Y: lat(X) * (1 - (((X - _s(cx)).abs() - 0.3) * 5).clamp(0, 1)) * lines(X, Y),
           *forehead)
    sh.add(0.35 * a("AU04"), lambda X, Y: (_gauss((X - _s(cx) - 0.03) / 0.006) + _gauss((X - _s(cx) + 0.03) / 0.006))
           * _gauss(((Y - _s(brow_y)) / 0.05 - 0.6) / math.sqrt(0.5)), sh.at(cx, brow_y + 0.03), 0.06, 0.155)
    root_y = 0.5 * (L[:, NOSE_ROOT, 1] + L[:, _NOSE_MID[0], 1])
    sh.add(0.4 * a("AU09"), lambda X, Y: _ipow(torch.sin((Y - _s(root_y)) * 160), 8) * _gauss((X - _s(cx)) / 0.04)
           * _gauss((Y - _s(root_y)) / 0.03), sh.at(cx, root_y), 0.175, 0.13)


def _side_wrinkles(sh: _Shading, L, a, age, s, sign):
    """One side's crow's feet, lower-lid bulge and cheek shadow, nasolabial fold, dimple, marionette and stretch
    lines. ``s`` is the side (0 subject's right, 1 left), ``sign`` the image-x direction away from the midline."""
    eye = EYES[s]
    o = L[:, eye.outer]
    mouth = L[:, (MOUTH_RIGHT, MOUTH_LEFT)[s]]
    dev = L.device

    def crow(X, Y):                        # crow's feet: rays out of the outer eye corner
        dxo, dyo = X - _s(o[:, 0]), Y - _s(o[:, 1])
        ro = (dxo * dxo + dyo * dyo).sqrt_()
        return _ipow(torch.sin(torch.atan2(dyo, dxo.abs()) * 14), 8) * _gauss((ro - 0.045) / 0.022) * (dxo * sign > 0)
    sh.add(0.25 * a("AU06", s) + 0.06 * age, crow, o[:, None], 0.125)
    # lower-lid bulge (AU6, AU7) and the shadow under a raised cheek (AU6, AU12)
    lx, ly = L[:, eye.lower[::-1], 0].mean(1), L[:, eye.lower[::-1], 1].mean(1)
    sh.add(0.25 * (a("AU06", s) + a("AU07", s)) + 0.03,
           lambda X, Y: _gauss((X - _s(lx)) / 0.05) * _gauss((Y - _s(ly + 0.014)) / 0.005), sh.at(lx, ly + 0.014),
           0.215, 0.022)
    sh.add(0.12 * a("AU06", s) + 0.08 * a("AU12", s),
           lambda X, Y: _gauss((X - _s(lx + sign * 0.02)) / 0.07) * _gauss((Y - _s(ly + 0.09)) / 0.035),
           sh.at(lx + sign * 0.02, ly + 0.09), 0.3, 0.15)
    sh.add(-0.08 * a("AU06", s),
           lambda X, Y: _gauss((X - _s(lx + sign * 0.02)) / 0.06) * _gauss((Y - _s(ly + 0.045)) / 0.025),
           sh.at(lx + sign * 0.02, ly + 0.045), 0.26, 0.11)
    # nasolabial fold (AU10, AU12, AU9, age), from the nostril wing to beside the mouth corner
    pa = L[:, (NOSTRIL_RIGHT, NOSTRIL_LEFT)[s]] + torch.tensor([sign * 0.02, -0.01], device=dev)
    pb = mouth + torch.tensor([sign * 0.03, 0.04], device=dev)
    sh.add(0.04 + 0.3 * a("AU12", s) + 0.25 * a("AU10", s) + 0.12 * a("AU09", s) + 0.1 * age,
           lambda X, Y: _gauss(_seg_dist(X, Y, pa, pb) / 0.007), torch.stack([pa, pb], 1), 0.03)
    # dimples (AU14), marionette lines (AU15), stretch lines (AU20)
    dp = torch.stack([mouth[:, 0] + sign * 0.03, mouth[:, 1]], 1)
    sh.add(0.35 * a("AU14", s), lambda X, Y: _exp_neg(((X - _s(dp[:, 0])) ** 2 + (Y - _s(dp[:, 1])) ** 2) / 0.00012),
           dp[:, None], 0.045)
    pm = mouth + torch.tensor([sign * 0.01, 0.01], device=dev)
    pn = mouth + torch.tensor([sign * 0.02, 0.08], device=dev)
    sh.add(0.25 * a("AU15", s), lambda X, Y: _gauss(_seg_dist(X, Y, pm, pn) / 0.006), torch.stack([pm, pn], 1), 0.027)
    sh.add(0.2 * a("AU20", s),
           lambda X, Y: _gauss((Y - _s(dp[:, 1])) / 0.012) * _gauss((X - _s(dp[:, 0] + sign * 0.02)) / 0.02),
           sh.at(dp[:, 0] + sign * 0.02, dp[:, 1]), 0.086, 0.052)


def _chin_wrinkles(sh: _Shading, L, a, cx):
    """Chin raiser (AU17): the mentolabial fold and chin-boss dimpling."""
    fold_y = L[:, LOWER_LIP_BOTTOM, 1] + 0.035
    sh.add(0.25 * a("AU17") + 0.04, lambda X, Y: _gauss((Y - _s(fold_y)) / 0.008) * _gauss((X - _s(cx)) / 0.06),
           sh.at(cx, fold_y), 0.26, 0.035)
    chin = L[:, CHIN]
    sh.add(0.2 * a("AU17"), lambda X, Y: (torch.sin(X * 150) ** 2 * _gauss((X - _s(chin[:, 0])) / 0.07))
           * (torch.sin(Y * 150) ** 2 * _gauss((Y - _s(chin[:, 1] - 0.05)) / 0.04)),
           sh.at(chin[:, 0], chin[:, 1] - 0.05), 0.3, 0.172)


def _photo_folds(L, aus, X, Y, H):
    """Style "photo": the broad shading of expression that photographs show and a network sees at 48-112 pixels
    (the cartoon's lines are a pixel wide there), darkening (N, 1, H, W) linear in each AU: the knitted brows' bulge
    and the shadow they cast on the upper lids (AU4), the raised inner brows' bulge (AU1), the nose's side folds
    (AU9), the deep upper nasolabial fold and the raised cheek above it (AU10), the lowered corners' folds (AU15),
    the chin boss and the fold above it (AU17), the stretched corners' dimple lines (AU20), pressed lips (AU23)."""
    sh = _Shading(L, X, Y, H)
    cx = (L[:, JAW_RIGHT, 0] + L[:, JAW_LEFT, 0]) * 0.5
    a = lambda name, s=None: (aus[:, _AU[name]].mean(1) if s is None else aus[:, _AU[name], s])  # noqa: E731
    pk = PHOTO_FOLDS
    inner_y = 0.5 * (L[:, 21, 1] + L[:, 22, 1])
    # AU4: glabella bulge between the knitted brows (two soft vertical furrows), the brows' shadow over the lids
    sh.add(pk["AU04"] * 0.6 * a("AU04"), lambda X, Y: (_gauss((X - _s(cx) - 0.028) / 0.014)
                                                       + _gauss((X - _s(cx) + 0.028) / 0.014))
           * _gauss((Y - _s(inner_y) - 0.01) / 0.035), sh.at(cx, inner_y + 0.01), 0.1, 0.15)
    for s, sign in _SIDES:
        eye, brow = EYES[s], BROWS[s]
        ex, ey = L[:, eye.group, 0].mean(1), L[:, eye.upper, 1].mean(1)
        by = L[:, brow, 1].mean(1)
        mid = 0.5 * (ey + by)
        sh.add(pk["AU04"] * a("AU04", s), lambda X, Y: _gauss((X - _s(ex)) / 0.07) * _gauss((Y - _s(mid)) / 0.022),
               sh.at(ex, mid), 0.3, 0.095)
        ib = L[:, brow[-1] if s == 0 else brow[0]]
        sh.add(pk["AU04"] * 0.8 * a("AU04", s), lambda X, Y: _gauss((X - _s(ib[:, 0] + sign * 0.01)) / 0.03)
               * _gauss((Y - _s(ib[:, 1])) / 0.018), ib[:, None], 0.13, 0.08)
        # AU1: the inner brow's bulge lit from above, its shadow below (a lighter band above the inner brow)
        sh.add(-pk["AU01"] * a("AU01", s), lambda X, Y: _gauss((X - _s(ib[:, 0])) / 0.035)
               * _gauss((Y - _s(ib[:, 1] - 0.03)) / 0.018), (ib + torch.tensor([0.0, -0.03], device=L.device))[:, None],
               0.15, 0.08)
        # AU9: folds on the nose's sides, below the inner eye corners
        nx = L[:, 27, 0] + sign * 0.045
        ny = 0.5 * (L[:, 28, 1] + L[:, 29, 1])
        sh.add(pk["AU09"] * a("AU09", s), lambda X, Y: _gauss((X - _s(nx)) / 0.016) * _gauss((Y - _s(ny)) / 0.035),
               sh.at(nx, ny), 0.07, 0.15)
        # AU10: the upper nasolabial fold deepened, the cheek above it raised (lighter)
        wing = L[:, (NOSTRIL_RIGHT, NOSTRIL_LEFT)[s]]
        mouth = L[:, (MOUTH_RIGHT, MOUTH_LEFT)[s]]
        pa = wing + torch.tensor([sign * 0.03, -0.01], device=L.device)
        pb = 0.5 * (wing + mouth) + torch.tensor([sign * 0.05, 0.0], device=L.device)
        sh.add(pk["AU10"] * a("AU10", s), lambda X, Y: _gauss(_seg_dist(X, Y, pa, pb) / 0.013),
               torch.stack([pa, pb], 1), 0.06)
        ch = pa + torch.tensor([sign * 0.06, -0.03], device=L.device)
        sh.add(-0.5 * pk["AU10"] * a("AU10", s), lambda X, Y: _gauss(((X - _s(ch[:, 0])) ** 2
                                                                      + (Y - _s(ch[:, 1])) ** 2).sqrt() / 0.04),
               ch[:, None], 0.17)
        # AU15: the fold from the lowered corner down and out
        pm = mouth + torch.tensor([sign * 0.005, 0.01], device=L.device)
        pn = mouth + torch.tensor([sign * 0.03, 0.09], device=L.device)
        sh.add(pk["AU15"] * a("AU15", s), lambda X, Y: _gauss(_seg_dist(X, Y, pm, pn) / 0.014),
               torch.stack([pm, pn], 1), 0.06)
        # AU20: shadows at the stretched corners
        sc_ = mouth + torch.tensor([sign * 0.02, 0.0], device=L.device)
        sh.add(pk["AU20"] * a("AU20", s), lambda X, Y: _gauss((X - _s(sc_[:, 0])) / 0.015)
               * _gauss((Y - _s(sc_[:, 1])) / 0.03), sc_[:, None], 0.07, 0.13)
    # AU17: the fold above the chin boss and the boss's highlight; AU23: the pressed lips' line
    fold_y = L[:, LOWER_LIP_BOTTOM, 1] + 0.03
    sh.add(pk["AU17"] * a("AU17"), lambda X, Y: _gauss((Y - _s(fold_y)) / 0.014) * _gauss((X - _s(cx)) / 0.07),
           sh.at(cx, fold_y), 0.3, 0.06)
    boss_y = fold_y + 0.07
    sh.add(-0.6 * pk["AU17"] * a("AU17"), lambda X, Y: _gauss((Y - _s(boss_y)) / 0.03) * _gauss((X - _s(cx)) / 0.06),
           sh.at(cx, boss_y), 0.26, 0.13)
    ly = 0.5 * (L[:, 62, 1] + L[:, 66, 1])
    mw = 0.5 * (L[:, MOUTH_LEFT, 0] - L[:, MOUTH_RIGHT, 0])
    sh.add(pk["AU23"] * a("AU23"), lambda X, Y: _gauss((Y - _s(ly)) / 0.01) * _gauss((X - _s(cx)) / _s(mw)),
           sh.at(cx, ly), 0.35, 0.05)
    return sh.out


#: style "photo": weights of :func:`_photo_folds`' shading per AU at intensity 1 (chosen with the AU gains, see
#: :data:`facelab.synth.facs.PHOTO_AU_GAIN`)
PHOTO_FOLDS = {"AU01": 0.04, "AU04": 0.58, "AU09": 0.3, "AU10": 0.11, "AU15": 0.28, "AU17": 0.22, "AU20": 0.15,
               "AU23": 0.05}

#: style "photo": weight of the learned AU shading of :data:`PHOTO_SHADING` (0: none)
PHOTO_LEARNED = 1.0
#: style "photo": broad shading per AU that face-api's expression net reads, learned from its gradients (not the
#: FER2013 net's, which judges it independently) by ``benchmarks/bench_synth_realism.py --learn-shading`` in two
#: passes: from zero on world seeds 101 and 202 (``--seeds 101 202 --per-emotion 20 --steps 120 --radius 0.15 --l2 1.0
#: --tv 6.0``, the codes of commit 96ba96f), then a change of those learned on prototypes rendered with them on seeds
#: 101, 202 and 303 (``--init refine --seeds 101 202 303 --per-emotion 20 --steps 60 --radius 0.15 --l2 2.0 --tv
#: 12.0``, run on 96ba96f's codes; checked on 404 and 505): a darkening (lightening where negative) of the frontal
#: frame on a :data:`PHOTO_SHADING_GRID`-square grid, left-right symmetric, smooth (a total-variation penalty),
#: confined to the face and to near the landmarks that the AU moves (none for the blink, nor for the jaw's AU25 and
#: AU26, whose look is the drawn mouth opening); split between the face's halves for each side
#: and bilinearly up-sampled. Stored per AU as the subject-right half (columns 0..G/2-1) in int8 steps of
#: :data:`PHOTO_SHADING_STEP`, base64.
PHOTO_SHADING_GRID = 16
PHOTO_SHADING_STEP = 0.005
PHOTO_SHADING: dict[str, str] = {
    "AU01": ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEAAAAA///vIwkAAAD9MMTEBwAAAAk1xHhRAAAAFD9EaMsAAAADJt7fBQAA"
             "AAIUAfwPAAAAAAL+AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
    "AU02": ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAL4KhEAAAACL9TG4wAAABI5FXgmAAAACvDES9sAAAAD+N0d3wAA"
             "AAIRCfgSAAAAAAH/AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
    "AU04": ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAgb+//8AAAADBdTUdAAAAAjV9NLEAAAACBE2eEQAAAAESCXERAAA"
             "AAQI/vQOAAAAAAH9AwgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
    "AU05": ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEAGP8AAAD/LN/KLQAAAAMfOHjMAAAAA+3EZ88AAAABGsTl6wAA"
             "AAISF+YmAAAAAAEAAAMAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
    "AU06": ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAH9/P4AAAAB/e7yBgAAAAQJ8vvaAAAAAwjVDDAAAAAGERcEBAAA"
             "AAAJ2gL3AAAAAAQOEP0AAAAAAAD+AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
    "AU07": ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAMCCP8AAAABCgQUNAAAAAEBO/7EAAAAAeDEV0IAAAACICH7CQAA"
             "AAIID9QWAAAAAP4D9g4AAAAAAAL+AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
    "AU09": ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAQ7u7vIAAAAE8cTuIQAAAPLExMR4AAAA/nh4eA0AAAD68lU6IwAA"
             "AP4URvVqAAAAAPZkxBUAAAAA9mDFXQAAAAAEHO4nAAAAAAH99P8AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
    "AU10": ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAP4EAAAAAAIMHPkAAAAA/CgqIQAA"
             "AAAQPvhaAAAAAPdlxBQAAAAA+WDSTQAAAAAEG/EjAAAAAAH99P8AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
    "AU12": ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAIAAAAAAAn4AAgAAAADESH99wAA"
             "AAMG1P7dAAAABQYcF90AAAD58+XExAAAAAEFB+P2AAAA/ebs4OoAAAAAAAQDBgAAAAAAAAAAAAAAAAAAAAA="),
    "AU15": ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAACBP8AAAAAAAz4CgAA"
             "AAAUHmQZAAAA/xfteDAAAAAB5CP/HQAAAAHsXXgFAAAAAR5aeAcAAAAA/gP3+gAAAAAAAAAAAAAAAAAAAAA="),
    "AU17": ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAEAAAAAAAIBBAAA"
             "AAACDg0uAAAAAPwKB3cAAAACEVbaSQAAAAEHLyUgAAAAAS4yBuUAAAAA+Pvn5wAAAAAAAAAAAAAAAAAAAAA="),
    "AU20": ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAD+Af4AAAAACPj0DAAA"
             "AAUi/07oAAAADEpSeOgAAAD2PsTmxAAAAAwOy8TEAAAAARQiXF0AAAAAAgH8+gAAAAAAAAAAAAAAAAAAAAA="),
    "AU23": ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAwQAAAAAAA4X+gAA"
             "AAAFDs4zAAAAAOgJxHgAAAAAOHjEeAAAAAH0B8RcAAAAAAQJ7hoAAAAAAAAD+wAAAAAAAAAAAAAAAAAAAAA="),
}


def photo_shading_grid(codes: dict | None = None) -> torch.Tensor:
    """(A, 2, G, G) the learned shading of :data:`PHOTO_SHADING` (or ``codes``) per AU and side on its grid."""
    G = PHOTO_SHADING_GRID
    codes = PHOTO_SHADING if codes is None else codes
    xs = (torch.arange(G, dtype=torch.float32) + 0.5) * (2.0 / G) - 1
    side = torch.stack([torch.sigmoid(-xs / 0.05), torch.sigmoid(xs / 0.05)])        # (2, G): subject right, left
    t = torch.zeros(len(_AU), 2, G, G)
    for name, code in codes.items():
        half = torch.frombuffer(bytearray(base64.b64decode(code)), dtype=torch.int8).float().view(G, G // 2)
        S = torch.cat([half, half.flip(-1)], -1) * PHOTO_SHADING_STEP
        t[_AU[name]] = S[None] * side[:, None, :]
    return t


def encode_photo_shading(S: torch.Tensor) -> str:
    """The inverse of :func:`photo_shading_grid` for one AU's symmetric (G, G) shading: its base64 code."""
    G = PHOTO_SHADING_GRID
    q = (S[:, :G // 2] / PHOTO_SHADING_STEP).round().clamp(-127, 127).to(torch.int8)
    return base64.b64encode(q.contiguous().numpy().tobytes()).decode()


def _photo_learned_shading(H: int) -> torch.Tensor:
    """(A * 2, H * W) :func:`photo_shading_grid` up-sampled to the image, rows ordered as in :func:`au_templates`."""
    t = photo_shading_grid()
    G = t.shape[-1]
    up = F.interpolate(t.view(-1, 1, G, G), size=H, mode="bilinear", align_corners=False)
    return up.reshape(t.shape[0] * 2, H * H)


_TEMPLATES = {}


def au_templates(H: int, device, style: str = "cartoon") -> torch.Tensor:
    """(A * 2, H * W) shading of each AU on each side (subject right, left) at intensity 1, on the mean face (in
    style "photo" the cartoon's lines times :data:`PHOTO_WRINKLE_GAIN` plus :func:`_photo_folds` plus
    :data:`PHOTO_LEARNED` x the learned shading of :data:`PHOTO_SHADING`)."""
    key = (H, str(device), style, PHOTO_TEMPLATE_GAIN, tuple(sorted(PHOTO_FOLDS.items())), PHOTO_LEARNED,
           tuple(sorted(PHOTO_SHADING.items())))
    if key not in _TEMPLATES:
        from facelab.synth.facs import apply_aus, au_gain
        from facelab.synth.landmarks import mean_shape

        A = len(_AU)
        aus = torch.zeros(A * 2, A, 2)
        for k in range(A):
            aus[2 * k, k, 0] = 1.0
            aus[2 * k + 1, k, 1] = 1.0
        X, Y = _grid(H, "cpu")
        age = torch.zeros(A * 2)
        base = _wrinkles(mean_shape()[None], torch.zeros(1, A, 2), torch.zeros(1), X, Y, H)
        if style == "cartoon":
            L = apply_aus(mean_shape()[None].expand(A * 2, -1, -1).contiguous(), aus)
            t = _wrinkles(L, aus, age, X, Y, H) - base
        else:
            L = apply_aus(mean_shape()[None].expand(A * 2, -1, -1).contiguous(), aus,
                          gain=au_gain(style) if PHOTO_TEMPLATE_GAIN else None)
            t = (_wrinkles(L, aus, age, X, Y, H) - base) * PHOTO_WRINKLE_GAIN + _photo_folds(L, aus, X, Y, H)
            t = t.reshape(A * 2, H * H)
            if PHOTO_LEARNED:
                t = t + PHOTO_LEARNED * _photo_learned_shading(H)
        _TEMPLATES[key] = t.reshape(A * 2, H * H).to(device)
    return _TEMPLATES[key]


# ---------------------------------------------------------------- 2. expression: per-image drawing on the layer
def _expression_layer(sc: Scene, H: int, style: str = "cartoon") -> torch.Tensor:
    """Each image's identity layer (a view when the images' layers are consecutive rows, as for new identities),
    following the expression: a smooth warp of the neutral frontal frame. Always a tensor that may be drawn on."""
    dev = sc.landmarks.device
    first = int(sc.layer_index[0])
    consecutive = bool((sc.layer_index == torch.arange(first, first + sc.n, device=dev)).all())
    layer = sc.layers[first:first + sc.n] if consecutive else sc.layers[sc.layer_index]
    if bool(((sc.landmarks - sc.neutral).abs() > 1e-5).any()):
        grid = _expression_grid(sc.neutral, sc.landmarks, H) if style != "photo" or PHOTO_WARP is None else \
            _photo_expression_grid(sc.neutral, sc.landmarks, H)
        layer = F.grid_sample(layer, grid, align_corners=False)
    elif consecutive:
        layer = layer.clone()                                       # it is drawn on below
    return layer


def _expression_grid(neutral, L, H, g=16):
    """Backward map from the expressive frontal frame to the neutral identity frame (N, H, W, 2): a smooth
    Gaussian-kernel interpolation of the landmark displacements, computed on a g x g grid and up-sampled (a face
    whose landmarks do not move gets the identity map)."""
    dev = L.device
    X, Y = _grid(g, dev)
    P = torch.stack([X.expand(1, 1, g, g), Y.expand(1, 1, g, g)], -1).view(1, g * g, 2)
    d = L - neutral                                                 # (N, 68, 2)
    k = _gauss(torch.cdist(P.expand(L.shape[0], -1, -1), L) / (math.sqrt(2) * 0.06))   # (N, g*g, 68)
    disp = (k @ d) / (k.sum(-1, keepdim=True) + 0.15)
    return _identity_grid(H, dev) - _resize_grid(disp.view(-1, g, g, 2), H)


#: style "photo": the expression warp's Gaussian radius, ridge and grid (see :func:`_photo_expression_grid`)
PHOTO_WARP = {"sigma": 0.045, "ridge": 0.01, "g": 64}


def _photo_expression_grid(neutral, L, H):
    """Style "photo": as :func:`_expression_grid`, but the displacement field interpolates the landmarks' own
    displacements (Gaussian radial basis functions solved for at the landmarks, with a small ridge, on a finer
    grid), so that the skin, brows and lids of the photo texture move as far as the landmarks say; the smooth
    average of the cartoon style moves a lowered brow about half as far and a tightened lid hardly at all."""
    dev, p = L.device, PHOTO_WARP
    g, r = p["g"], math.sqrt(2) * p["sigma"]
    xs = _grid(g, dev)[0].view(1, g, 1)
    d = L - neutral                                                 # (N, 68, 2)
    K = _gauss(torch.cdist(L, L) / r) + p["ridge"] * torch.eye(L.shape[1], device=dev)
    w = torch.linalg.solve(K, d)                                    # (N, 68, 2)
    # the Gaussian on the regular grid is separable: disp[y, x] = sum_l ky[y, l] kx[x, l] w[l]
    kx = _gauss((xs - L[:, None, :, 0]) / r)                        # (N, g, 68)
    ky = _gauss((xs - L[:, None, :, 1]) / r)
    disp = torch.stack([ky @ (kx * w[:, None, :, c]).transpose(1, 2) for c in range(2)], -1)   # (N, g, g, 2)
    return _identity_grid(H, dev) - _resize_grid(disp, H)


def _identity_grid(H, device):
    """(1, H, H, 2) ``grid_sample`` grid of the pixel centres (the identity map), cached (do not write to it)."""
    key = ("identity grid", H, str(device))
    if key not in _RESIZE:
        X, Y = _grid(H, device)
        _RESIZE[key] = torch.stack([X.expand(1, 1, H, H), Y.expand(1, 1, H, H)], -1)[:, 0]
    return _RESIZE[key]


def draw_expression(sc: Scene, layer: torch.Tensor, H: int, style: str = "cartoon"):
    """Per-image drawing on the (expression-warped) identity layer, in place: AU shading, eyes, mouth, makeup,
    glasses, frontal occluders, PPG skin colour. Returns the occluder mask (N, 1, H, W)."""
    L = sc.landmarks
    N, pix = sc.n, 2.0 / H
    X, Y = _grid(H, L.device)
    col, face_a, skin_m = layer[:, Layer.RGB], layer[:, Layer.FACE], layer[:, Layer.SKIN]
    mk = sc.makeup
    # 2a. PPG skin colour pulsation
    gain = sc.skin_gain
    if bool((gain != 1).any()):
        col.mul_(1 + (_c(gain) - 1) * skin_m)
    # 2b. AU wrinkles and cheek shading from templates
    if bool(sc.aus.any()):
        T = au_templates(H, L.device, style)
        dark = (sc.aus.reshape(N, -1) @ T).view(N, 1, H, H)
        col.mul_(1 - dark.clamp(-0.2, 0.6) * face_a)
    # 2c. blush, 2d. eyes (one window per eye; eyeshadow and eyeliner), 2e. mouth (lips, opening, lipstick)
    if bool((mk[:, Makeup.BLUSH_ALPHA] > 0).any()):
        _draw_blush(col, skin_m, X, Y, L, mk, H)
    photo = style == "photo"
    for eye in EYES:
        _draw_eye(col, X, Y, eye, sc, pix, H, photo)
    _draw_mouth(col, X, Y, sc, pix, H, photo)
    # 2f. glasses and sunglasses, 2g. scarf, medical mask, hand
    occ_mask = torch.zeros(N, 1, H, H, device=L.device)
    _draw_glasses(layer, occ_mask, X, Y, sc, pix, H)
    _draw_frontal_occluders(layer, occ_mask, X, Y, sc, pix, H)
    return occ_mask


def _draw_blush(col, skin_m, X, Y, L, mk, H):
    """Blush on both cheeks (on skin only), between the outer eye corner and the mouth corner of each side."""
    x0, x1 = float(L[:, [EYE_RIGHT_OUTER, MOUTH_RIGHT], 0].min()) - 0.08, \
        float(L[:, [EYE_LEFT_OUTER, MOUTH_LEFT], 0].max()) + 0.08
    y0 = min(float(L[:, EYES[0].lower, 1].min()), float(L[:, EYES[1].group, 1].min()))
    y1 = float(L[:, SUBNASALE, 1].max()) + 0.08
    rs, cs, Xw, Yw = _window(X, Y, x0, x1, y0, y1, H)
    cw = col[:, :, rs, cs]
    for s, (k, m) in enumerate(((EYE_RIGHT_OUTER, MOUTH_RIGHT), (EYE_LEFT_OUTER, MOUTH_LEFT))):
        ccx = 0.5 * (L[:, k, 0] + L[:, m, 0])
        ccy = 0.5 * (L[:, EYES[s].lower_inner, 1] + L[:, SUBNASALE, 1]) + 0.01
        d2 = ((Xw - _s(ccx)) / 0.09) ** 2 + ((Yw - _s(ccy)) / 0.06) ** 2
        _lerp_(cw, _c(mk[:, Makeup.BLUSH]), _s(mk[:, Makeup.BLUSH_ALPHA]) * 0.55 * _exp_neg(d2) * skin_m[:, :, rs, cs])


def _draw_eye(col, X, Y, eye, sc: Scene, pix, H, photo: bool = False):
    """One eye in its window: eyeshadow, lid crease, the open eye (sclera, iris following the gaze, pupil, glint),
    lashes and eyeliner. Lids are cubic curves through the landmarks in the frame of the eye corners.
    ``photo``: the eye is the appearance model's; only the part of it that the lids close (blink, lid tightener)
    is covered with skin, then eyeshadow and eyeliner."""
    L, mk = sc.landmarks, sc.makeup
    rs, cs, Xw, Yw = _window(X, Y, *_box(L[:, eye.group], 0.04, 0.04, 0.09, 0.03), H)
    cb = col[:, :, rs, cs]
    p0, p1 = L[:, eye.first], L[:, eye.last]
    u, v, length = _frame(Xw, Yw, p0, p1)
    uu, vv = _frame_pts(L[:, eye.upper + eye.lower], p0, p1)
    v_up, v_lo = _eye_curves(u, [(uu[:, 0], vv[:, 0]), (uu[:, 1], vv[:, 1])],
                             [(uu[:, 2], vv[:, 2]), (uu[:, 3], vv[:, 3])])
    inside_u = _ramp((u - 0.5).abs() - 0.5, pix / _s(length))
    shadow = mk[:, Makeup.EYESHADOW_ALPHA]
    if bool((shadow > 0).any()):
        sh_a = _s(shadow) * inside_u * _ramp(v - v_up + 0.004, pix) \
            * _gauss((v - v_up) / 0.055) * ((u + 0.15) * (1.15 - u) * 4).clamp(0, 1)
        _lerp_(cb, _c(mk[:, Makeup.EYESHADOW]), sh_a * 0.85)
    if photo:
        _close_photo_eye(cb, u, v, v_up, v_lo, inside_u, eye, sc, p0, p1, pix)
    else:
        crease = _gauss((v - v_up * 1.35 - 0.012) / 0.005) * inside_u
        cb.mul_(1 - 0.22 * crease)
        open_a = inside_u * _ramp(v_up - v, pix) * _ramp(v - v_lo, pix)
        _lerp_(cb, _eyeball(Xw, Yw, u, v, v_up, p0, p1, length, sc, pix), open_a)
        lash = inside_u * _gauss((v - v_up + 0.003) / 0.0045)
        _lerp_(cb, torch.full_like(cb[:, :, :1, :1], 0.08), lash * 0.85)
    liner_a = mk[:, Makeup.EYELINER_ALPHA]
    if bool((liner_a > 0).any()):
        liner_w = 0.004 + 0.006 * liner_a
        liner = _s(liner_a) * ((u + 0.05) * (1.2 - u) * 8).clamp(0, 1) \
            * _ramp((v - v_up + _s(liner_w) * 0.6).abs() - _s(liner_w), pix)
        _lerp_(cb, _c(mk[:, Makeup.EYELINER]), liner)


def _close_photo_eye(cb, u, v, v_up, v_lo, inside_u, eye, sc: Scene, p0, p1, pix):
    """Style "photo": skin over the part of the neutral eye opening that the current lids cover, and a lash line
    along the current upper lid where it moved down."""
    uu, vv = _frame_pts(sc.neutral[:, eye.upper + eye.lower], p0, p1)
    n_up, n_lo = _eye_curves(u, [(uu[:, 0], vv[:, 0]), (uu[:, 1], vv[:, 1])],
                             [(uu[:, 2], vv[:, 2]), (uu[:, 3], vv[:, 3])])
    was_open = inside_u * _ramp(n_up - v - 0.006, pix) * _ramp(v - n_lo + 0.004, pix)
    now_open = _ramp(v_up - v, pix) * _ramp(v - v_lo, pix)
    if PHOTO_SCLERA > 0:        # lids opened wider than the identity's (AU5): white shows above and below the iris
        opened = inside_u * now_open * (1 - _ramp(n_up - v, pix) * _ramp(v - n_lo, pix))
        if bool((opened > 0.01).any()):
            white = torch.tensor([0.86, 0.84, 0.80], device=cb.device).view(1, 3, 1, 1) * (
                1 - 0.3 * ((2 * u - 1) ** 2) ** 2) * (1 - 0.3 * _gauss((v - v_up) / 0.008))
            _lerp_(cb, white, opened * PHOTO_SCLERA)
    closed = was_open * (1 - now_open)
    if not bool((closed > 0.01).any()):
        return
    lid = _c(sc.skin) * 0.78
    _lerp_(cb, lid, closed)
    lash = inside_u * _gauss((v - v_up) / 0.004) * (v_up > n_up + 0.004).float()
    _lerp_(cb, torch.full_like(cb[:, :, :1, :1], 0.1), lash * 0.8)


def _eyeball(Xw, Yw, u, v, v_up, p0, p1, length, sc: Scene, pix):
    """Colour of the open eye: sclera, iris (centred by the gaze), pupil, a glint, the upper lid's shadow."""
    sclera = torch.tensor([0.93, 0.91, 0.88], device=Xw.device).view(1, 3, 1, 1) * (1 - 0.25 * ((2 * u - 1) ** 2) ** 2)
    ec = 0.5 * (p0 + p1) + sc.gaze * length[:, None] * 0.18
    ri = length * 0.21
    dist = ((Xw - _s(ec[:, 0])) ** 2 + (Yw - _s(ec[:, 1] + 0.003)) ** 2).sqrt()
    iris_a = _ramp(dist - _s(ri), pix)
    ring = 0.75 + 0.35 * (dist / _s(ri)).clamp(0, 1)
    eye_col = sclera * (1 - iris_a) + _c(sc.eye) * ring * iris_a
    pupil = _ramp(dist - _s(ri * 0.45), pix)
    eye_col = eye_col * (1 - pupil) + 0.03 * pupil
    glint = _ramp(((Xw - _s(ec[:, 0] + ri * 0.35)) ** 2 + (Yw - _s(ec[:, 1] - ri * 0.35)) ** 2).sqrt()
                  - _s(ri * 0.22), pix)
    eye_col = eye_col * (1 - glint * 0.8) + 0.76 * glint
    return eye_col * (1 - 0.35 * _gauss((v - v_up) / 0.01))


def _draw_mouth(col, X, Y, sc: Scene, pix, H, photo: bool = False):
    """Lips (natural colour mixed with lipstick) in the mouth's window, in the frame of the mouth corners: the lip
    contours are piecewise-linear curves through the landmarks; then the opening or the closed lip line.
    ``photo``: the lips are the appearance model's (lipstick is blended over them), the opening is drawn."""
    L, mk = sc.landmarks, sc.makeup
    rs, cs, Xw, Yw = _window(X, Y, *_box(L[:, _MOUTH], 0.03, 0.03, 0.03, 0.03), H)
    cl = col[:, :, rs, cs]
    p0, p1 = L[:, MOUTH_RIGHT], L[:, MOUTH_LEFT]
    u, v, length = _frame(Xw, Yw, p0, p1)
    v_ou, v_ol, v_iu, v_il = (_pl(u, *_frame_pts(L[:, LIP_CONTOURS[name]], p0, p1))
                              for name in ("outer_upper", "outer_lower", "inner_upper", "inner_lower"))
    pu = pix / _s(length)
    in_u = _ramp((u - 0.5).abs() - 0.5, pu)
    lips_a = in_u * _ramp(v_ou - v, pix) * _ramp(v - v_ol, pix)
    lower = torch.sigmoid(v / 0.01)
    lip_mix = _s(mk[:, Makeup.LIPSTICK_ALPHA]) * 0.85
    if photo:
        if bool((lip_mix > 0).any()):
            _lerp_(cl, _c(mk[:, Makeup.LIPSTICK]) * (0.75 + 0.25 * cl.mean(1, keepdim=True) / _s(sc.skin.mean(1))),
                   lips_a * lip_mix)
    else:
        lipc = _c(sc.lip) * (0.92 + 0.12 * lower) * (1 - 0.2 * _gauss((v - v_ou) / 0.006))
        lipc = lipc * (1 - lip_mix) + _c(mk[:, Makeup.LIPSTICK]) * lip_mix * (0.9 + 0.1 * lower)
        _lerp_(cl, lipc, lips_a)
    iu_u, _ = _frame_pts(L[:, LIP_CONTOURS["inner_upper"]], p0, p1)
    iu0, iu1 = iu_u[:, 0], iu_u[:, -1]
    in_iu = _ramp((u - _s(0.5 * (iu0 + iu1))).abs() - _s(0.5 * (iu1 - iu0)), pu)
    gap = v_il - v_iu
    # photo: the lips of the appearance model are closed at rest, so only a real opening (lips part, jaw drop) shows
    min_gap = 0.5 * pix if not photo else 0.5 * pix + 0.012
    open_a = in_iu * _ramp(v_iu - v, pix) * _ramp(v - v_il, pix) * (gap > min_gap).float()
    if photo and PHOTO_MOUTH_GATE:    # only the jaw and the upper lip open the mouth wider than the identity's lips
        jaw, lip_raise = _photo_mouth_opening(sc.aus)
        n_iu, n_il = (_pl(u, *_frame_pts(sc.neutral[:, LIP_CONTOURS[name]], p0, p1))
                      for name in ("inner_upper", "inner_lower"))
        n_gap = (n_il - n_iu).amax((2, 3), keepdim=True)
        own = open_a * _ramp(n_iu - v, pix) * _ramp(v - n_il, pix) * (n_gap > min_gap).float()
        g = _s((4 * (jaw + lip_raise)).clamp(0, 1))
        open_a = g * open_a + (1 - g) * own
    if bool((open_a > 0).any()):
        teeth_h = _s(0.028 * length / 0.37)
        teeth = _ramp(v - (v_iu + teeth_h), pix) * (0.8 + 0.2 * torch.cos((u - 0.5) * 40).abs())
        lower_teeth = _ramp((v_il - teeth_h * 0.6) - v, pix) * 0.7
        mouth_in = torch.tensor([0.22, 0.05, 0.06], device=L.device).view(1, 3, 1, 1)
        tooth_c = torch.tensor([0.90, 0.87, 0.80], device=L.device).view(1, 3, 1, 1) * (1 - 0.4 * (2 * u - 1) ** 2)
        t_a = torch.maximum(teeth, lower_teeth)
        if photo:                                       # a photograph's open mouth is mostly shadow, but a
            t_a = t_a * _s(PHOTO_TEETH + (1 - PHOTO_TEETH) * _photo_bared(sc.aus))
            mouth_in = mouth_in * 0.5
        _lerp_(cl, mouth_in * (1 - t_a) + tooth_c * t_a, open_a)
    closed_line = in_iu * _gauss((v - 0.5 * (v_iu + v_il)) / 0.0035) * (gap <= 1.5 * pix).float()
    cl.mul_(1 - 0.55 * closed_line)


def _photo_bared(aus):
    """Style "photo": (N,) how far the AUs of :data:`PHOTO_TEETH_AU` bare the teeth of an open mouth, in [0, 1]."""
    out = torch.zeros(aus.shape[0], device=aus.device)
    for name, w in PHOTO_TEETH_AU.items():
        out = out + w * aus[:, _AU[name]].amax(1)
    return out.clamp(0, 1)


def _photo_mouth_opening(aus):
    """Style "photo": how far each face's mouth is opened (N,) by the jaw (lips part AU25, jaw drop AU26) and by
    the upper lip's raise (AU10), the only AUs that open a photographed mouth; the lip corners' pull down (AU15) or
    the chin's push (AU17) move the lip contours apart but do not show the mouth's inside."""
    jaw = (aus[:, _AU["AU25"]].amax(1) + aus[:, _AU["AU26"]].amax(1)).clamp(0, 1)
    return jaw, aus[:, _AU["AU10"]].amax(1)


def _draw_glasses(layer, occ_mask, X, Y, sc: Scene, pix, H):
    """Glasses (identity) and sunglasses (an occluder) in the eye band of the images that wear them."""
    L, gl = sc.landmarks, sc.glasses
    sun = sc.occlusion == OCCLUSIONS.index("sunglasses")
    wear = (gl[:, Glasses.WORN] > 0.5) | sun
    if not bool(wear.any()):
        return
    col, alpha = layer[:, Layer.RGB], layer[:, Layer.ALPHA]
    dev = L.device
    idx = wear.nonzero()[:, 0]
    rs = _rows(float(L[:, _EYES, 1].min()) - 0.12, float(L[:, _EYES, 1].max()) + 0.12, H)
    Yb = Y[:, :, rs]
    _, jaw_w = _jaw_centre_width(L)
    ga, gm = _glasses(X, Yb, L[idx], gl[idx], sun[idx], jaw_w[idx], pix)
    sunf = _s(sun[idx].float())
    frame_c = torch.where(sunf > 0, 0.05, _s(gl[idx, Glasses.DARKNESS] * 0.1 + 0.02))
    lens_c = torch.where(sunf > 0, torch.tensor([0.04, 0.05, 0.07], device=dev).view(1, 3, 1, 1)
                         + 0.15 * _gauss((X + Yb * 0.8 - 0.1) / 0.06), 0.9)
    sub = col[idx, :, rs]
    _lerp_(sub, lens_c, torch.where(sunf > 0, 0.97, 0.12) * gm)
    _lerp_(sub, frame_c, ga)
    col[idx, :, rs] = sub
    am = torch.maximum(ga, gm)
    alpha[idx, :, rs] = torch.maximum(alpha[idx, :, rs], am)
    occ_mask[idx, :, rs] = am * sunf


def _draw_frontal_occluders(layer, occ_mask, X, Y, sc: Scene, pix, H):
    """Scarves, medical masks and hands (:data:`_OCCLUDERS`), each kind in the window that holds all of its images."""
    L = sc.landmarks
    col, alpha = layer[:, Layer.RGB], layer[:, Layer.ALPHA]
    cx, jaw_w = _jaw_centre_width(L)
    for kind in ("scarf", "mask", "hand"):
        sel = sc.occlusion == OCCLUSIONS.index(kind)
        if not bool(sel.any()):
            continue
        idx = sel.nonzero()[:, 0]
        draw, extent = _OCCLUDERS[kind]
        rs, cs, Xw, Yw = _window(X, Y, *extent(L[idx], sc.occlusion_param[idx]), H)
        a, c = draw(Xw, Yw, L[idx], sc.occlusion_param[idx], sc.face[idx], jaw_w[idx], cx[idx], pix)
        col[idx, :, rs, cs] = _lerp_(col[idx, :, rs, cs], c, a)
        alpha[idx, :, rs, cs] = torch.maximum(alpha[idx, :, rs, cs], a)
        occ_mask[idx, :, rs, cs] = torch.maximum(occ_mask[idx, :, rs, cs], a)


def _glasses(X, Y, L, gl, sun, jaw_w, pix):
    """Frames and lenses of (sun)glasses around the eyes: (frame alpha, lens alpha) in the eye band."""
    frame = torch.zeros(L.shape[0], 1, Y.shape[2], X.shape[3], device=L.device)
    lens = torch.zeros_like(frame)
    size = torch.where(sun, 1.4, gl[:, Glasses.SIZE])       # AR-database sunglasses cover about 20% of the face
    p = torch.where(sun, 3.0, 2.0 + 3.0 * gl[:, Glasses.SHAPE])
    t = torch.where(sun, 0.012, 0.006 + 0.004 * gl[:, Glasses.DARKNESS])
    centres = []
    for eye in EYES:
        c = L[:, eye.group].mean(1) + torch.stack([torch.zeros_like(jaw_w), 0.012 + 0 * jaw_w], 1)
        a = (L[:, eye.last, 0] - L[:, eye.first, 0]).abs() * 0.5 * 1.45 * size
        b = a * torch.where(sun, 0.8, 0.72)
        dx = ((X - _s(c[:, 0])).abs() / _s(a)).clamp_min(1e-6)
        dy = ((Y - _s(c[:, 1] + 0.1 * b)).abs() / _s(b)).clamp_min(1e-6)
        r = (dx ** _s(p) + dy ** _s(p)).log_().div_(_s(p)).exp_()          # the p-norm, (dx^p + dy^p)^(1/p)
        sdf = (r - 1) * _s(b)
        lens = torch.maximum(lens, _ramp(sdf, pix))
        frame = torch.maximum(frame, _ramp(sdf.abs() - _s(t), pix))
        centres.append((c, a))
    (c0, a0), (c1, a1) = centres
    bridge_y = Y - _s(0.5 * (c0[:, 1] + c1[:, 1]) - 0.01)
    bx = X - _s(0.5 * (c0[:, 0] + c1[:, 0]))
    bridge = _ramp(bridge_y.abs() - _s(t * 0.8), pix) \
        * _ramp(bx.abs() - _s((c1[:, 0] - c0[:, 0]) * 0.5 - a0 * 0.9), pix)
    arms = _ramp((Y - _s(c0[:, 1] - 0.3 * a0 * 0.72)).abs() - _s(t * 0.8), pix) * \
        ((X - _s(c0[:, 0] - a0)) < 0).float() * ((X - _s(c0[:, 0] - a0 - 0.12)) > 0).float()
    arms = arms + _ramp((Y - _s(c1[:, 1] - 0.3 * a1 * 0.72)).abs() - _s(t * 0.8), pix) * \
        ((X - _s(c1[:, 0] + a1)) > 0).float() * ((X - _s(c1[:, 0] + a1 + 0.12)) < 0).float()
    frame = torch.maximum(frame, torch.maximum(bridge, arms.clamp(0, 1)))
    return frame, lens


def _face_sdf(X, Y, L, face):
    """Signed distance-like value of each pixel to the face contour of landmarks L (see :func:`_polar_lookup`)."""
    centre, table, _ = _polar_face(L, face)
    return _polar_lookup(X, Y, centre, table)


def _scarf_extent(L, prm):
    """Frontal box (x0, x1, y0, y1) holding the scarves of all faces: everything below the top edge."""
    return -1.0, 1.0, float(prm[:, ScarfParam.TOP].min()) - 0.02, 1.0


def _scarf(X, Y, L, prm, face, jaw_w, cx, pix):
    face_sdf = _face_sdf(X, Y, L, face)
    top = prm[:, ScarfParam.TOP]
    sag = 0.05 * ((X - _s(cx)) / _s(jaw_w)) ** 2
    a = _ramp(_s(top) - Y - sag * -1 + 0 * X, 1.5 * pix) * _ramp((X - _s(cx)).abs() - _s(jaw_w * 1.25), pix)
    a = a * (face_sdf < 0.06).float().maximum((Y > _s(L[:, CHIN, 1])).float())
    folds = 0.85 + 0.15 * torch.sin((Y - _s(top)) * 60 + torch.sin(X * 9) * 2)
    stripes = torch.where(_s(prm[:, ScarfParam.PATTERN]) > 0.5, 0.75 + 0.25 * (torch.sin((X + Y) * 50) > 0).float(),
                          torch.ones_like(X))
    return a, _c(prm[:, ScarfParam.RGB]) * folds * stripes


def _mask_top(L, prm):
    """Frontal-frame y of the medical masks' top edge: an offset from the middle of the nose bridge."""
    return 0.5 * (L[:, _NOSE_MID[0], 1] + L[:, _NOSE_MID[1], 1]) + prm[:, MaskParam.TOP]


def _mask_extent(L, prm):
    """Frontal box holding the medical masks of all faces: from the top edge (and the ear loops) to below the chin."""
    y0 = min(float(_mask_top(L, prm).min()), float(L[:, list(_EAR_LOOPS), 1].min()) - 0.07) - 0.02
    return -1.0, 1.0, y0, float(L[:, CHIN, 1].max()) + 0.07


def _medical_mask(X, Y, L, prm, face, jaw_w, cx, pix):
    face_sdf = _face_sdf(X, Y, L, face)
    top = _mask_top(L, prm)
    curve = 0.18 * ((X - _s(cx)) / _s(jaw_w)) ** 2
    a = _ramp(_s(top) + curve - Y, 1.5 * pix) * _ramp(face_sdf - 0.025, 1.5 * pix) \
        * (Y < _s(L[:, CHIN, 1] + 0.05)).float()
    pleats = 0.9 + 0.1 * torch.sin((Y - _s(top)) * 70) ** 2
    loops = torch.zeros_like(a)
    for j in _EAR_LOOPS:
        p0 = L[:, j] + torch.stack([(L[:, j, 0] - cx).sign() * 0.03, -0.06 + 0 * cx], 1)
        p1 = torch.stack([L[:, j, 0] * 0.8, top + 0.03], 1)
        loops = torch.maximum(loops, _ramp(_seg_dist(X, Y, p0, p1) - 0.004, pix))
        p2 = torch.stack([L[:, j, 0] * 0.8, L[:, CHIN, 1] - 0.05], 1)
        loops = torch.maximum(loops, _ramp(_seg_dist(X, Y, p0, p2) - 0.004, pix))
    a = torch.maximum(a, loops * 0.9)
    return a, _c(prm[:, MaskParam.RGB]) * pleats


def _hand_extent(L, prm):
    """Frontal box holding the hands of all faces: the fingertips lie within 0.53 scale of the hand centre."""
    r = 0.56 * prm[:, HandParam.SCALE] + 0.02
    x, y = prm[:, HandParam.X], prm[:, HandParam.Y]
    return float((x - r).min()), float((x + r).max()), float((y - r).min()), float((y + r).max())


def _hand(X, Y, L, prm, face, jaw_w, cx, pix):
    c = prm[:, HandParam.CENTRE]
    ang = prm[:, HandParam.ANGLE]
    scale = prm[:, HandParam.SCALE]
    ca, sa = ang.cos(), ang.sin()
    dx, dy = X - _s(c[:, 0]), Y - _s(c[:, 1])
    xr = (dx * _s(ca) + dy * _s(sa)) / _s(scale)
    yr = (-dx * _s(sa) + dy * _s(ca)) / _s(scale)
    # signed distance to the union of the palm (ellipse-ish) and five finger capsules
    sd = ((xr / 0.2) ** 2 + (yr / 0.24) ** 2).sqrt() * 0.2 - 0.2
    zero = torch.zeros_like(xr[:, 0, 0, 0])
    for off, ln, r in ((-0.14, 0.30, 0.042), (-0.047, 0.36, 0.046), (0.047, 0.34, 0.046), (0.14, 0.26, 0.040)):
        a = torch.stack([zero + off, zero - 0.12], 1)
        b = torch.stack([zero + off * 1.1, zero - 0.12 - ln], 1)
        sd = torch.minimum(sd, _seg_dist(xr, yr, a, b) - r)
    sd = torch.minimum(sd, _seg_dist(xr, yr, torch.stack([zero - 0.15, zero + 0.05], 1),
                                     torch.stack([zero - 0.32, zero - 0.13], 1)) - 0.048)
    a = _ramp(sd * _s(scale), pix)
    light = torch.tensor([0.93, 0.76, 0.66], device=X.device)
    deep = torch.tensor([0.38, 0.24, 0.16], device=X.device)
    tone = light + (deep - light) * prm[:, HandParam.TONE, None]
    shade = (0.62 + 0.38 * (-sd / 0.035).clamp(0, 1)) * (0.92 + 0.08 * torch.tanh(-yr * 3))
    return a, _c(tone) * shade


#: Frontal occluders: (draw(X, Y, L, prm, face, jaw_w, cx, pix) -> (alpha, colour), extent(L, prm) -> frontal box).
_OCCLUDERS = {"scarf": (_scarf, _scarf_extent), "mask": (_medical_mask, _mask_extent), "hand": (_hand, _hand_extent)}


# ---------------------------------------------------------------- 3. light
def _rotation(pose):
    """(N, 3, 3) rotation from yaw, pitch, roll in degrees (yaw about y, pitch about x, roll about z)."""
    yaw, pitch, roll = [torch.deg2rad(pose[:, k]) for k in range(3)]
    cy, sy, cp, sp, cr, sr = yaw.cos(), yaw.sin(), pitch.cos(), pitch.sin(), roll.cos(), roll.sin()
    o, z = torch.ones_like(cy), torch.zeros_like(cy)
    Ry = torch.stack([cy, z, sy, z, o, z, -sy, z, cy], 1).view(-1, 3, 3)
    Rx = torch.stack([o, z, z, z, cp, -sp, z, sp, cp], 1).view(-1, 3, 3)
    Rz = torch.stack([cr, -sr, z, sr, cr, z, z, z, o], 1).view(-1, 3, 3)
    return Rz @ Ry @ Rx


def _normals(depth, h, dev, relief: float = 1.0):
    """Head-frame surface normals (N, 3, h, h) of the analytic depth model (its relief scaled by ``relief``)."""
    X, Y = _grid(h, dev)
    z = depth(X, Y)
    if relief != 1.0:                                                 # style "photo" only, see PHOTO_RELIEF
        z = z * relief
    step = 2.0 / h
    zp = F.pad(z, (1, 1, 1, 1), mode="replicate")
    gx = (zp[:, :, 1:-1, 2:] - zp[:, :, 1:-1, :-2]) / (2 * step)
    gy = (zp[:, :, 2:, 1:-1] - zp[:, :, :-2, 1:-1]) / (2 * step)
    inv = (gx * gx + gy * gy + 1).rsqrt_()                            # 1 / |(-gx, -gy, 1)|
    return torch.cat([-gx * inv, -gy * inv, inv], 1)


def _lighting(sc: Scene, normals: torch.Tensor, R: torch.Tensor):
    """Shading (N, 3, H, W) of head-frame normals under the scene light (Lambert + ambient + Blinn specular)."""
    light = sc.light
    az, el = torch.deg2rad(light[:, Light.AZIMUTH]), torch.deg2rad(light[:, Light.ELEVATION])
    # light direction in the world (towards the light): azimuth 0 = frontal, + = from the image right,
    # + elevation = from above
    lw = torch.stack([az.sin() * el.cos(), -el.sin(), az.cos() * el.cos()], 1)
    lh = torch.einsum("nji,nj->ni", R, lw)                       # into the head frame (R^T l)
    v = R[:, 2, :]                                                # the camera direction in the head frame
    half = lh + v
    half = half / half.norm(dim=1, keepdim=True)
    nx, ny, nz = normals[:, 0:1], normals[:, 1:2], normals[:, 2:3]
    diffuse = (nx * _s(lh[:, 0]) + ny * _s(lh[:, 1]) + nz * _s(lh[:, 2])).clamp_min(0)
    spec = _ipow((nx * _s(half[:, 0]) + ny * _s(half[:, 1]) + nz * _s(half[:, 2])).clamp_min(0), 24)
    amb, inten = light[:, Light.AMBIENT], light[:, Light.INTENSITY]
    shade = _s(amb) + _s(inten * (1 - amb) * 1.15) * diffuse
    return shade * _c(light[:, Light.RGB]) + _s(0.10 * inten) * spec


def _shade(sc: Scene, layer, occ_mask, depth: DepthModel, R, H: int, relief: float = 1.0):
    """The layer becomes the stack to pose, in place: shaded colour premultiplied by alpha, alpha, face region, and
    the occluder mask in place of the skin mask. Light is smooth: it is shaded at half resolution from the
    (expression-aware) depth model's normals, its relief scaled by ``relief`` (1 but in style "photo")."""
    shade = _lighting(sc, _normals(depth, max(16, H // 2), sc.landmarks.device, relief), R)
    layer[:, Layer.RGB].mul_(_resize(shade, H)).mul_(layer[:, Layer.ALPHA])
    layer[:, Layer.OCCLUDER] = occ_mask
    return layer


# ---------------------------------------------------------------- 4. pose
def _placement(sc: Scene):
    """Each image's head placement: scale, shift x, shift y (N,) each."""
    sim = sc.similarity
    return sim[:, Similarity.SCALE], sim[:, Similarity.SHIFT_X], sim[:, Similarity.SHIFT_Y]


def _pose(sc: Scene, stack, depth: DepthModel, R, H: int):
    """Warp the frontal stack to each image's head pose and placement (one ``grid_sample``; none when every image
    is frontal and unmoved)."""
    scale, sx, sy = _placement(sc)
    if bool((sc.pose.abs() > 1e-6).any() or (scale != 1).any() or (sc.similarity[:, Similarity.SHIFT_X:] != 0).any()):
        stack = F.grid_sample(stack, _pose_grid(sc, depth, R, H), align_corners=False)
    return stack


def _pose_grid(sc: Scene, depth: DepthModel, R, H: int, g: int = 24):
    """Backward map: for each output pixel, where to sample the frontal head layer (N, H, W, 2)."""
    dev = sc.landmarks.device
    xs = (torch.arange(g, device=dev, dtype=torch.float32) + 0.5) * (2.0 / g) - 1
    Xo, Yo = xs.view(1, 1, 1, g).expand(sc.n, 1, g, g), xs.view(1, 1, g, 1).expand(sc.n, 1, g, g)
    scale, sx, sy = _placement(sc)
    piv = _pivot(depth)
    # undo the similarity: q = (p - shift) / scale
    qx = (Xo - _s(sx)) / _s(scale) - _s(piv[:, 0])
    qy = (Yo - _s(sy)) / _s(scale) - _s(piv[:, 1])
    A = R[:, :2, :2]
    Ainv = torch.linalg.inv(A)
    rz = R[:, :2, 2]
    x, y = qx + _s(piv[:, 0]), qy + _s(piv[:, 1])
    for _ in range(3):
        z = depth(x, y) - _s(piv[:, 2])
        bx = qx - _s(rz[:, 0]) * z
        by = qy - _s(rz[:, 1]) * z
        x = _s(Ainv[:, 0, 0]) * bx + _s(Ainv[:, 0, 1]) * by + _s(piv[:, 0])
        y = _s(Ainv[:, 1, 0]) * bx + _s(Ainv[:, 1, 1]) * by + _s(piv[:, 1])
    return _resize_grid(torch.stack([x[:, 0], y[:, 0]], -1), H)


def _pivot(depth: DepthModel):
    return torch.stack([depth.cx, depth.cy, depth.zc * 0.45], 1)


# ---------------------------------------------------------------- 5. background and compositing
def _background(sc: Scene, H: int):
    """Background and clothing under the scene light, drawn at half resolution (they are smooth) and upsampled."""
    out = _background_full(sc, max(16, H // 2))
    out *= (0.55 + 0.45 * _s(sc.light[:, Light.INTENSITY]).clamp(0, 1.3)) * _c(sc.light[:, Light.RGB])
    return _resize(out, H)


def _background_full(sc: Scene, H: int):
    dev = sc.landmarks.device
    xs = (torch.arange(H, device=dev, dtype=torch.float32) + 0.5) * (2.0 / H) - 1
    X, Y = xs.view(1, 1, 1, H), xs.view(1, 1, H, 1)
    bg = sc.background
    t = (X * _s(bg[:, Background.GRADIENT_X]) + Y * _s(bg[:, Background.GRADIENT_Y])).clamp(-1, 1) * 0.5 + 0.5
    out = _c(bg[:, Background.COLOUR_A]) * (1 - t) + _c(bg[:, Background.COLOUR_B]) * t
    out = out + _s(bg[:, Background.NOISE]) * _resize(sc.background_noise, H, "bicubic")
    for k in range(sc.clutter.shape[1]):
        cl = sc.clutter[:, k]
        e = (((X - _s(cl[:, Clutter.X])) / _s(cl[:, Clutter.RADIUS_X])) ** 2
             + ((Y - _s(cl[:, Clutter.Y])) / _s(cl[:, Clutter.RADIUS_Y])) ** 2)
        a = _ramp((e - 1) * 0.2, 2.0 / H) * _s(cl[:, Clutter.ALPHA])
        _lerp_(out, _c(cl[:, Clutter.RGB]), a)
    # shoulders / clothing, following the head's global placement
    scale, sx, sy = _placement(sc)
    e = ((X - _s(sx)) / _s(0.95 * scale)) ** 2 + ((Y - _s(sy + 1.32 * scale)) / _s(0.5 * scale)) ** 2
    _lerp_(out, _c(bg[:, Background.CLOTHING]), _ramp((e - 1) * 0.3, 2.0 / H))
    return out


def _composite(sc: Scene, stack, H: int, out=None):
    """The posed stack over the background: (image (N, 3, H, W), face region, occluder mask (N, 1, H, W) bool),
    written into ``out`` (three such tensors) when given."""
    img, face, occ = (None, None, None) if out is None else out
    img = torch.addcmul(stack[:, Layer.RGB], _background(sc, H), 1 - stack[:, Layer.ALPHA].clamp(0, 1), out=img)
    return img, torch.gt(stack[:, Layer.FACE], 0.5, out=face), torch.gt(stack[:, Layer.OCCLUDER], 0.5, out=occ)


# ---------------------------------------------------------------- 6. image-space occluders
def _image_occluders(sc: Scene, img, face, occ, H: int):
    """Random blocks and corrupted pixels, sized on each image's visible face; ``img`` and ``occ`` in place."""
    block = sc.occlusion == OCCLUSIONS.index("block")
    if bool(block.any()):
        idx = block.nonzero()[:, 0]
        bm, btex = _block(face[idx], sc.occlusion_param[idx], sc.seeds[idx], H)
        img[idx] = img[idx] * (1 - bm) + btex * bm
        occ[idx] = occ[idx] | (bm > 0.5)
    pixels = sc.occlusion == OCCLUSIONS.index("pixels")
    if bool(pixels.any()):
        idx = pixels.nonzero()[:, 0]
        hit, noise = _corrupted_pixels(face[idx], sc.occlusion_param[idx, PixelsParam.FRACTION], sc.seeds[idx], H)
        h = hit.float()                               # blended, not torch.where: that is slow on a random mask
        img[idx] = torch.addcmul(noise * h, img[idx], 1 - h)
        occ[idx] = occ[idx] | hit


def _corrupted_pixels(face, fraction, seeds, H: int):
    """Exactly round(fraction * face pixels) face pixels of each image are corrupted (and the same rate elsewhere):
    (hit mask (n, 1, H, W) bool, uniform noise colours (n, 3, H, W))."""
    u = _noise(seeds, (4, H, H), face.device, offset=17, uniform=True)
    fm = face.flatten(1)
    vals = torch.where(fm, u[:, 0].flatten(1), torch.full_like(fm, 2.0, dtype=u.dtype))
    k = (fraction * fm.sum(1)).round().long()
    thr = torch.full_like(k, -1.0, dtype=u.dtype)                  # the k-th smallest value (none when k = 0)
    for i, ki in enumerate(k.tolist()):
        if ki > 0:
            thr[i] = vals[i].kthvalue(ki).values
    return u[:, :1] <= _s(thr), u[:, 1:]


def _block(face, prm, seeds, H):
    """A rectangle covering a requested fraction of each face's pixels (see :class:`BlockParam`); returns
    (mask, texture)."""
    n = face.shape[0]
    dev = face.device
    f = face.float()[:, 0]
    integ = F.pad(f.cumsum(1).cumsum(2), (1, 0, 1, 0))            # (n, H+1, W+1)
    total = f.sum((1, 2))
    # centre inside the face bounding box, drawn from the ROW and COLUMN parameters in [0, 1]
    rows = f.sum(2) > 0
    cols = f.sum(1) > 0
    ar = torch.arange(H, device=dev, dtype=torch.float32)
    r0 = torch.where(rows, ar, torch.full_like(ar, H)).min(1).values
    r1 = torch.where(rows, ar, torch.full_like(ar, -1)).max(1).values
    c0 = torch.where(cols, ar, torch.full_like(ar, H)).min(1).values
    c1 = torch.where(cols, ar, torch.full_like(ar, -1)).max(1).values
    cy = r0 + (r1 - r0) * (0.25 + 0.5 * prm[:, BlockParam.ROW])
    cxx = c0 + (c1 - c0) * (0.25 + 0.5 * prm[:, BlockParam.COLUMN])
    aspect = 0.7 + 0.6 * prm[:, BlockParam.ASPECT]
    K = 96
    half = torch.linspace(0, 1.5 * H, K, device=dev)[None].expand(n, -1)     # half-height candidates
    hh, hw = half, half * aspect[:, None]
    y0 = (cy[:, None] - hh).round().clamp(0, H).long()
    y1 = (cy[:, None] + hh).round().clamp(0, H).long()
    x0 = (cxx[:, None] - hw).round().clamp(0, H).long()
    x1 = (cxx[:, None] + hw).round().clamp(0, H).long()
    flat = integ.reshape(n, -1)
    Wp = H + 1
    cnt = (flat.gather(1, y1 * Wp + x1) - flat.gather(1, y0 * Wp + x1) - flat.gather(1, y1 * Wp + x0)
           + flat.gather(1, y0 * Wp + x0))
    target = prm[:, BlockParam.FRACTION, None] * total[:, None]
    best = (cnt - target).abs().argmin(1, keepdim=True)
    Y0, Y1, X0, X1 = [t.gather(1, best)[:, 0] for t in (y0, y1, x0, x1)]
    ii = torch.arange(H, device=dev)
    m = ((ii[None, :, None] >= Y0[:, None, None]) & (ii[None, :, None] < Y1[:, None, None])
         & (ii[None, None, :] >= X0[:, None, None]) & (ii[None, None, :] < X1[:, None, None]))
    return m[:, None].float(), _block_texture(prm, seeds, H)


def _block_texture(prm, seeds, H):
    """An unrelated texture for the blocks: smooth colour noise with stripes."""
    ii = torch.arange(H, device=prm.device)
    g = _noise(seeds, (3, 6, 6), prm.device, offset=29)
    g = g.mean(1, keepdim=True) + 0.3 * g                                  # mostly luminance, a little colour
    rgb = prm[:, BlockParam.RGB].view(-1, 3, 1, 1)
    base = 0.25 + 0.5 * rgb.mean(1, keepdim=True) + 0.1 * rgb
    tex = (base + 0.18 * _resize(g, H, "bicubic")).clamp(0, 1)
    stripes = prm[:, BlockParam.STRIPES].view(-1, 1, 1, 1)
    return tex * (0.8 + 0.2 * torch.sin(ii.view(1, 1, H, 1) * 0.7 + ii.view(1, 1, 1, H) * 0.3 * stripes))


# ---------------------------------------------------------------- 8. ground truth
def project_landmarks(sc: Scene, depth: DepthModel, R, H: int):
    """Frontal landmarks -> posed image pixels (N, 68, 2)."""
    L = sc.landmarks
    z = depth(L[:, :, 0][:, None, None, :], L[:, :, 1][:, None, None, :])[:, 0, 0, :]
    piv = _pivot(depth)
    p = torch.stack([L[:, :, 0], L[:, :, 1], z], -1) - piv[:, None]
    q = torch.einsum("nij,npj->npi", R, p) + piv[:, None]
    scale, sx, sy = _placement(sc)
    x = q[..., 0] * scale[:, None] + sx[:, None]
    y = q[..., 1] * scale[:, None] + sy[:, None]
    return torch.stack([(x + 1) * H / 2 - 0.5, (y + 1) * H / 2 - 0.5], -1)


# ---------------------------------------------------------------- the render
#: Most images rendered together on the CPU: a larger batch only adds memory traffic (its full-resolution tensors
#: no longer stay in the CPU caches), a smaller one adds per-operation overhead.
CPU_CHUNK = 64


def render(sc: Scene, H: int, style: str = "cartoon") -> Rendered:
    """Render a scene at H x H pixels (``sc.layers`` holds the identity layers, see :func:`draw_identity`).

    On the CPU the images are rendered in nearly equal chunks of at most :data:`CPU_CHUNK`; an image's random pixel
    noise comes from its own seed, so chunking does not change it.
    """
    chunks = chunk_slices(sc.n, sc.landmarks.device)
    if len(chunks) <= 1:
        return _render(sc, H, style)
    # each chunk composites and degrades its images in place in its rows of the batch's output (no copy after the
    # pool; the new memory is first touched by the chunks, side by side)
    dev = sc.landmarks.device
    out = (torch.empty(sc.n, 3, H, H, device=dev), torch.empty(sc.n, 1, H, H, dtype=torch.bool, device=dev),
           torch.empty(sc.n, 1, H, H, dtype=torch.bool, device=dev))

    def one(c):
        dst = tuple(t[c] for t in out)
        r = _render(sc.select(c), H, style, out=dst)
        for t, got in zip(dst, (r.images, r.face, r.masks)):
            if got.data_ptr() != t.data_ptr():                  # not rendered in place after all
                t.copy_(got)
        return r

    parts = map_chunks(one, chunks)
    return Rendered(images=out[0], landmarks=torch.cat([r.landmarks for r in parts]), masks=out[2], face=out[1],
                    occluded_fraction=torch.cat([r.occluded_fraction for r in parts]))


_POOL: dict = {}


def map_chunks(fn, chunks: list) -> list:
    """``[fn(c) for c in chunks]``, with the chunks rendered side by side in ``torch.get_num_threads()`` Python
    threads when there are several of both (on the CPU; :func:`chunk_slices` gives one chunk on other devices).

    The renderer's many small tensor operations keep torch's intra-op threads mostly idle (about 1.25 of 2 cores
    busy when chunks run one after the other); while chunks run side by side torch gets one intra-op thread each,
    so the cores stay busy without oversubscription, and the thread count is restored afterwards. Every image is
    computed from its own numbers, so the result is the same as one after the other (checked bit for bit by
    ``tests/test_synth_parallel.py``). ``torch.set_num_threads`` is process-wide: a program that renders while
    other threads run torch work shares its cores with them for that time."""
    threads = torch.get_num_threads()
    if len(chunks) <= 1 or threads <= 1:
        return [fn(c) for c in chunks]
    from concurrent.futures import ThreadPoolExecutor

    workers = min(threads, len(chunks))
    if workers not in _POOL:
        _POOL[workers] = ThreadPoolExecutor(workers, thread_name_prefix="facelab-render")
    torch.set_num_threads(1)
    try:
        return list(_POOL[workers].map(fn, chunks))
    finally:
        torch.set_num_threads(threads)


def chunk_slices(n: int, device) -> list[slice]:
    """Nearly equal slices of at most :data:`CPU_CHUNK` items covering ``range(n)`` on the CPU; one slice elsewhere."""
    if n == 0:
        return []
    if torch.device(device).type != "cpu" or n <= CPU_CHUNK:
        return [slice(0, n)]
    step = math.ceil(n / math.ceil(n / CPU_CHUNK))
    return [slice(s, min(n, s + step)) for s in range(0, n, step)]


def _render(sc: Scene, H: int, style: str = "cartoon", out=None) -> Rendered:
    """Render all images of a scene in one batch: the numbered stages of the module docstring. ``out``: optional
    (images (N, 3, H, W), face (N, 1, H, W) bool, occluder mask (N, 1, H, W) bool) to render into."""
    # 1. identity layers (drawn once per identity), warped to each image's expression
    layer = _expression_layer(sc, H, style)
    # 2. per-image drawing on the frontal layer: AU shading, eyes, mouth, makeup, glasses, frontal occluders
    occ_mask = draw_expression(sc, layer, H, style)
    # 3. light
    depth = DepthModel(sc.landmarks, sc.face, sc.aus)
    R = _rotation(sc.pose)
    stack = _shade(sc, layer, occ_mask, depth, R, H, relief=PHOTO_RELIEF if style == "photo" else 1.0)
    # 4. pose
    stack = _pose(sc, stack, depth, R, H)
    # 5. background
    img, face, occ = _composite(sc, stack, H, out)
    # 6. image-space occluders
    _image_occluders(sc, img, face, occ, H)
    # 7. camera
    img = degrade(img.clamp_(0, 1), sc.degrade, sc.seeds)
    # 8. ground truth: landmarks in the image, occluded share of the visible face
    lm = project_landmarks(sc, depth, R, H)
    fa = face.float().sum((1, 2, 3)).clamp_min(1)
    frac = (face & occ).float().sum((1, 2, 3)) / fa
    return Rendered(images=img, landmarks=lm, masks=occ, face=face, occluded_fraction=frac)


# ---------------------------------------------------------------- 7. camera degradations
_AXIS: dict = {}
_AXIS_BYTES = 64 * 2**20          # memory allowed for cached axis operators


def _axis_matrix(W: int, level: float, sigma: float, device) -> torch.Tensor:
    """(W, W) linear operator along one image axis (cached): resolution loss (area down-sampling to ``level * W``
    pixels, bilinear up-sampling back) when ``level`` < 1, then a Gaussian blur of ``sigma`` pixels with replicated
    borders when ``sigma`` >= 0.25. Rows act on row vectors: ``x @ M``.

    The blur is the kernel of :func:`facelab.core.images.gaussian_blur` (``truncate=2.5``, ``padding="replicate"``)
    with each image's own radius, fused with the resolution loss into one cached matrix per (level, sigma); the
    general-purpose blur is the core's (this module's former ``blur`` was a copy of it)."""
    key = (W, level, sigma, str(device))
    if key not in _AXIS:
        eye = torch.eye(W)
        M = eye
        if level < 0.999:
            h = max(8, int(round(W * level)))
            down = F.interpolate(eye.view(W, 1, 1, W), size=(1, h), mode="area")
            M = F.interpolate(down, size=(1, W), mode="bilinear", align_corners=False).view(W, W)
        if sigma >= 0.25:
            r = int(math.ceil(2.5 * sigma))
            off = torch.arange(-r, r + 1)
            w = torch.exp(-0.5 * (off.float() / sigma) ** 2)
            src = (torch.arange(W)[:, None] + off[None]).clamp(0, W - 1)        # (W, 2r+1) source of each tap
            B = torch.zeros(W, W)
            B.index_put_((src, torch.arange(W)[:, None].expand(W, 2 * r + 1)), (w / w.sum()).expand(W, -1),
                         accumulate=True)
            M = M @ B
        M = M.to(device)
        if len(_AXIS) * W * W * 4 >= _AXIS_BYTES:
            _AXIS.clear()
        _AXIS[key] = M
        return M                    # not _AXIS[key]: another rendering thread may clear the cache meanwhile
    return _AXIS[key]


def _axis_operator(res, sigma, W, device):
    """Per-image operators along one image axis for resolution factors ``res`` and blur sigmas ``sigma`` (pixels),
    quantised to steps of 0.05 and 0.1 (:func:`_axis_matrix`). Returns (indices of the images that need one,
    their operators (n, W, W)), or None when no image needs one."""
    level = ((res * 20).round() / 20).tolist()
    sig = ((sigma * 10).round() / 10).tolist()
    idx = [i for i, (lv, sg) in enumerate(zip(level, sig)) if lv < 0.999 or sg >= 0.25]
    if not idx:
        return None
    M = torch.stack([_axis_matrix(W, level[i], sig[i], device) for i in idx])
    return torch.tensor(idx, device=device), M


def _apply_axis(img, M):
    """Apply per-image axis operators M (N, W, W) along both image axes."""
    N, C, H, W = img.shape
    y = (img.reshape(N, C * H, W) @ M).view(N, C, H, W)
    return (y.transpose(2, 3).reshape(N, C * W, H) @ M).view(N, C, W, H).transpose(2, 3)


_QY = torch.tensor([
    [16, 11, 10, 16, 24, 40, 51, 61], [12, 12, 14, 19, 26, 58, 60, 55], [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62], [18, 22, 37, 56, 68, 109, 103, 77], [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101], [72, 92, 95, 98, 112, 100, 103, 99]], dtype=torch.float32)
_QC = torch.full((8, 8), 99.0)
_QC[:4, :4] = torch.tensor([[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]],
                           dtype=torch.float32)
_JPEG: dict = {}


def _jpeg_operators(device):
    """JPEG's 8-point DCT matrix D (8, 8) and the RGB [0, 1] -> YCbCr [0, 255] colour matrix and its inverse, cached."""
    key = str(device)
    if key not in _JPEG:
        k = torch.arange(8, dtype=torch.float64)
        D = torch.cos((2 * k[None] + 1) * k[:, None] * math.pi / 16) * math.sqrt(2 / 8)
        D[0] /= math.sqrt(2)
        ycc = 255 * torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
                                 dtype=torch.float64)
        rgb = torch.tensor([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]],
                           dtype=torch.float64) / 255
        _JPEG[key] = tuple(t.float().to(device) for t in (D, ycc, rgb))
    return _JPEG[key]


def jpeg(img, quality):
    """Differentiable-style JPEG round trip in torch: YCbCr, 8x8 DCT, per-image quality quantisation (1..100).

    The DCT of the 8x8 blocks is applied along the rows and the columns inside the blocks (matrix products on views
    of the image, no block reordering). Images with quality >= 100 pass unchanged.
    """
    N, C, H, W = img.shape
    if float(quality.min()) >= 100:
        return img
    D, to_ycc, to_rgb = _jpeg_operators(img.device)
    ph, pw = (-H) % 8, (-W) % 8
    x = F.pad(img, (0, pw, 0, ph), mode="replicate") if ph or pw else img
    Hb, Wb = (H + ph) // 8, (W + pw) // 8
    y = (to_ycc @ x.reshape(N, 3, -1)).view(N, 3, Hb, 8, -1)
    y[:, 0] -= 128                                                  # the luma level shift
    coef = (D @ y).view(N, 3, Hb, 8, Wb, 8) @ D.T                   # (block row, u, block column, v)
    q = quality.clamp(1, 100)
    s = torch.where(q < 50, 5000 / q, 200 - 2 * q)
    qy = ((_QY.to(img.device)[None] * s[:, None, None] + 50) / 100).floor().clamp_min(1)
    qc = ((_QC.to(img.device)[None] * s[:, None, None] + 50) / 100).floor().clamp_min(1)
    Q = torch.stack([qy, qc, qc], 1).view(N, 3, 1, 8, 1, 8).expand_as(coef).contiguous()   # (faster than broadcast)
    coef = coef.div_(Q).round_().mul_(Q)
    rec = D.T @ (coef @ D).view(N, 3, Hb, 8, -1)
    rec[:, 0] += 128
    out = (to_rgb @ rec.view(N, 3, -1)).view(N, 3, Hb * 8, Wb * 8)
    out = out[:, :, :H, :W].clamp(0, 1)
    keep = (quality >= 100).view(-1, 1, 1, 1)
    return torch.where(keep, img, out) if bool(keep.any()) else out


def degrade(img, prm, seeds):
    """Resolution loss, blur, sensor noise and JPEG with per-image parameters prm (N, 4) (:class:`Degrade`):
    resolution factor, blur sigma (pixels at 112 px), noise sigma, JPEG quality (100 = none); image i's noise comes
    from seeds[i].
    ``img`` (N, C, H, W) in [0, 1] is degraded in place and returned."""
    N, C, H, W = img.shape
    op = _axis_operator(prm[:, Degrade.RESOLUTION].cpu(), prm[:, Degrade.BLUR].cpu() * H / 112, W, img.device)
    if op is not None:
        idx, M = op
        img[idx] = _apply_axis(img[idx], M)
    noisy = (prm[:, Degrade.NOISE] > 0).nonzero()[:, 0]
    if len(noisy):
        noise = _noise(seeds[noisy], (C, H, W), img.device, offset=71)
        img.index_add_(0, noisy, noise * _s(prm[noisy, Degrade.NOISE]))
    img.clamp_(0, 1)
    lossy = (prm[:, Degrade.JPEG] < 100).nonzero()[:, 0]
    if len(lossy):
        img[lossy] = jpeg(img[lossy], prm[lossy, Degrade.JPEG])
    return img
