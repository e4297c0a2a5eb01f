"""Online test-time adapters for a BatchNorm classifier (the FER2013 mini-Xception or anything with the same
interface): each is a small class whose :meth:`TestTimeAdapter.adapt` takes the next frames of a stream, returns the
class probabilities it predicts for them, and then updates itself.

=================  ====================================  ========================================================
adapter            parameters it changes                 objective on each batch
=================  ====================================  ========================================================
NoAdaptation       none                                  (source model, eval mode)
BNStats            none (normalisation statistics only)  (the stream's batch / running statistics)
Tent               BatchNorm scale and shift             mean entropy (Wang et al. 2021)
EATA               BatchNorm scale and shift             entropy of reliable, non-redundant frames, weighted by
                                                         confidence, + Fisher anti-forgetting (Niu et al. 2022)
SAR                BatchNorm scale and shift             reliable entropy with sharpness-aware steps and model
                                                         recovery (Niu et al. 2023)
TempT              all                                   entropy + temporal coherence of successive predictions
Fiesta             top-k entries by diagonal Fisher of   entropy + temporal coherence, masked updates
                   the first frames' pseudo-labels
=================  ====================================  ========================================================

Shared conventions
------------------
* Frames: float ``(n, 1|3, H, W)`` in [0, 1], in stream order. A frame where no face was found is passed as NaN
  (any non-finite value) or marked ``valid=False``: it is not shown to the model, gets the last prediction of the
  stream (uniform before the first), and is counted in ``log["no_face_frames"]``.
* Predictions are those of the forward pass *before* the update (one pass per batch, as TENT does online).
* Normalisation: every adapter but :class:`NoAdaptation` runs the model with :class:`StreamBatchNorm2d` layers
  (``bn_alpha``, ``bn_momentum``; a batch of one frame is capped, see :mod:`.norm`).
* A loss that is NaN or infinite resets the adapter to the source weights and statistics (``log["nan_resets"]``,
  and a :class:`RuntimeWarning`); ``reset_every=N`` resets after every N frames (a reset policy against drift).
* An empty batch returns an empty ``(0, C)`` tensor and changes nothing.
"""

from __future__ import annotations

import copy
import math
import time
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facelab.adaptation.test_time.fisher import count_parameters, fisher_diagonal, topk_mask
from facelab.adaptation.test_time.norm import StreamBatchNorm2d, convert_batchnorm, stream_norms

__all__ = ["TestTimeAdapter", "NoAdaptation", "BNStats", "Tent", "EATA", "SAR", "TempT", "Fiesta", "entropy",
           "temporal_consistency", "source_fishers", "run_stream", "StreamResult"]


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Per-row Shannon entropy (nats) of ``softmax(logits)``."""
    logp = F.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(1)


def temporal_consistency(probs: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared change of the predicted distribution between successive frames (TempT's coherence signal);
    ``previous`` (the last prediction of the previous batch, detached) joins the first frame to the stream. Zero when
    there is no pair."""
    seq = probs if previous is None else torch.cat([previous.reshape(1, -1).to(probs), probs])
    if seq.shape[0] < 2:
        return probs.sum() * 0.0
    return (seq[1:] - seq[:-1]).pow(2).sum(1).mean()


def _check_frames(frames, valid):
    if not isinstance(frames, torch.Tensor) or not frames.is_floating_point():
        raise TypeError(f"frames must be a float tensor (n, 1|3, H, W) in [0, 1], got {type(frames).__name__}"
                        + (f" of {frames.dtype}" if isinstance(frames, torch.Tensor) else ""))
    if frames.ndim != 4 or frames.shape[1] not in (1, 3):
        raise ValueError(f"frames must have shape (n, 1|3, H, W), got {tuple(frames.shape)}")
    ok = torch.isfinite(frames.detach()).flatten(1).all(1).cpu() if frames.shape[0] else torch.zeros(0, dtype=bool)
    if valid is not None:
        v = torch.as_tensor(valid, dtype=torch.bool).reshape(-1).cpu()
        if v.numel() != frames.shape[0]:
            raise ValueError(f"valid has {v.numel()} entries for {frames.shape[0]} frames")
        ok = ok & v
    return ok


class TestTimeAdapter:
    """Base class: holds the adapted copy of the model, the source state to reset to, and the log.

    Subclasses set :attr:`name` and implement :meth:`_select` (parameters to optimise, as ``{name: mask or None}``)
    and :meth:`_loss` (``logits -> loss`` or None to skip the update).
    """

    name = "base"
    uses_gradients = True

    def __init__(self, model: nn.Module, *, lr: float = 1e-3, optimizer: str = "adam", bn_alpha: float = 1.0,
                 bn_momentum: float = 0.0, single_frame_alpha: float = 0.1, reset_every: int | None = None,
                 steps: int = 1):
        if lr <= 0 or not math.isfinite(lr):
            raise ValueError(f"lr must be a positive number, got {lr}")
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        if reset_every is not None and (not isinstance(reset_every, int) or reset_every < 1):
            raise ValueError(f"reset_every must be a positive number of frames or None, got {reset_every!r}")
        if not (0.0 <= bn_alpha <= 1.0 and 0.0 <= bn_momentum <= 1.0):
            raise ValueError(f"bn_alpha and bn_momentum must lie in [0, 1], got {bn_alpha}, {bn_momentum}")
        self.lr, self.optimizer_name, self.steps = float(lr), optimizer, int(steps)
        self.reset_every = reset_every
        self.model = convert_batchnorm(copy.deepcopy(model), alpha=bn_alpha, momentum=bn_momentum,
                                       single_frame_alpha=single_frame_alpha).train()
        for p in self.model.parameters():
            p.requires_grad_(False)
        classes = getattr(model, "classes", None)
        self.n_classes = len(classes) if classes is not None else None
        self.log = dict(frames=0, batches=0, updates=0, no_face_frames=0, nan_resets=0, scheduled_resets=0,
                        recoveries=0, single_frame_batches=0, seconds=0.0)
        self._source = copy.deepcopy(self.model.state_dict())
        self.masks: dict[str, torch.Tensor | None] = {}
        self._configure()

    # ---------------------------------------------------------------------------------------------- set-up
    def _select(self) -> dict[str, torch.Tensor | None]:
        """Parameters to optimise: ``{name: None (whole tensor) or bool mask}``."""
        return {}

    def _configure(self):
        self.masks = self._select()
        named = dict(self.model.named_parameters())
        for n in self.masks:
            named[n].requires_grad_(True)
        self.params = [named[n] for n in self.masks]
        self._make_optimizer()
        self.previous = None       # last prediction (for no-face frames and the temporal term)
        self._since_reset = 0

    def _make_optimizer(self):
        if not self.params:
            self.optimizer = None
        elif self.optimizer_name == "adam":
            self.optimizer = torch.optim.Adam(self.params, lr=self.lr)
        else:
            self.optimizer = torch.optim.SGD(self.params, lr=self.lr, momentum=0.9)

    @property
    def n_updated(self) -> int:
        """Number of parameter entries this adapter may change."""
        named = dict(self.model.named_parameters())
        return int(sum(named[n].numel() if m is None else int(m.sum()) for n, m in self.masks.items()))

    @property
    def n_parameters(self) -> int:
        return count_parameters(self.model)

    def reset(self, statistics: bool = True) -> None:
        """Back to the source weights (and, with ``statistics``, the source normalisation statistics), fresh
        optimiser state."""
        if statistics:
            self.model.load_state_dict(self._source)
        else:
            with torch.no_grad():
                for n, p in self.model.named_parameters():
                    p.copy_(self._source[n])
        self._make_optimizer()
        self.previous = None
        self._since_reset = 0
        self._on_reset()

    def _on_reset(self):
        pass

    # ---------------------------------------------------------------------------------------------- running
    def _input(self, frames: torch.Tensor) -> torch.Tensor:
        pre = getattr(self.model, "preprocess", None)
        return pre(frames) if pre is not None else frames

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out[0] if isinstance(out, tuple) else out

    def _loss(self, logits: torch.Tensor, x: torch.Tensor):
        raise NotImplementedError

    def _step(self, x: torch.Tensor) -> torch.Tensor:
        """One batch: forward, loss, masked update; returns the logits of the forward before the update."""
        if self.optimizer is None:
            with torch.no_grad():
                return self._forward(x)
        with torch.enable_grad():
            logits = self._forward(x)
            loss = self._loss(logits, x)
            if loss is None:
                return logits.detach()
            if not torch.isfinite(loss.detach()):
                self._nan_reset(float(loss.detach()))
                return logits.detach()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self._apply_masks()
            self.optimizer.step()
            self.log["updates"] += 1
        return logits.detach()

    def _apply_masks(self):
        named = dict(self.model.named_parameters())
        for n, m in self.masks.items():
            if m is not None and named[n].grad is not None:
                named[n].grad.mul_(m)

    def _nan_reset(self, value):
        self.log["nan_resets"] += 1
        warnings.warn(f"{self.name}: the adaptation loss became {value}; reset to the source weights "
                      f"(reset {self.log['nan_resets']} of this stream)", RuntimeWarning, stacklevel=3)
        self.reset()

    def adapt(self, frames: torch.Tensor, valid=None) -> torch.Tensor:
        """Predict the next frames of the stream (probabilities, ``(n, C)``), then adapt on them.

        ``valid`` (n bools, optional) marks frames with a face; non-finite frames count as no face.
        """
        ok = _check_frames(frames, valid)
        n = frames.shape[0]
        t0 = time.perf_counter()
        dev = next(self.model.parameters()).device
        if self.n_classes is None:
            self.n_classes = int(self._source[[k for k in self._source if k.endswith("bias")][-1]].numel())
        out = torch.full((n, self.n_classes), float("nan"), device=dev)
        if n == 0:
            return out.cpu()
        idx = torch.nonzero(ok).reshape(-1)
        if idx.numel():
            x = self._input(frames[idx.to(frames.device)])
            probs = F.softmax(self._step(x).float(), dim=1)
            if not torch.isfinite(probs).all():   # a forward that overflowed: fall back to the source model
                self._nan_reset(float("nan"))
                with torch.no_grad():
                    probs = F.softmax(self._forward(x).float(), dim=1)
            out[idx.to(dev)] = probs.detach()
        # frames without a face: hold the last prediction
        last = self.previous
        for i in range(n):
            if ok[i]:
                last = out[i]
            else:
                out[i] = last if last is not None else torch.full((self.n_classes,), 1.0 / self.n_classes,
                                                                  device=dev)
        if idx.numel():
            self.previous = out[idx[-1]].detach().clone()
        self.log["no_face_frames"] += int(n - idx.numel())
        self.log["frames"] += n
        self.log["batches"] += 1
        self.log["single_frame_batches"] = sum(m.single_frame_batches for m in stream_norms(self.model))
        self._since_reset += n
        if self.reset_every is not None and self._since_reset >= self.reset_every:
            self.log["scheduled_resets"] += 1
            self.reset()
        self.log["seconds"] += time.perf_counter() - t0
        return out.cpu()


class NoAdaptation(TestTimeAdapter):
    """The source model as it is (eval mode, source statistics; the fast folded inference path)."""

    name = "none"
    uses_gradients = False

    def __init__(self, model: nn.Module, **kw):
        super().__init__(model, bn_alpha=0.0, bn_momentum=0.0)
        self.source_model = copy.deepcopy(model).eval()

    def _step(self, x):
        with torch.no_grad():
            out = self.source_model(x)
        return out[0] if isinstance(out, tuple) else out


class BNStats(TestTimeAdapter):
    """Only the normalisation statistics follow the stream (``bn_alpha``/``bn_momentum``); no gradients."""

    name = "BN stats"
    uses_gradients = False

    def __init__(self, model, *, bn_alpha: float = 1.0, bn_momentum: float = 0.0, **kw):
        kw.pop("lr", None)
        super().__init__(model, bn_alpha=bn_alpha, bn_momentum=bn_momentum, **kw)


def _bn_affine(model) -> dict:
    return {f"{mn}.{pn}": None for mn, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)
            for pn, _ in m.named_parameters(recurse=False)}


class Tent(TestTimeAdapter):
    """TENT: minimise the mean prediction entropy over the BatchNorm scale and shift."""

    name = "TENT"

    def _select(self):
        return _bn_affine(self.model)

    def _loss(self, logits, x):
        return entropy(logits).mean()


def source_fishers(model: nn.Module, source_frames: torch.Tensor, *, batch_size: int = 1) -> dict:
    """EATA's anti-forgetting weights: diagonal Fisher of the pseudo-label log-likelihood on source frames
    (already preprocessed, in eval-mode normalisation), for the BatchNorm affine parameters:
    ``{name: (fisher, source value)}``."""
    m = copy.deepcopy(model).eval()
    f = fisher_diagonal(m, source_frames)
    named = dict(m.named_parameters())
    keys = _bn_affine(m)
    return {n: (f[n].detach(), named[n].detach().clone()) for n in keys}


class EATA(TestTimeAdapter):
    """EATA: entropy of reliable (entropy < ``e_margin``, default 0.4 ln C) and non-redundant (cosine similarity to
    the running mean prediction < ``d_margin``) frames, weighted by ``exp(e_margin - entropy)``, plus
    ``fisher_alpha * sum F (theta - theta_source)^2`` over the BatchNorm affine parameters."""

    name = "EATA"

    def __init__(self, model, *, e_margin: float | None = None, d_margin: float = 0.05, fisher_alpha: float = 2000.0,
                 fishers: dict | None = None, **kw):
        self.e_margin_arg, self.d_margin, self.fisher_alpha = e_margin, float(d_margin), float(fisher_alpha)
        self.fishers = fishers
        self.current_probs = None
        super().__init__(model, **kw)

    def _select(self):
        return _bn_affine(self.model)

    def _on_reset(self):
        self.current_probs = None

    def _loss(self, logits, x):
        C = logits.shape[1]
        e_margin = 0.4 * math.log(C) if self.e_margin_arg is None else self.e_margin_arg
        ent = entropy(logits)
        keep = ent < e_margin
        lg, en = logits[keep], ent[keep]
        if self.current_probs is not None and lg.shape[0] > 0:
            cos = F.cosine_similarity(self.current_probs.unsqueeze(0), lg.softmax(1), dim=1)
            nr = cos.abs() < self.d_margin
            lg, en = lg[nr], en[nr]
        if lg.shape[0] > 0:
            new = lg.softmax(1).mean(0).detach()
            self.current_probs = new if self.current_probs is None else 0.9 * self.current_probs + 0.1 * new
            loss = (en * torch.exp(e_margin - en.detach())).mean()
        else:
            loss = logits.sum() * 0.0
        if self.fishers:
            named = dict(self.model.named_parameters())
            for n, (f, p0) in self.fishers.items():
                loss = loss + self.fisher_alpha * (f.to(named[n]) * (named[n] - p0.to(named[n])).pow(2)).sum()
        return loss


class SAR(TestTimeAdapter):
    """SAR: entropy of reliable frames (entropy < 0.4 ln C), minimised with a sharpness-aware step (SAM, radius
    ``rho``) on the BatchNorm affine parameters; frames still reliable after the perturbation enter the second loss;
    when the moving average of that loss falls below ``reset_constant`` the model is reset (model recovery)."""

    name = "SAR"

    def __init__(self, model, *, rho: float = 0.05, e_margin: float | None = None, reset_constant: float = 0.2,
                 **kw):
        self.rho, self.e_margin_arg, self.reset_constant = float(rho), e_margin, float(reset_constant)
        self.ema = None
        super().__init__(model, **kw)

    def _select(self):
        return _bn_affine(self.model)

    def _on_reset(self):
        self.ema = None

    def _step(self, x):
        with torch.enable_grad():
            logits = self._forward(x)
            C = logits.shape[1]
            e_margin = 0.4 * math.log(C) if self.e_margin_arg is None else self.e_margin_arg
            ent = entropy(logits)
            keep = ent < e_margin
            if not bool(keep.any()):
                return logits.detach()
            loss = ent[keep].mean()
            if not torch.isfinite(loss.detach()):
                self._nan_reset(float(loss.detach()))
                return logits.detach()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in self.params]
            norm = torch.sqrt(sum((g ** 2).sum() for g in grads)) + 1e-12
            eps = [self.rho * g / norm for g in grads]
            with torch.no_grad():
                for p, e in zip(self.params, eps):
                    p.add_(e)
            norms = stream_norms(self.model)    # the second pass must not move the stream statistics again
            saved = [m.stream_momentum for m in norms]
            for m in norms:
                m.stream_momentum = 0.0
            try:
                ent2 = entropy(self._forward(x[keep]))
            finally:
                for m, mo in zip(norms, saved):
                    m.stream_momentum = mo
            keep2 = ent2 < e_margin
            loss2 = ent2[keep2].mean() if bool(keep2.any()) else None
            self.optimizer.zero_grad(set_to_none=True)
            if loss2 is not None:
                loss2.backward()
            with torch.no_grad():
                for p, e in zip(self.params, eps):
                    p.sub_(e)
            if loss2 is not None:
                if not torch.isfinite(loss2.detach()):
                    self._nan_reset(float(loss2.detach()))
                    return logits.detach()
                self.optimizer.step()
                self.log["updates"] += 1
                v = float(loss2.detach())
                self.ema = v if self.ema is None else 0.9 * self.ema + 0.1 * v
                if self.ema < self.reset_constant:   # model recovery: the weights go back, the stream's
                    self.log["recoveries"] += 1         # normalisation statistics stay (SAR normalises by batch)
                    self.reset(statistics=False)
        return logits.detach()


class _EntropyTemporal(TestTimeAdapter):
    def __init__(self, model, *, temporal: float = 1.0, entropy_weight: float = 1.0, **kw):
        self.temporal, self.entropy_weight = float(temporal), float(entropy_weight)
        super().__init__(model, **kw)

    def _loss(self, logits, x):
        loss = self.entropy_weight * entropy(logits).mean()
        if self.temporal:
            loss = loss + self.temporal * temporal_consistency(logits.softmax(1), self.previous)
        return loss


class TempT(_EntropyTemporal):
    """TempT-style adaptation of every parameter: entropy + ``temporal`` x temporal coherence."""

    name = "TempT (all parameters)"

    def _select(self):
        return {n: None for n, _ in self.model.named_parameters()}


class Fiesta(_EntropyTemporal):
    """FIESTA: the diagonal Fisher of the pseudo-label log-likelihood on the first ``n_fisher`` frames (with
    source normalisation) ranks every parameter entry; only the top ``k`` (int, or a fraction) are updated, with
    entropy + ``temporal`` x temporal coherence. Until ``n_fisher`` frames have been seen the adapter only predicts
    (with stream statistics). ``fisher`` and ``mask`` hold what was estimated."""

    name = "FIESTA"

    def __init__(self, model, *, k=2000, n_fisher: int = 3, **kw):
        if isinstance(n_fisher, bool) or not isinstance(n_fisher, int) or n_fisher < 1:
            raise ValueError(f"n_fisher must be a positive number of frames, got {n_fisher!r}")
        from facelab.adaptation.test_time.fisher import mask_size

        mask_size(k, count_parameters(model))   # a mask larger than the model fails here, before any frame
        self.k, self.n_fisher = k, n_fisher
        self.fisher = None
        self.mask = None
        self._buffer: list[torch.Tensor] = []
        super().__init__(model, **kw)

    def _select(self):
        if self.mask is None:
            return {}
        return {n: m for n, m in self.mask.items() if bool(m.any())}

    def estimate(self, x: torch.Tensor) -> dict:
        """Fisher on preprocessed frames ``x`` (source normalisation), then the top-k mask; returns the mask."""
        norms = stream_norms(self.model)
        saved = [(m.alpha, m.stream_momentum) for m in norms]
        for m in norms:
            m.alpha, m.stream_momentum = 0.0, 0.0
        try:
            self.fisher = fisher_diagonal(self.model, x, forward=lambda mod, xi: self._forward(xi))
        finally:
            for m, (a, mo) in zip(norms, saved):
                m.alpha, m.stream_momentum = a, mo
        self.mask = topk_mask(self.fisher, self.k)
        self._configure()
        return self.mask

    def _step(self, x):
        if self.mask is None:
            need = self.n_fisher - sum(b.shape[0] for b in self._buffer)
            self._buffer.append(x[:need].detach())
            if sum(b.shape[0] for b in self._buffer) >= self.n_fisher:
                self.estimate(torch.cat(self._buffer))
                self._buffer = []
            else:
                with torch.no_grad():
                    return self._forward(x)
        return super()._step(x)


class StreamResult(dict):
    """``probs`` (T, C) numpy, ``pred`` (T,), ``seconds`` (adaptation wall time), ``ms_per_frame``, ``log``."""


def run_stream(adapter: TestTimeAdapter, frames: torch.Tensor, batch_size: int = 8, valid=None) -> StreamResult:
    """Feed a stream to ``adapter`` in consecutive batches of ``batch_size`` frames; collect its predictions.

    An empty stream returns empty arrays (and ``ms_per_frame`` NaN)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive number of frames, got {batch_size!r}")
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4:
        raise ValueError(f"a stream is a (T, 1|3, H, W) tensor of frames, got "
                         f"{tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__}")
    T = frames.shape[0]
    if valid is not None:
        valid = torch.as_tensor(valid, dtype=torch.bool).reshape(-1)
        if valid.numel() != T:
            raise ValueError(f"valid has {valid.numel()} entries for a stream of {T} frames")
    parts = []
    t0 = time.perf_counter()
    for s in range(0, T, batch_size):
        parts.append(adapter.adapt(frames[s:s + batch_size], None if valid is None else valid[s:s + batch_size]))
    secs = time.perf_counter() - t0
    probs = torch.cat(parts).numpy() if parts else np.zeros((0, adapter.n_classes or 0), dtype=np.float32)
    return StreamResult(probs=probs, pred=probs.argmax(1) if T else np.zeros(0, dtype=int), seconds=secs,
                        ms_per_frame=1000 * secs / T if T else float("nan"), log=dict(adapter.log))
