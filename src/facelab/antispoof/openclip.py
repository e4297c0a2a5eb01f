"""Load the image tower of OpenCLIP ViT-B/16 weights from a local file into :class:`VisionTransformer`.

This book never downloads weights. In the full profile a reader who has an OpenCLIP checkpoint (for example
``open_clip_pytorch_model.bin`` or ``open_clip_model.safetensors`` of ``laion/CLIP-ViT-B-16-laion2B-s34B-b88K``,
or OpenAI's ``ViT-B-16.pt``) passes its path. Our ViT uses OpenCLIP's module names, so the conversion keeps the
``visual.*`` entries, strips the prefix, checks every name and shape, infers the architecture from the shapes and,
when the chapter's image size differs from the checkpoint's, resamples the positional embedding (bicubic).

The text tower of OpenCLIP is not loaded: its BPE tokenizer ships with the ``open_clip`` package, which this
project does not install; the chapter keeps the MiniLM text tower and aligns it to the loaded image tower.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch.nn import functional as F

from facelab.antispoof.vit import ViTConfig, VisionTransformer

__all__ = ["convert_openclip_state_dict", "load_openclip_visual", "OPENCLIP_HINT"]

OPENCLIP_HINT = ("an OpenCLIP ViT-B/16 checkpoint on this machine, e.g. open_clip_pytorch_model.bin / "
                 "open_clip_model.safetensors of laion/CLIP-ViT-B-16-laion2B-s34B-b88K or OpenAI's ViT-B-16.pt. "
                 "facelab never downloads weights: fetch the file yourself and pass its path (OPENCLIP_PATH).")

_BLOCK_KEYS = ("ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
               "attn.out_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
               "mlp.c_proj.weight", "mlp.c_proj.bias")
_TOP_KEYS = ("conv1.weight", "class_embedding", "positional_embedding", "ln_pre.weight", "ln_pre.bias",
             "ln_post.weight", "ln_post.bias", "proj")


def _resample_positions(pos: torch.Tensor, grid: int) -> torch.Tensor:
    old = int(round(math.sqrt(pos.shape[0] - 1)))
    if old == grid:
        return pos
    cls, rest = pos[:1], pos[1:].reshape(1, old, old, -1).permute(0, 3, 1, 2)
    rest = F.interpolate(rest.float(), size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([cls, rest.permute(0, 2, 3, 1).reshape(grid * grid, -1).to(pos.dtype)])


def convert_openclip_state_dict(state_dict: dict, image_size: int | None = None, act: str = "quick_gelu",
                                heads: int | None = None) -> tuple[dict, ViTConfig]:
    """Map an OpenCLIP (full-model or image-tower) state dict to our :class:`VisionTransformer`.

    Parameters
    ----------
    state_dict : dict of tensors
        Keys like ``visual.conv1.weight``, ``visual.transformer.resblocks.0.attn.in_proj_weight`` (a ``module.``
        prefix from DataParallel is accepted, and so is a state dict of the image tower alone).
    image_size : int, optional
        Target image size (default: the checkpoint's, ``patch * grid``).
    act : {"quick_gelu", "gelu"}
        MLP activation (OpenAI weights use QuickGELU; most LAION ViT-B/16 checkpoints too).
    heads : int, optional
        Attention heads (not recoverable from shapes; default ``width // 64``, 12 for ViT-B).

    Returns
    -------
    state : dict
        Ready for :meth:`VisionTransformer.load_state_dict` (strict).
    config : ViTConfig
    """
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}
    if any(k.startswith("visual.") for k in sd):
        sd = {k[len("visual."):]: v for k, v in sd.items() if k.startswith("visual.")}
    missing = [k for k in _TOP_KEYS if k not in sd]
    if missing:
        raise KeyError(f"not an OpenCLIP ViT image tower: missing {missing} (got keys such as {list(sd)[:5]})")
    width, _, patch, _ = sd["conv1.weight"].shape
    layers = 1 + max((int(k.split(".")[2]) for k in sd if k.startswith("transformer.resblocks.")), default=-1)
    if layers == 0:
        raise KeyError("not an OpenCLIP ViT image tower: no transformer.resblocks.* entries")
    need = [f"transformer.resblocks.{i}.{k}" for i in range(layers) for k in _BLOCK_KEYS]
    missing = [k for k in need if k not in sd]
    if missing:
        raise KeyError(f"OpenCLIP state dict is missing {len(missing)} block entries, e.g. {missing[:3]}")
    grid0 = int(round(math.sqrt(sd["positional_embedding"].shape[0] - 1)))
    hidden = sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0]
    cfg = ViTConfig(image_size=image_size or patch * grid0, patch_size=patch, width=width, layers=layers,
                    heads=heads or max(1, width // 64), mlp_ratio=hidden / width, embed_dim=sd["proj"].shape[1],
                    act=act)
    if cfg.image_size % patch:
        raise ValueError(f"image_size {cfg.image_size} must be a multiple of the checkpoint's patch size {patch}")
    out = {k: sd[k] for k in _TOP_KEYS} | {k: sd[k] for k in need}
    out["positional_embedding"] = _resample_positions(sd["positional_embedding"], cfg.image_size // patch)
    return {k: v.float() for k, v in out.items()}, cfg


def _read(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except RuntimeError as err:  # OpenAI's .pt files are TorchScript archives
        if "TorchScript" not in str(err) and "constants.pkl" not in str(err):
            raise
        obj = torch.jit.load(str(path), map_location="cpu").state_dict()
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(obj).__name__})")
    return obj


def load_openclip_visual(path, image_size: int | None = None, act: str = "quick_gelu",
                         heads: int | None = None) -> VisionTransformer:
    """Build a :class:`VisionTransformer` with the image-tower weights of a local OpenCLIP checkpoint.

    Raises
    ------
    FileNotFoundError
        When ``path`` is ``None`` or does not exist, with a message that says which file is expected.
    """
    if path is None or str(path).strip() == "":
        raise FileNotFoundError(f"No OpenCLIP weights given. The full profile can use {OPENCLIP_HINT}")
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"OpenCLIP weights not found at {str(p)!r}. Expected {OPENCLIP_HINT}")
    state, cfg = convert_openclip_state_dict(_read(p), image_size=image_size, act=act, heads=heads)
    model = VisionTransformer(cfg)
    model.load_state_dict(state, strict=True)
    return model.eval()
