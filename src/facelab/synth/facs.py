"""FACS action units on the 68-landmark layout, and the basic emotions as AU prototypes.

Each action unit moves landmarks (a displacement field on the 68 points at intensity 1, in frontal-frame units) and
drives shading in the renderer (wrinkles, cheek raise, dimples). Intensities live in [0, 1]. An AU can act on one
side only: ``"AU12L"`` is the subject's left half (image right), ``"AU12R"`` the subject's right (image left).
"""

from __future__ import annotations

import re
from typing import Mapping

import torch

from facelab.synth.landmarks import mean_shape, side_weights

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

    # brows: 17..21 right (outer -> inner), 22..26 left (inner -> outer)
    inner = {21: 1.0, 20: 0.75, 19: 0.45, 18: 0.25, 17: 0.1, 22: 1.0, 23: 0.75, 24: 0.45, 25: 0.25, 26: 0.1}
    for i, w in inner.items():
        mv("AU01", [i], dy=-0.075 * w, dx=0.006 * w)
        mv("AU02", [i], dy=-0.075 * (1.15 - w))
        mv("AU04", [i], dy=0.045 * (0.5 + 0.5 * w), dx=-0.03 * w)
        mv("AU09", [i], dy=0.025 * w)
    # eyes: upper lids 37,38 / 43,44; lower lids 40,41 / 46,47; corners 36,39 / 42,45
    mv("AU05", [37, 38, 43, 44], dy=-0.028)
    mv("AU04", [37, 38, 43, 44], dy=0.008)
    mv("AU06", [40, 41, 46, 47], dy=-0.016)
    mv("AU06", [36, 45], dy=-0.008)
    mv("AU07", [40, 41, 46, 47], dy=-0.022)
    mv("AU07", [37, 38, 43, 44], dy=0.010)
    # nose and upper lip
    mv("AU09", [31, 32, 33, 34, 35], dy=-0.022)
    mv("AU09", [31, 35], dx=0.008)
    mv("AU09", [49, 50, 51, 52, 53, 61, 62, 63], dy=-0.018)
    mv("AU10", [49, 50, 51, 52, 53], dy=-0.035)
    mv("AU10", [61, 62, 63], dy=-0.045)
    mv("AU10", [31, 32, 33, 34, 35], dy=-0.010)
    # lip corners
    mv("AU12", [48, 54, 60, 64], dx=0.050, dy=-0.050)
    mv("AU12", [49, 53, 59, 55], dx=0.022, dy=-0.025)
    mv("AU12", [61, 63, 67, 65], dx=0.012, dy=-0.012)
    mv("AU12", [3, 4, 12, 13], dx=0.008)
    mv("AU14", [48, 54, 60, 64], dx=-0.010, dy=-0.010)
    mv("AU14", [49, 53], dy=0.004)
    mv("AU15", [48, 54, 60, 64], dx=-0.005, dy=0.045)
    mv("AU15", [59, 55, 67, 65], dy=0.018)
    mv("AU15", [49, 53], dy=0.015)
    # chin raiser pushes the lower lip up and the chin boss up
    mv("AU17", [56, 57, 58], dy=-0.025)
    mv("AU17", [65, 66, 67], dy=-0.012)
    mv("AU17", [6, 7, 8, 9, 10], dy=-0.012)
    # lip stretcher: corners outwards and slightly down, lips thinner
    mv("AU20", [48, 54, 60, 64], dx=0.055, dy=0.012)
    mv("AU20", [49, 53, 59, 55], dx=0.030, dy=0.004)
    mv("AU20", [50, 51, 52], dy=0.008)
    mv("AU20", [56, 57, 58], dy=-0.008)
    # lip tightener: narrower, thinner lips
    mv("AU23", [48, 54, 60, 64], dx=-0.022)
    mv("AU23", [49, 53, 59, 55], dx=-0.012)
    mv("AU23", [50, 51, 52], dy=0.012)
    mv("AU23", [56, 57, 58], dy=-0.014)
    # lips part: inner lips separate
    mv("AU25", [61, 62, 63], dy=-0.012)
    mv("AU25", [65, 66, 67], dy=0.030)
    mv("AU25", [56, 57, 58], dy=0.022)
    mv("AU25", [55, 59], dy=0.012)
    # jaw drop: lower lip and chin go down, tapering along the jaw
    mv("AU26", [65, 66, 67], dy=0.110)
    mv("AU26", [55, 56, 57, 58, 59], dy=0.100)
    mv("AU26", [61, 62, 63], dy=-0.004)
    for i, w in zip(range(3, 14), (0.15, 0.35, 0.6, 0.85, 1.0, 1.0, 1.0, 0.85, 0.6, 0.35, 0.15)):
        mv("AU26", [i], dy=0.12 * w, dx=-0.01 * w)
    # AU45 (blink) is geometric (upper lid to lower lid) and applied in apply_aus
    return d


_DISP = None


def displacements() -> torch.Tensor:
    global _DISP
    if _DISP is None:
        _DISP = _displacements()
    return _DISP


def apply_aus(landmarks: torch.Tensor, aus: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """Move frontal-frame landmarks (N, 68, 2) by AU intensities (N, n_AU, 2 sides).

    ``scale`` (N,) multiplies the displacements (a face's size). The blink closes each upper lid onto the lower lid.
    """
    d = displacements().to(landmarks)                    # (A, 68, 2)
    sw = side_weights().to(landmarks)                     # (68, 2)
    w = torch.einsum("nas,ps->nap", aus, sw)              # (N, A, 68): per-landmark intensity
    delta = torch.einsum("nap,apc->npc", w, d)
    if scale is not None:
        delta = delta * scale.view(-1, 1, 1)
    out = landmarks + delta
    blink = aus[:, _AU_INDEX["AU45"]]                     # (N, 2) right, left
    for side, (upper, lower) in enumerate((([37, 38], [41, 40]), ([43, 44], [47, 46]))):
        b = blink[:, side].view(-1, 1)
        up_y, lo_y = out[:, upper, 1], out[:, lower, 1]
        out[:, upper, 1] = up_y + b * (lo_y - up_y) * 0.92
        out[:, lower, 1] = lo_y - b * (lo_y - up_y) * 0.05
    return out


def au_index(name: str) -> int:
    return parse_au_name(name)[0]
