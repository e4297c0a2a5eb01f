"""Build pipeline of the book: execute every chapter notebook with papermill, then hand the results to Jupyter Book.

``python -m facelab.book chapters`` runs each ``notebooks/NN_slug.ipynb`` with the quick profile into
``book/chapters/NN_slug.ipynb`` (kernel ``python3``, working directory ``notebooks/``, a per-cell timeout), hides the
parameters cells in the book, and records each chapter's wall time in ``_build/timings.json``.

A chapter is executed into a hidden temporary file next to its target (``.NN_slug.<pid>.partial.ipynb``) and renamed
into place only when every cell succeeded. The older executed copy is removed before a chapter runs, and when it fails
the temporary file goes too, so a later book build can never pick up a half-written or stale chapter. A run killed
outright (SIGKILL, power loss) cannot clean up after itself: :func:`remove_stale_files`, called before every run and
every ``html`` build, deletes partial files whose writer is no longer alive, and the book's ``_config.yml`` excludes
hidden files at any depth (``**/.*``) in any case.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from facelab import REPO_ROOT
from facelab.files import atomic_write_json

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
CHAPTER_DIR = REPO_ROOT / "book" / "chapters"
TIMINGS_FILE = REPO_ROOT / "_build" / "timings.json"
DEFAULT_CELL_TIMEOUT = 900
KERNEL = "python3"
#: ``.00_getting_started.12345.partial.ipynb`` (and the older pid-less ``.00_getting_started.partial.ipynb``)
PARTIAL_RE = re.compile(r"^\.(?P<stem>[^.]+)(?:\.(?P<pid>\d+))?\.partial\.ipynb$")


class ChapterError(RuntimeError):
    """A chapter notebook is malformed or failed to execute; the message names the file and what to do."""


@dataclass
class ChapterResult:
    name: str
    seconds: float
    ok: bool
    error: str = ""


def find_notebooks(folder: Path = NOTEBOOK_DIR) -> list[Path]:
    return sorted(p for p in Path(folder).glob("*.ipynb") if not p.name.startswith("."))


def parameters_cell_index(nb) -> int:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            return i
    return -1


def check_notebook(path: Path):
    """Read a chapter source and check it is usable: valid JSON notebook, a ``parameters`` cell with PROFILE, DEVICE
    and SEED. Returns the notebook; raises :class:`ChapterError` naming the file and the fix."""
    import nbformat

    path = Path(path)
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # nbformat raises several types for broken JSON
        raise ChapterError(f"{path}: not a readable notebook ({exc}). Re-save it from JupyterLab.") from exc
    idx = parameters_cell_index(nb)
    if idx < 0:
        raise ChapterError(
            f"{path}: no cell tagged 'parameters'. Add a first code cell with PROFILE = \"quick\", DEVICE = \"auto\", "
            "SEED = 0 and give it the tag 'parameters' (JupyterLab: Property Inspector -> Cell Tags).")
    src = nb.cells[idx].source
    missing = [name for name in ("PROFILE", "DEVICE", "SEED") if name not in src]
    if missing:
        raise ChapterError(f"{path}: the parameters cell does not define {', '.join(missing)}.")
    return nb


def partial_path(out_dir: Path, stem: str) -> Path:
    """Where this process writes chapter ``stem`` while it runs (hidden, tagged with the writer's pid)."""
    return Path(out_dir) / f".{stem}.{os.getpid()}.partial.ipynb"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_files(out_dir: Path = CHAPTER_DIR, *, sources: set[str] | None = None,
                       chapters: list[str] | None = None) -> list[Path]:
    """Delete what an earlier or killed run left in ``out_dir``; returns the removed paths.

    - partial files (``.NN_slug[.pid].partial.ipynb``) whose writer is not running any more (a run killed with
      SIGKILL leaves one; one being written by a live process, e.g. another chapter running now, is kept);
    - with ``sources`` (the stems of every chapter source): executed chapters whose source was removed or renamed;
    - with ``chapters`` (stems about to be executed): their old executed copies, so that a run that is killed half-way
      leaves no stale chapter behind.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    removed = []
    for path in out_dir.iterdir():
        m = PARTIAL_RE.match(path.name)
        if m and path.is_file():
            pid = m.group("pid")
            stale = pid is None or not _pid_alive(int(pid)) or (chapters is not None and m.group("stem") in chapters
                                                                  and int(pid) == os.getpid())
        elif path.suffix == ".ipynb" and not path.name.startswith(".") and path.is_file():
            stale = (sources is not None and path.stem not in sources) or (chapters is not None
                                                                           and path.stem in chapters)
        else:
            stale = False
        if stale:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _hide_parameter_cells(nb) -> None:
    """In the executed copy: fold the parameters cell (readers see what can be changed) and drop papermill's
    injected-parameters cell from the rendered page."""
    for cell in nb.cells:
        tags = cell.get("metadata", {}).setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
        elif "parameters" in tags and "hide-cell" not in tags:
            tags.append("hide-cell")


def _error_summary(exc: BaseException) -> str:
    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = getattr(exc, "evalue", str(exc))
    return f"{ename}: {evalue}".strip()


def execute_chapter(source: Path, out_dir: Path = CHAPTER_DIR, *, profile: str = "quick",
                    cell_timeout: int = DEFAULT_CELL_TIMEOUT, extra_parameters: dict | None = None,
                    log_output: bool = False) -> ChapterResult:
    """Execute one chapter into ``out_dir`` atomically; raise :class:`ChapterError` if a cell fails."""
    import nbformat
    import papermill as pm

    source = Path(source).resolve()
    check_notebook(source)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / source.name
    remove_stale_files(out_dir, chapters=[source.stem])  # old executed copy and dead partials of this chapter
    partial = partial_path(out_dir, source.stem)
    params = {"PROFILE": profile, **(extra_parameters or {})}
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(str(source), str(partial), parameters=params, kernel_name=KERNEL,
                            cwd=str(source.parent), execution_timeout=cell_timeout, progress_bar=False,
                            log_output=log_output, report_mode=False)
    except BaseException as exc:
        for stale in (partial, target):
            if stale.exists():
                stale.unlink()
        seconds = time.perf_counter() - t0
        msg = (f"Chapter {source.name} failed after {seconds:.0f} s: {_error_summary(exc)}\n"
               f"  Rerun it alone with: make chapter NB={source.stem}   (or open {source} in JupyterLab)")
        raise ChapterError(msg) from exc
    seconds = time.perf_counter() - t0
    nb = nbformat.read(partial, as_version=4)
    _hide_parameter_cells(nb)
    nb.metadata.setdefault("facelab", {})["wall_time_s"] = round(seconds, 2)
    nbformat.write(nb, partial)
    os.replace(partial, target)
    return ChapterResult(source.stem, seconds, True)


def _write_timings(results: list[ChapterResult], profile: str, path: Path = TIMINGS_FILE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            data = {}
    data.setdefault("chapters", {})
    for r in results:
        data["chapters"][r.name] = {"seconds": round(r.seconds, 2), "ok": r.ok, "profile": profile,
                                    "error": r.error, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_json(path, data, indent=2, sort_keys=True)


def run_chapters(names: list[str] | None = None, *, profile: str = "quick", cell_timeout: int = DEFAULT_CELL_TIMEOUT,
                 keep_going: bool = True) -> list[ChapterResult]:
    """Execute the chapters (all, or those whose stem starts with one of ``names``) and report timings."""
    notebooks = find_notebooks()
    if names:
        notebooks = [p for p in notebooks if any(p.stem == n or p.stem.startswith(n) for n in names)]
        if not notebooks:
            raise ChapterError(f"No notebook in {NOTEBOOK_DIR} matches {names}")
    # check every source first: a malformed notebook fails fast, before minutes of execution
    for p in notebooks:
        check_notebook(p)
    # partial files of killed runs; and, for a whole-book run, executed chapters whose source was removed or renamed
    for old in remove_stale_files(CHAPTER_DIR, sources=None if names else {p.stem for p in notebooks}):
        print(f"[chapters] removed stale {old.relative_to(REPO_ROOT) if old.is_relative_to(REPO_ROOT) else old}")
    results: list[ChapterResult] = []
    for p in notebooks:
        print(f"[chapters] {p.name} ...", flush=True)
        try:
            r = execute_chapter(p, profile=profile, cell_timeout=cell_timeout)
            print(f"[chapters] {p.name} ok in {r.seconds:.1f} s", flush=True)
        except ChapterError as exc:
            r = ChapterResult(p.stem, 0.0, False, str(exc))
            print(f"[chapters] FAILED {exc}", file=sys.stderr, flush=True)
            if not keep_going:
                results.append(r)
                _write_timings(results, profile)
                raise
        results.append(r)
        _write_timings([r], profile)
    return results


def build_html() -> int:
    """``jupyter-book build . --builder html -W -n --keep-going`` from the executed chapters; records its wall time."""
    import subprocess

    for old in remove_stale_files(CHAPTER_DIR):  # partial files of killed runs never reach the book
        print(f"[book] removed stale {old.name}")
    missing = [p.stem for p in find_notebooks() if not (CHAPTER_DIR / p.name).exists()]
    if missing:
        raise ChapterError(f"Executed chapters missing in {CHAPTER_DIR}: {', '.join(missing)}. Run `make chapters` "
                           "first (a chapter that failed has no executed copy).")
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe), "build", str(REPO_ROOT), "--builder", "html", "-W", "-n", "--keep-going"]
    t0 = time.perf_counter()
    rc = subprocess.call(cmd, cwd=REPO_ROOT)
    seconds = time.perf_counter() - t0
    TIMINGS_FILE.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(TIMINGS_FILE.read_text()) if TIMINGS_FILE.exists() else {}
    except json.JSONDecodeError:
        data = {}
    data["book_build"] = {"seconds": round(seconds, 2), "ok": rc == 0, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    atomic_write_json(TIMINGS_FILE, data, indent=2, sort_keys=True)
    print(f"[book] strict HTML build {'ok' if rc == 0 else 'FAILED'} in {seconds:.1f} s -> _build/html/index.html")
    return rc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m facelab.book", description="Execute the book's chapters.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("chapters", help="execute chapter notebooks into book/chapters/")
    c.add_argument("names", nargs="*", help="chapter stems or prefixes (default: all)")
    c.add_argument("--profile", default=os.environ.get("PROFILE", "quick"))
    c.add_argument("--cell-timeout", type=int, default=int(os.environ.get("CELL_TIMEOUT", DEFAULT_CELL_TIMEOUT)))
    c.add_argument("--stop-on-error", action="store_true")
    sub.add_parser("check", help="check every notebook source (parameters cell, no outputs)")
    sub.add_parser("html", help="strict Jupyter Book build of the executed chapters (timed)")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "check":
            for p in find_notebooks():
                check_notebook(p)
            print(f"{len(find_notebooks())} notebooks ok")
            return 0
        if args.cmd == "html":
            return build_html()
        results = run_chapters(args.names, profile=args.profile, cell_timeout=args.cell_timeout,
                               keep_going=not args.stop_on_error)
    except ChapterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    failed = [r for r in results if not r.ok]
    total = sum(r.seconds for r in results)
    print(f"[chapters] {len(results) - len(failed)} of {len(results)} chapters executed in {total:.0f} s "
          f"(timings in {TIMINGS_FILE.relative_to(REPO_ROOT)})")
    if failed:
        print("[chapters] failed:\n  " + "\n  ".join(r.error.splitlines()[0] for r in failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
