"""Batched ADMM solvers for sparse coding with square, l1, Wing and weighted fidelities.

Every solver codes *many probes at once*: the probes are the columns of ``Y`` (shape ``(m, k)``), the dictionary
``D`` has shape ``(m, n)``. All objectives use scikit-learn's convention of a data term averaged over the ``m``
pixels, so that ``lam`` does not depend on the image resolution and equals scikit-learn's ``Lasso(alpha=lam)``:

.. math::

    \\min_x \\; \\frac{1}{m}\\sum_{i=1}^m v_i\\, f\\big((y - Dx)_i\\big) + \\lambda \\lVert x \\rVert_1,

with ``f(e) = e^2/2`` (square, SRC/Lasso), ``|e|`` (l1), or the Wing loss of Feng et al. (2018), and per-pixel weights
``v`` (all one unless given: WWCSC/RSC set them by reweighting).

The expensive part of every ADMM iteration is a linear solve with the matrix ``D^T D + c I``. It is factorized once
(:class:`ShiftedGramFactor`: a Cholesky factor of the ``n x n`` matrix, or of the ``m x m`` matrix ``D D^T + c I`` via
the Woodbury identity when the dictionary has more atoms than pixels) and reused for every probe and iteration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = [
    "ShiftedGramFactor",
    "IdentityExtendedFactor",
    "ADMMResult",
    "soft_threshold",
    "wing_loss",
    "wing_prox",
    "lasso_admm",
    "robust_admm",
    "logistic_weights",
    "lasso_objective",
    "robust_objective",
]

FIDELITIES = ("square", "l1", "wing")


def _positive(name: str, value, *, allow_zero: bool = False) -> float:
    """Return ``value`` as a float after checking that it is a finite positive number."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    ok = math.isfinite(v) and (v >= 0 if allow_zero else v > 0)
    if not ok:
        expected = "a finite number >= 0" if allow_zero else "a finite number > 0"
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return v


def _as_matrix(name: str, A, *, dtype=None, device=None) -> torch.Tensor:
    t = torch.as_tensor(A)
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if dtype is not None or device is not None:
        t = t.to(dtype=dtype or t.dtype, device=device or t.device)
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} contains {bad} NaN or infinite values; sparse coding needs finite pixels")
    return t


def _check_problem(D, Y):
    D = _as_matrix("dictionary D", D)
    squeeze = torch.as_tensor(Y).ndim == 1
    Y = torch.as_tensor(Y)
    if Y.ndim == 1:
        Y = Y[:, None]
    Y = _as_matrix("probes Y", Y, dtype=D.dtype, device=D.device)
    if Y.shape[0] != D.shape[0]:
        raise ValueError(
            f"dictionary and probes do not match: D has {D.shape[0]} rows (pixels/features) but Y has "
            f"{Y.shape[0]}; Y must be (m, k) with one probe per column, D must be (m, n)"
        )
    return D, Y, squeeze


# --------------------------------------------------------------------------------------------------------------
# Factorization
# --------------------------------------------------------------------------------------------------------------
class ShiftedGramFactor:
    """Cached factorization of ``D^T D + c I`` for solving with many right-hand sides.

    Parameters
    ----------
    D : torch.Tensor, shape (m, n)
        Dictionary (one atom per column).
    c : float
        Positive shift.
    method : {"auto", "cholesky", "woodbury"}
        ``"cholesky"`` factorizes the ``n x n`` matrix ``D^T D + c I``; ``"woodbury"`` factorizes the ``m x m``
        matrix ``D D^T + c I`` and uses ``(D^T D + cI)^{-1} = (I - D^T (D D^T + cI)^{-1} D) / c``. ``"auto"`` picks
        the smaller of the two.

    Examples
    --------
    >>> D = torch.randn(30, 100, dtype=torch.float64)
    >>> F = ShiftedGramFactor(D, 0.5)
    >>> F.method
    'woodbury'
    >>> b = torch.randn(100, 4, dtype=torch.float64)
    >>> torch.allclose((D.T @ D + 0.5 * torch.eye(100, dtype=D.dtype)) @ F.solve(b), b)
    True
    """

    def __init__(self, D: torch.Tensor, c: float, method: str = "auto"):
        self.c = _positive("shift c", c)
        m, n = D.shape
        if method == "auto":
            method = "cholesky" if n <= m else "woodbury"
        if method not in ("cholesky", "woodbury"):
            raise ValueError(f"method must be 'auto', 'cholesky' or 'woodbury', got {method!r}")
        self.method = method
        self.D = D
        eye = torch.eye(n if method == "cholesky" else m, dtype=D.dtype, device=D.device)
        gram = D.T @ D if method == "cholesky" else D @ D.T
        self.L = torch.linalg.cholesky(gram + self.c * eye)
        # The inverse of the factorized (smaller) matrix, formed once from the Cholesky factor: applying it is a
        # single matrix product per iteration, several times faster than two triangular solves on a CPU.
        self.inverse = torch.cholesky_inverse(self.L)
        self._gram = gram if method == "cholesky" else None

    @property
    def gram(self) -> torch.Tensor:
        """The ``(n, n)`` Gram matrix ``D^T D`` (computed once, on first use for the Woodbury form)."""
        if getattr(self, "_gram", None) is None:
            self._gram = self.D.T @ self.D
        return self._gram

    def solve(self, B: torch.Tensor) -> torch.Tensor:
        """Return ``(D^T D + c I)^{-1} B`` for ``B`` of shape ``(n, k)``."""
        if self.method == "cholesky":
            return self.inverse @ B
        return (B - self.D.T @ (self.inverse @ (self.D @ B))) / self.c


class IdentityExtendedFactor:
    """``(B^T B + c I)^{-1}`` for the identity-extended dictionary ``B = [D, a I]`` of SRC+I, in ``O(m n)`` per probe.

    With ``B^T B + c I = [[D^T D + c I, a D^T], [a D, (a^2 + c) I]]`` the Schur complement gives, for
    ``b = [b1; b2]``: ``x1 = (D^T D + (a^2 + c) I)^{-1} (b1 - a D^T b2 / (a^2 + c)) (a^2 + c) / c`` and
    ``x2 = (b2 - a D x1) / (a^2 + c)``: one factorization of an ``n x n`` (or ``m x m``) matrix instead of the
    ``(n + m)``-sized one, and no dense identity block in the products.

    Examples
    --------
    >>> D = torch.randn(20, 8, dtype=torch.float64)
    >>> B = torch.cat([D, 2.0 * torch.eye(20, dtype=D.dtype)], 1)
    >>> F = IdentityExtendedFactor(D, 2.0, 0.3)
    >>> b = torch.randn(28, 3, dtype=torch.float64)
    >>> torch.allclose((B.T @ B + 0.3 * torch.eye(28, dtype=D.dtype)) @ F.solve(b), b)
    True
    """

    def __init__(self, D: torch.Tensor, a: float, c: float):
        self.c = _positive("shift c", c)
        self.a = _positive("identity scale a", a)
        self.D = D
        self.n = D.shape[1]
        self.inner = ShiftedGramFactor(D, self.a ** 2 + self.c)

    def solve(self, B: torch.Tensor) -> torch.Tensor:
        """Return ``(B^T B + c I)^{-1} b`` for ``b`` of shape ``(n + m, k)``."""
        a, c, D = self.a, self.c, self.D
        s = a * a + c
        b1, b2 = B[:self.n], B[self.n:]
        x1 = self.inner.solve(b1 - (a / s) * (D.T @ b2)) * (s / c)
        x2 = (b2 - a * (D @ x1)) / s
        return torch.cat([x1, x2], 0)


# --------------------------------------------------------------------------------------------------------------
# Proximal operators and losses
# --------------------------------------------------------------------------------------------------------------
def soft_threshold(x: torch.Tensor, t) -> torch.Tensor:
    """Proximal operator of ``t * |x|``: ``sign(x) * max(|x| - t, 0)``."""
    return torch.sign(x) * torch.clamp(x.abs() - t, min=0.0)


def _check_wing(w, epsilon):
    w = _positive("Wing parameter w", w)
    epsilon = _positive("Wing parameter epsilon", epsilon)
    return w, epsilon


def wing_loss(x, w: float = 1.0, epsilon: float = 0.5):
    """The Wing loss of Feng et al. (2018), elementwise.

    .. math::

        \\mathrm{wing}(x) = \\begin{cases} w \\ln(1 + |x|/\\epsilon) & |x| < w \\\\ |x| - C & \\text{otherwise}
        \\end{cases}, \\qquad C = w - w\\ln(1 + w/\\epsilon).

    Logarithmic (steep, slope ``w/epsilon`` at 0) for small errors and linear (slope 1, like l1) for large ones,
    continuous at ``|x| = w``.
    """
    w, epsilon = _check_wing(w, epsilon)
    x = torch.as_tensor(x)
    a = x.abs()
    C = w - w * math.log1p(w / epsilon)
    return torch.where(a < w, w * torch.log1p(a / epsilon), a - C)


def wing_prox(a, t, w: float = 1.0, epsilon: float = 0.5) -> torch.Tensor:
    """Proximal operator of the Wing loss: ``argmin_e t * wing(e) + (e - a)^2 / 2``, elementwise.

    The Wing loss is not convex (its logarithmic part is concave in ``|e|``), so the problem may have two local
    minima; this returns the global one, found in closed form. The minimiser has the sign of ``a`` and a magnitude
    ``s`` in ``[0, |a|]``; the candidates are

    - ``s = 0`` (the kink at zero),
    - the larger root of ``s^2 + (eps - |a|) s + (t w - |a| eps) = 0`` (stationary point of the log branch; the
      smaller root is a local maximum),
    - ``s = w`` (the kink where the branches meet),
    - ``s = |a| - t`` (stationary point of the linear branch, an l1 soft threshold),

    each clamped into its branch; the candidate with the smallest objective wins.

    Parameters
    ----------
    a : torch.Tensor
        Points to evaluate the prox at.
    t : float or torch.Tensor
        Non-negative step (broadcast against ``a``; per-pixel weights enter here as ``t = v / mu``).
    w, epsilon : float
        Wing parameters (positive).
    """
    w, epsilon = _check_wing(w, epsilon)
    a = torch.as_tensor(a)
    if not a.is_floating_point():
        a = a.to(torch.get_default_dtype())
    t = torch.as_tensor(t, dtype=a.dtype, device=a.device)
    shape = torch.broadcast_shapes(a.shape, t.shape)
    if shape != a.shape:
        a = a.expand(shape)
    s = a.abs()
    C = w - w * math.log1p(w / epsilon)
    # The first candidate with the smallest objective, by pairwise updates (an argmin over a stacked leading
    # dimension is several times slower on a CPU). The arrays are large (pixels x probes) and every pass over them
    # costs about as much as the arithmetic, so the updates are written in place, and the objective is not
    # evaluated where it is known: 0 for the loss at s = 0, the linear branch for the last candidate (>= w). The
    # values are bit for bit those of the plain formulas ``t * loss(cand) + (cand - s)^2 / 2``
    # (tests/test_sparse.py checks them against that reference).
    # candidate 0, s = 0: objective t * 0 + (0 - s)^2 / 2 = s^2 / 2
    best_obj = s.pow(2).mul_(0.5)
    # candidate 1: the larger root of the log branch's stationarity condition, clamped into [0, min(w, s)]
    cand = torch.add(s, epsilon).pow_(2).sub_(4.0 * t * w).clamp_(min=0.0).sqrt_().add_(s - epsilon).mul_(0.5)
    cand = cand.clamp_(min=0.0).clamp_(max=w)
    torch.minimum(cand, s, out=cand)
    obj = _wing_prox_objective(cand, s, t, w, epsilon, C)
    better = obj < best_obj
    best = torch.where(better, cand, 0.0)
    torch.where(better, obj, best_obj, out=best_obj)
    # candidate 2: the kink at |e| = w (s itself where s < w)
    cand = s.clamp(max=w)
    obj = _wing_prox_objective(cand, s, t, w, epsilon, C)
    torch.lt(obj, best_obj, out=better)
    torch.where(better, cand, best, out=best)
    torch.where(better, obj, best_obj, out=best_obj)
    # candidate 3: the stationary point of the linear branch (>= w, so its loss is cand - C)
    cand = torch.sub(s, t).clamp_(min=w)
    torch.minimum(cand, s.clamp(min=w), out=cand)
    obj = torch.sub(cand, C)
    obj = torch.mul(t, obj, out=obj).add_(torch.sub(cand, s).pow_(2).mul_(0.5))
    torch.lt(obj, best_obj, out=better)
    torch.where(better, cand, best, out=best)
    return best.mul_(torch.sign(a))


def _wing_prox_objective(cand, s, t, w, epsilon, C):
    """``t * wing(cand) + (cand - s)^2 / 2`` for ``0 <= cand``, in few passes (a fresh array)."""
    loss = torch.where(cand < w, torch.div(cand, epsilon).log1p_().mul_(w), cand - C)
    return torch.mul(t, loss, out=loss).add_(torch.sub(cand, s).pow_(2).mul_(0.5))


def _fidelity(e: torch.Tensor, fidelity: str, w: float, epsilon: float) -> torch.Tensor:
    if fidelity == "square":
        return 0.5 * e * e
    if fidelity == "l1":
        return e.abs()
    return wing_loss(e, w, epsilon)


def _fidelity_prox(a, t, fidelity: str, w: float, epsilon: float) -> torch.Tensor:
    if fidelity == "square":
        return a / (1.0 + t)
    if fidelity == "l1":
        return soft_threshold(a, t)
    return wing_prox(a, t, w, epsilon)


def lasso_objective(D, Y, X, lam: float) -> torch.Tensor:
    """Per-probe value of ``||y - D x||^2 / (2m) + lam ||x||_1`` (scikit-learn's Lasso objective)."""
    R = Y - D @ X
    return 0.5 * (R * R).sum(0) / D.shape[0] + lam * X.abs().sum(0)


def robust_objective(D, Y, X, lam: float, fidelity: str = "wing", weights=None, w: float = 1.0,
                     epsilon: float = 0.5, l1_weights=None) -> torch.Tensor:
    """Per-probe value of ``(1/m) sum_i v_i f((y - D x)_i) + lam sum_j l_j |x_j|`` (``l_j = 1`` unless given)."""
    f = _fidelity(Y - D @ X, fidelity, w, epsilon)
    if weights is not None:
        f = f * weights
    a = X.abs() if l1_weights is None else X.abs() * l1_weights
    return f.sum(0) / D.shape[0] + lam * a.sum(0)


# --------------------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------------------
@dataclass
class ADMMResult:
    """What an ADMM run returns.

    Attributes
    ----------
    coef : torch.Tensor, shape (n, k)
        The sparse codes (the ``z`` iterate, exactly sparse), one column per probe.
    error : torch.Tensor or None, shape (m, k)
        The split residual ``e ~ y - D x`` (robust solvers only).
    weights : torch.Tensor or None, shape (m, k)
        Per-pixel weights used in the last solve (reweighted solvers only).
    n_iter : int
        ADMM iterations run (summed over reweighting rounds).
    converged : torch.Tensor of bool, shape (k,)
        Whether each probe met the primal/dual residual test.
    history : dict of numpy arrays, each (n_iter, k)
        ``primal``, ``dual`` (residual norms), ``eps_primal``, ``eps_dual`` (their tolerances) and ``objective``
        per iteration and probe (``objective`` only when ``record_objective``); ``round`` (robust solvers) is the
        reweighting round of each iteration.
    round_weights, round_converged, round_iterations, round_coef : lists, one entry per (re)weighting round
        (robust solvers) The weights each round solved with (None: unit weights), which probes met the stopping
        test in that round, the iterations it ran, and the code it ended with.
    """

    coef: torch.Tensor
    error: torch.Tensor | None = None
    weights: torch.Tensor | None = None
    n_iter: int = 0
    converged: torch.Tensor | None = None
    history: dict = field(default_factory=dict)
    round_weights: list = field(default_factory=list)
    round_converged: list = field(default_factory=list)
    round_iterations: list = field(default_factory=list)
    round_coef: list = field(default_factory=list)

    @property
    def stop_reason(self) -> np.ndarray:
        """Per probe: ``"tolerance"`` (the last solve met its primal/dual test) or ``"iteration cap"``."""
        if self.converged is None:
            return np.array([], dtype=object)
        return np.where(self.converged.cpu().numpy(), "tolerance", "iteration cap").astype(object)

    def history_frame(self, reduce: str = "median"):
        """The convergence history as a tidy DataFrame (one row per iteration, reduced over probes)."""
        import pandas as pd

        fn = {"median": np.median, "mean": np.mean, "max": np.max}[reduce]
        cols = {k: fn(v, axis=1) for k, v in self.history.items() if len(v)}
        df = pd.DataFrame(cols)
        df.insert(0, "iteration", np.arange(1, len(df) + 1))
        if "round" in df:
            df["round"] = df["round"].astype(int)
            df["iteration_in_round"] = df.groupby("round").cumcount() + 1
        return df


def _norm(x):
    return torch.linalg.vector_norm(x, dim=0)


class _History:
    def __init__(self, record: bool):
        self.record = record
        self.rows: dict[str, list] = {k: [] for k in ("primal", "dual", "eps_primal", "eps_dual", "objective",
                                                       "round")}

    def add(self, **kw):
        if self.record:
            for k, v in kw.items():
                if v is not None:
                    self.rows[k].append(v.detach().cpu().numpy())

    def extend(self, other: "_History"):
        for k, v in other.rows.items():
            self.rows[k].extend(v)

    def arrays(self):
        return {k: np.stack(v) for k, v in self.rows.items() if v}


# --------------------------------------------------------------------------------------------------------------
# Lasso / SRC ADMM
# --------------------------------------------------------------------------------------------------------------
def lasso_admm(D, Y, lam: float, *, rho: float | None = None, max_iter: int = 1000, abs_tol: float = 1e-6,
               rel_tol: float = 1e-4, relaxation: float = 1.6, factor: ShiftedGramFactor | None = None,
               init: torch.Tensor | None = None, record: bool = True,
               record_objective: bool = False) -> ADMMResult:
    """Solve ``min_x ||y - D x||^2 / (2m) + lam ||x||_1`` for every column ``y`` of ``Y`` at once by ADMM.

    The scaled-form ADMM on the split ``x = z`` (Boyd et al. 2011, section 6.4) is

    .. math::

        x &\\leftarrow (D^T D + m\\rho I)^{-1} (D^T y + m\\rho (z - u)) \\\\
        \\hat x &\\leftarrow \\alpha x + (1 - \\alpha) z \\quad (\\text{over-relaxation}) \\\\
        z &\\leftarrow S_{\\lambda/\\rho}(\\hat x + u) \\\\
        u &\\leftarrow u + \\hat x - z

    with the factorization of ``D^T D + m rho I`` computed once and ``D^T Y`` once. Stops when every probe has
    ``||x - z|| <= eps_pri`` and ``rho ||z - z_prev|| <= eps_dual`` (Boyd's absolute + relative tolerances).

    Parameters
    ----------
    D : array-like, shape (m, n)
    Y : array-like, shape (m, k) or (m,)
    lam : float
        l1 weight (> 0), same scale as scikit-learn's ``Lasso(alpha=lam, fit_intercept=False)``.
    rho : float, optional
        ADMM penalty (> 0). Default ``lam`` times the mean squared entry of ``D`` (``lam`` for unit-RMS atoms),
        which converged fastest on face dictionaries in our tests.
    max_iter : int
    abs_tol, rel_tol : float
        Stopping tolerances.
    relaxation : float in (0, 2)
        Over-relaxation ``alpha``; 1.5-1.8 usually speeds ADMM up.
    factor : ShiftedGramFactor, optional
        A cached factor of ``D^T D + m rho I`` to reuse (e.g. across calls on new probes).
    init : torch.Tensor, optional
        Warm start for ``z``, shape (n, k).
    record, record_objective : bool
        Keep the residual history (and the objective per iteration, which costs one more product).

    Returns
    -------
    ADMMResult
    """
    D, Y, _ = _check_problem(D, Y)
    lam = _positive("lam", lam)
    m, n = D.shape
    k = Y.shape[1]
    if rho is None:
        rho = lam * float((D * D).sum()) / (m * n)
    rho = _positive("rho", rho)
    relaxation = _positive("relaxation", relaxation)
    if not relaxation < 2.0:
        raise ValueError(f"relaxation must be in (0, 2), got {relaxation}")
    max_iter = int(max_iter)
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    abs_tol = _positive("abs_tol", abs_tol)
    rel_tol = _positive("rel_tol", rel_tol, allow_zero=True)
    c = m * rho
    if factor is None:
        factor = ShiftedGramFactor(D, c)
    elif abs(factor.c - c) > 1e-12 * c:
        raise ValueError(f"the cached factor has shift {factor.c}, but m * rho = {c}")

    MDtY = factor.solve(D.T @ Y)  # the part of the x-update that does not change across iterations
    z = torch.zeros(n, k, dtype=D.dtype, device=D.device) if init is None else init.to(D).clone()
    u = torch.zeros_like(z)
    hist = _History(record)
    converged = torch.zeros(k, dtype=torch.bool, device=D.device)
    sqrt_n = math.sqrt(n)
    it = 0
    for it in range(1, max_iter + 1):
        x = MDtY + c * factor.solve(z - u)
        xh = relaxation * x + (1.0 - relaxation) * z
        z_old = z
        z = soft_threshold(xh + u, lam / rho)
        u = u + xh - z
        r = _norm(x - z)
        s = rho * _norm(z - z_old)
        eps_p = sqrt_n * abs_tol + rel_tol * torch.maximum(_norm(x), _norm(z))
        eps_d = sqrt_n * abs_tol + rel_tol * rho * _norm(u)
        converged = (r <= eps_p) & (s <= eps_d)
        hist.add(primal=r, dual=s, eps_primal=eps_p, eps_dual=eps_d,
                 objective=lasso_objective(D, Y, z, lam) if record_objective else None)
        if bool(converged.all()):
            break
    return ADMMResult(coef=z, n_iter=it, converged=converged, history=hist.arrays())


# --------------------------------------------------------------------------------------------------------------
# Robust (split-residual) ADMM: l1 / Wing / weighted fidelities
# --------------------------------------------------------------------------------------------------------------
@dataclass
class _State:
    x: torch.Tensor
    z: torch.Tensor
    e: torch.Tensor
    u: torch.Tensor
    p: torch.Tensor
    rho: float
    mu: float


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
    # The (m, k) arrays are updated in place (the same arithmetic, bit for bit, without allocating and touching
    # fresh pixel x probe arrays every iteration): r1 holds D x, then y - D x, then the primal residual y - D x - e.
    e, u = e.clone(), u.clone()
    r1, a = torch.empty_like(Y), torch.empty_like(Y)
    it = 0
    for it in range(1, max_iter + 1):
        if step_mu != mu:  # the prox step v / mu changes only when the penalties grow
            step, step_mu = ((1.0 / mu) if weights is None else weights / mu), mu
            denom = 1.0 + step if fidelity == "square" else None
        x = factor.solve(DtY - DtE + DtU + ratio * (z - p))
        Gx = gram @ x
        YmDx = torch.sub(Y, torch.mm(D, x, out=r1), out=r1)
        z_old, DtE_old = z, DtE
        torch.add(YmDx, u, out=a)
        e = torch.div(a, denom, out=e) if denom is not None else _fidelity_prox(a, step, fidelity, w, epsilon)
        DtE = D.T @ e
        z = soft_threshold(x + p, lam_t / rho)
        r1 = YmDx.sub_(e)
        r2 = x - z
        u.add_(r1)
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
            u.div_(growth)
            p, DtU = p / growth, DtU / growth
    return _State(x, z, e, u, p, rho, mu), it, converged


def logistic_weights(residual: torch.Tensor, tau: float = 0.8, c: float = 8.0) -> torch.Tensor:
    """Per-pixel weights that shrink outliers, from the residual of each probe (one probe per column).

    ``v_i = 1 / (1 + exp(beta (r_i^2 - delta)))`` with ``delta`` the ``tau``-quantile of the squared residuals of
    the probe and ``beta = c / delta`` (Yang et al. 2011, RSC). Pixels with a residual well above the typical one
    (occluders) get weights near 0; weights lie in (0, 1).
    """
    tau = _positive("tau", tau)
    if not tau < 1:
        raise ValueError(f"tau must be in (0, 1), got {tau}")
    c = _positive("c", c)
    r2 = residual * residual
    delta = torch.quantile(r2, tau, dim=0, keepdim=True).clamp_min(torch.finfo(r2.dtype).tiny * 1e6)
    beta = c / delta
    return torch.sigmoid(-beta * (r2 - delta))


def robust_admm(D, Y, lam: float, *, fidelity: str = "wing", weights=None, w: float = 1.0, epsilon: float = 0.5,
                rho: float = 1.0, mu: float = 1.0, max_iter: int = 300, abs_tol: float = 1e-5,
                rel_tol: float = 1e-3, reweight: int = 0, tau: float = 0.8, c: float = 8.0,
                initial_residual: torch.Tensor | None = None, factor: ShiftedGramFactor | None = None,
                growth: float | None = None, max_growth: float = 1e3, record: bool = True,
                record_objective: bool = False, l1_weights=None, weight_transform=None) -> ADMMResult:
    """Solve ``min_x (1/m) sum_i v_i f((y - Dx)_i) + lam ||x||_1`` for all columns of ``Y`` at once by ADMM.

    The residual is split off, ``e = y - D x``, and the code, ``z = x``, with (scaled) penalties ``mu/m`` and
    ``rho``. One iteration is

    .. math::

        x &\\leftarrow (D^T D + \\tfrac{\\rho m}{\\mu} I)^{-1}\\big(D^T (y - e + u) + \\tfrac{\\rho m}{\\mu}(z - p)\\big)\\\\
        e &\\leftarrow \\operatorname{prox}_{(v/\\mu) f}(y - D x + u) \\quad (\\text{elementwise: Wing, l1 or square})\\\\
        z &\\leftarrow S_{\\lambda/\\rho}(x + p)\\\\
        u &\\leftarrow u + y - D x - e, \\qquad p \\leftarrow p + x - z

    so the only matrix to factorize, ``D^T D + (rho m / mu) I``, does not depend on the probe or on the weights:
    it is computed once. With ``reweight > 0`` the weights are then updated from the residual
    (:func:`logistic_weights`) and the problem is solved again, warm-started, ``reweight`` times (WWCSC, RSC).

    Parameters
    ----------
    D, Y : array-like, shapes (m, n) and (m, k)
    lam : float
        l1 weight (> 0).
    fidelity : {"wing", "l1", "square"}
    weights : array-like, shape (m, k) or (m, 1), optional
        Fixed initial per-pixel weights (> = 0); all ones if omitted (unit weights == unweighted problem).
    w, epsilon : float
        Wing parameters (Feng et al. 2018), in the units of the residual (unit-RMS pixels in the estimators).
    rho, mu : float
        ADMM penalties on ``x = z`` and on ``e = y - Dx`` (> 0).
    max_iter : int
        ADMM iterations per (re)weighting round.
    abs_tol, rel_tol : float
        Primal/dual residual tolerances.
    reweight : int
        Reweighting rounds (0: fixed weights).
    tau, c : float
        Parameters of :func:`logistic_weights`.
    initial_residual : torch.Tensor, optional
        If given (shape (m, k)), the first weights are computed from it (RSC starts from ``y - mean face``).
    factor : ShiftedGramFactor, optional
        Cached factor of ``D^T D + (rho m / mu) I``.
    growth : float >= 1, optional
        Both penalties are multiplied by ``growth`` after every iteration (an inexact augmented Lagrangian, as in
        Wright et al.'s solvers), up to ``max_growth`` times their start; the ratio ``rho/mu`` and hence the cached
        factor stay the same. Default 1.05 for the (non-convex) Wing fidelity, 1 (plain ADMM) otherwise. The
        penalties are **reset** to ``rho, mu`` at the start of every reweighting round (the scaled duals rescaled
        to match), so each round is its own ADMM run and its convergence is not an artefact of a grown penalty.
    max_growth : float
        Cap on the total growth of the penalties (per round).
    l1_weights : array-like, shape (n, k), (n, 1) or (1, k), optional
        Per-entry multipliers of ``lam`` (``lam sum_j l_j |x_j|``), non-negative.
    weight_transform : callable, optional
        Applied to the logistic weights before they enter the fidelity (RSC uses ``w -> w**2``).
    """
    D, Y, _ = _check_problem(D, Y)
    if fidelity not in FIDELITIES:
        raise ValueError(f"fidelity must be one of {FIDELITIES}, got {fidelity!r}")
    lam = _positive("lam", lam)
    rho = _positive("rho", rho)
    mu = _positive("mu", mu)
    if fidelity == "wing":
        w, epsilon = _check_wing(w, epsilon)
    abs_tol = _positive("abs_tol", abs_tol)
    rel_tol = _positive("rel_tol", rel_tol, allow_zero=True)
    max_iter, reweight = int(max_iter), int(reweight)
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if reweight < 0:
        raise ValueError(f"reweight must be >= 0, got {reweight}")
    m, n = D.shape
    k = Y.shape[1]
    # mean-over-pixels data term with penalty mu/m on e = y - Dx: in sum form, prox step v/mu and x-shift rho m/mu
    shift = rho * m / mu
    if factor is None:
        factor = ShiftedGramFactor(D, shift)
    elif abs(factor.c - shift) > 1e-12 * shift:
        raise ValueError(f"the cached factor has shift {factor.c}, but rho * m / mu = {shift}")
    lam_s, rho_s, mu_s = lam * m, rho * m, mu  # sum-form scaling used inside the iterations

    if weights is not None:
        weights = torch.as_tensor(weights).to(Y)
        if weights.ndim == 1:
            weights = weights[:, None]
        if weights.shape[0] != m or weights.shape[1] not in (1, k):
            raise ValueError(f"weights must have shape ({m}, {k}) or ({m}, 1), got {tuple(weights.shape)}")
        if not torch.isfinite(weights).all() or bool((weights < 0).any()):
            raise ValueError("weights must be finite and non-negative")
        weights = weights.expand(m, k)
    if initial_residual is not None:
        weights = logistic_weights(torch.as_tensor(initial_residual).to(Y), tau, c)

    if growth is None:
        growth = 1.05 if fidelity == "wing" else 1.0
    growth = _positive("growth", growth)
    max_growth = _positive("max_growth", max_growth)
    if growth < 1 or max_growth < 1:
        raise ValueError(f"growth and max_growth must be >= 1, got {growth} and {max_growth}")
    if l1_weights is not None:
        l1_weights = torch.as_tensor(l1_weights).to(Y)
        if l1_weights.ndim != 2 or l1_weights.shape[0] not in (1, n) or l1_weights.shape[1] not in (1, k):
            raise ValueError(f"l1_weights must have shape ({n}, {k}), ({n}, 1) or (1, {k}), "
                             f"got {tuple(l1_weights.shape)}")
        if not torch.isfinite(l1_weights).all() or bool((l1_weights < 0).any()):
            raise ValueError("l1_weights must be finite and non-negative")
    if initial_residual is not None and weight_transform is not None:
        weights = weight_transform(weights)
    zeros_n = torch.zeros(n, k, dtype=D.dtype, device=D.device)
    state = _State(zeros_n, zeros_n.clone(), torch.zeros_like(Y), torch.zeros_like(Y), zeros_n.clone(), rho_s, mu_s)
    hist = _History(record)
    total = 0
    converged = None
    DtY = D.T @ Y  # shared by every round
    rounds_w, rounds_c, rounds_i, rounds_z = [], [], [], []
    for round_ in range(reweight + 1):
        if round_ > 0:
            weights = logistic_weights(Y - D @ state.z, tau, c)
            if weight_transform is not None:
                weights = weight_transform(weights)
            # each round is a fresh ADMM run from the previous solution: reset the penalties (and rescale the
            # scaled duals so that the unscaled multipliers are kept)
            g = state.mu / mu_s
            state = _State(state.x, state.z, state.e, state.u * g, state.p * g, rho_s, mu_s)
        state, it, converged = _robust_iterations(D, Y, lam_s, fidelity, weights, w, epsilon, factor, state, max_iter,
                                                  abs_tol, rel_tol, hist, record_objective, growth, mu_s * max_growth,
                                                  l1_weights, round_, DtY)
        total += it
        rounds_w.append(weights)
        rounds_c.append(converged)
        rounds_i.append(it)
        rounds_z.append(state.z)
    return ADMMResult(coef=state.z, error=state.e, weights=weights, n_iter=total, converged=converged,
                      history=hist.arrays(), round_weights=rounds_w, round_converged=rounds_c,
                      round_iterations=rounds_i, round_coef=rounds_z)
