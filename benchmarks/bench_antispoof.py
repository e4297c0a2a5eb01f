"""Inference throughput of the full FG-MoE-CLIP-CAR detector (quick-profile size) on the CPU, in images/s.

Run: ``.venv/bin/python benchmarks/bench_antispoof.py [--batch 64] [--repeats 5] [--threads N] [--device cpu]``.
Prints a table and writes ``_build/benchmarks/antispoof.json``. Untrained weights: throughput does not depend on
them. Compares the dense CLIP tower, the Soft MoE and the fine-grained MoE variants (upcycled in parallel with the
dense MLP, and the first version that replaced it) and the CNN baseline; and the CNN baseline's training step
(batch 24, as the chapter trains it) with its activations in the standard layout and channels-last (its forward
since 2026-12-05), in ms per step.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from facelab import REPO_ROOT
from facelab import antispoof as A
from facelab.studies.face_antispoofing import DEFAULT_MOE


def cnn_step_ms(image_size: int, *, channels_last: bool, steps: int = 30, batch: int = 24, seed: int = 0) -> float:
    """Mean ms of one AdamW training step of the CNN baseline, its activations channels-last (the module's forward)
    or in the standard contiguous layout (the forward before 2026-12-05)."""
    m = A.CNNBaseline(image_size=image_size, seed=seed)
    g = torch.Generator().manual_seed(seed)
    x, y = torch.rand(batch, 3, image_size, image_size, generator=g), torch.randint(0, 2, (batch,), generator=g)
    opt = torch.optim.AdamW(m.parameters(), 1e-3)

    def logits():
        return m(x) if channels_last else m.classifier(m.features((x - 0.5) / 0.25))

    for k in range(steps + 5):                       # 5 warm-up steps
        if k == 5:
            t0 = time.perf_counter()
        loss = F.cross_entropy(logits(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--image-size", type=int, default=48)
    ap.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    clip = A.build_clip(image_size=args.image_size, text="bow", device=args.device)
    x = torch.rand(args.batch, 3, args.image_size, args.image_size, generator=torch.Generator().manual_seed(args.seed))
    g = torch.Generator().manual_seed(args.seed)
    models = {
        "CNN baseline": A.CNNBaseline(image_size=args.image_size, embed_dim=clip.embed_dim).to(args.device),
        "CLIP (dense MLPs)": A.AttackDetector.from_clip(clip),
        "CLIP + Soft MoE": A.AttackDetector.from_clip(clip, moe={**DEFAULT_MOE, "groups": 1}, generator=g),
        "CLIP + FG-MoE (full model)": A.AttackDetector.from_clip(clip, moe=DEFAULT_MOE, generator=g),
        "CLIP + FG-MoE replacing the MLP": A.AttackDetector.from_clip(
            clip, moe={**DEFAULT_MOE, "mode": "replace", "scale": 1.0}, generator=g),
    }
    rows = []
    for name, m in models.items():
        ips = A.throughput(m.eval(), x, args.repeats)
        rows.append({"model": name, "images_per_s": round(ips, 1),
                     "params": sum(p.numel() for p in m.parameters())})
    width = max(len(r["model"]) for r in rows)
    print(f"{'model':<{width}}  images/s   params   ({args.device}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"{args.image_size} px)")
    for r in rows:
        print(f"{r['model']:<{width}}  {r['images_per_s']:>8.1f}  {r['params']:>7d}")
    cnn = {fmt: round(cnn_step_ms(args.image_size, channels_last=fmt == "channels_last"), 1)
           for fmt in ("contiguous", "channels_last")}
    print(f"CNN baseline training step (batch 24): {cnn['contiguous']} ms contiguous, {cnn['channels_last']} ms "
          "channels-last")
    out = Path(REPO_ROOT) / "_build" / "benchmarks" / "antispoof.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "antispoof", "device": args.device, "threads": torch.get_num_threads(),
                               "batch": args.batch, "image_size": args.image_size,
                               "machine": platform.machine(), "results": rows,
                               "cnn_training_step_ms": cnn}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
