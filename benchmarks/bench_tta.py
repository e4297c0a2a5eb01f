"""Per-frame cost of test-time adaptation against plain inference (issue 17 target: FIESTA at most 1.5x plain
inference per frame), CPU.

Frames are 64x64 RGB crops of a synthetic test stream, fed in batches of ``--batch`` (default 8) to each adapter's
``adapt`` step (preprocessing, forward, loss, backward, masked update). FIESTA is timed after its Fisher mask is
estimated (the one-off estimate from the first frames is timed separately). Plain inference is the source model's
``outputs`` (eval mode, folded BatchNorm, no autograd). Reported: median wall ms and process CPU ms per frame over
``--repeats`` batches, the ratio to plain inference, the load average before and after (a shared machine's wall clock
measures the load as much as the model).

Run: ``.venv/bin/python benchmarks/bench_tta.py [--repeats 40] [--batch 8] [--threads 1]``; writes
``_build/benchmarks/tta.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from _results import write_result
from facelab.adaptation import test_time as tta
from facelab.studies import test_time_adaptation as S

TARGET_RATIO = 1.5


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from facelab.synth import FaceWorld

    load0 = os.getloadavg()
    model, _ = S.source_model()
    world = FaceWorld(seed=0, size=S.SIZE)
    s = S.make_stream(world, 6000, 200, duration_s=24.0)
    x = s["frames"][torch.as_tensor(s["valid"])]
    hp = S.chosen_hyperparameters()
    B = args.batch
    batches = [x[i:i + B] for i in range(0, len(x) - B + 1, B)]
    rows = {}

    def time_adapter(name, make):
        a = make()
        if name == "FIESTA":
            t = time.perf_counter()
            a.adapt(batches[0])                       # estimates the Fisher mask from the first frames
            rows["FIESTA Fisher estimate (one-off) ms"] = 1000 * (time.perf_counter() - t)
        else:
            a.adapt(batches[0])                       # warm-up
        wall, cpu = [], []
        for r in range(args.repeats):
            xb = batches[1 + r % (len(batches) - 1)]
            c, t = time.process_time(), time.perf_counter()
            a.adapt(xb)
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        rows[name] = dict(wall_ms_per_frame=1000 * statistics.median(wall) / B,
                          cpu_ms_per_frame=1000 * statistics.median(cpu) / B, n_updated=a.n_updated)

    plain = model.eval()

    def plain_inference():
        class P:
            n_updated = 0

            def adapt(self, xb):
                with torch.no_grad():
                    return plain.outputs(xb).probabilities
        return P()

    time_adapter("plain inference", plain_inference)
    for name in ("BN stats", "TENT", "EATA", "SAR", "TempT (all parameters)", "FIESTA"):
        time_adapter(name, lambda name=name: S.build_adapter(name, model, hp))
    base = rows["plain inference"]["wall_ms_per_frame"]
    base_cpu = rows["plain inference"]["cpu_ms_per_frame"]
    print(f"{'method':28s} {'wall ms/frame':>14s} {'cpu ms/frame':>13s} {'x plain (wall)':>15s} {'x plain (cpu)':>14s}"
          f" {'updated':>8s}")
    for k, v in rows.items():
        if isinstance(v, dict):
            v["ratio_wall"] = v["wall_ms_per_frame"] / base
            v["ratio_cpu"] = v["cpu_ms_per_frame"] / base_cpu
            print(f"{k:28s} {v['wall_ms_per_frame']:14.2f} {v['cpu_ms_per_frame']:13.2f} {v['ratio_wall']:15.2f} "
                  f"{v['ratio_cpu']:14.2f} {v['n_updated']:8d}")
    print(f"FIESTA Fisher estimate (one-off): {rows['FIESTA Fisher estimate (one-off) ms']:.1f} ms")
    ok = rows["FIESTA"]["ratio_cpu"] <= TARGET_RATIO
    print(f"target: FIESTA <= {TARGET_RATIO}x plain inference per frame (CPU time): "
          f"{rows['FIESTA']['ratio_cpu']:.2f}x -> {'met' if ok else 'NOT met'}")
    load1 = os.getloadavg()
    write_result("tta", dict(rows=rows, batch=B, repeats=args.repeats, threads=args.threads, target_ratio=TARGET_RATIO,
                             met=bool(ok), loadavg_before=load0, loadavg_after=load1))


if __name__ == "__main__":
    main()
