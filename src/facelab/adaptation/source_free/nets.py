"""DSFDA's networks (after TDGAN, Xie et al. 2020, as the official DSFDA code builds them), at a configurable scale.

* :class:`Encoder` - identity encoder ``E_f`` and expression encoder ``E_e`` share this design: convolutions with
  InstanceNorm down to a feature map (official: Inception-style blocks to 8x8x128 from 128 px; here plain
  convolutions to ``S/4`` x ``S/4`` x ``4c``).
* :class:`Decoder` - both feature maps and uniform noise (``nz`` channels) are concatenated, mixed by residual blocks,
  and upsampled by transposed convolutions back to an image (official: 6 residual blocks, 4 transposed convolutions).
* :class:`Generator` - ``gen(x_face, x_expr)``: the face of ``x_face`` showing the expression of ``x_expr``.
* :class:`Discriminator` - returns (features, logits); the face discriminator classifies target identities + "fake",
  and its features give the perceptual loss.
* :class:`ExpressionClassifier` - the source model (with BatchNorm: the BN-statistics baseline needs it); it is the
  expression head / discriminator of DSFDA and the classifier that is adapted. ``forward`` returns (features, logits).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Encoder", "Decoder", "Generator", "Discriminator", "ExpressionClassifier"]


def _down(cin, cout, k=4, s=2, p=1, norm=True):
    layers = [nn.Conv2d(cin, cout, k, s, p)]
    if norm:
        layers.append(nn.InstanceNorm2d(cout, affine=True))
    layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """Image (N, C, S, S) -> feature map (N, c 2^n_down, S / 2^n_down, S / 2^n_down)."""

    def __init__(self, in_ch: int = 1, c: int = 8, n_down: int = 3):
        super().__init__()
        layers = [_down(in_ch, c, 3, 1, 1)]
        for k in range(n_down):
            layers.append(_down(c * 2 ** k, c * 2 ** (k + 1)))
        self.out_ch = c * 2 ** n_down
        layers.append(_down(self.out_ch, self.out_ch, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class _Res(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), nn.InstanceNorm2d(ch, affine=True), nn.ReLU(True),
                                  nn.Conv2d(ch, ch, 3, 1, 1), nn.InstanceNorm2d(ch, affine=True))

    def forward(self, x):
        return x + self.body(x)


class Decoder(nn.Module):
    """(identity features, expression features, noise) -> image in [0, 1]."""

    def __init__(self, feat_ch: int, out_ch: int = 1, hidden: int = 64, nz: int = 8, n_res: int = 1, n_up: int = 3):
        super().__init__()
        self.nz = nz
        self.mix = nn.Sequential(nn.Conv2d(2 * feat_ch + nz, hidden, 3, 1, 1), nn.InstanceNorm2d(hidden, affine=True),
                                 nn.ReLU(True), *[_Res(hidden) for _ in range(n_res)])
        up, ch = [], hidden
        for _ in range(n_up):
            up += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1), nn.InstanceNorm2d(ch // 2, affine=True), nn.ReLU(True)]
            ch //= 2
        up += [nn.Conv2d(ch, out_ch, 3, 1, 1), nn.Sigmoid()]
        self.up = nn.Sequential(*up)

    def forward(self, f_face, f_expr, noise=None, generator: torch.Generator | None = None):
        if self.nz:
            if noise is None:
                noise = torch.rand((f_face.shape[0], self.nz, *f_face.shape[2:]), generator=generator,
                                   device="cpu").to(f_face.device)
            h = torch.cat([f_expr, f_face, noise], 1)
        else:
            h = torch.cat([f_expr, f_face], 1)
        return self.up(self.mix(h))


class Generator(nn.Module):
    """``gen(x_face, x_expr)``: the identity of ``x_face`` with the expression of ``x_expr``."""

    def __init__(self, in_ch: int = 1, c: int = 8, hidden: int = 64, nz: int = 8, n_res: int = 1, n_down: int = 3):
        super().__init__()
        self.enc_face = Encoder(in_ch, c, n_down)
        self.enc_expr = Encoder(in_ch, c, n_down)
        self.dec = Decoder(self.enc_face.out_ch, in_ch, hidden, nz, n_res, n_down)

    def forward(self, x_face, x_expr, noise=None, generator=None):
        return self.dec(self.enc_face(x_face), self.enc_expr(x_expr), noise, generator)


class Discriminator(nn.Module):
    """Image -> (features (N, 4c), logits (N, n_classes))."""

    def __init__(self, n_classes: int, in_ch: int = 1, c: int = 16):
        super().__init__()
        self.body = nn.Sequential(_down(in_ch, c, norm=False), _down(c, 2 * c), _down(2 * c, 4 * c),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4 * c, n_classes)

    def forward(self, x):
        f = self.body(x)
        return f, self.fc(f)


class ExpressionClassifier(nn.Module):
    """The source expression model: 4 conv-BN-ReLU stages, global pooling, dropout, linear head.
    ``forward(x) -> (features, logits)``; :meth:`logits` for the logits only."""

    def __init__(self, n_classes: int, in_ch: int = 1, c: int = 16, dropout: float = 0.3):
        super().__init__()

        def stage(cin, cout, pool=True):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True),
                                 *([nn.MaxPool2d(2)] if pool else []))

        self.features = nn.Sequential(stage(in_ch, c), stage(c, 2 * c), stage(2 * c, 4 * c), stage(4 * c, 4 * c, False),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(4 * c, n_classes)
        self.n_classes = n_classes

    def forward(self, x):
        f = self.features(x)
        return f, self.head(self.drop(f))

    def logits(self, x):
        return self.forward(x)[1]
