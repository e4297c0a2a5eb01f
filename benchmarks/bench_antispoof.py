"""Inference throughput of the full FG-MoE-CLIP-CAR detector (quick-profile size) on the CPU, in images/s.

Run: ``.venv/bin/python benchmarks/bench_antispoof.py [--batch 64] [--repeats 5] [--threads N] [--device cpu]``.
Prints a table and writes ``_build/benchmarks/antispoof.json``. Untrained weights: throughput does not depend on
them. Compares the dense CLIP tower, the Soft MoE and the fine-grained MoE variants (upcycled in parallel with the
dense MLP, and the first version that replaced it) and the CNN baseline.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from facelab import REPO_ROOT
from facelab import antispoof as A
from facelab.studies.face_antispoofing import DEFAULT_MOE


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
    out = Path(REPO_ROOT) / "_build" / "benchmarks" / "antispoof.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "antispoof", "device": args.device, "threads": torch.get_num_threads(),
                               "batch": args.batch, "image_size": args.image_size,
                               "machine": platform.machine(), "results": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
