"""The package's layering (issue #14), checked with import-linter's `lint-imports` (contracts in pyproject.toml).

runtime/assets/checkpoints -> core -> models/metrics -> recognition/synth/datasets/diffusion -> method packages
(independent of each other) -> studies; the book tooling (book.py, sitecheck.py) sits apart from the science code.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from facelab import REPO_ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint(contract: str) -> tuple[int, str]:
    if not LINT_IMPORTS.exists():
        pytest.fail(f"{LINT_IMPORTS} is missing: install the test dependencies (pip install -r requirements.txt)")
    out = subprocess.run([str(LINT_IMPORTS), "--no-logo", "--no-cache", "--contract", contract],
                         cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    return out.returncode, out.stdout + out.stderr


def violations(report: str) -> set[str]:
    """The direct imports behind each broken contract (``- a.b -> c.d (l.12)`` lines of the report)."""
    return {f"{a} -> {b}" for a, b in re.findall(r"^-\s+(facelab[\w.]*) -> (facelab[\w.]*)", report, re.M)}


def test_violation_parser():
    report = "facelab.synth is not allowed to import facelab.studies:\n\n- facelab.synth.calibration -> " \
             "facelab.studies.face_recognition (l.170)\n"
    assert violations(report) == {"facelab.synth.calibration -> facelab.studies.face_recognition"}


@pytest.mark.parametrize("contract", ["science-without-book-tooling", "book-tooling-without-science"])
def test_book_tooling_is_apart_from_the_science_code(contract):
    rc, report = lint(contract)
    assert rc == 0, report


def test_layers():
    rc, report = lint("layers")
    assert rc == 0, "imports that break the layering (see pyproject.toml [tool.importlinter]):\n  " + \
        "\n  ".join(sorted(violations(report))) + f"\n\nfull report:\n{report}"
