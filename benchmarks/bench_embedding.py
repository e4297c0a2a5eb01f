"""Embedding throughput: the PyTorch dlib ResNet vs native dlib on the same aligned faces (CPU, batch 32).

Also SFace in PyTorch vs OpenCV's ``FaceRecognizerSF`` (one face per call: OpenCV's API has no batch).
Run: ``.venv/bin/python benchmarks/bench_embedding.py [--repeats 5] [--batch 32]``. Prints a table and writes
``_build/benchmarks/embedding.json``. The target (issue 3): the PyTorch path at least as fast per face as dlib.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from _results import write_result
from facelab import REPO_ROOT, assets
from facelab.models import load_embedder
from facelab.photos import load_real_faces


def _timeit(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args(argv)
    import cv2
    import dlib

    B = args.batch
    dchips = load_real_faces("dlib-resnet").chips
    dchips = np.ascontiguousarray(np.resize(dchips, (B,) + dchips.shape[1:]))  # tile the real faces to B
    achips = load_real_faces("sface").chips
    achips = np.ascontiguousarray(np.resize(achips, (B,) + achips.shape[1:]))

    rec = dlib.face_recognition_model_v1(str(assets.fetch("dlib-resnet-model")))
    chip_list = [c for c in dchips]
    net = load_embedder("dlib-resnet")
    sface = load_embedder("sface")
    sf_cv = cv2.FaceRecognizerSF.create(str(assets.fetch("sface-model")), "")
    bgr = [np.ascontiguousarray(c[:, :, ::-1]) for c in achips]

    load_before = os.getloadavg()
    rows = []
    cases = [
        ("dlib-resnet", "native dlib (compute_face_descriptor, batch)", lambda: rec.compute_face_descriptor(chip_list)),
        ("dlib-resnet", "PyTorch (facelab, batch)", lambda: net.embed(dchips, batch_size=B)),
        ("sface", "OpenCV FaceRecognizerSF (per face)", lambda: [sf_cv.feature(c) for c in bgr]),
        ("sface", "PyTorch (facelab, batch)", lambda: sface.embed(achips, batch_size=B)),
    ]
    for model, impl, fn in cases:
        times = _timeit(fn, args.repeats)
        med = statistics.median(times)
        rows.append(dict(model=model, implementation=impl, batch=B, repeats=args.repeats, median_s=med,
                         min_s=min(times), faces_per_s=B / med, ms_per_face=1000 * med / B))
    load_after = os.getloadavg()

    # correctness on the very same chips, so the speed comparison is between equal outputs
    nat = np.array(rec.compute_face_descriptor(chip_list))
    ours = net.embed(dchips).numpy()
    cos = (nat * ours).sum(1) / np.linalg.norm(nat, axis=1) / np.linalg.norm(ours, axis=1)

    by = {(r["model"], r["implementation"].split(" ")[0]): r for r in rows}
    speedup = by[("dlib-resnet", "native")]["ms_per_face"] / by[("dlib-resnet", "PyTorch")]["ms_per_face"]
    result = dict(
        topic="embedding", batch=B, rows=rows, dlib_speedup_torch_over_native=speedup,
        target_met=bool(speedup >= 1.0), min_cosine_torch_vs_native=float(cos.min()),
        machine=dict(platform=platform.platform(), cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
                     torch=torch.__version__, dlib=dlib.__version__, opencv=cv2.__version__,
                     loadavg_before=load_before, loadavg_after=load_after),
    )
    print(f"Embedding throughput, CPU, batch {B}, median of {args.repeats} (load average "
          f"{load_before[0]:.1f} -> {load_after[0]:.1f} on {os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()})")
    print(f"{'model':12s} {'implementation':46s} {'faces/s':>9s} {'ms/face':>9s}")
    for r in rows:
        print(f"{r['model']:12s} {r['implementation']:46s} {r['faces_per_s']:9.1f} {r['ms_per_face']:9.1f}")
    print(f"dlib ResNet: PyTorch / native speed = {speedup:.2f}x (target >= 1: {'met' if speedup >= 1 else 'NOT met'});"
          f" min cosine to native on these faces {cos.min():.6f}")
    write_result("embedding", result)
    return result


if __name__ == "__main__":
    main()
