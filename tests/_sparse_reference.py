"""The sparse-coding solvers' inner loops as they were before they were written with in-place updates (commit
88d5aad): the plain formulas, one fresh array per operation. tests/test_sparse.py checks that the package's
current code gives the same numbers, bit for bit (chapter 03's tables must not move with the speed-up)."""

import math

import torch

from facelab.sparse.solvers import _State, _check_wing, _norm, robust_objective, soft_threshold


def _fidelity_prox(a, t, fidelity, w, epsilon):
    if fidelity == "square":
        return a / (1.0 + t)
    if fidelity == "l1":
        return soft_threshold(a, t)
    return wing_prox(a, t, w, epsilon)


def wing_prox(a, t, w: float = 1.0, epsilon: float = 0.5) -> torch.Tensor:
    """The Wing loss's proximal operator: four candidates, each with its objective evaluated in full."""
    w, epsilon = _check_wing(w, epsilon)
    a = torch.as_tensor(a)
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device)
    s = a.abs()
    disc = torch.clamp((s + epsilon) ** 2 - 4.0 * t * w, min=0.0)
    root = 0.5 * ((s - epsilon) + torch.sqrt(disc))
    cands = (
        torch.zeros_like(s),
        torch.clamp(root, min=0.0).clamp(max=w).minimum(s),
        s.clamp(max=w),
        torch.clamp(s - t, min=w).minimum(s.clamp(min=w)),
    )
    C = w - w * math.log1p(w / epsilon)
    # the first candidate with the smallest objective (pairwise updates: an argmin over a stacked leading
    # dimension is several times slower on a CPU)
    best, best_obj = None, None
    for cand in cands:
        loss = torch.where(cand < w, w * torch.log1p(cand / epsilon), cand - C)
        obj = t * loss + 0.5 * (cand - s) ** 2
        if best is None:
            best, best_obj = cand, obj
        else:
            better = obj < best_obj
            best, best_obj = torch.where(better, cand, best), torch.where(better, obj, best_obj)
    return torch.sign(a) * best


def _robust_iterations(D, Y, lam, fidelity, weights, w, epsilon, factor, state, max_iter, abs_tol, rel_tol,
                       hist, record_objective, growth, max_penalty, l1_weights=None, round_=0, DtY=None):
    m, n = D.shape
    rho, mu = state.rho, state.mu
    ratio = rho / mu  # fixed: growing both penalties together keeps the cached factor valid
    x, z, e, u, p = state.x, state.z, state.e, state.u, state.p
    sqrt_mn, sqrt_n = math.sqrt(m + n), math.sqrt(n)
    ynorm = _norm(Y)
    converged = torch.zeros(Y.shape[1], dtype=torch.bool, device=D.device)
    lam_t = lam if l1_weights is None else lam * l1_weights  # per-entry l1 weight (RSC's re-normalised atoms)
    # Two products with the (m, n) dictionary per iteration instead of four, and few passes over the (m, k) arrays
    # (on a CPU those passes cost as much as the products): D^T y is fixed; D^T e is needed for the dual residual
    # anyway; D^T u follows from u <- u + y - Dx - e as D^T u + D^T y - (D^T D) x - D^T e, and ||D x||^2 as
    # x^T (D^T D) x, with the small (n, n) Gram matrix.
    gram = factor.gram
    DtY = D.T @ Y if DtY is None else DtY
    DtE = D.T @ e
    DtU = D.T @ u
    step, step_mu = None, None
    it = 0
    for it in range(1, max_iter + 1):
        if step_mu != mu:  # the prox step v / mu changes only when the penalties grow
            step, step_mu = ((1.0 / mu) if weights is None else weights / mu), mu
            denom = 1.0 + step if fidelity == "square" else None
        x = factor.solve(DtY - DtE + DtU + ratio * (z - p))
        Gx = gram @ x
        YmDx = Y - D @ x
        e_old, z_old, DtE_old = e, z, DtE
        a = YmDx + u
        e = a / denom if denom is not None else _fidelity_prox(a, step, fidelity, w, epsilon)
        DtE = D.T @ e
        z = soft_threshold(x + p, lam_t / rho)
        r1 = YmDx - e
        r2 = x - z
        u = u + r1
        DtU = DtU + (DtY - Gx - DtE)
        p = p + r2
        # residuals of the scaled constraint [sqrt(mu) (Dx + e - y); sqrt(rho) (x - z)] (Boyd et al. 3.3)
        r = torch.sqrt(mu * _norm(r1) ** 2 + rho * (r2 * r2).sum(0))
        s = _norm(mu * (DtE - DtE_old) - rho * (z - z_old))
        ax = torch.sqrt(mu * (x * Gx).sum(0).clamp_min(0.0) + rho * (x * x).sum(0))
        bz = torch.sqrt(mu * _norm(e) ** 2 + rho * (z * z).sum(0))
        eps_p = sqrt_mn * abs_tol + rel_tol * torch.maximum(torch.maximum(ax, bz), math.sqrt(mu) * ynorm)
        eps_d = sqrt_n * abs_tol + rel_tol * _norm(mu * DtU + rho * p)
        converged = (r <= eps_p) & (s <= eps_d)
        hist.add(primal=r, dual=s, eps_primal=eps_p, eps_dual=eps_d,
                 objective=robust_objective(D, Y, z, lam / m, fidelity, weights, w, epsilon, l1_weights)
                 if record_objective else None,
                 round=torch.full_like(r, float(round_)))
        if bool(converged.all()):
            break
        if growth > 1.0 and mu * growth <= max_penalty:
            # inexact augmented Lagrangian: grow both penalties (the Wing loss is not convex, and a growing
            # penalty makes ADMM settle); the scaled duals shrink by the same factor
            mu, rho = mu * growth, rho * growth
            u, p, DtU = u / growth, p / growth, DtU / growth
    return _State(x, z, e, u, p, rho, mu), it, converged
