"""Speed and difficulty of the synthetic face world.

Measures: faces/s at 112 px with all factors on (full nuisance, random expression, occlusion and makeup), with
identities reused (100 x 10) and all new (1 image each); a 30 s video at 112 px / 30 fps; eigenfaces rank-1 on
100 identities x 10 images per setting. Prints a table and writes ``_build/benchmarks/synth.json``.
Wall time depends on machine load, so the CPU time of this process and the load average are reported as well.

    .venv/bin/python benchmarks/bench_synth.py [--quick] [--threads N] [--device cpu] [--style cartoon|photo|both]

``--style both`` measures the two rendering styles (``FaceWorld(style=...)``) one after the other; the JSON is
then ``_build/benchmarks/synth_<style>.json`` per style.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from facelab.synth import FaceWorld, SyntheticFaceStream
from facelab.studies.synthetic_faces import CONDITIONS, calibrate

ALL = dict(nuisance="full", expression="random", occlusion="random", makeup="random")


def timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-difficulty", action="store_true")
    ap.add_argument("--style", default="cartoon", choices=("cartoon", "photo", "both"))
    args = ap.parse_args()
    if args.style == "both":
        for style in ("cartoon", "photo"):
            args.style = style
            run(args)
        return
    run(args)


def run(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    load0 = os.getloadavg()[0]
    n_ids, per = (20, 10) if args.quick else (100, 10)

    def stream_rate(name, n_identities, per_identity, batch=200):
        stream = SyntheticFaceStream(seed=0, size=112, n_identities=n_identities, per_identity=per_identity,
                                     batch_size=batch, device=args.device, style=args.style, **ALL)
        stream.batch(0)                                                    # warm up (templates, allocator)
        stream._world = FaceWorld(0, 112, args.device, style=args.style)  # start with an empty identity cache

        def run():
            n = 0
            for b in stream:
                n += len(b)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            return n

        n, wall, cpu = timed(run)
        rows.append(dict(benchmark=name, items=n, wall_s=wall, cpu_s=cpu, per_s=n / wall, per_cpu_s=n / cpu))

    stream_rate(f"faces 112px all factors, {n_ids} ids x {per} (identities reused)", n_ids, per)
    stream_rate(f"faces 112px all factors, {n_ids * per} new identities", n_ids * per, 1)
    world = FaceWorld(0, 112, args.device, style=args.style)
    world.video(identity=0, duration_s=1.0, fps=30)
    dur = 10.0 if args.quick else 30.0
    ppg = np.sin(2 * np.pi * 1.2 * np.arange(int(dur * 30)) / 30)
    v, wall, cpu = timed(lambda: world.video(identity=1, duration_s=dur, fps=30, ppg=ppg))
    rows.append(dict(benchmark=f"video {dur:.0f} s, 112px, 30 fps (events, blinks, head motion, PPG)",
                     items=len(v), wall_s=wall, cpu_s=cpu, per_s=len(v) / wall, per_cpu_s=len(v) / cpu))
    result = {"rows": rows, "style": args.style, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "loadavg_start": load0, "loadavg_end": os.getloadavg()[0], "device": args.device}
    print(f"style={args.style} threads={result['threads']} cores={result['cpu_count']} load average {load0:.1f} -> "
          f"{result['loadavg_end']:.1f}")
    print(f"{'benchmark':75s} {'items':>6s} {'wall s':>8s} {'cpu s':>8s} {'/s wall':>8s} {'/cpu-s':>8s}")
    for r in rows:
        print(f"{r['benchmark']:75s} {r['items']:6d} {r['wall_s']:8.2f} {r['cpu_s']:8.2f} {r['per_s']:8.1f} "
              f"{r['per_cpu_s']:8.1f}")
    if not args.skip_difficulty:
        # the chapter's protocol (facelab.studies.synthetic_faces.calibrate): 5 gallery + 5 probe images per identity,
        # eigenfaces on grey 56 px chips aligned with the ground-truth landmarks, and on the raw frame
        tab, wall, _ = timed(lambda: calibrate(FaceWorld(0, 112, args.device), CONDITIONS, n_identities=n_ids,
                                               per_identity=per, embedder=None))
        tab = tab[["chance", "eigenfaces (aligned)", "eigenfaces (raw frame)"]]
        print(f"\neigenfaces rank-1, {n_ids} identities x {per} images, 112 px ({wall:.0f} s):")
        print(tab.to_string())
        result["difficulty"] = tab.reset_index().to_dict(orient="records")
    name = "synth.json" if args.style == "cartoon" else f"synth_{args.style}.json"
    out = Path(__file__).resolve().parents[1] / "_build" / "benchmarks" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
