"""The world's opt-in photographic style (issue 26): FaceWorld(style="photo") and its real-photo appearance model.

The default style stays byte-identical (tests/test_render_checksum.py); here: the photo style is deterministic per
seed, keeps the same people's labels, its photofits never copy one real person, and its errors are clear.
"""

import numpy as np
import pytest
import torch

from facelab.synth import FaceWorld, SyntheticFaceStream
from facelab.synth import appearance as A
from facelab.synth.facs import AU_NAMES, PHOTO_AU_GAIN, apply_aus, au_gain, emotion_vector
from facelab.synth.identity import make_identities
from facelab.synth.landmarks import mean_shape


def _batch(style, seed=3, **kw):
    world = FaceWorld(seed=seed, size=64, style=style)
    return world.sample(n_identities=4, per_identity=2, nuisance="mild", expression="random", makeup="random",
                        generator=torch.Generator().manual_seed(1), **kw)


def test_photo_style_is_deterministic_and_differs_from_cartoon():
    a, b = _batch("photo"), _batch("photo")
    assert torch.equal(a.images, b.images) and torch.equal(a.landmarks, b.landmarks)
    c = _batch("cartoon")
    assert a.images.shape == c.images.shape == (8, 3, 64, 64)
    assert float((a.images - c.images).abs().mean()) > 0.01                  # a different picture
    # the same people and the same per-image draws: every label but the landmark-derived ones agrees
    same = [k for k in c.labels.columns if k in a.labels.columns]
    assert list(a.labels["identity"]) == list(c.labels["identity"])
    assert list(a.labels["emotion"]) == list(c.labels["emotion"]) and len(same) == len(c.labels.columns)
    assert 0.0 <= float(a.images.min()) and float(a.images.max()) <= 1.0


def test_photo_identity_is_the_same_person_in_any_batch():
    world = FaceWorld(seed=4, size=64, style="photo")
    alone = world.sample(identities=[7], generator=torch.Generator().manual_seed(0)).images
    other = FaceWorld(seed=4, size=64, style="photo")
    mixed = other.sample(identities=[2, 7, 9], generator=torch.Generator().manual_seed(0))
    again = other.sample(identities=[7], generator=torch.Generator().manual_seed(0)).images
    # nuisance "none": the same picture (up to float rounding: the layer was drawn in a batch of three)
    assert torch.allclose(alone, again, atol=1e-5)
    assert mixed.images.shape[0] == 3


def test_identities_share_everything_but_appearance_and_shape():
    cartoon = make_identities(5, [0, 1, 2])
    photo = make_identities(5, [0, 1, 2], style="photo")
    assert cartoon.appearance is None and photo.appearance.shape == (3, A.n_components())
    assert torch.equal(cartoon.skin, photo.skin) and torch.equal(cartoon.hair, photo.hair)
    assert cartoon.hair_name == photo.hair_name
    assert not torch.equal(cartoon.landmarks, photo.landmarks)            # wider, real-photo shape offsets
    assert torch.isfinite(photo.landmarks).all() and photo.landmarks.abs().max() < 1.0
    with pytest.raises(ValueError, match="style"):
        make_identities(5, [0], style="oil painting")
    sub = photo.index(torch.tensor([2, 0]))
    assert torch.equal(sub.appearance, photo.appearance[[2, 0]])


def test_bad_style_is_a_clear_error():
    with pytest.raises(ValueError, match="style must be one of cartoon, photo"):
        FaceWorld(seed=0, style="sketch")
    with pytest.raises(ValueError, match="style"):
        SyntheticFaceStream(seed=0, size=64, n_identities=2, per_identity=1, style="sketch")
    assert "photo" in repr(FaceWorld(seed=0, size=64, style="photo"))
    assert repr(FaceWorld(seed=0, size=64)) == "FaceWorld(seed=0, size=64, device='cpu')"


def test_photofits_come_from_several_real_people():
    mdl = A.appearance_model()
    n_faces = mdl["faces"].shape[0]
    assert n_faces >= 15 and mdl["masks"].shape[0] == 5 and mdl["happy"].shape == (n_faces,)
    coef = torch.rand(500, A.N_COEF, generator=torch.Generator().manual_seed(0))
    calm = torch.nonzero(mdl["happy"] < 0.5)[:, 0]
    src, mirrored, second, beta = A.sources(coef, n_faces, calm)
    assert all(len(set(row)) >= A.MIN_SOURCES for row in src.tolist())
    assert set(src[:, 0].tolist()) <= set(calm.tolist()) and set(src[:, 4].tolist()) <= set(calm.tolist())
    assert float(beta.min()) >= 0 and float(beta.max()) <= A.BLEND
    tex = A.sample_textures(coef[:3])
    assert tex.shape == (3, 3, A.SETTINGS["resolution"], A.SETTINGS["resolution"]) and torch.isfinite(tex).all()
    # outside the face region the detail map is 1 (no change of the skin)
    assert torch.allclose(tex[:, :, 0, 0], torch.ones(3, 3), atol=1e-2)
    off = A.shape_offsets(torch.randn(4, 16, generator=torch.Generator().manual_seed(1)))
    assert off.shape == (4, 68, 2) and float(off.abs().max()) < 0.3


def test_photo_action_units_move_further():
    m = mean_shape()[None]
    aus = emotion_vector("angry")[None]
    plain, photo = apply_aus(m, aus), apply_aus(m, aus, gain=au_gain("photo"))
    brow = slice(17, 27)
    assert (photo[0, brow, 1] - m[0, brow, 1]).mean() > (plain[0, brow, 1] - m[0, brow, 1]).mean() > 0
    assert au_gain("cartoon") is None and au_gain("photo").shape == (len(AU_NAMES),)
    assert set(PHOTO_AU_GAIN) <= set(AU_NAMES)


def test_photo_video_and_stream():
    world = FaceWorld(seed=1, size=64, style="photo")
    v = world.video(identity=2, duration_s=0.2, fps=20, generator=torch.Generator().manual_seed(0))
    assert v.frames.shape == (4, 3, 64, 64) and torch.isfinite(v.frames).all()
    stream = SyntheticFaceStream(seed=1, size=64, n_identities=3, per_identity=2, batch_size=4, style="photo",
                                 nuisance="mild")
    batches = list(stream)
    assert sum(len(b) for b in batches) == 6
    blink = world.sample(identities=[2], expression={"AU45": 1.0}).images
    open_ = world.sample(identities=[2]).images
    assert float((blink - open_).abs().sum()) > 1.0                      # the lids close over the photo's eyes
    assert np.isfinite(blink.numpy()).all()


def test_photo_head_modes_are_symmetric_deterministic_and_checked():
    from facelab.synth import head
    from facelab.synth.fields import Face
    from facelab.synth.landmarks import MIRROR

    z = torch.randn(5, head.N_HEAD, generator=torch.Generator().manual_seed(0))
    face = torch.full((5, 6), 0.5)
    off, new = head.photo_head(z, face)
    off2, _ = head.photo_head(z.clone(), face)
    assert off.shape == (5, 68, 2) and torch.equal(off, off2) and float(off.abs().max()) < 0.2
    mirrored = off[:, torch.as_tensor(MIRROR)] * torch.tensor([-1.0, 1.0])
    assert torch.allclose(off, mirrored, atol=1e-6)                         # left-right symmetric
    assert float(off[:, :17].abs().mean()) > 1e-3                            # the jaw moves too
    for col, (lo, hi) in head.FACE_RANGES.items():
        assert lo <= float(new[:, col].min()) and float(new[:, col].max()) <= hi
    assert torch.equal(new[:, Face.AGE], face[:, Face.AGE]) and torch.equal(face, torch.full((5, 6), 0.5))
    with pytest.raises(ValueError, match="numbers"):
        head.photo_head(torch.zeros(2, 3), face[:2])


def test_photo_head_leaves_the_rest_of_the_person():
    cartoon = make_identities(5, [0, 1, 2])
    photo = make_identities(5, [0, 1, 2], style="photo")
    from facelab.synth import head
    from facelab.synth.fields import Face

    kept = [c for c in range(6) if c not in head.FACE_RANGES]
    assert torch.equal(cartoon.face[:, kept], photo.face[:, kept])          # age and nose depth as in the cartoon
    assert torch.equal(cartoon.brow, photo.brow) and torch.equal(cartoon.hair_shape, photo.hair_shape)
    assert not torch.equal(cartoon.face[:, Face.EARS], photo.face[:, Face.EARS])


def test_upper_skin_comes_from_its_own_face():
    coef = torch.rand(6, A.n_components(), generator=torch.Generator().manual_seed(2))
    split, whole = A.sample_textures(coef), A.sample_textures(coef[:, :A.N_COEF])
    R = split.shape[-1]
    diff = (split - whole).abs().amax((0, 1, 3))                           # per texture row
    cut = int((float(mean_shape()[36:48, 1].mean()) + A.UPPER_CUT + 1) * R / 2)
    assert float(diff[:cut - 8].max()) > 0.05                              # forehead and eyes' surround differ
    assert float(diff[cut + 16:].max()) < 1e-3                             # cheeks, mouth and chin as before
    assert make_identities(5, [0, 1], style="photo").appearance.shape == (2, A.N_COEF + A.N_EXTRA)
