"""face-api's facial expression classifier (``face_expression_model``) as a PyTorch module.

Seven classes, in face-api's order: neutral, happy, sad, angry, fearful, disgusted, surprised.

Architecture (face-api ``FaceFeatureExtractor`` + ``FaceProcessor``): input 112x112 RGB, ``(x - mean_rgb) / 255``
with x in 0..255 and mean_rgb = (122.782, 117.001, 104.298); four dense blocks (32, 64, 128, 256 channels), each
halving the resolution (112 -> 56 -> 28 -> 14 -> 7)::

    out1 = relu(conv0(x))            # dense0: plain 3x3 conv, stride 2; others: depthwise-separable, stride 2
    out2 = sepconv1(out1)
    out3 = sepconv2(relu(out1 + out2))
    out4 = sepconv3(relu(out1 + out2 + out3))
    block = relu(out1 + out2 + out3 + out4)

then a 7x7 average pool, a 256 -> 7 linear layer and a softmax. TF's "same" padding is reproduced exactly (for a
stride-2 3x3 conv on an even size: one row/column of zeros at the bottom/right only).

Input crops: face-api feeds the detection (or landmark-aligned) box of the face, zero-padded to a centred square
and resized to 112 px, in colour; :func:`expression_crops` makes those crops from :class:`facelab.detect.Face`
boxes. ``predict(batch, grey=True)`` converts the crops to grey (ITU-R 601 luma, replicated to three channels)
first, for comparisons with FER-style grey data.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facelab import assets
from facelab.core.images import luminance
from facelab.models.base import to_float_batch
from facelab.models.tfjs import read_tfjs_weights

__all__ = ["EXPRESSIONS", "FaceExpressionNet", "load_faceapi_expression", "expression_crops"]

EXPRESSIONS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
_MEAN_RGB = (122.782, 117.001, 104.298)


def _same_pad(x, stride):
    if stride == 1:
        return F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[-2:]
    ph = max((-(-h // 2) - 1) * 2 + 3 - h, 0)
    pw = max((-(-w // 2) - 1) * 2 + 3 - w, 0)
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


class _SepConv(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride = stride
        self.depthwise = nn.Conv2d(cin, cin, 3, stride=stride, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=True)

    def forward(self, x):
        return self.pointwise(self.depthwise(_same_pad(x, self.stride)))


class _PlainConv(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, bias=True)

    def forward(self, x):
        return self.conv(_same_pad(x, self.stride))


class _DenseBlock4(nn.Module):
    def __init__(self, cin, cout, first):
        super().__init__()
        self.conv0 = _PlainConv(cin, cout, 2) if first else _SepConv(cin, cout, 2)
        self.conv1 = _SepConv(cout, cout, 1)
        self.conv2 = _SepConv(cout, cout, 1)
        self.conv3 = _SepConv(cout, cout, 1)

    def forward(self, x):
        o1 = F.relu(self.conv0(x))
        o2 = self.conv1(o1)
        o3 = self.conv2(F.relu(o1 + o2))
        o4 = self.conv3(F.relu(o1 + o2 + o3))
        return F.relu(o1 + o2 + o3 + o4)


class FaceExpressionNet(nn.Module):
    """face-api's 7-class expression net. ``forward`` returns logits; :meth:`predict` probabilities."""

    classes = EXPRESSIONS
    input_size = 112

    def __init__(self):
        super().__init__()
        chans = [3, 32, 64, 128, 256]
        self.dense = nn.Sequential(*[_DenseBlock4(chans[i], chans[i + 1], i == 0) for i in range(4)])
        self.fc = nn.Linear(256, len(EXPRESSIONS))
        self.register_buffer("mean", torch.tensor(_MEAN_RGB).view(1, 3, 1, 1) / 255.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, 112, 112) RGB in [0, 1] -> (N, 7) logits."""
        x = self.dense(x - self.mean)  # (x*255 - mean) / 255
        x = F.avg_pool2d(x, 7, 2)
        return self.fc(x.flatten(1))

    def predict(self, batch, *, grey: bool = False) -> torch.Tensor:
        """Class probabilities (N, 7) for face crops: uint8 (N, 112, 112, 3) or float (N, 3, 112, 112) in [0, 1]
        (see :func:`expression_crops`). Keeps gradients when given a float tensor that requires grad."""
        x = to_float_batch(batch, self.input_size, device=self.mean.device)
        if grey:
            x = luminance(x).expand(-1, 3, -1, -1)
        if x.shape[0] == 0:
            return torch.zeros((0, len(EXPRESSIONS)), device=x.device)
        if x.requires_grad and torch.is_grad_enabled():
            return F.softmax(self(x), dim=1)
        with torch.no_grad():
            return F.softmax(self(x), dim=1)


def _t(a):
    return torch.from_numpy(np.ascontiguousarray(a))


def load_faceapi_expression(manifest=None) -> FaceExpressionNet:
    """Build :class:`FaceExpressionNet` from face-api's ``face_expression_model`` (asset ``faceapi-expression``)."""
    if manifest is None:
        manifest = assets.path("faceapi-expression") / "face_expression_model-weights_manifest.json"
    w = read_tfjs_weights(manifest)
    model = FaceExpressionNet()
    with torch.no_grad():
        for b, block in enumerate(model.dense):
            for c in range(4):
                conv = getattr(block, f"conv{c}")
                key = f"dense{b}/conv{c}"
                if isinstance(conv, _PlainConv):
                    conv.conv.weight.copy_(_t(w[f"{key}/filters"]).permute(3, 2, 0, 1))
                    conv.conv.bias.copy_(_t(w[f"{key}/bias"]))
                else:
                    conv.depthwise.weight.copy_(_t(w[f"{key}/depthwise_filter"]).permute(2, 3, 0, 1))
                    conv.pointwise.weight.copy_(_t(w[f"{key}/pointwise_filter"]).permute(3, 2, 0, 1))
                    conv.pointwise.bias.copy_(_t(w[f"{key}/bias"]))
        model.fc.weight.copy_(_t(w["fc/weights"]).T)
        model.fc.bias.copy_(_t(w["fc/bias"]))
    n_used = 2 + 3 * 3 + 3 * 4 * 3 + 2
    if n_used != len(w):
        raise ValueError(f"face-api expression manifest has {len(w)} tensors, the architecture uses {n_used}")
    return model.eval()


def expression_crops(image, faces, size: int = 112) -> np.ndarray:
    """face-api-style crops: each face box (clipped to the image) zero-padded to a centred square and resized.

    Returns (N, size, size, 3) uint8.
    """
    import cv2

    from facelab.io import load_image

    img = image if isinstance(image, np.ndarray) and image.ndim == 3 and image.dtype == np.uint8 else load_image(image)
    H, W = img.shape[:2]
    out = np.zeros((len(faces), size, size, 3), np.uint8)
    for i, f in enumerate(faces):
        x0, y0, x1, y1 = (int(round(v)) for v in f.box)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
        if x1 - x0 < 2 or y1 - y0 < 2:
            raise ValueError(f"face box {f.box} lies outside the {W}x{H} image")
        crop = img[y0:y1, x0:x1]
        h, w = crop.shape[:2]
        side = max(h, w)
        sq = np.zeros((side, side, 3), np.uint8)
        oy, ox = (side - h) // 2, (side - w) // 2
        sq[oy:oy + h, ox:ox + w] = crop
        interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
        out[i] = cv2.resize(sq, (size, size), interpolation=interp)
    return out
