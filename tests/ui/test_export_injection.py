"""Issue #18 item 7: a chain's text cannot break or inject into the exported standalone
page (``<!--<script>`` used to put the HTML parser in its double-escaped script state and
swallow the rest of the page; a title holding ``@@CONFIG@@`` took the config's place)."""

from __future__ import annotations

from engine.chain import Chain
from engine.export_html import render_html

HOSTILE_TITLE = "@@CONFIG@@ </script><script>window.pwned = 1</script> <!--"


def hostile_chain() -> Chain:
    return Chain.from_json({
        "source": {"collection": "s2 <!--<script>"},
        "steps": [{"name": "expression", "expression": "B04 #<!--<script>window.pwned=2"},
                  {"name": "scale", "min": 0, "max": 1},
                  {"name": "colormap", "colormap": "viridis"}]})


def test_hostile_chain_text_shows_as_text_in_chromium(page, tmp_path):
    chain = hostile_chain()
    html = render_html(chain, tiles="http://127.0.0.1:9/api/chains/x/tiles/{z}/{x}/{y}.png",
                       bounds=(15.0, 50.0, 15.1, 50.1), title=HOSTILE_TITLE)
    path = tmp_path / "page.html"
    path.write_text(html, encoding="utf-8")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(path.as_uri())
    page.wait_for_selector(".eox-desc")
    assert page.inner_text(".eox-info h1") == HOSTILE_TITLE
    assert page.inner_text(".eox-desc") == chain.describe()
    assert "#<!--<script>" in page.inner_text(".eox-legend")
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert page.evaluate("document.querySelectorAll('.leaflet-container').length") == 1
    assert errors == []
