"""facelab.models: the PyTorch dlib ResNet agrees with native dlib, SFace with OpenCV, the expression net behaves."""

import itertools

import numpy as np
import pytest
import torch

from pathlib import Path

from facelab import assets, photos
from facelab.detect import _shape_predictor, detect_faces
from facelab.io import load_image
from facelab.models import load_embedder


def _real_photo_paths():
    return [Path(p) for p in photos.real_photos()["path"]]


@pytest.fixture(scope="module")
def dlib_chips():
    """dlib's own 150 px chips (dlib.get_face_chip, padding 0.25) of every face dlib finds in the real photos."""
    import dlib

    chips, labels = [], []
    for p in _real_photo_paths():
        img = load_image(p)
        for k, f in enumerate(detect_faces(img, "dlib-hog", landmarks="none", upsample=0)):
            shape = _shape_predictor(5)(img, f.dlib_rect())
            chips.append(dlib.get_face_chip(img, shape, size=150, padding=0.25))
            labels.append(f"{p.name}#{k}")
    return np.stack(chips), labels


def test_dlib_resnet_interface():
    m = load_embedder("dlib-resnet")
    assert isinstance(m, torch.nn.Module)
    assert (m.embedding_size, m.distance, m.threshold, m.input_size, m.template) == (128, "euclidean", -0.6, 150,
                                                                                     "dlib-150")
    assert m.distance_threshold == 0.6  # dlib's published L2 distance; m.threshold is it as a similarity
    assert m.differentiable and not m.training
    assert load_embedder("dlib-resnet") is m  # cached
    assert sum(isinstance(x, torch.nn.Conv2d) for x in m.modules()) == 29  # ResNet-29: 29 conv layers


@pytest.fixture(scope="module")
def native_embeddings(dlib_chips):
    import dlib

    rec = dlib.face_recognition_model_v1(str(assets.fetch("dlib-resnet-model")))
    return np.array([np.array(rec.compute_face_descriptor(c)) for c in dlib_chips[0]])


def _compare(native, ours):
    cos = (native * ours).sum(1) / np.linalg.norm(native, axis=1) / np.linalg.norm(ours, axis=1)
    d_nat = np.linalg.norm(native[:, None] - native[None], axis=2)
    d_our = np.linalg.norm(ours[:, None] - ours[None], axis=2)
    pairs = list(itertools.combinations(range(len(native)), 2))
    flips = [(i, j) for i, j in pairs if (d_nat[i, j] < 0.6) != (d_our[i, j] < 0.6)]
    return cos, d_nat, d_our, flips, len(pairs)


def test_pytorch_dlib_matches_native_dlib(dlib_chips, native_embeddings):
    chips, labels = dlib_chips
    assert len(chips) >= 20  # Obama x6, Biden, astronaut, Hopper and the group photos
    ours = load_embedder("dlib-resnet").embed(chips).numpy().astype(np.float64)
    assert ours.shape == native_embeddings.shape == (len(chips), 128)
    cos, d_nat, d_our, flips, n_pairs = _compare(native_embeddings, ours)
    assert cos.min() >= 0.999, dict(zip(labels, cos.round(5)))
    assert flips == [], [(labels[i], labels[j], d_nat[i, j], d_our[i, j]) for i, j in flips]
    assert n_pairs >= 190
    assert np.abs(d_nat - d_our).max() < 1e-3
    # and the identities come out right: all Obama photos match each other, Biden matches none of them
    obama = [i for i, lab in enumerate(labels) if lab.startswith(("obama", "32bit"))]
    biden = labels.index("biden.jpg#0")
    assert len(obama) == 6 and d_our[np.ix_(obama, obama)].max() < 0.6
    assert d_our[biden, obama].min() > 0.6


def test_faceapi_weights_match_native_dlib_up_to_quantization(dlib_chips, native_embeddings):
    chips, labels = dlib_chips
    m = load_embedder("dlib-resnet", weights="faceapi")
    assert m is not load_embedder("dlib-resnet")
    ours = m.embed(chips).numpy().astype(np.float64)
    cos, d_nat, d_our, flips, _ = _compare(native_embeddings, ours)
    assert cos.min() >= 0.999, dict(zip(labels, cos.round(5)))
    assert np.abs(d_nat - d_our).max() < 0.03
    # uint8 weights move distances by up to ~0.01: only pairs that close to 0.6 may change side
    assert all(abs(d_nat[i, j] - 0.6) < 0.01 for i, j in flips), [(labels[i], labels[j], d_nat[i, j]) for i, j in flips]


def test_input_forms_agree_and_gradients_flow(dlib_chips):
    m = load_embedder("dlib-resnet")
    chips = dlib_chips[0][:2]
    a = m.embed(chips)  # uint8 (N, S, S, 3)
    x = torch.from_numpy(chips).permute(0, 3, 1, 2).float() / 255
    b = m.embed(x)  # float (N, 3, S, S) in [0, 1]
    c = m.embed(chips[0])  # one chip
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a[:1], c, atol=1e-5)
    assert m.embed(np.zeros((0, 150, 150, 3), np.uint8)).shape == (0, 128)
    x = x[:1].clone().requires_grad_(True)
    e = m.embed(x)
    (e - a[1:2]).pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_bad_inputs_give_clear_errors():
    m = load_embedder("dlib-resnet")
    with pytest.raises(ValueError, match="150x150"):
        m.embed(np.zeros((2, 112, 112, 3), np.uint8))
    with pytest.raises(ValueError, match="3 RGB channels"):
        m.embed(np.zeros((2, 150, 150, 4), np.uint8))
    with pytest.raises(ValueError, match="3 RGB channels"):
        m.embed(torch.zeros(2, 1, 150, 150))
    with pytest.raises(ValueError, match="dtype"):
        m.embed(np.zeros((2, 150, 150, 3), np.int64))
    with pytest.raises(ValueError, match="unknown embedder"):
        load_embedder("arcface-r100")
    with pytest.raises(ValueError, match=r"\(N, 128\)"):
        m.pairwise_distance(torch.zeros(2, 128), torch.zeros(2, 64))


def test_pairwise_distance_and_decisions():
    m = load_embedder("dlib-resnet")
    a = torch.tensor([[0.0] * 128, [0.5] + [0.0] * 127])
    b = torch.tensor([[0.7] + [0.0] * 127])
    d = m.pairwise_distance(a, b)
    assert torch.allclose(d, torch.tensor([[0.7], [0.2]]))
    assert torch.allclose(m.similarity(a, b), -d)
    assert m.is_same(a, b).tolist() == [[False], [True]]
