"""More real people behind the photo-style world's identities (issue 26 part 1): dlib's (and SFace's) FAR/FRR with
and without the LFW relief of :mod:`facelab.synth.appearance`.

The photofits of ``FaceWorld(style="photo")`` draw their detail from 22 real faces; identities that share a source
face for a region were accepted by dlib 2.6x as often as others. The LFW relief (scikit-image's ``lfw_subset``: the
71 face crops of Labeled Faces in the Wild where dlib finds a face that face-api does not read as happy) gives every
identity the low-frequency luminance of one more real person. Settings (module attributes patched in this process):

* ``current``: the photo style as it is;
* ``no pool``: without the LFW relief (the style before it);
* ``relief X``: the relief's strength (:data:`facelab.synth.appearance.LFW_RELIEF`) set to X;
* ``sigma X``: the blur that splits off the photofit's low frequencies set to X texture pixels;
* ``modes X``: the head modes' spreads (:data:`facelab.synth.head.MODES`, :data:`~facelab.synth.head.DETAIL`) times X;
* ``a + b``: both.

FAR/FRR as in ``bench_synth_realism.py`` (100 identities x 4, mild nuisance, ground-truth alignment, identity
bootstrap, sampling seed = world seed + 21). The first ``--only`` setting is the reference: every other one gets its
FAR/FRR difference from it with a paired identity bootstrap (the same people in both settings). Choose on world seeds
101, 202; report on seed 0::

    .venv/bin/python benchmarks/bench_synth_identity_pool.py --seeds 101 202 --sface --only "no pool" current
    .venv/bin/python benchmarks/bench_synth_identity_pool.py --seeds 0 --sface --only "no pool" current --speed-n 300

Writes ``_build/benchmarks/synth_identity_pool.json``. ``--speed-n`` also times rendering of new photo faces (112 px,
all factors on; CPU seconds of this process, after a warm-up) for ``no pool`` and ``current``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_synth_realism import _set, patched, render_speed  # noqa: E402

from facelab.models import load_embedder  # noqa: E402
from facelab.studies import synthetic_faces as study  # noqa: E402
from facelab.synth import FaceWorld  # noqa: E402
from facelab.synth import appearance as A  # noqa: E402
from facelab.synth import head as Hd  # noqa: E402


def _modes(x):
    return [_set(Hd, "MODES", {k: v * x for k, v in Hd.MODES.items()}), _set(Hd, "DETAIL", Hd.DETAIL * x)]


SETTINGS = {
    "current": [],
    "no pool": [_set(A, "LFW_RELIEF", 0.0)],
}
for _x in (0.3, 0.5, 0.7, 1.0, 1.5, 2.0):
    SETTINGS[f"relief {_x}"] = [_set(A, "LFW_RELIEF", _x)]
for _x in (1.5, 3.0, 6.0):
    SETTINGS[f"sigma {_x}"] = [_set(A, "LFW_SIGMA", _x)]
for _x in (1.5, 2.0):
    SETTINGS[f"modes {_x}"] = _modes(_x)


def setting(name: str) -> list:
    """Patches of a named setting; ``a + b`` combines settings."""
    out = []
    for part in name.split("+"):
        part = part.strip()
        if part not in SETTINGS:
            raise SystemExit(f"unknown setting {part!r}: expected {', '.join(SETTINGS)} (or a + b)")
        out += SETTINGS[part]
    return out


def paired_difference(a, b, n_boot: int = 1000, seed: int = 0) -> dict:
    """FAR and FRR of setting ``b`` minus setting ``a`` (:class:`~facelab.studies.synthetic_faces.VerificationScores`
    of the same images' identities) with a 95 % interval from one identity bootstrap applied to both (paired: the
    same people are drawn in both settings)."""
    import numpy as np

    ids = a.ids
    uniq, inv = np.unique(ids, return_inverse=True)
    onehot = np.zeros((len(ids), len(uniq)))
    onehot[np.arange(len(ids)), inv] = 1
    ones = np.ones_like(a.S)
    np.fill_diagonal(ones, 0)
    T = onehot.T @ ones @ onehot
    mats = []
    for sc in (a, b):
        acc = (sc.S >= sc.threshold).astype(np.float64)
        np.fill_diagonal(acc, 0)
        mats.append(onehot.T @ acc @ onehot)
    off = 1 - np.eye(len(uniq))

    def rates(w):
        out = []
        for A_ in mats:
            far = (w @ (A_ * off) @ w) / (w @ (T * off) @ w)
            frr = 1 - (w * w) @ np.diag(A_) / ((w * w) @ np.diag(T))
            out.append((far, frr))
        return out[1][0] - out[0][0], out[1][1] - out[0][1]

    rng = np.random.default_rng(seed)
    d_far, d_frr = rates(np.ones(len(uniq)))
    boot = np.array([rates(rng.multinomial(len(uniq), np.full(len(uniq), 1 / len(uniq))).astype(float))
                     for _ in range(n_boot)])
    lo, hi = np.nanquantile(boot, [0.025, 0.975], axis=0)
    return {"far_diff": d_far, "far_diff_lo": lo[0], "far_diff_hi": hi[0], "frr_diff": d_frr,
            "frr_diff_lo": lo[1], "frr_diff_hi": hi[1]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[101, 202])
    ap.add_argument("--n", type=int, default=100, help="identities (4 images each)")
    ap.add_argument("--sface", action="store_true")
    ap.add_argument("--only", nargs="+", default=["no pool", "current"], metavar="SETTING")
    ap.add_argument("--speed-n", type=int, default=0, help="new photo faces timed for current and no pool")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("FACELAB_THREADS", "1")))
    nets = ["dlib-resnet"] + (["sface"] if args.sface else [])
    embedders = {k: load_embedder(k) for k in nets}
    rows, speed, paired = [], {}, []
    for seed in args.seeds:
        scores = {}
        for name in args.only:
            t = time.perf_counter()
            with patched(setting(name)):
                world = FaceWorld(seed=seed, size=112, style="photo")
                sc = study.synthetic_verification_scores(world, embedders, args.n, 4, nuisance="mild",
                                                         seed=seed + 21)
            scores[name] = sc
            tab = study.verification_table({("photo", k): v for k, v in sc.items()}, n_boot=300, formatted=False)
            for (net, _), r in tab.iterrows():
                rows.append({"seed": seed, "setting": name, "network": net,
                             **{k: float(r[k]) for k in ("far", "far_lo", "far_hi", "frr", "frr_lo", "frr_hi")},
                             "seconds": time.perf_counter() - t, "load": os.getloadavg()[0]})
                print(f"seed {seed:4d} {name:26s} {net:11s} FAR {r.far:.3f} [{r.far_lo:.3f}, {r.far_hi:.3f}]  "
                      f"FRR {r.frr:.3f} [{r.frr_lo:.3f}, {r.frr_hi:.3f}]", flush=True)
        base = args.only[0]
        for name in args.only[1:]:
            for net in nets:
                d = paired_difference(scores[base][net], scores[name][net])
                paired.append({"seed": seed, "setting": name, "minus": base, "network": net, **d})
                print(f"seed {seed:4d} {name} minus {base}, {net}: FAR {d['far_diff']:+.3f} "
                      f"[{d['far_diff_lo']:+.3f}, {d['far_diff_hi']:+.3f}], FRR {d['frr_diff']:+.3f} "
                      f"[{d['frr_diff_lo']:+.3f}, {d['frr_diff_hi']:+.3f}] (paired identity bootstrap)", flush=True)
    if args.speed_n:
        for name in ("no pool", "current"):
            with patched(setting(name)):
                render_speed(20)                                    # warm up (model load, bank)
                speed[name] = render_speed(args.speed_n)
            print(f"speed {name:10s} {speed[name]['faces_per_cpu_s']:.0f} new photo faces per CPU second "
                  f"({args.speed_n}, 112 px, all factors, load {speed[name]['load']:.1f})", flush=True)
    out = Path("_build/benchmarks")
    out.mkdir(parents=True, exist_ok=True)
    result = {"rows": rows, "paired": paired, "speed": speed}
    (out / "synth_identity_pool.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
