"""A real browser opens the built site: every page renders, no page shows an error, figures and widgets appear.

Run by `make browser-check` after `make book`; screenshots land in _build/screenshots/ for a person to look at.
"""

import json
import re
from pathlib import Path

import pytest

from facelab import REPO_ROOT, sitecheck

pytestmark = pytest.mark.browser

PAGES = sitecheck.toc_pages()


@pytest.fixture(scope="module")
def site():
    index = sitecheck.HTML_DIR / "index.html"
    if not index.exists():
        pytest.fail("The book is not built: run `make book` before the browser check.")
    if sitecheck.find_chromium() is None:
        pytest.fail("Chromium is missing: run `bash scripts/ensure_chromium.sh`.")
    with sitecheck.serve() as base:
        yield base


def executed_has_images(page: str) -> bool:
    nb = REPO_ROOT / page.replace(".html", ".ipynb")
    if not nb.exists():
        return False
    cells = json.loads(nb.read_text())["cells"]
    return any("image/png" in o.get("data", {}) for c in cells if c["cell_type"] == "code" for o in c.get("outputs", []))


def test_index_redirects_to_the_book(site):
    dom = sitecheck.render_dom(f"{site}/index.html")
    report = sitecheck.inspect_dom("index.html", dom)
    assert "facelab" in report.title


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_without_errors(site, page):
    dom = sitecheck.render_dom(f"{site}/{page}")
    report = sitecheck.inspect_dom(page, dom)
    assert report.title and "facelab" in report.title, f"{page}: no title"
    assert report.h1, f"{page}: no heading rendered"
    assert not report.has_traceback, f"{page} shows a Python traceback"
    assert not report.has_stderr, f"{page} shows stderr output (a warning or an error) from its notebook"
    if executed_has_images(page):
        figures = [src for src in report.images if "_images/" in src]
        assert figures, f"{page}: the chapter has figures but the page shows none"
        for src in figures:
            target = (sitecheck.HTML_DIR / page).parent / src
            assert target.resolve().exists(), f"{page}: image {src} is missing from the site"
    if page.startswith("book/chapters/"):
        check_chapter_page(page, report)
    shot = sitecheck.screenshot(f"{site}/{page}", sitecheck.SCREENSHOT_DIR / (Path(page).stem + ".png"))
    assert shot.stat().st_size > 10_000


def check_chapter_page(page: str, report: sitecheck.PageReport) -> None:
    """Issue 24: a chapter page shows a Summary and then an Exercises section with at least three checkable
    exercises, offers its notebook (.ipynb) for download and says how to open it in JupyterLab."""
    stem = Path(page).stem
    assert "Summary" in report.h2, f"{page}: no Summary section (h2 headings: {report.h2})"
    assert "Exercises" in report.h2, f"{page}: no Exercises section (h2 headings: {report.h2})"
    assert report.h2.index("Summary") < report.h2.index("Exercises"), f"{page}: Exercises come before the Summary"
    checkable = [h for h in report.h3 if re.match(rf"Exercise {stem[:2]}\.\d+", h)]
    assert len(checkable) >= 3, f"{page}: {len(checkable)} checkable exercises (python -m facelab.exercises cells)"
    href = report.notebook_download
    assert href and href.split("?")[0].endswith(f"{stem}.ipynb"), f"{page}: no notebook download ({report.downloads})"
    target = ((sitecheck.HTML_DIR / page).parent / href.split("?")[0]).resolve()
    assert target.exists(), f"{page}: the download {href} is missing from the site"
    assert json.loads(target.read_text())["cells"], f"{page}: the downloaded notebook has no cells"
    assert "JupyterLab" in report.announcement and "make lab" in report.announcement, \
        f"{page}: the page does not say how to open the notebook ({report.announcement!r})"


def test_teaching_page_links_every_chapter(site):
    html = (sitecheck.HTML_DIR / "book" / "teaching.html").read_text()
    for page in PAGES:
        if page.startswith("book/chapters/"):
            assert f'href="chapters/{Path(page).name}' in html, f"the teaching page does not link {page}"


def test_widgets_render_from_the_books_own_javascript(site):
    page = "book/chapters/00_getting_started.html"
    html = (sitecheck.HTML_DIR / page).read_text()
    assert "cdn.jsdelivr" not in html and "cdnjs" not in html, "widget JavaScript must not come from a CDN"
    dom = sitecheck.render_dom(f"{site}/{page}")
    report = sitecheck.inspect_dom(page, dom)
    assert report.widgets > 0, "the threshold slider of chapter 00 did not render"
    assert "widget-slider" in dom
