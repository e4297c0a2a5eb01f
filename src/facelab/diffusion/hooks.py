"""Look inside the UNet during a forward pass: self-attention maps and mid-block features.

DiffAIM compares a benign and an adversarial latent pushed through the UNet *in one batch* (``[benign; adversarial]``):
its structure loss is the mean squared difference of their self-attention similarity maps, its semantic loss the
cosine distance of their mid-block features. :class:`UNetProbe` installs a diffusers attention processor that
computes attention explicitly (so the maps are available and differentiable) and a forward hook on
``unet.mid_block``; it restores the UNet's own processors on exit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["UNetProbe", "RecordingAttnProcessor"]


class RecordingAttnProcessor:
    """Attention computed explicitly; for self-attention with at most ``max_tokens`` queries on a batch of
    2N (benign first half, adversarial second half) it adds the MSE between the two halves' similarity maps
    (pre-softmax :math:`QK^T/\\sqrt d`, as in DiffAIM) to ``probe.structure``."""

    def __init__(self, probe: "UNetProbe", max_tokens: int = 32 * 32):
        self.probe = probe
        self.max_tokens = max_tokens

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        is_cross = encoder_hidden_states is not None
        context = encoder_hidden_states if is_cross else hidden_states
        q = attn.head_to_batch_dim(attn.to_q(hidden_states))
        k = attn.head_to_batch_dim(attn.to_k(context))
        v = attn.head_to_batch_dim(attn.to_v(context))
        sim = torch.baddbmm(torch.empty(q.shape[0], q.shape[1], k.shape[1], dtype=q.dtype, device=q.device), q,
                            k.transpose(-1, -2), beta=0, alpha=attn.scale)
        if self.probe.active and not is_cross and sim.shape[1] <= self.max_tokens and sim.shape[0] % 2 == 0:
            a, b = sim.chunk(2)
            self.probe.structure = self.probe.structure + _per_image_mse(a, b, attn.heads)
        out = torch.bmm(sim.softmax(dim=-1), v)
        out = attn.batch_to_head_dim(out)
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor


def _per_image_mse(a: torch.Tensor, b: torch.Tensor, heads: int) -> torch.Tensor:
    """(N*heads, T, T) halves -> per-image MSE (N,)."""
    d = ((b - a.detach()) ** 2).flatten(1).mean(1)
    return d.view(-1, heads).mean(1)


class UNetProbe:
    """Context manager: record DiffAIM's structure loss and the mid-block features of a UNet.

    Examples
    --------
    >>> with UNetProbe(model.unet) as probe:           # doctest: +SKIP
    ...     probe.reset()
    ...     eps = model.unet(torch.cat([x_benign, x_adv]), t, encoder_hidden_states=c).sample
    ...     probe.structure, probe.mid                 # (N,) and (2N, C, h, w)
    """

    def __init__(self, unet, max_tokens: int = 32 * 32):
        self.unet = unet
        self.max_tokens = max_tokens
        self.active = True
        self.reset()

    def reset(self):
        self.structure = 0.0
        self.mid = None

    def __enter__(self):
        self._saved = self.unet.attn_processors
        self.unet.set_attn_processor(RecordingAttnProcessor(self, self.max_tokens))
        self._hook = self.unet.mid_block.register_forward_hook(self._save_mid)
        return self

    def _save_mid(self, module, inputs, output):
        self.mid = output[0] if isinstance(output, tuple) else output

    def __exit__(self, *exc):
        self._hook.remove()
        self.unet.set_attn_processor(self._saved)

    def semantic_divergence(self) -> torch.Tensor:
        """Per-image 1 - cosine between the mid-block features of the benign and adversarial halves (N,)."""
        a, b = self.mid.chunk(2)
        return 1 - F.cosine_similarity(a.flatten(1).detach(), b.flatten(1), dim=1)
