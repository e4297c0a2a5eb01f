"""The synthetic face world: a parametric, deterministic, batched face generator with full ground truth.

>>> from facelab.synth import FaceWorld
>>> world = FaceWorld(seed=0, size=112, device="cpu")
>>> images, labels = world.sample(n_identities=10, per_identity=5, nuisance="mild", expression="random")
"""

from facelab.synth.facs import AU_DESCRIPTIONS, AU_NAMES, EMOTION_PROTOTYPES, EMOTIONS, parse_au_name
from facelab.synth.landmarks import GROUPS as LANDMARK_GROUPS
from facelab.synth.landmarks import MIRROR as LANDMARK_MIRROR
from facelab.synth.render import OCCLUSIONS
from facelab.synth.data import SyntheticFaces, SyntheticFaceStream
from facelab.synth.video import FaceVideo
from facelab.synth.world import (MAKEUP_COLOURS, MAKEUP_KINDS, NUISANCE_PRESETS, POSE_LIMITS, FaceBatch, FaceWorld,
                                 caption)

__all__ = ["FaceWorld", "FaceBatch", "FaceVideo", "SyntheticFaces", "SyntheticFaceStream", "AU_NAMES", "AU_DESCRIPTIONS", "EMOTIONS", "EMOTION_PROTOTYPES", "OCCLUSIONS",
           "MAKEUP_COLOURS", "MAKEUP_KINDS", "NUISANCE_PRESETS", "POSE_LIMITS", "LANDMARK_GROUPS", "LANDMARK_MIRROR",
           "parse_au_name", "caption"]
