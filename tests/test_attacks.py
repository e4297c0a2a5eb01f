"""Presentation and digital attacks (facelab.synth.attacks): shapes, determinism, bounds and the image cues."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from facelab.synth.attacks import (
    ATTACK_KINDS,
    ATTACK_TYPES,
    _tps_warp,
    apply_attack,
    attack_protocols,
    face_region_mask,
    make_attack_set,
    protocol_split,
)

H = W = 64


def template_landmarks(n, h=H, w=W):
    """A plausible iBUG-68 face (jaw, brows, nose, eyes, lips) centred in an h x w frame."""
    pts = [(0.5 + 0.33 * math.cos(a), 0.42 + 0.42 * math.sin(a)) for a in np.linspace(math.pi, 0, 17)]
    pts += [(0.2 + 0.25 * i / 4, 0.3 - 0.03 * math.sin(math.pi * i / 4)) for i in range(5)]
    pts += [(0.55 + 0.25 * i / 4, 0.3 - 0.03 * math.sin(math.pi * i / 4)) for i in range(5)]
    pts += [(0.5, 0.38 + 0.055 * i) for i in range(4)]
    pts += [(0.43 + 0.035 * i, 0.6) for i in range(5)]
    for cx in (0.35, 0.65):
        pts += [(cx + 0.07 * math.cos(a), 0.4 + 0.025 * math.sin(a)) for a in np.linspace(math.pi, 3 * math.pi, 7)[:6]]
    pts += [(0.5 + 0.13 * math.cos(a), 0.75 - 0.05 * math.sin(a)) for a in np.linspace(math.pi, -math.pi, 13)[:12]]
    pts += [(0.5 + 0.09 * math.cos(a), 0.75 - 0.02 * math.sin(a)) for a in np.linspace(math.pi, -math.pi, 9)[:8]]
    base = torch.tensor(pts, dtype=torch.float32) * torch.tensor([w, h], dtype=torch.float32)
    return base.expand(n, 68, 2).clone()


def textured_faces(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor([0.8, 0.6, 0.5]).view(1, 3, 1, 1)
    return (base + 0.08 * torch.randn(n, 3, H, W, generator=g)).clamp(0, 1)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("kind", ATTACK_KINDS)
def test_every_kind_keeps_shape_range_and_labels(kind):
    x = textured_faces()
    res = apply_attack(x, kind, generator=gen(), landmarks=template_landmarks(4))
    images, labels = res
    assert images.shape == x.shape and images.dtype == torch.float32
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert isinstance(labels, pd.DataFrame) and len(labels) == 4
    assert set(labels["attack"]) == {kind} and set(labels["family"]) == {ATTACK_TYPES[kind]}
    assert (images - x).abs().mean() > 1e-3                               # it actually changed the image


@pytest.mark.parametrize("kind", ATTACK_KINDS)
def test_same_generator_same_pixels(kind):
    x, lm = textured_faces(), template_landmarks(4)
    a = apply_attack(x, kind, generator=gen(3), landmarks=lm).images
    b = apply_attack(x, kind, generator=gen(3), landmarks=lm).images
    assert torch.equal(a, b)
    if kind not in ("morph",):                                           # morph at alpha=0.5 draws nothing
        c = apply_attack(x, kind, generator=gen(4), landmarks=lm).images
        assert not torch.equal(a, c)


def test_families_and_unknown_kind():
    assert {k for k, f in ATTACK_TYPES.items() if f == "physical"} == {"print", "replay", "mask3d"}
    assert {k for k, f in ATTACK_TYPES.items() if f == "digital"} == {"adversarial", "faceswap", "morph"}
    with pytest.raises(ValueError, match="print, replay, mask3d, adversarial, faceswap, morph"):
        apply_attack(textured_faces(), "deepfake")


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        apply_attack(torch.rand(3, H, W), "print")
    with pytest.raises(TypeError, match="float"):
        apply_attack(torch.zeros(2, 3, H, W, dtype=torch.uint8), "print")
    with pytest.raises(ValueError, match="68, 2"):
        apply_attack(textured_faces(2), "mask3d", landmarks=torch.zeros(2, 5, 2))
    with pytest.raises(ValueError, match="second face"):
        apply_attack(textured_faces(1), "faceswap")
    with pytest.raises(ValueError, match="source_landmarks"):
        apply_attack(textured_faces(2), "morph", source=textured_faces(2, 1), landmarks=template_landmarks(2))
    with pytest.raises(ValueError, match="only by faceswap and morph"):
        apply_attack(textured_faces(2), "print", source=textured_faces(2))
    with pytest.raises(ValueError, match="epsilon"):
        apply_attack(textured_faces(2), "adversarial", epsilon=0.0)


def test_adversarial_noise_respects_linf_budget():
    x = textured_faces()
    y = apply_attack(x, "adversarial", generator=gen(), epsilon=4 / 255).images
    d = (y - x).abs()
    assert float(d.max()) <= 4 / 255 + 1e-6
    assert float((d > 3.5 / 255).float().mean()) > 0.8                    # a sign pattern uses the full budget


def test_pgd_against_a_model_beats_random_sign():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=2), torch.nn.Tanh(), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 30 * 30, 16))
    x = textured_faces()
    clean = model(x).detach()

    def similarity(y):
        return torch.nn.functional.cosine_similarity(model(y), clean).mean().item()

    rand = apply_attack(x, "adversarial", generator=gen()).images
    res = apply_attack(x, "adversarial", generator=gen(), model=model, steps=5)
    assert set(res.labels["method"]) == {"pgd"}
    assert float((res.images - x).abs().max()) <= 8 / 255 + 1e-6
    assert similarity(res.images) < similarity(rand) - 0.05
    assert all(p.grad is None for p in model.parameters())               # the model itself is left untouched


def _chroma(x):
    return (x - x.mean(1, keepdim=True)).abs().mean().item()


def test_print_compresses_gamut_and_adds_dots():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 8, 8, generator=g).repeat_interleave(8, 2).repeat_interleave(8, 3)   # saturated blocks
    y = apply_attack(x, "print", generator=gen(), bend=0.0, blur_sigma=0.3, noise_std=0.0).images
    assert _chroma(y) < 0.85 * _chroma(x)
    grey = torch.full((1, 3, H, W), 0.5)
    yg = apply_attack(grey, "print", generator=gen(), bend=0.0, blur_sigma=0.3, noise_std=0.0).images
    assert float(yg.std()) > 0.03                                          # a halftone screen on a flat tone


def test_replay_shows_pixel_grid_and_bezel():
    grey = torch.full((2, 3, 96, 96), 0.6)
    y = apply_attack(grey, "replay", generator=gen(), screen_scale=0.8, moire_strength=0.0).images
    inner = y[0, :, 40:56, 20:80]                                         # away from bezel and glare centre
    profile = (inner[0] - inner[1]).mean(0)                               # red minus green across columns
    spec = torch.fft.rfft(profile - profile.mean()).abs()
    freq = torch.fft.rfftfreq(profile.numel())
    assert abs(float(freq[spec.argmax()]) - 1 / 3) < 0.02                 # RGB stripes every 3 pixels
    edge = torch.cat([y[..., :2, :].flatten(), y[..., -2:, :].flatten(), y[..., :, :2].flatten(),
                      y[..., :, -2:].flatten()])
    assert float((edge < 0.15).float().mean()) > 0.25                     # dark bezel on the frame's border


def test_mask3d_smooths_skin_keeps_eyes_and_background():
    x = textured_faces(2)
    lm = template_landmarks(2)
    y = apply_attack(x, "mask3d", generator=gen(), landmarks=lm).images
    cover = face_region_mask(lm, H, W, region="full").bool()[:, 0]
    def texture(img):                                                     # mean neighbour difference on a cheek
        cheek = img[:, :, 38:46, 20:28]
        return float((cheek[..., 1:] - cheek[..., :-1]).abs().mean())

    assert texture(y) < 0.3 * texture(x)                                  # no micro-texture on the mask
    eye = lm[:, 36:42].mean(1).round().long()
    for i in range(2):
        assert torch.allclose(y[i, :, eye[i, 1], eye[i, 0]], x[i, :, eye[i, 1], eye[i, 0]], atol=1e-6)
    assert torch.equal(y[:, :, :3, :3], x[:, :, :3, :3])                  # far outside the mask: untouched
    assert cover[:, 20, 32].all() and not cover[:, 2, 2].any()


def test_faceswap_pastes_source_inner_face_only():
    n = 2
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    target = (0.5 + 0.3 * torch.sin(yy * 1.3)).expand(n, 3, H, W).clone()   # horizontal stripes
    source = (0.5 + 0.3 * torch.sin(xx * 1.3)).expand(n, 3, H, W).clone()   # vertical stripes
    lm = template_landmarks(n)
    y = apply_attack(target, "faceswap", generator=gen(), source=source, landmarks=lm, source_landmarks=lm).images
    centre = y[:, 0, 28:40, 26:38]
    vertical_energy = (centre[:, :, 1:] - centre[:, :, :-1]).abs().mean()
    horizontal_energy = (centre[:, 1:, :] - centre[:, :-1, :]).abs().mean()
    assert vertical_energy > 2 * horizontal_energy                        # the source's pattern inside the face
    assert torch.equal(y[:, :, :3, :], target[:, :, :3, :])               # the frame outside stays the target's


def test_morph_is_a_warped_average():
    a, b = textured_faces(2, 0), textured_faces(2, 1)
    lm = template_landmarks(2)
    moved = lm.clone()
    moved[:, 48:68, 1] += 3.0                                             # the other face has a lower mouth
    half = apply_attack(a, "morph", source=b, landmarks=lm, source_landmarks=lm).images
    assert torch.allclose(half, 0.5 * (a + b), atol=2e-2)                 # same shape: a plain cross-dissolve
    zero = apply_attack(a, "morph", source=b, landmarks=lm, source_landmarks=moved, alpha=0.0).images
    assert torch.allclose(zero, a, atol=2e-2)
    res = apply_attack(a, "morph", source=b, landmarks=lm, source_landmarks=moved, alpha=None, generator=gen())
    assert ((res.labels["alpha"] >= 0.3) & (res.labels["alpha"] <= 0.7)).all()


def test_tps_warp_moves_a_landmark_where_asked():
    ramp = torch.arange(W, dtype=torch.float32).expand(1, 3, H, W).clone()  # pixel value = its x coordinate
    lm = template_landmarks(1)
    assert torch.allclose(_tps_warp(ramp, lm, lm), ramp, atol=0.05)       # same points: identity
    src_pts, dst_pts = lm.clone(), lm.clone()
    dst_pts[0, 0, 0] += 3.0                                               # landmark 0 moves 3 px to the right
    out = _tps_warp(ramp, dst_pts, src_pts)[0, 0]
    x, y = dst_pts[0, 0]
    sampled = out[int(y.round()), int(x.floor()):int(x.floor()) + 2].mean()
    expected = src_pts[0, 0, 0] + (x.floor() + 0.5 - x)                  # the source x of the pixel pair's centre
    assert abs(float(sampled - expected)) < 0.6


def test_face_region_mask_area():
    # (the polygon rasteriser itself is tested in test_core.py)
    face = face_region_mask(template_landmarks(1), H, W)
    assert 0.25 < float(face.mean()) < 0.6
    assert face_region_mask(None, H, W, n=3).shape == (3, 1, H, W)


class StubWorld:
    """The FaceWorld contract, enough for make_attack_set: identity-coloured faces with template landmarks."""

    def sample(self, n_identities, per_identity, identity_offset=0, nuisance="none", generator=None, **_):
        n = n_identities * per_identity
        ids = np.repeat(np.arange(identity_offset, identity_offset + n_identities), per_identity)
        colour = torch.tensor(ids, dtype=torch.float32).view(n, 1, 1, 1) / (ids.max() + 1)
        noise = torch.rand(n, 3, H, W, generator=generator)
        images = (0.3 + 0.5 * colour + 0.1 * noise).clamp(0, 1)

        class Batch:
            pass

        b = Batch()
        b.images, b.labels, b.landmarks = images, pd.DataFrame({"identity": ids}), template_landmarks(n)
        return b


def test_make_attack_set_labels_and_protocols():
    images, labels = make_attack_set(StubWorld(), n_identities=4, per_identity=2, generator=gen(), identity_offset=3)
    assert images.shape == (4 * 2 * 7, 3, H, W)
    assert list(labels.columns) == ["identity", "live", "attack", "family", "source_identity"]
    assert labels["live"].dtype == bool and labels["live"].sum() == 8
    assert (labels.groupby("attack").size() == 8).all()
    assert set(labels["identity"]) == {3, 4, 5, 6}
    swaps = labels[labels["attack"].isin(["faceswap", "morph"])]
    assert (swaps["source_identity"] != swaps["identity"]).all() and swaps["source_identity"].isin([3, 4, 5, 6]).all()
    assert (labels.loc[labels["live"], "family"] == "live").all()

    protocols = attack_protocols()
    assert list(protocols["protocol"]) == ["P1", "P2.1", "P2.2"]
    for name in protocols["protocol"]:
        train, test = protocol_split(labels, name, test_fraction=0.5, seed=1)
        assert not set(labels.loc[train, "identity"]) & set(labels.loc[test, "identity"])
        assert labels.loc[train, "live"].any() and labels.loc[test, "live"].any()
    train, test = protocol_split(labels, "P2.1", test_fraction=0.5)
    assert set(labels.loc[train & ~labels["live"].to_numpy(), "family"]) == {"digital"}
    assert set(labels.loc[test & ~labels["live"].to_numpy(), "family"]) == {"physical"}
    with pytest.raises(ValueError, match="P1"):
        protocol_split(labels, "P3", 0.3)
    with pytest.raises(ValueError, match="at least 2 identities"):
        make_attack_set(StubWorld(), 1, 2, kinds=["morph"])
    with pytest.raises(ValueError, match="Unknown attack"):
        make_attack_set(StubWorld(), 2, 2, kinds=["print", "hologram"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_matches_cpu():
    x, lm = textured_faces(), template_landmarks(4)
    for kind in ATTACK_KINDS:
        cpu = apply_attack(x, kind, generator=gen(), landmarks=lm).images
        gpu = apply_attack(x.cuda(), kind, generator=gen(), landmarks=lm).images
        assert gpu.device.type == "cuda" and torch.allclose(cpu, gpu.cpu(), atol=1e-3)


def test_make_attack_set_on_the_real_world():
    from facelab.synth import FaceWorld

    world = FaceWorld(seed=0, size=64)
    images, labels = make_attack_set(world, n_identities=2, per_identity=1, generator=gen(5), nuisance="none")
    assert images.shape == (14, 3, 64, 64) and labels["live"].sum() == 2
    live = images[torch.from_numpy(labels["live"].to_numpy().copy())]
    again = world.sample(n_identities=2, per_identity=1, nuisance="none", generator=gen(5)).images
    assert torch.allclose(live, again, atol=1e-5)                        # live rows are the world's own renders
    assert set(labels.loc[labels["attack"] == "morph", "source_identity"]) == {0, 1}
