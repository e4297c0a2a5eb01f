"""EmotiEffLib's pretrained expression networks (full profile) through ONNX Runtime, loaded from a local file only.

EmotiEffLib (sb-ai-lab/EmotiEffLib; HSEmotion's successor) ships EfficientNet-B0/B2, MobileFaceNet and MobileViT
expression networks trained on AffectNet. Its own loader downloads them from GitHub at run time into
``~/.emotiefflib/<model>.onnx`` (or ``.pt``); facelab never downloads anything: :func:`load_emotiefflib` reads a path
the user gives or that same cache folder, and says what to download and where to put it when the file is absent.

The networks end with one fully connected layer (an ONNX ``Gemm``); as EmotiEffLib does, the input of that layer is
the frame *descriptor* (the penultimate features ABAW-8 pools per clip) and its output the class logits. ``*_mtl``
models append valence and arousal to the logits (:attr:`EmotiEffLibOutputs.valence`, ``arousal``).

>>> m = load_emotiefflib("enet_b0_8_best_vgaf")                     # ~/.emotiefflib/enet_b0_8_best_vgaf.onnx
>>> out = m.outputs(faces)                                         # (N, 3, H, W) RGB in [0, 1], aligned crops
>>> out.probabilities.shape, out.descriptor.shape                  # (N, 8), (N, 1280)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

#: EmotiEffLib's class orders (AffectNet): 8 classes, or 7 without contempt for the ``_7`` models.
EMOTIEFFLIB_CLASSES_8 = ("anger", "contempt", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
EMOTIEFFLIB_CLASSES_7 = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

#: The published models: input side, normalisation (mean, std), classes, multi-task (valence/arousal) or not.
EMOTIEFFLIB_MODELS = {
    "enet_b0_8_best_vgaf": dict(size=224, norm=_IMAGENET, classes=EMOTIEFFLIB_CLASSES_8, mtl=False),
    "enet_b0_8_best_afew": dict(size=224, norm=_IMAGENET, classes=EMOTIEFFLIB_CLASSES_8, mtl=False),
    "enet_b2_8": dict(size=260, norm=_IMAGENET, classes=EMOTIEFFLIB_CLASSES_8, mtl=False),
    "enet_b0_8_va_mtl": dict(size=224, norm=_IMAGENET, classes=EMOTIEFFLIB_CLASSES_8, mtl=True),
    "enet_b2_7": dict(size=260, norm=_IMAGENET, classes=EMOTIEFFLIB_CLASSES_7, mtl=False),
    "mbf_va_mtl": dict(size=112, norm=_HALF, classes=EMOTIEFFLIB_CLASSES_8, mtl=True),
    "mobilevit_va_mtl": dict(size=224, norm=_IMAGENET, classes=EMOTIEFFLIB_CLASSES_8, mtl=True),
}
_REPO_URL = "https://github.com/sb-ai-lab/EmotiEffLib/blob/main/models/affectnet_emotions/onnx/{name}.onnx?raw=true"


class EmotiEffLibModelMissing(FileNotFoundError):
    """An EmotiEffLib model file is not on this machine; the message says what to download and where to put it."""


def emotiefflib_cache_dir() -> Path:
    """EmotiEffLib's own cache folder, ``~/.emotiefflib`` (where ``emotiefflib`` stores what it downloads)."""
    return Path.home() / ".emotiefflib"


def _check_name(model_name: str) -> dict:
    if model_name not in EMOTIEFFLIB_MODELS:
        raise ValueError(f"unknown EmotiEffLib model {model_name!r}; choose one of {', '.join(EMOTIEFFLIB_MODELS)}")
    return EMOTIEFFLIB_MODELS[model_name]


def emotiefflib_model_path(model_name: str = "enet_b0_8_best_vgaf", path=None) -> Path:
    """The ONNX file of ``model_name``: ``path`` (a file, or a folder holding ``<model_name>.onnx``) or
    ``~/.emotiefflib/<model_name>.onnx``. Raises :class:`EmotiEffLibModelMissing` (never downloads)."""
    _check_name(model_name)
    fname = f"{model_name}.onnx"
    tried = []
    if path is not None:
        p = Path(path).expanduser()
        cand = p / fname if p.is_dir() else p
        if cand.is_file():
            return cand
        tried.append(str(cand))
    cand = emotiefflib_cache_dir() / fname
    if cand.is_file():
        return cand
    tried.append(str(cand))
    raise EmotiEffLibModelMissing(
        f"EmotiEffLib model {model_name!r} not found (looked at: {'; '.join(tried)}). facelab never downloads "
        f"weights: download {_REPO_URL.format(name=model_name)} (EmotiEffLib's own ONNX file) and put it at "
        f"{emotiefflib_cache_dir() / fname} (EmotiEffLib's cache folder) or pass its path as path=...")


@dataclass
class EmotiEffLibOutputs:
    """``logits`` (N, n_classes), ``probabilities`` (softmax of the logits), ``descriptor`` (N, D) penultimate
    features (the ``Gemm`` input), ``valence`` / ``arousal`` (N,) for ``*_mtl`` models, else None."""

    logits: torch.Tensor
    probabilities: torch.Tensor
    descriptor: torch.Tensor
    valence: torch.Tensor | None = None
    arousal: torch.Tensor | None = None


def _providers(device) -> list[str]:
    import onnxruntime as ort

    dev = torch.device(device if device is not None else "cpu")
    have = ort.get_available_providers()
    if dev.type == "cuda" and "CUDAExecutionProvider" in have:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class EmotiEffLibONNX:
    """An EmotiEffLib ONNX expression network run by ONNX Runtime, with logits, probabilities and descriptor.

    Parameters
    ----------
    path : str or Path
        The ``.onnx`` file (its graph must end with a ``Gemm``: the classifier whose input is the descriptor).
    model_name : str, optional
        One of :data:`EMOTIEFFLIB_MODELS` (sets input size, normalisation, classes, multi-task); or give ``size``,
        ``mean``, ``std``, ``classes`` and ``mtl`` yourself (a custom or test model).
    device : str or torch.device, optional
        Where the outputs go; ``cuda`` runs ONNX Runtime's CUDA provider when it is installed, else the CPU.
    """

    def __init__(self, path, model_name: str | None = None, *, device=None, size: int | None = None,
                 mean=None, std=None, classes=None, mtl: bool | None = None, threads: int | None = None):
        import onnx
        import onnxruntime as ort

        spec = dict(_check_name(model_name)) if model_name is not None else {}
        self.model_name = model_name
        self.size = int(size if size is not None else spec.get("size", 224))
        norm = spec.get("norm", _IMAGENET)
        self.mean = np.asarray(mean if mean is not None else norm[0], np.float32).reshape(1, 3, 1, 1)
        self.std = np.asarray(std if std is not None else norm[1], np.float32).reshape(1, 3, 1, 1)
        self.classes = tuple(classes if classes is not None else spec.get("classes", EMOTIEFFLIB_CLASSES_8))
        self.mtl = bool(mtl if mtl is not None else spec.get("mtl", False))
        path = Path(path)
        if not path.is_file():
            raise EmotiEffLibModelMissing(f"no ONNX file at {str(path)!r}")
        try:
            proto = onnx.load(str(path))
        except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
            raise ValueError(f"{path} is not a readable ONNX model ({type(e).__name__}: {e})") from None
        graph = proto.graph
        last = graph.node[-1] if len(graph.node) else None
        if last is None or last.op_type != "Gemm" or len(last.input) < 2:
            raise ValueError(f"{path}: expected an EmotiEffLib network whose last node is the classifier (Gemm), "
                             f"got {last.op_type if last is not None else 'an empty graph'}")
        self._logit_name = graph.output[0].name
        self._feat_name = last.input[0]
        if self._feat_name not in {o.name for o in graph.output}:
            graph.output.append(onnx.helper.make_tensor_value_info(self._feat_name, onnx.TensorProto.FLOAT, None))
        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = int(threads)
        self.device = torch.device(device if device is not None else "cpu")
        self.session = ort.InferenceSession(proto.SerializeToString(), opts, providers=_providers(device))
        self._input = self.session.get_inputs()[0].name
        self.path = path

    def __repr__(self) -> str:
        return (f"EmotiEffLibONNX({self.model_name or self.path.name}, size={self.size}, "
                f"classes={len(self.classes)}, mtl={self.mtl})")

    def preprocess(self, images) -> np.ndarray:
        """(N, 3, H, W) float RGB in [0, 1] (torch or numpy) or (N, H, W, 3) uint8 -> normalised (N, 3, S, S)."""
        from facelab.core.images import check_images

        if isinstance(images, np.ndarray) and images.dtype == np.uint8:
            if images.ndim != 4 or images.shape[-1] != 3:
                raise ValueError(f"uint8 images must be (N, H, W, 3) RGB, got shape {images.shape}")
            images = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
        x = check_images(torch.as_tensor(images), channels=(3,), allow_empty=True)
        x = torch.nn.functional.interpolate(x.float().cpu(), size=(self.size, self.size), mode="bilinear",
                                            align_corners=False, antialias=True)
        return ((x.numpy() - self.mean) / self.std).astype(np.float32)

    @torch.no_grad()
    def outputs(self, images, *, batch_size: int = 32) -> EmotiEffLibOutputs:
        """Logits, probabilities, descriptor (and valence/arousal for ``*_mtl``) of aligned face crops."""
        x = self.preprocess(images)
        logits, feats = [], []
        for s in range(0, len(x), batch_size):
            lo, fe = self.session.run([self._logit_name, self._feat_name], {self._input: x[s:s + batch_size]})
            logits.append(lo)
            feats.append(fe.reshape(len(fe), -1))
        lo = torch.from_numpy(np.concatenate(logits)) if logits else torch.zeros(0, len(self.classes) + 2 * self.mtl)
        fe = torch.from_numpy(np.concatenate(feats)) if feats else torch.zeros(0, 0)
        n_cls = len(self.classes)
        if lo.shape[1] != n_cls + (2 if self.mtl else 0):
            raise ValueError(f"{self.path.name}: the network gives {lo.shape[1]} outputs; expected {n_cls} classes"
                             + (" + valence + arousal" if self.mtl else ""))
        cls = lo[:, :n_cls]
        va = lo[:, n_cls:] if self.mtl else None
        d = self.device
        return EmotiEffLibOutputs(cls.to(d), torch.softmax(cls, 1).to(d), fe.to(d),
                                  None if va is None else va[:, 0].to(d), None if va is None else va[:, 1].to(d))

    def probabilities(self, images, **kw) -> torch.Tensor:
        return self.outputs(images, **kw).probabilities

    def descriptor(self, images, **kw) -> torch.Tensor:
        return self.outputs(images, **kw).descriptor


def load_emotiefflib(model_name: str = "enet_b0_8_best_vgaf", *, path=None, device=None,
                     threads: int | None = None) -> EmotiEffLibONNX:
    """An EmotiEffLib ONNX model from ``path`` or ``~/.emotiefflib`` (see :func:`emotiefflib_model_path`)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ImportError("EmotiEffLib models run through ONNX Runtime: pip install onnxruntime onnx") from None
    return EmotiEffLibONNX(emotiefflib_model_path(model_name, path), model_name, device=device, threads=threads)
