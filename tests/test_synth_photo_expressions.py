"""How the photo style renders action units (issue 26, part 2): the texture follows the landmarks, the mouth opens
only for the AUs that open it, smiles and raised lips bare the teeth, and the broad folds darken where they should.

The cartoon style is untouched (tests/test_render_checksum.py and the checksum in tests/test_synth.py).
"""

import torch
import torch.nn.functional as F

from facelab.synth import FaceWorld
from facelab.synth import render as R
from facelab.synth.facs import AU_NAMES, apply_aus, au_gain, au_vector, emotion_vector
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
    # the opening alone: without the learned shading, which darkens the lips of AU15/AU17 (tested below)
    old_learned, old = R.PHOTO_LEARNED, R.PHOTO_MOUTH_GATE
    R.PHOTO_LEARNED = 0.0
    try:
        neutral = _mouth_luminance({})
        pulled = _mouth_luminance({"AU15": 1.0, "AU17": 1.0})         # lip corners down, chin up: lips stay closed
        dropped = _mouth_luminance({"AU25": 1.0, "AU26": 1.0})        # lips part, jaw drop: an open, dark mouth
        R.PHOTO_MOUTH_GATE = False
        ungated = _mouth_luminance({"AU15": 1.0, "AU17": 1.0})
    finally:
        R.PHOTO_MOUTH_GATE, R.PHOTO_LEARNED = old, old_learned
        R._TEMPLATES.clear()
    assert float((neutral - pulled).mean()) < 0.02               # no dark opening appears ...
    assert float((neutral - ungated).mean()) > float((neutral - pulled).mean()) + 0.003  # ... as it did before
    assert float((neutral - dropped).mean()) > 0.04             # an open, dark mouth (0.049 with 2dfed84's skin)


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


def test_photo_learned_shading_codes_round_trip():
    G = R.PHOTO_SHADING_GRID
    S = torch.linspace(-0.3, 0.6, G * G).view(G, G)
    S = 0.5 * (S + S.flip(-1))
    t = R.photo_shading_grid({"AU04": R.encode_photo_shading(S)})
    k = AU_NAMES.index("AU04")
    assert t.shape == (len(AU_NAMES), 2, G, G)
    assert torch.allclose(t[k].sum(0), S, atol=R.PHOTO_SHADING_STEP / 2 + 1e-6)
    assert float(t[torch.arange(len(AU_NAMES)) != k].abs().max()) == 0.0
    # side 0 (the subject's right) lies in the image's left half, side 1 mirrors it
    assert torch.allclose(t[k, 0], t[k, 1].flip(-1))
    assert float(t[k, 0, :, :G // 2].abs().sum()) > 10 * float(t[k, 0, :, G // 2:].abs().sum())


def test_photo_learned_shading_stays_on_the_face_and_off_the_cartoon():
    t = R.photo_shading_grid()
    assert R.PHOTO_SHADING and set(R.PHOTO_SHADING) <= set(AU_NAMES)
    assert not {"AU25", "AU26", "AU45"} & set(R.PHOTO_SHADING)        # the mouth opening and the blink are drawn
    assert float(t.abs().max()) <= 0.6 and torch.allclose(t[:, 0], t[:, 1].flip(-1))
    # nothing on the grid's border (outside the face)
    assert float(t[..., [0, -1], :].abs().max()) < 0.02 and float(t[..., :, [0, -1]].abs().max()) < 0.02
    H = 32
    old = R.PHOTO_LEARNED
    try:
        R._TEMPLATES.clear()
        with_c, with_p = R.au_templates(H, "cpu", "cartoon").clone(), R.au_templates(H, "cpu", "photo").clone()
        R.PHOTO_LEARNED = 0.0
        without_c, without_p = R.au_templates(H, "cpu", "cartoon"), R.au_templates(H, "cpu", "photo")
    finally:
        R.PHOTO_LEARNED = old
        R._TEMPLATES.clear()
    assert torch.equal(with_c, without_c)
    assert torch.allclose(with_p - without_p, old * R._photo_learned_shading(H), atol=1e-6)


def test_photo_learned_shading_helps_face_api_read_the_prototypes():
    from facelab.models import load_expression_model
    from facelab.models.expression import EXPRESSIONS
    from facelab.studies.synthetic_faces import _landmark_crops

    labels = [e for e in EXPRESSIONS[2:6] for _ in range(6)]          # sad, angry, fearful, disgusted
    world = FaceWorld(seed=11, size=112, style="photo")
    y = torch.tensor([EXPRESSIONS.index(e) for e in labels])
    logp = {}
    old = R.PHOTO_LEARNED
    try:
        for w in (0.0, old):
            R.PHOTO_LEARNED = w
            b = world.sample(identities=list(range(900, 900 + len(labels))), expression=labels, nuisance="none",
                             generator=torch.Generator().manual_seed(0))
            p = load_expression_model().predict(_landmark_crops(b.images, b.landmarks, 112, 1.0))
            logp[w] = float(torch.log(p[torch.arange(len(y)), y]).mean())
    finally:
        R.PHOTO_LEARNED = old
        R._TEMPLATES.clear()
    assert logp[old] > logp[0.0] + 0.3, logp


def test_photo_eye_whites_where_the_lids_open_wider():
    def eyes(sclera):
        old = R.PHOTO_SCLERA
        R.PHOTO_SCLERA = sclera
        try:
            b = FaceWorld(seed=5, size=112, style="photo").sample(
                identities=list(range(6)), expression=[{"AU05": 1.0}] * 6, nuisance="none",
                generator=torch.Generator().manual_seed(0))
        finally:
            R.PHOTO_SCLERA = old
        out = []
        for img, lm in zip(b.images, b.landmarks):
            x0, y0 = (lm[36:48].min(0).values - 1).long()
            x1, y1 = (lm[36:48].max(0).values + 2).long()
            out.append(float(img[:, y0:y1, x0:x1].mean()))
        return torch.tensor(out)
    assert bool((eyes(1.0) > eyes(0.0) + 0.01).all())
