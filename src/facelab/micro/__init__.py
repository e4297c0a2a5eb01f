"""Micro-expressions meet physiology (chapter 11): a synthetic MMME-like multimodal corpus, spotting, recognition.

- :mod:`facelab.micro.corpus`: subjects x trials of face video (from :mod:`facelab.synth`) with micro- and
  macro-expressions, synchronized EEG + ECG/PPG/RSP/EDA/SKT in one :class:`mne.io.RawArray` per subject.
- :mod:`facelab.micro.physio`: the MNE / NeuroKit2 simulation and the EEG band-power and peripheral features.
- :mod:`facelab.micro.flow`: OpenCV optical flow in landmark-located facial regions.
- :mod:`facelab.micro.spotting`: MDMD and LBP chi-squared spotting, MEGC evaluation.
- :mod:`facelab.micro.recognition`: flow STN-CNN, EEG TCN, peripheral net, cross-attention and late fusion, focal
  loss, leave-one-subject-out UF1/UAR.
- :mod:`facelab.micro.loaders`: MMME layout, SAMM-LV / CAS(ME)^2 interval sheets (CASME II / SAMM episodes come from
  :mod:`facelab.datasets`).

The chapter's experiments, tables and figures live in :mod:`facelab.studies.micro_expressions_physiology`.
"""

from facelab.micro.corpus import Corpus, CorpusConfig, make_corpus, with_physiology
from facelab.micro.loaders import export_mmme, load_interval_sheet, load_mmme
from facelab.micro.recognition import MultimodalData, loso_evaluate, loso_linear
from facelab.micro.spotting import lbp_signal, mdmd_signal, megc_evaluate, spot_intervals

__all__ = ["Corpus", "CorpusConfig", "make_corpus", "with_physiology", "MultimodalData", "loso_evaluate",
           "loso_linear", "mdmd_signal", "lbp_signal", "spot_intervals", "megc_evaluate", "load_mmme",
           "load_interval_sheet", "export_mmme"]
