"""The set-up the MASQUE benchmarks share: a quick UNet on the book's autoencoder, the validation people, chapter
06's quick configuration and the photos' negative-prompt inversion (``bench_masque_attention.py``,
``bench_masque_edit_colour.py``, ``bench_masque_guidance.py``)."""

from __future__ import annotations

from types import SimpleNamespace

import torch


def record_config(**change):
    """Chapter 06's quick MASQUE configuration until 2026-12-05, the one the records in
    ``data/runs/ldm_attention_gpu`` were measured against (8 DDIM steps, negative-prompt inversion, guidance 7.5,
    colour-anchored pairwise guidance of step 1 on the last half of the steps, the word map's local blend at 0.2),
    with ``change`` applied. The chapter now runs :func:`facelab.studies.privacy_masque.chapter_config` (guidance
    step 0.5, the pixels' chroma kept, blend threshold 0), the setting ``bench_masque_guidance.py`` chose on the
    validation people."""
    from dataclasses import replace

    from facelab.privacy.masque import MasqueConfig

    return replace(MasqueConfig(num_steps=8, guidance_scale=7.5, null_init="source", null_inner_steps=0,
                                adv_start=0.5, adv_step=1.0, keep_colour=True), **change)


#: The names ``--unet`` takes besides a checkpoint path (see :func:`load_unet`).
UNET_NAMES = ("book", "base")
UNET_HELP = ("'book' (the book's UNet, data/models/face_ldm_quick), 'base' (the base UNet it was distilled from, "
             "data/models/face_ldm_quick_base) or UNet checkpoint paths")


def unet_path(name: str):
    """The checkpoint of ``name``: ``"book"`` the book's UNet (:data:`~facelab.diffusion.model.QUICK_CHECKPOINT`),
    ``"base"`` the base UNet it was distilled from (:data:`~facelab.diffusion.model.QUICK_BASE_CHECKPOINT`, trained
    without the attention loss), anything else a UNet checkpoint path."""
    from facelab.diffusion.model import QUICK_BASE_CHECKPOINT, QUICK_CHECKPOINT

    return {"book": QUICK_CHECKPOINT, "base": QUICK_BASE_CHECKPOINT}.get(name, name)


def load_unet(name: str):
    """The quick model with the UNet ``name`` (:func:`unet_path`: ``"book"``, ``"base"`` or a UNet checkpoint trained
    on the book's autoencoder) and the book's autoencoder."""
    from facelab.diffusion.model import QUICK_VAE_CHECKPOINT, load_quick_model

    torch.manual_seed(0)
    return load_quick_model(unet_path(name), vae_path=QUICK_VAE_CHECKPOINT)


def validation_setup(model, n_faces: int, config, *, n_threshold_identities: int = 4) -> SimpleNamespace:
    """``n_faces`` validation people (identities from 500000, never the chapters' test people 100000+) and their
    inversion with ``config``'s steps: a namespace with ``data`` (:func:`~facelab.studies.privacy_masque.dodging_data`),
    ``X``, ``L``, ``ids``, ``refkw`` (the references for :func:`~facelab.privacy.masque.masque_protect`) and ``inv``."""
    from facelab.studies.privacy_masque import dodging_data

    data = dodging_data(model.image_size, n_faces, n_threshold_identities=n_threshold_identities,
                        identity_offset=500000, seed=0)
    X, L, ids = data["images"], data["landmarks"], list(data["identities"])
    refkw = dict(references=data["references"], reference_landmarks=data["reference_landmarks"],
                 reference_identities=data["reference_identities"])
    return SimpleNamespace(data=data, X=X, L=L, ids=ids, refkw=refkw, inv=invert(model, X, config))


def invert(model, images, config):
    """The photos' inversion with ``config``'s steps, guidance and null-text settings, source attention recorded."""
    from facelab.privacy.masque import null_text_inversion

    return null_text_inversion(model, images, model.default_prompt, num_steps=config.num_steps,
                               guidance_scale=config.guidance_scale, inner_steps=config.null_inner_steps,
                               null_init=config.null_init, record_attention=True, self_replace=config.self_replace,
                               max_self_tokens=config.max_self_tokens)
