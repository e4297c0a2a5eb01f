"""The personalisation task in the synthetic world: pain (PSPI) or 7 expressions, a source population, and target
subjects who express differently, each with a short neutral control video and held-out expressive frames.

Pain follows the Prkachin-Solomon Pain Intensity of UNBC-McMaster:
``PSPI = AU4 + max(AU6, AU7) + max(AU9, AU10) + AU43``. The synthetic world renders AU45 (blink) and no separate
AU43 (eyes closed); the eye-closure term is AU45 held closed. With intensities in [0, 1] the PSPI lies in [0, 4]
(UNBC's 0-5 intensity scale gives 0-16); a frame is *pain* when its PSPI reaches :data:`PAIN_THRESHOLD`.

A target subject differs from the source population in three ways (:class:`SubjectStyle`):

* **AU gains**: each action unit is shown at ``gain x`` the felt intensity (some people express weakly);
* **a resting-face bias**: AUs present at rest (a resting frown, tight lids, a raised upper lip), added to every frame;
* **skin and light**: the targets are other identities, filmed under a light outside the source population's range.

Labels are the *felt* state (the intended AUs before gain and bias), as in BioVid where the label is the stimulus.
The control video shows the subject at rest (bias only): it is "neutral" for the subject, not for the source model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

__all__ = ["PSPI_AUS", "PAIN_THRESHOLD", "TASKS", "EXPRESSIONS7", "pspi", "SubjectStyle", "TargetData",
           "SourceData", "draw_expressions", "to_model_input", "render_source", "make_style", "render_target",
           "check_control_video", "swap_truth", "crop_faces", "crop_landmarks", "ControlCheck", "NonNeutralControlError", "ControlTooShortError",
           "NoFaceError", "TargetIsSourceError", "MIN_CONTROL_FRAMES"]

#: the action units of the PSPI (AU45 stands for AU43, eye closure, in the synthetic world)
PSPI_AUS = ("AU04", "AU06", "AU07", "AU09", "AU10", "AU45")
#: PSPI (0-4 scale of [0, 1] intensities) at and above which a frame is "pain"
PAIN_THRESHOLD = 0.8
#: the 7-class expression variant (face-api's order)
EXPRESSIONS7 = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
TASKS = {"pain": ("no pain", "pain"), "expression7": EXPRESSIONS7}
#: version of the target rendering (checkpoints trained on targets record it)
TARGET_RENDER = "one room, still head, v2"
#: fewest usable control frames (after dropping non-neutral and face-less frames) to adapt from
MIN_CONTROL_FRAMES = 8


class NonNeutralControlError(ValueError):
    """Too many frames of the control video are not at rest."""


class ControlTooShortError(ValueError):
    """The control video has too few usable frames to adapt from."""


class NoFaceError(ValueError):
    """Frames without a face where faces were expected."""


class TargetIsSourceError(ValueError):
    """A target subject is one of the source population's identities."""


def pspi(aus: pd.DataFrame | dict) -> np.ndarray:
    """PSPI = AU4 + max(AU6, AU7) + max(AU9, AU10) + AU43 (AU45 here) of a table with AU columns in [0, 1]."""
    missing = [a for a in PSPI_AUS if a not in aus]
    if missing:
        raise ValueError(f"PSPI needs the action unit columns {', '.join(PSPI_AUS)}; missing {', '.join(missing)}")
    g = {a: np.asarray(aus[a], dtype=np.float64) for a in PSPI_AUS}
    return g["AU04"] + np.maximum(g["AU06"], g["AU07"]) + np.maximum(g["AU09"], g["AU10"]) + g["AU45"]


def draw_expressions(n: int, task: str, rng: np.random.Generator) -> tuple[list[dict], np.ndarray]:
    """``n`` felt expressions (AU dicts) and their labels, balanced over the task's classes.

    pain: half pain (brow lowering, tightened lids or raised cheeks, often a wrinkled nose or raised lip, sometimes
    closed eyes) and half no pain (neutral, a smile, raised brows, a sad mouth, with PSPI AUs kept small); the label
    is ``pspi >= PAIN_THRESHOLD`` of the drawn AUs. expression7: the emotion prototypes of
    :data:`facelab.synth.EMOTION_PROTOTYPES` at intensity 0.55-1.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: expected one of {', '.join(TASKS)}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    out: list[dict] = []
    labels = np.arange(n) % len(TASKS[task])
    rng.shuffle(labels)
    if task == "expression7":
        from facelab.synth import EMOTION_PROTOTYPES

        for y in labels:
            s = float(rng.uniform(0.55, 1.0))
            out.append({k: v * s for k, v in EMOTION_PROTOTYPES[EXPRESSIONS7[y]].items()})
        return out, labels.astype(np.int64)
    U = rng.uniform
    for y in labels:
        if y == 1:
            d = {"AU04": U(0.45, 1.0)}
            if rng.random() < 0.6:
                d["AU07"] = U(0.4, 1.0)
            if "AU07" not in d or rng.random() < 0.5:
                d["AU06"] = U(0.4, 1.0)
            if rng.random() < 0.7:
                d["AU10" if rng.random() < 0.5 else "AU09"] = U(0.3, 0.9)
            if rng.random() < 0.25:
                d["AU45"] = U(0.6, 1.0)
            if rng.random() < 0.3:
                d["AU25"] = U(0.2, 0.6)
        else:
            kind = rng.integers(0, 4)
            d = {}
            if kind == 1:
                d = {"AU12": U(0.5, 1.0), "AU06": U(0.0, 0.25), "AU25": U(0.0, 0.5)}
            elif kind == 2:
                d = {"AU01": U(0.4, 1.0), "AU02": U(0.3, 1.0), "AU05": U(0.0, 0.6)}
            elif kind == 3:
                d = {"AU15": U(0.4, 1.0), "AU17": U(0.2, 0.7), "AU01": U(0.0, 0.5)}
            if rng.random() < 0.3:
                d["AU04"] = U(0.0, 0.2)
        out.append({k: float(v) for k, v in d.items()})
    labels = (pspi(_au_table(out)) >= PAIN_THRESHOLD).astype(np.int64)
    return out, labels


def _au_table(expressions: list[dict]) -> pd.DataFrame:
    from facelab.synth import AU_NAMES

    return pd.DataFrame([{a: float(e.get(a, 0.0)) for a in AU_NAMES} for e in expressions])


@dataclass
class SubjectStyle:
    """How one person shows what they feel: per-AU gains, AUs present at rest, and the light they are filmed in."""

    gains: dict = field(default_factory=dict)       # AU -> gain (missing: 1)
    rest: dict = field(default_factory=dict)        # AU -> intensity at rest
    light: dict = field(default_factory=dict)       # FaceWorld.sample overrides (light_azimuth, ambient, ...)

    def shown(self, felt: dict) -> dict:
        """The AUs the face shows: ``clip(gain x felt + rest, 0, 1)``."""
        keys = set(felt) | set(self.rest)
        return {k: float(np.clip(self.gains.get(k, 1.0) * felt.get(k, 0.0) + self.rest.get(k, 0.0), 0.0, 1.0))
                for k in keys}


#: resting faces a target may have (drawn per target)
_REST_FACES = ({"AU04": 0.45, "AU07": 0.35}, {"AU04": 0.35, "AU10": 0.3, "AU07": 0.2},
               {"AU06": 0.35, "AU04": 0.3, "AU09": 0.2}, {"AU07": 0.45, "AU04": 0.3, "AU15": 0.3})


def make_style(rng: np.random.Generator, *, strength: float = 1.0) -> SubjectStyle:
    """A target's style: gains 0.6-1 on each PSPI/expressive AU, one of the resting faces scaled by ``strength``,
    and a side light outside the source population's range."""
    from facelab.synth import AU_NAMES

    gains = {a: float(rng.uniform(0.6, 1.0)) for a in AU_NAMES}
    rest = {k: v * strength for k, v in _REST_FACES[int(rng.integers(len(_REST_FACES)))].items()}
    side = 1.0 if rng.random() < 0.5 else -1.0
    light = {"light_azimuth": float(side * rng.uniform(55, 75)), "ambient": float(rng.uniform(0.25, 0.32)),
             "light_intensity": float(rng.uniform(1.15, 1.3)), "light_elevation": float(rng.uniform(0, 15))}
    return SubjectStyle(gains=gains, rest=rest, light=light)


def _crop_box(landmarks: torch.Tensor, margin: float = 1.15):
    lm = landmarks.float()
    lo, hi = lm.min(1).values, lm.max(1).values
    centre = (lo + hi) / 2
    centre[:, 1] -= 0.06 * (hi[:, 1] - lo[:, 1])            # a little brow/forehead above the landmarks
    half = margin * (hi - lo).max(1).values / 2
    return centre, half


def crop_landmarks(landmarks: torch.Tensor, size: int, *, margin: float = 1.15) -> torch.Tensor:
    """The 68 landmarks (N, 68, 2) in the pixel frame of :func:`crop_faces`'s crops resized to ``size``."""
    centre, half = _crop_box(landmarks, margin)
    return (landmarks.float() - (centre - half[:, None])[:, None]) / (2 * half)[:, None, None] * size - 0.5


def crop_faces(images: torch.Tensor, landmarks: torch.Tensor, *, margin: float = 1.15) -> torch.Tensor:
    """Square crops (N, 3, H, W) centred on each face's 68 landmarks, side ``margin`` x the landmarks' extent
    (what a detector + aligner gives); resampled at the input resolution."""
    n, _, H, W = images.shape
    centre, half = _crop_box(landmarks, margin)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = half / (W / 2)
    theta[:, 1, 1] = half / (H / 2)
    theta[:, 0, 2] = (centre[:, 0] + 0.5) / (W / 2) - 1
    theta[:, 1, 2] = (centre[:, 1] + 0.5) / (H / 2) - 1
    grid = F.affine_grid(theta, (n, 3, H, W), align_corners=False)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)


def to_model_input(images: torch.Tensor, size: int, *, grey: bool = True,
                   landmarks: torch.Tensor | None = None) -> torch.Tensor:
    """Rendered frames (N, 3, H, W) in [0, 1] -> the model's input (N, 1 or 3, size, size), area-resized; with
    ``landmarks`` the frames are first cropped to the face (:func:`crop_faces`)."""
    from facelab.core.images import check_images, luminance

    x = check_images(images, "frames", channels=(3,))
    if x.shape[0] == 0:
        raise ValueError("no frames given (expected (N, 3, H, W) with N >= 1)")
    x = x.float()
    if landmarks is not None:
        x = crop_faces(x, landmarks)
    if grey:
        x = luminance(x)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="area") if x.shape[-1] >= size else \
            F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.clamp(0, 1).contiguous()


@dataclass
class SourceData:
    """Labelled source frames: ``x`` (N, C, S, S), ``y`` (N,), ``identity`` (N,), ``aus`` (AU table), ``landmarks``
    (N, 68, 2) in the crops' pixel frame."""

    x: torch.Tensor
    y: torch.Tensor
    identity: np.ndarray
    aus: pd.DataFrame
    task: str
    landmarks: torch.Tensor | None = None


def render_source(world, identities, per_identity: int, task: str, *, size: int, grey: bool = True,
                  seed: int = 0, nuisance: str = "mild", chunk: int = 400, expressions=None) -> SourceData:
    """Labelled frames of the source population (felt = shown: the source population has gain 1 and no bias).

    ``expressions = (AU dicts, labels)`` replaces the drawn expressions: the same call with other expressions
    renders the same people under the same pose, light and degradations (what :func:`swap_truth` uses)."""
    ids = np.repeat(np.asarray(list(identities), dtype=np.int64), per_identity)
    rng = np.random.default_rng(seed)
    exprs, y = draw_expressions(len(ids), task, rng)
    if expressions is not None:
        exprs, y = list(expressions[0]), np.asarray(expressions[1])
    g = torch.Generator().manual_seed(seed)
    xs, lms = [], []
    for s in range(0, len(ids), chunk):
        b = world.sample(identities=ids[s:s + chunk], nuisance=nuisance, expression=exprs[s:s + chunk],
                         generator=g).to("cpu")                     # a world on a GPU renders; the data live here
        xs.append(to_model_input(b.images, size, grey=grey, landmarks=b.landmarks))
        lms.append(crop_landmarks(b.landmarks, size))
    return SourceData(torch.cat(xs), torch.as_tensor(y), ids, _au_table(exprs), task, torch.cat(lms))


def swap_truth(world, source: "SourceData", identities, per_identity: int, *, seed: int = 0, pair_seed: int = 0,
               **kw) -> tuple[torch.Tensor, torch.Tensor]:
    """For each source frame ``k`` a partner frame of another identity and the truth of the swap: frame ``k``'s
    person, pose and light with the partner's expression. Returns ``(partner index, truth images)``."""
    rng = np.random.default_rng(pair_seed)
    n = len(source.identity)
    partner = rng.permutation(n)
    same = source.identity[partner] == source.identity
    while same.any():
        partner[same] = rng.integers(0, n, int(same.sum()))
        same = source.identity[partner] == source.identity
    exprs = [{k: float(v) for k, v in source.aus.iloc[int(p)].items() if v > 0} for p in partner]
    truth = render_source(world, identities, per_identity, source.task, seed=seed,
                          expressions=(exprs, source.y.numpy()[partner]), **kw)
    return torch.as_tensor(partner), truth.x


@dataclass
class TargetData:
    """One target subject: the control video (at rest) split into adaptation/validation frames, and expressive
    frames with labels split into an oracle-training part and the evaluation part."""

    identity: int
    style: SubjectStyle
    control: torch.Tensor          # (T, C, S, S) model input, at rest
    control_rgb: torch.Tensor      # (T, 3, H, W) rendered frames (for the identity judge)
    control_landmarks: torch.Tensor  # (T, 68, 2) in the crops' pixel frame
    control_val: np.ndarray        # bool (T,), the early-stopping split
    x: torch.Tensor                # expressive frames (N, C, S, S)
    y: torch.Tensor                # felt labels
    rgb: torch.Tensor              # rendered expressive frames
    landmarks: torch.Tensor          # (N, 68, 2) in the crops' pixel frame
    oracle_train: np.ndarray       # bool (N,): frames the oracle may train on (the rest is evaluated)
    aus_felt: pd.DataFrame
    aus_shown: pd.DataFrame
    check: "ControlCheck | None" = None

    @property
    def eval_x(self) -> torch.Tensor:
        return self.x[~self.oracle_train]

    @property
    def eval_y(self) -> torch.Tensor:
        return self.y[~self.oracle_train]


def render_target(world, identity: int, style: SubjectStyle, task: str, *, size: int, grey: bool = True,
                  n_control: int = 30, n_expressive: int = 120, oracle_share: float = 0.5, val_share: float = 0.25,
                  seed: int = 0, source_identities=None, control_events=None) -> TargetData:
    """Render one target subject: ``n_control`` frames of a video at rest (15 fps, head motion, no blinks) and
    ``n_expressive`` labelled frames, all in one room: the subject's light, a plain background, no degradation
    (the video's head motion; small random head poses for the expressive frames).

    ``control_events``: expression events put into the control video (to test :func:`check_control_video`).
    Raises :class:`TargetIsSourceError` when ``identity`` is in ``source_identities``.
    """
    if source_identities is not None and int(identity) in {int(i) for i in source_identities}:
        raise TargetIsSourceError(f"target identity {identity} is one of the source population's identities: a "
                                  "target must be a person the source model never saw (pick another identity)")
    if n_control < 2:
        raise ControlTooShortError(f"a control video needs at least {MIN_CONTROL_FRAMES} frames, got {n_control}")
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    fps = 15.0
    light = dict(style.light)
    vid = world.video(identity=int(identity), duration_s=n_control / fps, fps=fps, events=control_events,
                      blinks=False, head_motion=True, nuisance="none", generator=g)
    # the clip's head motion and events, re-rendered with the resting face added and under the subject's light
    ctrl_rgb, ctrl_lm = _rerender_with_rest(world, vid, style, seed=seed)
    exprs, y = draw_expressions(n_expressive, task, rng)
    shown = [style.shown(e) for e in exprs]
    b = world.sample(identities=[int(identity)] * n_expressive, nuisance="none", expression=shown, generator=g,
                     yaw=(-6, 6), pitch=(-4, 4), roll=(-3, 3), **light).to("cpu")
    T = ctrl_rgb.shape[0]
    val = np.zeros(T, dtype=bool)
    val[T - max(1, int(round(val_share * T))):] = True          # the end of the video validates
    order = rng.permutation(n_expressive)
    oracle = np.zeros(n_expressive, dtype=bool)
    oracle[order[:int(round(oracle_share * n_expressive))]] = True
    felt = _au_table(exprs)
    return TargetData(identity=int(identity), style=style, control=to_model_input(ctrl_rgb, size, grey=grey, landmarks=ctrl_lm),
                      control_rgb=ctrl_rgb, control_landmarks=crop_landmarks(ctrl_lm, size), control_val=val,
                      x=to_model_input(b.images, size, grey=grey, landmarks=b.landmarks), y=torch.as_tensor(y), rgb=b.images,
                      landmarks=crop_landmarks(b.landmarks, size), oracle_train=oracle, aus_felt=felt, aus_shown=_au_table(shown),
                      check=None)


def _rerender_with_rest(world, vid, style: SubjectStyle, *, seed: int = 0, motion: float = 0.3):
    """The video's frames with the subject's resting AUs added to each frame's AUs, its per-frame head pose scaled
    by ``motion`` (a subject sitting still for a baseline recording), and the subject's light."""
    from facelab.synth import AU_NAMES

    labels = vid.labels
    exprs = [style.shown({a: float(labels[a].iloc[t]) for a in AU_NAMES if labels[a].iloc[t] > 0})
             for t in range(len(labels))]
    pose = {k: motion * torch.as_tensor(labels[k].to_numpy().copy(), dtype=torch.float32)
            for k in ("yaw", "pitch", "roll")}
    frames, lms = [], []
    light = style.light
    g = torch.Generator().manual_seed(int(vid.identity) * 31 + 7 + seed)
    for t in range(len(exprs)):
        b = world.sample(identities=[vid.identity], nuisance="none", expression=[exprs[t]], generator=g,
                         yaw=float(pose["yaw"][t]), pitch=float(pose["pitch"][t]), roll=float(pose["roll"][t]),
                         **light).to("cpu")
        frames.append(b.images)
        lms.append(b.landmarks)
    return torch.cat(frames), torch.cat(lms)


def _edges(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([(x[..., 1:, :-1] - x[..., :-1, :-1]).abs(), (x[..., :-1, 1:] - x[..., :-1, :-1]).abs()], -3)


def _edge_correlation(frames: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """Correlation of each frame's gradient magnitudes with the template's (robust to light and skin tone)."""
    e = _edges(frames).flatten(1)
    t = _edges(template[None]).flatten()
    ec, tc = e - e.mean(1, keepdim=True), t - t.mean()
    return (ec @ tc) / (ec.norm(dim=1) * tc.norm() + 1e-8)


@dataclass
class ControlCheck:
    """What :func:`check_control_video` found: frames kept, frames dropped as not at rest or without a face."""

    keep: np.ndarray
    non_neutral: np.ndarray
    no_face: np.ndarray
    deviation: np.ndarray
    face_score: np.ndarray

    def summary(self) -> str:
        return (f"{int(self.keep.sum())} of {len(self.keep)} control frames kept; {int(self.non_neutral.sum())} "
                f"dropped as not at rest, {int(self.no_face.sum())} as without a face")


def check_control_video(frames: torch.Tensor, *, face_template: torch.Tensor | None = None,
                        min_frames: int = MIN_CONTROL_FRAMES, max_non_neutral: float = 0.5, k_mad: float = 3.5,
                        min_deviation: float = 0.01, min_face_corr: float = 0.08, aus: pd.DataFrame | None = None,
                        rest: dict | None = None) -> ControlCheck:
    """Find the frames of a "neutral" control video that are not at rest or show no face.

    * **not at rest**: a frame whose mean absolute difference from the video's median frame exceeds the median
      deviation by ``k_mad`` robust standard deviations (and ``min_deviation``) - an expression in a video at rest
      is an outlier against the median frame. With ground-truth ``aus`` (synthetic data), frames whose PSPI is
      more than 0.25 above the subject's resting PSPI (``rest``) are flagged too.
    * **no face**: a frame whose gradient magnitudes correlate with those of ``face_template`` (the mean face of
      the source population, same size) below ``min_face_corr`` (faces under any light: 0.15-0.3; noise or a blank
      frame: about 0).

    Raises
    ------
    NoFaceError
        when no frame shows a face.
    NonNeutralControlError
        when more than ``max_non_neutral`` of the face frames are not at rest (this is not a neutral video).
    ControlTooShortError
        when fewer than ``min_frames`` frames remain.
    """
    if not torch.is_tensor(frames) or frames.dim() != 4:
        raise ValueError("control frames must be a tensor (T, C, S, S) of model inputs in [0, 1]")
    T = frames.shape[0]
    if T < min_frames:
        raise ControlTooShortError(f"the control video has {T} frames; adapting needs at least {min_frames} "
                                   "frames at rest (record a longer neutral video, e.g. 2 s at 15 fps)")
    x = frames.float().flatten(1)
    if face_template is not None:
        t = face_template.float()
        if t.numel() != x.shape[1]:
            raise ValueError(f"face_template has {t.numel()} values, frames have {x.shape[1]} per frame")
        face_score = _edge_correlation(frames.float(), t.reshape(frames.shape[1:])).numpy()
    else:
        face_score = np.ones(T)
    no_face = face_score < min_face_corr
    if no_face.all():
        raise NoFaceError(f"none of the {T} control frames shows a face (edge correlation with the mean face below "
                          f"{min_face_corr}); give cropped face frames of the target person")
    med = x[torch.as_tensor(~no_face)].median(0).values
    dev = (x - med).abs().mean(1).numpy()
    d_ok = dev[~no_face]
    mad = np.median(np.abs(d_ok - np.median(d_ok))) * 1.4826 + 1e-6
    non_neutral = (dev > np.median(d_ok) + k_mad * mad) & (dev > min_deviation) & ~no_face
    if aus is not None:
        p = pspi(aus)
        base = float(pspi({a: [float((rest or {}).get(a, 0.0))] for a in PSPI_AUS})[0])
        non_neutral |= (p > base + 0.25) & ~no_face
    n_face = int((~no_face).sum())
    if non_neutral.sum() > max_non_neutral * n_face:
        raise NonNeutralControlError(f"{int(non_neutral.sum())} of {n_face} control frames are not at rest: this "
                                     "does not look like a neutral video (expected a subject at rest, with at most "
                                     f"{max_non_neutral:.0%} of frames moving)")
    keep = ~no_face & ~non_neutral
    if keep.sum() < min_frames:
        raise ControlTooShortError(f"only {int(keep.sum())} control frames are usable ({int(non_neutral.sum())} "
                                   f"not at rest, {int(no_face.sum())} without a face); adapting needs at least "
                                   f"{min_frames}")
    return ControlCheck(keep=keep, non_neutral=non_neutral, no_face=no_face, deviation=dev, face_score=face_score)
