"""How distinct the photo-style world's people are to real recognisers, and what makes them so (issue 26).

FAR/FRR of dlib's ResNet (and SFace with ``--sface``) at their published thresholds on ``FaceWorld(style="photo")``
(``n`` identities x 4 images, mild nuisance, ground-truth alignment, identity bootstrap), for the current style and
for ablations that give every identity the same value of one factor or switch one of the style's parts off:

* ``current``: the photo style as it is;
* ``before``: without the head modes (:mod:`facelab.synth.head`), at full relief and without the separate upper skin
  (the photo style of commit 7d66686);
* ``no head modes`` / ``full relief`` / ``one skin``: one of those three parts switched off;
* ``same inner landmarks`` / ``same jaw`` / ``same brows``: landmark groups shared by everybody (identity 0's);
* ``same hair`` / ``same face columns`` / ``same tone``: those identity fields shared by everybody.

    .venv/bin/python benchmarks/bench_synth_realism.py [--seeds 101 202] [--n 100] [--sface] [--only current before]

Prints one line per (seed, setting) and writes ``_build/benchmarks/synth_realism.json``. The world's rendering is
restored after each setting (the ablations patch module attributes in this process only).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from pathlib import Path

import torch

from facelab.models import load_embedder
from facelab.studies import synthetic_faces as study
from facelab.synth import FaceWorld
from facelab.synth import appearance as A
from facelab.synth import head as Hd
from facelab.synth import identity as Id
from facelab.synth import render as R
from facelab.synth import world as W


@contextlib.contextmanager
def patched(settings):
    """Apply the ablation patches (a list of callables returning an undo callable) and undo them afterwards."""
    undo = [s() for s in settings]
    try:
        yield
    finally:
        for u in reversed(undo):
            u()


def _set(mod, name, value):
    def apply():
        old = getattr(mod, name)
        setattr(mod, name, value)
        return lambda: setattr(mod, name, old)
    return apply


def _identity_patch(fn):
    """Post-process every made identity batch with ``fn(Identity)``."""
    def apply():
        orig = Id.make_identities

        def made(*a, **k):
            ident = orig(*a, **k)
            fn(ident)
            return ident
        Id.make_identities = W.make_identities = made

        def undo():
            Id.make_identities = W.make_identities = orig
        return undo
    return apply


def _share(*names, rows=None):
    def fn(ident):
        for n in names:
            v = getattr(ident, n)
            if rows is None:
                v[:] = v[:1].clone()
            else:
                v[:, rows] = v[:1, rows].clone()
    return _identity_patch(fn)


NO_HEAD = _set(Hd, "photo_head", lambda z, face, strength=1.0: (torch.zeros(z.shape[0], 68, 2), face))
FULL_RELIEF = _set(R, "PHOTO_RELIEF", 1.0)
_orig_textures = A.sample_textures
ONE_SKIN = _set(A, "sample_textures", lambda c, d=None: _orig_textures(c[:, :A.N_COEF], d))
SETTINGS = {
    "current": [],
    "before": [NO_HEAD, FULL_RELIEF, ONE_SKIN],
    "no head modes": [NO_HEAD],
    "full relief": [FULL_RELIEF],
    "one skin": [ONE_SKIN],
    "same inner landmarks": [_share("landmarks", rows=slice(17, 68))],
    "same jaw": [_share("landmarks", rows=slice(0, 17))],
    "same brows": [_share("landmarks", rows=slice(17, 27))],
    "same hair": [_share("hair", "hair_style", "hair_shape")],
    "same face columns": [_share("face")],
    "same tone": [_share("skin", "lip", "eye")],
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[101, 202])
    ap.add_argument("--n", type=int, default=100, help="identities (4 images each)")
    ap.add_argument("--sface", action="store_true", help="SFace too (several times slower than dlib)")
    ap.add_argument("--only", nargs="+", default=None, choices=list(SETTINGS), metavar="SETTING")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("FACELAB_THREADS", "1")))
    nets = ["dlib-resnet"] + (["sface"] if args.sface else [])
    embedders = {k: load_embedder(k) for k in nets}
    rows = []
    for seed in args.seeds:
        for name in args.only or SETTINGS:
            t = time.perf_counter()
            with patched(SETTINGS[name]):
                world = FaceWorld(seed=seed, size=112, style="photo")
                sc = study.synthetic_verification_scores(world, embedders, args.n, 4, nuisance="mild",
                                                         seed=seed + 21)
            tab = study.verification_table({("photo", k): v for k, v in sc.items()}, n_boot=300, formatted=False)
            for (net, _), r in tab.iterrows():
                row = {"seed": seed, "setting": name, "network": net, **{k: float(r[k]) for k in
                       ("far", "far_lo", "far_hi", "frr", "frr_lo", "frr_hi")},
                       "seconds": time.perf_counter() - t, "load": os.getloadavg()[0]}
                rows.append(row)
                print(f"seed {seed:4d} {name:22s} {net:11s} FAR {r.far:.3f} [{r.far_lo:.3f}, {r.far_hi:.3f}]  "
                      f"FRR {r.frr:.3f} [{r.frr_lo:.3f}, {r.frr_hi:.3f}]", flush=True)
    out = Path("_build/benchmarks")
    out.mkdir(parents=True, exist_ok=True)
    (out / "synth_realism.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
