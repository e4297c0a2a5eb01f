"""make_identities' batched categorical draws and texture spots give the numbers of the former per-identity loop.

``make_identities`` used to call ``torch.multinomial(p, 1, generator=g)`` per identity and write each identity's
freckles and moles on their own; it now draws the same Exp(1) numbers from each identity's generator (what
``torch.multinomial`` draws for one sample) and does the divisions, argmaxes and writes batched. The reference below
is the former loop, replayed on the same generators.
"""

import pytest
import torch

from facelab.synth.fields import Texture
from facelab.synth.identity import EYE_COLOURS, HAIR_COLOURS, HAIR_STYLES, TEXTURE_RES, _N_GEOM, make_identities


def test_multinomial_one_sample_is_argmax_over_exponential_draws():
    for s in range(300):
        p = torch.rand(8, generator=torch.Generator().manual_seed(10_000 + s)) + 0.01
        p = p / p.sum()
        g1, g2 = torch.Generator().manual_seed(s), torch.Generator().manual_seed(s)
        a = int(torch.multinomial(p, 1, generator=g1))
        b = int(torch.argmax(p / torch.empty(8).exponential_(generator=g2)))
        assert a == b
        assert torch.equal(g1.get_state(), g2.get_state())          # the generator moved on by the same amount


def _former_loop(seed, ids):
    """(hair, eye, style, beard style, texture freckles and moles) by the former per-identity loop."""
    r = TEXTURE_RES
    gens = [torch.Generator().manual_seed((int(seed) * 1_000_003 + k * 7919 + 12345) % (2**63 - 1)) for k in ids]
    n = len(ids)
    u = torch.empty(n, 32)
    for j, g in enumerate(gens):
        torch.randn(_N_GEOM, generator=g)
        torch.rand(32, generator=g, out=u[j])
        torch.randn(16, generator=g)
    tone = u[:, 0]
    one = torch.ones_like(tone)
    p_hair = torch.tensor([0.28, 0.24, 0.16, 0.10, 0.09, 0.05, 0.05, 0.03]) * torch.stack(
        [1 + tone, 1 + tone, one, 1 - 0.8 * tone, 1 - 0.9 * tone, 1 - 0.8 * tone, one, one], 1)
    p_eye = torch.tensor([0.35, 0.25, 0.12, 0.1, 0.12, 0.06]) * torch.stack(
        [1 + 2 * tone, 1 + tone, one, 1 - 0.9 * tone, 1 - 0.9 * tone, 1 - 0.9 * tone], 1)
    p_style = torch.tensor([0.34, 0.22, 0.06, 0.14, 0.14, 0.10])
    p_beard = torch.tensor([0.4, 0.3, 0.15, 0.15])
    bearded = ((u[:, 13] > 0.55) & (u[:, 14] < 0.55)).tolist()
    n_freckles = (u[:, 20] ** 3 * (0.06 * r * r) * (1 - tone)).round().long().tolist()
    n_moles = (u[:, 21] * 4).long().tolist()
    hair_i, eye_i, style_i, beard_style = [], [], [], []
    texture = torch.zeros(n, 3, r, r)
    for j, g in enumerate(gens):
        hair_i.append(int(torch.multinomial(p_hair[j] / p_hair[j].sum(), 1, generator=g)))
        eye_i.append(int(torch.multinomial(p_eye[j] / p_eye[j].sum(), 1, generator=g)))
        style_i.append(int(torch.multinomial(p_style, 1, generator=g)))
        beard_style.append(1 + int(torch.multinomial(p_beard, 1, generator=g)) if bearded[j] else 0)
        torch.randn(1, 10, 10, generator=g)
        if n_freckles[j]:
            pos = (torch.rand(n_freckles[j], 2, generator=g) * r).long()
            texture[j, Texture.FRECKLES, pos[:, 1], pos[:, 0]] = 0.4 + 0.6 * torch.rand(n_freckles[j], generator=g)
        if n_moles[j]:
            pos = ((torch.rand(n_moles[j], 2, generator=g) * 0.55 + 0.22) * r).long()
            texture[j, Texture.MOLES, pos[:, 1], pos[:, 0]] = 1.0
    return hair_i, eye_i, style_i, beard_style, texture


@pytest.mark.parametrize("seed", [0, 5, 101])
@pytest.mark.parametrize("style", ["cartoon", "photo"])
def test_batched_draws_match_the_former_loop(seed, style):
    ids = list(range(150)) + [10_007, 99_991, 3, 3]
    ident = make_identities(seed, ids, style=style)
    hair_i, eye_i, style_i, beard_style, texture = _former_loop(seed, ids)
    assert ident.hair_name == [list(HAIR_COLOURS)[i] for i in hair_i]
    assert ident.eye_name == [list(EYE_COLOURS)[i] for i in eye_i]
    assert ident.hair_style.tolist() == style_i and max(style_i) < len(HAIR_STYLES)
    assert ident.beard[:, 0].tolist() == [float(b) for b in beard_style]
    assert torch.equal(ident.texture[:, Texture.FRECKLES:], texture[:, Texture.FRECKLES:])
    assert len(set(hair_i)) > 3 and any(beard_style) and bool((texture[:, Texture.FRECKLES] > 0).any())
