"""Chapter 05, "Hiding in plain sight I" (``notebooks/05_privacy_diffaim.ipynb``): the impersonation protocol of
DiffAIM against pixel PGD, its tables and figures.

The methods live in :mod:`facelab.privacy` (:func:`~facelab.privacy.diffaim.diffaim_protect`,
:func:`~facelab.privacy.pgd.pgd_protect`); the protocol pieces both privacy chapters share (measured thresholds,
leave-one-out, quality, Wilson intervals, McNemar tests, real photos) in :mod:`facelab.studies._privacy_protocol`,
re-exported here.

* Impersonation succeeds at a FAR level when similarity(protected image, target image) reaches that victim's
  threshold (the target image is the one the attack was given, as in DiffAIM's protocol); one trial per face.
* :func:`run_protocol` runs an attack white box and leave-one-out black box; :func:`success_outcomes` scores runs
  face by face, :func:`success_table` turns them into rates with Wilson intervals, :func:`paired_tests` compares two
  methods on the same faces (McNemar).
"""

from __future__ import annotations

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
           "plot_quality_vs_success"]


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


def protection_data(size: int = 64, n_faces: int = 16, n_threshold_identities: int = 40, per_identity: int = 3,
                    nuisance: str = "mild", seed: int = 0) -> dict:
    """Synthetic faces for a protection experiment, from identities never used in training (>= 100000).

    Returns a dict with ``sources``/``targets`` (N, 3, size, size) and their ``*_landmarks`` (N, 68, 2) and
    ``*_ids`` (N faces of N different identities, targets of N other identities), and a labelled set
    ``threshold_images``/``threshold_landmarks``/``threshold_ids`` (``n_threshold_identities x per_identity``
    images of yet other identities) for measuring the victims' thresholds.
    """
    from facelab.synth import FaceWorld

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


# --------------------------------------------------------------------------------------------- running
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
    """Quality against success as the attack strength varies: the trade-off curve of the privacy chapters.

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
def plot_training_curve(log: Mapping, ax=None):
    """The quick diffusion model's training loss (``log["loss_curve"]``: rows with ``step`` and ``loss``)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 2.6))
    curve = pd.DataFrame(log["loss_curve"])
    ax.plot(curve["step"], curve["loss"])
    ax.set(xlabel="training step", ylabel="noise-prediction MSE", title="quick face diffusion model")
    return ax.figure


def training_summary(log: Mapping) -> pd.DataFrame:
    """The quick diffusion model's training log as a one-column table."""
    return pd.Series({"steps": log["steps"], "batch size": log["batch_size"], "images": log["n_images"],
                      "distinct captions": log["n_captions"], "parameters": log["n_parameters"],
                      "training minutes": round(log["train_seconds"] / 60, 1),
                      "final loss (mean of last 100 steps)": round(log["final_loss_mean_last_100"], 3),
                      "sha256": log["sha256"][:16] + "..."}, name="training log").to_frame()


def plot_quality_vs_success(curve: pd.DataFrame, far: float = 0.01, ax=None, *, victim: str = "dlib"):
    """:func:`strength_sweep`'s curve: success at ``far`` (with its Wilson interval as error bars) against SSIM, one
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
