"""What MASQUE's guidance changes inside the makeup region, and what adherence it trades for dodging (issue #20).

On the base UNet (trained without the attention loss), MASQUE's colour-anchored guidance raises the prompt adherence
of the unguided edit; on a UNet whose word maps are localised (the distilled fine-tunes of
``data/runs/ldm_attention_gpu``) it lowers it, although the anchor holds the region's mean colour on both
(``bench_masque_edit_colour.py --guided``). This script measures, per UNet, on the validation people of
``bench_masque_attention.py`` (48 faces, identities from 500000; the victims' thresholds from 40 more validation
people) and the quick profile's configuration with the region mask only (``blend_threshold=0``, so the unguided
edits are as strong on both UNets), for "red lipstick" and "blue eyeshadow":

* the unguided edit and MASQUE at several guidance settings (DDIM steps, ``adv_start`` x ``adv_step``: the chapter's
  8 steps, 0.5 x 1.0, stronger and weaker steps, an earlier start, and 20 steps with smaller guidance steps): prompt
  adherence (the book's makeup classifier) with its Wilson interval and McNemar's exact p-value against the unguided
  edit on the same faces, the classifier's three most frequent readings and, per face, whether it read the prompted
  makeup (so UNets can be compared face by face); dodging success at FAR 1 %, pooled over the two synthetic
  surrogates (white box) and against dlib's network (black box, never a surrogate), with Wilson intervals over the
  (face, gallery image) pairs and McNemar's p-value against the unguided edit on the same pairs; and inside the
  region: the mean RGB, the spread of the colours about it (RMS over the region's pixels and channels: texture and
  shading), the high-frequency energy (mean |image - its 3x3 box blur|) and the mean saturation;
* at the chapter's setting, the guided output's region moved (post hoc, per part as the anchor does) to the
  *unguided* edit's mean colour (``anchored to the unguided colour``: is the colour at guidance start what
  differs?); at the chapter's setting and at half its step, MASQUE with each pixel's chroma held at the prediction's
  when the guidance starts as well as each part's mean colour, so the guidance acts only through the luminance
  pattern (``chroma held per pixel``: ``MasqueConfig(keep_colour="chroma")``).

Measured (2026-12-05, this 2-core CPU, 1 thread each, two runs side by side, about 8 minutes each; record
``data/runs/ldm_attention_gpu/guidance.json``, read by ``facelab.studies.privacy_diffaim.guidance_record``, shown in
chapter 05), base UNet vs the distilled one with loss 0.15 (G, the book's UNet since 2026-12-05): every guidance
setting raises white-box dodging (McNemar p < 0.01 on both) and at the chapter's setting doubles the region's colour
spread (0.105 -> 0.243; G 0.099 -> 0.234). Red lipstick: base unguided 0.71 -> chapter's setting 0.92 (5 of 7
settings significantly higher); G 0.83 -> 0.75 (none differs; G below base at the chapter's setting, p 0.04);
re-anchored to the unguided colour: unchanged on both; chroma held: G 0.90 (p 0.04 against the chapter's setting).
Blue eyeshadow: base 0.92 -> 0.81, G 0.90 -> 0.75; an earlier start lowers it on both; chroma held at step 1 does
not help (0.73, 0.67). 20 steps, guidance 0.2 / 0.4: the UNets do not differ (lipstick 0.83 / 0.88 vs 0.83 / 0.79,
eyeshadow 0.83 / 0.77 vs 0.79 / 0.77). Step 0.5 with the chroma held: base 0.92 / 0.90, G 0.92 / 0.83, white-box
dodging above the unguided edit on both (G: 0.45 -> 0.51, 0.34 -> 0.45), the only run with both prompts >= 0.8 on G.

Run::

    .venv/bin/python benchmarks/bench_masque_guidance.py --unet base book /path/to/face_ldm_quick.safetensors

writes ``_build/benchmarks/masque_guidance.json`` (a list, one entry per UNet).
"""

from __future__ import annotations

import argparse
import collections
import os
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PHRASES = ("red lipstick", "blue eyeshadow")
#: (num_steps, adv_start, adv_step) of the guided runs; the chapter's quick setting is (8, 0.5, 1.0)
SETTINGS = ((8, 0.5, 0.5), (8, 0.5, 1.0), (8, 0.5, 2.0), (8, 0.25, 0.5), (8, 0.25, 1.0), (20, 0.5, 0.2),
            (20, 0.5, 0.4))
CHAPTER = (8, 0.5, 1.0)
#: settings also run with each pixel's chroma held (``MasqueConfig(keep_colour="chroma")``)
CHROMA = ((8, 0.5, 1.0), (8, 0.5, 0.5))


def region_texture(images: torch.Tensor, mask: torch.Tensor) -> dict:
    """Inside the soft ``mask`` (N, 1, S, S), averaged over faces: mean RGB, RMS spread of the pixels' colours about
    it, mean |image - 3x3 box blur| (high-frequency energy) and mean saturation ((max - min) / max over RGB)."""
    w = mask / mask.flatten(1).sum(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    mean = (images * w).flatten(2).sum(2)                                          # (N, 3)
    spread = (((images - mean[..., None, None]) ** 2).mean(1, keepdim=True) * w).flatten(1).sum(1).sqrt()
    hf = ((images - F.avg_pool2d(images, 3, 1, 1, count_include_pad=False)).abs().mean(1, keepdim=True)
          * w).flatten(1).sum(1)
    mx, mn = images.max(1, keepdim=True).values, images.min(1, keepdim=True).values
    sat = ((mx - mn) / mx.clamp_min(1e-6) * w).flatten(1).sum(1)
    return {"region RGB": [round(float(v), 3) for v in mean.mean(0)], "colour spread": round(float(spread.mean()), 4),
            "high-frequency energy": round(float(hf.mean()), 4), "saturation": round(float(sat.mean()), 3)}


def measure(path: str, *, n_faces: int = 48, n_threshold_identities: int = 40, settings=SETTINGS) -> dict:
    from _masque_validation import invert, load_unet, record_config, validation_setup
    from facelab.metrics import mcnemar_test, wilson_interval
    from facelab.models import load_face_models
    from facelab.privacy.makeup import makeup_classifier, parse_makeup
    from facelab.privacy.masque import TWO_SIDED, anchor_colour, masque_protect, region_parts
    from facelab.studies._privacy_protocol import far_key, runs_outcomes
    from facelab.studies.privacy_masque import FARS, makeup_prompt, victim_thresholds

    model = load_unet(path)
    base = record_config(blend_threshold=0.0)
    s = validation_setup(model, n_faces, base, n_threshold_identities=n_threshold_identities)
    data = s.data
    victims = load_face_models(["dlib-resnet", "synth-plain", "synth-residual"])
    white, black = ["synth-plain", "synth-residual"], ["dlib-resnet"]
    surrogates = [victims[n] for n in white]
    thresholds = victim_thresholds(victims, data["threshold_images"], data["threshold_landmarks"],
                                   data["threshold_ids"], FARS)
    classifier = makeup_classifier()[0]
    key = far_key(0.01)
    invs = {}

    def dodging(x, names):
        out = runs_outcomes({(v,): x for v in names}, victims, thresholds, s.L, data["gallery"],
                            data["gallery_landmarks"], (0.01,), owner=data["gallery_owner"], accept=False)
        ok = np.concatenate([o[key] for o in out.values()])
        lo, hi = wilson_interval(int(ok.sum()), ok.size)
        return ok, round(float(ok.mean()), 3), round(float(lo), 3), round(float(hi), 3)

    out = {"unet": path, "sha256": model.info.get("sha256"), "n_faces": n_faces, "blend_threshold": 0.0,
           "chapter setting": list(CHAPTER), "settings": [list(x) for x in settings], "rows": []}
    for phrase in PHRASES:
        prompt, word = makeup_prompt(model, phrase)
        kind, colour = parse_makeup(phrase)
        runs, unguided = {}, {}
        for steps in sorted({n for n, _, _ in settings}):
            cfg = replace(base, num_steps=steps)
            inv = s.inv if steps == base.num_steps else invs.setdefault(steps, invert(model, s.X, cfg))
            kw = dict(edit_prompt=prompt, word=word, inversion=inv, **s.refkw)
            plain = {}
            for start in sorted({a for n, a, _ in settings if n == steps}):
                plain[start] = masque_protect(model, s.X, s.L, s.ids, config=replace(cfg, adversarial=False,
                                                                                     adv_start=start), **kw)
            first = unguided[steps] = plain[min(plain)]
            runs[f"unguided edit, {steps} steps"] = (steps, None, None, first.images)
            for n, start, step in settings:
                if n != steps:
                    continue
                g = masque_protect(model, s.X, s.L, s.ids, models=surrogates, resume=plain[start],
                                   config=replace(cfg, adv_start=start, adv_step=step), **kw)
                name = f"MASQUE, {steps} steps, {start:g} x {step:g}"
                runs[name] = (steps, start, step, g.images)
                if (steps, start, step) == CHAPTER:
                    names = [g.region] if isinstance(g.region, str) else list(g.region)
                    parts = region_parts(g.mask, 2 if all(r in TWO_SIDED for r in names) else 1)
                    colours = anchor_colour(first.images, parts)[1]
                    runs[f"{name}, anchored to the unguided colour"] = (steps, start, step,
                                                                      anchor_colour(g.images, parts, colours)[0])
                if (steps, start, step) in CHROMA:
                    c = masque_protect(model, s.X, s.L, s.ids, models=surrogates, resume=plain[start],
                                       config=replace(cfg, adv_start=start, adv_step=step, keep_colour="chroma"), **kw)
                    runs[f"{name}, chroma held per pixel"] = (steps, start, step, c.images)
        mask = next(iter(unguided.values())).mask        # the landmark region: the same at any step count
        ok0, won0 = {}, {}
        for name, (steps, start, step, x) in runs.items():
            pred = classifier.predict(x)[kind]
            ok = np.array([p == colour for p in pred], dtype=bool)
            ok0.setdefault(steps, ok)                  # the unguided edit of the same number of steps comes first
            lo, hi = wilson_interval(int(ok.sum()), ok.size)
            row = {"prompt": phrase, "run": name, "num_steps": steps, "adv_start": start, "adv_step": step,
                   "adherence": round(float(ok.mean()), 3), "adherence lo": round(float(lo), 3),
                   "adherence hi": round(float(hi), 3),
                   "adherence vs unguided: p": round(float(mcnemar_test(ok, ok0[steps], exact=True).p_value), 4),
                   "readings": collections.Counter(pred).most_common(3), "correct": ok.astype(int).tolist()}
            for label, names in (("white box", white), ("black box", black)):
                won, v, lo, hi = dodging(x, names)
                won0.setdefault((steps, label), won)
                row.update({f"success {label}": v, f"success {label} lo": lo, f"success {label} hi": hi,
                            f"pairs {label}": int(won.size),
                            f"success {label} vs unguided: p":
                                round(float(mcnemar_test(won, won0[(steps, label)]).p_value), 4)})
            row.update(region_texture(x, mask))
            out["rows"].append(row)
            print(f"  {path} {phrase} {name}: adherence {row['adherence']:.2f} "
                  f"(p {row['adherence vs unguided: p']:.3g}), success white {row['success white box']:.2f} "
                  f"black {row['success black box']:.2f}, spread "
                  f"{row['colour spread']:.3f}, hf {row['high-frequency energy']:.3f}, RGB {row['region RGB']}",
                  flush=True)
    return out


def main(argv=None):
    from _masque_validation import UNET_HELP

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unet", nargs="+", default=["book"], help=UNET_HELP)
    ap.add_argument("--faces", type=int, default=48)
    ap.add_argument("--name", default="masque_guidance",
                    help="result file _build/benchmarks/NAME.json (runs side by side need their own names)")
    a = ap.parse_args(argv)
    results = [measure(p, n_faces=a.faces) for p in a.unet]
    from _results import write_result

    write_result(a.name, results)


if __name__ == "__main__":
    main()
