"""The "## Exercises" cells of a chapter notebook, generated from the registry (so book and package never disagree).

``python -m facelab.exercises cells 03`` rewrites the exercise cells of ``notebooks/03_*.ipynb``: after the Summary
it puts a "## Exercises" heading, ``from facelab import exercises``, and for each exercise a statement, a code cell
``answer = ...`` + ``exercises.check("03.k", answer)`` (which reports "not answered yet" when executed as is) and the
reference solution folded in a MyST dropdown. Generated cells carry ``metadata.facelab.generated == "exercises"`` and
are replaced on the next run; every other cell (the Summary, open questions, references) is kept.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

from facelab import REPO_ROOT
from facelab.exercises._core import get, ids, solution

MARK = {"facelab": {"generated": "exercises"}}
INTRO = """## Exercises

Each exercise below can be checked: replace `...` in its cell by your answer and run it. The check knows the right
answer from the ground truth of the synthetic world (or from the package's reference implementation) and says
whether you are right, how far off you are, or what kind of answer it expected; `exercises.hint("{first}")` gives a
hint, and the reference solution is folded under each exercise. Teachers: see {{doc}}`../teaching`."""


def _generated(cell) -> bool:
    return cell.get("metadata", {}).get("facelab", {}).get("generated") == "exercises"


def exercise_cells(chapter: str) -> list:
    """The generated cells for one chapter, in order (markdown and code)."""
    chapter = str(chapter).zfill(2)
    keys = ids(chapter)
    if not keys:
        raise ValueError(f"chapter {chapter} has no exercises registered (facelab.exercises.ch{chapter})")
    cells = [nbformat.v4.new_markdown_cell(INTRO.format(first=keys[0]), metadata=dict(MARK)),
             nbformat.v4.new_code_cell("from facelab import exercises", metadata=dict(MARK))]
    for key in keys:
        ex = get(key)
        cells.append(nbformat.v4.new_markdown_cell(
            f"### Exercise {ex.id}: {ex.title}\n\n{ex.statement}\n\n*Answer:* {ex.answer}.", metadata=dict(MARK)))
        cells.append(nbformat.v4.new_code_cell(
            f'answer = ...  # {ex.answer}\nexercises.check("{ex.id}", answer)', metadata=dict(MARK)))
        cells.append(nbformat.v4.new_markdown_cell(
            f":::{{dropdown}} Reference solution {ex.id}\n```python\n{solution(ex.id)}\n```\n:::",
            metadata=dict(MARK)))
    for i, cell in enumerate(cells):  # stable ids: regenerating the cells does not churn the notebook
        cell["id"] = f"exercises-{chapter}-{i:02d}"
    return cells


def notebook_path(chapter: str, folder: Path = REPO_ROOT / "notebooks") -> Path:
    found = sorted(Path(folder).glob(f"{str(chapter).zfill(2)}_*.ipynb"))
    if len(found) != 1:
        raise FileNotFoundError(f"expected one notebook {str(chapter).zfill(2)}_*.ipynb in {folder}, found {len(found)}")
    return found[0]


def update_notebook(chapter: str, path: Path | None = None, *, open_questions_title: str = "### Open questions") -> Path:
    """Replace the generated exercise cells of the chapter's notebook (see the module docstring)."""
    path = Path(path) if path else notebook_path(chapter)
    nb = nbformat.read(path, as_version=4)
    new = exercise_cells(chapter)
    at = next((i for i, c in enumerate(nb.cells) if _generated(c)), None)
    if at is not None:
        nb.cells = [c for c in nb.cells if not _generated(c)]
    else:
        # first run: split the hand-written "## Exercises" off the cell that holds it
        idx = next((i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
                    and re.search(r"^## Exercises\s*$", c.source, re.M)), None)
        if idx is None:
            summary = next((i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
                            and re.search(r"^## Summary\s*$", c.source, re.M)), None)
            if summary is None:
                raise ValueError(f"{path.name} has no '## Summary' section to put the exercises after")
            at = summary + 1
        else:
            cell = nb.cells[idx]
            before, after = re.split(r"^## Exercises\s*$", cell.source, maxsplit=1, flags=re.M)
            rest = re.split(r"^(?=## )", after, maxsplit=1, flags=re.M)
            old, tail = rest[0].strip(), (rest[1].strip() if len(rest) > 1 else "")
            cell.source = before.rstrip()
            keep = []
            if old:
                keep.append(nbformat.v4.new_markdown_cell(
                    f"{open_questions_title}\n\nThese have no automatic check; they make good lab discussions.\n\n{old}"))
            if tail:
                keep.append(nbformat.v4.new_markdown_cell(tail))
            nb.cells[idx + 1: idx + 1] = keep
            at = idx + 1
    nb.cells[at:at] = new
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return path
