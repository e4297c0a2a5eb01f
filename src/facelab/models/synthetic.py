"""Small face recognisers that the project trains itself on synthetic identities.

Transfer attacks need several *different* recognisers: an attack crafted on some models is tested on one it never
saw. Besides the two real pretrained models (dlib's ResNet-29 and SFace, :mod:`facelab.models`), the privacy
chapters use two small networks of different architectures trained on :class:`facelab.synth.FaceWorld`
identities 0..n-1 (the attacked identities come from 100000 on, never seen in training):

* ``"synth-plain"``: a plain VGG-style CNN (5 conv blocks, batch norm, max-pooling), 64-d embedding;
* ``"synth-residual"``: a small ResNet (stride-2 stem, three stride-2 residual stages, PReLU), 96-d embedding.

Both take the 64x64 RGB faces as the synthetic world renders them (frontal, centred: no alignment step), downsampled
inside the model to 32x32 (cheap to train on a shared CPU), and are trained
with a normalised-softmax / additive-cosine-margin loss (CosFace, Wang et al. 2018), so cosine similarity of their
embeddings is the matching score. Weights are cached in one checkpoint, ``data/models/synth_facenets.safetensors``
(:mod:`facelab.checkpoints`); :func:`load_synth_facenet` verifies and loads it. The faces they are trained on come
from the synthetic world, a layer above this one, so training lives in :mod:`facelab.synth.recognisers`
(``python -m facelab.synth.recognisers``; :func:`facelab.synth.recognisers.synth_facenet` trains when the file is
missing, corrupt or stale).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from facelab import DATA_DIR, checkpoints
from facelab.models.base import Embedder

__all__ = ["SynthFaceNet", "SYNTH_FACENETS", "SYNTH_SETTINGS", "FACENETS_CHECKPOINT", "FACENETS_COMMAND",
           "train_synth_facenet", "train_synth_facenets_on", "load_synth_facenet"]

SYNTH_FACENETS = ("synth-plain", "synth-residual")
FACENETS_CHECKPOINT = DATA_DIR / "models" / "synth_facenets.safetensors"
#: The command that recreates :data:`FACENETS_CHECKPOINT` (named in every error about it).
FACENETS_COMMAND = "python -m facelab.synth.recognisers"
#: Settings of the cached models (:func:`facelab.synth.recognisers.train_synth_facenets`' defaults).
SYNTH_SETTINGS = {"n_identities": 100, "per_identity": 6, "steps": 120, "seed": 0}


def _plain(dim: int) -> nn.Sequential:
    layers, cin = [], 3
    for cout in (24, 48, 64, 128):
        layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                   nn.MaxPool2d(2)]
        cin = cout
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(128 * 2 * 2, dim))


class _Res(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout),
                                  nn.PReLU(cout), nn.Conv2d(cout, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return self.body(x) + self.skip(x)


def _residual(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.PReLU(32),
                         _Res(32, 48), _Res(48, 64), _Res(64, 128),
                         nn.BatchNorm2d(128), nn.Flatten(), nn.Dropout(0.1), nn.Linear(128 * 4 * 4, dim),
                         nn.BatchNorm1d(dim))


class SynthFaceNet(Embedder):
    """A small face embedder for 64x64 synthetic faces (cosine similarity; see the module docstring).

    ``threshold`` is the cosine similarity at FAR 1 % measured on held-out identities after training.
    """

    distance = "cosine"
    input_size = 32
    template = "synth-64"
    differentiable = True

    def __init__(self, arch: str = "synth-plain", threshold: float = 0.5):
        super().__init__()
        if arch not in SYNTH_FACENETS:
            raise ValueError(f"unknown architecture {arch!r}; choose one of {SYNTH_FACENETS}")
        self.name = arch
        self.embedding_size = 64 if arch == "synth-plain" else 96
        self.net = _plain(self.embedding_size) if arch == "synth-plain" else _residual(self.embedding_size)
        self.threshold = float(threshold)
        self.register_buffer("mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.input_size)
        return self.net((x - self.mean) / 0.25)


def train_synth_facenet(arch: str, images: torch.Tensor, labels: torch.Tensor, *, steps: int = 120,
                        batch_size: int = 48, lr: float = 3e-3, margin: float = 0.25, scale: float = 16.0,
                        seed: int = 0, log_every: int = 25) -> tuple[SynthFaceNet, list]:
    """Train one :class:`SynthFaceNet` with a CosFace loss on ``images`` (N, 3, 64, 64) and integer ``labels``."""
    torch.manual_seed(seed)
    classes, y = torch.unique(labels, return_inverse=True)
    net = SynthFaceNet(arch)
    head = nn.Parameter(torch.randn(len(classes), net.embedding_size) * 0.01)
    opt = torch.optim.AdamW(list(net.parameters()) + [head], lr=lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    g = torch.Generator().manual_seed(seed)
    curve = []
    net.train()
    for step in range(steps):
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=g)
        x = images[idx]
        # light augmentation: brightness/contrast jitter and small shifts (robust, not adversarially trained)
        x = (x - 0.5) * (1 + 0.2 * (torch.rand(batch_size, 1, 1, 1, generator=g) - 0.5)) + 0.5 \
            + 0.1 * (torch.rand(batch_size, 1, 1, 1, generator=g) - 0.5)
        dx, dy = torch.randint(-2, 3, (2,), generator=g).tolist()
        x = torch.roll(x, (dy, dx), (2, 3)).clamp(0, 1)
        emb = F.normalize(net(x), dim=1)
        cos = emb @ F.normalize(head, dim=1).T
        logits = scale * (cos - margin * F.one_hot(y[idx], len(classes)))
        loss = F.cross_entropy(logits, y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            curve.append({"step": step + 1, "loss": round(float(loss.detach()), 4)})
            print(f"{arch} step {step + 1} loss {float(loss.detach()):.3f}", flush=True)
    net.eval().requires_grad_(False)
    return net, curve


def train_synth_facenets_on(images: torch.Tensor, labels: torch.Tensor, val_images: torch.Tensor,
                            val_labels: torch.Tensor, *, steps: int = 120, seed: int = 0) -> tuple[dict, dict, dict]:
    """Train both architectures on the same faces and measure each one's threshold at FAR 1 % (cosine similarity)
    on the validation identities; returns ``(state_dict, log, header)`` as :func:`facelab.checkpoints.save` takes
    them (keys ``"<arch>.<param>"``; the header holds each model's threshold). The synthetic world renders the faces
    (:mod:`facelab.synth.recognisers`)."""
    from facelab.metrics.verification import roc_auc, eer, threshold_at_far

    t0 = time.perf_counter()
    state, log = {}, {"models": {}}
    for k, arch in enumerate(SYNTH_FACENETS):
        t1 = time.perf_counter()
        net, curve = train_synth_facenet(arch, images, labels, steps=steps, seed=seed + k)
        with torch.no_grad():
            e = F.normalize(net(val_images), dim=1)
        s = (e @ e.T).numpy()
        iu = torch.triu_indices(len(val_labels), len(val_labels), 1).numpy()
        lab = (val_labels[iu[0]] == val_labels[iu[1]]).numpy()
        sc = s[iu[0], iu[1]]
        thr = float(threshold_at_far(lab, sc, 0.01))
        net.threshold = thr
        log["models"][arch] = {"threshold_far_1pct": thr, "val_auc": roc_auc(lab, sc), "val_eer": eer(lab, sc)[0],
                               "seconds": round(time.perf_counter() - t1, 1), "loss_curve": curve,
                               "n_parameters": sum(p.numel() for p in net.parameters())}
        for name, v in net.state_dict().items():
            state[f"{arch}.{name}"] = v.detach().float().contiguous()
    log["wall_seconds"] = round(time.perf_counter() - t0, 1)
    header = {a: json.dumps({"threshold": log["models"][a]["threshold_far_1pct"]}) for a in SYNTH_FACENETS}
    return state, log, header


def load_synth_facenet(name: str = "synth-plain", path=None, *, device=None, training_data=None,
                       settings: dict | None = None) -> SynthFaceNet:
    """A trained :class:`SynthFaceNet` from the cached checkpoint (default :data:`FACENETS_CHECKPOINT`).

    The file is verified (size and sha256 against its sidecar) before it is read. When it is missing, corrupt or was
    trained with other ``settings`` (default :data:`SYNTH_SETTINGS`):

    * with ``training_data`` (``settings -> (images, labels, val_images, val_labels)``; the synthetic world's is
      :func:`facelab.synth.recognisers.render_training_data`), both models are trained again and saved;
    * without it, :class:`facelab.checkpoints.CheckpointError` (:class:`~facelab.checkpoints.CheckpointMissingError`,
      a FileNotFoundError, when missing) naming the file and ``python -m facelab.synth.recognisers``.

    :func:`facelab.synth.recognisers.synth_facenet` is the variant that trains from the synthetic world.
    """
    if name not in SYNTH_FACENETS:
        raise ValueError(f"unknown synthetic face model {name!r}; choose one of {SYNTH_FACENETS}")
    path = Path(path) if path is not None else FACENETS_CHECKPOINT

    def train(s):
        x, y, xv, yv = training_data(s)
        return train_synth_facenets_on(x, y, xv, yv, steps=s["steps"], seed=s["seed"])

    state, meta = checkpoints.load_or_train(path, train, settings=SYNTH_SETTINGS if settings is None else settings,
                                            restore=FACENETS_COMMAND, allow_train=training_data is not None)
    if name not in meta["header"]:
        raise checkpoints.CheckpointError(f"{path} holds no {name!r} model (header keys {sorted(meta['header'])}); "
                                          f"retrain with `{FACENETS_COMMAND}`")
    net = SynthFaceNet(name, threshold=json.loads(meta["header"][name])["threshold"])
    net.load_state_dict({k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")})
    net.eval().requires_grad_(False)
    return net.to(device) if device is not None else net
