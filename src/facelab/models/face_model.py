"""A face recogniser as attacks and evaluation see it: an embedder together with its alignment, differentiable.

A :class:`FaceModel` takes *whole images* (N, 3, H, W) in [0, 1] plus their 68 landmarks (pixels) and aligns them
differentiably (:func:`facelab.align.align_batch_torch`) into the model's template (``dlib-150`` for dlib's ResNet,
``arcface-112`` for SFace; the project's synthetic models take the 64 px frame as rendered). Gradients flow from the
embedding to the pixels.

Scores are similarities (higher = same person), :mod:`facelab.core.scores`: cosine for cosine models, minus the L2
distance for dlib; :attr:`FaceModel.threshold` is the embedder's published threshold in the same unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

__all__ = ["FaceModel", "load_face_models"]


@dataclass
class FaceModel:
    """A face recogniser as attacks and evaluation see it (see the module docstring).

    Attributes
    ----------
    name : str
    embedder : facelab.models.Embedder
    template : {"dlib-150", "arcface-112", "synth-64"}
    """

    name: str
    embedder: torch.nn.Module
    template: str

    @property
    def differentiable(self) -> bool:
        return bool(getattr(self.embedder, "differentiable", True))

    @property
    def metric(self) -> str:
        return getattr(self.embedder, "distance", "cosine")

    @property
    def threshold(self) -> float:
        """The embedder's published same-person threshold as a similarity (the unit of :meth:`score`)."""
        from facelab.core.scores import similarity_threshold

        return similarity_threshold(self.embedder)

    def align(self, images: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """Whole images + (N, 68, 2) landmarks -> the model's input chips (differentiable)."""
        from facelab.align import align_batch_torch

        if self.template == "synth-64":
            size = self.embedder.input_size
            if images.shape[-1] == size:
                return images
            return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return align_batch_torch(images, landmarks, self.template, kind="68")

    def embed(self, images: torch.Tensor, landmarks: torch.Tensor, *, augment: Callable | None = None
              ) -> torch.Tensor:
        """Embeddings (N, D) of whole images; ``augment`` maps aligned chips to (A * N) augmented chips."""
        chips = self.align(images.to(self.device), landmarks.to(self.device))
        if augment is not None:
            chips = augment(chips)
        return self.embedder(chips)

    @property
    def device(self) -> torch.device:
        return next(self.embedder.parameters()).device

    def score(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Paired similarity scores (N,) between embeddings a (N, D) and b (N, D)."""
        from facelab.core.scores import paired_similarity

        return paired_similarity(a, b, self.metric)


def load_face_models(names: Sequence[str] = ("dlib-resnet", "sface", "synth-plain", "synth-residual"), *,
                     device=None) -> dict[str, FaceModel]:
    """The victims/surrogates by name: ``"dlib-resnet"``, ``"sface"`` (:func:`facelab.models.load_embedder`) and the
    project's ``"synth-plain"``, ``"synth-residual"`` (:mod:`facelab.models.synthetic`, trained on synthetic
    identities)."""
    from facelab.models import load_embedder
    from facelab.models.synthetic import SYNTH_FACENETS, load_synth_facenet

    out = {}
    for n in names:
        if n in SYNTH_FACENETS:
            out[n] = FaceModel(n, load_synth_facenet(n, device=device), "synth-64")
        else:
            emb = load_embedder(n, device=device)
            out[n] = FaceModel(n, emb, emb.template)
    for m in out.values():
        m.embedder.requires_grad_(False)
    return out
