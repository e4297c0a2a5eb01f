"""How the photo style renders action units (issue 26, part 2): the texture follows the landmarks, the mouth opens
only for the AUs that open it, smiles and raised lips bare the teeth, and the broad folds darken where they should.

The cartoon style is untouched (tests/test_render_checksum.py and the checksum in tests/test_synth.py).
"""

import torch
import torch.nn.functional as F

from facelab.synth import FaceWorld
from facelab.synth import render as R
from facelab.synth.facs import apply_aus, au_gain, au_vector, emotion_vector
from facelab.synth.landmarks import mean_shape


def _texture_shift(grid_fn, au, point):
    """How far the texture at ``point`` moves (x, y) when ``au`` moves the mean face's landmarks in style photo,
    and how far the landmark itself moves."""
    m = mean_shape()[None]
    L = apply_aus(m, au_vector({au: 1.0})[None], gain=au_gain("photo"))
    grid = grid_fn(m, L, 112)                                              # backward map (1, H, W, 2)
    src = F.grid_sample(grid.permute(0, 3, 1, 2), L[:, None, point:point + 1], align_corners=False)[0, :, 0, 0]
    return L[0, point] - src, L[0, point] - m[0, point]


def test_photo_warp_moves_the_texture_as_far_as_the_landmarks():
    # AU4 at the inner brow end (21): the brow texture goes down at least 85% of the landmark's 0.09 (the smooth
    # cartoon warp: about half); AU10 at the upper lip's middle (61), AU5 at the upper lid (37) likewise
    for au, point, share in (("AU04", 21, 0.85), ("AU10", 61, 0.9), ("AU05", 37, 0.85)):
        moved, target = _texture_shift(R._photo_expression_grid, au, point)
        smooth, _ = _texture_shift(R._expression_grid, au, point)
        assert abs(float(target[1])) > 0.04
        assert float(moved[1] / target[1]) > share, (au, moved, target)
        assert float(smooth[1] / target[1]) < float(moved[1] / target[1]) - 0.1
    # a face whose landmarks do not move keeps its texture where it is
    m = mean_shape()[None]
    assert torch.allclose(R._photo_expression_grid(m, m, 32), R._identity_grid(32, "cpu"), atol=1e-6)


def _mouth_luminance(expression, seed=5, ids=range(8)):
    """Mean luminance of each face's inner-mouth box (points 60-67, grown by a pixel), photo style, no nuisance."""
    world = FaceWorld(seed=seed, size=112, style="photo")
    b = world.sample(identities=list(ids), expression=[expression] * len(ids), nuisance="none",
                     generator=torch.Generator().manual_seed(0))
    out = []
    for img, lm in zip(b.images, b.landmarks):
        x0, y0 = (lm[60:68].min(0).values - 1).long()
        x1, y1 = (lm[60:68].max(0).values + 2).long()
        out.append(float(img[:, y0:y1, x0:x1].mean()))
    return torch.tensor(out)


def test_photo_mouth_opens_only_for_the_jaw_and_the_upper_lip():
    neutral = _mouth_luminance({})
    pulled = _mouth_luminance({"AU15": 1.0, "AU17": 1.0})         # lip corners down, chin up: lips stay closed
    dropped = _mouth_luminance({"AU25": 1.0, "AU26": 1.0})        # lips part, jaw drop: an open, dark mouth
    old = R.PHOTO_MOUTH_GATE
    R.PHOTO_MOUTH_GATE = False
    try:
        ungated = _mouth_luminance({"AU15": 1.0, "AU17": 1.0})
    finally:
        R.PHOTO_MOUTH_GATE = old
    assert float((neutral - pulled).mean()) < 0.02               # no dark opening appears ...
    assert float((neutral - ungated).mean()) > float((neutral - pulled).mean()) + 0.003  # ... as it did before
    assert float((neutral - dropped).mean()) > 0.05


def test_photo_teeth_follow_the_action_units():
    bared = {e: R._photo_bared(emotion_vector(e)[None]).item() for e in ("neutral", "happy", "surprised",
                                                                          "disgusted", "fearful")}
    assert bared["neutral"] == 0.0 and bared["happy"] == 1.0 and bared["surprised"] == 0.0
    assert 0.5 < bared["disgusted"] <= 1.0 and 0.2 < bared["fearful"] < 1.0
    # a smile shows more teeth (bright pixels in the mouth) in the photo style when they are bared
    world = FaceWorld(seed=5, size=112, style="photo")
    imgs = {}
    for name, teeth_au in (("bared", R.PHOTO_TEETH_AU), ("plain", {})):
        old = R.PHOTO_TEETH_AU
        R.PHOTO_TEETH_AU = teeth_au
        try:
            imgs[name] = world.sample(identities=list(range(6)), expression=["happy"] * 6, nuisance="none",
                                      generator=torch.Generator().manual_seed(0)).images
        finally:
            R.PHOTO_TEETH_AU = old
    assert float(imgs["bared"].mean()) > float(imgs["plain"].mean())


def test_photo_folds_darken_the_glabella_and_the_upper_lids():
    H = 64
    R._TEMPLATES.clear()
    photo, cartoon = R.au_templates(H, "cpu", "photo"), R.au_templates(H, "cpu", "cartoon")
    k = 2 * 2                                          # AU04 (third AU), subject's right side; +1 is the left
    m = mean_shape()
    px = lambda x, y: (int((y + 1) * H / 2), int((x + 1) * H / 2))  # noqa: E731  frontal point -> (row, col)
    # the brows' shadow on the upper lid, halfway between the right brow and the right eye
    r, c = px(float(m[36:42, 0].mean()), float(0.5 * (m[17:22, 1].mean() + m[37:39, 1].mean())) + 0.02)
    assert photo[k].view(H, H)[r, c] > cartoon[k].view(H, H)[r, c] + 0.03
    assert photo[k].view(H, H)[r, c] > 0.15 * R.PHOTO_FOLDS["AU04"]
    # both sides together darken the glabella between the brows more than the cartoon's thin lines do
    # (at 64 px the cartoon's glabella lines, a third of a pixel wide at 112 px, are gone)
    rows = slice(px(0.0, float(m[21, 1]))[0], px(0.0, float(m[21, 1]) + 0.12)[0])
    cols = slice(px(-0.06, 0.0)[1], px(0.06, 0.0)[1])
    both_p = (photo[k] + photo[k + 1]).view(H, H)[rows, cols].amax()
    both_c = (cartoon[k] + cartoon[k + 1]).view(H, H)[rows, cols].amax()
    assert both_p > both_c + 0.3 * R.PHOTO_FOLDS["AU04"], (both_p, both_c)


def test_photo_expressions_are_deterministic():
    world = FaceWorld(seed=9, size=64, style="photo")
    kw = dict(identities=[1, 2, 3], expression=["angry", "sad", "disgusted"], nuisance="mild")
    a = world.sample(generator=torch.Generator().manual_seed(4), **kw).images
    b = FaceWorld(seed=9, size=64, style="photo").sample(generator=torch.Generator().manual_seed(4), **kw).images
    assert torch.equal(a, b)
