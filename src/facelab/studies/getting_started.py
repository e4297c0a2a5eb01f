"""Chapter 00, *Getting started*: the pipeline diagram, the chapter table and a threshold demo on simulated scores.

The threshold slider is the book's one threshold widget, :func:`facelab.studies.face_recognition.threshold_widget`
(chapter 01 uses it on real scores); :func:`threshold_widget` here feeds it the simulated genuine/impostor scores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from facelab import REPO_ROOT

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["ChapterInfo", "CHAPTERS", "chapter_table", "plot_pipeline", "pipeline_diagram", "simulate_scores",
           "error_rates", "labelled_scores", "threshold_widget"]


@dataclass(frozen=True)
class ChapterInfo:
    slug: str
    title: str
    topic: str
    quick: str
    full: str
    assets: str


#: What each chapter of the plan covers and needs. `chapter_table` marks which ones exist in this checkout.
CHAPTERS: tuple[ChapterInfo, ...] = (
    ChapterInfo("00_getting_started", "Getting started", "the book, profiles, devices", "CPU, seconds", "same", "none"),
    ChapterInfo("01_face_recognition", "Face recognition, end to end",
                "detect, align, embed, verify (1:1), identify (1:N)", "CPU, minutes", "CPU or GPU",
                "dlib models, face-api weights, YuNet/SFace, real photos"),
    ChapterInfo("02_synthetic_faces", "A laboratory of faces", "the synthetic face world and its ground truth",
                "CPU, minutes", "CPU or GPU",
                "dlib models, YuNet/SFace, face-api and FER2013 expression nets, real photos (realism study)"),
    ChapterInfo("03_sparse_coding_occlusion", "Recognition under occlusion",
                "SRC, CRC, RSC, WCSC, WWCSC by ADMM", "CPU, minutes", "GPU helps (batched ADMM)", "real photos"),
    ChapterInfo("04_face_antispoofing", "Catching attacks", "unified physical-digital attack detection, Soft-MoE CLIP",
                "CPU, minutes", "GPU; OpenCLIP weights from a local path", "MiniLM text encoder"),
    ChapterInfo("05_privacy_diffaim", "Hiding in plain sight I", "adversarial identity manipulation with diffusion",
                "CPU, minutes", "GPU; Stable Diffusion 1.5 from a local path", "dlib/SFace victims"),
    ChapterInfo("06_privacy_masque", "Hiding in plain sight II", "text-guided adversarial makeup",
                "CPU, minutes", "GPU; Stable Diffusion 1.5 from a local path", "dlib/SFace victims"),
    ChapterInfo("07_expressions_faces_voices_words", "Expressions from faces, voices and words",
                "multimodal descriptors + MLP (EmotiEffLib at ABAW)", "CPU, minutes", "GPU; EmotiEffLib weights",
                "mini-Xception (FER2013), face-api, dlib landmarks, openSMILE, PocketSphinx, MiniLM, espeak-ng"),
    ChapterInfo("08_neutral_video_adaptation", "Personalising expression recognition from a neutral video",
                "source-free adaptation (DSFDA)", "CPU, minutes", "GPU; BioVid/UNBC from a local path",
                "dlib ResNet + face-api judges"),
    ChapterInfo("09_test_time_adaptation", "Adapting while watching",
                "Fisher-selected test-time adaptation (FIESTA)", "CPU, minutes", "GPU", "mini-Xception"),
    ChapterInfo("10_emotion_prompting", "Asking a language model what someone feels",
                "set-of-vision-text prompting (SoVTP)", "CPU, minutes", "GPU; a local vision LLM", "Gemma-3-270M (GGUF), face-api, MiniLM"),
    ChapterInfo("11_micro_expressions_physiology", "Micro-expressions meet physiology",
                "spotting and recognition with EEG and peripheral signals (MMME)", "CPU, minutes", "GPU", "none"),
    ChapterInfo("12_preference_basis", "A canonical basis of preferences",
                "from eigenfaces to what people want", "CPU, minutes", "CPU or GPU", "MiniLM, Chatbot Arena aggregate"),
)


def chapter_table(notebook_dir=None, timings_file=None) -> pd.DataFrame:
    """The plan of the book as a table: one row per chapter, whether it exists here and its last quick wall time."""
    notebook_dir = notebook_dir or (REPO_ROOT / "notebooks")
    timings_file = timings_file or (REPO_ROOT / "_build" / "timings.json")
    timings = {}
    if timings_file.exists():
        try:
            timings = json.loads(timings_file.read_text()).get("chapters", {})
        except json.JSONDecodeError:
            timings = {}
    rows = []
    for c in CHAPTERS:
        present = (notebook_dir / f"{c.slug}.ipynb").exists()
        t = timings.get(c.slug, {})
        rows.append({
            "chapter": c.slug[:2], "title": c.title, "what it covers": c.topic,
            "quick profile": c.quick, "full profile": c.full, "real assets": c.assets,
            "status": "in this book" if present else "in preparation",
            "last quick run (s)": t.get("seconds") if t.get("ok") else None,
        })
    return pd.DataFrame(rows).set_index("chapter")


def plot_pipeline(ax=None) -> Figure:
    """Draw the face-analysis pipeline (detect -> align -> embed -> decide, and the branches the book follows)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    if ax is None:
        fig, ax = plt.subplots(figsize=(10, 3.6))
    else:
        fig = ax.figure
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 3.6)
    ax.axis("off")
    main = [("image\n(photo or video)", 0.2), ("detect\nfaces + landmarks", 2.2), ("align\nsimilarity warp", 4.2),
            ("embed / describe\n(ResNet, SFace, ...)", 6.2), ("decide\nverify 1:1, identify 1:N", 8.2)]
    colours = ["#c0c0c0", "#1f5f8b", "#00798c", "#66a182", "#d1495b"]
    for (label, x), col in zip(main, colours):
        ax.add_patch(FancyBboxPatch((x, 2.1), 1.6, 0.9, boxstyle="round,pad=0.05", fc=col, ec="none", alpha=0.9))
        ax.text(x + 0.8, 2.55, label, ha="center", va="center", fontsize=8.5, color="white", weight="bold")
    for (_, x0), (_, x1) in zip(main[:-1], main[1:]):
        ax.add_patch(FancyArrowPatch((x0 + 1.65, 2.55), (x1 - 0.05, 2.55), arrowstyle="-|>", mutation_scale=14))
    branches = [("attack detection\n(is the face live?)", 1.25, 2.9), ("occlusion-robust coding\n(SRC ... WWCSC)", 3.75, 5.0),
                ("expression, micro-\nexpression, physiology", 6.25, 6.9), ("privacy: fool the\nembedder (diffusion)", 8.75, 7.2)]
    for label, x, x_from in branches:
        ax.add_patch(FancyBboxPatch((x - 1.05, 0.25), 2.1, 0.85, boxstyle="round,pad=0.05", fc="#edae49", ec="none"))
        ax.text(x, 0.67, label, ha="center", va="center", fontsize=8)
        ax.add_patch(FancyArrowPatch((x_from, 2.05), (x, 1.15), arrowstyle="-|>", mutation_scale=12,
                                     linestyle="--", color="#555555"))
    ax.set_title("The face-analysis pipeline and where each chapter plugs in")
    return fig


pipeline_diagram = plot_pipeline  # the name chapter 00 used before the study modules


def simulate_scores(n_genuine: int = 2_000, n_impostor: int = 20_000, separation: float = 3.0,
                    rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Similarity scores of a toy verifier: genuine ~ N(separation, 1), impostor ~ N(0, 1)."""
    if n_genuine < 1 or n_impostor < 1:
        raise ValueError(f"need at least one genuine and one impostor score, got {n_genuine} and {n_impostor}")
    rng = rng if rng is not None else np.random.default_rng(0)
    return rng.normal(separation, 1.0, n_genuine), rng.normal(0.0, 1.0, n_impostor)


def error_rates(genuine: np.ndarray, impostor: np.ndarray, threshold: float) -> tuple[float, float]:
    """False accept rate (impostors at or above the threshold) and false reject rate (genuine below it)."""
    from facelab.metrics import far_frr

    genuine, impostor = np.asarray(genuine, float), np.asarray(impostor, float)
    if genuine.size == 0 or impostor.size == 0:
        raise ValueError("error_rates needs non-empty genuine and impostor score arrays")
    return far_frr(*labelled_scores(genuine, impostor), threshold)


def labelled_scores(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, scores)`` as :mod:`facelab.metrics` takes them: 1 for the genuine scores, then 0 for the impostors."""
    genuine, impostor = np.asarray(genuine, float), np.asarray(impostor, float)
    return np.r_[np.ones(len(genuine), int), np.zeros(len(impostor), int)], np.r_[genuine, impostor]


def threshold_widget(genuine: np.ndarray, impostor: np.ndarray, value: float = 1.5, step: float = 0.1):
    """The book's threshold slider (:func:`facelab.studies.face_recognition.threshold_widget`) on simulated scores:
    a static snapshot in the book, live in JupyterLab."""
    from facelab.studies.face_recognition import threshold_widget as widget

    return widget(*labelled_scores(genuine, impostor), name="simulated verifier", value=value, step=step)
