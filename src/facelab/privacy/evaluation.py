"""Moved. The privacy chapters' protocol (measured thresholds, success rates with intervals, leave-one-out,
quality, real photos) lives in the study modules :mod:`facelab.studies.privacy_diffaim` and
:mod:`facelab.studies.privacy_masque` (shared pieces: :mod:`facelab.studies._privacy_protocol`); a method package does
not import a study, so those names are not re-exported here.

This module keeps the old import paths of the lower-layer pieces: :class:`FaceModel` / :func:`load_face_models`
(:mod:`facelab.models.face_model`), :func:`check_faces` / :class:`NotAFaceError` (:mod:`facelab.privacy.inputs`) and
:func:`psnr` / :func:`ssim` (:mod:`facelab.core.images`).
"""

from facelab.core.images import psnr, ssim
from facelab.models.face_model import FaceModel, load_face_models
from facelab.privacy.inputs import NotAFaceError, check_faces

__all__ = ["FaceModel", "load_face_models", "NotAFaceError", "check_faces", "psnr", "ssim"]
