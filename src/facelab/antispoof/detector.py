r"""Attack detectors: the CLIP-based detector (optionally with Soft MoE, DM, CDM), a CNN baseline and a linear probe.

:class:`AttackDetector` classifies like CLIP does: the L2-normalised image embedding :math:`\hat f` is compared with
two class vectors :math:`\hat t_{\text{fake}}, \hat t_{\text{live}}` initialised from the text tower's embedding of the
prompts :data:`CLASS_PROMPTS` and then fine-tuned (prompt-initialised head):

.. math:: p(\text{live}\mid x) = \operatorname{softmax}_k\bigl(s\,\hat f^\top \hat t_k\bigr)_{\text{live}}.

Fine-tuning trains the last ``finetune_last`` transformer blocks (where the Soft MoE sits), the final LayerNorm and
projection, the class vectors and the scale; the earlier blocks stay frozen, so their output tokens are computed once
and cached (:func:`train_detector`). The training loss is

.. math:: \mathcal L = \mathrm{CE} + \lambda_{DM}\,\mathcal L_{DM} + \lambda_{CDM}\,\mathcal L_{CDM}

on class-balanced batches (half live, half attacks), see :mod:`facelab.antispoof.losses`.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from facelab.antispoof.losses import centre_distance, cluster_distillation_loss, disentanglement_loss
from facelab.antispoof.moe import _routing_parameters, check_finite_routing
from facelab.antispoof.vit import VisionTransformer, check_images

__all__ = ["CLASS_PROMPTS", "AttackDetector", "CNNBaseline", "LinearProbe", "TrainConfig", "train_detector",
           "frozen_tokens",
           "predict_live", "embed"]

#: Prompts that initialise the class vectors; index 0 = attack (fake), 1 = live (bona fide).
CLASS_PROMPTS = ("a photo of a fake face, a spoof or a manipulated image", "a photo of a real, live human face")


class AttackDetector(nn.Module):
    """CLIP image tower + prompt-initialised cosine classifier (logits ``(N, 2)``: fake, live)."""

    def __init__(self, visual: VisionTransformer, class_embeddings: torch.Tensor, logit_scale: float = math.log(1 / 0.07)):
        super().__init__()
        if class_embeddings.shape != (2, visual.config.embed_dim):
            raise ValueError(f"class_embeddings must have shape (2, {visual.config.embed_dim}), "
                             f"got {tuple(class_embeddings.shape)}")
        self.visual = visual
        self.class_embeddings = nn.Parameter(F.normalize(class_embeddings.detach().clone().float(), dim=1))
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale)))

    @classmethod
    def from_clip(cls, clip, moe: dict | None = None, prompts=CLASS_PROMPTS,
                  generator: torch.Generator | None = None) -> "AttackDetector":
        """Copy the pretrained image tower, optionally upcycle its last MLPs into a Soft MoE, embed the prompts.

        ``moe`` is passed to :meth:`VisionTransformer.to_moe` (``last``, ``n_experts``, ``slots_per_expert``,
        ``groups``); ``None`` keeps the dense MLPs.
        """
        visual = copy.deepcopy(clip.visual)
        if moe is not None:
            visual.to_moe(generator=generator, **moe)
        with torch.no_grad():
            text = clip.encode_text(list(prompts)).detach()
        return cls(visual, text.to(next(visual.parameters()).device), float(clip.logit_scale.detach()))

    @property
    def image_size(self) -> int:
        return self.visual.config.image_size

    def _logits(self, emb: torch.Tensor) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=100) * emb @ F.normalize(self.class_embeddings, dim=1).t()

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings ``(N, E)``."""
        return F.normalize(self.visual(images), dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._logits(self.embed(images))

    def embed_tokens(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        return F.normalize(self.visual.head(tokens, start), dim=-1)


@contextlib.contextmanager
def _seeded(seed: int | None):
    """Run the block with ``torch.manual_seed(seed)`` and restore the global CPU RNG afterwards (no-op for None)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


class CNNBaseline(nn.Module):
    """A small binary CNN trained from scratch (4 conv blocks -> global average -> embedding -> 2 logits).

    ``seed``: initialise the weights from ``torch.manual_seed(seed)`` without touching the global RNG (default:
    the global RNG); ``device``: where the module is created.
    """

    def __init__(self, image_size: int = 64, width: int = 32, embed_dim: int = 64, *, device=None,
                 seed: int | None = None):
        super().__init__()
        self.image_size = image_size
        with _seeded(seed):
            self._build(width, embed_dim)
        if device is not None:
            self.to(device)

    def _build(self, width: int, embed_dim: int) -> None:
        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

        self.features = nn.Sequential(block(3, width), nn.MaxPool2d(2), block(width, 2 * width), nn.MaxPool2d(2),
                                      block(2 * width, 2 * width), nn.MaxPool2d(2), block(2 * width, 4 * width),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, embed_dim))
        self.classifier = nn.Linear(embed_dim, 2)

    def _normalised(self, images: torch.Tensor) -> torch.Tensor:
        # channels-last activations: oneDNN's convolutions run about 1.5x faster on the CPU that way (training step
        # 72 -> 43 ms at batch 24, 48 px, one thread: benchmarks/bench_antispoof.py; train_detector reads its batches
        # through here too: one chapter-04 CNN fit 9.7 -> 5.9 s); the same values to rounding
        return ((images - 0.5) / 0.25).contiguous(memory_format=torch.channels_last)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, self.image_size)
        return F.normalize(self.features(self._normalised(images)), dim=-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, self.image_size)
        return self.classifier(self.features(self._normalised(images)))


class LinearProbe:
    """Logistic regression (class-balanced) on the frozen, normalised embeddings of a CLIP image tower.

    Parameters
    ----------
    clip : CLIPModel
    C : float
        Inverse L2 regularisation strength of :class:`sklearn.linear_model.LogisticRegression`.
    """

    def __init__(self, clip, C: float = 1.0):
        self.clip = clip
        self.C = C

    def fit(self, images: torch.Tensor, live) -> "LinearProbe":
        from sklearn.linear_model import LogisticRegression

        X = embed(self.clip.encode_image, images)
        y = _as_live(live, len(X))
        self.model_ = LogisticRegression(C=self.C, class_weight="balanced", max_iter=2000).fit(X, y)
        return self

    def embed(self, images: torch.Tensor) -> np.ndarray:
        return embed(self.clip.encode_image, images)

    def predict_live(self, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
        if not hasattr(self, "model_"):
            raise RuntimeError("LinearProbe is not fitted: call fit(images, live) first")
        if len(_check_scored_images(images)) == 0:
            return np.zeros(0, dtype=np.float64)
        return self.model_.predict_proba(self.embed(images))[:, list(self.model_.classes_).index(1)]


@torch.no_grad()
def embed(fn: Callable, images: torch.Tensor, batch_size: int = 256, device=None) -> np.ndarray:
    """Apply an embedding function in batches (eval mode, no grad) and return a float32 NumPy array."""
    owner = getattr(fn, "__self__", None)
    was = owner.training if isinstance(owner, nn.Module) else None
    if was:
        owner.eval()
    if device is None and isinstance(owner, nn.Module):
        device = next(owner.parameters()).device
    out = [fn(images[i:i + batch_size].to(device)).float().cpu() for i in range(0, images.shape[0], batch_size)]
    if was:
        owner.train()
    return torch.cat(out).numpy()


def _check_scored_images(images) -> torch.Tensor:
    """The images a detector scores: a float tensor ``(N, 3, H, W)`` with finite values in [0, 1] (a NumPy array, a
    0-255 image or a NaN image is refused with a message saying so)."""
    from facelab.core.images import check_images as check_batch

    if isinstance(images, np.ndarray):
        raise TypeError(f"images must be a torch.Tensor (N, 3, H, W) float in [0, 1], got a NumPy array of shape "
                        f"{images.shape} and dtype {images.dtype}; convert it with torch.from_numpy(array) "
                        "(channels first, divided by 255 if it holds 0-255 values)")
    return check_batch(images, "images", channels=(3,), allow_empty=True, finite=True, value_range=(0.0, 1.0))


def predict_live(model, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """:math:`p(\\text{live})` for every image, for an :class:`AttackDetector`, :class:`CNNBaseline` or probe.

    ``images`` is a float tensor ``(N, 3, H, W)`` with finite values in [0, 1]; anything else (a NumPy array, 0-255
    values, NaN) raises a ``TypeError``/``ValueError`` that says what was expected.
    """
    _check_scored_images(images)
    if isinstance(model, LinearProbe):
        return model.predict_live(images, batch_size)
    if images.shape[0] == 0:
        return np.zeros(0, dtype=np.float32)
    model.eval()
    return embed(lambda x: model(x).softmax(-1)[:, 1], images, batch_size, device=next(model.parameters()).device)


def _as_live(live, n: int) -> np.ndarray:
    y = np.asarray(live.detach().cpu() if isinstance(live, torch.Tensor) else live)
    if y.shape != (n,):
        raise ValueError(f"live labels must have shape ({n},), got {y.shape}")
    if not np.all(np.isin(np.unique(y), [0, 1])):
        raise ValueError(f"live labels must be 1 (live) or 0 (attack), got {np.unique(y)[:10].tolist()}")
    if len(np.unique(y)) < 2:
        raise ValueError("training needs both live (1) and attack (0) images, got only one class")
    return y.astype(np.int64)


@dataclass
class TrainConfig:
    """Fine-tuning schedule and loss weights (the defaults are the quick profile's)."""

    steps: int = 150
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    lambda_dm: float = 0.0
    lambda_cdm: float = 0.0
    cdm_margin: float = 1.0
    cdm_temperature: float = 0.1
    cdm_compact: str = "both"
    gate_lr_factor: float = 10.0  # learning rate of the gates of a parallel Soft MoE, relative to ``lr``
    finetune_last: int = 2
    log_every: int = 10

    def replace(self, **changes) -> "TrainConfig":
        return TrainConfig(**{**asdict(self), **changes})


def _balanced_batch(live_idx: torch.Tensor, fake_idx: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    h = size // 2
    a = live_idx[torch.randint(0, len(live_idx), (h,), generator=g)]
    b = fake_idx[torch.randint(0, len(fake_idx), (size - h,), generator=g)]
    return torch.cat([a, b])


def frozen_tokens(visual: VisionTransformer, images: torch.Tensor, finetune_last: int,
                  batch_size: int = 256) -> torch.Tensor:
    """Tokens after the frozen blocks (all but the last ``finetune_last``), computed once (no grad)."""
    n = visual.n_layers
    start = n - int(finetune_last)
    if not 0 <= start < n:
        raise ValueError(f"finetune_last must be in 1..{n}, got {finetune_last}")
    dev = next(visual.parameters()).device
    was = visual.training
    visual.eval()
    with torch.no_grad():
        out = torch.cat([visual.tokens(images[i:i + batch_size].to(dev), stop=start)
                         for i in range(0, images.shape[0], batch_size)])
    visual.train(was)
    return out


def train_detector(model: nn.Module, images: torch.Tensor, live, config: TrainConfig | None = None,
                   generator: torch.Generator | None = None, progress: Callable | None = None,
                   tokens: torch.Tensor | None = None) -> pd.DataFrame:
    """Train an :class:`AttackDetector` (last blocks, cached frozen tokens) or a :class:`CNNBaseline` (all of it).

    Parameters
    ----------
    model : AttackDetector or CNNBaseline
        Trained in place.
    images : (N, 3, S, S) tensor in [0, 1]
    live : (N,) array of 0/1
    config : TrainConfig
    generator : torch.Generator, optional
        Batch sampling (and flips for the CNN).
    progress : callable, optional
    tokens : tensor, optional
        Precomputed :func:`frozen_tokens` of ``images`` (the frozen blocks are shared by every CLIP variant, so
        the ablation computes them once per training set).

    Raises
    ------
    FloatingPointError
        When the gate or the routing scale of a Soft MoE is or becomes NaN or infinite (checked before every step
        and after the last).

    Returns
    -------
    pandas.DataFrame
        Logged every ``config.log_every`` steps: ``step``, ``loss``, ``ce``, ``dm``, ``cdm``, ``accuracy`` (on the
        batch) and ``centre_distance`` (live vs fake centre of the batch embeddings).
    """
    cfg = config or TrainConfig()
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    size = model.image_size
    check_images(images, size)
    y = torch.as_tensor(_as_live(live, images.shape[0]))
    dev = next(model.parameters()).device
    live_idx, fake_idx = torch.nonzero(y == 1).squeeze(1), torch.nonzero(y == 0).squeeze(1)

    if isinstance(model, AttackDetector):
        n = model.visual.n_layers
        start = n - int(cfg.finetune_last)
        if not 0 <= start < n:
            raise ValueError(f"finetune_last must be in 1..{n}, got {cfg.finetune_last}")
        for name, p in model.named_parameters():
            frozen = name.startswith(("visual.conv1", "visual.class_embedding", "visual.positional_embedding",
                                      "visual.ln_pre")) or any(
                name.startswith(f"visual.transformer.resblocks.{i}.") for i in range(start))
            p.requires_grad_(not frozen)
        cache = frozen_tokens(model.visual, images, cfg.finetune_last) if tokens is None else tokens.to(dev)
        if cache.shape[0] != images.shape[0]:
            raise ValueError(f"tokens hold {cache.shape[0]} images, but {images.shape[0]} images were given")

        def forward(idx):
            emb = model.embed_tokens(cache[idx.to(dev)], start)
            return model._logits(emb), emb
    else:
        def forward(idx):
            x = images[idx].to(dev)
            flip = torch.rand(len(idx), generator=g) < 0.5
            x[flip.to(dev)] = x[flip.to(dev)].flip(-1)
            z = model.features(model._normalised(x))    # the same layout as the module's forward
            return model.classifier(z), F.normalize(z, dim=-1)

    # the gates of a parallel (function-preserving) upcycling start at 0 and must be able to reach O(1) within the
    # schedule: their learning rate is gate_lr_factor times the others' (Adam moves a parameter by about lr a step)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    gates = [p for n, p in named if n.endswith(".gate")]
    rest = [p for n, p in named if not n.endswith(".gate")]
    groups = [{"params": rest}] + ([{"params": gates, "lr": cfg.lr * cfg.gate_lr_factor, "weight_decay": 0.0}]
                                   if gates else [])
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, cfg.steps) / cfg.steps)))
    model.train()
    rows = []
    it = range(cfg.steps) if progress is None else progress(range(cfg.steps), desc="fine-tuning")
    routing = _routing_parameters(model)           # the module tree walked once, the scalars checked every step
    for step in it:
        check_finite_routing(model, step, routing)  # the state this step starts from (cheap: a few scalars)
        idx = _balanced_batch(live_idx, fake_idx, cfg.batch_size, g)
        yb = y[idx].to(dev)
        logits, emb = forward(idx)
        ce = F.cross_entropy(logits, yb)
        dm = disentanglement_loss(emb, yb) if cfg.lambda_dm else emb.new_zeros(())
        cdm = (cluster_distillation_loss(emb, yb, cfg.cdm_margin, cfg.cdm_temperature, compact=cfg.cdm_compact)
               if cfg.lambda_cdm else emb.new_zeros(()))
        loss = ce + cfg.lambda_dm * dm + cfg.lambda_cdm * cdm
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            rows.append({"step": step, "loss": loss.item(), "ce": ce.item(), "dm": dm.item(), "cdm": cdm.item(),
                         "accuracy": float((logits.argmax(1) == yb).float().mean()),
                         "centre_distance": centre_distance(emb, yb)})
    check_finite_routing(model, cfg.steps, routing)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return pd.DataFrame(rows)
