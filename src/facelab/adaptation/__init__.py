"""Adapting an expression model to a new person or a new stream without their labels.

- :mod:`facelab.adaptation.source_free`: DSFDA (chapter 08), personalising from one neutral video.
- :mod:`facelab.adaptation.test_time`: test-time adaptation (TENT, EATA, SAR, TempT, FIESTA; chapter 09).

Method code only: the chapters' experiments live in :mod:`facelab.studies`.
"""
