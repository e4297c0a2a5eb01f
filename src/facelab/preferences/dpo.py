"""Fine-tuning on a preference-defined subset: DPO on a small edit policy over render parameters (chapter 12).

The policy proposes an edit ``z`` (standardised values of the K category attributes the renderer can set) from a
Gaussian ``N(mu, sigma^2 I)``; the reference policy is the same family at ``mu_0``. Direct Preference Optimisation
(Rafailov et al. 2023) minimises, over preference pairs ``(z_w, z_l)``,

    L(mu) = - mean log sigmoid( beta * [ (log pi(z_w) - log pi_ref(z_w)) - (log pi(z_l) - log pi_ref(z_l)) ] ),

with no reward model. The *preference-defined subset* (the paper's fine-tuning on one preference) keeps only the
pairs whose reasons name category ``c``. :func:`dpo_update` returns the tuned policy; :func:`judge_policies` lets
the raters compare samples of several policies so that :func:`facelab.preferences.elo.per_category_elo` rates
each policy per category.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["GaussianEditPolicy", "preference_pairs", "dpo_update", "judge_policies"]


@dataclass
class GaussianEditPolicy:
    """Edits ``z ~ N(mean, sigma^2 I)`` over the K standardised render attributes."""

    mean: np.ndarray
    sigma: float = 1.0

    def sample(self, n: int, *, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return np.asarray(self.mean)[None] + self.sigma * rng.standard_normal((n, len(self.mean)))

    def log_prob(self, z: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
        m = torch.as_tensor(self.mean, dtype=z.dtype) if mean is None else mean
        return -((z - m) ** 2).sum(-1) / (2 * self.sigma ** 2)


def preference_pairs(comparisons, items, category: int) -> tuple[np.ndarray, np.ndarray]:
    """``(z_w, z_l)`` of the comparisons whose reasons name ``category`` (the preference-defined subset)."""
    R = comparisons.reasons
    sel = np.unique(R.loc[R["parent"] == category, "comparison"].to_numpy())
    if sel.size == 0:
        raise ValueError(f"no comparison names category {category}: the preference-defined subset is empty")
    return items[comparisons.winner[sel]], items[comparisons.loser[sel]]


def dpo_update(reference: GaussianEditPolicy, z_w, z_l, *, beta: float = 0.5, lr: float = 1.0,
               steps: int = 100, optimizer: str = "sgd", device="cpu", seed: int = 0) -> GaussianEditPolicy:
    """The DPO-tuned policy (same sigma, new mean) from preference pairs ``z_w`` (chosen) over ``z_l``.

    For a Gaussian policy the DPO margin is linear in the mean, ``beta (mu - mu_0) . (z_w - z_l) / sigma^2``, so
    full-batch gradient descent (``optimizer="sgd"``, the default) moves each attribute in proportion to the
    evidence for it. ``optimizer="adam"`` (lr about 0.02) is offered for comparison: its per-coordinate step sizes
    move weakly supported attributes about as far as the preferred one."""
    torch.manual_seed(seed)
    zw = torch.as_tensor(np.asarray(z_w), dtype=torch.float32, device=device)
    zl = torch.as_tensor(np.asarray(z_l), dtype=torch.float32, device=device)
    if zw.shape != zl.shape or zw.ndim != 2 or len(zw) == 0:
        raise ValueError(f"z_w and z_l must be non-empty (n, K) arrays of the same shape, got {tuple(zw.shape)} "
                         f"and {tuple(zl.shape)}")
    mu0 = torch.as_tensor(reference.mean, dtype=torch.float32, device=device)
    mu = mu0.clone().requires_grad_(True)
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    opt = (torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)([mu], lr=lr)
    for _ in range(steps):
        ratio_w = reference.log_prob(zw, mu) - reference.log_prob(zw, mu0)
        ratio_l = reference.log_prob(zl, mu) - reference.log_prob(zl, mu0)
        loss = -torch.nn.functional.logsigmoid(beta * (ratio_w - ratio_l)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return GaussianEditPolicy(mu.detach().cpu().numpy(), reference.sigma)


def judge_policies(policies, weights, n_comparisons: int, *, epsilon: float = 0.1, beta: float = 2.0,
                   categories=None, seed: int = 0):
    """Raters compare one sample of policy ``a`` with one of policy ``b`` (random distinct pairs of policies,
    random raters). Returns the :class:`facelab.preferences.world.Comparisons` over *policies* (``winner`` is a
    policy index) and the per-comparison lists of named categories."""
    from facelab.preferences.world import Comparisons, simulate_choices

    P = len(policies)
    if P < 2:
        raise ValueError("judging needs at least two policies")
    rng = np.random.default_rng(seed)
    a = rng.integers(0, P, n_comparisons)
    b = (a + rng.integers(1, P, n_comparisons)) % P
    means = np.stack([np.asarray(p.mean, float) for p in policies])
    sigmas = np.asarray([p.sigma for p in policies], float)
    za = means[a] + sigmas[a, None] * rng.standard_normal((n_comparisons, means.shape[1]))
    zb = means[b] + sigmas[b, None] * rng.standard_normal((n_comparisons, means.shape[1]))
    items = np.concatenate([za, zb])
    idx = np.arange(n_comparisons)
    rater = rng.integers(0, len(weights), n_comparisons)
    c = simulate_choices(items, weights, 0, epsilon=epsilon, beta=beta, categories=categories, seed=seed + 1,
                         pairs=(rater, idx, idx + n_comparisons))
    winner = np.where(c.winner == idx, a, b)
    named = c.reasons.groupby("comparison")["parent"].apply(lambda s: set(s[s >= 0])).reindex(idx)
    named = [x if isinstance(x, set) else set() for x in named]
    return Comparisons(rater, a, b, winner, c.reasons), named
