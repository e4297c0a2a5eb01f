"""The papermill pipeline: clear errors for malformed or failing chapters, never a half-written executed copy."""

import json

import nbformat
import pytest

from facelab import book


def make_notebook(path, cells, params=True):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    out = []
    if params:
        c = nbformat.v4.new_code_cell('PROFILE = "quick"\nDEVICE = "auto"\nSEED = 0')
        c.metadata["tags"] = ["parameters"]
        out.append(c)
    out += [nbformat.v4.new_code_cell(src) for src in cells]
    nb.cells = out
    nbformat.write(nb, path)
    return path


def test_notebook_without_parameters_cell_is_named_in_the_error(tmp_path):
    nb = make_notebook(tmp_path / "09_no_params.ipynb", ["x = 1"], params=False)
    with pytest.raises(book.ChapterError, match=r"09_no_params\.ipynb.*no cell tagged 'parameters'"):
        book.check_notebook(nb)


def test_parameters_cell_must_define_profile_device_seed(tmp_path):
    nb = make_notebook(tmp_path / "09_partial.ipynb", [], params=False)
    raw = nbformat.read(nb, as_version=4)
    c = nbformat.v4.new_code_cell("PROFILE = 'quick'")
    c.metadata["tags"] = ["parameters"]
    raw.cells = [c]
    nbformat.write(raw, nb)
    with pytest.raises(book.ChapterError, match="DEVICE, SEED"):
        book.check_notebook(nb)


def test_broken_json_is_a_clear_error(tmp_path):
    p = tmp_path / "09_broken.ipynb"
    p.write_text("{ not json")
    with pytest.raises(book.ChapterError, match="not a readable notebook"):
        book.check_notebook(p)


def test_successful_chapter_is_executed_with_injected_profile_and_hidden_parameters(tmp_path):
    src = make_notebook(tmp_path / "09_ok.ipynb", ["print('profile is', PROFILE)"])
    out_dir = tmp_path / "chapters"
    res = book.execute_chapter(src, out_dir, profile="full", cell_timeout=120)
    assert res.ok and res.seconds > 0
    executed = nbformat.read(out_dir / "09_ok.ipynb", as_version=4)
    tags = [c.metadata.get("tags", []) for c in executed.cells]
    assert any("parameters" in t and "hide-cell" in t for t in tags)
    assert any("injected-parameters" in t and "remove-cell" in t for t in tags)
    text = "".join(o.get("text", "") for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert "profile is full" in text
    assert not list(out_dir.glob(".*partial*")), "no temporary file may remain"


def test_failing_chapter_names_itself_and_leaves_nothing_behind(tmp_path):
    out_dir = tmp_path / "chapters"
    out_dir.mkdir()
    stale = out_dir / "09_fails.ipynb"
    stale.write_text("an executed copy from an earlier, successful run")
    src = make_notebook(tmp_path / "09_fails.ipynb", ["x = 1", "raise ValueError('synthetic failure for the test')"])
    with pytest.raises(book.ChapterError) as err:
        book.execute_chapter(src, out_dir, cell_timeout=120)
    msg = str(err.value)
    assert "09_fails.ipynb" in msg and "ValueError" in msg and "synthetic failure for the test" in msg
    assert "make chapter NB=09_fails" in msg
    assert not stale.exists(), "a stale executed copy must not survive a failed run"
    assert list(out_dir.iterdir()) == []


def test_timings_are_recorded_as_json(tmp_path, monkeypatch):
    monkeypatch.setattr(book, "TIMINGS_FILE", tmp_path / "timings.json")
    book._write_timings([book.ChapterResult("09_a", 1.234, True)], "quick", tmp_path / "timings.json")
    book._write_timings([book.ChapterResult("09_b", 2.0, False, "boom")], "quick", tmp_path / "timings.json")
    data = json.loads((tmp_path / "timings.json").read_text())
    assert data["chapters"]["09_a"]["seconds"] == 1.23 and data["chapters"]["09_a"]["ok"]
    assert data["chapters"]["09_b"]["ok"] is False and data["chapters"]["09_b"]["error"] == "boom"
