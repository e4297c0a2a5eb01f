import nbformat
import pytest

from facelab import exercises
from facelab.exercises import cells

IDS = exercises.ids("10")


def test_three_or_more():
    assert len(IDS) >= 3


@pytest.mark.parametrize("key", IDS)
def test_reference_passes(key):
    assert exercises.run_reference(key).status == "correct"


@pytest.mark.parametrize("key", IDS)
def test_wrong_answers_fail(key):
    for w in exercises.get(key).wrong:
        assert exercises.check(key, w).status in ("wrong", "close", "invalid")


@pytest.mark.parametrize("key", IDS)
def test_bad_input_is_clear(key):
    r = exercises.check(key, "not an answer")
    assert r.status == "invalid" and "expected" in r.message


def test_notebook_cells_match_registry():
    nb = nbformat.read(cells.notebook_path("10"), as_version=4)
    assert [c.source for c in nb.cells if cells._generated(c)] == [c.source for c in cells.exercise_cells("10")]
