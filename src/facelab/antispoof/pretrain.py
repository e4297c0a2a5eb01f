"""The chapter's small CLIP, pretrained once on thousands of synthetic image-caption pairs and cached.

The chapter cannot afford a long contrastive pretraining, so it loads the tower from
``data/models/antispoof_clip.safetensors`` (with a JSON log next to it: settings, loss/accuracy curve, held-out
retrieval accuracy, seconds, sha256; see :mod:`facelab.checkpoints`). ``python -m facelab.antispoof.pretrain``
retrains it with a fixed seed; :func:`pretrained_clip` (what the chapter calls) verifies and loads it, and pretrains
and saves it when the file is missing, corrupt or was trained with other settings.

What it sees is what :func:`~facelab.antispoof.clip.pretrain_clip` describes: live faces of the synthetic world
(identities from ``identity_offset`` on, far from the attack set's) under a generic photographic condition, with
captions built from the world's labels (:func:`face_captions`: expression, glasses, beard, head pose, lighting,
capture quality, occlusion). No attack renderer runs and no attack word appears in a caption.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from facelab import DATA_DIR, checkpoints

__all__ = ["CLIP_CHECKPOINT", "PRETRAIN_SETTINGS", "PRETRAIN_COMMAND", "face_captions", "pretrain_tower", "save_clip",
           "load_pretrained_clip", "pretrained_clip", "retrieval_accuracy"]

#: Cached weights of the pretrained CLIP (image tower, text projection, temperature) and its log (.json).
CLIP_CHECKPOINT = DATA_DIR / "models" / "antispoof_clip.safetensors"

#: Settings of the cached pretraining (``python -m facelab.antispoof.pretrain``).
PRETRAIN_SETTINGS = {
    "image_size": 48, "patch_size": 8, "width": 48, "layers": 4, "heads": 4, "text": "minilm",
    "world_seed": 0, "world_size": 64, "n_identities": 2500, "per_identity": 4, "identity_offset": 100_000,
    "held_out_identities": 128, "steps": 3000, "batch_size": 256, "lr": 2e-3, "weight_decay": 0.05, "seed": 0,
}

#: The command that recreates :data:`CLIP_CHECKPOINT` (named in every error about it).
PRETRAIN_COMMAND = "python -m facelab.antispoof.pretrain"

_ARCH = ("image_size", "patch_size", "width", "layers", "heads", "text")
_ATTACK_WORDS = ("print", "replay", "mask", "adversarial", "swap", "morph", "spoof", "fake", "attack")


def face_captions(labels: pd.DataFrame) -> list[str]:
    """Captions from the synthetic world's labels, e.g. ``"a face of a person looking happy, with glasses, turned
    left, lit from the right, slightly out of focus"`` (absent columns are skipped). Hair colour and makeup are left
    out on purpose: coarse captions repeat, so the frozen text tower encodes few distinct strings."""
    out = []
    for _, r in labels.iterrows():
        emo = str(r.get("emotion", "neutral"))
        who = ("a face of a person" if emo in ("neutral", "nan") else
               "a face of a person showing contempt" if emo == "contempt" else f"a face of a person looking {emo}")
        parts = []
        extras = [w for w, on in (("glasses", bool(r.get("glasses", False))),
                                  ("a beard", str(r.get("beard", "none")) not in ("none", "nan", "False"))) if on]
        if extras:
            parts.append("with " + " and ".join(extras))
        yaw = float(r.get("yaw", 0.0))
        if abs(yaw) > 12:
            parts.append("turned left" if yaw < 0 else "turned right")
        az = float(r.get("light_azimuth", 0.0))
        if abs(az) > 25:
            parts.append("lit from the left" if az < 0 else "lit from the right")
        li = float(r.get("light_intensity", 1.0))
        if li < 0.8:
            parts.append("in dim light")
        elif li > 1.2:
            parts.append("in bright light")
        if float(r.get("blur", 0.0)) > 0.5:
            parts.append("slightly out of focus")
        if float(r.get("noise", 0.0)) > 0.02:
            parts.append("with sensor noise")
        if float(r.get("jpeg_quality", 100.0)) < 60:
            parts.append("with compression artefacts")
        if float(r.get("resolution", 1.0)) < 0.6:
            parts.append("at low resolution")
        occ = str(r.get("occlusion", "none"))
        if occ not in ("none", "nan"):
            parts.append(f"partly hidden by a {occ.replace('_', ' ')}")
        out.append(", ".join([who, *parts]))
    return out


def _faces(world, n_identities, per_identity, identity_offset, size, generator):
    from facelab.antispoof.data import resize_images

    b = world.sample(n_identities=n_identities, per_identity=per_identity, identity_offset=identity_offset,
                     nuisance="full", expression="random", makeup="random", generator=generator)
    return resize_images(b.images.detach().float().cpu(), size), face_captions(b.labels)


@torch.no_grad()
def retrieval_accuracy(clip, images: torch.Tensor, captions, seed: int = 0) -> float:
    """Fraction of held-out faces (each under a random generic condition) whose own condition + caption is the most
    similar among the distinct captions of the set."""
    from facelab.antispoof.clip import CORRUPTIONS, corrupt, corruption_captions

    g = torch.Generator().manual_seed(seed)
    kinds = list(CORRUPTIONS)
    cond = torch.randint(0, len(kinds), (images.shape[0],), generator=g)
    x = images.clone()
    for k in cond.unique().tolist():
        sel = cond == k
        x[sel] = corrupt(x[sel], kinds[k], g)
    caps = corruption_captions([kinds[k] for k in cond.tolist()], list(captions))
    uniq, inv = np.unique(np.asarray(caps, dtype=object), return_inverse=True)
    clip.eval()
    img = torch.cat([clip.encode_image(x[i:i + 256]) for i in range(0, len(x), 256)])
    txt = clip.encode_text(list(uniq))
    return float(((img @ txt.t()).argmax(1) == torch.as_tensor(inv)).float().mean())


def pretrain_tower(progress=None, **overrides) -> tuple:
    """Pretrain the chapter's CLIP with :data:`PRETRAIN_SETTINGS` (overridable); returns ``(clip, log)``.

    ``log``: the settings, ``n_pairs``, ``distinct_captions``, ``curve`` (mean loss and batch accuracy per 50
    steps), ``final_batch_accuracy`` (last 100 steps), ``held_out_accuracy`` (:func:`retrieval_accuracy` on
    identities not trained on) and ``seconds``.
    """
    from facelab.antispoof.clip import build_clip, pretrain_clip
    from facelab.synth import FaceWorld

    s = {**PRETRAIN_SETTINGS, **overrides}
    unknown = set(overrides) - set(PRETRAIN_SETTINGS)
    if unknown:
        raise ValueError(f"unknown pretraining setting(s) {sorted(unknown)}; expected some of {list(PRETRAIN_SETTINGS)}")
    t0 = time.perf_counter()
    torch.manual_seed(s["seed"])
    world = FaceWorld(seed=s["world_seed"], size=s["world_size"], device="cpu")
    g = torch.Generator().manual_seed(s["seed"])
    images, captions = _faces(world, s["n_identities"], s["per_identity"], s["identity_offset"], s["image_size"], g)
    held_images, held_caps = _faces(world, s["held_out_identities"], 4,
                                    s["identity_offset"] + s["n_identities"] + 10_000, s["image_size"], g)
    bad = [c for c in set(captions) if any(w in c for w in _ATTACK_WORDS)]
    if bad:
        raise RuntimeError(f"pretraining captions must not name attacks, got {bad[:3]}")
    clip = build_clip(image_size=s["image_size"], patch_size=s["patch_size"], width=s["width"],
                      layers=s["layers"], heads=s["heads"], text=s["text"])
    hist = pretrain_clip(clip, images, captions, steps=s["steps"], batch_size=s["batch_size"], lr=s["lr"],
                         weight_decay=s["weight_decay"], generator=g, progress=progress)
    block = hist.assign(block=hist["step"] // 50).groupby("block")
    curve = {"step": [int(v) for v in block["step"].max()], "loss": [round(float(v), 4) for v in block["loss"].mean()],
             "accuracy": [round(float(v), 4) for v in block["accuracy"].mean()]}
    log = {"settings": s, "n_pairs": int(images.shape[0]), "distinct_captions": len(set(captions)),
           "curve": curve, "final_batch_accuracy": round(float(hist["accuracy"].tail(100).mean()), 4),
           "held_out_accuracy": round(retrieval_accuracy(clip, held_images, held_caps), 4),
           "held_out_pairs": int(held_images.shape[0]), "threads": torch.get_num_threads(),
           "seconds": round(time.perf_counter() - t0, 1)}
    return clip.eval(), log


def _arch(clip) -> dict:
    from facelab.antispoof.text import MiniLMTextTower

    cfg = clip.visual.config
    if cfg.embed_dim != cfg.width:
        raise ValueError("save_clip stores build_clip() towers, whose embed_dim equals width")
    return {"image_size": cfg.image_size, "patch_size": cfg.patch_size, "width": cfg.width, "layers": cfg.layers,
            "heads": cfg.heads, "text": "minilm" if isinstance(clip.text, MiniLMTextTower) else "bow"}


def save_clip(clip, log: dict, path=CLIP_CHECKPOINT) -> str:
    """Write the trainable weights (image tower, text projection, temperature; not the frozen MiniLM) as a
    :mod:`facelab.checkpoints` checkpoint (safetensors with the architecture in the header + JSON sidecar with
    ``log["settings"]`` as the settings and the rest of ``log`` as the training log, both written atomically);
    returns the sha256."""
    arch = _arch(clip)
    rest = {k: v for k, v in log.items() if k not in ("settings", "sha256", "file")}
    side = checkpoints.save(path, clip.state_dict(), settings=log.get("settings", arch), log={**rest, "arch": arch},
                            restore=PRETRAIN_COMMAND, header={"arch": json.dumps(arch)})
    return side["sha256"]


def load_pretrained_clip(path=CLIP_CHECKPOINT, *, train_if_missing: bool = True, device="cpu",
                         progress=None, settings: dict | None = None) -> tuple:
    """The cached pretrained CLIP and its log, ``(clip, log)`` (log: the training log plus ``settings``,
    ``sha256``, ``file``).

    The file is verified (size and sha256 against its JSON sidecar) before it is read. When it is missing, corrupt
    or was pretrained with other ``settings`` (default :data:`PRETRAIN_SETTINGS`), it is pretrained again and saved
    if ``train_if_missing`` (about 15 minutes on one CPU thread), else :class:`facelab.checkpoints.CheckpointError`
    (:class:`~facelab.checkpoints.CheckpointMissingError`, a FileNotFoundError, when missing) naming the file and
    ``python -m facelab.antispoof.pretrain``.
    """
    from facelab.antispoof.clip import build_clip

    path = Path(path)

    def train(s):
        clip, log = pretrain_tower(progress=progress, **s)
        return clip.state_dict(), {**{k: v for k, v in log.items() if k != "settings"}, "arch": _arch(clip)}, \
            {"arch": json.dumps(_arch(clip))}

    state, meta = checkpoints.load_or_train(path, train, settings=PRETRAIN_SETTINGS if settings is None else settings,
                                            restore=PRETRAIN_COMMAND, allow_train=train_if_missing)
    arch = json.loads(meta["header"].get("arch", "null") or "null")
    if not isinstance(arch, dict) or set(arch) != set(_ARCH):
        raise ValueError(f"{path} has no valid CLIP architecture metadata; retrain with `{PRETRAIN_COMMAND}`")
    clip = build_clip(**arch)
    clip.load_state_dict(state)
    return clip.eval().to(device), checkpoints.flat_log(meta)


def pretrained_clip(device=None, *, progress=None, allow_train: bool = True) -> tuple:
    """The chapter's pretrained CLIP, ``(clip, log)``: :data:`CLIP_CHECKPOINT` verified and loaded, or pretrained
    with :data:`PRETRAIN_SETTINGS` (with ``progress``) when it is missing, corrupt or stale (see
    :func:`load_pretrained_clip`; ``allow_train=False`` raises instead)."""
    return load_pretrained_clip(CLIP_CHECKPOINT, train_if_missing=allow_train, device=device or "cpu",
                                progress=progress)


if __name__ == "__main__":  # python -m facelab.antispoof.pretrain [out.safetensors] [steps]
    import sys

    torch.set_num_threads(1)
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else CLIP_CHECKPOINT
    kw = {"steps": int(sys.argv[2])} if len(sys.argv) > 2 else {}
    clip, log = pretrain_tower(**kw)
    digest = save_clip(clip, log, out)
    print(json.dumps({k: v for k, v in log.items() if k != "curve"} | {"sha256": digest}, indent=1))
