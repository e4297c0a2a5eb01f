"""Audio checks and conversions shared by the speech synthesiser, the voice descriptors and the ASR.

Audio is a mono float32 waveform in [-1, 1] with its sample rate. :func:`check_audio` is the one gate: it rejects
empty input, non-finite samples, a wrong shape and an unexpected sample rate with a message that says what was
expected, and it *reports* (rather than rejects) silence and clipping, which callers handle in a defined way
(:class:`AudioCheck`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Sample rates the affect code accepts (espeak-ng writes 22,050 Hz; PocketSphinx wants 16,000 Hz).
SAMPLE_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
SILENCE_RMS = 1e-4
CLIP_LEVEL = 0.999


class AudioError(ValueError):
    """Audio that cannot be used (empty, wrong shape, non-finite, unexpected sample rate)."""


@dataclass(frozen=True)
class AudioCheck:
    """What :func:`check_audio` found: ``rms``, ``silent`` (rms below :data:`SILENCE_RMS`), ``clipped_fraction``
    (share of samples at full scale) and ``clipped`` (more than 1 % of them)."""

    n_samples: int
    sample_rate: int
    rms: float
    silent: bool
    clipped_fraction: float
    clipped: bool

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.sample_rate


def as_waveform(audio) -> np.ndarray:
    """A mono float32 waveform from float samples in [-1, 1], int16 PCM, or (n, channels) (averaged)."""
    x = np.asarray(audio)
    if x.dtype == np.int16:
        x = x.astype(np.float32) / 32768.0
    elif not np.issubdtype(x.dtype, np.floating):
        raise AudioError(f"audio must be float samples in [-1, 1] or int16 PCM, got dtype {x.dtype}")
    if x.ndim == 2:
        x = x.mean(1) if x.shape[1] <= 8 else x.mean(0)
    if x.ndim != 1:
        raise AudioError(f"audio must be a 1-D waveform (or samples x channels), got shape {x.shape}")
    return x.astype(np.float32, copy=False)


def check_audio(audio, sample_rate, *, min_duration_s: float = 0.05) -> tuple[np.ndarray, AudioCheck]:
    """Validate a waveform; returns it as float32 mono and an :class:`AudioCheck`.

    Raises :class:`AudioError` for empty or too short audio, NaN/inf samples, values beyond [-1, 1] (float input)
    and a sample rate outside :data:`SAMPLE_RATES`.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise AudioError(f"sample_rate must be an integer number of Hz, got {sample_rate!r}")
    if int(sample_rate) not in SAMPLE_RATES:
        raise AudioError(f"unexpected sample rate {sample_rate} Hz: expected one of {SAMPLE_RATES} "
                         "(resample the audio first)")
    x = as_waveform(audio)
    if x.size == 0:
        raise AudioError("audio is empty (0 samples): expected a waveform of at least "
                         f"{min_duration_s} s")
    if x.size < min_duration_s * sample_rate:
        raise AudioError(f"audio is {x.size / sample_rate:.4f} s long: expected at least {min_duration_s} s")
    if not np.all(np.isfinite(x)):
        raise AudioError("audio contains NaN or infinite samples")
    peak = float(np.abs(x).max())
    if peak > 1.0 + 1e-6:
        raise AudioError(f"float audio must lie in [-1, 1], got peak {peak:.3f} (scale it or pass int16 PCM)")
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    clipped = float(np.mean(np.abs(x) >= CLIP_LEVEL))
    return x, AudioCheck(int(x.size), int(sample_rate), rms, rms < SILENCE_RMS, clipped, clipped > 0.01)


def resample(x: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    """Polyphase resampling (scipy) of a float waveform."""
    from math import gcd

    from scipy.signal import resample_poly

    if sr_from == sr_to:
        return x.astype(np.float32, copy=False)
    g = gcd(int(sr_from), int(sr_to))
    return resample_poly(x, sr_to // g, sr_from // g).astype(np.float32)


def to_pcm16(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, -1.0, 1.0) * 32767.0).round().astype(np.int16)
