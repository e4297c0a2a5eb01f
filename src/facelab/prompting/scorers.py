"""Zero-shot scorers of prompts: sentence similarity to label descriptions, and a causal LM's calibrated label scores.

* :class:`MiniLMScorer`: the prompt's evidence and a description of each label are embedded by the frozen
  all-MiniLM-L6-v2 (:class:`facelab.models.text.MiniLMTextEncoder`); ``mode="prompt"`` scores by the cosine of the
  whole evidence with each description, ``mode="sentences"`` (default) by the mean over the evidence's sentences
  (each cue votes with its own similarities, so a long prompt is not dominated by its longest sentence).
* :class:`LMScorer`: label log-probabilities from :class:`facelab.models.language.LabelScorer` (one forward per
  prompt), cached by the prompt's content hash (memory, ``data/cache/prompting/<model>.json``, and an optional
  committed score checkpoint, :func:`save_score_checkpoint`), and :func:`calibrate` / content-free calibration
  (Zhao et al. 2021): subtract the log-probabilities the model gives the labels after a prompt whose fields are all
  ``"N/A"``, which removes the model's prior preference for some label words.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from facelab import DATA_DIR, checkpoints
from facelab.files import atomic_write_json
from facelab.prompting.scenes import LABELS

__all__ = ["LABEL_DESCRIPTIONS", "check_label_set", "MiniLMScorer", "LMScorer", "calibrate", "prompt_hash",
           "save_score_checkpoint", "load_score_checkpoint", "predictions", "label_bias"]

#: What each label means, for sentence similarity (short, no scene-specific words).
LABEL_DESCRIPTIONS = {
    "neutral": "The person feels neutral: calm, indifferent, nothing special is happening.",
    "happy": "The person feels happy: joyful, delighted, smiling, celebrating.",
    "sad": "The person feels sad: unhappy, grieving, downcast, in sorrow.",
    "angry": "The person feels angry: furious, hostile, irritated, ready to fight.",
    "fearful": "The person feels fearful: afraid, scared, terrified, in danger.",
    "disgusted": "The person feels disgusted: repulsed, sickened by something foul.",
    "surprised": "The person feels surprised: astonished, amazed, startled by the unexpected.",
}
CACHE_DIR = DATA_DIR / "cache" / "prompting"


def check_label_set(labels, descriptions: dict | None = None) -> tuple[str, ...]:
    """Labels known to the scorer (each needs a description), or a ``ValueError`` naming the unknown ones."""
    from facelab.models.language import check_labels

    labels = check_labels(labels)
    known = LABEL_DESCRIPTIONS if descriptions is None else descriptions
    unknown = [x for x in labels if x not in known]
    if unknown:
        raise ValueError(f"unknown labels {unknown}: this scorer knows {', '.join(known)}; pass descriptions= "
                         "with a sentence for each new label")
    return labels


def _sentences(body: str) -> list[str]:
    out = [s.strip() for s in body.replace("\n", " ").split(". ") if s.strip()]
    return out or [body]


class MiniLMScorer:
    """Cosine similarity of a prompt's evidence to label descriptions (higher = more likely)."""

    def __init__(self, labels=LABELS, *, descriptions: dict | None = None, mode: str = "sentences", encoder=None):
        if mode not in ("prompt", "sentences"):
            raise ValueError(f"mode must be 'prompt' or 'sentences', got {mode!r}")
        self.labels = check_label_set(labels, descriptions)
        self.descriptions = [(descriptions or LABEL_DESCRIPTIONS)[x] for x in self.labels]
        self.mode = mode
        if encoder is None:
            from facelab.models.text import MiniLMTextEncoder

            encoder = MiniLMTextEncoder(normalize=True)
        self.encoder = encoder
        self._D = torch.nn.functional.normalize(self.encoder(self.descriptions).float(), dim=1)

    def scores(self, bodies) -> np.ndarray:
        """``(n, n_labels)`` similarities for a list of evidence texts (``Prompt.body``)."""
        bodies = [bodies] if isinstance(bodies, str) else list(bodies)
        if not bodies:
            return np.zeros((0, len(self.labels)))
        if self.mode == "prompt":
            E = torch.nn.functional.normalize(self.encoder(bodies).float(), dim=1)
            return (E @ self._D.T).cpu().numpy()
        parts = [_sentences(b) for b in bodies]
        flat = [s for ss in parts for s in ss]
        E = torch.nn.functional.normalize(self.encoder(flat).float(), dim=1)
        S = (E @ self._D.T).cpu().numpy()
        out, i = np.empty((len(bodies), len(self.labels))), 0
        for r, ss in enumerate(parts):
            out[r] = S[i:i + len(ss)].mean(0)
            i += len(ss)
        return out


def prompt_hash(text: str, model_key: str, labels) -> str:
    """Content hash of (model, labels, prompt text): the cache key of a score."""
    return hashlib.sha256(json.dumps([model_key, list(labels), text]).encode()).hexdigest()[:32]


def calibrate(logp, content_free) -> np.ndarray:
    """Content-free calibration: ``log p(y | x) - log p(y | N/A)`` per label (broadcast over prompts)."""
    logp = np.asarray(logp, dtype=float)
    cf = np.asarray(content_free, dtype=float)
    if logp.ndim != 2 or cf.shape[-1] != logp.shape[1]:
        raise ValueError(f"expected (n, n_labels) scores and n_labels content-free scores, got {logp.shape} "
                         f"and {cf.shape}")
    return logp - cf.reshape(-1, logp.shape[1])


class LMScorer:
    """Label log-probabilities of a causal LM, cached by content hash.

    ``label_scorer`` is a :class:`facelab.models.language.LabelScorer` or ``None`` (then only cached scores can be
    served, and a missing one is a ``LookupError``); ``model_key`` names the model in the cache.
    """

    def __init__(self, label_scorer, model_key: str, labels=LABELS, *, cache_dir: Path | None = None,
                 checkpoint: str | None = None):
        self.scorer, self.model_key = label_scorer, model_key
        self.labels = check_label_set(labels) if label_scorer is None else tuple(label_scorer.labels)
        if label_scorer is not None and tuple(label_scorer.labels) != tuple(labels):
            raise ValueError(f"the label scorer scores {label_scorer.labels}, not {tuple(labels)}")
        self.cache_file = Path(cache_dir or CACHE_DIR) / f"{model_key}.json"
        self._cache: dict[str, list[float]] = {}
        if self.cache_file.is_file():
            try:
                self._cache.update(json.loads(self.cache_file.read_text()))
            except ValueError:
                pass                                            # a broken cache is recomputed
        if checkpoint is not None:
            self._cache.update(load_score_checkpoint(checkpoint, model_key, self.labels))
        self.computed = 0

    def logprobs(self, texts) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        keys = [prompt_hash(t, self.model_key, self.labels) for t in texts]
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        todo = [i for k, i in first.items() if k not in self._cache]
        if todo:
            if self.scorer is None:
                raise LookupError(f"{len(todo)} prompt(s) have no cached {self.model_key} score and no model is "
                                  "loaded to compute them")
            new = self.scorer.logprobs([texts[i] for i in todo])
            for i, row in zip(todo, new):
                self._cache[keys[i]] = [float(x) for x in row]
            self.computed += len(todo)
            atomic_write_json(self.cache_file, self._cache, indent=None)
        return np.array([self._cache[k] for k in keys])

    def entries(self, texts) -> dict:
        keys = [prompt_hash(t, self.model_key, self.labels) for t in texts]
        return {k: self._cache[k] for k in keys if k in self._cache}


def save_score_checkpoint(name: str, entries: dict, model_key: str, labels) -> dict:
    """Commit scores ``{hash: log-probs}`` as a small checkpoint (``data/models/<name>``)."""
    keys = sorted(entries)
    k = torch.tensor(np.array([np.frombuffer(bytes.fromhex(h), dtype=np.uint8) for h in keys]), dtype=torch.uint8)
    v = torch.tensor(np.array([entries[h] for h in keys]), dtype=torch.float32)
    return checkpoints.save(name, {"keys": k, "logprobs": v}, settings={"model": model_key, "labels": list(labels)},
                            log={"n_prompts": len(keys)}, restore="python -m facelab.studies.emotion_prompting")


def load_score_checkpoint(name: str, model_key: str, labels) -> dict:
    """``{hash: log-probs}`` from a committed score checkpoint; empty when it is absent or for another model."""
    try:
        state, meta = checkpoints.load(name)
    except checkpoints.CheckpointMissingError:
        return {}
    if meta["settings"] != {"model": model_key, "labels": list(labels)}:
        return {}
    keys = [bytes(r.tolist()).hex() for r in state["keys"]]
    return dict(zip(keys, state["logprobs"].double().numpy().tolist()))


def predictions(scores, labels=LABELS) -> np.ndarray:
    """Label names of the highest score per row."""
    return np.asarray(labels)[np.asarray(scores).argmax(1)]


def label_bias(pred, labels=LABELS) -> np.ndarray:
    """Share of predictions per label (a calibrated, unbiased scorer on balanced data is near 1/n each)."""
    pred = np.asarray(pred)
    return np.array([(pred == x).mean() if len(pred) else 0.0 for x in labels])
