"""Real pretrained face models as PyTorch modules.

* :func:`load_embedder` ``("dlib-resnet" | "sface")``: face embedders with one interface
  (:class:`facelab.models.base.Embedder`: ``embed(batch)``, ``embedding_size``, ``distance``, ``threshold``,
  ``input_size``, ``template``, ``differentiable``).
* :func:`load_expression_model`: face-api's 7-class facial expression net.
* :class:`FaceModel` / :func:`load_face_models`: an embedder with its (differentiable) alignment, as attacks and
  the privacy evaluation use it; scores are similarities (:mod:`facelab.core.scores`).
* :class:`MiniLMTextEncoder` (:mod:`facelab.models.text`): the book's one text encoder, frozen all-MiniLM-L6-v2
  (imported lazily: ``from facelab.models.text import MiniLMTextEncoder``).

Every embedder compares faces by a *similarity* (``Embedder.similarity``; higher = more alike) and carries its
published threshold in that unit (``Embedder.threshold``: -0.6 for dlib's L2 distance 0.6, 0.363 for SFace).

Models are cached per process: calling a loader twice returns the same module (don't modify it in place; use
``copy.deepcopy`` for fine-tuning).
"""

from __future__ import annotations

from facelab.models.base import Embedder, to_float_batch
from facelab.models.face_model import FaceModel, load_face_models
from facelab.models.synthetic import SYNTH_FACENETS, SynthFaceNet, load_synth_facenet

__all__ = ["Embedder", "EMBEDDERS", "load_embedder", "to_float_batch", "load_expression_model", "FaceModel",
           "load_face_models", "SYNTH_FACENETS", "SynthFaceNet", "load_synth_facenet"]
from facelab.models.fer import FER_CLASSES, FERMiniXception, load_fer_expression  # noqa: E402  FER2013 mini-Xception
__all__ += ["FER_CLASSES", "FERMiniXception", "load_fer_expression"]
from facelab.models.emotiefflib import EMOTIEFFLIB_MODELS, load_emotiefflib  # noqa: E402  full profile, ONNX
__all__ += ["EMOTIEFFLIB_MODELS", "load_emotiefflib"]

EMBEDDERS = ("dlib-resnet", "sface")
_CACHE: dict = {}


def load_embedder(name: str = "dlib-resnet", *, device=None, cache: bool = True, weights: str | None = None) -> Embedder:
    """A pretrained face embedder as an ``nn.Module`` in eval mode.

    Parameters
    ----------
    name : {"dlib-resnet", "sface"}
        ``"dlib-resnet"``: dlib's ResNet-29 (128-d, L2, threshold -0.6 as a similarity = L2 distance 0.6, dlib-150
        chips), PyTorch, differentiable.
        ``"sface"``: SFace (128-d, cosine, threshold 0.363, arcface-112 chips).
    device : str or torch.device, optional
        Where to put the model (default CPU).
    cache : bool
        Reuse the module loaded earlier in this process.
    weights : {"dlib", "faceapi"}, optional
        dlib-resnet only: read dlib's own float32 model file (default; agrees with native dlib to float
        precision) or face-api's uint8-quantized copy of the same weights (cosine ~0.9997 to native dlib).
    """
    if name not in EMBEDDERS:
        raise ValueError(f"unknown embedder {name!r}; choose one of {EMBEDDERS}")
    if weights is not None and name != "dlib-resnet":
        raise ValueError(f"weights= applies to 'dlib-resnet' only, not {name!r}")
    weights = weights or ("dlib" if name == "dlib-resnet" else None)
    if name == "dlib-resnet":
        from facelab.models.dlib_resnet import load_dlib_resnet

        build = lambda: load_dlib_resnet(weights=weights)  # noqa: E731
    else:
        from facelab.models.sface import load_sface

        build = load_sface
    return _cached((name, str(device or "cpu"), weights), build, device, cache)


def load_expression_model(*, device=None, cache: bool = True):
    """face-api's facial expression classifier (7 classes) as an ``nn.Module``; see
    :mod:`facelab.models.expression`."""
    from facelab.models.expression import load_faceapi_expression

    return _cached(("expression", str(device or "cpu")), load_faceapi_expression, device, cache)


def _cached(key, build, device, cache: bool):
    """Build a model once per (name, device, ...) key, in eval mode on ``device``."""
    if cache and key in _CACHE:
        return _CACHE[key]
    model = build()
    if device is not None:
        model = model.to(device)
    model.eval()
    if cache:
        _CACHE[key] = model
    return model
