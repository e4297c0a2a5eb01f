"""Face, voice and word descriptors of affect clips, cached by content hash.

* Face (:func:`face_descriptors`): every frame goes through the book's pipeline, YuNet detection
  (:func:`facelab.detect.detect_faces`) and five-point alignment (:func:`facelab.align.align_faces`, ArcFace 112
  template); the aligned crop feeds face-api's expression net and the FER2013 mini-Xception, which give per-frame
  probabilities and penultimate features. Frames with no detected face are *marked* (``present`` False, rows of
  NaN) and counted (``n_missing``), never dropped.
* Voice (:func:`voice_descriptors`): openSMILE's eGeMAPS v02 functionals (88 numbers per clip). Audio is checked by
  :func:`facelab.affect.audio.check_audio`: empty audio and unexpected sample rates raise, silent audio gives NaN
  features with status ``"silent"``, clipped audio is processed with status ``"clipped"``.
* Words (:class:`SphinxASR`, :func:`word_error_rate`, :func:`text_descriptors`): PocketSphinx with a trigram
  language model estimated from the corpus grammar, then MiniLM sentence embeddings of the transcript (the ground
  truth transcript is the comparison).
* :class:`DescriptorCache`: ``.npz`` files under ``data/cache/affect/`` keyed by the SHA-256 of the content and the
  settings, written atomically (:func:`facelab.files.atomic_path`), so a rerun reads instead of recomputing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from facelab import DATA_DIR
from facelab.affect.audio import AudioError, check_audio, resample, to_pcm16

CACHE_DIR = DATA_DIR / "cache" / "affect"
DESCRIPTOR_VERSION = 1
ASR_RATE = 16000


# ------------------------------------------------------------------ cache
def content_hash(*parts, **settings) -> str:
    """SHA-256 over arrays/tensors (dtype, shape, bytes), strings and the settings (JSON)."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, torch.Tensor):
            p = p.detach().cpu().contiguous().numpy()
        if isinstance(p, np.ndarray):
            h.update(f"{p.dtype}{p.shape}".encode())
            h.update(np.ascontiguousarray(p).tobytes())
        elif p is None:
            h.update(b"<none>")
        else:
            h.update(str(p).encode())
        h.update(b"|")
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()


class DescriptorCache:
    """``get_or_compute(kind, key, compute)``: a dict of numpy arrays stored in ``<root>/<kind>/<key>.npz``.
    ``hits`` / ``misses`` count what happened. ``root=None``: no cache (always computes)."""

    def __init__(self, root=CACHE_DIR):
        self.root = Path(root) if root is not None else None
        self.hits = 0
        self.misses = 0

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.npz"

    def get_or_compute(self, kind: str, key: str, compute) -> dict:
        if self.root is not None:
            p = self.path(kind, key)
            if p.is_file():
                try:
                    with np.load(p, allow_pickle=False) as z:
                        out = {k: z[k] for k in z.files}
                    self.hits += 1
                    return out
                except (OSError, ValueError):  # a damaged file is recomputed and replaced
                    pass
        self.misses += 1
        out = {k: np.asarray(v) for k, v in compute().items()}
        if self.root is not None:
            from facelab.files import atomic_path

            p = self.path(kind, key)
            p.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(p) as tmp:
                with open(tmp, "wb") as f:
                    np.savez(f, **out)
        return out


# ------------------------------------------------------------------ face
@dataclass
class FaceDescriptors:
    """Per-frame face descriptors: ``present`` (T,) bool, ``faceapi_probs`` (T, 7), ``faceapi_features``
    (T, 256), ``fer_probs`` (T, 7), ``fer_features`` (T, 128), and with an EmotiEffLib model (full profile)
    ``emotiefflib_probs`` / ``emotiefflib_features``; rows of frames without a face are NaN."""

    present: np.ndarray
    faceapi_probs: np.ndarray
    faceapi_features: np.ndarray
    fer_probs: np.ndarray
    fer_features: np.ndarray
    emotiefflib_probs: np.ndarray | None = None
    emotiefflib_features: np.ndarray | None = None

    @property
    def n_missing(self) -> int:
        return int((~self.present).sum())

    @property
    def n_frames(self) -> int:
        return int(self.present.size)


def _uint8_frames(frames) -> np.ndarray:
    if isinstance(frames, np.ndarray) and frames.dtype == np.uint8:
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"uint8 frames must be (T, H, W, 3) RGB, got shape {frames.shape}")
        return frames
    from facelab.core.images import check_images

    x = check_images(torch.as_tensor(frames), "frames", channels=(3,), allow_empty=True)
    return (x.detach().cpu().permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def detect_and_align(frames, *, backend: str = "yunet", size: int = 112) -> tuple[np.ndarray, np.ndarray]:
    """Aligned crops (T, size, size, 3) uint8 (zeros where no face) and ``present`` (T,) for a frame sequence
    (float (T, 3, H, W) in [0, 1] or uint8 (T, H, W, 3)); the most confident face of each frame is used."""
    from facelab.align import align_faces
    from facelab.detect import detect_faces

    imgs = _uint8_frames(frames)
    crops = np.zeros((len(imgs), size, size, 3), np.uint8)
    present = np.zeros(len(imgs), bool)
    for t, im in enumerate(imgs):
        faces = detect_faces(im, backend, min_size=min(20, im.shape[0] // 5))
        if faces:
            crops[t] = align_faces(im, faces[0], "arcface-112", size=size)[0]
            present[t] = True
    return crops, present


@torch.no_grad()
def _faceapi_outputs(model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h = model.dense(x - model.mean)
    feat = torch.nn.functional.avg_pool2d(h, 7, 2).flatten(1)
    return torch.softmax(model.fc(feat), 1), feat


def face_descriptors(frames, *, device=None, backend: str = "yunet", batch_size: int = 64,
                     cache: DescriptorCache | None = None, emotiefflib=None) -> FaceDescriptors:
    """Per-frame probabilities and penultimate features of face-api's net and the FER mini-Xception on detected,
    aligned faces (see the module notes). ``frames``: float (T, 3, H, W) in [0, 1] or uint8 (T, H, W, 3).
    ``emotiefflib``: an :class:`facelab.models.emotiefflib.EmotiEffLibONNX` (full profile) run on the same crops."""
    from facelab.models import load_expression_model, load_fer_expression

    imgs = _uint8_frames(frames)
    if len(imgs) == 0:
        raise ValueError("no frames: expected a (T, 3, H, W) clip with T >= 1")

    def compute():
        crops, present = detect_and_align(imgs, backend=backend)
        T = len(imgs)
        out = dict(present=present, faceapi_probs=np.full((T, 7), np.nan, np.float32),
                   faceapi_features=np.full((T, 256), np.nan, np.float32),
                   fer_probs=np.full((T, 7), np.nan, np.float32), fer_features=np.full((T, 128), np.nan, np.float32))
        idx = np.flatnonzero(present)
        if idx.size:
            fa = load_expression_model(device=device)
            fer = load_fer_expression(device=device)
            dev = fa.mean.device
            x = torch.from_numpy(crops[idx]).permute(0, 3, 1, 2).float().div(255)
            for s in range(0, len(idx), batch_size):
                xb = x[s:s + batch_size].to(dev)
                p, f = _faceapi_outputs(fa, xb)
                o = fer.outputs(xb)
                sl = idx[s:s + batch_size]
                out["faceapi_probs"][sl] = p.cpu().numpy()
                out["faceapi_features"][sl] = f.cpu().numpy()
                out["fer_probs"][sl] = o.probabilities.cpu().numpy()
                out["fer_features"][sl] = o.descriptor.cpu().numpy()
        if emotiefflib is not None:
            e = emotiefflib.outputs(crops[idx]) if idx.size else None
            n_cls = len(emotiefflib.classes)
            dim = e.descriptor.shape[1] if e is not None else 0
            out["emotiefflib_probs"] = np.full((T, n_cls), np.nan, np.float32)
            out["emotiefflib_features"] = np.full((T, dim), np.nan, np.float32)
            if e is not None:
                out["emotiefflib_probs"][idx] = e.probabilities.cpu().numpy()
                out["emotiefflib_features"][idx] = e.descriptor.cpu().numpy()
        return out

    extra = None if emotiefflib is None else content_hash(str(emotiefflib.path), emotiefflib.size)
    key = content_hash(imgs, backend=backend, v=DESCRIPTOR_VERSION, emotiefflib=extra)
    d = (cache or DescriptorCache(None)).get_or_compute("face", key, compute)
    return FaceDescriptors(d["present"].astype(bool), d["faceapi_probs"], d["faceapi_features"], d["fer_probs"],
                           d["fer_features"], d.get("emotiefflib_probs"), d.get("emotiefflib_features"))



# ------------------------------------------------------------------ landmarks (an AU-style geometric descriptor)
@dataclass
class LandmarkDescriptors:
    """Per-frame 68-point landmarks of the book's detector (YuNet box, dlib's 68-point shape predictor):
    ``present`` (T,) bool, ``points`` (T, 68, 2) in pixels and ``shape`` (T, 136), the points normalised for
    position, in-plane rotation (eye line horizontal) and scale (RMS distance to the centroid = 1); rows of frames
    without a face are NaN."""

    present: np.ndarray
    points: np.ndarray
    shape: np.ndarray

    @property
    def n_missing(self) -> int:
        return int((~self.present).sum())


def normalise_landmarks(points) -> np.ndarray:
    """(T, 68, 2) landmarks -> (T, 136) shapes with the centroid at 0, the eye line horizontal and unit RMS radius
    (iBUG 68 order: eyes are points 36-41 and 42-47). NaN rows stay NaN."""
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 3 or p.shape[1:] != (68, 2):
        raise ValueError(f"expected (T, 68, 2) landmarks, got shape {p.shape}")
    c = p - p.mean(1, keepdims=True)
    eye = c[:, 42:48].mean(1) - c[:, 36:42].mean(1)
    ang = np.arctan2(eye[:, 1], eye[:, 0])
    cos, sin = np.cos(-ang)[:, None], np.sin(-ang)[:, None]
    r = np.stack([c[..., 0] * cos - c[..., 1] * sin, c[..., 0] * sin + c[..., 1] * cos], -1)
    scale = np.sqrt((r ** 2).sum(-1).mean(1))[:, None, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = r / scale
    return r.reshape(len(p), -1).astype(np.float32)


def landmark_descriptors(frames, *, backend: str = "yunet", cache: DescriptorCache | None = None) -> LandmarkDescriptors:
    """68-point landmarks of every frame (the most confident face; dlib's shape predictor in the detector's box);
    frames without a face are marked (``present`` False, NaN rows) and counted, never dropped.
    ``frames``: float (T, 3, H, W) in [0, 1] or uint8 (T, H, W, 3). Cached by content hash (kind ``landmarks``)."""
    from facelab.detect import detect_faces, shape_predictor_landmarks

    imgs = _uint8_frames(frames)
    if len(imgs) == 0:
        raise ValueError("no frames: expected a (T, 3, H, W) clip with T >= 1")

    def compute():
        pts = np.full((len(imgs), 68, 2), np.nan, np.float32)
        present = np.zeros(len(imgs), bool)
        for t, im in enumerate(imgs):
            faces = detect_faces(im, backend, min_size=min(20, im.shape[0] // 5), landmarks="none")
            if faces:
                pts[t] = shape_predictor_landmarks(np.ascontiguousarray(im), faces[0], 68)
                present[t] = True
        return dict(present=present, points=pts)

    key = content_hash(imgs, backend=backend, v=DESCRIPTOR_VERSION, what="landmarks68")
    d = (cache or DescriptorCache(None)).get_or_compute("landmarks", key, compute)
    pts = d["points"].astype(np.float32)
    return LandmarkDescriptors(d["present"].astype(bool), pts, normalise_landmarks(pts))


#: class names of the expression nets (face-api, FER2013, EmotiEffLib) -> ABAW class (contempt -> other)
NET_TO_ABAW = {"neutral": "neutral", "happy": "happiness", "happiness": "happiness", "sad": "sadness",
               "sadness": "sadness", "angry": "anger", "anger": "anger", "fearful": "fear", "fear": "fear",
               "disgusted": "disgust", "disgust": "disgust", "surprised": "surprise", "surprise": "surprise",
               "contempt": "other", "other": "other"}


def to_abaw(probs, classes) -> np.ndarray:
    """Probabilities (T, len(classes)) of a net's classes as (T, 8) in ABAW order (neutral, anger, disgust, fear,
    happiness, sadness, surprise, other); classes the net lacks get 0, NaN rows (missing faces) stay NaN."""
    from facelab.metrics.abaw import ABAW_EXPRESSIONS

    p = np.asarray(probs, dtype=np.float32)
    classes = list(classes)
    if p.ndim != 2 or p.shape[1] != len(classes):
        raise ValueError(f"expected probabilities (T, {len(classes)}) for classes {classes}, got shape {p.shape}")
    unknown = [c for c in classes if c not in NET_TO_ABAW]
    if unknown:
        raise ValueError(f"unknown class name(s) {unknown}: expected names among {', '.join(NET_TO_ABAW)}")
    out = np.zeros((len(p), len(ABAW_EXPRESSIONS)), np.float32)
    for k, c in enumerate(classes):
        out[:, ABAW_EXPRESSIONS.index(NET_TO_ABAW[c])] += p[:, k]
    out[np.isnan(p).any(1)] = np.nan
    return out


# ------------------------------------------------------------------ voice
@dataclass
class VoiceDescriptors:
    """eGeMAPS functionals ``features`` (88,) with their ``names``; ``status``: "ok", "clipped" or "silent"
    (features NaN)."""

    features: np.ndarray
    names: list[str]
    status: str


_SMILE = {}


def _smile():
    if "s" not in _SMILE:
        try:
            import opensmile
        except ImportError:
            raise ImportError("voice descriptors need openSMILE: pip install opensmile") from None
        _SMILE["s"] = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                      feature_level=opensmile.FeatureLevel.Functionals)
    return _SMILE["s"]


def egemaps_names() -> list[str]:
    return list(_smile().feature_names)


def voice_descriptors(audio, sample_rate: int, *, cache: DescriptorCache | None = None) -> VoiceDescriptors:
    """openSMILE eGeMAPS v02 functionals of one utterance (see the module notes for bad audio)."""
    x, chk = check_audio(audio, sample_rate)
    names = egemaps_names()
    if chk.silent:
        return VoiceDescriptors(np.full(len(names), np.nan, np.float32), names, "silent")

    def compute():
        f = _smile().process_signal(x, sample_rate).to_numpy(np.float32).reshape(-1)
        return {"features": f}

    key = content_hash(x, sr=sample_rate, v=DESCRIPTOR_VERSION)
    d = (cache or DescriptorCache(None)).get_or_compute("voice", key, compute)
    return VoiceDescriptors(d["features"], names, "clipped" if chk.clipped else "ok")


# ------------------------------------------------------------------ words
class ASRModelMissing(FileNotFoundError):
    """PocketSphinx or its English acoustic model / dictionary is not installed."""


def _sphinx_model() -> tuple[Path, Path]:
    try:
        import pocketsphinx
    except ImportError:
        raise ASRModelMissing("speech recognition needs PocketSphinx: pip install pocketsphinx (its wheel ships the "
                              "en-us acoustic model and the CMU dictionary)") from None
    base = Path(pocketsphinx.get_model_path()) / "en-us"
    hmm, dic = base / "en-us", base / "cmudict-en-us.dict"
    for p in (hmm, dic):
        if not p.exists():
            raise ASRModelMissing(f"PocketSphinx's English model is missing ({p}): reinstall pocketsphinx")
    return hmm, dic


def build_language_model(sentences, path) -> Path:
    """Estimate a trigram ARPA language model from ``sentences`` (PocketSphinx's ArpaBoLM) and write it to ``path``
    (atomically)."""
    from pocketsphinx.lm import ArpaBoLM

    from facelab.files import atomic_path

    sents = [" ".join(str(s).lower().split()) for s in sentences]
    sents = [s for s in sents if s]
    if not sents:
        raise ValueError("no sentences to build the language model from")
    lm = ArpaBoLM(text="\n".join(sents) + "\n", add_start=True)  # <s> and </s>, which the decoder needs
    lm.compute()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        lm.write_file(str(tmp))
    return path


class SphinxASR:
    """PocketSphinx (en-us acoustic model, CMU dictionary) with a language model estimated from ``sentences``
    (the corpus grammar, :func:`facelab.affect.script.grammar_sentences`); ``sentences=None`` uses the generic
    English LM. The LM file is cached under ``cache_dir`` by the hash of its text."""

    def __init__(self, sentences=None, *, cache_dir=CACHE_DIR / "asr"):
        from pocketsphinx import Decoder

        hmm, dic = _sphinx_model()
        kw = dict(hmm=str(hmm), dict=str(dic), samprate=ASR_RATE, loglevel="FATAL")
        if sentences is not None:
            sentences = list(sentences)
            key = content_hash(*sentences)[:16]
            lm_path = Path(cache_dir) / f"lm-{key}.arpa"
            if not lm_path.is_file():
                build_language_model(sentences, lm_path)
            # a dictionary of the grammar's words only: loading the 134k-word CMU dictionary takes ~10-30 s
            vocab = {w for s in sentences for w in str(s).lower().split()}
            entries = _dict_entries(dic)
            self.oov = sorted(w for w in vocab if w not in entries)
            dict_path = Path(cache_dir) / f"dict-{key}.dict"
            if not dict_path.is_file():
                from facelab.files import atomic_write_text

                atomic_write_text(dict_path, "".join(ln for w in sorted(vocab) for ln in entries.get(w, [])))
            kw["lm"], kw["dict"] = str(lm_path), str(dict_path)
        else:
            kw["lm"] = str(hmm.parent / "en-us.lm.bin")
            self.oov = []
        self.lm = kw["lm"]
        self.decoder = Decoder(**kw)

    def transcribe(self, audio, sample_rate: int) -> str:
        """The recognised words (lower case); ``""`` for silent audio. Raises :class:`AudioError` for empty audio
        or an unexpected sample rate."""
        x, chk = check_audio(audio, sample_rate)
        if chk.silent:
            return ""
        y = resample(x, sample_rate, ASR_RATE)
        pad = np.zeros(int(0.3 * ASR_RATE), np.float32)  # the decoder needs silence around the utterance
        pcm = to_pcm16(np.concatenate([pad, y, pad]))
        d = self.decoder
        d.start_utt()
        d.process_raw(pcm.tobytes(), full_utt=True)
        d.end_utt()
        hyp = d.hyp()
        return " ".join(hyp.hypstr.split()) if hyp is not None else ""


_DICT: dict = {}


def _dict_entries(dic: Path) -> dict[str, list[str]]:
    """CMU dictionary lines by word (alternative pronunciations ``word(2)`` under ``word``), read once."""
    if dic not in _DICT:
        out: dict[str, list[str]] = {}
        for ln in dic.read_text().splitlines():
            if ln.strip():
                out.setdefault(ln.split(maxsplit=1)[0].split("(")[0], []).append(ln + "\n")
        _DICT[dic] = out
    return _DICT[dic]


def _edits(ref: list[str], hyp: list[str]) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def word_error_rate(reference, hypothesis) -> float:
    """Word error rate (substitutions + deletions + insertions) / reference words, case- and space-insensitive.

    ``reference`` and ``hypothesis`` are strings, or equal-length lists of strings (corpus WER: total edits over
    total reference words). Raises ``ValueError`` when the reference has no words.
    """
    if isinstance(reference, str) != isinstance(hypothesis, str):
        raise TypeError("reference and hypothesis must both be strings or both be lists of strings")
    if isinstance(reference, str):
        reference, hypothesis = [reference], [hypothesis]
    reference, hypothesis = list(reference), list(hypothesis)
    if len(reference) != len(hypothesis):
        raise ValueError(f"{len(reference)} references but {len(hypothesis)} hypotheses")
    n = e = 0
    for r, h in zip(reference, hypothesis):
        rw, hw = str(r).lower().split(), str(h).lower().split()
        n += len(rw)
        e += _edits(rw, hw)
    if n == 0:
        raise ValueError("the reference has no words: the word error rate is undefined")
    return e / n


_TEXT = {}


def text_descriptors(texts, *, device=None) -> torch.Tensor:
    """MiniLM sentence embeddings (n, 384) of transcripts; an empty transcript (nothing recognised) gives a row
    of zeros."""
    from facelab.models.text import MiniLMTextEncoder

    texts = [str(t) for t in texts]
    if "enc" not in _TEXT:
        _TEXT["enc"] = MiniLMTextEncoder()
    enc = _TEXT["enc"]
    out = torch.zeros(len(texts), enc.dim)
    idx = [i for i, t in enumerate(texts) if t.strip()]
    if idx:
        out[idx] = enc([texts[i] for i in idx]).cpu()
    return out.to(device if device is not None else "cpu")


# ------------------------------------------------------------------ a whole clip
@dataclass
class ClipDescriptors:
    """All descriptors of a clip: ``face`` (:class:`FaceDescriptors`), ``voice`` (:class:`VoiceDescriptors` or
    None), ``asr_transcript`` (or None), ``true_transcript``, ``text_asr`` / ``text_true`` (384,) embeddings."""

    clip_id: str
    face: FaceDescriptors
    voice: VoiceDescriptors | None
    true_transcript: str
    asr_transcript: str | None
    text_true: np.ndarray
    text_asr: np.ndarray | None
    meta: dict = field(default_factory=dict)


def clip_descriptors(clip, *, asr: SphinxASR | None = None, device=None,
                     cache: DescriptorCache | None = None) -> ClipDescriptors:
    """Face, voice and word descriptors of an :class:`~facelab.affect.corpus.AffectClip` (cached by content)."""
    cache = cache if cache is not None else DescriptorCache()
    face = face_descriptors(clip.frames, device=device, cache=cache)
    voice = asr_text = None
    if clip.audio is not None:
        voice = voice_descriptors(clip.audio, clip.sample_rate, cache=cache)
        if asr is not None:
            key = content_hash(clip.audio, Path(asr.lm).name, sr=clip.sample_rate)
            d = cache.get_or_compute("asr", key, lambda: {"text": np.array(asr.transcribe(clip.audio,
                                                                                           clip.sample_rate))})
            asr_text = str(d["text"])
    texts = [clip.transcript] + ([asr_text] if asr_text is not None else [])
    emb = text_descriptors(texts).numpy()
    return ClipDescriptors(clip.clip_id, face, voice, clip.transcript, asr_text, emb[0],
                           emb[1] if asr_text is not None else None)


__all__ = ["DescriptorCache", "content_hash", "NET_TO_ABAW", "to_abaw", "FaceDescriptors", "face_descriptors", "detect_and_align",
           "VoiceDescriptors", "voice_descriptors", "LandmarkDescriptors", "landmark_descriptors",
           "normalise_landmarks", "egemaps_names", "ASRModelMissing", "SphinxASR",
           "build_language_model", "word_error_rate", "text_descriptors", "ClipDescriptors", "clip_descriptors",
           "AudioError", "CACHE_DIR"]
