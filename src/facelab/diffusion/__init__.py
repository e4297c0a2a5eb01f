"""Diffusion toolkit on the diffusers API: models (quick face model, Stable Diffusion 1.5), the denoising loop,
DDIM and edit-friendly DDPM inversion, UNet probes, and the training script of the quick model.

>>> from facelab.diffusion import quick_model, ddpm_inversion, reverse_process   # doctest: +SKIP
>>> model = quick_model()
>>> inv = ddpm_inversion(model, images, num_steps=20)
>>> same = reverse_process(model, inv)            # == images (exact reconstruction)
"""

from facelab.diffusion.hooks import UNetProbe
from facelab.diffusion.inversion import (Inversion, ddim_inversion, ddpm_inversion, noise_prediction, psnr,
                                         reverse_process, reverse_step, sample, step_terms)
from facelab.diffusion.model import (QUICK_CHECKPOINT, QUICK_LOG, QUICK_VAE_CHECKPOINT, DiffusionModel,
                                     MiniLMTextEncoder, MiniLMTokenEncoder, PatchAutoencoder, PromptTooLongError,
                                     StableDiffusionPathError, build_quick_unet, build_quick_vae, load_quick_model,
                                     load_stable_diffusion, make_scheduler, padding_bias, quick_model,
                                     tiny_stable_diffusion)

__all__ = ["DiffusionModel", "MiniLMTextEncoder", "MiniLMTokenEncoder", "PatchAutoencoder", "PromptTooLongError",
           "StableDiffusionPathError", "QUICK_CHECKPOINT", "QUICK_LOG", "QUICK_VAE_CHECKPOINT", "build_quick_unet",
           "build_quick_vae", "padding_bias", "load_quick_model", "quick_model", "load_stable_diffusion", "make_scheduler",
           "tiny_stable_diffusion", "Inversion", "ddim_inversion", "ddpm_inversion", "noise_prediction",
           "reverse_process", "reverse_step", "sample", "step_terms", "psnr", "UNetProbe"]
