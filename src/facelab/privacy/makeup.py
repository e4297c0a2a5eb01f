"""Makeup attribute classifier: does an edited face show the makeup its prompt asked for (prompt adherence)?

A small CNN with one head per makeup kind of the synthetic world (``lipstick``, ``eyeshadow``, ``eyeliner``,
``blush``), each a softmax over ``"none"`` plus the kind's colours (:data:`facelab.synth.world.MAKEUP_COLOURS`),
trained on :class:`facelab.synth.FaceWorld` faces with ``makeup="random"`` and their labels. Prompt adherence of a
batch of edits for ``("lipstick", "red")`` is the fraction of faces whose lipstick head predicts ``"red"``
(:func:`prompt_adherence`); the same number on the unedited faces is its floor.

The trained weights are cached in ``data/models/makeup_classifier.safetensors`` with a JSON sidecar next to them
(:mod:`facelab.checkpoints`); :func:`makeup_classifier` verifies and loads them, and trains and saves them when the
file is missing, corrupt or stale; ``python -m facelab.privacy.makeup`` retrains.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from facelab import DATA_DIR, checkpoints

__all__ = ["MakeupClassifier", "makeup_classes", "train_makeup_classifier", "prompt_adherence", "parse_makeup",
           "MAKEUP_CHECKPOINT", "MAKEUP_COMMAND", "makeup_settings", "save_makeup_classifier", "load_makeup_classifier",
           "makeup_classifier"]

#: Cached weights of the classifier (safetensors) and its training log (same name, .json).
MAKEUP_CHECKPOINT = DATA_DIR / "models" / "makeup_classifier.safetensors"
#: The command that recreates :data:`MAKEUP_CHECKPOINT` (named in every error about it).
MAKEUP_COMMAND = "python -m facelab.privacy.makeup"


def makeup_classes() -> dict:
    """Kind -> class names (``"none"`` first, then the colours of the synthetic world)."""
    from facelab.synth.world import MAKEUP_COLOURS

    return {kind: ["none", *colours] for kind, colours in MAKEUP_COLOURS.items()}


def parse_makeup(phrase: str) -> tuple[str, str]:
    """``"red lipstick"`` -> ``("lipstick", "red")`` (kind, colour); ValueError when the phrase names neither."""
    classes = makeup_classes()
    words = phrase.lower().replace(",", " ").split()
    for kind, names in classes.items():
        if kind in words:
            k = words.index(kind)
            for n in sorted(names[1:], key=len, reverse=True):     # "dark red" before "red"
                nw = n.split()
                if words[max(0, k - len(nw)):k] == nw:
                    return kind, n
            raise ValueError(f"{phrase!r} names {kind} but none of its colours {names[1:]}")
    raise ValueError(f"{phrase!r} names no makeup kind of {list(classes)}")


class MakeupClassifier(nn.Module):
    """Four-headed makeup classifier for (N, 3, S, S) faces in [0, 1] (resized to 64 px)."""

    input_size = 64

    def __init__(self):
        super().__init__()
        self.classes = makeup_classes()
        layers, cin = [], 3
        for cout in (16, 32, 48, 64):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            cin = cout
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.heads = nn.ModuleDict({k: nn.Linear(64 * 4 * 4, len(v)) for k, v in self.classes.items()})

    def forward(self, x: torch.Tensor) -> dict:
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.input_size)
        h = self.features((x - 0.5) / 0.25)
        return {k: head(h) for k, head in self.heads.items()}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> dict:
        """Kind -> list of predicted class names."""
        self.eval()
        out = self(x.to(next(self.parameters()).device))
        return {k: [self.classes[k][j] for j in v.argmax(1).tolist()] for k, v in out.items()}


def _targets(labels, classes) -> dict:
    return {k: torch.as_tensor([names.index(c) for c in labels[k]]) for k, names in classes.items()}


def train_makeup_classifier(n_images: int = 2400, *, steps: int = 1200, batch_size: int = 48, lr: float = 3e-3,
                            size: int = 64, seed: int = 0, identity_offset: int = 300000, nuisance: str = "mild",
                            world=None) -> tuple[MakeupClassifier, dict]:
    """Train :class:`MakeupClassifier` on freshly rendered synthetic faces with random makeup.

    Identities start at ``identity_offset`` (disjoint from the faces the privacy chapters protect). Returns the
    classifier (eval mode) and a log with the training time and the accuracy of each head on 300 held-out faces.
    """
    from facelab.synth import FaceWorld

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    world = world or FaceWorld(seed=0, size=size)
    g = torch.Generator().manual_seed(seed)
    per = 4
    b = world.sample(n_identities=max(1, n_images // per), per_identity=per, identity_offset=identity_offset,
                     nuisance=nuisance, makeup="random", expression="random", generator=g)
    v = world.sample(n_identities=75, per_identity=4, identity_offset=identity_offset + 50000, nuisance=nuisance,
                     makeup="random", expression="random", generator=g)
    net = MakeupClassifier()
    y, yv = _targets(b.labels, net.classes), _targets(v.labels, net.classes)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, b.images.shape[0], (batch_size,), generator=g)
        out = net(b.images[idx])
        loss = sum(F.cross_entropy(out[k], y[k][idx]) for k in out)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval().requires_grad_(False)
    with torch.no_grad():
        out = net(v.images)
    acc = {k: float((out[k].argmax(1) == yv[k]).float().mean()) for k in out}
    return net, {"held-out accuracy": acc, "n_images": int(b.images.shape[0]), "steps": steps,
                 "seconds": round(time.perf_counter() - t0, 1)}


def prompt_adherence(classifier: MakeupClassifier, images: torch.Tensor, phrase: str) -> float:
    """Fraction of ``images`` whose predicted makeup matches ``phrase`` (e.g. ``"red lipstick"``)."""
    kind, colour = parse_makeup(phrase)
    pred = classifier.predict(images)[kind]
    return sum(p == colour for p in pred) / max(1, len(pred))


def makeup_settings() -> dict:
    """The settings of the cached classifier: :func:`train_makeup_classifier`'s defaults and the class names it
    was trained for (a change of the synthetic world's makeup colours makes the cache stale)."""
    return {"n_images": 2400, "steps": 1200, "batch_size": 48, "lr": 3e-3, "size": 64, "seed": 0,
            "identity_offset": 300000, "nuisance": "mild", "classes": makeup_classes()}


def save_makeup_classifier(net: MakeupClassifier, log: dict, path=MAKEUP_CHECKPOINT, *,
                           settings: dict | None = None) -> str:
    """Write the weights and ``log`` as a :mod:`facelab.checkpoints` checkpoint (safetensors with the class names
    in the header + JSON sidecar, both atomic); ``settings`` default to :func:`makeup_settings` with the network's
    classes. Returns the sha256."""
    settings = {**makeup_settings(), "classes": net.classes} if settings is None else settings
    side = checkpoints.save(path, net.state_dict(), settings=settings,
                            log={k: v for k, v in log.items() if k not in ("sha256", "file", "settings")},
                            restore=MAKEUP_COMMAND, header={"classes": json.dumps(net.classes)})
    return side["sha256"]


def load_makeup_classifier(path=MAKEUP_CHECKPOINT, *, train_if_missing: bool = True, device="cpu",
                           settings: dict | None = None) -> tuple[MakeupClassifier, dict]:
    """The cached classifier and its log (training log plus ``settings``, ``sha256``, ``file``).

    The file is verified (size and sha256 against its sidecar) before it is read. When it is missing, corrupt or
    was trained with other ``settings`` (default :func:`makeup_settings`, which include the world's makeup classes)
    it is trained again and saved if ``train_if_missing`` (a few minutes on a CPU), else
    :class:`facelab.checkpoints.CheckpointError` (:class:`~facelab.checkpoints.CheckpointMissingError`, a
    FileNotFoundError, when missing) naming the file and ``python -m facelab.privacy.makeup``.
    """
    path = Path(path)
    settings = makeup_settings() if settings is None else settings

    def train(s):
        kw = {k: v for k, v in s.items() if k != "classes"}
        net, log = train_makeup_classifier(**kw)
        return net.state_dict(), log, {"classes": json.dumps(net.classes)}

    state, meta = checkpoints.load_or_train(path, train, settings=settings, restore=MAKEUP_COMMAND,
                                            allow_train=train_if_missing)
    net = MakeupClassifier()
    saved = json.loads(meta["header"].get("classes", "null"))
    if saved != net.classes:
        raise ValueError(f"{path} was trained for makeup classes {saved}, but the synthetic world now has "
                         f"{net.classes}; retrain with `{MAKEUP_COMMAND}`")
    net.load_state_dict(state)
    return net.eval().requires_grad_(False).to(device), checkpoints.flat_log(meta)


def makeup_classifier(device=None, *, allow_train: bool = True) -> tuple[MakeupClassifier, dict]:
    """The chapter's makeup classifier, ``(classifier, log)``: :data:`MAKEUP_CHECKPOINT` verified and loaded, or
    trained with :func:`makeup_settings` when it is missing, corrupt or stale (``allow_train=False`` raises
    instead); see :func:`load_makeup_classifier`."""
    return load_makeup_classifier(MAKEUP_CHECKPOINT, train_if_missing=allow_train, device=device or "cpu")


if __name__ == "__main__":  # python -m facelab.privacy.makeup [out.safetensors]
    import sys

    torch.set_num_threads(1)
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else MAKEUP_CHECKPOINT
    net, log = train_makeup_classifier()
    print(json.dumps({**log, "sha256": save_makeup_classifier(net, log, out)}, indent=1))
