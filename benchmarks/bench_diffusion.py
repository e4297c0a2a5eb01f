"""Quality gates of the quick latent diffusion model (issue #20), measured on faces of unseen identities.

:func:`facelab.diffusion.quality.quality_gates`: DDIM-inversion reconstruction PSNR (target >= 28 dB; the autoencoder's
own PSNR alongside, the ceiling), edit-friendly DDPM inversion exactness (max abs pixel error < 0.5/255), and the mass
of the cross-attention maps of "lipstick" / "eyeshadow" inside their landmark regions (target >= 0.5; chance = the
region's area fraction). Prints the table, the attention masses per word and the seconds per part, and writes
``_build/benchmarks/diffusion_quality.json``.

Run: ``OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_diffusion.py [--faces 32] [--steps 50]
[--ddpm-faces 8] [--ddpm-steps 20] [--threads 1]``
Needs the quick model's checkpoints (``python -m facelab.diffusion.train``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main(argv=None) -> None:
    import pandas as pd

    from _results import write_result
    from facelab.diffusion import load_quick_model
    from facelab.diffusion.quality import quality_gates

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=32)
    ap.add_argument("--steps", type=int, default=50, help="DDIM steps (inversion and reconstruction)")
    ap.add_argument("--ddpm-faces", type=int, default=8)
    ap.add_argument("--ddpm-steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    model = load_quick_model()
    load_s = time.perf_counter() - t0
    g = quality_gates(model, n_faces=a.faces, seed=a.seed, num_steps=a.steps, ddpm_faces=a.ddpm_faces,
                      ddpm_steps=a.ddpm_steps)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.max_colwidth", 60):
        print(g.table.to_string(index=False))
        print(g.attention.drop(columns=["face"]).groupby("word").mean(numeric_only=True).round(3).to_string())
        print(g.ddim.describe().round(2).to_string())
    print(f"load {load_s:.1f} s, gates {g.settings['seconds']}")
    write_result("diffusion_quality", {
        "model": {k: model.info[k] for k in ("checkpoint", "sha256", "vae_checkpoint", "vae_sha256")},
        "settings": g.settings, "table": g.table.to_dict(orient="records"),
        "attention": g.attention.to_dict(orient="records"), "ddim": g.ddim.to_dict(orient="records"),
        "ddpm": g.ddpm.to_dict(orient="records"), "load_seconds": round(load_s, 1)})


if __name__ == "__main__":
    main()
