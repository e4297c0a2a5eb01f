"""Checkable exercises for every chapter (issue 24): ``facelab.exercises.check("03.2", answer)``.

In a notebook::

    from facelab import exercises
    answer = 0.31                      # your answer
    exercises.check("03.2", answer)    # -> [right] / [close] ... how far off / [wrong] ... + hint / [invalid answer] ...

``check`` never raises: it returns a :class:`Result` (printed in the notebook, truthy when right) whose ``status`` is
"correct", "close", "wrong", "unanswered" (the answer is still ``...`` or None), "invalid" (wrong type or shape; the
message says what was expected), "unknown" (no such id; the message lists the chapter's ids) or "error" (the check
itself could not run). ``hint(id, level)`` gives hints, ``solution(id)`` the reference solution's source (folded in
the book), ``statement(id)`` the statement, ``ids(chapter)`` the ids.

Each chapter registers its exercises in ``facelab.exercises.chNN`` with the :func:`exercise` decorator on the
reference solution; checkers come from :mod:`facelab.exercises.checks` (``number``, ``choice``, ``items``,
``array``, ``function``). ``python -m facelab.exercises cells NN`` writes the chapter's exercise cells into its
notebook; ``python -m facelab.exercises handout|grade`` serve ``make lab-handout`` / ``make lab-grade``.

This is the top layer of the package: it may import the studies and everything below; nothing imports it.
"""

from facelab.exercises._core import (LOG_ENV, Exercise, Result, chapters, check, exercise, get, hint, ids,
                                     run_reference, solution, statement)
from facelab.exercises.checks import Outcome, array, choice, function, items, lazy, number

__all__ = ["check", "hint", "solution", "statement", "ids", "chapters", "get", "run_reference", "exercise",
           "Exercise", "Result", "Outcome", "number", "choice", "items", "array", "function", "lazy", "LOG_ENV"]
