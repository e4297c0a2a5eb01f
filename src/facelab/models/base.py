"""The common interface of the face embedders: an ``nn.Module`` that maps aligned face chips to embeddings."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

__all__ = ["Embedder", "to_float_batch"]


def to_float_batch(batch, size: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Validate and convert a batch of face chips to a float tensor (N, 3, S, S) RGB in [0, 1].

    Accepts a uint8 array or tensor (N, S, S, 3) (or one chip (S, S, 3)), or a float tensor/array (N, 3, S, S)
    in [0, 1] (or one chip (3, S, S)). Anything else raises ``ValueError`` saying what was expected.
    """
    expected = (f"expected aligned chips of {size}x{size}: uint8 (N, {size}, {size}, 3) or float (N, 3, {size}, "
                f"{size}) RGB in [0, 1]")
    if isinstance(batch, (list, tuple)):
        if len(batch) == 0:
            return torch.zeros((0, 3, size, size), dtype=dtype, device=device)
        batch = np.stack([np.asarray(b) for b in batch]) if not torch.is_tensor(batch[0]) else torch.stack(batch)
    if isinstance(batch, np.ndarray):
        if batch.dtype == np.uint8:
            x = torch.from_numpy(np.ascontiguousarray(batch))
        elif np.issubdtype(batch.dtype, np.floating):
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        else:
            raise ValueError(f"{expected}; got a numpy array of dtype {batch.dtype}")
    elif torch.is_tensor(batch):
        x = batch
    else:
        raise ValueError(f"{expected}; got {type(batch).__name__}")
    if x.dtype == torch.uint8:
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if x.dim() != 4 or x.shape[-1] != 3:
            if x.dim() == 4 and x.shape[1] == 3 and x.shape[-1] != 3:
                x = x.permute(0, 2, 3, 1)
            else:
                raise ValueError(f"{expected}; got a uint8 batch of shape {tuple(x.shape)} "
                                 f"(last axis must be 3 RGB channels)")
        if tuple(x.shape[1:3]) != (size, size):
            raise ValueError(f"{expected}; got chips of {x.shape[1]}x{x.shape[2]} (align with the model's template)")
        x = x.permute(0, 3, 1, 2).to(device=device, dtype=dtype).div(255.0)
        return x
    if not x.is_floating_point():
        raise ValueError(f"{expected}; got a tensor of dtype {x.dtype}")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{expected}; got a float batch of shape {tuple(x.shape)} (axis 1 must be 3 RGB channels)")
    if tuple(x.shape[2:]) != (size, size):
        raise ValueError(f"{expected}; got chips of {x.shape[2]}x{x.shape[3]} (align with the model's template)")
    return x.to(device=device, dtype=dtype)


class Embedder(nn.Module):
    """Base class of the face embedders.

    Attributes
    ----------
    name : str
    embedding_size : int
    distance : {"euclidean", "cosine"}
        The metric two embeddings are compared with. Comparisons return *similarities*
        (:mod:`facelab.core.scores`): minus the L2 distance, or the cosine similarity; higher = more alike.
    threshold : float
        The published same-person threshold **as a similarity** (same person when ``similarity >= threshold``):
        dlib publishes L2 distance 0.6, stored as -0.6; SFace publishes cosine similarity 0.363.
        :meth:`is_same` applies it; :attr:`distance_threshold` gives it back as a distance.
    input_size : int
        Side of the aligned chips it expects.
    template : str
        The :func:`facelab.align.align_faces` template that makes those chips.
    differentiable : bool
        Whether gradients flow from the embedding back to the input pixels.
    """

    name: str = ""
    embedding_size: int = 0
    distance: str = "euclidean"
    threshold: float = 0.0
    input_size: int = 0
    template: str = ""
    differentiable: bool = True

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def embed(self, batch, *, batch_size: int = 64) -> torch.Tensor:
        """Embeddings (N, D) float32 of a batch of aligned chips (see :func:`to_float_batch` for the input spec).

        Keeps the autograd graph when the input is a float tensor that requires grad (and the model is
        differentiable); otherwise runs without gradients, in chunks of ``batch_size``.
        """
        x = to_float_batch(batch, self.input_size, device=self.device)
        if x.shape[0] == 0:
            return torch.zeros((0, self.embedding_size), device=self.device)
        if x.requires_grad and torch.is_grad_enabled():
            if not self.differentiable:
                raise RuntimeError(f"{self.name} is not differentiable (differentiable=False)")
            return self(x)
        with torch.no_grad():
            return torch.cat([self(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])

    def _pair(self, a, b):
        a = torch.as_tensor(a, dtype=torch.float32)
        b = a if b is None else torch.as_tensor(b, dtype=torch.float32)
        if a.dim() != 2 or b.dim() != 2 or a.shape[1] != self.embedding_size or b.shape[1] != self.embedding_size:
            raise ValueError(f"expected embeddings (N, {self.embedding_size}) and (M, {self.embedding_size}), got "
                             f"{tuple(a.shape)} and {tuple(b.shape)}")
        return a, b

    def similarity(self, a, b=None) -> torch.Tensor:
        """(N, M) similarities between embeddings ``a`` (N, D) and ``b`` (M, D) (default ``a``): minus the L2
        distance (euclidean) or the cosine similarity; compare with :attr:`threshold`."""
        from facelab.core.scores import similarity_matrix

        return similarity_matrix(*self._pair(a, b), self.distance)

    def pairwise_distance(self, a, b=None) -> torch.Tensor:
        """(N, M) distances between embeddings ``a`` (N, D) and ``b`` (M, D) (default ``a``) in this embedder's metric
        (euclidean, or cosine distance 1 - cos)."""
        a, b = self._pair(a, b)
        if self.distance == "euclidean":
            return torch.cdist(a, b)
        an = torch.nn.functional.normalize(a, dim=1)
        bn = torch.nn.functional.normalize(b, dim=1)
        return 1.0 - an @ bn.T

    @property
    def distance_threshold(self) -> float:
        """The published threshold expressed as a distance (same person when distance <= it): 0.6 for dlib,
        1 - 0.363 for SFace."""
        return -self.threshold if self.distance == "euclidean" else 1.0 - self.threshold

    def is_same(self, a, b) -> torch.Tensor:
        """Same-person decisions (N, M): ``similarity >= threshold``."""
        return self.similarity(a, b) >= self.threshold

    def extra_repr(self) -> str:
        return (f"name={self.name!r}, embedding_size={self.embedding_size}, distance={self.distance!r}, "
                f"threshold={self.threshold}, input_size={self.input_size}, template={self.template!r}, "
                f"differentiable={self.differentiable}")
