"""facelab.models: SFace in PyTorch agrees with OpenCV; face-api's expression net on real faces."""

import numpy as np
import pytest
import torch

from pathlib import Path

from facelab import assets, photos
from facelab.detect import detect_faces
from facelab.io import load_image
from facelab.models import load_embedder


def _real_photo_paths():
    return [Path(p) for p in photos.real_photos()["path"]]


# ---------------------------------------------------------------------------------------------------------------
# SFace


@pytest.fixture(scope="module")
def arcface_chips():
    from facelab.align import align_faces

    chips, labels = [], []
    for p in _real_photo_paths()[:12]:
        img = load_image(p)
        faces = detect_faces(img, "yunet")
        chips.extend(align_faces(img, faces, "arcface-112"))
        labels.extend(f"{p.name}#{k}" for k in range(len(faces)))
    return np.stack(chips), labels


def test_sface_interface():
    m = load_embedder("sface")
    assert (m.embedding_size, m.distance, m.threshold, m.input_size, m.template) == (128, "cosine", 0.363, 112,
                                                                                     "arcface-112")
    assert m.differentiable and not m.training
    assert abs(m.distance_threshold - 0.637) < 1e-9
    with pytest.raises(ValueError, match="112x112"):
        m.embed(np.zeros((1, 150, 150, 3), np.uint8))
    with pytest.raises(ValueError, match="weights"):
        load_embedder("sface", weights="dlib")


def test_sface_torch_matches_opencv(arcface_chips):
    import cv2

    chips, labels = arcface_chips
    rec = cv2.FaceRecognizerSF.create(str(assets.fetch("sface-model")), "")
    ref = np.stack([rec.feature(np.ascontiguousarray(c[:, :, ::-1])).ravel() for c in chips])  # OpenCV wants BGR
    m = load_embedder("sface")
    ours = m.embed(chips).numpy()
    cos = (ref * ours).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(ours, axis=1)
    assert cos.min() > 0.9999, dict(zip(labels, cos.round(5)))
    # same decisions at the published threshold (OpenCV's match() with FR_COSINE is the cosine similarity)
    s_ref = np.array([[rec.match(a[None], b[None], cv2.FaceRecognizerSF_FR_COSINE) for b in ref] for a in ref])
    same_ours = m.is_same(torch.from_numpy(ours), torch.from_numpy(ours)).numpy()
    np.testing.assert_array_equal(s_ref >= 0.363, same_ours)
    obama = [i for i, lab in enumerate(labels) if lab.startswith(("obama", "32bit"))]
    assert same_ours[np.ix_(obama, obama)].all()


def test_sface_gradients_flow(arcface_chips):
    m = load_embedder("sface")
    x = (torch.from_numpy(arcface_chips[0][:2]).permute(0, 3, 1, 2).float() / 255).requires_grad_(True)
    e = torch.nn.functional.normalize(m.embed(x), dim=1)
    (e[0] @ e[1]).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------------------
# face-api expression net


def test_expression_net_on_real_faces():
    from facelab.models import load_expression_model
    from facelab.models.expression import EXPRESSIONS, expression_crops

    m = load_expression_model()
    assert m.classes == EXPRESSIONS and len(EXPRESSIONS) == 7 and EXPRESSIONS[:2] == ("neutral", "happy")
    fr = assets.fetch("face-recognition-test-images")
    crops = []
    for p in (fr / "obama.jpg", assets.fetch("astronaut"), fr / "biden.jpg", assets.fetch("grace-hopper")):
        img = load_image(p)
        crops.append(expression_crops(img, detect_faces(img, "yunet")[:1])[0])
    crops = np.stack(crops)
    assert crops.shape == (4, 112, 112, 3) and crops.dtype == np.uint8
    prob = m.predict(crops)
    assert prob.shape == (4, 7) and torch.allclose(prob.sum(1), torch.ones(4), atol=1e-5)
    labels = [EXPRESSIONS[k] for k in prob.argmax(1).tolist()]
    assert labels == ["happy", "happy", "neutral", "neutral"]  # two broad smiles, two calm faces
    grey = m.predict(crops, grey=True)
    assert [EXPRESSIONS[k] for k in grey.argmax(1).tolist()] == labels
    x = (torch.from_numpy(crops[:1]).permute(0, 3, 1, 2).float() / 255).requires_grad_(True)
    m.predict(x)[0, 1].backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="112x112"):
        m.predict(np.zeros((1, 150, 150, 3), np.uint8))
