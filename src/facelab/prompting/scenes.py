"""Scenes with context for zero-shot emotion prompting: rendered faces composited side by side, each person with a
felt emotion, a displayed expression, a body posture, a shared scene type, and the others' emotions.

Every context cue has a **controlled reliability** (:class:`Reliability`): with probability ``r`` the cue points to
the target's felt emotion, otherwise to a uniformly drawn other emotion. The face is a cue too, controlled by the
tier (:data:`TIERS`):

* ``easy``: the face displays the felt emotion at full intensity (0.8-1.0), unoccluded;
* ``medium``: the display is subtle (intensity 0.15-0.35, the size of a micro-expression's apex);
* ``hard``: half the targets wear an occluder (mask, scarf, sunglasses or a hand) over a full display, the other
  half *display a different emotion* than they feel (a polite smile at a funeral): only context decides.

Persons other than the target display their own emotion at full intensity. Faces come from
:class:`facelab.synth.FaceWorld` (default renderer, no nuisance) at 112 px; the target's identities are drawn from a
range disjoint from those the action-unit regressor was trained on (:mod:`facelab.prompting.aus`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = ["LABELS", "TIERS", "POSTURES", "SCENE_TYPES", "OCCLUDERS", "Reliability", "Person", "Scene",
           "NoFaceError", "make_scenes", "detected_persons", "TILE", "SCENE_IDENTITY_OFFSET"]

#: The seven emotions asked about (face-api's classes; the synthetic world's prototypes without contempt).
LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
TIERS = ("easy", "medium", "hard")
#: What the body does when a person feels each emotion (one phrase each).
POSTURES = {
    "neutral": "standing still, arms relaxed at the sides",
    "happy": "arms thrown up, bouncing on the toes",
    "sad": "shoulders slumped, head bowed, moving slowly",
    "angry": "fists clenched, leaning forward, chest out",
    "fearful": "shrinking back, arms raised to shield the body",
    "disgusted": "turning away, one hand covering the nose",
    "surprised": "jerking back, both hands flying to the cheeks",
}
#: Scene types that go with each emotion.
SCENE_TYPES = {
    "neutral": ("a bus stop on an ordinary morning", "an office corridor", "a quiet waiting room"),
    "happy": ("a birthday party", "a wedding reception", "a team celebrating a win"),
    "sad": ("a funeral", "a farewell at a train station", "a hospital bedside after bad news"),
    "angry": ("a heated argument in an office", "a dispute after a car crash", "a shouting match at a meeting"),
    "fearful": ("a dark alley at night with footsteps behind", "a building on fire", "a ghost train ride"),
    "disgusted": ("a kitchen full of rotten food", "an overflowing rubbish dump", "a filthy public toilet"),
    "surprised": ("a surprise party the moment the lights come on", "an unexpected reunion at an airport",
                  "a magic show at the big reveal"),
}
#: Occluders of the hard tier (each hides part of the face; the renderer's names).
OCCLUDERS = ("mask", "scarf", "sunglasses", "hand")
#: Identities of scene persons start here; the AU regressor trains on identities below it.
SCENE_IDENTITY_OFFSET = 20000
TILE = 112
_GAP = 8


class NoFaceError(ValueError):
    """A scene has no detected face to ask about."""


@dataclass(frozen=True)
class Reliability:
    """Probability that each context cue points to the target's felt emotion (else: another emotion at random)."""

    posture: float = 0.6
    scene: float = 0.6
    others: float = 0.6

    def __post_init__(self):
        for k in ("posture", "scene", "others"):
            v = getattr(self, k)
            if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
                raise ValueError(f"reliability of {k} must be a probability in [0, 1], got {v!r}")


@dataclass
class Person:
    """One person in a scene (coordinates in scene pixels)."""

    number: int                 # 1-based number drawn in the marked image
    identity: int
    emotion: str                # felt (ground truth)
    display: str                # what the face shows
    intensity: float
    occlusion: str              # "none" or one of OCCLUDERS
    posture: str
    posture_emotion: str        # the emotion the posture cue points to
    box: tuple[int, int, int, int]
    landmarks: np.ndarray       # (68, 2)
    visible: np.ndarray         # (68,) bool: landmark not under an occluder
    tile: torch.Tensor          # (3, 112, 112) the face tile as rendered

    @property
    def detected(self) -> bool:
        """The face counts as detected when at least 30 % of its landmarks are visible."""
        return bool(self.visible.mean() >= 0.3)


@dataclass
class Scene:
    """A composited scene: image, persons, the scene type and which person the question is about."""

    index: int
    tier: str
    kind: str                   # "full", "subtle", "occluded" or "contradicting"
    image: torch.Tensor         # (3, H, W) in [0, 1]
    persons: list[Person]
    scene_type: str
    scene_emotion: str
    target: int                 # index into persons
    extra: dict = field(default_factory=dict)

    @property
    def person(self) -> Person:
        return self.persons[self.target]

    @property
    def label(self) -> str:
        return self.person.emotion


def detected_persons(scene: Scene) -> list[Person]:
    """The persons whose face is detected; a :class:`NoFaceError` when there is none."""
    found = [p for p in scene.persons if p.detected]
    if not found:
        raise NoFaceError(f"scene {scene.index} ({scene.scene_type!r}) has no detected face: "
                          f"{len(scene.persons)} person(s), none with at least 30 % of the landmarks visible")
    return found


def _cue(rng: np.random.Generator, truth: str, r: float) -> str:
    if rng.random() < r:
        return truth
    return str(rng.choice([x for x in LABELS if x != truth]))


def _expression(emotion: str, intensity: float) -> dict:
    from facelab.synth import EMOTION_PROTOTYPES

    return {au: v * intensity for au, v in EMOTION_PROTOTYPES[emotion].items()}


def make_scenes(world, n_per_tier: int, *, tiers=TIERS, reliability: Reliability | None = None, seed: int = 0,
                max_people: int = 3) -> list[Scene]:
    """``n_per_tier`` scenes per tier, each with 2..``max_people`` persons; labels balanced over :data:`LABELS`.

    ``world`` is a :class:`facelab.synth.FaceWorld` with ``size == 112``. Deterministic in ``seed``.
    """
    if getattr(world, "size", None) != TILE:
        raise ValueError(f"scenes are composited from {TILE}-px faces: pass FaceWorld(size={TILE}), "
                         f"got size={getattr(world, 'size', None)!r}")
    if isinstance(n_per_tier, bool) or not isinstance(n_per_tier, (int, np.integer)) or n_per_tier < 1:
        raise ValueError(f"n_per_tier must be a positive integer, got {n_per_tier!r}")
    unknown = [t for t in tiers if t not in TIERS]
    if unknown or not tiers:
        raise ValueError(f"unknown tiers {unknown}: expected some of {TIERS}")
    if not (isinstance(max_people, int) and max_people >= 2):
        raise ValueError(f"max_people must be an integer >= 2 (a target and at least one other), got {max_people!r}")
    rel = reliability or Reliability()
    rng = np.random.default_rng(seed)
    specs = []                        # one dict per person to render
    scenes = []
    identity = SCENE_IDENTITY_OFFSET + 1000 * int(seed)
    for tier in tiers:
        truths = [LABELS[i % len(LABELS)] for i in range(n_per_tier)]
        rng.shuffle(truths)
        for j, truth in enumerate(truths):
            n_people = int(rng.integers(2, max_people + 1))
            target = int(rng.integers(0, n_people))
            if tier == "easy":
                kind, display, inten, occ = "full", truth, float(rng.uniform(0.8, 1.0)), "none"
            elif tier == "medium":
                kind, display, inten, occ = "subtle", truth, float(rng.uniform(0.15, 0.35)), "none"
            elif j % 2 == 0:
                kind, display, inten = "occluded", truth, float(rng.uniform(0.8, 1.0))
                occ = OCCLUDERS[(j // 2) % len(OCCLUDERS)]
            else:
                kind, occ, inten = "contradicting", "none", float(rng.uniform(0.7, 1.0))
                display = str(rng.choice([x for x in LABELS if x not in (truth, "neutral")]))
            scene_emotion = _cue(rng, truth, rel.scene)
            scene_type = str(rng.choice(SCENE_TYPES[scene_emotion]))
            people = []
            for k in range(n_people):
                if k == target:
                    emo, disp, it, oc = truth, display, inten, occ
                else:
                    emo = _cue(rng, truth, rel.others)
                    disp, it, oc = emo, float(rng.uniform(0.8, 1.0)), "none"
                pe = _cue(rng, emo, rel.posture) if k == target else emo
                people.append(dict(scene=len(scenes), number=k + 1, identity=identity, emotion=emo, display=disp,
                                   intensity=it, occlusion=oc, posture_emotion=pe))
                identity += 1
            specs.extend(people)
            scenes.append(dict(index=len(scenes), tier=tier, kind=kind, scene_type=scene_type,
                               scene_emotion=scene_emotion, target=target, n=n_people))
    tiles, lms, vis = _render(world, specs, seed)
    out = []
    for sc in scenes:
        members = [i for i, s in enumerate(specs) if s["scene"] == sc["index"]]
        n = len(members)
        W = _GAP + n * (TILE + _GAP)
        H = TILE + 2 * _GAP
        yy = torch.linspace(0.0, 1.0, H)[:, None].expand(H, W)
        image = torch.stack([0.80 - 0.25 * yy, 0.78 - 0.2 * yy, 0.74 - 0.15 * yy])
        persons = []
        for k, i in enumerate(members):
            x0, y0 = _GAP + k * (TILE + _GAP), _GAP
            image[:, y0:y0 + TILE, x0:x0 + TILE] = tiles[i]
            lm = lms[i] + np.array([x0, y0], dtype=np.float32)
            pad = 4
            box = (int(max(x0, np.floor(lm[:, 0].min()) - pad)), int(max(y0, np.floor(lm[:, 1].min()) - 3 * pad)),
                   int(min(x0 + TILE - 1, np.ceil(lm[:, 0].max()) + pad)),
                   int(min(y0 + TILE - 1, np.ceil(lm[:, 1].max()) + pad)))
            s = specs[i]
            persons.append(Person(number=s["number"], identity=s["identity"], emotion=s["emotion"],
                                  display=s["display"], intensity=s["intensity"], occlusion=s["occlusion"],
                                  posture=POSTURES[s["posture_emotion"]], posture_emotion=s["posture_emotion"],
                                  box=box, landmarks=lm, visible=vis[i], tile=tiles[i]))
        out.append(Scene(index=sc["index"], tier=sc["tier"], kind=sc["kind"], image=image.clamp(0, 1),
                         persons=persons, scene_type=sc["scene_type"], scene_emotion=sc["scene_emotion"],
                         target=sc["target"]))
    return out


def _render(world, specs, seed):
    """Render every person's face tile, grouped by occluder; landmarks and their visibility."""
    n = len(specs)
    tiles = torch.zeros(n, 3, TILE, TILE)
    lms = np.zeros((n, 68, 2), np.float32)
    vis = np.ones((n, 68), bool)
    for k, occ in enumerate(("none",) + OCCLUDERS):
        idx = [i for i, s in enumerate(specs) if s["occlusion"] == occ]
        if not idx:
            continue
        g = torch.Generator().manual_seed(1000 * int(seed) + k)
        batch = world.sample(identities=[specs[i]["identity"] for i in idx],
                             expression=[_expression(specs[i]["display"], specs[i]["intensity"]) for i in idx],
                             occlusion=None if occ == "none" else occ, nuisance="none", generator=g)
        tiles[idx] = batch.images.float().cpu()
        L = batch.landmarks.float().cpu().numpy()
        lms[idx] = L
        if occ != "none":
            m = batch.masks[:, 0].cpu().numpy()
            xi = np.clip(np.round(L[..., 0]).astype(int), 0, TILE - 1)
            yi = np.clip(np.round(L[..., 1]).astype(int), 0, TILE - 1)
            vis[idx] = ~m[np.arange(len(idx))[:, None], yi, xi]
    return tiles, lms, vis
