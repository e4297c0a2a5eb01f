"""Issue #25 item 4: a killed chapter run must not break the next build (partial and stale files are removed, and
the book ignores hidden files at any depth). Cheap checks: the exclude configuration through Sphinx's own file
matcher, and the clean-up function; no kernel, no book build."""

import os
import subprocess
import sys

import nbformat
import pytest
import yaml
from sphinx.util.matching import get_matching_files

from facelab import REPO_ROOT, book


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid  # finished and reaped: no such process now (pids are not reused this quickly)


def test_book_excludes_hidden_files_at_any_depth(tmp_path):
    patterns = yaml.safe_load((REPO_ROOT / "_config.yml").read_text())["exclude_patterns"]
    assert "**/.*" in patterns
    chapters = tmp_path / "book" / "chapters"
    (chapters / ".ipynb_checkpoints").mkdir(parents=True)
    for name in ("00_x.ipynb", ".00_x.partial.ipynb", ".00_x.4242.partial.ipynb",
                 ".ipynb_checkpoints/00_x-checkpoint.ipynb"):
        (chapters / name).write_text("{}")
    (tmp_path / ".hidden.md").write_text("")
    (tmp_path / "intro.md").write_text("")
    found = set(get_matching_files(tmp_path, exclude_patterns=patterns))
    assert found == {"book/chapters/00_x.ipynb", "intro.md"}


def test_remove_stale_files_keeps_live_work(tmp_path):
    live = book.partial_path(tmp_path, "01_y")  # this process is alive: a run in progress
    dead = tmp_path / f".02_z.{_dead_pid()}.partial.ipynb"
    legacy = tmp_path / ".00_x.partial.ipynb"  # what a SIGKILL left before partial files carried a pid
    kept = [tmp_path / "00_x.ipynb", tmp_path / "01_y.ipynb", tmp_path / "notes.txt", live]
    orphan = tmp_path / "07_renamed.ipynb"
    for p in [dead, legacy, orphan, *kept]:
        p.write_text("{}")
    removed = book.remove_stale_files(tmp_path, sources={"00_x", "01_y"})
    assert set(removed) == {dead, legacy, orphan}
    assert all(p.exists() for p in kept)
    assert book.remove_stale_files(tmp_path / "missing") == []


def test_rerunning_a_chapter_removes_its_old_copy_first(tmp_path, monkeypatch):
    src = tmp_path / "09_ok.ipynb"
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell('PROFILE = "quick"\nDEVICE = "auto"\nSEED = 0')
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, src)
    out = tmp_path / "chapters"
    out.mkdir()
    (out / "09_ok.ipynb").write_text("stale executed copy")
    (out / ".09_ok.partial.ipynb").write_text("left by a killed run")
    seen = {}

    def fake_execute(source, output, **kwargs):  # stands in for papermill: no kernel needed
        seen["files"] = sorted(p.name for p in out.iterdir())
        seen["output"] = output
        nbformat.write(nbformat.read(source, as_version=4), output)

    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    book.execute_chapter(src, out)
    assert seen["files"] == [], "the stale copy and the dead partial must be gone before the chapter runs"
    assert seen["output"].endswith(f".09_ok.{os.getpid()}.partial.ipynb")
    assert sorted(p.name for p in out.iterdir()) == ["09_ok.ipynb"]


def test_html_build_cleans_partials_before_building(tmp_path, monkeypatch):
    monkeypatch.setattr(book, "CHAPTER_DIR", tmp_path)
    monkeypatch.setattr(book, "find_notebooks", lambda *a: [tmp_path / "missing_source.ipynb"])
    leftover = tmp_path / ".00_x.partial.ipynb"
    leftover.write_text("{}")
    with pytest.raises(book.ChapterError, match="missing"):  # stops before calling jupyter-book
        book.build_html()
    assert not leftover.exists()
