"""FACS action units on the 68-landmark layout, and the basic emotions as AU prototypes.

Each action unit moves landmarks (a displacement field on the 68 points at intensity 1, in frontal-frame units) and
drives shading in the renderer (wrinkles, cheek raise, dimples). Intensities live in [0, 1]. An AU can act on one
side only: ``"AU12L"`` is the subject's left half (image right), ``"AU12R"`` the subject's right (image left).
"""

from __future__ import annotations

import re
from typing import Mapping

import torch

from facelab.synth.landmarks import (BROWS, EYES, JAW, LIPS_INNER, LIPS_OUTER, MOUTH_LEFT, MOUTH_RIGHT, NOSTRILS,
                                     mean_shape, side_weights)

#: The action units the generator renders, in label-column order.
AU_NUMBERS = (1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, 23, 25, 26, 45)
AU_NAMES = tuple(f"AU{n:02d}" for n in AU_NUMBERS)
AU_DESCRIPTIONS = {
    "AU01": "inner brow raiser", "AU02": "outer brow raiser", "AU04": "brow lowerer", "AU05": "upper lid raiser",
    "AU06": "cheek raiser", "AU07": "lid tightener", "AU09": "nose wrinkler", "AU10": "upper lip raiser",
    "AU12": "lip corner puller", "AU14": "dimpler", "AU15": "lip corner depressor", "AU17": "chin raiser",
    "AU20": "lip stretcher", "AU23": "lip tightener", "AU25": "lips part", "AU26": "jaw drop", "AU45": "blink",
}
_AU_INDEX = {name: k for k, name in enumerate(AU_NAMES)}

#: Emotion prototypes (EMFACS-style): AU -> intensity at full expression. Contempt is unilateral.
EMOTIONS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised", "contempt")
EMOTION_PROTOTYPES: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {"AU06": 0.8, "AU12": 1.0, "AU25": 0.5},
    "sad": {"AU01": 0.9, "AU04": 0.6, "AU15": 0.9, "AU17": 0.5},
    "angry": {"AU04": 1.0, "AU05": 0.6, "AU07": 0.8, "AU23": 0.9, "AU17": 0.3},
    "fearful": {"AU01": 0.9, "AU02": 0.7, "AU04": 0.5, "AU05": 1.0, "AU07": 0.3, "AU20": 0.9, "AU25": 0.7,
                "AU26": 0.4},
    "disgusted": {"AU09": 1.0, "AU10": 0.7, "AU15": 0.5, "AU17": 0.6},
    "surprised": {"AU01": 1.0, "AU02": 1.0, "AU05": 0.9, "AU25": 0.8, "AU26": 0.9},
    "contempt": {"AU12R": 0.7, "AU14R": 0.8},
}

_AU_RE = re.compile(r"^AU0*(\d+)([LR]?)$")


def parse_au_name(name: str) -> tuple[int, str]:
    """``"AU12L"`` -> (index of AU12 in :data:`AU_NAMES`, ``"L"``); ``"au6"`` -> (index of AU06, ``""``).

    Raises
    ------
    ValueError
        for a name that is not one of the rendered action units.
    """
    if not isinstance(name, str):
        raise ValueError(f"action unit names are strings such as 'AU12' or 'AU12L', got {name!r}")
    m = _AU_RE.match(name.strip().upper())
    key = f"AU{int(m.group(1)):02d}" if m else None
    if key not in _AU_INDEX:
        raise ValueError(f"unknown action unit {name!r}: expected one of {', '.join(AU_NAMES)} "
                         "(optionally with an L or R suffix for one side)")
    return _AU_INDEX[key], m.group(2)


def au_vector(spec: Mapping[str, float]) -> torch.Tensor:
    """AU dict -> (n_AU, 2) intensities on the subject's (right, left) sides, validated to lie in [0, 1]."""
    out = torch.zeros(len(AU_NAMES), 2)
    for name, value in spec.items():
        k, side = parse_au_name(name)
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"intensity of {name} must be a number in [0, 1], got {value!r}") from None
        if not (0.0 <= v <= 1.0):
            raise ValueError(f"intensity of {name} must lie in [0, 1], got {v}")
        if side in ("", "R"):
            out[k, 0] = max(out[k, 0].item(), v)
        if side in ("", "L"):
            out[k, 1] = max(out[k, 1].item(), v)
    return out


def emotion_vector(emotion: str, intensity: float = 1.0) -> torch.Tensor:
    """The (n_AU, 2) AU intensities of an emotion prototype scaled by ``intensity``."""
    if emotion not in EMOTION_PROTOTYPES:
        raise ValueError(f"unknown emotion {emotion!r}: expected one of {', '.join(EMOTIONS)}")
    if not (0.0 <= float(intensity) <= 1.0):
        raise ValueError(f"emotion intensity must lie in [0, 1], got {intensity}")
    return au_vector(EMOTION_PROTOTYPES[emotion]) * float(intensity)


def _pts(*groups) -> list[int]:
    return [int(i) for g in groups for i in g]


# named landmark sets that action units move together (both sides of the face)
_UPPER_LIDS = _pts(EYES[0].upper, EYES[1].upper)                     # 37, 38, 43, 44
_LOWER_LIDS = _pts(EYES[0].lower[::-1], EYES[1].lower[::-1])         # 40, 41, 46, 47
_EYE_OUTER = [EYES[0].outer, EYES[1].outer]                           # 36, 45
_NOSTRILS = _pts(NOSTRILS)                                            # 31..35
_ALAR = _pts(NOSTRILS[[0, -1]])                                       # 31, 35
_MOUTH_CORNERS = [MOUTH_RIGHT, MOUTH_LEFT, int(LIPS_INNER[0]), int(LIPS_INNER[4])]   # 48, 54, 60, 64
_UPPER_LIP = _pts(LIPS_OUTER[1:6])                                    # 49..53, outer upper lip between the corners
_UPPER_LIP_MID = _pts(LIPS_OUTER[2:5])                                # 50, 51, 52
_UPPER_LIP_SIDES = _pts(LIPS_OUTER[[1, 5]])                           # 49, 53
_LOWER_LIP = _pts(LIPS_OUTER[7:12])                                   # 55..59
_LOWER_LIP_MID = _pts(LIPS_OUTER[8:11])                               # 56, 57, 58
_LOWER_LIP_SIDES = _pts(LIPS_OUTER[[11, 7]])                          # 59, 55
_NEXT_TO_CORNERS = _UPPER_LIP_SIDES + _LOWER_LIP_SIDES                # 49, 53, 59, 55
_INNER_UPPER_MID = _pts(LIPS_INNER[1:4])                              # 61, 62, 63
_INNER_LOWER_MID = _pts(LIPS_INNER[5:8])                              # 65, 66, 67
_INNER_NEXT_TO_CORNERS = _pts(LIPS_INNER[[1, 3, 7, 5]])              # 61, 63, 67, 65
_CHEEKS = _pts(JAW[3:5], JAW[12:14])                                  # 3, 4, 12, 13: jaw line at the cheeks
_CHIN = _pts(JAW[6:11])                                               # 6..10
#: brow points by weight from the inner end of each brow (1) to the outer end (0.1)
_BROW_INNER = {i: w for brow in (BROWS[0][::-1], BROWS[1]) for i, w in zip(brow, (1.0, 0.75, 0.45, 0.25, 0.1))}


def _displacements() -> torch.Tensor:
    """(n_AU, 68, 2) landmark displacement of each AU at intensity 1 (x right, y down, frontal-frame units)."""
    m = mean_shape()
    d = torch.zeros(len(AU_NAMES), 68, 2)

    def mv(au, idx, dx=0.0, dy=0.0, mirror_x=True):
        k = _AU_INDEX[au]
        for i in idx:
            sx = torch.sign(m[i, 0]).item() if mirror_x else 1.0   # +dx means "outwards" when mirror_x
            d[k, i, 0] += dx * sx
            d[k, i, 1] += dy

    # brows, weighted from the inner end
    for i, w in _BROW_INNER.items():
        mv("AU01", [i], dy=-0.075 * w, dx=0.006 * w)
        mv("AU02", [i], dy=-0.075 * (1.15 - w))
        mv("AU04", [i], dy=0.045 * (0.5 + 0.5 * w), dx=-0.03 * w)
        mv("AU09", [i], dy=0.025 * w)
    # eyes: upper lids, lower lids, outer corners
    mv("AU05", _UPPER_LIDS, dy=-0.028)
    mv("AU04", _UPPER_LIDS, dy=0.008)
    mv("AU06", _LOWER_LIDS, dy=-0.016)
    mv("AU06", _EYE_OUTER, dy=-0.008)
    mv("AU07", _LOWER_LIDS, dy=-0.022)
    mv("AU07", _UPPER_LIDS, dy=0.010)
    # nose and upper lip
    mv("AU09", _NOSTRILS, dy=-0.022)
    mv("AU09", _ALAR, dx=0.008)
    mv("AU09", _UPPER_LIP + _INNER_UPPER_MID, dy=-0.018)
    mv("AU10", _UPPER_LIP, dy=-0.035)
    mv("AU10", _INNER_UPPER_MID, dy=-0.045)
    mv("AU10", _NOSTRILS, dy=-0.010)
    # lip corners
    mv("AU12", _MOUTH_CORNERS, dx=0.050, dy=-0.050)
    mv("AU12", _NEXT_TO_CORNERS, dx=0.022, dy=-0.025)
    mv("AU12", _INNER_NEXT_TO_CORNERS, dx=0.012, dy=-0.012)
    mv("AU12", _CHEEKS, dx=0.008)
    mv("AU14", _MOUTH_CORNERS, dx=-0.010, dy=-0.010)
    mv("AU14", _UPPER_LIP_SIDES, dy=0.004)
    mv("AU15", _MOUTH_CORNERS, dx=-0.005, dy=0.045)
    mv("AU15", _LOWER_LIP_SIDES + _pts(LIPS_INNER[[7, 5]]), dy=0.018)
    mv("AU15", _UPPER_LIP_SIDES, dy=0.015)
    # chin raiser pushes the lower lip up and the chin boss up
    mv("AU17", _LOWER_LIP_MID, dy=-0.025)
    mv("AU17", _INNER_LOWER_MID, dy=-0.012)
    mv("AU17", _CHIN, dy=-0.012)
    # lip stretcher: corners outwards and slightly down, lips thinner
    mv("AU20", _MOUTH_CORNERS, dx=0.055, dy=0.012)
    mv("AU20", _NEXT_TO_CORNERS, dx=0.030, dy=0.004)
    mv("AU20", _UPPER_LIP_MID, dy=0.008)
    mv("AU20", _LOWER_LIP_MID, dy=-0.008)
    # lip tightener: narrower, thinner lips
    mv("AU23", _MOUTH_CORNERS, dx=-0.022)
    mv("AU23", _NEXT_TO_CORNERS, dx=-0.012)
    mv("AU23", _UPPER_LIP_MID, dy=0.012)
    mv("AU23", _LOWER_LIP_MID, dy=-0.014)
    # lips part: inner lips separate
    mv("AU25", _INNER_UPPER_MID, dy=-0.012)
    mv("AU25", _INNER_LOWER_MID, dy=0.030)
    mv("AU25", _LOWER_LIP_MID, dy=0.022)
    mv("AU25", _LOWER_LIP_SIDES, dy=0.012)
    # jaw drop: lower lip and chin go down, tapering along the jaw
    mv("AU26", _INNER_LOWER_MID, dy=0.110)
    mv("AU26", _LOWER_LIP, dy=0.100)
    mv("AU26", _INNER_UPPER_MID, dy=-0.004)
    for i, w in zip(_pts(JAW[3:14]), (0.15, 0.35, 0.6, 0.85, 1.0, 1.0, 1.0, 0.85, 0.6, 0.35, 0.15)):
        mv("AU26", [i], dy=0.12 * w, dx=-0.01 * w)
    # AU45 (blink) is geometric (upper lid to lower lid) and applied in apply_aus
    return d


_DISP = None


def displacements() -> torch.Tensor:
    global _DISP
    if _DISP is None:
        _DISP = _displacements()
    return _DISP


#: Style "photo": how much further each AU moves the landmarks than in the cartoon style (photographs of posed
#: expressions move the brows, lids and lip corners more than the cartoon's subtle defaults). Chosen, with
#: :data:`facelab.synth.render.PHOTO_FOLDS`, by a random search on world seeds 101 and 202 (20 people per emotion,
#: mild nuisance) for the log-probability that face-api's expression net and the FER2013 net give the world's label;
#: checked on seed 303; reported on chapter 02's seed 0 (benchmarks/bench_synth_realism.py --expressions).
PHOTO_AU_GAIN = {"AU01": 2.1, "AU02": 1.2, "AU04": 1.3, "AU05": 2.9, "AU06": 2.3, "AU07": 1.7, "AU09": 0.9,
                 "AU10": 1.6, "AU12": 2.2, "AU15": 3.25, "AU17": 1.6, "AU20": 2.7, "AU23": 2.0, "AU25": 1.9,
                 "AU26": 0.6}


def au_gain(style: str = "cartoon") -> torch.Tensor | None:
    """(n_AU,) displacement gains of a rendering style (None for the cartoon style: no change)."""
    if style == "cartoon":
        return None
    g = torch.ones(len(AU_NAMES))
    for name, v in PHOTO_AU_GAIN.items():
        g[_AU_INDEX[name]] = v
    return g


def apply_aus(landmarks: torch.Tensor, aus: torch.Tensor, scale: torch.Tensor | None = None,
              gain: torch.Tensor | None = None) -> torch.Tensor:
    """Move frontal-frame landmarks (N, 68, 2) by AU intensities (N, n_AU, 2 sides).

    ``scale`` (N,) multiplies the displacements (a face's size); ``gain`` (n_AU,) multiplies each AU's displacement
    (:func:`au_gain`). The blink closes each upper lid onto the lower lid.
    """
    d = displacements().to(landmarks)                    # (A, 68, 2)
    if gain is not None:
        d = d * gain.to(landmarks).view(-1, 1, 1)
    sw = side_weights().to(landmarks)                     # (68, 2)
    w = torch.einsum("nas,ps->nap", aus, sw)              # (N, A, 68): per-landmark intensity
    delta = torch.einsum("nap,apc->npc", w, d)
    if scale is not None:
        delta = delta * scale.view(-1, 1, 1)
    out = landmarks + delta
    blink = aus[:, _AU_INDEX["AU45"]]                     # (N, 2) right, left
    for side, (upper, lower) in enumerate((eye.upper, eye.lower) for eye in EYES):
        b = blink[:, side].view(-1, 1)
        up_y, lo_y = out[:, upper, 1], out[:, lower, 1]
        out[:, upper, 1] = up_y + b * (lo_y - up_y) * 0.92
        out[:, lower, 1] = lo_y - b * (lo_y - up_y) * 0.05
    return out


def au_index(name: str) -> int:
    return parse_au_name(name)[0]
