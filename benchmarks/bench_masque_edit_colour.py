"""Where MASQUE's unguided "red lipstick" edit loses its red on a UNet with localised word maps (issue #20).

The distilled attention fine-tunes (``data/runs/ldm_attention_gpu``) generate red lips from text as often as the
base UNet (trained without the attention loss), yet their unguided edits of photos read orange. This script
measures, for each UNet, on the same 48 validation people and configuration as ``bench_masque_attention.py`` (8 DDIM
steps, negative-prompt inversion, guidance 7.5, blend threshold 0.2), the lip region's mean RGB of the photo and of
the edit, per face, and fits ``edit = a + b * photo`` per channel (least squares over faces): a slope ``b`` near 0
means the edit overrides the photo's lip colour, near 1 that the photo's colour carries through (the edit adds a
shift on top of it). It repeats the edit with prompt-to-prompt's attention control switched off in parts
(``cross_replace=0``: the shared words keep the edit's own maps; ``self_replace=0`` as well: no self-attention
injection) and with the word map's local blend off (``blend_threshold=0``: the edit acts on the whole landmark
region, not only where the word's map exceeds 0.2 of its maximum), to see whether the fusion or the blend is where
the red is lost; ``blend coverage`` is the mean share of the region's latent cells the final blend mask keeps.
Adherence is the book's makeup classifier reading "red". Last, at the photo's own inverted latents, the RMS of
``eps(edit prompt) - eps(source prompt)`` (the direction the edit's guidance scales) inside the lip region and
outside it, per DDIM step. With ``--guided``: MASQUE's guided edit (the synthetic surrogates, the chapter's
guidance) with the region mask only, its colour anchor on and off, and the anchored colour (the region's mean colour
of the decoded prediction when the guidance starts, which the anchor holds in the output).

Measured (2026-12-05, 1 thread each, the record ``data/runs/ldm_attention_gpu/edit_colour.json``): on the distilled
UNet with localised maps (loss 0.15) the chapter's blend keeps 0.16 of the lip region (base 0.98) and the edit's
red follows the photo's (slope 0.81); the region mask alone: adherence 0.31 -> 0.83. Guided, region mask: base
0.71 -> 0.92 with the anchor, 0.60 without; localised 0.83 -> 0.75 with it, 0.54 without.

Run::

    .venv/bin/python benchmarks/bench_masque_edit_colour.py [--guided] \
        --unet base book /path/to/face_ldm_quick.safetensors

writes ``_build/benchmarks/masque_edit_colour.json``.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VARIANTS = {"as in the chapter": {}, "no cross-attention fusion": {"cross_replace": 0.0},
            "no fusion, no self-attention injection": {"cross_replace": 0.0, "self_replace": 0.0},
            "region mask only (blend threshold 0)": {"blend_threshold": 0.0}}


def _fit(photo: torch.Tensor, edit: torch.Tensor) -> dict:
    """Per channel least squares ``edit = a + b photo`` over faces, and the correlation."""
    out = {}
    for k, ch in enumerate("RGB"):
        x, y = photo[:, k].double(), edit[:, k].double()
        xc, yc = x - x.mean(), y - y.mean()
        b = float((xc * yc).sum() / (xc * xc).sum().clamp_min(1e-12))
        r = float((xc * yc).sum() / ((xc * xc).sum() * (yc * yc).sum()).sqrt().clamp_min(1e-12))
        out[ch] = {"slope": round(b, 3), "intercept": round(float(y.mean() - b * x.mean()), 3), "r": round(r, 3)}
    return out


def measure(path: str, *, n_faces: int = 48, phrase: str = "red lipstick", guided: bool = False) -> dict:
    from _masque_validation import load_unet, record_config, validation_setup
    from facelab.privacy.makeup import makeup_classifier, parse_makeup
    from facelab.privacy.masque import masque_protect
    from facelab.studies.privacy_masque import makeup_prompt, region_colour

    model = load_unet(path)
    base = record_config(blend_threshold=0.2, adversarial=False)
    setup = validation_setup(model, n_faces, base)
    X, L, ids, refkw, inv = setup.X, setup.L, setup.ids, setup.refkw, setup.inv
    classifier = makeup_classifier()[0]
    prompt, word = makeup_prompt(model, phrase)
    kind, colour = parse_makeup(phrase)
    out = {"unet": path, "sha256": model.info.get("sha256"), "n_faces": n_faces, "phrase": phrase, "variants": {}}
    for name, change in VARIANTS.items():
        r = masque_protect(model, X, L, ids, config=replace(base, **change), edit_prompt=prompt, word=word,
                           inversion=inv, **refkw)
        photo, edit = region_colour(X, r.mask), region_colour(r.images, r.mask)
        pred = classifier.predict(r.images)[kind]
        row = {"adherence": sum(p == colour for p in pred) / len(pred),
               "photo RGB": [round(v, 3) for v in photo.mean(0).tolist()],
               "edit RGB": [round(v, 3) for v in edit.mean(0).tolist()], "fit": _fit(photo, edit),
               "blend coverage": round(float((r.blend_mask.flatten(1).sum(1)
                                              / r.latent_mask.flatten(1).sum(1).clamp_min(1e-12)).mean()), 3)}
        out["variants"][name] = row
        print(f"  {path} {name}: adherence {row['adherence']:.2f}, blend covers {row['blend coverage']:.2f} of the "
              f"region, photo {row['photo RGB']} -> edit {row['edit RGB']}, "
              f"slopes " + " ".join(f"{c} {v['slope']:.2f} (r {v['r']:.2f})" for c, v in row["fit"].items()),
              flush=True)
    # MASQUE's guided edit (the chapter's colour anchor on and off) with the region mask only: the anchor holds each
    # region part's mean colour at the decoded prediction's when the guidance starts (half-way), the output included
    if guided:
        from facelab.models import load_face_models

        surrogates = load_face_models(["synth-plain", "synth-residual"])
        cfg = replace(base, blend_threshold=0.0)
        plain = masque_protect(model, X, L, ids, config=cfg, edit_prompt=prompt, word=word, inversion=inv, **refkw)

        def reading(x, mask):
            return {"adherence": sum(p == colour for p in classifier.predict(x)[kind]) / len(X),
                    "edit RGB": [round(v, 3) for v in region_colour(x, mask).mean(0).tolist()]}

        out["guided"] = {"plain": reading(plain.images, plain.mask)}
        for keep in (True, False):
            g = masque_protect(model, X, L, ids, models=surrogates,
                               config=replace(cfg, adversarial=True, keep_colour=keep), edit_prompt=prompt, word=word,
                               inversion=inv, resume=plain, **refkw)
            row = reading(g.images, g.mask)
            anchored = [h["colour"] for h in g.history if "colour" in h]
            if anchored:
                row["anchor RGB (first guided step)"] = [round(float(v), 3) for v in torch.tensor(anchored[0]).mean(0)]
            out["guided"][f"MASQUE, colour anchor {'on' if keep else 'off'}"] = row
        for k, v in out["guided"].items():
            anchor = v.get("anchor RGB (first guided step)")
            print(f"  {path} region mask, {k}: adherence {v['adherence']:.2f}, edit {v['edit RGB']}"
                  + (f", anchor {anchor}" if anchor else ""), flush=True)
    # the edit's direction at the photo's own inverted latents: eps(edit prompt) - eps(source prompt), the term that
    # negative-prompt inversion's guidance scales, against eps(source) - eps(empty prompt) for scale; RMS over the
    # latent cells of the lip region and outside it, averaged over faces, per step
    lm = r.latent_mask.float()
    conds = {k: model.encode_prompt([p] * len(X)) for k, p in (("edit", prompt), ("source", model.default_prompt),
                                                               ("empty", ""))}
    steps = []
    with torch.no_grad():
        for i, t in enumerate(inv.timesteps):
            x = inv.trajectory[i]
            e = {k: model.unet(x, t, encoder_hidden_states=c).sample for k, c in conds.items()}
            row = {"step": i, "t": int(t)}
            for name, d in (("edit - source", e["edit"] - e["source"]), ("source - empty", e["source"] - e["empty"])):
                sq = d.pow(2).mean(1, keepdim=True)
                inside = (sq * lm).flatten(1).sum(1) / lm.flatten(1).sum(1)
                row[f"{name} in region"] = round(float(inside.sqrt().mean()), 4)
                row[f"{name} outside"] = round(float(((sq * (1 - lm)).flatten(1).sum(1)
                                                      / (1 - lm).flatten(1).sum(1)).sqrt().mean()), 4)
            steps.append(row)
    out["direction"] = steps
    print(f"  {path} eps(edit) - eps(source), RMS in the lip region per step: "
          + " ".join(f"{s['edit - source in region']:.3f}" for s in steps)
          + "; outside: " + " ".join(f"{s['edit - source outside']:.3f}" for s in steps), flush=True)
    return out


def main(argv=None):
    from _masque_validation import UNET_HELP

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--unet", nargs="+", default=["book"], help=UNET_HELP)
    ap.add_argument("--faces", type=int, default=48)
    ap.add_argument("--guided", action="store_true",
                    help="also MASQUE's guided edit with the region mask, colour anchor on and off (surrogates)")
    ap.add_argument("--name", default="masque_edit_colour", help="result file _build/benchmarks/NAME.json")
    a = ap.parse_args(argv)
    results = [measure(p, n_faces=a.faces, guided=a.guided) for p in a.unet]
    from _results import write_result

    write_result(a.name, results)


if __name__ == "__main__":
    main()
