"""A synthetic audio-visual affect corpus with full ground truth, streamed one clip at a time.

Each :class:`AffectClip` is one synthetic identity (:class:`facelab.synth.FaceWorld`) saying a scripted utterance
(:mod:`facelab.affect.script`) rendered by espeak-ng (:mod:`facelab.affect.speech`) while the face shows an
expression. Ground truth per frame: ABAW expression class (neutral, anger, disgust, fear, happiness, sadness,
surprise, other), valence and arousal, the 17 action-unit intensities, head pose; per clip: transcript, prosody,
the emotion of the words, and the ambivalence/hesitancy label.

How the labels are planted
--------------------------
* Expression: the face shows one or more macro events of the clip's face emotion (``other`` is rendered as the
  world's unilateral contempt). A frame is labelled with the emotion where its envelope x intensity is at least
  :data:`LABEL_THRESHOLD`, else ``neutral``; valence/arousal are the emotion's circumplex point
  (:data:`CIRCUMPLEX`) times that per-frame intensity.
* Prosody follows the words' emotion (:data:`EMOTION_PROSODY`: rate, pitch, amplitude) on a per-identity voice.
* Ambivalence/hesitancy (BAH-style, clip label ``ah``): each positive clip carries one or two of three cues, so
  that no single modality sees them all: ``"words"`` (hedges and fillers in the transcript), ``"voice"`` (silent
  pauses, slower and quieter speech; the words are unchanged) and ``"face"`` (a cross-modal conflict: the face
  shows an emotion of the opposite valence to the words). Negative clips have none.
* Emotional mimicry (:meth:`AffectCorpus.mimicry_clip`, Hume-Vidmimic2-style): a seed identity shows a blend of the
  six mimicry dimensions (:data:`MIMICRY_AUS`) with a 6-d intensity vector; another identity imitates it with
  Gaussian noise on the vector and jittered timing. The target is the seed vector.

Clip ``i`` is drawn from a generator seeded by ``(seed, i)``: any clip can be regenerated alone, the stream is the
same on every pass and with any number of DataLoader workers, and only one clip is in memory at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch.utils.data import IterableDataset, get_worker_info

from facelab.affect.script import SENTIMENT, Script, check_expression, draw_script
from facelab.metrics.abaw import ABAW_EXPRESSIONS, MIMICRY_DIMENSIONS
from facelab.synth import AU_NAMES, FaceWorld

#: ABAW class -> the world's emotion prototype that renders it
ABAW_TO_WORLD = {"neutral": "neutral", "anger": "angry", "disgust": "disgusted", "fear": "fearful",
                 "happiness": "happy", "sadness": "sad", "surprise": "surprised", "other": "contempt"}
WORLD_TO_ABAW = {v: k for k, v in ABAW_TO_WORLD.items()}
#: (valence, arousal) of each class at full intensity (Russell's circumplex, rounded)
CIRCUMPLEX = {"neutral": (0.0, 0.0), "anger": (-0.6, 0.7), "disgust": (-0.6, 0.35), "fear": (-0.6, 0.75),
              "happiness": (0.8, 0.5), "sadness": (-0.7, -0.4), "surprise": (0.3, 0.8), "other": (-0.4, 0.2)}
#: words' emotion -> (rate factor, pitch offset, amplitude factor)
EMOTION_PROSODY = {"neutral": (1.0, 0, 1.0), "other": (0.95, -4, 0.95), "happiness": (1.1, 12, 1.15),
                   "surprise": (1.05, 20, 1.2), "sadness": (0.8, -14, 0.75), "anger": (1.15, 4, 1.35),
                   "disgust": (0.9, -8, 1.0), "fear": (1.2, 16, 0.9)}
#: the six mimicry dimensions as AU blends (intensity at 1)
MIMICRY_AUS = {
    "admiration": {"AU01": 0.5, "AU02": 0.4, "AU05": 0.3, "AU12": 0.5},
    "amusement": {"AU06": 0.8, "AU12": 0.9, "AU25": 0.8, "AU26": 0.5},
    "determination": {"AU04": 0.8, "AU07": 0.6, "AU17": 0.6, "AU23": 0.8},
    "empathic_pain": {"AU01": 0.9, "AU04": 0.7, "AU15": 0.8, "AU20": 0.4},
    "excitement": {"AU01": 0.6, "AU02": 0.7, "AU05": 0.7, "AU12": 0.6, "AU25": 0.6},
    "joy": {"AU06": 0.9, "AU12": 1.0},
}
AH_CUES = ("words", "voice", "face")
LABEL_THRESHOLD = 0.3
VOICES = ("en-us", "en-us+m3", "en-us+m5", "en-us+f2", "en-us+f3", "en-us+f4", "en-gb", "en-gb+m2")
_CLASS_P = {"neutral": 0.16, "other": 0.06}
_POSITIVE = ("happiness", "surprise")
_NEGATIVE = ("anger", "disgust", "fear", "sadness")


@dataclass
class AffectClip:
    """One clip: ``frames`` (T, 3, H, W) in [0, 1], ``landmarks`` (T, 68, 2), ``fps``, ``labels`` (one row per
    frame: frame, time_s, expression, expression_index, valence, arousal, AU01..AU45, yaw/pitch/roll, speaking,
    ah), ``audio`` float32 (or None when rendered without speech) at ``sample_rate``, ``script``
    (:class:`~facelab.affect.script.Script`: transcript, words' emotion), ``face_emotion`` and ``word_emotion``
    (ABAW classes), ``ah`` (0/1) with its ``ah_cues``, ``prosody`` (espeak-ng settings) and ``identity``."""

    clip_id: str
    identity: int
    frames: torch.Tensor
    landmarks: torch.Tensor
    fps: float
    labels: pd.DataFrame
    audio: np.ndarray | None
    sample_rate: int
    script: Script
    face_emotion: str
    word_emotion: str
    ah: int
    ah_cues: tuple
    prosody: object = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.frames.shape[0]

    @property
    def transcript(self) -> str:
        return self.script.transcript

    @property
    def duration_s(self) -> float:
        return len(self) / self.fps


@dataclass
class MimicryClip:
    """An emotional-mimicry pair: the ``seed`` identity's clip showing ``seed_intensities`` (6,) and the
    ``imitator``'s clip showing ``shown_intensities`` (seed + noise); ``target`` is the seed vector
    (:data:`facelab.metrics.abaw.MIMICRY_DIMENSIONS` order)."""

    clip_id: str
    seed_identity: int
    imitator_identity: int
    seed_frames: torch.Tensor
    frames: torch.Tensor
    landmarks: torch.Tensor
    fps: float
    seed_intensities: np.ndarray
    shown_intensities: np.ndarray

    @property
    def target(self) -> np.ndarray:
        return self.seed_intensities


def frame_labels(world_emotion: np.ndarray, intensity: np.ndarray) -> pd.DataFrame:
    """Per-frame ABAW class, index, valence and arousal from the world's per-frame emotion and intensity."""
    names = np.array([WORLD_TO_ABAW.get(e, None) for e in world_emotion], dtype=object)
    if any(n is None for n in names):
        bad = sorted({e for e in world_emotion if e not in WORLD_TO_ABAW})
        raise ValueError(f"unknown world emotion {bad}: expected one of {', '.join(WORLD_TO_ABAW)}")
    va = np.array([CIRCUMPLEX[n] for n in names], dtype=np.float32).reshape(-1, 2)
    va = va * np.asarray(intensity, np.float32)[:, None]
    names = np.where(np.asarray(intensity) >= LABEL_THRESHOLD, names, "neutral")
    return pd.DataFrame({"expression": names, "expression_index": [ABAW_EXPRESSIONS.index(n) for n in names],
                         "valence": va[:, 0], "arousal": va[:, 1]})


def _macro_events(emotion: str, t0: float, t1: float, rng: np.random.Generator) -> list[dict]:
    """Back-to-back macro events (0.8-3.6 s each) of ``emotion`` covering [t0, t1]."""
    if emotion == "neutral" or t1 - t0 < 0.8:
        return []
    events, t = [], t0
    while t1 - t >= 0.8:
        length = min(float(rng.uniform(1.6, 3.6)), t1 - t)
        if t1 - (t + length) < 0.8:
            length = min(t1 - t, 3.6) if t1 - t <= 3.6 else length
        on, off = t, t + length
        apex = on + length * float(rng.uniform(0.25, 0.45))
        events.append(dict(kind="macro", emotion=ABAW_TO_WORLD[emotion], onset=round(on, 3), apex=round(apex, 3),
                           offset=round(off, 3), intensity=float(rng.uniform(0.7, 1.0))))
        t = off + float(rng.uniform(0.05, 0.3))
    return events


class AffectCorpus(IterableDataset):
    """Stream :class:`AffectClip` s (``for clip in corpus``) or draw one (``corpus.clip(i)``).

    Parameters
    ----------
    n_clips : int
    seed : int
        World and draw seed.
    size : int
        Frame side in pixels.
    fps : float
        Frame rate (10 fps is enough for clip-level affect; higher for micro-dynamics).
    n_identities, identity_offset : int
        Identities ``identity_offset .. identity_offset + n_identities - 1`` of the world.
    ah_rate : float
        Share of clips with ambivalence/hesitancy.
    speech : bool
        Render audio with espeak-ng (``False``: video and transcript only, the clip length estimated from the
        script; needs no espeak-ng).
    nuisance : {"none", "mild", "full"}
    device : str or torch.device
        Where the frames are rendered.
    """

    def __init__(self, n_clips: int, *, seed: int = 0, size: int = 112, fps: float = 10.0, n_identities: int = 20,
                 identity_offset: int = 0, ah_rate: float = 0.4, speech: bool = True, nuisance: str = "none",
                 device="cpu"):
        for name, v in (("n_clips", n_clips), ("n_identities", n_identities)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not 0.0 <= ah_rate <= 1.0:
            raise ValueError(f"ah_rate must lie in [0, 1], got {ah_rate}")
        self.n_clips, self.seed, self.size, self.fps = int(n_clips), int(seed), int(size), float(fps)
        self.n_identities, self.identity_offset = int(n_identities), int(identity_offset)
        self.ah_rate, self.speech, self.nuisance = float(ah_rate), bool(speech), nuisance
        self.device = device
        self._world = None

    @property
    def world(self) -> FaceWorld:
        if self._world is None:
            self._world = FaceWorld(seed=self.seed, size=self.size, device=self.device)
        return self._world

    def __len__(self) -> int:
        return self.n_clips

    def __repr__(self) -> str:
        return (f"AffectCorpus(n_clips={self.n_clips}, seed={self.seed}, size={self.size}, fps={self.fps}, "
                f"speech={self.speech})")

    def __iter__(self):
        info = get_worker_info()
        ids = range(self.n_clips) if info is None else range(info.id, self.n_clips, info.num_workers)
        for i in ids:
            yield self.clip(i)

    def _rng(self, i: int, stream: int = 0):
        rng = np.random.default_rng([self.seed, int(i), stream])
        g = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        return rng, g

    def draw(self, i: int) -> dict:
        """The clip's plan without rendering: identity, emotions, A/H cues, script, prosody."""
        from facelab.affect.speech import Prosody

        if not 0 <= int(i) < self.n_clips:
            raise IndexError(f"clip {i} out of range for a corpus of {self.n_clips} clips")
        rng, _ = self._rng(i)
        identity = self.identity_offset + int(rng.integers(self.n_identities))
        p = np.array([_CLASS_P.get(c, (1 - sum(_CLASS_P.values())) / 6) for c in ABAW_EXPRESSIONS])
        word_emotion = str(rng.choice(ABAW_EXPRESSIONS, p=p / p.sum()))
        ah = int(rng.random() < self.ah_rate)
        cues: tuple = ()
        if ah:
            k = int(rng.integers(1, 3))
            cues = tuple(sorted(rng.choice(AH_CUES, size=k, replace=False).tolist()))
        face_emotion = word_emotion
        if "face" in cues:
            if SENTIMENT[word_emotion] == "neutral":
                word_emotion = str(rng.choice(_POSITIVE + _NEGATIVE))
            opposite = _NEGATIVE if SENTIMENT[word_emotion] == "positive" else _POSITIVE
            face_emotion = str(rng.choice(opposite))
        script = draw_script(word_emotion, rng, hedged="words" in cues, pauses="voice" in cues)
        rate_f, pitch_d, amp_f = EMOTION_PROSODY[word_emotion]
        voice = VOICES[identity % len(VOICES)]
        base_pitch = 35 + (identity * 7) % 30
        if "voice" in cues:
            rate_f, amp_f = rate_f * 0.8, amp_f * 0.8
        prosody = Prosody(voice=voice, rate=int(np.clip(round(165 * rate_f * rng.uniform(0.95, 1.05)), 80, 450)),
                          pitch=int(np.clip(base_pitch + pitch_d, 0, 99)), amplitude=int(np.clip(90 * amp_f, 0, 200)),
                          word_gap_ms=60 if "voice" in cues else 0)
        return dict(identity=identity, word_emotion=word_emotion, face_emotion=face_emotion, ah=ah, cues=cues,
                    script=script, prosody=prosody)

    def clip(self, i: int) -> AffectClip:
        """Render clip ``i`` (deterministic)."""
        from facelab.affect.speech import ESPEAK_RATE, synthesize
        from facelab.synth.video import envelope

        plan = self.draw(i)
        rng, g = self._rng(i, 1)
        script, prosody = plan["script"], plan["prosody"]
        audio = None
        if self.speech:
            speech = synthesize(script.tokens, prosody)
            lead = int(0.3 * ESPEAK_RATE)
            dur = max((len(speech) + 2 * lead) / ESPEAK_RATE, 1.5)
            T = int(round(dur * self.fps))
            audio = np.zeros(int(round(T / self.fps * ESPEAK_RATE)), np.float32)
            audio[lead:lead + len(speech)] = speech[:len(audio) - lead]
            speak = (lead / ESPEAK_RATE, (lead + len(speech)) / ESPEAK_RATE)
        else:
            n_pause_s = sum(int(t[7:-1]) for t in script.tokens if t.startswith("<pause:")) / 1000
            talk = len(script.words) / (prosody.rate / 60.0) + n_pause_s
            dur = max(talk + 0.6, 1.5)
            T = int(round(dur * self.fps))
            speak = (0.3, 0.3 + talk)
        dur = T / self.fps
        events = _macro_events(plan["face_emotion"], 0.1, dur - 0.1, rng)
        video = self.world.video(identity=plan["identity"], duration_s=dur, fps=self.fps, events=events,
                                 nuisance=self.nuisance, generator=g)
        T = len(video)
        inten = np.zeros(T)
        for _, ev in video.events.iterrows():
            inten = np.maximum(inten, envelope(T, ev["onset"], ev["apex"], ev["offset"]) * ev["intensity"])
        lab = frame_labels(video.labels["emotion"].to_numpy(), inten)
        out = pd.concat([video.labels[["frame", "time_s"]].reset_index(drop=True), lab,
                         video.labels[list(AU_NAMES) + ["yaw", "pitch", "roll"]].reset_index(drop=True)], axis=1)
        t = out["time_s"].to_numpy()
        out["speaking"] = (t >= speak[0]) & (t <= speak[1])
        out["ah"] = np.int8(plan["ah"])
        return AffectClip(clip_id=f"s{self.seed}-c{i:05d}", identity=plan["identity"], frames=video.frames,
                          landmarks=video.landmarks, fps=self.fps, labels=out, audio=audio,
                          sample_rate=ESPEAK_RATE, script=script, face_emotion=plan["face_emotion"],
                          word_emotion=plan["word_emotion"], ah=plan["ah"], ah_cues=plan["cues"], prosody=prosody,
                          meta=dict(events=video.events))

    def sentences(self) -> list[str]:
        """The grammar's sentences (for the ASR language model)."""
        from facelab.affect.script import grammar_sentences

        return grammar_sentences(seed=self.seed)

    # ------------------------------------------------------------------ emotional mimicry
    def mimicry_clip(self, i: int, *, duration_s: float = 2.0, noise: float = 0.15) -> MimicryClip:
        """Mimicry pair ``i``: a seed identity's blend of the six dimensions and another identity imitating it with
        N(0, ``noise``) on each intensity and jittered timing (see the module notes)."""
        if not 0.0 <= noise <= 1.0:
            raise ValueError(f"noise must lie in [0, 1], got {noise}")
        rng, g = self._rng(i, 2)
        seed_id = self.identity_offset + int(rng.integers(self.n_identities))
        imit = self.identity_offset + (seed_id - self.identity_offset + 1 + int(rng.integers(self.n_identities - 1
                                                                                              or 1))) \
            % self.n_identities
        v = rng.random(6) ** 2
        v[int(rng.integers(6))] = float(rng.uniform(0.6, 1.0))
        shown = np.clip(v + rng.normal(0, noise, 6), 0, 1)
        frames = []
        for ident, vec, jitter in ((seed_id, v, 0.0), (imit, shown, float(rng.uniform(0.0, 0.25)))):
            on = 0.2 + jitter
            ev = [dict(kind="macro", aus=mimicry_aus(vec), emotion="mimicry", onset=on, apex=on + 0.6,
                       offset=min(on + 1.5, duration_s - 0.05), intensity=1.0)]
            frames.append(self.world.video(identity=ident, duration_s=duration_s, fps=self.fps, events=ev,
                                           nuisance=self.nuisance, generator=g))
        return MimicryClip(f"s{self.seed}-m{i:05d}", seed_id, imit, frames[0].frames, frames[1].frames,
                           frames[1].landmarks, self.fps, v.astype(np.float32), shown.astype(np.float32))

    def mimicry(self, n: int, **kw):
        """Stream ``n`` mimicry pairs."""
        for i in range(int(n)):
            yield self.mimicry_clip(i, **kw)


def mimicry_aus(intensities) -> dict[str, float]:
    """The AU dict of a 6-d mimicry intensity vector (:data:`MIMICRY_DIMENSIONS` order): the sum of the dimensions'
    AU blends weighted by the intensities, capped at 1."""
    v = np.asarray(intensities, dtype=np.float64)
    if v.shape != (6,) or not np.all(np.isfinite(v)) or v.min() < 0 or v.max() > 1:
        raise ValueError(f"mimicry intensities must be 6 numbers in [0, 1] ({', '.join(MIMICRY_DIMENSIONS)}), "
                         f"got {intensities!r}")
    out: dict[str, float] = {}
    for w, dim in zip(v, MIMICRY_DIMENSIONS):
        for au, a in MIMICRY_AUS[dim].items():
            out[au] = min(1.0, out.get(au, 0.0) + float(w) * a)
    return {k: round(x, 4) for k, x in out.items() if x > 0} or {"AU12": 0.01}


__all__ = ["AffectCorpus", "AffectClip", "MimicryClip", "ABAW_TO_WORLD", "WORLD_TO_ABAW", "CIRCUMPLEX",
           "EMOTION_PROSODY", "MIMICRY_AUS", "AH_CUES", "LABEL_THRESHOLD", "frame_labels", "mimicry_aus",
           "check_expression"]
