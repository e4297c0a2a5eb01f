"""MASQUE on the quick face diffusion model: dodging success, locality and time, against its baselines.

Protocol (synthetic world, identities from 100000 on, never seen by the diffusion model): per identity 5 images,
mild nuisance and random expressions: 1 protected face, 2 references for the pairwise guidance, 2 held-out gallery
images the victims compare the protected face with. Victim thresholds at FAR 0.1/0.01/0.001 come from 40 other
identities (``facelab.privacy.evaluation.victim_thresholds``). Methods: makeup without adversarial guidance, MASQUE,
global PGD and masked PGD (same pairwise loss; PGD inside the same face-region mask) at two budgets. Settings:
white-box (all surrogates) and leave-one-out black-box (``leave_one_out``). Writes ``_build/benchmarks/masque.json``.

Run: ``.venv/bin/python benchmarks/bench_masque.py [--faces 8] [--steps 10] [--prompts "red lipstick" ...]``
Needs the quick diffusion checkpoint (``python -m facelab.diffusion.train``).
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
    from facelab.diffusion import load_quick_model
    from facelab.privacy.evaluation import leave_one_out, load_face_models, quality_table, victim_thresholds
    from facelab.privacy.masks import region_for_word
    from facelab.privacy.masque import (MasqueConfig, dodging_table, guided_reconstruction, locality_table,
                                        masque_protect, null_text_inversion, pgd_dodge)
    from facelab.synth import FaceWorld

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--null-steps", type=int, default=3)
    ap.add_argument("--adv-step", type=float, default=0.3)
    ap.add_argument("--prompts", nargs="+", default=["red lipstick"])
    ap.add_argument("--victims", nargs="+", default=["dlib-resnet", "sface"])
    ap.add_argument("--black-box", action="store_true", help="also run leave-one-out black-box MASQUE")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    t_all = time.perf_counter()
    model = load_quick_model()
    world = FaceWorld(seed=0, size=model.image_size)
    N = a.faces
    b = world.sample(n_identities=N, per_identity=5, identity_offset=100000, nuisance="mild", expression="random",
                     generator=torch.Generator().manual_seed(1))
    ids = b.labels["identity"].to_numpy()
    prot = [5 * i for i in range(N)]
    ref = [5 * i + k for i in range(N) for k in (1, 2)]
    gal = [5 * i + k for i in range(N) for k in (3, 4)]
    owner = [k // 2 for k in range(len(gal))]
    X, L = b.images[prot], b.landmarks[prot]
    models = load_face_models(a.victims)
    th = world.sample(n_identities=40, per_identity=3, identity_offset=200000, nuisance="mild", expression="random",
                      generator=torch.Generator().manual_seed(2))
    thr = victim_thresholds(models, th.images, th.landmarks, th.labels["identity"].to_numpy())
    refkw = dict(references=b.images[ref], reference_landmarks=b.landmarks[ref], reference_identities=ids[ref])
    cfg = dict(num_steps=a.steps, guidance_scale=3.0, null_inner_steps=a.null_steps)
    t0 = time.perf_counter()
    inv = null_text_inversion(model, X, model.default_prompt, num_steps=a.steps, guidance_scale=3.0,
                              inner_steps=a.null_steps)
    t_inv = time.perf_counter() - t0
    recon = guided_reconstruction(model, inv)
    runs, local, timing, quality = {}, [], [], []
    for phrase in a.prompts:
        word = phrase.split()[-1]
        prompt = f"{model.default_prompt} with {phrase}"
        kw = dict(edit_prompt=prompt, word=word, inversion=inv, **refkw)
        plain = masque_protect(model, X, L, ids[prot], models=models, config=MasqueConfig(adversarial=False, **cfg),
                               **kw)
        wb = masque_protect(model, X, L, ids[prot], models=models, config=MasqueConfig(adv_step=a.adv_step, **cfg),
                            **kw)
        timing += [{"prompt": phrase, "method": "makeup, no guidance", "s/face": plain.seconds_per_image},
                   {"prompt": phrase, "method": "MASQUE", "s/face": wb.seconds_per_image}]
        mine = {"makeup, no guidance": plain.images, "MASQUE": wb.images}
        for eps in (4, 8):
            mine[f"global PGD eps={eps}"] = pgd_dodge(X, L, ids[prot], models, epsilon=eps / 255, steps=10, **refkw)
            mine[f"masked PGD eps={eps}"] = pgd_dodge(X, L, ids[prot], models, epsilon=eps / 255, steps=10,
                                                      mask=wb.mask, **refkw)
        for name, imgs in mine.items():
            for v in models:
                runs[(f"{name} | {phrase}", "white-box", v)] = imgs
        if a.black_box:
            for v in models:
                sur = {n: models[n] for n in leave_one_out(models, v)}
                if sur:
                    bb = masque_protect(model, X, L, ids[prot], models=sur,
                                        config=MasqueConfig(adv_step=a.adv_step, **cfg), **kw)
                    runs[(f"MASQUE | {phrase}", "black-box", v)] = bb.images
        mine["clean"] = X
        local.append(locality_table(mine, X, wb.mask).assign(prompt=phrase, region=region_for_word(word)))
        quality.append(quality_table(mine, X).assign(prompt=phrase))
    for v in models:
        runs[("clean", "-", v)] = X
    table = dodging_table(runs, models, thr, L, b.images[gal], b.landmarks[gal], owner)
    pd.set_option("display.width", 200)
    print(thr.to_string(), "\n")
    print(table.to_string(index=False), "\n")
    print(pd.concat(local).to_string(), "\n")
    print(pd.concat(quality).to_string(), "\n")
    print(pd.DataFrame(timing).to_string(index=False))
    out = {"faces": N, "steps": a.steps, "null_steps": a.null_steps, "adv_step": a.adv_step,
           "inversion_seconds": t_inv, "reconstruction_psnr_db": float((10 * torch.log10(
               1 / (recon - X).pow(2).flatten(1).mean(1))).mean()),
           "thresholds": thr.reset_index().to_dict("records"), "dodging": table.to_dict("records"),
           "locality": pd.concat(local).reset_index().to_dict("records"),
           "quality": pd.concat(quality).reset_index().to_dict("records"), "timing": timing,
           "wall_seconds": time.perf_counter() - t_all, "model": model.info}
    path = REPO_ROOT / "_build" / "benchmarks" / "masque.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=str))
    print(f"\nwall {out['wall_seconds']:.0f} s; reconstruction PSNR {out['reconstruction_psnr_db']:.1f} dB; "
          f"wrote {path}")


if __name__ == "__main__":
    main()
