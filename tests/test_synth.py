"""Tests of the synthetic face world (facelab.synth): shapes, determinism, identity signal, occlusion control,
action units, makeup captions, video events and bad input."""

import numpy as np
import pytest
import torch

from facelab.synth import AU_NAMES, EMOTIONS, FaceWorld


@pytest.fixture(scope="module")
def world():
    return FaceWorld(seed=0, size=64)


def test_sample_shapes_ranges_and_labels(world):
    b = world.sample(n_identities=3, per_identity=2, nuisance="mild", expression="random", occlusion="random",
                     makeup="random")
    assert b.images.shape == (6, 3, 64, 64) and b.images.dtype == torch.float32
    assert float(b.images.min()) >= 0.0 and float(b.images.max()) <= 1.0
    assert b.landmarks.shape == (6, 68, 2) and b.landmarks.dtype == torch.float32
    assert b.masks.shape == (6, 1, 64, 64) and b.masks.dtype == torch.bool
    images, labels = b
    assert images is b.images and len(labels) == 6
    assert list(labels["identity"]) == [0, 0, 1, 1, 2, 2]
    for col in ("emotion", "yaw", "pitch", "roll", "light_azimuth", "light_elevation", "light_intensity",
                "occlusion", "occluded_fraction", "lipstick", "eyeshadow", "eyeliner", "blush", "caption", *AU_NAMES):
        assert col in labels.columns, col
    aus = labels[list(AU_NAMES)].to_numpy()
    assert aus.min() >= 0 and aus.max() <= 1
    assert set(labels["emotion"]) <= set(EMOTIONS)
    # landmarks lie inside the picture
    assert float(b.landmarks.min()) > -2 and float(b.landmarks.max()) < 66


def test_no_occlusion_means_empty_masks(world):
    b = world.sample(2, 1, nuisance="mild")
    assert not b.masks.any()
    assert (b.labels["occluded_fraction"] == 0).all() and (b.labels["occlusion"] == "none").all()
    assert b.face_masks.float().mean() > 0.15          # the face covers a good part of the picture


def test_same_seed_same_pixels_and_identity_is_stable():
    kw = dict(nuisance="full", expression="random", occlusion="random", makeup="random")
    a = FaceWorld(seed=3, size=64).sample(2, 2, **kw)
    b = FaceWorld(seed=3, size=64).sample(2, 2, **kw)
    assert torch.equal(a.images, b.images)
    assert a.labels.equals(b.labels)
    c = FaceWorld(seed=4, size=64).sample(2, 2, **kw)
    assert not torch.equal(a.images, c.images)
    # identity k is the same person whatever the batch: frontal neutral renders match exactly
    w = FaceWorld(seed=3, size=64)
    alone = w.sample(identities=[5]).images
    in_batch = FaceWorld(seed=3, size=64).sample(n_identities=3, identity_offset=4).images[1:2]
    assert torch.allclose(alone, in_batch, atol=1e-5)


def test_different_identities_differ_more_than_same_identity(world):
    b = world.sample(n_identities=6, per_identity=3, nuisance="none", expression="random", yaw=(-10, 10),
                     generator=torch.Generator().manual_seed(1))
    x = b.images.flatten(1)
    d = torch.cdist(x, x)
    ids = torch.tensor(b.labels["identity"].to_numpy())
    same = ids[:, None] == ids[None, :]
    off = ~torch.eye(len(ids), dtype=torch.bool)
    assert d[same & off].mean() < 0.7 * d[~same].mean()


@pytest.mark.parametrize("kind,fraction,tol", [("block", 0.3, 0.04), ("block", 0.6, 0.05), ("pixels", 0.25, 0.005),
                                                ("scarf", 0.4, 0.08)])
def test_occluded_fraction_follows_the_request(world, kind, fraction, tol):
    b = world.sample(4, 1, nuisance="none", occlusion=kind, occlusion_fraction=fraction)
    got = b.labels["occluded_fraction"].to_numpy()
    assert np.all(np.abs(got - fraction) < tol), got
    # the reported fraction is the share of face pixels under the mask
    f = b.face_masks.float()
    share = (b.masks.float() * f).sum((1, 2, 3)) / f.sum((1, 2, 3))
    assert np.allclose(share.numpy(), got, atol=1e-5)


def test_ar_style_occluders_cover_plausible_shares(world):
    sun = world.sample(6, 1, occlusion="sunglasses").labels["occluded_fraction"].mean()
    scarf = world.sample(6, 1, occlusion="scarf").labels["occluded_fraction"].mean()
    assert 0.12 < sun < 0.3 and 0.33 < scarf < 0.48


def _lm(world, expr, ident=7):
    return world.sample(identities=[ident], expression=expr).landmarks[0]


def test_action_units_move_the_right_landmarks(world):
    neutral = _lm(world, None)
    smile = _lm(world, {"AU12": 1.0})
    assert (smile[[48, 54], 1] < neutral[[48, 54], 1] - 1.0).all()           # lip corners go up (pixels)
    assert (smile[54, 0] - smile[48, 0]) > (neutral[54, 0] - neutral[48, 0])  # and apart
    assert torch.allclose(smile[17:27], neutral[17:27], atol=1e-4)           # brows stay
    jaw = _lm(world, {"AU26": 1.0})
    assert jaw[8, 1] > neutral[8, 1] + 2 and (jaw[66, 1] - jaw[62, 1]) > (neutral[66, 1] - neutral[62, 1]) + 2
    brows = _lm(world, {"AU01": 1.0, "AU02": 1.0})
    assert (brows[17:27, 1] < neutral[17:27, 1] - 0.5).all()
    left = _lm(world, {"AU12L": 1.0})                                       # subject's left = image right
    assert left[54, 1] < neutral[54, 1] - 1.0 and abs(float(left[48, 1] - neutral[48, 1])) < 1e-4
    blink = _lm(world, {"AU45": 1.0})
    assert (blink[41, 1] - blink[37, 1]) < 0.3 * (neutral[41, 1] - neutral[37, 1])


def test_action_units_change_shading(world):
    a = world.sample(identities=[3], expression=None).images
    b = world.sample(identities=[3], expression={"AU04": 1.0, "AU09": 1.0}).images
    assert (a - b).abs().mean() > 1e-3


def test_emotions_and_labels(world):
    b = world.sample(identities=list(range(len(EMOTIONS))), expression=list(EMOTIONS))
    assert list(b.labels["emotion"]) == list(EMOTIONS)
    assert b.labels.loc[1, "AU12"] > 0.5 and b.labels.loc[0, list(AU_NAMES)].sum() == 0
    assert b.labels.loc[7, "unilateral"] != ""          # contempt is one-sided


def test_makeup_is_local_and_captioned(world):
    plain = world.sample(identities=[2])
    red = world.sample(identities=[2], makeup={"lipstick": "red", "eyeshadow": "blue"})
    assert red.labels.loc[0, "caption"] == "a face of a person with red lipstick and blue eyeshadow"
    assert plain.labels.loc[0, "caption"] == "a face of a person"
    diff = (plain.images - red.images).abs().sum(1)[0]
    lm = plain.landmarks[0]
    ys, xs = torch.nonzero(diff > 0.02, as_tuple=True)
    assert len(ys) > 10
    # changed pixels lie around the eyes and the mouth, not on the forehead top or the chin
    assert ys.float().min() >= lm[17:27, 1].min() - 6 and ys.float().max() <= lm[57, 1] + 4


def test_factor_overrides_are_reported(world):
    b = world.sample(2, 1, nuisance="none", yaw=20.0, light_azimuth=(-10, 10))
    assert np.allclose(b.labels["yaw"], 20.0)
    assert (b.labels["light_azimuth"].abs() <= 10).all()
    yawed = b.landmarks[0, 30, 0]
    front = world.sample(identities=[0]).landmarks[0, 30, 0]
    assert yawed > front + 1            # positive yaw turns the nose towards the image right


@pytest.mark.parametrize("kwargs,match", [
    (dict(expression={"AU12": 1.5}), "AU12"),
    (dict(expression={"AU12": -0.1}), r"\[0, 1\]"),
    (dict(expression={"AU99": 0.5}), "unknown action unit"),
    (dict(expression="bored"), "unknown expression"),
    (dict(yaw=95.0), "yaw"),
    (dict(pitch=(-50, 0)), "pitch"),
    (dict(n_identities=0), "n_identities"),
    (dict(per_identity=0), "per_identity"),
    (dict(nuisance="extreme"), "nuisance"),
    (dict(occlusion="helmet"), "occlusion"),
    (dict(occlusion="hand", occlusion_fraction=0.3), "occlusion_fraction"),
    (dict(occlusion="block", occlusion_fraction=1.5), "occlusion_fraction"),
    (dict(makeup={"lipstick": "plaid"}), "lipstick"),
    (dict(makeup={"tattoo": "red"}), "makeup"),
    (dict(wobble=3), "wobble"),
])
def test_bad_input_is_a_clear_error(world, kwargs, match):
    with pytest.raises(ValueError, match=match):
        world.sample(**{"n_identities": 1, **kwargs})


def test_bad_world_arguments():
    with pytest.raises(ValueError, match="seed"):
        FaceWorld(seed=-1)
    with pytest.raises(ValueError, match="size"):
        FaceWorld(size=8)


# ---------------------------------------------------------------- video
def test_video_events_blinks_and_pulse(world):
    fps = 20
    T = 4 * fps
    t = np.arange(T) / fps
    ppg = np.sin(2 * np.pi * 1.1 * t)
    events = [dict(kind="macro", emotion="happy", onset=0.4, apex=1.0, offset=2.0),
              dict(kind="micro", emotion="surprised", onset=2.6, apex=2.75, offset=2.95)]
    v = world.video(identity=2, duration_s=4.0, fps=fps, events=events, ppg=ppg, head_motion=False)
    assert v.frames.shape == (T, 3, 64, 64) and v.landmarks.shape == (T, 68, 2) and v.fps == fps
    ev = v.events
    assert list(ev["kind"]) == ["macro", "micro"]
    assert list(ev[["onset", "apex", "offset"]].iloc[0]) == [8, 20, 40]
    assert (ev["onset"] < ev["apex"]).all() and (ev["apex"] < ev["offset"]).all()
    # the AU trajectory peaks at the apex frame and is zero outside the event
    au12 = v.labels["AU12"].to_numpy()
    assert au12.argmax() == 20 and au12[:8].max() == 0 and au12[41:52].max() == 0
    assert v.labels.loc[55, "AU01"] > 0 and v.labels.loc[55, "AU01"] < 0.6        # low-intensity micro event
    # lip corners rise at the apex of the smile
    assert v.landmarks[20, 48, 1] < v.landmarks[2, 48, 1] - 0.5
    # blinks close the eyes at their apex
    for on, ap, off in v.blinks.itertuples(index=False):
        assert v.labels.loc[ap, "AU45"] > 0.9 and on < ap < off
    # the pulse is in the pixels: mean green of the cheeks follows the PPG (inverted: blood absorbs green)
    lm = v.landmarks[0]
    y0, y1 = int(lm[29, 1]), int(lm[33, 1])
    x0, x1 = int(lm[36, 0]), int(lm[45, 0])
    green = v.frames[:, 1, y0:y1, x0:x1].mean((1, 2)).numpy()
    assert np.corrcoef(green, v.ppg)[0, 1] < -0.5


def test_random_video_is_deterministic_and_valid():
    a = FaceWorld(seed=1, size=48).video(identity=0, duration_s=3.0, fps=8)
    b = FaceWorld(seed=1, size=48).video(identity=0, duration_s=3.0, fps=8)
    assert torch.equal(a.frames, b.frames) and a.events.equals(b.events)
    for r in a.events.itertuples():
        length = r.offset_s - r.onset_s
        assert (r.kind == "micro" and length < 0.5) or (r.kind == "macro" and 0.5 <= length <= 4.0)


@pytest.mark.parametrize("events,match", [
    ([dict(kind="macro", emotion="happy", onset=1.0, apex=0.5, offset=2.0)], "apex"),
    ([dict(kind="micro", emotion="happy", onset=1.0, apex=1.2, offset=1.8)], "micro"),
    ([dict(kind="macro", emotion="happy", onset=1.0, apex=1.5, offset=6.5)], "clip"),
    ([dict(kind="macro", emotion="happy", onset=0.1, apex=0.2, offset=4.9)], "macro"),
    ([dict(kind="micro", emotion="sad", onset=1.0, apex=1.1, offset=1.3, intensity=0.9)], "low-intensity"),
    ([dict(kind="sneeze", emotion="sad", onset=1.0, apex=1.1, offset=1.3)], "kind"),
    ([dict(kind="macro", emotion="bored", onset=1.0, apex=1.5, offset=2.0)], "emotion"),
])
def test_impossible_video_timings_are_errors(world, events, match):
    with pytest.raises(ValueError, match=match):
        world.video(identity=0, duration_s=5.0, fps=10, events=events)


def test_video_argument_errors(world):
    with pytest.raises(ValueError, match="duration_s"):
        world.video(duration_s=0)
    with pytest.raises(ValueError, match="ppg"):
        world.video(duration_s=1.0, fps=10, ppg=np.zeros(5), events=None)


# ---------------------------------------------------------------- datasets
def test_stream_and_map_datasets():
    from torch.utils.data import DataLoader

    from facelab.synth import SyntheticFaces, SyntheticFaceStream

    stream = SyntheticFaceStream(seed=0, size=32, n_identities=5, per_identity=3, batch_size=4, nuisance="mild")
    batches = list(DataLoader(stream, batch_size=None))
    assert len(batches) == len(stream) == 4
    ids = np.concatenate([b.labels["identity"].to_numpy() for b in batches])
    assert list(ids) == list(np.repeat(np.arange(5), 3))
    again = stream.batch(2)
    assert torch.equal(again.images, batches[2].images)
    ds = SyntheticFaces(seed=0, size=32, n_identities=4, per_identity=2, expression="random")
    img, label = ds[5]
    assert img.shape == (3, 32, 32) and label["identity"] == 2 and label["landmarks"].shape == (68, 2)
    assert torch.equal(ds[5][0], img)
    with pytest.raises(IndexError):
        ds[8]
    with pytest.raises(ValueError, match="n_identities"):
        SyntheticFaces(n_identities=0)


@pytest.mark.parametrize("fps", [5, 8, 12, 30, 60])
def test_random_events_are_valid_at_any_frame_rate(fps):
    from facelab.synth import video as V

    for s in range(10):
        events = V.random_events(20.0, torch.Generator().manual_seed(s), fps)
        checked = V.validate_events(events, 20.0, fps)          # raises on any impossible timing
        assert all(e["onset"] < e["apex"] < e["offset"] for e in checked)
        assert all(b["onset_s"] >= a["offset_s"] for a, b in zip(checked, checked[1:]))   # no overlap


def test_named_fields_and_landmarks_match_the_world():
    """The named columns (synth.fields) and landmark points (synth.landmarks) agree with what the world packs."""
    from facelab.core.landmarks import LANDMARKS
    from facelab.synth import MAKEUP_KINDS, fields
    from facelab.synth import landmarks as lm
    from facelab.synth.identity import HAIR_STYLES

    assert fields.Makeup.KINDS == MAKEUP_KINDS and fields.HairStyle.NAMES == HAIR_STYLES
    for kind in MAKEUP_KINDS:
        rgb, a = fields.Makeup.rgb(kind), fields.Makeup.alpha(kind)
        assert getattr(fields.Makeup, kind.upper()) == rgb and getattr(fields.Makeup, kind.upper() + "_ALPHA") == a
    world = FaceWorld(seed=0, size=32)
    b = world.sample(identities=[0], makeup={"eyeshadow": "blue"}, beard=True, glasses=True)
    assert b.labels["eyeshadow"][0] == "blue" and b.labels["beard"][0] in fields.Beard.STYLES[1:]
    assert bool(b.labels["glasses"][0])
    for eye, name in zip(lm.EYES, ("eye_right", "eye_left")):
        group = set(LANDMARKS[name].tolist())
        assert {eye.first, eye.last, eye.outer, eye.lower_inner, *eye.upper, *eye.lower} <= group
        assert list(range(eye.group.start, eye.group.stop)) == sorted(group)
    corners = {lm.MOUTH_RIGHT, lm.MOUTH_LEFT}
    for name in ("outer_upper", "outer_lower"):
        contour = lm.LIP_CONTOURS[name]
        assert {contour[0], contour[-1]} == corners and len(set(contour)) == len(contour)
    mean = lm.mean_shape()
    assert mean[lm.CHIN, 1] > mean[lm.NOSE_TIP, 1] > mean[lm.EYES[0].first, 1]          # chin below nose below eyes
    assert mean[lm.JAW_RIGHT, 0] < 0 < mean[lm.JAW_LEFT, 0]                               # subject's right = image left
    with pytest.raises(ValueError, match="not a contiguous"):
        lm.span("eye_corners_outer")


def test_au_trajectory_and_identities_on_a_device():
    from facelab.synth import video as V
    from facelab.synth.identity import make_identities

    evs = V.validate_events([{"kind": "macro", "emotion": "happy", "onset": 0.2, "apex": 0.6, "offset": 1.2,
                              "intensity": 0.8}], 2.0, 10)
    traj, emotion = V.au_trajectory(20, evs, [(14, 15, 17)])
    au12, au45 = AU_NAMES.index("AU12"), AU_NAMES.index("AU45")
    assert float(traj[6, au12].max()) == pytest.approx(0.8) and float(traj[:2].abs().max()) == 0.0
    assert emotion[6] == "happy" and emotion[0] == "neutral"
    assert float(traj[15, au45].min()) == pytest.approx(1.0) and float(traj[:14, au45].max()) == 0.0
    a, b = make_identities(3, [1, 2]), make_identities(3, [1, 2], device="cpu")
    assert torch.equal(a.landmarks, b.landmarks) and b.landmarks.device.type == "cpu"
