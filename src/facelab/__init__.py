"""facelab: the compute code of the executable book on face analysis.

Chapters import from the submodules (``facelab.runtime``, ``facelab.assets``, ``facelab.metrics``, ...);
nothing heavy is imported here so that ``import facelab`` stays fast.
"""

import os
import sys
from pathlib import Path

# Threads under contention. PyTorch's OpenMP worker threads spin-wait between parallel regions by default; on a small
# machine where another process is busy (a second notebook, the test suite) they steal each other's cores and
# synthetic rendering fell from ~300 to 10-36 faces/s. With the passive policy they sleep instead (276-355 faces/s).
# The OpenMP runtime reads the variable once, when torch loads it, so it has to be set here, before any facelab module
# imports torch; a value the user set (``OMP_WAIT_POLICY=ACTIVE`` for a dedicated benchmark box) is kept.
# ``facelab.runtime.omp_wait_policy()`` says whether it took effect.
TORCH_IMPORTED_BEFORE_FACELAB = "torch" in sys.modules
OMP_WAIT_POLICY_SET_BY_FACELAB = "OMP_WAIT_POLICY" not in os.environ
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

#: Root of the repository checkout (``src/facelab`` -> two levels up); data and assets live below it.
REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT / "data"
