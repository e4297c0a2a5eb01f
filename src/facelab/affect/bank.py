"""A descriptor bank: every descriptor of an affect corpus in one small checkpoint (chapter 07).

Computing the descriptors of a corpus (two face nets and a landmark detector on every frame, eGeMAPS, ASR, MiniLM)
takes minutes; the quick profile of chapter 07 loads them from ``data/models/affect_descriptors_quick.safetensors``
through :func:`facelab.checkpoints.load_or_train`, with the corpus settings as the expected settings, so a change of
corpus, descriptor version or reduction retrains (recomputes) the bank. The full profile computes a larger bank the
same way (cached by content hash under ``data/cache/affect``).

What is stored (float16 unless said):

* per frame (all clips concatenated, ``clip`` says which clip): ``label`` (ABAW index), ``present`` (face found),
  ``faceapi_probs`` / ``fer_probs`` (7 each, the nets' own class order), ``net`` (both nets' penultimate features,
  standardised and projected on ``pca.net`` principal axes), ``shape`` (the normalised 68-point landmark shape,
  ``pca.shape`` axes) and ``deform`` (the shape minus the clip's median shape: an identity-free, AU-like
  deformation, ``pca.deform`` axes);
* per clip: ``ah``, ``ah_cues`` (words, voice, face), ``face_emotion`` / ``word_emotion`` (ABAW index), ``voice``
  (88 eGeMAPS functionals, float32), ``text_true`` / ``text_asr`` (MiniLM embeddings, ``pca.text`` axes), ``wer_edits``
  / ``wer_words`` (the ASR's word edits and the reference's word count);
* mimicry clips: per frame ``mim_clip``, ``mim_net``, ``mim_probs`` (face-api), ``mim_deform`` (the imitator's
  detected shape minus its first frame, on the ``deform`` axes), ``mim_true_deform`` (the same from the world's own
  landmarks: an upper bound for a landmark descriptor); per clip ``mim_target`` (6 intensities, float32).

Every projection (principal axes, standardisation) is fitted on a *separate calibration corpus* (another seed) and
on grammar sentences, never on the clips the bank holds: no label and no test clip is involved.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from facelab import checkpoints
from facelab.metrics.abaw import ABAW_EXPRESSIONS

RESTORE = "python -m facelab.affect.bank"
BANK_VERSION = 2

#: The quick profile's corpus (committed as ``data/models/affect_descriptors_quick``).
QUICK = {"corpus": {"n_clips": 400, "seed": 0, "size": 112, "fps": 10.0, "n_identities": 20, "ah_rate": 0.4},
         "n_mimicry": 150, "mimicry_noise": 0.15,
         "calibration": {"seed": 1, "n_clips": 40, "n_sentences": 400},
         "pca": {"net": 16, "shape": 12, "deform": 16, "text": 32}}
#: The full profile: a larger corpus and more mimicry clips (computed, not committed).
FULL = {**QUICK, "corpus": {**QUICK["corpus"], "n_clips": 1500}, "n_mimicry": 500}


def settings_for(profile: str) -> dict:
    """The bank settings of a profile (``"quick"`` or ``"full"``), with the descriptor and bank versions."""
    from facelab.affect.descriptors import DESCRIPTOR_VERSION

    if profile not in ("quick", "full"):
        raise ValueError(f"profile must be 'quick' or 'full', got {profile!r}")
    base = QUICK if profile == "quick" else FULL
    return {**base, "descriptor_version": DESCRIPTOR_VERSION, "bank_version": BANK_VERSION}


def checkpoint_name(profile: str) -> str:
    return f"affect_descriptors_{profile}"


# ------------------------------------------------------------------ projections fitted on the calibration corpus
@dataclass
class Projection:
    """Standardise with ``mean`` / ``scale`` then project on ``axes`` (k, D); NaN rows stay NaN."""

    mean: np.ndarray
    scale: np.ndarray
    axes: np.ndarray
    explained: np.ndarray

    @classmethod
    def fit(cls, X, k: int, *, standardise: bool = True) -> "Projection":
        X = np.asarray(X, np.float64)
        X = X[np.isfinite(X).all(1)]
        if len(X) < 2:
            raise ValueError(f"a projection needs at least 2 complete rows, got {len(X)}")
        mean = X.mean(0)
        scale = X.std(0) if standardise else np.ones(X.shape[1])
        scale = np.where(scale < 1e-8, 1.0, scale)
        Z = (X - mean) / scale
        _, s, vt = np.linalg.svd(Z, full_matrices=False)
        k = min(k, vt.shape[0])
        return cls(mean, scale, vt[:k], (s[:k] ** 2) / (s ** 2).sum())

    def __call__(self, X) -> np.ndarray:
        X = np.asarray(X, np.float64)
        return ((X - self.mean) / self.scale) @ self.axes.T


def deformation(shape: np.ndarray, reference: str = "median") -> np.ndarray:
    """Shapes (T, 136) minus the clip's median shape (``"median"``) or its first frame with a face (``"first"``)."""
    s = np.asarray(shape, np.float64)
    ok = np.isfinite(s).all(1)
    if not ok.any():
        return np.full_like(s, np.nan)
    ref = np.median(s[ok], 0) if reference == "median" else s[np.flatnonzero(ok)[0]]
    return s - ref


def _net_features(fd) -> np.ndarray:
    return np.concatenate([fd.faceapi_features, fd.fer_features], 1)


def _calibrate(settings: dict, cache, log, device=None) -> dict:
    from facelab.affect import AffectCorpus
    from facelab.affect import descriptors as D

    cal = settings["calibration"]
    corpus = AffectCorpus(cal["n_clips"], seed=cal["seed"], **{k: v for k, v in settings["corpus"].items()
                                                                  if k not in ("n_clips", "seed")}, speech=False)
    net, shape, deform = [], [], []
    for i in range(cal["n_clips"]):
        clip = corpus.clip(i)
        fd = D.face_descriptors(clip.frames, cache=cache, device=device)
        lm = D.landmark_descriptors(clip.frames, cache=cache)
        net.append(_net_features(fd))
        shape.append(lm.shape)
        deform.append(deformation(lm.shape))
    rng = np.random.default_rng(cal["seed"])
    sents = corpus.sentences()
    sents = [sents[i] for i in rng.permutation(len(sents))[:cal["n_sentences"]]]
    text = D.text_descriptors(sents).cpu().numpy()
    p = settings["pca"]
    proj = {"net": Projection.fit(np.concatenate(net), p["net"]),
            "shape": Projection.fit(np.concatenate(shape), p["shape"], standardise=False),
            "deform": Projection.fit(np.concatenate(deform), p["deform"], standardise=False),
            "text": Projection.fit(text, p["text"], standardise=False)}
    log["calibration_explained"] = {k: float(v.explained.sum()) for k, v in proj.items()}
    return proj


# ------------------------------------------------------------------ computing a bank
def compute_bank(settings: dict, *, cache=None, progress: bool = True, device=None) -> tuple[dict, dict]:
    """All descriptors of the corpus in ``settings`` (see the module notes): ``(tensors, log)``. ``device``: where
    the face nets run (the landmark detector, openSMILE and PocketSphinx run on the CPU)."""
    from facelab.affect import AH_CUES, AffectCorpus
    from facelab.affect import descriptors as D

    t0 = time.time()
    cache = cache if cache is not None else D.DescriptorCache()
    log: dict = {}
    proj = _calibrate(settings, cache, log, device)
    cs = settings["corpus"]
    corpus = AffectCorpus(cs["n_clips"], seed=cs["seed"], size=cs["size"], fps=cs["fps"],
                          n_identities=cs["n_identities"], ah_rate=cs["ah_rate"])
    asr = D.SphinxASR(corpus.sentences())
    fr = {k: [] for k in ("clip", "label", "present", "faceapi_probs", "fer_probs", "net", "shape", "deform")}
    cl = {k: [] for k in ("ah", "ah_cues", "face_emotion", "word_emotion", "voice", "text_true", "text_asr",
                          "wer_edits", "wer_words", "n_missing")}
    examples = []
    for i in range(cs["n_clips"]):
        clip = corpus.clip(i)
        d = D.clip_descriptors(clip, asr=asr, cache=cache, device=device)
        lm = D.landmark_descriptors(clip.frames, cache=cache)
        T = len(clip)
        fr["clip"].append(np.full(T, i))
        fr["label"].append(np.asarray(clip.labels["expression_index"]))
        fr["present"].append(d.face.present & lm.present)
        fr["faceapi_probs"].append(d.face.faceapi_probs)
        fr["fer_probs"].append(d.face.fer_probs)
        fr["net"].append(proj["net"](_net_features(d.face)))
        fr["shape"].append(proj["shape"](lm.shape))
        fr["deform"].append(proj["deform"](deformation(lm.shape)))
        cl["ah"].append(int(clip.ah))
        cl["ah_cues"].append([int(c in clip.ah_cues) for c in AH_CUES])
        cl["face_emotion"].append(ABAW_EXPRESSIONS.index(clip.face_emotion))
        cl["word_emotion"].append(ABAW_EXPRESSIONS.index(clip.word_emotion))
        cl["voice"].append(d.voice.features)
        cl["text_true"].append(proj["text"](d.text_true[None])[0])
        cl["text_asr"].append(proj["text"](d.text_asr[None])[0])
        ref, hyp = d.true_transcript.lower().split(), (d.asr_transcript or "").lower().split()
        cl["wer_edits"].append(D._edits(ref, hyp))
        cl["wer_words"].append(len(ref))
        cl["n_missing"].append(int((~(d.face.present & lm.present)).sum()))
        if len(examples) < 6:
            examples.append({"clip": i, "true": d.true_transcript, "asr": d.asr_transcript})
        if progress and (i + 1) % 50 == 0:
            print(f"bank: {i + 1}/{cs['n_clips']} clips, {time.time() - t0:.0f} s", flush=True)
    mm = {k: [] for k in ("mim_clip", "mim_net", "mim_probs", "mim_deform", "mim_true_deform", "mim_target")}
    for j in range(settings["n_mimicry"]):
        m = corpus.mimicry_clip(j, noise=settings["mimicry_noise"])
        fd = D.face_descriptors(m.frames, cache=cache, device=device)
        lm = D.landmark_descriptors(m.frames, cache=cache)
        mm["mim_clip"].append(np.full(len(m.frames), j))
        mm["mim_net"].append(proj["net"](_net_features(fd)))
        mm["mim_probs"].append(fd.faceapi_probs)
        mm["mim_deform"].append(proj["deform"](deformation(lm.shape, "first")))
        true_shape = D.normalise_landmarks(np.asarray(m.landmarks, np.float64))
        mm["mim_true_deform"].append(proj["deform"](deformation(true_shape, "first")))
        mm["mim_target"].append(np.asarray(m.seed_intensities, np.float64)[None])
    if progress:
        print(f"bank: mimicry done, {time.time() - t0:.0f} s", flush=True)

    def t(x, dtype=torch.float16):
        return torch.as_tensor(np.asarray(x, np.float64 if dtype.is_floating_point else np.int64)).to(dtype)

    small = {"clip": torch.int16, "label": torch.uint8, "present": torch.uint8}
    out = {k: t(np.concatenate(v), small.get(k, torch.float16)) for k, v in fr.items()}
    out.update({k: t(v, torch.float32 if k == "voice" else torch.int32 if k in
                     ("ah", "ah_cues", "face_emotion", "word_emotion", "wer_edits", "wer_words", "n_missing")
                     else torch.float16) for k, v in cl.items()})
    out.update({k: t(np.concatenate(v), torch.int16 if k == "mim_clip" else
                     torch.float32 if k == "mim_target" else torch.float16) for k, v in mm.items()})
    log.update(seconds=round(time.time() - t0, 1), n_frames=int(out["label"].numel()),
               n_missing=int(sum(cl["n_missing"])), asr_examples=examples, asr_lm=str(asr.lm).split("/")[-1])
    return out, log


# ------------------------------------------------------------------ the loaded bank
@dataclass
class DescriptorBank:
    """A loaded bank (see the module notes); arrays are numpy (float32 / int64)."""

    frames: dict
    clips: dict
    mimicry: dict
    settings: dict
    log: dict

    @property
    def n_clips(self) -> int:
        return len(self.clips["ah"])

    def per_clip(self, key: str) -> list:
        """A per-frame array split into one array per clip (clip order)."""
        ids = self.frames["clip"]
        x = self.frames[key]
        bounds = np.flatnonzero(np.diff(ids)) + 1
        return np.split(x, bounds)

    def mimicry_per_clip(self, key: str) -> list:
        ids = self.mimicry["mim_clip"]
        return np.split(self.mimicry[key], np.flatnonzero(np.diff(ids)) + 1)


def _to_bank(state: dict, meta: dict) -> DescriptorBank:
    arr = {k: v.float().numpy() if v.is_floating_point() else v.long().numpy() for k, v in state.items()}
    frame_keys = ("clip", "label", "present", "faceapi_probs", "fer_probs", "net", "shape", "deform")
    frames = {k: arr[k] for k in frame_keys}
    frames["present"] = frames["present"].astype(bool)
    mimicry = {k: arr[k] for k in arr if k.startswith("mim_")}
    clips = {k: arr[k] for k in arr if k not in frame_keys and not k.startswith("mim_")}
    return DescriptorBank(frames, clips, mimicry, meta["settings"], meta.get("log", {}))


def load_bank(profile: str = "quick", *, allow_compute: bool = True, device=None) -> DescriptorBank:
    """The descriptor bank of a profile through :func:`facelab.checkpoints.load_or_train`: loaded when the
    checkpoint matches :func:`settings_for` (profile), computed and saved otherwise (minutes; the full profile's
    bank is not committed). ``device``: where the face nets run when the bank is computed."""
    settings = settings_for(profile)
    state, meta = checkpoints.load_or_train(checkpoint_name(profile), lambda s: compute_bank(s, device=device), settings=settings,
                                            restore=f"{RESTORE} {profile}", allow_train=allow_compute)
    return _to_bank(state, meta)


def main(argv=None) -> int:
    import sys

    args = sys.argv[1:] if argv is None else list(argv)
    profile = args[0] if args else "quick"
    settings = settings_for(profile)
    state, log = compute_bank(settings)
    checkpoints.save(checkpoint_name(profile), state, settings=settings, log=log, restore=f"{RESTORE} {profile}")
    print(checkpoints.checkpoint_path(checkpoint_name(profile)), "written", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
