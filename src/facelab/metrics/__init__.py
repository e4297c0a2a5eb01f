"""Evaluation metrics shared by the chapters.

- :mod:`facelab.metrics.verification`: ROC, AUC, EER, TAR@FAR, FNMR@FMR, DET, rank-k, CMC, open-set DIR@FAR.
- :mod:`facelab.metrics.pad`: presentation-attack detection (ISO/IEC 30107-3): APCER, BPCER, ACER.
- :mod:`facelab.metrics.classification`: UF1, UAR and other class-balanced scores.
- :mod:`facelab.metrics.intervals`: Wilson and bootstrap confidence intervals, McNemar and paired-bootstrap tests,
  table cells such as ``"0.73 [0.61, 0.83]"``.
- :mod:`facelab.metrics.abaw`: the ABAW affect metrics: expression macro-F1, CCC and the valence-arousal score,
  mimicry mean Pearson, ambivalence/hesitancy F1.

Everything public in the submodules is re-exported here, so ``from facelab.metrics import roc_curve`` works.
"""

from facelab.metrics.verification import *  # noqa: F401,F403
from facelab.metrics.pad import *  # noqa: F401,F403
from facelab.metrics.classification import *  # noqa: F401,F403
from facelab.metrics.intervals import *  # noqa: F401,F403
from facelab.metrics.abaw import *  # noqa: F401,F403
