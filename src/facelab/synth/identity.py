"""Per-identity parameters: geometry on the 68-landmark layout, skin, eyes, brows, hair, glasses, beard, texture.

Identity ``k`` of a world seeded with ``seed`` is drawn from its own generator, so the same person comes back in every
batch, on every device, whatever the batch composition.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from facelab.synth.fields import HairStyle, Texture
from facelab.synth.landmarks import BROWS, EYES, LIPS_OUTER, NOSE_BRIDGE, NOSE_TIP, mean_shape, points, span
from facelab.synth.render import _resize

#: Named colours used for hair and eyes, in RGB [0, 1].
HAIR_COLOURS = {
    "black": (0.06, 0.05, 0.05), "dark brown": (0.18, 0.11, 0.07), "brown": (0.33, 0.21, 0.12),
    "light brown": (0.52, 0.37, 0.22), "blond": (0.80, 0.66, 0.42), "red": (0.55, 0.22, 0.10),
    "grey": (0.60, 0.59, 0.58), "white": (0.86, 0.85, 0.83),
}
EYE_COLOURS = {
    "dark brown": (0.20, 0.12, 0.07), "brown": (0.36, 0.22, 0.10), "hazel": (0.45, 0.38, 0.18),
    "green": (0.27, 0.45, 0.28), "blue": (0.30, 0.47, 0.70), "grey": (0.48, 0.52, 0.55),
}
HAIR_STYLES = HairStyle.NAMES

TEXTURE_RES = 96
_N_GEOM = 20
# landmark runs that the identity geometry moves together
_LOWER_NOSE = slice(NOSE_TIP, span("nostrils").stop)                  # nose tip and nostrils (30..35)
_MID_BRIDGE = slice(int(NOSE_BRIDGE[1]), int(NOSE_BRIDGE[2]) + 1)      # middle of the nose bridge (28, 29)
_UPPER_LIP = slice(int(LIPS_OUTER[1]), int(LIPS_OUTER[5]) + 1)         # outer upper lip between the corners (49..53)
_LOWER_LIP = slice(int(LIPS_OUTER[7]), int(LIPS_OUTER[11]) + 1)        # outer lower lip between the corners (55..59)


@dataclass
class Identity:
    """Per-identity parameters, each a tensor with a leading identity dimension."""

    landmarks: torch.Tensor      # (n, 68, 2) neutral frontal landmarks
    skin: torch.Tensor           # (n, 3) skin RGB
    lip: torch.Tensor            # (n, 3) natural lip RGB
    hair: torch.Tensor           # (n, 3) hair RGB
    eye: torch.Tensor            # (n, 3) iris RGB
    hair_style: torch.Tensor     # (n,) index into HAIR_STYLES
    hair_shape: torch.Tensor     # (n, 4) fields.HairShape: volume, hairline height, fringe depth, length
    brow: torch.Tensor           # (n, 2) fields.Brow: thickness, darkness
    face: torch.Tensor           # (n, 6) fields.Face: forehead height, nose depth, cheek fullness, ear size, neck
    #                              width, age
    beard: torch.Tensor          # (n, 2) fields.Beard: style (0 none, 1 stubble, 2 full, 3 goatee, 4 moustache),
    #                              density
    glasses: torch.Tensor        # (n, 4) fields.Glasses: has glasses, shape (0 round .. 1 square), frame darkness, size
    texture: torch.Tensor        # (n, 3, R, R) fields.Texture: blotches, freckles, moles in the frontal frame
    hair_name: list
    eye_name: list
    appearance: torch.Tensor | None = None   # (n, K) appearance-model coefficients (style "photo"; else None)

    def index(self, idx) -> "Identity":
        """The identities ``idx`` (an index tensor, or a slice: views of this one's tensors)."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                out[f.name] = None
                continue
            out[f.name] = v[idx] if isinstance(v, torch.Tensor) or isinstance(idx, slice) else [v[int(i)] for i in idx]
        return Identity(**out)

    def to(self, device) -> "Identity":
        return Identity(**{f.name: (getattr(self, f.name).to(device) if isinstance(getattr(self, f.name), torch.Tensor)
                                    else getattr(self, f.name)) for f in fields(self)})


def _geometry(z: torch.Tensor, strength: float) -> torch.Tensor:
    """Identity landmark shapes (n, 68, 2) from standard-normal coefficients ``z`` (n, >= _N_GEOM)."""
    m = mean_shape()
    s = strength
    z = z.T[:, :, None]                        # z[k]: (n, 1), one coefficient per identity
    x, y = m[:, 0].repeat(z.shape[1], 1), m[:, 1].repeat(z.shape[1], 1)
    eye_y = y[0, span("eyes")].mean()
    jaw = torch.tensor(points("jaw"))
    # overall face width / length and lower-face length
    x = x * (1 + 0.055 * s * z[0])
    below = y > eye_y
    y = torch.where(below, eye_y + (y - eye_y) * (1 + 0.07 * s * z[1]), y)
    # jaw width (lower jaw more), chin length and width
    low = torch.clamp((y[:, jaw] - eye_y) / 0.8, 0, 1)
    x[:, jaw] = x[:, jaw] * (1 + 0.09 * s * z[2] * low)
    chin = jaw[5:12]                                                   # the jaw points round the chin
    y[:, chin] = y[:, chin] + 0.035 * s * z[3] * torch.tensor([0.3, 0.6, 0.9, 1.0, 0.9, 0.6, 0.3])
    x[:, chin] = x[:, chin] * (1 + 0.08 * s * z[4])
    # eyes: size, spacing, height, tilt
    for eye, sign in zip(EYES, (-1.0, 1.0)):
        idx = torch.arange(eye.group.start, eye.group.stop)
        cx, cy = x[:, idx].mean(1, keepdim=True), y[:, idx].mean(1, keepdim=True)
        k = 1 + 0.10 * s * z[5]
        x[:, idx] = cx + (x[:, idx] - cx) * k
        y[:, idx] = cy + (y[:, idx] - cy) * k * (1 + 0.10 * s * z[6])
        x[:, idx] = x[:, idx] + sign * 0.028 * s * z[7]
        y[:, idx] = y[:, idx] + 0.022 * s * z[8]
        y[:, eye.outer] = y[:, eye.outer] - 0.015 * s * z[9, :, 0]
    # brows: height, arch, slant
    for idx, sign in ((torch.tensor(BROWS[0]), -1.0), (torch.tensor(BROWS[1]), 1.0)):
        y[:, idx] = y[:, idx] - 0.03 * s * z[10]
        mid = idx[1:4]
        y[:, mid] = y[:, mid] - 0.018 * s * z[11]
        t = torch.linspace(1, 0, 5) if sign < 0 else torch.linspace(0, 1, 5)   # 1 at the outer end
        y[:, idx] = y[:, idx] + 0.02 * s * z[12] * t
    # nose width and length
    nose = torch.tensor(points("nostrils"))
    x[:, nose] = x[:, nose] * (1 + 0.16 * s * z[13])
    y[:, _LOWER_NOSE] = y[:, _LOWER_NOSE] + 0.03 * s * z[14]
    y[:, _MID_BRIDGE] = y[:, _MID_BRIDGE] + 0.015 * s * z[14]
    # mouth width, lip thickness, vertical position
    mouth = span("mouth")
    x[:, mouth] = x[:, mouth] * (1 + 0.10 * s * z[15])
    y[:, _UPPER_LIP] = y[:, _UPPER_LIP] - 0.012 * s * z[16]
    y[:, _LOWER_LIP] = y[:, _LOWER_LIP] + 0.016 * s * z[17]
    y[:, mouth] = y[:, mouth] + 0.022 * s * z[18]
    # a small smooth asymmetry
    x = x + 0.008 * s * z[19] * (y + 0.2)
    return torch.stack([x, y], dim=2)


def _put_spots(texture: torch.Tensor, channel: int, who: list, counts: list, pos: torch.Tensor, vals) -> None:
    """Write spots into channel ``channel`` of ``texture`` (n, 3, R, R) in one indexed write: ``counts[i]`` spots of
    identity ``who[i]`` each, at ``pos`` (sum(counts), 2) as x, y, of values ``vals`` (a tensor, or a number). Where an
    identity has a pixel twice the later value stays, as when each identity's spots were written on their own."""
    R = texture.shape[-1]
    owner = torch.repeat_interleave(torch.tensor(who) * texture.shape[1] + channel, torch.tensor(counts))
    flat = (owner * R + pos[:, 1]) * R + pos[:, 0]
    uniq, inv = torch.unique(flat, return_inverse=True)
    if isinstance(vals, torch.Tensor):
        last = torch.zeros(len(uniq), dtype=torch.long).scatter_reduce_(0, inv, torch.arange(len(flat)), "amax")
        vals = vals[last]
    texture.view(-1)[uniq] = vals


_SKIN_LIGHT, _SKIN_DEEP = torch.tensor([0.96, 0.80, 0.70]), torch.tensor([0.34, 0.21, 0.14])


STYLES = ("cartoon", "photo")
#: style "photo": the world's own shape factors are this much wider (chosen on world seed 101 with dlib and SFace)
PHOTO_SPREAD = 1.5


def make_identities(seed: int, ids, strength: float = 1.0, device=None, style: str = "cartoon") -> Identity:
    """Draw the identities ``ids`` (iterable of non-negative ints) of a world with seed ``seed``.

    ``style="photo"`` adds each identity's coefficients of the real-photo appearance model
    (:mod:`facelab.synth.appearance`), drawn from a second generator of that identity, so that every other
    parameter is the same person as in the default ``"cartoon"`` style.

    Identity ``k``'s random numbers come from its own generator (drawn in a fixed order); everything computed from
    them is batched, on the CPU (the same numbers on every machine); ``device`` moves the result there.
    """
    ids = [int(k) for k in ids]
    n, r = len(ids), TEXTURE_RES
    gens = [torch.Generator().manual_seed((int(seed) * 1_000_003 + k * 7919 + 12345) % (2**63 - 1)) for k in ids]
    z, u, nrm = torch.empty(n, _N_GEOM), torch.empty(n, 32), torch.empty(n, 16)
    for g, zj, uj, nj in zip(gens, z.unbind(0), u.unbind(0), nrm.unbind(0)):    # the rows, as views
        torch.randn(_N_GEOM, generator=g, out=zj)
        torch.rand(32, generator=g, out=uj)
        torch.randn(16, generator=g, out=nj)
    tone = u[:, 0]
    # hair colour depends a little on tone (darker skin -> darker hair more likely), eye colour too
    one = torch.ones_like(tone)
    p_hair = torch.tensor([0.28, 0.24, 0.16, 0.10, 0.09, 0.05, 0.05, 0.03]) * torch.stack(
        [1 + tone, 1 + tone, one, 1 - 0.8 * tone, 1 - 0.9 * tone, 1 - 0.8 * tone, one, one], 1)
    p_eye = torch.tensor([0.35, 0.25, 0.12, 0.1, 0.12, 0.06]) * torch.stack(
        [1 + 2 * tone, 1 + tone, one, 1 - 0.9 * tone, 1 - 0.9 * tone, 1 - 0.9 * tone], 1)
    p_style = torch.tensor([0.34, 0.22, 0.06, 0.14, 0.14, 0.10])
    p_beard = torch.tensor([0.4, 0.3, 0.15, 0.15])
    bearded = ((u[:, 13] > 0.55) & (u[:, 14] < 0.55)).tolist()
    # texture: low-frequency blotches, freckles (a share of the pixels that depends on the identity and the tone),
    # moles
    n_freckles = (u[:, 20] ** 3 * (0.06 * r * r) * (1 - tone)).round().long().tolist()
    n_moles = (u[:, 21] * 4).long().tolist()
    # the categorical draws: torch.multinomial(p, 1, generator=g) draws q ~ Exp(1) (one number per category) from g
    # and returns argmax(p / q) (checked by tests/test_synth_identity_draws.py), so each identity's generator draws the
    # same numbers here and the divisions and argmaxes run batched after the loop
    q_hair, q_eye = torch.empty(n, len(HAIR_COLOURS)), torch.empty(n, len(EYE_COLOURS))
    q_style, q_beard = torch.empty(n, len(p_style)), torch.empty(n, len(p_beard))
    texture = torch.zeros(n, 3, r, r)             # blotches, freckles, moles in the frontal frame
    blot_noise = torch.empty(n, 1, 10, 10)
    # freckles and moles: the uniform numbers of each identity's positions (and freckle strengths), in draw order
    freckles, moles = ([], [], [], []), ([], [], [])          # (numbers (k, 2), [strengths (k,)], identity, k)
    for j, (g, qh, qe, qs, qb, bn) in enumerate(zip(gens, q_hair.unbind(0), q_eye.unbind(0), q_style.unbind(0),
                                                     q_beard.unbind(0), blot_noise.unbind(0))):
        qh.exponential_(generator=g)
        qe.exponential_(generator=g)
        qs.exponential_(generator=g)
        if bearded[j]:
            qb.exponential_(generator=g)
        torch.randn(1, 10, 10, generator=g, out=bn)
        if n_freckles[j]:
            freckles[0].append(torch.rand(n_freckles[j], 2, generator=g))
            freckles[1].append(torch.rand(n_freckles[j], generator=g))
            freckles[2].append(j)
            freckles[3].append(n_freckles[j])
        if n_moles[j]:
            moles[0].append(torch.rand(n_moles[j], 2, generator=g))
            moles[1].append(j)
            moles[2].append(n_moles[j])
    hair_i = torch.argmax(p_hair / p_hair.sum(1, keepdim=True) / q_hair, 1).tolist()
    eye_i = torch.argmax(p_eye / p_eye.sum(1, keepdim=True) / q_eye, 1).tolist()
    style_i = torch.argmax(p_style / q_style, 1).tolist()
    beard_draw = torch.argmax(p_beard / q_beard, 1).tolist()
    beard_style = [1 + beard_draw[j] if bearded[j] else 0 for j in range(n)]
    if freckles[0]:
        _put_spots(texture, Texture.FRECKLES, freckles[2], freckles[3], (torch.cat(freckles[0]) * r).long(),
                   0.4 + 0.6 * torch.cat(freckles[1]))
    if moles[0]:
        _put_spots(texture, Texture.MOLES, moles[1], moles[2], ((torch.cat(moles[0]) * 0.55 + 0.22) * r).long(), 1.0)
    texture[:, Texture.BLOTCHES] = _resize(blot_noise, r, "bicubic")[:, 0]
    # skin: a tone continuum from light to deep, with a small hue spread
    skin = _SKIN_LIGHT + (_SKIN_DEEP - _SKIN_LIGHT) * tone[:, None]
    skin = (skin * (1 + 0.04 * nrm[:, 0:3]) + torch.tensor([0.02, 0.0, -0.02]) * nrm[:, 3:4]).clamp(0.05, 1.0)
    lip = (skin * torch.tensor([0.80, 0.52, 0.55]) + torch.tensor([0.08, 0.0, 0.02])).clamp(0, 1)
    hair_keys, eye_keys = list(HAIR_COLOURS), list(EYE_COLOURS)
    hair = (torch.tensor(list(HAIR_COLOURS.values()))[hair_i] * (1 + 0.12 * nrm[:, 4:5])).clamp(0.02, 1)
    eye = (torch.tensor(list(EYE_COLOURS.values()))[eye_i] * (1 + 0.1 * nrm[:, 5:6])).clamp(0, 1)
    face = torch.stack([0.85 + 0.3 * u[:, 8], 0.8 + 0.4 * u[:, 9], u[:, 10], 0.85 + 0.3 * u[:, 11],
                        0.8 + 0.3 * u[:, 12], u[:, 7]], 1)                  # the columns of fields.Face
    appearance = None
    if style == "photo":
        from facelab.synth.appearance import N_COEF, N_EXTRA, shape_offsets

        from facelab.synth.head import N_HEAD, photo_head

        coef, extra = torch.empty(n, N_COEF), torch.empty(n, N_EXTRA)
        zs, zh = torch.empty(n, 16), torch.empty(n, N_HEAD)
        for k, cj, zsj, zhj, ej in zip(ids, coef.unbind(0), zs.unbind(0), zh.unbind(0), extra.unbind(0)):
            g = torch.Generator().manual_seed((int(seed) * 1_000_003 + k * 7919 + 777_767) % (2**63 - 1))
            torch.rand(N_COEF, generator=g, out=cj)
            torch.randn(16, generator=g, out=zsj)
            torch.randn(N_HEAD, generator=g, out=zhj)               # drawn later: the numbers above are unchanged
            torch.rand(N_EXTRA, generator=g, out=ej)
        appearance = torch.cat([coef, extra], 1)
        photo_shape = shape_offsets(zs)
        head_shape, face = photo_head(zh, face, strength)           # facelab.synth.head: head and feature modes
    elif style not in STYLES:
        raise ValueError(f"unknown style {style!r}: expected one of {', '.join(STYLES)}")
    landmarks = _geometry(z, strength)
    if style == "photo":
        landmarks = _geometry(z, strength * PHOTO_SPREAD) + strength * photo_shape + head_shape
    ident = Identity(landmarks=landmarks, skin=skin, lip=lip, hair=hair, eye=eye,
                     hair_style=torch.tensor(style_i), hair_shape=u[:, 1:5].clone(),
                     brow=torch.stack([0.7 + 0.6 * u[:, 5], 0.5 + 0.5 * u[:, 6]], 1), face=face,
                     beard=torch.stack([torch.tensor(beard_style, dtype=torch.float32), 0.5 + 0.5 * u[:, 15]], 1),
                     glasses=torch.stack([(u[:, 16] < 0.22).float(), u[:, 17], 0.3 + 0.7 * u[:, 18],
                                          0.9 + 0.25 * u[:, 19]], 1),
                     texture=texture, hair_name=[hair_keys[i] for i in hair_i], eye_name=[eye_keys[i] for i in eye_i],
                     appearance=appearance)
    return ident if device is None else ident.to(device)
