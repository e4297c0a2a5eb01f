"""The experiment's population and DSFDA's pretrained parts, cached through :mod:`facelab.checkpoints`.

``python -m facelab.adaptation.source_free.pretrain [--profile quick|full] [--task pain|expression7]`` trains what is
missing or stale:

* ``dsfda_source`` - the source expression classifier (trained on the source population only);
* ``dsfda_gen_source`` - the generator's source stage (face discriminator over the source identities);
* ``dsfda_gen``, ``dsfda_gen_nodual``, ``dsfda_gen_noperc`` - the target stage (face discriminator over the target
  identities + fake, faces from the targets' control frames - never their validation split, never an expressive
  frame), with all losses, without the dual consistency, without the perceptual loss;
* ``dsfda_gen_val`` - the same target stage (all losses) on the *validation targets*: other identities and styles,
  disjoint from the source population and from the test targets, used only to choose the adaptation setting;
* ``dsfda_adapt_selection.json`` - that choice: every candidate of :data:`ADAPT_CANDIDATES` run on the validation
  targets, its accuracy on their held-out expressive frames, and the setting with the best mean
  (:func:`select_adaptation`). The test targets play no part in it.

The quick profile's checkpoints (48 px grey, small channels, short schedules) are committed in ``data/models/``;
the full profile (128 px RGB, the paper's schedule: Adam 1e-4, 25 epochs, batch 20-32; 10 targets) has its own
names (suffix ``_full``) and trains where it runs.
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass

import numpy as np
import torch

from facelab import checkpoints
from facelab.adaptation.source_free import data as D
from facelab.adaptation.source_free import dsfda as M
from facelab.adaptation.source_free.nets import ExpressionClassifier, Generator

__all__ = ["settings_for", "Population", "population", "source_classifier", "generators", "GENERATOR_VARIANTS",
           "RESTORE", "ADAPT_CANDIDATES", "SELECTION_FILE", "select_adaptation", "adapt_settings", "target_split"]

RESTORE = "python -m facelab.adaptation.source_free.pretrain"
#: ablation name -> loss weights changed from dsfda.LOSS_WEIGHTS
GENERATOR_VARIANTS = {"dsfda": {}, "no dual consistency": {"dual_face": 0.0, "dual_expr": 0.0},
                      "no perceptual": {"perceptual": 0.0}}
_VARIANT_SUFFIX = {"dsfda": "", "no dual consistency": "_nodual", "no perceptual": "_noperc"}
#: the adaptation settings DSFDA's classifier step is chosen among (on the validation targets): what is trained,
#: the learning rate, and whether the real control frames join the generated ones as the neutral class (0)
ADAPT_CANDIDATES = {
    "whole network, lr 2e-3": dict(train="all", lr=2e-3, neutral_label=None),
    "whole network, lr 5e-4": dict(train="all", lr=5e-4, neutral_label=None),
    "head only, lr 2e-3": dict(train="head", lr=2e-3, neutral_label=None),
    "head + control frames as neutral, lr 2e-3": dict(train="head", lr=2e-3, neutral_label=0),
}
SELECTION_FILE = "dsfda_adapt_selection.json"

_QUICK = dict(world_seed=8, render_size=96, size=48, grey=True, n_source=40, per_source=25, n_targets=6,
              target_offset=1000, style_seed=5, n_control=30, n_expressive=120, bank_per_identity=6,
              classifier=dict(epochs=15, lr=2e-3, c=16),
              arch=dict(c=8, hidden=64, nz=8, n_res=1, n_down=3),
              gen_source=dict(steps=1000, batch=24, lr=3e-4), gen_target=dict(steps=300, batch=24, lr=1e-4),
              # train / lr / neutral_label: replaced by the candidate chosen on the validation targets
              adapt=dict(per_face=6, epochs=12, lr=2e-3, patience=5, neutral_label=None, train="head"),
              oracle=dict(epochs=30, lr=1e-3),
              shot=dict(epochs=6, lr=5e-4),
              validation=dict(target_offset=2000, n_targets=4, style_seed=23, seed=60))
_FULL = dict(world_seed=8, render_size=160, size=128, grey=False, n_source=120, per_source=60, n_targets=10,
             target_offset=1000, style_seed=5, n_control=60, n_expressive=240, bank_per_identity=6,
             classifier=dict(epochs=25, lr=1e-3, c=32),
             arch=dict(c=32, hidden=256, nz=64, n_res=6, n_down=4),
             gen_source=dict(steps=25 * 300, batch=24, lr=1e-4), gen_target=dict(steps=25 * 100, batch=24, lr=1e-4),
             adapt=dict(per_face=22, epochs=25, lr=1e-4, patience=5, neutral_label=None, train="all"),
             oracle=dict(epochs=40, lr=5e-4),
             shot=dict(epochs=15, lr=1e-4),
             validation=dict(target_offset=2000, n_targets=4, style_seed=23, seed=60))


def settings_for(profile: str = "quick", task: str = "pain") -> dict:
    """The experiment's settings: world, population, architecture and schedules of a profile and task."""
    if profile not in ("quick", "full"):
        raise ValueError(f"profile must be 'quick' or 'full', got {profile!r}")
    if task not in D.TASKS:
        raise ValueError(f"unknown task {task!r}: expected one of {', '.join(D.TASKS)}")
    s = copy.deepcopy(_QUICK if profile == "quick" else _FULL)
    s.update(profile=profile, task=task)
    return s


def _name(base: str, s: dict) -> str:
    suffix = ("" if s["task"] == "pain" else "_" + s["task"]) + ("" if s["profile"] == "quick" else "_full")
    return base + suffix


@dataclass
class Population:
    """The source population (training frames and an exemplar bank) and the target subjects."""

    settings: dict
    source: D.SourceData
    bank: D.SourceData
    targets: list

    @property
    def source_identities(self) -> list[int]:
        return list(range(self.settings["n_source"]))


def target_split(s: dict, split: str = "test") -> dict:
    """Identities, style seed and render seed of the ``"test"`` targets (the ones the chapter reports) or of the
    ``"validation"`` targets (used only to choose settings); the two sets and the source population are disjoint."""
    if split == "test":
        return {"offset": s["target_offset"], "n": s["n_targets"], "style_seed": s["style_seed"], "seed": 10}
    if split == "validation":
        v = s["validation"]
        out = {"offset": v["target_offset"], "n": v["n_targets"], "style_seed": v["style_seed"], "seed": v["seed"]}
        test_ids = set(range(s["target_offset"], s["target_offset"] + s["n_targets"]))
        val_ids = set(range(out["offset"], out["offset"] + out["n"]))
        if val_ids & (test_ids | set(range(s["n_source"]))):
            raise ValueError("validation targets must be disjoint from the test targets and the source identities")
        return out
    raise ValueError(f"split must be 'test' or 'validation', got {split!r}")


def population(s: dict, *, with_source: bool = True, targets: int | None = None, split: str = "test",
               render_device="cpu") -> Population:
    """Render the experiment's population (deterministic in ``s``). ``targets``: render only the first few;
    ``split``: the test targets or the validation targets (:func:`target_split`). ``render_device``: where the
    face world renders (the data are returned on the CPU; a GPU's pixels differ from the CPU's by rounding)."""
    from facelab.synth import FaceWorld

    sp = target_split(s, split)
    world = FaceWorld(seed=s["world_seed"], size=s["render_size"], device=render_device)
    src_ids = range(s["n_source"])
    src = D.render_source(world, src_ids, s["per_source"], s["task"], size=s["size"], grey=s["grey"], seed=1) \
        if with_source else None
    bank = D.render_source(world, src_ids, s["bank_per_identity"], s["task"], size=s["size"], grey=s["grey"], seed=2)
    rng = np.random.default_rng(sp["style_seed"])
    styles = [D.make_style(rng) for _ in range(sp["n"])]
    n = sp["n"] if targets is None else min(int(targets), sp["n"])
    tg = [D.render_target(world, sp["offset"] + k, styles[k], s["task"], size=s["size"], grey=s["grey"],
                          n_control=s["n_control"], n_expressive=s["n_expressive"], seed=sp["seed"] + k,
                          source_identities=src_ids) for k in range(n)]
    return Population(s, src, bank, tg)


def _state(module: torch.nn.Module) -> dict:
    return {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}


def source_classifier(s: dict, pop: Population | None = None, *, allow_train: bool = True, progress=print,
                      device=None) -> tuple[ExpressionClassifier, dict]:
    """The source model (load_or_train ``dsfda_source``), trained on and returned on ``device`` (default the CPU)."""
    keys = ("world_seed", "render_size", "size", "grey", "n_source", "per_source", "task", "classifier")
    settings = {k: s[k] for k in keys}
    n_classes = len(D.TASKS[s["task"]])
    in_ch = 1 if s["grey"] else 3

    def train(_):
        p = pop or population(s, targets=0)
        model, log = M.train_classifier(p.source.x, p.source.y, n_classes, progress=progress, device=device,
                                        **s["classifier"])
        return _state(model), log

    state, meta = checkpoints.load_or_train(_name("dsfda_source", s), train, settings=settings, restore=RESTORE,
                                            allow_train=allow_train, announce=progress)
    model = ExpressionClassifier(n_classes, in_ch, s["classifier"]["c"])
    model.load_state_dict(state)
    return model.to(device or "cpu").eval(), meta


def _control_faces(pop: Population):
    xs, ys = [], []
    for k, t in enumerate(pop.targets):
        keep = ~t.control_val
        xs.append(t.control[keep])
        ys.append(torch.full((int(keep.sum()),), k, dtype=torch.long))
    return torch.cat(xs), torch.cat(ys)


def generators(s: dict, pop: Population | None = None, *, variants=tuple(GENERATOR_VARIANTS),
               allow_train: bool = True, progress=print, split: str = "test", device=None) -> dict:
    """The target-stage generators of the requested variants (name -> (Generator, meta)); ``split="validation"``:
    trained on the validation targets' control frames (``dsfda_gen_val``; the full DSFDA variant only).
    ``device``: where they train and are returned (default the CPU)."""
    sp = target_split(s, split)
    if split == "validation" and set(variants) - {"dsfda"}:
        raise ValueError("the validation targets have only the full DSFDA generator (variant 'dsfda')")
    clf, _ = source_classifier(s, pop, allow_train=allow_train, progress=progress, device=device)
    in_ch = 1 if s["grey"] else 3
    base_keys = ("world_seed", "render_size", "size", "grey", "n_source", "per_source", "task", "classifier",
                 "arch", "gen_source")
    src_settings = {**{k: s[k] for k in base_keys}, "paired_source_stage": 5.0}
    cache = {}

    def need_pop():
        if "pop" not in cache:
            cache["pop"] = pop if pop is not None and pop.source is not None else population(s, split=split)
        return cache["pop"]

    def train_source(_):
        from facelab.synth import FaceWorld

        p = need_pop()
        world = FaceWorld(seed=s["world_seed"], size=s["render_size"])
        partner, truth = D.swap_truth(world, p.source, range(s["n_source"]), s["per_source"], seed=1,
                                      size=s["size"], grey=s["grey"])
        G, _, log = M.train_generator(p.source.x, torch.as_tensor(p.source.identity), s["n_source"], p.source.x,
                                      p.source.y, clf, arch=s["arch"], progress=progress, pairs=(partner, truth),
                                      device=device, **s["gen_source"])
        return _state(G), log

    state, _ = checkpoints.load_or_train(_name("dsfda_gen_source", s), train_source, settings=src_settings,
                                         restore=RESTORE, allow_train=allow_train, announce=progress)
    G0 = Generator(in_ch, **s["arch"])
    G0.load_state_dict(state)
    G0.to(device or "cpu")
    out = {}
    for v in variants:
        if v not in GENERATOR_VARIANTS:
            raise ValueError(f"unknown generator variant {v!r}: expected one of {', '.join(GENERATOR_VARIANTS)}")
        settings = {**src_settings, "gen_target": s["gen_target"], "weights": GENERATOR_VARIANTS[v],
                    "targets": [sp["offset"], sp["n"], sp["style_seed"], s["n_control"]],
                    "target_render": D.TARGET_RENDER}

        def train_target(_, v=v):
            p = need_pop()
            faces, labels = _control_faces(p)
            G, _, log = M.train_generator(faces, labels, len(p.targets), p.source.x, p.source.y, clf,
                                          generator=G0 if not GENERATOR_VARIANTS[v] else _source_stage_for(v, G0),
                                          weights=GENERATOR_VARIANTS[v], arch=s["arch"], progress=progress,
                                          seed=1, device=device, **s["gen_target"])
            return _state(G), log

        if split == "validation":
            settings["target_seed"] = sp["seed"]
        name = _name("dsfda_gen" + _VARIANT_SUFFIX[v] + ("_val" if split == "validation" else ""), s)
        st, meta = checkpoints.load_or_train(name, train_target,
                                             settings=settings, restore=RESTORE, allow_train=allow_train,
                                             announce=progress)
        G = Generator(in_ch, **s["arch"])
        G.load_state_dict(st)
        out[v] = (G.to(device or "cpu").eval(), meta)
    return out


def _source_stage_for(variant: str, G0: Generator) -> Generator:
    """The ablations start from the same source-stage generator (the ablated loss is dropped in the target stage,
    where the target's faces are learnt)."""
    return G0


def _selection_settings(s: dict) -> dict:
    keys = ("world_seed", "render_size", "size", "grey", "n_source", "per_source", "task", "classifier", "arch",
            "gen_source", "gen_target", "n_control", "n_expressive", "bank_per_identity", "validation")
    base = {k: v for k, v in s["adapt"].items() if k not in ("train", "lr", "neutral_label")}
    return {**{k: s[k] for k in keys}, "adapt_base": base, "candidates": ADAPT_CANDIDATES,
            "target_render": D.TARGET_RENDER}


def _selection_path(s: dict):
    name = SELECTION_FILE if (s["task"], s["profile"]) == ("pain", "quick") else \
        SELECTION_FILE.replace(".json", _name("", s) + ".json")
    return checkpoints.MODELS_DIR / name


def select_adaptation(s: dict, *, allow_train: bool = True, progress=print, seed: int = 0) -> dict:
    """Choose DSFDA's adaptation setting among :data:`ADAPT_CANDIDATES` on the validation targets only.

    Each candidate adapts the source classifier to each validation target from its control video (frames generated
    by ``dsfda_gen_val``); its score is the mean over validation targets of the accuracy on their held-out
    expressive frames. The best mean wins (ties: the first in :data:`ADAPT_CANDIDATES`). The result (settings,
    candidates, per-target and mean scores, the chosen name) is read from / written to ``data/models/``
    (``dsfda_adapt_selection.json`` for the quick pain task) and recomputed when the settings changed.
    """
    import json

    from facelab.files import atomic_write_text

    path = _selection_path(s)
    want = json.loads(json.dumps(_selection_settings(s)))
    if path.is_file():
        sel = json.loads(path.read_text())
        if sel.get("settings") == want:
            return sel
        why = f"{path.name} was made with other settings"
    else:
        why = f"{path.name} is missing"
    if not allow_train:
        raise checkpoints.CheckpointError(f"{why}; recreate it with `{RESTORE} --task {s['task']}`")
    if progress:
        progress(f"{why}: choosing the adaptation setting on the validation targets now (`{RESTORE}`)")
    pop = population(s, with_source=False, split="validation")
    clf, _ = source_classifier(s, None, allow_train=allow_train, progress=progress)
    G = generators(s, None, variants=("dsfda",), allow_train=allow_train, progress=progress,
                   split="validation")["dsfda"][0]
    template = pop.bank.x.mean(0)
    scores = {name: {} for name in ADAPT_CANDIDATES}
    for k, t in enumerate(pop.targets):
        check = D.check_control_video(t.control, face_template=template)
        ctrl, val = t.control[check.keep], t.control_val[check.keep]
        y = t.eval_y.numpy()
        for name, cand in ADAPT_CANDIDATES.items():
            res = M.adapt_dsfda(clf, G, ctrl, val, pop.bank.x, pop.bank.y, seed=seed + k,
                                **{**s["adapt"], **cand})
            scores[name][str(t.identity)] = float(np.mean(M.predict(res.model, t.eval_x).argmax(1).numpy() == y))
        if progress:
            progress(f"validation target {t.identity}: " + ", ".join(f"{n} {scores[n][str(t.identity)]:.2f}"
                                                                      for n in ADAPT_CANDIDATES))
    mean = {n: float(np.mean(list(v.values()))) for n, v in scores.items()}
    chosen = max(ADAPT_CANDIDATES, key=lambda n: (mean[n], -list(ADAPT_CANDIDATES).index(n)))
    sel = {"settings": want, "validation_targets": [t.identity for t in pop.targets],
           "frames": {str(t.identity): int(len(t.eval_y)) for t in pop.targets},
           "scores": scores, "mean_accuracy": mean, "chosen": chosen, "chosen_setting": ADAPT_CANDIDATES[chosen],
           "restore": f"{RESTORE} --task {s['task']}" + ("" if s["profile"] == "quick" else " --profile full")}
    atomic_write_text(path, json.dumps(sel, indent=1) + "\n")
    return sel


def adapt_settings(s: dict, selection: dict | None) -> dict:
    """DSFDA's adaptation settings: the profile's base with the selected candidate's setting applied."""
    out = dict(s["adapt"])
    if selection is not None:
        out.update(selection["chosen_setting"])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="quick", choices=("quick", "full"))
    ap.add_argument("--task", default="pain", choices=tuple(D.TASKS))
    ap.add_argument("--variant", action="append", choices=tuple(GENERATOR_VARIANTS))
    a = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    s = settings_for(a.profile, a.task)
    pop = population(s)
    generators(s, pop, variants=tuple(a.variant or GENERATOR_VARIANTS))
    if s["profile"] == "quick":  # the full profile keeps the paper's whole-network fine-tuning
        select_adaptation(s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
