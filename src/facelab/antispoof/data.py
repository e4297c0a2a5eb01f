"""The unified physical-digital attack set of the chapter, built on the synthetic world and its attack renderers.

The renderers themselves live in :mod:`facelab.synth.attacks` (live; print, replay, 3D mask; adversarial, face swap,
morph). This module packages their output as an :class:`AttackSet` (images + one label row per image), splits it by
the UniAttackData-style protocols (P1: all attacks seen; P2.1: unseen physical; P2.2: unseen digital; identities
disjoint between train and test) and renders the pretraining faces of the small CLIP.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from facelab.antispoof.vit import check_images

__all__ = ["AttackSet", "attack_kinds", "build_attack_set", "split_protocol", "protocols", "pretraining_faces",
           "resize_images", "attacks_on_photos"]


def attack_kinds() -> dict[str, str]:
    """Attack kind -> family (``"physical"``/``"digital"``), from :data:`facelab.synth.attacks.ATTACK_TYPES`."""
    from facelab.synth.attacks import ATTACK_TYPES

    return dict(ATTACK_TYPES)


def protocols() -> pd.DataFrame:
    """The protocols table of :func:`facelab.synth.attacks.attack_protocols`."""
    from facelab.synth.attacks import attack_protocols

    return attack_protocols()


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Square-resize a batch to ``size`` pixels (area averaging when shrinking, bilinear when growing)."""
    check_images(images)
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    mode = "area" if images.shape[-1] > size else "bilinear"
    kw = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(images, size=(size, size), mode=mode, **kw).clamp(0, 1)


@dataclass
class AttackSet:
    """Images ``(N, 3, S, S)`` in [0, 1] and labels (``identity``, ``live``, ``attack``, ``family``, ...)."""

    images: torch.Tensor
    labels: pd.DataFrame

    def __post_init__(self):
        check_images(self.images)
        if len(self.labels) != self.images.shape[0]:
            raise ValueError(f"{self.images.shape[0]} images but {len(self.labels)} label rows")
        for col in ("live", "attack", "family"):
            if col not in self.labels.columns:
                raise ValueError(f"labels need a {col!r} column, got columns {list(self.labels.columns)}")
        unknown = set(self.labels["attack"]) - set(attack_kinds()) - {"live"}
        if unknown:
            raise ValueError(f"Unknown attack type(s) {sorted(unknown)}; expected 'live' or one of "
                             f"{list(attack_kinds())}")

    def __len__(self) -> int:
        return self.images.shape[0]

    def __iter__(self):
        return iter((self.images, self.labels))

    @property
    def live(self) -> np.ndarray:
        """1 for live (bona fide), 0 for attacks."""
        return self.labels["live"].to_numpy().astype(np.int64)

    @property
    def attack(self) -> np.ndarray:
        return self.labels["attack"].to_numpy().astype(str)

    def subset(self, mask) -> "AttackSet":
        mask = np.asarray(mask)
        idx = np.nonzero(mask)[0] if mask.dtype == bool else np.array(mask, dtype=np.int64)
        return AttackSet(self.images[torch.as_tensor(idx, dtype=torch.long)],
                         self.labels.iloc[idx].reset_index(drop=True))

    def only(self, kinds: Sequence[str]) -> "AttackSet":
        """Live images plus the attacks in ``kinds``."""
        bad = [k for k in kinds if k not in attack_kinds()]
        if bad:
            raise ValueError(f"Unknown attack type(s) {bad}; expected a subset of {list(attack_kinds())}")
        return self.subset(np.isin(self.attack, ["live", *kinds]))

    def counts(self) -> pd.Series:
        return self.labels.groupby("attack", sort=False).size().rename("images")


def build_attack_set(world, n_identities: int, per_identity: int, size: int | None = None,
                     kinds: Sequence[str] | None = None, generator: torch.Generator | None = None,
                     identity_offset: int = 0, nuisance: str = "mild") -> AttackSet:
    """Render live faces and every attack for ``n_identities`` identities (ID-consistent, as UniAttackData).

    Thin wrapper of :func:`facelab.synth.attacks.make_attack_set`, resized to ``size`` when given.
    """
    from facelab.synth.attacks import ATTACK_KINDS, make_attack_set

    kinds = list(ATTACK_KINDS if kinds is None else kinds)
    bad = [k for k in kinds if k not in attack_kinds()]
    if bad:
        raise ValueError(f"Unknown attack type(s) {bad}; expected a subset of {list(attack_kinds())}")
    images, labels = make_attack_set(world, n_identities, per_identity, kinds=kinds, generator=generator,
                                     identity_offset=identity_offset, nuisance=nuisance)
    labels = labels.copy()
    labels["source"] = "synthetic"
    images = images.detach().float().cpu()
    return AttackSet(resize_images(images, size) if size else images, labels)


def split_protocol(data: AttackSet, protocol: str, test_fraction: float = 0.3, seed: int = 0
                   ) -> tuple[AttackSet, AttackSet]:
    """Train and test sets of one protocol (``"P1"``, ``"P2.1"``, ``"P2.2"``), identities disjoint."""
    from facelab.synth.attacks import protocol_split

    tr, te = protocol_split(data.labels, protocol, test_fraction=test_fraction, seed=seed)
    return data.subset(tr), data.subset(te)


def pretraining_faces(world, n_identities: int, per_identity: int, identity_offset: int = 100_000,
                      size: int | None = None, generator: torch.Generator | None = None
                      ) -> tuple[torch.Tensor, list[str]]:
    """Live faces and their captions for the CLIP pretraining (identities far from the attack set's)."""
    batch = world.sample(n_identities=n_identities, per_identity=per_identity, identity_offset=identity_offset,
                         nuisance="full", expression="random", makeup="random", generator=generator)
    images = batch.images.detach().float().cpu()
    captions = [str(c) for c in batch.labels["caption"]]
    return (resize_images(images, size) if size else images), captions


def attacks_on_photos(photos: torch.Tensor, kinds: Sequence[str] | None = None, size: int = 64,
                      generator: torch.Generator | None = None, landmarks: torch.Tensor | None = None) -> AttackSet:
    """Real photos as live faces plus every attack rendered on them (swap/morph donors: the next photo).

    ``photos`` are aligned face crops ``(N, 3, H, W)``; the attacks run at that resolution, then everything is
    resized to ``size``.
    """
    from facelab.synth.attacks import ATTACK_KINDS, ATTACK_TYPES, apply_attack

    check_images(photos, name="photos")
    kinds = list(ATTACK_KINDS if kinds is None else kinds)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    n = photos.shape[0]
    images, rows = [photos], [{"identity": i, "live": True, "attack": "live", "family": "live"} for i in range(n)]
    for kind in kinds:
        extra = {}
        if ATTACK_TYPES[kind] == "digital" and kind in ("faceswap", "morph"):
            extra["source"] = torch.roll(photos, 1, 0)
            if landmarks is not None:
                extra["source_landmarks"] = torch.roll(landmarks, 1, 0)
        res = apply_attack(photos, kind, generator=g, landmarks=landmarks, **extra)
        images.append(res.images)
        rows += [{"identity": i, "live": False, "attack": kind, "family": ATTACK_TYPES[kind]} for i in range(n)]
    labels = pd.DataFrame(rows)
    labels["source"] = "real photo"
    return AttackSet(resize_images(torch.cat(images).float().cpu(), size), labels)
