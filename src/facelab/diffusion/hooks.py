"""Look inside the UNet during a forward pass: self-attention maps and the deepest down-block's features.

DiffAIM compares a benign and an adversarial latent pushed through the UNet *in one batch* (``[benign; adversarial]``):
its structure loss is the mean squared difference of their self-attention similarity maps, its semantic loss the
distance between their features at the end of the UNet's encoder. The public DiffAIM code hooks the output of the
last down block (``unet.down_blocks[-1]``, a ``DownBlock2D`` in Stable Diffusion 1.5 and in the quick model), and
measures the distance as one minus the cosine similarity *per channel* over the spatial positions, averaged over
channels (:func:`per_channel_cosine`).

:class:`UNetProbe` installs a diffusers attention processor that computes attention explicitly (so the maps are
available and differentiable) and a forward hook on the feature block; it restores the UNet's own processors on
exit. The processor keeps the padding mask of the quick model's token conditioning
(:func:`facelab.diffusion.model.padding_bias`): cross-attention never attends to padded tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facelab.diffusion.attention import explicit_attention

__all__ = ["UNetProbe", "RecordingAttnProcessor", "per_channel_cosine", "feature_block"]


def per_channel_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per image, the cosine similarity of ``a`` and ``b`` (N, C, h, w) computed for each channel over its h x w
    positions, averaged over the channels (N,). This is the public DiffAIM code's semantic similarity
    (``F.cosine_similarity(f[0], f[1])`` on features reshaped to (C, h w), then ``.mean()``)."""
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"expected two (N, C, h, w) feature maps of the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    return F.cosine_similarity(a.flatten(2), b.flatten(2), dim=2, eps=1e-8).mean(1)


def feature_block(unet, where: str = "down_blocks[-1]"):
    """The UNet module whose output DiffAIM's semantic term reads: ``"down_blocks[-1]"`` (the public code) or
    ``"mid_block"``."""
    if where == "down_blocks[-1]":
        return unet.down_blocks[-1]
    if where == "mid_block":
        return unet.mid_block
    raise ValueError(f"unknown feature block {where!r}; expected 'down_blocks[-1]' (DiffAIM's code) or 'mid_block'")


class RecordingAttnProcessor:
    """Attention computed explicitly (:func:`facelab.diffusion.attention.explicit_attention`); for self-attention
    with at most ``max_tokens`` queries on a batch of 2N (benign first half, adversarial second half) it adds the MSE
    between the two halves' similarity maps (pre-softmax :math:`QK^T/\\sqrt d`, as in DiffAIM) to
    ``probe.structure``. Cross-attention adds the padding bias of the conditioning
    (:func:`facelab.diffusion.model.padding_bias`) to its logits, as the quick UNet's own processor does."""

    def __init__(self, probe: "UNetProbe", max_tokens: int = 32 * 32):
        self.probe = probe
        self.max_tokens = max_tokens

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        structure = None
        if encoder_hidden_states is None and self.probe.active:
            structure = lambda sim: self._structure(sim, attn.heads)
        return explicit_attention(attn, hidden_states, encoder_hidden_states, attention_mask, temb,
                                  on_scores=structure)

    def _structure(self, sim: torch.Tensor, heads: int) -> torch.Tensor:
        """Add the halves' per-image MSE of the (2N * heads, T, T) self-attention scores; ``sim`` passes unchanged."""
        if sim.shape[1] <= self.max_tokens and (sim.shape[0] // heads) % 2 == 0:
            a, b = sim.chunk(2)
            self.probe.structure = self.probe.structure + _per_image_mse(a, b, heads)
        return sim


def _per_image_mse(a: torch.Tensor, b: torch.Tensor, heads: int) -> torch.Tensor:
    """(N*heads, T, T) halves -> per-image MSE (N,)."""
    d = ((b - a.detach()) ** 2).flatten(1).mean(1)
    return d.view(-1, heads).mean(1)


class UNetProbe:
    """Context manager: record DiffAIM's structure loss and the features of one UNet block (default the last down
    block, as the public DiffAIM code).

    Examples
    --------
    >>> with UNetProbe(model.unet) as probe:           # doctest: +SKIP
    ...     probe.reset()
    ...     eps = model.unet(torch.cat([x_benign, x_adv]), t, encoder_hidden_states=c).sample
    ...     probe.structure, probe.features             # (N,) and (2N, C, h, w)
    ...     probe.semantic_divergence()                 # (N,) 1 - per-channel spatial cosine
    """

    def __init__(self, unet, max_tokens: int = 32 * 32, where: str = "down_blocks[-1]"):
        self.unet = unet
        self.max_tokens = max_tokens
        self.where = where
        self.block = feature_block(unet, where)
        self.active = True
        self.reset()

    def reset(self):
        self.structure = 0.0
        self.features = None

    @property
    def mid(self):  # the name of earlier versions (which hooked the mid block)
        return self.features

    def __enter__(self):
        self._saved = self.unet.attn_processors
        self.unet.set_attn_processor(RecordingAttnProcessor(self, self.max_tokens))
        self._hook = self.block.register_forward_hook(self._save)
        return self

    def _save(self, module, inputs, output):
        self.features = output[0] if isinstance(output, tuple) else output

    def __exit__(self, *exc):
        self._hook.remove()
        self.unet.set_attn_processor(self._saved)

    def semantic_divergence(self) -> torch.Tensor:
        """Per-image 1 - per-channel spatial cosine between the benign and adversarial halves' features (N,)."""
        if self.features is None:
            raise RuntimeError("no features recorded: run the UNet on [benign; adversarial] inside the probe first")
        a, b = self.features.chunk(2)
        return 1 - per_channel_cosine(a.detach(), b)
