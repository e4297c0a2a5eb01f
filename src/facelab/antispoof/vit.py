"""A small CLIP-style Vision Transformer in plain PyTorch, with OpenCLIP's parameter names.

The module tree deliberately mirrors ``open_clip.transformer.VisionTransformer`` (``conv1``, ``class_embedding``,
``positional_embedding``, ``ln_pre``, ``transformer.resblocks.i.{ln_1, attn, ln_2, mlp.c_fc, mlp.c_proj}``,
``ln_post``, ``proj``), so that the OpenCLIP ViT-B/16 image tower loads into it by a plain renaming of keys
(:mod:`facelab.antispoof.openclip`). The quick profile builds a tiny one (64 px, patch 8, width 64, 4 blocks) and
pretrains it contrastively; the full profile loads the real one.

Any block's MLP can be upcycled into a (fine-grained) Soft Mixture of Experts with :meth:`VisionTransformer.to_moe`
(by default in parallel with the kept dense MLP, so that the tower's function is unchanged at initialisation).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import asdict, dataclass

import torch
from torch import nn

from facelab.core.images import check_images as _check_images

__all__ = ["ViTConfig", "VisionTransformer", "QuickGELU", "check_images"]


def check_images(images, size: int | None = None, name: str = "images") -> torch.Tensor:
    """Validate a batch of RGB images: a float tensor ``(N, 3, H, W)`` (``H == W == size`` when given).

    :func:`facelab.core.images.check_images` with three channels; an empty batch is allowed.

    Raises
    ------
    TypeError, ValueError
        With a message that says what was expected and what was given.
    """
    return _check_images(images, name, channels=(3,), size=size, allow_empty=True)


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``: the activation of OpenAI's original CLIP weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


@dataclass
class ViTConfig:
    """Hyper-parameters of :class:`VisionTransformer` (defaults: the tiny quick-profile encoder)."""

    image_size: int = 64
    patch_size: int = 8
    width: int = 64
    layers: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    embed_dim: int = 64
    act: str = "gelu"  # "gelu" or "quick_gelu" (OpenAI CLIP weights)

    @classmethod
    def vit_b16(cls, image_size: int = 224, act: str = "quick_gelu") -> "ViTConfig":
        """The OpenCLIP ViT-B/16 image tower."""
        return cls(image_size=image_size, patch_size=16, width=768, layers=12, heads=12, mlp_ratio=4.0,
                   embed_dim=512, act=act)

    def to_dict(self) -> dict:
        return asdict(self)


def _mlp(width: int, hidden: int, act: str) -> nn.Sequential:
    if act not in ("gelu", "quick_gelu"):
        raise ValueError(f"act must be 'gelu' or 'quick_gelu', got {act!r}")
    return nn.Sequential(OrderedDict([
        ("c_fc", nn.Linear(width, hidden)),
        ("gelu", nn.GELU() if act == "gelu" else QuickGELU()),
        ("c_proj", nn.Linear(hidden, width)),
    ]))


class ResidualAttentionBlock(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, act: str = "gelu"):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = _mlp(width, int(width * mlp_ratio), act)

    def attention_residual(self, x: torch.Tensor) -> torch.Tensor:
        """The first half of the block, ``x + attn(ln_1(x))``; ``ln_2`` of it is what the MLP (or Soft MoE) reads."""
        h = self.ln_1(x)
        return x + self.attn(h, h, h, need_weights=False)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention_residual(x)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float, act: str):
        super().__init__()
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads, mlp_ratio, act) for _ in range(layers)])

    def forward(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        for block in self.resblocks[start:stop]:
            x = block(x)
        return x


class VisionTransformer(nn.Module):
    """CLIP image encoder: patches -> [CLS] + tokens -> pre-LN transformer -> LayerNorm(CLS) @ proj.

    Parameters
    ----------
    config : ViTConfig

    Notes
    -----
    Input: float images ``(N, 3, S, S)`` in ``[0, 1]``; they are standardised with the CLIP mean and std inside
    :meth:`forward`, so callers never normalise by hand. :meth:`tokens` and :meth:`head` split the forward pass at
    any block, which lets training cache the output of frozen early blocks.
    """

    MEAN = (0.48145466, 0.4578275, 0.40821073)
    STD = (0.26862954, 0.26130258, 0.27577711)

    def __init__(self, config: ViTConfig | None = None):
        super().__init__()
        c = self.config = config or ViTConfig()
        if c.image_size % c.patch_size:
            raise ValueError(f"image_size {c.image_size} must be a multiple of patch_size {c.patch_size}")
        if c.width % c.heads:
            raise ValueError(f"width {c.width} must be divisible by heads {c.heads}")
        self.grid = c.image_size // c.patch_size
        scale = c.width ** -0.5
        self.conv1 = nn.Conv2d(3, c.width, kernel_size=c.patch_size, stride=c.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(c.width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid ** 2 + 1, c.width))
        self.ln_pre = nn.LayerNorm(c.width)
        self.transformer = Transformer(c.width, c.layers, c.heads, c.mlp_ratio, c.act)
        self.ln_post = nn.LayerNorm(c.width)
        self.proj = nn.Parameter(scale * torch.randn(c.width, c.embed_dim))
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), persistent=False)

    @property
    def n_layers(self) -> int:
        return len(self.transformer.resblocks)

    def tokens(self, images: torch.Tensor, stop: int | None = None) -> torch.Tensor:
        """Token sequence ``(N, 1 + grid**2, width)`` after the first ``stop`` blocks (all blocks when ``None``)."""
        check_images(images, self.config.image_size)
        x = (images - self.mean) / self.std
        x = self.conv1(x).flatten(2).transpose(1, 2)  # (N, grid*grid, width)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x)
        return self.transformer(x, 0, stop)

    def head(self, tokens: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Run blocks ``start..`` on cached tokens and return the projected [CLS] embedding ``(N, embed_dim)``."""
        x = self.transformer(tokens, start, None)
        return self.ln_post(x[:, 0]) @ self.proj

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Image embeddings ``(N, embed_dim)`` (not normalised)."""
        return self.head(self.tokens(images, stop=0), start=0)

    def to_moe(self, last: int = 2, n_experts: int = 4, slots_per_expert: int = 4, groups: int = 4,
               noise: float = 0.01, generator: torch.Generator | None = None, mode: str = "parallel",
               scale: float | None = None, gate_init: float = 0.0, final: bool = True) -> "VisionTransformer":
        """Upcycle the MLP of the last ``last`` blocks into a fine-grained Soft MoE. Returns ``self``.

        ``mode="parallel"`` (default, function-preserving): :class:`~facelab.antispoof.moe.ParallelMoE`, the
        pretrained MLP kept as a shared expert plus ``gate_init`` (0) times a Soft MoE on the patch tokens, [CLS]
        through the dense path only; the routing scale starts at ``scale`` (default 10). ``mode="replace"``: the
        MLP replaced by a Soft MoE over every token (the first version of this chapter; ``scale`` default 1). In both,
        every expert starts as a copy of the pretrained MLP plus ``noise`` times its weight scale.

        ``final=False`` leaves the final block dense. With the parallel upcycling its Soft MoE could never change
        the image embedding: the embedding is read from the final block's [CLS] output, and [CLS] takes the dense
        path; its gate would get no gradient.
        """
        from facelab.antispoof.moe import ParallelMoE, SoftMoE

        if not 1 <= last <= self.n_layers:
            raise ValueError(f"last must be between 1 and the number of blocks ({self.n_layers}), got {last}")
        if mode not in ("parallel", "replace"):
            raise ValueError(f"mode must be 'parallel' or 'replace', got {mode!r}")
        chosen = list(self.transformer.resblocks[self.n_layers - last:])
        if not final:
            chosen = chosen[:-1]
            if not chosen:
                raise ValueError("final=False with last=1 leaves no block to upcycle: use last >= 2")
        for block in chosen:
            if isinstance(block.mlp, (SoftMoE, ParallelMoE)):
                continue
            if mode == "parallel":
                block.mlp = ParallelMoE.from_mlp(block.mlp, n_experts=n_experts, slots_per_expert=slots_per_expert,
                                                 groups=groups, noise=noise, generator=generator,
                                                 scale=10.0 if scale is None else scale, gate_init=gate_init)
            else:
                block.mlp = SoftMoE.from_mlp(block.mlp, n_experts=n_experts, slots_per_expert=slots_per_expert,
                                             groups=groups, noise=noise, generator=generator,
                                             scale=1.0 if scale is None else scale)
        return self
