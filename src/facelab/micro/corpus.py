"""A synthetic MMME-like corpus: subjects x trials of face video with micro- and macro-expressions and synchronized
EEG + peripheral physiology, with every coupling and noise level a parameter.

Each subject has one continuous session (an :class:`mne.io.RawArray`, see :mod:`facelab.micro.physio`). A trial is

``| baseline (rest) | stimulus: face video with micro- and macro-expressions | tail (SCRs decay) |``

Every trial's video is rendered with the face world's video API (:meth:`facelab.synth.FaceWorld.video`): blinks,
head motion, speech-like mouth movements, camera noise and JPEG compression are in the pixels, as in real long
videos. Two difficulty presets (:data:`DIFFICULTY`, :meth:`CorpusConfig.preset`): ``"realistic"`` (the default: head
motion, talking, macro-expressions overlapping the micro ones, weak and short micro-expressions, camera noise and
compression, small event-related EEG and peripheral changes under noise) and ``"easy"`` (the teaching setting: a
still face, no talking, clean frames, strong couplings).

and carries one target emotion (as an MMME trial is one emotion-eliciting clip). Ground truth per expression: kind
(micro: onset to offset < 0.5 s; macro: longer), emotion, onset/apex/offset frames, apex action units. The same PPG
that goes into the session modulates the skin of the video (remote photoplethysmography, as in real faces).

How each modality carries the emotion, and how much, is set by :class:`CorpusConfig`:

- video: the apex AUs are ``video_coupling`` x the emotion's prototype + (1 - ``video_coupling``) x another
  emotion's prototype (masked, blended expressions), scaled by a low intensity for micro-expressions;
- EEG: ``eeg_coupling`` is the relative band-power change after an onset (``eeg_noise`` the background level);
- peripheral: ``periph_coupling`` scales the emotion-specific heart rate / breathing / SCR / skin-temperature
  changes (``periph_noise`` the trial-to-trial variability).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Sequence

import numpy as np
import pandas as pd

from facelab.micro import physio
from facelab.micro.flow import crop_faces, face_box, face_regions, onset_apex_flow, to_gray_uint8

__all__ = ["DIFFICULTY", "CorpusConfig", "Trial", "Session", "Corpus", "make_corpus", "with_physiology",
           "PHYSIOLOGY_PARAMETERS", "schedule_events", "speech_events", "render_videos",
           "events_to_annotations", "MICRO_MAX_S"]

#: Micro-expressions last less than half a second from onset to offset.
MICRO_MAX_S = 0.5


#: The difficulty presets (field values of :class:`CorpusConfig`). ``realistic`` is the default of every field.
DIFFICULTY = {
    "realistic": dict(video_s=8.0, micro_per_trial=(1, 2), macro_per_trial=(1, 2), micro_intensity=(0.25, 0.5),
                      micro_length_s=(0.2, 0.45), macro_intensity=(0.5, 0.9), macro_overlap=True, video_coupling=0.6,
                      eeg_coupling=0.8, eeg_noise=1.0, periph_coupling=0.6, periph_noise=1.2, head_motion=True,
                      speech_per_s=0.3, camera_noise=0.03, jpeg_quality=60),
    "easy": dict(video_s=6.0, micro_per_trial=(1, 2), macro_per_trial=(0, 1), micro_intensity=(0.35, 0.6),
                 micro_length_s=(0.27, 0.47), macro_intensity=(0.7, 1.0), macro_overlap=False, video_coupling=0.6,
                 eeg_coupling=1.0, eeg_noise=0.7, periph_coupling=1.0, periph_noise=1.0, head_motion=False,
                 speech_per_s=0.0, camera_noise=0.0, jpeg_quality=100),
}


@dataclass(frozen=True)
class CorpusConfig:
    """Sizes, couplings, distractors and noise levels of the synthetic corpus.

    The defaults are the ``"realistic"`` preset of :data:`DIFFICULTY`; ``CorpusConfig.preset("easy", ...)`` gives the
    teaching setting. ``full_video_trials``: trials per subject that are spotted (all trials are rendered as videos).
    """

    n_subjects: int = 6
    trials_per_subject: int = 5
    video_s: float = 8.0
    baseline_s: float = 3.0
    tail_s: float = 5.0
    fps: int = 30
    size: int = 64
    crop_size: int = 64
    sfreq: float = 250.0
    emotions: tuple = physio.EMOTIONS
    micro_per_trial: tuple = (1, 2)
    macro_per_trial: tuple = (1, 2)
    micro_intensity: tuple = (0.25, 0.5)
    micro_length_s: tuple = (0.2, 0.45)
    macro_intensity: tuple = (0.5, 0.9)
    macro_overlap: bool = True
    video_coupling: float = 0.6
    eeg_coupling: float = 0.8
    eeg_noise: float = 1.0
    line_noise_uv: float = 5.0
    blink_uv: float = 120.0
    blinks_per_s: float = 0.25
    periph_coupling: float = 0.6
    periph_noise: float = 1.2
    ppg_skin_amplitude: float = 0.03
    head_motion: bool = True
    speech_per_s: float = 0.3
    camera_noise: float = 0.03
    jpeg_quality: int = 60
    full_video_trials: int = 1
    keep_frames: int = 1
    seed: int = 0

    def __post_init__(self):
        for name in ("n_subjects", "trials_per_subject", "fps", "size", "crop_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("video_coupling",):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        for name in ("eeg_coupling", "eeg_noise", "periph_coupling", "periph_noise", "line_noise_uv", "blink_uv",
                     "speech_per_s", "camera_noise"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.video_s < 2.0 or self.baseline_s < 1.0 or self.tail_s < 2.5:
            raise ValueError("video_s >= 2, baseline_s >= 1 and tail_s >= 2.5 seconds are needed for the EEG windows "
                             f"and SCRs, got {self.video_s}, {self.baseline_s}, {self.tail_s}")
        unknown = set(self.emotions) - set(physio.EMOTIONS)
        if unknown:
            raise ValueError(f"emotions {sorted(unknown)} unknown: expected a subset of {physio.EMOTIONS}")
        lo, hi = self.micro_intensity
        if not 0 < lo <= hi <= 0.6:
            raise ValueError(f"micro_intensity must be a range inside (0, 0.6] (micro-expressions are weak), got "
                             f"{self.micro_intensity}")
        lo, hi = self.micro_length_s
        if not 0.1 <= lo <= hi < MICRO_MAX_S:
            raise ValueError(f"micro_length_s must be a range inside [0.1, {MICRO_MAX_S}) s, got {self.micro_length_s}")
        if not 1 <= int(self.jpeg_quality) <= 100:
            raise ValueError(f"jpeg_quality must lie in 1..100 (100: no compression), got {self.jpeg_quality}")

    @classmethod
    def preset(cls, difficulty: str = "realistic", **overrides) -> "CorpusConfig":
        """The configuration of a difficulty preset (:data:`DIFFICULTY`), with single fields replaced."""
        if difficulty not in DIFFICULTY:
            raise ValueError(f"unknown difficulty {difficulty!r}: expected one of {', '.join(DIFFICULTY)}")
        return cls(**{**DIFFICULTY[difficulty], **overrides})

    @property
    def trial_s(self) -> float:
        return self.baseline_s + self.video_s + self.tail_s


@dataclass
class Trial:
    """One trial: the face clip (as landmark-located crops), its ground truth, and where it sits in the session.

    ``spot``: whether the chapter spots expressions in this trial (the first ``full_video_trials`` per subject);
    ``speech``: (n, 2) onset/offset frames of the talking bursts (distractors, not ground truth); ``levels`` is kept
    for old callers (8: a smooth video).
    """

    subject: int
    trial: int
    emotion: str
    start_s: float  # trial start in the session
    video_start_s: float  # first video frame in the session
    fps: int
    events: pd.DataFrame  # kind, emotion, onset, apex, offset (frames), intensity, AU columns
    blinks: np.ndarray  # blink frames in the video
    landmarks: np.ndarray  # (T, 68, 2)
    crops: np.ndarray  # (T, S, S) uint8 grayscale face crops
    box: tuple
    regions: dict
    frames: np.ndarray | None = None  # (T, 3, H, W) uint8, kept for the first ``keep_frames`` trials only
    ppg: np.ndarray | None = None  # the PPG at the frame times (what pulsed the skin)
    levels: int = 8
    spot: bool = True
    speech: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), int))

    @property
    def n_frames(self) -> int:
        return len(self.crops)


@dataclass
class Session:
    """One subject's continuous recording (EEG + peripheral, annotations) and its trials."""

    subject: int
    raw: "mne.io.RawArray"  # noqa: F821
    trials: list[Trial]
    blinks_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    _processed: pd.DataFrame | None = field(default=None, repr=False)

    def processed(self) -> pd.DataFrame:
        """NeuroKit2-processed peripheral signals (cached)."""
        if self._processed is None:
            self._processed = physio.process_peripheral(self.raw)
        return self._processed


def schedule_events(n_frames: int, fps: int, emotion: str, n_micro: int, n_macro: int,
                    rng: np.random.Generator, *, micro_length_s: tuple = (0.27, 0.47),
                    overlap: bool = False) -> list[dict]:
    """Expression intervals in a clip, in random order.

    Micro: onset to offset ``micro_length_s`` seconds (always < :data:`MICRO_MAX_S`); macro: 0.8-1.6 s. Apex at
    35-55 % of the interval. Without ``overlap`` all intervals are at least 1.2 s apart; with ``overlap`` only the
    micro-expressions are, and each macro-expression is placed anywhere in the clip (it may cover a micro one, as in
    real long videos). Raises ``ValueError`` if the clip is too short to hold them.
    """
    lo, hi = micro_length_s
    micro_len = lambda: int(np.clip(round(rng.uniform(lo, hi) * fps), 3, max(3, int(MICRO_MAX_S * fps))))  # noqa: E731
    macro_len = lambda: int(round(rng.uniform(0.8, 1.6) * fps))  # noqa: E731
    kinds = ["micro"] * n_micro + ([] if overlap else ["macro"] * n_macro)
    rng.shuffle(kinds)
    lengths = [micro_len() if k == "micro" else macro_len() for k in kinds]
    gap = int(round(1.2 * fps))
    margin = int(round(0.4 * fps))
    need = sum(lengths) + gap * max(0, len(kinds) - 1) + 2 * margin
    extra = [macro_len() for _ in range(n_macro)] if overlap else []
    if need > n_frames or any(L + 2 * margin > n_frames for L in extra):
        most = max([need] + [L + 2 * margin for L in extra])
        raise ValueError(f"{n_micro} micro + {n_macro} macro expressions need {most} frames, the clip has {n_frames}")
    slack = n_frames - need
    cuts = np.sort(rng.integers(0, slack + 1, size=len(kinds)))
    events, pos = [], margin

    def event(kind, onset, L):
        offset = onset + L - 1
        apex = onset + max(1, min(L - 2, int(round(rng.uniform(0.35, 0.55) * (L - 1)))))
        return {"kind": kind, "emotion": emotion, "onset": int(onset), "apex": int(apex), "offset": int(offset)}

    for k, (kind, L) in enumerate(zip(kinds, lengths)):
        events.append(event(kind, pos + cuts[k], L))
        pos += L + gap
    for L in extra:
        events.append(event("macro", int(rng.integers(margin, n_frames - margin - L + 1)), L))
    return sorted(events, key=lambda e: e["onset"])


def speech_events(n_frames: int, fps: int, rate_per_s: float, rng: np.random.Generator) -> list[dict]:
    """Talking bursts (Poisson, ``rate_per_s`` per second, 1-2.5 s each) as syllable-like mouth openings
    (AU25 + AU26, 0.13-0.27 s, intensity 0.25-0.6): brief facial movements that are not expressions."""
    out = []
    n = rng.poisson(rate_per_s * n_frames / fps)
    for _ in range(n):
        start = int(rng.integers(0, max(1, n_frames - fps)))
        stop = min(n_frames - 2, start + int(rng.uniform(1.0, 2.5) * fps))
        f = start
        while f + 4 < stop:
            L = int(rng.integers(4, 9))
            if f + L > stop:
                break
            a = float(rng.uniform(0.25, 0.6))
            out.append({"kind": "speech", "onset": f, "apex": f + L // 2, "offset": f + L - 1,
                        "aus": {"AU25": 1.0, "AU26": float(rng.uniform(0.4, 1.0))}, "intensity": a})
            f += L + int(rng.integers(1, 5))
    return out


def _apex_aus(emotion: str, intensity: float, coupling: float, emotions: Sequence[str], rng) -> dict[str, float]:
    """Apex AU intensities ``intensity`` x (``coupling`` x prototype + (1 - ``coupling``) x another emotion's)."""
    from facelab.synth import EMOTION_PROTOTYPES

    others = [e for e in emotions if e != emotion]
    other = others[rng.integers(len(others))]
    aus: dict[str, float] = {}
    for name, w in ((emotion, coupling), (other, 1.0 - coupling)):
        for au, v in EMOTION_PROTOTYPES[name].items():
            aus[au] = aus.get(au, 0.0) + w * v
    return {au: float(np.clip(intensity * v * rng.uniform(0.8, 1.2), 0.0, 1.0)) for au, v in aus.items()}


def _envelope(n_frames: int, onset: int, apex: int, offset: int) -> np.ndarray:
    t = np.arange(n_frames, dtype=float)
    up = np.clip((t - onset) / max(apex - onset, 1), 0, 1)
    down = np.clip((offset - t) / max(offset - apex, 1), 0, 1)
    e = np.where(t <= apex, up, down)
    e[(t < onset) | (t > offset)] = 0.0
    return 0.5 - 0.5 * np.cos(np.pi * e)  # smooth ease-in/out


def _frame_states(n_frames, events, blinks, levels):
    state = [dict() for _ in range(n_frames)]
    for ev in events:
        env = np.round(_envelope(n_frames, ev["onset"], ev["apex"], ev["offset"]) * levels) / levels
        for f in np.flatnonzero(env > 0):
            for au, v in ev["aus"].items():
                state[f][au] = min(1.0, state[f].get(au, 0.0) + env[f] * v)
    blink_shape = np.round(np.array([0.4, 0.85, 1.0, 0.85, 0.4]) * levels) / levels
    for b in blinks:
        for d, v in zip(range(-2, 3), blink_shape):
            if 0 <= b + d < n_frames and v > 0:
                state[b + d]["AU45"] = max(state[b + d].get("AU45", 0.0), float(v))
    return [tuple(sorted((au, round(v, 3)) for au, v in s.items() if v > 0)) for s in state]


def render_videos(world, identity: int, clips: Sequence[dict], ppg_amplitude: float = 0.03, generator=None):
    """Render face clips of one identity with ``world.sample``, AU intensities following each event's envelope.

    (The corpus renders with :meth:`facelab.synth.FaceWorld.video`; this per-state renderer stays for callers that
    need exact, deduplicated AU states.)

    Parameters
    ----------
    world : facelab.synth.FaceWorld
    identity : int
    clips : list of dict
        Each ``{"n_frames": T, "events": [{"onset", "apex", "offset", "aus": {AU: intensity}}, ...],
        "blinks": [frame, ...], "ppg": None or (T,) array, "levels": int}``. The expression envelope (0 at onset and
        offset, 1 at apex) is quantised to ``levels`` steps: ``levels=8`` gives smooth dynamics, ``levels=1``
        renders only the neutral and apex states (key frames: all the onset -> apex recognisers read).
    ppg_amplitude : float
        Relative skin-brightness change per PPG standard deviation (green channel strongest, as in remote PPG).

    Returns
    -------
    list of (frames (T, 3, H, W) float32 in [0, 1], landmarks (T, 68, 2) float32)

    Notes
    -----
    Each distinct AU state is rendered once over all clips, so neutral stretches and repeated states cost nothing.
    """
    import torch

    keys = [_frame_states(c["n_frames"], c["events"], c.get("blinks", ()), int(c.get("levels", 8))) for c in clips]
    unique = list(dict.fromkeys(k for ks in keys for k in ks))
    gen = generator if generator is not None else torch.Generator().manual_seed(int(identity))
    images, landmarks, masks = [], [], []
    for start in range(0, len(unique), 64):
        chunk = unique[start:start + 64]
        batch = world.sample(identities=[identity] * len(chunk), expression=[dict(k) for k in chunk],
                             nuisance="none", generator=gen)
        images.append(batch.images.cpu().numpy())
        landmarks.append(batch.landmarks.cpu().numpy())
        fm = getattr(batch, "face_masks", None)
        masks.append(None if fm is None else fm.cpu().numpy())
    images, landmarks = np.concatenate(images), np.concatenate(landmarks)
    skin_all = None if any(m is None for m in masks) else np.concatenate(masks).astype(np.float32)
    index = {k: i for i, k in enumerate(unique)}
    out = []
    for c, ks in zip(clips, keys):
        sel = np.array([index[k] for k in ks])
        frames, lms = images[sel].astype(np.float32), landmarks[sel].astype(np.float32)
        ppg = c.get("ppg")
        if ppg is not None:
            ppg = np.asarray(ppg, dtype=float)
            T = c["n_frames"]
            if ppg.shape != (T,):
                raise ValueError(f"ppg must have one value per frame ({T}), got shape {ppg.shape}")
            z = (ppg - ppg.mean()) / (ppg.std() + 1e-9)
            skin = (skin_all[sel].reshape(T, 1, *frames.shape[2:]) if skin_all is not None
                    else np.ones((T, 1) + frames.shape[2:], np.float32))
            gain = np.array([0.5, 1.0, 0.3], np.float32).reshape(1, 3, 1, 1)
            frames = np.clip(frames * (1 + ppg_amplitude * z.reshape(-1, 1, 1, 1) * gain * skin), 0, 1)
        out.append((frames.astype(np.float32), lms))
    return out


def events_to_annotations(trials: Sequence[Trial], blinks_s: Sequence[float], duration_s: float):
    """All trials' expressions (``"micro/happy"``), trial stimuli (``"trial/happy"``) and blinks on one timeline.

    Raises
    ------
    ValueError
        If an annotation starts before 0 or ends after ``duration_s``.
    """
    import mne

    onset, dur, desc = [], [], []
    for tr in trials:
        onset.append(tr.video_start_s)
        dur.append(tr.n_frames / tr.fps)
        desc.append(f"trial/{tr.emotion}")
        for ev in tr.events.itertuples():
            onset.append(tr.video_start_s + ev.onset / tr.fps)
            dur.append((ev.offset - ev.onset + 1) / tr.fps)
            desc.append(f"{ev.kind}/{ev.emotion}")
    for b in blinks_s:
        onset.append(b)
        dur.append(0.2)
        desc.append("blink")
    onset, dur = np.asarray(onset, float), np.asarray(dur, float)
    bad = (onset < 0) | (onset + dur > duration_s + 1e-9)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"annotation {desc[i]!r} at {onset[i]:.3f}-{onset[i] + dur[i]:.3f} s lies outside the "
                         f"recording (0 to {duration_s:.3f} s)")
    return mne.Annotations(onset, dur, desc)


class Corpus:
    """Sessions of the synthetic corpus, with the per-expression tables and features the chapter uses."""

    def __init__(self, config: CorpusConfig, sessions: list[Session]):
        self.config = config
        self.sessions = sessions

    def __repr__(self) -> str:
        ev = self.events
        return (f"Corpus({len(self.sessions)} subjects, {sum(len(s.trials) for s in self.sessions)} trials, "
                f"{int((ev.kind == 'micro').sum())} micro + {int((ev.kind == 'macro').sum())} macro expressions)")

    @property
    def trials(self) -> list[Trial]:
        return [t for s in self.sessions for t in s.trials]

    @property
    def events(self) -> pd.DataFrame:
        """One row per expression: subject, trial, video id, kind, emotion, onset/apex/offset frames, onset_s."""
        rows = []
        for tr in self.trials:
            for ev in tr.events.to_dict("records"):
                rows.append({"subject": tr.subject, "trial": tr.trial, "video": f"s{tr.subject:02d}_t{tr.trial:02d}",
                             **{k: ev[k] for k in ("kind", "emotion", "onset", "apex", "offset", "intensity")},
                             "onset_s": tr.video_start_s + ev["onset"] / tr.fps})
        return pd.DataFrame(rows, columns=["subject", "trial", "video", "kind", "emotion", "onset", "apex", "offset",
                                           "intensity", "onset_s"])

    def video_features(self, grid: int = 28) -> np.ndarray:
        """(n_events, 3, grid, grid) onset -> apex flow of every expression (rows as :attr:`events`), with the head's
        translation (median flow) removed."""
        out = [onset_apex_flow(tr.crops, int(ev.onset), int(ev.apex), grid, stabilise=True)
               for tr in self.trials for ev in tr.events.itertuples()]
        return np.stack(out) if out else np.zeros((0, 3, grid, grid), np.float32)

    def eeg_features(self, **kwargs) -> np.ndarray:
        """(n_events, n_windows, 160) EEG band-power changes (see :func:`facelab.micro.physio.eeg_band_power`)."""
        parts = []
        for s in self.sessions:
            onsets = [tr.video_start_s + ev.onset / tr.fps for tr in s.trials for ev in tr.events.itertuples()]
            parts.append(physio.eeg_band_power(s.raw, onsets, **kwargs))
        return np.concatenate(parts)

    def peripheral_features(self) -> pd.DataFrame:
        """(n_events, 8) peripheral features from NeuroKit2 processing (see :func:`physio.peripheral_features`)."""
        parts = []
        for s in self.sessions:
            onsets, bases = [], []
            for tr in s.trials:
                for ev in tr.events.itertuples():
                    onsets.append(tr.video_start_s + ev.onset / tr.fps)
                    bases.append((tr.start_s + 0.5, tr.video_start_s))
            parts.append(physio.peripheral_features(s.processed(), s.raw.info["sfreq"], onsets, bases))
        return pd.concat(parts, ignore_index=True)

    def spotting_truth(self) -> pd.DataFrame:
        """Ground-truth intervals per video for :func:`facelab.micro.spotting.megc_evaluate`."""
        return self.events[["video", "kind", "onset", "apex", "offset"]]


def make_corpus(config: CorpusConfig | None = None, world=None, progress=None, *, device="cpu",
                **overrides) -> Corpus:
    """Generate the corpus: videos from the synthetic face world's video API, physiology from MNE + NeuroKit2.

    Parameters
    ----------
    config : CorpusConfig, optional
        Defaults to ``CorpusConfig()`` (the realistic preset); ``overrides`` replace single fields
        (``make_corpus(eeg_coupling=0.2)``). ``CorpusConfig.preset("easy")`` is the teaching setting.
    world : facelab.synth.FaceWorld, optional
        Defaults to ``FaceWorld(seed=config.seed, size=config.size, device=device)``; subject ``k`` is identity ``k``.
        Each trial is one :meth:`~facelab.synth.FaceWorld.video` call (blinks, head motion, speech, noise, JPEG and
        the PPG's skin pulse rendered by the world).
    progress : callable, optional
        Wraps the subject loop (e.g. ``P.progress``).
    device : str or torch.device
        Where the default world renders (``P.device``); frames come back as NumPy arrays either way. The seed is
        ``config.seed``.
    """
    import torch

    from facelab.synth import video as V

    config = replace(config or CorpusConfig(), **overrides)
    if world is None:
        from facelab.synth import FaceWorld

        world = FaceWorld(seed=config.seed, size=config.size, device=device)
    patterns = physio.eeg_emotion_patterns(seed=1234)
    sessions = []
    subjects = range(config.n_subjects)
    kept = 0
    fps = config.fps
    n_frames = int(round(config.video_s * fps))
    nuisance = {} if config.camera_noise == 0 and config.jpeg_quality >= 100 else {
        "noise": (config.camera_noise, config.camera_noise), "jpeg": (config.jpeg_quality, config.jpeg_quality)}
    for subject in (progress(subjects, desc="subjects") if progress else subjects):
        srng = np.random.default_rng([config.seed, subject])
        n_tr = config.trials_per_subject
        emotions = [config.emotions[i % len(config.emotions)] for i in srng.permutation(n_tr) + subject]
        total_s = n_tr * config.trial_s
        # blinks outside the videos (baseline, tail) from a Poisson process; inside them, the world's own blinks
        n_blinks = srng.poisson(config.blinks_per_s * total_s)
        blinks_s = list(srng.uniform(0.3, total_s - 0.3, n_blinks))
        plans = []
        for j, emo in enumerate(emotions):
            start = j * config.trial_s
            vstart = start + config.baseline_s
            evs = schedule_events(n_frames, fps, emo, int(srng.integers(config.micro_per_trial[0],
                                                                        config.micro_per_trial[1] + 1)),
                                  int(srng.integers(config.macro_per_trial[0], config.macro_per_trial[1] + 1)), srng,
                                  micro_length_s=config.micro_length_s, overlap=config.macro_overlap)
            for ev in evs:
                lo, hi = config.micro_intensity if ev["kind"] == "micro" else config.macro_intensity
                ev["intensity"] = float(srng.uniform(lo, hi))
                ev["aus"] = _apex_aus(emo, 1.0, config.video_coupling, config.emotions, srng)
            speech = speech_events(n_frames, fps, config.speech_per_s, srng)
            seed = int(np.random.SeedSequence([config.seed, subject, j]).generate_state(1)[0])
            # the world draws the blinks first from the clip's generator: replay it to know them in advance
            blinks = V.blink_times(config.video_s, fps, torch.Generator().manual_seed(seed))
            blinks_s = [b for b in blinks_s if not vstart - 0.3 <= b < vstart + config.video_s + 0.3]
            blinks_s += [vstart + ap / fps for _, ap, _ in blinks]
            plans.append((start, vstart, emo, evs, speech, seed, blinks))
        blinks_s = np.sort(np.asarray(blinks_s, float))
        sig, eeg = _session_physiology(config, [(vstart, emo, [ev["onset"] for ev in evs])
                                                for _, vstart, emo, evs, *_ in plans], blinks_s, srng, patterns)
        trials = []
        for j, (start, vstart, emo, evs, speech, seed, blinks) in enumerate(plans):
            t_frames = vstart + np.arange(n_frames) / fps
            ppg = np.interp(t_frames, np.arange(len(sig["PPG"])) / config.sfreq, sig["PPG"])
            world_events = [{"kind": "micro" if ev["kind"] == "speech" else ev["kind"],
                             "emotion": ev.get("emotion", "speech"), "aus": ev["aus"], "intensity": ev["intensity"],
                             **{k: ev[k] / fps for k in ("onset", "apex", "offset")}} for ev in evs + speech]
            video = world.video(subject, duration_s=n_frames / fps, fps=fps, events=world_events, ppg=ppg,
                                ppg_amplitude=config.ppg_skin_amplitude, blinks=True,
                                head_motion=config.head_motion, nuisance="none",
                                generator=torch.Generator().manual_seed(seed), **nuisance)
            frames = video.frames.detach().cpu().numpy().astype(np.float32)
            lms = video.landmarks.detach().cpu().numpy().astype(np.float32)
            vid_blinks = np.asarray(video.blinks["apex"].to_numpy() if len(video.blinks) else [], dtype=int)
            gray = to_gray_uint8(frames)
            box = face_box(lms)
            ev_df = pd.DataFrame([{k: v for k, v in ev.items() if k != "aus"}
                                  | {f"apex_{au}": float(np.clip(ev["intensity"] * v, 0, 1))
                                     for au, v in ev["aus"].items()} for ev in evs])
            trials.append(Trial(subject=subject, trial=j, emotion=emo, start_s=start, video_start_s=vstart,
                                fps=fps, events=(ev_df.fillna(0.0) if len(ev_df) else pd.DataFrame(
                                    columns=["kind", "emotion", "onset", "apex", "offset", "intensity"])),
                                blinks=vid_blinks, landmarks=lms,
                                crops=crop_faces(gray, box, config.crop_size), box=box,
                                regions=face_regions(lms, box, config.crop_size),
                                frames=(np.round(frames * 255).astype(np.uint8) if kept < config.keep_frames
                                        else None), ppg=ppg, levels=8, spot=j < config.full_video_trials,
                                speech=np.array([(e["onset"], e["offset"]) for e in speech], int).reshape(-1, 2)))
            kept += 1
        ann = events_to_annotations(trials, blinks_s, total_s)
        raw = physio.make_raw(eeg, {k: sig[k] for k in physio.PERIPHERAL_CHANNELS}, config.sfreq, ann)
        sessions.append(Session(subject=subject, raw=raw, trials=trials, blinks_s=blinks_s))
    return Corpus(config, sessions)


def _session_physiology(config: CorpusConfig, plans, blinks_s, rng, patterns):
    """Peripheral signals and EEG of one session; ``plans``: (video start s, emotion, onset frames) per trial."""
    segments, onsets, emos = [], [], []
    for vstart, emo, onset_frames in plans:
        ev_s = [vstart + f / config.fps for f in onset_frames]
        segments.append({"duration_s": config.baseline_s, "emotion": None})
        segments.append({"duration_s": config.video_s + config.tail_s, "emotion": emo, "scr_onsets_s": ev_s})
        onsets += ev_s
        emos += [emo] * len(ev_s)
    sig = physio.simulate_peripheral(segments, config.sfreq, periph_coupling=config.periph_coupling,
                                     periph_noise=config.periph_noise, rng=rng)
    eeg = physio.simulate_eeg(len(plans) * config.trial_s, config.sfreq, onsets, emos, blinks_s,
                              eeg_coupling=config.eeg_coupling, eeg_noise=config.eeg_noise,
                              line_noise_uv=config.line_noise_uv, blink_uv=config.blink_uv, patterns=patterns,
                              rng=rng)
    return sig, eeg


PHYSIOLOGY_PARAMETERS = ("eeg_coupling", "eeg_noise", "line_noise_uv", "blink_uv", "periph_coupling", "periph_noise")


def with_physiology(corpus: Corpus, seed_offset: int = 1, **overrides) -> Corpus:
    """The same videos and expressions with EEG and peripheral signals re-simulated under other couplings/noise.

    Only :data:`PHYSIOLOGY_PARAMETERS` may change (rendering is the expensive part, and the faces do not depend on
    them); used by the chapter's ablation. The video's skin pulsation keeps the original PPG.
    """
    bad = set(overrides) - set(PHYSIOLOGY_PARAMETERS)
    if bad:
        raise ValueError(f"with_physiology changes only {PHYSIOLOGY_PARAMETERS}, got {sorted(bad)}")
    config = replace(corpus.config, **overrides)
    patterns = physio.eeg_emotion_patterns(seed=1234)
    sessions = []
    for s in corpus.sessions:
        rng = np.random.default_rng([config.seed, s.subject, seed_offset])
        plans = [(tr.video_start_s, tr.emotion, tr.events["onset"].tolist() if len(tr.events) else [])
                 for tr in s.trials]
        sig, eeg = _session_physiology(config, plans, s.blinks_s, rng, patterns)
        raw = physio.make_raw(eeg, {k: sig[k] for k in physio.PERIPHERAL_CHANNELS}, config.sfreq,
                              s.raw.annotations)
        sessions.append(Session(subject=s.subject, raw=raw, trials=s.trials, blinks_s=s.blinks_s))
    return Corpus(config, sessions)


def config_table(config: CorpusConfig) -> pd.DataFrame:
    """The configuration as a one-column table for the chapter."""
    return pd.DataFrame({"value": {k: str(v) for k, v in asdict(config).items()}})
