"""Check the built site in a real browser: headless Chromium renders every page of the book.

Used by ``tests/test_browser.py`` (``make browser-check``). The site is served on 127.0.0.1 by a throw-away
``http.server`` thread, each page is rendered by Debian's ``chromium`` with scripts allowed to settle
(``--virtual-time-budget``), and the rendered DOM is returned for the test to inspect; screenshots are written under
``_build/screenshots/`` for a person to look at.
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
from dataclasses import dataclass
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


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.title, self.h1, self.images = "", "", []
        self._in_title = self._in_h1 = False
        self.classes: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.classes.extend((a.get("class") or "").split())
        if tag == "title" and not self.title:
            self._in_title = True
        elif tag == "h1" and not self.h1:
            self._in_h1 = True
        elif tag == "img" and a.get("src"):
            self.images.append(a["src"])

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        elif tag == "h1":
            self._in_h1 = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        if self._in_h1:
            self.h1 += data


def inspect_dom(page: str, dom: str) -> PageReport:
    c = _Collector()
    c.feed(dom)
    classes = set(c.classes)
    return PageReport(
        page=page, title=c.title.strip(), h1=re.sub(r"\s+", " ", c.h1).replace("#", "").strip(), images=c.images,
        has_traceback=("Traceback (most recent call last)" in dom) or ("traceback" in classes),
        has_stderr="stderr" in classes,
        widgets=sum(1 for k in c.classes if k.startswith("widget-") or k.startswith("jupyter-widget")),
    )
