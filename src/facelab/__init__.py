"""facelab: the compute code of the executable book on face analysis.

Chapters import from the submodules (``facelab.runtime``, ``facelab.assets``, ``facelab.metrics``, ...);
nothing heavy is imported here so that ``import facelab`` stays fast.
"""

from pathlib import Path

__version__ = "0.1.0"

#: Root of the repository checkout (``src/facelab`` -> two levels up); data and assets live below it.
REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT / "data"
