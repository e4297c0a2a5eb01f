"""Frame-descriptor throughput of the ported FER2013 mini-Xception (facelab.models.fer), CPU.

Frames of 64x64 grey in [0, 1], batches of 64, on 2 torch threads (issue 15 target: at least 1,000 frames/s).
Three paths: the bare forward on preprocessed frames, ``descriptor()`` (input checks + preprocessing + forward),
and ``outputs()`` on 112x112 RGB crops (grey conversion and resize included). Wall-clock medians; the load average
before and after and the process CPU time per batch are reported, because on a shared machine the wall clock
measures the load as much as the model.
Run: ``.venv/bin/python benchmarks/bench_fer.py [--repeats 30] [--batch 64] [--threads 2]``. Prints a table and
writes ``_build/benchmarks/fer.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from _results import write_result
from facelab import REPO_ROOT
from facelab.models import load_fer_expression

TARGET_FPS = 1000.0


def _timeit(fn, repeats: int) -> tuple[list[float], list[float]]:
    fn()  # warm-up (oneDNN picks its kernels on the first call)
    wall, cpu = [], []
    for _ in range(repeats):
        c, t = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return wall, cpu


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    B = args.batch
    model = load_fer_expression()
    g = torch.Generator().manual_seed(0)
    grey = torch.rand(B, 1, 64, 64, generator=g)
    rgb = torch.rand(B, 3, 112, 112, generator=g)
    pre = model.preprocess(grey)

    def forward():
        with torch.no_grad():
            model(pre)

    cases = [("forward (preprocessed 1x64x64)", forward),
             ("descriptor() on 1x64x64 in [0, 1]", lambda: model.descriptor(grey)),
             ("outputs() on 3x112x112 RGB crops", lambda: model.outputs(rgb))]
    load_before = os.getloadavg()
    rows = []
    for name, fn in cases:
        wall, cpu = _timeit(fn, args.repeats)
        med = statistics.median(wall)
        rows.append(dict(path=name, batch=B, repeats=args.repeats, median_s=med, min_s=min(wall),
                         frames_per_s=B / med, best_frames_per_s=B / min(wall),
                         cpu_s_per_batch=statistics.median(cpu)))
    load_after = os.getloadavg()
    fps = rows[1]["frames_per_s"]
    result = dict(topic="fer-mini-xception", batch=B, threads=args.threads, rows=rows, target_fps=TARGET_FPS,
                  descriptor_frames_per_s=fps, target_met=bool(fps >= TARGET_FPS),
                  machine=dict(platform=platform.platform(), cpu_count=os.cpu_count(),
                               torch_threads=torch.get_num_threads(), torch=torch.__version__,
                               loadavg_before=load_before, loadavg_after=load_after))
    print(f"FER2013 mini-Xception, CPU, batch {B}, {args.threads} threads, median of {args.repeats} (load average "
          f"{load_before[0]:.1f} -> {load_after[0]:.1f} on {os.cpu_count()} cores)")
    print(f"{'path':38s} {'frames/s':>9s} {'best':>9s} {'cpu s/batch':>12s}")
    for r in rows:
        print(f"{r['path']:38s} {r['frames_per_s']:9.0f} {r['best_frames_per_s']:9.0f} {r['cpu_s_per_batch']:12.3f}")
    print(f"descriptor frames/s = {fps:.0f} (target >= {TARGET_FPS:.0f}: {'met' if fps >= TARGET_FPS else 'NOT met'})")
    write_result("fer", result)
    return result


if __name__ == "__main__":
    main()
