"""Per-identity parameters: geometry on the 68-landmark layout, skin, eyes, brows, hair, glasses, beard, texture.

Identity ``k`` of a world seeded with ``seed`` is drawn from its own generator, so the same person comes back in every
batch, on every device, whatever the batch composition.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from facelab.synth.landmarks import mean_shape

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
HAIR_STYLES = ("short", "long", "bald", "fringe", "bob", "receding")

TEXTURE_RES = 96
_N_GEOM = 20


@dataclass
class Identity:
    """Per-identity parameters, each a tensor with a leading identity dimension."""

    landmarks: torch.Tensor      # (n, 68, 2) neutral frontal landmarks
    skin: torch.Tensor           # (n, 3) skin RGB
    lip: torch.Tensor            # (n, 3) natural lip RGB
    hair: torch.Tensor           # (n, 3) hair RGB
    eye: torch.Tensor            # (n, 3) iris RGB
    hair_style: torch.Tensor     # (n,) index into HAIR_STYLES
    hair_shape: torch.Tensor     # (n, 4) volume, hairline height, fringe depth, length
    brow: torch.Tensor           # (n, 2) thickness, darkness
    face: torch.Tensor           # (n, 6) forehead height, nose depth, cheek fullness, ear size, neck width, age
    beard: torch.Tensor          # (n, 2) style (0 none, 1 stubble, 2 full, 3 goatee, 4 moustache), density
    glasses: torch.Tensor        # (n, 4) has glasses, shape (0 round .. 1 square), frame darkness, size
    texture: torch.Tensor        # (n, 3, R, R) blotches, freckles, moles in the frontal frame
    hair_name: list
    eye_name: list

    def index(self, idx: torch.Tensor) -> "Identity":
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v[idx] if isinstance(v, torch.Tensor) else [v[int(i)] for i in idx]
        return Identity(**out)

    def to(self, device) -> "Identity":
        return Identity(**{f.name: (getattr(self, f.name).to(device) if isinstance(getattr(self, f.name), torch.Tensor)
                                    else getattr(self, f.name)) for f in fields(self)})


def _geometry(z: torch.Tensor, strength: float) -> torch.Tensor:
    """Identity landmark shape (68, 2) from standard-normal coefficients ``z`` (>= _N_GEOM,)."""
    m = mean_shape().clone()
    s = strength
    x, y = m[:, 0].clone(), m[:, 1].clone()
    eye_y = y[36:48].mean()
    jaw = torch.arange(0, 17)
    # overall face width / length and lower-face length
    x = x * (1 + 0.055 * s * z[0])
    below = y > eye_y
    y = torch.where(below, eye_y + (y - eye_y) * (1 + 0.07 * s * z[1]), y)
    # jaw width (lower jaw more), chin length and width
    low = torch.clamp((y[jaw] - eye_y) / 0.8, 0, 1)
    x[jaw] = x[jaw] * (1 + 0.09 * s * z[2] * low)
    chin = torch.tensor([5, 6, 7, 8, 9, 10, 11])
    y[chin] = y[chin] + 0.035 * s * z[3] * torch.tensor([0.3, 0.6, 0.9, 1.0, 0.9, 0.6, 0.3])
    x[chin] = x[chin] * (1 + 0.08 * s * z[4])
    # eyes: size, spacing, height, tilt
    for idx, sign in ((torch.arange(36, 42), -1.0), (torch.arange(42, 48), 1.0)):
        c = torch.stack([x[idx].mean(), y[idx].mean()])
        k = 1 + 0.10 * s * z[5]
        x[idx] = c[0] + (x[idx] - c[0]) * k
        y[idx] = c[1] + (y[idx] - c[1]) * k * (1 + 0.10 * s * z[6])
        x[idx] = x[idx] + sign * 0.028 * s * z[7]
        y[idx] = y[idx] + 0.022 * s * z[8]
        outer = 36 if sign < 0 else 45
        y[outer] = y[outer] - 0.015 * s * z[9]
    # brows: height, arch, slant
    for idx, sign in ((torch.arange(17, 22), -1.0), (torch.arange(22, 27), 1.0)):
        y[idx] = y[idx] - 0.03 * s * z[10]
        mid = idx[1:4]
        y[mid] = y[mid] - 0.018 * s * z[11]
        t = torch.linspace(1, 0, 5) if sign < 0 else torch.linspace(0, 1, 5)   # 1 at the outer end
        y[idx] = y[idx] + 0.02 * s * z[12] * t
    # nose width and length
    nose = torch.arange(31, 36)
    x[nose] = x[nose] * (1 + 0.16 * s * z[13])
    y[torch.arange(30, 36)] = y[torch.arange(30, 36)] + 0.03 * s * z[14]
    y[torch.tensor([28, 29])] = y[torch.tensor([28, 29])] + 0.015 * s * z[14]
    # mouth width, lip thickness, vertical position
    lips = torch.arange(48, 68)
    x[lips] = x[lips] * (1 + 0.10 * s * z[15])
    y[torch.arange(49, 54)] = y[torch.arange(49, 54)] - 0.012 * s * z[16]
    y[torch.arange(55, 60)] = y[torch.arange(55, 60)] + 0.016 * s * z[17]
    y[lips] = y[lips] + 0.022 * s * z[18]
    out = torch.stack([x, y], dim=1)
    # a small smooth asymmetry
    out[:, 0] = out[:, 0] + 0.008 * s * z[19] * (out[:, 1] + 0.2)
    return out


def make_identities(seed: int, ids, strength: float = 1.0) -> Identity:
    """Draw the identities ``ids`` (iterable of non-negative ints) of a world with seed ``seed`` (on the CPU)."""
    rows = []
    hair_names, eye_names = [], []
    hair_keys, eye_keys = list(HAIR_COLOURS), list(EYE_COLOURS)
    hair_rgb = torch.tensor(list(HAIR_COLOURS.values()))
    eye_rgb = torch.tensor(list(EYE_COLOURS.values()))
    for k in ids:
        g = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(k) * 7919 + 12345) % (2**63 - 1))
        z = torch.randn(_N_GEOM, generator=g)
        u = torch.rand(32, generator=g)
        n = torch.randn(16, generator=g)
        lm = _geometry(z, strength)
        # skin: a tone continuum from light to deep, with a small hue spread
        tone = u[0]
        light = torch.tensor([0.96, 0.80, 0.70])
        deep = torch.tensor([0.34, 0.21, 0.14])
        skin = light + (deep - light) * tone
        skin = skin * (1 + 0.04 * n[0:3]) + torch.tensor([0.02, 0.0, -0.02]) * n[3]
        skin = skin.clamp(0.05, 1.0)
        lip = (skin * torch.tensor([0.80, 0.52, 0.55]) + torch.tensor([0.08, 0.0, 0.02])).clamp(0, 1)
        # hair colour depends a little on tone (darker skin -> darker hair more likely)
        p_h = torch.tensor([0.28, 0.24, 0.16, 0.10, 0.09, 0.05, 0.05, 0.03])
        p_h = p_h * torch.tensor([1 + tone, 1 + tone, 1, 1 - 0.8 * tone, 1 - 0.9 * tone, 1 - 0.8 * tone, 1, 1])
        hi = int(torch.multinomial(p_h / p_h.sum(), 1, generator=g))
        hair = (hair_rgb[hi] * (1 + 0.12 * n[4])).clamp(0.02, 1)
        p_e = torch.tensor([0.35, 0.25, 0.12, 0.1, 0.12, 0.06]) * torch.tensor(
            [1 + 2 * tone, 1 + tone, 1, 1 - 0.9 * tone, 1 - 0.9 * tone, 1 - 0.9 * tone])
        ei = int(torch.multinomial(p_e / p_e.sum(), 1, generator=g))
        eye = (eye_rgb[ei] * (1 + 0.1 * n[5])).clamp(0, 1)
        style = int(torch.multinomial(torch.tensor([0.34, 0.22, 0.06, 0.14, 0.14, 0.10]), 1, generator=g))
        hair_shape = torch.stack([u[1], u[2], u[3], u[4]])
        brow = torch.stack([0.7 + 0.6 * u[5], 0.5 + 0.5 * u[6]])
        age = u[7]
        face = torch.stack([0.85 + 0.3 * u[8], 0.8 + 0.4 * u[9], u[10], 0.85 + 0.3 * u[11], 0.8 + 0.3 * u[12], age])
        masculine = u[13]
        beard_style = 0
        if masculine > 0.55 and u[14] < 0.55:
            beard_style = 1 + int(torch.multinomial(torch.tensor([0.4, 0.3, 0.15, 0.15]), 1, generator=g))
        beard = torch.tensor([float(beard_style), 0.5 + 0.5 * float(u[15])])
        glasses = torch.stack([(u[16] < 0.22).float(), u[17], 0.3 + 0.7 * u[18], 0.9 + 0.25 * u[19]])
        # texture: low-frequency blotches, freckles (density by identity), moles
        r = TEXTURE_RES
        blot = torch.nn.functional.interpolate(torch.randn(1, 1, 10, 10, generator=g), size=(r, r), mode="bicubic",
                                               align_corners=False)[0, 0]
        fre_density = float(u[20]) ** 3 * 0.06 * (1 - float(tone))
        freckles = (torch.rand(r, r, generator=g) < fre_density).float() * (0.4 + 0.6 * torch.rand(r, r, generator=g))
        moles = torch.zeros(r, r)
        n_moles = int(u[21] * 4)
        if n_moles:
            pos = (torch.rand(n_moles, 2, generator=g) * 0.55 + 0.22) * r
            for p in pos:
                moles[int(p[1]), int(p[0])] = 1.0
        texture = torch.stack([blot, freckles, moles])
        rows.append(dict(landmarks=lm, skin=skin, lip=lip, hair=hair, eye=eye, hair_style=torch.tensor(style),
                         hair_shape=hair_shape, brow=brow, face=face, beard=beard, glasses=glasses, texture=texture))
        hair_names.append(hair_keys[hi])
        eye_names.append(eye_keys[ei])
    stacked = {key: torch.stack([r[key] for r in rows]) for key in rows[0]}
    return Identity(**stacked, hair_name=hair_names, eye_name=eye_names)
