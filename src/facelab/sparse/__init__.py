"""Recognition under occlusion by sparse coding: SRC, CRC, RSC, WCSC and WWCSC (chapter 03).

- :mod:`facelab.sparse.solvers`: batched ADMM in torch (Lasso / SRC, and the split-residual solver for l1, Wing and
  weighted fidelities), the Wing loss and its proximal operator, the cached factorization.
- :mod:`facelab.sparse.estimators`: scikit-learn classifiers (``SRC``, ``CRC``, ``RSC``, ``WCSC``, ``WWCSC``,
  ``NearestNeighbor``) and feature transformers (``Downsample``, ``RandomProjection``).

The chapter's occlusion protocols, tables and figures live in :mod:`facelab.studies.sparse_coding_occlusion`.
"""

from facelab.sparse.solvers import *  # noqa: F401,F403
from facelab.sparse.estimators import *  # noqa: F401,F403
