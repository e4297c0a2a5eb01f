"""dlib's ResNet-29 face recogniser rebuilt in PyTorch from face-api's copy of its weights.

dlib's network (``dlib_face_recognition_resnet_model_v1``, King 2017; LFW 99.38 %) is, from input to output::

    150x150 RGB, (x - mean_rgb) / 256,  mean_rgb = (122.782, 117.001, 104.298)
    conv 7x7/2, 32 (no padding) -> affine (per-channel scale, shift) -> ReLU -> max-pool 3x3/2       -> 35x35
    3 x residual(32)                                                                                  -> 35x35
    residual_down(64),  3 x residual(64)                                                              -> 17x17
    residual_down(128), 2 x residual(128)                                                             -> 8x8
    residual_down(256), 2 x residual(256)                                                             -> 3x3 (+pad: 4x4)
    residual_down(256)                                                                                -> 1x1 (+pad: 2x2)
    global average pool -> fc 256 -> 128 (no bias)

``residual(N)``: conv3x3/1 -> affine -> ReLU -> conv3x3/1 -> affine, plus the input, ReLU.
``residual_down(N)``: conv3x3/2 (no padding) -> affine -> ReLU -> conv3x3/1 -> affine, plus the input
average-pooled 2x2/2 and zero-padded in channels; where the two branches differ in size the smaller is
zero-padded at the bottom/right (dlib's ``add_prev`` does this), then ReLU. 29 conv layers in all.

Two sources of the same weights, one PyTorch module (``load_dlib_resnet(weights=...)``):

* ``"faceapi"``: face-api (``@vladmandic/face-api``) ships dlib's weights as a TF.js manifest with
  uint8 quantization (value = q * scale + min), read with numpy and dequantized. Agreement with native dlib on
  real faces: cosine about 0.9997, L2 distances within about 0.01, so a pair whose native distance lies within
  ~0.01 of the 0.6 threshold can fall on the other side.
* ``"dlib"`` (the default): dlib's own ``dlib_face_recognition_resnet_model_v1.dat`` (float32), parsed with numpy from dlib's
  serialization format (length-prefixed layer names, then each parameter tensor as a version, four dimensions
  and raw little-endian float32 values); no dlib runtime needed. Agrees with native dlib to float precision.

Each affine layer (and the conv bias) is folded into its convolution. The result is an ordinary,
differentiable ``nn.Module``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facelab import assets
from facelab.core.scores import DLIB_THRESHOLD
from facelab.models.base import Embedder
from facelab.models.tfjs import read_tfjs_weights

__all__ = ["DlibResNet", "load_dlib_resnet", "read_dlib_dat_params", "DLIB_MEAN_RGB"]

DLIB_MEAN_RGB = (122.782, 117.001, 104.298)

_LAYOUT = ([("conv32_1", False), ("conv32_2", False), ("conv32_3", False)]
           + [("conv64_down", True), ("conv64_1", False), ("conv64_2", False), ("conv64_3", False)]
           + [("conv128_down", True), ("conv128_1", False), ("conv128_2", False)]
           + [("conv256_down", True), ("conv256_1", False), ("conv256_2", False)]
           + [("conv256_down_out", True)])


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1)

    def forward(self, x):
        out = self.conv2(F.relu(self.conv1(x)))
        if not self.down:
            return F.relu(out + x)
        skip = F.avg_pool2d(x, 2, 2)
        dh, dw = skip.shape[-2] - out.shape[-2], skip.shape[-1] - out.shape[-1]
        if dh > 0 or dw > 0:
            out = F.pad(out, (0, max(dw, 0), 0, max(dh, 0)))
        if skip.shape[1] < out.shape[1]:
            skip = F.pad(skip, (0, 0, 0, 0, 0, out.shape[1] - skip.shape[1]))
        return F.relu(out + skip)


class DlibResNet(Embedder):
    """dlib's ResNet-29 face embedder (see the module docstring). Input: dlib-150 chips, RGB in [0, 1]."""

    name = "dlib-resnet"
    embedding_size = 128
    distance = "euclidean"
    threshold = DLIB_THRESHOLD  # dlib's published L2 distance 0.6, as a similarity (-distance)
    input_size = 150
    template = "dlib-150"
    differentiable = True

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        blocks, cin = [], 32
        for name, down in _LAYOUT:
            cout = int(name[4:].split("_")[0])
            blocks.append(_Block(cin, cout, down))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(256, 128, bias=False)
        self.register_buffer("mean", torch.tensor(DLIB_MEAN_RGB).view(1, 3, 1, 1) / 255.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, 150, 150) RGB in [0, 1] -> (N, 128) embeddings (dlib's scale: not re-normalised)."""
        x = (x - self.mean) * (255.0 / 256.0)
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2)
        x = self.blocks(x)
        return self.fc(x.mean((2, 3)))


def _fold(conv: nn.Conv2d, w: dict, prefix: str) -> None:
    """conv -> +bias -> *scale + shift, folded into one conv (TF filters are [kh, kw, in, out])."""
    filt = torch.from_numpy(w[f"{prefix}/conv/filters"]).permute(3, 2, 0, 1)
    bias = torch.from_numpy(w[f"{prefix}/conv/bias"])
    scale = torch.from_numpy(w[f"{prefix}/scale/weights"])
    shift = torch.from_numpy(w[f"{prefix}/scale/biases"])
    if tuple(filt.shape) != tuple(conv.weight.shape):
        raise ValueError(f"face-api weights {prefix}: filters {tuple(filt.shape)}, expected {tuple(conv.weight.shape)}")
    with torch.no_grad():
        conv.weight.copy_(filt * scale.view(-1, 1, 1, 1))
        conv.bias.copy_(bias * scale + shift)


def _dlib_int(buf: bytes, pos: int) -> tuple[int, int]:
    """One integer in dlib's serialization: a control byte (low nibble = byte count, 0x80 = negative), then the
    magnitude in little-endian bytes."""
    ctl = buf[pos]
    n = ctl & 0x0F
    val = int.from_bytes(buf[pos + 1:pos + 1 + n], "little")
    return (-val if ctl & 0x80 else val), pos + 1 + n


def _dlib_tensor(buf: bytes, pos: int) -> tuple[np.ndarray, int]:
    version, pos = _dlib_int(buf, pos)
    if version != 2:
        raise ValueError(f"dlib model file: tensor version {version} at byte {pos}, expected 2")
    dims = []
    for _ in range(4):
        v, pos = _dlib_int(buf, pos)
        dims.append(v)
    n = int(np.prod(dims))
    arr = np.frombuffer(buf, dtype="<f4", count=n, offset=pos).astype(np.float32)
    return arr, pos + 4 * n


def read_dlib_dat_params(path) -> list[tuple[str, np.ndarray]]:
    """The parameter tensors of dlib's ResNet model file in network order (input first):
    ``[("con", flat), ("affine", flat), ..., ("fc", flat)]``."""
    buf = Path(path).read_bytes()
    markers = {b"\x05con_4": "con", b"\x07affine_": "affine", b"\x04fc_2": "fc"}
    out, pos = [], 0
    while True:
        hits = [(buf.find(m, pos), m) for m in markers]
        hits = [(h, m) for h, m in hits if h >= 0]
        if not hits:
            break
        h, m = min(hits)
        q = h + len(m)
        if markers[m] == "fc":  # num_outputs, num_inputs come before the parameter tensor
            _, q = _dlib_int(buf, q)
            _, q = _dlib_int(buf, q)
        arr, pos = _dlib_tensor(buf, q)
        out.append((markers[m], arr))
    return out


def _set_conv(conv: nn.Conv2d, flat: np.ndarray, aff: np.ndarray) -> None:
    n_w = conv.weight.numel()
    cout = conv.weight.shape[0]
    if flat.size != n_w + cout or aff.size != 2 * cout:
        raise ValueError(f"dlib model file: conv with {flat.size} values / affine with {aff.size}, expected "
                         f"{n_w + cout} / {2 * cout} for {tuple(conv.weight.shape)}")
    w = torch.from_numpy(flat[:n_w].reshape(conv.weight.shape))
    b = torch.from_numpy(flat[n_w:])
    gamma, beta = torch.from_numpy(aff[:cout]), torch.from_numpy(aff[cout:])
    with torch.no_grad():
        conv.weight.copy_(w * gamma.view(-1, 1, 1, 1))
        conv.bias.copy_(b * gamma + beta)


def _load_from_dat(path) -> DlibResNet:
    params = read_dlib_dat_params(path)
    kinds = [k for k, _ in params]
    expected = ["con", "affine"] * 29 + ["fc"]
    if kinds != expected:
        raise ValueError(f"dlib model file {path}: found layers {kinds[:6]}... ({len(kinds)}), expected 29 "
                         "conv+affine pairs and one fc (dlib_face_recognition_resnet_model_v1)")
    model = DlibResNet()
    convs = [model.stem] + [c for blk in model.blocks for c in (blk.conv1, blk.conv2)]
    for i, conv in enumerate(convs):
        _set_conv(conv, params[2 * i][1], params[2 * i + 1][1])
    fc = params[-1][1]
    if fc.size != 256 * 128:
        raise ValueError(f"dlib model file: fc has {fc.size} values, expected {256 * 128}")
    with torch.no_grad():
        model.fc.weight.copy_(torch.from_numpy(fc.reshape(256, 128)).T)
    return model.eval()


def load_dlib_resnet(manifest=None, *, weights: str = "dlib") -> DlibResNet:
    """Build :class:`DlibResNet` with dlib's pretrained weights, in eval mode on the CPU.

    Parameters
    ----------
    manifest : path, optional
        The face-api manifest (default: asset ``faceapi-recognition``) or, with ``weights="dlib"``, dlib's .dat
        file (default: asset ``dlib-resnet-model``).
    weights : {"faceapi", "dlib"}
        Which copy of the weights to read (see the module docstring).
    """
    if weights == "dlib":
        return _load_from_dat(assets.path("dlib-resnet-model") if manifest is None else manifest)
    if weights != "faceapi":
        raise ValueError(f"weights must be 'faceapi' or 'dlib', got {weights!r}")
    if manifest is None:
        manifest = assets.path("faceapi-recognition") / "face_recognition_model-weights_manifest.json"
    w = read_tfjs_weights(manifest)
    model = DlibResNet()
    _fold(model.stem, w, "conv32_down")
    for (name, _), block in zip(_LAYOUT, model.blocks):
        _fold(block.conv1, w, f"{name}/conv1")
        _fold(block.conv2, w, f"{name}/conv2")
    fc = torch.from_numpy(w["fc"])
    if tuple(fc.shape) != (256, 128):
        raise ValueError(f"face-api weights fc: shape {tuple(fc.shape)}, expected (256, 128)")
    with torch.no_grad():
        model.fc.weight.copy_(fc.T)
    used = 4 + 8 * len(_LAYOUT) + 1
    if used != len(w):
        raise ValueError(f"face-api recognition manifest has {len(w)} tensors, the dlib layout uses {used}")
    return model.eval()
