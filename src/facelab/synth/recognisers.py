"""Training the small recognisers of :mod:`facelab.models.synthetic` on the synthetic world.

The networks, their checkpoint and its verified loader live in :mod:`facelab.models.synthetic`; the faces they
learn from come from :class:`facelab.synth.FaceWorld`, which sits a layer above the models, so the training entry
point is here::

    python -m facelab.synth.recognisers          # retrains data/models/synth_facenets.safetensors (~15 min, 1 thread)

:func:`synth_facenet` is the loader that trains when the checkpoint is missing, corrupt or stale.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from facelab import checkpoints
from facelab.models.synthetic import (FACENETS_CHECKPOINT, FACENETS_COMMAND, SYNTH_SETTINGS, SynthFaceNet,
                                      load_synth_facenet, train_synth_facenets_on)

__all__ = ["TRAINING_DATA", "render_training_data", "train_synth_facenets", "synth_facenet"]

#: What the recognisers are trained and validated on (recorded in the checkpoint's log).
TRAINING_DATA = ("FaceWorld(seed=0, size=64), identities 0..n-1, nuisance='mild', random expression and makeup; "
                 "validation: identities 50000..50029")


def _render(world, ids, per_identity, g, nuisance="mild"):
    b = world.sample(identities=list(ids), per_identity=per_identity, nuisance=nuisance, expression="random",
                     makeup="random", generator=g)
    return b.images.float(), torch.tensor(b.labels["identity"].to_numpy().copy())


def render_training_data(settings: dict) -> tuple:
    """``(images, labels, val_images, val_labels)`` for ``settings`` (:data:`~facelab.models.synthetic.SYNTH_SETTINGS`
    keys): identities 0..n-1 x ``per_identity`` to train on, 30 unseen identities x 4 to set the thresholds."""
    from facelab.synth import FaceWorld

    world = FaceWorld(seed=0, size=64)
    g = torch.Generator().manual_seed(settings["seed"])
    x, y = _render(world, range(settings["n_identities"]), settings["per_identity"], g)
    xv, yv = _render(world, range(50000, 50030), 4, g)
    return x, y, xv, yv


def _train(settings: dict) -> tuple:
    state, log, header = train_synth_facenets_on(*render_training_data(settings), steps=settings["steps"],
                                                 seed=settings["seed"])
    return state, {"data": TRAINING_DATA, **log}, header


def train_synth_facenets(path=FACENETS_CHECKPOINT, *, n_identities: int = 100, per_identity: int = 6,
                         steps: int = 120, seed: int = 0, threads: int | None = None) -> dict:
    """Train both architectures on the same synthetic identities and save them as one :mod:`facelab.checkpoints`
    checkpoint (safetensors + JSON sidecar, both written atomically); returns the log with the settings.

    The threshold stored with each model is the cosine similarity at FAR 1 % on 30 held-out identities
    (``facelab.metrics.verification.threshold_at_far``); the log records their verification AUC and EER.
    """
    if threads:
        torch.set_num_threads(threads)
    settings = {"n_identities": n_identities, "per_identity": per_identity, "steps": steps, "seed": seed}
    state, log, header = _train(settings)
    checkpoints.save(path, state, settings=settings, log=log, restore=FACENETS_COMMAND, header=header)
    return {**settings, **log}


def synth_facenet(name: str = "synth-plain", *, device=None, allow_train: bool = True) -> SynthFaceNet:
    """A recogniser of :mod:`facelab.models.synthetic` from the verified checkpoint; when it is missing, corrupt or
    was trained with other settings than :data:`~facelab.models.synthetic.SYNTH_SETTINGS`, both models are trained
    again on the synthetic world (with progress) and saved, or with ``allow_train=False``
    :class:`facelab.checkpoints.CheckpointError` names the file and ``python -m facelab.synth.recognisers``."""
    return load_synth_facenet(name, device=device, training_data=render_training_data if allow_train else None)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Train the synthetic face recognisers of the privacy chapters.")
    ap.add_argument("--steps", type=int, default=SYNTH_SETTINGS["steps"])
    ap.add_argument("--n-identities", type=int, default=SYNTH_SETTINGS["n_identities"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(FACENETS_CHECKPOINT))
    a = ap.parse_args()
    out = train_synth_facenets(Path(a.out), n_identities=a.n_identities, steps=a.steps, threads=a.threads)
    print(json.dumps({k: ({m: {kk: vv for kk, vv in d.items() if kk != "loss_curve"} for m, d in v.items()}
                          if k == "models" else v) for k, v in out.items()}, indent=1))
