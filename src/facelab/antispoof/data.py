"""The data interface of the attack detectors: an :class:`AttackSet` (images + one label row per image).

The attack renderers live in :mod:`facelab.synth.attacks` (live; print, replay, 3D mask; adversarial, face swap,
morph). How chapter 04 builds its UniAttackData-like set and protocols from them (P1: all attacks seen; P2.1: unseen
physical; P2.2: unseen digital; identities disjoint) is the study's: :mod:`facelab.studies.face_antispoofing`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from facelab.antispoof.vit import check_images
from facelab.core.images import resize

__all__ = ["AttackSet", "attack_kinds", "resize_images"]


def attack_kinds() -> dict[str, str]:
    """Attack kind -> family (``"physical"``/``"digital"``), from :data:`facelab.synth.attacks.ATTACK_TYPES`."""
    from facelab.synth.attacks import ATTACK_TYPES

    return dict(ATTACK_TYPES)


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """Square-resize a batch to ``size`` pixels (area averaging when shrinking, bilinear when growing)."""
    out = resize(check_images(images), size)
    return out if out is images else out.clamp(0, 1)


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
