"""Torch datasets over the synthetic face world: a streaming ``IterableDataset`` (fast, batched, memory bounded for
any size) and a map-style ``Dataset`` (random access, one face at a time, deterministic per index)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from facelab.synth.world import FaceBatch, FaceWorld


def _check_sizes(n_identities, per_identity):
    for name, v in (("n_identities", n_identities), ("per_identity", per_identity)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")


class SyntheticFaceStream(IterableDataset):
    """Stream ``n_identities x per_identity`` synthetic faces as :class:`~facelab.synth.FaceBatch` batches.

    Only one batch (and a bounded cache of identity layers) is in memory at a time, so the dataset can be as
    large as wanted. Batch ``b`` is rendered with a generator seeded from ``(seed, b)``: the stream is the same
    on every pass and with any number of DataLoader workers (batches are split between workers).

    Use with ``DataLoader(stream, batch_size=None)``.

    Parameters
    ----------
    seed, size, device, style : see :class:`~facelab.synth.FaceWorld`
    n_identities, per_identity : int
    batch_size : int
    identity_offset : int
    shuffle : bool
        Visit (identity, image) pairs in a seeded random order instead of identity by identity.
    **sample_kwargs
        Passed to :meth:`FaceWorld.sample` (nuisance, expression, occlusion, makeup, ...).
    """

    def __init__(self, seed: int = 0, size: int = 112, n_identities: int = 100, per_identity: int = 10,
                 batch_size: int = 128, identity_offset: int = 0, shuffle: bool = False, device="cpu",
                 style: str = "cartoon", **sample_kwargs):
        _check_sizes(n_identities, per_identity)
        self.style = style
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.seed, self.size, self.device = seed, size, device
        self.n_identities, self.per_identity = int(n_identities), int(per_identity)
        self.batch_size, self.identity_offset, self.shuffle = int(batch_size), int(identity_offset), shuffle
        self.sample_kwargs = sample_kwargs
        self._world = None
        FaceWorld(seed, size, device, style=style)._preset(sample_kwargs.get("nuisance", "none"),
                                               {k: v for k, v in sample_kwargs.items()
                                                if k not in ("nuisance", "expression", "occlusion",
                                                             "occlusion_fraction", "makeup", "glasses", "beard")})

    def __len__(self) -> int:
        return math.ceil(self.n_identities * self.per_identity / self.batch_size)

    def _identity_of(self, items: np.ndarray) -> np.ndarray:
        return self.identity_offset + items // self.per_identity

    def batch(self, b: int) -> FaceBatch:
        """Render batch ``b`` (deterministic)."""
        if not 0 <= b < len(self):
            raise IndexError(f"batch {b} out of range for a stream of {len(self)} batches")
        if self._world is None:
            self._world = FaceWorld(self.seed, self.size, self.device, style=self.style)
        total = self.n_identities * self.per_identity
        items = np.arange(b * self.batch_size, min(total, (b + 1) * self.batch_size))
        if self.shuffle:
            items = np.random.default_rng(self.seed).permutation(total)[items]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + b + 17)
        out = self._world.sample(identities=self._identity_of(items).tolist(), generator=g, **self.sample_kwargs)
        out.labels["item"] = items
        return out

    def __iter__(self):
        info = get_worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
        for b in range(start, len(self), step):
            yield self.batch(b)


class SyntheticFaces(Dataset):
    """Map-style dataset: item ``i`` is image ``i % per_identity`` of identity ``identity_offset + i // per_identity``,
    rendered on demand with a generator seeded from ``(seed, i)``; returns ``(image (3,H,W), label dict)``.

    Random access renders one face per call: prefer :class:`SyntheticFaceStream` for throughput.
    """

    def __init__(self, seed: int = 0, size: int = 112, n_identities: int = 100, per_identity: int = 10,
                 identity_offset: int = 0, device="cpu", style: str = "cartoon", **sample_kwargs):
        _check_sizes(n_identities, per_identity)
        FaceWorld(seed, size, device, style=style)                     # checks the arguments
        self.style = style
        self.seed, self.size, self.device = seed, size, device
        self.n_identities, self.per_identity, self.identity_offset = int(n_identities), int(per_identity), \
            int(identity_offset)
        self.sample_kwargs = sample_kwargs
        self._world = None

    def __len__(self) -> int:
        return self.n_identities * self.per_identity

    def __getitem__(self, i: int):
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} faces")
        i = int(i) % len(self)
        if self._world is None:
            self._world = FaceWorld(self.seed, self.size, self.device, style=self.style)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i + 7_777_777)
        b = self._world.sample(identities=[self.identity_offset + i // self.per_identity], generator=g,
                               **self.sample_kwargs)
        label = b.labels.iloc[0].to_dict()
        label["item"] = i
        label["landmarks"] = b.landmarks[0]
        label["mask"] = b.masks[0]
        return b.images[0], label
