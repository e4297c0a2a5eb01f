"""EmotiEffLib ONNX loading (facelab.models.emotiefflib), on a tiny ONNX network built here with onnx.helper."""

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from facelab.models import emotiefflib as E  # noqa: E402


def _tiny_onnx(path, n_out=8, feat=6, seed=0):
    """Conv(3->feat, 3x3) -> Relu -> GlobalAveragePool -> Flatten -> Gemm(feat->n_out); returns the weights."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.normal(size=(feat, 3, 3, 3)).astype(np.float32)
    b = rng.normal(size=feat).astype(np.float32)
    fw = rng.normal(size=(n_out, feat)).astype(np.float32)
    fb = rng.normal(size=n_out).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n_out])],
                              [numpy_helper.from_array(a, n) for a, n in ((w, "w"), (b, "b"), (fw, "fw"), (fb, "fb"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return w, b, fw, fb


def _reference(x, w, b, fw, fb):
    c = torch.relu(torch.nn.functional.conv2d(x, torch.from_numpy(w), torch.from_numpy(b), padding=1))
    f = c.mean((2, 3))
    return f, f @ torch.from_numpy(fw).T + torch.from_numpy(fb)


def test_outputs_match_reference(tmp_path):
    w, b, fw, fb = _tiny_onnx(tmp_path / "enet_b0_8_best_vgaf.onnx")
    m = E.load_emotiefflib("enet_b0_8_best_vgaf", path=tmp_path)  # a folder holding <name>.onnx
    m.size = 16
    x = torch.rand(5, 3, 16, 16)
    out = m.outputs(x, batch_size=2)
    xn = torch.from_numpy(m.preprocess(x))
    f, lo = _reference(xn, w, b, fw, fb)
    assert out.logits.shape == (5, 8) and out.descriptor.shape == (5, 6)
    assert torch.allclose(out.descriptor, f, atol=1e-5) and torch.allclose(out.logits, lo, atol=1e-5)
    assert torch.allclose(out.probabilities.sum(1), torch.ones(5), atol=1e-6)
    assert out.valence is None and m.classes[1] == "contempt"
    # uint8 NHWC input gives the same result
    u8 = (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    assert torch.allclose(m.outputs(u8).logits, m.outputs(torch.from_numpy(u8).permute(0, 3, 1, 2) / 255.0).logits)


def test_mtl_valence_arousal_and_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".emotiefflib").mkdir()
    _tiny_onnx(tmp_path / ".emotiefflib" / "enet_b0_8_va_mtl.onnx", n_out=10)
    m = E.load_emotiefflib("enet_b0_8_va_mtl")  # found in EmotiEffLib's own cache folder
    m.size = 16
    out = m.outputs(torch.rand(3, 3, 20, 24))
    assert out.logits.shape == (3, 8) and out.valence.shape == (3,) and out.arousal.shape == (3,)


def test_missing_model_says_what_to_download(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(E.EmotiEffLibModelMissing, match=r"enet_b2_8\.onnx.*never downloads.*github\.com/sb-ai-lab"):
        E.load_emotiefflib("enet_b2_8", path=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="unknown EmotiEffLib model"):
        E.emotiefflib_model_path("resnet_9000")


def test_bad_files_and_shapes(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a readable ONNX model"):
        E.EmotiEffLibONNX(tmp_path / "junk.onnx")
    _tiny_onnx(tmp_path / "seven.onnx", n_out=7)
    m = E.EmotiEffLibONNX(tmp_path / "seven.onnx", "enet_b0_8_best_vgaf", size=16)
    with pytest.raises(ValueError, match="expected 8 classes"):
        m.outputs(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError):
        m.outputs(torch.rand(2, 1, 16, 16, 2))
    assert E.EmotiEffLibONNX(tmp_path / "seven.onnx", "enet_b2_7", size=16).outputs(torch.rand(0, 3, 8, 8)).logits.shape[0] == 0


def test_face_descriptors_with_emotiefflib(tmp_path):
    from facelab.affect import AffectCorpus
    from facelab.affect import descriptors as D

    _tiny_onnx(tmp_path / "enet_b0_8_best_vgaf.onnx")
    m = E.load_emotiefflib(path=tmp_path / "enet_b0_8_best_vgaf.onnx")
    m.size = 16
    frames = AffectCorpus(1, seed=5, size=96, fps=4, speech=False).clip(0).frames[:3].clone()
    frames[1] = 0.5  # no face
    f = D.face_descriptors(frames, emotiefflib=m, cache=D.DescriptorCache(tmp_path / "cache"))
    assert f.emotiefflib_probs.shape == (3, 8) and f.emotiefflib_features.shape == (3, 6)
    assert np.isnan(f.emotiefflib_probs[1]).all() and np.allclose(f.emotiefflib_probs[[0, 2]].sum(1), 1, atol=1e-5)
    assert D.face_descriptors(frames).emotiefflib_probs is None
