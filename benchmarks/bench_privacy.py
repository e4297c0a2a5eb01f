"""Seconds per protected image: DiffAIM (quick profile) and pixel PGD with the same gradient budget.

Times, on synthetic 64 px faces, the DDPM inversion, the DiffAIM guidance (chapter 05's quick settings,
:func:`facelab.studies.privacy_diffaim.quick_config`: 20 steps, last 4 manipulated x 3 inner steps, 5 augmentations)
and PGD (``manipulated_steps x inner_steps`` steps, 5 augmentations) with the quick profile's surrogate pool (dlib
ResNet and the two synthetic recognisers), and one forward + backward pass of each recogniser on 5 augmented copies
(why SFace is a victim only in the quick profile). With ``--sd-path`` and a CUDA GPU the full profile (Stable
Diffusion 1.5, published settings, 256 px, all four recognisers) is timed as well. Writes
``_build/benchmarks/privacy.json``.

Run: ``.venv/bin/python benchmarks/bench_privacy.py [--faces 8] [--repeats 1] [--sd-path PATH]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from facelab import REPO_ROOT
from facelab.diffusion import ddpm_inversion, load_quick_model, load_stable_diffusion
from facelab.models import load_face_models
from facelab.privacy import PUBLISHED_DEFAULTS, diffaim_protect, pgd_protect
from facelab.studies.privacy_diffaim import protection_data, quick_config


def time_backward(models, n_faces, n_augment=5):
    """Seconds per face of one forward + backward pass of each recogniser on ``n_augment`` copies."""
    from facelab.privacy.diffaim import identity_score

    data = protection_data(64, n_faces, n_threshold_identities=2, per_identity=1)
    x, lm = data["sources"], data["source_landmarks"]
    out = {}
    for name, m in models.items():
        with torch.no_grad():
            e = m.embed(x, lm)
        xx = x.clone().requires_grad_(True)
        t0 = time.perf_counter()
        identity_score([m], xx, lm, [e], [e.roll(1, 0)], n_augment=n_augment).sum().backward()
        out[name] = (time.perf_counter() - t0) / n_faces
    return out


def time_profile(model, models, cfg, n_faces, repeats, device):
    data = protection_data(model.image_size, n_faces, n_threshold_identities=2, per_identity=1)
    S, T = data["sources"].to(device), data["targets"].to(device)
    kw = dict(landmarks=data["source_landmarks"].to(device), target_landmarks=data["target_landmarks"].to(device))
    sur = list(models.values())
    rows = {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        inv = ddpm_inversion(model, S, num_steps=cfg.num_steps)
        t_inv = time.perf_counter() - t0
        r = diffaim_protect(model, S, T, sur, config=cfg, inversion=inv, batch_size=4, **kw)
        p = pgd_protect(S, T, sur, steps=cfg.gradient_steps, n_augment=cfg.n_augment, batch_size=4, **kw)
        for k, v in (("inversion", t_inv / n_faces), ("DiffAIM guidance", r.seconds_per_image),
                     ("DiffAIM total", t_inv / n_faces + r.seconds_per_image), ("PGD", p.seconds_per_image)):
            rows[k] = min(rows.get(k, float("inf")), v)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--faces", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--sd-path", default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    out = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "faces": a.faces, "profiles": {}}
    cpu = torch.device("cpu")
    models = load_face_models(device=cpu)
    cfg = quick_config()
    pool = {n: models[n] for n in ("dlib-resnet", "synth-plain", "synth-residual")}
    out["recogniser forward+backward x5 (s/face)"] = time_backward(models, a.faces)
    out["profiles"]["quick (CPU, 64 px)"] = {"config": vars(cfg) | {}, "seconds_per_image":
                                             time_profile(load_quick_model(device=cpu), pool, cfg, a.faces,
                                                          a.repeats, cpu)}
    if a.sd_path and torch.cuda.is_available():
        gpu = torch.device("cuda")
        gmodels = load_face_models(device=gpu)
        out["profiles"]["full (GPU, SD 1.5, 256 px)"] = {
            "config": vars(PUBLISHED_DEFAULTS),
            "seconds_per_image": time_profile(load_stable_diffusion(a.sd_path, device=gpu), gmodels,
                                              PUBLISHED_DEFAULTS, a.faces, a.repeats, gpu)}
    for name, sec in out["recogniser forward+backward x5 (s/face)"].items():
        print(f"{'recogniser fwd+bwd x5':28s} {name:18s} {sec:9.3f}")
    print(f"{'profile':28s} {'stage':18s} {'s/image':>9s}")
    for prof, d in out["profiles"].items():
        for stage, s in d["seconds_per_image"].items():
            print(f"{prof:28s} {stage:18s} {s:9.3f}")
    dest = REPO_ROOT / "_build" / "benchmarks" / "privacy.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=1, default=str))
    print("wrote", dest)


if __name__ == "__main__":
    main()
