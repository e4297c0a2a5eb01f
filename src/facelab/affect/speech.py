"""Speech by espeak-ng (the Debian package; ``scripts/ensure_espeak.sh`` installs it in set-up) with prosody.

:class:`Prosody` holds what the corpus varies: voice, words per minute, pitch (0-99), amplitude, and
pauses; :func:`synthesize` renders a list of tokens (words, fillers and ``<pause:ms>`` markers) through espeak-ng's
SSML input and returns a float32 waveform at espeak-ng's 22,050 Hz.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from dataclasses import dataclass, replace
from xml.sax.saxutils import escape

import numpy as np

ESPEAK_RATE = 22050


class EspeakMissing(RuntimeError):
    """espeak-ng is not installed."""


def espeak_binary() -> str:
    """The espeak-ng executable, or :class:`EspeakMissing` saying how to install it."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise EspeakMissing("espeak-ng is not installed: the affect corpus renders its speech with it. Install the "
                            "Debian package (apt-get install espeak-ng) or run `bash scripts/ensure_espeak.sh` "
                            "(make setup does this)")
    return exe


@dataclass(frozen=True)
class Prosody:
    """espeak-ng settings: ``voice`` (e.g. ``en-us+f3``), ``rate`` (words per minute, 80-450), ``pitch`` (0-99),
    ``amplitude`` (0-200), ``word_gap_ms`` (extra pause between words)."""

    voice: str = "en-us"
    rate: int = 160
    pitch: int = 50
    amplitude: int = 100
    word_gap_ms: int = 0

    def __post_init__(self):
        for name, lo, hi in (("rate", 80, 450), ("pitch", 0, 99), ("amplitude", 0, 200),
                             ("word_gap_ms", 0, 2000)):
            v = getattr(self, name)
            if not (lo <= v <= hi):
                raise ValueError(f"prosody {name} must lie in [{lo}, {hi}], got {v}")

    def scaled(self, **kw) -> "Prosody":
        return replace(self, **{k: int(round(v)) if k != "voice" else v for k, v in kw.items()})


def _ssml(tokens) -> str:
    parts = []
    for tok in tokens:
        if tok.startswith("<pause:"):
            ms = int(tok[len("<pause:"):-1])
            parts.append(f'<break time="{ms}ms"/>')
        else:
            parts.append(escape(tok))
    return "<speak>" + " ".join(parts) + "</speak>"


def synthesize(tokens, prosody: Prosody = Prosody(), *, timeout_s: float = 30.0) -> np.ndarray:
    """Render tokens (words, fillers such as ``"um"``, and ``"<pause:400>"`` markers) to a float32 waveform at
    :data:`ESPEAK_RATE` Hz. Raises :class:`EspeakMissing` when espeak-ng is absent and ``ValueError`` for no words."""
    tokens = [str(t) for t in tokens]
    if not any(not t.startswith("<pause:") and t.strip() for t in tokens):
        raise ValueError("nothing to say: the script has no words")
    exe = espeak_binary()
    cmd = [exe, "-m", "-v", prosody.voice, "-s", str(prosody.rate), "-p", str(prosody.pitch), "-a",
           str(prosody.amplitude), "-g", str(max(0, prosody.word_gap_ms // 10)), "--stdout", _ssml(tokens)]
    res = subprocess.run(cmd, capture_output=True, timeout=timeout_s)
    if res.returncode != 0 or not res.stdout:
        raise RuntimeError(f"espeak-ng failed (exit {res.returncode}): {res.stderr.decode(errors='replace')[:300]}")
    with wave.open(io.BytesIO(res.stdout)) as w:
        sr, n = w.getframerate(), w.getnframes()
        pcm = np.frombuffer(w.readframes(n), np.int16)
    if sr != ESPEAK_RATE:  # pragma: no cover - espeak-ng's fixed rate
        from facelab.affect.audio import resample

        return resample(pcm.astype(np.float32) / 32768.0, sr, ESPEAK_RATE)
    return pcm.astype(np.float32) / 32768.0
