"""The experiment's population and DSFDA's pretrained parts, cached through :mod:`facelab.checkpoints`.

``python -m facelab.adaptation.source_free.pretrain [--profile quick|full] [--task pain|expression7]`` trains what is
missing or stale:

* ``dsfda_source`` - the source expression classifier (trained on the source population only);
* ``dsfda_gen_source`` - the generator's source stage (face discriminator over the source identities);
* ``dsfda_gen``, ``dsfda_gen_nodual``, ``dsfda_gen_noperc`` - the target stage (face discriminator over the target
  identities + fake, faces from the targets' control frames - never their validation split, never an expressive
  frame), with all losses, without the dual consistency, without the perceptual loss.

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
           "RESTORE"]

RESTORE = "python -m facelab.adaptation.source_free.pretrain"
#: ablation name -> loss weights changed from dsfda.LOSS_WEIGHTS
GENERATOR_VARIANTS = {"dsfda": {}, "no dual consistency": {"dual_face": 0.0, "dual_expr": 0.0},
                      "no perceptual": {"perceptual": 0.0}}
_VARIANT_SUFFIX = {"dsfda": "", "no dual consistency": "_nodual", "no perceptual": "_noperc"}

_QUICK = dict(world_seed=8, render_size=96, size=48, grey=True, n_source=40, per_source=25, n_targets=6,
              target_offset=1000, style_seed=5, n_control=30, n_expressive=120, bank_per_identity=6,
              classifier=dict(epochs=15, lr=2e-3, c=16),
              arch=dict(c=8, hidden=64, nz=8, n_res=1, n_down=3),
              gen_source=dict(steps=1000, batch=24, lr=3e-4), gen_target=dict(steps=300, batch=24, lr=1e-4),
              adapt=dict(per_face=6, epochs=12, lr=2e-3, patience=5, neutral_label=None, train="head"),
              oracle=dict(epochs=30, lr=1e-3),
              shot=dict(epochs=6, lr=5e-4))
_FULL = dict(world_seed=8, render_size=160, size=128, grey=False, n_source=120, per_source=60, n_targets=10,
             target_offset=1000, style_seed=5, n_control=60, n_expressive=240, bank_per_identity=6,
             classifier=dict(epochs=25, lr=1e-3, c=32),
             arch=dict(c=32, hidden=256, nz=64, n_res=6, n_down=4),
             gen_source=dict(steps=25 * 300, batch=24, lr=1e-4), gen_target=dict(steps=25 * 100, batch=24, lr=1e-4),
             adapt=dict(per_face=22, epochs=25, lr=1e-4, patience=5, neutral_label=None, train="all"),
             oracle=dict(epochs=40, lr=5e-4),
             shot=dict(epochs=15, lr=1e-4))


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


def population(s: dict, *, with_source: bool = True, targets: int | None = None) -> Population:
    """Render the experiment's population (deterministic in ``s``). ``targets``: render only the first few."""
    from facelab.synth import FaceWorld

    world = FaceWorld(seed=s["world_seed"], size=s["render_size"])
    src_ids = range(s["n_source"])
    src = D.render_source(world, src_ids, s["per_source"], s["task"], size=s["size"], grey=s["grey"], seed=1) \
        if with_source else None
    bank = D.render_source(world, src_ids, s["bank_per_identity"], s["task"], size=s["size"], grey=s["grey"], seed=2)
    rng = np.random.default_rng(s["style_seed"])
    styles = [D.make_style(rng) for _ in range(s["n_targets"])]
    n = s["n_targets"] if targets is None else min(int(targets), s["n_targets"])
    tg = [D.render_target(world, s["target_offset"] + k, styles[k], s["task"], size=s["size"], grey=s["grey"],
                          n_control=s["n_control"], n_expressive=s["n_expressive"], seed=10 + k,
                          source_identities=src_ids) for k in range(n)]
    return Population(s, src, bank, tg)


def _state(module: torch.nn.Module) -> dict:
    return {k: v.detach().clone().contiguous() for k, v in module.state_dict().items()}


def source_classifier(s: dict, pop: Population | None = None, *, allow_train: bool = True, progress=print
                      ) -> tuple[ExpressionClassifier, dict]:
    """The source model (load_or_train ``dsfda_source``)."""
    keys = ("world_seed", "render_size", "size", "grey", "n_source", "per_source", "task", "classifier")
    settings = {k: s[k] for k in keys}
    n_classes = len(D.TASKS[s["task"]])
    in_ch = 1 if s["grey"] else 3

    def train(_):
        p = pop or population(s, targets=0)
        model, log = M.train_classifier(p.source.x, p.source.y, n_classes, progress=progress, **s["classifier"])
        return _state(model), log

    state, meta = checkpoints.load_or_train(_name("dsfda_source", s), train, settings=settings, restore=RESTORE,
                                            allow_train=allow_train, announce=progress)
    model = ExpressionClassifier(n_classes, in_ch, s["classifier"]["c"])
    model.load_state_dict(state)
    return model.eval(), meta


def _control_faces(pop: Population):
    xs, ys = [], []
    for k, t in enumerate(pop.targets):
        keep = ~t.control_val
        xs.append(t.control[keep])
        ys.append(torch.full((int(keep.sum()),), k, dtype=torch.long))
    return torch.cat(xs), torch.cat(ys)


def generators(s: dict, pop: Population | None = None, *, variants=tuple(GENERATOR_VARIANTS),
               allow_train: bool = True, progress=print) -> dict:
    """The target-stage generators of the requested variants (name -> (Generator, meta))."""
    clf, _ = source_classifier(s, pop, allow_train=allow_train, progress=progress)
    in_ch = 1 if s["grey"] else 3
    base_keys = ("world_seed", "render_size", "size", "grey", "n_source", "per_source", "task", "classifier",
                 "arch", "gen_source")
    src_settings = {**{k: s[k] for k in base_keys}, "paired_source_stage": 5.0}
    cache = {}

    def need_pop():
        if "pop" not in cache:
            cache["pop"] = pop if pop is not None and pop.source is not None else population(s)
        return cache["pop"]

    def train_source(_):
        from facelab.synth import FaceWorld

        p = need_pop()
        world = FaceWorld(seed=s["world_seed"], size=s["render_size"])
        partner, truth = D.swap_truth(world, p.source, range(s["n_source"]), s["per_source"], seed=1,
                                      size=s["size"], grey=s["grey"])
        G, _, log = M.train_generator(p.source.x, torch.as_tensor(p.source.identity), s["n_source"], p.source.x,
                                      p.source.y, clf, arch=s["arch"], progress=progress, pairs=(partner, truth),
                                      **s["gen_source"])
        return _state(G), log

    state, _ = checkpoints.load_or_train(_name("dsfda_gen_source", s), train_source, settings=src_settings,
                                         restore=RESTORE, allow_train=allow_train, announce=progress)
    G0 = Generator(in_ch, **s["arch"])
    G0.load_state_dict(state)
    out = {}
    for v in variants:
        if v not in GENERATOR_VARIANTS:
            raise ValueError(f"unknown generator variant {v!r}: expected one of {', '.join(GENERATOR_VARIANTS)}")
        settings = {**src_settings, "gen_target": s["gen_target"], "weights": GENERATOR_VARIANTS[v],
                    "targets": [s["target_offset"], s["n_targets"], s["style_seed"], s["n_control"]],
                    "target_render": D.TARGET_RENDER}

        def train_target(_, v=v):
            p = need_pop()
            faces, labels = _control_faces(p)
            G, _, log = M.train_generator(faces, labels, len(p.targets), p.source.x, p.source.y, clf,
                                          generator=G0 if not GENERATOR_VARIANTS[v] else _source_stage_for(v, G0),
                                          weights=GENERATOR_VARIANTS[v], arch=s["arch"], progress=progress,
                                          seed=1, **s["gen_target"])
            return _state(G), log

        st, meta = checkpoints.load_or_train(_name("dsfda_gen" + _VARIANT_SUFFIX[v], s), train_target,
                                             settings=settings, restore=RESTORE, allow_train=allow_train,
                                             announce=progress)
        G = Generator(in_ch, **s["arch"])
        G.load_state_dict(st)
        out[v] = (G.eval(), meta)
    return out


def _source_stage_for(variant: str, G0: Generator) -> Generator:
    """The ablations start from the same source-stage generator (the ablated loss is dropped in the target stage,
    where the target's faces are learnt)."""
    return G0


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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
