"""Exercises of chapter 02, *A laboratory of faces*: the synthetic world's ground truth (action units, occlusion
masks, attacks, landmark symmetry)."""

from __future__ import annotations

import numpy as np

from facelab.exercises import checks
from facelab.exercises._core import exercise


def _surprised():
    from facelab.synth import EMOTION_PROTOTYPES

    return sorted({k[:4] for k in EMOTION_PROTOTYPES["surprised"]})


@exercise("02.1", kind="predict", title="What makes a face look surprised",
          statement="""
          The world draws emotions as FACS action-unit prototypes. Before you look at
          `facelab.synth.EMOTION_PROTOTYPES`, predict which action units the *surprised* prototype raises (brows up,
          eyes wide, jaw dropped), then check it. Name them as in `facelab.synth.AU_NAMES` (`"AU01"`, ...).""",
          answer='a list of action-unit names, e.g. ["AU01", "AU12"]',
          check=checks.items(_surprised, options=("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10",
                                                  "AU12", "AU14", "AU15", "AU17", "AU20", "AU23", "AU25", "AU26",
                                                  "AU45")),
          hints=["Inner and outer brow raisers, the upper-lid raiser, and two action units that open the mouth.",
                 "facelab.synth.AU_DESCRIPTIONS says what each action unit does."],
          wrong=[["AU01", "AU02", "AU05"], ["AU06", "AU12", "AU25"], ["AU01", "AU02", "AU05", "AU25", "AU26", "AU04"]])
def solution_1():
    from facelab.synth import EMOTION_PROTOTYPES

    answer = sorted(EMOTION_PROTOTYPES["surprised"])
    return answer


def _sunglasses_share() -> float:
    import torch
    from facelab.synth import FaceWorld

    batch = FaceWorld(seed=0, size=64).sample(n_identities=4, per_identity=1, occlusion="sunglasses",
                                              generator=torch.Generator().manual_seed(0))
    m, f = batch.masks.float(), batch.face_masks.float()
    return float(((m * f).flatten(1).sum(1) / f.flatten(1).sum(1)).mean())


@exercise("02.2", kind="compute", title="How much of a face do sunglasses hide?",
          statement="""
          Render four faces wearing sunglasses,
          `FaceWorld(seed=0, size=64).sample(n_identities=4, per_identity=1, occlusion="sunglasses",
          generator=torch.Generator().manual_seed(0))`, and measure from the pixel masks the share of each face's
          pixels that the occluder covers (`batch.masks` within `batch.face_masks`). What is the mean share over the
          four faces?""",
          answer="a fraction between 0 and 1 (e.g. 0.3)",
          check=checks.number(_sunglasses_share, atol=0.01, example="0.3"),
          hints=["share = (masks AND face_masks).sum() / face_masks.sum(), per image, then the mean.",
                 "labels['occluded_fraction'] holds the same share per image."],
          wrong=[0.0, 0.5, 1.0])
def solution_2():
    import torch
    from facelab.synth import FaceWorld

    batch = FaceWorld(seed=0, size=64).sample(n_identities=4, per_identity=1, occlusion="sunglasses",
                                              generator=torch.Generator().manual_seed(0))
    covered = (batch.masks & batch.face_masks).flatten(1).sum(1)
    face = batch.face_masks.flatten(1).sum(1)
    answer = float((covered / face).mean())
    return answer


def _digital():
    from facelab.synth import ATTACK_TYPES

    return sorted(k for k, v in ATTACK_TYPES.items() if v == "digital")


@exercise("02.3", kind="predict", title="Physical or digital?",
          statement="""
          `facelab.synth.ATTACK_KINDS` lists the six attacks the world can simulate: print, replay, mask3d,
          adversarial, faceswap and morph. Which of them are *digital* manipulations (they never pass in front of a
          camera as an object)?""",
          answer='a list of attack kinds, e.g. ["print"]',
          check=checks.items(_digital, options=("print", "replay", "mask3d", "adversarial", "faceswap", "morph")),
          hints=["A physical attack is an object shown to the camera: paper, a screen, a mask.",
                 "facelab.synth.ATTACK_TYPES maps each kind to 'physical' or 'digital'."],
          wrong=[["print", "replay", "mask3d"], ["adversarial"], ["replay", "adversarial", "faceswap", "morph"]])
def solution_3():
    from facelab.synth import ATTACK_TYPES

    answer = [kind for kind, family in ATTACK_TYPES.items() if family == "digital"]
    return answer


def _flip_reference(landmarks, width):
    from facelab.synth import LANDMARK_MIRROR

    lm = np.asarray(landmarks, float)
    out = lm[..., np.asarray(LANDMARK_MIRROR), :].copy()
    out[..., 0] = (width - 1) - out[..., 0]
    return out


def _cases_4():
    rng = np.random.default_rng(4)
    return [(rng.uniform(0, w, size=(68, 2)), w) for w in (64, 112, 150)] + [(rng.uniform(0, 96, (3, 68, 2)), 96)]


@exercise("02.4", kind="implement", title="Mirror a face's landmarks",
          statement="""
          Flipping an image left-right is the cheapest augmentation, but its 68 landmarks must be flipped *and
          renamed*: the subject's left eye becomes the right eye. Write `flip_landmarks(landmarks, width)` for
          arrays of shape `(..., 68, 2)` in pixel coordinates (pixel centres at integers, so x becomes
          `width - 1 - x`), reordered with the permutation `facelab.synth.LANDMARK_MIRROR` (point `i` of the flipped
          face is point `LANDMARK_MIRROR[i]` of the original, mirrored).""",
          answer="a function flip_landmarks(landmarks, width) -> array of the same shape",
          check=checks.function(_flip_reference, _cases_4, signature="flip_landmarks(landmarks, width)"),
          hints=["Two steps: reorder the points with LANDMARK_MIRROR, then mirror x; y does not change.",
                 "out = landmarks[..., LANDMARK_MIRROR, :].copy(); out[..., 0] = width - 1 - out[..., 0]"],
          wrong=[lambda lm, w: np.stack([w - 1 - np.asarray(lm)[..., 0], np.asarray(lm)[..., 1]], -1),
                 lambda lm, w: np.stack([w - np.asarray(lm)[..., 0], np.asarray(lm)[..., 1]], -1)[..., _mirror(), :],
                 "flip_landmarks"])
def solution_4():
    import numpy as np
    from facelab.synth import LANDMARK_MIRROR

    def flip_landmarks(landmarks, width):
        out = np.asarray(landmarks, float)[..., LANDMARK_MIRROR, :].copy()
        out[..., 0] = (width - 1) - out[..., 0]
        return out

    answer = flip_landmarks
    return answer


def _mirror():
    from facelab.synth import LANDMARK_MIRROR

    return np.asarray(LANDMARK_MIRROR)
