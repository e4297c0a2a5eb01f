"""Chapter 08, *Personalising expression recognition from a neutral video* (DSFDA): protocol, judges, tables,
figures.

The methods live in :mod:`facelab.adaptation.source_free` (task and data, networks, DSFDA, baselines, pretrained
checkpoints); this module holds what only the chapter does with them.

* protocol: :func:`run_targets` (every method on every target: source only, BN statistics, SHOT-IM, DSFDA and its
  two ablations, the oracle), :func:`judge_generated` (the real dlib network verifies the generated faces' identity
  against the target's control frames, at the published threshold and at a threshold measured on the world's
  impostor pairs; the source classifier and face-api's expression net judge their expression);
* tables: :func:`per_target_table`, :func:`summary_table` (pooled accuracy with intervals, paired tests against
  source only, the share of the oracle gap closed), :func:`judge_table`;
* figures: :func:`plot_disentangling`, :func:`plot_generated_grid`, :func:`plot_per_target`, :func:`plot_control_check`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from facelab.adaptation.source_free import data as D
from facelab.adaptation.source_free import dsfda as M
from facelab.adaptation.source_free import pretrain as PT

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["METHODS", "setup_experiment", "selection_table", "run_targets", "per_target_table", "summary_table", "judge_generated",
           "judge_table", "impostor_threshold", "plot_disentangling", "plot_generated_grid", "plot_per_target",
           "plot_control_check", "FULL_PROFILE_RECORD", "full_profile_record"]

METHODS = ("source only", "BN statistics", "SHOT-IM", "DSFDA", "DSFDA, no dual consistency", "DSFDA, no perceptual",
           "oracle (target labels)")
_GEN_OF = {"DSFDA": "dsfda", "DSFDA, no dual consistency": "no dual consistency",
           "DSFDA, no perceptual": "no perceptual"}


def setup_experiment(profile: str = "quick", task: str = "pain", *, n_targets: int | None = None,
                     variants=tuple(PT.GENERATOR_VARIANTS), allow_train: bool = True, progress=print,
                     device=None) -> dict:
    """Settings, population, the source classifier and the generators of ``variants`` (loaded from
    ``data/models``, trained only where missing); in the quick profile, DSFDA's adaptation setting chosen on the
    task's validation targets. ``device``: a torch device or a name (``"auto"``, ``"cpu"``, ``"cuda"``, resolved by
    :func:`facelab.runtime.resolve_device`) where the networks train and run (default the CPU); data stay on
    the CPU."""
    device = _resolve(device)
    s = PT.settings_for(profile, task)
    pop = PT.population(s, with_source=False, targets=n_targets)
    clf, clf_meta = PT.source_classifier(s, None, allow_train=allow_train, progress=progress, device=device)
    gens = PT.generators(s, None, variants=variants, allow_train=allow_train, progress=progress, device=device)
    # the quick profile's adaptation setting is chosen on the validation targets (never on these test targets);
    # the full profile keeps the paper's whole-network fine-tuning
    selection = PT.select_adaptation(s, allow_train=allow_train, progress=progress) if profile == "quick" else None
    s["adapt"] = PT.adapt_settings(s, selection)
    return {"settings": s, "population": pop, "classifier": clf, "classifier_meta": clf_meta,
            "generators": {k: g for k, (g, _) in gens.items()}, "generator_meta": {k: m for k, (_, m) in gens.items()},
            "selection": selection, "device": device}


def _resolve(device):
    if device is None or isinstance(device, torch.device):
        return device
    from facelab.runtime import resolve_device

    return resolve_device(device)


#: The record of one full-profile run on a GPU (``scripts/dsfda_full_gpu.py``; its README says how it was made).
FULL_PROFILE_RECORD = Path(__file__).resolve().parents[3] / "data" / "runs" / "dsfda_full_gpu"


def full_profile_record(path=None) -> dict:
    """Read the stored record of a full-profile run (``scripts/dsfda_full_gpu.py run`` and ``judge``) from the folder
    ``path`` (default :data:`FULL_PROFILE_RECORD`). Returns ``{"device", "gpu", "minutes", "schedule" (DataFrame:
    planned and run steps or epochs per training stage, the share run), "generator_minutes_at_full_schedule" (the
    planned generator steps at the measured seconds per step), "summary" (DataFrame, as
    :func:`summary_table`), "judges" (DataFrame, as :func:`judge_table`, or None without ``judge.json``),
    "thresholds" (dict or None), "skipped" (stages that did not fit the budget)}``."""
    import json

    folder = Path(path) if path is not None else FULL_PROFILE_RECORD
    res_file = folder / "results.json"
    if not res_file.is_file():
        raise FileNotFoundError(f"no full-profile record at {res_file}: expected the results.json that "
                                f"`python scripts/dsfda_full_gpu.py run --out {folder}` writes")
    res = json.loads(res_file.read_text())
    for key in ("stages", "summary"):
        if key not in res:
            raise ValueError(f"{res_file} is not a dsfda_full_gpu record: it has no {key!r}")
    rows = []
    for name, st in res["stages"].items():
        for unit in ("steps", "epochs"):
            if f"{unit}_planned" in st:
                run = st.get(f"{unit}_run", st[f"{unit}_planned"])
                rows.append({"stage": name, "unit": unit, "planned": st[f"{unit}_planned"], "run": run,
                             "share run": round(run / st[f"{unit}_planned"], 3),
                             "seconds": st.get("seconds"), "stopped early": bool(st.get("stopped_early"))})
    schedule = pd.DataFrame(rows).set_index("stage")
    summary = pd.DataFrame(res["summary"]).set_index("method")
    judge_file = folder / "judge.json"
    judges = thresholds = None
    if judge_file.is_file():
        j = json.loads(judge_file.read_text())
        judges = pd.DataFrame(j["table"]).set_index("faces")
        thresholds = j.get("thresholds")
    skipped = [k for k, v in res["stages"].items() if v.get("skipped")]
    gen = schedule[(schedule["unit"] == "steps") & (schedule["run"] > 0)]
    # what the whole planned generator schedule costs at the measured rate
    full_minutes = float((gen["seconds"] / gen["run"] * gen["planned"]).sum() / 60) if len(gen) else None
    return {"device": res.get("device"), "gpu": res.get("gpu"), "minutes": res.get("minutes"), "schedule": schedule,
            "generator_minutes_at_full_schedule": full_minutes,
            "summary": summary, "judges": judges, "thresholds": thresholds, "skipped": skipped}


def selection_table(selection: dict) -> pd.DataFrame:
    """The adaptation settings DSFDA chose among: accuracy on each validation target's held-out expressive frames,
    the mean over validation targets (the choice) and the pooled accuracy over their frames with its Wilson 95%
    interval, one row per candidate, the chosen one marked."""
    from facelab.metrics import wilson_interval, with_interval

    rows = []
    for name, per in selection["scores"].items():
        right = sum(round(v * selection["frames"][t]) for t, v in per.items())
        n = sum(selection["frames"][t] for t in per)
        lo, hi = wilson_interval(right, n)
        row = {"candidate": name, **{f"val. target {t}": round(v, 3) for t, v in per.items()},
               "mean (validation)": round(selection["mean_accuracy"][name], 3),
               "pooled [95% CI]": with_interval(right / n, lo, hi), "chosen": name == selection["chosen"]}
        rows.append(row)
    return pd.DataFrame(rows).set_index("candidate")


def _face_template(bank: D.SourceData) -> torch.Tensor:
    return bank.x.mean(0)


def run_targets(exp: dict, *, methods=METHODS, seed: int = 0, progress=None, device=None, targets=None) -> dict:
    """Run ``methods`` on every target of ``exp`` (from :func:`setup_experiment`).

    ``device``: where the networks adapt and predict (default ``exp["device"]``, else the classifier's device).
    ``targets``: run only these target identities (default all).

    Returns ``{"predictions": DataFrame (target, frame, label, one column per method), "checks": {target:
    ControlCheck}, "dsfda": {target: AdaptResult of DSFDA}, "seconds": {method: total seconds}}``.
    """
    s, pop, clf = exp["settings"], exp["population"], exp["classifier"]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}: expected some of {list(METHODS)}")
    device = _resolve(device if device is not None else exp.get("device"))
    bank = pop.bank
    template = _face_template(bank)
    rows, checks, adapted, secs = [], {}, {}, {m: 0.0 for m in methods}
    for k, t in enumerate(pop.targets):
        if targets is not None and t.identity not in set(targets):
            continue
        check = D.check_control_video(t.control, face_template=template)
        checks[t.identity] = check
        ctrl = t.control[check.keep]
        val = t.control_val[check.keep]
        pred = {}
        for m in methods:
            t0 = time.time()
            if m == "source only":
                model = clf
            elif m == "BN statistics":
                model = M.bn_adapt(clf, ctrl, device=device)
            elif m == "SHOT-IM":
                model = M.shot_im(clf, ctrl, seed=seed + k, device=device, **s["shot"])
            elif m in _GEN_OF:
                res = M.adapt_dsfda(clf, exp["generators"][_GEN_OF[m]], ctrl, val, bank.x, bank.y,
                                    seed=seed + k, device=device, **s["adapt"])
                model = res.model
                if m == "DSFDA":
                    adapted[t.identity] = res
            else:
                model, _ = M.finetune(clf, t.x[t.oracle_train], t.y[t.oracle_train], seed=seed + k, device=device,
                                      **s["oracle"])
            pred[m] = M.predict(model, t.eval_x, device=device).argmax(1).numpy()
            secs[m] += time.time() - t0
        y = t.eval_y.numpy()
        for i in range(len(y)):
            rows.append({"target": t.identity, "frame": i, "label": int(y[i]), **{m: int(pred[m][i]) for m in methods}})
        if progress:
            progress(f"target {t.identity}: " + ", ".join(f"{m} {np.mean(pred[m] == y):.2f}" for m in methods))
    return {"predictions": pd.DataFrame(rows), "checks": checks, "dsfda": adapted, "seconds": secs,
            "methods": list(methods)}


def per_target_table(run: dict) -> pd.DataFrame:
    """Accuracy of each method on each target's held-out expressive frames with Wilson 95% intervals
    (strings "0.73 [0.61, 0.83]"), one row per target."""
    from facelab.metrics import proportion_ci, with_interval

    df = run["predictions"]
    out = []
    for tid, g in df.groupby("target"):
        row = {"target": tid, "frames": len(g)}
        for m in run["methods"]:
            ci = proportion_ci((g[m] == g["label"]).to_numpy())
            row[m] = with_interval(ci.estimate, ci.lo, ci.hi)
        out.append(row)
    return pd.DataFrame(out).set_index("target")


def _per_target_acc(run: dict) -> pd.DataFrame:
    df = run["predictions"]
    return pd.DataFrame({m: df.groupby("target").apply(lambda g, m=m: float((g[m] == g["label"]).mean()),
                                                       include_groups=False) for m in run["methods"]})


def summary_table(run: dict, *, reference: str = "source only", n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per method: mean accuracy over targets with a bootstrap interval over targets; the pooled paired
    difference to ``reference`` over all frames (bootstrap within targets) with its p-value; how many targets
    improve significantly (McNemar, p < 0.05) and how many get worse; and the share of the oracle gap closed
    (mean over targets of method - reference, over oracle - reference, with a bootstrap interval over targets)."""
    from facelab.metrics import accuracy, bootstrap_ci, mcnemar_test, paired_bootstrap

    df = run["predictions"]
    acc = _per_target_acc(run)
    oracle = "oracle (target labels)"
    rows = []
    for m in run["methods"]:
        ci = bootstrap_ci(acc[m].to_numpy(), n_boot=n_boot, seed=seed)
        row = {"method": m, "accuracy": ci.estimate, "accuracy_lo": ci.lo, "accuracy_hi": ci.hi}
        if m != reference:
            pb = paired_bootstrap(accuracy, df["label"].to_numpy(), df[m].to_numpy(), df[reference].to_numpy(),
                                  n_boot=n_boot, seed=seed, strata=df["target"].to_numpy())
            row.update(delta=pb.delta, delta_lo=pb.lo, delta_hi=pb.hi, p_value=pb.p_value)
            better = worse = 0
            for _, g in df.groupby("target"):
                ca, cb = (g[m] == g["label"]).to_numpy(), (g[reference] == g["label"]).to_numpy()
                r = mcnemar_test(ca, cb)
                if r.p_value < 0.05:
                    better += int(ca.mean() > cb.mean())
                    worse += int(ca.mean() < cb.mean())
            row.update(targets_better=better, targets_worse=worse)
        if oracle in acc and m not in (reference, oracle):
            a, r_, o = acc[m].to_numpy(), acc[reference].to_numpy(), acc[oracle].to_numpy()
            gap = bootstrap_ci(lambda a, r_, o: float(np.mean(a - r_) / max(np.mean(o - r_), 0.01)), a, r_, o,
                               n_boot=n_boot, seed=seed)
            row.update(gap_closed=gap.estimate, gap_closed_lo=gap.lo, gap_closed_hi=gap.hi)
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")


# ------------------------------------------------------------------------------------------------ judges
def _to_chips(x: torch.Tensor, landmarks: torch.Tensor, template: str = "dlib-150") -> torch.Tensor:
    """Model inputs (N, 1|3, S, S) and their landmarks (crop frame) -> aligned RGB chips for an embedder."""
    from facelab.align import align_batch_torch

    rgb = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    return align_batch_torch(rgb.float(), landmarks.float(), template, kind="68").clamp(0, 1)


@torch.no_grad()
def _embed(net, x, landmarks) -> torch.Tensor:
    return net.embed(_to_chips(x, landmarks))


def impostor_threshold(net, pop, *, far: float = 0.01, per_identity: int = 2) -> dict:
    """The similarity at which the embedder accepts ``far`` of the impostor pairs of this world's people (source
    bank identities and targets, processed as the generated faces are: model-size grey crops) - and the genuine
    acceptance at it and at the published threshold."""
    from facelab.metrics import wilson_interval

    bank = pop.bank
    ids = np.unique(bank.identity)
    pick = np.concatenate([np.nonzero(bank.identity == i)[0][:per_identity] for i in ids])
    xs = [bank.x[pick]]
    lms = [bank.landmarks[pick]]
    who = list(bank.identity[pick])
    for t in pop.targets:
        xs.append(t.control[:per_identity])
        lms.append(t.control_landmarks[:per_identity])
        who += [t.identity] * per_identity
    e = _embed(net, torch.cat(xs), torch.cat(lms))
    sim = net.similarity(e, e).numpy()
    who = np.asarray(who)
    iu = np.triu_indices(len(who), 1)
    same = who[iu[0]] == who[iu[1]]
    imp, gen = sim[iu][~same], sim[iu][same]
    thr = float(np.quantile(imp, 1 - far))
    far_pub = float(np.mean(imp >= net.threshold))
    lo, hi = wilson_interval(int(np.sum(imp >= net.threshold)), len(imp))
    return {"threshold": thr, "far": far, "published": float(net.threshold), "far_at_published": far_pub,
            "far_at_published_lo": float(lo), "far_at_published_hi": float(hi), "n_impostor": int(len(imp)),
            "n_genuine": int(len(gen)), "gar_at_measured": float(np.mean(gen >= thr)) if len(gen) else float("nan")}


@torch.no_grad()
def judge_generated(exp: dict, *, per_face: int = 4, n_faces: int = 6, seed: int = 0, thresholds: dict | None = None,
                    variants=("dsfda", "no dual consistency", "no perceptual")) -> pd.DataFrame:
    """Judge the generated faces of every target and generator variant.

    For each target, ``n_faces`` control frames x ``per_face`` source exemplars are generated. Identity: dlib's
    similarity of each generated face to each of the target's control frames (mean over frames), accepted at the
    published threshold and at the measured one (``thresholds`` from :func:`impostor_threshold`); as references,
    the same for the target's real expressive frames (genuine) and for the generated faces against another target's
    control frames (impostor). Expression: the source classifier's agreement with the exemplar's label, and
    face-api's agreement between the generated face and the exemplar it took its expression from.
    One row per (variant, target, generated face).
    """
    from facelab.models import load_embedder, load_expression_model

    net = load_embedder("dlib-resnet")
    fa = load_expression_model()
    pop, clf = exp["population"], exp["classifier"]
    bank = pop.bank
    thr = thresholds or impostor_threshold(net, pop)
    ctrl_emb = {t.identity: _embed(net, t.control, t.control_landmarks) for t in pop.targets}
    rows = []
    ids = [t.identity for t in pop.targets]
    for v in variants:
        G = exp["generators"][v]
        for k, t in enumerate(pop.targets):
            pick = np.linspace(0, int((~t.control_val).sum()) - 1, n_faces).round().astype(int)
            faces = t.control[~t.control_val][pick]
            flm = t.control_landmarks[~t.control_val][pick]
            xg, yg, fi = M.generate(G, faces, bank.x, bank.y, per_face, seed=seed + k)
            # which exemplar each face took its expression from: regenerate the indices as generate() drew them
            e = _embed(net, xg, flm[fi])
            sim_own = net.similarity(e, ctrl_emb[t.identity]).mean(1).numpy()
            other = ids[(k + 1) % len(ids)]
            sim_other = net.similarity(e, ctrl_emb[other]).mean(1).numpy()
            p_src = M.predict(clf, xg).argmax(1).numpy()
            chips = F.interpolate(_to3(xg), size=(112, 112), mode="bilinear", align_corners=False)
            fa_gen = fa.predict(chips).argmax(1).numpy()
            for i in range(len(xg)):
                rows.append({"variant": v, "target": t.identity, "label": int(yg[i]), "sim_own": float(sim_own[i]),
                             "sim_other": float(sim_other[i]), "source_agrees": bool(p_src[i] == int(yg[i])),
                             "faceapi": int(fa_gen[i])})
    out = pd.DataFrame(rows)
    out.attrs["thresholds"] = thr
    # genuine reference: the targets' real expressive frames
    real = []
    for t in pop.targets:
        sel = np.arange(min(len(t.x), n_faces * per_face))
        e = _embed(net, t.x[sel], t.landmarks[sel])
        real.append(net.similarity(e, ctrl_emb[t.identity]).mean(1).numpy())
    out.attrs["real_sim_own"] = np.concatenate(real)
    # face-api on the exemplars themselves: its class distribution on each source label
    chips = F.interpolate(_to3(bank.x), size=(112, 112), mode="bilinear", align_corners=False)
    fa_bank = fa.predict(chips).argmax(1).numpy()
    out.attrs["faceapi_bank"] = pd.crosstab(bank.y.numpy(), fa_bank)
    return out


def _to3(x):
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def judge_table(judged: pd.DataFrame, *, task_classes=None) -> pd.DataFrame:
    """Per generator variant: identity acceptance (own target) at the published and the measured threshold, the
    impostor acceptance (another target's control frames) at the measured one, the source classifier's agreement
    with the intended expression, and face-api's prediction share of its most common class on each intended class,
    all with Wilson intervals; a last row gives the real expressive frames' identity acceptance as the reference."""
    from facelab.metrics import proportion_ci

    thr = judged.attrs["thresholds"]
    rows = []

    def add(row, name, ok):
        ci = proportion_ci(np.asarray(ok, dtype=bool))
        row.update({name: ci.estimate, f"{name}_lo": ci.lo, f"{name}_hi": ci.hi})

    for v, g in judged.groupby("variant", sort=False):
        row = {"faces": v, "n": len(g)}
        add(row, "identity_published", g["sim_own"] >= thr["published"])
        add(row, "identity_measured", g["sim_own"] >= thr["threshold"])
        add(row, "impostor_measured", g["sim_other"] >= thr["threshold"])
        add(row, "expression_source", g["source_agrees"])
        rows.append(row)
    real = judged.attrs["real_sim_own"]
    row = {"faces": "real expressive frames (reference)", "n": len(real)}
    add(row, "identity_published", real >= thr["published"])
    add(row, "identity_measured", real >= thr["threshold"])
    rows.append(row)
    return pd.DataFrame(rows).set_index("faces")


# ------------------------------------------------------------------------------------------------ figures
def plot_disentangling(ax=None) -> "Figure":
    """DSFDA drawn: two encoders, the decoder mixing identity, expression and noise, the two judges in training,
    and the dual-consistency loop."""
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    from facelab.plotting import figure_axes

    fig, (ax,) = figure_axes(ax, 1, figsize=(9, 3.6))
    ax.set_xlim(0, 10.2)
    ax.set_ylim(0, 4.1)
    ax.axis("off")
    boxes = {"face": (0.1, 2.7, "target control frame\n(at rest)"), "expr": (0.1, 0.5, "source exemplar\n(label y)"),
             "Ef": (2.3, 2.7, "identity\nencoder"), "Ee": (2.3, 0.5, "expression\nencoder"),
             "dec": (4.5, 1.6, "decoder\n(+ noise)"), "fake": (6.5, 1.6, "generated frame:\ntarget, expression y"),
             "Df": (8.5, 2.9, "face discr.\n(targets + fake)"), "C": (8.5, 0.3, "source classifier\n(expression)")}
    for key, (x, y, text) in boxes.items():
        ax.add_patch(FancyBboxPatch((x, y), 1.5, 0.85, boxstyle="round,pad=0.05", fc="#eef3fb" if key not in (
            "fake",) else "#fde9d9", ec="#3b5b92"))
        ax.text(x + 0.75, y + 0.42, text, ha="center", va="center", fontsize=7.5)

    def arrow(a, b, text="", style="-|>", color="#3b5b92", dy=0.0):
        (xa, ya, _), (xb, yb, _) = boxes[a], boxes[b]
        p = FancyArrowPatch((xa + 1.55, ya + 0.42), (xb - 0.05, yb + 0.42 + dy), arrowstyle=style,
                            mutation_scale=10, color=color)
        ax.add_patch(p)
        if text:
            ax.text((xa + xb) / 2 + 0.9, (ya + yb) / 2 + 0.5, text, fontsize=7, color=color, ha="center")

    arrow("face", "Ef")
    arrow("expr", "Ee")
    arrow("Ef", "dec", dy=0.2)
    arrow("Ee", "dec", dy=-0.2)
    arrow("dec", "fake")
    arrow("fake", "Df", "0.2 identity CE\n+ 1 perceptual", color="#b0413e")
    arrow("fake", "C", "0.8 expression CE", color="#b0413e")
    ax.text(5.25, 3.75, "dual consistency (5 + 5): G(fake, face) = face, G(exemplar, fake) = exemplar",
            ha="center", fontsize=8, color="#b0413e")
    return fig


def plot_generated_grid(exp: dict, judged_identity=None, *, n_targets: int = 4, n_expr: int = 6, variant="dsfda",
                        seed: int = 0, ax=None) -> "Figure":
    """Rows: targets (first column: a control frame); columns: source exemplars (top row) and the generated target
    faces with that expression. Titles: the exemplar's label; under each generated face the source classifier's
    probability of the exemplar's label."""
    import matplotlib.pyplot as plt

    pop, clf, G = exp["population"], exp["classifier"], exp["generators"][variant]
    bank = pop.bank
    classes = D.TASKS[exp["settings"]["task"]]
    g = torch.Generator().manual_seed(seed)
    per_class = max(1, n_expr // len(torch.unique(bank.y)))
    pick = torch.cat([torch.nonzero(bank.y == c).flatten()[torch.randperm(int((bank.y == c).sum()), generator=g)
                                                           [:per_class]] for c in torch.unique(bank.y)])[:n_expr]
    targets = pop.targets[:n_targets]
    fig, axes = plt.subplots(len(targets) + 1, len(pick) + 1, figsize=(1.2 * (len(pick) + 1), 1.3 * (len(targets) + 1)),
                             squeeze=False)
    for a in axes.flat:
        a.axis("off")
    axes[0, 0].text(0.5, 0.5, "target \\ source", ha="center", va="center", fontsize=7)
    for j, i in enumerate(pick.tolist()):
        axes[0, j + 1].imshow(_show(bank.x[i]), cmap="gray", vmin=0, vmax=1)
        axes[0, j + 1].set_title(classes[int(bank.y[i])], fontsize=7)
    with torch.no_grad():
        for r, t in enumerate(targets):
            face = t.control[:1]
            axes[r + 1, 0].imshow(_show(face[0]), cmap="gray", vmin=0, vmax=1)
            axes[r + 1, 0].set_title(f"id {t.identity}", fontsize=7)
            xg = G(face.expand(len(pick), -1, -1, -1), bank.x[pick], generator=g)
            p = M.predict(clf, xg)
            for j, i in enumerate(pick.tolist()):
                axes[r + 1, j + 1].imshow(_show(xg[j]), cmap="gray", vmin=0, vmax=1)
                axes[r + 1, j + 1].set_title(f"p={float(p[j, int(bank.y[i])]):.2f}", fontsize=6)
    return fig


def _show(x):
    x = x.detach().cpu()
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


def plot_per_target(run: dict, *, methods=None, ax=None) -> "Figure":
    """Accuracy per target and method with Wilson 95% intervals."""
    from facelab.metrics import proportion_ci
    from facelab.plotting import figure_axes

    fig, (ax,) = figure_axes(ax, 1, figsize=(8, 3.6))
    methods = list(methods or run["methods"])
    df = run["predictions"]
    targets = sorted(df["target"].unique())
    width = 0.8 / len(methods)
    for j, m in enumerate(methods):
        est, lo, hi = [], [], []
        for tid in targets:
            g = df[df["target"] == tid]
            ci = proportion_ci((g[m] == g["label"]).to_numpy())
            est.append(ci.estimate)
            lo.append(ci.estimate - ci.lo)
            hi.append(ci.hi - ci.estimate)
        x = np.arange(len(targets)) + (j - (len(methods) - 1) / 2) * width
        ax.errorbar(x, est, yerr=[lo, hi], fmt="o", ms=3, capsize=2, label=m)
    ax.set_xticks(np.arange(len(targets)), [str(t) for t in targets])
    ax.set_xlabel("target identity")
    ax.set_ylabel("accuracy (held-out expressive frames)")
    ax.axhline(0.5, color="grey", lw=0.6, ls=":")
    ax.legend(fontsize=6.5, ncol=2, loc="lower left")
    return fig


def plot_control_check(check: D.ControlCheck, *, ax=None) -> "Figure":
    """Each control frame's deviation from the video's median frame; dropped frames marked."""
    from facelab.plotting import figure_axes

    fig, (ax,) = figure_axes(ax, 1, figsize=(6, 2.8))
    t = np.arange(len(check.deviation))
    ax.plot(t, check.deviation, "-o", ms=3, color="#3b5b92", label="kept")
    if check.non_neutral.any():
        ax.plot(t[check.non_neutral], check.deviation[check.non_neutral], "o", color="#b0413e", label="not at rest")
    if check.no_face.any():
        ax.plot(t[check.no_face], check.deviation[check.no_face], "x", color="k", label="no face")
    ax.set_xlabel("control frame")
    ax.set_ylabel("mean |frame - median frame|")
    ax.legend(fontsize=7)
    return fig
