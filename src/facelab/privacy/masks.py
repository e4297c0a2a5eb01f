"""Face-region masks for makeup edits: moved to :mod:`facelab.core.regions` (this module re-exports them)."""

from facelab.core.regions import (MAKEUP_REGIONS, REGIONS, EmptyMaskError, face_region_masks, latent_mask,
                                  region_for_word)

__all__ = ["REGIONS", "MAKEUP_REGIONS", "EmptyMaskError", "region_for_word", "face_region_masks", "latent_mask"]
