"""Zero-shot emotion recognition by prompting language models with visual and textual cues (SoVTP, chapter 10).

Method code only: the chapter's experiments live in :mod:`facelab.studies`.
"""
