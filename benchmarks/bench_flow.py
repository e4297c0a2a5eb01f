"""Optical-flow throughput at 112 px on the CPU (target: >= 100 frame pairs per second).

Run: ``.venv/bin/python benchmarks/bench_flow.py [--pairs 400] [--size 112] [--seed 0]``. Prints a table and writes
``_build/benchmarks/flow.json``. Frames are a smooth random texture moved by a sub-pixel shift, so the solver does
real work (a constant image would converge at once).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from facelab import REPO_ROOT
from facelab.micro.flow import optical_flow

TARGET_PAIRS_PER_S = 100.0


def make_clip(n: int, size: int, seed: int = 0) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.uniform(0, 255, (2 * size, 2 * size)).astype(np.float32), (0, 0), 3)
    base = cv2.normalize(base, None, 0, 255, cv2.NORM_MINMAX)
    frames = []
    for t in range(n):
        M = np.float32([[1, 0, 0.3 * np.sin(t / 5)], [0, 1, 0.2 * np.cos(t / 7)]])
        frames.append(cv2.warpAffine(base, M, base.shape[::-1])[:size, :size])
    return np.stack(frames).astype(np.uint8)


def bench(method: str, clip: np.ndarray, repeats: int = 3) -> dict:
    optical_flow(clip[0], clip[1], method)  # warm-up (creates the solver)
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(len(clip) - 1):
            optical_flow(clip[i], clip[i + 1], method)
        best = min(best, time.perf_counter() - t0)
    pairs = len(clip) - 1
    return {"method": method, "pairs": pairs, "seconds": best, "pairs_per_s": pairs / best,
            "meets_target": pairs / best >= TARGET_PAIRS_PER_S}


def main() -> None:
    import cv2

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=400)
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--threads", type=int, default=1, help="OpenCV threads (1 = one core, the conservative case)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random texture")
    args = ap.parse_args()
    cv2.setNumThreads(args.threads)
    clip = make_clip(args.pairs + 1, args.size, seed=args.seed)
    rows = [bench(m, clip) for m in ("dis", "farneback")]
    print(f"optical flow, {args.size}x{args.size} px, {args.pairs} pairs, best of 3, {args.threads} OpenCV thread(s)")
    print(f"{'method':<10} {'pairs/s':>10} {'target':>8}")
    for r in rows:
        print(f"{r['method']:<10} {r['pairs_per_s']:>10.1f} {'ok' if r['meets_target'] else 'MISSED':>8}")
    out = REPO_ROOT / "_build" / "benchmarks" / "flow.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"size": args.size, "threads": args.threads, "target_pairs_per_s": TARGET_PAIRS_PER_S,
                               "machine": platform.platform(), "cpus": os.cpu_count(),
                               "opencv": cv2.__version__, "results": rows}, indent=2))
    print(f"wrote {out.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
