"""The registry of exercises, the :class:`Result` of a check, and ``check`` / ``hint`` / ``solution``."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import re
import textwrap
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from facelab.exercises.checks import Outcome

__all__ = ["Exercise", "Result", "exercise", "check", "hint", "solution", "statement", "get", "ids", "chapters",
           "run_reference", "LOG_ENV"]

#: When this environment variable names a file, every ``check`` appends one JSON line to it (``make lab-grade``).
LOG_ENV = "FACELAB_EXERCISE_LOG"
ID_RE = re.compile(r"^(?P<chapter>\d\d)\.(?P<k>\d+)$")

STATUS_MARK = {"correct": "[right]", "close": "[close]", "wrong": "[wrong]", "unanswered": "[not answered yet]",
               "invalid": "[invalid answer]", "unknown": "[unknown exercise]", "error": "[check failed]"}


@dataclass(frozen=True)
class Exercise:
    """One exercise: ``id`` "NN.k", the statement (Markdown), what the answer is, its checker, hints, and the
    reference solution (a function whose body computes ``answer``; ``solution(id)`` shows that body)."""

    id: str
    title: str
    statement: str
    answer: str
    checker: Callable[[Any], Outcome]
    hints: tuple[str, ...]
    reference: Callable[[], Any]
    wrong: tuple = ()
    kind: str = "compute"

    @property
    def chapter(self) -> str:
        return self.id[:2]


@dataclass
class Result:
    """The outcome of ``check``: printed in a notebook, truthy when right. Never an exception.

    ``status``: "correct", "close" (how far off is in the message), "wrong" (with a hint), "unanswered" (the answer is
    still ``...`` or None), "invalid" (wrong type or shape: the message says what was expected), "unknown" (no such
    exercise id) or "error" (the check itself could not run, e.g. a missing asset).
    """

    exercise: str
    status: str
    message: str
    hint: str = ""
    distance: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def correct(self) -> bool:
        return self.status == "correct"

    @property
    def score(self) -> float:
        """1 for right, 0.5 for close, 0 otherwise: what ``make lab-grade`` adds up."""
        return {"correct": 1.0, "close": 0.5}.get(self.status, 0.0)

    def __bool__(self) -> bool:
        return self.correct

    def to_dict(self) -> dict:
        return {"exercise": self.exercise, "status": self.status, "score": self.score, "message": self.message,
                "distance": self.distance}

    def __str__(self) -> str:
        text = f"{STATUS_MARK.get(self.status, self.status)} exercise {self.exercise}: {self.message}"
        if self.hint:
            text += f"\nhint: {self.hint}"
        return text

    __repr__ = __str__


_REGISTRY: dict[str, Exercise] = {}
_LOADED: set[str] = set()


def exercise(id: str, *, title: str, statement: str, answer: str, check: Callable[[Any], Outcome],
             hints: list[str] | tuple[str, ...] = (), wrong: list | tuple = (), kind: str = "compute"):
    """Decorator that registers the decorated function as the reference solution of exercise ``id``.

    The function takes no argument, computes the answer in its body and ends with ``return answer``; its body (without
    the ``def`` line, the docstring and the final return) is what :func:`solution` shows. ``wrong`` lists typical
    wrong answers (the tests check that each fails); ``kind`` is "predict", "compute" or "implement".
    """
    m = ID_RE.match(id)
    if not m:
        raise ValueError(f"exercise ids look like '03.2' (chapter, dot, number), got {id!r}")
    if not hints:
        raise ValueError(f"exercise {id} needs at least one hint")

    def register(fn: Callable[[], Any]) -> Callable[[], Any]:
        if id in _REGISTRY and _REGISTRY[id].reference.__qualname__ != fn.__qualname__:
            raise ValueError(f"exercise {id} is registered twice")
        _REGISTRY[id] = Exercise(id=id, title=title, statement=textwrap.dedent(statement).strip(), answer=answer,
                                 checker=check, hints=tuple(hints), reference=fn, wrong=tuple(wrong), kind=kind)
        return fn

    return register


def chapters() -> list[str]:
    """Chapter numbers that have an exercise module ``facelab.exercises.chNN``."""
    import facelab.exercises as pkg

    return sorted(m.name[2:] for m in pkgutil.iter_modules(pkg.__path__) if re.fullmatch(r"ch\d\d", m.name))


def _load(chapter: str) -> None:
    if chapter not in _LOADED:
        if chapter in chapters():
            importlib.import_module(f"facelab.exercises.ch{chapter}")
        _LOADED.add(chapter)


def ids(chapter: str | None = None) -> list[str]:
    """All exercise ids, or those of one chapter ("03"), in order."""
    for c in ([chapter] if chapter else chapters()):
        _load(str(c).zfill(2))
    keys = [k for k in _REGISTRY if chapter is None or k.startswith(f"{str(chapter).zfill(2)}.")]
    return sorted(keys, key=lambda k: (k[:2], int(k.split(".")[1])))


def _lookup(exercise_id: Any) -> tuple[Exercise | None, str]:
    if not isinstance(exercise_id, str) or not ID_RE.match(exercise_id.strip()):
        return None, (f"exercise ids are strings like '03.2' (chapter, dot, number), got "
                      f"{exercise_id!r}")
    exercise_id = exercise_id.strip()
    try:
        _load(exercise_id[:2])
    except Exception as err:  # a broken chapter module: say so instead of a traceback in the student's notebook
        return None, (f"the exercises of chapter {exercise_id[:2]} could not be loaded "
                      f"({type(err).__name__}: {err})")
    if exercise_id in _REGISTRY:
        return _REGISTRY[exercise_id], ""
    msg = f"there is no exercise {exercise_id!r}"
    if ids(exercise_id[:2]):
        msg += f"; chapter {exercise_id[:2]} has {', '.join(ids(exercise_id[:2]))}"
    else:
        msg += f"; chapters with exercises: {', '.join(chapters())}"
    return None, msg


def get(exercise_id: str) -> Exercise:
    """The :class:`Exercise` with this id (a ``KeyError`` with the known ids when there is none)."""
    ex, msg = _lookup(exercise_id)
    if ex is None:
        raise KeyError(msg)
    return ex


def _log(result: Result) -> None:
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({**result.to_dict(), "time": time.time()}) + "\n")
    except OSError:
        pass  # grading is best effort; a student's check must never fail because of the log


def _is_placeholder(answer: Any) -> bool:
    return answer is None or answer is Ellipsis


def check(exercise_id: str, answer: Any = Ellipsis) -> Result:
    """Check ``answer`` to exercise ``exercise_id``: returns a :class:`Result` (shown in a notebook), never raises.

    ``...`` or ``None`` means "not answered yet" (so a handed-out notebook runs from top to bottom).
    A wrong answer comes with the exercise's first hint, a close one with how far off it is.
    """
    ex, msg = _lookup(exercise_id)
    if ex is None:
        result = Result(str(exercise_id), "unknown", msg)
    elif _is_placeholder(answer):
        result = Result(ex.id, "unanswered", f"not answered yet: replace `...` with {ex.answer}")
    else:
        try:
            out = ex.checker(answer)
            result = Result(ex.id, out.status, out.message, distance=out.distance)
        except Exception as err:  # the check itself failed (a missing asset, a bug): say so, no traceback
            result = Result(ex.id, "error", f"the check could not run ({type(err).__name__}: {err}); "
                                            f"the answer expected is {ex.answer}")
        if result.status in ("wrong", "close"):
            result.hint = ex.hints[0]
        elif result.status == "invalid":
            result.message += f"; the answer expected is {ex.answer}"
    _log(result)
    return result


def hint(exercise_id: str, level: int = 1) -> str:
    """The ``level``-th hint (1 = the gentlest); the last one when ``level`` is larger than their number."""
    ex, msg = _lookup(exercise_id)
    if ex is None:
        return msg
    return ex.hints[max(0, min(int(level), len(ex.hints)) - 1)]


def statement(exercise_id: str) -> str:
    ex, msg = _lookup(exercise_id)
    return msg if ex is None else f"**{ex.id} {ex.title}.** {ex.statement}\n\nAnswer: {ex.answer}."


def _body_source(fn: Callable) -> str:
    src = textwrap.dedent(inspect.getsource(fn))
    tree_lines = src.splitlines()
    # drop decorators and the def line (which may span several lines)
    import ast

    node = ast.parse(src).body[0]
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]  # the docstring
    if body and isinstance(body[-1], ast.Return):
        ret = body[-1]
        body = body[:-1]
        tail = ast.get_source_segment(src, ret.value) if ret.value is not None else None
    else:
        tail = None
    if not body:
        code = ""
    else:
        code = "\n".join(tree_lines[body[0].lineno - 1: body[-1].end_lineno])
    code = textwrap.dedent(code)
    if tail and tail != "answer":
        code += f"\nanswer = {tail}"
    return code.strip()


def solution(exercise_id: str) -> str:
    """The reference solution's source: code that computes ``answer`` and checks it (for the book's dropdown)."""
    ex, msg = _lookup(exercise_id)
    if ex is None:
        return f"# {msg}"
    return f'{_body_source(ex.reference)}\nexercises.check("{ex.id}", answer)'


def run_reference(exercise_id: str) -> Result:
    """Run the reference solution and check its answer (what the tests do for every exercise)."""
    ex = get(exercise_id)
    return check(ex.id, ex.reference())
