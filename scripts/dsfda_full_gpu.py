"""Chapter 08's full profile (128 px RGB, the paper's schedule) on a GPU machine, and its judges back on the CPU.

Issue #16's remaining targets need the full profile, which cannot train on a small CPU. ``run`` does, on one device
and within a wall-clock budget, what ``python -m facelab.adaptation.source_free.pretrain --profile full`` and the
chapter's protocol do (the same settings, seeds and calls; only the device differs; no checkpoint file is read or
written: every network is trained here):

1. render the population (:func:`pretrain.population`, on the CPU with every core) and the source stage's swap truths;
2. the source classifier, the generator's source stage and DSFDA's target stage (:mod:`dsfda`);
3. an ``.npz`` for the identity / expression judges (they need dlib's network, which runs on the CPU here):
   per target, DSFDA-generated frames (drawn as :func:`judge_generated` draws them) with their intended labels and
   the source classifier's verdict, a sample of the target's control frames and real expressive frames, and the
   bank frames the impostor threshold is measured on, all as uint8 with their landmarks;
4. :func:`neutral_video_adaptation.run_targets` for source only, BN statistics, SHOT-IM, DSFDA and the oracle, one
   target at a time, results written after each target;
5. if time remains, the two ablation generators and their rows.

Every stage gets a share of what is left of ``--minutes``; a training stage that reaches its share stops early and
says so (``steps_run`` / ``epochs_run``, ``stopped_early``); a stage that would not fit is skipped and says so.
Nothing is scaled down silently. Outputs in ``--out``: ``results.json`` (rewritten after every stage),
``predictions.csv``, ``summary.csv``, ``per_target.csv``, ``judge_input.npz``, ``source_classifier.pt``.

    # on the GPU machine
    python scripts/dsfda_full_gpu.py run --device cuda --out $OUT --minutes 7
    # back here (CPU, dlib's network): identity at the published and the measured threshold, expression
    python scripts/dsfda_full_gpu.py judge --npz OUT/judge_input.npz --out OUT/judge.json
    # dry run of both on a CPU (tiny population and schedules, two targets)
    python scripts/dsfda_full_gpu.py run --device cpu --tiny --out /tmp/dsfda_tiny --minutes 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

CORE = ("source only", "BN statistics", "SHOT-IM", "DSFDA", "oracle (target labels)")
ABLATIONS = {"no dual consistency": "DSFDA, no dual consistency", "no perceptual": "DSFDA, no perceptual"}
#: a CPU dry run: the full profile's image size and colour, a tiny population, networks and schedules
TINY = dict(n_source=4, per_source=4, n_targets=2, n_control=12, n_expressive=16, bank_per_identity=2,
            classifier=dict(epochs=2, lr=1e-3, c=4), arch=dict(c=4, hidden=16, nz=2, n_res=1, n_down=4),
            gen_source=dict(steps=3, batch=4, lr=1e-4), gen_target=dict(steps=3, batch=4, lr=1e-4),
            adapt=dict(per_face=2, epochs=2, lr=1e-4, patience=5, neutral_label=None, train="all"),
            oracle=dict(epochs=2, lr=5e-4), shot=dict(epochs=1, lr=1e-4))
NPZ_LIMIT = 13.5e6


def _print(*a):
    print(*a, flush=True)


class Report:
    """results.json, rewritten (atomically) after every stage."""

    def __init__(self, out: Path, deadline: float):
        self.out, self.deadline, self.t0 = out, deadline, time.time()
        self.data = {"stages": {}, "notes": []}

    def left(self) -> float:
        return self.deadline - time.time()

    def stage(self, name: str, **kw):
        self.data["stages"].setdefault(name, {}).update(kw)
        self.write()

    def write(self):
        from facelab.files import atomic_write_json

        self.data["elapsed_s"] = round(time.time() - self.t0, 1)
        atomic_write_json(self.out / "results.json", self.data, default=_jsonable)


def _jsonable(v):
    import numpy as np

    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def _gen_log(log: dict, planned: int) -> dict:
    return {"steps_planned": planned, "steps_run": log["steps_run"], "stopped_early": log["stopped_early"],
            "seconds": round(log["seconds"], 1), "s_per_step": round(log["seconds"] / max(1, log["steps_run"]), 4),
            "last": {k: log[k][-1] for k in log if isinstance(log[k], list) and log[k]}}


def _per_target_batches(s: dict) -> int:
    """Mini-batches of 32 one target costs over the core methods (DSFDA's and the oracle's epochs at most)."""
    n_adapt = math.ceil(0.75 * s["n_control"])
    dsfda = s["adapt"]["epochs"] * math.ceil(n_adapt * (s["adapt"]["per_face"]) / 32)
    oracle = s["oracle"]["epochs"] * math.ceil(0.5 * s["n_expressive"] / 32)
    shot = s["shot"]["epochs"] * math.ceil(s["n_control"] / 32)
    return dsfda + oracle + shot


def _u8(x):
    import torch

    return (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def judge_input(exp: dict, device, *, n_faces: int, per_face: int, n_ctrl: int, n_real: int, per_identity: int = 2,
                bank_identities: int = 48, seed: int = 0) -> dict:
    """Arrays for :func:`judge` (see the module docstring); the generated frames as ``judge_generated`` makes them
    (``n_faces`` control frames of the adaptation split x ``per_face`` bank exemplars, seed ``seed + k``).
    The impostor threshold's bank frames: ``per_identity`` frames of the first ``bank_identities`` source
    identities (the chapter's :func:`impostor_threshold` takes every identity; a file under 14 MB cannot)."""
    import numpy as np
    import torch

    from facelab.adaptation.source_free import dsfda as M

    pop, clf, G = exp["population"], exp["classifier"], exp["generators"]["dsfda"]
    bank = pop.bank
    out = {k: [] for k in ("gen_x", "gen_y", "gen_target", "gen_landmarks", "gen_source_agrees", "gen_source_p",
                           "ctrl_x", "ctrl_target", "ctrl_landmarks", "ctrl_index", "real_x", "real_y",
                           "real_target", "real_landmarks")}
    for k, t in enumerate(pop.targets):
        keep = ~t.control_val
        pick = np.linspace(0, int(keep.sum()) - 1, n_faces).round().astype(int)
        faces, flm = t.control[keep][pick], t.control_landmarks[keep][pick]
        xg, yg, fi = M.generate(G, faces, bank.x, bank.y, per_face, seed=seed + k, device=device)
        p = M.predict(clf, xg, device=device)
        out["gen_x"].append(_u8(xg))
        out["gen_y"].append(yg.numpy())
        out["gen_target"].append(np.full(len(xg), t.identity))
        out["gen_landmarks"].append(flm[fi].numpy())
        out["gen_source_agrees"].append(p.argmax(1).numpy() == yg.numpy())
        out["gen_source_p"].append(p.gather(1, yg[:, None]).squeeze(1).numpy())
        T = len(t.control)
        # frames 0 and 1 first: the impostor threshold uses each target's first two control frames
        ci = [0, 1] + [i for i in np.linspace(0, T - 1, n_ctrl).round().astype(int).tolist() if i > 1]
        ci = list(dict.fromkeys(ci))[:max(n_ctrl, 2)]
        out["ctrl_x"].append(_u8(t.control[ci]))
        out["ctrl_target"].append(np.full(len(ci), t.identity))
        out["ctrl_landmarks"].append(t.control_landmarks[ci].numpy())
        out["ctrl_index"].append(np.asarray(ci))
        sel = np.arange(min(len(t.x), n_real))
        out["real_x"].append(_u8(t.x[sel]))
        out["real_y"].append(t.y[sel].numpy())
        out["real_target"].append(np.full(len(sel), t.identity))
        out["real_landmarks"].append(t.landmarks[sel].numpy())
    arrays = {k: np.concatenate(v) for k, v in out.items()}
    ids = np.unique(bank.identity)[:bank_identities]
    bp = np.concatenate([np.nonzero(bank.identity == i)[0][:per_identity] for i in ids])
    arrays.update(bank_x=_u8(bank.x[bp]), bank_landmarks=bank.landmarks[bp].numpy(), bank_identity=bank.identity[bp],
                  bank_y=bank.y[bp].numpy(), targets=np.asarray([t.identity for t in pop.targets]))
    arrays["meta"] = np.asarray(json.dumps({"n_faces": n_faces, "per_face": per_face, "n_ctrl": n_ctrl,
                                            "n_real": n_real, "per_identity": per_identity, "seed": seed,
                                            "bank_identities": int(len(ids)),
                                            "task": exp["settings"]["task"], "profile": exp["settings"]["profile"],
                                            "settings": exp["settings"]}, default=_jsonable))
    return arrays


def save_judge_input(exp: dict, device, path: Path, *, limit: float = NPZ_LIMIT) -> dict:
    """Write the judges' ``.npz`` (compressed); fewer frames per target while it is over ``limit`` bytes."""
    import numpy as np

    plans = [(6, 4, 8, 12), (6, 3, 5, 6), (5, 3, 5, 5), (4, 3, 4, 4), (4, 2, 4, 4), (3, 2, 3, 3)]
    for n_faces, per_face, n_ctrl, n_real in plans:
        arrays = judge_input(exp, device, n_faces=n_faces, per_face=per_face, n_ctrl=n_ctrl, n_real=n_real)
        np.savez_compressed(path, **arrays)
        size = path.stat().st_size
        info = {"bytes": size, "n_faces": n_faces, "per_face": per_face, "n_ctrl": n_ctrl, "n_real": n_real,
                "generated": int(len(arrays["gen_x"])), "bank": int(len(arrays["bank_x"]))}
        if size <= limit:
            return info
        _print(f"judge input {size / 1e6:.1f} MB > {limit / 1e6:.1f} MB: fewer frames per target")
    return {**info, "over_limit": True}


def cmd_run(a) -> int:
    import numpy as np
    import pandas as pd
    import torch

    from facelab.adaptation.source_free import data as D
    from facelab.adaptation.source_free import dsfda as M
    from facelab.adaptation.source_free import pretrain as PT
    from facelab.runtime import resolve_device
    from facelab.studies import neutral_video_adaptation as NV

    t_start = time.time()
    deadline = t_start + 60 * a.minutes
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    threads = a.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    dev = resolve_device(a.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True     # TF32 tensor cores (convolutions use them by default)
        torch.backends.cudnn.allow_tf32 = True
    s = PT.settings_for(a.profile, a.task)
    if a.tiny:
        s.update(TINY)
    if a.targets:
        s["n_targets"] = min(a.targets, s["n_targets"])
    s["adapt"] = PT.adapt_settings(s, None)          # full profile: the paper's whole-network fine-tuning
    R = Report(out, deadline)
    R.data.update(command=" ".join(sys.argv), device=str(dev), torch=torch.__version__, threads=threads,
                  gpu=torch.cuda.get_device_name(dev) if dev.type == "cuda" else None, minutes=a.minutes,
                  tiny=a.tiny, settings=s)
    R.write()
    _print(f"device {dev}, {threads} CPU threads, budget {a.minutes} min, profile {a.profile}, task {a.task}"
           f"{' (TINY dry run)' if a.tiny else ''}")

    # 1. population (on the render device; the data are kept on the CPU)
    from facelab.synth import FaceWorld

    def render(where):
        t = time.time()
        pop = PT.population(s, render_device=where)
        t_pop = time.time() - t
        t = time.time()
        world = FaceWorld(seed=s["world_seed"], size=s["render_size"], device=where)
        partner, truth = D.swap_truth(world, pop.source, range(s["n_source"]), s["per_source"], seed=1,
                                      size=s["size"], grey=s["grey"])
        return pop, partner, truth, t_pop, time.time() - t

    def cpu_rate(n_threads):
        torch.set_num_threads(n_threads)
        world = FaceWorld(seed=s["world_seed"], size=s["render_size"])
        t = time.time()
        D.render_source(world, range(4), 10, s["task"], size=s["size"], grey=s["grey"], seed=1)
        torch.set_num_threads(threads)
        return round(40 / (time.time() - t), 1)

    rdev = dev if a.render_device == "auto" else torch.device(a.render_device)
    render_info = {"render_device": str(rdev)}
    try:
        pop, partner, truth, t_pop, t_swap = render(rdev)
    except Exception as e:                           # a GPU world that fails: the CPU renders the same world
        if rdev.type == "cpu":
            raise
        R.data["notes"].append(f"rendering on {rdev} failed ({type(e).__name__}: {e}); rendered on the CPU")
        _print(R.data["notes"][-1])
        render_info = {"render_device": "cpu", "render_failed_on": str(rdev)}
        rdev = torch.device("cpu")
        pop, partner, truth, t_pop, t_swap = render(rdev)
    n_faces = len(pop.source.x) + len(pop.bank.x) + sum(len(x.control) + len(x.x) for x in pop.targets)
    if not a.tiny:                                   # what the CPU would have cost (40 source faces)
        render_info["cpu_faces_per_s"] = {"1 thread": cpu_rate(1), f"{threads} threads": cpu_rate(threads)}
    R.stage("render", seconds=round(t_pop + t_swap, 1), population_s=round(t_pop, 1), swap_truth_s=round(t_swap, 1),
            faces=n_faces + len(truth), faces_per_s=round((n_faces + len(truth)) / (t_pop + t_swap), 1),
            **render_info)
    _print(f"rendered {n_faces} faces in {t_pop:.1f} s and {len(truth)} swap truths in {t_swap:.1f} s on {rdev}; "
           f"{render_info}")

    # 2. source classifier
    n_classes = len(D.TASKS[s["task"]])
    left = R.left()
    cap = max(10.0, 0.15 * left)
    clf, log = M.train_classifier(pop.source.x, pop.source.y, n_classes, device=dev, max_seconds=cap,
                                  progress=_print, **s["classifier"])
    batches = log["epochs_run"] * math.ceil(len(pop.source.x) / 64)
    beta = log["seconds"] / max(1, batches)
    R.stage("source classifier", seconds=round(log["seconds"], 1), epochs_planned=s["classifier"]["epochs"],
            epochs_run=log["epochs_run"], stopped_early=log["stopped_early"], max_seconds=round(cap, 1),
            final_loss=log["loss"][-1], s_per_batch64=round(beta, 5))
    torch.save({k: v.detach().cpu() for k, v in clf.state_dict().items()}, out / "source_classifier.pt")

    # the core protocol's cost, estimated from the classifier's pace (a batch of 32 ~ 0.6 of one of 64, + overhead)
    rt_est = s["n_targets"] * (_per_target_batches(s) * beta * 0.8 + 2.0)
    margin = 15.0 + 0.02 * 60 * a.minutes
    R.data["plan"] = {"core_targets_estimate_s": round(rt_est, 1), "margin_s": round(margin, 1)}

    # 3. generator, source stage
    gs, gt = s["gen_source"], s["gen_target"]
    avail = R.left() - rt_est - margin
    cap = max(10.0, avail * gs["steps"] / (gs["steps"] + gt["steps"]))
    G0, _, log = M.train_generator(pop.source.x, torch.as_tensor(pop.source.identity), s["n_source"], pop.source.x,
                                   pop.source.y, clf, arch=s["arch"], pairs=(partner, truth), device=dev,
                                   max_seconds=cap, progress=_print, **gs)
    R.stage("generator source stage", max_seconds=round(cap, 1), **_gen_log(log, gs["steps"]))
    del truth, partner
    tau_src = log["seconds"] / max(1, log["steps_run"])

    # 4. DSFDA's target stage
    faces, labels = PT._control_faces(pop)

    def target_stage(variant: str, cap: float):
        G, _, lg = M.train_generator(faces, labels, len(pop.targets), pop.source.x, pop.source.y, clf, generator=G0,
                                     weights=PT.GENERATOR_VARIANTS[variant], arch=s["arch"], seed=1, device=dev,
                                     max_seconds=cap, progress=_print, **gt)
        return G.eval(), lg

    cap = max(10.0, R.left() - rt_est - margin)
    G, log = target_stage("dsfda", cap)
    R.stage("generator target stage (dsfda)", max_seconds=round(cap, 1), **_gen_log(log, gt["steps"]))
    tau_tgt = log["seconds"] / max(1, log["steps_run"])

    exp = {"settings": s, "population": pop, "classifier": clf, "generators": {"dsfda": G}, "device": dev}
    # 5. the judges' input first: it needs only the generator, and exists whatever happens next
    t0 = time.time()
    info = save_judge_input(exp, dev, out / "judge_input.npz")
    R.stage("judge input", seconds=round(time.time() - t0, 1), **info)

    # 6. the core methods, one target at a time
    preds, secs, per_target_s, done = [], {}, [], []

    def write_tables(methods):
        run = {"predictions": pd.concat(preds, ignore_index=True), "methods": list(methods)}
        run["predictions"].to_csv(out / "predictions.csv", index=False)
        df = run["predictions"]
        acc = {m: float((df[m] == df["label"]).mean()) for m in methods}
        per = {str(tid): {m: float((g[m] == g["label"]).mean()) for m in methods} for tid, g in df.groupby("target")}
        R.data["pooled_accuracy"], R.data["per_target_accuracy"] = acc, per
        NV.per_target_table(run).to_csv(out / "per_target.csv")
        if len(per) >= 2:
            summ = NV.summary_table(run)
            summ.to_csv(out / "summary.csv")
            R.data["summary"] = json.loads(summ.reset_index().to_json(orient="records"))
            if "DSFDA" in summ.index:
                row = summ.loc["DSFDA"]
                R.data["targets_check"] = {
                    "dsfda_minus_source_points": 100 * (acc["DSFDA"] - acc["source only"]),
                    "mean_over_targets_delta_points": 100 * float(row.get("delta", float("nan"))),
                    "gap_closed": float(row.get("gap_closed", float("nan"))),
                    "pass_8_points": bool(100 * (acc["DSFDA"] - acc["source only"]) >= 8),
                    "pass_half_gap": bool(row.get("gap_closed", 0) >= 0.5)}
        R.write()

    for t in pop.targets:
        need = (np.mean(per_target_s) if per_target_s else rt_est / s["n_targets"]) + margin / 2
        if R.left() < need:
            R.data["notes"].append(f"core methods stopped before target {t.identity}: {R.left():.0f} s left, "
                                   f"a target takes ~{need:.0f} s")
            break
        t0 = time.time()
        run = NV.run_targets(exp, methods=CORE, targets=[t.identity], device=dev)
        per_target_s.append(time.time() - t0)
        preds.append(run["predictions"])
        for m, v in run["seconds"].items():
            secs[m] = secs.get(m, 0.0) + v
        res = run["dsfda"][t.identity]
        done.append(t.identity)
        R.data.setdefault("dsfda_adaptation", {})[str(t.identity)] = {
            k: res.log[k] for k in ("epochs_run", "best_epoch", "val_ce", "stopped_early")}
        write_tables(CORE)
        df = run["predictions"]
        _print(f"target {t.identity} ({per_target_s[-1]:.1f} s): "
               + ", ".join(f"{m} {np.mean(df[m] == df['label']):.2f}" for m in CORE))
    R.stage("core methods", seconds=round(sum(per_target_s), 1), targets_run=done, targets_planned=s["n_targets"],
            method_seconds={m: round(v, 1) for m, v in secs.items()},
            per_target_s=[round(v, 1) for v in per_target_s], estimate_s=round(rt_est, 1))

    # 7. ablations, each only if its generator and its adaptations fit whole
    methods = list(CORE)
    dsfda_s = secs.get("DSFDA", 0.0) / max(1, len(done))
    for variant, method in ABLATIONS.items():
        need = gt["steps"] * tau_tgt + len(done) * dsfda_s + 10
        if not done or R.left() < need:
            R.stage(f"ablation {variant}", skipped=True, needed_s=round(need, 1), left_s=round(R.left(), 1))
            continue
        G_v, log = target_stage(variant, max(10.0, R.left() - len(done) * dsfda_s - 10))
        R.stage(f"ablation {variant}", **_gen_log(log, gt["steps"]))
        exp["generators"][variant] = G_v
        t0, col = time.time(), {}
        for t in pop.targets:
            if t.identity not in done:
                continue
            if R.left() < dsfda_s + 5:
                R.data["notes"].append(f"ablation {variant} stopped before target {t.identity}")
                break
            r = NV.run_targets(exp, methods=(method,), targets=[t.identity], device=dev)
            col[t.identity] = r["predictions"][method].to_numpy()
        if len(col) == len(done):
            for i, tid in enumerate(done):
                preds[i][method] = col[tid]
            methods.append(method)
            write_tables(methods)
        R.stage(f"ablation {variant}", adapt_seconds=round(time.time() - t0, 1), targets_run=list(col),
                complete=len(col) == len(done))
    R.data["total_s"] = round(time.time() - t_start, 1)
    R.data["stage_seconds_s_per_step"] = {"source": round(tau_src, 4), "target": round(tau_tgt, 4)}
    R.write()
    _print(json.dumps({k: R.data.get(k) for k in ("pooled_accuracy", "targets_check", "total_s")}, indent=1))
    return 0


def judge(npz: str | Path, *, far: float = 0.01) -> dict:
    """The chapter's identity and expression judges on a :func:`save_judge_input` file (CPU; dlib's network)."""
    from types import SimpleNamespace

    import numpy as np
    import pandas as pd
    import torch
    import torch.nn.functional as F

    from facelab.adaptation.source_free import data as D
    from facelab.models import load_embedder, load_expression_model
    from facelab.studies import neutral_video_adaptation as NV

    z = np.load(npz)
    meta = json.loads(str(z["meta"]))

    def f(name):
        return torch.from_numpy(z[name]).float() / 255

    def lm(name):
        return torch.from_numpy(z[name]).float()

    net = load_embedder("dlib-resnet")
    fa = load_expression_model()
    targets = [int(v) for v in z["targets"]]
    ctrl_x, ctrl_t, ctrl_lm = f("ctrl_x"), z["ctrl_target"], lm("ctrl_landmarks")
    tg = [SimpleNamespace(identity=tid, control=ctrl_x[ctrl_t == tid], control_landmarks=ctrl_lm[ctrl_t == tid])
          for tid in targets]
    bank = SimpleNamespace(x=f("bank_x"), landmarks=lm("bank_landmarks"), identity=z["bank_identity"],
                           y=torch.from_numpy(z["bank_y"]))
    thr = NV.impostor_threshold(net, SimpleNamespace(bank=bank, targets=tg), far=far,
                                per_identity=meta["per_identity"])
    ctrl_emb = {t.identity: NV._embed(net, t.control, t.control_landmarks) for t in tg}
    gx, gt, glm = f("gen_x"), z["gen_target"], lm("gen_landmarks")
    rows = []
    for k, tid in enumerate(targets):
        m = gt == tid
        xg = gx[m]
        e = NV._embed(net, xg, glm[m])
        sim_own = net.similarity(e, ctrl_emb[tid]).mean(1).numpy()
        sim_other = net.similarity(e, ctrl_emb[targets[(k + 1) % len(targets)]]).mean(1).numpy()
        chips = F.interpolate(NV._to3(xg), size=(112, 112), mode="bilinear", align_corners=False)
        with torch.no_grad():
            fa_gen = fa.predict(chips).argmax(1).numpy()
        for i, (y, ok, so, sx, fg) in enumerate(zip(z["gen_y"][m], z["gen_source_agrees"][m], sim_own, sim_other,
                                                    fa_gen)):
            rows.append({"variant": "dsfda", "target": tid, "label": int(y), "sim_own": float(so),
                         "sim_other": float(sx), "source_agrees": bool(ok), "faceapi": int(fg)})
    judged = pd.DataFrame(rows)
    judged.attrs["thresholds"] = thr
    real = []
    rx, rt, rlm = f("real_x"), z["real_target"], lm("real_landmarks")
    for tid in targets:
        m = rt == tid
        e = NV._embed(net, rx[m], rlm[m])
        real.append(net.similarity(e, ctrl_emb[tid]).mean(1).numpy())
    judged.attrs["real_sim_own"] = np.concatenate(real)
    table = NV.judge_table(judged)
    classes = D.TASKS[meta["task"]]
    with torch.no_grad():
        fa_bank = fa.predict(F.interpolate(NV._to3(bank.x), size=(112, 112), mode="bilinear",
                                           align_corners=False)).argmax(1).numpy()
    fa_names = list(getattr(fa, "classes", None) or getattr(fa, "CLASSES", None) or range(7))
    name = (lambda i: str(fa_names[i]) if i < len(fa_names) else str(i))
    per_target = judged.groupby("target").apply(
        lambda g: {"identity_published": float((g["sim_own"] >= thr["published"]).mean()),
                   "identity_measured": float((g["sim_own"] >= thr["threshold"]).mean()),
                   "source_agrees": float(g["source_agrees"].mean())}, include_groups=False).to_dict()
    return {"npz": str(npz), "meta": {k: v for k, v in meta.items() if k != "settings"}, "thresholds": thr,
            "table": json.loads(table.reset_index().to_json(orient="records")),
            "identity_published": float((judged["sim_own"] >= thr["published"]).mean()),
            "identity_measured": float((judged["sim_own"] >= thr["threshold"]).mean()),
            "pass_identity_90": bool((judged["sim_own"] >= thr["published"]).mean() >= 0.9),
            "per_target": {str(k): v for k, v in per_target.items()},
            "faceapi_generated_by_label": {classes[int(y)]: {name(int(c)): int(n) for c, n in
                                                             g["faceapi"].value_counts().items()}
                                           for y, g in judged.groupby("label")},
            "faceapi_bank_by_label": {classes[int(y)]: {name(int(c)): int(n) for c, n in
                                                        zip(*np.unique(fa_bank[bank.y.numpy() == y], return_counts=True))}
                                      for y in np.unique(bank.y.numpy())},
            "n_generated": int(len(judged)), "n_real": int(len(judged.attrs["real_sim_own"]))}


def cmd_judge(a) -> int:
    t0 = time.time()
    res = judge(a.npz)
    res["seconds"] = round(time.time() - t0, 1)
    text = json.dumps(res, indent=1, default=_jsonable)
    if a.out:
        Path(a.out).write_text(text + "\n")
    print(text)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train and evaluate the full profile on a device (writes --out)")
    r.add_argument("--device", default="auto")
    r.add_argument("--out", required=True)
    r.add_argument("--minutes", type=float, default=7.0, help="wall-clock budget of the whole run")
    r.add_argument("--profile", default="full", choices=("quick", "full"))
    r.add_argument("--task", default="pain")
    r.add_argument("--threads", type=int, default=None, help="CPU threads (default: every core)")
    r.add_argument("--render-device", default="auto",
                   help="where the face world renders (default: --device; falls back to the CPU if it fails)")
    r.add_argument("--targets", type=int, default=None, help="only the first N targets")
    r.add_argument("--tiny", action="store_true", help="a CPU dry run: tiny population, networks and schedules")
    j = sub.add_parser("judge", help="the identity / expression judges on a run's judge_input.npz (CPU)")
    j.add_argument("--npz", required=True)
    j.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    if a.cmd == "run" and a.minutes <= 0:
        ap.error("--minutes must be positive")
    return cmd_run(a) if a.cmd == "run" else cmd_judge(a)


if __name__ == "__main__":
    raise SystemExit(main())
