"""The monkey test (issue 14, item 1): a seeded random walk of 200 user actions across every
tab and demo collection leaves no callback exception in the server's log, no page error, and
a map that shows tiles of the chain and collection the page says it displays.

Longer walks, more seeds: ``python bench/ui_monkey.py`` (20 seeds of 200 actions, prints the
crash count per seed).
"""

from __future__ import annotations

import re

import pytest
from monkey import final_view, walk
from tiles import serve_app

pytestmark = pytest.mark.ui

#: A callback failing in the server: a traceback in its log (Panel's "Callback failed",
#: Bokeh's "_pending_writes should be non-None", asyncio's "Task exception", ours).
CRASH = re.compile(r"Traceback \(most recent call last\)")


@pytest.fixture(scope="module")
def logged_server(demo_catalog, tmp_path_factory):
    """A served dashboard of its own, with the path of its log (stdout + stderr)."""
    folder = tmp_path_factory.mktemp("monkey")
    with serve_app(demo_catalog, demo_catalog.parent / "data", folder) as base:
        yield base, folder / "serve.log"


def crashes(log_text: str) -> list[str]:
    """The server log's tracebacks, each as its exception line."""
    lines = log_text.splitlines()
    found = []
    for i, line in enumerate(lines):
        if CRASH.search(line):
            exc = next((t for t in lines[i + 1:] if t and not t.startswith((" ", "\t"))), "?")
            found.append(exc.strip()[:200])
    return found


#: (seed, actions): one walk of the issue's 200 actions (about 4 minutes on a quiet 2-core
#: machine) and two shorter walks of other seeds (4 found the out-of-view display; both ran
#: in CI before; about 2 minutes each).
#: More: bench/ui_monkey.py walks 200 actions per seed over 20 seeds.
WALKS = [pytest.param(7, 200, marks=pytest.mark.timeout(1200)),
         pytest.param(4, 50, marks=pytest.mark.timeout(600)),
         pytest.param(2026, 50, marks=pytest.mark.timeout(600))]


@pytest.mark.parametrize(("seed", "steps"), WALKS)
def test_monkey_walk_leaves_a_working_session(logged_server, browser, seed, steps):
    base, log = logged_server
    start = log.stat().st_size
    ctx = browser.new_context(viewport={"width": 1500, "height": 950})
    page = ctx.new_page()
    try:
        done = walk(page, base, seed, steps=steps)
        view = final_view(page, base, done)
    finally:
        ctx.close()
    text = log.read_text(errors="replace")[start:]
    assert len(done.actions) >= steps
    # the walk really exercised the page: most actions found something to act on
    assert len(done.skipped) < len(done.actions) / 2, done.skipped
    assert not crashes(text), "\n---\n".join(crashes(text))
    assert not done.page_errors, done.page_errors
    # the map shows what the page says: the URL's chain is the scene layer's, of the
    # collection the URL names, and its tiles come back with pixels
    if view.url_chain:
        assert view.layer_visible and f"/chains/{view.url_chain}/" in view.layer_url, view
        assert view.chain_collection == view.url_collection, view
        shown = [t for t in view.tiles if t.chain == view.url_chain]
        assert shown and all(t.status in (200, 204) for t in shown), view.tiles
        assert any(t.has_data for t in shown), view.tiles
    else:
        assert not view.layer_visible, view
