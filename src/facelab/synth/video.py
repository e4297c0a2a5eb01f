"""Videos of a synthetic person: AU trajectories with macro- and micro-expression events (onset/apex/offset),
blinks, head motion and an optional skin-colour pulse driven by a PPG waveform (so remote PPG is in the pixels)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from facelab.synth.facs import AU_NAMES, EMOTIONS, au_vector, emotion_vector

MICRO_MAX_S = 0.5
MACRO_RANGE_S = (0.5, 4.0)
DEFAULT_INTENSITY = {"micro": 0.35, "macro": 0.85}


@dataclass
class FaceVideo:
    """A rendered video: ``frames`` (T, 3, H, W) in [0, 1], ``landmarks`` (T, 68, 2) pixels, ``fps``,
    ``events`` (one row per expression event, frames and seconds), ``blinks`` (onset/apex/offset frames),
    ``labels`` (one row per frame: time, AU intensities, pose, PPG value, active emotion), ``ppg`` (T,) or None."""

    frames: torch.Tensor
    landmarks: torch.Tensor
    fps: float
    events: pd.DataFrame
    blinks: pd.DataFrame
    labels: pd.DataFrame
    ppg: np.ndarray | None
    identity: int

    def __len__(self) -> int:
        return self.frames.shape[0]

    @property
    def duration_s(self) -> float:
        return len(self) / self.fps


def _smooth(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def envelope(T: int, onset: int, apex: int, offset: int) -> np.ndarray:
    """Intensity profile (T,) of an event: 0 before onset, smooth rise to 1 at apex, smooth fall to 0 at offset."""
    t = np.arange(T, dtype=np.float64)
    rise = _smooth((t - onset) / max(apex - onset, 1e-9))
    fall = 1 - _smooth((t - apex) / max(offset - apex, 1e-9))
    return np.where(t <= apex, rise, fall) * ((t >= onset) & (t <= offset))


def au_trajectory(T: int, events: Sequence[Mapping], blinks: Sequence[tuple]) -> tuple[torch.Tensor, np.ndarray]:
    """AU intensities (T, n_AU, 2) of a clip and its per-frame emotion (T,): each validated event
    (:func:`validate_events`) and each blink (onset, apex, offset frames) raises its AUs along its envelope; where
    events overlap, the larger intensity wins."""
    traj = torch.zeros(T, len(AU_NAMES), 2)
    emotion = np.array(["neutral"] * T, dtype=object)
    for ev in events:
        env = torch.tensor(envelope(T, ev["onset"], ev["apex"], ev["offset"]), dtype=torch.float32)
        traj = torch.maximum(traj, env[:, None, None] * ev["_vector"][None])
        emotion[(env > 0).numpy()] = ev["emotion"]
    k45 = AU_NAMES.index("AU45")
    for on, ap, off in blinks:
        env = torch.tensor(envelope(T, on, ap, off), dtype=torch.float32)
        traj[:, k45] = torch.maximum(traj[:, k45], env[:, None])
    return traj, emotion


def _event_aus(ev: Mapping) -> torch.Tensor:
    if "aus" in ev and ev["aus"] is not None:
        return au_vector(ev["aus"])
    emo = ev.get("emotion")
    if emo is None or emo == "neutral":
        raise ValueError(f"an event needs a non-neutral 'emotion' ({', '.join(EMOTIONS[1:])}) or an 'aus' dict: {ev!r}")
    return emotion_vector(emo)


def validate_events(events: Sequence[Mapping], duration_s: float, fps: float) -> list[dict]:
    """Check event timings (seconds) and return them with frame indices.

    Each event: ``kind`` ("micro" < 0.5 s, low intensity; "macro" 0.5-4 s), ``emotion`` or ``aus``, ``onset``,
    ``apex``, ``offset`` in seconds, optional ``intensity`` in [0, 1].
    """
    out = []
    for i, ev in enumerate(events):
        if not isinstance(ev, Mapping):
            raise ValueError(f"event {i} must be a dict with kind, emotion/aus, onset, apex, offset; got {ev!r}")
        kind = ev.get("kind", "macro")
        if kind not in ("micro", "macro"):
            raise ValueError(f"event {i}: kind must be 'micro' or 'macro', got {kind!r}")
        try:
            on, ap, off = (float(ev[k]) for k in ("onset", "apex", "offset"))
        except KeyError as e:
            raise ValueError(f"event {i} lacks {e.args[0]!r} (onset, apex and offset are times in seconds)") from None
        if not (on < ap < off):
            raise ValueError(f"event {i}: need onset < apex < offset, got onset={on}, apex={ap}, offset={off} s "
                             "(apex before onset or offset before apex)")
        if on < 0 or off > duration_s + 1e-9:
            raise ValueError(f"event {i} ({on}-{off} s) does not fit in the {duration_s} s clip")
        length = off - on
        if kind == "micro" and length >= MICRO_MAX_S:
            raise ValueError(f"event {i}: a micro-expression lasts less than {MICRO_MAX_S} s, got {length:.3f} s")
        if kind == "macro" and not (MACRO_RANGE_S[0] <= length <= MACRO_RANGE_S[1]):
            raise ValueError(f"event {i}: a macro-expression lasts {MACRO_RANGE_S[0]}-{MACRO_RANGE_S[1]} s, "
                             f"got {length:.3f} s")
        inten = float(ev.get("intensity", DEFAULT_INTENSITY[kind]))
        if not (0.0 < inten <= 1.0):
            raise ValueError(f"event {i}: intensity must lie in (0, 1], got {inten}")
        if kind == "micro" and inten > 0.6:
            raise ValueError(f"event {i}: micro-expressions are low-intensity (<= 0.6), got {inten}")
        aus = _event_aus(ev)
        f_on, f_ap, f_off = (int(round(x * fps)) for x in (on, ap, off))
        if not (f_on < f_ap < f_off):
            raise ValueError(f"event {i}: at {fps} fps onset, apex and offset fall on frames {f_on}, {f_ap}, {f_off}; "
                             "they must be distinct (use a higher frame rate or a longer event)")
        f_off = min(f_off, int(round(duration_s * fps)) - 1)
        names = [AU_NAMES[k] + ("" if aus[k, 0] == aus[k, 1] else ("R" if aus[k, 0] > aus[k, 1] else "L"))
                 for k in range(len(AU_NAMES)) if float(aus[k].max()) > 0]
        out.append(dict(kind=kind, emotion=ev.get("emotion", "custom"), onset=f_on, apex=f_ap, offset=f_off,
                        onset_s=on, apex_s=ap, offset_s=off, intensity=inten, aus="+".join(names),
                        _vector=aus * inten))
    return out


def random_events(duration_s: float, g: torch.Generator, fps: float = 30.0, micro_rate: float = 0.15,
                  macro_rate: float = 0.1):
    """Non-overlapping random macro (0.5-4 s) and micro (0.2-0.45 s) events at the given rates (per second), with
    onset/apex/offset on distinct frames (micro-expressions are skipped when the frame rate cannot show them)."""
    u = lambda: float(torch.rand(1, generator=g))  # noqa: E731
    events, t = [], 0.3 + u()
    emotions = EMOTIONS[1:]
    micro_ok = fps * MICRO_MAX_S > 3.0
    while t < duration_s - 0.6:
        micro = micro_ok and u() < micro_rate / (micro_rate + macro_rate)
        length = (0.2 + 0.25 * u()) if micro else min(0.6 + 3.0 * u(), duration_s - t - 0.05)
        f_on = int(math.ceil(t * fps))
        n = max(2, int(round(length * fps)))
        f_off = f_on + n
        f_ap = f_on + max(1, min(n - 1, int(round(n * (0.3 + 0.3 * u())))))
        on, ap, off = f_on / fps, f_ap / fps, f_off / fps
        if (micro and off - on >= MICRO_MAX_S) or (not micro and off - on < MACRO_RANGE_S[0]) \
                or off > duration_s - 0.05:
            break
        emo = emotions[int(u() * len(emotions)) % len(emotions)]
        inten = (0.2 + 0.3 * u()) if micro else (0.6 + 0.4 * u())
        events.append(dict(kind="micro" if micro else "macro", emotion=emo, onset=on, apex=ap, offset=off,
                           intensity=inten))
        t = off + 0.3 + 2.0 * u() / (micro_rate + macro_rate) * 0.5
    return events


def blink_times(duration_s: float, fps: float, g: torch.Generator):
    """Blinks every 2-6 s, 0.1-0.3 s long: list of (onset, apex, offset) frames."""
    out, t = [], 0.5 + 2.0 * float(torch.rand(1, generator=g))
    while True:
        length = 0.1 + 0.2 * float(torch.rand(1, generator=g))
        on, off = int(round(t * fps)), int(round((t + length) * fps))
        ap = int(round((t + 0.4 * length) * fps))
        if off >= int(duration_s * fps) - 1:
            break
        if on < ap < off:
            out.append((on, ap, off))
        t += length + 2.0 + 4.0 * float(torch.rand(1, generator=g))
    return out


def head_motion(T: int, fps: float, g: torch.Generator, amplitude=(6.0, 4.0, 3.0)) -> torch.Tensor:
    """Smooth random head motion (T, 3) degrees: a few slow sinusoids per angle."""
    t = torch.arange(T, dtype=torch.float32) / fps
    out = torch.zeros(T, 3)
    for k, amp in enumerate(amplitude):
        for _ in range(3):
            f = 0.05 + 0.35 * float(torch.rand(1, generator=g))
            ph = 2 * math.pi * float(torch.rand(1, generator=g))
            out[:, k] += amp / 3 * torch.sin(2 * math.pi * f * t + ph)
    return out


def ppg_per_frame(ppg, T: int, fps: float, ppg_fs: float | None) -> np.ndarray:
    """The PPG waveform sampled at the frame times and standardised (zero mean, unit variance)."""
    x = np.asarray(ppg, dtype=np.float64).ravel()
    if x.size < 2 or not np.all(np.isfinite(x)):
        raise ValueError(f"ppg must be a finite 1-D waveform with at least 2 samples, got shape {np.shape(ppg)}")
    if ppg_fs is None:
        if x.size != T:
            raise ValueError(f"ppg has {x.size} samples but the video has {T} frames: give one sample per frame "
                             "or its sampling rate ppg_fs")
        y = x
    else:
        if ppg_fs <= 0:
            raise ValueError(f"ppg_fs must be positive, got {ppg_fs}")
        t_src = np.arange(x.size) / ppg_fs
        t_frames = np.arange(T) / fps
        if t_src[-1] < t_frames[-1] - 1e-9:
            raise ValueError(f"ppg covers {t_src[-1]:.2f} s but the video lasts {T / fps:.2f} s")
        y = np.interp(t_frames, t_src, x)
    sd = y.std()
    return (y - y.mean()) / (sd if sd > 0 else 1.0)
