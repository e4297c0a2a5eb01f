"""Zero-shot emotion recognition by prompting language models with visual and textual cues (SoVTP, chapter 10).

Method code only: the chapter's experiments live in :mod:`facelab.studies`.

* :mod:`facelab.prompting.scenes`: rendered faces composited into scenes with posture, scene type and the others'
  emotions as context cues of controlled reliability; tiers easy / medium / hard.
* :mod:`facelab.prompting.aus`: action units from landmarks (ridge regressor, committed checkpoint).
* :mod:`facelab.prompting.prompts`: the SoVTP prompt (marked image + text) and its ablation ladder.
* :mod:`facelab.prompting.scorers`: MiniLM similarity to label descriptions; a causal LM's calibrated label scores
  (the models themselves load through :mod:`facelab.models.language`).
"""

from facelab.prompting.aus import AURegressor, au_phrases, load_au_regressor
from facelab.prompting.prompts import (VARIANT_NAMES, VARIANTS, Prompt, build_prompt, build_prompts,
                                       content_free_prompt, draw_marks, face_readings)
from facelab.prompting.scenes import LABELS, TIERS, NoFaceError, Reliability, Scene, make_scenes
from facelab.prompting.scorers import (LABEL_DESCRIPTIONS, LMScorer, MiniLMScorer, calibrate, check_label_set,
                                       label_bias, predictions)

__all__ = ["LABELS", "TIERS", "Reliability", "Scene", "NoFaceError", "make_scenes", "AURegressor", "au_phrases",
           "load_au_regressor", "VARIANTS", "VARIANT_NAMES", "Prompt", "build_prompt", "build_prompts",
           "content_free_prompt", "draw_marks", "face_readings", "LABEL_DESCRIPTIONS", "MiniLMScorer", "LMScorer",
           "calibrate", "check_label_set", "label_bias", "predictions"]
