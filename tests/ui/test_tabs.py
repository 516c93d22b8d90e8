"""Every sidebar tab on a freshly loaded page shows its own widgets when clicked (tabs are
built when first shown; their content must reach the browser without changing the
collection first)."""

from __future__ import annotations

from itertools import pairwise

import pytest
from idle import Activity
from tiles import LOADED_JS

from components.shell import DEFAULT_TABS

pytestmark = pytest.mark.ui

# tag and label/placeholder/text of every visible control (Playwright's CSS pierces the
# shadow roots Bokeh renders into)
SIGNATURES_JS = """(els) => els.map(e => e.tagName + ':' + (e.getAttribute('placeholder')
  || e.getAttribute('aria-label') || e.getAttribute('title') || e.textContent || '')
  .trim().slice(0, 40))"""
CONTROLS = "input:visible, select:visible, button:visible, textarea:visible, label:visible"


def test_fresh_page_every_tab_shows_its_widgets(server, browser):
    ctx = browser.new_context(viewport={"width": 1500, "height": 950})
    page = ctx.new_page()
    activity = Activity(page)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if "isn't known" in m.text else None)

    def controls() -> set[str]:
        return set(page.locator(CONTROLS).evaluate_all(SIGNATURES_JS))

    try:
        page.goto(server + "/")
        # loaded: the document is idle (its document_ready event went to the server)
        page.wait_for_function(LOADED_JS, timeout=30_000)
        # every tab header is on screen inside the sidebar (13 tabs do not fit one row: they
        # wrap instead of hiding the last ones behind a horizontal scroll)
        headers = {title: page.locator(".bk-tab", has_text=title).first.bounding_box()
                   for title, _ in DEFAULT_TABS}
        hidden = {t: b for t, b in headers.items()  # the sidebar is 470 px wide (Shell)
                  if b is None or b["x"] < 0 or b["x"] + b["width"] > 470}
        assert not hidden, f"tab headers not visible in the sidebar: {hidden}"
        shown: dict[str, set[str]] = {}
        before = controls()
        for title, _ in DEFAULT_TABS[1:] + DEFAULT_TABS[:1]:
            page.locator(".bk-tab", has_text=title).first.click()
            for _ in range(200):  # until the tab's content arrives (at most 10 s): a control
                page.wait_for_timeout(50)  # not shown before (hiding the last tab's comes first)
                if controls() - before:
                    break
            activity.wait(quiet=0.3)  # the rest of the tab (e.g. Time's dates)
            shown[title] = before = controls()
        common = set.intersection(*shown.values())  # map, layer list, header: on every tab
        own = {title: sorted(sig - common) for title, sig in shown.items()}
        empty = [title for title, controls in own.items() if not controls]
        assert not empty, own
        # each tab shows different controls from the tab before it
        same = [b for a, b in pairwise(shown) if own[a] == own[b]]
        assert not same, own
        assert not errors, errors
    finally:
        ctx.close()
