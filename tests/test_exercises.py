"""facelab.exercises: the framework (results, bad input, notebook cells) and every reference solution of the
chapters 00-06, 11 and 12 (chapters 07-10 test theirs in tests/test_exercises_chNN.py)."""

import json

import nbformat
import numpy as np
import pytest

from facelab import exercises
from facelab.exercises import cells, checks

CHAPTERS = exercises.chapters()   # every chapter with an exercise module (facelab/exercises/chNN.py)
ALL_IDS = [k for c in CHAPTERS for k in exercises.ids(c)]


def test_every_chapter_module_has_three_to_six_exercises():
    for c in exercises.chapters():
        n = len(exercises.ids(c))
        assert 3 <= n <= 6, f"chapter {c} has {n} exercises"
        for k in exercises.ids(c):
            ex = exercises.get(k)
            assert ex.statement and ex.answer and ex.hints and ex.kind in ("predict", "compute", "implement")
            assert "answer" in exercises.solution(k) and f'exercises.check("{k}", answer)' in exercises.solution(k)


@pytest.mark.parametrize("key", ALL_IDS)
def test_reference_solution_passes(key):
    result = exercises.run_reference(key)
    assert result.status == "correct", str(result)
    assert result and result.score == 1.0


@pytest.mark.parametrize("key", ALL_IDS)
def test_typical_wrong_answers_fail_with_a_hint(key):
    ex = exercises.get(key)
    assert ex.wrong, f"{key} lists no typical wrong answer"
    for answer in ex.wrong:
        result = exercises.check(key, answer)
        assert result.status in ("wrong", "close", "invalid"), f"{key}: {answer!r} -> {result}"
        assert not result
        if result.status in ("wrong", "close"):
            assert result.hint == ex.hints[0]


@pytest.mark.parametrize("key", ALL_IDS)
def test_bad_input_is_a_clear_message_not_a_traceback(key):
    for bad in ["not an answer", {"a": 1}, object()]:
        result = exercises.check(key, bad)
        assert result.status == "invalid", f"{key}: {bad!r} -> {result}"
        assert "expected" in result.message and exercises.get(key).answer in result.message


@pytest.mark.parametrize("placeholder", [..., None])
def test_placeholder_is_not_answered_yet(placeholder):
    result = exercises.check("00.1", placeholder)
    assert result.status == "unanswered" and "not answered yet" in str(result) and not result


@pytest.mark.parametrize("bad_id, says", [("00.99", "00.1, 00.2"), ("3.1", "like '03.2'"), (3.1, "like '03.2'"),
                                          (None, "like '03.2'"), ("98.1", "chapters with exercises")])
def test_unknown_exercise_id_lists_what_exists(bad_id, says):
    result = exercises.check(bad_id, 1.0)
    assert result.status == "unknown" and says in result.message
    assert exercises.hint(bad_id).startswith("there is no") or "like '03.2'" in exercises.hint(bad_id)
    assert exercises.solution(bad_id).startswith("# ")
    with pytest.raises(KeyError):
        exercises.get(bad_id)


def test_number_checker_says_how_far_off_and_which_way():
    check = checks.number(lambda: 0.5, atol=0.01)
    assert check(0.505).status == "correct"
    out = check(0.52)
    assert out.status == "close" and "too high" in out.message and abs(out.distance - 0.02) < 1e-12
    assert check(0.3).status == "wrong" and "too low" in check(0.3).message
    assert check(np.float32(0.5)).status == "correct" and check(np.array([0.5])).status == "correct"
    for bad in [True, "0.5", [0.5, 0.6], float("nan")]:
        assert check(bad).status == "invalid"


def test_array_items_and_function_checkers():
    arr = checks.array(np.arange(6.0).reshape(2, 3), atol=0.1)
    assert arr(np.arange(6.0).reshape(2, 3) + 0.05).status == "correct"
    assert "shape (2, 3)" in arr(np.zeros(6)).message and arr(np.zeros(6)).status == "invalid"
    assert arr(np.arange(6.0).reshape(2, 3) + 0.2).status == "close"
    it = checks.items(["a", "b"], options=["a", "b", "c"])
    assert it({"B", " a"}).status == "correct" and it(["a"]).status == "close"
    assert it(["z"]).status == "invalid" and it("ab").status == "invalid"
    fn = checks.function(lambda x: 2 * x, [(1.0,), (2.0,), (np.arange(3.0),)])
    assert fn(lambda x: x + x).status == "correct"
    out = fn(lambda x: 1 / 0)
    assert out.status == "wrong" and "ZeroDivisionError" in out.message
    assert fn(3).status == "invalid"

    def in_place(x):
        x *= 0  # spoils its input: the hidden cases must survive it
        return x

    assert fn(in_place).status == "wrong" and fn(lambda x: 2 * x).status == "correct"


def test_a_failing_check_is_reported_not_raised(monkeypatch):
    from facelab.exercises import _core

    monkeypatch.setattr(_core, "_REGISTRY", dict(_core._REGISTRY))
    @exercises.exercise("97.1", title="t", statement="s", answer="a number", hints=["h"],
                        check=checks.number(lambda: 1 / 0, atol=1))
    def broken():
        return 1.0

    result = exercises.check("97.1", 1.0)
    assert result.status == "error" and "ZeroDivisionError" in result.message


def test_checks_are_logged_for_grading(tmp_path, monkeypatch):
    log = tmp_path / "log.jsonl"
    monkeypatch.setenv(exercises.LOG_ENV, str(log))
    exercises.check("00.4", ["threshold slider", "FAR/FRR table"])
    exercises.check("00.4", ...)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["status"] for r in rows] == ["correct", "unanswered"] and rows[0]["score"] == 1.0


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_notebook_exercise_cells_match_the_registry(chapter):
    nb = nbformat.read(cells.notebook_path(chapter), as_version=4)
    text = [c.source for c in nb.cells]
    summary = next(i for i, s in enumerate(text) if "## Summary" in s)
    heading = next(i for i, s in enumerate(text) if s.startswith("## Exercises"))
    assert summary < heading
    generated = [c.source for c in nb.cells if cells._generated(c)]
    assert generated == [c.source for c in cells.exercise_cells(chapter)], \
        f"run `python -m facelab.exercises cells {chapter}` to refresh the notebook"
    for k in exercises.ids(chapter):
        assert any(f'exercises.check("{k}", answer)' in s and s.startswith("answer = ...") for s in text)
        assert any(s.startswith(f":::{{dropdown}} Reference solution {k}") for s in text)


def test_update_notebook_is_idempotent_and_keeps_other_cells(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# T"),
                nbformat.v4.new_markdown_cell("## Summary\n\n- s\n\n## Exercises\n\n1. old\n\n## References\n\nr")]
    path = tmp_path / "00_x.ipynb"
    nbformat.write(nb, path)
    cells.update_notebook("00", path)
    first = nbformat.read(path, as_version=4)
    cells.update_notebook("00", path)
    second = nbformat.read(path, as_version=4)
    assert [c.source for c in first.cells] == [c.source for c in second.cells]
    src = [c.source for c in second.cells]
    assert src[1].startswith("## Summary") and "## Exercises" not in src[1]
    assert src[2].startswith("## Exercises") and any("1. old" in s for s in src) and src[-1].startswith("## References")


def test_handout_copies_notebooks_without_outputs(tmp_path):
    from facelab.exercises.__main__ import main

    assert main(["handout", str(tmp_path / "out"), "00"]) == 0
    out = list((tmp_path / "out").glob("*.ipynb"))
    assert [p.name for p in out] == ["00_getting_started.ipynb"]
    nb = nbformat.read(out[0], as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
    assert main(["handout", str(tmp_path / "none"), "99"]) == 1


def test_grade_executes_submissions_and_writes_a_csv(tmp_path):
    import csv

    from facelab.exercises.__main__ import main

    def submission(student, answers):
        nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                               "language": "python"}})
        nb.cells = [nbformat.v4.new_code_cell('PROFILE = "quick"\nDEVICE = "auto"\nSEED = 0',
                                              metadata={"tags": ["parameters"]}),
                    nbformat.v4.new_code_cell("from facelab import exercises")]
        nb.cells += [nbformat.v4.new_code_cell(f'exercises.check("{k}", {a})') for k, a in answers.items()]
        (tmp_path / student).mkdir()
        nbformat.write(nb, tmp_path / student / "00_getting_started.ipynb")

    submission("alice", {"00.1": 0.517, "00.2": 0.5, "00.4": '["threshold slider", "FAR/FRR table"]'})
    submission("bob", {"00.1": "...", "00.2": "0.066"})
    assert main(["grade", str(tmp_path), "--timeout", "300"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "grades.csv")))
    got = {(r["student"], r["exercise"]): (r["status"], float(r["score"])) for r in rows}
    assert got[("alice", "00.1")] == ("correct", 1.0) and got[("alice", "00.2")][0] == "wrong"
    assert got[("alice", "00.4")] == ("correct", 1.0)
    assert got[("bob", "00.1")] == ("unanswered", 0.0) and got[("bob", "00.2")][1] == 1.0


def test_teaching_page_plans_every_chapter_and_links_those_that_exist():
    from facelab import REPO_ROOT
    from facelab.studies.getting_started import CHAPTERS

    text = (REPO_ROOT / "book" / "teaching.md").read_text()
    toc = (REPO_ROOT / "_toc.yml").read_text()
    assert "- file: book/teaching" in toc
    for chapter in CHAPTERS:
        if f"book/chapters/{chapter.slug}" in toc:
            assert f"{{doc}}`chapters/{chapter.slug}`" in text, f"teaching.md does not link {chapter.slug}"
        else:
            assert chapter.slug in text, f"teaching.md does not plan {chapter.slug}"
    for target in ("make lab HANDOUT=", "make lab GRADE=", "PROFILE", "SEED"):
        assert target in text


def test_a_broken_chapter_module_is_a_message(monkeypatch):
    from facelab.exercises import _core

    def boom(chapter):
        raise SyntaxError("invalid syntax (ch96.py, line 3)")

    monkeypatch.setattr(_core, "_load", boom)
    result = exercises.check("96.1", 1.0)
    assert result.status == "unknown" and "could not be loaded" in result.message and "SyntaxError" in result.message
