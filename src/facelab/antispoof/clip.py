r"""A small CLIP-style dual encoder and its contrastive pretraining on synthetic image-caption pairs.

No CLIP weights can be downloaded here, so the quick profile *makes* a small CLIP: a tiny
:class:`~facelab.antispoof.vit.VisionTransformer` image tower and a text tower (the real, frozen MiniLM sentence
encoder plus a trained projection, or a small bag-of-words encoder), trained with the symmetric InfoNCE loss

.. math::

   \mathcal L = \tfrac12\Bigl[\mathrm{CE}\bigl(s\, F T^\top, y\bigr) + \mathrm{CE}\bigl(s\, T F^\top, y^\top\bigr)\Bigr],

with L2-normalised image embeddings :math:`F`, text embeddings :math:`T` and a learned scale :math:`s`. Synthetic
captions repeat (many images share "a blurry photo. a face of a person with red lipstick"), so the texts of a batch are
de-duplicated: an image's target is its caption, and a caption's target is the uniform distribution over its images.

**What the pretraining sees.** Live faces of the synthetic world (identities disjoint from the attack set), each
with a *generic* photographic condition (blurry, noisy, dark, over-exposed, low-contrast, grey, pixelated, tinted or
sharp) named in its caption. It never sees an attack renderer nor an attack word. This stands in for what web-scale
CLIP knows about image formation, without leaking the attack types that the unseen-type protocols hold out.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from facelab.antispoof.text import check_texts
from facelab.core.images import gaussian_blur, luminance
from facelab.antispoof.vit import VisionTransformer, ViTConfig, check_images

__all__ = ["build_clip", "CLIPModel", "clip_loss", "CORRUPTIONS", "corrupt", "corruption_captions", "pretrain_clip"]


class CLIPModel(nn.Module):
    """Image tower + text tower + text projection + learned temperature.

    Parameters
    ----------
    visual : VisionTransformer
    text : nn.Module
        Maps a list of strings to ``(n, text_dim)`` (:class:`~facelab.antispoof.text.MiniLMTextTower` or
        :class:`~facelab.antispoof.text.BagOfWordsTextTower`).
    text_dim : int
        Output width of ``text``.
    """

    def __init__(self, visual: VisionTransformer | None = None, text: nn.Module | None = None,
                 text_dim: int | None = None):
        super().__init__()
        from facelab.antispoof.text import BagOfWordsTextTower

        self.visual = visual if visual is not None else VisionTransformer(ViTConfig())
        self.text = text if text is not None else BagOfWordsTextTower()
        text_dim = text_dim or getattr(self.text, "dim")
        e = self.visual.config.embed_dim
        self.text_projection = nn.Sequential(nn.Linear(text_dim, 2 * e), nn.GELU(), nn.Linear(2 * e, e))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    @property
    def embed_dim(self) -> int:
        return self.visual.config.embed_dim

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings ``(N, embed_dim)``."""
        return F.normalize(self.visual(images), dim=-1)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings ``(n, embed_dim)``."""
        raw = self.text(check_texts(texts)).to(self.logit_scale.device)
        return F.normalize(self.text_projection(raw), dim=-1)

    def forward(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """Scaled cosine similarities ``(N_images, n_texts)``."""
        return self.logit_scale.exp().clamp(max=100) * self.encode_image(images) @ self.encode_text(texts).t()


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, caption_index: torch.Tensor,
              logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric InfoNCE with de-duplicated captions.

    Parameters
    ----------
    image_emb : (N, E) normalised image embeddings
    text_emb : (U, E) normalised embeddings of the U distinct captions
    caption_index : (N,) index into ``text_emb`` of each image's caption
    logit_scale : log of the temperature scale
    """
    scale = torch.as_tensor(logit_scale).exp().clamp(max=100)
    logits = scale * image_emb @ text_emb.t()  # (N, U)
    loss_img = F.cross_entropy(logits, caption_index)
    target = F.one_hot(caption_index, text_emb.shape[0]).t().to(logits.dtype)  # (U, N)
    target = target / target.sum(1, keepdim=True).clamp_min(1)
    used = target.sum(1) > 0
    loss_txt = -(target * logits.t().log_softmax(dim=1)).sum(1)[used].mean()
    return 0.5 * (loss_img + loss_txt)


# ------------------------------------------------------------------------------------------ generic conditions
def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return gaussian_blur(x, sigma, truncate=2.5, padding="replicate")


def _grey(x: torch.Tensor) -> torch.Tensor:
    return luminance(x).expand_as(x)


def _pixelate(x: torch.Tensor) -> torch.Tensor:
    s = x.shape[-1]
    return F.interpolate(F.interpolate(x, size=max(4, s // 6), mode="area"), size=s, mode="nearest")


#: condition -> (caption adjective, function(images, generator) -> images)
CORRUPTIONS: dict[str, tuple[str, Callable]] = {
    "sharp": ("sharp", lambda x, g: x),
    "blurry": ("blurry", lambda x, g: _blur(x, 1.5)),
    "noisy": ("noisy", lambda x, g: x + 0.08 * torch.randn(x.shape, generator=g).to(x)),
    "dark": ("dark", lambda x, g: 0.45 * x),
    "overexposed": ("over-exposed", lambda x, g: 0.55 * x + 0.45),
    "low_contrast": ("low-contrast", lambda x, g: 0.5 + 0.35 * (x - 0.5)),
    "grey": ("black-and-white", lambda x, g: _grey(x)),
    "pixelated": ("pixelated", lambda x, g: _pixelate(x)),
    "tinted": ("blue-tinted", lambda x, g: x * torch.tensor([0.8, 0.95, 1.2]).view(1, 3, 1, 1).to(x)),
}


def corrupt(images: torch.Tensor, kind: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply one generic photographic condition of :data:`CORRUPTIONS` (not an attack) and clip to [0, 1]."""
    if kind not in CORRUPTIONS:
        raise ValueError(f"Unknown condition {kind!r}; expected one of {list(CORRUPTIONS)}")
    check_images(images)
    return CORRUPTIONS[kind][1](images, generator).clamp(0, 1)


def corruption_captions(kinds: Sequence[str], face_captions: Sequence[str]) -> list[str]:
    """Captions such as ``"a blurry photo. a face of a person with red lipstick"``."""
    return [f"a {CORRUPTIONS[k][0]} photo. {c}" for k, c in zip(kinds, face_captions)]


def pretrain_clip(model: CLIPModel, images: torch.Tensor, face_captions: Sequence[str], steps: int = 300,
                  batch_size: int = 128, lr: float = 2e-3, weight_decay: float = 0.05,
                  generator: torch.Generator | None = None, progress: Callable | None = None) -> pd.DataFrame:
    """Contrastive pretraining on live faces under random generic conditions (fresh draw each step).

    Parameters
    ----------
    model : CLIPModel
        Trained in place (image tower, text projection, temperature; a frozen text tower stays frozen).
    images : (N, 3, S, S) tensor
        Live faces at the image tower's size.
    face_captions : sequence of N strings
        Captions of the faces from the generator's labels.
    steps, batch_size, lr, weight_decay : training schedule (AdamW, cosine decay, 5% warm-up).
    generator : torch.Generator, optional
        Drives batch sampling and conditions.
    progress : callable, optional
        Wraps the step iterator (for example ``P.progress``).

    Returns
    -------
    pandas.DataFrame
        Per step: ``step``, ``loss``, ``accuracy`` (image -> its caption among the batch's captions).
    """
    check_images(images, model.visual.config.image_size)
    face_captions = check_texts(face_captions)
    if len(face_captions) != images.shape[0]:
        raise ValueError(f"need one caption per image: {images.shape[0]} images, {len(face_captions)} captions")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    dev = model.logit_scale.device
    kinds = list(CORRUPTIONS)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    rows = []
    it = range(steps) if progress is None else progress(range(steps), desc="CLIP pretraining")
    model.train()
    for step in it:
        idx = torch.randint(0, images.shape[0], (min(batch_size, images.shape[0]),), generator=g)
        cond = torch.randint(0, len(kinds), (len(idx),), generator=g)
        x = images[idx].to(dev)
        for k in cond.unique().tolist():
            sel = (cond == k).to(dev)
            x[sel] = corrupt(x[sel], kinds[k], g)
        caps = corruption_captions([kinds[k] for k in cond.tolist()], [face_captions[i] for i in idx.tolist()])
        uniq, inv = np.unique(np.asarray(caps, dtype=object), return_inverse=True)
        inv = torch.as_tensor(inv, device=dev)
        img = model.encode_image(x)
        txt = model.encode_text(list(uniq))
        loss = clip_loss(img, txt, inv, model.logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
            acc = float(((img @ txt.t()).argmax(1) == inv).float().mean())
        rows.append({"step": step, "loss": loss.item(), "accuracy": acc})
    model.eval()
    return pd.DataFrame(rows)


def build_clip(image_size: int = 48, patch_size: int = 8, width: int = 48, layers: int = 4, heads: int = 4,
               text: str = "minilm", openclip_path=None, device="cpu", seed: int | None = None) -> CLIPModel:
    """The chapter's CLIP: a tiny ViT (quick profile) or the OpenCLIP ViT-B/16 image tower (``openclip_path``).

    Parameters
    ----------
    image_size, patch_size, width, layers, heads : int
        Tiny-ViT shape (ignored with ``openclip_path``, except ``image_size``).
    text : {"minilm", "bow"}
        Frozen pretrained MiniLM tower (with a trained projection) or a small trainable bag-of-words tower.
    openclip_path : str or Path, optional
        Local OpenCLIP checkpoint. Its image tower is loaded and frozen, so that :func:`pretrain_clip` only aligns
        the text projection to it; :class:`FileNotFoundError` when the file is missing.
    device : torch device
    seed : int, optional
        Initialise the new weights from ``torch.manual_seed(seed)`` without touching the global RNG (default: the
        global RNG).
    """
    from facelab.antispoof.detector import _seeded
    from facelab.antispoof.text import BagOfWordsTextTower, MiniLMTextTower

    if text not in ("minilm", "bow"):
        raise ValueError(f"text must be 'minilm' or 'bow', got {text!r}")
    with _seeded(seed):
        tower = MiniLMTextTower() if text == "minilm" else BagOfWordsTextTower()
        if openclip_path is not None:
            from facelab.antispoof.openclip import load_openclip_visual

            visual = load_openclip_visual(openclip_path, image_size=image_size)
            visual.requires_grad_(False)
        else:
            visual = VisionTransformer(ViTConfig(image_size=image_size, patch_size=patch_size, width=width,
                                                 layers=layers, heads=heads, embed_dim=width))
        model = CLIPModel(visual, tower, tower.dim)
    return model.to(device)
