"""One study module per chapter: the chapter's protocol, tables and figures.

A study module is named after its notebook's slug (``notebooks/01_face_recognition.ipynb`` ->
:mod:`facelab.studies.face_recognition`). Studies import the method packages; method packages never import a study.
Plot functions share one signature: ``plot_x(..., ax=None) -> matplotlib.figure.Figure``.
"""
