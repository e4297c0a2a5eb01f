"""Multimodal micro-expression recognition: one branch per modality, cross-attention and late fusion, focal loss,
leave-one-subject-out (LOSO) evaluation with UF1 and UAR.

Branches (as in the MMME code, made small for a CPU):

- video: onset -> apex optical flow (u, v, magnitude on a 28 x 28 grid) -> spatial transformer (a localisation net
  predicts an affine warp, initialised to the identity) -> small CNN (:class:`FlowSTN`);
- EEG: band power in 5 bands per sliding window (n_windows x 160) -> temporal convolutional network with dilated
  causal convolutions and residual connections (:class:`EEGTCN`);
- peripheral: HRV / SCR / breathing / skin-temperature features -> MLP with one token per feature
  (:class:`PeripheralNet`).

Fusion: :class:`CrossAttentionFusion` lets each modality's tokens attend to the other modalities' tokens
(``nn.MultiheadAttention(batch_first=True)``), then a transformer layer (``batch_first=True``) mixes the three pooled
modality tokens. The original MMME fusion code fed ``(batch, seq, dim)`` tensors to a layer expecting
``(seq, batch, dim)``, so attention ran *across the samples of a batch*; here every attention is batch-first and a
test checks that permuting the batch permutes the outputs. Late fusion averages the branches' class probabilities.

Trained jointly from scratch on small leave-one-subject-out folds, the weaker branches of a fusion stay
under-trained. So the fusion can also start from the three unimodal encoders pretrained in the same fold
(:data:`PRETRAINED_FUSIONS`): frozen, or fine-tuned at a lower learning rate with auxiliary per-branch losses
(every encoder keeps its own head), with a residual path that starts as the branches' late fusion. Next to it, a
calibrated late fusion (:func:`calibrate_late_fusion`): per-branch temperatures and mixing weights fitted on
out-of-fold predictions of the training subjects.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from facelab.metrics.classification import classification_summary

__all__ = ["PRETRAINED_FUSIONS", "calibrate_late_fusion", "apply_late_fusion", "FocalLoss", "FlowSTN", "EEGTCN",
           "PeripheralNet", "CrossAttentionFusion", "MultimodalData",
           "standardise_per_subject", "impute_standardise", "train_model", "predict_proba", "loso_evaluate",
           "loso_linear", "results_table"]


class FocalLoss(nn.Module):
    """Focal loss :math:`-\\alpha_{y} (1 - p_{y})^{\\gamma} \\log p_{y}` (Lin et al. 2017); ``gamma=0`` is
    (weighted) cross-entropy. ``alpha``: optional per-class weights (e.g. inverse class frequencies)."""

    def __init__(self, gamma: float = 2.0, alpha: torch.Tensor | None = None):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.register_buffer("alpha", None if alpha is None else torch.as_tensor(alpha, dtype=torch.float32))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits, dim=-1).gather(1, target[:, None]).squeeze(1)
        loss = -((1 - logp.exp()) ** self.gamma) * logp
        if self.alpha is not None:
            loss = loss * self.alpha[target]
        return loss.mean()


class FlowSTN(nn.Module):
    """Spatial transformer + CNN on (B, 3, 28, 28) onset -> apex flow. ``tokens`` gives (B, 49, d) feature tokens."""

    def __init__(self, n_classes: int = 5, d: int = 64, in_ch: int = 3):
        super().__init__()
        self.loc = nn.Sequential(nn.Conv2d(in_ch, 8, 5, padding=2), nn.MaxPool2d(2), nn.ReLU(),
                                 nn.Conv2d(8, 8, 3, padding=1), nn.AdaptiveAvgPool2d(4), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(8 * 16, 6))
        nn.init.zeros_(self.loc[-1].weight)
        with torch.no_grad():
            self.loc[-1].bias.copy_(torch.tensor([1.0, 0, 0, 0, 1.0, 0]))
        self.cnn = nn.Sequential(nn.Conv2d(in_ch, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(16, d, 3, padding=1), nn.BatchNorm2d(d), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(d, n_classes))

    def warp(self, x: torch.Tensor) -> torch.Tensor:
        theta = self.loc(x).view(-1, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.cnn(self.warp(x)).flatten(2).transpose(1, 2)  # (B, 49, d)

    def classify(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(tokens.mean(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.tokens(x))


class _TCNBlock(nn.Module):
    def __init__(self, c_in, c_out, dilation, k=3):
        super().__init__()
        self.pad = (k - 1) * dilation
        self.conv1 = nn.Conv1d(c_in, c_out, k, dilation=dilation)
        self.conv2 = nn.Conv1d(c_out, c_out, k, dilation=dilation)
        self.res = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.drop = nn.Dropout(0.2)

    def forward(self, x):
        y = self.drop(F.relu(self.conv1(F.pad(x, (self.pad, 0)))))  # causal: pad on the left only
        y = self.drop(F.relu(self.conv2(F.pad(y, (self.pad, 0)))))
        return F.relu(y + self.res(x))


class EEGTCN(nn.Module):
    """Temporal convolutional network on (B, n_windows, n_features) EEG band power; ``tokens``: (B, n_windows, d)."""

    def __init__(self, n_features: int = 160, n_classes: int = 5, d: int = 64):
        super().__init__()
        self.inp = nn.Sequential(nn.Dropout(0.2), nn.Conv1d(n_features, d, 1))
        self.blocks = nn.Sequential(_TCNBlock(d, d, 1), _TCNBlock(d, d, 2))
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(d, n_classes))

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.inp(x.transpose(1, 2))).transpose(1, 2)

    def classify(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(tokens.mean(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.tokens(x))


class PeripheralNet(nn.Module):
    """One token per peripheral feature (value x learned vector + feature embedding), MLP-mixed; (B, n_features)."""

    def __init__(self, n_features: int = 8, n_classes: int = 5, d: int = 64):
        super().__init__()
        self.value = nn.Parameter(torch.randn(n_features, d) * 0.1)
        self.feature = nn.Parameter(torch.randn(n_features, d) * 0.1)
        self.mlp = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d))
        self.head = nn.Sequential(nn.Linear(n_features * d, 64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, n_classes))

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        t = x[:, :, None] * self.value[None] + self.feature[None]
        return t + self.mlp(t)

    def classify(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(tokens.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.tokens(x))


class CrossAttentionFusion(nn.Module):
    """Cross-modal attention over the tokens of the three branches, batch-first throughout.

    For each modality :math:`m`: :math:`m' = \\mathrm{LN}(m + \\mathrm{MHA}(q=m, k=v=[\\text{other modalities}]))`,
    then the mean-pooled :math:`m'` of the three modalities form a 3-token sequence for a transformer encoder layer,
    whose mean goes to the classifier. Inputs: ``video`` (B, 3, 28, 28), ``eeg`` (B, W, 160), ``periph`` (B, 8).

    Every encoder keeps its own classifier (an auxiliary per-branch head, :meth:`forward_all`). With
    ``late_residual`` the output adds a learned softmax-weighted sum of the branch logits to the attention path, whose
    last layer starts at zero: initialised from pretrained branches, the model starts as their late fusion and learns
    what cross-modal attention adds.
    """

    def __init__(self, n_classes: int = 5, d: int = 64, heads: int = 4, eeg_features: int = 160,
                 periph_features: int = 8, modalities: Sequence[str] = ("video", "eeg", "periph"),
                 late_residual: bool = False):
        super().__init__()
        self.modalities = tuple(modalities)
        if len(self.modalities) < 2:
            raise ValueError(f"fusion needs at least two modalities, got {self.modalities}")
        enc = {"video": lambda: FlowSTN(n_classes, d), "eeg": lambda: EEGTCN(eeg_features, n_classes, d),
               "periph": lambda: PeripheralNet(periph_features, n_classes, d)}
        self.encoders = nn.ModuleDict({m: enc[m]() for m in self.modalities})
        self.type_embedding = nn.ParameterDict({m: nn.Parameter(torch.zeros(1, 1, d)) for m in self.modalities})
        self.cross = nn.ModuleDict({m: nn.MultiheadAttention(d, heads, dropout=0.1, batch_first=True)
                                    for m in self.modalities})
        self.norm = nn.ModuleDict({m: nn.LayerNorm(d) for m in self.modalities})
        self.mixer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=2 * d, dropout=0.1, batch_first=True)
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(d, n_classes))
        self.late_residual = bool(late_residual)
        if self.late_residual:
            self.late_weight = nn.Parameter(torch.zeros(len(self.modalities)))
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)

    def forward(self, video=None, eeg=None, periph=None) -> torch.Tensor:
        return self.forward_all(video, eeg, periph)[0]

    def forward_all(self, video=None, eeg=None, periph=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Fused logits and each branch's own logits (its auxiliary head on its tokens)."""
        return self.fuse(self.encode(video, eeg, periph))

    def encode(self, video=None, eeg=None, periph=None) -> dict[str, torch.Tensor]:
        """Each modality's encoder tokens (before the type embeddings): the part that frozen encoders fix."""
        inputs = {"video": video, "eeg": eeg, "periph": periph}
        return {m: self.encoders[m].tokens(inputs[m]) for m in self.modalities}

    def fuse(self, raw: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """:meth:`forward_all` from the encoder tokens of :meth:`encode`: fused logits and the branch logits."""
        branch = {m: self.encoders[m].classify(raw[m]) for m in self.modalities}
        tokens = {m: raw[m] + self.type_embedding[m] for m in self.modalities}
        pooled = []
        for m in self.modalities:
            others = torch.cat([tokens[o] for o in self.modalities if o != m], dim=1)
            att, _ = self.cross[m](tokens[m], others, others, need_weights=False)
            pooled.append(self.norm[m](tokens[m] + att).mean(1))
        z = self.mixer(torch.stack(pooled, dim=1))  # (B, n_modalities, d), batch first
        out = self.head(z.mean(1))
        if self.late_residual:
            w = torch.softmax(self.late_weight, 0)
            out = out + sum(w[i] * branch[m] for i, m in enumerate(self.modalities))
        return out, branch


@dataclass
class MultimodalData:
    """Per-expression inputs of the three modalities, labels and subjects (rows aligned)."""

    video: np.ndarray  # (N, 3, G, G)
    eeg: np.ndarray  # (N, W, 160)
    periph: np.ndarray  # (N, 8)
    y: np.ndarray  # (N,) int class index
    subjects: np.ndarray  # (N,)
    classes: tuple

    def __post_init__(self):
        n = len(self.y)
        sizes = {"video": len(self.video), "eeg": len(self.eeg), "periph": len(self.periph),
                 "subjects": len(self.subjects)}
        if any(v != n for v in sizes.values()):
            raise ValueError(f"all modalities need one row per label ({n}), got {sizes}")

    @classmethod
    def from_corpus(cls, corpus, classes: Sequence[str] | None = None, *,
                    video_flow: np.ndarray | None = None) -> "MultimodalData":
        """Features of every expression of a :class:`facelab.micro.corpus.Corpus`, standardised per subject.

        ``video_flow``: the corpus's :meth:`~facelab.micro.corpus.Corpus.video_features` if already computed (a
        corpus re-simulated by :func:`~facelab.micro.corpus.with_physiology` has the same videos), else computed.
        """
        ev = corpus.events
        if len(ev) == 0:
            raise ValueError("the corpus has no expressions: nothing to recognise")
        if video_flow is None:
            video_flow = corpus.video_features()
        elif len(video_flow) != len(ev):
            raise ValueError(f"video_flow has {len(video_flow)} rows for the corpus's {len(ev)} expressions")
        classes = tuple(classes or corpus.config.emotions)
        subjects = ev["subject"].to_numpy()
        periph = corpus.peripheral_features().to_numpy(dtype=float)
        return cls(video=standardise_per_subject(video_flow, subjects, scale=False),
                   eeg=standardise_per_subject(corpus.eeg_features(), subjects),
                   periph=standardise_per_subject(periph, subjects),
                   y=np.array([classes.index(e) for e in ev["emotion"]]), subjects=subjects, classes=classes)


def standardise_per_subject(x: np.ndarray, subjects: np.ndarray, scale: bool = True) -> np.ndarray:
    """Centre (and scale) features within each subject; NaNs become the subject's mean (then 0).

    Physiology differs between people far more than between emotions (resting heart rate, skin conductance), so
    per-subject normalisation is standard in affective computing; it uses no labels, so it is legitimate for the
    held-out subject of LOSO too.
    """
    x = np.asarray(x, dtype=np.float32).copy()
    subjects = np.asarray(subjects)
    for s in np.unique(subjects):
        m = subjects == s
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mu = np.nanmean(x[m], axis=0, keepdims=True)
                sd = np.nanstd(x[m], axis=0, keepdims=True) if scale else np.ones_like(mu)
        mu = np.nan_to_num(mu)
        sd = np.where(np.isfinite(sd) & (sd > 1e-8), sd, 1.0)
        x[m] = (x[m] - mu) / sd
    return np.nan_to_num(x)


def impute_standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill NaNs with the training medians and standardise both sets with the training statistics."""
    med = np.nan_to_num(np.nanmedian(train, axis=0))
    train = np.where(np.isnan(train), med, train)
    test = np.where(np.isnan(test), med, test)
    mu, sd = train.mean(0), train.std(0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    return (train - mu) / sd, (test - mu) / sd


def _make(kind: str, data: MultimodalData, d: int) -> nn.Module:
    C = len(data.classes)
    if kind == "video":
        return FlowSTN(C, d, in_ch=data.video.shape[1])
    if kind == "eeg":
        return EEGTCN(data.eeg.shape[-1], C, d)
    if kind == "periph":
        return PeripheralNet(data.periph.shape[-1], C, d)
    if kind in PRETRAINED_FUSIONS:
        return CrossAttentionFusion(C, d, eeg_features=data.eeg.shape[-1], periph_features=data.periph.shape[-1],
                                    late_residual=True)
    if kind.startswith("fusion"):
        mods = ("video", "eeg", "periph") if kind == "fusion" else tuple(kind.split(":")[1].split("+"))
        return CrossAttentionFusion(C, d, eeg_features=data.eeg.shape[-1], periph_features=data.periph.shape[-1],
                                    modalities=mods)
    raise ValueError(f"unknown model kind {kind!r}: expected video, eeg, periph, fusion or fusion:a+b")


def _inputs(kind, data, idx, device):
    t = lambda a: torch.as_tensor(a[idx], dtype=torch.float32, device=device)  # noqa: E731
    if kind in ("video", "eeg", "periph"):
        return (t(getattr(data, kind)),), {}
    mods = (("video", "eeg", "periph") if kind == "fusion" or kind in PRETRAINED_FUSIONS
            else tuple(kind.split(":")[1].split("+")))
    return (), {m: t(getattr(data, m)) for m in mods}


class _cpu_threads:
    """One intra-op thread while training these tiny models on the CPU: thread synchronisation costs more than the
    parallel work saves (10x slower with 2 threads on a loaded 2-core machine); restores the setting after."""

    def __init__(self, device):
        self.cpu = torch.device(device).type == "cpu"

    def __enter__(self):
        self.n = torch.get_num_threads()
        if self.cpu:
            torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.n)


#: Fusions built on unimodal encoders pretrained in the same fold: frozen, or fine-tuned with auxiliary heads.
PRETRAINED_FUSIONS = ("fusion (frozen)", "fusion (fine-tuned)")


def train_model(kind: str, data: MultimodalData, train_idx: np.ndarray, *, epochs: int = 40, batch_size: int = 32,
                lr: float = 1e-3, step_size: int = 15, gamma_lr: float = 0.3, focal_gamma: float = 2.0, d: int = 64,
                weight_decay: float = 1e-3, device="cpu", seed: int = 0, branches: dict | None = None,
                aux_weight: float = 0.5, encoder_lr_scale: float = 0.1) -> nn.Module:
    """Train one branch or a fusion model on ``train_idx`` with focal loss (class-balanced alpha), Adam, StepLR.

    ``kind`` in :data:`PRETRAINED_FUSIONS` needs ``branches`` (``{"video": FlowSTN, "eeg": EEGTCN, "periph":
    PeripheralNet}`` trained on the same ``train_idx``): their weights initialise the fusion's encoders, which are
    then frozen (``"fusion (frozen)"``) or fine-tuned at ``encoder_lr_scale`` x ``lr`` with the per-branch
    auxiliary losses weighted by ``aux_weight`` (``"fusion (fine-tuned)"``).
    """
    if kind in PRETRAINED_FUSIONS:
        missing = [m for m in ("video", "eeg", "periph") if m not in (branches or {})]
        if missing:
            raise ValueError(f"{kind!r} starts from pretrained branches: missing {missing}")
    with _cpu_threads(device):
        return _train(kind, data, train_idx, epochs, batch_size, lr, step_size, gamma_lr, focal_gamma, d,
                      weight_decay, device, seed, branches, aux_weight, encoder_lr_scale)


def _train(kind, data, train_idx, epochs, batch_size, lr, step_size, gamma_lr, focal_gamma, d, weight_decay,
           device, seed, branches=None, aux_weight=0.5, encoder_lr_scale=0.1):
    torch.manual_seed(seed)
    model = _make(kind, data, d).to(device)
    frozen = kind == "fusion (frozen)"
    aux = kind == "fusion (fine-tuned)" and aux_weight > 0
    if kind in PRETRAINED_FUSIONS:
        for m, enc in model.encoders.items():
            enc.load_state_dict(branches[m].state_dict())
            enc.requires_grad_(not frozen)
        enc_params = [p for p in model.encoders.parameters() if p.requires_grad]
        other = [p for n, p in model.named_parameters() if not n.startswith("encoders.")]
        groups = [{"params": other}] + ([{"params": enc_params, "lr": lr * encoder_lr_scale}] if enc_params else [])
    else:
        groups = [{"params": list(model.parameters())}]
    y = torch.as_tensor(data.y[train_idx], device=device)
    counts = np.bincount(data.y[train_idx], minlength=len(data.classes)).astype(float)
    alpha = torch.as_tensor(np.where(counts > 0, counts.sum() / (len(counts) * np.maximum(counts, 1)), 0.0),
                            dtype=torch.float32, device=device)
    loss_fn = FocalLoss(focal_gamma, alpha).to(device)
    opt = torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay, foreach=True)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=step_size, gamma=gamma_lr)
    g = torch.Generator().manual_seed(seed)
    model.train()
    raw = None
    if frozen:
        model.encoders.eval()  # frozen encoders: no dropout, BatchNorm statistics kept
        with torch.no_grad():  # so their tokens are fixed: computed once, not every epoch (they use no randomness)
            parts = [model.encode(**_inputs(kind, data, train_idx[i:i + 256], device)[1])
                     for i in range(0, len(train_idx), 256)]
            raw = {m: torch.cat([p[m] for p in parts]) for m in parts[0]}
    for _ in range(epochs):
        perm = torch.randperm(len(train_idx), generator=g).numpy()
        for start in range(0, len(perm), batch_size):
            b = perm[start:start + batch_size]
            if len(b) < 2:  # BatchNorm needs two samples
                continue
            if raw is not None:  # frozen encoders: fuse their precomputed tokens
                loss = loss_fn(model.fuse({m: r[b] for m, r in raw.items()})[0], y[b])
            elif aux:
                out, branch = model.forward_all(**_inputs(kind, data, train_idx[b], device)[1])
                loss = loss_fn(out, y[b]) + aux_weight * sum(loss_fn(o, y[b]) for o in branch.values()) / len(branch)
            else:
                args, kwargs = _inputs(kind, data, train_idx[b], device)
                loss = loss_fn(model(*args, **kwargs), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def predict_proba(model: nn.Module, kind: str, data: MultimodalData, idx: np.ndarray, device="cpu") -> np.ndarray:
    """Class probabilities (len(idx), n_classes) of a trained model."""
    model.eval()
    args, kwargs = _inputs(kind, data, idx, device)
    return F.softmax(model(*args, **kwargs), dim=-1).cpu().numpy()


def loso_evaluate(data: MultimodalData, kinds: Sequence[str] = ("video", "eeg", "periph", "fusion"),
                  late: dict[str, Sequence[str]] | None = None, device="cpu", seed: int = 0, progress=None,
                  calibrated: bool = False, inner_folds: int = 2, fusion_epochs: int | None = None,
                  **train_kwargs) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Leave-one-subject-out: train each model kind on all other subjects, predict the held-out one.

    ``late`` maps a name to the branches whose probabilities are averaged (late fusion), default
    ``{"late fusion (all)": ("video", "eeg", "periph"), "late fusion (video+EEG)": ("video", "eeg")}``.
    Kinds in :data:`PRETRAINED_FUSIONS` start from the three branches trained in the same fold (list the branches
    first); they train for ``fusion_epochs`` (default half of ``epochs``: their encoders start trained).
    ``calibrated`` adds ``"late fusion (calibrated)"``: per-branch temperatures and mixing weights
    (:func:`calibrate_late_fusion`) fitted on out-of-fold predictions of the *training* subjects (``inner_folds``
    subject groups, branches retrained without each group), then applied to the held-out subject's probabilities
    from the branches trained on all training subjects: learned, calibrated weights without touching the test
    subject. Returns the results table (UF1, UAR, accuracy on the pooled predictions) and the pooled probabilities.
    """
    if late is None:
        late = {"late fusion (all)": ("video", "eeg", "periph"), "late fusion (video+EEG)": ("video", "eeg")}
    subjects = np.unique(data.subjects)
    if len(subjects) < 2:
        raise ValueError(f"LOSO needs at least two subjects, got {len(subjects)}")
    singles = ("video", "eeg", "periph")
    need = [k for k in kinds if k in PRETRAINED_FUSIONS] + (["late fusion (calibrated)"] if calibrated else [])
    if need and not all(m in kinds for m in singles):
        raise ValueError(f"{need} need the branches {singles} in kinds, got {tuple(kinds)}")
    probs = {k: np.zeros((len(data.y), len(data.classes))) for k in kinds}
    if calibrated:
        probs["late fusion (calibrated)"] = np.zeros((len(data.y), len(data.classes)))
    folds = progress(subjects, desc="LOSO") if progress else subjects
    for i, s in enumerate(folds):
        test = np.flatnonzero(data.subjects == s)
        train = np.flatnonzero(data.subjects != s)
        trained = {}
        for kind in kinds:
            kw = dict(train_kwargs)
            if kind in PRETRAINED_FUSIONS:
                kw.update(branches=trained, epochs=fusion_epochs or max(1, kw.get("epochs", 40) // 2))
            model = train_model(kind, data, train, device=device, seed=seed + i, **kw)
            trained[kind] = model
            probs[kind][test] = predict_proba(model, kind, data, test, device)
        if calibrated:
            probs["late fusion (calibrated)"][test] = _stacked_late_fusion(
                data, train, test, {m: probs[m][test] for m in singles}, inner_folds, device, seed + i,
                train_kwargs)
    for name, parts in late.items():
        missing = [p for p in parts if p not in probs]
        if missing:
            raise ValueError(f"late fusion {name!r} needs branches {missing} that were not trained")
        probs[name] = np.mean([probs[p] for p in parts], axis=0)
    return results_table(data, probs, DEEP_NAMES), probs


def calibrate_late_fusion(probs: dict[str, np.ndarray], y: np.ndarray, step: float = 0.1) -> dict:
    """Temperatures and simplex weights of a calibrated late fusion, fitted on held-out predictions.

    Each branch's probabilities are temperature-scaled (``softmax(log p / T)``, ``T`` by grid search on the negative
    log-likelihood), then mixed with weights on a simplex grid (``step``) that minimise the mixture's NLL. Few
    parameters (two per branch), so it can be fitted on a few dozen out-of-fold predictions without overfitting.
    Returns ``{"temperature": {m: T}, "weight": {m: w}}``; apply with :func:`apply_late_fusion`.
    """
    import itertools

    names = list(probs)
    y = np.asarray(y, int)
    if not names:
        raise ValueError("calibrate_late_fusion needs at least one branch's probabilities")
    shapes = {m: np.shape(probs[m]) for m in names}
    if len(y) == 0 or any(len(sh) != 2 or sh[0] != len(y) for sh in shapes.values()) or \
            len({sh[1] for sh in shapes.values()}) != 1:
        raise ValueError(f"probabilities must be (n, n_classes) arrays with one row per label ({len(y)}), got {shapes}")
    if any(not np.isfinite(probs[m]).all() for m in names):
        raise ValueError("probabilities contain NaN or inf")
    if y.min() < 0 or y.max() >= shapes[names[0]][1]:
        raise ValueError(f"labels must lie in 0..{shapes[names[0]][1] - 1}, got {y.min()}..{y.max()}")
    temps = np.exp(np.linspace(np.log(0.25), np.log(8.0), 25))
    T, cal = {}, {}
    for m in names:
        nll = [-np.log(_tempered(probs[m], t)[np.arange(len(y)), y] + 1e-9).mean() for t in temps]
        T[m] = float(temps[int(np.argmin(nll))])
        cal[m] = _tempered(probs[m], T[m])
    n = int(round(1 / step))
    best, weights = np.inf, None
    for c in itertools.product(range(n + 1), repeat=len(names)):
        if sum(c) != n:
            continue
        w = np.array(c, float) / n
        mix = sum(wi * cal[m] for wi, m in zip(w, names))
        nll = -np.log(mix[np.arange(len(y)), y] + 1e-9).mean()
        if nll < best - 1e-12:
            best, weights = nll, w
    return {"temperature": T, "weight": dict(zip(names, weights.tolist()))}


def _tempered(p: np.ndarray, t: float) -> np.ndarray:
    z = np.log(np.clip(p, 1e-9, 1.0)) / t
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def apply_late_fusion(probs: dict[str, np.ndarray], calibration: dict) -> np.ndarray:
    """The calibrated late fusion of :func:`calibrate_late_fusion` on new probabilities."""
    return sum(calibration["weight"][m] * _tempered(probs[m], calibration["temperature"][m]) for m in probs)


def _stacked_late_fusion(data, train, test, test_probs, inner_folds, device, seed, train_kwargs):
    """Calibrated late fusion of one outer fold (see :func:`loso_evaluate`)."""
    singles = tuple(test_probs)
    train_subjects = np.unique(data.subjects[train])
    k = max(2, min(int(inner_folds), len(train_subjects)))
    groups = np.array_split(np.random.default_rng(seed).permutation(train_subjects), k)
    oof = {m: np.zeros((len(train), len(data.classes))) for m in singles}
    for j, grp in enumerate(groups):
        held = np.isin(data.subjects[train], grp)
        for m in singles:
            model = train_model(m, data, train[~held], device=device, seed=seed + 1000 * (j + 1), **train_kwargs)
            oof[m][held] = predict_proba(model, m, data, train[held], device)
    return apply_late_fusion(test_probs, calibrate_late_fusion(oof, data.y[train]))


def loso_linear(data: MultimodalData, late: dict[str, Sequence[str]] | None = None,
                C: float = 0.1) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """The same LOSO protocol with logistic regression per modality (fast; used for the coupling ablation).

    Compact inputs: the flow pooled to 7 x 7, the EEG band-power changes averaged over the post-onset windows.
    Also reports early fusion (the three concatenated) and late fusion (averaged probabilities).
    """
    from sklearn.linear_model import LogisticRegression

    if late is None:
        late = {"late fusion (all)": ("video", "eeg", "periph")}
    n = len(data.y)
    G = data.video.shape[-1]
    pool = max(1, G // 7)
    video = data.video[..., : G // pool * pool, : G // pool * pool]
    video = video.reshape(n, video.shape[1], G // pool, pool, G // pool, pool).mean((3, 5))
    post = slice(min(3, data.eeg.shape[1] - 1), None)  # windows after the onset, averaged
    X = {"video": video.reshape(n, -1), "eeg": data.eeg[:, post].mean(1), "periph": data.periph}
    X["early fusion (concat)"] = np.concatenate([X["video"], X["eeg"], X["periph"]], axis=1)
    probs = {k: np.zeros((len(data.y), len(data.classes))) for k in X}
    for s in np.unique(data.subjects):
        test, train = data.subjects == s, data.subjects != s
        for k, x in X.items():
            xtr, xte = impute_standardise(x[train], x[test])
            clf = LogisticRegression(C=C, max_iter=2000, class_weight="balanced").fit(xtr, data.y[train])
            p = np.zeros((test.sum(), len(data.classes)))
            p[:, clf.classes_] = clf.predict_proba(xte)
            probs[k][test] = p
    for name, parts in late.items():
        probs[name] = np.mean([probs[p] for p in parts], axis=0)
    return results_table(data, probs, LINEAR_NAMES), probs


DEEP_NAMES = {"video": "video (flow + STN)", "eeg": "EEG (band power + TCN)", "periph": "peripheral (MLP)",
              "fusion": "cross-attention fusion (from scratch)",
              "fusion (frozen)": "cross-attention fusion (pretrained, frozen)",
              "fusion (fine-tuned)": "cross-attention fusion (pretrained, fine-tuned, aux heads)",
              "late fusion (calibrated)": "late fusion (calibrated weights)"}
LINEAR_NAMES = {"video": "video (logistic)", "eeg": "EEG (logistic)", "periph": "peripheral (logistic)"}


def results_table(data: MultimodalData, probs: dict[str, np.ndarray], names: dict | None = None) -> pd.DataFrame:
    """UF1, UAR and accuracy of each model's pooled LOSO predictions (argmax of its probabilities)."""
    names = DEEP_NAMES if names is None else names
    rows = []
    for k, p in probs.items():
        s = classification_summary(data.y, p.argmax(1), labels=range(len(data.classes)))
        rows.append({"model": names.get(k, k), "UF1": s["UF1"], "UAR": s["UAR"], "accuracy": s["accuracy"]})
    return pd.DataFrame(rows).set_index("model")
