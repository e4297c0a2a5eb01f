r"""The denoising loop, DDIM inversion and edit-friendly DDPM inversion, in one readable file.

Notation (Song et al. 2021; Huberman-Spiegelglas et al. 2024). With :math:`\bar\alpha_t` the scheduler's
``alphas_cumprod`` and :math:`\epsilon_\theta(x_t, t, c)` the UNet's noise prediction, one reverse step from
:math:`t` to the previous inference timestep :math:`s` is

.. math::
    \hat x_0 = \frac{x_t - \sqrt{1-\bar\alpha_t}\,\epsilon_\theta}{\sqrt{\bar\alpha_t}},\qquad
    \sigma_t^2 = \eta^2\,\frac{1-\bar\alpha_s}{1-\bar\alpha_t}\Big(1-\frac{\bar\alpha_t}{\bar\alpha_s}\Big),

.. math::
    x_s = \underbrace{\sqrt{\bar\alpha_s}\,\hat x_0 + \sqrt{1-\bar\alpha_s-\sigma_t^2}\,\epsilon_\theta}_{\mu_t(x_t)}
          + \sigma_t z_t .

* **DDIM** (:math:`\eta = 0`) is deterministic; **DDIM inversion** runs the same update forwards in time
  (from :math:`s` to :math:`t`, using :math:`\epsilon_\theta(x_s, s)` as a stand-in for :math:`\epsilon_\theta(x_t, t)`),
  so it reconstructs its input only approximately.
* **Edit-friendly DDPM inversion** (:math:`\eta = 1`) draws :math:`x_1,\dots,x_T` *independently* from
  :math:`q(x_t\mid x_0)` and then solves the reverse update for the noise maps,
  :math:`z_t = (x_s - \mu_t(x_t))/\sigma_t`. Running the reverse loop with those :math:`z_t` gives back
  :math:`x_0` exactly (up to float rounding). We store the residuals :math:`r_t = \sigma_t z_t = x_s - \mu_t(x_t)`,
  which also covers a last step with :math:`\sigma = 0`.

Edits happen in the reverse loop: change the prompt, the guidance scale or (DiffAIM) the latent itself, and keep
the residuals. ``skip`` starts the reverse loop from an intermediate :math:`x_t` so only the last steps are edited.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from facelab.core.images import psnr  # re-exported: reconstruction quality of an inversion, per image in dB

__all__ = ["Inversion", "check_guidance_scale", "noise_prediction", "step_terms", "reverse_step", "ddpm_inversion",
           "ddim_inversion", "reverse_process", "sample", "psnr"]


@dataclass
class Inversion:
    """What an inversion returns.

    Attributes
    ----------
    timesteps : torch.Tensor
        The S inference timesteps, from noisiest to cleanest (as the scheduler orders them).
    xts : torch.Tensor
        (S + 1, N, C, h, w) latents; ``xts[0]`` is :math:`x_T` (noisiest) and ``xts[S]`` the input :math:`x_0`.
    residuals : torch.Tensor or None
        (S, N, C, h, w) DDPM residuals :math:`\\sigma_t z_t` for step ``i`` (from ``xts[i]`` to ``xts[i+1]``);
        None for DDIM.
    cond : torch.Tensor
        The prompt conditioning used (N, L, D).
    eta : float
    guidance_scale : float
    """

    timesteps: torch.Tensor
    xts: torch.Tensor
    residuals: torch.Tensor | None
    cond: torch.Tensor
    eta: float
    guidance_scale: float = 1.0
    uncond: torch.Tensor | None = None

    @property
    def num_steps(self) -> int:
        return int(self.timesteps.shape[0])


def _check_guidance(guidance_scale) -> None:
    """A classifier-free guidance weight must be a finite number >= 0 (a clear error instead of NaN images)."""
    try:
        g = float(guidance_scale)
    except (TypeError, ValueError):
        g = None
    if g is None or not math.isfinite(g) or g < 0:
        raise ValueError(f"guidance_scale must be a finite number >= 0 (1 = the conditional prediction alone, 0 = the "
                         f"unconditional one, > 1 = classifier-free guidance), got {guidance_scale!r}")


def _alpha_bars(scheduler, t: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """:math:`\\bar\\alpha_t` and :math:`\\bar\\alpha_s` for the step from ``t`` to the previous inference timestep."""
    acp = scheduler.alphas_cumprod.to(device)
    s = int(t) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    a_t = acp[int(t)]
    a_s = acp[s] if s >= 0 else scheduler.final_alpha_cumprod.to(device)
    return a_t, a_s


def check_guidance_scale(value, name: str = "guidance_scale") -> float:
    """A classifier-free guidance weight as a float: finite and >= 0 (0 = unconditional, 1 = plain conditional
    prediction, > 1 = guided); anything else is a ``ValueError`` that says so."""
    try:
        _check_guidance(value)
    except ValueError as err:
        raise ValueError(str(err).replace("guidance_scale", name, 1)) from None
    return float(value)


def noise_prediction(model, x: torch.Tensor, t, cond: torch.Tensor, guidance_scale: float = 1.0,
                     uncond: torch.Tensor | None = None) -> torch.Tensor:
    """:math:`\\epsilon_\\theta(x_t, t, c)`, with classifier-free guidance when ``guidance_scale != 1``.

    ``cond``/``uncond`` are (N, L, D) or (1, L, D) (broadcast over the batch). ``guidance_scale`` must be finite and
    >= 0 (:func:`check_guidance_scale`).
    """
    _check_guidance(guidance_scale)
    n = x.shape[0]
    c = cond.expand(n, -1, -1) if cond.shape[0] == 1 else cond
    if guidance_scale == 1.0 or uncond is None:
        return model.unet(x, t, encoder_hidden_states=c).sample
    u = uncond.expand(n, -1, -1) if uncond.shape[0] == 1 else uncond
    eps_u, eps_c = model.unet(torch.cat([x, x]), t, encoder_hidden_states=torch.cat([u, c])).sample.chunk(2)
    return eps_u + guidance_scale * (eps_c - eps_u)


def step_terms(scheduler, x_t: torch.Tensor, t, eps: torch.Tensor, eta: float) -> tuple:
    """:math:`\\mu_t(x_t)`, :math:`\\hat x_0` and :math:`\\sigma_t` of one reverse step (see the module docstring)."""
    a_t, a_s = _alpha_bars(scheduler, t, x_t.device)
    x0_hat = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    var = (1 - a_s) / (1 - a_t) * (1 - a_t / a_s)
    sigma = eta * var.clamp_min(0).sqrt()
    mu = a_s.sqrt() * x0_hat + (1 - a_s - sigma ** 2).clamp_min(0).sqrt() * eps
    return mu, x0_hat, sigma


def reverse_step(model, x_t: torch.Tensor, t, cond: torch.Tensor, *, eta: float = 0.0,
                 residual: torch.Tensor | None = None, guidance_scale: float = 1.0,
                 uncond: torch.Tensor | None = None, generator: torch.Generator | None = None) -> dict:
    """One reverse step :math:`x_t \\to x_s`; differentiable in ``x_t`` when gradients are enabled.

    With ``residual`` (from a DDPM inversion) the step adds it instead of fresh noise. Returns a dict with
    ``prev`` (:math:`x_s`), ``x0`` (:math:`\\hat x_0`), ``eps`` and ``mu``.
    """
    eps = noise_prediction(model, x_t, t, cond, guidance_scale, uncond)
    mu, x0_hat, sigma = step_terms(model.scheduler, x_t, t, eps, eta)
    if residual is not None:
        prev = mu + residual
    elif float(sigma) > 0:
        prev = mu + sigma * torch.randn(x_t.shape, generator=generator, device="cpu").to(x_t.device)
    else:
        prev = mu
    return {"prev": prev, "x0": x0_hat, "eps": eps, "mu": mu}


def _prepare(model, images, prompts, num_steps: int, guidance_scale: float):
    _check_guidance(guidance_scale)
    model.scheduler.set_timesteps(num_steps, device=model.device)
    x0 = model.encode(images)
    n = x0.shape[0]
    prompts = [model.default_prompt] * n if prompts is None else prompts
    prompts = [prompts] * n if isinstance(prompts, str) else list(prompts)
    if len(prompts) != n:
        raise ValueError(f"give one prompt or one per image: got {len(prompts)} prompts for {n} images")
    cond = model.encode_prompt(prompts)
    uncond = model.encode_prompt([""]) if guidance_scale != 1.0 else None
    return x0, cond, uncond, model.scheduler.timesteps


@torch.no_grad()
def ddpm_inversion(model, images: torch.Tensor, prompts=None, *, num_steps: int = 50, guidance_scale: float = 1.0,
                   eta: float = 1.0, generator: torch.Generator | None = None, progress: Callable | None = None
                   ) -> Inversion:
    """Edit-friendly DDPM inversion (Huberman-Spiegelglas, Kulikov and Michaeli, CVPR 2024).

    Parameters
    ----------
    model : DiffusionModel
    images : torch.Tensor
        (N, 3, S, S) in [0, 1].
    prompts : str or list of str, optional
        Source prompt(s) (default ``model.default_prompt``).
    num_steps : int
        Inference steps S.
    guidance_scale : float
        Classifier-free guidance used while inverting (1 = plain conditional prediction).
    eta : float
        1 for DDPM (the edit-friendly setting); must be > 0.
    generator : torch.Generator, optional
        CPU generator for the independent noise draws.

    Returns
    -------
    Inversion
        ``reverse_process(model, inv)`` returns ``images`` exactly.
    """
    if eta <= 0:
        raise ValueError(f"DDPM inversion needs eta > 0 (eta = 1 is the published setting), got {eta}")
    x0, cond, uncond, timesteps = _prepare(model, images, prompts, num_steps, guidance_scale)
    acp = model.scheduler.alphas_cumprod.to(x0.device)
    S = len(timesteps)
    # x_t ~ q(x_t | x_0), drawn independently for every t ("edit-friendly": the noise maps are not a chain)
    xts = [None] * (S + 1)
    xts[S] = x0
    for i, t in enumerate(timesteps):
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        xts[i] = acp[int(t)].sqrt() * x0 + (1 - acp[int(t)]).sqrt() * noise
    residuals = torch.empty((S,) + tuple(x0.shape), device=x0.device)
    steps = range(S) if progress is None else progress(range(S), desc="DDPM inversion")
    for i in steps:
        t = timesteps[i]
        eps = noise_prediction(model, xts[i], t, cond, guidance_scale, uncond)
        mu, _, _ = step_terms(model.scheduler, xts[i], t, eps, eta)
        residuals[i] = xts[i + 1] - mu  # = sigma_t z_t
    return Inversion(timesteps=timesteps, xts=torch.stack(xts), residuals=residuals, cond=cond, eta=eta,
                     guidance_scale=guidance_scale, uncond=uncond)


@torch.no_grad()
def ddim_inversion(model, images: torch.Tensor, prompts=None, *, num_steps: int = 50, guidance_scale: float = 1.0,
                   progress: Callable | None = None) -> Inversion:
    """DDIM inversion: the deterministic DDIM update run from :math:`x_0` towards :math:`x_T`.

    Approximate: each step uses the noise predicted at the current (less noisy) point. Returns an
    :class:`Inversion` whose ``residuals`` is None.
    """
    _check_guidance(guidance_scale)
    x0, cond, uncond, timesteps = _prepare(model, images, prompts, num_steps, guidance_scale)
    S = len(timesteps)
    xts = [None] * (S + 1)
    xts[S] = x = x0
    steps = range(S - 1, -1, -1)
    steps = steps if progress is None else progress(steps, desc="DDIM inversion")
    for i in steps:
        t = timesteps[i]  # going from the previous timestep s up to t
        a_t, a_s = _alpha_bars(model.scheduler, t, x.device)
        s = int(t) - model.scheduler.config.num_train_timesteps // model.scheduler.num_inference_steps
        eps = noise_prediction(model, x, max(s, 0), cond, guidance_scale, uncond)
        x0_hat = (x - (1 - a_s).sqrt() * eps) / a_s.sqrt()
        x = a_t.sqrt() * x0_hat + (1 - a_t).sqrt() * eps
        xts[i] = x
    return Inversion(timesteps=timesteps, xts=torch.stack(xts), residuals=None, cond=cond, eta=0.0,
                     guidance_scale=guidance_scale, uncond=uncond)


@torch.no_grad()
def reverse_process(model, inv: Inversion, *, start: int = 0, cond: torch.Tensor | None = None,
                    guidance_scale: float | None = None, x_start: torch.Tensor | None = None,
                    progress: Callable | None = None) -> torch.Tensor:
    """Run the reverse loop of an inversion from step ``start`` (0 = from :math:`x_T`) and decode.

    This is the denoising loop of the whole toolkit::

        x = inv.xts[start]
        for i in range(start, S):
            x = reverse_step(model, x, timesteps[i], cond, eta=inv.eta, residual=inv.residuals[i])["prev"]

    Parameters
    ----------
    start : int
        Reverse steps to skip (the edit-friendly "skip"); only the last ``S - start`` steps run.
    cond, guidance_scale
        Target prompt conditioning / guidance (default: those used to invert: reconstruction).
    x_start : torch.Tensor, optional
        Replace ``inv.xts[start]``.

    Returns
    -------
    torch.Tensor
        Images (N, 3, S, S) in [0, 1].
    """
    cond = inv.cond if cond is None else cond
    gs = inv.guidance_scale if guidance_scale is None else guidance_scale
    x = inv.xts[start] if x_start is None else x_start
    steps = range(start, inv.num_steps)
    steps = steps if progress is None else progress(steps, desc="reverse")
    for i in steps:
        res = None if inv.residuals is None else inv.residuals[i]
        x = reverse_step(model, x, inv.timesteps[i], cond, eta=inv.eta, residual=res, guidance_scale=gs,
                         uncond=inv.uncond)["prev"]
    return model.decode(x)


@torch.no_grad()
def sample(model, prompts: Sequence[str], *, num_steps: int = 50, guidance_scale: float = 1.0, eta: float = 0.0,
           generator: torch.Generator | None = None, progress: Callable | None = None) -> torch.Tensor:
    """Generate images from prompts (DDIM for ``eta = 0``, ancestral DDPM-like for ``eta = 1``)."""
    _check_guidance(guidance_scale)
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    model.scheduler.set_timesteps(num_steps, device=model.device)
    cond = model.encode_prompt(prompts)
    uncond = model.encode_prompt([""]) if guidance_scale != 1.0 else None
    c = model.unet.config
    x = torch.randn((len(prompts), c.in_channels, c.sample_size, c.sample_size), generator=generator).to(model.device)
    steps = model.scheduler.timesteps
    steps = steps if progress is None else progress(steps, desc="sampling")
    for t in steps:
        x = reverse_step(model, x, t, cond, eta=eta, guidance_scale=guidance_scale, uncond=uncond,
                         generator=generator)["prev"]
    return model.decode(x)
