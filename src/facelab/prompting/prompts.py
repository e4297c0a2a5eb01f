"""The SoVTP prompt: a marked image (numbered boxes and landmarks) and a text part, with the ablation ladder.

A vision LLM would read the face from the pixels; the text-only scorers of this book read what a real expression
recogniser (face-api's 7-class net, :func:`facelab.models.load_expression_model`) says about the face crop, which
is the "face only" rung. Each further rung adds one cue family (:data:`VARIANTS`):

==========  =========================================================================================================
``face``    the expression recogniser's reading of the target's face crop (top label and its probability, runner-up)
``marks``   + the marked image: how many people, the target's number and box, which face regions are hidden
``aus``     + action units estimated from the landmarks (:mod:`facelab.prompting.aus`)
``context`` + the target's body posture and the scene type
``others``  + the other people's emotions: the full SoVTP prompt
==========  =========================================================================================================

:func:`build_prompt` returns a :class:`Prompt` with the text exactly as a causal LM receives it (``text``: the
evidence, the question with the options, and an answer stem ending in ``"feels"``) and the evidence alone
(``body``), which the sentence-similarity scorer embeds. :func:`content_free_prompt` is the same template with every
field ``"N/A"`` (for calibration). :func:`draw_marks` draws the marked image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from facelab.prompting.aus import au_phrases, hidden_regions
from facelab.prompting.scenes import LABELS, NoFaceError, Scene, detected_persons

__all__ = ["VARIANTS", "VARIANT_NAMES", "Prompt", "face_readings", "build_prompt", "build_prompts",
           "content_free_prompt", "draw_marks", "check_variant"]

VARIANTS = ("face", "marks", "aus", "context", "others")
VARIANT_NAMES = {"face": "face only", "marks": "+ marks", "aus": "+ action units", "context": "+ context",
                 "others": "+ others (full SoVTP)"}


@dataclass(frozen=True)
class Prompt:
    scene: int
    variant: str
    body: str            # the evidence
    question: str        # question, options and answer stem
    label: str           # ground truth (never part of the text)

    @property
    def text(self) -> str:
        """What a causal language model receives."""
        return f"{self.body}\n{self.question}"


def check_variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise ValueError(f"unknown prompt variant {variant!r}: expected one of {', '.join(VARIANTS)}")
    return variant


def face_readings(scenes: list[Scene], model=None) -> dict:
    """``{(scene index, person number): 7 probabilities}`` from face-api's expression net on each face tile."""
    from facelab.models import load_expression_model
    from facelab.models.expression import EXPRESSIONS

    if tuple(EXPRESSIONS) != LABELS:   # pragma: no cover - both are face-api's order
        raise RuntimeError("face-api's classes differ from the prompt labels")
    model = model or load_expression_model()
    keys = [(s.index, p.number) for s in scenes for p in s.persons]
    tiles = torch.stack([p.tile for s in scenes for p in s.persons]) if keys else torch.zeros(0, 3, 112, 112)
    probs = []
    for i in range(0, len(tiles), 128):
        probs.append(model.predict(tiles[i:i + 128]).detach().cpu().numpy())
    probs = np.concatenate(probs) if probs else np.zeros((0, len(LABELS)))
    return dict(zip(keys, probs))


def _reading(p: np.ndarray) -> str:
    order = np.argsort(-p)
    pct = int(round(100 * p[order[0]] / 10) * 10)
    return (f"an expression recogniser reads the face as {LABELS[order[0]]} (about {pct} %), "
            f"else {LABELS[order[1]]}")


def _options(labels) -> str:
    return ", ".join(labels)


def build_prompt(scene: Scene, variant: str, readings: dict, regressor=None, *, labels=LABELS) -> Prompt:
    """The prompt of rung ``variant`` about the scene's target person.

    ``readings`` comes from :func:`face_readings`; ``regressor`` (:class:`facelab.prompting.aus.AURegressor`) is
    needed from the ``aus`` rung on. Raises :class:`NoFaceError` when the scene has no detected face, and a
    ``ValueError`` when the target's own face is not among the detected ones.
    """
    check_variant(variant)
    found = detected_persons(scene)
    person = scene.person
    if person not in found:
        raise NoFaceError(f"scene {scene.index}: the target (person {person.number}) has no detected face; "
                          "ask about a detected person")
    level = VARIANTS.index(variant)
    k = person.number
    key = (scene.index, k)
    if key not in readings:
        raise KeyError(f"no face reading for scene {scene.index} person {k}; run face_readings on these scenes")
    lines = []
    if level == 0:
        lines.append(f"A face cropped from a photo: {_reading(readings[key])}.")
    else:
        n = len(scene.persons)
        x0, y0, x1, y1 = person.box
        lines.append(f"A photo of {n} people, each marked with a numbered box and facial landmarks. "
                     f"Person {k} (box {x0},{y0} to {x1},{y1}): {_reading(readings[key])}.")
        hidden = hidden_regions(person.visible)
        lines.append(f"Landmarks of person {k}: {int(person.visible.sum())} of 68 visible"
                     + (f", {' and '.join(hidden)} covered by an occluder." if hidden else ", face unoccluded."))
    if level >= 2:
        if regressor is None:
            raise ValueError("the 'aus' rung and above need the AU regressor (facelab.prompting.load_au_regressor)")
        est = regressor.predict(person.landmarks, person.visible)[0]
        lines.append(f"Facial action units of person {k}: {au_phrases(est, regressor.au_names, person.visible)}.")
    if level >= 3:
        lines.append(f"Body posture of person {k}: {person.posture}.")
        lines.append(f"Scene: {scene.scene_type}.")
    if level >= 4:
        others = [p for p in scene.persons if p is not person]
        lines.append("Other people: " + "; ".join(f"person {p.number} feels {p.emotion}" for p in others) + ".")
    who = "the person" if level == 0 else f"person {k}"
    stem = "The person feels" if level == 0 else f"Person {k} feels"
    question = (f"Question: which emotion does {who} feel? Options: {_options(labels)}.\nAnswer: {stem}")
    return Prompt(scene=scene.index, variant=variant, body="\n".join(lines), question=question, label=scene.label)


def build_prompts(scenes, readings, regressor, variants=VARIANTS, *, labels=LABELS) -> list[Prompt]:
    """Every variant for every scene (scene-major order)."""
    return [build_prompt(s, v, readings, regressor, labels=labels) for s in scenes for v in variants]


def content_free_prompt(variant: str, *, labels=LABELS) -> Prompt:
    """The template of ``variant`` with every field replaced by ``"N/A"`` (content-free calibration input)."""
    check_variant(variant)
    level = VARIANTS.index(variant)
    lines = ["A face cropped from a photo: N/A." if level == 0 else "A photo: N/A. Person 1: N/A."]
    if level >= 1:
        lines.append("Landmarks of person 1: N/A.")
    if level >= 2:
        lines.append("Facial action units of person 1: N/A.")
    if level >= 3:
        lines += ["Body posture of person 1: N/A.", "Scene: N/A."]
    if level >= 4:
        lines.append("Other people: N/A.")
    who, stem = ("the person", "The person feels") if level == 0 else ("person 1", "Person 1 feels")
    question = f"Question: which emotion does {who} feel? Options: {_options(labels)}.\nAnswer: {stem}"
    return Prompt(scene=-1, variant=variant, body="\n".join(lines), question=question, label="")


def draw_marks(scene: Scene, *, ax=None, landmarks: bool = True, highlight_target: bool = True):
    """The marked image of SoVTP: numbered boxes and landmarks on the scene (a matplotlib Figure)."""
    from matplotlib.patches import Rectangle

    from facelab.plotting import figure_axes

    H, W = scene.image.shape[1:]
    fig, (ax,) = figure_axes(ax, figsize=(W / 60, H / 60))
    ax.imshow(scene.image.permute(1, 2, 0).numpy())
    for p in scene.persons:
        x0, y0, x1, y1 = p.box
        colour = "red" if (highlight_target and p is scene.person) else "yellow"
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=1.5))
        ax.text(x0 + 2, y0 + 9, str(p.number), color="black", fontsize=8, weight="bold",
                bbox=dict(facecolor=colour, edgecolor="none", pad=1))
        if landmarks:
            v = p.visible
            ax.scatter(p.landmarks[v, 0], p.landmarks[v, 1], s=2, c="cyan", linewidths=0)
            ax.scatter(p.landmarks[~v, 0], p.landmarks[~v, 1], s=2, c="magenta", linewidths=0)
    ax.set_axis_off()
    return fig
