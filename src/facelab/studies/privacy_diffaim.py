"""Chapter 05, "Hiding in plain sight I" (``notebooks/05_privacy_diffaim.ipynb``): the impersonation protocol of
DiffAIM against pixel PGD on the quick latent diffusion model, its tables and figures.

The methods live in :mod:`facelab.privacy` (:func:`~facelab.privacy.diffaim.diffaim_protect`,
:func:`~facelab.privacy.pgd.pgd_protect`); the protocol pieces both privacy chapters share (measured thresholds,
leave-one-out, quality, Wilson intervals, McNemar tests, real photos) in :mod:`facelab.studies._privacy_protocol`,
re-exported here.

* Impersonation succeeds at a FAR level when similarity(protected image, target image) reaches that victim's
  threshold (the target image is the one the attack was given, as in DiffAIM's protocol); one trial per face.
* **The experiment** (:func:`run_experiment`): 64 faces (quick profile) inverted in chunks, DiffAIM and PGD with the
  same gradient budget and the same 5 augmentations, one run per distinct surrogate set (white box = the whole
  surrogate pool; black box against victim v = the pool without v, :func:`~facelab.studies._privacy_protocol.
  leave_one_out`), plus the strength sweep against one victim. Every run's protected images are scored by every
  recogniser (similarity to the target, per face), and its quality (SSIM, PSNR, L-infinity) and gradient-norm
  history are kept. It takes tens of minutes on the book's 2-core CPU, so its *results* (scores and quality per face,
  a few protected images for the figures, timings and histories) are committed in
  ``data/models/diffaim_runs_quick.*`` through :mod:`facelab.checkpoints`, keyed by every setting and by the sha256
  of the diffusion model; :func:`load_or_run_experiment` reruns it when any of them changes, and
  ``python -m facelab.studies.privacy_diffaim`` recreates it. The chapter reruns the first chunk of faces live
  (:func:`live_check`) and shows that it reproduces the stored scores.
* :func:`experiment_outcomes` turns the stored scores into face-by-face outcomes at thresholds measured in the
  chapter; :func:`success_table`, :func:`summary_table` and :func:`paired_tests` make the tables.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from facelab.studies._privacy_protocol import (FARS, Timer, align_to_world, far_key, leave_one_out, outcome_table,
                                               paired_tests, pooled_summary, quality_table, rates_of, real_photos_of,
                                               runs_outcomes, verification_outcomes, victim_thresholds,
                                               world_template)

__all__ = ["FARS", "victim_thresholds", "leave_one_out", "quality_table", "Timer", "align_to_world",
           "world_template", "real_photos_of", "paired_tests", "pooled_summary", "attack_pairs", "protection_data",
           "real_pair", "run_protocol", "success_outcomes", "success_rates", "success_table", "summary_table",
           "strength_sweep", "manipulated_steps_table", "training_summary", "plot_training_curve",
           "plot_quality_vs_success", "base_unet_log", "training_times", "QUICK_RUNS", "RUNS_COMMAND",
           "quick_config", "scale_table", "model_table",
           "experiment_settings", "invert_in_chunks", "concat_inversions", "run_experiment", "load_or_run_experiment",
           "Experiment", "experiment_outcomes", "sweep_table", "matched_ssim_table", "gradient_norms",
           "plot_gradient_norms", "live_check", "quality_from_experiment", "chapter_settings", "main",
           "ADOPTION_RULE", "adoption_rule",
           "ATTENTION_RECORD", "attention_training_record", "edit_colour_record", "guidance_record",
           "guidance_summary", "guidance_runs_at_target"]

#: Measurements of UNets trained with and without attention supervision (``data/runs/ldm_attention_gpu``: a manifest
#: ``runs.json`` naming, per UNet, the output of ``benchmarks/bench_masque_attention.py`` and its training summary).
ATTENTION_RECORD = Path(__file__).resolve().parents[3] / "data" / "runs" / "ldm_attention_gpu"

#: The committed results of the quick profile's experiment (scores, quality, histories; no model weights).
QUICK_RUNS = "diffaim_runs_quick"
#: The command that recreates them.
RUNS_COMMAND = "python -m facelab.studies.privacy_diffaim"


# --------------------------------------------------------------------------------------------- settings
def quick_config(seed: int = 0, perceptual_margin: float = 0.0):
    """The quick profile's DiffAIM settings: the published ones (:data:`facelab.privacy.PUBLISHED_DEFAULTS`) with
    the step counts scaled down for the CPU budget (20 inference steps of which the last 4 are manipulated, the
    paper's 20 of 100: the same fraction of the trajectory; 3 inner steps instead of 10), the gradient step
    RMS-normalised to one clamp width per inner step (the raw step of 3 is tuned to SD's latent; with 3 inner steps
    instead of 10 the step must reach the clamp sooner), the perceptual term measured against the benign latent's
    prediction at the same step and its margin given (calibrated on 1 - SSIM,
    :func:`facelab.privacy.diffaim.calibrate_perceptual_margin`); everything else as published."""
    from facelab.privacy.diffaim import PUBLISHED_DEFAULTS

    return dataclasses.replace(PUBLISHED_DEFAULTS, num_steps=20, manipulated_steps=4, inner_steps=3,
                               step_size=1.0, normalize_gradient=True, perceptual_margin=float(perceptual_margin),
                               perceptual_reference="benign", seed=int(seed))


def scale_table(config, published=None, *, n_faces: int | None = None, published_faces: int | None = None
                ) -> pd.DataFrame:
    """Published settings against this run's, with the scale factor of each count (this run / published)."""
    from facelab.privacy.diffaim import PUBLISHED_DEFAULTS

    p = published or PUBLISHED_DEFAULTS
    rows = [("inference steps (DDPM inversion)", p.num_steps, config.num_steps),
            ("manipulated (last) steps K", p.manipulated_steps, config.manipulated_steps),
            ("fraction of the trajectory manipulated", p.manipulated_steps / p.num_steps,
             config.manipulated_steps / config.num_steps),
            ("inner gradient steps per manipulated step", p.inner_steps, config.inner_steps),
            ("gradient steps per face (K x inner)", p.gradient_steps, config.gradient_steps),
            ("augmentations per gradient step", p.n_augment, config.n_augment),
            ("clamp on the latent change", p.epsilon, config.epsilon)]
    if n_faces is not None:
        rows.append(("faces", published_faces if published_faces is not None else float("nan"), n_faces))
    df = pd.DataFrame(rows, columns=["setting", "published", "this run"]).set_index("setting")
    df["scale (this / published)"] = df["this run"].astype(float) / df["published"].astype(float)
    return df


def base_unet_log(model) -> dict:
    """The training log of the base UNet that ``model``'s UNet was fine-tuned from: the sidecar of
    :data:`~facelab.diffusion.model.QUICK_BASE_CHECKPOINT` when its sha256 is the one the UNet's log names (its
    ``base_sha256``); ``{}`` for a UNet trained in one run, or when that base is not the one on disk."""
    from facelab import checkpoints
    from facelab.diffusion.model import QUICK_BASE_CHECKPOINT

    sha = model.info.get("training", {}).get("base_sha256")
    if not sha:
        return {}
    try:
        side = checkpoints.read_sidecar(QUICK_BASE_CHECKPOINT)
    except checkpoints.CheckpointError:
        return {}
    return checkpoints.flat_log(side) if side.get("sha256") == sha else {}


def training_times(model) -> pd.DataFrame:
    """Per part of the quick model (autoencoder, base UNet, fine-tuning stages of the book's UNet), the steps, batch
    and CPU minutes its training logs record, and the total."""
    info = model.info
    vae, unet, base = info.get("vae_training", {}), info.get("training", {}), base_unet_log(model)
    parts = {"autoencoder": vae}
    if "stages" in unet:
        parts["base UNet"] = base
        parts["fine-tuning stages"] = {"steps": sum(st["steps"] for st in unet["stages"]),
                                       "batch_size": unet.get("batch_size"),
                                       "train_seconds": unet.get("train_seconds_total")}
    else:
        parts["UNet"] = unet
    out = pd.DataFrame({"steps": [log.get("steps") for log in parts.values()],
                        "batch": [log.get("batch_size") for log in parts.values()],
                        "CPU minutes": [round(float(log["train_seconds"]) / 60, 1) if log.get("train_seconds")
                                        else np.nan for log in parts.values()]}, index=list(parts)).astype(object)
    out.loc["total"] = [sum(int(v) for v in out["steps"] if v is not None), "",
                        round(float(out["CPU minutes"].astype(float).sum(min_count=len(parts))), 1)]
    return out


def model_table(model) -> pd.DataFrame:
    """What the quick latent diffusion model is and what it cost to train (from its checkpoints' logs; the steps and
    minutes of each part as :func:`training_times` counts them)."""
    info = model.info
    vae, unet = info.get("vae_training", {}), info.get("training", {})
    stages = unet.get("stages")
    n_vae = sum(p.numel() for p in model.vae.parameters()) if model.vae is not None else 0
    n_unet = sum(p.numel() for p in model.unet.parameters())
    z = model.unet.config
    rows = {
        "autoencoder": f"AutoencoderKL {model.image_size}x{model.image_size}x3 <-> {z.sample_size}x{z.sample_size}x"
                       f"{z.in_channels}, {n_vae / 1e6:.2f} M parameters",
        "autoencoder held-out PSNR (dB)": _round(vae.get("held_out_psnr_db")),
        "UNet": f"UNet2DConditionModel, {n_unet / 1e6:.2f} M parameters, cross-attention to "
                f"{getattr(model.text_encoder, 'max_length', '?')} MiniLM token states (padding masked)",
    }
    if stages:
        losses = ", ".join(f"{st.get('attention_loss', 0):g}" for st in stages)
        weights = ", ".join(sorted({f"{st.get('distill_weight', 0):g}" for st in stages}))
        rows["fine-tuning stages"] = (f"{len(stages)}, from the base UNet: attention loss {losses}; distillation "
                                      f"towards the base, weight {weights}")
    for part, r in training_times(model).drop("total").iterrows():
        rows[f"{part}: CPU minutes"] = r["CPU minutes"] if pd.notna(r["CPU minutes"]) else "?"
        rows[f"{part}: steps x batch"] = f"{r['steps'] if r['steps'] is not None else '?'} x {r['batch'] or '?'}"
    rows.update({
        "training images (identities x views)": f"{unet.get('n_identities', '?')} x {unet.get('per_identity', '?')}",
        "distinct captions": unet.get("n_captions", "?"),
        "classifier-free guidance": f"empty prompt dropped in with p = {unet.get('p_uncond', '?')}",
        "noise schedule": "scaled-linear betas 0.00085-0.012, 1000 steps (Stable Diffusion's)",
        "UNet sha256": str(info.get("sha256", "?"))[:16] + "...",
    })
    return pd.Series(rows, name="quick latent diffusion model").to_frame()


def _round(v, d=1):
    return round(float(v), d) if v is not None else "?"


def experiment_settings(model, config, *, n_faces: int = 64, seed: int = 0, pgd_epsilon: float = 4 / 255,
                        victims: Sequence[str] = ("dlib-resnet", "sface"),
                        surrogate_pool: Sequence[str] = ("dlib-resnet", "synth-plain", "synth-residual"),
                        sweep_victim: str = "sface", diffaim_multipliers: Sequence[float] = (0.5, 1.0, 2.0),
                        pgd_multipliers: Sequence[float] = (0.5, 1.0, 2.0, 4.0), batch_size: int = 4,
                        n_threshold_identities: int = 40, calibrate_margin: bool = True) -> dict:
    """Everything that decides the experiment's results, as the JSON settings of its stored results.
    ``calibrate_margin``: DiffAIM's perceptual margin is the mean 1 - SSIM of the PGD white-box run (made first),
    not ``config.perceptual_margin``."""
    return {"config": dataclasses.asdict(config), "n_faces": int(n_faces), "seed": int(seed),
            "pgd_epsilon": float(pgd_epsilon), "pgd_steps": int(config.gradient_steps), "victims": list(victims),
            "surrogate_pool": list(surrogate_pool), "sweep_victim": sweep_victim,
            "diffaim_multipliers": [float(m) for m in diffaim_multipliers],
            "pgd_multipliers": [float(m) for m in pgd_multipliers], "batch_size": int(batch_size),
            "n_threshold_identities": int(n_threshold_identities), "model_sha256": model.info.get("sha256"),
            "vae_sha256": model.info.get("vae_sha256"), "image_size": int(model.image_size),
            "calibrate_margin": bool(calibrate_margin)}


def _config_of(settings):
    from facelab.privacy.diffaim import DiffAIMConfig

    return DiffAIMConfig(**settings["config"])


# --------------------------------------------------------------------------------------------- data
def attack_pairs(identities: Sequence, *, seed: int = 0) -> np.ndarray:
    """Index pairs (source, target) where each source gets a target image of a different identity (a random
    derangement over identities; deterministic for a seed)."""
    ids = np.asarray(identities)
    rng = np.random.default_rng(seed)
    n = len(ids)
    for _ in range(1000):
        perm = rng.permutation(n)
        if np.all(ids[perm] != ids):
            return np.stack([np.arange(n), perm], 1)
    raise ValueError("cannot pair every source with a different identity: need at least two identities")


def protection_data(size: int = 64, n_faces: int = 64, n_threshold_identities: int = 40, per_identity: int = 3,
                    nuisance: str = "mild", seed: int = 0) -> dict:
    """Synthetic faces for a protection experiment, from identities never used in training (>= 100000).

    Returns a dict with ``sources``/``targets`` (N, 3, size, size) and their ``*_landmarks`` (N, 68, 2) and
    ``*_ids`` (N faces of N different identities, targets of N other identities), and a labelled set
    ``threshold_images``/``threshold_landmarks``/``threshold_ids`` (``n_threshold_identities x per_identity``
    images of yet other identities) for measuring the victims' thresholds.
    """
    from facelab.synth import FaceWorld

    if n_faces > 500:
        raise ValueError(f"n_faces must be at most 500 (source and target identity ranges), got {n_faces}")
    world = FaceWorld(seed=0, size=size)
    g = torch.Generator().manual_seed(seed)
    src = world.sample(n_identities=n_faces, identity_offset=100000, nuisance=nuisance, expression="random",
                       generator=g)
    tgt = world.sample(n_identities=n_faces, identity_offset=100500, nuisance=nuisance, expression="random",
                       generator=g)
    thr = world.sample(n_identities=n_threshold_identities, per_identity=per_identity, identity_offset=101000,
                       nuisance=nuisance, expression="random", generator=g)
    return {"sources": src.images, "source_landmarks": src.landmarks, "source_ids": src.labels["identity"].to_numpy(),
            "targets": tgt.images, "target_landmarks": tgt.landmarks, "target_ids": tgt.labels["identity"].to_numpy(),
            "threshold_images": thr.images, "threshold_landmarks": thr.landmarks,
            "threshold_ids": thr.labels["identity"].to_numpy()}


def real_pair(source: str = "Barack Obama", target: str = "Joe Biden", size: int = 64) -> dict:
    """One real photo of ``source`` and one of ``target`` (``facelab.photos``), cropped like the synthetic world's
    faces (:func:`align_to_world`). Returns ``images`` (2, 3, size, size), ``landmarks`` (2, 68, 2), ``names``."""
    a, b = real_photos_of(source, size, limit=1), real_photos_of(target, size, limit=1)
    return {"images": torch.cat([a["images"], b["images"]]), "landmarks": torch.cat([a["landmarks"], b["landmarks"]]),
            "names": [f"{source} ({a['names'][0]})", f"{target} ({b['names'][0]})"]}


# --------------------------------------------------------------------------------------------- inversion
def concat_inversions(parts: Sequence):
    """One :class:`~facelab.diffusion.inversion.Inversion` of the images of several (same steps, same prompt)."""
    from facelab.diffusion.inversion import Inversion

    a = parts[0]
    per_image = a.cond.shape[0] > 1 or len(parts) == 1
    cond = torch.cat([p.cond for p in parts]) if per_image else a.cond
    return Inversion(timesteps=a.timesteps, xts=torch.cat([p.xts for p in parts], 1),
                     residuals=None if a.residuals is None else torch.cat([p.residuals for p in parts], 1),
                     cond=cond, eta=a.eta, guidance_scale=a.guidance_scale, uncond=a.uncond)


def invert_in_chunks(model, images, config, *, batch_size: int = 4, seed: int = 1):
    """Edit-friendly DDPM inversion of ``images`` in chunks of ``batch_size``; the chunk starting at image ``k``
    draws its noise from a generator seeded with ``seed + k``, so a chunk inverts the same way alone or in a
    batch (what :func:`live_check` relies on)."""
    from facelab.diffusion.inversion import ddpm_inversion

    parts = []
    for c0 in range(0, images.shape[0], batch_size):
        chunk = images[c0:c0 + batch_size]
        parts.append(ddpm_inversion(model, chunk, [config.prompt or ""] * chunk.shape[0],
                                    num_steps=config.num_steps, guidance_scale=config.guidance_scale_source,
                                    generator=torch.Generator().manual_seed(seed + c0)))
    return concat_inversions(parts)


# --------------------------------------------------------------------------------------------- the experiment
def _run_name(method: str, surrogates: Sequence[str], multiplier: float) -> str:
    return f"{method}|{'+'.join(surrogates)}|x{float(multiplier):g}"


def _surrogate_sets(settings) -> dict:
    """name -> surrogate list for every distinct set the experiment needs (white box and each victim's black box)."""
    pool = list(settings["surrogate_pool"])
    sets = {"+".join(pool): pool}
    for v in list(settings["victims"]) + [settings["sweep_victim"]]:
        s = [n for n in pool if n != v]
        sets["+".join(s)] = s
    return sets


@torch.no_grad()
def _score_all(models, images, landmarks, targets, target_landmarks, target_emb) -> dict:
    return {n: m.score(m.embed(images, landmarks), target_emb[n]).cpu().float() for n, m in models.items()}


def _mean_history(history: list) -> list:
    """Average a per-chunk history over the chunks: one row per (step, inner) or per step."""
    if not history:
        return []
    df = pd.DataFrame(history).drop(columns=["chunk"], errors="ignore")
    keys = [k for k in ("step", "inner") if k in df]
    rows = df.groupby(keys, sort=True).mean(numeric_only=True).reset_index().to_dict(orient="records")
    return [{k: (int(v) if k in keys else float(v)) for k, v in r.items()} for r in rows]


def run_experiment(model, models: Mapping, settings: dict, *, data: dict | None = None,
                   progress: Callable[[str], None] | None = print, keep_images: int = 6) -> tuple[dict, dict]:
    """Run the chapter's experiment (see the module docstring) and return ``(state, log)`` for
    :mod:`facelab.checkpoints`: per run and recogniser the similarity of each protected face to its target
    (``"<run>|score|<model>"``), per-face SSIM, PSNR and L-infinity to the source (``"<run>|ssim"`` ...), the first
    ``keep_images`` protected faces as uint8 (``"<run>|images"``); ``log["runs"]`` holds each run's method,
    surrogates, strength, seconds per image and gradient-norm history (mean over chunks)."""
    from facelab.core.images import psnr, ssim
    from facelab.privacy.diffaim import diffaim_protect
    from facelab.privacy.pgd import pgd_protect

    say = progress or (lambda s: None)
    cfg = _config_of(settings)
    data = data or protection_data(settings["image_size"], settings["n_faces"],
                                   n_threshold_identities=settings["n_threshold_identities"], seed=settings["seed"])
    dev = model.device
    S, T = data["sources"].to(dev), data["targets"].to(dev)
    S_lm, T_lm = data["source_landmarks"].to(dev), data["target_landmarks"].to(dev)
    bs = settings["batch_size"]
    with Timer() as t_inv:
        inv = invert_in_chunks(model, S, cfg, batch_size=bs, seed=settings["seed"] + 1)
    with torch.no_grad():
        recon = torch.cat([model.decode(inv.xts[-1][i:i + 16]) for i in range(0, S.shape[0], 16)])
        target_emb = {n: m.embed(T, T_lm) for n, m in models.items()}
    say(f"inverted {S.shape[0]} faces in {t_inv.seconds:.0f} s")
    state, runs = {}, []

    def keep(name, x, method, surrogates, mult, eps, res=None):
        sc = _score_all(models, x, S_lm, T, T_lm, target_emb)
        for n, v in sc.items():
            state[f"{name}|score|{n}"] = v
        with torch.no_grad():
            state[f"{name}|ssim"] = ssim(x, S).cpu().float()
            state[f"{name}|psnr"] = psnr(x, S).cpu().float()
            state[f"{name}|linf"] = (x - S).abs().flatten(1).amax(1).cpu().float()
            state[f"{name}|ssim_to_reconstruction"] = ssim(x, recon).cpu().float()
        state[f"{name}|images"] = (x[:keep_images].clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        runs.append({"name": name, "method": method, "surrogates": list(surrogates), "multiplier": float(mult),
                     "strength": float(eps), "seconds_per_image": None if res is None else res.seconds_per_image,
                     "history": [] if res is None else _mean_history(res.history)})

    keep("reconstruction||x1", recon, "reconstruction", [], 1.0, 0.0)
    sets = _surrogate_sets(settings)
    todo = [("PGD", key, 1.0) for key in sets] + [("DiffAIM", key, 1.0) for key in sets]
    sweep_key = "+".join(n for n in settings["surrogate_pool"] if n != settings["sweep_victim"])
    todo += [("DiffAIM", sweep_key, m) for m in settings["diffaim_multipliers"] if m != 1.0]
    todo += [("PGD", sweep_key, m) for m in settings["pgd_multipliers"] if m != 1.0]
    kw = dict(landmarks=S_lm, target_landmarks=T_lm, source_ids=data["source_ids"], target_ids=data["target_ids"],
              batch_size=bs)
    margin = None if settings.get("calibrate_margin") else cfg.perceptual_margin
    for method, key, mult in todo:
        sur = [models[n] for n in sets[key]]
        name = _run_name(method, sets[key], mult)
        if method == "DiffAIM":
            if margin is None:       # calibrated on the PGD white-box run (the first run of the list)
                white = _run_name("PGD", settings["surrogate_pool"], 1.0)
                margin = round(float((1 - state[f"{white}|ssim"]).mean()), 6)
                cfg = dataclasses.replace(cfg, perceptual_margin=margin)
                say(f"perceptual margin (mean 1 - SSIM of {white}): {margin:.4f}")
            c = dataclasses.replace(cfg, epsilon=cfg.epsilon * mult)
            res = diffaim_protect(model, S, T, sur, config=c, inversion=inv, **kw)
            eps = c.epsilon
        else:
            eps = settings["pgd_epsilon"] * mult
            res = pgd_protect(S, T, sur, epsilon=eps, steps=settings["pgd_steps"], n_augment=cfg.n_augment,
                              seed=cfg.seed, **kw)
        keep(name, res.images, method, sets[key], mult, eps, res)
        say(f"{name}: {res.seconds_per_image:.2f} s/image, SSIM {float(state[name + '|ssim'].mean()):.3f}")
    log = {"runs": runs, "inversion_seconds_per_image": t_inv.seconds / S.shape[0], "perceptual_margin": margin,
           "threads": torch.get_num_threads(), "torch": torch.__version__,
           "keep_images": keep_images}
    return state, log


class Experiment:
    """The experiment's stored results (:func:`load_or_run_experiment`)."""

    def __init__(self, state: dict, meta: dict):
        self.state = state
        self.meta = meta
        self.settings = meta["settings"]
        self.log = meta.get("log", {})
        self.runs = pd.DataFrame([{k: v for k, v in r.items() if k != "history"} for r in self.log["runs"]])

    @property
    def config(self):
        """The DiffAIM settings the runs used (the perceptual margin as calibrated in the run)."""
        return dataclasses.replace(_config_of(self.settings), perceptual_margin=self.margin)

    @property
    def margin(self) -> float:
        """The perceptual margin: mean 1 - SSIM of the PGD white-box run at x1 (:func:`calibrate_perceptual_margin
        <facelab.privacy.diffaim.calibrate_perceptual_margin>`)."""
        return float(self.log["perceptual_margin"])

    def run(self, method: str, surrogates: Sequence[str], multiplier: float = 1.0) -> str:
        name = _run_name(method, surrogates, multiplier)
        if f"{name}|ssim" not in self.state:
            raise KeyError(f"no stored run {name!r}; runs are {list(self.runs['name'])}")
        return name

    def black_box(self, method: str, victim: str, multiplier: float = 1.0) -> str:
        return self.run(method, [n for n in self.settings["surrogate_pool"] if n != victim], multiplier)

    def white_box(self, method: str) -> str:
        return self.run(method, self.settings["surrogate_pool"])

    def scores(self, name: str, victim: str) -> np.ndarray:
        return self.state[f"{name}|score|{victim}"].numpy()

    def values(self, name: str, what: str) -> np.ndarray:
        return self.state[f"{name}|{what}"].numpy()

    def images(self, name: str) -> torch.Tensor:
        return self.state[f"{name}|images"].float() / 255

    def history(self, name: str) -> pd.DataFrame:
        r = next(r for r in self.log["runs"] if r["name"] == name)
        return pd.DataFrame(r["history"])

    def seconds_per_image(self, name: str) -> float:
        return float(self.runs.set_index("name").loc[name, "seconds_per_image"])


def load_or_run_experiment(model, models: Mapping, settings: dict, *, data: dict | None = None,
                           allow_run: bool = True, progress=print) -> Experiment:
    """The experiment's results from ``data/models/diffaim_runs_quick.*`` when they were made with ``settings``
    (which include the diffusion model's sha256); otherwise run it (tens of minutes on two CPU cores) and store it.
    ``allow_run=False`` raises :class:`facelab.checkpoints.CheckpointError` instead."""
    from facelab import checkpoints

    state, meta = checkpoints.load_or_train(
        QUICK_RUNS, lambda s: run_experiment(model, models, s, data=data, progress=progress), settings=settings,
        restore=RUNS_COMMAND, allow_train=allow_run)
    return Experiment(state, meta)


def experiment_outcomes(exp: Experiment, thresholds: pd.DataFrame, fars: Sequence[float] = FARS) -> dict:
    """Face-by-face outcomes of the stored runs at the chapter's measured thresholds, keyed as
    :func:`success_table` expects: ``(method, "black-box" | "white-box", victim)`` and
    ``("reconstruction", "no attack", victim)`` for every victim of the experiment (white box only for victims in
    the surrogate pool)."""
    out = {}
    pool = exp.settings["surrogate_pool"]

    def outcome(name, v):
        s = exp.scores(name, v)
        thr = thresholds.loc[v]
        return {**{far_key(f): s >= thr[far_key(f)] for f in fars}, "score": s}

    for method in ("DiffAIM", "PGD"):
        for v in exp.settings["victims"]:
            if v in pool:
                out[(method, "white-box", v)] = outcome(exp.white_box(method), v)
            out[(method, "black-box", v)] = outcome(exp.black_box(method, v), v)
    for v in exp.settings["victims"]:
        out[("reconstruction", "no attack", v)] = outcome("reconstruction||x1", v)
    return out


def quality_from_experiment(exp: Experiment) -> pd.DataFrame:
    """Mean SSIM, PSNR and L-infinity (/255) to the source of each stored run at strength x1, plus SSIM to the
    unguided reconstruction (the change the guidance itself made) and seconds per image."""
    rows = []
    for r in exp.log["runs"]:
        if r["multiplier"] != 1.0:
            continue
        n = r["name"]
        rows.append({"method": r["method"], "surrogates": ", ".join(r["surrogates"]) or "-",
                     "SSIM": float(exp.values(n, "ssim").mean()), "PSNR (dB)": float(exp.values(n, "psnr").mean()),
                     "Linf (/255)": float(exp.values(n, "linf").mean() * 255),
                     "SSIM to reconstruction": float(exp.values(n, "ssim_to_reconstruction").mean()),
                     "s/image": r["seconds_per_image"]})
    return pd.DataFrame(rows)


def sweep_table(exp: Experiment, thresholds: pd.DataFrame, fars: Sequence[float] = FARS) -> pd.DataFrame:
    """The strength sweep against ``settings["sweep_victim"]`` (black box): per method and multiplier the strength
    (latent clamp or pixel budget), mean SSIM and PSNR, and success at each FAR with its Wilson interval."""
    from facelab.studies._privacy_protocol import rate_columns

    v = exp.settings["sweep_victim"]
    sur = [n for n in exp.settings["surrogate_pool"] if n != v]
    thr = thresholds.loc[v]
    rows = []
    for method, mults in (("DiffAIM", exp.settings["diffaim_multipliers"]), ("PGD", exp.settings["pgd_multipliers"])):
        for m in mults:
            name = exp.run(method, sur, m)
            s = exp.scores(name, v)
            r = next(r for r in exp.log["runs"] if r["name"] == name)
            rows.append({"method": method, "multiplier": m, "strength": r["strength"],
                         "SSIM": float(exp.values(name, "ssim").mean()),
                         "PSNR (dB)": float(exp.values(name, "psnr").mean()),
                         **rate_columns({far_key(f): s >= thr[far_key(f)] for f in fars}),
                         "mean score": float(s.mean())})
    return pd.DataFrame(rows)


def matched_ssim_table(curve: pd.DataFrame, far: float = 0.01) -> pd.DataFrame:
    """For each DiffAIM point of a sweep, PGD's success at the same mean SSIM, linearly interpolated between the two
    PGD strengths that bracket it (NaN when DiffAIM's SSIM lies outside PGD's range: then PGD's nearest point is
    named instead)."""
    c = far_key(far)
    pgd = curve[curve.method == "PGD"].sort_values("SSIM")
    rows = []
    for _, d in curve[curve.method == "DiffAIM"].iterrows():
        x, y = pgd["SSIM"].to_numpy(), pgd[c].to_numpy()
        inside = x.min() <= d["SSIM"] <= x.max()
        near = pgd.iloc[int(np.abs(x - d["SSIM"]).argmin())]
        rows.append({"DiffAIM multiplier": d["multiplier"], "DiffAIM SSIM": d["SSIM"], f"DiffAIM {c}": d[c],
                     f"PGD {c} at that SSIM": float(np.interp(d["SSIM"], x, y)) if inside else float("nan"),
                     "nearest PGD point": f"x{near['multiplier']:g}: SSIM {near['SSIM']:.3f}, {c} {near[c]:.2f}"})
    return pd.DataFrame(rows)


def gradient_norms(exp: Experiment, name: str) -> pd.DataFrame:
    """The gradient-norm history of a DiffAIM run: per (manipulated step, inner step) the L2 norms (w.r.t. the
    decoded image) of the identity term's and the perceptual term's gradients, their ratio, the terms themselves,
    1 - SSIM to the reference and the fraction of latent entries at the clamp (means over faces)."""
    h = exp.history(name)
    h.insert(2, "perceptual / identity", h["grad perceptual"] / h["grad identity"].clip(lower=1e-12))
    return h


def plot_gradient_norms(hist: pd.DataFrame, margin: float, ax=None):
    """Both terms' gradient norms per inner step (left axis, log) and 1 - SSIM against the margin (right axis)."""
    import matplotlib.pyplot as plt

    from facelab.plotting import PALETTE

    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3))
    x = np.arange(len(hist))
    ax.semilogy(x, hist["grad identity"].clip(lower=1e-8), "o-", color=PALETTE[0], label="|grad identity|")
    ax.semilogy(x, hist["grad perceptual"].clip(lower=1e-8), "s-", color=PALETTE[1], label="|grad perceptual|")
    ax.set(xlabel="inner step (manipulated steps in turn)", ylabel="L2 norm on the image")
    ax2 = ax.twinx()
    ax2.plot(x, hist["1 - SSIM"], ":", color="grey", label="1 - SSIM")
    ax2.axhline(margin, color="grey", lw=0.8, ls="--", label="margin")
    ax2.set_ylabel("1 - SSIM to the reference")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="best")
    return ax.figure


def live_check(model, models: Mapping, exp: Experiment, data: dict, *, victim: str = "dlib-resnet",
               n_faces: int | None = None) -> pd.DataFrame:
    """Rerun the first chunk of faces of the black-box runs against ``victim`` (DiffAIM and PGD) with the stored
    settings and compare every recogniser's similarity to the stored one: the largest absolute difference per
    method (float noise only when the stored results are what this code computes)."""
    from facelab.privacy.diffaim import diffaim_protect
    from facelab.privacy.pgd import pgd_protect

    st = exp.settings
    cfg = exp.config
    k = n_faces or st["batch_size"]
    dev = model.device
    S, T = data["sources"][:k].to(dev), data["targets"][:k].to(dev)
    S_lm, T_lm = data["source_landmarks"][:k].to(dev), data["target_landmarks"][:k].to(dev)
    sur_names = [n for n in st["surrogate_pool"] if n != victim]
    sur = [models[n] for n in sur_names]
    kw = dict(landmarks=S_lm, target_landmarks=T_lm, batch_size=st["batch_size"])
    with Timer() as t:
        inv = invert_in_chunks(model, S, cfg, batch_size=st["batch_size"], seed=st["seed"] + 1)
        d = diffaim_protect(model, S, T, sur, config=cfg, inversion=inv, **kw)
    p = pgd_protect(S, T, sur, epsilon=st["pgd_epsilon"], steps=st["pgd_steps"], n_augment=cfg.n_augment,
                    seed=cfg.seed, **kw)
    with torch.no_grad():
        temb = {n: m.embed(T, T_lm) for n, m in models.items()}
    rows = []
    for method, x in (("DiffAIM", d.images), ("PGD", p.images)):
        live = _score_all(models, x, S_lm, T, T_lm, temb)
        name = exp.run(method, sur_names)
        diff = max(float(np.abs(live[n].numpy() - exp.scores(name, n)[:k]).max()) for n in models)
        rows.append({"method": method, "faces rerun": k, "surrogates": ", ".join(sur_names),
                     "max |live - stored| similarity": diff,
                     "seconds (live, incl. inversion)": t.seconds if method == "DiffAIM" else p.seconds})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- running (live)
def run_protocol(protect: Callable, models: Mapping, victims: Sequence[str] | None = None
                 ) -> tuple[dict, pd.DataFrame]:
    """Run an attack in the white-box setting (one run with every differentiable model as surrogate) and the
    leave-one-out black-box setting (one run per victim, without it).

    ``protect(surrogates: list[FaceModel]) -> ProtectionResult``. Returns ``runs[(setting, victim)] = images`` and
    a timing table (one row per run: setting, held-out victim, surrogates, seconds per image).
    """
    victims = list(models) if victims is None else list(victims)
    runs, rows = {}, []
    white = protect([m for m in models.values() if m.differentiable])
    rows.append({"setting": "white-box", "held out": "-", "surrogates": ", ".join(white.surrogates),
                 "s/image": white.seconds_per_image})
    for v in victims:
        runs[("white-box", v)] = white.images
        r = protect([models[n] for n in leave_one_out(models, v)])
        runs[("black-box", v)] = r.images
        rows.append({"setting": "black-box", "held out": v, "surrogates": ", ".join(r.surrogates),
                     "s/image": r.seconds_per_image})
    return runs, pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- success
def success_rates(model, protected, landmarks, targets, target_landmarks, thresholds: Mapping,
                  fars: Sequence[float] = FARS) -> dict:
    """Impersonation success of ``protected`` vs ``targets`` for one victim (a FaceModel) at each FAR: the rate,
    its Wilson interval (``"FAR=0.01 lo"``, ``"FAR=0.01 hi"``), the number of faces ``n`` and the mean score."""
    return rates_of(verification_outcomes(model, protected, landmarks, targets, target_landmarks, thresholds, fars))


def success_outcomes(runs: Mapping, models: Mapping, thresholds: pd.DataFrame, landmarks, targets, target_landmarks,
                     fars: Sequence[float] = FARS) -> dict:
    """Face-by-face impersonation outcomes of many runs: ``runs[(method, setting, victim)] = protected images`` ->
    ``{(method, setting, victim): {"FAR=0.1": bool (N,), ..., "score": similarities (N,)}}``; face i succeeds when
    the victim accepts (protected i, target i)."""
    return runs_outcomes(runs, models, thresholds, landmarks, targets, target_landmarks, fars, accept=True)


def success_table(outcomes: Mapping) -> pd.DataFrame:
    """One row per (method, setting, victim) of :func:`success_outcomes`: success rate at each FAR with its 95 %
    Wilson interval (``FAR=0.01 lo`` / ``hi``), the number of faces ``n`` and the mean similarity to the target."""
    return outcome_table(outcomes, ("method", "setting", "victim"))


def summary_table(table: pd.DataFrame, fars: Sequence[float] = FARS) -> pd.DataFrame:
    """Success per method and setting pooled over the scored victims, with Wilson intervals
    (:func:`facelab.studies._privacy_protocol.pooled_summary`)."""
    return pooled_summary(table, ("method", "setting"), fars)


def strength_sweep(attacks: Mapping[str, Callable[[float], torch.Tensor]], multipliers: Sequence[float], *,
                   victim: str, models: Mapping, thresholds: pd.DataFrame, originals, landmarks,
                   targets, target_landmarks, fars: Sequence[float] = FARS,
                   done: Mapping[tuple, torch.Tensor] | None = None) -> pd.DataFrame:
    """Quality against success as the attack strength varies (live; the chapter's stored sweep is
    :func:`sweep_table`).

    ``attacks[name](multiplier)`` returns protected images made with the method's strength (its clamp or budget)
    scaled by ``multiplier``; ``done[(name, multiplier)]`` supplies runs that exist already (not recomputed).
    Returns one row per (method, multiplier): SSIM and PSNR to ``originals`` and the impersonation success against
    ``victim`` at each FAR with its Wilson interval.
    """
    done = dict(done or {})
    rows = []
    for name, attack in attacks.items():
        for mult in multipliers:
            x = done[(name, mult)] if (name, mult) in done else attack(mult)
            q = quality_table({"x": x}, originals).loc["x"]
            r = success_rates(models[victim], x, landmarks, targets, target_landmarks,
                              thresholds.loc[victim].to_dict(), fars)
            rows.append({"method": name, "multiplier": mult, "SSIM": float(q["SSIM"]),
                         "PSNR (dB)": float(q["PSNR (dB)"]),
                         **{k: v for k, v in r.items() if k.startswith("FAR")}})
    return pd.DataFrame(rows)


def manipulated_steps_table(model, inversion, manipulated_steps: int) -> pd.DataFrame:
    """Signal and noise level of the reverse steps DiffAIM manipulates (the last ``manipulated_steps``)."""
    steps = inversion.timesteps[-manipulated_steps:].cpu()
    abar = model.scheduler.alphas_cumprod[steps]
    return pd.DataFrame({"timestep t": steps.numpy(), "signal sqrt(abar_t)": abar.sqrt().numpy(),
                         "noise sqrt(1 - abar_t)": (1 - abar).sqrt().numpy()}).rename_axis("manipulated step")


# --------------------------------------------------------------------------------------------- figures
def plot_training_curve(log: Mapping, ax=None, *, title: str = "quick latent diffusion model (UNet)"):
    """A training loss curve (``log["loss_curve"]``: rows with ``step`` and ``loss``). A staged log (``"stages"``,
    :func:`facelab.diffusion.train.train_staged_unet`) is drawn stage after stage: the denoising loss and, on a second
    axis, the share of the makeup words' attention inside their regions (both as running means over 25 logged rows),
    with the stages' boundaries dashed."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 2.6))
    if "stages" not in log:
        curve = pd.DataFrame(log["loss_curve"])
        ax.plot(curve["step"], curve["loss"])
        ax.set(xlabel="training step", ylabel="loss", title=title)
        return ax.figure
    parts, offset = [], 0
    for st in log["stages"]:
        c = pd.DataFrame(st["loss_curve"])
        c["step"] = c["step"] + offset
        parts.append(c)
        offset += int(st["steps"])
        ax.axvline(offset, color="0.7", ls="--", lw=0.8)
    curve = pd.concat(parts, ignore_index=True)
    smooth = lambda col: curve[col].rolling(25, min_periods=1).mean()
    ax.plot(curve["step"], smooth("mse"), label="denoising loss")
    ax.set(xlabel="fine-tuning step", ylabel="denoising loss", title=title)
    if "attention_mass" in curve:
        ax2 = ax.twinx()
        ax2.plot(curve["step"], smooth("attention_mass"), color="C1", label="attention inside the region")
        ax2.set_ylabel("attention inside the region", color="C1")
        ax2.set_ylim(0, 1)
        ax2.grid(False)
    return ax.figure


def training_summary(log: Mapping) -> pd.DataFrame:
    """A training log (UNet or autoencoder) as a one-column table."""
    return pd.Series({"steps": log.get("steps"), "batch size": log.get("batch_size"), "images": log.get("n_images"),
                      "parameters": log.get("n_parameters"),
                      "training minutes (CPU)": round(float(log.get("train_seconds", float("nan"))) / 60, 1),
                      "processes x threads": f"{log.get('num_processes', 1)} x {log.get('threads', '?')}",
                      "final loss (mean of the last 10 logged)": _round(log.get("final_loss_mean_last_10_logged"), 4),
                      "sha256": str(log.get("sha256", "?"))[:16] + "..."}, name="training log").to_frame()


def plot_quality_vs_success(curve: pd.DataFrame, far: float = 0.01, ax=None, *, victim: str = "dlib"):
    """:func:`sweep_table`'s curve: success at ``far`` (with its Wilson interval as error bars) against SSIM, one
    line per method."""
    import matplotlib.pyplot as plt

    from facelab.plotting import PALETTE

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    c = far_key(far)
    for (method, g), colour in zip(curve.groupby("method"), PALETTE):
        yerr = None
        if f"{c} lo" in g:
            yerr = np.stack([g[c] - g[f"{c} lo"], g[f"{c} hi"] - g[c]])
        ax.errorbar(g["SSIM"], g[c], yerr=yerr, fmt="o-", color=colour, capsize=3, label=method)
    ax.set(xlabel="SSIM to the source", ylabel=f"success at FAR {far:.0%} ({victim}, black box)",
           title="quality vs success")
    ax.legend()
    return ax.figure


# --------------------------------------------------------------------------------------------- command line
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m facelab.studies.privacy_diffaim [--threads N] [--check]``: (re)make the chapter's stored
    experiment with the quick model's checkpoint (skipped when the stored one matches); ``--check`` only says
    whether it is up to date."""
    import argparse

    from facelab import checkpoints
    from facelab.diffusion import quick_model
    from facelab.models import load_face_models

    ap = argparse.ArgumentParser(prog=RUNS_COMMAND, description=main.__doc__.split(":")[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    model = quick_model(allow_train=False)
    models = load_face_models()
    settings, data = chapter_settings(model)
    if a.check:
        why = checkpoints.status(QUICK_RUNS, settings, restore=RUNS_COMMAND)
        print(why)
        return 0 if why == "ok" else 1
    exp = load_or_run_experiment(model, models, settings, data=data)
    print(exp.runs.to_string())
    return 0


def chapter_settings(model, *, seed: int = 0, n_faces: int = 64, pgd_epsilon: float = 4 / 255) -> tuple[dict, dict]:
    """The quick profile's experiment settings and data, exactly as chapter 05 builds them: 64 faces,
    :func:`quick_config`, the perceptual margin calibrated on PGD at ``pgd_epsilon``, the sweep at DiffAIM clamps
    x1 / x4 and PGD budgets x1 / x2 / x4 against SFace (black box)."""
    data = protection_data(model.image_size, n_faces, n_threshold_identities=40, seed=seed)
    config = quick_config(seed, perceptual_margin=0.0)
    return experiment_settings(model, config, n_faces=n_faces, seed=seed, pgd_epsilon=pgd_epsilon,
                               diffaim_multipliers=(1.0, 4.0), pgd_multipliers=(1.0, 2.0, 4.0)), data


if __name__ == "__main__":
    raise SystemExit(main())


def _blend_label(row: dict) -> str:
    """How a benchmark row's edit limited itself inside the region (MASQUE's local blend)."""
    t, d = float(row["blend_threshold"]), int(row.get("blend_dilation", 0))
    if t == 0:
        return "region mask"
    return f"word map > {t:g}" + (f", dilated {d}" if d else "")


def attention_training_record(path=None) -> pd.DataFrame:
    """One row per UNet of the attention-supervision record in the folder ``path`` (default
    :data:`ATTENTION_RECORD`): how it was trained (device, steps x batch, attention-loss weight, distillation towards
    a frozen teacher: kind x weight, empty without), its attention gate
    (each word's mass in its landmark region, on ``gate faces`` unseen faces: 24 in the older rows) and
    DDIM-inversion PSNR, the prompt adherence of
    MASQUE's edit without and with guidance on 48 validation people, and of text-to-image generation (32 faces), as
    measured by ``benchmarks/bench_masque_attention.py``. ``local blend`` says where the edits could act inside the
    landmark region: where the word's map exceeds a share of its maximum (optionally after a max-pool dilation of
    that radius, ``MasqueConfig.blend_dilation``), or the whole region (``region mask``); ``MASQUE setting`` which of
    chapter 06's configurations the edits used (``until 2026-12-05``: guidance step 1, the region's mean colour
    anchored; ``since 2026-12-05``: step 0.5, each pixel's chroma kept). Rows measured since 2026-12-05 also have the
    eyeshadow gate's 95 % bootstrap interval (``eyeshadow mass lo`` / ``hi``) and each word's mass from the 16 x 16
    and the 8 x 8 layers alone (NaN in the older rows)."""
    folder = Path(path) if path is not None else ATTENTION_RECORD
    manifest = folder / "runs.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"no attention-training record at {manifest}: expected runs.json listing "
                                f"{{name, description, bench, training}} per UNet")
    rows = []
    for run in json.loads(manifest.read_text()):
        bench = json.loads((folder / run["bench"]).read_text())
        bench = bench[0] if isinstance(bench, list) else bench
        train = json.loads((folder / run["training"]).read_text()) if run.get("training") else {}
        g = bench["gates"]
        row = {"UNet": run["name"], "training": run["description"],
               "steps x batch": f"{train['steps']} x {train['batch_size']}" if train else "",
               "device": train.get("device", ""), "attention loss": train.get("attention_loss", 0.0),
               "distillation": (f"{train.get('distill_kind', 'eps')} x {train['distill_weight']:g}"
                                if train.get("distill_weight") else ""),
               "lipstick mass": g["'lipstick' attention mass in lips"],
               "eyeshadow mass": g["'eyeshadow' attention mass in eyeshadow+eyeliner"],
               "DDIM PSNR (dB)": g["DDIM inversion PSNR (dB)"], "gate faces": int(bench.get("gate_faces", 24)),
               "local blend": _blend_label(bench["masque"][0]),
               "MASQUE setting": bench.get("config", "chapter 06 until 2026-12-05").replace("chapter 06 ", "")}
        for m in bench["masque"]:
            if m["blend_threshold"] != bench["masque"][0]["blend_threshold"]:
                continue
            row[f"{m['prompt']}: edit"] = m["plain adherence"]
            row[f"{m['prompt']}: MASQUE"] = m["MASQUE adherence"]
        for phrase, v in bench["generation"].items():
            row[f"{phrase}: generated"] = v["adherence"]
        # where the benchmark kept them (rows since 2026-12-05): the eyeshadow gate's 95 % interval and each word's
        # mass from one layer resolution alone
        lo_hi = bench.get("gate_intervals", {}).get("'eyeshadow' attention mass in eyeshadow+eyeliner")
        row["eyeshadow mass lo"], row["eyeshadow mass hi"] = lo_hi if lo_hi else (np.nan, np.nan)
        for w in ("lipstick", "eyeshadow"):
            for side in (16, 8):
                row[f"{w} mass, {side} x {side} layers"] = (bench.get("gate_by_layers", {}).get(w, {})
                                                            .get(f"mass_{side}x{side}_layers", np.nan))
        rows.append(row)
    return pd.DataFrame(rows).set_index("UNet")


#: The rule (fixed on 2026-12-05, before the runs it judged were measured) a UNet must meet on validation people to
#: become the book's: the eyeshadow gate's 95 % interval above one half, lipstick mass at least 0.6, MASQUE's
#: adherence at least 0.8 and generated makeup at least 0.9 for both prompts (attention_training_record's columns).
ADOPTION_RULE = {"eyeshadow mass lo": 0.5, "lipstick mass": 0.6, "red lipstick: MASQUE": 0.8,
                 "blue eyeshadow: MASQUE": 0.8, "red lipstick: generated": 0.9, "blue eyeshadow: generated": 0.9}


def adoption_rule(record: pd.DataFrame) -> pd.Series:
    """Whether each row of :func:`attention_training_record` meets :data:`ADOPTION_RULE` (the interval's lower end
    strictly above 0.5, the rest at least their bound). Rows without the interval (measured before 2026-12-05)
    cannot meet it: False."""
    missing = [c for c in ADOPTION_RULE if c not in record.columns]
    if missing:
        raise ValueError(f"the record lacks the rule's columns {missing}: pass attention_training_record()'s frame")
    ok = record["eyeshadow mass lo"] > ADOPTION_RULE["eyeshadow mass lo"]
    for col, bound in ADOPTION_RULE.items():
        if col != "eyeshadow mass lo":
            ok &= record[col] >= bound
    return ok.fillna(False).astype(bool).rename("adoption rule met")


def edit_colour_record(path=None) -> pd.DataFrame:
    """Where the unguided "red lipstick" edit loses its red (``benchmarks/bench_masque_edit_colour.py``, file
    ``edit_colour.json`` of the attention-training record): per UNet and variant of the edit, the prompt adherence,
    the share of the lip region the local blend keeps, the region's mean red of the photos and of the edits, and the
    slope of the edits' red on the photos' (0: the edit overrides the photo's colour; 1: it carries through). Where
    the record has them (``--guided``), rows ``region mask, ...``: the unguided edit and MASQUE's guided edit with its
    colour anchor on and off, all with the region mask only, and the anchor's red (the region's mean red of the
    decoded prediction when the guidance starts, which the anchor holds)."""
    folder = Path(path) if path is not None else ATTENTION_RECORD
    f = folder / "edit_colour.json"
    if not f.is_file():
        raise FileNotFoundError(f"no edit-colour record at {f}: expected bench_masque_edit_colour.py's output")
    rows = []
    for run in json.loads(f.read_text()):
        name = run.get("name") or run["unet"]
        for variant, v in run["variants"].items():
            rows.append({"UNet": name, "edit": variant, "adherence": v["adherence"],
                         "blend keeps (share of region)": v["blend coverage"],
                         "photo red": v["photo RGB"][0], "edit red": v["edit RGB"][0],
                         "edit green": v["edit RGB"][1], "red slope on photo": v["fit"]["R"]["slope"]})
        for variant, v in run.get("guided", {}).items():          # region mask only, unguided and MASQUE
            rows.append({"UNet": name, "edit": f"region mask, {variant}", "adherence": v["adherence"],
                         "blend keeps (share of region)": 1.0, "photo red": float("nan"),
                         "edit red": v["edit RGB"][0], "edit green": v["edit RGB"][1],
                         "red slope on photo": float("nan"),
                         "anchor red": (v["anchor RGB (first guided step)"][0]
                                        if "anchor RGB (first guided step)" in v else float("nan"))})
    return pd.DataFrame(rows).set_index(["UNet", "edit"])


def guidance_record(path=None) -> pd.DataFrame:
    """What MASQUE's guidance trades on each UNet (``benchmarks/bench_masque_guidance.py``, file ``guidance.json`` of
    the attention-training record): per UNet, prompt and run (the unguided edit and MASQUE at several DDIM step
    counts and guidance settings, all with the region mask only, plus two diagnostics at the step-1 setting), the
    prompt adherence with its Wilson interval, McNemar's exact p-values on the same faces against the unguided edit
    of the same step count, against the step-1 setting (8 steps, guidance from half-way, step 1: the record's
    ``chapter setting``, chapter 06's until 2026-12-05; column ``step-1 setting``) on the same UNet and, for the other
    UNets, against the same run of the ``base`` UNet (the one trained without the attention loss that the distilled
    UNets start from; empty for the base UNet itself), the classifier's most frequent readings, the dodging success
    at FAR 1 % in the white box (the two synthetic surrogates, pooled) and the black box (dlib's network) with Wilson
    intervals and McNemar's p-value against the unguided edit on the same pairs, and inside the region the colours'
    spread, high-frequency energy, saturation and mean red."""
    from facelab.metrics import mcnemar_test

    folder = Path(path) if path is not None else ATTENTION_RECORD
    f = folder / "guidance.json"
    if not f.is_file():
        raise FileNotFoundError(f"no guidance record at {f}: expected bench_masque_guidance.py's output")
    record = json.loads(f.read_text())
    base = {(r["prompt"], r["run"]): r.get("correct") for run in record
            if (run.get("name") or run["unet"]) == "base" for r in run["rows"]}

    def p_value(a, b):
        if a is None or b is None:
            return float("nan")
        return float(mcnemar_test(np.asarray(a, bool), np.asarray(b, bool), exact=True).p_value)

    rows = []
    for run in record:
        name = run.get("name") or run["unet"]
        at_chapter = lambda r: ([r["num_steps"], r["adv_start"], r["adv_step"]] == list(run["chapter setting"])
                                and _guidance_variant(r) == "")
        chapter = {r["prompt"]: r.get("correct") for r in run["rows"] if at_chapter(r)}
        for r in run["rows"]:
            vs = (p_value(r.get("correct"), base.get((r["prompt"], r["run"]))) if name != "base"
                  else float("nan"))
            rows.append({"UNet": name, "prompt": r["prompt"], "run": r["run"], "DDIM steps": r["num_steps"],
                         "adv_start": r["adv_start"], "adv_step": r["adv_step"], "variant": _guidance_variant(r),
                         "step-1 setting": at_chapter(r),
                         "adherence": r["adherence"], "adherence lo": r["adherence lo"],
                         "adherence hi": r["adherence hi"], "adherence vs unguided: p": r["adherence vs unguided: p"],
                         "adherence vs step 1: p": p_value(r.get("correct"), chapter.get(r["prompt"])),
                         "adherence vs base: p": vs,
                         "readings": ", ".join(f"{c} {n}" for c, n in r.get("readings", [])),
                         **{f"success {box}{end}": r[f"success {box}{end}"] for box in ("white box", "black box")
                            for end in ("", " lo", " hi", " vs unguided: p")},
                         "colour spread": r["colour spread"], "high-frequency energy": r["high-frequency energy"],
                         "saturation": r["saturation"], "region red": r["region RGB"][0]})
    return pd.DataFrame(rows).set_index(["UNet", "prompt", "run"])


def _guidance_variant(row) -> str:
    """The kind of a ``bench_masque_guidance.py`` run: ``"unguided"``, ``""`` (MASQUE at a guidance setting) or the
    diagnostic its name ends with (``"anchored to the unguided colour"``, ``"chroma held per pixel"``)."""
    if row["adv_step"] is None:
        return "unguided"
    parts = row["run"].split(", ", 3)             # "MASQUE", "8 steps", "0.5 x 1"[, variant]
    return parts[3] if len(parts) == 4 else ""


def guidance_summary(guidance: pd.DataFrame, *, alpha: float = 0.05) -> pd.DataFrame:
    """Per UNet and prompt of :func:`guidance_record`: the unguided edit against MASQUE at the step-1 setting (columns
    ``MASQUE``; adherence, its McNemar ``p``, white-box success, colour spread), and how many of the guidance settings
    (variant ``""``, any step count) read as prompted significantly (McNemar, p < ``alpha``) more and less often than
    the unguided edit of the same step count."""
    rows = []
    for (unet, prompt), g in guidance.groupby(level=["UNet", "prompt"], sort=False):
        unguided = g[g["variant"] == "unguided"].set_index("DDIM steps")["adherence"]
        chapter = g[g["step-1 setting"]].iloc[0]
        u = g[(g["variant"] == "unguided") & (g["DDIM steps"] == chapter["DDIM steps"])].iloc[0]
        settings = g[g["variant"] == ""]
        base = settings["DDIM steps"].map(unguided)
        significant = settings["adherence vs unguided: p"] < alpha
        rows.append({"UNet": unet, "prompt": prompt, "unguided": u["adherence"],
                     "MASQUE": chapter["adherence"], "p": chapter["adherence vs unguided: p"], "settings": len(settings),
                     "more often": int((significant & (settings["adherence"] > base)).sum()),
                     "less often": int((significant & (settings["adherence"] < base)).sum()),
                     "white box, unguided": u["success white box"],
                     "white box, MASQUE": chapter["success white box"],
                     "spread, unguided": u["colour spread"], "spread, MASQUE": chapter["colour spread"]})
    return pd.DataFrame(rows).set_index(["UNet", "prompt"])


def guidance_runs_at_target(guidance: pd.DataFrame, target: float = 0.8) -> dict:
    """Per UNet of :func:`guidance_record`: the MASQUE runs (settings and the chroma-held variant, not the post-hoc
    re-anchored outputs) whose adherence reaches ``target`` on every prompt."""
    out = {}
    for unet, g in guidance.groupby(level="UNet", sort=False):
        g = g.xs(unet)
        runs = g[g["variant"].isin(["", "chroma held per pixel"])]
        worst = runs.groupby(level="run", sort=False)["adherence"].min()
        out[unet] = {"runs": len(worst), "at target": list(worst.index[worst >= target])}
    return out
