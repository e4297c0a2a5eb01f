"""Hiding from face recognition: adversarial identity protection and its evaluation protocol.

* :mod:`facelab.privacy.diffaim`: DiffAIM, adversarial identity guidance in the last reverse steps of a diffusion
  model (impersonation).
* :mod:`facelab.privacy.pgd`: baselines (pixel-space PGD with the same budget, reconstruction without guidance).
* :mod:`facelab.privacy.evaluation`: face models as victims, thresholds at FAR 0.1/0.01/0.001, white-box and
  leave-one-out black-box success, PSNR/SSIM, timing (shared by the privacy chapters).
* :mod:`facelab.privacy.facenets`: the small face recognisers trained on synthetic identities.
"""

from facelab.privacy.diffaim import PUBLISHED_DEFAULTS, DiffAIMConfig, ProtectionResult, diffaim_protect
from facelab.privacy.evaluation import (FARS, FaceModel, NotAFaceError, Timer, align_to_world, attack_pairs,
                                        check_faces, leave_one_out, load_face_models, quality_table, ssim,
                                        success_rates, success_table, victim_thresholds)
from facelab.privacy.pgd import pgd_protect, reconstruct

__all__ = ["DiffAIMConfig", "PUBLISHED_DEFAULTS", "ProtectionResult", "diffaim_protect", "pgd_protect", "reconstruct",
           "FARS", "FaceModel", "NotAFaceError", "Timer", "align_to_world", "attack_pairs", "check_faces",
           "leave_one_out", "load_face_models", "quality_table", "ssim", "success_rates", "success_table",
           "victim_thresholds"]
