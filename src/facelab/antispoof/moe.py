r"""Soft Mixture of Experts (Puigcerver et al., 2023) with a fine-grained (per channel group) routing.

Soft MoE
--------
For tokens :math:`X \in \mathbb{R}^{m\times d}` and slot parameters :math:`\Phi\in\mathbb{R}^{d\times np}`
(:math:`n` experts with :math:`p` slots each), the routing logits are :math:`L = X\Phi` and

.. math::

   D_{ij} = \frac{e^{L_{ij}}}{\sum_{i'} e^{L_{i'j}}}\ \text{(softmax over tokens)},\qquad
   C_{ij} = \frac{e^{L_{ij}}}{\sum_{j'} e^{L_{ij'}}}\ \text{(softmax over slots)}.

Each slot is a convex combination of all tokens, :math:`\tilde X = D^\top X`; expert :math:`e` processes its
:math:`p` slots, :math:`\tilde Y_j = f_{\lfloor j/p \rfloor}(\tilde X_j)`; each output token is a convex combination
of all slot outputs, :math:`Y = C\tilde Y`. Nothing is dropped and everything is differentiable. As in the paper,
:math:`X` and :math:`\Phi` are L2-normalised along :math:`d` and the logits multiplied by a learned scale.

Fine-grained refinement (this book's reading of FG-MoE)
-------------------------------------------------------
FG-MoE-CLIP-CAR "refines the Soft MoE to capture more subtle differences among various types of fake faces"; no code
is public, so we implement one concrete refinement and say so: the channels are split into :math:`G` groups and each
group has its own routing, :math:`L^{(g)} = X^{(g)}\Phi^{(g)}`. A slot's group-:math:`g` channels average the
tokens with group-:math:`g` weights, so one token can send its colour-like channels to one expert and its
texture-like channels to another. :math:`G = 1` is exactly Soft MoE. The experts still see whole :math:`d`-vectors.

Both variants are equivariant to permutations of the tokens (no position enters the routing).

Function-preserving upcycling (:class:`ParallelMoE`)
----------------------------------------------------
Copying a pretrained MLP into every expert preserves the dense function only under *hard* routing. Under Soft MoE
with the routing scale at 1, the logits are cosines in :math:`[-1, 1]`, the dispatch softmax over the tokens is almost
flat, every slot is about the mean token and every output token is about :math:`\mathrm{MLP}(\bar x)`: the upcycled
block computes something else. :class:`ParallelMoE` keeps the pretrained MLP as a shared expert and adds the Soft MoE
in parallel through a zero-initialised gate,

.. math:: y_i = \mathrm{MLP}(x_i) + \gamma\, \mathrm{SoftMoE}(X_{\text{patches}})_i \quad(\text{patch tokens}),
   \qquad y_{\text{CLS}} = \mathrm{MLP}(x_{\text{CLS}}),

so at initialisation (:math:`\gamma = 0`) the block is exactly the dense one, and the [CLS] token, from which the
image embedding is read, never goes through the routing. The routing scale starts at ``scale`` (default 10, so that
the dispatch weights of a slot are not uniform over the tokens).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["SoftMoE", "ParallelMoE", "check_finite_routing"]


class SoftMoE(nn.Module):
    """Soft MoE layer ``(B, m, d) -> (B, m, d)`` with ``groups`` routing groups (``groups=1``: plain Soft MoE).

    Parameters
    ----------
    dim : int
        Token width ``d``.
    hidden : int
        Hidden width of each expert MLP.
    n_experts : int
    slots_per_expert : int
    groups : int
        Number of channel groups with their own dispatch/combine weights; must divide ``dim``.
    act : nn.Module, optional
        Expert activation (default GELU).
    scale : float
        Initial value of the learned routing scale that multiplies the cosine logits (the paper's default is 1).
    """

    def __init__(self, dim: int, hidden: int, n_experts: int = 4, slots_per_expert: int = 4, groups: int = 1,
                 act: nn.Module | None = None, scale: float = 1.0):
        super().__init__()
        if n_experts < 1 or slots_per_expert < 1:
            raise ValueError(f"need n_experts >= 1 and slots_per_expert >= 1, got {n_experts}, {slots_per_expert}")
        if groups < 1 or dim % groups:
            raise ValueError(f"groups must be a positive divisor of dim={dim}, got {groups}")
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive finite number, got {scale!r}")
        self.dim, self.hidden, self.groups = dim, hidden, groups
        self.n_experts, self.slots_per_expert = n_experts, slots_per_expert
        n_slots = n_experts * slots_per_expert
        self.phi = nn.Parameter(torch.randn(groups, dim // groups, n_slots) * (dim // groups) ** -0.5)
        self.scale = nn.Parameter(torch.tensor(float(scale)))
        self.w1 = nn.Parameter(torch.randn(n_experts, dim, hidden) * dim ** -0.5)
        self.b1 = nn.Parameter(torch.zeros(n_experts, hidden))
        self.w2 = nn.Parameter(torch.randn(n_experts, hidden, dim) * hidden ** -0.5)
        self.b2 = nn.Parameter(torch.zeros(n_experts, dim))
        self.act = act if act is not None else nn.GELU()

    @property
    def n_slots(self) -> int:
        return self.n_experts * self.slots_per_expert

    @classmethod
    def from_mlp(cls, mlp: nn.Module, n_experts: int = 4, slots_per_expert: int = 4, groups: int = 1,
                 noise: float = 0.01, generator: torch.Generator | None = None, scale: float = 1.0) -> "SoftMoE":
        """*Upcycle* a pretrained ``c_fc -> act -> c_proj`` MLP: every expert starts as a (slightly jittered) copy."""
        fc, proj = mlp.c_fc, mlp.c_proj
        dim, hidden = fc.in_features, fc.out_features
        act = getattr(mlp, "gelu", None)
        moe = cls(dim, hidden, n_experts, slots_per_expert, groups, act=act, scale=scale)
        moe = moe.to(device=fc.weight.device, dtype=fc.weight.dtype)
        with torch.no_grad():
            def jitter(w):
                z = torch.randn(w.shape, generator=generator).to(w)
                return w + noise * w.std() * z
            moe.w1.copy_(torch.stack([jitter(fc.weight.t()) for _ in range(n_experts)]))
            moe.b1.copy_(fc.bias.expand(n_experts, -1))
            moe.w2.copy_(torch.stack([jitter(proj.weight.t()) for _ in range(n_experts)]))
            moe.b2.copy_(proj.bias.expand(n_experts, -1))
        return moe

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"SoftMoE expects tokens of shape (batch, tokens, {self.dim}), got {tuple(x.shape)}")

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Routing logits ``(B, m, G, S)``: scaled cosine between each token group and each slot's key."""
        self._check(x)
        B, m, d = x.shape
        xg = F.normalize(x.view(B, m, self.groups, d // self.groups), dim=-1)
        phi = F.normalize(self.phi, dim=1)
        return self.scale * torch.einsum("bmgc,gcs->bmgs", xg, phi)

    def routing(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dispatch and combine weights, both ``(B, m, G, S)``.

        ``dispatch`` sums to 1 over the tokens (axis 1) for every slot and group; ``combine`` sums to 1 over the
        slots (axis 3) for every token and group.
        """
        L = self.logits(x)
        return L.softmax(dim=1), L.softmax(dim=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dispatch, combine = self.routing(x)
        B, m, d = x.shape
        G, c = self.groups, d // self.groups
        xg = x.view(B, m, G, c)
        slots = torch.einsum("bmgs,bmgc->bsgc", dispatch, xg).reshape(B, self.n_experts, self.slots_per_expert, d)
        h = self.act(torch.einsum("beps,esh->beph", slots, self.w1) + self.b1[None, :, None, :])
        y = torch.einsum("beph,ehd->bepd", h, self.w2) + self.b2[None, :, None, :]
        y = y.reshape(B, self.n_slots, G, c)
        return torch.einsum("bmgs,bsgc->bmgc", combine, y).reshape(B, m, d)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, hidden={self.hidden}, n_experts={self.n_experts}, "
                f"slots_per_expert={self.slots_per_expert}, groups={self.groups}")


class ParallelMoE(nn.Module):
    """Function-preserving upcycling: ``dense(x) + gate * SoftMoE(patch tokens)``, the first ``skip_tokens`` tokens
    ([CLS]) through the dense MLP only. ``(B, m, d) -> (B, m, d)``.

    Parameters
    ----------
    dense : nn.Module
        The pretrained ``c_fc -> act -> c_proj`` MLP, kept as a shared expert (trainable with the rest).
    moe : SoftMoE
        The routed experts, applied to tokens ``skip_tokens:``.
    gate_init : float
        Initial value of the scalar gate :math:`\\gamma`; 0 makes the block compute exactly ``dense`` at initialisation.
    skip_tokens : int
        Number of leading tokens kept out of the routing (1: the [CLS] token).
    """

    def __init__(self, dense: nn.Module, moe: SoftMoE, gate_init: float = 0.0, skip_tokens: int = 1):
        super().__init__()
        if skip_tokens < 0:
            raise ValueError(f"skip_tokens must be >= 0, got {skip_tokens}")
        self.dense, self.moe, self.skip_tokens = dense, moe, int(skip_tokens)
        self.gate = nn.Parameter(torch.tensor(float(gate_init)))

    @classmethod
    def from_mlp(cls, mlp: nn.Module, n_experts: int = 4, slots_per_expert: int = 4, groups: int = 1,
                 noise: float = 0.01, generator: torch.Generator | None = None, scale: float = 10.0,
                 gate_init: float = 0.0, skip_tokens: int = 1) -> "ParallelMoE":
        """Keep ``mlp`` as the shared expert and add a Soft MoE upcycled from it (:meth:`SoftMoE.from_mlp`)."""
        moe = SoftMoE.from_mlp(mlp, n_experts, slots_per_expert, groups, noise, generator, scale=scale)
        return cls(mlp, moe, gate_init, skip_tokens)

    @property
    def scale(self) -> nn.Parameter:
        """The routing scale of the Soft MoE branch."""
        return self.moe.scale

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 3 or x.shape[-1] != self.moe.dim or x.shape[1] <= self.skip_tokens:
            raise ValueError(f"ParallelMoE expects tokens of shape (batch, tokens > {self.skip_tokens}, "
                             f"{self.moe.dim}), got {tuple(x.shape)}")

    def routing(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dispatch and combine weights ``(B, m - skip_tokens, G, S)`` over the routed (patch) tokens."""
        self._check(x)
        return self.moe.routing(x[:, self.skip_tokens:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        y = self.dense(x)
        k = self.skip_tokens
        routed = y[:, k:] + self.gate * self.moe(x[:, k:])
        return torch.cat([y[:, :k], routed], dim=1) if k else routed

    def extra_repr(self) -> str:
        return f"skip_tokens={self.skip_tokens}"


def _routing_parameters(model: nn.Module) -> list:
    """``(module name, what, parameter)`` of every routing scale and gate inside ``model`` (the scale first: a NaN
    scale makes the gate NaN next)."""
    out = []
    for name, m in model.named_modules():
        if isinstance(m, ParallelMoE):
            out += [(name, "routing scale", m.moe.scale), (name, "gate", m.gate)]
        elif isinstance(m, SoftMoE):
            out.append((name, "routing scale", m.scale))
    return out


def check_finite_routing(model: nn.Module, step: int | None = None, params: list | None = None) -> None:
    """Raise :class:`FloatingPointError` when the gate or the routing scale of any Soft MoE inside ``model`` is
    NaN or infinite (training diverged; the message names the module and, when given, the step).

    ``params``: the model's :func:`_routing_parameters`, when a training loop checks every step (walking the
    module tree once instead of at every step)."""
    at = "" if step is None else f" at training step {step}"
    for name, what, p in (_routing_parameters(model) if params is None else params):
        if not bool(torch.isfinite(p.detach()).all()):
            raise FloatingPointError(
                f"the {what} of the Soft MoE {name or 'module'} became {float(p.detach().flatten()[0])}{at}: "
                "training diverged; lower the learning rate or the loss weights")
