"""Why the photo-style world's people still look alike to dlib (issue 26): the diagnostics behind the FAR gap.

``FaceWorld(style="photo")`` draws every identity as a photofit of 22 real faces (:mod:`facelab.synth.appearance`)
on synthetic landmark geometry, and dlib's ResNet still accepts about a tenth of its impostor pairs at the
published L2 distance 0.6, against about 2 % on the book's real photos. This benchmark measures, with dlib alone:

* ``real``: the book's real photos as they are (:func:`facelab.studies.synthetic_faces.real_verification_scores`:
  dlib's HOG detector, 5-point alignment, every person an identity, Barack Obama's six photos the genuine pairs);
* ``shapes``: the 22 real faces' textures in the frontal frame, times one common skin colour, warped (piecewise
  affine, 256 px canvas) onto the world's mean landmark shape, onto their own landmark shape, onto another real
  face's shape, onto synthetic photo-style identities' shapes (world seed 101, identities 0..21, brought onto the
  mean shape by a similarity) and onto their own shape exaggerated 1.5x from the mean; then photofit composites of
  the same textures (60, each region - skin, brows, eyes, nose, mouth - pasted from a different real face, the skin
  and mouth from faces that do not smile) on the mean shape, on a shape coherent with each region's source face, and
  on a random real face's shape. Two texture kinds: ``face region`` (the appearance model's detail maps, flat skin
  outside the face: what the world draws from) and ``photo frame`` (:func:`facelab.synth.appearance.extract_faces`
  unmasked: the photo's own forehead, hair and background around the face, relative to its skin). One image per
  face, so every pair is an impostor pair;
* ``pool``: the world itself (100 identities x 4, mild nuisance, ground-truth alignment, sampling seed = world seed
  + 21, as ``bench_synth_identity_pool.py``) with fewer real faces behind it: the 22 detail faces and 71 LFW reliefs,
  then random subsets (numpy seed 0, drawn in the order of :data:`POOLS`) of the LFW reliefs and of the detail faces
  (:data:`facelab.synth.appearance._MODEL` is swapped for the subset and restored afterwards);
* ``caricature``: 80 photo-style identities x 2 images (world seed 303, mild nuisance, sampling seed 324) whose
  aligned 150 px chips are pushed away from the mean chip (every chip x F, or each identity's mean deviation x F),
  and a few image edits (grey or random outside the face mask, greyscale, contrast x1.5, sharpening).

Rates: FAR (share of impostor pairs at distance <= 0.6) with a 95 % bootstrap interval over identities
(:func:`facelab.studies.synthetic_faces.far_frr`; in ``real`` and ``shapes`` also the Wilson interval that treats
the pairs as independent), FRR where there are genuine pairs, and the impostor (and genuine) mean L2 distance.
Deterministic (fixed seeds). All of it is dlib on synthetic images or on the book's photos; nothing here is tuned::

    OMP_WAIT_POLICY=PASSIVE FACELAB_THREADS=2 nice -n 19 .venv/bin/python benchmarks/bench_synth_identity_limits.py

Writes ``data/runs/synth_identity_limits/results.json`` (``--out``); chapter 02 reads it through
:func:`facelab.studies.synthetic_faces.identity_limits_record`. ``--only`` runs some parts (then nothing is written
unless ``--out`` is given).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from facelab import REPO_ROOT
from facelab.files import atomic_write_json
from facelab.metrics.intervals import wilson_interval
from facelab.models import load_embedder
from facelab.studies import synthetic_faces as study

#: Where the record goes (chapter 02 reads it).
OUT = REPO_ROOT / "data" / "runs" / "synth_identity_limits" / "results.json"
#: The common skin colour the real textures are multiplied by.
SKIN = np.array([0.78, 0.58, 0.48])
#: Canvas of the warped textures (the frontal frame [-1, 1] fills it).
CANVAS = 256
#: (detail faces, LFW reliefs) of the pool-size sweep, in the order the subsets are drawn.
POOLS = ((22, 71), (22, 35), (22, 18), (22, 9), (11, 71), (11, 35), (6, 71))
#: Chip caricature factors (every chip's deviation from the mean chip) and identity caricature factors.
CHIP_FACTORS = (1.0, 1.3, 1.6, 2.0)
IDENTITY_FACTORS = (1.3, 1.6, 2.0)
#: Inner landmark groups of the photofit regions (brows, eyes, nose, mouth) = appearance masks 1..4.
GROUPS = {1: list(range(17, 27)), 2: list(range(36, 48)), 3: list(range(27, 36)), 4: list(range(48, 68))}
PARTS = ("real", "shapes", "pool", "caricature")
COMMAND = ("OMP_WAIT_POLICY=PASSIVE FACELAB_THREADS=2 nice -n 19 .venv/bin/python "
           "benchmarks/bench_synth_identity_limits.py")


def _summary(sc, n_boot: int, wilson: bool = False) -> dict:
    """FAR (identity bootstrap; optionally Wilson over pairs), FRR, mean distances of dlib scores (similarity =
    -L2)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)      # all-NaN FRR bootstrap where there are no genuine pairs
        r = study.far_frr(sc, n_boot=n_boot)
    gen, imp = sc.pairs()
    out = {"identities": int(r["identities"]), "images": int(len(sc.ids)), "impostor_pairs": int(len(imp)),
           "genuine_pairs": int(len(gen)), "impostor_mean_distance": float(-imp.mean()),
           "genuine_mean_distance": float(-gen.mean()) if len(gen) else None,
           "far": float(r["far"]), "far_lo": float(r["far_lo"]), "far_hi": float(r["far_hi"])}
    if len(gen):
        out.update(frr=float(r["frr"]), frr_lo=float(r["frr_lo"]), frr_hi=float(r["frr_hi"]))
    if wilson:
        k = int((imp >= sc.threshold).sum())
        lo, hi = wilson_interval(k, len(imp))
        out.update(far_pairs_lo=float(lo), far_pairs_hi=float(hi))
    return out


def _embed_images(net, images: list, landmarks: list) -> torch.Tensor:
    from facelab.recognition import embed_aligned

    x = torch.tensor(np.stack(images)).permute(0, 3, 1, 2).float().clamp(0, 1)
    return embed_aligned(net, x, torch.tensor(np.stack(landmarks)).float())


def part_real(net, n_boot: int) -> list:
    sc = study.real_verification_scores({"dlib-resnet": net})["dlib-resnet"]
    r = {"faces": "book's real photos (native)", **_summary(sc, n_boot, wilson=True)}
    print(f"real photos: {r['images']} images of {r['identities']} people, impostor mean "
          f"{r['impostor_mean_distance']:.3f} FAR {r['far']:.3f} [{r['far_lo']:.3f}, {r['far_hi']:.3f}]", flush=True)
    return [r]


def _warp_to(texture: np.ndarray, shape: np.ndarray, mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A frontal-frame texture (3, R, R) times :data:`SKIN`, warped piecewise affinely so that the mean shape's
    points land on ``shape`` (frontal units; two rings of fixed points around the face keep the rest in place);
    returns the image (S, S, 3) and ``shape`` in its pixels.

    This is ``skimage.transform.warp(img, PiecewiseAffineTransform.from_estimate(shape px, mean px), mode="edge")``
    (bilinear) with the inverse map computed in one vectorised pass (barycentric coordinates in the Delaunay
    triangles of the output points), which is ~10x faster than scikit-image's per-triangle loop."""
    import cv2
    from scipy.ndimage import map_coordinates
    from scipy.spatial import Delaunay

    S = CANVAS
    ring = np.array([[np.cos(a) * r, np.sin(a) * r] for r in (1.3, 2.0)
                     for a in np.linspace(0, 2 * np.pi, 24, endpoint=False)])
    src = (np.concatenate([shape, ring]) + 1) * S / 2                    # output pixels
    dst = (np.concatenate([mean, ring]) + 1) * S / 2                     # texture pixels
    img = cv2.resize(np.ascontiguousarray(texture.transpose(1, 2, 0)) * SKIN, (S, S))
    tri = Delaunay(src)
    yy, xx = np.mgrid[0:S, 0:S]
    pts = np.stack([xx.ravel(), yy.ravel()], 1).astype(np.float64)
    k = tri.find_simplex(pts)
    if (k < 0).any():
        raise RuntimeError("a canvas pixel lies outside the triangulated rings")
    T = tri.transform[k]                                                 # (P, 3, 2): barycentric transform
    b = np.einsum("pij,pj->pi", T[:, :2], pts - T[:, 2])
    bary = np.concatenate([b, 1 - b.sum(1, keepdims=True)], 1)           # (P, 3)
    coords = np.einsum("pi,pij->pj", bary, dst[tri.simplices[k]])        # (P, 2) texture x, y
    out = np.stack([map_coordinates(img[..., c], [coords[:, 1], coords[:, 0]], order=1, mode="nearest")
                    for c in range(3)], 1).reshape(S, S, 3)
    return out.clip(0, 1), src[:len(shape)]


def part_shapes(net, n_boot: int) -> list:
    from facelab.core.geometry import umeyama
    from facelab.synth import appearance as A
    from facelab.synth.identity import make_identities
    from facelab.synth.landmarks import mean_shape

    frame, _, shapes = A.extract_faces(128)
    mdl = A.appearance_model()
    region = mdl["faces"].float().numpy()
    masks, happy = mdl["masks"].float().numpy(), mdl["happy"].numpy()
    if len(region) != len(frame):
        raise RuntimeError(f"appearance model has {len(region)} faces, extract_faces {len(frame)}: rebuild the model")
    m = mean_shape().numpy()
    n = len(frame)
    ids = make_identities(101, range(n), style="photo").landmarks.numpy()
    synthetic = np.stack([lm @ umeyama(lm, m)[:, :2].T + umeyama(lm, m)[:, 2] for lm in ids])
    other = np.roll(np.arange(n), 5)
    real_shapes = {"mean shape": lambda k: m, "own shape": lambda k: shapes[k],
                   "another real face's shape": lambda k: shapes[other[k]],
                   "synthetic identities' shapes": lambda k: synthetic[k],
                   "own shape x1.5": lambda k: m + 1.5 * (shapes[k] - m)}
    # photofit composites: skin and mouth from calm faces, every region pasted hard from its source
    rng = np.random.default_rng(0)
    N = 60
    calm = np.nonzero(happy < 0.5)[0]
    src = rng.integers(0, n, (N, 5))
    src[:, 0] = rng.choice(calm, N)
    src[:, 4] = rng.choice(calm, N)
    randface = rng.integers(0, n, N)

    def coherent(i):
        s = shapes[src[i, 0]].copy()
        for r, g in GROUPS.items():
            off = shapes[src[i, r]][g] - m[g]
            s[g] = m[g] + off
        return s

    comp_shapes = {"mean shape": lambda i: m, "coherent with each region's source": coherent,
                   "a random real face's shape": lambda i: shapes[randface[i]]}
    rows = []
    for kind, tex in (("face region", region), ("photo frame", frame)):
        for name, shape_of in real_shapes.items():
            t = time.perf_counter()
            imgs, lms = zip(*[_warp_to(tex[k], shape_of(k), m) for k in range(n)])
            sc = study.verification_scores(_embed_images(net, imgs, lms), np.arange(n), net, "dlib-resnet")
            rows.append({"texture": kind, "faces": f"{n} real faces", "shape": name, **_summary(sc, n_boot, True),
                         "seconds": time.perf_counter() - t})
            print(f"shapes {kind:11s} {name:36s} impostor mean {rows[-1]['impostor_mean_distance']:.3f} FAR "
                  f"{rows[-1]['far']:.3f} [{rows[-1]['far_lo']:.3f}, {rows[-1]['far_hi']:.3f}]", flush=True)

        def composite(i):
            c = tex[src[i, 0]].copy()
            for r in range(1, 5):
                c = c * (1 - masks[r]) + tex[src[i, r]] * masks[r]
            return c

        for name, shape_of in comp_shapes.items():
            t = time.perf_counter()
            imgs, lms = zip(*[_warp_to(composite(i), shape_of(i), m) for i in range(N)])
            sc = study.verification_scores(_embed_images(net, imgs, lms), np.arange(N), net, "dlib-resnet")
            rows.append({"texture": kind, "faces": f"{N} photofit composites", "shape": name,
                         **_summary(sc, n_boot, True), "seconds": time.perf_counter() - t})
            print(f"shapes {kind:11s} composites, {name:24s} impostor mean "
                  f"{rows[-1]['impostor_mean_distance']:.3f} FAR {rows[-1]['far']:.3f} "
                  f"[{rows[-1]['far_lo']:.3f}, {rows[-1]['far_hi']:.3f}]", flush=True)
    return rows


def part_pool(net, seeds, n_boot: int, n_identities: int = 100) -> list:
    from facelab.synth import FaceWorld
    from facelab.synth import appearance as A

    full = A.appearance_model()
    base = {k: v for k, v in full.items() if not isinstance(k, tuple)}      # without the derived banks
    F, J = base["faces"].shape[0], base["lfw_relief"].shape[0]
    rng = np.random.default_rng(0)
    saved = dict(A._MODEL)
    rows = []
    try:
        for nf, nj in POOLS:
            fi = np.sort(rng.choice(F, nf, replace=False)) if nf < F else np.arange(F)
            ji = np.sort(rng.choice(J, nj, replace=False)) if nj < J else np.arange(J)
            sub = dict(base)
            sub["faces"], sub["happy"] = base["faces"][fi], base["happy"][fi]
            sub["lfw_relief"] = base["lfw_relief"][ji]
            A._MODEL.clear()
            A._MODEL["cpu"] = sub
            for seed in seeds:
                t = time.perf_counter()
                world = FaceWorld(seed=seed, size=112, style="photo")
                sc = study.synthetic_verification_scores(world, {"dlib-resnet": net}, n_identities, 4,
                                                         nuisance="mild", seed=seed + 21)["dlib-resnet"]
                rows.append({"seed": seed, "detail_faces": nf, "calm_detail_faces": int((sub["happy"] < 0.5).sum()),
                             "lfw_faces": nj, **_summary(sc, n_boot), "seconds": time.perf_counter() - t,
                             "load": os.getloadavg()[0]})
                r = rows[-1]
                print(f"pool seed {seed} detail faces {nf:2d} LFW {nj:2d}: impostor mean "
                      f"{r['impostor_mean_distance']:.3f} FAR {r['far']:.3f} [{r['far_lo']:.3f}, {r['far_hi']:.3f}] "
                      f"FRR {r['frr']:.3f}", flush=True)
    finally:
        A._MODEL.clear()
        A._MODEL.update(saved)
    return rows


def part_caricature(net, n_boot: int, n: int = 80, seed: int = 303) -> list:
    import torch.nn.functional as Fn

    from facelab.recognition import aligned_chips
    from facelab.synth import FaceWorld

    world = FaceWorld(seed=seed, size=112, style="photo")
    ids = np.repeat(np.arange(n), 2)
    b = world.sample(identities=ids.tolist(), nuisance="mild", generator=torch.Generator().manual_seed(seed + 21))
    chips = aligned_chips(b.images, b.landmarks, net.template, net.input_size).clamp(0, 1)

    def score(c):
        with torch.no_grad():
            e = net.embed(c.clamp(0, 1)).float().cpu()
        return study.verification_scores(e, ids, net, "dlib-resnet")

    def images(x):
        return aligned_chips(x.clamp(0, 1), b.landmarks, net.template, net.input_size).clamp(0, 1)

    mean = chips.mean(0, keepdim=True)
    C = chips.shape[-1]
    idm = chips.view(n, 2, 3, C, C).mean(1, keepdim=True)
    fm = b.face_masks.float()
    g = torch.Generator().manual_seed(5)
    bg = torch.rand(len(ids), 3, 1, 1, generator=g)
    grey = b.images.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    mu = b.images.mean((1, 2, 3), keepdim=True)
    sharp = b.images + (b.images - Fn.avg_pool2d(b.images, 3, 1, 1, count_include_pad=False))
    cases = [("chip caricature", f, lambda f=f: mean + f * (chips - mean)) for f in CHIP_FACTORS]
    cases += [("identity caricature", f, lambda f=f: (chips.view(n, 2, 3, C, C) + (f - 1) * (idm - mean[None]))
               .view(-1, 3, C, C)) for f in IDENTITY_FACTORS]
    cases += [("outside the face grey", None, lambda: images(b.images * fm + 0.5 * (1 - fm))),
              ("outside the face random colour", None, lambda: images(b.images * fm + bg * (1 - fm))),
              ("greyscale", None, lambda: images(grey)),
              ("contrast x1.5", None, lambda: images((b.images - mu) * 1.5 + mu)),
              ("sharpened", None, lambda: images(sharp))]
    rows = []
    for kind, f, make in cases:
        r = {"edit": kind, "factor": f, **_summary(score(make()), n_boot)}
        rows.append(r)
        print(f"caricature {kind:30s} {'' if f is None else f:>4} impostor mean {r['impostor_mean_distance']:.3f} "
              f"genuine mean {r['genuine_mean_distance']:.3f} FAR {r['far']:.3f} [{r['far_lo']:.3f}, "
              f"{r['far_hi']:.3f}] FRR {r['frr']:.3f}", flush=True)
    return rows


def _git() -> dict:
    def run(*cmd):
        try:
            return subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return None
    dirty = run("git", "status", "--porcelain", "--", "src/facelab")
    head = run("git", "rev-parse", "HEAD")
    return {"head": None if head is None else head.strip(),
            "uncommitted_in_src_facelab": None if dirty is None else [ln[3:] for ln in dirty.splitlines() if ln.strip()]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[101, 202], help="world seeds of the pool-size sweep")
    ap.add_argument("--n", type=int, default=100, help="identities of the pool-size sweep (4 images each)")
    ap.add_argument("--n-boot", type=int, default=500, help="identity bootstrap resamples")
    ap.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--out", type=Path, default=None, help=f"results.json (default {OUT.relative_to(REPO_ROOT)} "
                                                             "when all parts run)")
    args = ap.parse_args()
    threads = int(os.environ.get("FACELAB_THREADS", "1"))
    torch.set_num_threads(threads)
    out = args.out if args.out is not None else (OUT if set(args.only) == set(PARTS) else None)
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    net = load_embedder("dlib-resnet")
    result = {"what": "dlib ResNet (L2 threshold 0.6) on the book's real photos, on real textures warped onto "
                      "real and synthetic landmark shapes, on the photo-style synthetic world with fewer real "
                      "faces behind it, and on caricatured chips of the world (issue 26)",
              "command": COMMAND + ("" if args.seeds == [101, 202] else " --seeds " + " ".join(map(str, args.seeds))),
              "settings": {"seeds": args.seeds, "n_identities": args.n, "per_identity": 4, "n_boot": args.n_boot,
                           "threshold_distance": 0.6, "skin": SKIN.tolist(), "canvas": CANVAS,
                           "pools": [list(p) for p in POOLS], "chip_factors": list(CHIP_FACTORS),
                           "identity_factors": list(IDENTITY_FACTORS), "caricature_world_seed": 303,
                           "caricature_identities": 80, "parts": args.only},
              "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                          "cpus": os.cpu_count(), "torch_threads": threads, "torch": torch.__version__,
                          "python": platform.python_version(), "load_at_start": load0[0]},
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "git": _git()}
    parts = {"real": lambda: part_real(net, args.n_boot), "shapes": lambda: part_shapes(net, args.n_boot),
             "caricature": lambda: part_caricature(net, args.n_boot),
             "pool": lambda: part_pool(net, args.seeds, args.n_boot, args.n)}
    seconds = {}
    for name in ("real", "shapes", "caricature", "pool"):
        if name in args.only:
            t = time.perf_counter()
            result[name] = parts[name]()
            seconds[name] = time.perf_counter() - t
    result["seconds"] = {**seconds, "total": time.perf_counter() - t0}
    result["machine"]["load_at_end"] = os.getloadavg()[0]
    print(f"total {result['seconds']['total']:.0f} s, load {load0[0]:.1f} -> {result['machine']['load_at_end']:.1f}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out, result)
        print(f"wrote {out}")


if __name__ == "__main__":
    sys.exit(main())
