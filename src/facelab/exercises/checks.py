"""Answer checkers: each factory returns a function ``answer -> Outcome``.

A checker never raises on a student's answer: a value of the wrong type or shape is an ``invalid`` outcome whose
message says what was expected. Expected values are given as a value or as a function of no argument (computed on
first use and cached, so importing a chapter's exercises costs nothing and a placeholder answer computes nothing).

- :func:`number`: a real number within a tolerance; reports how far off and in which direction.
- :func:`choice`: one of a fixed set of words (case and surrounding blanks ignored).
- :func:`items`: a set of items (order ignored); reports how many are missing and how many are extra.
- :func:`array`: an array of a given shape, compared elementwise within a tolerance.
- :func:`function`: a callable, run on hidden cases and compared with the package's reference implementation.
"""

from __future__ import annotations

import copy
import functools
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

__all__ = ["Outcome", "lazy", "number", "choice", "items", "array", "function", "describe_type"]


@dataclass(frozen=True)
class Outcome:
    """What a checker decided: ``status`` is "correct", "close", "wrong" or "invalid"."""

    status: str
    message: str
    distance: float | None = None


def lazy(value):
    """A cached thunk for ``value`` when it is callable (computed once, on first use), else the value itself."""
    if callable(value):
        return functools.cache(value)
    return lambda: value


def describe_type(answer: Any) -> str:
    if isinstance(answer, (bool, np.bool_)):
        return f"the value {bool(answer)}"
    if isinstance(answer, np.generic):
        return f"the number {answer.item()!r}"
    if isinstance(answer, numbers.Number):
        return f"the number {answer!r}"
    if isinstance(answer, np.ndarray):
        return f"an array of shape {answer.shape}"
    if hasattr(answer, "shape") and hasattr(answer, "dtype"):
        return f"a {type(answer).__name__} of shape {tuple(answer.shape)}"
    if isinstance(answer, str):
        return f"the text {answer!r}"
    if isinstance(answer, (list, tuple, set, frozenset)):
        return f"a {type(answer).__name__} of {len(answer)} items"
    return f"a {type(answer).__name__}"


def as_number(answer: Any) -> float | None:
    """A float from an int, float, NumPy scalar, or one-element array/tensor; None for anything else (bool too)."""
    if isinstance(answer, (bool, np.bool_)):
        return None
    if isinstance(answer, numbers.Real):
        return float(answer)
    if hasattr(answer, "detach"):  # a torch tensor
        answer = answer.detach().cpu().numpy()
    if isinstance(answer, np.ndarray) and answer.size == 1 and np.issubdtype(answer.dtype, np.number) \
            and not np.issubdtype(answer.dtype, np.complexfloating):
        return float(answer.reshape(()))
    return None


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def number(expected, *, atol: float | None = None, rtol: float | None = None, close: float = 3.0,
           unit: str = "", example: str = "0.25") -> Callable[[Any], Outcome]:
    """Correct when ``|answer - expected| <= atol + rtol * |expected|``; "close" within ``close`` times that."""
    if atol is None and rtol is None:
        rtol = 1e-6
    atol, rtol = atol or 0.0, rtol or 0.0
    truth = lazy(expected)
    unit = f" {unit}" if unit else ""

    def check(answer) -> Outcome:
        x = as_number(answer)
        if x is None:
            return Outcome("invalid", f"expected a number (e.g. {example}), got {describe_type(answer)}")
        if not math.isfinite(x):
            return Outcome("invalid", f"expected a finite number, got {x}")
        y = float(truth())
        tol = atol + rtol * abs(y)
        err = x - y
        if abs(err) <= tol:
            return Outcome("correct", f"{_fmt(x)}{unit} is right (within {_fmt(tol)}{unit} of the expected value)",
                           abs(err))
        direction = "too high" if err > 0 else "too low"
        if abs(err) <= close * tol:
            return Outcome("close", f"close: {_fmt(x)}{unit} is {_fmt(abs(err))}{unit} {direction}; "
                                    f"the tolerance is {_fmt(tol)}{unit}", abs(err))
        return Outcome("wrong", f"{_fmt(x)}{unit} is {direction} by {_fmt(abs(err))}{unit} "
                                f"(tolerance {_fmt(tol)}{unit})", abs(err))

    return check


def _norm(word: Any) -> Any:
    return " ".join(word.lower().split()) if isinstance(word, str) else word


def choice(expected, options: Sequence) -> Callable[[Any], Outcome]:
    """One of ``options`` (strings compared without case and extra blanks)."""
    opts = {_norm(o): o for o in options}
    truth = lazy(expected)

    def check(answer) -> Outcome:
        if not isinstance(answer, (str, numbers.Number)) or _norm(answer) not in opts:
            listed = ", ".join(repr(o) for o in options)
            return Outcome("invalid", f"expected one of {listed}, got {describe_type(answer)}")
        if _norm(answer) == _norm(truth()):
            return Outcome("correct", f"{answer!r} is right")
        return Outcome("wrong", f"{answer!r} is not the answer")

    return check


def items(expected, *, options: Iterable | None = None) -> Callable[[Any], Outcome]:
    """A collection of items, order and duplicates ignored (a list, tuple or set; strings compared without case)."""
    truth = lazy(expected)
    valid = None if options is None else {_norm(o) for o in options}

    def check(answer) -> Outcome:
        if isinstance(answer, (str, bytes)) or not isinstance(answer, Iterable) or isinstance(answer, dict):
            return Outcome("invalid", f"expected a list or set of items (e.g. ['a', 'b']), got {describe_type(answer)}")
        try:
            got = {_norm(a.item() if isinstance(a, np.generic) else a) for a in answer}
        except TypeError:
            return Outcome("invalid", "expected a list or set of simple items (words or numbers)")
        if valid is not None and not got <= valid:
            bad = ", ".join(sorted(map(repr, got - valid)))
            return Outcome("invalid", f"{bad} {'is' if len(got - valid) == 1 else 'are'} not among the possible "
                                      f"items: {', '.join(sorted(map(repr, valid)))}")
        want = {_norm(a) for a in truth()}
        missing, extra = want - got, got - want
        if not missing and not extra:
            return Outcome("correct", f"all {len(want)} items are right", 0.0)
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing")
        if extra:
            parts.append(f"{len(extra)} that should not be there")
        status = "close" if len(missing) + len(extra) == 1 else "wrong"
        return Outcome(status, f"{len(got & want)} of {len(want)} right, " + " and ".join(parts),
                       float(len(missing) + len(extra)))

    return check


def as_array(answer: Any) -> np.ndarray | None:
    if hasattr(answer, "detach"):
        answer = answer.detach().cpu().numpy()
    if isinstance(answer, (str, bytes, dict)) or answer is None:
        return None
    try:
        arr = np.asarray(answer, dtype=float)
    except (TypeError, ValueError):
        return None
    return arr


def array(expected, *, atol: float = 1e-6, rtol: float = 0.0, close: float = 3.0) -> Callable[[Any], Outcome]:
    """An array (NumPy, torch or nested lists) of the expected shape, equal within ``atol + rtol * |expected|``."""
    truth = lazy(expected)

    def check(answer) -> Outcome:
        got = as_array(answer)
        want = np.asarray(truth(), dtype=float)
        if got is None:
            return Outcome("invalid", f"expected an array of shape {want.shape}, got {describe_type(answer)}")
        if got.shape != want.shape:
            return Outcome("invalid", f"expected an array of shape {want.shape}, got shape {got.shape}")
        if not np.all(np.isfinite(got)):
            return Outcome("invalid", "the array contains NaN or infinite values")
        err = np.abs(got - want)
        tol = atol + rtol * np.abs(want)
        bad = int((err > tol).sum())
        worst = float(err.max()) if err.size else 0.0
        if bad == 0:
            return Outcome("correct", f"all {want.size} values are right (largest error {_fmt(worst)})", worst)
        status = "close" if np.all(err <= close * tol) else "wrong"
        return Outcome(status, f"{bad} of {want.size} values are off (largest error {_fmt(worst)}, "
                               f"tolerance {_fmt(float(np.max(tol)))})", worst)

    return check


def function(reference: Callable, cases, *, compare: Callable[[Any, Any], bool] | None = None,
             signature: str = "f(x)") -> Callable[[Any], Outcome]:
    """A callable, run on hidden ``cases`` and compared with ``reference`` on each.

    ``cases`` is a list of argument tuples, or a function of no argument returning one (built on first use).
    ``compare(got, want)`` decides whether one output is right (default: arrays equal within 1e-5 relative).
    """
    build = lazy(cases)

    def default_compare(got, want) -> bool:
        g, w = as_array(got), np.asarray(want.detach().cpu().numpy() if hasattr(want, "detach") else want, float)
        return g is not None and g.shape == w.shape and bool(np.allclose(g, w, rtol=1e-5, atol=1e-6))

    same = compare or default_compare

    def check(answer) -> Outcome:
        if not callable(answer):
            return Outcome("invalid", f"expected a function {signature}, got {describe_type(answer)}")
        all_cases = build()
        passed = 0
        first_fail = None
        for i, args in enumerate(all_cases, 1):
            args = args if isinstance(args, tuple) else (args,)
            want = reference(*copy.deepcopy(args))
            try:
                got = answer(*copy.deepcopy(args))  # a function that changes its inputs cannot spoil the cases
            except Exception as err:  # the student's code: report, never propagate
                first_fail = first_fail or f"hidden case {i} raised {type(err).__name__}: {err}"
                continue
            try:
                ok = same(got, want)
            except Exception:
                ok = False
            if ok:
                passed += 1
            else:
                first_fail = first_fail or f"hidden case {i} gave {describe_type(got)} that is not the expected output"
        n = len(all_cases)
        if passed == n:
            return Outcome("correct", f"passed all {n} hidden cases", 0.0)
        status = "close" if passed >= n - 1 and n > 2 else "wrong"
        return Outcome(status, f"passed {passed} of {n} hidden cases; {first_fail}", float(n - passed))

    return check
