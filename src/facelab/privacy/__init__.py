"""Hiding from face recognition: the methods (the chapters' protocols are in :mod:`facelab.studies`).

* :mod:`facelab.privacy.diffaim`: DiffAIM, adversarial identity guidance in the last reverse steps of a diffusion
  model (impersonation).
* :mod:`facelab.privacy.pgd`: baselines (pixel-space PGD with the same budget, reconstruction without guidance).
* :mod:`facelab.privacy.masque`: MASQUE, localized adversarial makeup for dodging (null-text inversion, attention
  control with a face mask, pairwise guidance) and its PGD baseline :func:`~facelab.privacy.masque.pgd_dodge`.
* :mod:`facelab.privacy.attention`: prompt-to-prompt attention control; :mod:`facelab.privacy.makeup`: the makeup
  classifier that measures prompt adherence.
* :mod:`facelab.privacy.inputs`: the attacks' input checks (:func:`check_faces`).

Victims and surrogates are :class:`facelab.models.FaceModel` objects. The protocols, tables and figures of the two
chapters: :mod:`facelab.studies.privacy_diffaim` (chapter 05) and :mod:`facelab.studies.privacy_masque` (chapter 06).
"""

from facelab.privacy.diffaim import PUBLISHED_DEFAULTS, DiffAIMConfig, ProtectionResult, diffaim_protect
from facelab.privacy.inputs import NotAFaceError, check_faces
from facelab.privacy.pgd import pgd_protect, reconstruct

__all__ = ["DiffAIMConfig", "PUBLISHED_DEFAULTS", "ProtectionResult", "diffaim_protect", "pgd_protect", "reconstruct",
           "NotAFaceError", "check_faces"]
