"""DSFDA (Sharafi et al., FG 2025): disentangle identity from expression, generate the target's missing expressive
frames, adapt the classifier on them; and the baselines it is compared with.

Written from the paper and the official code's algorithm (``MasoumehSharafi/DSFDA-for-Pain-Assessment``, built on
TDGAN), without its defects: nothing here imports a missing module, reads a hard-coded path or assumes a device.

Generator training (:func:`train_generator`), one step on a batch of face images ``x_f`` (identity labels ``y_f``)
and expression images ``x_e`` (labels ``y_e``)::

    fake   = G(x_f, x_e)                                   # identity of x_f, expression of x_e
    D_face : CE(D_face(x_f), y_f) + CE(D_face(fake), FAKE)                    # face discriminator step
    G      : 0.2 CE(D_face(fake), y_f)                     # identity adversarial      (lambda_G_f)
           + 0.8 CE(C_src(fake), y_e)                      # expression, source model  (lambda_G_e)
           + 1.0 MSE(D_face.features(fake), D_face.features(x_f))            # perceptual (lambda_per_f)
           + 5 L1(G(fake, x_f), x_f) + 5 L1(G(x_e, fake), x_e)               # dual consistency (lambda_DIC)

The source model ``C_src`` is the expression head/discriminator and stays frozen (the official code also updates an
expression discriminator on real source frames; ours is already trained on them). Training runs in two stages as in
the official code: on the source population (face discriminator over source identities), then on the targets'
control frames (face discriminator over the target identities + fake).

Where this differs from the paper (all stated in chapter 08): the synthetic source stage may add an L1 to the
rendered truth of each swap (``pairs=``; real corpora cannot render it); the quick profile's adaptation setting
(whole network or head only, ``train=``; the learning rate; the real control frames as the neutral class or not,
``neutral_label=``) is chosen on separate validation targets (``pretrain.select_adaptation``); the generator is trained once for all targets (face
discriminator over all of them + fake) where the official code trains one per target.

Classifier adaptation (:func:`adapt_dsfda`): each control frame of the target is paired with source expression
exemplars; the generated frames carry the exemplars' labels; the source classifier is fine-tuned on them with early
stopping (patience 5) on the cross-entropy of frames generated from the control video's validation split.

Devices: every function takes ``device=None`` (``None``: the device of the model it is given, the CPU for a new
one). Data stay where the caller keeps them (the CPU) and each batch is moved to the device; every random draw
(batch order and indices, augmentation, the generator's noise) is made on the CPU ``torch.Generator`` and moved, so
the CPU results do not depend on whether a device is named. Predictions and generated frames come back on the CPU.

The classifier's three trainings (source training, this fine-tuning, the SHOT-IM baseline) run through one epoch
loop, ``_fit``; the generator's adversarial steps (two optimisers, random batches by step, no epochs) have their own.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from facelab.adaptation.source_free.nets import Discriminator, ExpressionClassifier, Generator

__all__ = ["LOSS_WEIGHTS", "augment", "train_classifier", "train_generator", "generate", "adapt_dsfda", "finetune",
           "shot_im", "bn_adapt", "predict", "AdaptResult"]

#: the paper's loss weights (official main_tar.py: H_G_FR_f, H_G_ER_f, H_G_FR_PER, H_G_CON_FR, H_G_CON_ER)
LOSS_WEIGHTS = {"identity": 0.2, "expression": 0.8, "perceptual": 1.0, "dual_face": 5.0, "dual_expr": 5.0}


def augment(x: torch.Tensor, g: torch.Generator, *, shift: int = 2, flip: bool = True,
            light: float = 0.1) -> torch.Tensor:
    """Random shift (+-``shift`` px), horizontal flip and brightness/contrast jitter (+-``light``)."""
    n = x.shape[0]
    dev = x.device
    if shift:
        dx, dy = (int(v) for v in torch.randint(-shift, shift + 1, (2,), generator=g))
        x = torch.roll(x, (dy, dx), (2, 3))
    if flip:
        m = (torch.rand(n, generator=g) < 0.5).to(dev)
        x = torch.where(m[:, None, None, None], x.flip(3), x)
    if light:
        a = (1 + light * (2 * torch.rand(n, 1, 1, 1, generator=g) - 1)).to(dev)
        b = (light * (2 * torch.rand(n, 1, 1, 1, generator=g) - 1)).to(dev)
        x = ((x - 0.5) * a + 0.5 + b).clamp(0, 1)
    return x


def _device(module: torch.nn.Module | None, device=None) -> torch.device:
    """``device`` as a torch.device; ``None``: the device of ``module``'s parameters (the CPU without any)."""
    if device is not None:
        return torch.device(device)
    if module is not None:
        for p in module.parameters():
            return p.device
    return torch.device("cpu")


@torch.no_grad()
def predict(model: ExpressionClassifier, x: torch.Tensor, batch: int = 256, *, device=None) -> torch.Tensor:
    """Class probabilities (N, K) in eval mode, on the CPU (``device``: where the model runs; default its own)."""
    dev = _device(model, device)
    model.to(dev)
    was = model.training
    model.eval()
    out = torch.cat([F.softmax(model.logits(x[i:i + batch].to(dev)), 1).cpu() for i in range(0, len(x), batch)]) \
        if len(x) else torch.zeros(0, model.n_classes)
    model.train(was)
    return out


def _check_xy(x, y=None, name="x"):
    if not torch.is_tensor(x) or x.dim() != 4 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty tensor (N, C, S, S) of model inputs, got "
                         f"{getattr(x, 'shape', type(x).__name__)}")
    if y is not None and (not torch.is_tensor(y) or y.shape != (x.shape[0],)):
        raise ValueError(f"labels must be a tensor of shape ({x.shape[0]},), got {getattr(y, 'shape', y)}")


def _fit(model, x, y, opt, g: torch.Generator, *, epochs: int, batch: int, loss_fn, mode: bool = True,
         sched=None, val: tuple | None = None, patience: int = 5, progress=None, device=None,
         max_seconds: float | None = None) -> tuple[list, dict]:
    """The training loop shared by :func:`train_classifier`, :func:`finetune` and :func:`shot_im`.

    Each epoch: ``model.train(mode)``, a random order of ``x`` from ``g``, then per batch ``loss_fn(logits of the
    augmented batch, its labels or None)``, an optimiser step and, with ``sched``, a scheduler step. With
    ``val = (x_val, y_val)``: after each epoch the validation cross-entropy; the state of the lowest one is kept
    (and restored at the end) and training stops after ``patience`` epochs without an improvement of 1e-4.
    ``device``: where the model is trained (moved there; default its own); each batch is moved there.
    ``max_seconds``: stop after the first epoch that ends past this wall-clock time (``stopped_early`` in the log).
    Returns (mean training loss per epoch, {"val_ce", "epochs_run", "best_epoch", "stopped_early"}).
    """
    dev = _device(model, device)
    model.to(dev)
    losses, curve = [], []
    best, best_state, wait, stopped = np.inf, copy.deepcopy(model.state_dict()), 0, epochs
    early = False
    t0 = time.time()
    for e in range(epochs):
        model.train(mode)
        perm = torch.randperm(len(x), generator=g)
        tot = 0.0
        for i in range(0, len(x), batch):
            idx = perm[i:i + batch]
            loss = loss_fn(model.logits(augment(x[idx].to(dev), g)), None if y is None else y[idx].to(dev))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            tot += float(loss.detach()) * len(idx)
        losses.append(tot / len(x))
        if progress:
            progress(f"classifier epoch {e + 1}/{epochs}: loss {losses[-1]:.3f}")
        if val is not None:
            with torch.no_grad():
                p = predict(model, val[0], device=dev)
                ce = float(F.nll_loss(p.clamp_min(1e-8).log(), val[1]))
            curve.append(ce)
            if ce < best - 1e-4:
                best, best_state, wait = ce, copy.deepcopy(model.state_dict()), 0
            else:
                wait += 1
                if wait >= patience:
                    stopped = e + 1
                    break
        if max_seconds is not None and time.time() - t0 > max_seconds and e + 1 < epochs:
            stopped, early = e + 1, True
            break
    if val is not None:
        model.load_state_dict(best_state)
    model.eval()
    return losses, {"val_ce": curve, "epochs_run": stopped,
                    "best_epoch": int(np.argmin(curve)) + 1 if curve else stopped, "stopped_early": early}


def train_classifier(x, y, n_classes: int, *, epochs: int = 12, batch: int = 64, lr: float = 2e-3, c: int = 16,
                     seed: int = 0, progress=None, device=None, max_seconds: float | None = None
                     ) -> tuple[ExpressionClassifier, dict]:
    """Train the source expression classifier (Adam, one-cycle schedule, augmentation); returns (model, log).

    ``device``: where it trains (default the CPU; the model is returned there). ``max_seconds``: stop after the
    epoch that ends past this wall-clock time; the log then says ``stopped_early`` and ``epochs_run``."""
    _check_xy(x, y)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = ExpressionClassifier(n_classes, x.shape[1], c).to(_device(None, device))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * int(np.ceil(len(x) / batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    t0 = time.time()
    losses, fit = _fit(model, x, y, opt, g, epochs=epochs, batch=batch, loss_fn=F.cross_entropy, sched=sched,
                       progress=progress, max_seconds=max_seconds)
    return model, {"loss": losses, "seconds": time.time() - t0, "epochs_run": fit["epochs_run"],
                   "stopped_early": fit["stopped_early"]}


def train_generator(faces, face_labels, n_face_classes: int, expr_x, expr_y, classifier: ExpressionClassifier, *,
                    steps: int = 1000, batch: int = 24, lr: float = 2e-4, weights: dict | None = None,
                    generator: Generator | None = None, arch: dict | None = None, seed: int = 0,
                    pairs: tuple | None = None, paired_weight: float = 5.0,
                    progress=None, log_every: int = 100, device=None, max_seconds: float | None = None
                    ) -> tuple[Generator, Discriminator, dict]:
    """Train the disentangling generator (one stage; see the module docstring for the losses).

    ``weights`` overrides :data:`LOSS_WEIGHTS` (an ablation sets ``perceptual`` or both ``dual_*`` to 0).
    ``generator``: continue from this generator (the target stage starts from the source stage).
    ``pairs = (expr_index, truth)``: *synthetic source stage only* - for face ``k`` the expression image is
    ``expr_x[expr_index[k]]`` and ``truth[k]`` is the same person rendered with that expression, so an extra
    ``paired_weight x L1(G(x_f, x_e), truth)`` teaches the swap directly (real corpora cannot render the missing
    combination; the target stage never has it).
    ``device``: where G, D and the classifier run (default: the classifier's device; a classifier elsewhere is
    copied there). ``max_seconds``: stop at the first step that ends past this wall-clock time; the log says
    ``steps_run`` (always) and ``stopped_early``.
    """
    _check_xy(faces, face_labels, "faces")
    _check_xy(expr_x, expr_y, "expression images")
    w = dict(LOSS_WEIGHTS)
    unknown = set(weights or {}) - set(w)
    if unknown:
        raise ValueError(f"unknown loss weights {sorted(unknown)}: expected some of {sorted(w)}")
    w.update(weights or {})
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    dev = _device(classifier, device)
    G = copy.deepcopy(generator) if generator is not None else Generator(faces.shape[1], **(arch or {}))
    D = Discriminator(n_face_classes + 1, faces.shape[1], (arch or {}).get("c", 16))
    G.to(dev)
    D.to(dev)
    fake_label = n_face_classes
    C = classifier if _device(classifier) == dev else copy.deepcopy(classifier).to(dev)
    C.eval()
    for p in C.parameters():
        p.requires_grad_(False)
    optG = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.999))
    optD = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.999))
    log = {k: [] for k in ("step", "identity", "expression", "perceptual", "dual", "paired", "d_face", "expr_acc")}
    zero = torch.zeros((), dtype=torch.float64, device=dev)
    acc = {k: zero for k in log if k != "step"}
    t0 = time.time()
    steps_run, early = 0, False
    for step in range(1, steps + 1):
        i_f = torch.randint(0, len(faces), (batch,), generator=g)
        i_e = torch.randint(0, len(expr_x), (batch,), generator=g) if pairs is None else pairs[0][i_f]
        x_f = faces[i_f].to(dev)
        y_f = face_labels[i_f].to(dev)
        x_e, y_e = expr_x[i_e].to(dev), expr_y[i_e].to(dev)
        fake = G(x_f, x_e, generator=g)
        # face discriminator
        _, lr_real = D(x_f)
        _, lr_fake = D(fake.detach())
        d_loss = F.cross_entropy(lr_real, y_f) + F.cross_entropy(lr_fake, torch.full_like(y_f, fake_label))
        optD.zero_grad()
        d_loss.backward()
        optD.step()
        # generator
        f_fake, l_fake = D(fake)
        with torch.no_grad():
            f_real, _ = D(x_f)
        l_id = F.cross_entropy(l_fake, y_f)
        logits_e = C.logits(fake)
        l_ex = F.cross_entropy(logits_e, y_e)
        l_per = F.mse_loss(f_fake, f_real)
        loss = w["identity"] * l_id + w["expression"] * l_ex + w["perceptual"] * l_per
        l_pair = torch.zeros((), device=dev)
        if pairs is not None:
            l_pair = F.l1_loss(fake, pairs[1][i_f].to(dev))
            loss = loss + paired_weight * l_pair
        l_dual = torch.zeros((), device=dev)
        if w["dual_face"] or w["dual_expr"]:
            back_f = G(fake, x_f, generator=g)          # identity of fake (= x_f's), expression of x_f -> x_f
            back_e = G(x_e, fake, generator=g)          # identity of x_e, expression of fake (= x_e's) -> x_e
            l_dual = w["dual_face"] * F.l1_loss(back_f, x_f) + w["dual_expr"] * F.l1_loss(back_e, x_e)
            loss = loss + l_dual
        optG.zero_grad()
        loss.backward()
        optG.step()
        for k, v in (("identity", l_id), ("expression", l_ex), ("perceptual", l_per), ("dual", l_dual),
                     ("paired", l_pair), ("d_face", d_loss)):
            acc[k] = acc[k] + v.detach().double() / log_every      # stays on the device: no sync per step
        acc["expr_acc"] = acc["expr_acc"] + (logits_e.argmax(1) == y_e).float().mean().double() / log_every
        steps_run = step
        if step % log_every == 0:
            log["step"].append(step)
            for k in acc:
                log[k].append(round(float(acc[k]), 4))
                acc[k] = zero
            if progress:
                progress(f"generator step {step}/{steps}: " + ", ".join(f"{k} {log[k][-1]:.3f}" for k in acc))
        if max_seconds is not None and step < steps and time.time() - t0 > max_seconds:
            early = True
            break
    G.eval()
    D.eval()
    log["seconds"] = time.time() - t0
    log["steps_run"] = steps_run
    log["stopped_early"] = early
    return G, D, log


@torch.no_grad()
def generate(G: Generator, faces, expr_x, expr_y, per_face: int, *, seed: int = 0,
             balanced: bool = True, device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pair each face with ``per_face`` source expression exemplars (balanced over classes) and generate.

    Returns (images (len(faces) * per_face, C, S, S), labels, index of the face each image was made from), on the
    CPU (``device``: where G runs; default its own).
    """
    _check_xy(faces, None, "faces")
    _check_xy(expr_x, expr_y, "expression exemplars")
    if per_face < 1:
        raise ValueError(f"per_face must be >= 1, got {per_face}")
    g = torch.Generator().manual_seed(seed)
    n = len(faces) * per_face
    if balanced:
        classes = torch.unique(expr_y)
        want = classes[torch.arange(n) % len(classes)]
        want = want[torch.randperm(n, generator=g)]
        idx = torch.empty(n, dtype=torch.long)
        for c in classes:
            pool = torch.nonzero(expr_y == c).flatten()
            m = want == c
            idx[m] = pool[torch.randint(0, len(pool), (int(m.sum()),), generator=g)]
    else:
        idx = torch.randint(0, len(expr_x), (n,), generator=g)
    face_idx = torch.arange(len(faces)).repeat_interleave(per_face)
    dev = _device(G, device)
    G.to(dev).eval()
    out = torch.cat([G(faces[face_idx[i:i + 256]].to(dev), expr_x[idx[i:i + 256]].to(dev), generator=g).cpu()
                     for i in range(0, n, 256)])
    return out, expr_y[idx], face_idx


def finetune(model: ExpressionClassifier, x, y, *, epochs: int = 15, batch: int = 32, lr: float = 5e-4,
             val: tuple | None = None, patience: int = 5, seed: int = 0, train: str = "all", device=None
             ) -> tuple[ExpressionClassifier, dict]:
    """Fine-tune a copy of ``model`` on (x, y) with augmentation; with ``val = (x_val, y_val)`` keep the epoch of
    lowest validation cross-entropy and stop after ``patience`` epochs without improvement. ``train``: "all"
    parameters, or only the "head" (the features frozen, BatchNorm statistics kept)."""
    _check_xy(x, y)
    if train not in ("all", "head"):
        raise ValueError(f"train must be 'all' or 'head', got {train!r}")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    m = copy.deepcopy(model).to(_device(model, device))
    for p in m.parameters():
        p.requires_grad_(train == "all")
    for p in m.head.parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=lr)
    _, log = _fit(m, x, y, opt, g, epochs=epochs, batch=batch, loss_fn=F.cross_entropy, mode=train == "all",
                  val=val, patience=patience)
    return m, log


@dataclass
class AdaptResult:
    model: ExpressionClassifier
    generated: torch.Tensor
    labels: torch.Tensor
    log: dict


def adapt_dsfda(classifier: ExpressionClassifier, G: Generator, control, control_val_mask, expr_x, expr_y, *,
                per_face: int = 8, epochs: int = 15, lr: float = 5e-4, patience: int = 5, seed: int = 0,
                neutral_label: int | None = 0, train: str = "all", device=None) -> AdaptResult:
    """DSFDA's adaptation of ``classifier`` to one target from its control frames (at rest).

    ``control_val_mask`` (bool, one per control frame) marks the validation split: frames generated from it give
    the early-stopping cross-entropy; the others give the adaptation set (``per_face`` generated frames each,
    the paper's 22 augmentations per neutral frame, scaled down). The real control frames are the target's
    neutral data and join both sets with ``neutral_label`` (the "no pain" / "neutral" class; ``None``: generated
    frames only); the generated frames supply the missing expressive ones. ``device``: where the generator and
    the classifier run (default: the classifier's device); the generated frames are returned on the CPU.
    """
    _check_xy(control, None, "control frames")
    val = np.asarray(control_val_mask, dtype=bool)
    if val.shape != (len(control),):
        raise ValueError(f"control_val_mask must hold one bool per control frame ({len(control)}), got {val.shape}")
    if val.all() or not val.any():
        raise ValueError("the control video must be split into adaptation and validation frames (both non-empty)")
    dev = _device(classifier, device)
    xg, yg, _ = generate(G, control[~val], expr_x, expr_y, per_face, seed=seed, device=dev)
    xv, yv, _ = generate(G, control[val], expr_x, expr_y, per_face, seed=seed + 1, device=dev)
    xa, ya = xg, yg
    if neutral_label is not None:
        xa = torch.cat([xg, control[~val]])
        ya = torch.cat([yg, torch.full((int((~val).sum()),), int(neutral_label), dtype=yg.dtype)])
        xv = torch.cat([xv, control[val]])
        yv = torch.cat([yv, torch.full((int(val.sum()),), int(neutral_label), dtype=yv.dtype)])
    model, log = finetune(classifier, xa, ya, epochs=epochs, lr=lr, val=(xv, yv), patience=patience, seed=seed,
                          train=train, device=dev)
    return AdaptResult(model, xg, yg, log)


def shot_im(classifier: ExpressionClassifier, x, *, epochs: int = 10, batch: int = 32, lr: float = 5e-4,
            seed: int = 0, device=None) -> ExpressionClassifier:
    """SHOT-IM (Liang et al. 2020): freeze the head, train the features to make predictions confident
    (entropy down) and diverse over the batch (entropy of the mean prediction up) - on unlabelled target frames."""
    _check_xy(x)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    m = copy.deepcopy(classifier).to(_device(classifier, device))
    for p in m.head.parameters():
        p.requires_grad_(False)
    params = [p for p in m.features.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    _fit(m, x, None, opt, g, epochs=epochs, batch=batch, loss_fn=_information_maximisation)
    return m


def _information_maximisation(logits, _labels=None):
    """SHOT-IM's loss: mean prediction entropy minus the entropy of the batch's mean prediction."""
    p = F.softmax(logits, 1)
    ent = -(p * p.clamp_min(1e-8).log()).sum(1).mean()
    pm = p.mean(0)
    div = -(pm * pm.clamp_min(1e-8).log()).sum()
    return ent - div


@torch.no_grad()
def bn_adapt(classifier: ExpressionClassifier, x, *, device=None) -> ExpressionClassifier:
    """BN statistics (AdaBN, Li et al. 2016): replace every BatchNorm's running mean/variance by the target
    frames' statistics; no parameter changes."""
    _check_xy(x)
    m = copy.deepcopy(classifier).to(_device(classifier, device))
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.reset_running_stats()
            mod.momentum = None                   # cumulative average over the pass
    m.train()
    m.logits(x.to(_device(m)))
    m.eval()
    return m
