"""Check the built site in a real browser: headless Chromium renders every page of the book.

Used by ``tests/test_browser.py`` (``make browser-check``). The site is served on 127.0.0.1 by a throw-away
``http.server`` thread, each page is rendered by Debian's ``chromium`` with scripts allowed to settle
(``--virtual-time-budget``), and the rendered DOM is returned for the test to inspect (:func:`inspect_dom`: title,
headings, figures, tracebacks, widgets, the notebook download button and the announcement banner); screenshots are
written under ``_build/screenshots/`` for a person to look at.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from facelab import REPO_ROOT

HTML_DIR = REPO_ROOT / "_build" / "html"
SCREENSHOT_DIR = REPO_ROOT / "_build" / "screenshots"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio"]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    return None


def toc_pages(toc_file: Path = REPO_ROOT / "_toc.yml") -> list[str]:
    """Every page of the table of contents as a site-relative ``.html`` path (root first)."""
    import yaml

    toc = yaml.safe_load(toc_file.read_text())
    pages = [toc["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                pages.append(e["file"])
            walk(e.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return [p + ".html" for p in pages]


@contextlib.contextmanager
def serve(directory: Path = HTML_DIR):
    """Serve ``directory`` on a free loopback port for the duration of the block; yields the base URL."""

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

    handler = functools.partial(QuietHandler, directory=str(directory))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _run_chromium(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("Chromium is not installed: run `bash scripts/ensure_chromium.sh` "
                                "(Debian package `chromium`).")
    with tempfile.TemporaryDirectory(prefix="facelab-chromium-") as profile:
        cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def render_dom(url: str, budget_ms: int = 10_000, timeout: float = 90) -> str:
    """The DOM of ``url`` after its scripts ran (``--dump-dom``)."""
    res = _run_chromium([f"--virtual-time-budget={budget_ms}", "--dump-dom", url], timeout)
    if res.returncode != 0 or not res.stdout.strip():
        raise RuntimeError(f"Chromium could not render {url}: exit {res.returncode}\n{res.stderr[-1500:]}")
    return res.stdout


def screenshot(url: str, path: Path, budget_ms: int = 10_000, size: tuple[int, int] = (1280, 2400),
               timeout: float = 90) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    res = _run_chromium([f"--virtual-time-budget={budget_ms}", f"--window-size={size[0]},{size[1]}",
                         f"--screenshot={path}", url], timeout)
    if not path.exists():
        raise RuntimeError(f"Chromium wrote no screenshot of {url}: exit {res.returncode}\n{res.stderr[-1500:]}")
    return path


@dataclass
class PageReport:
    page: str
    title: str
    h1: str
    images: list[str]
    has_traceback: bool
    has_stderr: bool
    widgets: int
    #: text of the section headings (h2) and sub-section headings (h3), in page order
    h2: list[str] = field(default_factory=list)
    h3: list[str] = field(default_factory=list)
    #: hrefs of the theme's "download source" buttons (a chapter's points at its ``.ipynb``)
    downloads: list[str] = field(default_factory=list)
    #: text of the site-wide announcement banner (how to open a notebook in JupyterLab)
    announcement: str = ""

    @property
    def notebook_download(self) -> str | None:
        """The href of the page's notebook download button, if it has one."""
        return next((h for h in self.downloads if h.split("?")[0].endswith(".ipynb")), None)


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.title, self.h1, self.images = "", "", []
        self._in_title = self._in_h1 = False
        self.classes: list[str] = []
        self.headings: dict[str, list[str]] = {"h2": [], "h3": []}
        self._heading: str | None = None
        self.downloads: list[str] = []
        self.announcement = ""
        self._announcement_depth = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        self.classes.extend(classes)
        if self._announcement_depth:
            self._announcement_depth += 1
        elif "bd-header-announcement" in classes:
            self._announcement_depth = 1
        if tag == "title" and not self.title:
            self._in_title = True
        elif tag == "h1" and not self.h1:
            self._in_h1 = True
        elif tag in self.headings:
            self._heading = tag
            self.headings[tag].append("")
        elif tag == "img" and a.get("src"):
            self.images.append(a["src"])
        elif tag == "a" and "btn-download-source-button" in classes and a.get("href"):
            self.downloads.append(a["href"])

    def handle_endtag(self, tag):
        if self._announcement_depth:
            self._announcement_depth -= 1
        if tag == "title":
            self._in_title = False
        elif tag == "h1":
            self._in_h1 = False
        elif tag == self._heading:
            self._heading = None

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        if self._in_h1:
            self.h1 += data
        if self._heading:
            self.headings[self._heading][-1] += data
        if self._announcement_depth:
            self.announcement += data


def _clean_heading(text: str) -> str:
    return re.sub(r"\s+", " ", text).replace("#", "").strip()


def inspect_dom(page: str, dom: str) -> PageReport:
    c = _Collector()
    c.feed(dom)
    classes = set(c.classes)
    return PageReport(
        page=page, title=c.title.strip(), h1=re.sub(r"\s+", " ", c.h1).replace("#", "").strip(), images=c.images,
        has_traceback=("Traceback (most recent call last)" in dom) or ("traceback" in classes),
        has_stderr="stderr" in classes,
        widgets=sum(1 for k in c.classes if k.startswith("widget-") or k.startswith("jupyter-widget")),
        h2=[_clean_heading(h) for h in c.headings["h2"]], h3=[_clean_heading(h) for h in c.headings["h3"]],
        downloads=c.downloads, announcement=re.sub(r"\s+", " ", c.announcement).strip(),
    )
