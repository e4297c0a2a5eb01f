"""MASQUE on the quick face diffusion model: dodging success, locality and time, against its baselines.

Protocol: :func:`facelab.studies.privacy_masque.dodging_data` (synthetic identities from 100000 on, never seen by the
diffusion model; per person 1 protected face, 2 references for the pairwise guidance, 2 held-out gallery images the
victims compare the protected face with; thresholds at FAR 0.1/0.01/0.001 from 40 other people) and
:func:`facelab.studies.privacy_masque.compare_dodging` (makeup without guidance, MASQUE, global PGD over a budget sweep
and masked PGD, optionally DiffAIM used for dodging; white box on ``--surrogates``, black box for every victim outside
them and, held out in turn, for the surrogates named by ``--black-box``).
Prints the success, locality, quality, prompt-adherence and timing tables and writes ``_build/benchmarks/masque.json``.

Run: ``.venv/bin/python benchmarks/bench_masque.py [--faces 64] [--steps 8] [--prompts "red lipstick" ...]
[--surrogates synth-plain synth-residual] [--black-box dlib-resnet synth-plain] [--diffaim]``
Needs the quick latent diffusion checkpoints (``python -m facelab.diffusion.train``).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import pandas as pd
import torch

from facelab import REPO_ROOT

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    from facelab.core.images import psnr
    from facelab.diffusion import load_quick_model
    from facelab.models import load_face_models
    from facelab.privacy import DiffAIMConfig
    from facelab.privacy.makeup import load_makeup_classifier
    from facelab.privacy.masque import MasqueConfig, guided_reconstruction, null_text_inversion
    from facelab.studies.privacy_masque import compare_dodging, dodging_data, dodging_results, victim_thresholds

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--null-steps", type=int, default=0, help="null-text iterations per step (0 with --null-init "
                    "source = negative-prompt inversion, the quick chapter's setting)")
    ap.add_argument("--null-init", choices=("empty", "source"), default="source")
    ap.add_argument("--adv-step", type=float, default=0.3)
    ap.add_argument("--prompts", nargs="+", default=["red lipstick", "blue eyeshadow"])
    ap.add_argument("--victims", nargs="+", default=["dlib-resnet", "synth-plain", "synth-residual"])
    ap.add_argument("--surrogates", nargs="+", default=["synth-plain", "synth-residual"])
    ap.add_argument("--diffaim", action="store_true", help="also run DiffAIM used for dodging")
    ap.add_argument("--black-box", nargs="*", default=[], metavar="VICTIM",
                    help="victims held out in turn for black-box runs (default none)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t_all = time.perf_counter()
    model = load_quick_model()
    data = dodging_data(model.image_size, a.faces)
    models = load_face_models(a.victims)
    thr = victim_thresholds(models, data["threshold_images"], data["threshold_landmarks"], data["threshold_ids"])
    cfg = MasqueConfig(num_steps=a.steps, guidance_scale=5.0, null_inner_steps=a.null_steps, null_init=a.null_init,
                       adv_start=0.5, adv_step=a.adv_step)
    t0 = time.perf_counter()
    inv = null_text_inversion(model, data["images"], model.default_prompt, num_steps=a.steps,
                              guidance_scale=cfg.guidance_scale, inner_steps=a.null_steps, null_init=a.null_init,
                              record_attention=True, self_replace=cfg.self_replace)
    t_inv = time.perf_counter() - t0
    recon = guided_reconstruction(model, inv)
    result = compare_dodging(model, data, models, a.prompts, config=cfg, inversion=inv, surrogates=a.surrogates,
                             black_box_victims=a.black_box, pgd_epsilons=(2 / 255, 4 / 255, 8 / 255, 16 / 255),
                             pgd_steps=a.steps - int(round(cfg.adv_start * a.steps)),
                             diffaim_config=DiffAIMConfig() if a.diffaim else False)
    classifier, _ = load_makeup_classifier()
    tables = dodging_results(result, data, models, thr, classifier=classifier)
    timing = result.timing.groupby(["method", "setting"], sort=False)["s/face"].mean().rename("s/face").to_frame()
    pd.set_option("display.width", 200)
    print(thr.to_string(), "\n")
    for name in ("summary", "locality", "quality", "adherence", "colour", "attention"):
        print(tables[name].round(3).to_string(), "\n")
    print(timing.round(3).to_string())
    X = data["images"]
    out = {"faces": a.faces, "steps": a.steps, "null_steps": a.null_steps, "adv_step": a.adv_step,
           "threads": a.threads, "inversion_seconds": t_inv,
           "reconstruction_psnr_db": float(psnr(recon, X).mean()),
           "thresholds": thr.reset_index().to_dict("records"), "dodging": tables["success"].to_dict("records"),
           "locality": tables["locality"].reset_index().to_dict("records"),
           "quality": tables["quality"].reset_index().to_dict("records"),
           "adherence": tables["adherence"].reset_index().to_dict("records"),
           "colour": tables["colour"].reset_index().to_dict("records"),
           "attention": tables["attention"].reset_index().to_dict("records"),
           "timing": timing.reset_index().to_dict("records"),
           "wall_seconds": time.perf_counter() - t_all, "load_average": os.getloadavg()[0], "model": model.info}
    path = REPO_ROOT / "_build" / "benchmarks" / "masque.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=str))
    print(f"\nwall {out['wall_seconds']:.0f} s; reconstruction PSNR {out['reconstruction_psnr_db']:.1f} dB; "
          f"wrote {path}")


if __name__ == "__main__":
    main()
