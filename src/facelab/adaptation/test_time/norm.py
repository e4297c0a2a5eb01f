"""Batch normalisation that reads the test stream: source statistics, the current batch's, or a blend of the two with
a slowly moving estimate of the stream's (what every adapter here normalises with).

:class:`StreamBatchNorm2d` normalises with

    mean = alpha * mean(batch) + (1 - alpha) * m,     var = alpha * var(batch) + (1 - alpha) * v

where ``(m, v)`` start at the source model's running statistics and move towards each batch's with weight
``momentum`` after the batch (``m <- (1 - momentum) m + momentum mean(batch)``). ``alpha = 1, momentum = 0`` is
TENT's setting (each batch normalised by its own statistics; ``track_running_stats=False``), ``alpha = 0,
momentum = 0`` the source model, and ``alpha = 0, momentum > 0`` a pure running estimate of the stream's statistics.

A batch of one frame: its statistics are those of its pixels, which at the last block of the mini-Xception are
16 values per channel; so with a single frame ``alpha`` is capped at ``single_frame_alpha`` (default 0.1) and the
momentum at ``single_frame_alpha`` too, so one frame never replaces the statistics it is blended with. Gradients flow
through the batch part only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["StreamBatchNorm2d", "convert_batchnorm", "set_bn_stream", "stream_norms"]


class StreamBatchNorm2d(nn.BatchNorm2d):
    """A :class:`torch.nn.BatchNorm2d` (same parameters and buffers) that normalises with a blend of batch and
    running statistics; see the module docstring. Use :func:`convert_batchnorm` to swap it into a model."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, *, alpha: float = 1.0,
                 stream_momentum: float = 0.0, single_frame_alpha: float = 0.1):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.alpha = float(alpha)
        self.stream_momentum = float(stream_momentum)
        self.single_frame_alpha = float(single_frame_alpha)
        self.single_frame_batches = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        a, m = self.alpha, self.stream_momentum
        if n == 1:
            a, m = min(a, self.single_frame_alpha), min(m, self.single_frame_alpha)
            self.single_frame_batches += 1
        if a == 0.0 and m == 0.0:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        var, mu = torch.var_mean(x, (0, 2, 3), unbiased=False)
        if m > 0.0:
            with torch.no_grad():
                self.running_mean.mul_(1 - m).add_(mu.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach(), alpha=m)
        if a == 0.0:
            mean, v = self.running_mean, self.running_var
        elif a == 1.0:
            mean, v = mu, var
        else:
            mean = a * mu + (1 - a) * self.running_mean
            v = a * var + (1 - a) * self.running_var
        scale = self.weight * torch.rsqrt(v + self.eps)
        shift = self.bias - mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


def convert_batchnorm(model: nn.Module, *, alpha: float = 1.0, momentum: float = 0.0,
                      single_frame_alpha: float = 0.1) -> nn.Module:
    """Replace every :class:`torch.nn.BatchNorm2d` of ``model`` (in place) by a :class:`StreamBatchNorm2d` with the
    same parameters and running statistics; returns ``model``."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.BatchNorm2d) and not isinstance(child, StreamBatchNorm2d):
            new = StreamBatchNorm2d(child.num_features, child.eps, child.momentum or 0.1, alpha=alpha,
                                    stream_momentum=momentum, single_frame_alpha=single_frame_alpha)
            new.load_state_dict(child.state_dict())
            new.to(device=child.weight.device, dtype=child.weight.dtype)
            setattr(model, name, new)
        else:
            convert_batchnorm(child, alpha=alpha, momentum=momentum, single_frame_alpha=single_frame_alpha)
    return model


def stream_norms(model: nn.Module) -> list[StreamBatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, StreamBatchNorm2d)]


def set_bn_stream(model: nn.Module, *, alpha: float | None = None, momentum: float | None = None) -> None:
    """Change ``alpha`` / ``momentum`` of every :class:`StreamBatchNorm2d` in ``model``."""
    for m in stream_norms(model):
        if alpha is not None:
            m.alpha = float(alpha)
        if momentum is not None:
            m.stream_momentum = float(momentum)
