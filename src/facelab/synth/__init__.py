"""The synthetic face world: a parametric, deterministic, batched face generator with full ground truth.

>>> from facelab.synth import FaceWorld
>>> world = FaceWorld(seed=0, size=112, device="cpu")
>>> batch = world.sample(n_identities=10, per_identity=5, nuisance="mild", expression="random")
>>> images, labels = batch                      # (50, 3, 112, 112) in [0, 1] and a pandas DataFrame

How a face is made (``facelab.synth.render``): identity ``k`` of a seed has its own parameters (68-landmark
geometry, skin tone and texture, eyes, brows, hair, glasses, beard; :mod:`facelab.synth.identity`), drawn once into
a cached frontal *identity layer* with soft primitives; per image, FACS action units move the landmarks
(:mod:`facelab.synth.facs`) and a smooth warp carries the skin along, eyes, lips, makeup and occluders are drawn
on top, AU wrinkles come from shading templates, light comes from an analytic depth map, one ``grid_sample``
turns the head (yaw, pitch, roll with depth), and the picture is composited over a background and degraded
(resolution, blur, noise, JPEG). Everything is torch, batched and device-agnostic; the same seed gives the same
pixels on a given device.

Two rendering styles: ``FaceWorld(style="cartoon")``, the default described above (every chapter and committed
checkpoint uses it; its pixels are pinned by ``tests/test_render_checksum.py``), and the opt-in ``style="photo"``,
where the skin, brows, eyes, nose and lips are a photofit of the book's real photos
(:mod:`facelab.synth.appearance`), the landmark shape gets real-photo offsets and the action units move further
(:data:`facelab.synth.facs.PHOTO_AU_GAIN`); the same seed gives the same people's labels in both.

The renderer's stages are numbered in :mod:`facelab.synth.render`; landmarks are read through the named groups and
points of :mod:`facelab.synth.landmarks` (:mod:`facelab.core.landmarks`), packed parameters through the named columns
of :mod:`facelab.synth.fields`. How hard the world is to recognise (chapter 02's calibration) is a study:
:mod:`facelab.studies.synthetic_faces`; nothing in this package imports recognition or a study.

Conventions
-----------
* ``batch.landmarks``: iBUG 68-point layout, pixel (x, y) in the rendered image (pixel centres at integers).
* Sides: ``"AU12L"`` is the subject's *left* (image right); ``"AU12R"`` the subject's right (image left).
* ``batch.masks``: pixels whose value comes from an occluder (sunglasses, scarf, mask, hand, block, corrupted
  pixels); ``batch.face_masks``: the visible face region before occlusion; ``labels.occluded_fraction`` is the
  share of face pixels under the mask.
* Yaw > 0 turns the nose towards the image right; light azimuth > 0 lights from the image right, elevation > 0 from
  above.
"""

from facelab.synth.data import SyntheticFaces, SyntheticFaceStream
from facelab.synth.facs import AU_DESCRIPTIONS, AU_NAMES, EMOTION_PROTOTYPES, EMOTIONS, parse_au_name
from facelab.synth.landmarks import GROUPS as LANDMARK_GROUPS
from facelab.synth.landmarks import MIRROR as LANDMARK_MIRROR
from facelab.synth.render import OCCLUSIONS
from facelab.synth.video import FaceVideo
from facelab.synth.world import (MAKEUP_COLOURS, MAKEUP_KINDS, NUISANCE_PRESETS, POSE_LIMITS, FaceBatch, FaceWorld,
                                 caption)
from facelab.synth.attacks import ATTACK_KINDS, ATTACK_TYPES, apply_attack, make_attack_set  # noqa: E402

__all__ = ["FaceWorld", "FaceBatch", "FaceVideo", "SyntheticFaces", "SyntheticFaceStream", "AU_NAMES",
           "AU_DESCRIPTIONS", "EMOTIONS", "EMOTION_PROTOTYPES", "OCCLUSIONS", "MAKEUP_COLOURS", "MAKEUP_KINDS",
           "NUISANCE_PRESETS", "POSE_LIMITS", "LANDMARK_GROUPS", "LANDMARK_MIRROR", "parse_au_name", "caption",
           "ATTACK_KINDS", "ATTACK_TYPES", "apply_attack", "make_attack_set"]
