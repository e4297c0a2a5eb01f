"""Command line of the exercises (used by ``make lab-handout`` and ``make lab-grade``).

    python -m facelab.exercises list [NN]                 the exercises and their statements
    python -m facelab.exercises cells NN [NN ...]         (re)write the exercise cells of these chapters' notebooks
    python -m facelab.exercises handout DEST [NN ...]     copy the source notebooks (no outputs) into DEST
    python -m facelab.exercises grade DIR [--profile quick] [--timeout 1800]
        execute every DIR/<student>/NN_slug.ipynb (or DIR/NN_slug.ipynb) with papermill, parameters PROFILE and SEED,
        collect each check's result and write DIR/grades.csv (one row per student, notebook and exercise)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
from pathlib import Path

from facelab import REPO_ROOT


def _list(chapter: str | None) -> int:
    from facelab import exercises

    for key in exercises.ids(chapter):
        ex = exercises.get(key)
        print(f"{key}  [{ex.kind}]  {ex.title}\n      answer: {ex.answer}")
    return 0


def _handout(dest: Path, chapters: list[str]) -> int:
    import nbformat

    src = REPO_ROOT / "notebooks"
    dest.mkdir(parents=True, exist_ok=True)
    picked = sorted(p for p in src.glob("[0-9][0-9]_*.ipynb") if not chapters or p.name[:2] in chapters)
    if not picked:
        print(f"no notebook in {src} matches chapters {chapters}", file=sys.stderr)
        return 1
    for p in picked:
        nb = nbformat.read(p, as_version=4)
        for c in nb.cells:
            if c.cell_type == "code":
                c.outputs, c.execution_count = [], None
        nbformat.write(nb, dest / p.name)
        print(f"handed out {dest / p.name}")
    print(f"Students open them with `make lab` (kernel 'Python 3 (facelab)') and hand back the folder; "
          f"`make lab-grade SUBMISSIONS=<folder of student folders>` grades them.")
    return 0


def _grade(folder: Path, profile: str, seed: int, timeout: int) -> int:
    import papermill

    rows = []
    notebooks = sorted(folder.glob("*/[0-9][0-9]_*.ipynb")) + sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        print(f"no NN_slug.ipynb notebooks in {folder} or its sub-folders", file=sys.stderr)
        return 1
    cwd = REPO_ROOT / "notebooks"  # chapters run from notebooks/, as in the book build
    for nb in notebooks:
        student = nb.parent.name if nb.parent != folder else "-"
        with tempfile.TemporaryDirectory(prefix="facelab-grade-") as tmp:
            log = Path(tmp) / "checks.jsonl"
            os.environ["FACELAB_EXERCISE_LOG"] = str(log)
            error = ""
            try:
                papermill.execute_notebook(str(nb), str(Path(tmp) / nb.name), kernel_name="python3",
                                           parameters={"PROFILE": profile, "SEED": seed}, cwd=str(cwd),
                                           execution_timeout=timeout, progress_bar=False)
            except Exception as err:  # a student's notebook that fails is graded on the checks it reached
                error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
            finally:
                os.environ.pop("FACELAB_EXERCISE_LOG", None)
            results = {}
            if log.exists():
                for line in log.read_text().splitlines():
                    r = json.loads(line)
                    results[r["exercise"]] = r  # the last check of an exercise counts
        for key, r in sorted(results.items()):
            rows.append({"student": student, "notebook": nb.name, "exercise": key, "status": r["status"],
                         "score": r["score"], "message": r["message"], "notebook_error": error})
        if not results:
            rows.append({"student": student, "notebook": nb.name, "exercise": "", "status": "no checks",
                         "score": 0.0, "message": "", "notebook_error": error})
        total = sum(r["score"] for r in results.values())
        print(f"{student:>16}  {nb.name}: {total:g} / {len(results)} exercises{'  (' + error + ')' if error else ''}")
    out = folder / "grades.csv"
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m facelab.exercises", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("list")
    p.add_argument("chapter", nargs="?")
    p = sub.add_parser("cells")
    p.add_argument("chapters", nargs="+")
    p = sub.add_parser("handout")
    p.add_argument("dest", type=Path)
    p.add_argument("chapters", nargs="*")
    p = sub.add_parser("grade")
    p.add_argument("folder", type=Path)
    p.add_argument("--profile", default="quick")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    a = ap.parse_args(argv)
    if a.cmd == "list":
        return _list(a.chapter)
    if a.cmd == "cells":
        from facelab.exercises.cells import update_notebook

        for c in a.chapters:
            print(f"updated {update_notebook(c)}")
        return 0
    if a.cmd == "handout":
        return _handout(a.dest, [c.zfill(2) for c in a.chapters])
    if not a.folder.is_dir():
        print(f"{a.folder} is not a folder of submissions", file=sys.stderr)
        return 1
    return _grade(a.folder, a.profile, a.seed, a.timeout)


if __name__ == "__main__":
    raise SystemExit(main())
