"""Makeup attribute classifier: does an edited face show the makeup its prompt asked for (prompt adherence)?

A small CNN with one head per makeup kind of the synthetic world (``lipstick``, ``eyeshadow``, ``eyeliner``,
``blush``), each a softmax over ``"none"`` plus the kind's colours (:data:`facelab.synth.world.MAKEUP_COLOURS`),
trained on :class:`facelab.synth.FaceWorld` faces with ``makeup="random"`` and their labels. Prompt adherence of a
batch of edits for ``("lipstick", "red")`` is the fraction of faces whose lipstick head predicts ``"red"``
(:func:`prompt_adherence`); the same number on the unedited faces is its floor.

The trained weights are cached in ``data/models/makeup_classifier.safetensors`` with a JSON log next to them
(:func:`load_makeup_classifier` trains and saves them when the file is missing; ``python -m facelab.privacy.makeup``
retrains).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from facelab import DATA_DIR

__all__ = ["MakeupClassifier", "makeup_classes", "train_makeup_classifier", "prompt_adherence", "parse_makeup",
           "MAKEUP_CHECKPOINT", "save_makeup_classifier", "load_makeup_classifier"]

#: Cached weights of the classifier (safetensors) and its training log (same name, .json).
MAKEUP_CHECKPOINT = DATA_DIR / "models" / "makeup_classifier.safetensors"


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


def save_makeup_classifier(net: MakeupClassifier, log: dict, path=MAKEUP_CHECKPOINT) -> str:
    """Write the weights (safetensors, written to a temporary name then moved) and ``log`` + sha256 as JSON next to
    them; returns the sha256."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}, str(tmp),
              metadata={"classes": json.dumps(net.classes)})
    tmp.replace(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_suffix(".json").write_text(json.dumps({**log, "sha256": digest, "file": path.name}, indent=1))
    return digest


def load_makeup_classifier(path=MAKEUP_CHECKPOINT, *, train_if_missing: bool = True, device="cpu"
                           ) -> tuple[MakeupClassifier, dict]:
    """The cached classifier and its log; trained (:func:`train_makeup_classifier` defaults) and saved when ``path``
    does not exist and ``train_if_missing``, else FileNotFoundError."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        if not train_if_missing:
            raise FileNotFoundError(f"no makeup classifier at {path}; train one with "
                                    f"`python -m facelab.privacy.makeup` (about a minute on a CPU)")
        net, log = train_makeup_classifier()
        save_makeup_classifier(net, log, path)
        return net.to(device), log
    net = MakeupClassifier()
    with safe_open(str(path), "pt") as f:
        saved = json.loads((f.metadata() or {}).get("classes", "null"))
    if saved != net.classes:
        raise ValueError(f"{path} was trained for makeup classes {saved}, but the synthetic world now has "
                         f"{net.classes}; retrain with `python -m facelab.privacy.makeup`")
    net.load_state_dict(load_file(str(path)))
    log_path = path.with_suffix(".json")
    log = json.loads(log_path.read_text()) if log_path.is_file() else {}
    return net.eval().requires_grad_(False).to(device), log


if __name__ == "__main__":  # python -m facelab.privacy.makeup [out.safetensors]
    import sys

    torch.set_num_threads(1)
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else MAKEUP_CHECKPOINT
    net, log = train_makeup_classifier()
    print(json.dumps({**log, "sha256": save_makeup_classifier(net, log, out)}, indent=1))
