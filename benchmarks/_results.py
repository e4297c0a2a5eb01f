"""Where the benchmarks write their results: ``_build/benchmarks/<name>.json``, atomically."""

from __future__ import annotations

from pathlib import Path

from facelab import REPO_ROOT
from facelab.files import atomic_write_json


def write_result(name: str, result) -> Path:
    """Write ``result`` (JSON-serialisable) to ``_build/benchmarks/<name>.json`` and say where."""
    out = REPO_ROOT / "_build" / "benchmarks" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result, indent=2)
    print(f"wrote {out.relative_to(REPO_ROOT)}")
    return out
